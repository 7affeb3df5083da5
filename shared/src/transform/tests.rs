//! The parallel transform against the one-line-at-a-time one: the same sink calls (rows with
//! their line numbers, rejected lines, batch boundaries, in the same order), the same stats,
//! the same error, for any number of workers and chunk sizes down to a byte — so chunk
//! boundaries fall inside lines, inside `\r\n`, inside `#Fields` lines and long lines.

use std::io::Write;

use proptest::prelude::*;

use super::parallel::transform_gzip_on;
use super::*;
use crate::generate::{write_object, GenOptions};

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Batch {
        table: String,
        date: i32,
        rows: Vec<Vec<u8>>,
    },
    Rejected(RejectedLine),
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
}

impl BatchSink for Recorder {
    fn batch(&mut self, table: &str, date: i32, rows: Rows) -> Result<(), Stopped> {
        self.calls.push(Call::Batch {
            table: table.to_string(),
            date,
            rows: rows.iter().map(<[u8]>::to_vec).collect(),
        });
        Ok(())
    }
    fn rejected(&mut self, line: RejectedLine) -> Result<(), Stopped> {
        self.calls.push(Call::Rejected(line));
        Ok(())
    }
}

type Outcome = (Vec<Call>, Result<TransformStats, String>);

fn options(max_line_bytes: usize) -> TransformOptions {
    TransformOptions {
        layout: Layout::Sharded {
            prefix: "t_".into(),
        },
        // Small batches: their boundaries are compared too.
        batch_bytes: 4096,
        max_line_bytes,
        plain_fields: None,
    }
}

fn encoder() -> RowEncoder {
    RowEncoder::new("s3://bucket/key.gz", 1_700_000_000_000_000)
}

fn sequential(gz: &[u8], options: &TransformOptions) -> Outcome {
    let mut sink = Recorder::default();
    let result = transform_gzip(gz, options, &encoder(), &mut sink).map_err(|e| e.to_string());
    (sink.calls, result)
}

fn parallel(gz: &[u8], options: &TransformOptions, workers: usize, chunk: usize) -> Outcome {
    let mut sink = Recorder::default();
    let result = transform_gzip_on(gz, options, workers, chunk, &encoder(), &mut sink)
        .map_err(|e| e.to_string());
    (sink.calls, result)
}

/// Asserts the parallel path gives exactly the sequential outcome for every combination.
fn assert_same(name: &str, gz: &[u8], caps: &[usize], chunks: &[usize]) -> Outcome {
    let options: Vec<_> = caps.iter().map(|&cap| options(cap)).collect();
    assert_same_with(name, gz, &options, chunks)
}

fn assert_same_with(
    name: &str,
    gz: &[u8],
    options: &[TransformOptions],
    chunks: &[usize],
) -> Outcome {
    let mut first = None;
    for options in options {
        let cap = options.max_line_bytes;
        let expected = sequential(gz, options);
        for &chunk in chunks {
            for workers in [1, 2, 3] {
                let got = parallel(gz, options, workers, chunk);
                assert!(
                    got == expected,
                    "{name}: cap {cap}, chunk {chunk}, {workers} workers: {:?} ≠ {:?} ({} vs {} calls)",
                    got.1,
                    expected.1,
                    got.0.len(),
                    expected.0.len(),
                );
            }
        }
        first.get_or_insert(expected);
    }
    first.expect("at least one cap")
}

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text).unwrap();
    e.finish().unwrap()
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(gz), &mut text).unwrap();
    text
}

fn generated(seed: u64, lines: u64) -> Vec<u8> {
    let mut gz = Vec::new();
    let options = GenOptions {
        seed,
        lines_per_object: lines,
        late_percent: 20,
        ..GenOptions::default()
    };
    write_object(&options, 0, &mut gz).unwrap();
    gunzip(&gz)
}

const SMALL_CHUNKS: [usize; 10] = [1, 2, 3, 7, 64, 255, 256, 257, 1000, 4096];
const CHUNKS: [usize; 7] = [7, 100, 255, 257, 1000, 4096, 65536];

#[test]
fn every_corpus_file_gives_the_same_output_in_parallel() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus at {}", dir.display());
    let (mut rows, mut failures) = (0, 0);
    for path in files {
        let gz = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let (_, result) = assert_same(&name, &gz, &[64 * 1024, 100], &SMALL_CHUNKS);
        match result {
            Ok(stats) => rows += stats.read.rows,
            Err(_) => failures += 1,
        }
    }
    // The corpus holds good files and ones that stop (corrupt, truncated, no header, …).
    assert!(rows > 0 && failures > 0, "{rows} rows, {failures} failures");
}

