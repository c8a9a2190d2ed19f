//! The probe executor against real servers on loopback: a raw HTTP server that answers
//! chosen status codes, `openssl s_server` with a self-signed certificate for HTTPS, and a
//! tonic gRPC health server. (End-to-end scenarios with containers, Consul and etcd are in
//! `tests/tests/health.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth::labels::{CheckSpec, ProbeKind, Target};
use berth::probe::exec::{Executor, Probe};
use berth_registry::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

fn executor() -> Executor {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Executor::new().unwrap()
}

fn spec(kind: ProbeKind) -> CheckSpec {
    CheckSpec {
        name: "t".into(),
        kind,
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(5),
        rise: 1,
        fall: 1,
        initial: Status::Critical,
    }
}

fn http(method: &str, url: String, insecure: bool) -> CheckSpec {
    spec(ProbeKind::Http {
        method: method.into(),
        url,
        tls_skip_verify: insecure,
    })
}

fn target(port: u16) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port,
    }
}

/// Answers every request with `status` (e.g. `503 Service Unavailable`) and records the
/// request lines.
async fn http_server(status: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            log.lock()
                .unwrap()
                .push(text.lines().next().unwrap_or_default().to_owned());
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nLocation: http://127.0.0.1:1/\r\nConnection: close\r\n\r\n"
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (port, seen)
}

#[tokio::test]
async fn http_status_codes_decide_the_status() {
    let exec = executor();
    for (answer, want) in [
        ("200 OK", Status::Passing),
        ("204 No Content", Status::Passing),
        ("429 Too Many Requests", Status::Warning),
        ("503 Service Unavailable", Status::Critical),
        ("404 Not Found", Status::Critical),
        // Redirects are not followed: the target itself must answer.
        ("301 Moved Permanently", Status::Critical),
    ] {
        let (port, seen) = http_server(answer).await;
        let url = format!("http://127.0.0.1:{port}/health");
        let h = exec.probe(&http("HEAD", url.clone(), false)).await;
        assert_eq!(h.status, want, "{answer}: {}", h.output);
        assert!(
            h.output
                .starts_with(&format!("HTTP HEAD {url}: {answer} ("))
                && h.output.ends_with(" ms)"),
            "{}",
            h.output
        );
        assert_eq!(*seen.lock().unwrap(), ["HEAD /health HTTP/1.1".to_owned()]);
    }
}

#[tokio::test]
async fn http_and_tcp_to_a_closed_port_are_critical() {
    let exec = executor();
    // Bind and drop: a port nothing listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let h = exec
        .probe(&http("GET", format!("http://127.0.0.1:{port}/"), false))
        .await;
    assert_eq!(h.status, Status::Critical, "{}", h.output);
    let h = exec.probe(&spec(ProbeKind::Tcp(target(port)))).await;
    assert_eq!(h.status, Status::Critical);
    assert!(
        h.output
            .starts_with(&format!("TCP connect 127.0.0.1:{port}: Connection refused")),
        "{}",
        h.output
    );

    let (open, _) = http_server("200 OK").await;
    let h = exec.probe(&spec(ProbeKind::Tcp(target(open)))).await;
    assert_eq!(h.status, Status::Passing);
    assert!(
        h.output
            .starts_with(&format!("TCP connect 127.0.0.1:{open}: connected ("))
    );
}

/// `openssl s_server -www` with a fresh self-signed certificate; killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server() -> TlsServer {
    let dir = std::env::temp_dir().join(format!("berth-probe-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/install-deps.sh installs it)");
    assert!(ok.success(), "openssl req failed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args(["s_server", "-www", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Up to 10 s, in 50 ms steps.
    let listening = (0..200).any(|_| {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !up {
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    });
    assert!(listening, "openssl s_server did not listen");
    TlsServer {
        child,
        port,
        _dir: dir,
    }
}

#[tokio::test]
async fn https_verifies_the_certificate_unless_told_not_to() {
    let exec = executor();
    let server = tls_server();
    let url = format!("https://127.0.0.1:{}/", server.port);

    let h = exec.probe(&http("GET", url.clone(), false)).await;
    assert_eq!(h.status, Status::Critical, "{}", h.output);
    assert!(
        h.output.to_ascii_lowercase().contains("certificate"),
        "the reason names the certificate: {}",
        h.output
    );

    let h = exec.probe(&http("GET", url.clone(), true)).await;
    assert_eq!(h.status, Status::Passing, "{}", h.output);
    assert!(
        h.output.starts_with(&format!("HTTP GET {url}: 200 OK")),
        "{}",
        h.output
    );
}

#[tokio::test]
async fn grpc_health_follows_the_serving_status() {
    let exec = executor();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("shop.Cart", ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_from(listener)),
    );

    let grpc = |service: &str| {
        spec(ProbeKind::Grpc {
            target: target(port),
            service: service.into(),
        })
    };
    let h = exec.probe(&grpc("")).await;
    assert_eq!(h.status, Status::Passing, "{}", h.output);
    assert!(
        h.output
            .starts_with(&format!("gRPC health 127.0.0.1:{port}: SERVING (")),
        "{}",
        h.output
    );

    let h = exec.probe(&grpc("shop.Cart")).await;
    assert_eq!(h.status, Status::Critical, "{}", h.output);
    assert!(
        h.output.contains("(shop.Cart): NOT_SERVING"),
        "{}",
        h.output
    );

    let h = exec.probe(&grpc("no.Such")).await;
    assert_eq!(h.status, Status::Critical, "{}", h.output);
    assert!(h.output.contains("NotFound"), "{}", h.output);

    reporter
        .set_service_status("shop.Cart", ServingStatus::Serving)
        .await;
    assert_eq!(exec.probe(&grpc("shop.Cart")).await.status, Status::Passing);
}

/// A stream of accepted connections for `serve_with_incoming`.
fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}
