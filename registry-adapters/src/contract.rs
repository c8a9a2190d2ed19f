//! The registry contract, written once: every case takes a [`Subject`] (a backend that can
//! make clients and suffer faults), drives [`Registry`]s only through the contract's own
//! operations, and asserts what every backend must do. [`registry_contract!`] instantiates
//! each case as a `#[test]`.
//!
//! It runs against the memory backend (this crate's unit tests) and against a real Consul
//! agent and a real etcd (`tests/tests/registry_contract.rs`). What only one backend does
//! (Consul's two checks, etcd's transactions, keys and leases) stays in that backend's own
//! suite.
//!
//! Reads that go through a backend's eventually consistent side (Consul's catalog, which
//! `lookup` reads) are polled for a few seconds; everything else is asserted at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::RegistryError;
use crate::instance::{Health, Instance, Origin, Status};
use crate::{Listing, Registry};

/// A backend the contract runs against.
pub trait Subject {
    /// A new client acting as `node`, like a freshly started agent: it remembers nothing of
    /// what earlier clients wrote.
    fn client(&self, node: &str) -> Registry;
    /// Makes the registry lose every registration (a Consul dev agent restarted, etcd wiped,
    /// the memory cleared); returns once it answers again.
    fn lose_everything(&mut self);
    /// Makes the registry unreachable.
    fn stop(&mut self);
    /// Makes it reachable again (with or without its data); returns once it answers.
    fn start(&mut self);
    /// A client of an earlier agent process of `node` whose registrations the next one
    /// cannot simply take over (etcd: its lease has another TTL, so the next process writes
    /// its keys again under a lease of its own). The same as [`Subject::client`] by default.
    fn predecessor(&self, node: &str) -> Registry {
        self.client(node)
    }
    /// Whether a freshly started client lists what a [`Subject::predecessor`] wrote as stale
    /// (etcd: the keys are on the earlier process's lease). Backends that never mark
    /// anything stale answer false.
    fn marks_stale(&self) -> bool {
        false
    }
}

/// Instantiates every case of the contract as a `#[test]` in the calling module, each with a
/// fresh subject from `$subject` (an expression evaluated inside the test).
#[macro_export]
macro_rules! registry_contract {
    ($subject:expr) => {
        $crate::registry_contract!(@cases $subject;
            register_is_idempotent_and_listed_as_owned,
            a_changed_registration_replaces_the_old_one,
            an_ipv6_address_round_trips,
            health_writes_are_read_back,
            another_nodes_entry_is_never_overwritten_or_removed,
            only_owned_instances_are_stale_and_a_write_refreshes_them,
            a_new_client_takes_over_what_an_earlier_one_wrote,
            a_lost_registration_is_reported,
            unknown_ids_are_not_found_and_deregister_is_idempotent,
            an_unreachable_registry_is_transient_and_the_same_client_recovers,
        );
    };
    (@cases $subject:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let rt = ::tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                let mut subject = $subject;
                rt.block_on($crate::contract::$case(&mut subject));
            }
        )*
    };
}

const NODE: &str = "node1";
const OTHER: &str = "node2";
/// How long an eventually consistent read may take to show a write.
const SETTLE: Duration = Duration::from_secs(10);

/// An instance of `node` as an agent would register it.
pub fn instance(node: &str, id: &str, name: &str, health: Health) -> Instance {
    Instance {
        id: id.to_owned(),
        name: name.to_owned(),
        address: "10.0.0.7".to_owned(),
        port: 32768,
        tags: vec!["v1".to_owned()],
        meta: BTreeMap::from([("team".to_owned(), "core".to_owned())]),
        origin: Origin {
            node: node.to_owned(),
            container_id: "c0ffee".repeat(8),
            container_name: format!("ctr-{name}"),
            image: "example/web:1".to_owned(),
        },
        health,
    }
}

/// Polls `f` until it returns `Ok`, for at most [`SETTLE`]; panics with the last `Err`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not seen within {SETTLE:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn owned<'a>(listing: &'a Listing, id: &str) -> Option<&'a Instance> {
    listing.owned.iter().find(|i| i.id == id)
}

/// `listing` holds `want` as owned exactly once, written as it is, health included.
fn assert_owned(listing: &Listing, want: &Instance) {
    let found: Vec<&Instance> = listing.owned.iter().filter(|i| i.id == want.id).collect();
    assert_eq!(found.len(), 1, "{} owned once in {listing:#?}", want.id);
    assert!(
        found[0].same_registration(want),
        "listed {:#?}, registered {want:#?}",
        found[0]
    );
    assert_eq!(found[0].health, want.health, "health of {}", want.id);
    assert!(
        !listing.foreign_ids.contains(&want.id),
        "{} both owned and foreign: {listing:#?}",
        want.id
    );
}

