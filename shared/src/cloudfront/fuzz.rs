//! Bounded fuzzing (proptest) of everything that reads untrusted bytes: the line parser, the
//! stream reader, gunzip and the URL decoder. No input may panic, lines in always equal rows
//! plus rejected lines, and a line never grows the buffer past its cap. Typed lines — each
//! cell drawn for its own column's kind, any field subset in any order, any delimiter, as
//! W3C and as JSON — must parse, and their decoded and encoded values must be the ones drawn.
//! `PROPTEST_CASES` raises the number of cases for a longer run.

use proptest::prelude::*;

use super::decode::{decode, Decoded, Scratch};
use super::fields::{Encoding, FieldId, FieldKind, DATE, LOG_FIELDS, TIME, TIMESTAMP};
use super::json::JsonParser;
use super::parse::{days_from_civil, parse_float, Header, LineParser, Row, Value};
use super::reader::{Item, LogReader};
use crate::bigquery::encode::RowEncoder;
use crate::route::Layout;
use crate::transform::{transform_gzip, BatchSink, RejectedLine, Stopped, TransformOptions};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    }
}

/// A `#Fields` list: known names in any order, some unknown ones, date and time always there.
fn header() -> impl Strategy<Value = String> {
    (
        proptest::sample::subsequence((2..LOG_FIELDS.len()).collect::<Vec<_>>(), 0..31),
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(ids, unknown, swap)| {
            let mut names: Vec<String> = vec!["date".into(), "time".into()];
            names.extend(ids.into_iter().map(|i| LOG_FIELDS[i].log_name.to_string()));
            names.extend((0..unknown).map(|i| format!("x-future-{i}")));
            if swap {
                names.reverse();
            }
            names.join(" ")
        })
}

/// Field-like text: mostly plausible tokens, sometimes arbitrary bytes.
fn cell() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"-".to_vec()),
        Just(b"2026-01-10".to_vec()),
        Just(b"23:59:59".to_vec()),
        "[0-9]{1,20}".prop_map(String::into_bytes),
        "-?[0-9]{0,5}\\.[0-9]{0,4}".prop_map(String::into_bytes),
        "[%0-9A-Fa-fz ]{0,12}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(cell(), 0..40).prop_map(|cells| cells.join(&b'\t'))
}

/// What a typed cell must decode to.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Date(i32),
    Time(u32),
    Timestamp(i64),
}

/// A cell of `kind`: its logged text and the value it must decode to. Text never holds a
/// delimiter, so any delimiter can join the cells.
fn typed_cell(kind: FieldKind, nullable: bool) -> BoxedStrategy<(String, Expected)> {
    let value: BoxedStrategy<(String, Expected)> = match kind {
        FieldKind::Date => (1970i32..2100, 1u32..=12, 1u32..=28)
            .prop_map(|(y, m, d)| {
                (
                    format!("{y:04}-{m:02}-{d:02}"),
                    Expected::Date(days_from_civil(y, m, d)),
                )
            })
            .boxed(),
        FieldKind::Time => (0u32..24, 0u32..60, 0u32..60)
            .prop_map(|(h, m, s)| {
                (
                    format!("{h:02}:{m:02}:{s:02}"),
                    Expected::Time(h * 3600 + m * 60 + s),
                )
            })
            .boxed(),
        FieldKind::Int => any::<i64>()
            .prop_map(|v| (v.to_string(), Expected::Int(v)))
            .boxed(),
        FieldKind::Float => (0u32..1_000_000, 0u32..1000)
            .prop_map(|(whole, ms)| {
                let text = format!("{whole}.{ms:03}");
                let value = text.parse().unwrap();
                (text, Expected::Float(value))
            })
            .boxed(),
        FieldKind::Text => "[A-Za-z0-9._:/=()*-]{1,24}"
            .prop_filter("`-` is null", |t| t != "-")
            .prop_map(|t| (t.clone(), Expected::Text(t)))
            .boxed(),
        // Words joined by one escaped space: one layer is removed, whatever the rule.
        FieldKind::Encoded(_) => proptest::collection::vec("[A-Za-z0-9./=&]{1,8}", 1..4)
            .prop_map(|words| (words.join("%20"), Expected::Text(words.join(" "))))
            .boxed(),
        FieldKind::EpochMillis => (0i64..4_102_444_800_000)
            .prop_map(|ms| (ms.to_string(), Expected::Timestamp(ms * 1000)))
            .boxed(),
        FieldKind::EpochSeconds => (0i64..4_102_444_800, 0i64..1000)
            .prop_map(|(s, ms)| {
                (
                    format!("{s}.{ms:03}"),
                    Expected::Timestamp(s * 1_000_000 + ms * 1000),
                )
            })
            .boxed(),
    };
    if nullable {
        prop_oneof![1 => Just(("-".to_string(), Expected::Null)), 6 => value].boxed()
    } else {
        value
    }
}

