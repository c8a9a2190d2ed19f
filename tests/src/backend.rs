//! The registry a test agent writes to, Consul or etcd, behind one reader.
//!
//! The contract suite (`tests/tests/contract.rs`) is written once against [`Backend`] and
//! runs against both. [`Backend::instances`] reads a service the way a consumer of that
//! registry would and checks the registry's own views agree: Consul's health and catalog
//! endpoints, etcd's instance keys and per-node index keys.

use std::fmt;

use serde_json::Value;

use crate::agent::{consul_state, standard_args, standard_etcd_args};
use crate::consul::ConsulServer;
use crate::docker::random_hex;
use crate::etcd::{EtcdServer, Kv};

/// Which registry a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Consul,
    Etcd,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Consul => "consul",
            Kind::Etcd => "etcd",
        })
    }
}

/// One registered instance as a registry consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    pub node: String,
    pub container_id: String,
    pub container_name: String,
    pub image: String,
    /// `passing`, `critical`, …: Consul's health check `service:<id>` combined with berth's
    /// liveness check `service:<id>:ttl` when there is one (the worse of the two, as Consul's
    /// DNS and `?passing` filter see it; a description of the checks when the instance has
    /// other checks, or no `service:<id>`), etcd's `health.status`.
    pub status: String,
    /// The health output: Consul's `service:<id>` check output, etcd's `health.output`.
    pub output: String,
    /// Carries berth's ownership marker: Consul's meta `berth-managed=true`; always true in
    /// etcd, where everything under the prefix is berth's by the key layout.
    pub managed: bool,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) @ {}:{} node={} container={} ({}) image={} status={} output={:?}{}",
            self.id,
            self.name,
            self.address,
            self.port,
            self.node,
            self.container_name,
            short(&self.container_id),
            self.image,
            self.status,
            crate::agent::clip(&self.output, 300),
            if self.managed { "" } else { " (not managed)" }
        )
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Instances one per line, for messages.
pub fn show(found: &[Found]) -> String {
    if found.is_empty() {
        return "[]".into();
    }
    found.iter().map(|f| format!("\n    {f}")).collect()
}

/// A running registry owned by one test. The etcd variant carries the key prefix the test's
/// agents write under (unique per test).
#[derive(Debug)]
pub enum Backend {
    Consul(ConsulServer),
    Etcd { etcd: EtcdServer, prefix: String },
}

impl Backend {
    /// Starts a fresh registry of `kind`.
    pub fn start(kind: Kind) -> Backend {
        match kind {
            Kind::Consul => Backend::Consul(ConsulServer::start()),
            Kind::Etcd => Backend::Etcd {
                etcd: EtcdServer::start(),
                prefix: format!("/berth-e2e/{}", random_hex(3)),
            },
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Backend::Consul(_) => Kind::Consul,
            Backend::Etcd { .. } => Kind::Etcd,
        }
    }

    /// The standard `berth run` arguments for an agent of `node` writing to this registry.
    pub fn agent_args(&self, node: &str) -> Vec<String> {
        match self {
            Backend::Consul(c) => standard_args(&c.addr(), node),
            Backend::Etcd { etcd, prefix } => standard_etcd_args(&etcd.endpoint(), prefix, node),
        }
    }

    /// The flags that point `berth lookup` (or any command) at this registry.
    pub fn registry_args(&self) -> Vec<String> {
        match self {
            Backend::Consul(c) => vec!["--consul-addr".into(), c.addr()],
            Backend::Etcd { etcd, prefix } => vec![
                "--registry".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                etcd.endpoint(),
                "--etcd-prefix".into(),
                prefix.clone(),
            ],
        }
    }

    /// The Consul server; panics for etcd (Consul-only tests).
    pub fn consul(&self) -> &ConsulServer {
        match self {
            Backend::Consul(c) => c,
            Backend::Etcd { .. } => panic!("not a Consul backend"),
        }
    }

    /// The etcd server; panics for Consul (etcd-only tests).
    pub fn etcd(&self) -> &EtcdServer {
        match self {
            Backend::Etcd { etcd, .. } => etcd,
            Backend::Consul(_) => panic!("not an etcd backend"),
        }
    }

    /// Mutable access to the etcd server (to restart it); panics for Consul.
    pub fn etcd_mut(&mut self) -> &mut EtcdServer {
        match self {
            Backend::Etcd { etcd, .. } => etcd,
            Backend::Consul(_) => panic!("not an etcd backend"),
        }
    }

    /// The etcd key prefix the agents write under; panics for Consul.
    pub fn prefix(&self) -> &str {
        match self {
            Backend::Etcd { prefix, .. } => prefix,
            Backend::Consul(_) => panic!("not an etcd backend"),
        }
    }

    /// etcd: `<prefix>/services/<name>/<id>`, where an instance's value lives.
    pub fn instance_key(&self, name: &str, id: &str) -> String {
        format!("{}/services/{name}/{id}", self.prefix())
    }

