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
    /// Rows of one log date (`date`: days since the epoch) bound for `table`.
    fn batch(&mut self, table: &str, date: i32, rows: Vec<Vec<u8>>) -> Result<(), Stopped>;
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

/// Gunzips on a thread of its own and transforms on the calling thread: inflate and parse
/// each take about half the CPU, so on two cores (a Lambda of ≥ 1769 MB) this nearly
/// doubles throughput. Memory stays bounded by a few chunks in flight.
pub fn transform_gzip_threaded(
    compressed: impl Read + Send + 'static,
    options: &TransformOptions,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(CHUNKS_IN_FLIGHT);
    let inflater = std::thread::Builder::new()
        .name("gunzip".into())
        .spawn(move || {
            let mut decoder =
                MultiGzDecoder::new(BufReader::with_capacity(COMPRESSED_BUFFER, compressed));
            loop {
                let mut chunk = vec![0u8; CHUNK_BYTES];
                let mut filled = 0;
                // Fill whole chunks: fewer hand-offs between the threads.
                let result = loop {
                    match decoder.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == chunk.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                chunk.truncate(filled);
                let end = filled == 0 || result.is_err();
                if filled > 0 && tx.send(Ok(chunk)).is_err() {
                    return;
                }
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                    return;
                }
                if end {
                    return;
                }
            }
        })
        .expect("spawn the gunzip thread");
    let reader = ChunkReader {
        chunks: rx,
        current: Vec::new(),
        position: 0,
    };
    let result = transform_text(reader, options, encoder, sink);
    // On an early stop the reader (and its receiver) are dropped, so the thread ends too.
    let _ = inflater.join();
    result
}

const CHUNK_BYTES: usize = 1 << 20;
const CHUNKS_IN_FLIGHT: usize = 4;

/// Decompressed chunks from the gunzip thread, read as one stream.
struct ChunkReader {
    chunks: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    position: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.position == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.position = 0;
                }
                // The gunzip thread finished: end of stream.
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.current[self.position..])
    }

    fn consume(&mut self, n: usize) {
        self.position = (self.position + n).min(self.current.len());
    }
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
                    sink.batch(&batch.table, batch.date, rows)
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
            sink.batch(&batch.table, batch.date, batch.rows)
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
