//! Signalling: small messages between two nodes through public MQTT brokers, authenticated and
//! encrypted end to end, acknowledged, retried, de-duplicated and expiring.
//!
//! Each node subscribes to its own topic, [`topic`]`(node id)`, on every configured broker, and
//! publishes to a peer's topic on every broker it is connected to; the first copy to arrive wins
//! and the others are dropped as duplicates. A broker that is down at start or drops mid-session
//! is retried with backoff while the others carry on. Brokers see only the recipient's id and
//! opaque bytes.
//!
//! - [`message`]: the sealed message codec (HPKE + ECDSA P-256), pure and total.
//! - [`session`]: acks, retries, de-duplication and staleness, sans-IO.
//! - [`mqtt`]: one rumqttc connection per broker.
//! - [`Signal`] (here): the tokio driver tying them together; dropping it stops everything.
//!
//! Neighbours: [`crate::traversal`] strategies exchange [`Offer`]/[`Answer`] and
//! [`Ping`]/[`Pong`] through a [`Signal`]; [`crate::config`] provides the broker list.

pub mod message;
pub mod mqtt;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;

use crate::config::HostPort;
use crate::identity::{Identity, NodeId, PublicKey};
use crate::timing::SIGNAL_START_TIMEOUT;

pub use message::{Answer, Keys, MessageError, MessageId, Offer, Payload, Ping, Pong};
pub use session::Stats;

/// Topic prefix: a node listens on `warpgate/v1/<node id>`.
pub const TOPIC_PREFIX: &str = "warpgate/v1/";
/// Version byte of sealed messages.
pub const WIRE_VERSION: u8 = 1;
/// Largest sealed message accepted or sent.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Messages from brokers waiting for the driver, and delivered messages waiting for `recv`.
const QUEUE_CAPACITY: usize = 256;

/// How many brokers a node listens on, out of the configured list.
pub const BROKERS_PER_NODE: usize = 2;

/// The brokers where the node with `key` listens, out of `brokers`: the
/// [`BROKERS_PER_NODE`] that rank highest by rendezvous (highest-random-weight) hashing of the
/// key and the broker, so anyone holding the same list and the key picks the same ones without
/// talking, and a list that grows or shrinks by one broker moves few nodes. Both ends use it:
/// the listener to choose where to listen, the connector when the address names no brokers.
pub fn brokers_for(key: &PublicKey, brokers: &[HostPort]) -> Vec<HostPort> {
    use sha2::{Digest, Sha256};
    let mut ranked: Vec<(Vec<u8>, &HostPort)> = brokers
        .iter()
        .map(|b| {
            let mut hash = Sha256::new();
            hash.update(key.to_compressed());
            hash.update(b.to_string().as_bytes());
            (hash.finalize().to_vec(), b)
        })
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked
        .into_iter()
        .take(BROKERS_PER_NODE)
        .map(|(_, b)| b.clone())
        .collect()
}

/// The topic a node subscribes to.
pub fn topic(id: &NodeId) -> String {
    format!("{TOPIC_PREFIX}{id}")
}

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("no signalling broker is configured")]
    NoBrokers,
    #[error("no signalling broker answered within {timeout:?} (tried {tried})")]
    Unreachable { timeout: Duration, tried: String },
    #[error("peer {peer} did not acknowledge a signalling message within {timeout:?}")]
    Timeout { peer: NodeId, timeout: Duration },
    #[error("signalling has stopped")]
    Closed,
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// Tunables; [`SignalConfig::default`] is the product's, tests shrink the timers.
#[derive(Clone, Copy, Debug)]
pub struct SignalConfig {
    pub session: session::Config,
    pub start_timeout: Duration,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            session: session::Config::default(),
            start_timeout: SIGNAL_START_TIMEOUT,
        }
    }
}

/// One broker's view, for `stats()`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BrokerStats {
    pub server: String,
    pub connected: bool,
    pub subscribed: bool,
    pub connects: u64,
    pub published: u64,
    pub published_bytes: u64,
    pub publish_failed: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// Packets too large for the MQTT client (each cost a reconnect).
    pub oversized: u64,
    /// Messages dropped because the driver was not keeping up.
    pub inbox_full: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignalStats {
    pub messages: Stats,
    pub brokers: Vec<BrokerStats>,
}

enum Command {
    Send {
        to: PublicKey,
        payload: Payload,
        reply: oneshot::Sender<Result<(), SignalError>>,
    },
    Ping {
        to: PublicKey,
        reply: oneshot::Sender<Result<Duration, SignalError>>,
    },
}

/// Who waits for what after a message went out.
enum Waiter {
    /// [`Signal::send`]: the peer's ack.
    Ack(oneshot::Sender<Result<(), SignalError>>),
    /// [`Signal::ping`]: the peer's pong with this nonce.
    Pong {
        nonce: u64,
        sent: Instant,
        reply: oneshot::Sender<Result<Duration, SignalError>>,
    },
}

impl Waiter {
    fn is_closed(&self) -> bool {
        match self {
            Waiter::Ack(reply) => reply.is_closed(),
            Waiter::Pong { reply, .. } => reply.is_closed(),
        }
    }

