//! Committing: plan → commit each table → recover what a dead attempt left → replace.
//!
//! Whether a table's stream was committed is read from the stream itself (GetWriteStream's
//! `commit_time`, STREAM_ALREADY_COMMITTED): free and exact. Only when the stream is gone
//! (garbage-collected: BigQuery keeps finalized, uncommitted data for about 4 hours and
//! pending streams for 24) are the rows themselves counted, restricted to the object's dates.
//! A table found neither committed nor present is staged again from the object.

use std::collections::BTreeSet;

use super::{IngestError, Ingestor, ObjectReport, Outcome};
use crate::bigquery::{BigQueryError, CommitOutcome, StreamStatus};
use crate::fault::fault_point;
use crate::ledger::{CommitPlan, Ledger};
use crate::quarantine::QuarantineTarget;
use crate::route::{DaySpan, IsoDate};
use crate::source::LogObject;

/// Rounds of re-staging expired streams before giving up (each round re-reads the object).
const RESTAGE_ROUNDS: u32 = 2;

/// Where a plan's progress is recorded (absent for untracked local files).
pub(super) struct Tracking<'a> {
    pub ledger: &'a Ledger,
    pub id: &'a str,
    pub owner: &'a str,
}

impl Tracking<'_> {
    async fn progress(&self, uri: &str, plan: &CommitPlan) -> Result<(), IngestError> {
        self.ledger
            .progress(self.id, self.owner, plan)
            .await
            .map_err(|source| IngestError::Ledger {
                object: uri.to_string(),
                source,
            })
    }
}

/// What one table's commit found.
enum TableCommit {
    Committed,
    /// The stream is gone and none of its rows are in the table: stage it again.
    Lost,
}

impl Ingestor {
    /// Commits every table of `plan` not yet known committed, recording progress after each,
    /// re-staging tables whose streams expired, then (forced replay) deletes the object's
    /// older rows. Safe to run again after a crash at any point.
    pub(super) async fn finish(
        &self,
        object: &LogObject,
        uri: &str,
        mut plan: CommitPlan,
        resuming: bool,
        tracking: Option<Tracking<'_>>,
    ) -> Result<ObjectReport, IngestError> {
        let mut round = 0;
        loop {
            let mut lost = BTreeSet::new();
            let pending: Vec<String> = plan
                .streams
                .keys()
                .filter(|table| !plan.committed.contains(*table))
                .cloned()
                .collect();
            for table in pending {
                match self.commit_table(uri, &plan, &table, resuming).await? {
                    TableCommit::Lost => {
                        lost.insert(table);
                        continue;
                    }
                    TableCommit::Committed => {}
                }
                fault_point("after_table_commit");
                plan.committed.insert(table);
                if let Some(t) = &tracking {
                    t.progress(uri, &plan).await?;
                }
            }
            if lost.is_empty() {
                break;
            }
            round += 1;
            if round > RESTAGE_ROUNDS {
                return Err(IngestError::Recovery {
                    object: uri.to_string(),
                    table: lost.into_iter().collect::<Vec<_>>().join(", "),
                    detail: format!("streams expired again after {RESTAGE_ROUNDS} re-stagings"),
                });
            }
            self.restage(object, uri, &mut plan, &lost).await?;
            if let Some(t) = &tracking {
                t.progress(uri, &plan).await?;
            }
            fault_point("after_restage");
        }
        fault_point("after_all_commits");
        if let Some(replace) = &plan.replace_tables {
            self.delete_replaced(uri, &plan, replace).await?;
        }
        let mut report: ObjectReport =
            serde_json::from_value(plan.report.clone()).map_err(|e| IngestError::Recovery {
                object: uri.to_string(),
                table: String::new(),
                detail: format!("unreadable report in the plan: {e}"),
            })?;
        if matches!(report.outcome, Outcome::Loaded | Outcome::Empty) {
            report.outcome = if report.data_lines == 0 {
                Outcome::Empty
            } else {
                Outcome::Loaded
            };
        }
        Ok(report)
    }

