//! The local Docker engine, driven through the `docker` CLI.
//!
//! Nothing can be pulled in the test environment, so the one image the tests use,
//! [`IMAGE`], is built locally `FROM scratch` with the host's static busybox. Every container
//! and network gets a name unique to the test run ([`unique_name`]) because tests run in
//! parallel and every berth agent sees every container on the engine.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::wait_for;

/// The test image: a static busybox `FROM scratch` with its applets installed in `/bin`.
pub const IMAGE: &str = "berth-test-busybox:latest";
/// Where the static busybox comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";
/// Image label holding the sha256 of the busybox inside, so a stale image is rebuilt.
/// (Not under `berth.`: that label namespace is the agent's, and it warns about unknown keys.)
const SHA_LABEL: &str = "berth-e2e.busybox-sha256";
/// Label put on every container and network the tests create, for cleaning up strays.
pub const E2E_LABEL: &str = "berth-e2e";

/// Runs `docker <args>`; `Ok(stdout)` (trimmed) on success, `Err(description)` otherwise.
pub fn try_docker<S: AsRef<str>>(args: &[S]) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out: Output = Command::new("docker")
        .args(&args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .map_err(|e| format!("docker {}: cannot run the docker CLI: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
        ))
    }
}

/// Runs `docker <args>` and returns its trimmed stdout; panics on failure.
pub fn docker<S: AsRef<str>>(args: &[S]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// True when the Docker engine answers.
pub fn available() -> bool {
    try_docker(&["version", "--format", "{{.Server.Version}}"]).is_ok()
}

/// `berth-e2e-<test>-<random>`: unique per call and per run.
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "berth-e2e-{test}-{}",
        random_hex(COUNTER.fetch_add(1, Ordering::Relaxed))
    )
}

/// Eight random hex digits (std's per-process random hasher keys; no extra dependency).
pub fn random_hex(salt: u64) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:08x}", h.finish() as u32)
}

/// Builds [`IMAGE`] once per process (skipped when an image with the same busybox exists)
/// and returns its name.
///
/// Parallel test binaries may race here: each builds to a tag of its own and then
/// `docker tag`s it, which is atomic on the engine, so the loser simply re-points the tag
/// at an identical image.
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Err(e) = ensure_image() {
            panic!("building the test image {IMAGE}: {e}");
        }
    });
    IMAGE
}

fn ensure_image() -> Result<(), String> {
    let sha = sha256(Path::new(BUSYBOX))?;
    let current = try_docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{ index .Config.Labels \"{SHA_LABEL}\" }}}}"),
        IMAGE,
    ]);
    if current.as_deref() == Ok(sha.as_str()) {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("berth-e2e-image-{}", random_hex(0)));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let result = build_in(&dir, &sha);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn build_in(dir: &Path, sha: &str) -> Result<(), String> {
    std::fs::copy(BUSYBOX, dir.join("busybox")).map_err(|e| {
        format!("copy {BUSYBOX} (install busybox-static: scripts/install-deps.sh): {e}")
    })?;
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         CMD [\"/bin/sh\"]\n",
    )
    .map_err(|e| format!("write Dockerfile: {e}"))?;
    let tmp_tag = format!("berth-test-busybox:build-{}", random_hex(1));
    let dir_s = dir.to_string_lossy().to_string();
    try_docker(&[
        "build",
        "-q",
        "--label",
        &format!("{SHA_LABEL}={sha}"),
        "-t",
        &tmp_tag,
        &dir_s,
    ])?;
    let tagged = try_docker(&["tag", &tmp_tag, IMAGE]);
    let _ = try_docker(&["rmi", &tmp_tag]);
    tagged.map(|_| ())
}

/// Hex sha256 of a file, via coreutils' `sha256sum`.
fn sha256(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "sha256sum printed nothing".to_string())
}

/// A container started with `docker run -d`; `docker rm -f`'d on drop.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    removed: bool,
}

