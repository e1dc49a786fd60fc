//! PCP (RFC 6887), the MAP and ANNOUNCE opcodes: a pure codec for the 60-byte MAP request and
//! response and the 24-byte ANNOUNCE (a no-op a PCP server answers at once: is anyone there?)
//! and a client on one UDP socket connected to the gateway's port 5351 (shared with NAT-PMP, and
//! its retransmission, [`super::natpmp::exchange`]). MAP asks an IPv4 NAT for a port mapping,
//! and an IPv6 firewall for a pinhole to this host's own address: the same message either
//! way, the client's address in IPv4-mapped form for IPv4. A mapping is refreshed and deleted
//! (lifetime 0) with the nonce it was made with, so the client keeps one per protocol. No
//! maintained crate speaks PCP on tokio; the messages are fixed-size and tested byte for byte.
//!
//! Neighbours: [`super::keeper`] maps, renews and deletes with [`Client`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

use super::natpmp::{exchange, ExchangeError, NATPMP_PORT};
use super::Protocol;

/// The PCP version (RFC 6887 §7); NAT-PMP is version 0 on the same port.
const VERSION: u8 = 2;
const OP_ANNOUNCE: u8 = 0;
const OP_MAP: u8 = 1;
/// The common header, all an ANNOUNCE is.
const HEADER_LEN: usize = 24;
/// The R bit: set in responses.
const RESPONSE: u8 = 0x80;
/// A MAP request or response without options.
const MAP_LEN: usize = 60;
/// RFC 6887 §7.4: UNSUPP_VERSION.
const UNSUPP_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcpError {
    #[error("a {0}-byte answer is too short")]
    TooShort(usize),
    #[error("the gateway speaks NAT-PMP, not PCP")]
    NatPmpOnly,
    #[error("not the expected PCP response")]
    Unexpected,
    #[error("the gateway refused with result code {0} ({m})", m = result_meaning(*.0))]
    Refused(u8),
    #[error("no PCP server answered")]
    Timeout,
    #[error("no PCP server: {0}")]
    Io(String),
}

impl ExchangeError for PcpError {
    fn timeout() -> Self {
        PcpError::Timeout
    }

    fn io(e: std::io::Error) -> Self {
        PcpError::Io(e.to_string())
    }

    fn is_final(&self) -> bool {
        matches!(self, PcpError::Refused(_) | PcpError::NatPmpOnly)
    }
}

/// RFC 6887 §7.4.
fn result_meaning(code: u8) -> &'static str {
    match code {
        UNSUPP_VERSION => "unsupported version",
        2 => "not authorized",
        3 => "malformed request",
        4 => "unsupported opcode",
        5 => "unsupported option",
        6 => "malformed option",
        7 => "network failure",
        8 => "no resources",
        9 => "unsupported protocol",
        10 => "user exceeded quota",
        11 => "cannot provide the external address",
        12 => "address mismatch",
        13 => "excessive remote peers",
        _ => "unknown",
    }
}

impl Protocol {
    fn iana_number(self) -> u8 {
        match self {
            Protocol::Udp => 17,
            Protocol::Tcp => 6,
        }
    }
}

