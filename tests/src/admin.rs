//! An agent's admin server, read over HTTP: `/healthz`, `/readyz`, `/metrics`, `/v1/status`
//! and the status page.

use std::time::Duration;

use serde_json::Value;

/// A client of one agent's admin server.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::blocking::Client,
}

impl AdminClient {
    /// The admin server at `addr` (`127.0.0.1:40123`).
    /// The admin server's `host:port`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn new(addr: &str) -> AdminClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        AdminClient {
            base: format!("http://{addr}"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path`: the status code and body, or why the request failed.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let code = resp.status().as_u16();
        let body = resp.text().map_err(|e| format!("GET {url}: body: {e}"))?;
        Ok((code, body))
    }

    /// `/readyz`: `Ok(body)` on 200, `Err(code and body)` otherwise.
    pub fn ready(&self) -> Result<String, String> {
        match self.get("/readyz")? {
            (200, body) => Ok(body),
            (code, body) => Err(format!("{code} {}", body.trim())),
        }
    }

    /// `/metrics` as text; panics when it cannot be read.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Ok((200, body)) => body,
            other => panic!("GET /metrics: {other:?}"),
        }
    }

    /// `/v1/status` as JSON; panics when it cannot be read.
    pub fn status(&self) -> Value {
        match self.get("/v1/status") {
            Ok((200, body)) => serde_json::from_str(&body).expect("/v1/status is JSON"),
            other => panic!("GET /v1/status: {other:?}"),
        }
    }
}

/// The value of one series (`name{labels}` exactly as exported) in a Prometheus text body;
/// `None` when it is not there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// [`sample`], 0 when the series is absent (a counter that never moved is not exported).
pub fn counter(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}
