//! The agent's environment: the host IP it detects, and `DOCKER_HOST` pointing at a tcp://
//! endpoint. Real Docker, real Consul, the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use berth_e2e::agent::{Agent, field};
use berth_e2e::consul::ConsulServer;
use berth_e2e::docker::{self, Container, relay};
use berth_e2e::{free_port, wait_for};

/// `(address, port)` of every instance of `name` in `/v1/health/service/<name>`.
fn endpoints(consul: &ConsulServer, name: &str) -> Vec<(String, u16)> {
    consul
        .health(name)
        .iter()
        .map(|e| {
            (
                e["Service"]["Address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["Service"]["Port"].as_u64().unwrap_or_default() as u16,
            )
        })
        .collect()
}

fn httpd(test: &str, name: &str) -> Container {
    Container::httpd(test, &["-l", &format!("SERVICE_NAME={name}"), "-p", "80"])
}

/// Without `--host-ip`, berth detects the host's address, logs it, and registers published
/// ports at it.
#[test]
fn detected_host_ip_is_logged_and_registered() {
    let consul = ConsulServer::start();
    let name = docker::unique_name("hostip");
    let node = format!("node-{name}");
    let args = [
        "run",
        "--consul-addr",
        &consul.addr(),
        "--node-name",
        &node,
        "--ttl",
        "3s",
        "--log-format",
        "json",
    ];
    let agent = Agent::spawn(&args);
    let detected = wait_for(
        "the detected host IP in the log",
        Duration::from_secs(20),
        || {
            let records = agent.records_with("host IP detected (set --host-ip to override)");
            let value = field(records.first()?, "host_ip");
            (!value.is_empty()).then(|| value.to_owned())
        },
    );
    let ip: std::net::IpAddr = detected.parse().expect("an IP address");
    assert!(!ip.is_unspecified(), "detected {ip}");
    let local = Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .expect("ip addr");
    assert!(
        String::from_utf8_lossy(&local.stdout).contains(&format!(" {detected}/")),
        "{detected} is not an address of this host"
    );

    let c = httpd("hostip", &name);
    let want = vec![(detected.clone(), c.host_port(80))];
    let got = wait_for(
        "the instance at the detected IP",
        Duration::from_secs(10),
        || {
            let got = endpoints(&consul, &name);
            (!got.is_empty()).then_some(got)
        },
    );
    assert_eq!(got, want, "agent log:\n{}", agent.log_tail(30));
}

/// `DOCKER_HOST=tcp://…` is honoured, and when that endpoint goes away berth keeps running,
/// reconnects with backoff once it is back, relists, and applies the listing as an
/// authoritative snapshot: a container removed and one started during the outage are both
/// reflected, though their events were never seen.
#[test]
fn docker_host_tcp_is_honoured_and_an_outage_is_repaired_by_relisting() {
    let consul = ConsulServer::start();
    let port = free_port();
    let proxy = relay(port);

    let test = "dockerhost";
    let gone_name = docker::unique_name(test);
    let born_name = docker::unique_name(test);
    let node = format!("node-{gone_name}");
    let args = [
        "run",
        "--consul-addr",
        &consul.addr(),
        "--node-name",
        &node,
        "--host-ip",
        "127.0.0.1",
        "--ttl",
        "3s",
        "--log-format",
        "json",
    ];
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let agent = Agent::spawn_with_env(&args, &[("DOCKER_HOST", &endpoint)]);
    let mut gone = httpd(test, &gone_name);
    let got = wait_for(
        "registration through the tcp endpoint",
        Duration::from_secs(10),
        || {
            let got = endpoints(&consul, &gone_name);
            (!got.is_empty()).then_some(got)
        },
    );
    assert_eq!(got, [("127.0.0.1".to_owned(), gone.host_port(80))]);
    let configured = agent.records_with("berth configured");
    assert!(
        configured.iter().any(|r| field(r, "docker") == endpoint),
        "the agent should log the tcp endpoint it uses:\n{}",
        agent.log_tail(30)
    );

    // Its only connection is the relay: cut it, and the event stream breaks.
    drop(proxy);
    wait_for(
        "the agent to notice the relay is gone",
        Duration::from_secs(10),
        || {
            (!agent
                .records_with("docker unavailable; will reconnect and relist")
                .is_empty())
            .then_some(())
        },
    );

    // During the outage one container goes and another comes.
    gone.rm();
    let born = httpd(test, &born_name);
    let _proxy = relay(port);
    wait_for(
        "the outage's changes reflected",
        Duration::from_secs(40),
        || {
            let now = (
                endpoints(&consul, &gone_name),
                endpoints(&consul, &born_name),
            );
            (now.0.is_empty() && now.1 == [("127.0.0.1".to_owned(), born.host_port(80))])
                .then_some(())
        },
    );
    let mut agent = agent;
    assert!(
        agent.exited().is_none(),
        "the agent kept running through the outage"
    );
}
