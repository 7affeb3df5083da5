//! The exactly-once fault campaign (`make chaos`): randomized runs of the real `ingest`
//! binary against the local stack, with faults where production has them, each run checked
//! row for row against what it generated.
//!
//! One run, from its own seed:
//! 1. puts 1–3 small log objects (rows over 1–3 dates) into a versioned bucket; some are
//!    deleted or overwritten between their notification and their read;
//! 2. delivers their notifications as SQS batches to `ingest --invoke` (the Lambda handler),
//!    with duplicates, concurrent deliveries, plain and forced replays interleaved, and a
//!    forced replay of an object deleted after it loaded;
//! 3. while in its chaos phase, each invocation may crash at a protocol fault point, go
//!    through a fault-injecting proxy (resets, stalls, lost responses, bodies cut mid-stream,
//!    429/503 answers, 403 for deleted objects) and get adapter-level faults (dropped append
//!    connections, lost commit responses, UNAVAILABLE, streams expired on resume);
//! 4. then heals (no faults) until every message is acknowledged, or calls it stuck;
//! 5. counts rows per table and object, and compares them exactly with what was generated.
//!
//! Run `i` of campaign seed `S` has seed `S + i`; `chaos --seed X --runs 1` replays it.
//! The last line printed: `chaos: N runs, M objects, L lost, D duplicated, S stuck`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cf2bq_tests::{gzip, header_33, unique};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use shared::bigquery::BigQuery;
use shared::event::{replay_notification, s3_notification, ObjectRef};
use shared::fault::{FAULT_POINTS, RECOVERY_FAULT_POINTS};

/// Invocations with faults before the run heals.
const CHAOS_INVOCATIONS: u32 = 5;
/// Invocations in all before a message still unacknowledged counts as stuck.
const MAX_INVOCATIONS: u32 = 16;

struct Campaign {
    runs: u64,
    seed: u64,
    jobs: usize,
    verbose: bool,
}

fn parse_args() -> Campaign {
    let mut campaign = Campaign {
        runs: 1000,
        seed: rand::rng().random_range(0..1u64 << 40),
        jobs: 4,
        verbose: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--runs" => campaign.runs = value(),
            "--seed" => campaign.seed = value(),
            "--jobs" => campaign.jobs = value() as usize,
            "--verbose" => {
                campaign.verbose = true;
                i -= 1;
            }
            other => panic!(
                "unknown argument {other}: chaos [--runs N] [--seed S] [--jobs J] [--verbose]"
            ),
        }
        i += 2;
    }
    campaign
}

/// What every run shares: the stack's environment, clients, one dataset, the binaries.
struct Context {
    env: Vec<(String, String)>,
    s3: aws_sdk_s3::Client,
    bq: BigQuery,
    ingest: std::path::PathBuf,
    proxy: std::path::PathBuf,
    verbose: bool,
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    runs: u64,
    objects: u64,
    lost: u64,
    duplicated: u64,
    stuck: u64,
}

