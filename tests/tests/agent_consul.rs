//! End to end: the `berth` binary against the real Docker engine and a real Consul dev agent.
//!
//! Each test has its own Consul, its own agent (unique `--node-name`) and its own service
//! names, so tests run in parallel even though every agent sees every container on the
//! engine. State is asserted through `/v1/health/service/<name>` and
//! `/v1/catalog/service/<name>` after every step, polling with generous timeouts: this suite
//! checks behaviour, latency is measured elsewhere. A failing step panics with what it saw,
//! Consul's agent state and the agent's log tail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use berth_e2e::agent::{Agent, berth_once, diagnose, standard_args};
use berth_e2e::consul::ConsulServer;
use berth_e2e::docker::{self, Container, Network, http_status_line, random_hex, unique_name};
use serde_json::{Value, json};

/// How long a registration may take to appear or disappear.
const SETTLE: Duration = Duration::from_secs(10);
/// The TTL every test agent uses (`--ttl 3s`).
const TTL: Duration = Duration::from_secs(3);
/// `--deregister-critical-after 1m`, plus Consul's 30 s reaper period, plus slack.
const REAP: Duration = Duration::from_secs(150);

/// One test's world: its Consul, its node name, its agents (current and retired, for logs).
struct Env {
    test: &'static str,
    node: String,
    consul: ConsulServer,
    agent: Option<Agent>,
    retired: Vec<Agent>,
}

/// What one registration must look like.
#[derive(Clone, Debug)]
struct Expect {
    name: String,
    id: String,
    address: String,
    port: u16,
    container_id: String,
    container_name: String,
}

impl Env {
    fn new(test: &'static str) -> Env {
        docker::image();
        Env {
            test,
            node: unique_name(test),
            consul: ConsulServer::start(),
            agent: None,
            retired: Vec::new(),
        }
    }

    /// A service name unique to this run: `<test>-<what>-<random>`.
    fn svc(&self, what: &str) -> String {
        format!("{}-{what}-{}", self.test.replace('_', "-"), random_hex(0))
    }

    /// Starts `berth run` with the standard arguments plus `extra`; a running agent is
    /// SIGKILLed first (tests that care terminate it themselves).
    fn start_agent(&mut self, extra: &[&str]) {
        self.retire();
        self.agent = Some(Agent::run(&self.consul, &self.node, extra));
    }

    /// Moves the current agent to the retired list (killing it if still running).
    fn retire(&mut self) {
        if let Some(mut a) = self.agent.take() {
            if a.exited().is_none() {
                a.kill9();
            }
            self.retired.push(a);
        }
    }

    fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("an agent is running")
    }

    fn diag(&mut self) -> String {
        let mut agents: Vec<&mut Agent> = self.retired.iter_mut().collect();
        if let Some(a) = self.agent.as_mut() {
            agents.push(a);
        }
        diagnose(&self.consul, &mut agents)
    }

    /// Panics with `msg` and the diagnostics.
    fn fail(&mut self, msg: &str) -> ! {
        let diag = self.diag();
        panic!("[{}] {msg}\n{diag}", self.test)
    }

    /// Polls `f` every 100 ms until `Ok`; on timeout fails with the last `Err` and diagnostics.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&ConsulServer) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            match f(&self.consul) {
                Ok(v) => return v,
                Err(last) if start.elapsed() > timeout => self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what}\nlast observed: {last}"
                )),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Asserts `f` stays `Ok` for the whole of `period`.
    fn hold(
        &mut self,
        what: &str,
        period: Duration,
        mut f: impl FnMut(&ConsulServer) -> Result<(), String>,
    ) {
        let start = Instant::now();
        while start.elapsed() < period {
            if let Err(e) = f(&self.consul) {
                self.fail(&format!(
                    "{what} stopped holding after {:?}: {e}",
                    start.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn expect_one(&mut self, e: &Expect) {
        let node = self.node.clone();
        self.wait(
            &format!("exactly one passing instance {} of {}", e.id, e.name),
            SETTLE,
            |c| check_one(c, &node, e),
        );
    }

    fn expect_gone(&mut self, name: &str) {
        self.wait(&format!("no instance of {name}"), SETTLE, |c| {
            check_gone(c, name)
        });
    }

    /// The registration expected for `ctr`'s published `port`/tcp under `name`.
    fn published(&self, name: &str, ctr: &Container, port: u16) -> Expect {
        Expect {
            name: name.to_string(),
            id: format!("{}:{}:{port}", self.node, ctr.name),
            address: "127.0.0.1".into(),
            port: ctr.host_port(port),
            container_id: ctr.id.clone(),
            container_name: ctr.name.clone(),
        }
    }
}

/// A compact form of health or catalog entries for messages: one line per instance with
/// its ID, address, port, container and service checks.
fn show(entries: &[Value]) -> String {
    if entries.is_empty() {
        return "[]".into();
    }
    let lines: Vec<String> = entries
        .iter()
        .map(|e| {
            // Health entries nest the service; catalog entries flatten it with a prefix.
            let (id, addr, port, meta) = if e["Service"].is_object() {
                let s = &e["Service"];
                (&s["ID"], &s["Address"], &s["Port"], &s["Meta"])
            } else {
                (
                    &e["ServiceID"],
                    &e["ServiceAddress"],
                    &e["ServicePort"],
                    &e["ServiceMeta"],
                )
            };
            let checks: Vec<String> = e["Checks"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c["ServiceID"] != "")
                        .map(|c| format!("{}={}", c["CheckID"], c["Status"]))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "\n    {id} @ {addr}:{port} node={} container={} checks=[{}]",
                meta["berth-node"],
                meta["berth-container-name"],
                checks.join(", ")
            )
        })
        .collect();
    lines.concat()
}

/// Exactly one instance of `e.name` in both the health and the catalog endpoints, matching
/// `e` in ID, address, port and meta, with its one TTL check passing.
fn check_one(c: &ConsulServer, node: &str, e: &Expect) -> Result<(), String> {
    let health = c.health(&e.name);
    let [entry] = health.as_slice() else {
        return Err(format!(
            "health has {} entries: {}",
            health.len(),
            show(&health)
        ));
    };
    let s = &entry["Service"];
    let want_meta = [
        ("berth-managed", "true"),
        ("berth-node", node),
        ("berth-container-id", e.container_id.as_str()),
        ("berth-container-name", e.container_name.as_str()),
        ("berth-image", docker::IMAGE),
    ];
    let mismatch = |what: &str| Err(format!("{what} differs in health entry: {}", show(&health)));
    if s["ID"] != e.id.as_str() {
        return mismatch(&format!("ID (want {})", e.id));
    }
    if s["Service"] != e.name.as_str() {
        return mismatch("Service");
    }
    if s["Address"] != e.address.as_str() {
        return mismatch(&format!("Address (want {})", e.address));
    }
    if s["Port"] != e.port {
        return mismatch(&format!("Port (want {})", e.port));
    }
    for (k, v) in want_meta {
        if s["Meta"][k] != v {
            return mismatch(&format!("Meta.{k} (want {v}, got {})", s["Meta"][k]));
        }
    }
    let checks: Vec<&Value> = entry["Checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|ch| ch["ServiceID"] == e.id.as_str())
                .collect()
        })
        .unwrap_or_default();
    let want_check = format!("service:{}", e.id);
    match checks.as_slice() {
        [ch] if ch["CheckID"] == want_check.as_str() && ch["Status"] == "passing" => {}
        _ => return mismatch(&format!("checks (want one {want_check}, passing)")),
    }
    let catalog = c.catalog(&e.name);
    let [cat] = catalog.as_slice() else {
        return Err(format!(
            "catalog has {} entries: {}",
            catalog.len(),
            show(&catalog)
        ));
    };
    if cat["ServiceID"] != e.id.as_str()
        || cat["ServiceAddress"] != e.address.as_str()
        || cat["ServicePort"] != e.port
        || cat["ServiceMeta"]["berth-container-id"] != e.container_id.as_str()
    {
        return Err(format!(
            "catalog entry differs from {e:?}: {}",
            show(&catalog)
        ));
    }
    Ok(())
}

/// No instance of `name` in either endpoint.
fn check_gone(c: &ConsulServer, name: &str) -> Result<(), String> {
    let health = c.health(name);
    let catalog = c.catalog(name);
    if health.is_empty() && catalog.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "health: {}; catalog: {}",
            show(&health),
            show(&catalog)
        ))
    }
}

