//! Port mapping on the home router. For `nat-info`: whether the IPv4 default gateway speaks UPnP
//! IGD or NAT-PMP and the external address it reports ([`upnp()`], [`natpmp()`]). For `listen`:
//! a [`PortMap`] that maps the listen port (UDP and TCP) with whichever protocol answers first
//! (PCP, else NAT-PMP, beside UPnP IGD), opens an IPv6 firewall pinhole for it with PCP where
//! the IPv6 gateway speaks it, renews both and deletes them on exit. The gateway is always
//! asked by unicast, never multicast, and every wait is bounded.
//!
//! One file per concern: [`natpmp`](mod@natpmp) (RFC 6886 codec and client, and the
//! retransmission PCP shares), [`pcp`] (RFC 6887 MAP codec and client), [`upnp`](mod@upnp)
//! (igd-next), [`lease`] (the renewal schedule, pure), [`keeper`] (the task that maps, renews,
//! deletes). Neighbours: [`crate::discovery`] puts the nat-info results in the report;
//! `cli::listen` runs the keeper.

pub mod keeper;
pub mod lease;
pub mod natpmp;
pub mod pcp;
pub mod upnp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

pub use keeper::PortMap;
pub use natpmp::{natpmp, natpmp_request, parse_natpmp_response};
pub use upnp::upnp;

/// The transport a mapping is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

/// What one protocol found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortMapper {
    /// The router answers this protocol.
    pub available: bool,
    /// The router's external address, as it reports it.
    pub external: Option<IpAddr>,
    /// Why not, when it is not available.
    pub error: Option<String>,
}

impl PortMapper {
    fn failed(error: impl Into<String>) -> Self {
        PortMapper {
            available: false,
            external: None,
            error: Some(error.into()),
        }
    }
}

/// The IPv4 default gateway, from `/proc/net/route` (Linux); `None` elsewhere or without one.
pub fn default_gateway_v4() -> Option<Ipv4Addr> {
    parse_proc_net_route(&std::fs::read_to_string("/proc/net/route").ok()?)
}

/// The IPv6 default gateway and the interface it is on, from `/proc/net/ipv6_route` (Linux);
/// `None` elsewhere or without one.
pub fn default_gateway_v6() -> Option<(Ipv6Addr, String)> {
    parse_proc_net_ipv6_route(&std::fs::read_to_string("/proc/net/ipv6_route").ok()?)
}

/// The next hop and interface of the first default route (`::/0` via a router) in the text of
/// `/proc/net/ipv6_route`.
pub fn parse_proc_net_ipv6_route(text: &str) -> Option<(Ipv6Addr, String)> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, prefix, next_hop, iface) = (f.first()?, f.get(1)?, f.get(4)?, f.get(9)?);
        if *prefix != "00" || dest.chars().any(|c| c != '0') {
            return None;
        }
        let hop = Ipv6Addr::from(u128::from_str_radix(next_hop, 16).ok()?);
        (!hop.is_unspecified()).then(|| (hop, iface.to_string()))
    })
}

/// The gateway of the first default route in the text of `/proc/net/route`.
pub fn parse_proc_net_route(text: &str) -> Option<Ipv4Addr> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gateway) = (f.get(1)?, f.get(2)?);
        if *dest != "00000000" {
            return None;
        }
        // Host byte order as printed by the kernel: little-endian on the machines we run on.
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        let ip = Ipv4Addr::from(raw.to_le_bytes());
        (!ip.is_unspecified()).then_some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_gateway() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t0011A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                    eth0\t00000000\t0111A8C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(
            parse_proc_net_route(text),
            Some(Ipv4Addr::new(192, 168, 17, 1))
        );
        assert_eq!(parse_proc_net_route("Iface\n"), None);
        assert_eq!(parse_proc_net_route("garbage"), None);
        assert_eq!(parse_proc_net_route("h\nx 00000000 zz\n"), None);
    }

    #[test]
    fn default_route_gateway_v6() {
        let text = "20010db8001100000000000000000000 40 00000000000000000000000000000000 00 \
                    00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                    fe800000000000000000000000000001 00000400 00000003 00000000 00000003 eth0\n";
        assert_eq!(
            parse_proc_net_ipv6_route(text),
            Some(("fe80::1".parse().unwrap(), "eth0".to_string()))
        );
        // Unreachable default routes (no next hop) and garbage are no gateway.
        let unreachable = "00000000000000000000000000000000 00 00000000000000000000000000000000 \
                           00 00000000000000000000000000000000 ffffffff 00000001 00000000 \
                           00200200 lo\n";
        assert_eq!(parse_proc_net_ipv6_route(unreachable), None);
        assert_eq!(parse_proc_net_ipv6_route("garbage\n"), None);
        assert_eq!(parse_proc_net_ipv6_route(""), None);
    }
}
