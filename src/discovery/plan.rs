//! The probe plan of one interface, as plain data: which STUN bindings go to which server or
//! alternate address, with which CHANGE-REQUEST flags, from which socket, in which phase. Built
//! by pure functions from the resolved servers (phase A) and from what phase A found (phase B),
//! so every choice is unit-tested without a socket. [`super::probe`] sends the plan;
//! [`super::judge`] reads what came back.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ALLOCATION_SOCKETS, ALLOCATION_STAGGER};
use crate::stun::udp::{Probe, ProbeResult};
use crate::stun::Change;

/// Phase A, all at once: what every server says about the main socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseA {
    /// Plain bindings from the main socket, one per server: public address, RTT, and which
    /// server speaks RFC 5780.
    pub udp: Vec<Probe>,
    /// One binding over a TCP connection of its own per server: it passes UDP-blocking
    /// firewalls, so it tells "UDP blocked" from "nothing answers".
    pub tcp: Vec<SocketAddr>,
}

/// Phase A for `servers` (the resolved addresses, in the configured order).
pub fn phase_a(servers: &[SocketAddr]) -> PhaseA {
    PhaseA {
        udp: servers.iter().map(|to| plain(*to)).collect(),
        tcp: servers.to_vec(),
    }
}

/// A server that answered a phase-A binding over UDP: what phase B is planned from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub server: SocketAddr,
    /// The main socket's public address as this server saw it.
    pub mapped: SocketAddr,
    /// The server's OTHER-ADDRESS, when it gave one.
    pub other: Option<SocketAddr>,
}

impl Answer {
    /// The answer in a phase-A result; `None` when the server did not answer.
    pub fn of(r: &ProbeResult) -> Option<Answer> {
        let b = r.outcome.as_ref().ok()?;
        Some(Answer {
            server: r.probe.to,
            mapped: b.mapped,
            other: b.other,
        })
    }
}

/// An RFC 5780 server: its primary address (the one asked in phase A) and its alternate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc5780 {
    pub primary: SocketAddr,
    pub other: SocketAddr,
}

/// One binding of the port-allocation series, from a fresh socket of its own opened `after`
/// the start of the series (so the NAT sees the sockets in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staggered {
    pub after: Duration,
    pub probe: Probe,
}

/// Phase B, planned from phase A's answers. Its two branches run at the same time:
/// `filtering` on a socket of its own, and the chain `mapping`, `allocation`, `hairpin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseB {
    /// The server the RFC 5780 tests use, when one offered a usable OTHER-ADDRESS.
    pub rfc5780: Option<Rfc5780>,
    /// RFC 5780 filtering tests, at once from one fresh socket that talks only to the primary
    /// address: a plain binding, then answers asked for from the other port and from the other
    /// address and port. Empty without an RFC 5780 server.
    pub filtering: Vec<Probe>,
    /// RFC 5780 mapping tests, at once from the main socket: the alternate IP with the
    /// primary port, then the alternate IP and port. Empty without an RFC 5780 server.
    pub mapping: Vec<Probe>,
    /// After the mapping tests: the port-allocation series, to the first server that answered.
    pub allocation: Vec<Staggered>,
    /// Last: a fresh socket sends to this address, the main socket's public address as the
    /// first answering server saw it, and the main socket listens for it (hairpinning).
    pub hairpin: SocketAddr,
}

/// Phase B from phase A's `answers` (in the order of the servers); `None` when no server
/// answered over UDP, as then there is nothing to measure against.
pub fn phase_b(answers: &[Answer]) -> Option<PhaseB> {
    let first = answers.first()?;
    let rfc5780 = answers.iter().find_map(rfc5780_of);
    let (filtering, mapping) = match rfc5780 {
        Some(Rfc5780 { primary, other }) => (
            [Change::NONE, Change::PORT, Change::IP_AND_PORT]
                .map(|change| Probe {
                    to: primary,
                    change,
                })
                .to_vec(),
            vec![
                plain(SocketAddr::new(other.ip(), primary.port())),
                plain(other),
            ],
        ),
        None => (Vec::new(), Vec::new()),
    };
    let allocation = (0..ALLOCATION_SOCKETS)
        .map(|i| Staggered {
            after: ALLOCATION_STAGGER * i as u32,
            probe: plain(first.server),
        })
        .collect();
    Some(PhaseB {
        rfc5780,
        filtering,
        mapping,
        allocation,
        hairpin: first.mapped,
    })
}

/// The server's RFC 5780 addresses, if it named an alternate of its own family on another IP
/// and another port (anything else cannot run the tests).
fn rfc5780_of(a: &Answer) -> Option<Rfc5780> {
    let other = a.other?;
    let primary = a.server;
    (other.is_ipv4() == primary.is_ipv4()
        && other.ip() != primary.ip()
        && other.port() != primary.port())
    .then_some(Rfc5780 { primary, other })
}

