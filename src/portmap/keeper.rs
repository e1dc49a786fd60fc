//! Keeps a listen port mapped on the home gateway for as long as its owner runs: asks UPnP IGD
//! and PCP (falling back to NAT-PMP where the gateway speaks only that) at once and maps the
//! UDP and TCP port with whichever answers first (falling back to the other when that one will
//! not map), renews each lease at half its lifetime ([`super::lease`]), and deletes the
//! mappings when told to stop — bounded by [`PORTMAP_DELETE_TIMEOUT`], so exit is never held
//! up by a dead gateway. Beside it, where this host has a global IPv6 address and its IPv6
//! gateway speaks PCP, the same port gets a pinhole through the IPv6 firewall, kept and
//! deleted the same way (no candidate: the address is the host's own, in the address already).
//!
//! The mapped external addresses are published on a watch channel as candidates of kind
//! [`CandidateKind::Mapped`]. The UDP and TCP mappings normally share one external port; when
//! the gateway gives them different ones each is its own candidate (a `direct` dial of the
//! wrong transport there fails, the right one succeeds).
//!
//! Neighbours: `cli::listen` starts a [`PortMap`] beside its listener and closes it on exit;
//! [`super::natpmp`](mod@super::natpmp) and [`super::upnp`](mod@super::upnp) talk to the
//! gateway.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::natpmp::{self, NATPMP_PORT};
use super::pcp::{self, PcpError};
use super::upnp::{self, Igd};
use super::Protocol;
use crate::addr::{Candidate, CandidateKind};
use crate::timing::{KIT_PORTMAP_LEASE, PORTMAP_DELETE_TIMEOUT, PORTMAP_LEASE, UPNP_TIMEOUT};

/// NAT-PMP transmissions for a mapping (250 + 500 + 1000 ms of waiting, RFC 6886 §3.1's start).
const MAP_TRANSMISSIONS: u32 = 3;
/// NAT-PMP transmissions for the external address while racing UPnP.
const PROBE_TRANSMISSIONS: u32 = 3;
/// PCP ANNOUNCE transmissions before NAT-PMP is asked instead (250 + 500 ms of waiting): a
/// NAT-PMP-only gateway says "unsupported version" at once, so this is spent only on a silent
/// one.
const PCP_PROBE_TRANSMISSIONS: u32 = 2;
/// NAT-PMP transmissions for a deletion: two fit in [`PORTMAP_DELETE_TIMEOUT`].
const DELETE_TRANSMISSIONS: u32 = 2;

/// What the keeper has found so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// A gateway protocol answered with a public address: a mapping is being made.
    pub answered: bool,
    /// The first attempt is over (mapped or not).
    pub settled: bool,
    /// The mapped external addresses, while their leases hold.
    pub candidates: Vec<Candidate>,
}

