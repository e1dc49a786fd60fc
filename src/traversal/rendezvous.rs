//! A rendezvous: what the connector and the listener agree on over signalling before they
//! punch. Each side prepares a [`Kit`] and sends its candidates: the connector in an offer
//! ([`super::offer`]), the listener in the answer ([`super::respond`]). Both then fire at about
//! the same instant: the answer says "in F ms"; the connector counts from its arrival, the
//! listener from its sending plus half the round trip its acknowledgement took (DESIGN §3:
//! synchronise by a signalling round trip, not by clocks).
//!
//! Neighbours: [`crate::signal`] carries the messages; the `reverse`, `tcp_punch`, `udp_punch`,
//! `random_probe` and `relay` strategies use the kit, the peer's candidates, the [`Probing`] and the links
//! made here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::kit::Kit;
use super::probing::{self, Probing};
use super::punch::random::Spray;
use crate::addr::{Candidate, CandidateKind};
use crate::identity::{Allowed, PublicKey};
use crate::link::paths::Route;
use crate::link::pin::{self, Credentials};
use crate::link::Path;
use crate::link::{quic, tls, Link, LinkError};
use crate::nat::SocketMapping;
use crate::signal::{Signal, SignalError};
use crate::timing::{FIRE_MARGIN, HANDSHAKE_TIMEOUT, SPRAYED_ARRIVAL_WAIT};

/// How long after the answer's arrival both sides fire: what the answer names (`asked`), or
/// half the signalling round trip this side measured plus [`FIRE_MARGIN`] when that is more.
/// Each side measures its own round trip (the connector its offer's acknowledgement, the
/// listener its answer's), over the same brokers, so both arrive at about the same instant,
/// and the listener never has to fire before it knows its round trip (which it learns at a
/// full round trip after sending, while it fires at half of one plus this delay).
pub fn fire_delay(asked: Duration, round_trip: Duration) -> Duration {
    asked.max(round_trip / 2 + FIRE_MARGIN)
}

/// Which end of the rendezvous this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Connector,
    Listener,
}

impl Role {
    /// The USERNAME of this role's punch probes: each side answers only the other's probes, so
    /// a probe looped back to its sender (hairpin, loopback) confirms nothing.
    pub fn token(self, nonce: &[u8; 16]) -> String {
        let prefix = match self {
            Role::Connector => "c",
            Role::Listener => "l",
        };
        format!("{prefix}{}", data_encoding::HEXLOWER.encode(nonce))
    }

