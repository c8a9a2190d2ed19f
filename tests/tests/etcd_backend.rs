//! What only the etcd backend does, against a real etcd 3.4, one per test: what etcd itself
//! holds, read with `etcdctl` (keys, values, leases, revisions), transactions, the lease, the
//! memory of what was written, timeouts, authentication and TLS. The contract every backend
//! keeps is `registry_contract.rs`.
//! The harness is blocking, so tests are
//! plain `#[test]`s that drive the async client on a runtime of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_e2e::etcd::{EtcdServer, Kv};
use berth_e2e::{Rt, free_port};
use berth_registry::contract::instance;
use berth_registry::etcd::{EtcdConfig, EtcdRegistry};
use berth_registry::{Health, RegistryError, Status};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const NODE: &str = "node1";
const PREFIX: &str = "/berth";

fn config(endpoint: &str, node: &str) -> EtcdConfig {
    berth_e2e::crypto();
    EtcdConfig {
        endpoints: vec![endpoint.to_owned()],
        prefix: PREFIX.to_owned(),
        node: node.to_owned(),
        ttl: Duration::from_secs(3),
        request_timeout: Duration::from_secs(2),
        ..EtcdConfig::default()
    }
}

fn registry(etcd: &EtcdServer, node: &str) -> EtcdRegistry {
    EtcdRegistry::new(config(&etcd.endpoint(), node)).unwrap()
}

/// A client whose lease has TTL `ttl` (an agent run with another `--ttl`).
fn registry_with_ttl(etcd: &EtcdServer, node: &str, ttl: Duration) -> EtcdRegistry {
    EtcdRegistry::new(EtcdConfig {
        ttl,
        ..config(&etcd.endpoint(), node)
    })
    .unwrap()
}

/// Runs `keep_lease` on `rt` until the token is cancelled; `lost` wakes on a lost lease.
fn spawn_keeper(
    rt: &Rt,
    reg: &EtcdRegistry,
) -> (Arc<Notify>, CancellationToken, tokio::task::JoinHandle<()>) {
    let lost = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let keeper = {
        let (reg, lost, cancel) = (reg.clone(), lost.clone(), cancel.clone());
        rt.0.spawn(async move { reg.keep_lease(lost, cancel).await })
    };
    (lost, cancel, keeper)
}

fn key(name: &str, id: &str) -> String {
    format!("{PREFIX}/services/{name}/{id}")
}

fn index(node: &str, id: &str) -> String {
    format!("{PREFIX}/nodes/{node}/{id}")
}

fn must_get(etcd: &EtcdServer, k: &str) -> Kv {
    etcd.get(k)
        .unwrap_or_else(|| panic!("{k} missing\n{}", etcd.describe(PREFIX)))
}

#[test]
fn register_writes_the_instance_and_its_index_in_one_transaction_under_the_lease() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let reg = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();

    let inst = must_get(&etcd, &key("web", "node1:web:80"));
    let idx = must_get(&etcd, &index(NODE, "node1:web:80"));
    let v = inst.json();
    assert_eq!(v["id"], "node1:web:80");
    assert_eq!(v["name"], "web");
    assert_eq!(v["address"], "10.0.0.7");
    assert_eq!(v["port"], 32768);
    assert_eq!(v["tags"], serde_json::json!(["v1"]));
    assert_eq!(v["meta"], serde_json::json!({"team": "core"}));
    assert_eq!(v["node"], NODE);
    assert_eq!(v["container_id"], "c0ffee".repeat(8));
    assert_eq!(v["container_name"], "ctr-web");
    assert_eq!(v["image"], "example/web:1");
    assert_eq!(v["health"]["status"], "passing");
    assert_eq!(v["health"]["output"], "ok");
    assert!(
        v["updated"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    assert_eq!(idx.value, key("web", "node1:web:80"));
    // One transaction: both keys changed at the same revision, under the same lease.
    assert_eq!(inst.mod_revision, idx.mod_revision);
    assert_ne!(inst.lease, 0);
    assert_eq!(inst.lease, idx.lease);
    assert_eq!(Some(inst.lease), reg.lease());
    let (_, granted) = etcd.lease_ttl(inst.lease).expect("lease exists");
    assert_eq!(granted, 3, "the lease TTL is the configured ttl");

    // A second instance shares the one lease of the agent.
    let api = instance(NODE, "node1:api:81", "api", Health::critical("starting"));
    rt.run(reg.register(&api)).unwrap();
    assert_eq!(
        must_get(&etcd, &key("api", "node1:api:81")).lease,
        inst.lease
    );
    assert_eq!(
        must_get(&etcd, &key("api", "node1:api:81")).json()["health"]["status"],
        "critical"
    );
}

#[test]
fn nothing_is_written_when_nothing_changed() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let reg = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    let first = must_get(&etcd, &key("web", "node1:web:80"));

    rt.run(reg.register(&web)).unwrap();
    rt.run(reg.set_health(&web.id, &Health::passing("ok")))
        .unwrap();
    assert_eq!(must_get(&etcd, &key("web", "node1:web:80")), first);

    // A health change rewrites the value, under the same lease, leaving the index alone.
    rt.run(reg.set_health(&web.id, &Health::critical("HTTP GET /: 503")))
        .unwrap();
    let after = must_get(&etcd, &key("web", "node1:web:80"));
    assert!(after.mod_revision > first.mod_revision);
    assert_eq!(after.lease, first.lease);
    assert_eq!(after.json()["health"]["status"], "critical");
    assert_eq!(after.json()["health"]["output"], "HTTP GET /: 503");
    assert_eq!(
        must_get(&etcd, &index(NODE, "node1:web:80")).mod_revision,
        first.mod_revision
    );

    // A changed field rewrites it.
    let mut moved = web.clone();
    moved.port = 40000;
    rt.run(reg.register(&moved)).unwrap();
    let moved_kv = must_get(&etcd, &key("web", "node1:web:80"));
    assert_eq!(moved_kv.json()["port"], 40000);
    assert!(moved_kv.mod_revision > after.mod_revision);
}

