//! Ingesting one log object, top to bottom:
//!
//! 1. open the object as a stream (S3 GetObject pinned to the announced ETag, or a file);
//! 2. on a blocking thread: gunzip → parse by `#Fields` → route each row by its own date →
//!    encode → batches per table (see [`crate::transform`]);
//! 3. here: for each table the object touches, make sure it exists, open a PENDING write
//!    stream and append the batches with explicit offsets; rejected lines go to quarantine;
//! 4. once the whole object parsed: finalize every stream, then commit each table's stream.
//!
//! Until step 4 nothing is visible in BigQuery, so any failure before it leaves nothing
//! behind, and the retry starts from scratch.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tracing::Instrument;

use crate::bigquery::encode::RowEncoder;
use crate::bigquery::{BigQuery, BigQueryError, StreamWriter, TableSpec};
use crate::config::Config;
use crate::event::{decode_body, Notification, ObjectRef};
use crate::quarantine::{QuarantineError, QuarantineTarget, QuarantineWriter};
use crate::route::Layout;
use crate::source::{self, LogObject, SourceError};
use crate::transform::{
    transform_gzip, BatchSink, RejectedLine, Stopped, TransformError, TransformOptions,
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
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rows committed (or nothing to commit: only rejected lines).
    Loaded,
    /// A zero-byte object or one with no data lines.
    Empty,
    /// The object no longer exists: acknowledged, nothing to do.
    Gone,
}

/// The result of ingesting one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
    /// Tables known to exist, so warm invocations skip the check.
    known_tables: Mutex<HashSet<String>>,
}

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
            known_tables: Mutex::new(HashSet::new()),
        })
    }

    pub fn bigquery(&self) -> &BigQuery {
        &self.bq
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// Ingests one object, in its own tracing span.
    pub async fn ingest(&self, object: &LogObject) -> Result<ObjectReport, IngestError> {
        let uri = object.uri();
        let span = tracing::info_span!("object", object = %uri);
        async {
            let started = Instant::now();
            let result = self.ingest_inner(object, &uri).await;
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

    async fn ingest_inner(
        &self,
        object: &LogObject,
        uri: &str,
    ) -> Result<ObjectReport, IngestError> {
        if let LogObject::S3(ObjectRef { size: Some(0), .. }) = object {
            return Ok(ObjectReport::empty(uri.to_string(), Outcome::Empty));
        }
        let (stream, size) = match source::open(&self.s3, object).await {
            Ok(opened) => opened,
            Err(SourceError::Gone { detail, .. }) => {
                tracing::warn!(%detail, "object is gone; acknowledging");
                return Ok(ObjectReport::empty(uri.to_string(), Outcome::Gone));
            }
            Err(e) => return Err(e.into()),
        };
        if size == Some(0) {
            return Ok(ObjectReport::empty(uri.to_string(), Outcome::Empty));
        }

        // Step 2: parse on a blocking thread, feeding batches through a bounded channel.
        let (tx, mut rx) = mpsc::channel::<Produced>(CHANNEL_DEPTH);
        let options = TransformOptions {
            layout: self.layout.clone(),
            batch_bytes: self.batch_bytes,
            max_line_bytes: self.max_line_bytes,
        };
        let encoder = RowEncoder::new(uri, now_micros());
        let compressed = SyncIoBridge::new(stream);
        let span = tracing::Span::current();
        let worker = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            transform_gzip(compressed, &options, &encoder, &mut ChannelSink(tx))
        });

        // Step 3: write batches as they come.
        let mut writers: BTreeMap<String, StreamWriter> = BTreeMap::new();
        let mut quarantine = self.quarantine.clone().map(|target| {
            let version = match object {
                LogObject::S3(o) => o
                    .version_id
                    .clone()
                    .or(o.etag.clone())
                    .unwrap_or_else(|| "latest".into()),
                LogObject::File(_) => "file".into(),
            };
            QuarantineWriter::new(self.s3.clone(), target, uri, &version)
        });
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
                        if let Some(q) = quarantine.as_mut() {
                            q.add(&line).await.map_err(|source| IngestError::Quarantine {
                                object: uri.to_string(),
                                source,
                            })?;
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
        let quarantine_parts = match quarantine {
            Some(q) => q.finish().await.map_err(|source| IngestError::Quarantine {
                object: uri.to_string(),
                source,
            })?,
            None => Vec::new(),
        };

        // Step 4: make the rows visible, atomically per table.
        let tables = self
            .commit(writers)
            .await
            .map_err(|source| IngestError::BigQuery {
                object: uri.to_string(),
                source,
            })?;
        let read = stats.read;
        Ok(ObjectReport {
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
        })
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

    /// Flushes and finalizes every stream, then commits each table's stream.
    async fn commit(
        &self,
        writers: BTreeMap<String, StreamWriter>,
    ) -> Result<BTreeMap<String, u64>, BigQueryError> {
        let api = self.bq.write_api();
        let mut finalized = Vec::with_capacity(writers.len());
        for (table, mut writer) in writers {
            let rows = writer.flush().await?;
            let count = api.finalize(writer.stream_name()).await?;
            if count != rows {
                return Err(BigQueryError::Write {
                    call: format!("FinalizeWriteStream {}", writer.stream_name()),
                    message: format!("stream holds {count} rows, {rows} were appended"),
                });
            }
            finalized.push((table, writer.stream_name().to_string(), rows as u64));
        }
        let mut tables = BTreeMap::new();
        for (table, stream, rows) in finalized {
            api.batch_commit(&self.bq.table_path(&table), &[stream])
                .await?;
            tables.insert(table, rows);
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
            Notification::Objects(objects) => {
                let mut reports = Vec::with_capacity(objects.len());
                for object in objects {
                    reports.push(
                        self.ingest(&LogObject::S3(object))
                            .await
                            .map_err(MessageError::Ingest)?,
                    );
                }
                Ok(reports)
            }
        }
    }
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

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Shared handle used by the Lambda and the CLI.
pub type SharedIngestor = Arc<Ingestor>;