#[tokio::main]
async fn main() {
    let campaign = parse_args();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "chaos needs the local stack: run `make chaos`"
    );
    // Each run gets a dataset of its own (`<campaign>_<seed>`): the emulator lists at most
    // 1,000 tables and no next page, so one dataset for the whole campaign would hide tables.
    let dataset = unique("chaos").replace('-', "_");
    let mut vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CF2BQ_") || k.starts_with("AWS_") || k == "PATH")
        .collect();
    vars.insert("CF2BQ_BQ_DATASET".into(), dataset);
    vars.insert("CF2BQ_LEASE_SECONDS".into(), "1".into());
    vars.insert("CF2BQ_LOG_FORMAT".into(), "text".into());
    vars.insert("RUST_LOG".into(), "warn".into());
    let config = shared::Config::from_lookup(|k| vars.get(k).cloned()).expect("stack config");
    let aws = shared::aws::load().await;
    let bq = BigQuery::connect(&config.bigquery, &aws)
        .await
        .expect("BigQuery emulator");
    let context = Arc::new(Context {
        env: vars.into_iter().collect(),
        s3: shared::aws::s3(&aws),
        bq,
        ingest: cf2bq_tests::binary_in_target("ingest"),
        proxy: cf2bq_tests::binary_in_target("faultproxy"),
        verbose: campaign.verbose,
    });
    println!(
        "chaos: {} runs from seed {} ({} at a time); replay one with `make chaos SEED=<seed> RUNS=1`",
        campaign.runs, campaign.seed, campaign.jobs
    );
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for _ in 0..campaign.jobs.max(1) {
        let (context, next, tally) = (context.clone(), next.clone(), tally.clone());
        let (runs, seed) = (campaign.runs, campaign.seed);
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs {
                    break;
                }
                let run_seed = seed.wrapping_add(i);
                let result = Run::new(&context, run_seed).go().await;
                let mut t = tally.lock().unwrap();
                t.runs += 1;
                t.objects += result.objects;
                t.lost += result.lost;
                t.duplicated += result.duplicated;
                t.stuck += result.stuck;
                if result.failed() || context.verbose {
                    eprintln!(
                        "--- run seed {run_seed}{}: {} objects, {} lost, {} duplicated, {} stuck",
                        if result.failed() { " FAILED" } else { "" },
                        result.objects,
                        result.lost,
                        result.duplicated,
                        result.stuck
                    );
                    for line in &result.log {
                        eprintln!("    {line}");
                    }
                    if result.failed() {
                        eprintln!("--- replay: make chaos SEED={run_seed} RUNS=1");
                    }
                }
                if t.runs % 50 == 0 {
                    eprintln!(
                        "chaos: {} runs done, {:.0} s ({} lost, {} duplicated, {} stuck so far)",
                        t.runs,
                        started.elapsed().as_secs_f64(),
                        t.lost,
                        t.duplicated,
                        t.stuck
                    );
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let t = *tally.lock().unwrap();
    eprintln!("chaos: {:.0} s", started.elapsed().as_secs_f64());
    println!(
        "chaos: {} runs, {} objects, {} lost, {} duplicated, {} stuck",
        t.runs, t.objects, t.lost, t.duplicated, t.stuck
    );
    if t.lost + t.duplicated + t.stuck > 0 {
        std::process::exit(1);
    }
}

#[derive(Debug, Default)]
struct RunResult {
    objects: u64,
    lost: u64,
    duplicated: u64,
    stuck: u64,
    log: Vec<String>,
}

impl RunResult {
    fn failed(&self) -> bool {
        self.lost + self.duplicated + self.stuck > 0
    }
}

/// One generated object and what the run expects of it.
struct LogObject {
    uri: String,
    /// Table suffix (YYYYMMDD) → rows the table must end with.
    expected: BTreeMap<String, u64>,
    /// Deleted once loaded, then replayed with --force (the replay must keep its rows).
    delete_after_load: Option<ObjectRef>,
}

struct Message {
    id: String,
    body: String,
    /// The object this message loads, by index, and whether acknowledging it means loaded.
    object: usize,
    live: bool,
}

struct Run<'a> {
    context: &'a Context,
    /// This run's dataset.
    bq: BigQuery,
    seed: u64,
    rng: ChaCha8Rng,
    prefix: String,
    bucket: String,
    objects: Vec<LogObject>,
    pending: VecDeque<Message>,
    next_message: u32,
    log: Vec<String>,
}

impl<'a> Run<'a> {
    fn new(context: &'a Context, seed: u64) -> Self {
        let mut bq = context.bq.clone();
        bq.dataset = format!("{}_{seed}", context.bq.dataset);
        Run {
            context,
            bq,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            prefix: format!("r{seed}_"),
            bucket: unique("chaos"),
            objects: Vec::new(),
            pending: VecDeque::new(),
            next_message: 0,
            log: Vec::new(),
        }
    }