/// A port mapping kept alive by a task. [`PortMap::close`] deletes it and waits; dropped
/// without it, the task is told to stop and deletes the mapping by itself (within
/// [`PORTMAP_DELETE_TIMEOUT`], if the runtime lives that long; else the gateway drops it when
/// its lease runs out).
pub struct PortMap {
    port: u16,
    started: Instant,
    state: watch::Receiver<State>,
    /// The IPv6 pinholes' progress (never any candidates).
    pinholes: watch::Receiver<State>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PortMap {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl PortMap {
    /// Starts mapping `port` (UDP and TCP) and opening IPv6 pinholes for it. Cancelling
    /// `stop` (or [`PortMap::close`]) deletes them.
    pub fn start(port: u16, stop: &CancellationToken) -> PortMap {
        Self::start_with(port, super::default_gateway_v4(), pinhole_target(), stop)
    }

    /// The mapping of a punching kit's port (UDP, and TCP on the same port number): a short
    /// lease, since a kit lives for one connection, and no IPv6 pinhole (punching opens the
    /// IPv6 firewall by itself).
    pub fn start_kit(port: u16) -> PortMap {
        let stop = CancellationToken::new();
        Self::spawn(
            port,
            super::default_gateway_v4(),
            None,
            &stop,
            secs(KIT_PORTMAP_LEASE),
        )
    }

    /// [`PortMap::start`] with the gateways given (`None`: there is none): the IPv4 one, and
    /// the IPv6 one (PCP's address there) with this host's global address to open.
    pub fn start_with(
        port: u16,
        gateway: Option<Ipv4Addr>,
        gateway6: Option<(SocketAddr, Ipv6Addr)>,
        stop: &CancellationToken,
    ) -> PortMap {
        Self::spawn(port, gateway, gateway6, stop, secs(PORTMAP_LEASE))
    }

    fn spawn(
        port: u16,
        gateway: Option<Ipv4Addr>,
        gateway6: Option<(SocketAddr, Ipv6Addr)>,
        stop: &CancellationToken,
        lease: u32,
    ) -> PortMap {
        let (tx, state) = watch::channel(State::default());
        let (tx6, pinholes) = watch::channel(State::default());
        let cancel = stop.child_token();
        let task = tokio::spawn(keep(port, gateway, lease, tx, cancel.clone()));
        let task6 = tokio::spawn(keep_pinholes(port, gateway6, lease, tx6, cancel.clone()));
        PortMap {
            port,
            started: Instant::now(),
            state,
            pinholes,
            cancel,
            tasks: vec![task, task6],
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The mapped candidates once the first attempt is over. Counted from the start (so the
    /// wait overlaps whatever the caller did meanwhile): `silent` for a gateway protocol to
    /// answer, then, once one did, up to `answered` for the mapping to be made.
    /// The pinholes are waited for the same way, at the same time, so the printed address
    /// is reachable over IPv6 when the gateway is quick.
    pub async fn first(&mut self, silent: Duration, answered: Duration) -> Vec<Candidate> {
        let (silent, answered) = (self.started + silent, self.started + answered);
        tokio::join!(
            settle(&mut self.state, silent, answered),
            settle(&mut self.pinholes, silent, answered)
        );
        self.candidates()
    }

    /// The mapped candidates by `deadline`, waited for only if a gateway protocol has already
    /// answered (a punching kit's offer must not wait on a gateway that says nothing).
    pub async fn if_answered(&mut self, deadline: Instant) -> Vec<Candidate> {
        let answered = {
            let now = self.state.borrow();
            now.answered || now.settled
        };
        if answered {
            let _ = tokio::time::timeout_at(deadline, self.state.wait_for(|s| s.settled)).await;
        }
        self.candidates()
    }

    pub fn candidates(&self) -> Vec<Candidate> {
        self.state.borrow().candidates.clone()
    }

    /// Follows the mapped candidates as they change.
    pub fn watch(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Stops renewing and deletes the mappings; returns within [`PORTMAP_DELETE_TIMEOUT`] and a
    /// little.
    pub async fn close(mut self) {
        self.cancel.cancel();
        let bound = PORTMAP_DELETE_TIMEOUT + Duration::from_millis(100);
        let mut tasks = std::mem::take(&mut self.tasks);
        let all = futures_util::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(bound, all).await.is_err() {
            for task in &tasks {
                task.abort();
            }
            tracing::warn!("port mapping: deletion did not finish in time");
        }
    }
}

/// A lease in the seconds the gateway protocols speak.
fn secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs()).unwrap_or(u32::MAX)
}

/// Waits until `state` says its first attempt is over: until `silent` for a gateway protocol
/// to answer, then, once one did, until `answered`.
async fn settle(state: &mut watch::Receiver<State>, silent: Instant, answered: Instant) {
    let heard = tokio::time::timeout_at(silent, state.wait_for(|s| s.settled || s.answered))
        .await
        .is_ok();
    if heard {
        let _ = tokio::time::timeout_at(answered, state.wait_for(|s| s.settled)).await;
    }
}

/// Where to ask for IPv6 pinholes: PCP's address on the IPv6 default gateway (scoped to its
/// interface when link-local, as home routers' are) and this host's global address there.
fn pinhole_target() -> Option<(SocketAddr, Ipv6Addr)> {
    let (gateway, iface) = super::default_gateway_v6()?;
    let interfaces = if_addrs::get_if_addrs().ok()?;
    let on_iface = || interfaces.iter().filter(|i| i.name == iface);
    let local = on_iface().find_map(|i| match i.ip() {
        IpAddr::V6(v6) if (v6.segments()[0] & 0xe000) == 0x2000 => Some(v6),
        _ => None,
    })?;
    let link_local = (gateway.segments()[0] & 0xffc0) == 0xfe80;
    let scope = match link_local {
        true => on_iface().find_map(|i| i.index)?,
        false => 0,
    };
    let pcp = std::net::SocketAddrV6::new(gateway, NATPMP_PORT, 0, scope);
    Some((pcp.into(), local))
}

/// A gateway that answered, by protocol.
enum Gateway {
    Pcp(pcp::Client),
    NatPmp(natpmp::Client),
    Upnp(Igd),
}

impl Gateway {
    fn name(&self) -> &'static str {
        match self {
            Gateway::Pcp(_) => "PCP",
            Gateway::NatPmp(_) => "NAT-PMP",
            Gateway::Upnp(_) => "UPnP",
        }
    }

    /// Maps `internal`, preferably to `external`; returns the external port and the lifetime
    /// granted (seconds; 0 = permanent).
    async fn map(
        &self,
        protocol: Protocol,
        internal: u16,
        external: u16,
        lease: u32,
    ) -> Result<(u16, u32), String> {
        match self {
            Gateway::Pcp(client) => {
                let r = client
                    .map(protocol, internal, external, lease, MAP_TRANSMISSIONS)
                    .await
                    .map_err(|e| e.to_string())?;
                if r.external.port() == 0 || r.lifetime == 0 {
                    return Err("the gateway granted no mapping".into());
                }
                Ok((r.external.port(), r.lifetime))
            }
            Gateway::NatPmp(client) => {
                let r = client
                    .map(protocol, internal, external, lease, MAP_TRANSMISSIONS)
                    .await
                    .map_err(|e| e.to_string())?;
                if r.external == 0 || r.lifetime == 0 {
                    return Err("the gateway granted no mapping".into());
                }
                Ok((r.external, r.lifetime))
            }
            Gateway::Upnp(igd) => igd.map(protocol, internal, external, lease).await,
        }
    }

    async fn unmap(&self, m: &Mapping) -> Result<(), String> {
        match self {
            Gateway::Pcp(client) => client
                .map(m.protocol, m.internal, 0, 0, DELETE_TRANSMISSIONS)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Gateway::NatPmp(client) => client
                .map(m.protocol, m.internal, 0, 0, DELETE_TRANSMISSIONS)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Gateway::Upnp(igd) => igd.unmap(m.protocol, m.external).await,
        }
    }
}

/// One mapping held on the gateway.
#[derive(Clone, Debug)]
struct Mapping {
    protocol: Protocol,
    internal: u16,
    external: u16,
    lease: Lease,
    /// The next renewal (or retry); `None` for a permanent mapping.
    next: Option<Instant>,
    failures: u32,
}

impl Mapping {
    fn new(protocol: Protocol, internal: u16, (external, lifetime): (u16, u32)) -> Self {
        let lease = Lease::new(Instant::now(), lifetime);
        Mapping {
            protocol,
            internal,
            external,
            lease,
            next: lease.renew_at(),
            failures: 0,
        }
    }

    fn alive(&self, now: Instant) -> bool {
        self.lease.expires().map_or(true, |e| e > now)
    }
}

/// A gateway's external address worth advertising: a public one (behind a second NAT, the
/// mapping opens only the inner one).
fn advertisable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64))
        }
        IpAddr::V6(_) => false,
    }
}

