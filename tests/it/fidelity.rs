//! Log fidelity over the corpus in tests/corpus (made by make_corpus.py): every published
//! `#Fields` version, future fields, concatenated files, line-end quirks, bad lines with their
//! exact quarantine contents, and whole-object failures that commit nothing.

use std::io::Read;
use std::path::PathBuf;

use cf2bq_tests::Harness;
use flate2::read::MultiGzDecoder;
use shared::cloudfront::{Item, LogReader, Value, LEGACY_FIELDS, LOG_FIELDS};
use shared::source::LogObject;
use shared::Outcome;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// Every field of the corpus's first line, decoded: stem and query lose one layer of
/// encoding, User-Agent and Referer two.
const LINE1: [&str; 33] = [
    "2026-01-10",
    "10:15:21",
    "ICN1",
    "512",
    "203.0.113.10",
    "GET",
    "d111111abcdef8.cloudfront.net",
    "/live/a%20b.m3u8",
    "200",
    "https://www.example.com/?q=a b",
    "Mozilla/5.0 (Windows NT 10.0)",
    "channel_id=1001&name=caf%C3%A9",
    "NULL",
    "Hit",
    "AbCdEf1234567890==",
    "www.example.com",
    "https",
    "34",
    "0.002",
    "NULL",
    "TLSv1.2",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "Hit",
    "HTTP/2.0",
    "NULL",
    "NULL",
    "50432",
    "0.001",
    "Hit",
    "application/vnd.apple.mpegurl",
    "512",
    "NULL",
    "NULL",
];
const LINE1_RAW: &str = r#"{"cs_referer":"https://www.example.com/?q=a%2520b","cs_user_agent":"Mozilla/5.0%2520(Windows%2520NT%252010.0)"}"#;
/// The second line: the day before, IPv6, status 000, single-encoded User-Agent, a range.
const LINE2: [&str; 33] = [
    "2026-01-09",
    "23:59:59",
    "SEA19-C1",
    "1048576",
    "2001:db8::8a2e:370:7334",
    "GET",
    "d111111abcdef8.cloudfront.net",
    "/video.mp4",
    "0",
    "NULL",
    "curl/8.5.0 (x86_64)",
    "NULL",
    "session=abc",
    "Error",
    "XyZ0987654321==",
    "www.example.com",
    "http",
    "120",
    "10.123",
    "198.51.100.7",
    "NULL",
    "NULL",
    "Error",
    "HTTP/1.1",
    "NULL",
    "NULL",
    "443",
    "9.999",
    "ClientCommError",
    "video/mp4",
    "1048576",
    "0",
    "1023",
];

/// A parsed row as text per field, plus its extra and raw JSON.
#[derive(Debug, PartialEq)]
struct Parsed {
    line_no: u64,
    values: Vec<String>,
    extra: Option<String>,
    raw: Option<String>,
}

#[derive(Debug, PartialEq)]
struct Rejected {
    line_no: u64,
    code: &'static str,
    reason: String,
    raw: Vec<u8>,
}

