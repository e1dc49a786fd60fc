//! The punching kit's relay: one TURN allocation made for a rendezvous (when TURN is configured
//! and the relay is allowed), its relayed address offered to the peer as a candidate. What peers
//! send through it is sorted as the kit's own socket sorts what arrives: punch probes (STUN) go
//! to the probing, everything else (QUIC) to the path socket, which hands it to quinn as coming
//! from the peer's virtual address. The relay is gone when the allocation is: [`KitRelay::lost`]
//! says so, so a link still relayed can end at once with the reason.
//!
//! Neighbours: [`crate::relay`] keeps the allocation; [`crate::link::paths`] routes quinn's
//! datagrams through it ([`RelayPath`] is implemented here for the allocation's sender).

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::config::TurnServer;
use crate::link::paths::{RelayInbound, RelayPath};
use crate::relay::{Allocation, RelayError, RelaySender};
use crate::stun::codec::looks_like_stun;
use crate::timing::KIT_RELAY_WAIT;

/// Probes from peers through the relay waiting for the probing; more are dropped (probes are
/// repeated anyway).
const PROBE_QUEUE: usize = 64;

impl RelayPath for RelaySender {
    fn send(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.try_send_to(to, datagram)
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))
    }
}

/// A rendezvous' TURN allocation and the task sorting what arrives through it.
pub struct KitRelay {
    pub allocation: Allocation,
    pub sender: RelaySender,
    pub relayed: SocketAddr,
    /// Punch probes (and answers) peers sent through the relay: `(peer address there, bytes)`.
    pub probes: Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
    /// Cancelled once the allocation is gone (server dead, refresh refused, connection lost).
    pub lost: CancellationToken,
    _sorter: AbortOnDropHandle<()>,
}

impl KitRelay {
    /// Allocates on `server`, giving up after [`KIT_RELAY_WAIT`].
    pub async fn allocate(server: &TurnServer) -> Result<Allocation, RelayError> {
        tokio::time::timeout(KIT_RELAY_WAIT, Allocation::connect(server))
            .await
            .map_err(|_| RelayError::Timeout)?
    }

    /// Starts sorting what arrives through `allocation`: QUIC goes to `quic`.
    pub fn new(mut allocation: Allocation, quic: RelayInbound) -> Result<Self, RelayError> {
        let incoming = allocation.take_incoming().ok_or(RelayError::Closed)?;
        let (probes_tx, probes) = mpsc::channel(PROBE_QUEUE);
        let lost = CancellationToken::new();
        let sorter = tokio::spawn(sort(incoming, probes_tx, quic, lost.clone()));
        tracing::debug!(relayed = %allocation.relayed_addr(), transport = ?allocation.transport(), "kit relay allocated");
        Ok(Self {
            sender: allocation.sender(),
            relayed: allocation.relayed_addr(),
            allocation,
            probes: Mutex::new(probes),
            lost,
            _sorter: AbortOnDropHandle::new(sorter),
        })
    }

    /// Asks the server to let `ips` in (a relay forwards only from permitted addresses), all at
    /// once; refusals (private addresses a server will not relay to) are logged and skipped.
    pub async fn permit(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let asks = ips.into_iter().map(|ip| async move {
            if let Err(e) = self.allocation.permit(ip).await {
                tracing::debug!(%ip, "TURN permission not granted: {e}");
            }
        });
        futures_util::future::join_all(asks).await;
    }
}

/// Sorts what peers send through the relay until the allocation ends, then cancels `lost`.
async fn sort(
    mut incoming: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    probes: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    quic: RelayInbound,
    lost: CancellationToken,
) {
    while let Some((from, data)) = incoming.recv().await {
        // Full queues drop, as a socket buffer would.
        if looks_like_stun(&data) {
            let _ = probes.try_send((from, data));
        } else {
            let _ = quic.try_send((from, Bytes::from(data)));
        }
    }
    tracing::debug!("kit relay: the allocation is gone");
    lost.cancel();
}

/// Whether a TURN server could relay to `ip`: servers refuse private, shared, loopback and
/// link-local ranges (as the lab's and most public ones are configured).
pub fn relayable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            !(v4.is_private()
                || shared
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            let unique_local = (v6.segments()[0] & 0xfe00) == 0xfc00;
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || unique_local
                || link_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_a_relay_would_serve_are_relayable() {
        for ip in ["203.0.113.5", "198.51.100.1", "8.8.8.8", "2001:db8::5"] {
            assert!(relayable(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.1.2.3",
            "192.168.1.2",
            "172.16.0.1",
            "100.64.1.2",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
            "::1",
        ] {
            assert!(!relayable(ip.parse().unwrap()), "{ip}");
        }
    }
}
