//! The admin server, end to end: `/healthz`, `/readyz` through their transitions, `/metrics`
//! counting what happens, `/v1/status`, the status page in headless Chromium, and the
//! admin address's startup errors. The real binary on the real Docker engine, against a real
//! Consul dev agent and a real etcd.
//!
//! Readiness and metrics scenarios are written once as functions of the backend [`Kind`]
//! (`berth_e2e::backend_tests!` at the bottom).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use berth_e2e::admin::{AdminClient, counter, sample};
use berth_e2e::agent::{Agent, berth_once, workspace_root};
use berth_e2e::backend::{Found, Kind};
use berth_e2e::consul::ConsulServer;
use berth_e2e::docker::{self, Container, relay};
use berth_e2e::env::{Env, SETTLE};
use berth_e2e::{free_port, wait_for};
use serde_json::Value;

/// Long enough for a registry outage to outlast one TTL (3 s) and be noticed by the next
/// heartbeat (every second), with slack for a loaded machine.
const OUTAGE: Duration = Duration::from_secs(20);

/// Every agent sees every container on the engine. The metrics scenario counts exact
/// changes, so it holds this exclusively while the other scenarios of this file, which
/// start containers, hold it shared (test binaries run one after another, so no other
/// file's containers come and go meanwhile).
static ENGINE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    ENGINE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    ENGINE.write().unwrap_or_else(|e| e.into_inner())
}

fn httpd(test: &str, name: &str, extra: &[&str]) -> Container {
    let mut opts = vec!["-l".to_string(), format!("SERVICE_NAME={name}")];
    opts.extend(extra.iter().map(|s| s.to_string()));
    opts.extend(["-p".to_string(), "80".to_string()]);
    Container::httpd(test, &opts)
}

fn one_instance(found: Result<Vec<Found>, String>) -> Result<(), String> {
    match found? {
        f if f.len() == 1 => Ok(()),
        f => Err(format!("{} instances", f.len())),
    }
}

/// Waits until `/readyz` fails with a reason containing `want`.
fn wait_unready(env: &mut Env, admin: &AdminClient, want: &str, timeout: Duration) -> String {
    let admin = admin.clone();
    env.wait(
        &format!("/readyz 503 with {want:?}"),
        timeout,
        |_| match admin.ready() {
            Ok(body) => Err(format!("ready: {body}")),
            Err(e) if e.starts_with("503 ") && e.contains(want) => Ok(e),
            Err(e) => Err(e),
        },
    )
}

/// `berth health [--ready] --admin-addr <addr>`: exit code, stdout, stderr.
fn health_cmd(addr: &str, ready: bool) -> (Option<i32>, String, String) {
    let mut args = vec!["health", "--admin-addr", addr];
    if ready {
        args.push("--ready");
    }
    let (status, out, err) = berth_once(&args, &[], Duration::from_secs(10));
    (status.code(), out, err)
}

fn wait_ready(env: &mut Env, admin: &AdminClient, timeout: Duration) {
    let admin = admin.clone();
    env.wait("/readyz 200", timeout, |_| admin.ready().map(|_| ()));
}

/// `berth health` with no agent answering exits 1 with the URL it asked; a bad admin
/// address is a configuration error (64), as for `run`.
#[test]
fn health_command_without_an_agent_and_with_a_bad_address() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (code, out, err) = health_cmd(&addr, false);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("http://{addr}/healthz: no answer")),
        "{err}"
    );
    let (code, _, err) = health_cmd("not-an-address", true);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--admin-addr"), "{err}");
}

