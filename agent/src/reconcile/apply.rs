//! Where a write leaves for the registry: one planned [`Op`] applied, and recorded in the
//! store once the registry took it. Also the deregistration of everything on exit.

use std::collections::HashSet;
use std::time::Duration;

use berth_registry::RegistryError;
use futures::StreamExt;
use tracing::{info, warn};

use super::Context;
use super::plan::Op;

/// Applies one write; on success the store records it.
pub async fn apply(ctx: &Context, op: &Op) -> Result<(), RegistryError> {
    match op {
        Op::Register(instance) => {
            ctx.registry.register(instance).await?;
            info!(
                service.id = %instance.id,
                service.name = %instance.name,
                address = %instance.address,
                port = instance.port,
                status = %instance.health.status,
                "registered"
            );
            ctx.store.registered(instance.clone());
        }
        Op::Deregister { id } => {
            ctx.registry.deregister(id).await?;
            info!(service.id = %id, "deregistered");
            ctx.store.deregistered(id);
        }
        Op::SetHealth { id, health } => {
            if let Err(e) = ctx.registry.set_health(id, health).await {
                if matches!(e, RegistryError::NotFound { .. }) {
                    // Lost meanwhile: forget it; the next reconcile registers it again.
                    ctx.store.lost(id);
                }
                return Err(e);
            }
            // Debug-formatted: a multi-check or self-healing output has several lines, and a
            // log record stays on one.
            info!(service.id = %id, status = %health.status, output = ?health.output, "health changed");
            ctx.store.health_reported(id, health.clone());
        }
    }
    Ok(())
}

/// Removes everything this node owns: what the store recorded plus what the registry lists
/// (a write may have reached the registry after its client timed out).
pub async fn deregister_all(ctx: &Context) {
    let mut ids: HashSet<String> = ctx.store.ids().into_iter().collect();
    match tokio::time::timeout(Duration::from_secs(2), ctx.registry.list()).await {
        Ok(Ok(listing)) => ids.extend(listing.owned.into_iter().map(|i| i.id)),
        Ok(Err(e)) => {
            warn!(error = %crate::telemetry::chain(&e), "cannot list the registry on exit; deregistering what is known")
        }
        Err(_) => warn!("listing the registry on exit timed out; deregistering what is known"),
    }
    info!(instances = ids.len(), "deregistering on exit");
    futures::stream::iter(ids)
        .for_each_concurrent(16, |id| async move {
            match ctx.registry.deregister(&id).await {
                Ok(()) => ctx.store.deregistered(&id),
                Err(e) => warn!(service.id = %id, error = %crate::telemetry::chain(&e), "deregister on exit failed; the TTL will expire it"),
            }
        })
        .await;
}
