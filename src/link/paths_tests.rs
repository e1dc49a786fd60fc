//! Path socket tests on loopback: two real quinn endpoints on path sockets, an in-memory relay
//! between them (a task per direction, as a TURN server forwards), and routes switched while a
//! stream is moving bytes.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::*;
use crate::identity::Identity;
use crate::link::{pin, quic};

const TRANSFER: usize = 8 << 20;
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Datagrams the test relay holds per direction before it drops, as a busy TURN server would.
const RELAY_QUEUE: usize = 256;

/// One side's relay allocation: queues datagrams for the forwarding task, counts what it took.
struct TestRelay {
    queue: mpsc::Sender<(SocketAddr, Bytes)>,
    taken: AtomicU64,
}

impl RelayPath for TestRelay {
    fn send(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.taken.fetch_add(1, Ordering::Relaxed);
        let _ = self.queue.try_send((to, Bytes::copy_from_slice(datagram)));
        Ok(())
    }
}

struct Side {
    endpoint: quinn::Endpoint,
    paths: Arc<PathSocket>,
    stun: StunSide,
    /// Where the peer's socket really is.
    real: SocketAddr,
    /// This side's address on the relay: the peer's virtual address for it.
    relayed: SocketAddr,
    relay: Arc<TestRelay>,
    /// Held so that nothing else takes the "relayed" port.
    _reserved: UdpSocket,
}

struct Pair {
    client: Side,
    server: Side,
    forwarded: Arc<AtomicU64>,
    _tasks: JoinSet<()>,
}

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// A side's socket: the server's is dual-stack, as a punching kit's is (quinn then names the
/// client IPv4-mapped, and the routes and the STUN side still use plain IPv4), the client's
/// IPv4 only, as `random_probe`'s sockets are.
fn side(server: Option<quinn::ServerConfig>) -> (Side, mpsc::Receiver<(SocketAddr, Bytes)>) {
    let socket = match server {
        Some(_) => crate::net::bind_udp_dual_stack().unwrap(),
        None => loopback(),
    };
    let real = SocketAddr::new([127, 0, 0, 1].into(), socket.local_addr().unwrap().port());
    let (endpoint, paths, stun) = endpoint(socket, server).unwrap();
    let reserved = loopback();
    let (queue, out) = mpsc::channel(RELAY_QUEUE);
    let relay = Arc::new(TestRelay {
        queue,
        taken: AtomicU64::new(0),
    });
    let side = Side {
        endpoint,
        paths,
        stun,
        real,
        relayed: reserved.local_addr().unwrap(),
        relay,
        _reserved: reserved,
    };
    (side, out)
}

/// Forwards what `from` relays to `to`'s inbound, as coming from `from`'s relayed address.
async fn forward(
    mut out: mpsc::Receiver<(SocketAddr, Bytes)>,
    source: SocketAddr,
    inbound: RelayInbound,
    forwarded: Arc<AtomicU64>,
) {
    while let Some((_, datagram)) = out.recv().await {
        forwarded.fetch_add(1, Ordering::Relaxed);
        let _ = inbound.try_send((source, datagram));
    }
}

fn relayed(side: &Side, peer: &Side) -> Route {
    Route::Relayed {
        relay: side.relay.clone(),
        peer: peer.relayed,
    }
}

/// Two endpoints routed through the test relay; the client connects to the server's relayed
/// address, the only address quinn ever sees.
fn pair() -> (Pair, pin::Credentials, crate::identity::PublicKey) {
    let (client_id, server_id) = (Identity::generate(), Identity::generate());
    let client_creds = pin::Credentials::new(&client_id).unwrap();
    let server_creds = pin::Credentials::new(&server_id).unwrap();
    let (client, client_out) = side(None);
    let (server, server_out) = side(Some(quic::server_config(&server_creds, None).unwrap()));
    client
        .paths
        .switch(server.relayed, relayed(&client, &server));
    server
        .paths
        .switch(client.relayed, relayed(&server, &client));
    let forwarded = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let to_server = server.paths.relay_inbound();
    tasks.spawn(forward(
        client_out,
        client.relayed,
        to_server,
        forwarded.clone(),
    ));
    let to_client = client.paths.relay_inbound();
    tasks.spawn(forward(
        server_out,
        server.relayed,
        to_client,
        forwarded.clone(),
    ));
    let pair = Pair {
        client,
        server,
        forwarded,
        _tasks: tasks,
    };
    (pair, client_creds, server_id.public_key())
}

async fn connect(
    pair: &Pair,
    creds: &pin::Credentials,
    key: crate::identity::PublicKey,
) -> (quinn::Connection, quinn::Connection) {
    let (config, _) = quic::client_config(creds, key).unwrap();
    let connecting = pair
        .client
        .endpoint
        .connect_with(config, pair.server.relayed, crate::TLS_SERVER_NAME)
        .unwrap();
    let accepting = async { pair.server.endpoint.accept().await.unwrap().await };
    let (client, server) = tokio::join!(connecting, accepting);
    (client.unwrap(), server.unwrap())
}

