//! Health probes: berth runs each instance's checks itself and reports the result through the
//! registry's health write, so health means the same on Consul and on etcd.
//!
//! - [`Prober::sync`] is called by every container reconcile with the container's
//!   [`Outcome`]: it starts a task per new check, stops the tasks of checks that went away,
//!   and returns each probed instance's current [`Verdict`], which the reconciler puts on the
//!   desired instance before planning. Health therefore takes the one reconcile path.
//! - A check task ([`run_check`]) sleeps a random offset in `[0, interval)`, then probes every
//!   interval ± 10 %, each probe bounded by its timeout and by a shared semaphore
//!   (`--probe-concurrency`). One probe of a check is in flight at a time.
//! - Each result goes through the check's [`Thresholds`] (rise/fall). When an instance's
//!   verdict changes (a status, or its withdrawal after `deregister_after`), the prober sends
//!   the container on its `recheck` channel, so it is reconciled and the change written at
//!   once.
//!   Output alone (timings) never causes a write.
//! - A labelled container whose check fails `--autoheal-failures` times in a row is handed
//!   to the [`heal`](crate::heal) task.
//!
//! One `std::sync::Mutex` guards the bookkeeping; it is never held across I/O. Check tasks
//! run on the agent's `TaskTracker`, so the shutdown drain waits for them.

pub mod exec;
mod http1;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_registry::{Health, Status};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::heal;
use crate::labels::{CheckSpec, Outcome, Probes};
use crate::observe::Observer;
use exec::{Probe, describe};

/// Tunables.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Probes in flight at once, across all checks.
    pub concurrency: usize,
    /// Consecutive failures of one check that make an autoheal container restart.
    pub autoheal_failures: u32,
}

/// The first delay of a check: uniform in `[0, interval)`, so checks created together (a
/// burst of containers, an agent restart) spread over a whole interval.
pub fn first_delay(interval: Duration, rng: &mut impl Rng) -> Duration {
    interval.mul_f64(rng.random_range(0.0..1.0))
}

/// The delay before the next probe: the interval ± 10 %, so checks that happen to line up
/// drift apart again.
pub fn next_delay(interval: Duration, rng: &mut impl Rng) -> Duration {
    interval.mul_f64(rng.random_range(0.9..=1.1))
}

/// Rise/fall damping of one check's results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    rise: u32,
    fall: u32,
    /// `None` until the first result: the first result counts at once.
    up: Option<bool>,
    passes: u32,
    fails: u32,
    last: Option<Health>,
}

impl Thresholds {
    pub fn new(rise: u32, fall: u32) -> Thresholds {
        Thresholds {
            rise: rise.max(1),
            fall: fall.max(1),
            up: None,
            passes: 0,
            fails: 0,
            last: None,
        }
    }

    /// Takes one probe result. A warning counts as a pass (the target answered).
    pub fn record(&mut self, result: Health) {
        if result.status == Status::Critical {
            self.fails += 1;
            self.passes = 0;
        } else {
            self.passes += 1;
            self.fails = 0;
        }
        self.up = match self.up {
            None => Some(result.status != Status::Critical),
            Some(true) if self.fails >= self.fall => Some(false),
            Some(false) if self.passes >= self.rise => Some(true),
            same => same,
        };
        self.last = Some(result);
    }

    /// Consecutive failed probes.
    pub fn failures(&self) -> u32 {
        self.fails
    }

    /// The damped status, or `None` before the first result.
    pub fn status(&self) -> Option<Status> {
        let last = self.last.as_ref()?;
        Some(match self.up? {
            false => Status::Critical,
            // Up, with failures below `fall`, or a warning.
            true if last.status == Status::Warning => Status::Warning,
            true => Status::Passing,
        })
    }

    /// The latest probe output.
    pub fn output(&self) -> Option<&str> {
        self.last.as_ref().map(|h| h.output.as_str())
    }
}

/// What the reconciler does with one probed instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    /// Critical for longer than `deregister_after`: not registered until it passes again.
    pub withdrawn: bool,
    /// The status rests on a check's initial status, not on a probe result (a check has no
    /// result yet, and none that has is critical). The reconciler does not let it overwrite
    /// a health already in the registry: an agent that restarts keeps its instances'
    /// registered health until its own probes answer.
    pub provisional: bool,
}

