//! The quick look `addr` and `listen` take: from a UDP socket on the listen port, bindings to
//! up to two STUN servers (at most half a second). It gives that port's public candidate when
//! the mapping does not depend on the destination (so peers can use it), and the mapping
//! behaviour for the address when `nat-info` left no fuller facts in the cache.

use std::net::{Ipv4Addr, SocketAddr};

use crate::config::HostPort;
use crate::nat::{AllocationKind, Behaviour, Family, NatFacts};
use crate::stun::classify::{self, Observation};
use crate::stun::{udp, Change, Counter, Timing};

/// What the quick look found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quick {
    /// The local UDP port looked from (0: no look was taken).
    pub port: u16,
    /// The port's public address, when the NAT maps it the same way for every destination.
    pub public: Option<SocketAddr>,
    /// IPv4 facts: the mapping; filtering and allocation are left unknown.
    pub facts: Option<NatFacts>,
}

/// Looks from UDP `port`, or from a free port when it is 0 (nothing, if the port is taken: a
/// listener already owns it). The socket is closed afterwards; a listener that binds the same
/// port next gets the same mapping from an endpoint-independent NAT.
pub async fn probe(port: u16, servers: &[HostPort]) -> Quick {
    let Ok(socket) = crate::net::bind_udp((Ipv4Addr::UNSPECIFIED, port).into()) else {
        return Quick::default();
    };
    let Ok(port) = socket.local_addr().map(|a| a.port()) else {
        return Quick::default();
    };
    let socket = match socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(socket))
    {
        Ok(s) => s,
        Err(_) => return Quick::default(),
    };
    let targets = super::resolve_v4(servers, 2).await;
    let probes: Vec<udp::Probe> = targets
        .iter()
        .map(|&to| udp::Probe {
            to,
            change: Change::NONE,
        })
        .collect();
    let results = udp::run(&socket, &probes, Timing::BRIEF, &Counter::default()).await;
    let observations: Vec<Observation> = results
        .iter()
        .filter_map(|r| {
            let mapped = r.outcome.as_ref().ok()?.mapped;
            Some(Observation {
                to: r.probe.to,
                mapped,
            })
        })
        .collect();
    let Some(first) = observations.first() else {
        return Quick {
            port,
            ..Quick::default()
        };
    };
    let local_ip = crate::net::route_source(first.to).unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    let local = SocketAddr::new(local_ip, port);
    let mapping = classify::mapping(local, &observations);
    let agree = observations.iter().all(|o| o.mapped == first.mapped);
    judge(port, first.mapped, agree, mapping)
}

/// The candidate and facts from the first mapping seen, whether every server saw the same one,
/// and the mapping behaviour. A translated mapping every server agrees on is a candidate (one
/// server alone cannot prove it holds for everyone, but a candidate that fails costs one
/// attempt); a mapping that changed with the destination is of no use to a peer.
fn judge(port: u16, mapped: SocketAddr, agree: bool, mapping: Behaviour) -> Quick {
    Quick {
        port,
        public: (agree && mapping != Behaviour::None).then_some(mapped),
        facts: Some(NatFacts {
            family: Family::Ipv4,
            mapping,
            filtering: Behaviour::Unknown,
            allocation: AllocationKind::Unknown,
            udp_blocked: Some(false),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_translated_mapping_the_servers_agree_on_is_a_candidate() {
        let mapped: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let eim = Behaviour::EndpointIndependent;
        assert_eq!(judge(1, mapped, true, eim).public, Some(mapped));
        // One server: the behaviour is unknown, the candidate still worth a try.
        assert_eq!(
            judge(1, mapped, true, Behaviour::Unknown).public,
            Some(mapped)
        );
        // Servers that saw different mappings, or no translation at all: no candidate.
        assert_eq!(judge(1, mapped, false, Behaviour::Unknown).public, None);
        assert_eq!(judge(1, mapped, true, Behaviour::None).public, None);
        let quick = judge(1, mapped, false, Behaviour::AddressAndPortDependent);
        assert_eq!(
            quick.facts.map(|f| f.mapping),
            Some(Behaviour::AddressAndPortDependent)
        );
    }
}
