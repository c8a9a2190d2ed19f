//! A burst: N containers started at once, then stopped at once. Docker takes seconds to
//! start them on two cores, so the figure is the time from the *last* event to the moment
//! the registry is exact (every container registered once, nothing else; then nothing), plus
//! instances lost (never registered) and duplicated (more instances than containers).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use berth_e2e::backend::Kind;
use serde_json::json;

use super::{Outcome, web};
use crate::Ctx;
use crate::registry::Registry;
use crate::report::Rows;
use crate::stats::{fmt_ms, ms_between};

pub async fn run(ctx: &Ctx, kind: Kind) -> Outcome {
    let n = ctx.sizes.burst;
    let registry = Registry::start(kind).await?;
    let service = "bench-burst";
    let timeline = registry.watch(service).await?;
    let agent = ctx.ready_agent(&registry, &[]).await?;

    let names: Vec<String> = (0..n).map(|i| ctx.name("burst", i)).collect();
    let specs: Vec<_> = names.iter().map(|n| web(n.clone(), service)).collect();
    let ids = ctx.fleet.create_all(&specs, 16).await?;
    let expected: BTreeSet<String> = names.iter().map(|n| ctx.instance_id(n, 80)).collect();

    // Start: every request in flight at once.
    ctx.fleet
        .each(&ids, usize::MAX, |f, id| f.start(id))
        .await?;
    let exact = timeline
        .wait(
            "every container registered",
            Duration::from_secs(120),
            |c| c.len() == expected.len() && c.keys().all(|id| expected.contains(id)),
        )
        .await;
    let seen: BTreeSet<String> = timeline.current().into_keys().collect();
    let lost = expected.difference(&seen).count();
    let extra = seen.difference(&expected).count();
    let mut starts = Vec::new();
    for id in &ids {
        starts.push(ctx.events.time_of(id, "start").await?);
    }
    let (first_start, last_start) = span(&starts);

    // Stop: every request in flight at once.
    ctx.fleet
        .each(&ids, usize::MAX, |f, id| f.stop(id, Some(10)))
        .await?;
    let empty = timeline
        .wait("every instance gone", Duration::from_secs(120), |c| {
            c.is_empty()
        })
        .await;
    let left = timeline.current().len();
    let mut dies = Vec::new();
    for id in &ids {
        dies.push(ctx.events.time_of(id, "die").await?);
    }
    let (first_die, last_die) = span(&dies);
    agent.stop().await?;

    let mut rows = Rows::new("burst", kind.to_string());
    rows.info(
        format!("docker: first → last start event ({n} containers)"),
        fmt_ms(ms_between(first_start, last_start)),
    );
    let exact_ms = exact.as_ref().ok().map(|t| ms_between(last_start, *t));
    rows.check(
        "last start event → registry exact",
        exact_ms.map_or_else(|| "never (120 s)".into(), fmt_ms),
        "≤ 1 s",
        exact_ms.is_some_and(|v| v <= 1000.0),
    );
    rows.check("lost", lost.to_string(), "0", lost == 0);
    rows.check("duplicated", extra.to_string(), "0", extra == 0);
    rows.info(
        "docker: first → last die event",
        fmt_ms(ms_between(first_die, last_die)),
    );
    let empty_ms = empty.as_ref().ok().map(|t| ms_between(last_die, *t));
    rows.check(
        "last die event → registry empty",
        empty_ms.map_or_else(|| "never (120 s)".into(), fmt_ms),
        "≤ 1 s",
        empty_ms.is_some_and(|v| v <= 1000.0),
    );
    rows.check("left over after stop", left.to_string(), "0", left == 0);
    let data = json!({
        "containers": n,
        "start_span_ms": ms_between(first_start, last_start),
        "exact_after_last_start_ms": exact_ms,
        "lost": lost,
        "duplicated": extra,
        "die_span_ms": ms_between(first_die, last_die),
        "empty_after_last_die_ms": empty_ms,
        "left_over": left,
    });
    Ok((rows, data))
}

/// The earliest and latest of `times`.
fn span(times: &[SystemTime]) -> (SystemTime, SystemTime) {
    let first = times
        .iter()
        .min()
        .copied()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let last = times
        .iter()
        .max()
        .copied()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    (first, last)
}
