//! The pipeline end to end against moto and bqemulator: S3 event → ingest → per-date tables.

use std::collections::BTreeMap;

use cf2bq_tests::{gzip, has_line, header_33, Harness};
use shared::generate::{write_object, GenOptions};
use shared::source::LogObject;
use shared::Outcome;

/// Two lines on each side of midnight UTC, in today's 33-field format.
fn two_date_file() -> String {
    let mut text = header_33();
    let line = |date: &str, time: &str, status: &str, ua: &str, query: &str| {
        format!(
            "{date}\t{time}\tFRA56-P1\t512\t2001:db8::1\tGET\td111111abcdef8.cloudfront.net\t/a%2520b.m3u8\t{status}\t-\t{ua}\t{query}\t-\tHit\tAbCdEf==\td111111abcdef8.cloudfront.net\thttps\t34\t0.002\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t50432\t0.001\tHit\tapplication/vnd.apple.mpegurl\t512\t-\t-\n"
        )
    };
    text += &line(
        "2026-01-09",
        "23:59:59",
        "200",
        "Mozilla/5.0%2520(X11)",
        "a=1",
    );
    text += &line("2026-01-10", "00:00:00", "000", "curl/8.5.0", "-");
    text += &line(
        "2026-01-09",
        "23:00:01",
        "304",
        "Mozilla/5.0%20(Mac)",
        "q=caf%25C3%25A9",
    );
    text
}