    /// etcd: `<prefix>/nodes/<node>/<id>`, the per-node index key naming the instance key.
    pub fn node_key(&self, node: &str, id: &str) -> String {
        format!("{}/nodes/{node}/{id}", self.prefix())
    }

    /// Every instance of service `name`. `Err` when the registry does not answer, an entry
    /// cannot be read, or the registry's views disagree: Consul's health and catalog
    /// endpoints list different instances; an etcd instance key is not under its own id,
    /// has no lease, or lacks the per-node index key (same lease, naming it) — or an index
    /// key names a missing instance key.
    pub fn instances(&self, name: &str) -> Result<Vec<Found>, String> {
        match self {
            Backend::Consul(c) => consul_instances(c, name),
            Backend::Etcd { etcd, prefix } => etcd_instances(etcd, prefix, name),
        }
    }

    /// Ids of the instances registered for `node`, sorted: Consul's agent services whose
    /// meta `berth-node` is `node`; etcd's keys under `<prefix>/nodes/<node>/`.
    pub fn ids_of_node(&self, node: &str) -> Result<Vec<String>, String> {
        let mut ids = match self {
            Backend::Consul(c) => consul_agent_services(c)?
                .into_iter()
                .filter(|(_, s)| s["Meta"]["berth-node"] == node)
                .map(|(id, _)| id)
                .collect(),
            Backend::Etcd { etcd, prefix } => {
                let under = format!("{prefix}/nodes/{node}/");
                etcd.try_get_prefix(&under)?
                    .into_iter()
                    .map(|kv| kv.key[under.len()..].to_string())
                    .collect::<Vec<_>>()
            }
        };
        ids.sort();
        Ok(ids)
    }

    /// Ids of the instances of any service and node that name container `container_id`
    /// (Consul: the agent's services by meta; etcd: every instance value), sorted.
    pub fn ids_of_container(&self, container_id: &str) -> Result<Vec<String>, String> {
        let mut ids: Vec<String> = match self {
            Backend::Consul(c) => consul_agent_services(c)?
                .into_iter()
                .filter(|(_, s)| s["Meta"]["berth-container-id"] == container_id)
                .map(|(id, _)| id)
                .collect(),
            Backend::Etcd { etcd, prefix } => etcd
                .try_get_prefix(&format!("{prefix}/services/"))?
                .iter()
                .map(Kv::json)
                .filter(|v| v["container_id"] == container_id)
                .map(|v| v["id"].as_str().unwrap_or_default().to_string())
                .collect(),
        };
        ids.sort();
        Ok(ids)
    }

    /// Makes the registry lose everything: Consul's dev agent restarts (dev mode keeps
    /// nothing); etcd restarts with its data dir wiped.
    pub fn restart(&mut self) {
        match self {
            Backend::Consul(c) => c.restart(),
            Backend::Etcd { etcd, .. } => etcd.restart_wiped(),
        }
    }

    /// The registry's state for failure messages.
    pub fn state(&self) -> String {
        match self {
            Backend::Consul(c) => consul_state(c),
            Backend::Etcd { etcd, prefix } => etcd.describe(&format!("{prefix}/")),
        }
    }
}

fn consul_get(c: &ConsulServer, path: &str) -> Result<Value, String> {
    c.get(path)
        .ok_or_else(|| format!("consul {} did not answer GET {path}", c.addr()))
}

fn consul_agent_services(c: &ConsulServer) -> Result<Vec<(String, Value)>, String> {
    match consul_get(c, "/v1/agent/services")? {
        Value::Object(m) => Ok(m.into_iter().collect()),
        other => Err(format!("/v1/agent/services: {other}")),
    }
}

