//! The BigQuery adapter under the faults the real service shows and the emulator does not:
//! query jobs that outlive jobs.query, 5xx answers, dropped AppendRows connections, lost
//! commit answers, garbage-collected streams.
//!
//! REST behaviour is checked against a loopback mock of the BigQuery REST API (HTTP/1.1 on a
//! tokio listener, `cf2bq_tests::bq_mock`), which records every request; gRPC behaviour against the
//! emulator, with faults injected by the adapter (`FaultPlan`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use cf2bq_tests::bq_mock::{error_body, Answer, MockServer, Seen};
use cf2bq_tests::Harness;
use serde_json::{json, Value};
use shared::bigquery::{auth, CommitOutcome, FaultPlan, StreamStatus, TableSpec, WriteApi};
use shared::config::BigQueryAuth;
use shared::retry::Transient;
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// A mock BigQuery REST server answering from a script
// ---------------------------------------------------------------------------------------------

/// Answers requests with a script, in order (one script per route: `POST` = jobs.query,
/// `GET` = jobs.getQueryResults); an exhausted script answers 500.
struct Mock;

impl Mock {
    async fn start(posts: Vec<Answer>, gets: Vec<Answer>) -> MockServer {
        let scripts = Mutex::new((VecDeque::from(posts), VecDeque::from(gets)));
        MockServer::start(move |request: &Seen| {
            let mut scripts = scripts.lock().unwrap();
            let script = if request.method == "POST" {
                &mut scripts.0
            } else {
                &mut scripts.1
            };
            script.pop_front().unwrap_or_else(|| {
                Answer::Json(
                    500,
                    error_body(500, "INTERNAL", "mock script exhausted", "internalError"),
                )
            })
        })
        .await
    }
}

fn job_reference() -> Value {
    json!({"projectId": "mock-project", "jobId": "job_slow_1", "location": "EU"})
}

/// An answer of a job that is still running.
fn running() -> Value {
    json!({"kind": "bigquery#queryResponse", "jobReference": job_reference(), "jobComplete": false})
}

// ---------------------------------------------------------------------------------------------
// REST: queries that outlive jobs.query, and retries
// ---------------------------------------------------------------------------------------------

/// A DELETE still running when jobs.query returns is waited for with getQueryResults, not
/// submitted again; its affected rows come from the completed result.
#[tokio::test]
async fn a_dml_job_that_outlives_jobs_query_is_polled_to_completion_not_resubmitted() {
    let done = json!({
        "kind": "bigquery#getQueryResultsResponse",
        "jobReference": job_reference(),
        "jobComplete": true,
        "numDmlAffectedRows": "42",
        "totalRows": "0",
    });
    let mock = Mock::start(
        vec![Answer::Json(200, running())],
        vec![Answer::Json(200, running()), Answer::Json(200, done)],
    )
    .await;
    let bq = mock.client().await;
    let affected = bq
        .execute_dml(
            "DELETE FROM `ds.t` WHERE source_object = @object",
            &[("object", "STRING", "s3://b/k".into())],
        )
        .await
        .expect("the job completes");
    assert_eq!(affected, 42);

    let seen = mock.seen();
    let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == "POST").collect();
    assert_eq!(
        posts.len(),
        1,
        "jobs.query submitted exactly once: {seen:#?}"
    );
    assert_eq!(
        posts[0].target,
        "/bigquery/v2/projects/mock-project/queries"
    );
    let body = &posts[0].body;
    let request_id = body["requestId"].as_str().expect("a requestId");
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    assert_eq!(body["useQueryCache"], json!(false), "{body}");
    assert_eq!(body["useLegacySql"], json!(false));
    assert_eq!(body["queryParameters"][0]["name"], json!("object"));
    let gets: Vec<&Seen> = seen.iter().filter(|s| s.method == "GET").collect();
    assert_eq!(gets.len(), 2, "polled until complete: {seen:#?}");
    for get in gets {
        assert!(
            get.target
                .starts_with("/bigquery/v2/projects/mock-project/queries/job_slow_1?"),
            "{}",
            get.target
        );
        assert!(
            get.target.contains("location=EU"),
            "the job's location: {}",
            get.target
        );
    }
}

