//! The deploy artifact itself: the arm64 `bootstrap` that `make build` zips for Lambda, run
//! under qemu-aarch64 through its `lambda_runtime` entry point (the one AWS calls, which
//! `ingest --invoke` bypasses), against a stand-in for Lambda's Runtime API, on the local
//! stack. `make test-deploy` builds the artifact, fetches qemu and the arm64 C runtime
//! project-locally, and runs this with `--ignored`; it fails, never skips, without them.
//!
//! The stand-in is our loopback mock rather than `cargo lambda watch`, which hands its
//! functions a deadline in 1970: ingest would rightly start no object at all.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cf2bq_tests::bq_mock::{Answer, MockServer};
use cf2bq_tests::{gzip, header_33, sqs_event, Harness};
use serde_json::{json, Value};

/// How long the emulated bootstrap may take to answer (qemu runs it several times slower).
const ANSWER_WITHIN: Duration = Duration::from_secs(300);

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run this test with `make test-deploy`, which builds and sets it")
    })
}

fn lines(date: &str, n: usize) -> String {
    let mut text = header_33();
    for i in 0..n {
        text += &format!(
            "{date}\t10:00:0{i}\tFRA56-P1\t512\t192.0.2.{i}\tGET\td1.cloudfront.net\t/arm64/{i}\t200\t-\tcurl/8\t-\t-\tHit\tid{i}\td1.cloudfront.net\thttps\t34\t0.002\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t443\t0.001\tHit\ttext/html\t512\t-\t-\n"
        );
    }
    text
}

#[tokio::test]
#[ignore = "needs the arm64 build and qemu: `make test-deploy` runs it"]
async fn the_arm64_bootstrap_answers_an_sqs_event_through_the_runtime_api() {
    let bootstrap = required_env("CF2BQ_ARM64_BOOTSTRAP");
    let qemu = required_env("CF2BQ_QEMU_AARCH64");
    let sysroot = required_env("CF2BQ_ARM64_SYSROOT");

    let h = Harness::new("arm64").await;
    let bucket = h.bucket("logs").await;
    let good = "cf/E2ARM64.2026-04-01-10.good0001.gz";
    let text = lines("2026-04-01", 3) + &lines("2026-04-02", 2)[header_33().len()..];
    h.put(&bucket, good, gzip(&text)).await;
    let corrupt = "cf/E2ARM64.2026-04-01-10.bad00001.gz";
    h.put(&bucket, corrupt, b"not gzip at all".to_vec()).await;
    let mut bodies = Vec::new();
    for key in [good, corrupt] {
        let object = h.announced(&bucket, key).await;
        bodies.push(shared::event::s3_notification(&object, "ObjectCreated:Put").to_string());
    }
    let event: Value = serde_json::from_str(&sqs_event(&bodies)).unwrap();

    // The Runtime API: one invocation, then the connection is dropped (the runtime ends).
    let answered: Arc<Mutex<Option<(String, Value)>>> = Arc::default();
    let served = Arc::new(Mutex::new(false));
    let runtime = {
        let (answered, served, event) = (answered.clone(), served.clone(), event.clone());
        MockServer::start(move |request| {
            let path = request.target.as_str();
            if path == "/2018-06-01/runtime/invocation/next" {
                let mut served = served.lock().unwrap();
                if *served {
                    return Answer::Hangup;
                }
                *served = true;
                let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
                    + Duration::from_secs(900);
                return Answer::JsonWithHeaders(
                    200,
                    vec![
                        ("Lambda-Runtime-Aws-Request-Id".into(), "req-1".into()),
                        (
                            "Lambda-Runtime-Deadline-Ms".into(),
                            deadline.as_millis().to_string(),
                        ),
                        (
                            "Lambda-Runtime-Invoked-Function-Arn".into(),
                            "arn:aws:lambda:us-east-1:000000000000:function:cf2bq-ingest".into(),
                        ),
                        ("Lambda-Runtime-Trace-Id".into(), "Root=1-0-0".into()),
                    ],
                    event.clone(),
                );
            }
            if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/req-1/") {
                *answered.lock().unwrap() = Some((rest.to_string(), request.body.clone()));
                return Answer::Json(202, json!({"status": "OK"}));
            }
            // init/error, or anything else: record it as the answer, so the test says what.
            *answered.lock().unwrap() = Some((path.to_string(), request.body.clone()));
            Answer::Json(202, json!({"status": "OK"}))
        })
        .await
    };

    let mut child = Command::new(&qemu)
        .arg("-L")
        .arg(&sysroot)
        .arg(&bootstrap)
        .env_clear()
        .envs(h.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", runtime.authority())
        .env("AWS_LAMBDA_FUNCTION_NAME", "cf2bq-ingest")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/cf2bq-ingest")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "arm64-test")
        .env("CF2BQ_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {qemu} {bootstrap}: {e}"));
    let started = Instant::now();
    let answer = loop {
        if let Some(answer) = answered.lock().unwrap().clone() {
            break Some(answer);
        }
        if started.elapsed() > ANSWER_WITHIN || child.try_wait().unwrap().is_some() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let Some((kind, response)) = answer else {
        panic!("the bootstrap never answered:\n{stdout}\n{stderr}");
    };

    assert_eq!(kind, "response", "{response}\n{stdout}\n{stderr}");
    assert_eq!(
        response,
        json!({"batchItemFailures": [{"itemIdentifier": "m1"}]}),
        "the corrupt object alone fails; its neighbour commits:\n{stderr}"
    );
    assert_eq!(
        h.table_counts().await,
        BTreeMap::from([
            ("cloudfront_20260401".to_string(), 3),
            ("cloudfront_20260402".to_string(), 2),
        ])
    );
    // Inside Lambda the metrics go out as EMF on stdout: the failure is counted.
    assert!(
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|doc| doc["ObjectsFailed"] == json!(1.0)),
        "no ObjectsFailed metric:\n{stdout}"
    );
}
