//! The registry contract: what berth guarantees whichever registry it writes to, run end to
//! end against both — the `berth` binary, the real Docker engine, and a real Consul dev
//! agent (`consul::…`) or a real etcd (`etcd::…`).
//!
//! Each scenario is written once as a function of the backend [`Kind`] and instantiated for
//! both by `berth_e2e::backend_tests!` at the bottom. Each test has its own registry (and,
//! for etcd, its own key prefix), its own agent (unique `--node-name`) and its own service names, so tests run
//! in parallel even though every agent sees every container on the engine. State is read
//! through [`berth_e2e::backend::Backend::instances`] after every step, polling with generous
//! timeouts (this suite checks behaviour; latency is measured elsewhere) except where the
//! contract itself is a time bound. A failing step panics with what it saw, the registry's
//! state and the agents' log tails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use berth_e2e::agent::lookup_json as lookup;
use berth_e2e::backend::{Backend, Kind, show};
use berth_e2e::docker::{self, Container, Network};
use berth_e2e::env::{Env, Expect, SETTLE, TTL, check_gone, check_one, httpd_labelled};
use serde_json::Value;

/// A labelled container with a published port: one passing instance, kept alive (Consul's
/// TTL check heartbeated, etcd's lease kept alive) well past the TTL.
fn registers_published_port(kind: Kind) {
    let mut env = Env::new("register", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);
    let node = env.node.clone();
    env.hold(
        "one passing instance",
        TTL * 2 + Duration::from_secs(1),
        |b| check_one(b, &node, &want),
    );
}

/// stop → gone; start → back (maybe on a new host port); restart → still exactly one, and
/// never two at once.
fn follows_stop_start_restart(kind: Kind) {
    let mut env = Env::new("lifecycle", kind);
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
    env.wait("one passing instance after restart", SETTLE, |b| {
        let found = b.instances(&name)?;
        most = most.max(found.len());
        check_one(b, &node, &want)
    });
    if most > 1 {
        env.fail(&format!(
            "saw {most} instances of {name} during the restart"
        ));
    }
    env.hold("one passing instance after restart", TTL, |b| {
        check_one(b, &node, &want)
    });
}

