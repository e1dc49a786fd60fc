//! A signalled session: what the connector and the listener agree on over signalling before
//! they punch. Each side prepares a [`Kit`] (a fresh UDP socket carrying STUN and QUIC, and a
//! fresh TCP port shared by a listener and punching connects), learns the kit's public mapping
//! with STUN, and sends its candidates: the connector in an [`Offer`], the listener in the
//! [`Answer`]. Both then fire at about the same instant: the answer says "in F ms"; the
//! connector counts from its arrival, the listener from its sending plus half the round trip
//! its acknowledgement took (DESIGN §3: synchronise by a signalling round trip, not by clocks).
//!
//! Neighbours: [`crate::signal`] carries the messages; the `reverse`, `tcp_punch` and
//! `udp_punch` strategies use the kit and the peer's candidates; [`super::respond`] runs the
//! listener's side.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::addr::{Address, Candidate, CandidateKind};
use crate::config::HostPort;
use crate::identity::PublicKey;
use crate::link::demux::StunSide;
use crate::link::pin::{self, Credentials};
use crate::link::{quic, tls, Link, LinkError, HANDSHAKE_TIMEOUT};
use crate::signal::{Answer, Offer, Payload, Signal, SignalError};
use crate::stun::{self, Timing};

/// The listener fires this long after its answer went out (plus half the round trip); the
/// connector this long after the answer arrived.
pub const FIRE_IN: Duration = Duration::from_millis(100);
/// How long the connector waits for the answer once the offer was acknowledged.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// STUN for a kit must not hold up the offer: three tries over 300 ms, then go without.
const KIT_STUN: Timing = Timing::BRIEF;
/// The least time the slower of UDP and TCP STUN gets after the faster answered.
const KIT_STUN_GRACE: Duration = Duration::from_millis(100);
/// STUN servers asked per kit (the first answer is enough; more only cost packets).
const KIT_STUN_SERVERS: usize = 2;

/// Which end of the session this side is.
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
pub enum SessionError {
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("the peer did not answer the offer within {0:?}")]
    NoAnswer(Duration),
    #[error("cannot prepare sockets for punching: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// This side's fresh sockets for one session.
pub struct Kit {
    /// QUIC on the UDP socket whose mapping was learned; it accepts only the peer.
    pub endpoint: quinn::Endpoint,
    /// The STUN side of the same socket (punch probes).
    pub stun: tokio::sync::Mutex<StunSide>,
    /// Accepts on the punching TCP port (reverse connects, and punches that land as accepts).
    pub tcp_listener: tokio::sync::Mutex<TcpListener>,
    pub tcp_port: u16,
    pub udp: Vec<Candidate>,
    pub tcp: Vec<Candidate>,
}

impl Kit {
    /// Binds the sockets and learns their public mappings from `stun_servers` (IPv4).
    pub async fn prepare(
        creds: &Credentials,
        peer: &PublicKey,
        stun_servers: &[HostPort],
    ) -> Result<Self, SessionError> {
        let udp = crate::net::bind_udp((Ipv4Addr::UNSPECIFIED, 0).into())?;
        udp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp)?;
        let udp_port = udp.local_addr()?.port();
        let listener = crate::net::shared_tcp_socket(0)?;
        let tcp_port = listener.local_addr()?.port();
        let tcp_listener = listener.listen(16)?;

        let servers = crate::discovery::resolve_v4(stun_servers, KIT_STUN_SERVERS).await;
        let counter = stun::Counter::default();
        let udp_probes: Vec<stun::udp::Probe> = servers
            .iter()
            .map(|&to| stun::udp::Probe {
                to,
                change: stun::Change::NONE,
            })
            .collect();
        // Every server at once, each from the kit port: two answers tell a NAT that keeps the
        // mapping from one that allocates a new port per destination (and by what step).
        let tcp_binding = futures_util::future::join_all(servers.iter().map(|&to| {
            let counter = &counter;
            async move {
                let socket = crate::net::shared_tcp_socket(tcp_port).ok()?;
                stun::tcp::binding_from(Some(socket), to, KIT_STUN.total(), counter)
                    .await
                    .ok()
                    .map(|(binding, _)| binding.mapped)
            }
        }))
        .map(|found| found.into_iter().flatten().collect::<Vec<SocketAddr>>());
        // Once one transport's mapping is known, the other gets a grace of twice the time that
        // took (TCP needs a round trip more than UDP): behind a firewall that drops UDP,
        // waiting out UDP's retransmissions would delay the offer.
        let started = Instant::now();
        let grace = || (started.elapsed() * 2).max(KIT_STUN_GRACE);
        let (udp_results, tcp_public) = {
            let udp_binding = stun::udp::run(&udp, &udp_probes, KIT_STUN, &counter);
            tokio::pin!(udp_binding, tcp_binding);
            tokio::select! {
                udp = &mut udp_binding => {
                    let tcp = tokio::time::timeout(grace(), &mut tcp_binding).await;
                    (udp, tcp.unwrap_or_default())
                }
                tcp = &mut tcp_binding => {
                    let udp = tokio::time::timeout(grace(), &mut udp_binding).await;
                    (udp.unwrap_or_default(), tcp)
                }
            }
        };
        let udp_public: Vec<SocketAddr> = udp_results
            .into_iter()
            .filter_map(|r| r.outcome.ok().map(|b| b.mapped))
            .collect();
        tracing::debug!(?udp_public, ?tcp_public, "kit mappings");
        let (udp_public, tcp_public) = (with_predictions(udp_public), with_predictions(tcp_public));

