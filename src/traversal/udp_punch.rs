//! `udp_punch`: UDP hole punching. From the agreed instant both sides send STUN-shaped probes
//! (binding requests carrying the rendezvous token) from the kit socket whose mapping they learned,
//! to every candidate of the other; each answers the other's probes ([`super::probing`]).
//! Outbound probes open each side's NAT for the other; the first probe or answer that arrives
//! names an address the peer is reachable at, even one neither side announced (a peer-reflexive
//! source). The connector then runs QUIC on the same socket to that address and the listener's
//! kit endpoint accepts it; the probes go on answering meanwhile, and QUIC keep-alives hold the
//! mapping afterwards.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::probing::Side;
use super::rendezvous::{Rendezvous, Role};
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{Link, LinkError, Path, Transport};

pub struct UdpPunch;

impl Strategy for UdpPunch {
    fn name(&self) -> &'static str {
        "udp_punch"
    }

    fn phase(&self) -> Phase {
        Phase::Punch
    }

    fn signalled(&self) -> bool {
        true
    }

    fn plan(&self, _: &Address, rendezvous: Option<&Rendezvous>, _: &LocalFacts) -> Vec<Attempt> {
        match rendezvous {
            Some(s) if !s.peer_udp.is_empty() => vec![Attempt {
                strategy: self.name(),
                transport: Transport::Quic,
                remote: None,
                delay: Duration::ZERO,
            }],
            _ => Vec::new(),
        }
    }

    fn run(&self, _: Attempt, ctx: Arc<Context>) -> LinkFuture {
        async move { punch(ctx.rendezvous()?).await }.boxed()
    }

    fn respond(&self, rendezvous: &Arc<Rendezvous>) -> Vec<LinkFuture> {
        if rendezvous.peer_udp.is_empty() {
            return Vec::new();
        }
        vec![punch(rendezvous.clone()).boxed()]
    }
}

/// Waits until the probing hears the peer straight on the kit's socket, then makes the QUIC
/// link through that hole: the connector dials the address it was heard from, the listener
/// accepts on its kit endpoint what arrives outside the relay.
async fn punch(rendezvous: Arc<Rendezvous>) -> Result<Link, LinkError> {
    let probing = rendezvous
        .probing
        .clone()
        .ok_or(LinkError::Protocol("no probing for this rendezvous"))?;
    match rendezvous.role {
        Role::Connector => {
            let heard = probing
                .first(|h| h.side == Side::Socket && !h.relayed)
                .await
                .ok_or(LinkError::Protocol("probing stopped"))?;
            tracing::debug!(remote = %heard.from, "udp_punch: heard the peer; starting QUIC");
            rendezvous.dial_quic(heard.from).await
        }
        Role::Listener => rendezvous.accept_quic(Path::Direct).await,
    }
}
