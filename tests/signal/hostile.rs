//! Hostile publishers: anyone with a node's address may publish to its topic, so everything that
//! is not a fresh, authentic message for this node must be dropped and counted, and never
//! delivered; oversized and retained publishes must not cost the connection; and one sender
//! flooding fresh messages must not lock another out.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use warpgate::identity::{NodeId, PublicKey};
use warpgate::signal::message::{encrypt, Message};
use warpgate::signal::mqtt::{MQTT_3_1_1, MQTT_5};
use warpgate::signal::{topic, Inbox, Keys, MessageId, SignalConfig, MAX_MESSAGE_LEN};
use warpgate::timing::{MQTT_HEALTHY_AFTER, MQTT_RECONNECT_MIN, SIGNAL_MAX_AGE};

use crate::support::{
    assert_nothing_delivered, node, node_with, note, recv, wait_stats, Mosquitto, RawClient,
    V311Front, WAIT,
};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn message(from: &PublicKey, to: NodeId, timestamp_ms: u64) -> Message {
    Message {
        from: *from,
        to,
        id: MessageId::random(),
        reply: Inbox::random(),
        timestamp_ms,
        payload: note(66),
    }
}

/// Larger than any MQTT client limit of ours, 3.1.1 included.
const HUGE: usize = 300 * 1024;

#[tokio::test]
async fn hostile_messages_are_dropped_counted_and_never_delivered() {
    let broker = Mosquitto::start();
    let brokers = [broker.host_port()];
    let (bob, carol) = (node(&brokers).await, node(&brokers).await);
    let (alice, mallory) = (Keys::random(), Keys::random());
    let bob_key = bob.public_key();
    let bob_topic = topic(&bob_key, &Inbox::LISTENING);
    let mut raw = RawClient::connect(broker.port, Some(&bob_topic)).await;

    // A genuine message, captured on the way by an eavesdropper who has bob's address.
    carol.send(&bob.peer(), note(1)).await.unwrap();
    assert_eq!(recv(&bob).await, (carol.public_key(), note(1)));
    let captured = tokio::time::timeout(WAIT, raw.captured.recv())
        .await
        .unwrap()
        .unwrap();

    let now = now_ms();
    let claims_alice = message(&alice.public_key(), bob_key.id(), now);
    let forged = encrypt(
        &bob_key,
        &claims_alice
            .encode_with_signature(&mallory.sign(&claims_alice.signed_bytes().unwrap()))
            .unwrap(),
    )
    .unwrap();
    let misaddressed = message(&mallory.public_key(), carol.public_key().id(), now)
        .seal(&mallory, &bob_key)
        .unwrap();
    let for_carol = message(&mallory.public_key(), carol.public_key().id(), now)
        .seal(&mallory, &carol.public_key())
        .unwrap();
    let stale = message(
        &alice.public_key(),
        bob_key.id(),
        now - SIGNAL_MAX_AGE.as_millis() as u64 - 60_000,
    )
    .seal(&alice, &bob_key)
    .unwrap();
    let future = message(&alice.public_key(), bob_key.id(), now + 600_000)
        .seal(&alice, &bob_key)
        .unwrap();

    for bytes in [
        Vec::new(),
        b"hello, broker".to_vec(),
        vec![0x5a; MAX_MESSAGE_LEN + 1],
        forged,
        misaddressed,
        for_carol,
        stale,
        future,
        captured,
    ] {
        raw.publish(&bob_topic, bytes).await;
    }
    wait_stats(&bob, "every hostile message counted", |s| {
        let m = &s.messages;
        (
            m.dropped_garbage,
            m.dropped_oversized,
            m.dropped_forged,
            m.dropped_undecryptable,
            m.dropped_stale,
        ) == (2, 1, 2, 1, 2)
            && m.dropped_replayed >= 1
    })
    .await;

    // The next delivery is the next genuine message: nothing hostile got through.
    carol.send(&bob.peer(), note(2)).await.unwrap();
    assert_eq!(recv(&bob).await, (carol.public_key(), note(2)));
    assert_nothing_delivered(&bob, Duration::from_millis(300)).await;
    assert_eq!(bob.stats().messages.delivered, 2);
}

/// Over MQTT 5 the broker is told our maximum packet size and drops larger publishes for us:
/// a flood of huge ones on our topic costs no reconnect, and the node stays reachable. (Over
/// 3.1.1, or without the size in CONNECT, rumqttc drops the connection on each one.)
#[tokio::test]
async fn huge_publishes_do_not_cost_the_connection() {
    let broker = Mosquitto::start();
    let brokers = [broker.host_port()];
    let (bob, carol) = (node(&brokers).await, node(&brokers).await);
    let bob_topic = topic(&bob.public_key(), &Inbox::LISTENING);
    let raw = RawClient::connect(broker.port, None).await;
    for _ in 0..10 {
        raw.publish(&bob_topic, vec![0; HUGE]).await;
    }
    carol.send(&bob.peer(), note(1)).await.unwrap();
    assert_eq!(recv(&bob).await, (carol.public_key(), note(1)));
    let stats = bob.stats();
    let b = &stats.brokers[0];
    assert_eq!(
        (b.protocol, b.connects, b.oversized, b.received),
        (MQTT_5, 1, 0, 1),
        "{stats:#?}"
    );
}

