//! The Docker seam: everything berth asks the engine goes through [`Docker`], a closed enum
//! (as `Registry` is): the real engine ([`engine::Engine`], bollard), or in unit tests a
//! scripted one (`scripted::Scripted`) whose answers, events, failures and delays the test
//! controls.
//!
//! berth only reads, apart from self-healing's `restart`. [`view::ContainerView`] is the part
//! of `docker inspect` that matters; [`Event`] is a container event that can change what a
//! container registers.

pub mod engine;
#[cfg(test)]
pub mod scripted;
pub mod view;

use std::time::Duration;

use bollard::errors::Error as BollardError;
use futures::stream::BoxStream;

use view::ContainerView;

/// A Docker API failure. The message names the operation; the source says why.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot connect to docker at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: Cause,
    },
    #[error("docker {op} timed out after {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },
    #[error("docker {op} failed")]
    Api {
        op: &'static str,
        #[source]
        source: Cause,
    },
}

/// Why a Docker call failed, as bollard reports it, except that bollard's HTTP-client
/// error, which prints its own cause as well as passing it on, is replaced by that cause, so
/// an error chain says each thing once.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Docker(BollardError),
    /// The HTTP client failed: connecting, or the connection broke.
    #[error(transparent)]
    Transport(Box<dyn std::error::Error + Send + Sync>),
}

impl From<BollardError> for Cause {
    fn from(e: BollardError) -> Cause {
        match e {
            BollardError::HyperLegacyError { err } => Cause::Transport(Box::new(err)),
            other => Cause::Docker(other),
        }
    }
}

/// A container event berth acts on: it may change what the container registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Full container id.
    pub container: String,
    /// Docker's action, e.g. `start`, `die`, `health_status: healthy`, or `connect` for a
    /// network attachment.
    pub action: String,
    /// What the event itself proves, so the reconciler can act on it before an inspect
    /// answers.
    pub fact: Option<Fact>,
}

impl Event {
    /// A container event with action `action` and, for a `kill`, its `signal` attribute.
    pub fn new(container: impl Into<String>, action: &str, signal: Option<&str>) -> Event {
        Event {
            container: container.into(),
            action: action.to_owned(),
            fact: Fact::of(action, signal),
        }
    }
}

/// What a container event proves about the container without asking Docker. Docker answers
/// an inspect of a dying container only once it has torn it down (~100 ms after `die`);
/// these let the reconciler act at once, and it still inspects afterwards to converge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// `start`: the container runs (again); whatever earlier events proved no longer holds.
    Started,
    /// `kill` with this signal number. When it is the container's stop signal, the container
    /// is being stopped (`docker stop`, a Swarm or Kubernetes stop): berth drains it.
    Signalled(i32),
    /// `kill` with SIGKILL: the process cannot survive it, but Docker may still report it
    /// running for a few milliseconds, until its `die`.
    Killed,
    /// `die`, `stop` or `destroy`: the container's process is gone, and Docker says so.
    Exited,
}

/// SIGKILL: a `kill` with it always ends the container.
const SIGKILL: i32 = 9;

impl Fact {
    /// What an event with `action` (and, for a `kill`, its `signal` attribute) proves.
    pub fn of(action: &str, signal: Option<&str>) -> Option<Fact> {
        match action {
            "start" => Some(Fact::Started),
            "die" | "stop" | "destroy" => Some(Fact::Exited),
            "kill" => match signal?.trim().parse::<i32>().ok()? {
                SIGKILL => Some(Fact::Killed),
                n => Some(Fact::Signalled(n)),
            },
            _ => None,
        }
    }
}

/// How long Docker waits for a container to stop on a self-healing restart before killing it.
pub const RESTART_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The Docker engine berth talks to. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub enum Docker {
    Engine(engine::Engine),
    #[cfg(test)]
    Scripted(scripted::Scripted),
}

impl Docker {
    /// The real engine at `host` (`unix:///…`, `tcp://…`, `http://…`), or the default socket
    /// when `None`. Does not talk to the engine yet.
    pub fn connect(host: Option<&str>, timeout: Duration) -> Result<Docker, DockerError> {
        engine::Engine::new(host, timeout).map(Docker::Engine)
    }

    /// Where the engine is, for logs.
    pub fn endpoint(&self) -> &str {
        match self {
            Docker::Engine(e) => e.endpoint(),
            #[cfg(test)]
            Docker::Scripted(_) => "scripted",
        }
    }

    /// Agrees on an API version with the engine. Call after every (re)connect.
    pub async fn negotiate(&mut self) -> Result<(), DockerError> {
        match self {
            Docker::Engine(e) => e.negotiate().await,
            #[cfg(test)]
            Docker::Scripted(s) => s.call("version").await,
        }
    }

    /// The engine's own node name (`docker info`'s Name).
    pub async fn node_name(&self) -> Result<String, DockerError> {
        match self {
            Docker::Engine(e) => e.node_name().await,
            #[cfg(test)]
            Docker::Scripted(s) => s.node_name().await,
        }
    }

    /// Ids of every running or paused container.
    pub async fn list_ids(&self) -> Result<Vec<String>, DockerError> {
        match self {
            Docker::Engine(e) => e.list_ids().await,
            #[cfg(test)]
            Docker::Scripted(s) => s.list_ids().await,
        }
    }

    /// The container's view, or `None` when it no longer exists.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerView>, DockerError> {
        match self {
            Docker::Engine(e) => e.inspect(id).await,
            #[cfg(test)]
            Docker::Scripted(s) => s.inspect(id).await,
        }
    }

    /// Restarts a container (self-healing; the only write berth makes to Docker). Docker
    /// waits up to [`RESTART_STOP_TIMEOUT`] for it to stop, so the call may take that long.
    pub async fn restart(&self, id: &str) -> Result<(), DockerError> {
        match self {
            Docker::Engine(e) => e.restart(id).await,
            #[cfg(test)]
            Docker::Scripted(s) => s.restart(id).await,
        }
    }

    /// Container and network events since `since` (unix seconds): `Some` for one that can
    /// change a registration, `None` for any other (it still shows the connection works).
    /// The stream ends, or yields one error and ends, when the connection does.
    pub fn events(&self, since: i64) -> BoxStream<'static, Result<Option<Event>, DockerError>> {
        match self {
            Docker::Engine(e) => e.events(since),
            #[cfg(test)]
            Docker::Scripted(s) => s.events(),
        }
    }
}

/// The 12-character short form of a container id, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_events_prove() {
        assert_eq!(Fact::of("start", None), Some(Fact::Started));
        for action in ["die", "stop", "destroy"] {
            assert_eq!(Fact::of(action, None), Some(Fact::Exited), "{action}");
        }
        assert_eq!(Fact::of("kill", Some("9")), Some(Fact::Killed));
        assert_eq!(Fact::of("kill", Some("15")), Some(Fact::Signalled(15)));
        assert_eq!(Fact::of("kill", Some("3")), Some(Fact::Signalled(3)));
        // A kill whose signal Docker did not say proves nothing.
        assert_eq!(Fact::of("kill", None), None);
        assert_eq!(Fact::of("kill", Some("TERM")), None);
        for action in [
            "pause",
            "unpause",
            "rename",
            "update",
            "health_status: healthy",
            "connect",
        ] {
            assert_eq!(Fact::of(action, None), None, "{action}");
        }
    }
}