#[test]
fn a_renamed_service_moves_its_key_in_the_same_transaction() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let reg = registry(&etcd, NODE);
    let old = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&old)).unwrap();
    let mut new = old.clone();
    new.name = "frontend".into();
    rt.run(reg.register(&new)).unwrap();
    assert!(etcd.get(&key("web", "node1:web:80")).is_none());
    let moved = must_get(&etcd, &key("frontend", "node1:web:80"));
    let idx = must_get(&etcd, &index(NODE, "node1:web:80"));
    assert_eq!(idx.value, key("frontend", "node1:web:80"));
    assert_eq!(idx.mod_revision, moved.mod_revision);
}

#[test]
fn deregister_removes_both_keys_in_one_transaction_also_from_a_fresh_process() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let reg = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    rt.run(reg.deregister(&web.id)).unwrap();
    assert!(
        etcd.get_prefix(PREFIX).is_empty(),
        "{}",
        etcd.describe(PREFIX)
    );

    // A fresh process (no memory of what it wrote) finds the key through the index.
    rt.run(reg.register(&web)).unwrap();
    let fresh = registry(&etcd, NODE);
    rt.run(fresh.deregister(&web.id)).unwrap();
    assert!(
        etcd.get_prefix(PREFIX).is_empty(),
        "{}",
        etcd.describe(PREFIX)
    );
}

#[test]
fn another_nodes_key_is_left_byte_for_byte_and_gets_no_index_entry() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let one = registry(&etcd, "node1");
    let two = registry(&etcd, "node2");
    let theirs = instance("node1", "shared-id", "web", Health::passing("node1's"));
    rt.run(one.register(&theirs)).unwrap();
    let before = must_get(&etcd, &key("web", "shared-id"));

    let mine = instance("node2", "shared-id", "web", Health::passing("node2's"));
    let err = rt.run(two.register(&mine)).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Rejected { message, .. } if message.contains("not this node's")),
        "{err:?}"
    );
    rt.run(two.deregister("shared-id")).unwrap();
    assert_eq!(must_get(&etcd, &key("web", "shared-id")), before);
    assert!(etcd.get(&index("node2", "shared-id")).is_none());
}

