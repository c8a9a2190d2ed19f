//! The HTTP layer: one shared client, URL building, and what a failed request was, before it
//! is classified into a [`RegistryError`].

use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::RegistryError;

/// Everything but RFC 3986's unreserved characters is escaped in a path segment, so `:`, `/`,
/// `?`, `#` and `%` in an id reach Consul intact.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Longest part of an error body kept in a message.
const MAX_BODY_CHARS: usize = 512;

/// Requests to the agent in flight at once; the others wait their turn here. A Consul agent
/// accepts at most `limits.http_max_conns_per_client` connections from one address (200 by
/// default) and closes the ones past it, and a burst of stopping containers makes a write
/// each at once (drains and deregistrations wait for no inspect). The agent answers such
/// writes one at a time anyway, so queueing them here costs no throughput; it keeps every
/// request's timeout for the agent's answer, not for its queue.
pub(super) const MAX_IN_FLIGHT: usize = 64;

/// A failed request to Consul.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    #[error("cannot reach consul")]
    Connect(#[source] reqwest::Error),
    #[error("consul did not answer in time")]
    Timeout(#[source] reqwest::Error),
    /// Named apart because certificates, not the network, are the usual cause. The rustls
    /// error itself shows further down the source chain.
    #[error("TLS with consul failed")]
    Tls(#[source] reqwest::Error),
    /// An https connection closed before the request could be sent. With TLS 1.3 a server
    /// that refuses the client certificate does so after the client finished its handshake,
    /// and the refusal may then surface like this instead of as a TLS alert.
    #[error(
        "TLS with consul failed: consul closed the connection before answering (does it \
         require a client certificate, --consul-client-cert/--consul-client-key?)"
    )]
    TlsClosed(#[source] reqwest::Error),
    #[error("request to consul failed")]
    Transport(#[source] reqwest::Error),
    #[error("consul answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("consul's answer is not the expected JSON")]
    Decode(#[source] serde_json::Error),
}

impl ApiError {
    fn transport(e: reqwest::Error) -> Self {
        if rustls_error(&e).is_some() {
            ApiError::Tls(e)
        } else if is_canceled(&e) && e.url().is_some_and(|u| u.scheme() == "https") {
            ApiError::TlsClosed(e)
        } else if e.is_timeout() {
            ApiError::Timeout(e)
        } else if e.is_connect() {
            ApiError::Connect(e)
        } else {
            ApiError::Transport(e)
        }
    }

    pub(super) fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Classifies by status code and error type: refusals (4xx) will not change on retry,
    /// everything else (transport errors, 5xx, 429, garbled answers) may.
    ///
    /// `what` names the operation, e.g. `register of web-1`.
    pub(super) fn into_registry(self, what: &str) -> RegistryError {
        let what = what.to_owned();
        // The message states what failed; the source carries the transport details.
        let message = format!("{what}: {self}");
        match self {
            ApiError::Status { status, body }
                if status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED =>
            {
                RegistryError::Rejected {
                    what,
                    message: format!(
                        "ACL denied ({status}); check the consul token and its policy: {body}"
                    ),
                }
            }
            ApiError::Status { status, body }
                if status.is_client_error()
                    && status != StatusCode::TOO_MANY_REQUESTS
                    && status != StatusCode::REQUEST_TIMEOUT =>
            {
                RegistryError::Rejected {
                    what,
                    message: format!("consul answered {status}: {body}"),
                }
            }
            ApiError::Status { .. } => RegistryError::Unavailable {
                message,
                source: None,
            },
            ApiError::Connect(e)
            | ApiError::Timeout(e)
            | ApiError::TlsClosed(e)
            | ApiError::Transport(e)
            | ApiError::Tls(e) => RegistryError::Unavailable {
                message,
                source: Some(Box::new(e)),
            },
            ApiError::Decode(e) => RegistryError::Unavailable {
                message,
                source: Some(Box::new(e)),
            },
        }
    }
}

/// True when hyper gave up on the request because its connection closed before it was
/// ready ("connection was not ready").
fn is_canceled(e: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// The rustls error behind a failed request, if any. tokio-rustls and hyper wrap it in
/// (nested) `io::Error`s, whose `source()` skips the wrapped error, so those are opened by hand.
fn rustls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// The local agent's HTTP API.
#[derive(Clone)]
pub(super) struct Agent {
    /// Shares its connection pool between clones.
    client: reqwest::Client,
    base: Arc<str>,
    /// [`MAX_IN_FLIGHT`] permits, shared between clones; a request holds one until its
    /// answer is read, so the pool never opens more connections than that.
    in_flight: Arc<Semaphore>,
}

impl Agent {
    pub(super) fn new(client: reqwest::Client, base: String) -> Self {
        Agent {
            client,
            base: base.into(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Waits for a turn to send. The semaphore is never closed, so this always gets a permit.
    async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        self.in_flight.acquire().await.ok()
    }

    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// `base` + `path` + the escaped `segment` + `query`.
    pub(super) fn url(&self, path: &str, segment: &str, query: &str) -> String {
        format!(
            "{}{path}{}{query}",
            self.base,
            utf8_percent_encode(segment, SEGMENT)
        )
    }

    pub(super) async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, ApiError> {
        let _turn = self.turn().await;
        let resp = Self::check(self.client.get(url).send().await).await?;
        let body = resp.bytes().await.map_err(ApiError::transport)?;
        serde_json::from_slice(&body).map_err(ApiError::Decode)
    }

    pub(super) async fn put<B: Serialize + ?Sized>(
        &self,
        url: &str,
        body: Option<&B>,
    ) -> Result<(), ApiError> {
        let mut req = self.client.put(url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let _turn = self.turn().await;
        Self::check(req.send().await).await.map(drop)
    }

    async fn check(
        sent: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, ApiError> {
        let resp = sent.map_err(ApiError::transport)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // The body only explains the status; failing to read it changes nothing.
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(MAX_BODY_CHARS).collect();
        Err(ApiError::Status { status, body })
    }
}
