//! The real Docker engine, through bollard, with a timeout on every call, over a pooled
//! connection.
//!
//! bollard's own transports keep no idle connection (`pool_max_idle_per_host(0)`), so every
//! call would open a connection to dockerd: a snapshot of 300 containers made 300
//! connections, and each costs dockerd and the kernel more than the inspect's own work at
//! that size. berth hands bollard a hyper client that keeps up to [`IDLE_CONNECTIONS`]
//! connections for [`IDLE_TIMEOUT`]; hyper retries a request whose pooled connection turned
//! out closed before it was sent (dockerd restarted), and a call on a dead engine still fails
//! at once.

use std::collections::HashMap;
use std::time::Duration;

use bollard::BollardRequest;
use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, RestartContainerOptionsBuilder,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hyper::Response;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

use super::view::ContainerView;
use super::{Cause, DockerError, Event, RESTART_STOP_TIMEOUT};

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

/// Idle connections to dockerd kept for reuse.
const IDLE_CONNECTIONS: usize = 32;
/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A bollard transport over a hyper client that keeps its connections.
fn pooled<C>(
    connector: C,
) -> impl Fn(BollardRequest) -> BoxFuture<'static, Result<Response<Incoming>, BollardError>>
+ Send
+ Sync
+ 'static
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(connector);
    move |request: BollardRequest| {
        let client = client.clone();
        Box::pin(async move { client.request(request).await.map_err(BollardError::from) })
    }
}

/// `unix://<path, hex-encoded>`: how bollard and hyperlocal name a socket in a URI.
fn unix_address(path: &str) -> String {
    let hex: String = path.bytes().map(|b| format!("{b:02x}")).collect();
    format!("unix://{hex}")
}

/// A bollard client with a timeout on every call.
#[derive(Clone, Debug)]
pub struct Engine {
    docker: bollard::Docker,
    endpoint: String,
    timeout: Duration,
}