#[test]
fn list_reads_this_nodes_instances_marks_other_leases_stale_and_drops_dangling_index_entries() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let first = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    let api = instance(NODE, "node1:api:81", "api", Health::critical("down"));
    rt.run(first.register(&web)).unwrap();
    rt.run(first.register(&api)).unwrap();
    rt.run(registry(&etcd, "node2").register(&instance(
        "node2",
        "node2:web:80",
        "web",
        Health::passing("ok"),
    )))
    .unwrap();
    // An index entry whose instance is gone (deleted by hand).
    etcd.put(&index(NODE, "node1:gone:1"), &key("gone", "node1:gone:1"));

    let listing = rt.run(first.list()).unwrap();
    let mut ids: Vec<&str> = listing.owned.iter().map(|i| i.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["node1:api:81", "node1:web:80"]);
    let read_api = listing.owned.iter().find(|i| i.id == api.id).unwrap();
    assert_eq!(read_api, &api, "read back exactly, health included");
    assert!(listing.stale.is_empty(), "written under the current lease");
    assert!(listing.foreign_ids.is_empty());
    assert!(
        etcd.get(&index(NODE, "node1:gone:1")).is_none(),
        "dangling index entry removed"
    );

    // The next agent process (same node, but another TTL, so it cannot take the old lease
    // over) sees the same instances, held by the old lease.
    let second = registry_with_ttl(&etcd, NODE, Duration::from_secs(5));
    let listing = rt.run(second.list()).unwrap();
    assert_eq!(listing.owned.len(), 2);
    assert_eq!(listing.stale.len(), 2, "{listing:?}");
    // Registering the same instance again moves it to the new process's lease.
    let old_lease = must_get(&etcd, &key("web", &web.id)).lease;
    rt.run(second.register(&web)).unwrap();
    let moved = must_get(&etcd, &key("web", &web.id));
    assert_ne!(moved.lease, old_lease);
    assert_eq!(Some(moved.lease), second.lease());
    let listing = rt.run(second.list()).unwrap();
    assert_eq!(
        listing.stale.iter().collect::<Vec<_>>(),
        [&api.id],
        "{listing:?}"
    );
}

/// The next agent process of a node, with the same TTL, takes over the lease its predecessor
/// wrote on: nothing is stale, nothing is written again, the lease is renewed at once (the
/// predecessor stopped renewing it) and then kept alive by the new process's keeper. A lease
/// that is gone is not taken over.
#[test]
fn a_restarted_process_takes_over_its_predecessors_live_lease() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let first = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(first.register(&web)).unwrap();
    let lease = first.lease().unwrap();
    let before = must_get(&etcd, &key("web", &web.id));
    drop(first);
    // The predecessor stopped renewing: let the lease run down a little.
    std::thread::sleep(Duration::from_millis(1500));
    let (left, granted) = etcd.lease_ttl(lease).expect("still alive");
    assert!(left < granted, "{left} of {granted} s left");

    let second = registry(&etcd, NODE);
    let listing = rt.run(second.list()).unwrap();
    assert!(listing.stale.is_empty(), "{listing:?}");
    assert_eq!(second.lease(), Some(lease), "taken over");
    let (left, granted) = etcd.lease_ttl(lease).expect("alive");
    assert!(
        left >= granted - 1,
        "renewed at once: {left} of {granted} s left"
    );
    // The listing's instance is written by nobody: same value, same revision.
    rt.run(second.register(&web)).unwrap();
    assert_eq!(must_get(&etcd, &key("web", &web.id)), before);

    let (_lost, cancel, keeper) = spawn_keeper(&rt, &second);
    // Past two TTLs: the keeper renews the taken-over lease.
    std::thread::sleep(Duration::from_secs(7));
    assert!(etcd.lease_ttl(lease).is_some(), "{}", etcd.describe(PREFIX));
    assert_eq!(must_get(&etcd, &key("web", &web.id)), before);
    cancel.cancel();
    rt.run(keeper).unwrap();

    // A lease that is gone cannot be taken over: its keys went with it.
    etcd.lease_revoke(lease);
    let third = registry(&etcd, NODE);
    let listing = rt.run(third.list()).unwrap();
    assert!(listing.owned.is_empty(), "{listing:?}");
    assert_eq!(third.lease(), None);
}

#[test]
fn a_lost_lease_is_replaced_on_the_next_write_and_reported_by_the_keeper() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let reg = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    let lease = reg.lease().unwrap();

    let (lost, cancel, keeper) = spawn_keeper(&rt, &reg);
    // Renewed every ttl/3: the keys outlive two TTLs.
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        etcd.get(&key("web", &web.id)).is_some(),
        "{}",
        etcd.describe(PREFIX)
    );
    let (remaining, _) = etcd.lease_ttl(lease).expect("lease alive");
    assert!(remaining >= 1, "remaining {remaining}");

    etcd.lease_revoke(lease);
    assert!(
        etcd.get_prefix(PREFIX).is_empty(),
        "revoking deletes the keys"
    );
    let t = Instant::now();
    rt.run(async {
        tokio::time::timeout(Duration::from_secs(3), lost.notified())
            .await
            .expect("the keeper reports the lost lease within ttl/3 plus slack")
    });
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(reg.lease(), None);
    // Unchanged health costs nothing; a health change finds the key gone and tells the
    // caller to register again; registering grants a new lease.
    rt.run(reg.set_health(&web.id, &Health::passing("ok")))
        .unwrap();
    let err = rt
        .run(reg.set_health(&web.id, &Health::critical("down")))
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err:?}");
    rt.run(reg.register(&web)).unwrap();
    let fresh = must_get(&etcd, &key("web", &web.id));
    assert_ne!(fresh.lease, lease);
    assert_eq!(must_get(&etcd, &index(NODE, &web.id)).lease, fresh.lease);

    cancel.cancel();
    rt.run(keeper).unwrap();
}