    pub fn other(self) -> Role {
        match self {
            Role::Connector => Role::Listener,
            Role::Listener => Role::Connector,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("the peer did not answer the offer within {0:?}")]
    NoAnswer(Duration),
    #[error("cannot prepare sockets for punching: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Both sides' view of one rendezvous.
pub struct Rendezvous {
    pub role: Role,
    pub peer: PublicKey,
    pub creds: Credentials,
    pub nonce: [u8; 16],
    pub kit: Kit,
    pub peer_udp: Vec<SocketAddr>,
    pub peer_tcp: Vec<SocketAddr>,
    /// The peer's relayed addresses (its TURN allocation), when it has one.
    pub peer_relayed: Vec<SocketAddr>,
    /// The peer's public UDP candidates: its punching socket's mappings as STUN saw them.
    pub peer_public: Vec<SocketAddr>,
    /// What the peer's NAT did with that socket's mapping.
    pub peer_mapping: SocketMapping,
    /// The strategies the connector asked for.
    pub strategies: Vec<String>,
    /// When both sides start punching.
    pub fire_at: Instant,
    /// The UDP probing, when a strategy that needs it was asked for.
    pub probing: Option<Arc<Probing>>,
    /// QUIC connections accepted on the kit's endpoint, sorted by path, waiting for the
    /// strategy that takes that path (listener).
    accepted: std::sync::Mutex<Accepted>,
    /// Wakes the acceptors when a connection is queued for another of them.
    queued: tokio::sync::Notify,
    /// The connector's signalling channel, kept open while the rendezvous runs.
    pub(super) signal: Option<Signal>,
}

/// How an accepted QUIC connection came: straight from where the probing heard the peer (or
/// from anywhere else), through a relay, or from a source `random_probe`'s spray heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    Direct,
    Relayed,
    Sprayed,
}

/// Accepted QUIC connections not yet taken, by how they came.
#[derive(Default)]
struct Accepted {
    direct: VecDeque<quinn::Incoming>,
    relayed: VecDeque<quinn::Incoming>,
    sprayed: VecDeque<quinn::Incoming>,
}

impl Accepted {
    fn queue(&mut self, arrival: Arrival) -> &mut VecDeque<quinn::Incoming> {
        match arrival {
            Arrival::Direct => &mut self.direct,
            Arrival::Relayed => &mut self.relayed,
            Arrival::Sprayed => &mut self.sprayed,
        }
    }
}

/// What each side knows when its half of the rendezvous is agreed.
pub struct Agreed {
    pub role: Role,
    pub peer: PublicKey,
    pub creds: Credentials,
    pub nonce: [u8; 16],
    pub kit: Kit,
    pub peer_udp: Vec<SocketAddr>,
    pub peer_tcp: Vec<SocketAddr>,
    pub peer_relayed: Vec<SocketAddr>,
    pub peer_public: Vec<SocketAddr>,
    pub peer_mapping: SocketMapping,
    pub strategies: Vec<String>,
    pub fire_at: Instant,
    pub signal: Option<Signal>,
}

impl Rendezvous {
    /// The rendezvous, with its probing started when `udp_punch` or `relay` was asked for and
    /// there is a path to probe, or this side is `random_probe`'s easy side (`spray`, from
    /// [`super::random_probe::spray`]).
    pub fn new(a: Agreed, spray: Option<Spray>) -> Self {
        let asked = |name: &str| a.strategies.iter().any(|s| s == name);
        let direct = asked("udp_punch");
        let relay = asked("relay") && (a.kit.socket.relay.is_some() || !a.peer_relayed.is_empty());
        let probing = (direct && !a.peer_udp.is_empty() || relay || spray.is_some()).then(|| {
            Arc::new(Probing::start(
                a.kit.socket.clone(),
                probing::Plan {
                    own_token: a.role.token(&a.nonce),
                    peer_token: a.role.other().token(&a.nonce),
                    peer_direct: if direct {
                        a.peer_udp.clone()
                    } else {
                        Vec::new()
                    },
                    peer_relayed: if relay {
                        a.peer_relayed.clone()
                    } else {
                        Vec::new()
                    },
                    fire_at: a.fire_at,
                    upgrade: direct && relay,
                    spray,
                },
            ))
        });
        Self {
            role: a.role,
            peer: a.peer,
            creds: a.creds,
            nonce: a.nonce,
            kit: a.kit,
            peer_udp: a.peer_udp,
            peer_tcp: a.peer_tcp,
            peer_relayed: a.peer_relayed,
            peer_public: a.peer_public,
            peer_mapping: a.peer_mapping,
            strategies: a.strategies,
            fire_at: a.fire_at,
            probing,
            accepted: Default::default(),
            queued: tokio::sync::Notify::new(),
            signal: a.signal,
        }
    }

