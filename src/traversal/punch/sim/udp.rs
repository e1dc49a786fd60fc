//! Two [`Prober`]s punching at each other through simulated NATs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{candidates, ms, Host, Nat, Net, LATENCY};
use crate::timing::{PROBE_INTERVAL, PUNCH_WINDOW};
use crate::traversal::punch::udp::{Event, Prober};
use crate::traversal::rendezvous::Role;

const NONCE: [u8; 16] = [7; 16];

/// One side: its prober, its fire instant, and what the socket queued before that instant
/// (the driver starts reading at the fire instant).
struct Side {
    prober: Prober,
    fire_at: Instant,
    queued: Vec<(SocketAddr, Vec<u8>)>,
    heard: Option<(Duration, SocketAddr)>,
    sent: usize,
    last_sent: Option<Duration>,
}

/// What one side saw by the end of the run.
#[derive(Debug)]
struct Outcome {
    /// When (after the start) the peer was first heard, and from where.
    heard: Option<(Duration, SocketAddr)>,
    rounds: u32,
    sent: usize,
    last_sent: Option<Duration>,
}

struct Run {
    net: Net<Vec<u8>>,
    /// What each side announced.
    announced: [Vec<SocketAddr>; 2],
    sides: [Side; 2],
}

impl Run {
    /// Host 0 is the connector, host 1 the listener; each fires at its offset from the start.
    fn new(a: Host, b: Host, fire: [Duration; 2]) -> Self {
        let mut net = Net::new(a, b);
        let announced = [candidates(&mut net.hosts[0]), candidates(&mut net.hosts[1])];
        let side = |i: usize, role: Role| {
            let fire_at = net.start + fire[i];
            Side {
                prober: Prober::new(
                    role.token(&NONCE),
                    role.other().token(&NONCE),
                    announced[1 - i].clone(),
                    fire_at,
                    PUNCH_WINDOW,
                ),
                fire_at,
                queued: Vec::new(),
                heard: None,
                sent: 0,
                last_sent: None,
            }
        };
        let sides = [side(0, Role::Connector), side(1, Role::Listener)];
        Self {
            net,
            announced,
            sides,
        }
    }

    fn flush(&mut self) {
        for (i, side) in self.sides.iter_mut().enumerate() {
            while let Some(t) = side.prober.poll_transmit() {
                side.sent += 1;
                side.last_sent = Some(self.net.elapsed());
                self.net.send(i, t.to, t.bytes);
            }
            while let Some(Event::Heard { from, .. }) = side.prober.poll_event() {
                // The first source heard is the one udp_punch dials.
                if side.heard.is_none() {
                    side.heard = Some((self.net.elapsed(), from));
                }
            }
        }
    }

    /// Runs until no packet is in flight and no timer is left.
    fn run(mut self) -> (Net<Vec<u8>>, [Vec<SocketAddr>; 2], [Outcome; 2]) {
        for _ in 0..100_000 {
            self.flush();
            let timers = self.sides.iter().flat_map(|s| {
                let queue = (!s.queued.is_empty()).then_some(s.fire_at);
                [s.prober.poll_timeout(), queue]
            });
            let Some(next) = timers.chain([self.net.next_arrival()]).flatten().min() else {
                let [a, b] = self.sides.map(|s| Outcome {
                    heard: s.heard,
                    rounds: s.prober.rounds(),
                    sent: s.sent,
                    last_sent: s.last_sent,
                });
                return (self.net, self.announced, [a, b]);
            };
            self.net.now = self.net.now.max(next);
            let now = self.net.now;
            let arrivals = self.net.arrivals();
            for side in &mut self.sides {
                side.prober.handle_timeout(now);
            }
            for (i, from, bytes) in arrivals {
                self.sides[i].queued.push((from, bytes));
            }
            for side in &mut self.sides {
                if now >= side.fire_at {
                    for (from, bytes) in std::mem::take(&mut side.queued) {
                        side.prober.handle_datagram(now, from, &bytes);
                    }
                }
            }
        }
        panic!("the simulation did not settle");
    }
}

fn both_fire_at_once(a: Host, b: Host) -> (Net<Vec<u8>>, [Vec<SocketAddr>; 2], [Outcome; 2]) {
    Run::new(a, b, [Duration::ZERO; 2]).run()
}

/// Rounds in the window: at 0 ms, 50 ms, …, 7950 ms.
const ROUNDS: u32 = 160;

#[test]
fn port_restricted_sides_hear_each_other_after_one_flight() {
    let (_, announced, [a, b]) = both_fire_at_once(
        Host::behind("10.0.0.2:5000", Nat::port_restricted("203.0.113.1")),
        Host::behind("10.1.0.2:6000", Nat::port_restricted("198.51.100.1")),
    );
    // Both first probes leave at once; each opens its own NAT for the other's.
    assert_eq!(a.heard, Some((LATENCY, announced[1][0])));
    assert_eq!(b.heard, Some((LATENCY, announced[0][0])));
    for side in [&a, &b] {
        assert_eq!(side.rounds, ROUNDS);
        assert_eq!(side.last_sent, Some(ms(7950) + LATENCY), "the last answer");
    }
}

