//! A listener without `--allow` under a flood of strangers (issue 13, DESIGN §10): 1000 silent
//! TCP connections, blind QUIC clients whose Initials are never followed up, and garbage UDP
//! datagrams at its port, all from a few loopback source addresses. A real peer still gets
//! its link within 2 s, and the listener's peak RSS stays under 64 MiB.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::support::{Node, Running};

const HALF_OPEN_TCP: usize = 1000;
const BLIND_QUIC: usize = 1000;
const GARBAGE_DATAGRAMS: usize = 20_000;
/// A real peer's link comes up this soon, flood or not.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);
/// DESIGN §6: under a flood of strangers.
const MAX_RSS_KIB: u64 = 64 << 10;

/// A UDP socket for quinn that never hears an answer: its connections send Initials (and
/// retransmit them) but never get further, as from a forged source.
#[derive(Debug)]
struct Deaf(Arc<dyn quinn::AsyncUdpSocket>);

impl quinn::AsyncUdpSocket for Deaf {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }
    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.0.try_send(transmit)
    }
    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        // Drain and drop whatever arrives, until the socket has nothing more.
        loop {
            match self.0.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(_)) => continue,
                other => return other,
            }
        }
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Starts `count` QUIC connections to `to` from `from` whose answers are never heard.
fn blind_quic(
    from: Ipv4Addr,
    to: SocketAddr,
    count: usize,
) -> (quinn::Endpoint, Vec<quinn::Connecting>) {
    let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
    let runtime = quinn::default_runtime().unwrap();
    let deaf = Arc::new(Deaf(runtime.wrap_udp_socket(socket).unwrap()));
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        deaf,
        runtime,
    )
    .unwrap();
    let identity = warpgate::identity::Identity::generate();
    let creds = warpgate::link::pin::Credentials::new(&identity).unwrap();
    // Any key will do: no answer is ever read.
    let (tls, _) = warpgate::link::pin::client_config(&creds, identity.public_key()).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let connecting = (0..count)
        .map(|_| {
            endpoint
                .connect_with(config.clone(), to, "warpgate")
                .unwrap()
        })
        .collect();
    (endpoint, connecting)
}