    /// Commits one table's stream, or finds out what a dead attempt did with it.
    async fn commit_table(
        &self,
        uri: &str,
        plan: &CommitPlan,
        table: &str,
        resuming: bool,
    ) -> Result<TableCommit, IngestError> {
        let bq_error = |source| IngestError::BigQuery {
            object: uri.to_string(),
            source,
        };
        let api = self.bq.write_api();
        let stream = &plan.streams[table];
        if resuming {
            match api.stream_status(stream).await.map_err(bq_error)? {
                StreamStatus::Committed => return Ok(TableCommit::Committed),
                StreamStatus::Gone => {
                    tracing::warn!(table, stream, "stream is gone; checking the table's rows");
                    return self.committed_by_data(uri, plan, table).await;
                }
                StreamStatus::NotCommitted => {}
            }
        }
        match api
            .commit_stream(&self.bq.table_path(table), stream)
            .await
            .map_err(bq_error)?
        {
            CommitOutcome::Committed | CommitOutcome::AlreadyCommitted => {
                Ok(TableCommit::Committed)
            }
            CommitOutcome::Gone(detail) => {
                tracing::warn!(table, stream, %detail, "stream not committable; checking the table's rows");
                self.committed_by_data(uri, plan, table).await
            }
        }
    }

    /// The fallback when the stream cannot say: this attempt's rows of the object in `table`,
    /// counted within the object's dates. All of them: committed; none: lost.
    async fn committed_by_data(
        &self,
        uri: &str,
        plan: &CommitPlan,
        table: &str,
    ) -> Result<TableCommit, IngestError> {
        let expected = plan.rows.get(table).copied().unwrap_or(0);
        let present = self
            .object_rows(
                uri,
                table,
                "=",
                plan.stamp(table),
                plan.days.get(table).copied(),
            )
            .await
            .map_err(|source| IngestError::BigQuery {
                object: uri.to_string(),
                source,
            })?;
        if present == expected {
            Ok(TableCommit::Committed)
        } else if present == 0 {
            Ok(TableCommit::Lost)
        } else {
            Err(IngestError::Recovery {
                object: uri.to_string(),
                table: table.to_string(),
                detail: format!("{present} rows of this attempt present, {expected} expected"),
            })
        }
    }

    /// Reads the object again into new streams for the `lost` tables only; the plan then
    /// names those streams, stamped with the new attempt's time.
    async fn restage(
        &self,
        object: &LogObject,
        uri: &str,
        plan: &mut CommitPlan,
        lost: &BTreeSet<String>,
    ) -> Result<(), IngestError> {
        tracing::warn!(tables = ?lost, "streams expired before their commit: staging those tables again");
        let stamp = crate::clock::now_micros().max(plan.ingest_micros + 1);
        let staged = self.stage(object, uri, stamp, Some(lost)).await?;
        for table in lost {
            let expected = plan.rows.get(table).copied().unwrap_or(0);
            let (Some(stream), Some(&rows)) = (staged.streams.get(table), staged.rows.get(table))
            else {
                return Err(IngestError::Recovery {
                    object: uri.to_string(),
                    table: table.clone(),
                    detail: format!(
                        "its stream expired uncommitted and the object no longer yields its rows \
                         ({:?}); the other tables are committed",
                        staged.report.outcome
                    ),
                });
            };
            if rows != expected {
                return Err(IngestError::Recovery {
                    object: uri.to_string(),
                    table: table.clone(),
                    detail: format!("staged again with {rows} rows, the plan has {expected}"),
                });
            }
            plan.streams.insert(table.clone(), stream.clone());
            plan.stamps.insert(table.clone(), stamp);
        }
        Ok(())
    }

    /// A forced replay: deletes the object's rows older than this plan from every table it
    /// replaces or wrote, within the dates those rows have.
    async fn delete_replaced(
        &self,
        uri: &str,
        plan: &CommitPlan,
        replace: &crate::ledger::Replace,
    ) -> Result<(), IngestError> {
        let mut tables: Vec<(String, Option<DaySpan>)> =
            replace.iter().map(|(t, d)| (t.clone(), *d)).collect();
        for table in plan.streams.keys() {
            if !replace.contains_key(table) {
                tables.push((table.clone(), plan.days.get(table).copied()));
            }
        }
        for (table, days) in tables {
            let days = match (days, plan.days.get(&table)) {
                (Some(a), Some(b)) => Some(a.union(*b)),
                (a, None) => a,
                (None, Some(_)) => None,
            };
            let deleted = self
                .delete_older_rows(uri, &table, plan.ingest_micros, days)
                .await
                .map_err(|source| IngestError::BigQuery {
                    object: uri.to_string(),
                    source,
                })?;
            tracing::info!(
                table,
                deleted,
                "forced replay: earlier rows of this object replaced"
            );
        }
        Ok(())
    }

