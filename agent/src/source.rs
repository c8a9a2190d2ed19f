//! The Docker source: connect, list + watch with no gap, reconnect, periodic resync.
//!
//! [`run`] is the long-running task. After every (re)connect, every `--resync` tick and every
//! resync the registry asks for, it sends a [`Trigger::Snapshot`] with every container Docker
//! has; in between it turns each relevant event into a [`Trigger::Event`] (the container id
//! and when the event arrived) and counts every event in the metrics. Triggers carry only
//! container ids and times: the reconciler inspects the container itself, so the event type
//! never matters and a burst of events for one container collapses into one reconcile.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::docker::{Docker, DockerError};
use crate::observe::Observer;
use crate::reconcile::Trigger;

/// Watches Docker until `cancel` fires. Never returns early: every failure is logged in one
/// line and retried with backoff.
pub async fn run(
    mut docker: Docker,
    resync: Duration,
    resync_now: Arc<Notify>,
    observe: Arc<Observer>,
    tx: mpsc::Sender<Trigger>,
    cancel: CancellationToken,
) {
    let mut failures = 0;
    loop {
        let watch = watch_once(&mut docker, resync, &resync_now, &observe, &tx, &cancel);
        match watch.await {
            Ok(()) => return, // cancelled, or nobody listens any more
            Err(ended) => {
                observe.ready.docker_down(&ended.reason);
                // A stream that worked before it broke is a new outage: start small.
                failures = if ended.healthy { 1 } else { failures + 1 };
                let delay = Backoff::RECONNECT.delay(failures, &mut rand::rng());
                warn!(
                    endpoint = docker.endpoint(),
                    reason = %ended.reason,
                    retry_in = ?delay,
                    "docker unavailable; will reconnect and relist"
                );
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Why a watch ended.
#[derive(Debug)]
struct Ended {
    reason: String,
    /// True when the connection proved itself (an event arrived, or a resync ran) before it
    /// failed; a stream that fails at once keeps backing off instead.
    healthy: bool,
}

impl Ended {
    fn by(healthy: bool) -> impl Fn(DockerError) -> Ended {
        move |e| Ended {
            reason: crate::telemetry::chain(&e),
            healthy,
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One connection: list, watch, resync; returns `Ok` only when cancelled or when the
/// reconciler is gone.
async fn watch_once(
    docker: &mut Docker,
    resync: Duration,
    resync_now: &Notify,
    observe: &Observer,
    tx: &mpsc::Sender<Trigger>,
    cancel: &CancellationToken,
) -> Result<(), Ended> {
    docker.negotiate().await.map_err(Ended::by(false))?;
    // Take `since` before listing, so events during the list are replayed, not lost.
    let since = unix_now() - 1;
    let ids = docker.list_ids().await.map_err(Ended::by(false))?;
    observe.ready.docker_up();
    observe.metrics.docker_connects.inc();
    info!(
        containers = ids.len(),
        "docker connected; applying snapshot"
    );
    if tx.send(Trigger::Snapshot(ids)).await.is_err() {
        return Ok(());
    }
    let mut events = docker.events(since);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = false;
    loop {
        let ids = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let ids = docker.list_ids().await.map_err(Ended::by(healthy))?;
                healthy = true;
                debug!(containers = ids.len(), "periodic resync");
                ids
            }
            _ = resync_now.notified() => {
                let ids = docker.list_ids().await.map_err(Ended::by(healthy))?;
                info!(containers = ids.len(), "resync requested by the registry backend");
                tick.reset();
                ids
            }
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    healthy = true;
                    observe.metrics.docker_event(ev.as_ref().map(|e| e.action.as_str()));
                    if let Some(ev) = ev {
                        debug!(container = %ev.container, action = %ev.action, "docker event");
                        let at = tokio::time::Instant::now();
                        let trigger = Trigger::Event { container: ev.container, at, fact: ev.fact };
                        if tx.send(trigger).await.is_err() {
                            return Ok(());
                        }
                    }
                    continue;
                }
                Some(Err(e)) => return Err(Ended::by(healthy)(e)),
                None => return Err(Ended { reason: "event stream ended".into(), healthy }),
            }
        };
        if tx.send(Trigger::Snapshot(ids)).await.is_err() {
            return Ok(());
        }
    }
}
