//! What the agent tells about itself: [`metrics`] (Prometheus) and [`ready`] (readiness),
//! bundled in one [`Observer`] that every task is given (no globals). The admin server
//! (`crate::admin`) serves both.

pub mod metrics;
pub mod ready;

use std::future::Future;
use std::time::Duration;

use berth_registry::RegistryError;
use tokio::time::Instant;

pub use metrics::{Metrics, RegistryOp};
pub use ready::Readiness;

/// Metrics and readiness, shared by every task.
#[derive(Debug)]
pub struct Observer {
    pub metrics: Metrics,
    pub ready: Readiness,
}

impl Observer {
    /// `ttl`: the instance TTL, which bounds how long a failing registry still counts as
    /// ready.
    pub fn new(ttl: Duration) -> Observer {
        Observer {
            metrics: Metrics::new(),
            ready: Readiness::new(ttl),
        }
    }

    /// Runs one registry call, counting it, timing it, and telling readiness whether the
    /// registry answered. Returns the result and how long the call took.
    pub async fn registry<T>(
        &self,
        op: RegistryOp,
        call: impl Future<Output = Result<T, RegistryError>>,
    ) -> (Result<T, RegistryError>, Duration) {
        let started = Instant::now();
        let result = call.await;
        let took = started.elapsed();
        self.metrics.registry_call(op, took, result.as_ref().err());
        let failed = match &result {
            Err(RegistryError::Unavailable { .. } | RegistryError::Config(_)) => true,
            // A refused heartbeat (an ACL token revoked) lets every TTL lapse: as bad as an
            // outage. A refused write is about that one instance.
            Err(RegistryError::Rejected { .. }) => op == RegistryOp::Heartbeat,
            Err(RegistryError::NotFound { .. }) | Ok(_) => false,
        };
        match &result {
            Err(e) if failed => self
                .ready
                .registry_failed(&crate::telemetry::chain(e), Instant::now()),
            _ => self.ready.registry_answered(),
        }
        (result, took)
    }
}
