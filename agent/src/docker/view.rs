//! [`ContainerView`]: the part of `docker inspect` that decides what berth registers.
//!
//! bollard's inspect model is all `Option`s; this view resolves them once, tolerating any
//! missing field, so label parsing is a pure function over plain data.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use bollard::models::{ContainerInspectResponse, HealthStatusEnum};

/// Transport protocol of a container port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl FromStr for Proto {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(()),
        }
    }
}

/// A container-side port with its protocol, e.g. `80/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortProto {
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.as_str())
    }
}

impl FromStr for PortProto {
    type Err = ();
    /// Parses `80`, `80/tcp` or `53/udp`; a bare port is tcp.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (port, proto) = match s.split_once('/') {
            Some((p, proto)) => (p, proto.parse()?),
            None => (s, Proto::Tcp),
        };
        let port: u16 = port.trim().parse().map_err(|_| ())?;
        if port == 0 {
            return Err(());
        }
        Ok(PortProto { port, proto })
    }
}

/// One published binding of a container port on the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    pub private: PortProto,
    /// `None` for an unspecified address (`""`, `0.0.0.0`, `::`).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    /// True for the IPv6 wildcard (`::`). Docker publishes `-p 80` on `0.0.0.0` and `::`,
    /// sometimes on different host ports; the family decides which one the host IP reaches.
    pub v6_wildcard: bool,
}

/// One network the container is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Attachment {
    /// The container's address on this network: IPv4 when it has one, else IPv6.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ipv4.map(IpAddr::V4).or(self.ipv6.map(IpAddr::V6))
    }
}

/// Docker's own HEALTHCHECK state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerHealth {
    Starting,
    Healthy,
    /// With the output of the last failed run, if any.
    Unhealthy(String),
}

/// What berth needs to know about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// `Config.Image`, the reference the container was created from.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `Config.Env` split at the first `=`.
    pub env: BTreeMap<String, String>,
    pub running: bool,
    pub paused: bool,
    pub health: Option<DockerHealth>,
    /// `HostConfig.NetworkMode`, e.g. `bridge`, `host`, `mynet`, `container:<id>`.
    pub network_mode: String,
    /// Sorted by network name.
    pub networks: Vec<Attachment>,
    /// `Config.ExposedPorts`, sorted.
    pub exposed: Vec<PortProto>,
    /// `NetworkSettings.Ports` bindings, sorted.
    pub bindings: Vec<Binding>,
    /// `Config.StopSignal` as written (`SIGTERM`, `TERM`, `15`), when set.
    pub stop_signal: Option<String>,
    /// `Config.StopTimeout` in seconds, when set.
    pub stop_timeout: Option<i64>,
}

impl ContainerView {
    /// True for `--network host` containers.
    pub fn host_network(&self) -> bool {
        self.network_mode == "host"
    }

    /// Builds the view from an inspect response. Missing fields become empty values.
    pub fn from_inspect(c: &ContainerInspectResponse) -> ContainerView {
        let config = c.config.as_ref();
        let state = c.state.as_ref();
        let settings = c.network_settings.as_ref();

        let labels: BTreeMap<String, String> = config
            .and_then(|c| c.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let env: BTreeMap<String, String> = config
            .and_then(|c| c.env.as_ref())
            .map(|e| {
                e.iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();

        let health = state
            .and_then(|s| s.health.as_ref())
            .and_then(|h| match h.status? {
                HealthStatusEnum::STARTING => Some(DockerHealth::Starting),
                HealthStatusEnum::HEALTHY => Some(DockerHealth::Healthy),
                HealthStatusEnum::UNHEALTHY => {
                    let output = h
                        .log
                        .as_ref()
                        .and_then(|l| l.last())
                        .and_then(|r| r.output.clone())
                        .unwrap_or_default();
                    Some(DockerHealth::Unhealthy(output.trim().to_owned()))
                }
                HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
            });

        let mut networks: Vec<Attachment> = settings
            .and_then(|s| s.networks.as_ref())
            .map(|n| {
                n.iter()
                    .map(|(name, ep)| Attachment {
                        name: name.clone(),
                        ipv4: ep.ip_address.as_deref().and_then(|a| a.parse().ok()),
                        ipv6: ep
                            .global_ipv6_address
                            .as_deref()
                            .and_then(|a| a.parse().ok()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        networks.sort_by(|a, b| a.name.cmp(&b.name));

        let mut exposed: Vec<PortProto> = config
            .and_then(|c| c.exposed_ports.as_ref())
            .map(|p| p.iter().filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_default();
        exposed.sort();
        exposed.dedup();

        let mut bindings = Vec::new();
        if let Some(ports) = settings.and_then(|s| s.ports.as_ref()) {
            for (private, binds) in ports {
                let Ok(private) = private.parse::<PortProto>() else {
                    continue;
                };
                for b in binds.iter().flatten() {
                    let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse().ok())
                    else {
                        continue;
                    };
                    let parsed = b
                        .host_ip
                        .as_deref()
                        .and_then(|ip| ip.parse::<IpAddr>().ok());
                    bindings.push(Binding {
                        private,
                        host_ip: parsed.filter(|ip| !ip.is_unspecified()),
                        host_port,
                        v6_wildcard: parsed == Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
                    });
                }
            }
        }
        bindings.sort();
        bindings.dedup();

        ContainerView {
            id: c.id.clone().unwrap_or_default(),
            name: c
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
            labels,
            env,
            // Docker reports a container waiting out its restart policy's delay as running
            // (and restarting); its process is gone and its ports are not served.
            running: state.and_then(|s| s.running).unwrap_or(false)
                && !state.and_then(|s| s.restarting).unwrap_or(false),
            paused: state.and_then(|s| s.paused).unwrap_or(false),
            health,
            network_mode: c
                .host_config
                .as_ref()
                .and_then(|h| h.network_mode.clone())
                .unwrap_or_default(),
            networks,
            exposed,
            bindings,
            stop_signal: config
                .and_then(|c| c.stop_signal.clone())
                .filter(|s| !s.is_empty()),
            stop_timeout: config.and_then(|c| c.stop_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_container_is_not_running() {
        use bollard::models::ContainerState;
        let state = |running, restarting| ContainerInspectResponse {
            state: Some(ContainerState {
                running: Some(running),
                restarting: Some(restarting),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(ContainerView::from_inspect(&state(true, false)).running);
        assert!(!ContainerView::from_inspect(&state(true, true)).running);
        assert!(!ContainerView::from_inspect(&state(false, false)).running);
    }

    #[test]
    fn port_proto_parses() {
        assert_eq!(
            "53/udp".parse(),
            Ok(PortProto {
                port: 53,
                proto: Proto::Udp
            })
        );
        assert_eq!(
            "80".parse(),
            Ok(PortProto {
                port: 80,
                proto: Proto::Tcp
            })
        );
        assert!("0/tcp".parse::<PortProto>().is_err());
        assert!("x/tcp".parse::<PortProto>().is_err());
        assert!("80/http".parse::<PortProto>().is_err());
    }
}
