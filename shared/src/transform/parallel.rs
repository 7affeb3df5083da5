//! The transform on several cores: one thread gunzips and cuts the text into numbered,
//! line-aligned chunks ([`split`](super::split)); worker threads parse and encode whole
//! chunks; the calling thread takes their output back **in stream order** and batches it
//! exactly as the one-thread path does, so rows, line numbers, rejected lines, batch
//! boundaries and per-table counts are the same whatever the number of workers.
//!
//! Chunks go to workers round-robin and come back the same way, so ordering needs no
//! reorder buffer and memory stays bounded by the channel depths. With one worker (the
//! default on 1 or 2 cores) the calling thread is the worker: it batches each chunk's rows
//! as soon as it has parsed them.

use std::io::{BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;

use super::direct::{DirectEncoder, Written};
use super::split::{Chunk, Mode, Piece, Splitter};
use super::{
    BatchSink, Batcher, FramedRow, RejectedLine, TransformError, TransformOptions, TransformStats,
    COMPRESSED_BUFFER,
};
use crate::bigquery::encode::RowEncoder;
use crate::bigquery::rows::push_framed;
use crate::cloudfront::json::JsonParser;
use crate::cloudfront::{Header, LineError, LineParser, ReadError, ReadStats};

/// Decompressed bytes per chunk: big enough that hand-offs are rare (about 600 lines), small
/// enough that the chunks in flight stay a few MiB per object.
pub(super) const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks queued per worker, each way.
const DEPTH: usize = 2;

/// One chunk parsed and encoded.
#[derive(Default)]
struct Parsed {
    /// The encoded rows, in line order, each framed as a `ProtoRows` entry
    /// ([`push_framed`]): runs of them go into a batch in one copy.
    framed: Vec<u8>,
    /// Per row, in order.
    rows: Vec<FramedRow>,
    /// Rejected lines, each with the number of rows of this chunk that come before it.
    rejected: Vec<(usize, RejectedLine)>,
    /// The stream stops after this chunk's rows and rejected lines.
    failed: Option<ReadError>,
    stats: ReadStats,
    latest: Option<i64>,
}

/// Gunzips `compressed` and transforms it with `workers` parsers: the calling thread if one,
/// a thread each if more.
pub(super) fn transform_gzip_on(
    compressed: impl Read + Send,
    options: &TransformOptions,
    workers: usize,
    chunk_bytes: usize,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let workers = workers.max(1);
    std::thread::scope(|scope| {
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(workers * (DEPTH + 2));
        let mut inputs = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (chunk_tx, chunk_rx) = sync_channel::<Piece>(DEPTH);
            inputs.push(chunk_tx);
            receivers.push(chunk_rx);
        }
        let max_line_bytes = options.max_line_bytes;
        let splitter = std::thread::Builder::new()
            .name("gunzip".into())
            .spawn_scoped(scope, move || {
                let decoder =
                    MultiGzDecoder::new(BufReader::with_capacity(COMPRESSED_BUFFER, compressed));
                let mut splitter = Splitter::new(decoder, chunk_bytes, max_line_bytes)
                    .with_plain_fields(options.plain_fields.clone())
                    .recycle_from(spare_rx);
                let mut turn = 0;
                while let Some(piece) = splitter.next_piece() {
                    // A closed channel: the consumer stopped early.
                    if inputs[turn % inputs.len()].send(piece).is_err() {
                        break;
                    }
                    turn += 1;
                }
                splitter.bytes()
            })
            .expect("spawn the gunzip thread");
        // On an early return the receivers drop, so the workers and the splitter stop too.
        let merged = if workers == 1 {
            let chunks = receivers.pop().expect("one worker");
            parse_here(chunks, spare_tx, options, encoder, sink)
        } else {
            parse_on_threads(scope, receivers, spare_tx, options, encoder, sink)
        };
        let bytes = splitter.join().expect("the gunzip thread does not panic");
        merged.map(|mut stats| {
            stats.read.bytes = bytes;
            stats
        })
    })
}

/// One parser: the calling thread parses each chunk and batches its rows at once, while they
/// are still in its cache, with no thread or hand-off between (the default on 1 or 2 cores).
fn parse_here(
    chunks: Receiver<Piece>,
    spare: SyncSender<Vec<u8>>,
    options: &TransformOptions,
    encoder: &RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let mut parsers = Parsers::default();
    let mut merger = Merger::default();
    let mut buffer = Vec::new();
    for piece in chunks {
        let parsed = parse_piece(piece, buffer, &mut parsers, &spare, options, encoder);
        buffer = merger.take(parsed, options, sink)?;
    }
    merger.finish(sink)
}

