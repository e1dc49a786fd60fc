//! The inbound side: TCP and UDP sockets on one port, both families, accepting TLS and QUIC
//! links concurrently. Each inbound handshake runs in its own task so a slow or hostile client
//! cannot hold up others; a link is handed out only once the connector has verified and
//! selected it. Dropping the [`Listener`] stops every task it started.
//!
//! Strangers cannot exhaust it ([`super::limits`]): connections beyond the handshake caps
//! (global, per source) are closed at once, not queued; QUIC clients are asked to prove their
//! address with a Retry once handshakes pile up; links beyond [`MAX_LINKS`], or that the driver
//! does not take within [`HANDOFF_TIMEOUT`], are turned away with [`CloseReason::Busy`] before
//! the connector opens a stream on them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use super::limits::{Admission, AdmissionSlot, MAX_LINKS, RETRY_ABOVE};
use super::{pin, quic, tls, CloseReason, Link, LinkError, Selected};
use crate::identity::Allowed;
use crate::net;
use crate::timing::{HANDOFF_TIMEOUT, HANDSHAKE_TIMEOUT, QUIC_CLOSE_LINGER};

/// The method of links dialled straight to the listening port.
const DIRECT: &str = "direct";
/// How often to retry finding a port free for both TCP and UDP when the port is chosen by the OS.
const PORT_PICK_TRIES: usize = 20;

