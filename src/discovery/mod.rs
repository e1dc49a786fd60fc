//! NAT discovery: what the network in front of this machine does, per interface and address
//! family, found with STUN against the configured servers. This file is the probe plan and the
//! report; the wire work is [`crate::stun`]'s drivers and the judging is
//! [`crate::stun::classify`]'s pure functions.
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
pub mod quick;
mod servers;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;

use crate::config::{HostPort, TurnServer};
use crate::nat::Family;
use crate::nat::{AllocationKind, Behaviour, PortAllocation};
use crate::portmap::{self, PortMapper};
use crate::stun::classify::{self, FilterTests, Observation};
use crate::stun::udp::{self, Probe, ProbeResult};
use crate::stun::{tcp, Change, Counter, StunError, Timing};

/// Version of the JSON document; bumped only when a field changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;
/// How long resolving one server's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long one STUN-over-TCP binding (connect included) may take.
const TCP_TIMEOUT: Duration = Duration::from_millis(1250);
/// Phase B's budget for the chain of mapping tests, allocation series and hairpinning: the
/// filtering tests' schedule plus a little; under loss the tail of the chain is cut short.
const PHASE_B_BUDGET: Duration = Duration::from_millis(1600);
/// How long to wait for a hairpinned packet.
const HAIRPIN_WAIT: Duration = Duration::from_millis(400);
/// How long a TURN allocation may take.
const TURN_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long an MQTT broker's connect and publish-to-self round trip may take.
const MQTT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the UPnP search (and then the external-address request) may take.
const UPNP_TIMEOUT: Duration = Duration::from_millis(1000);
/// Fresh sockets opened for the port-allocation series, and the gap between their first sends
/// (so the NAT sees them in order).
const ALLOCATION_SOCKETS: usize = 4;
const ALLOCATION_STAGGER: Duration = Duration::from_millis(10);

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
            .map(|(ip, targets)| probe_interface(*ip, targets, counter)),
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

type InterfaceOutcome = Result<(InterfaceReport, Vec<ServerReport>), (Vec<ServerReport>, String)>;

async fn bind(ip: IpAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind((ip, 0)).await
}

/// STUN phases A and B for the servers reached from local address `ip`, and beside them the
/// port-mapping protocols of the IPv4 gateway.
async fn probe_interface(ip: IpAddr, targets: &[Target], counter: &Counter) -> InterfaceOutcome {
    let gateway = match ip {
        IpAddr::V4(v4) if !v4.is_loopback() => portmap::default_gateway_v4().map(|g| (v4, g)),
        _ => None,
    };
    let portmaps = async {
        match gateway {
            Some((local, gw)) => {
                let (u, n) = tokio::join!(
                    portmap::upnp(local, gw, UPNP_TIMEOUT),
                    portmap::natpmp(local, gw)
                );
                (Some(u), Some(n))
            }
            None => (None, None),
        }
    };
    let (stun, (upnp, nat_pmp)) = tokio::join!(probe_stun(ip, targets, counter), portmaps);
    stun.map(|(mut iface, servers)| {
        iface.gateway = gateway.map(|(_, g)| g.into());
        iface.upnp = upnp;
        iface.nat_pmp = nat_pmp;
        (iface, servers)
    })
}

