//! `berth explain`, end to end: the real binary inspects real containers on the real Docker
//! engine, under the same flags as `berth run`, and what it says agrees with what `berth
//! run` then registers in a real Consul.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_e2e::agent::{Agent, berth_once};
use berth_e2e::consul::ConsulServer;
use berth_e2e::docker::{self, Container, Network};
use berth_e2e::env::SETTLE;
use serde_json::Value;

const NODE: &str = "explain-node";

/// `berth explain <container> <flags…>`: the exit status and stdout; panics on stderr output
/// when it succeeds.
fn explain(container: &str, flags: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "explain",
        container,
        "--node-name",
        NODE,
        "--host-ip",
        "127.0.0.1",
    ];
    args.extend_from_slice(flags);
    let (status, out, err) = berth_once(&args, &[], Duration::from_secs(30));
    (status.code().unwrap_or(-1), out, err)
}

/// `berth explain --json`, parsed.
fn explain_json(container: &str, flags: &[&str]) -> Value {
    let mut flags = flags.to_vec();
    flags.push("--json");
    let (code, out, err) = explain(container, &flags);
    assert_eq!(code, 0, "explain {container} {flags:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain printed {out:?}: {e}"))
}

fn instances(e: &Value) -> &Vec<Value> {
    e["instances"].as_array().unwrap()
}

