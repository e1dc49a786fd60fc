//! The UDP punching handshake, sans-IO. From the agreed instant a [`Prober`] sends a round of
//! probes every [`PROBE_INTERVAL`] (one to each peer candidate) until [`PUNCH_WINDOW`](crate::timing::PUNCH_WINDOW) has
//! passed; probes are STUN binding requests whose USERNAME is this side's role token
//! ([`crate::traversal::rendezvous::Role::token`]). Throughout, and after the window too, it
//! answers every probe that carries the peer's token. It reports each address the peer is heard
//! from: the source of a peer probe or of an answer to one of our own probes, whatever port that
//! is (a peer-reflexive source counts), and again when an answer *confirms* it (our probe got
//! there and its answer came back). Its own probes looped back, answers to requests it never
//! sent and anything else are ignored. [`Prober::rearm`] starts another window (the background
//! probing of a relayed link, looking for a direct path).
//!
//! Neighbours: [`crate::stun::codec`] encodes and reads the probes; `udp_punch` drives a
//! prober over the kit's STUN side and dials QUIC to the address heard.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_proto::types::message::TransactionId;

use crate::stun::codec::{self, Punch};
use crate::timing::PROBE_INTERVAL;

/// A datagram to send from the punching socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer was heard from `from`: first heard (`confirmed` false unless the first datagram
    /// was an answer), or now confirmed by an answer to one of our probes.
    Heard { from: SocketAddr, confirmed: bool },
}