/// Generated rows, then a `#Fields` switch to 12 fields mid-file with blank, CRLF, comment,
/// bad, not UTF-8 and over-long lines, then back to 33 fields in a second gzip member.
fn mixed_text() -> (Vec<u8>, Vec<u8>) {
    let mut first = generated(7, 300);
    first.extend_from_slice(b"\n#Version: 1.0\n");
    first.extend_from_slice(
        b"#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem \
          sc-status cs(Referer) cs(User-Agent) cs-uri-query\r\n",
    );
    for i in 0..200 {
        let line = format!(
            "2026-11-{:02}\t{:02}:{:02}:07\tFRA56-C1\t{}\t192.0.2.{}\tGET\td1.cloudfront.net\t\
             /a%2520b/{i}\t200\t-\tMozilla/5.0%2520(X11)\tq={i}\n",
            19 + i % 3,
            i % 24,
            i % 60,
            1000 + i,
            i % 250,
        );
        first.extend_from_slice(line.as_bytes());
        match i % 17 {
            0 => first.extend_from_slice(b"\n\r\n"),
            3 => first.extend_from_slice(b"# a comment\n"),
            5 => first.extend_from_slice(b"2026-11-20\t10:00:00\ttoo\tfew\n"),
            8 => {
                first.extend_from_slice(b"2026-11-20\t10:00:00\t");
                first.extend(std::iter::repeat_n(b'x', 300 + i));
                first.extend_from_slice(b"\r\n");
            }
            11 => first
                .extend_from_slice(b"2026-11-20\t25:00:00\tFRA\t1\tc\tGET\th\t/\t200\t-\t-\t-\r\n"),
            // Well formed but for one byte, among valid lines: the chunk's text is not UTF-8.
            13 => first.extend_from_slice(
                b"2026-11-20\t10:00:00\tFRA\t1\tc\tGET\th\t/\xff\t200\t-\t-\t-\n",
            ),
            _ => {}
        }
    }
    let second = generated(8, 300);
    (first, second)
}

#[test]
fn fields_switches_blank_crlf_bad_and_long_lines_give_the_same_output_in_parallel() {
    let (first, second) = mixed_text();
    let mut gz = gzip(&first);
    gz.extend(gzip(&second));
    let (calls, result) = assert_same("mixed", &gz, &[64 * 1024, 256], &CHUNKS);
    let stats = result.expect("a good stream");
    assert_eq!(stats.read.bytes, (first.len() + second.len()) as u64);
    // Rows under both headers arrived; the short, long, timeless and not UTF-8 lines were
    // rejected.
    assert_eq!((stats.read.rows, stats.read.rejected), (800, 47));
    let reasons: std::collections::BTreeSet<&str> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Rejected(r) => Some(r.reason_code),
            Call::Batch { .. } => None,
        })
        .collect();
    for reason in ["column_count", "bad_value", "invalid_utf8"] {
        assert!(reasons.contains(reason), "{reason}: {reasons:?}");
    }
}

/// A v2 plain object has no header: the delivery's configured fields read it (its delimiter
/// found as a header's is), until a `#Fields` line, if any, takes over. Without them the
/// stream stops at its first data line, naming the setting.
#[test]
fn plain_objects_are_read_by_the_configured_fields_in_parallel_too() {
    let mut text = Vec::new();
    for i in 0..300i64 {
        let at = 1_768_040_121_000 + i * 3_600_000;
        text.extend(format!("{at}|192.0.2.{}|200|/p/{i}\n", i % 250).bytes());
        if i % 50 == 7 {
            text.extend(b"1768040121000|too|few\n");
        }
    }
    text.extend(b"#Fields: date time sc-status\n2026-01-10\t10:00:00\t404\n");
    let gz = gzip(&text);
    let mut plain = options(64 * 1024);
    let fields = Header::parse("timestamp(ms),c-ip,sc-status,cs-uri-stem").unwrap();
    plain.plain_fields = Some(Arc::new(fields));

    let (calls, result) = assert_same_with("plain", &gz, &[plain], &SMALL_CHUNKS);
    let stats = result.expect("a good stream");
    assert_eq!((stats.read.rows, stats.read.rejected), (301, 6));
    // Dated by timestamp(ms): 300 hours from 2026-01-10 10:15 UTC span 13 days.
    let dates: std::collections::BTreeSet<i32> = calls
        .iter()
        .filter_map(|c| match c {
            Call::Batch { date, .. } => Some(*date),
            Call::Rejected(_) => None,
        })
        .collect();
    assert_eq!(dates.len(), 13, "{dates:?}");

    let (_, unconfigured) = assert_same("plain, unconfigured", &gz, &[64 * 1024], &CHUNKS);
    let error = unconfigured.expect_err("no header and no configured fields");
    assert!(
        error.contains("line 1 ") && error.contains("CF2BQ_PLAIN_FIELDS"),
        "{error}"
    );
}