fn note_keys(e: &Value) -> Vec<String> {
    e["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["key"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn httpd(opts: &[&str]) -> Container {
    Container::httpd("explain", opts)
}

/// The default mode, several ports, an IPv6 binding, registrator env against labels, a bad
/// label, an ignored container and a stopped one: each says what it registers and why, in
/// text and JSON.
#[test]
fn explains_each_kind_of_container() {
    // Default: one published port at the host IP.
    let plain = httpd(&[
        "-l",
        "SERVICE_NAME=shop",
        "-l",
        "SERVICE_TAGS=a,b",
        "-p",
        "80",
    ]);
    let e = explain_json(&plain.name, &[]);
    assert_eq!(e["mode"], "published");
    assert_eq!(e["registers"], true);
    assert_eq!(e["container"]["id"], plain.id.as_str());
    let i = &instances(&e)[0];
    assert_eq!(i["id"], format!("{NODE}:{}:80", plain.name).as_str());
    assert_eq!(i["name"], "shop");
    assert_eq!(i["address"], "127.0.0.1");
    assert_eq!(i["port"], plain.host_port(80));
    assert_eq!(i["tags"], serde_json::json!(["a", "b"]));
    let rule = i["address_rule"].as_str().unwrap();
    assert!(
        rule.contains(&format!("binding 0.0.0.0:{}", plain.host_port(80)))
            && rule.contains("--host-ip"),
        "{rule}"
    );
    // By short id too, and as text.
    let (code, text, err) = explain(&plain.id[..12], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("registers 1 instance:"), "{text}");
    assert!(
        text.contains(&format!("  {NODE}:{}:80", plain.name)),
        "{text}"
    );
    assert!(text.contains("    name     shop"), "{text}");
    assert!(
        text.contains(&format!("    port     {}", plain.host_port(80))),
        "{text}"
    );
    assert!(
        text.contains("    address  127.0.0.1  (binding 0.0.0.0:"),
        "{text}"
    );
    assert!(text.contains("    tags     a, b"), "{text}");
    assert!(
        text.contains(
            "drain on stop: on SIGTERM the instances turn critical until the container exits (at most 10s)"
        ),
        "{text}"
    );

    // Several ports, one with a check, and autoheal.
    let multi = httpd(&[
        "-l",
        "SERVICE_NAME=multi",
        "-l",
        "SERVICE_81_CHECK_TCP=true",
        "-l",
        "SERVICE_81_CHECK_INTERVAL=7s",
        "-l",
        "berth.autoheal=true",
        "--stop-signal",
        "SIGQUIT",
        "--stop-timeout",
        "30",
        "-p",
        "80",
        "-p",
        "81",
    ]);
    let e = explain_json(&multi.name, &[]);
    let ids: Vec<&str> = instances(&e)
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let want = [
        format!("{NODE}:{}:80", multi.name),
        format!("{NODE}:{}:81", multi.name),
    ];
    assert_eq!(ids, want, "{e:#}");
    assert_eq!(e["autoheal"], true);
    // Drained on its own stop signal, for its own stop timeout.
    assert_eq!(e["drain"]["signal"], "SIGQUIT", "{e:#}");
    assert_eq!(e["drain"]["stop_timeout"], "30s", "{e:#}");
    let checked = &instances(&e)[1];
    assert_eq!(checked["port"], multi.host_port(81));
    let check = &checked["checks"][0];
    assert_eq!(check["kind"], "tcp", "{checked:#}");
    assert_eq!(check["interval"], "7s");
    assert!(
        check["target"]
            .as_str()
            .unwrap()
            .starts_with("TCP connect 172."),
        "{check:#}"
    );
    assert!(instances(&e)[0]["checks"].as_array().unwrap().is_empty());

    // An IPv6 binding registers the binding's own address.
    let v6 = httpd(&["-l", "SERVICE_NAME=six", "-p", "[::1]::80"]);
    let e = explain_json(&v6.name, &[]);
    let i = &instances(&e)[0];
    assert_eq!(i["address"], "::1", "{e:#}");
    assert_eq!(i["port"], v6.host_port(80));
    assert!(
        i["address_rule"]
            .as_str()
            .unwrap()
            .starts_with("binding [::1]:"),
        "{i:#}"
    );

    // registrator's env keys work, and labels win over env.
    let env_only = httpd(&["-e", "SERVICE_NAME=fromenv", "-p", "80"]);
    assert_eq!(
        instances(&explain_json(&env_only.name, &[]))[0]["name"],
        "fromenv"
    );
    let both = httpd(&[
        "-e",
        "SERVICE_NAME=fromenv",
        "-l",
        "SERVICE_NAME=fromlabel",
        "-p",
        "80",
    ]);
    assert_eq!(
        instances(&explain_json(&both.name, &[]))[0]["name"],
        "fromlabel"
    );

    // A bad label: nothing registers, and the warning names the key.
    let bad = httpd(&["-l", "berth.name=!!!", "-p", "80"]);
    let e = explain_json(&bad.name, &[]);
    assert_eq!(e["registers"], false);
    assert_eq!(e["skipped"], "invalid_labels");
    assert!(note_keys(&e).contains(&"berth.name".to_owned()), "{e:#}");
    let (_, text, _) = explain(&bad.name, &[]);
    assert!(
        text.contains("registers nothing (invalid_labels)"),
        "{text}"
    );
    assert!(
        text.contains("warning label berth.name=\"!!!\": not usable"),
        "{text}"
    );

    // Ignored, and stopped.
    let ignored = httpd(&["-l", "SERVICE_IGNORE=true", "-p", "80"]);
    let e = explain_json(&ignored.name, &[]);
    assert_eq!(e["skipped"], "ignored");
    assert!(note_keys(&e).contains(&"SERVICE_IGNORE".to_owned()));
    let stopped = httpd(&["-l", "SERVICE_NAME=gone", "-p", "80"]);
    stopped.stop();
    let e = explain_json(&stopped.name, &[]);
    assert_eq!(e["skipped"], "not_running", "{e:#}");
    assert_eq!(e["container"]["running"], false);

    // No such container: exit 1, one line.
    let (code, out, err) = explain("berth-e2e-no-such-container", &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        err.trim(),
        "berth: no such container: berth-e2e-no-such-container"
    );
}

/// `--internal` with `--network`, the `berth.network` label, `--explicit` and host
/// networking change the answer as they change what `run` does.
#[test]
fn flags_change_the_answer_as_they_change_run() {
    let net = Network::create("explain");
    let c = httpd(&["-l", "SERVICE_NAME=inner", "-p", "80"]);
    c.connect(&net.name);
    // Published by default.
    let e = explain_json(&c.name, &[]);
    assert_eq!(instances(&e)[0]["address"], "127.0.0.1");
    // Internal: two networks and none chosen registers nothing, with the reason.
    let e = explain_json(&c.name, &["--internal"]);
    assert_eq!(e["mode"], "internal");
    assert_eq!(e["skipped"], "no_network", "{e:#}");
    // Internal on a named network: the container IP there, and the port inside.
    let e = explain_json(&c.name, &["--internal", "--network", &net.name]);
    let i = &instances(&e)[0];
    assert_eq!(i["address"], c.ip_on(&net.name).as_str(), "{e:#}");
    assert_eq!(i["port"], 80);
    assert_eq!(
        i["address_rule"],
        format!("container IP on network {0} (--network {0})", net.name).as_str()
    );
    // Explicit: no service-name label on this one.
    let unnamed = httpd(&["-p", "80"]);
    assert_eq!(explain_json(&unnamed.name, &[])["registers"], true);
    let e = explain_json(&unnamed.name, &["--explicit"]);
    assert_eq!(e["skipped"], "explicit", "{e:#}");
    // The same setting from a config file, as `run` reads it.
    let dir = berth_e2e::temp_dir("berth-e2e-explain");
    let file = dir.join("berth.toml");
    std::fs::write(&file, "explicit = true\n").unwrap();
    let e = explain_json(&unnamed.name, &["--config", file.to_str().unwrap()]);
    assert_eq!(e["skipped"], "explicit", "{e:#}");

    // Host network: the exposed port at the host IP.
    let port = berth_e2e::free_port();
    let host = Container::run(
        "explain",
        &[
            "--network",
            "host",
            "--expose",
            &port.to_string(),
            "-l",
            "SERVICE_NAME=onhost",
            docker::image(),
            "sh",
            "-c",
            &format!("trap 'exit 0' TERM; httpd -f -p {port} & wait"),
        ],
    );
    let e = explain_json(&host.name, &[]);
    assert_eq!(e["mode"], "host network");
    let i = &instances(&e)[0];
    assert_eq!(i["port"], port);
    assert_eq!(i["address"], "127.0.0.1");
    assert!(
        i["address_rule"]
            .as_str()
            .unwrap()
            .starts_with("host network: host IP (--host-ip)")
    );
}

/// What `explain --json` says each container registers is what `berth run` registers in
/// Consul: ids, names, addresses, ports, tags and user meta.
#[test]
fn explain_agrees_with_what_run_registers() {
    let consul = ConsulServer::start();
    let svc = format!("agree-{}", docker::random_hex(5));
    let a = httpd(&[
        "-l",
        &format!("SERVICE_NAME={svc}"),
        "-l",
        "SERVICE_TAGS=x,y",
        "-l",
        "berth.meta.team=core",
        "-p",
        "80",
        "-p",
        "81",
    ]);
    let b = httpd(&["-e", &format!("SERVICE_NAME={svc}"), "-p", "[::1]::80"]);
    let explained: Vec<Value> = [&a, &b]
        .iter()
        .flat_map(|c| instances(&explain_json(&c.name, &[])).clone())
        .collect();
    assert_eq!(explained.len(), 3);

    let agent = Agent::spawn(&[
        "run",
        "--consul-addr",
        &consul.addr(),
        "--node-name",
        NODE,
        "--host-ip",
        "127.0.0.1",
        "--ttl",
        "3s",
        "--log-format",
        "json",
    ]);
    let ids: Vec<&str> = explained
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    // With several ports, registrator's rule appends the port to SERVICE_NAME: explain
    // says so, and run does it.
    let names: Vec<&str> = explained
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [format!("{svc}-80"), format!("{svc}-81"), svc.clone()]
    );
    let mine = || -> Vec<Value> {
        let all = consul.get("/v1/agent/services").unwrap_or_default();
        all.as_object()
            .map(|o| {
                o.values()
                    .filter(|s| ids.iter().any(|id| s["ID"] == *id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let services = berth_e2e::agent::eventually(
        "run's registrations",
        SETTLE * 2,
        || {
            let got = mine();
            (got.len() == 3)
                .then_some(got.clone())
                .ok_or(format!("{got:#?}"))
        },
        || agent.log_tail(30),
    );
    for want in &explained {
        let id = want["id"].as_str().unwrap();
        let got = services.iter().find(|s| s["ID"] == id).unwrap_or_else(|| {
            panic!("{id} not registered; {services:#?}\n{}", agent.log_tail(20))
        });
        assert_eq!(got["Service"], want["name"], "{id}");
        assert_eq!(got["Address"], want["address"], "{id}");
        assert_eq!(got["Port"], want["port"], "{id}");
        let tags = got["Tags"].as_array().cloned().unwrap_or_default();
        assert_eq!(Value::Array(tags), want["tags"], "{id}");
        for (k, v) in want["meta"].as_object().unwrap() {
            assert_eq!(&got["Meta"][k], v, "{id} meta {k}");
        }
    }
}
