//! Running one probe: HTTP(S), TCP connect, gRPC health. Each call returns a [`Health`] with
//! a short output such as `HTTP GET http://10.1.2.3:80/health: 503 Service Unavailable
//! (12 ms)`. Timeouts are not handled here: the caller bounds every call.

use std::future::Future;
use std::time::Duration;

use berth_registry::{Health, Status};
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::labels::{CheckSpec, ProbeKind};

/// Something that can run a check. [`Executor`] in the agent; scripted in unit tests.
pub trait Probe: Send + Sync + 'static {
    fn probe(&self, spec: &CheckSpec) -> impl Future<Output = Health> + Send;
}

/// What a check does, as its output starts: `HTTP GET <url>`, `TCP connect <addr>`,
/// `gRPC health <addr>`.
pub fn describe(kind: &ProbeKind) -> String {
    match kind {
        ProbeKind::Http { method, url, .. } => format!("HTTP {method} {url}"),
        ProbeKind::Tcp(target) => format!("TCP connect {target}"),
        ProbeKind::Grpc { target, service } if service.is_empty() => {
            format!("gRPC health {target}")
        }
        ProbeKind::Grpc { target, service } => format!("gRPC health {target} ({service})"),
    }
}

/// The `User-Agent` of HTTP(S) probes.
pub const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"), " (health probe)");

/// The real probes. Plain HTTP goes through [`super::http1`]; HTTPS through a TLS client.
#[derive(Clone, Debug)]
pub struct Executor {
    https: reqwest::Client,
    /// For checks with `tls_skip_verify`.
    insecure: reqwest::Client,
}

/// Why the HTTP clients could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP probe client")]
pub struct ExecutorError(#[source] reqwest::Error);

impl Executor {
    pub fn new() -> Result<Executor, ExecutorError> {
        let client = |insecure: bool| {
            reqwest::Client::builder()
                // A probe checks the target now: no connection reuse, no redirects followed
                // to other hosts.
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::none())
                // Container IPs are local: never through HTTP(S)_PROXY.
                .no_proxy()
                .user_agent(USER_AGENT)
                .tls_danger_accept_invalid_certs(insecure)
                .build()
                .map_err(ExecutorError)
        };
        Ok(Executor {
            https: client(false)?,
            insecure: client(true)?,
        })
    }

    async fn http(&self, method: &str, url: &str, insecure: bool) -> (Status, String) {
        if let Some(rest) = url.strip_prefix("http://") {
            return super::http1::probe(method, rest).await;
        }
        let client = if insecure {
            &self.insecure
        } else {
            &self.https
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_default();
        match client.request(method, url).send().await {
            Ok(resp) => {
                let code = resp.status();
                let status = if code.is_success() {
                    Status::Passing
                } else if code == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Status::Warning
                } else {
                    Status::Critical
                };
                (status, code.to_string())
            }
            Err(e) => (Status::Critical, crate::telemetry::chain(&e)),
        }
    }

    async fn tcp(&self, host: &str, port: u16) -> (Status, String) {
        match tokio::net::TcpStream::connect((host, port)).await {
            Ok(_) => (Status::Passing, "connected".to_owned()),
            Err(e) => (Status::Critical, e.to_string()),
        }
    }

    async fn grpc(&self, target: &str, service: &str, timeout: Duration) -> (Status, String) {
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{target}")) {
            Ok(e) => e.connect_timeout(timeout).timeout(timeout),
            Err(e) => return (Status::Critical, crate::telemetry::chain(&e)),
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return (Status::Critical, crate::telemetry::chain(&e)),
        };
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        match HealthClient::new(channel).check(request).await {
            Ok(resp) => {
                let status = resp.into_inner().status();
                let word = status.as_str_name();
                if status == ServingStatus::Serving {
                    (Status::Passing, word.to_owned())
                } else {
                    (Status::Critical, word.to_owned())
                }
            }
            Err(s) => (Status::Critical, format!("{:?}: {}", s.code(), s.message())),
        }
    }
}

impl Probe for Executor {
    async fn probe(&self, spec: &CheckSpec) -> Health {
        let started = Instant::now();
        let (status, detail) = match &spec.kind {
            ProbeKind::Http {
                method,
                url,
                tls_skip_verify,
            } => self.http(method, url, *tls_skip_verify).await,
            ProbeKind::Tcp(t) => self.tcp(&t.host, t.port).await,
            ProbeKind::Grpc { target, service } => {
                self.grpc(&target.to_string(), service, spec.timeout).await
            }
        };
        let ms = started.elapsed().as_millis();
        Health {
            status,
            output: format!("{}: {detail} ({ms} ms)", describe(&spec.kind)),
        }
    }
}
