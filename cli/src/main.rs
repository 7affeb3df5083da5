//! `cf2bq`: the operator's tool. Every command calls the same library code as the Lambdas.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cf2bq", version, about = "CloudFront access logs → BigQuery")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest log objects (s3://bucket/key or local .gz files) exactly as the Lambda does.
    Ingest(commands::ingest::Args),
    /// Generate realistic synthetic CloudFront log objects into a folder or an S3 bucket.
    Gen(commands::gen::Args),
    /// Row counts per table, optionally checked against a `gen` manifest.
    Counts(commands::counts::Args),
    /// Put objects back on the ingest queue (prefix, date range) or redrive the DLQ.
    Replay(commands::replay::Args),
    /// Create tables ahead and check that every expected table exists and data is fresh.
    Tables(commands::tables::Args),
    /// Measure the ingest transform (see `make bench`).
    Bench(commands::bench::Args),
}

#[tokio::main]
async fn main() {
    shared::telemetry::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(args) => commands::ingest::run(args).await,
        Command::Gen(args) => commands::gen::run(args).await,
        Command::Counts(args) => commands::counts::run(args).await,
        Command::Bench(args) => commands::bench::run(args).await,
        Command::Replay(args) => commands::replay::run(args).await,
        Command::Tables(args) => commands::tables::run(args).await,
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("cf2bq: {e}");
            std::process::exit(2);
        }
    }
}
