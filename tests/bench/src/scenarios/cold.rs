//! Cold sync: N containers already running, an empty registry, and berth started; the time
//! from the process start to the last instance visible. The floor is the same N writes made
//! directly (16 at a time) to an empty registry. Then a warm restart: berth stopped
//! (registrations stay) and started again; the time to ready and the writes it made.

use std::time::Duration;

use berth_e2e::backend::Kind;
use serde_json::json;

use super::{Outcome, web};
use crate::Ctx;
use crate::registry::Registry;
use crate::report::Rows;
use crate::stats::{fmt_ms, ms_between};

pub async fn run(ctx: &Ctx, kind: Kind) -> Outcome {
    let n = ctx.sizes.cold;
    let registry = Registry::start(kind).await?;
    let service = "bench-cold";
    let timeline = registry.watch(service).await?;
    let names: Vec<String> = (0..n).map(|i| ctx.name("cold", i)).collect();
    let specs: Vec<_> = names.iter().map(|n| web(n.clone(), service)).collect();
    let ids = ctx.fleet.create_all(&specs, 16).await?;
    ctx.fleet.each(&ids, 8, |f, id| f.start(id)).await?;

    let floor_ms = floor(&registry, n).await?;

    let (mut agent, started) = ctx.agent(&registry, &[])?;
    let all = timeline
        .wait(
            "every container registered",
            Duration::from_secs(120),
            |c| c.len() >= n,
        )
        .await?;
    let cold_ms = ms_between(started, all);
    let ready = agent.ready(Duration::from_secs(60)).await?;
    let ready_ms = ms_between(started, ready);
    let cold_writes = content_writes(&agent).await?;
    let rss_kib = agent.rss_kib()?;
    agent.stop().await?;

    // Warm restart: everything is registered already.
    let (mut agent, started) = ctx.agent(&registry, &[])?;
    let ready = agent.ready(Duration::from_secs(60)).await?;
    let warm_ms = ms_between(started, ready);
    let warm_writes = content_writes(&agent).await?;
    agent.stop().await?;

    let mut rows = Rows::new("cold", kind.to_string());
    rows.info(format!("floor: {n} writes → visible"), fmt_ms(floor_ms));
    rows.check(
        format!("process start → {n} registered"),
        fmt_ms(cold_ms),
        "≤ 300 ms",
        cold_ms <= 300.0,
    );
    rows.info("cold sync ÷ floor", format!("{:.2}×", cold_ms / floor_ms));
    rows.info("process start → ready", fmt_ms(ready_ms));
    rows.info(
        "registry writes in the cold sync (heartbeats aside)",
        format!("{}", cold_writes + 0.0),
    );
    rows.info(
        "RSS after the cold sync",
        format!("{:.1} MiB", rss_kib as f64 / 1024.0),
    );
    rows.info("warm restart: process start → ready", fmt_ms(warm_ms));
    let (target, met) = match kind {
        // etcd: the new process's lease replaces the old one's, so every key is rewritten.
        Kind::Etcd => (format!("{n} (new lease)"), warm_writes <= n as f64),
        Kind::Consul => ("0".to_owned(), warm_writes == 0.0),
    };
    rows.check(
        "warm restart: registry writes (heartbeats aside)",
        format!("{}", warm_writes + 0.0),
        target,
        met,
    );
    let data = json!({
        "containers": n,
        "floor_ms": floor_ms,
        "cold_ms": cold_ms,
        "ready_ms": ready_ms,
        "cold_writes": cold_writes,
        "rss_kib": rss_kib,
        "warm_ready_ms": warm_ms,
        "warm_writes": warm_writes,
    });
    Ok((rows, data))
}

/// Registers, deregistrations and health writes the agent made (its heartbeats, which only
/// keep a TTL alive, aside).
async fn content_writes(agent: &crate::agent::AgentProc) -> anyhow::Result<f64> {
    let text = agent.metrics().await?;
    Ok(["register", "deregister", "health"]
        .iter()
        .map(|op| {
            crate::agent::sum_series(
                &text,
                "berth_registry_writes_total",
                &format!("op=\"{op}\""),
            )
        })
        .sum())
}

/// `n` instances written directly, 16 at a time, until all are visible; then removed.
async fn floor(registry: &Registry, n: usize) -> anyhow::Result<f64> {
    use futures::{StreamExt, TryStreamExt};
    let service = "bench-cold-floor";
    let timeline = registry.watch(service).await?;
    let ids: Vec<String> = (0..n).map(|i| format!("cold-floor-{i}")).collect();
    let t0 = std::time::SystemTime::now();
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| registry.write(service, id, 2000 + i as u16))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let all = timeline
        .wait("every floor write visible", Duration::from_secs(120), |c| {
            c.len() >= n
        })
        .await?;
    futures::stream::iter(&ids)
        .map(|id| registry.delete(service, id))
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    timeline
        .wait("floor writes removed", Duration::from_secs(120), |c| {
            c.is_empty()
        })
        .await?;
    Ok(ms_between(t0, all))
}
