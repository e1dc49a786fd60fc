//! Test support: two hosts, each behind a simulated NAT (or none), joined by a network with a
//! fixed one-way latency, on a simulated clock. No sockets, no real time, no randomness but a
//! seeded generator, so every run is the same and outcomes can be asserted exactly.
//!
//! A [`Nat`] keeps real tables: a mapping per inside endpoint (endpoint-independent) or per
//! inside endpoint and destination (symmetric, a random public port each; drawn from 1024–65535
//! as Linux's `masquerade random` does with [`Nat::symmetric_random`]), and the remote
//! endpoints the inside has sent to, which its filtering checks inbound packets against
//! (endpoint-independent = full cone, address-dependent, address-and-port-dependent =
//! port-restricted). Packets are checked at the NAT when they arrive, so a hole opened while a
//! packet was in flight lets it in. Packets the test asks to lose vanish after the sender's NAT
//! (which has seen them).
//!
//! A host may have many sockets ([`Net::send_from`]): what arrives is delivered to the inside
//! endpoint its NAT maps it to ([`Net::arrivals_at`]).
//!
//! `udp`, `tcp` and `random` hold the two-machine tests for each handshake.

mod random;
mod tcp;
mod udp;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// Where each host learned its candidate (as the kit does with STUN).
pub const STUN_SERVER: &str = "192.0.2.100:3478";
/// One-way latency between the two NATs.
pub const LATENCY: Duration = Duration::from_millis(20);

/// A deterministic generator (xorshift64*) for the ports a symmetric NAT picks.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// One public port per inside endpoint, whatever the destination.
    EndpointIndependent,
    /// A new random public port for each destination (symmetric NAT).
    PerDestination,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone may send to a mapped port (full cone).
    EndpointIndependent,
    /// Only IPs the inside has sent to from that port.
    Address,
    /// Only exact IP and port pairs the inside has sent to from that port.
    AddressAndPort,
}

pub struct Nat {
    pub public_ip: IpAddr,
    mapping: Mapping,
    filtering: Filtering,
    rng: Rng,
    /// The public ports it allocates from.
    range: RangeInclusive<u16>,
    /// (inside endpoint, destination when the mapping depends on it) → public port.
    ports: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// Public port → inside endpoint.
    inside: HashMap<u16, SocketAddr>,
    /// (public port, remote endpoint) pairs the inside has sent to.
    sent_to: HashSet<(u16, SocketAddr)>,
}

impl Nat {
    pub fn new(public_ip: &str, mapping: Mapping, filtering: Filtering, seed: u64) -> Self {
        Self {
            public_ip: public_ip.parse().expect("an IP"),
            mapping,
            filtering,
            rng: Rng::new(seed),
            range: 20_000..=59_999,
            ports: HashMap::new(),
            inside: HashMap::new(),
            sent_to: HashSet::new(),
        }
    }

    pub fn full_cone(ip: &str) -> Self {
        Self::new(
            ip,
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
            1,
        )
    }

    pub fn address_restricted(ip: &str) -> Self {
        Self::new(ip, Mapping::EndpointIndependent, Filtering::Address, 1)
    }

    pub fn port_restricted(ip: &str) -> Self {
        Self::new(
            ip,
            Mapping::EndpointIndependent,
            Filtering::AddressAndPort,
            1,
        )
    }

    pub fn symmetric(ip: &str, seed: u64) -> Self {
        Self::new(ip, Mapping::PerDestination, Filtering::AddressAndPort, seed)
    }

    /// A symmetric NAT as `masquerade random` makes one: a random port from 1024–65535 for each
    /// new destination, address-and-port-dependent filtering.
    pub fn symmetric_random(ip: &str, seed: u64) -> Self {
        Self {
            range: 1024..=65_535,
            ..Self::symmetric(ip, seed)
        }
    }

    /// The public endpoint a packet from `from` to `to` leaves with (made on first use).
    pub fn outbound(&mut self, from: SocketAddr, to: SocketAddr) -> SocketAddr {
        let key = match self.mapping {
            Mapping::EndpointIndependent => (from, None),
            Mapping::PerDestination => (from, Some(to)),
        };
        let port = match self.ports.get(&key) {
            Some(&port) => port,
            None => {
                let (start, end) = (*self.range.start(), *self.range.end());
                let size = u64::from(end - start) + 1;
                let port = loop {
                    let port = start + (self.rng.next() % size) as u16;
                    if !self.inside.contains_key(&port) {
                        break port;
                    }
                };
                self.ports.insert(key, port);
                self.inside.insert(port, from);
                port
            }
        };
        self.sent_to.insert((port, to));
        SocketAddr::new(self.public_ip, port)
    }

    /// The inside endpoint a packet from `from` to public `port` goes to, if the NAT lets it.
    pub fn inbound(&self, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        let inside = *self.inside.get(&port)?;
        let allowed = match self.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::Address => self
                .sent_to
                .iter()
                .any(|&(p, to)| p == port && to.ip() == from.ip()),
            Filtering::AddressAndPort => self.sent_to.contains(&(port, from)),
        };
        allowed.then_some(inside)
    }

    /// The public port of the mapping from `from` towards `to`, if there is one.
    pub fn mapped(&self, from: SocketAddr, to: SocketAddr) -> Option<u16> {
        let key = match self.mapping {
            Mapping::EndpointIndependent => (from, None),
            Mapping::PerDestination => (from, Some(to)),
        };
        self.ports.get(&key).copied()
    }
}