fn plain(to: SocketAddr) -> Probe {
    Probe {
        to,
        change: Change::NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn answer(server: &str, mapped: &str, other: Option<&str>) -> Answer {
        Answer {
            server: a(server),
            mapped: a(mapped),
            other: other.map(a),
        }
    }

    fn probe(to: &str, change: Change) -> Probe {
        Probe { to: a(to), change }
    }

    /// The allocation series every phase B runs against `server`.
    fn series(server: &str) -> Vec<Staggered> {
        [0, 10, 20, 30]
            .map(|ms| Staggered {
                after: Duration::from_millis(ms),
                probe: probe(server, Change::NONE),
            })
            .to_vec()
    }

    const S1: &str = "198.51.100.1:3478";
    const S1_OTHER: &str = "198.51.100.2:3479";
    const S2: &str = "192.0.2.7:3478";
    const S6: &str = "[2001:db8::1]:3478";
    const S6_OTHER: &str = "[2001:db8::2]:3479";
    const PUB: &str = "203.0.113.9:40000";
    const PUB2: &str = "203.0.113.9:41000";
    const PUB6: &str = "[2001:db8:1::9]:40000";

    #[test]
    fn phase_a_asks_every_server_over_udp_and_tcp() {
        assert_eq!(
            phase_a(&[a(S1), a(S2), a(S6)]),
            PhaseA {
                udp: vec![
                    probe(S1, Change::NONE),
                    probe(S2, Change::NONE),
                    probe(S6, Change::NONE),
                ],
                tcp: vec![a(S1), a(S2), a(S6)],
            }
        );
        assert_eq!(
            phase_a(&[]),
            PhaseA {
                udp: vec![],
                tcp: vec![],
            }
        );
    }

    #[test]
    fn no_answer_no_phase_b() {
        assert_eq!(phase_b(&[]), None);
    }

    #[test]
    fn phase_b_plans() {
        let rfc5780_tests = |primary: &str, other_ip_primary_port: &str, other: &str| {
            (
                vec![
                    probe(primary, Change::NONE),
                    probe(primary, Change::PORT),
                    probe(primary, Change::IP_AND_PORT),
                ],
                vec![
                    probe(other_ip_primary_port, Change::NONE),
                    probe(other, Change::NONE),
                ],
            )
        };
        let without = || (vec![], vec![]);
        let cases: Vec<(&str, Vec<Answer>, PhaseB)> = vec![
            (
                "one server without OTHER-ADDRESS",
                vec![answer(S1, PUB, None)],
                PhaseB {
                    rfc5780: None,
                    filtering: without().0,
                    mapping: without().1,
                    allocation: series(S1),
                    hairpin: a(PUB),
                },
            ),
            (
                "two servers: the first is the reference, the hairpin goes to its mapping",
                vec![answer(S2, PUB2, None), answer(S1, PUB, None)],
                PhaseB {
                    rfc5780: None,
                    filtering: without().0,
                    mapping: without().1,
                    allocation: series(S2),
                    hairpin: a(PUB2),
                },
            ),
            (
                "a server offering OTHER-ADDRESS: the RFC 5780 tests run against it",
                vec![answer(S1, PUB, Some(S1_OTHER))],
                {
                    let (filtering, mapping) = rfc5780_tests(S1, "198.51.100.2:3478", S1_OTHER);
                    PhaseB {
                        rfc5780: Some(Rfc5780 {
                            primary: a(S1),
                            other: a(S1_OTHER),
                        }),
                        filtering,
                        mapping,
                        allocation: series(S1),
                        hairpin: a(PUB),
                    }
                },
            ),
            (
                "the RFC 5780 server is the second: it runs those tests, the first the rest",
                vec![answer(S2, PUB2, None), answer(S1, PUB, Some(S1_OTHER))],
                {
                    let (filtering, mapping) = rfc5780_tests(S1, "198.51.100.2:3478", S1_OTHER);
                    PhaseB {
                        rfc5780: Some(Rfc5780 {
                            primary: a(S1),
                            other: a(S1_OTHER),
                        }),
                        filtering,
                        mapping,
                        allocation: series(S2),
                        hairpin: a(PUB2),
                    }
                },
            ),
            (
                "IPv6 with OTHER-ADDRESS",
                vec![answer(S6, PUB6, Some(S6_OTHER))],
                {
                    let (filtering, mapping) = rfc5780_tests(S6, "[2001:db8::2]:3478", S6_OTHER);
                    PhaseB {
                        rfc5780: Some(Rfc5780 {
                            primary: a(S6),
                            other: a(S6_OTHER),
                        }),
                        filtering,
                        mapping,
                        allocation: series(S6),
                        hairpin: a(PUB6),
                    }
                },
            ),
        ];
        for (name, answers, want) in cases {
            assert_eq!(phase_b(&answers), Some(want), "{name}");
        }
    }

    #[test]
    fn only_a_usable_other_address_makes_an_rfc5780_server() {
        let cases = [
            ("none offered", None, false),
            ("another IP and port", Some(S1_OTHER), true),
            ("the same IP", Some("198.51.100.1:3479"), false),
            ("the same port", Some("198.51.100.2:3478"), false),
            ("the other family", Some(S6_OTHER), false),
            ("itself", Some(S1), false),
        ];
        for (name, other, usable) in cases {
            let b = phase_b(&[answer(S1, PUB, other)]).unwrap();
            assert_eq!(b.rfc5780.is_some(), usable, "{name}");
            assert_eq!(b.filtering.len(), if usable { 3 } else { 0 }, "{name}");
            assert_eq!(b.mapping.len(), if usable { 2 } else { 0 }, "{name}");
        }
        // The first usable one wins.
        let b = phase_b(&[
            answer(S2, PUB, Some("192.0.2.7:3479")),
            answer(S1, PUB, Some(S1_OTHER)),
            answer(S6, PUB6, Some(S6_OTHER)),
        ])
        .unwrap();
        assert_eq!(b.rfc5780.map(|r| r.primary), Some(a(S1)));
    }

    #[test]
    fn an_answer_is_read_from_a_result_only_when_it_succeeded() {
        let binding = crate::stun::Binding {
            mapped: a(PUB),
            other: Some(a(S1_OTHER)),
            origin: None,
        };
        let result = |outcome| ProbeResult {
            probe: probe(S1, Change::NONE),
            outcome,
            rtt: None,
            from: None,
        };
        assert_eq!(
            Answer::of(&result(Ok(binding))),
            Some(answer(S1, PUB, Some(S1_OTHER)))
        );
        assert_eq!(
            Answer::of(&result(Err(crate::stun::StunError::Timeout(1250)))),
            None
        );
    }
}
