//! [`Allocation`]: the handle to one TURN allocation on a configured server. Making it resolves
//! the server, allocates over UDP (or TCP: `?transport=tcp`; or when UDP has not answered within
//! [`TURN_TCP_HEAD_START`] TCP is tried beside it, and the first allocation made is kept) and
//! starts the [driver](super::driver) task that keeps it; every method is a bounded message to
//! that task. [`RelaySender`] hands datagrams over without ever waiting, for a socket's send path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use turn_client_proto::api::TurnConfig;
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::TurnCredentials;
use turn_client_proto::udp::TurnClientUdp;

use super::driver::{Command, Driver, Ready};
use super::io::Io;
use super::state::{RelayError, RelayStats, RelayTransport};
use crate::config::TurnServer;
use crate::timing::{
    TURN_ALLOCATE_TIMEOUT, TURN_CLOSE_TIMEOUT, TURN_REQUEST_TIMEOUT, TURN_TCP_HEAD_START,
};

/// Datagrams queued towards the relay (the sender waits when it is full) and from it (dropped
/// when the reader falls this far behind, as a socket buffer would).
const QUEUE: usize = 1024;

/// One TURN allocation, kept alive until [`Allocation::close`] or drop (which deallocates with
/// one best-effort request).
pub struct Allocation {
    commands: mpsc::Sender<Command>,
    /// Taken by [`Allocation::take_incoming`] when another task reads what peers send.
    incoming: Option<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    transport: RelayTransport,
    stats: Arc<RelayStats>,
    /// Ends by itself once `commands` is dropped (one deallocation request, bounded); aborted
    /// if it is still there after `close`.
    task: Option<JoinHandle<()>>,
}

impl Allocation {
    /// Allocates a UDP relay on `server` within [`TURN_ALLOCATE_TIMEOUT`].
    pub async fn connect(server: &TurnServer) -> Result<Self, RelayError> {
        let deadline = tokio::time::Instant::now() + TURN_ALLOCATE_TIMEOUT;
        let host = (server.server.host.as_str(), server.server.port);
        let addr = match tokio::time::timeout_at(deadline, tokio::net::lookup_host(host)).await {
            Err(_) => return Err(RelayError::Timeout),
            Ok(Err(e)) => return Err(RelayError::Unreachable(format!("{}: {e}", server.server))),
            Ok(Ok(mut addrs)) => addrs
                .next()
                .ok_or_else(|| RelayError::Unreachable(format!("{}: no address", server.server)))?,
        };
        if server.tcp {
            return Self::start(server, addr, RelayTransport::Tcp, deadline).await;
        }
        // UDP first; TCP joins in when UDP is still silent after a head start (UDP may be
        // blocked here), and the first allocation made wins. The loser's driver sees its
        // handle gone and deallocates by itself.
        let udp = Self::start(server, addr, RelayTransport::Udp, deadline);
        let tcp = async {
            tokio::time::sleep(TURN_TCP_HEAD_START).await;
            tracing::debug!(%addr, "no TURN answer over UDP yet, trying TCP too");
            Self::start(server, addr, RelayTransport::Tcp, deadline).await
        };
        tokio::pin!(udp, tcp);
        tokio::select! {
            over_udp = &mut udp => match over_udp {
                // Silence or a port unreachable over UDP: perhaps UDP is blocked, TCP decides.
                Err(RelayError::Timeout | RelayError::Unreachable(_)) => tcp.await,
                other => other,
            },
            over_tcp = &mut tcp => match over_tcp {
                Ok(allocation) => Ok(allocation),
                Err(e) => udp.await.map_err(|_| e),
            },
        }
    }