impl Engine {
    /// Builds a client for `host` (`unix:///…`, `tcp://…`, `http://…`), or the default socket
    /// when `None`. Does not talk to the engine yet.
    pub fn new(host: Option<&str>, timeout: Duration) -> Result<Engine, DockerError> {
        let endpoint = host
            .map(str::to_owned)
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
        let secs = timeout.as_secs().max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let docker = if endpoint.starts_with("unix://") || endpoint.starts_with('/') {
            let path = endpoint.trim_start_matches("unix://");
            let transport = pooled(hyperlocal::UnixConnector);
            bollard::Docker::connect_with_custom_transport(
                transport,
                Some(unix_address(path)),
                secs,
                version,
            )
        } else {
            let http = endpoint.replacen("tcp://", "http://", 1);
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            bollard::Docker::connect_with_custom_transport(
                pooled(connector),
                Some(http),
                secs,
                version,
            )
        }
        .map_err(|source| DockerError::Connect {
            endpoint: endpoint.clone(),
            source: source.into(),
        })?;
        Ok(Engine {
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
            Ok(Err(source)) => Err(DockerError::Api {
                op,
                source: source.into(),
            }),
            Err(_) => Err(DockerError::Timeout {
                op,
                timeout: self.timeout,
            }),
        }
    }

    /// Agrees on an API version with the engine (this bollard speaks a newer API than older
    /// engines accept).
    pub async fn negotiate(&mut self) -> Result<(), DockerError> {
        let docker = self.docker.clone();
        self.docker = self.timed("version", docker.negotiate_version()).await?;
        Ok(())
    }

    pub async fn node_name(&self) -> Result<String, DockerError> {
        let info = self.timed("info", self.docker.info()).await?;
        Ok(info.name.unwrap_or_default())
    }

    pub async fn list_ids(&self) -> Result<Vec<String>, DockerError> {
        // Running and paused containers only: a stopped container registers nothing, and any
        // registration it left behind is found through the registry side of the snapshot.
        let opts = ListContainersOptionsBuilder::default().all(false).build();
        let list = self
            .timed("list containers", self.docker.list_containers(Some(opts)))
            .await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerView>, DockerError> {
        match self
            .timed("inspect", self.docker.inspect_container(id, None))
            .await
        {
            Ok(c) => Ok(Some(ContainerView::from_inspect(&c))),
            Err(DockerError::Api {
                source:
                    Cause::Docker(BollardError::DockerResponseServerError {
                        status_code: 404, ..
                    }),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn restart(&self, id: &str) -> Result<(), DockerError> {
        let opts = RestartContainerOptionsBuilder::default()
            .t(RESTART_STOP_TIMEOUT.as_secs() as i32)
            .build();
        let op = "restart";
        let call = self.docker.restart_container(id, Some(opts));
        let timeout = self.timeout + RESTART_STOP_TIMEOUT;
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(DockerError::Api {
                op,
                source: source.into(),
            }),
            Err(_) => Err(DockerError::Timeout { op, timeout }),
        }
    }

    /// Container and network events since `since`; `Some` for the ones berth acts on.
    pub fn events(&self, since: i64) -> BoxStream<'static, Result<Option<Event>, DockerError>> {
        let filters = HashMap::from([("type", vec!["container", "network"])]);
        let opts = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        self.docker
            .events(Some(opts))
            .filter_map(|ev| async move {
                match ev {
                    // Every event shows the stream is alive; only some are acted on.
                    Ok(ev) => Some(Ok(relevant(&ev))),
                    Err(source) => Some(Err(DockerError::Api {
                        op: "event stream",
                        source: source.into(),
                    })),
                }
            })
            .boxed()
    }
}

/// The event berth acts on, if this one can change a registration.
fn relevant(ev: &EventMessage) -> Option<Event> {
    let action = ev.action.as_deref()?;
    let actor = ev.actor.as_ref()?;
    let container = match ev.typ? {
        EventMessageTypeEnum::CONTAINER
            if CONTAINER_ACTIONS.iter().any(|a| action.starts_with(a)) =>
        {
            actor.id.clone()?
        }
        EventMessageTypeEnum::NETWORK if action == "connect" || action == "disconnect" => {
            actor.attributes.as_ref()?.get("container").cloned()?
        }
        _ => return None,
    };
    let signal = actor
        .attributes
        .as_ref()
        .and_then(|a| a.get("signal"))
        .map(String::as_str);
    Some(Event::new(container, action, signal))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::docker::Fact;
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
    fn a_socket_path_is_named_in_hex() {
        assert_eq!(unix_address("/a.sock"), "unix://2f612e736f636b");
    }

    fn container_of(e: &EventMessage) -> Option<String> {
        relevant(e).map(|e| e.container)
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
            "update",
            "health_status: unhealthy",
        ] {
            let got = relevant(&ev(CONTAINER, action, "c1", &[]));
            assert_eq!(got, Some(Event::new("c1", action, None)), "{action}");
        }
        for action in ["exec_start: sh", "attach", "resize", "top", "create"] {
            assert_eq!(
                container_of(&ev(CONTAINER, action, "c1", &[])),
                None,
                "{action}"
            );
        }
        assert_eq!(
            container_of(&ev(NETWORK, "connect", "net1", &[("container", "c2")])),
            Some("c2".into())
        );
        assert_eq!(
            container_of(&ev(NETWORK, "disconnect", "net1", &[("container", "c2")])),
            Some("c2".into())
        );
        assert_eq!(container_of(&ev(NETWORK, "create", "net1", &[])), None);
        // A kill carries its signal, and so what it proves.
        let kill = relevant(&ev(CONTAINER, "kill", "c1", &[("signal", "15")])).unwrap();
        assert_eq!(kill.fact, Some(Fact::Signalled(15)));
        let kill = relevant(&ev(CONTAINER, "kill", "c1", &[("signal", "9")])).unwrap();
        assert_eq!(kill.fact, Some(Fact::Killed));
        // A network event proves nothing about the container's process.
        let connect = relevant(&ev(NETWORK, "disconnect", "n", &[("container", "c2")])).unwrap();
        assert_eq!(connect.fact, None);
        assert_eq!(container_of(&ev(IMAGE, "pull", "i", &[])), None);
    }
}
