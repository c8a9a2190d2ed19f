//! `berth-bench`: measures the berth agent (the release binary) against the real Docker
//! engine, a real Consul dev agent and a real etcd, prints a markdown table of every figure
//! beside its target, and writes the figures and raw data as JSON.
//!
//! ```text
//! cargo run --release -p berth-bench -- all
//! cargo run --release -p berth-bench -- latency drain --backend etcd
//! cargo run --release -p berth-bench -- all --quick        # small counts: does it all work?
//! ```
//!
//! Scenarios (`docs/performance.md` says what each measures and why):
//! `latency` (event → registered and die → gone over sequential containers, with the floor
//! measured in the same run), `burst`, `cold`, `probes`, `footprint`, `writes`, `drain`.
//! Every scenario starts its own registry on free ports and its own agent, and removes the
//! containers it made.
#![allow(clippy::print_stdout)]

mod agent;
mod docker;
mod registry;
mod report;
mod scenarios;
mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use berth_e2e::backend::Kind;
use clap::{Parser, ValueEnum};

use crate::agent::AgentProc;
use crate::docker::{Events, Fleet};
use crate::registry::Registry;
use crate::report::Report;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Latency,
    Burst,
    Cold,
    Probes,
    Footprint,
    Writes,
    Drain,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backends {
    Consul,
    Etcd,
    Both,
}

/// berth's benchmark harness (docs/performance.md).
#[derive(Debug, Parser)]
#[command(name = "berth-bench")]
struct Args {
    /// What to measure.
    #[arg(required = true, value_enum)]
    scenarios: Vec<Scenario>,
    /// Which registries to measure against (probes and footprint use etcd unless this is
    /// consul).
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    backend: Backends,
    /// Small counts and short windows: shows every scenario works; the figures mean little.
    #[arg(long)]
    quick: bool,
    /// The berth binary to measure [default: target/release/berth, built first].
    #[arg(long, value_name = "FILE")]
    berth: Option<PathBuf>,
    /// Where to write the JSON [default: target/bench/berth-bench-<unix time>.json].
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// How much each scenario does.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Sizes {
    /// Sequential containers in `latency`, and floor samples.
    pub sequential: usize,
    pub floor: usize,
    pub burst: usize,
    pub cold: usize,
    pub probe_targets: usize,
    pub probe_window: Duration,
    pub footprint_containers: usize,
    pub resyncs: u32,
    pub drains: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            sequential: 200,
            floor: 50,
            burst: 200,
            cold: 300,
            probe_targets: 1000,
            probe_window: Duration::from_secs(120),
            footprint_containers: 300,
            resyncs: 10,
            drains: 30,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            sequential: 5,
            floor: 5,
            burst: 10,
            cold: 10,
            probe_targets: 50,
            probe_window: Duration::from_secs(12),
            footprint_containers: 10,
            resyncs: 3,
            drains: 3,
        }
    }
}

/// What every scenario gets.
#[derive(Debug)]
pub struct Ctx {
    pub berth: PathBuf,
    pub fleet: Fleet,
    pub events: Events,
    pub sizes: Sizes,
    /// Agent logs go here, one file per agent.
    pub logs: PathBuf,
}

impl Ctx {
    /// A container name unique to this run.
    pub fn name(&self, what: &str, i: usize) -> String {
        format!("bb-{}-{what}-{i}", self.fleet.run)
    }

    /// The instance id berth gives container `name`'s port `port`.
    pub fn instance_id(&self, name: &str, port: u16) -> String {
        format!("{}:{name}:{port}", agent::NODE)
    }

    /// Starts an agent on `registry` with `extra` flags; returns it and when it was started.
    pub fn agent(&self, registry: &Registry, extra: &[&str]) -> Result<(AgentProc, SystemTime)> {
        self.agent_with(&registry.agent_args(), extra)
    }

    /// Starts an agent with the registry flags `registry_args`.
    pub fn agent_with(
        &self,
        registry_args: &[String],
        extra: &[&str],
    ) -> Result<(AgentProc, SystemTime)> {
        let n = std::fs::read_dir(&self.logs)
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.logs.join(format!("berth-{n:03}.log"));
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        AgentProc::spawn(&self.berth, registry_args, &extra, log)
    }

