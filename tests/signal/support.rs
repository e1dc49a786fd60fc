//! Test support: mosquitto (tests/common/mosquitto.rs); an MQTT 3.1.1-only broker (a front that refuses MQTT 5 and passes 3.1.1 to a mosquitto);
//! signalling nodes; a raw rumqttc client that publishes whatever a test wants.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use warpgate::config::HostPort;
use warpgate::identity::PublicKey;
use warpgate::nat::SocketMapping;
use warpgate::signal::{Answer, Keys, Payload, Peer, Signal, SignalConfig, SignalStats};

pub use crate::mosquitto::{free_port, host_port, Mosquitto};

/// How long anything in these tests may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// A listening node with a fresh key, started on `brokers`, answering everyone.
pub async fn node(brokers: &[HostPort]) -> Signal {
    node_with(brokers, SignalConfig::listener(None)).await
}

/// A node with a fresh key and `config`, started on `brokers`.
pub async fn node_with(brokers: &[HostPort], config: SignalConfig) -> Signal {
    tokio::time::timeout(WAIT, Signal::start_with(Keys::random(), brokers, config))
        .await
        .expect("start is bounded")
        .expect("signal starts")
}

/// The next message (its sender's key), within [`WAIT`].
pub async fn recv(signal: &Signal) -> (PublicKey, Payload) {
    let (from, payload) = recv_from(signal).await;
    (from.key, payload)
}

/// The next message with the inbox its sender reads replies on, within [`WAIT`].
pub async fn recv_from(signal: &Signal) -> (Peer, Payload) {
    tokio::time::timeout(WAIT, signal.recv())
        .await
        .expect("a message within the wait")
        .expect("signal still running")
}

/// Asserts nothing more is delivered within `quiet`.
pub async fn assert_nothing_delivered(signal: &Signal, quiet: Duration) {
    if let Ok(got) = tokio::time::timeout(quiet, signal.recv()).await {
        panic!("unexpected delivery: {got:?}");
    }
}

/// Polls `signal.stats()` until `done` holds, within [`WAIT`].
pub async fn wait_stats(signal: &Signal, what: &str, done: impl Fn(&SignalStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = signal.stats();
        if done(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {stats:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain MQTT client: publishes raw bytes, and captures what arrives on a topic it watches.
pub struct RawClient {
    pub client: AsyncClient,
    pub captured: mpsc::UnboundedReceiver<Vec<u8>>,
    task: JoinHandle<()>,
}

impl RawClient {
    pub async fn connect(port: u16, watch: Option<&str>) -> Self {
        let mut options = MqttOptions::new(format!("raw{}", free_port()), "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, captured) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        if let Some(topic) = watch {
            client
                .subscribe(topic, QoS::AtMostOnce)
                .await
                .expect("subscribe");
        }
        let watching = watch.is_some();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) if !watching => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(p.payload.to_vec());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready.recv())
            .await
            .expect("raw client connects");
        Self {
            client,
            captured,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, bytes: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtMostOnce, false, bytes)
            .await
            .expect("publish");
    }

    /// Publishes a message the broker keeps and sends to every later subscriber.
    pub async fn publish_retained(&self, topic: &str, bytes: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, bytes)
            .await
            .expect("publish");
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small distinguishable message (pings are answered by the driver, not delivered).
pub fn note(n: u8) -> Payload {
    Payload::Answer(Answer {
        udp: Vec::new(),
        tcp: Vec::new(),
        nonce: [n; 16],
        fire_in_ms: 0,
        relayed: Vec::new(),
        mapping: SocketMapping::Unknown,
    })
}

/// A broker that speaks MQTT 3.1.1 only: a front on its own port that answers an MQTT 5 CONNECT
/// the way 3.1.1 brokers must ("unacceptable protocol version", then close) and passes any other
/// connection through to a mosquitto. Stops when dropped.
pub struct V311Front {
    pub port: u16,
    task: JoinHandle<()>,
}

impl V311Front {
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(Self::serve(client, upstream));
            }
        });
        Self { port, task }
    }

    pub fn host_port(&self) -> HostPort {
        host_port(self.port)
    }

    async fn serve(mut client: tokio::net::TcpStream, upstream: u16) {
        let _ = client.set_nodelay(true);
        // The CONNECT packet: type byte, remaining length (varint), then the protocol name
        // ("\0\x04MQTT") and the protocol level.
        let mut packet = vec![0u8; 1];
        if client.read_exact(&mut packet).await.is_err() {
            return;
        }
        let mut remaining = 0usize;
        for shift in (0..4).map(|i| 7 * i) {
            let Ok(byte) = client.read_u8().await else {
                return;
            };
            packet.push(byte);
            remaining |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; remaining];
        if client.read_exact(&mut body).await.is_err() || body.len() < 7 {
            return;
        }
        if body[6] != 4 {
            let _ = client.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
            return;
        }
        let Ok(mut server) = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await
        else {
            return;
        };
        let _ = server.set_nodelay(true);
        packet.extend_from_slice(&body);
        if server.write_all(&packet).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    }
}

impl Drop for V311Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}