    fn fail(self, error: SignalError) {
        match self {
            Waiter::Ack(reply) => drop(reply.send(Err(error))),
            Waiter::Pong { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

struct Shared {
    stats: Mutex<Stats>,
    brokers: Vec<(String, Arc<mqtt::BrokerState>)>,
}

/// A running signalling channel. Dropping it stops every task it started.
pub struct Signal {
    public: PublicKey,
    commands: mpsc::Sender<Command>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<(PublicKey, Payload)>>,
    shared: Arc<Shared>,
    send_timeout: Duration,
    _tasks: JoinSet<()>,
}

impl Signal {
    /// Connects to every broker and returns once one of them carries our subscription.
    pub async fn start(identity: &Identity, brokers: &[HostPort]) -> Result<Self, SignalError> {
        Self::start_with(
            Keys::from_identity(identity)?,
            brokers,
            SignalConfig::default(),
        )
        .await
    }

    pub async fn start_with(
        keys: Keys,
        brokers: &[HostPort],
        config: SignalConfig,
    ) -> Result<Self, SignalError> {
        if brokers.is_empty() {
            return Err(SignalError::NoBrokers);
        }
        let public = keys.public_key();
        let own_topic = topic(&public.id());
        let mut tasks = JoinSet::new();
        let (raw_tx, raw_rx) = mpsc::channel(QUEUE_CAPACITY);
        let ready = Arc::new(Notify::new());
        let brokers: Vec<mqtt::Broker> = brokers
            .iter()
            .map(|server| {
                mqtt::Broker::start(
                    server.clone(),
                    client_id(&public),
                    own_topic.clone(),
                    raw_tx.clone(),
                    ready.clone(),
                    &mut tasks,
                )
            })
            .collect();
        drop(raw_tx);
        let shared = Arc::new(Shared {
            stats: Mutex::new(Stats::default()),
            brokers: brokers
                .iter()
                .map(|b| (b.server.to_string(), b.state.clone()))
                .collect(),
        });

        let deadline = tokio::time::Instant::now() + config.start_timeout;
        while !shared
            .brokers
            .iter()
            .any(|(_, s)| s.subscribed.load(std::sync::atomic::Ordering::Relaxed))
        {
            if tokio::time::timeout_at(deadline, ready.notified())
                .await
                .is_err()
            {
                return Err(SignalError::Unreachable {
                    timeout: config.start_timeout,
                    tried: shared
                        .brokers
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }

        let now = Instant::now();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let session = session::Session::new(keys, config.session, now, unix_ms);
        let (commands, command_rx) = mpsc::channel(QUEUE_CAPACITY);
        let (inbox_tx, inbox) = mpsc::channel(QUEUE_CAPACITY);
        tasks.spawn(drive(
            session,
            brokers,
            command_rx,
            raw_rx,
            inbox_tx,
            shared.clone(),
        ));
        Ok(Self {
            public,
            commands,
            inbox: tokio::sync::Mutex::new(inbox),
            shared,
            send_timeout: config.session.send_timeout,
            _tasks: tasks,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Sends `payload` to `peer`; resolves when the peer acknowledged it, or fails after the
    /// send timeout.
    pub async fn send(&self, peer: &PublicKey, payload: Payload) -> Result<(), SignalError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Send {
                to: *peer,
                payload,
                reply,
            })
            .await
            .map_err(|_| SignalError::Closed)?;
        // The session expires the message after `send_timeout`; the margin only guards a stall.
        match tokio::time::timeout(self.send_timeout + Duration::from_secs(1), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SignalError::Closed),
            Err(_) => Err(SignalError::Timeout {
                peer: peer.id(),
                timeout: self.send_timeout,
            }),
        }
    }

    /// Measures the signalling round trip to `peer`: a [`Ping`] out, the [`Pong`] its driver
    /// answers with automatically. Fails like [`Signal::send`] when the peer does not answer.
    pub async fn ping(&self, peer: &PublicKey) -> Result<Duration, SignalError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Ping { to: *peer, reply })
            .await
            .map_err(|_| SignalError::Closed)?;
        match tokio::time::timeout(self.send_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SignalError::Closed),
            Err(_) => Err(SignalError::Timeout {
                peer: peer.id(),
                timeout: self.send_timeout,
            }),
        }
    }

    /// The next message from any peer; `None` once signalling has stopped. Pings are answered
    /// by the driver and not delivered here.
    pub async fn recv(&self) -> Option<(PublicKey, Payload)> {
        self.inbox.lock().await.recv().await
    }

    pub fn stats(&self) -> SignalStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut messages = self.shared.stats.lock().map(|s| *s).unwrap_or_default();
        let brokers: Vec<BrokerStats> = self
            .shared
            .brokers
            .iter()
            .map(|(server, s)| BrokerStats {
                server: server.clone(),
                connected: s.connected.load(Relaxed),
                subscribed: s.subscribed.load(Relaxed),
                connects: s.connects.load(Relaxed),
                published: s.published.load(Relaxed),
                published_bytes: s.published_bytes.load(Relaxed),
                publish_failed: s.publish_failed.load(Relaxed),
                received: s.received.load(Relaxed),
                received_bytes: s.received_bytes.load(Relaxed),
                oversized: s.oversized.load(Relaxed),
                inbox_full: s.inbox_full.load(Relaxed),
            })
            .collect();
        messages.dropped_oversized += brokers.iter().map(|b| b.oversized).sum::<u64>();
        SignalStats { messages, brokers }
    }
}

/// MQTT 3.1.1 guarantees client ids up to 23 characters: `wg` + node id + `-` + 4 random.
fn client_id(public: &PublicKey) -> String {
    let mut random = [0u8; 3];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    let suffix = crate::base32::encode(&random);
    format!("wg{}-{}", public.id(), &suffix[..4])
}

/// The driver: feeds the session from the brokers and the API, publishes what it emits.
async fn drive(
    mut session: session::Session,
    brokers: Vec<mqtt::Broker>,
    mut commands: mpsc::Receiver<Command>,
    mut raw: mpsc::Receiver<Vec<u8>>,
    inbox: mpsc::Sender<(PublicKey, Payload)>,
    shared: Arc<Shared>,
) {
    let mut waiters: HashMap<MessageId, (NodeId, Waiter)> = HashMap::new();
    let send_timeout = session_send_timeout(&session);
    loop {
        let wake = session
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Send { to, payload, reply }) => {
                    match session.send(Instant::now(), &to, payload) {
                        Ok(id) => { waiters.insert(id, (to.id(), Waiter::Ack(reply))); }
                        Err(e) => { let _ = reply.send(Err(e.into())); }
                    }
                }
                Some(Command::Ping { to, reply }) => {
                    let now = Instant::now();
                    let nonce = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
                    let ping = Payload::Ping(Ping { nonce, sent_ms: session.unix_ms(now) });
                    match session.send(now, &to, ping) {
                        Ok(id) => {
                            let waiter = Waiter::Pong { nonce, sent: now, reply };
                            waiters.insert(id, (to.id(), waiter));
                        }
                        Err(e) => { let _ = reply.send(Err(e.into())); }
                    }
                }
            },
            Some(bytes) = raw.recv() => session.handle_incoming(Instant::now(), &bytes),
            () = tokio::time::sleep_until(wake) => session.handle_timeout(Instant::now()),
        }
        while let Some(event) = session.poll_event() {
            match event {
                session::Event::Received {
                    from,
                    payload: Payload::Ping(ping),
                    ..
                } => {
                    let now = Instant::now();
                    let pong = Payload::Pong(Pong {
                        nonce: ping.nonce,
                        ping_sent_ms: ping.sent_ms,
                        sent_ms: session.unix_ms(now),
                    });
                    if let Err(e) = session.send(now, &from, pong) {
                        tracing::warn!("signal: cannot answer a ping: {e}");
                    }
                }
                session::Event::Received {
                    from,
                    payload: Payload::Pong(pong),
                    ..
                } if pong_waiter(&waiters, &from, pong.nonce).is_some() => {
                    if let Some(id) = pong_waiter(&waiters, &from, pong.nonce) {
                        if let Some((_, Waiter::Pong { sent, reply, .. })) = waiters.remove(&id) {
                            let _ = reply.send(Ok(sent.elapsed()));
                        }
                    }
                }
                session::Event::Received { from, payload, .. } => {
                    if inbox.try_send((from, payload)).is_err() {
                        tracing::warn!("signal: receiver is not keeping up; message dropped");
                    }
                }
                session::Event::Acked(id) => {
                    if let Some((_, Waiter::Ack(_))) = waiters.get(&id) {
                        if let Some((_, Waiter::Ack(reply))) = waiters.remove(&id) {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                session::Event::Expired(id) => {
                    if let Some((peer, waiter)) = waiters.remove(&id) {
                        waiter.fail(SignalError::Timeout {
                            peer,
                            timeout: send_timeout,
                        });
                    }
                }
            }
        }
        while let Some(t) = session.poll_transmit() {
            let topic = topic(&t.to.id());
            let handed = brokers
                .iter()
                .filter(|b| b.publish(&topic, &t.bytes))
                .count();
            if handed == 0 {
                tracing::debug!("signal: no broker connected; will retry");
            }
        }
        // A caller that stopped waiting does not need its message retried.
        waiters.retain(|id, (_, waiter)| {
            let open = !waiter.is_closed();
            if !open {
                session.cancel(*id);
            }
            open
        });
        if let Ok(mut stats) = shared.stats.lock() {
            *stats = session.stats();
        }
    }
}

/// The ping (by message id) that a pong from `from` with `nonce` answers.
fn pong_waiter(
    waiters: &HashMap<MessageId, (NodeId, Waiter)>,
    from: &PublicKey,
    nonce: u64,
) -> Option<MessageId> {
    let from = from.id();
    waiters
        .iter()
        .find_map(|(id, (peer, waiter))| match waiter {
            Waiter::Pong { nonce: n, .. } if *n == nonce && *peer == from => Some(*id),
            _ => None,
        })
}

fn session_send_timeout(session: &session::Session) -> Duration {
    session.config().send_timeout
}
