//! NAT-PMP (RFC 6886): a pure codec for the two exchanges warpgate uses — the external address
//! (opcode 0) and port mappings (opcodes 1 UDP, 2 TCP; lifetime 0 deletes) — and a small client
//! on one UDP socket connected to the gateway that retransmits on the RFC's doubling schedule,
//! bounded by a number of transmissions. No maintained async crate does this much on tokio (the
//! `natpmp` crate's async API owns its own runtime glue and returns untyped results), and the
//! messages are 2, 12 and 16 bytes, so they are written here and tested byte for byte.
//!
//! Neighbours: [`super::keeper`] maps and renews with [`Client`]; nat-info asks [`natpmp()`].

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{PortMapper, Protocol};
use crate::timing::NATPMP_RTO;

/// Port of a NAT-PMP server (RFC 6886 §3).
pub const NATPMP_PORT: u16 = 5351;
/// Transmissions of the external-address request nat-info makes (250 + 500 ms of waiting).
const DISCOVERY_TRANSMISSIONS: u32 = 2;
/// Responses carry the request's opcode plus this.
const RESPONSE_BIT: u8 = 128;
const OP_EXTERNAL: u8 = 0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NatPmpError {
    #[error("a {0}-byte answer is too short")]
    TooShort(usize),
    #[error("not the expected NAT-PMP response (version {version}, op {op})")]
    Unexpected { version: u8, op: u8 },
    #[error("the router refused with result code {0} ({m})", m = result_meaning(*.0))]
    Refused(u16),
    #[error("no NAT-PMP server answered")]
    Timeout,
    #[error("no NAT-PMP server: {0}")]
    Io(String),
}

/// RFC 6886 §3.5.
fn result_meaning(code: u16) -> &'static str {
    match code {
        1 => "unsupported version",
        2 => "not authorized",
        3 => "network failure",
        4 => "out of resources",
        5 => "unsupported opcode",
        _ => "unknown",
    }
}

impl Protocol {
    fn natpmp_opcode(self) -> u8 {
        match self {
            Protocol::Udp => 1,
            Protocol::Tcp => 2,
        }
    }
}

/// The NAT-PMP external-address request (version 0, opcode 0).
pub fn natpmp_request() -> [u8; 2] {
    [0, OP_EXTERNAL]
}

/// Checks version, opcode and result code of a response; the rest is the opcode's.
fn check(data: &[u8], op: u8, len: usize) -> Result<&[u8], NatPmpError> {
    let d = data.get(..len).ok_or(NatPmpError::TooShort(data.len()))?;
    if d[0] != 0 || d[1] != RESPONSE_BIT + op {
        return Err(NatPmpError::Unexpected {
            version: d[0],
            op: d[1],
        });
    }
    match u16::from_be_bytes([d[2], d[3]]) {
        0 => Ok(d),
        code => Err(NatPmpError::Refused(code)),
    }
}

/// Reads a NAT-PMP external-address response: the address, or why it is not one.
pub fn parse_natpmp_response(data: &[u8]) -> Result<Ipv4Addr, NatPmpError> {
    let d = check(data, OP_EXTERNAL, 12)?;
    Ok(Ipv4Addr::new(d[8], d[9], d[10], d[11]))
}

/// A mapping request (RFC 6886 §3.3): map `internal` for `lifetime` seconds, preferably to
/// `suggested` outside. Lifetime 0 with suggested port 0 deletes the mapping (§3.4).
pub fn map_request(protocol: Protocol, internal: u16, suggested: u16, lifetime: u32) -> [u8; 12] {
    let mut m = [0u8; 12];
    m[1] = protocol.natpmp_opcode();
    m[4..6].copy_from_slice(&internal.to_be_bytes());
    m[6..8].copy_from_slice(&suggested.to_be_bytes());
    m[8..12].copy_from_slice(&lifetime.to_be_bytes());
    m
}

/// What the gateway granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapResponse {
    /// Seconds since the gateway's port-mapping table was (re)initialised.
    pub epoch: u32,
    pub internal: u16,
    /// The port outside; 0 in the answer to a deletion.
    pub external: u16,
    /// Seconds the mapping lasts (may be less than asked for).
    pub lifetime: u32,
}

/// Reads the response to a [`map_request`] for `protocol`.
pub fn parse_map_response(data: &[u8], protocol: Protocol) -> Result<MapResponse, NatPmpError> {
    let d = check(data, protocol.natpmp_opcode(), 16)?;
    let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    Ok(MapResponse {
        epoch: u32_at(4),
        internal: u16::from_be_bytes([d[8], d[9]]),
        external: u16::from_be_bytes([d[10], d[11]]),
        lifetime: u32_at(12),
    })
}

