//! A real single-member `etcd` per test, on free ports, read and written with `etcdctl`.
//!
//! The assertions go through `etcdctl` (v3 API, JSON output) rather than a Rust client, so
//! they do not rest on the client berth itself uses. [`Watch`] records every change under a
//! prefix, which is how tests prove that berth writes only on change.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use crate::agent::{clip, indent, tail};
use crate::docker::TempDir;
use crate::free_port;

/// One key as `etcdctl get -w json` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    /// The attached lease, 0 for none.
    pub lease: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Number of writes since the key was (re)created: 1 after a single put.
    pub version: i64,
}

impl Kv {
    /// The value parsed as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.value).unwrap_or(Value::Null)
    }

    fn from_json(kv: &Value) -> Result<Kv, String> {
        let int = |k: &str| kv[k].as_i64().unwrap_or(0);
        Ok(Kv {
            key: decode(&kv["key"])?,
            value: decode(&kv["value"])?,
            lease: int("lease"),
            create_revision: int("create_revision"),
            mod_revision: int("mod_revision"),
            version: int("version"),
        })
    }
}

/// A base64 field of etcdctl's JSON output as text (absent means empty).
fn decode(v: &Value) -> Result<String, String> {
    let Some(s) = v.as_str() else {
        return Ok(String::new());
    };
    let bytes = BASE64
        .decode(s)
        .map_err(|e| format!("bad base64 {s:?} from etcdctl: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("non-UTF-8 etcd data: {e}"))
}

/// A lease id in the hex form the `etcdctl lease` commands take.
pub fn lease_hex(id: i64) -> String {
    format!("{id:x}")
}

/// A running single-member etcd on 127.0.0.1. Killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    pub client_port: u16,
    pub peer_port: u16,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd in a fresh data dir and waits until it answers. When it exits at once
    /// (another process took one of its ports between picking and binding), it is started
    /// again on fresh ports, up to three times.
    pub fn start() -> EtcdServer {
        let mut server = EtcdServer {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: TempDir::new("berth-e2e-etcd"),
        };
        for attempt in 1..=3 {
            match server.try_spawn() {
                Ok(()) => return server,
                Err(why) if attempt < 3 => {
                    eprintln!("etcd did not start ({why}); retrying on fresh ports");
                    let _ = std::fs::remove_dir_all(server.data_dir());
                    server.client_port = free_port();
                    server.peer_port = free_port();
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("etcd.log")
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{why}");
        }
    }

    /// Starts etcd on the current ports; `Err` with the log tail when it exits or is not
    /// healthy within 30 s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        // Appended across restarts, so a failure message shows the whole history.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let child = Command::new("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd (is it installed? run scripts/install-deps.sh)");
        self.child = Some(child);
        let mut last = String::new();
        for _ in 0..300 {
            match self.ctl(&["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "etcd on {client} exited ({status})\netcd log:\n{}",
                    tail(&self.log(), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop();
        Err(format!(
            "etcd on {client} not healthy after 30s: {last}\netcd log:\n{}",
            tail(&self.log(), 30)
        ))
    }

    /// `http://127.0.0.1:<client port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir after [`stop`](Self::stop).
    pub fn resume(&mut self) {
        self.spawn();
    }

    /// Kills etcd (SIGKILL) and starts it again on the same data dir: keys and leases
    /// survive (etcd extends a restored lease to its full TTL).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills etcd, deletes its data dir and starts it again: every key and lease is lost.
    pub fn restart_wiped(&mut self) {
        self.stop();
        let data = self.data_dir();
        std::fs::remove_dir_all(&data)
            .unwrap_or_else(|e| panic!("remove etcd data dir {}: {e}", data.display()));
        self.spawn();
    }

    /// `etcdctl <args>` against this server (v3 API); `Ok(stdout)` or `Err(description)`.
    pub fn ctl<S: AsRef<str>>(&self, args: &[S]) -> Result<String, String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let out = self
            .ctl_command()
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("etcdctl {}: cannot run etcdctl: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!(
                "etcdctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn ctl_command(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(["--dial-timeout=2s", "--command-timeout=5s"]);
        cmd
    }

    /// Every key under `prefix` with its value and lease, in key order; `Err` when etcd
    /// does not answer.
    pub fn try_get_prefix(&self, prefix: &str) -> Result<Vec<Kv>, String> {
        Ok(self.get_prefix_rev(prefix)?.0)
    }

    /// Like [`EtcdServer::try_get_prefix`], panicking when etcd does not answer.
    pub fn get_prefix(&self, prefix: &str) -> Vec<Kv> {
        self.try_get_prefix(prefix)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The keys under `prefix` and the store revision they were read at.
    fn get_prefix_rev(&self, prefix: &str) -> Result<(Vec<Kv>, i64), String> {
        let out = self.ctl(&["get", "--prefix", prefix, "-w", "json"])?;
        let v: Value =
            serde_json::from_str(&out).map_err(|e| format!("etcdctl get output {out:?}: {e}"))?;
        let kvs = v["kvs"]
            .as_array()
            .map(|a| a.iter().map(Kv::from_json).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        let rev = v["header"]["revision"]
            .as_i64()
            .ok_or_else(|| format!("no header.revision in {out}"))?;
        Ok((kvs, rev))
    }

    /// One key, `None` when absent.
    pub fn get(&self, key: &str) -> Option<Kv> {
        let out = self.ctl(&["get", key, "-w", "json"]).ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        Kv::from_json(v["kvs"].get(0)?).ok()
    }

    /// `etcdctl put key value`; panics on failure.
    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `etcdctl put key value --lease=<id>`; panics on failure.
    pub fn put_with_lease(&self, key: &str, value: &str, lease: i64) {
        self.ctl(&["put", key, value, &format!("--lease={}", lease_hex(lease))])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `etcdctl del key`; panics on failure.
    pub fn delete(&self, key: &str) {
        self.ctl(&["del", key]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Grants a lease of `ttl_secs` and returns its id.
    pub fn lease_grant(&self, ttl_secs: u64) -> i64 {
        let out = self
            .ctl(&["lease", "grant", &ttl_secs.to_string(), "-w", "json"])
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_str(&out).expect("lease grant prints JSON");
        v["ID"]
            .as_i64()
            .unwrap_or_else(|| panic!("no ID in lease grant output {out}"))
    }

    /// Revokes lease `id`, deleting every key attached to it; panics on failure.
    pub fn lease_revoke(&self, id: i64) {
        self.ctl(&["lease", "revoke", &lease_hex(id)])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `(remaining TTL, granted TTL)` of lease `id` in seconds; `None` when the lease does
    /// not exist (expired or revoked) or etcd does not answer.
    pub fn lease_ttl(&self, id: i64) -> Option<(i64, i64)> {
        let out = self
            .ctl(&["lease", "timetolive", &lease_hex(id), "-w", "json"])
            .ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        let ttl = v["ttl"].as_i64()?;
        (ttl >= 0).then(|| (ttl, v["granted-ttl"].as_i64().unwrap_or(0)))
    }

    /// etcd's log so far (every run of this server), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Everything under `prefix`, one line per key, and the log tail: for failure messages.
    pub fn describe(&self, prefix: &str) -> String {
        let keys = match self.try_get_prefix(prefix) {
            Ok(kvs) if kvs.is_empty() => "(none)".to_string(),
            Ok(kvs) => kvs
                .iter()
                .map(|kv| {
                    format!(
                        "\n        {} lease={} ver={} mod_rev={} = {}",
                        kv.key,
                        lease_hex(kv.lease),
                        kv.version,
                        kv.mod_revision,
                        clip(&kv.value, 600)
                    )
                })
                .collect(),
            Err(e) => format!("(no answer: {e})"),
        };
        format!(
            "--- etcd {}\n    keys under {prefix}: {keys}\n    etcd log, last 15 lines:\n{}",
            self.endpoint(),
            indent(&tail(&self.log(), 15)),
        )
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a [`Watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// The new value (empty for a delete).
    pub value: String,
    /// The lease of the new value (0 for a delete or no lease).
    pub lease: i64,
    pub revision: i64,
}

#[derive(Debug, Default)]
struct Seen {
    events: Vec<Event>,
    errors: Vec<String>,
}

/// `etcdctl watch --prefix <p> -w json` as a child process, collecting every event on a
/// reader thread. It watches from the revision current when it starts, so no change after
/// [`Watch::start`] returns is missed, however long the watch takes to be established.
/// Killed on drop.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    pub prefix: String,
    seen: Arc<Mutex<Seen>>,
}

impl Watch {
    pub fn start(etcd: &EtcdServer, prefix: &str) -> Watch {
        let (_, rev) = etcd
            .get_prefix_rev(prefix)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut child = etcd
            .ctl_command()
            .args(["watch", "--prefix", prefix, "-w", "json"])
            .arg(format!("--rev={}", rev + 1))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl watch");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = parse_watch_line(&line);
                let mut seen = s.lock().unwrap_or_else(|p| p.into_inner());
                match parsed {
                    Ok(events) => seen.events.extend(events),
                    Err(e) => seen.errors.push(e),
                }
            }
        });
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            if !text.trim().is_empty() {
                let mut seen = s.lock().unwrap_or_else(|p| p.into_inner());
                seen.errors
                    .push(format!("etcdctl watch stderr: {}", text.trim()));
            }
        });
        Watch {
            child,
            prefix: prefix.to_string(),
            seen,
        }
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The events so far for `key`, in order.
    pub fn events_for(&self, key: &str) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .filter(|e| e.key == key)
            .cloned()
            .collect()
    }

    /// The positive control for a "nothing happened" assertion: puts a key of its own under
    /// the watched prefix and waits until the watch reports it, proving the watch delivers
    /// (call it after the interval in question, whose events would have come first). The
    /// key is deleted again.
    pub fn prove_live(&self, etcd: &EtcdServer) {
        let key = format!(
            "{}/watch-control-{}",
            self.prefix.trim_end_matches('/'),
            crate::docker::random_hex(0)
        );
        etcd.put(&key, "control");
        let seen = self.wait_until(Duration::from_secs(10), |events| {
            events
                .iter()
                .any(|e| e.key == key && e.kind == EventKind::Put)
        });
        etcd.delete(&key);
        assert!(
            seen,
            "the watch of {} did not deliver a put of {key}; it cannot show that nothing \
             else happened\n{}",
            self.prefix,
            self.describe()
        );
    }

    /// Output lines that did not parse and anything etcdctl printed on stderr.
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    /// Waits up to `timeout` until `f(events)` holds; returns whether it did.
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut(&[Event]) -> bool) -> bool {
        let start = std::time::Instant::now();
        loop {
            if f(&self.lock().events) {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The events, one line each, for failure messages.
    pub fn describe(&self) -> String {
        let seen = self.lock();
        let mut out = format!("--- watch {} ({} events)", self.prefix, seen.events.len());
        for e in &seen.events {
            out.push_str(&format!(
                "\n    rev {} {:?} {} lease={} {}",
                e.revision,
                e.kind,
                e.key,
                lease_hex(e.lease),
                clip(&e.value, 300)
            ));
        }
        for e in &seen.errors {
            out.push_str(&format!("\n    error: {e}"));
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of `etcdctl watch -w json`: a watch response with its events. An event's
/// `type` is absent for a put (0) and 1 for a delete.
fn parse_watch_line(line: &str) -> Result<Vec<Event>, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("watch output {line:?}: {e}"))?;
    let Some(events) = v["Events"].as_array() else {
        return Ok(Vec::new());
    };
    events
        .iter()
        .map(|ev| {
            let kind = match ev["type"].as_i64().unwrap_or(0) {
                0 => EventKind::Put,
                1 => EventKind::Delete,
                other => return Err(format!("unknown watch event type {other} in {line}")),
            };
            let kv = Kv::from_json(&ev["kv"])?;
            Ok(Event {
                kind,
                key: kv.key,
                value: kv.value,
                lease: kv.lease,
                revision: kv.mod_revision,
            })
        })
        .collect()
}