    /// Starts an agent and waits until it is ready.
    pub async fn ready_agent(&self, registry: &Registry, extra: &[&str]) -> Result<AgentProc> {
        let (mut agent, _) = self.agent(registry, extra)?;
        agent.ready(Duration::from_secs(60)).await?;
        Ok(agent)
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    berth_e2e::crypto();
    let root = berth_e2e::agent::workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => root.join(t),
        None => root.join("target"),
    };
    let berth = match &args.berth {
        Some(b) => b.clone(),
        None => build_release(&root, &target)?,
    };
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out_dir = target.join("bench");
    let logs = out_dir.join(format!("logs-{stamp}"));
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| out_dir.join(format!("berth-bench-{stamp}.json")));
    let image = berth_e2e::docker::image().to_owned();
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let mut scenarios = args.scenarios.clone();
    if scenarios.contains(&Scenario::All) {
        scenarios = vec![
            Scenario::Latency,
            Scenario::Burst,
            Scenario::Cold,
            Scenario::Drain,
            Scenario::Writes,
            Scenario::Probes,
            Scenario::Footprint,
        ];
    }
    let kinds: Vec<Kind> = match args.backend {
        Backends::Consul => vec![Kind::Consul],
        Backends::Etcd => vec![Kind::Etcd],
        Backends::Both => vec![Kind::Consul, Kind::Etcd],
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults()?;
        let run = berth_e2e::docker::random_hex(stamp);
        let fleet = Fleet::new(docker, run.clone(), image);
        let stale = fleet.remove_all(true).await?;
        if stale > 0 {
            eprintln!("removed {stale} container(s) left by an earlier bench run");
        }
        let ctx = Ctx {
            berth: berth.clone(),
            events: Events::start(&fleet),
            fleet,
            sizes,
            logs: logs.clone(),
        };
        let mut report = Report::default();
        for scenario in &scenarios {
            let on: Vec<Kind> = match scenario {
                // Berth's own cost, not the registry's: etcd keeps liveness in one lease, so
                // the figure is the probes' (Consul's per-instance heartbeats and its
                // agent's per-service cost are measured by `writes` and `cold`).
                Scenario::Probes | Scenario::Footprint if args.backend == Backends::Consul => {
                    vec![Kind::Consul]
                }
                Scenario::Probes | Scenario::Footprint => vec![Kind::Etcd],
                _ => kinds.clone(),
            };
            for kind in on {
                eprintln!("== {scenario:?} on {kind}");
                let started = tokio::time::Instant::now();
                let result = match scenario {
                    Scenario::Latency => scenarios::latency::run(&ctx, kind).await,
                    Scenario::Burst => scenarios::burst::run(&ctx, kind).await,
                    Scenario::Cold => scenarios::cold::run(&ctx, kind).await,
                    Scenario::Probes => scenarios::probes::run(&ctx, kind).await,
                    Scenario::Footprint => scenarios::probes::footprint(&ctx, kind).await,
                    Scenario::Writes => scenarios::writes::run(&ctx, kind).await,
                    Scenario::Drain => scenarios::drain::run(&ctx, kind).await,
                    Scenario::All => unreachable!("expanded above"),
                };
                // Whatever happened, the next scenario starts with none of these containers.
                if let Err(e) = ctx.fleet.remove_all(false).await {
                    eprintln!("cleaning up containers: {e:#}");
                }
                match result {
                    Ok((rows, data)) => {
                        eprintln!("   done in {:.0?}", started.elapsed());
                        report.add(rows, data);
                    }
                    Err(e) => {
                        eprintln!("   FAILED: {e:#}");
                        let mut rows =
                            report::Rows::new(scenario_name(*scenario), kind.to_string());
                        rows.check("scenario ran", format!("failed: {e:#}"), "ran", false);
                        report.add(rows, serde_json::json!({"error": format!("{e:#}")}));
                    }
                }
            }
        }
        anyhow::Ok(report)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));

    let table = report.markdown();
    println!("{table}");
    let json = report.json(
        report::machine(&berth),
        serde_json::json!({"scenarios": format!("{scenarios:?}"), "quick": args.quick, "sizes": sizes}),
    );
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    eprintln!(
        "results: {}\nagent logs: {}",
        json_path.display(),
        logs.display()
    );
    if report.rows.iter().any(|r| r.measure == "scenario ran") {
        bail!("a scenario failed (see above)");
    }
    Ok(())
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Latency => "latency",
        Scenario::Burst => "burst",
        Scenario::Cold => "cold",
        Scenario::Probes => "probes",
        Scenario::Footprint => "footprint",
        Scenario::Writes => "writes",
        Scenario::Drain => "drain",
        Scenario::All => "all",
    }
}

/// `cargo build --release -p berth`; the binary it made.
fn build_release(root: &Path, target: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the release berth (cargo build --release -p berth --bin berth)");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--release", "-p", "berth", "--bin", "berth"])
        .current_dir(root);
    berth_e2e::docker::as_from_a_shell(&mut cmd);
    let status = cmd.status().with_context(|| format!("run {cargo}"))?;
    if !status.success() {
        bail!("cargo build --release -p berth failed ({status})");
    }
    let bin = target.join("release").join("berth");
    if !bin.exists() {
        bail!("built berth but {} is missing", bin.display());
    }
    Ok(bin)
}
