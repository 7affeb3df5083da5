//! A decompressed log stream → numbered runs of whole lines under one `#Fields` header: the
//! unit of work that lets lines be parsed on several cores and still get exactly the line
//! numbers, header switches, rejected lines and errors of the one-line-at-a-time
//! [`LogReader`](crate::cloudfront::LogReader).
//!
//! The splitter runs on the gunzip thread, so it touches each byte as little as it can: one
//! newline scan per chunk (which also counts lines and spots `#` lines), no per-line copy.
//! What the line reader decides from one line for the lines after it is decided here, in
//! stream order, and travels with the chunks as their [`Mode`]: the `#Fields` header, the
//! delimiter a file's first well-formed line fixes, and JSON lines (a headerless stream
//! whose first line is an object). Only the few lines before such a decision are looked at
//! one by one.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::cloudfront::json::JsonParser;
use crate::cloudfront::{Header, LineParser, ReadError};

/// How the data lines of a chunk are read.
#[derive(Clone)]
pub(super) enum Mode {
    /// No header and not JSON: a data line stops the stream.
    None,
    /// W3C lines under this header, with the file's delimiter once a line has fixed it.
    W3c {
        header: Arc<Header>,
        delimiter: Option<u8>,
    },
    /// v2 JSON lines.
    Json,
}

/// Whole lines, numbered, all read one way (`#Fields` lines end a chunk and are consumed by
/// the splitter). Only the stream's very last line may lack its `\n`.
pub(super) struct Chunk {
    /// Line number of the first line of `text`.
    pub first_line_no: u64,
    pub mode: Mode,
    /// The lines are `buf[..len]`; `buf` is reused, so its tail is stale.
    pub buf: Vec<u8>,
    pub len: usize,
    /// The first line was longer than the line cap: it was cut to the cap here, this is
    /// its real length (without the `\n`).
    pub cut_line: Option<usize>,
}

