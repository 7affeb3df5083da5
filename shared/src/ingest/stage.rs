//! Staging a batch: its objects read → gunzipped → parsed → appended to one PENDING stream
//! per table, shared by the whole batch (a large table spreads over a few, [`super::streams`])
//! → finalized. Streams per invocation, not per object: CreateWriteStream is limited to
//! 10,000 an hour per project and region.
//!
//! Several objects are read and parsed at once (`CF2BQ_PARALLEL_OBJECTS`), each on its own
//! threads, feeding one writer loop that owns the streams. Nothing staged is visible until
//! committed, so a failure here leaves nothing behind.
//!
//! An object that fails as a whole (corrupt gzip, a read that breaks off) must not poison its
//! neighbours: if it had already appended rows, this round's streams are abandoned (never
//! committed, so BigQuery discards them) and the other objects are staged again without it.
//! That is rare, and costs one more stream per table.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;
use tracing::Instrument;

use super::streams::RoundStreams;
use super::{IngestError, Ingestor, ObjectReport, Outcome};
use crate::bigquery::encode::RowEncoder;
use crate::bigquery::rows::Rows;
use crate::bigquery::{BigQueryError, StreamWriter, TableSpec};
use crate::event::ObjectRef;
use crate::fault::fault_point;
use crate::formats::transform_object;
use crate::quarantine::{QuarantineTarget, QuarantineWriter};
use crate::route::DaySpan;
use crate::source::{self, LogObject, ObjectRanges, SourceError};
use crate::transform::{
    BatchSink, RejectedLine, Stopped, TransformError, TransformOptions, TransformStats,
};

/// Batches in flight per object being parsed, between its thread and the writer: bounds memory.
const CHANNEL_DEPTH: usize = 2;
/// Rejected lines logged individually per object before only counting them.
const LOGGED_REJECTS: u64 = 20;
/// Quarantine rows per AppendRows request.
const QUARANTINE_BATCH_BYTES: usize = 1 << 20;

/// One object of a batch, staged: its report and its share of the streams.
#[derive(Debug)]
pub(super) struct StagedObject {
    pub report: ObjectReport,
    /// Table → this object's rows in the table's stream (quarantine table included).
    pub rows: BTreeMap<String, u64>,
}

/// A batch read and appended to finalized (uncommitted) PENDING streams: the hand-off from
/// staging to committing.
pub(super) struct Staged {
    /// Table → its streams (one, or several for a large table), log tables and the
    /// quarantine table alike.
    pub streams: BTreeMap<String, Vec<String>>,
    /// Table → rows in its streams.
    pub rows: BTreeMap<String, u64>,
    /// Table → the log dates of its rows.
    pub days: BTreeMap<String, DaySpan>,
    /// Per object, in the order given: staged, or why it could not be.
    pub objects: Vec<Result<StagedObject, IngestError>>,
}

/// Where one object's rejected lines go.
enum Quarantine {
    None,
    S3(QuarantineWriter),
    Table {
        table: String,
        rows: Rows,
        bytes: usize,
    },
}

enum Produced {
    Batch {
        table: String,
        date: i32,
        rows: Rows,
    },
    Rejected(RejectedLine),
}

/// What reading one object gave.
enum Read {
    /// Nothing to stage: a zero-byte object, or one deleted or overwritten before its read.
    Nothing(Outcome),
    Parsed(TransformStats),
}

/// One object's progress through a staging round.
struct ObjectState {
    uri: String,
    result: Option<Result<Read, IngestError>>,
    rows: BTreeMap<String, u64>,
    days: BTreeMap<String, DaySpan>,
    quarantine: Quarantine,
    rejected: u64,
    /// Whether any of its rows reached a stream: if it then fails, the streams hold rows that
    /// must never be committed.
    appended: bool,
}

/// A round that ended with objects failed after appending: stage again without them.
struct Tainted(Vec<(usize, IngestError)>);

impl Ingestor {
    /// Reads `objects` into finalized, uncommitted streams, their rows stamped `stamp`.
    /// `only`: stage just these tables (the others are committed already). `Err` is a
    /// failure of the whole batch (BigQuery); one object's failure is in its slot.
    pub(super) async fn stage(
        &self,
        objects: &[LogObject],
        stamp: i64,
        only: Option<&BTreeSet<String>>,
    ) -> Result<Staged, IngestError> {
        let mut failed: BTreeMap<usize, IngestError> = BTreeMap::new();
        loop {
            match self.stage_round(objects, &failed, stamp, only).await? {
                Ok(mut staged) => {
                    for (i, e) in failed {
                        staged.objects[i] = Err(e);
                    }
                    return Ok(staged);
                }
                Err(Tainted(newly_failed)) => {
                    tracing::warn!(
                        failed = newly_failed.len(),
                        "objects failed after appending rows: staging the others again without them"
                    );
                    failed.extend(newly_failed);
                }
            }
        }
    }

