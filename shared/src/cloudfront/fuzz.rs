//! Bounded fuzzing (proptest) of everything that reads untrusted bytes: the line parser, the
//! stream reader, gunzip and the URL decoder. No input may panic, lines in always equal rows
//! plus rejected lines, and a line never grows the buffer past its cap.
//! `PROPTEST_CASES` raises the number of cases for a longer run.

use proptest::prelude::*;

use super::decode::{decode, Decoded, Scratch};
use super::fields::{Encoding, LOG_FIELDS};
use super::parse::{Header, LineParser};
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

struct Discard;

impl BatchSink for Discard {
    fn batch(&mut self, _table: &str, _date: i32, _rows: Vec<Vec<u8>>) -> Result<(), Stopped> {
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
        let options = TransformOptions { layout: Layout::Sharded { prefix: "t_".into() }, batch_bytes: 1024, max_line_bytes: 256 };
        for input in [&bytes[..], &gz[..]] {
            let _ = transform_gzip(input, &options, &RowEncoder::new("x", 0), &mut Discard);
        }
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
