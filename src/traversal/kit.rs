//! The punching kit: this side's fresh sockets for one rendezvous. A UDP socket that carries
//! both STUN (the probes) and QUIC (the link through the hole) on a path-switching socket, so
//! a QUIC connection can run through a relay and move to the direct path later; a TURN
//! allocation when a TURN server is configured ([`KitRelay`]); and a TCP port shared by a
//! listener and the simultaneous-open connects (SO_REUSEADDR/PORT). Preparing it binds the
//! sockets, learns their public mappings with STUN on those very sockets (so the mapping
//! announced is the mapping used), allocates the relay meanwhile, and turns what was learned
//! into candidates for the peer.
//!
//! The connector's kit also asks the home gateway to map its port (UPnP IGD, PCP, NAT-PMP:
//! [`PortMap::start_kit`]), waiting for it only when the gateway answered while STUN ran; the
//! mapping is a candidate the peer reaches through any NAT type; the connector deletes it
//! when its link is over.
//!
//! IPv6 travels beside IPv4 without NAT: the UDP socket is dual-stack and the TCP port is bound
//! in both families, so the host's global IPv6 addresses are candidates too, on the same
//! ports. Behind a stateful IPv6 firewall both sides' probes (or SYNs) open the way as they do
//! through a port-preserving NAT, so a pair whose IPv4 NATs defeat punching can still be
//! direct over IPv6.
//!
//! Neighbours: [`super::rendezvous`] owns a kit per side; the punch strategies use its sockets;
//! [`super::probing`] probes on its UDP socket and relay.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::time::Instant;

use super::kit_relay::KitRelay;
use crate::addr::{Candidate, CandidateKind};
use crate::config::{HostPort, TurnServer};
use crate::identity::{Allowed, PublicKey};
use crate::link::demux::StunSide;
use crate::link::paths::{self, PathSocket};
use crate::link::pin::Credentials;
use crate::link::quic;
use crate::nat::SocketMapping;
use crate::portmap::PortMap;
use crate::relay::Allocation;
use crate::relay::RelayError;
use crate::stun::{self, Timing};
use crate::timing::{KIT_PORTMAP_WAIT, KIT_STUN_GRACE};

/// STUN for a kit must not hold up the offer: three tries over 300 ms, then go without.
const KIT_STUN: Timing = Timing::BRIEF;
/// STUN servers asked per kit (the first answer is enough; more only cost packets).
const KIT_STUN_SERVERS: usize = 2;
/// Most ports a NAT may step between two mappings for its allocation to count as sequential.
const MAX_SEQUENTIAL_STEP: u16 = 16;
/// How many ports ahead to predict.
const PREDICTED_PORTS: u16 = 3;

/// The kit's UDP side: what a QUIC link through the kit needs for as long as it lives (a
/// relayed link keeps it, with its relay, after the rest of the kit is gone).
pub struct UdpSide {
    /// QUIC on the UDP socket whose mapping was learned; it accepts only the peer.
    pub endpoint: quinn::Endpoint,
    /// The same socket's routes: straight to a peer, or through a relay.
    pub paths: Arc<PathSocket>,
    /// The STUN side of the same socket (punch probes).
    pub stun: tokio::sync::Mutex<StunSide>,
    /// This side's TURN allocation, when TURN is configured and the relay allowed.
    pub relay: Option<KitRelay>,
}

/// This side's fresh sockets for one rendezvous.
pub struct Kit {
    pub socket: Arc<UdpSide>,
    /// Accepts on the punching TCP port (reverse connects, and punches that land as accepts).
    pub tcp_listener: tokio::sync::Mutex<TcpListener>,
    /// The same port in IPv6, where this host has IPv6 and the port was free there too.
    pub tcp_listener6: Option<tokio::sync::Mutex<TcpListener>>,
    pub tcp_port: u16,
    pub udp: Vec<Candidate>,
    pub tcp: Vec<Candidate>,
    /// The relayed address of this side's allocation, offered to the peer.
    pub relayed: Option<SocketAddr>,
    /// Why there is no allocation although a TURN server was configured.
    pub relay_error: Option<RelayError>,
    /// What this NAT did with the socket's mapping towards two servers: kept it, or made a new
    /// port per destination (a symmetric NAT), sequentially or at random.
    pub mapping: SocketMapping,
    /// The gateway's mapping of the kit's port: the connector takes it to delete it once its
    /// link is over; dropped with the kit, it is deleted then.
    portmap: std::sync::Mutex<Option<PortMap>>,
}

