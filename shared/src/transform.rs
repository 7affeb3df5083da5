//! The CPU side of ingestion, with no network: decompressed log text → rows routed by their
//! own date → Storage Write batches per table, plus rejected lines. Runs on a blocking thread;
//! the ingest pipeline and the benchmark drive the same code.

mod direct;
mod parallel;
mod split;
#[cfg(test)]
mod tests;

use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;

use crate::bigquery::encode::RowEncoder;
use crate::bigquery::rows::Rows;
use crate::cloudfront::{Header, Item, LogReader, ReadError, ReadStats};
use crate::route::Layout;

/// A line rejected by the parser, owned so it can cross threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    pub line_no: u64,
    pub reason_code: &'static str,
    pub reason: String,
    pub raw: Vec<u8>,
}

/// Where transformed output goes. Returning `Err(Stopped)` ends the transform early (the
/// consumer failed and will report why).
pub trait BatchSink {
    /// Rows of one log date (`date`: days since the epoch) bound for `table`.
    fn batch(&mut self, table: &str, date: i32, rows: Rows) -> Result<(), Stopped>;
    fn rejected(&mut self, line: RejectedLine) -> Result<(), Stopped>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("stopped by the consumer")]
    Stopped,
}

/// What a transform saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransformStats {
    pub read: ReadStats,
    /// Latest request time among the rows, in microseconds since the epoch.
    pub latest_request_micros: Option<i64>,
}

pub struct TransformOptions {
    pub layout: Layout,
    pub batch_bytes: usize,
    pub max_line_bytes: usize,
    /// The fields, in order, of a v2 *plain* delivery (data lines with no header): they read
    /// a stream's data lines until a `#Fields` line, if any, says otherwise.
    pub plain_fields: Option<Arc<Header>>,
}

/// Compressed bytes read from the source at a time.
const COMPRESSED_BUFFER: usize = 128 * 1024;
/// Decompressed bytes the one-thread path reads at a time.
const TEXT_BUFFER: usize = 256 * 1024;

/// Gunzips on a thread of its own and parses and encodes with [`default_workers`] parsers
/// ([`parallel`]; one parser is the calling thread): inflate is serial, parsing is not, so
/// the transform runs at up to inflate speed given the cores. Output is identical to
/// [`transform_gzip`]'s; memory stays bounded by a few chunks in flight.
pub fn transform_gzip_threaded(
    compressed: impl Read + Send,
    options: &TransformOptions,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    transform_gzip_parallel(compressed, options, default_workers(), encoder, sink)
}

/// Like [`transform_gzip_threaded`] with `workers` parsers (at least one).
pub fn transform_gzip_parallel(
    compressed: impl Read + Send,
    options: &TransformOptions,
    workers: usize,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    parallel::transform_gzip_on(
        compressed,
        options,
        workers,
        parallel::CHUNK_BYTES,
        encoder,
        sink,
    )
}

