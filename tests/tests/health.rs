//! Health probes and self-healing, end to end: the `berth` binary probes real containers on
//! the real Docker engine and reports through a real Consul dev agent or a real etcd.
//!
//! Like `contract.rs`, each scenario is written once as a function of the backend [`Kind`];
//! `berth_e2e::backend_tests!` at the bottom instantiates it for the backends it applies to. Probes run
//! every second (`interval 1s`), and every step waits with a generous deadline ([`PROBE`]):
//! this suite checks behaviour, not latency. Health outputs are matched on stable
//! substrings only (`HTTP GET`, `404`, `TCP connect`), never on timings.
//!
//! Every berth agent sees every container on the engine, so an agent running for one test
//! probes (and could self-heal) another test's containers. The self-healing scenarios
//! therefore hold [`ENGINE`] exclusively: no other agent of this binary runs meanwhile, so
//! every restart they observe is their own agent's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use berth_e2e::agent::{field, lookup_json as lookup};
use berth_e2e::backend::{Backend, Found, Kind, show};
use berth_e2e::docker::{self, Container, IMAGE};
use berth_e2e::env::{Env, Expect, SETTLE, TTL};
use serde_json::Value;

/// Deadline for a probe result to reach the registry: several 1 s intervals, the registry
/// write, and slack for a loaded 2-core machine.
const PROBE: Duration = Duration::from_secs(15);

/// Shared by every scenario whose agent must not act on other tests' containers'
/// restarts; taken exclusively by the self-healing scenarios.
static ENGINE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    ENGINE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    ENGINE.write().unwrap_or_else(|e| e.into_inner())
}

/// httpd serving `/` (busybox httpd's docroot is `/` in the test image), port 80 published
/// on a random host port, with `labels` (`key=value` each) and extra `docker run` options
/// `opts`. With `healthy`, `/health` exists from the start (and again after every restart:
/// the command creates it).
fn probed_httpd(test: &str, labels: &[String], opts: &[&str], healthy: bool) -> Container {
    let mut args: Vec<String> = Vec::new();
    for l in labels {
        args.extend(["-l".to_string(), l.clone()]);
    }
    args.extend(["-p".to_string(), "80".to_string()]);
    args.extend(opts.iter().map(|s| s.to_string()));
    args.push(IMAGE.to_string());
    let create = if healthy { "echo ok > /health; " } else { "" };
    args.extend([
        "sh".to_string(),
        "-c".to_string(),
        format!("trap 'exit 0' TERM; {create}httpd -f -p 80 & wait"),
    ]);
    Container::run(test, &args)
}

/// Makes `/health` answer 200 (`true`) or 404 (`false`).
fn set_health(ctr: &Container, healthy: bool) {
    let cmd = if healthy {
        "echo ok > /health"
    } else {
        "rm -f /health"
    };
    docker::docker(&["exec", &ctr.id, "sh", "-c", cmd]);
}