    async fn go(mut self) -> RunResult {
        self.setup().await;
        let mut invocations = 0;
        let mut crashed = false;
        while !self.pending.is_empty() && invocations < MAX_INVOCATIONS {
            invocations += 1;
            let chaos = invocations <= CHAOS_INVOCATIONS;
            if crashed {
                // The crashed attempt's 1-second lease (whole seconds) must run out.
                tokio::time::sleep(Duration::from_millis(2050)).await;
            }
            crashed = self.invoke(chaos).await;
            if !chaos && !self.pending.is_empty() && !crashed {
                // Healing, yet refused (a live lease elsewhere): give it time.
                tokio::time::sleep(Duration::from_millis(1100)).await;
            }
        }
        let stuck: std::collections::BTreeSet<usize> =
            self.pending.iter().map(|m| m.object).collect();
        for &i in &stuck {
            self.log.push(format!("STUCK: {}", self.objects[i].uri));
        }
        let (lost, duplicated) = self.verify().await;
        RunResult {
            objects: self.objects.len() as u64,
            lost,
            duplicated,
            stuck: stuck.len() as u64,
            log: self.log,
        }
    }

    /// Objects, their fates, and the messages that announce them.
    async fn setup(&mut self) {
        self.bq.ensure_dataset().await.expect("run dataset");
        let s3 = &self.context.s3;
        cf2bq_tests::create_versioned_bucket(s3, &self.bucket).await;
        let first_day = self.rng.random_range(20_454..20_750); // 2026-01..2026-10
        for i in 0..self.rng.random_range(1..=3usize) {
            let key = format!(
                "cf/E2CHAOS.{}-{:02}.{:x}{i}.gz",
                shared::route::IsoDate(first_day),
                self.rng.random_range(0..24),
                self.seed
            );
            let (text, mut expected) = self.log_text(first_day);
            let announced = self.put(&key, gzip(&text)).await;
            let fate = self.rng.random_range(0..100);
            let mut delete_after_load = None;
            if fate < 8 {
                // Deleted (lifecycle, a delete marker) between notification and read.
                s3.delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .expect("delete");
                expected.clear();
                self.log.push(format!("{key}: deleted before its read"));
            } else if fate < 16 {
                // Overwritten before the read: the first notification finds it gone, the
                // second (the new version's own) loads the new content.
                let (text, again) = self.log_text(first_day);
                let newer = self.put(&key, gzip(&text)).await;
                expected = again;
                self.log.push(format!("{key}: overwritten before its read"));
                self.queue(&s3_notification(&newer, "ObjectCreated:Put"), i, true);
            } else if fate < 22 {
                delete_after_load = Some(announced.clone());
                self.log
                    .push(format!("{key}: to be deleted once loaded, then forced"));
            }
            self.queue(&s3_notification(&announced, "ObjectCreated:Put"), i, true);
            if self.rng.random_bool(0.3) {
                self.queue(&s3_notification(&announced, "ObjectCreated:Put"), i, false);
            }
            if self.rng.random_bool(0.2) {
                // A replay from a listing: ETag, no version id.
                let listed = ObjectRef {
                    version_id: None,
                    ..announced.clone()
                };
                self.queue(&replay_notification(&listed, false), i, false);
            }
            if self.rng.random_bool(0.25) {
                self.queue(&replay_notification(&announced, true), i, false);
            }
            self.objects.push(LogObject {
                uri: format!("s3://{}/{key}", self.bucket),
                expected,
                delete_after_load,
            });
        }
        let mut pending: Vec<Message> = self.pending.drain(..).collect();
        pending.shuffle(&mut self.rng);
        self.pending = pending.into();
    }

    /// Log text over 1–3 days from `first_day`, and rows per table suffix.
    fn log_text(&mut self, first_day: i32) -> (String, BTreeMap<String, u64>) {
        let mut text = header_33();
        let mut expected = BTreeMap::new();
        for d in 0..self.rng.random_range(1..=3) {
            let day = first_day + d;
            let n = self.rng.random_range(1..=12u64);
            for i in 0..n {
                let date = shared::route::IsoDate(day);
                let status = [200, 304, 404, 503][self.rng.random_range(0..4)];
                text += &format!(
                    "{date}\t{:02}:{:02}:{:02}\tFRA56-P1\t{}\t192.0.2.{i}\tGET\td1.cloudfront.net\t/p/{i}\t{status}\t-\tcurl/8\t-\t-\tHit\tid{i}\td1.cloudfront.net\thttps\t34\t0.002\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t443\t0.001\tHit\ttext/html\t512\t-\t-\n",
                    self.rng.random_range(0..24),
                    self.rng.random_range(0..60),
                    self.rng.random_range(0..60),
                    self.rng.random_range(100..100_000),
                );
            }
            *expected
                .entry(shared::route::Ymd(day).to_string())
                .or_insert(0) += n;
        }
        (text, expected)
    }

