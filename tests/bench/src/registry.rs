//! The registry side: a fresh Consul dev agent or etcd per scenario (the end-to-end harness
//! starts them on free ports), a [`Timeline`] of what a consumer of one service sees and
//! when, and the floor: one write and one delete made directly, timed to visibility.
//!
//! Visibility is read the way consumers read: Consul's `/v1/health/service/<name>` as a
//! blocking query (it answers as soon as the catalog changes), etcd as a watch of the
//! service's key prefix (what `docs/etcd.md` tells consumers to do). Each change is stamped
//! with the wall clock when the answer arrived, so it compares with Docker's event times.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow};
use berth_e2e::backend::{Backend, Kind};
use etcd_client::{Client as Etcd, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A registry started for one scenario; stopped when dropped.
pub struct Registry {
    backend: Backend,
    http: reqwest::Client,
    etcd: Option<Etcd>,
    /// etcd: the lease the floor writes use.
    lease: i64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Registry {
    pub async fn start(kind: Kind) -> Result<Registry> {
        let backend = tokio::task::spawn_blocking(move || Backend::start(kind))
            .await
            .context("start the registry")?;
        let etcd = match &backend {
            Backend::Etcd { etcd, .. } => Some(
                Etcd::connect([etcd.endpoint()], None)
                    .await
                    .context("connect to etcd")?,
            ),
            Backend::Consul(_) => None,
        };
        let mut registry = Registry {
            backend,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            etcd,
            lease: 0,
        };
        if let Some(etcd) = registry.etcd.as_mut() {
            registry.lease = etcd.lease_grant(60, None).await?.id();
        }
        Ok(registry)
    }

    fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn kind(&self) -> Kind {
        self.backend().kind()
    }

    /// The `berth run` flags that point the agent at this registry.
    pub fn agent_args(&self) -> Vec<String> {
        self.backend().registry_args()
    }

    /// Consul's HTTP address (`http://127.0.0.1:<port>`).
    pub fn consul_addr(&self) -> String {
        self.backend().consul().addr()
    }

    /// etcd's client URL.
    pub fn etcd_endpoint(&self) -> String {
        self.backend().etcd().endpoint()
    }

    /// Starts watching `service`; returns once the first answer (the current state) is in.
    pub async fn watch(&self, service: &str) -> Result<Timeline> {
        let rec = Recorder::default();
        let task = match self.backend() {
            Backend::Consul(c) => {
                let url = format!("{}/v1/health/service/{service}", c.addr());
                tokio::spawn(watch_consul(self.http.clone(), url, rec.clone()))
            }
            Backend::Etcd { prefix, .. } => {
                let client = self.etcd.clone().context("etcd client")?;
                let under = format!("{prefix}/services/{service}/");
                tokio::spawn(watch_etcd(client, under, rec.clone()))
            }
        };
        let timeline = Timeline {
            rec,
            _task: Arc::new(AbortOnDrop(task)),
        };
        timeline.primed().await?;
        Ok(timeline)
    }

    /// Writes instance `id` of `service` the way berth does (Consul: an agent service with
    /// berth's two TTL checks; etcd: the instance and index keys in one transaction on a
    /// lease). Returns when the registry answered.
    pub async fn write(&self, service: &str, id: &str, port: u16) -> Result<()> {
        match self.backend() {
            Backend::Consul(c) => {
                let body = json!({
                    "ID": id, "Name": service, "Address": "127.0.0.1", "Port": port,
                    "Tags": [], "EnableTagOverride": false,
                    "Meta": {"berth-managed": "true", "berth-node": "floor",
                             "berth-container-id": id, "berth-container-name": id,
                             "berth-image": "floor"},
                    "Checks": [
                        {"CheckID": format!("service:{id}"), "Name": "berth health",
                         "TTL": "87600h", "Status": "passing", "Notes": "floor"},
                        {"CheckID": format!("service:{id}:ttl"), "Name": "berth TTL heartbeat",
                         "TTL": "15s", "DeregisterCriticalServiceAfter": "1m",
                         "Status": "passing", "Notes": "floor"},
                    ],
                });
                let url = format!(
                    "{}/v1/agent/service/register?replace-existing-checks=true",
                    c.addr()
                );
                self.http
                    .put(url)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
            Backend::Etcd { prefix, .. } => {
                let value = json!({
                    "id": id, "name": service, "address": "127.0.0.1", "port": port,
                    "tags": [], "meta": {}, "node": "floor", "container_id": id,
                    "container_name": id, "image": "floor",
                    "health": {"status": "passing", "output": "floor"},
                    "updated": "2026-01-01T00:00:00Z",
                });
                let key = format!("{prefix}/services/{service}/{id}");
                let index = format!("{prefix}/nodes/floor/{id}");
                let lease = PutOptions::new().with_lease(self.lease);
                let txn = Txn::new().and_then([
                    TxnOp::put(key.as_str(), value.to_string(), Some(lease.clone())),
                    TxnOp::put(index.as_str(), key.as_str(), Some(lease)),
                ]);
                self.etcd.clone().context("etcd client")?.txn(txn).await?;
            }
        }
        Ok(())
    }

    /// [`Registry::write`], then, on Consul, the health check's output, as berth writes a new
    /// instance (Consul takes no output in a registration).
    pub async fn write_with_output(&self, service: &str, id: &str, port: u16) -> Result<()> {
        self.write(service, id, port).await?;
        if let Backend::Consul(c) = self.backend() {
            let url = format!("{}/v1/agent/check/update/service:{id}", c.addr());
            let body =
                json!({"Status": "passing", "Output": format!("berth: container {id} is running")});
            self.http
                .put(url)
                .json(&body)
                .send()
                .await?
                .error_for_status()?;
        }
        Ok(())
    }

    /// Removes what [`Registry::write`] wrote.
    pub async fn delete(&self, service: &str, id: &str) -> Result<()> {
        match self.backend() {
            Backend::Consul(c) => {
                let url = format!("{}/v1/agent/service/deregister/{id}", c.addr());
                self.http.put(url).send().await?.error_for_status()?;
            }
            Backend::Etcd { prefix, .. } => {
                let key = format!("{prefix}/services/{service}/{id}");
                let index = format!("{prefix}/nodes/floor/{id}");
                let txn = Txn::new().and_then([
                    TxnOp::delete(key.as_str(), None),
                    TxnOp::delete(index.as_str(), None),
                ]);
                self.etcd.clone().context("etcd client")?.txn(txn).await?;
            }
        }
        Ok(())
    }

    /// etcd's gRPC request counters by method (`grpc_server_started_total`, and the messages
    /// received on streams, `grpc_server_msg_received_total`, for keep-alives), and the keys
    /// it wrote and deleted (`mvcc: put`, `mvcc: delete`).
    pub async fn etcd_calls(&self) -> Result<BTreeMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.etcd_endpoint()))
            .send()
            .await?
            .text()
            .await?;
        let mut calls = BTreeMap::new();
        for line in text.lines() {
            let (series, count) = match line.rsplit_once(' ') {
                Some((s, c)) => (s, c.parse::<f64>().unwrap_or(0.0)),
                None => continue,
            };
            if series == "etcd_mvcc_put_total" || series == "etcd_mvcc_delete_total" {
                let op = series
                    .trim_start_matches("etcd_mvcc_")
                    .trim_end_matches("_total");
                calls.insert(format!("mvcc: {op}"), count);
                continue;
            }
            let family = if series.starts_with("grpc_server_started_total{") {
                "started"
            } else if series.starts_with("grpc_server_msg_received_total{")
                && series.contains("grpc_type=\"bidi_stream\"")
            {
                "stream messages"
            } else {
                continue;
            };
            if let Some(method) = label(series, "grpc_method") {
                *calls.entry(format!("{family}: {method}")).or_insert(0.0) += count;
            }
        }
        Ok(calls)
    }
}

