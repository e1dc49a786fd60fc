//! `reverse`: the listener dials the connector. Works when the connector is the reachable one
//! (a public host, a full-cone NAT, a forwarded port) and the listener is not. The connector
//! waits on its kit (TCP port and QUIC endpoint); the listener connects to every candidate the
//! offer carried, over TCP and QUIC, from the agreed instant. Roles inside the link stay as they
//! are: the connector is the TLS client and opens the streams, whoever dialled.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::rendezvous::Rendezvous;
use super::{Attempt, Context, LinkFuture, LocalFacts, Phase, Strategy};
use crate::addr::Address;
use crate::link::{LinkError, Transport};
use crate::timing::CONNECT_TIMEOUT;

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
    fn plan(&self, _: &Address, rendezvous: Option<&Rendezvous>, _: &LocalFacts) -> Vec<Attempt> {
        if rendezvous.is_none() {
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
            let rendezvous = ctx.rendezvous()?;
            match attempt.transport {
                Transport::Tcp => rendezvous.accept_tcp().await,
                Transport::Quic => rendezvous.accept_quic(crate::link::Path::Direct).await,
            }
        }
        .boxed()
    }

    fn respond(&self, rendezvous: &Arc<Rendezvous>) -> Vec<LinkFuture> {
        let tcp = rendezvous.peer_tcp.iter().map(|&remote| {
            let rendezvous = rendezvous.clone();
            async move {
                rendezvous.fire().await;
                let tcp =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(remote))
                        .await
                        .map_err(|_| LinkError::Timeout("TCP connect"))??;
                rendezvous.secure_tcp(tcp).await
            }
            .boxed()
        });
        let quic = rendezvous.peer_udp.iter().map(|&remote| {
            let rendezvous = rendezvous.clone();
            async move {
                rendezvous.fire().await;
                rendezvous.dial_quic(remote).await
            }
            .boxed()
        });
        tcp.chain(quic).collect()
    }
}
