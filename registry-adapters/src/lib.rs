//! berth's registry side: the [`Instance`] model, the [`Registry`] a reconciler writes to, and
//! its backends.
//!
//! Start at [`Registry`]. Backends are a closed set dispatched with `match`. A `Registry` is
//! one node's client: it is built for the node whose instances it writes (`--node-name`), and
//! every backend keeps the same contract, which `contract` (feature `contract`) checks against
//! each of them:
//!
//! - [`Registry::list`] reads what is registered, split into instances this node owns and
//!   ids that belong to anyone else;
//! - [`Registry::register`] creates or replaces one instance of this node (idempotent); an id
//!   another node or tool holds is refused with [`RegistryError::Rejected`] and left as it is;
//! - [`Registry::deregister`] removes one instance of this node; removing a missing one, or
//!   one that is not this node's, succeeds and changes nothing;
//! - [`Registry::heartbeat`] keeps the instance alive, answering [`RegistryError::NotFound`]
//!   when the registry has lost it; a backend whose liveness is one lease per node
//!   ([`Liveness::PerNode`]) needs no per-instance beats, and [`Registry::heartbeat_node`]
//!   says whether that lease is kept;
//! - [`Registry::set_health`] writes a new health for the instance (same `NotFound`);
//! - [`Registry::maintain`] is the backend's own background upkeep (etcd: the lease
//!   keep-alive); it reports a wholesale loss of this node's registrations;
//! - [`Registry::describe`] names the backend and its address for logs.
//!
//! Besides these, [`Registry::lookup`] reads every node's instances of one service (for
//! `berth lookup`). [`limits`] says what every backend accepts.

pub mod consul;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod error;
pub mod etcd;
mod instance;
pub mod limits;
pub mod memory;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use error::RegistryError;
pub use instance::{
    Health, Instance, Listing, META_CONTAINER_ID, META_CONTAINER_NAME, META_IMAGE, META_MANAGED,
    META_NODE, META_RESERVED_PREFIX, OWN_META_KEYS, Origin, Status,
};

/// How a backend keeps a node's instances alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Each instance has a TTL of its own, refreshed by [`Registry::heartbeat`] (Consul's TTL
    /// checks).
    PerInstance,
    /// One lease keeps every instance of the node alive, renewed by [`Registry::maintain`];
    /// [`Registry::heartbeat_node`] says whether it is being renewed (etcd).
    PerNode,
}

/// The registry berth keeps exact, as one node's client. A closed set of backends.
#[derive(Debug, Clone)]
pub enum Registry {
    Consul(consul::ConsulRegistry),
    Etcd(etcd::EtcdRegistry),
    /// In-process, with the same contract: the reconciler's unit tests and the in-process
    /// agent tests run on it, with faults injected. No configuration selects it.
    Memory(memory::MemoryRegistry),
}

impl Registry {
    /// Lists the entries visible to this node, split by ownership.
    pub async fn list(&self) -> Result<Listing, RegistryError> {
        match self {
            Registry::Consul(c) => c.list().await,
            Registry::Etcd(e) => e.list().await,
            Registry::Memory(m) => m.list().await,
        }
    }

    /// Creates or replaces `instance`, alive (a fresh TTL or the current lease) and with
    /// `instance.health`. Refuses an id that is not this node's.
    pub async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.register(instance).await,
            Registry::Etcd(e) => e.register(instance).await,
            Registry::Memory(m) => m.register(instance).await,
        }
    }

    /// Removes this node's instance `id`. Removing an id the registry does not know, or one
    /// another node or tool holds, succeeds and changes nothing.
    pub async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.deregister(id).await,
            Registry::Etcd(e) => e.deregister(id).await,
            Registry::Memory(m) => m.deregister(id).await,
        }
    }

    /// Keeps `id` alive. Carries no health: that is written by
    /// [`set_health`](Registry::set_health) when it changes.
    ///
    /// Answers [`RegistryError::NotFound`] when the registry lost the instance; the caller
    /// must register it again.
    pub async fn heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.heartbeat(id).await,
            Registry::Etcd(e) => e.heartbeat(id).await,
            Registry::Memory(m) => m.heartbeat(id).await,
        }
    }

    /// How this backend keeps instances alive: per instance (heartbeat each one) or per node.
    pub fn liveness(&self) -> Liveness {
        match self {
            Registry::Etcd(_) => Liveness::PerNode,
            Registry::Consul(_) | Registry::Memory(_) => Liveness::PerInstance,
        }
    }

    /// For a [`Liveness::PerNode`] backend: `Ok` while the node's lease is being kept,
    /// [`RegistryError::Unavailable`] while renewing it fails. Per-instance backends answer
    /// `Ok`.
    pub async fn heartbeat_node(&self) -> Result<(), RegistryError> {
        match self {
            Registry::Etcd(e) => e.heartbeat_node(),
            Registry::Consul(_) | Registry::Memory(_) => Ok(()),
        }
    }

    /// Writes `health` for `id`; at once, and only when it differs from what the backend
    /// last stored where the backend can tell (etcd).
    ///
    /// Answers [`RegistryError::NotFound`] when the registry lost the instance.
    pub async fn set_health(&self, id: &str, health: &Health) -> Result<(), RegistryError> {
        match self {
            Registry::Consul(c) => c.set_health(id, health).await,
            Registry::Etcd(e) => e.set_health(id, health).await,
            Registry::Memory(m) => m.set_health(id, health).await,
        }
    }

    /// A short description for logs, e.g. `consul agent at http://127.0.0.1:8500`.
    pub fn describe(&self) -> String {
        match self {
            Registry::Consul(c) => c.describe(),
            Registry::Etcd(e) => e.describe(),
            Registry::Memory(m) => m.describe(),
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
            Registry::Memory(m) => m.lookup(service, passing_only).await,
        }
    }

    /// The backend's background upkeep, until `cancel` fires. It wakes `lost` when the
    /// registry dropped this node's registrations wholesale (an etcd lease was lost), so the
    /// caller writes everything again. Consul needs no upkeep and waits for `cancel`.
    pub async fn maintain(&self, lost: Arc<Notify>, cancel: CancellationToken) {
        match self {
            Registry::Etcd(e) => e.keep_lease(lost, cancel).await,
            Registry::Memory(m) => m.maintain(lost, cancel).await,
            Registry::Consul(_) => cancel.cancelled().await,
        }
    }
}
