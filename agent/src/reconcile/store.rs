//! What this node owns in the registry, as last written or read, plus the heartbeat schedule,
//! the writes the registry refused (parked), what the latest reconcile of each container
//! decided ([`Look`], for the status output), and the containers being drained.
//!
//! One `std::sync::Mutex` guards it; no lock is ever held across I/O. Reconcile workers
//! record each successful write here, snapshots replace it wholesale, and the heartbeater
//! takes due instances from the schedule (mini-redis' `BTreeSet<(Instant, key)>` shape, with a
//! [`Notify`] so an earlier deadline wakes the heartbeater).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use berth_registry::{Health, Instance, Listing};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::plan::{Op, Plan, plan};
use crate::backoff::Backoff;
use crate::labels::{Drain, Note, Skip};

/// What the latest reconcile of a container decided, for `/v1/status` and the status page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Look {
    pub name: String,
    pub image: String,
    /// Why it registers nothing, when it does not.
    pub skipped: Option<Skip>,
    /// The instances it should have, with their current health (probe verdicts applied).
    pub desired: Vec<Instance>,
    pub notes: Vec<Note>,
    /// How the container is drained when it is stopped, if it is.
    pub drain: Option<Drain>,
}

/// A container Docker has sent its stop signal: its instances are critical until it exits,
/// or until `until` if it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draining {
    pub signal: i32,
    pub until: Instant,
}

/// A copy of the store's state for the status output, taken under the lock in one go.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// By container id.
    pub looks: BTreeMap<String, Look>,
    /// Owned instances, by id.
    pub owned: BTreeMap<String, Instance>,
    /// Parked writes, by instance id.
    pub parked: BTreeMap<String, Parked>,
    /// Drains in progress, by container id.
    pub draining: BTreeMap<String, Draining>,
}

/// A write the registry refused (an id another owner holds, a value it will not take). It is
/// not tried again before `until`, unless the write wanted changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    pub container: String,
    pub op: Op,
    /// The registry's answer, as one line.
    pub reason: String,
    /// When it was first refused.
    pub since: Instant,
    pub until: Instant,
    /// Refusals in a row of this same write.
    pub refusals: u32,
}

/// True when `a` and `b` would write the same thing (a registration's health aside: it goes
/// with the registration either way).
fn same_write(a: &Op, b: &Op) -> bool {
    match (a, b) {
        (Op::Register(a), Op::Register(b)) => a.same_registration(b),
        _ => a == b,
    }
}

#[derive(Debug, Default)]
struct Inner {
    instances: HashMap<String, Instance>,
    by_container: HashMap<String, BTreeSet<String>>,
    foreign: BTreeSet<String>,
    /// Owned ids the registry drops unless written again (see `Listing::stale`).
    stale: BTreeSet<String>,
    schedule: BTreeSet<(Instant, String)>,
    due_at: HashMap<String, Instant>,
    looks: HashMap<String, Look>,
    /// By instance id.
    parked: BTreeMap<String, Parked>,
    /// By container id.
    draining: HashMap<String, Draining>,
    /// Containers sent SIGKILL whose `die` has not come yet, until when that is waited for.
    killed: HashMap<String, Instant>,
}

impl Inner {
    fn unschedule(&mut self, id: &str) {
        if let Some(at) = self.due_at.remove(id) {
            self.schedule.remove(&(at, id.to_owned()));
        }
    }

    fn schedule(&mut self, id: &str, at: Instant) {
        self.unschedule(id);
        self.due_at.insert(id.to_owned(), at);
        self.schedule.insert((at, id.to_owned()));
    }

    fn remove(&mut self, id: &str) -> Option<Instance> {
        self.stale.remove(id);
        let removed = self.instances.remove(id)?;
        self.unschedule(id);
        let container = &removed.origin.container_id;
        if let Some(ids) = self.by_container.get_mut(container) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_container.remove(container);
            }
        }
        Some(removed)
    }

    fn owned_of(&self, container: &str) -> Vec<Instance> {
        self.by_container
            .get(container)
            .into_iter()
            .flatten()
            .filter_map(|id| self.instances.get(id).cloned())
            .collect()
    }

    fn insert(&mut self, instance: Instance, beat_at: Instant) {
        let id = instance.id.clone();
        self.remove(&id);
        self.by_container
            .entry(instance.origin.container_id.clone())
            .or_default()
            .insert(id.clone());
        self.instances.insert(id.clone(), instance);
        self.schedule(&id, beat_at);
    }
}

/// The owned-state store shared by the reconciler and the heartbeater.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    wake: Notify,
    beat_every: Duration,
}