/// Labels of service `name` with registrator's HTTP check of `/health` every second.
fn http_checked(name: &str) -> Vec<String> {
    vec![
        format!("SERVICE_NAME={name}"),
        "SERVICE_CHECK_HTTP=/health".into(),
        "SERVICE_CHECK_INTERVAL=1s".into(),
    ]
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The one instance `e.id` of `e.name`, at `e.address:e.port`.
fn the_instance(b: &Backend, e: &Expect) -> Result<Found, String> {
    let found = b.instances(&e.name)?;
    match found.as_slice() {
        [f] if f.id == e.id && f.address == e.address && f.port == e.port => Ok(f.clone()),
        _ => Err(format!(
            "want exactly {} @ {}:{} in {}: {}",
            e.id,
            e.address,
            e.port,
            e.name,
            show(&found)
        )),
    }
}

/// `e` is the one instance of its service, with health `status` and an output containing
/// every one of `needles`. On Consul, additionally: the health check `service:<id>` has that
/// status and output, and berth's liveness check `service:<id>:ttl` is passing (a failing
/// probe must not make the instance look dead, or Consul would reap it).
///
/// Consul's catalog (what `/v1/health/service` and DNS read) takes a status change at once,
/// but an output-only change (the first probe result when it has the initial status) only
/// after the agent's `check_update_interval` (5 minutes by default), exactly as for Consul's
/// own checks. So on Consul the output is checked on the agent's check, not the catalog.
fn health_is(b: &Backend, e: &Expect, status: &str, needles: &[&str]) -> Result<Found, String> {
    let f = the_instance(b, e)?;
    let catalog_output_lags = matches!(b, Backend::Consul(_));
    if f.status != status || (!catalog_output_lags && !needles.iter().all(|n| f.output.contains(n)))
    {
        return Err(format!(
            "want status {status} with output containing {needles:?}: {f}"
        ));
    }
    if let Backend::Consul(c) = b {
        let checks = c
            .get("/v1/agent/checks")
            .ok_or("consul did not answer GET /v1/agent/checks")?;
        let (health_id, ttl_id) = (format!("service:{}", e.id), format!("service:{}:ttl", e.id));
        let health = &checks[health_id.as_str()];
        let ttl = &checks[ttl_id.as_str()];
        let out = health["Output"].as_str().unwrap_or_default();
        if health["Status"] != status || !needles.iter().all(|n| out.contains(n)) {
            return Err(format!(
                "want check {health_id} {status} with output containing {needles:?}, got {health}"
            ));
        }
        if ttl["Status"] != "passing" {
            return Err(format!(
                "want the liveness check {ttl_id} passing, got {ttl} (health check: {health})"
            ));
        }
    }
    Ok(f)
}

/// `berth lookup` prints exactly `e`, with `status` and an output containing `needles`.
fn lookup_is(found: &[Value], e: &Expect, status: &str, needles: &[&str]) -> Result<(), String> {
    match found {
        [v] if v["id"] == e.id.as_str()
            && v["status"] == status
            && v["output"]
                .as_str()
                .is_some_and(|o| needles.iter().all(|n| o.contains(n))) =>
        {
            Ok(())
        }
        other => Err(format!(
            "want {} {status} with output containing {needles:?}, got {other:?}",
            e.id
        )),
    }
}

/// An HTTP probe follows the endpoint: passing while `/health` answers 200, critical (output
/// naming the 404) once it is gone, passing again once it is back. While critical the
/// instance stays registered (heartbeats keep it alive, they do not overwrite its health),
/// and `berth lookup --passing` leaves it out.
fn http_probe_follows_the_endpoint(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("httpprobe", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = probed_httpd(env.test, &http_checked(&name), &[], true);
    let want = env.published(&name, &ctr, 80);
    let registry = env.backend.registry_args();
    env.expect_one(&want);
    env.wait("passing, from the HTTP probe", PROBE, |b| {
        health_is(b, &want, "passing", &["HTTP GET", "/health", "200"])
    });
    env.wait("lookup --passing shows it", SETTLE, |_| {
        lookup_is(
            &lookup(&registry, &name, true)?,
            &want,
            "passing",
            &["HTTP GET"],
        )
    });

    set_health(&ctr, false);
    env.wait("critical with the 404 once /health is gone", PROBE, |b| {
        health_is(b, &want, "critical", &["HTTP GET", "/health", "404"])
    });
    env.wait(
        "lookup shows it critical, --passing leaves it out",
        SETTLE,
        |_| {
            lookup_is(
                &lookup(&registry, &name, false)?,
                &want,
                "critical",
                &["404"],
            )?;
            match lookup(&registry, &name, true)?.as_slice() {
                [] => Ok(()),
                other => Err(format!("--passing printed {other:?}")),
            }
        },
    );
    // Past a TTL: still one registration, still critical (neither reaped and registered
    // again nor turned passing by a heartbeat).
    env.hold(
        "one critical instance while the probe fails",
        TTL + Duration::from_secs(1),
        |b| health_is(b, &want, "critical", &["404"]).map(|_| ()),
    );

    set_health(&ctr, true);
    env.wait("passing again once /health is back", PROBE, |b| {
        health_is(b, &want, "passing", &["HTTP GET", "200"])
    });
    env.wait("lookup --passing shows it again", SETTLE, |_| {
        lookup_is(&lookup(&registry, &name, true)?, &want, "passing", &["200"])
    });
}

/// `dig @127.0.0.1 -p <port> <name>.service.consul SRV +short`: the ports of the answers.
fn dig_srv_ports(dns_port: u16, name: &str) -> Result<BTreeSet<u16>, String> {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns_port.to_string(),
            &format!("{name}.service.consul"),
            "SRV",
            "+short",
            "+time=2",
            "+tries=1",
        ])
        .output()
        .map_err(|e| format!("running dig (install dnsutils: scripts/install-deps.sh): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("dig failed ({}): {text}", out.status));
    }
    // `<priority> <weight> <port> <target>.` per line.
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or_else(|| format!("unexpected SRV answer {l:?} in {text:?}"))
        })
        .collect()
}

