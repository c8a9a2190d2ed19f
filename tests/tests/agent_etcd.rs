//! End to end, etcd only: the `berth` binary against the real Docker engine and a real etcd,
//! for what only the etcd backend has — the key layout and its JSON value, one lease per
//! agent, etcd restarts and lost leases, writes seen by a watcher, several nodes under one
//! prefix — plus the etcd harness itself.
//!
//! The registry contract, which Consul and etcd both meet, is in `contract.rs`. As there,
//! each test has its own etcd and key prefix, its own agent (unique `--node-name`) and its
//! own service names, and a failing step panics with what it saw, the keys under the prefix,
//! etcd's log tail and the agents' log tails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_e2e::backend::{Backend, Found, Kind, show};
use berth_e2e::docker::{self, unique_name};
use berth_e2e::env::{Env, Expect, SETTLE, TTL, check_gone, check_one, httpd_labelled, matches};
use berth_e2e::etcd::{EtcdServer, EventKind, Kv, Watch};
use serde_json::{Value, json};

/// Every key under the test's prefix.
fn all_keys(b: &Backend) -> Result<Vec<Kv>, String> {
    b.etcd().try_get_prefix(&format!("{}/", b.prefix()))
}

/// The one lease every key under the prefix carries; `Err` if a key has none or they differ.
fn one_lease(kvs: &[Kv]) -> Result<i64, String> {
    let leases: BTreeSet<i64> = kvs.iter().map(|kv| kv.lease).collect();
    match leases.iter().copied().collect::<Vec<_>>().as_slice() {
        [l] if *l != 0 => Ok(*l),
        _ => Err(format!(
            "want one non-zero lease on every key: {}",
            keys_text(kvs)
        )),
    }
}

fn keys_text(kvs: &[Kv]) -> String {
    kvs.iter()
        .map(|kv| format!("\n    {} lease={:x} ver={}", kv.key, kv.lease, kv.version))
        .collect()
}

/// The instances of `name` registered by `node`.
fn of_node(b: &Backend, name: &str, node: &str) -> Result<Vec<Found>, String> {
    Ok(b.instances(name)?
        .into_iter()
        .filter(|f| f.node == node)
        .collect())
}

/// Exactly one instance of `e.name` from `node`, matching `e` (other nodes' are ignored).
fn check_one_of_node(b: &Backend, node: &str, e: &Expect) -> Result<(), String> {
    match of_node(b, &e.name, node)?.as_slice() {
        [f] => matches(f, node, e),
        other => Err(format!(
            "instances of {} from {node}: {}",
            e.name,
            show(other)
        )),
    }
}

