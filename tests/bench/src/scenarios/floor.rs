//! The floor: what the work berth must do costs when done directly, in the same run, on the
//! same registry: one `docker inspect`, and one registry write (and delete) timed from the
//! request to the moment a consumer sees it.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::Ctx;
use crate::docker::Spec;
use crate::registry::Registry;
use crate::stats::{Summary, ms, ms_between};

#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    /// One inspect of a running container.
    pub inspect: Summary,
    /// A write (berth's shape) from the request until a consumer sees it.
    pub write: Summary,
    /// A delete from the request until a consumer sees the instance gone.
    pub delete: Summary,
}

impl Floor {
    /// The least a registration can take: an inspect, then a write.
    pub fn register_p50(&self) -> f64 {
        self.inspect.p50 + self.write.p50
    }
}

/// Measures `n` samples of each.
pub async fn measure(ctx: &Ctx, registry: &Registry, n: usize) -> Result<Floor> {
    let spec = Spec {
        name: ctx.name("floor", 0),
        ..Spec::default()
    };
    let id = ctx.fleet.create(&spec).await?;
    ctx.fleet.start(&id).await?;
    let mut inspect = Vec::new();
    for _ in 0..n {
        let t = tokio::time::Instant::now();
        ctx.fleet.docker.inspect_container(&id, None).await?;
        inspect.push(ms(t.elapsed()));
    }
    ctx.fleet.remove(&id).await?;

    let service = "bench-floor";
    let timeline = registry.watch(service).await?;
    let (mut write, mut delete) = (Vec::new(), Vec::new());
    for i in 0..n {
        let id = format!("floor-{i}");
        let t0 = SystemTime::now();
        registry.write(service, &id, 1000 + i as u16).await?;
        let seen = timeline
            .wait(&id, Duration::from_secs(5), |c| c.contains_key(&id))
            .await?;
        write.push(ms_between(t0, seen));
        let t1 = SystemTime::now();
        registry.delete(service, &id).await?;
        let gone = timeline
            .wait(&id, Duration::from_secs(5), |c| !c.contains_key(&id))
            .await?;
        delete.push(ms_between(t1, gone));
    }
    Ok(Floor {
        inspect: Summary::of(&inspect),
        write: Summary::of(&write),
        delete: Summary::of(&delete),
    })
}
