//! berth's image (deploy/Dockerfile, built by deploy/build-image.sh): what it holds, and
//! that `docker run` of it registers a labelled container in a real Consul, resolving the
//! Consul host by name (through /etc/hosts and through a real DNS query) and speaking TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_e2e::agent::tail;
use berth_e2e::consul::{ConsulServer, CustomConsul, make_certs_for};
use berth_e2e::dns::DnsServer;
use berth_e2e::docker::{self, Container, berth_image, default_route_ip, docker, socket_gid};
use berth_e2e::{free_port, temp_dir, wait_for};
use serde_json::Value;

/// The size the image must stay within (issue: ≤ 15 MB).
const MAX_IMAGE_BYTES: u64 = 15_000_000;

/// A busybox httpd whose `/health` answers 200, labelled as service `name` with registrator's
/// HTTP check every second; `opts` go before the labels.
fn checked_httpd(test: &str, name: &str, opts: &[&str]) -> Container {
    let mut args: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    for label in [
        format!("SERVICE_NAME={name}"),
        "SERVICE_CHECK_HTTP=/health".into(),
        "SERVICE_CHECK_INTERVAL=1s".into(),
    ] {
        args.extend(["--label".into(), label]);
    }
    args.extend([
        docker::image().to_string(),
        "sh".into(),
        "-c".into(),
        "echo ok > /health; trap 'exit 0' TERM; httpd -f -p 80 & wait".into(),
    ]);
    Container::run(test, &args)
}

/// `docker run` options of a berth container that reads the Docker socket as a non-root
/// user: the socket (read-only) and its group.
fn socket_opts() -> Vec<String> {
    vec![
        "--group-add".into(),
        socket_gid(),
        "-v".into(),
        "/var/run/docker.sock:/var/run/docker.sock:ro".into(),
    ]
}

fn logs_of(c: &Container) -> String {
    tail(&c.logs(), 30)
}

#[test]
fn the_image_is_small_static_labelled_and_holds_only_berth() {
    let image = berth_image();
    let inspect: Value = serde_json::from_str(&docker(&["image", "inspect", image])).unwrap();
    let inspect = &inspect[0];
    let size = inspect["Size"].as_u64().unwrap();
    println!("image {image}: {size} bytes");
    assert!(
        size <= MAX_IMAGE_BYTES,
        "image is {size} bytes, over {MAX_IMAGE_BYTES}"
    );
    let config = &inspect["Config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["/berth"]));
    assert_eq!(config["Cmd"], serde_json::json!(["run"]));
    assert_eq!(config["User"], "65532:65532", "runs as a non-root user");
    assert!(
        config["Healthcheck"].is_null(),
        "no HEALTHCHECK in the image"
    );
    assert!(
        config["ExposedPorts"].is_null(),
        "nothing exposed: a host-network berth would register itself"
    );
    let labels = &config["Labels"];
    for key in [
        "title",
        "description",
        "version",
        "revision",
        "created",
        "licenses",
        "source",
    ] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or_default();
        assert!(
            !value.is_empty() && value != "unknown",
            "label org.opencontainers.image.{key} is {value:?}"
        );
    }
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );

    // The files: every regular file in the exported filesystem, less the ones the engine
    // itself creates in every container.
    let created = docker(&["create", image]);
    let export = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {created} | tar -t"))
        .output()
        .unwrap();
    docker(&["rm", &created]);
    assert!(export.status.success(), "docker export: {export:?}");
    let engine_made = [
        ".dockerenv",
        "etc/hostname",
        "etc/hosts",
        "etc/resolv.conf",
        "etc/mtab",
        "dev/console",
    ];
    let files: BTreeSet<String> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .filter(|l| !engine_made.contains(l))
        .map(str::to_owned)
        .collect();
    let want: BTreeSet<String> = [
        "berth",
        "etc/nsswitch.conf",
        "etc/ssl/certs/ca-certificates.crt",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        files, want,
        "the image holds berth, its CA bundle and nsswitch.conf"
    );

    // The binary runs with nothing beside it: no loader, no libc.
    let version = docker(&["run", "--rm", image, "--version"]);
    assert_eq!(version, format!("berth {}", env!("CARGO_PKG_VERSION")));
}