fn read(name: &str) -> (Vec<Parsed>, Vec<Rejected>, shared::cloudfront::ReadStats) {
    let file = std::fs::File::open(corpus(name)).unwrap();
    let mut reader = LogReader::new(std::io::BufReader::new(MultiGzDecoder::new(file)), 65536);
    let (mut rows, mut rejected) = (Vec::new(), Vec::new());
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            Item::Row { line_no, row } => {
                // Types, not just text: numbers are numbers, dates are dates.
                for (id, field) in LOG_FIELDS.iter().enumerate() {
                    let ok = match (field.kind, row.get(id)) {
                        (_, Value::Null) => true,
                        (shared::cloudfront::FieldKind::Int, v) => matches!(v, Value::Int(_)),
                        (shared::cloudfront::FieldKind::Float, v) => matches!(v, Value::Float(_)),
                        (shared::cloudfront::FieldKind::Date, v) => matches!(v, Value::Date(_)),
                        (shared::cloudfront::FieldKind::Time, v) => matches!(v, Value::Time(..)),
                        (_, v) => matches!(v, Value::Text(_)),
                    };
                    assert!(
                        ok,
                        "{name} line {line_no}: {} has the wrong type: {:?}",
                        field.log_name,
                        row.get(id)
                    );
                }
                // Legacy files carry none of the fields standard logging v2 added, except
                // header-35-future.log.gz (checked on its own).
                if name != "header-35-future.log.gz" {
                    for (id, field) in LOG_FIELDS.iter().enumerate().skip(LEGACY_FIELDS) {
                        assert_eq!(row.get(id), Value::Null, "{name}: {}", field.log_name);
                    }
                }
                rows.push(Parsed {
                    line_no,
                    values: (0..LEGACY_FIELDS)
                        .map(|id| row.get(id).to_string())
                        .collect(),
                    extra: row.extra_fields().map(str::to_string),
                    raw: row.raw_fields().map(str::to_string),
                })
            }
            Item::Rejected(r) => rejected.push(Rejected {
                line_no: r.line_no,
                code: r.error.code(),
                reason: r.error.to_string(),
                raw: r.raw.to_vec(),
            }),
        }
    }
    let stats = reader.stats();
    assert_eq!(
        stats.data_lines,
        stats.rows + stats.rejected,
        "{name}: lines in = rows + rejected"
    );
    (rows, rejected, stats)
}

/// The expected row for `line` logged under an `n`-field header.
fn expected(line: &[&str; 33], n: usize) -> Vec<String> {
    (0..33)
        .map(|i| {
            if i < n {
                line[i].to_string()
            } else {
                "NULL".to_string()
            }
        })
        .collect()
}

#[test]
fn every_published_header_version_maps_by_name() {
    for n in [12, 18, 19, 24, 26, 33] {
        let (rows, rejected, _) = read(&format!("header-{n:02}.log.gz"));
        assert!(rejected.is_empty(), "header {n}: {rejected:?}");
        assert_eq!(
            rows,
            vec![
                Parsed {
                    line_no: 3,
                    values: expected(&LINE1, n),
                    extra: None,
                    raw: Some(LINE1_RAW.into())
                },
                Parsed {
                    line_no: 4,
                    values: expected(&LINE2, n),
                    extra: None,
                    raw: None
                },
            ],
            "header with {n} fields"
        );
    }
}

/// `c-country` and `asn` were unknown fields of a future version, kept in `extra_fields`;
/// standard logging v2 made them known, so they are typed columns now.
#[test]
fn fields_once_unknown_are_typed_columns_now() {
    let (rows, _, _) = read("header-35-future.log.gz");
    assert_eq!(rows[0].values, expected(&LINE1, 33));
    assert_eq!(rows[0].extra, None);
    assert_eq!(rows[1].extra, None);
    let file = std::fs::File::open(corpus("header-35-future.log.gz")).unwrap();
    let mut reader = LogReader::new(std::io::BufReader::new(MultiGzDecoder::new(file)), 65536);
    let (country, asn) = (
        shared::cloudfront::fields::field_id("c-country").unwrap(),
        shared::cloudfront::fields::field_id("asn").unwrap(),
    );
    let Some(Item::Row { row, .. }) = reader.next_item().unwrap() else {
        panic!("a row")
    };
    assert_eq!(
        (row.get(country), row.get(asn)),
        (Value::Text("JP"), Value::Int(2516))
    );
    let Some(Item::Row { row, .. }) = reader.next_item().unwrap() else {
        panic!("a row")
    };
    assert_eq!((row.get(country), row.get(asn)), (Value::Null, Value::Null));
}

