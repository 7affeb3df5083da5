//! A decompressed log stream → header-driven rows and rejected lines, one at a time.
//!
//! Memory stays bounded: one line buffer, capped at `max_line_bytes`; a longer line is read
//! to its end without being kept, and rejected with its first `max_line_bytes` bytes.

use std::io::{self, BufRead};
use std::sync::Arc;

use super::json::JsonParser;
use super::parse::{Header, HeaderError, LineError, LineParser, Row};

/// The default cap on one line. Real lines are well under 8 KiB; URLs and cookies can be long.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// What stops a whole object: nothing of it may be committed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the decompressed stream at line {line_no}: {source}")]
    Io {
        line_no: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "line {line_no} is data but no #Fields header came before it (a v2 plain delivery \
         has none: set CF2BQ_PLAIN_FIELDS to the delivery's field list)"
    )]
    NoHeader { line_no: u64 },
    #[error("line {line_no}: {source}")]
    BadHeader {
        line_no: u64,
        #[source]
        source: HeaderError,
    },
    #[error(transparent)]
    Parquet(#[from] super::parquet::ParquetError),
}

/// One item of a log stream.
#[derive(Debug)]
pub enum Item<'a> {
    Row { line_no: u64, row: Row<'a> },
    Rejected(Rejected<'a>),
}

/// A line that could not be parsed, with why. `raw` is the line as read (capped).
#[derive(Debug)]
pub struct Rejected<'a> {
    pub line_no: u64,
    pub error: LineError,
    pub raw: &'a [u8],
}

/// Counts of what a stream held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadStats {
    /// Data lines (not `#` comments, not blank): each is either a row or rejected.
    pub data_lines: u64,
    pub rows: u64,
    pub rejected: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
}

pub struct LogReader<R> {
    input: R,
    line: Vec<u8>,
    parser: Option<Parser>,
    line_no: u64,
    max_line_bytes: usize,
    stats: ReadStats,
    /// The fields of a v2 plain delivery: they read data lines that come before any header.
    plain_fields: Option<Arc<Header>>,
}

/// How the data lines of a stream are read: W3C by its `#Fields` header (legacy and v2, any
/// delimiter), or v2 JSON lines, chosen by the stream's content.
#[derive(Debug)]
enum Parser {
    W3c(LineParser),
    Json(JsonParser),
}

enum LineRead {
    Eof,
    Complete,
    TooLong(usize),
}

impl<R: BufRead> LogReader<R> {
    pub fn new(input: R, max_line_bytes: usize) -> Self {
        LogReader {
            input,
            line: Vec::with_capacity(4096),
            parser: None,
            line_no: 0,
            max_line_bytes,
            stats: ReadStats::default(),
            plain_fields: None,
        }
    }

    /// Reads data lines before any `#Fields` line (a v2 plain delivery) as `fields`.
    pub fn with_plain_fields(mut self, fields: Option<Arc<Header>>) -> Self {
        self.plain_fields = fields;
        self
    }

    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// The next row or rejected line; `None` at the end of the stream.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, ReadError> {
        let too_long = loop {
            let read = self.read_line().map_err(|source| ReadError::Io {
                line_no: self.line_no + 1,
                source,
            })?;
            self.line_no += 1;
            let too_long = match read {
                LineRead::Eof => return Ok(None),
                LineRead::Complete => None,
                LineRead::TooLong(len) => Some(len),
            };
            let text = trim_line_end(&self.line);
            if text.is_empty() {
                continue;
            }
            if text[0] == b'#' {
                self.directive()?;
                continue;
            }
            break too_long;
        };
        self.stats.data_lines += 1;
        let line_no = self.line_no;
        // v2 JSON output has no header: each line is an object that names its fields.
        if self.parser.is_none() && trim_line_end(&self.line).starts_with(b"{") {
            let mut json = JsonParser::default();
            json.check_first_line(trim_line_end(&self.line))
                .map_err(|source| ReadError::BadHeader { line_no, source })?;
            self.parser = Some(Parser::Json(json));
        }
        // v2 plain output has no header either: its fields are the delivery's, configured.
        if let (None, Some(fields)) = (&self.parser, &self.plain_fields) {
            self.parser = Some(Parser::W3c(LineParser::new((**fields).clone())));
        }
        let Some(parser) = self.parser.as_mut() else {
            return Err(ReadError::NoHeader { line_no });
        };
        let raw = trim_line_end(&self.line);
        if let Some(len) = too_long {
            self.stats.rejected += 1;
            let error = LineError::TooLong {
                len,
                limit: self.max_line_bytes,
            };
            return Ok(Some(Item::Rejected(Rejected {
                line_no,
                error,
                raw,
            })));
        }
        let parsed = match parser {
            Parser::W3c(p) => p.parse(raw),
            Parser::Json(p) => p.parse(raw),
        };
        match parsed {
            Ok(row) => {
                self.stats.rows += 1;
                Ok(Some(Item::Row { line_no, row }))
            }
            Err(error) => {
                self.stats.rejected += 1;
                Ok(Some(Item::Rejected(Rejected {
                    line_no,
                    error,
                    raw,
                })))
            }
        }
    }

    /// Handles a `#` line: a `#Fields` line (re)defines the columns; others are ignored.
    fn directive(&mut self) -> Result<(), ReadError> {
        let text = String::from_utf8_lossy(trim_line_end(&self.line));
        if let Some(fields) = text.strip_prefix("#Fields:") {
            let header = Header::parse(fields).map_err(|source| ReadError::BadHeader {
                line_no: self.line_no,
                source,
            })?;
            // A second header (concatenated files) switches the mapping from here on.
            self.parser = Some(Parser::W3c(LineParser::new(header)));
        }
        Ok(())
    }

    /// Reads one line into `self.line` (without `\n`), keeping at most `max_line_bytes`.
    fn read_line(&mut self) -> io::Result<LineRead> {
        self.line.clear();
        let mut total = 0usize;
        let mut saw_any = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !saw_any {
                    return Ok(LineRead::Eof);
                }
                break;
            }
            saw_any = true;
            let (chunk, consumed, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let room = self.max_line_bytes.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            total += chunk.len();
            self.stats.bytes += consumed as u64;
            self.input.consume(consumed);
            if done {
                break;
            }
        }
        Ok(if total > self.max_line_bytes {
            LineRead::TooLong(total)
        } else {
            LineRead::Complete
        })
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}
