//! A real `consul agent -dev` per test, on free ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::free_port;

/// `consul agent -dev` on 127.0.0.1 as node `node`, with extra `-hcl` configuration snippets
/// (ports, ACLs, TLS). The caller sets its output and spawns it.
pub fn dev_agent(node: &str, hcl: &[&str]) -> Command {
    let mut cmd = Command::new("consul");
    cmd.args([
        "agent",
        "-dev",
        "-client",
        "127.0.0.1",
        "-bind",
        "127.0.0.1",
        "-node",
        node,
    ]);
    for snippet in hcl {
        cmd.args(["-hcl", snippet]);
    }
    cmd
}

/// A running Consul dev agent. Killed on drop.
#[derive(Debug)]
pub struct ConsulServer {
    child: Option<Child>,
    pub http_port: u16,
    pub dns_port: u16,
    ports: [u16; 4],
    data_log: std::path::PathBuf,
    http: reqwest::blocking::Client,
}

impl ConsulServer {
    /// Starts a dev agent and waits until it has a leader and answers the agent API. When it
    /// exits at once (another process took one of its six ports between picking and
    /// binding), it is started again on fresh ports, up to three times.
    pub fn start() -> ConsulServer {
        crate::crypto();
        let http_port = free_port();
        let mut server = ConsulServer {
            child: None,
            http_port,
            dns_port: free_port(),
            ports: [free_port(), free_port(), free_port(), free_port()],
            data_log: std::env::temp_dir().join(format!("berth-consul-{http_port}.log")),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        for attempt in 1..=3 {
            match server.try_spawn() {
                Ok(()) => return server,
                Err(why) if attempt < 3 => {
                    eprintln!("consul did not start ({why}); retrying on fresh ports");
                    server.http_port = free_port();
                    server.dns_port = free_port();
                    server.ports = [free_port(), free_port(), free_port(), free_port()];
                }
                Err(why) => panic!("consul did not start: {why}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("consul did not start: {why}");
        }
    }

    /// Starts the agent on the current ports and waits for a leader; `Err` with the log tail
    /// when it exits or has no leader within 30 s.
    fn try_spawn(&mut self) -> Result<(), String> {
        let [serf_lan, serf_wan, server, grpc] = self.ports;
        let hcl = format!(
            "ports {{ http = {} dns = {} serf_lan = {serf_lan} serf_wan = {serf_wan} server = {server} grpc = {grpc} }}",
            self.http_port, self.dns_port
        );
        let log = std::fs::File::create(&self.data_log).unwrap();
        let child = dev_agent(&format!("consul-{}", self.http_port), &[&hcl])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start consul (is it installed? run scripts/install-deps.sh)");
        self.child = Some(child);
        let start = std::time::Instant::now();
        loop {
            let leader = self
                .http
                .get(format!("{}/v1/status/leader", self.addr()))
                .send()
                .ok()
                .and_then(|r| r.text().ok());
            if leader.is_some_and(|l| l.trim().len() > 2) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || start.elapsed() > Duration::from_secs(30) {
                self.stop();
                let why = match exited {
                    Some(status) => format!("it exited ({status})"),
                    None => "no leader after 30s".to_owned(),
                };
                return Err(format!(
                    "{why}; log tail:\n{}",
                    crate::agent::tail(&self.log(), 15)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Kills the agent (SIGKILL) and starts it again on the same ports. Dev mode forgets all.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the agent again on the same ports after [`stop`](Self::stop). Dev mode starts
    /// empty.
    pub fn resume(&mut self) {
        self.spawn();
    }

    /// Kills the agent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// GET a Consul API path (e.g. `/v1/agent/services`) as JSON; `None` on any failure.
    pub fn get(&self, path: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.addr()))
            .send()
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().ok()
    }

    /// PUT a JSON body to a Consul API path; panics on failure.
    pub fn put(&self, path: &str, body: &Value) {
        let resp = self
            .http
            .put(format!("{}{path}", self.addr()))
            .json(body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "PUT {path}: {}", resp.status());
    }

    /// `/v1/health/service/<name>` entries.
    pub fn health(&self, name: &str) -> Vec<Value> {
        self.get(&format!("/v1/health/service/{name}"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// `/v1/catalog/service/<name>` entries.
    pub fn catalog(&self, name: &str) -> Vec<Value> {
        self.get(&format!("/v1/catalog/service/{name}"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Passing instances of `name` as `(id, address, port)`, read through rs-consul: an
    /// independent client of `/v1/health/service/<name>?passing`, so the assertion does not
    /// rest on berth's own Consul code.
    pub fn passing(&self, name: &str) -> Vec<(String, String, u16)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let consul = rs_consul::Consul::new(rs_consul::Config {
                address: self.addr(),
                ..Default::default()
            });
            let request = rs_consul::GetServiceNodesRequest {
                service: name,
                passing: true,
                ..Default::default()
            };
            match consul.get_service_nodes(request, None).await {
                Ok(nodes) => nodes
                    .response
                    .into_iter()
                    .map(|n| (n.service.id, n.service.address, n.service.port))
                    .collect(),
                Err(_) => Vec::new(),
            }
        })
    }

    /// The agent's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.data_log).unwrap_or_default()
    }
}

impl Drop for ConsulServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.data_log);
    }
}

/// A dev agent with extra configuration the shared harness does not offer (ACLs, TLS).
#[derive(Debug)]
pub struct CustomConsul {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl CustomConsul {
    /// Starts an agent in `dir` whose API listens on a free port (`http` or `https` as
    /// `scheme` says), with `hcl` added to its configuration. When it exits at once (another
    /// process took one of its ports between picking and binding), it is started again on
    /// fresh ports, up to three times.
    pub fn start(dir: PathBuf, scheme: &str, hcl: &str) -> CustomConsul {
        let mut consul = CustomConsul {
            child: None,
            port: 0,
            dir,
        };
        for attempt in 1..=3 {
            consul.spawn(scheme, hcl);
            let start = Instant::now();
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", consul.port)).is_ok() {
                    return consul;
                }
                let exited = consul
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() || start.elapsed() > Duration::from_secs(30) {
                    let log =
                        std::fs::read_to_string(consul.dir.join("consul.log")).unwrap_or_default();
                    assert!(attempt < 3, "consul did not start ({exited:?}):\n{log}");
                    eprintln!("consul did not start ({exited:?}); retrying on fresh ports");
                    if let Some(mut c) = consul.child.take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("the last attempt asserts")
    }

    /// Starts the agent on fresh ports.
    fn spawn(&mut self, scheme: &str, hcl: &str) {
        let port = free_port();
        let (http, https) = if scheme == "https" {
            (-1, i32::from(port))
        } else {
            (i32::from(port), -1)
        };
        let ports = format!(
            "ports {{ http = {http} https = {https} dns = {} serf_lan = {} serf_wan = {} \
             server = {} grpc = {} }}",
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port()
        );
        let log = std::fs::File::create(self.dir.join("consul.log")).unwrap();
        let child = dev_agent(&format!("custom-{port}"), &[&ports, hcl])
            .current_dir(&self.dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start consul");
        self.child = Some(child);
        self.port = port;
    }

    pub fn addr(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The API port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("consul.log")).unwrap_or_default()
    }
}

impl Drop for CustomConsul {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes a CA, a server certificate (for 127.0.0.1 and localhost) and a client certificate in
/// `dir` with `consul tls` (files `consul-agent-ca.pem`, `dc1-server-consul-0{,-key}.pem`,
/// `dc1-client-consul-0{,-key}.pem`). Used for Consul's and etcd's TLS tests.
pub fn make_certs(dir: &std::path::Path) {
    make_certs_for(dir, &[]);
}

/// [`make_certs`] with more DNS names in the server certificate.
pub fn make_certs_for(dir: &std::path::Path, dns_names: &[&str]) {
    let mut server = vec!["tls", "cert", "create", "-server", "-dc", "dc1"];
    for name in dns_names {
        server.extend(["-additional-dnsname", name]);
    }
    for args in [
        &["tls", "ca", "create"][..],
        &server,
        &["tls", "cert", "create", "-client", "-dc", "dc1"],
    ] {
        let out = Command::new("consul")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "consul {args:?}: {out:?}");
    }
}
