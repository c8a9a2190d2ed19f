//! What only the Consul backend does, against a real `consul agent -dev`, one per test: what
//! Consul itself shows (`/v1/health/service`, `/v1/agent/checks`, …) for berth's two checks,
//! the answers Consul 1.8.7 gives and how they are read, timeouts, ACLs and TLS. The contract
//! every backend keeps is `registry_contract.rs`.
//!
//! The harness is blocking, so tests are plain `#[test]`s that drive the async client on a
//! runtime of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_e2e::consul::{ConsulServer, CustomConsul};
use berth_e2e::{Rt, wait_for};
use berth_registry::consul::{ConsulConfig, ConsulRegistry};
use berth_registry::{
    Health, Instance, META_CONTAINER_ID, META_CONTAINER_NAME, META_IMAGE, META_MANAGED, META_NODE,
    Origin, RegistryError, Status,
};
use serde_json::{Value, json};

const NODE: &str = "node1";

fn config(addr: &str) -> ConsulConfig {
    berth_e2e::crypto();
    ConsulConfig {
        addr: addr.to_owned(),
        node: NODE.to_owned(),
        ..ConsulConfig::default()
    }
}

fn registry(consul: &ConsulServer) -> ConsulRegistry {
    ConsulRegistry::new(config(&consul.addr())).unwrap()
}

fn instance(id: &str, name: &str, health: Health) -> Instance {
    Instance {
        id: id.to_owned(),
        name: name.to_owned(),
        address: "10.0.0.7".to_owned(),
        port: 32768,
        tags: vec!["http".to_owned(), "v1".to_owned()],
        meta: BTreeMap::from([("region".to_owned(), "eu".to_owned())]),
        origin: Origin {
            node: NODE.to_owned(),
            container_id: format!("c0ffee-{id}"),
            container_name: format!("{name}-1"),
            image: "nginx:1.27".to_owned(),
        },
        health,
    }
}

/// The agent's check `service:<id>`, if any.
fn agent_check(consul: &ConsulServer, id: &str) -> Option<Value> {
    consul
        .get("/v1/agent/checks")?
        .get(format!("service:{id}"))
        .cloned()
}

/// The `/v1/health/service/<name>` entries, once Consul's catalog holds `count` of them (the
/// health API reads the catalog, which the agent fills asynchronously).
fn health_entries(consul: &ConsulServer, name: &str, count: usize) -> Vec<Value> {
    wait_for(
        &format!("{count} catalog entries of {name}"),
        Duration::from_secs(10),
        || {
            let entries = consul.health(name);
            (entries.len() == count).then_some(entries)
        },
    )
}

fn service_check<'a>(entry: &'a Value, id: &str) -> &'a Value {
    entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == format!("service:{id}"))
        .unwrap_or_else(|| panic!("no check service:{id} in {entry:#}"))
}

