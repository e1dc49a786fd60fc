//! What keeps strangers from exhausting a listener (DESIGN §10): a listener without `--allow`
//! takes connections from anyone who has its address, so everything a connection can hold is
//! capped. [`Admission`] counts the connections between their first packet and their selection
//! (handshake, verification, the wait for the connector's choice), globally and per source; the
//! links handed out are capped by the listener with [`MAX_LINKS`]; each link's streams,
//! flow-control windows and QUIC datagram buffers by the constants here, which both transports
//! ([`super::tls`], [`super::quic`]) apply, beside their own details (h2's header and frame
//! sizes, quinn's buffers for connection attempts); UDP forwarding's flows and queues too
//! ([`crate::udp_forward`]). No clock here: the waits are bounded in [`crate::timing`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections between their first packet and their selection, from all sources at once. Each
/// holds a rustls or quinn handshake (tens of KiB) and then a link's buffers while the connector
/// decides: 128 of them stay within the footprint a flooded listener may have (DESIGN §6:
/// under 64 MiB), and far above what real connectors need (a handful each).
pub const MAX_HANDSHAKES: usize = 128;
/// The same from one source (an IPv4 address or an IPv6 /64): a connector dials each of our
/// candidates over TCP and QUIC at once (a dozen at most for an address with six candidates),
/// and a few connectors may share one NAT. A single host flooding us is held to this, so the
/// rest of [`MAX_HANDSHAKES`] stays open to everyone else.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 16;
/// With this many handshakes in flight, a QUIC client whose address is not yet validated is
/// sent a Retry first (one round trip, no state kept): a flood of Initials from forged or
/// blind sources then costs one stateless packet each, while a quiet listener saves real
/// connectors the extra round trip. A quarter of [`MAX_HANDSHAKES`].
pub const RETRY_ABOVE: usize = MAX_HANDSHAKES / 4;
/// Links handed out at once (to the driver, or waiting to be taken): each may hold its
/// flow-control windows' worth of a peer's bytes, so 32 of them bound what peers can park in
/// us to 32 × the connection windows. A `--forward` service with more concurrent peers than
/// this tells the next one it is busy.
pub const MAX_LINKS: usize = 32;

/// The connection-wide flow-control window of a link its driver took: what one peer can make
/// us hold of its data, per link. Loopback throughput is the same from 512 KiB up (measured
/// with scripts/bench); 4 MiB keeps ~40 MB/s over a 100 ms round trip. Each stream may use all
/// of it (one stream is the common case).
pub const CONNECTION_WINDOW: u32 = 4 << 20;
/// The same for a link not yet taken by the driver (handshake, verification, selection, hand-
/// off): the verification is 28 bytes each way, and a peer that sends data before it may can
/// park no more than this. 64 KiB is HTTP/2's own initial window, which it cannot go below.
pub const UNTAKEN_WINDOW: u32 = 64 << 10;
/// Streams one link may have open at once, on either transport. `--forward` carries one TCP
/// connection per stream and 256 at once is what a busy forward is expected to sustain (the
/// soak target of issue 13), far above interactive use; each open stream costs state on both
/// sides, and the connector's next stream simply waits for one to end.
pub const MAX_STREAMS: u32 = 256;

/// Bytes of QUIC datagrams (RFC 9221) a link buffers each way: received and not yet read by
/// UDP forwarding (or never read, on a link that forwards none), and queued to send. quinn drops
/// the oldest beyond it (by default it would hold 1.25 MiB in, 1 MiB out): 32 links park
/// at most 8 MiB of a stranger's datagrams, and 256 KiB is about 170 full-size datagrams, some
/// milliseconds of a busy WireGuard tunnel, so a queue this deep adds no lasting latency.
pub const DATAGRAM_BUFFER: usize = 256 << 10;
/// UDP flows one link may have at once (`--forward-udp`): a WireGuard peer is one flow, a DNS
/// client a flow per query port; each costs the listener a socket and a task.
pub const MAX_UDP_FLOWS: usize = 256;
/// UDP flows a listener has at once over all its links: each is a socket (a file descriptor),
/// and the common soft limit of 1024 has to leave room for the links and handshakes themselves.
pub const MAX_UDP_FLOWS_TOTAL: usize = 512;
/// Bytes of datagrams queued for a TCP link's session stream (each side): a stream that cannot
/// take them as fast as they come drops the rest, as a full UDP socket would.
pub const UDP_QUEUE_BYTES: usize = 1 << 20;

