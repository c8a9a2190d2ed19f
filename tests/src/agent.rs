//! The berth binary as a child process, plus the failure reporting every e2e test shares.
//!
//! [`berth_bin`] builds the binary once per test process with the same cargo that runs the
//! tests. [`Agent`] runs `berth run …` with its output in a log file, and [`diagnose`] turns
//! the agent logs and the registry's view into the text a failing assertion should carry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::consul::ConsulServer;
use crate::docker::TempDir;

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Path to the `berth` binary, built once per process with `cargo build -p berth --bin berth`.
///
/// `BERTH_BIN` overrides it (a prebuilt binary; nothing is built then). Otherwise the binary
/// is `<target>/debug/berth`, where `<target>` honours `CARGO_TARGET_DIR`.
pub fn berth_bin() -> &'static Path {
    // The outcome is kept either way, so a broken build fails every test at once instead of
    // being retried by each of them.
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build_berth) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn build_berth() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("BERTH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .args(["build", "-q", "-p", "berth", "--bin", "berth"])
        .current_dir(&root)
        .output()
        .map_err(|e| format!("running {cargo} build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p berth --bin berth failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => root.join(t),
        None => root.join("target"),
    };
    let bin = target.join("debug").join("berth");
    if !bin.exists() {
        return Err(format!("built berth but {} is missing", bin.display()));
    }
    Ok(bin)
}

/// The arguments every test agent gets: `run` against the Consul at `consul_addr` as node
/// `node`, host IP 127.0.0.1, TTL 3s, resync 30s, deregister-critical-after 1m.
pub fn standard_args(consul_addr: &str, node: &str) -> Vec<String> {
    let mut args = strings(&["run", "--consul-addr", consul_addr]);
    args.extend(common_args(node));
    args.extend(strings(&["--deregister-critical-after", "1m"]));
    args
}

/// What every test agent gets whatever its registry. Logs are JSON, so tests assert on
/// fields ([`Agent::records_with`]); failure messages render them as text lines.
fn common_args(node: &str) -> Vec<String> {
    strings(&[
        "--log-format",
        "json",
        "--node-name",
        node,
        "--host-ip",
        "127.0.0.1",
        "--ttl",
        "3s",
        "--resync",
        "30s",
    ])
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The arguments every etcd test agent gets: `run` against the etcd at `endpoint` under
/// `prefix` as node `node`, host IP 127.0.0.1, TTL 3s, resync 30s.
pub fn standard_etcd_args(endpoint: &str, prefix: &str, node: &str) -> Vec<String> {
    let mut args = strings(&[
        "run",
        "--registry",
        "etcd",
        "--etcd-endpoints",
        endpoint,
        "--etcd-prefix",
        prefix,
    ]);
    args.extend(common_args(node));
    args
}

/// `BERTH_LOG` for test agents: berth's own debug events, without the HTTP and TLS clients'
/// per-request chatter that would push them out of the log tail in a failure message.
pub const LOG_FILTER: &str = "debug,hyper=info,hyper_util=info,reqwest=info,rustls=info,rustls_platform_verifier=info,bollard=info,h2=info,tower=info,tonic=info";

/// A running `berth` process. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    pub args: Vec<String>,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    dir: Option<TempDir>,
}

impl Agent {
    /// `berth run` against `consul` with [`standard_args`] plus `extra`
    /// (see [`Agent::run_args`]).
    pub fn run<S: AsRef<str>>(consul: &ConsulServer, node: &str, extra: &[S]) -> Agent {
        Agent::run_args(standard_args(&consul.addr(), node), extra)
    }

    /// `berth` with `standard` (`run` followed by flag/value pairs, as [`standard_args`] or
    /// [`standard_etcd_args`] build them) plus `extra`. A flag in `extra` that `standard`
    /// also sets (e.g. `--resync 2s`) replaces the standard value rather than repeating it.
    pub fn run_args<S: AsRef<str>>(standard: Vec<String>, extra: &[S]) -> Agent {
        let extra: Vec<String> = extra.iter().map(|s| s.as_ref().to_string()).collect();
        let mut args = standard[..1].to_vec();
        for pair in standard[1..].chunks(2) {
            if !extra.contains(&pair[0]) {
                args.extend_from_slice(pair);
            }
        }
        args.extend(extra);
        Agent::spawn(&args)
    }

    /// `berth <args>` with `BERTH_LOG=debug`, stdout and stderr into one log file.
    pub fn spawn<S: AsRef<str>>(args: &[S]) -> Agent {
        Agent::spawn_with_env(args, &[])
    }

    /// Like [`Agent::spawn`], with extra environment variables. A `berth run` without
    /// `--admin-addr` gets `--admin-addr 127.0.0.1:0` (a port the OS picks, so parallel
    /// agents never collide); [`Agent::admin`] finds it in the log.
    pub fn spawn_with_env<S: AsRef<str>>(args: &[S], env: &[(&str, &str)]) -> Agent {
        let mut args: Vec<String> = args.iter().map(|s| s.as_ref().to_string()).collect();
        let sets_admin = args.iter().any(|a| a.starts_with("--admin-addr"))
            || env.iter().any(|(k, _)| *k == "BERTH_ADMIN_ADDR");
        if args.first().map(String::as_str) == Some("run") && !sets_admin {
            args.extend(["--admin-addr".to_string(), "127.0.0.1:0".to_string()]);
        }
        let dir = TempDir::new("berth-e2e-agent");
        let log_path = dir.0.join("berth.log");
        let log = std::fs::File::create(&log_path).expect("create agent log");
        let child = Command::new(berth_bin())
            .args(&args)
            .env("BERTH_LOG", LOG_FILTER)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", berth_bin().display()));
        Agent {
            child,
            args,
            log_path,
            exit: None,
            dir: Some(dir),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's admin server, once it has logged the address it listens on.
    pub fn admin(&self) -> crate::admin::AdminClient {
        let addr = crate::wait_for(
            "the admin server's address in the log",
            Duration::from_secs(20),
            || {
                let records = self.records_with(
                    "admin server listening (/healthz /readyz /metrics /v1/status /)",
                );
                let addr = field(records.first()?, "admin");
                (!addr.is_empty()).then(|| addr.to_owned())
            },
        );
        crate::admin::AdminClient::new(&addr)
    }

    /// `None` while running; the exit status once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Sends SIGTERM and waits (up to 30 s) for the process to exit; returns its status.
    /// Panics with the log if it does not exit in time.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30))
    }

    /// Sends SIGKILL and waits for the process to exit.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits up to `timeout` for the process to exit; panics (after SIGKILL) otherwise.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "berth (pid {}) did not exit within {timeout:?}\n{}",
                    self.pid(),
                    self.log_tail(80)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&mut self, sig: &str) {
        if self.exited().is_some() {
            return;
        }
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {sig} {} failed", self.pid());
    }

    /// The whole log so far (ANSI colour codes removed).
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// The last `n` lines of the log, JSON records rendered as text lines.
    pub fn log_tail(&self, n: usize) -> String {
        let text: Vec<String> = self.log().lines().map(render_line).collect();
        tail(&text.join("\n"), n)
    }

    /// The log's JSON records (the agent runs with `--log-format json`); other lines, such
    /// as a panic message, are left out.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(serde_json::Value::is_object)
            .collect()
    }

    /// The records whose message is `message`.
    pub fn records_with(&self, message: &str) -> Vec<serde_json::Value> {
        self.records()
            .into_iter()
            .filter(|r| r["message"] == message)
            .collect()
    }

    /// One paragraph for failure messages: state, args, log tail.
    pub fn describe(&mut self, lines: usize) -> String {
        let state = match self.exited() {
            None => format!("running (pid {})", self.pid()),
            Some(s) => format!("exited: {s}"),
        };
        format!(
            "--- berth {state}\n    args: {}\n    log ({}), last {lines} lines:\n{}",
            self.args.join(" "),
            self.log_path.display(),
            indent(&self.log_tail(lines))
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            // Keep the log for a post-mortem.
            if let Some(d) = self.dir.take() {
                std::mem::forget(d);
            }
        }
    }
}