fn payload() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..TRANSFER)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

type Action<'a> = (usize, Box<dyn FnOnce() + 'a>);

/// Sends the payload client → server on one stream, running each action once the server has
/// received that many bytes. Returns the received bytes' digest and the throughput in MB/s.
async fn transfer(
    client: &quinn::Connection,
    server: &quinn::Connection,
    mut actions: Vec<Action<'_>>,
) -> ([u8; 32], f64) {
    let data = payload();
    let expected: [u8; 32] = Sha256::digest(&data).into();
    let started = Instant::now();
    let (mut send, _) = client.open_bi().await.unwrap();
    let writer = async move {
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        send.stopped().await.ok();
    };
    let reader = async {
        let (_, mut recv) = server.accept_bi().await.unwrap();
        let mut hash = Sha256::new();
        let mut received = 0;
        let mut buf = vec![0; 64 << 10];
        while let Some(n) = recv.read(&mut buf).await.unwrap() {
            hash.update(&buf[..n]);
            received += n;
            while actions.first().is_some_and(|(at, _)| received >= *at) {
                let (_, action) = actions.remove(0);
                action();
            }
        }
        assert!(actions.is_empty(), "transfer ended before every switch ran");
        assert_eq!(received, TRANSFER);
        <[u8; 32]>::from(hash.finalize())
    };
    let (_, got) = tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(writer, reader) })
        .await
        .unwrap();
    assert_eq!(got, expected, "stream bytes differ");
    let rate = TRANSFER as f64 / started.elapsed().as_secs_f64() / 1e6;
    (got, rate)
}

fn direct(peer: &Side) -> Route {
    Route::Direct(peer.real)
}

/// What the route switch must not do: a new connection, or path validation (a quinn-visible
/// address change).
fn assert_same_connection(
    pair: &Pair,
    conns: &(quinn::Connection, quinn::Connection),
    ids: (usize, usize),
) {
    assert_eq!((conns.0.stable_id(), conns.1.stable_id()), ids);
    assert_eq!(pair.client.endpoint.open_connections(), 1);
    assert_eq!(pair.server.endpoint.open_connections(), 1);
    assert_eq!(conns.0.remote_address(), pair.server.relayed);
    // The server's socket is dual-stack: quinn names the client IPv4-mapped there.
    assert_eq!(
        crate::net::canonical(conns.1.remote_address()),
        pair.client.relayed
    );
    for conn in [&conns.0, &conns.1] {
        let stats = conn.stats();
        assert_eq!(
            stats.frame_tx.path_challenge, 0,
            "quinn validated a new path"
        );
        assert_eq!(
            stats.frame_rx.path_challenge, 0,
            "quinn validated a new path"
        );
    }
}

