//! The JSON berth writes to and reads from Consul's HTTP API, and the conversions to and from
//! [`Instance`].
//!
//! Reads are lenient: every field may be missing or `null`, and one malformed entry never
//! fails a whole listing (callers decode entry by entry).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::instance::{Health, Instance, Status};
use crate::limits::truncate_output;

/// Name of the check carrying the instance's health, as the Consul UI shows it.
pub(super) const HEALTH_CHECK_NAME: &str = "berth health";
/// Name of berth's liveness check, as the Consul UI shows it.
pub(super) const TTL_CHECK_NAME: &str = "berth TTL heartbeat";

/// TTL of the health check. It is written when the status changes, never on a schedule, so it
/// must not expire by itself; the liveness check is what expires when berth stops.
const HEALTH_CHECK_TTL: &str = "87600h";

/// Output of the liveness check while berth heartbeats it.
const ALIVE_OUTPUT: &str = "berth is heartbeating";

/// The id of the check carrying the health of service `id`.
pub(super) fn check_id(id: &str) -> String {
    format!("service:{id}")
}

/// The id of the liveness check of service `id`, refreshed by every heartbeat.
pub(super) fn ttl_check_id(id: &str) -> String {
    format!("service:{id}:ttl")
}

/// Body of `PUT /v1/agent/service/register`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Registration<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    address: &'a str,
    port: u16,
    tags: &'a [String],
    meta: BTreeMap<String, String>,
    enable_tag_override: bool,
    checks: [TtlCheck; 2],
}

/// The two checks each instance carries: its health (`service:<id>`, written when the status
/// changes) and berth's liveness (`service:<id>:ttl`, refreshed by every heartbeat, and the
/// only one Consul reaps on). Keeping them apart means an instance whose probe fails stays
/// registered (critical, out of DNS) instead of being reaped and registered again in a loop.
///
/// Consul 1.8.7 refuses unknown fields here (400), so this holds exactly what it accepts;
/// there is no initial `Output`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TtlCheck {
    #[serde(rename = "CheckID")]
    check_id: String,
    name: &'static str,
    #[serde(rename = "TTL")]
    ttl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_critical_service_after: Option<String>,
    status: &'static str,
    notes: String,
}

impl<'a> Registration<'a> {
    pub(super) fn new(
        instance: &'a Instance,
        ttl: Duration,
        deregister_critical_after: Duration,
    ) -> Self {
        let (ttl, reap) = (go_duration(ttl), go_duration(deregister_critical_after));
        let origin = &instance.origin;
        let container = if origin.container_name.is_empty() {
            &origin.container_id
        } else {
            &origin.container_name
        };
        let alive_notes = format!(
            "Kept alive by the berth agent on node {} for container {container}; turns \
             critical when berth stops heartbeating (TTL {ttl}) and is removed after {reap} \
             critical.",
            origin.node
        );
        let health_notes = format!(
            "Health of container {container} as the berth agent on node {} sees it (its \
             probes, or Docker's HEALTHCHECK); written when the status changes.",
            origin.node
        );
        Registration {
            id: &instance.id,
            name: &instance.name,
            address: &instance.address,
            port: instance.port,
            tags: &instance.tags,
            meta: instance.registry_meta(),
            enable_tag_override: false,
            checks: [
                TtlCheck {
                    check_id: check_id(&instance.id),
                    name: HEALTH_CHECK_NAME,
                    ttl: HEALTH_CHECK_TTL.to_owned(),
                    deregister_critical_service_after: None,
                    // The check starts in the instance's state. On a re-registration Consul
                    // 1.8.7 keeps the current status of an existing check instead.
                    status: instance.health.status.as_str(),
                    notes: health_notes,
                },
                TtlCheck {
                    check_id: ttl_check_id(&instance.id),
                    name: TTL_CHECK_NAME,
                    ttl,
                    deregister_critical_service_after: Some(reap),
                    status: "passing",
                    notes: alive_notes,
                },
            ],
        }
    }
}

