use std::collections::BTreeMap;
use std::path::PathBuf;

use shared::bigquery::BigQuery;
use shared::generate::Manifest;
use shared::route::Layout;
use shared::Config;

use super::CliResult;

#[derive(clap::Args)]
pub struct Args {
    /// A manifest written by `cf2bq gen --manifest`: compare each date with it.
    #[arg(long)]
    expect: Option<PathBuf>,
}

/// Rows per log date, read from BigQuery, compared with what was generated.
pub async fn run(args: Args) -> CliResult {
    let config = Config::from_env()?;
    let aws = shared::aws::load().await;
    let bq = BigQuery::connect(&config.bigquery, &aws).await?;
    let actual = rows_per_date(&bq, &config.layout).await?;
    let expected: BTreeMap<String, u64> = match &args.expect {
        Some(path) => {
            let text =
                std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            serde_json::from_slice::<Manifest>(&text)?.rows_per_date
        }
        None => BTreeMap::new(),
    };
    let dates: std::collections::BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    println!(
        "{:<12} {:<32} {:>10} {:>10}",
        "log date", "table", "rows", "generated"
    );
    let mut mismatches = 0;
    for date in &dates {
        let days = shared::cloudfront::parse::parse_date(date).unwrap_or(0);
        let got = actual.get(*date).copied().unwrap_or(0);
        let want = expected.get(*date);
        let mark = match want {
            Some(w) if *w == got => "",
            Some(_) => {
                mismatches += 1;
                "  <-- MISMATCH"
            }
            None if args.expect.is_some() => {
                mismatches += 1;
                "  <-- unexpected"
            }
            None => "",
        };
        let want = want.map_or("-".to_string(), |w| w.to_string());
        println!(
            "{date:<12} {:<32} {got:>10} {want:>10}{mark}",
            config.layout.table_for(days)
        );
    }
    let total: u64 = actual.values().sum();
    if args.expect.is_some() {
        let want: u64 = expected.values().sum();
        if mismatches == 0 {
            println!(
                "OK: all {want} generated rows accounted for, {total} rows in {} dates",
                dates.len()
            );
        } else {
            println!(
                "MISMATCH: {total} rows loaded, {want} generated, {mismatches} date(s) differ"
            );
            return Ok(1);
        }
    }
    Ok(0)
}

/// `YYYY-MM-DD` → row count, over every table of the layout.
pub async fn rows_per_date(
    bq: &BigQuery,
    layout: &Layout,
) -> Result<BTreeMap<String, u64>, Box<dyn std::error::Error>> {
    let tables = match layout {
        Layout::Sharded { prefix } => bq.list_tables(prefix).await?,
        Layout::Partitioned { table } => vec![table.clone()],
    };
    let mut counts = BTreeMap::new();
    for table in tables {
        let sql = format!(
            "SELECT CAST(log_date AS STRING), COUNT(*) FROM `{}.{}.{}` GROUP BY 1",
            bq.project, bq.dataset, table
        );
        for row in bq.query(&sql).await? {
            if let [Some(date), Some(n)] = &row[..] {
                *counts.entry(date.clone()).or_default() += n.parse::<u64>()?;
            }
        }
    }
    Ok(counts)
}
