//! The reconcile controller: one task that decides when each container is reconciled.
//!
//! - `Trigger::Container(id)` and a recheck from the prober: reconcile that container. Work is
//!   ordered per container (never two reconciles of one container at once; a trigger that
//!   arrives meanwhile marks it dirty and it runs once more afterwards) and concurrent across
//!   containers, bounded by a semaphore.
//! - `Trigger::Event` with a fact (the container exited, or was sent a signal): the next run
//!   of that container applies the fact without an inspect, and the run after it inspects. A
//!   reconcile of the container still waiting for a permit or an inspect is preempted, so the
//!   fact is written at once instead of after Docker has torn the container down. The latest
//!   fact wins, except that a signal does not replace a SIGKILL or an exit, nor a SIGKILL an
//!   exit; a `start` replaces them all.
//! - `Trigger::Snapshot(ids)`: read what this node owns from the registry, replace the
//!   [`Store`](super::store::Store) with it, then reconcile every container that Docker lists,
//!   the registry holds, or that is being reconciled. Listings are numbered, and one older
//!   than the listing already applied is ignored.
//! - The first listing is asked for as the controller starts, in parallel with the Docker
//!   source's first list, and the first snapshot takes it (`first`). Triggers that arrive
//!   before it has come back wait for it (`deferred`): no reconcile is planned against an
//!   empty store.
//! - A listing that fails is retried with jittered backoff ([`Backoff::LISTING`]) until one
//!   succeeds or a newer snapshot replaces it; the first listing applied, with each of its
//!   containers reconciled once, makes the agent ready.
//! - A reconcile that fails for a reason that may pass is retried with jittered backoff
//!   ([`Backoff::RETRY`]); one with a write the registry refused is retried when the write's
//!   park ends ([`Backoff::PARKED`]); at most one retry is pending per container. A reconcile
//!   task that panics frees its container, which is retried.
//!
//! All bookkeeping is owned by this one task, so it needs no locks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_registry::{Listing, RegistryError};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::container::{Outcome, reconcile_container};
use super::{Context, Trigger, apply};
use crate::backoff::Backoff;
use crate::docker::Fact;

/// Tunables of the reconciler.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Containers reconciled at once.
    pub concurrency: usize,
    /// Remove every owned registration when cancelled.
    pub deregister_on_exit: bool,
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

enum Done {
    Container {
        id: String,
        outcome: Outcome,
        /// The event time no write took (see `reconcile_container`).
        since: Option<Instant>,
    },
    Retry(String),
    /// A failed listing's retry is due.
    RetrySnapshot(Vec<String>),
    Snapshot {
        seq: u64,
        listing: Result<Listing, RegistryError>,
        ids: Vec<String>,
    },
    /// The first listing, asked for before any snapshot.
    FirstListing {
        seq: u64,
        listing: Result<Listing, RegistryError>,
    },
}

/// The first registry listing, asked for when the controller starts so it is read while
/// Docker lists its containers, not after.
enum First {
    /// Asked; a snapshot that arrived meanwhile waits here for it.
    Asked(Option<Vec<String>>),
    Answered {
        seq: u64,
        listing: Result<Listing, RegistryError>,
    },
    /// Taken by the first snapshot: later snapshots list the registry themselves.
    Used,
}