/// One check of a tracked instance.
#[derive(Debug)]
struct Check {
    spec: CheckSpec,
    thresholds: Thresholds,
}

impl Check {
    fn status(&self) -> Status {
        self.thresholds.status().unwrap_or(self.spec.initial)
    }

    fn output(&self) -> String {
        match self.thresholds.output() {
            Some(o) => o.to_owned(),
            None => format!("{}: no result yet", describe(&self.spec.kind)),
        }
    }
}

/// One probed instance.
#[derive(Debug)]
struct Tracked {
    container: String,
    container_name: String,
    probes: Probes,
    autoheal: bool,
    /// Tasks of this generation report here; older ones are ignored.
    generation: u64,
    cancel: CancellationToken,
    checks: BTreeMap<String, Check>,
    critical_since: Option<Instant>,
    /// The verdict handed to the reconciler: rebuilt only when it changes (see
    /// [`Tracked::signature`]) or the self-healing note does, so later probe outputs (their
    /// timings) never cause a write on their own.
    reported: Verdict,
    /// The self-healing note `reported` was built with.
    reported_note: Option<String>,
}

impl Tracked {
    /// Statuses of every check (with whether it has a result) plus withdrawal: what decides
    /// whether a write is needed. Outputs are left out on purpose.
    fn signature(&self, now: Instant) -> (Vec<(Status, bool)>, bool) {
        (
            self.checks
                .values()
                .map(|c| (c.status(), c.thresholds.status().is_some()))
                .collect(),
            self.withdrawn(now),
        )
    }

    fn withdrawn(&self, now: Instant) -> bool {
        match (self.probes.deregister_after, self.critical_since) {
            (Some(after), Some(since)) => now.duration_since(since) >= after,
            _ => false,
        }
    }