/// Datagrams that are not QUIC at all, and some that look like QUIC Initials but are not.
fn garbage(from: Ipv4Addr, to: SocketAddr, count: usize) {
    let socket = std::net::UdpSocket::bind((from, 0)).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..count {
        let len = 1 + (next() % 1400) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 4 == 0 {
            // Long header, Initial, QUIC v1, an 8-byte connection id, padded to 1200.
            datagram = vec![0xc3, 0, 0, 0, 1, 8];
            datagram.extend((0..1194).map(|_| next() as u8));
        }
        let _ = socket.send_to(&datagram, to);
    }
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn a_flooded_listener_still_serves_a_real_peer_and_stays_small() {
    let (a, b) = (Node::new(), Node::new());
    // -k: the listener stays up after the peer, so its RSS can be read then.
    let mut listener = a.listen(&["-k"], Stdio::null(), Stdio::null());
    let pid = listener.child.id();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, listener_port(&listener)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _enter = runtime.enter();

    // The flood, from addresses other than the real peer's (127.0.0.1).
    let tcp_sources = [10, 11, 12, 13].map(|h| Ipv4Addr::new(127, 0, 0, h));
    // On loopback the listener's reset of a refused connection can beat connect()'s return.
    let (half_open, mut refused) = runtime.block_on(async {
        let (mut conns, mut refused) = (Vec::new(), 0);
        for i in 0..HALF_OPEN_TCP {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind((tcp_sources[i % tcp_sources.len()], 0).into())
                .unwrap();
            match socket.connect(to).await {
                Ok(conn) => conns.push(conn),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
                Err(e) => panic!("the TCP flood could not connect: {e}"),
            }
        }
        (conns, refused)
    });
    let quic_sources = [20, 21, 22, 23].map(|h| Ipv4Addr::new(127, 0, 0, h));
    let _blind: Vec<_> = quic_sources
        .iter()
        .map(|&from| blind_quic(from, to, BLIND_QUIC / quic_sources.len()))
        .collect();
    let garbage_thread =
        std::thread::spawn(move || garbage(Ipv4Addr::new(127, 0, 0, 30), to, GARBAGE_DATAGRAMS));
    std::thread::sleep(Duration::from_millis(300));

    // A real peer, meanwhile.
    let started = Instant::now();
    let mut connector = Running::spawn_with_input(
        &mut b.command(&["connect", "--timeout", "10", &listener.addr]),
        b"through the flood\n",
    );
    let connected = connector.wait_event_within("connected", Duration::from_secs(10));
    let took = started.elapsed();
    garbage_thread.join().unwrap();
    assert!(
        connected.is_some(),
        "no link under the flood; connector:\n{}\nlistener:\n{}",
        connector.stderr(),
        listener.stderr()
    );
    assert!(
        took <= CONNECT_WITHIN,
        "the real peer took {took:?} to connect"
    );
    // The link carried the data, and both ends finished.
    assert_eq!(
        connector.wait(Duration::from_secs(10)),
        0,
        "{}",
        connector.stderr()
    );
    let done = listener.wait_event("done");
    assert_eq!(done["received"], 18, "{done}");
    // The blind clients go on retransmitting their Initials for a while yet.
    std::thread::sleep(Duration::from_secs(2));
    let peak = vm_kib(pid, "VmHWM:");
    let now = vm_kib(pid, "VmRSS:");
    assert!(
        peak < MAX_RSS_KIB,
        "listener peak RSS {peak} KiB (now {now} KiB) under the flood"
    );
    // Most of the TCP flood was turned away at once rather than held.
    runtime.block_on(async {
        for mut conn in half_open {
            let mut byte = [0u8; 1];
            use tokio::io::AsyncReadExt;
            match tokio::time::timeout(Duration::from_millis(1), conn.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => refused += 1,
                _ => {}
            }
        }
    });
    eprintln!(
        "flood: {refused} of {HALF_OPEN_TCP} TCP connections refused at once; link in {took:?}; listener RSS peak {peak} KiB, now {now} KiB"
    );
    assert!(refused >= HALF_OPEN_TCP / 2, "only {refused} refused");
}

/// The port from the `listening` event (which `Node::listen` took; it is in the log).
fn listener_port(listener: &Running) -> u16 {
    listener
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "listening")
        .and_then(|v| v["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .expect("the listening event names the port")
}

/// A publisher that knows the listener's topic floods it (issue 13): oversized publishes past
/// the listener's MQTT packet limit and a stream of garbage. The real `listen` stays reachable
/// over signalling: a `connect --via reverse` (signalled only) still links and delivers.
#[tokio::test]
async fn a_flooded_signalling_topic_leaves_the_listener_reachable() {
    use crate::mosquitto::Mosquitto;
    use warpgate::signal::{topic, Inbox};

    let broker = Mosquitto::start();
    let (listener_node, connector_node) = (Node::new(), Node::new());
    let config = listener_node.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "brokers = [\"127.0.0.1:{}\"]\nstun = []\nturn = []\nregistries = []\n",
            broker.port
        ),
    )
    .unwrap();
    let warpgate = |node: &Node, args: &[&str]| {
        let mut cmd = std::process::Command::new(crate::support::BIN);
        cmd.arg("--home")
            .arg(node.home())
            .arg("--json")
            .arg("--no-portmap")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("WARPGATE_CONFIG");
        cmd
    };
    let mut listen = warpgate(&listener_node, &["listen", "--port", "0"]);
    let mut listener = Running::spawn_with_input(&mut listen, b"");
    let event = listener.wait_event("listening");
    let text = event["addr"].as_str().unwrap().to_string();
    let address = warpgate::addr::Address::parse(&text).unwrap();
    let topic = topic(&address.key, &Inbox::LISTENING);

    let mut options = rumqttc::MqttOptions::new("flooder", "127.0.0.1", broker.port);
    options.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 64);
    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let big = vec![0x5a; 300 << 10];
    for _ in 0..10 {
        client
            .publish(&topic, rumqttc::QoS::AtMostOnce, false, big.clone())
            .await
            .unwrap();
    }
    for n in 0..2000u32 {
        let garbage = n.to_le_bytes().repeat(50);
        client
            .publish(&topic, rumqttc::QoS::AtMostOnce, false, garbage)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut connect = warpgate(
        &connector_node,
        &["connect", &text, "--via", "reverse", "--timeout", "10"],
    );
    let connector = tokio::task::spawn_blocking(move || {
        Running::spawn_with_input(&mut connect, b"still here").finish(Duration::from_secs(20))
    })
    .await
    .unwrap();
    driver.abort();
    assert_eq!(connector.code, Some(0), "{:#?}", connector.stderr);
    let connected = connector.event("connected").expect("connected");
    assert_eq!(connected["method"], "reverse", "{connected}");
    let listener = tokio::task::spawn_blocking(move || listener.finish(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(listener.stdout_bytes, b"still here");
}