    /// One pass over the objects not yet `failed`.
    async fn stage_round(
        &self,
        objects: &[LogObject],
        failed: &BTreeMap<usize, IngestError>,
        stamp: i64,
        only: Option<&BTreeSet<String>>,
    ) -> Result<Result<Staged, Tainted>, IngestError> {
        let wanted = |table: &str| only.is_none_or(|only| only.contains(table));
        let mut states: Vec<ObjectState> = objects
            .iter()
            .map(|object| {
                let uri = object.uri();
                let mut quarantine = self.quarantine_for(object, &uri);
                if let Quarantine::Table { table, .. } = &quarantine {
                    if !wanted(table) {
                        quarantine = Quarantine::None;
                    }
                }
                ObjectState {
                    uri,
                    result: None,
                    rows: BTreeMap::new(),
                    days: BTreeMap::new(),
                    quarantine,
                    rejected: 0,
                    appended: false,
                }
            })
            .collect();
        let batch_name = batch_name(&states);
        let bq_error = |source| IngestError::BigQuery {
            object: batch_name.clone(),
            source,
        };

        // Read and parse up to `parallel_objects` at once; batches come back tagged.
        // Channel slots for the objects actually read at once: each slot can hold a whole
        // request's worth of rows, so a lone large object gets no idle ones.
        let readable = objects.len().saturating_sub(failed.len());
        let parallel = self.parallel_objects.min(readable).max(1);
        let (tx, mut rx) = mpsc::channel::<(usize, Produced)>(CHANNEL_DEPTH * parallel);
        let mut tx = Some(tx);
        let mut to_read = (0..objects.len()).filter(|i| !failed.contains_key(i));
        let mut reading = JoinSet::new();
        let mut start_next =
            |reading: &mut JoinSet<(usize, Result<Read, IngestError>)>,
             tx: &mut Option<mpsc::Sender<(usize, Produced)>>| {
                match (to_read.next(), tx.as_ref()) {
                    (Some(i), Some(sender)) => {
                        let job = self.read_job(&objects[i], i, stamp, sender.clone());
                        let deadline = crate::retry::deadline();
                        reading.spawn(async move {
                            match deadline {
                                Some(d) => crate::retry::within(d, job).await,
                                None => job.await,
                            }
                        });
                    }
                    _ => *tx = None,
                }
            };
        for _ in 0..parallel {
            start_next(&mut reading, &mut tx);
        }

        let mut writers = RoundStreams::new(self.spread);
        let mut days: BTreeMap<String, DaySpan> = BTreeMap::new();
        loop {
            tokio::select! {
                Some((i, produced)) = rx.recv() => {
                    let state = &mut states[i];
                    if matches!(state.result, Some(Err(_))) {
                        continue;
                    }
                    match produced {
                        Produced::Batch { table, date, rows } => {
                            if !wanted(&table) {
                                continue;
                            }
                            let span = DaySpan::of(date);
                            for d in [&mut state.days, &mut days] {
                                d.entry(table.clone())
                                    .and_modify(|d| *d = d.union(span))
                                    .or_insert(span);
                            }
                            *state.rows.entry(table.clone()).or_default() += rows.len() as u64;
                            state.appended = true;
                            if writers.needs_stream(&table) {
                                let w = self.open_table_stream(&table).await.map_err(bq_error)?;
                                writers.add(&table, w);
                            }
                            writers.append(&table, rows).await.map_err(bq_error)?;
                        }
                        Produced::Rejected(line) => {
                            state.rejected += 1;
                            if state.rejected <= LOGGED_REJECTS {
                                tracing::warn!(object = %state.uri, line = line.line_no, reason = %line.reason, "line rejected");
                            }
                            self.quarantine_line(state, &mut writers, &line, stamp).await?;
                        }
                    }
                }
                Some(joined) = reading.join_next(), if !reading.is_empty() => {
                    let (i, result) = joined.map_err(|e| IngestError::Worker {
                        object: batch_name.clone(),
                        detail: e.to_string(),
                    })?;
                    if let Err(e) = &result {
                        tracing::error!(object = %states[i].uri, error = %e, "object failed; its neighbours go on");
                    }
                    states[i].result = Some(result);
                    start_next(&mut reading, &mut tx);
                }
                else => break,
            }
        }

        // An object that failed after appending leaves rows in the streams: abandon them.
        let tainted: Vec<usize> = states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.appended && matches!(s.result, Some(Err(_))))
            .map(|(i, _)| i)
            .collect();
        if !tainted.is_empty() {
            writers.abandon().await;
            let newly_failed = tainted
                .into_iter()
                .map(|i| match states[i].result.take() {
                    Some(Err(e)) => (i, e),
                    _ => unreachable!("selected as failed"),
                })
                .collect();
            return Ok(Err(Tainted(newly_failed)));
        }