impl Kit {
    /// Binds the sockets, learns their public mappings from `stun_servers` (IPv4) while
    /// `relay` makes (or has made) the TURN allocation, if there is to be one, and, with
    /// `portmap`, the gateway maps the port; makes the QUIC endpoint that accepts only `peer`.
    pub async fn prepare(
        creds: &Credentials,
        peer: &PublicKey,
        stun_servers: &[HostPort],
        relay: impl Future<Output = Option<Result<Allocation, RelayError>>>,
        portmap: bool,
    ) -> std::io::Result<Self> {
        let started = Instant::now();
        let udp = crate::net::bind_udp_dual_stack()?;
        udp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let udp_port = udp.local_addr()?.port();
        let udp_v6 = udp.local_addr()?.is_ipv6();
        // TCP on the UDP port's number where it is free, so one mapping serves both.
        let v4 = Ipv4Addr::UNSPECIFIED.into();
        let listener = match crate::net::shared_tcp_socket(v4, udp_port) {
            Ok(socket) => socket,
            Err(_) => crate::net::shared_tcp_socket(v4, 0)?,
        };
        let tcp_port = listener.local_addr()?.port();
        let mut portmap = portmap.then(|| PortMap::start_kit(udp_port));
        let tcp_listener = listener.listen(16)?;
        let interface_ips = crate::net::interface_ips()?;
        let (local_ips, ips6) = local_ips(&interface_ips);
        let tcp_listener6 = if ips6.is_empty() {
            None
        } else {
            crate::net::shared_tcp_socket(Ipv6Addr::UNSPECIFIED.into(), tcp_port)
                .and_then(|socket| socket.listen(16))
                .map_err(|e| tracing::debug!("no IPv6 punching port: {e}"))
                .ok()
        };

        let ((udp_public, tcp_public), allocated) =
            tokio::join!(learn_mappings(&udp, tcp_port, stun_servers), relay);
        tracing::debug!(?udp_public, ?tcp_public, "kit mappings");
        let mapping = classify(&udp_public);
        let tcp_public = tcp_public_or_guess(tcp_public, &udp_public, udp_port, tcp_port);
        let mapped = match portmap.as_mut() {
            Some(map) => map.if_answered(started + KIT_PORTMAP_WAIT).await,
            None => Vec::new(),
        };
        let with_v6 = |yes: bool| {
            let extra: &[IpAddr] = if yes { &ips6 } else { &[] };
            local_ips
                .iter()
                .chain(extra)
                .copied()
                .collect::<Vec<IpAddr>>()
        };
        let mut udp_candidates =
            candidates(udp_port, &with_predictions(udp_public), &with_v6(udp_v6));
        let mut tcp_candidates = candidates(
            tcp_port,
            &with_predictions(tcp_public),
            &with_v6(tcp_listener6.is_some()),
        );
        with_mapped(&mut udp_candidates, &mapped);
        if tcp_port == udp_port {
            with_mapped(&mut tcp_candidates, &mapped);
        }

        let server = quic::server_config(creds, Some(vec![Allowed::Key(*peer)]))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let (endpoint, paths, stun_side) = paths::endpoint(udp.into_std()?, Some(server))?;
        let (relay, relay_error) = match allocated {
            None => (None, None),
            Some(Ok(allocation)) => match KitRelay::new(allocation, paths.relay_inbound()) {
                Ok(relay) => (Some(relay), None),
                Err(e) => (None, Some(e)),
            },
            Some(Err(e)) => {
                tracing::warn!("TURN relay unavailable for this connection: {e}");
                (None, Some(e))
            }
        };
        Ok(Self {
            relayed: relay.as_ref().map(|r| r.relayed),
            socket: Arc::new(UdpSide {
                endpoint,
                paths,
                stun: tokio::sync::Mutex::new(stun_side),
                relay,
            }),
            tcp_listener: tokio::sync::Mutex::new(tcp_listener),
            tcp_listener6: tcp_listener6.map(tokio::sync::Mutex::new),
            tcp_port,
            udp: udp_candidates,
            tcp: tcp_candidates,
            relay_error,
            mapping,
            portmap: std::sync::Mutex::new(portmap),
        })
    }

