//! The driver of one interface's discovery: owns the sockets, sends the [`plan`]'s probes with
//! [`crate::stun`]'s drivers, collects what comes back into [`Findings`] and hands them to
//! [`judge`]. Beside it, the IPv4 gateway's port-mapping protocols. Every wait is bounded: by the
//! STUN schedule, by a named timeout, or by what is left of phase B's budget.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::judge::{self, Findings};
use super::plan::{self, PhaseB, Staggered};
use super::{InterfaceReport, ServerReport, Target};
use crate::portmap;
use crate::stun::udp::{self, ProbeResult};
use crate::stun::{tcp, Counter, Timing};
use crate::timing::{HAIRPIN_WAIT, PHASE_B_BUDGET, STUN_TCP_TIMEOUT, UPNP_TIMEOUT};

pub(super) type InterfaceOutcome =
    Result<(InterfaceReport, Vec<ServerReport>), (Vec<ServerReport>, String)>;

async fn bind(ip: IpAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind((ip, 0)).await
}

/// STUN phases A and B for the servers reached from local address `ip`, and beside them the
/// port-mapping protocols of the IPv4 gateway.
pub(super) async fn probe_interface(
    ip: IpAddr,
    targets: &[Target],
    counter: &Counter,
) -> InterfaceOutcome {
    let gateway = match ip {
        IpAddr::V4(v4) if !v4.is_loopback() => portmap::default_gateway_v4().map(|g| (v4, g)),
        _ => None,
    };
    let portmaps = async {
        match gateway {
            Some((local, gw)) => {
                let (u, n) = tokio::join!(
                    portmap::upnp(local, gw, UPNP_TIMEOUT),
                    portmap::natpmp(local, gw)
                );
                (Some(u), Some(n))
            }
            None => (None, None),
        }
    };
    let (stun, (upnp, nat_pmp)) = tokio::join!(probe_stun(ip, targets, counter), portmaps);
    stun.map(|(mut iface, servers)| {
        iface.gateway = gateway.map(|(_, g)| g.into());
        iface.upnp = upnp;
        iface.nat_pmp = nat_pmp;
        (iface, servers)
    })
}

/// Phase A from the main socket and over TCP, then phase B when some server answered over UDP.
async fn probe_stun(ip: IpAddr, targets: &[Target], counter: &Counter) -> InterfaceOutcome {
    let fail = |e: std::io::Error| {
        let reports = targets
            .iter()
            .map(|t| {
                let mut r = ServerReport::new(&t.name, Some(t.addr), "udp");
                r.error = Some(format!("cannot bind a socket on {ip}: {e}"));
                r
            })
            .collect();
        (reports, e.to_string())
    };
    let main = bind(ip).await.map_err(fail)?;
    let local = main.local_addr().map_err(fail)?;

    let servers: Vec<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    let phase_a = plan::phase_a(&servers);
    let over_tcp = futures_util::future::join_all(
        phase_a
            .tcp
            .iter()
            .map(|to| tcp::binding(*to, STUN_TCP_TIMEOUT, counter)),
    );
    let (udp_results, tcp_results) = tokio::join!(
        udp::run(&main, &phase_a.udp, Timing::QUICK, counter),
        over_tcp
    );
    let reports = judge::server_reports(targets, &udp_results, &tcp_results);

    let mut findings = Findings::phase_a(local, &udp_results, &tcp_results);
    if let Some(phase_b) = plan::phase_b(&findings.answers) {
        run_phase_b(ip, &main, &phase_b, counter, &mut findings).await;
    }
    Ok((judge::interface(&findings), reports))
}