/// The deployment the README shows for a plain Docker host: host network, the socket
/// read-only, its group added; Consul named by host name (`localhost`, from /etc/hosts).
#[test]
fn docker_run_of_the_image_registers_a_labelled_container() {
    let image = berth_image();
    let consul = ConsulServer::start();
    let admin = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--network".to_string(), "host".into()];
    args.extend(socket_opts());
    args.extend([
        "-e".into(),
        format!("BERTH_ADMIN_ADDR={admin}"),
        "-e".into(),
        format!("CONSUL_HTTP_ADDR=http://localhost:{}", consul.http_port),
        image.into(),
        "run".into(),
        "--ttl".into(),
        "6s".into(),
    ]);
    let berth = Container::run("image-run", &args);

    let name = docker::unique_name("img");
    let mut web = checked_httpd("image-web", &name, &["-p", "80"]);
    let port = web.host_port(80);
    let host_ip = default_route_ip();
    let want = vec![(format!("{}:{}:80", node_name(), web.name), host_ip, port)];
    let found = wait_for_passing(&consul, &name, &want, &berth);
    assert_eq!(found, want);

    // The process is not root, and `berth health` answers from inside the container.
    let top = docker(&["top", &berth.id, "-eo", "pid,uid,comm"]);
    assert!(
        top.lines()
            .any(|l| l.split_whitespace().skip(1).eq(["65532", "berth"])),
        "berth runs as uid 65532: {top}"
    );
    for (args, body) in [(vec![], "ok"), (vec!["--ready"], "ready")] {
        let mut cmd = vec!["exec", berth.id.as_str(), "/berth", "health"];
        cmd.extend(args);
        assert_eq!(docker(&cmd), body);
    }

    // Removing the container removes its instance.
    web.rm();
    wait_for("the instance to go", Duration::from_secs(20), || {
        consul.health(&name).is_empty().then_some(())
    });

    // SIGTERM: a clean exit, promptly (dockerd would SIGKILL after 10 s).
    let start = std::time::Instant::now();
    docker(&["stop", "-t", "10", &berth.id]);
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &berth.id]);
    assert_eq!(code, "0", "exit code after SIGTERM:\n{}", logs_of(&berth));
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "stop took {:?}",
        start.elapsed()
    );
}

