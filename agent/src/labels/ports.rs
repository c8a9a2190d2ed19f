//! Stage 2 of the pipeline, choosing ports and addresses: which container ports can
//! register, and at which address and port clients reach them.
//!
//! Three modes, chosen per container:
//! - host network: exposed ports at the host address (no bindings exist);
//! - `--internal`: exposed and bound ports at the container's IP on one chosen network;
//! - default: published bindings at the host address (or the binding's own host IP).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::docker::view::{Binding, ContainerView, PortProto};

use super::Settings;
use super::keys::{Keys, Raw, Registrator};
use super::notes::Notes;
use super::sanitize;

/// Where clients reach one container port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Endpoint {
    pub address: String,
    pub port: u16,
    /// The rule that chose the address, for `berth explain`.
    pub rule: String,
}

/// Registrable container ports, each with its endpoints (sorted, no repeats, never empty).
pub(super) type Candidates = BTreeMap<PortProto, Vec<Endpoint>>;

/// The ports of a container.
#[derive(Debug)]
pub(super) struct Ports {
    /// The registrable ones, with their endpoints.
    pub candidates: Candidates,
    /// Every port Docker knows about, registrable or not (exposed or bound).
    pub known: BTreeSet<PortProto>,
}

/// The ports of `view` for the mode `settings` and its `berth.address`/`berth.network`
/// labels ask for, or `None` when the container cannot register at all (internal mode
/// without a usable network). Per-port keys naming a port the container lacks are reported.
pub(super) fn choose(
    view: &ContainerView,
    settings: &Settings,
    keys: &Keys,
    notes: &mut Notes,
) -> Option<Ports> {
    let known = known(view);
    warn_unknown_port_keys(&keys.reg, &known, notes);
    let address = match &keys.native.address {
        Some((a, raw)) => Some((a.clone(), format!("{raw}"))),
        None => address_from_label(view, settings, notes),
    };
    let address = address.as_ref().map(|(a, rule)| (a.as_str(), rule.clone()));
    let candidates = candidates(view, settings, address, keys.native.network.as_ref(), notes)?;
    Some(Ports { candidates, known })
}

/// The address in the `--ip-from-label` label, when the container has it and it is one. As
/// in registrator, an empty value counts as absent and a prefix length is dropped
/// (`10.42.0.7/16`, the form orchestrators such as Rancher write).
fn address_from_label(
    view: &ContainerView,
    settings: &Settings,
    notes: &mut Notes,
) -> Option<(String, String)> {
    let key = settings.ip_label.as_deref()?;
    let value = view.labels.get(key)?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return None;
    }
    let address = trimmed.rsplit_once('/').map_or(trimmed, |(ip, _)| ip);
    let raw = Raw::label(key, value);
    match sanitize::address(address) {
        Ok(address) => Some((address, format!("{raw} (--ip-from-label)"))),
        Err(why) => {
            notes.warn_at(&raw, format!("{why}; --ip-from-label ignored"));
            None
        }
    }
}

/// Per-port registrator keys naming a port the container does not have are typos.
fn warn_unknown_port_keys(reg: &Registrator, known: &BTreeSet<PortProto>, notes: &mut Notes) {
    for (port, fields) in &reg.port {
        if !known.iter().any(|pp| pp.port == *port) {
            for raw in fields.raws() {
                notes.warn_at(raw, format!("the container has no port {port}; ignored"));
            }
        }
    }
    for (pp, fields) in &reg.proto {
        if !known.contains(pp) {
            for raw in fields.raws() {
                notes.warn_at(raw, format!("the container has no port {pp}; ignored"));
            }
        }
    }
}

/// Every container port Docker knows about: exposed or bound.
fn known(view: &ContainerView) -> BTreeSet<PortProto> {
    view.exposed
        .iter()
        .copied()
        .chain(view.bindings.iter().map(|b| b.private))
        .collect()
}

