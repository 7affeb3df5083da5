//! Standard logging v2 over the corpus in tests/corpus (made by make_corpus.py): the same two
//! requests as the legacy files, as v2 W3C (reordered, other delimiters, without date and
//! time), JSON (hyphenated and underscored names) and Parquet, give the same rows; and the
//! same objects loaded from S3 under v2 partitioned and Hive-style keys, and as v2's headerless
//! plain format read by the configured field list, land as identical rows.

use std::io::Read;
use std::path::PathBuf;

use bytes::Bytes;
use cf2bq_tests::Harness;
use flate2::read::MultiGzDecoder;
use shared::cloudfront::parquet::{
    legacy_text_as_parquet, read_parquet, write_parquet, ParquetItem,
};
use shared::cloudfront::{fields, Item, LogReader, Row, LEGACY_FIELDS, LOG_FIELDS};
use shared::source::LogObject;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// A row as text: every field (NULL when absent), the request time, extra and raw JSON.
fn texts(row: &Row<'_>) -> Vec<String> {
    let mut out: Vec<String> = (0..LOG_FIELDS.len())
        .map(|id| row.get(id).to_string())
        .collect();
    out.push(row.timestamp_micros().to_string());
    out.push(row.extra_fields().unwrap_or("NULL").to_string());
    out.push(row.raw_fields().unwrap_or("NULL").to_string());
    out
}

/// Rows of a gzip text object (legacy or v2 W3C or JSON); no line may be rejected.
fn read_text(name: &str) -> Vec<Vec<String>> {
    let mut text = Vec::new();
    MultiGzDecoder::new(std::fs::File::open(corpus(name)).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    let mut reader = LogReader::new(&text[..], 65536);
    let mut rows = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            Item::Row { row, .. } => rows.push(texts(&row)),
            Item::Rejected(r) => panic!("{name} line {}: {}", r.line_no, r.error),
        }
    }
    rows
}

/// The two corpus requests with all 33 legacy fields as Parquet, named as AWS documents the
/// v2 Parquet output (underscored, string-typed), in the logged (encoded) form.
fn parquet_33() -> Vec<u8> {
    let mut text = Vec::new();
    MultiGzDecoder::new(std::fs::File::open(corpus("header-33.log.gz")).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    // One row a row group: the reader goes group by group.
    legacy_text_as_parquet(&String::from_utf8(text).unwrap(), 1).unwrap()
}

fn read_parquet_rows(file: Vec<u8>) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    read_parquet(Bytes::from(file), |item| {
        match item {
            ParquetItem::Row { row, .. } => rows.push(texts(&row)),
            ParquetItem::Rejected { line_no, error, .. } => panic!("row {line_no}: {error}"),
        }
        Ok(())
    })
    .unwrap();
    rows
}

#[test]
fn the_same_requests_in_every_v2_format_give_the_legacy_rows() {
    let legacy = read_text("header-33.log.gz");
    assert_eq!(legacy.len(), 2);
    for name in [
        "v2-w3c-reordered.log.gz",
        "v2-json.log.gz",
        "v2-json-underscored.log.gz",
    ] {
        assert_eq!(read_text(name), legacy, "{name}");
    }
    assert_eq!(read_parquet_rows(parquet_33()), legacy, "Parquet");
}

/// v2 Parquet written by pyarrow (Arrow C++), all 33 legacy fields and the new ones, one
/// row a row group: the legacy fields give the legacy rows, the new ones their typed values.
#[test]
fn parquet_written_by_pyarrow_gives_the_legacy_rows_and_the_new_fields() {
    let legacy = read_text("header-33.log.gz");
    let rows = read_parquet_rows(std::fs::read(corpus("v2-parquet.parquet")).unwrap());
    assert_eq!(rows.len(), 2);
    let new_fields = LEGACY_FIELDS..LOG_FIELDS.len();
    for (row, legacy) in rows.iter().zip(&legacy) {
        assert_eq!(row[..LEGACY_FIELDS], legacy[..LEGACY_FIELDS]);
        // request time, extra and raw JSON
        assert_eq!(row[LOG_FIELDS.len()..], legacy[LOG_FIELDS.len()..]);
    }
    let named = |row: &[String]| -> Vec<(String, String)> {
        new_fields
            .clone()
            .map(|id| (LOG_FIELDS[id].column.to_string(), row[id].clone()))
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        named(&rows[0]),
        pairs(&[
            ("distribution_tenant_id", "dt_2abc"),
            ("connection_id", "conn-77"),
            ("timestamp", "2026-01-10T10:15:21.123000Z"),
            ("c_country", "JP"),
            ("asn", "2516"),
            ("origin_fbl", "0.012"),
            ("origin_lbl", "0.034"),
            ("cache_behavior_path_pattern", "/live/*"),
        ])
    );
    assert_eq!(
        named(&rows[1]),
        pairs(&[
            ("distribution_tenant_id", "NULL"),
            ("connection_id", "NULL"),
            ("timestamp", "2026-01-09T23:59:59.999000Z"),
            ("c_country", "NULL"),
            ("asn", "NULL"),
            ("origin_fbl", "NULL"),
            ("origin_lbl", "NULL"),
            ("cache_behavior_path_pattern", "NULL"),
        ])
    );
}

