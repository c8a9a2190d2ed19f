//! The one backoff every retry loop uses: exponential, capped, with jitter.
//!
//! [`Backoff::delay`] is pure apart from the RNG it is given, so tests pass a seeded one. The
//! callers count failures themselves (per connection, per container, per parked write) and
//! sleep the delay inside a `select!` with their cancellation token.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `min` to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Reconnecting to Docker: 0.5 s doubling to 30 s.
    pub const RECONNECT: Backoff = Backoff {
        min: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };

    /// Retrying a container whose reconcile failed for a reason that may pass (Docker or the
    /// registry unavailable, an id still held by a predecessor): 0.5 s doubling to 16 s.
    pub const RETRY: Backoff = Backoff {
        min: Duration::from_millis(500),
        max: Duration::from_secs(16),
    };

    /// Reading the registry again after a listing failed (it makes the owned state exact and
    /// the agent ready, so it is retried sooner than a container): 0.5 s doubling to 5 s.
    pub const LISTING: Backoff = Backoff {
        min: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };

    /// Trying again a write the registry refused (it will likely refuse it again until
    /// someone changes something): 30 s doubling to 5 min.
    pub const PARKED: Backoff = Backoff {
        min: Duration::from_secs(30),
        max: Duration::from_secs(300),
    };

    /// The delay after `failures` consecutive failures (the first failure is 1): `min`
    /// doubled `failures - 1` times, capped at `max`, then drawn uniformly from its upper
    /// half, so that callers failing together do not retry together.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let full = self
            .min
            .saturating_mul(1u32 << doublings)
            .min(self.max)
            .max(self.min);
        full.mul_f64(rng.random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn doubles_to_the_cap_within_the_upper_half() {
        let mut rng = StdRng::seed_from_u64(7);
        let b = Backoff::RETRY;
        for (failures, full) in [(1, 500), (2, 1000), (3, 2000), (5, 8000), (6, 16000)] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let d = b.delay(failures, &mut rng);
                assert!(
                    d >= full / 2 && d <= full,
                    "after {failures} failures: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
        for failures in [7, 40, u32::MAX] {
            assert!(b.delay(failures, &mut rng) <= b.max, "capped");
        }
        assert!(
            b.delay(0, &mut rng) <= b.min,
            "no failure yet counts as the first"
        );
    }

    #[test]
    fn jitter_spreads_callers_that_fail_together() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..20)
            .map(|_| Backoff::RECONNECT.delay(3, &mut rng))
            .collect();
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first), "{delays:?}");
    }
}
