//! Docker source: connect, list + watch with no gap, reconnect, periodic resync.
//!
//! [`run_source`] is the long-running task. After every (re)connect and every `--resync` tick
//! it sends a [`Trigger::Snapshot`] with every container Docker has; in between it turns
//! each relevant event into a [`Trigger::Container`]. Triggers carry only container ids: the
//! reconciler inspects the container itself, so the event type never matters and a burst of
//! events for one container collapses into one reconcile.

pub mod view;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, RestartContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use view::ContainerView;

/// What the Docker side tells the reconciler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Something happened to this container (by full id): reconcile it.
    Container(String),
    /// Every running or paused container id Docker has right now (authoritative: anything the
    /// registry holds for other containers is stale).
    Snapshot(Vec<String>),
}

/// A Docker API failure.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot connect to docker at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: BollardError,
    },
    #[error("docker {op} timed out after {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("docker {op} failed: {source}")]
    Api {
        op: &'static str,
        #[source]
        source: BollardError,
    },
}

/// How long Docker waits for a container to stop on a self-healing restart before killing it.
pub const RESTART_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A bollard client with a timeout on every call.
#[derive(Clone, Debug)]
pub struct DockerClient {
    docker: Docker,
    endpoint: String,
    timeout: Duration,
}

/// Container event actions that can change what a container registers. `health_status`
/// arrives as `health_status: healthy`, so matching is by prefix.
const CONTAINER_ACTIONS: &[&str] = &[
    "start",
    "die",
    "stop",
    "kill",
    "destroy",
    "pause",
    "unpause",
    "rename",
    "health_status",
    "update",
];