/// Consul DNS answers with passing instances only: of two instances of one service, the one
/// whose probe fails drops out of the SRV answer, and comes back once it passes again.
fn dns_drops_a_failing_instance(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("dns", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let labels = http_checked(&name);
    let a = probed_httpd(env.test, &labels, &[], true);
    let b = probed_httpd(env.test, &labels, &[], true);
    let (want_a, want_b) = (env.published(&name, &a, 80), env.published(&name, &b, 80));
    let dns = env.backend.consul().dns_port;
    let both: BTreeSet<u16> = [want_a.port, want_b.port].into();

    env.wait("both instances passing", PROBE, |b| {
        let found = b.instances(&name)?;
        let passing: BTreeSet<&str> = found
            .iter()
            .filter(|f| f.status == "passing" && f.output.contains("HTTP GET"))
            .map(|f| f.id.as_str())
            .collect();
        if passing == [want_a.id.as_str(), want_b.id.as_str()].into() && found.len() == 2 {
            Ok(())
        } else {
            Err(show(&found))
        }
    });
    env.wait("DNS answers with both ports", SETTLE, |_| {
        let ports = dig_srv_ports(dns, &name)?;
        if ports == both {
            Ok(())
        } else {
            Err(format!("SRV ports {ports:?}, want {both:?}"))
        }
    });

    set_health(&a, false);
    env.wait("A critical", PROBE, |b| {
        let found = b.instances(&name)?;
        match found.iter().find(|f| f.id == want_a.id) {
            Some(f) if f.status == "critical" && found.len() == 2 => Ok(()),
            _ => Err(show(&found)),
        }
    });
    env.wait("DNS answers with B's port only", SETTLE, |_| {
        let ports = dig_srv_ports(dns, &name)?;
        if ports == [want_b.port].into() {
            Ok(())
        } else {
            Err(format!(
                "SRV ports {ports:?}, want only B's {} (A is {})",
                want_b.port, want_a.port
            ))
        }
    });

    set_health(&a, true);
    env.wait("DNS answers with both ports again", PROBE, |_| {
        let ports = dig_srv_ports(dns, &name)?;
        if ports == both {
            Ok(())
        } else {
            Err(format!("SRV ports {ports:?}, want {both:?}"))
        }
    });
}

/// A TCP probe passes on the port httpd listens on, and fails on a container port nothing
/// listens on (`berth.check.port=9`, not published: berth has to dial the container itself).
/// The registration stays on the published port 80 either way.
fn tcp_probe_on_open_and_closed_ports(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("tcpprobe", kind);
    let (open_name, closed_name) = (env.svc("open"), env.svc("closed"));
    env.start_agent(&[]);
    let open = probed_httpd(
        env.test,
        &[
            format!("SERVICE_NAME={open_name}"),
            "SERVICE_CHECK_TCP=true".into(),
            "SERVICE_CHECK_INTERVAL=1s".into(),
        ],
        &[],
        true,
    );
    let closed = probed_httpd(
        env.test,
        &[
            format!("SERVICE_NAME={closed_name}"),
            "berth.check.tcp=true".into(),
            "berth.check.port=9".into(),
            "berth.check.interval=1s".into(),
        ],
        &[],
        true,
    );
    let want_open = env.published(&open_name, &open, 80);
    let want_closed = env.published(&closed_name, &closed, 80);
    env.wait("the open port passing", PROBE, |b| {
        health_is(b, &want_open, "passing", &["TCP connect"])
    });
    env.wait("the closed port critical", PROBE, |b| {
        health_is(b, &want_closed, "critical", &["TCP connect"])
    });
    // A result, not a flicker: both stay as they are.
    env.hold("both results steady", Duration::from_secs(3), |b| {
        health_is(b, &want_open, "passing", &["TCP connect"])?;
        health_is(b, &want_closed, "critical", &["TCP connect"]).map(|_| ())
    });
}

/// A TCP probe of a registered port that is published but where nothing listens inside the
/// container fails. Docker's userland proxy accepts connections on the host port whatever
/// happens behind it, so a probe of the host address would wrongly pass.
fn tcp_probe_is_not_fooled_by_the_docker_proxy(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("tcpproxy", kind);
    let name = env.svc("nolistener");
    env.start_agent(&[]);
    // Publishes 80 (httpd) and 81 (nothing); only 81 registers.
    let ctr = probed_httpd(
        env.test,
        &[
            format!("SERVICE_NAME={name}"),
            "berth.port=81".into(),
            "SERVICE_CHECK_TCP=true".into(),
            "SERVICE_CHECK_INTERVAL=1s".into(),
        ],
        &["-p", "81"],
        true,
    );
    let want = Expect {
        name: name.clone(),
        id: format!("{}:{}:81", env.node, ctr.name),
        address: "127.0.0.1".into(),
        port: ctr.host_port(81),
        container_id: ctr.id.clone(),
        container_name: ctr.name.clone(),
    };
    env.wait(
        "the port with no listener critical (through docker-proxy the host port accepts)",
        PROBE,
        |b| health_is(b, &want, "critical", &["TCP connect"]),
    );
}

/// `docker inspect`'s `State.Health.Status` of `ctr`.
fn docker_health(ctr: &Container) -> String {
    docker::try_docker(&[
        "inspect",
        "--format",
        "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
        &ctr.id,
    ])
    .unwrap_or_else(|e| e)
}

/// An explicit probe replaces the container's Docker HEALTHCHECK: a healthy container whose
/// probe fails is critical, an unhealthy one whose probe passes is passing, and the output
/// is the probe's.
fn explicit_probe_overrides_docker_healthcheck(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("probevsdocker", kind);
    let (a_name, b_name) = (env.svc("dockerok"), env.svc("dockerbad"));
    env.start_agent(&[]);
    let health_opts = |cmd: &'static str| {
        [
            "--health-cmd",
            cmd,
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ]
    };
    // Docker says healthy, the probe fails.
    let a = probed_httpd(
        env.test,
        &http_checked(&a_name),
        &health_opts("true"),
        false,
    );
    // Docker says unhealthy, the probe passes.
    let b = probed_httpd(
        env.test,
        &http_checked(&b_name),
        &health_opts("test -f /nonexistent"),
        true,
    );
    let (want_a, want_b) = (
        env.published(&a_name, &a, 80),
        env.published(&b_name, &b, 80),
    );
    env.wait(
        "Docker to call A healthy and B unhealthy",
        PROBE,
        |_| match (docker_health(&a).as_str(), docker_health(&b).as_str()) {
            ("healthy", "unhealthy") => Ok(()),
            other => Err(format!("docker health of A, B: {other:?}")),
        },
    );
    env.wait("A critical from its probe despite Docker", PROBE, |bk| {
        health_is(bk, &want_a, "critical", &["HTTP GET", "404"])
    });
    env.wait("B passing from its probe despite Docker", PROBE, |bk| {
        health_is(bk, &want_b, "passing", &["HTTP GET", "200"])
    });
    env.hold("both follow their probes", Duration::from_secs(3), |bk| {
        health_is(bk, &want_a, "critical", &["HTTP GET"])?;
        health_is(bk, &want_b, "passing", &["HTTP GET"]).map(|_| ())
    });
}

