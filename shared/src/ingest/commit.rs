//! Committing a batch: plan → commit each table → recover what a dead attempt left → replace.
//!
//! Whether a table's stream was committed is read from the stream itself (GetWriteStream's
//! `commit_time`, STREAM_ALREADY_COMMITTED): free and exact. Only when the stream is gone
//! (garbage-collected: BigQuery keeps finalized, uncommitted data for about 4 hours and
//! pending streams for 24) are the rows themselves counted, restricted to the object's dates.
//! A table found neither committed nor present is staged again from the object.

use std::collections::{BTreeMap, BTreeSet};

use super::{IngestError, Ingestor, ObjectReport, Outcome};
use crate::bigquery::{BigQueryError, CommitOutcome, StreamStatus};
use crate::fault::fault_point;
use crate::ledger::{CommitPlan, Ledger, PlannedObject};
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
    /// re-staging tables whose streams expired, then (forced replays) deletes the older rows
    /// of the objects replaced. Safe to run again after a crash at any point. Returns each
    /// object's report, by ledger id.
    pub(super) async fn finish(
        &self,
        mut plan: CommitPlan,
        resuming: bool,
        tracking: Option<Tracking<'_>>,
    ) -> Result<BTreeMap<String, ObjectReport>, IngestError> {
        let name = plan_name(&plan);
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
                match self.commit_table(&name, &plan, &table, resuming).await? {
                    TableCommit::Lost => {
                        lost.insert(table);
                        continue;
                    }
                    TableCommit::Committed => {}
                }
                fault_point("after_table_commit");
                plan.committed.insert(table);
                if let Some(t) = &tracking {
                    t.progress(&name, &plan).await?;
                }
            }
            if lost.is_empty() {
                break;
            }
            round += 1;
            if round > RESTAGE_ROUNDS {
                return Err(IngestError::Recovery {
                    object: name,
                    table: lost.into_iter().collect::<Vec<_>>().join(", "),
                    detail: format!("streams expired again after {RESTAGE_ROUNDS} re-stagings"),
                });
            }
            self.restage(&name, &mut plan, &lost).await?;
            if let Some(t) = &tracking {
                t.progress(&name, &plan).await?;
            }
            fault_point("after_restage");
        }
        fault_point("after_all_commits");
        self.delete_replaced(&name, &plan).await?;
        reports_of(&plan)
    }

    /// Commits one table's streams (together: all or none), or finds out what a dead attempt
    /// did with them.
    async fn commit_table(
        &self,
        name: &str,
        plan: &CommitPlan,
        table: &str,
        resuming: bool,
    ) -> Result<TableCommit, IngestError> {
        let bq_error = |source| IngestError::BigQuery {
            object: name.to_string(),
            source,
        };
        let api = self.bq.write_api();
        let streams = &plan.streams[table];
        if resuming {
            // A table's streams are only ever committed together, so one committed stream
            // says all were; one gone means they can no longer be committed together.
            let mut gone = false;
            for stream in streams {
                match api.stream_status(stream).await.map_err(bq_error)? {
                    StreamStatus::Committed => return Ok(TableCommit::Committed),
                    StreamStatus::Gone => gone = true,
                    StreamStatus::NotCommitted => {}
                }
            }
            if gone {
                tracing::warn!(
                    table,
                    ?streams,
                    "a stream is gone; checking the table's rows"
                );
                return self.committed_by_data(name, plan, table).await;
            }
        }
        match api
            .commit_streams(&self.bq.table_path(table), streams)
            .await
            .map_err(bq_error)?
        {
            CommitOutcome::Committed | CommitOutcome::AlreadyCommitted => {
                Ok(TableCommit::Committed)
            }
            CommitOutcome::Gone(detail) => {
                tracing::warn!(table, ?streams, %detail, "streams not committable; checking the table's rows");
                self.committed_by_data(name, plan, table).await
            }
        }
    }

    /// The fallback when the stream cannot say: this attempt's rows of the batch's objects in
    /// `table`, counted within their dates. All of them: committed; none: lost.
    async fn committed_by_data(
        &self,
        name: &str,
        plan: &CommitPlan,
        table: &str,
    ) -> Result<TableCommit, IngestError> {
        let expected = plan.rows.get(table).copied().unwrap_or(0);
        let uris: Vec<String> = plan
            .objects_in(table)
            .map(|(_, o)| o.object.uri())
            .collect();
        let present = self
            .object_rows(
                &uris,
                table,
                "=",
                plan.stamp(table),
                plan.days.get(table).copied(),
            )
            .await
            .map_err(|source| IngestError::BigQuery {
                object: name.to_string(),
                source,
            })?;
        if present == expected {
            Ok(TableCommit::Committed)
        } else if present == 0 {
            Ok(TableCommit::Lost)
        } else {
            Err(IngestError::Recovery {
                object: name.to_string(),
                table: table.to_string(),
                detail: format!("{present} rows of this attempt present, {expected} expected"),
            })
        }
    }

    /// Reads the objects with rows in the `lost` tables again, into new streams for those
    /// tables only; the plan then names those streams, stamped with the new attempt's time.
    async fn restage(
        &self,
        name: &str,
        plan: &mut CommitPlan,
        lost: &BTreeSet<String>,
    ) -> Result<(), IngestError> {
        tracing::warn!(tables = ?lost, "streams expired before their commit: staging those tables again");
        let stamp = crate::clock::now_micros().max(plan.ingest_micros + 1);
        let members: Vec<(&String, &PlannedObject)> = plan
            .objects
            .iter()
            .filter(|(_, o)| lost.iter().any(|t| o.rows.get(t).is_some_and(|&n| n > 0)))
            .collect();
        let objects: Vec<LogObject> = members.iter().map(|(_, o)| o.object.clone()).collect();
        let staged = self.stage(&objects, stamp, Some(lost)).await?;
        for ((_, planned), result) in members.iter().zip(&staged.objects) {
            let uri = planned.object.uri();
            let staged_object = result.as_ref().map_err(|e| IngestError::Recovery {
                object: uri.clone(),
                table: lost.iter().cloned().collect::<Vec<_>>().join(", "),
                detail: format!(
                    "its stream expired uncommitted and the object cannot be read again: {e}"
                ),
            })?;
            for table in lost {
                let expected = planned.rows.get(table).copied().unwrap_or(0);
                let rows = staged_object.rows.get(table).copied().unwrap_or(0);
                if rows != expected {
                    return Err(IngestError::Recovery {
                        object: uri,
                        table: table.clone(),
                        detail: format!(
                            "staged again with {rows} rows, the plan has {expected} ({:?}); \
                             the other tables are committed",
                            staged_object.report.outcome
                        ),
                    });
                }
            }
        }
        for table in lost {
            let (Some(streams), Some(&rows)) = (staged.streams.get(table), staged.rows.get(table))
            else {
                return Err(IngestError::Recovery {
                    object: name.to_string(),
                    table: table.clone(),
                    detail: "staged again without rows".into(),
                });
            };
            if Some(&rows) != plan.rows.get(table) {
                return Err(IngestError::Recovery {
                    object: name.to_string(),
                    table: table.clone(),
                    detail: format!(
                        "staged again with {rows} rows, the plan has {:?}",
                        plan.rows.get(table)
                    ),
                });
            }
            plan.streams.insert(table.clone(), streams.clone());
            plan.stamps.insert(table.clone(), stamp);
        }
        Ok(())
    }

    /// Forced replays: deletes the replaced objects' rows older than this plan, with one
    /// statement per table for the whole batch (DML bills the table it touches, and BigQuery
    /// queues few mutations per table), within the dates those rows have.
    async fn delete_replaced(&self, name: &str, plan: &CommitPlan) -> Result<(), IngestError> {
        let mut tables: BTreeMap<String, (Vec<String>, Option<DaySpan>)> = BTreeMap::new();
        for planned in plan.objects.values() {
            let Some(replace) = &planned.replace_tables else {
                continue;
            };
            let mut affected: Vec<(String, Option<DaySpan>)> =
                replace.iter().map(|(t, d)| (t.clone(), *d)).collect();
            for table in planned.rows.keys() {
                if !replace.contains_key(table) {
                    affected.push((table.clone(), plan.days.get(table).copied()));
                }
            }
            for (table, days) in affected {
                let days = match (days, plan.days.get(&table)) {
                    (Some(a), Some(b)) => Some(a.union(*b)),
                    (a, None) => a,
                    (None, Some(_)) => None,
                };
                let entry = tables.entry(table).or_insert_with(|| (Vec::new(), days));
                entry.0.push(planned.object.uri());
                entry.1 = match (entry.1, days) {
                    (Some(a), Some(b)) => Some(a.union(b)),
                    _ => None,
                };
            }
        }
        for (table, (uris, days)) in tables {
            let deleted = self
                .delete_older_rows(&uris, &table, plan.ingest_micros, days)
                .await
                .map_err(|source| IngestError::BigQuery {
                    object: name.to_string(),
                    source,
                })?;
            tracing::info!(
                table,
                objects = uris.len(),
                deleted,
                "forced replay: earlier rows of these objects replaced"
            );
        }
        Ok(())
    }

    /// Rows of `uris` in `table` whose ingest time is `op` `ingest_micros`.
    async fn object_rows(
        &self,
        uris: &[String],
        table: &str,
        op: &str,
        ingest_micros: i64,
        days: Option<DaySpan>,
    ) -> Result<u64, BigQueryError> {
        let Some((sql, params)) = self
            .object_rows_sql(table, "SELECT COUNT(*) FROM", op, uris, ingest_micros, days)
            .await?
        else {
            return Ok(0);
        };
        let rows = self.bq.query_with(&sql, &borrowed(&params)).await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Deletes the rows of `uris` older than `ingest_micros` from `table`.
    async fn delete_older_rows(
        &self,
        uris: &[String],
        table: &str,
        ingest_micros: i64,
        days: Option<DaySpan>,
    ) -> Result<u64, BigQueryError> {
        let Some((sql, params)) = self
            .object_rows_sql(table, "DELETE FROM", "<", uris, ingest_micros, days)
            .await?
        else {
            return Ok(0);
        };
        self.bq.execute_dml(&sql, &borrowed(&params)).await
    }

    /// `<verb> table WHERE` the rows are of `uris` with ingest time `<op> ingest_micros`,
    /// within `days` when the table has log dates (the partition filter); `None` when the
    /// table does not exist (nothing of the objects can be in it).
    async fn object_rows_sql(
        &self,
        table: &str,
        verb: &str,
        op: &str,
        uris: &[String],
        ingest_micros: i64,
        days: Option<DaySpan>,
    ) -> Result<Option<(String, Params)>, BigQueryError> {
        if uris.is_empty() || self.bq.get_table(table).await?.is_none() {
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
            uris,
            ingest_micros,
            days,
        )))
    }
}