/// IDs of the services in the Consul agent's local state whose meta names `container_id`.
fn agent_services_of(c: &ConsulServer, container_id: &str) -> Vec<String> {
    c.get("/v1/agent/services")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s["Meta"]["berth-container-id"] == container_id)
        .map(|(id, _)| id)
        .collect()
}

/// IDs of the services in the Consul agent's local state that carry `berth-node = node`.
fn berth_services_of_node(c: &ConsulServer, node: &str) -> Vec<String> {
    c.get("/v1/agent/services")
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, s)| s["Meta"]["berth-node"] == node)
        .map(|(id, _)| id)
        .collect()
}

fn httpd_labelled(test: &str, name: &str) -> Container {
    Container::httpd(test, &["-l", &format!("SERVICE_NAME={name}"), "-p", "80"])
}

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
// The agent.

/// 1. A labelled container with a published port: one passing instance, heartbeated past
///    the TTL.
#[test]
fn registers_published_port_with_ttl_check() {
    let mut env = Env::new("register");
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);
    // The same, seen through rs-consul's health client with `?passing`.
    assert_eq!(
        env.consul.passing(&name),
        [(want.id.clone(), want.address.clone(), want.port)]
    );
    // The heartbeat keeps the check passing well past one TTL.
    let node = env.node.clone();
    env.hold(
        "one passing instance",
        TTL * 2 + Duration::from_secs(1),
        |c| check_one(c, &node, &want),
    );
}

/// 2. stop → gone; start → back (maybe on a new host port); restart → still exactly one.
#[test]
fn follows_stop_start_restart() {
    let mut env = Env::new("lifecycle");
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    ctr.stop();
    env.expect_gone(&name);

    ctr.start();
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    ctr.restart();
    let want = env.published(&name, &ctr, 80);
    let mut most = 0;
    let node = env.node.clone();
    env.wait("one passing instance after restart", SETTLE, |c| {
        most = most.max(c.health(&name).len());
        check_one(c, &node, &want)
    });
    if most > 1 {
        env.fail(&format!(
            "saw {most} instances of {name} during the restart"
        ));
    }
    env.hold("one passing instance after restart", TTL, |c| {
        check_one(c, &node, &want)
    });
}

/// 3. `docker kill` → gone; `docker rm -f` of a running container → gone.
#[test]
fn follows_kill_and_forced_remove() {
    let mut env = Env::new("killrm");
    let (a_name, b_name) = (env.svc("a"), env.svc("b"));
    env.start_agent(&[]);
    let a = httpd_labelled(env.test, &a_name);
    let mut b = httpd_labelled(env.test, &b_name);
    let (want_a, want_b) = (
        env.published(&a_name, &a, 80),
        env.published(&b_name, &b, 80),
    );
    env.expect_one(&want_a);
    env.expect_one(&want_b);

    a.kill();
    env.expect_gone(&a_name);
    env.expect_one(&want_b);

    b.rm();
    env.expect_gone(&b_name);
    env.expect_gone(&a_name);
}

/// 4. pause → gone; unpause → back.
#[test]
fn paused_containers_are_not_registered() {
    let mut env = Env::new("pause");
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    ctr.pause();
    env.expect_gone(&name);
    // It stays gone (a resync or heartbeat must not bring back a paused container).
    env.hold("no instance while paused", TTL, |c| check_gone(c, &name));

    ctr.unpause();
    env.expect_one(&want);
}