/// On a user-defined bridge network, Consul at `https://consul.berth.test:<port>`: the name
/// resolves only through a DNS query (Docker's embedded DNS forwards it to a one-name server
/// at the network's gateway), the certificate is checked against the CA given in
/// CONSUL_CACERT, and for that name.
#[test]
fn the_image_resolves_consul_by_dns_and_verifies_its_certificate() {
    const NAME: &str = "consul.berth.test";
    let image = berth_image();
    let dir = temp_dir("image-tls");
    make_certs_for(&dir, &[NAME]);
    let hcl = format!(
        r#"ca_file = "{0}/consul-agent-ca.pem" cert_file = "{0}/dc1-server-consul-0.pem" key_file = "{0}/dc1-server-consul-0-key.pem""#,
        dir.display()
    );
    // The container user reads the CA through the bind mount.
    let certs = temp_dir("image-tls-ca");
    std::fs::copy(dir.join("consul-agent-ca.pem"), certs.join("ca.pem")).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&certs)
        .status()
        .unwrap();
    let consul = CustomConsul::start(dir.clone(), "https", &hcl);

    let net = docker::Network::create("image-tls");
    let gateway = docker::gateway(&net.name);
    let relay_port = free_port();
    let _relay = docker::tcp_relay(&gateway, relay_port, consul.port());
    let dns = DnsServer::start(&gateway, NAME, gateway.parse::<Ipv4Addr>().unwrap());

    let host_ip = default_route_ip();
    let mut args = socket_opts();
    args.extend([
        "--network".into(),
        net.name.clone(),
        "--dns".into(),
        gateway.clone(),
        "-v".into(),
        format!("{}:/certs:ro", certs.display()),
        "-e".into(),
        "CONSUL_CACERT=/certs/ca.pem".into(),
        "-e".into(),
        format!("CONSUL_HTTP_ADDR=https://{NAME}:{relay_port}"),
        image.into(),
        "run".into(),
        "--host-ip".into(),
        host_ip.clone(),
        "--ttl".into(),
        "6s".into(),
    ]);
    let berth = Container::run("image-tls", &args);

    let name = docker::unique_name("imgtls");
    let web = checked_httpd(
        "image-tls-web",
        &name,
        &["--network", &net.name, "-p", "80"],
    );
    let port = web.host_port(80);
    let id = format!("{}:{}:80", node_name(), web.name);
    let ca = dir.join("consul-agent-ca.pem");
    let found = wait_for(
        "the instance, passing, over https",
        Duration::from_secs(30),
        || {
            let v = consul_get(&ca, &consul, &format!("/v1/health/service/{name}?passing"))?;
            let rows: Vec<(String, String, u64)> = v
                .as_array()?
                .iter()
                .map(|e| {
                    (
                        e["Service"]["ID"].as_str().unwrap_or_default().to_owned(),
                        e["Service"]["Address"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        e["Service"]["Port"].as_u64().unwrap_or_default(),
                    )
                })
                .collect();
            (!rows.is_empty()).then_some(rows)
        },
    );
    assert_eq!(
        found,
        vec![(id, host_ip.clone(), u64::from(port))],
        "berth log:\n{}",
        logs_of(&berth)
    );
    assert!(dns.answered() > 0, "the name was resolved through DNS");
    drop(berth);

    // Without the CA, the same name and Consul are refused: the certificate is checked.
    let mut args = socket_opts();
    args.extend([
        "--network".into(),
        net.name.clone(),
        "--dns".into(),
        gateway,
        "-e".into(),
        format!("CONSUL_HTTP_ADDR=https://{NAME}:{relay_port}"),
        image.into(),
        "run".into(),
        "--host-ip".into(),
        host_ip,
        "--node-name".into(),
        "untrusting".into(),
    ]);
    let untrusting = Container::run("image-tls-noca", &args);
    let line = wait_for("a certificate error", Duration::from_secs(30), || {
        untrusting
            .logs()
            .lines()
            .find(|l| l.contains("invalid peer certificate"))
            .map(str::to_owned)
    });
    println!("without the CA: {line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    // It keeps retrying, and never gets a write through: the labelled container running
    // meanwhile is registered only by the first agent (which trusted the CA).
    std::thread::sleep(Duration::from_secs(3));
    let entries = consul_get(&ca, &consul, &format!("/v1/catalog/service/{name}"))
        .expect("the catalog over https");
    let nodes: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ServiceMeta"]["berth-node"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        nodes,
        [node_name()],
        "nothing registers without trust:\n{}",
        tail(&untrusting.logs(), 20)
    );
    let _ = std::fs::remove_dir_all(&certs);
}

/// GET `path` of the HTTPS Consul, trusting `ca`; `None` when it does not answer with JSON.
fn consul_get(ca: &Path, consul: &CustomConsul, path: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(ca)
        .arg(format!("https://127.0.0.1:{}{path}", consul.port()))
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Docker's node name, which berth takes as its own when none is given.
fn node_name() -> String {
    docker(&["info", "--format", "{{.Name}}"])
}

/// Waits until exactly `want` is passing in `name`.
fn wait_for_passing(
    consul: &ConsulServer,
    name: &str,
    want: &[(String, String, u16)],
    berth: &Container,
) -> Vec<(String, String, u16)> {
    let start = std::time::Instant::now();
    loop {
        let found = consul.passing(name);
        if found == want {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "want {want:?} passing in {name}, have {found:?}; berth log:\n{}",
            logs_of(berth)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
