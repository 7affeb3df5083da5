//! Realistic synthetic CloudFront log objects, deterministic for a seed: all 33 fields,
//! proper key names, several UTC dates, and late lines that belong to the previous day
//! (CloudFront delivers up to a day late, and files are named by the hour of most requests).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cloudfront::fields::{LEGACY_FIELDS, LOG_FIELDS};
use crate::cloudfront::parse::days_from_civil;
use crate::route::IsoDate;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub seed: u64,
    pub objects: usize,
    /// Data lines per object (ignored when `bytes_per_object` is set).
    pub lines_per_object: u64,
    /// Generate each object up to this many uncompressed bytes instead of a line count.
    pub bytes_per_object: Option<u64>,
    /// First log date, days since the epoch.
    pub first_date: i32,
    /// Objects are spread over this many consecutive dates.
    pub days: u32,
    /// Share of lines (0–100) dated in the hour before the object's hour, across midnight
    /// for the first hour of a day.
    pub late_percent: u32,
    pub distribution: String,
    /// Key prefix, e.g. `cf/` (empty for none).
    pub prefix: String,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 42,
            objects: 12,
            lines_per_object: 1000,
            bytes_per_object: None,
            first_date: days_from_civil(2026, 11, 20),
            days: 3,
            late_percent: 5,
            distribution: "E2QWRUHAPOMQZL".into(),
            prefix: String::new(),
        }
    }
}

/// One generated object's key and what it holds.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ObjectManifest {
    pub key: String,
    pub lines: u64,
    pub uncompressed_bytes: u64,
    /// Data lines per log date (`YYYY-MM-DD`).
    pub rows_per_date: BTreeMap<String, u64>,
}

/// Everything generated in one run: the expected result of ingesting it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub objects: Vec<ObjectManifest>,
    pub rows_per_date: BTreeMap<String, u64>,
    pub total_rows: u64,
}

impl Manifest {
    pub fn add(&mut self, object: ObjectManifest) {
        for (date, n) in &object.rows_per_date {
            *self.rows_per_date.entry(date.clone()).or_default() += n;
        }
        self.total_rows += object.lines;
        self.objects.push(object);
    }
}

/// The `(key, date, hour)` of object `index`: objects are spread round-robin over dates and
/// hours so that every date gets some.
pub fn object_key(options: &GenOptions, index: usize) -> (String, i32, u32) {
    let days = options.days.max(1) as usize;
    let date = options.first_date + (index % days) as i32;
    let hour = ((index / days) * 7 % 24) as u32;
    let unique = format!("{:08x}", splitmix(options.seed ^ index as u64) as u32);
    let key = format!(
        "{}{}.{}-{:02}.{}.gz",
        options.prefix,
        options.distribution,
        IsoDate(date),
        hour,
        unique
    );
    (key, date, hour)
}

/// Writes object `index` as gzip to `out`; returns its manifest.
pub fn write_object(
    options: &GenOptions,
    index: usize,
    out: impl Write,
) -> io::Result<ObjectManifest> {
    let (key, date, hour) = object_key(options, index);
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix(options.seed.wrapping_add(index as u64)));
    let mut gz = GzEncoder::new(out, Compression::default());
    let mut manifest = ObjectManifest {
        key,
        ..Default::default()
    };
    let header = format!(
        "#Version: 1.0\n#Fields: {}\n",
        LOG_FIELDS[..LEGACY_FIELDS]
            .iter()
            .map(|f| f.log_name)
            .collect::<Vec<_>>()
            .join(" ")
    );
    gz.write_all(header.as_bytes())?;
    manifest.uncompressed_bytes += header.len() as u64;
    let mut line = String::with_capacity(1024);
    let mut written = 0u64;
    loop {
        let done = match options.bytes_per_object {
            Some(limit) => manifest.uncompressed_bytes >= limit,
            None => written >= options.lines_per_object,
        };
        if done {
            break;
        }
        let late = rng.random_range(0..100) < options.late_percent;
        let (line_date, line_hour) = match (late, hour) {
            (false, _) => (date, hour),
            (true, 0) => (date - 1, 23),
            (true, h) => (date, h - 1),
        };
        line.clear();
        write_line(&mut rng, line_date, line_hour, &mut line);
        gz.write_all(line.as_bytes())?;
        manifest.uncompressed_bytes += line.len() as u64;
        *manifest
            .rows_per_date
            .entry(IsoDate(line_date).to_string())
            .or_default() += 1;
        written += 1;
    }
    manifest.lines = written;
    gz.finish()?;
    Ok(manifest)
}

