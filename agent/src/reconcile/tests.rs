//! The reconciler on paused time, against the scripted Docker engine and the memory registry:
//! per-container ordering, the dirty re-run, retries with backoff and jitter, parked refusals,
//! listing order, panic recovery, and the repairs after a registry loses instances. Each test
//! names the mechanism it proves and fails without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use berth_registry::Registry;
use berth_registry::memory::{Entry, MemoryRegistry, Op as Call};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::app::{App, Running};
use crate::docker::scripted::Scripted;
use crate::docker::view::{Attachment, Binding, ContainerView, PortProto, Proto};

const NODE: &str = "n1";

/// A running container labelled `SERVICE_NAME=web`, with port 80 published on `host_port`.
fn web(id: &str, host_port: u16) -> ContainerView {
    let pp = PortProto {
        port: 80,
        proto: Proto::Tcp,
    };
    ContainerView {
        id: id.to_owned(),
        name: format!("ctr-{id}"),
        image: "web:1".to_owned(),
        labels: BTreeMap::from([("SERVICE_NAME".to_owned(), "web".to_owned())]),
        env: BTreeMap::new(),
        running: true,
        paused: false,
        health: None,
        network_mode: "bridge".to_owned(),
        networks: vec![Attachment {
            name: "bridge".to_owned(),
            ipv4: Some(Ipv4Addr::new(172, 17, 0, 2)),
            ipv6: None,
        }],
        exposed: vec![pp],
        bindings: vec![Binding {
            private: pp,
            host_ip: None,
            host_port,
            v6_wildcard: false,
        }],
        stop_signal: None,
        stop_timeout: None,
    }
}

/// `web` with a second port, 81, published on `second`.
fn web2(id: &str, first: u16, second: u16) -> ContainerView {
    let mut v = web(id, first);
    let pp = PortProto {
        port: 81,
        proto: Proto::Tcp,
    };
    v.exposed.push(pp);
    v.bindings.push(Binding {
        private: pp,
        host_ip: None,
        host_port: second,
        v6_wildcard: false,
    });
    v
}

/// The instance id of `web(id, _)`.
fn instance_id(id: &str) -> String {
    format!("{NODE}:ctr-{id}:80")
}

/// The whole agent on the scripted engine and the memory registry, as `app.rs` wires it,
/// with a resync that never comes within a test: only the mechanism under test can repair
/// anything. Built once the source has made its first (empty) listing.
struct Harness {
    docker: Scripted,
    memory: MemoryRegistry,
    store: Arc<Store>,
    observe: Arc<crate::observe::Observer>,
    triggers: mpsc::Sender<Trigger>,
    running: Running,
}

async fn harness(extra: &[&str]) -> Harness {
    harness_full(extra, |_, _| {}).await
}

/// [`harness`], with the scripted engine prepared by `prepare` before the agent starts.
async fn harness_with(extra: &[&str], prepare: impl FnOnce(&Scripted)) -> Harness {
    harness_full(extra, |docker, _| prepare(docker)).await
}

/// [`harness`], with the scripted engine and the memory registry prepared by `prepare`
/// before the agent starts.
async fn harness_full(extra: &[&str], prepare: impl FnOnce(&Scripted, &MemoryRegistry)) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut argv = vec![
        "berth",
        "run",
        "--node-name",
        NODE,
        "--host-ip",
        "10.0.0.1",
        "--resync",
        "1h",
    ];
    argv.extend_from_slice(extra);
    let crate::config::Invocation::Run(config) =
        crate::config::parse(argv, &std::collections::HashMap::new()).unwrap()
    else {
        panic!("run")
    };
    let docker = Scripted::default();
    let memory = MemoryRegistry::new(NODE);
    prepare(&docker, &memory);
    let cancel = CancellationToken::new();
    let observe = Arc::new(crate::observe::Observer::new(Duration::from_secs(15)));
    let app = App::assemble(
        *config,
        Docker::Scripted(docker.clone()),
        NODE.to_owned(),
        Registry::Memory(memory.clone()),
        observe.clone(),
        &cancel,
        &TaskTracker::new(),
    )
    .unwrap();
    let (store, triggers) = (app.context().store.clone(), app.triggers());
    let running = app.spawn(cancel);
    let h = Harness {
        docker,
        memory,
        store,
        observe,
        triggers,
        running,
    };
    until("the source's first listing", Duration::from_secs(5), || {
        h.docker.streams_opened() == 1
    })
    .await;
    h
}

impl Harness {
    async fn trigger(&self, id: &str) {
        self.triggers
            .send(Trigger::Container(id.to_owned()))
            .await
            .unwrap();
    }