/// Phase B: the filtering tests on their own socket, beside the chain of mapping tests,
/// allocation series and hairpinning. The mapping tests can take a whole schedule under loss;
/// what follows them gets only the rest of [`PHASE_B_BUDGET`], so the run stays bounded
/// (unknown, not late).
async fn run_phase_b(
    ip: IpAddr,
    main: &UdpSocket,
    plan: &PhaseB,
    counter: &Counter,
    findings: &mut Findings,
) {
    let filtering = async {
        if plan.filtering.is_empty() {
            return Vec::new();
        }
        match bind(ip).await {
            Ok(socket) => udp::run(&socket, &plan.filtering, Timing::QUICK, counter).await,
            Err(_) => Vec::new(),
        }
    };
    let end = tokio::time::Instant::now() + PHASE_B_BUDGET;
    let chain = async {
        let mapping: Vec<ProbeResult> = if plan.mapping.is_empty() {
            Vec::new()
        } else {
            udp::run(main, &plan.mapping, Timing::QUICK, counter).await
        };
        let left = || end.saturating_duration_since(tokio::time::Instant::now());
        let allocation = tokio::time::timeout(left(), allocation(ip, &plan.allocation, counter))
            .await
            .ok()
            .flatten();
        let wait = HAIRPIN_WAIT.min(left());
        let hairpin = if wait.is_zero() {
            None
        } else {
            match bind(ip).await {
                Ok(from) => udp::hairpin(main, &from, plan.hairpin, wait, counter)
                    .await
                    .ok(),
                Err(_) => None,
            }
        };
        (mapping, allocation, hairpin)
    };
    let (filtering, (mapping, allocation, hairpin)) = tokio::join!(filtering, chain);
    findings.rfc5780 = plan.rfc5780.is_some();
    findings.filtering_tests = filtering;
    findings.mapping_tests = mapping;
    findings.allocation = allocation;
    findings.hairpin = hairpin;
}

/// The allocation series: each binding from a fresh socket opened at its time; `(local port,
/// mapped port)` of each in order, or `None` if any of them failed.
async fn allocation(
    ip: IpAddr,
    series: &[Staggered],
    counter: &Counter,
) -> Option<Vec<(u16, u16)>> {
    let samples = series.iter().map(|s| async move {
        tokio::time::sleep(s.after).await;
        let socket = bind(ip).await.ok()?;
        let local = socket.local_addr().ok()?.port();
        let r = udp::run(&socket, &[s.probe], Timing::QUICK, counter).await;
        let mapped = r.first()?.outcome.as_ref().ok()?.mapped.port();
        Some((local, mapped))
    });
    futures_util::future::join_all(samples)
        .await
        .into_iter()
        .collect()
}

