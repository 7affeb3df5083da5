//! Staging: read → gunzip → parse → append to PENDING streams → finalize. Nothing staged is
//! visible until committed, so a failure here leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::{IngestError, Ingestor, ObjectReport, Outcome};
use crate::bigquery::encode::RowEncoder;
use crate::bigquery::{BigQueryError, StreamWriter, TableSpec};
use crate::event::ObjectRef;
use crate::fault::fault_point;
use crate::ledger::CommitPlan;
use crate::quarantine::{QuarantineTarget, QuarantineWriter};
use crate::route::DaySpan;
use crate::source::{self, LogObject, SourceError};
use crate::transform::{
    transform_gzip_threaded, BatchSink, RejectedLine, Stopped, TransformError, TransformOptions,
};

/// Batches in flight between the parsing thread and the writer: bounds memory.
const CHANNEL_DEPTH: usize = 2;
/// Rejected lines logged individually per object before only counting them.
const LOGGED_REJECTS: u64 = 20;
/// Quarantine rows per AppendRows request.
const QUARANTINE_BATCH_BYTES: usize = 1 << 20;

/// An object read and appended to finalized (uncommitted) PENDING streams: the hand-off
/// from staging to committing.
pub(super) struct Staged {
    pub report: ObjectReport,
    /// Table → stream, log tables and the quarantine table alike.
    pub streams: BTreeMap<String, String>,
    /// Table → rows in its stream.
    pub rows: BTreeMap<String, u64>,
    /// Table → the log dates of its rows.
    pub days: BTreeMap<String, DaySpan>,
}

impl Staged {
    /// Nothing staged: the object was empty or gone.
    fn nothing(uri: &str, outcome: Outcome) -> Staged {
        Staged {
            report: ObjectReport::empty(uri.to_string(), outcome),
            streams: BTreeMap::new(),
            rows: BTreeMap::new(),
            days: BTreeMap::new(),
        }
    }
}

impl Staged {
    /// The plan that commits what was staged, stamped `ingest_micros`.
    pub fn into_plan(self, ingest_micros: i64) -> CommitPlan {
        CommitPlan {
            ingest_micros,
            report: self.report.to_json(),
            streams: self.streams,
            rows: self.rows,
            days: self.days,
            ..Default::default()
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

enum Produced {
    Batch {
        table: String,
        date: i32,
        rows: Vec<Vec<u8>>,
    },
    Rejected(RejectedLine),
}

impl Ingestor {
    /// Reads the whole object into finalized, uncommitted streams, its rows stamped
    /// `ingest_micros`. `only`: stage just these tables (the others are committed already).
    pub(super) async fn stage(
        &self,
        object: &LogObject,
        uri: &str,
        ingest_micros: i64,
        only: Option<&BTreeSet<String>>,
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
        let wanted = |table: &str| only.is_none_or(|only| only.contains(table));

        // Parse on a blocking thread, feeding batches through a bounded channel.
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

        // Write batches as they come.
        let mut writers: BTreeMap<String, StreamWriter> = BTreeMap::new();
        let mut days: BTreeMap<String, DaySpan> = BTreeMap::new();
        let mut quarantine = self.quarantine_for(object, uri);
        if let Quarantine::Table { table, .. } = &quarantine {
            if !wanted(table) {
                quarantine = Quarantine::None;
            }
        }
        let mut rejected = 0u64;
        let bq_error = |source| IngestError::BigQuery {
            object: uri.to_string(),
            source,
        };
        let consumed: Result<(), IngestError> = async {
            while let Some(produced) = rx.recv().await {
                match produced {
                    Produced::Batch { table, date, rows } => {
                        if !wanted(&table) {
                            continue;
                        }
                        days.entry(table.clone())
                            .and_modify(|d| *d = d.union(DaySpan::of(date)))
                            .or_insert(DaySpan::of(date));
                        let writer = match writers.get_mut(&table) {
                            Some(w) => w,
                            None => {
                                let w = self.open_table_stream(&table).await.map_err(bq_error)?;
                                writers.entry(table).or_insert(w)
                            }
                        };
                        writer.append(rows).await.map_err(bq_error)?;
                    }
                    Produced::Rejected(line) => {
                        rejected += 1;
                        if rejected <= LOGGED_REJECTS {
                            tracing::warn!(line = line.line_no, reason = %line.reason, "line rejected");
                        }
                        self.quarantine_line(&mut quarantine, &mut writers, uri, &line, ingest_micros)
                            .await?;
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
        let stats = match transformed {
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
                days: days.clone(),
                data_lines: read.data_lines,
                rows: read.rows,
                rejected: read.rejected,
                bytes: read.bytes,
                quarantine: quarantine_parts,
                latest_request_micros: stats.latest_request_micros,
            },
            streams,
            rows,
            days,
        })
    }

    fn quarantine_for(&self, object: &LogObject, uri: &str) -> Quarantine {
        match &self.quarantine {
            None => Quarantine::None,
            Some(QuarantineTarget::S3 { bucket, prefix }) => {
                // Named after the object version, so a retry overwrites its own parts.
                let version = match object {
                    LogObject::S3(o) => o.etag.clone().unwrap_or_else(|| "latest".into()),
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
        }
    }

    async fn quarantine_line(
        &self,
        quarantine: &mut Quarantine,
        writers: &mut BTreeMap<String, StreamWriter>,
        uri: &str,
        line: &RejectedLine,
        ingest_micros: i64,
    ) -> Result<(), IngestError> {
        match quarantine {
            Quarantine::None => Ok(()),
            Quarantine::S3(q) => q.add(line).await.map_err(|source| IngestError::Quarantine {
                object: uri.to_string(),
                source,
            }),
            Quarantine::Table { table, rows, bytes } => {
                let row = crate::quarantine::encode_row(uri, line, ingest_micros);
                *bytes += row.len();
                rows.push(row);
                if *bytes >= QUARANTINE_BATCH_BYTES {
                    *bytes = 0;
                    let batch = std::mem::take(rows);
                    self.append_quarantine(writers, table, batch)
                        .await
                        .map_err(|source| IngestError::BigQuery {
                            object: uri.to_string(),
                            source,
                        })?;
                }
                Ok(())
            }
        }
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
}

/// Hands the parser's output to the async writer; blocks when the writer is behind.
struct ChannelSink(mpsc::Sender<Produced>);

impl BatchSink for ChannelSink {
    fn batch(&mut self, table: &str, date: i32, rows: Vec<Vec<u8>>) -> Result<(), Stopped> {
        self.0
            .blocking_send(Produced::Batch {
                table: table.to_string(),
                date,
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
