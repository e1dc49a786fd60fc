//! UDP forwarding: `connect --local-udp [HOST:]PORT` binds a local UDP socket and carries what
//! arrives on it to the peer, whose `listen --forward-udp [HOST:]PORT` sends it on to the
//! target and carries the replies back (docs/udp-forward.md).
//!
//! - Each distinct local source address is a *flow* with an id of its own ([`flows`]); the
//!   listener gives each flow its own UDP socket connected to the target, so replies find their
//!   way back to the source that asked. Flows are forgotten after [`crate::timing::UDP_FLOW_IDLE`]
//!   (or `--udp-idle`) without traffic either way.
//! - The connector opens one *session stream* per link, saying how datagrams travel
//!   ([`codec`]): on a QUIC link as QUIC datagrams (RFC 9221: unreliable, unordered, no
//!   head-of-line blocking), on a TCP link as length-prefixed frames on that stream (reliable,
//!   in order: one lost TCP segment holds up every flow until it is retransmitted)
//!   ([`carrier`]).
//! - A datagram that does not fit the link's current maximum (the QUIC path MTU) is dropped
//!   whole and counted, with a warning once per flow: never truncated.
//! - What strangers can hold is capped ([`crate::link::limits`]): flows per link and per
//!   listener, bytes queued for the link; whatever does not fit is dropped and counted, as UDP
//!   would drop it.
//!
//! The connector's side is [`local`], the listener's [`target`]; the CLI drivers only bind,
//! call them and report the [`Totals`].

pub mod carrier;
pub mod codec;
pub mod flows;
pub mod local;
pub mod target;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::link::LinkError;

/// Largest UDP payload a socket can hand us (65,507 over IPv4, 65,527 over IPv6), rounded up:
/// the receive buffers are this big, so nothing is ever cut short on the way in.
pub const RECV_BUFFER: usize = 1 << 16;

/// Why UDP forwarding over a link could not start or went on no longer.
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    /// The connector's session was not acknowledged: the peer runs something else.
    #[error("the peer did not accept UDP forwarding (it must run `listen --forward-udp`): {0}")]
    NotForwarding(String),
    /// The listener got a stream that is not a UDP session.
    #[error(
        "the peer opened a stream that is not a UDP session (it must run `connect --local-udp`)"
    )]
    NotASession,
    #[error("the peer asked for QUIC datagrams on a link that cannot carry them")]
    NoDatagrams,
    #[error("the peer opened no UDP session in time")]
    NoSession,
    #[error("cannot resolve the forward target {0}")]
    Resolve(String),
    /// The link ended (the peer went away, or was lost).
    #[error("the link to the peer ended: {0}")]
    Ended(String),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// What one side of a UDP session counted, for the `done` event. "Sent" is toward the peer over
/// the link, "received" from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Datagrams and payload bytes carried to the peer.
    pub datagrams_sent: u64,
    pub sent: u64,
    /// Datagrams and payload bytes the peer carried to us.
    pub datagrams_received: u64,
    pub received: u64,
    /// Flows started.
    pub flows: u64,
    /// Datagrams too large for the link at the time: dropped whole, never truncated.
    pub oversized: u64,
    /// Datagrams dropped because a queue or socket buffer was full (quinn's receive buffer
    /// included), a reply came for a flow already forgotten, or a datagram from the peer was
    /// malformed.
    pub dropped: u64,
    /// Datagrams of new flows turned away because the flow cap was reached.
    pub refused: u64,
}

/// The live counters behind [`Totals`], shared by a session's tasks.
#[derive(Debug, Default)]
pub struct Counters {
    datagrams_sent: AtomicU64,
    sent: AtomicU64,
    datagrams_received: AtomicU64,
    received: AtomicU64,
    flows: AtomicU64,
    oversized: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    fn sent(&self, len: usize) {
        self.datagrams_sent.fetch_add(1, Ordering::Relaxed);
        self.sent.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn received(&self, len: usize) {
        self.datagrams_received.fetch_add(1, Ordering::Relaxed);
        self.received.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts what the carrier's transport dropped unseen, once the session is over.
    fn settle(&self, carrier: &carrier::Carrier) {
        self.dropped.fetch_add(carrier.unread(), Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            datagrams_sent: get(&self.datagrams_sent),
            sent: get(&self.sent),
            datagrams_received: get(&self.datagrams_received),
            received: get(&self.received),
            flows: get(&self.flows),
            oversized: get(&self.oversized),
            dropped: get(&self.dropped),
            refused: get(&self.refused),
        }
    }
}

/// How a session ended, with what it counted.
#[derive(Debug)]
pub struct Report {
    pub totals: Totals,
    /// `Ok` when this side was told to stop, or (listener) the peer closed the link.
    pub ended: Result<(), UdpError>,
}
