//! One log line → one typed row, driven by the file's `#Fields` header.
//!
//! Parsing never allocates per field: values are slices of the line, or of one scratch
//! buffer (decoded strings, JSON of unknown fields) reused from line to line.

use std::fmt;
use std::ops::Range;

use super::decode::{decode, Decoded, Scratch};
use super::fields::{field_id, FieldId, FieldKind, DATE, LOG_FIELDS, TIME};

/// What each column of a file holds, from its `#Fields` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Known(FieldId),
    /// A field this version of cf2bq does not know: kept in `extra_fields`.
    Unknown(String),
}

/// Why a `#Fields` header cannot drive parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("#Fields header lacks the `{0}` field, so rows cannot be dated")]
    MissingField(&'static str),
    #[error("#Fields header names `{0}` twice")]
    Duplicate(String),
}

impl Header {
    /// Parses the text after `#Fields:`.
    pub fn parse(fields: &str) -> Result<Header, HeaderError> {
        let mut columns = Vec::new();
        for name in fields.split_ascii_whitespace() {
            let column = match field_id(name) {
                Some(id) => Column::Known(id),
                None => Column::Unknown(name.to_string()),
            };
            if columns.contains(&column) {
                return Err(HeaderError::Duplicate(name.to_string()));
            }
            columns.push(column);
        }
        for (id, name) in [(DATE, "date"), (TIME, "time")] {
            if !columns.contains(&Column::Known(id)) {
                return Err(HeaderError::MissingField(name));
            }
        }
        Ok(Header { columns })
    }

    /// Number of columns a data line must have.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Names of fields this version does not know (kept in `extra_fields`).
    pub fn unknown_fields(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().filter_map(|c| match c {
            Column::Unknown(name) => Some(name.as_str()),
            Column::Known(_) => None,
        })
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
}

/// Parses data lines of one file. Reuse it for every line: its buffers are kept.
#[derive(Debug)]
pub struct LineParser {
    header: Header,
    slots: Vec<Slot>,
    scratch: String,
    tmp: Scratch,
    /// JSON object of unknown fields of the current line.
    extra: String,
    /// JSON object of raw values whose decoding was ambiguous.
    raw: String,
}

impl LineParser {
    pub fn new(header: Header) -> LineParser {
        LineParser {
            header,
            slots: vec![Slot::Null; LOG_FIELDS.len()],
            scratch: String::new(),
            tmp: Scratch::default(),
            extra: String::new(),
            raw: String::new(),
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Parses one data line (without its line end).
    pub fn parse<'a>(&'a mut self, line: &'a [u8]) -> Result<Row<'a>, LineError> {
        let line = std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        let line = line.strip_suffix('\r').unwrap_or(line);
        self.slots.iter_mut().for_each(|s| *s = Slot::Null);
        self.scratch.clear();
        self.extra.clear();
        self.raw.clear();

        let expected = self.header.columns.len();
        let mut found = 0;
        let mut start = 0;
        let bytes = line.as_bytes();
        // One vectorised pass finds every TAB; the line's end closes the last field.
        let mut tabs = memchr::memchr_iter(b'\t', bytes);
        loop {
            let end = tabs.next().unwrap_or(bytes.len());
            if found < expected {
                let column = &self.header.columns[found];
                let text = &line[start..end];
                match column {
                    Column::Known(id) => {
                        let (slot, decoded) =
                            parse_field(*id, text, start, &mut self.scratch, &mut self.tmp)?;
                        self.slots[*id] = slot;
                        if decoded == Decoded::TwoLayers {
                            push_json_member(&mut self.raw, LOG_FIELDS[*id].column, Some(text));
                        }
                    }
                    Column::Unknown(name) => {
                        let value = (text != "-" && !text.is_empty()).then_some(text);
                        push_json_member(&mut self.extra, name, value);
                    }
                }
            }
            // Columns beyond the header's are only counted, for the error message.
            found += 1;
            if end == bytes.len() {
                break;
            }
            start = end + 1;
        }
        // One trailing TAB (an empty extra column) is normal in CloudFront files.
        let trailing_tab = found == expected + 1 && line.ends_with('\t');
        if found != expected && !trailing_tab {
            return Err(LineError::ColumnCount { expected, found });
        }
        for json in [&mut self.extra, &mut self.raw] {
            if !json.is_empty() {
                json.push('}');
            }
        }
        let date = match self.slots[DATE] {
            Slot::Date(d) => d,
            _ => return Err(LineError::MissingTimestamp { field: "date" }),
        };
        let seconds = match self.slots[TIME] {
            Slot::Time(s, _) => s,
            _ => return Err(LineError::MissingTimestamp { field: "time" }),
        };
        Ok(Row {
            line,
            scratch: &self.scratch,
            slots: &self.slots,
            date,
            seconds,
            extra: (!self.extra.is_empty()).then_some(self.extra.as_str()),
            raw: (!self.raw.is_empty()).then_some(self.raw.as_str()),
        })
    }
}

/// Adds `"name":value` to a JSON object being built in `json`, opening it if needed.
fn push_json_member(json: &mut String, name: &str, value: Option<&str>) {
    json.push(if json.is_empty() { '{' } else { ',' });
    push_json_string(json, name);
    json.push(':');
    match value {
        Some(v) => push_json_string(json, v),
        None => json.push_str("null"),
    }
}

fn push_json_string(json: &mut String, s: &str) {
    use std::fmt::Write;
    json.push('"');
    // Log values are URL-encoded, so escaping is almost never needed: copy them whole.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
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
    let slot = match field.kind {
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
    };
    Ok((slot, Decoded::Unchanged))
}

/// Decimal integer, optional leading `-`, no overflow. `000` is 0.
pub fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().try_fold(0i64, |acc, b| {
        acc.checked_mul(10)?.checked_add(i64::from(b - b'0'))
    })?;
    Some(if negative { -magnitude } else { magnitude })
}

/// A finite decimal number such as `0.002` (no `inf`, `nan` or exponent tricks).
pub fn parse_float(text: &str) -> Option<f64> {
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `YYYY-MM-DD` → days since 1970-01-01.
pub fn parse_date(text: &str) -> Option<i32> {
    let b = text.as_bytes();
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
pub fn parse_time(text: &str) -> Option<u32> {
    let b = text.as_bytes();
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
    extra: Option<&'a str>,
    raw: Option<&'a str>,
}

impl<'a> Row<'a> {
    /// The value of a known field (`Null` when absent from this file's header or `-`).
    pub fn get(&self, id: FieldId) -> Value<'a> {
        match &self.slots[id] {
            Slot::Null => Value::Null,
            Slot::Line(r) => Value::Text(&self.line[r.clone()]),
            Slot::Scratch(r) => Value::Text(&self.scratch[r.clone()]),
            Slot::Int(v) => Value::Int(*v),
            Slot::Float(v) => Value::Float(*v),
            Slot::Date(d) => Value::Date(*d),
            Slot::Time(s, r) => Value::Time(*s, &self.line[r.clone()]),
        }
    }

    /// The request time as microseconds since the epoch.
    pub fn timestamp_micros(&self) -> i64 {
        (i64::from(self.date) * 86_400 + i64::from(self.seconds)) * 1_000_000
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
        }
    }
}
