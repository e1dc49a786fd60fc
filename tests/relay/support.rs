//! Test support: coturn (`turnserver`) on 127.0.0.1 with long-term credentials, a free port
//! (found by binding port 0), a relay port range and its log and user database in a tempdir; killed on drop.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warpgate::config::TurnServer;
use warpgate::relay::Allocation;

/// How long anything in these tests may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(20);
pub const USER: &str = "warp";
pub const PASSWORD: &str = "gate-secret";

/// A port on 127.0.0.1 that nothing listens on over TCP or UDP (bound, read, released).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// A coturn process listening on 127.0.0.1 only, relaying from 127.0.0.1.
pub struct Coturn {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// A server with relay ports `relay.0..=relay.1` and extra command-line arguments.
    pub fn start_with(relay: (u16, u16), extra: &[&str]) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("turn.log");
        let child = Command::new("turnserver")
            .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .args(["--listening-port", &port.to_string()])
            .args(["--min-port", &relay.0.to_string()])
            .args(["--max-port", &relay.1.to_string()])
            .args(["--lt-cred-mech", "--realm", "warpgate.test"])
            .args(["--user", &format!("{USER}:{PASSWORD}")])
            .args([
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
            ])
            .args(["--no-stdout-log", "--simple-log", "--verbose"])
            .arg("--log-file")
            .arg(&log)
            .arg("--userdb")
            .arg(dir.path().join("turndb"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver is not installed (scripts/install-deps installs coturn)");
        let server = Self {
            port,
            child: Some(child),
            _dir: dir,
        };
        crate::daemon::wait_listening(port, "turnserver");
        // The UDP listener may come up after the TCP one: wait for an answer to a STUN
        // Binding request, or a test would see a port unreachable and fall back to TCP.
        if !extra.contains(&"--no-udp") {
            let deadline = Instant::now() + Duration::from_secs(5);
            let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind probe");
            probe
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            let binding = b"\x00\x01\x00\x00\x21\x12\xa4\x42warpgate-stn";
            let mut buf = [0u8; 512];
            loop {
                let _ = probe.send_to(binding, (Ipv4Addr::LOCALHOST, port));
                if probe.recv(&mut buf).is_ok() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "turnserver did not answer over UDP on {port}"
                );
            }
        }
        server
    }

    pub fn start() -> Self {
        let base = free_port().clamp(1024, 65000);
        Self::start_with((base, base + 200), &[])
    }

    /// The server as `--turn` would give it, with `password` and `?transport=tcp` if `tcp`.
    pub fn url(&self, password: &str, tcp: bool) -> TurnServer {
        let query = if tcp { "?transport=tcp" } else { "" };
        TurnServer::parse(&format!(
            "turn://{USER}:{password}@127.0.0.1:{}{query}",
            self.port
        ))
        .expect("a valid TURN url")
    }
}

impl Coturn {
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An allocation with the right password, over UDP or TCP.
pub async fn allocate(server: &Coturn, tcp: bool) -> Allocation {
    tokio::time::timeout(WAIT, Allocation::connect(&server.url(PASSWORD, tcp)))
        .await
        .expect("allocation is bounded")
        .expect("allocation is made")
}

/// Permission and channel for each other's relayed address, both ways.
pub async fn pair(a: &Allocation, b: &Allocation) {
    for (x, y) in [(a, b), (b, a)] {
        x.permit(y.relayed_addr().ip()).await.expect("permission");
        x.bind_channel(y.relayed_addr()).await.expect("channel");
    }
}

/// The next datagram through `a`, within [`WAIT`].
pub async fn recv(a: &mut Allocation) -> (std::net::SocketAddr, Vec<u8>) {
    tokio::time::timeout(WAIT, a.recv_from())
        .await
        .expect("a datagram within the wait")
        .expect("allocation open")
}
