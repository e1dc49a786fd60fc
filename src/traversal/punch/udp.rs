//! The UDP punching handshake, sans-IO. From the agreed instant a [`Prober`] sends a round of
//! probes every [`PROBE_INTERVAL`] (one to each peer candidate) until [`PUNCH_WINDOW`](crate::timing::PUNCH_WINDOW) has
//! passed; probes are STUN binding requests whose USERNAME is this side's role token
//! ([`crate::traversal::rendezvous::Role::token`]). Throughout, and after the window too, it
//! answers every probe that carries the peer's token. It reports, once, the first address the
//! peer was heard from: the source of a peer probe or of an answer to one of our own probes,
//! whatever port that is (a peer-reflexive source counts). Its own probes looped back, answers
//! to requests it never sent and anything else are ignored.
//!
//! Neighbours: [`crate::stun::codec`] encodes and reads the probes; `udp_punch` drives a
//! prober over the kit's STUN side and dials QUIC to the address heard.

use std::collections::{HashSet, VecDeque};
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
    /// The peer was heard for the first time, from this address.
    Heard(SocketAddr),
}

pub struct Prober {
    own_token: String,
    peer_token: String,
    peers: Vec<SocketAddr>,
    fire_at: Instant,
    /// Rounds are sent at `fire_at + k × PROBE_INTERVAL` while that is before this.
    stop_sending: Instant,
    next_round: Option<Instant>,
    rounds: u32,
    /// Transaction ids of every probe sent: only answers to these count.
    sent: HashSet<TransactionId>,
    heard: Option<SocketAddr>,
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
            next_round: (fire_at < stop_sending).then_some(fire_at),
            rounds: 0,
            sent: HashSet::new(),
            heard: None,
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

    /// A datagram arrived on the punching socket from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        match codec::read_punch(data) {
            Some(Punch::Request { token }) if token == self.peer_token => {
                match codec::punch_response(data, from) {
                    Ok(bytes) => self.transmits.push_back(Transmit { to: from, bytes }),
                    Err(e) => tracing::trace!(%from, "probe not answered: {e}"),
                }
            }
            Some(Punch::Response { id, .. }) if self.sent.contains(&id) => {}
            _ => return,
        }
        if self.heard.is_none() {
            let after_ms = now.saturating_duration_since(self.fire_at).as_millis();
            tracing::debug!(%from, after_ms, "udp_punch: peer heard");
            self.heard = Some(from);
            self.events.push_back(Event::Heard(from));
        }
    }

    /// Sends the rounds that are due by `now` (several at once if the caller was late).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.next_round.filter(|&at| at <= now) {
            self.round();
            let next = at + PROBE_INTERVAL;
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
        assert_eq!(p.poll_event(), Some(Event::Heard(from)));

        // A second probe, from elsewhere, is answered too but heard is not reported again.
        let other = addr("198.51.100.1:5000");
        p.handle_datagram(late, other, &codec::punch_request(PEER).unwrap().1);
        assert_eq!(transmits(&mut p)[0].to, other);
        assert_eq!(p.poll_event(), None);
        assert_eq!(p.heard(), Some(from));
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
        assert_eq!(p.poll_event(), Some(Event::Heard(peer)));
        assert!(transmits(&mut p).is_empty(), "answers are not answered");
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