#[tokio::test]
async fn a_connection_over_the_relay_carries_a_stream_intact() {
    let (pair, creds, key) = pair();
    let conns = connect(&pair, &creds, key).await;
    let (_, rate) = transfer(&conns.0, &conns.1, vec![]).await;
    eprintln!("relayed: {rate:.0} MB/s");
    let (c, s) = (pair.client.paths.stats(), pair.server.paths.stats());
    assert!(c.relayed_sent as usize > TRANSFER, "{c:?}");
    assert!(s.relayed_received as usize > TRANSFER, "{s:?}");
    assert_eq!(
        c.direct_sent + c.direct_received + s.direct_sent + s.direct_received,
        0
    );
    assert!(pair.forwarded.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn a_switch_to_direct_mid_stream_keeps_the_connection_and_its_bytes() {
    let (pair, creds, key) = pair();
    let conns = connect(&pair, &creds, key).await;
    let ids = (conns.0.stable_id(), conns.1.stable_id());
    let (client_taken, server_taken) = (AtomicU64::new(0), AtomicU64::new(0));
    let (client, server) = (&pair.client, &pair.server);
    let actions: Vec<Action> = vec![
        // The server learns the client's direct address (as a punch would verify it), then the
        // client moves first, the server a megabyte later: for a while the two directions
        // take different routes.
        (
            2 << 20,
            Box::new(|| {
                server.paths.allow(client.relayed, &direct(client));
                client.paths.switch(server.relayed, direct(server));
                client_taken.store(
                    client.relay.taken.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
            }),
        ),
        (
            3 << 20,
            Box::new(|| {
                server.paths.switch(client.relayed, direct(client));
                server_taken.store(
                    server.relay.taken.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
            }),
        ),
    ];
    let (_, rate) = transfer(&conns.0, &conns.1, actions).await;
    eprintln!("relayed then direct: {rate:.0} MB/s");
    assert_same_connection(&pair, &conns, ids);
    // Nothing took the relay after each side's switch; the direct route carried the rest.
    assert_eq!(
        client.relay.taken.load(Ordering::Relaxed),
        client_taken.load(Ordering::Relaxed)
    );
    assert_eq!(
        server.relay.taken.load(Ordering::Relaxed),
        server_taken.load(Ordering::Relaxed)
    );
    let (c, s) = (client.paths.stats(), server.paths.stats());
    eprintln!("client {c:?}\nserver {s:?}");
    assert!(c.direct_sent > 4 << 20, "{c:?}");
    assert!(s.direct_received > 2 << 20, "{s:?}");
    // A second stream after the switch goes direct only.
    let forwarded = pair.forwarded.load(Ordering::Relaxed);
    let (_, rate) = transfer(&conns.0, &conns.1, vec![]).await;
    eprintln!("direct route: {rate:.0} MB/s");
    assert_eq!(pair.forwarded.load(Ordering::Relaxed), forwarded);
    assert_same_connection(&pair, &conns, ids);
}

#[tokio::test]
async fn a_switch_back_to_the_relay_mid_stream_works_too() {
    let (pair, creds, key) = pair();
    let conns = connect(&pair, &creds, key).await;
    let ids = (conns.0.stable_id(), conns.1.stable_id());
    let (client, server) = (&pair.client, &pair.server);
    let direct_sent = AtomicU64::new(0);
    let actions: Vec<Action> = vec![
        (
            1 << 20,
            Box::new(|| {
                server.paths.allow(client.relayed, &direct(client));
                client.paths.switch(server.relayed, direct(server));
                server.paths.switch(client.relayed, direct(client));
            }),
        ),
        (
            4 << 20,
            Box::new(|| {
                client.paths.switch(server.relayed, relayed(client, server));
                server.paths.switch(client.relayed, relayed(server, client));
                direct_sent.store(client.paths.stats().direct_sent, Ordering::Relaxed);
            }),
        ),
    ];
    let before = client.relay.taken.load(Ordering::Relaxed);
    transfer(&conns.0, &conns.1, actions).await;
    assert_same_connection(&pair, &conns, ids);
    let c = client.paths.stats();
    assert_eq!(
        c.direct_sent,
        direct_sent.load(Ordering::Relaxed),
        "direct used after the switch back"
    );
    assert!(c.direct_sent > 1 << 20, "{c:?}");
    assert!(
        client.relay.taken.load(Ordering::Relaxed) > before,
        "relay unused after the switch back"
    );
    assert!(server.paths.stats().relayed_received > 2 << 20);
}

#[tokio::test]
async fn without_routes_it_is_a_plain_demux_socket() {
    let (pair, creds, key) = pair();
    pair.client.paths.forget(pair.server.relayed);
    pair.server.paths.forget(pair.client.relayed);
    let (config, _) = quic::client_config(&creds, key).unwrap();
    let connecting = pair
        .client
        .endpoint
        .connect_with(config, pair.server.real, crate::TLS_SERVER_NAME)
        .unwrap();
    let accepting = async { pair.server.endpoint.accept().await.unwrap().await };
    let (client, server) = tokio::join!(connecting, accepting);
    let (client, server) = (client.unwrap(), server.unwrap());
    assert_eq!(client.remote_address(), pair.server.real);
    let (_, rate) = transfer(&client, &server, vec![]).await;
    eprintln!("unrouted (direct socket): {rate:.0} MB/s");
    assert_eq!(pair.client.paths.stats(), PathStats::default());
    assert_eq!(pair.forwarded.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn stun_still_reaches_the_stun_side_beside_a_routed_peer() {
    let (mut pair, creds, key) = pair();
    let conns = connect(&pair, &creds, key).await;
    // The peer's direct address is mapped, yet its STUN still goes to the STUN side.
    let prober = loopback();
    let prober_addr = prober.local_addr().unwrap();
    let client = &pair.client;
    pair.server
        .paths
        .allow(client.relayed, &Route::Direct(prober_addr));
    let (_, request) =
        crate::stun::codec::binding_request(crate::stun::codec::Change::NONE).unwrap();
    prober.send_to(&request, pair.server.real).unwrap();
    let got = tokio::time::timeout(TEST_TIMEOUT, pair.server.stun.incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, (request.clone(), prober_addr));
    // And the STUN side still sends on the shared socket.
    pair.server.stun.send(prober_addr, &request).unwrap();
    prober.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let mut buf = [0; 1500];
    let (n, from) = prober.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&request[..], pair.server.real));
    assert_eq!(
        pair.server.paths.stats().direct_received,
        0,
        "STUN reached quinn"
    );
    drop(conns);
}
