//! Table tests for [`plan_container`] over real `docker inspect` output.
//!
//! Fixtures live in `agent/tests/fixtures/inspect/` (see the README there). Each case takes
//! one fixture, adds labels and env on top, and asserts the complete outcome: every
//! instance, every check key and every note.

use std::collections::BTreeMap;

use berth_registry::{Health, Origin, Status};
use bollard::models::ContainerInspectResponse;
use proptest::prelude::*;

use super::sanitize::quote;
use super::*;
use crate::docker::view::DockerHealth;

const HOST_IP: &str = "192.0.2.10";

fn fixture(name: &str) -> ContainerView {
    let path = format!(
        "{}/tests/fixtures/inspect/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed: Vec<ContainerInspectResponse> = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed.len(), 1, "{path}");
    ContainerView::from_inspect(&parsed[0])
}

fn settings() -> Settings {
    Settings {
        node: "node1".into(),
        host_ip: HOST_IP.parse().unwrap(),
        host_ip_from: "--host-ip".into(),
        internal: false,
        network: None,
        explicit: false,
        tags: vec![],
        ip_label: None,
        drain_on_stop: true,
    }
}

/// `id name address port tags=a,b meta=k=v,k=v`.
fn render(i: &Instance) -> String {
    let meta: Vec<String> = i.meta.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{} {} {} {} tags={} meta={}",
        i.id,
        i.name,
        i.address,
        i.port,
        i.tags.join(","),
        meta.join(",")
    )
}

fn render_note(n: &Note) -> String {
    let level = match n.level {
        Level::Info => "I",
        Level::Warn => "W",
    };
    format!("{level} {}", n.message)
}

/// `id key=value`, one per check key.
fn render_checks(checks: &BTreeMap<String, CheckLabels>) -> Vec<String> {
    checks
        .iter()
        .flat_map(|(id, c)| c.iter().map(move |(k, v)| format!("{id} {k}={v}")))
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Opt {
    Internal,
    Explicit,
    Network(&'static str),
    Tags(&'static [&'static str]),
    IpLabel(&'static str),
}

#[derive(Debug)]
struct Case {
    name: &'static str,
    fixture: &'static str,
    opts: &'static [Opt],
    labels: &'static [(&'static str, &'static str)],
    env: &'static [(&'static str, &'static str)],
    instances: &'static [&'static str],
    checks: &'static [&'static str],
    notes: &'static [&'static str],
}

const NONE: &[(&str, &str)] = &[];

impl Case {
    fn run(&self) -> Outcome {
        let mut view = fixture(self.fixture);
        for (k, v) in self.labels {
            view.labels.insert((*k).into(), (*v).into());
        }
        for (k, v) in self.env {
            view.env.insert((*k).into(), (*v).into());
        }
        let mut s = settings();
        for opt in self.opts {
            match opt {
                Opt::Internal => s.internal = true,
                Opt::Explicit => s.explicit = true,
                Opt::Network(n) => s.network = Some((*n).into()),
                Opt::Tags(t) => s.tags = t.iter().map(|t| (*t).to_owned()).collect(),
                Opt::IpLabel(l) => s.ip_label = Some((*l).into()),
            }
        }
        plan_container(&view, &s)
    }

    fn check(&self) {
        let out = self.run();
        let instances: Vec<String> = out.instances.iter().map(render).collect();
        let notes: Vec<String> = out.notes.iter().map(render_note).collect();
        assert_eq!(instances, self.instances, "case {}: instances", self.name);
        assert_eq!(
            render_checks(&out.checks),
            self.checks,
            "case {}: checks",
            self.name
        );
        assert_eq!(notes, self.notes, "case {}: notes", self.name);
        assert_invariants(&out);
    }
}

/// What every outcome must satisfy, whatever the input.
fn assert_invariants(out: &Outcome) {
    let ids: Vec<&str> = out.instances.iter().map(|i| i.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids sorted and unique");
    for i in &out.instances {
        assert!(!i.name.is_empty());
        assert!(
            i.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}",
            i.name
        );
        assert!(!i.name.starts_with('-') && !i.name.ends_with('-'));
        assert!(i.meta.len() <= 59);
        for (k, v) in &i.meta {
            assert!(k.len() <= 128 && v.len() <= 512);
            assert!(!k.starts_with("berth-") && !k.starts_with("consul-"));
        }
    }
    for id in out.checks.keys() {
        assert!(ids.contains(&id.as_str()), "checks for unknown id {id}");
    }
    for c in out.checks.values() {
        assert!(!c.is_empty());
        assert!(!c.contains_key("check_script") && !c.contains_key("check_cmd"));
    }
    // A note that quotes a key names it, so the status output can point at the label.
    for n in &out.notes {
        let quotes_key = n.message.starts_with("label ") || n.message.starts_with("env ");
        match &n.key {
            Some(k) => assert!(
                n.message
                    .starts_with(&format!("{} {}", k.source, k.name.escape_debug())),
                "{n:?}"
            ),
            None => assert!(!quotes_key, "a note about a key must name it: {n:?}"),
        }
    }
    // Each instance says why it has its address; a container registers nothing only with
    // a reason.
    for i in &out.instances {
        assert!(
            out.addresses.get(&i.id).is_some_and(|r| !r.is_empty()),
            "no address rule for {}",
            i.id
        );
    }
    assert_eq!(out.skipped.is_some(), out.instances.is_empty(), "{out:?}");
}

const EXPOSED_9000: &str = "I port 9000/tcp is exposed but not published; skipped (publish it with -p, or run berth with --internal)";
const EXPOSED_80: &str = "I port 80/tcp is exposed but not published; skipped (publish it with -p, or run berth with --internal)";
const EXPOSED_8080: &str = "I port 8080/tcp is exposed but not published; skipped (publish it with -p, or run berth with --internal)";

