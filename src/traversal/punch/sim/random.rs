//! `random_probe` through simulated NATs: a [`Fan`] behind a symmetric NAT that allocates at
//! random (as `masquerade random` does) against a [`Spray`] behind an endpoint-independent one.
//! The hard side's sockets are 10.0.0.2:10000+n; the first socket the peer is heard on wins and
//! the others are closed at once (as the driver does: the hard side then dials QUIC from it to
//! where it heard the peer, so the pair is its choice); whatever still arrives for a closed
//! socket is counted and dropped. A run ends with a "QUIC" datagram each way on the winning
//! pair, which both NATs must let through.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Host, Nat, Net, Rng, LATENCY};
use crate::timing::PUNCH_WINDOW;
use crate::traversal::punch::random::{
    random_ports, Counts, Event, Fan, Spray, MAX_PROBES, MAX_SOCKETS,
};

const HARD_TOKEN: &str = "rc0102";
const EASY_TOKEN: &str = "rl0102";
const HARD: usize = 0;
const EASY: usize = 1;

fn socket_addr(n: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 2], 10_000 + n as u16))
}

/// What a run left behind.
#[derive(Debug)]
struct Outcome {
    /// When the hard side first heard the peer, on which socket, from where.
    fan_heard: Option<(Duration, usize, SocketAddr)>,
    /// When the easy side first heard the peer, and from where.
    spray_heard: Option<(Duration, SocketAddr)>,
    fan: Counts,
    spray: Counts,
    /// Datagrams that arrived for a socket already closed, and sent from one.
    to_closed: usize,
    from_closed: usize,
    /// Whether a datagram from the winning socket to where the peer was heard reached the easy
    /// side's kit socket, and its reply came back to the winning socket.
    quic_both_ways: bool,
}

