//! In-process agent tests: the real Docker engine, the in-memory registry.
//!
//! These prove the reconcile path against a real engine without Consul: a burst of containers
//! started at once is registered completely and removed completely, a resync that finds
//! nothing changed writes nothing, startup removes stale entries and nothing else, and
//! registry outages and losses are repaired by the retries and the heartbeat, not by a
//! resync. The same behaviours against real Consul and etcd are in `tests/tests/`; the
//! mechanisms one by one, on paused time, in `agent/src/reconcile/tests.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use berth::app::{App, Running};
use berth::config::{Config, Invocation};
use berth_e2e::docker::{self, Container};
use berth_registry::memory::{Entry, MemoryRegistry, Op};
use berth_registry::{Health, Instance, Origin, Registry};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BURST: usize = 40;

/// `berth run` as node `node`, with a TTL of 3 s and the given resync period.
fn config(node: &str, resync: &str) -> Config {
    let argv = [
        "berth",
        "run",
        "--node-name",
        node,
        "--host-ip",
        "127.0.0.1",
        "--resync",
        resync,
        "--ttl",
        "3s",
    ];
    match berth::config::parse(argv, &HashMap::<String, String>::new()).unwrap() {
        Invocation::Run(c) => *c,
        other => panic!("parsed {other:?}"),
    }
}

/// The agent on the real engine and `memory` (whose node must be `node`), resyncing every
/// `resync`.
async fn start(node: &str, memory: &MemoryRegistry, resync: &str) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    assert_eq!(memory.node(), node);
    let cancel = CancellationToken::new();
    let app = App::with_registry(
        config(node, resync),
        Registry::Memory(memory.clone()),
        std::sync::Arc::new(berth::observe::Observer::new(Duration::from_secs(15))),
        &cancel,
        &TaskTracker::new(),
    )
    .await
    .unwrap();
    app.spawn(cancel)
}

/// Cancels the agent and checks its tasks drain.
async fn stop(agent: Running) {
    assert!(
        agent.stop(Duration::from_secs(10)).await,
        "tasks drain after cancel"
    );
}

fn named(m: &MemoryRegistry, name: &str) -> Vec<Instance> {
    m.instances()
        .into_iter()
        .filter(|i| i.name == name)
        .collect()
}

async fn httpd(test: &'static str, service: &str) -> Container {
    let label = format!("SERVICE_NAME={service}");
    tokio::task::spawn_blocking(move || Container::httpd(test, &["-l", label.as_str(), "-p", "80"]))
        .await
        .unwrap()
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_containers_is_registered_completely_and_removed_completely() {
    let test = "burst";
    let service = docker::unique_name(test);
    let node = format!("node-{service}");
    let memory = MemoryRegistry::new(&node);
    let agent = start(&node, &memory, "1s").await;

    // Start every container at once, from parallel threads.
    let label = format!("SERVICE_NAME={service}");
    let containers: Vec<Container> = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..BURST)
                .map(|_| s.spawn(|| Container::httpd(test, &["-l", label.as_str(), "-p", "80"])))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    })
    .await
    .unwrap();

    let ours = |m: &MemoryRegistry| named(m, &service);
    wait_until(
        "every container registered",
        Duration::from_secs(60),
        || ours(&memory).len() == BURST,
    )
    .await;

    let instances = ours(&memory);
    let ids: BTreeSet<_> = instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids.len(), BURST, "ids are unique");
    let expected: BTreeSet<(String, u16)> = containers
        .iter()
        .map(|c| (format!("{node}:{}:80", c.name), c.host_port(80)))
        .collect();
    let got: BTreeSet<(String, u16)> = instances.iter().map(|i| (i.id.clone(), i.port)).collect();
    assert_eq!(
        got, expected,
        "each container registered with its published port"
    );
    assert!(
        instances
            .iter()
            .all(|i| i.address == "127.0.0.1" && i.origin.node == node)
    );

    // Several resyncs (every 1 s) with nothing changed write nothing: each container was
    // registered exactly once. (Other containers on the engine may come and go meanwhile, so
    // only this test's ids are counted.)
    let heartbeats = memory.writes().heartbeats;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for id in &ids {
        assert_eq!(memory.registers_of(id), 1, "{id} registered more than once");
    }
    assert!(
        memory.writes().heartbeats > heartbeats,
        "heartbeats keep flowing"
    );

    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for mut c in containers {
                s.spawn(move || c.rm());
            }
        })
    })
    .await
    .unwrap();
    wait_until(
        "every registration removed",
        Duration::from_secs(60),
        || ours(&memory).is_empty(),
    )
    .await;

    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_removes_stale_entries_of_this_node_only() {
    let test = "stale";
    let service = docker::unique_name(test);
    let node = format!("node-{service}");
    let memory = MemoryRegistry::new(&node);
    let c = httpd(test, &service).await;

    // Left by an earlier run: a container that no longer exists, plus the live one's entry.
    let stale = Instance {
        id: format!("{node}:gone:80"),
        name: service.clone(),
        address: "127.0.0.1".into(),
        port: 1,
        tags: vec![],
        meta: Default::default(),
        origin: Origin {
            node: node.clone(),
            container_id: "0".repeat(64),
            container_name: "gone".into(),
            image: "x".into(),
        },
        health: Health::passing("old"),
    };
    let mut other_node = stale.clone();
    other_node.id = "elsewhere:gone:80".into();
    other_node.origin.node = "elsewhere".into();
    memory.insert_instance(stale.clone());
    memory.insert_instance(other_node.clone());
    memory.insert_foreign("someone-elses-service");

    let agent = start(&node, &memory, "1s").await;
    let live_id = format!("{node}:{}:80", c.name);
    wait_until(
        "stale removed and live registered",
        Duration::from_secs(20),
        || memory.get(&stale.id).is_none() && memory.get(&live_id).is_some(),
    )
    .await;
    assert_eq!(
        memory.get(&other_node.id),
        Some(Entry::Berth(other_node.clone())),
        "another node's entry is untouched"
    );
    assert_eq!(
        memory.get("someone-elses-service"),
        Some(Entry::Foreign),
        "a foreign entry is untouched"
    );
    assert_eq!(
        named(&memory, &service).len(),
        2,
        "the live instance plus the other node's"
    );
    stop(agent).await;
    drop(c);
}

