//! `udp_punch`: UDP hole punching. From the agreed instant both sides send STUN-shaped probes
//! (binding requests carrying the rendezvous token) from the kit socket whose mapping they learned,
//! to every candidate of the other; each answers the other's probes. Outbound probes open each
//! side's NAT for the other; the first probe or answer that arrives names an address the peer is
//! reachable at, even one neither side announced (a peer-reflexive source). The connector then
//! runs QUIC on the same socket to that address and the listener's kit endpoint accepts it; the
//! probes go on answering meanwhile, and QUIC keep-alives hold the mapping afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::punch::udp::{Event, Prober};
use super::rendezvous::{Rendezvous, Role};
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{Link, LinkError, Transport};
use crate::timing::PUNCH_WINDOW;

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

/// Probes until the hole is open, then makes the QUIC link through it: the connector dials
/// the first address the peer was heard from, the listener accepts on its kit endpoint.
async fn punch(rendezvous: Arc<Rendezvous>) -> Result<Link, LinkError> {
    let (heard_tx, mut heard) = watch::channel(None);
    let probing = probe(&rendezvous, heard_tx);
    tokio::pin!(probing);
    let link = async {
        match rendezvous.role {
            Role::Connector => {
                let remote = loop {
                    if let Some(addr) = *heard.borrow_and_update() {
                        break addr;
                    }
                    heard
                        .changed()
                        .await
                        .map_err(|_| LinkError::Protocol("probing stopped"))?;
                };
                tracing::debug!(%remote, "udp_punch: heard the peer; starting QUIC");
                rendezvous.dial_quic(remote).await
            }
            Role::Listener => rendezvous.accept_quic().await,
        }
    };
    tokio::select! {
        result = link => result,
        failed = &mut probing => Err(failed),
    }
}

/// Drives a [`Prober`] over the kit's STUN side: probes every peer candidate from the agreed
/// instant for [`PUNCH_WINDOW`], answers the peer's probes throughout, and publishes on `heard`
/// the first address the peer's probes or answers came from. Returns only on a socket failure.
async fn probe(rendezvous: &Rendezvous, heard: watch::Sender<Option<SocketAddr>>) -> LinkError {
    let mut stun = rendezvous.kit.stun.lock().await;
    let mut prober = Prober::new(
        rendezvous.role.token(&rendezvous.nonce),
        rendezvous.role.other().token(&rendezvous.nonce),
        rendezvous.peer_udp.clone(),
        rendezvous.fire_at.into_std(),
        PUNCH_WINDOW,
    );
    // What arrives before the agreed instant waits in the socket's queue until then.
    rendezvous.fire().await;
    loop {
        prober.handle_timeout(Instant::now().into_std());
        while let Some(t) = prober.poll_transmit() {
            if let Err(e) = stun.send(t.to, &t.bytes) {
                tracing::trace!(to = %t.to, "probe not sent: {e}");
            }
        }
        if let Some(Event::Heard(from)) = prober.poll_event() {
            heard.send_replace(Some(from));
        }
        // After the window only answers are left: wait for datagrams alone.
        let wake = prober.poll_timeout().map(Instant::from_std);
        tokio::select! {
            () = sleep_until(wake) => {}
            datagram = stun.incoming.recv() => {
                let Some((data, from)) = datagram else {
                    return LinkError::Protocol("punching socket closed");
                };
                prober.handle_datagram(Instant::now().into_std(), from, &data);
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
