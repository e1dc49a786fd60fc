//! Session tests: two sessions on a simulated clock joined by a lossy in-order "broker";
//! retries, duplicates, staleness, replies on the named inbox, `--allow` and the replay quota.

use super::*;
use crate::signal::message::{Ping, Pong};

const T0_UNIX_MS: u64 = 1_700_000_000_000;

/// Two sessions on one simulated clock, joined by a lossy in-order "broker".
struct Pair {
    now: Instant,
    a: Session,
    b: Session,
    /// Packets in flight: (deliver at, to a?, bytes).
    wire: Vec<(Instant, bool, Vec<u8>)>,
    latency: Duration,
    /// Drop decisions for successive transmissions, `true` = drop; empty = deliver all.
    drops: VecDeque<bool>,
    delivered_packets: u64,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            now,
            a: Session::new(
                Keys::random(),
                Inbox::random(),
                Config::default(),
                now,
                T0_UNIX_MS,
            ),
            b: Session::new(
                Keys::random(),
                Inbox::LISTENING,
                Config::default(),
                now,
                T0_UNIX_MS,
            ),
            wire: Vec::new(),
            latency: Duration::from_millis(50),
            drops: VecDeque::new(),
            delivered_packets: 0,
        }
    }

    fn collect(&mut self) {
        let b_key = self.b.public_key();
        for (from_a, s) in [(true, &mut self.a), (false, &mut self.b)] {
            while let Some(t) = s.poll_transmit() {
                assert_eq!(t.to.key == b_key, from_a);
                if !self.drops.pop_front().unwrap_or(false) {
                    self.wire.push((self.now + self.latency, !from_a, t.bytes));
                }
            }
        }
    }

    /// Advances the clock to the next delivery or timer and processes it.
    fn step(&mut self) -> bool {
        self.collect();
        let next_wire = self.wire.iter().map(|w| w.0).min();
        let next = [next_wire, self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        let (due, later): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|w| w.0 <= self.now);
        self.wire = later;
        for (_, to_a, bytes) in due {
            self.delivered_packets += 1;
            let s = if to_a { &mut self.a } else { &mut self.b };
            s.handle_incoming(self.now, &bytes);
        }
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.collect();
        true
    }

    fn run(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("simulation did not settle");
    }

    fn events(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }
}

fn ping(n: u64) -> Payload {
    Payload::Ping(Ping {
        nonce: n,
        sent_ms: n,
    })
}

#[test]
fn message_is_delivered_once_and_acked() {
    let mut p = Pair::new();
    let b = p.b.peer();
    let id = p.a.send(p.now, &b, ping(1)).unwrap();
    p.run();
    let got = Pair::events(&mut p.b);
    assert!(matches!(&got[..], [Event::Received { payload, .. }] if *payload == ping(1)));
    assert_eq!(Pair::events(&mut p.a), vec![Event::Acked(id)]);
    assert_eq!(p.a.stats().retransmitted, 0);
    assert_eq!(p.delivered_packets, 2, "one message, one ack");
}

#[test]
fn lost_message_and_lost_ack_are_retried_and_delivered_once() {
    let mut p = Pair::new();
    let b = p.b.peer();
    // Drop the first transmission, deliver the retransmission, drop its ack; then deliver all.
    p.drops = VecDeque::from([true, false, true]);
    let id = p.a.send(p.now, &b, ping(2)).unwrap();
    p.run();
    let got = Pair::events(&mut p.b);
    assert_eq!(got.len(), 1, "delivered exactly once: {got:?}");
    assert_eq!(Pair::events(&mut p.a), vec![Event::Acked(id)]);
    let (a, b) = (p.a.stats(), p.b.stats());
    assert_eq!(a.retransmitted, 2);
    assert_eq!(b.dropped_replayed, 1, "the retransmission after a lost ack");
    assert_eq!(b.acks_sent, 2);
    assert_eq!(a.acked, 1);
}

#[test]
fn black_hole_expires_with_backoff() {
    let mut p = Pair::new();
    let b = p.b.peer();
    p.drops = std::iter::repeat(true).take(100).collect();
    let start = p.now;
    let id = p.a.send(p.now, &b, ping(3)).unwrap();
    p.run();
    assert_eq!(Pair::events(&mut p.a), vec![Event::Expired(id)]);
    assert_eq!(p.now - start, SIGNAL_SEND_TIMEOUT);
    // Retransmissions at 0.4, 1.2, 2.8, 5.8, 8.8, 11.8 and 14.8 s; given up at 15 s.
    assert_eq!(p.a.stats().retransmitted, 7);
    assert!(Pair::events(&mut p.b).is_empty());
}