/// Each expected instance of this env's node is the one passing instance of its service,
/// its two keys are there, and every key under the prefix is on one live lease other than
/// `not`; returns that lease. (Other keys are there too: the agent sees the whole engine
/// and registers other tests' containers as well.)
fn check_all_on_one_live_lease(
    b: &Backend,
    node: &str,
    want: &[Expect],
    not: i64,
) -> Result<i64, String> {
    for e in want {
        check_one(b, node, e)?;
    }
    let kvs = all_keys(b)?;
    let mut expected: Vec<String> = want
        .iter()
        .flat_map(|e| [b.instance_key(&e.name, &e.id), b.node_key(node, &e.id)])
        .collect();
    expected.sort();
    let got: Vec<String> = kvs
        .iter()
        .map(|kv| kv.key.clone())
        .filter(|k| expected.contains(k))
        .collect();
    if got != expected {
        return Err(format!("keys {got:?}, want {expected:?}"));
    }
    let lease = one_lease(&kvs)?;
    if lease == not {
        return Err(format!("still on lease {lease:x}: {}", keys_text(&kvs)));
    }
    match b.etcd().lease_ttl(lease) {
        Some((ttl, _)) if ttl > 0 => Ok(lease),
        other => Err(format!("lease {lease:x} is not alive: {other:?}")),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn parse_utc(s: &str) -> Option<i64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    frac.parse::<u64>().ok()?;
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    if !(1..=12).contains(m) || !(1..=31).contains(day) || *hh > 23 || *mm > 59 || *ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

// ---------------------------------------------------------------------------------------
// The harness itself (needs no agent).

#[test]
fn harness_etcd_put_get_watch_restart() {
    assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_utc("2026-11-22T07:30:00.123Z"), Some(1_795_332_600));
    assert_eq!(parse_utc("2026-11-22 07:30:00"), None);

    let mut etcd = EtcdServer::start();
    assert_eq!(
        etcd.endpoint(),
        format!("http://127.0.0.1:{}", etcd.client_port)
    );
    let watch = Watch::start(&etcd, "/h/");
    etcd.put("/h/a", "plain value");
    let lease = etcd.lease_grant(60);
    assert_ne!(lease, 0);
    etcd.put_with_lease("/h/b", r#"{"x":1}"#, lease);
    etcd.put("/other", "not under the prefix");
    etcd.delete("/h/a");

    let kvs = etcd.get_prefix("/h/");
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    assert_eq!(
        (
            kvs[0].key.as_str(),
            kvs[0].json(),
            kvs[0].lease,
            kvs[0].version
        ),
        ("/h/b", json!({"x": 1}), lease, 1)
    );
    let (ttl, granted) = etcd.lease_ttl(lease).expect("lease alive");
    assert!(ttl > 0 && ttl <= 60 && granted == 60, "{ttl}/{granted}");

    // The watch started before the writes, so it has every one of them, whenever it
    // actually connected.
    let want = [
        (EventKind::Put, "/h/a", 0),
        (EventKind::Put, "/h/b", lease),
        (EventKind::Delete, "/h/a", 0),
    ];
    let seen = |events: &[berth_e2e::etcd::Event]| -> Vec<(EventKind, String, i64)> {
        events
            .iter()
            .map(|e| (e.kind, e.key.clone(), e.lease))
            .collect()
    };
    let want: Vec<(EventKind, String, i64)> = want
        .iter()
        .map(|(k, key, l)| (*k, key.to_string(), *l))
        .collect();
    let ok = watch.wait_until(SETTLE, |events| seen(events) == want);
    assert!(ok, "want {want:?}\n{}", watch.describe());
    assert_eq!(watch.events_for("/h/b")[0].value, r#"{"x":1}"#);
    assert!(watch.errors().is_empty(), "{}", watch.describe());

    // A plain restart keeps keys and leases.
    etcd.restart();
    let kvs = etcd.get_prefix("/h/");
    assert_eq!(
        kvs.iter()
            .map(|kv| (kv.key.as_str(), kv.lease))
            .collect::<Vec<_>>(),
        [("/h/b", lease)]
    );
    assert!(etcd.lease_ttl(lease).is_some(), "lease lost by restart");
    assert_eq!(
        etcd.get("/other").map(|kv| kv.value).as_deref(),
        Some("not under the prefix")
    );

    // Revoking a lease deletes its keys.
    etcd.lease_revoke(lease);
    assert!(etcd.get_prefix("/h/").is_empty());
    assert_eq!(etcd.lease_ttl(lease), None);

    // A wiped restart loses everything.
    let lease = etcd.lease_grant(60);
    etcd.put_with_lease("/h/c", "c", lease);
    etcd.restart_wiped();
    assert!(etcd.get_prefix("/").is_empty(), "{}", etcd.describe("/"));
    assert_eq!(etcd.lease_ttl(lease), None);
    etcd.put("/h/d", "d");
    assert_eq!(etcd.get("/h/d").map(|kv| kv.value).as_deref(), Some("d"));
    assert!(
        etcd.log().contains("ready to serve client requests"),
        "{}",
        etcd.log()
    );
}

/// The etcd reader parses berth's layout and rejects inconsistent keys.
#[test]
fn harness_etcd_backend_reads_and_checks_instances() {
    let b = Backend::start(Kind::Etcd);
    let etcd = b.etcd();
    let (node, id) = ("n1", "n1:ctr:80");
    let value = json!({
        "id": id, "name": "web", "address": "127.0.0.1", "port": 32768,
        "tags": ["a"], "meta": {"user": "meta"}, "node": node,
        "container_id": "c".repeat(64), "container_name": "ctr",
        "image": docker::IMAGE, "health": {"status": "passing", "output": "ok"},
        "updated": "2026-11-22T07:30:00.123Z"
    })
    .to_string();
    let (inst, index) = (b.instance_key("web", id), b.node_key(node, id));
    assert_eq!(inst, format!("{}/services/web/{id}", b.prefix()));
    assert_eq!(index, format!("{}/nodes/{node}/{id}", b.prefix()));
    assert_eq!(b.instances("web"), Ok(Vec::new()));

    let lease = etcd.lease_grant(60);
    etcd.put_with_lease(&inst, &value, lease);
    let missing_index = b.instances("web");
    assert!(missing_index.is_err(), "{missing_index:?}");
    etcd.put_with_lease(&index, &inst, lease);
    let found = b.instances("web").unwrap();
    let want = Expect {
        name: "web".into(),
        id: id.into(),
        address: "127.0.0.1".into(),
        port: 32768,
        container_id: "c".repeat(64),
        container_name: "ctr".into(),
    };
    assert_eq!(found.len(), 1, "{found:?}");
    matches(&found[0], node, &want).unwrap();
    assert_eq!(b.ids_of_node(node), Ok(vec![id.to_string()]));
    assert_eq!(b.ids_of_node("n2"), Ok(Vec::new()));
    assert_eq!(
        b.ids_of_container(&"c".repeat(64)),
        Ok(vec![id.to_string()])
    );
    assert!(check_gone(&b, "web").is_err());

    // The index key on another lease, or without one: inconsistent.
    etcd.put(&index, &inst);
    assert!(b.instances("web").is_err());
    etcd.put_with_lease(&index, &inst, lease);
    // The instance key without a lease.
    etcd.put(&inst, &value);
    assert!(b.instances("web").is_err());
    // The instance key under another id.
    etcd.delete(&inst);
    etcd.put_with_lease(&b.instance_key("web", "n1:other:80"), &value, lease);
    assert!(b.instances("web").is_err());
    // An index key naming a missing instance.
    etcd.delete(&b.instance_key("web", "n1:other:80"));
    assert!(b.instances("web").is_err());
    assert!(b.state().contains(&index), "{}", b.state());
    etcd.lease_revoke(lease);
    assert_eq!(b.instances("web"), Ok(Vec::new()));
}

// ---------------------------------------------------------------------------------------
// The agent, etcd only.

/// Every key the agent writes is on its lease (granted for `--ttl`), the per-node index key
/// names the instance key, and the instance value has every field with the right value.
#[test]
fn instance_value_has_every_field_and_every_key_a_lease() {
    let mut env = Env::new("etcdvalue", Kind::Etcd);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = docker::Container::httpd(
        env.test,
        &[
            "-l",
            &format!("SERVICE_NAME={name}"),
            "-l",
            "SERVICE_TAGS=a,b",
            "-l",
            "berth.meta.user=meta",
            "-p",
            "80",
        ],
    );
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    let node = env.node.clone();
    let (inst, index) = (
        env.backend.instance_key(&name, &want.id),
        env.backend.node_key(&node, &want.id),
    );
    let kvs = all_keys(&env.backend).unwrap_or_else(|e| env.fail(&e));
    if !(kvs.iter().any(|kv| kv.key == inst) && kvs.iter().any(|kv| kv.key == index)) {
        env.fail(&format!("want {inst} and {index}: {}", keys_text(&kvs)));
    }
    let lease = one_lease(&kvs).unwrap_or_else(|e| env.fail(&e));
    match env.backend.etcd().lease_ttl(lease) {
        Some((ttl, 3)) if ttl > 0 => {}
        other => env.fail(&format!(
            "lease {lease:x}: want alive and granted for the 3 s TTL, got (ttl, granted) {other:?}"
        )),
    }
    let index_kv = kvs.iter().find(|kv| kv.key == index).unwrap();
    if index_kv.value != inst {
        env.fail(&format!("{index} = {:?}, want {inst:?}", index_kv.value));
    }

    let v = kvs.iter().find(|kv| kv.key == inst).unwrap().json();
    let fields = [
        ("id", json!(want.id)),
        ("name", json!(name)),
        ("address", json!("127.0.0.1")),
        ("port", json!(want.port)),
        ("tags", json!(["a", "b"])),
        ("meta", json!({"user": "meta"})),
        ("node", json!(node)),
        ("container_id", json!(ctr.id)),
        ("container_name", json!(ctr.name)),
        ("image", json!(docker::IMAGE)),
    ];
    for (k, want_v) in fields {
        if v[k] != want_v {
            env.fail(&format!("{k} is {}, want {want_v}; value: {v}", v[k]));
        }
    }
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit());
    if !v["container_id"].as_str().is_some_and(hex64) {
        env.fail(&format!("container_id is not 64 hex digits: {v}"));
    }
    if v["health"]["status"] != "passing" || !v["health"]["output"].is_string() {
        env.fail(&format!(
            "health: want status passing and an output string: {v}"
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    match v["updated"].as_str().and_then(parse_utc) {
        Some(t) if (now - t).abs() < 120 => {}
        other => env.fail(&format!(
            "updated {} is not an RFC 3339 UTC time near now ({now}, parsed {other:?}): {v}",
            v["updated"]
        )),
    }
}

/// A watcher on the prefix sees one put per key when the container starts — nothing from
/// lease keepalives or from a 1 s resync while it runs — then, on `docker stop`, the drain
/// (one put of the instance, critical) and one delete per key.
#[test]
fn watcher_sees_one_put_per_change_the_drain_and_a_delete_on_stop() {
    let mut env = Env::new("etcdwatch", Kind::Etcd);
    let name = env.svc("web");
    env.start_agent(&["--resync", "1s"]);
    let watch = Watch::start(env.backend.etcd(), &format!("{}/", env.backend.prefix()));
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);
    let node = env.node.clone();
    env.hold(
        "one passing instance",
        TTL * 2 + Duration::from_secs(1),
        |b| check_one(b, &node, &want),
    );

    let inst = env.backend.instance_key(&name, &want.id);
    let index = env.backend.node_key(&node, &want.id);
    let kinds =
        |key: &str| -> Vec<EventKind> { watch.events_for(key).iter().map(|e| e.kind).collect() };
    // Every event about this service or this container (the watch also sees the keys of
    // other tests' containers, which the agent registers too).
    let service_keys = format!("{}/services/{name}/", env.backend.prefix());
    let container_part = format!(":{}:", ctr.name);
    let ours = || -> usize {
        watch
            .events()
            .iter()
            .filter(|e| e.key.starts_with(&service_keys) || e.key.contains(&container_part))
            .count()
    };
    let (n, i) = (kinds(&inst), kinds(&index));
    if n != [EventKind::Put] || i != [EventKind::Put] || ours() != 2 {
        let w = watch.describe();
        env.fail(&format!(
            "want exactly one put of {inst} and of {index} while the container runs\n{w}"
        ));
    }
    let put = &watch.events_for(&inst)[0];
    let value: Value = serde_json::from_str(&put.value).unwrap_or(Value::Null);
    if value["id"] != want.id.as_str() || value["health"]["status"] != "passing" {
        let w = watch.describe();
        env.fail(&format!("the one put must be the passing instance\n{w}"));
    }

    ctr.stop();
    env.expect_gone(&name);
    let deleted = watch.wait_until(SETTLE, |events| {
        events
            .iter()
            .filter(|e| e.kind == EventKind::Delete && (e.key == inst || e.key == index))
            .count()
            >= 2
    });
    // Past another resync: nothing more may come.
    std::thread::sleep(Duration::from_millis(1500));
    let (n, i) = (kinds(&inst), kinds(&index));
    // `docker stop` drains the instance first (its health, in the instance value only).
    let drained = [EventKind::Put, EventKind::Put, EventKind::Delete];
    let both = [EventKind::Put, EventKind::Delete];
    if !deleted || n != drained || i != both || ours() != 5 {
        let w = watch.describe();
        env.fail(&format!(
            "want put, the drain's put and delete of {inst}, put and delete of {index}, \
             nothing else\n{w}"
        ));
    }
    let drain = &watch.events_for(&inst)[1];
    let value: Value = serde_json::from_str(&drain.value).unwrap_or(Value::Null);
    if value["health"]["status"] != "critical" {
        let w = watch.describe();
        env.fail(&format!("the second put must be the drain (critical)\n{w}"));
    }
}

/// etcd restarted with its data: the registrations are still there, on a live lease the
/// agent keeps alive, with no duplicate.
#[test]
fn etcd_restart_keeps_registrations() {
    let mut env = Env::new("etcdrestart", Kind::Etcd);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    env.backend.etcd_mut().restart();
    let node = env.node.clone();
    let container_part = format!(":{}:", ctr.name);
    let wants = [want.clone()];
    env.wait(
        "the registration on a live lease after the restart",
        SETTLE,
        |b| check_all_on_one_live_lease(b, &node, &wants, 0),
    );
    // Kept alive past the lease's TTL: the agent's keepalive survived the restart.
    env.hold(
        "one passing instance on a live lease",
        TTL * 2 + Duration::from_secs(1),
        |b| {
            check_all_on_one_live_lease(b, &node, &wants, 0)?;
            // No second registration of the container under another id either.
            let ids: Vec<String> = b
                .ids_of_node(&node)?
                .into_iter()
                .filter(|id| id.contains(&container_part))
                .collect();
            if ids == [want.id.clone()] {
                Ok(())
            } else {
                Err(format!("ids of the container: {ids:?}"))
            }
        },
    );
}

/// The agent's lease revoked (every key of this node deleted with it): all instances come
/// back, on a new live lease.
#[test]
fn lease_loss_reregisters_everything() {
    let mut env = Env::new("etcdlease", Kind::Etcd);
    let names = [env.svc("a"), env.svc("b"), env.svc("c")];
    env.start_agent(&[]);
    let ctrs: Vec<_> = names.iter().map(|n| httpd_labelled(env.test, n)).collect();
    let wants: Vec<Expect> = names
        .iter()
        .zip(&ctrs)
        .map(|(n, c)| env.published(n, c, 80))
        .collect();
    for w in &wants {
        env.expect_one(w);
    }
    let node = env.node.clone();
    let old = env.wait("all six keys on one live lease", SETTLE, |b| {
        check_all_on_one_live_lease(b, &node, &wants, 0)
    });

    let watch = Watch::start(env.backend.etcd(), &format!("{}/", env.backend.prefix()));
    env.backend.etcd().lease_revoke(old);
    let new = env.wait("all six keys back on a new live lease", SETTLE, |b| {
        check_all_on_one_live_lease(b, &node, &wants, old)
    });
    if env.backend.etcd().lease_ttl(old).is_some() {
        env.fail(&format!("the revoked lease {old:x} is alive"));
    }
    // Each key: deleted by the revoke, then put again on the new lease.
    let keys: Vec<String> = wants
        .iter()
        .flat_map(|w| {
            [
                env.backend.instance_key(&w.name, &w.id),
                env.backend.node_key(&node, &w.id),
            ]
        })
        .collect();
    let ok = watch.wait_until(SETTLE, |events| {
        keys.iter().all(|k| {
            let mine: Vec<(EventKind, i64)> = events
                .iter()
                .filter(|e| e.key == *k)
                .map(|e| (e.kind, e.lease))
                .collect();
            mine.first() == Some(&(EventKind::Delete, 0))
                && mine.last() == Some(&(EventKind::Put, new))
        })
    });
    if !ok {
        let w = watch.describe();
        env.fail(&format!(
            "want a delete then a put on lease {new:x} for each key\n{w}"
        ));
    }
}

/// An agent restarted with another TTL takes over its predecessor's keys before the old
/// lease expires: the one whose container went away meanwhile is deleted by the agent (the
/// old lease has 30 s left, so expiry cannot be what removes it), the other is written once
/// more, under the new agent's lease (a lease of another TTL is not taken over).
#[test]
fn an_agent_restarted_with_another_ttl_moves_its_keys_to_its_own_lease() {
    let mut env = Env::new("etcdadopt", Kind::Etcd);
    let (a_name, b_name) = (env.svc("a"), env.svc("b"));
    env.start_agent(&["--ttl", "30s"]);
    let mut a = httpd_labelled(env.test, &a_name);
    let b = httpd_labelled(env.test, &b_name);
    let (want_a, want_b) = (
        env.published(&a_name, &a, 80),
        env.published(&b_name, &b, 80),
    );
    env.expect_one(&want_a);
    env.expect_one(&want_b);
    let node = env.node.clone();
    let old = env.wait("both instances on one live lease", SETTLE, |b| {
        check_all_on_one_live_lease(b, &node, &[want_a.clone(), want_b.clone()], 0)
    });
    env.agent().terminate();
    a.rm();

    let watch = Watch::start(env.backend.etcd(), &format!("{}/", env.backend.prefix()));
    env.start_agent(&[]);
    env.expect_gone(&a_name);
    let new = env.wait("B on the new agent's lease", SETTLE, |b| {
        check_all_on_one_live_lease(b, &node, std::slice::from_ref(&want_b), old)
    });
    if env.backend.etcd().lease_ttl(old).is_none() {
        env.fail(&format!(
            "the old lease {old:x} expired already; the test cannot tell deletion from expiry"
        ));
    }
    // Past one TTL of the new agent: nothing more is written for B.
    std::thread::sleep(TTL + Duration::from_secs(1));
    let b_key = env.backend.instance_key(&b_name, &want_b.id);
    let a_key = env.backend.instance_key(&a_name, &want_a.id);
    let b_events: Vec<(EventKind, i64)> = watch
        .events_for(&b_key)
        .iter()
        .map(|e| (e.kind, e.lease))
        .collect();
    let a_events: Vec<EventKind> = watch.events_for(&a_key).iter().map(|e| e.kind).collect();
    if b_events != [(EventKind::Put, new)] || a_events != [EventKind::Delete] {
        let w = watch.describe();
        env.fail(&format!(
            "want one put of {b_key} on lease {new:x} and one delete of {a_key}\n{w}"
        ));
    }
}

/// An agent restarted with the same TTL (an upgrade, a crash) takes over its predecessor's
/// lease: the key of a container gone meanwhile is deleted, the other key is not written at
/// all, and the lease outlives several TTLs without the old agent.
#[test]
fn a_restarted_agent_keeps_its_predecessors_lease_and_writes_nothing() {
    let mut env = Env::new("etcdkeep", Kind::Etcd);
    let (a_name, b_name) = (env.svc("a"), env.svc("b"));
    env.start_agent(&[]);
    let mut a = httpd_labelled(env.test, &a_name);
    let b = httpd_labelled(env.test, &b_name);
    let (want_a, want_b) = (
        env.published(&a_name, &a, 80),
        env.published(&b_name, &b, 80),
    );
    env.expect_one(&want_a);
    env.expect_one(&want_b);
    let node = env.node.clone();
    let old = env.wait("both instances on one live lease", SETTLE, |b| {
        check_all_on_one_live_lease(b, &node, &[want_a.clone(), want_b.clone()], 0)
    });
    env.agent().kill9();
    a.rm();

    let watch = Watch::start(env.backend.etcd(), &format!("{}/", env.backend.prefix()));
    env.start_agent(&[]);
    env.expect_gone(&a_name);
    // Past two TTLs: the old agent is long gone, the lease lives on, B untouched.
    std::thread::sleep(TTL * 2 + Duration::from_secs(1));
    let kept = env.wait("B still on the old lease", SETTLE, |b| {
        check_all_on_one_live_lease(b, &node, std::slice::from_ref(&want_b), 0)
    });
    let b_key = env.backend.instance_key(&b_name, &want_b.id);
    let a_key = env.backend.instance_key(&a_name, &want_a.id);
    let b_events = watch.events_for(&b_key).len();
    let a_events: Vec<EventKind> = watch.events_for(&a_key).iter().map(|e| e.kind).collect();
    if kept != old || b_events != 0 || a_events != [EventKind::Delete] {
        let w = watch.describe();
        env.fail(&format!(
            "want {b_key} untouched on lease {old:x} (it is on {kept:x}) and one delete of \
             {a_key}\n{w}"
        ));
    }
}

/// etcd restarted with its data wiped (every key and lease lost): all instances come back.
#[test]
fn wiped_etcd_reregisters_everything() {
    let mut env = Env::new("etcdwiped", Kind::Etcd);
    let names = [env.svc("a"), env.svc("b"), env.svc("c")];
    env.start_agent(&[]);
    let ctrs: Vec<_> = names.iter().map(|n| httpd_labelled(env.test, n)).collect();
    let wants: Vec<Expect> = names
        .iter()
        .zip(&ctrs)
        .map(|(n, c)| env.published(n, c, 80))
        .collect();
    for w in &wants {
        env.expect_one(w);
    }

    env.backend.etcd_mut().restart_wiped();
    let node = env.node.clone();
    env.wait(
        "all instances back after etcd lost everything",
        Duration::from_secs(15),
        |b| check_all_on_one_live_lease(b, &node, &wants, 0),
    );
    env.hold(
        "all instances on a live lease",
        TTL + Duration::from_secs(1),
        |b| check_all_on_one_live_lease(b, &node, &wants, 0).map(|_| ()),
    );
}

/// Two nodes under one prefix: node B stops (SIGTERM, no deregistration) with a long TTL,
/// and node A — resyncing every second, then restarted — never touches B's keys; they go
/// only with B's lease, which leaves A's keys alone.
#[test]
fn other_nodes_keys_are_left_to_their_lease() {
    let mut env = Env::new("etcdtwonodes", Kind::Etcd);
    let name = env.svc("web");
    let node_a = env.node.clone();
    let node_b = unique_name("etcdtwonodes-b");
    env.start_agent(&["--resync", "1s"]);
    let b = env.start_other_agent(&node_b, &["--ttl", "30s"]);
    let ctr = httpd_labelled(env.test, &name);
    let want_a = env.published(&name, &ctr, 80);
    let want_b = Expect {
        id: format!("{node_b}:{}:80", ctr.name),
        ..want_a.clone()
    };
    env.wait("an instance from each node", SETTLE, |be| {
        check_one_of_node(be, &node_a, &want_a)?;
        check_one_of_node(be, &node_b, &want_b)
    });
    let keys_b = [
        env.backend.instance_key(&name, &want_b.id),
        env.backend.node_key(&node_b, &want_b.id),
    ];
    let of = |kvs: &[Kv], keys: &[String]| -> Vec<Kv> {
        kvs.iter()
            .filter(|kv| keys.contains(&kv.key))
            .cloned()
            .collect()
    };
    let before_b = of(&all_keys(&env.backend).unwrap(), &keys_b);
    let lease_b = one_lease(&before_b).unwrap_or_else(|e| env.fail(&e));
    if before_b.len() != 2 || env.backend.etcd().lease_ttl(lease_b).map(|t| t.1) != Some(30) {
        env.fail(&format!(
            "B's keys, on a 30 s lease: {}",
            keys_text(&before_b)
        ));
    }

    let watch = Watch::start(env.backend.etcd(), &format!("{}/", env.backend.prefix()));
    let status = env.other(b).terminate();
    if !status.success() {
        env.fail(&format!("agent B exited with {status} after SIGTERM"));
    }
    let untouched = |be: &Backend| -> Result<(), String> {
        let now = of(&all_keys(be)?, &keys_b);
        if now == before_b {
            Ok(())
        } else {
            Err(format!(
                "B's keys were {}\nnow {}",
                keys_text(&before_b),
                keys_text(&now)
            ))
        }
    };
    env.hold(
        "B's keys untouched by A's resyncs",
        Duration::from_secs(3),
        &untouched,
    );
    // A restarted: its startup reconcile must not touch them either.
    env.start_agent(&["--resync", "1s"]);
    env.wait("A's instance from the new agent", SETTLE, |be| {
        check_one_of_node(be, &node_a, &want_a)
    });
    env.hold(
        "B's keys untouched by A's startup and resyncs",
        Duration::from_secs(3),
        &untouched,
    );
    // Positive control: the watch delivered all along, so its silence about B's keys counts.
    watch.prove_live(env.backend.etcd());
    let touched: Vec<_> = watch
        .events()
        .into_iter()
        .filter(|e| keys_b.contains(&e.key))
        .collect();
    if !touched.is_empty() {
        let w = watch.describe();
        env.fail(&format!(
            "B's keys changed while only A ran: {touched:?}\n{w}"
        ));
    }

    // B's keys go with B's lease; A's stay as they are.
    let keys_a = [
        env.backend.instance_key(&name, &want_a.id),
        env.backend.node_key(&node_a, &want_a.id),
    ];
    let before_a = env.wait("A's keys on a live lease", SETTLE, |be| {
        let now = of(&all_keys(be)?, &keys_a);
        let lease = one_lease(&now)?;
        match be.etcd().lease_ttl(lease) {
            Some((ttl, _)) if ttl > 0 && now.len() == 2 => Ok(now),
            other => Err(format!("lease {lease:x}: {other:?}; {}", keys_text(&now))),
        }
    });
    env.backend.etcd().lease_revoke(lease_b);
    env.hold(
        "A's keys unchanged after B's lease went",
        Duration::from_secs(2),
        |be| {
            let kvs = all_keys(be)?;
            let (now_a, now_b) = (of(&kvs, &keys_a), of(&kvs, &keys_b));
            if now_a == before_a && now_a.len() == 2 && now_b.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "A's keys were {}\nnow {}\nB's now {}",
                    keys_text(&before_a),
                    keys_text(&now_a),
                    keys_text(&now_b)
                ))
            }
        },
    );
    env.wait("only A's instance", SETTLE, |be| {
        check_one(be, &node_a, &want_a)
    });
}

/// `--deregister-on-exit` on node B removes B's keys by the time it exits, and only B's.
#[test]
fn deregister_on_exit_removes_only_this_nodes_keys() {
    let mut env = Env::new("etcdderegb", Kind::Etcd);
    let name = env.svc("web");
    let node_a = env.node.clone();
    let node_b = unique_name("etcdderegb-b");
    env.start_agent(&[]);
    let b = env.start_other_agent(&node_b, &["--deregister-on-exit"]);
    let ctr = httpd_labelled(env.test, &name);
    let want_a = env.published(&name, &ctr, 80);
    let want_b = Expect {
        id: format!("{node_b}:{}:80", ctr.name),
        ..want_a.clone()
    };
    env.wait("an instance from each node", SETTLE, |be| {
        check_one_of_node(be, &node_a, &want_a)?;
        check_one_of_node(be, &node_b, &want_b)
    });
    let keys_a = [
        env.backend.instance_key(&name, &want_a.id),
        env.backend.node_key(&node_a, &want_a.id),
    ];
    let watch = Watch::start(env.backend.etcd(), &format!("{}/", env.backend.prefix()));

    let status = env.other(b).terminate();
    let left = env.backend.ids_of_node(&node_b);
    if left != Ok(Vec::new()) {
        env.fail(&format!("B's keys still there when B exited: {left:?}"));
    }
    if !status.success() {
        env.fail(&format!("agent B exited with {status} after SIGTERM"));
    }
    env.wait("only A's instance", SETTLE, |be| {
        check_one(be, &node_a, &want_a)
    });
    env.hold("A's instance", TTL, |be| check_one(be, &node_a, &want_a));
    // Positive controls: the watch saw B's own deletions, and still delivers now, so its
    // silence about A's keys counts.
    let deleted_b = watch
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Delete && e.key.contains(&node_b))
        .count();
    if deleted_b == 0 {
        let w = watch.describe();
        env.fail(&format!(
            "the watch saw no deletion of B's keys on B's exit\n{w}"
        ));
    }
    watch.prove_live(env.backend.etcd());
    let touched: Vec<_> = watch
        .events()
        .into_iter()
        .filter(|e| keys_a.contains(&e.key))
        .collect();
    if !touched.is_empty() {
        let w = watch.describe();
        env.fail(&format!("A's keys changed by B's exit: {touched:?}\n{w}"));
    }
}