/// Object `index` as standard logging v2 would deliver it in Parquet: the same rows as
/// [`write_object`] writes, under a Hive-style key
/// (`<prefix><dist>/…` → `<prefix>distributionid=<dist>/year=…/month=…/day=…/hour=…/<dist>.<id>.parquet`),
/// columns named as AWS documents them. Returns its manifest and bytes.
pub fn write_v2_parquet_object(
    options: &GenOptions,
    index: usize,
) -> io::Result<(ObjectManifest, Vec<u8>)> {
    use std::io::Read;
    let mut gz = Vec::new();
    let mut manifest = write_object(options, index, &mut gz)?;
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&gz[..]).read_to_string(&mut text)?;
    let body = crate::cloudfront::parquet::legacy_text_as_parquet(&text, 1000)
        .map_err(io::Error::other)?;
    let (_, date, hour) = object_key(options, index);
    let (y, m, d) = crate::cloudfront::parse::civil_from_days(date);
    let unique = format!("{:08x}", splitmix(options.seed ^ index as u64) as u32);
    let dist = &options.distribution;
    manifest.key = format!(
        "{}distributionid={dist}/year={y:04}/month={m:02}/day={d:02}/hour={hour:02}/{dist}.{unique}.parquet",
        options.prefix
    );
    manifest.uncompressed_bytes = body.len() as u64;
    Ok((manifest, body))
}

/// Generates every object of `options` into an S3 bucket; returns what was generated.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    options: &GenOptions,
) -> Result<Manifest, String> {
    upload_with_progress(s3, bucket, options, |_| {}).await
}

/// Puts one generated object, the error naming where it was going.
pub async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "uploading s3://{bucket}/{key}: {}",
                crate::bigquery::auth::aws_error(&e)
            )
        })
}

/// [`upload`], calling `progress` after each object with the number uploaded so far.
pub async fn upload_with_progress(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    options: &GenOptions,
    mut progress: impl FnMut(u64),
) -> Result<Manifest, String> {
    let mut manifest = Manifest::default();
    for index in 0..options.objects {
        let mut body = Vec::new();
        let object = write_object(options, index, &mut body).map_err(|e| e.to_string())?;
        put_object(s3, bucket, &object.key, body).await?;
        manifest.add(object);
        progress(manifest.objects.len() as u64);
    }
    Ok(manifest)
}

const EDGES: &[&str] = &[
    "FRA56-P1", "ICN54-C1", "IAD89-C3", "LHR61-P2", "NRT57-C2", "SEA19-C1", "GRU3-C1", "SIN2-P4",
];
const PATHS: &[&str] = &[
    "/index.html",
    "/live/stream.m3u8",
    "/vod/ep%2520001/segment_00042.ts",
    "/assets/app.3f9c1b.js",
    "/assets/style.css",
    "/images/hero%2520banner.jpg",
    "/api/v1/items",
    "/favicon.ico",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0%2520(Windows%2520NT%252010.0;%2520Win64;%2520x64)%2520AppleWebKit/537.36%2520(KHTML,%2520like%2520Gecko)%2520Chrome/131.0.0.0%2520Safari/537.36",
    "Mozilla/5.0%2520(iPhone;%2520CPU%2520iPhone%2520OS%252018_1%2520like%2520Mac%2520OS%2520X)%2520AppleWebKit/605.1.15%2520(KHTML,%2520like%2520Gecko)%2520Version/18.1%2520Mobile/15E148%2520Safari/604.1",
    "AppleCoreMedia/1.0.0.22B83%2520(iPhone;%2520U;%2520CPU%2520OS%252018_1%2520like%2520Mac%2520OS%2520X;%2520ja_jp)",
    "curl/8.5.0",
    "okhttp/4.12.0",
];
const REFERERS: &[&str] = &[
    "-",
    "-",
    "https://www.example.com/",
    "https://www.example.com/watch?v=1001",
    "https://search.example.org/?q=live%2520stream",
];
const QUERIES: &[&str] = &[
    "-",
    "-",
    "-",
    "channel_id=1001&program_id=55501",
    "v=3&lang=ja",
    "q=caf%25C3%25A9%2520au%2520lait",
];
const STATUS: &[(i32, &str)] = &[
    (200, "Hit"),
    (200, "Miss"),
    (200, "RefreshHit"),
    (304, "Hit"),
    (206, "Hit"),
    (404, "Error"),
    (403, "Error"),
    (0, "Error"),
    (502, "Error"),
];
const CONTENT_TYPES: &[&str] = &[
    "text/html",
    "application/vnd.apple.mpegurl",
    "video/MP2T",
    "application/javascript",
    "text/css",
    "image/jpeg",
    "application/json",
];