/// The value of `name="…"` in a Prometheus series.
fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let start = series.find(&format!("{name}=\""))? + name.len() + 2;
    let len = series[start..].find('"')?;
    Some(&series[start..start + len])
}

/// One instance's state as a consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Registered, with its status (`passing`, `critical`, …).
    Present(String),
    Gone,
}

/// One change a consumer saw.
#[derive(Clone, Debug)]
pub struct Change {
    pub id: String,
    pub at: SystemTime,
    pub seen: Seen,
}

#[derive(Debug, Default)]
struct State {
    current: BTreeMap<String, String>,
    changes: Vec<Change>,
    /// When the latest change arrived.
    last: Option<SystemTime>,
    primed: bool,
    error: Option<String>,
}

/// What a watcher task writes to; the [`Timeline`]s that read it share it.
#[derive(Clone, Debug, Default)]
struct Recorder {
    state: Arc<Mutex<State>>,
    version: Arc<watch::Sender<u64>>,
}

/// Stops the watcher task when the last [`Timeline`] clone is dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every change of one service's instances, in arrival order. Cheap to clone; the watcher
/// stops when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Timeline {
    rec: Recorder,
    _task: Arc<AbortOnDrop>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A whole answer (Consul): every instance and its status.
    fn replace(&self, at: SystemTime, now: BTreeMap<String, String>) {
        let mut s = self.lock();
        let mut changes = Vec::new();
        for (id, status) in &now {
            if s.current.get(id) != Some(status) {
                changes.push((id.clone(), Seen::Present(status.clone())));
            }
        }
        for id in s.current.keys() {
            if !now.contains_key(id) {
                changes.push((id.clone(), Seen::Gone));
            }
        }
        s.current = now;
        s.primed = true;
        if !changes.is_empty() {
            s.last = Some(at);
        }
        s.changes.extend(
            changes
                .into_iter()
                .map(|(id, seen)| Change { id, at, seen }),
        );
        drop(s);
        self.bump();
    }

    /// One change (etcd).
    fn set(&self, at: SystemTime, id: String, seen: Seen) {
        let mut s = self.lock();
        match &seen {
            Seen::Present(status) => s.current.insert(id.clone(), status.clone()),
            Seen::Gone => s.current.remove(&id),
        };
        s.last = Some(at);
        s.changes.push(Change { id, at, seen });
        drop(s);
        self.bump();
    }

    fn primed_now(&self) {
        self.lock().primed = true;
        self.bump();
    }

    fn failed(&self, why: String) {
        self.lock().error = Some(why);
        self.bump();
    }

    /// What a consumer sees now: instance id → status.
    fn current(&self) -> BTreeMap<String, String> {
        self.lock().current.clone()
    }

    fn first(
        &self,
        id: &str,
        after: SystemTime,
        pred: impl Fn(&Seen) -> bool,
    ) -> Option<SystemTime> {
        self.lock()
            .changes
            .iter()
            .find(|c| c.id == id && c.at >= after && pred(&c.seen))
            .map(|c| c.at)
    }
}