/// Runs a Fan on host 0 against a Spray on host 1 (both firing at the start, the spray
/// `spray_late` later) until nothing is left to send or deliver. At most `open_limit` sockets
/// can be opened.
fn run(hard_nat: Nat, easy: Host, seed: u64, spray_late: Duration, open_limit: usize) -> Outcome {
    let hard = Host::behind("10.0.0.2:5000", hard_nat);
    let mut net: Net<Vec<u8>> = Net::new(hard, easy);
    let easy_mapped = net.hosts[EASY].reflexive();
    let hard_ip = net.hosts[HARD].reflexive().ip();
    let mut rng = Rng::new(seed ^ 0x5eed);
    let ports = random_ports(MAX_PROBES, || rng.next());
    let mut fan = Fan::new(HARD_TOKEN.into(), EASY_TOKEN.into(), easy_mapped, net.start);
    let mut spray = Spray::new(
        EASY_TOKEN.into(),
        HARD_TOKEN.into(),
        hard_ip,
        ports,
        net.start + spray_late,
    );
    let mut opened = 0usize;
    let mut out = Outcome {
        fan_heard: None,
        spray_heard: None,
        fan: Counts::default(),
        spray: Counts::default(),
        to_closed: 0,
        from_closed: 0,
        quic_both_ways: false,
    };
    // Once the peer is heard, only the winning socket is open.
    let closed = |out: &Outcome, socket: usize| out.fan_heard.is_some_and(|(_, s, _)| s != socket);
    let deadline = net.start + PUNCH_WINDOW + Duration::from_secs(2);
    loop {
        while let Some(t) = fan.poll_transmit() {
            if t.socket >= opened {
                if t.socket >= open_limit {
                    fan.open_failed(t.socket);
                    continue;
                }
                assert_eq!(t.socket, opened, "sockets are named in order");
                opened += 1;
            }
            if closed(&out, t.socket) {
                out.from_closed += 1;
            }
            net.send_from(HARD, socket_addr(t.socket), t.to, t.bytes);
        }
        while let Some(t) = spray.poll_transmit() {
            net.send(EASY, t.to, t.bytes);
        }
        while let Some(Event::Heard { socket, from, .. }) = fan.poll_event() {
            out.fan_heard.get_or_insert((net.elapsed(), socket, from));
        }
        while let Some(Event::Heard { from, .. }) = spray.poll_event() {
            out.spray_heard.get_or_insert((net.elapsed(), from));
        }
        let next = [fan.poll_timeout(), spray.poll_timeout(), net.next_arrival()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next.filter(|&at| at <= deadline) else {
            break;
        };
        net.now = net.now.max(next);
        let now = net.now;
        for (host, inside, from, bytes) in net.arrivals_at() {
            if host == EASY {
                spray.handle_datagram(from, &bytes);
                continue;
            }
            let socket = usize::from(inside.port() - 10_000);
            if closed(&out, socket) {
                out.to_closed += 1;
                continue;
            }
            fan.handle_datagram(socket, from, &bytes);
        }
        fan.handle_timeout(now);
        spray.handle_timeout(now);
    }
    out.fan = fan.counts();
    out.spray = spray.counts();
    if let Some((_, socket, peer)) = out.fan_heard {
        out.quic_both_ways = quic_flight(&mut net, socket_addr(socket), peer);
    }
    out
}

/// A datagram from the hard side's `socket` to `peer`, and the easy side's reply to where it
/// came from: whether both got through.
fn quic_flight(net: &mut Net<Vec<u8>>, socket: SocketAddr, peer: SocketAddr) -> bool {
    let kit = net.hosts[EASY].inside;
    net.send_from(HARD, socket, peer, b"initial".to_vec());
    net.now += LATENCY;
    let arrived = net.arrivals_at();
    let Some((_, _, seen_from, _)) = arrived.iter().find(|(h, at, ..)| *h == EASY && *at == kit)
    else {
        return false;
    };
    net.send(EASY, *seen_from, b"handshake".to_vec());
    net.now += LATENCY;
    net.arrivals_at()
        .iter()
        .any(|(h, at, ..)| *h == HARD && *at == socket)
}

fn easy_host(nat: Nat) -> Host {
    Host::behind("10.1.0.2:6000", nat)
}

/// The hard side found a socket whose path works both ways, within the bounds, and nothing
/// left the sockets it closed. Returns when it found it (when QUIC can start).
fn assert_met(o: &Outcome) -> Duration {
    let (fan_at, ..) = o.fan_heard.expect("the hard side heard the peer");
    assert!(o.quic_both_ways, "the winning pair carries QUIC: {o:?}");
    assert!(
        o.fan.sockets <= MAX_SOCKETS && o.fan.probes <= MAX_PROBES,
        "{o:?}"
    );
    assert!(
        o.spray.probes <= MAX_PROBES && o.spray.sockets == 1,
        "{o:?}"
    );
    assert_eq!(o.from_closed, 0, "nothing leaves a closed socket");
    fan_at
}

#[test]
fn a_random_symmetric_nat_meets_a_port_restricted_one() {
    let o = run(
        Nat::symmetric_random("203.0.113.1", 42),
        easy_host(Nat::port_restricted("198.51.100.1")),
        42,
        Duration::ZERO,
        MAX_SOCKETS,
    );
    let met = assert_met(&o);
    assert!(met < Duration::from_secs(3), "met after {met:?}");
    assert!(
        o.spray_heard.is_some(),
        "the easy side heard the hard side too"
    );
    eprintln!("met after {met:?}: {o:?}");
}

#[test]
fn nearly_every_seed_meets_and_the_median_is_about_a_second() {
    let mut times = Vec::new();
    let mut missed = Vec::new();
    for seed in 1..=100 {
        let o = run(
            Nat::symmetric_random("203.0.113.1", seed),
            easy_host(Nat::port_restricted("198.51.100.1")),
            seed,
            Duration::ZERO,
            MAX_SOCKETS,
        );
        if o.fan_heard.is_some() {
            times.push(assert_met(&o));
        } else {
            missed.push(seed);
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let p95 = times[times.len() * 95 / 100];
    eprintln!(
        "{} of 100 met; median {median:?}, 95th percentile {p95:?}; missed {missed:?}",
        times.len()
    );
    assert!(missed.len() <= 1, "missed seeds {missed:?}");
    assert!(median < Duration::from_millis(1500), "median {median:?}");
    assert!(
        p95 < crate::timing::RELAY_GRACE_RANDOM_PROBE,
        "the relay's grace leaves the probe its 95th percentile: {p95:?}"
    );
}

#[test]
fn an_address_restricted_side_hears_the_fan_within_a_few_flights() {
    let o = run(
        Nat::symmetric_random("203.0.113.1", 7),
        easy_host(Nat::address_restricted("198.51.100.1")),
        7,
        Duration::ZERO,
        MAX_SOCKETS,
    );
    let met = assert_met(&o);
    // The spray's first probe opens its NAT to the hard side's IP; the fan's next probes get
    // in and are answered.
    assert!(met <= LATENCY * 4, "met after {met:?}");
    assert!(o.spray.probes < 20, "{o:?}");
}

#[test]
fn a_late_easy_side_is_found_by_the_fans_re_sent_probes() {
    // The spray starts after the fan opened all its sockets: holes its probes open are found
    // by the fan's later rounds as well as by its own hits.
    let o = run(
        Nat::symmetric_random("203.0.113.1", 9),
        easy_host(Nat::port_restricted("198.51.100.1")),
        9,
        Duration::from_secs(1),
        MAX_SOCKETS,
    );
    assert_met(&o);
}

#[test]
fn two_symmetric_nats_never_meet_and_each_side_stays_within_its_budget() {
    let o = run(
        Nat::symmetric_random("203.0.113.1", 3),
        easy_host(Nat::symmetric_random("198.51.100.1", 4)),
        3,
        Duration::ZERO,
        MAX_SOCKETS,
    );
    assert_eq!(o.fan_heard, None);
    assert_eq!(o.spray_heard, None);
    assert_eq!(
        o.fan,
        Counts {
            sockets: MAX_SOCKETS,
            probes: MAX_PROBES,
            answers: 0
        }
    );
    assert_eq!(
        o.spray,
        Counts {
            sockets: 1,
            probes: MAX_PROBES,
            answers: 0
        }
    );
}

#[test]
fn a_fan_short_of_sockets_still_meets_with_what_it_has() {
    let o = run(
        Nat::symmetric_random("203.0.113.1", 11),
        easy_host(Nat::port_restricted("198.51.100.1")),
        11,
        Duration::ZERO,
        128,
    );
    assert!(o.fan.sockets <= 128, "{o:?}");
    assert_met(&o);
}
