//! The connector's half of a signalled rendezvous: once the punch phase starts, it joins the
//! peer's brokers, prepares a [`Kit`], sends an [`Offer`] with the kit's candidates and the
//! strategies `--via` leaves, and waits for the [`Answer`](crate::signal::Answer). The
//! listener's half is [`super::respond`].
//!
//! Neighbours: [`crate::signal`] carries the messages; [`super::cascade`] runs the exchange
//! beside the direct attempts and plans the signalled strategies once it agrees.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::time::Instant;

use super::kit::{self, Kit};
use super::rendezvous::{
    fire_delay, rand_bytes, usable, usable_public, usable_relayed, Agreed, Rendezvous,
    RendezvousError, Role,
};
use super::{LocalFacts, Phase};
use crate::addr::Address;
use crate::config::Settings;
use crate::identity::{Allowed, Identity};
use crate::link::pin::Credentials;
use crate::signal::{
    self, Keys, MessageError, Offer, Payload, Peer, Signal, SignalConfig, SignalError,
};
use crate::timing::{ANSWER_TIMEOUT, FIRE_IN};

/// The signalling exchange the cascade runs beside the attempts.
pub type Exchange = BoxFuture<'static, Result<Rendezvous, RendezvousError>>;

/// The exchange that lets the signalled strategies run, unless we are offline, no broker is
/// known for the peer, or `strategies` (what `--via` leaves) is empty. When dialling the peer
/// has a real chance ([`super::direct::likely_reachable`]) it waits for the punch phase, so a
/// peer reachable directly costs no signalling at all; otherwise it starts at once. The brokers are those the
/// peer's address names, else the ones its key picks from our configured list. The
/// signalling keys are derived from `identity` only when there is an exchange to run (it costs
/// a scalar multiplication, which a direct connection need not pay). When the relay is among
/// `strategies` and a TURN server is configured, the kit allocates on the first one.
pub fn exchange(
    settings: &Settings,
    identity: &Identity,
    creds: Credentials,
    peer: &Address,
    local: &LocalFacts,
    strategies: Vec<String>,
    timeout: Duration,
) -> Result<Option<Exchange>, MessageError> {
    let brokers = if peer.brokers.is_empty() {
        signal::brokers_for(&peer.key, &settings.brokers)
    } else {
        peer.brokers.clone()
    };
    if settings.offline || brokers.is_empty() || strategies.is_empty() {
        return Ok(None);
    }
    let keys = Keys::from_identity(identity)?;
    let wait = if super::direct::likely_reachable(peer, local) {
        Phase::Punch.offset()
    } else {
        Duration::ZERO
    };
    let (peer, stun, portmap) = (peer.clone(), settings.stun.clone(), settings.portmap);
    let turn = settings
        .turn
        .first()
        .filter(|_| strategies.iter().any(|s| s == "relay"))
        .cloned();
    // Brokers that cannot be reached are reported as such while half the time is still left,
    // not hidden behind the deadline as a peer that never answered. Signalling reads a random
    // inbox of this session only, and answers (acks) nobody but the peer.
    let mut config = SignalConfig {
        allowed: Some(vec![Allowed::Key(peer.key)]),
        ..SignalConfig::default()
    };
    let left = timeout.saturating_sub(wait);
    config.start_timeout = config.start_timeout.min(left / 2);
    Ok(Some(
        async move {
            // A peer reached directly within `wait` costs no signalling and no allocation;
            // after it, the allocation is made while signalling starts, so it delays nothing.
            tokio::time::sleep(wait).await;
            let (signal, relay) = tokio::join!(
                Signal::start_with(keys, &brokers, config),
                kit::allocate(turn.as_ref())
            );
            let signal = signal?;
            let kit = Kit::prepare(&creds, &peer.key, &stun, async { relay }, portmap).await?;
            offer(signal, creds, &peer, kit, strategies).await
        }
        .boxed(),
    ))
}

/// Sends the offer to `peer` and waits for its answer.
async fn offer(
    signal: Signal,
    creds: Credentials,
    peer: &Address,
    kit: Kit,
    strategies: Vec<String>,
) -> Result<Rendezvous, RendezvousError> {
    let nonce: [u8; 16] = rand_bytes();
    let offer = Offer {
        udp: kit.udp.clone(),
        tcp: kit.tcp.clone(),
        strategies: strategies.clone(),
        nonce,
        relayed: kit.relayed.into_iter().collect(),
        mapping: kit.mapping,
    };
    let sent = Instant::now();
    signal
        .send(&Peer::listening(peer.key), Payload::Offer(offer))
        .await?;
    let round_trip = sent.elapsed();
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Some((from, payload)) = signal.recv().await {
            match payload {
                Payload::Answer(a) if from.key == peer.key && a.nonce == nonce => return Some(a),
                other => tracing::debug!(from = %from.key.id(), kind = other.kind_name(), "signal: ignored while waiting for the answer"),
            }
        }
        None
    })
    .await
    .map_err(|_| RendezvousError::NoAnswer(ANSWER_TIMEOUT))?
    .ok_or(SignalError::Closed)?;
    let asked = Duration::from_millis(u64::from(answer.fire_in_ms)).min(FIRE_IN * 10);
    let fire_in = fire_delay(asked, round_trip);
    let agreed = Agreed {
        role: Role::Connector,
        peer: peer.key,
        creds,
        nonce,
        kit,
        peer_udp: usable(&answer.udp),
        peer_tcp: usable(&answer.tcp),
        peer_relayed: usable_relayed(&answer.relayed),
        peer_public: usable_public(&answer.udp),
        peer_mapping: answer.mapping,
        strategies,
        fire_at: Instant::now() + fire_in,
        signal: Some(signal),
    };
    let spray = super::random_probe::spray(&agreed);
    Ok(Rendezvous::new(agreed, spray))
}