    fn verdict(&self, now: Instant, heal_note: Option<&str>) -> Verdict {
        let status = self
            .checks
            .values()
            .map(Check::status)
            .max()
            .unwrap_or(Status::Critical);
        let mut output = match self.checks.values().collect::<Vec<_>>().as_slice() {
            [one] => one.output(),
            several => several
                .iter()
                .map(|c| format!("{}: {}", c.spec.name, c.output()))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        if let Some(note) = heal_note {
            output.push('\n');
            output.push_str(note);
        }
        let unresolved = self
            .checks
            .values()
            .any(|c| c.thresholds.status().is_none());
        let resolved_critical = self
            .checks
            .values()
            .any(|c| c.thresholds.status() == Some(Status::Critical));
        Verdict {
            health: Health {
                status,
                output: berth_registry::limits::truncate_output(&output).to_owned(),
            },
            withdrawn: self.withdrawn(now),
            provisional: unresolved && !resolved_critical,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// By instance id.
    instances: HashMap<String, Tracked>,
    /// Instance ids by container id, so a reconcile touches only its own container.
    by_container: HashMap<String, BTreeSet<String>>,
    /// Self-healing restarts shown in the health output, by container id.
    heal_notes: HashMap<String, String>,
    next_generation: u64,
}

impl Inner {
    /// Stops an instance's check tasks and forgets it.
    fn remove(&mut self, id: &str) {
        let Some(t) = self.instances.remove(id) else {
            return;
        };
        t.cancel.cancel();
        if let Some(ids) = self.by_container.get_mut(&t.container) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_container.remove(&t.container);
            }
        }
    }

    fn insert(&mut self, id: &str, t: Tracked) {
        self.by_container
            .entry(t.container.clone())
            .or_default()
            .insert(id.to_owned());
        self.instances.insert(id.to_owned(), t);
    }

    fn ids_of(&self, container: &str) -> Vec<String> {
        self.by_container
            .get(container)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Where the prober's results go.
#[derive(Clone, Debug)]
pub struct Outlets {
    /// Containers whose verdict changed, for the reconciler.
    pub recheck: mpsc::Sender<String>,
    /// Containers whose check failed often enough, for self-healing.
    pub heal: mpsc::Sender<heal::Request>,
    /// Every probe's result and duration (`berth_probes_total`, `berth_probe_duration_seconds`).
    pub observe: Arc<Observer>,
}

/// The probe scheduler, shared by the reconcile workers (through [`Prober::sync`]) and the
/// check tasks.
#[derive(Debug)]
pub struct Prober<P = exec::Executor> {
    inner: Mutex<Inner>,
    probe: P,
    options: Options,
    permits: Semaphore,
    outlets: Outlets,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl<P: Probe> Prober<P> {
    /// Check tasks run on `tracker` and stop when `cancel` fires.
    pub fn new(
        probe: P,
        options: Options,
        outlets: Outlets,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Arc<Prober<P>> {
        let permits = Semaphore::new(options.concurrency.max(1));
        Arc::new(Prober {
            inner: Mutex::new(Inner::default()),
            probe,
            options,
            permits,
            outlets,
            tracker,
            cancel,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in the critical sections can panic half-way through an update.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the checks of container `container` in line with `outcome` (an empty outcome
    /// stops them all) and returns the verdict of every probed instance.
    pub fn sync(
        self: &Arc<Self>,
        container: &str,
        container_name: &str,
        outcome: &Outcome,
    ) -> BTreeMap<String, Verdict> {
        let now = Instant::now();
        let mut spawn = Vec::new();
        let mut verdicts = BTreeMap::new();
        let mut inner = self.lock();
        for id in inner.ids_of(container) {
            if !outcome.probes.contains_key(&id) {
                inner.remove(&id);
            }
        }
        let heal_note = inner.heal_notes.get(container).cloned();
        for (id, probes) in &outcome.probes {
            // Same container, same checks: keep the tasks and their results. Anything else
            // (new checks, a new container IP, an id taken over by a recreated container)
            // starts afresh.
            let keep = inner
                .instances
                .get(id)
                .is_some_and(|t| t.container == container && t.probes == *probes);
            if !keep {
                inner.remove(id);
                inner.next_generation += 1;
                let generation = inner.next_generation;
                let cancel = self.cancel.child_token();
                let mut checks = BTreeMap::new();
                for spec in &probes.checks {
                    spawn.push((id.clone(), generation, spec.clone(), cancel.clone()));
                    checks.insert(
                        spec.name.clone(),
                        Check {
                            spec: spec.clone(),
                            thresholds: Thresholds::new(spec.rise, spec.fall),
                        },
                    );
                }
                let t = Tracked {
                    container: container.to_owned(),
                    container_name: container_name.to_owned(),
                    probes: probes.clone(),
                    autoheal: outcome.autoheal,
                    generation,
                    cancel,
                    checks,
                    critical_since: None,
                    reported: Verdict {
                        health: Health::critical(""),
                        withdrawn: false,
                        provisional: true,
                    },
                    reported_note: None,
                };
                inner.insert(id, t);
            }
            if let Some(t) = inner.instances.get_mut(id) {
                t.autoheal = outcome.autoheal;
                t.container_name = container_name.to_owned();
                if !keep || t.reported_note != heal_note {
                    t.reported = t.verdict(now, heal_note.as_deref());
                    t.reported_note = heal_note.clone();
                }
                verdicts.insert(id.clone(), t.reported.clone());
            }
        }
        drop(inner);
        for (id, generation, spec, cancel) in spawn {
            self.tracker
                .spawn(run_check(self.clone(), id, generation, spec, cancel));
        }
        verdicts
    }

    /// Takes one probe result of check `check` of instance `id` (from the task of
    /// `generation`). Returns the container to reconcile when the verdict changed, and a
    /// self-healing request when the check has failed often enough.
    fn report(
        &self,
        id: &str,
        generation: u64,
        check: &str,
        result: Health,
    ) -> (Option<String>, Option<heal::Request>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let Inner {
            instances,
            heal_notes,
            ..
        } = &mut *inner;
        let Some(t) = instances.get_mut(id).filter(|t| t.generation == generation) else {
            return (None, None);
        };
        let before = t.signature(now);
        let Some(c) = t.checks.get_mut(check) else {
            return (None, None);
        };
        c.thresholds.record(result);
        let failures = c.thresholds.failures();
        let heal =
            (t.autoheal && failures >= self.options.autoheal_failures).then(|| heal::Request {
                container: t.container.clone(),
                name: t.container_name.clone(),
                reason: format!(
                    "check {} failed {failures} times in a row: {}",
                    c.spec.name,
                    c.output()
                ),
            });
        let critical = t.checks.values().any(|c| c.status() == Status::Critical);
        t.critical_since = match (critical, t.critical_since) {
            (true, since) => since.or(Some(now)),
            (false, _) => None,
        };
        let changed = before != t.signature(now) || t.reported.withdrawn != t.withdrawn(now);
        if !changed {
            return (None, heal);
        }
        t.reported_note = heal_notes.get(&t.container).cloned();
        t.reported = t.verdict(now, t.reported_note.as_deref());
        debug!(service.id = %id, status = %t.reported.health.status, withdrawn = t.reported.withdrawn, "probe verdict changed");
        (Some(t.container.clone()), heal)
    }

    /// Stops every check of a container that no longer exists and forgets its restarts.
    pub fn forget(&self, container: &str) {
        let mut inner = self.lock();
        for id in inner.ids_of(container) {
            inner.remove(&id);
        }
        inner.heal_notes.remove(container);
    }

    /// Records a self-healing restart: the container's checks start afresh (a restarted
    /// container must fail `--autoheal-failures` times again), and its instances show `note`
    /// from their next reconcile, which the restart itself causes.
    pub fn restarted(&self, container: &str, note: String) {
        let mut inner = self.lock();
        for id in inner.ids_of(container) {
            inner.remove(&id);
        }
        inner.heal_notes.insert(container.to_owned(), note);
        drop(inner);
        // The restart's own events usually trigger this already; a full queue is caught by
        // the next resync.
        let _ = self.outlets.recheck.try_send(container.to_owned());
    }

    /// The self-healing note of `container`, for instances without checks (Docker health).
    pub fn heal_note(&self, container: &str) -> Option<String> {
        self.lock().heal_notes.get(container).cloned()
    }

    /// Asks for a reconcile of `container`; the reconciler reads the new verdict through
    /// `sync`.
    async fn trigger(&self, container: String, cancel: &CancellationToken) {
        // A closed channel means the agent is shutting down; so does `cancel`, which also
        // ends a wait on a full channel.
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = self.outlets.recheck.send(container) => {}
        }
    }

    /// Checks being run.
    #[cfg(test)]
    fn check_count(&self) -> usize {
        self.lock().instances.values().map(|t| t.checks.len()).sum()
    }
}

/// One check's loop: random first offset, then probe → report → jittered sleep.
async fn run_check<P: Probe>(
    prober: Arc<Prober<P>>,
    id: String,
    generation: u64,
    spec: CheckSpec,
    cancel: CancellationToken,
) {
    let mut delay = first_delay(spec.interval, &mut rand::rng());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe_once(&prober, &spec) => r,
        };
        let (trigger, heal) = prober.report(&id, generation, &spec.name, result);
        if let Some(req) = heal {
            heal::request(&prober.outlets.heal, req);
        }
        if let Some(container) = trigger {
            prober.trigger(container, &cancel).await;
        }
        delay = next_delay(spec.interval, &mut rand::rng());
    }
}

/// One probe, waiting for a permit first; the timeout covers the probe, not the wait.
async fn probe_once<P: Probe>(prober: &Prober<P>, spec: &CheckSpec) -> Health {
    let Ok(_permit) = prober.permits.acquire().await else {
        return Health::critical(format!("{}: prober closed", describe(&spec.kind)));
    };
    let started = Instant::now();
    let health = match tokio::time::timeout(spec.timeout, prober.probe.probe(spec)).await {
        Ok(h) => h,
        Err(_) => Health::critical(format!(
            "{}: timed out after {}",
            describe(&spec.kind),
            humantime::format_duration(spec.timeout)
        )),
    };
    prober
        .outlets
        .observe
        .metrics
        .probe(spec.kind.name(), health.status, started.elapsed());
    health
}

#[cfg(test)]
mod tests;
