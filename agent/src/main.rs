//! `berth`: configuration (one line, exit 64 on error) → telemetry → build → spawn → signal →
//! drain.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use berth::app::App;
use berth::config::{Config, Invocation, ParseError, ProcessEnv};
use berth::telemetry::chain;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// How long in-flight writes (and `--deregister-on-exit`) may take after a signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let invocation = match berth::config::parse(std::env::args_os(), &ProcessEnv) {
        Ok(i) => i,
        Err(ParseError::Args(e)) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(ParseError::Args(e))
            if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(ParseError::Args(e)) => {
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("invalid arguments");
            eprintln!("berth: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(ParseError::Config(e)) => {
            eprintln!("berth: {}", chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match invocation {
        Invocation::Run(config) => *config,
        Invocation::Lookup {
            service,
            passing,
            json,
            config,
        } => return lookup(&config, &service, passing, json),
    };
    berth::telemetry::init(config.agent.log_format);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // Blocking work (e.g. a DNS lookup of the Consul host) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %format!("{e:#}"), "berth failed");
            ExitCode::FAILURE
        }
    }
}

/// `berth lookup`: one registry read, printed; exit 1 with one line when it fails.
fn lookup(config: &Config, service: &str, passing: bool, json: bool) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
        .and_then(|rt| {
            let rows = rt.block_on(berth::lookup::lookup(config, service, passing));
            rows.map_err(|e| anyhow::anyhow!(chain(&e)))
        });
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("berth: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if rows.is_empty() && !json {
        eprintln!("berth: no instances of {service}");
    }
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let out = berth::lookup::render(&rows, json);
    if stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn run(config: Config) -> anyhow::Result<()> {
    // rs-consul and reqwest share rustls; both need one process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    info!(version = env!("CARGO_PKG_VERSION"), "berth starting");

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let signals = tokio::spawn(shutdown_signal(cancel.clone()));

    let app = match App::build(config, &cancel, &tracker).await {
        Err(berth::app::BuildError::Cancelled) => return Ok(()),
        built => built
            .map_err(|e| anyhow::anyhow!(chain(&e)))
            .context("cannot start")?,
    };
    let running = app.spawn(cancel.clone());

    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = running.ended() => warn!("all tasks ended unexpectedly"),
    }
    signals.abort();
    info!("shutting down; finishing in-flight writes");
    if !running.stop(DRAIN_TIMEOUT).await {
        warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out");
    }
    info!("berth stopped");
    Ok(())
}

/// Cancels on SIGTERM or SIGINT.
async fn shutdown_signal(cancel: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
    cancel.cancel();
}
