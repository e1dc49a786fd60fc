//! Hostile publishers: anyone may publish to a node's topic, so everything that is not a fresh,
//! authentic message for this node must be dropped and counted, and never delivered.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warpgate::identity::{NodeId, PublicKey};
use warpgate::signal::message::{encrypt, Message};
use warpgate::signal::{topic, Keys, MessageId, MAX_MESSAGE_LEN};
use warpgate::timing::SIGNAL_MAX_AGE;

use crate::support::{
    assert_nothing_delivered, node, note, recv, wait_stats, Mosquitto, RawClient,
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
        timestamp_ms,
        payload: note(66),
    }
}

#[tokio::test]
async fn hostile_messages_are_dropped_counted_and_never_delivered() {
    let broker = Mosquitto::start();
    let brokers = [broker.host_port()];
    let (bob, carol) = (node(&brokers).await, node(&brokers).await);
    let (alice, mallory) = (Keys::random(), Keys::random());
    let bob_key = bob.public_key();
    let bob_topic = topic(&bob_key.id());
    let raw = RawClient::connect(broker.port, Some(&bob_topic)).await;
    let mut raw = raw;

    // A genuine message, captured on the way by an eavesdropper.
    carol.send(&bob_key, note(1)).await.unwrap();
    assert_eq!(recv(&bob).await, (carol.public_key(), note(1)));
    let captured = tokio::time::timeout(crate::support::WAIT, raw.captured.recv())
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

    // Larger than the MQTT client accepts at all: the broker connection is dropped, counted,
    // and comes back.
    raw.publish(&bob_topic, vec![0; 300 * 1024]).await;
    wait_stats(&bob, "huge message counted and reconnected", |s| {
        s.messages.dropped_oversized == 2 && s.brokers[0].connects == 2 && s.brokers[0].subscribed
    })
    .await;

    // The next delivery is the next genuine message: nothing hostile got through.
    carol.send(&bob_key, note(2)).await.unwrap();
    assert_eq!(recv(&bob).await, (carol.public_key(), note(2)));
    assert_nothing_delivered(&bob, Duration::from_millis(300)).await;
    assert_eq!(bob.stats().messages.delivered, 2);
}
