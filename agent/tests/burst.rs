//! In-process agent tests: the real Docker engine, the in-memory registry.
//!
//! These prove the reconcile path end to end without Consul: a burst of containers started at
//! once is registered completely, removed completely, and a resync that finds nothing changed
//! writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use berth::app::App;
use berth::config::{Cli, Command, Config};
use berth_e2e::docker::{self, Container};
use berth_registry::Registry;
use berth_registry::memory::MemoryRegistry;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const BURST: usize = 40;

fn config(node: &str) -> Config {
    let Command::Run(args) = Cli::try_parse_from([
        "berth",
        "run",
        "--node-name",
        node,
        "--host-ip",
        "127.0.0.1",
        "--resync",
        "1s",
    ])
    .unwrap()
    .command;
    Config::load(&args, &HashMap::<String, String>::new()).unwrap()
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
    let _ = rustls::crypto::ring::default_provider().install_default();
    let test = "burst";
    let service = docker::unique_name(test);
    let node = format!("node-{service}");
    let memory = MemoryRegistry::new();
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let app = App::with_registry(config(&node), Registry::Memory(memory.clone()), &cancel)
        .await
        .unwrap();
    app.spawn(&tracker, cancel.clone());

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

    let ours = |m: &MemoryRegistry| {
        m.instances()
            .into_iter()
            .filter(|i| i.name == service)
            .collect::<Vec<_>>()
    };
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

    // Several resyncs (every 1 s) with nothing changed write nothing.
    let before = memory.writes();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = memory.writes();
    assert_eq!(
        after.registers, before.registers,
        "no register call when nothing changed"
    );
    assert_eq!(after.deregisters, before.deregisters);
    assert!(
        after.heartbeats > before.heartbeats,
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

    cancel.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .expect("tasks drain after cancel");
}
