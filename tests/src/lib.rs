//! Harness for integration tests: the real SDK clients pointed at the local stack that
//! `make test` starts (moto + bqemulator), a fresh BigQuery dataset and fresh AWS resources
//! per test so tests run in parallel and never see each other's rows.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_sqs::types::QueueAttributeName;
use shared::bigquery::BigQuery;
use shared::Config;

pub mod bq_mock;
pub mod google_standin;
pub mod write_sink;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique lowercase name for this test run.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{}",
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Harness {
    pub config: Config,
    pub aws: aws_config::SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bq: BigQuery,
    /// The environment a child process (the `ingest` or `cf2bq` binary) needs.
    pub env: Vec<(String, String)>,
}

impl Harness {
    /// Connects to the local stack with a fresh dataset. Panics with a clear message when the
    /// stack is not running: these tests must never pass by not running.
    pub async fn new(name: &str) -> Harness {
        Harness::with(name, &[]).await
    }

    /// Like `new`, with extra configuration variables.
    pub async fn with(name: &str, extra: &[(&str, &str)]) -> Harness {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        assert!(
            endpoint.starts_with("http://127.0.0.1"),
            "integration tests need the local stack: run `make test` (or `make stack-up` and \
             `eval \"$(make -s stack-env)\"`); AWS_ENDPOINT_URL={endpoint:?}"
        );
        let dataset = unique(name).replace('-', "_");
        let mut vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("CF2BQ_") || k.starts_with("AWS_") || k == "PATH")
            .collect();
        vars.insert("CF2BQ_BQ_DATASET".into(), dataset);
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("stack env config");
        let aws = shared::aws::load().await;
        let bq = BigQuery::connect(&config.bigquery, &aws)
            .await
            .expect("BigQuery emulator");
        bq.ensure_dataset().await.expect("create test dataset");
        Harness {
            s3: shared::aws::s3(&aws),
            sqs: aws_sdk_sqs::Client::new(&aws),
            config,
            aws,
            bq,
            env: vars.into_iter().collect(),
        }
    }

    /// The ingestor as the Lambda builds it (with the ledger).
    pub async fn ingestor(&self) -> shared::Ingestor {
        shared::Ingestor::from_config(&self.config, &self.aws)
            .await
            .expect("ingestor")
    }

    /// A new bucket, versioned as the template's log bucket is.
    pub async fn bucket(&self, name: &str) -> String {
        let bucket = unique(name);
        create_versioned_bucket(&self.s3, &bucket).await;
        bucket
    }

    /// The object as a live S3 event announces it: key, size, ETag and version id.
    pub async fn announced(&self, bucket: &str, key: &str) -> shared::event::ObjectRef {
        let head = self
            .s3
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("head object");
        shared::event::ObjectRef {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: head.content_length().map(|l| l as u64),
            etag: head.e_tag().map(|t| t.trim_matches('"').to_string()),
            version_id: head.version_id().map(str::to_string),
        }
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .expect("put object");
    }

    /// An ingest queue with a DLQ (after `max_receives`), and `bucket` notifying it.
    pub async fn wired_queue(&self, bucket: &str, max_receives: u32) -> Queues {
        let queues = self.queues(max_receives).await;
        let queue_arn = self.queue_arn(&queues.queue).await;
        use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
        self.s3
            .put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(
                        QueueConfiguration::builder()
                            .queue_arn(queue_arn)
                            .events(Event::S3ObjectCreated)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("bucket notification");
        queues
    }

    /// An ingest queue with a DLQ (after `max_receives`), not wired to any bucket.
    pub async fn queues(&self, max_receives: u32) -> Queues {
        let name = unique("q");
        let dlq = self.create_queue(&format!("{name}-dlq"), &[]).await;
        let dlq_arn = self.queue_arn(&dlq).await;
        let redrive = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string()}).to_string();
        let queue = self
            .create_queue(
                &name,
                &[
                    (QueueAttributeName::RedrivePolicy, redrive),
                    (QueueAttributeName::VisibilityTimeout, "5".into()),
                ],
            )
            .await;
        Queues { queue, dlq }
    }

    pub async fn create_queue(
        &self,
        name: &str,
        attributes: &[(QueueAttributeName, String)],
    ) -> String {
        let mut request = self.sqs.create_queue().queue_name(name);
        for (k, v) in attributes {
            request = request.attributes(k.clone(), v.clone());
        }
        request
            .send()
            .await
            .expect("create queue")
            .queue_url
            .unwrap()
    }

    pub async fn queue_arn(&self, url: &str) -> String {
        self.sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone()
    }

    /// Messages visible + in flight in a queue.
    pub async fn queue_depth(&self, url: &str) -> u64 {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .unwrap();
        attrs.values().map(|v| v.parse::<u64>().unwrap()).sum()
    }

    /// Runs one of the workspace binaries (`ingest`, `cf2bq`) with this harness's config.
    /// Returns (exit success, stdout, stderr, peak RSS in MiB).
    pub fn run_binary(&self, name: &str, args: &[&str]) -> (bool, String, String, u64) {
        self.run_binary_with(name, args, &[])
    }

    /// Like [`run_binary`](Self::run_binary), with extra environment variables.
    pub fn run_binary_with(
        &self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (bool, String, String, u64) {
        let path = binary(name);
        let mut child = std::process::Command::new(&path)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CF2BQ_LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "running {}: {e} (make test builds it first)",
                    path.display()
                )
            });
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
        let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        // The child's own high-water mark, sampled while it runs. (wait4's ru_maxrss would
        // also count this test process's memory: the kernel carries the spawning mm's peak
        // across exec.)
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0;
        let status = loop {
            if let Some(kib) = std::fs::read_to_string(&status_file)
                .ok()
                .and_then(|s| vm_hwm_kib(&s))
            {
                peak_kib = peak_kib.max(kib);
            }
            if let Some(status) = child.try_wait().expect("wait for child") {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        (
            status.success(),
            out.join().unwrap(),
            err.join().unwrap(),
            peak_kib / 1024,
        )
    }

    /// Rows per table of this harness's dataset (sharded layout).
    pub async fn table_counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for table in self.bq.list_tables("").await.expect("list tables") {
            counts.insert(table.clone(), self.count(&table).await);
        }
        counts
    }

    pub async fn count(&self, table: &str) -> u64 {
        let rows = self
            .query(&format!("SELECT COUNT(*) FROM `{{ds}}.{table}`"))
            .await;
        rows[0][0].as_deref().unwrap().parse().unwrap()
    }

    /// Runs a query, `{ds}` standing for `project.dataset`. Retried a few times: the
    /// emulator's single REST worker can drop a connection while another test loads it hard.
    pub async fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let sql = sql.replace("{ds}", &format!("{}.{}", self.bq.project, self.bq.dataset));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.bq.query(&sql).await {
                Ok(rows) => return rows,
                Err(e) if attempt < 4 && e.to_string().contains("error sending request") => {
                    tokio::time::sleep(std::time::Duration::from_secs(attempt)).await;
                }
                Err(e) => panic!("{sql}: {e}"),
            }
        }
    }
}