/// One machine's address: its own endpoint, behind a NAT or not.
pub struct Host {
    pub inside: SocketAddr,
    pub nat: Option<Nat>,
}

impl Host {
    pub fn open(inside: &str) -> Self {
        Self {
            inside: inside.parse().expect("an endpoint"),
            nat: None,
        }
    }

    pub fn behind(inside: &str, nat: Nat) -> Self {
        Self {
            nat: Some(nat),
            ..Self::open(inside)
        }
    }

    /// Where packets to `to` appear to come from (making the NAT mapping if needed).
    pub fn send(&mut self, to: SocketAddr) -> SocketAddr {
        self.send_from(self.inside, to)
    }

    /// Where packets from the host's socket `from` to `to` appear to come from.
    pub fn send_from(&mut self, from: SocketAddr, to: SocketAddr) -> SocketAddr {
        match &mut self.nat {
            Some(nat) => nat.outbound(from, to),
            None => from,
        }
    }

    /// The host's candidate as STUN would tell it: its mapping towards a STUN server.
    pub fn reflexive(&mut self) -> SocketAddr {
        self.send(STUN_SERVER.parse().expect("an endpoint"))
    }

    /// Whether a packet from `from` to `to` reaches this host, and at which of its sockets:
    /// `None` if `to` is not its address, `Some(None)` if its NAT filters it out.
    fn receives(&self, from: SocketAddr, to: SocketAddr) -> Option<Option<SocketAddr>> {
        match &self.nat {
            Some(nat) if nat.public_ip == to.ip() => Some(nat.inbound(from, to.port())),
            None if self.inside.ip() == to.ip() => Some(Some(to)),
            _ => None,
        }
    }
}

struct InFlight<P> {
    arrives: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    payload: P,
}

/// What became of packets, counted over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub delivered: usize,
    /// Stopped by the receiving NAT's filter.
    pub filtered: usize,
    /// Addressed to neither host (a private candidate of the other side).
    pub unroutable: usize,
    /// Lost on purpose.
    pub lost: usize,
}

/// Two hosts, the packets between them and the clock.
pub struct Net<P> {
    pub start: Instant,
    pub now: Instant,
    pub hosts: [Host; 2],
    /// How many of each host's first packets to lose.
    pub lose_first: [usize; 2],
    sent: [usize; 2],
    wire: Vec<InFlight<P>>,
    seq: u64,
    pub counts: Counts,
}

impl<P> Net<P> {
    pub fn new(a: Host, b: Host) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            hosts: [a, b],
            lose_first: [0, 0],
            sent: [0, 0],
            wire: Vec::new(),
            seq: 0,
            counts: Counts::default(),
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Host `host` sends `payload` to `to` now.
    pub fn send(&mut self, host: usize, to: SocketAddr, payload: P) {
        let inside = self.hosts[host].inside;
        self.send_from(host, inside, to, payload);
    }

    /// Host `host` sends `payload` from its socket `inside` to `to` now.
    pub fn send_from(&mut self, host: usize, inside: SocketAddr, to: SocketAddr, payload: P) {
        let from = self.hosts[host].send_from(inside, to);
        self.sent[host] += 1;
        if self.sent[host] <= self.lose_first[host] {
            self.counts.lost += 1;
            return;
        }
        self.seq += 1;
        self.wire.push(InFlight {
            arrives: self.now + LATENCY,
            seq: self.seq,
            from,
            to,
            payload,
        });
    }

    pub fn next_arrival(&self) -> Option<Instant> {
        self.wire.iter().map(|p| p.arrives).min()
    }

    /// The packets arriving by now that get through, in the order they were sent, as
    /// (receiving host, source as seen there, payload).
    pub fn arrivals(&mut self) -> Vec<(usize, SocketAddr, P)> {
        self.arrivals_at()
            .into_iter()
            .map(|(host, _, from, payload)| (host, from, payload))
            .collect()
    }

    /// Like [`Net::arrivals`], with the socket each packet reaches: (receiving host, its
    /// socket, source as seen there, payload).
    pub fn arrivals_at(&mut self) -> Vec<(usize, SocketAddr, SocketAddr, P)> {
        let (mut due, later): (Vec<_>, Vec<_>) =
            self.wire.drain(..).partition(|p| p.arrives <= self.now);
        self.wire = later;
        due.sort_by_key(|p| p.seq);
        let mut through = Vec::new();
        for p in due {
            let reaches = (0..2).find_map(|h| Some((h, self.hosts[h].receives(p.from, p.to)?)));
            match reaches {
                Some((host, Some(inside))) => {
                    self.counts.delivered += 1;
                    through.push((host, inside, p.from, p.payload));
                }
                Some((_, None)) => self.counts.filtered += 1,
                None => self.counts.unroutable += 1,
            }
        }
        through
    }
}

/// The candidates a host announces, public first (as the kit builds them): its reflexive
/// endpoint and, behind a NAT, its private one.
pub fn candidates(host: &mut Host) -> Vec<SocketAddr> {
    let reflexive = host.reflexive();
    let mut list = vec![reflexive];
    if host.inside != reflexive {
        list.push(host.inside);
    }
    list
}

/// Milliseconds, for readable assertions.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
