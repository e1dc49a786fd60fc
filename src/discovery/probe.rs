//! The driver of one interface's discovery: owns the sockets, sends the [`plan`]'s probes with
//! [`crate::stun`]'s drivers, collects what comes back into [`Findings`] and hands them to
//! [`judge`]. Beside it, the IPv4 gateway's port-mapping protocols. Every wait is bounded: by the
//! STUN schedule, by a named timeout, or by what is left of phase B's budget.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::judge::{self, Findings};
use super::plan::{self, PhaseB, Staggered};
use super::{
    InterfaceReport, ServerReport, Target, HAIRPIN_WAIT, PHASE_B_BUDGET, TCP_TIMEOUT, UPNP_TIMEOUT,
};
use crate::portmap;
use crate::stun::udp::{self, ProbeResult};
use crate::stun::{tcp, Counter, Timing};

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
            .map(|to| tcp::binding(*to, TCP_TIMEOUT, counter)),
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
