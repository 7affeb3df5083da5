//! Replay through the ingest queue: by date range, skipping objects already done, forced
//! (replacing earlier rows), and moving dead-lettered messages back. Exact counts each time.

use std::collections::BTreeMap;

use cf2bq_tests::Harness;
use shared::generate::{write_object, GenOptions, Manifest};

/// Expected rows per table for the objects whose index is in `indices`.
fn expected(manifest: &Manifest, indices: &[usize]) -> BTreeMap<String, u64> {
    let mut tables = BTreeMap::new();
    for &i in indices {
        for (date, n) in &manifest.objects[i].rows_per_date {
            *tables
                .entry(format!("cloudfront_{}", date.replace('-', "")))
                .or_default() += n;
        }
    }
    tables
}

#[tokio::test]
async fn replay_by_date_skips_done_objects_and_force_replaces_rows() {
    let h = Harness::new("replay").await;
    let bucket = h.bucket("logs").await;
    let queues = h.queues(3).await;
    // Four objects over two dates, no late lines: each object's rows stay on its key's date.
    let options = GenOptions {
        objects: 4,
        days: 2,
        lines_per_object: 200,
        late_percent: 0,
        prefix: "cf/".into(),
        ..Default::default()
    };
    let manifest = shared::generate::upload(&h.s3, &bucket, &options)
        .await
        .unwrap();
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", "--bucket", &bucket, "--queue", &queues.queue];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr, _) = h.run_binary("cf2bq", &args);
        assert!(ok, "replay {extra:?} failed:\n{stdout}\n{stderr}");
        stdout
    };
    let ingest = || {
        let (ok, stdout, stderr, _) = h.run_binary("ingest", &["--poll-queue", &queues.queue]);
        assert!(ok, "ingest failed:\n{stdout}\n{stderr}");
    };

    // Objects 0 and 2 are dated 2026-11-20, 1 and 3 are 2026-11-21.
    let dry = replay(&["--from", "2026-11-20", "--to", "2026-11-20", "--dry-run"]);
    assert_eq!(dry.matches("would send").count(), 2, "{dry}");
    let out = replay(&["--from", "2026-11-20", "--to", "2026-11-20"]);
    assert!(
        out.contains("4 listed, 2 selected, 0 already done (skipped), 2 sent"),
        "{out}"
    );
    ingest();
    assert_eq!(h.table_counts().await, expected(&manifest, &[0, 2]));

    let out = replay(&[]);
    assert!(
        out.contains("4 listed, 4 selected, 2 already done (skipped), 2 sent"),
        "{out}"
    );
    ingest();
    let all = expected(&manifest, &[0, 1, 2, 3]);
    assert_eq!(h.table_counts().await, all);

    // Forced: every object re-ingested, its earlier rows replaced: same counts, new rows.
    let before = h
        .query("SELECT MAX(UNIX_MICROS(ingest_time)) FROM `{ds}.cloudfront_20261120`")
        .await;
    let out = replay(&["--force"]);
    assert!(
        out.contains("4 selected, 0 already done (skipped), 4 sent with --force"),
        "{out}"
    );
    ingest();
    assert_eq!(h.table_counts().await, all);
    let older = h
        .query(&format!(
            "SELECT COUNT(*) FROM `{{ds}}.cloudfront_20261120` WHERE UNIX_MICROS(ingest_time) <= {}",
            before[0][0].as_deref().unwrap()
        ))
        .await;
    assert_eq!(
        older[0][0].as_deref(),
        Some("0"),
        "rows of the earlier load remain"
    );
}

#[tokio::test]
async fn dead_lettered_messages_are_moved_back_and_ingested() {
    let h = Harness::new("redrive").await;
    let bucket = h.bucket("logs").await;
    let queues = h.queues(3).await;
    let options = GenOptions {
        objects: 1,
        lines_per_object: 150,
        ..Default::default()
    };
    let mut body = Vec::new();
    let object = write_object(&options, 0, &mut body).unwrap();
    h.put(&bucket, &object.key, body).await;
    // As if every attempt had failed (say BigQuery was down) and SQS had dead-lettered it.
    let notification = shared::event::s3_notification(
        &shared::event::ObjectRef {
            bucket: bucket.clone(),
            key: object.key.clone(),
            size: None,
            etag: None,
            version_id: None,
        },
        "ObjectCreated:Put",
    );
    h.sqs
        .send_message()
        .queue_url(&queues.dlq)
        .message_body(notification.to_string())
        .send()
        .await
        .unwrap();

    let (ok, stdout, stderr, _) =
        h.run_binary("cf2bq", &["replay", "--from-dlq", "--queue", &queues.queue]);
    assert!(
        ok && stdout.contains("moved 1 message(s)"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(h.queue_depth(&queues.dlq).await, 0);
    let (ok, stdout, stderr, _) = h.run_binary("ingest", &["--poll-queue", &queues.queue]);
    assert!(ok, "{stdout}\n{stderr}");
    let mut manifest = Manifest::default();
    manifest.add(object);
    assert_eq!(h.table_counts().await, expected(&manifest, &[0]));
}