/// An address in PCP's 128-bit form: IPv4 as IPv4-mapped IPv6 (RFC 6887 §5).
fn wire(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// An ANNOUNCE request (RFC 6887 §14.1) from `client`: the common header, lifetime 0.
pub fn announce_request(client: IpAddr) -> [u8; HEADER_LEN] {
    let mut m = [0u8; HEADER_LEN];
    m[0] = VERSION;
    m[1] = OP_ANNOUNCE;
    m[8..24].copy_from_slice(&wire(client));
    m
}

/// Reads the answer to an [`announce_request`]: the server's epoch (seconds since its
/// mapping state was initialised).
pub fn parse_announce_response(data: &[u8]) -> Result<u32, PcpError> {
    let head = header(data, OP_ANNOUNCE)?;
    Ok(u32::from_be_bytes([head[8], head[9], head[10], head[11]]))
}

/// The common header of a response to `op`, once it says success.
fn header(data: &[u8], op: u8) -> Result<&[u8], PcpError> {
    // A NAT-PMP server answers any other version with its own "unsupported version".
    if data.first() == Some(&0) {
        return Err(PcpError::NatPmpOnly);
    }
    // An error response may carry nothing more than the header.
    let head = data
        .get(..HEADER_LEN)
        .ok_or(PcpError::TooShort(data.len()))?;
    if head[0] != VERSION || head[1] != RESPONSE | op {
        return Err(PcpError::Unexpected);
    }
    match head[3] {
        0 => Ok(head),
        code => Err(PcpError::Refused(code)),
    }
}

/// A MAP request (RFC 6887 §11.1): from `client` (this host's address as the gateway sees
/// the request come), map `internal` for `lifetime` seconds, preferably to `suggested`
/// outside. Lifetime 0 deletes the mapping made with `nonce`.
pub fn map_request(
    nonce: &[u8; 12],
    protocol: Protocol,
    internal: u16,
    suggested: SocketAddr,
    lifetime: u32,
    client: IpAddr,
) -> [u8; MAP_LEN] {
    let mut m = [0u8; MAP_LEN];
    m[0] = VERSION;
    m[1] = OP_MAP;
    m[4..8].copy_from_slice(&lifetime.to_be_bytes());
    m[8..24].copy_from_slice(&wire(client));
    m[24..36].copy_from_slice(nonce);
    m[36] = protocol.iana_number();
    m[40..42].copy_from_slice(&internal.to_be_bytes());
    m[42..44].copy_from_slice(&suggested.port().to_be_bytes());
    m[44..60].copy_from_slice(&wire(suggested.ip()));
    m
}

/// What the gateway granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapResponse {
    /// Seconds the mapping lasts (may be less than asked for; 0 in the answer to a deletion).
    pub lifetime: u32,
    /// Seconds since the gateway's mapping state was (re)initialised.
    pub epoch: u32,
    pub internal: u16,
    /// The address outside: the NAT's, or this host's own behind an IPv6 firewall.
    pub external: SocketAddr,
}

/// Reads the response to a [`map_request`] made with `nonce` for `protocol`.
pub fn parse_map_response(
    data: &[u8],
    nonce: &[u8; 12],
    protocol: Protocol,
) -> Result<MapResponse, PcpError> {
    header(data, OP_MAP)?;
    let d = data.get(..MAP_LEN).ok_or(PcpError::TooShort(data.len()))?;
    if &d[24..36] != nonce || d[36] != protocol.iana_number() {
        return Err(PcpError::Unexpected);
    }
    let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&d[44..60]);
    Ok(MapResponse {
        lifetime: u32_at(4),
        epoch: u32_at(8),
        internal: u16::from_be_bytes([d[40], d[41]]),
        external: SocketAddr::new(
            Ipv6Addr::from(ip).to_canonical(),
            u16::from_be_bytes([d[42], d[43]]),
        ),
    })
}

/// A PCP client: one UDP socket from this host's address to the gateway's port 5351, and a
/// nonce per protocol (each mapping is refreshed and deleted with the one it was made with).
pub struct Client {
    socket: UdpSocket,
    client: IpAddr,
    nonces: [[u8; 12]; 2],
}