#[test]
fn duplicates_through_two_brokers_are_acked_once() {
    let mut p = Pair::new();
    let b = p.b.peer();
    p.a.send(p.now, &b, ping(4)).unwrap();
    let t = p.a.poll_transmit().unwrap();
    p.b.handle_incoming(p.now, &t.bytes);
    p.b.handle_incoming(p.now, &t.bytes);
    assert_eq!(Pair::events(&mut p.b).len(), 1);
    assert_eq!(p.b.stats().acks_sent, 1);
    assert_eq!(p.b.stats().dropped_replayed, 1);
    // Much later (a retransmission after a lost ack), it is acked again.
    p.b.handle_incoming(p.now + SIGNAL_REACK_INTERVAL, &t.bytes);
    assert_eq!(p.b.stats().acks_sent, 2);
    assert!(Pair::events(&mut p.b).is_empty());
}

#[test]
fn stale_future_and_garbage_are_dropped_and_counted() {
    let now = Instant::now();
    let b = Session::new(
        Keys::random(),
        Inbox::random(),
        Config::default(),
        now,
        T0_UNIX_MS,
    );
    let b_key = b.peer();
    let mut b = b;
    // A sender whose clock is 3 minutes behind, and one 1 minute ahead.
    let behind = T0_UNIX_MS - 180_000;
    let ahead = T0_UNIX_MS + 60_000;
    for (i, epoch_ms) in [behind, ahead].into_iter().enumerate() {
        let mut a = Session::new(
            Keys::random(),
            Inbox::random(),
            Config::default(),
            now,
            epoch_ms,
        );
        a.send(now, &b_key, ping(i as u64)).unwrap();
        b.handle_incoming(now, &a.poll_transmit().unwrap().bytes);
    }
    // 90 s behind is still fresh.
    let mut a = Session::new(
        Keys::random(),
        Inbox::random(),
        Config::default(),
        now,
        T0_UNIX_MS - 90_000,
    );
    a.send(now, &b_key, ping(9)).unwrap();
    b.handle_incoming(now, &a.poll_transmit().unwrap().bytes);
    b.handle_incoming(now, b"hello");
    b.handle_incoming(now, &vec![0; MAX_MESSAGE_LEN + 1]);
    let s = b.stats();
    assert_eq!(
        (
            s.dropped_stale,
            s.delivered,
            s.dropped_garbage,
            s.dropped_oversized
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(
        b.poll_event().map(|e| matches!(e, Event::Received { .. })),
        Some(true)
    );
    assert_eq!(b.poll_event(), None);
}

#[test]
fn replay_after_the_window_is_stale_not_delivered() {
    let mut p = Pair::new();
    let b = p.b.peer();
    p.a.send(p.now, &b, ping(5)).unwrap();
    let t = p.a.poll_transmit().unwrap();
    p.b.handle_incoming(p.now, &t.bytes);
    // Replayed just before and long after the staleness window.
    p.b.handle_incoming(p.now + SIGNAL_MAX_AGE - Duration::from_secs(1), &t.bytes);
    p.b.handle_incoming(p.now + SIGNAL_MAX_AGE + Duration::from_secs(5), &t.bytes);
    let s = p.b.stats();
    assert_eq!(
        (s.delivered, s.dropped_replayed, s.dropped_stale),
        (1, 1, 1)
    );
}

#[test]
fn forged_ack_does_not_stop_retries() {
    let mut p = Pair::new();
    let b = p.b.peer();
    let a_key = p.a.peer();
    let id = p.a.send(p.now, &b, ping(6)).unwrap();
    p.a.poll_transmit();
    // Mallory acks alice's message id, signed with her own key.
    let mut mallory = Session::new(
        Keys::random(),
        Inbox::random(),
        Config::default(),
        p.now,
        T0_UNIX_MS,
    );
    mallory.send(p.now, &a_key, Payload::Ack(id)).unwrap();
    p.a.handle_incoming(p.now, &mallory.poll_transmit().unwrap().bytes);
    assert!(Pair::events(&mut p.a).is_empty());
    assert!(p.a.poll_timeout().is_some(), "still retrying");
}

#[test]
fn ping_pong_round_trip() {
    let mut p = Pair::new();
    let b_key = p.b.peer();
    let sent = p.a.unix_ms(p.now);
    p.a.send(p.now, &b_key, ping(sent)).unwrap();
    while !p
        .b
        .events
        .iter()
        .any(|e| matches!(e, Event::Received { .. }))
    {
        assert!(p.step());
    }
    let Some(Event::Received {
        from,
        payload: Payload::Ping(ping),
        ..
    }) = p.b.poll_event()
    else {
        panic!("expected a ping");
    };
    let pong = Payload::Pong(Pong {
        nonce: ping.nonce,
        ping_sent_ms: ping.sent_ms,
        sent_ms: p.b.unix_ms(p.now),
    });
    assert_eq!(from, p.a.peer(), "the ping names the inbox a reads");
    p.b.send(p.now, &from, pong).unwrap();
    p.run();
    let rtt = Pair::events(&mut p.a).into_iter().find_map(|e| match e {
        Event::Received {
            payload: Payload::Pong(pong),
            ..
        } => Some(p.a.unix_ms(p.now) - pong.ping_sent_ms),
        _ => None,
    });
    // Delivered at +50 ms (ping) and +100 ms (pong); run() may settle later, so bound it.
    assert!(rtt.is_some_and(|rtt| rtt >= 100), "{rtt:?}");
}

#[test]
fn acks_and_deliveries_name_the_inbox_the_sender_reads() {
    let mut p = Pair::new();
    let b = p.b.peer();
    p.a.send(p.now, &b, ping(7)).unwrap();
    let t = p.a.poll_transmit().unwrap();
    assert_eq!(t.to, b);
    p.b.handle_incoming(p.now, &t.bytes);
    let ack = p.b.poll_transmit().unwrap();
    assert_eq!(ack.to, p.a.peer(), "the ack goes to a's session inbox");
    assert_ne!(ack.to, Peer::listening(p.a.public_key()));
    assert!(matches!(
        p.b.poll_event(),
        Some(Event::Received { from, .. }) if from == p.a.peer()
    ));
}

#[test]
fn keys_outside_the_allowed_list_get_no_answer() {
    let now = Instant::now();
    let alice = Keys::random();
    let mut b = Session::new(
        Keys::random(),
        Inbox::LISTENING,
        Config::default(),
        now,
        T0_UNIX_MS,
    )
    .allowing(Some(vec![Allowed::Key(alice.public_key())]));
    let to_b = b.peer();
    let mut mallory = Session::new(
        Keys::random(),
        Inbox::random(),
        Config::default(),
        now,
        T0_UNIX_MS,
    );
    let mut alice = Session::new(alice, Inbox::random(), Config::default(), now, T0_UNIX_MS);
    mallory.send(now, &to_b, ping(1)).unwrap();
    b.handle_incoming(now, &mallory.poll_transmit().unwrap().bytes);
    assert_eq!((b.poll_transmit(), b.poll_event()), (None, None));
    alice.send(now, &to_b, ping(2)).unwrap();
    b.handle_incoming(now, &alice.poll_transmit().unwrap().bytes);
    assert_eq!(b.poll_transmit().map(|t| t.to), Some(alice.peer()));
    let s = b.stats();
    assert_eq!((s.dropped_not_allowed, s.delivered, s.acks_sent), (1, 1, 1));
}

#[test]
fn one_sender_flooding_fresh_ids_cannot_lock_out_another() {
    let now = Instant::now();
    let config = Config {
        seen_capacity: 64,
        seen_per_sender: 8,
        ..Config::default()
    };
    let mut b = Session::new(Keys::random(), Inbox::LISTENING, config, now, T0_UNIX_MS);
    let to_b = b.peer();
    let mut mallory = Session::new(
        Keys::random(),
        Inbox::random(),
        Config::default(),
        now,
        T0_UNIX_MS,
    );
    for n in 0..100 {
        mallory.send(now, &to_b, ping(n)).unwrap();
        b.handle_incoming(now, &mallory.poll_transmit().unwrap().bytes);
    }
    let mut alice = Session::new(
        Keys::random(),
        Inbox::random(),
        Config::default(),
        now,
        T0_UNIX_MS,
    );
    alice.send(now, &to_b, ping(1000)).unwrap();
    b.handle_incoming(now, &alice.poll_transmit().unwrap().bytes);
    let s = b.stats();
    assert_eq!(
        (s.delivered, s.dropped_quota, s.dropped_overload),
        (9, 92, 0),
        "mallory's 8, then alice's"
    );
    let last = std::iter::from_fn(|| b.poll_event()).last();
    assert!(matches!(last, Some(Event::Received { from, .. }) if from == alice.peer()));
}
