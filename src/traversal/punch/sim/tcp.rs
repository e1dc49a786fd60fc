//! Two [`Dialer`]s making a TCP simultaneous open through simulated NATs. Each side's kit
//! port has, as in the kernel, a connecting socket per try (to the peer's announced
//! candidate) and a listener: a SYN from the very endpoint a try is connecting to crosses it
//! (both sockets answer SYN-ACK and become one connection); any other SYN reaches the listener,
//! which accepts once the handshake's ACK arrives. A connect that hears nothing re-sends its
//! SYN as the kernel does, 1 s after the first and then at doubling intervals.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{ms, Host, Nat, Net, LATENCY};
use crate::timing::PUNCH_WINDOW;
use crate::traversal::punch::tcp::{Action, Dialer, Event};

/// The kernel's first SYN retransmission timeout (doubling after each).
const SYN_RTO: Duration = Duration::from_secs(1);

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
    /// When the try in flight re-sends its SYN, and the timeout after that.
    resend: Option<(Instant, Duration)>,
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
        resend: None,
        half_open: HashSet::new(),
        starts: Vec::new(),
        outcome: None,
    });
    for _ in 0..100_000 {
        let elapsed = net.elapsed();
        for (i, side) in sides.iter_mut().enumerate() {
            while let Some(action) = side.dialer.poll_action() {
                (side.conn, side.resend) = match action {
                    Action::Connect => {
                        side.starts.push(elapsed);
                        net.send(i, side.remote, Segment::Syn);
                        (Some(Conn::SynSent), Some((net.now + SYN_RTO, SYN_RTO)))
                    }
                    Action::Abandon => (None, None),
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
            .flat_map(|s| [s.dialer.poll_timeout(), s.resend.map(|(at, _)| at)]);
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
        for (i, side) in sides.iter_mut().enumerate() {
            if side.outcome.is_some() {
                continue;
            }
            match side.resend {
                Some((at, rto)) if at <= now && side.conn == Some(Conn::SynSent) => {
                    net.send(i, side.remote, Segment::Syn);
                    side.resend = Some((now + rto * 2, rto * 2));
                }
                Some(_) if side.conn != Some(Conn::SynSent) => side.resend = None,
                _ => {}
            }
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
fn a_late_side_meets_the_early_sides_retransmitted_syn() {
    // The listener fires a second late: the connector's first SYN meets a closed NAT.
    let (net, [(a_starts, a), (b_starts, b)]) = run(cone_pair(), [Duration::ZERO, ms(1000)]);
    // The kernel re-sends the connector's SYN at 1000 ms, as the listener's goes out: they
    // cross at 1020 ms and the SYN-ACKs complete both connects at 1040 ms, on one try each.
    assert_eq!((a_starts, b_starts), (vec![ms(0)], vec![ms(1000)]));
    let connected = Outcome::Connected {
        at: ms(1040),
        tries: 1,
    };
    assert_eq!((a, b), (connected.clone(), connected));
    assert_eq!(net.counts.filtered, 1);
}

#[test]
fn lost_syns_are_sent_again_by_the_kernel() {
    let mut net = cone_pair();
    net.lose_first = [1, 1];
    let (_, [(a_starts, a), (_, b)]) = run(net, [Duration::ZERO; 2]);
    // The retransmissions (1000 ms) cross at 1020 ms, on the same try.
    assert_eq!(a_starts, vec![ms(0)]);
    let connected = Outcome::Connected {
        at: ms(1040),
        tries: 1,
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
fn without_a_kept_mapping_on_either_side_the_try_fails() {
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
            // One try, its SYN sent at 0, 1, 3 and 7 s, abandoned when the window ends.
            assert_eq!(starts, vec![ms(0)], "symmetric ↔ {name}");
            assert_eq!(
                outcome,
                Outcome::GaveUp {
                    at: ms(8000),
                    message: "1 simultaneous-open try over 8s failed, the last with: no answer"
                        .into()
                },
                "symmetric ↔ {name}"
            );
        }
        assert_eq!(net.counts.filtered, 8, "symmetric ↔ {name}");
        assert_eq!(net.counts.delivered, 0, "symmetric ↔ {name}");
    }
}
