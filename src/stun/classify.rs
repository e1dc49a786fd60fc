//! NAT classification from probe results: plain data in, RFC 4787 behaviours out. No sockets, no
//! clock, so every rule is unit-tested on tables of observations.
//!
//! - Mapping (RFC 5780 §4.3, generalised): every binding the main socket made is an
//!   [`Observation`] (destination, mapped address). Destinations that differ in IP tell address
//!   dependence; destinations with the same IP and different ports tell port dependence. With an
//!   RFC 5780 server the destinations are its primary and OTHER-ADDRESS; without one, the
//!   configured servers are compared. When the observations cannot separate the cases the answer
//!   is `unknown`, never a guess.
//! - Filtering (RFC 5780 §4.4): on a socket that only ever talked to the primary address, whether
//!   answers sent from another IP and port, and from another port, came through.
//! - Port allocation: mapped ports of fresh sockets in the order they were opened.

use std::net::SocketAddr;

use crate::nat::{AllocationKind, Behaviour, PortAllocation};

/// One binding made from the main socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    pub to: SocketAddr,
    pub mapped: SocketAddr,
}

/// Mapping behaviour of the socket bound to `local`, from the bindings it made.
pub fn mapping(local: SocketAddr, obs: &[Observation]) -> Behaviour {
    if obs.is_empty() {
        return Behaviour::Unknown;
    }
    if obs.iter().all(|o| o.mapped == local) {
        return Behaviour::None;
    }
    let pairs = || {
        obs.iter()
            .enumerate()
            .flat_map(move |(i, a)| obs[i + 1..].iter().map(move |b| (a, b)))
    };
    let other_ip = pairs().filter(|(a, b)| a.to.ip() != b.to.ip());
    let mut saw_other_ip = false;
    let mut varies_by_ip = false;
    for (a, b) in other_ip {
        saw_other_ip = true;
        varies_by_ip |= a.mapped != b.mapped;
    }
    if !saw_other_ip {
        return Behaviour::Unknown;
    }
    if !varies_by_ip {
        // The same mapping towards different addresses (and, with them, ports).
        return if pairs().all(|(a, b)| a.mapped == b.mapped) {
            Behaviour::EndpointIndependent
        } else {
            Behaviour::AddressAndPortDependent
        };
    }
    let mut saw_other_port = false;
    let mut varies_by_port = false;
    for (a, b) in pairs().filter(|(a, b)| a.to.ip() == b.to.ip() && a.to.port() != b.to.port()) {
        saw_other_port = true;
        varies_by_port |= a.mapped != b.mapped;
    }
    match (saw_other_port, varies_by_port) {
        (false, _) => Behaviour::Unknown,
        (true, false) => Behaviour::AddressDependent,
        (true, true) => Behaviour::AddressAndPortDependent,
    }
}

/// Outcome of one filtering test: `Some(true)` an answer arrived, `Some(false)` none did before
/// the timeout, `None` the test could not be run (no RFC 5780 server, or it refused).
pub type Answered = Option<bool>;

/// The RFC 5780 filtering tests, all on one socket that talked only to the primary address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterTests {
    /// A plain binding to the primary address (proves the path works).
    pub plain: Answered,
    /// Answer asked for from the alternate port (same IP).
    pub change_port: Answered,
    /// Answer asked for from the alternate IP and port.
    pub change_ip_port: Answered,
}

/// Filtering behaviour, given the mapping behaviour found for the same family.
pub fn filtering(mapping: Behaviour, t: FilterTests) -> Behaviour {
    if t.plain != Some(true) {
        return Behaviour::Unknown;
    }
    match (t.change_ip_port, t.change_port) {
        (Some(true), _) if mapping == Behaviour::None => Behaviour::None,
        (Some(true), _) => Behaviour::EndpointIndependent,
        (Some(false), Some(true)) => Behaviour::AddressDependent,
        (Some(false), Some(false)) => Behaviour::AddressAndPortDependent,
        _ => Behaviour::Unknown,
    }
}

/// Largest step still called sequential; beyond it consecutive ports look random.
const MAX_SEQUENTIAL_DELTA: i32 = 16;
/// Fewest samples the allocation is judged from.
pub const MIN_ALLOCATION_SAMPLES: usize = 3;

/// Port allocation from `(local port, mapped port)` of fresh sockets, in the order they sent
/// their first packet.
pub fn port_allocation(samples: &[(u16, u16)]) -> PortAllocation {
    let of = |kind, delta| PortAllocation { kind, delta };
    if samples.len() < MIN_ALLOCATION_SAMPLES {
        return of(AllocationKind::Unknown, None);
    }
    if samples.iter().all(|(local, mapped)| local == mapped) {
        return of(AllocationKind::Preserving, None);
    }
    let deltas: Vec<i32> = samples
        .windows(2)
        .map(|w| i32::from(w[1].1) - i32::from(w[0].1))
        .collect();
    let first = deltas[0];
    if first != 0 && first.abs() <= MAX_SEQUENTIAL_DELTA && deltas.iter().all(|d| *d == first) {
        of(AllocationKind::Sequential, Some(first))
    } else {
        of(AllocationKind::Random, None)
    }
}