fn write_line(rng: &mut ChaCha8Rng, date: i32, hour: u32, out: &mut String) {
    let pick = |rng: &mut ChaCha8Rng, list: &[&'static str]| list[rng.random_range(0..list.len())];
    let (status, result) = STATUS[rng.random_range(0..STATUS.len())];
    let bytes: u64 = rng.random_range(200..2_000_000);
    let ipv6 = rng.random_range(0..10) == 0;
    let https = rng.random_range(0..10) < 9;
    let ranged = status == 206;
    let _ = write!(
        out,
        "{}\t{:02}:{:02}:{:02}\t{}\t{}\t",
        IsoDate(date),
        hour,
        rng.random_range(0..60),
        rng.random_range(0..60),
        pick(rng, EDGES),
        bytes
    );
    if ipv6 {
        let _ = write!(
            out,
            "2001:db8:{:x}::{:x}\t",
            rng.random_range(0..0xffff),
            rng.random_range(1..0xffff)
        );
    } else {
        let _ = write!(
            out,
            "198.51.{}.{}\t",
            rng.random_range(0..256),
            rng.random_range(1..255)
        );
    }
    let host = "d111111abcdef8.cloudfront.net";
    let _ = write!(
        out,
        "{}\t{host}\t{}\t{:03}\t{}\t{}\t{}\t-\t{}\t",
        if rng.random_range(0..20) == 0 {
            "HEAD"
        } else {
            "GET"
        },
        pick(rng, PATHS),
        status,
        pick(rng, REFERERS),
        pick(rng, AGENTS),
        pick(rng, QUERIES),
        result,
    );
    // x-edge-request-id: 56 characters of base64, like CloudFront's.
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for _ in 0..52 {
        out.push(B64[rng.random_range(0..64)] as char);
    }
    out.push_str("==\t");
    let taken = rng.random_range(1..3000) as f64 / 1000.0;
    let _ = write!(
        out,
        "www.example.com\t{}\t{}\t{:.3}\t-\t{}\t{}\t{}\t{}\t-\t-\t{}\t{:.3}\t{}\t{}\t{}\t",
        if https { "https" } else { "http" },
        rng.random_range(100..900),
        taken,
        if https { "TLSv1.3" } else { "-" },
        if https { "TLS_AES_128_GCM_SHA256" } else { "-" },
        result,
        if rng.random_range(0..3) == 0 {
            "HTTP/1.1"
        } else {
            "HTTP/2.0"
        },
        rng.random_range(1024..65535),
        taken * 0.8,
        result,
        pick(rng, CONTENT_TYPES),
        bytes.saturating_sub(300),
    );
    if ranged {
        let start = rng.random_range(0..1_000_000u64);
        let _ = writeln!(out, "{}\t{}", start, start + bytes);
    } else {
        out.push_str("-\t-\n");
    }
}

/// A 64-bit mixer so nearby seeds give unrelated streams.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigquery::encode::RowEncoder;
    use crate::route::Layout;
    use crate::transform::{transform_gzip, BatchSink, RejectedLine, Stopped, TransformOptions};

    /// Counts rows per table the way ingestion would route them.
    #[derive(Default)]
    struct Counter {
        rows: BTreeMap<String, u64>,
        rejected: Vec<RejectedLine>,
    }

    impl BatchSink for Counter {
        fn batch(
            &mut self,
            table: &str,
            _date: i32,
            rows: crate::bigquery::rows::Rows,
        ) -> Result<(), Stopped> {
            *self.rows.entry(table.to_string()).or_default() += rows.len() as u64;
            Ok(())
        }
        fn rejected(&mut self, line: RejectedLine) -> Result<(), Stopped> {
            self.rejected.push(line);
            Ok(())
        }
    }

    /// Daily tables `t_YYYYMMDD`, small batches.
    fn transform_options() -> TransformOptions {
        TransformOptions {
            layout: Layout::Sharded {
                prefix: "t_".into(),
            },
            batch_bytes: 64 * 1024,
            max_line_bytes: 64 * 1024,
            plain_fields: None,
        }
    }

    #[test]
    fn generated_objects_parse_completely_and_route_like_the_manifest_says() {
        let options = GenOptions {
            objects: 6,
            lines_per_object: 500,
            late_percent: 20,
            ..Default::default()
        };
        let transform = transform_options();
        let mut manifest = Manifest::default();
        let mut counter = Counter::default();
        for i in 0..options.objects {
            let mut gz = Vec::new();
            let object = write_object(&options, i, &mut gz).unwrap();
            assert!(
                object.key.starts_with("E2QWRUHAPOMQZL.2026-11-2"),
                "{}",
                object.key
            );
            let stats = transform_gzip(&gz[..], &transform, &RowEncoder::new("x", 0), &mut counter)
                .unwrap();
            assert_eq!(stats.read.rows, object.lines);
            manifest.add(object);
        }
        assert!(
            counter.rejected.is_empty(),
            "{:?}",
            counter.rejected.first()
        );
        let expected: BTreeMap<String, u64> = manifest
            .rows_per_date
            .iter()
            .map(|(d, n)| (format!("t_{}", d.replace('-', "")), *n))
            .collect();
        assert_eq!(counter.rows, expected);
        // Three dates of objects plus late lines spilling into the day before the first.
        assert_eq!(expected.len(), 4, "{expected:?}");
        assert_eq!(manifest.total_rows, 3000);
    }

    #[test]
    fn v2_parquet_objects_hold_the_same_rows_under_a_hive_key() {
        let options = GenOptions {
            lines_per_object: 300,
            late_percent: 20,
            prefix: "cf/".into(),
            ..Default::default()
        };
        let transform = transform_options();
        let mut gz = Vec::new();
        let legacy = write_object(&options, 4, &mut gz).unwrap();
        let mut text = Counter::default();
        transform_gzip(&gz[..], &transform, &RowEncoder::new("x", 0), &mut text).unwrap();

        let (manifest, body) = write_v2_parquet_object(&options, 4).unwrap();
        assert_eq!(
            crate::replay::key_date(&manifest.key),
            crate::replay::key_date(&legacy.key)
        );
        assert!(
            manifest
                .key
                .starts_with("cf/distributionid=E2QWRUHAPOMQZL/year=2026/month=11/"),
            "{}",
            manifest.key
        );
        assert_eq!(manifest.rows_per_date, legacy.rows_per_date);
        let mut parquet = Counter::default();
        let stats = crate::formats::transform_parquet(
            bytes::Bytes::from(body),
            &transform,
            &RowEncoder::new("x", 0),
            &mut parquet,
        )
        .unwrap();
        assert_eq!(stats.read.rows, 300);
        assert!(
            parquet.rejected.is_empty(),
            "{:?}",
            parquet.rejected.first()
        );
        assert_eq!(parquet.rows, text.rows);
    }

    #[test]
    fn same_seed_same_bytes() {
        let options = GenOptions {
            lines_per_object: 50,
            ..Default::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_object(&options, 3, &mut a).unwrap();
        write_object(&options, 3, &mut b).unwrap();
        assert_eq!(a, b);
    }
}