pub struct Queues {
    pub queue: String,
    pub dlq: String,
}

/// Creates `bucket` with versioning on, as the template's log bucket is.
pub async fn create_versioned_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enable versioning");
}

/// Path of a workspace binary built by `cargo build` (the same target dir as the tests).
pub fn binary(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().expect("test exe");
    dir.pop(); // deps/
    dir.pop(); // debug/
    dir.join(name)
}

/// Path of a workspace binary from a test or from a binary of this crate (`chaos`).
pub fn binary_in_target(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().expect("own exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// True when some line of `output` has exactly these whitespace-separated words.
pub fn has_line(output: &str, words: &[&str]) -> bool {
    output
        .lines()
        .any(|l| l.split_whitespace().eq(words.iter().copied()))
}

/// Gzips text (tests build their own log files).
pub fn gzip(text: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// The 33-field `#Fields` header of today's format.
pub fn header_33() -> String {
    let names: Vec<&str> = shared::cloudfront::LOG_FIELDS[..shared::cloudfront::LEGACY_FIELDS]
        .iter()
        .map(|f| f.log_name)
        .collect();
    format!("#Version: 1.0\n#Fields: {}\n", names.join(" "))
}

/// A fault proxy (`faultproxy`) in front of the local stack, stopped when dropped.
pub struct FaultProxy {
    child: std::process::Child,
    /// Environment overrides pointing a binary at the proxy instead of the emulators.
    pub env: Vec<(String, String)>,
}

impl FaultProxy {
    /// Starts one with `--fault` specs such as `aws:not_found_as_403=1` (routes: aws, rest,
    /// grpc). Needs the stack's environment (`make test` exports it).
    pub fn start(seed: u64, faults: &[&str]) -> FaultProxy {
        use std::io::BufRead;
        let port = |var: &str| {
            let url = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set"));
            url.trim_start_matches("http://")
                .split(['/', ':'])
                .nth(1)
                .expect("a port")
                .to_string()
        };
        let mut command = std::process::Command::new(binary_in_target("faultproxy"));
        command.arg("--seed").arg(seed.to_string());
        for (name, var, mode) in [
            ("aws", "AWS_ENDPOINT_URL", "http"),
            ("rest", "CF2BQ_BQ_REST_URL", "http"),
            ("grpc", "CF2BQ_BQ_GRPC_URL", "tcp"),
        ] {
            command
                .arg("--route")
                .arg(format!("{name}=0:127.0.0.1:{}:{mode}", port(var)));
        }
        for f in faults {
            command.arg("--fault").arg(f);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start faultproxy (make test builds it)");
        let mut ports = BTreeMap::new();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        for line in stdout.lines() {
            let line = line.unwrap();
            if line == "ready" {
                break;
            }
            if let Some((name, port)) = line.split_once(' ') {
                ports.insert(name.to_string(), port.to_string());
            }
        }
        let url = |name: &str| format!("http://127.0.0.1:{}", ports[name]);
        FaultProxy {
            child,
            env: vec![
                ("AWS_ENDPOINT_URL".into(), url("aws")),
                (
                    "CF2BQ_BQ_REST_URL".into(),
                    format!("{}/bigquery/v2", url("rest")),
                ),
                ("CF2BQ_BQ_GRPC_URL".into(), url("grpc")),
            ],
        }
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SQS event (what Lambda hands the ingest function) carrying these message bodies.
pub fn sqs_event(bodies: &[String]) -> String {
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            serde_json::json!({
                "messageId": format!("m{i}"),
                "receiptHandle": format!("r{i}"),
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:ingest",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}
