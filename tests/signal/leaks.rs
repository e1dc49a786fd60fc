//! What a broker learns, read from the broker's own log: topics and client ids that name no
//! node, replies on an inbox only the session knows, and silence towards keys outside `--allow`
//! (issue 13, "signalling leaks less").

use std::collections::BTreeSet;
use std::time::Duration;

use warpgate::identity::{Allowed, PublicKey};
use warpgate::signal::{topic, Inbox, Keys, Signal, SignalConfig, SignalError};

use crate::support::{node, node_with, note, recv, recv_from, wait_stats, Mosquitto};

/// Everything the broker logged so far (mosquitto writes its log line by line).
fn broker_log(broker: &Mosquitto) -> String {
    let path = broker.log.as_ref().expect("a logging broker");
    std::fs::read_to_string(path).expect("read the broker's log")
}

/// The values in `log` between `before` and the next `after` on each line that has them.
fn between(log: &str, before: &str, after: char) -> BTreeSet<String> {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(before)? + before.len()..];
            Some(rest[..rest.find(after)?].to_string())
        })
        .collect()
}

fn names_of(key: &PublicKey) -> [String; 2] {
    [key.id().to_string(), key.fingerprint()]
}

/// An offer, its answer and a ping through a logging broker: no topic and no client id in
/// the broker's log carries either node's id or fingerprint; the listener's topic is the keyed
/// hash of its key; the answer goes to the connector's session inbox, never to a topic its key
/// would give; every connection has its own random client id.
#[tokio::test]
async fn the_broker_log_names_no_node_and_answers_go_to_the_session_inbox() {
    let broker = Mosquitto::start_logging();
    let brokers = [broker.host_port()];
    let listener = node(&brokers).await;
    let connector_keys = Keys::random();
    let connector_key = connector_keys.public_key();
    let connector = Signal::start_with(connector_keys.clone(), &brokers, SignalConfig::default())
        .await
        .unwrap();
    let listener_peer = listener.peer();
    let (sent, (from, got)) = tokio::join!(connector.send(&listener_peer, note(1)), async {
        recv_from(&listener).await
    });
    sent.unwrap();
    assert_eq!((from, got), (connector.peer(), note(1)));
    listener.send(&from, note(2)).await.unwrap();
    assert_eq!(recv(&connector).await, (listener.public_key(), note(2)));
    connector.ping(&listener_peer).await.unwrap();
    // The same key's next session gets another client id and another inbox.
    let again = Signal::start_with(connector_keys, &brokers, SignalConfig::default())
        .await
        .unwrap();
    wait_stats(&listener, "the ping's pong acked", |s| {
        s.messages.acked == 2
    })
    .await;

    let log = broker_log(&broker);
    for key in [listener.public_key(), connector_key] {
        for name in names_of(&key) {
            assert!(
                !log.contains(&name),
                "the broker's log names {name}:\n{log}"
            );
        }
    }
    // "Received SUBSCRIBE from <client>" is followed by a line "\t<topic> (QoS 0)".
    let subscribed = between(&log, "\t", ' ');
    let listening = topic(&listener.public_key(), &Inbox::LISTENING);
    let session = topic(&connector_key, &connector.peer().inbox);
    assert_eq!(
        subscribed,
        BTreeSet::from([
            listening.clone(),
            session.clone(),
            topic(&connector_key, &again.peer().inbox)
        ]),
        "{log}"
    );
    let published = between(&log, "q0, r0, m0, '", '\'');
    assert_eq!(
        published,
        BTreeSet::from([listening, session]),
        "offer and ping to the listener, answer, acks and pong to the session inbox:\n{log}"
    );
    assert!(!log.contains(&topic(&connector_key, &Inbox::LISTENING)));
    let client_ids = between(&log, " as ", ' ');
    assert_eq!(client_ids.len(), 3, "{client_ids:?}");
    assert!(client_ids
        .iter()
        .all(|id| id.len() == 23 && id.starts_with("wg")));
    // Every connection spoke MQTT 5 (the broker drops what exceeds our packet size).
    assert_eq!(log.matches("(p5, c1, k15)").count(), 3, "{log}");
}

/// A listener with `--allow` answers nothing to other keys: no ack, no pong, not delivered;
/// the stranger's session inbox receives nothing at all.
#[tokio::test]
async fn keys_outside_allow_get_silence() {
    let broker = Mosquitto::start();
    let brokers = [broker.host_port()];
    let (alice_keys, mallory_keys) = (Keys::random(), Keys::random());
    let alice_key = alice_keys.public_key();
    let bob = node_with(
        &brokers,
        SignalConfig::listener(Some(vec![Allowed::Key(alice_key)])),
    )
    .await;
    let mut quick = SignalConfig::default();
    quick.session.send_timeout = Duration::from_secs(1);
    let mallory = Signal::start_with(mallory_keys, &brokers, quick.clone())
        .await
        .unwrap();
    let alice = Signal::start_with(alice_keys, &brokers, quick)
        .await
        .unwrap();

    let bob_peer = bob.peer();
    let (sent, pinged) = tokio::join!(mallory.send(&bob_peer, note(1)), mallory.ping(&bob_peer));
    assert!(matches!(sent, Err(SignalError::Timeout { .. })), "{sent:?}");
    assert!(
        matches!(pinged, Err(SignalError::Timeout { .. })),
        "{pinged:?}"
    );
    alice.send(&bob.peer(), note(2)).await.unwrap();
    assert_eq!(recv(&bob).await, (alice_key, note(2)));

    let (b, m) = (bob.stats(), mallory.stats());
    assert!(b.messages.dropped_not_allowed >= 2, "{b:#?}");
    assert_eq!(
        (b.messages.delivered, b.messages.acks_sent),
        (1, 1),
        "only alice's message was taken in and acked: {b:#?}"
    );
    assert_eq!(m.brokers[0].received, 0, "mallory heard nothing: {m:#?}");
    assert!(tokio::time::timeout(Duration::from_millis(200), bob.recv())
        .await
        .is_err());
}