/// Not ready while the registry has never answered; ready once it has and the first
/// snapshot is applied; not ready again with the reason when the registry has been down for
/// longer than one TTL; ready again once it is back. `/healthz` answers 200 throughout.
fn readiness_follows_the_registry(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("ready_registry", kind);
    let name = env.svc("web");
    let _c = httpd(env.test, &name, &[]);
    env.backend_stop();
    env.start_agent(&[]);
    let admin = env.agent().admin();
    let reason = wait_unready(&mut env, &admin, "registry unreachable", SETTLE);
    assert!(!reason.contains('\n'), "one line: {reason:?}");
    assert_eq!(admin.get("/healthz").unwrap().0, 200);
    // `berth health`, the image's health check, says the same: alive, not ready, and why.
    assert_eq!(
        health_cmd(admin.addr(), false),
        (Some(0), "ok\n".to_owned(), String::new())
    );
    let (code, _, err) = health_cmd(admin.addr(), true);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("/readyz: 503") && err.contains("registry unreachable"),
        "{err}"
    );

    env.backend_resume();
    wait_ready(&mut env, &admin, SETTLE * 2);
    assert_eq!(
        health_cmd(admin.addr(), true),
        (Some(0), "ready\n".to_owned(), String::new())
    );
    env.wait("the instance registered", SETTLE, |b| {
        one_instance(b.instances(&name))
    });

    env.backend_stop();
    let reason = wait_unready(&mut env, &admin, "registry unreachable for ", OUTAGE);
    assert_eq!(reason.lines().count(), 1, "{reason:?}");
    assert_eq!(admin.get("/healthz").unwrap().0, 200, "alive while unready");
    let metrics = admin.metrics();
    assert_eq!(sample(&metrics, "berth_ready"), Some(0.0));
    assert!(
        counter(
            &metrics,
            r#"berth_registry_errors_total{op="heartbeat",kind="unavailable"}"#
        ) >= 1.0,
        "{metrics}"
    );

    env.backend_resume();
    wait_ready(&mut env, &admin, SETTLE * 3);
    env.wait("the instance registered again", SETTLE, |b| {
        one_instance(b.instances(&name))
    });
    assert_eq!(sample(&admin.metrics(), "berth_ready"), Some(1.0));
}

