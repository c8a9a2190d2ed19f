//! [`EtcdConfig`], and turning it into the etcd-client connect options: endpoints, user and
//! password, timeouts and TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use crate::error::RegistryError;

/// How to reach etcd and where to write.
///
/// The berth agent fills this from its flags and environment; this crate never reads the
/// environment. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port` (bare `host:port` means http); several
    /// members of one cluster are balanced and failed over.
    pub endpoints: Vec<String>,
    /// Key prefix; every key berth writes starts with it. Must start with `/`.
    pub prefix: String,
    /// Node identity of this agent: it names the node's index (`<prefix>/nodes/<node>/`).
    pub node: String,
    /// User for etcd's authentication; needs `password`.
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA(s) that sign the members' certificates (https endpoints).
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for members that verify clients. Needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// TTL of the agent's lease: its keys vanish this long after its last keep-alive.
    /// At least two seconds (etcd raises shorter leases to its minimum).
    pub ttl: Duration,
    /// Limit on every request, connecting included.
    pub request_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/berth".to_owned(),
            node: String::new(),
            user: None,
            password: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            ttl: Duration::from_secs(15),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("ttl", &self.ttl)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

fn config(message: impl Into<String>) -> RegistryError {
    RegistryError::Config(message.into())
}

impl EtcdConfig {
    /// Checks everything that needs no file and no network.
    pub(super) fn validate(&self) -> Result<(), RegistryError> {
        if self.ttl < Duration::from_secs(2) {
            return Err(config(format!(
                "etcd lease ttl must be at least 2s (etcd's minimum), not {:?}",
                self.ttl
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(config("etcd request timeout must be above zero"));
        }
        if self.node.is_empty() {
            return Err(config("etcd backend needs a node name"));
        }
        super::layout::segment("node name", &self.node).map_err(|_| {
            config(format!(
                "node name {:?} cannot be an etcd key segment",
                self.node
            ))
        })?;
        if self.user.is_some() != self.password.is_some() {
            return Err(config("etcd user and password go together"));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(config("etcd client certificate and key go together"));
        }
        self.urls().map(|_| ())
    }

    /// The endpoints as URLs, `http://` added where no scheme is given.
    pub(super) fn urls(&self) -> Result<Vec<String>, RegistryError> {
        let urls: Vec<String> = self
            .endpoints
            .iter()
            .flat_map(|e| e.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_owned()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if urls.is_empty() {
            return Err(config("no etcd endpoint given"));
        }
        let tls = self.ca_cert.is_some() || self.client_cert.is_some();
        for url in &urls {
            let scheme = url.split("://").next().unwrap_or_default();
            match scheme {
                "http" if tls => {
                    return Err(config(format!(
                        "etcd endpoint {url} is http but TLS certificates are set; use https://"
                    )));
                }
                "http" | "https" => {}
                _ => {
                    return Err(config(format!(
                        "etcd endpoint {url} must be http:// or https://"
                    )));
                }
            }
            if url.contains('@') {
                return Err(config(
                    "etcd endpoints must not contain credentials; use the user and password settings",
                ));
            }
        }
        Ok(urls)
    }

    /// Connect options: timeouts, keep-alive pings, credentials and TLS. Reads the
    /// certificate files, once.
    pub(super) fn connect_options(&self) -> Result<ConnectOptions, RegistryError> {
        let mut options = ConnectOptions::new()
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.request_timeout)
            // Notices a dead member between requests, not only when one times out.
            .with_keep_alive(Duration::from_secs(10), self.request_timeout);
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.with_user(user.clone(), password.clone());
        }
        let https = self.urls()?.iter().any(|u| u.starts_with("https://"));
        if https || self.ca_cert.is_some() || self.client_cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
            } else {
                tls = tls.with_enabled_roots();
            }
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                tls = tls.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, RegistryError> {
    let bytes = std::fs::read(path)
        .map_err(|e| config(format!("cannot read etcd {what} {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(config(format!(
            "etcd {what} {} is not a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> EtcdConfig {
        EtcdConfig {
            node: "n1".into(),
            ..EtcdConfig::default()
        }
    }

    #[test]
    fn endpoints_accept_lists_and_bare_host_ports() {
        let c = EtcdConfig {
            endpoints: vec!["10.0.0.1:2379, https://e2:2379".into(), "e3:2379".into()],
            ..base()
        };
        assert_eq!(
            c.urls().ok(),
            Some(vec![
                "http://10.0.0.1:2379".to_owned(),
                "https://e2:2379".to_owned(),
                "http://e3:2379".to_owned(),
            ])
        );
    }

    #[test]
    fn bad_settings_are_one_clear_error() {
        let cases: Vec<(EtcdConfig, &str)> = vec![
            (
                EtcdConfig {
                    endpoints: vec![" ".into()],
                    ..base()
                },
                "no etcd endpoint",
            ),
            (
                EtcdConfig {
                    endpoints: vec!["unix:///x".into()],
                    ..base()
                },
                "must be http",
            ),
            (
                EtcdConfig {
                    endpoints: vec!["http://u:p@h:2379".into()],
                    ..base()
                },
                "credentials",
            ),
            (
                EtcdConfig {
                    ttl: Duration::from_secs(1),
                    ..base()
                },
                "at least 2s",
            ),
            (
                EtcdConfig {
                    user: Some("u".into()),
                    ..base()
                },
                "go together",
            ),
            (
                EtcdConfig {
                    node: "a/b".into(),
                    ..base()
                },
                "key segment",
            ),
            (
                EtcdConfig {
                    ca_cert: Some("/nonexistent".into()),
                    ..base()
                },
                "is http but TLS",
            ),
        ];
        for (c, want) in cases {
            match c.validate() {
                Err(RegistryError::Config(m)) => assert!(m.contains(want), "{m:?} lacks {want:?}"),
                other => panic!("{c:?}: {other:?}"),
            }
        }
        let missing = EtcdConfig {
            endpoints: vec!["https://h:2379".into()],
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..base()
        };
        let Err(RegistryError::Config(m)) = missing.connect_options() else {
            panic!("a missing CA file must be a config error");
        };
        assert!(m.contains("/nonexistent/ca.pem"), "{m}");
    }

    #[test]
    fn debug_hides_the_password() {
        let c = EtcdConfig {
            user: Some("root".into()),
            password: Some("s3cret".into()),
            ..base()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && shown.contains("<redacted>"));
    }
}