#[test]
fn v2_subsets_without_date_and_time_are_dated_by_their_timestamp() {
    let column = |name: &str| fields::lookup(name).unwrap().0;
    let pick = |rows: &[Vec<String>], names: &[&str]| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| names.iter().map(|n| r[column(n)].clone()).collect())
            .collect()
    };
    let names = [
        "date",
        "time",
        "timestamp(ms)",
        "c-ip",
        "sc-status",
        "cs-protocol",
        "cs-protocol-version",
        "x-edge-detailed-result-type",
        "c-country",
        "asn",
        "origin-fbl",
        "origin-lbl",
        "cache-behavior-path-pattern",
        "distribution-tenant-id",
        "connection-id",
        "x-edge-location",
    ];
    let expected: Vec<Vec<String>> = [
        [
            "2026-01-10",
            "10:15:21",
            "2026-01-10T10:15:21.123000Z",
            "203.0.113.10",
            "200",
            "grpcs",
            "HTTP/3.0",
            "LambdaExecutionError",
            "JP",
            "2516",
            "0.012",
            "0.034",
            "/live/*",
            "dt_2abc",
            "conn-77",
            "NULL",
        ],
        [
            "2026-01-09",
            "23:59:59",
            "2026-01-09T23:59:59.999000Z",
            "2001:db8::8a2e:370:7334",
            "0",
            "http",
            "HTTP/1.1",
            "ClientCommError",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
        ],
    ]
    .iter()
    .map(|r| r.iter().map(|s| s.to_string()).collect())
    .collect();
    let no_date = read_text("v2-w3c-no-date-comma.log.gz");
    assert_eq!(pick(&no_date, &names), expected);
    // Without date and time, the request time is the timestamp, to the millisecond.
    let request_time = LOG_FIELDS.len();
    assert_eq!(no_date[0][request_time], "1768040121123000");
    // With date and time (pipe-delimited, date last), they date the row, to the second.
    let with_date = read_text("v2-w3c-pipe.log.gz");
    assert_eq!(pick(&with_date, &names), expected);
    assert_eq!(with_date[0][request_time], "1768040121000000");
}

/// The v2 W3C corpus object as v2's plain format writes it: no header, space-delimited; and
/// its field list, as the delivery's configuration names it.
fn plain_from_w3c(name: &str) -> (String, Vec<u8>) {
    let mut text = String::new();
    MultiGzDecoder::new(std::fs::File::open(corpus(name)).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let (header, data) = text.split_once('\n').unwrap();
    let fields = header.strip_prefix("#Fields: ").unwrap().replace(' ', ",");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, data.replace('\t', " ").as_bytes()).unwrap();
    (fields, gz.finish().unwrap())
}

