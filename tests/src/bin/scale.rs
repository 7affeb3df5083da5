//! The scale simulation (`make scale`): many small log objects, delivered in bursts with
//! late and duplicated notifications, through the real `ingest` binary (`ingest --invoke`, the
//! Lambda handler, one process per SQS batch, several at once) on the local stack. It counts
//! every call each invocation makes to an external API (the binary reports them as
//! `Calls.*` metrics), checks that every row arrived exactly once, and extrapolates the
//! counts to a large deployment: CreateWriteStream at the peak hour against BigQuery's
//! 10,000-an-hour quota, DML per table per day, and the cost of a TB of logs.
//!
//! The last line printed:
//! `scale: 1,000,000 objects/day → peak N CreateWriteStream/h (quota 10,000), $X per TB`.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use cf2bq_tests::unique;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use shared::bigquery::BigQuery;
use shared::event::{s3_notification, ObjectRef};
use shared::generate::{write_object, GenOptions};

/// Prices and quotas the extrapolation uses (us-east-1 / BigQuery US, public list prices).
mod price {
    /// Lambda arm64, per GB-second, and per request.
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// SQS standard, per request (64 KiB chunk).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// DynamoDB on demand, per write and read request unit.
    pub const DYNAMODB_WRU: f64 = 0.625 / 1e6;
    pub const DYNAMODB_RRU: f64 = 0.125 / 1e6;
    /// S3 GET (and HEAD) requests.
    pub const S3_GET: f64 = 0.40 / 1e6;
    /// BigQuery Storage Write API, per GiB ingested after the 2 TiB monthly free tier.
    pub const STORAGE_WRITE_GIB: f64 = 0.025;
    /// AWS data transfer out to the internet (first 10 TB a month tier), per GB.
    pub const EGRESS_GB: f64 = 0.09;
}

/// BigQuery's default CreateWriteStream quota per project and region.
const CREATE_WRITE_STREAM_QUOTA: f64 = 10_000.0;

struct Options {
    objects: usize,
    lines: u64,
    batch_size: usize,
    concurrency: usize,
    bursts: usize,
    duplicate_percent: u32,
    late_percent: u32,
    seed: u64,
    /// Daily volume extrapolated to, and how much busier the peak hour is than the average.
    daily_objects: f64,
    peak_factor: f64,
    /// Lambda memory (MB) the GB-seconds are billed at.
    memory_mb: f64,
}

fn parse_args() -> Options {
    let mut o = Options {
        objects: 20_000,
        lines: 40,
        batch_size: 100,
        concurrency: 2,
        bursts: 20,
        duplicate_percent: 3,
        late_percent: 5,
        seed: 20261201,
        daily_objects: 1_000_000.0,
        peak_factor: 3.0,
        memory_mb: 1769.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .unwrap_or_else(|| panic!("{} needs a value", pair[0]));
        let number = || {
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{}: not a number: {value}", pair[0]))
        };
        match pair[0].as_str() {
            "--objects" => o.objects = number() as usize,
            "--lines" => o.lines = number() as u64,
            "--batch-size" => o.batch_size = number() as usize,
            "--concurrency" => o.concurrency = number() as usize,
            "--bursts" => o.bursts = number() as usize,
            "--seed" => o.seed = number() as u64,
            "--peak-factor" => o.peak_factor = number(),
            "--memory-mb" => o.memory_mb = number(),
            other => panic!(
                "unknown argument {other}: scale [--objects N] [--lines L] [--batch-size B] \
                 [--concurrency C] [--bursts K] [--seed S] [--peak-factor F] [--memory-mb M]"
            ),
        }
    }
    o
}