/// A typed line: fields (a random subset, shuffled, always dated by date + time or by
/// `timestamp(ms)`), each with its text and expected value, and a delimiter.
fn typed_line() -> impl Strategy<Value = (Vec<(FieldId, String, Expected)>, u8)> {
    let others: Vec<FieldId> = (0..LOG_FIELDS.len())
        .filter(|id| ![DATE, TIME, TIMESTAMP].contains(id))
        .collect();
    (
        proptest::sample::subsequence(others, 0..12),
        0usize..3,
        proptest::sample::select(vec![b'\t', b' ', b',', b'|', b';']),
    )
        .prop_flat_map(|(mut ids, dating, delimiter)| {
            // 0: date and time; 1: timestamp(ms); 2: all three.
            if dating != 1 {
                ids.extend([DATE, TIME]);
            }
            if dating != 0 {
                ids.push(TIMESTAMP);
            }
            let cells: Vec<_> = ids
                .iter()
                .map(|&id| {
                    // The fields that date a row are never null here.
                    let nullable = ![DATE, TIME, TIMESTAMP].contains(&id);
                    typed_cell(LOG_FIELDS[id].kind, nullable).prop_map(move |(t, e)| (id, t, e))
                })
                .collect();
            (
                Just(cells).prop_flat_map(|c| c).prop_shuffle(),
                Just(delimiter),
            )
        })
}

/// Checks every drawn value against the parsed row, and that the row's date and time are
/// the drawn date and time, or else the timestamp's.
fn check_row(row: &Row<'_>, cells: &[(FieldId, String, Expected)]) -> Result<(), TestCaseError> {
    for (id, text, expected) in cells {
        let got = row.get(*id);
        let ok = match (expected, got) {
            (Expected::Null, Value::Null) => true,
            (Expected::Text(e), Value::Text(g)) => e == g,
            (Expected::Int(e), Value::Int(g)) => *e == g,
            (Expected::Float(e), Value::Float(g)) => *e == g,
            (Expected::Date(e), Value::Date(g)) => *e == g,
            (Expected::Time(e), Value::Time(g, t)) => *e == g && t == text,
            (Expected::Timestamp(e), Value::Timestamp(g)) => *e == g,
            _ => false,
        };
        prop_assert!(
            ok,
            "{}: `{text}` gave {got:?}, expected {expected:?}",
            LOG_FIELDS[*id].log_name
        );
    }
    let find = |wanted| cells.iter().find(|(id, ..)| *id == wanted).map(|c| &c.2);
    let (date, seconds, micros) = match (find(DATE), find(TIME), find(TIMESTAMP)) {
        (Some(Expected::Date(d)), Some(Expected::Time(s)), _) => {
            (*d, *s, (i64::from(*d) * 86_400 + i64::from(*s)) * 1_000_000)
        }
        (_, _, Some(Expected::Timestamp(us))) => (
            us.div_euclid(86_400_000_000) as i32,
            (us.div_euclid(1_000_000).rem_euclid(86_400)) as u32,
            *us,
        ),
        other => panic!("undated cells {other:?}"),
    };
    prop_assert_eq!(
        (row.date, row.seconds, row.timestamp_micros()),
        (date, seconds, micros)
    );
    prop_assert_eq!(row.get(DATE), Value::Date(date));
    Ok(())
}

