//! The local Storage Write sink as a process, for `make bench` (scripts/bench.sh):
//!
//!     write-sink [--bind 127.0.0.1:0] [--stats FILE]
//!
//! Prints `listening on http://HOST:PORT` on stdout once it accepts calls, then serves until
//! SIGTERM or SIGINT, when it writes what it saw (counters, rows committed per table) as JSON
//! to `--stats` (or stdout) and exits.

use cf2bq_tests::write_sink::WriteSink;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bind = "127.0.0.1:0".to_string();
    let mut stats: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => bind = args.next().ok_or("--bind needs an address")?,
            "--stats" => stats = Some(args.next().ok_or("--stats needs a file")?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let sink = WriteSink::start(&bind, false).await?;
    println!("listening on {}", sink.url);
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let json = serde_json::to_string_pretty(&sink.seen())?;
    match stats {
        Some(path) => std::fs::write(path, json + "\n")?,
        None => println!("{json}"),
    }
    Ok(())
}