    /// The gateway's mapping of the kit's port, for its owner to close when done.
    pub fn take_portmap(&self) -> Option<PortMap> {
        self.portmap.lock().ok()?.take()
    }
}

/// The allocation on `turn`, if one is to be made (what [`Kit::prepare`] takes as `relay`).
pub async fn allocate(turn: Option<&TurnServer>) -> Option<Result<Allocation, RelayError>> {
    match turn {
        Some(server) => Some(KitRelay::allocate(server).await),
        None => None,
    }
}

/// What two servers' view of the socket says about its NAT: the same IP and port (kept), or
/// ports a small step apart (sequential, see [`with_predictions`]) or far apart (random). One
/// answer, or answers from different IPs, say nothing.
pub(super) fn classify(mapped: &[SocketAddr]) -> SocketMapping {
    let Some(first) = mapped.first() else {
        return SocketMapping::Unknown;
    };
    let same_ip: Vec<u16> = mapped
        .iter()
        .filter(|a| a.ip() == first.ip())
        .map(SocketAddr::port)
        .collect();
    if same_ip.len() < 2 {
        return SocketMapping::Unknown;
    }
    let step = same_ip
        .iter()
        .map(|p| p.abs_diff(first.port()))
        .max()
        .unwrap_or(0);
    match step {
        0 => SocketMapping::Kept,
        s if s <= MAX_SEQUENTIAL_STEP => SocketMapping::Sequential,
        _ => SocketMapping::Random,
    }
}

/// This host's addresses worth offering from a kit, loopback left out: the IPv4 ones, and apart
/// the IPv6 ones (no NAT stands before those: each is its own public candidate).
fn local_ips(interface_ips: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let usable = interface_ips.iter().filter(|ip| !ip.is_loopback());
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = usable.partition(|ip| ip.is_ipv4());
    (v4, v6)
}

/// The public mappings of the kit's UDP socket and TCP port, as the STUN servers saw them.
/// Every server is asked at once, each from the kit's own socket or port: two answers tell a
/// NAT that keeps the mapping from one that allocates a new port per destination (and by what
/// step).
async fn learn_mappings(
    udp: &tokio::net::UdpSocket,
    tcp_port: u16,
    stun_servers: &[HostPort],
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let servers = crate::discovery::resolve_v4(stun_servers, KIT_STUN_SERVERS).await;
    let counter = stun::Counter::default();
    let udp_probes: Vec<stun::udp::Probe> = servers
        .iter()
        .map(|&to| stun::udp::Probe {
            to,
            change: stun::Change::NONE,
        })
        .collect();
    // TCP mappings are kept as each server answers: when the grace runs out while one
    // exchange is still retransmitting a lost segment, the other server's answer still counts.
    let tcp_found = std::sync::Mutex::new(Vec::new());
    let tcp_binding = futures_util::future::join_all(servers.iter().map(|&to| {
        let (counter, tcp_found) = (&counter, &tcp_found);
        async move {
            let Ok(socket) = crate::net::shared_tcp_socket(to.ip(), tcp_port) else {
                return;
            };
            if let Ok((binding, _)) =
                stun::tcp::binding_from(Some(socket), to, KIT_STUN.total(), counter).await
            {
                if let Ok(mut found) = tcp_found.lock() {
                    found.push(binding.mapped);
                }
            }
        }
    }));
    // Once one transport's mapping is known, the other gets a grace of twice the time that
    // took (TCP needs a round trip more than UDP): behind a firewall that drops UDP, waiting
    // out UDP's retransmissions would delay the offer.
    let started = Instant::now();
    let grace = || (started.elapsed() * 2).max(KIT_STUN_GRACE);
    let udp_results = {
        let udp_binding = stun::udp::run(udp, &udp_probes, KIT_STUN, &counter);
        tokio::pin!(udp_binding, tcp_binding);
        tokio::select! {
            udp = &mut udp_binding => {
                let _ = tokio::time::timeout(grace(), &mut tcp_binding).await;
                udp
            }
            _ = &mut tcp_binding => {
                let udp = tokio::time::timeout(grace(), &mut udp_binding).await;
                udp.unwrap_or_default()
            }
        }
    };
    let tcp_public = tcp_found.into_inner().unwrap_or_default();
    let udp_public = udp_results
        .into_iter()
        .filter_map(|r| r.outcome.ok().map(|b| b.mapped))
        .collect();
    (udp_public, tcp_public)
}