#[test]
fn register_shows_the_instance_and_its_two_checks_in_consul() {
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    let web = instance("node1:web:80", "web", Health::passing("ok"));

    rt.run(reg.register(&web)).unwrap();

    let entries = health_entries(&consul, "web", 1);
    let service = &entries[0]["Service"];
    assert_eq!(service["ID"], "node1:web:80");
    assert_eq!(service["Address"], "10.0.0.7");
    assert_eq!(service["Port"], 32768);
    assert_eq!(service["Tags"], json!(["http", "v1"]));
    assert_eq!(service["EnableTagOverride"], false);
    assert_eq!(
        service["Meta"],
        json!({
            META_MANAGED: "true",
            META_NODE: NODE,
            META_CONTAINER_ID: "c0ffee-node1:web:80",
            META_CONTAINER_NAME: "web-1",
            META_IMAGE: "nginx:1.27",
            "region": "eu",
        })
    );

    // Two checks: health (status and output from probes or Docker) and liveness (the TTL
    // berth refreshes; Consul reaps the instance when it stays critical).
    let check = service_check(&entries[0], "node1:web:80");
    assert_eq!(check["Status"], "passing");
    assert_eq!(check["Name"], "berth health");
    assert_eq!(check["ServiceID"], "node1:web:80");
    let alive = entries[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["CheckID"] == "service:node1:web:80:ttl")
        .unwrap_or_else(|| panic!("no liveness check in {:#}", entries[0]));
    assert_eq!(alive["Status"], "passing");
    assert_eq!(alive["Name"], "berth TTL heartbeat");
    assert_eq!(alive["ServiceID"], "node1:web:80");
    // 1.8.7 does not show a TTL check's TTL anywhere; the notes carry it, and
    // `an_unrefreshed_ttl_turns_critical` checks that it is the TTL in force.
    assert_eq!(
        alive["Notes"],
        "Kept alive by the berth agent on node node1 for container web-1; turns critical when \
         berth stops heartbeating (TTL 15s) and is removed after 1m critical."
    );
    assert_eq!(agent_check(&consul, "node1:web:80").unwrap()["Type"], "ttl");
    assert_eq!(
        agent_check(&consul, "node1:web:80:ttl").unwrap()["Type"],
        "ttl"
    );
    assert_eq!(reg.describe(), format!("consul agent at {}", consul.addr()));
}

#[test]
fn a_registration_writes_its_health_even_over_a_critical_check() {
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    let web = instance("node1:web:80", "web", Health::passing("ok"));

    rt.run(reg.register(&web)).unwrap();
    rt.run(reg.set_health(&web.id, &Health::critical("down")))
        .unwrap();
    // Consul keeps an existing check's status on a re-registration; berth writes it again.
    rt.run(reg.register(&web)).unwrap();

    let services = consul.get("/v1/agent/services").unwrap();
    assert_eq!(services.as_object().unwrap().len(), 1, "{services:#}");
    let check = agent_check(&consul, &web.id).unwrap();
    assert_eq!(
        (check["Status"].as_str(), check["Output"].as_str()),
        (Some("passing"), Some("ok"))
    );

    // A registration that starts critical is critical in the catalog too.
    let db = instance("node1:db:5432", "db", Health::critical("probe failed"));
    rt.run(reg.register(&db)).unwrap();
    assert_eq!(agent_check(&consul, &db.id).unwrap()["Status"], "critical");
    let entries = health_entries(&consul, "db", 1);
    assert_eq!(service_check(&entries[0], &db.id)["Status"], "critical");
}

