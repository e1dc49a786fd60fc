//! `direct`: dial every candidate address of the peer over TCP and QUIC at once, closer
//! candidates first on a happy-eyeballs stagger. Works whenever the peer is reachable as it
//! stands: same machine, same LAN, a public host, or a forwarded port.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::FutureExt;

use super::rendezvous::Rendezvous;
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{quic, tls, LinkError, Transport};
use crate::net;
use crate::timing::{CANDIDATE_STAGGER, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT};

pub struct Direct;

/// Lower ranks are tried first: loopback (same machine; refused at once elsewhere), then
/// private networks (same LAN), then everything else.
fn rank(ip: IpAddr) -> u32 {
    match ip {
        ip if ip.is_loopback() => 0,
        IpAddr::V4(v4) if v4.is_private() => 1,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => 1,
        _ => 2,
    }
}

/// Whether this machine has any address of `ip`'s family (and, for non-loopback targets, a
/// non-loopback one), so attempts that cannot possibly leave are not planned.
fn reachable_family(ip: IpAddr, local: &LocalFacts) -> bool {
    local
        .interface_ips
        .iter()
        .any(|l| l.is_ipv4() == ip.is_ipv4() && (ip.is_loopback() || !l.is_loopback()))
}

/// Whether dialling the peer's address has a real chance, so signalling may wait for the punch
/// phase: a candidate on one of this machine's networks (same /24 or /64; a peer on this very
/// machine lists this machine's addresses too), a public IPv4 host, or a public candidate
/// behind a NAT whose facts say it filters nothing, or a port the peer mapped on its gateway.
/// Loopback candidates prove nothing: every
/// address carries them. A translated
/// candidate with unknown filtering, or an IPv6 address behind an unknown firewall, is no such
/// chance: most NATs and firewalls drop what was not asked for, so signalling starts at once.
pub fn likely_reachable(peer: &Address, local: &LocalFacts) -> bool {
    use crate::addr::CandidateKind;
    use crate::nat::{Behaviour, Family};
    let open = |family: Family| {
        peer.nat.iter().any(|f| {
            f.family == family
                && matches!(
                    f.filtering,
                    Behaviour::None | Behaviour::EndpointIndependent
                )
        })
    };
    peer.candidates.iter().any(|c| {
        let ip = c.addr.ip();
        let family = Family::of(ip);
        local.interface_ips.iter().any(|&l| same_network(l, ip))
            || match c.kind {
                CandidateKind::Local => match ip {
                    IpAddr::V4(_) => rank(ip) == 2 && !is_shared_v4(ip),
                    IpAddr::V6(_) => rank(ip) == 2 && open(family),
                },
                CandidateKind::Public => open(family),
                // The node holds a port mapping: the gateway lets anyone in there.
                CandidateKind::Mapped => true,
            }
    })
}

/// Whether `a` and `b` share an IPv4 /24 or an IPv6 /64 (a LAN, as far as can be told without
/// prefix lengths).
fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => !a.is_loopback() && a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            !a.is_loopback()
                && a.segments()[0] & 0xffc0 != 0xfe80
                && a.segments()[..4] == b.segments()[..4]
        }
        _ => false,
    }
}

/// Carrier-grade NAT space (100.64.0.0/10): an address behind another NAT.
fn is_shared_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
}

