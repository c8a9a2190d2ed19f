//! berth's registry side: the [`Instance`] model, the [`Registry`] a reconciler writes to, and
//! its backends.
//!
//! Start at [`Registry`]. Backends are a closed set dispatched with `match`; each one
//! implements the same six operations with the same contract:
//!
//! - [`Registry::list`] reads what is registered on this node, split into instances owned by
//!   this berth node and ids that belong to anyone else;
//! - [`Registry::register`] creates or replaces one instance (idempotent);
//! - [`Registry::deregister`] removes one instance (removing a missing one succeeds);
//! - [`Registry::heartbeat`] refreshes the instance's TTL, answering
//!   [`RegistryError::NotFound`] when the registry has lost the instance;
//! - [`Registry::set_health`] reports a new health for the instance (same `NotFound`);
//! - [`Registry::describe`] names the backend and its address for logs.
//!
//! Besides these, [`Registry::lookup`] reads every node's instances of one service (for
//! `berth lookup`), and [`Registry::maintain`] is the backend's own background upkeep (etcd:
//! the lease keep-alive).

pub mod consul;
mod error;
pub mod etcd;
mod instance;
pub mod memory;

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use error::RegistryError;
pub use instance::{
    Health, Instance, META_CONTAINER_ID, META_CONTAINER_NAME, META_IMAGE, META_MANAGED, META_NODE,
    META_RESERVED_PREFIX, Origin, Status,
};

/// What a registry holds on this node.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Listing {
    /// Instances written by berth for the asking node.
    pub owned: Vec<Instance>,
    /// Ids of every other entry: other tools' services and other berth nodes' instances.
    /// berth never writes or removes these.
    pub foreign_ids: BTreeSet<String>,
    /// Owned instances the registry will drop unless they are written again, even though
    /// nothing about them changed (etcd: keys held by a previous agent process's lease).
    pub stale: BTreeSet<String>,
}

/// The registry berth keeps exact. A closed set of backends.
#[derive(Debug, Clone)]
pub enum Registry {
    Consul(consul::ConsulRegistry),
    Etcd(etcd::EtcdRegistry),
    /// In-process registry for unit tests of the reconcile logic and dry runs.
    Memory(memory::MemoryRegistry),
}

impl Registry {
    /// Lists the entries visible to this node, split by ownership.
    pub async fn list(&self, node: &str) -> Result<Listing, RegistryError> {
        match self {
            Registry::Consul(c) => c.list(node).await,
            Registry::Etcd(e) => e.list(node).await,
            Registry::Memory(m) => m.list(node),
        }
    }

    /// Creates or replaces `instance`, with a TTL check/lease whose initial state is
    /// `instance.health`.
    pub async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.register(instance).await,
            Registry::Etcd(e) => e.register(instance).await,
            Registry::Memory(m) => m.register(instance),
        }
    }

    /// Removes the instance `id`. Removing an id the registry does not know succeeds.
    pub async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.deregister(id).await,
            Registry::Etcd(e) => e.deregister(id).await,
            Registry::Memory(m) => m.deregister(id),
        }
    }

    /// Refreshes the TTL of `id`. Carries no health: that is written by
    /// [`set_health`](Registry::set_health) when it changes.
    ///
    /// Answers [`RegistryError::NotFound`] when the registry lost the instance; the caller
    /// must register it again.
    pub async fn heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.heartbeat(id).await,
            Registry::Etcd(e) => e.heartbeat(id).await,
            Registry::Memory(m) => m.heartbeat(id),
        }
    }

    /// Reports `health` for `id`; written at once, and only when it differs from what the
    /// backend last stored where the backend can tell (etcd).
    ///
    /// Answers [`RegistryError::NotFound`] when the registry lost the instance.
    pub async fn set_health(&self, id: &str, health: &Health) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.set_health(id, health).await,
            Registry::Etcd(e) => e.set_health(id, health).await,
            Registry::Memory(m) => m.set_health(id, health),
        }
    }

    /// A short description for logs, e.g. `consul at http://127.0.0.1:8500`.
    pub fn describe(&self) -> String {
        match self {
            Registry::Consul(c) => c.describe(),
            Registry::Etcd(e) => e.describe(),
            Registry::Memory(_) => "in-memory registry".to_owned(),
        }
    }

    /// Every berth instance of `service` on every node, with its health; with
    /// `passing_only`, only those whose health is passing.
    pub async fn lookup(
        &self,
        service: &str,
        passing_only: bool,
    ) -> Result<Vec<Instance>, RegistryError> {
        match self {
            Registry::Consul(c) => c.lookup(service, passing_only).await,
            Registry::Etcd(e) => e.lookup(service, passing_only).await,
            Registry::Memory(m) => Ok(m.lookup(service, passing_only)),
        }
    }

    /// The backend's background upkeep, until `cancel` fires. It wakes `lost` when the
    /// registry dropped this agent's registrations wholesale (an etcd lease was lost), so the
    /// caller writes everything again. Consul and memory need none and wait for `cancel`.
    pub async fn maintain(&self, lost: Arc<Notify>, cancel: CancellationToken) {
        match self {
            Registry::Etcd(e) => e.keep_lease(lost, cancel).await,
            Registry::Consul(_) | Registry::Memory(_) => cancel.cancelled().await,
        }
    }
}
