//! The instance model shared by every backend.
//!
//! An [`Instance`] is one registration: one service endpoint of one container on one node.
//! It carries everything a backend needs to write it, and everything the reconciler needs to
//! recognise it again when it reads the registry back ([`Origin`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Meta key that marks an entry as written by berth. Its value is always `"true"`.
pub const META_MANAGED: &str = "berth-managed";
/// Meta key holding the node identity of the berth agent that owns the entry.
pub const META_NODE: &str = "berth-node";
/// Meta key holding the full Docker container id.
pub const META_CONTAINER_ID: &str = "berth-container-id";
/// Meta key holding the Docker container name (without the leading `/`).
pub const META_CONTAINER_NAME: &str = "berth-container-name";
/// Meta key holding the container's image reference.
pub const META_IMAGE: &str = "berth-image";

/// Prefix reserved for berth's own meta keys; user meta never uses it.
pub const META_RESERVED_PREFIX: &str = "berth-";
/// Every meta key berth adds to a registration ([`Instance::registry_meta`]).
pub const OWN_META_KEYS: [&str; 5] = [
    META_MANAGED,
    META_NODE,
    META_CONTAINER_ID,
    META_CONTAINER_NAME,
    META_IMAGE,
];

/// Where an instance comes from: the node that owns it and the container behind it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// Node identity of the owning agent (`--node-name`).
    pub node: String,
    /// Full container id.
    pub container_id: String,
    /// Container name without the leading `/`.
    pub container_name: String,
    /// Image reference as the container was created with.
    pub image: String,
}

/// How an instance is doing, as its probes or Docker's HEALTHCHECK report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    /// The lowercase word every backend and Consul use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status plus a short human-readable output for operators.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Health {
    pub status: Status,
    pub output: String,
}

impl Health {
    pub fn passing(output: impl Into<String>) -> Self {
        Health {
            status: Status::Passing,
            output: output.into(),
        }
    }

    pub fn critical(output: impl Into<String>) -> Self {
        Health {
            status: Status::Critical,
            output: output.into(),
        }
    }
}

/// One registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Stable, unique id (see `docs/labels.md` for how it is built).
    pub id: String,
    /// Service name.
    pub name: String,
    /// Address clients dial: an IPv4/IPv6 literal, or a host name from an override label.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    /// User meta only; berth's own keys come from [`Origin`] and are added by backends.
    pub meta: BTreeMap<String, String>,
    pub origin: Origin,
    /// The health berth reports for this instance.
    pub health: Health,
}

impl Instance {
    /// True when `other` would be written to the registry identically, health aside.
    ///
    /// A health change alone is written by [`Registry::set_health`](crate::Registry::set_health),
    /// never by a re-registration, so it must not cause a register call.
    pub fn same_registration(&self, other: &Instance) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.address == other.address
            && self.port == other.port
            && self.tags == other.tags
            && self.meta == other.meta
            && self.origin == other.origin
    }

    /// User meta plus berth's ownership keys, as written to a registry.
    pub fn registry_meta(&self) -> BTreeMap<String, String> {
        let mut meta = self.meta.clone();
        meta.insert(META_MANAGED.to_owned(), "true".to_owned());
        meta.insert(META_NODE.to_owned(), self.origin.node.clone());
        meta.insert(
            META_CONTAINER_ID.to_owned(),
            self.origin.container_id.clone(),
        );
        meta.insert(
            META_CONTAINER_NAME.to_owned(),
            self.origin.container_name.clone(),
        );
        meta.insert(META_IMAGE.to_owned(), self.origin.image.clone());
        meta
    }

    /// Rebuilds an instance from what a registry stores: the inverse of [`registry_meta`].
    ///
    /// Returns `None` when the entry is not berth's (no `berth-managed` marker or no node).
    ///
    /// [`registry_meta`]: Instance::registry_meta
    pub fn from_registry(
        id: String,
        name: String,
        address: String,
        port: u16,
        tags: Vec<String>,
        mut meta: BTreeMap<String, String>,
        health: Health,
    ) -> Option<Instance> {
        if meta.remove(META_MANAGED).as_deref() != Some("true") {
            return None;
        }
        let node = meta.remove(META_NODE)?;
        let origin = Origin {
            node,
            container_id: meta.remove(META_CONTAINER_ID).unwrap_or_default(),
            container_name: meta.remove(META_CONTAINER_NAME).unwrap_or_default(),
            image: meta.remove(META_IMAGE).unwrap_or_default(),
        };
        meta.retain(|k, _| !k.starts_with(META_RESERVED_PREFIX));
        Some(Instance {
            id,
            name,
            address,
            port,
            tags,
            meta,
            origin,
            health,
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Instance {
        crate::contract::instance("node1", "node1:web:80", "web", Health::passing("ok"))
    }

    #[test]
    fn registry_meta_round_trips() {
        let i = sample();
        let back = Instance::from_registry(
            i.id.clone(),
            i.name.clone(),
            i.address.clone(),
            i.port,
            i.tags.clone(),
            i.registry_meta(),
            i.health.clone(),
        );
        assert_eq!(back, Some(i));
    }

    #[test]
    fn own_meta_keys_are_exactly_the_ones_added() {
        let i = sample();
        let meta = i.registry_meta();
        let added: Vec<&str> = meta
            .keys()
            .map(String::as_str)
            .filter(|k| !i.meta.contains_key(*k))
            .collect();
        let mut own = OWN_META_KEYS.to_vec();
        own.sort_unstable();
        assert_eq!(added, own);
    }

    #[test]
    fn unmarked_entries_are_not_ours() {
        let i = sample();
        let mut meta = i.registry_meta();
        meta.remove(META_MANAGED);
        assert!(
            Instance::from_registry(i.id, i.name, i.address, i.port, i.tags, meta, i.health)
                .is_none()
        );
    }

    #[test]
    fn health_is_not_part_of_the_registration() {
        let a = sample();
        let mut b = a.clone();
        b.health = Health::critical("down");
        assert!(a.same_registration(&b));
        b.port += 1;
        assert!(!a.same_registration(&b));
    }
}
