//! `udp_punch`: UDP hole punching. From the agreed instant both sides send STUN-shaped probes
//! (binding requests carrying the session token) from the kit socket whose mapping they learned,
//! to every candidate of the other; each answers the other's probes. Outbound probes open each
//! side's NAT for the other; the first probe or answer that arrives names an address the peer is
//! reachable at, even one neither side announced (a peer-reflexive source). The connector then
//! runs QUIC on the same socket to that address and the listener's kit endpoint accepts it; the
//! probes go on answering meanwhile, and QUIC keep-alives hold the mapping afterwards.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;

use super::session::{Role, Session};
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{Link, LinkError, Transport};
use crate::stun::codec::{self, Punch};

/// Gap between rounds of probes (one to each peer candidate).
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How long probes are sent; after it they are only answered.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(8);

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

    fn plan(&self, _: &Address, session: Option<&Session>, _: &LocalFacts) -> Vec<Attempt> {
        match session {
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
        async move { punch(ctx.session()?).await }.boxed()
    }

    fn respond(&self, session: &Arc<Session>) -> Vec<LinkFuture> {
        if session.peer_udp.is_empty() {
            return Vec::new();
        }
        vec![punch(session.clone()).boxed()]
    }
}

/// Probes until the hole is open, then makes the QUIC link through it: the connector dials
/// the first address the peer was heard from, the listener accepts on its kit endpoint.
async fn punch(session: Arc<Session>) -> Result<Link, LinkError> {
    let (heard_tx, mut heard) = watch::channel(None);
    let probing = probe(&session, heard_tx);
    tokio::pin!(probing);
    let link = async {
        match session.role {
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
                session.dial_quic(remote).await
            }
            Role::Listener => session.accept_quic().await,
        }
    };
    tokio::select! {
        result = link => result,
        failed = &mut probing => Err(failed),
    }
}

/// Sends probes to every peer candidate from the agreed instant for [`PUNCH_WINDOW`], answers
/// the peer's probes throughout, and publishes on `heard` the first address the peer's probes
/// or answers came from. Returns only on a socket failure.
async fn probe(session: &Session, heard: watch::Sender<Option<SocketAddr>>) -> LinkError {
    let mut stun = session.kit.stun.lock().await;
    let own_token = session.role.token(&session.nonce);
    let peer_token = session.role.other().token(&session.nonce);
    let mut sent_ids = HashSet::new();
    session.fire().await;
    let stop_sending = tokio::time::Instant::now() + PUNCH_WINDOW;
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    let mut rounds = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick(), if tokio::time::Instant::now() < stop_sending => {
                rounds += 1;
                for &to in &session.peer_udp {
                    let Ok((id, request)) = codec::punch_request(&own_token) else { continue };
                    sent_ids.insert(id);
                    if let Err(e) = stun.send(to, &request) {
                        tracing::trace!(%to, "probe not sent: {e}");
                    }
                }
                if rounds == 1 || rounds % 20 == 0 {
                    tracing::debug!(rounds, peers = session.peer_udp.len(), "udp_punch: probing");
                }
            }
            datagram = stun.incoming.recv() => {
                let Some((data, from)) = datagram else {
                    return LinkError::Protocol("punching socket closed");
                };
                match codec::read_punch(&data) {
                    Some(Punch::Request { token }) if token == peer_token => {
                        if let Ok(response) = codec::punch_response(&data, from) {
                            let _ = stun.send(from, &response);
                        }
                    }
                    Some(Punch::Response { id, .. }) if sent_ids.contains(&id) => {}
                    _ => continue,
                }
                if heard.borrow().is_none() {
                    tracing::debug!(%from, "udp_punch: peer heard");
                    heard.send_replace(Some(from));
                }
            }
        }
    }
}