/// `docker kill` → gone; `docker rm -f` of a running container → gone.
fn follows_kill_and_forced_remove(kind: Kind) {
    let mut env = Env::new("killrm", kind);
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

/// pause → gone, and it stays gone; unpause → back.
fn paused_containers_are_not_registered(kind: Kind) {
    let mut env = Env::new("pause", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    ctr.pause();
    env.expect_gone(&name);
    // It stays gone (a resync or heartbeat must not bring back a paused container).
    env.hold("no instance while paused", TTL, |b| check_gone(b, &name));

    ctr.unpause();
    env.expect_one(&want);
}

/// `--internal --network <net>`: registered with the IP on <net> only while attached.
fn internal_mode_follows_network_connect_and_disconnect(kind: Kind) {
    let mut env = Env::new("internal", kind);
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
        |b| check_gone(b, &name),
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

/// SIGTERM leaves registrations; a new agent with the same node name removes the one whose
/// container was removed while no agent ran, and keeps exactly one of the other.
fn restarted_agent_reconciles_what_changed_while_down(kind: Kind) {
    let mut env = Env::new("agentrestart", kind);
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
    let left = env.backend.ids_of_node(&env.node);
    match left {
        Ok(ids) if ids.contains(&want_a.id) && ids.contains(&want_b.id) => {}
        other => env.fail(&format!(
            "SIGTERM without --deregister-on-exit must leave registrations; left: {other:?}"
        )),
    }

    a.rm();
    env.start_agent(&[]);
    env.expect_gone(&a_name);
    env.expect_one(&want_b);
    let node = env.node.clone();
    env.hold(
        "exactly one instance of B",
        TTL + Duration::from_secs(1),
        |b| check_one(b, &node, &want_b),
    );
}

/// The registry loses everything (Consul dev agent restarted; etcd restarted with its data
/// wiped): berth registers again.
fn reregisters_after_registry_restart(kind: Kind) {
    let mut env = Env::new("registryrestart", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    env.backend.restart();
    let node = env.node.clone();
    env.wait(
        "re-registration after the registry lost its state",
        Duration::from_secs(15),
        |b| check_one(b, &node, &want),
    );
}

/// A SIGKILLed agent cannot clean up; the TTL does. Consul: the instance's TTL check turns
/// critical (reaping it later is Consul's, tested in agent_consul.rs). etcd: the lease
/// expires and both keys vanish within TTL plus 2 s.
fn killed_agent_leaves_ttl_to_expire(kind: Kind) {
    let mut env = Env::new("kill9", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = httpd_labelled(env.test, &name);
    let want = env.published(&name, &ctr, 80);
    env.expect_one(&want);

    let killed = Instant::now();
    env.agent().kill9();
    match kind {
        Kind::Consul => {
            env.wait("the TTL check to turn critical", TTL + SETTLE, |b| {
                let found = b.instances(&name)?;
                match found.iter().find(|f| f.id == want.id) {
                    Some(f) if f.status == "critical" => Ok(()),
                    _ => Err(show(&found)),
                }
            });
        }
        Kind::Etcd => {
            // Still there right after the kill: what follows measures the lease expiring,
            // not something the agent did on its way out. (The agent also registered other
            // tests' containers: it sees the whole engine. They share its lease.)
            let node = env.node.clone();
            match env.backend.ids_of_node(&node) {
                Ok(ids) if ids.contains(&want.id) => {}
                other => env.fail(&format!(
                    "right after kill -9, want the keys still present; ids of node: {other:?}"
                )),
            }
            // The contract: gone within TTL + 2 s. Polled every 100 ms, plus 1 s of slack
            // for the polling and the etcdctl round trips.
            let bound = TTL + Duration::from_secs(2);
            let deadline = bound + Duration::from_secs(1);
            env.wait("the keys to expire with the lease", deadline, |b| {
                let ids = b.ids_of_node(&node)?;
                let found = b.instances(&name)?;
                if ids.is_empty() && found.is_empty() {
                    Ok(())
                } else {
                    Err(format!("ids of node {ids:?}; instances {}", show(&found)))
                }
            });
            let took = killed.elapsed();
            if took > deadline {
                env.fail(&format!(
                    "keys vanished {took:?} after kill -9; the bound is {bound:?} (+1 s slack)"
                ));
            }
        }
    }
    drop(ctr);
}

/// `--deregister-on-exit`: everything of this node is gone by the time the process exits.
fn deregisters_on_exit_when_asked(kind: Kind) {
    let mut env = Env::new("deregexit", kind);
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
    // Read right after the exit. For Consul this is the agent's own state, which
    // deregistration writes synchronously (the catalog follows by anti-entropy a moment
    // later).
    let left = env.backend.ids_of_node(&env.node);
    if left != Ok(Vec::new()) {
        env.fail(&format!("still registered when berth exited: {left:?}"));
    }
    if !status.success() {
        env.fail(&format!("berth exited with {status} after SIGTERM"));
    }
    env.expect_gone(&a_name);
    env.expect_gone(&b_name);
}

/// registrator's conventions: `SERVICE_NAME` from env, labels over env, image-derived names
/// per port, `SERVICE_IGNORE`.
fn registrator_compatible_naming(kind: Kind) {
    let mut env = Env::new("registrator", kind);
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
    if let Err(e) = check_gone(&env.backend, &loser) {
        env.fail(&format!("the env SERVICE_NAME must lose to the label: {e}"));
    }

    // No name: `<image base name>-<port>` for each of several ports. Other tests' agents
    // write to their own registries, but filter on this container anyway.
    let node = env.node.clone();
    for port in [80u16, 81] {
        let name = format!("berth-test-busybox-{port}");
        let id = format!("{node}:{}:{port}", two_ports.name);
        let host_port = two_ports.host_port(port);
        env.wait(&format!("{id} as {name}"), SETTLE, |b| {
            let found = b.instances(&name)?;
            let mine: Vec<_> = found
                .iter()
                .filter(|f| f.container_id == two_ports.id)
                .collect();
            match mine.as_slice() {
                [f] if f.id == id && f.port == host_port && f.status == "passing" => Ok(()),
                _ => Err(format!("instances of {name}: {}", show(&found))),
            }
        });
    }

    // SERVICE_IGNORE: it was started first, so the agent has long seen it.
    env.hold(
        "nothing for the ignored container",
        Duration::from_secs(2),
        |b| {
            let ids = b.ids_of_container(&ignored.id)?;
            let found = b.instances(&ignored_name)?;
            if ids.is_empty() && found.is_empty() {
                Ok(())
            } else {
                Err(format!("registered: {ids:?} {}", show(&found)))
            }
        },
    );
}

/// Docker 20.10 may give a port's IPv4 (`0.0.0.0`) and IPv6 (`[::]`) bindings different
/// host ports (it does whenever containers start concurrently). With an IPv4 `--host-ip`
/// only the IPv4 binding reaches the container: `127.0.0.1:<v6 port>` is closed, or is
/// another container's. Pinned here with explicit ports so it does not depend on timing.
fn ipv6_binding_port_is_not_advertised_on_the_ipv4_host_ip(kind: Kind) {
    let mut env = Env::new("v4v6", kind);
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

/// A UDP port's id ends in `:udp`.
fn udp_port_id_has_udp_suffix(kind: Kind) {
    let mut env = Env::new("udp", kind);
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

/// What `berth lookup` must print for the one instance `e` with health `status`.
fn lookup_shows(found: &[Value], node: &str, e: &Expect, status: &str) -> Result<(), String> {
    match found {
        [v] if v["id"] == e.id.as_str()
            && v["name"] == e.name.as_str()
            && v["address"] == e.address.as_str()
            && v["port"] == e.port
            && v["node"] == node
            && v["container_id"] == e.container_id.as_str()
            && v["container_name"] == e.container_name.as_str()
            && v["status"] == status
            && v["output"]
                .as_str()
                .is_some_and(|o| o.contains("HEALTHCHECK")) =>
        {
            Ok(())
        }
        other => Err(format!("want {} {status} from {node}, got {other:?}", e.id)),
    }
}

/// Health follows the container's Docker HEALTHCHECK in the registry (critical while starting
/// or unhealthy, passing when healthy), and `berth lookup` reports it and filters on it.
fn docker_healthcheck_drives_health_and_lookup(kind: Kind) {
    let mut env = Env::new("dockerhealth", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = Container::httpd(
        env.test,
        &[
            "-l",
            &format!("SERVICE_NAME={name}"),
            "-p",
            "80",
            "--health-cmd",
            "test -f /healthy",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    );
    let want = env.published(&name, &ctr, 80);
    let node = env.node.clone();
    let registry = env.backend.registry_args();
    let status_is = |b: &Backend, status: &str| -> Result<(), String> {
        match b.instances(&want.name)?.as_slice() {
            [f] if f.id == want.id && f.status == status => Ok(()),
            other => Err(format!("want one {status} {}: {}", want.id, show(other))),
        }
    };

    env.wait("the instance registered, critical", SETTLE, |b| {
        status_is(b, "critical")
    });
    env.wait(
        "lookup shows it critical, --passing hides it",
        SETTLE,
        |_| {
            lookup_shows(&lookup(&registry, &name, false)?, &node, &want, "critical")?;
            match lookup(&registry, &name, true)?.as_slice() {
                [] => Ok(()),
                other => Err(format!("--passing printed {other:?}")),
            }
        },
    );

    docker::docker(&["exec", &ctr.id, "touch", "/healthy"]);
    env.wait("the instance passing once healthy", SETTLE, |b| {
        status_is(b, "passing")
    });
    env.wait("lookup --passing shows it", SETTLE, |_| {
        lookup_shows(&lookup(&registry, &name, true)?, &node, &want, "passing")
    });

    docker::docker(&["exec", &ctr.id, "rm", "/healthy"]);
    env.wait("the instance critical again once unhealthy", SETTLE, |b| {
        status_is(b, "critical")
    });
    env.wait(
        "lookup --passing hides it again",
        SETTLE,
        |_| match lookup(&registry, &name, true)?.as_slice() {
            [] => Ok(()),
            other => Err(format!("--passing printed {other:?}")),
        },
    );
}

berth_e2e::backend_tests!(
    registers_published_port,
    follows_stop_start_restart,
    follows_kill_and_forced_remove,
    paused_containers_are_not_registered,
    internal_mode_follows_network_connect_and_disconnect,
    restarted_agent_reconciles_what_changed_while_down,
    reregisters_after_registry_restart,
    killed_agent_leaves_ttl_to_expire,
    deregisters_on_exit_when_asked,
    registrator_compatible_naming,
    ipv6_binding_port_is_not_advertised_on_the_ipv4_host_ip,
    udp_port_id_has_udp_suffix,
    docker_healthcheck_drives_health_and_lookup,
);