        let local_ips: Vec<IpAddr> = crate::net::interface_ips()?
            .into_iter()
            .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
            .collect();
        let candidates = |port: u16, public: &[SocketAddr]| -> Vec<Candidate> {
            let mut list: Vec<Candidate> = public
                .iter()
                .map(|&addr| Candidate {
                    kind: CandidateKind::Public,
                    addr,
                })
                .collect();
            for &ip in &local_ips {
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
        };
        let udp_candidates = candidates(udp_port, &udp_public);
        let tcp_candidates = candidates(tcp_port, &tcp_public);

        let server = quic::server_config(creds, Some(vec![peer.id()]))?;
        let (endpoint, stun_side) = quic::endpoint_with_stun(udp.into_std()?, Some(server))?;
        Ok(Self {
            endpoint,
            stun: tokio::sync::Mutex::new(stun_side),
            tcp_listener: tokio::sync::Mutex::new(tcp_listener),
            tcp_port,
            udp: udp_candidates,
            tcp: tcp_candidates,
        })
    }
}

/// Most ports a NAT may step between two mappings for its allocation to count as sequential.
const MAX_SEQUENTIAL_STEP: u16 = 16;
/// How many ports ahead to predict.
const PREDICTED_PORTS: u16 = 3;

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

/// Both sides' view of one session.
pub struct Session {
    pub role: Role,
    pub peer: PublicKey,
    pub creds: Credentials,
    pub nonce: [u8; 16],
    pub kit: Kit,
    pub peer_udp: Vec<SocketAddr>,
    pub peer_tcp: Vec<SocketAddr>,
    /// The strategies the connector asked for.
    pub strategies: Vec<String>,
    /// When both sides start punching.
    pub fire_at: Instant,
    /// The connector's signalling channel, kept open while the session runs.
    signal: Option<Signal>,
}