fn candidates(external: IpAddr, mappings: &[Mapping], now: Instant) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    for m in mappings.iter().filter(|m| m.alive(now)) {
        let addr = SocketAddr::new(external, m.external);
        if !out.iter().any(|c| c.addr == addr) {
            out.push(Candidate {
                kind: CandidateKind::Mapped,
                addr,
            });
        }
    }
    out
}

/// Maps `port` for UDP and TCP (TCP asks for UDP's external port, so one candidate serves
/// both); either alone is kept when the other is refused.
async fn map_both(gw: &Gateway, port: u16, lease: u32) -> Result<Vec<Mapping>, String> {
    let mut mappings = Vec::new();
    let mut errors = Vec::new();
    let mut wanted = port;
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        match gw.map(protocol, port, wanted, lease).await {
            Ok(granted) => {
                wanted = granted.0;
                mappings.push(Mapping::new(protocol, port, granted));
            }
            Err(e) => errors.push(format!("{protocol:?}: {e}")),
        }
    }
    if mappings.is_empty() {
        return Err(errors.join("; "));
    }
    for e in errors {
        tracing::info!("port mapping by {}: {e}", gw.name());
    }
    Ok(mappings)
}

/// The first gateway protocol that answers and maps: both are asked at once; the other is
/// tried when the first will not map. `None` when neither does (or `cancel` fires first:
/// nothing is mapped until a protocol answered).
async fn setup(
    local: Ipv4Addr,
    gateway: Ipv4Addr,
    port: u16,
    lease: u32,
    tx: &watch::Sender<State>,
    cancel: &CancellationToken,
) -> Option<(Gateway, IpAddr, Vec<Mapping>)> {
    // PCP first (ANNOUNCE, then the UDP mapping, whose answer names the outside address),
    // NAT-PMP where the gateway speaks only that (RFC 6887 §9) or PCP is silent; nobody on
    // port 5351 (a refusal) ends both.
    let natpmp = async {
        let pcp = async {
            let client =
                pcp::Client::connect(local.into(), pcp::Client::gateway(gateway.into())).await?;
            // Present (a no-op answered at once, where a mapping takes the gateway a while):
            // a punching kit waits for the mapping only then.
            client.announce(PCP_PROBE_TRANSMISSIONS).await?;
            tx.send_modify(|s| s.answered = true);
            let r = client
                .map(Protocol::Udp, port, port, lease, MAP_TRANSMISSIONS)
                .await?;
            Ok::<_, PcpError>((Gateway::Pcp(client), r.external.ip()))
        };
        match pcp.await {
            Ok(found) => return Ok(found),
            Err(PcpError::Io(e)) => return Err(format!("PCP and NAT-PMP: {e}")),
            Err(e) => tracing::debug!("port mapping: PCP: {e}; asking NAT-PMP"),
        }
        let client = natpmp::Client::connect(local, gateway)
            .await
            .map_err(|e| e.to_string())?;
        let ip = client
            .external_address(PROBE_TRANSMISSIONS)
            .await
            .map_err(|e| format!("NAT-PMP: {e}"))?;
        Ok::<_, String>((Gateway::NatPmp(client), IpAddr::from(ip)))
    };
    let upnp = async {
        upnp::ssdp_answers(local, gateway, UPNP_TIMEOUT).await?;
        let igd = Igd::search(local, gateway, UPNP_TIMEOUT).await?;
        let ip = igd.external_ip().await?;
        Ok::<_, String>((Gateway::Upnp(igd), ip))
    };
    let (mut natpmp, mut upnp) = (pin!(natpmp), pin!(upnp));
    let (mut natpmp_done, mut upnp_done) = (false, false);
    // Until both have failed (the cancellation branch alone never ends the select).
    while !(natpmp_done && upnp_done) {
        let answered = tokio::select! {
            r = &mut natpmp, if !natpmp_done => { natpmp_done = true; r }
            r = &mut upnp, if !upnp_done => { upnp_done = true; r }
            () = cancel.cancelled() => return None,
        };
        let (gw, external) = match answered {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!("port mapping: {e}");
                continue;
            }
        };
        if !advertisable(external) {
            tracing::info!(
                "port mapping: the gateway's outside address {external} is not public \
                 (another NAT beyond it); not mapping"
            );
            return None;
        }
        tx.send_modify(|s| s.answered = true);
        match map_both(&gw, port, lease).await {
            Ok(mappings) => return Some((gw, external, mappings)),
            Err(e) => tracing::info!("port mapping by {} refused: {e}", gw.name()),
        }
    }
    None
}

