//! `random_probe`'s two halves, sans-IO (DESIGN §3, birthday paradox). A symmetric NAT that
//! allocates ports at random gives every new destination a new random public port, so the peer
//! cannot know where to send. The *hard* side (behind it) opens up to [`MAX_SOCKETS`] sockets
//! and sends a probe from each to the *easy* side's mapped address: each makes a mapping at a
//! random port that lets the easy side in. The easy side (endpoint-independent mapping) sends
//! probes from its one kit socket to random ports of the hard side's public IP: each opens its
//! own NAT for that port, and one that lands on one of the hard side's mappings is answered.
//! With 256 mappings among the 64 512 ports a NAT picks from, each probe hits with p ≈ 1/252:
//! ~175 probes for an even chance, ~1000 for 98 %.
//!
//! - [`Fan`] (hard): socket `n` is opened (named in a [`Transmit`] for the first time) and
//!   probes every [`RANDOM_PROBE_OPEN_INTERVAL`] until all are open, then the sockets probe
//!   again in turn every [`RANDOM_PROBE_INTERVAL`] (a re-sent probe passes any hole the easy
//!   side's earlier probes opened for its port, even one opened before the mapping existed).
//! - [`Spray`] (easy): a probe to the next of its random ports every [`RANDOM_PROBE_INTERVAL`].
//!
//! Neither catches up after a late wake-up: the pace is a ceiling, never a burst.
//!
//! Both answer the other's probes (binding requests carrying the peer's token), report each
//! socket and source the peer is heard on ([`Event::Heard`]), and stop sending once the peer was
//! heard: at most [`MAX_PROBES`] probes each per attempt. [`Counts`] says what was sent.
//!
//! Neighbours: `random_probe` drives a [`Fan`] over sockets of its own and reads what the
//! probing ([`crate::traversal::probing`]) hears with a [`Spray`] on the kit socket; the tests
//! in `sim` run the two against each other through simulated NATs.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use stun_proto::types::message::TransactionId;

use crate::stun::codec::{self, Punch};
use crate::timing::{RANDOM_PROBE_INTERVAL, RANDOM_PROBE_OPEN_INTERVAL};

/// Most sockets the hard side opens per attempt.
pub const MAX_SOCKETS: usize = 256;
/// Most probes either side sends per attempt (answers to the peer's probes not counted).
pub const MAX_PROBES: usize = 2048;
/// The ports a NAT allocates from at random (Linux `masquerade random`: 1024–65535).
pub const PORTS: RangeInclusive<u16> = 1024..=65535;

/// A datagram to send from socket `socket` (the hard side's `n`th; the easy side has only 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub socket: usize,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer was heard on `socket` from `from`: a probe of its (answered), or an answer to
    /// ours (`confirmed`: the path works both ways). Reported once per socket and source, and
    /// again when an answer confirms it.
    Heard {
        socket: usize,
        from: SocketAddr,
        confirmed: bool,
    },
}

/// What one side sent in an attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sockets opened (the easy side uses its kit socket: 1).
    pub sockets: usize,
    /// Probes sent (at most [`MAX_PROBES`]).
    pub probes: usize,
    /// Answers to the peer's probes.
    pub answers: usize,
}