#[test]
fn topologies() {
    let cases = [
        Case {
            name: "bridge, one published port (0.0.0.0 and :: bindings collapse)",
            fixture: "web",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "bridge, internal mode uses the container IP and port",
            fixture: "web",
            opts: &[Opt::Internal],
            labels: NONE,
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 172.17.0.2 80 tags= meta="],
            checks: &[],
            notes: &["I internal mode: using 172.17.0.2 on network bridge (its only network)"],
        },
        Case {
            name: "several ports: registrator group naming, unpublished port skipped",
            fixture: "multi",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-multi:443 busybox-443 192.0.2.10 18443 tags= meta=",
                "node1:lbl-multi:80 busybox-80 192.0.2.10 18081 tags= meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_9000],
        },
        Case {
            name: "several ports, internal: exposed-only ports count too",
            fixture: "multi",
            opts: &[Opt::Internal],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-multi:443 busybox-443 172.17.0.3 443 tags= meta=",
                "node1:lbl-multi:80 busybox-80 172.17.0.3 80 tags= meta=",
                "node1:lbl-multi:9000 busybox-9000 172.17.0.3 9000 tags= meta=",
            ],
            checks: &[],
            notes: &["I internal mode: using 172.17.0.3 on network bridge (its only network)"],
        },
        Case {
            name: "host network: exposed ports at the host address",
            fixture: "host",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-host:53:udp busybox-53 192.0.2.10 53 tags=udp meta=",
                "node1:lbl-host:80 busybox-80 192.0.2.10 80 tags= meta=",
                "node1:lbl-host:8125:udp busybox-8125 192.0.2.10 8125 tags=udp meta=",
            ],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "host network, internal mode: same as default",
            fixture: "host",
            opts: &[Opt::Internal],
            labels: &[("berth.port", "80")],
            env: NONE,
            instances: &["node1:lbl-host:80 busybox 192.0.2.10 80 tags= meta="],
            checks: &[],
            notes: &[
                "I port 53/udp is not listed in label berth.port=\"80\"; skipped",
                "I port 8125/udp is not listed in label berth.port=\"80\"; skipped",
            ],
        },
        Case {
            name: "host network with an address override",
            fixture: "host",
            opts: &[],
            labels: &[
                ("berth.address", "Node-7.example.com"),
                ("berth.port", "53/udp"),
            ],
            env: NONE,
            instances: &["node1:lbl-host:53:udp busybox node-7.example.com 53 tags=udp meta="],
            checks: &[],
            notes: &[
                "I port 80/tcp is not listed in label berth.port=\"53/udp\"; skipped",
                "I port 8125/udp is not listed in label berth.port=\"53/udp\"; skipped",
            ],
        },
        Case {
            name: "user-defined network, default mode: nothing is published",
            fixture: "usernet",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &[EXPOSED_80, EXPOSED_8080],
        },
        Case {
            name: "user-defined network, internal mode",
            fixture: "usernet",
            opts: &[Opt::Internal],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-usernet:80 busybox-80 172.18.0.2 80 tags= meta=",
                "node1:lbl-usernet:8080 busybox-8080 172.18.0.2 8080 tags= meta=",
            ],
            checks: &[],
            notes: &["I internal mode: using 172.18.0.2 on network berthlbl-a (its only network)"],
        },
        Case {
            name: "several networks, internal mode, none chosen: ambiguous",
            fixture: "multinet",
            opts: &[Opt::Internal],
            labels: NONE,
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &[
                "W internal mode: the container is on several networks (berthlbl-a, berthlbl-b); set label berth.network or --network to choose one; nothing registers",
            ],
        },
        Case {
            name: "several networks, chosen by label",
            fixture: "multinet",
            opts: &[Opt::Internal],
            labels: &[("berth.network", "berthlbl-b")],
            env: NONE,
            instances: &[
                "node1:lbl-multinet:80 busybox-80 172.19.0.2 80 tags= meta=",
                "node1:lbl-multinet:8080 busybox-8080 172.19.0.2 8080 tags= meta=",
            ],
            checks: &[],
            notes: &[
                "I internal mode: using 172.19.0.2 on network berthlbl-b (label berth.network=\"berthlbl-b\")",
            ],
        },
        Case {
            name: "several networks, chosen by --network",
            fixture: "multinet",
            opts: &[Opt::Internal, Opt::Network("berthlbl-a")],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-multinet:80 busybox-80 172.18.0.3 80 tags= meta=",
                "node1:lbl-multinet:8080 busybox-8080 172.18.0.3 8080 tags= meta=",
            ],
            checks: &[],
            notes: &[
                "I internal mode: using 172.18.0.3 on network berthlbl-a (--network berthlbl-a)",
            ],
        },
        Case {
            name: "several networks, label wins over --network",
            fixture: "multinet",
            opts: &[Opt::Internal, Opt::Network("berthlbl-a")],
            labels: &[("berth.network", "berthlbl-b"), ("berth.port", "8080")],
            env: NONE,
            instances: &["node1:lbl-multinet:8080 busybox 172.19.0.2 8080 tags= meta="],
            checks: &[],
            notes: &[
                "I internal mode: using 172.19.0.2 on network berthlbl-b (label berth.network=\"berthlbl-b\")",
                "I port 80/tcp is not listed in label berth.port=\"8080\"; skipped",
            ],
        },
        Case {
            name: "named network not attached: wait for the connect",
            fixture: "multinet",
            opts: &[Opt::Internal, Opt::Network("backend")],
            labels: NONE,
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &[
                "I internal mode: network backend (--network backend) is not attached; nothing registers until it is connected",
            ],
        },
        Case {
            name: "berth.network outside internal mode is only noted",
            fixture: "multinet",
            opts: &[],
            labels: &[("berth.network", "berthlbl-b")],
            env: NONE,
            instances: &["node1:lbl-multinet:80 busybox 192.0.2.10 18082 tags= meta="],
            checks: &[],
            notes: &[
                "I label berth.network=\"berthlbl-b\": only used with --internal; ignored",
                EXPOSED_8080,
            ],
        },
        Case {
            name: "dual-stack network, internal: IPv4 preferred",
            fixture: "v6",
            opts: &[Opt::Internal],
            labels: NONE,
            env: NONE,
            instances: &["node1:lbl-v6:80 busybox 172.20.0.2 80 tags= meta="],
            checks: &[],
            notes: &["I internal mode: using 172.20.0.2 on network berthlbl-v6 (its only network)"],
        },
        Case {
            name: "dual-stack network, default: published port",
            fixture: "v6",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &["node1:lbl-v6:80 busybox 192.0.2.10 18083 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "IPv6-only network, internal: IPv6 address",
            fixture: "v6only",
            opts: &[Opt::Internal],
            labels: NONE,
            env: NONE,
            instances: &["node1:lbl-v6only:80 busybox fd00:b347:1::2 80 tags= meta="],
            checks: &[],
            notes: &[
                "I internal mode: using fd00:b347:1::2 on network berthlbl-v6 (its only network)",
            ],
        },
        Case {
            name: "IPv4 and IPv6 loopback bindings on one host port: :<port> then :<n>",
            fixture: "v6bind",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-v6bind:80:18094:1 busybox 127.0.0.1 18094 tags= meta=",
                "node1:lbl-v6bind:80:18094:2 busybox ::1 18094 tags= meta=",
            ],
            checks: &[],
            notes: &[
                "I port 80/tcp is published on loopback 127.0.0.1:18094; only this host can reach it",
                "I port 80/tcp is published on loopback [::1]:18094; only this host can reach it",
                "I id node1:lbl-v6bind:80 is shared by several instances; appended the registered port",
                "I id node1:lbl-v6bind:80:18094 is still shared (same port); appended :1, :2, … by address",
            ],
        },
        Case {
            name: "address override collapses the IPv4 and IPv6 bindings",
            fixture: "v6bind",
            opts: &[],
            labels: &[("berth.address", "2001:DB8::7")],
            env: NONE,
            instances: &["node1:lbl-v6bind:80 busybox 2001:db8::7 18094 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "one private port on two host ports: :<host-port>",
            fixture: "twobind",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-twobind:80:18084 busybox 127.0.0.1 18084 tags= meta=",
                "node1:lbl-twobind:80:18085 busybox 192.0.2.10 18085 tags= meta=",
            ],
            checks: &[],
            notes: &[
                "I port 80/tcp is published on loopback 127.0.0.1:18084; only this host can reach it",
                "I id node1:lbl-twobind:80 is shared by several instances; appended the registered port",
            ],
        },
        Case {
            name: "tcp and udp on the same port: udp tag and :udp id",
            fixture: "udp",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-udp:53 busybox-53 192.0.2.10 15353 tags= meta=",
                "node1:lbl-udp:53:udp busybox-53 192.0.2.10 15353 tags=udp meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_80],
        },
        Case {
            name: "paused",
            fixture: "paused",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &["I container is paused"],
        },
        Case {
            name: "stopped, even with bad labels",
            fixture: "stopped",
            opts: &[],
            labels: &[("berth.bogus", "1")],
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &["I container is not running"],
        },
    ];
    for case in &cases {
        case.check();
    }
}