impl Strategy for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn phase(&self) -> Phase {
        Phase::Direct
    }

    fn plan(&self, peer: &Address, _: Option<&Rendezvous>, local: &LocalFacts) -> Vec<Attempt> {
        let mut remotes: Vec<SocketAddr> = peer
            .candidates
            .iter()
            .map(|c| c.addr)
            .filter(|a| a.port() != 0 && reachable_family(a.ip(), local))
            .collect();
        remotes.sort_by_key(|a| (rank(a.ip()), a.is_ipv6()));
        remotes.dedup();
        let mut attempts = Vec::new();
        // One candidate per stagger step: on loopback or a LAN the first usually wins before
        // the next starts, so a two-core machine is not busy with handshakes nobody needs.
        // QUIC goes one step behind TCP where TCP's extra round trip costs nothing and a second
        // handshake at once would only compete for the CPU (the same machine), and where this
        // network is known to drop UDP (still tried: the facts may be stale).
        for (slot, remote) in (0u32..).zip(remotes) {
            let quic_lag = u32::from(local.udp_blocked() || remote.ip().is_loopback());
            for (transport, lag) in [(Transport::Quic, quic_lag), (Transport::Tcp, 0)] {
                attempts.push(Attempt {
                    strategy: self.name(),
                    transport,
                    remote: Some(remote),
                    delay: CANDIDATE_STAGGER * (slot + lag),
                });
            }
        }
        attempts
    }

    fn run(&self, attempt: Attempt, ctx: Arc<Context>) -> LinkFuture {
        async move {
            let remote = attempt
                .remote
                .ok_or(LinkError::Protocol("a direct attempt needs an address"))?;
            match attempt.transport {
                Transport::Tcp => {
                    let tcp = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        tokio::net::TcpStream::connect(remote),
                    )
                    .await
                    .map_err(|_| LinkError::Timeout("TCP connect"))??;
                    tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        tls::connect(tcp, &ctx.creds, ctx.peer.key),
                    )
                    .await
                    .map_err(|_| LinkError::Timeout("TLS handshake"))?
                }
                Transport::Quic => {
                    let socket = net::bind_udp(net::any_addr_like(&remote))?;
                    let endpoint = quic::endpoint(socket, None)?;
                    tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        quic::connect(endpoint, true, remote, &ctx.creds, ctx.peer.key),
                    )
                    .await
                    .map_err(|_| LinkError::Timeout("QUIC handshake"))?
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::addr::{Candidate, CandidateKind};
    use crate::identity::Identity;

    fn peer(addrs: &[&str]) -> Address {
        let key = Identity::generate().public_key();
        let candidates = addrs
            .iter()
            .map(|a| Candidate {
                kind: CandidateKind::Local,
                addr: a.parse().unwrap(),
            })
            .collect();
        Address::new(key, candidates)
    }

    fn facts(ips: &[&str]) -> LocalFacts {
        LocalFacts {
            interface_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            nat: Vec::new(),
        }
    }

    #[test]
    fn plans_loopback_then_lan_then_public_both_transports() {
        let peer = peer(&["203.0.113.5:4000", "192.168.1.9:4000", "127.0.0.1:4000"]);
        let plan = Direct.plan(&peer, None, &facts(&["127.0.0.1", "192.168.1.2"]));
        let got: Vec<(String, Transport, Duration)> = plan
            .iter()
            .map(|a| (a.remote.unwrap().to_string(), a.transport, a.delay))
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            got,
            vec![
                // Same machine: TCP's extra round trip is free, QUIC follows a step later.
                ("127.0.0.1:4000".into(), Transport::Quic, ms(25)),
                ("127.0.0.1:4000".into(), Transport::Tcp, ms(0)),
                ("192.168.1.9:4000".into(), Transport::Quic, ms(25)),
                ("192.168.1.9:4000".into(), Transport::Tcp, ms(25)),
                ("203.0.113.5:4000".into(), Transport::Quic, ms(50)),
                ("203.0.113.5:4000".into(), Transport::Tcp, ms(50)),
            ]
        );
    }

    #[test]
    fn a_network_known_to_drop_udp_tries_tcp_first_and_quic_still() {
        use crate::nat::{AllocationKind, Behaviour, Family, NatFacts};
        let peer = peer(&["203.0.113.5:4000"]);
        let mut local = facts(&["192.168.1.2"]);
        local.nat.push(NatFacts {
            family: Family::Ipv4,
            mapping: Behaviour::Unknown,
            filtering: Behaviour::Unknown,
            allocation: AllocationKind::Unknown,
            udp_blocked: Some(true),
        });
        let plan = Direct.plan(&peer, None, &local);
        let got: Vec<(Transport, Duration)> = plan.iter().map(|a| (a.transport, a.delay)).collect();
        assert_eq!(
            got,
            vec![
                (Transport::Quic, CANDIDATE_STAGGER),
                (Transport::Tcp, Duration::ZERO)
            ]
        );
    }

    #[test]
    fn skips_families_this_machine_cannot_reach() {
        let peer = peer(&["[2001:db8::1]:4000", "[::1]:4000", "198.51.100.1:0"]);
        let plan = Direct.plan(&peer, None, &facts(&["127.0.0.1", "::1", "10.0.0.2"]));
        assert!(
            plan.iter()
                .all(|a| a.remote.unwrap().to_string() == "[::1]:4000"),
            "{plan:?}"
        );
        assert_eq!(plan.len(), 2);
    }

    #[test]
    fn direct_is_likely_on_this_machine_a_shared_network_or_an_open_host_only() {
        use crate::nat::{AllocationKind, Behaviour, Family, NatFacts};
        let here = facts(&["127.0.0.1", "192.168.1.2", "2001:db8:1::2"]);
        let behind_nat = |filtering| {
            let mut p = peer(&["192.168.7.2:4000", "[2001:db8:7::2]:4000"]);
            p.candidates.push(Candidate {
                kind: CandidateKind::Public,
                addr: "203.0.113.17:4000".parse().unwrap(),
            });
            p.nat.push(NatFacts {
                family: Family::Ipv4,
                mapping: Behaviour::EndpointIndependent,
                filtering,
                allocation: AllocationKind::Preserving,
                udp_blocked: Some(false),
            });
            p
        };
        // Behind a port-restricted NAT, but holding a port mapping (UPnP, NAT-PMP).
        let mapped = || {
            let mut p = behind_nat(Behaviour::AddressAndPortDependent);
            p.candidates.push(Candidate {
                kind: CandidateKind::Mapped,
                addr: "203.0.113.17:4001".parse().unwrap(),
            });
            p
        };
        let cases = [
            (peer(&["127.0.0.1:4000", "[::1]:4000"]), false),
            (peer(&["192.168.1.9:4000"]), true),
            (peer(&["[2001:db8:1::9]:4000"]), true),
            (peer(&["198.51.100.17:4000"]), true),
            (peer(&["100.64.3.2:4000"]), false),
            (peer(&["10.9.0.2:4000"]), false),
            (peer(&["[2001:db8:7::2]:4000"]), false),
            (behind_nat(Behaviour::AddressAndPortDependent), false),
            (behind_nat(Behaviour::Unknown), false),
            (behind_nat(Behaviour::EndpointIndependent), true),
            (mapped(), true),
        ];
        for (i, (peer, want)) in cases.iter().enumerate() {
            assert_eq!(
                likely_reachable(peer, &here),
                *want,
                "case {i}: {:?}",
                peer.candidates
            );
        }
    }
}
