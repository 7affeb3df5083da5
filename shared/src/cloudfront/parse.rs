//! One log line → one typed row, driven by the file's `#Fields` header.
//!
//! Parsing never allocates per field: values are slices of the line, or of one scratch
//! buffer (decoded strings, JSON of unknown fields) reused from line to line.

use std::fmt;
use std::ops::Range;

use super::bytemask;
use super::decode::{decode, Decoded, Scratch};
use std::fmt::Write as _;

use super::fields::{lookup, FieldId, FieldKind, DATE, LOG_FIELDS, TIME, TIMESTAMP};

/// What each column of a file holds, from its `#Fields` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    columns: Vec<Column>,
}

/// One column of a file: a known field read with its kind, or a name kept as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Column {
    Known(FieldId, FieldKind),
    /// A field this version of cf2bq does not know: kept in `extra_fields`.
    Unknown(String),
}

impl Column {
    /// The column a field name (hyphenated or underscored) stands for.
    pub(crate) fn named(name: &str) -> Column {
        match lookup(name) {
            Some((id, kind)) => Column::Known(id, kind),
            None => Column::Unknown(name.to_string()),
        }
    }

    fn id(&self) -> Option<FieldId> {
        match self {
            Column::Known(id, _) => Some(*id),
            Column::Unknown(_) => None,
        }
    }
}

/// Why a `#Fields` header (or the fields of a JSON or Parquet object) cannot drive parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("#Fields header lacks the `{0}` field, so rows cannot be dated")]
    MissingField(&'static str),
    #[error(
        "the fields include neither `date` and `time` nor `timestamp(ms)` (or `timestamp`), \
         so rows cannot be dated: add one of them to the log delivery's fields"
    )]
    NoTimestamp,
    #[error("#Fields header names `{0}` twice")]
    Duplicate(String),
}

impl Header {
    /// Parses the text after `#Fields:`. Names are runs of name characters, so the names
    /// may be separated by spaces, TABs or a v2 delivery's own delimiter.
    pub fn parse(fields: &str) -> Result<Header, HeaderError> {
        let names = fields
            .split(|c: char| !(c.is_ascii_alphanumeric() || "()-_".contains(c)))
            .filter(|n| !n.is_empty());
        Header::from_names(names)
    }

    /// A header from field names in column order.
    pub(crate) fn from_names<'n>(
        names: impl Iterator<Item = &'n str>,
    ) -> Result<Header, HeaderError> {
        let mut columns: Vec<Column> = Vec::new();
        for name in names {
            let column = Column::named(name);
            let twice = columns.iter().any(|c| match (&column, c) {
                (Column::Known(a, _), Column::Known(b, _)) => a == b,
                (a, b) => a == b,
            });
            if twice {
                return Err(HeaderError::Duplicate(name.to_string()));
            }
            columns.push(column);
        }
        check_dated(columns.iter().filter_map(Column::id))?;
        Ok(Header { columns })
    }

    /// Number of columns a data line must have.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The columns, in the file's order.
    pub(crate) fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Names of fields this version does not know (kept in `extra_fields`).
    pub fn unknown_fields(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().filter_map(|c| match c {
            Column::Unknown(name) => Some(name.as_str()),
            Column::Known(..) => None,
        })
    }
}

/// Rows are dated by `date` and `time`, or else by `timestamp(ms)` / `timestamp`: fields
/// with neither cannot be routed to a table.
pub(crate) fn check_dated(ids: impl Iterator<Item = FieldId> + Clone) -> Result<(), HeaderError> {
    let has = |wanted| ids.clone().any(|id| id == wanted);
    if has(TIMESTAMP) || (has(DATE) && has(TIME)) {
        return Ok(());
    }
    match (has(DATE), has(TIME)) {
        (true, false) => Err(HeaderError::MissingField("time")),
        (false, true) => Err(HeaderError::MissingField("date")),
        _ => Err(HeaderError::NoTimestamp),
    }
}

