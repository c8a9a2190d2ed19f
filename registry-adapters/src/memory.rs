//! An in-process registry with the same contract as the real backends (`contract` runs
//! against it as against Consul and etcd), plus what tests of the reconcile logic need:
//! faults on demand and a record of every call.
//!
//! Handles are per node and share one store: [`MemoryRegistry::new`] makes a store and its
//! first node, [`MemoryRegistry::for_node`] another node on the same store. Clones share
//! everything. It never replaces the real-service tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::RegistryError;
use crate::instance::{Health, Instance, Listing, Status};

/// One stored entry: berth's instance (of any node) or another tool's bare id.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // test data, clarity over size
pub enum Entry {
    Berth(Instance),
    Foreign,
}

/// A registry operation, as recorded in [`Call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Register,
    Deregister,
    Heartbeat,
    SetHealth,
    Lookup,
}

/// One call a handle received, failed ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// When it was made (tokio time, so paused-time tests can read the gaps).
    pub at: Instant,
    /// The node of the handle that made it.
    pub node: String,
    pub op: Op,
    /// The instance id (the service name for a lookup, empty for a listing).
    pub id: String,
    pub ok: bool,
}

/// Successful write counters, for assertions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Writes {
    pub registers: usize,
    pub deregisters: usize,
    pub heartbeats: usize,
    pub health_updates: usize,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    calls: Vec<Call>,
    unavailable: bool,
    /// Ids whose registration is refused, with the reason.
    rejected: BTreeMap<String, String>,
    /// How long each coming listing waits after reading the state, in order.
    list_delays: VecDeque<Duration>,
}

/// One node's handle on a shared in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    node: String,
    state: Arc<Mutex<State>>,
    /// Woken by [`MemoryRegistry::expire_lease`]; `maintain` passes it on.
    lease_lost: Arc<Notify>,
}

impl MemoryRegistry {
    /// A new, empty store and the handle of `node` on it.
    pub fn new(node: &str) -> Self {
        MemoryRegistry {
            node: node.to_owned(),
            state: Arc::default(),
            lease_lost: Arc::default(),
        }
    }