impl Client {
    /// From `local` (the address the gateway sees; for an IPv6 pinhole, the global address to
    /// open) to `gateway`.
    pub async fn connect(local: IpAddr, gateway: SocketAddr) -> Result<Self, PcpError> {
        let socket = UdpSocket::bind((local, 0)).await.map_err(PcpError::io)?;
        socket.connect(gateway).await.map_err(PcpError::io)?;
        let mut nonces = [[0u8; 12]; 2];
        for nonce in &mut nonces {
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, nonce);
        }
        Ok(Self {
            socket,
            client: local,
            nonces,
        })
    }

    /// The gateway's address for `gateway_ip` (PCP's port).
    pub fn gateway(gateway_ip: IpAddr) -> SocketAddr {
        SocketAddr::new(gateway_ip, NATPMP_PORT)
    }

    /// Asks whether a PCP server is there (ANNOUNCE): a NAT-PMP-only gateway says so at once.
    pub async fn announce(&self, transmissions: u32) -> Result<(), PcpError> {
        let request = announce_request(self.client);
        exchange(
            &self.socket,
            &request,
            transmissions,
            parse_announce_response,
        )
        .await
        .map(drop)
    }

    /// Maps (or, with lifetime 0, deletes) `internal`, preferably to the same port outside:
    /// on a NAT, at whatever address it has; on an IPv6 firewall, at this host's own.
    pub async fn map(
        &self,
        protocol: Protocol,
        internal: u16,
        suggested: u16,
        lifetime: u32,
        transmissions: u32,
    ) -> Result<MapResponse, PcpError> {
        let outside = match self.client {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            v6 => v6,
        };
        let nonce = &self.nonces[usize::from(protocol == Protocol::Tcp)];
        let request = map_request(
            nonce,
            protocol,
            internal,
            SocketAddr::new(outside, suggested),
            lifetime,
            self.client,
        );
        exchange(&self.socket, &request, transmissions, |data| {
            let r = parse_map_response(data, nonce, protocol)?;
            if r.internal != internal {
                return Err(PcpError::Unexpected);
            }
            Ok(r)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn response(request: &[u8; MAP_LEN], result: u8, external: SocketAddr) -> [u8; MAP_LEN] {
        let mut r = *request;
        r[1] = RESPONSE | OP_MAP;
        r[2] = 0;
        r[3] = result;
        r[8..12].copy_from_slice(&77u32.to_be_bytes());
        r[12..24].fill(0);
        r[42..44].copy_from_slice(&external.port().to_be_bytes());
        r[44..60].copy_from_slice(&wire(external.ip()));
        r
    }

    #[test]
    fn map_request_bytes() {
        let client: IpAddr = "192.168.17.2".parse().unwrap();
        let outside = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 40000);
        let m = map_request(&NONCE, Protocol::Udp, 40000, outside, 3600, client);
        let mut want = vec![2, 1, 0, 0, 0, 0, 0x0e, 0x10];
        want.extend_from_slice(&[0; 10]);
        want.extend_from_slice(&[0xff, 0xff, 192, 168, 17, 2]);
        want.extend_from_slice(&NONCE);
        want.extend_from_slice(&[17, 0, 0, 0, 0x9c, 0x40, 0x9c, 0x40]);
        want.extend_from_slice(&[0; 10]);
        want.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(m.to_vec(), want);
        // An IPv6 pinhole names this host's own address on both sides; TCP is protocol 6.
        let v6: IpAddr = "2001:db8:17::2".parse().unwrap();
        let m = map_request(&NONCE, Protocol::Tcp, 1, SocketAddr::new(v6, 1), 0, v6);
        assert_eq!(&m[4..8], &[0; 4]);
        assert_eq!(&m[8..24], &wire(v6));
        assert_eq!((m[36], &m[44..60]), (6, &wire(v6)[..]));
    }

    #[test]
    fn announce_codec() {
        let client: IpAddr = "192.168.17.2".parse().unwrap();
        let request = announce_request(client);
        let mut want = vec![2, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&wire(client));
        assert_eq!(request.to_vec(), want);
        let mut answer = request;
        answer[1] = 0x80;
        answer[8..12].copy_from_slice(&12u32.to_be_bytes());
        answer[12..].fill(0);
        assert_eq!(parse_announce_response(&answer), Ok(12));
        answer[3] = 8;
        assert_eq!(parse_announce_response(&answer), Err(PcpError::Refused(8)));
        assert_eq!(
            parse_announce_response(&answer[..23]),
            Err(PcpError::TooShort(23))
        );
        // A MAP answer is not an ANNOUNCE answer.
        answer[1] = 0x81;
        assert_eq!(parse_announce_response(&answer), Err(PcpError::Unexpected));
        assert_eq!(
            parse_announce_response(&[0, 128, 0, 1, 0, 0, 0, 9]),
            Err(PcpError::NatPmpOnly)
        );
    }

    #[test]
    fn map_response_codec() {
        let client: IpAddr = "192.168.17.2".parse().unwrap();
        let ask = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 40000);
        let request = map_request(&NONCE, Protocol::Udp, 40000, ask, 3600, client);
        let outside: SocketAddr = "203.0.113.27:40001".parse().unwrap();
        let ok = response(&request, 0, outside);
        assert_eq!(
            parse_map_response(&ok, &NONCE, Protocol::Udp),
            Ok(MapResponse {
                lifetime: 3600,
                epoch: 77,
                internal: 40000,
                external: outside,
            })
        );
        // Another mapping's answer (nonce, protocol) is not this one's.
        assert_eq!(
            parse_map_response(&ok, &[0; 12], Protocol::Udp),
            Err(PcpError::Unexpected)
        );
        assert_eq!(
            parse_map_response(&ok, &NONCE, Protocol::Tcp),
            Err(PcpError::Unexpected)
        );
        assert_eq!(
            parse_map_response(&ok[..59], &NONCE, Protocol::Udp),
            Err(PcpError::TooShort(59))
        );
        let refused = response(&request, 2, outside);
        let e = parse_map_response(&refused, &NONCE, Protocol::Udp).unwrap_err();
        assert_eq!(e, PcpError::Refused(2));
        assert_eq!(
            parse_map_response(&refused[..24], &NONCE, Protocol::Udp),
            Err(PcpError::Refused(2))
        );
        assert!(e.to_string().contains("result code 2 (not authorized)"));
        // A request echoed back (no R bit) is no answer.
        assert_eq!(
            parse_map_response(&request, &NONCE, Protocol::Udp),
            Err(PcpError::Unexpected)
        );
        // RFC 6886 §3.5: a NAT-PMP server's "unsupported version" to a PCP request.
        let natpmp = [0, 129, 0, 1, 0, 0, 0, 9];
        assert_eq!(
            parse_map_response(&natpmp, &NONCE, Protocol::Udp),
            Err(PcpError::NatPmpOnly)
        );
    }

    /// A PCP "gateway" on loopback: a stale answer for another nonce first, then the right
    /// one; the client skips the stale one, keeps its nonce for the deletion.
    #[tokio::test]
    async fn client_maps_and_deletes_with_the_same_nonce() {
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let client = Client::connect(Ipv4Addr::LOCALHOST.into(), server.local_addr().unwrap())
            .await
            .unwrap();
        let serve = async {
            let mut nonces = Vec::new();
            for _ in 0..2 {
                let mut buf = [0u8; 1100];
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                let request: [u8; MAP_LEN] = buf[..n].try_into().unwrap();
                nonces.push(request[24..36].to_vec());
                let outside: SocketAddr = "203.0.113.27:41000".parse().unwrap();
                let mut stale = response(&request, 0, outside);
                stale[24] ^= 0xff;
                server.send_to(&stale, from).await.unwrap();
                let good = response(&request, 0, outside);
                server.send_to(&good, from).await.unwrap();
            }
            nonces
        };
        let work = async {
            let made = client.map(Protocol::Tcp, 40000, 40000, 60, 2).await;
            let deleted = client.map(Protocol::Tcp, 40000, 0, 0, 2).await;
            (made, deleted)
        };
        let ((made, deleted), nonces) = tokio::join!(work, serve);
        assert_eq!(
            made.map(|r| (r.external, r.lifetime)),
            Ok(("203.0.113.27:41000".parse().unwrap(), 60))
        );
        assert!(deleted.is_ok());
        assert_eq!(nonces[0], nonces[1]);
    }
}