#[test]
fn long_lines_are_cut_alike_whatever_the_chunk_size() {
    // Lines longer than the cap and longer than a chunk, a long `#Fields` line, a long
    // last line without a newline.
    let mut text = b"#Fields: date time".to_vec();
    for i in 0..40 {
        text.extend_from_slice(format!(" x-unknown-field-{i}").as_bytes());
    }
    text.extend_from_slice(b"\n#Fields: date time cs-uri-stem\n");
    for n in [10, 299, 300, 301, 5000, 70_000] {
        text.extend_from_slice(b"2026-11-20\t10:00:00\t/");
        text.extend(std::iter::repeat_n(b'p', n));
        text.push(b'\n');
    }
    text.extend_from_slice(b"2026-11-20\t10:00:01\t/");
    text.extend(std::iter::repeat_n(b'q', 9000));
    let (_, result) = assert_same("long", &gzip(&text), &[300, 64 * 1024], &CHUNKS);
    assert_eq!(result.unwrap().read.data_lines, 7);
}

#[test]
fn streams_that_stop_stop_at_the_same_line_with_the_same_rows_before() {
    let good = generated(9, 200);
    // Data before any header, after a few good rows of another stream.
    let mut no_header = Vec::from(&b"\n\n#Version: 1.0\n"[..]);
    no_header.extend_from_slice(b"2026-11-20\t10:00:00\n");
    // A bad `#Fields` line (a field named twice) after good rows.
    let mut bad_header = good.clone();
    bad_header.extend_from_slice(b"#Fields: date time date\n2026-11-20\t10:00:00\t2026-11-20\n");
    // A gzip stream cut in the middle.
    let whole = gzip(&good);
    let truncated = whole[..whole.len() * 2 / 3].to_vec();
    for (name, gz, expected) in [
        ("no header", gzip(&no_header), "no #Fields header"),
        ("bad header", gzip(&bad_header), "names `date` twice"),
        ("truncated", truncated, "reading the decompressed stream"),
        (
            "not gzip",
            good[..5000].to_vec(),
            "reading the decompressed stream",
        ),
    ] {
        let (_, result) = assert_same(name, &gz, &[64 * 1024], &CHUNKS);
        let error = result.expect_err(name);
        assert!(error.contains(expected), "{name}: {error}");
    }
}

#[test]
fn a_stopped_sink_stops_the_parallel_transform() {
    struct StopAfter(usize);
    impl BatchSink for StopAfter {
        fn batch(&mut self, _: &str, _: i32, _: Rows) -> Result<(), Stopped> {
            self.0 = self.0.checked_sub(1).ok_or(Stopped)?;
            Ok(())
        }
        fn rejected(&mut self, _: RejectedLine) -> Result<(), Stopped> {
            Ok(())
        }
    }
    let gz = gzip(&generated(3, 2000));
    let result = transform_gzip_on(
        &gz[..],
        &options(1024),
        2,
        4096,
        &encoder(),
        &mut StopAfter(2),
    );
    assert!(matches!(result, Err(TransformError::Stopped)), "{result:?}");
}

/// A stream of arbitrary lines: `#Fields` switches, rows, junk, blank and CRLF lines.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => Just(b"2026-11-20\t10:00:00\t/a%2520b\t200".to_vec()),
        2 => Just(b"2026-11-21\t23:59:59\t-\t404\r".to_vec()),
        1 => Just(b"2026-11-21\t23:59:59\t/\xc3\t404".to_vec()),
        1 => Just(b"#Fields: date time cs-uri-stem sc-status".to_vec()),
        1 => Just(b"#Fields: time date x-future".to_vec()),
        1 => Just(b"#Fields: date date".to_vec()),
        1 => Just(b"#Version: 1.0".to_vec()),
        // v2: other delimiters, fixed by a file's first well-formed line, and JSON lines.
        2 => Just(b"2026-11-20,10:00:00,/x,200".to_vec()),
        1 => Just(b"2026-11-20|10:00:00|/x|200|".to_vec()),
        1 => Just(br#"{"date":"2026-11-20","time":"10:00:00","cs-uri-stem":"/j"}"#.to_vec()),
        1 => Just(br#"{"cs-uri-stem":"/no-date"}"#.to_vec()),
        1 => Just(Vec::new()),
        2 => proptest::collection::vec(prop_oneof![Just(b'\t'), Just(b'a'), Just(b'\r'), any::<u8>()], 0..120),
    ];
    (
        proptest::collection::vec(line, 0..60),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, last_newline, header)| {
            // Without a header first, a JSON first line makes the stream JSON lines.
            let mut text = if header {
                b"#Fields: date time cs-uri-stem sc-status\n".to_vec()
            } else {
                Vec::new()
            };
            for l in lines {
                text.extend(l);
                text.push(b'\n');
            }
            if !last_newline {
                text.pop();
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_stream_gives_the_same_output_in_parallel(
        text in stream(),
        chunk in 1usize..200,
        workers in 1usize..4,
        cap in 16usize..150,
    ) {
        let gz = gzip(&text);
        let options = options(cap);
        prop_assert_eq!(parallel(&gz, &options, workers, chunk), sequential(&gz, &options));
    }
}
