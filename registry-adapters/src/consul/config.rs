//! [`ConsulConfig`], and turning it into the one HTTP client every request goes through:
//! address, token header, timeout and TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::RegistryError;

/// Header Consul reads the ACL token from.
const TOKEN_HEADER: &str = "X-Consul-Token";

/// How to reach the local Consul agent and how to write berth's checks.
///
/// The berth agent fills this from its flags and the `CONSUL_*` environment; this crate never
/// reads the environment. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `http://host:port`, `https://host:port`, or bare `host:port` (meaning http, as
    /// `CONSUL_HTTP_ADDR` does). IPv6 hosts go in brackets: `[::1]:8500`.
    pub addr: String,
    /// Node identity of this agent: the `berth-node` meta of every instance it writes, and
    /// the owner it recognises as itself when it lists, registers or deregisters.
    pub node: String,
    /// ACL token sent as `X-Consul-Token` on every request. An empty string means none.
    pub token: Option<String>,
    /// PEM file of the CA(s) that sign the agent's certificate. When set, only these CAs are
    /// trusted, as with `CONSUL_CACERT`; otherwise the system's roots are.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for agents that verify incoming TLS. Needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate (`CONSUL_HTTP_SSL_VERIFY=false`). For tests only.
    pub tls_skip_verify: bool,
    /// TTL of each instance's check: it turns critical when no heartbeat came for this long.
    /// At least one second.
    pub ttl: Duration,
    /// How long an instance's check may stay critical before Consul removes the instance.
    /// Consul raises anything below one minute to one minute and reaps every 30 seconds.
    pub deregister_critical_after: Duration,
    /// Limit on every request, connecting included.
    pub request_timeout: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            addr: "http://127.0.0.1:8500".to_owned(),
            node: String::new(),
            token: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            tls_skip_verify: false,
            ttl: Duration::from_secs(15),
            deregister_critical_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("addr", &self.addr)
            .field("node", &self.node)
            .field("token", &self.token().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .field("ttl", &self.ttl)
            .field("deregister_critical_after", &self.deregister_critical_after)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl ConsulConfig {
    /// The token, treating an empty one (an empty `CONSUL_HTTP_TOKEN`) as none.
    fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// Checks the settings that do not need files.
    pub(super) fn validate(&self) -> Result<(), RegistryError> {
        if self.ttl < Duration::from_secs(1) {
            return Err(config(format!(
                "consul check ttl must be at least 1s, not {:?}",
                self.ttl
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(config("consul request timeout must be above zero"));
        }
        if self.node.trim().is_empty() {
            return Err(config("consul backend needs a node name"));
        }
        Ok(())
    }

    /// The agent's base URL without a trailing slash, e.g. `http://127.0.0.1:8500`.
    pub(super) fn base_url(&self) -> Result<String, RegistryError> {
        let addr = self.addr.trim();
        if addr.is_empty() {
            return Err(config("consul address is empty"));
        }
        // Without a scheme, `host:port` would parse as scheme `host`.
        let full = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let url = Url::parse(&full)
            .map_err(|e| config(format!("consul address {addr:?} is not a URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            // Not echoed: it would print the credentials.
            return Err(config(
                "consul address must not contain credentials; pass an ACL token instead",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config(format!(
                "consul address {addr:?}: scheme {:?} is not supported, use http or https",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(config(format!("consul address {addr:?} has no host")));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(config(format!(
                "consul address {addr:?} must be scheme://host:port, without a path or query"
            )));
        }
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    /// The one client all requests share: token header, timeouts and TLS settings.
    pub(super) fn http_client(&self) -> Result<reqwest::Client, RegistryError> {
        // reqwest panics when it builds a client without a provider; fail with a message.
        let Some(provider) = rustls::crypto::CryptoProvider::get_default() else {
            return Err(config(
                "no rustls crypto provider is installed; the process must install one \
                 (rustls::crypto::ring::default_provider().install_default()) before \
                 creating the consul client",
            ));
        };

        let mut headers = HeaderMap::new();
        if let Some(token) = self.token() {
            // The error is not echoed: it would print the token.
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                config("consul token contains characters not allowed in an HTTP header")
            })?;
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }

        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(self.request_timeout)
            .connect_timeout(self.request_timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));

        if let Some(path) = &self.ca_cert {
            builder = builder.tls_certs_only(read_ca(path)?);
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                builder = builder.identity(read_identity(provider, cert, key)?)
            }
            (None, None) => {}
            (Some(cert), None) => {
                return Err(config(format!(
                    "client certificate {} is set without a client key",
                    cert.display()
                )));
            }
            (None, Some(key)) => {
                return Err(config(format!(
                    "client key {} is set without a client certificate",
                    key.display()
                )));
            }
        }
        if self.tls_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }

        builder
            .build()
            .map_err(|e| config(format!("cannot build the consul HTTP client: {e}")))
    }
}

fn config(message: impl Into<String>) -> RegistryError {
    RegistryError::Config(message.into())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|e| config(format!("{what} {}: {e}", path.display())))
}

/// Every certificate in a PEM file, each checked to parse as a trust anchor, so a bad file
/// is reported here by name rather than as a generic client-build failure.
fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let pem = read_file(path, "CA certificate")?;
    let ders = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            config(format!(
                "CA certificate {}: not a PEM file: {e}",
                path.display()
            ))
        })?;
    if ders.is_empty() {
        return Err(config(format!(
            "CA certificate {}: no certificate found",
            path.display()
        )));
    }
    let mut store = rustls::RootCertStore::empty();
    for der in &ders {
        store.add(der.clone()).map_err(|e| {
            config(format!(
                "CA certificate {}: unusable certificate: {e}",
                path.display()
            ))
        })?;
    }
    ders.iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config(format!("CA certificate {}: {e}", path.display())))
}

/// A client identity from a certificate file and a key file, each checked on its own.
fn read_identity(
    provider: &rustls::crypto::CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<reqwest::Identity, RegistryError> {
    let cert_pem = read_file(cert_path, "client certificate")?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            config(format!(
                "client certificate {}: not a PEM file: {e}",
                cert_path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(config(format!(
            "client certificate {}: no certificate found",
            cert_path.display()
        )));
    }

    let key_pem = read_file(key_path, "client key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        config(format!(
            "client key {}: no private key found: {e}",
            key_path.display()
        ))
    })?;
    provider.key_provider.load_private_key(key).map_err(|e| {
        config(format!(
            "client key {}: unusable private key: {e}",
            key_path.display()
        ))
    })?;

    // reqwest wants certificate and key in one PEM buffer.
    let mut both = cert_pem;
    both.push(b'\n');
    both.extend_from_slice(&key_pem);
    reqwest::Identity::from_pem(&both).map_err(|e| {
        config(format!(
            "client certificate {} with key {}: {e}",
            cert_path.display(),
            key_path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn with_addr(addr: &str) -> ConsulConfig {
        ConsulConfig {
            addr: addr.to_owned(),
            ..ConsulConfig::default()
        }
    }

    #[test]
    fn addresses_are_normalised() {
        for (addr, want) in [
            ("http://127.0.0.1:8500", "http://127.0.0.1:8500"),
            ("http://127.0.0.1:8500/", "http://127.0.0.1:8500"),
            ("https://consul.service:8501", "https://consul.service:8501"),
            ("127.0.0.1:8500", "http://127.0.0.1:8500"),
            ("localhost:8500", "http://localhost:8500"),
            (" [::1]:8500 ", "http://[::1]:8500"),
            ("consul", "http://consul"),
        ] {
            assert_eq!(with_addr(addr).base_url().unwrap(), want, "{addr}");
        }
    }

    #[test]
    fn bad_addresses_are_config_errors() {
        for addr in [
            "",
            "unix:///var/run/consul.sock",
            "http://",
            "http://h:8500/v1",
            "http://h:8500?x=1",
            "h:notaport",
        ] {
            let err = with_addr(addr).base_url().unwrap_err();
            assert!(matches!(err, RegistryError::Config(_)), "{addr}: {err}");
        }
    }

    #[test]
    fn credentials_in_the_address_are_refused_without_echoing_them() {
        let err = with_addr("http://user:s3cret@h:8500")
            .base_url()
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn debug_redacts_the_token() {
        let cfg = ConsulConfig {
            token: Some("s3cret".into()),
            ..ConsulConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn ttl_below_a_second_is_refused() {
        let cfg = ConsulConfig {
            ttl: Duration::from_millis(500),
            ..ConsulConfig::default()
        };
        assert!(matches!(cfg.validate(), Err(RegistryError::Config(_))));
        let named = ConsulConfig {
            node: "n1".into(),
            ..ConsulConfig::default()
        };
        assert!(named.validate().is_ok());
        assert!(
            matches!(ConsulConfig::default().validate(), Err(RegistryError::Config(m)) if m.contains("node")),
            "a client without a node cannot tell its own instances"
        );
    }

    fn install_crypto() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("berth-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn unreadable_ca_names_the_file() {
        install_crypto();
        let cfg = ConsulConfig {
            ca_cert: Some("/nonexistent/berth-ca.pem".into()),
            ..ConsulConfig::default()
        };
        let err = cfg.http_client().unwrap_err();
        assert!(matches!(err, RegistryError::Config(_)), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/berth-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn invalid_ca_names_the_file() {
        install_crypto();
        let empty = temp_file("empty-ca.pem", b"not a certificate\n");
        let garbage = temp_file(
            "garbage-ca.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        for path in [&empty, &garbage] {
            let cfg = ConsulConfig {
                ca_cert: Some(path.clone()),
                ..ConsulConfig::default()
            };
            let err = cfg.http_client().unwrap_err();
            assert!(matches!(err, RegistryError::Config(_)), "{err}");
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        }
        let _ = std::fs::remove_file(empty);
        let _ = std::fs::remove_file(garbage);
    }

    #[test]
    fn client_cert_without_key_is_refused() {
        install_crypto();
        let cfg = ConsulConfig {
            client_cert: Some("/tmp/berth-client.pem".into()),
            ..ConsulConfig::default()
        };
        let err = cfg.http_client().unwrap_err();
        assert!(err.to_string().contains("without a client key"), "{err}");
    }

    #[test]
    fn token_with_a_newline_is_refused_without_echoing_it() {
        install_crypto();
        let cfg = ConsulConfig {
            token: Some("s3cret\n".into()),
            ..ConsulConfig::default()
        };
        let err = cfg.http_client().unwrap_err();
        assert!(matches!(err, RegistryError::Config(_)), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