/// `lookup(name)` shows exactly the instances `ids`, with their health.
async fn lookup_shows(r: &Registry, name: &str, passing_only: bool, want: &[&Instance]) {
    let mut want_ids: Vec<(String, Status)> = want
        .iter()
        .map(|i| (i.id.clone(), i.health.status))
        .collect();
    want_ids.sort();
    eventually(
        &format!("lookup of {name} (passing only: {passing_only})"),
        || async {
            let found = r
                .lookup(name, passing_only)
                .await
                .map_err(|e| e.to_string())?;
            let mut ids: Vec<(String, Status)> = found
                .iter()
                .map(|i| (i.id.clone(), i.health.status))
                .collect();
            ids.sort();
            if ids != want_ids {
                return Err(format!("found {ids:?}, want {want_ids:?}"));
            }
            for w in want {
                let f = found.iter().find(|f| f.id == w.id).expect("matched above");
                if !f.same_registration(w) {
                    return Err(format!("found {f:#?}, want {w:#?}"));
                }
            }
            Ok(())
        },
    )
    .await;
}

fn assert_rejected(result: Result<(), RegistryError>, what: &str) {
    match result {
        Err(e @ RegistryError::Rejected { .. }) => {
            assert!(!e.is_transient(), "{what}: a refusal is permanent: {e:?}")
        }
        other => panic!("{what}: want a refusal, got {other:?}"),
    }
}

fn assert_not_found(result: Result<(), RegistryError>, id: &str, what: &str) {
    match result {
        Err(RegistryError::NotFound { id: got }) => assert_eq!(got, id, "{what}"),
        other => panic!("{what}: want NotFound for {id}, got {other:?}"),
    }
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, RegistryError>, what: &str) {
    match result {
        Err(e @ RegistryError::Unavailable { .. }) => {
            assert!(e.is_transient(), "{what}: an outage is transient: {e:?}")
        }
        other => panic!("{what}: want Unavailable, got {other:?}"),
    }
}

