//! UPnP IGD through igd-next's tokio API: the gateway is searched by an SSDP request sent to the
//! default gateway itself (never multicast), then asked for its external address and for port
//! mappings over SOAP. Every call is bounded here: igd-next bounds the search, not the SOAP
//! requests.
//!
//! Neighbours: [`super::keeper`] maps and renews with [`Igd`]; nat-info asks [`upnp()`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use igd_next::aio::tokio::Tokio;
use igd_next::{AddPortError, PortMappingProtocol};

use super::{PortMapper, Protocol};
use crate::timing::PORTMAP_REQUEST_TIMEOUT;

/// Port of the SSDP responder (UPnP discovery).
const SSDP_PORT: u16 = 1900;
/// The mapping's description, as `upnpc -l` shows it.
const DESCRIPTION: &str = "warpgate";

impl From<Protocol> for PortMappingProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Udp => PortMappingProtocol::UDP,
            Protocol::Tcp => PortMappingProtocol::TCP,
        }
    }
}

/// A gateway that answered the search, and the local address it maps to.
pub struct Igd {
    gateway: igd_next::aio::Gateway<Tokio>,
    local: Ipv4Addr,
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(PORTMAP_REQUEST_TIMEOUT, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {} ms",
            PORTMAP_REQUEST_TIMEOUT.as_millis()
        )),
    }
}

/// The SSDP search igd-next sends, for [`ssdp_answers`].
const SEARCH: &[u8] = b"M-SEARCH * HTTP/1.1\r\nHost:239.255.255.250:1900\r\n\
ST:urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nMan:\"ssdp:discover\"\r\nMX:3\r\n\r\n";

/// Whether anything answers an SSDP search on `gateway`'s port 1900, asked from a connected
/// socket so that a router without UPnP says so at once (ICMP port unreachable: refused)
/// instead of letting the search time out. An answer of any kind is enough: igd-next's
/// search then does the real work.
pub async fn ssdp_answers(
    local: Ipv4Addr,
    gateway: Ipv4Addr,
    timeout: Duration,
) -> Result<(), String> {
    let socket = tokio::net::UdpSocket::bind((local, 0))
        .await
        .map_err(|e| format!("cannot bind: {e}"))?;
    socket
        .connect(SocketAddr::new(gateway.into(), SSDP_PORT))
        .await
        .map_err(|e| format!("cannot reach the gateway: {e}"))?;
    socket
        .send(SEARCH)
        .await
        .map_err(|e| format!("no UPnP IGD: {e}"))?;
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("no UPnP IGD: {e}")),
        Err(_) => Err(format!(
            "no UPnP IGD answered within {} ms",
            timeout.as_millis()
        )),
    }
}

impl Igd {
    /// SSDP search sent to `gateway` from `local`, bounded by `timeout`.
    pub async fn search(
        local: Ipv4Addr,
        gateway: Ipv4Addr,
        timeout: Duration,
    ) -> Result<Igd, String> {
        let options = igd_next::SearchOptions {
            bind_addr: SocketAddr::new(local.into(), 0),
            broadcast_address: SocketAddr::new(gateway.into(), SSDP_PORT),
            timeout: Some(timeout),
            single_search_timeout: Some(timeout),
        };
        // The search includes fetching the description over HTTP: bounded twice as long.
        match tokio::time::timeout(timeout * 2, igd_next::aio::tokio::search_gateway(options)).await
        {
            Ok(Ok(gateway)) => Ok(Igd { gateway, local }),
            Ok(Err(e)) => Err(format!("no UPnP IGD answered: {e}")),
            Err(_) => Err(format!(
                "no UPnP IGD answered within {} ms",
                (timeout * 2).as_millis()
            )),
        }
    }

    pub async fn external_ip(&self) -> Result<IpAddr, String> {
        bounded(
            "the IGD did not give its external address",
            self.gateway.get_external_ip(),
        )
        .await
    }

    /// Maps `internal` on this host to `external` outside (0: any port) for `lease` seconds.
    /// A port taken by another host moves to any free one; an IGD that only keeps permanent
    /// mappings gets one (deleted on exit, see [`super::keeper`]). Returns the external port
    /// and the lease granted.
    pub async fn map(
        &self,
        protocol: Protocol,
        internal: u16,
        external: u16,
        lease: u32,
    ) -> Result<(u16, u32), String> {
        let local = SocketAddr::new(self.local.into(), internal);
        let add = |port: u16, lease: u32| {
            bounded(
                "AddPortMapping",
                self.gateway
                    .add_port(protocol.into(), port, local, lease, DESCRIPTION),
            )
        };
        let wanted = if external == 0 { internal } else { external };
        let first = tokio::time::timeout(
            PORTMAP_REQUEST_TIMEOUT,
            self.gateway
                .add_port(protocol.into(), wanted, local, lease, DESCRIPTION),
        )
        .await;
        match first {
            Ok(Ok(())) => Ok((wanted, lease)),
            Ok(Err(AddPortError::OnlyPermanentLeasesSupported)) => {
                add(wanted, 0).await.map(|()| (wanted, 0))
            }
            Ok(Err(AddPortError::PortInUse | AddPortError::SamePortValuesRequired)) => {
                let port = bounded(
                    "AddAnyPortMapping",
                    self.gateway
                        .add_any_port(protocol.into(), local, lease, DESCRIPTION),
                )
                .await?;
                Ok((port, lease))
            }
            Ok(Err(e)) => Err(format!("AddPortMapping: {e}")),
            Err(_) => Err(format!(
                "AddPortMapping: no answer within {} ms",
                PORTMAP_REQUEST_TIMEOUT.as_millis()
            )),
        }
    }

    pub async fn unmap(&self, protocol: Protocol, external: u16) -> Result<(), String> {
        bounded(
            "DeletePortMapping",
            self.gateway.remove_port(protocol.into(), external),
        )
        .await
    }
}

/// UPnP IGD for nat-info: the search, then GetExternalIPAddress.
pub async fn upnp(local: Ipv4Addr, gateway: Ipv4Addr, timeout: Duration) -> PortMapper {
    let found = match Igd::search(local, gateway, timeout).await {
        Ok(igd) => igd.external_ip().await,
        Err(e) => Err(e),
    };
    match found {
        Ok(ip) => PortMapper {
            available: true,
            external: Some(ip),
            error: None,
        },
        Err(e) => PortMapper::failed(e),
    }
}