/// berth's own check labels: several named checks on one service all have to pass (an HTTP
/// and a TCP check: the failing HTTP one makes the instance critical), and a check scoped
/// to a declared service (`berth.service.<svc>.check.*`) applies to it.
fn native_named_and_service_scoped_checks(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("namedchecks", kind);
    let (named, scoped) = (env.svc("named"), env.svc("scoped"));
    env.start_agent(&[]);
    let a = probed_httpd(
        env.test,
        &[
            format!("berth.name={named}"),
            "berth.check.page.http=/health".into(),
            "berth.check.page.interval=1s".into(),
            "berth.check.sock.tcp=true".into(),
            "berth.check.sock.interval=1s".into(),
        ],
        &[],
        true,
    );
    let b = probed_httpd(
        env.test,
        &[
            format!("berth.service.app.name={scoped}"),
            "berth.service.app.port=80".into(),
            "berth.service.app.check.http=/health".into(),
            "berth.service.app.check.interval=1s".into(),
        ],
        &[],
        true,
    );
    let (want_a, want_b) = (
        env.published(&named, &a, 80),
        env.published(&scoped, &b, 80),
    );
    env.wait("the named checks passing", PROBE, |bk| {
        health_is(bk, &want_a, "passing", &[])
    });
    env.wait("the service-scoped check passing", PROBE, |bk| {
        health_is(bk, &want_b, "passing", &["HTTP GET"])
    });

    set_health(&a, false);
    set_health(&b, false);
    env.wait(
        "critical once the named HTTP check fails (the TCP one still passes)",
        PROBE,
        |bk| health_is(bk, &want_a, "critical", &["404"]),
    );
    env.wait("the service-scoped check critical", PROBE, |bk| {
        health_is(bk, &want_b, "critical", &["HTTP GET", "404"])
    });

    set_health(&a, true);
    set_health(&b, true);
    env.wait("the named checks passing again", PROBE, |bk| {
        health_is(bk, &want_a, "passing", &[])
    });
    env.wait("the service-scoped check passing again", PROBE, |bk| {
        health_is(bk, &want_b, "passing", &["HTTP GET"])
    });
}