struct Controller {
    ctx: Context,
    permits: Arc<Semaphore>,
    jobs: JoinSet<Done>,
    /// Container reconcile tasks, so a panicked one frees its container.
    tasks: HashMap<tokio::task::Id, String>,
    running: HashSet<String>,
    dirty: HashSet<String>,
    /// Consecutive failed reconciles per container, for the retry backoff.
    failures: HashMap<String, u32>,
    /// Containers with a retry timer pending (at most one each): when it fires, and the
    /// handle that cancels it when an earlier retry is wanted.
    retrying: HashMap<String, (Instant, AbortHandle)>,
    /// Sequence of the latest snapshot started and of the latest listing applied, so an
    /// older listing never overwrites a newer one.
    snapshot_seq: u64,
    applied_seq: u64,
    /// When the oldest event not yet reconciled arrived, per container.
    since: HashMap<String, Instant>,
    /// What the latest events proved, per container, not yet applied.
    facts: HashMap<String, Fact>,
    /// Stops the running reconcile of a container while it waits for a permit or an inspect.
    preempt: HashMap<String, CancellationToken>,
    /// Containers of the first applied snapshot not reconciled yet; readiness waits for it to
    /// empty. `None` before the first listing and after it emptied.
    first_pending: Option<HashSet<String>>,
    /// Containers triggered before the first snapshot's listing came back (the source replays
    /// the last second of events right after connecting): planned against an empty store,
    /// their reconciles would write again what the registry holds and miss foreign ids, so
    /// they wait for that listing. `None` once it has come back, answered or not.
    deferred: Option<HashSet<String>>,
    first: First,
    /// Listings failed in a row, and the timer of the one pending retry of a failed listing.
    listing_failures: u32,
    listing_retry: Option<AbortHandle>,
    cancel: CancellationToken,
}

impl Controller {
    fn schedule(&mut self, id: String) {
        if let Some(deferred) = &mut self.deferred {
            deferred.insert(id);
            return;
        }
        if self.running.contains(&id) {
            self.dirty.insert(id);
            return;
        }
        self.running.insert(id.clone());
        let since = self.since.remove(&id);
        let fact = self.facts.remove(&id);
        if matches!(fact, Some(Fact::Exited | Fact::Signalled(_))) {
            // A fact is written without an inspect; the run after it inspects to converge.
            // (After a SIGKILL Docker may still report the container running: that run waits
            // for the `die`, see `Fact::Killed`.)
            self.dirty.insert(id.clone());
        }
        let preempt = CancellationToken::new();
        self.preempt.insert(id.clone(), preempt.clone());
        let handle = self.jobs.spawn(job(
            self.ctx.clone(),
            id.clone(),
            self.permits.clone(),
            since,
            fact,
            preempt,
        ));
        self.tasks.insert(handle.id(), id);
    }

    /// A Docker event arrived for `id` at `at`, proving `fact`.
    fn event(&mut self, id: String, at: Instant, fact: Option<Fact>) {
        self.since.entry(id.clone()).or_insert(at);
        if let Some(fact) = fact {
            let pending = self.facts.entry(id.clone()).or_insert(fact);
            // Only a start makes a killed or exited container run again.
            if fact == Fact::Started || finality(fact) >= finality(*pending) {
                *pending = fact;
            }
            if fact != Fact::Started
                && let Some(running) = self.preempt.get(&id)
            {
                running.cancel();
            }
        }
        self.schedule(id);
    }

    /// The first snapshot is applied once each of its containers has been reconciled.
    fn first_done(&mut self, id: Option<&str>) {
        if let Some(pending) = &mut self.first_pending {
            if let Some(id) = id {
                pending.remove(id);
            }
            if pending.is_empty() {
                self.first_pending = None;
                self.ctx.observe.ready.snapshot_applied();
            }
        }
    }

