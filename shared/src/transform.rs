//! The CPU side of ingestion, with no network: decompressed log text → rows routed by their
//! own date → Storage Write batches per table, plus rejected lines. Runs on a blocking thread;
//! the ingest pipeline and the benchmark drive the same code.

use std::io::{BufRead, BufReader, Read};

use flate2::bufread::MultiGzDecoder;

use crate::bigquery::encode::RowEncoder;
use crate::cloudfront::{Item, LogReader, ReadError, ReadStats};
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
    fn batch(&mut self, table: &str, rows: Vec<Vec<u8>>) -> Result<(), Stopped>;
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
}

/// Buffer sizes: big enough that syscalls and channel hops are rare, small enough to be flat.
const COMPRESSED_BUFFER: usize = 128 * 1024;
const TEXT_BUFFER: usize = 256 * 1024;

/// Gunzips (every gzip member) and transforms `compressed`.
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
    let mut reader = LogReader::new(text, options.max_line_bytes);
    let mut open: Vec<OpenBatch> = Vec::new();
    let mut latest: Option<i64> = None;
    let mut row_bytes = 512;
    while let Some(item) = reader.next_item()? {
        match item {
            Item::Row { line_no, row } => {
                latest = latest.max(Some(row.timestamp_micros()));
                let index = match open.iter().position(|b| b.date == row.date) {
                    Some(i) => i,
                    None => {
                        open.push(OpenBatch::new(row.date, options.layout.table_for(row.date)));
                        open.len() - 1
                    }
                };
                let mut encoded = Vec::with_capacity(row_bytes);
                encoder.encode(&row, line_no, &mut encoded);
                row_bytes = encoded.len() + 64;
                let batch = &mut open[index];
                batch.bytes += encoded.len() + 8;
                batch.rows.push(encoded);
                if batch.bytes >= options.batch_bytes {
                    let rows = std::mem::take(&mut batch.rows);
                    batch.bytes = 0;
                    sink.batch(&batch.table, rows)
                        .map_err(|_| TransformError::Stopped)?;
                }
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
    for batch in open {
        if !batch.rows.is_empty() {
            sink.batch(&batch.table, batch.rows)
                .map_err(|_| TransformError::Stopped)?;
        }
    }
    Ok(TransformStats {
        read: reader.stats(),
        latest_request_micros: latest,
    })
}

struct OpenBatch {
    date: i32,
    table: String,
    rows: Vec<Vec<u8>>,
    bytes: usize,
}

impl OpenBatch {
    fn new(date: i32, table: String) -> Self {
        OpenBatch {
            date,
            table,
            rows: Vec::new(),
            bytes: 0,
        }
    }
}
