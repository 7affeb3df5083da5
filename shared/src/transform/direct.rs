//! The common log line straight to its encoded row, in one pass: each field is parsed and
//! written as its protobuf column at once, with no typed row in between. This is where most
//! of the transform's CPU goes, and the general path ([`LineParser`] then [`RowEncoder`])
//! spends half of it storing every value and dispatching on it twice.
//!
//! It writes exactly the bytes the general path writes, so it takes only what it can write in
//! table order as it reads: a header of known fields in catalog order that starts with `date`
//! and `time` (every legacy file and the default v2 W3C fields), and no privacy controls.
//! Anything unusual on a line (a `-` date, a value that does not parse, a wrong column count,
//! invalid UTF-8) gives `None` and nothing written; the caller then parses that line the
//! general way, which also words the error. Tests hold the two to the same bytes.
//!
//! [`LineParser`]: crate::cloudfront::LineParser

use crate::bigquery::encode::{
    field_number, put_varint, varint_len, RowEncoder, FIXED64, LEN, VARINT,
};
use crate::bigquery::rows::push_framed;
use crate::bigquery::schema::Source;
use crate::cloudfront::decode::{decode_into, Decoded, Scratch, DECODE_SLACK};
use crate::cloudfront::fields::{
    Encoding, FieldId, FieldKind, DATE, LEGACY_FIELDS, LOG_FIELDS, TIME,
};
use crate::cloudfront::parse::{
    is_plain_json, parse_date, parse_epoch, parse_float, parse_int, parse_time, Column, Delimiters,
};
use crate::cloudfront::Header;
use std::ops::Range;

/// What routes a row written by [`DirectEncoder::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    /// The request's date, days since the epoch.
    pub date: i32,
    /// The request time, microseconds since the epoch.
    pub micros: i64,
    /// The encoded row's length, without its framing.
    pub len: usize,
}

/// One column after `date` and `time`, with its protobuf key.
#[derive(Debug, Clone, Copy)]
struct Field {
    id: FieldId,
    kind: FieldKind,
    key: Key,
}

/// Writes the lines of one header and delimiter. Reuse it for every line: its buffers are kept.
#[derive(Debug)]
pub(super) struct DirectEncoder {
    delimiter: u8,
    /// The header's columns after `date` and `time`.
    fields: Vec<Field>,
    /// Index into `fields` of the first field of standard logging v2, which comes after the
    /// lineage columns in table order (`fields.len()` when there is none).
    v2_from: usize,
    date_key: Key,
    time_key: Key,
    request_time_key: Key,
    raw_key: Key,
    line_key: Key,
    source_object: Vec<u8>,
    ingest_time: Vec<u8>,
    tmp: Scratch,
    /// The fields of the current line decoded twice, whose logged text `raw_fields` keeps:
    /// their column and where the text is in the line.
    kept_raw: Vec<(&'static str, Range<usize>)>,
    /// The last date read, and its day number: a file's lines mostly share one.
    last_date: Option<([u8; 10], i32)>,
    /// The row being written.
    row: Vec<u8>,
}

impl DirectEncoder {
    /// An encoder for lines of `header` split by `delimiter`, or `None` when the header or
    /// the encoder's settings need the general path.
    pub(super) fn new(header: &Header, delimiter: u8, encoder: &RowEncoder) -> Option<Self> {
        if encoder.has_privacy() {
            return None;
        }
        let mut known = header.columns().iter().map(|column| match column {
            Column::Known(id, kind) => Some((*id, *kind)),
            Column::Unknown(_) => None,
        });
        if known.next()? != Some((DATE, FieldKind::Date))
            || known.next()? != Some((TIME, FieldKind::Time))
        {
            return None;
        }
        let mut fields: Vec<Field> = Vec::with_capacity(header.len());
        for column in known {
            let (id, kind) = column?;
            let in_order = fields.last().map_or(id > TIME, |last| id > last.id);
            if !in_order || matches!(kind, FieldKind::Date | FieldKind::Time) {
                return None;
            }
            let wire_type = match kind {
                FieldKind::Float => FIXED64,
                FieldKind::Int | FieldKind::EpochMillis | FieldKind::EpochSeconds => VARINT,
                _ => LEN,
            };
            let key = Key::new(field_number(Source::Field(id)), wire_type);
            fields.push(Field { id, kind, key });
        }
        let (source_object, ingest_time) = encoder.lineage();
        Some(DirectEncoder {
            delimiter,
            v2_from: fields
                .iter()
                .position(|f| f.id >= LEGACY_FIELDS)
                .unwrap_or(fields.len()),
            fields,
            date_key: Key::new(field_number(Source::Field(DATE)), VARINT),
            time_key: Key::new(field_number(Source::Field(TIME)), LEN),
            request_time_key: Key::new(field_number(Source::RequestTime), VARINT),
            raw_key: Key::new(field_number(Source::RawFields), LEN),
            line_key: Key::new(field_number(Source::SourceLine), VARINT),
            source_object: source_object.to_vec(),
            ingest_time: ingest_time.to_vec(),
            tmp: Scratch::default(),
            kept_raw: Vec::new(),
            last_date: None,
            row: Vec::new(),
        })
    }

