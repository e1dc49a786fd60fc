//! The listener's side of UDP forwarding (`listen --forward-udp`): the link's first stream must
//! be a UDP session; each flow the peer sends gets its own UDP socket connected to the target,
//! so the target's replies come back on it and go to the peer under the flow's id. A flow's
//! task reads its replies and ends the flow after the idle time with no datagram either way.
//! Flows are capped per link and per listener ([`MAX_UDP_FLOWS`], [`Forwarder::flow_slots`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::carrier::{Carrier, Ending, Outlet, Received, Sent};
use super::{Counters, Report, UdpError, RECV_BUFFER};
use crate::config::HostPort;
use crate::link::limits::{MAX_UDP_FLOWS, MAX_UDP_FLOWS_TOTAL};
use crate::link::Link;
use crate::timing::{HANDSHAKE_TIMEOUT, RESOLVE_TIMEOUT};

/// What a listener forwards to, shared by its links.
#[derive(Clone, Debug)]
pub struct Forwarder {
    pub target: HostPort,
    /// How long a flow may be idle.
    pub idle: Duration,
    /// Flows over all links ([`MAX_UDP_FLOWS_TOTAL`]).
    flow_slots: Arc<Semaphore>,
}

impl Forwarder {
    pub fn new(target: HostPort, idle: Duration) -> Self {
        Self {
            target,
            idle,
            flow_slots: Arc::new(Semaphore::new(MAX_UDP_FLOWS_TOTAL)),
        }
    }

    /// Serves the UDP session of `link` until the peer closes the link (`Ok`), the link fails,
    /// or `stop` is cancelled (`Ok`; the session is abandoned with the shutdown reason, close
    /// the link with it next).
    pub async fn serve(&self, link: &Link, stop: &CancellationToken) -> Report {
        let started = tokio::select! {
            started = self.start(link) => started,
            () = stop.cancelled() => Ok(None),
        };
        let (carrier, target) = match started {
            Ok(Some(started)) => started,
            Ok(None) => return Report::empty(Ok(())),
            Err(e) => return Report::empty(Err(e)),
        };
        let mut session = Session {
            shared: Arc::new(Shared {
                counters: Counters::default(),
                outlet: carrier.outlet.clone(),
                target,
                idle: self.idle,
                epoch: Instant::now(),
                warned_refused: AtomicBool::new(false),
            }),
            flows: HashMap::new(),
            tasks: JoinSet::new(),
            slots: self.flow_slots.clone(),
            warned_full: false,
        };
        let ended = session.run(link, carrier, stop).await;
        // Dropping the session stops its flows' tasks and closes their sockets.
        let totals = session.shared.counters.totals();
        Report { totals, ended }
    }

    /// The session: its stream, hello, the target resolved, the acknowledgement. `None` when the
    /// peer closed the link before opening one.
    async fn start(&self, link: &Link) -> Result<Option<(Carrier, SocketAddr)>, UdpError> {
        let mut stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, link.accept()).await {
            Err(_) => return Err(UdpError::NoSession),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(stream))) => stream,
        };
        let mode = match Carrier::hello(link, &mut stream).await {
            Ok(mode) => mode,
            Err(e) => {
                Carrier::refuse(stream);
                return Err(e);
            }
        };
        // Resolved once per link: a name that moves is followed from the next link on.
        let target = match resolve(&self.target).await {
            Ok(target) => target,
            Err(e) => {
                Carrier::refuse(stream);
                return Err(e);
            }
        };
        let carrier = Carrier::accept(link, stream, mode).await?;
        tracing::debug!(?mode, %target, "udp session open");
        Ok(Some((carrier, target)))
    }
}

impl Report {
    fn empty(ended: Result<(), UdpError>) -> Self {
        Report {
            totals: Default::default(),
            ended,
        }
    }
}

/// What a session's flow tasks share.
struct Shared {
    counters: Counters,
    outlet: Outlet,
    target: SocketAddr,
    idle: Duration,
    /// Flow activity is kept in milliseconds since this.
    epoch: Instant,
    /// Whether the target refusing datagrams (nothing on its port) was warned about already.
    warned_refused: AtomicBool,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A reply from the target on flow `flow`: to the peer, or counted.
    fn reply(&self, flow: u64, state: &FlowState, payload: &[u8]) {
        // A reply that filled the buffer may have been cut: it is not sent.
        let sent = match payload.len() {
            len if len >= RECV_BUFFER => Sent::TooLarge {
                max: RECV_BUFFER - 1,
            },
            _ => self.outlet.send(flow, payload),
        };
        let max = match sent {
            Sent::Sent => return self.counters.sent(payload.len()),
            Sent::TooLarge { max } => max,
            Sent::Full => return Counters::add(&self.counters.dropped),
            Sent::Closed => return,
        };
        Counters::add(&self.counters.oversized);
        if !state.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                flow,
                "a {}-byte UDP reply from {} does not fit the link (at most {max} bytes now): \
                 dropped whole, never truncated; more on this flow are only counted",
                payload.len(),
                self.target
            );
        }
    }

    /// A datagram to the target failed, or its ICMP error came back.
    fn target_failed(&self, flow: u64, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            if !self.warned_refused.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "nothing takes UDP datagrams at {} (the port is closed)",
                    self.target
                );
            }
        } else {
            tracing::debug!(flow, "udp to {}: {e}", self.target);
        }
    }
}

