//! NAT discovery: what the network in front of this machine does, per interface and address
//! family, found with STUN against the configured servers. This file is the report and the run
//! over the interfaces; per interface, `plan` says what to probe (plain data), `probe` sends
//! it on its sockets with [`crate::stun`]'s drivers, and `judge` turns what came back into the
//! report with [`crate::stun::classify`]'s rules.
//!
//! The plan, per interface (the source address the kernel picks towards the servers):
//!
//! 1. Phase A, at once: a binding from the main socket to every server of the family (public
//!    address, RTT, which server speaks RFC 5780), and a binding over TCP to each of them (works
//!    through UDP-blocking firewalls; tells "UDP blocked" from "nothing answers").
//! 2. Phase B, at once, only if some server answered over UDP:
//!    - filtering: a fresh socket that talks only to the RFC 5780 server's primary address asks
//!      for answers from its other port and from its other address and port;
//!    - then on the main socket the RFC 5780 mapping tests (the other address with the primary
//!      and the other port), then four fresh sockets opened one after another for the port
//!      allocation, then hairpinning (a fifth socket sends to the main socket's public address).
//!
//! Every step is bounded by the STUN retransmission schedule or its own timeout, so the whole
//! run is: about 1.3 s when servers answer (the negative filtering tests wait out their
//! schedule), at worst name resolution (1 s) + phase A (1.25 s) + phase B (1.6 s) ≈ 3.9 s,
//! under nat-info's default 5 s limit.

pub mod cache;
mod judge;
mod plan;
mod probe;
pub mod quick;
mod servers;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{HostPort, TurnServer};
use crate::nat::{Behaviour, Family, PortAllocation};
use crate::portmap::PortMapper;
use crate::stun::{Counter, StunError};
use crate::timing::{ALLOCATION_STAGGER, RESOLVE_TIMEOUT};

/// Version of the JSON document; bumped only when a field changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;
/// Fresh sockets opened for the port-allocation series, and the gap between their first sends
/// (so the NAT sees them in order).
const ALLOCATION_SOCKETS: usize = 4;

/// The document `nat-info --json` prints (schema in README.md, "nat-info --json").
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub elapsed_ms: u64,
    /// STUN packets sent, retransmissions included.
    pub stun_packets: u64,
    pub interfaces: Vec<InterfaceReport>,
    pub servers: Vec<ServerReport>,
}

/// What one interface and family sees.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceReport {
    pub family: Family,
    /// The socket the bindings were made from.
    pub local: SocketAddr,
    /// Distinct public (server-reflexive) addresses the servers reported over UDP; more than
    /// one means the servers disagree (address-dependent mapping or several NATs).
    pub public: Vec<SocketAddr>,
    /// The same over TCP (one connection per server, so the ports differ by nature).
    pub public_tcp: Vec<SocketAddr>,
    pub mapping: Behaviour,
    pub filtering: Behaviour,
    pub port_allocation: PortAllocation,
    pub hairpinning: Option<bool>,
    pub udp_blocked: Option<bool>,
    /// A server offered OTHER-ADDRESS, so the RFC 5780 tests ran.
    pub rfc5780: bool,
    /// The IPv4 default gateway asked for UPnP IGD and NAT-PMP (`null` for IPv6, or with no
    /// default route).
    pub gateway: Option<IpAddr>,
    pub upnp: Option<PortMapper>,
    pub nat_pmp: Option<PortMapper>,
}

/// Health of one configured server over one transport.
#[derive(Clone, Debug, Serialize)]
pub struct ServerReport {
    pub kind: &'static str,
    /// As configured.
    pub name: String,
    /// The address probed; `null` when the name did not resolve.
    pub addr: Option<SocketAddr>,
    pub transport: &'static str,
    pub reachable: bool,
    pub rtt_ms: Option<f64>,
    /// This machine's address as the server saw it.
    pub mapped: Option<SocketAddr>,
    /// TURN: the relayed address the allocation got (then released).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed: Option<SocketAddr>,
    pub error: Option<String>,
}

impl ServerReport {
    fn new(name: &str, addr: Option<SocketAddr>, transport: &'static str) -> Self {
        ServerReport {
            kind: "stun",
            name: name.to_string(),
            addr,
            transport,
            reachable: false,
            rtt_ms: None,
            mapped: None,
            relayed: None,
            error: None,
        }
    }

    fn with(mut self, outcome: &Result<(SocketAddr, Duration), StunError>) -> Self {
        match outcome {
            Ok((mapped, rtt)) => {
                self.reachable = true;
                self.mapped = Some(*mapped);
                self.rtt_ms = Some((rtt.as_secs_f64() * 10_000.0).round() / 10.0);
            }
            Err(e) => self.error = Some(e.to_string()),
        }
        self
    }
}

/// A configured server resolved to one address.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    addr: SocketAddr,
}

/// The servers to check beside the STUN probes.
pub struct Infrastructure<'a> {
    pub turn: &'a [TurnServer],
    pub brokers: &'a [HostPort],
    pub registries: &'a [String],
}