async fn probe_stun(ip: IpAddr, targets: &[Target], counter: &Counter) -> InterfaceOutcome {
    let timing = Timing::QUICK;
    let fail = |e: std::io::Error| {
        let reports = targets
            .iter()
            .map(|t| {
                let mut r = ServerReport::new(&t.name, Some(t.addr), "udp");
                r.error = Some(format!("cannot bind a socket on {ip}: {e}"));
                r
            })
            .collect();
        (reports, e.to_string())
    };
    let main = bind(ip).await.map_err(fail)?;
    let local = main.local_addr().map_err(fail)?;

    // Phase A.
    let plain: Vec<Probe> = targets
        .iter()
        .map(|t| Probe {
            to: t.addr,
            change: Change::NONE,
        })
        .collect();
    let tcp_all = futures_util::future::join_all(
        targets
            .iter()
            .map(|t| tcp::binding(t.addr, TCP_TIMEOUT, counter)),
    );
    let (phase_a, tcp_results) = tokio::join!(udp::run(&main, &plain, timing, counter), tcp_all);

    let mut reports = Vec::new();
    for (t, r) in targets.iter().zip(&phase_a) {
        let outcome = match &r.outcome {
            Ok(b) => Ok((b.mapped, r.rtt.unwrap_or_default())),
            Err(e) => Err(e.clone()),
        };
        reports.push(ServerReport::new(&t.name, Some(t.addr), "udp").with(&outcome));
    }
    for (t, r) in targets.iter().zip(&tcp_results) {
        let outcome = r
            .as_ref()
            .map(|(b, rtt)| (b.mapped, *rtt))
            .map_err(Clone::clone);
        reports.push(ServerReport::new(&t.name, Some(t.addr), "tcp").with(&outcome));
    }

    let answered: Vec<&ProbeResult> = phase_a.iter().filter(|r| r.outcome.is_ok()).collect();
    let mut observations: Vec<Observation> = answered
        .iter()
        .filter_map(|r| {
            r.outcome.as_ref().ok().map(|b| Observation {
                to: r.probe.to,
                mapped: b.mapped,
            })
        })
        .collect();
    let public = distinct(observations.iter().map(|o| o.mapped));
    let public_tcp = distinct(
        tcp_results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|(b, _)| b.mapped)),
    );
    // The server for the RFC 5780 tests: the first that named an alternate address of its own
    // family on another IP and port.
    let rfc5780 = answered.iter().find_map(|r| {
        let b = r.outcome.as_ref().ok()?;
        let other = b.other?;
        (other.is_ipv4() == r.probe.to.is_ipv4()
            && other.ip() != r.probe.to.ip()
            && other.port() != r.probe.to.port())
        .then_some((r.probe.to, other))
    });
    // Anything that answered at all, for the allocation series and hairpinning.
    let reference = answered.first().map(|r| r.probe.to);

    let mut filter_tests = FilterTests::default();
    let mut allocation = PortAllocation {
        kind: AllocationKind::Unknown,
        delta: None,
    };
    let mut hairpinning = None;
    if let Some(reference) = reference {
        let filter = async {
            let Some((primary, _)) = rfc5780 else {
                return Ok(FilterTests::default());
            };
            let socket = bind(ip).await?;
            let probes = [Change::NONE, Change::PORT, Change::IP_AND_PORT].map(|change| Probe {
                to: primary,
                change,
            });
            let r = udp::run(&socket, &probes, timing, counter).await;
            Ok::<_, std::io::Error>(FilterTests {
                plain: Some(r[0].outcome.is_ok()),
                change_port: changed(&r[1], Change::PORT),
                change_ip_port: changed(&r[2], Change::IP_AND_PORT),
            })
        };
        let phase_b_end = tokio::time::Instant::now() + PHASE_B_BUDGET;
        let chain = async {
            if let Some((primary, other)) = rfc5780 {
                let probes = [
                    Probe {
                        to: SocketAddr::new(other.ip(), primary.port()),
                        change: Change::NONE,
                    },
                    Probe {
                        to: other,
                        change: Change::NONE,
                    },
                ];
                for r in udp::run(&main, &probes, timing, counter).await {
                    if let Ok(b) = r.outcome {
                        observations.push(Observation {
                            to: r.probe.to,
                            mapped: b.mapped,
                        });
                    }
                }
            }
            // The mapping tests can take a whole schedule under loss; what follows gets only
            // the rest of phase B's budget, so the run stays bounded (unknown, not late).
            let left = || phase_b_end.saturating_duration_since(tokio::time::Instant::now());
            let allocation =
                tokio::time::timeout(left(), port_allocation(ip, reference, timing, counter))
                    .await
                    .unwrap_or(PortAllocation {
                        kind: AllocationKind::Unknown,
                        delta: None,
                    });
            let wait = HAIRPIN_WAIT.min(left());
            let hairpin = match public.first() {
                Some(target) if !wait.is_zero() => match bind(ip).await {
                    Ok(from) => udp::hairpin(&main, &from, *target, wait, counter)
                        .await
                        .ok(),
                    Err(_) => None,
                },
                _ => None,
            };
            (allocation, hairpin)
        };
        let (filter, (alloc, hairpin)) = tokio::join!(filter, chain);
        filter_tests = filter.unwrap_or_default();
        allocation = alloc;
        hairpinning = hairpin;
    }

    let mapping = classify::mapping(local, &observations);
    let iface = InterfaceReport {
        family: Family::of(ip),
        local,
        public,
        public_tcp,
        mapping,
        filtering: classify::filtering(mapping, filter_tests),
        port_allocation: allocation,
        hairpinning,
        udp_blocked: classify::udp_blocked(
            !answered.is_empty(),
            tcp_results.iter().any(|r| r.is_ok()),
        ),
        rfc5780: rfc5780.is_some(),
        gateway: None,
        upnp: None,
        nat_pmp: None,
    };
    Ok((iface, reports))
}

