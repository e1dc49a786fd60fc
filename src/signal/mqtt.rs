//! One MQTT broker connection (rumqttc): connect, subscribe to this node's topic, hand what
//! arrives to the driver, reconnect with backoff when the broker is down or drops us.
//!
//! MQTT 5 first: its CONNECT tells the broker our maximum packet size ([`MAX_PACKET_LEN`]), and
//! the broker must then drop a larger message for us instead of sending it (mosquitto logs
//! "Dropping too large outgoing PUBLISH"), so an oversized publish on our topic costs us
//! nothing; and the subscription asks for no retained messages. A broker that refuses MQTT 5 in
//! the handshake is tried at once with 3.1.1 (every connect tries 5 first, so this costs 3.1.1-only
//! brokers one round trip per connect). Over 3.1.1 the broker sends whatever is published, and
//! rumqttc drops the whole connection on a packet above its limit (it cannot skip one), so there
//! the limit is generous ([`MAX_PACKET_LEN_V311`]) and a connection that was healthy reconnects
//! at once after such a packet; one that keeps dying young (a retained oversized message sent on
//! every subscribe) backs off.
//!
//! Publishing is fire-and-forget at QoS 0 and only while connected: reliability is end to end in
//! [`super::session`], so a message queued for a dead broker would only arrive late and be
//! de-duplicated. Every wait here is bounded: the connect by [`MQTT_CONNECT_TIMEOUT`], the
//! reconnect by the backoff, a silent broker by the MQTT keep-alive.
//!
//! Neighbours: [`super`] owns the task (through its `JoinSet`) and the client handles.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet as Packet5, RetainForwardRule};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::MAX_MESSAGE_LEN;
use crate::config::HostPort;
use crate::timing::{
    MQTT_CONNECT_TIMEOUT, MQTT_HEALTHY_AFTER, MQTT_KEEP_ALIVE, MQTT_RECONNECT_MAX,
    MQTT_RECONNECT_MIN,
};

/// Largest packet we accept over MQTT 5, which the broker is told: a sealed message of
/// [`MAX_MESSAGE_LEN`] with room for the topic and headers. Anything between the two reaches the
/// session and is counted as oversized there; anything larger the broker drops.
pub const MAX_PACKET_LEN: usize = MAX_MESSAGE_LEN + 1024;
/// Largest packet we accept over MQTT 3.1.1, where a larger one drops the connection: generous,
/// so only a deliberately huge publish costs a reconnect, and small enough to buffer.
pub const MAX_PACKET_LEN_V311: usize = 256 * 1024;
/// Requests (publishes, subscribes) buffered between the driver and the event loop.
const REQUEST_CAPACITY: usize = 64;

/// MQTT protocol levels, as [`BrokerState::protocol`] holds them.
pub const MQTT_5: u8 = 5;
pub const MQTT_3_1_1: u8 = 4;

/// Counters and state of one broker, shared with the driver.
#[derive(Default)]
pub(super) struct BrokerState {
    pub connected: AtomicBool,
    pub subscribed: AtomicBool,
    /// [`MQTT_5`] or [`MQTT_3_1_1`] once connected; 0 before.
    pub protocol: AtomicU8,
    pub connects: AtomicU64,
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub publish_failed: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    /// Packets above our limit that reached us: each cost a reconnect.
    pub oversized: AtomicU64,
    /// Messages that found the driver's queue full.
    pub inbox_full: AtomicU64,
}

pub(super) struct Broker {
    pub server: HostPort,
    client5: v5::AsyncClient,
    client311: rumqttc::AsyncClient,
    pub state: Arc<BrokerState>,
}

/// What the connection task shares with its event handling.
struct Link {
    name: String,
    topic: String,
    state: Arc<BrokerState>,
    inbox: mpsc::Sender<Vec<u8>>,
    ready: Arc<Notify>,
}

