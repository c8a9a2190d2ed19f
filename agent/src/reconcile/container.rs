//! One container's reconcile, level-triggered: inspect → [`labels::plan_container`] →
//! [`Prober::sync`](crate::probe::Prober::sync) (probe verdicts replace the health of probed
//! instances; withdrawn ones are left out) → a drain in progress makes every instance
//! critical → [`Store::plan_container`] → apply each write → record it. A labelled container
//! Docker calls unhealthy is also handed to self-healing.
//!
//! What an event proves takes the same plan-and-apply path without the inspect
//! ([`from_event`]): an exited or SIGKILLed container's instances are planned away, a
//! container sent its stop signal has its instances planned critical (a drain, lasting until
//! it exits or its stop timeout has passed). The controller then has the container inspected
//! as usual, so the registry converges on what Docker says; only an inspect that still
//! reports a SIGKILLed container running is not believed until its `die` (or
//! [`KILL_CONFIRM`]).
//!
//! [`Store::plan_container`]: super::store::Store::plan_container

use std::collections::BTreeSet;
use std::time::Duration;

use berth_registry::{Health, Instance, RegistryError};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Context;
use super::apply::apply;
use super::plan::Plan;
use super::store::Look;
use crate::docker::view::{ContainerView, DockerHealth};
use crate::docker::{Fact, short_id};
use crate::heal;
use crate::labels::{self, Level, Note, drain::signal_name};

/// How long a drain outlasts the container's stop timeout: Docker kills the container when
/// the timeout ends, and the kill, not the drain's end, should be what removes it.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long after a SIGKILL an inspect that still reports the container running is not
/// believed (Docker updates its state at the `die`, a few milliseconds later); if no `die`
/// comes by then, the kill did not take, and the inspect decides.
pub const KILL_CONFIRM: Duration = Duration::from_secs(2);

/// How a container's reconcile ended, for the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The registry holds what the container wants (or all that it will take).
    Converged,
    /// A write the registry refused is parked; try again after this long.
    Parked(Duration),
    /// Something failed that may pass (Docker or the registry unavailable, an id still held
    /// by a predecessor): retry with backoff.
    Retry,
    /// Converged for now; look again after this long (a drain lapses then).
    Again(Duration),
    /// Stopped before it wrote anything, because an event proved something newer: the
    /// controller runs the container again at once.
    Preempted,
}

impl Outcome {
    /// The more urgent of two outcomes: a retry beats a later look; of two later looks the
    /// earlier wins, and is a park if either was one.
    fn and(self, other: Outcome) -> Outcome {
        use Outcome::*;
        match (self, other) {
            (Preempted, _) | (_, Preempted) => Preempted,
            (Retry, _) | (_, Retry) => Retry,
            (Converged, o) | (o, Converged) => o,
            (Parked(a), Parked(b) | Again(b)) | (Again(a), Parked(b)) => Parked(a.min(b)),
            (Again(a), Again(b)) => Again(a.min(b)),
        }
    }
}

/// Reconciles `id`: from what `fact` proves when it proves something (at once, no Docker
/// call), or else from an inspect, once a permit is free. `since`: when the Docker event that
/// asked for this reconcile arrived, if one did; its first successful write is timed from
/// then. Returns the outcome, and `since` again when no write succeeded (a retry times from
/// it). `preempt` stops the wait for a permit or an inspect ([`Outcome::Preempted`]).
pub async fn reconcile_container(
    ctx: &Context,
    id: &str,
    permits: &Semaphore,
    since: Option<Instant>,
    fact: Option<Fact>,
    preempt: &CancellationToken,
) -> (Outcome, Option<Instant>) {
    let span = info_span!("reconcile", container = %short_id(id));
    let started = Instant::now();
    let mut since = since;
    let (outcome, writes) = match fact {
        // Not behind the permits: they bound inspects, and a slow inspect must not delay
        // what an event already proved.
        Some(fact @ (Fact::Exited | Fact::Killed | Fact::Signalled(_))) => {
            from_event(ctx, id, fact, &mut since).instrument(span).await
        }
        _ => {
            let permit = tokio::select! {
                permit = permits.acquire() => permit,
                _ = preempt.cancelled() => return (Outcome::Preempted, since),
            };
            let Ok(_permit) = permit else {
                // Shutting down: the permits are closed.
                return (Outcome::Converged, None);
            };
            if fact == Some(Fact::Started) {
                // A container that starts is not being stopped or killed any more.
                ctx.store.end_drain(id);
                ctx.store.end_kill(id);
            }
            reconcile(ctx, id, &mut since, preempt)
                .instrument(span)
                .await
        }
    };
    if outcome == Outcome::Preempted {
        return (outcome, since);
    }
    let metrics = &ctx.observe.metrics;
    metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    metrics.reconcile_writes.observe(writes as f64);
    (outcome, since)
}

