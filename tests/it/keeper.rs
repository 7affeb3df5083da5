//! The table keeper against the emulators, alerts read from an SQS queue subscribed to the
//! SNS topic, as an operator's e-mail or chat subscription would receive them.

use cf2bq_tests::{gzip, header_33, Harness};
use shared::bigquery::TableSpec;
use shared::cloudfront::parse::parse_date;
use shared::keeper::freshness::Memory;
use shared::keeper::{self, KeeperOptions};
use shared::route::Layout;
use shared::source::LogObject;

const HOUR: i64 = 3_600_000_000;

fn line(date: &str) -> String {
    format!("{date}\t10:00:00\tFRA56-P1\t512\t192.0.2.1\tGET\td1.cloudfront.net\t/x\t200\t-\tcurl/8\t-\t-\tHit\tid\td1.cloudfront.net\thttps\t34\t0.002\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t443\t0.001\tHit\ttext/html\t512\t-\t-\n")
}

struct Alerts {
    topic: String,
    queue: String,
}

async fn alerts(h: &Harness) -> Alerts {
    let sns = aws_sdk_sns::Client::new(&h.aws);
    let topic = sns
        .create_topic()
        .name(cf2bq_tests::unique("alerts"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let queue = h
        .create_queue(&cf2bq_tests::unique("alert-inbox"), &[])
        .await;
    let arn = h.queue_arn(&queue).await;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(arn)
        .send()
        .await
        .unwrap();
    Alerts { topic, queue }
}

/// (subject, message) of every alert received.
async fn received(h: &Harness, queue: &str) -> Vec<(String, String)> {
    let out = h
        .sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    out.messages
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let envelope: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            (
                envelope["Subject"].as_str().unwrap_or_default().to_string(),
                envelope["Message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn options(layout: Layout) -> KeeperOptions {
    KeeperOptions {
        layout,
        partition_expiration_days: None,
        create_ahead_days: 1,
        lookback_days: 3,
        stale_hours: 3,
        repair: true,
    }
}

fn sharded() -> Layout {
    Layout::Sharded {
        prefix: "cloudfront_".into(),
    }
}

/// Tables for `days` (relative to today 2026-03-10) and fresh rows in today's table.
async fn setup(h: &Harness, days: &[i32]) -> i32 {
    let today = parse_date("2026-03-10").unwrap();
    for d in days {
        h.bq.ensure_table(&TableSpec::for_date(&sharded(), today + d, None))
            .await
            .unwrap();
    }
    let dir = std::env::temp_dir().join(cf2bq_tests::unique("keeper"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("E2QWRUHAPOMQZL.2026-03-10-10.keeper01.gz");
    std::fs::write(&path, gzip(&(header_33() + &line("2026-03-10")))).unwrap();
    h.ingestor()
        .await
        .ingest(&LogObject::File(path))
        .await
        .unwrap();
    today
}

#[tokio::test]
async fn a_missing_table_is_alerted_and_created() {
    let h = Harness::new("keeper_missing").await;
    let inbox = alerts(&h).await;
    let today = setup(&h, &[-3, -2, 0]).await; // 2026-03-09 is missing
    let sns = aws_sdk_sns::Client::new(&h.aws);

    let report = keeper::run(
        &h.bq,
        &options(sharded()),
        &Memory::new(),
        today,
        shared::clock::now_micros(),
    )
    .await
    .unwrap();
    assert_eq!(report.missing, vec!["cloudfront_20260309"]);
    assert_eq!(report.created_missing, vec!["cloudfront_20260309"]);
    assert_eq!(report.created_ahead, vec!["cloudfront_20260311"]);
    assert!(!report.stale);
    assert!(keeper::alert(&sns, &inbox.topic, &report, &h.bq.dataset)
        .await
        .unwrap());

    let got = received(&h, &inbox.queue).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let (subject, message) = &got[0];
    assert_eq!(
        subject,
        &format!("cf2bq ALERT ({}): 1 missing table", h.bq.dataset)
    );
    assert!(
        message.starts_with(&format!(
            "MISSING TABLES in {}: cloudfront_20260309.\n",
            h.bq.dataset
        )),
        "{message}"
    );
    assert!(
        message.contains("The keeper created cloudfront_20260309 so late logs have a home."),
        "{message}"
    );
    assert!(
        message.contains("cf2bq replay --bucket <log bucket> --from <date> --to <date>"),
        "{message}"
    );
    assert!(!message.contains("STALE"), "{message}");
    assert!(h
        .bq
        .get_table("cloudfront_20260309")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn stale_data_is_alerted() {
    let h = Harness::new("keeper_stale").await;
    let inbox = alerts(&h).await;
    let today = setup(&h, &[-3, -2, -1, 0]).await;
    let sns = aws_sdk_sns::Client::new(&h.aws);

    // Five hours later, nothing new has arrived.
    let later = shared::clock::now_micros() + 5 * HOUR;
    let report = keeper::run(&h.bq, &options(sharded()), &Memory::new(), today, later)
        .await
        .unwrap();
    assert!(report.missing.is_empty());
    assert!(report.stale);
    assert!(keeper::alert(&sns, &inbox.topic, &report, &h.bq.dataset)
        .await
        .unwrap());
    let got = received(&h, &inbox.queue).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let (subject, message) = &got[0];
    assert_eq!(
        subject,
        &format!("cf2bq ALERT ({}): no data for 5 h", h.bq.dataset)
    );
    assert!(
        message.starts_with(&format!(
            "STALE DATA in {}: no new rows for 5.0 hours (threshold 3 h).",
            h.bq.dataset
        )),
        "{message}"
    );
    let details: serde_json::Value =
        serde_json::from_str(&message[message.find("Details (JSON):\n").unwrap() + 16..]).unwrap();
    assert_eq!(details["stale"], true);
    assert_eq!(details["tables"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn all_clear_sends_nothing_and_a_second_run_changes_nothing() {
    let h = Harness::new("keeper_clear").await;
    let inbox = alerts(&h).await;
    let today = setup(&h, &[-3, -2, -1, 0]).await;
    let sns = aws_sdk_sns::Client::new(&h.aws);

    let first = keeper::run(
        &h.bq,
        &options(sharded()),
        &Memory::new(),
        today,
        shared::clock::now_micros(),
    )
    .await
    .unwrap();
    assert!(!first.has_problems(), "{first:?}");
    assert_eq!(first.created_ahead, vec!["cloudfront_20260311"]);
    assert!(!keeper::alert(&sns, &inbox.topic, &first, &h.bq.dataset)
        .await
        .unwrap());
    let second = keeper::run(
        &h.bq,
        &options(sharded()),
        &Memory::new(),
        today,
        shared::clock::now_micros(),
    )
    .await
    .unwrap();
    assert!(
        second.created_ahead.is_empty()
            && second.created_missing.is_empty()
            && second.patched.is_empty()
    );
    assert_eq!(
        second.tables.iter().map(|t| t.rows).collect::<Vec<_>>(),
        vec![Some(0), Some(0), Some(0), Some(1), Some(0)]
    );
    assert!(received(&h, &inbox.queue).await.is_empty());
}

#[tokio::test]
async fn an_older_table_gains_the_columns_it_lacks() {
    let h = Harness::new("keeper_patch").await;
    let today = setup(&h, &[-3, -1, 0]).await;
    // A table from an older cf2bq, before most columns existed.
    h.query(
        "CREATE TABLE `{ds}.cloudfront_20260308` (log_date DATE, log_time TIME, sc_status INT64)",
    )
    .await;

    let report = keeper::run(
        &h.bq,
        &options(sharded()),
        &Memory::new(),
        today,
        shared::clock::now_micros(),
    )
    .await
    .unwrap();
    let added = &report.patched["cloudfront_20260308"];
    assert_eq!(added.len(), shared::bigquery::schema::columns().len() - 3);
    assert!(
        added.contains(&"cs_user_agent".to_string()) && added.contains(&"extra_fields".to_string())
    );
    // Standard logging v2's columns too, typed.
    for column in [
        "timestamp",
        "asn",
        "c_country",
        "origin_fbl",
        "connection_id",
    ] {
        assert!(added.contains(&column.to_string()), "{column}: {added:?}");
    }
    let table =
        h.bq.get_table("cloudfront_20260308")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        table.schema.fields.unwrap().len(),
        shared::bigquery::schema::columns().len()
    );
    // Patched once: the next run has nothing to do.
    let again = keeper::run(
        &h.bq,
        &options(sharded()),
        &Memory::new(),
        today,
        shared::clock::now_micros(),
    )
    .await
    .unwrap();
    assert!(again.patched.is_empty());
}

#[tokio::test]
async fn the_partitioned_layout_end_to_end() {
    let h = Harness::with(
        "partitioned",
        &[
            ("CF2BQ_TABLE_LAYOUT", "partitioned"),
            ("CF2BQ_PARTITIONED_TABLE", "cf_logs"),
        ],
    )
    .await;
    let dir = std::env::temp_dir().join(cf2bq_tests::unique("part"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("E2QWRUHAPOMQZL.2026-03-10-00.part0001.gz");
    std::fs::write(
        &path,
        gzip(&(header_33() + &line("2026-03-09") + &line("2026-03-10") + &line("2026-03-10"))),
    )
    .unwrap();
    let report = h
        .ingestor()
        .await
        .ingest(&LogObject::File(path))
        .await
        .unwrap();
    assert_eq!(report.tables, [("cf_logs".to_string(), 3)].into());

    let table = h.bq.get_table("cf_logs").await.unwrap().unwrap();
    let partitioning = table.time_partitioning.unwrap();
    assert_eq!(
        (partitioning.r#type.as_str(), partitioning.field.as_deref()),
        ("DAY", Some("log_date"))
    );
    assert!(table
        .clustering
        .unwrap()
        .fields
        .unwrap()
        .contains(&"x_host_header".to_string()));
    let per_day = h
        .query(
            "SELECT CAST(log_date AS STRING), COUNT(*) FROM `{ds}.cf_logs` GROUP BY 1 ORDER BY 1",
        )
        .await;
    assert_eq!(
        per_day,
        vec![
            vec![Some("2026-03-09".into()), Some("1".into())],
            vec![Some("2026-03-10".into()), Some("2".into())]
        ]
    );

    let layout = Layout::Partitioned {
        table: "cf_logs".into(),
    };
    let today = parse_date("2026-03-10").unwrap();
    let checked = keeper::run(
        &h.bq,
        &options(layout),
        &Memory::new(),
        today,
        shared::clock::now_micros(),
    )
    .await
    .unwrap();
    assert!(!checked.has_problems(), "{checked:?}");
    assert_eq!(checked.tables.len(), 1, "one table holds every day");
    assert_eq!(checked.tables[0].rows, Some(3));
}

/// The keeper Lambda's alerting (`keeper::alerts::notify`) against moto: the state survives
/// between runs in the ledger table, so a problem is alerted once, reminded after the repeat
/// period, and cleared once.
#[tokio::test]
async fn alerts_are_remembered_between_runs() {
    use shared::keeper::alerts::{self, AlertState, AlertStore, NoticeKind};
    use shared::keeper::KeeperReport;

    let h = Harness::new("keeper_alert_state").await;
    let inbox = alerts(&h).await;
    let sns = aws_sdk_sns::Client::new(&h.aws);
    let key = alerts::state_key(&h.config.bigquery.project, &h.bq.dataset, &sharded());
    let store = AlertStore::new(&h.aws, &h.config.ledger_table, key);
    let t0 = shared::clock::now_micros();
    let stale = KeeperReport {
        checked_at_micros: t0,
        last_ingest_micros: Some(t0 - 5 * HOUR),
        stale: true,
        stale_hours: 3,
        ..Default::default()
    };
    let fresh = KeeperReport {
        stale: false,
        last_ingest_micros: Some(t0),
        ..stale.clone()
    };
    let ds = h.bq.dataset.clone();
    let runs = [
        (&stale, t0, Some(NoticeKind::Alert)),
        (&stale, t0 + HOUR, None),
        (&stale, t0 + 24 * HOUR, Some(NoticeKind::Reminder)),
        (&stale, t0 + 25 * HOUR, None),
        (&fresh, t0 + 26 * HOUR, Some(NoticeKind::AllClear)),
        (&fresh, t0 + 27 * HOUR, None),
    ];
    for (i, (report, now, want)) in runs.into_iter().enumerate() {
        let sent = alerts::notify(&sns, &inbox.topic, &store, report, &ds, 24, now)
            .await
            .unwrap();
        assert_eq!(sent, want, "run {i}");
        if i == 0 {
            let kept = store.load().await.unwrap();
            assert_eq!(kept.open["stale"].since_micros, t0);
        }
    }
    assert_eq!(store.load().await.unwrap(), AlertState::default());

    let mut subjects: Vec<String> = received(&h, &inbox.queue)
        .await
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            format!("cf2bq ALERT ({ds}): no data for 5 h"),
            format!("cf2bq ALL CLEAR ({ds}): no new rows for 5 h (threshold 3 h)"),
            format!("cf2bq REMINDER ({ds}): no data for 5 h"),
        ]
    );
}

/// The Lambda's memory of the tables round-trips through the ledger table, under its own
/// reserved key, and a run given it judges the same freshness as the run that made it.
#[tokio::test]
async fn the_table_memory_is_kept_in_the_ledger_between_runs() {
    let h = Harness::new("keeper_memory").await;
    let today = setup(&h, &[-3, -2, -1, 0]).await;
    let store = keeper::memory_store(&h.aws, &h.config);
    assert!(store.key().starts_with("keeper#tables#"), "{}", store.key());
    assert_eq!(store.load::<Memory>().await.unwrap(), Memory::new());

    let now = shared::clock::now_micros();
    let first = keeper::run(&h.bq, &options(sharded()), &Memory::new(), today, now)
        .await
        .unwrap();
    let memory = first.memory();
    assert_eq!(memory["cloudfront_20260310"].rows, 1, "{memory:?}");
    store.save(&memory, now).await.unwrap();
    let kept: Memory = store.load().await.unwrap();
    assert_eq!(kept, memory);

    let second = keeper::run(&h.bq, &options(sharded()), &kept, today, now + HOUR)
        .await
        .unwrap();
    assert_eq!(second.last_ingest_micros, first.last_ingest_micros);
    assert!(second.last_ingest_micros.is_some());
}

// ---------------------------------------------------------------------------------------------
// Metadata only: a model of BigQuery's table metadata, every request counted
// ---------------------------------------------------------------------------------------------

mod metadata_only {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use cf2bq_tests::bq_mock::{error_body, Answer, MockServer, Seen, DATASET, PROJECT};
    use serde_json::{json, Value};
    use shared::keeper::freshness::Memory;
    use shared::keeper::{self, KeeperReport};

    use super::{options, sharded, HOUR};

    type Tables = Arc<Mutex<HashMap<String, Value>>>;

    fn millis(micros: i64) -> String {
        (micros / 1000).to_string()
    }

    /// Table metadata as real BigQuery keeps it: a commit moves `numRows` and
    /// `lastModifiedTime`; creating a table and patching its schema set `lastModifiedTime` to
    /// now although no row arrived. (bqemulator 1.4 counts committed rows in `numRows` but
    /// leaves `lastModifiedTime` at the creation or last patch, so it cannot show this.) Anything else (query jobs)
    /// answers 400: the keeper must not send any.
    async fn bigquery(tables: Tables) -> MockServer {
        let base = format!("/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}/tables");
        MockServer::start(move |request: &Seen| {
            let path = request.target.split('?').next().unwrap_or_default();
            let now = millis(shared::clock::now_micros());
            let mut tables = tables.lock().unwrap();
            let name = path.strip_prefix(&format!("{base}/")).map(str::to_string);
            match (request.method.as_str(), name) {
                ("GET", Some(name)) => match tables.get(&name) {
                    Some(table) => Answer::Json(200, table.clone()),
                    None => Answer::Json(404, error_body(404, "NOT_FOUND", "no table", "notFound")),
                },
                ("POST", None) if path == base => {
                    let mut table = request.body.clone();
                    let name = table["tableReference"]["tableId"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    table["numRows"] = json!("0");
                    table["numBytes"] = json!("0");
                    table["creationTime"] = json!(now);
                    table["lastModifiedTime"] = json!(now);
                    tables.insert(name, table.clone());
                    Answer::Json(200, table)
                }
                ("PATCH", Some(name)) => {
                    let table = tables.get_mut(&name).expect("patching a table that exists");
                    table["schema"] = request.body["schema"].clone();
                    table["lastModifiedTime"] = json!(now);
                    Answer::Json(200, table.clone())
                }
                // Permanent, so that a call the keeper must not make fails the run at once.
                _ => Answer::Json(
                    400,
                    error_body(400, "INVALID_ARGUMENT", "not modelled", "invalid"),
                ),
            }
        })
        .await
    }

    fn table(name: &str, rows: u64, modified_micros: i64, columns: usize) -> Value {
        let mut schema = serde_json::to_value(shared::bigquery::schema::table_schema()).unwrap();
        schema["fields"].as_array_mut().unwrap().truncate(columns);
        json!({
            "kind": "bigquery#table",
            "tableReference": {"projectId": PROJECT, "datasetId": DATASET, "tableId": name},
            "schema": schema,
            "numRows": rows.to_string(),
            "numBytes": (rows * 400).to_string(),
            "creationTime": millis(modified_micros - 24 * HOUR),
            "lastModifiedTime": millis(modified_micros),
            "type": "TABLE",
        })
    }

    /// The query-job requests the mock received (jobs.query, getQueryResults, jobs.insert).
    fn query_jobs(server: &MockServer) -> Vec<Seen> {
        let seen = server.seen();
        let jobs: Vec<Seen> = seen.iter().filter(|s| s.is_job()).cloned().collect();
        assert!(!seen.is_empty(), "the keeper talked to the mock");
        jobs
    }

    fn rows(report: &KeeperReport) -> Vec<Option<u64>> {
        report.tables.iter().map(|t| t.rows).collect()
    }

    /// Hourly runs read metadata only (no jobs.query, no getQueryResults, no jobs.insert);
    /// the keeper's own schema patch and creations move lastModifiedTime but do not make the
    /// data look fresh; rows that do arrive do.
    #[tokio::test]
    async fn keeper_runs_issue_no_query_and_are_not_fooled_by_their_own_patches() {
        // Whole milliseconds, as BigQuery keeps lastModifiedTime.
        let now = shared::clock::now_micros() / 1000 * 1000;
        let full = shared::bigquery::schema::columns().len();
        let tables: Tables = Arc::new(Mutex::new(HashMap::from([
            (
                "cloudfront_20260307".into(),
                table("cloudfront_20260307", 100, now - 30 * HOUR, full),
            ),
            // The last rows arrived 5 h ago, in a table of an older cf2bq (3 columns).
            (
                "cloudfront_20260308".into(),
                table("cloudfront_20260308", 200, now - 5 * HOUR, 3),
            ),
            // Created ahead yesterday, nothing in it yet.
            (
                "cloudfront_20260310".into(),
                table("cloudfront_20260310", 0, now - 20 * HOUR, full),
            ),
        ])));
        let server = bigquery(tables.clone()).await;
        let bq = server.client().await;
        let today = shared::cloudfront::parse::parse_date("2026-03-10").unwrap();

        let first = keeper::run(&bq, &options(sharded()), &Memory::new(), today, now)
            .await
            .unwrap();
        assert_eq!(first.missing, ["cloudfront_20260309"]);
        assert_eq!(first.created_missing, ["cloudfront_20260309"]);
        assert_eq!(first.created_ahead, ["cloudfront_20260311"]);
        assert_eq!(first.patched["cloudfront_20260308"].len(), full - 3);
        assert_eq!(rows(&first), [Some(100), Some(200), None, Some(0), None]);
        assert_eq!(first.last_ingest_micros, Some(now - 5 * HOUR));
        assert!(first.stale, "{first:?}");
        // The patch moved lastModifiedTime, as it does in BigQuery.
        let patched_at: i64 = tables.lock().unwrap()["cloudfront_20260308"]["lastModifiedTime"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(patched_at * 1000 >= now - 1_000, "{patched_at}");

        // An hour later: the patched table and the new empty ones read as modified just now.
        let later = now + HOUR;
        let second = keeper::run(&bq, &options(sharded()), &first.memory(), today, later)
            .await
            .unwrap();
        assert!(second.patched.is_empty() && second.created_ahead.is_empty());
        assert_eq!(
            rows(&second),
            [Some(100), Some(200), Some(0), Some(0), Some(0)]
        );
        assert_eq!(
            second.last_ingest_micros,
            Some(now - 5 * HOUR),
            "not fooled"
        );
        assert!(second.stale);
        // Without the memory the patch would pass for rows arriving.
        let forgetful = keeper::run(&bq, &options(sharded()), &Memory::new(), today, later)
            .await
            .unwrap();
        assert!(forgetful.last_ingest_micros.unwrap() >= now - 1_000);

        // Rows arrive in today's table (a Storage Write commit: numRows and lastModifiedTime).
        let arrived = later - 10 * 60_000_000;
        tables.lock().unwrap().insert(
            "cloudfront_20260310".into(),
            table("cloudfront_20260310", 7, arrived, full),
        );
        let third = keeper::run(
            &bq,
            &options(sharded()),
            &second.memory(),
            today,
            later + HOUR,
        )
        .await
        .unwrap();
        assert_eq!(third.last_ingest_micros, Some(arrived));
        assert!(!third.stale, "{third:?}");
        assert_eq!(third.tables[3].rows, Some(7));

        let jobs = query_jobs(&server);
        assert!(jobs.is_empty(), "query jobs sent: {jobs:#?}");
        let calls: std::collections::BTreeSet<String> =
            server.seen().iter().map(|s| s.method.clone()).collect();
        let expected: std::collections::BTreeSet<String> =
            ["GET", "PATCH", "POST"].map(String::from).into();
        assert_eq!(
            calls, expected,
            "tables.get, tables.patch, tables.insert only"
        );
    }
}
