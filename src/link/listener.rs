//! The inbound side: TCP and UDP sockets on one port, both families, accepting TLS and QUIC
//! links concurrently. Each inbound handshake runs in its own task so a slow or hostile client
//! cannot hold up others; a link is handed out only once the connector has verified and
//! selected it. Dropping the [`Listener`] stops every task it started.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{pin, quic, tls, CloseReason, Link, LinkError};
use crate::identity::NodeId;
use crate::net;
use crate::timing::{HANDSHAKE_TIMEOUT, QUIC_CLOSE_LINGER};

/// The method of links dialled straight to the listening port.
const DIRECT: &str = "direct";
/// How often to retry finding a port free for both TCP and UDP when the port is chosen by the OS.
const PORT_PICK_TRIES: usize = 20;

pub struct Listener {
    port: u16,
    incoming: mpsc::Receiver<(Link, &'static str)>,
    inbound: Inbound,
    endpoints: Vec<quinn::Endpoint>,
    tasks: JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

struct Sockets {
    tcp: Vec<tokio::net::TcpListener>,
    udp: Vec<std::net::UdpSocket>,
    port: u16,
}

/// Binds TCP and UDP on `port` for IPv4 and (when the machine has it) IPv6. Port 0 lets the OS
/// pick one port that is free for TCP and UDP alike.
fn bind(port: u16) -> Result<Sockets, ListenError> {
    let tries = if port == 0 { PORT_PICK_TRIES } else { 1 };
    let mut last_error = None;
    for _ in 0..tries {
        match bind_once(port) {
            Ok(s) => return Ok(s),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or(ListenError::Bind {
        port,
        source: std::io::ErrorKind::AddrInUse.into(),
    }))
}

fn bind_once(port: u16) -> Result<Sockets, ListenError> {
    let err = |port| move |source| ListenError::Bind { port, source };
    let tcp4 = net::bind_tcp_listener((Ipv4Addr::UNSPECIFIED, port).into()).map_err(err(port))?;
    let port = tcp4.local_addr().map_err(err(port))?.port();
    let udp4 = net::bind_udp((Ipv4Addr::UNSPECIFIED, port).into()).map_err(err(port))?;
    let mut sockets = Sockets {
        tcp: vec![tcp4],
        udp: vec![udp4],
        port,
    };
    // IPv6 is optional: a machine without it still listens on IPv4.
    match (
        net::bind_tcp_listener((Ipv6Addr::UNSPECIFIED, port).into()),
        net::bind_udp((Ipv6Addr::UNSPECIFIED, port).into()),
    ) {
        (Ok(t), Ok(u)) => {
            sockets.tcp.push(t);
            sockets.udp.push(u);
        }
        (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(ListenError::Bind { port, source: e })
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!("no IPv6 listener: {e}"),
    }
    Ok(sockets)
}

impl Listener {
    /// Listens on `port` with the node's credentials; `allowed` restricts which peers get in.
    pub fn bind(
        port: u16,
        creds: &pin::Credentials,
        allowed: Option<Vec<NodeId>>,
    ) -> Result<Self, ListenError> {
        let sockets = bind(port)?;
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(pin::server_config(creds, allowed.clone())?));
        let server_config = quic::server_config(creds, allowed)?;
        let (tx, incoming) = mpsc::channel(16);
        let inbound = Inbound { tx };
        let mut tasks = JoinSet::new();
        let mut endpoints = Vec::new();
        for listener in sockets.tcp {
            tasks.spawn(accept_tcp(listener, acceptor.clone(), inbound.clone()));
        }
        for socket in sockets.udp {
            let endpoint =
                quic::endpoint(socket, Some(server_config.clone())).map_err(|source| {
                    ListenError::Bind {
                        port: sockets.port,
                        source,
                    }
                })?;
            endpoints.push(endpoint.clone());
            tasks.spawn(accept_quic(endpoint, inbound.clone()));
        }
        Ok(Self {
            port: sockets.port,
            incoming,
            inbound,
            endpoints,
            tasks,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next verified, selected inbound link, and the strategy that made it.
    pub async fn accept(&mut self) -> Option<(Link, &'static str)> {
        self.incoming.recv().await
    }

    /// Where links made elsewhere (by signalled strategies) join the accept queue.
    pub fn inbound(&self) -> Inbound {
        self.inbound.clone()
    }

    /// Stops accepting, closes for `reason` the links still waiting to be accepted and every
    /// QUIC connection on the port, and lets the close notices go out (bounded).
    pub async fn shutdown(mut self, reason: CloseReason) {
        drop(self.tasks);
        self.incoming.close();
        let mut waiting = Vec::new();
        while let Ok((link, _)) = self.incoming.try_recv() {
            waiting.push(link.close_with(reason));
        }
        futures_util::future::join_all(waiting).await;
        for endpoint in &self.endpoints {
            endpoint.close(
                quinn::VarInt::from_u32(reason.code()),
                reason.text().as_bytes(),
            );
        }
        let idle = async {
            for endpoint in &self.endpoints {
                endpoint.wait_idle().await;
            }
        };
        let _ = tokio::time::timeout(QUIC_CLOSE_LINGER, idle).await;
    }
}

/// Hands links to a [`Listener`]'s accept queue once the connector verified and selected them.
#[derive(Clone)]
pub struct Inbound {
    tx: mpsc::Sender<(Link, &'static str)>,
}

impl Inbound {
    /// Runs a link through its handshake (bounded), verification and selection, and hands it
    /// on if the connector chose it. Returns whether it did.
    pub async fn admit(
        &self,
        link: impl std::future::Future<Output = Result<Link, LinkError>>,
        method: &'static str,
    ) -> bool {
        let link = match tokio::time::timeout(HANDSHAKE_TIMEOUT, link).await {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                tracing::debug!(method, "inbound link failed: {e}");
                return false;
            }
            Err(_) => {
                tracing::debug!(method, "inbound link timed out");
                return false;
            }
        };
        let (peer, from) = (link.info().peer.id(), link.info().remote);
        match link.answer().await {
            Ok(()) => self.tx.send((link, method)).await.is_ok(),
            Err(e) => {
                tracing::debug!(method, %from, %peer, "inbound link not selected: {e}");
                false
            }
        }
    }
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    inbound: Inbound,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let (acceptor, inbound) = (acceptor.clone(), inbound.clone());
                    handshakes.spawn(async move {
                        inbound.admit(tls::accept(tcp, &acceptor), DIRECT).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(crate::timing::ACCEPT_RETRY_PAUSE).await;
                }
            },
            Some(_) = handshakes.join_next() => {}
        }
    }
}

async fn accept_quic(endpoint: quinn::Endpoint, inbound: Inbound) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let (endpoint, inbound) = (endpoint.clone(), inbound.clone());
                    handshakes.spawn(async move {
                        inbound.admit(quic::accept(incoming, endpoint), DIRECT).await;
                    });
                }
                None => return,
            },
            Some(_) = handshakes.join_next() => {}
        }
    }
}
