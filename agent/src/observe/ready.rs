//! Readiness: is this agent doing its job right now?
//!
//! Ready means all of: the Docker engine is connected (its list answered and the event stream
//! has not failed since), the registry has answered, the first snapshot has been applied (every
//! container of the first listing reconciled once), and the registry has not been failing for
//! longer than one TTL (by then instances start to expire). Otherwise `/readyz` answers 503 with
//! [`Readiness::check`]'s one-line reason.
//!
//! The Docker source, the registry calls (through [`super::Observer`]) and the reconciler
//! report here; one `std::sync::Mutex`, never held across I/O.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
struct State {
    /// `None` before the first connection; `Some(Err)` while it is down.
    docker: Option<Result<(), String>>,
    registry_answered: bool,
    /// Since when the registry has failed without a success in between, and the latest
    /// failure.
    registry_failing: Option<(Instant, String)>,
    snapshot_applied: bool,
}

/// The readiness state shared by the tasks that report to it.
#[derive(Debug)]
pub struct Readiness {
    ttl: Duration,
    inner: Mutex<State>,
}

impl Readiness {
    /// `ttl`: how long the registry may fail before the agent counts as not ready.
    pub fn new(ttl: Duration) -> Readiness {
        Readiness {
            ttl,
            inner: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single assignment; a poisoned lock still holds a whole state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Docker engine answered a list: connected.
    pub fn docker_up(&self) {
        self.lock().docker = Some(Ok(()));
    }

    /// The Docker connection failed or its event stream ended.
    pub fn docker_down(&self, reason: &str) {
        self.lock().docker = Some(Err(reason.to_owned()));
    }

    /// A registry call got an answer (success, or a refusal: the registry is there).
    pub fn registry_answered(&self) {
        let mut s = self.lock();
        s.registry_answered = true;
        s.registry_failing = None;
    }

    /// A registry call found it unreachable.
    pub fn registry_failed(&self, reason: &str, now: Instant) {
        let mut s = self.lock();
        let since = s.registry_failing.as_ref().map_or(now, |(t, _)| *t);
        s.registry_failing = Some((since, reason.to_owned()));
    }

    /// Every container of the first listing has been reconciled once.
    pub fn snapshot_applied(&self) {
        self.lock().snapshot_applied = true;
    }

    /// Whether the first snapshot has been applied.
    pub fn applied(&self) -> bool {
        self.lock().snapshot_applied
    }

    /// `Ok` when ready; otherwise the one-line reason.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let s = self.lock();
        match &s.docker {
            None => return Err("docker not connected yet".into()),
            Some(Err(reason)) => return Err(format!("docker unavailable: {reason}")),
            Some(Ok(())) => {}
        }
        if let Some((since, reason)) = &s.registry_failing {
            let failing = now.saturating_duration_since(*since);
            if !s.registry_answered || failing > self.ttl {
                return Err(format!(
                    "registry unreachable for {}s: {reason}",
                    failing.as_secs()
                ));
            }
        }
        if !s.registry_answered {
            return Err("registry has not answered yet".into());
        }
        if !s.snapshot_applied {
            return Err("first snapshot not applied yet".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ready_after_docker_registry_and_snapshot_and_not_while_failing_past_a_ttl() {
        let r = Readiness::new(Duration::from_secs(15));
        let now = Instant::now;
        assert_eq!(r.check(now()), Err("docker not connected yet".into()));
        r.docker_up();
        assert_eq!(r.check(now()), Err("registry has not answered yet".into()));
        r.registry_failed("registry unavailable: connection refused", now());
        assert_eq!(
            r.check(now()),
            Err("registry unreachable for 0s: registry unavailable: connection refused".into()),
            "a registry that never answered is unreachable at once"
        );
        r.registry_answered();
        assert_eq!(r.check(now()), Err("first snapshot not applied yet".into()));
        r.snapshot_applied();
        assert_eq!(r.check(now()), Ok(()));

        r.registry_failed("down", now());
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(r.check(now()), Ok(()), "failing for one TTL is still ready");
        r.registry_failed("still down", now());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            r.check(now()),
            Err("registry unreachable for 16s: still down".into()),
            "the outage is timed from its first failure"
        );
        r.registry_answered();
        assert_eq!(r.check(now()), Ok(()));

        r.docker_down("event stream ended");
        assert_eq!(
            r.check(now()),
            Err("docker unavailable: event stream ended".into())
        );
        r.docker_up();
        assert_eq!(r.check(now()), Ok(()));
    }
}