    /// The port `id` is registered with, if it is.
    fn port(&self, id: &str) -> Option<u16> {
        match self.memory.get(id)? {
            Entry::Berth(i) => Some(i.port),
            Entry::Foreign => None,
        }
    }

    /// Waits until every one of `ids` is registered, at most `limit`.
    async fn registered(&self, what: &str, limit: Duration, ids: &[&str]) {
        until(what, limit, || ids.iter().all(|id| self.port(id).is_some())).await;
    }

    async fn stop(self) {
        assert!(
            self.running.stop(Duration::from_secs(30)).await,
            "the tasks drain"
        );
    }
}

/// Register calls for `id`, failed ones included, with their times.
fn register_attempts(memory: &MemoryRegistry, id: &str) -> Vec<Instant> {
    memory
        .calls()
        .into_iter()
        .filter(|c| c.op == Call::Register && c.id == id)
        .map(|c| c.at)
        .collect()
}

/// Waits (on paused time, so it costs nothing) until `f` holds, at most `limit`.
async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Mechanism: the `running`/`dirty` sets. Triggers that arrive while a container is being
/// reconciled never start a second reconcile of it; they collapse into one more run after
/// it, which sees what changed meanwhile.
#[tokio::test(start_paused = true)]
async fn one_container_is_reconciled_by_one_task_at_a_time_and_once_more_after_changes() {
    let h = harness(&[]).await;
    h.docker.put(web("c1", 30001));
    h.docker.delay_inspects("c1", Duration::from_secs(1));
    for _ in 0..5 {
        h.trigger("c1").await;
    }
    // Half-way through the first inspect (which answers with what it saw when asked), the
    // container changes and Docker says so again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.docker.put(web("c1", 30002));
    h.trigger("c1").await;

    let id = instance_id("c1");
    until("the change registered", Duration::from_secs(10), || {
        h.port(&id) == Some(30002)
    })
    .await;
    assert_eq!(h.docker.max_concurrent_inspects("c1"), 1);
    assert_eq!(
        h.docker.inspects_of("c1"),
        2,
        "six triggers: the first reconcile and one re-run"
    );
    assert_eq!(h.memory.registers_of(&id), 2, "30001, then 30002");
    h.stop().await;
}

/// Mechanism: the retry backoff and its jitter. While the registry is down a container is
/// retried with doubling, jittered delays; once the registry answers it is registered and
/// not retried any more.
#[tokio::test(start_paused = true)]
async fn failed_writes_are_retried_with_doubling_jittered_delays_until_they_succeed() {
    let h = harness(&[]).await;
    let id = instance_id("c1");
    h.memory.set_unavailable(true);
    h.docker.put(web("c1", 30001));
    h.trigger("c1").await;
    tokio::time::sleep(Duration::from_secs(20)).await;

    let attempts = register_attempts(&h.memory, &id);
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 5, "{gaps:?}");
    for (k, gap) in gaps.iter().take(5).enumerate() {
        let full = Duration::from_millis(500) * (1 << k);
        assert!(
            *gap >= full / 2 && *gap <= full,
            "retry {}: waited {gap:?}, want [{:?}, {full:?}]; all gaps {gaps:?}",
            k + 1,
            full / 2
        );
    }
    assert!(
        gaps.iter()
            .take(5)
            .enumerate()
            .any(|(k, g)| *g < Duration::from_millis(500) * (1 << k)),
        "jittered, not exactly doubling: {gaps:?}"
    );

    h.memory.set_unavailable(false);
    h.registered(
        "registered once the registry answers",
        Duration::from_secs(20),
        &[&id],
    )
    .await;
    let after = register_attempts(&h.memory, &id).len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        register_attempts(&h.memory, &id).len(),
        after,
        "converged: no more retries"
    );
    h.stop().await;
}

/// Mechanism: parking. A write the registry refuses is not retried at the outage rate; it
/// waits, its reason is kept in the store, and other containers are unaffected.
/// Once the registry would take it, a later try succeeds.
#[tokio::test(start_paused = true)]
async fn a_refused_write_is_parked_with_its_reason_and_retried_slowly() {
    let h = harness(&[]).await;
    let (refused, fine) = (instance_id("c1"), instance_id("c2"));
    h.memory.reject(&refused, "value refused by policy");
    h.docker.put(web("c1", 30001));
    h.docker.put(web("c2", 30002));
    h.trigger("c1").await;
    h.trigger("c2").await;
    h.registered(
        "the other container registered",
        Duration::from_secs(5),
        &[&fine],
    )
    .await;
    until("the refusal parked", Duration::from_secs(5), || {
        !h.store.parked().is_empty()
    })
    .await;
    let parked = h.store.parked();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].op.id(), refused);
    assert_eq!(parked[0].container, "c1");
    assert!(
        parked[0].reason.contains("value refused by policy"),
        "{}",
        parked[0].reason
    );

    // Events for the container meanwhile do not retry the refused write either.
    for _ in 0..3 {
        h.trigger("c1").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(57)).await;
    let tries = register_attempts(&h.memory, &refused).len();
    // At the outage rate (0.5 s doubling to 16 s) a minute holds seven or more tries.
    assert!(
        (2..=3).contains(&tries),
        "{tries} tries of a refused write in a minute"
    );
    assert_eq!(h.memory.registers_of(&fine), 1);

    h.memory.accept(&refused);
    h.registered(
        "registered once accepted",
        Duration::from_secs(600),
        &[&refused],
    )
    .await;
    assert!(h.store.parked().is_empty(), "the park ends with the write");
    h.stop().await;
}

