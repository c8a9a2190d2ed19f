//! The reconciler: one path from Docker state to registry writes.
//!
//! [`Reconciler::run`] receives [`Trigger`]s from the Docker source and the heartbeater.
//!
//! - `Container(id)`: reconcile that container. Work is ordered per container (never two
//!   reconciles of one container at once; a trigger that arrives meanwhile marks it dirty and
//!   it runs once more afterwards) and concurrent across containers, bounded by a semaphore.
//! - `Snapshot(ids)`: read what this node owns from the registry, replace the [`Store`] with
//!   it, then reconcile every container that Docker lists or the registry holds. Startup,
//!   reconnect and periodic resync are all this same path; a container that is gone inspects
//!   as nothing, so its registrations are planned away.
//!
//! A container reconcile is: inspect → [`labels::plan_container`] → [`Prober::sync`] (probe
//! verdicts replace the health of probed instances; withdrawn ones are left out) →
//! [`plan::plan`] against the store → apply the ops in order → record each successful write in
//! the store. A labelled container Docker calls unhealthy is also handed to self-healing.

pub mod heartbeat;
pub mod plan;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_registry::{Listing, Registry, RegistryError};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::docker::view::DockerHealth;
use crate::docker::{DockerClient, Trigger};
use crate::heal;
use crate::labels::{self, Level, Note};
use crate::probe::Prober;
use plan::Op;
use store::Store;

/// Everything a container reconcile needs; cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Context {
    pub docker: DockerClient,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub settings: Arc<labels::Settings>,
    pub prober: Arc<Prober>,
    pub heal: mpsc::Sender<heal::Request>,
}

/// Tunables of the reconciler.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Containers reconciled at once.
    pub concurrency: usize,
    /// Remove every owned registration when cancelled.
    pub deregister_on_exit: bool,
}

enum Done {
    Container {
        id: String,
        ok: bool,
    },
    Retry(String),
    Snapshot {
        seq: u64,
        listing: Result<Listing, RegistryError>,
        ids: Vec<String>,
    },
}

/// How long in-flight reconciles may run after cancel before they are aborted, so that
/// `--deregister-on-exit` still fits in `main`'s drain timeout.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(4);

/// The reconcile controller task.
#[derive(Debug)]
pub struct Reconciler {
    ctx: Context,
    options: Options,
}

/// The controller's bookkeeping; owned by the one controller task, so no locks.
struct Controller {
    ctx: Context,
    permits: Arc<Semaphore>,
    jobs: JoinSet<Done>,
    /// Container reconcile tasks, so a panicked one frees its container.
    tasks: HashMap<tokio::task::Id, String>,
    running: HashSet<String>,
    dirty: HashSet<String>,
    /// Consecutive failures per container, for the retry backoff.
    failures: HashMap<String, u32>,
    /// Containers with a retry timer pending (at most one each).
    retrying: HashSet<String>,
    /// Sequence of the latest snapshot started and of the latest listing applied, so an
    /// older listing never overwrites a newer one.
    snapshot_seq: u64,
    applied_seq: u64,
}

impl Controller {
    fn schedule(&mut self, id: String) {
        if self.running.contains(&id) {
            self.dirty.insert(id);
            return;
        }
        self.running.insert(id.clone());
        let handle = self.jobs.spawn(reconcile_container(
            self.ctx.clone(),
            id.clone(),
            self.permits.clone(),
        ));
        self.tasks.insert(handle.id(), id);
    }

