//! Ingesting one log object, top to bottom:
//!
//! 1. open the object as a stream (S3 GetObject pinned to the announced ETag, or a file);
//! 2. on a blocking thread: gunzip → parse by `#Fields` → route each row by its own date →
//!    encode → batches per table (see [`crate::transform`]);
//! 3. here: for each table the object touches, make sure it exists, open a PENDING write
//!    stream and append the batches with explicit offsets; rejected lines go to quarantine;
//! 4. once the whole object parsed: finalize every stream, record the commit plan in the
//!    ledger, then commit each table's stream, recording progress; then mark the object DONE.
//!
//! Until step 4 nothing is visible in BigQuery, so any failure before it leaves nothing
//! behind, and the retry starts from scratch. A crash during step 4 is finished by the next
//! attempt from the plan (see [`crate::ledger`]). Objects are claimed in the ledger first, so
//! a redelivered or concurrently delivered object is written exactly once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tracing::Instrument;

use crate::bigquery::encode::RowEncoder;
use crate::bigquery::{BigQuery, BigQueryError, StreamWriter, TableSpec};
use crate::config::Config;
use crate::event::{decode_body, Notification, ObjectRef};
use crate::fault::fault_point;
use crate::ledger::{Claim, CommitPlan, Ledger, LedgerError};
use crate::quarantine::{QuarantineError, QuarantineTarget, QuarantineWriter};
use crate::route::Layout;
use crate::source::{self, LogObject, SourceError};
use crate::transform::{
    transform_gzip_threaded, BatchSink, RejectedLine, Stopped, TransformError, TransformOptions,
    TransformStats,
};

/// Batches in flight between the parsing thread and the writer: bounds memory.
const CHANNEL_DEPTH: usize = 2;
/// Rejected lines logged individually per object before only counting them.
const LOGGED_REJECTS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{object}: {source}")]
    Read {
        object: String,
        #[source]
        source: crate::cloudfront::ReadError,
    },
    #[error("{object}: {source}")]
    BigQuery {
        object: String,
        #[source]
        source: BigQueryError,
    },
    #[error("{object}: {source}")]
    Quarantine {
        object: String,
        #[source]
        source: QuarantineError,
    },
    #[error("{object}: the parsing thread failed: {detail}")]
    Worker { object: String, detail: String },
    #[error("{object}: {source}")]
    Ledger {
        object: String,
        #[source]
        source: LedgerError,
    },
    #[error(
        "{object} is being ingested by {owner} (lease ends in {lease_seconds_left} s): retry later"
    )]
    Busy {
        object: String,
        owner: String,
        lease_seconds_left: i64,
    },
    #[error("{object}: recovering table {table}: {detail}")]
    Recovery {
        object: String,
        table: String,
        detail: String,
    },
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rows committed (or nothing to commit: only rejected lines).
    Loaded,
    /// A zero-byte object or one with no data lines.
    Empty,
    /// The object no longer exists: acknowledged, nothing to do.
    Gone,
    /// Already ingested (a redelivery or replay): acknowledged without writing.
    AlreadyDone,
}

/// The result of ingesting one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectReport {
    pub object: String,
    pub outcome: Outcome,
    /// Rows committed per table.
    pub tables: BTreeMap<String, u64>,
    pub data_lines: u64,
    pub rows: u64,
    pub rejected: u64,
    /// Decompressed bytes.
    pub bytes: u64,
    /// Quarantine parts written (`s3://` URIs).
    pub quarantine: Vec<String>,
    /// Latest request time among the rows, microseconds since the epoch.
    pub latest_request_micros: Option<i64>,
}

impl ObjectReport {
    fn empty(object: String, outcome: Outcome) -> Self {
        ObjectReport {
            object,
            outcome,
            tables: BTreeMap::new(),
            data_lines: 0,
            rows: 0,
            rejected: 0,
            bytes: 0,
            quarantine: Vec::new(),
            latest_request_micros: None,
        }
    }
}

/// Everything ingestion needs, built once per process (a warm Lambda reuses it).
pub struct Ingestor {
    s3: aws_sdk_s3::Client,
    bq: BigQuery,
    layout: Layout,
    partition_expiration_days: Option<u32>,
    batch_bytes: usize,
    max_line_bytes: usize,
    quarantine: Option<QuarantineTarget>,
    /// Exactly-once bookkeeping for S3 objects (local files are not tracked).
    ledger: Option<Ledger>,
    /// Tables known to exist, so warm invocations skip the check.
    known_tables: Mutex<HashSet<String>>,
}