#[test]
fn an_etcd_that_lost_its_data_is_reported_as_a_lost_lease() {
    let mut etcd = EtcdServer::start();
    let rt = Rt::new();
    let reg = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    let (lost, cancel, keeper) = spawn_keeper(&rt, &reg);
    // Let the keeper open its stream, then lose everything.
    std::thread::sleep(Duration::from_secs(2));
    etcd.restart_wiped();
    rt.run(async {
        tokio::time::timeout(Duration::from_secs(10), lost.notified())
            .await
            .expect("the keeper reports the lease etcd no longer has")
    });
    assert_eq!(reg.lease(), None);
    rt.run(reg.register(&web)).unwrap();
    assert_eq!(
        Some(must_get(&etcd, &key("web", &web.id)).lease),
        reg.lease()
    );
    cancel.cancel();
    rt.run(keeper).unwrap();
}

#[test]
fn a_write_that_meets_a_revoked_lease_retries_with_a_new_one_and_reports_the_loss() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let reg = registry(&etcd, NODE);
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    let lease = reg.lease().unwrap();
    let (lost, cancel, keeper) = spawn_keeper(&rt, &reg);
    // Revoked behind the agent's back, and a write comes before the keeper's next renewal.
    etcd.lease_revoke(lease);
    let api = instance(NODE, "node1:api:81", "api", Health::passing("ok"));
    rt.run(reg.register(&api)).unwrap();
    let kv = must_get(&etcd, &key("api", &api.id));
    assert_ne!(kv.lease, lease);
    assert_eq!(Some(kv.lease), reg.lease());
    // web went with the old lease: the caller must hear of it even though the keeper now
    // renews a healthy new lease.
    assert!(etcd.get(&key("web", &web.id)).is_none());
    rt.run(async {
        tokio::time::timeout(Duration::from_secs(3), lost.notified())
            .await
            .expect("the loss found by a write is reported")
    });
    cancel.cancel();
    rt.run(keeper).unwrap();
}

