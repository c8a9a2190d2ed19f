//! The Docker side: containers of this run (created through the API, not the CLI, so a
//! burst really is concurrent) and a recorder of their events with Docker's own timestamps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::watch;

/// Label on every container of the bench; its value is the run id.
pub const LABEL: &str = "berth-bench";

/// Exits at once on SIGTERM.
pub fn sleeper() -> Vec<String> {
    sh("trap 'exit 0' TERM; sleep 1000000 & wait")
}

/// Exits one second after SIGTERM, as a server finishing its requests would.
pub fn slow_stopper() -> Vec<String> {
    sh("trap 'sleep 1; exit 0' TERM; sleep 1000000 & wait")
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// A container to create.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// Container ports (tcp) published on a host port Docker picks.
    pub publish: Vec<u16>,
    /// Container ports exposed, not published (`EXPOSE`).
    pub expose: Vec<u16>,
    pub host_network: bool,
    pub cmd: Vec<String>,
    pub stop_timeout: Option<i64>,
}

/// The containers of one bench run.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub docker: Docker,
    pub run: String,
    image: String,
}

impl Fleet {
    pub fn new(docker: Docker, run: String, image: String) -> Fleet {
        Fleet { docker, run, image }
    }

    /// Creates a container (not started); its id.
    pub async fn create(&self, spec: &Spec) -> Result<String> {
        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        labels.insert(LABEL.into(), self.run.clone());
        let port_bindings = spec
            .publish
            .iter()
            .map(|p| {
                (
                    format!("{p}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: None,
                        host_port: Some(String::new()),
                    }]),
                )
            })
            .collect();
        let exposed: Vec<String> = spec
            .publish
            .iter()
            .chain(&spec.expose)
            .map(|p| format!("{p}/tcp"))
            .collect();
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(if spec.cmd.is_empty() {
                sleeper()
            } else {
                spec.cmd.clone()
            }),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            stop_timeout: spec.stop_timeout,
            host_config: Some(HostConfig {
                port_bindings: Some(port_bindings),
                network_mode: spec.host_network.then(|| "host".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .with_context(|| format!("create container {}", spec.name))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None)
            .await
            .with_context(|| format!("start {id}"))
    }

    /// `docker stop`, with `timeout` seconds or the container's own stop timeout.
    pub async fn stop(&self, id: &str, timeout: Option<i32>) -> Result<()> {
        let mut opts = StopContainerOptionsBuilder::default();
        if let Some(t) = timeout {
            opts = opts.t(t);
        }
        self.docker
            .stop_container(id, Some(opts.build()))
            .await
            .with_context(|| format!("stop {id}"))
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        self.docker
            .remove_container(id, Some(opts))
            .await
            .with_context(|| format!("remove {id}"))
    }

    /// Creates `specs`, `parallel` at a time; their ids in order.
    pub async fn create_all(&self, specs: &[Spec], parallel: usize) -> Result<Vec<String>> {
        let results: Vec<Result<String>> = futures::stream::iter(specs)
            .map(|s| self.create(s))
            .buffered(parallel)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Runs `op` on every id, `parallel` at a time (usize::MAX: all at once).
    pub async fn each<'a, F, Fut>(&'a self, ids: &'a [String], parallel: usize, op: F) -> Result<()>
    where
        F: Fn(&'a Fleet, &'a str) -> Fut,
        Fut: std::future::Future<Output = Result<()>> + 'a,
    {
        let results: Vec<Result<()>> = futures::stream::iter(ids)
            .map(|id| op(self, id))
            .buffer_unordered(parallel)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Removes every container of this run (or, with `any_run`, of any bench run).
    pub async fn remove_all(&self, any_run: bool) -> Result<usize> {
        let label = if any_run {
            LABEL.to_owned()
        } else {
            format!("{LABEL}={}", self.run)
        };
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let ids: Vec<String> = self
            .docker
            .list_containers(Some(opts))
            .await?
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        self.each(&ids, 16, |f, id| f.remove(id)).await?;
        Ok(ids.len())
    }
}

/// One container event, timed by Docker.
#[derive(Clone, Debug)]
pub struct Ev {
    pub container: String,
    pub action: String,
    /// The `signal` attribute of a `kill`.
    pub signal: Option<i32>,
    /// Docker's own timestamp.
    pub at: SystemTime,
    /// When this process read it from the event stream.
    pub received: SystemTime,
}

/// Records the container events of this run, from Docker's event stream.
#[derive(Clone, Debug)]
pub struct Events {
    seen: Arc<Mutex<Vec<Ev>>>,
    version: watch::Sender<u64>,
}

impl Events {
    /// Subscribes to the events of `fleet`'s containers from one second ago on (so nothing
    /// between this call and the stream's start is missed).
    pub fn start(fleet: &Fleet) -> Events {
        let events = Events {
            seen: Arc::default(),
            version: watch::channel(0).0,
        };
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() - 1)
            .unwrap_or(0)
            .to_string();
        let label = format!("{LABEL}={}", fleet.run);
        let filters = HashMap::from([("type", vec!["container"]), ("label", vec![label.as_str()])]);
        let opts = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        let mut stream = fleet.docker.events(Some(opts));
        let recorder = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = stream.next().await {
                let (Some(action), Some(actor), Some(nanos)) = (ev.action, ev.actor, ev.time_nano)
                else {
                    continue;
                };
                let attrs = actor.attributes.unwrap_or_default();
                let ev = Ev {
                    container: actor.id.unwrap_or_default(),
                    action,
                    signal: attrs.get("signal").and_then(|s| s.parse().ok()),
                    at: UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64),
                    received: SystemTime::now(),
                };
                recorder.lock().push(ev);
                recorder.version.send_modify(|v| *v += 1);
            }
        });
        events
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Ev>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first event of `container` that `pred` accepts.
    pub fn find(&self, container: &str, pred: impl Fn(&Ev) -> bool) -> Option<Ev> {
        self.lock()
            .iter()
            .find(|e| e.container == container && pred(e))
            .cloned()
    }

    /// Waits up to `timeout` for [`Events::find`] to find one.
    pub async fn wait(
        &self,
        container: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Ev) -> bool,
    ) -> Result<Ev> {
        let mut rx = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(container, &pred) {
                return Ok(e);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(anyhow!(
                    "no {what} event for container {} within {timeout:?}",
                    &container[..12.min(container.len())]
                ));
            }
        }
    }

    /// The action's time for `container`, waiting for it.
    pub async fn time_of(&self, container: &str, action: &str) -> Result<SystemTime> {
        let ev = self
            .wait(container, action, Duration::from_secs(15), |e| {
                e.action == action
            })
            .await?;
        Ok(ev.at)
    }
}
