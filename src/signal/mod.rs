//! Signalling: small messages between two nodes through public MQTT brokers, authenticated and
//! encrypted end to end, acknowledged, retried, de-duplicated and expiring.
//!
//! A listener subscribes to its listening topic, [`topic`]`(key, Inbox::LISTENING)`, on every
//! configured broker. A connector subscribes, for one session, to the topic of a random
//! [`Inbox`] and names that inbox inside its sealed offer; the answer and every ack come back
//! there ([`Peer`]: a key and one of its inboxes). Messages are published on every broker the
//! node is connected to; the first copy to arrive wins and the others are dropped as duplicates.
//! A broker that is down at start or drops mid-session is retried with backoff while the others
//! carry on. Messages from keys outside `--allow` are not answered at all: no ack, no pong.
//!
//! What a broker learns. A topic is a keyed hash of the recipient's whole public key and the
//! inbox, so a node id or fingerprint alone does not name it (anyone holding the address does);
//! client ids are random per connection; payloads are sealed, so sender, recipient, kind and
//! content are hidden. Still visible to the broker: that a topic is in use and when, the IP
//! addresses of the clients that subscribe to it and publish to it, and the timing and size of
//! every message (an offer, its answer and their acks have a recognisable rhythm). So a broker
//! can tell which IP addresses signal to which listener, and when; it learns the listener's key
//! only if it holds the address, and the connectors' keys not at all. Anyone holding the address
//! can subscribe to the listening topic too and see the timing and sizes of what arrives there.
//!
//! - [`message`]: the sealed message codec (HPKE + ECDSA P-256), pure and total.
//! - [`session`]: acks, retries, de-duplication, staleness and `--allow`, sans-IO.
//! - [`replay`]: the replay set, bounded in total and per sender.
//! - [`mqtt`]: one rumqttc connection per broker (MQTT 5, or 3.1.1 for brokers without it).
//! - [`Signal`] (here): the tokio driver tying them together; dropping it stops everything.
//!
//! Neighbours: [`crate::traversal`] strategies exchange [`Offer`]/[`Answer`] and
//! [`Ping`]/[`Pong`] through a [`Signal`]; [`crate::config`] provides the broker list.

pub mod message;
pub mod mqtt;
pub mod replay;
pub mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;

use crate::config::HostPort;
use crate::identity::{Allowed, Identity, NodeId, PublicKey};
use crate::timing::SIGNAL_START_TIMEOUT;

pub use message::{Answer, Inbox, Keys, MessageError, MessageId, Offer, Payload, Ping, Pong};
pub use session::Stats;

/// Topic prefix: every signalling topic is `warpgate/v2/` and 26 base32 characters.
pub const TOPIC_PREFIX: &str = "warpgate/v2/";
/// What a topic's keyed hash covers besides the inbox, so it can mean nothing else.
pub const TOPIC_LABEL: &[u8] = b"warpgate/v2 signal topic\0";
/// Bytes of the keyed hash a topic carries (128 bits).
const TOPIC_HASH_LEN: usize = 16;
/// Version byte of sealed messages (2: messages name their reply inbox).
pub const WIRE_VERSION: u8 = 2;
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

/// The topic of `key`'s `inbox`: HMAC-SHA256 keyed with the whole compressed public key over
/// [`TOPIC_LABEL`] ‖ inbox, cut to 128 bits, in base32. Whoever holds the key (the address)
/// computes a listener's topic; the node id or the fingerprint (hashes of the key) do not give
/// it, and a session inbox is random, so its topic cannot be guessed at all. Because the key is
/// part of it, a sender naming an inbox can only have replies sent to topics of its own key.
pub fn topic(key: &PublicKey, inbox: &Inbox) -> String {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.to_compressed())
        .expect("HMAC accepts keys of any length");
    mac.update(TOPIC_LABEL);
    mac.update(&inbox.0);
    let hash = mac.finalize().into_bytes();
    format!(
        "{TOPIC_PREFIX}{}",
        crate::base32::encode(&hash[..TOPIC_HASH_LEN])
    )
}

