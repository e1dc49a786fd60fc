//! For the servers a test binary starts itself on loopback (mosquitto, coturn): waiting until
//! one accepts TCP connections on its port.

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

/// Blocks until 127.0.0.1:`port` accepts a TCP connection; panics naming `what` after 5 s.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
