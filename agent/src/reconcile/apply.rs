//! Where a write leaves for the registry: one planned [`Op`] applied, counted and timed
//! through the [`Observer`](crate::observe::Observer), logged in one line with its fields
//! (`container`, `service.id`, `service.name`, `op`, `took_ms`), and recorded in the store
//! once the registry took it. Also the deregistration of everything on exit.

use std::collections::HashSet;
use std::time::Duration;

use berth_registry::RegistryError;
use futures::StreamExt;
use tracing::{info, warn};

use super::Context;
use super::plan::Op;
use crate::docker::short_id;
use crate::observe::RegistryOp;

/// The metric and log name of a planned write.
pub fn op_kind(op: &Op) -> RegistryOp {
    match op {
        Op::Register(_) => RegistryOp::Register,
        Op::Deregister { .. } => RegistryOp::Deregister,
        Op::SetHealth { .. } => RegistryOp::Health,
    }
}

/// A duration as milliseconds with two decimals, for the `took_ms` log field.
pub fn took_ms(took: Duration) -> f64 {
    (took.as_secs_f64() * 1e5).round() / 100.0
}

/// Applies one write for `container`; on success the store records it.
pub async fn apply(ctx: &Context, container: &str, op: &Op) -> Result<(), RegistryError> {
    let kind = op_kind(op);
    let observe = &ctx.observe;
    let container = short_id(container);
    match op {
        Op::Register(instance) => {
            let (result, took) = observe
                .registry(kind, ctx.registry.register(instance))
                .await;
            result?;
            info!(
                container,
                service.id = %instance.id,
                service.name = %instance.name,
                op = %kind,
                took_ms = took_ms(took),
                address = %instance.address,
                port = instance.port,
                status = %instance.health.status,
                "registered"
            );
            ctx.store.registered(instance.clone());
        }
        Op::Deregister { id } => {
            let name = ctx.store.name_of(id).unwrap_or_default();
            let (result, took) = observe.registry(kind, ctx.registry.deregister(id)).await;
            result?;
            info!(
                container,
                service.id = %id,
                service.name = %name,
                op = %kind,
                took_ms = took_ms(took),
                "deregistered"
            );
            ctx.store.deregistered(id);
        }
        Op::SetHealth { id, health } => {
            let name = ctx.store.name_of(id).unwrap_or_default();
            let (result, took) = observe
                .registry(kind, ctx.registry.set_health(id, health))
                .await;
            if let Err(e) = result {
                if matches!(e, RegistryError::NotFound { .. }) {
                    // Lost meanwhile: forget it; the next reconcile registers it again.
                    ctx.store.lost(id);
                }
                return Err(e);
            }
            // Debug-formatted: a multi-check or self-healing output has several lines, and a
            // log record stays on one.
            info!(
                container,
                service.id = %id,
                service.name = %name,
                op = %kind,
                took_ms = took_ms(took),
                status = %health.status,
                output = ?health.output,
                "health changed"
            );
            ctx.store.health_reported(id, health.clone());
        }
    }
    Ok(())
}

/// Removes everything this node owns: what the store recorded plus what the registry lists
/// (a write may have reached the registry after its client timed out).
pub async fn deregister_all(ctx: &Context) {
    let mut ids: HashSet<String> = ctx.store.ids().into_iter().collect();
    let listing = ctx.observe.registry(RegistryOp::List, ctx.registry.list());
    match tokio::time::timeout(Duration::from_secs(2), listing).await {
        Ok((Ok(listing), _)) => ids.extend(listing.owned.into_iter().map(|i| i.id)),
        Ok((Err(e), _)) => {
            warn!(error = %crate::telemetry::chain(&e), "cannot list the registry on exit; deregistering what is known")
        }
        Err(_) => warn!("listing the registry on exit timed out; deregistering what is known"),
    }
    info!(instances = ids.len(), "deregistering on exit");
    futures::stream::iter(ids)
        .for_each_concurrent(16, |id| async move {
            let name = ctx.store.name_of(&id).unwrap_or_default();
            let op = RegistryOp::Deregister;
            let (result, took) = ctx.observe.registry(op, ctx.registry.deregister(&id)).await;
            match result {
                Ok(()) => {
                    info!(service.id = %id, service.name = %name, op = %op, took_ms = took_ms(took), "deregistered");
                    ctx.store.deregistered(&id);
                }
                Err(e) => warn!(service.id = %id, service.name = %name, op = %op, error = %crate::telemetry::chain(&e), "deregister on exit failed; the TTL will expire it"),
            }
        })
        .await;
}