/// Where a message goes: a node's key and one of its inboxes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub key: PublicKey,
    pub inbox: Inbox,
}

impl Peer {
    /// A listener, at the inbox anyone with its key can reach.
    pub fn listening(key: PublicKey) -> Self {
        Self {
            key,
            inbox: Inbox::LISTENING,
        }
    }

    fn topic(&self) -> String {
        topic(&self.key, &self.inbox)
    }
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

/// Which inbox a node reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// [`Inbox::LISTENING`]: a listener, reachable by anyone who holds its key.
    Listening,
    /// A fresh random inbox for this session only (a connector): named inside its messages.
    Session,
}

/// Who a node is on the brokers, whom it answers, and tunables. [`SignalConfig::default`] is a
/// connector's session that answers everyone; tests shrink the timers.
#[derive(Clone, Debug)]
pub struct SignalConfig {
    pub session: session::Config,
    pub start_timeout: Duration,
    pub home: Home,
    /// Keys this node takes messages from and answers; others get silence. `None`: everyone.
    pub allowed: Option<Vec<Allowed>>,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            session: session::Config::default(),
            start_timeout: SIGNAL_START_TIMEOUT,
            home: Home::Session,
            allowed: None,
        }
    }
}

impl SignalConfig {
    /// A listener's: reachable on its listening inbox, answering the keys `allowed` admits.
    pub fn listener(allowed: Option<Vec<Allowed>>) -> Self {
        Self {
            home: Home::Listening,
            allowed,
            ..Self::default()
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
    /// MQTT protocol level of the current or last connection: 5 (the broker drops what is
    /// larger than we accept), 4 (3.1.1: a larger packet costs a reconnect), 0 before any.
    pub protocol: u8,
    /// Packets too large for the MQTT client (each cost a reconnect; only over MQTT 3.1.1).
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
        to: Peer,
        payload: Payload,
        reply: oneshot::Sender<Result<(), SignalError>>,
    },
    Ping {
        to: Peer,
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
    own: Peer,
    commands: mpsc::Sender<Command>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<(Peer, Payload)>>,
    shared: Arc<Shared>,
    send_timeout: Duration,
    _tasks: JoinSet<()>,
}

impl Signal {
    /// Connects to every broker and returns once one of them carries our subscription.
    pub async fn start(
        identity: &Identity,
        brokers: &[HostPort],
        config: SignalConfig,
    ) -> Result<Self, SignalError> {
        Self::start_with(Keys::from_identity(identity)?, brokers, config).await
    }

    pub async fn start_with(
        keys: Keys,
        brokers: &[HostPort],
        config: SignalConfig,
    ) -> Result<Self, SignalError> {
        if brokers.is_empty() {
            return Err(SignalError::NoBrokers);
        }
        let own = Peer {
            key: keys.public_key(),
            inbox: match config.home {
                Home::Listening => Inbox::LISTENING,
                Home::Session => Inbox::random(),
            },
        };
        let own_topic = own.topic();
        let mut tasks = JoinSet::new();
        let (raw_tx, raw_rx) = mpsc::channel(QUEUE_CAPACITY);
        let ready = Arc::new(Notify::new());
        let brokers: Vec<mqtt::Broker> = brokers
            .iter()
            .map(|server| {
                mqtt::Broker::start(
                    server.clone(),
                    client_id(),
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
        let session = session::Session::new(keys, own.inbox, config.session, now, unix_ms)
            .allowing(config.allowed);
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
            own,
            commands,
            inbox: tokio::sync::Mutex::new(inbox),
            shared,
            send_timeout: config.session.send_timeout,
            _tasks: tasks,
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.own.key
    }

    /// Our key and the inbox we read (what our messages name for replies).
    pub fn peer(&self) -> Peer {
        self.own
    }

    /// Sends `payload` to `peer`'s inbox ([`Peer::listening`] for a listener, or the `from` of a
    /// message received, to reply); resolves when the peer acknowledged it, or fails after the
    /// send timeout.
    pub async fn send(&self, peer: &Peer, payload: Payload) -> Result<(), SignalError> {
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
                peer: peer.key.id(),
                timeout: self.send_timeout,
            }),
        }
    }

    /// Measures the signalling round trip to `peer`: a [`Ping`] out, the [`Pong`] its driver
    /// answers with automatically. Fails like [`Signal::send`] when the peer does not answer.
    pub async fn ping(&self, peer: &Peer) -> Result<Duration, SignalError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Ping { to: *peer, reply })
            .await
            .map_err(|_| SignalError::Closed)?;
        match tokio::time::timeout(self.send_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SignalError::Closed),
            Err(_) => Err(SignalError::Timeout {
                peer: peer.key.id(),
                timeout: self.send_timeout,
            }),
        }
    }

    /// The next message from any allowed peer, with the inbox to reply to; `None` once
    /// signalling has stopped. Pings are answered by the driver and not delivered here.
    pub async fn recv(&self) -> Option<(Peer, Payload)> {
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
                protocol: s.protocol.load(Relaxed),
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

/// A client id for one broker connection: `wg` and 104 random bits (21 base32 characters), as
/// long as MQTT 3.1.1 guarantees (23); nothing in it names the node.
fn client_id() -> String {
    let mut random = [0u8; 13];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut random);
    format!("wg{}", crate::base32::encode(&random))
}

