//! Port-mapping protocols of the home router: whether it speaks UPnP IGD (igd-next) or NAT-PMP
//! (RFC 6886), and the external address it reports. Both are asked by unicast to the default
//! gateway, never by multicast, each bounded by one timeout.
//!
//! NAT-PMP's external-address exchange is two bytes out and twelve back; it is written here as a
//! pure codec ([`natpmp_request`], [`parse_natpmp_response`]) rather than pulling a blocking
//! crate in for it. Neighbours: [`crate::discovery`] puts the results in the report.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::timing::NATPMP_RTO;
use serde::Serialize;
use tokio::net::UdpSocket;

/// Port of the SSDP responder (UPnP discovery).
const SSDP_PORT: u16 = 1900;
/// Port of a NAT-PMP server (RFC 6886 §3).
const NATPMP_PORT: u16 = 5351;
const NATPMP_TRANSMISSIONS: u32 = 2;

/// What one protocol found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortMapper {
    /// The router answers this protocol.
    pub available: bool,
    /// The router's external address, as it reports it.
    pub external: Option<IpAddr>,
    /// Why not, when it is not available.
    pub error: Option<String>,
}

impl PortMapper {
    fn failed(error: impl Into<String>) -> Self {
        PortMapper {
            available: false,
            external: None,
            error: Some(error.into()),
        }
    }
}

/// The IPv4 default gateway, from `/proc/net/route` (Linux); `None` elsewhere or without one.
pub fn default_gateway_v4() -> Option<Ipv4Addr> {
    parse_proc_net_route(&std::fs::read_to_string("/proc/net/route").ok()?)
}

/// The gateway of the first default route in the text of `/proc/net/route`.
pub fn parse_proc_net_route(text: &str) -> Option<Ipv4Addr> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gateway) = (f.get(1)?, f.get(2)?);
        if *dest != "00000000" {
            return None;
        }
        // Host byte order as printed by the kernel: little-endian on the machines we run on.
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        let ip = Ipv4Addr::from(raw.to_le_bytes());
        (!ip.is_unspecified()).then_some(ip)
    })
}

/// UPnP IGD: an SSDP search sent to the gateway itself, then GetExternalIPAddress.
pub async fn upnp(local: Ipv4Addr, gateway: Ipv4Addr, timeout: Duration) -> PortMapper {
    let options = igd_next::SearchOptions {
        bind_addr: SocketAddr::new(local.into(), 0),
        broadcast_address: SocketAddr::new(gateway.into(), SSDP_PORT),
        timeout: Some(timeout),
        single_search_timeout: Some(timeout),
    };
    let work = async {
        let gw = igd_next::aio::tokio::search_gateway(options)
            .await
            .map_err(|e| format!("no UPnP IGD answered: {e}"))?;
        gw.get_external_ip()
            .await
            .map_err(|e| format!("the IGD did not give its external address: {e}"))
    };
    match tokio::time::timeout(timeout * 2, work).await {
        Ok(Ok(ip)) => PortMapper {
            available: true,
            external: Some(ip),
            error: None,
        },
        Ok(Err(e)) => PortMapper::failed(e),
        Err(_) => PortMapper::failed(format!(
            "no UPnP IGD answered within {} ms",
            (timeout * 2).as_millis()
        )),
    }
}

/// The NAT-PMP external-address request (version 0, opcode 0).
pub fn natpmp_request() -> [u8; 2] {
    [0, 0]
}

/// Reads a NAT-PMP external-address response: the address, or why it is not one.
pub fn parse_natpmp_response(data: &[u8]) -> Result<Ipv4Addr, String> {
    let Some(d) = data.get(..12) else {
        return Err(format!("a {}-byte answer is too short", data.len()));
    };
    if d[0] != 0 || d[1] != 128 {
        return Err(format!(
            "not an external-address response (version {}, op {})",
            d[0], d[1]
        ));
    }
    let result = u16::from_be_bytes([d[2], d[3]]);
    if result != 0 {
        return Err(format!("the router refused with result code {result}"));
    }
    Ok(Ipv4Addr::new(d[8], d[9], d[10], d[11]))
}

/// NAT-PMP: ask the gateway for its external address.
pub async fn natpmp(local: Ipv4Addr, gateway: Ipv4Addr) -> PortMapper {
    let socket = match UdpSocket::bind((local, 0)).await {
        Ok(s) => s,
        Err(e) => return PortMapper::failed(format!("cannot bind: {e}")),
    };
    let to = SocketAddr::new(gateway.into(), NATPMP_PORT);
    if let Err(e) = socket.connect(to).await {
        return PortMapper::failed(format!("cannot reach the gateway: {e}"));
    }
    let mut buf = [0u8; 64];
    let mut rto = NATPMP_RTO;
    let mut garbage = None;
    for _ in 0..NATPMP_TRANSMISSIONS {
        if let Err(e) = socket.send(&natpmp_request()).await {
            return PortMapper::failed(format!("no NAT-PMP server: {e}"));
        }
        let deadline = tokio::time::Instant::now() + rto;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Ok(Ok(n)) => match parse_natpmp_response(&buf[..n]) {
                    Ok(ip) => {
                        return PortMapper {
                            available: true,
                            external: Some(ip.into()),
                            error: None,
                        }
                    }
                    Err(e) => garbage = Some(e),
                },
                // Connection refused (ICMP port unreachable) and the like: nobody there.
                Ok(Err(e)) => return PortMapper::failed(format!("no NAT-PMP server: {e}")),
                Err(_) => break,
            }
        }
        rto *= 2;
    }
    PortMapper::failed(garbage.unwrap_or_else(|| "no NAT-PMP server answered".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_gateway() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t0011A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                    eth0\t00000000\t0111A8C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(
            parse_proc_net_route(text),
            Some(Ipv4Addr::new(192, 168, 17, 1))
        );
        assert_eq!(parse_proc_net_route("Iface\n"), None);
        assert_eq!(parse_proc_net_route("garbage"), None);
        assert_eq!(parse_proc_net_route("h\nx 00000000 zz\n"), None);
    }

    #[test]
    fn natpmp_codec() {
        let ok = [0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 27];
        assert_eq!(
            parse_natpmp_response(&ok),
            Ok(Ipv4Addr::new(203, 0, 113, 27))
        );
        assert!(parse_natpmp_response(&ok[..11]).is_err());
        assert!(parse_natpmp_response(&[]).is_err());
        let refused = [0, 128, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0];
        assert!(parse_natpmp_response(&refused)
            .unwrap_err()
            .contains("result code 3"));
        let other_op = [0, 129, 0, 0, 0, 0, 0, 9, 1, 2, 3, 4];
        assert!(parse_natpmp_response(&other_op).is_err());
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
