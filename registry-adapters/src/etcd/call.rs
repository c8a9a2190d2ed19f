//! One etcd request: the lazily made connection, the request timeout, the auth-token
//! refresh, and what a failure means ([`Failure::into_registry`]).

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Txn, TxnResponse};
use tonic::Code;
use tracing::debug;

use super::EtcdRegistry;
use crate::error::RegistryError;

/// Why one etcd call failed, before it is classified.
pub(super) enum Failure {
    Timeout(Duration),
    Etcd(etcd_client::Error),
    /// No connection could be made; already classified.
    Connect(RegistryError),
}

impl Failure {
    /// etcd says the lease a write or keep-alive used does not exist (any more).
    pub fn lease_not_found(&self) -> bool {
        matches!(self, Failure::Etcd(etcd_client::Error::GRpcStatus(s))
            if s.code() == Code::NotFound && s.message().contains("lease"))
    }

    fn unauthenticated(&self) -> bool {
        matches!(self, Failure::Etcd(etcd_client::Error::GRpcStatus(s)) if s.code() == Code::Unauthenticated)
    }

    /// Classifies the failure of the operation `what` (e.g. `register of web-1`).
    pub fn into_registry(self, what: &str) -> RegistryError {
        // etcd-client's errors carry no source of their own: their text is the whole story,
        // so it goes into the message, once.
        let unavailable = |message: String| RegistryError::Unavailable {
            message: format!("{what}: {message}"),
            source: None,
        };
        match self {
            Failure::Timeout(after) => unavailable(format!("no answer within {after:?}")),
            Failure::Etcd(etcd_client::Error::GRpcStatus(s)) => match s.code() {
                Code::PermissionDenied | Code::InvalidArgument | Code::FailedPrecondition => {
                    RegistryError::Rejected {
                        what: what.to_owned(),
                        message: s.message().to_owned(),
                    }
                }
                _ => unavailable(format!("{:?}: {}", s.code(), s.message())),
            },
            Failure::Etcd(e @ etcd_client::Error::InvalidUri(_)) => {
                RegistryError::Config(format!("{what}: {e}"))
            }
            Failure::Etcd(e) => unavailable(e.to_string()),
            Failure::Connect(e) => e,
        }
    }
}

impl EtcdRegistry {
    pub(super) async fn client(&self) -> Result<Client, RegistryError> {
        let inner = &self.inner;
        let connect = async {
            let connecting = Client::connect(&inner.endpoints, Some(inner.options.clone()));
            match tokio::time::timeout(inner.request_timeout, connecting).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => Err(Failure::Etcd(e).into_registry("connect to etcd")),
                Err(_) => {
                    Err(Failure::Timeout(inner.request_timeout).into_registry("connect to etcd"))
                }
            }
        };
        inner.client.get_or_try_init(|| connect).await.cloned()
    }

    /// Runs one request with the request timeout. An expired auth token is refreshed for the
    /// next attempt.
    pub(super) async fn call<T, F, Fut>(&self, f: F) -> Result<T, Failure>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await.map_err(Failure::Connect)?;
        let timeout = self.inner.request_timeout;
        let failure = match tokio::time::timeout(timeout, f(client.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => Failure::Etcd(e),
            Err(_) => Failure::Timeout(timeout),
        };
        if failure.unauthenticated() {
            debug!("etcd auth token rejected; refreshing it");
            let _ = tokio::time::timeout(timeout, client.refresh_token()).await;
        }
        Err(failure)
    }

    pub(super) async fn txn(&self, txn: Txn) -> Result<TxnResponse, Failure> {
        self.call(|mut c| async move { c.txn(txn).await }).await
    }
}
