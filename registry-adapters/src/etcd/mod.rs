//! etcd v3 backend: each instance is a JSON value under `<prefix>/services/<name>/<id>`,
//! indexed under `<prefix>/nodes/<node>/<id>`, both attached to **one lease per agent**.
//!
//! - **Liveness** is the lease: [`EtcdRegistry::keep_lease`] renews it every ttl/3. When the
//!   agent dies its keys vanish together, one TTL later.
//! - **Lease loss** (it expired during a partition, was revoked, or etcd lost its state) is
//!   seen by the renewal, or by a write that etcd refuses for the dead lease (which then
//!   retries once under a new one). Either way the lease is forgotten and `keep_lease`
//!   signals its caller, since every key on the lease went with it; the agent then resyncs,
//!   and the writes grant and use a new lease.
//! - **Health** lives in the instance value. A heartbeat costs nothing (the lease carries
//!   liveness); a health report rewrites the value only when the health changed.
//! - **Writes only on change.** This backend remembers what it wrote (and what it last listed)
//!   and skips a register that would only rewrite the same value under the same lease.
//! - **Atomicity.** An instance key and its index entry are put and deleted in one
//!   transaction, so a watcher never sees one without the other. A put refuses to overwrite an
//!   instance key that this node's index does not point at: that is another node's instance.
//!
//! `Client::connect` is lazy here: the first call connects, and a failed connect is retried by
//! the next call, so the agent starts (and keeps running) while etcd is down.
//!
//! What etcd 3.4.23 answers, and how it is read here (pinned by `tests/tests/etcd_backend.rs`):
//!
//! | situation                                   | answer                               | result        |
//! |---------------------------------------------|--------------------------------------|---------------|
//! | put with a revoked or expired lease         | `NotFound`: requested lease not found | lease dropped and reported lost, one retry with a new lease |
//! | keep-alive of an unknown or expired lease   | a response with TTL 0 (etcd-client: `LeaseKeepAliveError("lease not found")` when the stream is opened) | lease lost, caller resyncs |
//! | wrong password, permission denied           | `InvalidArgument` / `PermissionDenied` | `Rejected` |
//! | auth token expired (e.g. after an etcd restart) | `Unauthenticated`                | token refreshed, `Unavailable` (retried) |
//! | connection refused, timeout, no leader      |                                      | `Unavailable` |

mod call;
mod config;
mod layout;
mod lease;
mod written;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use tokio::sync::{Notify, OnceCell};
use tracing::{debug, warn};

pub use config::EtcdConfig;
use layout::segment;
pub use layout::{Layout, Record};
use written::{Entry, ListingGuard, Written};

use crate::error::RegistryError;
use crate::instance::{Health, Instance, Listing, Status};

/// The lease most keys are on (leaseless keys aside).
fn most_common(leases: impl Iterator<Item = i64>) -> Option<i64> {
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for lease in leases.filter(|l| *l != 0) {
        *counts.entry(lease).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(lease, n)| (*n, *lease))
        .map(|(lease, _)| lease)
}

/// Get operations per read transaction (etcd's default `--max-txn-ops` is 128).
const READ_BATCH: usize = 100;