#[test]
fn an_etcd_that_is_down_is_unavailable_within_the_request_timeout() {
    let mut etcd = EtcdServer::start();
    let rt = Rt::new();
    let timeout = Duration::from_millis(800);
    let reg = EtcdRegistry::new(EtcdConfig {
        request_timeout: timeout,
        ..config(&etcd.endpoint(), NODE)
    })
    .unwrap();
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    etcd.stop();

    let limit = timeout * 2 + Duration::from_millis(500);
    let check = |what: &str, err: RegistryError, took: Duration| {
        assert!(
            matches!(err, RegistryError::Unavailable { .. }) && err.is_transient(),
            "{what}: {err:?}"
        );
        berth_e2e::error_chain(&err);
        assert!(took < limit, "{what} took {took:?}");
    };
    let mut changed = web.clone();
    changed.port = 1;
    let t = Instant::now();
    check(
        "register",
        rt.run(reg.register(&changed)).unwrap_err(),
        t.elapsed(),
    );
    let t = Instant::now();
    check(
        "heartbeat",
        rt.run(reg.set_health(&web.id, &Health::critical("x")))
            .unwrap_err(),
        t.elapsed(),
    );
    let t = Instant::now();
    check(
        "deregister",
        rt.run(reg.deregister(&web.id)).unwrap_err(),
        t.elapsed(),
    );
    let t = Instant::now();
    check("list", rt.run(reg.list()).unwrap_err(), t.elapsed());

    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = EtcdRegistry::new(EtcdConfig {
        request_timeout: timeout,
        ..config(&format!("http://{}", silent.local_addr().unwrap()), NODE)
    })
    .unwrap();
    let t = Instant::now();
    check(
        "list on a silent server",
        rt.run(hung.list()).unwrap_err(),
        t.elapsed(),
    );

    // Back up: the same client recovers without being rebuilt.
    etcd.restart();
    let ok = (0..50).any(|_| {
        if rt.run(reg.register(&changed)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    assert!(ok, "register never succeeded after etcd came back");
    assert_eq!(must_get(&etcd, &key("web", &web.id)).json()["port"], 1);
}

#[test]
fn lookup_reads_every_node_and_filters_passing() {
    let etcd = EtcdServer::start();
    let rt = Rt::new();
    let one = registry(&etcd, "node1");
    let two = registry(&etcd, "node2");
    rt.run(one.register(&instance(
        "node1",
        "node1:web:80",
        "web",
        Health::passing("ok"),
    )))
    .unwrap();
    rt.run(two.register(&instance(
        "node2",
        "node2:web:80",
        "web",
        Health::passing("ok"),
    )))
    .unwrap();
    rt.run(two.set_health("node2:web:80", &Health::critical("503")))
        .unwrap();
    rt.run(one.register(&instance(
        "node1",
        "node1:api:80",
        "api",
        Health::passing("ok"),
    )))
    .unwrap();
    // Another tool's key under the service prefix is skipped, not fatal.
    etcd.put(&key("web", "not-json"), "hello");

    let mut all = rt.run(one.lookup("web", false)).unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        all.iter()
            .map(|i| (i.id.as_str(), i.health.status))
            .collect::<Vec<_>>(),
        [
            ("node1:web:80", Status::Passing),
            ("node2:web:80", Status::Critical)
        ]
    );
    assert_eq!(all[1].origin.node, "node2");
    let passing = rt.run(one.lookup("web", true)).unwrap();
    assert_eq!(passing.len(), 1);
    assert_eq!(passing[0].id, "node1:web:80");
    assert!(rt.run(one.lookup("nothing", false)).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Authentication and TLS, on an etcd started with its own flags.

struct CustomEtcd {
    child: Child,
    client: String,
    dir: PathBuf,
    args: Vec<String>,
}

impl CustomEtcd {
    fn start(dir: PathBuf, scheme: &str, extra: &[String]) -> CustomEtcd {
        let (cport, pport) = (free_port(), free_port());
        let client = format!("{scheme}://127.0.0.1:{cport}");
        let peer = format!("http://127.0.0.1:{pport}");
        let mut args: Vec<String> = vec![
            "--name".into(),
            "default".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client.clone(),
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("default={peer}"),
        ];
        args.extend(extra.iter().cloned());
        let child = Self::spawn(&dir, &args);
        CustomEtcd {
            child,
            client,
            dir,
            args,
        }
    }

    fn spawn(dir: &Path, args: &[String]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("etcd.log"))
            .unwrap();
        Command::new("etcd")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    /// SIGKILL and start again on the same data: users survive, issued tokens do not.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.dir, &self.args);
    }

    fn ctl(&self, extra: &[&str], args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.client))
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(extra)
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn wait_ready(&self, extra: &[&str]) {
        let start = Instant::now();
        loop {
            match self.ctl(extra, &["endpoint", "health"]) {
                Ok(_) => return,
                Err(e) if start.elapsed() > Duration::from_secs(30) => panic!(
                    "etcd at {} not ready: {e}\n{}",
                    self.client,
                    std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for CustomEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn user_and_password_are_used_and_permissions_are_enforced() {
    let dir = berth_e2e::temp_dir("etcd-auth");
    let mut etcd = CustomEtcd::start(dir.clone(), "http", &[]);
    etcd.wait_ready(&[]);
    let setup: &[&[&str]] = &[
        &["user", "add", "root:rootpw"],
        &["user", "add", "berth:berthpw"],
        &["role", "add", "berth"],
        &[
            "role",
            "grant-permission",
            "berth",
            "--prefix=true",
            "readwrite",
            "/berth/",
        ],
        &["user", "grant-role", "berth", "berth"],
        &["auth", "enable"],
    ];
    for args in setup {
        etcd.ctl(&[], args).unwrap();
    }
    let rt = Rt::new();
    let base = EtcdConfig {
        user: Some("berth".into()),
        password: Some("berthpw".into()),
        ..config(&etcd.client, NODE)
    };
    let reg = EtcdRegistry::new(base.clone()).unwrap();
    let web = instance(NODE, "node1:web:80", "web", Health::passing("ok"));
    rt.run(reg.register(&web)).unwrap();
    assert_eq!(rt.run(reg.list()).unwrap().owned.len(), 1);
    let root = ["--user=root:rootpw"];
    let got = etcd
        .ctl(&root, &["get", &key("web", &web.id), "--print-value-only"])
        .unwrap();
    assert!(got.contains("\"node1:web:80\""), "{got}");

    // etcd restarted: the token the client holds is void. The call that meets that fails
    // as transient and refreshes the token; the client then works again, unrebuilt.
    etcd.restart();
    etcd.wait_ready(&root);
    let mut api = instance(NODE, "node1:api:81", "api", Health::passing("ok"));
    let recovered = (0..20).any(|i| {
        api.port = 30000 + i;
        match rt.run(reg.register(&api)) {
            Ok(()) => true,
            Err(e) => {
                assert!(e.is_transient(), "after an etcd restart: {e:?}");
                std::thread::sleep(Duration::from_millis(200));
                false
            }
        }
    });
    assert!(
        recovered,
        "the client never worked again after etcd restarted"
    );

    // Outside its granted prefix the user is denied: a rejection, not a retry.
    let outside = EtcdRegistry::new(EtcdConfig {
        prefix: "/elsewhere".into(),
        ..base.clone()
    })
    .unwrap();
    let err = rt.run(outside.register(&web)).unwrap_err();
    assert!(matches!(err, RegistryError::Rejected { .. }), "{err:?}");

    // A wrong password is refused.
    let wrong = EtcdRegistry::new(EtcdConfig {
        password: Some("nope".into()),
        ..base.clone()
    })
    .unwrap();
    let err = rt.run(wrong.list()).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Rejected { message, .. } if message.contains("authentication failed")),
        "{err:?}"
    );
    // Without credentials nothing is readable.
    let anonymous = EtcdRegistry::new(EtcdConfig {
        user: None,
        password: None,
        ..base
    })
    .unwrap();
    assert!(rt.run(anonymous.list()).is_err());
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate() {
    let dir = berth_e2e::temp_dir("etcd-tls");
    berth_e2e::consul::make_certs(&dir);
    let file = |name: &str| dir.join(name).display().to_string();
    let etcd = CustomEtcd::start(
        dir.clone(),
        "https",
        &[
            format!("--cert-file={}", file("dc1-server-consul-0.pem")),
            format!("--key-file={}", file("dc1-server-consul-0-key.pem")),
            format!("--trusted-ca-file={}", file("consul-agent-ca.pem")),
            "--client-cert-auth".into(),
        ],
    );
    let ctl_tls = [
        format!("--cacert={}", file("consul-agent-ca.pem")),
        format!("--cert={}", file("dc1-client-consul-0.pem")),
        format!("--key={}", file("dc1-client-consul-0-key.pem")),
    ];
    let ctl_tls: Vec<&str> = ctl_tls.iter().map(String::as_str).collect();
    etcd.wait_ready(&ctl_tls);

    let rt = Rt::new();
    let tls = EtcdConfig {
        ca_cert: Some(dir.join("consul-agent-ca.pem")),
        client_cert: Some(dir.join("dc1-client-consul-0.pem")),
        client_key: Some(dir.join("dc1-client-consul-0-key.pem")),
        ..config(&etcd.client, NODE)
    };
    let reg = EtcdRegistry::new(tls.clone()).unwrap();
    let web = instance(NODE, "node1:web:80", "web", Health::passing("over tls"));
    rt.run(reg.register(&web)).unwrap();
    let got = etcd
        .ctl(
            &ctl_tls,
            &["get", &key("web", &web.id), "--print-value-only"],
        )
        .unwrap();
    assert!(got.contains("over tls"), "{got}");

    // The server demands a client certificate.
    let no_identity = EtcdRegistry::new(EtcdConfig {
        client_cert: None,
        client_key: None,
        ..tls.clone()
    })
    .unwrap();
    let err = rt.run(no_identity.list()).unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err:?}");

    // The system roots do not know the private CA.
    let no_ca = EtcdRegistry::new(EtcdConfig {
        ca_cert: None,
        ..tls.clone()
    })
    .unwrap();
    let err = rt.run(no_ca.list()).unwrap_err();
    assert!(matches!(err, RegistryError::Unavailable { .. }), "{err:?}");

    // Plain http against certificates is a configuration error, found before connecting.
    let err = EtcdRegistry::new(EtcdConfig {
        endpoints: vec![etcd.client.replace("https", "http")],
        ..tls
    })
    .unwrap_err();
    assert!(matches!(err, RegistryError::Config(_)), "{err:?}");
}
