//! A plain-HTTP probe without an HTTP client: one new connection, one request with
//! `Connection: close`, the status line of the answer, and the connection closed.
//!
//! A probe needs no more (the status decides; the body is never read), and a thousand probes
//! every ten seconds spend their CPU in the client otherwise: a general client builds and
//! parses a URL, a header map and a connection pool per request. The request is what such a
//! client sends, so a target cannot tell the difference: `<METHOD> <path> HTTP/1.1`, `Host`,
//! `User-Agent`, `Accept: */*`, `Content-Length: 0` for methods other than GET and HEAD. A
//! `1xx` interim answer is skipped; anything that is not an HTTP/1 status line is a failure.
//! HTTPS stays with the TLS client (`exec.rs`).

use berth_registry::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer read to find its status line (after `1xx` answers).
const MAX_HEAD: usize = 16 * 1024;

/// The parts of `http://<authority><path>` a request needs.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target<'a> {
    /// Host to dial: an IP literal (brackets removed) or a name.
    pub host: &'a str,
    pub port: u16,
    /// The `Host` header: the authority as written.
    pub authority: &'a str,
    /// The request target: the path and query, percent-encoded where they are not plain
    /// visible ASCII; `/` when empty; without a fragment.
    pub path: String,
}

/// Splits what follows `http://` into a [`Target`]; `Err` says why it is not one.
pub(super) fn target(rest: &str) -> Result<Target<'_>, String> {
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.starts_with('[')) => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("invalid port in {authority:?}"))?;
            (h, port)
        }
        _ if !authority.contains(':') && !authority.is_empty() => (authority, 80),
        _ => return Err(format!("invalid address {authority:?}")),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let path = path.split('#').next().unwrap_or_default();
    let mut encoded = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        encoded.push('/');
    }
    for b in path.bytes() {
        if b.is_ascii_graphic() {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(Target {
        host,
        port,
        authority,
        path: encoded,
    })
}

/// The request bytes for `method` on `t`.
pub(super) fn request(method: &str, t: &Target<'_>) -> String {
    let length = if matches!(method, "GET" | "HEAD") {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\n{length}\
         Connection: close\r\n\r\n",
        t.path,
        t.authority,
        super::exec::USER_AGENT
    )
}

/// The final status code in the start of an answer: `Ok(Some(code))` once a non-`1xx`
/// status line is complete, `Ok(None)` when more bytes are needed, `Err` when it is not
/// HTTP/1.
pub(super) fn status(head: &[u8]) -> Result<Option<u16>, String> {
    let mut at = 0;
    loop {
        let rest = &head[at..];
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &rest[..eol];
        let code = line
            .strip_prefix(b"HTTP/1.")
            // `1 200 OK`, or `1 200` without a reason phrase.
            .filter(|l| l.len() >= 5 && l[1] == b' ' && l.get(5).is_none_or(|b| *b == b' '))
            .map(|l| &l[2..5])
            .filter(|c| c.iter().all(u8::is_ascii_digit))
            .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u16>().ok())
            .ok_or_else(|| {
                let shown: String = String::from_utf8_lossy(&line[..line.len().min(40)]).into();
                format!("not an HTTP/1 answer: {shown:?}")
            })?;
        if !(100..200).contains(&code) || code == 101 {
            return Ok(Some(code));
        }
        // An interim answer: its header block ends with an empty line; the real one follows.
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        at += end + 4;
    }
}

/// One probe: the status and the detail for the output (`200 OK`, or why it failed).
pub(super) async fn probe(method: &str, rest: &str) -> (Status, String) {
    let t = match target(rest) {
        Ok(t) => t,
        Err(e) => return (Status::Critical, e),
    };
    let mut stream = match TcpStream::connect((t.host, t.port)).await {
        Ok(s) => s,
        Err(e) => return (Status::Critical, format!("connect: {e}")),
    };
    let _ = stream.set_nodelay(true);
    if let Err(e) = stream.write_all(request(method, &t).as_bytes()).await {
        return (Status::Critical, format!("sending the request: {e}"));
    }
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    let code = loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => {
                return (
                    Status::Critical,
                    "connection closed without an answer".into(),
                );
            }
            Ok(n) => n,
            Err(e) => return (Status::Critical, format!("reading the answer: {e}")),
        };
        head.extend_from_slice(&buf[..n]);
        match status(&head) {
            Ok(Some(code)) => break code,
            Ok(None) if head.len() < MAX_HEAD => {}
            Ok(None) => return (Status::Critical, "no status line in the answer".into()),
            Err(e) => return (Status::Critical, e),
        }
    };
    let shown = http::StatusCode::from_u16(code)
        .map(|c| c.to_string())
        .unwrap_or_else(|_| code.to_string());
    let status = match code {
        200..=299 => Status::Passing,
        429 => Status::Warning,
        _ => Status::Critical,
    };
    (status, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_split_and_encoded() {
        let t = target("10.0.0.2:8080/health?full=1").unwrap();
        assert_eq!(
            (t.host, t.port, t.authority, t.path.as_str()),
            ("10.0.0.2", 8080, "10.0.0.2:8080", "/health?full=1")
        );
        let t = target("[fd00::2]:80/a b#frag").unwrap();
        assert_eq!((t.host, t.port, t.path.as_str()), ("fd00::2", 80, "/a%20b"));
        let t = target("db.example.com").unwrap();
        assert_eq!(
            (t.host, t.port, t.path.as_str()),
            ("db.example.com", 80, "/")
        );
        let t = target("h:1?x=\r\nInjected: yes").unwrap();
        assert_eq!(
            t.path, "/?x=%0D%0AInjected:%20yes",
            "no header can be smuggled"
        );
        let t = target("h:1/é").unwrap();
        assert_eq!(t.path, "/%C3%A9");
        for bad in ["", ":80", "h:99999/", "h:x/", "fd00::2:80"] {
            assert!(target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_carry_what_a_client_sends() {
        let t = target("10.0.0.2:80/health").unwrap();
        let get = request("GET", &t);
        assert!(
            get.starts_with("GET /health HTTP/1.1\r\nHost: 10.0.0.2:80\r\n"),
            "{get}"
        );
        assert!(get.ends_with("Connection: close\r\n\r\n") && !get.contains("Content-Length"));
        assert!(request("POST", &t).contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn the_final_status_line_decides() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Ok(Some(200)));
        assert_eq!(
            status(b"HTTP/1.0 503 Service Unavailable\r\nX: y"),
            Ok(Some(503))
        );
        assert_eq!(status(b"HTTP/1.1 204\r\n"), Ok(Some(204)));
        assert_eq!(status(b"HTTP/1.1 200 O"), Ok(None));
        assert_eq!(
            status(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 404 Not Found\r\n"),
            Ok(Some(404))
        );
        assert_eq!(status(b"HTTP/1.1 100 Continue\r\n\r\n"), Ok(None));
        assert!(status(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(status(b"HTTP/2 200\r\n").is_err());
    }
}