pub struct Prober {
    own_token: String,
    peer_token: String,
    peers: Vec<SocketAddr>,
    fire_at: Instant,
    /// Rounds are sent at `fire_at + k × interval` while that is before this.
    stop_sending: Instant,
    interval: Duration,
    next_round: Option<Instant>,
    rounds: u32,
    /// Transaction ids of every probe sent: only answers to these count.
    sent: HashSet<TransactionId>,
    /// The first address the peer was heard from.
    heard: Option<SocketAddr>,
    /// Every address heard, and whether an answer confirmed it.
    sources: HashMap<SocketAddr, bool>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Prober {
    /// Probes `peers` with `own_token` from `fire_at` for `window`; answers probes that carry
    /// `peer_token`.
    pub fn new(
        own_token: String,
        peer_token: String,
        peers: Vec<SocketAddr>,
        fire_at: Instant,
        window: Duration,
    ) -> Self {
        let stop_sending = fire_at + window;
        Self {
            own_token,
            peer_token,
            peers,
            fire_at,
            stop_sending,
            interval: PROBE_INTERVAL,
            next_round: (fire_at < stop_sending).then_some(fire_at),
            rounds: 0,
            sent: HashSet::new(),
            heard: None,
            sources: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Rounds of probes sent so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The first address the peer was heard from, once it was.
    pub fn heard(&self) -> Option<SocketAddr> {
        self.heard
    }

    /// Whether the peer was heard from `from` and an answer confirmed it.
    pub fn confirmed(&self, from: SocketAddr) -> bool {
        self.sources.get(&from).copied().unwrap_or(false)
    }

    /// Probes again from `at` for `window`, a round every `interval`; what was heard stays.
    pub fn rearm(&mut self, at: Instant, window: Duration, interval: Duration) {
        self.stop_sending = at + window;
        self.interval = interval.max(Duration::from_millis(1));
        self.next_round = (at < self.stop_sending).then_some(at);
    }

    /// A datagram arrived on the punching socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let confirmed = match codec::read_punch(data) {
            Some(Punch::Request { token }) if token == self.peer_token => {
                match codec::punch_response(data, from) {
                    Ok(bytes) => self.transmits.push_back(Transmit { to: from, bytes }),
                    Err(e) => tracing::trace!(%from, "probe not answered: {e}"),
                }
                false
            }
            Some(Punch::Response { id, .. }) if self.sent.contains(&id) => true,
            _ => return,
        };
        let known = self.sources.get(&from).copied();
        if known == Some(true) || (known == Some(false) && !confirmed) {
            return;
        }
        self.sources.insert(from, confirmed);
        let after_ms = now.saturating_duration_since(self.fire_at).as_millis();
        tracing::debug!(%from, confirmed, after_ms, "udp_punch: peer heard");
        self.heard.get_or_insert(from);
        self.events.push_back(Event::Heard { from, confirmed });
    }

    /// Sends the rounds that are due by `now` (several at once if the caller was late).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.next_round.filter(|&at| at <= now) {
            self.round();
            let next = at + self.interval;
            self.next_round = (next < self.stop_sending).then_some(next);
        }
    }

    fn round(&mut self) {
        self.rounds += 1;
        for &to in &self.peers {
            match codec::punch_request(&self.own_token) {
                Ok((id, bytes)) => {
                    self.sent.insert(id);
                    self.transmits.push_back(Transmit { to, bytes });
                }
                Err(e) => tracing::trace!(%to, "probe not built: {e}"),
            }
        }
        if self.rounds == 1 || self.rounds % 20 == 0 {
            tracing::debug!(
                rounds = self.rounds,
                peers = self.peers.len(),
                "udp_punch: probing"
            );
        }
    }

    /// When the next round is due; `None` once the window is over (answers need no timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_round
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::PUNCH_WINDOW;

    const ME: &str = "c00112233";
    const PEER: &str = "l00112233";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn prober(peers: &[&str], fire_at: Instant) -> Prober {
        let peers = peers.iter().map(|p| addr(p)).collect();
        Prober::new(ME.into(), PEER.into(), peers, fire_at, PUNCH_WINDOW)
    }

    fn transmits(p: &mut Prober) -> Vec<Transmit> {
        std::iter::from_fn(|| p.poll_transmit()).collect()
    }

    #[test]
    fn rounds_start_at_the_fire_instant_and_stop_with_the_window() {
        let t0 = Instant::now();
        let fire = t0 + Duration::from_millis(100);
        let mut p = prober(&["198.51.100.1:4000", "10.0.0.2:4000"], fire);
        assert_eq!(p.poll_timeout(), Some(fire));
        p.handle_timeout(t0);
        assert!(
            transmits(&mut p).is_empty(),
            "nothing before the fire instant"
        );

        p.handle_timeout(fire);
        let first = transmits(&mut p);
        let to: Vec<SocketAddr> = first.iter().map(|t| t.to).collect();
        assert_eq!(to, vec![addr("198.51.100.1:4000"), addr("10.0.0.2:4000")]);
        for t in &first {
            assert_eq!(
                codec::read_punch(&t.bytes),
                Some(Punch::Request { token: ME.into() })
            );
        }
        assert_eq!(p.poll_timeout(), Some(fire + PROBE_INTERVAL));

        // Late by three intervals: the missed rounds go out at once, the schedule is kept.
        p.handle_timeout(fire + PROBE_INTERVAL * 3);
        assert_eq!(transmits(&mut p).len(), 6);
        assert_eq!(p.rounds(), 4);
        assert_eq!(p.poll_timeout(), Some(fire + PROBE_INTERVAL * 4));

        // Rounds at fire + 0 ms, 50 ms, …, 7950 ms: 160 of them, then only answers.
        let mut now = fire;
        while let Some(at) = p.poll_timeout() {
            now = at;
            p.handle_timeout(now);
        }
        assert_eq!(now, fire + Duration::from_millis(7950));
        assert_eq!(p.rounds(), 160);
        assert_eq!(transmits(&mut p).len(), 2 * (160 - 4));
        p.handle_timeout(fire + Duration::from_secs(60));
        assert!(transmits(&mut p).is_empty());
    }

    #[test]
    fn a_peer_probe_is_answered_and_heard_once_even_after_the_window() {
        let fire = Instant::now();
        let mut p = prober(&["198.51.100.1:4000"], fire);
        let late = fire + PUNCH_WINDOW + Duration::from_secs(1);
        p.handle_timeout(late);
        transmits(&mut p);

        let from = addr("198.51.100.1:4999");
        let (id, probe) = codec::punch_request(PEER).unwrap();
        p.handle_datagram(late, from, &probe);
        let answer = transmits(&mut p);
        assert_eq!(answer.len(), 1);
        assert_eq!(answer[0].to, from);
        assert_eq!(
            codec::read_punch(&answer[0].bytes),
            Some(Punch::Response { id, mapped: from })
        );
        let heard = |from, confirmed| Some(Event::Heard { from, confirmed });
        assert_eq!(p.poll_event(), heard(from, false));

        // The same source again is answered but not reported again.
        p.handle_datagram(late, from, &codec::punch_request(PEER).unwrap().1);
        assert_eq!(transmits(&mut p).len(), 1);
        assert_eq!(p.poll_event(), None);

        // A probe from elsewhere is answered and reported as another source; the first stays.
        let other = addr("198.51.100.1:5000");
        p.handle_datagram(late, other, &codec::punch_request(PEER).unwrap().1);
        assert_eq!(transmits(&mut p)[0].to, other);
        assert_eq!(p.poll_event(), heard(other, false));
        assert_eq!(p.heard(), Some(from));
        assert!(!p.confirmed(from));
    }

    #[test]
    fn only_answers_to_our_own_probes_count() {
        let fire = Instant::now();
        let mut p = prober(&["198.51.100.1:4000"], fire);
        p.handle_timeout(fire);
        let probe = transmits(&mut p).remove(0);
        let peer = addr("198.51.100.1:4000");

        // An answer to a request we never sent (same shape, other transaction id).
        let (_, stranger) = codec::punch_request(ME).unwrap();
        let stray = codec::punch_response(&stranger, addr("203.0.113.1:1")).unwrap();
        p.handle_datagram(fire, peer, &stray);
        assert_eq!(p.poll_event(), None);

        // The answer to the probe we did send.
        let answer = codec::punch_response(&probe.bytes, addr("203.0.113.1:1")).unwrap();
        p.handle_datagram(fire, peer, &answer);
        let confirmed = Some(Event::Heard {
            from: peer,
            confirmed: true,
        });
        assert_eq!(p.poll_event(), confirmed);
        assert!(p.confirmed(peer));
        assert!(transmits(&mut p).is_empty(), "answers are not answered");
        p.handle_datagram(fire, peer, &answer);
        assert_eq!(p.poll_event(), None, "confirmed once");
    }

    #[test]
    fn a_heard_source_is_reported_again_when_an_answer_confirms_it() {
        let fire = Instant::now();
        let peer = addr("198.51.100.1:4000");
        let mut p = prober(&["198.51.100.1:4000"], fire);
        p.handle_timeout(fire);
        let probe = transmits(&mut p).remove(0);
        p.handle_datagram(fire, peer, &codec::punch_request(PEER).unwrap().1);
        assert_eq!(
            p.poll_event(),
            Some(Event::Heard {
                from: peer,
                confirmed: false
            })
        );
        let answer = codec::punch_response(&probe.bytes, addr("203.0.113.1:1")).unwrap();
        p.handle_datagram(fire, peer, &answer);
        assert_eq!(
            p.poll_event(),
            Some(Event::Heard {
                from: peer,
                confirmed: true
            })
        );
    }

    #[test]
    fn rearming_starts_another_window_at_its_own_pace() {
        let fire = Instant::now();
        let mut p = prober(&["198.51.100.1:4000"], fire);
        let after = fire + PUNCH_WINDOW + Duration::from_secs(5);
        p.handle_timeout(after);
        let sent = transmits(&mut p).len();
        assert_eq!(p.poll_timeout(), None);
        p.rearm(after, Duration::from_secs(2), Duration::from_millis(500));
        assert_eq!(p.poll_timeout(), Some(after));
        let mut now = after;
        while let Some(at) = p.poll_timeout() {
            now = at;
            p.handle_timeout(now);
        }
        assert_eq!(now, after + Duration::from_millis(1500));
        assert_eq!(transmits(&mut p).len(), 4, "rounds at 0, 0.5, 1 and 1.5 s");
        assert!(sent > 0);
    }

    #[test]
    fn our_own_probe_looped_back_and_stray_stun_are_ignored() {
        let fire = Instant::now();
        let mut p = prober(&["198.51.100.1:4000"], fire);
        p.handle_timeout(fire);
        let own = transmits(&mut p).remove(0);
        let from = addr("203.0.113.1:4000");
        p.handle_datagram(fire, from, &own.bytes);
        let (_, plain) = codec::binding_request(crate::stun::Change::NONE).unwrap();
        p.handle_datagram(fire, from, &plain);
        p.handle_datagram(fire, from, &[0xc0; 40]);
        p.handle_datagram(fire, from, b"");
        assert!(transmits(&mut p).is_empty());
        assert_eq!(p.poll_event(), None);
        assert_eq!(p.heard(), None);
    }
}