/// Registering twice leaves one entry, listed as this node's with its health, found by a
/// lookup, and listed the same by a freshly started client of the node.
pub async fn register_is_idempotent_and_listed_as_owned(s: &mut impl Subject) {
    let r = s.client(NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    r.register(&web).await.unwrap();
    r.register(&web).await.unwrap();

    let listing = r.list().await.unwrap();
    assert_owned(&listing, &web);
    assert_eq!(listing.owned.len(), 1, "{listing:#?}");
    assert!(
        !listing.stale.contains(&web.id),
        "written by this client, so not stale: {listing:#?}"
    );
    lookup_shows(&r, "web", false, &[&web]).await;

    let restarted = s.client(NODE);
    assert_owned(&restarted.list().await.unwrap(), &web);
}

/// A register with changed fields (port, tags, meta, even the service name) replaces the old
/// registration instead of adding a second one.
pub async fn a_changed_registration_replaces_the_old_one(s: &mut impl Subject) {
    let r = s.client(NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    r.register(&web).await.unwrap();

    let mut moved = web.clone();
    moved.port = 40000;
    moved.tags = vec!["v2".to_owned()];
    moved.meta.insert("region".to_owned(), "eu".to_owned());
    r.register(&moved).await.unwrap();
    let listing = r.list().await.unwrap();
    assert_owned(&listing, &moved);
    assert_eq!(listing.owned.len(), 1, "{listing:#?}");

    let mut renamed = moved.clone();
    renamed.name = "frontend".to_owned();
    r.register(&renamed).await.unwrap();
    let listing = r.list().await.unwrap();
    assert_owned(&listing, &renamed);
    assert_eq!(listing.owned.len(), 1, "{listing:#?}");
    lookup_shows(&r, "frontend", false, &[&renamed]).await;
    lookup_shows(&r, "web", false, &[]).await;
}

/// An IPv6 address is written and read back as it is, by listings and lookups.
pub async fn an_ipv6_address_round_trips(s: &mut impl Subject) {
    let r = s.client(NODE);
    let web6 = Instance {
        address: "fd00:dead:beef::7".to_owned(),
        ..instance(NODE, "node1:web6:80", "web6", Health::passing("ok"))
    };
    r.register(&web6).await.unwrap();
    assert_owned(&r.list().await.unwrap(), &web6);
    lookup_shows(&r, "web6", false, &[&web6]).await;
}

/// `set_health` changes status and output as listings and lookups read them, and
/// `passing_only` lookups follow the status.
pub async fn health_writes_are_read_back(s: &mut impl Subject) {
    let r = s.client(NODE);
    let mut api = instance(NODE, "node1:api:8080", "api", Health::critical("starting"));
    r.register(&api).await.unwrap();
    assert_owned(&r.list().await.unwrap(), &api);

    api.health = Health::passing("HTTP GET /health: 200 OK");
    r.set_health(&api.id, &api.health).await.unwrap();
    assert_owned(&r.list().await.unwrap(), &api);
    lookup_shows(&r, "api", true, &[&api]).await;

    api.health = Health {
        status: Status::Warning,
        output: "HTTP GET /health: 429 Too Many Requests".to_owned(),
    };
    r.set_health(&api.id, &api.health).await.unwrap();
    assert_owned(&r.list().await.unwrap(), &api);

    api.health = Health::critical("HTTP GET /health: 503 Service Unavailable");
    r.set_health(&api.id, &api.health).await.unwrap();
    assert_owned(&r.list().await.unwrap(), &api);
    lookup_shows(&r, "api", false, &[&api]).await;
    lookup_shows(&r, "api", true, &[]).await;

    // Unchanged health is accepted again (backends may skip the write).
    r.set_health(&api.id, &api.health).await.unwrap();
    assert_owned(&r.list().await.unwrap(), &api);
}

/// Another node's instance under an id this node also wants (only an explicit id label can
/// make two nodes want one id) is refused, not overwritten; this node's deregister, heartbeat
/// and health write leave it as it is.
pub async fn another_nodes_entry_is_never_overwritten_or_removed(s: &mut impl Subject) {
    let one = s.client(NODE);
    let two = s.client(OTHER);
    let theirs = instance(NODE, "shared-id", "web", Health::passing("node1's"));
    one.register(&theirs).await.unwrap();

    let mine = instance(OTHER, "shared-id", "web", Health::passing("node2's"));
    assert_rejected(two.register(&mine).await, "register over another node's id");
    assert_rejected(
        two.register(&theirs).await,
        "register of an instance of another node",
    );
    two.deregister(&theirs.id).await.unwrap();
    assert_not_found(
        two.heartbeat(&theirs.id).await,
        &theirs.id,
        "heartbeat of another node's id",
    );
    assert_not_found(
        two.set_health(&theirs.id, &Health::critical("node2 says"))
            .await,
        &theirs.id,
        "health write to another node's id",
    );

    assert_owned(&one.list().await.unwrap(), &theirs);
    let listing = two.list().await.unwrap();
    assert!(owned(&listing, &theirs.id).is_none(), "{listing:#?}");
    lookup_shows(&one, "web", false, &[&theirs]).await;
}

/// A listing marks only owned instances stale (ones the registry drops unless written again,
/// e.g. held by a previous process's etcd lease that cannot be taken over), never one this
/// client wrote; writing a stale instance again makes it current.
pub async fn only_owned_instances_are_stale_and_a_write_refreshes_them(s: &mut impl Subject) {
    let first = s.predecessor(NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    let api = instance(NODE, "node1:api:81", "api", Health::passing("ok"));
    first.register(&web).await.unwrap();
    first.register(&api).await.unwrap();

    let second = s.client(NODE);
    let listing = second.list().await.unwrap();
    assert_owned(&listing, &web);
    assert_owned(&listing, &api);
    for id in &listing.stale {
        assert!(
            owned(&listing, id).is_some(),
            "stale {id} is not owned: {listing:#?}"
        );
    }
    let stale = |l: &Listing| l.stale.iter().cloned().collect::<Vec<_>>();
    let marks = s.marks_stale();
    let want = |ids: &[&str]| -> Vec<String> {
        let mut ids: Vec<String> = ids.iter().map(|i| (*i).to_owned()).collect();
        ids.sort();
        if marks { ids } else { Vec::new() }
    };
    assert_eq!(stale(&listing), want(&[&web.id, &api.id]), "{listing:#?}");
    second.register(&web).await.unwrap();
    let listing = second.list().await.unwrap();
    assert_eq!(stale(&listing), want(&[&api.id]), "{listing:#?}");
    assert_owned(&listing, &web);
    assert_owned(&listing, &api);
}

/// A freshly started client of the same node (an agent restart or upgrade) takes over what
/// the earlier one wrote as it is: nothing is stale, so nothing needs writing again, and it
/// keeps the instances alive.
pub async fn a_new_client_takes_over_what_an_earlier_one_wrote(s: &mut impl Subject) {
    let first = s.client(NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    first.register(&web).await.unwrap();
    drop(first);

    let second = s.client(NODE);
    let listing = second.list().await.unwrap();
    assert_owned(&listing, &web);
    assert!(listing.stale.is_empty(), "{listing:#?}");
    second.heartbeat(&web.id).await.unwrap();
    lookup_shows(&second, "web", true, &[&web]).await;
}

/// When the registry loses this node's registrations, the client says so, by answering a
/// heartbeat `NotFound` or by waking `maintain`'s `lost`; registering again brings the
/// instance back and keeps it alive.
pub async fn a_lost_registration_is_reported(s: &mut impl Subject) {
    let r = s.client(NODE);
    let lost = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let upkeep = tokio::spawn({
        let (r, lost, cancel) = (r.clone(), lost.clone(), cancel.clone());
        async move { r.maintain(lost, cancel).await }
    });
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    r.register(&web).await.unwrap();
    r.heartbeat(&web.id).await.unwrap();

    tokio::task::block_in_place(|| s.lose_everything());

    let reported = async {
        loop {
            match r.heartbeat(&web.id).await {
                Err(RegistryError::NotFound { .. }) => return "heartbeat NotFound",
                Ok(()) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    };
    let how = tokio::select! {
        how = reported => how,
        _ = lost.notified() => "maintain woke lost",
        _ = tokio::time::sleep(SETTLE) => panic!("the loss of {} was never reported", web.id),
    };
    eventually(
        &format!("{} registered again after {how}", web.id),
        || async {
            r.register(&web).await.map_err(|e| e.to_string())?;
            r.heartbeat(&web.id).await.map_err(|e| e.to_string())
        },
    )
    .await;
    assert_owned(&r.list().await.unwrap(), &web);
    cancel.cancel();
    upkeep.await.unwrap();
}

/// Ids the registry does not hold answer heartbeats and health writes with `NotFound`;
/// deregistering removes an instance, and is idempotent, also from a freshly started client
/// that never wrote it.
pub async fn unknown_ids_are_not_found_and_deregister_is_idempotent(s: &mut impl Subject) {
    let r = s.client(NODE);
    let never = "node1:never:1";
    assert_not_found(
        r.heartbeat(never).await,
        never,
        "heartbeat of an unknown id",
    );
    assert_not_found(
        r.set_health(never, &Health::critical("x")).await,
        never,
        "health write to an unknown id",
    );
    r.deregister(never).await.unwrap();

    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    let api = instance(NODE, "node1:api:81", "api", Health::passing("ok"));
    r.register(&web).await.unwrap();
    r.register(&api).await.unwrap();
    r.deregister(&web.id).await.unwrap();
    r.deregister(&web.id).await.unwrap();
    let listing = r.list().await.unwrap();
    assert!(owned(&listing, &web.id).is_none(), "{listing:#?}");
    assert_not_found(
        r.heartbeat(&web.id).await,
        &web.id,
        "heartbeat after deregister",
    );
    lookup_shows(&r, "web", false, &[]).await;

    let restarted = s.client(NODE);
    restarted.deregister(&api.id).await.unwrap();
    let listing = r.list().await.unwrap();
    assert!(listing.owned.is_empty(), "{listing:#?}");
}

/// An unreachable registry fails writes and listings as `Unavailable` (transient), and the
/// same client works again once it is back, without being rebuilt.
pub async fn an_unreachable_registry_is_transient_and_the_same_client_recovers(
    s: &mut impl Subject,
) {
    let r = s.client(NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    r.register(&web).await.unwrap();

    tokio::task::block_in_place(|| s.stop());
    let api = instance(NODE, "node1:api:81", "api", Health::passing("ok"));
    assert_unavailable(r.register(&api).await, "register while down");
    assert_unavailable(r.list().await, "list while down");
    assert_unavailable(
        r.set_health(&web.id, &Health::critical("changed")).await,
        "health write while down",
    );
    assert_unavailable(r.deregister(&web.id).await, "deregister while down");

    tokio::task::block_in_place(|| s.start());
    eventually("register once the registry is back", || async {
        r.register(&api).await.map_err(|e| e.to_string())
    })
    .await;
    assert_owned(&r.list().await.unwrap(), &api);
}

/// The memory backend as a [`Subject`].
#[derive(Debug)]
pub struct Memory(crate::memory::MemoryRegistry);

impl Default for Memory {
    fn default() -> Self {
        Memory(crate::memory::MemoryRegistry::new(NODE))
    }
}

impl Subject for Memory {
    fn client(&self, node: &str) -> Registry {
        Registry::Memory(self.0.for_node(node))
    }

    fn lose_everything(&mut self) {
        self.0.clear();
    }

    fn stop(&mut self) {
        self.0.set_unavailable(true);
    }

    fn start(&mut self) {
        self.0.set_unavailable(false);
    }
}

#[cfg(test)]
mod memory {
    crate::registry_contract!(super::Memory::default());
}
