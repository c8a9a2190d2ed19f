//! Write amplification: with nothing changing, every registry call made over ten resyncs,
//! by endpoint. Consul's calls are counted by an HTTP proxy between berth and the agent;
//! etcd's by etcd itself (its gRPC counters by method).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_e2e::backend::Kind;
use berth_e2e::proxy::{HttpProxy, Upstream};
use serde_json::json;

use super::{Outcome, web};
use crate::Ctx;
use crate::registry::Registry;
use crate::report::Rows;

const CONTAINERS: usize = 20;
const RESYNC: Duration = Duration::from_secs(2);
const TTL: Duration = Duration::from_secs(15);

pub async fn run(ctx: &Ctx, kind: Kind) -> Outcome {
    let registry = Registry::start(kind).await?;
    let service = "bench-writes";
    let timeline = registry.watch(service).await?;
    let proxy = match kind {
        Kind::Consul => {
            let addr = registry.consul_addr();
            let addr = addr.trim_start_matches("http://").parse()?;
            Some(HttpProxy::start(Upstream::Tcp(addr)))
        }
        Kind::Etcd => None,
    };
    let resync = format!("{}s", RESYNC.as_secs());
    let ttl = format!("{}s", TTL.as_secs());
    // Consul through the counting proxy.
    let registry_args = match &proxy {
        Some(p) => vec!["--consul-addr".to_owned(), format!("http://{}", p.addr())],
        None => registry.agent_args(),
    };
    let (mut agent, _) = ctx.agent_with(&registry_args, &["--resync", &resync, "--ttl", &ttl])?;
    agent.ready(Duration::from_secs(60)).await?;
    let names: Vec<String> = (0..CONTAINERS).map(|i| ctx.name("writes", i)).collect();
    let specs: Vec<_> = names.iter().map(|n| web(n.clone(), service)).collect();
    let ids = ctx.fleet.create_all(&specs, 16).await?;
    ctx.fleet.each(&ids, 8, |f, id| f.start(id)).await?;
    timeline
        .wait("every container registered", Duration::from_secs(60), |c| {
            c.len() == CONTAINERS
        })
        .await?;
    // Let the writes of the start settle.
    tokio::time::sleep(RESYNC).await;

    let resyncs = ctx.sizes.resyncs;
    let window = RESYNC * resyncs;
    let berth_before = agent.metrics().await?;
    let etcd_before = match kind {
        Kind::Etcd => registry.etcd_calls().await?,
        Kind::Consul => BTreeMap::new(),
    };
    if let Some(p) = &proxy {
        p.clear();
    }
    tokio::time::sleep(window).await;
    let berth_after = agent.metrics().await?;
    let calls: BTreeMap<String, f64> = match (&proxy, kind) {
        (Some(p), _) => p
            .count_by(consul_endpoint)
            .into_iter()
            .map(|(k, v)| (k, v as f64))
            .collect(),
        (None, _) => {
            let after = registry.etcd_calls().await?;
            after
                .into_iter()
                .map(|(k, v)| {
                    let d = v - etcd_before.get(&k).copied().unwrap_or(0.0);
                    (k, d)
                })
                .filter(|(_, d)| *d > 0.0)
                .collect()
        }
    };
    agent.stop().await?;

    let delta = |op: &str| {
        let f = format!("op=\"{op}\"");
        crate::agent::sum_series(&berth_after, "berth_registry_writes_total", &f)
            - crate::agent::sum_series(&berth_before, "berth_registry_writes_total", &f)
    };
    let content_writes = delta("register") + delta("deregister") + delta("health");
    let heartbeats = delta("heartbeat");
    let listings = match kind {
        Kind::Consul => calls.get("GET /v1/agent/services").copied().unwrap_or(0.0),
        // etcd's reads cannot be told apart by purpose: count berth's own listings.
        Kind::Etcd => {
            let (name, f) = (
                "berth_registry_request_duration_seconds_count",
                "op=\"list\"",
            );
            crate::agent::sum_series(&berth_after, name, f)
                - crate::agent::sum_series(&berth_before, name, f)
        }
    };
    let (registry_writes, registry_reads) = classify(kind, &calls);
    let registry_writes = match kind {
        Kind::Consul => registry_writes,
        // A transaction may read or write: count the keys etcd wrote instead.
        Kind::Etcd => {
            let after = registry.etcd_calls().await?;
            ["mvcc: put", "mvcc: delete"]
                .iter()
                .map(|k| {
                    after.get(*k).copied().unwrap_or(0.0)
                        - etcd_before.get(*k).copied().unwrap_or(0.0)
                })
                .sum()
        }
    };

    let mut rows = Rows::new("writes", kind.to_string());
    rows.info(
        "window",
        format!("{resyncs} resyncs of {RESYNC:?}, {CONTAINERS} instances, ttl {TTL:?}"),
    );
    rows.check(
        "writes (register, deregister, health) by berth",
        format!("{content_writes}"),
        "0",
        content_writes == 0.0,
    );
    rows.check(
        "writes as the registry counted them (heartbeats aside)",
        format!("{registry_writes}"),
        "0",
        registry_writes == 0.0,
    );
    let per_resync = listings / f64::from(resyncs);
    rows.check(
        "listings per resync",
        format!("{per_resync:.2}"),
        "≤ 1",
        per_resync <= 1.0,
    );
    rows.info(
        "reads in the window (etcd: ranges and transactions)",
        format!("{registry_reads}"),
    );
    rows.info(
        "heartbeats (expected: instances × window ÷ ttl/3)",
        format!(
            "{heartbeats} (≈{:.0})",
            CONTAINERS as f64 * window.as_secs_f64() / (TTL.as_secs_f64() / 3.0)
        ),
    );
    for (endpoint, n) in &calls {
        rows.info(format!("calls: {endpoint}"), format!("{n}"));
    }
    let data = json!({
        "resyncs": resyncs,
        "resync_s": RESYNC.as_secs(),
        "instances": CONTAINERS,
        "berth_content_writes": content_writes,
        "berth_heartbeats": heartbeats,
        "listings": listings,
        "calls_by_endpoint": calls,
    });
    Ok((rows, data))
}

