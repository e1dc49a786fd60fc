//! `tcp_punch`: TCP simultaneous open. From the agreed instant both sides connect, again and
//! again, from the kit's TCP port (whose mapping STUN learned; shared with SO_REUSEPORT) to each
//! TCP candidate of the other. Each side's outbound SYN opens its own NAT for the other's; when
//! the SYNs cross, both sockets become one connection. A SYN that arrives while no connect is in
//! flight is accepted by the kit's listener on the same port, which makes a connection too.
//! Works through NATs with endpoint-independent mapping, and where UDP is blocked.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::OptionFuture;
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::punch::tcp::{Action, Dialer, Event};
use super::rendezvous::Rendezvous;
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{Link, LinkError, Transport};
use crate::timing::PUNCH_WINDOW;

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

    fn plan(&self, _: &Address, rendezvous: Option<&Rendezvous>, _: &LocalFacts) -> Vec<Attempt> {
        let Some(rendezvous) = rendezvous else {
            return Vec::new();
        };
        rendezvous
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
            let rendezvous = ctx.rendezvous()?;
            let remote = attempt
                .remote
                .ok_or(LinkError::Protocol("a tcp_punch attempt needs an address"))?;
            // The peer's SYN may arrive as an inbound connection on our port instead.
            tokio::select! {
                link = punch(&rendezvous, remote) => link,
                link = rendezvous.accept_tcp() => link,
            }
        }
        .boxed()
    }

    fn respond(&self, rendezvous: &Arc<Rendezvous>) -> Vec<LinkFuture> {
        let mut futures: Vec<LinkFuture> = rendezvous
            .peer_tcp
            .iter()
            .map(|&remote| {
                let rendezvous = rendezvous.clone();
                async move { punch(&rendezvous, remote).await }.boxed()
            })
            .collect();
        if !futures.is_empty() {
            let rendezvous = rendezvous.clone();
            futures.push(async move { rendezvous.accept_tcp().await }.boxed());
        }
        futures
    }
}

/// A connect in flight.
type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// Drives a [`Dialer`]: connects from the kit port to `remote`, again and again, until a
/// connection forms or the window closes.
async fn punch(rendezvous: &Rendezvous, remote: SocketAddr) -> Result<Link, LinkError> {
    let mut dialer = Dialer::new(rendezvous.fire_at.into_std(), PUNCH_WINDOW);
    let mut connecting: Option<Connecting> = None;
    loop {
        dialer.handle_timeout(Instant::now().into_std());
        while let Some(action) = dialer.poll_action() {
            connecting = match action {
                Action::Connect => {
                    let socket =
                        crate::net::shared_tcp_socket(remote.ip(), rendezvous.kit.tcp_port)?;
                    Some(Box::pin(socket.connect(remote)))
                }
                Action::Abandon => None,
            };
        }
        if let Some(Event::GaveUp(message)) = dialer.poll_event() {
            return Err(LinkError::Lost(message));
        }
        let wake = dialer
            .poll_timeout()
            .ok_or(LinkError::Protocol("tcp_punch stopped without an outcome"))?;
        tokio::select! {
            () = tokio::time::sleep_until(Instant::from_std(wake)) => {}
            Some(result) = OptionFuture::from(connecting.as_mut()) => {
                connecting = None;
                let now = Instant::now().into_std();
                match result {
                    Ok(tcp) => {
                        dialer.handle_connected(now);
                        tracing::debug!(%remote, tries = dialer.tries(), "tcp_punch: connected");
                        return rendezvous.secure_tcp(tcp).await;
                    }
                    Err(e) => dialer.handle_failed(now, &e.to_string()),
                }
            }
        }
    }
}