/// Whether an answer asked to come from elsewhere did: `Some(true)` it came from a changed
/// source, `Some(false)` nothing came, `None` the server refused or ignored the change.
fn changed(r: &ProbeResult, change: Change) -> Option<bool> {
    match (&r.outcome, r.from) {
        (Ok(_), Some(from)) => {
            let ip_ok = !change.ip || from.ip() != r.probe.to.ip();
            let port_ok = !change.port || from.port() != r.probe.to.port();
            (ip_ok && port_ok).then_some(true)
        }
        (Err(StunError::Timeout(_)), _) => Some(false),
        _ => None,
    }
}

/// Mapped ports of fresh sockets opened one after another, judged by [`classify`].
async fn port_allocation(
    ip: IpAddr,
    server: SocketAddr,
    timing: Timing,
    counter: &Counter,
) -> PortAllocation {
    let series = (0..ALLOCATION_SOCKETS).map(|i| async move {
        tokio::time::sleep(ALLOCATION_STAGGER * i as u32).await;
        let socket = bind(ip).await.ok()?;
        let local = socket.local_addr().ok()?.port();
        let probe = [Probe {
            to: server,
            change: Change::NONE,
        }];
        let r = udp::run(&socket, &probe, timing, counter).await;
        let mapped = r.first()?.outcome.as_ref().ok()?.mapped.port();
        Some((local, mapped))
    });
    let samples: Option<Vec<(u16, u16)>> = futures_util::future::join_all(series)
        .await
        .into_iter()
        .collect();
    classify::port_allocation(&samples.unwrap_or_default())
}

fn distinct(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(to: &str, outcome: Result<&str, StunError>, from: Option<&str>) -> ProbeResult {
        ProbeResult {
            probe: Probe {
                to: to.parse().unwrap(),
                change: Change::NONE,
            },
            outcome: outcome.map(|m| crate::stun::Binding {
                mapped: m.parse().unwrap(),
                other: None,
                origin: None,
            }),
            rtt: None,
            from: from.map(|f| f.parse().unwrap()),
        }
    }

    #[test]
    fn a_change_counts_only_when_the_source_really_changed() {
        let to = "198.51.100.1:3478";
        let m = "203.0.113.9:1000";
        let ok = |from| result(to, Ok(m), Some(from));
        assert_eq!(
            changed(&ok("198.51.100.2:3479"), Change::IP_AND_PORT),
            Some(true)
        );
        assert_eq!(changed(&ok("198.51.100.1:3479"), Change::PORT), Some(true));
        // A server that ignores CHANGE-REQUEST answers from where it was asked.
        assert_eq!(changed(&ok(to), Change::IP_AND_PORT), None);
        assert_eq!(changed(&ok("198.51.100.1:3479"), Change::IP_AND_PORT), None);
        let timed_out = result(to, Err(StunError::Timeout(1250)), None);
        assert_eq!(changed(&timed_out, Change::PORT), Some(false));
        let refused = result(
            to,
            Err(StunError::Rejected {
                code: 420,
                reason: String::new(),
            }),
            None,
        );
        assert_eq!(changed(&refused, Change::PORT), None);
    }

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