/// Several parsers: a thread each, chunks handed to them round-robin and their output
/// merged back in the same order on the calling thread.
fn parse_on_threads<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    receivers: Vec<Receiver<Piece>>,
    spare: SyncSender<Vec<u8>>,
    options: &'scope TransformOptions,
    encoder: &'scope RowEncoder,
    sink: &mut impl BatchSink,
) -> Result<TransformStats, TransformError> {
    let mut outputs = Vec::with_capacity(receivers.len());
    let mut returns = Vec::with_capacity(receivers.len());
    for chunks in receivers {
        let (parsed_tx, parsed_rx) = sync_channel::<Parsed>(DEPTH);
        let (return_tx, return_rx) = sync_channel::<Vec<u8>>(DEPTH + 1);
        outputs.push(parsed_rx);
        returns.push(return_tx);
        let channels = WorkerChannels {
            chunks,
            parsed: parsed_tx,
            spare: spare.clone(),
            returned: return_rx,
        };
        std::thread::Builder::new()
            .name("parse".into())
            .spawn_scoped(scope, move || parse_worker(channels, options, encoder))
            .expect("spawn a parse thread");
    }
    drop(spare);
    let mut merger = Merger::default();
    for turn in 0.. {
        // The worker whose turn it is has closed: the splitter sent nothing more.
        let Ok(parsed) = outputs[turn % outputs.len()].recv() else {
            break;
        };
        let buffer = merger.take(parsed, options, sink)?;
        // Full or closed: the worker has enough buffers, or has stopped.
        let _ = returns[turn % returns.len()].try_send(buffer);
    }
    merger.finish(sink)
}

/// What a parse thread receives and sends.
struct WorkerChannels {
    chunks: Receiver<Piece>,
    parsed: SyncSender<Parsed>,
    /// Chunk buffers back to the splitter, to be filled again.
    spare: SyncSender<Vec<u8>>,
    /// Framed-row buffers back from the merge: reused pages rather than new ones, which the
    /// kernel would have to fault in and zero for every chunk.
    returned: Receiver<Vec<u8>>,
}

fn parse_worker(channels: WorkerChannels, options: &TransformOptions, encoder: &RowEncoder) {
    let WorkerChannels {
        chunks,
        parsed,
        spare,
        returned,
    } = channels;
    let mut parsers = Parsers::default();
    for piece in chunks {
        let buffer = returned.try_recv().unwrap_or_default();
        let out = parse_piece(piece, buffer, &mut parsers, &spare, options, encoder);
        if parsed.send(out).is_err() {
            return;
        }
    }
}

/// Parses a chunk into `buffer` and hands its text buffer back to the splitter through
/// `spare`; a read error is passed on.
fn parse_piece(
    piece: Piece,
    buffer: Vec<u8>,
    parsers: &mut Parsers,
    spare: &SyncSender<Vec<u8>>,
    options: &TransformOptions,
    encoder: &RowEncoder,
) -> Parsed {
    match piece {
        Piece::Chunk(chunk) => {
            let out = parse_chunk(&chunk, buffer, parsers, options, encoder);
            // Full means enough buffers are around already.
            let _ = spare.try_send(chunk.buf);
            out
        }
        Piece::Failed(e) => Parsed {
            failed: Some(e),
            ..Parsed::default()
        },
    }
}

/// A worker's parsers, kept from chunk to chunk while the mode stays the same.
#[derive(Default)]
struct Parsers {
    w3c: Option<W3cParsers>,
    json: Option<JsonParser>,
}

/// The parsers of one `#Fields` header and delimiter.
struct W3cParsers {
    header: Arc<Header>,
    delimiter: Option<u8>,
    /// Every line the direct encoder does not take.
    parser: LineParser,
    /// Once the file's delimiter is known, if the header allows it (see [`direct`](super::direct)).
    direct: Option<DirectEncoder>,
    direct_tried: bool,
}

impl W3cParsers {
    fn new(header: &Arc<Header>, delimiter: Option<u8>) -> Self {
        W3cParsers {
            header: header.clone(),
            delimiter,
            parser: LineParser::with_delimiter((**header).clone(), delimiter),
            direct: None,
            direct_tried: false,
        }
    }

    /// Writes the line's row straight into `out` if the direct encoder takes it.
    fn encode_directly(
        &mut self,
        line: &[u8],
        known_utf8: bool,
        line_no: u64,
        encoder: &RowEncoder,
        out: &mut Vec<u8>,
    ) -> Option<Written> {
        if !self.direct_tried {
            // The delimiter may be found only by an earlier line of this chunk.
            let delimiter = self.parser.delimiter()?;
            self.direct = DirectEncoder::new(&self.header, delimiter, encoder);
            self.direct_tried = true;
        }
        self.direct.as_mut()?.encode(line, known_utf8, line_no, out)
    }
}

