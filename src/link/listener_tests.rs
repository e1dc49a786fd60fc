//! The listener under strangers, on loopback: handshake caps, QUIC address validation, the cap
//! on links and the hand-off timeout, per-link stream and buffer limits, and a connector that
//! does not read more than it needs from a listener.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::identity::{Identity, PublicKey};
use crate::link::limits::{
    CONNECTION_WINDOW, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, MAX_LINKS, MAX_STREAMS,
    UNTAKEN_WINDOW,
};
use crate::link::{Transport, Verified, MAX_NOTE};
use crate::timing::VERIFY_TIMEOUT;

/// Issue 13: a link gets streams "in the tens to hundreds" (4096 before).
const HUNDREDS_OF_STREAMS: usize = 256;
/// Issue 13: a peer parks "a few MiB" per link (16 MiB over TCP, 32 over QUIC before).
const FEW_MIB: usize = 4 << 20;
/// What a link nobody took yet may hold: HTTP/2's initial window, not a link's full one.
const NEXT_TO_NOTHING: usize = 64 << 10;

/// A listener on a free port, with the key connectors pin.
fn listening() -> (Listener, PublicKey) {
    let identity = Identity::generate();
    let creds = pin::Credentials::new(&identity).unwrap();
    (
        Listener::bind(0, &creds, None).unwrap(),
        identity.public_key(),
    )
}

fn connector() -> pin::Credentials {
    pin::Credentials::new(&Identity::generate()).unwrap()
}

fn loopback(port: u16) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, port).into()
}

/// A link to the listener over `transport`, handshaken and verified but not yet selected.
async fn verified(transport: Transport, port: u16, key: PublicKey) -> (Link, Verified) {
    let creds = connector();
    let link = match transport {
        Transport::Tcp => {
            let tcp = tokio::net::TcpStream::connect(loopback(port))
                .await
                .unwrap();
            tls::connect(tcp, &creds, key).await.unwrap()
        }
        Transport::Quic => {
            let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let endpoint = quic::endpoint(socket, None).unwrap();
            quic::connect(endpoint, true, loopback(port), &creds, key)
                .await
                .unwrap()
        }
    };
    let verified = link.verify().await.unwrap();
    (link, verified)
}

/// A link to the listener over `transport`, selected.
async fn selected(transport: Transport, port: u16, key: PublicKey) -> Result<Link, LinkError> {
    let (link, verified) = verified(transport, port, key).await;
    verified.select(&[]).await.map(|_| link)
}

/// Takes every link the listener hands out and keeps it until the test ends.
fn taking(mut listener: Listener) -> tokio::sync::mpsc::UnboundedReceiver<Link> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((link, _)) = listener.accept().await {
            if tx.send(link).is_err() {
                break;
            }
        }
    });
    rx
}

/// A TCP connection to `port` from source address `from`, saying nothing.
async fn silent_tcp(from: Ipv4Addr, port: u16) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(loopback(port)).await.unwrap()
}

/// `count` silent connections from `from`.
async fn silent_tcps(from: Ipv4Addr, port: u16, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut conns = Vec::new();
    for _ in 0..count {
        conns.push(silent_tcp(from, port).await);
    }
    conns
}

