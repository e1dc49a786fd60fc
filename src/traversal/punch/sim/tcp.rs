//! Two [`Dialer`]s making a TCP simultaneous open through simulated NATs. Each side's kit
//! port has, as in the kernel, a connecting socket per try (to the peer's announced
//! candidate) and a listener: a SYN from the very endpoint a try is connecting to crosses it
//! (both sockets answer SYN-ACK and become one connection); any other SYN reaches the listener,
//! which accepts once the handshake's ACK arrives.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::{ms, Host, Nat, Net, LATENCY};
use crate::timing::PUNCH_WINDOW;
use crate::traversal::punch::tcp::{Action, Dialer, Event};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Segment {
    Syn,
    SynAck,
    Ack,
}

/// The state of the try in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    SynSent,
    SynReceived,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// This side's connect made the connection, on this try.
    Connected {
        at: Duration,
        tries: u32,
    },
    /// Its listener accepted a connection from there.
    Accepted {
        at: Duration,
        from: SocketAddr,
    },
    GaveUp {
        at: Duration,
        message: String,
    },
}

struct Side {
    dialer: Dialer,
    /// The peer's announced candidate.
    remote: SocketAddr,
    conn: Option<Conn>,
    /// Where the listener sent SYN-ACKs.
    half_open: HashSet<SocketAddr>,
    starts: Vec<Duration>,
    outcome: Option<Outcome>,
}

/// Both sides fire at their offsets and run until both are done or nothing is left to do.
/// Returns each side's try start times and outcome.
fn run(
    mut net: Net<Segment>,
    fire: [Duration; 2],
) -> (Net<Segment>, [(Vec<Duration>, Outcome); 2]) {
    let remotes = [net.hosts[1].reflexive(), net.hosts[0].reflexive()];
    let mut sides = [0, 1].map(|i| Side {
        dialer: Dialer::new(net.start + fire[i], PUNCH_WINDOW),
        remote: remotes[i],
        conn: None,
        half_open: HashSet::new(),
        starts: Vec::new(),
        outcome: None,
    });
    for _ in 0..100_000 {
        let elapsed = net.elapsed();
        for (i, side) in sides.iter_mut().enumerate() {
            while let Some(action) = side.dialer.poll_action() {
                side.conn = match action {
                    Action::Connect => {
                        side.starts.push(elapsed);
                        net.send(i, side.remote, Segment::Syn);
                        Some(Conn::SynSent)
                    }
                    Action::Abandon => None,
                };
            }
            match side.dialer.poll_event() {
                Some(Event::GaveUp(message)) => {
                    side.outcome = Some(Outcome::GaveUp {
                        at: elapsed,
                        message,
                    })
                }
                Some(Event::Connected { tries }) => {
                    side.outcome = Some(Outcome::Connected { at: elapsed, tries })
                }
                None => {}
            }
        }
        let timers = sides
            .iter()
            .filter(|s| s.outcome.is_none())
            .map(|s| s.dialer.poll_timeout());
        let Some(next) = timers.chain([net.next_arrival()]).flatten().min() else {
            let [a, b] = sides.map(|s| (s.starts, s.outcome.expect("an outcome")));
            return (net, [a, b]);
        };
        net.now = net.now.max(next);
        let now = net.now;
        for (i, from, segment) in net.arrivals() {
            let side = &mut sides[i];
            if side.outcome.is_some() {
                continue;
            }
            let crossing = side.conn.is_some() && from == side.remote;
            match segment {
                Segment::Syn => {
                    if crossing {
                        side.conn = Some(Conn::SynReceived);
                    } else {
                        side.half_open.insert(from);
                    }
                    net.send(i, from, Segment::SynAck);
                }
                Segment::SynAck if crossing => {
                    net.send(i, from, Segment::Ack);
                    side.dialer.handle_connected(now);
                }
                Segment::Ack if crossing && side.conn == Some(Conn::SynReceived) => {
                    side.dialer.handle_connected(now)
                }
                Segment::Ack if side.half_open.contains(&from) => {
                    side.outcome = Some(Outcome::Accepted {
                        at: net.now - net.start,
                        from,
                    })
                }
                // Matches no socket (a real kernel would reset it; nobody would listen).
                _ => {}
            }
        }
        for side in sides.iter_mut().filter(|s| s.outcome.is_none()) {
            side.dialer.handle_timeout(now);
        }
    }
    panic!("the simulation did not settle");
}

fn cone_pair() -> Net<Segment> {
    Net::new(
        Host::behind("10.0.0.2:7000", Nat::port_restricted("203.0.113.1")),
        Host::behind("10.1.0.2:7100", Nat::port_restricted("198.51.100.1")),
    )
}