/// A Consul request as `METHOD /path`, ids replaced by what they are.
pub fn consul_endpoint(method: &str, path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    let generic = if let Some(check) = path.strip_prefix("/v1/agent/check/update/") {
        if check.ends_with("%3Attl") || check.ends_with(":ttl") {
            "/v1/agent/check/update/service:<id>:ttl".to_owned()
        } else {
            "/v1/agent/check/update/service:<id>".to_owned()
        }
    } else if path.starts_with("/v1/agent/service/deregister/") {
        "/v1/agent/service/deregister/<id>".to_owned()
    } else if path == "/v1/agent/service/register" {
        path.to_owned()
    } else if path.starts_with("/v1/agent/service/") {
        "/v1/agent/service/<id>".to_owned()
    } else {
        path.to_owned()
    };
    format!("{method} {generic}")
}

/// Writes other than heartbeats, and reads, as the registry counted them.
fn classify(kind: Kind, calls: &BTreeMap<String, f64>) -> (f64, f64) {
    let (mut writes, mut reads) = (0.0, 0.0);
    for (endpoint, n) in calls {
        let is_heartbeat = match kind {
            Kind::Consul => endpoint.ends_with(":ttl"),
            Kind::Etcd => endpoint.contains("LeaseKeepAlive") || endpoint.starts_with("mvcc"),
        };
        let is_read = match kind {
            Kind::Consul => endpoint.starts_with("GET "),
            // Transactions may be either (berth's listing batches its reads in one): etcd's
            // writes are counted by key instead, by the caller.
            Kind::Etcd => endpoint.contains("Range") || endpoint.contains("Txn"),
        };
        if is_heartbeat {
            continue;
        }
        if is_read {
            reads += n;
        } else {
            writes += n;
        }
    }
    (writes, reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_endpoints_are_generic() {
        assert_eq!(
            consul_endpoint(
                "PUT",
                "/v1/agent/check/update/service%3Abench%3Ax%3A80%3Attl"
            ),
            "PUT /v1/agent/check/update/service:<id>:ttl"
        );
        assert_eq!(
            consul_endpoint("PUT", "/v1/agent/check/update/service%3Abench%3Ax%3A80"),
            "PUT /v1/agent/check/update/service:<id>"
        );
        assert_eq!(
            consul_endpoint(
                "PUT",
                "/v1/agent/service/register?replace-existing-checks=true"
            ),
            "PUT /v1/agent/service/register"
        );
        assert_eq!(
            consul_endpoint("GET", "/v1/agent/service/bench%3Ax%3A80"),
            "GET /v1/agent/service/<id>"
        );
        assert_eq!(
            consul_endpoint("GET", "/v1/agent/services"),
            "GET /v1/agent/services"
        );
    }
}
