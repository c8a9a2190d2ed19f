//! The status document: what `/v1/status` serves as JSON and the status page renders. Built
//! from a [`Snapshot`] of the store (copied under its lock, then the lock is released) and the
//! readiness state; building it does no I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_registry::{Health, Instance, Status as HealthStatus};
use serde::Serialize;
use tokio::time::Instant;

use crate::labels::{Note, Skip};
use crate::observe::metrics::State;
use crate::reconcile::store::{Parked, Snapshot};

/// The whole status document.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// `None` until the node name is known (it may wait for Docker).
    pub node: Option<String>,
    pub registry: Option<String>,
    pub docker: Option<String>,
    pub ready: bool,
    /// Why the agent is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every container berth looked at that still exists, by name.
    pub containers: Vec<ContainerStatus>,
}

/// One container berth looked at.
#[derive(Clone, Debug, Serialize)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub image: String,
    /// Why it registers nothing (`not_running`, `ignored`, …), when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skip>,
    pub instances: Vec<InstanceStatus>,
    /// Docker sent it its stop signal: its instances are critical until it exits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining: Option<DrainingStatus>,
    /// Every decision about it: skipped ports, label problems (with the label's key).
    pub notes: Vec<Note>,
}

/// A drain in progress, as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DrainingStatus {
    /// The stop signal it was sent, e.g. `SIGTERM`.
    pub signal: String,
    /// Seconds until the drain is undone if the container has not exited by then.
    pub lapses_in_s: u64,
}

/// One instance a container should have.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    /// Its current health: the latest probe verdict and output (or Docker's health).
    pub health: Health,
    /// The registry holds it as planned.
    pub registered: bool,
    /// The registry refused its write; retried later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<ParkedStatus>,
}

/// A refused write, as the status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ParkedStatus {
    pub reason: String,
    pub refusals: u32,
    /// Seconds until it is tried again.
    pub retry_in_s: u64,
}

/// Where the agent is and what it talks to, known once it is built.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node: String,
    pub registry: String,
    pub docker: String,
}

impl Status {
    /// The status from a store snapshot (`None` before the agent is built).
    pub fn build(
        identity: Option<&Identity>,
        snapshot: &Snapshot,
        ready: Result<(), String>,
        now: Instant,
    ) -> Status {
        let mut containers: Vec<ContainerStatus> = snapshot
            .looks
            .iter()
            .map(|(id, look)| ContainerStatus {
                id: id.clone(),
                name: look.name.clone(),
                image: look.image.clone(),
                skipped: look.skipped,
                instances: look
                    .desired
                    .iter()
                    .map(|i| instance(i, snapshot, now))
                    .collect(),
                draining: snapshot.draining.get(id).map(|d| DrainingStatus {
                    signal: crate::labels::drain::signal_name(d.signal),
                    lapses_in_s: d.until.saturating_duration_since(now).as_secs(),
                }),
                notes: look.notes.clone(),
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Status {
            version: env!("CARGO_PKG_VERSION"),
            node: identity.map(|i| i.node.clone()),
            registry: identity.map(|i| i.registry.clone()),
            docker: identity.map(|i| i.docker.clone()),
            ready: ready.is_ok(),
            reason: ready.err(),
            containers,
        }
    }

    /// The state gauges of `/metrics`, from the same snapshot.
    pub fn gauges(snapshot: &Snapshot, ready: bool) -> State {
        let mut by_health = [0; 3];
        for i in snapshot.owned.values() {
            let slot = match i.health.status {
                HealthStatus::Passing => 0,
                HealthStatus::Warning => 1,
                HealthStatus::Critical => 2,
            };
            by_health[slot] += 1;
        }
        let skipped = Skip::ALL
            .iter()
            .map(|skip| {
                let n = snapshot
                    .looks
                    .values()
                    .filter(|l| l.skipped == Some(*skip))
                    .count();
                (skip.code(), n as i64)
            })
            .collect();
        State {
            containers: snapshot.looks.len() as i64,
            instances: snapshot.owned.len() as i64,
            by_health,
            skipped,
            parked: snapshot.parked.len() as i64,
            ready,
        }
    }
}

fn instance(i: &Instance, snapshot: &Snapshot, now: Instant) -> InstanceStatus {
    let registered = snapshot
        .owned
        .get(&i.id)
        .is_some_and(|owned| owned.same_registration(i));
    InstanceStatus {
        id: i.id.clone(),
        name: i.name.clone(),
        address: i.address.clone(),
        port: i.port,
        tags: i.tags.clone(),
        meta: i.meta.clone(),
        health: i.health.clone(),
        registered,
        parked: snapshot.parked.get(&i.id).map(|p| parked(p, now)),
    }
}

fn parked(p: &Parked, now: Instant) -> ParkedStatus {
    let retry_in: Duration = p.until.saturating_duration_since(now);
    ParkedStatus {
        reason: p.reason.clone(),
        refusals: p.refusals,
        retry_in_s: retry_in.as_secs(),
    }
}
