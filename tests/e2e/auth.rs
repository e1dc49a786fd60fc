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