pub struct Listener {
    port: u16,
    incoming: mpsc::Receiver<Offer>,
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
        allowed: Option<Vec<Allowed>>,
    ) -> Result<Self, ListenError> {
        let sockets = bind(port)?;
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(pin::server_config(creds, allowed.clone())?));
        let server_config = quic::listener_config(creds, allowed)?;
        let (tx, incoming) = mpsc::channel(MAX_LINKS);
        let inbound = Inbound {
            tx,
            links: Arc::new(Semaphore::new(MAX_LINKS)),
            note: Arc::default(),
        };
        let gate = Admission::listener();
        let mut tasks = JoinSet::new();
        let mut endpoints = Vec::new();
        for listener in sockets.tcp {
            tasks.spawn(accept_tcp(
                listener,
                acceptor.clone(),
                inbound.clone(),
                gate.clone(),
            ));
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
            tasks.spawn(accept_quic(endpoint, inbound.clone(), gate.clone()));
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

    /// The next verified, selected inbound link, and the strategy that made it. Cancel-safe:
    /// a link is taken only when this returns it.
    pub async fn accept(&mut self) -> Option<(Link, &'static str)> {
        loop {
            let offer = self.incoming.recv().await?;
            let Some(pending) = take(&offer) else {
                // Its admitter gave up waiting and turned it away.
                continue;
            };
            // Taken: its window opens before the connector learns (from the admitter, which
            // confirms the selection) that it may send. An admitter that is gone (its session
            // ended) leaves a link the connector will not use.
            pending.link.widen();
            if pending.taken.send(()).is_ok() {
                pending.link.mark_selected();
                return Some((pending.link, pending.method));
            }
        }
    }

    /// Where links made elsewhere (by signalled strategies) join the accept queue.
    pub fn inbound(&self) -> Inbound {
        self.inbound.clone()
    }

    /// The note every selection that came with a note of its own is acknowledged with from
    /// now on (see [`super`]'s module doc; at most [`super::MAX_NOTE`] bytes), on links made
    /// here and by signalled strategies alike.
    pub fn set_note(&self, note: Vec<u8>) {
        *self.inbound.note.lock().unwrap_or_else(|e| e.into_inner()) = note;
    }

    /// Stops accepting, closes for `reason` the links still waiting to be accepted and every
    /// QUIC connection on the port, and lets the close notices go out (bounded).
    pub async fn shutdown(mut self, reason: CloseReason) {
        drop(self.tasks);
        self.incoming.close();
        let mut waiting = Vec::new();
        while let Ok(offer) = self.incoming.try_recv() {
            if let Some(pending) = take(&offer) {
                waiting.push(pending.link.close_with(reason));
            }
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

/// A selected link waiting for the driver's [`Listener::accept`], and the word that tells its
/// admitter it was taken.
struct Pending {
    link: Link,
    method: &'static str,
    taken: oneshot::Sender<()>,
}

/// A link on offer: the driver takes it out, or its admitter takes it back when the driver is
/// too slow; whoever comes first.
type Offer = Arc<Mutex<Option<Pending>>>;

fn take(offer: &Offer) -> Option<Pending> {
    offer.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Takes an offer back when its admitter stops (its task dropped): the link goes with it rather
/// than waiting in the queue for a driver that may never come.
struct Withdraw(Offer);

impl Drop for Withdraw {
    fn drop(&mut self) {
        drop(take(&self.0));
    }
}

/// Hands links to a [`Listener`]'s accept queue once the connector verified and selected them.
#[derive(Clone)]
pub struct Inbound {
    tx: mpsc::Sender<Offer>,
    /// Links handed out or on offer ([`MAX_LINKS`]); each holds a permit until it is dropped.
    links: Arc<Semaphore>,
    /// What the selection is acknowledged with ([`Listener::set_note`]).
    note: Arc<Mutex<Vec<u8>>>,
}

impl Inbound {
    /// Runs a link through its handshake (bounded), verification and selection, and hands it
    /// on if the connector chose it. Returns whether it did.
    pub async fn admit(
        &self,
        link: impl std::future::Future<Output = Result<Link, LinkError>>,
        method: &'static str,
    ) -> bool {
        self.admit_counted(link, method, None).await
    }

    /// [`Inbound::admit`] for a connection counted by the listener's [`Admission`] until the
    /// connector selected it.
    async fn admit_counted(
        &self,
        link: impl std::future::Future<Output = Result<Link, LinkError>>,
        method: &'static str,
        slot: Option<AdmissionSlot>,
    ) -> bool {
        let mut link = match tokio::time::timeout(HANDSHAKE_TIMEOUT, link).await {
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
        let selected = match link.answer().await {
            Ok(mut selected) => {
                link.set_peer_note(selected.take_note());
                selected
            }
            Err(e) => {
                tracing::debug!(method, %from, %peer, "inbound link not selected: {e}");
                return false;
            }
        };
        // Selected: from here on the link counts against the cap on links instead.
        drop(slot);
        match self.links.clone().try_acquire_owned() {
            Ok(permit) => link.hold(permit),
            Err(_) => {
                tracing::info!(%from, %peer, "turned a peer away: {MAX_LINKS} links already");
                turn_away(link, selected).await;
                return false;
            }
        }
        self.hand_over(link, method, selected).await
    }

    /// Offers the link to the driver for [`HANDOFF_TIMEOUT`]; confirms the selection to the
    /// connector once it was taken, or turns the link away.
    async fn hand_over(&self, link: Link, method: &'static str, selected: Selected) -> bool {
        let (peer, from) = (link.info().peer.id(), link.info().remote);
        // Our note answers the connector's: one that sent none (older than notes, or with
        // nothing to say) gets none, and reads the acknowledgement it always read.
        let answers = !link.peer_note().is_empty();
        let (taken_tx, mut taken) = oneshot::channel();
        let offer = Withdraw(Arc::new(Mutex::new(Some(Pending {
            link,
            method,
            taken: taken_tx,
        }))));
        let handed = async {
            self.tx.send(offer.0.clone()).await.ok()?;
            (&mut taken).await.ok()
        };
        // Ok(None): the listener is gone (or shut down and closed the link itself).
        let outcome = tokio::time::timeout(HANDOFF_TIMEOUT, handed).await;
        // Whatever happened, the link is either with the driver or still here. (`taken` is
        // still open: a driver taking it at this very moment still gets it.)
        match take(&offer.0) {
            None if !matches!(outcome, Ok(None)) => {
                let note = match answers {
                    true => self.note.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    false => Vec::new(),
                };
                if let Err(e) = selected.confirm(&note).await {
                    tracing::debug!(%from, %peer, "could not confirm the selection: {e}");
                }
                true
            }
            None => false,
            Some(pending) if outcome.is_err() => {
                tracing::info!(%from, %peer, "turned a peer away: no new link taken in {HANDOFF_TIMEOUT:?}");
                turn_away(pending.link, selected).await;
                false
            }
            // The listener is gone.
            Some(pending) => {
                selected.refuse(CloseReason::Shutdown);
                pending.link.close_with(CloseReason::Shutdown).await;
                false
            }
        }
    }
}

/// Tells the connector this listener is busy, on the control stream and in the close.
async fn turn_away(link: Link, selected: Selected) {
    selected.refuse(CloseReason::Busy);
    link.close_with(CloseReason::Busy).await;
}

/// Closes a connection refused by the handshake caps at once, with a reset: the client learns
/// now, and no TIME_WAIT is left behind on this side.
fn refuse_tcp(tcp: tokio::net::TcpStream, from: std::net::SocketAddr) {
    tracing::debug!(%from, "too many handshakes: connection refused");
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    inbound: Inbound,
    gate: Admission,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => {
                    let Some(slot) = gate.try_admit(from.ip()) else {
                        refuse_tcp(tcp, from);
                        continue;
                    };
                    let (acceptor, inbound) = (acceptor.clone(), inbound.clone());
                    handshakes.spawn(async move {
                        let link = tls::accept(tcp, &acceptor);
                        inbound.admit_counted(link, DIRECT, Some(slot)).await;
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

/// What becomes of a QUIC client's first packet.
#[derive(Debug)]
enum QuicAdmission {
    /// Ask it to prove its address first: a Retry, no state kept.
    Retry,
    /// Tell it no, at once.
    Refuse,
    /// Start the handshake, counted by this slot.
    Accept(AdmissionSlot),
}

/// Decides for a client from `ip` that `may_retry` (its address is not validated yet): once
/// [`RETRY_ABOVE`] handshakes are going, such clients prove their address first, so forged and
/// blind sources cost one stateless packet each; validated ones are admitted within the caps.
fn quic_admission(gate: &Admission, ip: IpAddr, may_retry: bool) -> QuicAdmission {
    if may_retry && gate.in_flight() >= RETRY_ABOVE {
        return QuicAdmission::Retry;
    }
    match gate.try_admit(ip) {
        Some(slot) => QuicAdmission::Accept(slot),
        None => QuicAdmission::Refuse,
    }
}

async fn accept_quic(endpoint: quinn::Endpoint, inbound: Inbound, gate: Admission) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let from = incoming.remote_address();
                    match quic_admission(&gate, from.ip(), incoming.may_retry()) {
                        QuicAdmission::Retry => {
                            if let Err(e) = incoming.retry() {
                                e.into_incoming().ignore();
                            }
                        }
                        QuicAdmission::Accept(slot) => {
                            let (endpoint, inbound) = (endpoint.clone(), inbound.clone());
                            handshakes.spawn(async move {
                                let link = quic::accept(incoming, endpoint);
                                inbound.admit_counted(link, DIRECT, Some(slot)).await;
                            });
                        }
                        QuicAdmission::Refuse => {
                            tracing::debug!(%from, "too many handshakes: QUIC connection refused");
                            incoming.refuse();
                        }
                    }
                }
                None => return,
            },
            Some(_) = handshakes.join_next() => {}
        }
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
