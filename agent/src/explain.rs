//! `berth explain <container>`: what `berth run` would register for one container, and why.
//!
//! Read-only, and it never contacts the registry: it inspects the container and runs the very
//! code `berth run` runs on it ([`crate::app::settings`] → [`labels::plan_container`]), so
//! `--internal`, `--network`, `--explicit` and `--host-ip` change the answer exactly as they
//! change what `run` registers. Probe verdicts are not known here: the health shown is the
//! one an instance starts with (Docker's, or the check's initial status).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use berth_registry::{Health, Instance};
use serde::Serialize;

use crate::app;
use crate::config::Config;
use crate::docker::view::ContainerView;
use crate::docker::{Docker, DockerError};
use crate::labels::{self, Level, Note, Skip};
use crate::probe::exec::describe;

/// Why `explain` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("docker info has no node name; set --node-name")]
    NoNodeName,
}

/// The explanation of one container.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub container: ContainerInfo,
    pub node: String,
    pub host_ip: String,
    /// Where the host IP came from (`--host-ip`, or how it was detected).
    pub host_ip_from: String,
    /// `published` (host IP and published ports), `internal` (container IP on one network) or
    /// `host network`.
    pub mode: &'static str,
    pub registers: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skip>,
    pub instances: Vec<InstanceExplained>,
    pub autoheal: bool,
    /// How the instances are drained when Docker stops the container (`null`: they are not).
    pub drain: Option<DrainExplained>,
    pub notes: Vec<Note>,
}

/// How a container is drained on stop.
#[derive(Clone, Debug, Serialize)]
pub struct DrainExplained {
    /// The stop signal whose `kill` event starts the drain, e.g. `SIGTERM`.
    pub signal: String,
    /// The container's stop timeout: how long the drain waits for the container to exit.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
}

/// The container, as Docker reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub running: bool,
    pub paused: bool,
    pub network_mode: String,
}

/// One instance `run` would register.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceExplained {
    pub id: String,
    pub name: String,
    pub address: String,
    /// The rule that chose the address.
    pub address_rule: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// The health it is first registered with.
    pub health: Health,
    pub checks: Vec<CheckExplained>,
    /// Withdrawn after being critical this long.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub deregister_after: Option<Duration>,
}

/// One health check berth would run.
#[derive(Clone, Debug, Serialize)]
pub struct CheckExplained {
    pub name: String,
    /// `http`, `tcp` or `grpc`.
    pub kind: &'static str,
    /// What it probes, e.g. `HTTP GET http://172.17.0.2:80/health`.
    pub target: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub initial: String,
}

mod opt_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// Inspects `container` (id, short id or name) and explains it under `config`.
pub async fn explain(config: &Config, container: &str) -> Result<Explanation, ExplainError> {
    let a = &config.agent;
    let mut docker = Docker::connect(a.docker_host.as_deref(), a.docker_timeout)?;
    docker.negotiate().await?;
    let node = match &a.node_name {
        Some(n) => n.clone(),
        None => Some(docker.node_name().await?)
            .filter(|n| !n.is_empty())
            .ok_or(ExplainError::NoNodeName)?,
    };
    let view = docker
        .inspect(container)
        .await?
        .ok_or_else(|| ExplainError::NotFound(container.to_owned()))?;
    Ok(of_view(&view, &app::settings(config, node)))
}

/// The explanation of `view` under `settings` (pure).
pub fn of_view(view: &ContainerView, settings: &labels::Settings) -> Explanation {
    let outcome = labels::plan_container(view, settings);
    let instances = outcome
        .instances
        .iter()
        .map(|i| instance(i, &outcome))
        .collect();
    let mode = if view.host_network() {
        "host network"
    } else if settings.internal {
        "internal"
    } else {
        "published"
    };
    Explanation {
        container: ContainerInfo {
            id: view.id.clone(),
            name: view.name.clone(),
            image: view.image.clone(),
            running: view.running,
            paused: view.paused,
            network_mode: view.network_mode.clone(),
        },
        node: settings.node.clone(),
        host_ip: settings.host_ip.to_string(),
        host_ip_from: settings.host_ip_from.clone(),
        mode,
        registers: !outcome.instances.is_empty(),
        skipped: outcome.skipped,
        instances,
        autoheal: outcome.autoheal,
        drain: outcome.drain.map(|d| DrainExplained {
            signal: labels::drain::signal_name(d.signal),
            stop_timeout: d.timeout,
        }),
        notes: outcome.notes.clone(),
    }
}

