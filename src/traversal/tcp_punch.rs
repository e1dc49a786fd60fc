//! `tcp_punch`: TCP simultaneous open. From the agreed instant both sides connect, again and
//! again, from the kit's TCP port (whose mapping STUN learned; shared with SO_REUSEPORT) to each
//! TCP candidate of the other. Each side's outbound SYN opens its own NAT for the other's; when
//! the SYNs cross, both sockets become one connection. A SYN that arrives while no connect is in
//! flight is accepted by the kit's listener on the same port, which makes a connection too.
//! Works through NATs with endpoint-independent mapping, and where UDP is blocked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::session::Session;
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{Link, LinkError, Transport};

/// How long one connect may wait before the next try (a lost SYN is re-sent by the next try
/// rather than by the kernel's 1 s retransmission).
const TRY_TIMEOUT: Duration = Duration::from_millis(700);
/// Pause after a refused or failed try.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long tries go on.
pub const PUNCH_WINDOW: Duration = Duration::from_secs(8);

pub struct TcpPunch;

impl Strategy for TcpPunch {
    fn name(&self) -> &'static str {
        "tcp_punch"
    }

    fn phase(&self) -> Phase {
        Phase::Punch
    }

    fn signalled(&self) -> bool {
        true
    }

    fn plan(&self, _: &Address, session: Option<&Session>, _: &LocalFacts) -> Vec<Attempt> {
        let Some(session) = session else {
            return Vec::new();
        };
        session
            .peer_tcp
            .iter()
            .map(|&remote| Attempt {
                strategy: self.name(),
                transport: Transport::Tcp,
                remote: Some(remote),
                delay: Duration::ZERO,
            })
            .collect()
    }

    fn run(&self, attempt: Attempt, ctx: Arc<Context>) -> LinkFuture {
        async move {
            let session = ctx.session()?;
            let remote = attempt
                .remote
                .ok_or(LinkError::Protocol("a tcp_punch attempt needs an address"))?;
            // The peer's SYN may arrive as an inbound connection on our port instead.
            tokio::select! {
                link = punch(&session, remote) => link,
                link = session.accept_tcp() => link,
            }
        }
        .boxed()
    }

    fn respond(&self, session: &Arc<Session>) -> Vec<LinkFuture> {
        let mut futures: Vec<LinkFuture> = session
            .peer_tcp
            .iter()
            .map(|&remote| {
                let session = session.clone();
                async move { punch(&session, remote).await }.boxed()
            })
            .collect();
        if !futures.is_empty() {
            let session = session.clone();
            futures.push(async move { session.accept_tcp().await }.boxed());
        }
        futures
    }
}

/// Connects from the kit port to `remote` until a connection forms or the window closes.
async fn punch(session: &Session, remote: SocketAddr) -> Result<Link, LinkError> {
    session.fire().await;
    let deadline = tokio::time::Instant::now() + PUNCH_WINDOW;
    let mut tries = 0u32;
    let last_error = loop {
        tries += 1;
        let socket = crate::net::shared_tcp_socket(session.kit.tcp_port)?;
        let error = match tokio::time::timeout(TRY_TIMEOUT, socket.connect(remote)).await {
            Ok(Ok(tcp)) => {
                tracing::debug!(%remote, tries, "tcp_punch: connected");
                return session.secure_tcp(tcp).await;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            break error;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    Err(LinkError::Lost(format!(
        "{tries} simultaneous-open tries over {}s failed, the last with: {last_error}",
        PUNCH_WINDOW.as_secs()
    )))
}
