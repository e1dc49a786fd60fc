//! A rendezvous: what the connector and the listener agree on over signalling before they
//! punch. Each side prepares a [`Kit`] and sends its candidates: the connector in an offer
//! ([`super::offer`]), the listener in the answer ([`super::respond`]). Both then fire at about
//! the same instant: the answer says "in F ms"; the connector counts from its arrival, the
//! listener from its sending plus half the round trip its acknowledgement took (DESIGN §3:
//! synchronise by a signalling round trip, not by clocks).
//!
//! Neighbours: [`crate::signal`] carries the messages; the `reverse`, `tcp_punch` and
//! `udp_punch` strategies use the kit, the peer's candidates and the links made here.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::kit::Kit;
use crate::addr::{Candidate, CandidateKind};
use crate::identity::PublicKey;
use crate::link::pin::{self, Credentials};
use crate::link::{quic, tls, Link, LinkError};
use crate::signal::{Signal, SignalError};
use crate::timing::{FIRE_MARGIN, HANDSHAKE_TIMEOUT};

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
    /// The strategies the connector asked for.
    pub strategies: Vec<String>,
    /// When both sides start punching.
    pub fire_at: Instant,
    /// The connector's signalling channel, kept open while the rendezvous runs.
    pub(super) signal: Option<Signal>,
}

impl Rendezvous {
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

    /// The signalling traffic of this rendezvous so far (connector).
    pub fn signal_stats(&self) -> Option<crate::signal::SignalStats> {
        self.signal.as_ref().map(Signal::stats)
    }

    /// Waits until the agreed instant.
    pub async fn fire(&self) {
        tokio::time::sleep_until(self.fire_at).await;
    }
}

/// Most candidates per transport a rendezvous dials or probes: anyone may send an offer, and its
/// candidates could name a third party, so what one offer can make us send is bounded.
const MAX_PEER_CANDIDATES: usize = 8;

/// The peer's candidates worth trying: IPv4 (the kit's family), no unspecified or multicast
/// address, no port 0, at most [`MAX_PEER_CANDIDATES`], public ones first.
pub(super) fn usable(candidates: &[Candidate]) -> Vec<SocketAddr> {
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

pub(super) fn rand_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes
}