/// The keeper task: set up, publish, renew until cancelled, delete.
async fn keep(
    port: u16,
    gateway: Option<Ipv4Addr>,
    lease: u32,
    tx: watch::Sender<State>,
    cancel: CancellationToken,
) {
    let settle = |candidates| {
        tx.send_modify(|s| {
            s.settled = true;
            s.candidates = candidates;
        });
    };
    let Some(gateway) = gateway else {
        tracing::debug!("port mapping: no IPv4 default gateway");
        return settle(Vec::new());
    };
    let Some(IpAddr::V4(local)) =
        crate::net::route_source(SocketAddr::new(gateway.into(), NATPMP_PORT))
    else {
        return settle(Vec::new());
    };
    if advertisable(local.into()) {
        tracing::debug!("port mapping: {local} is public already, nothing to map");
        return settle(Vec::new());
    }
    let started = Instant::now();
    let Some((gw, external, mut mappings)) = setup(local, gateway, port, lease, &tx, &cancel).await
    else {
        tracing::debug!("port mapping: no gateway protocol mapped port {port}");
        return settle(Vec::new());
    };
    let published = candidates(external, &mappings, Instant::now());
    tracing::info!(
        method = gw.name(),
        setup_ms = started.elapsed().as_millis() as u64,
        mapped = ?published.iter().map(|c| c.addr).collect::<Vec<_>>(),
        "port {port} mapped on the gateway"
    );
    settle(published);
    hold(&gw, Some(external), &mut mappings, lease, &tx, &cancel).await;
}

