//! Wiring: builds the Docker client, the registry and the tasks from a [`Config`], and spawns
//! them on a [`TaskTracker`] under one [`CancellationToken`].
//!
//! ```text
//! docker::run_source ──Trigger──▶ reconcile::Reconciler ──writes──▶ Registry
//!                                   │    ▲ records writes             ▲
//!                                   ▼    │                            │
//!                                  reconcile::store::Store ──due──▶ reconcile::heartbeat
//!                 heartbeat ──Trigger::Container (registry lost it)──▶ Reconciler
//!  Registry::maintain (etcd lease keep-alive) ──resync_now (lease lost)──▶ docker::run_source
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_registry::consul::{ConsulConfig, ConsulRegistry};
use berth_registry::etcd::{EtcdConfig, EtcdRegistry};
use berth_registry::{Registry, RegistryError};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, RegistryKind};
use crate::docker::{self, DockerClient, DockerError, Trigger};
use crate::heal;
use crate::hostip;
use crate::labels;
use crate::probe::{self, Prober};
use crate::reconcile::{self, Context, Reconciler, heartbeat, store::Store};

/// Why the agent could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Registry(#[from] berth_registry::RegistryError),
    #[error(transparent)]
    Probe(#[from] probe::exec::ExecutorError),
    #[error("cancelled during startup")]
    Cancelled,
}

/// A built agent, ready to spawn.
#[derive(Debug)]
pub struct App {
    config: Config,
    ctx: Context,
    triggers: (mpsc::Sender<Trigger>, mpsc::Receiver<Trigger>),
    heal: mpsc::Receiver<heal::Request>,
}

impl App {
    /// Connects to nothing yet except Docker for the node name when `--node-name` is not set
    /// (retried with backoff until Docker answers or `cancel` fires).
    pub async fn build(config: Config, cancel: &CancellationToken) -> Result<App, BuildError> {
        let docker = DockerClient::new(config.docker_host.as_deref(), config.docker_timeout)?;
        let node = node_name(&config, &docker, cancel).await?;
        let registry = registry(&config, &node)?;
        App::assemble(config, docker, node, registry, cancel)
    }

    /// Like [`App::build`] with a given registry (in-process tests use the memory backend).
    pub async fn with_registry(
        config: Config,
        registry: Registry,
        cancel: &CancellationToken,
    ) -> Result<App, BuildError> {
        let docker = DockerClient::new(config.docker_host.as_deref(), config.docker_timeout)?;
        let node = node_name(&config, &docker, cancel).await?;
        App::assemble(config, docker, node, registry, cancel)
    }

    fn assemble(
        config: Config,
        docker: DockerClient,
        node: String,
        registry: Registry,
        cancel: &CancellationToken,
    ) -> Result<App, BuildError> {
        let host_ip: IpAddr = match config.host_ip {
            Some(ip) => ip,
            None => {
                let (ip, how) = hostip::detect();
                info!(host_ip = %ip, how, "host IP detected (set --host-ip to override)");
                ip
            }
        };
        info!(
            node = %node,
            host_ip = %host_ip,
            docker = docker.endpoint(),
            registry = %registry.describe(),
            ttl = ?config.ttl,
            resync = ?config.resync,
            internal = config.internal,
            explicit = config.explicit,
            "berth configured"
        );
        let settings = labels::Settings {
            node,
            host_ip,
            internal: config.internal,
            network: config.network.clone(),
            explicit: config.explicit,
        };
        let store = Arc::new(Store::new(config.heartbeat_interval()));
        let (tx, rx) = mpsc::channel(1024);
        let (heal_tx, heal_rx) = mpsc::channel(256);
        let prober = Prober::new(
            probe::exec::Executor::new()?,
            probe::Options {
                concurrency: config.probe_concurrency,
                autoheal_failures: config.autoheal_failures,
            },
            tx.clone(),
            heal_tx.clone(),
            cancel.child_token(),
        );
        Ok(App {
            ctx: Context {
                docker,
                registry,
                store,
                settings: Arc::new(settings),
                prober,
                heal: heal_tx,
            },
            config,
            triggers: (tx, rx),
            heal: heal_rx,
        })
    }