        // Quarantine parts of every object that read fine, then the streams finalized.
        let mut finished = Vec::with_capacity(states.len());
        for state in &mut states {
            let parts = match state.result {
                Some(Ok(_)) => self.finish_quarantine(state, &mut writers).await?,
                _ => Vec::new(),
            };
            finished.push(parts);
        }
        fault_point("after_append");
        let rows = writers
            .finalize(self.bq.write_api())
            .await
            .map_err(bq_error)?;
        fault_point("after_finalize");
        for (table, &count) in &rows {
            let sum: u64 = states.iter().filter_map(|s| s.rows.get(table)).sum();
            if sum != count {
                return Err(IngestError::Recovery {
                    object: batch_name.clone(),
                    table: table.clone(),
                    detail: format!("the stream holds {count} rows, its objects sent {sum}"),
                });
            }
        }
        let staged_objects = states
            .into_iter()
            .zip(finished)
            .map(|(state, quarantine)| self.staged_object(state, quarantine))
            .collect();
        Ok(Ok(Staged {
            streams: writers.into_names(),
            rows,
            days,
            objects: staged_objects,
        }))
    }

    /// The task that reads and parses one object, sending its batches tagged with `index`.
    fn read_job(
        &self,
        object: &LogObject,
        index: usize,
        stamp: i64,
        tx: mpsc::Sender<(usize, Produced)>,
    ) -> impl std::future::Future<Output = (usize, Result<Read, IngestError>)> + Send + 'static
    {
        let s3 = self.s3.clone();
        let object = object.clone();
        let options = TransformOptions {
            layout: self.layout.clone(),
            batch_bytes: self.batch_bytes,
            max_line_bytes: self.max_line_bytes,
            plain_fields: self.plain_fields.clone(),
        };
        let uri = object.uri();
        let encoder = RowEncoder::new(&uri, stamp).with_privacy(&self.privacy);
        let span = tracing::info_span!("object", object = %uri);
        async move {
            let result = read_object(&s3, &object, &uri, options, encoder, index, tx).await;
            (index, result)
        }
        .instrument(span)
    }

    /// The report and row counts of one object after its round.
    fn staged_object(
        &self,
        state: ObjectState,
        quarantine: Vec<String>,
    ) -> Result<StagedObject, IngestError> {
        let (outcome, stats) = match state.result.expect("every object was read") {
            Err(e) => return Err(e),
            Ok(Read::Nothing(outcome)) => (outcome, TransformStats::default()),
            Ok(Read::Parsed(stats)) => {
                let outcome = if stats.read.data_lines == 0 {
                    Outcome::Empty
                } else {
                    Outcome::Loaded
                };
                (outcome, stats)
            }
        };
        // The report lists log tables; the plan commits the quarantine table's stream too.
        let mut tables = state.rows.clone();
        if let Some(QuarantineTarget::Table(table)) = &self.quarantine {
            tables.remove(table);
        }
        Ok(StagedObject {
            report: ObjectReport {
                object: state.uri,
                outcome,
                tables,
                days: state.days,
                data_lines: stats.read.data_lines,
                rows: stats.read.rows,
                rejected: stats.read.rejected,
                bytes: stats.read.bytes,
                quarantine,
                latest_request_micros: stats.latest_request_micros,
            },
            rows: state.rows,
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
                rows: Rows::new(),
                bytes: 0,
            },
        }
    }

    async fn quarantine_line(
        &self,
        state: &mut ObjectState,
        writers: &mut RoundStreams,
        line: &RejectedLine,
        stamp: i64,
    ) -> Result<(), IngestError> {
        let uri = &state.uri;
        match &mut state.quarantine {
            Quarantine::None => Ok(()),
            Quarantine::S3(q) => q.add(line).await.map_err(|source| IngestError::Quarantine {
                object: uri.clone(),
                source,
            }),
            Quarantine::Table { table, rows, bytes } => {
                // A raw line may hold what the privacy controls remove: it stays in AWS.
                let withheld;
                let line = if self.privacy.allows_raw_lines() {
                    line
                } else {
                    withheld = RejectedLine {
                        raw: crate::privacy::WITHHELD.to_vec(),
                        ..line.clone()
                    };
                    &withheld
                };
                let row = crate::quarantine::encode_row(uri, line, stamp);
                *bytes += row.len();
                rows.push(&row);
                if *bytes >= QUARANTINE_BATCH_BYTES {
                    *bytes = 0;
                    let batch = std::mem::take(rows);
                    *state.rows.entry(table.clone()).or_default() += batch.len() as u64;
                    state.appended = true;
                    self.append_quarantine(writers, table, batch)
                        .await
                        .map_err(|source| IngestError::BigQuery {
                            object: uri.clone(),
                            source,
                        })?;
                }
                Ok(())
            }
        }
    }

    /// Writes what is left of one object's quarantine; returns the parts, as reported.
    async fn finish_quarantine(
        &self,
        state: &mut ObjectState,
        writers: &mut RoundStreams,
    ) -> Result<Vec<String>, IngestError> {
        let uri = state.uri.clone();
        match std::mem::replace(&mut state.quarantine, Quarantine::None) {
            Quarantine::None => Ok(Vec::new()),
            Quarantine::S3(q) => q.finish().await.map_err(|source| IngestError::Quarantine {
                object: uri,
                source,
            }),
            Quarantine::Table { table, rows, .. } => {
                if !rows.is_empty() {
                    *state.rows.entry(table.clone()).or_default() += rows.len() as u64;
                    self.append_quarantine(writers, &table, rows)
                        .await
                        .map_err(|source| IngestError::BigQuery {
                            object: uri,
                            source,
                        })?;
                }
                Ok(match state.rows.get(&table) {
                    Some(n) => vec![format!("bq:{table} ({n} rows)")],
                    None => Vec::new(),
                })
            }
        }
    }

    /// Appends quarantine rows to `table`'s stream, opening it (and the table) on first use.
    async fn append_quarantine(
        &self,
        writers: &mut RoundStreams,
        table: &str,
        rows: Rows,
    ) -> Result<(), BigQueryError> {
        // Quarantined lines are few: one stream, never spread.
        if !writers.has(table) {
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
            writers.add(table, writer);
        }
        writers.append(table, rows).await
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
}