impl Chunk {
    pub fn text(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A line that changes how the lines after it are read.
enum Event {
    /// A `#Fields` line at `at`, ending at `line_end`.
    Header { at: usize, line_end: usize },
    /// The line at `at` decides the mode from itself on (or stops the stream).
    Switch {
        at: usize,
        to: Result<Mode, ReadError>,
    },
}

/// What the splitter hands on, in stream order.
pub(super) enum Piece {
    Chunk(Chunk),
    /// The stream stops here (a bad `#Fields` line, a read error); lines before it come first.
    Failed(ReadError),
}

pub(super) struct Splitter<R> {
    input: R,
    chunk_bytes: usize,
    max_line_bytes: usize,
    /// Bytes read and not yet handed on are `buf[..filled]` (always whole-line aligned at 0).
    buf: Vec<u8>,
    filled: usize,
    /// More than `chunk_bytes` are wanted while one line is longer than that (and allowed).
    grow_to: usize,
    /// Real length of the line at `buf[0]` when it was cut to the cap.
    cut_line: Option<usize>,
    mode: Mode,
    /// A parser of the current header with no delimiter yet, to find the line that fixes it.
    probe: Option<LineParser>,
    /// The fields of a v2 plain delivery: they read data lines that come before any header.
    plain_fields: Option<Arc<Header>>,
    /// Lines handed on so far (`#Fields` lines included).
    lines: u64,
    bytes: u64,
    eof: bool,
    error: Option<io::Error>,
    queue: VecDeque<Piece>,
    finished: bool,
    /// Buffers of chunks already parsed, to be reused instead of allocated.
    spare: Option<Receiver<Vec<u8>>>,
}

impl<R: Read> Splitter<R> {
    pub fn new(input: R, chunk_bytes: usize, max_line_bytes: usize) -> Self {
        let chunk_bytes = chunk_bytes.max(1);
        Splitter {
            input,
            chunk_bytes,
            max_line_bytes,
            buf: vec![0; chunk_bytes],
            filled: 0,
            grow_to: 0,
            cut_line: None,
            mode: Mode::None,
            probe: None,
            plain_fields: None,
            lines: 0,
            bytes: 0,
            eof: false,
            error: None,
            queue: VecDeque::new(),
            finished: false,
            spare: None,
        }
    }

    /// Takes buffers back from the consumers through `spare`.
    pub fn recycle_from(mut self, spare: Receiver<Vec<u8>>) -> Self {
        self.spare = Some(spare);
        self
    }

    /// Reads data lines before any `#Fields` line (a v2 plain delivery) as `fields`.
    pub fn with_plain_fields(mut self, fields: Option<Arc<Header>>) -> Self {
        self.plain_fields = fields;
        self
    }

    /// Decompressed bytes read.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next piece; `None` once the stream is done.
    pub fn next_piece(&mut self) -> Option<Piece> {
        loop {
            if let Some(piece) = self.queue.pop_front() {
                return Some(piece);
            }
            if self.finished {
                return None;
            }
            self.fill();
            self.cut();
        }
    }

    /// Reads until the buffer holds `chunk_bytes` (or `grow_to`), or the stream ends.
    fn fill(&mut self) {
        let target = self.chunk_bytes.max(self.grow_to);
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
        while !self.eof && self.filled < target {
            match self.input.read(&mut self.buf[self.filled..target]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.filled += n;
                    self.bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.eof = true;
                    self.error = Some(e);
                }
            }
        }
    }

    /// Hands on what the buffer holds up to its last whole line, split at `#Fields` lines.
    fn cut(&mut self) {
        let data = &self.buf[..self.filled];
        // After a read error the last, partial line is where the error is reported.
        let end = if self.eof && self.error.is_none() {
            self.filled
        } else {
            memchr::memrchr(b'\n', data).map_or(0, |i| i + 1)
        };
        if end == 0 {
            if self.eof {
                self.finish();
            } else if self.filled > self.max_line_bytes {
                self.skip_long_line();
            } else {
                self.grow_to = self.filled + self.chunk_bytes;
            }
            return;
        }
        self.grow_to = 0;

        // Count lines up to the first that changes how the lines after it are read.
        let mut lines = 0u64;
        let mut start = 0;
        let mut event = None;
        let mut newlines = memchr::memchr_iter(b'\n', &data[..end]);
        while start < end {
            let line_end = newlines.next().unwrap_or(end);
            let line = &data[start..line_end];
            if line[..line.len().min(1)] == [b'#'] {
                if self.is_fields(line) {
                    event = Some(Event::Header {
                        at: start,
                        line_end,
                    });
                    break;
                }
            } else if self.undecided() {
                let len = match self.cut_line {
                    Some(len) if start == 0 => len,
                    _ => line.len(),
                };
                if let Some(to) = self.decide(line, len, self.lines + lines + 1) {
                    event = Some(Event::Switch { at: start, to });
                    break;
                }
            }
            lines += 1;
            start = line_end + 1;
        }
        match event {
            None => self.hand_on(end, lines, end),
            Some(Event::Header { at, line_end }) => {
                let text = &data[at..line_end.min(at + self.max_line_bytes)];
                let text = String::from_utf8_lossy(text.strip_suffix(b"\r").unwrap_or(text));
                let parsed = Header::parse(&text["#Fields:".len()..]);
                let next = (line_end + 1).min(self.filled);
                if at > 0 {
                    self.hand_on(at, lines, next);
                } else {
                    self.carry_from(next);
                }
                self.lines += 1;
                match parsed {
                    // A second header (concatenated files) switches the mapping from here on.
                    Ok(header) => {
                        self.probe = Some(LineParser::new(header.clone()));
                        self.mode = Mode::W3c {
                            header: Arc::new(header),
                            delimiter: None,
                        };
                    }
                    Err(source) => self.fail(ReadError::BadHeader {
                        line_no: self.lines,
                        source,
                    }),
                }
            }
            Some(Event::Switch { at, to }) => {
                if at > 0 {
                    self.hand_on(at, lines, at);
                }
                match to {
                    Ok(mode) => {
                        if let Mode::W3c { header, .. } = &mode {
                            self.probe = Some(LineParser::new((**header).clone()));
                        }
                        self.mode = mode;
                    }
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    /// Whether lines are still looked at one by one: before the first data line of a
    /// headerless stream, and before a header's delimiter is fixed.
    fn undecided(&self) -> bool {
        matches!(
            self.mode,
            Mode::None
                | Mode::W3c {
                    delimiter: None,
                    ..
                }
        )
    }

    /// What `line` (line `line_no`, `len` bytes really) decides for itself and the lines
    /// after it, as the line reader would decide it; `None` when it decides nothing.
    fn decide(&self, line: &[u8], len: usize, line_no: u64) -> Option<Result<Mode, ReadError>> {
        let kept = &line[..line.len().min(self.max_line_bytes)];
        let text = kept.strip_suffix(b"\r").unwrap_or(kept);
        if text.is_empty() || text[0] == b'#' {
            return None;
        }
        match &self.mode {
            // v2 JSON output has no header: each line is an object that names its fields.
            Mode::None if text[0] == b'{' => Some(
                JsonParser::default()
                    .check_first_line(text)
                    .map(|()| Mode::Json)
                    .map_err(|source| ReadError::BadHeader { line_no, source }),
            ),
            // v2 plain output has no header either: its fields are the delivery's, configured.
            Mode::None => self.plain_fields.as_ref().map(|header| {
                Ok(Mode::W3c {
                    header: header.clone(),
                    delimiter: None,
                })
            }),
            // An over-long line is refused before it is parsed: it fixes nothing.
            Mode::W3c {
                header,
                delimiter: None,
            } if len <= self.max_line_bytes => {
                let delimiter = self.probe.as_ref()?.delimiter_of(text)?;
                Some(Ok(Mode::W3c {
                    header: header.clone(),
                    delimiter: Some(delimiter),
                }))
            }
            _ => None,
        }
    }

    fn fail(&mut self, error: ReadError) {
        self.queue.push_back(Piece::Failed(error));
        self.finished = true;
    }

    /// Whether a line (without `\n`) is a `#Fields` line, judged on its capped text as the
    /// line reader does.
    fn is_fields(&self, line: &[u8]) -> bool {
        let capped = &line[..line.len().min(self.max_line_bytes)];
        capped
            .strip_suffix(b"\r")
            .unwrap_or(capped)
            .starts_with(b"#Fields:")
    }

    /// Hands `buf[..end]` on as a chunk of `lines` lines and keeps `buf[rest..filled]`.
    fn hand_on(&mut self, end: usize, lines: u64, rest: usize) {
        let mut next = self.fresh_buffer(self.filled - rest);
        next[..self.filled - rest].copy_from_slice(&self.buf[rest..self.filled]);
        let buf = std::mem::replace(&mut self.buf, next);
        self.queue.push_back(Piece::Chunk(Chunk {
            first_line_no: self.lines + 1,
            mode: self.mode.clone(),
            buf,
            len: end,
            cut_line: self.cut_line.take(),
        }));
        self.lines += lines;
        self.filled -= rest;
    }

    /// Drops `buf[..from]` (a `#Fields` line at the start).
    fn carry_from(&mut self, from: usize) {
        self.buf.copy_within(from..self.filled, 0);
        self.filled -= from;
        self.cut_line = None;
    }

    fn fresh_buffer(&mut self, at_least: usize) -> Vec<u8> {
        let size = self.chunk_bytes.max(at_least);
        let mut buf = self
            .spare
            .as_ref()
            .and_then(|spare| spare.try_recv().ok())
            .unwrap_or_default();
        if buf.len() < size {
            buf.resize(size, 0);
        }
        buf
    }

    /// The buffer holds the start of a line longer than the cap: keep the cap's worth, read
    /// the rest of the line without keeping it, and note its real length.
    fn skip_long_line(&mut self) {
        let keep = self.max_line_bytes;
        let mut total = self.filled;
        self.filled = keep;
        loop {
            let n = match self.input.read(&mut self.buf[keep..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.eof = true;
                    self.error = Some(e);
                    break;
                }
            };
            self.bytes += n as u64;
            if let Some(i) = memchr::memchr(b'\n', &self.buf[keep..keep + n]) {
                total += i;
                // The `\n` and what follows stay.
                self.filled = keep + n;
                self.buf.copy_within(keep + i..keep + n, keep);
                self.filled -= i;
                break;
            }
            total += n;
        }
        self.cut_line = Some(total);
    }

    /// End of input: report a read error at the line it broke.
    fn finish(&mut self) {
        if let Some(source) = self.error.take() {
            self.queue.push_back(Piece::Failed(ReadError::Io {
                line_no: self.lines + 1,
                source,
            }));
        }
        self.finished = true;
    }
}
