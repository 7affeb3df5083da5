use shared::source::LogObject;

use super::CliResult;

#[derive(clap::Args)]
pub struct Args {
    /// `s3://bucket/key` or a path to a local `.gz` file; several allowed.
    #[arg(required = true)]
    objects: Vec<String>,
    /// Print each report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Re-ingest objects the ledger marks done, replacing their earlier rows.
    #[arg(long)]
    force: bool,
}

pub async fn run(args: Args) -> CliResult {
    let ingestor = super::ingestor().await?;
    let mut failures = 0;
    for target in &args.objects {
        match ingestor
            .ingest_with(&LogObject::parse(target), args.force)
            .await
        {
            Ok(report) if args.json => println!("{}", serde_json::to_string(&report)?),
            Ok(report) => {
                println!("{}: {:?}", report.object, report.outcome);
                for (table, rows) in &report.tables {
                    println!("  {table:<40} {rows:>10} rows");
                }
                println!(
                    "  {} data lines = {} rows loaded + {} rejected",
                    report.data_lines, report.rows, report.rejected
                );
                for part in &report.quarantine {
                    println!("  rejected lines in {part}");
                }
            }
            Err(e) => {
                eprintln!("FAILED {target}: {e}");
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 { 0 } else { 1 })
}
