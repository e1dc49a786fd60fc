//! A path-switching socket for QUIC: quinn talks to one stable *virtual* address per peer (its
//! relayed address, say) and this socket carries each datagram on that peer's current route,
//! straight to its real address or through a relay. Switching the route changes nothing quinn
//! can see, so the connection moves from relay to direct (and back) with no new handshake, no
//! path validation and no lost stream bytes: datagrams still in flight on the old route are
//! accepted when they arrive, and QUIC already copes with the reordering.
//!
//! Built on [`super::demux::DemuxSocket`], so STUN is diverted exactly as there. Datagrams to or
//! from addresses with no route pass through untouched, as on a plain demux socket.
//!
//! Segmentation: a relayed transmit is split into its segments and each handed to the relay on
//! its own, so [`AsyncUdpSocket::max_transmit_segments`] stays the inner socket's and the direct
//! route keeps GSO/GRO. The direct route costs one uncontended read lock per transmit or
//! receive batch and no allocation.
//!
//! On a dual-stack socket quinn names IPv4 peers IPv4-mapped; the table and its callers use
//! plain IPv4 addresses, and this socket translates at its edge.
//!
//! Neighbours: [`RelayPath`] is implemented by a relay allocation ([`crate::relay`]);
//! [`super::quic`] configures the endpoint made by [`endpoint`].

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

use super::demux::{self, DemuxSocket, StunSide};
use crate::net;

/// Datagrams from relays waiting for quinn; more are dropped, as a full socket buffer would.
const RELAY_INBOUND_QUEUE: usize = 256;

/// One way to reach a peer: a relay allocation that forwards datagrams to peers and back.
///
/// Outbound, the socket calls [`RelayPath::send`]; inbound, the relay pushes what a peer sent
/// into [`PathSocket::relay_inbound`] as `(that peer's address on the relay, datagram)`, with
/// `try_send` (a full queue drops the datagram, as UDP would).
pub trait RelayPath: Send + Sync {
    /// Hands one datagram for `to` (the peer's address as the relay knows it) to the relay.
    /// Must not block: a full queue drops the datagram and returns `Ok`, as UDP does; an error
    /// means the relay itself is gone.
    fn send(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()>;
}

/// Where the relay side delivers what peers sent: `(peer's address on the relay, datagram)`.
pub type RelayInbound = mpsc::Sender<(SocketAddr, Bytes)>;

/// How datagrams for one virtual address travel.
#[derive(Clone)]
pub enum Route {
    /// Straight to the peer's real (perhaps NAT-mapped) address.
    Direct(SocketAddr),
    /// Through `relay`, to the peer known there as `peer`.
    Relayed {
        relay: Arc<dyn RelayPath>,
        peer: SocketAddr,
    },
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Direct(addr) => write!(f, "Direct({addr})"),
            Route::Relayed { peer, .. } => write!(f, "Relayed({peer})"),
        }
    }
}

/// Bytes carried on each kind of route, both ways (transfers to unrouted addresses excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    pub direct_sent: u64,
    pub direct_received: u64,
    pub relayed_sent: u64,
    pub relayed_received: u64,
}

#[derive(Default)]
struct Counters {
    direct_sent: AtomicU64,
    direct_received: AtomicU64,
    relayed_sent: AtomicU64,
    relayed_received: AtomicU64,
}

#[derive(Default)]
struct Table {
    /// Virtual address → the route its datagrams take now.
    routes: HashMap<SocketAddr, Route>,
    /// Real source on the inner socket → virtual address. Old routes stay until forgotten.
    direct: HashMap<SocketAddr, SocketAddr>,
    /// Peer address on a relay → virtual address. Old routes stay until forgotten.
    relayed: HashMap<SocketAddr, SocketAddr>,
}

impl Table {
    fn accept(&mut self, virtual_addr: SocketAddr, route: &Route) {
        match route {
            Route::Direct(real) => self.direct.insert(*real, virtual_addr),
            Route::Relayed { peer, .. } => self.relayed.insert(*peer, virtual_addr),
        };
    }
}

/// The quinn socket: routes by virtual address, merges what arrives directly and via relays.
pub struct PathSocket {
    inner: Arc<DemuxSocket>,
    /// The inner socket is IPv6 (dual-stack): quinn's addresses for IPv4 peers are mapped.
    v6: bool,
    table: RwLock<Table>,
    inbound_tx: RelayInbound,
    inbound: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    counters: Counters,
}

impl fmt::Debug for PathSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathSocket").finish_non_exhaustive()
    }
}

impl PathSocket {
    /// Wraps `socket`: a path socket for quinn and the STUN side of the same socket.
    pub fn bind(socket: std::net::UdpSocket) -> io::Result<(Arc<PathSocket>, StunSide)> {
        let v6 = socket.local_addr()?.is_ipv6();
        let (inner, stun) = demux::split(socket)?;
        let (inbound_tx, inbound) = mpsc::channel(RELAY_INBOUND_QUEUE);
        let socket = PathSocket {
            inner,
            v6,
            table: RwLock::new(Table::default()),
            inbound_tx,
            inbound: Mutex::new(inbound),
            counters: Counters::default(),
        };
        Ok((Arc::new(socket), stun))
    }

