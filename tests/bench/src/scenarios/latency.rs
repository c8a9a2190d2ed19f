//! Event to registered, die to gone: sequential containers, each started, seen registered,
//! stopped and seen gone; latencies from Docker's own event timestamps to the first moment a
//! consumer of the registry sees the change. The floor is measured in the same run.

use std::time::{Duration, UNIX_EPOCH};

use berth_e2e::backend::Kind;
use serde_json::json;

use super::{Outcome, floor, web};
use crate::Ctx;
use crate::registry::{Registry, Seen};
use crate::report::Rows;
use crate::stats::{Summary, fmt_ms, ms_between};

pub async fn run(ctx: &Ctx, kind: Kind) -> Outcome {
    let registry = Registry::start(kind).await?;
    let service = "bench-seq";
    let timeline = registry.watch(service).await?;
    let agent = ctx.ready_agent(&registry, &[]).await?;
    let floor = floor::measure(ctx, &registry, ctx.sizes.floor).await?;

    let (mut start_lat, mut die_lat, mut delivery) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ctx.sizes.sequential {
        let name = ctx.name("seq", i);
        let instance = ctx.instance_id(&name, 80);
        let id = ctx.fleet.create(&web(name, service)).await?;
        ctx.fleet.start(&id).await?;
        timeline
            .wait("registration", Duration::from_secs(10), |c| {
                c.contains_key(&instance)
            })
            .await?;
        let started = ctx.events.time_of(&id, "start").await?;
        let registered = timeline
            .first(&instance, UNIX_EPOCH, |s| matches!(s, Seen::Present(_)))
            .unwrap_or(started);
        ctx.fleet.stop(&id, Some(5)).await?;
        timeline
            .wait("deregistration", Duration::from_secs(10), |c| {
                !c.contains_key(&instance)
            })
            .await?;
        let died = ctx.events.time_of(&id, "die").await?;
        let gone = timeline
            .first(&instance, registered, |s| *s == Seen::Gone)
            .unwrap_or(died);
        for action in ["start", "die"] {
            if let Some(e) = ctx.events.find(&id, |e| e.action == action) {
                delivery.push(ms_between(e.at, e.received));
            }
        }
        ctx.fleet.remove(&id).await?;
        start_lat.push(ms_between(started, registered));
        die_lat.push(ms_between(died, gone));
    }
    agent.stop().await?;

    let start = Summary::of(&start_lat);
    let die = Summary::of(&die_lat);
    let delivery = Summary::of(&delivery);
    let mut rows = Rows::new("latency", kind.to_string());
    rows.info(
        "floor: Docker event delivery (timestamp → read by a client), p50",
        fmt_ms(delivery.p50),
    );
    rows.info("floor: inspect, p50", fmt_ms(floor.inspect.p50));
    rows.info("floor: write → visible, p50", fmt_ms(floor.write.p50));
    rows.info("floor: delete → visible, p50", fmt_ms(floor.delete.p50));
    rows.check(
        format!("start event → registered, p50 (n={})", start.n),
        fmt_ms(start.p50),
        "≤ 5 ms",
        start.p50 <= 5.0,
    );
    rows.check(
        "start event → registered, p99",
        fmt_ms(start.p99),
        "≤ 20 ms",
        start.p99 <= 20.0,
    );
    rows.info(
        "start event → registered, p90 / max",
        format!("{} / {}", fmt_ms(start.p90), fmt_ms(start.max)),
    );
    let ratio = start.p50 / (delivery.p50 + floor.register_p50());
    rows.check(
        "start → registered p50 ÷ floor (delivery + inspect + write)",
        format!("{ratio:.2}×"),
        "≤ 2×",
        ratio <= 2.0,
    );
    rows.check(
        format!("die event → gone, p50 (n={})", die.n),
        fmt_ms(die.p50),
        "≤ 5 ms",
        die.p50 <= 5.0,
    );
    rows.check(
        "die event → gone, p99",
        fmt_ms(die.p99),
        "≤ 20 ms",
        die.p99 <= 20.0,
    );
    rows.info(
        "die event → gone, p90 / max",
        format!("{} / {}", fmt_ms(die.p90), fmt_ms(die.max)),
    );
    rows.info(
        "die → gone p50 ÷ floor (delivery + delete)",
        format!("{:.2}×", die.p50 / (delivery.p50 + floor.delete.p50)),
    );
    let data = json!({
        "floor": floor,
        "event_delivery_ms": delivery,
        "start_to_registered_ms": start,
        "die_to_gone_ms": die,
        "samples": {"start_ms": start_lat, "die_ms": die_lat},
    });
    Ok((rows, data))
}