#[tokio::test]
async fn a_file_spanning_two_dates_puts_each_line_in_its_own_dates_table() {
    let h = Harness::new("two_dates").await;
    let dir = std::env::temp_dir().join(cf2bq_tests::unique("two-dates"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("E2QWRUHAPOMQZL.2026-01-10-00.abcdef12.gz");
    std::fs::write(&path, gzip(&two_date_file())).unwrap();

    let report = h
        .ingestor()
        .await
        .ingest(&LogObject::File(path.clone()))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Loaded);
    assert_eq!(
        report.tables,
        BTreeMap::from([
            ("cloudfront_20260109".to_string(), 2),
            ("cloudfront_20260110".to_string(), 1)
        ])
    );
    assert_eq!((report.data_lines, report.rows, report.rejected), (3, 3, 0));

    // What is in each table, read back by queries.
    let rows = h
        .query(
            "SELECT CAST(log_date AS STRING), CAST(log_time AS STRING), sc_status, c_ip, cs_uri_stem, \
             cs_user_agent, cs_uri_query, cs_referer, time_taken, sc_range_start, source_line, \
             JSON_VALUE(raw_fields, '$.cs_user_agent') \
             FROM `{ds}.cloudfront_20260109` ORDER BY source_line",
        )
        .await;
    let text = |v: &[&str]| {
        v.iter()
            .map(|s| {
                if *s == "NULL" {
                    None
                } else {
                    Some(s.to_string())
                }
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rows,
        vec![
            text(&[
                "2026-01-09",
                "23:59:59",
                "200",
                "2001:db8::1",
                "/a%20b.m3u8",
                "Mozilla/5.0 (X11)",
                "a=1",
                "NULL",
                "0.002",
                "NULL",
                "3",
                "Mozilla/5.0%2520(X11)"
            ]),
            text(&[
                "2026-01-09",
                "23:00:01",
                "304",
                "2001:db8::1",
                "/a%20b.m3u8",
                "Mozilla/5.0 (Mac)",
                "q=caf%C3%A9",
                "NULL",
                "0.002",
                "NULL",
                "5",
                "NULL"
            ]),
        ]
    );
    let next_day = h
        .query("SELECT CAST(log_date AS STRING), sc_status, cs_uri_query, source_object FROM `{ds}.cloudfront_20260110`")
        .await;
    let uri = format!("file://{}", std::fs::canonicalize(&path).unwrap().display());
    assert_eq!(next_day, vec![text(&["2026-01-10", "0", "NULL", &uri])]);
}

#[tokio::test]
async fn the_cli_ingests_a_local_file_and_reports_rows_per_table() {
    let h = Harness::new("cli_ingest").await;
    let dir = std::env::temp_dir().join(cf2bq_tests::unique("cli"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("E2QWRUHAPOMQZL.2026-01-10-00.cli00001.gz");
    std::fs::write(&path, gzip(&two_date_file())).unwrap();

    let (ok, stdout, stderr, _) = h.run_binary("cf2bq", &["ingest", path.to_str().unwrap()]);
    assert!(ok, "cf2bq ingest failed:\n{stdout}\n{stderr}");
    assert!(
        has_line(&stdout, &["cloudfront_20260109", "2", "rows"]),
        "{stdout}"
    );
    assert!(
        has_line(&stdout, &["cloudfront_20260110", "1", "rows"]),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 data lines = 3 rows loaded + 0 rejected"),
        "{stdout}"
    );
    assert_eq!(h.count("cloudfront_20260109").await, 2);
    assert_eq!(h.count("cloudfront_20260110").await, 1);
}

/// Generated objects → S3 → bucket notification → SQS → the real `ingest` binary's event loop
/// → every date's table holds exactly the generated rows; the s3:TestEvent is acknowledged.
#[tokio::test]
async fn s3_notifications_through_sqs_land_every_row_in_its_dates_table() {
    let h = Harness::new("sqs_pipeline").await;
    let bucket = h.bucket("logs").await;
    let queues = h.wired_queue(&bucket, 3).await;
    let options = GenOptions {
        objects: 6,
        lines_per_object: 300,
        late_percent: 10,
        prefix: "cf/".into(),
        ..Default::default()
    };
    let manifest = shared::generate::upload(&h.s3, &bucket, &options)
        .await
        .unwrap();

    let (ok, stdout, stderr, _) = h.run_binary("ingest", &["--poll-queue", &queues.queue]);
    assert!(ok, "ingest failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("s3:TestEvent acknowledged"), "{stderr}");

    let expected: BTreeMap<String, u64> = manifest
        .rows_per_date
        .iter()
        .map(|(date, n)| (format!("cloudfront_{}", date.replace('-', "")), *n))
        .collect();
    assert_eq!(
        expected.len(),
        4,
        "three dates plus late lines of the day before"
    );
    assert_eq!(h.table_counts().await, expected);
    assert_eq!(h.queue_depth(&queues.queue).await, 0);
    assert_eq!(h.queue_depth(&queues.dlq).await, 0);
}

/// A message that is not a notification fails every attempt and ends in the DLQ; a good
/// message in the same batch is still processed.
#[tokio::test]
async fn poison_messages_go_to_the_dlq_and_do_not_block_the_batch() {
    let h = Harness::new("poison").await;
    let bucket = h.bucket("logs").await;
    let queues = h.wired_queue(&bucket, 2).await;
    h.sqs
        .send_message()
        .queue_url(&queues.queue)
        .message_body("this is not an S3 notification")
        .send()
        .await
        .unwrap();
    h.put(
        &bucket,
        "cf/E2QWRUHAPOMQZL.2026-01-10-00.good0001.gz",
        gzip(&two_date_file()),
    )
    .await;

    let (ok, stdout, stderr, _) = h.run_binary("ingest", &["--poll-queue", &queues.queue]);
    assert!(ok, "ingest failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("undecodable message"), "{stderr}");
    assert_eq!(h.count("cloudfront_20260109").await, 2);
    assert_eq!(h.count("cloudfront_20260110").await, 1);
    assert_eq!(h.queue_depth(&queues.queue).await, 0);
    assert_eq!(h.queue_depth(&queues.dlq).await, 1);
}

/// An object deleted before it is read is acknowledged (not retried forever), with nothing
/// written; a zero-byte object is acknowledged as empty.
#[tokio::test]
async fn gone_and_empty_objects_are_acknowledged() {
    let h = Harness::new("gone").await;
    let bucket = h.bucket("logs").await;
    let ingestor = h.ingestor().await;
    let missing = shared::event::s3_notification(
        &shared::event::ObjectRef {
            bucket: bucket.clone(),
            key: "cf/E2QWRUHAPOMQZL.2026-01-10-00.deleted1.gz".into(),
            size: Some(100),
            etag: None,
            version_id: None,
        },
        "ObjectCreated:Put",
    );
    let reports = shared::sqs::process_message(&ingestor, &missing.to_string(), None)
        .await
        .unwrap();
    assert_eq!(reports[0].outcome, Outcome::Gone);

    h.put(
        &bucket,
        "cf/E2QWRUHAPOMQZL.2026-01-10-00.empty001.gz",
        Vec::new(),
    )
    .await;
    let report = ingestor
        .ingest(&LogObject::parse(&format!(
            "s3://{bucket}/cf/E2QWRUHAPOMQZL.2026-01-10-00.empty001.gz"
        )))
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Empty);
    assert!(h.table_counts().await.is_empty());
}

/// Peak memory does not grow with the object: a 210 MiB (uncompressed) object streamed from
/// S3 needs about as much as a 10 MiB one, far less than its size.
#[tokio::test]
async fn peak_memory_stays_flat_for_an_object_over_200_mib() {
    let h = Harness::new("memory").await;
    let bucket = h.bucket("big").await;
    let mut peaks = Vec::new();
    for (i, mib) in [(0usize, 10u64), (1, 210)] {
        let options = GenOptions {
            objects: 2,
            bytes_per_object: Some(mib << 20),
            days: 1,
            seed: 7,
            ..Default::default()
        };
        let mut body = Vec::new();
        let object = write_object(&options, i, &mut body).unwrap();
        assert!(object.uncompressed_bytes >= mib << 20);
        h.put(&bucket, &object.key, body).await;
        let uri = format!("s3://{bucket}/{}", object.key);
        let (ok, stdout, stderr, peak_mib) = h.run_binary("cf2bq", &["ingest", &uri]);
        assert!(ok, "cf2bq ingest failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!(
                "{} data lines = {} rows loaded + 0 rejected",
                object.lines, object.lines
            )),
            "{stdout}"
        );
        eprintln!(
            "{mib} MiB object ({} lines): peak RSS {peak_mib} MiB",
            object.lines
        );
        peaks.push(peak_mib);
    }
    let (small, big) = (peaks[0], peaks[1]);
    assert!(big < 128, "peak RSS {big} MiB for a 210 MiB object");
    assert!(
        big <= small + 32,
        "peak RSS grew with the object: {small} MiB → {big} MiB"
    );
}
