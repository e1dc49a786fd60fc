//! The relay's connection to its TURN server (UDP socket or TCP stream) and the clock the
//! sans-IO client is driven by (real time, plus a skew tests use to make refreshes fall due).
//! Over TCP, what arrives is cut into whole messages here (STUN, or ChannelData without the
//! padding to 4 bytes the server adds on TCP, RFC 8656 §12.5): turn-client-proto 0.7 keeps the
//! padding as the start of the next message and loses the stream.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};
use turn_client_proto::stun::Instant;
use turn_client_proto::types::TransportType;

/// The connection to the TURN server.
pub(super) enum Io {
    Udp(UdpSocket),
    Tcp(Tcp),
}

/// Most bytes waiting to be written to a TCP server; a message that would go past it is
/// dropped whole (as a full UDP buffer drops a datagram), so the stream stays framed.
const TCP_OUT_LIMIT: usize = 1 << 20;

/// A TCP connection to the server: whole messages in, whole messages out.
pub(super) struct Tcp {
    stream: TcpStream,
    framer: Framer,
    /// Written bytes the kernel has not taken yet (a partial write must be finished before
    /// anything else goes, or the stream loses its framing).
    out: Vec<u8>,
}

impl Tcp {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            framer: Framer::default(),
            out: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Writes what waits, as much as the kernel takes now.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.try_write(&self.out) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.out.drain(..n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Bytes read from a TCP connection to a TURN server, not yet a whole message.
#[derive(Default)]
pub(super) struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// The length of the first message in the buffer and of its padding, once it is all there;
    /// an error for bytes that are neither STUN nor ChannelData.
    fn next(&self) -> std::io::Result<Option<(usize, usize)>> {
        let Some(head) = self.buf.get(..4) else {
            return Ok(None);
        };
        let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let (message, padded) = match head[0] >> 6 {
            0 => (20 + length, 20 + length),
            1 => (4 + length, (4 + length).next_multiple_of(4)),
            _ => {
                return Err(std::io::Error::other(
                    "TURN server sent neither STUN nor ChannelData",
                ))
            }
        };
        Ok((self.buf.len() >= padded).then_some((message, padded)))
    }

    /// Moves the first whole message into `out` (without padding); its length.
    fn take(&mut self, out: &mut [u8]) -> std::io::Result<Option<usize>> {
        let Some((message, padded)) = self.next()? else {
            return Ok(None);
        };
        let into = out
            .get_mut(..message)
            .ok_or_else(|| std::io::Error::other("TURN message larger than the buffer"))?;
        into.copy_from_slice(&self.buf[..message]);
        self.buf.drain(..padded);
        Ok(Some(message))
    }
}

impl Io {
    pub fn transport(&self) -> TransportType {
        match self {
            Io::Udp(_) => TransportType::Udp,
            Io::Tcp(_) => TransportType::Tcp,
        }
    }

    /// Sends a control message to the server (UDP: waiting for room; TCP: queued whole).
    pub async fn send(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Io::Udp(s) => s.send_to(data, to).await.map(drop),
            Io::Tcp(_) => self.try_send(data, to).map(drop),
        }
    }

    /// Sends without waiting. UDP: now, or not at all when the buffer is full. TCP: queued
    /// whole after what already waits, unless that is over [`TCP_OUT_LIMIT`]. `Ok(false)`
    /// when it was dropped.
    pub fn try_send(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<bool> {
        match self {
            Io::Udp(s) => match s.try_send_to(data, to) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(e),
            },
            Io::Tcp(tcp) => {
                if tcp.out.len() + data.len() > TCP_OUT_LIMIT {
                    return Ok(false);
                }
                tcp.out.extend_from_slice(data);
                tcp.flush().map(|()| true)
            }
        }
    }

    /// The next datagram (UDP) or whole message (TCP) from the server. Cancel-safe: over TCP
    /// what was read stays in the framer. Over TCP it also writes what waits to be written
    /// whenever the connection takes more.
    pub async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        match self {
            // An ICMP error (the server's port closed: it died) makes no datagram, so a plain
            // recv would never wake for it; waiting for error readiness reports it at once.
            Io::Udp(s) => loop {
                tokio::select! {
                    received = s.recv_from(buf) => return received,
                    ready = s.ready(tokio::io::Interest::ERROR) => {
                        ready?;
                        let pending = s.try_io(tokio::io::Interest::ERROR, || {
                            s.take_error()?
                                .ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
                        });
                        match pending {
                            Ok(e) => return Err(e),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            },
            Io::Tcp(tcp) => loop {
                if let Some(n) = tcp.framer.take(buf)? {
                    return Ok((n, tcp.stream.peer_addr()?));
                }
                tokio::select! {
                    readable = tcp.stream.readable() => {
                        readable?;
                        let mut chunk = [0u8; 8192];
                        match tcp.stream.try_read(&mut chunk) {
                            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                            Ok(n) => tcp.framer.buf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                    writable = tcp.stream.writable(), if !tcp.out.is_empty() => {
                        writable?;
                        tcp.flush()?;
                    }
                }
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
    fn tcp_messages_are_cut_whole_and_channel_data_loses_its_padding() {
        let mut framer = Framer::default();
        let mut out = [0u8; 64];
        // ChannelData of 5 bytes (padded to 12), then a STUN message with a 4-byte body.
        framer
            .buf
            .extend_from_slice(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4]);
        assert_eq!(framer.take(&mut out).unwrap(), None, "not all there yet");
        framer.buf.extend_from_slice(&[5, 0, 0, 0]);
        let mut stun = vec![0x01, 0x01, 0x00, 0x04];
        stun.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        stun.extend_from_slice(&[9; 12]);
        stun.extend_from_slice(&[7; 4]);
        framer.buf.extend_from_slice(&stun);
        assert_eq!(framer.take(&mut out).unwrap(), Some(9));
        assert_eq!(&out[..9], &[0x40, 0, 0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(framer.take(&mut out).unwrap(), Some(24));
        assert_eq!(&out[..24], &stun[..]);
        assert_eq!(framer.take(&mut out).unwrap(), None);
        framer.buf.extend_from_slice(&[0xff, 0, 0, 0]);
        assert!(framer.take(&mut out).is_err());
    }

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