/// 5. `--internal --network <net>`: registered with the IP on <net> only while attached.
#[test]
fn internal_mode_follows_network_connect_and_disconnect() {
    let mut env = Env::new("internal");
    let (name, sentinel_name) = (env.svc("web"), env.svc("sentinel"));
    let net = Network::create(env.test);
    env.start_agent(&["--internal", "--network", &net.name]);

    // On the default bridge only: not registered.
    let ctr = httpd_labelled(env.test, &name);
    // A container started later on <net> shows the agent has caught up with `ctr`'s start.
    let sentinel = Container::httpd(
        env.test,
        &[
            "-l",
            &format!("SERVICE_NAME={sentinel_name}"),
            "-p",
            "80",
            "--network",
            &net.name,
        ],
    );
    let want_sentinel = Expect {
        name: sentinel_name.clone(),
        id: format!("{}:{}:80", env.node, sentinel.name),
        address: sentinel.ip_on(&net.name),
        port: 80,
        container_id: sentinel.id.clone(),
        container_name: sentinel.name.clone(),
    };
    env.expect_one(&want_sentinel);
    env.hold(
        "no instance before network connect",
        Duration::from_secs(1),
        |c| check_gone(c, &name),
    );

    ctr.connect(&net.name);
    let want = Expect {
        name: name.clone(),
        id: format!("{}:{}:80", env.node, ctr.name),
        address: ctr.ip_on(&net.name),
        port: 80,
        container_id: ctr.id.clone(),
        container_name: ctr.name.clone(),
    };
    assert!(
        !want.address.is_empty(),
        "{} has no IP on {}",
        ctr.name,
        net.name
    );
    env.expect_one(&want);

    ctr.disconnect(&net.name);
    env.expect_gone(&name);
    env.expect_one(&want_sentinel);
    drop((ctr, sentinel));
}

/// 6. SIGTERM leaves registrations; a new agent with the same node name removes the one
///    whose container is gone and keeps exactly one of the other.
#[test]
fn restarted_agent_reconciles_what_changed_while_down() {
    let mut env = Env::new("agentrestart");
    let (a_name, b_name) = (env.svc("a"), env.svc("b"));
    env.start_agent(&[]);
    let mut a = httpd_labelled(env.test, &a_name);
    let b = httpd_labelled(env.test, &b_name);
    let (want_a, want_b) = (
        env.published(&a_name, &a, 80),
        env.published(&b_name, &b, 80),
    );
    env.expect_one(&want_a);
    env.expect_one(&want_b);

    env.agent().terminate();
    let left = berth_services_of_node(&env.consul, &env.node);
    if !(left.contains(&want_a.id) && left.contains(&want_b.id)) {
        env.fail(&format!(
            "SIGTERM without --deregister-on-exit must leave registrations; left: {left:?}"
        ));
    }

    a.rm();
    env.start_agent(&[]);
    env.expect_gone(&a_name);
    env.expect_one(&want_b);
    let node = env.node.clone();
    env.hold(
        "exactly one instance of B",
        TTL + Duration::from_secs(1),
        |c| check_one(c, &node, &want_b),
    );
}

/// 7. Consul restarted in dev mode forgets everything: berth registers again.
#[test]
fn reregisters_after_consul_restart() {
    let mut env = Env::new("consulrestart");
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    env.consul.restart();
    let node = env.node.clone();
    env.wait(
        "re-registration after the Consul restart",
        Duration::from_secs(15),
        |c| check_one(c, &node, &want),
    );
}

/// 8. SIGKILLed agent: the TTL check goes critical, then Consul reaps the service.
#[test]
fn killed_agent_leaves_ttl_to_expire_and_consul_to_reap() {
    let mut env = Env::new("kill9");
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    env.agent().kill9();
    let check_id = format!("service:{}", want.id);
    env.wait("the TTL check to turn critical", TTL + SETTLE, |c| {
        let health = c.health(&name);
        let status = health
            .iter()
            .flat_map(|e| e["Checks"].as_array().cloned().unwrap_or_default())
            .find(|ch| ch["CheckID"] == check_id.as_str())
            .map(|ch| ch["Status"].clone());
        match status {
            Some(s) if s == "critical" => Ok(()),
            other => Err(format!("check {check_id} status {other:?}")),
        }
    });
    env.wait("Consul to reap the critical service", REAP, |c| {
        check_gone(c, &name)
    });
    drop(ctr);
}

