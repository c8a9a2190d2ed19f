//! An HTTP/1.1 proxy in front of a real service (the Docker socket, a Consul agent), for
//! tests and the benchmark that need to see, slow, hold or refuse what berth asks.
//!
//! Every downstream connection gets its own upstream connection, and requests and responses
//! are streamed through, so Docker's endless `/events` response passes as it would without
//! the proxy. Each request is logged ([`HttpProxy::requests`]) and decided by the current
//! [`Rule`]: forward it, forward it after a delay, hold it until the test releases it, or
//! answer it with an error status without forwarding it.
//!
//! The proxy runs on a thread of its own with its own runtime, so blocking tests and async
//! code can use it alike. It stops when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::watch;

/// Where the proxy forwards to.
#[derive(Clone, Debug)]
pub enum Upstream {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Upstream {
    /// The local Docker engine's socket.
    pub fn docker() -> Upstream {
        Upstream::Unix("/var/run/docker.sock".into())
    }
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// Forward it after this long.
    Delay(Duration),
    /// Keep it until [`HttpProxy::release`], then forward it.
    Hold,
    /// Answer with this status and body; never forwarded.
    Refuse(u16, String),
}

/// Decides each request by method and path (with its query).
pub type Rule = Arc<dyn Fn(&Method, &str) -> Action + Send + Sync>;

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub at: Instant,
    pub action: Action,
}

struct Shared {
    rule: Mutex<Rule>,
    seen: Mutex<Vec<Seen>>,
    /// Requests held right now.
    held: Mutex<usize>,
    /// Bumped by `release`; held requests wait for it to change.
    releases: watch::Sender<u64>,
}

impl Shared {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy on 127.0.0.1. Stops when dropped.
pub struct HttpProxy {
    port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy")
            .field("port", &self.port)
            .finish()
    }
}

impl HttpProxy {
    /// Starts a proxy to `upstream` on a free port of 127.0.0.1, forwarding everything.
    pub fn start(upstream: Upstream) -> HttpProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let forward: Rule = Arc::new(|_: &Method, _: &str| Action::Forward);
        let shared = Arc::new(Shared {
            rule: Mutex::new(forward),
            seen: Mutex::new(Vec::new()),
            held: Mutex::new(0),
            releases: watch::channel(0).0,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept(listener, upstream, state) => {}
                    }
                });
            })
            .expect("spawn the proxy thread");
        HttpProxy {
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Decides every request from now on with `rule`.
    pub fn set_rule(&self, rule: impl Fn(&Method, &str) -> Action + Send + Sync + 'static) {
        *Shared::lock(&self.shared.rule) = Arc::new(rule);
    }

    /// Forwards every request from now on, and lets the held ones go.
    pub fn forward_all(&self) {
        self.set_rule(|_, _| Action::Forward);
        self.release();
    }

    /// Lets every held request go on to the upstream.
    pub fn release(&self) {
        self.shared.releases.send_modify(|n| *n += 1);
    }

    /// Requests being held right now.
    pub fn held(&self) -> usize {
        *Shared::lock(&self.shared.held)
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        Shared::lock(&self.shared.seen).clone()
    }

    /// Requests seen so far, counted by `key(method, path)` (e.g. a path with ids
    /// replaced).
    pub fn count_by(&self, key: impl Fn(&str, &str) -> String) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for s in Shared::lock(&self.shared.seen).iter() {
            *counts.entry(key(&s.method, &s.path)).or_insert(0) += 1;
        }
        counts
    }

    /// Forgets the requests seen so far.
    pub fn clear(&self) {
        Shared::lock(&self.shared.seen).clear();
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(listener: TcpListener, upstream: Upstream, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(serve(client, upstream.clone(), shared.clone()));
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

/// One downstream connection, over one upstream connection of its own.
async fn serve(client: TcpStream, upstream: Upstream, shared: Arc<Shared>) {
    let sender = match connect(&upstream).await {
        Ok(s) => s,
        // The client sees its connection closed, as if the upstream were down.
        Err(_) => return,
    };
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (sender, shared) = (sender.clone(), shared.clone());
        async move { Ok::<_, hyper::Error>(handle(req, &sender, &shared).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await;
}

async fn connect(
    upstream: &Upstream,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Incoming>> {
    let io_err = |e: hyper::Error| std::io::Error::other(e);
    macro_rules! handshake {
        ($stream:expr) => {{
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new($stream))
                .await
                .map_err(io_err)?;
            tokio::spawn(conn);
            sender
        }};
    }
    Ok(match upstream {
        Upstream::Tcp(addr) => {
            let s = TcpStream::connect(addr).await?;
            let _ = s.set_nodelay(true);
            handshake!(s)
        }
        Upstream::Unix(path) => handshake!(UnixStream::connect(path).await?),
    })
}

async fn handle(
    req: Request<Incoming>,
    sender: &tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Incoming>>,
    shared: &Shared,
) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let rule = Shared::lock(&shared.rule).clone();
    let action = rule(req.method(), &path);
    Shared::lock(&shared.seen).push(Seen {
        method: req.method().to_string(),
        path,
        at: Instant::now(),
        action: action.clone(),
    });
    match action {
        Action::Forward => {}
        Action::Delay(d) => tokio::time::sleep(d).await,
        Action::Hold => {
            let mut releases = shared.releases.subscribe();
            *Shared::lock(&shared.held) += 1;
            let _ = releases.changed().await;
            *Shared::lock(&shared.held) -= 1;
        }
        Action::Refuse(status, body) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = Response::new(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *resp.status_mut() = status;
            return resp;
        }
    }
    let mut sender = sender.lock().await;
    if sender.ready().await.is_err() {
        return bad_gateway();
    }
    match sender.send_request(req).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(_) => bad_gateway(),
    }
}

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(b"proxy: upstream failed"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