#[tokio::main]
async fn main() {
    let o = parse_args();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "scale needs the local stack: run `make scale`"
    );
    let ingest = std::env::var("CF2BQ_SCALE_INGEST")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| cf2bq_tests::binary_in_target("ingest"));
    let dataset = unique("scale").replace('-', "_");
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CF2BQ_") || k.starts_with("AWS_") || k == "PATH")
        .collect();
    env.insert("CF2BQ_BQ_DATASET".into(), dataset.clone());
    env.insert("CF2BQ_LOG_FORMAT".into(), "text".into());
    env.insert("RUST_LOG".into(), "warn".into());
    // As in Lambda: metrics (the call counts among them) printed as EMF lines.
    env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "cf2bq-ingest".into());
    let config = shared::Config::from_lookup(|k| env.get(k).cloned()).expect("stack config");
    let aws = shared::aws::load().await;
    let s3 = shared::aws::s3(&aws);
    let bq = BigQuery::connect(&config.bigquery, &aws)
        .await
        .expect("BigQuery emulator");
    bq.ensure_dataset().await.expect("dataset");
    let bucket = unique("scale-logs");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");

    // 1. Objects: small, like most CloudFront log files, over two days with late lines.
    let started = Instant::now();
    let gen = GenOptions {
        seed: o.seed,
        objects: o.objects,
        lines_per_object: o.lines,
        first_date: shared::keeper::today() - 1,
        days: 2,
        late_percent: o.late_percent,
        prefix: "cf/".into(),
        ..Default::default()
    };
    let (objects, expected, log_bytes, gzip_bytes) = put_objects(&s3, &bucket, &gen).await;
    eprintln!(
        "scale: {} objects ({} rows, {:.1} MB of logs, {:.1} MB gzip) put in {:.0} s",
        objects.len(),
        expected.values().sum::<u64>(),
        log_bytes as f64 / 1e6,
        gzip_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // 2. Notifications in bursts: some duplicated, some late (a later burst).
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    let bursts = notifications(&objects, &o, &mut rng);

    // 3. Delivered as SQS batches to `ingest --invoke`, `concurrency` at a time; failed
    //    messages come back in the next burst, as after a visibility timeout.
    let delivery = Instant::now();
    let env: Arc<Vec<(String, String)>> = Arc::new(env.into_iter().collect());
    let mut tally = Tally::default();
    let cpu_before = children_cpu_seconds();
    let mut carried: Vec<String> = Vec::new();
    let mut rounds = 0;
    for burst in bursts.into_iter().chain(std::iter::repeat_with(Vec::new)) {
        let mut messages: VecDeque<String> = carried.drain(..).chain(burst).collect();
        if messages.is_empty() {
            break;
        }
        rounds += 1;
        assert!(rounds < 200, "messages still failing after {rounds} bursts");
        let mut running = tokio::task::JoinSet::new();
        while !messages.is_empty() || !running.is_empty() {
            while running.len() < o.concurrency && !messages.is_empty() {
                let take = messages.len().min(o.batch_size);
                let batch: Vec<String> = messages.drain(..take).collect();
                running.spawn(invoke(ingest.clone(), env.clone(), batch));
            }
            if let Some(done) = running.join_next().await {
                let result = done.expect("invocation task");
                tally.add(&result);
                carried.extend(result.failed);
            }
        }
    }
    let cpu_seconds = children_cpu_seconds() - cpu_before;
    eprintln!(
        "scale: delivered in {:.0} s, {} invocations, {} messages retried",
        delivery.elapsed().as_secs_f64(),
        tally.invocations,
        tally.retried
    );

    // 4. Every row exactly once: per table, the total, the objects, and no repeated line.
    let (lost, duplicated) = verify(&bq, &expected).await;

    // 5. Per 1,000 objects, then extrapolated.
    report(
        &o,
        &tally,
        cpu_seconds,
        log_bytes,
        gzip_bytes,
        objects.len(),
    );
    let request_gzip = wire_ratio(&gen);
    let figures = extrapolate(
        &o,
        &tally,
        cpu_seconds,
        log_bytes,
        objects.len(),
        request_gzip,
    );
    println!(
        "scale: {} objects, {} lost, {} duplicated",
        objects.len(),
        lost,
        duplicated
    );
    println!(
        "scale: {} objects/day → peak {:.0} CreateWriteStream/h (quota {}), ${:.2} per TB",
        thousands(o.daily_objects),
        figures.peak_create_write_stream,
        thousands(CREATE_WRITE_STREAM_QUOTA),
        figures.dollars_per_tb
    );
    if lost + duplicated > 0 {
        std::process::exit(1);
    }
}