/// A retained message on a node's topic would reach it on every subscribe (and, oversized,
/// drop it every time): over MQTT 5 the subscription refuses retained messages.
#[tokio::test]
async fn retained_messages_are_never_delivered() {
    let broker = Mosquitto::start();
    let brokers = [broker.host_port()];
    let keys = Keys::random();
    let raw = RawClient::connect(broker.port, None).await;
    let bob_topic = topic(&keys.public_key(), &Inbox::LISTENING);
    raw.publish_retained(&bob_topic, b"left here for bob".to_vec())
        .await;
    // The broker holds it before bob subscribes: a plain subscriber is sent it.
    let mut witness = RawClient::connect(broker.port, Some(&bob_topic)).await;
    let retained = tokio::time::timeout(WAIT, witness.captured.recv()).await;
    assert_eq!(retained, Ok(Some(b"left here for bob".to_vec())));

    let bob = warpgate::signal::Signal::start_with(keys, &brokers, SignalConfig::listener(None))
        .await
        .unwrap();
    let carol = node(&brokers).await;
    carol.send(&bob.peer(), note(1)).await.unwrap();
    assert_eq!(recv(&bob).await.1, note(1));
    let stats = bob.stats();
    assert_eq!(
        (stats.brokers[0].received, stats.messages.dropped_garbage),
        (1, 0),
        "only carol's message arrived: {stats:#?}"
    );
}

/// A broker that speaks only MQTT 3.1.1 still carries signalling (3.1.1 right after MQTT 5 is
/// refused). There a huge publish does cost the connection (rumqttc cannot skip a packet), so
/// a healthy connection comes back at once, not after the reconnect backoff.
#[tokio::test]
async fn a_broker_without_mqtt5_works_and_a_huge_publish_costs_one_quick_reconnect() {
    let broker = Mosquitto::start();
    let front = V311Front::start(broker.port).await;
    let brokers = [front.host_port()];
    let (bob, carol) = (node(&brokers).await, node(&brokers).await);
    carol.send(&bob.peer(), note(1)).await.unwrap();
    assert_eq!(recv(&bob).await.1, note(1));
    let b = &bob.stats().brokers[0];
    assert_eq!((b.protocol, b.connects), (MQTT_3_1_1, 1));

    // Healthy: up longer than MQTT_HEALTHY_AFTER.
    tokio::time::sleep(MQTT_HEALTHY_AFTER + Duration::from_millis(200)).await;
    let raw = RawClient::connect(broker.port, None).await;
    let published = Instant::now();
    raw.publish(&topic(&bob.public_key(), &Inbox::LISTENING), vec![0; HUGE])
        .await;
    wait_stats(&bob, "dropped by the huge packet and back", |s| {
        let b = &s.brokers[0];
        b.oversized == 1 && b.connects == 2 && b.subscribed
    })
    .await;
    let back = published.elapsed();
    eprintln!("MQTT 3.1.1: resubscribed {back:?} after a huge publish dropped the connection");
    assert!(back < MQTT_RECONNECT_MIN, "{back:?}");
    carol.send(&bob.peer(), note(2)).await.unwrap();
    assert_eq!(recv(&bob).await.1, note(2));
}

/// Over 3.1.1 a retained huge message is sent on every subscribe and kills every connection
/// young: the reconnects back off (250 ms, 500 ms, 1 s, 2 s ...) instead of coming back every
/// 250 ms forever. (The same node's MQTT 5 connection to the broker behind refuses retained
/// messages and is unaffected.)
#[tokio::test]
async fn a_retained_huge_message_on_mqtt_3_1_1_backs_off() {
    let broker = Mosquitto::start();
    let front = V311Front::start(broker.port).await;
    let keys = Keys::random();
    let raw = RawClient::connect(broker.port, None).await;
    raw.publish_retained(&topic(&keys.public_key(), &Inbox::LISTENING), vec![0; HUGE])
        .await;
    let bob = tokio::time::timeout(
        WAIT,
        warpgate::signal::Signal::start_with(
            keys,
            &[front.host_port(), broker.host_port()],
            SignalConfig::listener(None),
        ),
    )
    .await
    .expect("bounded")
    .expect("subscribed on the MQTT 5 broker");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = bob.stats();
    let (poisoned, plain) = (&stats.brokers[0], &stats.brokers[1]);
    // Connects at 0, 0.25, 0.75 and 1.75 s (the next at 3.75 s); a backoff reset by every
    // connect would make about 12.
    assert!(
        (2..=5).contains(&poisoned.connects) && poisoned.oversized + 1 >= poisoned.connects,
        "{stats:#?}"
    );
    assert_eq!((plain.protocol, plain.connects), (MQTT_5, 1));
}

/// One sender flooding distinct, valid messages fills only its own quota of the replay set:
/// another sender's messages are still taken in (issue 13).
#[tokio::test]
async fn one_sender_flooding_fresh_messages_does_not_lock_out_another() {
    let broker = Mosquitto::start();
    let brokers = [broker.host_port()];
    let mut config = SignalConfig::listener(None);
    config.session.seen_capacity = 64;
    config.session.seen_per_sender = 16;
    let bob = node_with(&brokers, config).await;
    let carol = node(&brokers).await;
    let mallory = Keys::random();
    let bob_key = bob.public_key();
    let raw = RawClient::connect(broker.port, None).await;
    let bob_topic = topic(&bob_key, &Inbox::LISTENING);
    for _ in 0..100 {
        let flood = message(&mallory.public_key(), bob_key.id(), now_ms())
            .seal(&mallory, &bob_key)
            .unwrap();
        raw.publish(&bob_topic, flood).await;
    }
    wait_stats(&bob, "the flood taken in up to its quota", |s| {
        s.messages.delivered == 16 && s.messages.dropped_quota == 84
    })
    .await;
    carol.send(&bob.peer(), note(7)).await.unwrap();
    // Mallory's 16 come first.
    for _ in 0..16 {
        assert_eq!(recv(&bob).await.0, mallory.public_key());
    }
    assert_eq!(recv(&bob).await, (carol.public_key(), note(7)));
    let m = bob.stats().messages;
    assert_eq!((m.delivered, m.dropped_overload), (17, 0), "{m:?}");
}
