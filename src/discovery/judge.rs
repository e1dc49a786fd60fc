//! Judging one interface: what its probes brought back ([`Findings`], plain data) turned into
//! the report's fields. The NAT rules themselves are [`crate::stun::classify`]'s; this file
//! only reads probe results into classify's inputs (observations, filtering tests, allocation
//! samples) and fills in the [`InterfaceReport`]. No sockets, no clock.

use std::net::SocketAddr;
use std::time::Duration;

use super::plan::Answer;
use super::{InterfaceReport, ServerReport, Target};
use crate::nat::Family;
use crate::stun::classify::{self, FilterTests, Observation};
use crate::stun::udp::ProbeResult;
use crate::stun::{Binding, Change, StunError};

/// What a binding over TCP gave: the binding and its round-trip time.
pub type TcpOutcome = Result<(Binding, Duration), StunError>;

/// What one interface's probes brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Findings {
    /// The main socket's local address.
    pub local: SocketAddr,
    /// Phase A: the servers that answered over UDP, in the servers' order.
    pub answers: Vec<Answer>,
    /// Phase A: the mapped addresses of the servers that answered over TCP, in order.
    pub tcp_mapped: Vec<SocketAddr>,
    /// Phase B had an RFC 5780 server to test against.
    pub rfc5780: bool,
    /// Phase B's mapping tests from the main socket (empty when they did not run).
    pub mapping_tests: Vec<ProbeResult>,
    /// Phase B's filtering tests (empty when they did not run).
    pub filtering_tests: Vec<ProbeResult>,
    /// Phase B's allocation series, `(local port, mapped port)` in the order the sockets were
    /// opened; `None` when it did not run, a socket failed or the budget ran out.
    pub allocation: Option<Vec<(u16, u16)>>,
    /// Phase B's hairpinning test, when it ran.
    pub hairpin: Option<bool>,
}

impl Findings {
    /// The findings of phase A alone (phase B's fields empty until it runs).
    pub fn phase_a(local: SocketAddr, udp: &[ProbeResult], tcp: &[TcpOutcome]) -> Self {
        Findings {
            local,
            answers: udp.iter().filter_map(Answer::of).collect(),
            tcp_mapped: tcp
                .iter()
                .filter_map(|r| r.as_ref().ok().map(|(b, _)| b.mapped))
                .collect(),
            rfc5780: false,
            mapping_tests: Vec::new(),
            filtering_tests: Vec::new(),
            allocation: None,
            hairpin: None,
        }
    }
}

/// The interface's report from its findings (the gateway fields are left for the caller).
pub fn interface(f: &Findings) -> InterfaceReport {
    let mut observations: Vec<Observation> = f
        .answers
        .iter()
        .map(|a| Observation {
            to: a.server,
            mapped: a.mapped,
        })
        .collect();
    observations.extend(f.mapping_tests.iter().filter_map(|r| {
        r.outcome.as_ref().ok().map(|b| Observation {
            to: r.probe.to,
            mapped: b.mapped,
        })
    }));
    let mapping = classify::mapping(f.local, &observations);
    InterfaceReport {
        family: Family::of(f.local.ip()),
        local: f.local,
        public: distinct(f.answers.iter().map(|a| a.mapped)),
        public_tcp: distinct(f.tcp_mapped.iter().copied()),
        mapping,
        filtering: classify::filtering(mapping, filter_tests(&f.filtering_tests)),
        port_allocation: classify::port_allocation(f.allocation.as_deref().unwrap_or_default()),
        hairpinning: f.hairpin,
        udp_blocked: classify::udp_blocked(!f.answers.is_empty(), !f.tcp_mapped.is_empty()),
        rfc5780: f.rfc5780,
        gateway: None,
        upnp: None,
        nat_pmp: None,
    }
}

/// The per-server health rows of phase A: every server over UDP, then every server over TCP.
pub fn server_reports(
    targets: &[Target],
    udp: &[ProbeResult],
    tcp: &[TcpOutcome],
) -> Vec<ServerReport> {
    let over_udp = targets.iter().zip(udp).map(|(t, r)| {
        let outcome = match &r.outcome {
            Ok(b) => Ok((b.mapped, r.rtt.unwrap_or_default())),
            Err(e) => Err(e.clone()),
        };
        ServerReport::new(&t.name, Some(t.addr), "udp").with(&outcome)
    });
    let over_tcp = targets.iter().zip(tcp).map(|(t, r)| {
        let outcome = r
            .as_ref()
            .map(|(b, rtt)| (b.mapped, *rtt))
            .map_err(Clone::clone);
        ServerReport::new(&t.name, Some(t.addr), "tcp").with(&outcome)
    });
    over_udp.chain(over_tcp).collect()
}