/// An object read and appended to finalized (uncommitted) PENDING streams.
struct Staged {
    report: ObjectReport,
    /// Table → stream, log tables and the quarantine table alike.
    streams: BTreeMap<String, String>,
    /// Table → rows in its stream.
    rows: BTreeMap<String, u64>,
}

impl Staged {
    /// Nothing staged: the object was empty or gone.
    fn nothing(uri: &str, outcome: Outcome) -> Staged {
        Staged {
            report: ObjectReport::empty(uri.to_string(), outcome),
            streams: BTreeMap::new(),
            rows: BTreeMap::new(),
        }
    }
}

/// Where this object's rejected lines go.
enum Quarantine {
    None,
    S3(QuarantineWriter),
    Table {
        table: String,
        rows: Vec<Vec<u8>>,
        bytes: usize,
    },
}

/// Quarantine rows per AppendRows request.
const QUARANTINE_BATCH_BYTES: usize = 1 << 20;

impl Ingestor {
    pub fn new(
        config: &Config,
        s3: aws_sdk_s3::Client,
        bq: BigQuery,
    ) -> Result<Self, QuarantineError> {
        Ok(Ingestor {
            s3,
            bq,
            layout: config.layout.clone(),
            partition_expiration_days: config.partition_expiration_days,
            batch_bytes: config
                .batch_bytes
                .min(crate::bigquery::write::MAX_REQUEST_BYTES / 2),
            max_line_bytes: config.max_line_bytes,
            quarantine: config
                .quarantine
                .as_deref()
                .map(QuarantineTarget::parse)
                .transpose()?,
            ledger: None,
            known_tables: Mutex::new(HashSet::new()),
        })
    }

