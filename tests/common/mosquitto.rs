//! mosquitto on 127.0.0.1 for the test binaries that signal (tests/signal.rs, tests/e2e.rs): a
//! free port found by binding port 0, a config of our own, killed on drop; optionally logging
//! everything it sees.
// Each binary uses part of this.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use warpgate::config::HostPort;

/// A port on 127.0.0.1 that nothing listens on (bound, read, released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A mosquitto process listening on 127.0.0.1 only.
pub struct Mosquitto {
    pub port: u16,
    /// The broker's log (every connect, subscribe and publish), when started with one.
    pub log: Option<PathBuf>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with(free_port(), false)
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, false)
    }

    /// A broker that logs everything it sees: what a broker learns, in its own words.
    pub fn start_logging() -> Self {
        Self::start_with(free_port(), true)
    }

    fn start_with(port: u16, logging: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("mosquitto.conf");
        let log = logging.then(|| dir.path().join("mosquitto.log"));
        // The log goes to stderr, into a file opened here: mosquitto started as root drops to
        // its own user, which cannot write in our temporary directory.
        let (log_conf, stderr) = match &log {
            Some(path) => (
                "log_dest stderr\nlog_type all\n",
                Stdio::from(std::fs::File::create(path).expect("create the broker's log")),
            ),
            None => ("log_dest none\n", Stdio::null()),
        };
        // set_tcp_nodelay: without it mosquitto's Nagle adds ~40 ms to every delivery.
        // sys_interval 1: $SYS/broker/clients/connected every second (the drop test reads it).
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 {log_conf}set_tcp_nodelay true\nsys_interval 1\n"
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("mosquitto is not installed (scripts/install-deps installs it)");
        let broker = Self {
            port,
            log,
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
