//! Stopping, end to end on both registries: an exit is deregistered from its `die` event,
//! before Docker answers an inspect of the container; `docker stop` drains the container's
//! instances (critical) while its process still runs, and deregisters them when it exits;
//! `berth.drain=false` keeps them passing until then.
//!
//! The first test runs the agent's Docker connection through the harness's proxy and holds
//! every inspect of the container, so the registry can only have changed from the event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_e2e::backend::{Backend, Found, Kind, show};
use berth_e2e::docker::{self, Container};
use berth_e2e::env::{Env, SETTLE, check_gone};
use berth_e2e::proxy::{Action, HttpProxy, Upstream};

/// A busybox httpd registered as `name` that exits `exit_after` seconds after SIGTERM.
fn slow_stopping(env: &Env, name: &str, exit_after: u32, extra: &[&str]) -> Container {
    let script = format!("trap 'sleep {exit_after}; exit 0' TERM; httpd -f -p 80 & wait");
    let mut args: Vec<String> = vec![
        "-l".into(),
        format!("SERVICE_NAME={name}"),
        "-p".into(),
        "80".into(),
        "--stop-timeout".into(),
        "20".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        docker::image().to_string(),
        "sh".into(),
        "-c".into(),
        script,
    ]);
    Container::run(env.test, &args)
}

/// The one instance of `name`, when its status is `status`.
fn one(b: &Backend, name: &str, status: &str) -> Result<Found, String> {
    let found = b.instances(name)?;
    match found.as_slice() {
        [f] if f.status == status => Ok(f.clone()),
        [f] => Err(format!("not {status}: {f}")),
        _ => Err(format!("{} instances: {}", found.len(), show(&found))),
    }
}

/// A container whose process exits by itself (no `docker stop`, no kill event): its `die`
/// deregisters it while every inspect of it is held unanswered, so the change came from the
/// event. The inspect that follows is asked; once answered, the registry stays as it is.
fn an_exit_is_deregistered_before_an_inspect_answers(kind: Kind) {
    let mut env = Env::new("diefast", kind);
    let name = env.svc("web");
    let proxy = HttpProxy::start(Upstream::docker());
    let docker_host = format!("tcp://{}", proxy.addr());
    env.start_agent(&["--docker-host", &docker_host]);
    let ctr = slow_stopping(&env, &name, 0, &[]);
    env.wait("registered", SETTLE, |b| one(b, &name, "passing"));

    let inspect = format!("/containers/{}/json", ctr.id);
    proxy.set_rule(move |method, path| {
        if method == "GET" && path.contains(&inspect) {
            Action::Hold
        } else {
            Action::Forward
        }
    });
    // SIGTERM to PID 1 from inside: the process exits on its own, Docker only reports `die`.
    docker::docker(&["exec", &ctr.id, "kill", "-TERM", "1"]);
    env.wait("deregistered from the die event", SETTLE, |b| {
        check_gone(b, &name)
    });
    // The inspect that converges is asked, and held: the rule matches berth's inspects.
    env.wait("the converging inspect asked (and held)", SETTLE, |_| {
        (proxy.held() > 0)
            .then_some(())
            .ok_or(format!("{} held", proxy.held()))
    });
    proxy.forward_all();
    env.hold(
        "still gone once the inspect answers",
        Duration::from_secs(2),
        |b| check_gone(b, &name),
    );
    assert_eq!(ctr.status(), "exited");
}

/// `docker stop` of a container that takes 3 s to exit: its instance turns critical while
/// Docker still reports it running, then is deregistered when it exits.
fn a_stopped_container_is_drained_before_it_exits(kind: Kind) {
    let mut env = Env::new("drain", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = slow_stopping(&env, &name, 3, &[]);
    env.wait("registered passing", SETTLE, |b| one(b, &name, "passing"));
    let id = ctr.id.clone();
    let stop = std::thread::spawn(move || docker::docker(&["stop", &id]));
    let drained = env.wait("critical while stopping", SETTLE, |b| {
        one(b, &name, "critical")
    });
    // Read after the registry changed: the container was still running then.
    let state = ctr.status();
    if state != "running" {
        env.fail(&format!(
            "the instance turned critical only once the container was {state}: {drained}"
        ));
    }
    if !drained.output.contains("is stopping (SIGTERM)") {
        env.fail(&format!("drain output: {drained}"));
    }
    stop.join().unwrap();
    env.expect_gone(&name);
}

/// `berth.drain=false`: the instance stays passing while the container stops, and is
/// deregistered when it exits.
fn drain_off_by_label_keeps_the_instance_until_exit(kind: Kind) {
    let mut env = Env::new("nodrain", kind);
    let name = env.svc("web");
    env.start_agent(&[]);
    let ctr = slow_stopping(&env, &name, 3, &["-l", "berth.drain=false"]);
    env.wait("registered passing", SETTLE, |b| one(b, &name, "passing"));
    let id = ctr.id.clone();
    let stop = std::thread::spawn(move || docker::docker(&["stop", &id]));
    // The container exits 3 s after the signal; well inside that, it is still passing.
    std::thread::sleep(Duration::from_millis(500));
    env.hold("passing while it stops", Duration::from_millis(1500), |b| {
        one(b, &name, "passing").map(drop)
    });
    assert_eq!(
        ctr.status(),
        "running",
        "still stopping when the hold ended"
    );
    stop.join().unwrap();
    env.expect_gone(&name);
}

berth_e2e::backend_tests!(
    an_exit_is_deregistered_before_an_inspect_answers,
    a_stopped_container_is_drained_before_it_exits,
    drain_off_by_label_keeps_the_instance_until_exit,
);
