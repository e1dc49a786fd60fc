//! STUN on the caller's own sockets, built on stun-proto: binding requests (with RFC 5780
//! CHANGE-REQUEST), RFC 8489 retransmission with a bounded schedule, many transactions to many
//! servers at once on one socket, IPv4 and IPv6, UDP and TCP; and the pure NAT classification
//! that turns probe results into RFC 4787 behaviours.
//!
//! - [`codec`]: building requests and reading responses (total, never panics).
//! - [`classify`]: sans-IO classification of mapping, filtering, port allocation.
//! - [`udp`], [`tcp`]: thin tokio drivers feeding stun-proto's agent from a socket.
//!
//! Neighbours: [`crate::discovery`] plans the probes and builds the report from them.

pub mod classify;
pub mod codec;
pub mod tcp;
pub mod udp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use codec::{Binding, Change};

/// What went wrong with one STUN transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("answered with something that is not STUN: {0}")]
    Garbage(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("refused the request: error {code} {reason}")]
    Rejected { code: u16, reason: String },
    #[error("{0}")]
    Io(String),
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

impl StunError {
    pub fn io(e: &std::io::Error) -> Self {
        StunError::Io(e.to_string())
    }
}

/// The retransmission schedule of one UDP transaction (RFC 8489 §6.2.1): transmissions at
/// 0, RTO, 3·RTO, … doubling, `transmissions` in all, then `final_wait` for a late answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_rto: Duration,
    pub transmissions: u32,
    pub final_wait: Duration,
}

impl Timing {
    /// The schedule nat-info uses. RFC 8489 recommends an initial RTO of 500 ms and 7
    /// transmissions (39.5 s); nat-info must answer within seconds, so it sends 3 times over
    /// 0.75 s and gives up 1.25 s after the first: a server that misses three packets in a row is
    /// reported unreachable, which is the truth a user troubleshooting needs.
    pub const QUICK: Timing = Timing {
        initial_rto: Duration::from_millis(250),
        transmissions: 3,
        final_wait: Duration::from_millis(500),
    };

    /// The schedule of probes that must not hold anything up (the address, a punching kit):
    /// three sends over 300 ms, given up after 500 ms.
    pub const BRIEF: Timing = Timing {
        initial_rto: Duration::from_millis(100),
        transmissions: 3,
        final_wait: Duration::from_millis(200),
    };

    /// How long after the first transmission a transaction gives up.
    pub fn total(&self) -> Duration {
        let mut total = self.final_wait;
        let mut rto = self.initial_rto;
        for _ in 1..self.transmissions.max(1) {
            total += rto;
            rto *= 2;
        }
        total
    }
}

/// Counts STUN packets sent (retransmissions included), shared by every driver of one run.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_timing_is_bounded() {
        assert_eq!(Timing::QUICK.total(), Duration::from_millis(1250));
        let one = Timing {
            initial_rto: Duration::from_millis(100),
            transmissions: 1,
            final_wait: Duration::from_millis(300),
        };
        assert_eq!(one.total(), Duration::from_millis(300));
    }
}
