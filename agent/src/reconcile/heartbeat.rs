//! The heartbeater: one task refreshes every owned instance's TTL every ttl/3.
//!
//! It sleeps until the store's earliest deadline (or until the store says a new, earlier one
//! exists), sends the due heartbeats with bounded concurrency, and turns a
//! [`RegistryError::NotFound`] (the registry lost the instance, e.g. Consul restarted) into a
//! reconcile of the container, which registers it again at once.
//!
//! A backend that keeps a node's instances alive with one lease ([`Liveness::PerNode`],
//! etcd) needs no beat per instance: the heartbeater then asks it every ttl/3 whether the
//! lease is kept ([`Registry::heartbeat_node`], no I/O), so the metrics and readiness see a
//! failing renewal as they see failing heartbeats.

use std::sync::Arc;
use std::time::Duration;

use berth_registry::{Liveness, Registry, RegistryError};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Trigger;
use super::store::Store;
use crate::observe::{Observer, RegistryOp};

/// Heartbeats sent at once.
const CONCURRENCY: usize = 32;

/// Runs until `cancel` fires; beats every `every` (ttl/3).
pub async fn run(
    registry: Registry,
    store: Arc<Store>,
    observe: Arc<Observer>,
    triggers: mpsc::Sender<Trigger>,
    every: Duration,
    cancel: CancellationToken,
) {
    match registry.liveness() {
        Liveness::PerNode => per_node(registry, observe, every, cancel).await,
        Liveness::PerInstance => per_instance(registry, store, observe, triggers, cancel).await,
    }
}

/// One question every `every`: is the node's lease kept?
async fn per_node(
    registry: Registry,
    observe: Arc<Observer>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let (result, _) = observe
            .registry(RegistryOp::Heartbeat, registry.heartbeat_node())
            .await;
        let failed = result.is_err();
        match result {
            Ok(()) if failing => info!("heartbeats succeed again"),
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(error = %crate::telemetry::chain(&e), "heartbeat failed; retrying every interval")
            }
            Err(e) => debug!(error = %e, "heartbeat failed"),
        }
        failing = failed;
    }
}

/// Every owned instance, every ttl/3.
async fn per_instance(
    registry: Registry,
    store: Arc<Store>,
    observe: Arc<Observer>,
    triggers: mpsc::Sender<Trigger>,
    cancel: CancellationToken,
) {
    let mut failing = false;
    loop {
        let next = store.next_due();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = store.changed() => continue,
            _ = sleep_until(next) => {}
        }
        let due = store.take_due(Instant::now());
        let results: Vec<(String, Result<(), RegistryError>)> = futures::stream::iter(due)
            .map(|id| {
                let (registry, observe) = (&registry, &observe);
                async move {
                    let (r, took) = observe
                        .registry(RegistryOp::Heartbeat, registry.heartbeat(&id))
                        .await;
                    debug!(service.id = %id, op = %RegistryOp::Heartbeat, took_ms = super::apply::took_ms(took), ok = r.is_ok(), "heartbeat");
                    (id, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        let mut errors = 0usize;
        for (id, result) in results {
            match result {
                Ok(()) => {}
                Err(RegistryError::NotFound { .. }) => {
                    if let Some(container) = store.lost(&id) {
                        info!(service.id = %id, "registry lost the instance; registering it again");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            sent = triggers.send(Trigger::Container(container)) => if sent.is_err() { return },
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    if !failing {
                        warn!(service.id = %id, error = %crate::telemetry::chain(&e), "heartbeat failed; retrying every interval");
                    } else {
                        debug!(service.id = %id, error = %e, "heartbeat failed");
                    }
                }
            }
        }
        if errors == 0 && failing {
            info!("heartbeats succeed again");
        }
        failing = errors > 0 || (failing && store.next_due().is_none());
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