#[test]
fn health_output_is_capped_at_consuls_limit() {
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    let web = instance("node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();

    // Output is capped at 4096 bytes without splitting a character.
    let long = format!("x{}", "é".repeat(3000));
    rt.run(reg.set_health(&web.id, &Health::critical(long.clone())))
        .unwrap();
    let check = agent_check(&consul, &web.id).unwrap();
    assert_eq!(check["Status"], "critical");
    let output = check["Output"].as_str().unwrap();
    assert_eq!(output.len(), 4095);
    assert!(long.starts_with(output));
}

#[test]
fn ids_with_url_characters_reach_consul_intact() {
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    // Characters that must be escaped in the URL path.
    let odd = instance("node1:odd name/x?y#z%:80", "odd", Health::passing("ok"));
    rt.run(reg.register(&odd)).unwrap();
    let services = consul.get("/v1/agent/services").unwrap();
    assert!(services.get(&odd.id).is_some(), "{services:#}");
    assert!(agent_check(&consul, &odd.id).is_some());
    rt.run(reg.heartbeat(&odd.id)).unwrap();

    rt.run(reg.deregister(&odd.id)).unwrap();
    let services = consul.get("/v1/agent/services").unwrap();
    assert!(services.get(&odd.id).is_none(), "{services:#}");
    assert!(agent_check(&consul, &odd.id).is_none());
    health_entries(&consul, "odd", 0);
}

#[test]
fn list_tells_berths_instances_from_other_services_and_reads_missing_checks_as_critical() {
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    let api = instance("node1:api:8080", "api", Health::passing("ok"));
    rt.run(reg.register(&api)).unwrap();

    // Another tool's service, an unmarked look-alike, and one of ours whose check is gone.
    consul.put(
        "/v1/agent/service/register",
        &json!({"ID": "redis-1", "Name": "redis", "Port": 6379}),
    );
    consul.put(
        "/v1/agent/service/register",
        &json!({"ID": "node1:fake:1", "Name": "fake", "Port": 1,
                "Meta": {META_NODE: NODE, META_MANAGED: "false"}}),
    );
    let bare = instance("node1:bare:9000", "bare", Health::passing("ok"));
    consul.put(
        "/v1/agent/service/register",
        &json!({"ID": bare.id, "Name": "bare", "Address": bare.address, "Port": bare.port,
                "Tags": bare.tags, "Meta": bare.registry_meta()}),
    );

    let listing = rt.run(reg.list()).unwrap();
    let owned: BTreeMap<&str, &Instance> =
        listing.owned.iter().map(|i| (i.id.as_str(), i)).collect();
    assert_eq!(
        owned.keys().copied().collect::<Vec<_>>(),
        ["node1:api:8080", "node1:bare:9000"]
    );
    assert!(owned["node1:bare:9000"].same_registration(&bare));
    assert_eq!(owned["node1:bare:9000"].health.status, Status::Critical);
    for foreign in ["redis-1", "node1:fake:1"] {
        assert!(
            listing.foreign_ids.contains(foreign),
            "{foreign} not in {:?}",
            listing.foreign_ids
        );
    }

    // Another tool's service is never overwritten or removed, whatever id berth wants.
    let clash = instance("redis-1", "redis", Health::passing("ok"));
    let err = rt.run(reg.register(&clash)).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Rejected { message, .. } if message.contains("did not register")),
        "{err:?}"
    );
    rt.run(reg.deregister("redis-1")).unwrap();
    let services = consul.get("/v1/agent/services").unwrap();
    assert_eq!(services["redis-1"]["Port"], 6379, "{services:#}");
}