    /// Appends the encoded row of `line` (without its line end) to `out`, framed as one
    /// `ProtoRows` entry ([`push_framed`]); `None`, with `out` as it was, when the line needs
    /// the general path. `known_utf8`: the caller has already found the line valid UTF-8 (a
    /// whole chunk checked at once costs less than its lines one by one).
    pub(super) fn encode(
        &mut self,
        line: &[u8],
        known_utf8: bool,
        line_no: u64,
        out: &mut Vec<u8>,
    ) -> Option<Written> {
        // Fields are split at ASCII delimiters, so once the whole line is valid UTF-8 each of
        // them is too, and they can stay bytes.
        if !known_utf8 {
            simdutf8::basic::from_utf8(line).ok()?;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Lent out for the line, as the row is written while the rest of `self` changes.
        let mut row = std::mem::take(&mut self.row);
        let written = self.write(line, line_no, &mut row);
        if let Some(written) = written {
            push_framed(&row[..written.len], out);
        }
        self.row = row;
        written
    }

    /// Writes the row into `row`, made big enough for any row of `line` first; returns what
    /// routes it and its length.
    fn write(&mut self, line: &[u8], line_no: u64, row: &mut Vec<u8>) -> Option<Written> {
        // Strings only shrink when decoded; every other column takes at most a key, a
        // length and ten bytes of number; `raw_fields` is given a line's worth (a longer one
        // goes the general way); and the wide stores (strings moved 16 or 32 bytes at once,
        // heads as a word, decoding's slack) may run up to 32 bytes past the end.
        let room = 2 * line.len()
            + 17 * (self.fields.len() + 4)
            + self.source_object.len()
            + self.ingest_time.len()
            + 128;
        if row.len() < room {
            row.resize(room, 0);
        }
        let mut w = Cursor { buf: row, at: 0 };
        self.kept_raw.clear();
        let mut fields = Fields::new(line, self.delimiter);

        let (_, date_text) = fields.next()?;
        let date = self.date(date_text)?;
        let (time_at, time_text) = fields.next()?;
        let seconds = parse_time(time_text)?;
        let micros = (i64::from(date) * 86_400 + i64::from(seconds)) * 1_000_000;
        w.int(self.date_key, i64::from(date));
        w.text_of(self.time_key, line, time_at, time_text.len());
        w.int(self.request_time_key, micros);

        for i in 0..self.fields.len() {
            if i == self.v2_from {
                self.write_lineage(line, line_no, &mut w)?;
            }
            let (at, text) = fields.next()?;
            self.write_column(self.fields[i], line, at, text, &mut w)?;
        }
        if self.v2_from == self.fields.len() {
            self.write_lineage(line, line_no, &mut w)?;
        }
        fields.ends_well().then_some(Written {
            date,
            micros,
            len: w.at,
        })
    }

    /// One column from its field's text at `line[at..]`; nothing for `-` or an empty field.
    #[inline(always)]
    fn write_column(
        &mut self,
        field: Field,
        line: &[u8],
        at: usize,
        text: &[u8],
        w: &mut Cursor<'_>,
    ) -> Option<()> {
        if text == b"-" || text.is_empty() {
            return Some(());
        }
        let Field { id, kind, key } = field;
        match kind {
            FieldKind::Text => w.text_of(key, line, at, text.len()),
            FieldKind::Encoded(encoding) => {
                if w.decoded(key, line, at, text, encoding, &mut self.tmp)? == Decoded::TwoLayers {
                    self.kept_raw
                        .push((LOG_FIELDS[id].column, at..at + text.len()));
                }
            }
            FieldKind::Int => w.int(key, parse_int(text)?),
            FieldKind::Float => {
                w.key(key);
                w.bytes(&parse_float(text)?.to_le_bytes());
            }
            FieldKind::EpochMillis | FieldKind::EpochSeconds => {
                let text = std::str::from_utf8(text).ok()?;
                w.int(key, parse_epoch(text, kind)?)
            }
            // Excluded by `new`.
            FieldKind::Date | FieldKind::Time => return None,
        }
        Some(())
    }

    /// `raw_fields`, `source_object`, `source_line` and `ingest_time`: the columns between
    /// the legacy fields and the v2 ones (`extra_fields` is always empty here).
    fn write_lineage(&self, line: &[u8], line_no: u64, w: &mut Cursor<'_>) -> Option<()> {
        if !self.kept_raw.is_empty() {
            self.write_raw_fields(line, w)?;
        }
        w.bytes(&self.source_object);
        w.int(self.line_key, line_no as i64);
        w.bytes(&self.ingest_time);
        Some(())
    }

    /// `raw_fields` as the general path's JSON writer writes it,
    /// `{"column":"logged text",...}`, straight from the line. `None` when a text would need
    /// escaping, or the whole is longer than the room made for it.
    fn write_raw_fields(&self, line: &[u8], w: &mut Cursor<'_>) -> Option<()> {
        // `"column":"text"` and a comma or brace each, and the closing brace.
        let mut len = 1;
        for (column, text) in &self.kept_raw {
            if !is_plain_json(&line[text.clone()]) {
                return None;
            }
            len += column.len() + text.len() + 6;
        }
        if len >= line.len() {
            return None;
        }
        w.head(self.raw_key, len as u64);
        for (i, (column, text)) in self.kept_raw.iter().enumerate() {
            w.bytes(if i == 0 { b"{\"" } else { b",\"" });
            w.bytes(column.as_bytes());
            w.bytes(b"\":\"");
            w.bytes(&line[text.clone()]);
            w.byte(b'"');
        }
        w.byte(b'}');
        Some(())
    }

    /// The day number of a date field, from the last line's when the text is the same.
    #[inline(always)]
    fn date(&mut self, text: &[u8]) -> Option<i32> {
        let text: &[u8; 10] = text.try_into().ok()?;
        match self.last_date {
            Some((last, days)) if last == *text => Some(days),
            _ => {
                let days = parse_date(text)?;
                self.last_date = Some((*text, days));
                Some(days)
            }
        }
    }
}

/// A protobuf field key (number and wire type), encoded once.
#[derive(Debug, Clone, Copy)]
struct Key {
    bytes: [u8; 2],
    len: u8,
}

impl Key {
    fn new(tag: u32, wire_type: u32) -> Key {
        let mut encoded = Vec::new();
        put_varint(u64::from(tag << 3 | wire_type), &mut encoded);
        assert!(encoded.len() <= 2, "field numbers stay below 2048");
        let mut bytes = [0; 2];
        bytes[..encoded.len()].copy_from_slice(&encoded);
        Key {
            bytes,
            len: encoded.len() as u8,
        }
    }
}

/// The row being written into room made for it up front: no capacity check per byte, and
/// strings of the line copied sixteen bytes at a time rather than by a call per field (about
/// 4 % less CPU in the transform than pushing onto a `Vec`, measured side by side).
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.at] = b;
        self.at += 1;
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline(always)]
    fn key(&mut self, key: Key) {
        self.byte(key.bytes[0]);
        if key.len == 2 {
            self.byte(key.bytes[1]);
        }
    }

    /// A key and a varint: in one eight-byte store, running past their end into room the
    /// next column writes over, when they fit (lengths and most numbers), rather than a
    /// checked store per byte.
    #[inline(always)]
    fn head(&mut self, key: Key, mut v: u64) {
        if v >= 1 << 42 {
            self.key(key);
            self.varint(v);
            return;
        }
        let mut word = u64::from(u16::from_le_bytes(key.bytes));
        let mut shift = 8 * u32::from(key.len);
        while v >= 0x80 {
            word |= (v & 0x7f | 0x80) << shift;
            v >>= 7;
            shift += 8;
        }
        word |= v << shift;
        self.buf[self.at..self.at + 8].copy_from_slice(&word.to_le_bytes());
        self.at += shift as usize / 8 + 1;
    }

    #[inline(always)]
    fn int(&mut self, key: Key, v: i64) {
        self.head(key, v as u64);
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }

    /// The string `text` (at `line[at..]`) decoded by `encoding`, straight into the row
    /// after room for the longest length it can have (rather than into a buffer and copied);
    /// as logged when decoding leaves it unchanged. `None` if the row has no room left.
    #[inline(always)]
    fn decoded(
        &mut self,
        key: Key,
        line: &[u8],
        at: usize,
        text: &[u8],
        encoding: Encoding,
        scratch: &mut Scratch,
    ) -> Option<Decoded> {
        let room_for_len = varint_len(text.len() as u64);
        let from = self.at + usize::from(key.len) + room_for_len;
        let out = self.buf.get_mut(from..from + text.len() + DECODE_SLACK)?;
        let (decoded, len) = decode_into(text, encoding, out, scratch);
        if decoded == Decoded::Unchanged {
            self.text_of(key, line, at, text.len());
            return Some(decoded);
        }
        let len_len = varint_len(len as u64);
        if len_len < room_for_len {
            // Shorter than a byte of its length prefix: the rare value that crosses 128.
            self.buf
                .copy_within(from..from + len, from - (room_for_len - len_len));
        }
        // Byte by byte: a whole-word store would run over the decoded text.
        self.key(key);
        self.varint(len as u64);
        self.at += len;
        Some(decoded)
    }

    /// The key, length and bytes of `line[at..at + len]`. Short ones are moved sixteen or 32
    /// bytes at once, running past their end into room the next column writes over.
    #[inline(always)]
    fn text_of(&mut self, key: Key, line: &[u8], at: usize, len: usize) {
        self.head(key, len as u64);
        let to = &mut self.buf[self.at..];
        if len <= 16 && at + 16 <= line.len() && to.len() >= 16 {
            to[..16].copy_from_slice(&line[at..at + 16]);
        } else if len <= 32 && at + 32 <= line.len() && to.len() >= 32 {
            to[..32].copy_from_slice(&line[at..at + 32]);
        } else {
            to[..len].copy_from_slice(&line[at..at + len]);
        }
        self.at += len;
    }
}

