//! A scripted Docker engine for unit tests: the test sets what each container inspects as,
//! emits events, ends the event stream, and makes calls fail, answer slowly or panic, all on
//! tokio time, so the reconciler and the Docker source run on paused time without an engine.
//! It records what it was asked, for assertions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::view::ContainerView;
use super::{DockerError, Event};

type Events = mpsc::UnboundedSender<Result<Option<Event>, DockerError>>;

#[derive(Debug, Default)]
struct State {
    containers: BTreeMap<String, ContainerView>,
    /// Every call fails, as if the engine were unreachable.
    down: bool,
    inspect_delays: HashMap<String, Duration>,
    inspect_panics: HashMap<String, u32>,
    /// The event stream opened last; dropping it ends that stream.
    stream: Option<Events>,
    streams_opened: usize,
    inspects: Vec<(Instant, String)>,
    /// How long each container listing takes to answer.
    list_delay: Duration,
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
    lists: usize,
}

/// One inspect in flight, until dropped.
struct InFlight<'a> {
    docker: &'a Scripted,
    id: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.docker.state().in_flight.get_mut(self.id) {
            *n -= 1;
        }
    }
}

/// The scripted engine. Clones share one script.
#[derive(Clone, Debug, Default)]
pub struct Scripted {
    state: Arc<Mutex<State>>,
}

fn failure(op: &'static str) -> DockerError {
    DockerError::Api {
        op,
        source: super::Cause::Docker(BollardError::DockerResponseServerError {
            status_code: 500,
            message: "scripted failure".to_owned(),
        }),
    }
}

impl Scripted {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces a container; it inspects as `view` from now on.
    pub fn put(&self, view: ContainerView) {
        self.state().containers.insert(view.id.clone(), view);
    }

    /// Removes a container: it inspects as gone and is no longer listed.
    pub fn remove(&self, id: &str) {
        self.state().containers.remove(id);
    }

    /// Every container listing answers `delay` after it was asked.
    pub fn delay_lists(&self, delay: Duration) {
        self.state().list_delay = delay;
    }

    /// Makes every call fail (`true`) or answer again.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Every inspect of `id` answers `delay` after it was asked, with the state at the time
    /// it was asked (as an engine does that is slow to answer).
    pub fn delay_inspects(&self, id: &str, delay: Duration) {
        self.state().inspect_delays.insert(id.to_owned(), delay);
    }

    /// The next inspect of `id` panics (a bug in a reconcile task).
    pub fn panic_next_inspect(&self, id: &str) {
        *self
            .state()
            .inspect_panics
            .entry(id.to_owned())
            .or_default() += 1;
    }

    /// Sends an event on the open stream; false when no stream is open.
    pub fn emit(&self, container: &str, action: &str) -> bool {
        self.send(Event::new(container, action, None))
    }

    /// Sends a `kill` event with signal `signal` on the open stream.
    pub fn emit_kill(&self, container: &str, signal: i32) -> bool {
        self.send(Event::new(container, "kill", Some(&signal.to_string())))
    }

    fn send(&self, event: Event) -> bool {
        self.state()
            .stream
            .as_ref()
            .is_some_and(|s| s.send(Ok(Some(event))).is_ok())
    }

    /// Ends the open event stream, as a dockerd restart does.
    pub fn end_stream(&self) {
        self.state().stream = None;
    }

    /// Event streams opened so far (connects and reconnects).
    pub fn streams_opened(&self) -> usize {
        self.state().streams_opened
    }

    /// Container listings answered so far.
    pub fn lists(&self) -> usize {
        self.state().lists
    }

    /// Inspects asked for `id` so far.
    pub fn inspects_of(&self, id: &str) -> usize {
        self.state()
            .inspects
            .iter()
            .filter(|(_, i)| i == id)
            .count()
    }

    /// The most inspects of `id` that were in flight at once.
    pub fn max_concurrent_inspects(&self, id: &str) -> usize {
        self.state().max_in_flight.get(id).copied().unwrap_or(0)
    }

    pub(super) async fn call(&self, op: &'static str) -> Result<(), DockerError> {
        if self.state().down {
            return Err(failure(op));
        }
        Ok(())
    }

    pub(super) async fn node_name(&self) -> Result<String, DockerError> {
        self.call("info").await?;
        Ok("scripted-node".to_owned())
    }

    pub(super) async fn list_ids(&self) -> Result<Vec<String>, DockerError> {
        let delay = self.state().list_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.state();
        if state.down {
            return Err(failure("list containers"));
        }
        state.lists += 1;
        Ok(state
            .containers
            .values()
            .filter(|v| v.running || v.paused)
            .map(|v| v.id.clone())
            .collect())
    }

    pub(super) async fn inspect(&self, id: &str) -> Result<Option<ContainerView>, DockerError> {
        let (answer, delay) = {
            let mut state = self.state();
            state.inspects.push((Instant::now(), id.to_owned()));
            if state.down {
                return Err(failure("inspect"));
            }
            if let Some(n) = state.inspect_panics.get_mut(id).filter(|n| **n > 0) {
                *n -= 1;
                drop(state);
                panic!("scripted panic while inspecting {id}");
            }
            let n = state.in_flight.entry(id.to_owned()).or_default();
            *n += 1;
            let now = *n;
            let max = state.max_in_flight.entry(id.to_owned()).or_default();
            *max = (*max).max(now);
            (
                state.containers.get(id).cloned(),
                state.inspect_delays.get(id).copied(),
            )
        };
        // Counted out when answered, or when the caller gives up on it.
        let _in_flight = InFlight { docker: self, id };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        Ok(answer)
    }

    pub(super) async fn restart(&self, _id: &str) -> Result<(), DockerError> {
        self.call("restart").await
    }

    /// A new stream; the one opened before it ends.
    pub(super) fn events(&self) -> BoxStream<'static, Result<Option<Event>, DockerError>> {
        let mut state = self.state();
        if state.down {
            return futures::stream::once(async { Err(failure("event stream")) }).boxed();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        state.stream = Some(tx);
        state.streams_opened += 1;
        futures::stream::unfold(rx, |mut rx| async move {
            let next = rx.recv().await?;
            Some((next, rx))
        })
        .boxed()
    }
}