fn consul_instances(c: &ConsulServer, name: &str) -> Result<Vec<Found>, String> {
    let health = consul_get(c, &format!("/v1/health/service/{name}"))?;
    let catalog = consul_get(c, &format!("/v1/catalog/service/{name}"))?;
    let (Some(health), Some(catalog)) = (health.as_array(), catalog.as_array()) else {
        return Err(format!("not arrays: health {health}; catalog {catalog}"));
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let found: Vec<Found> = health
        .iter()
        .map(|e| {
            let s = &e["Service"];
            let id = text(&s["ID"]);
            let checks: Vec<&Value> = e["Checks"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter(|ch| ch["ServiceID"] == id.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let (status, output) = consul_status(&id, &checks);
            Found {
                name: text(&s["Service"]),
                address: text(&s["Address"]),
                port: s["Port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0),
                node: text(&s["Meta"]["berth-node"]),
                container_id: text(&s["Meta"]["berth-container-id"]),
                container_name: text(&s["Meta"]["berth-container-name"]),
                image: text(&s["Meta"]["berth-image"]),
                managed: s["Meta"]["berth-managed"] == "true",
                status,
                output,
                id,
            }
        })
        .collect();
    // The catalog must list the same instances (id, address, port, container).
    let key = |id: &Value, addr: &Value, port: &Value, ctr: &Value| {
        (text(id), text(addr), port.as_u64().unwrap_or(0), text(ctr))
    };
    let mut from_health: Vec<_> = health
        .iter()
        .map(|e| {
            let s = &e["Service"];
            key(
                &s["ID"],
                &s["Address"],
                &s["Port"],
                &s["Meta"]["berth-container-id"],
            )
        })
        .collect();
    let mut from_catalog: Vec<_> = catalog
        .iter()
        .map(|e| {
            key(
                &e["ServiceID"],
                &e["ServiceAddress"],
                &e["ServicePort"],
                &e["ServiceMeta"]["berth-container-id"],
            )
        })
        .collect();
    from_health.sort();
    from_catalog.sort();
    if from_health != from_catalog {
        return Err(format!(
            "health and catalog differ for {name}:\n  health: {from_health:?}\n  catalog: {from_catalog:?}"
        ));
    }
    Ok(found)
}

/// Status and output of instance `id` from its checks (see [`Found::status`]): the health
/// check `service:<id>`, worsened by the liveness check `service:<id>:ttl` when present.
fn consul_status(id: &str, checks: &[&Value]) -> (String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (health_id, ttl_id) = (format!("service:{id}"), format!("service:{id}:ttl"));
    let health = checks.iter().find(|ch| ch["CheckID"] == health_id.as_str());
    let ttl = checks.iter().find(|ch| ch["CheckID"] == ttl_id.as_str());
    let known = usize::from(health.is_some()) + usize::from(ttl.is_some());
    let rank = |s: &str| match s {
        "passing" => Some(0),
        "warning" => Some(1),
        "critical" => Some(2),
        _ => None,
    };
    match health {
        Some(h) if known == checks.len() => {
            let mut status = text(&h["Status"]);
            if let Some(t) = ttl {
                let alive = text(&t["Status"]);
                match (rank(&status), rank(&alive)) {
                    (Some(a), Some(b)) if b > a => status = alive,
                    (Some(_), Some(_)) => {}
                    _ => status = format!("{status} (liveness {alive})"),
                }
            }
            (status, text(&h["Output"]))
        }
        _ => (
            format!(
                "checks [{}] (want {health_id}, optionally with {ttl_id})",
                checks
                    .iter()
                    .map(|ch| format!("{}={}", ch["CheckID"], ch["Status"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            String::new(),
        ),
    }
}

fn etcd_instances(etcd: &EtcdServer, prefix: &str, name: &str) -> Result<Vec<Found>, String> {
    // One read of the whole prefix: instance and index keys at the same revision.
    let all = etcd.try_get_prefix(&format!("{prefix}/"))?;
    let under = format!("{prefix}/services/{name}/");
    let nodes = format!("{prefix}/nodes/");
    let listing = || {
        all.iter()
            .filter(|kv| kv.key.starts_with(&under) || kv.key.starts_with(&nodes))
            .map(|kv| format!("\n    {} lease={:x} = {}", kv.key, kv.lease, kv.value))
            .collect::<String>()
    };
    let mut found = Vec::new();
    for kv in all.iter().filter(|kv| kv.key.starts_with(&under)) {
        let v: Value = serde_json::from_str(&kv.value)
            .map_err(|e| format!("{} holds no JSON ({e}):{}", kv.key, listing()))?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let f = Found {
            id: text("id"),
            name: text("name"),
            address: text("address"),
            port: v["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0),
            node: text("node"),
            container_id: text("container_id"),
            container_name: text("container_name"),
            image: text("image"),
            status: v["health"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            output: v["health"]["output"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            managed: true,
        };
        if kv.key[under.len()..] != f.id || f.name != name {
            return Err(format!(
                "{} holds id {:?}, name {:?}:{}",
                kv.key,
                f.id,
                f.name,
                listing()
            ));
        }
        if kv.lease == 0 {
            return Err(format!("{} has no lease:{}", kv.key, listing()));
        }
        let index = format!("{nodes}{}/{}", f.node, f.id);
        match all.iter().find(|k| k.key == index) {
            Some(i) if i.value == kv.key && i.lease == kv.lease => {}
            Some(i) => {
                return Err(format!(
                    "index key {index} = {:?} lease {:x}, want {:?} lease {:x}:{}",
                    i.value,
                    i.lease,
                    kv.key,
                    kv.lease,
                    listing()
                ));
            }
            None => return Err(format!("no index key {index} for {}:{}", kv.key, listing())),
        }
        found.push(f);
    }
    for i in all
        .iter()
        .filter(|kv| kv.key.starts_with(&nodes) && kv.value.starts_with(&under))
    {
        if !all.iter().any(|kv| kv.key == i.value) {
            return Err(format!(
                "index key {} names the missing {}:{}",
                i.key,
                i.value,
                listing()
            ));
        }
    }
    Ok(found)
}