/// Reconciles `id` from an inspect; returns the outcome and the number of writes sent. The
/// first write that succeeds takes `since` and observes the event-to-write latency.
async fn reconcile(
    ctx: &Context,
    id: &str,
    since: &mut Option<Instant>,
    preempt: &CancellationToken,
) -> (Outcome, usize) {
    let inspected = tokio::select! {
        inspected = ctx.docker.inspect(id) => inspected,
        // An event proved something newer than this inspect can tell (Docker answers the
        // inspect of a dying container only once it is torn down).
        _ = preempt.cancelled() => return (Outcome::Preempted, 0),
    };
    if let Ok(Some(view)) = &inspected
        && view.running
        && let Some(until) = ctx.store.killed(id, Instant::now())
    {
        // Killed, and Docker has not caught up yet: wait for its `die`.
        debug!("container killed but still reported running; waiting for its die");
        return (Outcome::Again(until - Instant::now()), 0);
    }
    let (mut outcome, name, image) = match inspected {
        Ok(Some(view)) => {
            let outcome = labels::plan_container(&view, &ctx.settings);
            if outcome.autoheal {
                request_heal_if_unhealthy(ctx, &view);
            }
            (outcome, view.name, view.image)
        }
        // Gone: nothing is desired, so whatever it registered is removed.
        Ok(None) => {
            ctx.prober.forget(id);
            ctx.store.forget(id);
            (labels::Outcome::default(), String::new(), String::new())
        }
        Err(e) => {
            warn!(error = %crate::telemetry::chain(&e), "cannot inspect container; will retry");
            return (Outcome::Retry, 0);
        }
    };
    let (withdrawn, mut provisional) = apply_verdicts(ctx, id, &name, &mut outcome);
    let lapses = apply_drain(ctx, id, &mut outcome, &mut provisional);
    if !name.is_empty() {
        record_look(ctx, id, name, image, &outcome, withdrawn);
    }

    let plan = ctx
        .store
        .plan_container(&ctx.settings.node, id, &outcome.instances, &provisional);
    let (result, writes) = execute(ctx, id, plan, since).await;
    match lapses {
        Some(after) => (result.and(Outcome::Again(after)), writes),
        None => (result, writes),
    }
}

