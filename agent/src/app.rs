//! Wiring: builds the Docker seam, the registry and the tasks from a [`Config`], and spawns
//! them on a [`TaskTracker`] under one [`CancellationToken`].
//!
//! ```text
//! source::run ──Trigger──▶ reconcile::Reconciler ──writes──▶ Registry
//!                            │    ▲ records writes  ▲           ▲
//!                            ▼    │                 │ recheck   │
//!                 reconcile::store::Store ──due──▶ reconcile::heartbeat
//!          heartbeat ──Trigger::Container (registry lost it)──▶ Reconciler
//!          probe::Prober (check tasks) ──recheck (verdict changed)──▶ Reconciler
//!          heal::run ──restart──▶ Docker; ──on_restart──▶ Prober
//!  Registry::maintain (etcd lease keep-alive) ──resync_now (lease lost)──▶ source::run
//!  every task ──counts, times, answered?──▶ observe::Observer ◀── admin server (main.rs)
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_registry::Registry;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::status::Identity;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::docker::{Docker, DockerError};
use crate::heal;
use crate::hostip;
use crate::labels;
use crate::observe::Observer;
use crate::probe::{self, Prober};
use crate::reconcile::{self, Context, Reconciler, Trigger, heartbeat, store::Store};
use crate::source;

/// Why the agent could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot set up the docker client")]
    Docker(#[from] DockerError),
    #[error("cannot set up the registry client")]
    Registry(#[from] berth_registry::RegistryError),
    #[error("cannot set up the health probes")]
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
    recheck: mpsc::Receiver<String>,
    heal: mpsc::Receiver<heal::Request>,
    tracker: TaskTracker,
}

impl App {
    /// Connects to nothing yet except Docker for the node name when `--node-name` is not set
    /// (retried with backoff until Docker answers or `cancel` fires). Every task, check tasks
    /// included, runs on `tracker`.
    pub async fn build(
        config: Config,
        observe: Arc<Observer>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<App, BuildError> {
        let (docker, node) = connect(&config, cancel).await?;
        let registry = config.registry(&node)?;
        App::assemble(config, docker, node, registry, observe, cancel, tracker)
    }

    /// Like [`App::build`] with a given registry, built for the node `--node-name` names
    /// (in-process tests use the memory backend).
    pub async fn with_registry(
        config: Config,
        registry: Registry,
        observe: Arc<Observer>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<App, BuildError> {
        let (docker, node) = connect(&config, cancel).await?;
        App::assemble(config, docker, node, registry, observe, cancel, tracker)
    }

    /// An agent on the given Docker seam and registry, as node `node` (unit tests use the
    /// scripted engine).
    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        config: Config,
        docker: Docker,
        node: String,
        registry: Registry,
        observe: Arc<Observer>,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<App, BuildError> {
        let a = &config.agent;
        let settings = settings(&config, node);
        if a.host_ip.is_none() {
            info!(host_ip = %settings.host_ip, how = %settings.host_ip_from, "host IP detected (set --host-ip to override)");
        }
        info!(
            node = %settings.node,
            host_ip = %settings.host_ip,
            docker = docker.endpoint(),
            registry = %registry.describe(),
            ttl = ?a.ttl,
            resync = ?a.resync,
            internal = a.internal,
            explicit = a.explicit,
            "berth configured"
        );
        let store = Arc::new(Store::new(config.heartbeat_interval()));
        let (tx, rx) = mpsc::channel(1024);
        let (recheck_tx, recheck_rx) = mpsc::channel(1024);
        let (heal_tx, heal_rx) = mpsc::channel(256);
        let prober = Prober::new(
            probe::exec::Executor::new()?,
            probe::Options {
                concurrency: a.probe_concurrency,
                autoheal_failures: a.autoheal_failures,
            },
            probe::Outlets {
                recheck: recheck_tx,
                heal: heal_tx.clone(),
                observe: observe.clone(),
            },
            tracker.clone(),
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
                observe,
            },
            config,
            triggers: (tx, rx),
            recheck: recheck_rx,
            heal: heal_rx,
            tracker: tracker.clone(),
        })
    }

    /// The reconcile context, for tests that look at the store.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The node, registry and Docker endpoint, for the status output.
    pub fn identity(&self) -> Identity {
        Identity {
            node: self.ctx.settings.node.clone(),
            registry: self.ctx.registry.describe(),
            docker: self.ctx.docker.endpoint().to_owned(),
        }
    }

    /// A sender of the reconciler's triggers, as the Docker source has (for tests that
    /// trigger the reconciler themselves).
    pub fn triggers(&self) -> mpsc::Sender<Trigger> {
        self.triggers.0.clone()
    }

    /// Spawns the source, the reconciler, the heartbeater, self-healing and the registry's
    /// upkeep. Check tasks are started by the prober as reconciles find checks.
    pub fn spawn(self, cancel: CancellationToken) -> Running {
        let App {
            config,
            ctx,
            triggers: (tx, rx),
            recheck,
            heal,
            tracker,
        } = self;
        // The registry lost this agent's registrations wholesale: relist Docker now.
        let resync_now = Arc::new(Notify::new());
        let registry = ctx.registry.clone();
        let (lost, upkeep_cancel) = (resync_now.clone(), cancel.clone());
        tracker.spawn(async move { registry.maintain(lost, upkeep_cancel).await });
        // The reconciler must outlive the source so in-flight writes finish; it stops on
        // cancel and then drains.
        tracker.spawn(
            Reconciler::new(
                ctx.clone(),
                reconcile::Options {
                    concurrency: config.agent.concurrency,
                    deregister_on_exit: config.agent.deregister_on_exit,
                },
            )
            .run(rx, recheck, cancel.clone()),
        );
        tracker.spawn(heartbeat::run(
            ctx.registry.clone(),
            ctx.store.clone(),
            ctx.observe.clone(),
            tx.clone(),
            config.heartbeat_interval(),
            cancel.clone(),
        ));
        let prober = ctx.prober.clone();
        let on_restart: heal::OnRestart =
            Arc::new(move |container: &str, note| prober.restarted(container, note));
        tracker.spawn(heal::run(
            ctx.docker.clone(),
            heal::Options {
                cooldown: config.agent.autoheal_cooldown,
                max_restarts: config.agent.autoheal_max_restarts,
                window: config.agent.autoheal_window,
            },
            heal,
            on_restart,
            ctx.observe.clone(),
            cancel.clone(),
        ));
        tracker.spawn(source::run(
            ctx.docker.clone(),
            config.agent.resync,
            resync_now,
            ctx.observe.clone(),
            tx,
            cancel.clone(),
        ));
        // Nothing else is spawned at the top; check tasks may still join.
        tracker.close();
        Running { cancel, tracker }
    }
}

/// A spawned agent.
#[derive(Debug)]
pub struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    /// Resolves when every task has ended, which only cancelling should make happen.
    pub async fn ended(&self) {
        self.tracker.wait().await;
    }

    /// Cancels every task and waits up to `within` for them to finish their work; false when
    /// they did not.
    pub async fn stop(self, within: Duration) -> bool {
        self.cancel.cancel();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// The label pipeline's settings for node `node`: `berth run` and `berth explain` both take
/// them from here, so both decide alike. Detects the host IP unless `--host-ip` is set.
pub fn settings(config: &Config, node: String) -> labels::Settings {
    let a = &config.agent;
    let (host_ip, host_ip_from): (IpAddr, String) = match a.host_ip {
        Some(ip) => (ip, "--host-ip".to_owned()),
        None => {
            let (ip, how) = hostip::detect();
            (ip, format!("detected: {how}"))
        }
    };
    labels::Settings {
        node,
        host_ip,
        host_ip_from,
        internal: a.internal,
        network: a.network.clone(),
        explicit: a.explicit,
        tags: a.tags.clone(),
        ip_label: a.ip_from_label.clone(),
        drain_on_stop: a.drain_on_stop,
    }
}

/// The Docker client `config` names, and the node identity: `--node-name`, or else Docker's
/// own node name.
pub async fn connect(
    config: &Config,
    cancel: &CancellationToken,
) -> Result<(Docker, String), BuildError> {
    let docker = Docker::connect(
        config.agent.docker_host.as_deref(),
        config.agent.docker_timeout,
    )?;
    let node = match &config.agent.node_name {
        Some(n) => n.clone(),
        None => docker_node_name(docker.clone(), cancel).await?,
    };
    Ok((docker, node))
}

async fn docker_node_name(
    mut docker: Docker,
    cancel: &CancellationToken,
) -> Result<String, BuildError> {
    let mut failures = 0;
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
        failures += 1;
        let delay = Backoff::RECONNECT.delay(failures, &mut rand::rng());
        tokio::select! {
            _ = cancel.cancelled() => return Err(BuildError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
