use shared::ledger::Ledger;
use shared::replay::{self, Selection};
use shared::route::IsoDate;
use shared::Config;

use super::CliResult;
use crate::progress;

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
    from: Option<IsoDate>,
    /// Last UTC date (YYYY-MM-DD), inclusive.
    #[arg(long)]
    to: Option<IsoDate>,
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

impl Args {
    /// `--from` after `--to` would select nothing: almost surely swapped.
    pub fn usage_problem(&self) -> Option<String> {
        match (self.from, self.to) {
            (Some(from), Some(to)) if from > to => Some(format!(
                "--from {from} is after --to {to}: the range is empty"
            )),
            _ => None,
        }
    }
}

pub async fn run(args: Args) -> CliResult {
    let aws = shared::aws::load().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    if args.from_dlq {
        let dlq = replay::dead_letter_queue(&sqs, &args.queue).await?;
        let moving = progress::tally("messages moved");
        let moved = replay::redrive(&sqs, &dlq, &args.queue, args.dry_run, |n| {
            moving.set_position(n)
        })
        .await?;
        moving.finish_and_clear();
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
    let selection = Selection {
        bucket: args.bucket.clone().expect("clap requires --bucket"),
        prefix: args.prefix.clone(),
        from: args.from.map(|d| d.0),
        to: args.to.map(|d| d.0),
    };
    let config = Config::from_env()?;
    let ledger = Ledger::new(
        aws_sdk_dynamodb::Client::new(&aws),
        &config.ledger_table,
        config.lease,
    );
    let s3 = shared::aws::s3(&aws);

    let listing = progress::tally("keys listed");
    let (listed, selected) = replay::list(&s3, &selection, |n| listing.set_position(n)).await?;
    listing.finish_and_clear();
    let selected_count = selected.len() as u64;
    let checking = progress::counter(selected_count, "checked in the ledger");
    let (to_send, skipped_done) =
        replay::without_done(&ledger, selected, args.force, |n| checking.set_position(n)).await?;
    checking.finish_and_clear();
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
        let bar = progress::counter(to_send.len() as u64, "objects queued");
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
    if summary.failed > 0 {
        return Err(format!("{} message(s) not sent to {}", summary.failed, args.queue).into());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::{Cli, Command};

    fn replay(range: &[&str]) -> super::Args {
        let fixed = ["cf2bq", "replay", "--bucket", "b", "--queue", "q"];
        let cli = Cli::try_parse_from(fixed.iter().chain(range)).expect("parses");
        match cli.command {
            Command::Replay(args) => args,
            _ => unreachable!("parsed as replay"),
        }
    }

    #[test]
    fn the_date_range_is_typed_and_ordered() {
        let args = replay(&["--from", "2026-11-01", "--to", "2026-11-02"]);
        assert_eq!(
            args.from.map(|d| d.to_string()).as_deref(),
            Some("2026-11-01")
        );
        assert_eq!(args.to.map(|d| d.0 - args.from.unwrap().0), Some(1));
        assert_eq!(args.usage_problem(), None);
        assert_eq!(replay(&["--to", "2026-11-01"]).usage_problem(), None);
        let swapped = replay(&["--from", "2026-11-02", "--to", "2026-11-01"]);
        assert_eq!(
            swapped.usage_problem().as_deref(),
            Some("--from 2026-11-02 is after --to 2026-11-01: the range is empty")
        );
    }
}
