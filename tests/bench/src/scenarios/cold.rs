//! Cold sync: N containers already running, an empty registry, and berth started; the time
//! from the process start to the last instance visible. The floor is the same work done
//! directly by one client: Docker's list, then an inspect and a write per container, 16 at a
//! time, to an empty registry. Then a warm restart: berth stopped
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

    let floor_ms = floor(ctx, &registry, n, true).await?;
    let bare_ms = match kind {
        Kind::Consul => Some(floor(ctx, &registry, n, false).await?),
        Kind::Etcd => None,
    };

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
    rows.info(
        format!("floor: Docker's list, then {n} inspects and writes (16 at a time) → visible"),
        fmt_ms(floor_ms),
    );
    if let Some(bare) = bare_ms {
        rows.info(
            "floor without the health output write (Consul takes none at registration)",
            fmt_ms(bare),
        );
    }
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
        // etcd: the new process takes the old one's lease over, so nothing is rewritten.
        Kind::Etcd => ("0 (lease taken over)".to_owned(), warm_writes == 0.0),
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
        "floor_without_output_ms": bare_ms,
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

/// The cold sync's work done directly, as one client would: Docker's list, then for each of
/// the `n` containers an inspect and a write, 16 at a time, until all are visible; then the
/// writes are removed.
async fn floor(ctx: &Ctx, registry: &Registry, n: usize, with_output: bool) -> anyhow::Result<f64> {
    use futures::{StreamExt, TryStreamExt};
    let service = "bench-cold-floor";
    let timeline = registry.watch(service).await?;
    let ids: Vec<String> = (0..n).map(|i| format!("cold-floor-{i}")).collect();
    let docker = &ctx.fleet.docker;
    let t0 = std::time::SystemTime::now();
    let listed = docker
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await?;
    let containers: Vec<String> = listed.into_iter().filter_map(|c| c.id).collect();
    let containers = &containers;
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| async move {
            if let Some(c) = containers.get(i) {
                docker.inspect_container(c, None).await?;
            }
            let port = 2000 + i as u16;
            if with_output {
                registry.write_with_output(service, id, port).await
            } else {
                registry.write(service, id, port).await
            }
        })
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