    fn container_done(&mut self, id: String, outcome: Outcome) {
        self.running.remove(&id);
        self.preempt.remove(&id);
        if self.dirty.remove(&id) || outcome == Outcome::Preempted {
            self.schedule(id);
            return;
        }
        self.first_done(Some(&id));
        let delay = match outcome {
            Outcome::Converged | Outcome::Preempted => {
                self.failures.remove(&id);
                return;
            }
            Outcome::Again(after) => {
                self.failures.remove(&id);
                after
            }
            Outcome::Parked(retry_in) => retry_in,
            Outcome::Retry => {
                let n = self.failures.entry(id.clone()).or_insert(0);
                *n = n.saturating_add(1);
                Backoff::RETRY.delay(*n, &mut rand::rng())
            }
        };
        // One timer per container: a parked write's slow one gives way to a sooner retry.
        let at = Instant::now() + delay;
        match self.retrying.get(&id) {
            Some((pending, _)) if *pending <= at => return,
            Some((_, timer)) => timer.abort(),
            None => {}
        }
        let cancel = self.cancel.clone();
        let key = id.clone();
        let timer = self.jobs.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep_until(at) => {}
            }
            Done::Retry(id)
        });
        self.retrying.insert(key, (at, timer));
    }

    /// A snapshot of Docker's containers `ids`: with the first listing, or a new one.
    fn snapshot(&mut self, ids: Vec<String>) {
        match std::mem::replace(&mut self.first, First::Used) {
            First::Asked(_) => self.first = First::Asked(Some(ids)),
            First::Answered { seq, listing } => self.snapshot_done(seq, listing, ids),
            First::Used => self.start_snapshot(ids),
        }
    }

    /// Asks for the first listing.
    fn ask_first_listing(&mut self) {
        self.snapshot_seq += 1;
        let seq = self.snapshot_seq;
        let list = self.list();
        self.jobs.spawn(async move {
            Done::FirstListing {
                seq,
                listing: list.await,
            }
        });
    }

    fn first_listing(&mut self, seq: u64, listing: Result<Listing, RegistryError>) {
        match std::mem::replace(&mut self.first, First::Used) {
            First::Asked(Some(ids)) => self.snapshot_done(seq, listing, ids),
            First::Asked(None) => self.first = First::Answered { seq, listing },
            // Only one first listing is asked for.
            answered => self.first = answered,
        }
    }

    /// One registry listing, counted and timed.
    fn list(&self) -> impl Future<Output = Result<Listing, RegistryError>> + use<> {
        let registry = self.ctx.registry.clone();
        let observe = self.ctx.observe.clone();
        async move {
            let (listing, _) = observe
                .registry(crate::observe::RegistryOp::List, registry.list())
                .await;
            listing
        }
    }

    fn start_snapshot(&mut self, ids: Vec<String>) {
        // A newer snapshot replaces a failed one's retry.
        if let Some(timer) = self.listing_retry.take() {
            timer.abort();
        }
        self.snapshot_seq += 1;
        let seq = self.snapshot_seq;
        let list = self.list();
        self.jobs.spawn(async move {
            Done::Snapshot {
                seq,
                listing: list.await,
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
        // was in flight is not in the listing, and must be reconciled (and so re-recorded);
        // and every container looked at before, so one removed while the event stream was
        // down is found gone and leaves the status output.
        let mut all: HashSet<String> = ids.into_iter().collect();
        all.extend(self.deferred.take().into_iter().flatten());
        all.extend(self.ctx.store.containers());
        all.extend(self.ctx.store.looked());
        all.extend(self.running.iter().cloned());
        match listing {
            Ok(listing) if seq > self.applied_seq => {
                self.applied_seq = seq;
                self.listing_failures = 0;
                debug!(
                    owned = listing.owned.len(),
                    foreign = listing.foreign_ids.len(),
                    stale = listing.stale.len(),
                    "registry listing"
                );
                self.ctx.store.replace(listing);
                self.ctx.observe.metrics.snapshots.inc();
                if !self.ctx.observe.ready.applied() && self.first_pending.is_none() {
                    self.first_pending = Some(HashSet::new());
                }
            }
            Ok(_) => debug!(seq, "ignoring a listing older than the one applied"),
            Err(e) => {
                warn!(
                    registry = %self.ctx.registry.describe(),
                    error = %crate::telemetry::chain(&e),
                    "cannot read the registry; reconciling against the last known state"
                );
                // The listing is what makes the owned state exact (and the agent ready): try
                // it again soon rather than at the next resync.
                if seq == self.snapshot_seq && self.listing_retry.is_none() {
                    self.listing_failures = self.listing_failures.saturating_add(1);
                    let delay = Backoff::LISTING.delay(self.listing_failures, &mut rand::rng());
                    let (cancel, ids) = (self.cancel.clone(), all.iter().cloned().collect());
                    let timer = self.jobs.spawn(async move {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = tokio::time::sleep(delay) => {}
                        }
                        Done::RetrySnapshot(ids)
                    });
                    self.listing_retry = Some(timer);
                }
            }
        }
        all.extend(self.ctx.store.containers());
        if let Some(pending) = &mut self.first_pending {
            pending.extend(all.iter().cloned());
        }
        self.first_done(None);
        for id in all {
            self.schedule(id);
        }
    }

    fn on_done(&mut self, done: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        match done {
            Ok((task, Done::Container { id, outcome, since })) => {
                self.tasks.remove(&task);
                // An event whose reconcile wrote nothing yet (it failed, or is re-run) is
                // still timed to the write that will come.
                if let Some(at) = since
                    && (outcome != Outcome::Converged || self.dirty.contains(&id))
                {
                    let t = self.since.entry(id.clone()).or_insert(at);
                    *t = (*t).min(at);
                }
                self.container_done(id, outcome);
            }
            Ok((_, Done::Retry(id))) => {
                self.retrying.remove(&id);
                self.schedule(id);
            }
            Ok((_, Done::RetrySnapshot(ids))) => {
                self.listing_retry = None;
                self.start_snapshot(ids);
            }
            Ok((_, Done::Snapshot { seq, listing, ids })) => self.snapshot_done(seq, listing, ids),
            Ok((_, Done::FirstListing { seq, listing })) => self.first_listing(seq, listing),
            // A retry timer replaced by a sooner one.
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                let container = self.tasks.remove(&e.id());
                warn!(error = %e, container = container.as_deref().map(crate::docker::short_id), "reconcile task failed; retrying its container");
                if let Some(id) = container {
                    self.container_done(id, Outcome::Retry);
                }
            }
        }
    }
}

