//! Authentication: links are pinned to keys on both sides.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::mosquitto::Mosquitto;
use crate::support::{Node, Running, BIN};

#[test]
fn allow_list_admits_listed_peers_only() {
    let (listener_node, friend, stranger) = (Node::new(), Node::new(), Node::new());
    let friend_id = friend.id();
    let mut listener = listener_node.listen(&["--allow", &friend_id], Stdio::null(), Stdio::null());

    let out = stranger
        .command(&["connect", "--timeout", "5", &listener.addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--allow"),
        "refusal should say why: {stderr}"
    );

    let out = friend
        .command(&["connect", &listener.addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listener.wait(Duration::from_secs(10)), 0);
}

/// `--allow` by a whole key: the peer's address or its key fingerprint admits it and nobody
/// else; a bare node id still works but warns that it is short.
#[test]
fn allow_compares_whole_keys_given_as_address_or_fingerprint() {
    let (listener_node, friend, stranger) = (Node::new(), Node::new(), Node::new());
    let out = friend.command(&["addr"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let address = doc["text"].as_str().expect("text").to_string();
    let key = warpgate::addr::Address::parse(&address).unwrap().key;
    for allow in [address.clone(), key.fingerprint()] {
        let mut listener = listener_node.listen(&["--allow", &allow], Stdio::null(), Stdio::null());
        let refused = stranger
            .command(&["connect", "--timeout", "5", &listener.addr])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            refused.status.code(),
            Some(1),
            "a stranger with --allow {allow}"
        );
        let admitted = friend
            .command(&["connect", &listener.addr])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&admitted.stderr);
        assert!(admitted.status.success(), "--allow {allow}: {stderr}");
        assert_eq!(listener.wait(Duration::from_secs(10)), 0);
        assert!(
            !listener.stderr().contains("80 bits"),
            "no warning for a whole key"
        );
    }
    let mut listener =
        listener_node.listen(&["--allow", &friend.id()], Stdio::null(), Stdio::null());
    let _ = friend
        .command(&["connect", &listener.addr])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(listener.wait(Duration::from_secs(10)), 0);
    assert!(
        listener.stderr().contains("80 bits"),
        "{}",
        listener.stderr()
    );
}

#[test]
fn connector_refuses_a_listener_with_another_key() {
    let (real, impostor_key, connector) = (Node::new(), Node::new(), Node::new());
    let listener = real.listen(&[], Stdio::null(), Stdio::null());
    // An address carrying another node's key but pointing at the real listener's port.
    let port = warpgate::addr::Address::parse(&listener.addr)
        .unwrap()
        .candidates[0]
        .addr
        .port();
    let out = impostor_key
        .command(&["addr", "--port", &port.to_string()])
        .output()
        .unwrap();
    let forged: Value = serde_json::from_slice(&out.stdout).unwrap();
    let forged = forged["text"].as_str().unwrap();

    let mut attempt = Running::spawn(
        connector
            .command(&["connect", "--timeout", "5", forged])
            .stdin(Stdio::null()),
    );
    assert_eq!(attempt.wait(Duration::from_secs(20)), 1);
    let error = attempt.wait_event("error");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&real.id()) && message.contains("not"),
        "{message}"
    );
}

/// Over signalling too, `listen --allow` answers only the keys it admits: a stranger's offer
/// gets no acknowledgement and no answer (silence), while the friend's offer is acknowledged
/// and answered on the friend's session inbox (issue 13).
#[tokio::test]
async fn signalling_answers_only_allowed_keys() {
    use warpgate::identity::{Allowed, Identity};
    use warpgate::signal::{Keys, Offer, Payload, Peer, Signal, SignalConfig, SignalError};

    let broker = Mosquitto::start();
    let (listener_node, friend) = (Node::new(), Node::new());
    let out = friend.command(&["addr"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let friend_addr = doc["text"].as_str().expect("text").to_string();
    let config = listener_node.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "brokers = [\"127.0.0.1:{}\"]\nstun = []\nturn = []\nregistries = []\n",
            broker.port
        ),
    )
    .unwrap();
    let mut listen = std::process::Command::new(BIN);
    listen
        .arg("--home")
        .arg(listener_node.home())
        .arg("--json")
        .arg("--no-portmap")
        .arg("--config")
        .arg(&config)
        .args(["listen", "--port", "0", "--allow", &friend_addr])
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env_remove("WARPGATE_CONFIG");
    let mut listener = Running::spawn(&mut listen);
    let event = listener.wait_event("listening");
    let address = warpgate::addr::Address::parse(event["addr"].as_str().unwrap()).unwrap();
    assert_eq!(address.brokers, [broker.host_port()]);
    let listener_key = address.key;
    let to_listener = Peer::listening(listener_key);
    let offer = |n: u8| {
        Payload::Offer(Offer {
            udp: Vec::new(),
            tcp: Vec::new(),
            strategies: Vec::new(),
            nonce: [n; 16],
            relayed: Vec::new(),
            mapping: warpgate::nat::SocketMapping::Unknown,
        })
    };
    let mut config = SignalConfig {
        allowed: Some(vec![Allowed::Key(listener_key)]),
        ..SignalConfig::default()
    };
    config.session.send_timeout = Duration::from_secs(3);
    let brokers = [broker.host_port()];

    let stranger = Signal::start_with(Keys::random(), &brokers, config.clone())
        .await
        .unwrap();
    let sent = stranger.send(&to_listener, offer(1)).await;
    assert!(matches!(sent, Err(SignalError::Timeout { .. })), "{sent:?}");
    let heard = stranger.stats().brokers[0].received;
    assert_eq!(heard, 0, "the stranger heard nothing at all");

    let identity = Identity::load_or_create(&friend.home()).unwrap();
    config.session.send_timeout = Duration::from_secs(10);
    let friend = Signal::start(&identity, &brokers, config).await.unwrap();
    friend.send(&to_listener, offer(2)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), friend.recv())
        .await
        .expect("answered in time")
        .expect("signalling running");
    assert!(
        matches!(&answer, (from, Payload::Answer(a)) if from.key == listener_key && a.nonce == [2; 16]),
        "{answer:?}"
    );
    drop(listener);
}