/// The fields of one line, in order, found as they are asked for from a bitmask of each 64
/// bytes' delimiters ([`Delimiters`]).
struct Fields<'a> {
    line: &'a [u8],
    delimiters: Delimiters<'a>,
    start: usize,
    /// The line's last field has been handed out.
    done: bool,
}

impl<'a> Fields<'a> {
    fn new(line: &'a [u8], delimiter: u8) -> Self {
        Fields {
            line,
            delimiters: Delimiters::new(line, delimiter),
            start: 0,
            done: false,
        }
    }

    /// The next field and where it starts in the line.
    #[inline(always)]
    fn next(&mut self) -> Option<(usize, &'a [u8])> {
        if self.done {
            return None;
        }
        let end = self.delimiters.next().unwrap_or(self.line.len());
        self.done = end == self.line.len();
        let start = self.start;
        self.start = end + 1;
        Some((start, &self.line[start..end]))
    }

    /// After the header's columns: the line ends here, or with one more delimiter (an empty
    /// extra column, normal in CloudFront files).
    fn ends_well(mut self) -> bool {
        if self.done {
            return true;
        }
        let extra = self.next();
        extra.is_some_and(|(_, text)| text.is_empty()) && self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudfront::LineParser;
    use crate::privacy::{IpPrivacy, Privacy};
    use std::io::Read;

    const LEGACY: &str = "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem \
        sc-status cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type \
        x-edge-request-id x-host-header cs-protocol cs-bytes time-taken x-forwarded-for \
        ssl-protocol ssl-cipher x-edge-response-result-type cs-protocol-version fle-status \
        fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type \
        sc-content-type sc-content-len sc-range-start sc-range-end";

    fn encoder() -> RowEncoder {
        RowEncoder::new("s3://bucket/key.gz", 1_700_000_000_000_000)
    }

    /// The general path's row for `line`, framed, if it makes one.
    fn general(
        header: &Header,
        delimiter: u8,
        line: &[u8],
        line_no: u64,
    ) -> Option<(Vec<u8>, Written)> {
        let mut parser = LineParser::with_delimiter(header.clone(), Some(delimiter));
        let row = parser.parse(line).ok()?;
        let mut out = Vec::new();
        encoder().encode(&row, line_no, &mut out);
        let written = Written {
            date: row.date,
            micros: row.timestamp_micros(),
            len: out.len(),
        };
        let mut framed = Vec::new();
        push_framed(&out, &mut framed);
        Some((framed, written))
    }

    /// Runs `line` through the direct encoder after some earlier output: a line it takes must
    /// be the general path's row byte for byte; one it leaves must leave the output as it was.
    /// Returns whether it took the line.
    fn check(direct: &mut DirectEncoder, header: &Header, delimiter: u8, line: &[u8]) -> bool {
        let mut out = b"earlier rows".to_vec();
        let written = direct.encode(line, false, 7, &mut out);
        let line_text = String::from_utf8_lossy(line);
        match written {
            Some(written) => {
                let (row, expected) = general(header, delimiter, line, 7).unwrap_or_else(|| {
                    panic!("the general path refuses a line taken: {line_text}")
                });
                assert_eq!(&out[..12], b"earlier rows");
                assert_eq!(&out[12..], row.as_slice(), "{line_text}");
                assert_eq!(written, expected, "{line_text}");
                true
            }
            None => {
                assert_eq!(out, b"earlier rows", "{line_text}");
                false
            }
        }
    }

    fn legacy() -> (Header, DirectEncoder) {
        let header = Header::parse(LEGACY).unwrap();
        let direct = DirectEncoder::new(&header, b'\t', &encoder()).expect("legacy fields");
        (header, direct)
    }

    /// The corpus's text of `path`, or `None` if it is not a gzip stream.
    fn corpus_text(path: &std::path::Path) -> Option<Vec<u8>> {
        let gz = std::fs::read(path).unwrap();
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut text)
            .ok()?;
        Some(text)
    }

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
    }

    /// The first data line of the corpus's 33-field file, some of its fields replaced.
    fn legacy_line(fields: &[(usize, &str)]) -> Vec<u8> {
        let text = corpus_text(&corpus_dir().join("header-33.log.gz")).expect("gzip");
        let text = String::from_utf8(text).unwrap();
        let first = text
            .lines()
            .find(|l| !l.starts_with('#'))
            .expect("a data line");
        let mut values: Vec<&str> = first.split('\t').collect();
        assert_eq!(values.len(), 33);
        for &(i, value) in fields {
            values[i] = value;
        }
        values.join("\t").into_bytes()
    }

    #[test]
    fn ordinary_lines_are_taken_and_written_as_the_general_path_writes_them() {
        let (header, mut direct) = legacy();
        let taken = [
            legacy_line(&[]),
            // Decoded once, twice (kept raw), not at all (invalid UTF-8 after a layer).
            legacy_line(&[(10, "curl/8.5.0%20(x86_64)")]),
            legacy_line(&[(9, "caf%25C3%25A9"), (10, "Mozilla/5.0%2520(X)")]),
            legacy_line(&[(10, "abc%FFdef"), (7, "/x%25FF")]),
            legacy_line(&[(11, "100%"), (10, "%zz%41")]),
            // Decoded straight into the row: from 128 bytes or more to fewer (a shorter
            // length prefix), to 128 or more, and from under 128.
            legacy_line(&[(10, &"a%2520".repeat(22)), (7, &"/p%2541".repeat(30))]),
            legacy_line(&[(9, &"%2541".repeat(30)), (11, &"q%3D".repeat(40))]),
            // Nulls, empty values, negative and large numbers, long floats.
            legacy_line(&[(3, "-"), (4, ""), (26, "-7"), (18, "10.123456789012345678")]),
            legacy_line(&[(30, "9223372036854775807"), (27, "0.0000001")]),
            // Non-ASCII text, quotes and backslashes in a value kept raw.
            legacy_line(&[(14, "é\"\\"), (9, "%2522q%255C")]),
            // A trailing delimiter and a CR before the line end.
            [legacy_line(&[]), b"\t".to_vec()].concat(),
            [legacy_line(&[]), b"\r".to_vec()].concat(),
        ];
        for line in &taken {
            assert!(
                check(&mut direct, &header, b'\t', line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn unusual_lines_are_left_to_the_general_path() {
        let (header, mut direct) = legacy();
        let left = [
            // Undated, misdated or badly timed: the general path words the error.
            legacy_line(&[(0, "-")]),
            legacy_line(&[(0, "2026-02-30")]),
            legacy_line(&[(1, "24:00:00")]),
            // Values that do not parse.
            legacy_line(&[(3, "12x")]),
            legacy_line(&[(18, "fast")]),
            legacy_line(&[(30, "99999999999999999999")]),
            // Too few and too many columns, two trailing delimiters.
            legacy_line(&[])[..40].to_vec(),
            [legacy_line(&[]), b"\textra".to_vec()].concat(),
            [legacy_line(&[]), b"\t\t".to_vec()].concat(),
            // Invalid UTF-8 anywhere: near the start, and near the end.
            legacy_line(&[(5, "G\u{FFFD}T")])
                .into_iter()
                .map(|b| if b == 0xEF { 0xFF } else { b })
                .collect(),
            legacy_line(&[(29, "text/\u{FFFD}")])
                .into_iter()
                .map(|b| if b == 0xEF { 0xC3 } else { b })
                .collect(),
            Vec::new(),
        ];
        for line in &left {
            assert!(
                !check(&mut direct, &header, b'\t', line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        // A line it left does not disturb the next one.
        assert!(check(&mut direct, &header, b'\t', &legacy_line(&[])));
    }

    #[test]
    fn v2_fields_follow_the_lineage_columns_and_other_delimiters_work() {
        let header = Header::parse(
            "date|time|c-ip|sc-status|cs(User-Agent)|timestamp(ms)|c-country|asn|origin-fbl",
        )
        .unwrap();
        let mut direct = DirectEncoder::new(&header, b'|', &encoder()).expect("in catalog order");
        for line in [
            "2026-01-10|10:15:21|203.0.113.10|200|Mozilla/5.0%2520(X)|1768040121000|KR|4766|0.25",
            "2026-01-10|10:15:21|-|-|-|-|-|-|-",
            "2026-01-10|10:15:21|203.0.113.10|200|a|1768040121000|KR|4766|0.25|",
        ] {
            assert!(check(&mut direct, &header, b'|', line.as_bytes()), "{line}");
        }
        assert!(!check(
            &mut direct,
            &header,
            b'|',
            b"2026-01-10|10:15:21|x|200|y|12.5|KR|1|0"
        ));
    }

    #[test]
    fn headers_it_cannot_write_in_table_order_and_privacy_go_the_general_way() {
        for fields in [
            "time date c-ip",
            "date c-ip time",
            "timestamp(ms) c-ip",
            "date time sc-status c-ip",
            "date time c-ip x-future-field",
        ] {
            let header = Header::parse(fields).unwrap();
            assert!(
                DirectEncoder::new(&header, b' ', &encoder()).is_none(),
                "{fields}"
            );
        }
        let header = Header::parse(LEGACY).unwrap();
        let private = encoder().with_privacy(&Privacy {
            drop_cookies: true,
            ip: IpPrivacy::Keep,
        });
        assert!(DirectEncoder::new(&header, b'\t', &private).is_none());
    }

    #[test]
    fn corpus_lines_are_taken_or_left_and_never_written_differently() {
        let mut taken = 0;
        for entry in std::fs::read_dir(corpus_dir()).unwrap() {
            let Some(text) = corpus_text(&entry.unwrap().path()) else {
                continue;
            };
            let mut current: Option<(Header, DirectEncoder)> = None;
            for line in text.split(|&b| b == b'\n') {
                if let Some(fields) = line.strip_prefix(b"#Fields:") {
                    let header = Header::parse(&String::from_utf8_lossy(fields)).unwrap();
                    current = DirectEncoder::new(&header, b'\t', &encoder()).map(|d| (header, d));
                } else if let Some((header, direct)) = current.as_mut() {
                    taken += usize::from(check(direct, header, b'\t', line));
                }
            }
        }
        assert!(taken >= 20, "only {taken} corpus lines taken");
    }
}