/// A NAT-PMP client: one UDP socket connected to the gateway's port 5351.
pub struct Client {
    socket: UdpSocket,
}

impl Client {
    pub async fn connect(local: Ipv4Addr, gateway: Ipv4Addr) -> Result<Self, NatPmpError> {
        let io = |e: std::io::Error| NatPmpError::Io(e.to_string());
        let socket = UdpSocket::bind((local, 0)).await.map_err(io)?;
        socket
            .connect(SocketAddr::new(gateway.into(), NATPMP_PORT))
            .await
            .map_err(io)?;
        Ok(Self { socket })
    }

    /// The gateway's external address.
    pub async fn external_address(&self, transmissions: u32) -> Result<Ipv4Addr, NatPmpError> {
        exchange(
            &self.socket,
            &natpmp_request(),
            transmissions,
            parse_natpmp_response,
        )
        .await
    }

    /// Maps (or, with lifetime 0, deletes) `internal`; only the answer about `internal` counts.
    pub async fn map(
        &self,
        protocol: Protocol,
        internal: u16,
        suggested: u16,
        lifetime: u32,
        transmissions: u32,
    ) -> Result<MapResponse, NatPmpError> {
        let request = map_request(protocol, internal, suggested, lifetime);
        exchange(&self.socket, &request, transmissions, |data| {
            let r = parse_map_response(data, protocol)?;
            if r.internal != internal {
                return Err(NatPmpError::Unexpected { version: 0, op: 0 });
            }
            Ok(r)
        })
        .await
    }
}

/// What [`exchange`] needs of a gateway protocol's error type.
pub(super) trait ExchangeError: Sized {
    fn timeout() -> Self;
    fn io(e: std::io::Error) -> Self;
    /// An answer that ends the exchange at once (a refusal): retransmitting will not help.
    fn is_final(&self) -> bool;
}

impl ExchangeError for NatPmpError {
    fn timeout() -> Self {
        NatPmpError::Timeout
    }

    fn io(e: std::io::Error) -> Self {
        NatPmpError::Io(e.to_string())
    }

    fn is_final(&self) -> bool {
        matches!(self, NatPmpError::Refused(_))
    }
}

/// Sends `request` on `socket` (connected to the gateway) up to `transmissions` times (waits
/// of 250 ms, doubling: RFC 6886 §3.1, the start RFC 6887 allows for PCP too) until `read`
/// accepts an answer. Answers `read` rejects (another request's, garbage) are skipped; a
/// final one ends the exchange; a connection error (ICMP port unreachable) means nobody
/// listens. NAT-PMP and PCP share it (and the gateway's port 5351).
pub(super) async fn exchange<T, E: ExchangeError>(
    socket: &UdpSocket,
    request: &[u8],
    transmissions: u32,
    read: impl Fn(&[u8]) -> Result<T, E>,
) -> Result<T, E> {
    // RFC 6887 §7: a PCP message is at most 1100 bytes; NAT-PMP's are 16 at most.
    let mut buf = [0u8; 1100];
    let mut rto = NATPMP_RTO;
    let mut garbage = None;
    for _ in 0..transmissions {
        if let Err(e) = socket.send(request).await {
            return Err(E::io(e));
        }
        let deadline = tokio::time::Instant::now() + rto;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => match read(&buf[..n]) {
                    Ok(v) => return Ok(v),
                    Err(e) if e.is_final() => return Err(e),
                    Err(e) => garbage = Some(e),
                },
                Ok(Err(e)) => return Err(E::io(e)),
                Err(_) => break,
            }
        }
        rto *= 2;
    }
    Err(garbage.unwrap_or_else(E::timeout))
}

/// The worst-case time [`Client::map`] and the like wait for `transmissions`.
pub fn exchange_bound(transmissions: u32) -> Duration {
    NATPMP_RTO * ((1u32 << transmissions.min(16)) - 1)
}

