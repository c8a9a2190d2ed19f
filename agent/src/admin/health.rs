//! `berth health`: asks a running agent's admin server for `/healthz` or `/readyz`, for
//! container health checks (the image has no shell or curl to do it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// How long the whole question may take; a health check must answer, not hang.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the agent is not healthy (or ready), or could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("the admin server is disabled (--admin-addr is empty); nothing to ask")]
    Disabled,
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("{url}: no answer")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: {status}: {body}")]
    Failing {
        url: String,
        status: u16,
        body: String,
    },
}

/// The URL `berth health` asks: the admin address, with a wildcard replaced by loopback of
/// its family (an agent listening on `0.0.0.0` is asked at `127.0.0.1`).
pub fn url(addr: SocketAddr, ready: bool) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    format!("http://{}{path}", SocketAddr::new(ip, addr.port()))
}

/// Asks once; `Ok` with the answer's body when it is 200.
pub async fn check(addr: Option<SocketAddr>, ready: bool) -> Result<String, HealthError> {
    let addr = addr.ok_or(HealthError::Disabled)?;
    let url = url(addr, ready);
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(HealthError::Client)?;
    let unreachable = |source| HealthError::Unreachable {
        url: url.clone(),
        source,
    };
    let response = client.get(&url).send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(unreachable)?;
    let body = body.trim().to_owned();
    if status == 200 {
        Ok(body)
    } else {
        Err(HealthError::Failing { url, status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_asked_at_loopback() {
        let cases = [
            ("127.0.0.1:9797", false, "http://127.0.0.1:9797/healthz"),
            ("0.0.0.0:9797", true, "http://127.0.0.1:9797/readyz"),
            ("[::]:80", false, "http://[::1]:80/healthz"),
            ("192.0.2.7:1", false, "http://192.0.2.7:1/healthz"),
        ];
        for (addr, ready, want) in cases {
            assert_eq!(url(addr.parse().unwrap(), ready), want, "{addr}");
        }
    }
}
