use shared::bigquery::BigQuery;
use shared::keeper::freshness::Memory;
use shared::keeper::{self, KeeperOptions, KeeperReport};
use shared::Config;

use super::CliResult;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Create today's and the next days' tables, re-create missing ones of the look-back
    /// window, add new columns to older tables (what the keeper Lambda does).
    Ensure,
    /// Print dates → table, rows, last ingest time; exit 1 when a table is missing or the
    /// data is stale. Changes nothing.
    Check,
}

pub async fn run(args: Args) -> CliResult {
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    let bq = BigQuery::connect(&config.bigquery, &aws).await?;
    let repair = matches!(args.what, What::Ensure);
    let options = KeeperOptions::from_config(&config, repair);
    // The keeper Lambda's memory of the tables, read only: a check by hand must not change
    // what the next scheduled run compares with.
    let memory: Memory = keeper::memory_store(&aws, &config)
        .load()
        .await
        .unwrap_or_else(|e| {
            eprintln!("warning: {e}; judging freshness from table metadata alone");
            Memory::default()
        });
    let now = shared::clock::now_micros();
    let report = keeper::run(&bq, &options, &memory, keeper::today(), now).await?;
    print(&report);
    Ok(match args.what {
        What::Ensure => 0,
        What::Check if report.has_problems() => 1,
        What::Check => 0,
    })
}

fn print(report: &KeeperReport) {
    println!(
        "{:<14} {:<28} {:>10}  last ingest (UTC)",
        "log date", "table", "rows"
    );
    for t in &report.tables {
        let rows = t.rows.map_or("MISSING".to_string(), |r| r.to_string());
        let last = t.last_ingest_micros.map_or("-".to_string(), utc);
        println!("{:<14} {:<28} {:>10}  {last}", t.date, t.table, rows);
    }
    for t in &report.created_ahead {
        println!("created ahead: {t}");
    }
    for t in &report.created_missing {
        println!("created missing: {t}");
    }
    for (t, cols) in &report.patched {
        println!("schema patched: {t} gained {}", cols.join(", "));
    }
    match report.hours_since_last_ingest() {
        Some(h) if report.stale => println!(
            "STALE: no new rows for {h:.1} h (threshold {} h)",
            report.stale_hours
        ),
        Some(h) => println!("fresh: last rows {h:.1} h ago"),
        None => println!("STALE: no rows in the checked tables"),
    }
    if !report.missing.is_empty() {
        println!("MISSING: {}", report.missing.join(", "));
    }
    if !report.has_problems() {
        println!("OK: every expected table exists and data is fresh");
    }
}

fn utc(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let (day, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    format!(
        "{} {:02}:{:02}:{:02}",
        shared::route::IsoDate(day as i32),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