impl DockerClient {
    /// Builds a client for `host` (`unix:///…`, `tcp://…`, `http://…`), or `DOCKER_HOST` /
    /// the default socket when `None`. Does not talk to the engine yet.
    pub fn new(host: Option<&str>, timeout: Duration) -> Result<DockerClient, DockerError> {
        let endpoint = host
            .map(str::to_owned)
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let docker = if endpoint.starts_with("unix://") || endpoint.starts_with('/') {
            let path = endpoint.trim_start_matches("unix://");
            Docker::connect_with_unix(path, timeout.as_secs().max(1), bollard::API_DEFAULT_VERSION)
        } else {
            let http = endpoint.replacen("tcp://", "http://", 1);
            Docker::connect_with_http(
                &http,
                timeout.as_secs().max(1),
                bollard::API_DEFAULT_VERSION,
            )
        }
        .map_err(|source| DockerError::Connect {
            endpoint: endpoint.clone(),
            source,
        })?;
        Ok(DockerClient {
            docker,
            endpoint,
            timeout,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, DockerError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(DockerError::Api { op, source }),
            Err(_) => Err(DockerError::Timeout {
                op,
                timeout: self.timeout,
            }),
        }
    }

    /// Agrees on an API version with the engine (this bollard speaks a newer API than older
    /// engines accept). Call after every (re)connect.
    pub async fn negotiate(&mut self) -> Result<(), DockerError> {
        let docker = self.docker.clone();
        self.docker = self.timed("version", docker.negotiate_version()).await?;
        Ok(())
    }

    /// The engine's own node name (`docker info`'s Name).
    pub async fn node_name(&self) -> Result<String, DockerError> {
        let info = self.timed("info", self.docker.info()).await?;
        Ok(info.name.unwrap_or_default())
    }

    /// Ids of every running or paused container.
    pub async fn list_ids(&self) -> Result<Vec<String>, DockerError> {
        // Running and paused containers only: a stopped container registers nothing, and any
        // registration it left behind is found through the registry side of the snapshot.
        let opts = ListContainersOptionsBuilder::default().all(false).build();
        let list = self
            .timed("list containers", self.docker.list_containers(Some(opts)))
            .await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// The container's view, or `None` when it no longer exists.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerView>, DockerError> {
        match self
            .timed("inspect", self.docker.inspect_container(id, None))
            .await
        {
            Ok(c) => Ok(Some(ContainerView::from_inspect(&c))),
            Err(DockerError::Api {
                source:
                    BollardError::DockerResponseServerError {
                        status_code: 404, ..
                    },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Restarts a container (self-healing; the only write berth makes to Docker). Docker
    /// waits up to [`RESTART_STOP_TIMEOUT`] for it to stop, so the call may take that long.
    pub async fn restart(&self, id: &str) -> Result<(), DockerError> {
        let opts = RestartContainerOptionsBuilder::default()
            .t(RESTART_STOP_TIMEOUT.as_secs() as i32)
            .build();
        let op = "restart";
        let call = self.docker.restart_container(id, Some(opts));
        let timeout = self.timeout + RESTART_STOP_TIMEOUT;
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(DockerError::Api { op, source }),
            Err(_) => Err(DockerError::Timeout { op, timeout }),
        }
    }

    /// Container and network events since `since` (unix seconds).
    fn events(
        &self,
        since: i64,
    ) -> impl futures::Stream<Item = Result<EventMessage, BollardError>> + use<> {
        let filters = HashMap::from([("type", vec!["container", "network"])]);
        let opts = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        self.docker.events(Some(opts))
    }
}

/// The 12-character short form of a container id, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The container an event is about, if the event can change a registration.
pub fn event_container(ev: &EventMessage) -> Option<String> {
    let action = ev.action.as_deref()?;
    let actor = ev.actor.as_ref()?;
    match ev.typ? {
        EventMessageTypeEnum::CONTAINER => CONTAINER_ACTIONS
            .iter()
            .any(|a| action.starts_with(a))
            .then(|| actor.id.clone())
            .flatten(),
        EventMessageTypeEnum::NETWORK if action == "connect" || action == "disconnect" => {
            actor.attributes.as_ref()?.get("container").cloned()
        }
        _ => None,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Capped, jittered exponential backoff for reconnects (0.5 s doubling to 30 s).
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Watches Docker until `cancel` fires. Never returns early: every failure is logged in one
/// line and retried with backoff.
pub async fn run_source(
    mut docker: DockerClient,
    resync: Duration,
    resync_now: Arc<Notify>,
    tx: mpsc::Sender<Trigger>,
    cancel: CancellationToken,
) {
    let mut backoff = reconnect_backoff();
    loop {
        match watch_once(&mut docker, resync, &resync_now, &tx, &cancel).await {
            Ok(()) => return, // cancelled
            Err(reason) => {
                if reason.healthy {
                    // The stream worked before it broke: this is a new outage, start small.
                    backoff = reconnect_backoff();
                }
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                warn!(endpoint = docker.endpoint(), %reason, retry_in = ?delay, "docker unavailable; will reconnect and relist");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Why a watch ended.
#[derive(Debug)]
struct Ended {
    message: String,
    /// True when the connection proved itself (an event arrived, or a resync ran) before it
    /// failed; a stream that fails at once keeps backing off instead.
    healthy: bool,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One connection: list, watch, resync; returns `Ok` only when cancelled.
async fn watch_once(
    docker: &mut DockerClient,
    resync: Duration,
    resync_now: &Notify,
    tx: &mpsc::Sender<Trigger>,
    cancel: &CancellationToken,
) -> Result<(), Ended> {
    let fail = |healthy: bool| {
        move |e: DockerError| Ended {
            message: crate::telemetry::chain(&e),
            healthy,
        }
    };
    docker.negotiate().await.map_err(fail(false))?;
    // Take `since` before listing, so events during the list are replayed, not lost.
    let since = unix_now() - 1;
    let ids = docker.list_ids().await.map_err(fail(false))?;
    info!(
        containers = ids.len(),
        "docker connected; applying snapshot"
    );
    if tx.send(Trigger::Snapshot(ids)).await.is_err() {
        return Ok(());
    }
    let mut events = Box::pin(docker.events(since));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + resync, resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let ids = docker.list_ids().await.map_err(fail(healthy))?;
                healthy = true;
                debug!(containers = ids.len(), "periodic resync");
                if tx.send(Trigger::Snapshot(ids)).await.is_err() {
                    return Ok(());
                }
            }
            _ = resync_now.notified() => {
                let ids = docker.list_ids().await.map_err(fail(healthy))?;
                info!(containers = ids.len(), "resync requested by the registry backend");
                tick.reset();
                if tx.send(Trigger::Snapshot(ids)).await.is_err() {
                    return Ok(());
                }
            }
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    healthy = true;
                    if let Some(id) = event_container(&ev) {
                        debug!(container = %id, action = ev.action.as_deref().unwrap_or(""), "docker event");
                        if tx.send(Trigger::Container(id)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Some(Err(e)) => return Err(Ended { message: format!("event stream failed: {}", crate::telemetry::chain(&e)), healthy }),
                None => return Err(Ended { message: "event stream ended".into(), healthy }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bollard::models::EventActor;

    fn ev(
        typ: EventMessageTypeEnum,
        action: &str,
        id: &str,
        attrs: &[(&str, &str)],
    ) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn relevant_events_map_to_their_container() {
        use EventMessageTypeEnum::*;
        for action in [
            "start",
            "die",
            "stop",
            "kill",
            "destroy",
            "pause",
            "unpause",
            "rename",
            "health_status: unhealthy",
        ] {
            assert_eq!(
                event_container(&ev(CONTAINER, action, "c1", &[])),
                Some("c1".into()),
                "{action}"
            );
        }
        for action in ["exec_start: sh", "attach", "resize", "top", "create"] {
            assert_eq!(
                event_container(&ev(CONTAINER, action, "c1", &[])),
                None,
                "{action}"
            );
        }
        assert_eq!(
            event_container(&ev(NETWORK, "connect", "net1", &[("container", "c2")])),
            Some("c2".into())
        );
        assert_eq!(
            event_container(&ev(NETWORK, "disconnect", "net1", &[("container", "c2")])),
            Some("c2".into())
        );
        assert_eq!(event_container(&ev(NETWORK, "create", "net1", &[])), None);
        assert_eq!(event_container(&ev(IMAGE, "pull", "i", &[])), None);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let delays: Vec<Duration> = reconnect_backoff().take(20).collect();
        assert!(
            delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_millis(1000)
        );
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(60)),
            "{delays:?}"
        );
        assert!(
            delays[19] >= Duration::from_secs(30),
            "reaches the cap: {delays:?}"
        );
        let again: Vec<Duration> = reconnect_backoff().take(20).collect();
        assert_ne!(delays, again, "jitter makes two schedules differ");
    }
}
