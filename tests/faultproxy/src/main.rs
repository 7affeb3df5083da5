//! faultproxy: sits between the product binaries and the local emulators and injects the
//! faults real services have (resets, lost responses, throttling, cut bodies, stalls), so the
//! exactly-once fault campaign can check the pipeline survives them. See `config::USAGE`.

mod config;
mod faults;
mod http;
mod http_proxy;
mod tcp;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use config::{Config, Mode, USAGE};
use faults::{Recorder, RouteFaults};

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = match Config::parse(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(Some(e)) => {
            eprintln!("faultproxy: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultproxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> std::io::Result<()> {
    let recorder = Arc::new(Recorder::open(cfg.log.as_deref())?);
    let mut terminate = signal(SignalKind::terminate())?;

    // Bind every listener before announcing any port: a driver that reads `ready` can use
    // them all.
    let mut listeners = Vec::new();
    for route in &cfg.routes {
        let listener = TcpListener::bind(("127.0.0.1", route.listen_port)).await?;
        listeners.push((route, listener));
    }
    let mut out = std::io::stdout().lock();
    for (route, listener) in &listeners {
        writeln!(out, "{} {}", route.name, listener.local_addr()?.port())?;
    }
    writeln!(out, "ready")?;
    out.flush()?;
    drop(out);

    for (route, listener) in listeners {
        let faults = Arc::new(RouteFaults::new(
            &route.name,
            cfg.faults_for(&route.name),
            cfg.seed,
            Duration::from_millis(cfg.stall_ms),
            recorder.clone(),
        ));
        tokio::spawn(accept(
            listener,
            route.mode,
            route.upstream.as_str().into(),
            faults,
        ));
    }

    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("{}", recorder.summary());
    Ok(())
}

async fn accept(listener: TcpListener, mode: Mode, upstream: Arc<str>, route: Arc<RouteFaults>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let (upstream, route) = (upstream.clone(), route.clone());
                match mode {
                    Mode::Http => tokio::spawn(http_proxy::serve(client, upstream, route)),
                    Mode::Tcp => tokio::spawn(tcp::serve(client, upstream, route)),
                };
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                eprintln!("faultproxy: {}: accept: {e}", route.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
