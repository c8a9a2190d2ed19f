//! Probe cost and footprint.
//!
//! The probe targets are HTTP listeners in this process on 127.0.0.1, one per port, which
//! stamp every request they answer: that gives the interval between probes of one check as
//! the target sees it. Host-network containers expose those ports (100 per container) and
//! label an HTTP check every 10 s, so berth, which probes a host-network container at its
//! registered address (`--host-ip 127.0.0.1`), probes the listeners.
//!
//! `probes`: over a window (2 minutes), the agent's CPU time as a share of one core, its
//! resident memory, the probe rate and the intervals. `footprint`: resident memory idle,
//! then with N published containers plus the probe targets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::{Outcome, web};
use crate::Ctx;
use crate::agent::AgentProc;
use crate::docker::Spec;
use crate::registry::Registry;
use crate::report::Rows;
use crate::stats::{Summary, ms};
use berth_e2e::backend::Kind;

/// The check interval the containers ask for.
const INTERVAL: Duration = Duration::from_secs(10);
/// Ports (checks) per container.
const PER_CONTAINER: usize = 100;

/// Probe targets: listeners that answer `200 ok` and stamp each request.
struct Targets {
    ports: Vec<u16>,
    hits: Arc<Mutex<HashMap<u16, Vec<SystemTime>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Targets {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Targets {
    async fn listen(n: usize) -> Result<Targets> {
        let hits: Arc<Mutex<HashMap<u16, Vec<SystemTime>>>> = Arc::default();
        let (mut ports, mut tasks) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            ports.push(port);
            let hits = hits.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, port, hits.clone()));
                }
            }));
        }
        Ok(Targets { ports, hits, tasks })
    }

    /// The requests that arrived within `[from, to]`, and for each of them the interval
    /// (ms) since the request before it to the same port (which may be before `from`: only
    /// intervals that fit inside the window would favour the short ones).
    fn intervals(&self, from: SystemTime, to: SystemTime) -> (Vec<f64>, usize) {
        let hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        let (mut intervals, mut count) = (Vec::new(), 0);
        for times in hits.values() {
            let inside = |t: &SystemTime| *t >= from && *t <= to;
            count += times.iter().filter(|t| inside(t)).count();
            intervals.extend(
                times
                    .windows(2)
                    .filter(|w| inside(&w[1]))
                    .map(|w| crate::stats::ms_between(w[0], w[1])),
            );
        }
        (intervals, count)
    }
}

/// Answers every request on one connection with `200 ok`, stamping each.
async fn answer(mut stream: TcpStream, port: u16, hits: Arc<Mutex<HashMap<u16, Vec<SystemTime>>>>) {
    let mut buf = [0u8; 2048];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            hits.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(port)
                .or_default()
                .push(SystemTime::now());
            let reply =
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
    }
}

/// The floor of probing: the same HTTP GETs, each on a new connection, at the same rate,
/// from a minimal HTTP/1.1 client on a thread of its own (a current-thread runtime), for
/// `window`; its CPU time (user + system, from `/proc/thread-self/stat`) as % of one core.
/// Its requests reach the same listeners, which tell them apart by nothing: the caller runs
/// it before the agent probes them.
fn floor_cpu(ports: Vec<u16>, window: Duration) -> anyhow::Result<f64> {
    std::thread::spawn(move || -> anyhow::Result<f64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let ticks = || -> anyhow::Result<u64> {
                let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
                let f: Vec<&str> = rest.split_whitespace().collect();
                let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                Ok(n(11) + n(12))
            };
            let every = INTERVAL.as_secs_f64() / ports.len() as f64;
            let (t0, c0) = (tokio::time::Instant::now(), ticks()?);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(every));
            let mut i = 0;
            while t0.elapsed() < window {
                tick.tick().await;
                let port = ports[i % ports.len()];
                i += 1;
                let _ = tokio::time::timeout(Duration::from_secs(2), get(port)).await;
            }
            let cpu_s = (ticks()? - c0) as f64 / 100.0;
            Ok(100.0 * cpu_s / t0.elapsed().as_secs_f64())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the floor prober panicked"))?
}

/// `GET /` on a new connection; true on a 2xx status line.
async fn get(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf).await, Ok(n) if n >= 12 && buf[9] == b'2')
}

/// Host-network containers exposing the targets' ports, each with an HTTP check.
async fn probe_containers(ctx: &Ctx, targets: &Targets) -> Result<Vec<String>> {
    let specs: Vec<Spec> = targets
        .ports
        .chunks(PER_CONTAINER)
        .enumerate()
        .map(|(i, ports)| Spec {
            name: ctx.name("probe", i),
            labels: vec![
                ("berth.name".into(), format!("bench-probe-{i}")),
                ("berth.check.http".into(), "/".into()),
                (
                    "berth.check.interval".into(),
                    format!("{}s", INTERVAL.as_secs()),
                ),
            ],
            expose: ports.to_vec(),
            host_network: true,
            ..Spec::default()
        })
        .collect();
    let ids = ctx.fleet.create_all(&specs, 8).await?;
    ctx.fleet.each(&ids, 8, |f, id| f.start(id)).await?;
    Ok(ids)
}

