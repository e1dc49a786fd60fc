//! One MQTT broker connection (rumqttc): connect, subscribe to this node's topic, hand what
//! arrives to the driver, reconnect with backoff when the broker is down or drops us.
//!
//! Publishing is fire-and-forget at QoS 0 and only while connected: reliability is end to end in
//! [`super::session`], so a message queued for a dead broker would only arrive late and be
//! de-duplicated. Every wait here is bounded: the connect by [`MQTT_CONNECT_TIMEOUT`], the
//! reconnect by the backoff, a silent broker by the MQTT keep-alive.
//!
//! Neighbours: [`super`] owns the task (through its `JoinSet`) and the client handle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, StateError};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::MAX_MESSAGE_LEN;
use crate::config::HostPort;
use crate::timing::{
    MQTT_CONNECT_TIMEOUT, MQTT_KEEP_ALIVE, MQTT_RECONNECT_MAX, MQTT_RECONNECT_MIN,
};

/// rumqttc drops the whole connection on a larger packet, so this is generous: anything above
/// [`MAX_MESSAGE_LEN`] up to here is received and counted as oversized by the session.
pub const MAX_PACKET_LEN: usize = 256 * 1024;
/// Requests (publishes, subscribes) buffered between the driver and the event loop.
const REQUEST_CAPACITY: usize = 64;

/// Counters and state of one broker, shared with the driver.
#[derive(Default)]
pub(super) struct BrokerState {
    pub connected: AtomicBool,
    pub subscribed: AtomicBool,
    pub connects: AtomicU64,
    pub published: AtomicU64,
    pub published_bytes: AtomicU64,
    pub publish_failed: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    /// Packets over [`MAX_PACKET_LEN`]: rumqttc drops the connection, which costs a reconnect.
    pub oversized: AtomicU64,
    /// Messages that found the driver's queue full.
    pub inbox_full: AtomicU64,
}

pub(super) struct Broker {
    pub server: HostPort,
    client: AsyncClient,
    pub state: Arc<BrokerState>,
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
        let mut options = MqttOptions::new(client_id, server.host.clone(), server.port);
        options
            .set_keep_alive(MQTT_KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_LEN, MAX_MESSAGE_LEN + 1024);
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        eventloop
            .network_options
            .set_connection_timeout(MQTT_CONNECT_TIMEOUT.as_secs());
        // Small latency-sensitive messages (punch timing is measured through them): no Nagle.
        eventloop.network_options.set_tcp_nodelay(true);
        let state = Arc::new(BrokerState::default());
        let task_state = state.clone();
        let task_client = client.clone();
        let name = server.to_string();
        tasks.spawn(async move {
            let mut backoff = MQTT_RECONNECT_MIN;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::debug!("signal: connected to broker {name}");
                        task_state.connected.store(true, Ordering::Relaxed);
                        task_state.connects.fetch_add(1, Ordering::Relaxed);
                        backoff = MQTT_RECONNECT_MIN;
                        if let Err(e) = task_client.try_subscribe(topic.clone(), QoS::AtMostOnce) {
                            tracing::warn!("signal: cannot subscribe on {name}: {e}");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        task_state.subscribed.store(true, Ordering::Relaxed);
                        ready.notify_one();
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) if publish.topic == topic => {
                        task_state.received.fetch_add(1, Ordering::Relaxed);
                        task_state
                            .received_bytes
                            .fetch_add(publish.payload.len() as u64, Ordering::Relaxed);
                        if inbox.try_send(publish.payload.to_vec()).is_err() {
                            task_state.inbox_full.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        task_state.connected.store(false, Ordering::Relaxed);
                        task_state.subscribed.store(false, Ordering::Relaxed);
                        if matches!(
                            e,
                            ConnectionError::MqttState(StateError::Deserialization(
                                rumqttc::Error::PayloadSizeLimitExceeded(_)
                            ))
                        ) {
                            task_state.oversized.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!("signal: broker {name}: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MQTT_RECONNECT_MAX);
                    }
                }
            }
        });
        Self {
            server,
            client,
            state,
        }
    }

    /// Publishes if connected; returns whether the message was handed to the connection.
    pub fn publish(&self, topic: &str, bytes: &[u8]) -> bool {
        if !self.state.connected.load(Ordering::Relaxed) {
            return false;
        }
        match self
            .client
            .try_publish(topic, QoS::AtMostOnce, false, bytes.to_vec())
        {
            Ok(()) => {
                self.state.published.fetch_add(1, Ordering::Relaxed);
                self.state
                    .published_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.state.publish_failed.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}