fn instance(i: &Instance, outcome: &labels::Outcome) -> InstanceExplained {
    let probes = outcome.probes.get(&i.id);
    let checks = probes
        .map(|p| {
            p.checks
                .iter()
                .map(|c| CheckExplained {
                    name: c.name.clone(),
                    kind: c.kind.name(),
                    target: describe(&c.kind),
                    interval: c.interval,
                    timeout: c.timeout,
                    rise: c.rise,
                    fall: c.fall,
                    initial: c.initial.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    // A probed instance starts at its checks' initial status, as `run` registers it.
    let health = match probes.and_then(|p| p.checks.iter().map(|c| c.initial).max()) {
        Some(initial) => Health {
            status: initial,
            output: String::new(),
        },
        None => i.health.clone(),
    };
    InstanceExplained {
        id: i.id.clone(),
        name: i.name.clone(),
        address: i.address.clone(),
        address_rule: outcome.addresses.get(&i.id).cloned().unwrap_or_default(),
        port: i.port,
        tags: i.tags.clone(),
        meta: i.meta.clone(),
        health,
        checks,
        deregister_after: probes.and_then(|p| p.deregister_after),
    }
}

/// The text form.
pub fn render(e: &Explanation) -> String {
    let mut t = String::new();
    let c = &e.container;
    let state = match (c.running, c.paused) {
        (true, true) => "paused",
        (true, false) => "running",
        _ => "not running",
    };
    let _ = writeln!(
        t,
        "container {} ({}), image {}, {state}, network {}",
        c.name,
        crate::docker::short_id(&c.id),
        c.image,
        c.network_mode
    );
    let _ = writeln!(
        t,
        "node {}; mode {}; host IP {} ({})",
        e.node, e.mode, e.host_ip, e.host_ip_from
    );
    if e.registers {
        let n = e.instances.len();
        let _ = writeln!(
            t,
            "\nregisters {n} instance{}:",
            if n == 1 { "" } else { "s" }
        );
    } else {
        let why = e.skipped.map_or("nothing to register", Skip::code);
        let _ = writeln!(t, "\nregisters nothing ({why})");
    }
    for i in &e.instances {
        let _ = writeln!(t, "\n  {}", i.id);
        let _ = writeln!(t, "    name     {}", i.name);
        let _ = writeln!(t, "    address  {}  ({})", i.address, i.address_rule);
        let _ = writeln!(t, "    port     {}", i.port);
        if !i.tags.is_empty() {
            let _ = writeln!(t, "    tags     {}", i.tags.join(", "));
        }
        for (k, v) in &i.meta {
            let _ = writeln!(t, "    meta     {k}={v}");
        }
        let _ = writeln!(t, "    health   {} at first", i.health.status);
        if i.checks.is_empty() {
            let _ = writeln!(t, "    checks   none (health follows the container)");
        }
        for ch in &i.checks {
            let _ = writeln!(
                t,
                "    check    {}: {} every {}, timeout {}, rise {}, fall {}, initially {}",
                ch.name,
                ch.target,
                humantime::format_duration(ch.interval),
                humantime::format_duration(ch.timeout),
                ch.rise,
                ch.fall,
                ch.initial
            );
        }
        if let Some(d) = i.deregister_after {
            let _ = writeln!(
                t,
                "    withdrawn after {} critical",
                humantime::format_duration(d)
            );
        }
    }
    let _ = writeln!(t, "\nautoheal {}", if e.autoheal { "on" } else { "off" });
    match &e.drain {
        Some(d) => {
            let _ = writeln!(
                t,
                "drain on stop: on {} the instances turn critical until the container exits \
                 (at most {})",
                d.signal,
                humantime::format_duration(d.stop_timeout)
            );
        }
        None if e.registers => {
            let _ = writeln!(t, "drain on stop: off");
        }
        None => {}
    }
    if !e.notes.is_empty() {
        let _ = writeln!(t, "\nnotes:");
        for n in &e.notes {
            let level = match n.level {
                Level::Warn => "warning",
                Level::Info => "info",
            };
            let _ = writeln!(t, "  {level:7} {}", n.message);
        }
    }
    t
}