/// What both halves share: tokens, the probes sent, what was heard.
struct Core {
    own_token: String,
    peer_token: String,
    /// Transaction id of each probe sent → the socket it left from.
    sent: HashMap<TransactionId, usize>,
    /// Every (socket, source) heard, and whether an answer confirmed it.
    heard: HashMap<(usize, SocketAddr), bool>,
    counts: Counts,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Core {
    fn new(own_token: String, peer_token: String) -> Self {
        Self {
            own_token,
            peer_token,
            sent: HashMap::new(),
            heard: HashMap::new(),
            counts: Counts::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn probe(&mut self, socket: usize, to: SocketAddr) {
        match codec::punch_request(&self.own_token) {
            Ok((id, bytes)) => {
                self.sent.insert(id, socket);
                self.counts.probes += 1;
                self.transmits.push_back(Transmit { socket, to, bytes });
            }
            Err(e) => tracing::trace!(%to, "random probe not built: {e}"),
        }
    }

    /// Answers a peer probe, takes an answer to ours; reports what is new. Returns whether the
    /// datagram was the peer's.
    fn handle_datagram(&mut self, socket: usize, from: SocketAddr, data: &[u8]) -> bool {
        let confirmed = match codec::read_punch(data) {
            Some(Punch::Request { token }) if token == self.peer_token => {
                match codec::punch_response(data, from) {
                    Ok(bytes) => {
                        self.counts.answers += 1;
                        self.transmits.push_back(Transmit {
                            socket,
                            to: from,
                            bytes,
                        });
                    }
                    Err(e) => tracing::trace!(%from, "random probe not answered: {e}"),
                }
                false
            }
            Some(Punch::Response { id, .. }) if self.sent.get(&id) == Some(&socket) => true,
            _ => return false,
        };
        let known = self.heard.get(&(socket, from)).copied();
        if known == Some(true) || (known == Some(false) && !confirmed) {
            return true;
        }
        self.heard.insert((socket, from), confirmed);
        self.events.push_back(Event::Heard {
            socket,
            from,
            confirmed,
        });
        true
    }
}

/// The hard side: many sockets, each probing the easy side's mapped address.
pub struct Fan {
    core: Core,
    target: SocketAddr,
    /// Sockets it may use: [`MAX_SOCKETS`], fewer once one could not be opened.
    limit: usize,
    /// The next socket to probe from.
    cursor: usize,
    next: Option<Instant>,
}

impl Fan {
    /// Probes `target` with `own_token` from `fire_at`; answers probes carrying `peer_token`.
    pub fn new(
        own_token: String,
        peer_token: String,
        target: SocketAddr,
        fire_at: Instant,
    ) -> Self {
        Self {
            core: Core::new(own_token, peer_token),
            target,
            limit: MAX_SOCKETS,
            cursor: 0,
            next: Some(fire_at),
        }
    }

    /// Sends the probe due by `now`, if one is. Paced, never in bursts: a caller that wakes
    /// late sends one probe, not the ones it missed, and the next is due an interval later.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.next.filter(|&at| at <= now) else {
            return;
        };
        if self.core.counts.probes >= MAX_PROBES || self.limit == 0 {
            self.next = None;
            return;
        }
        let socket = self.cursor;
        self.core.counts.sockets = self.core.counts.sockets.max(socket + 1);
        self.core.probe(socket, self.target);
        self.cursor = (socket + 1) % self.limit;
        let opening = self.core.counts.sockets < self.limit;
        let step = if opening {
            RANDOM_PROBE_OPEN_INTERVAL
        } else {
            RANDOM_PROBE_INTERVAL
        };
        self.next = (self.core.counts.probes < MAX_PROBES).then_some(at.max(now) + step);
    }

    /// Socket `socket` could not be opened (out of file descriptors, say): the sockets before
    /// it are all there are. Its probe is not counted as sent.
    pub fn open_failed(&mut self, socket: usize) {
        if socket >= self.limit {
            return;
        }
        self.limit = socket;
        self.core.counts.sockets = self.core.counts.sockets.min(socket);
        // Its probe (taken already) and any queued for it or later sockets never leave.
        let queued = self.core.transmits.len();
        self.core.transmits.retain(|t| t.socket < socket);
        let dropped = 1 + queued - self.core.transmits.len();
        self.core.counts.probes = self.core.counts.probes.saturating_sub(dropped);
        self.cursor = 0;
        if socket == 0 {
            self.next = None;
        }
    }

    /// A datagram arrived on socket `socket` from `from`. Once the peer is heard, no more probes
    /// are sent (answers still are).
    pub fn handle_datagram(&mut self, socket: usize, from: SocketAddr, data: &[u8]) {
        if self.core.handle_datagram(socket, from, data) && !self.core.heard.is_empty() {
            self.next = None;
        }
    }

    pub fn counts(&self) -> Counts {
        self.core.counts
    }

    /// When the next probe is due; `None` once the peer was heard or the budget is spent.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }
}

/// The easy side: probes to random ports of the hard side's public IP, from the kit socket.
pub struct Spray {
    core: Core,
    ip: IpAddr,
    ports: Vec<u16>,
    index: usize,
    next: Option<Instant>,
}

impl Spray {
    /// Probes `ports` of `ip` in order (at most [`MAX_PROBES`] of them), one every
    /// [`RANDOM_PROBE_INTERVAL`] from `fire_at`.
    pub fn new(
        own_token: String,
        peer_token: String,
        ip: IpAddr,
        mut ports: Vec<u16>,
        fire_at: Instant,
    ) -> Self {
        ports.truncate(MAX_PROBES);
        let mut core = Core::new(own_token, peer_token);
        core.counts.sockets = 1;
        Self {
            next: (!ports.is_empty()).then_some(fire_at),
            core,
            ip,
            ports,
            index: 0,
        }
    }