#[test]
fn a_late_side_is_heard_on_the_early_sides_next_round() {
    // The listener fires 30 ms late: the connector's first probe meets a closed NAT.
    let (net, announced, [a, b]) = Run::new(
        Host::behind("10.0.0.2:5000", Nat::port_restricted("203.0.113.1")),
        Host::behind("10.1.0.2:6000", Nat::port_restricted("198.51.100.1")),
        [Duration::ZERO, ms(30)],
    )
    .run();
    // The listener's first probe (30 ms) finds the connector's NAT open since 0 ms.
    assert_eq!(a.heard, Some((ms(30) + LATENCY, announced[1][0])));
    // The connector answers it at 50 ms, as its second round leaves; both arrive at 70 ms.
    assert_eq!(b.heard, Some((ms(50) + LATENCY, announced[0][0])));
    assert_eq!(b.rounds, ROUNDS);
    // Only that first probe was filtered.
    assert_eq!(net.counts.filtered, 1);
}

#[test]
fn open_and_full_cone_hosts_hear_each_other_at_once() {
    let (_, announced, [a, b]) = both_fire_at_once(
        Host::open("192.0.2.10:5000"),
        Host::behind("10.1.0.2:6000", Nat::full_cone("198.51.100.1")),
    );
    assert_eq!(announced[0], vec!["192.0.2.10:5000".parse().unwrap()]);
    assert_eq!(a.heard, Some((LATENCY, announced[1][0])));
    assert_eq!(b.heard, Some((LATENCY, announced[0][0])));
}

#[test]
fn probes_that_arrive_before_the_fire_instant_are_answered_at_it() {
    // The listener fires 100 ms late; the connector's first two probes wait in its socket.
    let (_, announced, [a, b]) = Run::new(
        Host::open("192.0.2.10:5000"),
        Host::behind("10.1.0.2:6000", Nat::full_cone("198.51.100.1")),
        [Duration::ZERO, ms(100)],
    )
    .run();
    assert_eq!(b.heard, Some((ms(100), announced[0][0])));
    assert_eq!(a.heard, Some((ms(100) + LATENCY, announced[1][0])));
}

#[test]
fn a_symmetric_side_is_heard_at_a_port_nobody_announced() {
    let (net, announced, [a, b]) = both_fire_at_once(
        Host::behind("10.0.0.2:5000", Nat::symmetric("203.0.113.1", 42)),
        Host::behind("10.1.0.2:6000", Nat::address_restricted("198.51.100.1")),
    );
    // The symmetric NAT gave the probes to the listener a port of their own.
    let nat = net.hosts[0].nat.as_ref().unwrap();
    let port = nat.mapped(net.hosts[0].inside, announced[1][0]).unwrap();
    let peer_reflexive = SocketAddr::new(nat.public_ip, port);
    assert!(!announced[0].contains(&peer_reflexive));
    // The listener hears the connector there (its NAT knows the IP), and answers there.
    assert_eq!(b.heard, Some((LATENCY, peer_reflexive)));
    // The connector's probes to the announced port were filtered; the answer came through.
    assert_eq!(a.heard, Some((LATENCY * 2, announced[1][0])));
}

#[test]
fn symmetric_and_port_restricted_never_meet_and_stop_after_the_window() {
    let (net, _, [a, b]) = both_fire_at_once(
        Host::behind("10.0.0.2:5000", Nat::symmetric("203.0.113.1", 42)),
        Host::behind("10.1.0.2:6000", Nat::port_restricted("198.51.100.1")),
    );
    assert_no_meeting(&net, &a, &b);
}

#[test]
fn symmetric_sides_never_meet_and_stop_after_the_window() {
    let (net, _, [a, b]) = both_fire_at_once(
        Host::behind("10.0.0.2:5000", Nat::symmetric("203.0.113.1", 42)),
        Host::behind("10.1.0.2:6000", Nat::symmetric("198.51.100.1", 7)),
    );
    assert_no_meeting(&net, &a, &b);
}

/// Neither side heard the other; each sent its 160 rounds (to its two candidates of the
/// other) and nothing after 7950 ms; every probe to a public candidate was filtered.
fn assert_no_meeting(net: &Net<Vec<u8>>, a: &Outcome, b: &Outcome) {
    for side in [a, b] {
        assert_eq!(side.heard, None);
        assert_eq!(side.rounds, ROUNDS);
        assert_eq!(side.sent, 2 * ROUNDS as usize);
        assert_eq!(side.last_sent, Some(PUNCH_WINDOW - PROBE_INTERVAL));
    }
    assert_eq!(net.counts.delivered, 0);
    assert_eq!(net.counts.filtered, 2 * ROUNDS as usize);
    assert_eq!(net.counts.unroutable, 2 * ROUNDS as usize);
}

#[test]
fn lost_probes_delay_the_meeting_to_a_later_round() {
    let mut run = Run::new(
        Host::behind("10.0.0.2:5000", Nat::port_restricted("203.0.113.1")),
        Host::behind("10.1.0.2:6000", Nat::port_restricted("198.51.100.1")),
        [Duration::ZERO; 2],
    );
    // Each round is two probes (public candidate first). The connector loses rounds 1 and
    // 2's public probe; the listener loses rounds 1, 2 and 3's public probe.
    run.net.lose_first = [3, 5];
    let (net, announced, [a, b]) = run.run();
    // The connector's round 3 (100 ms) is the first to arrive: the listener hears it…
    assert_eq!(b.heard, Some((ms(100) + LATENCY, announced[0][0])));
    // … and its answer (120 ms) reaches the connector before the listener's round 4 would.
    assert_eq!(a.heard, Some((ms(120) + LATENCY, announced[1][0])));
    assert_eq!(net.counts.lost, 8);
}