/// An id berth registered, that someone else removed and another tool then took, is looked
/// up again once a listing has shown it is no longer berth's: it is left alone.
#[test]
fn an_id_taken_over_by_another_tool_is_left_alone_after_the_next_listing() {
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    let web = instance("node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    consul.put("/v1/agent/service/deregister/node1:web:80", &json!(null));
    consul.put(
        "/v1/agent/service/register",
        &json!({"ID": web.id, "Name": "theirs", "Port": 1234}),
    );

    let listing = rt.run(reg.list()).unwrap();
    assert!(listing.owned.is_empty(), "{listing:?}");
    assert!(listing.foreign_ids.contains(&web.id));
    let err = rt.run(reg.register(&web)).unwrap_err();
    assert!(matches!(err, RegistryError::Rejected { .. }), "{err:?}");
    rt.run(reg.deregister(&web.id)).unwrap();
    let err = rt.run(reg.heartbeat(&web.id)).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    let services = consul.get("/v1/agent/services").unwrap();
    assert_eq!(services[&web.id]["Service"], "theirs", "{services:#}");
    assert_eq!(services[&web.id]["Port"], 1234, "{services:#}");
}

#[test]
fn heartbeat_and_set_health_after_a_consul_restart_are_not_found() {
    let mut consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    let web = instance("node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();

    consul.restart();

    // Consul reports the loss on the next write, not through an upkeep task.
    for err in [
        rt.run(reg.heartbeat(&web.id)).unwrap_err(),
        rt.run(reg.set_health(&web.id, &Health::passing("ok")))
            .unwrap_err(),
    ] {
        assert!(
            matches!(&err, RegistryError::NotFound { id } if id == &web.id),
            "{err:?}"
        );
    }
    rt.run(reg.register(&web)).unwrap();
    rt.run(reg.set_health(&web.id, &Health::passing("back")))
        .unwrap();
    assert_eq!(agent_check(&consul, &web.id).unwrap()["Output"], "back");
}

#[test]
fn an_unrefreshed_ttl_turns_critical() {
    let consul = ConsulServer::start();
    let reg = ConsulRegistry::new(ConsulConfig {
        ttl: Duration::from_secs(1),
        ..config(&consul.addr())
    })
    .unwrap();
    let rt = Rt::new();
    let web = instance("node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    let ttl_id = format!("{}:ttl", web.id);
    let check = agent_check(&consul, &ttl_id).unwrap();
    assert!(
        check["Notes"].as_str().unwrap().contains("(TTL 1s)"),
        "{check:#}"
    );

    // Heartbeats keep it passing past its TTL, and leave the health check alone …
    rt.run(reg.set_health(&web.id, &Health::critical("probe failed")))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        rt.run(reg.heartbeat(&web.id)).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(agent_check(&consul, &ttl_id).unwrap()["Status"], "passing");
    let health = agent_check(&consul, &web.id).unwrap();
    assert_eq!(
        (health["Status"].as_str(), health["Output"].as_str()),
        (Some("critical"), Some("probe failed")),
        "a heartbeat must not overwrite the health"
    );

    // … and without them it turns critical.
    let check = wait_for("the TTL to expire", Duration::from_secs(5), || {
        agent_check(&consul, &ttl_id).filter(|c| c["Status"] == "critical")
    });
    assert!(
        check["Output"].as_str().unwrap().contains("TTL expired"),
        "{check:#}"
    );
    // An expired liveness check makes the instance critical in berth's own reading too.
    let listing = rt.run(reg.list()).unwrap();
    assert_eq!(listing.owned.len(), 1);
    assert_eq!(listing.owned[0].health.status, Status::Critical);
}

fn assert_unavailable_within(limit: Duration, what: &str, call: impl FnOnce() -> RegistryError) {
    let start = Instant::now();
    let err = call();
    let took = start.elapsed();
    assert!(
        matches!(err, RegistryError::Unavailable { .. }) && err.is_transient(),
        "{what}: {err:?}"
    );
    assert!(took < limit, "{what} took {took:?}");
}

#[test]
fn a_consul_that_is_down_is_unavailable_within_the_request_timeout() {
    let mut consul = ConsulServer::start();
    let timeout = Duration::from_millis(800);
    let reg = ConsulRegistry::new(ConsulConfig {
        request_timeout: timeout,
        ..config(&consul.addr())
    })
    .unwrap();
    let rt = Rt::new();
    let web = instance("node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();

    consul.stop();
    let refused = rt.run(reg.list()).unwrap_err();
    let chain = berth_e2e::error_chain(&refused).join(": ");
    assert!(chain.contains("cannot reach consul"), "{chain}");
    let limit = timeout + Duration::from_millis(500);
    assert_unavailable_within(limit, "heartbeat", || {
        rt.run(reg.set_health(&web.id, &Health::passing("ok")))
            .unwrap_err()
    });
    assert_unavailable_within(limit, "register", || {
        rt.run(reg.register(&web)).unwrap_err()
    });
    assert_unavailable_within(limit, "deregister", || {
        rt.run(reg.deregister(&web.id)).unwrap_err()
    });
    assert_unavailable_within(limit, "list", || rt.run(reg.list()).unwrap_err());

    // A Consul that accepts connections but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = ConsulRegistry::new(ConsulConfig {
        request_timeout: timeout,
        ..config(&silent.local_addr().unwrap().to_string())
    })
    .unwrap();
    let start = Instant::now();
    assert_unavailable_within(limit, "heartbeat to a silent server", || {
        rt.run(hung.set_health(&web.id, &Health::passing("ok")))
            .unwrap_err()
    });
    assert!(start.elapsed() >= timeout - Duration::from_millis(100));
}

/// A burst of stopping containers writes for each at once. Consul's agent keeps at most
/// `http_max_conns_per_client` (200) connections from one address and closes the rest, so
/// the client must queue its requests instead of opening a connection per write.
#[test]
fn a_burst_of_writes_past_consuls_connection_limit_all_land() {
    const N: usize = 300;
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    let instances: Vec<Instance> = (0..N)
        .map(|i| {
            instance(
                &format!("node1:burst-{i}:80"),
                "burst",
                Health::passing("ok"),
            )
        })
        .collect();

    // Every call of a phase in flight at once; the errors, if any.
    let all_at_once = |phase: &'static str| -> Vec<String> {
        rt.run(async {
            let mut calls = tokio::task::JoinSet::new();
            for web in &instances {
                let (reg, web) = (reg.clone(), web.clone());
                calls.spawn(async move {
                    let result = match phase {
                        "register" => reg.register(&web).await,
                        "health" => reg.set_health(&web.id, &Health::critical("stopping")).await,
                        _ => reg.deregister(&web.id).await,
                    };
                    result.map_err(|e| format!("{phase} of {}: {e}", web.id))
                });
            }
            calls
                .join_all()
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect()
        })
    };

    for phase in ["register", "health", "deregister"] {
        let errors = all_at_once(phase);
        assert!(
            errors.is_empty(),
            "{} of {N} {phase} calls failed, e.g. {:?}",
            errors.len(),
            &errors[..errors.len().min(3)]
        );
        let services = consul.get("/v1/agent/services").unwrap();
        let held = services.as_object().unwrap().len();
        let expected = if phase == "deregister" { 0 } else { N };
        assert_eq!(held, expected, "services on the agent after {phase}");
        if phase == "health" {
            let checks = consul.get("/v1/agent/checks").unwrap();
            let critical = instances
                .iter()
                .filter(|i| checks[format!("service:{}", i.id)]["Status"] == "critical")
                .count();
            assert_eq!(critical, N, "health checks turned critical");
        }
    }
}

#[test]
fn lookup_takes_local_output_from_the_agent_and_skips_other_services() {
    let consul = ConsulServer::start();
    let reg = registry(&consul);
    let rt = Rt::new();
    // Starts critical so the health write changes its status: the agent syncs an output-only
    // change to the catalog lazily (`check_update_interval`, 5 minutes by default).
    let good = instance("node1:api:8080", "api", Health::critical("starting"));
    rt.run(reg.register(&good)).unwrap();
    rt.run(reg.set_health(&good.id, &Health::passing("200 OK")))
        .unwrap();
    consul.put(
        "/v1/agent/service/register",
        &json!({"ID": "api-by-hand", "Name": "api", "Port": 1}),
    );
    health_entries(&consul, "api", 2);
    let all = rt.run(reg.lookup("api", false)).unwrap();
    assert_eq!(all.len(), 1, "only berth's instances: {all:#?}");
    assert_eq!(all[0].health, Health::passing("200 OK"));

    // An output-only change is current at once: the local agent's view is read for it.
    rt.run(reg.set_health(&good.id, &Health::passing("200 OK (3 ms)")))
        .unwrap();
    let all = rt.run(reg.lookup("api", false)).unwrap();
    assert_eq!(all[0].health, Health::passing("200 OK (3 ms)"));
}

/// Waits until `reg` can list `consul`.
fn wait_ready(consul: &CustomConsul, rt: &Rt, reg: &ConsulRegistry) {
    let start = Instant::now();
    while let Err(e) = rt.run(reg.list()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "consul did not come up: {e:?}\n{}",
            consul.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_acls_the_token_is_sent_and_denials_are_rejected() {
    let consul = CustomConsul::start(
        berth_e2e::temp_dir("consul-acl"),
        "http",
        r#"acl { enabled = true default_policy = "deny" tokens { master = "berth-root" } }"#,
    );
    let rt = Rt::new();
    let reg = ConsulRegistry::new(ConsulConfig {
        token: Some("berth-root".to_owned()),
        ..config(&consul.addr("http"))
    })
    .unwrap();
    assert!(!format!("{reg:?}").contains("berth-root"));
    wait_ready(&consul, &rt, &reg);
    let web = instance("node1:web:80", "web", Health::passing("ok"));

    // Without a token: denied, and not worth retrying.
    let anonymous = ConsulRegistry::new(config(&consul.addr("http"))).unwrap();
    let err = rt.run(anonymous.register(&web)).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Rejected { message, .. } if message.contains("ACL")),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let wrong = ConsulRegistry::new(ConsulConfig {
        token: Some("not-a-token".to_owned()),
        ..config(&consul.addr("http"))
    })
    .unwrap();
    let err = rt.run(wrong.list()).unwrap_err();
    assert!(matches!(err, RegistryError::Rejected { .. }), "{err:?}");

    // With it: the whole life cycle, including the answers 1.8.7 gives only with ACLs on
    // (500 for an unknown check or service).
    rt.run(reg.register(&web)).unwrap();
    rt.run(reg.set_health(&web.id, &Health::passing("ok")))
        .unwrap();
    assert_eq!(rt.run(reg.list()).unwrap().owned.len(), 1);
    rt.run(reg.deregister(&web.id)).unwrap();
    rt.run(reg.deregister(&web.id)).unwrap();
    let err = rt
        .run(reg.set_health(&web.id, &Health::passing("ok")))
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate() {
    let dir = berth_e2e::temp_dir("consul-tls");
    berth_e2e::consul::make_certs(&dir);
    let file = |name: &str| dir.join(name);
    let hcl = format!(
        r#"ca_file = "{}" cert_file = "{}" key_file = "{}" verify_incoming_https = true"#,
        file("consul-agent-ca.pem").display(),
        file("dc1-server-consul-0.pem").display(),
        file("dc1-server-consul-0-key.pem").display(),
    );
    let consul = CustomConsul::start(dir.clone(), "https", &hcl);
    let rt = Rt::new();
    let tls = ConsulConfig {
        ca_cert: Some(file("consul-agent-ca.pem")),
        client_cert: Some(file("dc1-client-consul-0.pem")),
        client_key: Some(file("dc1-client-consul-0-key.pem")),
        request_timeout: Duration::from_secs(2),
        ..config(&consul.addr("https"))
    };
    let reg = ConsulRegistry::new(tls.clone()).unwrap();
    wait_ready(&consul, &rt, &reg);

    let web = instance("node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    rt.run(reg.set_health(&web.id, &Health::passing("over tls")))
        .unwrap();
    let listing = rt.run(reg.list()).unwrap();
    assert_eq!(listing.owned[0].health, Health::passing("over tls"));

    // The agent demands a client certificate …
    let no_identity = ConsulRegistry::new(ConsulConfig {
        client_cert: None,
        client_key: None,
        ..tls.clone()
    })
    .unwrap();
    let err = rt.run(no_identity.list()).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Unavailable { message, .. } if message.contains("TLS")),
        "{err:?}"
    );
    berth_e2e::error_chain(&err);
    // … and the system roots do not know the private CA …
    let no_ca = ConsulRegistry::new(ConsulConfig {
        ca_cert: None,
        ..tls.clone()
    })
    .unwrap();
    let err = rt.run(no_ca.list()).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Unavailable { message, .. } if message.contains("TLS")),
        "{err:?}"
    );
    // The reason is said once, by the rustls error down the chain.
    let chain = berth_e2e::error_chain(&err).join(": ");
    assert_eq!(chain.matches("UnknownIssuer").count(), 1, "{chain}");
    // … unless verification is off.
    let unverified = ConsulRegistry::new(ConsulConfig {
        ca_cert: None,
        tls_skip_verify: true,
        ..tls.clone()
    })
    .unwrap();
    assert_eq!(rt.run(unverified.list()).unwrap().owned.len(), 1);

    // A key that is not a key is reported by file name when the registry is built.
    let bad_key = ConsulRegistry::new(ConsulConfig {
        client_key: Some(file("consul-agent-ca.pem")),
        ..tls
    })
    .unwrap_err();
    assert!(
        matches!(&bad_key, RegistryError::Config(m) if m.contains("consul-agent-ca.pem")),
        "{bad_key:?}"
    );
}