/// The unit a per-source limit applies to: an IPv4 address or an IPv6 /64 (the block one host
/// usually holds). An IPv4-mapped IPv6 address counts as its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source(u128);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                // Tagged so no /64 collides with an IPv4 address.
                None => Self((u128::from(v6) & !u128::from(u64::MAX)) | 1),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<Source, usize>,
}

/// Connections being admitted: at most `max_total` at once, `max_per_source` from one source.
/// The table holds only sources with a connection in flight, so it is bounded by `max_total`.
#[derive(Clone, Debug)]
pub struct Admission {
    max_total: usize,
    max_per_source: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One connection being admitted, counted until dropped.
#[derive(Debug)]
pub struct AdmissionSlot {
    source: Source,
    counts: Arc<Mutex<Counts>>,
}

impl Admission {
    pub fn new(max_total: usize, max_per_source: usize) -> Self {
        Self {
            max_total,
            max_per_source,
            counts: Arc::default(),
        }
    }

    /// The listener's caps: [`MAX_HANDSHAKES`], [`MAX_HANDSHAKES_PER_SOURCE`].
    pub fn listener() -> Self {
        Self::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE)
    }

    /// A slot for a connection from `ip`, unless that would pass either cap.
    pub fn try_admit(&self, ip: IpAddr) -> Option<AdmissionSlot> {
        let source = Source::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return None;
        }
        let from_source = counts.per_source.entry(source).or_insert(0);
        if *from_source >= self.max_per_source {
            return None;
        }
        *from_source += 1;
        counts.total += 1;
        Some(AdmissionSlot {
            source,
            counts: self.counts.clone(),
        })
    }

    /// Connections being admitted now.
    pub fn in_flight(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for AdmissionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_source_is_held_to_its_share_and_others_still_get_in() {
        let gate = Admission::new(10, 3);
        let held: Vec<_> = (0..3).map(|_| gate.try_admit(ip("192.0.2.1"))).collect();
        assert!(held.iter().all(Option::is_some));
        assert!(gate.try_admit(ip("192.0.2.1")).is_none());
        // The same host over IPv4-mapped IPv6 is the same source.
        assert!(gate.try_admit(ip("::ffff:192.0.2.1")).is_none());
        assert!(gate.try_admit(ip("192.0.2.2")).is_some());
        drop(held);
        assert_eq!(gate.in_flight(), 0);
        assert!(gate.try_admit(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn the_total_is_capped_across_sources_and_the_table_empties() {
        let gate = Admission::new(4, 2);
        let held: Vec<_> = (1..=4)
            .filter_map(|i| gate.try_admit(ip(&format!("2001:db8:{i}::1"))))
            .collect();
        assert_eq!(held.len(), 4);
        assert!(gate.try_admit(ip("2001:db8:99::1")).is_none());
        assert_eq!(gate.in_flight(), 4);
        drop(held);
        assert_eq!(gate.in_flight(), 0);
        assert!(gate.counts.lock().unwrap().per_source.is_empty());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let gate = Admission::new(10, 1);
        let _one = gate.try_admit(ip("2001:db8::1")).unwrap();
        assert!(gate.try_admit(ip("2001:db8::ffff:2")).is_none());
        assert!(gate.try_admit(ip("2001:db8:0:1::1")).is_some());
        assert_ne!(Source::of(ip("::")), Source::of(ip("0.0.0.0")));
    }
}