/// Puts the generated objects (32 at a time); returns them with their ETags, the rows
/// expected per (table, object), and the bytes of log text and of gzip.
async fn put_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    gen: &GenOptions,
) -> (Vec<ObjectRef>, BTreeMap<(String, String), u64>, u64, u64) {
    let mut objects = Vec::new();
    let mut expected = BTreeMap::new();
    let (mut log_bytes, mut gzip_bytes) = (0, 0);
    let mut puts = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < gen.objects || !puts.is_empty() {
        while puts.len() < 32 && next < gen.objects {
            let mut body = Vec::new();
            let manifest = write_object(gen, next, &mut body).expect("generate");
            let (s3, bucket) = (s3.clone(), bucket.to_string());
            puts.spawn(async move {
                let size = body.len() as u64;
                let put = s3
                    .put_object()
                    .bucket(&bucket)
                    .key(&manifest.key)
                    .body(body.into())
                    .send()
                    .await
                    .expect("put object");
                let object = ObjectRef {
                    bucket,
                    key: manifest.key.clone(),
                    size: Some(size),
                    etag: put.e_tag().map(|e| e.trim_matches('"').to_string()),
                    version_id: None,
                };
                (object, manifest)
            });
            next += 1;
        }
        if let Some(done) = puts.join_next().await {
            let (object, manifest) = done.expect("put task");
            log_bytes += manifest.uncompressed_bytes;
            gzip_bytes += object.size.unwrap_or(0);
            for (date, rows) in &manifest.rows_per_date {
                let table = format!("cloudfront_{}", date.replace('-', ""));
                *expected.entry((table, object.to_string())).or_default() += rows;
            }
            objects.push(object);
        }
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    (objects, expected, log_bytes, gzip_bytes)
}

/// The notification bodies, burst by burst: every object announced once, some twice (a
/// duplicate delivered later), some late (announced in a later burst than their neighbours).
fn notifications(objects: &[ObjectRef], o: &Options, rng: &mut ChaCha8Rng) -> Vec<Vec<String>> {
    let bursts = o.bursts.max(1);
    let mut plan: Vec<Vec<String>> = vec![Vec::new(); bursts];
    for (i, object) in objects.iter().enumerate() {
        let body = s3_notification(object, "ObjectCreated:Put").to_string();
        let mut burst = i * bursts / objects.len().max(1);
        if rng.random_range(0..100) < o.late_percent {
            burst = (burst + rng.random_range(1..=3)).min(bursts - 1);
        }
        if rng.random_range(0..100) < o.duplicate_percent {
            let again = (burst + rng.random_range(0..=2)).min(bursts - 1);
            plan[again].push(body.clone());
        }
        plan[burst].push(body);
    }
    for burst in &mut plan {
        burst.shuffle(rng);
    }
    plan
}

/// What one invocation reported.
#[derive(Default)]
struct Invocation {
    messages: usize,
    failed: Vec<String>,
    calls: BTreeMap<String, f64>,
}

/// Runs `ingest --invoke` on an SQS event of `bodies`; the failed messages' bodies come back.
async fn invoke(
    ingest: std::path::PathBuf,
    env: Arc<Vec<(String, String)>>,
    bodies: Vec<String>,
) -> Invocation {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({
                "messageId": format!("m{i}"),
                "receiptHandle": format!("m{i}"),
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:scale",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    let event = json!({ "Records": records }).to_string();
    let mut child = tokio::process::Command::new(&ingest)
        .args(["--invoke", "-"])
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ingest");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, event.as_bytes())
        .await
        .expect("write the event");
    drop(stdin);
    let output = child.wait_with_output().await.expect("ingest ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut result = Invocation {
        messages: bodies.len(),
        ..Default::default()
    };
    let mut response = None;
    for line in stdout.lines() {
        let Ok(doc) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if doc.get("batchItemFailures").is_some() {
            response = Some(doc);
        } else if let Some(fields) = doc.as_object() {
            for (name, value) in fields {
                if let (Some(api), Some(n)) = (name.strip_prefix("Calls."), value.as_f64()) {
                    *result.calls.entry(api.to_string()).or_default() += n;
                }
            }
        }
    }
    match response {
        Some(r) => {
            for failure in r["batchItemFailures"].as_array().into_iter().flatten() {
                let id = failure["itemIdentifier"].as_str().unwrap_or_default();
                let index: usize = id.trim_start_matches('m').parse().expect("our ids");
                result.failed.push(bodies[index].clone());
            }
        }
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            eprintln!(
                "scale: an invocation failed as a whole; its batch is retried: {}",
                stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            );
            result.failed = bodies;
        }
    }
    result
}

#[derive(Default)]
struct Tally {
    invocations: u64,
    messages: u64,
    retried: u64,
    calls: BTreeMap<String, f64>,
}

impl Tally {
    fn add(&mut self, invocation: &Invocation) {
        self.invocations += 1;
        self.messages += invocation.messages as u64;
        self.retried += invocation.failed.len() as u64;
        for (api, n) in &invocation.calls {
            *self.calls.entry(api.clone()).or_default() += n;
        }
    }

    fn calls(&self, api: &str) -> f64 {
        self.calls.get(api).copied().unwrap_or(0.0)
    }
}

/// CPU seconds (user + system) of every child process waited for so far.
fn children_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Lost and duplicated rows: per table, the row count against the expected one, every
/// expected object present, and no (object, line) twice.
async fn verify(bq: &BigQuery, expected: &BTreeMap<(String, String), u64>) -> (u64, u64) {
    let mut per_table: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for ((table, _), rows) in expected {
        let entry = per_table.entry(table).or_default();
        entry.0 += rows;
        entry.1 += 1;
    }
    let (mut lost, mut duplicated) = (0, 0);
    let number = |rows: &[Vec<Option<String>>], column: usize| -> u64 {
        rows.first()
            .and_then(|r| r.get(column).cloned().flatten())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for (table, (rows, objects)) in per_table {
        let t = format!("`{}.{}.{table}`", bq.project, bq.dataset);
        let counts = bq
            .query(&format!(
                "SELECT COUNT(*), COUNT(DISTINCT source_object) FROM {t}"
            ))
            .await
            .unwrap_or_default();
        let repeated = bq
            .query(&format!(
                "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM {t} \
                 GROUP BY source_object, source_line HAVING COUNT(*) > 1)"
            ))
            .await
            .unwrap_or_default();
        let (present, present_objects) = (number(&counts, 0), number(&counts, 1));
        let twice = number(&repeated, 0);
        let once = present - twice;
        if once < rows || present_objects < objects {
            eprintln!(
                "scale: {table}: {once} of {rows} rows, {present_objects} of {objects} objects"
            );
        }
        lost += rows.saturating_sub(once);
        duplicated += twice + once.saturating_sub(rows);
        eprintln!("scale: {table}: {present} rows, {present_objects} objects, {twice} repeated");
    }
    (lost, duplicated)
}

/// Prints the measured calls per 1,000 objects.
fn report(o: &Options, t: &Tally, cpu: f64, log_bytes: u64, gzip_bytes: u64, objects: usize) {
    let per_k = |n: f64| n * 1000.0 / objects as f64;
    eprintln!(
        "scale: {} invocations of up to {} messages ({:.1} objects each), {:.1} CPU s in all",
        t.invocations,
        o.batch_size,
        objects as f64 / t.invocations.max(1) as f64,
        cpu
    );
    eprintln!(
        "scale: {:.0} bytes of log ({:.0} gzip) per object",
        log_bytes as f64 / objects as f64,
        gzip_bytes as f64 / objects as f64
    );
    println!("scale: calls per 1,000 objects:");
    for (api, n) in &t.calls {
        println!("  {api:<40} {:>12.1}", per_k(*n));
    }
    println!(
        "  {:<40} {:>12.1}",
        "SQS (S3 send + receive + delete, modelled)",
        per_k(sqs_requests(t, objects))
    );
}

/// SQS requests the deployment makes: S3 sends one message per object; Lambda's event
/// source mapping receives a batch per invocation and deletes it with one batch call.
fn sqs_requests(t: &Tally, objects: usize) -> f64 {
    objects as f64 + 2.0 * t.invocations as f64
}

struct Figures {
    peak_create_write_stream: f64,
    dollars_per_tb: f64,
}

/// The measured counts scaled to `daily_objects` a day, the peak hour `peak_factor` times
/// the average one, with batches full at the peak (the batching window fills them).
fn extrapolate(
    o: &Options,
    t: &Tally,
    cpu: f64,
    log_bytes: u64,
    objects: usize,
    request_gzip: f64,
) -> Figures {
    let n = objects as f64;
    let per_object = |api: &str| t.calls(api) / n;
    let invocations_per_object = t.invocations as f64 / n;
    let streams_per_invocation = t.calls("BigQuery.CreateWriteStream") / t.invocations as f64;
    let peak_objects_per_hour = o.daily_objects / 24.0 * o.peak_factor;
    let peak_invocations = peak_objects_per_hour / o.batch_size as f64;
    let peak_create_write_stream = peak_invocations * streams_per_invocation;
    let dml_per_day = per_object("BigQuery.DML") * o.daily_objects;
    let queries_per_day = per_object("BigQuery.jobs.query") * o.daily_objects;
    let tables_per_day = 1.0;

    // A TB of logs (uncompressed text, as CloudFront writes it), in objects of this size.
    let objects_per_tb = 1e12 / (log_bytes as f64 / n);
    let lambda_seconds = cpu / n * objects_per_tb;
    let gb = o.memory_mb / 1024.0;
    let lambda = lambda_seconds * gb * price::LAMBDA_GB_SECOND
        + invocations_per_object * objects_per_tb * price::LAMBDA_REQUEST;
    let sqs = sqs_requests(t, objects) / n * objects_per_tb * price::SQS_REQUEST;
    // Writes under 1 KB are one unit, transactional ones two per item (each object is bound
    // to its batch, then marked DONE, in transactions); the batch plan, about half a KB per
    // object, is written once.
    let transact_units_per_object = 2.0 * 2.0;
    let plan_units_per_object = (per_object("DynamoDB.PutItem")).max(0.5);
    let wru_per_object =
        per_object("DynamoDB.UpdateItem") + transact_units_per_object + plan_units_per_object;
    let rru_per_object = per_object("DynamoDB.GetItem");
    let dynamodb = objects_per_tb
        * (wru_per_object * price::DYNAMODB_WRU + rru_per_object * price::DYNAMODB_RRU);
    let s3 =
        objects_per_tb * (per_object("S3.GetObject") + per_object("S3.HeadObject")) * price::S3_GET;
    let append_bytes_per_tb = per_object("BigQuery.AppendRowsBytes") * objects_per_tb;
    let storage_write = append_bytes_per_tb / (1u64 << 30) as f64 * price::STORAGE_WRITE_GIB;
    let egress = append_bytes_per_tb * request_gzip / 1e9 * price::EGRESS_GB;
    let total = lambda + sqs + dynamodb + s3 + storage_write + egress;

    println!(
        "scale: at {} objects/day, peak hour {}× the average ({:.0} objects/h, batches of {}):",
        thousands(o.daily_objects),
        o.peak_factor,
        peak_objects_per_hour,
        o.batch_size
    );
    println!(
        "  CreateWriteStream {:.0}/h at the peak ({:.2} per invocation; quota {}/h)",
        peak_create_write_stream,
        streams_per_invocation,
        thousands(CREATE_WRITE_STREAM_QUOTA)
    );
    println!(
        "  DML statements {:.0}/day ({:.0} per table), queries {:.0}/day",
        dml_per_day,
        dml_per_day / tables_per_day,
        queries_per_day
    );
    println!(
        "scale: cost per TB of logs ({:.0} objects of {:.0} bytes; {:.2} wire bytes per request byte with gzip):",
        objects_per_tb,
        log_bytes as f64 / n,
        request_gzip
    );
    for (what, dollars) in [
        ("Lambda arm64 (GB-s from CPU time, requests)", lambda),
        ("SQS", sqs),
        ("DynamoDB on demand", dynamodb),
        ("S3 GET", s3),
        ("BigQuery Storage Write (after 2 TiB free)", storage_write),
        ("AWS egress to Google (gzip on the wire)", egress),
    ] {
        println!("  {what:<46} ${dollars:>9.2}");
    }
    println!("  {:<46} ${total:>9.2}", "total");
    Figures {
        peak_create_write_stream,
        dollars_per_tb: total,
    }
}

/// Wire bytes per AppendRows byte with gzip on the wire, measured on rows the generator
/// makes: the sample's rows encoded as ingest encodes them, then gzipped request by request.
fn wire_ratio(gen: &GenOptions) -> f64 {
    use shared::bigquery::encode::RowEncoder;
    use shared::transform::{transform_gzip, BatchSink, RejectedLine, Stopped, TransformOptions};
    struct Sizes(u64, u64);
    impl BatchSink for Sizes {
        fn batch(
            &mut self,
            _: &str,
            _: i32,
            rows: shared::bigquery::rows::Rows,
        ) -> Result<(), Stopped> {
            let request = shared::bigquery::write::append_request("s", 0, rows, None);
            let bytes = request.encode_to_vec();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&bytes).expect("in memory");
            self.0 += bytes.len() as u64;
            self.1 += gz.finish().expect("in memory").len() as u64;
            Ok(())
        }
        fn rejected(&mut self, _: RejectedLine) -> Result<(), Stopped> {
            Ok(())
        }
    }
    let options = TransformOptions {
        layout: shared::route::Layout::Sharded {
            prefix: "cloudfront_".into(),
        },
        batch_bytes: 2 << 20,
        max_line_bytes: 65536,
        plain_fields: None,
    };
    let mut sizes = Sizes(0, 0);
    for i in 0..gen.objects.min(200) {
        let mut body = Vec::new();
        write_object(gen, i, &mut body).expect("generate");
        let encoder = RowEncoder::new(format!("s3://b/{i}"), 0);
        transform_gzip(body.as_slice(), &options, &encoder, &mut sizes).expect("transform");
    }
    sizes.1 as f64 / sizes.0.max(1) as f64
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
