//! The warpgate address ("ticket"): a versioned, compact binary record and its copy-paste-safe
//! text form, `wg` + lowercase base32 of (record ‖ 4-byte SHA-256 checksum).
//!
//! The record is `version (1 byte) ‖ public key (33 bytes, compressed SEC1) ‖ fields`, each field
//! a TLV `type (1) ‖ length (1) ‖ value`. Unknown field types are kept and skipped, so later
//! versions can add NAT facts and signalling hints without breaking older readers. Decoding
//! untrusted text never panics: every failure is an [`AddrError`].
//!
//! Neighbours: [`crate::identity`] owns the key; [`crate::traversal`] reads the candidates.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sha2::{Digest, Sha256};

use crate::base32::{self, Base32Error};
use crate::config::HostPort;
use crate::identity::{NodeId, PublicKey, PUBLIC_KEY_LEN};
use crate::nat::{AllocationKind, Behaviour, Family, NatFacts};

/// Version byte of the records this build writes and reads.
pub const ADDR_VERSION: u8 = 1;
/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "wg";
const CHECKSUM_LEN: usize = 4;
/// Upper bound on a decoded record, so a pasted novel is rejected before any work is done.
const MAX_RECORD_LEN: usize = 2048;

/// Field types of the record.
mod field {
    /// An interface address of the node: IPv4 (4 bytes) + port (2 bytes).
    pub const LOCAL_V4: u8 = 0x01;
    /// An interface address of the node: IPv6 (16 bytes) + port (2 bytes).
    pub const LOCAL_V6: u8 = 0x02;
    /// A public (server-reflexive) IPv4 candidate, as learned by STUN.
    pub const PUBLIC_V4: u8 = 0x03;
    /// A public (server-reflexive) IPv6 candidate.
    pub const PUBLIC_V6: u8 = 0x04;
    /// A signalling broker where the node listens: UTF-8 `host` (port 1883) or `host:port`.
    pub const BROKER: u8 = 0x05;
    /// What the node's NAT does for one family: family (4 or 6), mapping, filtering, port
    /// allocation, UDP blocked (0 no, 1 yes, 2 unknown); one byte each.
    pub const NAT: u8 = 0x06;
    /// A port mapping the node holds on its gateway (UPnP IGD, PCP, NAT-PMP): IPv4 + port. Older
    /// readers keep it as an unknown field.
    pub const MAPPED_V4: u8 = 0x07;
    /// A port mapping (or pinhole) for IPv6: IPv6 + port.
    pub const MAPPED_V6: u8 = 0x08;
}

/// The NAT field's value: five bytes, one per fact.
fn nat_to_bytes(facts: NatFacts) -> [u8; 5] {
    let behaviour = |b| match b {
        Behaviour::None => 0,
        Behaviour::EndpointIndependent => 1,
        Behaviour::AddressDependent => 2,
        Behaviour::AddressAndPortDependent => 3,
        Behaviour::Unknown => 4,
    };
    [
        if facts.family == Family::Ipv4 { 4 } else { 6 },
        behaviour(facts.mapping),
        behaviour(facts.filtering),
        match facts.allocation {
            AllocationKind::Preserving => 0,
            AllocationKind::Sequential => 1,
            AllocationKind::Random => 2,
            AllocationKind::Unknown => 3,
        },
        match facts.udp_blocked {
            Some(false) => 0,
            Some(true) => 1,
            None => 2,
        },
    ]
}

/// Codes this build does not know read as unknown, so later versions can add values.
fn nat_from_bytes(value: &[u8]) -> Option<NatFacts> {
    let behaviour = |b| match b {
        0 => Behaviour::None,
        1 => Behaviour::EndpointIndependent,
        2 => Behaviour::AddressDependent,
        3 => Behaviour::AddressAndPortDependent,
        _ => Behaviour::Unknown,
    };
    let [family, mapping, filtering, allocation, udp_blocked] = <[u8; 5]>::try_from(value).ok()?;
    Some(NatFacts {
        family: match family {
            4 => Family::Ipv4,
            6 => Family::Ipv6,
            _ => return None,
        },
        mapping: behaviour(mapping),
        filtering: behaviour(filtering),
        allocation: match allocation {
            0 => AllocationKind::Preserving,
            1 => AllocationKind::Sequential,
            2 => AllocationKind::Random,
            _ => AllocationKind::Unknown,
        },
        udp_blocked: match udp_blocked {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        },
    })
}

impl From<Base32Error> for AddrError {
    fn from(e: Base32Error) -> Self {
        match e {
            Base32Error::BadCharacter(c) => AddrError::BadCharacter(c),
            Base32Error::BadLength => AddrError::BadLength,
        }
    }
}