/// Scrapes `/metrics` before and after a labelled container starts and stops: the counters
/// move by what happened, the state gauges follow, and the text passes `promtool check
/// metrics`. Holds the engine exclusively, so this container is the only one that changes.
fn metrics_count_a_container_start_and_stop(kind: Kind) {
    let _engine = exclusive();
    let mut env = Env::new("metrics", kind);
    env.start_agent(&[]);
    let admin = env.agent().admin();
    wait_ready(&mut env, &admin, SETTLE);
    let name = env.svc("web");
    let before = admin.metrics();
    promtool(&before);
    let owned_before = sample(&before, "berth_instances_owned").unwrap();

    let mut c = httpd(
        env.test,
        &name,
        &[
            "-l",
            "berth.check.tcp=true",
            "-l",
            "berth.check.interval=1s",
        ],
    );
    env.wait("registered", SETTLE, |b| one_instance(b.instances(&name)));
    let admin2 = admin.clone();
    let started = env.wait(
        "the passing result written, a heartbeat sent",
        SETTLE,
        |_| {
            let m = admin2.metrics();
            let passing = sample(&m, r#"berth_instances{health="passing"}"#).unwrap_or(0.0);
            let moved = |series: &str| counter(&m, series) - counter(&before, series);
            let health = moved(r#"berth_registry_writes_total{op="health"}"#);
            let beats = moved(r#"berth_registry_writes_total{op="heartbeat"}"#);
            (health >= 1.0 && passing >= 1.0 && beats >= 1.0)
                .then_some(m.clone())
                .ok_or(format!("{health} health writes, {beats} heartbeats"))
        },
    );
    promtool(&started);
    let delta = |after: &str, series: &str| counter(after, series) - counter(&before, series);
    assert_eq!(
        delta(&started, r#"berth_docker_events_total{action="start"}"#),
        1.0
    );
    assert_eq!(
        delta(&started, r#"berth_registry_writes_total{op="register"}"#),
        1.0
    );
    assert_eq!(
        delta(&started, r#"berth_registry_writes_total{op="health"}"#),
        1.0,
        "critical at first, then passing"
    );
    assert_eq!(
        delta(&started, r#"berth_registry_writes_total{op="deregister"}"#),
        0.0
    );
    assert_eq!(
        delta(&started, "berth_event_to_write_duration_seconds_count"),
        1.0,
        "the start event's write was timed"
    );
    assert!(
        delta(
            &started,
            r#"berth_probes_total{kind="tcp",status="passing"}"#
        ) >= 1.0
    );
    assert!(
        delta(
            &started,
            r#"berth_probe_duration_seconds_count{kind="tcp"}"#
        ) >= 1.0
    );
    assert!(delta(&started, "berth_reconcile_duration_seconds_count") >= 1.0);
    assert_eq!(
        sample(&started, "berth_instances_owned").unwrap(),
        owned_before + 1.0
    );
    let registered = env.agent().records_with("registered");
    let mine = registered
        .iter()
        .find(|r| r["container"] == c.id[..12] && r["service.name"] == name.as_str())
        .unwrap_or_else(|| panic!("a registered line for {}", c.name));
    assert_eq!(mine["op"], "register");
    assert!(mine["took_ms"].as_f64().is_some(), "{mine}");
    assert!(
        mine["service.id"].as_str().unwrap().ends_with(":80"),
        "{mine}"
    );

    c.rm();
    env.wait("deregistered", SETTLE, |b| {
        let f = b.instances(&name)?;
        f.is_empty()
            .then_some(())
            .ok_or(format!("{} left", f.len()))
    });
    let admin3 = admin.clone();
    let stopped = env.wait("the deregistration counted", SETTLE, |_| {
        let m = admin3.metrics();
        let n = delta(&m, r#"berth_registry_writes_total{op="deregister"}"#);
        (n >= 1.0)
            .then_some(m)
            .ok_or(format!("{n} deregistrations"))
    });
    promtool(&stopped);
    assert_eq!(
        delta(&stopped, r#"berth_registry_writes_total{op="deregister"}"#),
        1.0
    );
    assert_eq!(
        delta(&stopped, r#"berth_registry_writes_total{op="register"}"#),
        1.0
    );
    assert_eq!(
        delta(&stopped, r#"berth_docker_events_total{action="die"}"#),
        1.0
    );
    // The removal's write is timed from its event unless the probe saw the container die
    // first: then a probe recheck, which no event asked for, made the write.
    let timed = delta(&stopped, "berth_event_to_write_duration_seconds_count");
    assert!((1.0..=2.0).contains(&timed), "{timed} timed writes");
    assert_eq!(
        sample(&stopped, "berth_instances_owned").unwrap(),
        owned_before
    );
    let admin4 = admin.clone();
    env.wait(
        "the destroy event counted and the container forgotten",
        SETTLE,
        |_| {
            let m = admin4.metrics();
            let destroyed = delta(&m, r#"berth_docker_events_total{action="destroy"}"#);
            let gone = container_named(&admin4.status(), &c.name).is_none();
            (destroyed == 1.0 && gone)
                .then_some(())
                .ok_or(format!("{destroyed} destroy events, gone {gone}"))
        },
    );
    let deregistered = env.agent().records_with("deregistered");
    assert!(
        deregistered.iter().any(|r| r["container"] == c.id[..12]
            && r["service.name"] == name.as_str()
            && r["op"] == "deregister"),
        "a deregistered line with the container and the service name"
    );
    assert_eq!(sample(&stopped, "berth_docker_connects_total"), Some(1.0));
    assert!(sample(&stopped, "berth_snapshots_applied_total").unwrap() >= 1.0);
}

/// Every instance named `name` in a `/v1/status` document.
fn instances_named(status: &Value, name: &str) -> Vec<Value> {
    status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["instances"].as_array().unwrap().clone())
        .filter(|i| i["name"] == name)
        .collect()
}

/// The container named `name` in a `/v1/status` document.
fn container_named(status: &Value, name: &str) -> Option<Value> {
    status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// `promtool check metrics` (Debian's `prometheus` package) accepts the text.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-deps.sh installs Debian's prometheus package)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {said}\n{text}"
    );
    // Lint findings (naming, units) are printed even on success; berth has none.
    assert!(said.trim().is_empty(), "promtool lint: {said}");
}

/// `/v1/status` shows a registered instance with its health and probe output, a container
/// skipped for a bad label with the reason and the label's key, and an ignored one.
#[test]
fn status_lists_instances_and_skipped_containers() {
    let _engine = shared();
    let mut env = Env::new("status", Kind::Consul);
    env.start_agent(&[]);
    let admin = env.agent().admin();
    let name = env.svc("web");
    let good = httpd(
        env.test,
        &name,
        &[
            "-l",
            "berth.check.http=/missing",
            "-l",
            "berth.check.interval=1s",
        ],
    );
    let bad = Container::httpd(env.test, &["-l", "berth.name=!!!", "-p", "80"]);
    let ignored = Container::httpd(env.test, &["-l", "SERVICE_IGNORE=true", "-p", "80"]);
    let admin2 = admin.clone();
    let status = env.wait(
        "the containers on /v1/status, the probe result in",
        SETTLE,
        |_| {
            let s = admin2.status();
            let probed = instances_named(&s, &name)
                .first()
                .is_some_and(|i| i["health"]["output"].as_str().unwrap_or("").contains("404"));
            let seen = [&bad.name, &ignored.name]
                .iter()
                .all(|n| container_named(&s, n).is_some());
            (probed && seen).then_some(s).ok_or("not yet".to_string())
        },
    );
    let c = container_named(&status, &good.name).unwrap();
    assert_eq!(c["id"], good.id.as_str());
    let i = &c["instances"][0];
    assert_eq!(i["name"], name.as_str());
    assert_eq!(i["address"], "127.0.0.1");
    assert_eq!(i["port"], good.host_port(80));
    assert_eq!(i["health"]["status"], "critical", "{i:#}");
    assert!(
        i["health"]["output"].as_str().unwrap().contains("HTTP GET"),
        "{i:#}"
    );
    assert_eq!(i["registered"], true);
    assert_eq!(status["node"], env.node.as_str());
    assert_eq!(status["ready"], true, "{status:#}");

    let note_for = |c: &Value, key: &str| -> Value {
        c["notes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["key"]["name"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("no note about {key}: {c:#}"))
    };
    let b = container_named(&status, &bad.name).unwrap();
    assert_eq!(b["skipped"], "invalid_labels", "{b:#}");
    assert!(b["instances"].as_array().unwrap().is_empty());
    let note = note_for(&b, "berth.name");
    assert_eq!(note["level"], "warn");
    assert_eq!(note["key"]["source"], "label");
    assert!(
        note["message"]
            .as_str()
            .unwrap()
            .contains("not usable as a service name"),
        "{b:#}"
    );

    let g = container_named(&status, &ignored.name).unwrap();
    assert_eq!(g["skipped"], "ignored", "{g:#}");
    assert!(
        note_for(&g, "SERVICE_IGNORE")["message"]
            .as_str()
            .unwrap()
            .contains("container ignored")
    );

    let metrics = admin.metrics();
    for reason in ["ignored", "invalid_labels"] {
        let series = format!(r#"berth_containers_skipped{{reason="{reason}"}}"#);
        assert!(sample(&metrics, &series).unwrap() >= 1.0, "{series}");
    }
    assert!(counter(&metrics, "berth_label_errors_total") >= 1.0);
    let problems = env.agent().records_with("label problem");
    assert!(
        problems
            .iter()
            .any(|r| r["label"] == "berth.name" && r["container"] == bad.id[..12]),
        "a label problem log line names the key and the container"
    );
}

/// Where test artifacts (screenshots) go: `target/e2e-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = workspace_root().join("target").join("e2e-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium on `url`: `--dump-dom` (the DOM after parsing) and a PNG at `png`.
fn chromium(url: &str, png: &std::path::Path) -> String {
    let profile = berth_e2e::temp_dir("berth-e2e-chromium");
    let run = |extra: &[&str]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=430,1200",
                &format!("--user-data-dir={}", profile.display()),
            ])
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .expect("chromium (scripts/install-deps.sh installs Debian's chromium)");
        assert!(
            out.status.success(),
            "chromium {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom"]);
    run(&[&format!("--screenshot={}", png.display())]);
    dom
}

/// The status page, loaded in headless Chromium: it shows the service names and a failing
/// instance, and a label value holding `<script>` is text, not an element. A screenshot is
/// kept in `target/e2e-artifacts/status-page.png`.
#[test]
fn status_page_renders_services_and_escapes_labels() {
    let _engine = shared();
    let mut env = Env::new("page", Kind::Consul);
    env.start_agent(&[]);
    let admin = env.agent().admin();
    let ok_name = env.svc("shop");
    let bad_name = env.svc("cart");
    let hostile = "<script>document.title='owned'</script>";
    let _ok = httpd(
        env.test,
        &ok_name,
        &[
            "-l",
            "berth.check.tcp=true",
            "-l",
            "berth.check.interval=1s",
        ],
    );
    let _bad = httpd(
        env.test,
        &bad_name,
        &[
            "-l",
            "berth.check.http=/missing",
            "-l",
            "berth.check.interval=1s",
            "-l",
            &format!("SERVICE_TAGS={hostile}"),
        ],
    );
    let admin2 = admin.clone();
    env.wait("both probed", SETTLE, |_| {
        let s = admin2.status();
        let statuses: Vec<String> = [&ok_name, &bad_name]
            .iter()
            .flat_map(|n| instances_named(&s, n))
            .map(|i| i["health"]["status"].as_str().unwrap_or("").to_owned())
            .collect();
        (statuses == ["passing", "critical"])
            .then_some(())
            .ok_or(format!("{statuses:?}"))
    });
    let png = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let dom = chromium(&format!("{}/", admin.base()), &png);
    assert!(dom.contains(&ok_name) && dom.contains(&bad_name), "{dom}");
    assert!(dom.contains("badge b-critical\">critical"), "{dom}");
    assert!(dom.contains("badge b-passing\">passing"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.title='owned'&lt;/script&gt;"),
        "the label is shown as text:\n{dom}"
    );
    assert!(!dom.contains("<script>"), "no script element:\n{dom}");
    assert!(
        dom.contains(&format!("<title>berth on {}</title>", env.node)),
        "{dom}"
    );
    let meta = std::fs::metadata(&png).expect("the screenshot was written");
    assert!(meta.len() > 10_000, "a real PNG: {} bytes", meta.len());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

/// A port already in use stops `berth run` at startup with one line and exit 64; an empty
/// `BERTH_ADMIN_ADDR` disables the server while the agent runs.
#[test]
fn admin_address_in_use_is_exit_64_and_empty_disables_it() {
    let _engine = shared();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let consul = ConsulServer::start();
    let (status, out, err) = berth_once(
        &[
            "run",
            "--consul-addr",
            &consul.addr(),
            "--node-name",
            "n-admin",
            "--admin-addr",
            &addr,
        ],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(64), "stdout {out}\nstderr {err}");
    let said = format!("{out}{err}");
    let errors: Vec<&str> = said.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{said}");
    assert!(
        errors[0].contains(&format!("cannot listen on admin address {addr}"))
            && errors[0].contains("in use"),
        "{said}"
    );

    let mut agent = Agent::spawn_with_env(
        &[
            "run",
            "--consul-addr",
            &consul.addr(),
            "--node-name",
            "n-admin-off",
            "--log-format",
            "json",
        ],
        &[("BERTH_ADMIN_ADDR", "")],
    );
    wait_for("the agent to start", SETTLE, || {
        (!agent
            .records_with("docker connected; applying snapshot")
            .is_empty())
        .then_some(())
    });
    assert!(
        agent
            .records_with("admin server listening (/healthz /readyz /metrics /v1/status /)")
            .is_empty(),
        "{}",
        agent.log_tail(20)
    );
    assert!(agent.exited().is_none(), "{}", agent.log_tail(20));
}

/// `/readyz` is 503 with the reason while the Docker endpoint is cut, and 200 again once
/// berth has reconnected and relisted.
#[test]
fn readiness_follows_the_docker_connection() {
    let _engine = shared();
    let consul = ConsulServer::start();
    let port = free_port();
    let cut = relay(port);
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let agent = Agent::spawn_with_env(
        &[
            "run",
            "--consul-addr",
            &consul.addr(),
            "--node-name",
            &docker::unique_name("ready-docker"),
            "--host-ip",
            "127.0.0.1",
            "--ttl",
            "3s",
            "--log-format",
            "json",
        ],
        &[("DOCKER_HOST", &endpoint)],
    );
    let admin = agent.admin();
    let ready = |what: &str| {
        berth_e2e::agent::eventually(
            what,
            SETTLE * 3,
            || admin.ready().map(|_| ()),
            || agent.log_tail(30),
        )
    };
    ready("ready through the relay");
    drop(cut);
    let reason = berth_e2e::agent::eventually(
        "/readyz 503 while docker is cut",
        SETTLE,
        || match admin.ready() {
            Err(e) if e.starts_with("503 docker unavailable") => Ok(e),
            other => Err(format!("{other:?}")),
        },
        || agent.log_tail(30),
    );
    assert_eq!(reason.lines().count(), 1, "{reason}");
    assert_eq!(admin.get("/healthz").unwrap().0, 200);
    let _back = relay(port);
    ready("ready again after the relay is back");
}

berth_e2e::backend_tests!(
    readiness_follows_the_registry,
    metrics_count_a_container_start_and_stop
);

/// The sample alert rules pass `promtool check rules`, and `docs/operations.md` shows them
/// as they are in the file.
#[test]
fn sample_alert_rules_are_valid_and_documented() {
    let rules = workspace_root().join("docs").join("berth-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (scripts/install-deps.sh installs Debian's prometheus package)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("SUCCESS: 4 rules found"), "{said}");
    let doc = std::fs::read_to_string(workspace_root().join("docs").join("operations.md")).unwrap();
    let text = std::fs::read_to_string(&rules).unwrap();
    assert!(
        doc.contains(&text),
        "docs/operations.md shows docs/berth-alerts.yml verbatim"
    );
}