    /// Makes a link of a TCP connection with the peer, however it came about: the connector is
    /// always the TLS client, the listener the server (accepting only the peer).
    pub async fn secure_tcp(&self, tcp: tokio::net::TcpStream) -> Result<Link, LinkError> {
        let handshake = async {
            match self.role {
                Role::Connector => tls::connect(tcp, &self.creds, self.peer).await,
                Role::Listener => {
                    let config =
                        pin::server_config(&self.creds, Some(vec![Allowed::Key(self.peer)]))?;
                    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
                    tls::accept(tcp, &acceptor).await
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| LinkError::Timeout("TLS handshake"))?
    }

    /// The first link made of a connection accepted on the kit's TCP port (a reverse connect,
    /// or a punch that arrived as an inbound connection). Connections that fail to become a
    /// link with the peer are skipped.
    pub async fn accept_tcp(&self) -> Result<Link, LinkError> {
        let listener = self.kit.tcp_listener.lock().await;
        let listener6 = match &self.kit.tcp_listener6 {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        loop {
            let accepted = match &listener6 {
                Some(listener6) => tokio::select! {
                    a = listener.accept() => a,
                    a = listener6.accept() => a,
                },
                None => listener.accept().await,
            };
            let (tcp, from) = accepted?;
            match self.secure_tcp(tcp).await {
                Ok(link) => return Ok(link),
                Err(e) => tracing::debug!(%from, "inbound on the punching port failed: {e}"),
            }
        }
    }

    /// The first QUIC connection the peer makes to the kit's endpoint on `path`: whoever waits
    /// accepts for every path and queues what is another's.
    pub async fn accept_quic(&self, path: Path) -> Result<Link, LinkError> {
        let arrival = match path {
            Path::Direct => Arrival::Direct,
            Path::Relayed => Arrival::Relayed,
        };
        self.accept_arrival(&[arrival]).await
    }

    /// `random_probe`'s easy side: the first QUIC connection from a source its spray heard (the
    /// peer's winning socket). Connections that came straight from elsewhere are taken too when
    /// no `udp_punch` accepts here (a connector's kit, or `udp_punch` not asked): a connection
    /// that beat its probes' reading to the accept is not left waiting for nobody.
    pub async fn accept_sprayed(&self) -> Result<Link, LinkError> {
        let punch_accepts = self.role == Role::Listener
            && self.strategies.iter().any(|s| s == "udp_punch")
            && !self.peer_udp.is_empty();
        if punch_accepts {
            self.accept_arrival(&[Arrival::Sprayed]).await
        } else {
            self.accept_arrival(&[Arrival::Sprayed, Arrival::Direct])
                .await
        }
    }

    /// Every acceptor waits on the endpoint at once (no lock is held across the wait, so no
    /// acceptor can sit on a connection queued for another); a connection that came another
    /// way is queued and the others are woken to look.
    async fn accept_arrival(&self, wanted: &[Arrival]) -> Result<Link, LinkError> {
        let endpoint = self.kit.socket.endpoint.clone();
        let take = || {
            let mut accepted = self.accepted.lock().ok()?;
            wanted
                .iter()
                .find_map(|&arrival| accepted.queue(arrival).pop_front())
        };
        let incoming = loop {
            let queued = self.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            if let Some(incoming) = take() {
                break incoming;
            }
            tokio::select! {
                incoming = endpoint.accept() => {
                    let incoming =
                        incoming.ok_or(LinkError::Protocol("punching endpoint closed"))?;
                    let arrival = self.arrival_of(incoming.remote_address()).await;
                    if wanted.contains(&arrival) {
                        break incoming;
                    }
                    if let Ok(mut accepted) = self.accepted.lock() {
                        accepted.queue(arrival).push_back(incoming);
                    }
                    self.queued.notify_waiters();
                }
                () = &mut queued => {}
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, quic::accept(incoming, endpoint))
            .await
            .map_err(|_| LinkError::Timeout("QUIC handshake"))?
    }

    /// How datagrams from `remote` (as quinn sees it) come: through a relay, from a source
    /// `random_probe`'s spray heard, or straight.
    async fn arrival_of(&self, remote: SocketAddr) -> Arrival {
        let remote = crate::net::canonical(remote);
        let ours = matches!(
            self.kit.socket.paths.route(remote),
            Some(Route::Relayed { .. })
        );
        if ours || self.peer_relayed.contains(&remote) {
            return Arrival::Relayed;
        }
        match &self.probing {
            Some(p) if p.sprayed_from(remote, SPRAYED_ARRIVAL_WAIT).await => Arrival::Sprayed,
            _ => Arrival::Direct,
        }
    }

    /// A QUIC connection from the kit's endpoint to the peer at `remote`.
    pub async fn dial_quic(&self, remote: SocketAddr) -> Result<Link, LinkError> {
        let endpoint = self.kit.socket.endpoint.clone();
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            quic::connect(endpoint, false, remote, &self.creds, self.peer),
        )
        .await
        .map_err(|_| LinkError::Timeout("QUIC handshake"))?
    }

    /// The signalling traffic of this rendezvous so far (connector).
    pub fn signal_stats(&self) -> Option<crate::signal::SignalStats> {
        self.signal.as_ref().map(Signal::stats)
    }

    /// Waits until the agreed instant.
    pub async fn fire(&self) {
        tokio::time::sleep_until(self.fire_at).await;
    }
}

/// Most IPv4 candidates per transport a rendezvous dials or probes: anyone may send an offer,
/// and its candidates could name a third party, so what one offer can make us send is bounded.
const MAX_PEER_CANDIDATES: usize = 8;
/// Most IPv6 candidates per transport, beside the IPv4 ones (a host's global addresses).
const MAX_PEER_CANDIDATES_V6: usize = 4;

/// Whether an offer or answer may make us send to `addr`: anyone can send an offer, so its
/// addresses must not steer our packets at this machine, its link or a group (loopback,
/// link-local, multicast, broadcast, unspecified, port 0; in IPv6 also IPv4-mapped and
/// -compatible forms, which would name IPv4 addresses past these checks). Genuine peers never
/// offer these; a LAN peer's private (or unique local) range is fine.
fn may_send_to(addr: &SocketAddr) -> bool {
    let ip_ok = match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_multicast()
                || ip.is_broadcast())
        }
        std::net::IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            let embeds_v4 = ip.segments()[..5] == [0; 5];
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || (first & 0xffc0) == 0xfe80
                || embeds_v4)
        }
    };
    ip_ok && addr.port() != 0
}

