//! The listener's half of the signalled strategies: answers each offer arriving over signalling
//! with a fresh [`Rendezvous`] (its own [`Kit`] and the fire instant), runs the listener side of every strategy the offer asked for, and
//! hands the links they make to the listener's accept queue, where the connector's verification
//! and selection decide which one is used.
//!
//! Offers from peers outside `--allow` never get here: the listener's signalling takes in only
//! the keys `--allow` admits and answers nothing else, not even with an ack (nothing is bound,
//! nothing answered). The answer goes to the inbox the offer names. At most
//! [`MAX_SESSIONS`] run at once, each for at most [`SESSION_LIFETIME`], so a flood of offers
//! costs a bounded number of sockets.

use std::sync::Arc;

use tokio::task::JoinSet;

use tokio::time::Instant;

use super::kit::{self, Kit};
use super::rendezvous::{
    fire_delay, usable, usable_public, usable_relayed, Agreed, Rendezvous, RendezvousError, Role,
};
use super::Strategy;
use crate::config::{HostPort, TurnServer};
use crate::identity::Allowed;
use crate::link::listener::Inbound;
use crate::link::pin::Credentials;
use crate::signal::{Answer, Keys, Offer, Payload, Peer, Signal, SignalConfig};
use crate::timing::{FIRE_IN, SESSION_LIFETIME, SIGNAL_RESTART_PAUSE};

/// Sessions answered at once; further offers wait for the connector's retry.
pub const MAX_SESSIONS: usize = 8;

/// What the listener brings to every session.
pub struct Responder {
    pub creds: Credentials,
    pub allowed: Option<Vec<Allowed>>,
    pub stun: Vec<HostPort>,
    /// Where a session allocates its relay when the offer asks for the relay.
    pub turn: Option<TurnServer>,
    pub strategies: Vec<Arc<dyn Strategy>>,
    pub inbound: Inbound,
}

/// Keeps the listener reachable over signalling on `brokers` for as long as the future runs:
/// starts signalling (again, while no broker answers) on its listening topic, admitting only
/// what `--allow` admits, and answers offers.
pub async fn run(keys: Keys, brokers: Vec<HostPort>, responder: Responder) {
    let responder = Arc::new(responder);
    let config = SignalConfig::listener(responder.allowed.clone());
    loop {
        match Signal::start_with(keys.clone(), &brokers, config.clone()).await {
            Ok(signal) => {
                tracing::info!("reachable over signalling");
                serve(signal, responder.clone()).await;
            }
            Err(e) => tracing::warn!(
                "signalling unavailable ({e}); peers can reach this listener only directly until it is back"
            ),
        }
        tokio::time::sleep(SIGNAL_RESTART_PAUSE).await;
    }
}

/// Answers offers from `signal` until it stops. Dropping the future stops every session.
async fn serve(signal: Signal, responder: Arc<Responder>) {
    let signal = Arc::new(signal);
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            next = signal.recv() => match next {
                None => return,
                Some((from, Payload::Offer(offer))) => {
                    let id = from.key.id();
                    if sessions.len() >= MAX_SESSIONS {
                        tracing::warn!(peer = %id, "{MAX_SESSIONS} sessions already running: offer ignored");
                    } else {
                        tracing::info!(peer = %id, strategies = ?offer.strategies, "offer");
                        sessions.spawn(run_session(signal.clone(), responder.clone(), from, offer));
                    }
                }
                Some((from, other)) => {
                    tracing::debug!(peer = %from.key.id(), kind = other.kind_name(), "signal: ignored");
                }
            },
            Some(_) = sessions.join_next() => {}
        }
    }
}

/// One session: answer, then run the requested strategies until the connector took a link or
/// the session's time is up.
async fn run_session(signal: Arc<Signal>, responder: Arc<Responder>, from: Peer, offer: Offer) {
    let session = match answer(&signal, &responder, from, offer).await {
        Ok(session) => Arc::new(session),
        Err(e) => return tracing::info!(peer = %from.key.id(), "cannot answer the offer: {e}"),
    };
    let from = from.key;
    let mut links = JoinSet::new();
    for strategy in &responder.strategies {
        if !strategy.signalled() || !session.strategies.iter().any(|s| s == strategy.name()) {
            continue;
        }
        for link in strategy.respond(&session) {
            let (inbound, method) = (responder.inbound.clone(), strategy.name());
            links.spawn(async move { inbound.admit(link, method).await });
        }
    }
    let taken = async {
        while let Some(joined) = links.join_next().await {
            if let Ok(true) = joined {
                return true;
            }
        }
        false
    };
    match tokio::time::timeout(SESSION_LIFETIME, taken).await {
        Ok(true) => tracing::debug!(peer = %from.id(), "session done: link taken"),
        Ok(false) => tracing::info!(peer = %from.id(), "session done: no link came up"),
        Err(_) => tracing::info!(peer = %from.id(), "session timed out"),
    }
}

/// Prepares a kit and answers `offer` from `peer` (on the inbox the offer named): the listener
/// fires half the round trip its
/// acknowledgement took after the answer went out, plus [`fire_delay`] (the time the answer
/// names, or more on a slow path).
async fn answer(
    signal: &Signal,
    responder: &Responder,
    from: Peer,
    offer: Offer,
) -> Result<Rendezvous, RendezvousError> {
    let peer = from.key;
    let creds = responder.creds.clone();
    let turn = responder
        .turn
        .as_ref()
        .filter(|_| offer.strategies.iter().any(|s| s == "relay"));
    // The listener's own port is mapped already (`listen`); its kits are not.
    let kit = Kit::prepare(&creds, &peer, &responder.stun, kit::allocate(turn), false).await?;
    let answer = Answer {
        udp: kit.udp.clone(),
        tcp: kit.tcp.clone(),
        nonce: offer.nonce,
        fire_in_ms: FIRE_IN.as_millis() as u32,
        relayed: kit.relayed.into_iter().collect(),
        mapping: kit.mapping,
    };
    let sent = Instant::now();
    signal.send(&from, Payload::Answer(answer)).await?;
    let round_trip = sent.elapsed();
    let agreed = Agreed {
        role: Role::Listener,
        peer,
        creds,
        nonce: offer.nonce,
        kit,
        peer_udp: usable(&offer.udp),
        peer_tcp: usable(&offer.tcp),
        peer_relayed: usable_relayed(&offer.relayed),
        peer_public: usable_public(&offer.udp),
        peer_mapping: offer.mapping,
        strategies: offer.strategies,
        fire_at: (sent + round_trip / 2 + fire_delay(FIRE_IN, round_trip)).max(Instant::now()),
        signal: None,
    };
    let spray = super::random_probe::spray(&agreed);
    Ok(Rendezvous::new(agreed, spray))
}
