//! End to end, Consul only: the `berth` binary against the real Docker engine and a real
//! Consul dev agent, for what only Consul has (foreign services in the same agent, reaping
//! after `--deregister-critical-after`, an independent health client) and for the binary's
//! own behaviour (log format, exit codes, `--version`), plus the harness itself.
//!
//! The registry contract, which Consul and etcd both meet, is in `contract.rs`. As there,
//! each test has its own Consul, its own agent (unique `--node-name`) and its own service
//! names, and a failing step panics with what it saw, Consul's agent state and the agent's
//! log tail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use berth_e2e::agent::{berth_once, standard_args};
use berth_e2e::backend::{Backend, Kind, show};
use berth_e2e::consul::ConsulServer;
use berth_e2e::docker::{self, Container, Network, http_status_line, random_hex, unique_name};
use berth_e2e::env::{Env, SETTLE, TTL, check_gone, httpd_labelled};
use serde_json::{Value, json};

/// `--deregister-critical-after 1m`, plus Consul's 30 s reaper period, plus slack.
const REAP: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------------------------------
// The harness itself (needs no agent).

#[test]
fn harness_image_builds_and_published_port_answers_http() {
    let img = docker::image();
    assert_eq!(img, "berth-test-busybox:latest");
    let ctr = Container::httpd("harness", &["-p", "80"]);
    assert!(ctr.name.starts_with("berth-e2e-harness-"), "{}", ctr.name);
    assert_eq!(ctr.id.len(), 64, "full container id: {}", ctr.id);
    assert_eq!(ctr.status(), "running");
    let port = ctr.host_port(80);
    let line = berth_e2e::wait_for("httpd answers", SETTLE, || http_status_line(port));
    assert!(line.starts_with("HTTP/1."), "status line: {line}");
    // The test command exits on SIGTERM, so `docker stop` does not wait for its timeout.
    let t = Instant::now();
    ctr.stop();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "docker stop took {:?}",
        t.elapsed()
    );
    assert_eq!(ctr.status(), "exited");
    let other = Container::httpd("harness", &["-p", "80"]);
    assert_ne!(other.name, ctr.name);
}

#[test]
fn harness_network_guard_attaches_and_reports_ip() {
    let net = Network::create("harness");
    let ctr = Container::httpd("harness", &["--network", &net.name]);
    let ip = ctr.ip_on(&net.name);
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "ip on {}: {ip:?}",
        net.name
    );
    ctr.disconnect(&net.name);
    assert_eq!(ctr.ip_on(&net.name), "");
    drop(ctr);
    drop(net);
}

// ---------------------------------------------------------------------------------------
// The agent, Consul only.

/// A registered instance reads as passing through rs-consul's health client with
/// `?passing`: an independent client, so the assertion does not rest on berth's own Consul
/// code or on the harness's reader.
#[test]
fn registered_instance_is_passing_for_rs_consul() {
    let mut env = Env::new("rsconsul", Kind::Consul);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);
    let passing = env.backend.consul().passing(&name);
    if passing != [(want.id.clone(), want.address.clone(), want.port)] {
        env.fail(&format!("rs-consul ?passing: {passing:?}"));
    }
}

/// A SIGKILLed agent's TTL check goes critical (the contract suite checks that much), and
/// Consul then reaps the service after `--deregister-critical-after`.
#[test]
fn killed_agent_is_reaped_by_consul() {
    let mut env = Env::new("reap", Kind::Consul);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    env.agent().kill9();
    env.wait("the TTL check to turn critical", TTL + SETTLE, |b| {
        let found = b.instances(&name)?;
        match found.iter().find(|f| f.id == want.id) {
            Some(f) if f.status == "critical" => Ok(()),
            _ => Err(show(&found)),
        }
    });
    env.wait("Consul to reap the critical service", REAP, |b| {
        check_gone(b, &name)
    });
    drop(ctr);
}

