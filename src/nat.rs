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