/// The MQTT port a broker hint without a port means.
pub const DEFAULT_BROKER_PORT: u16 = 1883;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("not a warpgate address: it must start with \"{TEXT_PREFIX}\"")]
    MissingPrefix,
    #[error("invalid character {0:?} in address (allowed: a-z and 2-7)")]
    BadCharacter(char),
    #[error("address is malformed (its length is not valid base32); was it cut short?")]
    BadLength,
    #[error("address is too short to be complete; was it cut short?")]
    TooShort,
    #[error("address is too long")]
    TooLong,
    #[error("address checksum does not match: it was mistyped or truncated")]
    Checksum,
    #[error(
        "address version {0} is not supported by this warpgate (it reads version {ADDR_VERSION})"
    )]
    Version(u8),
    #[error("address carries an invalid public key")]
    BadKey,
    #[error("address field {0:#04x} is truncated or has a wrong length")]
    BadField(u8),
}

/// What a candidate endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateKind {
    /// An address of one of the node's interfaces.
    Local,
    /// The node's address as seen from the internet (server-reflexive).
    Public,
    /// An address on the gateway's outside that the node mapped to itself (UPnP IGD,
    /// NAT-PMP): open to anyone while the node runs.
    Mapped,
}

/// One endpoint where the node may be reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    pub kind: CandidateKind,
    pub addr: SocketAddr,
}

/// A decoded address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub key: PublicKey,
    pub candidates: Vec<Candidate>,
    /// Signalling brokers where the node can be reached (its rendezvous choice).
    pub brokers: Vec<HostPort>,
    /// What the node's NAT does, per family, when it was known.
    pub nat: Vec<NatFacts>,
    /// Fields this build does not understand, kept verbatim (type, value).
    pub unknown_fields: Vec<(u8, Vec<u8>)>,
}

impl Address {
    pub fn new(key: PublicKey, candidates: Vec<Candidate>) -> Self {
        Self {
            key,
            candidates,
            brokers: Vec::new(),
            nat: Vec::new(),
            unknown_fields: Vec::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.key.id()
    }

    /// The binary record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(ADDR_VERSION);
        out.extend_from_slice(&self.key.to_compressed());
        for c in &self.candidates {
            let (ty, ip) = match (c.kind, c.addr.ip()) {
                (CandidateKind::Local, IpAddr::V4(ip)) => (field::LOCAL_V4, ip.octets().to_vec()),
                (CandidateKind::Local, IpAddr::V6(ip)) => (field::LOCAL_V6, ip.octets().to_vec()),
                (CandidateKind::Public, IpAddr::V4(ip)) => (field::PUBLIC_V4, ip.octets().to_vec()),
                (CandidateKind::Public, IpAddr::V6(ip)) => (field::PUBLIC_V6, ip.octets().to_vec()),
                (CandidateKind::Mapped, IpAddr::V4(ip)) => (field::MAPPED_V4, ip.octets().to_vec()),
                (CandidateKind::Mapped, IpAddr::V6(ip)) => (field::MAPPED_V6, ip.octets().to_vec()),
            };
            let mut value = ip;
            value.extend_from_slice(&c.addr.port().to_be_bytes());
            push_field(&mut out, ty, &value);
        }
        for broker in &self.brokers {
            let text = if broker.port == DEFAULT_BROKER_PORT {
                broker.host.clone()
            } else {
                broker.to_string()
            };
            if text.len() <= usize::from(u8::MAX) {
                push_field(&mut out, field::BROKER, text.as_bytes());
            }
        }
        for facts in &self.nat {
            push_field(&mut out, field::NAT, &nat_to_bytes(*facts));
        }
        for (ty, value) in &self.unknown_fields {
            push_field(&mut out, *ty, value);
        }
        out
    }