/// The command that serves HTTP on port 80 and exits promptly on SIGTERM (a bare httpd as
/// PID 1 ignores SIGTERM, which would make every `docker stop` wait for its timeout).
pub const HTTPD_CMD: [&str; 3] = ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 & wait"];

impl Container {
    /// `docker run -d --name berth-e2e-<test>-<random> --label berth-e2e=1 <args...>`.
    /// `args` holds the run options, then the image, then the command.
    pub fn run<S: AsRef<str>>(test: &str, args: &[S]) -> Container {
        image();
        let name = unique_name(test);
        let mut full: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            format!("{E2E_LABEL}=1"),
        ];
        full.extend(args.iter().map(|a| a.as_ref().to_string()));
        let id = docker(&full);
        Container {
            id,
            name,
            removed: false,
        }
    }

    /// A busybox httpd on port 80 of [`IMAGE`]; `opts` are extra `docker run` options
    /// (labels, `-p`, `-e`, …).
    pub fn httpd<S: AsRef<str>>(test: &str, opts: &[S]) -> Container {
        let mut args: Vec<String> = opts.iter().map(|a| a.as_ref().to_string()).collect();
        args.push(image().to_string());
        args.extend(HTTPD_CMD.iter().map(|s| s.to_string()));
        Container::run(test, &args)
    }

    /// `docker inspect` of this container as JSON.
    pub fn inspect(&self) -> Value {
        let raw = docker(&["inspect", &self.id]);
        let v: Value = serde_json::from_str(&raw).expect("docker inspect prints JSON");
        v.get(0).cloned().unwrap_or(Value::Null)
    }

    /// `State.Status`: `running`, `exited`, `paused`, …
    pub fn status(&self) -> String {
        docker(&["inspect", "--format", "{{.State.Status}}", &self.id])
    }

    /// The host port published for `<port>/tcp`, from `docker port`.
    pub fn host_port(&self, port: u16) -> u16 {
        self.host_port_proto(port, "tcp")
    }

    /// The host port published for `<port>/<proto>`, from `docker port`.
    pub fn host_port_proto(&self, port: u16, proto: &str) -> u16 {
        let spec = format!("{port}/{proto}");
        // Right after `docker start` the mapping may not be visible for a moment.
        wait_for(
            &format!("docker port {} {spec}", self.name),
            Duration::from_secs(10),
            || {
                let out = try_docker(&["port", &self.id, &spec]).ok()?;
                out.lines()
                    .filter_map(|l| l.trim().rsplit(':').next()?.parse::<u16>().ok())
                    .find(|p| *p != 0)
            },
        )
    }

    /// The container's IP address on network `net` (empty when not attached).
    pub fn ip_on(&self, net: &str) -> String {
        let v = self.inspect();
        v["NetworkSettings"]["Networks"][net]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// `docker stop -t 5` (the test command exits on SIGTERM right away).
    pub fn stop(&self) {
        docker(&["stop", "-t", "5", &self.id]);
    }

    pub fn start(&self) {
        docker(&["start", &self.id]);
    }

    pub fn restart(&self) {
        docker(&["restart", "-t", "5", &self.id]);
    }

    /// `docker kill` (SIGKILL).
    pub fn kill(&self) {
        docker(&["kill", &self.id]);
    }

    pub fn pause(&self) {
        docker(&["pause", &self.id]);
    }

    pub fn unpause(&self) {
        docker(&["unpause", &self.id]);
    }

    /// `docker rm -f`, now rather than on drop.
    pub fn rm(&mut self) {
        docker(&["rm", "-f", &self.id]);
        self.removed = true;
    }

    pub fn connect(&self, net: &str) {
        docker(&["network", "connect", net, &self.id]);
    }

    pub fn disconnect(&self, net: &str) {
        docker(&["network", "disconnect", net, &self.id]);
    }

    /// The container's own output (`docker logs`), for failure messages.
    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", "50", &self.id])
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("docker logs: {e}"),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.removed {
            let _ = try_docker(&["rm", "-f", "-v", &self.id]);
        }
    }
}