/// `fall` and `rise`: with a 2 s interval, `fall=3` cannot turn the instance critical sooner
/// than two intervals after the endpoint broke, and `rise=3` cannot turn it passing sooner
/// than two intervals after it recovered. With thresholds of 1 the change would show within
/// one interval, so each hold of 2.5 s fails when a threshold is ignored.
fn rise_and_fall_thresholds(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("thresholds", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = probed_httpd(
        env.test,
        &[
            format!("SERVICE_NAME={name}"),
            "berth.check.http=/health".into(),
            "berth.check.interval=2s".into(),
            "berth.check.fall=3".into(),
            "berth.check.rise=3".into(),
        ],
        &[],
        true,
    );
    let want = env.published(&name, &ctr, 80);
    env.wait("passing", PROBE + Duration::from_secs(5), |b| {
        health_is(b, &want, "passing", &["HTTP GET"])
    });

    set_health(&ctr, false);
    env.hold(
        "passing for 2.5 s after /health went away (fall=3, interval 2s)",
        Duration::from_millis(2500),
        |b| health_is(b, &want, "passing", &[]).map(|_| ()),
    );
    env.wait("critical after three failures", PROBE, |b| {
        health_is(b, &want, "critical", &["404"])
    });

    set_health(&ctr, true);
    env.hold(
        "critical for 2.5 s after /health came back (rise=3, interval 2s)",
        Duration::from_millis(2500),
        |b| health_is(b, &want, "critical", &[]).map(|_| ()),
    );
    env.wait("passing after three successes", PROBE, |b| {
        health_is(b, &want, "passing", &["200"])
    });
}

/// A restarted agent keeps a probed instance's registered health until its own probes
/// answer: the checks' initial status (critical) is not written over a passing instance
/// while the first probe is pending. With an 8 s interval the new agent's first probe comes
/// up to 8 s after it starts (a random share of the interval), so an agent that wrote its
/// initial status would show the instance critical for seconds within the 10 s hold.
fn a_restarted_agent_keeps_the_registered_health_until_its_probes_answer(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("restartkeep", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = probed_httpd(
        env.test,
        &[
            format!("SERVICE_NAME={name}"),
            "berth.check.http=/health".into(),
            "berth.check.interval=8s".into(),
        ],
        &[],
        true,
    );
    let want = env.published(&name, &ctr, 80);
    env.wait("passing", PROBE + Duration::from_secs(8), |b| {
        health_is(b, &want, "passing", &["HTTP GET"])
    });

    env.start_agent(&[]);
    env.hold(
        "passing throughout the new agent's start and first probe",
        Duration::from_secs(10),
        |b| health_is(b, &want, "passing", &[]).map(|_| ()),
    );
    // It does follow its probes: a broken endpoint turns it critical.
    set_health(&ctr, false);
    env.wait(
        "critical once /health is gone",
        PROBE + Duration::from_secs(8),
        |b| health_is(b, &want, "critical", &["404"]),
    );
}

/// `SERVICE_CHECK_DEREGISTER_AFTER`: an instance critical for longer is withdrawn from the
/// registry while its probe keeps running, and registered again, passing, once it recovers.
fn deregister_after_withdraws_until_it_passes(kind: Kind) {
    let _engine = shared();
    let mut env = Env::new("withdraw", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = probed_httpd(
        env.test,
        &[
            http_checked(&name),
            vec!["SERVICE_CHECK_DEREGISTER_AFTER=3s".into()],
        ]
        .concat(),
        &[],
        true,
    );
    let want = env.published(&name, &ctr, 80);
    env.wait("passing", PROBE, |b| {
        health_is(b, &want, "passing", &["HTTP GET"])
    });

    set_health(&ctr, false);
    env.wait("critical", PROBE, |b| {
        health_is(b, &want, "critical", &["404"])
    });
    env.wait("withdrawn after 3 s critical", PROBE, |b| {
        match b.instances(&name)?.as_slice() {
            [] => Ok(()),
            other => Err(show(other)),
        }
    });
    env.hold(
        "still withdrawn while it fails",
        Duration::from_secs(3),
        |b| match b.instances(&name)?.as_slice() {
            [] => Ok(()),
            other => Err(show(other)),
        },
    );

    set_health(&ctr, true);
    env.wait(
        "registered again, passing, once /health is back",
        PROBE,
        |b| health_is(b, &want, "passing", &["HTTP GET"]),
    );
}

/// `State.StartedAt` of `ctr`: it changes on every start, `docker restart` included (unlike
/// `RestartCount`).
fn started_at(ctr: &Container) -> Result<String, String> {
    docker::try_docker(&["inspect", "--format", "{{.State.StartedAt}}", &ctr.id])
}

/// Every distinct `State.StartedAt` seen so far, in order, per container.
#[derive(Debug)]
struct Starts {
    seen: Vec<Vec<String>>,
}

impl Starts {
    fn new(ctrs: &[&Container]) -> Starts {
        Starts {
            seen: ctrs
                .iter()
                .map(|c| vec![started_at(c).expect("docker inspect")])
                .collect(),
        }
    }

    /// Polls the containers; returns the number of restarts of each so far.
    fn poll(&mut self, ctrs: &[&Container]) -> Result<Vec<usize>, String> {
        for (seen, c) in self.seen.iter_mut().zip(ctrs) {
            let now = started_at(c)?;
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        Ok(self.seen.iter().map(|s| s.len() - 1).collect())
    }
}

/// What the agent logs for a self-healing restart, and once when the limit stops them.
const RESTARTING: &str = "autoheal restarting container";
const LIMIT_REACHED: &str =
    "autoheal restart limit reached; not restarting until the window moves on";

/// The agent's records about self-healing, as text lines for failure messages.
fn autoheal_lines(agent: &berth_e2e::agent::Agent) -> String {
    agent
        .records()
        .iter()
        .filter(|r| field(r, "message").contains("autoheal"))
        .map(|r| format!("\n    {}", berth_e2e::agent::render_line(&r.to_string())))
        .collect()
}

/// Self-healing with limits: a `berth.autoheal=true` container whose probe keeps failing is
/// restarted after `--autoheal-failures` failed probes, at most `--autoheal-max-restarts`
/// times in the window; then berth logs `autoheal: restart limit reached` once and restarts
/// it no more. A container without the label, failing the same way, is never restarted.
/// The restarts show on the instance's health output.
fn autoheal_restarts_up_to_the_limit(kind: Kind) {
    let _engine = exclusive();
    let mut env = Env::new("autoheal", kind);
    let (healed_name, plain_name) = (env.svc("healed"), env.svc("plain"));
    env.start_agent(&[
        "--autoheal-failures",
        "2",
        "--autoheal-cooldown",
        "2s",
        "--autoheal-max-restarts",
        "2",
        "--autoheal-window",
        "10m",
    ]);
    // No /health, ever (the command does not create it), so the probe fails after every
    // restart too.
    let mut healed_labels = http_checked(&healed_name);
    healed_labels.push("berth.autoheal=true".into());
    let healed = probed_httpd(env.test, &healed_labels, &[], false);
    let plain = probed_httpd(env.test, &http_checked(&plain_name), &[], false);
    let ctrs = [&healed, &plain];
    let mut starts = Starts::new(&ctrs);

    let check_plain = |restarts: &[usize]| -> Result<(), String> {
        if restarts[1] > 0 {
            Err(format!(
                "the container without berth.autoheal was restarted {} time(s)",
                restarts[1]
            ))
        } else {
            Ok(())
        }
    };

    let mut plain_error = None;
    env.wait(
        "two restarts of the autoheal container",
        Duration::from_secs(40),
        |_| {
            let n = starts.poll(&ctrs)?;
            if let Err(e) = check_plain(&n) {
                plain_error = Some(e);
                return Ok(());
            }
            if n[0] >= 2 {
                Ok(())
            } else {
                Err(format!("{} restart(s) so far", n[0]))
            }
        },
    );
    if let Some(e) = plain_error {
        env.fail(&e);
    }

    let limit_logged = |env: &mut Env| !env.agent().records_with(LIMIT_REACHED).is_empty();
    let start = Instant::now();
    while !limit_logged(&mut env) {
        if start.elapsed() > PROBE {
            env.fail(&format!("no {LIMIT_REACHED:?} record within {PROBE:?}"));
        }
        if let Err(e) = starts.poll(&ctrs).and_then(|n| check_plain(&n)) {
            env.fail(&e);
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // No third restart, of either, while the probe keeps failing for a while.
    env.hold(
        "no more restarts after the limit",
        Duration::from_secs(8),
        |_| {
            let n = starts.poll(&ctrs)?;
            check_plain(&n)?;
            if n[0] > 2 {
                Err(format!(
                    "restarted {} times, the limit is 2: StartedAt {:?}",
                    n[0], starts.seen[0]
                ))
            } else {
                Ok(())
            }
        },
    );

    let (restarts, limits) = (
        env.agent().records_with(RESTARTING),
        env.agent().records_with(LIMIT_REACHED),
    );
    if restarts.len() != 2 || limits.len() != 1 {
        let lines = autoheal_lines(env.agent());
        env.fail(&format!(
            "want 2 {RESTARTING:?} records and 1 {LIMIT_REACHED:?}, got {} and {}:{lines}",
            restarts.len(),
            limits.len(),
        ));
    }
    let named = |r: &Value| {
        field(r, "container.name") == healed.name && field(r, "container.id") == &healed.id[..12]
    };
    let numbered: Vec<u64> = restarts
        .iter()
        .filter_map(|r| r["restart"].as_u64())
        .collect();
    if !restarts.iter().chain(&limits).all(named) || numbered != [1, 2] {
        let lines = autoheal_lines(env.agent());
        env.fail(&format!(
            "every self-healing record should name {} ({}) and count restarts 1 and 2:{lines}",
            healed.name,
            &healed.id[..12],
        ));
    }
    // And counted: this scenario holds the engine, so every restart is of `healed`.
    let metrics = env.agent().admin().metrics();
    let count = |series: &str| berth_e2e::admin::counter(&metrics, series);
    if count("berth_autoheal_restarts_total") != 2.0 || count("berth_autoheal_refused_total") < 1.0
    {
        env.fail(&format!(
            "want berth_autoheal_restarts_total 2 and berth_autoheal_refused_total >= 1:\n{}",
            metrics
                .lines()
                .filter(|l| l.starts_with("berth_autoheal"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    // The restarts are shown on the instance's health output, next to the failing probe.
    let want = env.published(&healed_name, &healed, 80);
    env.wait("the restarts shown in the health output", PROBE, |b| {
        health_is(
            b,
            &want,
            "critical",
            &[
                "HTTP GET",
                "404",
                "autoheal: restarted by berth (restart 2 of at most 2",
            ],
        )
    });
}

/// A Docker HEALTHCHECK reporting `unhealthy` also gets a labelled container restarted; the
/// short label `autoheal=true` works like `berth.autoheal=true`. The same unhealthy
/// container without the label is left alone.
fn autoheal_restarts_a_docker_unhealthy_container(kind: Kind) {
    let _engine = exclusive();
    let mut env = Env::new("autohealdocker", kind);
    let (healed_name, plain_name) = (env.svc("healed"), env.svc("plain"));
    env.start_agent(&["--autoheal-cooldown", "2s"]);
    let opts = [
        "--health-cmd",
        "test -f /nonexistent",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
    ];
    let healed = probed_httpd(
        env.test,
        &strings(&[&format!("SERVICE_NAME={healed_name}"), "autoheal=true"]),
        &opts,
        true,
    );
    let plain = probed_httpd(
        env.test,
        &[format!("SERVICE_NAME={plain_name}")],
        &opts,
        true,
    );
    let ctrs = [&healed, &plain];
    let mut starts = Starts::new(&ctrs);
    env.wait(
        "the unhealthy autoheal=true container restarted",
        Duration::from_secs(30),
        |_| {
            let n = starts.poll(&ctrs)?;
            if n[1] > 0 {
                return Ok(n);
            }
            if n[0] >= 1 {
                Ok(n)
            } else {
                Err(format!(
                    "no restart yet; Docker health {:?}",
                    docker_health(&healed)
                ))
            }
        },
    );
    env.hold(
        "the container without the label never restarted",
        Duration::from_secs(3),
        |_| match starts.poll(&ctrs)?[1] {
            0 => Ok(()),
            n => Err(format!(
                "the unlabelled container was restarted {n} time(s) (StartedAt {:?}, Docker \
                 health {:?})",
                starts.seen[1],
                docker_health(&plain)
            )),
        },
    );
    let restarts = env.agent().records_with(RESTARTING);
    let reason = restarts
        .iter()
        .find(|r| field(r, "container.name") == healed.name)
        .map(|r| field(r, "reason").to_owned());
    if !reason
        .as_deref()
        .is_some_and(|r| r.starts_with("Docker HEALTHCHECK reports unhealthy"))
    {
        let lines = autoheal_lines(env.agent());
        env.fail(&format!(
            "no {RESTARTING:?} record for {} with the HEALTHCHECK as its reason:{lines}",
            healed.name,
        ));
    }
}

// Behaviour that does not depend on the registry (docker-proxy, thresholds, self-healing)
// runs against one backend only, to keep the file's runtime down; the two self-healing
// scenarios are split across the backends (they run alone, see [`ENGINE`]).
berth_e2e::backend_tests!(
    consul: [
        http_probe_follows_the_endpoint,
        a_restarted_agent_keeps_the_registered_health_until_its_probes_answer,
        dns_drops_a_failing_instance,
        tcp_probe_on_open_and_closed_ports,
        explicit_probe_overrides_docker_healthcheck,
        native_named_and_service_scoped_checks,
        rise_and_fall_thresholds,
        deregister_after_withdraws_until_it_passes,
        autoheal_restarts_up_to_the_limit,
    ],
    etcd: [
        http_probe_follows_the_endpoint,
        a_restarted_agent_keeps_the_registered_health_until_its_probes_answer,
        tcp_probe_on_open_and_closed_ports,
        tcp_probe_is_not_fooled_by_the_docker_proxy,
        explicit_probe_overrides_docker_healthcheck,
        native_named_and_service_scoped_checks,
        deregister_after_withdraws_until_it_passes,
        autoheal_restarts_a_docker_unhealthy_container,
    ],
);
