//! The UDP transport: QUIC (quinn) on rustls with the node's pinned keys. Streams are QUIC
//! streams. Keep-alives hold NAT mappings open; the idle timeout bounds how long a vanished peer
//! goes unnoticed.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::limits::{CONNECTION_WINDOW, DATAGRAM_BUFFER, UNTAKEN_WINDOW};
use super::{
    pin, CloseReason, Inner, Link, LinkError, LinkInfo, Path, RecvInner, RecvStream, SendInner,
    SendStream, Stream, Transport,
};
use crate::identity::PublicKey;
use crate::timing::{QUIC_CLOSE_LINGER, QUIC_IDLE_TIMEOUT, QUIC_KEEP_ALIVE};

/// Per-stream flow-control window: a stream may use the whole connection window.
const STREAM_WINDOW: u32 = CONNECTION_WINDOW;
/// Data sent and not yet acknowledged, over all streams: a peer that stops acknowledging holds
/// no more of ours than it may send us.
const SEND_WINDOW: u32 = CONNECTION_WINDOW;
/// Streams a peer may have open at once: [`super::limits::MAX_STREAMS`].
const MAX_STREAMS: u32 = super::limits::MAX_STREAMS;
/// Connection attempts quinn holds before the listener decides on each (it decides as they
/// come; more than this waiting means it is swamped, and quinn refuses the rest itself).
const MAX_INCOMING: usize = 2 * super::limits::MAX_HANDSHAKES;
/// Bytes quinn buffers for one connection attempt before it is decided: a client's first
/// flight is a few KiB (no 0-RTT here), so a client cannot park more.
const INCOMING_BUFFER: u64 = 64 << 10;
/// The same for all attempts at once.
const INCOMING_BUFFER_TOTAL: u64 = 2 << 20;
/// Largest UDP payload probed for and accepted.
const MAX_UDP_PAYLOAD: u16 = 6_000;

/// The transport settings; `receive_window` is the connection-wide flow-control window.
fn transport_config(receive_window: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        QUIC_IDLE_TIMEOUT.as_millis() as u32,
    ))));
    t.keep_alive_interval(Some(QUIC_KEEP_ALIVE));
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(quinn::VarInt::from_u32(receive_window));
    t.send_window(u64::from(SEND_WINDOW));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // QUIC datagrams carry UDP forwarding (crate::udp_forward); bounded both ways.
    t.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    t.datagram_send_buffer_size(DATAGRAM_BUFFER);
    // Probe for datagrams larger than 1500 bytes: loopback and many LANs carry them, and QUIC's
    // cost is per packet. Internet paths settle at their real MTU. The bound keeps quinn's
    // batches of up to 10 segments within the kernel's 64 KiB limit for one GSO send.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    Arc::new(t)
}

/// The server half of an endpoint that only the peer `allowed` names reaches (a punching kit:
/// either side may be the QUIC server there, so its windows are open from the start).
pub fn server_config(
    creds: &pin::Credentials,
    allowed: Option<Vec<crate::identity::Allowed>>,
) -> Result<quinn::ServerConfig, LinkError> {
    server_config_with(creds, allowed, CONNECTION_WINDOW)
}

/// The server half of a listener's endpoint, open to whoever has the address: a connection's
/// window is [`UNTAKEN_WINDOW`] until the listener's driver takes its link
/// ([`QuicLink::widen`]).
pub fn listener_config(
    creds: &pin::Credentials,
    allowed: Option<Vec<crate::identity::Allowed>>,
) -> Result<quinn::ServerConfig, LinkError> {
    server_config_with(creds, allowed, UNTAKEN_WINDOW)
}