    /// Spawns the source, the reconciler, the heartbeater, self-healing and the registry's
    /// upkeep. Check tasks are started by the prober as reconciles find checks.
    pub fn spawn(self, tracker: &TaskTracker, cancel: CancellationToken) {
        let (tx, rx) = self.triggers;
        // The registry lost this agent's registrations wholesale: relist Docker now.
        let resync_now = Arc::new(Notify::new());
        let registry = self.ctx.registry.clone();
        let maintain_cancel = cancel.clone();
        let lost = resync_now.clone();
        tracker.spawn(async move { registry.maintain(lost, maintain_cancel).await });
        // The reconciler must outlive the source so in-flight writes finish; it stops on
        // cancel and then drains.
        tracker.spawn(
            Reconciler::new(
                self.ctx.clone(),
                reconcile::Options {
                    concurrency: self.config.concurrency,
                    deregister_on_exit: self.config.deregister_on_exit,
                },
            )
            .run(rx, cancel.clone()),
        );
        tracker.spawn(heartbeat::run(
            self.ctx.registry.clone(),
            self.ctx.store.clone(),
            tx.clone(),
            cancel.clone(),
        ));
        tracker.spawn(heal::run(
            self.ctx.docker.clone(),
            self.ctx.prober.clone(),
            heal::Options {
                cooldown: self.config.autoheal_cooldown,
                max_restarts: self.config.autoheal_max_restarts,
                window: self.config.autoheal_window,
            },
            self.heal,
            cancel.clone(),
        ));
        tracker.spawn(docker::run_source(
            self.ctx.docker.clone(),
            self.config.resync,
            resync_now,
            tx,
            cancel,
        ));
    }
}

/// The backend `config` selects, for node `node`. Connects to nothing yet.
pub fn registry(config: &Config, node: &str) -> Result<Registry, RegistryError> {
    // A write must fail before the next heartbeat is due, never pile up.
    let request_timeout = config
        .heartbeat_interval()
        .clamp(Duration::from_millis(300), Duration::from_secs(5));
    Ok(match config.registry {
        RegistryKind::Consul => Registry::Consul(ConsulRegistry::new(ConsulConfig {
            addr: config.consul_addr.clone(),
            token: config.consul_token.clone(),
            ca_cert: config.consul_cacert.clone(),
            client_cert: config.consul_client_cert.clone(),
            client_key: config.consul_client_key.clone(),
            tls_skip_verify: config.consul_tls_skip_verify,
            ttl: config.ttl,
            deregister_critical_after: config.deregister_critical_after,
            request_timeout,
        })?),
        RegistryKind::Etcd => Registry::Etcd(EtcdRegistry::new(EtcdConfig {
            endpoints: config.etcd_endpoints.clone(),
            prefix: config.etcd_prefix.clone(),
            node: node.to_owned(),
            user: config.etcd_user.clone(),
            password: config.etcd_password.clone(),
            ca_cert: config.etcd_cacert.clone(),
            client_cert: config.etcd_cert.clone(),
            client_key: config.etcd_key.clone(),
            ttl: config.ttl,
            request_timeout,
        })?),
    })
}

async fn node_name(
    config: &Config,
    docker: &DockerClient,
    cancel: &CancellationToken,
) -> Result<String, BuildError> {
    match &config.node_name {
        Some(n) => Ok(n.clone()),
        None => docker_node_name(docker.clone(), cancel).await,
    }
}

async fn docker_node_name(
    mut docker: DockerClient,
    cancel: &CancellationToken,
) -> Result<String, BuildError> {
    let mut backoff = docker::reconnect_backoff();
    loop {
        let attempt = async {
            docker.negotiate().await?;
            docker.node_name().await
        };
        match attempt.await {
            Ok(name) if !name.is_empty() => {
                info!(node = %name, "node name taken from the Docker engine (set --node-name to override)");
                return Ok(name);
            }
            Ok(_) => warn!("docker info has no node name; set --node-name"),
            Err(e) => {
                warn!(error = %crate::telemetry::chain(&e), "cannot ask docker for the node name; retrying")
            }
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = cancel.cancelled() => return Err(BuildError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
