use shared::replay::{self, Selection};
use shared::source::LogObject;

use super::{error_chain, CliResult};
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// `s3://bucket/key`, `s3://bucket/prefix/` (every .gz under it) or a path to a local
    /// `.gz` file; several allowed.
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
    let targets: Vec<LogObject> = args.objects.iter().map(|a| LogObject::parse(a)).collect();
    // A mistyped path fails at once and by name, before any connection is set up.
    for target in &targets {
        if let LogObject::File(path) = target {
            check_readable(path)?;
        }
    }
    let ingestor = super::ingestor().await?;
    let objects = expand_prefixes(ingestor.s3(), targets).await?;

    let bar = progress::counter(objects.len() as u64, "objects ingested");
    let mut failures = 0;
    for object in &objects {
        let name = display(object);
        bar.set_message(name.clone());
        let result = ingestor.ingest_with(object, args.force).await;
        progress::suspend(|| match result {
            Ok(report) if args.json => match serde_json::to_string(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("FAILED {name}: report not serialisable: {e}"),
            },
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
            // Reported here and the rest still ingested; the command fails at the end.
            Err(e) => {
                eprintln!("FAILED {name}: {}", error_chain(&e));
                failures += 1;
            }
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failures > 0 {
        return Err(format!("{failures} of {} object(s) failed", objects.len()).into());
    }
    Ok(0)
}

fn check_readable(path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("{}: not a file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `s3://bucket/prefix/` (a key ending in `/`) stands for every `.gz` object under it.
async fn expand_prefixes(
    s3: &aws_sdk_s3::Client,
    targets: Vec<LogObject>,
) -> Result<Vec<LogObject>, Box<dyn std::error::Error>> {
    let mut objects = Vec::with_capacity(targets.len());
    for target in targets {
        match target {
            LogObject::S3(o) if o.key.is_empty() || o.key.ends_with('/') => {
                let selection = Selection {
                    bucket: o.bucket,
                    prefix: o.key,
                    ..Default::default()
                };
                let listing = progress::tally("keys listed");
                let (_, found) = replay::list(s3, &selection, |n| listing.set_position(n)).await?;
                listing.finish_and_clear();
                if found.is_empty() {
                    return Err(format!(
                        "no .gz objects under s3://{}/{}",
                        selection.bucket, selection.prefix
                    )
                    .into());
                }
                objects.extend(found.into_iter().map(LogObject::S3));
            }
            other => objects.push(other),
        }
    }
    Ok(objects)
}

/// The object as the operator typed it (`uri()` would resolve local paths).
fn display(object: &LogObject) -> String {
    match object {
        LogObject::S3(o) => o.to_string(),
        LogObject::File(path) => path.display().to_string(),
    }
}