impl Link {
    fn connected(&self, protocol: u8) {
        tracing::debug!(
            "signal: connected to broker {} (MQTT level {protocol})",
            self.name
        );
        self.state.protocol.store(protocol, Ordering::Relaxed);
        self.state.connected.store(true, Ordering::Relaxed);
        self.state.connects.fetch_add(1, Ordering::Relaxed);
    }

    fn subscribed(&self) {
        self.state.subscribed.store(true, Ordering::Relaxed);
        self.ready.notify_one();
    }

    fn received(&self, payload: &[u8]) {
        self.state.received.fetch_add(1, Ordering::Relaxed);
        self.state
            .received_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        if self.inbox.try_send(payload.to_vec()).is_err() {
            self.state.inbox_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lost(&self) {
        self.state.connected.store(false, Ordering::Relaxed);
        self.state.subscribed.store(false, Ordering::Relaxed);
    }
}

/// How one connection attempt ended.
struct Ended {
    /// How long it was up, if the broker accepted it.
    connected_for: Option<Duration>,
    /// Refused in the MQTT handshake (not a TCP failure or a timeout): the broker may not speak
    /// this protocol version.
    refused: bool,
    /// Dropped by rumqttc for a packet above our limit.
    oversized: bool,
    error: String,
}

impl Broker {
    /// Starts the connection task in `tasks`; it runs until the set is dropped.
    pub fn start(
        server: HostPort,
        client_id: String,
        topic: String,
        inbox: mpsc::Sender<Vec<u8>>,
        ready: Arc<Notify>,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let mut network = rumqttc::NetworkOptions::new();
        network.set_connection_timeout(MQTT_CONNECT_TIMEOUT.as_secs());
        // Small latency-sensitive messages (punch timing is measured through them): no Nagle.
        network.set_tcp_nodelay(true);

        let mut options5 =
            v5::MqttOptions::new(client_id.clone(), server.host.clone(), server.port);
        options5
            .set_keep_alive(MQTT_KEEP_ALIVE)
            .set_clean_start(true)
            .set_max_packet_size(Some(MAX_PACKET_LEN as u32))
            .set_connection_timeout(MQTT_CONNECT_TIMEOUT.as_secs())
            .set_network_options(network.clone());
        let (client5, events5) = v5::AsyncClient::new(options5, REQUEST_CAPACITY);

        let mut options311 = rumqttc::MqttOptions::new(client_id, server.host.clone(), server.port);
        options311
            .set_keep_alive(MQTT_KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_LEN_V311, MAX_MESSAGE_LEN + 1024);
        let (client311, mut events311) = rumqttc::AsyncClient::new(options311, REQUEST_CAPACITY);
        events311.network_options = network;

        let state = Arc::new(BrokerState::default());
        let link = Link {
            name: server.to_string(),
            topic,
            state: state.clone(),
            inbox,
            ready,
        };
        let (c5, c311) = (client5.clone(), client311.clone());
        tasks.spawn(run(link, events5, c5, events311, c311));
        Self {
            server,
            client5,
            client311,
            state,
        }
    }

    /// Publishes if connected; returns whether the message was handed to the connection.
    pub fn publish(&self, topic: &str, bytes: &[u8]) -> bool {
        if !self.state.connected.load(Ordering::Relaxed) {
            return false;
        }
        let handed = match self.state.protocol.load(Ordering::Relaxed) {
            MQTT_5 => self
                .client5
                .try_publish(topic, v5::mqttbytes::QoS::AtMostOnce, false, bytes.to_vec())
                .is_ok(),
            _ => self
                .client311
                .try_publish(topic, rumqttc::QoS::AtMostOnce, false, bytes.to_vec())
                .is_ok(),
        };
        if handed {
            self.state.published.fetch_add(1, Ordering::Relaxed);
            self.state
                .published_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        } else {
            self.state.publish_failed.fetch_add(1, Ordering::Relaxed);
        }
        handed
    }
}

/// The connection task: MQTT 5, or 3.1.1 right after 5 is refused; reconnects with backoff.
async fn run(
    link: Link,
    mut events5: v5::EventLoop,
    client5: v5::AsyncClient,
    mut events311: rumqttc::EventLoop,
    client311: rumqttc::AsyncClient,
) {
    let mut backoff = MQTT_RECONNECT_MIN;
    loop {
        let mut ended = connection5(&mut events5, &client5, &link).await;
        if ended.connected_for.is_none() && ended.refused {
            tracing::debug!(
                "signal: broker {} refused MQTT 5 ({}); trying 3.1.1",
                link.name,
                ended.error
            );
            ended = connection311(&mut events311, &client311, &link).await;
        }
        link.lost();
        if ended.oversized {
            link.state.oversized.fetch_add(1, Ordering::Relaxed);
        }
        let healthy = ended
            .connected_for
            .is_some_and(|up| up >= MQTT_HEALTHY_AFTER);
        if healthy {
            backoff = MQTT_RECONNECT_MIN;
            if ended.oversized {
                tracing::debug!(
                    "signal: broker {} sent a packet above our limit; reconnecting",
                    link.name
                );
                continue;
            }
        }
        tracing::debug!(
            "signal: broker {}: {}; retrying in {backoff:?}",
            link.name,
            ended.error
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MQTT_RECONNECT_MAX);
    }
}

/// One MQTT 5 connection, from connecting until it fails.
async fn connection5(events: &mut v5::EventLoop, client: &v5::AsyncClient, link: &Link) -> Ended {
    let mut since = None;
    loop {
        match events.poll().await {
            Ok(v5::Event::Incoming(Packet5::ConnAck(_))) => {
                since = Some(Instant::now());
                link.connected(MQTT_5);
                // Retained messages on our topic can only be stale or hostile: never send them.
                let filter = Filter {
                    retain_forward_rule: RetainForwardRule::Never,
                    ..Filter::new(link.topic.clone(), v5::mqttbytes::QoS::AtMostOnce)
                };
                if let Err(e) = client.try_subscribe_many([filter]) {
                    tracing::warn!("signal: cannot subscribe on {}: {e}", link.name);
                }
            }
            Ok(v5::Event::Incoming(Packet5::SubAck(_))) => link.subscribed(),
            Ok(v5::Event::Incoming(Packet5::Publish(publish)))
                if publish.topic == link.topic.as_bytes() =>
            {
                link.received(&publish.payload);
            }
            Ok(_) => {}
            Err(e) => {
                return Ended {
                    connected_for: since.map(|s: Instant| s.elapsed()),
                    refused: since.is_none()
                        && !matches!(
                            e,
                            v5::ConnectionError::Io(_) | v5::ConnectionError::Timeout(_)
                        ),
                    oversized: matches!(
                        e,
                        v5::ConnectionError::MqttState(v5::StateError::Deserialization(
                            v5::mqttbytes::Error::PayloadSizeLimitExceeded { .. }
                        ))
                    ),
                    error: e.to_string(),
                }
            }
        }
    }
}

/// One MQTT 3.1.1 connection, from connecting until it fails.
async fn connection311(
    events: &mut rumqttc::EventLoop,
    client: &rumqttc::AsyncClient,
    link: &Link,
) -> Ended {
    use rumqttc::{ConnectionError, Event, Packet, StateError};
    let mut since = None;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                since = Some(Instant::now());
                link.connected(MQTT_3_1_1);
                if let Err(e) = client.try_subscribe(link.topic.clone(), rumqttc::QoS::AtMostOnce) {
                    tracing::warn!("signal: cannot subscribe on {}: {e}", link.name);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => link.subscribed(),
            Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == link.topic => {
                link.received(&publish.payload);
            }
            Ok(_) => {}
            Err(e) => {
                return Ended {
                    connected_for: since.map(|s: Instant| s.elapsed()),
                    refused: false,
                    oversized: matches!(
                        e,
                        ConnectionError::MqttState(StateError::Deserialization(
                            rumqttc::Error::PayloadSizeLimitExceeded(_)
                        ))
                    ),
                    error: e.to_string(),
                }
            }
        }
    }
}