/// Gunzips every member as the transform does and drops the text; returns its size. What
/// the transform costs beyond this is parsing and encoding (the benchmark's yardstick).
pub fn inflate_only(compressed: impl Read) -> std::io::Result<u64> {
    let mut decoder = MultiGzDecoder::new(BufReader::with_capacity(COMPRESSED_BUFFER, compressed));
    let mut buf = vec![0u8; parallel::CHUNK_BYTES];
    let mut bytes = 0u64;
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parsers per object: one per core this process may use beyond the one the gunzip thread
/// needs (at least one). Inflate is serial and takes about half of the work, so a parser on
/// its core only takes turns with it: on 2 cores one parser is faster than two
/// (`make bench`, bench/README.md).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Gunzips (every gzip member) and transforms `compressed`, on the calling thread.
pub fn transform_gzip(
    compressed: impl Read,
    options: &TransformOptions,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let decoder = MultiGzDecoder::new(BufReader::with_capacity(COMPRESSED_BUFFER, compressed));
    transform_text(
        BufReader::with_capacity(TEXT_BUFFER, decoder),
        options,
        encoder,
        sink,
    )
}

/// Transforms decompressed log text.
pub fn transform_text(
    text: impl BufRead,
    options: &TransformOptions,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let mut reader = LogReader::new(text, options.max_line_bytes)
        .with_plain_fields(options.plain_fields.clone());
    let mut batcher = Batcher::default();
    let mut latest: Option<i64> = None;
    let mut encoded = Vec::new();
    while let Some(item) = reader.next_item()? {
        match item {
            Item::Row { line_no, row } => {
                latest = latest.max(Some(row.timestamp_micros()));
                encoded.clear();
                encoder.encode(&row, line_no, &mut encoded);
                batcher.row(row.date, &encoded, options, sink)?;
            }
            Item::Rejected(r) => sink
                .rejected(RejectedLine {
                    line_no: r.line_no,
                    reason_code: r.error.code(),
                    reason: r.error.to_string(),
                    raw: r.raw.to_vec(),
                })
                .map_err(|_| TransformError::Stopped)?,
        }
    }
    batcher.finish(sink)?;
    Ok(TransformStats {
        read: reader.stats(),
        latest_request_micros: latest,
    })
}

/// Rows gathered per log date into batches of about `batch_bytes`, handed to the sink when
/// full and at the end: the one place batch boundaries are decided, for every path.
#[derive(Default)]
struct Batcher {
    open: Vec<OpenBatch>,
}

/// One row of a buffer of rows framed one after another (see
/// [`push_framed`](crate::bigquery::rows::push_framed)).
#[derive(Debug, Clone, Copy)]
struct FramedRow {
    /// Its log date, days since the epoch.
    date: i32,
    /// The encoded row's length, without its framing.
    len: usize,
    /// Where its frame ends in the buffer.
    end: usize,
}

/// Framed rows bound for one open batch and not yet copied into it.
struct Run {
    batch: usize,
    frames: Range<usize>,
    rows: usize,
    row_bytes: usize,
}

impl Batcher {
    fn row(
        &mut self,
        date: i32,
        encoded: &[u8],
        options: &TransformOptions,
        sink: &mut impl BatchSink,
    ) -> Result<(), TransformError> {
        let index = self.index_for(date, options);
        self.open[index].rows.push(encoded);
        if self.counts_full(index, encoded.len(), options) {
            self.send(index, sink)?;
        }
        Ok(())
    }

    /// Rows `range` of `rows`, whose frames lie one after another in `framed`: batched
    /// exactly as [`row`](Self::row) one by one would, but each run of rows bound for one
    /// batch is copied in one piece.
    fn framed_rows(
        &mut self,
        framed: &[u8],
        rows: &[FramedRow],
        range: Range<usize>,
        options: &TransformOptions,
        sink: &mut impl BatchSink,
    ) -> Result<(), TransformError> {
        let mut run: Option<Run> = None;
        for i in range {
            let row = rows[i];
            let same_batch = run
                .as_ref()
                .is_some_and(|r| self.open[r.batch].date == row.date);
            if !same_batch {
                if let Some(run) = run.take() {
                    self.copy(run, framed);
                }
                // The row's frame starts where the one before it ends.
                let start = i.checked_sub(1).map_or(0, |before| rows[before].end);
                run = Some(Run {
                    batch: self.index_for(row.date, options),
                    frames: start..start,
                    rows: 0,
                    row_bytes: 0,
                });
            }
            let current = run.as_mut().expect("set above");
            current.frames.end = row.end;
            current.rows += 1;
            current.row_bytes += row.len;
            let index = current.batch;
            if self.counts_full(index, row.len, options) {
                self.copy(run.take().expect("set above"), framed);
                self.send(index, sink)?;
            }
        }
        if let Some(run) = run {
            self.copy(run, framed);
        }
        Ok(())
    }

    /// Counts a row of `len` encoded bytes into open batch `index`; whether the batch is now
    /// full. The batch-size rule of every path.
    fn counts_full(&mut self, index: usize, len: usize, options: &TransformOptions) -> bool {
        let batch = &mut self.open[index];
        batch.bytes += len + 8;
        batch.bytes >= options.batch_bytes
    }

    fn copy(&mut self, run: Run, framed: &[u8]) {
        let rows = &mut self.open[run.batch].rows;
        rows.extend_framed(&framed[run.frames], run.rows, run.row_bytes);
    }

    /// The open batch for `date`, opened if need be, with room for a whole batch.
    fn index_for(&mut self, date: i32, options: &TransformOptions) -> usize {
        let index = match self.open.iter().position(|b| b.date == date) {
            Some(i) => i,
            None => {
                self.open
                    .push(OpenBatch::new(date, options.layout.table_for(date)));
                self.open.len() - 1
            }
        };
        let batch = &mut self.open[index];
        if batch.rows.is_empty() {
            // The batch's whole buffer at once: rows are framed in fewer bytes than `bytes`
            // counts, so only the row that fills it can grow it.
            batch.rows = Rows::with_capacity(options.batch_bytes.min(MAX_RESERVE) + 1024);
        }
        index
    }

    /// Hands open batch `index` to the sink and starts it again.
    fn send(&mut self, index: usize, sink: &mut impl BatchSink) -> Result<(), TransformError> {
        let batch = &mut self.open[index];
        let rows = std::mem::take(&mut batch.rows);
        batch.bytes = 0;
        sink.batch(&batch.table, batch.date, rows)
            .map_err(|_| TransformError::Stopped)
    }

    fn finish(self, sink: &mut impl BatchSink) -> Result<(), TransformError> {
        for batch in self.open {
            if !batch.rows.is_empty() {
                sink.batch(&batch.table, batch.date, batch.rows)
                    .map_err(|_| TransformError::Stopped)?;
            }
        }
        Ok(())
    }
}

/// Largest buffer reserved up front for a batch (batches are 1 MiB by default).
const MAX_RESERVE: usize = 16 << 20;

struct OpenBatch {
    date: i32,
    table: String,
    rows: Rows,
    bytes: usize,
}

impl OpenBatch {
    fn new(date: i32, table: String) -> Self {
        OpenBatch {
            date,
            table,
            rows: Rows::new(),
            bytes: 0,
        }
    }
}
