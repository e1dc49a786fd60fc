//! `reverse`: the listener dials the connector. Works when the connector is the reachable one
//! (a public host, a full-cone NAT, a forwarded port) and the listener is not. The connector
//! waits on its kit (TCP port and QUIC endpoint); the listener connects to every candidate the
//! offer carried, over TCP and QUIC, from the agreed instant. Roles inside the link stay as they
//! are: the connector is the TLS client and opens the streams, whoever dialled.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::session::Session;
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{LinkError, Transport};

/// How long the listener's TCP connect to one connector candidate may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Reverse;

impl Strategy for Reverse {
    fn name(&self) -> &'static str {
        "reverse"
    }

    fn phase(&self) -> Phase {
        Phase::Punch
    }

    fn signalled(&self) -> bool {
        true
    }

    /// The connector's side is waiting for the listener: one attempt per transport.
    fn plan(&self, _: &Address, session: Option<&Session>, _: &LocalFacts) -> Vec<Attempt> {
        if session.is_none() {
            return Vec::new();
        }
        [Transport::Tcp, Transport::Quic]
            .into_iter()
            .map(|transport| Attempt {
                strategy: self.name(),
                transport,
                remote: None,
                delay: Duration::ZERO,
            })
            .collect()
    }

    fn run(&self, attempt: Attempt, ctx: Arc<Context>) -> LinkFuture {
        async move {
            let session = ctx.session()?;
            match attempt.transport {
                Transport::Tcp => session.accept_tcp().await,
                Transport::Quic => session.accept_quic().await,
            }
        }
        .boxed()
    }

    fn respond(&self, session: &Arc<Session>) -> Vec<LinkFuture> {
        let tcp = session.peer_tcp.iter().map(|&remote| {
            let session = session.clone();
            async move {
                session.fire().await;
                let tcp =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(remote))
                        .await
                        .map_err(|_| LinkError::Timeout("TCP connect"))??;
                session.secure_tcp(tcp).await
            }
            .boxed()
        });
        let quic = session.peer_udp.iter().map(|&remote| {
            let session = session.clone();
            async move {
                session.fire().await;
                session.dial_quic(remote).await
            }
            .boxed()
        });
        tcp.chain(quic).collect()
    }
}