/// Mechanism: one retry timer per container, replaced by a sooner one. A container with a
/// parked write (retried in 15 s or more) whose other write then fails for a passing reason
/// is retried at the outage rate, not at the park's.
#[tokio::test(start_paused = true)]
async fn a_parked_write_does_not_delay_the_retry_of_another_write_of_its_container() {
    let h = harness(&[]).await;
    let (refused, other) = (format!("{NODE}:ctr-c1:80"), format!("{NODE}:ctr-c1:81"));
    h.memory.reject(&refused, "value refused by policy");
    h.docker.put(web2("c1", 30001, 30002));
    h.trigger("c1").await;
    h.registered(
        "the other port registered",
        Duration::from_secs(2),
        &[&other],
    )
    .await;
    until("the refusal parked", Duration::from_secs(2), || {
        !h.store.parked().is_empty()
    })
    .await;

    // The other port moves while the registry is briefly down.
    h.memory.set_unavailable(true);
    h.docker.put(web2("c1", 30001, 30003));
    h.trigger("c1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.memory.set_unavailable(false);
    let back = Instant::now();
    until("the move written", Duration::from_secs(60), || {
        h.port(&other) == Some(30003)
    })
    .await;
    assert!(
        back.elapsed() < Duration::from_secs(1),
        "written {:?} after the registry came back",
        back.elapsed()
    );
    h.stop().await;
}

/// Mechanism: listing sequence numbers. A registry listing that started before the one
/// already applied, and answers after it, is ignored: applying it would forget a write made
/// in between and register it again.
#[tokio::test(start_paused = true)]
async fn a_listing_older_than_the_one_applied_is_ignored() {
    let h = harness(&[]).await;
    let id = instance_id("c1");
    h.docker.put(web("c1", 30001));
    let lists = |h: &Harness| {
        h.memory
            .calls()
            .iter()
            .filter(|c| c.op == Call::List)
            .count()
    };
    let before = lists(&h);
    h.memory.delay_next_list(Duration::from_secs(5));
    for _ in 0..2 {
        h.triggers
            .send(Trigger::Snapshot(vec!["c1".to_owned()]))
            .await
            .unwrap();
    }
    h.registered(
        "registered after the fresh listing",
        Duration::from_secs(2),
        &[&id],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(lists(&h) - before, 2, "both listings answered");
    assert_eq!(
        h.memory.registers_of(&id),
        1,
        "the stale listing did not make the store forget the registration"
    );
    h.stop().await;
}

/// Mechanism: the task map. A reconcile task that panics frees its container, which is
/// retried like any failure.
#[tokio::test(start_paused = true)]
async fn a_reconcile_that_panics_frees_its_container_for_a_retry() {
    let h = harness(&[]).await;
    let id = instance_id("c1");
    h.docker.put(web("c1", 30001));
    h.docker.panic_next_inspect("c1");
    h.trigger("c1").await;
    h.registered("registered after the panic", Duration::from_secs(5), &[&id])
        .await;
    assert_eq!(
        h.docker.inspects_of("c1"),
        2,
        "the panicked one and the retry"
    );
    h.stop().await;
}

/// Mechanism: the heartbeat's `NotFound` repair. A registry that forgets an instance (a
/// Consul dev agent restart) is found out by the next heartbeat (every ttl/3 = 1 s), and the
/// container is registered again at once.
#[tokio::test(start_paused = true)]
async fn an_instance_the_registry_lost_is_registered_again_after_the_next_heartbeat() {
    let h = harness(&["--ttl", "3s"]).await;
    let id = instance_id("c1");
    h.docker.put(web("c1", 30001));
    h.trigger("c1").await;
    h.registered("registered", Duration::from_secs(2), &[&id])
        .await;
    h.memory.clear();
    let lost_at = Instant::now();
    h.registered("registered again", Duration::from_secs(10), &[&id])
        .await;
    assert!(
        lost_at.elapsed() <= Duration::from_millis(1100),
        "repaired {:?} after the loss",
        lost_at.elapsed()
    );
    assert_eq!(h.memory.registers_of(&id), 2);
    h.stop().await;
}

/// Mechanism: `Registry::maintain` waking the source's `resync_now`. When the registry drops
/// every instance of the node at once (an etcd lease expired), everything is written again
/// within moments, long before a heartbeat (every 20 s here) or the resync (1 h) would.
#[tokio::test(start_paused = true)]
async fn a_lost_lease_is_repaired_by_relisting_at_once() {
    let h = harness(&["--ttl", "60s", "--deregister-critical-after", "2m"]).await;
    let ids = [instance_id("c1"), instance_id("c2")];
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for (c, port) in [("c1", 30001), ("c2", 30002)] {
        h.docker.put(web(c, port));
        assert!(h.docker.emit(c, "start"));
    }
    h.registered("both registered", Duration::from_secs(2), &ids)
        .await;

    h.memory.expire_lease();
    let lost_at = Instant::now();
    h.registered("both registered again", Duration::from_secs(10), &ids)
        .await;
    assert!(
        lost_at.elapsed() < Duration::from_secs(1),
        "repaired {:?} after the loss",
        lost_at.elapsed()
    );
    for id in &ids {
        assert_eq!(h.memory.registers_of(id), 2, "{id}");
    }
    h.stop().await;
}

/// Mechanism: the source's reconnect and relist. When the event stream ends (dockerd
/// restarted), the source reconnects with backoff and relists: a container that went
/// meanwhile is deregistered, one that came is registered, and one that stayed is left alone.
#[tokio::test(start_paused = true)]
async fn an_event_stream_that_ends_is_reopened_and_the_relist_repairs_what_was_missed() {
    let h = harness(&[]).await;
    let (stays, goes, comes) = (
        instance_id("stays"),
        instance_id("goes"),
        instance_id("comes"),
    );
    for (c, port) in [("stays", 30001), ("goes", 30002)] {
        h.docker.put(web(c, port));
        assert!(h.docker.emit(c, "start"));
    }
    h.registered("both registered", Duration::from_secs(2), &[&stays, &goes])
        .await;

    // dockerd goes away; while it is down one container is removed and another started,
    // and their events are lost with the stream.
    h.docker.set_down(true);
    h.docker.end_stream();
    h.docker.remove("goes");
    h.docker.put(web("comes", 30003));
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.docker.set_down(false);

    until("the outage repaired", Duration::from_secs(60), || {
        h.port(&goes).is_none() && h.port(&comes).is_some()
    })
    .await;
    assert!(h.docker.streams_opened() >= 2, "the stream was reopened");
    assert_eq!(
        h.memory.registers_of(&stays),
        1,
        "the survivor was not rewritten"
    );
    h.stop().await;
}

/// Events arrive as triggers: a container started after the agent is registered from its
/// `start` event alone (no resync within the test), and removed from its `destroy`.
#[tokio::test(start_paused = true)]
async fn events_register_and_deregister_without_a_resync() {
    let h = harness(&[]).await;
    let id = instance_id("c1");
    h.docker.put(web("c1", 30001));
    assert!(h.docker.emit("c1", "start"));
    h.registered("registered from the event", Duration::from_secs(2), &[&id])
        .await;
    h.docker.remove("c1");
    assert!(h.docker.emit("c1", "destroy"));
    until(
        "deregistered from the event",
        Duration::from_secs(2),
        || h.port(&id).is_none(),
    )
    .await;
    assert_eq!(h.docker.lists(), 1, "no relist was needed");
    h.stop().await;
}

/// Mechanism: `first_pending` in the controller. Readiness waits until every container of the
/// first listing has been reconciled, not merely until the listing was read.
#[tokio::test(start_paused = true)]
async fn the_first_snapshot_counts_as_applied_once_each_listed_container_is_reconciled() {
    let h = harness_with(&[], |docker| {
        docker.put(web("c1", 30001));
        docker.delay_inspects("c1", Duration::from_secs(2));
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !h.observe.ready.applied(),
        "c1's reconcile is still inspecting"
    );
    assert_eq!(
        h.observe.ready.check(Instant::now()),
        Err("first snapshot not applied yet".into())
    );
    h.registered("c1", Duration::from_secs(5), &[&instance_id("c1")])
        .await;
    until("applied", Duration::from_secs(1), || {
        h.observe.ready.applied()
    })
    .await;
    assert_eq!(h.observe.ready.check(Instant::now()), Ok(()));
    h.stop().await;
}

/// Mechanism: `since` in the controller and the first write of a reconcile. An event's
/// latency is measured from its arrival to the first write it caused, once, and a trigger
/// that is not an event (a heartbeat's repair) is not measured.
#[tokio::test(start_paused = true)]
async fn event_to_write_latency_is_timed_from_the_event_once() {
    let h = harness(&[]).await;
    h.docker.put(web2("c1", 30001, 30002));
    h.docker.delay_inspects("c1", Duration::from_millis(300));
    let at = Instant::now();
    h.triggers
        .send(Trigger::Event {
            container: "c1".into(),
            at,
            fact: None,
        })
        .await
        .unwrap();
    h.registered(
        "both ports",
        Duration::from_secs(5),
        &["n1:ctr-c1:80", "n1:ctr-c1:81"],
    )
    .await;
    let m = &h.observe.metrics;
    assert_eq!(m.event_to_write.count(), 1, "two writes, one event");
    let took = m.event_to_write.sum();
    assert!((0.3..0.4).contains(&took), "{took}");
    h.docker.put(web("c1", 30003));
    h.trigger("c1").await;
    until("re-registered", Duration::from_secs(5), || {
        h.port(&instance_id("c1")) == Some(30003)
    })
    .await;
    assert_eq!(m.event_to_write.count(), 1, "not an event");
    h.stop().await;
}

/// Mechanism: `listing_retry` in the controller. A listing that fails (the registry is down
/// at startup) is tried again on the retry backoff, not at the next resync (an hour here), so
/// the agent becomes ready soon after the registry returns.
#[tokio::test(start_paused = true)]
async fn a_failed_listing_is_retried_until_the_registry_answers() {
    let h = harness_with(&[], |docker| docker.put(web("c1", 30001))).await;
    // Too late for the first listing, which already succeeded: make the registry fail, and
    // ask for a snapshot as a reconnect would.
    h.memory.set_unavailable(true);
    h.triggers
        .send(Trigger::Snapshot(vec!["c1".into()]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lists = |m: &MemoryRegistry| m.calls().iter().filter(|c| c.op == Call::List).count();
    let failed = lists(&h.memory);
    assert!(failed >= 3, "retried while failing: {failed} listings");
    h.memory.set_unavailable(false);
    until(
        "a listing after the registry returned",
        Duration::from_secs(20),
        || lists(&h.memory) > failed,
    )
    .await;
    let settled = lists(&h.memory);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        lists(&h.memory),
        settled,
        "no more retries once one succeeded"
    );
    h.stop().await;
}

/// Mechanism: `since` handed back by a reconcile whose writes failed. The event's latency
/// covers the outage: it is timed to the write that finally lands, on a retry.
#[tokio::test(start_paused = true)]
async fn an_events_latency_includes_the_retries_until_its_write_lands() {
    let h = harness(&[]).await;
    h.docker.put(web("c1", 30001));
    h.memory.set_unavailable(true);
    h.triggers
        .send(Trigger::Event {
            container: "c1".into(),
            at: Instant::now(),
            fact: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.observe.metrics.event_to_write.count(), 0);
    h.memory.set_unavailable(false);
    h.registered("c1", Duration::from_secs(30), &[&instance_id("c1")])
        .await;
    let m = &h.observe.metrics;
    assert_eq!(m.event_to_write.count(), 1);
    assert!(m.event_to_write.sum() >= 3.0, "{}", m.event_to_write.sum());
    h.stop().await;
}

/// Mechanism: snapshots reconcile every container looked at before. A skipped container
/// removed while no event told berth (the stream was down) leaves the status output at the
/// next snapshot.
#[tokio::test(start_paused = true)]
async fn a_snapshot_forgets_containers_removed_unseen() {
    let h = harness(&[]).await;
    let mut paused = web("c1", 30001);
    paused.paused = true;
    h.docker.put(paused);
    h.trigger("c1").await;
    until("c1 looked at", Duration::from_secs(5), || {
        h.store.snapshot().looks.contains_key("c1")
    })
    .await;
    assert_eq!(
        h.store.snapshot().looks["c1"].skipped,
        Some(crate::labels::Skip::Paused)
    );
    h.docker.remove("c1");
    h.triggers.send(Trigger::Snapshot(vec![])).await.unwrap();
    until("c1 forgotten", Duration::from_secs(5), || {
        h.store.snapshot().looks.is_empty()
    })
    .await;
    h.stop().await;
}

/// Mechanism: `deferred` in the controller. A trigger that arrives while the first listing
/// is still out (the source replays the last second of events right after connecting) waits
/// for it. Planned against the empty store, c1's reconcile would take the foreign holder of
/// its id for a free one and write over it.
#[tokio::test(start_paused = true)]
async fn triggers_before_the_first_listing_wait_for_it() {
    let started = Instant::now();
    let h = harness_full(&[], |docker, memory| {
        docker.put(web("c1", 30001));
        docker.put(web("c2", 30002));
        memory.insert_foreign(&instance_id("c1"));
        memory.delay_next_list(Duration::from_secs(2));
    })
    .await;
    h.trigger("c1").await;
    h.trigger("c2").await;
    h.registered("c2", Duration::from_secs(5), &[&instance_id("c2")])
        .await;
    let c2 = register_attempts(&h.memory, &instance_id("c2"));
    assert!(
        c2[0] >= started + Duration::from_secs(2),
        "c2 was written only after the listing came back: {:?}",
        c2[0] - started
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        register_attempts(&h.memory, &instance_id("c1")),
        Vec::<Instant>::new(),
        "the foreign holder of c1's id is never written over"
    );
    assert_eq!(h.memory.get(&instance_id("c1")), Some(Entry::Foreign));
    h.stop().await;
}

/// The health `id` is registered with, if it is.
fn health_of(h: &Harness, id: &str) -> Option<berth_registry::Status> {
    match h.memory.get(id)? {
        Entry::Berth(i) => Some(i.health.status),
        Entry::Foreign => None,
    }
}

/// Registers c1 (web on 30001) and waits for it; returns its instance id.
async fn registered_c1(h: &Harness) -> String {
    let id = instance_id("c1");
    h.docker.put(web("c1", 30001));
    h.trigger("c1").await;
    h.registered("c1", Duration::from_secs(5), &[&id]).await;
    id
}

/// `web(id)` as Docker shows it once its process has exited.
fn exited(id: &str) -> ContainerView {
    let mut v = web(id, 30001);
    v.running = false;
    v.bindings.clear();
    v
}

/// Mechanism: `Fact::Exited` and the fact path in `container.rs`. A `die` proves the
/// container no longer runs: its instances are deregistered at once, while Docker is still
/// tearing it down and has not answered the inspect; the inspect still follows.
#[tokio::test(start_paused = true)]
async fn an_exit_deregisters_at_once_without_waiting_for_the_inspect() {
    let h = harness(&[]).await;
    let id = registered_c1(&h).await;
    h.docker.put(exited("c1"));
    // Docker answers the inspect of a dying container only once it is torn down.
    h.docker.delay_inspects("c1", Duration::from_secs(5));
    let inspects = h.docker.inspects_of("c1");
    let t0 = Instant::now();
    assert!(h.docker.emit("c1", "die"));
    until("deregistered", Duration::from_secs(10), || {
        h.memory.get(&id).is_none()
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "deregistered {:?} after the event, not after the inspect",
        t0.elapsed()
    );
    until("the inspect that converges", Duration::from_secs(1), || {
        h.docker.inspects_of("c1") > inspects
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(h.memory.get(&id), None, "the inspect agrees: still gone");
    assert_eq!(h.observe.metrics.event_to_write.count(), 1);
    h.stop().await;
}

/// Mechanism: preemption (`preempt` in the controller, the `select!` around the inspect).
/// A reconcile already waiting on an inspect (started by an earlier event) would hold the
/// container's turn until Docker answers; an exit preempts it and is written at once.
#[tokio::test(start_paused = true)]
async fn an_exit_preempts_a_reconcile_waiting_on_its_inspect() {
    let h = harness(&[]).await;
    let id = registered_c1(&h).await;
    h.docker.delay_inspects("c1", Duration::from_secs(5));
    // Something else happened to the container first: a reconcile starts and inspects.
    assert!(h.docker.emit("c1", "update"));
    let inspects = h.docker.inspects_of("c1");
    until("the inspect asked", Duration::from_secs(1), || {
        h.docker.inspects_of("c1") > inspects
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.docker.put(exited("c1"));
    let t0 = Instant::now();
    assert!(h.docker.emit("c1", "die"));
    until("deregistered", Duration::from_secs(10), || {
        h.memory.get(&id).is_none()
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "deregistered {:?} after the event: the running reconcile was not preempted",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(h.memory.get(&id), None);
    assert_eq!(
        h.docker.max_concurrent_inspects("c1"),
        1,
        "never two operations on one container"
    );
    h.stop().await;
}

/// Mechanism: the inspect after a fact. An exit that the container's state contradicts
/// (it runs again: a replayed event, or a restart between) is undone by the inspect that
/// follows it: what Docker says last wins.
#[tokio::test(start_paused = true)]
async fn an_inspect_that_finds_the_container_running_after_an_exit_wins() {
    let h = harness(&[]).await;
    let id = registered_c1(&h).await;
    assert!(h.docker.emit("c1", "die"));
    until(
        "deregistered from the event",
        Duration::from_secs(5),
        || {
            h.memory
                .calls()
                .iter()
                .any(|c| c.op == Call::Deregister && c.id == id)
        },
    )
    .await;
    h.registered(
        "registered again from the inspect",
        Duration::from_secs(5),
        &[&id],
    )
    .await;
    assert_eq!(h.memory.registers_of(&id), 2);
    h.stop().await;
}

/// Mechanism: `Fact::Started` replaces a pending exit. A container that died and started
/// again before its exit was applied is not deregistered by the stale exit.
#[tokio::test(start_paused = true)]
async fn a_start_replaces_an_exit_not_yet_applied() {
    let h = harness(&[]).await;
    let id = registered_c1(&h).await;
    // c1's reconcile is busy, so both events wait for it.
    h.docker.delay_inspects("c1", Duration::from_secs(1));
    h.trigger("c1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.docker.delay_inspects("c1", Duration::ZERO);
    let deregisters = |h: &Harness| {
        h.memory
            .calls()
            .into_iter()
            .filter(|c| c.op == Call::Deregister && c.id == id)
            .count()
    };
    // The preempted reconcile and the two events collapse into one run, an inspect.
    assert!(h.docker.emit("c1", "die"));
    assert!(h.docker.emit("c1", "start"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(deregisters(&h), 0, "the exit was stale before it ran");
    assert!(h.port(&id).is_some());
    h.stop().await;
}

/// Mechanism: `Fact::Signalled` and the drain (`start_drain`, `apply_drain`). The stop
/// signal turns the instances critical at once, while the container still runs; inspects
/// meanwhile keep them critical; the exit deregisters them.
#[tokio::test(start_paused = true)]
async fn a_stop_signal_drains_the_instances_until_the_container_exits() {
    let h = harness(&[]).await;
    let id = registered_c1(&h).await;
    assert_eq!(health_of(&h, &id), Some(berth_registry::Status::Passing));
    let t0 = Instant::now();
    assert!(h.docker.emit_kill("c1", 15));
    until("critical", Duration::from_secs(5), || {
        health_of(&h, &id) == Some(berth_registry::Status::Critical)
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    let Some(Entry::Berth(drained)) = h.memory.get(&id) else {
        panic!("registered")
    };
    assert!(
        drained.health.output.contains("is stopping (SIGTERM)"),
        "{}",
        drained.health.output
    );
    // The container still runs; its inspects do not undo the drain.
    h.trigger("c1").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(health_of(&h, &id), Some(berth_registry::Status::Critical));
    assert_eq!(
        h.memory.registers_of(&id),
        1,
        "a drain is a health write, never a re-registration"
    );
    h.docker.put(exited("c1"));
    assert!(h.docker.emit("c1", "die"));
    until("deregistered", Duration::from_secs(5), || {
        h.memory.get(&id).is_none()
    })
    .await;
    h.stop().await;
}

/// Mechanism: the drain's end (`Outcome::Again`). A container that survives its stop signal
/// (a `docker kill -s TERM` it handles) is drained for its stop timeout plus the grace, then
/// its health is written back.
#[tokio::test(start_paused = true)]
async fn a_drain_lapses_when_the_container_outlives_its_stop_timeout() {
    let h = harness(&[]).await;
    let id = instance_id("c1");
    let mut v = web("c1", 30001);
    v.stop_timeout = Some(3);
    h.docker.put(v);
    h.trigger("c1").await;
    h.registered("c1", Duration::from_secs(5), &[&id]).await;
    assert!(h.docker.emit_kill("c1", 15));
    until("critical", Duration::from_secs(1), || {
        health_of(&h, &id) == Some(berth_registry::Status::Critical)
    })
    .await;
    let t0 = Instant::now();
    until("passing again", Duration::from_secs(10), || {
        health_of(&h, &id) == Some(berth_registry::Status::Passing)
    })
    .await;
    let drained = t0.elapsed();
    assert!(
        drained >= Duration::from_secs(4) && drained <= Duration::from_secs(6),
        "drained {drained:?}: the 3 s stop timeout plus the 2 s grace"
    );
    h.stop().await;
}

/// Mechanism: which signal drains (`labels::drain::resolve`, the signal check in
/// `from_event`). Only the container's own stop signal drains it; `berth.drain=false` and
/// `--drain-on-stop=false` turn draining off, and `berth.drain=true` turns it back on.
#[tokio::test(start_paused = true)]
async fn only_the_containers_stop_signal_drains_it_unless_draining_is_off() {
    let h = harness(&[]).await;
    let mut quits = web("c1", 30001);
    quits.stop_signal = Some("SIGQUIT".into());
    let mut off = web("c2", 30002);
    off.labels.insert("berth.drain".into(), "false".into());
    h.docker.put(quits);
    h.docker.put(off);
    h.trigger("c1").await;
    h.trigger("c2").await;
    let (c1, c2) = (instance_id("c1"), instance_id("c2"));
    h.registered("both", Duration::from_secs(5), &[&c1, &c2])
        .await;
    // Not c1's stop signal (a reload, say); c2 is not drained at all.
    assert!(h.docker.emit_kill("c1", 1));
    assert!(h.docker.emit_kill("c1", 15));
    assert!(h.docker.emit_kill("c2", 15));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(health_of(&h, &c1), Some(berth_registry::Status::Passing));
    assert_eq!(health_of(&h, &c2), Some(berth_registry::Status::Passing));
    assert!(h.docker.emit_kill("c1", 3));
    until("c1 drained on SIGQUIT", Duration::from_secs(1), || {
        health_of(&h, &c1) == Some(berth_registry::Status::Critical)
    })
    .await;
    h.stop().await;

    let h = harness(&["--drain-on-stop=false"]).await;
    let mut on = web("c3", 30003);
    on.labels.insert("berth.drain".into(), "true".into());
    h.docker.put(on);
    h.docker.put(web("c4", 30004));
    h.trigger("c3").await;
    h.trigger("c4").await;
    let (c3, c4) = (instance_id("c3"), instance_id("c4"));
    h.registered("both", Duration::from_secs(5), &[&c3, &c4])
        .await;
    assert!(h.docker.emit_kill("c3", 15));
    assert!(h.docker.emit_kill("c4", 15));
    until("c3 drained by its label", Duration::from_secs(1), || {
        health_of(&h, &c3) == Some(berth_registry::Status::Critical)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(health_of(&h, &c4), Some(berth_registry::Status::Passing));
    h.stop().await;
}

/// Mechanism: `First` in the controller. The first registry listing is read while Docker
/// lists its containers, not after, and the first snapshot uses it rather than listing again.
#[tokio::test(start_paused = true)]
async fn the_first_listing_is_read_while_docker_lists() {
    let started = Instant::now();
    let h = harness_full(&[], |docker, memory| {
        docker.put(web("c1", 30001));
        docker.delay_lists(Duration::from_secs(1));
        memory.delay_next_list(Duration::from_secs(1));
    })
    .await;
    let id = instance_id("c1");
    h.registered("c1", Duration::from_secs(5), &[&id]).await;
    let at = register_attempts(&h.memory, &id)[0] - started;
    assert!(
        at < Duration::from_millis(1500),
        "registered {at:?} after the start: the two listings ran one after the other"
    );
    let listings = h
        .memory
        .calls()
        .into_iter()
        .filter(|c| c.op == Call::List)
        .count();
    assert_eq!(listings, 1, "the first snapshot used the first listing");
    h.stop().await;
}

/// Mechanism: `Fact::Killed` and `Store::killed`. A SIGKILL deregisters at once; Docker may
/// still report the container running until its `die`, and such an inspect (a probe's
/// recheck, a resync) does not register it again; the `die` settles it.
#[tokio::test(start_paused = true)]
async fn a_sigkill_deregisters_at_once_and_is_not_undone_before_the_die() {
    let h = harness(&[]).await;
    let id = registered_c1(&h).await;
    // The kill event; Docker has not updated the container's state yet.
    assert!(h.docker.emit_kill("c1", 9));
    until("deregistered", Duration::from_secs(1), || {
        h.memory.get(&id).is_none()
    })
    .await;
    for _ in 0..3 {
        h.trigger("c1").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        h.memory.get(&id),
        None,
        "not registered again before the die"
    );
    h.docker.put(exited("c1"));
    assert!(h.docker.emit("c1", "die"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.memory.get(&id), None);
    assert_eq!(h.memory.registers_of(&id), 1);
    h.stop().await;
}

/// Mechanism: `KILL_CONFIRM`. A SIGKILL whose `die` never comes (the kill did not take) is
/// undone by the inspect after `KILL_CONFIRM`: the container runs, so it is registered.
#[tokio::test(start_paused = true)]
async fn a_sigkill_without_a_die_is_undone_after_the_confirmation_window() {
    let h = harness(&[]).await;
    let id = registered_c1(&h).await;
    assert!(h.docker.emit_kill("c1", 9));
    until("deregistered", Duration::from_secs(1), || {
        h.memory.get(&id).is_none()
    })
    .await;
    let t0 = Instant::now();
    h.registered("registered again", Duration::from_secs(10), &[&id])
        .await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "registered again {:?} after the kill",
        t0.elapsed()
    );
    h.stop().await;
}