/// Plans and applies what `fact` proves about container `id`, without asking Docker: an
/// exited container's instances are planned away; a container sent its stop signal (and
/// drained) has its registered instances planned critical until it exits. Any other signal,
/// or a container berth knows no drain for, plans nothing.
async fn from_event(
    ctx: &Context,
    id: &str,
    fact: Fact,
    since: &mut Option<Instant>,
) -> (Outcome, usize) {
    let desired: Vec<Instance> = match fact {
        Fact::Exited => {
            ctx.store.end_drain(id);
            ctx.store.end_kill(id);
            Vec::new()
        }
        Fact::Killed => {
            ctx.store.end_drain(id);
            ctx.store.kill(id, Instant::now() + KILL_CONFIRM);
            let plan = ctx
                .store
                .plan_container(&ctx.settings.node, id, &[], &BTreeSet::new());
            let (outcome, writes) = execute(ctx, id, plan, since).await;
            // Look again if the `die` does not come.
            return (outcome.and(Outcome::Again(KILL_CONFIRM)), writes);
        }
        Fact::Signalled(signal) => {
            let Some(drain) = ctx.store.drain_of(id).filter(|d| d.signal == signal) else {
                return (Outcome::Converged, 0);
            };
            let now = Instant::now();
            ctx.store
                .start_drain(id, signal, now + drain.timeout + DRAIN_GRACE);
            let owned = ctx.store.owned_of(id);
            info!(
                container = short_id(id),
                signal = %signal_name(signal),
                instances = owned.len(),
                stop_timeout = ?drain.timeout,
                "container is stopping; draining its instances"
            );
            owned
                .into_iter()
                .map(|mut i| {
                    i.health = drain_health(&i.origin.container_name, signal);
                    i
                })
                .collect()
        }
        Fact::Started => return (Outcome::Converged, 0),
    };
    let plan = ctx
        .store
        .plan_container(&ctx.settings.node, id, &desired, &BTreeSet::new());
    execute(ctx, id, plan, since).await
}

/// The health of a draining instance.
fn drain_health(container: &str, signal: i32) -> Health {
    Health::critical(format!(
        "berth: container {container} is stopping ({}); drained until it exits",
        signal_name(signal)
    ))
}

/// A drain in progress makes every instance of a running container critical (and the
/// provisional health of none kept); returns how long until it lapses. A container that no
/// longer runs ends its drain.
fn apply_drain(
    ctx: &Context,
    id: &str,
    outcome: &mut labels::Outcome,
    provisional: &mut BTreeSet<String>,
) -> Option<Duration> {
    if outcome.instances.is_empty() {
        ctx.store.end_drain(id);
        return None;
    }
    let now = Instant::now();
    let draining = ctx.store.draining(id, now)?;
    for i in &mut outcome.instances {
        i.health = drain_health(&i.origin.container_name, draining.signal);
        provisional.remove(&i.id);
    }
    Some(draining.until - now)
}

/// Applies `plan`'s writes for container `id` (parked writes wait for their park to end);
/// returns the outcome and the number of writes sent.
async fn execute(
    ctx: &Context,
    id: &str,
    plan: Plan,
    since: &mut Option<Instant>,
) -> (Outcome, usize) {
    ctx.store.keep_parked(id, plan.ops.iter().map(|op| op.id()));
    let mut result = Outcome::Converged;
    let mut writes = 0;
    for c in &plan.conflicts {
        // An id held by another container of this node is usually a container recreated
        // under the same name whose predecessor is being deregistered right now.
        if ctx.store.holder(&c.id).is_some_and(|holder| holder != id) {
            debug!(service.id = %c.id, "id still held by another container of this node; retrying");
            result = result.and(Outcome::Retry);
        } else {
            warn!(service.id = %c.id, reason = c.reason, "not registered");
        }
    }
    for op in plan.ops {
        let now = Instant::now();
        if let Some(until) = ctx.store.parked_until(&op, now) {
            result = result.and(Outcome::Parked(until - now));
            continue;
        }
        writes += 1;
        match apply(ctx, id, &op).await {
            Ok(()) => {
                ctx.store.unpark(op.id());
                if let Some(at) = since.take() {
                    ctx.observe
                        .metrics
                        .event_to_write
                        .observe(at.elapsed().as_secs_f64());
                }
            }
            // Lost meanwhile (`NotFound`), or the registry is down: try again soon.
            Err(e @ (RegistryError::NotFound { .. } | RegistryError::Unavailable { .. })) => {
                warn!(service.id = %op.id(), error = %crate::telemetry::chain(&e), "registry write failed; will retry");
                result = result.and(Outcome::Retry);
            }
            // Refused: retrying at the outage rate would only repeat the refusal.
            Err(e) => {
                let reason = crate::telemetry::chain(&e);
                let until = ctx.store.park(id, &op, &reason, now);
                warn!(service.id = %op.id(), error = %reason, retry_in = ?(until - now), "registry refused the write; parked");
                result = result.and(Outcome::Parked(until - now));
            }
        }
    }
    (result, writes)
}

