use shared::ledger::Ledger;
use shared::replay::{self, Selection};
use shared::Config;

use super::CliResult;

#[derive(clap::Args)]
pub struct Args {
    /// The log bucket to list.
    #[arg(long, required_unless_present = "from_dlq")]
    bucket: Option<String>,
    /// Only keys under this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// First UTC date (YYYY-MM-DD) of the key names' date-hour, inclusive.
    #[arg(long)]
    from: Option<String>,
    /// Last UTC date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    to: Option<String>,
    /// The ingest queue (default: CF2BQ_INGEST_QUEUE_URL).
    #[arg(long, env = "CF2BQ_INGEST_QUEUE_URL")]
    queue: String,
    /// Show what would be sent; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Re-ingest objects already done, replacing their earlier rows.
    #[arg(long)]
    force: bool,
    /// Move the queue's dead-lettered messages back to it instead.
    #[arg(long)]
    from_dlq: bool,
}

pub async fn run(args: Args) -> CliResult {
    let aws = shared::aws::load().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    if args.from_dlq {
        let dlq = replay::dead_letter_queue(&sqs, &args.queue).await?;
        let moved = replay::redrive(&sqs, &dlq, &args.queue, args.dry_run).await?;
        let verb = if args.dry_run {
            "would move (at least)"
        } else {
            "moved"
        };
        println!(
            "{verb} {moved} message(s) from {dlq} back to {}",
            args.queue
        );
        return Ok(0);
    }
    let date = |flag: &str, value: &Option<String>| -> Result<Option<i32>, String> {
        value
            .as_deref()
            .map(|v| {
                shared::cloudfront::parse::parse_date(v)
                    .ok_or(format!("--{flag} {v:?} is not YYYY-MM-DD"))
            })
            .transpose()
    };
    let selection = Selection {
        bucket: args.bucket.clone().expect("clap requires --bucket"),
        prefix: args.prefix.clone(),
        from: date("from", &args.from)?,
        to: date("to", &args.to)?,
    };
    let config = Config::from_env()?;
    let ledger = Ledger::new(
        aws_sdk_dynamodb::Client::new(&aws),
        &config.ledger_table,
        config.lease,
    );
    let s3 = shared::aws::s3(&aws);

    let (listed, selected) = replay::list(&s3, &selection).await?;
    let selected_count = selected.len() as u64;
    let (to_send, skipped_done) = replay::without_done(&ledger, selected, args.force).await?;
    let mut summary = replay::ReplaySummary {
        listed,
        selected: selected_count,
        skipped_done,
        ..Default::default()
    };
    if args.dry_run {
        for object in &to_send {
            println!("would send {object}");
        }
    } else {
        let bar = indicatif::ProgressBar::new(to_send.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} objects queued ({per_sec})",
            )
            .expect("valid template"),
        );
        let (sent, failed) = replay::send(&sqs, &args.queue, &to_send, args.force, |n| {
            bar.set_position(n)
        })
        .await?;
        bar.finish_and_clear();
        summary.sent = sent;
        summary.failed = failed;
    }
    println!(
        "replay{}: {} listed, {} selected, {} already done (skipped), {} sent{}, {} failed",
        if args.dry_run { " (dry run)" } else { "" },
        summary.listed,
        summary.selected,
        summary.skipped_done,
        summary.sent,
        if args.force { " with --force" } else { "" },
        summary.failed
    );
    Ok(if summary.failed == 0 { 0 } else { 1 })
}