/// Loads the same requests from S3 as legacy TSV, v2 W3C, plain, JSON and Parquet under
/// legacy, v2 partitioned and Hive-style keys: every object gives the same two rows in the same
/// tables. The plain object is read by the configured field list; the others, which name
/// their fields, are unaffected by it.
#[tokio::test]
async fn every_format_loads_identical_rows_from_s3() {
    let (plain_fields, plain) = plain_from_w3c("v2-w3c-reordered.log.gz");
    let h = Harness::with(
        "v2_formats",
        &[("CF2BQ_PLAIN_FIELDS", plain_fields.as_str())],
    )
    .await;
    let bucket = h.bucket("v2logs").await;
    let read = |name: &str| std::fs::read(corpus(name)).unwrap();
    let objects = [
        (
            "legacy/E2QWRUHAPOMQZL.2026-01-10-10.a1b2c3d4.gz".to_string(),
            read("header-33.log.gz"),
        ),
        (
            "v2/E2QWRUHAPOMQZL/2026/01/10/10/E2QWRUHAPOMQZL.w3c.log.gz".to_string(),
            read("v2-w3c-reordered.log.gz"),
        ),
        (
            "v2/E2QWRUHAPOMQZL/2026/01/10/10/E2QWRUHAPOMQZL.plain.log.gz".to_string(),
            plain,
        ),
        (
            "v2/distributionid=E2QWRUHAPOMQZL/year=2026/month=01/day=10/hour=10/json.log.gz"
                .to_string(),
            read("v2-json-underscored.log.gz"),
        ),
        (
            "v2/distributionid=E2QWRUHAPOMQZL/year=2026/month=01/day=10/hour=10/part.parquet"
                .to_string(),
            parquet_33(),
        ),
    ];
    let ingestor = h.ingestor().await;
    for (key, body) in &objects {
        h.put(&bucket, key, body.clone()).await;
        let object = h.announced(&bucket, key).await;
        let report = ingestor.ingest(&LogObject::S3(object)).await.unwrap();
        assert_eq!((report.rows, report.rejected), (2, 0), "{key}");
    }
    assert_eq!(h.count("cloudfront_20260110").await, 5);
    assert_eq!(h.count("cloudfront_20260109").await, 5);

    // Every column but lineage, as text, per object.
    let columns: Vec<&str> = shared::bigquery::schema::columns()
        .iter()
        .map(|c| c.name)
        .filter(|n| !["source_object", "source_line", "ingest_time"].contains(n))
        .collect();
    let select = columns
        .iter()
        .map(|c| format!("CAST(`{c}` AS STRING)"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut per_object = Vec::new();
    for (key, _) in &objects {
        let rows = h
            .query(&format!(
                "SELECT {select} FROM `{{ds}}.cloudfront_*` \
                 WHERE source_object = 's3://{bucket}/{key}' ORDER BY log_date, log_time"
            ))
            .await;
        assert_eq!(rows.len(), 2, "{key}");
        per_object.push((key, rows));
    }
    for (key, rows) in &per_object[1..] {
        assert_eq!(rows, &per_object[0].1, "{key} vs the legacy object");
    }
    // Spot-check typed values.
    let at = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let first = &per_object[0].1[1];
    assert_eq!(first[at("sc_bytes")].as_deref(), Some("512"));
    assert_eq!(
        first[at("cs_user_agent")].as_deref(),
        Some("Mozilla/5.0 (Windows NT 10.0)")
    );
}

/// An object whose fields can date no row fails whole, naming the object, and commits
/// nothing.
#[tokio::test]
async fn an_object_without_date_time_or_timestamp_is_refused_whole() {
    let h = Harness::new("v2_undatable").await;
    let dir = std::env::temp_dir().join(cf2bq_tests::unique("v2-undatable"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in [
        ("w3c.log.gz", "#Fields: c-ip sc-status\n192.0.2.1\t200\n"),
        (
            "json.log.gz",
            "{\"c-ip\":\"192.0.2.1\",\"sc-status\":200}\n",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, cf2bq_tests::gzip(text)).unwrap();
        let error = h
            .ingestor()
            .await
            .ingest(&LogObject::File(path.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(path.to_str().unwrap()), "{error}");
        assert!(
            error.contains("neither `date` and `time` nor `timestamp(ms)`"),
            "{error}"
        );
    }
    let path = dir.join("undatable.parquet");
    std::fs::write(
        &path,
        write_parquet(&["c_ip"], &[vec![Some("192.0.2.1".into())]], 10).unwrap(),
    )
    .unwrap();
    let error = h
        .ingestor()
        .await
        .ingest(&LogObject::File(path.clone()))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(path.to_str().unwrap()), "{error}");
    assert!(error.contains("neither `date` and `time`"), "{error}");
    assert!(h.table_counts().await.is_empty());
}

/// Privacy controls apply before rows are sent: cookies dropped, addresses truncated (or
/// hashed), and a BigQuery quarantine table gets no raw line.
#[tokio::test]
async fn privacy_controls_apply_before_rows_leave() {
    let h = Harness::with(
        "v2_privacy",
        &[
            ("CF2BQ_DROP_COOKIES", "true"),
            ("CF2BQ_IP_PRIVACY", "truncate"),
            ("CF2BQ_QUARANTINE", "bq:cf2bq_quarantine"),
        ],
    )
    .await;
    let report = h
        .ingestor()
        .await
        .ingest(&LogObject::File(corpus("bad-time.log.gz")))
        .await
        .unwrap();
    assert_eq!((report.rows, report.rejected), (2, 1));
    let rows = h
        .query(
            "SELECT log_date, c_ip, x_forwarded_for, cs_cookie FROM `{ds}.cloudfront_*` \
             ORDER BY log_date",
        )
        .await;
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        rows,
        vec![
            vec![
                some("2026-01-09"),
                some("2001:db8::"),
                some("198.51.100.0"),
                None
            ],
            vec![some("2026-01-10"), some("203.0.113.0"), None, None],
        ]
    );
    let quarantined = h.query("SELECT raw FROM `{ds}.cf2bq_quarantine`").await;
    assert_eq!(
        quarantined,
        vec![vec![some(
            std::str::from_utf8(shared::privacy::WITHHELD).unwrap()
        )]]
    );

    let h = Harness::with(
        "v2_privacy_hash",
        &[
            ("CF2BQ_IP_PRIVACY", "hash"),
            ("CF2BQ_IP_HASH_KEY", "a test key of at least 16 bytes"),
        ],
    )
    .await;
    h.ingestor()
        .await
        .ingest(&LogObject::File(corpus("header-33.log.gz")))
        .await
        .unwrap();
    let rows = h
        .query("SELECT c_ip, cs_cookie FROM `{ds}.cloudfront_*` ORDER BY log_date")
        .await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let ip = row[0].clone().unwrap();
        assert!(
            ip.len() == 32 && ip.bytes().all(|b| b.is_ascii_hexdigit()),
            "{ip}"
        );
    }
    assert_ne!(rows[0][0], rows[1][0]);
    // Cookies are kept unless dropped.
    assert_eq!(rows[0][1].as_deref(), Some("session=abc"));
}
