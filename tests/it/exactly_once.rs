//! Exactly once: redeliveries, crashes at every step, concurrent deliveries.
//! Each crash is a real `abort()` of the `cf2bq` process at a fault point (no cleanup, the
//! ledger claim left behind), followed by a redelivery that must converge to one copy.

use std::collections::BTreeMap;

use cf2bq_tests::{gzip, header_33, Harness};
use shared::fault::FAULT_POINTS;
use shared::Outcome;

/// Lines over three dates: 3 + 2 + 1 rows.
fn three_date_file() -> String {
    let mut text = header_33();
    for (date, n) in [("2026-03-01", 3), ("2026-03-02", 2), ("2026-02-28", 1)] {
        for i in 0..n {
            text += &format!(
                "{date}\t10:00:0{i}\tFRA56-P1\t512\t192.0.2.{i}\tGET\td1.cloudfront.net\t/x\t200\t-\tcurl/8\t-\t-\tHit\tid{i}\td1.cloudfront.net\thttps\t34\t0.002\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t443\t0.001\tHit\ttext/html\t512\t-\t-\n"
            );
        }
    }
    text
}

/// A new versioned bucket holding `key` with [`three_date_file`]: (bucket, key, `s3://` URI).
async fn three_date_object(h: &Harness, key: &str) -> (String, String, String) {
    let bucket = h.bucket("logs").await;
    h.put(&bucket, key, gzip(&three_date_file())).await;
    let uri = format!("s3://{bucket}/{key}");
    (bucket, key.to_string(), uri)
}

fn expected() -> BTreeMap<String, u64> {
    BTreeMap::from([
        ("cloudfront_20260228".to_string(), 1),
        ("cloudfront_20260301".to_string(), 3),
        ("cloudfront_20260302".to_string(), 2),
    ])
}

#[tokio::test]
async fn a_redelivered_notification_writes_nothing_more() {
    let h = Harness::new("redelivery").await;
    let bucket = h.bucket("logs").await;
    let key = "cf/E2QWRUHAPOMQZL.2026-03-01-10.redeliv1.gz";
    h.put(&bucket, key, gzip(&three_date_file())).await;
    let etag =
        h.s3.head_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .e_tag
            .unwrap();
    let body = shared::event::s3_notification(
        &shared::event::ObjectRef {
            bucket: bucket.clone(),
            key: key.into(),
            size: None,
            etag: Some(etag.trim_matches('"').into()),
            version_id: None,
        },
        "ObjectCreated:Put",
    )
    .to_string();
    let ingestor = h.ingestor().await;
    let first = shared::sqs::process_message(&ingestor, &body, None)
        .await
        .unwrap();
    assert_eq!(first[0].outcome, Outcome::Loaded, "{:?}", first[0]);
    for _ in 0..2 {
        let again = shared::sqs::process_message(&ingestor, &body, None)
            .await
            .unwrap();
        assert_eq!(again[0].outcome, Outcome::AlreadyDone);
        assert_eq!(
            again[0].tables,
            expected(),
            "the redelivery reports the original load"
        );
    }
    assert_eq!(h.table_counts().await, expected());
}

#[tokio::test]
async fn a_crash_at_any_step_then_a_redelivery_leaves_exactly_one_copy() {
    for point in FAULT_POINTS {
        let h = Harness::with("crash", &[("CF2BQ_LEASE_SECONDS", "1")]).await;
        let (_, _, uri) =
            three_date_object(&h, "cf/E2QWRUHAPOMQZL.2026-03-01-10.crash001.gz").await;

        let (ok, _, stderr, _) =
            h.run_binary_with("cf2bq", &["ingest", &uri], &[("CF2BQ_FAULT", point)]);
        assert!(!ok, "{point}: the fault point did not fire");
        assert!(
            stderr.contains(&format!("fault injected at {point}")),
            "{point}: {stderr}"
        );

        // The dead attempt's claim expires (lease 1 s, whole seconds); the redelivery takes over.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let (ok, stdout, stderr, _) = h.run_binary("cf2bq", &["ingest", &uri]);
        assert!(ok, "{point}: redelivery failed:\n{stdout}\n{stderr}");
        assert_eq!(h.table_counts().await, expected(), "after a crash {point}");

        let (ok, stdout, _, _) = h.run_binary("cf2bq", &["ingest", &uri]);
        assert!(ok && stdout.contains("AlreadyDone"), "{point}: {stdout}");
        assert_eq!(
            h.table_counts().await,
            expected(),
            "after a crash {point} and two redeliveries"
        );
    }
}