    /// Sends the probe due by `now`, if one is; paced as [`Fan::handle_timeout`] is.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.next.filter(|&at| at <= now) else {
            return;
        };
        let Some(&port) = self.ports.get(self.index) else {
            self.next = None;
            return;
        };
        self.index += 1;
        self.core.probe(0, SocketAddr::new(self.ip, port));
        self.next = (self.index < self.ports.len()).then_some(at.max(now) + RANDOM_PROBE_INTERVAL);
    }

    /// A datagram arrived on the kit socket. Anything but the peer's probes and answers to
    /// ours is ignored (the socket carries other strategies' probes too).
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        if self.core.handle_datagram(0, from, data) && !self.core.heard.is_empty() {
            self.next = None;
        }
    }

    pub fn counts(&self) -> Counts {
        self.core.counts
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.core.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }
}

/// `count` distinct ports from [`PORTS`] in random order, drawn from `next` (a random `u64`
/// each call): a partial shuffle, so it ends whatever `next` returns.
pub fn random_ports(count: usize, mut next: impl FnMut() -> u64) -> Vec<u16> {
    let mut all: Vec<u16> = PORTS.collect();
    let count = count.min(all.len());
    for i in 0..count {
        let j = i + (next() % (all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

/// How long an attempt sends, at most: the hard side's and the easy side's full budgets.
pub fn sending_time() -> (Duration, Duration) {
    let opening = RANDOM_PROBE_OPEN_INTERVAL * (MAX_SOCKETS as u32 - 1);
    let rest = RANDOM_PROBE_INTERVAL * (MAX_PROBES - MAX_SOCKETS) as u32;
    (
        opening + rest,
        RANDOM_PROBE_INTERVAL * (MAX_PROBES as u32 - 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const HARD: &str = "rc0011";
    const EASY: &str = "rl0011";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn drain(t: impl FnMut() -> Option<Transmit>) -> Vec<Transmit> {
        std::iter::from_fn(t).collect()
    }

    #[test]
    fn the_fan_opens_every_socket_then_cycles_within_the_budget() {
        let fire = Instant::now();
        let target = addr("198.51.100.7:4000");
        let mut fan = Fan::new(HARD.into(), EASY.into(), target, fire);
        let mut sent = Vec::new();
        let mut now = fire;
        while let Some(at) = fan.poll_timeout() {
            now = at;
            fan.handle_timeout(now);
            sent.extend(drain(|| fan.poll_transmit()));
        }
        assert_eq!(sent.len(), MAX_PROBES);
        assert!(sent.iter().all(|t| t.to == target));
        let sockets: Vec<usize> = sent.iter().map(|t| t.socket).collect();
        assert_eq!(sockets[..MAX_SOCKETS], (0..MAX_SOCKETS).collect::<Vec<_>>());
        assert_eq!(sockets[MAX_SOCKETS], 0, "then round again");
        assert_eq!(*sockets.iter().max().unwrap(), MAX_SOCKETS - 1);
        assert_eq!(now - fire, sending_time().0);
        assert_eq!(
            fan.counts(),
            Counts {
                sockets: MAX_SOCKETS,
                probes: MAX_PROBES,
                answers: 0
            }
        );
        for t in &sent[..3] {
            assert_eq!(
                codec::read_punch(&t.bytes),
                Some(Punch::Request { token: HARD.into() })
            );
        }
    }

    #[test]
    fn a_socket_that_cannot_be_opened_caps_the_fan() {
        let fire = Instant::now();
        let mut fan = Fan::new(HARD.into(), EASY.into(), addr("198.51.100.7:4000"), fire);
        for k in 0..4 {
            fan.handle_timeout(fire + RANDOM_PROBE_OPEN_INTERVAL * k);
        }
        // The driver opens sockets 0 and 1, and fails to open 2 (3's probe is still queued).
        for _ in 0..3 {
            fan.poll_transmit();
        }
        fan.open_failed(2);
        assert_eq!(fan.poll_transmit(), None);
        assert_eq!(fan.counts().sockets, 2);
        assert_eq!(fan.counts().probes, 2);
        let mut sockets = Vec::new();
        for _ in 0..4 {
            let Some(at) = fan.poll_timeout() else { break };
            fan.handle_timeout(at);
            sockets.extend(drain(|| fan.poll_transmit()).iter().map(|t| t.socket));
        }
        assert_eq!(sockets, vec![0, 1, 0, 1]);
        fan.open_failed(0);
        assert_eq!(fan.poll_timeout(), None);
    }

    #[test]
    fn the_spray_probes_its_ports_in_turn_and_stops_when_answered() {
        let fire = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let mut spray = Spray::new(EASY.into(), HARD.into(), ip, vec![5000, 6000, 7000], fire);
        spray.handle_timeout(fire);
        spray.handle_timeout(fire + RANDOM_PROBE_INTERVAL);
        let sent = drain(|| spray.poll_transmit());
        let to: Vec<SocketAddr> = sent.iter().map(|t| t.to).collect();
        assert_eq!(to, vec![addr("203.0.113.9:5000"), addr("203.0.113.9:6000")]);
        // A stray answer (not to a probe of ours) changes nothing.
        let (_, other) = codec::punch_request(EASY).unwrap();
        let stray = codec::punch_response(&other, addr("198.51.100.7:4000")).unwrap();
        spray.handle_datagram(addr("203.0.113.9:6000"), &stray);
        assert_eq!(spray.poll_event(), None);
        // The answer to the probe to 6000 ends the spray.
        let answer = codec::punch_response(&sent[1].bytes, addr("198.51.100.7:4000")).unwrap();
        spray.handle_datagram(addr("203.0.113.9:6000"), &answer);
        assert_eq!(
            spray.poll_event(),
            Some(Event::Heard {
                socket: 0,
                from: addr("203.0.113.9:6000"),
                confirmed: true
            })
        );
        assert_eq!(spray.poll_timeout(), None);
        assert_eq!(spray.counts().probes, 2);
    }

    #[test]
    fn the_fan_answers_on_the_socket_the_probe_came_to_and_stops_probing() {
        let fire = Instant::now();
        let mut fan = Fan::new(HARD.into(), EASY.into(), addr("198.51.100.7:4000"), fire);
        for k in 0..10 {
            fan.handle_timeout(fire + RANDOM_PROBE_OPEN_INTERVAL * k);
        }
        let sent = drain(|| fan.poll_transmit());
        assert_eq!(sent.len(), 10);
        let easy = addr("198.51.100.7:4000");
        let (_, probe) = codec::punch_request(EASY).unwrap();
        fan.handle_datagram(7, easy, &probe);
        let answer = drain(|| fan.poll_transmit());
        assert_eq!(answer.len(), 1);
        assert_eq!((answer[0].socket, answer[0].to), (7, easy));
        assert_eq!(
            fan.poll_event(),
            Some(Event::Heard {
                socket: 7,
                from: easy,
                confirmed: false
            })
        );
        assert_eq!(fan.poll_timeout(), None, "no more probes once heard");
        // An answer to socket 3's probe arriving on socket 4 is not socket 4's.
        let reply = codec::punch_response(&sent[3].bytes, addr("203.0.113.9:1")).unwrap();
        fan.handle_datagram(4, easy, &reply);
        assert_eq!(fan.poll_event(), None);
        fan.handle_datagram(3, easy, &reply);
        assert!(matches!(
            fan.poll_event(),
            Some(Event::Heard {
                socket: 3,
                confirmed: true,
                ..
            })
        ));
        assert_eq!(fan.counts().answers, 1);
    }

    #[test]
    fn a_late_caller_sends_one_probe_not_a_burst() {
        let fire = Instant::now();
        let late = fire + Duration::from_millis(100);
        let mut fan = Fan::new(HARD.into(), EASY.into(), addr("198.51.100.7:4000"), fire);
        fan.handle_timeout(late);
        assert_eq!(drain(|| fan.poll_transmit()).len(), 1);
        assert_eq!(fan.poll_timeout(), Some(late + RANDOM_PROBE_OPEN_INTERVAL));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let mut spray = Spray::new(EASY.into(), HARD.into(), ip, vec![1, 2, 3], fire);
        spray.handle_timeout(late);
        assert_eq!(drain(|| spray.poll_transmit()).len(), 1);
        assert_eq!(spray.poll_timeout(), Some(late + RANDOM_PROBE_INTERVAL));
    }

    #[test]
    fn random_ports_are_distinct_and_in_range() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let ports = random_ports(MAX_PROBES, || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        });
        assert_eq!(ports.len(), MAX_PROBES);
        assert!(ports.iter().all(|p| PORTS.contains(p)));
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), MAX_PROBES);
        let all: HashSet<u16> = random_ports(usize::MAX, || 7).into_iter().collect();
        assert_eq!(all.len(), 64_512);
    }
}