#[test]
fn registrator_keys() {
    let cases = [
        Case {
            name: "labels win over env; per-port name and id; env-only keys still apply",
            fixture: "regenv",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[
                "https.12345 https 192.0.2.10 18089 tags=primary,with,comma,spaced meta=region=us-east,sni=enabled",
                "node1:lbl-regenv:80 from-label-80 192.0.2.10 18088 tags=primary,with,comma,spaced meta=region=us-east",
            ],
            checks: &[
                "https.12345 check_interval=15s",
                "node1:lbl-regenv:80 check_http=/health",
                "node1:lbl-regenv:80 check_interval=15s",
            ],
            notes: &[
                "W env SERVICE_CHECK_INTERVAL=\"15s\": no check kind is set (http, https, tcp or grpc); ignored",
            ],
        },
        Case {
            name: "native labels win over SERVICE_*",
            fixture: "regenv",
            opts: &[],
            labels: &[
                ("berth.name", "site"),
                ("berth.tags", "native"),
                ("berth.meta.region", "eu"),
            ],
            env: NONE,
            instances: &[
                "https.12345 site 192.0.2.10 18089 tags=native meta=region=eu,sni=enabled",
                "node1:lbl-regenv:80 site 192.0.2.10 18088 tags=native meta=region=eu",
            ],
            checks: &[
                "https.12345 check_interval=15s",
                "node1:lbl-regenv:80 check_http=/health",
                "node1:lbl-regenv:80 check_interval=15s",
            ],
            notes: &[
                "W env SERVICE_CHECK_INTERVAL=\"15s\": no check kind is set (http, https, tcp or grpc); ignored",
            ],
        },
        Case {
            name: "SERVICE_NAME from env alone; container-wide name gets -<port> in a group",
            fixture: "multi",
            opts: &[],
            labels: NONE,
            env: &[("SERVICE_NAME", "Shop_API")],
            instances: &[
                "node1:lbl-multi:443 shop-api-443 192.0.2.10 18443 tags= meta=",
                "node1:lbl-multi:80 shop-api-80 192.0.2.10 18081 tags= meta=",
            ],
            checks: &[],
            notes: &[
                EXPOSED_9000,
                "I env SERVICE_NAME=\"Shop_API\": service name sanitized to \"shop-api-80\"",
                "I env SERVICE_NAME=\"Shop_API\": service name sanitized to \"shop-api-443\"",
            ],
        },
        Case {
            name: "per-port and per-proto keys; per-proto wins, case-insensitive proto",
            fixture: "udp",
            opts: &[],
            labels: &[
                ("SERVICE_53_NAME", "dns"),
                ("SERVICE_53_udp_NAME", "dns-udp"),
                ("SERVICE_53_TAGS", "port"),
                ("SERVICE_53_TCP_TAGS", "tcp-only"),
                ("SERVICE_TAGS", "everywhere"),
            ],
            env: NONE,
            instances: &[
                "node1:lbl-udp:53 dns 192.0.2.10 15353 tags=tcp-only meta=",
                "node1:lbl-udp:53:udp dns-udp 192.0.2.10 15353 tags=port,udp meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_80],
        },
        Case {
            name: "docs/labels.md DNS example: one name, tcp and udp apart",
            fixture: "udp",
            opts: &[],
            labels: &[
                ("SERVICE_53_NAME", "dns"),
                ("SERVICE_53_UDP_TAGS", "primary"),
            ],
            env: NONE,
            instances: &[
                "node1:lbl-udp:53 dns 192.0.2.10 15353 tags= meta=",
                "node1:lbl-udp:53:udp dns 192.0.2.10 15353 tags=primary,udp meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_80],
        },
        Case {
            name: "per-port ignore, undone per proto",
            fixture: "udp",
            opts: &[],
            labels: &[
                ("SERVICE_53_IGNORE", "true"),
                ("SERVICE_53_UDP_IGNORE", "no"),
            ],
            env: NONE,
            instances: &["node1:lbl-udp:53:udp busybox-53 192.0.2.10 15353 tags=udp meta="],
            checks: &[],
            notes: &[
                EXPOSED_80,
                "I label SERVICE_53_IGNORE=\"true\": port 53/tcp ignored",
            ],
        },
        Case {
            name: "bad per-port ignore value is warned and not applied",
            fixture: "web",
            opts: &[],
            labels: &[("SERVICE_80_IGNORE", "maybe")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "W label SERVICE_80_IGNORE=\"maybe\": not a boolean (use true/false); ignored",
            ],
        },
        Case {
            name: "tags: escaped commas, trimming, empties and repeats dropped",
            fixture: "web",
            opts: &[],
            labels: &[("SERVICE_TAGS", r"a\,b, c ,,d,c,")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags=a,b,c,d meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "meta: per-port wins, sanitizing, reserved keys, native override",
            fixture: "web",
            opts: &[],
            labels: &[
                ("SERVICE_REGION", "eu"),
                ("SERVICE_80_REGION", "eu-west"),
                ("SERVICE_BUILD.SHA", "abc123"),
                ("SERVICE_BERTH-NODE", "spoof"),
                ("berth.meta.Owner", "team-a"),
                ("berth.meta.consul-version", "1"),
                ("berth.meta.", "x"),
            ],
            env: &[("SERVICE_TIER", "gold")],
            instances: &[
                "node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta=build_sha=abc123,owner=team-a,region=eu-west,tier=gold",
            ],
            checks: &[],
            notes: &[
                "W label SERVICE_BERTH-NODE=\"spoof\": meta keys starting with berth- or consul- are reserved; dropped",
                "I label SERVICE_BUILD.SHA=\"abc123\": meta key sanitized to \"build_sha\"",
                "W label berth.meta.=\"x\": empty meta key; ignored",
                "W label berth.meta.consul-version=\"1\": meta keys starting with berth- or consul- are reserved; dropped",
            ],
        },
        Case {
            name: "checks: kept raw per instance; command checks refused",
            fixture: "multi",
            opts: &[],
            labels: &[
                ("SERVICE_CHECK_HTTP", "/health"),
                ("SERVICE_443_CHECK_HTTP", "/secure-health"),
                ("SERVICE_CHECK_SCRIPT", "curl localhost"),
                ("SERVICE_80_CHECK_CMD", "rm -rf /"),
                ("SERVICE_CHECK_DOCKER", "true"),
                ("berth.check.interval", "5s"),
            ],
            env: NONE,
            instances: &[
                "node1:lbl-multi:443 busybox-443 192.0.2.10 18443 tags= meta=",
                "node1:lbl-multi:80 busybox-80 192.0.2.10 18081 tags= meta=",
            ],
            checks: &[
                "node1:lbl-multi:443 check.interval=5s",
                "node1:lbl-multi:443 check_http=/secure-health",
                "node1:lbl-multi:80 check.interval=5s",
                "node1:lbl-multi:80 check_http=/health",
            ],
            notes: &[
                "W label SERVICE_80_CHECK_CMD=\"rm -rf /\": command checks are not supported (berth never runs commands from labels); dropped",
                "W label SERVICE_CHECK_DOCKER=\"true\": command checks are not supported (berth never runs commands from labels); dropped",
                "W label SERVICE_CHECK_SCRIPT=\"curl localhost\": command checks are not supported (berth never runs commands from labels); dropped",
                EXPOSED_9000,
            ],
        },
        Case {
            name: "keys that can never apply",
            fixture: "web",
            opts: &[],
            labels: &[
                ("SERVICE_9999_NAME", "ghost"),
                ("SERVICE_80_UDP_NAME", "nope"),
                ("SERVICE_80", "x"),
                ("SERVICE_70000_NAME", "x"),
                ("SERVICE_", "x"),
            ],
            env: &[("SERVICE_name", "env-web")],
            instances: &["node1:lbl-web:80 env-web 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "W label SERVICE_=\"x\": no key after SERVICE_; ignored",
                "W label SERVICE_70000_NAME=\"x\": 70000 is not a port number; ignored",
                "W label SERVICE_80=\"x\": a port without a key (expected e.g. SERVICE_80_NAME); ignored",
                "W label SERVICE_9999_NAME=\"ghost\": the container has no port 9999; ignored",
                "W label SERVICE_80_UDP_NAME=\"nope\": the container has no port 80/udp; ignored",
            ],
        },
        Case {
            name: "unusable service name skips the port",
            fixture: "web",
            opts: &[],
            labels: &[("SERVICE_NAME", "!!!")],
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &[
                "W label SERVICE_NAME=\"!!!\": not usable as a service name (letters, digits and - only); port 80/tcp skipped",
            ],
        },
    ];
    for case in &cases {
        case.check();
    }
}

#[test]
fn ignore_and_enable() {
    let registers = &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="][..];
    for value in ["true", "1", "YES", "on", " True "] {
        let mut view = fixture("web");
        view.labels.insert("SERVICE_IGNORE".into(), value.into());
        let out = plan_container(&view, &settings());
        assert!(out.instances.is_empty(), "{value}");
        assert_eq!(
            out.notes.iter().map(render_note).collect::<Vec<_>>(),
            [format!(
                "I label SERVICE_IGNORE=\"{}\": container ignored",
                value.escape_debug()
            )],
            "{value}"
        );
    }
    for value in ["false", "0", "No", "OFF", ""] {
        let mut view = fixture("web");
        view.env.insert("SERVICE_IGNORE".into(), value.into());
        let out = plan_container(&view, &settings());
        let got: Vec<String> = out.instances.iter().map(render).collect();
        assert_eq!(got, registers, "{value}");
        assert!(out.notes.is_empty(), "{value}");
    }
    let cases = [
        Case {
            name: "SERVICE_IGNORE not a boolean: warned, container registers",
            fixture: "web",
            opts: &[],
            labels: &[("SERVICE_IGNORE", "sometimes")],
            env: NONE,
            instances: registers,
            checks: &[],
            notes: &[
                "W label SERVICE_IGNORE=\"sometimes\": not a boolean (use true/false); ignored",
            ],
        },
        Case {
            name: "SERVICE_IGNORE from env; problems in other keys are not reported",
            fixture: "web",
            opts: &[],
            labels: &[("berth.bogus", "1")],
            env: &[("SERVICE_IGNORE", "1")],
            instances: &[],
            checks: &[],
            notes: &["I env SERVICE_IGNORE=\"1\": container ignored"],
        },
        Case {
            name: "berth.enable=true overrides SERVICE_IGNORE",
            fixture: "web",
            opts: &[],
            labels: &[("berth.enable", "true")],
            env: &[("SERVICE_IGNORE", "true")],
            instances: registers,
            checks: &[],
            notes: &["I env SERVICE_IGNORE=\"true\": overridden by label berth.enable=true"],
        },
        Case {
            name: "berth.enable=false opts out",
            fixture: "web",
            opts: &[],
            labels: &[("berth.enable", "off")],
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &["I label berth.enable=\"off\": container opted out"],
        },
        Case {
            name: "berth.enable not a boolean",
            fixture: "web",
            opts: &[],
            labels: &[("berth.enable", "please")],
            env: NONE,
            instances: registers,
            checks: &[],
            notes: &["W label berth.enable=\"please\": not a boolean (use true/false); ignored"],
        },
    ];
    for case in &cases {
        case.check();
    }
}

#[test]
fn explicit_mode() {
    let cases = [
        Case {
            name: "no name label: nothing",
            fixture: "web",
            opts: &[Opt::Explicit],
            labels: &[("SERVICE_TAGS", "a")],
            env: NONE,
            instances: &[],
            checks: &[],
            notes: &["I explicit mode: no service-name label"],
        },
        Case {
            name: "SERVICE_NAME from env counts",
            fixture: "web",
            opts: &[Opt::Explicit],
            labels: NONE,
            env: &[("SERVICE_NAME", "web")],
            instances: &["node1:lbl-web:80 web 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "per-port name: only that port",
            fixture: "multi",
            opts: &[Opt::Explicit],
            labels: &[("SERVICE_443_NAME", "https")],
            env: NONE,
            instances: &["node1:lbl-multi:443 https 192.0.2.10 18443 tags= meta="],
            checks: &[],
            notes: &[
                EXPOSED_9000,
                "I explicit mode: no service-name label for port 80/tcp; skipped",
            ],
        },
        Case {
            name: "berth.enable=true: container-level defaults",
            fixture: "multi",
            opts: &[Opt::Explicit],
            labels: &[("berth.enable", "true")],
            env: NONE,
            instances: &[
                "node1:lbl-multi:443 busybox-443 192.0.2.10 18443 tags= meta=",
                "node1:lbl-multi:80 busybox-80 192.0.2.10 18081 tags= meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_9000],
        },
        Case {
            name: "berth.name: same name on every port, distinct ids",
            fixture: "multi",
            opts: &[Opt::Explicit],
            labels: &[("berth.name", "site")],
            env: NONE,
            instances: &[
                "node1:lbl-multi:443 site 192.0.2.10 18443 tags= meta=",
                "node1:lbl-multi:80 site 192.0.2.10 18081 tags= meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_9000],
        },
        Case {
            name: "berth.service.* counts",
            fixture: "native",
            opts: &[Opt::Explicit],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-native:443 web-admin 192.0.2.10 18092 tags=base meta=team=core",
                "node1:lbl-native:53:udp dns 192.0.2.10 18093 tags=base,udp meta=team=core",
                "node1:lbl-native:80 web 192.0.2.10 18091 tags=http,public meta=team=core,tier=frontend",
            ],
            checks: &["node1:lbl-native:443 check.http=/healthz"],
            notes: &[],
        },
    ];
    for case in &cases {
        case.check();
    }
}

#[test]
fn native_labels() {
    let cases = [
        Case {
            name: "berth.port selects ports; bad and unknown entries warned",
            fixture: "multi",
            opts: &[],
            labels: &[("berth.port", "80, abc,9999,80/tcp")],
            env: NONE,
            instances: &["node1:lbl-multi:80 busybox 192.0.2.10 18081 tags= meta="],
            checks: &[],
            notes: &[
                "W label berth.port=\"80, abc,9999,80/tcp\": \"abc\" is not a port (use 80 or 53/udp); entry ignored",
                EXPOSED_9000,
                "W label berth.port=\"80, abc,9999,80/tcp\": 9999/tcp is not a port of this container; ignored",
                "I port 443/tcp is not listed in label berth.port=\"80, abc,9999,80/tcp\"; skipped",
            ],
        },
        Case {
            name: "berth.port with no valid entry is ignored as a whole",
            fixture: "web",
            opts: &[],
            labels: &[("berth.port", "http")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "W label berth.port=\"http\": \"http\" is not a port (use 80 or 53/udp); entry ignored",
                "W label berth.port=\"http\": no valid port; label ignored",
            ],
        },
        Case {
            name: "bad address overrides are ignored",
            fixture: "web",
            opts: &[],
            labels: &[("berth.address", "not an address!")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "W label berth.address=\"not an address!\": not an IP address or DNS host name; override ignored",
            ],
        },
        Case {
            name: "unspecified address override is ignored",
            fixture: "web",
            opts: &[Opt::Internal],
            labels: &[("berth.address", "0.0.0.0")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 172.17.0.2 80 tags= meta="],
            checks: &[],
            notes: &[
                "W label berth.address=\"0.0.0.0\": an unspecified address cannot be dialled; override ignored",
                "I internal mode: using 172.17.0.2 on network bridge (its only network)",
            ],
        },
        Case {
            name: "address override in internal mode skips network choice",
            fixture: "multinet",
            opts: &[Opt::Internal],
            labels: &[("berth.address", "10.1.2.3")],
            env: NONE,
            instances: &[
                "node1:lbl-multinet:80 busybox-80 10.1.2.3 80 tags= meta=",
                "node1:lbl-multinet:8080 busybox-8080 10.1.2.3 8080 tags= meta=",
            ],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "unknown berth keys and empty values are warned",
            fixture: "web",
            opts: &[],
            labels: &[
                ("berth.nmae", "web"),
                ("berth.name", ""),
                ("berth.service.web", "x"),
                ("berth.service.web.prot", "80"),
                ("berth.service.bad.name!.port", "80"),
                ("berth.check.script", "/bin/true"),
                ("Berth.name", "not-ours"),
            ],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "W label berth.check.script=\"/bin/true\": command checks are not supported (berth never runs commands from labels); dropped",
                "W label berth.name=\"\": empty value; ignored",
                "W label berth.nmae=\"web\": unknown berth label (see docs/labels.md); ignored",
                "W label berth.service.bad.name!.port=\"80\": unknown berth label (see docs/labels.md); ignored",
                "W label berth.service.web=\"x\": unknown berth label (see docs/labels.md); ignored",
                "W label berth.service.web.prot=\"80\": unknown berth label (see docs/labels.md); ignored",
            ],
        },
        Case {
            name: "services from the fixture labels",
            fixture: "native",
            opts: &[],
            labels: NONE,
            env: NONE,
            instances: &[
                "node1:lbl-native:443 web-admin 192.0.2.10 18092 tags=base meta=team=core",
                "node1:lbl-native:53:udp dns 192.0.2.10 18093 tags=base,udp meta=team=core",
                "node1:lbl-native:80 web 192.0.2.10 18091 tags=http,public meta=team=core,tier=frontend",
            ],
            checks: &["node1:lbl-native:443 check.http=/healthz"],
            notes: &[],
        },
        Case {
            name: "services: container-wide name/port/id have no effect",
            fixture: "native",
            opts: &[],
            labels: &[
                ("berth.name", "x"),
                ("berth.port", "80"),
                ("berth.id", "y"),
                ("berth.service.dns.id", "dns-1"),
            ],
            env: NONE,
            instances: &[
                "dns-1 dns 192.0.2.10 18093 tags=base,udp meta=team=core",
                "node1:lbl-native:443 web-admin 192.0.2.10 18092 tags=base meta=team=core",
                "node1:lbl-native:80 web 192.0.2.10 18091 tags=http,public meta=team=core,tier=frontend",
            ],
            checks: &["node1:lbl-native:443 check.http=/healthz"],
            notes: &[
                "W label berth.port=\"80\": has no effect when berth.service.* labels are present; ignored",
                "W label berth.name=\"x\": has no effect when berth.service.* labels are present; ignored",
                "W label berth.id=\"y\": has no effect when berth.service.* labels are present; ignored",
            ],
        },
        Case {
            name: "two services on one port: :<svc> ids",
            fixture: "web",
            opts: &[],
            labels: &[
                ("berth.service.api.port", "80"),
                ("berth.service.ui.port", "80/tcp"),
                ("berth.service.ui.tags", "v2"),
            ],
            env: NONE,
            instances: &[
                "node1:lbl-web:80:api api 192.0.2.10 18080 tags= meta=",
                "node1:lbl-web:80:ui ui 192.0.2.10 18080 tags=v2 meta=",
            ],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "a service without a port on a single-port container",
            fixture: "web",
            opts: &[],
            labels: &[("berth.service.Api_V1.meta.team", "core")],
            env: &[("SERVICE_TAGS", "from-env")],
            instances: &["node1:lbl-web:80 api-v1 192.0.2.10 18080 tags=from-env meta=team=core"],
            checks: &[],
            notes: &["I service key \"Api_V1\": service name sanitized to \"api-v1\""],
        },
        Case {
            name: "services: missing port with several ports, unpublished port, bad port",
            fixture: "multi",
            opts: &[],
            labels: &[
                ("berth.service.api.name", "api"),
                ("berth.service.metrics.port", "9000"),
                ("berth.service.admin.port", "8443"),
                ("berth.service.bad.port", "https"),
                ("berth.service.site.port", "443"),
            ],
            env: NONE,
            instances: &["node1:lbl-multi:443 site 192.0.2.10 18443 tags= meta="],
            checks: &[],
            notes: &[
                EXPOSED_9000,
                "W label berth.service.admin.port=\"8443\": 8443/tcp is not a port of this container; service admin not registered",
                "W label berth.service.api.port is missing and the container has several ports (80/tcp, 443/tcp); service api not registered",
                "W label berth.service.bad.port=\"https\": not a port (use 8080 or 53/udp); service bad not registered",
                "I service metrics: port 9000/tcp is exposed but not published; not registered",
                "I port 80/tcp is not named by any berth.service.<svc>.port label; skipped",
            ],
        },
        Case {
            name: "services with the same name, address and port: one kept",
            fixture: "web",
            opts: &[],
            labels: &[
                ("berth.service.a.port", "80"),
                ("berth.service.a.name", "web"),
                ("berth.service.b.port", "80"),
                ("berth.service.b.name", "web"),
            ],
            env: NONE,
            instances: &["node1:lbl-web:80:a web 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "I instance node1:lbl-web:80:b has the same name, address and port as node1:lbl-web:80:a; dropped",
            ],
        },
    ];
    for case in &cases {
        case.check();
    }
}

/// registrator's `-tags` (`--tags`) and `-useIpFromLabel` (`--ip-from-label`).
#[test]
fn forced_tags_and_the_address_label() {
    let cases = [
        Case {
            name: "--tags follow the container's own, without repeats",
            fixture: "web",
            opts: &[Opt::Tags(&["dc1", "prod"])],
            labels: &[("SERVICE_TAGS", "prod,web")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags=prod,web,dc1 meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "--ip-from-label gives the address",
            fixture: "web",
            opts: &[Opt::IpLabel("com.example.ip")],
            labels: &[("com.example.ip", "10.9.8.7")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 10.9.8.7 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "berth.address wins over --ip-from-label",
            fixture: "web",
            opts: &[Opt::IpLabel("com.example.ip")],
            labels: &[
                ("com.example.ip", "10.9.8.7"),
                ("berth.address", "10.1.1.1"),
            ],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 10.1.1.1 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "a container without the label keeps the usual address",
            fixture: "web",
            opts: &[Opt::IpLabel("com.example.ip")],
            labels: &[],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "a prefix length is dropped, as registrator does",
            fixture: "web",
            opts: &[Opt::IpLabel("io.rancher.container.ip")],
            labels: &[("io.rancher.container.ip", "10.42.0.7/16")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 10.42.0.7 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "an empty value counts as absent",
            fixture: "web",
            opts: &[Opt::IpLabel("com.example.ip")],
            labels: &[("com.example.ip", " ")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "internal mode: the label replaces the network's address, not the port",
            fixture: "multinet",
            opts: &[Opt::Internal, Opt::IpLabel("com.example.ip")],
            labels: &[("com.example.ip", "10.9.8.7")],
            env: NONE,
            instances: &[
                "node1:lbl-multinet:80 busybox-80 10.9.8.7 80 tags= meta=",
                "node1:lbl-multinet:8080 busybox-8080 10.9.8.7 8080 tags= meta=",
            ],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "host network: the label replaces the host address",
            fixture: "host",
            opts: &[Opt::IpLabel("com.example.ip")],
            labels: &[("com.example.ip", "10.9.8.7")],
            env: NONE,
            instances: &[
                "node1:lbl-host:53:udp busybox-53 10.9.8.7 53 tags=udp meta=",
                "node1:lbl-host:80 busybox-80 10.9.8.7 80 tags= meta=",
                "node1:lbl-host:8125:udp busybox-8125 10.9.8.7 8125 tags=udp meta=",
            ],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "a bad value in the label is warned and ignored",
            fixture: "web",
            opts: &[Opt::IpLabel("com.example.ip")],
            labels: &[("com.example.ip", "not an ip!")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "W label com.example.ip=\"not an ip!\": not an IP address or DNS host name; --ip-from-label ignored",
            ],
        },
    ];
    for c in &cases {
        c.check();
    }
}

#[test]
fn sctp_is_marked_like_udp() {
    let mut view = fixture("host");
    view.exposed = vec!["3868/sctp".parse().unwrap()];
    view.labels.insert("SERVICE_ID".into(), "diameter".into());
    let out = plan_container(&view, &settings());
    let got: Vec<String> = out.instances.iter().map(render).collect();
    assert_eq!(got, ["diameter busybox 192.0.2.10 3868 tags=sctp meta="]);
    view.labels.clear();
    let out = plan_container(&view, &settings());
    let got: Vec<String> = out.instances.iter().map(render).collect();
    assert_eq!(
        got,
        ["node1:lbl-host:3868:sctp busybox 192.0.2.10 3868 tags=sctp meta="]
    );
}

#[test]
fn id_rules() {
    let cases = [
        Case {
            name: "container-wide SERVICE_ID, one port: as written",
            fixture: "web",
            opts: &[],
            labels: &[("SERVICE_ID", "web-1")],
            env: NONE,
            instances: &["web-1 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "container-wide SERVICE_ID, several ports: -<port>",
            fixture: "multi",
            opts: &[],
            labels: &[("SERVICE_ID", "shop")],
            env: NONE,
            instances: &[
                "shop-443 busybox-443 192.0.2.10 18443 tags= meta=",
                "shop-80 busybox-80 192.0.2.10 18081 tags= meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_9000],
        },
        Case {
            name: "container-wide SERVICE_ID with tcp and udp: -<port>:udp",
            fixture: "udp",
            opts: &[],
            labels: &[("SERVICE_ID", "dns")],
            env: NONE,
            instances: &[
                "dns-53 busybox-53 192.0.2.10 15353 tags= meta=",
                "dns-53:udp busybox-53 192.0.2.10 15353 tags=udp meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_80],
        },
        Case {
            name: "per-port id as written; other ports default",
            fixture: "multi",
            opts: &[],
            labels: &[("SERVICE_443_ID", "tls.1")],
            env: NONE,
            instances: &[
                "node1:lbl-multi:80 busybox-80 192.0.2.10 18081 tags= meta=",
                "tls.1 busybox-443 192.0.2.10 18443 tags= meta=",
            ],
            checks: &[],
            notes: &[EXPOSED_9000],
        },
        Case {
            name: "berth.id wins over SERVICE_ID",
            fixture: "web",
            opts: &[],
            labels: &[("berth.id", "native-id"), ("SERVICE_ID", "reg-id")],
            env: NONE,
            instances: &["native-id busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[],
        },
        Case {
            name: "unusable id falls back to the default",
            fixture: "web",
            opts: &[],
            labels: &[("SERVICE_ID", "a/b c")],
            env: NONE,
            instances: &["node1:lbl-web:80 busybox 192.0.2.10 18080 tags= meta="],
            checks: &[],
            notes: &[
                "W label SERVICE_ID=\"a/b c\": not a usable id (no spaces, /, ?, # or %); using the default id",
            ],
        },
        Case {
            name: "per-port ids that clash are disambiguated",
            fixture: "multi",
            opts: &[],
            labels: &[("SERVICE_80_ID", "same"), ("SERVICE_443_ID", "same")],
            env: NONE,
            instances: &[
                "same:18081 busybox-80 192.0.2.10 18081 tags= meta=",
                "same:18443 busybox-443 192.0.2.10 18443 tags= meta=",
            ],
            checks: &[],
            notes: &[
                EXPOSED_9000,
                "I id same is shared by several instances; appended the registered port",
            ],
        },
    ];
    for case in &cases {
        case.check();
    }
}

#[test]
fn meta_limits() {
    let mut view = fixture("web");
    view.labels.insert("SERVICE_LONG".into(), "é".repeat(300)); // 600 bytes
    view.labels
        .insert(format!("berth.meta.{}", "k".repeat(130)), "v".into());
    for i in 0..70 {
        view.labels
            .insert(format!("berth.meta.m{i:02}"), i.to_string());
    }
    let out = plan_container(&view, &settings());
    assert_invariants(&out);
    let [instance] = out.instances.as_slice() else {
        panic!("{:?}", out.instances);
    };
    // Sorted keys: "k…" (128 k's), "long", then m00.. : the first 59 are kept.
    assert_eq!(instance.meta.len(), 59);
    assert_eq!(instance.meta["long"], "é".repeat(256));
    assert_eq!(instance.meta["k".repeat(128).as_str()], "v");
    assert!(instance.meta.contains_key("m56"));
    assert!(!instance.meta.contains_key("m57"));
    let warns: Vec<&str> = out
        .notes
        .iter()
        .filter(|n| n.level == Level::Warn)
        .map(|n| n.message.as_str())
        .collect();
    assert_eq!(warns.len(), 2 + 13, "{warns:#?}");
    assert!(warns[1].ends_with(": meta key longer than 128 characters; truncated"));
    assert_eq!(
        warns[0],
        format!(
            "label SERVICE_LONG={}: meta value longer than 512 bytes; truncated",
            quote(&"é".repeat(300))
        )
    );
    assert_eq!(
        warns[2],
        "label berth.meta.m57=\"57\": more than 59 user meta keys (Consul allows 64, berth adds 5); dropped"
    );
}

#[test]
fn health_follows_docker_healthcheck() {
    let unhealthy = plan_container(&fixture("unhealthy"), &settings());
    assert_eq!(
        unhealthy.instances.iter().map(render).collect::<Vec<_>>(),
        ["node1:lbl-unhealthy:80 busybox 192.0.2.10 18090 tags= meta="]
    );
    assert_eq!(
        unhealthy.instances[0].health,
        Health::critical("Docker HEALTHCHECK: unhealthy: boom")
    );

    let long = "ü".repeat(3000); // 6000 bytes
    let cases = [
        (
            None,
            Status::Passing,
            "berth: container lbl-web is running".to_owned(),
        ),
        (
            Some(DockerHealth::Healthy),
            Status::Passing,
            "Docker HEALTHCHECK: healthy".to_owned(),
        ),
        (
            Some(DockerHealth::Starting),
            Status::Critical,
            "Docker HEALTHCHECK: starting".to_owned(),
        ),
        (
            Some(DockerHealth::Unhealthy(String::new())),
            Status::Critical,
            "Docker HEALTHCHECK: unhealthy".to_owned(),
        ),
        (
            Some(DockerHealth::Unhealthy(long)),
            Status::Critical,
            // The whole output is capped at 4096 bytes: 31 bytes of prefix + 2032 × 2 bytes.
            format!("Docker HEALTHCHECK: unhealthy: {}", "ü".repeat(2032)),
        ),
    ];
    for (docker, status, output) in cases {
        let mut view = fixture("web");
        view.health = docker.clone();
        let out = plan_container(&view, &settings());
        assert_eq!(out.instances.len(), 1);
        let h = &out.instances[0].health;
        assert_eq!(
            (h.status, h.output.as_str()),
            (status, output.as_str()),
            "{docker:?}"
        );
    }
}

#[test]
fn origin_is_the_container() {
    let out = plan_container(&fixture("regenv"), &settings());
    let origins: Vec<&Origin> = out.instances.iter().map(|i| &i.origin).collect();
    let want = Origin {
        node: "node1".into(),
        container_id: "cde37312b9427a218b1900ce786a1985995955951244e48fad9a8025ac60095e".into(),
        container_name: "lbl-regenv".into(),
        image: "registry.example.com:5000/acme/berthlbl-busybox:1.0".into(),
    };
    assert_eq!(origins, [&want, &want]);
}

#[test]
fn fixtures_parse_with_bollard() {
    // Docker writes ExposedPorts as an object; bollard must turn it into its Vec<String>.
    let multi = fixture("multi");
    let exposed: Vec<String> = multi.exposed.iter().map(ToString::to_string).collect();
    assert_eq!(exposed, ["80/tcp", "443/tcp", "9000/tcp"]);
    let host = fixture("host");
    let exposed: Vec<String> = host.exposed.iter().map(ToString::to_string).collect();
    assert_eq!(exposed, ["53/udp", "80/tcp", "8125/udp"]);
    assert!(host.host_network() && host.bindings.is_empty());
    let v6bind = fixture("v6bind");
    let hosts: Vec<String> = v6bind
        .bindings
        .iter()
        .map(|b| format!("{:?}:{}", b.host_ip, b.host_port))
        .collect();
    assert_eq!(hosts, ["Some(127.0.0.1):18094", "Some(::1):18094"]);
    let multinet = fixture("multinet");
    let nets: Vec<String> = multinet
        .networks
        .iter()
        .map(|a| format!("{}={:?}", a.name, a.ipv4))
        .collect();
    assert_eq!(
        nets,
        ["berthlbl-a=Some(172.18.0.3)", "berthlbl-b=Some(172.19.0.2)"]
    );
    let regenv = fixture("regenv");
    assert_eq!(regenv.env["SERVICE_NAME"], "from-env");
    assert_eq!(regenv.labels["SERVICE_NAME"], "from-label");
    assert!(fixture("paused").paused && fixture("paused").running);
    assert!(!fixture("stopped").running);
}

#[test]
fn image_names() {
    let cases = [
        ("registry:5000/org/nginx:1.2@sha256:abc", "nginx"),
        ("redis", "redis"),
        ("redis:7", "redis"),
        ("library/redis@sha256:0123", "redis"),
        ("localhost:5000/redis", "redis"),
        ("", ""),
    ];
    for (image, want) in cases {
        assert_eq!(sanitize::image_name(image), want, "{image}");
    }
    assert_eq!(sanitize::service_name("My_App.v2"), "my-app-v2");
    assert_eq!(sanitize::service_name("--x--"), "x");
    assert_eq!(
        sanitize::meta_key("Build.SHA"),
        ("build_sha".to_owned(), false)
    );
}

#[test]
fn lists_and_booleans() {
    assert_eq!(sanitize::split_list(r"a\,b,c"), ["a,b", "c"]);
    assert_eq!(sanitize::split_list(r" x , ,x,\,"), ["x", ","]);
    assert!(sanitize::split_list("").is_empty());
    assert_eq!(sanitize::parse_bool("On"), Some(true));
    assert_eq!(sanitize::parse_bool(""), Some(false));
    assert_eq!(sanitize::parse_bool("2"), None);
    assert_eq!(sanitize::address("::1"), Ok("::1".to_owned()));
    assert_eq!(
        sanitize::address("db-1.internal."),
        Ok("db-1.internal.".to_owned())
    );
    assert!(sanitize::address("1.2.3.999").is_err());
    assert!(sanitize::address("-bad.example").is_err());
}

proptest! {
    /// Whatever the labels, the outcome keeps its contract and planning never panics.
    #[test]
    fn any_labels_keep_the_contract(
        entries in proptest::collection::vec(
            (
                prop::sample::select(vec![
                    "SERVICE_NAME", "SERVICE_ID", "SERVICE_TAGS", "SERVICE_IGNORE",
                    "SERVICE_80_NAME", "SERVICE_80_ID", "SERVICE_443_ID", "SERVICE_80_IGNORE",
                    "SERVICE_53_UDP_NAME", "SERVICE_53_ID", "SERVICE_CHECK_HTTP",
                    "SERVICE_80_CHECK_SCRIPT", "SERVICE_X", "berth.enable", "berth.name",
                    "berth.id", "berth.port", "berth.address", "berth.network", "berth.tags",
                    "berth.meta.a", "berth.service.a.port", "berth.service.b.port",
                    "berth.service.a.id", "berth.service.b.name", "berth.check.http",
                ]),
                prop::sample::select(vec![
                    "", "x", "true", "false", "80", "443", "53/udp", "9000", "same", "a,b",
                    "Web_1", "!!", "10.0.0.1", "berthlbl-b", "a/b",
                ]),
            ),
            0..8,
        ),
        fixture_name in prop::sample::select(vec!["web", "multi", "udp", "twobind", "v6bind", "multinet", "host"]),
        internal in any::<bool>(),
        explicit in any::<bool>(),
    ) {
        let mut view = fixture(fixture_name);
        for (k, v) in entries {
            view.labels.insert(k.to_owned(), v.to_owned());
        }
        let s = Settings { internal, explicit, ..settings() };
        let out = plan_container(&view, &s);
        assert_invariants(&out);
        prop_assert_eq!(out.clone(), plan_container(&view, &s));
    }
}

#[test]
fn wildcard_bindings_on_different_ports_register_the_host_ip_family_only() {
    // Docker 20.10 at times publishes `-p 80` as 0.0.0.0:18080 and [::]:18081.
    let mut view = fixture("web");
    let private = view.bindings[0].private;
    view.bindings = vec![
        crate::docker::view::Binding {
            private,
            host_ip: None,
            host_port: 18080,
            v6_wildcard: false,
        },
        crate::docker::view::Binding {
            private,
            host_ip: None,
            host_port: 18081,
            v6_wildcard: true,
        },
    ];
    let v4 = plan_container(&view, &settings());
    let ports: Vec<u16> = v4.instances.iter().map(|i| i.port).collect();
    assert_eq!(ports, [18080]);
    assert!(
        v4.notes
            .iter()
            .any(|n| n.message.contains("IPv6 wildcard at host port 18081")),
        "{:?}",
        v4.notes
    );

    let mut s = settings();
    s.host_ip = "2001:db8::10".parse().unwrap();
    let v6 = plan_container(&view, &s);
    let got: Vec<(String, u16)> = v6
        .instances
        .iter()
        .map(|i| (i.address.clone(), i.port))
        .collect();
    assert_eq!(got, [("2001:db8::10".to_owned(), 18081)]);
}

/// `id name kind-target interval timeout rise/fall initial`, one per probe.
fn render_probes(out: &Outcome) -> Vec<String> {
    let mut lines = Vec::new();
    for (id, p) in &out.probes {
        for c in &p.checks {
            let what = match &c.kind {
                ProbeKind::Http {
                    method,
                    url,
                    tls_skip_verify,
                } => format!(
                    "{method} {url}{}",
                    if *tls_skip_verify { " insecure" } else { "" }
                ),
                ProbeKind::Tcp(t) => format!("tcp {t}"),
                ProbeKind::Grpc { target, service } => format!("grpc {target} {service:?}"),
            };
            lines.push(format!(
                "{id} {} {what} every {:?} timeout {:?} rise {} fall {} initial {}",
                c.name, c.interval, c.timeout, c.rise, c.fall, c.initial
            ));
        }
        if let Some(d) = p.deregister_after {
            lines.push(format!("{id} deregister_after {d:?}"));
        }
    }
    lines
}

fn probes_of(fixture_name: &str, labels: &[(&str, &str)], opts: &[Opt]) -> (Outcome, Vec<String>) {
    let mut view = fixture(fixture_name);
    for (k, v) in labels {
        view.labels.insert((*k).into(), (*v).into());
    }
    let mut s = settings();
    for opt in opts {
        if let Opt::Network(n) = opt {
            s.network = Some((*n).into());
        }
    }
    let out = plan_container(&view, &s);
    assert_invariants(&out);
    let lines = render_probes(&out);
    (out, lines)
}

#[test]
fn probes_dial_the_container_and_follow_registrator_keys() {
    let (out, lines) = probes_of(
        "web",
        &[
            ("SERVICE_CHECK_HTTP", "/health"),
            ("SERVICE_CHECK_TCP", "true"),
            ("SERVICE_CHECK_INTERVAL", "3s"),
            ("SERVICE_CHECK_TIMEOUT", "9s"),
            ("SERVICE_CHECK_HTTP_METHOD", "head"),
            ("SERVICE_CHECK_INITIAL_STATUS", "passing"),
            ("SERVICE_CHECK_DEREGISTER_AFTER", "90s"),
            ("SERVICE_CHECK_TTL", "30s"),
        ],
        &[],
    );
    // The container IP and container port, not 192.0.2.10:18080 (docker-proxy would accept).
    assert_eq!(
        lines,
        [
            "node1:lbl-web:80 http HEAD http://172.17.0.2:80/health every 3s timeout 3s rise 1 fall 1 initial passing",
            "node1:lbl-web:80 deregister_after 90s",
        ]
    );
    let notes: Vec<String> = out.notes.iter().map(render_note).collect();
    assert!(notes.contains(&"W label SERVICE_CHECK_TCP=\"true\": a check has one kind and http takes precedence; ignored".to_owned()), "{notes:?}");
    assert!(
        notes.contains(
            &"I label SERVICE_CHECK_TIMEOUT=\"9s\": longer than the interval; capped at it"
                .to_owned()
        ),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("I label SERVICE_CHECK_TTL")),
        "{notes:?}"
    );
    assert!(!out.autoheal);
}

#[test]
fn native_checks_override_add_and_inherit() {
    let (out, lines) = probes_of(
        "web",
        &[
            ("SERVICE_CHECK_HTTP", "/old"),
            ("berth.check.tcp", "true"),
            ("berth.check.port", "9"),
            ("berth.check.interval", "500ms"),
            ("berth.check.fall", "3"),
            ("berth.check.page.https", "true"),
            ("berth.check.page.path", "/ready"),
            ("berth.check.page.tls_skip_verify", "true"),
            ("berth.check.page.rise", "2"),
            ("berth.check.rpc.grpc", "my.Service"),
            ("berth.check.rpc.interval", "20s"),
            ("berth.check.bad.fall", "0"),
            ("berth.check.nokind.interval", "5s"),
            ("berth.autoheal", "true"),
        ],
        &[],
    );
    assert_eq!(
        lines,
        [
            "node1:lbl-web:80 page GET https://172.17.0.2:80/ready insecure every 1s timeout 1s rise 2 fall 3 initial critical",
            "node1:lbl-web:80 rpc grpc 172.17.0.2:80 \"my.Service\" every 20s timeout 5s rise 1 fall 3 initial critical",
            "node1:lbl-web:80 tcp tcp 172.17.0.2:9 every 1s timeout 1s rise 1 fall 3 initial critical",
        ]
    );
    let notes: Vec<String> = out.notes.iter().map(render_note).collect();
    for want in [
        "I label SERVICE_CHECK_HTTP=\"/old\": replaced by the berth.check.* check",
        "W label berth.check.interval=\"500ms\": below the 1s minimum; using 1s",
        "W check nokind: no kind is set (berth.check.nokind.http, .https, .tcp or .grpc); ignored",
        "W check bad: no kind is set (berth.check.bad.http, .https, .tcp or .grpc); ignored",
    ] {
        assert!(
            notes.contains(&want.to_owned()),
            "missing {want:?} in {notes:?}"
        );
    }
    assert!(out.autoheal);
}

#[test]
fn service_scoped_checks_host_network_and_the_short_autoheal_label() {
    let (out, lines) = probes_of(
        "multinet",
        &[
            ("berth.service.app.port", "80"),
            ("berth.service.app.check.http", "/health"),
            ("berth.service.admin.port", "8080"),
            ("autoheal", "true"),
        ],
        &[Opt::Network("berthlbl-b")],
    );
    // Probes use the named network's IP; the unpublished 8080 service does not register.
    assert_eq!(
        lines,
        [
            "node1:lbl-multinet:80 http GET http://172.19.0.2:80/health every 10s timeout 5s rise 1 fall 1 initial critical"
        ]
    );
    assert!(out.autoheal);

    let (_, lines) = probes_of(
        "host",
        &[("berth.check.tcp", "true"), ("berth.port", "80")],
        &[],
    );
    assert_eq!(
        lines,
        [
            "node1:lbl-host:80 tcp tcp 192.0.2.10:80 every 10s timeout 5s rise 1 fall 1 initial critical"
        ],
        "host network: the registered address"
    );
    let (out, lines) = probes_of("web", &[("berth.autoheal", "sometimes")], &[]);
    assert!(lines.is_empty() && !out.autoheal);
    assert!(
        out.notes
            .iter()
            .any(|n| n.message.contains("not a boolean"))
    );
}

#[test]
fn more_specific_scopes_replace_the_check_kind() {
    // A per-port registrator kind replaces the container-wide one for that port only.
    let (_, lines) = probes_of(
        "multi",
        &[
            ("SERVICE_CHECK_HTTP", "/health"),
            ("SERVICE_443_CHECK_TCP", "true"),
        ],
        &[],
    );
    assert_eq!(
        lines,
        [
            "node1:lbl-multi:443 tcp tcp 172.17.0.3:443 every 10s timeout 5s rise 1 fall 1 initial critical",
            "node1:lbl-multi:80 http GET http://172.17.0.3:80/health every 10s timeout 5s rise 1 fall 1 initial critical",
        ]
    );
    // A service's kind replaces the container's; an explicit path beats an inherited one;
    // named checks do not inherit the default check's path or port.
    let (out, lines) = probes_of(
        "web",
        &[
            ("berth.check.http", "true"),
            ("berth.check.path", "/health"),
            ("berth.check.port", "8081"),
            ("berth.check.ready.http", "/ready"),
            ("berth.service.app.port", "80"),
            ("berth.service.app.check.tcp", "true"),
            ("berth.service.app.check.tcp.tcp", "true"),
            ("berth.check.timeout", "0s"),
        ],
        &[],
    );
    assert_eq!(
        lines,
        [
            "node1:lbl-web:80 ready GET http://172.17.0.2:80/ready every 10s timeout 5s rise 1 fall 1 initial critical",
            "node1:lbl-web:80 tcp tcp 172.17.0.2:8081 every 10s timeout 5s rise 1 fall 1 initial critical",
        ]
    );
    let notes: Vec<String> = out.notes.iter().map(render_note).collect();
    for want in [
        "W label berth.check.timeout=\"0s\": a timeout must be positive; using 5s",
        "W check tcp: the name is taken by the default check; use another name; ignored",
    ] {
        assert!(
            notes.contains(&want.to_owned()),
            "missing {want:?} in {notes:?}"
        );
    }
}

#[test]
fn drain_follows_the_stop_signal_the_stop_timeout_and_the_label() {
    use std::time::Duration;
    let plan = |labels: &[(&str, &str)], signal: Option<&str>, timeout: Option<i64>, on: bool| {
        let mut view = fixture("web");
        for (k, v) in labels {
            view.labels.insert((*k).into(), (*v).into());
        }
        view.stop_signal = signal.map(Into::into);
        view.stop_timeout = timeout;
        let s = Settings {
            drain_on_stop: on,
            ..settings()
        };
        let out = plan_container(&view, &s);
        assert_invariants(&out);
        out
    };
    let drain = |signal, secs| {
        Some(Drain {
            signal,
            timeout: Duration::from_secs(secs),
        })
    };
    // Docker's defaults: SIGTERM, 10 s.
    assert_eq!(plan(&[], None, None, true).drain, drain(15, 10));
    assert_eq!(
        plan(&[], Some("SIGQUIT"), Some(30), true).drain,
        drain(3, 30)
    );
    assert_eq!(plan(&[], Some("2"), Some(0), true).drain, drain(2, 0));
    // A negative stop timeout makes Docker wait for ever: the drain waits an hour at most.
    assert_eq!(
        plan(&[], None, Some(-1), true).drain,
        drain(15, drain::LONGEST.as_secs())
    );
    // The label turns it off, or on against the flag.
    assert_eq!(
        plan(&[("berth.drain", "false")], None, None, true).drain,
        None
    );
    assert_eq!(plan(&[], None, None, false).drain, None);
    assert_eq!(
        plan(&[("berth.drain", "true")], None, None, false).drain,
        drain(15, 10)
    );
    // A bad value is a warning; the flag decides.
    let out = plan(&[("berth.drain", "maybe")], None, None, true);
    assert_eq!(out.drain, drain(15, 10));
    let notes: Vec<String> = out.notes.iter().map(render_note).collect();
    assert!(
        notes.contains(
            &r#"W label berth.drain="maybe": not a boolean (use true/false); ignored"#.to_owned()
        ),
        "{notes:?}"
    );
    // A stop signal berth cannot read: SIGTERM, said once.
    let out = plan(&[], Some("SIGWHAT"), None, true);
    assert_eq!(out.drain, drain(15, 10));
    assert!(
        out.notes.iter().any(|n| n
            .message
            .contains(r#"stop signal "SIGWHAT" is not one berth knows"#)),
        "{:?}",
        out.notes
    );
    // A container that registers nothing has nothing to drain.
    let mut stopped = fixture("web");
    stopped.running = false;
    assert_eq!(plan_container(&stopped, &settings()).drain, None);
    let out = plan(&[("berth.enable", "false")], None, None, true);
    assert_eq!(out.drain, None);
}
