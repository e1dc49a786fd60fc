//! The home gateway's answers (`warpgate::portmap`): NAT-PMP's external-address and mapping
//! responses and PCP's MAP response, all read from whatever a LAN host sends to our port.
//!
//! Input: any bytes, decoded as each answer, PCP's against the nonce [`NONCE`] for both
//! protocols (the samples carry it, so the fuzzer reaches past the nonce check).

use std::net::{IpAddr, SocketAddr};

use warpgate::portmap::{natpmp, pcp, Protocol};

use crate::Sample;

/// The nonce the PCP samples' answers carry.
pub const NONCE: [u8; 12] = [0x5a; 12];

pub fn run(data: &[u8]) -> bool {
    let external = natpmp::parse_natpmp_response(data).is_ok();
    let mut mapped = false;
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        mapped |= natpmp::parse_map_response(data, protocol).is_ok();
        mapped |= pcp::parse_map_response(data, &NONCE, protocol)
            .inspect(|r| {
                // An IPv4 outside address comes out as IPv4, never IPv4-mapped.
                let ip = r.external.ip();
                assert_eq!(ip, ip.to_canonical());
            })
            .is_ok();
    }
    external || mapped
}

/// A PCP MAP answer granting `external` for the request made with [`NONCE`].
fn pcp_answer(protocol: Protocol, client: IpAddr, external: SocketAddr) -> Vec<u8> {
    let mut m = pcp::map_request(&NONCE, protocol, 40000, external, 3600, client).to_vec();
    m[1] |= 0x80;
    m[8..24].fill(0);
    m
}

pub fn samples() -> Vec<Sample> {
    let v4: IpAddr = "192.168.17.2".parse().expect("an address");
    let v6: IpAddr = "2001:db8:17::2".parse().expect("an address");
    let mut natpmp_map = vec![0, 129, 0, 0, 0, 0, 1, 0, 0x9c, 0x40, 0x9c, 0x41];
    natpmp_map.extend_from_slice(&3600u32.to_be_bytes());
    vec![
        (
            "natpmp-external".into(),
            vec![0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 27],
        ),
        ("natpmp-map".into(), natpmp_map),
        (
            "pcp-map-v4".into(),
            pcp_answer(
                Protocol::Udp,
                v4,
                "203.0.113.27:40001".parse().expect("an address"),
            ),
        ),
        (
            "pcp-pinhole-v6".into(),
            pcp_answer(Protocol::Tcp, v6, SocketAddr::new(v6, 40000)),
        ),
    ]
}