/// How much a fact says the container has ended: a later fact replaces a pending one unless
/// it says less (a signal after a SIGKILL), and only a start replaces an exit.
fn finality(fact: Fact) -> u8 {
    match fact {
        Fact::Started => 0,
        Fact::Signalled(_) => 1,
        Fact::Killed => 2,
        Fact::Exited => 3,
    }
}

/// One container's reconcile as a controller job.
async fn job(
    ctx: Context,
    id: String,
    permits: Arc<Semaphore>,
    since: Option<Instant>,
    fact: Option<Fact>,
    preempt: CancellationToken,
) -> Done {
    let (outcome, since) = reconcile_container(&ctx, &id, &permits, since, fact, &preempt).await;
    Done::Container { id, outcome, since }
}

impl Reconciler {
    pub fn new(ctx: Context, options: Options) -> Reconciler {
        Reconciler { ctx, options }
    }

    /// Runs until `cancel` fires or every trigger sender is gone, then finishes the writes in
    /// flight (and deregisters everything with `deregister_on_exit`). `recheck` carries
    /// containers whose probe verdict changed.
    pub async fn run(
        self,
        mut triggers: mpsc::Receiver<Trigger>,
        mut recheck: mpsc::Receiver<String>,
        cancel: CancellationToken,
    ) {
        let mut c = Controller {
            ctx: self.ctx.clone(),
            permits: Arc::new(Semaphore::new(self.options.concurrency)),
            jobs: JoinSet::new(),
            tasks: HashMap::new(),
            running: HashSet::new(),
            dirty: HashSet::new(),
            failures: HashMap::new(),
            retrying: HashMap::new(),
            snapshot_seq: 0,
            applied_seq: 0,
            since: HashMap::new(),
            facts: HashMap::new(),
            preempt: HashMap::new(),
            first_pending: None,
            deferred: Some(HashSet::new()),
            first: First::Asked(None),
            listing_failures: 0,
            listing_retry: None,
            cancel: cancel.clone(),
        };

        c.ask_first_listing();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(done) = c.jobs.join_next_with_id() => c.on_done(done),
                Some(id) = recheck.recv() => c.schedule(id),
                t = triggers.recv() => match t {
                    None => break,
                    Some(Trigger::Container(id)) => c.schedule(id),
                    Some(Trigger::Event { container, at, fact }) => c.event(container, at, fact),
                    Some(Trigger::Snapshot(ids)) => c.snapshot(ids),
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
            apply::deregister_all(&self.ctx).await;
        }
    }
}