/// The TCP mappings, or, when none came back in time (a segment lost and waiting out TCP's
/// retransmission) but the NAT kept the UDP socket's own port, the guess that it keeps the
/// TCP port as well, on the same public IP: port-preserving NATs do so per protocol (Linux
/// masquerade, most home routers). A wrong guess costs one more candidate to try.
fn tcp_public_or_guess(
    tcp_public: Vec<SocketAddr>,
    udp_public: &[SocketAddr],
    udp_port: u16,
    tcp_port: u16,
) -> Vec<SocketAddr> {
    if !tcp_public.is_empty() {
        return tcp_public;
    }
    match udp_public {
        [first, rest @ ..] if first.port() == udp_port && rest.iter().all(|a| a == first) => {
            vec![SocketAddr::new(first.ip(), tcp_port)]
        }
        _ => Vec::new(),
    }
}

/// The candidates of a kit socket on `port`: its public mappings first, then each interface
/// address, without repeats, at most what one signalling message carries.
fn candidates(port: u16, public: &[SocketAddr], local_ips: &[IpAddr]) -> Vec<Candidate> {
    let mut list: Vec<Candidate> = public
        .iter()
        .map(|&addr| Candidate {
            kind: CandidateKind::Public,
            addr,
        })
        .collect();
    for &ip in local_ips {
        let addr = SocketAddr::new(ip, port);
        if !list.iter().any(|c| c.addr == addr) {
            list.push(Candidate {
                kind: CandidateKind::Local,
                addr,
            });
        }
    }
    list.truncate(crate::signal::message::MAX_CANDIDATES);
    list
}

/// Puts the gateway's mappings of the kit's port first among `list` (replacing a STUN mapping
/// at the same address), within what one signalling message carries.
fn with_mapped(list: &mut Vec<Candidate>, mapped: &[Candidate]) {
    list.retain(|c| !mapped.iter().any(|m| m.addr == c.addr));
    list.splice(0..0, mapped.iter().cloned());
    list.truncate(crate::signal::message::MAX_CANDIDATES);
}