    /// The handle of another node on the same store.
    pub fn for_node(&self, node: &str) -> Self {
        MemoryRegistry {
            node: node.to_owned(),
            state: self.state.clone(),
            lease_lost: Arc::default(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn describe(&self) -> String {
        format!("in-memory registry (node {})", self.node)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test panicked while holding it; the data is still fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an entry some other tool owns.
    pub fn insert_foreign(&self, id: &str) {
        self.state().entries.insert(id.to_owned(), Entry::Foreign);
    }

    /// Adds a berth entry directly, as another node (or a previous run) would have.
    pub fn insert_instance(&self, instance: Instance) {
        self.state()
            .entries
            .insert(instance.id.clone(), Entry::Berth(instance));
    }

    /// Forgets everything, as a Consul dev agent does on restart.
    pub fn clear(&self) {
        self.state().entries.clear();
    }

    /// Drops every instance of this node at once and has [`maintain`](Self::maintain) report
    /// it, as an etcd lease that expired takes all of an agent's keys with it.
    pub fn expire_lease(&self) {
        let node = self.node.clone();
        self.state()
            .entries
            .retain(|_, e| !matches!(e, Entry::Berth(i) if i.origin.node == node));
        self.lease_lost.notify_one();
    }

    /// Makes every call fail as if the registry were down (`true`) or answers again.
    pub fn set_unavailable(&self, down: bool) {
        self.state().unavailable = down;
    }

    /// Refuses every registration of `id` with `reason`, as a registry refuses a value it
    /// will never accept.
    pub fn reject(&self, id: &str, reason: &str) {
        self.state()
            .rejected
            .insert(id.to_owned(), reason.to_owned());
    }

    /// Accepts `id` again after [`reject`](Self::reject).
    pub fn accept(&self, id: &str) {
        self.state().rejected.remove(id);
    }

    /// The next listing reads the state at once but answers only `delay` later, like a
    /// listing still in flight while writes go on.
    pub fn delay_next_list(&self, delay: Duration) {
        self.state().list_delays.push_back(delay);
    }

    pub fn get(&self, id: &str) -> Option<Entry> {
        self.state().entries.get(id).cloned()
    }

    /// All berth instances, of every node.
    pub fn instances(&self) -> Vec<Instance> {
        self.state()
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Berth(i) => Some(i.clone()),
                Entry::Foreign => None,
            })
            .collect()
    }

    /// Every call made through any handle of this store, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Successful write calls through any handle of this store (a deregister of an id that
    /// is not the caller's succeeds, changes nothing, and counts).
    pub fn writes(&self) -> Writes {
        let mut w = Writes::default();
        for c in self.state().calls.iter().filter(|c| c.ok) {
            match c.op {
                Op::Register => w.registers += 1,
                Op::Deregister => w.deregisters += 1,
                Op::Heartbeat => w.heartbeats += 1,
                Op::SetHealth => w.health_updates += 1,
                Op::List | Op::Lookup => {}
            }
        }
        w
    }

    /// How many successful register calls `id` received.
    pub fn registers_of(&self, id: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| c.ok && c.op == Op::Register && c.id == id)
            .count()
    }

    /// Records the call and fails it when the store is switched off.
    fn enter(&self, state: &mut State, op: Op, id: &str) -> Result<(), RegistryError> {
        let ok = !state.unavailable;
        state.calls.push(Call {
            at: Instant::now(),
            node: self.node.clone(),
            op,
            id: id.to_owned(),
            ok,
        });
        if ok {
            return Ok(());
        }
        Err(RegistryError::Unavailable {
            message: "memory registry switched off".into(),
            source: None,
        })
    }

    /// Marks the call just recorded as failed.
    fn failed(state: &mut State) {
        if let Some(last) = state.calls.last_mut() {
            last.ok = false;
        }
    }

    fn is_mine(&self, entry: Option<&Entry>) -> bool {
        matches!(entry, Some(Entry::Berth(i)) if i.origin.node == self.node)
    }

    pub(crate) async fn list(&self) -> Result<Listing, RegistryError> {
        let (listing, delay) = {
            let mut state = self.state();
            self.enter(&mut state, Op::List, "")?;
            let mut listing = Listing::default();
            for (id, entry) in &state.entries {
                match entry {
                    Entry::Berth(i) if i.origin.node == self.node => {
                        listing.owned.push(i.clone());
                    }
                    _ => {
                        listing.foreign_ids.insert(id.clone());
                    }
                }
            }
            (listing, state.list_delays.pop_front())
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Ok(listing)
    }

    pub(crate) async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        let mut state = self.state();
        self.enter(&mut state, Op::Register, &instance.id)?;
        let refusal = if instance.origin.node != self.node {
            Some(format!(
                "instance belongs to node {:?}, this client is {:?}",
                instance.origin.node, self.node
            ))
        } else if let Some(reason) = state.rejected.get(&instance.id) {
            Some(reason.clone())
        } else if state.entries.contains_key(&instance.id)
            && !self.is_mine(state.entries.get(&instance.id))
        {
            Some(format!(
                "{} is held by another node or tool; not overwriting it",
                instance.id
            ))
        } else {
            None
        };
        if let Some(message) = refusal {
            Self::failed(&mut state);
            return Err(RegistryError::Rejected {
                what: format!("register of {}", instance.id),
                message,
            });
        }
        state
            .entries
            .insert(instance.id.clone(), Entry::Berth(instance.clone()));
        Ok(())
    }

    pub(crate) async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let mut state = self.state();
        self.enter(&mut state, Op::Deregister, id)?;
        if self.is_mine(state.entries.get(id)) {
            state.entries.remove(id);
        }
        Ok(())
    }

    pub(crate) async fn heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        let mut state = self.state();
        self.enter(&mut state, Op::Heartbeat, id)?;
        if self.is_mine(state.entries.get(id)) {
            return Ok(());
        }
        Self::failed(&mut state);
        Err(RegistryError::NotFound { id: id.to_owned() })
    }

    pub(crate) async fn set_health(&self, id: &str, health: &Health) -> Result<(), RegistryError> {
        let mut state = self.state();
        self.enter(&mut state, Op::SetHealth, id)?;
        match state.entries.get_mut(id) {
            Some(Entry::Berth(i)) if i.origin.node == self.node => {
                i.health = health.clone();
                Ok(())
            }
            _ => {
                Self::failed(&mut state);
                Err(RegistryError::NotFound { id: id.to_owned() })
            }
        }
    }

    pub(crate) async fn lookup(
        &self,
        service: &str,
        passing_only: bool,
    ) -> Result<Vec<Instance>, RegistryError> {
        let mut state = self.state();
        self.enter(&mut state, Op::Lookup, service)?;
        Ok(state
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Berth(i) if i.name == service => Some(i.clone()),
                _ => None,
            })
            .filter(|i| !passing_only || i.health.status == Status::Passing)
            .collect())
    }

    /// Passes [`expire_lease`](Self::expire_lease) on to `lost` until `cancel` fires.
    pub(crate) async fn maintain(&self, lost: Arc<Notify>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.lease_lost.notified() => lost.notify_one(),
            }
        }
    }
}