/// Whether UDP is blocked: UDP got no answer at all while TCP to the same servers did. `None`
/// when nothing answered either way (no way to tell a dead network from a blocked one).
pub fn udp_blocked(udp_answered: bool, tcp_answered: bool) -> Option<bool> {
    match (udp_answered, tcp_answered) {
        (true, _) => Some(false),
        (false, true) => Some(true),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Behaviour::*;

    const LOCAL: &str = "192.168.7.2:40000";
    const A1: &str = "198.51.100.1:3478";
    const A2: &str = "198.51.100.1:3479";
    const B1: &str = "198.51.100.2:3478";
    const B2: &str = "198.51.100.2:3479";

    fn obs(list: &[(&str, &str)]) -> Vec<Observation> {
        list.iter()
            .map(|(to, mapped)| Observation {
                to: to.parse().unwrap(),
                mapped: mapped.parse().unwrap(),
            })
            .collect()
    }

    fn m(list: &[(&str, &str)]) -> Behaviour {
        mapping(LOCAL.parse().unwrap(), &obs(list))
    }

    #[test]
    fn rfc5780_mapping_tests() {
        let p = "203.0.113.17:40000";
        let q = "203.0.113.17:51000";
        let r = "203.0.113.17:52000";
        // Test I, II (other IP), III (other IP and port).
        assert_eq!(m(&[(A1, p), (B1, p), (B2, p)]), EndpointIndependent);
        assert_eq!(m(&[(A1, p), (B1, q), (B2, q)]), AddressDependent);
        assert_eq!(m(&[(A1, p), (B1, q), (B2, r)]), AddressAndPortDependent);
        assert_eq!(m(&[(A1, LOCAL), (B1, LOCAL), (B2, LOCAL)]), None);
    }

    #[test]
    fn comparing_plain_servers() {
        let p = "203.0.113.17:40000";
        let q = "203.0.113.17:51000";
        // Two servers on different IPs agree: endpoint-independent.
        assert_eq!(m(&[(A1, p), (B1, p)]), EndpointIndependent);
        // They disagree but nothing tells port dependence apart: unknown, not a guess.
        assert_eq!(m(&[(A1, p), (B2, q)]), Unknown);
        // Same IP, other port changes the mapping too.
        assert_eq!(m(&[(A1, p), (A2, q), (B1, q)]), AddressAndPortDependent);
        // Only one server, or only one IP: unknown.
        assert_eq!(m(&[(A1, p)]), Unknown);
        assert_eq!(m(&[(A1, p), (A2, p)]), Unknown);
        assert_eq!(m(&[]), Unknown);
        // Same mapping for every other IP but not for another port of one IP.
        assert_eq!(m(&[(A1, p), (B1, p), (A2, q)]), AddressAndPortDependent);
    }

    #[test]
    fn filtering_tests() {
        let t = |plain, port, ipport| FilterTests {
            plain,
            change_port: port,
            change_ip_port: ipport,
        };
        let yes = Some(true);
        let no = Some(false);
        assert_eq!(
            filtering(EndpointIndependent, t(yes, yes, yes)),
            EndpointIndependent
        );
        assert_eq!(
            filtering(EndpointIndependent, t(yes, yes, no)),
            AddressDependent
        );
        assert_eq!(
            filtering(EndpointIndependent, t(yes, no, no)),
            AddressAndPortDependent
        );
        assert_eq!(filtering(None, t(yes, yes, yes)), None);
        assert_eq!(filtering(None, t(yes, no, no)), AddressAndPortDependent);
        // The plain binding failed: nothing can be concluded.
        assert_eq!(filtering(EndpointIndependent, t(no, no, no)), Unknown);
        // No RFC 5780 server.
        assert_eq!(
            filtering(EndpointIndependent, t(yes, Option::None, Option::None)),
            Unknown
        );
        assert_eq!(
            filtering(EndpointIndependent, t(yes, Option::None, no)),
            Unknown
        );
    }

    #[test]
    fn port_allocation_kinds() {
        let k = |s: &[(u16, u16)]| port_allocation(s);
        assert_eq!(
            k(&[(1000, 1000), (2000, 2000), (3000, 3000)]),
            PortAllocation {
                kind: AllocationKind::Preserving,
                delta: Option::None
            }
        );
        assert_eq!(
            k(&[(1000, 5000), (2000, 5002), (3000, 5004), (4000, 5006)]),
            PortAllocation {
                kind: AllocationKind::Sequential,
                delta: Some(2)
            }
        );
        assert_eq!(
            k(&[(1000, 5000), (2000, 4999), (3000, 4998)]).delta,
            Some(-1)
        );
        assert_eq!(
            k(&[(1000, 5000), (2000, 31000), (3000, 1200)]).kind,
            AllocationKind::Random
        );
        assert_eq!(
            k(&[(1000, 5000), (2000, 5001), (3000, 5007)]).kind,
            AllocationKind::Random
        );
        assert_eq!(k(&[(1000, 1000)]).kind, AllocationKind::Unknown);
        // Port 65535 to 1024 wraps: a big jump, not a tiny negative delta.
        assert_eq!(
            k(&[(1, 65534), (2, 65535), (3, 1024)]).kind,
            AllocationKind::Random
        );
    }

    #[test]
    fn udp_blocked_needs_tcp_to_say_so() {
        assert_eq!(udp_blocked(true, false), Some(false));
        assert_eq!(udp_blocked(false, true), Some(true));
        assert_eq!(udp_blocked(false, false), Option::None);
    }

    #[test]
    fn behaviour_names_are_the_json_values() {
        for b in [
            None,
            EndpointIndependent,
            AddressDependent,
            AddressAndPortDependent,
            Unknown,
        ] {
            assert_eq!(
                serde_json::to_value(b).unwrap(),
                serde_json::Value::from(b.as_str())
            );
        }
    }
}
