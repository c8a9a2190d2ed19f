//! Opt-in self-healing: restart a container labelled `berth.autoheal=true` (or
//! `autoheal=true`) that keeps failing.
//!
//! Requests come from the prober (a check failed `--autoheal-failures` times in a row) and
//! from the reconciler (Docker's HEALTHCHECK says `unhealthy`). This task owns the per-container
//! limits, so it needs no lock: after a restart the container is left alone for
//! `--autoheal-cooldown`, and at most `--autoheal-max-restarts` restarts happen per
//! `--autoheal-window`; then berth logs "autoheal restart limit reached" once (the record's
//! message goes on: "; not restarting until the window moves on") and waits.
//!
//! This is the only part of berth that writes to the Docker API (`POST
//! /containers/<id>/restart`); everything else only reads.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::docker::Docker;
use crate::observe::Observer;

/// Told of every restart that succeeded: the container id and a one-line note saying why,
/// for the health output (`app` wires it to the prober).
pub type OnRestart = Arc<dyn Fn(&str, String) + Send + Sync>;

/// Restart `container` because of `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub container: String,
    pub name: String,
    pub reason: String,
}

/// Hands `req` to the self-healing task. A full queue drops it: the next failed probe, health
/// event or resync asks again.
pub fn request(tx: &mpsc::Sender<Request>, req: Request) {
    let _ = tx.try_send(req);
}

/// The limits.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub cooldown: Duration,
    pub max_restarts: usize,
    pub window: Duration,
}

/// What to do with a request, decided by [`Limits::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart now; this is restart `n` in the window.
    Restart { n: usize },
    /// Within the cooldown of the last restart.
    Cooldown,
    /// The window's restarts are used up; `first` is true the first time this is said.
    Limit { first: bool },
}

/// Per-container restart history. Pure apart from the instants it is given.
#[derive(Debug, Default)]
pub struct Limits {
    restarts: HashMap<String, History>,
}

#[derive(Debug, Default)]
struct History {
    at: VecDeque<Instant>,
    limit_logged: bool,
}

impl Limits {
    pub fn decide(&mut self, options: &Options, container: &str, now: Instant) -> Decision {
        let h = self.restarts.entry(container.to_owned()).or_default();
        while h
            .at
            .front()
            .is_some_and(|t| now.duration_since(*t) >= options.window)
        {
            h.at.pop_front();
        }
        if h.at
            .back()
            .is_some_and(|t| now.duration_since(*t) < options.cooldown)
        {
            return Decision::Cooldown;
        }
        if h.at.len() >= options.max_restarts {
            let first = !h.limit_logged;
            h.limit_logged = true;
            return Decision::Limit { first };
        }
        h.at.push_back(now);
        h.limit_logged = false;
        Decision::Restart { n: h.at.len() }
    }

    /// Forgets containers whose history has aged out of the window.
    fn prune(&mut self, options: &Options, now: Instant) {
        self.restarts.retain(|_, h| {
            h.at.back()
                .is_some_and(|t| now.duration_since(*t) < options.window)
        });
    }
}

/// The self-healing task.
pub async fn run(
    docker: Docker,
    options: Options,
    mut requests: mpsc::Receiver<Request>,
    on_restart: OnRestart,
    observe: Arc<Observer>,
    cancel: CancellationToken,
) {
    let mut limits = Limits::default();
    let mut total: u64 = 0;
    let mut restarts: JoinSet<Option<String>> = JoinSet::new();
    let window = humantime::format_duration(options.window).to_string();
    loop {
        let req = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = restarts.join_next() => {
                if let Ok(Some(container)) = done {
                    debug!(container.id = %crate::docker::short_id(&container), "autoheal: restart finished");
                }
                continue;
            }
            r = requests.recv() => match r {
                Some(r) => r,
                None => break,
            },
        };
        let now = Instant::now();
        limits.prune(&options, now);
        let short = crate::docker::short_id(&req.container).to_owned();
        match limits.decide(&options, &req.container, now) {
            Decision::Cooldown => {
                debug!(container.name = %req.name, "autoheal: in cooldown; not restarting yet");
            }
            Decision::Limit { first } => {
                observe.metrics.autoheal_refused.inc();
                if first {
                    warn!(
                        container.name = %req.name,
                        container.id = %short,
                        max_restarts = options.max_restarts,
                        window = %window,
                        "autoheal restart limit reached; not restarting until the window moves on"
                    )
                }
            }
            Decision::Restart { n } => {
                total += 1;
                observe.metrics.autoheal_restarts.inc();
                warn!(
                    container.name = %req.name,
                    container.id = %short,
                    restart = n,
                    max_restarts = options.max_restarts,
                    window = %window,
                    reason = %req.reason,
                    restarts_total = total,
                    "autoheal restarting container"
                );
                let note = format!(
                    "autoheal: restarted by berth (restart {n} of at most {} per {window}) because {}",
                    options.max_restarts,
                    req.reason.lines().next().unwrap_or_default()
                );
                let docker = docker.clone();
                let on_restart = on_restart.clone();
                restarts.spawn(async move {
                    match docker.restart(&req.container).await {
                        Ok(()) => {
                            on_restart(&req.container, note);
                            Some(req.container)
                        }
                        Err(e) => {
                            warn!(
                                container.name = %req.name,
                                error = %crate::telemetry::chain(&e),
                                "autoheal restart failed"
                            );
                            None
                        }
                    }
                });
            }
        }
    }
    restarts.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            cooldown: Duration::from_secs(60),
            max_restarts: 2,
            window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn cooldown_then_limit_then_window() {
        let o = options();
        let mut l = Limits::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(l.decide(&o, "a", at(0)), Decision::Restart { n: 1 });
        assert_eq!(l.decide(&o, "a", at(30)), Decision::Cooldown);
        // Another container has its own limits.
        assert_eq!(l.decide(&o, "b", at(30)), Decision::Restart { n: 1 });
        assert_eq!(l.decide(&o, "a", at(61)), Decision::Restart { n: 2 });
        assert_eq!(l.decide(&o, "a", at(200)), Decision::Limit { first: true });
        assert_eq!(l.decide(&o, "a", at(300)), Decision::Limit { first: false });
        // The first restart leaves the window: one more is allowed.
        assert_eq!(l.decide(&o, "a", at(3600)), Decision::Restart { n: 2 });
        assert_eq!(l.decide(&o, "a", at(3630)), Decision::Cooldown);
        assert_eq!(l.decide(&o, "a", at(3660)), Decision::Limit { first: true });
    }
}
