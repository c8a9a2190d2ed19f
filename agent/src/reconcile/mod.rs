//! The reconciler: one path from Docker state to registry writes.
//!
//! Desired state comes from Docker, owned state from the registry (kept in the [`Store`]), and
//! a pure diff ([`plan::plan`]) plans the writes. Startup, events, resync, probe verdicts and
//! repairs all take that path:
//!
//! - [`controller`]: the task. It takes [`Trigger`]s from the Docker source and the
//!   heartbeater, and container ids to look at again from the prober; it orders work per
//!   container, retries failures with backoff, parks refused writes, applies registry
//!   listings in order, and drains on shutdown.
//! - [`container`]: one container's reconcile: inspect → labels → probe verdicts → plan →
//!   apply; or, for what an event proves (the container exited, or is being stopped), the
//!   plan straight from that fact, with no inspect.
//! - [`apply`]: where a write leaves for the registry, and is recorded in the store.
//! - [`store`]: what this node owns, the heartbeat schedule, parked writes, and what each
//!   container's latest reconcile decided (`Look`, for the status output).
//! - [`heartbeat`]: the task that keeps every owned instance alive.

pub mod apply;
pub mod container;
pub mod controller;
pub mod heartbeat;
pub mod plan;
pub mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use berth_registry::Registry;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::docker::{Docker, Fact};
use crate::heal;
use crate::labels;
use crate::observe::Observer;
use crate::probe::Prober;
pub use controller::{Options, Reconciler};
use store::Store;

/// What the reconciler is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The registry lost one of this container's (by full id) instances, or something else
    /// wants it looked at: reconcile it.
    Container(String),
    /// A Docker event for this container arrived at `at`: reconcile it, and time its first
    /// write from `at` (`berth_event_to_write_duration_seconds`). What the event proves
    /// (`fact`: the container exited, or was sent a signal) is written at once, before any
    /// inspect; the container is then inspected and reconciled as usual.
    Event {
        container: String,
        at: Instant,
        fact: Option<Fact>,
    },
    /// Every running or paused container id Docker has right now (authoritative: anything the
    /// registry holds for other containers is stale). Read the registry, then reconcile all.
    Snapshot(Vec<String>),
}

/// Everything a container reconcile needs; cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Context {
    pub docker: Docker,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub settings: Arc<labels::Settings>,
    pub prober: Arc<Prober>,
    pub heal: mpsc::Sender<heal::Request>,
    pub observe: Arc<Observer>,
}