#[tokio::test]
async fn two_concurrent_deliveries_of_one_object_write_one_copy() {
    let h = Harness::new("concurrent").await;
    let (_, _, uri) = three_date_object(&h, "cf/E2QWRUHAPOMQZL.2026-03-01-10.concur01.gz").await;

    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| h.run_binary("cf2bq", &["ingest", &uri]));
        let b = s.spawn(|| h.run_binary("cf2bq", &["ingest", &uri]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let loaded = [&a, &b]
        .iter()
        .filter(|r| r.0 && r.1.contains(": Loaded"))
        .count();
    assert_eq!(
        loaded, 1,
        "exactly one delivery loads:\n{}\n{}\n{}\n{}",
        a.1, a.2, b.1, b.2
    );
    // The other one saw the live claim (retry later), came after DONE, or found its claim
    // taken over before it committed anything (its retry then finds DONE).
    for r in [&a, &b] {
        assert!(
            r.1.contains(": Loaded")
                || r.1.contains("AlreadyDone")
                || r.2.contains("retry later")
                || r.2.contains("another invocation took it over"),
            "{}\n{}",
            r.1,
            r.2
        );
    }
    let (ok, stdout, _, _) = h.run_binary("cf2bq", &["ingest", &uri]);
    assert!(ok && stdout.contains("AlreadyDone"), "{stdout}");
    assert_eq!(h.table_counts().await, expected());
}

/// Runs `cf2bq` with `args` and returns its stdout, asserting success.
fn cf2bq_ok(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> String {
    let (ok, stdout, stderr, _) = h.run_binary_with("cf2bq", args, env);
    assert!(ok, "cf2bq {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Runs `cf2bq` expecting the fault point `point` to abort it.
fn crash_at(h: &Harness, args: &[&str], point: &str) {
    let (ok, _, stderr, _) = h.run_binary_with("cf2bq", args, &[("CF2BQ_FAULT", point)]);
    assert!(
        !ok && stderr.contains(&format!("fault injected at {point}")),
        "{point}: the fault point did not fire:\n{stderr}"
    );
}

/// Waits out a 1-second lease left by a crashed attempt (leases are whole seconds).
fn lease_expires() {
    std::thread::sleep(std::time::Duration::from_millis(2100));
}

#[tokio::test]
async fn every_entry_point_resolves_one_identity_on_a_versioned_bucket() {
    let h = Harness::new("identity").await;
    let (bucket, key, uri) =
        three_date_object(&h, "cf/E2QWRUHAPOMQZL.2026-03-01-10.ident001.gz").await;
    let queues = h.queues(3).await;

    // The Lambda's path: the event names the version id and the ETag.
    let announced = h.announced(&bucket, &key).await;
    assert!(announced.version_id.is_some(), "the bucket is versioned");
    let body = shared::event::s3_notification(&announced, "ObjectCreated:Put").to_string();
    let ingestor = h.ingestor().await;
    let first = shared::sqs::process_message(&ingestor, &body, None)
        .await
        .unwrap();
    assert_eq!(first[0].outcome, Outcome::Loaded);

    // The CLI (no version, no ETag) and a replay listing (ETag only) find the same object.
    let out = cf2bq_ok(&h, &["ingest", &uri], &[]);
    assert!(out.contains("AlreadyDone"), "{out}");
    let out = cf2bq_ok(
        &h,
        &["replay", "--bucket", &bucket, "--queue", &queues.queue],
        &[],
    );
    assert!(out.contains("1 already done (skipped), 0 sent"), "{out}");
    assert_eq!(h.table_counts().await, expected());

    // A forced CLI ingest replaces the Lambda's rows instead of adding to them.
    let out = cf2bq_ok(&h, &["ingest", "--force", &uri], &[]);
    assert!(out.contains(": Loaded"), "{out}");
    assert_eq!(h.table_counts().await, expected());
}

#[tokio::test]
async fn a_forced_replay_that_dies_before_its_plan_still_replaces() {
    for point in ["after_claim", "after_append", "after_finalize"] {
        let h = Harness::with("forcecrash", &[("CF2BQ_LEASE_SECONDS", "1")]).await;
        let (_, _, uri) =
            three_date_object(&h, "cf/E2QWRUHAPOMQZL.2026-03-01-10.force001.gz").await;
        cf2bq_ok(&h, &["ingest", &uri], &[]);

        crash_at(&h, &["ingest", "--force", &uri], point);
        lease_expires();
        // A plain redelivery takes the dead forced attempt over: it must still replace.
        let out = cf2bq_ok(&h, &["ingest", &uri], &[]);
        assert!(out.contains(": Loaded"), "{point}: {out}");
        assert_eq!(
            h.table_counts().await,
            expected(),
            "{point}: one copy after a forced replay died"
        );
    }
}

#[tokio::test]
async fn a_forced_replay_of_a_gone_object_keeps_its_rows() {
    let h = Harness::new("forcegone").await;
    let bucket = h.bucket("logs").await;
    let key = "cf/E2QWRUHAPOMQZL.2026-03-01-10.gone0001.gz";
    h.put(&bucket, key, gzip(&three_date_file())).await;
    let announced = h.announced(&bucket, key).await;
    let ingestor = h.ingestor().await;
    let live = shared::event::s3_notification(&announced, "ObjectCreated:Put").to_string();
    shared::sqs::process_message(&ingestor, &live, None)
        .await
        .unwrap();
    assert_eq!(h.table_counts().await, expected());

    // Deleted (a delete marker on the versioned bucket), then replayed with --force.
    h.s3.delete_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let forced = shared::event::replay_notification(&announced, true).to_string();
    let reports = shared::sqs::process_message(&ingestor, &forced, None)
        .await
        .unwrap();
    assert_eq!(reports[0].outcome, Outcome::ReplayRefused);
    assert_eq!(h.table_counts().await, expected(), "earlier rows kept");
    let out = cf2bq_ok(
        &h,
        &["ingest", "--force", &format!("s3://{bucket}/{key}")],
        &[],
    );
    assert!(out.contains(": Gone"), "{out}");
    assert_eq!(h.table_counts().await, expected(), "earlier rows kept");
    // Still DONE: a redelivery of the live event writes nothing.
    let again = shared::sqs::process_message(&ingestor, &live, None)
        .await
        .unwrap();
    assert_eq!(again[0].outcome, Outcome::AlreadyDone);

    // Overwritten with an empty object: the forced replay of the loaded version refuses too.
    let key2 = "cf/E2QWRUHAPOMQZL.2026-03-01-11.gone0002.gz";
    h.put(&bucket, key2, gzip(&three_date_file())).await;
    let loaded = h.announced(&bucket, key2).await;
    let live = shared::event::s3_notification(&loaded, "ObjectCreated:Put").to_string();
    shared::sqs::process_message(&ingestor, &live, None)
        .await
        .unwrap();
    h.put(&bucket, key2, Vec::new()).await;
    let forced = shared::event::replay_notification(&loaded, true).to_string();
    let reports = shared::sqs::process_message(&ingestor, &forced, None)
        .await
        .unwrap();
    assert_eq!(reports[0].outcome, Outcome::ReplayRefused);
    let doubled: BTreeMap<String, u64> = expected().into_iter().map(|(t, n)| (t, 2 * n)).collect();
    assert_eq!(h.table_counts().await, doubled, "both objects' rows kept");
}

#[tokio::test]
async fn a_resume_after_the_streams_expired_stages_the_uncommitted_tables_again() {
    for point in ["after_plan_recorded", "after_table_commit"] {
        let h = Harness::with("expired", &[("CF2BQ_LEASE_SECONDS", "1")]).await;
        let (_, _, uri) =
            three_date_object(&h, "cf/E2QWRUHAPOMQZL.2026-03-01-10.expire01.gz").await;
        crash_at(&h, &["ingest", &uri], point);
        lease_expires();
        // The next day: BigQuery has garbage-collected every stream the dead attempt made.
        let (ok, out, stderr, _) = h.run_binary_with(
            "cf2bq",
            &["ingest", &uri],
            &[("CF2BQ_GRPC_FAULTS", "expired=1")],
        );
        assert!(ok && out.contains(": Loaded"), "{point}: {out}\n{stderr}");
        assert!(
            stderr.contains("staging those tables again"),
            "{point}: the expired streams were not staged again:\n{stderr}"
        );
        assert_eq!(
            h.table_counts().await,
            expected(),
            "after {point} and expiry"
        );
        let out = cf2bq_ok(&h, &["ingest", &uri], &[]);
        assert!(out.contains("AlreadyDone"), "{point}: {out}");
    }
}

#[tokio::test]
async fn a_deleted_object_answered_with_403_is_acknowledged_not_dead_lettered() {
    let h = Harness::new("deleted403").await;
    let bucket = h.bucket("logs").await;
    let key = "cf/E2QWRUHAPOMQZL.2026-03-01-10.del40301.gz";
    h.put(&bucket, key, gzip(&three_date_file())).await;
    let announced = h.announced(&bucket, key).await;
    h.s3.delete_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    // Real S3 answers 403, not 404, for a missing key to a role without s3:ListBucket.
    let proxy = cf2bq_tests::FaultProxy::start(1, &["aws:not_found_as_403=1"]);
    let event =
        cf2bq_tests::sqs_event(&[
            shared::event::s3_notification(&announced, "ObjectCreated:Put").to_string(),
        ]);
    let event_file = std::env::temp_dir().join(cf2bq_tests::unique("event403"));
    std::fs::write(&event_file, event).unwrap();
    let (ok, stdout, stderr, _) = h.run_binary_with(
        "ingest",
        &["--invoke", event_file.to_str().unwrap()],
        &proxy.env(),
    );
    assert!(ok, "{stdout}\n{stderr}");
    let response: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        response["batchItemFailures"],
        serde_json::json!([]),
        "a deleted object is acknowledged:\n{stderr}"
    );
    assert!(stderr.contains("object is gone"), "{stderr}");
    // The CLI path (HeadObject, no ETag known) says the same.
    let uri = format!("s3://{bucket}/{key}");
    let (ok, stdout, stderr, _) = h.run_binary_with("cf2bq", &["ingest", &uri], &proxy.env());
    assert!(ok && stdout.contains(": Gone"), "{stdout}\n{stderr}");
    assert_eq!(h.table_counts().await, BTreeMap::new());
}

/// Runs `ingest --invoke` (the Lambda handler) on notifications for `objects`; returns the
/// batch response and the calls the invocation counted (its `Calls.*` metrics).
fn invoke(
    h: &Harness,
    objects: &[shared::event::ObjectRef],
    env: &[(&str, &str)],
) -> (bool, serde_json::Value, BTreeMap<String, f64>, String) {
    let bodies: Vec<String> = objects
        .iter()
        .map(|o| shared::event::s3_notification(o, "ObjectCreated:Put").to_string())
        .collect();
    let event_file = std::env::temp_dir().join(cf2bq_tests::unique("event"));
    std::fs::write(&event_file, cf2bq_tests::sqs_event(&bodies)).unwrap();
    // Metrics are printed (EMF) only inside Lambda.
    let mut env = env.to_vec();
    env.push(("AWS_LAMBDA_FUNCTION_NAME", "ingest"));
    let (ok, stdout, stderr, _) =
        h.run_binary_with("ingest", &["--invoke", event_file.to_str().unwrap()], &env);
    let mut response = serde_json::Value::Null;
    let mut calls = BTreeMap::new();
    for doc in stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if doc.get("batchItemFailures").is_some() {
            response = doc;
        } else if let Some(fields) = doc.as_object() {
            for (name, value) in fields {
                if let (Some(api), Some(n)) = (name.strip_prefix("Calls."), value.as_f64()) {
                    *calls.entry(api.to_string()).or_default() += n;
                }
            }
        }
    }
    (ok, response, calls, stderr)
}

/// `rows` lines of one date.
fn one_date_file(rows: usize) -> String {
    let mut text = header_33();
    for i in 0..rows {
        text += &format!(
            "2026-03-05\t10:{:02}:{:02}\tFRA56-P1\t512\t192.0.2.{}\tGET\td1.cloudfront.net\t/spread/{i}\t200\t-\tcurl/8\t-\t-\tHit\tid{i}\td1.cloudfront.net\thttps\t34\t0.002\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t443\t0.001\tHit\ttext/html\t512\t-\t-\n",
            i / 60,
            i % 60,
            i % 250
        );
    }
    text
}

#[tokio::test]
async fn a_large_table_spreads_over_streams_within_the_budget_and_commits_them_together() {
    // Requests of ~1 KB, another stream every 2 KB per stream, at most 3 connections.
    let spread = [
        ("CF2BQ_LEASE_SECONDS", "1"),
        ("CF2BQ_BATCH_BYTES", "1000"),
        ("CF2BQ_STREAM_SPREAD_BYTES", "2000"),
        ("CF2BQ_MAX_CONNECTIONS", "3"),
    ];
    let expected = BTreeMap::from([("cloudfront_20260305".to_string(), 60)]);
    for (case, resume_faults) in [("plain", ""), ("expired", "expired=1")] {
        let h = Harness::with("spread", &spread).await;
        let bucket = h.bucket("logs").await;
        let key = format!("cf/E2QWRUHAPOMQZL.2026-03-05-10.spread{case}.gz");
        h.put(&bucket, &key, gzip(&one_date_file(60))).await;
        let object = h.announced(&bucket, &key).await;

        // Staged and planned over three streams, then the invocation dies before committing.
        let (ok, _, calls, stderr) = invoke(
            &h,
            std::slice::from_ref(&object),
            &[
                ("CF2BQ_FAULT", "after_plan_recorded"),
                ("RUST_LOG", "info,shared=debug"),
            ],
        );
        assert!(
            !ok && stderr.contains("fault injected at after_plan_recorded"),
            "{case}: {stderr}"
        );
        // A crashed process prints no metrics: count the streams it planned from its log.
        assert_eq!(
            stderr.matches("pending stream open").count(),
            3,
            "{case}: one stream, then two more as the table grew, and no more (budget 3):\n{stderr}"
        );
        assert!(calls.is_empty(), "{case}: {calls:?}");
        let before = h.table_counts().await;
        assert!(
            before.values().all(|&n| n == 0),
            "{case}: nothing visible yet: {before:?}"
        );

        // The redelivery finishes the batch: the three streams committed as one.
        lease_expires();
        let mut env = vec![];
        if !resume_faults.is_empty() {
            env.push(("CF2BQ_GRPC_FAULTS", resume_faults));
        }
        let (ok, response, calls, stderr) = invoke(&h, std::slice::from_ref(&object), &env);
        assert!(ok, "{case}: {stderr}");
        assert_eq!(
            response["batchItemFailures"],
            serde_json::json!([]),
            "{case}: {stderr}"
        );
        assert_eq!(
            h.table_counts().await,
            expected,
            "{case}: every row exactly once"
        );
        let created = calls
            .get("BigQuery.CreateWriteStream")
            .copied()
            .unwrap_or(0.0);
        match case {
            "plain" => assert_eq!(created, 0.0, "a resume opens no stream: {calls:?}"),
            _ => {
                assert!(stderr.contains("staging those tables again"), "{stderr}");
                assert_eq!(created, 3.0, "staged again over three streams: {calls:?}");
            }
        }
        let distinct = h
            .query("SELECT COUNT(DISTINCT source_line) FROM `{ds}.cloudfront_20260305`")
            .await;
        assert_eq!(
            distinct[0][0].as_deref(),
            Some("60"),
            "{case}: no line twice"
        );

        let (ok, response, _, stderr) = invoke(&h, std::slice::from_ref(&object), &[]);
        assert!(
            ok && response["batchItemFailures"] == serde_json::json!([]),
            "{stderr}"
        );
        assert_eq!(
            h.table_counts().await,
            expected,
            "{case}: a third delivery adds nothing"
        );
    }
}