/// 9. `--deregister-on-exit`: everything of this node is gone by the time the process exits.
#[test]
fn deregisters_on_exit_when_asked() {
    let mut env = Env::new("deregexit");
    let (a_name, b_name) = (env.svc("a"), env.svc("b"));
    env.start_agent(&["--deregister-on-exit"]);
    let a = httpd_labelled(env.test, &a_name);
    let b = httpd_labelled(env.test, &b_name);
    let (want_a, want_b) = (
        env.published(&a_name, &a, 80),
        env.published(&b_name, &b, 80),
    );
    env.expect_one(&want_a);
    env.expect_one(&want_b);

    let status = env.agent().terminate();
    // Read right after the exit: the Consul agent's own state, which deregistration writes
    // synchronously (the catalog follows by anti-entropy a moment later).
    let left = berth_services_of_node(&env.consul, &env.node);
    if !left.is_empty() {
        env.fail(&format!("still registered when berth exited: {left:?}"));
    }
    if !status.success() {
        env.fail(&format!("berth exited with {status} after SIGTERM"));
    }
    env.expect_gone(&a_name);
    env.expect_gone(&b_name);
}

/// 10. Services berth does not own are never touched: not at start, not on resync, not on
///     `--deregister-on-exit` shutdown.
#[test]
fn leaves_foreign_services_alone() {
    let mut env = Env::new("foreign");
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
        env.consul.put("/v1/agent/service/register", f);
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
    let before = snapshot(&env.consul);
    assert!(before.iter().all(|s| s[0] != Value::Null), "{before:?}");

    let name = env.svc("web");
    env.start_agent(&["--resync", "2s", "--deregister-on-exit"]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);
    // Several resync periods.
    env.hold("foreign services unchanged", Duration::from_secs(7), |c| {
        let now = snapshot(c);
        if now == before {
            Ok(())
        } else {
            Err(format!("before: {before:?}\nnow: {now:?}"))
        }
    });

    env.agent().terminate();
    env.expect_gone(&name);
    let after = snapshot(&env.consul);
    if after != before {
        env.fail(&format!(
            "foreign services changed by shutdown\nbefore: {before:?}\nafter: {after:?}"
        ));
    }
    for f in &foreign {
        let n = f["Name"].as_str().unwrap();
        if env.consul.catalog(n).len() != 1 {
            env.fail(&format!("foreign service {n} missing from the catalog"));
        }
    }
}

