//! The task that owns one TURN allocation: feeds the sans-IO client (turn-client-proto) what the
//! server sends, sends what it asks to, wakes it when it wants to refresh, and carries out the
//! [`Allocation`](super::Allocation) handle's commands. Ends when the handle goes (deallocating
//! with one best-effort request), on `close()`, or when the allocation is lost.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use turn_client_proto::api::{
    BindChannelError, CreatePermissionError, TurnClientApi, TurnEvent, TurnPollRet, TurnRecvRet,
};
use turn_client_proto::stun::agent::Transmit;
use turn_client_proto::stun::types::attribute::{ErrorCode, XorMappedAddress};
use turn_client_proto::stun::types::message::{Message, MessageClass, TransactionId};
use turn_client_proto::types::message::{ALLOCATE, REFRESH};
use turn_client_proto::types::TransportType;

use super::io::{Clock, Io};
use super::state::{RelayError, RelayStats};
use crate::timing::{TURN_CLOSE_TIMEOUT, TURN_UDP_SILENCE};

/// Largest message read from the server: a ChannelData of the largest UDP payload.
const RECV_BUFFER: usize = 65_536 + 4;

/// turn-client-proto 0.7 waits this long between two requests (even an authenticated retry
/// right after the server's 401), which would put 50 ms into every allocation, permission and
/// channel binding; a wait this short is skipped by moving the client's clock on.
const REQUEST_CADENCE: Duration = Duration::from_millis(50);

/// Replies to a command that waits for the server.
pub(super) type Reply = oneshot::Sender<Result<(), RelayError>>;

/// What the handle asks of the driver.
pub(super) enum Command {
    Permit(IpAddr, Reply),
    Bind(SocketAddr, Reply),
    Send(SocketAddr, Vec<u8>),
    Close(oneshot::Sender<()>),
    /// The handle was dropped: deallocate (one best-effort request) and end, even while
    /// senders of datagrams are still around.
    Release,
    /// Moves the client's clock forward (tests: refreshes without waiting minutes).
    Skew(Duration),
}

/// A made allocation.
pub(super) struct Ready {
    pub relayed: SocketAddr,
    pub mapped: Option<SocketAddr>,
}

/// One allocation's state beside the sans-IO client.
pub(super) struct Driver<C> {
    pub client: C,
    pub io: Io,
    pub server: SocketAddr,
    pub local: SocketAddr,
    pub commands: mpsc::Receiver<Command>,
    pub incoming: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    pub stats: Arc<RelayStats>,
    pub ready: Option<oneshot::Sender<Result<Ready, RelayError>>>,
    /// A send found the server gone (its host answered that nothing listens).
    pub gone: bool,
}

/// Bookkeeping the loop keeps while it runs.
#[derive(Default)]
struct Pending {
    permits: Vec<(IpAddr, Reply)>,
    binds: Vec<(SocketAddr, Reply)>,
    bound: Vec<SocketAddr>,
    closing: Option<(oneshot::Sender<()>, tokio::time::Instant)>,
    heard: bool,
    mapped: Option<SocketAddr>,
    /// The last error a server response carried: tells wrong credentials from a refusal.
    error: Option<(u16, String)>,
    /// The first 401 to an ALLOCATE (expected: it brings the nonce); a second one to another
    /// request means the credentials are wrong (the client cannot verify it and would only
    /// retransmit).
    first_401: Option<TransactionId>,
    auth_failed: bool,
}

impl<C> Driver<C> {
    /// The same wiring around another TURN client: one per transport, the rest shared.
    pub fn with_client<D>(self, client: D) -> Driver<D> {
        Driver {
            client,
            io: self.io,
            server: self.server,
            local: self.local,
            commands: self.commands,
            incoming: self.incoming,
            stats: self.stats,
            ready: self.ready,
            gone: self.gone,
        }
    }
}