    /// Parses a binary record. Total: never panics on any input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AddrError> {
        let (&version, rest) = bytes.split_first().ok_or(AddrError::TooShort)?;
        if version != ADDR_VERSION {
            return Err(AddrError::Version(version));
        }
        if rest.len() < PUBLIC_KEY_LEN {
            return Err(AddrError::TooShort);
        }
        let (key, mut rest) = rest.split_at(PUBLIC_KEY_LEN);
        let key = PublicKey::from_sec1(key).ok_or(AddrError::BadKey)?;
        let mut addr = Address::new(key, Vec::new());
        while let [ty, len, tail @ ..] = rest {
            let len = usize::from(*len);
            if tail.len() < len {
                return Err(AddrError::BadField(*ty));
            }
            let (value, tail) = tail.split_at(len);
            rest = tail;
            if *ty == field::NAT {
                addr.nat
                    .push(nat_from_bytes(value).ok_or(AddrError::BadField(*ty))?);
                continue;
            }
            if *ty == field::BROKER {
                let broker = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| HostPort::parse(text, Some(DEFAULT_BROKER_PORT)))
                    .ok_or(AddrError::BadField(*ty))?;
                addr.brokers.push(broker);
                continue;
            }
            let kind = match *ty {
                field::LOCAL_V4 | field::LOCAL_V6 => CandidateKind::Local,
                field::PUBLIC_V4 | field::PUBLIC_V6 => CandidateKind::Public,
                field::MAPPED_V4 | field::MAPPED_V6 => CandidateKind::Mapped,
                _ => {
                    addr.unknown_fields.push((*ty, value.to_vec()));
                    continue;
                }
            };
            let ip: IpAddr = match (*ty, value.len()) {
                (field::LOCAL_V4 | field::PUBLIC_V4 | field::MAPPED_V4, 6) => Ipv4Addr::from(
                    <[u8; 4]>::try_from(&value[..4]).map_err(|_| AddrError::BadField(*ty))?,
                )
                .into(),
                (field::LOCAL_V6 | field::PUBLIC_V6 | field::MAPPED_V6, 18) => Ipv6Addr::from(
                    <[u8; 16]>::try_from(&value[..16]).map_err(|_| AddrError::BadField(*ty))?,
                )
                .into(),
                _ => return Err(AddrError::BadField(*ty)),
            };
            let port = u16::from_be_bytes([value[len - 2], value[len - 1]]);
            addr.candidates.push(Candidate {
                kind,
                addr: SocketAddr::new(ip, port),
            });
        }
        if !rest.is_empty() {
            // A single dangling byte: a type without a length.
            return Err(AddrError::BadField(rest[0]));
        }
        Ok(addr)
    }

    /// Parses the text form. Surrounding whitespace and upper case are forgiven.
    pub fn parse(text: &str) -> Result<Self, AddrError> {
        let text = text.trim().to_ascii_lowercase();
        let body = text
            .strip_prefix(TEXT_PREFIX)
            .ok_or(AddrError::MissingPrefix)?;
        if body.len() > (MAX_RECORD_LEN + CHECKSUM_LEN) * 8 / 5 + 1 {
            return Err(AddrError::TooLong);
        }
        let raw = base32::decode(body)?;
        if raw.len() < CHECKSUM_LEN + 1 {
            return Err(AddrError::TooShort);
        }
        let (record, checksum) = raw.split_at(raw.len() - CHECKSUM_LEN);
        if Sha256::digest(record)[..CHECKSUM_LEN] != *checksum {
            return Err(AddrError::Checksum);
        }
        Self::from_bytes(record)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = self.to_bytes();
        let checksum = Sha256::digest(&raw);
        raw.extend_from_slice(&checksum[..CHECKSUM_LEN]);
        write!(f, "{TEXT_PREFIX}{}", base32::encode(&raw))
    }
}