    /// Puts an object and returns it as a live event announces it.
    async fn put(&self, key: &str, body: Vec<u8>) -> ObjectRef {
        let out = self
            .context
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.clone().into())
            .send()
            .await
            .expect("put");
        ObjectRef {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            size: Some(body.len() as u64),
            etag: out.e_tag().map(|t| t.trim_matches('"').to_string()),
            version_id: out.version_id().map(str::to_string),
        }
    }

    fn queue(&mut self, body: &Value, object: usize, live: bool) {
        self.next_message += 1;
        self.pending.push_back(Message {
            id: format!("m{}", self.next_message),
            body: body.to_string(),
            object,
            live,
        });
    }

    /// One invocation (sometimes two concurrent ones on the same batch); returns whether a
    /// process crashed (its claims wait out their lease).
    async fn invoke(&mut self, chaos: bool) -> bool {
        let take = self.pending.len().min(self.rng.random_range(1..=10));
        let batch: Vec<Message> = self.pending.drain(..take).collect();
        let copies = if chaos && self.rng.random_bool(0.15) {
            2
        } else {
            1
        };
        let event = json!({"Records": batch.iter().map(|m| json!({
            "messageId": m.id,
            "receiptHandle": m.id,
            "body": m.body,
            "attributes": {},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:chaos",
            "awsRegion": "us-east-1",
        })).collect::<Vec<_>>()});
        let mut children = Vec::new();
        for copy in 0..copies {
            let faults = if chaos {
                self.faults()
            } else {
                Faults::default()
            };
            self.log.push(format!(
                "invocation (copy {copy}): {:?} with {:?}",
                batch.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
                faults
            ));
            children.push(self.spawn(&event, faults));
        }
        let mut failed: std::collections::BTreeSet<String> = Default::default();
        let mut crashed = false;
        for child in children {
            let (ok, stdout, stderr) = child.finish().await;
            let response: Option<Value> = serde_json::from_str(stdout.trim()).ok();
            match (ok, response) {
                (true, Some(r)) => {
                    for f in r["batchItemFailures"].as_array().into_iter().flatten() {
                        failed.insert(f["itemIdentifier"].as_str().unwrap_or("").to_string());
                    }
                }
                _ => {
                    crashed = true;
                    failed.extend(batch.iter().map(|m| m.id.clone()));
                    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                    self.log.push(format!("  process failed: {tail:?}"));
                }
            }
            if self.context.verbose {
                for line in stderr
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                {
                    self.log.push(format!("  | {line}"));
                }
            }
        }
        self.log.push(format!("  failed: {failed:?}"));
        let mut loaded_now = Vec::new();
        for m in batch {
            if failed.contains(&m.id) {
                self.pending.push_back(m);
            } else if m.live {
                loaded_now.push(m.object);
            }
        }
        for i in loaded_now {
            if let Some(version) = self.objects[i].delete_after_load.take() {
                // Gone after it loaded; a forced replay must refuse and keep its rows.
                let _ = self
                    .context
                    .s3
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&version.key)
                    .send()
                    .await;
                self.queue(&replay_notification(&version, true), i, false);
                self.log.push(format!(
                    "{}: deleted after loading; forced replay queued",
                    self.objects[i].uri
                ));
            }
        }
        crashed
    }

    /// The faults of one chaotic invocation.
    fn faults(&mut self) -> Faults {
        let rng = &mut self.rng;
        let points: Vec<&str> = FAULT_POINTS
            .iter()
            .chain(RECOVERY_FAULT_POINTS)
            .copied()
            .collect();
        let crash = rng
            .random_bool(0.35)
            .then(|| points[rng.random_range(0..points.len())].to_string());
        let p = |rng: &mut ChaCha8Rng, max: f64| {
            if rng.random_bool(0.5) {
                0.0
            } else {
                (rng.random_range(0..=100) as f64 / 100.0 * max * 100.0).round() / 100.0
            }
        };
        let mut proxy = Vec::new();
        for (route, kind, max, filter) in [
            ("aws", "status", 0.15, ""),
            ("aws", "reset", 0.1, ""),
            ("aws", "lost_response", 0.15, "@UpdateItem"),
            ("aws", "lost_response", 0.1, ""),
            ("aws", "truncate", 0.3, "@GET"),
            ("aws", "stall", 0.03, ""),
            ("rest", "status", 0.2, ""),
            ("rest", "reset", 0.1, ""),
            ("rest", "lost_response", 0.1, ""),
            ("grpc", "reset", 0.15, ""),
        ] {
            let prob = p(rng, max);
            if prob > 0.0 {
                proxy.push(format!("{route}:{kind}={prob}{filter}"));
            }
        }
        if rng.random_bool(0.3) {
            proxy.push("aws:not_found_as_403=1".into());
        }
        let mut grpc = Vec::new();
        for (kind, max) in [
            ("append_drop", 0.3),
            ("commit_lost", 0.5),
            ("unary_unavailable", 0.2),
        ] {
            let prob = p(rng, max);
            if prob > 0.0 {
                grpc.push(format!("{kind}={prob}"));
            }
        }
        if rng.random_bool(0.25) {
            grpc.push("expired=1".into());
        }
        let spread_budget = rng.random_bool(0.4).then(|| rng.random_range(2..=6));
        Faults {
            crash,
            proxy,
            grpc: grpc.join(","),
            seed: rng.random(),
            spread_budget,
        }
    }

    fn spawn(&self, event: &Value, faults: Faults) -> Invocation {
        let dir = std::env::temp_dir().join(format!("cf2bq-chaos-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let event_file = dir.join(format!("{}.json", unique("event")));
        std::fs::write(&event_file, event.to_string()).expect("event file");
        let mut env: Vec<(String, String)> = self.context.env.clone();
        env.retain(|(k, _)| k != "CF2BQ_BQ_DATASET");
        env.push(("CF2BQ_BQ_DATASET".into(), self.bq.dataset.clone()));
        env.push(("CF2BQ_TABLE_PREFIX".into(), self.prefix.clone()));
        env.push(("CF2BQ_FAULT_SEED".into(), faults.seed.to_string()));
        if let Some(point) = &faults.crash {
            env.push(("CF2BQ_FAULT".into(), point.clone()));
        }
        if !faults.grpc.is_empty() {
            env.push(("CF2BQ_GRPC_FAULTS".into(), faults.grpc.clone()));
        }
        if let Some(budget) = faults.spread_budget {
            // Rows encode to ~250 bytes: a request of a few rows, a stream every few more.
            env.push(("CF2BQ_BATCH_BYTES".into(), "600".into()));
            env.push(("CF2BQ_STREAM_SPREAD_BYTES".into(), "900".into()));
            env.push(("CF2BQ_MAX_CONNECTIONS".into(), budget.to_string()));
        }
        let proxy = (!faults.proxy.is_empty()).then(|| self.start_proxy(&faults, &mut env));
        let child = Command::new(&self.context.ingest)
            .arg("--invoke")
            .arg(&event_file)
            .env_clear()
            .envs(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ingest");
        Invocation {
            child,
            proxy,
            event_file,
        }
    }

    /// A fault proxy for one invocation, its endpoints put in `env`.
    fn start_proxy(&self, faults: &Faults, env: &mut Vec<(String, String)>) -> Child {
        let var = |name: &str| {
            self.context
                .env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{name} is not set"))
        };
        let port_of = |url: String| {
            url.trim_start_matches("http://")
                .split(['/', ':'])
                .nth(1)
                .expect("a port in the URL")
                .to_string()
        };
        let mut command = Command::new(&self.context.proxy);
        command
            .arg("--seed")
            .arg(faults.seed.to_string())
            .arg("--route")
            .arg(format!(
                "aws=0:127.0.0.1:{}:http",
                port_of(var("AWS_ENDPOINT_URL"))
            ))
            .arg("--route")
            .arg(format!(
                "rest=0:127.0.0.1:{}:http",
                port_of(var("CF2BQ_BQ_REST_URL"))
            ))
            .arg("--route")
            .arg(format!(
                "grpc=0:127.0.0.1:{}:tcp",
                port_of(var("CF2BQ_BQ_GRPC_URL"))
            ))
            .arg("--stall-ms")
            .arg("800");
        for f in &faults.proxy {
            command.arg("--fault").arg(f);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the fault proxy");
        let mut ports = BTreeMap::new();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        for line in lines.by_ref() {
            let line = line.expect("proxy stdout");
            if line == "ready" {
                break;
            }
            if let Some((name, port)) = line.split_once(' ') {
                ports.insert(name.to_string(), port.to_string());
            }
        }
        let set = |env: &mut Vec<(String, String)>, name: &str, value: String| {
            env.retain(|(k, _)| k != name);
            env.push((name.to_string(), value));
        };
        set(
            env,
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", ports["aws"]),
        );
        set(
            env,
            "CF2BQ_BQ_REST_URL",
            format!("http://127.0.0.1:{}/bigquery/v2", ports["rest"]),
        );
        set(
            env,
            "CF2BQ_BQ_GRPC_URL",
            format!("http://127.0.0.1:{}", ports["grpc"]),
        );
        child
    }

    /// Rows per table and object, compared with what was generated: (lost, duplicated)
    /// objects.
    async fn verify(&mut self) -> (u64, u64) {
        let bq = &self.bq;
        let mut found: BTreeMap<(String, String), u64> = BTreeMap::new();
        let tables = bq.list_tables(&self.prefix).await.expect("list tables");
        for table in &tables {
            let sql = format!(
                "SELECT source_object, COUNT(*) FROM `{}.{}.{table}` GROUP BY source_object",
                bq.project, bq.dataset
            );
            let rows = query(bq, &sql).await;
            let suffix = table.trim_start_matches(&self.prefix).to_string();
            for row in rows {
                let object = row[0].clone().unwrap_or_default();
                let count = row[1].as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
                found.insert((suffix.clone(), object), count);
            }
        }
        let (mut lost, mut duplicated) = (0, 0);
        for object in &self.objects {
            let mut is_lost = false;
            let mut is_duplicated = false;
            for (suffix, &want) in &object.expected {
                let got = found
                    .remove(&(suffix.clone(), object.uri.clone()))
                    .unwrap_or(0);
                if got < want {
                    is_lost = true;
                } else if got > want {
                    is_duplicated = true;
                }
                if got != want {
                    self.log.push(format!(
                        "{} in {suffix}: {got} rows, {want} expected",
                        object.uri
                    ));
                }
            }
            let stray: Vec<_> = found
                .iter()
                .filter(|((_, uri), _)| *uri == object.uri)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for ((suffix, _), got) in stray {
                is_duplicated = true;
                self.log.push(format!(
                    "{} in {suffix}: {got} rows, none expected",
                    object.uri
                ));
            }
            lost += u64::from(is_lost);
            duplicated += u64::from(is_duplicated);
        }
        (lost, duplicated)
    }
}

/// A query, retried while the emulator's single REST worker is busy.
async fn query(bq: &BigQuery, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match bq.query(sql).await {
            Ok(rows) => return rows,
            Err(e) if attempt < 5 => {
                eprintln!("chaos: {sql}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(attempt)).await;
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    crash: Option<String>,
    proxy: Vec<String>,
    grpc: String,
    seed: u64,
    /// Tiny requests and spread thresholds, so that tables spread over several streams (at
    /// most this many in all) and every fault meets a table committed from several.
    spread_budget: Option<usize>,
}

struct Invocation {
    child: Child,
    proxy: Option<Child>,
    event_file: std::path::PathBuf,
}

impl Invocation {
    /// Waits for the invocation; stops its proxy. (exit success, stdout, stderr)
    async fn finish(mut self) -> (bool, String, String) {
        let stdout = self.child.stdout.take().expect("stdout");
        let stderr = self.child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
        let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let mut child = self.child;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        if let Some(mut proxy) = self.proxy {
            let _ = proxy.kill();
            let _ = proxy.wait();
        }
        let _ = std::fs::remove_file(&self.event_file);
        (
            status.success(),
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    }
}
