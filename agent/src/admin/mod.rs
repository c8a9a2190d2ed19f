//! The admin HTTP server (`--admin-addr`, default `127.0.0.1:9797`): one axum task on the
//! app's cancellation token.
//!
//! - `GET /healthz`: 200 while the process runs and its tasks have not ended.
//! - `GET /readyz`: 200 once ready ([`crate::observe::ready`]); else 503 and the reason.
//! - `GET /metrics`: Prometheus text ([`crate::observe::metrics`]).
//! - `GET /v1/status`: the [`status::Status`] document as JSON.
//! - `GET /`: the status page ([`page`]).
//!
//! The server starts before the agent is built (so liveness answers while berth waits for
//! Docker to name the node); the built agent is attached later ([`Admin::attach`]). A request
//! copies what it shows from the store under its lock ([`Store::snapshot`]) and renders after
//! releasing it: no lock is held across I/O.

pub mod health;
pub mod page;
pub mod status;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::observe::Observer;
use crate::observe::metrics::CONTENT_TYPE;
use crate::reconcile::store::{Snapshot, Store};
use status::{Identity, Status};

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on admin address {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds the admin address (at startup, so a port in use fails the start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// What the admin server serves from.
#[derive(Debug)]
pub struct Admin {
    observe: Arc<Observer>,
    agent: OnceLock<(Identity, Arc<Store>)>,
    /// Set when the agent's tasks have ended while the process still runs.
    ended: AtomicBool,
}

impl Admin {
    pub fn new(observe: Arc<Observer>) -> Arc<Admin> {
        Arc::new(Admin {
            observe,
            agent: OnceLock::new(),
            ended: AtomicBool::new(false),
        })
    }

    /// The built agent: from now on the status shows its store.
    pub fn attach(&self, identity: Identity, store: Arc<Store>) {
        let _ = self.agent.set((identity, store));
    }

    /// The agent's tasks ended unexpectedly: `/healthz` fails from now on.
    pub fn tasks_ended(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        self.agent
            .get()
            .map(|(_, store)| store.snapshot())
            .unwrap_or_default()
    }

    /// The status document as of now.
    pub fn status(&self) -> Status {
        let snapshot = self.snapshot();
        let ready = self.observe.ready.check(Instant::now());
        Status::build(
            self.agent.get().map(|(i, _)| i),
            &snapshot,
            ready,
            Instant::now(),
        )
    }

    fn metrics(&self) -> Result<String, std::fmt::Error> {
        let snapshot = self.snapshot();
        let ready = self.observe.ready.check(Instant::now()).is_ok();
        self.observe
            .metrics
            .set_state(&Status::gauges(&snapshot, ready));
        self.observe.metrics.encode()
    }
}

/// The routes, for tests that call them without a socket.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status_json))
        .with_state(admin)
}

/// Serves until `cancel` fires.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, cancel: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(admin = %addr, "admin server listening (/healthz /readyz /metrics /v1/status /)");
    }
    let served = axum::serve(listener, router(admin))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "admin server failed");
    }
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn healthz(State(admin): State<Arc<Admin>>) -> Response {
    if admin.ended.load(Ordering::Relaxed) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "tasks ended\n".to_owned());
    }
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    match admin.observe.ready.check(Instant::now()) {
        Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    match admin.metrics() {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics\n".to_owned(),
        ),
    }
}

async fn status_json(State(admin): State<Arc<Admin>>) -> Response {
    axum::Json(admin.status()).into_response()
}

async fn index(State(admin): State<Arc<Admin>>) -> Response {
    Html(page::render(&admin.status())).into_response()
}