/// Why one line could not become a row. The line goes to quarantine with this reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("line has {found} columns, the #Fields header has {expected}")]
    ColumnCount { expected: usize, found: usize },
    #[error("line is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("line is {len} bytes long, over the {limit}-byte limit")]
    TooLong { len: usize, limit: usize },
    #[error("{field}: `{value}` is not a valid {expected}")]
    BadValue {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{field} is `-` but every row needs a date and time")]
    MissingTimestamp { field: &'static str },
    #[error("line is not a JSON object of log fields: {detail}")]
    BadJson { detail: String },
}

impl LineError {
    /// A short stable code for metrics and the quarantine's `reason_code`.
    pub fn code(&self) -> &'static str {
        match self {
            LineError::ColumnCount { .. } => "column_count",
            LineError::InvalidUtf8 { .. } => "invalid_utf8",
            LineError::TooLong { .. } => "too_long",
            LineError::BadValue { .. } => "bad_value",
            LineError::MissingTimestamp { .. } => "missing_timestamp",
            LineError::BadJson { .. } => "bad_json",
        }
    }
}

/// A typed value of one field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Float(f64),
    /// Days since 1970-01-01.
    Date(i32),
    /// Seconds since midnight; the text form is kept for TIME columns.
    Time(u32, &'a str),
    /// Microseconds since the epoch (UTC).
    Timestamp(i64),
}

#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Null,
    Line(Range<usize>),
    Scratch(Range<usize>),
    Int(i64),
    Float(f64),
    Date(i32),
    Time(u32, Range<usize>),
    /// A time of day derived from a timestamp, its text in the scratch buffer.
    ScratchTime(u32, Range<usize>),
    Timestamp(i64),
}

/// The typed fields of the row being built, whatever the format they were read from.
/// Reused from row to row: its buffers are kept.
#[derive(Debug)]
pub(crate) struct RowBuilder {
    slots: Vec<Slot>,
    scratch: String,
    tmp: Scratch,
    /// JSON object of unknown fields of the current line.
    extra: String,
    /// JSON object of raw values whose decoding was ambiguous.
    raw: String,
    /// Whether the row has a `date` or `time` column (else only a timestamp dates it).
    has_date_time: bool,
    /// Fields decoded twice, with where their logged text is in the line: `raw` is built
    /// from them in catalog order, so the same request gives the same JSON in any format.
    decoded_twice: Vec<(FieldId, Range<usize>)>,
}

impl Default for RowBuilder {
    fn default() -> Self {
        RowBuilder {
            slots: vec![Slot::Null; LOG_FIELDS.len()],
            scratch: String::new(),
            tmp: Scratch::default(),
            extra: String::new(),
            raw: String::new(),
            has_date_time: false,
            decoded_twice: Vec::new(),
        }
    }
}

impl RowBuilder {
    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = Slot::Null);
        self.scratch.clear();
        self.extra.clear();
        self.raw.clear();
        self.has_date_time = false;
        self.decoded_twice.clear();
    }

    /// Reads one field: `text` is `line[offset..]` of the line later given to `finish`.
    pub(crate) fn put(
        &mut self,
        column: &Column,
        text: &str,
        offset: usize,
    ) -> Result<(), LineError> {
        match column {
            Column::Known(id, kind) => {
                self.has_date_time |= *id == DATE || *id == TIME;
                let (slot, decoded) =
                    parse_field(*id, *kind, text, offset, &mut self.scratch, &mut self.tmp)?;
                self.slots[*id] = slot;
                if decoded == Decoded::TwoLayers {
                    self.decoded_twice.push((*id, offset..offset + text.len()));
                }
            }
            Column::Unknown(name) => {
                let value = (text != "-" && !text.is_empty()).then_some(text);
                push_json_member(&mut self.extra, name, value);
            }
        }
        Ok(())
    }

    /// An unknown field whose value is null (JSON `null`).
    pub(crate) fn put_null(&mut self, column: &Column) {
        if let Column::Unknown(name) = column {
            push_json_member(&mut self.extra, name, None);
        }
    }

    /// The row, dated by its `date` and `time`, or else by its timestamp (which then also
    /// gives `log_date` and `log_time`).
    pub(crate) fn finish<'a>(&'a mut self, line: &'a str) -> Result<Row<'a>, LineError> {
        self.decoded_twice.sort_unstable_by_key(|(id, _)| *id);
        for (id, range) in &self.decoded_twice {
            push_json_member(
                &mut self.raw,
                LOG_FIELDS[*id].column,
                Some(&line[range.clone()]),
            );
        }
        for json in [&mut self.extra, &mut self.raw] {
            if !json.is_empty() {
                json.push('}');
            }
        }
        let (date, seconds, micros) = match (&self.slots[DATE], &self.slots[TIME]) {
            (Slot::Date(d), Slot::Time(s, _)) => {
                let micros = (i64::from(*d) * 86_400 + i64::from(*s)) * 1_000_000;
                (*d, *s, micros)
            }
            (date, _) => {
                let Slot::Timestamp(micros) = self.slots[TIMESTAMP] else {
                    let field = match date {
                        _ if !self.has_date_time => "timestamp(ms)",
                        Slot::Date(_) => "time",
                        _ => "date",
                    };
                    return Err(LineError::MissingTimestamp { field });
                };
                let seconds_total = micros.div_euclid(1_000_000);
                let date = seconds_total.div_euclid(86_400) as i32;
                let seconds = seconds_total.rem_euclid(86_400) as u32;
                self.slots[DATE] = Slot::Date(date);
                let start = self.scratch.len();
                let _ = write!(
                    self.scratch,
                    "{:02}:{:02}:{:02}",
                    seconds / 3600,
                    seconds / 60 % 60,
                    seconds % 60
                );
                self.slots[TIME] = Slot::ScratchTime(seconds, start..self.scratch.len());
                (date, seconds, micros)
            }
        };
        Ok(Row {
            line,
            scratch: &self.scratch,
            slots: &self.slots,
            date,
            seconds,
            micros,
            extra: (!self.extra.is_empty()).then_some(self.extra.as_str()),
            raw: (!self.raw.is_empty()).then_some(self.raw.as_str()),
        })
    }
}