impl Store {
    /// `beat_every` is the heartbeat interval (ttl/3).
    pub fn new(beat_every: Duration) -> Store {
        Store {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            beat_every,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in the critical sections can panic half-way through an update.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Plans the writes for one container against what this node owns for it. The health of
    /// the `provisional` ids (no probe result yet) does not overwrite the registered one.
    pub fn plan_container(
        &self,
        node: &str,
        container: &str,
        desired: &[Instance],
        provisional: &BTreeSet<String>,
    ) -> Plan {
        let inner = self.lock();
        let owned = inner.owned_of(container);
        plan(
            node,
            desired,
            &owned,
            |id| inner.foreign.contains(id) || inner.instances.contains_key(id),
            |id| inner.stale.contains(id),
            |id| provisional.contains(id),
        )
    }

    /// Replaces everything with a fresh registry listing (a snapshot). Known instances keep
    /// their heartbeat slot; new ones are heartbeated at once.
    pub fn replace(&self, listing: Listing) {
        let now = Instant::now();
        let mut inner = self.lock();
        let previous = std::mem::take(&mut inner.due_at);
        inner.instances.clear();
        inner.by_container.clear();
        inner.schedule.clear();
        inner.foreign = listing.foreign_ids;
        for instance in listing.owned {
            let at = previous.get(&instance.id).copied().unwrap_or(now);
            inner.insert(instance, at);
        }
        inner.stale = listing.stale;
        drop(inner);
        self.wake.notify_one();
    }

    /// Records a successful registration (which started its TTL); its first heartbeat is due
    /// one interval later.
    pub fn registered(&self, instance: Instance) {
        self.lock()
            .insert(instance, Instant::now() + self.beat_every);
        self.wake.notify_one();
    }

    /// Records a successful deregistration.
    pub fn deregistered(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Records a health report that reached the registry. The heartbeat schedule is not
    /// touched: health and liveness are written apart.
    pub fn health_reported(&self, id: &str, health: Health) {
        if let Some(i) = self.lock().instances.get_mut(id) {
            i.health = health;
        }
    }

    /// Forgets an instance the registry lost; returns its container so it can be reconciled
    /// (and so registered again).
    pub fn lost(&self, id: &str) -> Option<String> {
        self.lock().remove(id).map(|i| i.origin.container_id)
    }

    /// The earliest heartbeat deadline.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().schedule.first().map(|(at, _)| *at)
    }

    /// Takes every instance due at `now` and schedules its next beat.
    pub fn take_due(&self, now: Instant) -> Vec<String> {
        let next = now + self.beat_every;
        let mut inner = self.lock();
        let mut due = Vec::new();
        while let Some((at, id)) = inner.schedule.first().cloned() {
            if at > now {
                break;
            }
            inner.schedule(&id, next);
            if inner.instances.contains_key(&id) {
                due.push(id);
            }
        }
        due
    }

    /// Resolves when a new deadline may be earlier than the one being waited for.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// The container that holds instance `id` on this node, if any.
    pub fn holder(&self, id: &str) -> Option<String> {
        self.lock()
            .instances
            .get(id)
            .map(|i| i.origin.container_id.clone())
    }

    /// Every container this node owns instances for.
    pub fn containers(&self) -> Vec<String> {
        self.lock().by_container.keys().cloned().collect()
    }

    /// Every owned instance id.
    pub fn ids(&self) -> Vec<String> {
        self.lock().instances.keys().cloned().collect()
    }

    /// When the same write as `op` was refused and is parked past `now`: until when.
    pub fn parked_until(&self, op: &Op, now: Instant) -> Option<Instant> {
        let inner = self.lock();
        let p = inner.parked.get(op.id())?;
        (p.until > now && same_write(&p.op, op)).then_some(p.until)
    }

    /// Records that the registry refused `op` (for `container`) with `reason`; returns when it
    /// may be tried again. The same write refused again waits longer each time.
    pub fn park(&self, container: &str, op: &Op, reason: &str, now: Instant) -> Instant {
        let mut inner = self.lock();
        let (refusals, since) = match inner.parked.get(op.id()) {
            Some(p) if same_write(&p.op, op) => (p.refusals + 1, p.since),
            _ => (1, now),
        };
        let until = now + Backoff::PARKED.delay(refusals, &mut rand::rng());
        inner.parked.insert(
            op.id().to_owned(),
            Parked {
                container: container.to_owned(),
                op: op.clone(),
                reason: reason.to_owned(),
                since,
                until,
                refusals,
            },
        );
        until
    }

    /// The write for instance `id` went through.
    pub fn unpark(&self, id: &str) {
        self.lock().parked.remove(id);
    }

    /// Ends the parks of `container` whose instance it no longer writes.
    pub fn keep_parked<'a>(&self, container: &str, wanted: impl IntoIterator<Item = &'a str>) {
        let wanted: BTreeSet<&str> = wanted.into_iter().collect();
        self.lock()
            .parked
            .retain(|id, p| p.container != container || wanted.contains(id.as_str()));
    }

    /// Every parked write, by instance id.
    pub fn parked(&self) -> Vec<Parked> {
        self.lock().parked.values().cloned().collect()
    }

    /// Stores what a container's latest reconcile decided; returns what it decided before
    /// (so notes are logged once when they change, not on every resync).
    pub fn look(&self, container: &str, look: Look) -> Option<Look> {
        self.lock().looks.insert(container.to_owned(), look)
    }

    /// The name of an owned instance.
    pub fn name_of(&self, id: &str) -> Option<String> {
        self.lock().instances.get(id).map(|i| i.name.clone())
    }

    /// Every container a reconcile has looked at and not yet found gone.
    pub fn looked(&self) -> Vec<String> {
        self.lock().looks.keys().cloned().collect()
    }

    /// Forgets a container that no longer exists.
    pub fn forget(&self, container: &str) {
        let mut inner = self.lock();
        inner.looks.remove(container);
        inner.draining.remove(container);
        inner.killed.remove(container);
    }

    /// Every instance this node owns for `container`, as last written or read.
    pub fn owned_of(&self, container: &str) -> Vec<Instance> {
        self.lock().owned_of(container)
    }

    /// How `container` is drained, as its latest reconcile found.
    pub fn drain_of(&self, container: &str) -> Option<Drain> {
        self.lock().looks.get(container).and_then(|l| l.drain)
    }

    /// Records that `container` was sent its stop signal `signal`; its drain lasts until it
    /// exits, or until `until`.
    pub fn start_drain(&self, container: &str, signal: i32, until: Instant) {
        self.lock()
            .draining
            .insert(container.to_owned(), Draining { signal, until });
    }

    /// The drain of `container` in progress at `now`; a lapsed one is ended.
    pub fn draining(&self, container: &str, now: Instant) -> Option<Draining> {
        let mut inner = self.lock();
        match inner.draining.get(container) {
            Some(d) if d.until > now => Some(*d),
            Some(_) => {
                inner.draining.remove(container);
                None
            }
            None => None,
        }
    }

    /// Records that `container` was sent SIGKILL: until its `die`, or `until`, an inspect that
    /// still reports it running is not believed.
    pub fn kill(&self, container: &str, until: Instant) {
        self.lock().killed.insert(container.to_owned(), until);
    }

    /// Until when an inspect of `container` reporting it running is not believed, if it was
    /// sent SIGKILL and neither exited nor started since.
    pub fn killed(&self, container: &str, now: Instant) -> Option<Instant> {
        let mut inner = self.lock();
        match inner.killed.get(container) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                inner.killed.remove(container);
                None
            }
            None => None,
        }
    }

    /// Forgets a SIGKILL: the container exited, or started again.
    pub fn end_kill(&self, container: &str) {
        self.lock().killed.remove(container);
    }

    /// Ends the drain of `container`: it exited, or runs again.
    pub fn end_drain(&self, container: &str) {
        self.lock().draining.remove(container);
    }

    /// A copy of everything the status output shows. The lock is held only for the copy.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            looks: inner
                .looks
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            owned: inner
                .instances
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            parked: inner.parked.clone(),
            draining: inner
                .draining
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use berth_registry::Status;

    fn inst(id: &str, container: &str) -> Instance {
        let mut i = berth_registry::contract::instance("n", id, "svc", Health::passing("ok"));
        i.origin.container_id = container.into();
        i
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_every_interval() {
        let store = Store::new(Duration::from_secs(5));
        store.registered(inst("a", "c1"));
        let t0 = Instant::now();
        let beat = Duration::from_secs(5);
        assert_eq!(
            store.next_due(),
            Some(t0 + beat),
            "registering started the TTL: first beat one interval later"
        );
        assert!(store.take_due(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(store.take_due(t0 + beat), vec!["a".to_owned()]);
        assert_eq!(store.next_due(), Some(t0 + beat * 2));
        // A health report does not move the heartbeat.
        store.health_reported("a", Health::critical("down"));
        assert_eq!(store.next_due(), Some(t0 + beat * 2));
        tokio::time::advance(beat * 2).await;
        assert_eq!(store.take_due(Instant::now()), vec!["a".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn deregistered_and_lost_instances_stop_beating() {
        let store = Store::new(Duration::from_secs(5));
        store.registered(inst("a", "c1"));
        store.registered(inst("b", "c1"));
        store.deregistered("a");
        assert_eq!(store.lost("b"), Some("c1".to_owned()));
        assert_eq!(store.lost("b"), None);
        assert_eq!(store.next_due(), None);
        assert!(store.containers().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn plan_for_a_container_sees_only_its_instances_and_guards_other_ids() {
        let store = Store::new(Duration::from_secs(5));
        store.registered(inst("a", "c1"));
        store.registered(inst("b", "c2"));
        // c1 no longer wants "a"; it wants "b", which c2 already registered.
        let p = store.plan_container("n", "c1", &[inst("b", "c1")], &BTreeSet::new());
        assert_eq!(
            p.ops,
            vec![super::super::plan::Op::Deregister { id: "a".into() }]
        );
        assert_eq!(p.conflicts.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn replace_keeps_slots_of_known_instances() {
        let store = Store::new(Duration::from_secs(5));
        store.registered(inst("a", "c1"));
        let slot = store.next_due().unwrap();
        let mut listing = Listing::default();
        listing.owned.push(inst("a", "c1"));
        let mut fresh = inst("new", "c3");
        fresh.health = Health {
            status: Status::Critical,
            output: String::new(),
        };
        listing.owned.push(fresh);
        listing.foreign_ids.insert("theirs".into());
        store.replace(listing);
        assert_eq!(
            store.next_due(),
            Some(Instant::now()),
            "new instance beats at once"
        );
        let due = store.take_due(Instant::now());
        assert_eq!(due, vec!["new".to_owned()]);
        assert_eq!(store.next_due(), Some(slot));
        let p = store.plan_container("n", "c9", &[inst("theirs", "c9")], &BTreeSet::new());
        assert!(p.ops.is_empty() && p.conflicts.len() == 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_instances_are_planned_again_until_written() {
        let store = Store::new(Duration::from_secs(5));
        let mut listing = Listing::default();
        listing.owned.push(inst("a", "c1"));
        listing.stale.insert("a".into());
        store.replace(listing);
        let want = vec![super::super::plan::Op::Register(inst("a", "c1"))];
        assert_eq!(
            store
                .plan_container("n", "c1", &[inst("a", "c1")], &BTreeSet::new())
                .ops,
            want
        );
        store.registered(inst("a", "c1"));
        assert!(
            store
                .plan_container("n", "c1", &[inst("a", "c1")], &BTreeSet::new())
                .ops
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_write_waits_and_waits_longer_when_refused_again() {
        let store = Store::new(Duration::from_secs(5));
        let op = super::super::plan::Op::Register(inst("a", "c1"));
        let t0 = Instant::now();
        let first = store.park("c1", &op, "refused", t0);
        let min = Backoff::PARKED.min;
        assert!(
            first >= t0 + min / 2 && first <= t0 + min,
            "{:?}",
            first - t0
        );
        assert_eq!(store.parked_until(&op, t0), Some(first));
        // The same registration with another health is the same write.
        let mut sick = inst("a", "c1");
        sick.health = Health::critical("down");
        let same = super::super::plan::Op::Register(sick);
        assert_eq!(store.parked_until(&same, t0), Some(first));
        // A changed registration is tried at once.
        let mut moved = inst("a", "c1");
        moved.port = 81;
        let other = super::super::plan::Op::Register(moved);
        assert_eq!(store.parked_until(&other, t0), None);
        // Past the park it may be tried; refused again it waits longer.
        assert_eq!(store.parked_until(&op, first), None);
        let second = store.park("c1", &op, "refused", first);
        assert!(second - first >= min, "{:?}", second - first);
        assert_eq!(store.parked()[0].refusals, 2);
        assert_eq!(store.parked()[0].since, t0);
        // A container that no longer writes the instance ends its park.
        store.keep_parked("c1", []);
        assert!(store.parked().is_empty());
    }

    #[test]
    fn looks_are_replaced_and_gone_containers_forgotten() {
        let store = Store::new(Duration::from_secs(5));
        let look = |notes: Vec<Note>, skipped| Look {
            name: "web".into(),
            image: "img".into(),
            skipped,
            desired: vec![],
            notes,
            drain: None,
        };
        let n = vec![Note::warn("bad")];
        assert_eq!(store.look("c", look(n.clone(), None)), None);
        assert_eq!(
            store.look("c", look(vec![], Some(Skip::Paused))),
            Some(look(n, None))
        );
        assert_eq!(store.snapshot().looks.len(), 1);
        store.forget("c");
        assert!(store.snapshot().looks.is_empty());
    }
}
