//! Host IP detection, used when neither `--host-ip` nor a specific binding address is given.
//!
//! Order: the IPv4 address of the interface that carries the default route (from
//! `/proc/net/route`), else the first global IPv4 on a non-container interface, else
//! 127.0.0.1. No packet is sent.

use std::net::{IpAddr, Ipv4Addr};

/// Returns the address and how it was found, for the startup log.
pub fn detect() -> (IpAddr, &'static str) {
    let ifaces = if_addrs::get_if_addrs().unwrap_or_default();
    let v4 = |name: &str| {
        ifaces.iter().find_map(|i| match i.ip() {
            IpAddr::V4(ip) if i.name == name && !ip.is_loopback() => Some(IpAddr::V4(ip)),
            _ => None,
        })
    };
    if let Some(iface) = std::fs::read_to_string("/proc/net/route")
        .ok()
        .as_deref()
        .and_then(default_route_interface)
        && let Some(ip) = v4(&iface)
    {
        return (ip, "default-route interface");
    }
    let fallback = ifaces.iter().find_map(|i| match i.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !is_container_interface(&i.name) => {
            Some(IpAddr::V4(ip))
        }
        _ => None,
    });
    match fallback {
        Some(ip) => (ip, "first non-container interface"),
        None => (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "no usable interface; loopback",
        ),
    }
}

fn is_container_interface(name: &str) -> bool {
    [
        "docker", "br-", "veth", "cni", "flannel", "cali", "weave", "virbr",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// The interface of the default route in `/proc/net/route` text.
fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let iface = cols.next()?;
        let destination = cols.next()?;
        (destination == "00000000").then(|| iface.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route_interface() {
        let table = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n\
                     eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn container_interfaces_are_skipped() {
        assert!(is_container_interface("docker0"));
        assert!(is_container_interface("br-1234"));
        assert!(is_container_interface("veth99"));
        assert!(!is_container_interface("eth0"));
        assert!(!is_container_interface("ens3"));
    }

    #[test]
    fn detect_returns_a_non_unspecified_address() {
        let (ip, _) = detect();
        assert!(!ip.is_unspecified());
    }
}