/// With a resync that never comes during the test, only the retries repair an outage and
/// only the heartbeat repairs a registry that forgot everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_and_a_registry_that_forgets_are_repaired_without_a_resync() {
    let test = "outage";
    let service = docker::unique_name(test);
    let node = format!("node-{service}");
    let memory = MemoryRegistry::new(&node);
    let agent = start(&node, &memory, "1h").await;

    // Down while the container starts: the write fails, and is retried with backoff.
    memory.set_unavailable(true);
    let c = httpd(test, &service).await;
    let id = format!("{node}:{}:80", c.name);
    let failed = |m: &MemoryRegistry| {
        m.calls()
            .iter()
            .filter(|call| call.op == Op::Register && call.id == id && !call.ok)
            .count()
    };
    wait_until("a first failed attempt", Duration::from_secs(10), || {
        failed(&memory) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Retries after 0.25–0.5 s, then 0.5–1 s, then 1–2 s: three or four attempts in these
    // 3 s, plus one for each of the container's own events (start, network connect) that
    // arrives meanwhile; retrying without a backoff would make thousands.
    let during = failed(&memory);
    assert!(
        (2..=8).contains(&during),
        "{during} failed register attempts in the first 3 s of the outage"
    );
    memory.set_unavailable(false);
    wait_until(
        "registered by a retry after the outage",
        Duration::from_secs(20),
        || memory.get(&id).is_some(),
    )
    .await;

    // The registry forgets everything (a Consul dev agent restart): the next heartbeat
    // (every ttl/3 = 1 s) finds the instance gone and it is registered again.
    let registers = memory.registers_of(&id);
    memory.clear();
    wait_until(
        "registered again after the registry forgot it",
        Duration::from_secs(5),
        || memory.get(&id).is_some(),
    )
    .await;
    assert_eq!(memory.registers_of(&id), registers + 1);
    assert_eq!(named(&memory, &service).len(), 1);
    stop(agent).await;
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_recreated_under_the_same_name_stays_registered() {
    let test = "recreate";
    let service = docker::unique_name(test);
    let node = format!("node-{service}");
    let memory = MemoryRegistry::new(&node);
    let agent = start(&node, &memory, "1s").await;

    let first = httpd(test, &service).await;
    let name = first.name.clone();
    let id = format!("{node}:{name}:80");
    wait_until("first registered", Duration::from_secs(20), || {
        memory.get(&id).is_some()
    })
    .await;

    // `docker rm -f web && docker run --name web …`, as compose and watchtower do: the new
    // container gets the same instance id while the old one's removal is still in flight.
    let (label, image, cmd) = (
        format!("SERVICE_NAME={service}"),
        docker::image(),
        docker::HTTPD_CMD,
    );
    let second_id = tokio::task::spawn_blocking(move || {
        let mut first = first;
        first.rm();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "berth-e2e=1",
            "-l",
            &label,
            "-p",
            "80",
            image,
        ];
        args.extend(cmd);
        docker::docker(&args)
    })
    .await
    .unwrap();
    let _cleanup = scopeguard(second_id.clone());

    wait_until(
        "the new container holds the registration",
        Duration::from_secs(30),
        || matches!(memory.get(&id), Some(Entry::Berth(i)) if i.origin.container_id == second_id),
    )
    .await;
    assert_eq!(named(&memory, &service).len(), 1);
    stop(agent).await;
}

/// Removes a container started by hand when the test ends, even on failure.
fn scopeguard(id: String) -> impl Drop {
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = docker::try_docker(&["rm", "-f", &self.0]);
        }
    }
    Rm(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_container_moves_to_its_new_id() {
    let test = "rename";
    let service = docker::unique_name(test);
    let node = format!("node-{service}");
    let memory = MemoryRegistry::new(&node);
    let agent = start(&node, &memory, "1s").await;

    let c = httpd(test, &service).await;
    let old_id = format!("{node}:{}:80", c.name);
    wait_until("registered", Duration::from_secs(20), || {
        memory.get(&old_id).is_some()
    })
    .await;

    let new_name = docker::unique_name(test);
    let (cid, renamed) = (c.id.clone(), new_name.clone());
    tokio::task::spawn_blocking(move || docker::docker(&["rename", &cid, &renamed]))
        .await
        .unwrap();
    let new_id = format!("{node}:{new_name}:80");
    wait_until(
        "registered under the new name only",
        Duration::from_secs(20),
        || memory.get(&new_id).is_some() && memory.get(&old_id).is_none(),
    )
    .await;
    assert_eq!(named(&memory, &service).len(), 1);
    stop(agent).await;
    drop(c);
}