/// 11. registrator's conventions: `SERVICE_NAME` from env, labels over env, image-derived
///     names per port, `SERVICE_IGNORE`.
#[test]
fn registrator_compatible_naming() {
    let mut env = Env::new("registrator");
    let env_name = env.svc("fromenv");
    let (loser, winner) = (env.svc("envloses"), env.svc("labelwins"));
    let ignored_name = env.svc("ignored");
    env.start_agent(&[]);

    let ignored = Container::httpd(
        env.test,
        &[
            "-l",
            "SERVICE_IGNORE=true",
            "-l",
            &format!("SERVICE_NAME={ignored_name}"),
            "-p",
            "80",
        ],
    );
    let from_env = Container::httpd(
        env.test,
        &["-e", &format!("SERVICE_NAME={env_name}"), "-p", "80"],
    );
    let both = Container::httpd(
        env.test,
        &[
            "-e",
            &format!("SERVICE_NAME={loser}"),
            "-l",
            &format!("SERVICE_NAME={winner}"),
            "-p",
            "80",
        ],
    );
    let two_ports = Container::run(
        env.test,
        &[
            "-p",
            "80",
            "-p",
            "81",
            docker::IMAGE,
            "sh",
            "-c",
            "trap 'exit 0' TERM; httpd -p 81; httpd -f -p 80 & wait",
        ],
    );

    let want = env.published(&env_name, &from_env, 80);
    env.expect_one(&want);
    let want = env.published(&winner, &both, 80);
    env.expect_one(&want);
    check_gone(&env.consul, &loser)
        .unwrap_or_else(|e| env.fail(&format!("the env SERVICE_NAME must lose to the label: {e}")));

    // No name: `<image base name>-<port>` for each of several ports. Other tests' agents
    // register into their own Consul, but filter on this container anyway.
    let node = env.node.clone();
    for port in [80u16, 81] {
        let name = format!("berth-test-busybox-{port}");
        let id = format!("{node}:{}:{port}", two_ports.name);
        let host_port = two_ports.host_port(port);
        env.wait(&format!("{id} as {name}"), SETTLE, |c| {
            let health = c.health(&name);
            let mine: Vec<&Value> = health
                .iter()
                .filter(|e| e["Service"]["Meta"]["berth-container-id"] == two_ports.id.as_str())
                .collect();
            match mine.as_slice() {
                [e] if e["Service"]["ID"] == id.as_str()
                    && e["Service"]["Port"] == host_port
                    && e["Checks"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|ch| ch["ServiceID"] == id.as_str() && ch["Status"] == "passing")
                    }) =>
                {
                    Ok(())
                }
                _ => Err(format!("entries for this container: {}", show(&health))),
            }
        });
    }

    // SERVICE_IGNORE: it was started first, so the agent has long seen it.
    env.hold(
        "nothing for the ignored container",
        Duration::from_secs(2),
        |c| {
            let ids = agent_services_of(c, &ignored.id);
            if ids.is_empty() && c.health(&ignored_name).is_empty() {
                Ok(())
            } else {
                Err(format!("registered: {ids:?}"))
            }
        },
    );
}

/// Docker 20.10 may give a port's IPv4 (`0.0.0.0`) and IPv6 (`[::]`) bindings different
/// host ports (it does whenever containers start concurrently). With an IPv4 `--host-ip`
/// only the IPv4 binding reaches the container: `127.0.0.1:<v6 port>` is closed, or is
/// another container's. Pinned here with explicit ports so it does not depend on timing.
#[test]
fn ipv6_binding_port_is_not_advertised_on_the_ipv4_host_ip() {
    let mut env = Env::new("v4v6");
    let name = env.svc("web");
    env.start_agent(&[]);
    let (p4, p6) = (berth_e2e::free_port(), berth_e2e::free_port());
    let ctr = Container::httpd(
        env.test,
        &[
            "-l",
            &format!("SERVICE_NAME={name}"),
            "-p",
            &format!("0.0.0.0:{p4}:80"),
            "-p",
            &format!("[::]:{p6}:80"),
        ],
    );
    let want = Expect {
        name: name.clone(),
        id: format!("{}:{}:80", env.node, ctr.name),
        address: "127.0.0.1".into(),
        port: p4,
        container_id: ctr.id.clone(),
        container_name: ctr.name.clone(),
    };
    env.expect_one(&want);
}

/// A UDP port's ID ends in `:udp`.
#[test]
fn udp_port_id_has_udp_suffix() {
    let mut env = Env::new("udp");
    let name = env.svc("dns");
    env.start_agent(&[]);
    let ctr = Container::run(
        env.test,
        &[
            "-l",
            &format!("SERVICE_NAME={name}"),
            "-p",
            "5353/udp",
            docker::IMAGE,
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 3600 & wait",
        ],
    );
    let want = Expect {
        name: name.clone(),
        id: format!("{}:{}:5353:udp", env.node, ctr.name),
        address: "127.0.0.1".into(),
        port: ctr.host_port_proto(5353, "udp"),
        container_id: ctr.id.clone(),
        container_name: ctr.name.clone(),
    };
    env.expect_one(&want);
}

/// `--log-format json`: every log line is one JSON object.
#[test]
fn json_log_format_writes_one_object_per_line() {
    let mut env = Env::new("jsonlog");
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

/// 12. Bad configuration: exit code 64 and exactly one line on stderr.
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