/// `berth lookup <name> --json [--passing]` against `registry` (its flags): the instances
/// it prints, or why it failed.
pub fn lookup_json(
    registry: &[String],
    name: &str,
    passing: bool,
) -> Result<Vec<serde_json::Value>, String> {
    let mut args: Vec<&str> = vec!["lookup", name, "--json"];
    if passing {
        args.push("--passing");
    }
    args.extend(registry.iter().map(String::as_str));
    let (status, out, err) = berth_once(&args, &[], Duration::from_secs(20));
    if !status.success() {
        return Err(format!("berth {} exited {status}: {err}", args.join(" ")));
    }
    serde_json::from_str(&out).map_err(|e| format!("lookup printed {out:?}: {e}"))
}

/// Runs `berth <args>` to completion (for commands that exit at once: `--version`, bad
/// configuration) with `env_remove` removed from its environment. Returns the status, stdout
/// and stderr; panics if it is still running after `timeout`.
pub fn berth_once(
    args: &[&str],
    env_remove: &[&str],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let dir = TempDir::new("berth-e2e-once");
    let (out_path, err_path) = (dir.0.join("stdout"), dir.0.join("stderr"));
    let mut cmd = Command::new(berth_bin());
    cmd.args(args).stdin(Stdio::null());
    for k in env_remove {
        cmd.env_remove(k);
    }
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", berth_bin().display()));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for berth") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth {} still running after {timeout:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out_path), read(&err_path))
}

