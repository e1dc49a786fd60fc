//! The relay's connection to its TURN server (UDP socket or TCP stream) and the clock the
//! sans-IO client is driven by (real time, plus a skew tests use to make refreshes fall due).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn_client_proto::stun::Instant;
use turn_client_proto::types::TransportType;

/// The connection to the TURN server.
pub(super) enum Io {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Io {
    pub fn transport(&self) -> TransportType {
        match self {
            Io::Udp(_) => TransportType::Udp,
            Io::Tcp(_) => TransportType::Tcp,
        }
    }

    pub async fn send(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Io::Udp(s) => s.send_to(data, to).await.map(drop),
            Io::Tcp(s) => s.write_all(data).await,
        }
    }

    pub async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            Io::Udp(s) => s.recv_from(buf).await,
            Io::Tcp(s) => match s.read(buf).await? {
                0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => Ok((n, s.peer_addr()?)),
            },
        }
    }
}

/// The client's clock: real time since the start, plus a skew tests may add.
pub(super) struct Clock {
    pub base: std::time::Instant,
    pub skew: Duration,
}

impl Clock {
    pub fn now(&self) -> Instant {
        let nanos = (self.base.elapsed() + self.skew).as_nanos();
        Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// The real time at which the client's clock reads `at`.
    pub fn real(&self, at: Instant) -> tokio::time::Instant {
        let since = Duration::from_nanos(u64::try_from(at.as_nanos()).unwrap_or(0));
        tokio::time::Instant::from_std(self.base + since.saturating_sub(self.skew))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skewed_clock_maps_back_to_real_time() {
        let clock = Clock {
            base: std::time::Instant::now(),
            skew: Duration::from_secs(600),
        };
        let now = clock.now();
        assert!(now.as_nanos() >= Duration::from_secs(600).as_nanos() as i64);
        // A refresh due at client time 610 s is real time base + 10 s.
        let due = Instant::from_nanos(Duration::from_secs(610).as_nanos() as i64);
        let real = clock.real(due).into_std();
        assert_eq!(real - clock.base, Duration::from_secs(10));
        // Anything already due on the client's clock is due now, not before the start.
        assert_eq!(clock.real(Instant::ZERO).into_std(), clock.base);
    }
}