/// A query's rows come from the completed getQueryResults answer.
#[tokio::test]
async fn a_query_that_outlives_jobs_query_returns_the_completed_rows() {
    let done = json!({
        "jobReference": job_reference(),
        "jobComplete": true,
        "schema": {"fields": [{"name": "n", "type": "INTEGER"}]},
        "rows": [{"f": [{"v": "7"}]}, {"f": [{"v": null}]}],
        "totalRows": "2",
    });
    let mock = Mock::start(
        vec![Answer::Json(200, running())],
        vec![Answer::Json(200, done)],
    )
    .await;
    let rows = mock.client().await.query("SELECT n FROM t").await.unwrap();
    assert_eq!(rows, vec![vec![Some("7".to_string())], vec![None]]);
    assert_eq!(mock.seen().len(), 2);
}

/// 503 and a dropped connection are retried in place, with the same requestId (so a
/// resubmitted DML statement is not run twice); a 400 fails at once.
#[tokio::test]
async fn transient_rest_failures_are_retried_with_the_same_request_id_and_permanent_ones_are_not() {
    let done =
        json!({"jobReference": job_reference(), "jobComplete": true, "numDmlAffectedRows": "3"});
    let mock = Mock::start(
        vec![
            Answer::Json(
                503,
                error_body(503, "UNAVAILABLE", "backend unavailable", "backendError"),
            ),
            Answer::Hangup,
            Answer::Json(200, done),
        ],
        vec![],
    )
    .await;
    let bq = mock.client().await;
    assert_eq!(
        bq.execute_dml("DELETE FROM t WHERE true", &[])
            .await
            .unwrap(),
        3
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let ids: Vec<&str> = seen
        .iter()
        .map(|s| s.body["requestId"].as_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one requestId per logical query: {ids:?}"
    );

    let mock = Mock::start(
        vec![
            Answer::Json(
                400,
                error_body(
                    400,
                    "INVALID_ARGUMENT",
                    "Syntax error: Unexpected end",
                    "invalidQuery",
                ),
            ),
            Answer::Json(200, json!({"jobComplete": true})),
        ],
        vec![],
    )
    .await;
    let e = mock.client().await.query("SELECT").await.unwrap_err();
    assert_eq!(mock.seen().len(), 1, "not retried");
    assert!(!e.is_transient());
    assert_eq!(e.http_status(), Some(400));
    let text = e.to_string();
    assert!(
        text.contains("jobs.query") && text.contains("HTTP 400") && text.contains("Syntax error"),
        "{text}"
    );

    // Throttling (429) is transient too.
    let mock = Mock::start(
        vec![
            Answer::Json(
                429,
                error_body(429, "RESOURCE_EXHAUSTED", "slow down", "rateLimitExceeded"),
            ),
            Answer::Json(
                200,
                json!({"jobComplete": true, "rows": [{"f": [{"v": "1"}]}]}),
            ),
        ],
        vec![],
    )
    .await;
    let rows = mock.client().await.query("SELECT 1").await.unwrap();
    assert_eq!(rows, vec![vec![Some("1".to_string())]]);
    assert_eq!(mock.seen().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Storage Write (gRPC) against the emulator, with adapter faults
// ---------------------------------------------------------------------------------------------

const OBJECT: &str = "s3://faults/object.gz";

/// A fresh dataset with one table of the quarantine schema (small rows).
async fn table(name: &str) -> (Harness, String) {
    let h = Harness::new(name).await;
    let spec = TableSpec {
        name: "rows".into(),
        partitioned: false,
        partition_expiration_days: None,
        description: "fault tests".into(),
    };
    h.bq.ensure_table_with_schema(&spec, shared::quarantine::table_schema())
        .await
        .expect("table");
    let path = h.bq.table_path("rows");
    (h, path)
}

/// A Storage Write client of the emulator with `faults` (`CF2BQ_GRPC_FAULTS` syntax).
async fn faulty(h: &Harness, faults: &str, seed: u64) -> (WriteApi, Arc<FaultPlan>) {
    let plan = Arc::new(FaultPlan::parse(faults, seed).expect("fault plan"));
    let auth = auth::authenticator(&BigQueryAuth::None, &h.aws)
        .await
        .unwrap();
    let api = WriteApi::with_faults(
        &h.config.bigquery.grpc_url,
        h.config.bigquery.grpc_gzip,
        auth,
        plan.clone(),
    )
    .unwrap();
    (api, plan)
}

/// Rows `from..to`: one per line number.
fn batch(from: u64, to: u64) -> shared::bigquery::rows::Rows {
    (from..to)
        .map(|line_no| {
            let line = shared::transform::RejectedLine {
                line_no,
                reason_code: "test",
                reason: "fault test".into(),
                raw: format!("line {line_no}").into_bytes(),
            };
            shared::quarantine::encode_row(OBJECT, &line, 1_700_000_000_000_000)
        })
        .collect()
}

/// (rows, distinct line numbers, smallest, largest) in the table.
async fn census(h: &Harness) -> (u64, u64, u64, u64) {
    let rows = h
        .query(
            "SELECT COUNT(*), COUNT(DISTINCT source_line), MIN(source_line), MAX(source_line) \
             FROM `{ds}.rows`",
        )
        .await;
    let n = |i: usize| rows[0][i].as_deref().unwrap_or("0").parse().unwrap();
    (n(0), n(1), n(2), n(3))
}

/// Appends `batches` batches of `size` rows (line numbers from 0), flushes and finalizes.
async fn stage(api: &WriteApi, path: &str, batches: u64, size: u64) -> String {
    let stream = api.create_pending_stream(path).await.expect("stream");
    let mut writer = api.writer_with(stream.clone(), shared::quarantine::proto_descriptor());
    for b in 0..batches {
        writer
            .append(batch(b * size, (b + 1) * size))
            .await
            .expect("append survives dropped connections");
        assert_eq!(writer.rows(), ((b + 1) * size) as i64);
    }
    let total = (batches * size) as i64;
    assert_eq!(writer.flush().await.expect("flush"), total);
    assert_eq!(
        api.finalize(&stream).await.expect("finalize"),
        total,
        "rows in the stream"
    );
    stream
}

/// Connections dropped after the service acknowledged an append (the acknowledgement lost):
/// the writer reconnects, resends every unacknowledged request at its offset, counts the
/// service's ALREADY_EXISTS as written, and the stream ends with exactly the rows appended,
/// once each. Unary calls failing with UNAVAILABLE are retried in place.
#[tokio::test]
async fn appends_survive_dropped_connections_with_exactly_the_rows_appended() {
    let (h, path) = table("append_drop").await;
    let (api, plan) = faulty(&h, "append_drop=0.3,unary_unavailable=0.2", 20260301).await;
    let stream = stage(&api, &path, 40, 25).await;
    assert_eq!(
        api.commit_stream(&path, &stream).await.expect("commit"),
        CommitOutcome::Committed
    );
    let injected = plan.injected();
    assert!(
        injected.append_drop >= 5,
        "faults were injected: {injected:?}"
    );
    assert!(
        injected.unary_unavailable >= 1,
        "faults were injected: {injected:?}"
    );
    assert_eq!(
        census(&h).await,
        (1000, 1000, 0, 999),
        "every row once, none missing"
    );
}

/// A commit applied whose answer is lost: the retry meets a committed stream, which is not
/// an error (real BigQuery: STREAM_ALREADY_COMMITTED; the emulator: INVALID_STREAM_STATE,
/// reported as Gone so the caller reads the data); the rows are in the table once.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_not_an_error_and_commits_once() {
    let (h, path) = table("commit_lost").await;
    let (api, plan) = faulty(&h, "commit_lost=1", 7).await;
    let stream = stage(&api, &path, 4, 25).await;
    let outcome = api
        .commit_stream(&path, &stream)
        .await
        .expect("not an error");
    assert_eq!(plan.injected().commit_lost, 1, "the first answer was lost");
    match &outcome {
        CommitOutcome::AlreadyCommitted => {}
        CommitOutcome::Gone(detail) => assert!(
            detail.contains("INVALID_STREAM_STATE") || detail.contains("STREAM_NOT_FOUND"),
            "{detail}"
        ),
        CommitOutcome::Committed => panic!("the answer was lost: {outcome:?}"),
    }
    assert_eq!(census(&h).await, (100, 100, 0, 99));
    // Committing again (a resume) changes nothing either.
    let again =
        h.bq.write_api()
            .commit_stream(&path, &stream)
            .await
            .unwrap();
    assert_ne!(again, CommitOutcome::Committed);
    assert_eq!(census(&h).await, (100, 100, 0, 99));
}

/// Streams of another process after their expiry (`expired`): GetWriteStream and
/// FinalizeWriteStream answer NOT_FOUND, BatchCommitWriteStreams STREAM_NOT_FOUND, so the
/// stream reads as Gone and nothing is committed; streams the process creates itself work.
#[tokio::test]
async fn streams_of_another_process_read_as_gone_once_expired() {
    let (h, path) = table("expired").await;
    let writer_api = h.bq.write_api();
    let stream = stage(writer_api, &path, 2, 10).await;
    assert_eq!(
        writer_api.stream_status(&stream).await.unwrap(),
        StreamStatus::NotCommitted
    );

    let (later, plan) = faulty(&h, "expired=1", 1).await;
    assert_eq!(
        later.stream_status(&stream).await.unwrap(),
        StreamStatus::Gone
    );
    match later.commit_stream(&path, &stream).await.unwrap() {
        CommitOutcome::Gone(detail) => assert!(detail.contains("STREAM_NOT_FOUND"), "{detail}"),
        other => panic!("expected Gone: {other:?}"),
    }
    let e = later.finalize(&stream).await.unwrap_err();
    assert!(
        e.to_string().contains("NotFound") || e.to_string().contains("not found"),
        "{e}"
    );
    assert!(!e.is_transient());
    assert_eq!(plan.injected().expired, 3);
    assert_eq!(census(&h).await.0, 0, "nothing committed");

    // A stream this client created is not expired.
    let own = stage(&later, &path, 1, 5).await;
    assert_eq!(
        later.stream_status(&own).await.unwrap(),
        StreamStatus::NotCommitted
    );
    assert_eq!(
        later.commit_stream(&path, &own).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(census(&h).await, (5, 5, 0, 4));
}

/// A permanent append failure (a finalized stream) fails at once instead of reconnecting.
#[tokio::test]
async fn a_permanent_append_failure_is_not_retried() {
    let (h, path) = table("append_permanent").await;
    let api = h.bq.write_api();
    let stream = api.create_pending_stream(&path).await.unwrap();
    api.finalize(&stream).await.unwrap();
    let mut writer = api.writer_with(stream, shared::quarantine::proto_descriptor());
    let started = std::time::Instant::now();
    let result = async {
        writer.append(batch(0, 3)).await?;
        writer.flush().await
    }
    .await;
    let e = result.expect_err("appending to a finalized stream");
    assert!(!e.is_transient(), "{e}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "failed without retries: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Deadlines: a Storage Write endpoint that accepts connections and never answers
// ---------------------------------------------------------------------------------------------

/// A TCP endpoint that accepts connections and keeps them open, silent.
async fn silent_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// Unary calls and appends to a server that never answers end by the invocation's deadline
/// (before its reserve), as transient failures, instead of hanging.
#[tokio::test]
async fn storage_write_calls_to_a_silent_server_end_by_the_deadline() {
    let url = silent_endpoint().await;
    let aws = aws_config::SdkConfig::builder().build();
    let auth = auth::authenticator(&BigQueryAuth::None, &aws)
        .await
        .unwrap();
    let api = WriteApi::connect(&url, false, auth).unwrap();
    let path = "projects/p/datasets/d/tables/t";
    let left = shared::retry::RESERVE + std::time::Duration::from_secs(2);
    let bound = std::time::Duration::from_secs(20);

    let started = std::time::Instant::now();
    let deadline = started + left;
    let create = shared::retry::within(deadline, api.create_pending_stream(path));
    let e = tokio::time::timeout(bound, create)
        .await
        .expect("CreateWriteStream ends by itself")
        .expect_err("no answer");
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < left,
        "ended before the reserve: {:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let deadline = started + left;
    let mut writer = api.writer_with(
        format!("{path}/streams/0123456789abcdef"),
        shared::quarantine::proto_descriptor(),
    );
    let append = shared::retry::within(deadline, async {
        writer.append(batch(0, 2)).await?;
        writer.flush().await
    });
    let e = tokio::time::timeout(bound, append)
        .await
        .expect("AppendRows ends by itself")
        .expect_err("no acknowledgement");
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < left,
        "ended before the reserve: {:?}",
        started.elapsed()
    );
}