/// The pinhole keeper: PCP MAP requests to the IPv6 gateway for this host's own address.
async fn keep_pinholes(
    port: u16,
    target: Option<(SocketAddr, Ipv6Addr)>,
    lease: u32,
    tx: watch::Sender<State>,
    cancel: CancellationToken,
) {
    let settle = || tx.send_modify(|s| s.settled = true);
    let Some((gateway, local)) = target else {
        tracing::debug!("port mapping: no IPv6 gateway and global address, no pinhole");
        return settle();
    };
    let started = Instant::now();
    let gw = match pcp::Client::connect(local.into(), gateway).await {
        Ok(client) => Gateway::Pcp(client),
        Err(e) => {
            tracing::debug!("port mapping: IPv6 pinhole: {e}");
            return settle();
        }
    };
    let mapping = tokio::select! {
        m = map_both(&gw, port, lease) => m,
        () = cancel.cancelled() => return settle(),
    };
    let mut mappings = match mapping {
        Ok(mappings) => mappings,
        Err(e) => {
            tracing::debug!("port mapping: no IPv6 pinhole for port {port}: {e}");
            return settle();
        }
    };
    tracing::info!(
        setup_ms = started.elapsed().as_millis() as u64,
        "port {port} open on the IPv6 firewall at [{local}]:{port} (PCP pinhole)"
    );
    settle();
    hold(&gw, None, &mut mappings, lease, &tx, &cancel).await;
}

/// Renews `mappings` on `gw` until cancelled, then deletes them. With `external`, their
/// candidates (at that address) are published as they change.
async fn hold(
    gw: &Gateway,
    external: Option<IpAddr>,
    mappings: &mut [Mapping],
    lease: u32,
    tx: &watch::Sender<State>,
    cancel: &CancellationToken,
) {
    let publish = |mappings: &[Mapping]| match external {
        Some(ip) => candidates(ip, mappings, Instant::now()),
        None => Vec::new(),
    };
    let mut published = publish(mappings);
    loop {
        let next = mappings.iter().filter_map(|m| m.next).min();
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = due => {}
        }
        let now = Instant::now();
        // A renewal in flight when told to stop is dropped: the deletion follows at once.
        let renewing = async {
            for m in mappings
                .iter_mut()
                .filter(|m| m.next.is_some_and(|t| t <= now))
            {
                match gw.map(m.protocol, m.internal, m.external, lease).await {
                    Ok(granted) => {
                        if granted.0 != m.external {
                            tracing::info!(
                                "port mapping: the gateway moved {:?} {} to port {}",
                                m.protocol,
                                m.external,
                                granted.0
                            );
                        }
                        *m = Mapping::new(m.protocol, m.internal, granted);
                    }
                    Err(e) => {
                        m.failures += 1;
                        m.next = Some(m.lease.retry_at(Instant::now(), m.failures));
                        tracing::warn!("port mapping: renewing {:?} failed: {e}", m.protocol);
                    }
                }
            }
        };
        tokio::select! {
            () = renewing => {}
            () = cancel.cancelled() => break,
        }
        let fresh = publish(mappings);
        if fresh != published {
            published = fresh;
            tx.send_modify(|s| s.candidates = published.clone());
        }
    }
    tx.send_modify(|s| s.candidates.clear());
    let deleting = async {
        for m in mappings.iter() {
            match gw.unmap(m).await {
                Ok(()) => tracing::debug!("port mapping: {:?} {} deleted", m.protocol, m.external),
                Err(e) => tracing::warn!("port mapping: deleting {:?} failed: {e}", m.protocol),
            }
        }
    };
    if tokio::time::timeout(PORTMAP_DELETE_TIMEOUT, deleting)
        .await
        .is_err()
    {
        tracing::warn!("port mapping: the gateway did not confirm the deletion in time");
    }
}

#[cfg(test)]
#[path = "keeper_tests.rs"]
mod tests;