/// Services berth does not own are never touched: not at start, not on resync, not on
/// `--deregister-on-exit` shutdown.
#[test]
fn leaves_foreign_services_alone() {
    let mut env = Env::new("foreign", Kind::Consul);
    let node = env.node.clone();
    let other_node = unique_name("other-node");
    let foreign = [
        // A plain service someone registered by hand.
        json!({"ID": format!("foreign-{}", random_hex(1)), "Name": env.svc("plain"),
               "Address": "127.0.0.1", "Port": 1234, "Tags": ["hand-made"]}),
        // Looks like one of ours by ID, but carries no berth meta.
        json!({"ID": format!("{node}:not-berth:80"), "Name": env.svc("lookalike"),
               "Address": "127.0.0.1", "Port": 1235}),
        // Managed by berth, but by another node's agent.
        json!({"ID": format!("{other_node}:c:80"), "Name": env.svc("othernode"),
               "Address": "127.0.0.2", "Port": 1236,
               "Meta": {"berth-managed": "true", "berth-node": other_node,
                        "berth-container-id": "0".repeat(64),
                        "berth-container-name": "c", "berth-image": "x"}}),
    ];
    for f in &foreign {
        env.backend.consul().put("/v1/agent/service/register", f);
    }
    let snapshot = |c: &ConsulServer| -> Vec<Value> {
        foreign
            .iter()
            .map(|f| {
                let id = f["ID"].as_str().unwrap();
                let s = c
                    .get(&format!("/v1/agent/service/{id}"))
                    .unwrap_or(Value::Null);
                json!([
                    s["ID"],
                    s["Service"],
                    s["Address"],
                    s["Port"],
                    s["Tags"],
                    s["Meta"]
                ])
            })
            .collect()
    };
    let before = snapshot(env.backend.consul());
    assert!(before.iter().all(|s| s[0] != Value::Null), "{before:?}");

    let name = env.svc("web");
    env.start_agent(&["--resync", "2s", "--deregister-on-exit"]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);
    // Several resync periods.
    env.hold(
        "foreign services unchanged",
        Duration::from_secs(7),
        |b: &Backend| {
            let now = snapshot(b.consul());
            if now == before {
                Ok(())
            } else {
                Err(format!("before: {before:?}\nnow: {now:?}"))
            }
        },
    );

    env.agent().terminate();
    env.expect_gone(&name);
    let after = snapshot(env.backend.consul());
    if after != before {
        env.fail(&format!(
            "foreign services changed by shutdown\nbefore: {before:?}\nafter: {after:?}"
        ));
    }
    for f in &foreign {
        let n = f["Name"].as_str().unwrap();
        if env.backend.consul().catalog(n).len() != 1 {
            env.fail(&format!("foreign service {n} missing from the catalog"));
        }
    }
}

/// `--log-format json`: every log line is one JSON object.
#[test]
fn json_log_format_writes_one_object_per_line() {
    let mut env = Env::new("jsonlog", Kind::Consul);
    let name = env.svc("web");
    env.start_agent(&["--log-format", "json"]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);
    env.agent().terminate();
    let log = env.agent().log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()))
        .collect();
    if log.trim().is_empty() || !bad.is_empty() {
        env.fail(&format!("non-JSON log lines: {bad:?}"));
    }
}

/// Bad configuration: exit code 64 and exactly one line on stderr.
#[test]
fn bad_config_exits_64_with_one_line() {
    let consul_addr = format!("http://127.0.0.1:{}", berth_e2e::free_port());
    let mut args = standard_args(&consul_addr, &unique_name("badconfig"));
    let ttl = args.iter().position(|a| a == "--ttl").unwrap();
    args[ttl + 1] = "banana".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = berth_once(&args, &["BERTH_LOG", "RUST_LOG"], SETTLE);
    assert_eq!(
        status.code(),
        Some(64),
        "berth {} → {status}; stderr:\n{stderr}",
        args.join(" "),
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line on stderr, got:\n{stderr}");
    assert!(
        lines[0].to_lowercase().contains("ttl"),
        "the line should name the bad setting: {}",
        lines[0]
    );
}

/// `berth --version` prints the package version.
#[test]
fn version_flag_prints_version() {
    let (status, stdout, stderr) = berth_once(&["--version"], &[], SETTLE);
    assert!(status.success(), "berth --version → {status}: {stderr}");
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")),
        "want version {} in: {stdout}",
        env!("CARGO_PKG_VERSION")
    );
}
