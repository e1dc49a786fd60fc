//! Authentication: links are pinned to keys on both sides.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Node, Running};

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