#[test]
fn crossing_syns_through_port_restricted_nats_connect_on_the_first_try() {
    let (_, [(a_starts, a), (b_starts, b)]) = run(cone_pair(), [Duration::ZERO; 2]);
    // SYNs cross at 20 ms; the SYN-ACKs each side answers with arrive at 40 ms.
    let connected = Outcome::Connected {
        at: LATENCY * 2,
        tries: 1,
    };
    assert_eq!((a, b), (connected.clone(), connected));
    assert_eq!((a_starts, b_starts), (vec![ms(0)], vec![ms(0)]));
}

#[test]
fn a_late_side_meets_the_early_sides_next_try() {
    // The listener fires a second late: the connector's first two SYNs meet a closed NAT.
    let (net, [(a_starts, a), (b_starts, b)]) = run(cone_pair(), [Duration::ZERO, ms(1000)]);
    // The listener's SYN (1000 ms) crosses the connector's second try (800–1500 ms): the
    // connector answers SYN-ACK, the listener's connect completes at 1040 ms, and its ACK
    // completes the connector's at 1060 ms.
    assert_eq!(a_starts, vec![ms(0), ms(800)]);
    assert_eq!(
        a,
        Outcome::Connected {
            at: ms(1060),
            tries: 2
        }
    );
    assert_eq!(b_starts, vec![ms(1000)]);
    assert_eq!(
        b,
        Outcome::Connected {
            at: ms(1040),
            tries: 1
        }
    );
    assert_eq!(net.counts.filtered, 2);
}

#[test]
fn lost_syns_are_sent_again_by_the_next_try() {
    let mut net = cone_pair();
    net.lose_first = [1, 1];
    let (_, [(a_starts, a), (_, b)]) = run(net, [Duration::ZERO; 2]);
    // The first tries time out at 700 ms; the second (800 ms) cross at 820 ms.
    assert_eq!(a_starts, vec![ms(0), ms(800)]);
    let connected = Outcome::Connected {
        at: ms(840),
        tries: 2,
    };
    assert_eq!((a, b), (connected.clone(), connected));
}

#[test]
fn a_symmetric_sides_syn_is_accepted_by_a_full_cone_listener() {
    let mut net = Net::new(
        Host::behind("10.0.0.2:7000", Nat::symmetric("203.0.113.1", 42)),
        Host::behind("10.1.0.2:7100", Nat::full_cone("198.51.100.1")),
    );
    let b_announced = net.hosts[1].reflexive();
    let (net, [(_, a), (_, b)]) = run(net, [Duration::ZERO; 2]);
    // Its SYN comes from a port nobody announced, so it crosses no try: the listener answers
    // it, the symmetric side's connect completes, and its ACK makes the accept.
    let nat = net.hosts[0].nat.as_ref().unwrap();
    let announced = nat.mapped(net.hosts[0].inside, super::STUN_SERVER.parse().unwrap());
    let port = nat.mapped(net.hosts[0].inside, b_announced).unwrap();
    assert_ne!(Some(port), announced);
    assert_eq!(
        a,
        Outcome::Connected {
            at: LATENCY * 2,
            tries: 1
        }
    );
    assert_eq!(
        b,
        Outcome::Accepted {
            at: LATENCY * 3,
            from: SocketAddr::new(nat.public_ip, port)
        }
    );
}

#[test]
fn without_a_kept_mapping_on_either_side_every_try_fails() {
    let symmetric = || Nat::symmetric("203.0.113.1", 42);
    for (name, b) in [
        ("symmetric", Nat::symmetric("198.51.100.1", 7)),
        ("port-restricted", Nat::port_restricted("198.51.100.1")),
    ] {
        let net = Net::new(
            Host::behind("10.0.0.2:7000", symmetric()),
            Host::behind("10.1.0.2:7100", b),
        );
        let (net, sides) = run(net, [Duration::ZERO; 2]);
        for (starts, outcome) in sides {
            // Unanswered tries every 800 ms; after the tenth's 700 ms a pause would end the
            // window.
            let every_800: Vec<Duration> = (0..10).map(|k| ms(800 * k)).collect();
            assert_eq!(starts, every_800, "symmetric ↔ {name}");
            assert_eq!(
                outcome,
                Outcome::GaveUp {
                    at: ms(7900),
                    message: "10 simultaneous-open tries over 8s failed, the last with: \
                              no answer"
                        .into()
                },
                "symmetric ↔ {name}"
            );
        }
        assert_eq!(net.counts.filtered, 20, "symmetric ↔ {name}");
        assert_eq!(net.counts.delivered, 0, "symmetric ↔ {name}");
    }
}