    /// Rows of `uri` in `table` whose ingest time is `op` `ingest_micros`.
    async fn object_rows(
        &self,
        uri: &str,
        table: &str,
        op: &str,
        ingest_micros: i64,
        days: Option<DaySpan>,
    ) -> Result<u64, BigQueryError> {
        let Some((sql, params)) = self
            .object_rows_sql(table, "SELECT COUNT(*) FROM", op, uri, ingest_micros, days)
            .await?
        else {
            return Ok(0);
        };
        let rows = self.bq.query_with(&sql, &params).await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Deletes `uri`'s rows older than `ingest_micros` from `table`.
    async fn delete_older_rows(
        &self,
        uri: &str,
        table: &str,
        ingest_micros: i64,
        days: Option<DaySpan>,
    ) -> Result<u64, BigQueryError> {
        let Some((sql, params)) = self
            .object_rows_sql(table, "DELETE FROM", "<", uri, ingest_micros, days)
            .await?
        else {
            return Ok(0);
        };
        self.bq.execute_dml(&sql, &params).await
    }

    /// `<verb> table WHERE` the rows are `uri`'s with ingest time `<op> ingest_micros`, within
    /// `days` when the table has log dates (the partition filter); `None` when the table does
    /// not exist (nothing of the object can be in it).
    async fn object_rows_sql(
        &self,
        table: &str,
        verb: &str,
        op: &str,
        uri: &str,
        ingest_micros: i64,
        days: Option<DaySpan>,
    ) -> Result<Option<(String, Params)>, BigQueryError> {
        if self.bq.get_table(table).await?.is_none() {
            return Ok(None);
        }
        let is_quarantine =
            matches!(&self.quarantine, Some(QuarantineTarget::Table(q)) if q == table);
        let table_ref = format!("{}.{}.{table}", self.bq.project, self.bq.dataset);
        // Quarantined lines have no log date to filter on.
        let days = days.filter(|_| !is_quarantine);
        Ok(Some(object_rows_where(
            &table_ref,
            verb,
            op,
            uri,
            ingest_micros,
            days,
        )))
    }
}

/// Query parameters `(name, type, value)`.
type Params = Vec<(&'static str, &'static str, String)>;

/// `<verb> table WHERE` the rows are `uri`'s with ingest time `<op> ingest_micros`, restricted
/// to `days` (the partition filter: no full-table scan, and valid under
/// require_partition_filter).
fn object_rows_where(
    table_ref: &str,
    verb: &str,
    op: &str,
    uri: &str,
    ingest_micros: i64,
    days: Option<DaySpan>,
) -> (String, Params) {
    let mut sql = format!(
        "{verb} `{table_ref}` WHERE source_object = @object AND UNIX_MICROS(ingest_time) {op} @ingest"
    );
    let mut params = vec![
        ("object", "STRING", uri.to_string()),
        ("ingest", "INT64", ingest_micros.to_string()),
    ];
    if let Some(days) = days {
        sql.push_str(" AND log_date BETWEEN @first AND @last");
        params.push(("first", "DATE", IsoDate(days.first).to_string()));
        params.push(("last", "DATE", IsoDate(days.last).to_string()));
    }
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_deletes_are_restricted_to_the_objects_dates() {
        let days = DaySpan {
            first: 20_513,
            last: 20_514,
        };
        let (sql, params) = object_rows_where(
            "p.d.logs",
            "SELECT COUNT(*) FROM",
            "=",
            "s3://b/k",
            7,
            Some(days),
        );
        assert_eq!(
            sql,
            "SELECT COUNT(*) FROM `p.d.logs` WHERE source_object = @object \
             AND UNIX_MICROS(ingest_time) = @ingest AND log_date BETWEEN @first AND @last"
        );
        assert_eq!(params[2], ("first", "DATE", "2026-03-01".to_string()));
        assert_eq!(params[3], ("last", "DATE", "2026-03-02".to_string()));
        let (sql, params) = object_rows_where("p.d.q", "DELETE FROM", "<", "s3://b/k", 7, None);
        assert!(!sql.contains("log_date"), "{sql}");
        assert_eq!(params.len(), 2);
    }
}
