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
//! A container reconcile is: inspect → [`labels::plan_container`] → [`plan::plan`] against
//! the store → apply the ops in order → record each successful write in the store.

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

use crate::docker::{DockerClient, Trigger};
use crate::labels::{self, Level};
use plan::Op;
use store::Store;

/// Everything a container reconcile needs; cheap to clone into tasks.
#[derive(Clone, Debug)]
pub struct Context {
    pub docker: DockerClient,
    pub registry: Registry,
    pub store: Arc<Store>,
    pub settings: Arc<labels::Settings>,
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
        listing: Result<Listing, RegistryError>,
        ids: Vec<String>,
    },
}

/// The reconcile controller task.
#[derive(Debug)]
pub struct Reconciler {
    ctx: Context,
    options: Options,
}

impl Reconciler {
    pub fn new(ctx: Context, options: Options) -> Reconciler {
        Reconciler { ctx, options }
    }

    /// Runs until `cancel` fires or every trigger sender is gone, then finishes the writes in
    /// flight (and deregisters everything with `deregister_on_exit`).
    pub async fn run(self, mut triggers: mpsc::Receiver<Trigger>, cancel: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.options.concurrency));
        let mut jobs: JoinSet<Done> = JoinSet::new();
        let mut running: HashSet<String> = HashSet::new();
        let mut dirty: HashSet<String> = HashSet::new();
        let mut failures: HashMap<String, u32> = HashMap::new();
        let schedule = |id: String,
                        jobs: &mut JoinSet<Done>,
                        running: &mut HashSet<String>,
                        dirty: &mut HashSet<String>| {
            if running.contains(&id) {
                dirty.insert(id);
            } else {
                running.insert(id.clone());
                jobs.spawn(reconcile_container(self.ctx.clone(), id, permits.clone()));
            }
        };

        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(done) = jobs.join_next() => match done {
                    Ok(Done::Container { id, ok }) => {
                        running.remove(&id);
                        if dirty.remove(&id) {
                            schedule(id, &mut jobs, &mut running, &mut dirty);
                        } else if ok {
                            failures.remove(&id);
                        } else {
                            // Docker or the registry failed: try again with backoff.
                            let n = failures.entry(id.clone()).or_insert(0);
                            *n = (*n + 1).min(6);
                            let delay = Duration::from_millis(500) * 2u32.pow(*n - 1);
                            let cancel = cancel.clone();
                            jobs.spawn(async move {
                                tokio::select! {
                                    _ = cancel.cancelled() => {}
                                    _ = tokio::time::sleep(delay) => {}
                                }
                                Done::Retry(id)
                            });
                        }
                    }
                    Ok(Done::Retry(id)) => schedule(id, &mut jobs, &mut running, &mut dirty),
                    Ok(Done::Snapshot { listing, ids }) => {
                        match listing {
                            Ok(listing) => {
                                debug!(owned = listing.owned.len(), foreign = listing.foreign_ids.len(), "registry listing");
                                self.ctx.store.replace(listing);
                            }
                            Err(e) => warn!(registry = %self.ctx.registry.describe(), error = %e, "cannot read the registry; reconciling against the last known state"),
                        }
                        let mut all: HashSet<String> = ids.into_iter().collect();
                        all.extend(self.ctx.store.containers());
                        for id in all {
                            schedule(id, &mut jobs, &mut running, &mut dirty);
                        }
                    }
                    Err(e) => warn!(error = %e, "reconcile task failed"),
                },
                t = triggers.recv() => match t {
                    None => break,
                    Some(Trigger::Container(id)) => schedule(id, &mut jobs, &mut running, &mut dirty),
                    Some(Trigger::Snapshot(ids)) => {
                        let registry = self.ctx.registry.clone();
                        let node = self.ctx.settings.node.clone();
                        jobs.spawn(async move {
                            Done::Snapshot { listing: registry.list(&node).await, ids }
                        });
                    }
                },
            }
        }

        // Finish the writes in flight; retries and snapshots end at once on cancel.
        while jobs.join_next().await.is_some() {}
        if self.options.deregister_on_exit {
            deregister_all(&self.ctx).await;
        }
    }
}

/// Inspects one container and applies the plan for it.
async fn reconcile_container(ctx: Context, id: String, permits: Arc<Semaphore>) -> Done {
    let Ok(_permit) = permits.acquire_owned().await else {
        return Done::Container { id, ok: false };
    };
    let span = info_span!("reconcile", container = %short(&id));
    let ok = reconcile_one(&ctx, &id).instrument(span).await;
    Done::Container { id, ok }
}

async fn reconcile_one(ctx: &Context, id: &str) -> bool {
    let outcome = match ctx.docker.inspect(id).await {
        Ok(Some(view)) => labels::plan_container(&view, &ctx.settings),
        // Gone: nothing is desired, so whatever it registered is removed.
        Ok(None) => labels::Outcome::default(),
        Err(e) => {
            warn!(error = %e, "cannot inspect container; will retry");
            return false;
        }
    };
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
    for c in &plan.conflicts {
        warn!(service.id = %c.id, "not registered: {}", c.reason);
    }
    let mut ok = true;
    for op in plan.ops {
        if let Err(e) = apply(ctx, &op).await {
            warn!(service.id = %op.id(), error = %e, "registry write failed; will retry");
            ok = false;
        }
    }
    ok
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
            match ctx.registry.heartbeat(id, health).await {
                Ok(()) => {}
                // Lost meanwhile: forget it; the next reconcile registers it again.
                Err(RegistryError::NotFound { .. }) => {
                    ctx.store.lost(id);
                    return Err(RegistryError::NotFound { id: id.clone() });
                }
                Err(e) => return Err(e),
            }
            info!(service.id = %id, status = %health.status, output = %health.output, "health changed");
            ctx.store.health_reported(id, health.clone());
        }
    }
    Ok(())
}

async fn deregister_all(ctx: &Context) {
    let ids = ctx.store.ids();
    info!(instances = ids.len(), "deregistering on exit");
    futures::stream::iter(ids)
        .for_each_concurrent(16, |id| async move {
            match ctx.registry.deregister(&id).await {
                Ok(()) => ctx.store.deregistered(&id),
                Err(e) => warn!(service.id = %id, error = %e, "deregister on exit failed; the TTL will expire it"),
            }
        })
        .await;
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
