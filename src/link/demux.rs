//! One UDP socket shared by STUN and QUIC: the socket whose mapping was learned carries both
//! the hole-punching probes and, once the hole is open, the QUIC connection (so the NAT mapping
//! the peer punched towards is the one QUIC uses). Datagrams that look like STUN (RFC 7983) are
//! diverted from quinn to a channel; STUN is sent on the same socket beside quinn's traffic.
//!
//! The socket may be dual-stack: the STUN side sees and names IPv4 peers by their plain IPv4
//! addresses either way.
//!
//! Neighbours: [`super::quic`] makes endpoints on it; [`crate::traversal`] punch strategies read
//! and write the STUN side.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

use crate::stun::codec::looks_like_stun;

/// STUN datagrams waiting for a reader; more are dropped (probes are repeated anyway).
const STUN_QUEUE: usize = 64;

/// A received STUN datagram and its source.
pub type StunDatagram = (Vec<u8>, SocketAddr);

/// The quinn side: every datagram that is not STUN goes to quinn.
pub struct DemuxSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    stun: mpsc::Sender<StunDatagram>,
}

impl fmt::Debug for DemuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemuxSocket").finish_non_exhaustive()
    }
}

/// The STUN side: send on the shared socket, receive what was diverted.
pub struct StunSide {
    socket: Arc<dyn AsyncUdpSocket>,
    /// The socket is IPv6 (dual-stack): IPv4 destinations go out IPv4-mapped.
    v6: bool,
    pub incoming: mpsc::Receiver<StunDatagram>,
}

impl StunSide {
    /// Sends one datagram; a full socket buffer drops it (probes are repeated).
    pub fn send(&self, to: SocketAddr, data: &[u8]) -> io::Result<()> {
        let transmit = Transmit {
            destination: crate::net::for_socket(to, self.v6),
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: None,
        };
        match self.socket.try_send(&transmit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

/// Splits `socket` into a quinn socket and its STUN side.
pub fn split(socket: std::net::UdpSocket) -> io::Result<(Arc<DemuxSocket>, StunSide)> {
    let runtime = quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime"))?;
    let v6 = socket.local_addr()?.is_ipv6();
    let inner = runtime.wrap_udp_socket(socket)?;
    let (tx, incoming) = mpsc::channel(STUN_QUEUE);
    Ok((
        Arc::new(DemuxSocket {
            inner: inner.clone(),
            stun: tx,
        }),
        StunSide {
            socket: inner,
            v6,
            incoming,
        },
    ))
}

impl AsyncUdpSocket for DemuxSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let count = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(count)) => count,
            other => return other,
        };
        for (meta, buf) in meta.iter_mut().zip(bufs.iter()).take(count) {
            let data = &buf[..meta.len];
            if looks_like_stun(data) {
                // Segments of one receive share a source and a size; STUN is never coalesced
                // with QUIC in practice, so the whole batch goes one way.
                for segment in data.chunks(meta.stride.max(1)) {
                    let from = crate::net::canonical(meta.addr);
                    let _ = self.stun.try_send((segment.to_vec(), from));
                }
                // quinn skips a zero-length receive.
                meta.len = 0;
            }
        }
        Poll::Ready(Ok(count))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
