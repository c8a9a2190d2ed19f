//! The etcd key layout and the JSON value of an instance key (documented in `docs/etcd.md`).
//!
//! ```text
//! <prefix>/services/<name>/<id>   the instance, as a JSON Record   (consumers watch this)
//! <prefix>/nodes/<node>/<id>      the instance key it indexes      (ownership and cleanup)
//! ```
//!
//! Both keys of an instance are written and deleted in one transaction and attached to the
//! owning agent's lease.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{Health, Instance, Origin, RegistryError};

/// Key builder for one `--etcd-prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// `prefix` must start with `/`; a trailing `/` is dropped (`/` alone is the root).
    pub fn new(prefix: &str) -> Result<Layout, RegistryError> {
        if !prefix.starts_with('/') {
            return Err(RegistryError::Config(format!(
                "etcd prefix {prefix:?} must start with '/'"
            )));
        }
        Ok(Layout {
            prefix: prefix.trim_end_matches('/').to_owned(),
        })
    }

    /// `<prefix>/services/`: every instance of every service.
    pub fn services(&self) -> String {
        format!("{}/services/", self.prefix)
    }

    /// `<prefix>/services/<name>/`: every instance of one service.
    pub fn service(&self, name: &str) -> String {
        format!("{}/services/{name}/", self.prefix)
    }

    /// `<prefix>/services/<name>/<id>`
    pub fn instance(&self, name: &str, id: &str) -> String {
        format!("{}/services/{name}/{id}", self.prefix)
    }

    /// `<prefix>/nodes/<node>/`: the index of one node's instances.
    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}/", self.prefix)
    }

    /// `<prefix>/nodes/<node>/<id>`
    pub fn index(&self, node: &str, id: &str) -> String {
        format!("{}/nodes/{node}/{id}", self.prefix)
    }
}

/// Refuses a name, id or node that cannot be one segment of a key.
pub fn segment(what: &str, value: &str) -> Result<(), RegistryError> {
    if value.is_empty() || value.contains('/') || value == "." || value == ".." {
        return Err(RegistryError::Rejected {
            what: format!("{what} {value:?}"),
            message: "cannot be one segment of an etcd key (empty, '.', '..' or contains '/')"
                .to_owned(),
        });
    }
    Ok(())
}

/// The JSON value of an instance key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    /// User meta only; berth's ownership facts are the fields below.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    pub node: String,
    pub container_id: String,
    pub container_name: String,
    pub image: String,
    pub health: Health,
    /// RFC 3339 UTC time of the write that produced this value.
    pub updated: String,
}

impl Record {
    pub fn new(instance: &Instance, health: &Health, now: SystemTime) -> Record {
        Record {
            id: instance.id.clone(),
            name: instance.name.clone(),
            address: instance.address.clone(),
            port: instance.port,
            tags: instance.tags.clone(),
            meta: instance.meta.clone(),
            node: instance.origin.node.clone(),
            container_id: instance.origin.container_id.clone(),
            container_name: instance.origin.container_name.clone(),
            image: instance.origin.image.clone(),
            health: health.clone(),
            updated: humantime::format_rfc3339_millis(now).to_string(),
        }
    }

    pub fn into_instance(self) -> Instance {
        Instance {
            id: self.id,
            name: self.name,
            address: self.address,
            port: self.port,
            tags: self.tags,
            meta: self.meta,
            origin: Origin {
                node: self.node,
                container_id: self.container_id,
                container_name: self.container_name,
                image: self.image,
            },
            health: self.health,
        }
    }

    /// True when writing `instance` with `health` would change nothing but `updated`.
    pub fn matches(&self, instance: &Instance, health: &Health) -> bool {
        let mut other = Record::new(instance, health, SystemTime::UNIX_EPOCH);
        other.updated.clone_from(&self.updated);
        *self == other
    }

    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and string maps always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::Status;
    use std::time::Duration;

    fn sample() -> Instance {
        crate::contract::instance("node1", "node1:web:80", "web", Health::passing("ok"))
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let l = Layout::new("/berth/").unwrap();
        assert_eq!(l.services(), "/berth/services/");
        assert_eq!(l.service("web"), "/berth/services/web/");
        assert_eq!(l.instance("web", "n:c:80"), "/berth/services/web/n:c:80");
        assert_eq!(l.node("n1"), "/berth/nodes/n1/");
        assert_eq!(l.index("n1", "n:c:80"), "/berth/nodes/n1/n:c:80");
        assert_eq!(Layout::new("/").unwrap().services(), "/services/");
        assert!(Layout::new("berth").is_err());
    }

    #[test]
    fn segments_cannot_escape_their_level() {
        assert!(segment("id", "n:c:80").is_ok());
        for bad in ["", "a/b", ".", ".."] {
            assert!(segment("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn record_json_has_the_documented_fields_and_round_trips() {
        let i = sample();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let r = Record::new(&i, &i.health, at);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["id"], "node1:web:80");
        assert_eq!(v["name"], "web");
        assert_eq!(v["address"], "10.0.0.7");
        assert_eq!(v["port"], 32768);
        assert_eq!(v["tags"], serde_json::json!(["v1"]));
        assert_eq!(v["meta"]["team"], "core");
        assert_eq!(v["node"], "node1");
        assert_eq!(v["container_id"], "c0ffee".repeat(8));
        assert_eq!(v["container_name"], "ctr-web");
        assert_eq!(v["image"], "example/web:1");
        assert_eq!(v["health"]["status"], "passing");
        assert_eq!(v["health"]["output"], "ok");
        assert_eq!(v["updated"], "2026-11-18T11:06:40.123Z");
        let back: Record = serde_json::from_value(v).unwrap();
        assert_eq!(back.into_instance(), i);
    }

    #[test]
    fn matches_ignores_only_the_write_time() {
        let i = sample();
        let r = Record::new(&i, &i.health, SystemTime::now());
        assert!(r.matches(&i, &i.health));
        assert!(!r.matches(&i, &Health::critical("down")));
        let mut moved = i.clone();
        moved.port += 1;
        assert!(!r.matches(&moved, &i.health));
        let warning = Health {
            status: Status::Warning,
            output: "ok".into(),
        };
        assert!(!r.matches(&i, &warning));
    }
}
