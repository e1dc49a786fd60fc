//! Network helpers: the node's usable interface addresses, sockets bound the way warpgate needs
//! them (reuse-addr, one family per socket, large buffers), and the listen port derived from
//! the identity.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::timing::{TCP_KEEPALIVE_IDLE, TCP_KEEPALIVE_INTERVAL, TCP_USER_TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

/// First port of the range the identity-derived listen port is taken from. The range stays below
/// Linux's ephemeral ports (32768 and up) so outgoing connections do not collide with it.
const DERIVED_PORT_BASE: u16 = 10_000;
const DERIVED_PORT_SPAN: u16 = 22_000;
/// Socket buffer size asked for UDP sockets; QUIC throughput suffers with the small defaults.
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// The listen port for an identity: stable for a home, spread over a range to avoid collisions.
pub fn derived_port(fingerprint: u64) -> u16 {
    DERIVED_PORT_BASE + (fingerprint % u64::from(DERIVED_PORT_SPAN)) as u16
}

/// Addresses of this machine's interfaces a peer could reach: loopback included (two homes on one
/// machine), link-local, multicast and unspecified addresses left out.
pub fn interface_ips() -> io::Result<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|iface| iface.ip())
        .filter(|ip| is_usable(*ip))
        .collect();
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    ips.dedup();
    Ok(ips)
}

fn is_usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local() && !v4.is_multicast(),
        IpAddr::V6(v6) => {
            !v6.is_unspecified() && !v6.is_multicast() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

fn socket_for(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A listening TCP socket on `addr` (one family only).
pub fn bind_tcp_listener(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// A TCP socket bound to `port` on every address of `family`'s family (one family only),
/// sharing the port (SO_REUSEADDR and SO_REUSEPORT) with a listener and other sockets bound the
/// same way: hole punching connects from the port whose NAT mapping was learned, again and
/// again, while a listener on it catches a punch that arrives as an inbound connection.
pub fn shared_tcp_socket(family: IpAddr, port: u16) -> io::Result<tokio::net::TcpSocket> {
    let addr = SocketAddr::new(unspecified_like(family), port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
}

/// A UDP socket on a fresh port that carries both families (IPv4 peers appear as IPv4-mapped
/// IPv6 addresses, see [`canonical`] and [`for_socket`]), with large buffers; a plain IPv4
/// socket where this machine has no IPv6.
pub fn bind_udp_dual_stack() -> io::Result<std::net::UdpSocket> {
    let any6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 0).into();
    let dual = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).and_then(|socket| {
        socket.set_only_v6(false)?;
        socket.bind(&any6.into())?;
        Ok(socket)
    });
    match dual {
        Ok(socket) => {
            let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
            let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
            Ok(socket.into())
        }
        Err(e) => {
            tracing::debug!("no dual-stack UDP socket ({e}), IPv4 only");
            bind_udp((std::net::Ipv4Addr::UNSPECIFIED, 0).into())
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address (how a dual-stack socket reports IPv4 peers) as the
/// plain IPv4 address it stands for; any other address as it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `addr` in the form a socket of the given family sends to: IPv4 as IPv4-mapped IPv6 on an
/// IPv6 (dual-stack) socket, as quinn addresses IPv4 peers on one.
pub fn for_socket(addr: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if socket_is_v6 => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

/// The unspecified address of `ip`'s family.
pub fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// A UDP socket on `addr` (one family only) with large buffers, for QUIC.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

const KEEPALIVE_RETRIES: u32 = 3;

/// Sets up a link's TCP socket: no Nagle delay, and a bounded wait for a peer that vanished
/// without closing (keep-alive while idle, a user timeout while data is in flight).
pub fn tune_link_socket(tcp: &tokio::net::TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let socket = socket2::SockRef::from(tcp);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(TCP_KEEPALIVE_IDLE)
            .with_interval(TCP_KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES),
    )?;
    socket.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
}

/// A TCP stream that closes without losing its last bytes. Closing a socket whose receive queue
/// still holds unread data (for a link, the peer's flow-control updates) makes the kernel send
/// RST and discard what is still queued to send. Shutting down here ends our direction with a
/// FIN and then reads, discarding, until the peer ends its own, so the close is always clean.
/// (Regression: 3 in 80 TCP transfers lost their tail while the sender exited 0.)
pub struct LingeringTcp {
    inner: tokio::net::TcpStream,
    draining: bool,
}

impl LingeringTcp {
    pub fn new(inner: tokio::net::TcpStream) -> Self {
        Self {
            inner,
            draining: false,
        }
    }
}

impl tokio::io::AsyncRead for LingeringTcp {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for LingeringTcp {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::task::Poll;
        if !self.draining {
            std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_shutdown(cx))?;
            self.draining = true;
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            let read =
                tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.inner), cx, &mut buf);
            match std::task::ready!(read) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => continue,
                // The peer reset or vanished: nothing of ours is left to save.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The unspecified address of `addr`'s family with port 0, for outgoing sockets.
pub fn any_addr_like(addr: &SocketAddr) -> SocketAddr {
    SocketAddr::new(unspecified_like(addr.ip()), 0)
}

/// The source address the kernel would use to reach `remote` (a route lookup; nothing is sent).
pub fn route_source(remote: SocketAddr) -> Option<IpAddr> {
    let remote = canonical(remote);
    let probe = std::net::UdpSocket::bind(any_addr_like(&remote)).ok()?;
    probe.connect(remote).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_port_is_in_range_and_stable() {
        for f in [0, 1, u64::MAX, 123_456_789] {
            let p = derived_port(f);
            assert!((DERIVED_PORT_BASE..DERIVED_PORT_BASE + DERIVED_PORT_SPAN).contains(&p));
            assert_eq!(p, derived_port(f));
        }
    }

    #[test]
    fn link_local_is_not_usable() {
        assert!(!is_usable("fe80::1".parse().unwrap()));
        assert!(!is_usable("169.254.1.1".parse().unwrap()));
        assert!(is_usable("127.0.0.1".parse().unwrap()));
        assert!(is_usable("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let mapped = for_socket(v4, true);
        assert_eq!(
            mapped,
            "[::ffff:192.0.2.7]:4000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(canonical(mapped), v4);
        assert_eq!(for_socket(v4, false), v4);
        let v6: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        assert_eq!((for_socket(v6, true), canonical(v6)), (v6, v6));
    }

    #[test]
    fn a_dual_stack_socket_reaches_both_families() {
        let dual = bind_udp_dual_stack().unwrap();
        dual.set_nonblocking(false).unwrap();
        dual.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let port = dual.local_addr().unwrap().port();
        for peer in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(peer) = std::net::UdpSocket::bind(peer) else {
                continue; // no IPv6 on this machine
            };
            let at = SocketAddr::new(peer.local_addr().unwrap().ip(), port);
            peer.send_to(b"hi", at).unwrap();
            let mut buf = [0u8; 8];
            let (n, from) = dual.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hi");
            assert_eq!(canonical(from), peer.local_addr().unwrap());
        }
    }

    #[test]
    fn route_source_of_loopback_is_loopback() {
        assert_eq!(
            route_source("127.0.0.1:9".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn interfaces_include_loopback() {
        let ips = interface_ips().unwrap();
        assert!(ips.iter().any(|ip| ip.is_loopback()), "{ips:?}");
    }
}
