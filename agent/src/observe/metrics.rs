//! Every metric berth exports, named in this one module (Prometheus naming: the `berth_`
//! prefix, base units, `_total` on counters, which the encoder appends). `docs/operations.md`
//! lists them with their meaning; keep the two in step.
//!
//! Counters and histograms are updated where things happen; the gauges that describe state
//! (containers, instances, parked writes, readiness) are set from a short copy of the store
//! when `/metrics` is scraped ([`Metrics::set_state`]), never from the hot path.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Bounds of the latency histograms, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bounds of the writes-per-reconcile histogram.
const WRITE_COUNT_BUCKETS: [f64; 7] = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// A registry operation, as the `op` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistryOp {
    Register,
    Deregister,
    Health,
    Heartbeat,
    /// Reading what this node owns (every snapshot).
    List,
}

impl RegistryOp {
    pub const ALL: [RegistryOp; 5] = [
        RegistryOp::Register,
        RegistryOp::Deregister,
        RegistryOp::Health,
        RegistryOp::Heartbeat,
        RegistryOp::List,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RegistryOp::Register => "register",
            RegistryOp::Deregister => "deregister",
            RegistryOp::Health => "health",
            RegistryOp::Heartbeat => "heartbeat",
            RegistryOp::List => "list",
        }
    }
}