/// The delimiters a v2 delivery may be set to that we recognise, TAB (the default) first.
const DELIMITERS: [u8; 5] = [b'\t', b' ', b',', b'|', b';'];

/// Parses data lines of one file. Reuse it for every line: its buffers are kept.
#[derive(Debug)]
pub struct LineParser {
    header: Header,
    builder: RowBuilder,
    /// The file's field delimiter, found on its first well-formed line.
    delimiter: Option<u8>,
}

impl LineParser {
    pub fn new(header: Header) -> LineParser {
        LineParser {
            header,
            builder: RowBuilder::default(),
            delimiter: None,
        }
    }

    /// A parser for lines after the one that fixed the file's delimiter (`None`: not
    /// found yet): what lets lines of one file be parsed in several places at once.
    pub fn with_delimiter(header: Header, delimiter: Option<u8>) -> LineParser {
        LineParser {
            delimiter,
            ..LineParser::new(header)
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's delimiter, once a line has fixed it.
    pub fn delimiter(&self) -> Option<u8> {
        self.delimiter
    }

    /// The delimiter `line` would fix for the file if [`parse`](Self::parse) met it first
    /// (`None` when it fixes none): valid UTF-8 and the header's column count.
    pub fn delimiter_of(&self, line: &[u8]) -> Option<u8> {
        std::str::from_utf8(line).ok()?;
        self.detect_delimiter(line.strip_suffix(b"\r").unwrap_or(line))
    }

    /// The delimiter that gives `line` the header's number of columns (a trailing one
    /// allowed); `None` when none does.
    fn detect_delimiter(&self, line: &[u8]) -> Option<u8> {
        let expected = self.header.columns.len();
        if expected <= 1 {
            return Some(b'\t');
        }
        DELIMITERS.into_iter().find(|&d| {
            let found = memchr::memchr_iter(d, line).count() + 1;
            found == expected || (found == expected + 1 && line.last() == Some(&d))
        })
    }

    /// Parses one data line (without its line end).
    pub fn parse<'a>(&'a mut self, line: &'a [u8]) -> Result<Row<'a>, LineError> {
        let line = std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        self.builder.clear();
        let bytes = line.as_bytes();
        let delimiter = match self.delimiter {
            Some(d) => d,
            None => {
                // No delimiter gives this line the header's columns: it is refused (counted
                // by TAB, the default), and the next line tries again.
                let Some(found) = self.detect_delimiter(bytes) else {
                    return Err(LineError::ColumnCount {
                        expected: self.header.columns.len(),
                        found: memchr::memchr_iter(b'\t', bytes).count() + 1,
                    });
                };
                self.delimiter = Some(found);
                found
            }
        };

        let expected = self.header.columns.len();
        let mut found = 0;
        let mut start = 0;
        // One pass finds every delimiter; the line's end closes the last field.
        let mut delimiters = Delimiters::new(bytes, delimiter);
        loop {
            let end = delimiters.next().unwrap_or(bytes.len());
            if found < expected {
                self.builder
                    .put(&self.header.columns[found], &line[start..end], start)?;
            }
            // Columns beyond the header's are only counted, for the error message.
            found += 1;
            if end == bytes.len() {
                break;
            }
            start = end + 1;
        }
        // One trailing delimiter (an empty extra column) is normal in CloudFront files.
        let trailing = found == expected + 1 && bytes.last() == Some(&delimiter);
        if found != expected && !trailing {
            return Err(LineError::ColumnCount { expected, found });
        }
        self.builder.finish(line)
    }
}

/// Positions of the delimiters of a line, from a bitmask per 64 bytes ([`bytemask`]): fields
/// average a dozen bytes, so a search call per field costs more than the search itself, and
/// a branch per eight bytes (the previous way) mispredicted on most fields.
pub(crate) struct Delimiters<'a> {
    bytes: &'a [u8],
    delimiter: u8,
    /// Start of the next block to look at.
    next_block: usize,
    /// Delimiters of the current block not handed out yet.
    mask: u64,
}

impl<'a> Delimiters<'a> {
    pub(crate) fn new(bytes: &'a [u8], delimiter: u8) -> Self {
        Delimiters {
            bytes,
            delimiter,
            next_block: 0,
            mask: 0,
        }
    }
}

impl Iterator for Delimiters<'_> {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            let start = self.next_block;
            if start >= self.bytes.len() {
                return None;
            }
            self.mask = bytemask::mask_from(self.bytes, start, self.delimiter);
            self.next_block = start + bytemask::BLOCK;
        }
        let at = self.next_block - bytemask::BLOCK + self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(at)
    }
}