/// Body of `PUT /v1/agent/check/update/<check id>`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CheckUpdate<'a> {
    status: &'static str,
    output: &'a str,
}

impl<'a> CheckUpdate<'a> {
    pub(super) fn new(health: &'a Health) -> Self {
        CheckUpdate {
            status: health.status.as_str(),
            output: truncate_output(&health.output),
        }
    }

    /// The liveness check's update: passing, with a fixed output.
    pub(super) fn alive() -> Self {
        CheckUpdate {
            status: "passing",
            output: ALIVE_OUTPUT,
        }
    }
}

/// A service as `/v1/agent/services` and the `Service` of `/v1/health/service/<name>` show it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Service {
    #[serde(rename = "ID", deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub service: String,
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub port: u16,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub meta: BTreeMap<String, String>,
}

impl Service {
    /// The berth instance this service is, if it is one; `None` for anyone else's.
    pub(super) fn into_instance(self, health: Health) -> Option<Instance> {
        Instance::from_registry(
            self.id,
            self.service,
            self.address,
            self.port,
            self.tags,
            self.meta,
            health,
        )
    }
}

/// A check as `/v1/agent/checks` and the `Checks` of `/v1/health/service/<name>` show it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Check {
    #[serde(rename = "CheckID", deserialize_with = "nullable")]
    pub check_id: String,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub output: String,
    /// The Consul node the check runs on.
    #[serde(deserialize_with = "nullable")]
    pub node: String,
}

impl Check {
    pub(super) fn health(&self) -> Health {
        let status = match self.status.as_str() {
            "passing" => Status::Passing,
            "warning" => Status::Warning,
            // "critical", "maintenance" and anything newer.
            _ => Status::Critical,
        };
        Health {
            status,
            output: self.output.clone(),
        }
    }
}

/// Health of an instance whose berth health check is missing.
pub(super) fn missing_check() -> Health {
    Health::critical("consul has no berth health check for this instance")
}

/// Health of an instance whose liveness check expired: berth stopped heartbeating.
pub(super) fn expired(ttl_check: &Check) -> Health {
    let mut health = ttl_check.health();
    if health.output.is_empty() || health.output == ALIVE_OUTPUT {
        health.output = "berth stopped heartbeating (TTL expired)".to_owned();
    }
    health
}

/// One element of `/v1/health/service/<name>`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct HealthEntry {
    #[serde(deserialize_with = "nullable")]
    pub node: Node,
    #[serde(deserialize_with = "nullable")]
    pub service: Service,
    #[serde(deserialize_with = "nullable")]
    pub checks: Vec<Check>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct Node {
    #[serde(deserialize_with = "nullable")]
    pub node: String,
    #[serde(deserialize_with = "nullable")]
    pub address: String,
}

/// `null` reads as the default, like a missing field.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// A duration as Go's `time.ParseDuration` reads it and an operator writes it: `15s`, `1m`,
/// `1h2m3s`, or `1500ms` when it has a fraction of a second (sub-millisecond parts dropped).
pub(super) fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (value, unit) in [(secs / 3600, 'h'), (secs / 60 % 60, 'm'), (secs % 60, 's')] {
        if value > 0 {
            let _ = write!(out, "{value}{unit}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn durations_read_like_go() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_millis(1500), "1500ms"),
        ] {
            assert_eq!(go_duration(d), want);
        }
    }

    #[test]
    fn missing_and_null_fields_read_as_defaults() {
        let s: Service =
            serde_json::from_str(r#"{"ID":"x","Tags":null,"Meta":null,"Port":null}"#).unwrap();
        assert_eq!((s.id.as_str(), s.port, s.tags.len()), ("x", 0, 0));
        let e: HealthEntry = serde_json::from_str(r#"{"Checks":null}"#).unwrap();
        assert!(e.checks.is_empty() && e.service.id.is_empty());
    }

    #[test]
    fn unknown_statuses_are_critical() {
        let c = Check {
            status: "maintenance".into(),
            ..Check::default()
        };
        assert_eq!(c.health().status, Status::Critical);
    }
}