    fn container_done(&mut self, id: String, ok: bool, cancel: &CancellationToken) {
        self.running.remove(&id);
        if self.dirty.remove(&id) {
            self.schedule(id);
        } else if ok {
            self.failures.remove(&id);
        } else if self.retrying.insert(id.clone()) {
            // Docker or the registry failed, or the id is held by another container that
            // is about to release it: try again with backoff (0.5 s doubling to 16 s).
            let n = self.failures.entry(id.clone()).or_insert(0);
            *n = (*n + 1).min(6);
            let delay = Duration::from_millis(500) * 2u32.pow(*n - 1);
            let cancel = cancel.clone();
            self.jobs.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
                Done::Retry(id)
            });
        }
    }

    fn start_snapshot(&mut self, ids: Vec<String>) {
        self.snapshot_seq += 1;
        let seq = self.snapshot_seq;
        let registry = self.ctx.registry.clone();
        let node = self.ctx.settings.node.clone();
        self.jobs.spawn(async move {
            Done::Snapshot {
                seq,
                listing: registry.list(&node).await,
                ids,
            }
        });
    }

    fn snapshot_done(
        &mut self,
        seq: u64,
        listing: Result<Listing, RegistryError>,
        ids: Vec<String>,
    ) {
        // Everything the store knew before, too: a registration written while the listing
        // was in flight is not in the listing, and must be reconciled (and so re-recorded).
        let mut all: HashSet<String> = ids.into_iter().collect();
        all.extend(self.ctx.store.containers());
        all.extend(self.running.iter().cloned());
        match listing {
            Ok(listing) if seq > self.applied_seq => {
                self.applied_seq = seq;
                debug!(
                    owned = listing.owned.len(),
                    foreign = listing.foreign_ids.len(),
                    "registry listing"
                );
                self.ctx.store.replace(listing);
            }
            Ok(_) => debug!(seq, "ignoring a listing older than the one applied"),
            Err(e) => warn!(
                registry = %self.ctx.registry.describe(),
                error = %crate::telemetry::chain(&e),
                "cannot read the registry; reconciling against the last known state"
            ),
        }
        all.extend(self.ctx.store.containers());
        for id in all {
            self.schedule(id);
        }
    }

    fn on_done(
        &mut self,
        done: Result<(tokio::task::Id, Done), tokio::task::JoinError>,
        cancel: &CancellationToken,
    ) {
        match done {
            Ok((task, Done::Container { id, ok })) => {
                self.tasks.remove(&task);
                self.container_done(id, ok, cancel);
            }
            Ok((_, Done::Retry(id))) => {
                self.retrying.remove(&id);
                self.schedule(id);
            }
            Ok((_, Done::Snapshot { seq, listing, ids })) => self.snapshot_done(seq, listing, ids),
            Err(e) => {
                warn!(error = %e, "reconcile task failed");
                if let Some(id) = self.tasks.remove(&e.id()) {
                    self.container_done(id, false, cancel);
                }
            }
        }
    }
}

impl Reconciler {
    pub fn new(ctx: Context, options: Options) -> Reconciler {
        Reconciler { ctx, options }
    }

    /// Runs until `cancel` fires or every trigger sender is gone, then finishes the writes in
    /// flight (and deregisters everything with `deregister_on_exit`).
    pub async fn run(self, mut triggers: mpsc::Receiver<Trigger>, cancel: CancellationToken) {
        let mut c = Controller {
            ctx: self.ctx.clone(),
            permits: Arc::new(Semaphore::new(self.options.concurrency)),
            jobs: JoinSet::new(),
            tasks: HashMap::new(),
            running: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            retrying: HashSet::new(),
            snapshot_seq: 0,
            applied_seq: 0,
        };

        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(done) = c.jobs.join_next_with_id() => c.on_done(done, &cancel),
                t = triggers.recv() => match t {
                    None => break,
                    Some(Trigger::Container(id)) => c.schedule(id),
                    Some(Trigger::Snapshot(ids)) => c.start_snapshot(ids),
                },
            }
        }

        // Reconciles still waiting for a permit do not start; those in flight finish their
        // writes within a grace period; retry timers and snapshots end at once on cancel.
        c.permits.close();
        let drain = async { while c.jobs.join_next().await.is_some() {} };
        if tokio::time::timeout(IN_FLIGHT_GRACE, drain).await.is_err() {
            warn!(grace = ?IN_FLIGHT_GRACE, "in-flight reconciles did not finish; aborting them");
            c.jobs.abort_all();
        }
        if self.options.deregister_on_exit {
            deregister_all(&self.ctx).await;
        }
    }
}

/// Inspects one container and applies the plan for it.
async fn reconcile_container(ctx: Context, id: String, permits: Arc<Semaphore>) -> Done {
    let Ok(_permit) = permits.acquire_owned().await else {
        // Shutting down: the permits are closed.
        return Done::Container { id, ok: true };
    };
    let span = info_span!("reconcile", container = %crate::docker::short_id(&id));
    let ok = reconcile_one(&ctx, &id).instrument(span).await;
    Done::Container { id, ok }
}