/// Waits until the agent reports `n` instances passing.
async fn passing(agent: &AgentProc, n: usize, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let now = agent
            .metric_sum("berth_instances", "health=\"passing\"")
            .await?;
        if now >= n as f64 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{now} of {n} instances passing after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// RSS samples (KiB), one a second for `window`.
async fn rss_over(agent: &AgentProc, window: Duration) -> Result<Vec<u64>> {
    let mut samples = vec![agent.rss_kib()?];
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(agent.rss_kib()?);
    }
    Ok(samples)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub async fn run(ctx: &Ctx, kind: Kind) -> Outcome {
    let n = ctx.sizes.probe_targets;
    let registry = Registry::start(kind).await?;
    let targets = Targets::listen(n).await?;
    let floor_window = ctx.sizes.probe_window.min(Duration::from_secs(60));
    let ports = targets.ports.clone();
    let floor = tokio::task::spawn_blocking(move || floor_cpu(ports, floor_window)).await??;
    targets
        .hits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let agent = ctx.ready_agent(&registry, &[]).await?;
    probe_containers(ctx, &targets).await?;
    passing(&agent, n, Duration::from_secs(120)).await?;
    // Every check has started within its first interval; one more settles the schedule.
    tokio::time::sleep(INTERVAL * 2).await;

    let window = ctx.sizes.probe_window;
    let (t0, cpu0) = (SystemTime::now(), agent.cpu_ticks()?);
    let clock = tokio::time::Instant::now();
    let rss = rss_over(&agent, window).await?;
    let (t1, cpu1) = (SystemTime::now(), agent.cpu_ticks()?);
    let elapsed = clock.elapsed();
    agent.stop().await?;

    // Clock ticks are 10 ms (USER_HZ 100).
    let cpu_s = (cpu1 - cpu0) as f64 / 100.0;
    let cpu_pct = 100.0 * cpu_s / elapsed.as_secs_f64();
    let (intervals, count) = targets.intervals(t0, t1);
    let iv = Summary::of(&intervals);
    let rate = count as f64 / elapsed.as_secs_f64();
    let expected = n as f64 / INTERVAL.as_secs_f64();
    let rss_max = rss.iter().copied().max().unwrap_or(0);

    let mut rows = Rows::new("probes", kind.to_string());
    rows.info(
        "setup",
        format!("{n} HTTP checks every {INTERVAL:?}, window {window:?}"),
    );
    rows.info(
        "floor: the same GETs from a minimal client, % of one core",
        format!("{floor:.2} %"),
    );
    rows.check(
        "agent CPU, % of one core",
        format!("{cpu_pct:.2} %"),
        "≤ 2 %",
        cpu_pct <= 2.0,
    );
    rows.info("agent RSS, max over the window", mib(rss_max));
    rows.info(
        "probes per second (expected)",
        format!("{rate:.1} ({expected:.1})"),
    );
    rows.info(
        "interval between probes of one check, p50 (p1–p99 ±10 % jitter by design)",
        format!(
            "{:.2} s ({:.2}–{:.2} s)",
            iv.p50 / 1000.0,
            percentile(&intervals, 1.0) / 1000.0,
            iv.p99 / 1000.0
        ),
    );
    let drift = iv.mean - ms(INTERVAL);
    rows.info("mean interval − 10 s (drift)", format!("{drift:+.0} ms"));
    let data = json!({
        "targets": n,
        "interval_s": INTERVAL.as_secs(),
        "window_s": elapsed.as_secs_f64(),
        "cpu_seconds": cpu_s,
        "cpu_percent_of_one_core": cpu_pct,
        "floor_cpu_percent_of_one_core": floor,
        "rss_kib": rss,
        "probes_in_window": count,
        "probes_per_second": rate,
        "interval_ms": iv,
        "mean_drift_ms": drift,
    });
    Ok((rows, data))
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[i.clamp(1, s.len()) - 1]
}

pub async fn footprint(ctx: &Ctx, kind: Kind) -> Outcome {
    let registry = Registry::start(kind).await?;
    let agent = ctx.ready_agent(&registry, &[]).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_over(&agent, Duration::from_secs(5)).await?;
    let idle_max = idle.iter().copied().max().unwrap_or(0);

    let containers = ctx.sizes.footprint_containers;
    let probes = ctx.sizes.probe_targets;
    let targets = Targets::listen(probes).await?;
    let specs: Vec<Spec> = (0..containers)
        .map(|i| web(ctx.name("fp", i), "bench-fp"))
        .collect();
    let ids = ctx.fleet.create_all(&specs, 16).await?;
    ctx.fleet.each(&ids, 8, |f, id| f.start(id)).await?;
    probe_containers(ctx, &targets).await?;
    passing(&agent, containers + probes, Duration::from_secs(180)).await?;
    tokio::time::sleep(INTERVAL * 2).await;
    let loaded = rss_over(&agent, Duration::from_secs(20)).await?;
    let loaded_max = loaded.iter().copied().max().unwrap_or(0);
    agent.stop().await?;

    let mut rows = Rows::new("footprint", kind.to_string());
    rows.check(
        "RSS idle (no container to register)",
        mib(idle_max),
        "≤ 10 MiB",
        idle_max <= 10 * 1024,
    );
    rows.check(
        format!("RSS with {containers} containers and {probes} probes"),
        mib(loaded_max),
        "≤ 32 MiB",
        loaded_max <= 32 * 1024,
    );
    let data = json!({
        "idle_rss_kib": idle,
        "loaded_rss_kib": loaded,
        "containers": containers,
        "probes": probes,
    });
    drop(targets);
    Ok((rows, data))
}
