//! Consul backend: each instance is a service on the **local agent** with two TTL checks:
//! `service:<id>` carries its health (written when the status changes) and
//! `service:<id>:ttl` is berth's liveness, which every heartbeat keeps passing and which alone
//! makes Consul reap the instance when berth stops (see [`wire::Registration`]).
//!
//! Writes go through the agent API (`/v1/agent/service/register`), never the catalog API:
//! the agent's anti-entropy erases catalog entries on its own node that it did not register
//! itself. It also means a registration lives exactly as long as the agent remembers it, which
//! is what [`RegistryError::NotFound`] from a heartbeat reports.
//!
//! What Consul 1.8.7 answers, and how it is read here (pinned by `tests/tests/consul_backend.rs`):
//!
//! | request                                   | answer                                      | result        |
//! |-------------------------------------------|---------------------------------------------|---------------|
//! | check update, unknown check               | 500 `CheckID "…" does not have associated TTL` (with ACLs: 500 `Unknown check "…"`) | `NotFound` once `/v1/agent/checks` confirms it is gone |
//! | check update, any 404 (not seen in 1.8.7) | 404                                         | `NotFound`    |
//! | deregister, unknown id                    | 200 (with ACLs: 500 `Unknown service …`)    | `Ok` once `/v1/agent/service/<id>` answers 404 |
//! | any, ACL denied                           | 403 `Permission denied` / `ACL not found`    | `Rejected`    |
//! | any, bad request (e.g. unknown JSON field) | 400                                        | `Rejected`    |
//! | any, connection refused, timeout, 5xx     |                                             | `Unavailable` |
//!
//! A 500 is confirmed by looking at the agent's state instead of parsing its text, so the
//! classification does not depend on the wording of one Consul version.
//!
//! The `rs-consul` crate is not used here (the end-to-end harness uses it as an independent
//! reader of `/v1/health/service/<name>?passing`). It has no `/v1/agent/*` endpoints, and its
//! `/v1/health/service/<name>` call (`get_service_nodes`, 0.15) decodes each entry into
//! `ServiceNode { Node, Service { ID, Service, Address, Port, Tags } }`: it drops the service
//! `Meta` (berth's ownership keys, without which no [`Instance`] can be rebuilt) and the
//! `Checks` (the health), so [`ConsulRegistry::lookup`] could not be built on it.

mod config;
mod http;
mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tracing::{debug, warn};

pub use config::ConsulConfig;
use http::{Agent, ApiError};
use wire::{
    CheckUpdate, HealthEntry, Registration, check_id, expired, missing_check, ttl_check_id,
};

use crate::error::RegistryError;
use crate::instance::{Health, Instance, Listing};

/// Writes one node's instances to the local Consul agent. Clones share one HTTP client and
/// one record of which ids are this node's.
#[derive(Clone)]
pub struct ConsulRegistry {
    agent: Agent,
    node: Arc<str>,
    /// Ids this client registered (or looked up and found its own), and still owned at the
    /// last listing: known to be this node's, so writing them needs no ownership check. Any
    /// other id is looked up first.
    mine: Arc<Mutex<HashSet<String>>>,
    ttl: Duration,
    deregister_critical_after: Duration,
    request_timeout: Duration,
    has_token: bool,
}