/// NAT-PMP for nat-info: ask the gateway for its external address.
pub async fn natpmp(local: Ipv4Addr, gateway: Ipv4Addr) -> PortMapper {
    let client = match Client::connect(local, gateway).await {
        Ok(c) => c,
        Err(e) => return PortMapper::failed(e.to_string()),
    };
    match client.external_address(DISCOVERY_TRANSMISSIONS).await {
        Ok(ip) => PortMapper {
            available: true,
            external: Some(ip.into()),
            error: None,
        },
        Err(e) => PortMapper::failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_address_codec() {
        assert_eq!(natpmp_request(), [0, 0]);
        let ok = [0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 27];
        assert_eq!(
            parse_natpmp_response(&ok),
            Ok(Ipv4Addr::new(203, 0, 113, 27))
        );
        assert_eq!(
            parse_natpmp_response(&ok[..11]),
            Err(NatPmpError::TooShort(11))
        );
        assert!(parse_natpmp_response(&[]).is_err());
        let refused = [0, 128, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0];
        let e = parse_natpmp_response(&refused).unwrap_err();
        assert_eq!(e, NatPmpError::Refused(3));
        assert!(e.to_string().contains("result code 3 (network failure)"));
        let other_op = [0, 129, 0, 0, 0, 0, 0, 9, 1, 2, 3, 4];
        assert!(parse_natpmp_response(&other_op).is_err());
    }

    #[test]
    fn map_request_bytes() {
        // RFC 6886 §3.3: version, opcode, reserved, internal port, suggested port, lifetime.
        assert_eq!(
            map_request(Protocol::Udp, 0x1234, 0x5678, 3600),
            [0, 1, 0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x0e, 0x10]
        );
        assert_eq!(
            map_request(Protocol::Tcp, 40000, 40000, 7200),
            [0, 2, 0, 0, 0x9c, 0x40, 0x9c, 0x40, 0, 0, 0x1c, 0x20]
        );
        // §3.4: a deletion is lifetime 0 with suggested port 0.
        assert_eq!(
            map_request(Protocol::Tcp, 40000, 0, 0),
            [0, 2, 0, 0, 0x9c, 0x40, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn map_response_codec() {
        let udp = [
            0, 129, 0, 0, 0, 0, 1, 0, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x0e, 0x10,
        ];
        assert_eq!(
            parse_map_response(&udp, Protocol::Udp),
            Ok(MapResponse {
                epoch: 256,
                internal: 40000,
                external: 40001,
                lifetime: 3600,
            })
        );
        // The TCP answer is not the UDP one, and the other way round.
        assert_eq!(
            parse_map_response(&udp, Protocol::Tcp),
            Err(NatPmpError::Unexpected {
                version: 0,
                op: 129
            })
        );
        let mut tcp = udp;
        tcp[1] = 130;
        assert_eq!(
            parse_map_response(&tcp, Protocol::Tcp).map(|r| r.external),
            Ok(40001)
        );
        assert_eq!(
            parse_map_response(&udp[..15], Protocol::Udp),
            Err(NatPmpError::TooShort(15))
        );
        let mut refused = udp;
        refused[3] = 2;
        assert_eq!(
            parse_map_response(&refused, Protocol::Udp),
            Err(NatPmpError::Refused(2))
        );
        let mut v1 = udp;
        v1[0] = 1;
        assert!(parse_map_response(&v1, Protocol::Udp).is_err());
    }

    #[test]
    fn decoding_any_bytes_never_panics() {
        let mut state = 0x9e37_79b9_u32;
        for len in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        state as u8
                    })
                    .collect();
                let _ = parse_natpmp_response(&bytes);
                let _ = parse_map_response(&bytes, Protocol::Udp);
                let _ = parse_map_response(&bytes, Protocol::Tcp);
            }
        }
    }

    #[test]
    fn exchange_bound_doubles() {
        assert_eq!(exchange_bound(1), NATPMP_RTO);
        assert_eq!(exchange_bound(3), NATPMP_RTO * 7);
    }

    /// A fake gateway on loopback: answers a TCP map request with a stale answer for another
    /// port first, then the right one; the client skips the stale one.
    #[tokio::test]
    async fn client_maps_and_skips_other_answers() {
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        socket.connect(server_addr).await.unwrap();
        let client = Client { socket };
        let serve = async {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &map_request(Protocol::Tcp, 40000, 40000, 60));
            let mut stale = [
                0, 130, 0, 0, 0, 0, 0, 5, 0x9c, 0x41, 0x9c, 0x41, 0, 0, 0, 60,
            ];
            server.send_to(&stale, from).await.unwrap();
            stale[8..10].copy_from_slice(&40000u16.to_be_bytes());
            stale[10..12].copy_from_slice(&41000u16.to_be_bytes());
            server.send_to(&stale, from).await.unwrap();
        };
        let (got, ()) = tokio::join!(client.map(Protocol::Tcp, 40000, 40000, 60, 2), serve);
        assert_eq!(got.map(|r| (r.external, r.lifetime)), Ok((41000, 60)));
    }

    #[tokio::test]
    async fn no_natpmp_server_on_loopback_is_no_hang() {
        // Nothing listens on 5351 here: refused or silent, never a hang.
        let started = std::time::Instant::now();
        let r = natpmp(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).await;
        assert!(!r.available);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