impl fmt::Display for RegistryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `kind` label of a registry error.
pub fn error_kind(e: &berth_registry::RegistryError) -> &'static str {
    use berth_registry::RegistryError as E;
    match e {
        E::NotFound { .. } => "not_found",
        E::Unavailable { .. } => "unavailable",
        E::Rejected { .. } => "rejected",
        E::Config(_) => "config",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpErrorLabels {
    pub op: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabel {
    pub health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub kind: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// State gauges, as read from the store at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub containers: i64,
    pub instances: i64,
    /// Passing, warning, critical.
    pub by_health: [i64; 3],
    /// Containers that register nothing, by [`crate::labels::Skip`] code.
    pub skipped: Vec<(&'static str, i64)>,
    pub parked: i64,
    pub ready: bool,
}

/// The agent's metrics, shared through the [`Observer`](super::Observer). Counters are
/// atomics; histograms and families take prometheus-client's short in-memory locks.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub docker_events: Family<ActionLabel, Counter>,
    pub docker_connects: Counter,
    pub snapshots: Counter,
    pub registry_writes: Family<OpLabel, Counter>,
    pub registry_errors: Family<OpErrorLabels, Counter>,
    pub registry_duration: Family<OpLabel, Histogram>,
    pub event_to_write: Histogram,
    pub reconcile_duration: Histogram,
    pub reconcile_writes: Histogram,
    pub probes: Family<ProbeLabels, Counter>,
    pub probe_duration: Family<KindLabel, Histogram>,
    pub autoheal_restarts: Counter,
    pub autoheal_refused: Counter,
    pub label_errors: Counter,
    containers: Gauge,
    instances: Gauge,
    instances_by_health: Family<HealthLabel, Gauge>,
    containers_skipped: Family<ReasonLabel, Gauge>,
    parked: Gauge,
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("berth");
        let m = Metrics {
            docker_events: Family::default(),
            docker_connects: Counter::default(),
            snapshots: Counter::default(),
            registry_writes: Family::default(),
            registry_errors: Family::default(),
            registry_duration: Family::new_with_constructor(latency_histogram),
            event_to_write: latency_histogram(),
            reconcile_duration: latency_histogram(),
            reconcile_writes: Histogram::new(WRITE_COUNT_BUCKETS),
            probes: Family::default(),
            probe_duration: Family::new_with_constructor(latency_histogram),
            autoheal_restarts: Counter::default(),
            autoheal_refused: Counter::default(),
            label_errors: Counter::default(),
            containers: Gauge::default(),
            instances: Gauge::default(),
            instances_by_health: Family::default(),
            containers_skipped: Family::default(),
            parked: Gauge::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "docker_events",
            "Docker events received, by action (actions berth does not act on count as other)",
            m.docker_events.clone(),
        );
        r.register(
            "docker_connects",
            "Connections to the Docker engine that listed its containers (the first and every reconnect)",
            m.docker_connects.clone(),
        );
        r.register(
            "snapshots_applied",
            "Registry listings applied as the owned state (startup, reconnects, resyncs)",
            m.snapshots.clone(),
        );
        r.register(
            "registry_writes",
            "Registry writes that succeeded, by operation",
            m.registry_writes.clone(),
        );
        r.register(
            "registry_errors",
            "Registry calls that failed, by operation and error kind",
            m.registry_errors.clone(),
        );
        r.register_with_unit(
            "registry_request_duration",
            "Duration of registry calls, by operation",
            Unit::Seconds,
            m.registry_duration.clone(),
        );
        r.register_with_unit(
            "event_to_write_duration",
            "From a Docker event's arrival to the first registry write it caused",
            Unit::Seconds,
            m.event_to_write.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Duration of one container's reconcile (inspect, plan, writes)",
            Unit::Seconds,
            m.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_writes",
            "Registry writes per container reconcile",
            m.reconcile_writes.clone(),
        );
        r.register(
            "probes",
            "Health probe results, by probe kind and status",
            m.probes.clone(),
        );
        r.register_with_unit(
            "probe_duration",
            "Duration of health probes, by kind",
            Unit::Seconds,
            m.probe_duration.clone(),
        );
        r.register(
            "autoheal_restarts",
            "Containers restarted by self-healing",
            m.autoheal_restarts.clone(),
        );
        r.register(
            "autoheal_refused",
            "Self-healing restarts not made because the restart limit was reached",
            m.autoheal_refused.clone(),
        );
        r.register(
            "label_errors",
            "Label problems found (each logged once, with the label key)",
            m.label_errors.clone(),
        );
        r.register(
            "containers",
            "Containers berth has looked at and still exist",
            m.containers.clone(),
        );
        r.register(
            "instances_owned",
            "Instances this node has registered",
            m.instances.clone(),
        );
        r.register(
            "instances",
            "Instances this node has registered, by the health last written",
            m.instances_by_health.clone(),
        );
        r.register(
            "containers_skipped",
            "Containers that register nothing, by reason",
            m.containers_skipped.clone(),
        );
        r.register(
            "writes_parked",
            "Writes the registry refused, waiting to be retried",
            m.parked.clone(),
        );
        r.register("ready", "1 when /readyz answers 200", m.ready.clone());
        let info: Family<VersionLabel, Gauge> = Family::default();
        info.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        r.register("build_info", "berth's version; always 1", info);
        Metrics { registry: r, ..m }
    }

    /// Counts one Docker event. Actions are cut at the first `:` (`health_status: healthy`
    /// counts as `health_status`), so the label stays a small set.
    pub fn docker_event(&self, action: Option<&str>) {
        let action = action
            .map(|a| a.split(':').next().unwrap_or(a).trim())
            .unwrap_or("other");
        self.docker_events
            .get_or_create(&ActionLabel {
                action: action.to_owned(),
            })
            .inc();
    }

    /// Records one registry call's outcome and duration.
    pub fn registry_call(
        &self,
        op: RegistryOp,
        took: Duration,
        error: Option<&berth_registry::RegistryError>,
    ) {
        let op = op.as_str();
        self.registry_duration
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
        match error {
            None if op != "list" => {
                self.registry_writes.get_or_create(&OpLabel { op }).inc();
            }
            None => {}
            Some(e) => {
                self.registry_errors
                    .get_or_create(&OpErrorLabels {
                        op,
                        kind: error_kind(e),
                    })
                    .inc();
            }
        }
    }

    /// Records one probe result.
    pub fn probe(&self, kind: &'static str, status: berth_registry::Status, took: Duration) {
        let status = match status {
            berth_registry::Status::Passing => "passing",
            berth_registry::Status::Warning => "warning",
            berth_registry::Status::Critical => "critical",
        };
        self.probes
            .get_or_create(&ProbeLabels { kind, status })
            .inc();
        self.probe_duration
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
    }

    /// Sets the state gauges. Every label value of a bounded set is written, zeros included,
    /// so a series never lingers at its last non-zero value.
    pub fn set_state(&self, s: &State) {
        self.containers.set(s.containers);
        self.instances.set(s.instances);
        for (health, n) in ["passing", "warning", "critical"]
            .into_iter()
            .zip(s.by_health)
        {
            self.instances_by_health
                .get_or_create(&HealthLabel { health })
                .set(n);
        }
        for (reason, n) in &s.skipped {
            self.containers_skipped
                .get_or_create(&ReasonLabel { reason })
                .set(*n);
        }
        self.parked.set(s.parked);
        self.ready.set(i64::from(s.ready));
    }

    /// The Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        m.docker_event(Some("health_status: healthy"));
        m.docker_event(None);
        m.registry_call(RegistryOp::Register, Duration::from_millis(2), None);
        m.registry_call(
            RegistryOp::Heartbeat,
            Duration::from_millis(2),
            Some(&berth_registry::RegistryError::NotFound { id: "x".into() }),
        );
        m.probe(
            "http",
            berth_registry::Status::Critical,
            Duration::from_millis(3),
        );
        m.event_to_write.observe(0.004);
        let text = m.encode().unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("berth_"), "{line}");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{line}"),
                "histogram" if name.contains("duration") => {
                    assert!(name.ends_with("_seconds"), "{line}")
                }
                _ => assert!(!name.ends_with("_total"), "{line}"),
            }
        }
        assert_eq!(
            sample(
                &text,
                r#"berth_docker_events_total{action="health_status"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"berth_docker_events_total{action="other"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"berth_registry_writes_total{op="register"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"berth_registry_errors_total{op="heartbeat",kind="not_found"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"berth_probes_total{kind="http",status="critical"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"berth_event_to_write_duration_seconds_bucket{le="0.005"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"berth_event_to_write_duration_seconds_bucket{le="0.0025"}"#
            ),
            Some(0.0)
        );
        assert!(text.contains(r#"le="0.0005""#) && text.contains(r#"le="10""#));
    }

    /// docs/operations.md lists every metric, so the page cannot fall behind the code.
    #[test]
    fn the_operations_page_lists_every_metric() {
        let page = include_str!("../../../docs/operations.md");
        let m = Metrics::new();
        // A family is exported once it has a series: give each one.
        m.docker_event(Some("start"));
        let down = berth_registry::RegistryError::NotFound { id: "x".into() };
        m.registry_call(RegistryOp::Register, Duration::ZERO, None);
        m.registry_call(RegistryOp::Register, Duration::ZERO, Some(&down));
        m.probe("tcp", berth_registry::Status::Passing, Duration::ZERO);
        m.set_state(&State {
            skipped: vec![("paused", 0)],
            ..State::default()
        });
        let text = m.encode().unwrap();
        let mut n = 0;
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            n += 1;
            assert!(
                page.contains(&format!("| `{name}` |")),
                "docs/operations.md does not list `{name}`"
            );
        }
        assert_eq!(n, 21, "every metric is exported here");
    }

    #[test]
    fn state_gauges_write_zeros_too() {
        let m = Metrics::new();
        m.set_state(&State {
            containers: 3,
            instances: 2,
            by_health: [1, 0, 1],
            skipped: vec![("paused", 1), ("not_running", 0)],
            parked: 0,
            ready: true,
        });
        let text = m.encode().unwrap();
        assert_eq!(sample(&text, "berth_containers"), Some(3.0));
        assert_eq!(sample(&text, "berth_instances_owned"), Some(2.0));
        assert_eq!(
            sample(&text, r#"berth_instances{health="warning"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, r#"berth_containers_skipped{reason="not_running"}"#),
            Some(0.0)
        );
        assert_eq!(sample(&text, "berth_ready"), Some(1.0));
    }
}