/// Runs the whole discovery against the STUN `servers`, and checks the other servers beside it.
pub async fn discover(servers: &[HostPort], others: Infrastructure<'_>) -> Report {
    let started = Instant::now();
    let counter = Counter::default();
    let (mut report, turn_reports, broker_reports, registry_reports) = tokio::join!(
        discover_stun(servers, &counter),
        futures_util::future::join_all(
            others.turn.iter().map(|t| servers::check_turn(t, &counter))
        ),
        futures_util::future::join_all(others.brokers.iter().map(servers::check_broker)),
        futures_util::future::join_all(
            others.registries.iter().map(|r| servers::check_registry(r))
        )
    );
    report.servers.extend(turn_reports.into_iter().flatten());
    report.servers.extend(broker_reports);
    report.servers.extend(registry_reports);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.stun_packets = counter.get();
    report
}

async fn discover_stun(servers: &[HostPort], counter: &Counter) -> Report {
    let started = Instant::now();
    let mut reports = Vec::new();
    let mut targets = Vec::new();
    let resolved = futures_util::future::join_all(servers.iter().map(resolve)).await;
    for (server, r) in servers.iter().zip(resolved) {
        match r {
            Ok(addrs) => targets.extend(addrs.into_iter().map(|addr| Target {
                name: server.to_string(),
                addr,
            })),
            Err(e) => {
                let mut rep = ServerReport::new(&server.to_string(), None, "udp");
                rep.error = Some(e);
                reports.push(rep);
            }
        }
    }
    // Group the targets by the local address the kernel would use towards them.
    let mut groups: Vec<(IpAddr, Vec<Target>)> = Vec::new();
    for t in targets {
        match crate::net::route_source(t.addr) {
            Some(ip) => match groups.iter_mut().find(|(g, _)| *g == ip) {
                Some((_, list)) => list.push(t),
                None => groups.push((ip, vec![t])),
            },
            None => {
                let mut rep = ServerReport::new(&t.name, Some(t.addr), "udp");
                rep.error = Some("no route from this machine".into());
                reports.push(rep);
            }
        }
    }
    let probed = futures_util::future::join_all(
        groups
            .iter()
            .map(|(ip, targets)| probe::probe_interface(*ip, targets, counter)),
    )
    .await;
    let mut interfaces = Vec::new();
    for r in probed {
        match r {
            Ok((iface, servers)) => {
                interfaces.push(iface);
                reports.extend(servers);
            }
            Err((servers, _)) => reports.extend(servers),
        }
    }
    Report {
        version: REPORT_VERSION,
        elapsed_ms: started.elapsed().as_millis() as u64,
        stun_packets: counter.get(),
        interfaces,
        servers: reports,
    }
}

/// The first IPv4 address of each server, for at most `max` servers that resolve.
pub async fn resolve_v4(servers: &[HostPort], max: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for server in servers {
        if out.len() == max {
            break;
        }
        if let Ok(addrs) = resolve(server).await {
            out.extend(addrs.into_iter().filter(SocketAddr::is_ipv4).take(1));
        }
    }
    out
}

/// A server's addresses, one per family (an IP literal needs no lookup).
pub async fn resolve(server: &HostPort) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = server.host.parse::<IpAddr>() {
        return Ok(vec![(ip, server.port).into()]);
    }
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => {
            let mut list: Vec<SocketAddr> = Vec::new();
            for a in addrs {
                // One address per family is enough to probe.
                if !list.iter().any(|l| l.is_ipv4() == a.is_ipv4()) {
                    list.push(a);
                }
            }
            if list.is_empty() {
                Err("the name has no addresses".into())
            } else {
                Ok(list)
            }
        }
        Ok(Err(e)) => Err(format!("cannot resolve: {e}")),
        Err(_) => Err(format!(
            "cannot resolve: no answer within {} ms",
            RESOLVE_TIMEOUT.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_server_is_reported_without_hanging() {
        // A silent server on loopback: nothing answers over UDP, TCP is refused.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let servers = [HostPort {
            host: "127.0.0.1".into(),
            port: addr.port(),
        }];
        let started = Instant::now();
        let report = discover(
            &servers,
            Infrastructure {
                turn: &[],
                brokers: &[],
                registries: &[],
            },
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(3));
        let udp = report
            .servers
            .iter()
            .find(|s| s.addr == Some(addr) && s.transport == "udp")
            .unwrap();
        assert!(!udp.reachable);
        assert!(
            udp.error.as_deref().unwrap().contains("no answer"),
            "{udp:?}"
        );
        let tcp = report
            .servers
            .iter()
            .find(|s| s.transport == "tcp")
            .unwrap();
        assert!(!tcp.reachable && tcp.error.is_some(), "{tcp:?}");
        let iface = &report.interfaces[0];
        assert_eq!(iface.mapping, Behaviour::Unknown);
        assert_eq!(iface.udp_blocked, None);
        // Three UDP transmissions; the refused TCP connection carried none.
        assert_eq!(report.stun_packets, 3);
    }
}