    /// The ingestor as every entry point builds it: BigQuery, S3 and the DynamoDB ledger, all
    /// from `config` and the AWS environment.
    pub async fn from_config(
        config: &Config,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, SetupError> {
        let bq = BigQuery::connect(&config.bigquery, aws).await?;
        let ledger = Ledger::new(
            aws_sdk_dynamodb::Client::new(aws),
            &config.ledger_table,
            config.lease,
        );
        Ok(Ingestor::new(config, crate::aws::s3(aws), bq)?.with_ledger(ledger))
    }

    /// Tracks S3 objects in `ledger`.
    pub fn with_ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    pub fn bigquery(&self) -> &BigQuery {
        &self.bq
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// Ingests one object, in its own tracing span.
    pub async fn ingest(&self, object: &LogObject) -> Result<ObjectReport, IngestError> {
        self.ingest_with(object, false).await
    }

    /// Ingests one object; `force` re-ingests an object already done, replacing its rows.
    pub async fn ingest_with(
        &self,
        object: &LogObject,
        force: bool,
    ) -> Result<ObjectReport, IngestError> {
        let uri = object.uri();
        let span = tracing::info_span!("object", object = %uri);
        async {
            let started = Instant::now();
            let result = match (object, &self.ledger) {
                (LogObject::S3(o), Some(ledger)) => self.ingest_once(o, &uri, ledger, force).await,
                _ => self.ingest_untracked(object, &uri).await,
            };
            match &result {
                Ok(report) => tracing::info!(
                    outcome = ?report.outcome,
                    rows = report.rows,
                    rejected = report.rejected,
                    tables = ?report.tables,
                    bytes = report.bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "object done"
                ),
                Err(e) => tracing::error!(error = %e, "object failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Ingests an S3 object under the ledger's protocol: claim → stage → plan → commit → DONE.
    async fn ingest_once(
        &self,
        object: &ObjectRef,
        uri: &str,
        ledger: &Ledger,
        force: bool,
    ) -> Result<ObjectReport, IngestError> {
        let id = Ledger::object_id(object);
        let owner = format!("{}-{}", std::process::id(), now_micros());
        let ledger_error = |source| IngestError::Ledger {
            object: uri.to_string(),
            source,
        };
        let claim = ledger
            .claim(&id, &owner, force)
            .await
            .map_err(ledger_error)?;
        fault_point("after_claim");
        // Only a resumed plan can have tables committed by the attempt that died.
        let resuming = matches!(claim, Claim::Resume(_));
        let plan = match claim {
            Claim::Done(report) => {
                tracing::info!("already ingested: redelivery skipped");
                let mut report: ObjectReport = serde_json::from_value(report)
                    .unwrap_or_else(|_| ObjectReport::empty(uri.to_string(), Outcome::Loaded));
                report.outcome = Outcome::AlreadyDone;
                return Ok(report);
            }
            Claim::Busy {
                owner,
                lease_seconds_left,
            } => {
                return Err(IngestError::Busy {
                    object: uri.to_string(),
                    owner,
                    lease_seconds_left,
                })
            }
            Claim::Resume(plan) => {
                tracing::warn!(tables = ?plan.streams.keys(), "finishing a commit an earlier attempt started");
                plan
            }
            Claim::Fresh { replace_tables } => {
                let ingest_micros = now_micros();
                let staged = match self
                    .stage(&LogObject::S3(object.clone()), uri, ingest_micros)
                    .await
                {
                    Ok(staged) => staged,
                    Err(e) => {
                        // Let the retry start at once instead of waiting out the lease.
                        let _ = ledger.release(&id, &owner).await;
                        return Err(e);
                    }
                };
                if staged.streams.is_empty() && replace_tables.is_none() {
                    ledger
                        .done(
                            &id,
                            &owner,
                            &serde_json::to_value(&staged.report).expect("reports serialize"),
                        )
                        .await
                        .map_err(ledger_error)?;
                    return Ok(staged.report);
                }
                let plan = CommitPlan {
                    ingest_micros,
                    rows: staged.rows,
                    streams: staged.streams,
                    committed: Default::default(),
                    replace_tables,
                    report: serde_json::to_value(&staged.report).expect("reports serialize"),
                };
                ledger
                    .committing(&id, &owner, &plan)
                    .await
                    .map_err(ledger_error)?;
                fault_point("after_plan_recorded");
                plan
            }
        };
        let report = self
            .finish(uri, plan, resuming, Some((ledger, &id, &owner)))
            .await?;
        ledger
            .done(
                &id,
                &owner,
                &serde_json::to_value(&report).expect("reports serialize"),
            )
            .await
            .map_err(ledger_error)?;
        Ok(report)
    }

    /// Ingests without a ledger (local files, or no ledger configured): stage, then commit.
    async fn ingest_untracked(
        &self,
        object: &LogObject,
        uri: &str,
    ) -> Result<ObjectReport, IngestError> {
        let ingest_micros = now_micros();
        let staged = self.stage(object, uri, ingest_micros).await?;
        let plan = CommitPlan {
            ingest_micros,
            rows: staged.rows,
            streams: staged.streams,
            report: serde_json::to_value(&staged.report).expect("reports serialize"),
            ..Default::default()
        };
        self.finish(uri, plan, false, None).await
    }

    /// Commits every table of `plan` not yet known committed, recording progress after each,
    /// then (forced replay) deletes the object's older rows. Safe to run again after a crash.
    async fn finish(
        &self,
        uri: &str,
        mut plan: CommitPlan,
        resuming: bool,
        ledger: Option<(&Ledger, &str, &str)>,
    ) -> Result<ObjectReport, IngestError> {
        let bq_error = |source| IngestError::BigQuery {
            object: uri.to_string(),
            source,
        };
        let pending: Vec<(String, String)> = plan
            .streams
            .iter()
            .filter(|(table, _)| !plan.committed.contains(*table))
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect();
        for (table, stream) in pending {
            let expected = plan.rows.get(&table).copied().unwrap_or(0);
            // Resuming: did the attempt that died commit this table? The rows say so.
            // A first attempt has committed nothing, so it skips the query.
            let present = if resuming {
                self.attempt_rows(uri, &table, plan.ingest_micros)
                    .await
                    .map_err(bq_error)?
            } else {
                0
            };
            if present == 0 {
                self.bq
                    .write_api()
                    .batch_commit(&self.bq.table_path(&table), &[stream])
                    .await
                    .map_err(bq_error)?;
            } else if present != expected {
                return Err(IngestError::Recovery {
                    object: uri.to_string(),
                    table,
                    detail: format!("{present} rows of this attempt present, {expected} expected"),
                });
            }
            fault_point("after_table_commit");
            plan.committed.insert(table);
            if let Some((ledger, id, owner)) = ledger {
                ledger
                    .progress(id, owner, &plan)
                    .await
                    .map_err(|source| IngestError::Ledger {
                        object: uri.to_string(),
                        source,
                    })?;
            }
        }
        fault_point("after_all_commits");
        if let Some(replace) = &plan.replace_tables {
            for table in replace.iter().chain(plan.streams.keys()) {
                let deleted = self
                    .delete_older_rows(uri, table, plan.ingest_micros)
                    .await
                    .map_err(bq_error)?;
                tracing::info!(
                    table,
                    deleted,
                    "forced replay: earlier rows of this object replaced"
                );
            }
        }
        let mut report: ObjectReport =
            serde_json::from_value(plan.report.clone()).map_err(|e| IngestError::Recovery {
                object: uri.to_string(),
                table: String::new(),
                detail: format!("unreadable report in the plan: {e}"),
            })?;
        report.outcome = if report.data_lines == 0 {
            Outcome::Empty
        } else {
            Outcome::Loaded
        };
        Ok(report)
    }

    /// Rows of `uri` written by the attempt stamped `ingest_micros`, in `table`.
    async fn attempt_rows(
        &self,
        uri: &str,
        table: &str,
        ingest_micros: i64,
    ) -> Result<u64, BigQueryError> {
        let Some(sql) = self
            .object_rows_sql(table, "SELECT COUNT(*) FROM", "=")
            .await?
        else {
            return Ok(0);
        };
        let rows = self
            .bq
            .query_with(&sql, &object_params(uri, ingest_micros))
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Deletes `uri`'s rows older than the attempt stamped `ingest_micros` from `table`.
    async fn delete_older_rows(
        &self,
        uri: &str,
        table: &str,
        ingest_micros: i64,
    ) -> Result<u64, BigQueryError> {
        let Some(sql) = self.object_rows_sql(table, "DELETE FROM", "<").await? else {
            return Ok(0);
        };
        self.bq
            .execute_dml(&sql, &object_params(uri, ingest_micros))
            .await
    }

    /// `<verb> table WHERE` the rows are `@object`'s and their ingest time `<op> @ingest`;
    /// `None` when the table does not exist (nothing of the object can be in it).
    async fn object_rows_sql(
        &self,
        table: &str,
        verb: &str,
        op: &str,
    ) -> Result<Option<String>, BigQueryError> {
        if self.bq.get_table(table).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(format!(
            "{verb} `{}.{}.{table}` WHERE source_object = @object AND UNIX_MICROS(ingest_time) {op} @ingest",
            self.bq.project, self.bq.dataset
        )))
    }

    /// Steps 1–3 and finalize: reads the whole object into finalized, uncommitted streams.
    async fn stage(
        &self,
        object: &LogObject,
        uri: &str,
        ingest_micros: i64,
    ) -> Result<Staged, IngestError> {
        if let LogObject::S3(ObjectRef { size: Some(0), .. }) = object {
            return Ok(Staged::nothing(uri, Outcome::Empty));
        }
        let (stream, size) = match source::open(&self.s3, object).await {
            Ok(opened) => opened,
            Err(SourceError::Gone { detail, .. }) => {
                tracing::warn!(%detail, "object is gone; acknowledging");
                return Ok(Staged::nothing(uri, Outcome::Gone));
            }
            Err(e) => return Err(e.into()),
        };
        if size == Some(0) {
            return Ok(Staged::nothing(uri, Outcome::Empty));
        }

        // Step 2: parse on a blocking thread, feeding batches through a bounded channel.
        let (tx, mut rx) = mpsc::channel::<Produced>(CHANNEL_DEPTH);
        let options = TransformOptions {
            layout: self.layout.clone(),
            batch_bytes: self.batch_bytes,
            max_line_bytes: self.max_line_bytes,
        };
        let encoder = RowEncoder::new(uri, ingest_micros);
        let compressed = SyncIoBridge::new(stream);
        let span = tracing::Span::current();
        let worker = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            transform_gzip_threaded(compressed, &options, &encoder, &mut ChannelSink(tx))
        });

        // Step 3: write batches as they come.
        let mut writers: BTreeMap<String, StreamWriter> = BTreeMap::new();
        let mut quarantine = match &self.quarantine {
            None => Quarantine::None,
            Some(QuarantineTarget::S3 { bucket, prefix }) => {
                let version = match object {
                    LogObject::S3(o) => o
                        .version_id
                        .clone()
                        .or(o.etag.clone())
                        .unwrap_or_else(|| "latest".into()),
                    LogObject::File(_) => "file".into(),
                };
                Quarantine::S3(QuarantineWriter::new(
                    self.s3.clone(),
                    bucket,
                    prefix,
                    uri,
                    &version,
                ))
            }
            Some(QuarantineTarget::Table(table)) => Quarantine::Table {
                table: table.clone(),
                rows: Vec::new(),
                bytes: 0,
            },
        };
        let mut rejected = 0u64;
        let consumed: Result<(), IngestError> = async {
            while let Some(produced) = rx.recv().await {
                match produced {
                    Produced::Batch { table, rows } => {
                        let writer = match writers.get_mut(&table) {
                            Some(w) => w,
                            None => {
                                let w = self.open_table_stream(&table).await.map_err(|source| {
                                    IngestError::BigQuery { object: uri.to_string(), source }
                                })?;
                                writers.entry(table).or_insert(w)
                            }
                        };
                        writer.append(rows).await.map_err(|source| IngestError::BigQuery {
                            object: uri.to_string(),
                            source,
                        })?;
                    }
                    Produced::Rejected(line) => {
                        rejected += 1;
                        if rejected <= LOGGED_REJECTS {
                            tracing::warn!(line = line.line_no, reason = %line.reason, "line rejected");
                        }
                        match &mut quarantine {
                            Quarantine::None => {}
                            Quarantine::S3(q) => q.add(&line).await.map_err(|source| IngestError::Quarantine {
                                object: uri.to_string(),
                                source,
                            })?,
                            Quarantine::Table { table, rows, bytes } => {
                                let row = crate::quarantine::encode_row(uri, &line, ingest_micros);
                                *bytes += row.len();
                                rows.push(row);
                                if *bytes >= QUARANTINE_BATCH_BYTES {
                                    *bytes = 0;
                                    let batch = std::mem::take(rows);
                                    self.append_quarantine(&mut writers, table, batch).await.map_err(|source| {
                                        IngestError::BigQuery { object: uri.to_string(), source }
                                    })?;
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        // On a write failure, closing the channel stops the parser at its next batch.
        drop(rx);
        let transformed = worker.await.map_err(|e| IngestError::Worker {
            object: uri.to_string(),
            detail: e.to_string(),
        })?;
        consumed?;
        let stats: TransformStats = match transformed {
            Ok(stats) => stats,
            Err(TransformError::Read(source)) => {
                return Err(IngestError::Read {
                    object: uri.to_string(),
                    source,
                })
            }
            Err(TransformError::Stopped) => {
                return Err(IngestError::Worker {
                    object: uri.to_string(),
                    detail: "stopped without a consumer error".into(),
                })
            }
        };
        let bq_error = |source| IngestError::BigQuery {
            object: uri.to_string(),
            source,
        };
        let quarantine_parts = match quarantine {
            Quarantine::None => Vec::new(),
            Quarantine::S3(q) => q.finish().await.map_err(|source| IngestError::Quarantine {
                object: uri.to_string(),
                source,
            })?,
            Quarantine::Table { table, rows, .. } => {
                if !rows.is_empty() {
                    self.append_quarantine(&mut writers, &table, rows)
                        .await
                        .map_err(bq_error)?;
                }
                match writers.get(&table) {
                    Some(w) => vec![format!("bq:{table} ({} rows)", w.rows())],
                    None => Vec::new(),
                }
            }
        };

        fault_point("after_append");
        let rows = self.finalize(&mut writers).await.map_err(bq_error)?;
        fault_point("after_finalize");
        // The report lists log tables; the plan commits the quarantine table's stream too.
        let mut tables = rows.clone();
        if let Some(QuarantineTarget::Table(table)) = &self.quarantine {
            tables.remove(table);
        }
        let read = stats.read;
        let streams = writers
            .into_iter()
            .map(|(table, w)| (table, w.stream_name().to_string()))
            .collect();
        Ok(Staged {
            report: ObjectReport {
                object: uri.to_string(),
                outcome: if read.data_lines == 0 {
                    Outcome::Empty
                } else {
                    Outcome::Loaded
                },
                tables,
                data_lines: read.data_lines,
                rows: read.rows,
                rejected: read.rejected,
                bytes: read.bytes,
                quarantine: quarantine_parts,
                latest_request_micros: stats.latest_request_micros,
            },
            streams,
            rows,
        })
    }

    /// Appends quarantine rows to `table`'s stream, opening it (and the table) on first use.
    async fn append_quarantine(
        &self,
        writers: &mut BTreeMap<String, StreamWriter>,
        table: &str,
        rows: Vec<Vec<u8>>,
    ) -> Result<(), BigQueryError> {
        if !writers.contains_key(table) {
            let spec = TableSpec {
                name: table.to_string(),
                partitioned: false,
                partition_expiration_days: None,
                description:
                    "CloudFront log lines cf2bq could not parse, with object, line and reason"
                        .into(),
            };
            self.bq
                .ensure_table_with_schema(&spec, crate::quarantine::table_schema())
                .await?;
            let stream = self
                .bq
                .write_api()
                .create_pending_stream(&self.bq.table_path(table))
                .await?;
            let writer = self
                .bq
                .write_api()
                .writer_with(stream, crate::quarantine::proto_descriptor());
            writers.insert(table.to_string(), writer);
        }
        writers
            .get_mut(table)
            .expect("inserted above")
            .append(rows)
            .await
    }

    /// Makes sure `table` exists (creating it with the full schema) and opens a PENDING stream.
    async fn open_table_stream(&self, table: &str) -> Result<StreamWriter, BigQueryError> {
        let known = self
            .known_tables
            .lock()
            .expect("not poisoned")
            .contains(table);
        if !known {
            let days = self.layout.date_of_table(table).unwrap_or(0);
            let spec = TableSpec {
                name: table.to_string(),
                ..TableSpec::for_date(&self.layout, days, self.partition_expiration_days)
            };
            let status = self.bq.ensure_table(&spec).await?;
            if status == crate::bigquery::TableStatus::Created {
                tracing::warn!(table, "table was missing; created it");
            }
            self.known_tables
                .lock()
                .expect("not poisoned")
                .insert(table.to_string());
        }
        let stream = self
            .bq
            .write_api()
            .create_pending_stream(&self.bq.table_path(table))
            .await?;
        tracing::debug!(table, stream, "pending stream open");
        Ok(self.bq.write_api().writer(stream))
    }

    /// Flushes and finalizes every stream; returns rows per table.
    async fn finalize(
        &self,
        writers: &mut BTreeMap<String, StreamWriter>,
    ) -> Result<BTreeMap<String, u64>, BigQueryError> {
        let api = self.bq.write_api();
        let mut tables = BTreeMap::new();
        for (table, writer) in writers.iter_mut() {
            let rows = writer.flush().await?;
            let count = api.finalize(writer.stream_name()).await?;
            if count != rows {
                return Err(BigQueryError::Write {
                    call: format!("FinalizeWriteStream {}", writer.stream_name()),
                    message: format!("stream holds {count} rows, {rows} were appended"),
                });
            }
            tables.insert(table.clone(), rows as u64);
        }
        Ok(tables)
    }

    /// Processes one SQS message body: every object it announces. `Ok` means the message can
    /// be deleted (done, skipped, or nothing to do); `Err` means it must be retried.
    pub async fn process_message(&self, body: &str) -> Result<Vec<ObjectReport>, MessageError> {
        match decode_body(body).map_err(MessageError::Event)? {
            Notification::TestEvent => {
                tracing::info!("s3:TestEvent acknowledged");
                Ok(Vec::new())
            }
            Notification::Ignored(why) => {
                tracing::info!(%why, "notification ignored");
                Ok(Vec::new())
            }
            Notification::Objects { objects, force } => {
                let mut reports = Vec::with_capacity(objects.len());
                for object in objects {
                    let report = self
                        .ingest_with(&LogObject::S3(object), force)
                        .await
                        .map_err(MessageError::Ingest)?;
                    reports.push(report);
                }
                Ok(reports)
            }
        }
    }
}

/// Why an ingestor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    BigQuery(#[from] BigQueryError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("undecodable message: {0}")]
    Event(crate::event::EventError),
    #[error(transparent)]
    Ingest(IngestError),
}

enum Produced {
    Batch { table: String, rows: Vec<Vec<u8>> },
    Rejected(RejectedLine),
}

/// Hands the parser's output to the async writer; blocks when the writer is behind.
struct ChannelSink(mpsc::Sender<Produced>);

impl BatchSink for ChannelSink {
    fn batch(&mut self, table: &str, rows: Vec<Vec<u8>>) -> Result<(), Stopped> {
        self.0
            .blocking_send(Produced::Batch {
                table: table.to_string(),
                rows,
            })
            .map_err(|_| Stopped)
    }

    fn rejected(&mut self, line: RejectedLine) -> Result<(), Stopped> {
        self.0
            .blocking_send(Produced::Rejected(line))
            .map_err(|_| Stopped)
    }
}

/// Query parameters naming one attempt's rows of one object.
fn object_params(uri: &str, ingest_micros: i64) -> [(&'static str, &'static str, String); 2] {
    [
        ("object", "STRING", uri.to_string()),
        ("ingest", "INT64", ingest_micros.to_string()),
    ]
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
