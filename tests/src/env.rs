//! One test's world and the way its steps assert: [`Env`] owns a registry ([`Backend`]),
//! a node name and the agents; [`Env::wait`] and [`Env::hold`] poll the registry and, when a
//! step fails, panic with what was seen, the registry's state and every agent's log tail.

use std::time::{Duration, Instant};

use crate::agent::{Agent, diagnose_with};
use crate::backend::{Backend, Found, Kind, show};
use crate::docker::{self, Container, random_hex, unique_name};

/// How long a registration may take to appear or disappear.
pub const SETTLE: Duration = Duration::from_secs(10);
/// The TTL every test agent uses (`--ttl 3s`).
pub const TTL: Duration = Duration::from_secs(3);

/// One test's world: its registry, its node name, its agents (current, retired and other
/// nodes', all kept for their logs).
#[derive(Debug)]
pub struct Env {
    pub test: &'static str,
    pub node: String,
    pub backend: Backend,
    agent: Option<Agent>,
    retired: Vec<Agent>,
    others: Vec<Agent>,
}

/// What one registration must look like.
#[derive(Clone, Debug)]
pub struct Expect {
    pub name: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    pub container_id: String,
    pub container_name: String,
}

impl Env {
    /// A fresh registry of `kind` and a unique node name; builds the test image first.
    pub fn new(test: &'static str, kind: Kind) -> Env {
        docker::image();
        Env {
            test,
            node: unique_name(test),
            backend: Backend::start(kind),
            agent: None,
            retired: Vec::new(),
            others: Vec::new(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.backend.kind()
    }

    /// Stops the registry (Consul's dev agent, or etcd) until [`Env::backend_resume`].
    pub fn backend_stop(&mut self) {
        match &mut self.backend {
            Backend::Consul(c) => c.stop(),
            Backend::Etcd { etcd, .. } => etcd.stop(),
        }
    }

    /// Starts the stopped registry again on the same ports (Consul's dev agent empty, etcd
    /// with its data).
    pub fn backend_resume(&mut self) {
        match &mut self.backend {
            Backend::Consul(c) => c.resume(),
            Backend::Etcd { etcd, .. } => etcd.resume(),
        }
    }

    /// A service name unique to this run: `<test>-<what>-<random>`.
    pub fn svc(&self, what: &str) -> String {
        format!("{}-{what}-{}", self.test.replace('_', "-"), random_hex(0))
    }

    /// Starts `berth run` with the backend's standard arguments plus `extra`; a running
    /// agent is SIGKILLed first (tests that care terminate it themselves).
    pub fn start_agent(&mut self, extra: &[&str]) {
        self.retire();
        self.agent = Some(Agent::run_args(self.backend.agent_args(&self.node), extra));
    }

    /// Starts another agent, as node `node`, on the same registry; returns its index for
    /// [`Env::other`]. Its log is part of the diagnostics.
    pub fn start_other_agent(&mut self, node: &str, extra: &[&str]) -> usize {
        self.others
            .push(Agent::run_args(self.backend.agent_args(node), extra));
        self.others.len() - 1
    }

    pub fn other(&mut self, i: usize) -> &mut Agent {
        &mut self.others[i]
    }

    /// Moves the current agent to the retired list (killing it if still running).
    pub fn retire(&mut self) {
        if let Some(mut a) = self.agent.take() {
            if a.exited().is_none() {
                a.kill9();
            }
            self.retired.push(a);
        }
    }

    pub fn agent(&mut self) -> &mut Agent {
        self.agent.as_mut().expect("an agent is running")
    }

    /// The registry's state and every agent's log tail.
    pub fn diag(&mut self) -> String {
        let mut agents: Vec<&mut Agent> = self
            .retired
            .iter_mut()
            .chain(self.others.iter_mut())
            .collect();
        if let Some(a) = self.agent.as_mut() {
            agents.push(a);
        }
        diagnose_with(self.backend.state(), &mut agents)
    }

    /// Panics with `msg` and the diagnostics.
    pub fn fail(&mut self, msg: &str) -> ! {
        let diag = self.diag();
        panic!("[{}/{}] {msg}\n{diag}", self.test, self.kind())
    }

    /// Polls `f` every 100 ms until `Ok`; on timeout fails with the last `Err` and diagnostics.
    pub fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Backend) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            match f(&self.backend) {
                Ok(v) => return v,
                Err(last) if start.elapsed() > timeout => self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what}\nlast observed: {last}"
                )),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Asserts `f` stays `Ok` for the whole of `period`.
    pub fn hold(
        &mut self,
        what: &str,
        period: Duration,
        mut f: impl FnMut(&Backend) -> Result<(), String>,
    ) {
        let start = Instant::now();
        while start.elapsed() < period {
            if let Err(e) = f(&self.backend) {
                self.fail(&format!(
                    "{what} stopped holding after {:?}: {e}",
                    start.elapsed()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `e` is the one passing instance of its service.
    pub fn expect_one(&mut self, e: &Expect) {
        let node = self.node.clone();
        self.wait(
            &format!("exactly one passing instance {} of {}", e.id, e.name),
            SETTLE,
            |b| check_one(b, &node, e),
        );
    }

    /// Waits until service `name` has no instance.
    pub fn expect_gone(&mut self, name: &str) {
        self.wait(&format!("no instance of {name}"), SETTLE, |b| {
            check_gone(b, name)
        });
    }

    /// The registration expected for `ctr`'s published `port`/tcp under `name`.
    pub fn published(&self, name: &str, ctr: &Container, port: u16) -> Expect {
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

/// `f` is `e` as registered by berth on `node`, passing.
pub fn matches(f: &Found, node: &str, e: &Expect) -> Result<(), String> {
    let fields: [(&str, &str, &str); 8] = [
        ("id", &f.id, &e.id),
        ("name", &f.name, &e.name),
        ("address", &f.address, &e.address),
        ("node", &f.node, node),
        ("container id", &f.container_id, &e.container_id),
        ("container name", &f.container_name, &e.container_name),
        ("image", &f.image, docker::IMAGE),
        ("status", &f.status, "passing"),
    ];
    for (what, got, want) in fields {
        if got != want {
            return Err(format!("{what} is {got:?}, want {want:?}: {f}"));
        }
    }
    if f.port != e.port {
        return Err(format!("port is {}, want {}: {f}", f.port, e.port));
    }
    if !f.managed {
        return Err(format!("not marked as managed by berth: {f}"));
    }
    Ok(())
}

/// Exactly one instance of `e.name`, matching `e` (see [`matches`]), in every view the
/// registry has of it.
pub fn check_one(b: &Backend, node: &str, e: &Expect) -> Result<(), String> {
    let found = b.instances(&e.name)?;
    match found.as_slice() {
        [f] => matches(f, node, e),
        _ => Err(format!(
            "{} instances of {}: {}",
            found.len(),
            e.name,
            show(&found)
        )),
    }
}

/// No instance of `name` in any view of the registry.
pub fn check_gone(b: &Backend, name: &str) -> Result<(), String> {
    let found = b.instances(name)?;
    if found.is_empty() {
        Ok(())
    } else {
        Err(show(&found))
    }
}

/// A busybox httpd labelled `SERVICE_NAME=<name>`, port 80 published on a random host port.
pub fn httpd_labelled(test: &str, name: &str) -> Container {
    Container::httpd(test, &["-l", &format!("SERVICE_NAME={name}"), "-p", "80"])
}
