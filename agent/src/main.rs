//! `berth`: configuration (one line, exit 64 on error) → telemetry → admin server (a port
//! in use is exit 64 too) → build → spawn → signal → drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth::admin::{self, Admin};
use berth::app::App;
use berth::config::{Config, Invocation, ParseError, ProcessEnv};
use berth::observe::Observer;
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
        Invocation::Explain {
            container,
            json,
            config,
        } => return explain(&config, &container, json),
        Invocation::Health { ready, config } => return health(&config, ready),
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
        Err(Failed::Config(line)) => {
            error!(error = %line, "berth cannot start");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failed::Other(e)) => {
            error!(error = %format!("{e:#}"), "berth failed");
            ExitCode::FAILURE
        }
    }
}

/// How `run` failed: a configuration problem (exit 64), or anything else (exit 1).
enum Failed {
    Config(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failed {
    fn from(e: anyhow::Error) -> Failed {
        Failed::Other(e)
    }
}

/// Prints the output of a one-shot command to stdout; false when stdout is gone.
fn print(out: &str) -> bool {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_ok()
}

/// Runs one command's future on a current-thread runtime; its error becomes one line.
fn one_shot<T, E: std::error::Error + 'static>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(f).map_err(|e| anyhow::anyhow!(chain(&e)))
}

/// `berth explain`: one inspect, printed; exit 1 with one line when it fails.
fn explain(config: &Config, container: &str, json: bool) -> ExitCode {
    let result = one_shot(berth::explain::explain(config, container));
    let explanation = match result {
        Ok(e) => e,
        Err(e) => {
            eprintln!("berth: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let out = if json {
        match serde_json::to_string_pretty(&explanation) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("berth: cannot encode the explanation: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        berth::explain::render(&explanation)
    };
    if print(&out) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `berth health`: one request to the admin server; exit 0 on 200, else 1 with the reason.
fn health(config: &Config, ready: bool) -> ExitCode {
    let addr = match config.admin_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("berth: {}", chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = one_shot(admin::health::check(addr, ready));
    match result {
        Ok(body) => {
            if print(&format!("{body}\n")) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `berth lookup`: one registry read, printed; exit 1 with one line when it fails.
fn lookup(config: &Config, service: &str, passing: bool, json: bool) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = one_shot(berth::lookup::lookup(config, service, passing));
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
    if print(&berth::lookup::render(&rows, json)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(config: Config) -> Result<(), Failed> {
    // rs-consul and reqwest share rustls; both need one process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    info!(version = env!("CARGO_PKG_VERSION"), "berth starting");

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let observe = Arc::new(Observer::new(config.agent.ttl));
    let admin = Admin::new(observe.clone());
    // Bound before anything else, so a port in use fails the start at once; served while
    // the agent is built, so liveness answers while berth waits for Docker.
    let addr = config.admin_addr().map_err(|e| Failed::Config(chain(&e)))?;
    // Not on the tracker: `running.ended()` must still see the agent's own tasks end.
    let mut server = None;
    if let Some(addr) = addr {
        let listener = admin::bind(addr)
            .await
            .map_err(|e| Failed::Config(chain(&e)))?;
        server = Some(tokio::spawn(admin::serve(
            listener,
            admin.clone(),
            cancel.clone(),
        )));
    }
    let signals = tokio::spawn(shutdown_signal(cancel.clone()));

    let app = match App::build(config, observe, &cancel, &tracker).await {
        Err(berth::app::BuildError::Cancelled) => return Ok(()),
        built => built
            .map_err(|e| anyhow::anyhow!(chain(&e)))
            .context("cannot start")?,
    };
    admin.attach(app.identity(), app.context().store.clone());
    let running = app.spawn(cancel.clone());

    let unexpected = tokio::select! {
        _ = cancel.cancelled() => false,
        _ = running.ended() => {
            admin.tasks_ended();
            true
        }
    };
    signals.abort();
    info!("shutting down; finishing in-flight writes");
    if !running.stop(DRAIN_TIMEOUT).await {
        warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out");
    }
    if let Some(server) = server {
        // Open connections get a moment to finish; the server stops taking new ones at once.
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    }
    if unexpected {
        return Err(anyhow::anyhow!("all tasks ended unexpectedly").into());
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