/// A flow's activity, shared by the session (datagrams to the target) and the flow's task
/// (replies, idleness).
struct FlowState {
    /// The last datagram either way, in milliseconds since [`Shared::epoch`]; [`CLOSED`] once
    /// the task ended the flow.
    last: AtomicU64,
    /// Whether the flow was warned about an oversized reply already.
    warned: AtomicBool,
}

const CLOSED: u64 = u64::MAX;

impl FlowState {
    fn new(now: u64) -> Self {
        Self {
            last: AtomicU64::new(now),
            warned: AtomicBool::new(false),
        }
    }

    /// Records activity at `now`; `false` when the flow has ended.
    fn touch(&self, now: u64) -> bool {
        self.last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                (last != CLOSED).then_some(now.max(last))
            })
            .is_ok()
    }

    /// Ends the flow if nothing happened since `seen`.
    fn close_if(&self, seen: u64) -> bool {
        self.last
            .compare_exchange(seen, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn close(&self) {
        self.last.store(CLOSED, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.last.load(Ordering::Acquire) == CLOSED
    }
}

/// One flow: its socket to the target, its state, its place under the listener's cap.
struct Flow {
    socket: Arc<UdpSocket>,
    state: Arc<FlowState>,
    _slot: OwnedSemaphorePermit,
}

/// One link's UDP session.
struct Session {
    shared: Arc<Shared>,
    flows: HashMap<u64, Flow>,
    /// The flows' tasks, each ending with its flow's id.
    tasks: JoinSet<u64>,
    slots: Arc<Semaphore>,
    /// Whether a full flow table was warned about already.
    warned_full: bool,
}

impl Session {
    async fn run(
        &mut self,
        link: &Link,
        mut carrier: Carrier,
        stop: &CancellationToken,
    ) -> Result<(), UdpError> {
        let ended = self.serve(link, &mut carrier, stop).await;
        self.shared.counters.settle(&carrier);
        ended
    }

    async fn serve(
        &mut self,
        link: &Link,
        carrier: &mut Carrier,
        stop: &CancellationToken,
    ) -> Result<(), UdpError> {
        loop {
            tokio::select! {
                got = carrier.recv() => match got {
                    Received::Datagram(flow, payload) => self.inbound(flow, &payload),
                    Received::Malformed => Counters::add(&self.shared.counters.dropped),
                    Received::Ended(Ending::PeerClosed(why)) => {
                        tracing::debug!("udp session ended by the peer: {why}");
                        return Ok(());
                    }
                    Received::Ended(Ending::Lost(why)) => return Err(UdpError::Ended(why)),
                },
                Some(done) = self.tasks.join_next() => {
                    if let Ok(flow) = done {
                        self.ended(flow);
                    }
                }
                next = link.accept() => match next {
                    // One session per link: anything else the peer opens is turned away.
                    Ok(Some(extra)) => {
                        tracing::debug!("a second stream on a UDP forwarding link: refused");
                        Carrier::refuse(extra);
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e.into()),
                },
                () = stop.cancelled() => {
                    carrier.shutdown().await;
                    return Ok(());
                }
            }
        }
    }

    /// A datagram from the peer: to the target on its flow's socket, the flow opened if need be.
    fn inbound(&mut self, id: u64, payload: &[u8]) {
        self.shared.counters.received(payload.len());
        let now = self.shared.now_ms();
        if !self.flows.get(&id).is_some_and(|f| f.state.touch(now)) {
            // Unknown, or ended just now by its task: a new flow (and socket) for the id.
            self.flows.remove(&id);
            if !self.open(id, now) {
                return;
            }
        }
        let Some(flow) = self.flows.get(&id) else {
            return;
        };
        match send_now(&flow.socket, payload) {
            Ok(_) => {}
            Err(e) => {
                Counters::add(&self.shared.counters.dropped);
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    self.shared.target_failed(id, &e);
                }
            }
        }
    }

    /// Opens flow `id`: a socket connected to the target and a task for its replies.
    fn open(&mut self, id: u64, now: u64) -> bool {
        let counters = &self.shared.counters;
        let slot = if self.flows.len() < MAX_UDP_FLOWS {
            self.slots.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let Some(slot) = slot else {
            Counters::add(&counters.refused);
            if !std::mem::replace(&mut self.warned_full, true) {
                tracing::warn!(
                    "UDP flows at their cap ({MAX_UDP_FLOWS} for one peer, \
                     {MAX_UDP_FLOWS_TOTAL} in all): datagrams of new flows are dropped until \
                     a flow has been idle for {} s",
                    self.shared.idle.as_secs()
                );
            }
            return false;
        };
        let socket = match connected_socket(self.shared.target) {
            Ok(socket) => Arc::new(socket),
            Err(e) => {
                Counters::add(&counters.dropped);
                tracing::warn!("cannot open a UDP socket to {}: {e}", self.shared.target);
                return false;
            }
        };
        let state = Arc::new(FlowState::new(now));
        self.tasks.spawn(run_flow(
            id,
            socket.clone(),
            state.clone(),
            self.shared.clone(),
        ));
        self.flows.insert(
            id,
            Flow {
                socket,
                state,
                _slot: slot,
            },
        );
        Counters::add(&counters.flows);
        tracing::debug!(flow = id, "udp flow started");
        true
    }

    /// Flow `id`'s task ended: the flow goes, unless a new one took its id meanwhile.
    fn ended(&mut self, id: u64) {
        if self.flows.get(&id).is_some_and(|f| f.state.is_closed()) {
            self.flows.remove(&id);
            tracing::debug!(flow = id, "udp flow idle: closed");
        }
    }
}

/// Sends on a connected UDP socket at once, or fails with `WouldBlock` when its buffer is
/// full. Not tokio's `try_send`: that fails until the reactor has seen the socket writable,
/// which a new flow's socket has not when its first datagram goes out.
pub(super) fn send_now(socket: &UdpSocket, payload: &[u8]) -> std::io::Result<usize> {
    socket2::SockRef::from(socket).send(payload)
}

/// A UDP socket on an ephemeral port, connected to `target` (so only the target's datagrams
/// reach it).
fn connected_socket(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// A flow's task: replies from the target to the peer, until the flow has been idle (no
/// datagram either way) for the idle time. Ends with the flow's id.
async fn run_flow(
    id: u64,
    socket: Arc<UdpSocket>,
    state: Arc<FlowState>,
    shared: Arc<Shared>,
) -> u64 {
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    let idle = tokio::time::sleep(shared.idle);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            got = socket.recv_buf(&mut buf) => {
                match got {
                    Ok(_) => {
                        state.touch(shared.now_ms());
                        shared.reply(id, &state, &buf);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        shared.target_failed(id, &e);
                    }
                    Err(e) => {
                        tracing::debug!(flow = id, "udp flow socket failed: {e}");
                        state.close();
                        return id;
                    }
                }
                buf.clear();
            }
            () = &mut idle => {
                let last = state.last.load(Ordering::Acquire);
                let due = shared.epoch + Duration::from_millis(last) + shared.idle;
                if Instant::now() < due {
                    idle.as_mut().reset(due.into());
                } else if state.close_if(last) {
                    return id;
                }
            }
        }
    }
}

/// The target's address: the first IPv4 one a name resolves to, else its first. UDP cannot try
/// one address after another as a TCP connect does (nothing says a datagram was not taken), and
/// UDP services on loopback mostly listen on IPv4 (`localhost` resolves to `::1` first).
async fn resolve(target: &HostPort) -> Result<SocketAddr, UdpError> {
    let failed = |why: String| UdpError::Resolve(format!("{target}: {why}"));
    let found = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| failed("no answer in time".into()))?
    .map_err(|e| failed(e.to_string()))?;
    let found: Vec<SocketAddr> = found.collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| failed("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_ends_only_when_idle_since_it_last_looked_and_stays_ended() {
        let state = FlowState::new(10);
        // The task looked at 10; a datagram came at 20: not idle, not ended.
        assert!(state.touch(20));
        assert!(!state.close_if(10));
        assert!(!state.is_closed());
        assert!(state.close_if(20));
        assert!(state.is_closed());
        // A datagram after the end finds the flow gone (the session opens a new one).
        assert!(!state.touch(30));
        assert!(state.is_closed());
        // Activity never moves backwards.
        let state = FlowState::new(50);
        assert!(state.touch(40));
        assert!(state.close_if(50));
    }
}
