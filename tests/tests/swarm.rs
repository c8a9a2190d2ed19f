//! The Swarm deployment, for real: `docker swarm init` on this engine, berth's image deployed
//! as the global service of deploy/swarm/berth-stack.yml (and the overlay agent of
//! berth-overlay-stack.yml), the labelled services of deploy/swarm/sample-stack.yml, and a
//! real Consul on the host. Scaling, a rolling update of berth and `docker stack rm` are
//! checked in Consul's catalog. Everything is removed and the swarm left, on failure too.
//!
//! When the engine is already in a swarm this test did not create, it is skipped with a
//! message: leaving someone's swarm is not a test's business.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_e2e::agent::eventually;
use berth_e2e::consul::ConsulServer;
use berth_e2e::docker::{self, berth_image, default_route_ip, docker, socket_gid, try_docker};
use berth_e2e::{free_port, wait_for};
use serde_json::Value;

const BERTH_STACK: &str = "be2e-berth";
const OVERLAY_STACK: &str = "be2e-overlay";
const SAMPLE_STACK: &str = "be2e-sample";
const NETWORK: &str = "be2e-apps";
/// Where berth-stack.yml puts the admin server: the node's loopback.
const ADMIN: &str = "127.0.0.1:9797";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/swarm")
}

/// The swarm this test created, and what it deployed into it; all removed on drop.
struct Swarm;

impl Swarm {
    /// `docker swarm init`, or `None` when the engine is in a swarm already.
    fn init(advertise: &str) -> Option<Swarm> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if state != "inactive" {
            println!(
                "SKIPPED: the Docker engine is already in a swarm (state {state}) that this \
                 test did not create; it will not init or leave it"
            );
            return None;
        }
        docker(&["swarm", "init", "--advertise-addr", advertise]);
        Some(Swarm)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for stack in [SAMPLE_STACK, OVERLAY_STACK, BERTH_STACK] {
            let _ = try_docker(&["stack", "rm", stack]);
        }
        // Tasks' containers go before their network can.
        wait_until(Duration::from_secs(60), || {
            try_docker(&["ps", "-aq", "--filter", "label=com.docker.stack.namespace"])
                .is_ok_and(|out| out.is_empty())
        });
        let _ = try_docker(&["network", "rm", NETWORK]);
        let _ = try_docker(&["swarm", "leave", "--force"]);
    }
}