impl Timeline {
    async fn primed(&self) -> Result<()> {
        self.wait("the first answer", Duration::from_secs(10), |_| true)
            .await
            .map(drop)
    }

    /// What a consumer sees now: instance id → status.
    pub fn current(&self) -> BTreeMap<String, String> {
        self.rec.current()
    }

    /// The first change of `id` at or after `after` that `pred` accepts.
    pub fn first(
        &self,
        id: &str,
        after: SystemTime,
        pred: impl Fn(&Seen) -> bool,
    ) -> Option<SystemTime> {
        self.rec.first(id, after, pred)
    }

    /// Waits up to `timeout` until `pred` holds for the current view; returns when the change
    /// that made it hold arrived (or now, if it held from the first answer on).
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Result<SystemTime> {
        let mut rx = self.rec.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let s = self.rec.lock();
                if let Some(e) = &s.error {
                    return Err(anyhow!("watching the registry failed: {e}"));
                }
                if s.primed && pred(&s.current) {
                    return Ok(s.last.unwrap_or_else(SystemTime::now));
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let n = self.rec.lock().current.len();
                return Err(anyhow!(
                    "timed out after {timeout:?} waiting for {what} ({n} instances seen)"
                ));
            }
        }
    }
}

/// Consul: a blocking query loop on `/v1/health/service/<name>`.
async fn watch_consul(http: reqwest::Client, url: String, timeline: Recorder) {
    let mut index: u64 = 0;
    loop {
        let answer = async {
            let resp = http
                .get(format!("{url}?index={index}&wait=5m"))
                .send()
                .await?
                .error_for_status()?;
            let next: u64 = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let entries: Vec<Value> = resp.json().await?;
            Ok::<_, reqwest::Error>((next, entries))
        };
        match answer.await {
            Ok((next, entries)) => {
                let at = SystemTime::now();
                let now = entries
                    .iter()
                    .filter_map(|e| {
                        let id = e["Service"]["ID"].as_str()?.to_owned();
                        Some((id, worst_status(&e["Checks"])))
                    })
                    .collect();
                timeline.replace(at, now);
                // An index that goes backwards (a Consul restart) starts over.
                index = if next < index { 0 } else { next };
            }
            Err(e) => {
                timeline.failed(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The worst status among an entry's checks (node checks included), as `?passing` and DNS
/// filter.
fn worst_status(checks: &Value) -> String {
    let rank = |s: &str| match s {
        "passing" => 0,
        "warning" => 1,
        _ => 2,
    };
    checks
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["Status"].as_str())
        .max_by_key(|s| rank(s))
        .unwrap_or("passing")
        .to_owned()
}

/// etcd: the current keys, then a watch from the revision after them.
async fn watch_etcd(mut client: Etcd, under: String, timeline: Recorder) {
    let result = async {
        let got = client
            .get(
                under.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await?;
        let revision = got.header().map(|h| h.revision()).unwrap_or(0);
        let at = SystemTime::now();
        for kv in got.kvs() {
            if let Some((id, status)) = instance(kv.value()) {
                timeline.set(at, id, Seen::Present(status));
            }
        }
        timeline.primed_now();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream = client.watch(under.as_str(), Some(opts)).await?;
        // Deletes carry no value: remember which id each key held.
        let mut ids: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        while let Some(resp) = stream.message().await? {
            let at = SystemTime::now();
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => {
                        if let Some((id, status)) = instance(kv.value()) {
                            ids.insert(kv.key().to_vec(), id.clone());
                            timeline.set(at, id, Seen::Present(status));
                        }
                    }
                    EventType::Delete => {
                        let id = ids.remove(kv.key()).unwrap_or_else(|| {
                            let key = String::from_utf8_lossy(kv.key());
                            key.rsplit('/').next().unwrap_or_default().to_owned()
                        });
                        timeline.set(at, id, Seen::Gone);
                    }
                }
            }
        }
        Ok::<_, etcd_client::Error>(())
    };
    if let Err(e) = result.await {
        timeline.failed(e.to_string());
    }
}

/// The id and health status of an instance value.
fn instance(value: &[u8]) -> Option<(String, String)> {
    let v: Value = serde_json::from_slice(value).ok()?;
    Some((
        v["id"].as_str()?.to_owned(),
        v["health"]["status"]
            .as_str()
            .unwrap_or("passing")
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_of_the_checks() {
        let checks = json!([{"Status": "passing"}, {"Status": "critical"}, {"Status": "warning"}]);
        assert_eq!(worst_status(&checks), "critical");
        assert_eq!(worst_status(&json!([{"Status": "passing"}])), "passing");
    }

    #[test]
    fn prometheus_labels() {
        let s = r#"grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;
        assert_eq!(label(s, "grpc_method"), Some("Range"));
        assert_eq!(label(s, "nope"), None);
    }

    #[test]
    fn a_timeline_records_changes_and_their_times() {
        let t = Recorder::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let t1 = t0 + Duration::from_millis(3);
        t.replace(t0, BTreeMap::from([("a".into(), "passing".into())]));
        t.replace(t1, BTreeMap::from([("a".into(), "critical".into())]));
        t.replace(t1 + Duration::from_millis(1), BTreeMap::new());
        assert_eq!(
            t.first("a", t0, |s| *s == Seen::Present("critical".into())),
            Some(t1)
        );
        assert_eq!(
            t.first("a", t0, |s| *s == Seen::Gone),
            Some(t1 + Duration::from_millis(1))
        );
        assert_eq!(t.first("b", t0, |_| true), None);
        assert!(t.current().is_empty());
    }
}