fn push_field(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    // Callers keep values within 255 bytes (a broker hint is checked, an unknown field was read
    // from a record whose length byte bounds it), so the cast cannot truncate.
    out.push(ty);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn sample() -> Address {
        let key = Identity::generate().public_key();
        Address::new(
            key,
            vec![
                Candidate {
                    kind: CandidateKind::Local,
                    addr: "127.0.0.1:4000".parse().unwrap(),
                },
                Candidate {
                    kind: CandidateKind::Local,
                    addr: "[::1]:4000".parse().unwrap(),
                },
                Candidate {
                    kind: CandidateKind::Public,
                    addr: "203.0.113.7:61000".parse().unwrap(),
                },
            ],
        )
    }

    #[test]
    fn text_form_round_trips() {
        let addr = sample();
        let text = addr.to_string();
        assert!(text.starts_with("wg"));
        assert!(text
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_eq!(Address::parse(&text).unwrap(), addr);
        assert_eq!(
            Address::parse(&format!("  {}\n", text.to_uppercase())).unwrap(),
            addr
        );
    }

    #[test]
    fn broker_hints_round_trip_and_garbage_ones_are_errors() {
        let mut addr = sample();
        addr.brokers = vec![
            HostPort::parse("broker.example.org", Some(1883)).unwrap(),
            HostPort::parse("[2001:db8::1]:8883", None).unwrap(),
        ];
        assert_eq!(Address::parse(&addr.to_string()).unwrap(), addr);
        let mut bytes = sample().to_bytes();
        bytes.extend_from_slice(&[field::BROKER, 3, b'a', b' ', b'b']);
        assert_eq!(
            Address::from_bytes(&bytes),
            Err(AddrError::BadField(field::BROKER))
        );
    }

    #[test]
    fn nat_facts_round_trip() {
        let mut addr = sample();
        addr.nat = vec![
            NatFacts {
                family: Family::Ipv4,
                mapping: Behaviour::EndpointIndependent,
                filtering: Behaviour::AddressAndPortDependent,
                allocation: AllocationKind::Preserving,
                udp_blocked: Some(false),
            },
            NatFacts {
                family: Family::Ipv6,
                mapping: Behaviour::None,
                filtering: Behaviour::Unknown,
                allocation: AllocationKind::Unknown,
                udp_blocked: None,
            },
        ];
        assert_eq!(Address::parse(&addr.to_string()).unwrap(), addr);
        // A value code from a later version reads as unknown; a bad family is an error.
        let mut bytes = sample().to_bytes();
        bytes.extend_from_slice(&[field::NAT, 5, 4, 9, 9, 9, 9]);
        let read = Address::from_bytes(&bytes).unwrap();
        assert_eq!(read.nat[0].mapping, Behaviour::Unknown);
        assert_eq!(read.nat[0].udp_blocked, None);
        bytes.extend_from_slice(&[field::NAT, 5, 5, 0, 0, 0, 0]);
        assert_eq!(
            Address::from_bytes(&bytes),
            Err(AddrError::BadField(field::NAT))
        );
    }

    #[test]
    fn mapped_candidates_round_trip_and_are_checked() {
        let mut addr = sample();
        addr.candidates.push(Candidate {
            kind: CandidateKind::Mapped,
            addr: "203.0.113.17:41000".parse().unwrap(),
        });
        addr.candidates.push(Candidate {
            kind: CandidateKind::Mapped,
            addr: "[2001:db8::17]:41000".parse().unwrap(),
        });
        let bytes = addr.to_bytes();
        assert_eq!(Address::parse(&addr.to_string()).unwrap(), addr);
        // The IPv4 one is field 0x07 with 4 + 2 bytes, the IPv6 one 0x08 with 16 + 2.
        let v4 = [field::MAPPED_V4, 6, 203, 0, 113, 17, 0xa0, 0x28];
        assert!(bytes.windows(v4.len()).any(|w| w == v4));
        assert!(bytes.windows(2).any(|w| w == [field::MAPPED_V6, 18]));
        // A wrong length for its family is an error, not a guess.
        for (ty, len) in [
            (field::MAPPED_V4, 18u8),
            (field::MAPPED_V6, 6),
            (field::MAPPED_V4, 5),
        ] {
            let mut bad = sample().to_bytes();
            bad.extend_from_slice(&[ty, len]);
            bad.extend(std::iter::repeat(1u8).take(usize::from(len)));
            assert_eq!(Address::from_bytes(&bad), Err(AddrError::BadField(ty)));
        }
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let mut addr = sample();
        addr.unknown_fields.push((0x7f, vec![1, 2, 3]));
        assert_eq!(Address::parse(&addr.to_string()).unwrap(), addr);
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let text = sample().to_string();
        for i in 2..text.len() {
            let mut typo = text.clone().into_bytes();
            typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(typo).unwrap();
            assert!(Address::parse(&typo).is_err(), "typo at {i} accepted");
        }
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let text = sample().to_string();
        assert_eq!(Address::parse("xy1234"), Err(AddrError::MissingPrefix));
        assert_eq!(Address::parse("wg!!!!"), Err(AddrError::BadCharacter('!')));
        assert_eq!(Address::parse("wg"), Err(AddrError::TooShort));
        assert!(Address::parse(&text[..text.len() - 5]).is_err());
        assert_eq!(Address::parse(&"wg".repeat(3000)), Err(AddrError::TooLong));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // A small deterministic fuzz: every truncation and many byte flips of a valid record,
        // plus pseudo-random records.
        let bytes = sample().to_bytes();
        for len in 0..bytes.len() {
            let _ = Address::from_bytes(&bytes[..len]);
        }
        let mut state = 0x1234_5678_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..20_000 {
            let mut b = bytes.clone();
            let i = next() as usize % b.len();
            b[i] = next() as u8;
            let _ = Address::from_bytes(&b);
            let random: Vec<u8> = (0..next() % 80).map(|_| next() as u8).collect();
            let _ = Address::from_bytes(&random);
        }
    }
}