/// The RFC 5780 filtering tests read from their results, each found by its CHANGE-REQUEST;
/// all unknown when they did not run.
fn filter_tests(results: &[ProbeResult]) -> FilterTests {
    let find = |change| results.iter().find(|r| r.probe.change == change);
    FilterTests {
        plain: find(Change::NONE).map(|r| r.outcome.is_ok()),
        change_port: find(Change::PORT).and_then(changed),
        change_ip_port: find(Change::IP_AND_PORT).and_then(changed),
    }
}

/// Whether an answer asked to come from elsewhere did: `Some(true)` it came from a changed
/// source, `Some(false)` nothing came, `None` the server refused or ignored the change.
fn changed(r: &ProbeResult) -> Option<bool> {
    let change = r.probe.change;
    match (&r.outcome, r.from) {
        (Ok(_), Some(from)) => {
            let ip_ok = !change.ip || from.ip() != r.probe.to.ip();
            let port_ok = !change.port || from.port() != r.probe.to.port();
            (ip_ok && port_ok).then_some(true)
        }
        (Err(StunError::Timeout(_)), _) => Some(false),
        _ => None,
    }
}

/// The addresses in order of first appearance, each once.
fn distinct(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{AllocationKind, Behaviour, PortAllocation};
    use crate::stun::udp::Probe;
    use Behaviour as B;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn binding(mapped: &str) -> Binding {
        Binding {
            mapped: a(mapped),
            other: None,
            origin: None,
        }
    }

    /// A result of a probe to `to` asking for `change`: answered with `mapped` from `from`,
    /// or failed with `err`.
    fn result(to: &str, change: Change, answer: Result<(&str, &str), StunError>) -> ProbeResult {
        let (outcome, from) = match answer {
            Ok((mapped, from)) => (Ok(binding(mapped)), Some(a(from))),
            Err(e) => (Err(e), None),
        };
        ProbeResult {
            probe: Probe { to: a(to), change },
            outcome,
            rtt: None,
            from,
        }
    }

    fn timeout() -> StunError {
        StunError::Timeout(1250)
    }

    fn refused() -> StunError {
        StunError::Rejected {
            code: 420,
            reason: String::new(),
        }
    }

    const LOCAL: &str = "192.168.7.2:40000";
    const P: &str = "198.51.100.1:3478";
    const P_ALT_PORT: &str = "198.51.100.1:3479";
    const O_PRIMARY_PORT: &str = "198.51.100.2:3478";
    const O: &str = "198.51.100.2:3479";
    const S2: &str = "192.0.2.7:3478";
    const PUB: &str = "203.0.113.9:40000";
    const PUB2: &str = "203.0.113.9:51000";
    const PUB3: &str = "203.0.113.9:52000";

    #[test]
    fn a_change_counts_only_when_the_source_really_changed() {
        let cases = [
            (Change::IP_AND_PORT, Ok((PUB, O)), Some(true)),
            (Change::PORT, Ok((PUB, P_ALT_PORT)), Some(true)),
            // A server that ignores CHANGE-REQUEST answers from where it was asked.
            (Change::IP_AND_PORT, Ok((PUB, P)), None),
            (Change::IP_AND_PORT, Ok((PUB, P_ALT_PORT)), None),
            (Change::PORT, Ok((PUB, P)), None),
            (Change::PORT, Err(timeout()), Some(false)),
            (Change::PORT, Err(refused()), None),
        ];
        for (change, answer, want) in cases {
            let r = result(P, change, answer);
            assert_eq!(changed(&r), want, "{r:?}");
        }
    }

    #[test]
    fn filtering_tests_are_read_by_their_change_request() {
        let yes = Some(true);
        let no = Some(false);
        let plain = |answer| result(P, Change::NONE, answer);
        let port = |answer| result(P, Change::PORT, answer);
        let ip_port = |answer| result(P, Change::IP_AND_PORT, answer);
        let t = |plain, change_port, change_ip_port| FilterTests {
            plain,
            change_port,
            change_ip_port,
        };
        let cases = [
            (vec![], FilterTests::default()),
            (
                vec![
                    plain(Ok((PUB, P))),
                    port(Ok((PUB, P_ALT_PORT))),
                    ip_port(Ok((PUB, O))),
                ],
                t(yes, yes, yes),
            ),
            (
                vec![
                    plain(Ok((PUB, P))),
                    port(Ok((PUB, P_ALT_PORT))),
                    ip_port(Err(timeout())),
                ],
                t(yes, yes, no),
            ),
            // Order does not matter.
            (
                vec![
                    ip_port(Err(timeout())),
                    port(Err(timeout())),
                    plain(Ok((PUB, P))),
                ],
                t(yes, no, no),
            ),
            (
                vec![
                    plain(Err(timeout())),
                    port(Err(timeout())),
                    ip_port(Err(timeout())),
                ],
                t(no, no, no),
            ),
            (
                vec![
                    plain(Ok((PUB, P))),
                    port(Err(refused())),
                    ip_port(Ok((PUB, P))),
                ],
                t(yes, None, None),
            ),
        ];
        for (results, want) in cases {
            assert_eq!(filter_tests(&results), want, "{results:?}");
        }
    }

    /// Findings with phase A's `answers` (server, mapped, other) and TCP mappings; phase B
    /// not run.
    fn phase_a(answers: &[(&str, &str)], tcp: &[&str]) -> Findings {
        Findings {
            local: a(LOCAL),
            answers: answers
                .iter()
                .map(|(server, mapped)| Answer {
                    server: a(server),
                    mapped: a(mapped),
                    other: None,
                })
                .collect(),
            tcp_mapped: tcp.iter().map(|m| a(m)).collect(),
            rfc5780: false,
            mapping_tests: vec![],
            filtering_tests: vec![],
            allocation: None,
            hairpin: None,
        }
    }

    /// The RFC 5780 phase B: mapping tests answered with `mapped` (other IP with the primary
    /// port, other IP and port), filtering tests answered through or not.
    fn rfc5780(
        f: Findings,
        mapped: [&str; 2],
        through: [bool; 2],
        allocation: &[(u16, u16)],
        hairpin: bool,
    ) -> Findings {
        let came = |through: bool, from| {
            if through {
                Ok((PUB, from))
            } else {
                Err(timeout())
            }
        };
        Findings {
            rfc5780: true,
            mapping_tests: vec![
                result(
                    O_PRIMARY_PORT,
                    Change::NONE,
                    Ok((mapped[0], O_PRIMARY_PORT)),
                ),
                result(O, Change::NONE, Ok((mapped[1], O))),
            ],
            filtering_tests: vec![
                result(P, Change::NONE, Ok((PUB, P))),
                result(P, Change::PORT, came(through[0], P_ALT_PORT)),
                result(P, Change::IP_AND_PORT, came(through[1], O)),
            ],
            allocation: Some(allocation.to_vec()),
            hairpin: Some(hairpin),
            ..f
        }
    }

    type Judged = (
        Vec<SocketAddr>,
        Vec<SocketAddr>,
        Behaviour,
        Behaviour,
        AllocationKind,
        Option<bool>,
        Option<bool>,
        bool,
    );

    fn judged(f: &Findings) -> Judged {
        let r = interface(f);
        assert_eq!((r.local, r.family), (f.local, Family::Ipv4));
        (
            r.public,
            r.public_tcp,
            r.mapping,
            r.filtering,
            r.port_allocation.kind,
            r.hairpinning,
            r.udp_blocked,
            r.rfc5780,
        )
    }

    #[test]
    fn interfaces_judged_from_their_findings() {
        use AllocationKind as A;
        let preserving = [(40001, 40001), (40002, 40002), (40003, 40003)];
        let sequential = [
            (40001, 60001),
            (40002, 60002),
            (40003, 60003),
            (40004, 60004),
        ];
        let cases: Vec<(&str, Findings, Judged)> = vec![
            (
                "no NAT: an RFC 5780 server sees the local address everywhere",
                rfc5780(
                    phase_a(&[(P, LOCAL)], &[LOCAL]),
                    [LOCAL, LOCAL],
                    [true, true],
                    &preserving,
                    true,
                ),
                (
                    vec![a(LOCAL)],
                    vec![a(LOCAL)],
                    B::None,
                    B::None,
                    A::Preserving,
                    Some(true),
                    Some(false),
                    true,
                ),
            ),
            (
                "full cone",
                rfc5780(
                    phase_a(&[(P, PUB), (S2, PUB)], &[PUB2, PUB3]),
                    [PUB, PUB],
                    [true, true],
                    &preserving,
                    true,
                ),
                (
                    vec![a(PUB)],
                    vec![a(PUB2), a(PUB3)],
                    B::EndpointIndependent,
                    B::EndpointIndependent,
                    A::Preserving,
                    Some(true),
                    Some(false),
                    true,
                ),
            ),
            (
                "port-restricted cone without hairpinning",
                rfc5780(
                    phase_a(&[(P, PUB)], &[]),
                    [PUB, PUB],
                    [false, false],
                    &preserving,
                    false,
                ),
                (
                    vec![a(PUB)],
                    vec![],
                    B::EndpointIndependent,
                    B::AddressAndPortDependent,
                    A::Preserving,
                    Some(false),
                    Some(false),
                    true,
                ),
            ),
            (
                "symmetric, sequential ports; the servers disagree",
                rfc5780(
                    phase_a(&[(P, PUB), (S2, PUB2)], &[]),
                    [PUB3, "203.0.113.9:53000"],
                    [false, false],
                    &sequential,
                    false,
                ),
                (
                    vec![a(PUB), a(PUB2)],
                    vec![],
                    B::AddressAndPortDependent,
                    B::AddressAndPortDependent,
                    A::Sequential,
                    Some(false),
                    Some(false),
                    true,
                ),
            ),
            (
                "two plain servers that agree; the allocation series was cut short",
                Findings {
                    hairpin: Some(true),
                    ..phase_a(&[(P, PUB), (S2, PUB)], &[PUB])
                },
                (
                    vec![a(PUB)],
                    vec![a(PUB)],
                    B::EndpointIndependent,
                    B::Unknown,
                    A::Unknown,
                    Some(true),
                    Some(false),
                    false,
                ),
            ),
            (
                "UDP blocked: only TCP answered",
                phase_a(&[], &[PUB2, PUB2]),
                (
                    vec![],
                    vec![a(PUB2)],
                    B::Unknown,
                    B::Unknown,
                    A::Unknown,
                    None,
                    Some(true),
                    false,
                ),
            ),
            (
                "nothing answered",
                phase_a(&[], &[]),
                (
                    vec![],
                    vec![],
                    B::Unknown,
                    B::Unknown,
                    A::Unknown,
                    None,
                    None,
                    false,
                ),
            ),
        ];
        for (name, findings, want) in cases {
            assert_eq!(judged(&findings), want, "{name}");
        }
    }

    #[test]
    fn a_failed_mapping_test_is_left_out_of_the_mapping() {
        let mut f = rfc5780(
            phase_a(&[(P, PUB)], &[]),
            [PUB2, PUB3],
            [false, false],
            &[],
            false,
        );
        // Only the test to the other IP with the primary port answered: address dependence
        // shows, but nothing tells it from address-and-port dependence.
        f.mapping_tests[1] = result(O, Change::NONE, Err(timeout()));
        assert_eq!(interface(&f).mapping, B::Unknown);
        assert_eq!(
            interface(&f).port_allocation,
            PortAllocation {
                kind: AllocationKind::Unknown,
                delta: None
            }
        );
    }

    #[test]
    fn server_rows_say_each_server_over_udp_then_tcp() {
        let targets = [
            Target {
                name: "one.example:3478".into(),
                addr: a(P),
            },
            Target {
                name: "two.example:3478".into(),
                addr: a(S2),
            },
        ];
        let mut answered = result(P, Change::NONE, Ok((PUB, P)));
        answered.rtt = Some(Duration::from_micros(12_345));
        let udp = [answered, result(S2, Change::NONE, Err(timeout()))];
        let tcp: [TcpOutcome; 2] = [
            Err(StunError::Io("connection refused".into())),
            Ok((binding(PUB2), Duration::from_millis(20))),
        ];
        let rows: Vec<String> = server_reports(&targets, &udp, &tcp)
            .into_iter()
            .map(|r| {
                let (name, transport, reachable) = (r.name, r.transport, r.reachable);
                let (rtt, mapped, error) = (r.rtt_ms, r.mapped, r.error);
                format!("{name} {transport} {reachable} {rtt:?} {mapped:?} {error:?}")
            })
            .collect();
        assert_eq!(
            rows,
            [
                "one.example:3478 udp true Some(12.3) Some(203.0.113.9:40000) None",
                "two.example:3478 udp false None None Some(\"no answer within 1250 ms\")",
                "one.example:3478 tcp false None None Some(\"connection refused\")",
                "two.example:3478 tcp true Some(20.0) Some(203.0.113.9:51000) None",
            ]
        );
    }
}