/// Fields this version does not know are kept, not lost.
#[test]
fn unknown_future_fields_are_kept_not_lost() {
    let text = "#Fields: date time sc-status x-future-one x-future-two\n\
         2026-01-10\t10:15:21\t200\tJP\t-\n";
    let mut reader = LogReader::new(text.as_bytes(), 65536);
    let Some(Item::Row { row, .. }) = reader.next_item().unwrap() else {
        panic!("a row")
    };
    assert_eq!(
        row.extra_fields(),
        Some(r#"{"x-future-one":"JP","x-future-two":null}"#)
    );
}

#[test]
fn a_second_fields_line_switches_the_mapping() {
    let (rows, rejected, _) = read("two-headers.log.gz");
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(rows[0].values, expected(&LINE1, 26));
    assert_eq!(
        (rows[1].line_no, rows[1].values.clone()),
        (6, expected(&LINE2, 33))
    );
}

#[test]
fn crlf_trailing_tabs_and_gzip_members_are_tolerated() {
    for name in ["crlf-trailing-tab.log.gz", "multi-member.log.gz"] {
        let (rows, rejected, stats) = read(name);
        assert!(rejected.is_empty(), "{name}: {rejected:?}");
        assert_eq!(
            rows.iter().map(|r| r.values.clone()).collect::<Vec<_>>(),
            vec![expected(&LINE1, 33), expected(&LINE2, 33)],
            "{name}"
        );
        assert_eq!(stats.data_lines, 2);
    }
}

/// The expected rejection reason, given the bad line's bytes.
type ReasonOf = fn(&[u8]) -> String;

#[test]
fn each_bad_line_is_rejected_with_its_reason_and_the_rest_loads() {
    // Reasons of the cases whose text depends on the bad line's own bytes are built from it.
    let cases: [(&str, &str, ReasonOf); 6] = [
        ("bad-column-count.log.gz", "column_count", |_| {
            "line has 20 columns, the #Fields header has 33".into()
        }),
        ("bad-number.log.gz", "bad_value", |_| {
            "sc-bytes: `12x` is not a valid integer".into()
        }),
        ("bad-date.log.gz", "bad_value", |_| {
            "date: `2026-02-30` is not a valid date (YYYY-MM-DD)".into()
        }),
        ("bad-time.log.gz", "bad_value", |_| {
            "time: `24:00:00` is not a valid time (HH:MM:SS)".into()
        }),
        ("bad-utf8.log.gz", "invalid_utf8", |line| {
            let at = line.iter().position(|b| *b == 0xE9).unwrap();
            format!("line is not valid UTF-8 (first bad byte at offset {at})")
        }),
        ("bad-too-long.log.gz", "too_long", |line| {
            format!(
                "line is {} bytes long, over the 65536-byte limit",
                line.len()
            )
        }),
    ];
    for (name, code, reason) in cases {
        let mut text = Vec::new();
        MultiGzDecoder::new(std::fs::File::open(corpus(name)).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        let bad_line = text.split(|b| *b == b'\n').nth(3).unwrap();

        let (rows, rejected, stats) = read(name);
        assert_eq!(
            rows.iter().map(|r| r.line_no).collect::<Vec<_>>(),
            vec![3, 5],
            "{name}"
        );
        assert_eq!(
            rows[1].values,
            expected(&LINE2, 33),
            "{name}: the line after the bad one"
        );
        assert_eq!(rejected.len(), 1, "{name}");
        let r = &rejected[0];
        assert_eq!(
            (r.line_no, r.code, r.reason.clone()),
            (4, code, reason(bad_line)),
            "{name}"
        );
        // The raw bytes are the line as read (capped at the limit).
        assert_eq!(r.raw, &bad_line[..bad_line.len().min(65536)], "{name}");
        assert_eq!(
            (stats.data_lines, stats.rows, stats.rejected),
            (3, 2, 1),
            "{name}"
        );
    }
}

/// Rejected lines land in the S3 quarantine with object, line, reason and exact bytes, while
/// the good lines load.
#[tokio::test]
async fn quarantined_lines_are_written_to_s3_with_their_reason() {
    let h0 = Harness::new("quarantine_bucket").await;
    let bucket = h0.bucket("logs").await;
    let h = Harness::with(
        "quarantine",
        &[("CF2BQ_QUARANTINE", &format!("s3://{bucket}/quarantine/"))],
    )
    .await;
    let key = "cf/E2QWRUHAPOMQZL.2026-01-10-10.badnum01.gz";
    h.put(
        &bucket,
        key,
        std::fs::read(corpus("bad-number.log.gz")).unwrap(),
    )
    .await;
    let report = h
        .ingestor()
        .await
        .ingest(&LogObject::parse(&format!("s3://{bucket}/{key}")))
        .await
        .unwrap();
    assert_eq!((report.data_lines, report.rows, report.rejected), (3, 2, 1));
    assert_eq!(h.table_counts().await.values().sum::<u64>(), 2);

    assert_eq!(report.quarantine.len(), 1, "{:?}", report.quarantine);
    let part_key = report.quarantine[0]
        .strip_prefix(&format!("s3://{bucket}/"))
        .unwrap()
        .to_string();
    assert!(
        part_key.starts_with(&format!("quarantine/{bucket}/{key}.")),
        "{part_key}"
    );
    let body =
        h.s3.get_object()
            .bucket(&bucket)
            .key(&part_key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
    let lines: Vec<serde_json::Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let mut text = Vec::new();
    MultiGzDecoder::new(std::fs::File::open(corpus("bad-number.log.gz")).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    let raw = String::from_utf8(text.split(|b| *b == b'\n').nth(3).unwrap().to_vec()).unwrap();
    assert!(raw.contains("\t12x\t"));
    assert_eq!(
        lines,
        vec![serde_json::json!({
            "object": format!("s3://{bucket}/{key}"),
            "line": 4,
            "reason_code": "bad_value",
            "reason": "sc-bytes: `12x` is not a valid integer",
            "raw": raw,
            "raw_base64": base64_of(raw.as_bytes()),
        })]
    );
}

fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Objects that cannot be read as a whole fail with an error naming the object, and nothing
/// of them is committed; a zero-byte object is acknowledged with nothing to do.
#[tokio::test]
async fn whole_object_failures_name_the_object_and_commit_nothing() {
    let h = Harness::new("whole_object").await;
    let ingestor = h.ingestor().await;
    let cases = [
        ("not-gzip.log.gz", "invalid gzip header"),
        ("truncated.log.gz", "reading the decompressed stream"),
        ("corrupt.log.gz", "reading the decompressed stream"),
        (
            "no-fields-header.log.gz",
            "line 2 is data but no #Fields header came before it",
        ),
    ];
    for (name, message) in cases {
        let path = corpus(name);
        let error = ingestor
            .ingest(&LogObject::File(path.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(path.to_str().unwrap()),
            "{name}: error does not name the object: {error}"
        );
        assert!(error.contains(message), "{name}: {error}");
    }
    assert!(
        h.table_counts().await.is_empty(),
        "a failed object committed rows"
    );

    let report = ingestor
        .ingest(&LogObject::File(corpus("empty.log.gz")))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Empty);
}

/// With a BigQuery quarantine table, rejected lines are rows of it, committed with the
/// object's log rows: exactly once, whatever the redeliveries.
#[tokio::test]
async fn quarantined_lines_can_go_to_a_bigquery_table_exactly_once() {
    let h = Harness::with(
        "quarantine_table",
        &[("CF2BQ_QUARANTINE", "bq:cf2bq_quarantine")],
    )
    .await;
    let bucket = h.bucket("logs").await;
    let key = "cf/E2QWRUHAPOMQZL.2026-01-10-10.badtime1.gz";
    h.put(
        &bucket,
        key,
        std::fs::read(corpus("bad-time.log.gz")).unwrap(),
    )
    .await;
    let uri = format!("s3://{bucket}/{key}");
    let ingestor = h.ingestor().await;
    let report = ingestor.ingest(&LogObject::parse(&uri)).await.unwrap();
    assert_eq!((report.data_lines, report.rows, report.rejected), (3, 2, 1));
    assert_eq!(
        report.quarantine,
        vec!["bq:cf2bq_quarantine (1 rows)".to_string()]
    );
    assert!(
        !report.tables.contains_key("cf2bq_quarantine"),
        "the report lists log tables only"
    );

    let again = ingestor.ingest(&LogObject::parse(&uri)).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyDone);
    let rows = h
        .query("SELECT source_object, source_line, reason_code, reason, SUBSTR(raw, 1, 20) FROM `{ds}.cf2bq_quarantine`")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            Some(uri.clone()),
            Some("4".into()),
            Some("bad_value".into()),
            Some("time: `24:00:00` is not a valid time (HH:MM:SS)".into()),
            Some("2026-01-10\t24:00:00\t".into()),
        ]]
    );
    assert_eq!(
        h.count("cloudfront_20260110").await + h.count("cloudfront_20260109").await,
        2
    );
}