/// Parses and encodes the lines of one chunk, item for item as
/// [`LogReader::next_item`](crate::cloudfront::LogReader::next_item) would.
fn parse_chunk(
    chunk: &Chunk,
    mut framed: Vec<u8>,
    parsers: &mut Parsers,
    options: &TransformOptions,
    encoder: &RowEncoder,
) -> Parsed {
    // Encoded rows run up to about half as long again as their lines (lineage, raw values).
    framed.clear();
    framed.reserve(chunk.len + chunk.len / 2);
    // A row of the general path, before it is framed.
    let mut general = Vec::new();
    let mut out = Parsed {
        framed,
        rows: Vec::with_capacity(chunk.len / 256 + 1),
        ..Parsed::default()
    };
    let text = chunk.text();
    // Lines end at an ASCII byte, so in a valid chunk every whole line is valid too: one
    // check of the chunk instead of one per line. (A chunk can end in a line cut short for
    // length, maybe mid-character; then each line is checked on its own.)
    let utf8_chunk = simdutf8::basic::from_utf8(text).is_ok();
    let max = options.max_line_bytes;
    let mut line_no = chunk.first_line_no - 1;
    let mut start = 0;
    let mut newlines = memchr::memchr_iter(b'\n', text);
    while start < text.len() {
        let end = newlines.next().unwrap_or(text.len());
        let line = &text[start..end];
        let len = match chunk.cut_line {
            Some(len) if start == 0 => len,
            _ => line.len(),
        };
        start = end + 1;
        line_no += 1;
        let kept = &line[..line.len().min(max)];
        let kept = kept.strip_suffix(b"\r").unwrap_or(kept);
        // Blank lines and directives (`#Fields` lines never reach here) are skipped.
        if kept.is_empty() || kept[0] == b'#' {
            continue;
        }
        out.stats.data_lines += 1;
        let parsed = match &chunk.mode {
            Mode::None => {
                out.failed = Some(ReadError::NoHeader { line_no });
                return out;
            }
            // Refused before it is parsed.
            _ if len > max => Err(LineError::TooLong { len, limit: max }),
            Mode::Json => parsers
                .json
                .get_or_insert_with(JsonParser::default)
                .parse(kept),
            Mode::W3c { header, delimiter } => {
                let current = parsers
                    .w3c
                    .as_ref()
                    .is_some_and(|w| Arc::ptr_eq(&w.header, header) && w.delimiter == *delimiter);
                if !current {
                    parsers.w3c = Some(W3cParsers::new(header, *delimiter));
                }
                let w3c = parsers.w3c.as_mut().expect("set above");
                // `kept` is the whole line (less a CR): a longer one was refused above.
                let written =
                    w3c.encode_directly(kept, utf8_chunk, line_no, encoder, &mut out.framed);
                if let Some(row) = written {
                    out.stats.rows += 1;
                    out.latest = out.latest.max(Some(row.micros));
                    out.rows.push(FramedRow {
                        date: row.date,
                        len: row.len,
                        end: out.framed.len(),
                    });
                    continue;
                }
                w3c.parser.parse(kept)
            }
        };
        match parsed {
            Ok(row) => {
                out.stats.rows += 1;
                out.latest = out.latest.max(Some(row.timestamp_micros()));
                general.clear();
                encoder.encode(&row, line_no, &mut general);
                push_framed(&general, &mut out.framed);
                out.rows.push(FramedRow {
                    date: row.date,
                    len: general.len(),
                    end: out.framed.len(),
                });
            }
            Err(error) => {
                out.stats.rejected += 1;
                out.rejected.push((
                    out.rows.len(),
                    RejectedLine {
                        line_no,
                        reason_code: error.code(),
                        reason: error.to_string(),
                        raw: kept.to_vec(),
                    },
                ));
            }
        }
    }
    out
}

/// Takes parsed chunks, in stream order, into batches.
#[derive(Default)]
struct Merger {
    batcher: Batcher,
    stats: ReadStats,
    latest: Option<i64>,
}

impl Merger {
    /// Batches the rows of one chunk and hands on its rejected lines, in line order; gives
    /// its framed-row buffer back to be reused.
    fn take(
        &mut self,
        parsed: Parsed,
        options: &TransformOptions,
        sink: &mut impl BatchSink,
    ) -> Result<Vec<u8>, TransformError> {
        // The rows between rejected lines go to the batcher in runs.
        let mut from = 0;
        for (before, line) in parsed.rejected {
            let run = from..before;
            self.batcher
                .framed_rows(&parsed.framed, &parsed.rows, run, options, sink)?;
            from = before;
            sink.rejected(line).map_err(|_| TransformError::Stopped)?;
        }
        let rest = from..parsed.rows.len();
        self.batcher
            .framed_rows(&parsed.framed, &parsed.rows, rest, options, sink)?;
        self.stats.data_lines += parsed.stats.data_lines;
        self.stats.rows += parsed.stats.rows;
        self.stats.rejected += parsed.stats.rejected;
        self.latest = self.latest.max(parsed.latest);
        match parsed.failed {
            Some(e) => Err(e.into()),
            None => Ok(parsed.framed),
        }
    }

    fn finish(self, sink: &mut impl BatchSink) -> Result<TransformStats, TransformError> {
        self.batcher.finish(sink)?;
        Ok(TransformStats {
            read: self.stats,
            latest_request_micros: self.latest,
        })
    }
}