    /// Where relays deliver datagrams from peers (see [`RelayPath`]).
    pub fn relay_inbound(&self) -> RelayInbound {
        self.inbound_tx.clone()
    }

    /// Sends `virtual_addr`'s datagrams on `route` from now on. Datagrams arriving on the
    /// routes it had before are still accepted as coming from `virtual_addr`.
    pub fn switch(&self, virtual_addr: SocketAddr, route: Route) {
        let mut table = self.write();
        table.accept(virtual_addr, &route);
        tracing::debug!(%virtual_addr, ?route, "path switched");
        table.routes.insert(virtual_addr, route);
    }

    /// Accepts datagrams arriving on `route` as coming from `virtual_addr` without sending on
    /// it: for a path the peer may move onto before this side does.
    pub fn allow(&self, virtual_addr: SocketAddr, route: &Route) {
        self.write().accept(virtual_addr, route);
    }

    /// Drops `virtual_addr`'s route and every mapping that received for it.
    pub fn forget(&self, virtual_addr: SocketAddr) {
        let mut table = self.write();
        table.routes.remove(&virtual_addr);
        table.direct.retain(|_, v| *v != virtual_addr);
        table.relayed.retain(|_, v| *v != virtual_addr);
    }

    /// The route `virtual_addr`'s datagrams take now.
    pub fn route(&self, virtual_addr: SocketAddr) -> Option<Route> {
        self.read().routes.get(&virtual_addr).cloned()
    }

    pub fn stats(&self) -> PathStats {
        let c = &self.counters;
        PathStats {
            direct_sent: c.direct_sent.load(Ordering::Relaxed),
            direct_received: c.direct_received.load(Ordering::Relaxed),
            relayed_sent: c.relayed_sent.load(Ordering::Relaxed),
            relayed_received: c.relayed_received.load(Ordering::Relaxed),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fills `bufs` with datagrams the relays delivered, if any; registers for more otherwise.
    fn poll_relayed(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut inbound = self.inbound.lock().unwrap_or_else(PoisonError::into_inner);
        let table = self.read();
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let next = if filled == 0 {
                match inbound.poll_recv(cx) {
                    Poll::Ready(Some(next)) => next,
                    _ => break,
                }
            } else {
                match inbound.try_recv() {
                    Ok(next) => next,
                    Err(_) => break,
                }
            };
            let (from, data) = next;
            // A peer with no route (or a datagram larger than quinn's buffer) is dropped:
            // answers to it would have no way back.
            let Some(virtual_addr) = table.relayed.get(&from) else {
                continue;
            };
            let buf = &mut bufs[filled];
            if data.len() > buf.len() {
                continue;
            }
            buf[..data.len()].copy_from_slice(&data);
            meta[filled] = RecvMeta {
                addr: net::for_socket(*virtual_addr, self.v6),
                len: data.len(),
                stride: data.len(),
                ecn: None,
                dst_ip: None,
            };
            self.counters
                .relayed_received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            filled += 1;
        }
        filled
    }
}

/// quinn's endpoint on a path socket, configured as [`super::quic::endpoint`] is.
pub fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> io::Result<(quinn::Endpoint, Arc<PathSocket>, StunSide)> {
    let (paths, stun) = PathSocket::bind(socket)?;
    let endpoint = super::quic::endpoint_on(paths.clone(), server)?;
    Ok((endpoint, paths, stun))
}

impl AsyncUdpSocket for PathSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // Relayed sends never wait (a full relay queue drops), so only the inner socket can
        // make quinn wait for room.
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let table = self.read();
        match table.routes.get(&net::canonical(transmit.destination)) {
            None => {
                drop(table);
                self.inner.try_send(transmit)
            }
            Some(Route::Direct(real)) => {
                let direct = Transmit {
                    destination: net::for_socket(*real, self.v6),
                    ..*transmit
                };
                drop(table);
                self.inner.try_send(&direct)?;
                self.counters
                    .direct_sent
                    .fetch_add(transmit.contents.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Some(Route::Relayed { relay, peer }) => {
                // A relay carries single datagrams: split a GSO batch into its segments.
                let size = transmit.segment_size.unwrap_or(transmit.contents.len());
                for segment in transmit.contents.chunks(size.max(1)) {
                    relay.send(*peer, segment)?;
                }
                self.counters
                    .relayed_sent
                    .fetch_add(transmit.contents.len() as u64, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Both sources are polled before Pending so that either wakes quinn.
        let relayed = self.poll_relayed(cx, bufs, meta);
        if relayed > 0 {
            return Poll::Ready(Ok(relayed));
        }
        let count = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(count)) => count,
            other => return other,
        };
        let table = self.read();
        if !table.direct.is_empty() {
            for meta in meta.iter_mut().take(count).filter(|m| m.len > 0) {
                if let Some(virtual_addr) = table.direct.get(&net::canonical(meta.addr)) {
                    meta.addr = net::for_socket(*virtual_addr, self.v6);
                    self.counters
                        .direct_received
                        .fetch_add(meta.len as u64, Ordering::Relaxed);
                }
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

#[cfg(test)]
#[path = "paths_tests.rs"]
mod tests;