/// The protobuf fields of an encoded row: tag → varint value or bytes.
fn proto_fields(mut bytes: &[u8]) -> std::collections::BTreeMap<u32, Result<u64, Vec<u8>>> {
    use prost::encoding::{decode_varint, WireType};
    let mut fields = std::collections::BTreeMap::new();
    while !bytes.is_empty() {
        let key = decode_varint(&mut bytes).unwrap();
        let (tag, wire) = ((key >> 3) as u32, WireType::try_from(key & 7).unwrap());
        let value = match wire {
            WireType::Varint => Ok(decode_varint(&mut bytes).unwrap()),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut bytes).unwrap() as usize;
                let (v, rest) = bytes.split_at(len);
                bytes = rest;
                Err(v.to_vec())
            }
            WireType::SixtyFourBit => {
                let (v, rest) = bytes.split_at(8);
                bytes = rest;
                Ok(u64::from_le_bytes(v.try_into().unwrap()))
            }
            other => panic!("unexpected wire type {other:?}"),
        };
        fields.insert(tag, value);
    }
    fields
}

/// The encoded row holds exactly the drawn values (by column), the request time and lineage.
fn check_encoded(
    row: &Row<'_>,
    cells: &[(FieldId, String, Expected)],
) -> Result<(), TestCaseError> {
    use crate::bigquery::schema::{columns, Source};
    let mut out = Vec::new();
    RowEncoder::new("s3://b/k", 7).encode(row, 42, &mut out);
    let fields = proto_fields(&out);
    for (i, column) in columns().iter().enumerate() {
        let tag = i as u32 + 1;
        let got = fields.get(&tag);
        match column.source {
            Source::Field(id) => {
                let expected = match cells.iter().find(|c| c.0 == id).map(|c| &c.2) {
                    // log_date and log_time come from the timestamp when not drawn.
                    None if id == DATE || id == TIME => continue,
                    None | Some(Expected::Null) => None,
                    Some(Expected::Text(t)) => Some(Err(t.as_bytes().to_vec())),
                    Some(Expected::Int(v)) => Some(Ok(*v as u64)),
                    Some(Expected::Float(v)) => Some(Ok(v.to_bits())),
                    Some(Expected::Date(d)) => Some(Ok(i64::from(*d) as u64)),
                    Some(Expected::Time(_)) => {
                        let text = &cells.iter().find(|c| c.0 == id).unwrap().1;
                        Some(Err(text.as_bytes().to_vec()))
                    }
                    Some(Expected::Timestamp(us)) => Some(Ok(*us as u64)),
                };
                prop_assert_eq!(got, expected.as_ref(), "column {}", column.name);
            }
            Source::RequestTime => {
                prop_assert_eq!(got, Some(&Ok(row.timestamp_micros() as u64)))
            }
            Source::SourceLine => prop_assert_eq!(got, Some(&Ok(42))),
            Source::IngestTime => prop_assert_eq!(got, Some(&Ok(7))),
            Source::SourceObject => prop_assert_eq!(got, Some(&Err(b"s3://b/k".to_vec()))),
            Source::ExtraFields | Source::RawFields => {}
        }
    }
    Ok(())
}

struct Discard;