fn server_config_with(
    creds: &pin::Credentials,
    allowed: Option<Vec<crate::identity::Allowed>>,
    receive_window: u32,
) -> Result<quinn::ServerConfig, LinkError> {
    let tls = pin::server_config(creds, allowed)?;
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|_| LinkError::Protocol("TLS config unfit for QUIC"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(transport_config(receive_window))
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    Ok(config)
}

/// A QUIC endpoint on an already bound UDP socket (so the mapping learned on it is the one used).
pub fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|_| std::io::Error::other("invalid UDP payload size"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// A QUIC endpoint on a custom socket ([`super::demux`], [`super::paths`]), configured as
/// [`endpoint`] configures one on a plain socket.
pub(super) fn endpoint_on(
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|_| std::io::Error::other("invalid UDP payload size"))?;
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// The client half of a connection pinned to `expected`; mismatches land in the slot.
pub(super) fn client_config(
    creds: &pin::Credentials,
    expected: PublicKey,
) -> Result<(quinn::ClientConfig, pin::MismatchSlot), LinkError> {
    let (tls, mismatch) = pin::client_config(creds, expected)?;
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|_| LinkError::Protocol("TLS config unfit for QUIC"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config(CONNECTION_WINDOW));
    Ok((config, mismatch))
}

pub(super) struct QuicLink {
    pub(super) connection: quinn::Connection,
    endpoint: quinn::Endpoint,
    /// An endpoint made for this link alone is closed with it.
    pub(super) owns_endpoint: bool,
}

/// The address this side of the connection uses. quinn knows the local IP only on sockets that
/// receive packet info; otherwise ask the kernel which source it routes to the peer from.
fn local_addr(connection: &quinn::Connection, endpoint: &quinn::Endpoint) -> SocketAddr {
    let bound = endpoint
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let ip = connection
        .local_ip()
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_canonical())
        .or_else(|| crate::net::route_source(connection.remote_address()))
        .unwrap_or(bound.ip());
    SocketAddr::new(ip, bound.port())
}

fn connection_error(
    e: quinn::ConnectionError,
    mismatch: Option<&std::sync::Mutex<Option<pin::KeyMismatch>>>,
) -> LinkError {
    if let Some(m) = mismatch.and_then(|m| m.lock().ok().and_then(|g| g.clone())) {
        return LinkError::KeyMismatch(m);
    }
    // TLS alert 49 (access_denied) arrives as QUIC crypto error 0x100 + 49.
    const ACCESS_DENIED: u64 = 0x100 + 49;
    match e {
        quinn::ConnectionError::ConnectionClosed(ref close)
            if u64::from(close.error_code) == ACCESS_DENIED =>
        {
            LinkError::Refused("this node is not in the listener's --allow list".into())
        }
        quinn::ConnectionError::TimedOut => LinkError::Timeout("QUIC handshake"),
        quinn::ConnectionError::ApplicationClosed(ref close) => {
            LinkError::PeerClosed(application_reason(close))
        }
        e => LinkError::Lost(e.to_string()),
    }
}

/// What the peer said when it closed the connection: its reason text (printable characters
/// only; it reaches a terminal), else its code.
fn application_reason(close: &quinn::ApplicationClose) -> String {
    let text: String = String::from_utf8_lossy(&close.reason)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if text.is_empty() {
        format!("code {}", close.error_code)
    } else {
        text
    }
}

/// The peer's reason, when the connection ended because the peer closed it.
pub(crate) fn closed_by_peer(e: &quinn::ConnectionError) -> Option<String> {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => Some(application_reason(close)),
        _ => None,
    }
}

/// A stream read or write error, with the peer's reason when it closed the link or abandoned
/// the stream for one. Only failures pass through here, never the data path.
pub(super) fn stream_error(e: std::io::Error) -> std::io::Error {
    let inner = e.get_ref();
    let reason = if let Some(read) = inner.and_then(|i| i.downcast_ref::<quinn::ReadError>()) {
        match read {
            quinn::ReadError::Reset(code) => {
                CloseReason::from_stream_code(code.into_inner()).map(|r| r.text().to_string())
            }
            quinn::ReadError::ConnectionLost(lost) => closed_by_peer(lost),
            _ => None,
        }
    } else if let Some(write) = inner.and_then(|i| i.downcast_ref::<quinn::WriteError>()) {
        match write {
            quinn::WriteError::Stopped(code) => {
                CloseReason::from_stream_code(code.into_inner()).map(|r| r.text().to_string())
            }
            quinn::WriteError::ConnectionLost(lost) => closed_by_peer(lost),
            _ => None,
        }
    } else {
        None
    };
    match reason {
        Some(reason) => super::peer_closed(reason),
        None => e,
    }
}

/// Connector side: a QUIC connection from `endpoint` to `remote`, pinned to `expected`.
/// `owns_endpoint` says whether closing the link should also close the endpoint.
pub async fn connect(
    endpoint: quinn::Endpoint,
    owns_endpoint: bool,
    remote: SocketAddr,
    creds: &pin::Credentials,
    expected: PublicKey,
) -> Result<Link, LinkError> {
    let started = std::time::Instant::now();
    let (config, mismatch) = client_config(creds, expected)?;
    let connecting = endpoint
        .connect_with(config, remote, crate::TLS_SERVER_NAME)
        .map_err(|e| LinkError::Io(std::io::Error::other(e)))?;
    let connection = connecting
        .await
        .map_err(|e| connection_error(e, Some(&mismatch)))?;
    let local = local_addr(&connection, &endpoint);
    Ok(Link {
        inner: Inner::Quic(QuicLink {
            connection,
            endpoint,
            owns_endpoint,
        }),
        held: None,
        peer_note: Vec::new(),
        info: LinkInfo {
            peer: expected,
            transport: Transport::Quic,
            path: Path::Direct,
            local,
            remote,
            started,
        },
        relayed: None,
    })
}

