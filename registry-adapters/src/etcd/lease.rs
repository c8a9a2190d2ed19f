//! The agent's one lease: granted on the first write, renewed every ttl/3 by
//! [`EtcdRegistry::keep_lease`], and forgotten when etcd says it is gone, which every key on
//! it went with.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::call::Failure;
use super::{EtcdRegistry, lock};
use crate::error::RegistryError;

impl EtcdRegistry {
    /// The lease this agent writes with, if it holds one now.
    pub fn lease(&self) -> Option<i64> {
        *lock(&self.inner.lease)
    }

    /// The current lease, granting one when there is none.
    pub(super) async fn current_lease(&self) -> Result<i64, RegistryError> {
        if let Some(id) = self.lease() {
            return Ok(id);
        }
        let _single = self.inner.grant.lock().await;
        if let Some(id) = self.lease() {
            return Ok(id);
        }
        let ttl = self.inner.ttl.as_secs_f64().ceil() as i64;
        let granted = self
            .call(|mut c| async move { c.lease_grant(ttl, None).await })
            .await
            .map_err(|f| f.into_registry("grant of the agent's lease"))?;
        let id = granted.id();
        *lock(&self.inner.lease) = Some(id);
        info!(lease = %format!("{id:x}"), ttl = granted.ttl(), "etcd lease granted");
        Ok(id)
    }

    /// Takes over lease `id`, the one a previous agent process of this node wrote its keys
    /// on, when this client holds no lease yet, `id` is alive and was granted with this
    /// client's TTL: its keys then need no rewrite, and watchers see nothing of the restart.
    /// Renews it at once (it may be about to expire: the previous process stopped renewing
    /// it). `None` when it cannot be adopted; the keys are then stale, written again under a
    /// lease of this client's own.
    pub(super) async fn adopt(&self, id: i64) -> Option<i64> {
        let _single = self.inner.grant.lock().await;
        if let Some(current) = self.lease() {
            return Some(current);
        }
        let ttl = self.inner.ttl.as_secs_f64().ceil() as i64;
        let lease = self
            .call(|mut c| async move { c.lease_time_to_live(id, None).await })
            .await
            .ok()?;
        if lease.ttl() <= 0 || lease.granted_ttl() != ttl {
            debug!(lease = %format!("{id:x}"), granted = lease.granted_ttl(), remaining = lease.ttl(), ttl, "not adopting the previous agent's etcd lease");
            return None;
        }
        // Opening a keep-alive stream renews the lease once; it fails for a dead one.
        self.call(|mut c| async move { c.lease_keep_alive(id).await })
            .await
            .ok()?;
        *lock(&self.inner.lease) = Some(id);
        info!(lease = %format!("{id:x}"), ttl, "adopted the etcd lease of this node's previous agent process; its keys stay as they are");
        Some(id)
    }

    /// Forgets `id` if it is still the current lease. Every key on it is gone, so whoever
    /// runs `keep_lease` is told to have everything written again.
    pub(super) fn drop_lease(&self, id: i64) {
        let mut lease = lock(&self.inner.lease);
        if *lease == Some(id) {
            *lease = None;
            drop(lease);
            warn!(lease = %format!("{id:x}"), "etcd lease lost (it expired, was revoked, or etcd lost its data); every instance will be written again under a new lease");
            self.inner.lease_lost.notify_one();
        }
    }

    /// Keeps the agent's lease alive every ttl/3 until `cancel` fires. When the lease is found
    /// gone (etcd answers so to the renewal, or to a write), forgets it and wakes `lost`:
    /// everything must be written again, because every key on it went with it.
    pub async fn keep_lease(&self, lost: Arc<Notify>, cancel: CancellationToken) {
        let every = (self.inner.ttl / 3).max(Duration::from_millis(500));
        let mut keeper: Option<(i64, LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.inner.lease_lost.notified() => {
                    keeper = None;
                    failing = false;
                    self.set_renewal_failure(None);
                    lost.notify_one();
                    continue;
                }
                _ = tokio::time::sleep(every) => {}
            }
            let Some(lease) = self.lease() else {
                keeper = None;
                self.set_renewal_failure(None);
                continue;
            };
            let renewed =
                tokio::time::timeout(self.inner.request_timeout, self.renew(lease, &mut keeper))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("no answer within {:?}", self.inner.request_timeout))
                    });
            match renewed {
                Ok(true) => {
                    if failing {
                        info!(lease = %format!("{lease:x}"), "etcd lease renewed again");
                    }
                    failing = false;
                    self.set_renewal_failure(None);
                }
                // Passed on to `lost` by the `lease_lost` branch above.
                Ok(false) => self.drop_lease(lease),
                Err(error) => {
                    keeper = None;
                    self.set_renewal_failure(Some(error.clone()));
                    if !failing {
                        warn!(lease = %format!("{lease:x}"), %error, retry_every = ?every, "cannot renew the etcd lease; retrying");
                    }
                    failing = true;
                }
            }
        }
    }

    /// One keep-alive round trip on the (re)opened stream: `Ok(false)` when etcd says the
    /// lease is gone.
    async fn renew(
        &self,
        lease: i64,
        keeper: &mut Option<(i64, LeaseKeeper, LeaseKeepAliveStream)>,
    ) -> Result<bool, String> {
        if keeper.as_ref().map(|k| k.0) != Some(lease) {
            let mut client = self.client().await.map_err(|e| e.to_string())?;
            // Opening the stream renews once; it answers this error for a TTL of 0.
            let (k, s) = match client.lease_keep_alive(lease).await {
                Ok(opened) => opened,
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                    return Ok(false);
                }
                Err(e) => {
                    let failure = Failure::Etcd(e);
                    if failure.lease_not_found() {
                        return Ok(false);
                    }
                    return Err(failure.into_registry("lease keep-alive").to_string());
                }
            };
            *keeper = Some((lease, k, s));
        }
        let Some((_, k, s)) = keeper.as_mut() else {
            return Err("no keep-alive stream".into());
        };
        k.keep_alive().await.map_err(|e| e.to_string())?;
        match s.message().await {
            Ok(Some(resp)) => Ok(resp.ttl() > 0),
            Ok(None) => Err("keep-alive stream closed".into()),
            Err(e) => {
                let failure = Failure::Etcd(e);
                if failure.lease_not_found() {
                    Ok(false)
                } else {
                    Err(failure.into_registry("lease keep-alive").to_string())
                }
            }
        }
    }
}