impl Session {
    /// Connector: prepares a kit, sends the offer to `peer` and waits for its answer.
    pub async fn offer(
        signal: Signal,
        creds: Credentials,
        peer: &Address,
        own_address: String,
        strategies: Vec<String>,
        stun_servers: &[HostPort],
    ) -> Result<Self, SessionError> {
        let kit = Kit::prepare(&creds, &peer.key, stun_servers).await?;
        let nonce: [u8; 16] = rand_bytes();
        let offer = Offer {
            address: own_address,
            udp: kit.udp.clone(),
            tcp: kit.tcp.clone(),
            strategies: strategies.clone(),
            nonce,
        };
        signal.send(&peer.key, Payload::Offer(offer)).await?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            while let Some((from, payload)) = signal.recv().await {
                match payload {
                    Payload::Answer(a) if from == peer.key && a.nonce == nonce => return Some(a),
                    other => tracing::debug!(from = %from.id(), kind = other.kind_name(), "signal: ignored while waiting for the answer"),
                }
            }
            None
        })
        .await
        .map_err(|_| SessionError::NoAnswer(ANSWER_TIMEOUT))?
        .ok_or(SignalError::Closed)?;
        let fire_in = Duration::from_millis(u64::from(answer.fire_in_ms)).min(FIRE_IN * 10);
        Ok(Self {
            role: Role::Connector,
            peer: peer.key,
            creds,
            nonce,
            kit,
            peer_udp: usable(&answer.udp),
            peer_tcp: usable(&answer.tcp),
            strategies,
            fire_at: Instant::now() + fire_in,
            signal: Some(signal),
        })
    }

    /// Listener: prepares a kit and answers `offer` from `peer`.
    pub async fn answer(
        signal: &Signal,
        creds: Credentials,
        peer: PublicKey,
        offer: Offer,
        stun_servers: &[HostPort],
    ) -> Result<Self, SessionError> {
        let kit = Kit::prepare(&creds, &peer, stun_servers).await?;
        let answer = Answer {
            udp: kit.udp.clone(),
            tcp: kit.tcp.clone(),
            nonce: offer.nonce,
            fire_in_ms: FIRE_IN.as_millis() as u32,
        };
        let sent = Instant::now();
        signal.send(&peer, Payload::Answer(answer)).await?;
        let round_trip = sent.elapsed();
        Ok(Self {
            role: Role::Listener,
            peer,
            creds,
            nonce: offer.nonce,
            kit,
            peer_udp: usable(&offer.udp),
            peer_tcp: usable(&offer.tcp),
            strategies: offer.strategies,
            fire_at: (sent + FIRE_IN + round_trip / 2).max(Instant::now()),
            signal: None,
        })
    }

    /// Makes a link of a TCP connection with the peer, however it came about: the connector is
    /// always the TLS client, the listener the server (accepting only the peer).
    pub async fn secure_tcp(&self, tcp: tokio::net::TcpStream) -> Result<Link, LinkError> {
        let handshake = async {
            match self.role {
                Role::Connector => tls::connect(tcp, &self.creds, self.peer).await,
                Role::Listener => {
                    let config = pin::server_config(&self.creds, Some(vec![self.peer.id()]))?;
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
        loop {
            let (tcp, from) = listener.accept().await?;
            match self.secure_tcp(tcp).await {
                Ok(link) => return Ok(link),
                Err(e) => tracing::debug!(%from, "inbound on the punching port failed: {e}"),
            }
        }
    }

    /// The first QUIC connection the peer makes to the kit's endpoint.
    pub async fn accept_quic(&self) -> Result<Link, LinkError> {
        let endpoint = self.kit.endpoint.clone();
        let incoming = endpoint
            .accept()
            .await
            .ok_or(LinkError::Protocol("punching endpoint closed"))?;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, quic::accept(incoming, endpoint))
            .await
            .map_err(|_| LinkError::Timeout("QUIC handshake"))?
    }

    /// A QUIC connection from the kit's endpoint to the peer at `remote`.
    pub async fn dial_quic(&self, remote: SocketAddr) -> Result<Link, LinkError> {
        let endpoint = self.kit.endpoint.clone();
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            quic::connect(endpoint, false, remote, &self.creds, self.peer),
        )
        .await
        .map_err(|_| LinkError::Timeout("QUIC handshake"))?
    }

    /// The signalling traffic of this session so far (connector).
    pub fn signal_stats(&self) -> Option<crate::signal::SignalStats> {
        self.signal.as_ref().map(Signal::stats)
    }

    /// Waits until the agreed instant.
    pub async fn fire(&self) {
        tokio::time::sleep_until(self.fire_at).await;
    }
}

/// Most candidates per transport a session dials or probes: anyone may send an offer, and its
/// candidates could name a third party, so what one offer can make us send is bounded.
const MAX_PEER_CANDIDATES: usize = 8;

/// The peer's candidates worth trying: IPv4 (the kit's family), no unspecified or multicast
/// address, no port 0, at most [`MAX_PEER_CANDIDATES`], public ones first.
fn usable(candidates: &[Candidate]) -> Vec<SocketAddr> {
    let mut list: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| {
            let ip = c.addr.ip();
            ip.is_ipv4() && !ip.is_unspecified() && !ip.is_multicast() && c.addr.port() != 0
        })
        .collect();
    list.sort_by_key(|c| c.kind != CandidateKind::Public);
    let mut addrs: Vec<SocketAddr> = list.into_iter().map(|c| c.addr).collect();
    addrs.dedup();
    addrs.truncate(MAX_PEER_CANDIDATES);
    addrs
}

fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes
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
    fn kept_or_random_mappings_predict_nothing() {
        let kept = addrs(&["203.0.113.5:40002", "203.0.113.5:40002"]);
        assert_eq!(with_predictions(kept), addrs(&["203.0.113.5:40002"]));
        let random = addrs(&["203.0.113.5:40002", "203.0.113.5:51234"]);
        assert_eq!(with_predictions(random.clone()), random);
        let two_ips = addrs(&["203.0.113.5:40002", "203.0.113.6:40003"]);
        assert_eq!(with_predictions(two_ips.clone()), two_ips);
        assert_eq!(with_predictions(Vec::new()), Vec::new());
    }
}
