//! An in-process registry. It behaves like a real backend for the reconcile logic's unit
//! tests (ownership, idempotence, lost entries) and counts every write, so tests can assert
//! that nothing is written when nothing changed. It never replaces the real-service tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Health, Instance, Listing, RegistryError};

/// One stored entry: either berth's instance or another tool's bare id.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // test-only data, clarity over size
pub enum Entry {
    Berth(Instance),
    Foreign,
}

/// Write counters, for assertions.
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
    writes: Writes,
    registers_by_id: BTreeMap<String, usize>,
    unavailable: bool,
}

/// Shared handle: clones see the same registry.
#[derive(Debug, Default, Clone)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test panicked while holding it; the data is still fine.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_up(state: &State) -> Result<(), RegistryError> {
        if state.unavailable {
            return Err(RegistryError::Unavailable {
                message: "memory registry switched off".into(),
                source: None,
            });
        }
        Ok(())
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

    /// Every berth instance named `service`, any node; passing ones only with `passing_only`.
    pub fn lookup(&self, service: &str, passing_only: bool) -> Vec<Instance> {
        self.state()
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Berth(i) if i.name == service => Some(i.clone()),
                _ => None,
            })
            .filter(|i| !passing_only || i.health.status == crate::Status::Passing)
            .collect()
    }

    /// Makes every call fail as if the registry were down.
    pub fn set_unavailable(&self, down: bool) {
        self.state().unavailable = down;
    }

    pub fn writes(&self) -> Writes {
        self.state().writes
    }

    /// How many register calls `id` received.
    pub fn registers_of(&self, id: &str) -> usize {
        self.state().registers_by_id.get(id).copied().unwrap_or(0)
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

    pub(crate) fn list(&self, node: &str) -> Result<Listing, RegistryError> {
        let state = self.state();
        Self::check_up(&state)?;
        let mut listing = Listing::default();
        for (id, entry) in &state.entries {
            match entry {
                Entry::Berth(i) if i.origin.node == node => listing.owned.push(i.clone()),
                _ => {
                    listing.foreign_ids.insert(id.clone());
                }
            }
        }
        Ok(listing)
    }

    pub(crate) fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        let mut state = self.state();
        Self::check_up(&state)?;
        state.writes.registers += 1;
        *state
            .registers_by_id
            .entry(instance.id.clone())
            .or_default() += 1;
        state
            .entries
            .insert(instance.id.clone(), Entry::Berth(instance.clone()));
        Ok(())
    }

    pub(crate) fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let mut state = self.state();
        Self::check_up(&state)?;
        state.writes.deregisters += 1;
        state.entries.remove(id);
        Ok(())
    }

    pub(crate) fn heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        let mut state = self.state();
        Self::check_up(&state)?;
        state.writes.heartbeats += 1;
        match state.entries.get(id) {
            Some(Entry::Berth(_)) => Ok(()),
            _ => Err(RegistryError::NotFound { id: id.to_owned() }),
        }
    }

    pub(crate) fn set_health(&self, id: &str, health: &Health) -> Result<(), RegistryError> {
        let mut state = self.state();
        Self::check_up(&state)?;
        state.writes.health_updates += 1;
        match state.entries.get_mut(id) {
            Some(Entry::Berth(i)) => {
                i.health = health.clone();
                Ok(())
            }
            _ => Err(RegistryError::NotFound { id: id.to_owned() }),
        }
    }
}