/// The whole driver against an RFC 5780 server on loopback (127.0.0.1 and 127.0.0.2, which
/// Linux routes without configuration): no NAT, so every judgement is known.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use stun_proto::types::attribute::{
        AttributeType, MappedSocketAddr, RawAttribute, XorMappedAddress,
    };
    use stun_proto::types::message::{Message, MessageWriteVec};
    use stun_proto::types::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinSet;

    use super::*;
    use crate::nat::{AllocationKind, Behaviour};

    const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    /// The server's four UDP sockets (A and B, each on ports P and Q) and its TCP listener on
    /// A:P, with the tasks that serve them (stopped when dropped).
    struct Server {
        primary: SocketAddr,
        _tasks: JoinSet<()>,
    }

    /// A port free on 127.0.0.1 and 127.0.0.2 over UDP, and on 127.0.0.1 over TCP when `tcp`.
    async fn free_port(tcp: bool) -> (UdpSocket, UdpSocket, Option<TcpListener>) {
        for _ in 0..20 {
            let a = UdpSocket::bind((A, 0)).await.unwrap();
            let port = a.local_addr().unwrap().port();
            let Ok(b) = UdpSocket::bind((B, port)).await else {
                continue;
            };
            if !tcp {
                return (a, b, None);
            }
            if let Ok(t) = TcpListener::bind((A, port)).await {
                return (a, b, Some(t));
            }
        }
        panic!("no port free on both 127.0.0.1 and 127.0.0.2");
    }

    /// `honours_change`: answers from where CHANGE-REQUEST asks; otherwise drops such requests.
    async fn server(honours_change: bool) -> Server {
        let (ap, bp, listener) = free_port(true).await;
        let (aq, bq, _) = free_port(false).await;
        let sockets: Vec<Arc<UdpSocket>> = [ap, aq, bp, bq].into_iter().map(Arc::new).collect();
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let other = addrs[3];
        let answer = move |req: &[u8], peer: SocketAddr| {
            let req = Message::from_bytes(req).ok()?;
            let mut r = Message::builder_success(&req, MessageWriteVec::new());
            r.add_attribute(&XorMappedAddress::new(peer, req.transaction_id()))
                .ok()?;
            let other = MappedSocketAddr::new(other);
            r.add_attribute(&other.to_raw(AttributeType::new(0x802c)))
                .ok()?;
            let change = req
                .raw_attribute(AttributeType::new(0x0003))
                .map(|c: RawAttribute| c.value.last().copied().unwrap_or(0))
                .unwrap_or(0);
            Some((r.finish(), change & 0x4 != 0, change & 0x2 != 0))
        };
        let mut tasks = JoinSet::new();
        for (i, socket) in sockets.iter().enumerate() {
            let (socket, sockets) = (socket.clone(), sockets.clone());
            tasks.spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                    let Some((reply, ip, port)) = answer(&buf[..n], peer) else {
                        continue;
                    };
                    if (ip || port) && !honours_change {
                        continue;
                    }
                    // Index: bit 1 the IP (A, B), bit 0 the port (P, Q).
                    let from = i ^ (usize::from(ip) << 1) ^ usize::from(port);
                    let _ = sockets[from].send_to(&reply, peer).await;
                }
            });
        }
        if let Some(listener) = listener {
            tasks.spawn(async move {
                while let Ok((mut stream, peer)) = listener.accept().await {
                    let mut buf = [0u8; 1500];
                    let Ok(n) = stream.read(&mut buf).await else {
                        continue;
                    };
                    if let Some((reply, _, _)) = answer(&buf[..n], peer) {
                        let _ = stream.write_all(&reply).await;
                    }
                }
            });
        }
        Server {
            primary: addrs[0],
            _tasks: tasks,
        }
    }

    async fn run(server: &Server) -> (InterfaceReport, Vec<ServerReport>, u64, Duration) {
        let targets = [Target {
            name: "loopback".into(),
            addr: server.primary,
        }];
        let counter = Counter::default();
        let started = Instant::now();
        let (iface, servers) = probe_interface(A.into(), &targets, &counter).await.unwrap();
        (iface, servers, counter.get(), started.elapsed())
    }

    #[tokio::test]
    async fn every_test_of_the_plan_runs_against_an_rfc5780_server() {
        let server = server(true).await;
        let (iface, servers, packets, elapsed) = run(&server).await;
        assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
        assert_eq!(iface.public, vec![iface.local]);
        assert_eq!(iface.public_tcp.len(), 1);
        assert!(iface.rfc5780);
        assert_eq!(iface.mapping, Behaviour::None);
        assert_eq!(iface.filtering, Behaviour::None);
        assert_eq!(iface.port_allocation.kind, AllocationKind::Preserving);
        assert_eq!(iface.hairpinning, Some(true));
        assert_eq!(iface.udp_blocked, Some(false));
        assert_eq!(iface.gateway, None);
        assert!(servers.iter().all(|s| s.reachable), "{servers:?}");
        // Phase A: one over UDP, one over TCP. Phase B: three filtering tests, two mapping
        // tests, four allocation sockets, one hairpin.
        assert_eq!(packets, 1 + 1 + 3 + 2 + 4 + 1);
    }

    #[tokio::test]
    async fn unanswered_change_requests_wait_out_their_schedule_and_no_more() {
        let server = server(false).await;
        let (iface, _, packets, elapsed) = run(&server).await;
        assert!(elapsed >= Timing::QUICK.total(), "{elapsed:?}");
        assert!(
            elapsed < Timing::QUICK.total() + Duration::from_millis(500),
            "{elapsed:?}"
        );
        assert!(iface.rfc5780);
        assert_eq!(iface.mapping, Behaviour::None);
        assert_eq!(iface.filtering, Behaviour::AddressAndPortDependent);
        assert_eq!(iface.port_allocation.kind, AllocationKind::Preserving);
        assert_eq!(iface.hairpinning, Some(true));
        // The two change requests are sent three times each.
        assert_eq!(packets, 1 + 1 + (1 + 3 + 3) + 2 + 4 + 1);
    }
}