/// The registrable ports of `view`, or `None` when the container cannot register at all
/// (internal mode without a usable network). Every skipped port gets a note.
fn candidates(
    view: &ContainerView,
    settings: &Settings,
    address_label: Option<(&str, String)>,
    network: Option<&Raw>,
    notes: &mut Notes,
) -> Option<Candidates> {
    let mut out = Candidates::new();
    let at = |(address, rule): &(String, String), port: u16| {
        vec![Endpoint {
            address: address.clone(),
            port,
            rule: rule.clone(),
        }]
    };
    let host_ip = || {
        (
            settings.host_ip.to_string(),
            format!("host IP ({})", settings.host_ip_from),
        )
    };
    let label = address_label
        .as_ref()
        .map(|(a, raw)| ((*a).to_owned(), format!("override {raw}")));
    let address = address_label.as_ref().map(|(a, _)| *a);

    if view.host_network() {
        let chosen = label.clone().unwrap_or_else(|| {
            let (ip, rule) = host_ip();
            (ip, format!("host network: {rule}"))
        });
        for pp in &view.exposed {
            out.insert(*pp, at(&chosen, pp.port));
        }
        if out.is_empty() {
            notes.info("host network: no exposed ports (EXPOSE in the image or --expose)");
        }
        return Some(out);
    }

    if settings.internal {
        let chosen = match label.clone() {
            Some(chosen) => chosen,
            None => {
                let (ip, rule) = choose_network(view, settings, network, notes)?;
                (ip.to_string(), rule)
            }
        };
        for pp in known(view) {
            out.insert(pp, at(&chosen, pp.port));
        }
        if out.is_empty() {
            notes.info("internal mode: no exposed or published ports");
        }
        return Some(out);
    }

    if let Some(raw) = network {
        notes.info_at(raw, "only used with --internal; ignored");
    }
    for b in &view.bindings {
        if let Some(kept) = wildcard_of_other_family(view, b, address, settings) {
            if kept == b.host_port {
                continue; // the usual pair on one port: one endpoint
            }
            notes.info(format!(
                "port {} is also published on the {} wildcard at host port {}; that binding is \
                 skipped because the registered address is {}",
                b.private,
                if b.v6_wildcard { "IPv6" } else { "IPv4" },
                b.host_port,
                if b.v6_wildcard { "IPv4" } else { "IPv6" },
            ));
            continue;
        }
        let (address, rule) = match (&label, b.host_ip) {
            (Some(chosen), _) => chosen.clone(),
            (None, Some(ip)) => {
                if ip.is_loopback() {
                    notes.info(format!(
                        "port {} is published on loopback {}; only this host can reach it",
                        b.private,
                        socket(ip, b.host_port)
                    ));
                }
                (
                    ip.to_string(),
                    format!("binding {}", socket(ip, b.host_port)),
                )
            }
            (None, None) => {
                let (ip, rule) = host_ip();
                let wildcard = if b.v6_wildcard { "[::]" } else { "0.0.0.0" };
                (
                    ip,
                    format!("binding {wildcard}:{} at the {rule}", b.host_port),
                )
            }
        };
        out.entry(b.private).or_default().push(Endpoint {
            address,
            port: b.host_port,
            rule,
        });
    }
    for endpoints in out.values_mut() {
        endpoints.sort();
        endpoints.dedup_by(|a, b| a.address == b.address && a.port == b.port);
    }
    for pp in &view.exposed {
        if !out.contains_key(pp) {
            notes.info(format!(
                "port {pp} is exposed but not published; skipped (publish it with -p, or run \
                 berth with --internal)"
            ));
        }
    }
    if out.is_empty() && view.exposed.is_empty() {
        notes.info("no published ports");
    }
    Some(out)
}

fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// Internal mode: the container IP to register, from one deterministic network.
fn choose_network(
    view: &ContainerView,
    settings: &Settings,
    label: Option<&Raw>,
    notes: &mut Notes,
) -> Option<(IpAddr, String)> {
    let named = match (label, &settings.network) {
        (Some(raw), _) => Some((raw.value.trim(), format!("{raw}"))),
        (None, Some(name)) => Some((name.as_str(), format!("--network {name}"))),
        (None, None) => None,
    };
    if let Some((name, from)) = named {
        let Some(attachment) = view.networks.iter().find(|a| a.name == name) else {
            notes.info(format!(
                "internal mode: network {name} ({from}) is not attached; nothing registers \
                 until it is connected"
            ));
            return None;
        };
        let Some(ip) = attachment.ip() else {
            notes.info(format!(
                "internal mode: network {name} ({from}) gives the container no IP address; \
                 nothing registers"
            ));
            return None;
        };
        notes.info(format!(
            "internal mode: using {ip} on network {name} ({from})"
        ));
        return Some((ip, format!("container IP on network {name} ({from})")));
    }
    let usable: Vec<(&str, IpAddr)> = view
        .networks
        .iter()
        .filter_map(|a| a.ip().map(|ip| (a.name.as_str(), ip)))
        .collect();
    match usable.as_slice() {
        [] => {
            notes.info("internal mode: the container has no network with an IP address");
            None
        }
        [(name, ip)] => {
            notes.info(format!(
                "internal mode: using {ip} on network {name} (its only network)"
            ));
            Some((
                *ip,
                format!("container IP on network {name} (its only network)"),
            ))
        }
        several => {
            let names: Vec<&str> = several.iter().map(|(n, _)| *n).collect();
            notes.warn(format!(
                "internal mode: the container is on several networks ({}); set label \
                 berth.network or --network to choose one; nothing registers",
                names.join(", ")
            ));
            None
        }
    }
}

/// When `b` is a wildcard binding of the other address family than the one registered, and
/// the same port also has a wildcard binding of the registered family, returns that one's
/// host port: `b` is then skipped. Docker publishes `-p 80` on both `0.0.0.0` and `::`, on
/// different host ports at times; registering the IPv6 wildcard's port at an IPv4 address (or
/// the reverse) would advertise a wrong endpoint.
fn wildcard_of_other_family(
    view: &ContainerView,
    b: &Binding,
    address: Option<&str>,
    settings: &Settings,
) -> Option<u16> {
    if b.host_ip.is_some() {
        return None;
    }
    let registered_v6 = match address.map(str::parse::<IpAddr>) {
        Some(Ok(ip)) => ip.is_ipv6(),
        Some(Err(_)) => return None, // a host name: either family may resolve
        None => settings.host_ip.is_ipv6(),
    };
    if b.v6_wildcard == registered_v6 {
        return None;
    }
    view.bindings
        .iter()
        .find(|o| o.private == b.private && o.host_ip.is_none() && o.v6_wildcard == registered_v6)
        .map(|o| o.host_port)
}