/// Whether the listener closed `conn` within `within` (EOF or reset), rather than waiting on.
async fn closed_within(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, conn.read(&mut byte)).await {
        Ok(Ok(n)) => n == 0,
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test]
async fn handshakes_beyond_the_caps_are_closed_at_once() {
    let (listener, _) = listening();
    let port = listener.port();
    // One host takes its share; its next connection is closed at once instead of waiting.
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = silent_tcps(flooder, port, MAX_HANDSHAKES_PER_SOURCE).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = silent_tcp(flooder, port).await;
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "a connection past the per-source cap was kept"
    );
    // Others still get a handshake: the listener waits for their TLS hello.
    let mut other = silent_tcp(Ipv4Addr::new(127, 0, 0, 3), port).await;
    assert!(!closed_within(&mut other, Duration::from_millis(300)).await);
    held.push(other);
    // Enough hosts fill the global cap; then everyone's next connection is closed at once.
    for host in 4u8.. {
        if held.len() >= MAX_HANDSHAKES {
            break;
        }
        let room = MAX_HANDSHAKES_PER_SOURCE.min(MAX_HANDSHAKES - held.len());
        held.extend(silent_tcps(Ipv4Addr::new(127, 0, 0, host), port, room).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut newcomer = silent_tcp(Ipv4Addr::new(127, 0, 1, 1), port).await;
    assert!(
        closed_within(&mut newcomer, Duration::from_secs(2)).await,
        "a connection past the global cap was kept"
    );
    // Held connections are still open, waiting for their hello.
    assert!(!closed_within(&mut held[0], Duration::from_millis(100)).await);
    drop(listener);
}

/// A UDP socket for quinn that notes whether a Retry packet came in.
#[derive(Debug)]
struct RetrySeen {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    seen: Arc<std::sync::atomic::AtomicBool>,
}

impl quinn::AsyncUdpSocket for RetrySeen {
    fn create_io_poller(self: Arc<Self>) -> std::pin::Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }
    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }
    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = self.inner.poll_recv(cx, bufs, meta);
        if let std::task::Poll::Ready(Ok(count)) = &polled {
            for buf in bufs.iter().take(*count) {
                // QUIC v1 long header of type Retry: 0b1111_xxxx.
                if buf.first().is_some_and(|b| b & 0xf0 == 0xf0) {
                    self.seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        polled
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A QUIC link to `port` whose client notes whether it was asked to retry.
async fn quic_through_retry(port: u16, key: PublicKey) -> (Result<Link, LinkError>, bool) {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let runtime = quinn::default_runtime().unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let socket = Arc::new(RetrySeen {
        inner: runtime.wrap_udp_socket(socket).unwrap(),
        seen: seen.clone(),
    });
    let endpoint = quic::endpoint_on(socket, None).unwrap();
    let link = quic::connect(endpoint, true, loopback(port), &connector(), key).await;
    (link, seen.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test]
async fn quic_clients_prove_their_address_once_handshakes_pile_up() {
    let (listener, key) = listening();
    let port = listener.port();
    let mut links = taking(listener);
    // A quiet listener does not make anyone wait a round trip.
    let (link, retried) = quic_through_retry(port, key).await;
    assert!(!retried, "retried with nothing going on");
    drop(link);
    // Handshakes pile up (silent TCP connections from a few hosts)...
    let mut _held = Vec::new();
    for host in 1u8.. {
        if _held.len() >= RETRY_ABOVE {
            break;
        }
        let room = MAX_HANDSHAKES_PER_SOURCE.min(RETRY_ABOVE - _held.len());
        _held.extend(silent_tcps(Ipv4Addr::new(127, 0, 2, host), port, room).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...so a new QUIC client is asked to retry, and still gets through.
    let (link, retried) = quic_through_retry(port, key).await;
    assert!(retried, "no Retry with {RETRY_ABOVE} handshakes in flight");
    let link = link.unwrap();
    let verified = link.verify().await.unwrap();
    verified.select(&[]).await.unwrap();
    assert!(links.recv().await.is_some());
}

#[tokio::test]
async fn a_link_the_driver_does_not_take_is_turned_away_busy() {
    // Never accepting: a transfer is in progress, say.
    let (listener, key) = listening();
    for transport in [Transport::Tcp, Transport::Quic] {
        let (_link, verified) = verified(transport, listener.port(), key).await;
        let started = Instant::now();
        let refused = verified.select(&[]).await.unwrap_err();
        assert!(
            refused.to_string().contains("busy"),
            "{transport:?}: {refused}"
        );
        let took = started.elapsed();
        assert!(
            took >= HANDOFF_TIMEOUT - Duration::from_millis(100) && took < VERIFY_TIMEOUT,
            "{transport:?}: turned away after {took:?}"
        );
    }
}

#[tokio::test]
async fn links_beyond_the_cap_are_turned_away_at_once_until_one_ends() {
    let (listener, key) = listening();
    let port = listener.port();
    let mut links = taking(listener);
    let mut held = Vec::new();
    for i in 0..MAX_LINKS {
        let transport = if i % 2 == 0 {
            Transport::Tcp
        } else {
            Transport::Quic
        };
        let _connector_side = selected(transport, port, key).await.unwrap();
        held.push((_connector_side, links.recv().await.unwrap()));
    }
    let started = Instant::now();
    let refused = selected(Transport::Tcp, port, key)
        .await
        .err()
        .expect("turned away");
    assert!(refused.to_string().contains("busy"), "{refused}");
    assert!(started.elapsed() < HANDOFF_TIMEOUT, "not at once");
    // One link ends on the listener's side: its place is free again.
    let (_, listener_side) = held.pop().unwrap();
    drop(listener_side);
    let _next = selected(Transport::Quic, port, key).await.unwrap();
    assert!(links.recv().await.is_some());
}

/// Streams that reach the listener when the connector opens (and keeps open) as many as it
/// can: on QUIC the connector's open waits for credit, on TCP h2 queues the extra ones on the
/// connector's side.
async fn open_at_once(transport: Transport, link: &Link, listener_side: &Link) -> usize {
    let mut open = Vec::new();
    while open.len() < 2 * HUNDREDS_OF_STREAMS {
        match tokio::time::timeout(Duration::from_millis(500), link.open()).await {
            Ok(stream) => {
                let mut stream = stream.unwrap();
                // A QUIC stream reaches the peer with its first byte; h2 sent its headers.
                if transport == Transport::Quic {
                    stream.send.write_all(b"x").await.unwrap();
                }
                open.push(stream);
            }
            Err(_) => break,
        }
    }
    let mut seen = Vec::new();
    while let Ok(Ok(Some(stream))) =
        tokio::time::timeout(Duration::from_millis(500), listener_side.accept()).await
    {
        seen.push(stream);
    }
    seen.len()
}

#[tokio::test]
async fn a_peer_gets_a_bounded_number_of_streams() {
    let (listener, key) = listening();
    let port = listener.port();
    let mut links = taking(listener);
    for transport in [Transport::Tcp, Transport::Quic] {
        let link = selected(transport, port, key).await.unwrap();
        let listener_side = links.recv().await.unwrap();
        let open = open_at_once(transport, &link, &listener_side).await;
        // QUIC's control stream may not have been credited back yet.
        assert!(
            open <= HUNDREDS_OF_STREAMS && open + 1 >= MAX_STREAMS as usize,
            "{transport:?}: {open} streams open at once"
        );
    }
}

#[tokio::test]
async fn streams_the_driver_does_not_take_are_bounded() {
    let (listener, key) = listening();
    let port = listener.port();
    let mut links = taking(listener);
    let link = selected(Transport::Tcp, port, key).await.unwrap();
    let listener_side = links.recv().await.unwrap();
    // Open and abandon far more streams than may be open at once; the driver takes none.
    for _ in 0..3 * HUNDREDS_OF_STREAMS {
        let mut stream = link.open().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.send.write_all(b"x")).await;
        stream.send.reset();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut queued = 0;
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_millis(300), listener_side.accept()).await
    {
        queued += 1;
    }
    assert!(
        queued <= HUNDREDS_OF_STREAMS,
        "{queued} streams queued for the driver"
    );
}

/// Bytes the connector can push into streams the listener never reads, until every write
/// waits: what one peer can park in the listener's memory.
async fn parked_bytes(link: &Link) -> usize {
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(link.open().await.unwrap());
    }
    let chunk = vec![7u8; 64 << 10];
    let mut total = 0;
    let mut blocked = vec![false; streams.len()];
    while blocked.iter().any(|b| !b) {
        for (stream, blocked) in streams.iter_mut().zip(blocked.iter_mut()) {
            if *blocked {
                continue;
            }
            match tokio::time::timeout(Duration::from_millis(300), stream.send.write(&chunk)).await
            {
                Ok(Ok(n)) => total += n,
                _ => *blocked = true,
            }
        }
    }
    total
}

#[tokio::test]
async fn a_peer_parks_at_most_a_few_mib_per_link() {
    let (listener, key) = listening();
    let port = listener.port();
    let mut links = taking(listener);
    for transport in [Transport::Tcp, Transport::Quic] {
        let link = selected(transport, port, key).await.unwrap();
        let _listener_side = links.recv().await.unwrap();
        let parked = parked_bytes(&link).await;
        assert!(
            parked <= FEW_MIB && parked <= CONNECTION_WINDOW as usize,
            "{transport:?}: {parked} bytes parked in the listener"
        );
    }
}

#[tokio::test]
async fn a_link_not_yet_taken_parks_next_to_nothing() {
    // Never accepting, and the connector sends before it was told it may.
    let (listener, key) = listening();
    for transport in [Transport::Tcp, Transport::Quic] {
        let (link, _verified) = verified(transport, listener.port(), key).await;
        let parked = parked_bytes(&link).await;
        assert!(
            parked <= NEXT_TO_NOTHING && parked <= UNTAKEN_WINDOW as usize,
            "{transport:?}: {parked} bytes parked in a link nobody took"
        );
    }
}

#[tokio::test]
async fn the_connector_reads_no_more_than_the_selection_needs() {
    // A listener that echoes the hello, then keeps the control stream open and talks on.
    let identity = Identity::generate();
    let creds = pin::Credentials::new(&identity).unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(pin::server_config(&creds, None).unwrap()));
    let tcp = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = tcp.local_addr().unwrap().port();
    let chatty = tokio::spawn(async move {
        let (conn, _) = tcp.accept().await.unwrap();
        let link = tls::accept(conn, &acceptor).await.unwrap();
        let mut control = link.accept().await.unwrap().unwrap();
        let mut hello = [0u8; 24];
        control.recv.read_exact(&mut hello).await.unwrap();
        control.send.write_all(&hello[8..]).await.unwrap();
        let junk = vec![0u8; 64 << 10];
        while control.send.write_all(&junk).await.is_ok() {}
        link
    });
    let tcp = tokio::net::TcpStream::connect(loopback(port))
        .await
        .unwrap();
    let link = tls::connect(tcp, &connector(), identity.public_key())
        .await
        .unwrap();
    let verified = link.verify().await.unwrap();
    let started = Instant::now();
    let refused = verified.select(&[]).await.unwrap_err();
    assert!(
        matches!(refused, LinkError::Protocol(_)),
        "expected a protocol error, got {refused}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    chatty.abort();
}

#[test]
fn unvalidated_quic_clients_are_retried_only_under_load() {
    let gate = Admission::listener();
    let ip = IpAddr::from(Ipv4Addr::new(192, 0, 2, 1));
    let held: Vec<_> = (0..RETRY_ABOVE)
        .filter_map(|i| gate.try_admit(IpAddr::from(Ipv4Addr::new(198, 51, 100, i as u8))))
        .collect();
    assert!(matches!(
        quic_admission(&gate, ip, true),
        QuicAdmission::Retry
    ));
    // A client that came back with a Retry token is admitted.
    assert!(matches!(
        quic_admission(&gate, ip, false),
        QuicAdmission::Accept(_)
    ));
    drop(held);
    assert!(matches!(
        quic_admission(&gate, ip, true),
        QuicAdmission::Accept(_)
    ));
}

/// The selection carries a note each way (resume facts, `crate::resume`), over both
/// transports; a side with nothing to say sends nothing, the other reads an empty note, and
/// the listener answers only a connector that sent one.
#[tokio::test]
async fn the_selection_carries_a_note_each_way() {
    let (listener, key) = listening();
    let port = listener.port();
    let mut links = taking(listener);
    for transport in [Transport::Tcp, Transport::Quic] {
        let (mut link, verified) = verified(transport, port, key).await;
        link.set_peer_note(verified.select(b"from the connector").await.unwrap());
        assert_eq!(
            link.peer_note(),
            b"",
            "{transport:?}: the listener set no note"
        );
        let taken = links.recv().await.unwrap();
        assert_eq!(taken.peer_note(), b"from the connector", "{transport:?}");
    }
    let (listener, key) = listening();
    let port = listener.port();
    listener.set_note(vec![b'n'; MAX_NOTE]);
    let mut links = taking(listener);
    for transport in [Transport::Tcp, Transport::Quic] {
        let (_link, selecting) = verified(transport, port, key).await;
        assert_eq!(
            selecting.select(b"hello").await.unwrap(),
            vec![b'n'; MAX_NOTE],
            "{transport:?}"
        );
        assert_eq!(links.recv().await.unwrap().peer_note(), b"hello");
        // A connector that says nothing (one older than notes) is answered with nothing.
        let (_link, selecting) = verified(transport, port, key).await;
        assert_eq!(selecting.select(&[]).await.unwrap(), b"", "{transport:?}");
        assert_eq!(
            links.recv().await.unwrap().peer_note(),
            b"",
            "{transport:?}"
        );
        // A note past the limit is refused before anything is sent.
        let (_link, selecting) = verified(transport, port, key).await;
        assert!(selecting.select(&[0; MAX_NOTE + 1]).await.is_err());
    }
}