/// Listener side: completes an inbound QUIC handshake (client key checked by the verifier).
pub async fn accept(
    incoming: quinn::Incoming,
    endpoint: quinn::Endpoint,
) -> Result<Link, LinkError> {
    let started = std::time::Instant::now();
    let remote = crate::net::canonical(incoming.remote_address());
    let connection = incoming.await.map_err(|e| connection_error(e, None))?;
    let certs = connection.peer_identity().and_then(|any| {
        any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let peer = pin::peer_key(certs.as_deref().map(|c| c.as_slice()))
        .ok_or(LinkError::Protocol("peer sent no key"))?;
    let local = local_addr(&connection, &endpoint);
    Ok(Link {
        inner: Inner::Quic(QuicLink {
            connection,
            endpoint,
            owns_endpoint: false,
        }),
        held: None,
        peer_note: Vec::new(),
        info: LinkInfo {
            peer,
            transport: Transport::Quic,
            path: Path::Direct,
            local,
            remote,
            started,
        },
        relayed: None,
    })
}

impl QuicLink {
    pub(super) async fn open(&self) -> Result<Stream, LinkError> {
        let (send, recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|e| connection_error(e, None))?;
        Ok(Stream {
            send: SendStream(SendInner::Quic(send)),
            recv: RecvStream(RecvInner::Quic(recv)),
        })
    }

    pub(super) async fn accept(&self) -> Result<Option<Stream>, LinkError> {
        match self.connection.accept_bi().await {
            Ok((send, recv)) => Ok(Some(Stream {
                send: SendStream(SendInner::Quic(send)),
                recv: RecvStream(RecvInner::Quic(recv)),
            })),
            Err(quinn::ConnectionError::ApplicationClosed(_)) => Ok(None),
            Err(e) => Err(connection_error(e, None)),
        }
    }

    pub(super) async fn closed(&self) -> LinkError {
        connection_error(self.connection.closed().await, None)
    }

    /// Listener: opens the connection window to [`CONNECTION_WINDOW`] (a no-op where it is).
    pub(super) fn widen(&self) {
        self.connection
            .set_receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW));
    }

    pub(super) async fn close(self, reason: CloseReason) {
        self.connection.close(
            quinn::VarInt::from_u32(reason.code()),
            reason.text().as_bytes(),
        );
        if self.owns_endpoint {
            // Lets the CONNECTION_CLOSE go out before the socket goes. Waiting out the whole
            // draining period (three probe timeouts, ~90 ms even on loopback) would only serve
            // retransmitting it, and the peer ends its side by itself once the data is through.
            let _ = tokio::time::timeout(QUIC_CLOSE_LINGER, self.endpoint.wait_idle()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u32, reason: &[u8]) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(code),
            reason: bytes::Bytes::copy_from_slice(reason),
        })
    }

    #[test]
    fn a_shutdown_reset_reads_as_the_peer_closing_with_its_reason() {
        let code = quinn::VarInt::from_u32(CloseReason::Shutdown.code());
        let e = stream_error(quinn::ReadError::Reset(code).into());
        assert_eq!(e.to_string(), "the peer closed the link: shutting down");
        let e = stream_error(quinn::WriteError::Stopped(code).into());
        assert_eq!(e.to_string(), "the peer closed the link: shutting down");
    }

    #[test]
    fn other_resets_are_left_as_they_are() {
        let e = stream_error(quinn::ReadError::Reset(quinn::VarInt::from_u32(1)).into());
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(!e.to_string().contains("the peer closed"), "{e}");
    }

    #[test]
    fn a_closed_connection_carries_the_peer_text_printable_only() {
        let lost = quinn::ReadError::ConnectionLost(closed(7, b"bye\x1b[2J now"));
        let e = stream_error(lost.into());
        assert_eq!(e.to_string(), "the peer closed the link: bye[2J now");
        let e = connection_error(closed(9, b""), None);
        assert_eq!(e.to_string(), "the peer closed the link: code 9");
    }
}