impl<C: TurnClientApi> Driver<C> {
    /// Runs until the allocation is gone; every wait is bounded by the client's own timers,
    /// the UDP silence bound or the close timeout.
    pub async fn run(mut self) {
        let clock_base = std::time::Instant::now();
        let mut clock = Clock {
            base: clock_base,
            skew: Duration::ZERO,
        };
        let silent_until = (self.io.transport() == TransportType::Udp)
            .then(|| tokio::time::Instant::now() + TURN_UDP_SILENCE);
        let mut p = Pending::default();
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let wait = match self.client.poll(clock.now()) {
                TurnPollRet::WaitUntil(at) => {
                    let wait = at.saturating_duration_since(clock.now());
                    if !wait.is_zero() && wait <= REQUEST_CADENCE {
                        // The crate spaces requests REQUEST_CADENCE apart (its retransmissions
                        // wait 500 ms and more): a request is ready, send it now.
                        clock.skew += wait;
                        continue;
                    }
                    clock.real(at)
                }
                TurnPollRet::Closed => break,
                _ => tokio::time::Instant::now() + Duration::from_millis(10),
            };
            if self.flush(&clock).await.is_err() || self.gone {
                break;
            }
            self.events(&mut p);
            if self.ready.is_none() && self.stats.relayed.get().is_none() {
                return; // the allocation failed and was reported
            }
            if self.ready.is_none() && self.client.relayed_addresses().next().is_none() {
                tracing::debug!(server = %self.server, "TURN allocation lost");
                break; // expired: a refresh went unanswered
            }
            let mut wait = wait;
            if let Some(s) = silent_until.filter(|_| !p.heard && self.ready.is_some()) {
                wait = wait.min(s);
            }
            if let Some((_, deadline)) = &p.closing {
                wait = wait.min(*deadline);
            }
            if p.auth_failed {
                if let Some(ready) = self.ready.take() {
                    self.client.protocol_error();
                    let _ = ready.send(Err(RelayError::Auth));
                    return;
                }
            }
            tokio::select! {
                received = self.io.recv(&mut buf) => match received {
                    Ok((n, from)) => self.received(&buf[..n], from, &clock, &mut p),
                    Err(_) if self.io.transport() == TransportType::Tcp => break,
                    // A port unreachable before any answer: nothing listens there.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && !p.heard => {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Err(RelayError::Unreachable(format!("{}: {e}", self.server))));
                            return;
                        }
                    }
                    // After it answered: the server is gone (its host says nothing listens).
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        tracing::debug!(server = %self.server, "TURN server gone: {e}");
                        break;
                    }
                    Err(_) => {}
                },
                command = self.commands.recv(), if p.closing.is_none() => match command {
                    Some(Command::Skew(by)) => clock.skew += by,
                    Some(Command::Release) | None => {
                        // The handle is gone: one best-effort deallocation, no wait.
                        if self.client.delete(clock.now()).is_ok() {
                            let _ = tokio::time::timeout(TURN_CLOSE_TIMEOUT, self.flush(&clock)).await;
                        }
                        break;
                    }
                    Some(command) => self.command(command, &clock, &mut p),
                },
                _ = tokio::time::sleep_until(wait) => {
                    let now = tokio::time::Instant::now();
                    if silent_until.is_some_and(|s| now >= s) && !p.heard {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Err(RelayError::Timeout));
                            return;
                        }
                    }
                    if p.closing.as_ref().is_some_and(|(_, d)| now >= *d) {
                        break;
                    }
                }
            }
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(p.refusal()));
        }
        if let Some((done, _)) = p.closing.take() {
            let _ = done.send(());
        }
    }

    /// Sends everything the client has queued for the server.
    async fn flush(&mut self, clock: &Clock) -> std::io::Result<()> {
        while let Some(t) = self.client.poll_transmit(clock.now()) {
            let data: &[u8] = t.data.as_ref();
            if data.len() >= 2 && data[0] == 0 && data[1] == REFRESH.value() as u8 {
                self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
            }
            self.io.send(data, t.to).await?;
        }
        Ok(())
    }

    /// Handles what the client reports: the allocation, permissions and channels.
    fn events(&mut self, p: &mut Pending) {
        while let Some(event) = self.client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) => {
                    let _ = self.stats.relayed.set(relayed);
                    p.error = None;
                    if let Some(ready) = self.ready.take() {
                        let mapped = p.mapped;
                        let _ = ready.send(Ok(Ready { relayed, mapped }));
                    }
                }
                TurnEvent::AllocationCreateFailed(_) => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(p.refusal()));
                    }
                }
                TurnEvent::PermissionCreated(_, ip) => answer(&mut p.permits, &ip, Ok(())),
                TurnEvent::PermissionCreateFailed(_, ip) => {
                    let e = p.refusal_of("permission");
                    answer(&mut p.permits, &ip, Err(e))
                }
                TurnEvent::ChannelCreated(_, peer) => {
                    p.bound.push(peer);
                    answer(&mut p.binds, &peer, Ok(()));
                }
                TurnEvent::ChannelCreateFailed(_, peer) => {
                    let e = p.refusal_of("channel");
                    answer(&mut p.binds, &peer, Err(e))
                }
                TurnEvent::TcpConnected(_) | TurnEvent::TcpConnectFailed(_) => {}
            }
        }
    }

    /// Bytes from the server: control messages to the client, peer data to the handle.
    fn received(&mut self, data: &[u8], from: SocketAddr, clock: &Clock, p: &mut Pending) {
        if from != self.server {
            return;
        }
        p.heard = true;
        inspect(data, p);
        let transport = self.io.transport();
        let transmit = Transmit::new(data, transport, from, self.local);
        let now = clock.now();
        if let TurnRecvRet::PeerData(d) = self.client.recv(transmit, now) {
            self.deliver(d.peer, d.data().to_vec());
        }
        while let Some(d) = self.client.poll_recv(now) {
            self.deliver(d.peer, d.data().to_vec());
        }
    }

    /// Hands a datagram to the handle; a full queue drops it, as UDP would.
    fn deliver(&self, peer: SocketAddr, data: Vec<u8>) {
        let counter = match self.incoming.try_send((peer, data)) {
            Ok(()) => &self.stats.received,
            Err(_) => &self.stats.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn command(&mut self, command: Command, clock: &Clock, p: &mut Pending) {
        let now = clock.now();
        let udp = TransportType::Udp;
        match command {
            Command::Permit(ip, reply) => {
                if self.client.have_permission(udp, ip) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                match self.client.create_permission(udp, ip, now) {
                    Ok(()) | Err(CreatePermissionError::AlreadyExists) => {
                        p.permits.push((ip, reply))
                    }
                    Err(_) => drop(reply.send(Err(RelayError::Closed))),
                }
            }
            Command::Bind(peer, reply) => {
                if p.bound.contains(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                match self.client.bind_channel(udp, peer, now) {
                    Ok(()) | Err(BindChannelError::AlreadyExists) => p.binds.push((peer, reply)),
                    Err(BindChannelError::NoAllocation) => {
                        drop(reply.send(Err(RelayError::Closed)))
                    }
                    Err(e) => drop(reply.send(Err(RelayError::Refused(0, e.to_string())))),
                }
            }
            Command::Send(peer, data) => {
                let counter = match self.client.send_to(udp, peer, data, now) {
                    Ok(Some(t)) => {
                        let t = t.build();
                        self.queue_send(t.data, t.to);
                        &self.stats.sent
                    }
                    Ok(None) => &self.stats.sent,
                    Err(_) => &self.stats.unsendable,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Command::Close(done) => {
                if self.client.delete(now).is_ok() {
                    p.closing = Some((done, tokio::time::Instant::now() + TURN_CLOSE_TIMEOUT));
                } else {
                    let _ = done.send(());
                }
            }
            Command::Skew(_) | Command::Release => {}
        }
    }

    /// Sends a datagram to the server without waiting: a full UDP buffer or a TCP connection
    /// too far behind drops it (counted), as a full socket buffer would.
    fn queue_send(&mut self, mut data: Vec<u8>, to: SocketAddr) {
        // Over TCP a ChannelData message is padded to a multiple of 4 bytes (RFC 8656 §12.5);
        // turn-client-proto 0.7 leaves that to us, and coturn loses the stream without it.
        let channel = data.first().is_some_and(|b| b & 0xc0 == 0x40);
        if channel {
            self.stats.via_channel.fetch_add(1, Ordering::Relaxed);
            if matches!(self.io, Io::Tcp(_)) {
                data.resize(data.len().next_multiple_of(4), 0);
            }
        }
        let sent = self.io.try_send(&data, to);
        match &sent {
            Ok(true) => {}
            Ok(false) => drop(self.stats.unsendable.fetch_add(1, Ordering::Relaxed)),
            Err(e) => {
                self.stats.unsendable.fetch_add(1, Ordering::Relaxed);
                // UDP: the server's host says nothing listens; TCP: the connection is broken.
                let tcp = matches!(self.io, Io::Tcp(_));
                self.gone |= self.ready.is_none()
                    && (tcp || e.kind() == std::io::ErrorKind::ConnectionRefused);
                tracing::debug!(server = %self.server, gone = self.gone, "TURN send failed: {e}");
            }
        }
    }
}

impl Pending {
    /// Why the allocation failed: a 401 after the client's authenticated retry is wrong
    /// credentials, any other code a refusal, nothing at all a timeout.
    fn refusal(&self) -> RelayError {
        match &self.error {
            Some((401, _)) => RelayError::Auth,
            Some((code, reason)) => RelayError::Refused(*code, reason.clone()),
            None if self.heard => RelayError::Refused(0, "allocation failed".into()),
            None => RelayError::Timeout,
        }
    }

    fn refusal_of(&self, what: &str) -> RelayError {
        match &self.error {
            Some((code, reason)) => RelayError::Refused(*code, reason.clone()),
            None => RelayError::Refused(0, format!("{what} not granted")),
        }
    }
}

/// Answers every waiter for `key`.
fn answer<K: PartialEq>(waiters: &mut Vec<(K, Reply)>, key: &K, result: Result<(), RelayError>) {
    let mut i = 0;
    while i < waiters.len() {
        if waiters[i].0 == *key {
            let (_, reply) = waiters.swap_remove(i);
            let _ = reply.send(result.clone());
        } else {
            i += 1;
        }
    }
}

/// Reads what the client does not report: the error code of a failed request and the mapped
/// address of the allocation. (Over TCP a message split across reads is not seen; only the
/// error's wording suffers.)
fn inspect(data: &[u8], p: &mut Pending) {
    let Ok(msg) = Message::from_bytes(data) else {
        return;
    };
    if msg.has_class(MessageClass::Error) {
        if let Ok(e) = msg.attribute::<ErrorCode>() {
            p.error = Some((e.code(), e.reason().to_string()));
            if e.code() == ErrorCode::UNAUTHORIZED && msg.method() == ALLOCATE {
                let id = msg.transaction_id();
                p.auth_failed |= p.first_401.is_some_and(|first| first != id);
                p.first_401.get_or_insert(id);
            }
        }
    } else if msg.has_class(MessageClass::Success) && msg.method() == ALLOCATE {
        if let Ok(m) = msg.attribute::<XorMappedAddress>() {
            p.mapped = Some(m.addr(msg.transaction_id()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_answered_by_key() {
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let (tx3, mut rx3) = oneshot::channel();
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        let mut waiters = vec![(ip1, tx1), (ip2, tx2), (ip1, tx3)];
        answer(&mut waiters, &ip1, Err(RelayError::Timeout));
        assert_eq!(waiters.len(), 1);
        assert_eq!(rx1.try_recv().unwrap(), Err(RelayError::Timeout));
        assert_eq!(rx3.try_recv().unwrap(), Err(RelayError::Timeout));
        assert!(rx2.try_recv().is_err());
    }

    #[test]
    fn failures_are_told_apart() {
        let mut p = Pending::default();
        assert_eq!(p.refusal(), RelayError::Timeout);
        p.heard = true;
        assert!(matches!(p.refusal(), RelayError::Refused(0, _)));
        p.error = Some((401, "Unauthorized".into()));
        assert_eq!(p.refusal(), RelayError::Auth);
        p.error = Some((508, "Insufficient Capacity".into()));
        assert_eq!(
            p.refusal(),
            RelayError::Refused(508, "Insufficient Capacity".into())
        );
        assert!(!p.auth_failed);
        inspect(b"\x01\x13\x00\x04garbage!", &mut p);
        assert!(!p.auth_failed);
    }
}