/// Every object's report in a finished plan, by ledger id.
pub(super) fn reports_of(plan: &CommitPlan) -> Result<BTreeMap<String, ObjectReport>, IngestError> {
    plan.objects
        .iter()
        .map(|(id, planned)| {
            let mut report: ObjectReport =
                serde_json::from_value(planned.report.clone()).map_err(|e| {
                    IngestError::Recovery {
                        object: planned.object.uri(),
                        table: String::new(),
                        detail: format!("unreadable report in the plan: {e}"),
                    }
                })?;
            if matches!(report.outcome, Outcome::Loaded | Outcome::Empty) {
                report.outcome = if report.data_lines == 0 {
                    Outcome::Empty
                } else {
                    Outcome::Loaded
                };
            }
            Ok((id.clone(), report))
        })
        .collect()
}

/// How a batch is named in errors and logs.
fn plan_name(plan: &CommitPlan) -> String {
    let mut uris = plan.objects.values().map(|o| o.object.uri());
    match (uris.next(), plan.objects.len()) {
        (Some(first), 1) => first,
        (Some(first), n) => format!("{first} and {} more objects of its batch", n - 1),
        (None, _) => "an empty batch".into(),
    }
}

/// Query parameters `(name, type, value)`.
type Params = Vec<(String, &'static str, String)>;

fn borrowed(params: &Params) -> Vec<(&str, &str, String)> {
    params
        .iter()
        .map(|(name, kind, value)| (name.as_str(), *kind, value.clone()))
        .collect()
}

/// `<verb> table WHERE` the rows are of `uris` with ingest time `<op> ingest_micros`,
/// restricted to `days` (the partition filter: no full-table scan, and valid under
/// require_partition_filter).
fn object_rows_where(
    table_ref: &str,
    verb: &str,
    op: &str,
    uris: &[String],
    ingest_micros: i64,
    days: Option<DaySpan>,
) -> (String, Params) {
    let names: Vec<String> = (0..uris.len()).map(|i| format!("@o{i}")).collect();
    let mut sql = format!(
        "{verb} `{table_ref}` WHERE source_object IN ({}) AND UNIX_MICROS(ingest_time) {op} @ingest",
        names.join(", ")
    );
    let mut params: Params = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| (format!("o{i}"), "STRING", uri.clone()))
        .collect();
    params.push(("ingest".into(), "INT64", ingest_micros.to_string()));
    if let Some(days) = days {
        sql.push_str(" AND log_date BETWEEN @first AND @last");
        params.push(("first".into(), "DATE", IsoDate(days.first).to_string()));
        params.push(("last".into(), "DATE", IsoDate(days.last).to_string()));
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
        let batch = ["s3://b/k1".to_string(), "s3://b/k2".to_string()];
        let (sql, params) = object_rows_where(
            "p.d.logs",
            "SELECT COUNT(*) FROM",
            "=",
            &batch,
            7,
            Some(days),
        );
        assert_eq!(
            sql,
            "SELECT COUNT(*) FROM `p.d.logs` WHERE source_object IN (@o0, @o1) \
             AND UNIX_MICROS(ingest_time) = @ingest AND log_date BETWEEN @first AND @last"
        );
        assert_eq!(params[1], ("o1".into(), "STRING", "s3://b/k2".to_string()));
        assert_eq!(
            params[3],
            ("first".into(), "DATE", "2026-03-01".to_string())
        );
        assert_eq!(params[4], ("last".into(), "DATE", "2026-03-02".to_string()));
        let (sql, params) = object_rows_where("p.d.q", "DELETE FROM", "<", &batch[..1], 7, None);
        assert!(!sql.contains("log_date"), "{sql}");
        assert_eq!(params.len(), 2);
    }
}
