//! Stopping with SIGINT or SIGTERM: every long-running mode takes its clean path. Links close
//! with a reason the peer sees at once (well before any idle timeout), `--recv` keeps its
//! `.part`, a service exits 0 and an interrupted transfer exits 1 with one line saying so.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::{echo_server, Node, Running};

/// How soon after the signal both sides must have acted. QUIC's idle timeout is 10 s and a
/// dropped TCP link could hang for much longer, so only a real close gets under this.
const PROMPT: Duration = Duration::from_secs(2);
/// The reason a stopping side gives its peer.
const REASON: &str = "the peer closed the link: shutting down";

/// Sends `signal` (INT or TERM) to `child` the way a shell or a service manager would.
fn send_signal(child: &Child, signal: &str) -> Instant {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
    Instant::now()
}

/// Waits for `running` to exit and checks it did within [`PROMPT`] of `since`.
fn exits_promptly(running: &mut Running, since: Instant, who: &str) -> i32 {
    let code = running.wait(Duration::from_secs(20));
    let took = since.elapsed();
    assert!(
        took < PROMPT,
        "{who} took {took:?} to exit after the signal; stderr:\n{}",
        running.stderr()
    );
    code
}

/// The message of the one `error` event `running` printed (it has exited).
fn one_error(running: &mut Running, who: &str) -> String {
    let message = running.wait_event("error")["message"]
        .as_str()
        .expect("error message")
        .to_string();
    let errors = running
        .stderr()
        .lines()
        .filter(|l| l.contains(r#""event":"error""#))
        .count();
    assert_eq!(
        errors,
        1,
        "{who} should fail in one line: {}",
        running.stderr()
    );
    message
}

/// Whether `running` is still going.
fn still_running(running: &mut Running) -> bool {
    running.child.try_wait().expect("try_wait").is_none()
}

/// A client connection through `local` that has done one echo round trip, so the whole
/// forwarding path is up.
fn echoing_client(local: &str) -> TcpStream {
    let mut conn = TcpStream::connect(local).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"ping through the link").unwrap();
    let mut back = [0u8; 21];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping through the link");
    conn
}

/// Reads `conn` to its end and checks the end came within [`PROMPT`] of `since`.
fn closes_promptly(conn: &mut TcpStream, since: Instant, who: &str) {
    let mut rest = Vec::new();
    // EOF or a reset both mean closed; a read timeout (20 s) would be too late anyway.
    let _ = conn.read_to_end(&mut rest);
    let took = since.elapsed();
    assert!(took < PROMPT, "{who}: connection closed after {took:?}");
}

/// A connector on `via` to `addr` with the given stdin.
fn connector(node: &Node, via: &str, addr: &str, extra: &[&str], stdin: Stdio) -> Running {
    let mut args = vec!["connect", "--via", via];
    args.extend_from_slice(extra);
    args.push(addr);
    Running::spawn(node.command(&args).stdin(stdin).stdout(Stdio::null()))
}

fn zero() -> Stdio {
    Stdio::from(std::fs::File::open("/dev/zero").unwrap())
}

#[test]
fn listener_waiting_for_a_peer_is_interrupted() {
    let node = Node::new();
    let mut listener = node.listen(&[], Stdio::null(), Stdio::null());
    let sent = send_signal(&listener.child, "INT");
    assert_eq!(exits_promptly(&mut listener, sent, "listener"), 1);
    let message = one_error(&mut listener, "listener");
    assert!(message.starts_with("interrupted"), "{message}");
}

/// `listen -k` stopped while a peer streams to it: the service exits 0; the connector, whose
/// transfer is cut short, hears why at once and exits 1.
fn keep_open_listener_stopped(via: &str) {
    let (a, b) = (Node::new(), Node::new());
    let mut listener = a.listen(&["-k"], Stdio::null(), Stdio::null());
    let mut connector = connector(&b, via, &listener.addr, &[], zero());
    connector.wait_event("connected");
    listener.wait_event("connected");
    std::thread::sleep(Duration::from_millis(200));

    let sent = send_signal(&listener.child, "INT");
    assert_eq!(exits_promptly(&mut listener, sent, "listener"), 0);
    assert_eq!(exits_promptly(&mut connector, sent, "connector"), 1);
    let message = one_error(&mut connector, "connector");
    assert!(message.contains("interrupted"), "{message}");
    assert!(message.contains(REASON), "{message}");
}

#[test]
fn keep_open_listener_stopped_with_a_peer_over_tcp() {
    keep_open_listener_stopped("tcp");
}

#[test]
fn keep_open_listener_stopped_with_a_peer_over_quic() {
    keep_open_listener_stopped("quic");
}

/// `listen --forward` stopped (SIGTERM, as a service manager does) with a forwarded
/// connection open: it exits 0, the connector's local connection closes and the connector
/// exits 1 naming the reason; the connection to the target is closed too.
fn forwarding_listener_stopped(via: &str) {
    let (echo_port, echo_ends) = echo_server();
    let (a, b) = (Node::new(), Node::new());
    let echo_port = echo_port.to_string();
    let mut listener = a.listen(&["--forward", &echo_port], Stdio::null(), Stdio::null());
    let local = ["--local", "127.0.0.1:0"];
    let mut connector = connector(&b, via, &listener.addr, &local, Stdio::null());
    let bound = connector.wait_event("forwarding")["local"]
        .as_str()
        .unwrap()
        .to_string();
    let mut client = echoing_client(&bound);

    let sent = send_signal(&listener.child, "TERM");
    assert_eq!(exits_promptly(&mut listener, sent, "listener"), 0);
    closes_promptly(&mut client, sent, "the connector's local connection");
    let target_closed = echo_ends
        .recv_timeout(PROMPT)
        .expect("target connection closed");
    assert!(target_closed.duration_since(sent) < PROMPT);
    assert_eq!(exits_promptly(&mut connector, sent, "connector"), 1);
    let message = one_error(&mut connector, "connector");
    assert!(message.contains(REASON), "{message}");
}

#[test]
fn forwarding_listener_stopped_with_a_connection_open_over_tcp() {
    forwarding_listener_stopped("tcp");
}

#[test]
fn forwarding_listener_stopped_with_a_connection_open_over_quic() {
    forwarding_listener_stopped("quic");
}

/// `connect --local` stopped with a connection open: it exits 0 and closes that connection;
/// the `-k --forward` listener closes its side (the connection to the target) at once and
/// keeps serving: a new connector gets through.
fn local_forwarder_stopped(via: &str) {
    let (echo_port, echo_ends) = echo_server();
    let (a, b) = (Node::new(), Node::new());
    let echo_port = echo_port.to_string();
    // -v: the listener logs how each forwarded connection ended.
    let listen_args = ["-v", "-k", "--forward", &echo_port];
    let mut listener = a.listen(&listen_args, Stdio::null(), Stdio::null());
    let local = ["--local", "127.0.0.1:0"];
    let mut first = connector(&b, via, &listener.addr, &local, Stdio::null());
    let bound = first.wait_event("forwarding")["local"]
        .as_str()
        .unwrap()
        .to_string();
    let mut client = echoing_client(&bound);

    let sent = send_signal(&first.child, "INT");
    assert_eq!(exits_promptly(&mut first, sent, "connector"), 0);
    closes_promptly(&mut client, sent, "the connector's local connection");
    let target_closed = echo_ends
        .recv_timeout(PROMPT)
        .expect("target connection closed");
    assert!(
        target_closed.duration_since(sent) < PROMPT,
        "the listener closed its forwarded connection after {:?}",
        target_closed.duration_since(sent)
    );

    // The listener's side of the forwarded connection ended for the connector's reason.
    let deadline = sent + PROMPT;
    while !listener.stderr().contains(REASON) {
        assert!(Instant::now() < deadline, "{}", listener.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }

    assert!(still_running(&mut listener), "{}", listener.stderr());
    let mut second = connector(&b, via, &listener.addr, &local, Stdio::null());
    let bound = second.wait_event("forwarding")["local"]
        .as_str()
        .unwrap()
        .to_string();
    drop(echoing_client(&bound));
    assert!(still_running(&mut listener), "{}", listener.stderr());
}

#[test]
fn local_forwarder_stopped_with_a_connection_open_over_tcp() {
    local_forwarder_stopped("tcp");
}

#[test]
fn local_forwarder_stopped_with_a_connection_open_over_quic() {
    local_forwarder_stopped("quic");
}

/// The first `len` bytes of the test stream written into a transfer.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// Which side of a `--recv` transfer is stopped.
#[derive(Clone, Copy, Debug)]
enum Stopped {
    Receiver,
    Sender,
}

/// A `listen --recv FILE` transfer stopped mid-way, after exactly `LEN` bytes arrived. The
/// receiver keeps them in `FILE.part` (never renamed, never deleted) and, whichever side was
/// stopped, both exit 1 promptly: the stopped one says it was interrupted, the other names
/// the reason. The sender's input stays open and idle, so it must notice without writing.
fn recv_file_interrupted(via: &str, stopped: Stopped) {
    const LEN: usize = (1 << 20) + 123;
    let (a, b) = (Node::new(), Node::new());
    let file = a.dir.path().join("received.bin");
    let part = a.dir.path().join("received.bin.part");
    let file_arg = file.to_str().unwrap();
    let mut receiver = a.listen(&["--recv", file_arg], Stdio::null(), Stdio::null());
    let mut sender = connector(&b, via, &receiver.addr, &[], Stdio::piped());
    let mut input = sender.child.stdin.take().expect("stdin");
    sender.wait_event("connected");
    let data = pattern(LEN);
    input.write_all(&data).unwrap();
    input.flush().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < LEN as u64 {
        assert!(Instant::now() < deadline, "{}", receiver.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }

    let (victim, peer) = match stopped {
        Stopped::Receiver => (&mut receiver, &mut sender),
        Stopped::Sender => (&mut sender, &mut receiver),
    };
    let sent = send_signal(&victim.child, "INT");
    assert_eq!(exits_promptly(victim, sent, "stopped side"), 1);
    assert_eq!(exits_promptly(peer, sent, "its peer"), 1);
    drop(input);

    let stopped_says = one_error(victim, "stopped side");
    assert!(stopped_says.starts_with("interrupted"), "{stopped_says}");
    let peer_says = one_error(peer, "its peer");
    assert!(peer_says.contains(REASON), "{peer_says}");
    let receiver_says = match stopped {
        Stopped::Receiver => stopped_says,
        Stopped::Sender => peer_says,
    };
    assert!(
        receiver_says.contains(&format!("{LEN} received")),
        "the receiver counts what it kept: {receiver_says}"
    );
    assert!(
        receiver_says.contains("received.bin.part"),
        "{receiver_says}"
    );

    assert!(
        !file.exists(),
        "an incomplete file must not be moved into place"
    );
    let kept = std::fs::read(&part).expect("the .part file is kept");
    assert_eq!(kept.len(), LEN);
    assert!(
        kept == data,
        "the .part file holds exactly the bytes received"
    );
}

#[test]
fn recv_file_receiver_interrupted_over_tcp() {
    recv_file_interrupted("tcp", Stopped::Receiver);
}

#[test]
fn recv_file_receiver_interrupted_over_quic() {
    recv_file_interrupted("quic", Stopped::Receiver);
}

#[test]
fn recv_file_sender_interrupted_over_tcp() {
    recv_file_interrupted("tcp", Stopped::Sender);
}

#[test]
fn recv_file_sender_interrupted_over_quic() {
    recv_file_interrupted("quic", Stopped::Sender);
}