/// The mappings learned, deduplicated, plus predictions: when two servers saw the same IP on
/// ports a small step apart, the NAT allocates sequentially per destination, so the peer will
/// meet the next ports along (DESIGN §3 port prediction). Equal ports (the mapping is kept) and
/// far-apart ports (random allocation) predict nothing.
fn with_predictions(mut mapped: Vec<SocketAddr>) -> Vec<SocketAddr> {
    mapped.dedup();
    if let [a, b] = mapped[..] {
        let step = a.port().abs_diff(b.port());
        if a.ip() == b.ip() && step > 0 && step <= MAX_SEQUENTIAL_STEP {
            let last = a.port().max(b.port());
            for k in 1..=PREDICTED_PORTS {
                if let Some(port) = last.checked_add(step * k) {
                    mapped.push(SocketAddr::new(a.ip(), port));
                }
            }
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn sequential_allocation_predicts_the_next_ports() {
        let got = with_predictions(addrs(&["203.0.113.5:40002", "203.0.113.5:40004"]));
        let want = addrs(&[
            "203.0.113.5:40002",
            "203.0.113.5:40004",
            "203.0.113.5:40006",
            "203.0.113.5:40008",
            "203.0.113.5:40010",
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn a_lost_tcp_mapping_is_guessed_only_behind_a_port_preserving_nat() {
        let kept = addrs(&["203.0.113.5:4000", "203.0.113.5:4000"]);
        let guessed = tcp_public_or_guess(Vec::new(), &kept, 4000, 5000);
        assert_eq!(guessed, addrs(&["203.0.113.5:5000"]));
        let learned = addrs(&["203.0.113.5:6000"]);
        assert_eq!(
            tcp_public_or_guess(learned.clone(), &kept, 4000, 5000),
            learned
        );
        let moved = addrs(&["203.0.113.5:4100", "203.0.113.5:4100"]);
        assert!(tcp_public_or_guess(Vec::new(), &moved, 4000, 5000).is_empty());
        let varies = addrs(&["203.0.113.5:4000", "203.0.113.5:4001"]);
        assert!(tcp_public_or_guess(Vec::new(), &varies, 4000, 5000).is_empty());
        assert!(tcp_public_or_guess(Vec::new(), &[], 4000, 5000).is_empty());
    }

    #[test]
    fn kept_or_random_mappings_predict_nothing() {
        let kept = addrs(&["203.0.113.5:40002", "203.0.113.5:40002"]);
        assert_eq!(with_predictions(kept), addrs(&["203.0.113.5:40002"]));
        let random = addrs(&["203.0.113.5:40002", "203.0.113.5:51234"]);
        assert_eq!(with_predictions(random.clone()), random);
        let two_ips = addrs(&["203.0.113.6:40002", "203.0.113.6:40003"][..1]);
        assert_eq!(with_predictions(two_ips.clone()), two_ips);
        let two_ips = addrs(&["203.0.113.5:40002", "203.0.113.6:40003"]);
        assert_eq!(with_predictions(two_ips.clone()), two_ips);
        assert_eq!(with_predictions(Vec::new()), Vec::new());
    }

    #[test]
    fn mappings_are_classified_by_their_step() {
        let of = |list: &[&str]| classify(&addrs(list));
        assert_eq!(of(&[]), SocketMapping::Unknown);
        assert_eq!(of(&["203.0.113.5:40002"]), SocketMapping::Unknown);
        let two_ips = ["203.0.113.5:40002", "203.0.113.6:40002"];
        assert_eq!(of(&two_ips), SocketMapping::Unknown);
        let kept = ["203.0.113.5:40002", "203.0.113.5:40002"];
        assert_eq!(of(&kept), SocketMapping::Kept);
        let sequential = ["203.0.113.5:40002", "203.0.113.5:40004"];
        assert_eq!(of(&sequential), SocketMapping::Sequential);
        let random = ["203.0.113.5:40002", "203.0.113.5:51234"];
        assert_eq!(of(&random), SocketMapping::Random);
        assert!(SocketMapping::Random.varies() && SocketMapping::Sequential.varies());
        assert!(!SocketMapping::Kept.varies() && !SocketMapping::Unknown.varies());
    }

    #[test]
    fn the_gateways_mapping_comes_first_and_once() {
        let ips: Vec<IpAddr> = vec!["192.168.1.9".parse().unwrap()];
        let mut list = candidates(4000, &addrs(&["203.0.113.5:4000"]), &ips);
        let mapped = Candidate {
            kind: CandidateKind::Mapped,
            addr: "203.0.113.5:4000".parse().unwrap(),
        };
        with_mapped(&mut list, std::slice::from_ref(&mapped));
        let kinds: Vec<CandidateKind> = list.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [CandidateKind::Mapped, CandidateKind::Local]);
        assert_eq!(list[0], mapped);
    }

    #[test]
    fn candidates_put_public_first_and_skip_repeats() {
        let ips: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "192.168.1.9".parse().unwrap()];
        let got = candidates(4000, &addrs(&["203.0.113.5:5000", "10.0.0.2:4000"]), &ips);
        let kinds: Vec<(CandidateKind, SocketAddr)> =
            got.iter().map(|c| (c.kind, c.addr)).collect();
        assert_eq!(
            kinds,
            vec![
                (CandidateKind::Public, "203.0.113.5:5000".parse().unwrap()),
                (CandidateKind::Public, "10.0.0.2:4000".parse().unwrap()),
                (CandidateKind::Local, "192.168.1.9:4000".parse().unwrap()),
            ]
        );
        let many: Vec<SocketAddr> = (0..40)
            .map(|p| SocketAddr::new("203.0.113.5".parse().unwrap(), 5000 + p))
            .collect();
        assert_eq!(
            candidates(4000, &many, &ips).len(),
            crate::signal::message::MAX_CANDIDATES
        );
    }
}