    /// Connects to `addr` over `transport` and runs the driver until the allocation is made.
    async fn start(
        server: &TurnServer,
        addr: SocketAddr,
        transport: RelayTransport,
        deadline: tokio::time::Instant,
    ) -> Result<Self, RelayError> {
        let unreachable = |e: std::io::Error| RelayError::Unreachable(format!("{addr}: {e}"));
        let io = match transport {
            RelayTransport::Udp => {
                let any: SocketAddr = match addr {
                    SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let socket = UdpSocket::bind(any).await.map_err(unreachable)?;
                // Connected: the local address is the one the server sees from us.
                socket.connect(addr).await.map_err(unreachable)?;
                Io::Udp(socket)
            }
            RelayTransport::Tcp => {
                match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                    Err(_) => return Err(RelayError::Timeout),
                    Ok(Err(e)) => return Err(unreachable(e)),
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        Io::Tcp(super::io::Tcp::new(stream))
                    }
                }
            }
        };
        let local = match &io {
            Io::Udp(s) => s.local_addr(),
            Io::Tcp(s) => s.local_addr(),
        }
        .map_err(unreachable)?;
        let config = TurnConfig::new(TurnCredentials::new(&server.user, &server.password));
        let (commands, commands_rx) = mpsc::channel(QUEUE);
        let (incoming_tx, incoming) = mpsc::channel(QUEUE);
        let (ready_tx, ready) = oneshot::channel();
        let stats = Arc::new(RelayStats::default());
        let wired = Driver {
            client: (),
            io,
            server: addr,
            local,
            commands: commands_rx,
            incoming: incoming_tx,
            stats: stats.clone(),
            ready: Some(ready_tx),
            gone: false,
        };
        let task = match transport {
            RelayTransport::Udp => tokio::spawn(
                wired
                    .with_client(TurnClientUdp::allocate(local, addr, config))
                    .run(),
            ),
            RelayTransport::Tcp => tokio::spawn(
                wired
                    .with_client(TurnClientTcp::allocate(local, addr, config))
                    .run(),
            ),
        };
        let ready: Result<Ready, RelayError> = match tokio::time::timeout_at(deadline, ready).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RelayError::Closed),
            Err(_) => Err(RelayError::Timeout),
        };
        match ready {
            Ok(Ready { relayed, mapped }) => Ok(Self {
                commands,
                incoming: Some(incoming),
                relayed,
                mapped,
                transport,
                stats,
                task: Some(task),
            }),
            Err(e) => {
                task.abort();
                Err(e)
            }
        }
    }

    /// The relayed transport address peers send to.
    pub fn relayed_addr(&self) -> SocketAddr {
        self.relayed
    }

    /// Our address as the TURN server saw it (XOR-MAPPED-ADDRESS), when it said.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The transport the allocation talks to its server over.
    pub fn transport(&self) -> RelayTransport {
        self.transport
    }

    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// A handle that hands datagrams to this allocation without waiting.
    pub fn sender(&self) -> RelaySender {
        RelaySender {
            commands: self.commands.clone(),
            stats: self.stats.clone(),
        }
    }

    /// What peers send, for a task of its own to read; [`Allocation::recv_from`] then reports
    /// `Closed`. The channel ends when the allocation does.
    pub fn take_incoming(&mut self) -> Option<mpsc::Receiver<(SocketAddr, Vec<u8>)>> {
        self.incoming.take()
    }

    /// Lets datagrams from `ip` in (and ours out to it), until closed; refreshed by the driver.
    pub async fn permit(&self, ip: IpAddr) -> Result<(), RelayError> {
        self.request(|reply| Command::Permit(ip, reply)).await
    }

    /// Binds a channel to `peer`: datagrams to and from it use 4-byte ChannelData framing.
    /// Also installs the permission for its IP.
    pub async fn bind_channel(&self, peer: SocketAddr) -> Result<(), RelayError> {
        self.request(|reply| Command::Bind(peer, reply)).await
    }

    async fn request(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), RelayError>>) -> Command,
    ) -> Result<(), RelayError> {
        let (reply, answer) = oneshot::channel();
        let work = async {
            self.commands
                .send(command(reply))
                .await
                .map_err(|_| RelayError::Closed)?;
            answer.await.map_err(|_| RelayError::Closed)?
        };
        tokio::time::timeout(TURN_REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| RelayError::Timeout)?
    }

    /// Sends `data` to `peer` through the relay (needs a permission for its IP). Waits only
    /// while the queue to the driver is full.
    pub async fn send_to(&self, peer: SocketAddr, data: &[u8]) -> Result<(), RelayError> {
        let send = self.commands.send(Command::Send(peer, data.to_vec()));
        match tokio::time::timeout(TURN_REQUEST_TIMEOUT, send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RelayError::Closed),
            Err(_) => Err(RelayError::Timeout),
        }
    }

    /// The next datagram a peer sent through the relay; `Closed` once the allocation is gone.
    /// Cancel-safe; the caller bounds the wait.
    pub async fn recv_from(&mut self) -> Result<(SocketAddr, Vec<u8>), RelayError> {
        match self.incoming.as_mut() {
            Some(incoming) => incoming.recv().await.ok_or(RelayError::Closed),
            None => Err(RelayError::Closed),
        }
    }

    /// Deallocates (a refresh with lifetime 0) and waits for the server's answer, at most
    /// [`TURN_CLOSE_TIMEOUT`] (plus a little).
    pub async fn close(mut self) {
        let (done, finished) = oneshot::channel();
        let bound = TURN_CLOSE_TIMEOUT + Duration::from_millis(200);
        let _ = tokio::time::timeout(bound, async {
            if self.commands.send(Command::Close(done)).await.is_ok() {
                let _ = finished.await;
            }
        })
        .await;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Moves the client's clock forward by `by`, so refreshes fall due without waiting for them
    /// (tests only: the server's clock does not move).
    #[doc(hidden)]
    pub async fn skew_clock(&self, by: Duration) {
        let _ = self.commands.send(Command::Skew(by)).await;
    }
}

impl Drop for Allocation {
    /// Deallocates even while [`RelaySender`]s are still around (a path socket may hold one).
    fn drop(&mut self) {
        let _ = self.commands.try_send(Command::Release);
    }
}

/// Hands datagrams to an allocation without waiting: a full queue drops the datagram (counted
/// as unsendable), as a full socket buffer would.
#[derive(Clone)]
pub struct RelaySender {
    commands: mpsc::Sender<Command>,
    stats: Arc<RelayStats>,
}

impl RelaySender {
    /// Queues `data` for `peer`; `Closed` once the allocation is gone.
    pub fn try_send_to(&self, peer: SocketAddr, data: &[u8]) -> Result<(), RelayError> {
        match self.commands.try_send(Command::Send(peer, data.to_vec())) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats
                    .unsendable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RelayError::Closed),
        }
    }

    /// Whether the allocation is gone (its driver ended).
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}