/// A string field of a log record (`""` when it has none).
pub fn field<'a>(record: &'a serde_json::Value, name: &str) -> &'a str {
    record[name].as_str().unwrap_or("")
}

/// A log line for people: a JSON record as `time LEVEL target: message k=v …`, anything else
/// as it is.
pub fn render_line(line: &str) -> String {
    let Ok(serde_json::Value::Object(r)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let text = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let mut out = format!(
        "{} {} {}: {}",
        text("timestamp"),
        text("level"),
        text("target"),
        text("message")
    );
    for (k, v) in &r {
        if matches!(
            k.as_str(),
            "timestamp" | "level" | "target" | "message" | "span" | "spans"
        ) {
            continue;
        }
        match v.as_str() {
            Some(s) => out.push_str(&format!(" {k}={s:?}")),
            None => out.push_str(&format!(" {k}={v}")),
        }
    }
    if let Some(span) = r.get("span").and_then(|s| s.as_object()) {
        for (k, v) in span.iter().filter(|(k, _)| k.as_str() != "name") {
            out.push_str(&format!(
                " {k}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            ));
        }
    }
    out
}

/// `s` without ANSI escape sequences (`ESC [ … letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `s` with every line indented by four spaces.
pub fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Consul's view for failure messages: the agent's services and checks, one line each, and
/// its log tail.
pub fn consul_state(consul: &ConsulServer) -> String {
    let services = match consul.get("/v1/agent/services") {
        Some(serde_json::Value::Object(m)) if m.is_empty() => "(none)".to_string(),
        Some(serde_json::Value::Object(m)) => m
            .values()
            .map(|s| {
                format!(
                    "\n        {} ({}) @ {}:{} node={} container={}",
                    s["ID"],
                    s["Service"],
                    s["Address"],
                    s["Port"],
                    s["Meta"]["berth-node"],
                    s["Meta"]["berth-container-name"]
                )
            })
            .collect(),
        Some(other) => clip(&other.to_string(), 2000),
        None => "(no answer)".to_string(),
    };
    let checks = match consul.get("/v1/agent/checks") {
        Some(serde_json::Value::Object(m)) if m.is_empty() => "(none)".to_string(),
        Some(serde_json::Value::Object(m)) => m
            .values()
            .map(|c| format!("\n        {}={} {}", c["CheckID"], c["Status"], c["Output"]))
            .collect(),
        Some(other) => clip(&other.to_string(), 2000),
        None => "(no answer)".to_string(),
    };
    format!(
        "--- consul {}\n    /v1/agent/services: {}\n    /v1/agent/checks: {}\n    consul log without requests, last 15 lines:\n{}",
        consul.addr(),
        clip(&services, 8000),
        clip(&checks, 8000),
        indent(&tail(&quiet_consul_log(&consul.log()), 15)),
    )
}

/// Consul's log without the per-request lines (the tests poll it every 100 ms).
fn quiet_consul_log(log: &str) -> String {
    log.lines()
        .filter(|l| !l.contains("agent.http: Request finished"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `s` cut to at most `max` bytes, saying how much was left out.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &s[..end], s.len() - end)
}

/// Everything a failure message should carry: Consul's state and each agent's log tail.
pub fn diagnose(consul: &ConsulServer, agents: &mut [&mut Agent]) -> String {
    diagnose_with(consul_state(consul), agents)
}

/// `registry_state` (a registry's view, as [`consul_state`] formats Consul's) followed by
/// each agent's log tail.
pub fn diagnose_with(registry_state: String, agents: &mut [&mut Agent]) -> String {
    let mut out = registry_state;
    for a in agents.iter_mut() {
        out.push('\n');
        out.push_str(&a.describe(60));
    }
    out
}

/// Polls `f` every 100 ms until it returns `Ok`, or panics after `timeout` with `what`, the
/// last `Err` (what was observed instead) and `diag()`.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
    diag: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > timeout {
                    panic!(
                        "timed out after {timeout:?} waiting for {what}\nlast observed: {last}\n{}",
                        diag()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