/// A user-defined bridge network; removed on drop (drop its containers first).
#[derive(Debug)]
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create(test: &str) -> Network {
        let name = unique_name(test);
        docker(&[
            "network",
            "create",
            "--label",
            &format!("{E2E_LABEL}=1"),
            &name,
        ]);
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = try_docker(&["network", "rm", &self.name]);
    }
}

/// Sends a raw HTTP/1.0 GET to `127.0.0.1:<port>` and returns the response's status line.
pub fn http_status_line(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?.trim().to_string();
    line.starts_with("HTTP/").then_some(line)
}

/// A scratch directory under the system temp dir; removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", random_hex(2)));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A socat relay, standing in for a TCP-exposed engine ([`relay`]) or putting a loopback
/// service on another address ([`tcp_relay`]); a test can cut it (drop it) and bring it
/// back (start another).
#[derive(Debug)]
pub struct Relay(std::process::Child);

impl Drop for Relay {
    /// Kills the relay and its forked per-connection children (its process group).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// A relay from 127.0.0.1:`port` to the local Docker socket, once it accepts connections.
pub fn relay(port: u16) -> Relay {
    socat(
        "127.0.0.1",
        port,
        "UNIX-CONNECT:/var/run/docker.sock".to_owned(),
    )
}

/// A relay from `bind`:`port` to 127.0.0.1:`to`, once it accepts connections: a service
/// that listens on loopback only, reachable from containers at a bridge's gateway.
pub fn tcp_relay(bind: &str, port: u16, to: u16) -> Relay {
    socat(bind, port, format!("TCP:127.0.0.1:{to}"))
}

fn socat(bind: &str, port: u16, to: String) -> Relay {
    use std::os::unix::process::CommandExt;
    let relay = Relay(
        Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind={bind},fork,reuseaddr"))
            .arg(to)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat (scripts/install-deps.sh installs it)"),
    );
    wait_for("the tcp relay", Duration::from_secs(10), || {
        std::net::TcpStream::connect((bind, port)).ok()
    });
    relay
}

/// The gateway address of Docker network `net` (the host's end of a bridge).
pub fn gateway(net: &str) -> String {
    docker(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}} {{end}}{{end}}",
        net,
    ])
    .split_whitespace()
    .find(|g| !g.contains(':'))
    .unwrap_or_else(|| panic!("network {net} has no IPv4 gateway"))
    .to_owned()
}

/// The group of the Docker socket, for `--group-add` of a non-root berth container.
pub fn socket_gid() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/var/run/docker.sock")
        .expect("stat /var/run/docker.sock")
        .gid()
        .to_string()
}

/// Tag of the berth image the deployment tests use.
pub const BERTH_IMAGE: &str = "berth:e2e";

/// Builds [`BERTH_IMAGE`] with `deploy/build-image.sh` once per process (the release build
/// and the image layer are cached, so a second run takes seconds) and returns its tag.
pub fn berth_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/build-image.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script).args(["--tag", BERTH_IMAGE]);
        as_from_a_shell(&mut cmd);
        let out = cmd.output().expect("run deploy/build-image.sh");
        assert!(
            out.status.success(),
            "deploy/build-image.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    });
    BERTH_IMAGE
}

/// Removes the variables `cargo test` and `cargo run` give this process (the running crate's
/// `CARGO_PKG_*` and similar) from `cmd`'s environment, so a `cargo build` it runs finds the
/// release build up to date: ring's build script reruns when they change, which would relink
/// the whole LTO build (minutes). The build then runs as it would from a shell.
pub fn as_from_a_shell(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
            || [
                "OUT_DIR",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ]
            .contains(&key.as_str())
        {
            cmd.env_remove(key);
        }
    }
}

/// The source address of the host's default route: what berth's host-IP detection must find
/// on the host network. Read with iproute2, not with berth's own code.
pub fn default_route_ip() -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "get", "198.51.100.1"])
        .output()
        .expect("ip route get");
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "src")
        .map(|w| w[1].to_owned())
        .unwrap_or_else(|| panic!("no src in `ip route get`: {text}"))
}
