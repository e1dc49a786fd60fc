//! What the relay's handle and its driver share: the errors an allocation reports, its
//! transport, and its counters.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

/// Why an allocation, or something asked of it, failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("TURN server unreachable: {0}")]
    Unreachable(String),
    #[error("the TURN server rejected the credentials")]
    Auth,
    #[error("the TURN server refused: {0} {1}")]
    Refused(u16, String),
    #[error("no answer from the TURN server in time")]
    Timeout,
    #[error("the TURN allocation is closed")]
    Closed,
}

/// Which transport the allocation talks to its server over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayTransport {
    Udp,
    Tcp,
}

/// Counters of one allocation, shared with its driver.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub(super) relayed: OnceLock<SocketAddr>,
    /// Refresh requests sent (allocation refreshes and the deallocation).
    pub refreshes: AtomicU64,
    /// Datagrams handed to the relay for a peer.
    pub sent: AtomicU64,
    /// Of those, sent as ChannelData (a channel was bound to the peer).
    pub via_channel: AtomicU64,
    /// Datagrams that could not be sent (no permission, or the connection would block).
    pub unsendable: AtomicU64,
    /// Datagrams from peers handed to `recv_from`.
    pub received: AtomicU64,
    /// Datagrams from peers dropped because `recv_from` fell behind.
    pub dropped: AtomicU64,
}