async fn reconcile_one(ctx: &Context, id: &str) -> bool {
    let (mut outcome, name) = match ctx.docker.inspect(id).await {
        Ok(Some(view)) => {
            let outcome = labels::plan_container(&view, &ctx.settings);
            if outcome.autoheal
                && let Some(DockerHealth::Unhealthy(out)) = &view.health
            {
                let reason = if out.is_empty() {
                    "Docker HEALTHCHECK reports unhealthy".to_owned()
                } else {
                    // One line: it ends up in a log record and a health output.
                    let first = out.lines().next().unwrap_or_default();
                    format!("Docker HEALTHCHECK reports unhealthy: {first}")
                };
                heal::request(
                    &ctx.heal,
                    heal::Request {
                        container: id.to_owned(),
                        name: view.name.clone(),
                        reason,
                    },
                );
            }
            (outcome, view.name)
        }
        // Gone: nothing is desired, so whatever it registered is removed.
        Ok(None) => {
            ctx.prober.forget(id);
            (labels::Outcome::default(), String::new())
        }
        Err(e) => {
            warn!(error = %crate::telemetry::chain(&e), "cannot inspect container; will retry");
            return false;
        }
    };
    apply_verdicts(ctx, id, &name, &mut outcome);
    if ctx.store.set_notes(id, outcome.notes.clone()) {
        for note in &outcome.notes {
            match note.level {
                Level::Warn => warn!("{}", note.message),
                Level::Info => debug!("{}", note.message),
            }
        }
    }

    let plan = ctx
        .store
        .plan_container(&ctx.settings.node, id, &outcome.instances);
    // An id held by another container of this node is usually a container recreated under
    // the same name whose predecessor is being deregistered right now: retry shortly.
    let mut ok = true;
    for c in &plan.conflicts {
        if ctx.store.holder(&c.id).is_some_and(|holder| holder != id) {
            debug!(service.id = %c.id, "id still held by another container of this node; retrying");
            ok = false;
        } else {
            warn!(service.id = %c.id, "not registered: {}", c.reason);
        }
    }
    for op in plan.ops {
        if let Err(e) = apply(ctx, &op).await {
            warn!(service.id = %op.id(), error = %crate::telemetry::chain(&e), "registry write failed; will retry");
            ok = false;
        }
    }
    ok
}

/// Puts each probed instance's verdict on it, and leaves out the withdrawn ones.
fn apply_verdicts(ctx: &Context, id: &str, name: &str, outcome: &mut labels::Outcome) {
    let verdicts = ctx.prober.sync(id, name, outcome);
    // Instances without checks (Docker's health) show a self-healing restart too; probed
    // ones carry it in their verdict.
    let heal_note = ctx.prober.heal_note(id);
    let mut withdrawn = Vec::new();
    outcome.instances.retain_mut(|i| match verdicts.get(&i.id) {
        Some(v) if v.withdrawn => {
            withdrawn.push(i.id.clone());
            false
        }
        Some(v) => {
            i.health = v.health.clone();
            true
        }
        None => {
            if let Some(note) = &heal_note {
                let output = format!("{}\n{note}", i.health.output);
                i.health.output = labels::truncate_output(&output).to_owned();
            }
            true
        }
    });
    for w in withdrawn {
        outcome.notes.push(Note {
            level: Level::Warn,
            message: format!(
                "instance {w} has been critical longer than its deregister_after; withdrawn \
                 until its checks pass again"
            ),
        });
    }
}

async fn apply(ctx: &Context, op: &Op) -> Result<(), RegistryError> {
    match op {
        Op::Register(instance) => {
            ctx.registry.register(instance).await?;
            info!(service.id = %instance.id, service.name = %instance.name, address = %instance.address, port = instance.port, "registered");
            ctx.store.registered(instance.clone());
        }
        Op::Deregister { id } => {
            ctx.registry.deregister(id).await?;
            info!(service.id = %id, "deregistered");
            ctx.store.deregistered(id);
        }
        Op::SetHealth { id, health } => {
            match ctx.registry.set_health(id, health).await {
                Ok(()) => {}
                // Lost meanwhile: forget it; the next reconcile registers it again.
                Err(RegistryError::NotFound { .. }) => {
                    ctx.store.lost(id);
                    return Err(RegistryError::NotFound { id: id.clone() });
                }
                Err(e) => return Err(e),
            }
            // Debug-formatted: a multi-check or self-healing output has several lines, and a
            // log record stays on one.
            info!(service.id = %id, status = %health.status, output = ?health.output, "health changed");
            ctx.store.health_reported(id, health.clone());
        }
    }
    Ok(())
}

/// Removes everything this node owns: what the store recorded plus what the registry lists
/// (a write may have reached the registry after its client timed out).
async fn deregister_all(ctx: &Context) {
    let mut ids: HashSet<String> = ctx.store.ids().into_iter().collect();
    match tokio::time::timeout(
        Duration::from_secs(2),
        ctx.registry.list(&ctx.settings.node),
    )
    .await
    {
        Ok(Ok(listing)) => ids.extend(listing.owned.into_iter().map(|i| i.id)),
        Ok(Err(e)) => {
            warn!(error = %crate::telemetry::chain(&e), "cannot list the registry on exit; deregistering what is known")
        }
        Err(_) => warn!("listing the registry on exit timed out; deregistering what is known"),
    }
    info!(instances = ids.len(), "deregistering on exit");
    futures::stream::iter(ids)
        .for_each_concurrent(16, |id| async move {
            match ctx.registry.deregister(&id).await {
                Ok(()) => ctx.store.deregistered(&id),
                Err(e) => warn!(service.id = %id, error = %crate::telemetry::chain(&e), "deregister on exit failed; the TTL will expire it"),
            }
        })
        .await;
}