/// The high bit of every byte of `word` equal to the byte `splat` repeats, exactly (no
/// carries between bytes).
#[inline]
pub(super) fn matching_bytes(word: u64, splat: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ splat;
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Adds `"name":value` to a JSON object being built in `json`, opening it if needed.
pub(crate) fn push_json_member(json: &mut String, name: &str, value: Option<&str>) {
    json.push(if json.is_empty() { '{' } else { ',' });
    push_json_string(json, name);
    json.push(':');
    match value {
        Some(v) => push_json_string(json, v),
        None => json.push_str("null"),
    }
}

/// Whether `text` goes into a JSON string as it is (no quote, backslash or control
/// character).
pub(crate) fn is_plain_json(text: &[u8]) -> bool {
    // A fold rather than `any`: no early exit, so the check runs many bytes at a time.
    (text.iter()).fold(true, |plain, &b| {
        plain & (b != b'"') & (b != b'\\') & (b >= 0x20)
    })
}

fn push_json_string(json: &mut String, s: &str) {
    use std::fmt::Write;
    json.push('"');
    // Log values are URL-encoded, so escaping is almost never needed: copy them whole.
    if is_plain_json(s.as_bytes()) {
        json.push_str(s);
        json.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", c as u32);
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

/// Parses one field's text into a slot.
fn parse_field(
    id: FieldId,
    kind: FieldKind,
    text: &str,
    offset: usize,
    scratch: &mut String,
    tmp: &mut Scratch,
) -> Result<(Slot, Decoded), LineError> {
    let field = &LOG_FIELDS[id];
    if text == "-" || text.is_empty() {
        return Ok((Slot::Null, Decoded::Unchanged));
    }
    let range = offset..offset + text.len();
    let bad = |expected| LineError::BadValue {
        field: field.log_name,
        value: text.chars().take(64).collect(),
        expected,
    };
    let slot = match kind {
        FieldKind::Text => Slot::Line(range),
        FieldKind::Encoded(encoding) => {
            let start = scratch.len();
            let decoded = decode(text, encoding, scratch, tmp);
            let slot = match decoded {
                Decoded::Unchanged => Slot::Line(range),
                _ => Slot::Scratch(start..scratch.len()),
            };
            return Ok((slot, decoded));
        }
        FieldKind::Int => Slot::Int(parse_int(text).ok_or_else(|| bad("integer"))?),
        FieldKind::Float => Slot::Float(parse_float(text).ok_or_else(|| bad("number"))?),
        FieldKind::Date => Slot::Date(parse_date(text).ok_or_else(|| bad("date (YYYY-MM-DD)"))?),
        FieldKind::Time => Slot::Time(
            parse_time(text).ok_or_else(|| bad("time (HH:MM:SS)"))?,
            range,
        ),
        FieldKind::EpochMillis | FieldKind::EpochSeconds => {
            Slot::Timestamp(parse_epoch(text, kind).ok_or_else(|| bad("Unix time"))?)
        }
    };
    Ok((slot, Decoded::Unchanged))
}

/// Decimal integer, optional leading `-`, no overflow. `000` is 0. (Text or bytes: the
/// direct encoder reads fields as bytes.)
#[inline]
pub fn parse_int<T: AsRef<[u8]> + ?Sized>(text: &T) -> Option<i64> {
    let text = text.as_ref();
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let digit = |b: u8| {
        let d = b.wrapping_sub(b'0');
        (d <= 9).then_some(i64::from(d))
    };
    // Eighteen digits cannot overflow, so the common number is read without checks.
    let magnitude = if digits.len() <= 18 {
        let mut magnitude = 0;
        for &b in digits {
            magnitude = magnitude * 10 + digit(b)?;
        }
        magnitude
    } else {
        (digits.iter()).try_fold(0i64, |acc, &b| acc.checked_mul(10)?.checked_add(digit(b)?))?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// A finite decimal number such as `0.002` (no `inf`, `nan` or exponent tricks).
pub fn parse_float<T: AsRef<[u8]> + ?Sized>(text: &T) -> Option<f64> {
    let bytes = text.as_ref();
    if let Some(v) = parse_short_decimal(bytes) {
        return Some(v);
    }
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A Unix time → microseconds since the epoch. `timestamp(ms)` is whole milliseconds;
/// real-time logs' `timestamp` is seconds with a fraction (`1733788800.123`). A whole number
/// of 12 or more digits is milliseconds whatever the name (seconds would be past 33658).
pub fn parse_epoch(text: &str, kind: FieldKind) -> Option<i64> {
    match text.split_once('.') {
        Some((whole, fraction)) => {
            let seconds = parse_int(whole).filter(|s| *s >= 0)?;
            if fraction.is_empty()
                || fraction.len() > 6
                || !fraction.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let micros = fraction.parse::<i64>().ok()? * 10i64.pow(6 - fraction.len() as u32);
            let micros = seconds.checked_mul(1_000_000)?.checked_add(micros)?;
            // A fraction on a millisecond count means nothing sensible: reject it.
            (kind == FieldKind::EpochSeconds).then_some(micros)
        }
        None => {
            let whole = parse_int(text).filter(|v| *v >= 0)?;
            let millis = kind == FieldKind::EpochMillis || text.len() >= 12;
            if millis {
                whole.checked_mul(1_000)
            } else {
                whole.checked_mul(1_000_000)
            }
        }
    }
}

/// Powers of ten that are exact in an f64.
const EXACT_POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The common shape `DIGITS[.DIGITS]` with at most 15 digits, the way CloudFront logs
/// seconds (`0.002`): the digits as an integer and the power of ten are both exact in an
/// f64, so one division gives the correctly rounded value, bit for bit what `str::parse`
/// gives (Clinger's fast path), several times faster.
fn parse_short_decimal(b: &[u8]) -> Option<f64> {
    if b.is_empty() || b.len() > 16 || !b[0].is_ascii_digit() {
        return None;
    }
    let mut mantissa = 0u64;
    let mut fraction_digits = None;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'0'..=b'9' => mantissa = mantissa * 10 + u64::from(c - b'0'),
            b'.' if fraction_digits.is_none() && i + 1 < b.len() => {
                fraction_digits = Some(b.len() - i - 1)
            }
            _ => return None,
        }
    }
    let digits = b.len() - usize::from(fraction_digits.is_some());
    if digits > 15 {
        return None;
    }
    Some(mantissa as f64 / EXACT_POWERS_OF_TEN[fraction_digits.unwrap_or(0)])
}

/// `YYYY-MM-DD` → days since 1970-01-01.
pub fn parse_date<T: AsRef<[u8]> + ?Sized>(text: &T) -> Option<i32> {
    let b = text.as_ref();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// `HH:MM:SS` → seconds since midnight.
pub fn parse_time<T: AsRef<[u8]> + ?Sized>(text: &T) -> Option<u32> {
    let b = text.as_ref();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&b[0..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days-from-civil: proleptic Gregorian date → days since 1970-01-01.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → (year, month, day).
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i32::from(month <= 2);
    (year, month, day)
}

/// One parsed line. Borrowed from the line and the parser's scratch buffer.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    line: &'a str,
    scratch: &'a str,
    slots: &'a [Slot],
    /// The request's UTC date, in days since 1970-01-01: what routes the row.
    pub date: i32,
    /// The request's UTC time of day, in seconds.
    pub seconds: u32,
    /// When the request happened, in microseconds since the epoch: `date` + `time`, or the
    /// row's timestamp when the file has no `date` and `time`.
    micros: i64,
    extra: Option<&'a str>,
    raw: Option<&'a str>,
}

impl<'a> Row<'a> {
    /// The value of a known field (`Null` when absent from this file's header or `-`).
    #[inline(always)]
    pub fn get(&self, id: FieldId) -> Value<'a> {
        match &self.slots[id] {
            Slot::Null => Value::Null,
            Slot::Line(r) => Value::Text(&self.line[r.clone()]),
            Slot::Scratch(r) => Value::Text(&self.scratch[r.clone()]),
            Slot::Int(v) => Value::Int(*v),
            Slot::Float(v) => Value::Float(*v),
            Slot::Date(d) => Value::Date(*d),
            Slot::Time(s, r) => Value::Time(*s, &self.line[r.clone()]),
            Slot::ScratchTime(s, r) => Value::Time(*s, &self.scratch[r.clone()]),
            Slot::Timestamp(v) => Value::Timestamp(*v),
        }
    }

    /// Bytes of all the row's text (its line, decoded values, JSON columns): a bound on the
    /// strings an encoding of it holds.
    pub fn text_bytes(&self) -> usize {
        self.line.len()
            + self.scratch.len()
            + self.extra.map_or(0, str::len)
            + self.raw.map_or(0, str::len)
    }

    /// The request time as microseconds since the epoch.
    #[inline]
    pub fn timestamp_micros(&self) -> i64 {
        self.micros
    }

    /// JSON object of fields this version does not know, if the file has any.
    pub fn extra_fields(&self) -> Option<&'a str> {
        self.extra
    }

    /// JSON object of raw logged values whose decoding was ambiguous (two layers removed).
    pub fn raw_fields(&self) -> Option<&'a str> {
        self.raw
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Text(s) => f.write_str(s),
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Date(d) => {
                let (y, m, day) = civil_from_days(*d);
                write!(f, "{y:04}-{m:02}-{day:02}")
            }
            Value::Time(_, s) => f.write_str(s),
            Value::Timestamp(micros) => {
                let seconds = micros.div_euclid(1_000_000);
                let (y, m, d) = civil_from_days(seconds.div_euclid(86_400) as i32);
                let s = seconds.rem_euclid(86_400);
                write!(
                    f,
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
                    s / 3600,
                    s / 60 % 60,
                    s % 60,
                    micros.rem_euclid(1_000_000)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_the_standard_library_without_a_plus_sign() {
        let max = i64::MAX.to_string();
        let texts = [
            "0",
            "000",
            "7",
            "-5",
            "-0",
            "123456789012345678",
            "-999999999999999999",
            &max,
            "9223372036854775808",
            "-9223372036854775807",
            "12345678901234567890",
            "",
            "-",
            "+1",
            "1a",
            "a1",
            "1-",
            "--1",
            " 1",
            "1.0",
            "/",
            ":",
        ];
        for text in texts {
            let expected = text.parse::<i64>().ok().filter(|_| !text.starts_with('+'));
            assert_eq!(parse_int(text), expected, "{text:?}");
        }
    }

    #[test]
    fn delimiters_are_found_exactly_at_every_position_and_length() {
        for delimiter in DELIMITERS {
            for len in 0..40 {
                for pattern in 0u64..64 {
                    let line: Vec<u8> = (0..len)
                        .map(|i| match (i as u64 * 7 + pattern) % 5 {
                            0 => delimiter,
                            1 => delimiter | 0x80,
                            2 => delimiter - 1,
                            3 => delimiter + 1,
                            _ => b'a',
                        })
                        .collect();
                    let expected: Vec<usize> = memchr::memchr_iter(delimiter, &line).collect();
                    let found: Vec<usize> = Delimiters::new(&line, delimiter).collect();
                    assert_eq!(found, expected, "{line:?}");
                }
            }
        }
    }
}
