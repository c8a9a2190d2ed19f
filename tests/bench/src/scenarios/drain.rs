//! Drain: containers that take a second to exit after SIGTERM (as a server finishing its
//! requests does) are stopped one at a time; the time from Docker's `kill` event (the stop
//! signal) until the instance leaves `?passing` (critical, or gone), and how long before
//! the process exited that was.

use std::time::{Duration, UNIX_EPOCH};

use berth_e2e::backend::Kind;
use serde_json::json;

use super::{Outcome, web};
use crate::Ctx;
use crate::docker::slow_stopper;
use crate::registry::{Registry, Seen};
use crate::report::Rows;
use crate::stats::{Summary, fmt_ms, ms_between};

/// The containers' stop timeout; they exit a second after the signal, well within it.
const STOP_TIMEOUT_S: i64 = 5;

pub async fn run(ctx: &Ctx, kind: Kind) -> Outcome {
    let registry = Registry::start(kind).await?;
    let service = "bench-drain";
    let timeline = registry.watch(service).await?;
    let agent = ctx.ready_agent(&registry, &[]).await?;

    let (mut out, mut ahead) = (Vec::new(), Vec::new());
    let mut before_exit = 0;
    for i in 0..ctx.sizes.drains {
        let name = ctx.name("drain", i);
        let instance = ctx.instance_id(&name, 80);
        let mut spec = web(name, service);
        spec.cmd = slow_stopper();
        spec.stop_timeout = Some(STOP_TIMEOUT_S);
        let id = ctx.fleet.create(&spec).await?;
        ctx.fleet.start(&id).await?;
        timeline
            .wait("registered passing", Duration::from_secs(10), |c| {
                c.get(&instance).is_some_and(|s| s == "passing")
            })
            .await?;
        // The container's own stop timeout applies, as with `docker stop` and no -t.
        ctx.fleet.stop(&id, None).await?;
        timeline
            .wait("deregistration", Duration::from_secs(10), |c| {
                !c.contains_key(&instance)
            })
            .await?;
        let signalled = ctx
            .events
            .wait(&id, "kill", Duration::from_secs(5), |e| {
                e.action == "kill" && e.signal == Some(15)
            })
            .await?
            .at;
        let died = ctx.events.time_of(&id, "die").await?;
        let left = timeline
            .first(&instance, UNIX_EPOCH, |s| {
                *s != Seen::Present("passing".into())
            })
            .unwrap_or(died);
        ctx.fleet.remove(&id).await?;
        out.push(ms_between(signalled, left));
        ahead.push(ms_between(left, died));
        if left < died {
            before_exit += 1;
        }
    }
    agent.stop().await?;

    let n = out.len();
    let latency = Summary::of(&out);
    let lead = Summary::of(&ahead);
    let mut rows = Rows::new("drain", kind.to_string());
    rows.info(
        format!("stop signal → out of ?passing, p50 (n={n})"),
        fmt_ms(latency.p50),
    );
    rows.check(
        "stop signal → out of ?passing, p99",
        fmt_ms(latency.p99),
        "≤ 20 ms",
        latency.p99 <= 20.0,
    );
    rows.check(
        "out of ?passing before the process exited",
        format!("{before_exit}/{n}"),
        format!("{n}/{n}"),
        before_exit == n,
    );
    rows.info(
        "lead before exit, p50 (the process exits 1 s after the signal)",
        fmt_ms(lead.p50),
    );
    let data = json!({
        "stop_timeout_s": STOP_TIMEOUT_S,
        "signal_to_out_of_passing_ms": latency,
        "out_before_exit_ms": lead,
        "out_before_exit": before_exit,
        "samples": out,
    });
    Ok((rows, data))
}
