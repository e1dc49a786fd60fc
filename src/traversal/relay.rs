//! `relay`: QUIC through a TURN relay, the last resort that always gets through. Either side's
//! relay is enough: each offers its relayed address, and the probing ([`super::probing`]) finds
//! a path through one of them (our socket to the peer's relay, or our relay to the peer). The
//! connector dials the path heard first; the listener accepts what arrives through a relay.
//!
//! The relayed link is tried [`RELAY_GRACE`] after the punch fires, so a direct link that is
//! about to come up wins, and at once when both sides' mappings depend on the destination
//! (symmetric NATs: no punch will get through). Once made, the link is handed to
//! [`super::upgrade`], which moves it onto a direct path when one opens.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::probing::{Heard, Side};
use super::rendezvous::{Rendezvous, Role};
use super::{upgrade, Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{Link, LinkError, Path, Transport};
use crate::timing::RELAY_GRACE;

pub struct Relay;

impl Strategy for Relay {
    fn name(&self) -> &'static str {
        "relay"
    }

    fn phase(&self) -> Phase {
        Phase::Relay
    }

    fn signalled(&self) -> bool {
        true
    }

    fn plan(&self, _: &Address, rendezvous: Option<&Rendezvous>, _: &LocalFacts) -> Vec<Attempt> {
        let Some(r) = rendezvous else {
            return Vec::new();
        };
        // A relay that failed is still planned: its attempt reports why.
        let any = r.kit.socket.relay.is_some()
            || !r.peer_relayed.is_empty()
            || r.kit.relay_error.is_some();
        if !any {
            return Vec::new();
        }
        let hopeless = r.kit.mapping.varies() && r.peer_mapping.varies();
        let grace = if hopeless {
            Duration::ZERO
        } else {
            RELAY_GRACE
        };
        vec![Attempt {
            strategy: self.name(),
            transport: Transport::Quic,
            remote: None,
            delay: r.fire_at.saturating_duration_since(Instant::now()) + grace,
        }]
    }

    fn run(&self, _: Attempt, ctx: Arc<Context>) -> LinkFuture {
        async move { through_relay(ctx.rendezvous()?).await }.boxed()
    }

    fn respond(&self, rendezvous: &Arc<Rendezvous>) -> Vec<LinkFuture> {
        if rendezvous.kit.socket.relay.is_none() && rendezvous.peer_relayed.is_empty() {
            return Vec::new();
        }
        vec![through_relay(rendezvous.clone()).boxed()]
    }
}

/// The connector dials the first relayed path heard; the listener accepts one.
async fn through_relay(rendezvous: Arc<Rendezvous>) -> Result<Link, LinkError> {
    if rendezvous.kit.socket.relay.is_none() && rendezvous.peer_relayed.is_empty() {
        let why = match &rendezvous.kit.relay_error {
            Some(e) => e.to_string(),
            None => "neither side has a TURN relay".into(),
        };
        return Err(LinkError::Relay(why));
    }
    let probing = rendezvous
        .probing
        .clone()
        .ok_or(LinkError::Protocol("no probing for this rendezvous"))?;
    let (link, heard) = match rendezvous.role {
        Role::Connector => {
            let heard = probing
                .first(|h| h.relayed)
                .await
                .ok_or(LinkError::Protocol("probing stopped"))?;
            bind_channel(&rendezvous, &heard).await;
            tracing::debug!(remote = %heard.from, side = ?heard.side, "relay: dialling through the relay");
            (rendezvous.dial_quic(heard.quic_addr).await?, heard)
        }
        Role::Listener => {
            let link = rendezvous.accept_quic(Path::Relayed).await?;
            let remote = link.info().remote;
            let heard = probing
                .heard()
                .borrow()
                .iter()
                .find(|h| h.relayed && h.quic_addr == remote)
                .copied()
                .unwrap_or(Heard {
                    from: remote,
                    side: Side::Socket,
                    confirmed: false,
                    relayed: true,
                    quic_addr: remote,
                });
            bind_channel(&rendezvous, &heard).await;
            (link, heard)
        }
    };
    Ok(upgrade::relayed(link, &rendezvous, heard))
}

/// Binds a TURN channel to the peer when the path runs through our relay: data then travels
/// with 4 bytes of framing instead of a Send indication's 36. Best effort: without it the
/// relay still carries the data.
async fn bind_channel(rendezvous: &Rendezvous, heard: &Heard) {
    if heard.side != Side::Relay {
        return;
    }
    if let Some(relay) = &rendezvous.kit.socket.relay {
        if let Err(e) = relay.allocation.bind_channel(heard.from).await {
            tracing::debug!(peer = %heard.from, "TURN channel not bound: {e}");
        }
    }
}
