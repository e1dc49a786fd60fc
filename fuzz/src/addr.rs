//! The address decoder: the binary record (`Address::from_bytes`) and the text form
//! (`Address::parse`, base32 and checksum in front of the same decoder).
//!
//! Input: any bytes, decoded as a record, and as text when they are UTF-8.

use warpgate::addr::{Address, Candidate, CandidateKind};
use warpgate::config::HostPort;
use warpgate::nat::{AllocationKind, Behaviour, Family, NatFacts};

use crate::keys::owner_key;
use crate::Sample;

pub fn run(data: &[u8]) -> bool {
    let binary = Address::from_bytes(data).inspect(round_trips).is_ok();
    let text = std::str::from_utf8(data)
        .ok()
        .and_then(|text| Address::parse(text).ok())
        .inspect(|addr| {
            round_trips(addr);
            let mut exact = addr.clone();
            exact.brokers.clear();
            assert_eq!(Address::parse(&exact.to_string()).as_ref(), Ok(&exact));
        })
        .is_some();
    binary || text
}

/// What the decoder accepted, the encoder writes back as a record that decodes to the same,
/// broker hints aside: their text is normalised on the way in (`HostPort::parse`), so a hint
/// may legitimately come back spelt differently, or not at all (see docs/fuzzing.md).
fn round_trips(addr: &Address) {
    let _ = addr.to_bytes();
    let mut exact = addr.clone();
    exact.brokers.clear();
    assert_eq!(Address::from_bytes(&exact.to_bytes()).as_ref(), Ok(&exact));
}

pub fn samples() -> Vec<Sample> {
    let key = owner_key();
    let candidate = |kind, addr: &str| Candidate {
        kind,
        addr: addr.parse().expect("sample socket address"),
    };
    let mut full = Address::new(
        key,
        vec![
            candidate(CandidateKind::Local, "192.168.1.20:41641"),
            candidate(CandidateKind::Local, "[fe80::1]:41641"),
            candidate(CandidateKind::Public, "203.0.113.7:61000"),
            candidate(CandidateKind::Public, "[2001:db8::7]:61000"),
            candidate(CandidateKind::Mapped, "203.0.113.17:41000"),
            candidate(CandidateKind::Mapped, "[2001:db8::17]:41000"),
        ],
    );
    full.brokers = vec![
        HostPort::parse("broker.example.org", Some(1883)).expect("sample broker"),
        HostPort::parse("[2001:db8::1]:8883", None).expect("sample broker"),
    ];
    full.nat = vec![NatFacts {
        family: Family::Ipv4,
        mapping: Behaviour::EndpointIndependent,
        filtering: Behaviour::AddressAndPortDependent,
        allocation: AllocationKind::Preserving,
        udp_blocked: Some(false),
    }];
    full.unknown_fields = vec![(0x7f, vec![1, 2, 3])];
    let bare = Address::new(key, Vec::new());
    vec![
        ("bare.bin".into(), bare.to_bytes()),
        ("bare.txt".into(), bare.to_string().into_bytes()),
        ("full.bin".into(), full.to_bytes()),
        ("full.txt".into(), full.to_string().into_bytes()),
    ]
}
