use std::collections::HashMap;
use std::time::Instant;

use shared::bigquery::encode::RowEncoder;
use shared::bigquery::rows::Rows;
use shared::bigquery::write::append_request;
use shared::route::Layout;
use shared::transform::{
    default_workers, transform_gzip, transform_gzip_parallel, BatchSink, RejectedLine, Stopped,
    TransformOptions,
};

use super::CliResult;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// The ingest transform on a local .gz, no network: gunzip → parse → route → encode
    /// AppendRows requests. Prints one JSON line.
    Transform {
        /// A local CloudFront log object (`.gz`), e.g. one written by `cf2bq gen --out`.
        file: std::path::PathBuf,
        /// Gunzip and parse on one thread, line by line (the reference path).
        #[arg(long, conflicts_with_all = ["workers", "inflate_only"])]
        single_thread: bool,
        /// Parser threads beside the gunzip thread (default: as ingest runs, one per core
        /// beyond the gunzip thread's, at least one).
        #[arg(long)]
        workers: Option<usize>,
        /// Only gunzip (zlib-rs, as the transform does), to /dev/null: the practical limit.
        #[arg(long, conflicts_with = "workers")]
        inflate_only: bool,
    },
}

/// Encodes every batch into the exact AppendRows request bytes the writer would send.
#[derive(Default)]
struct EncodingSink {
    offsets: HashMap<String, i64>,
    requests: u64,
    request_bytes: u64,
    rejected: u64,
}

impl BatchSink for EncodingSink {
    fn batch(&mut self, table: &str, _date: i32, rows: Rows) -> Result<(), Stopped> {
        let offset = self.offsets.entry(table.to_string()).or_default();
        let count = rows.len() as i64;
        let schema = (*offset == 0).then(shared::bigquery::schema::proto_descriptor);
        let request = append_request(table, *offset, rows, schema.as_ref());
        *offset += count;
        self.request_bytes += request.encode_to_vec().len() as u64;
        self.requests += 1;
        Ok(())
    }

    fn rejected(&mut self, _line: RejectedLine) -> Result<(), Stopped> {
        self.rejected += 1;
        Ok(())
    }
}

pub async fn run(args: Args) -> CliResult {
    let What::Transform {
        file,
        single_thread,
        workers,
        inflate_only,
    } = args.what;
    let options = TransformOptions {
        layout: Layout::Sharded {
            prefix: "cloudfront_".into(),
        },
        batch_bytes: shared::config::DEFAULT_BATCH_BYTES,
        max_line_bytes: shared::cloudfront::DEFAULT_MAX_LINE_BYTES,
        plain_fields: None,
    };
    let encoder = RowEncoder::new(
        format!("file://{}", file.display()),
        shared::clock::now_micros(),
    );
    let input =
        std::fs::File::open(&file).map_err(|e| format!("opening {}: {e}", file.display()))?;
    if inflate_only {
        return inflate(input);
    }
    let mut sink = EncodingSink::default();
    let started = Instant::now();
    let workers = workers.unwrap_or_else(default_workers).max(1);
    let stats = if single_thread {
        transform_gzip(input, &options, &encoder, &mut sink)?
    } else {
        transform_gzip_parallel(input, &options, workers, &encoder, &mut sink)?
    };
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "uncompressed_bytes": stats.read.bytes,
            "rows": stats.read.rows,
            "rejected": sink.rejected,
            "requests": sink.requests,
            "request_bytes": sink.request_bytes,
            "workers": if single_thread { 0 } else { workers },
            "seconds": seconds,
        })
    );
    Ok(0)
}

/// Gunzips with the transform's own decoder and drops the text.
fn inflate(input: std::fs::File) -> CliResult {
    let started = Instant::now();
    let bytes = shared::transform::inflate_only(input).map_err(|e| format!("gunzip: {e}"))?;
    println!(
        "{}",
        serde_json::json!({
            "uncompressed_bytes": bytes,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
    Ok(0)
}
