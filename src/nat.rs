//! The NAT vocabulary every layer shares: address family, mapping and filtering behaviour
//! (RFC 4787 terms), port allocation, and the [`NatFacts`] a node knows about its network.
//! Plain data with no behaviour of its own; it imports nothing of ours, so `stun` (which
//! measures), `discovery` (which judges), `addr` (which carries) and `traversal` (which plans)
//! all stand on it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
}

/// A mapping or filtering behaviour (RFC 4787 terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Mapping: no translation at all. Filtering: no NAT and nothing filtered that the tests
    /// can see (an endpoint-independent firewall without NAT looks the same).
    None,
    EndpointIndependent,
    AddressDependent,
    AddressAndPortDependent,
    Unknown,
}

impl Behaviour {
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::None => "none",
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
            Behaviour::Unknown => "unknown",
        }
    }
}

/// How the NAT picks the public port of a new mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocationKind {
    /// The public port is the local port.
    Preserving,
    /// Each new mapping's port is the previous one plus a constant `delta`.
    Sequential,
    Random,
    Unknown,
}

/// Port allocation with its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortAllocation {
    pub kind: AllocationKind,
    /// The step between consecutive mappings, for `sequential`.
    pub delta: Option<i32>,
}

/// What the NAT in front of a node does for one address family, as discovery found it: a hint
/// for ordering strategies, never a reason to skip one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatFacts {
    pub family: Family,
    pub mapping: Behaviour,
    pub filtering: Behaviour,
    pub allocation: AllocationKind,
    pub udp_blocked: Option<bool>,
}

/// What one socket's public mapping did towards two servers: the fact a punching kit learns
/// with STUN and both sides of a rendezvous exchange to pick the strategies (and roles) that
/// fit. On the wire it is one byte; a value this build does not know reads as `Unknown`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u8", into = "u8")]
pub enum SocketMapping {
    /// Fewer than two servers answered on one public IP: nothing is known.
    #[default]
    Unknown,
    /// Both servers saw the same public port (endpoint-independent mapping, or no NAT).
    Kept,
    /// A new port per destination, a small step from the last (port prediction works).
    Sequential,
    /// A new port per destination, far from the last: a symmetric NAT allocating at random.
    Random,
}

impl SocketMapping {
    /// Whether the public port depends on the destination.
    pub fn varies(self) -> bool {
        matches!(self, SocketMapping::Sequential | SocketMapping::Random)
    }
}

impl From<u8> for SocketMapping {
    fn from(byte: u8) -> Self {
        match byte {
            1 => SocketMapping::Kept,
            2 => SocketMapping::Sequential,
            3 => SocketMapping::Random,
            _ => SocketMapping::Unknown,
        }
    }
}

impl From<SocketMapping> for u8 {
    fn from(mapping: SocketMapping) -> u8 {
        match mapping {
            SocketMapping::Unknown => 0,
            SocketMapping::Kept => 1,
            SocketMapping::Sequential => 2,
            SocketMapping::Random => 3,
        }
    }
}
