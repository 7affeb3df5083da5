//! `cf2bq`: the operator's tool. Every command calls the same library code as the Lambdas.
//!
//! Exit status: 0 done, 1 a runtime failure (or a check that found a problem), 2 a usage error
//! (clap's own, and the few rules clap cannot express, checked before anything runs).

mod commands;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cf2bq", version, about = "CloudFront access logs → BigQuery")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest log objects (s3://bucket/key, every .gz under s3://bucket/prefix/, or local .gz
    /// files) exactly as the Lambda does.
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

impl Command {
    /// A usage rule clap cannot express, broken: what to tell the operator.
    fn usage_problem(&self) -> Option<String> {
        match self {
            Command::Replay(args) => args.usage_problem(),
            _ => None,
        }
    }

    async fn run(self) -> commands::CliResult {
        match self {
            Command::Ingest(args) => commands::ingest::run(args).await,
            Command::Gen(args) => commands::gen::run(args).await,
            Command::Counts(args) => commands::counts::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Replay(args) => commands::replay::run(args).await,
            Command::Tables(args) => commands::tables::run(args).await,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // As the ingest Lambda does, so `cf2bq ingest` and `cf2bq bench` run as it runs.
    shared::allocator::keep_freed_memory();
    // A usage error prints clap's message and exits 2 here, before anything is set up.
    let cli = Cli::parse();
    if let Some(problem) = cli.command.usage_problem() {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, problem)
            .exit();
    }
    shared::telemetry::init_with_writer(progress::LogWriter);
    // The one place a runtime failure ends: its whole chain on stderr, exit 1.
    match cli.command.run().await {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            progress::suspend(|| eprintln!("cf2bq: {}", commands::error_chain(e.as_ref())));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every subcommand and argument an operator can type says what it is for.
    #[test]
    fn every_argument_and_subcommand_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                let builtin = matches!(id, "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in command.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "cf2bq", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn bad_dates_are_usage_errors() {
        let error =
            Cli::try_parse_from(["cf2bq", "replay", "--bucket", "b", "--from", "2026-13-01"])
                .err()
                .expect("a month 13 is refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(error.exit_code(), 2);
        let text = error.to_string();
        assert!(
            text.contains("2026-13-01") && text.contains("YYYY-MM-DD"),
            "{text}"
        );
        let error = Cli::try_parse_from(["cf2bq", "gen", "--out", "x", "--start-date", "today"])
            .err()
            .expect("a word is refused");
        assert_eq!(error.exit_code(), 2);
    }
}
