//! Scheduling, jitter, thresholds and the prober's bookkeeping, on paused tokio time with a
//! scripted probe (no network).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_registry::{Health, Status};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::labels::{ProbeKind, Target};

/// Per target port: what the probe answers, and how long it takes (`None`: never answers).
#[derive(Default)]
struct Script {
    answers: Mutex<HashMap<u16, (Status, Option<Duration>)>>,
    /// Start instant of every probe, with its port.
    starts: Mutex<Vec<(Instant, u16)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Script>);

impl Scripted {
    fn answer(&self, port: u16, status: Status, takes: Option<Duration>) {
        self.0.answers.lock().unwrap().insert(port, (status, takes));
    }

    fn starts(&self, port: u16) -> Vec<Instant> {
        let starts = self.0.starts.lock().unwrap();
        starts
            .iter()
            .filter(|(_, p)| *p == port)
            .map(|(at, _)| *at)
            .collect()
    }
}

impl Probe for Scripted {
    async fn probe(&self, spec: &CheckSpec) -> Health {
        let ProbeKind::Tcp(target) = &spec.kind else {
            panic!("scripted probes are tcp")
        };
        let port = target.port;
        self.0.starts.lock().unwrap().push((Instant::now(), port));
        let (status, takes) = self
            .0
            .answers
            .lock()
            .unwrap()
            .get(&port)
            .copied()
            .unwrap_or((Status::Passing, Some(Duration::from_millis(10))));
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_in_flight.fetch_max(now, Ordering::SeqCst);
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _done = Done(&self.0.in_flight);
        match takes {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
        // Every answer differs (as real timings do): only status changes may matter.
        let n = self.0.starts.lock().unwrap().len();
        Health {
            status,
            output: format!("port {port}: {status} (probe {n})"),
        }
    }
}

fn spec(port: u16, interval: u64, rise: u32, fall: u32) -> CheckSpec {
    CheckSpec {
        name: "tcp".into(),
        kind: ProbeKind::Tcp(Target {
            host: "10.0.0.1".into(),
            port,
        }),
        interval: Duration::from_secs(interval),
        timeout: Duration::from_secs(1),
        rise,
        fall,
        initial: Status::Critical,
    }
}

fn outcome(id: &str, checks: Vec<CheckSpec>) -> Outcome {
    Outcome {
        probes: BTreeMap::from([(
            id.to_owned(),
            Probes {
                checks,
                deregister_after: None,
            },
        )]),
        ..Outcome::default()
    }
}

struct Harness {
    prober: Arc<Prober<Scripted>>,
    script: Scripted,
    triggers: mpsc::Receiver<String>,
    tracker: TaskTracker,
    heal: mpsc::Receiver<heal::Request>,
    cancel: CancellationToken,
}

fn harness(concurrency: usize) -> Harness {
    let script = Scripted::default();
    let (tx, triggers) = mpsc::channel(4096);
    let (heal_tx, heal) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let prober = Prober::new(
        script.clone(),
        Options {
            concurrency,
            autoheal_failures: 3,
        },
        Outlets {
            recheck: tx,
            heal: heal_tx,
            observe: Arc::new(crate::observe::Observer::new(Duration::from_secs(15))),
        },
        tracker.clone(),
        cancel.clone(),
    );
    Harness {
        prober,
        script,
        triggers,
        tracker,
        heal,
        cancel,
    }
}

fn drain(rx: &mut mpsc::Receiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(t) = rx.try_recv() {
        out.push(t);
    }
    out
}

#[test]
fn first_delays_spread_over_one_interval() {
    let mut rng = StdRng::seed_from_u64(7);
    let interval = Duration::from_secs(10);
    let mut buckets = [0usize; 100];
    for _ in 0..1000 {
        let d = first_delay(interval, &mut rng);
        assert!(d < interval, "{d:?}");
        buckets[(d.as_millis() / 100) as usize] += 1;
    }
    // 10 per 100 ms bucket on average; all at once would put 1000 in one.
    let max = buckets.iter().max().copied().unwrap_or_default();
    assert!(max <= 25, "{max} first probes in one 100 ms slot");
    assert!(buckets.iter().filter(|n| **n == 0).count() < 5);
}

#[test]
fn next_delay_jitters_ten_percent_either_way() {
    let mut rng = StdRng::seed_from_u64(11);
    let interval = Duration::from_secs(10);
    let delays: Vec<Duration> = (0..1000).map(|_| next_delay(interval, &mut rng)).collect();
    let (min, max) = (
        delays.iter().min().copied().unwrap(),
        delays.iter().max().copied().unwrap(),
    );
    assert!(min >= Duration::from_secs(9) && max <= Duration::from_secs(11));
    assert!(min < Duration::from_millis(9_200) && max > Duration::from_millis(10_800));
}

fn result(status: Status) -> Health {
    Health {
        status,
        output: status.to_string(),
    }
}

#[test]
fn thresholds_damp_flapping() {
    let mut t = Thresholds::new(3, 2);
    assert_eq!(t.status(), None, "no result yet");
    t.record(result(Status::Passing));
    assert_eq!(
        t.status(),
        Some(Status::Passing),
        "the first result counts at once"
    );
    t.record(result(Status::Critical));
    assert_eq!(
        t.status(),
        Some(Status::Passing),
        "one failure is below fall=2"
    );
    t.record(result(Status::Passing));
    t.record(result(Status::Critical));
    assert_eq!(
        t.status(),
        Some(Status::Passing),
        "failures must be consecutive"
    );
    t.record(result(Status::Critical));
    assert_eq!(t.status(), Some(Status::Critical), "two in a row");
    assert_eq!(t.failures(), 2);
    t.record(result(Status::Passing));
    t.record(result(Status::Passing));
    assert_eq!(
        t.status(),
        Some(Status::Critical),
        "two passes are below rise=3"
    );
    t.record(result(Status::Passing));
    assert_eq!(t.status(), Some(Status::Passing));
    t.record(result(Status::Warning));
    assert_eq!(t.status(), Some(Status::Warning), "a 429 warns at once");
    assert_eq!(t.failures(), 0, "and is not a failure");
}

#[test]
fn a_first_failure_is_critical_at_once() {
    let mut t = Thresholds::new(1, 5);
    t.record(result(Status::Critical));
    assert_eq!(t.status(), Some(Status::Critical));
}

/// 1,000 checks created in one burst (an agent start) spread their first probes over the
/// interval, never exceed the concurrency bound, and then keep probing once per interval.
#[tokio::test(start_paused = true)]
async fn a_thousand_checks_never_fire_together() {
    let mut h = harness(8);
    let t0 = Instant::now();
    for i in 0..1000u16 {
        let port = 1000 + i;
        let o = outcome(&format!("i{i}"), vec![spec(port, 10, 1, 1)]);
        let v = h.prober.sync(&format!("c{i}"), "ctr", &o);
        assert_eq!(
            v[&format!("i{i}")].health.status,
            Status::Critical,
            "initial"
        );
    }
    assert_eq!(h.prober.check_count(), 1000);
    tokio::time::sleep(Duration::from_secs(11)).await;

    let starts = h.script.0.starts.lock().unwrap().clone();
    let mut first: HashMap<u16, Instant> = HashMap::new();
    for (at, port) in &starts {
        first.entry(*port).or_insert(*at);
    }
    assert_eq!(
        first.len(),
        1000,
        "every check probed within its first interval"
    );
    let mut buckets = [0usize; 110];
    for at in first.values() {
        let ms = at.duration_since(t0).as_millis() as usize;
        assert!(ms < 10_100, "a first probe {ms} ms after creation");
        buckets[(ms / 100).min(109)] += 1;
    }
    let max = buckets.iter().max().copied().unwrap_or_default();
    assert!(
        max <= 30,
        "{max} first probes started within one 100 ms slot"
    );
    let bound = h.script.0.max_in_flight.load(Ordering::SeqCst);
    assert!(bound <= 8, "{bound} probes in flight, the bound is 8");
    assert!(
        bound >= 2,
        "probes ran one at a time ({bound}): the bound is not exercised"
    );

    // Every check's first result changes its verdict (no result → passing): one trigger
    // each; later passing results change nothing and send nothing.
    let triggers = drain(&mut h.triggers);
    assert_eq!(triggers.len(), 1000);

    // The next probes are one interval ± 10 % later.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let port = 1000;
    let at = h.script.starts(port);
    assert!(at.len() >= 2, "{at:?}");
    let gap = at[1].duration_since(at[0]);
    assert!(
        gap >= Duration::from_secs(9) && gap <= Duration::from_millis(11_100),
        "{gap:?}"
    );
    // Passing results that do not change the verdict send nothing.
    assert!(drain(&mut h.triggers).is_empty());
    h.cancel.cancel();
}

/// A target that never answers is cut off by the timeout and reported critical; it holds
/// no permit beyond its timeout, so with one permit the other check still runs.
#[tokio::test(start_paused = true)]
async fn a_hung_target_cannot_stall_other_probes() {
    let mut h = harness(1);
    h.script.answer(1, Status::Passing, None);
    h.prober
        .sync("c1", "hung", &outcome("hung", vec![spec(1, 2, 1, 1)]));
    h.prober
        .sync("c2", "fine", &outcome("fine", vec![spec(2, 2, 1, 1)]));
    tokio::time::sleep(Duration::from_secs(20)).await;

    // Worst case for the healthy check: first probe by 2 s, then every 2.2 s (interval +
    // 10 %) plus up to 1 s waiting for the permit the hung probe holds until its timeout:
    // at least 6 probes. A hung probe that kept its permit would allow at most one.
    let fine = h.script.starts(2).len();
    assert!(fine >= 6, "the healthy check probed {fine} times in 20 s");
    let v = h
        .prober
        .sync("c1", "hung", &outcome("hung", vec![spec(1, 2, 1, 1)]));
    let hung = &v["hung"].health;
    assert_eq!(hung.status, Status::Critical);
    assert!(
        hung.output.contains("timed out after 1s"),
        "{}",
        hung.output
    );
    assert!(!drain(&mut h.triggers).is_empty());
    h.cancel.cancel();
}

/// Rise and fall through the prober: a status change triggers one reconcile, at the probe
/// that crosses the threshold, and the verdict the reconciler reads follows.
#[tokio::test(start_paused = true)]
async fn thresholds_decide_when_the_verdict_changes() {
    let mut h = harness(4);
    let o = outcome("web", vec![spec(80, 1, 2, 3)]);
    h.prober.sync("c", "web", &o);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(drain(&mut h.triggers), vec!["c".to_owned()]);
    assert_eq!(
        h.prober.sync("c", "web", &o)["web"].health.status,
        Status::Passing
    );

    // Later passing results, each with another output, leave the verdict as it was: a
    // reconcile finds nothing to write.
    let first = h.prober.sync("c", "web", &o)["web"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.prober.sync("c", "web", &o)["web"], first);
    assert!(drain(&mut h.triggers).is_empty());

    h.script
        .answer(80, Status::Critical, Some(Duration::from_millis(10)));
    // Three probes take at least 1.8 s (interval - 10 %, twice): within 1.7 s at most two
    // failures, below fall=3: still passing, nothing sent.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(drain(&mut h.triggers).is_empty());
    assert_eq!(
        h.prober.sync("c", "web", &o)["web"].health.status,
        Status::Passing
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(drain(&mut h.triggers), vec!["c".to_owned()]);
    let v = h.prober.sync("c", "web", &o);
    assert_eq!(v["web"].health.status, Status::Critical);
    assert!(v["web"].health.output.contains("port 80: critical"));

    h.script
        .answer(80, Status::Passing, Some(Duration::from_millis(10)));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(drain(&mut h.triggers), vec!["c".to_owned()]);
    assert_eq!(
        h.prober.sync("c", "web", &o)["web"].health.status,
        Status::Passing
    );

    // An empty outcome stops the checks.
    h.prober.sync("c", "web", &Outcome::default());
    assert_eq!(h.prober.check_count(), 0);
    let before = h.script.starts(80).len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.script.starts(80).len(), before);
    h.cancel.cancel();
}

/// Critical past `deregister_after`: withdrawn (with a trigger), and back once it passes.
#[tokio::test(start_paused = true)]
async fn deregister_after_withdraws_until_the_check_passes() {
    let mut h = harness(4);
    h.script
        .answer(80, Status::Critical, Some(Duration::from_millis(10)));
    let mut o = outcome("web", vec![spec(80, 1, 1, 1)]);
    if let Some(p) = o.probes.get_mut("web") {
        p.deregister_after = Some(Duration::from_secs(5));
    }
    assert!(h.prober.sync("c", "web", &o)["web"].provisional);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = h.prober.sync("c", "web", &o);
    assert!(!v["web"].withdrawn);
    assert!(!v["web"].provisional, "a critical result is a result");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.prober.sync("c", "web", &o)["web"].withdrawn);
    drain(&mut h.triggers);
    h.script
        .answer(80, Status::Passing, Some(Duration::from_millis(10)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!drain(&mut h.triggers).is_empty());
    let v = h.prober.sync("c", "web", &o);
    assert!(!v["web"].withdrawn);
    assert_eq!(v["web"].health.status, Status::Passing);
    h.cancel.cancel();
}

/// A container recreated under the same name takes over its predecessor's instance id: the
/// checks start afresh for the new container, and the old container's later reconcile (it is
/// gone) does not stop them.
#[tokio::test(start_paused = true)]
async fn an_instance_id_taken_over_by_a_new_container_starts_afresh() {
    let mut h = harness(4);
    let o = outcome("web", vec![spec(80, 1, 1, 1)]);
    h.prober.sync("old", "web", &o);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(drain(&mut h.triggers), vec!["old".to_owned()]);

    let v = h.prober.sync("new", "web", &o);
    assert_eq!(v["web"].health.status, Status::Critical, "no result yet");
    assert!(v["web"].health.output.contains("no result yet"));
    assert!(v["web"].provisional, "the initial status, not a result");
    h.prober.sync("old", "web", &Outcome::default());
    h.prober.forget("old");
    assert_eq!(h.prober.check_count(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(drain(&mut h.triggers), vec!["new".to_owned()]);
    let v = h.prober.sync("new", "web", &o);
    assert_eq!(v["web"].health.status, Status::Passing);
    assert!(!v["web"].provisional);
    h.cancel.cancel();
}

/// Waits (on paused time) for the next self-healing request; returns it and how many probes
/// had started by then.
async fn next_heal(h: &mut Harness) -> (heal::Request, usize) {
    for _ in 0..200 {
        if let Ok(req) = h.heal.try_recv() {
            return (req, h.script.starts(80).len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no self-healing request within 10 s");
}

/// An autoheal container is handed to self-healing after `autoheal_failures` (3) failed
/// probes in a row; a restart starts the count again and shows on the verdict.
#[tokio::test(start_paused = true)]
async fn autoheal_asks_after_n_failures_and_a_restart_starts_the_count_again() {
    let mut h = harness(4);
    h.script
        .answer(80, Status::Critical, Some(Duration::from_millis(10)));
    let mut o = outcome("web", vec![spec(80, 1, 1, 1)]);
    o.autoheal = true;
    h.prober.sync("c", "ctr", &o);
    let (req, probes) = next_heal(&mut h).await;
    assert_eq!(probes, 3);
    assert_eq!((req.container.as_str(), req.name.as_str()), ("c", "ctr"));
    assert!(
        req.reason
            .starts_with("check tcp failed 3 times in a row: port 80: critical"),
        "{}",
        req.reason
    );

    h.prober
        .restarted("c", "autoheal: restarted by berth".into());
    assert_eq!(
        h.prober.check_count(),
        0,
        "the restart stops the old checks"
    );
    while h.heal.try_recv().is_ok() {}
    let v = h.prober.sync("c", "ctr", &o);
    assert!(
        v["web"]
            .health
            .output
            .ends_with("\nautoheal: restarted by berth"),
        "{}",
        v["web"].health.output
    );
    let (_, probes) = next_heal(&mut h).await;
    assert_eq!(probes, 6, "three fresh failures after the restart");

    // Without the label nothing is asked.
    o.autoheal = false;
    h.prober.sync("c", "ctr", &o);
    while h.heal.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.heal.try_recv().is_err());
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn check_tasks_run_on_the_tracker_and_the_drain_waits_for_them() {
    let h = harness(8);
    h.prober.sync(
        "c",
        "c",
        &outcome("i", vec![spec(1, 10, 1, 1), spec(2, 10, 1, 1)]),
    );
    assert_eq!(h.tracker.len(), 2, "one task per check, on the tracker");
    h.tracker.close();
    h.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), h.tracker.wait())
        .await
        .expect("check tasks end on cancel and the drain sees them end");
    assert_eq!(h.tracker.len(), 0);
}