/// Writes berth's instances to etcd. Clones share one connection, one lease and one record of
/// what was written.
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    options: ConnectOptions,
    layout: Layout,
    node: String,
    ttl: Duration,
    request_timeout: Duration,
    client: OnceCell<Client>,
    /// The lease every write uses; `None` until the first write and after it was lost.
    lease: Mutex<Option<i64>>,
    /// Single-flight for granting a lease; never held by anything but a grant.
    grant: tokio::sync::Mutex<()>,
    /// Woken whenever the current lease is found gone, by a write or by the renewal; the
    /// renewal task passes it on to the caller of `keep_lease`.
    lease_lost: Notify,
    /// Why the lease's renewal is failing, while it is (set and cleared by `keep_lease`);
    /// heartbeats answer it, since the lease is what keeps every instance alive.
    renewal_failing: Mutex<Option<String>>,
    written: Mutex<Written>,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.endpoints)
            .field("layout", &self.inner.layout)
            .field("node", &self.inner.node)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// Checks `config` and reads its certificate files. Connects to nothing yet.
    pub fn new(config: EtcdConfig) -> Result<EtcdRegistry, RegistryError> {
        config.validate()?;
        let options = config.connect_options()?;
        Ok(EtcdRegistry {
            inner: Arc::new(Inner {
                endpoints: config.urls()?,
                options,
                layout: Layout::new(&config.prefix)?,
                node: config.node,
                ttl: config.ttl,
                request_timeout: config.request_timeout,
                client: OnceCell::new(),
                lease: Mutex::new(None),
                grant: tokio::sync::Mutex::new(()),
                lease_lost: Notify::new(),
                renewal_failing: Mutex::new(None),
                written: Mutex::new(Written::default()),
            }),
        })
    }

    /// `etcd at <endpoints> under <prefix>`, for logs.
    pub fn describe(&self) -> String {
        format!(
            "etcd at {} under {}",
            self.inner.endpoints.join(","),
            self.inner.layout.services().trim_end_matches("services/")
        )
    }

    /// This node's instances, read through its index. A client that holds no lease yet (a
    /// freshly started agent) adopts the lease most of them are on when it is alive and has
    /// this client's TTL (a previous agent process's: see [`EtcdRegistry::adopt`]). Instances
    /// whose keys are held by a lease other than the current one are listed in `stale`: they
    /// vanish with that lease unless written again. Index entries that point at nothing are
    /// deleted; ones that point at another node's instance make that id foreign.
    pub async fn list(&self) -> Result<Listing, RegistryError> {
        let what = "listing of this node's instances";
        let node = self.inner.node.as_str();
        let mut guard = ListingGuard::begin(&self.inner.written);
        let started = guard.started;
        let index_prefix = self.inner.layout.node(node);
        let prefix = index_prefix.clone();
        let index = self
            .call(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await
            .map_err(|f| f.into_registry(what))?;
        // (id, instance key, index key, index mod revision)
        let mut indexed = Vec::new();
        for kv in index.kvs() {
            let (Ok(index_key), Ok(target)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            let id = index_key.trim_start_matches(&index_prefix).to_owned();
            indexed.push((
                id,
                target.to_owned(),
                index_key.to_owned(),
                kv.mod_revision(),
            ));
        }

        let mut found: HashMap<String, (Vec<u8>, i64)> = HashMap::new();
        for batch in indexed.chunks(READ_BATCH) {
            let gets: Vec<TxnOp> = batch
                .iter()
                .map(|(_, key, _, _)| TxnOp::get(key.as_str(), None))
                .collect();
            let resp = self
                .txn(Txn::new().and_then(gets))
                .await
                .map_err(|f| f.into_registry(what))?;
            for op in resp.op_responses() {
                if let TxnOpResponse::Get(get) = op {
                    for kv in get.kvs() {
                        if let Ok(key) = kv.key_str() {
                            found.insert(key.to_owned(), (kv.value().to_vec(), kv.lease()));
                        }
                    }
                }
            }
        }

        let current = match self.lease() {
            Some(lease) => Some(lease),
            None => match most_common(found.values().map(|(_, lease)| *lease)) {
                Some(lease) => self.adopt(lease).await,
                None => None,
            },
        };
        let mut listing = Listing::default();
        let mut entries = HashMap::new();
        let mut dangling = Vec::new();
        for (id, key, index_key, index_rev) in indexed {
            let Some((value, lease)) = found.remove(&key) else {
                dangling.push((index_key, index_rev));
                continue;
            };
            match serde_json::from_slice::<Record>(&value) {
                Ok(record) if record.node == node && record.id == id => {
                    if current != Some(lease) {
                        listing.stale.insert(id.clone());
                    }
                    listing.owned.push(record.clone().into_instance());
                    entries.insert(
                        id,
                        Entry {
                            key,
                            record,
                            lease,
                            seq: started,
                        },
                    );
                }
                Ok(record) => {
                    warn!(service.id = %id, key = %key, owner = %record.node, "this node's index points at an instance another node wrote; leaving it alone");
                    listing.foreign_ids.insert(id);
                }
                Err(error) => {
                    warn!(service.id = %id, key = %key, %error, "unreadable instance value in etcd; leaving it alone");
                    listing.foreign_ids.insert(id);
                }
            }
        }
        for (index_key, rev) in dangling {
            // Guarded by the revision read, so a concurrent registration is never undone.
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    index_key.as_str(),
                    CompareOp::Equal,
                    rev,
                )])
                .and_then([TxnOp::delete(index_key.as_str(), None)]);
            match self.txn(txn).await {
                Ok(_) => debug!(key = %index_key, "removed an index entry whose instance is gone"),
                Err(f) => {
                    debug!(key = %index_key, error = %f.into_registry("cleanup"), "cannot remove a dangling index entry")
                }
            }
        }

        guard.found = Some(entries);
        drop(guard);
        Ok(listing)
    }

    /// Creates or replaces `instance` (health included) under the agent's lease, with its
    /// index entry, in one transaction. Writes nothing when the stored value is the same and
    /// under the current lease.
    pub async fn register(&self, instance: &Instance) -> Result<(), RegistryError> {
        let what = format!("register of {}", instance.id);
        segment("service name", &instance.name)?;
        segment("instance id", &instance.id)?;
        if instance.origin.node != self.inner.node {
            return Err(RegistryError::Rejected {
                what,
                message: format!(
                    "instance belongs to node {:?}, this agent is {:?}",
                    instance.origin.node, self.inner.node
                ),
            });
        }
        let key = self.inner.layout.instance(&instance.name, &instance.id);
        let index = self.inner.layout.index(&self.inner.node, &instance.id);
        let mut retried = false;
        loop {
            let lease = self.current_lease().await?;
            let previous = self.written().get(&instance.id);
            if let Some(p) = &previous
                && p.lease == lease
                && p.key == key
                && p.record.matches(instance, &instance.health)
            {
                debug!(service.id = %instance.id, "unchanged in etcd; nothing written");
                return Ok(());
            }
            let record = Record::new(instance, &instance.health, SystemTime::now());
            let with_lease = Some(PutOptions::new().with_lease(lease));
            let mut writes = vec![
                TxnOp::put(key.as_str(), record.to_json(), with_lease.clone()),
                TxnOp::put(index.as_str(), key.as_str(), with_lease),
            ];
            // The service name changed: the old instance key goes in the same transaction.
            if let Some(p) = previous.filter(|p| p.key != key) {
                writes.push(TxnOp::delete(p.key, None));
            }
            // A new key, or one this node's index points at; anything else is another node's.
            let txn = Txn::new()
                .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                .and_then(writes.clone())
                .or_else([TxnOp::txn(
                    Txn::new()
                        .when([Compare::value(
                            index.as_str(),
                            CompareOp::Equal,
                            key.as_str(),
                        )])
                        .and_then(writes),
                )]);
            match self.txn(txn).await {
                Ok(resp) if resp.succeeded() || nested_succeeded(&resp) => {
                    debug!(service.id = %instance.id, key = %key, lease = %format!("{lease:x}"), "written to etcd");
                    self.written().remember(&instance.id, key, record, lease);
                    return Ok(());
                }
                Ok(_) => {
                    return Err(RegistryError::Rejected {
                        what,
                        message: format!("{key} exists and is not this node's; not overwriting it"),
                    });
                }
                Err(f) if f.lease_not_found() && !retried => {
                    self.drop_lease(lease);
                    retried = true;
                }
                Err(f) => return Err(f.into_registry(&what)),
            }
        }
    }

    /// Removes the instance `id` and its index entry in one transaction. Removing an id this
    /// node does not hold succeeds and writes nothing.
    pub async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let what = format!("deregister of {id}");
        segment("instance id", id)?;
        let index = self.inner.layout.index(&self.inner.node, id);
        // Bound first: the guard must not live through the match, which locks it again.
        let known = self.written().get(id);
        let key = match known {
            Some(e) => e.key,
            None => {
                let lookup = index.clone();
                let resp = self
                    .call(|mut c| async move { c.get(lookup, None).await })
                    .await
                    .map_err(|f| f.into_registry(&what))?;
                match resp.kvs().first().and_then(|kv| kv.value_str().ok()) {
                    Some(k) => k.to_owned(),
                    None => {
                        self.written().forget(id);
                        return Ok(());
                    }
                }
            }
        };
        let txn = Txn::new()
            .when([Compare::value(
                index.as_str(),
                CompareOp::Equal,
                key.as_str(),
            )])
            .and_then([
                TxnOp::delete(key.as_str(), None),
                TxnOp::delete(index.as_str(), None),
            ]);
        let resp = self.txn(txn).await.map_err(|f| f.into_registry(&what))?;
        if !resp.succeeded() {
            debug!(service.id = %id, "no index entry for it in etcd; nothing to delete");
        }
        self.written().forget(id);
        Ok(())
    }

    /// Liveness is the lease's job ([`keep_lease`](Self::keep_lease)), so a heartbeat writes
    /// nothing: it answers [`RegistryError::NotFound`] when this backend never wrote or listed
    /// `id`, or dropped it since (its lease was lost), so the caller registers it again.
    pub async fn heartbeat(&self, id: &str) -> Result<(), RegistryError> {
        if self.written().get(id).is_none() {
            return Err(RegistryError::NotFound { id: id.to_owned() });
        }
        self.heartbeat_node()
    }

    /// Whether the agent's lease is being kept: [`RegistryError::Unavailable`] while its
    /// renewal fails. Costs no I/O.
    pub fn heartbeat_node(&self) -> Result<(), RegistryError> {
        match self.renewal_failure() {
            None => Ok(()),
            Some(why) => Err(RegistryError::Unavailable {
                message: format!("renewal of the agent's lease is failing: {why}"),
                source: None,
            }),
        }
    }

    fn renewal_failure(&self) -> Option<String> {
        self.inner
            .renewal_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_renewal_failure(&self, why: Option<String>) {
        *self
            .inner
            .renewal_failing
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Reports `health`. Unchanged health writes nothing; a change rewrites the instance
    /// value, only if the key still carries the lease it was written with. Answers
    /// [`RegistryError::NotFound`] when it does not (the lease was lost, or the key deleted),
    /// or when this backend never wrote or listed `id`: the caller registers again.
    pub async fn set_health(&self, id: &str, health: &Health) -> Result<(), RegistryError> {
        let lost = || RegistryError::NotFound { id: id.to_owned() };
        let Some(entry) = self.written().get(id) else {
            return Err(lost());
        };
        // Liveness is the lease's: a lost lease is reported by `keep_lease`, and a key held
        // by a previous process's lease is rewritten by the reconciler (`Listing::stale`).
        if entry.record.health == *health {
            return Ok(());
        }
        let mut record = entry.record.clone();
        record.health = health.clone();
        record.updated = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let txn = Txn::new()
            .when([Compare::lease(
                entry.key.as_str(),
                CompareOp::Equal,
                entry.lease,
            )])
            .and_then([TxnOp::put(
                entry.key.as_str(),
                record.to_json(),
                Some(PutOptions::new().with_lease(entry.lease)),
            )]);
        match self.txn(txn).await {
            Ok(resp) if resp.succeeded() => {
                self.written().remember(id, entry.key, record, entry.lease);
                Ok(())
            }
            Ok(_) => {
                self.written().forget(id);
                Err(lost())
            }
            Err(f) if f.lease_not_found() => {
                self.drop_lease(entry.lease);
                self.written().forget(id);
                Err(lost())
            }
            Err(f) => Err(f.into_registry(&format!("health update of {id}"))),
        }
    }

    /// Every instance of `service` under the prefix, from every node, with the health in its
    /// value; with `passing_only`, only passing ones.
    pub async fn lookup(
        &self,
        service: &str,
        passing_only: bool,
    ) -> Result<Vec<Instance>, RegistryError> {
        let what = format!("lookup of {service}");
        segment("service name", service)?;
        let prefix = self.inner.layout.service(service);
        let resp = self
            .call(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await
            .map_err(|f| f.into_registry(&what))?;
        let mut instances = Vec::new();
        for kv in resp.kvs() {
            match serde_json::from_slice::<Record>(kv.value()) {
                Ok(r) if !passing_only || r.health.status == Status::Passing => {
                    instances.push(r.into_instance());
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(key = %String::from_utf8_lossy(kv.key()), %error, "unreadable instance value in etcd; skipped");
                }
            }
        }
        Ok(instances)
    }
}

fn nested_succeeded(resp: &TxnResponse) -> bool {
    resp.op_responses()
        .iter()
        .any(|op| matches!(op, TxnOpResponse::Txn(t) if t.succeeded()))
}

impl EtcdRegistry {
    fn written(&self) -> MutexGuard<'_, Written> {
        lock(&self.inner.written)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No critical section here can panic half-way through an update.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