/// The driver: feeds the session from the brokers and the API, publishes what it emits.
async fn drive(
    mut session: session::Session,
    brokers: Vec<mqtt::Broker>,
    mut commands: mpsc::Receiver<Command>,
    mut raw: mpsc::Receiver<Vec<u8>>,
    inbox: mpsc::Sender<(Peer, Payload)>,
    shared: Arc<Shared>,
) {
    let mut waiters: HashMap<MessageId, (PublicKey, Waiter)> = HashMap::new();
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
                        Ok(id) => { waiters.insert(id, (to.key, Waiter::Ack(reply))); }
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
                            waiters.insert(id, (to.key, waiter));
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
                } if pong_waiter(&waiters, &from.key, pong.nonce).is_some() => {
                    if let Some(id) = pong_waiter(&waiters, &from.key, pong.nonce) {
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
                            peer: peer.id(),
                            timeout: send_timeout,
                        });
                    }
                }
            }
        }
        while let Some(t) = session.poll_transmit() {
            let topic = t.to.topic();
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
    waiters: &HashMap<MessageId, (PublicKey, Waiter)>,
    from: &PublicKey,
    nonce: u64,
) -> Option<MessageId> {
    waiters
        .iter()
        .find_map(|(id, (peer, waiter))| match waiter {
            Waiter::Pong { nonce: n, .. } if *n == nonce && peer == from => Some(*id),
            _ => None,
        })
}

fn session_send_timeout(session: &session::Session) -> Duration {
    session.config().send_timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_key() -> PublicKey {
        let secret = p256::SecretKey::from_slice(&[1; 32]).expect("a valid scalar");
        Keys::from_secret(secret).unwrap().public_key()
    }

    #[test]
    fn topic_is_a_keyed_hash_of_the_whole_key_and_the_inbox() {
        let key = fixed_key();
        let listening = topic(&key, &Inbox::LISTENING);
        // Pinned (checked against Python's hmac): the topic scheme is protocol, and a connector
        // and a listener of different builds must agree on it.
        assert_eq!(listening, "warpgate/v2/by2jexo6urotdk6pahpzll7osa");
        for name in [key.id().to_string(), key.fingerprint()] {
            assert!(!listening.contains(&name[..8]), "{listening} shows {name}");
        }
        let session = Inbox::random();
        let other = topic(&key, &session);
        assert_ne!(other, listening);
        assert_eq!(other.len(), listening.len());
        assert_eq!(topic(&key, &session), other, "deterministic");
        let stranger = Keys::random().public_key();
        assert_ne!(topic(&stranger, &session), other);
    }

    #[test]
    fn client_ids_are_random_and_name_nothing() {
        let (a, b) = (client_id(), client_id());
        assert_ne!(a, b);
        assert!(a.len() == 23 && a.starts_with("wg"), "{a}");
    }
}
