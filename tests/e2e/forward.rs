//! Port forwarding: `listen --forward` + `connect --local` carry many TCP connections at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{echo_server, Node, Running};

#[test]
fn twenty_concurrent_clients_echo_through_the_link() {
    let echo_port = echo_server().0.to_string();
    let (a, b) = (Node::new(), Node::new());
    let _listener = a.listen(&["--forward", &echo_port], Stdio::null(), Stdio::null());
    let mut connector = Running::spawn(
        b.command(&["connect", "--local", "127.0.0.1:0", &_listener.addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let local = connector.wait_event("forwarding")["local"]
        .as_str()
        .unwrap()
        .to_string();

    let clients: Vec<_> = (0..20u8)
        .map(|i| {
            let local = local.clone();
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(&local).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                // Several round trips per client, each with its own content.
                for round in 0..5u8 {
                    let message: Vec<u8> = (0..(4096 + usize::from(i) * 100))
                        .map(|j| (j as u8) ^ i ^ round)
                        .collect();
                    conn.write_all(&message).unwrap();
                    let mut back = vec![0u8; message.len()];
                    conn.read_exact(&mut back).unwrap();
                    assert_eq!(back, message, "client {i} round {round}");
                }
                conn.shutdown(std::net::Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                conn.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    assert!(
        connector.child.try_wait().unwrap().is_none(),
        "connector exited early: {}",
        connector.stderr()
    );
}

/// The `WARN` log lines on a `--json` process's stderr.
fn warnings(running: &Running) -> Vec<String> {
    running
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN")
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_forward_without_allow_warns_that_anyone_with_the_address_gets_in() {
    let (a, friend) = (Node::new(), Node::new());
    let mut open = a.listen(&["--forward", "9"], Stdio::null(), Stdio::null());
    // The warning comes out before the service starts.
    open.wait_event("forwarding");
    let said = warnings(&open);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("anyone with this address can reach localhost:9"),
        "{}",
        said[0]
    );
    drop(open);

    // The friend by its address (the whole key): a bare node id would warn that it is short.
    let out = friend.command(&["addr"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let friend_addr = doc["text"].as_str().expect("text").to_string();
    let mut restricted = a.listen(
        &["--forward", "9", "--allow", &friend_addr],
        Stdio::null(),
        Stdio::null(),
    );
    restricted.wait_event("forwarding");
    assert_eq!(warnings(&restricted), Vec::<String>::new());
}