/// The peer's candidates worth trying: those [`may_send_to`] allows, at most
/// [`MAX_PEER_CANDIDATES`] IPv4 and [`MAX_PEER_CANDIDATES_V6`] IPv6, public (and mapped)
/// ones first.
pub(super) fn usable(candidates: &[Candidate]) -> Vec<SocketAddr> {
    let mut list: Vec<&Candidate> = candidates.iter().filter(|c| may_send_to(&c.addr)).collect();
    list.sort_by_key(|c| c.kind == CandidateKind::Local);
    let mut addrs: Vec<SocketAddr> = list.into_iter().map(|c| c.addr).collect();
    addrs.dedup();
    let (mut v4, mut v6) = (0, 0);
    addrs.retain(|a| {
        let (count, cap) = match a {
            SocketAddr::V4(_) => (&mut v4, MAX_PEER_CANDIDATES),
            SocketAddr::V6(_) => (&mut v6, MAX_PEER_CANDIDATES_V6),
        };
        *count += 1;
        *count <= cap
    });
    addrs
}

/// The peer's public candidates worth trying (the mappings its STUN servers saw): those
/// [`may_send_to`] allows, at most two (what the kit learns).
pub(super) fn usable_public(candidates: &[Candidate]) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = candidates
        .iter()
        .filter(|c| c.kind == CandidateKind::Public && may_send_to(&c.addr))
        .map(|c| c.addr)
        .collect();
    addrs.dedup();
    addrs.truncate(2);
    addrs
}

/// The peer's relayed addresses worth trying: those [`may_send_to`] allows, at most two.
pub(super) fn usable_relayed(relayed: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = relayed.iter().filter(|a| may_send_to(a)).copied().collect();
    addrs.dedup();
    addrs.truncate(2);
    addrs
}

pub(super) fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(addr: &str) -> Candidate {
        Candidate {
            kind: CandidateKind::Local,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn offers_cannot_steer_packets_at_this_machine_its_link_or_a_group() {
        let offered: Vec<Candidate> = [
            "127.0.0.1:4000",
            "127.8.9.1:4000",
            "169.254.3.4:4000",
            "224.0.0.251:5353",
            "255.255.255.255:4000",
            "0.0.0.0:4000",
            "192.168.1.20:0",
            "[::1]:4000",
            "[fe80::1]:4000",
            "[ff02::1]:4000",
            "[::]:4000",
            "[::ffff:127.0.0.1]:4000",
            "[::127.0.0.1]:4000",
            "192.168.1.20:4000",
            "203.0.113.9:4000",
            "[2001:db8:9::2]:4000",
            "[fd00::2]:4000",
        ]
        .iter()
        .map(|a| candidate(a))
        .collect();
        let kept: Vec<String> = usable(&offered).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            kept,
            [
                "192.168.1.20:4000",
                "203.0.113.9:4000",
                "[2001:db8:9::2]:4000",
                "[fd00::2]:4000"
            ]
        );
        let relayed: Vec<SocketAddr> = ["127.0.0.1:3478", "198.51.100.1:49152"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(usable_relayed(&relayed), vec![relayed[1]]);
    }

    #[test]
    fn each_family_has_its_own_cap() {
        let offered: Vec<Candidate> = (0..12)
            .map(|i| candidate(&format!("203.0.113.{}:4000", i + 1)))
            .chain((0..12).map(|i| candidate(&format!("[2001:db8::{}]:4000", i + 1))))
            .collect();
        let kept = usable(&offered);
        assert_eq!(
            kept.iter().filter(|a| a.is_ipv4()).count(),
            MAX_PEER_CANDIDATES
        );
        assert_eq!(
            kept.iter().filter(|a| a.is_ipv6()).count(),
            MAX_PEER_CANDIDATES_V6
        );
    }
}