/// Keeps what this reconcile decided for the status output (the label notes, then the notes
/// of instances withdrawn for their health), and logs the decision when it changed: each
/// label note once, and one line for a container that registers nothing.
fn record_look(
    ctx: &Context,
    id: &str,
    name: String,
    image: String,
    outcome: &labels::Outcome,
    withdrawn: Vec<Note>,
) {
    let mut notes = outcome.notes.clone();
    notes.extend(withdrawn.iter().cloned());
    let look = Look {
        name,
        image,
        skipped: outcome.skipped,
        desired: outcome.instances.clone(),
        notes,
        drain: outcome.drain,
    };
    let before = ctx.store.look(id, look.clone());
    let (old_notes, old_skip) = match &before {
        Some(b) => (b.notes.as_slice(), b.skipped),
        None => (&[][..], None),
    };
    let container = short_id(id);
    let name = look.name.as_str();
    for note in outcome.notes.iter().filter(|n| !old_notes.contains(n)) {
        let key = note.key.as_ref().map(|k| k.name.as_str());
        match note.level {
            Level::Warn => {
                ctx.observe.metrics.label_errors.inc();
                warn!(container, container.name = %name, label = key, note = %note.message, "label problem")
            }
            Level::Info => {
                debug!(container, container.name = %name, label = key, note = %note.message, "label note")
            }
        }
    }
    for note in withdrawn.iter().filter(|n| !old_notes.contains(n)) {
        info!(container, container.name = %name, note = %note.message, "instance withdrawn");
    }
    if let Some(skip) = look.skipped
        && old_skip != Some(skip)
    {
        // The notes say why in words; the note that decided it (the gate's, or the last
        // stage's) comes last.
        let why = outcome
            .notes
            .last()
            .map(|n| n.message.as_str())
            .unwrap_or_default();
        info!(container, container.name = %look.name, reason = skip.code(), why, "container skipped; it registers nothing");
    }
}

/// A Docker HEALTHCHECK that reports unhealthy asks self-healing for a restart.
fn request_heal_if_unhealthy(ctx: &Context, view: &ContainerView) {
    let Some(DockerHealth::Unhealthy(out)) = &view.health else {
        return;
    };
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
            container: view.id.clone(),
            name: view.name.clone(),
            reason,
        },
    );
}

/// Puts each probed instance's verdict on it, and leaves out the withdrawn ones; returns a
/// note for each of those, and the ids whose health is only provisional (no probe result
/// yet: see [`Verdict::provisional`](crate::probe::Verdict::provisional)).
fn apply_verdicts(
    ctx: &Context,
    id: &str,
    name: &str,
    outcome: &mut labels::Outcome,
) -> (Vec<Note>, BTreeSet<String>) {
    let verdicts = ctx.prober.sync(id, name, outcome);
    // Instances without checks (Docker's health) show a self-healing restart too; probed
    // ones carry it in their verdict.
    let heal_note = ctx.prober.heal_note(id);
    let mut withdrawn = Vec::new();
    let mut provisional = BTreeSet::new();
    outcome.instances.retain_mut(|i| match verdicts.get(&i.id) {
        Some(v) if v.withdrawn => {
            withdrawn.push(i.id.clone());
            false
        }
        Some(v) => {
            i.health = v.health.clone();
            if v.provisional {
                provisional.insert(i.id.clone());
            }
            true
        }
        None => {
            if let Some(note) = &heal_note {
                let output = format!("{}\n{note}", i.health.output);
                i.health.output = berth_registry::limits::truncate_output(&output).to_owned();
            }
            true
        }
    });
    let notes = withdrawn
        .into_iter()
        .map(|w| {
            Note::warn(format!(
                "instance {w} has been critical longer than its deregister_after; withdrawn \
                 until its checks pass again"
            ))
        })
        .collect();
    (notes, provisional)
}