impl fmt::Debug for ConsulRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulRegistry")
            .field("addr", &self.agent.base())
            .field("node", &self.node)
            .field("token", &self.has_token.then_some("<redacted>"))
            .field("ttl", &self.ttl)
            .field("deregister_critical_after", &self.deregister_critical_after)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ConsulRegistry {
    /// Checks `config` (address, durations, certificate files) and builds the client.
    ///
    /// Needs a rustls crypto provider installed in the process; answers
    /// [`RegistryError::Config`] when there is none, or when anything in `config` is unusable.
    /// Reads the certificate files once, here.
    pub fn new(config: ConsulConfig) -> Result<ConsulRegistry, RegistryError> {
        config.validate()?;
        let base = config.base_url()?;
        let client = config.http_client()?;
        Ok(ConsulRegistry {
            agent: Agent::new(client, base),
            node: config.node.as_str().into(),
            mine: Arc::default(),
            ttl: config.ttl,
            deregister_critical_after: config.deregister_critical_after,
            request_timeout: config.request_timeout,
            has_token: config.token.as_deref().is_some_and(|t| !t.is_empty()),
        })
    }

    /// `consul agent at <addr>`, for logs.
    pub fn describe(&self) -> String {
        format!("consul agent at {}", self.agent.base())
    }

    /// Everything registered on the local agent: berth instances of this node, with the
    /// health of their `service:<id>` check (critical when it is missing), in `owned`; every
    /// other service id in `foreign_ids`.
    pub async fn list(&self) -> Result<Listing, RegistryError> {
        let services_url = self.agent.url("/v1/agent/services", "", "");
        let checks_url = self.agent.url("/v1/agent/checks", "", "");
        // Entries are decoded one by one, so one odd entry cannot fail the whole listing.
        let (services, checks) = tokio::try_join!(
            self.agent
                .get_json::<BTreeMap<String, Value>>(&services_url),
            self.agent.get_json::<HashMap<String, Value>>(&checks_url),
        )
        .map_err(|e| e.into_registry("listing of the agent's services"))?;

        let mut listing = Listing::default();
        for (id, value) in services {
            let instance = match serde_json::from_value::<wire::Service>(value) {
                Ok(mut service) => {
                    // The key is the id the agent knows the service by.
                    service.id.clone_from(&id);
                    let health = checks
                        .get(&check_id(&id))
                        .and_then(|c| serde_json::from_value::<wire::Check>(c.clone()).ok())
                        .map_or_else(missing_check, |c| c.health());
                    service.into_instance(health)
                }
                Err(error) => {
                    warn!(service.id = %id, %error, "unreadable service on the consul agent; treated as foreign");
                    None
                }
            };
            match instance {
                Some(instance) if *instance.origin.node == *self.node => {
                    listing.owned.push(instance);
                }
                _ => {
                    listing.foreign_ids.insert(id);
                }
            }
        }
        // An id someone else removed (Consul reaped it, an operator deregistered it) is not
        // known to be this node's any more: its next write looks it up again.
        let owned: HashSet<&str> = listing.owned.iter().map(|i| i.id.as_str()).collect();
        self.mine().retain(|id| owned.contains(id.as_str()));
        Ok(listing)
    }

    /// Creates or replaces `instance` and its two checks, then writes `instance.health` to the
    /// health check (Consul 1.8.7 takes no initial output, and keeps an existing check's
    /// status on a re-registration). Idempotent.
    ///
    /// The agent API has no compare-and-set, so an id this client has not registered itself
    /// is looked up first, and refused ([`RegistryError::Rejected`]) when another node's berth
    /// or another tool holds it. Two agents claiming one new id in the same instant can still
    /// both write it; only an explicit `berth.id` can make two nodes want one id.
    pub async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        let what = format!("register of {}", instance.id);
        if *instance.origin.node != *self.node {
            return Err(RegistryError::Rejected {
                what,
                message: format!(
                    "instance belongs to node {:?}, this agent is {:?}",
                    instance.origin.node, self.node
                ),
            });
        }
        if !self.is_mine(&instance.id) {
            match self.holder(&instance.id).await {
                Ok(Holder::Nobody | Holder::ThisNode) => {}
                Ok(Holder::Other(owner)) => {
                    return Err(RegistryError::Rejected {
                        what,
                        message: format!("the id is held by {owner}; not overwriting it"),
                    });
                }
                Err(e) => return Err(e.into_registry(&what)),
            }
        }
        let body = Registration::new(instance, self.ttl, self.deregister_critical_after);
        // Drops any other check under this service, e.g. one left by an older berth.
        let url = self.agent.url(
            "/v1/agent/service/register",
            "",
            "?replace-existing-checks=true",
        );
        self.agent
            .put(&url, Some(&body))
            .await
            .map_err(|e| e.into_registry(&what))?;
        self.mine().insert(instance.id.clone());
        self.set_health(&instance.id, &instance.health).await?;
        debug!(service.id = %instance.id, service.name = %instance.name, "registered on the consul agent");
        Ok(())
    }

    /// Removes the service `id` and its checks. Removing an unknown id succeeds; so does
    /// removing an id another node or tool holds, which is left as it is (an id this client
    /// has not registered itself is looked up first).
    pub async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let what = format!("deregister of {id}");
        addressable(id, &what)?;
        if !self.is_mine(id) {
            match self.holder(id).await {
                Ok(Holder::ThisNode) => {}
                Ok(Holder::Nobody) => return Ok(()),
                Ok(Holder::Other(owner)) => {
                    debug!(service.id = %id, %owner, "not this node's; left alone");
                    return Ok(());
                }
                Err(e) => return Err(e.into_registry(&what)),
            }
        }
        let url = self.agent.url("/v1/agent/service/deregister/", id, "");
        if let Err(error) = self.agent.put::<()>(&url, None).await {
            let gone = match error.status() {
                Some(StatusCode::NOT_FOUND) => true,
                // With ACLs on, 1.8.7 answers 500 "Unknown service" for an unknown id.
                Some(StatusCode::INTERNAL_SERVER_ERROR) => {
                    matches!(self.service_exists(id).await, Ok(false))
                }
                _ => false,
            };
            if !gone {
                return Err(error.into_registry(&what));
            }
        }
        self.mine().remove(id);
        debug!(service.id = %id, "deregistered from the consul agent");
        Ok(())
    }

    /// Restarts the TTL of the instance's liveness check.
    ///
    /// Answers [`RegistryError::NotFound`] when the agent does not know the check (it
    /// restarted without state, or reaped the instance), or when the id is not this node's
    /// (an id this client has not registered itself is looked up first); the caller
    /// registers it again.
    pub async fn heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        self.update(id, &ttl_check_id(id), &CheckUpdate::alive(), "heartbeat")
            .await
    }

    /// Writes `health` to the instance's health check.
    ///
    /// Answers [`RegistryError::NotFound`] like [`heartbeat`](Self::heartbeat).
    pub async fn set_health(&self, id: &str, health: &Health) -> Result<(), RegistryError> {
        self.update(
            id,
            &check_id(id),
            &CheckUpdate::new(health),
            "health update",
        )
        .await
    }

    async fn update(
        &self,
        id: &str,
        check: &str,
        body: &CheckUpdate<'_>,
        what: &str,
    ) -> Result<(), RegistryError> {
        if !self.is_mine(id) {
            // Another node's instance is not this client's to keep alive or judge.
            match self.holder(id).await {
                Ok(Holder::ThisNode) => {}
                Ok(Holder::Nobody | Holder::Other(_)) => {
                    return Err(RegistryError::NotFound { id: id.to_owned() });
                }
                Err(e) => return Err(e.into_registry(&format!("{what} of {id}"))),
            }
        }
        let url = self.agent.url("/v1/agent/check/update/", check, "");
        let Err(error) = self.agent.put(&url, Some(body)).await else {
            return Ok(());
        };
        let lost = match error.status() {
            Some(StatusCode::NOT_FOUND) => true,
            // 1.8.7 answers 500 for a check it does not know; the text differs with ACLs on.
            Some(StatusCode::INTERNAL_SERVER_ERROR) => {
                matches!(self.check_exists(check).await, Ok(false))
            }
            _ => false,
        };
        if lost {
            debug!(service.id = %id, check, "the consul agent lost the instance's check");
            self.mine().remove(id);
            return Err(RegistryError::NotFound { id: id.to_owned() });
        }
        Err(error.into_registry(&format!("{what} of {id}")))
    }

    /// berth's instances of `service` across the datacenter, from the catalog's
    /// `/v1/health/service/<name>`, each with the health of its `service:<id>` check, or
    /// critical when its liveness check `service:<id>:ttl` expired.
    ///
    /// With `passing_only`, only instances whose checks all pass, node checks included (as
    /// Consul's `?passing` and its DNS interface filter). Services not written by berth are
    /// left out: they have no [`Instance`] form.
    ///
    /// This reads the catalog, which agents update lazily when only a check's output changed
    /// (`check_update_interval`, 5 minutes by default): the status is current, the output may
    /// lag behind. For instances on the local agent's node, status and output are taken from
    /// the agent itself (`/v1/agent/checks`), which is always current.
    pub async fn lookup(
        &self,
        service: &str,
        passing_only: bool,
    ) -> Result<Vec<Instance>, RegistryError> {
        let what = format!("lookup of {service}");
        addressable(service, &what)?;
        let query = if passing_only { "?passing=true" } else { "" };
        let url = self.agent.url("/v1/health/service/", service, query);
        let checks_url = self.agent.url("/v1/agent/checks", "", "");
        let (entries, local) = tokio::try_join!(
            self.agent.get_json::<Vec<Value>>(&url),
            self.agent.get_json::<HashMap<String, Value>>(&checks_url),
        )
        .map_err(|e| e.into_registry(&what))?;

        let mut instances = Vec::new();
        for value in entries {
            let entry = match serde_json::from_value::<HealthEntry>(value) {
                Ok(entry) => entry,
                Err(error) => {
                    warn!(service.name = %service, %error, "unreadable entry in consul's health API; skipped");
                    continue;
                }
            };
            let local_check = |id: &str| {
                local
                    .get(id)
                    .and_then(|c| serde_json::from_value::<wire::Check>(c.clone()).ok())
                    .filter(|c| c.node == entry.node.node)
            };
            let check = check_id(&entry.service.id);
            let health = entry
                .checks
                .iter()
                .find(|c| c.check_id == check)
                .map_or_else(missing_check, |c| c.health());
            // For instances on the local agent, its own view is current; the catalog's
            // output may lag behind it (see above).
            let mut health = local_check(&check).map_or(health, |c| c.health());
            let ttl = ttl_check_id(&entry.service.id);
            let alive = local_check(&ttl)
                .or_else(|| entry.checks.iter().find(|c| c.check_id == ttl).cloned());
            if let Some(alive) = alive.filter(|c| c.health().status > health.status) {
                health = expired(&alive);
            }
            let mut found = entry.service;
            if found.address.is_empty() {
                // Consul's rule: a service without an address is reached at its node's.
                found.address = entry.node.address;
            }
            instances.extend(found.into_instance(health));
        }
        Ok(instances)
    }

    fn mine(&self) -> MutexGuard<'_, HashSet<String>> {
        // Only inserts and removes happen under it; a poisoned set is still a valid set.
        self.mine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_mine(&self, id: &str) -> bool {
        self.mine().contains(id)
    }

    /// Who holds service `id` on the agent.
    async fn holder(&self, id: &str) -> Result<Holder, ApiError> {
        let url = self.agent.url("/v1/agent/service/", id, "");
        let value = match self.agent.get_json::<Value>(&url).await {
            Ok(v) => v,
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(Holder::Nobody),
            Err(e) => return Err(e),
        };
        let instance = serde_json::from_value::<wire::Service>(value)
            .ok()
            .and_then(|s| s.into_instance(missing_check()));
        Ok(match instance {
            Some(i) if *i.origin.node == *self.node => {
                self.mine().insert(id.to_owned());
                Holder::ThisNode
            }
            Some(i) => Holder::Other(format!("berth on node {:?}", i.origin.node)),
            None => Holder::Other("a service berth did not register".to_owned()),
        })
    }

    async fn service_exists(&self, id: &str) -> Result<bool, ApiError> {
        let url = self.agent.url("/v1/agent/service/", id, "");
        match self.agent.get_json::<Value>(&url).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn check_exists(&self, check: &str) -> Result<bool, ApiError> {
        let url = self.agent.url("/v1/agent/checks", "", "");
        let checks = self.agent.get_json::<HashMap<String, Value>>(&url).await?;
        Ok(checks.contains_key(check))
    }
}

/// Who holds a service id on the agent.
enum Holder {
    Nobody,
    ThisNode,
    /// Another node's berth, or another tool; described for messages.
    Other(String),
}

/// Refuses names a URL path cannot carry: `.` and `..` are path steps, even escaped.
fn addressable(segment: &str, what: &str) -> Result<(), RegistryError> {
    if matches!(segment, "" | "." | "..") {
        return Err(RegistryError::Rejected {
            what: what.to_owned(),
            message: format!("{segment:?} cannot be addressed in a consul API path"),
        });
    }
    Ok(())
}
