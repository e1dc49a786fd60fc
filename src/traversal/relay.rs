//! `relay`: QUIC through a TURN relay, the last resort that always gets through. Either side's
//! relay is enough: each offers its relayed address, and the probing ([`super::probing`]) finds
//! a path through one of them (our socket to the peer's relay, or our relay to the peer). The
//! connector dials the path heard first; the listener accepts what arrives through a relay.
//!
//! The relayed link is tried [`RELAY_GRACE`] after the punch fires, so a direct link that is
//! about to come up wins, [`RELAY_GRACE_RANDOM_PROBE`] after it when `random_probe` is tried
//! (a symmetric NAT facing an endpoint-independent one), and at once when both sides' mappings
//! depend on the destination (symmetric NATs: no punch will get through). Once made, the link is handed to
//! [`super::upgrade`], which moves it onto a direct path when one opens.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use super::probing::{Heard, Side};
use super::rendezvous::{Rendezvous, Role};
use super::{random_probe, upgrade, Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{Link, LinkError, Path, Transport};
use crate::nat::SocketMapping;
use crate::timing::{RELAY_GRACE, RELAY_GRACE_RANDOM_PROBE};

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
        let grace = grace(
            r.kit.mapping,
            r.peer_mapping,
            random_probe::half_in(r).is_some(),
        );
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

/// How long after the punch fires the relayed link is tried: at once when both sides' mappings
/// depend on the destination (no punch gets through), after [`RELAY_GRACE_RANDOM_PROBE`] when
/// `random_probe` is tried (its hit takes a second or two; the relay wins only when it fails),
/// else after [`RELAY_GRACE`].
fn grace(own: SocketMapping, peer: SocketMapping, random_probe: bool) -> Duration {
    if own.varies() && peer.varies() {
        Duration::ZERO
    } else if random_probe {
        RELAY_GRACE_RANDOM_PROBE
    } else {
        RELAY_GRACE
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

#[cfg(test)]
mod tests {
    use super::*;
    use SocketMapping::{Kept, Random, Sequential, Unknown};

    #[test]
    fn the_relay_waits_for_random_probe_only_where_it_is_tried() {
        assert_eq!(grace(Random, Random, false), Duration::ZERO);
        assert_eq!(grace(Random, Sequential, false), Duration::ZERO);
        assert_eq!(grace(Random, Kept, true), RELAY_GRACE_RANDOM_PROBE);
        assert_eq!(grace(Kept, Random, true), RELAY_GRACE_RANDOM_PROBE);
        // `--via` without random_probe, or facts that do not fit it: the usual grace.
        assert_eq!(grace(Random, Kept, false), RELAY_GRACE);
        assert_eq!(grace(Kept, Kept, false), RELAY_GRACE);
        assert_eq!(grace(Unknown, Random, false), RELAY_GRACE);
    }
}