/// Polls `f` until it holds or `timeout` passes; for cleanup, which must not panic.
fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout && !f() {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker stack deploy` of `file` as `stack`, with `env` for the file's variables.
fn deploy(stack: &str, file: &str, env: &[(&str, String)]) {
    let out = Command::new("docker")
        .args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "--detach=true",
        ])
        .arg("-c")
        .arg(deploy_dir().join(file))
        .arg(stack)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker stack deploy {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every catalog entry of `name` as (id, address, port, berth-node meta).
fn catalog(consul: &ConsulServer, name: &str) -> Vec<(String, String, u64, String)> {
    let mut rows: Vec<_> = consul
        .catalog(name)
        .iter()
        .map(|e| {
            (
                e["ServiceID"].as_str().unwrap_or_default().to_owned(),
                e["ServiceAddress"].as_str().unwrap_or_default().to_owned(),
                e["ServicePort"].as_u64().unwrap_or_default(),
                e["ServiceMeta"]["berth-node"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The running task containers of service `<stack>_<service>`, as `docker inspect` JSON.
fn tasks(stack: &str, service: &str) -> Vec<Value> {
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={stack}_{service}"),
    ]);
    // A task can exit between the listing and its inspect: it is not running then.
    ids.split_whitespace()
        .filter_map(|id| try_docker(&["inspect", id]).ok())
        .map(|out| {
            let v: Value = serde_json::from_str(&out).unwrap();
            v[0].clone()
        })
        .collect()
}

/// What berth should have registered for each running task of `service`: `(id, address,
/// port, node)`, from `docker inspect` alone; `None` while a task is still starting (no host
/// port or overlay address yet).
fn expected(
    service: &str,
    node: &str,
    host_ip: &str,
) -> Option<Vec<(String, String, u64, String)>> {
    let mut rows = Vec::new();
    for t in tasks(SAMPLE_STACK, service) {
        let name = t["Name"].as_str()?.trim_start_matches('/').to_owned();
        if service == "web" {
            let port = t["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
                .as_str()?
                .parse()
                .ok()?;
            rows.push((
                format!("{node}:{name}:80"),
                host_ip.to_owned(),
                port,
                node.to_owned(),
            ));
        } else {
            let overlay_node = format!("{node}-{NETWORK}");
            let ip = t["NetworkSettings"]["Networks"][NETWORK]["IPAddress"].as_str()?;
            if ip.is_empty() {
                return None;
            }
            rows.push((
                format!("{overlay_node}:{name}:80"),
                ip.to_owned(),
                80,
                overlay_node,
            ));
        }
    }
    rows.sort();
    Some(rows)
}

/// Waits until `name`'s catalog is exactly what the running tasks of `service` call for,
/// with `replicas` of them, every one passing.
fn converge(
    consul: &ConsulServer,
    name: &str,
    service: &str,
    replicas: usize,
    node: &str,
    host_ip: &str,
) -> Vec<(String, String, u64, String)> {
    eventually(
        &format!("{name} to converge to {replicas} passing instance(s)"),
        Duration::from_secs(90),
        || {
            let want = expected(service, node, host_ip).ok_or("a task is still starting")?;
            let have = catalog(consul, name);
            let passing: BTreeSet<String> = consul
                .passing(name)
                .into_iter()
                .map(|(id, _, _)| id)
                .collect();
            let all_passing = have.iter().all(|(id, ..)| passing.contains(id));
            if want.len() == replicas && want == have && all_passing {
                Ok(have)
            } else {
                Err(format!(
                    "want {want:#?}\nhave {have:#?}\npassing {passing:?}"
                ))
            }
        },
        service_logs,
    )
}

fn service_logs() -> String {
    let mut out = String::new();
    for svc in [
        format!("{BERTH_STACK}_berth"),
        format!("{OVERLAY_STACK}_berth"),
    ] {
        let logs = Command::new("docker")
            .args(["service", "logs", "--raw", "--tail", "15", &svc])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default();
        out += &format!("--- {svc}:\n{logs}");
    }
    out
}

fn ready() -> bool {
    reqwest::blocking::Client::new()
        .get(format!("http://{ADMIN}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .is_ok_and(|r| r.status().is_success())
}

/// The host agent's `/v1/status`.
fn status() -> Option<Value> {
    reqwest::blocking::Client::new()
        .get(format!("http://{ADMIN}/v1/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .ok()?
        .json()
        .ok()
}

fn berth_task_ids() -> BTreeSet<String> {
    tasks(BERTH_STACK, "berth")
        .iter()
        .map(|t| t["Id"].as_str().unwrap().to_owned())
        .collect()
}

/// deploy/swarm/sample/Dockerfile built on the test image (nothing can be pulled).
fn sample_image() -> &'static str {
    const TAG: &str = "berth-e2e-sample:latest";
    let base = docker::image();
    docker(&[
        "build",
        "-q",
        "--build-arg",
        &format!("BASE={base}"),
        "-t",
        TAG,
        deploy_dir().join("sample").to_str().unwrap(),
    ]);
    TAG
}

#[test]
fn a_global_stack_registers_swarm_tasks_through_scaling_updates_and_removal() {
    let image = berth_image();
    let sample_image = sample_image();
    let host_ip = default_route_ip();
    let Some(_swarm) = Swarm::init(&host_ip) else {
        return;
    };
    let node = docker(&["info", "--format", "{{.Name}}"]);
    let consul = ConsulServer::start();
    let gid = socket_gid();

    // The host agent: Consul on the host's loopback.
    deploy(
        BERTH_STACK,
        "berth-stack.yml",
        &[
            ("BERTH_IMAGE", image.to_owned()),
            ("DOCKER_GID", gid.clone()),
            ("BERTH_CONSUL_ADDR", consul.addr()),
            ("BERTH_RESYNC", "2s".to_owned()),
        ],
    );
    wait_for(
        "berth's global task to be ready",
        Duration::from_secs(60),
        || ready().then_some(()),
    );
    let spec: Value = serde_json::from_str(&docker(&[
        "service",
        "inspect",
        &format!("{BERTH_STACK}_berth"),
    ]))
    .unwrap();
    assert!(
        spec[0]["Spec"]["Mode"]["Global"].is_object(),
        "a global service"
    );

    // The overlay network, the overlay agent (Consul through the docker_gwbridge gateway),
    // then the sample services.
    docker(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--label",
        "berth-e2e=1",
        NETWORK,
    ]);
    let gateway = docker::gateway("docker_gwbridge");
    let relay_port = free_port();
    let _relay = docker::tcp_relay(&gateway, relay_port, consul.http_port);
    deploy(
        OVERLAY_STACK,
        "berth-overlay-stack.yml",
        &[
            ("BERTH_IMAGE", image.to_owned()),
            ("DOCKER_GID", gid.clone()),
            ("BERTH_NETWORK", NETWORK.to_owned()),
            (
                "BERTH_CONSUL_ADDR",
                format!("http://{gateway}:{relay_port}"),
            ),
        ],
    );
    deploy(
        SAMPLE_STACK,
        "sample-stack.yml",
        &[
            ("SAMPLE_IMAGE", sample_image.to_owned()),
            ("SAMPLE_NETWORK", NETWORK.to_owned()),
            ("MESH_PORT", free_port().to_string()),
        ],
    );
    let web = converge(&consul, "sample-web", "web", 1, &node, &host_ip);
    let api = converge(&consul, "sample-api", "api", 1, &node, &host_ip);
    println!("registered: {web:?} {api:?}");
    assert_eq!(
        web[0].3, node,
        "the host agent's instances carry the node's name"
    );
    assert!(
        !api[0].1.is_empty() && api[0].1 != host_ip,
        "api is at its overlay address"
    );

    // A routing-mesh port has no host binding in the task's container: the host agent
    // registers nothing for it, and says why on /v1/status.
    let mesh = wait_for(
        "the mesh task, skipped with its reason",
        Duration::from_secs(60),
        || {
            let task = tasks(SAMPLE_STACK, "mesh").into_iter().next()?;
            let name = task["Name"].as_str()?.trim_start_matches('/').to_owned();
            let status = status()?;
            status["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == name.as_str())
                .cloned()
        },
    );
    assert_eq!(mesh["skipped"], "no_ports", "{mesh:#}");
    assert!(
        mesh["notes"]
            .to_string()
            .contains("exposed but not published"),
        "{mesh:#}"
    );
    assert!(catalog(&consul, "sample-mesh").is_empty());

    // Scaling: 3 tasks, 3 instances; back to 1, 1.
    for replicas in [3, 1] {
        docker(&[
            "service",
            "scale",
            "--detach=true",
            &format!("{SAMPLE_STACK}_web={replicas}"),
            &format!("{SAMPLE_STACK}_api={replicas}"),
        ]);
        let scaled = Instant::now();
        converge(&consul, "sample-web", "web", replicas, &node, &host_ip);
        converge(&consul, "sample-api", "api", replicas, &node, &host_ip);
        println!(
            "scaled to {replicas}: registry exact after {:?}",
            scaled.elapsed()
        );
    }

    // A rolling update of the host agent: the sample's instance never leaves the catalog
    // and never stops passing (polled every 100 ms throughout).
    let before = catalog(&consul, "sample-web");
    let old_tasks = berth_task_ids();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, consul_addr) = (stop.clone(), consul.addr());
        let before = before.clone();
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut polls = 0;
            let mut flaps = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{consul_addr}/v1/health/service/sample-web");
                if let Ok(v) = http
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .and_then(|r| r.json::<Value>())
                {
                    polls += 1;
                    let entries = v.as_array().cloned().unwrap_or_default();
                    let ids: Vec<String> = entries
                        .iter()
                        .map(|e| e["Service"]["ID"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    let statuses: Vec<String> = entries
                        .iter()
                        .flat_map(|e| e["Checks"].as_array().cloned().unwrap_or_default())
                        .map(|c| c["Status"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    let want: Vec<String> = before.iter().map(|r| r.0.clone()).collect();
                    if ids != want || statuses.iter().any(|s| s != "passing") {
                        flaps.push(format!("{ids:?} {statuses:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (polls, flaps)
        })
    };
    let updated = Instant::now();
    docker(&[
        "service",
        "update",
        "--force",
        "--detach=true",
        &format!("{BERTH_STACK}_berth"),
    ]);
    wait_for("a new berth task, ready", Duration::from_secs(90), || {
        let now = berth_task_ids();
        (!now.is_empty() && now.is_disjoint(&old_tasks) && ready()).then_some(())
    });
    println!(
        "rolling update: new berth task ready after {:?}",
        updated.elapsed()
    );
    // Two resyncs of the new agent (BERTH_RESYNC=2s) and more after it is ready.
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let (polls, flaps) = watcher.join().unwrap();
    assert!(
        polls > 20,
        "the catalog was polled throughout ({polls} polls)"
    );
    assert!(
        flaps.is_empty(),
        "sample-web changed during berth's rolling update ({} of {polls} polls): {:?}\n{}",
        flaps.len(),
        &flaps[..flaps.len().min(5)],
        service_logs()
    );
    assert_eq!(catalog(&consul, "sample-web"), before);
    println!("rolling update: {polls} polls of sample-web, every one unchanged and passing");

    // `docker stack rm` of the sample removes every instance.
    docker(&["stack", "rm", SAMPLE_STACK]);
    eventually(
        "no instance left after stack rm",
        Duration::from_secs(60),
        || {
            let (web, api) = (
                catalog(&consul, "sample-web"),
                catalog(&consul, "sample-api"),
            );
            if web.is_empty() && api.is_empty() {
                Ok(())
            } else {
                Err(format!("{web:?} {api:?}"))
            }
        },
        service_logs,
    );
}