impl BatchSink for Discard {
    fn batch(
        &mut self,
        _table: &str,
        _date: i32,
        _rows: crate::bigquery::rows::Rows,
    ) -> Result<(), Stopped> {
        Ok(())
    }
    fn rejected(&mut self, _line: RejectedLine) -> Result<(), Stopped> {
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parsing_any_line_never_panics(fields in header(), line in line()) {
        let header = Header::parse(&fields).unwrap();
        let mut parser = LineParser::new(header);
        if let Ok(row) = parser.parse(&line) {
            for id in 0..LOG_FIELDS.len() {
                let _ = row.get(id).to_string();
            }
            let mut out = Vec::new();
            RowEncoder::new("s3://b/k", 0).encode(&row, 1, &mut out);
            prop_assert!(!out.is_empty());
        }
    }

    #[test]
    fn typed_w3c_lines_parse_and_encode_to_the_values_drawn((cells, delimiter) in typed_line()) {
        let names: Vec<&str> = cells.iter().map(|(id, ..)| LOG_FIELDS[*id].log_name).collect();
        let line: Vec<&str> = cells.iter().map(|(_, text, _)| text.as_str()).collect();
        let line = line.join(&(delimiter as char).to_string());
        let mut parser = LineParser::new(Header::parse(&names.join(" ")).unwrap());
        let row = parser.parse(line.as_bytes());
        prop_assert!(row.is_ok(), "{line:?}: {row:?}");
        let row = row.unwrap();
        check_row(&row, &cells)?;
        check_encoded(&row, &cells)?;
    }

    #[test]
    fn typed_json_lines_parse_and_encode_to_the_values_drawn((cells, _) in typed_line(), underscored in any::<bool>()) {
        // Names hyphenated or as columns; numbers as JSON numbers or strings.
        let mut object = serde_json::Map::new();
        for (id, text, expected) in &cells {
            let field = &LOG_FIELDS[*id];
            let name = if underscored { super::fields::underscored(field.log_name) } else { field.log_name.to_string() };
            let value = match expected {
                Expected::Null => serde_json::Value::Null,
                Expected::Int(v) if underscored => serde_json::json!(v),
                _ => serde_json::Value::String(text.clone()),
            };
            object.insert(name, value);
        }
        let line = serde_json::Value::Object(object).to_string();
        let mut parser = JsonParser::default();
        let row = parser.parse(line.as_bytes());
        prop_assert!(row.is_ok(), "{line}: {row:?}");
        let row = row.unwrap();
        check_row(&row, &cells)?;
        check_encoded(&row, &cells)?;
    }

    #[test]
    fn any_stream_is_read_with_every_line_accounted_for(
        fields in header(),
        lines in proptest::collection::vec(prop_oneof![line(), proptest::collection::vec(any::<u8>(), 0..300)], 0..30),
        cap in 8usize..200,
    ) {
        let mut text = format!("#Version: 1.0\n#Fields: {fields}\n").into_bytes();
        for l in &lines {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        let mut reader = LogReader::new(&text[..], cap);
        let mut seen = 0u64;
        loop {
            match reader.next_item() {
                Ok(Some(Item::Rejected(r))) => {
                    prop_assert!(r.raw.len() <= cap);
                    seen += 1;
                }
                Ok(Some(Item::Row { .. })) => seen += 1,
                Ok(None) => break,
                Err(_) => break, // a malformed #Fields line stops the object: allowed
            }
        }
        let stats = reader.stats();
        prop_assert_eq!(stats.data_lines, stats.rows + stats.rejected);
        prop_assert_eq!(seen, stats.data_lines);
    }

    #[test]
    fn gunzip_of_any_bytes_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2000), flip in any::<usize>()) {
        // Arbitrary bytes, and a valid gzip stream with one byte flipped.
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            e.write_all(b"#Fields: date time\n2026-01-10\t10:00:00\n").unwrap();
            e.finish().unwrap();
        }
        let at = flip % gz.len();
        gz[at] ^= 0x41;
        let options = TransformOptions { layout: Layout::Sharded { prefix: "t_".into() }, batch_bytes: 1024, max_line_bytes: 256, plain_fields: None };
        for input in [&bytes[..], &gz[..]] {
            let _ = transform_gzip(input, &options, &RowEncoder::new("x", 0), &mut Discard);
        }
    }

    #[test]
    fn decimals_parse_bit_for_bit_like_the_standard_library(text in "-?[0-9]{0,17}(\\.[0-9]{0,17})?|[0-9.]{0,6}") {
        let expected = text.parse::<f64>().ok().filter(|v| v.is_finite());
        prop_assert_eq!(parse_float(&text).map(f64::to_bits), expected.map(f64::to_bits), "{}", text);
    }

    #[test]
    fn decoding_any_text_never_panics_and_keeps_utf8(value in "\\PC{0,40}|[%0-9a-fA-F ]{0,40}", two in any::<bool>()) {
        let mut out = String::new();
        let encoding = if two { Encoding::UpToTwoLayers } else { Encoding::OneLayer };
        match decode(&value, encoding, &mut out, &mut Scratch::default()) {
            Decoded::Unchanged => prop_assert!(out.is_empty()),
            Decoded::OneLayer | Decoded::TwoLayers => prop_assert!(out.len() <= value.len()),
        }
    }
}
