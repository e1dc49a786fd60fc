//! Test support: mosquitto on 127.0.0.1 (a free port found by binding port 0), killed on drop;
//! signalling nodes; a raw rumqttc client that publishes whatever a test wants.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use warpgate::config::HostPort;
use warpgate::nat::SocketMapping;
use warpgate::signal::{Answer, Keys, Payload, Signal, SignalConfig, SignalStats};

/// How long anything in these tests may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(20);

/// A port on 127.0.0.1 that nothing listens on (bound, read, released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A mosquitto process listening on 127.0.0.1 only.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        // set_tcp_nodelay: without it mosquitto's Nagle adds ~40 ms to every delivery.
        // sys_interval 1: $SYS/broker/clients/connected every second (the drop test reads it).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest none\nset_tcp_nodelay true\nsys_interval 1\n"
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is not installed (scripts/install-deps installs it)");
        let broker = Self {
            port,
            child: Some(child),
            _dir: dir,
        };
        crate::daemon::wait_listening(port, "mosquitto");
        broker
    }

    pub fn host_port(&self) -> HostPort {
        host_port(self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn host_port(port: u16) -> HostPort {
    HostPort {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A node with a fresh key, started on `brokers`.
pub async fn node(brokers: &[HostPort]) -> Signal {
    tokio::time::timeout(
        WAIT,
        Signal::start_with(Keys::random(), brokers, SignalConfig::default()),
    )
    .await
    .expect("start is bounded")
    .expect("signal starts")
}

/// The next message, within [`WAIT`].
pub async fn recv(signal: &Signal) -> (warpgate::identity::PublicKey, Payload) {
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