/// How a batch is named in an error that concerns all of it.
fn batch_name(states: &[ObjectState]) -> String {
    match states {
        [one] => one.uri.clone(),
        [first, rest @ ..] => format!("{} and {} more objects of its batch", first.uri, rest.len()),
        [] => "an empty batch".into(),
    }
}

/// Opens one object and parses it on blocking threads, its batches sent tagged `index`.
async fn read_object(
    s3: &aws_sdk_s3::Client,
    object: &LogObject,
    uri: &str,
    options: TransformOptions,
    encoder: RowEncoder,
    index: usize,
    tx: mpsc::Sender<(usize, Produced)>,
) -> Result<Read, IngestError> {
    if let LogObject::S3(ObjectRef { size: Some(0), .. }) = object {
        return Ok(Read::Nothing(Outcome::Empty));
    }
    let (stream, size) = match source::open(s3, object).await {
        Ok(opened) => opened,
        Err(SourceError::Gone { detail, .. }) => {
            tracing::warn!(%detail, "object is gone; acknowledging");
            return Ok(Read::Nothing(Outcome::Gone));
        }
        Err(e) => return Err(e.into()),
    };
    if size == Some(0) {
        return Ok(Read::Nothing(Outcome::Empty));
    }
    let compressed = SyncIoBridge::new(stream);
    let span = tracing::Span::current();
    // v2 Parquet is read by ranges instead of the stream (crate::formats decides).
    let (s3, ranged, key) = (s3.clone(), object.clone(), object.uri());
    let handle = tokio::runtime::Handle::current();
    let worker = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut sink = ChannelSink { tx, index };
        let ranges = || {
            let _runtime = handle.enter();
            ObjectRanges::open(&s3, &ranged, size)
        };
        transform_object(&key, compressed, ranges, &options, &encoder, &mut sink)
    });
    let transformed = worker.await.map_err(|e| IngestError::Worker {
        object: uri.to_string(),
        detail: e.to_string(),
    })?;
    match transformed {
        Ok(stats) => Ok(Read::Parsed(stats)),
        Err(TransformError::Read(source)) => Err(IngestError::Read {
            object: uri.to_string(),
            source,
        }),
        Err(TransformError::Stopped) => Err(IngestError::Worker {
            object: uri.to_string(),
            detail: "the writer stopped taking rows".into(),
        }),
    }
}

/// Hands one object's parser output to the writer loop; blocks when the writer is behind.
struct ChannelSink {
    tx: mpsc::Sender<(usize, Produced)>,
    index: usize,
}

impl BatchSink for ChannelSink {
    fn batch(&mut self, table: &str, date: i32, rows: Rows) -> Result<(), Stopped> {
        let produced = Produced::Batch {
            table: table.to_string(),
            date,
            rows,
        };
        self.tx
            .blocking_send((self.index, produced))
            .map_err(|_| Stopped)
    }

    fn rejected(&mut self, line: RejectedLine) -> Result<(), Stopped> {
        self.tx
            .blocking_send((self.index, Produced::Rejected(line)))
            .map_err(|_| Stopped)
    }
}
