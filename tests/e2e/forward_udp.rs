//! UDP forwarding: `listen --forward-udp` + `connect --local-udp` over QUIC (datagrams) and TCP
//! (frames on a stream): echoes, 100,000 datagrams with loss and latency, 50 flows kept apart,
//! oversized datagrams counted and never truncated, idle flows forgotten, the flags' limits.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::Finished;
use crate::support::{echo_server, Node, Running};

/// What the echo server saw: each datagram's source and length.
type Seen = Arc<Mutex<Vec<(SocketAddr, usize)>>>;

/// A UDP echo server on loopback: each datagram goes back to its sender, except that
/// `big:N` is answered with N bytes. Unlike `socat … EXEC:cat`, it keeps datagrams whole
/// (socat's pipe cuts them at 8 KiB).
fn udp_echo() -> (u16, Seen) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            log.lock().unwrap().push((from, n));
            let asked = std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|t| t.strip_prefix("big:"))
                .and_then(|len| len.parse::<usize>().ok());
            let _ = match asked {
                Some(len) => socket.send_to(&vec![b'r'; len], from),
                None => socket.send_to(&buf[..n], from),
            };
        }
    });
    (port, seen)
}

/// A listener forwarding to `target` and a connector with a local UDP port, over `via`.
struct Forward {
    listener: Running,
    connector: Running,
    local: SocketAddr,
    _nodes: (Node, Node),
}

impl Forward {
    fn start(target: u16, via: &str, listen_extra: &[&str], connect_extra: &[&str]) -> Self {
        let (a, b) = (Node::new(), Node::new());
        let target = format!("127.0.0.1:{target}");
        let mut args = vec!["--forward-udp", target.as_str()];
        args.extend_from_slice(listen_extra);
        let listener = a.listen(&args, Stdio::null(), Stdio::null());
        let mut args = vec![
            "connect",
            &listener.addr,
            "--via",
            via,
            "--local-udp",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(connect_extra);
        let mut connector =
            Running::spawn(b.command(&args).stdin(Stdio::null()).stdout(Stdio::null()));
        let connected = connector.wait_event("connected");
        assert_eq!(connected["transport"], via, "{connected}");
        let local = connector.wait_event("forwarding")["local"]
            .as_str()
            .expect("local address")
            .parse()
            .expect("a socket address");
        Forward {
            listener,
            connector,
            local,
            _nodes: (a, b),
        }
    }

    /// A local UDP socket that talks to the connector's port.
    fn client(&self) -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(self.local).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket
    }

    /// Stops the connector (SIGTERM, as a service manager does) and waits for both to exit 0
    /// (the listener serves one peer); returns what they left, connector first.
    fn stop(self) -> (Finished, Finished) {
        let Forward {
            listener,
            connector,
            _nodes,
            ..
        } = self;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &connector.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let connector = connector.finish(WAIT);
        let listener = listener.finish(WAIT);
        assert_eq!(connector.code, Some(0), "{:#?}", connector.stderr);
        assert_eq!(listener.code, Some(0), "{:#?}", listener.stderr);
        (connector, listener)
    }

    /// [`Forward::stop`], then the `done` event of each.
    fn done(self) -> (Value, Value) {
        let (connector, listener) = self.stop();
        let done = |f: &Finished| f.event("done").cloned().expect("a done event");
        (done(&connector), done(&listener))
    }
}

/// How long a process may take to exit once it should.
const WAIT: Duration = Duration::from_secs(10);

/// Sends `message` and returns the reply, retrying twice on silence (UDP may lose one).
fn ask(socket: &UdpSocket, message: &[u8]) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..3 {
        socket.send(message).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// The message of each WARN log line of a `--json` process's stderr.
fn warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == "WARN")
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_string))
        .collect()
}

fn echoes(via: &str, sizes: &[usize]) {
    let (port, _) = udp_echo();
    let forward = Forward::start(port, via, &[], &[]);
    let client = forward.client();
    for (i, &len) in sizes.iter().enumerate() {
        let message: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
        let back = ask(&client, &message).unwrap_or_else(|| panic!("no echo of {len} bytes"));
        assert_eq!(back, message, "{len} bytes over {via}");
    }
    let (connector, listener) = forward.done();
    let n = sizes.len() as u64;
    for done in [&connector, &listener] {
        assert!(done["datagrams_sent"].as_u64() >= Some(n), "{done}");
        assert!(done["datagrams_received"].as_u64() >= Some(n), "{done}");
        assert_eq!(done["flows"], 1, "{done}");
        assert_eq!(done["oversized"], 0, "{done}");
    }
}

#[test]
fn datagrams_echo_through_a_quic_link() {
    // An empty datagram is a datagram too.
    echoes("quic", &[5, 0, 1200, 1400]);
}

/// A stream has no MTU: what QUIC would call oversized goes through whole, up to UDP's limit.
#[test]
fn datagrams_echo_through_a_tcp_link_whatever_their_size() {
    echoes("tcp", &[5, 0, 1200, 10_000, 65_000]);
}

/// Sends `count` datagrams through `local` with at most `window` unanswered (by sequence
/// number, so a lost one does not stall the rest) and returns (received, round trips).
fn blast(local: SocketAddr, count: u64, window: u64) -> (u64, Vec<Duration>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(local).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let epoch = Instant::now();
    // The highest sequence number echoed so far, plus one.
    let progress = Arc::new(AtomicU64::new(0));
    let sender = {
        let socket = socket.try_clone().unwrap();
        let progress = progress.clone();
        std::thread::spawn(move || {
            let mut message = [0u8; 64];
            let mut stalled_since = None;
            let mut seq = 0;
            while seq < count {
                if seq >= progress.load(Ordering::Acquire) + window {
                    // The whole window lost: move on after a while rather than wait forever.
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < Duration::from_millis(200) {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                }
                stalled_since = None;
                message[..8].copy_from_slice(&seq.to_be_bytes());
                let sent_at = epoch.elapsed().as_nanos() as u64;
                message[8..16].copy_from_slice(&sent_at.to_be_bytes());
                socket.send(&message).unwrap();
                seq += 1;
            }
        })
    };
    let mut rtts = Vec::with_capacity(count as usize);
    let mut buf = [0u8; 128];
    while let Ok(n) = socket.recv(&mut buf) {
        assert_eq!(n, 64, "a datagram changed size on the way");
        let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
        let sent_at = u64::from_be_bytes(buf[8..16].try_into().unwrap());
        rtts.push(epoch.elapsed() - Duration::from_nanos(sent_at));
        progress.fetch_max(seq + 1, Ordering::AcqRel);
        if seq + 1 == count {
            break;
        }
    }
    sender.join().unwrap();
    (rtts.len() as u64, rtts)
}

fn hundred_thousand(via: &str) {
    const COUNT: u64 = 100_000;
    let (port, _) = udp_echo();
    let forward = Forward::start(port, via, &[], &[]);
    let started = Instant::now();
    let (received, mut rtts) = blast(forward.local, COUNT, 32);
    let took = started.elapsed();
    // The same through no forwarder at all, for scale.
    let (_, mut direct) = blast(SocketAddr::from(([127, 0, 0, 1], port)), 10_000, 32);
    let loss = (COUNT - received) as f64 * 100.0 / COUNT as f64;
    rtts.sort();
    direct.sort();
    let pct = |v: &[Duration], p: usize| v.get(v.len() * p / 100).copied().unwrap_or_default();
    eprintln!(
        "{via}: {COUNT} datagrams of 64 bytes, window 32: {received} echoed ({loss:.3}% lost) in \
         {took:.2?} ({:.0}/s); round trip p50 {:?} p99 {:?} max {:?}; without warpgate p50 {:?} \
         p99 {:?} (debug build)",
        received as f64 / took.as_secs_f64(),
        pct(&rtts, 50),
        pct(&rtts, 99),
        rtts.last().copied().unwrap_or_default(),
        pct(&direct, 50),
        pct(&direct, 99),
    );
    assert!(loss < 1.0, "{loss:.3}% lost over {via}");
    let (connector, listener) = forward.done();
    eprintln!("{via}: connector {connector}\n{via}: listener {listener}");
    assert_eq!(connector["oversized"], 0);
    assert_eq!(listener["flows"], 1);
}

#[test]
fn a_hundred_thousand_datagrams_echo_with_little_loss_over_quic() {
    hundred_thousand("quic");
}

#[test]
fn a_hundred_thousand_datagrams_echo_with_little_loss_over_tcp() {
    hundred_thousand("tcp");
}

fn flows_kept_apart(via: &str) {
    const FLOWS: usize = 50;
    const MESSAGES: usize = 20;
    let (port, seen) = udp_echo();
    let forward = Forward::start(port, via, &[], &[]);
    let clients: Vec<_> = (0..FLOWS)
        .map(|i| {
            let socket = forward.client();
            std::thread::spawn(move || {
                for j in 0..MESSAGES {
                    let message = format!("flow {i} message {j} {}", "x".repeat(i * 20));
                    let back = ask(&socket, message.as_bytes())
                        .unwrap_or_else(|| panic!("flow {i}: no reply to message {j}"));
                    assert_eq!(
                        String::from_utf8_lossy(&back),
                        message,
                        "flow {i} got another's reply"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    // One socket per flow on the listener's side: the target saw 50 sources.
    let sources: HashSet<SocketAddr> = seen.lock().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(sources.len(), FLOWS, "{sources:?}");
    let (connector, listener) = forward.done();
    assert_eq!(connector["flows"], FLOWS, "{connector}");
    assert_eq!(listener["flows"], FLOWS, "{listener}");
}

#[test]
fn fifty_flows_each_get_only_their_own_replies_over_quic() {
    flows_kept_apart("quic");
}

#[test]
fn fifty_flows_each_get_only_their_own_replies_over_tcp() {
    flows_kept_apart("tcp");
}

/// Over QUIC a datagram must fit one QUIC packet (at most ~6 KB on loopback, ~1.4 KB on the
/// internet): one that does not is dropped whole and counted, both ways, with one warning per
/// flow. Nothing cut short reaches either end.
#[test]
fn an_oversized_datagram_is_counted_and_never_truncated() {
    let (port, seen) = udp_echo();
    let forward = Forward::start(port, "quic", &[], &[]);
    let client = forward.client();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..2 {
        client.send(&[7u8; 10_000]).unwrap();
        assert!(
            client.recv(&mut buf).is_err(),
            "an oversized datagram came back"
        );
    }
    assert_eq!(ask(&client, b"small").as_deref(), Some(&b"small"[..]));
    // The reply is the oversized one now: the listener drops and counts it.
    client.send(b"big:9000").unwrap();
    assert!(
        client.recv(&mut buf).is_err(),
        "an oversized reply came back"
    );
    assert_eq!(ask(&client, b"still").as_deref(), Some(&b"still"[..]));

    let lengths: Vec<usize> = seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
    assert!(
        lengths.iter().all(|&n| n == 5 || n == 8),
        "the target got something cut short or oversized: {lengths:?}"
    );
    let (connector, listener) = forward.stop();
    let fit_warnings = |f: &Finished| -> Vec<String> {
        warnings(&f.stderr.join("\n"))
            .into_iter()
            .filter(|w| w.contains("does not fit the link") && w.contains("never truncated"))
            .collect()
    };
    let said = fit_warnings(&connector);
    assert_eq!(said.len(), 1, "one warning for the flow: {said:?}");
    assert!(said[0].contains("10000-byte UDP datagram"), "{}", said[0]);
    let said = fit_warnings(&listener);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("9000-byte UDP reply"), "{}", said[0]);
    let done = |f: &Finished| f.event("done").cloned().expect("a done event");
    assert_eq!(done(&connector)["oversized"], 2, "{:?}", connector.events);
    assert_eq!(done(&listener)["oversized"], 1, "{:?}", listener.events);
}

/// The source port the target saw for the last datagram.
fn last_source(seen: &Seen) -> SocketAddr {
    seen.lock()
        .unwrap()
        .last()
        .expect("the target saw something")
        .0
}

/// A flow idle for `--udp-idle` is forgotten on the side given the short idle time: its next
/// datagram starts a new flow, which the target sees as a new source port on the listener.
/// `flows`: how many flows (connector, listener) the two count.
fn idle_flow_forgotten(listen_extra: &[&str], connect_extra: &[&str], flows: (u64, u64)) {
    let (port, seen) = udp_echo();
    let forward = Forward::start(port, "quic", listen_extra, connect_extra);
    let client = forward.client();
    assert_eq!(ask(&client, b"one").as_deref(), Some(&b"one"[..]));
    let first = last_source(&seen);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ask(&client, b"two").as_deref(), Some(&b"two"[..]));
    assert_eq!(
        last_source(&seen),
        first,
        "the flow ended before its idle time"
    );
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(ask(&client, b"three").as_deref(), Some(&b"three"[..]));
    assert_ne!(last_source(&seen), first, "the idle flow was kept");
    let (connector, listener) = forward.done();
    assert_eq!(connector["flows"], flows.0, "{connector}");
    assert_eq!(listener["flows"], flows.1, "{listener}");
}

#[test]
fn the_listener_closes_a_flow_idle_for_its_udp_idle() {
    idle_flow_forgotten(&["--udp-idle", "2"], &[], (1, 2));
}

#[test]
fn the_connector_forgets_a_flow_idle_for_its_udp_idle() {
    idle_flow_forgotten(&[], &["--udp-idle", "2"], (2, 2));
}

#[test]
fn a_udp_forward_without_allow_warns_that_anyone_with_the_address_gets_in() {
    let a = Node::new();
    let mut open = a.listen(&["--forward-udp", "53"], Stdio::null(), Stdio::null());
    open.wait_event("forwarding");
    let said = warnings(&open.stderr());
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("anyone with this address can reach localhost:53 (UDP)"),
        "{}",
        said[0]
    );
}

#[test]
fn tcp_and_udp_forwarding_are_separate_listeners() {
    let a = Node::new();
    for args in [
        &["listen", "--forward", "22", "--forward-udp", "53"][..],
        &["listen", "--udp-idle", "5"][..],
        &["connect", "wgx", "--local", "22", "--local-udp", "53"][..],
    ] {
        let out = a.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot be used with") || stderr.contains("required"),
            "{stderr}"
        );
    }
}

/// A connector asking for UDP forwarding from a listener that forwards TCP is told so, rather
/// than sending datagrams nobody reads.
#[test]
fn local_udp_against_a_tcp_forward_says_the_peer_does_not_forward_udp() {
    let tcp_echo = echo_server().0.to_string();
    let (a, b) = (Node::new(), Node::new());
    let _listener = a.listen(&["--forward", &tcp_echo], Stdio::null(), Stdio::null());
    let connector = Running::spawn(
        b.command(&["connect", &_listener.addr, "--local-udp", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    )
    .finish(Duration::from_secs(20));
    assert_eq!(connector.code, Some(1), "{:#?}", connector.stderr);
    let message = connector.event("error").expect("an error event")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("did not accept UDP forwarding") && message.contains("--forward-udp"),
        "{message}"
    );
}

/// Sends `message` from each socket (not yet answered) a few times and counts the sockets that
/// got it back.
fn answered(sockets: &[UdpSocket], message: &[u8]) -> usize {
    let mut got = vec![false; sockets.len()];
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        if got.iter().all(|g| *g) {
            break;
        }
        for (socket, got) in sockets.iter().zip(&got) {
            if !got {
                socket.send(message).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        for (socket, got) in sockets.iter().zip(&mut got) {
            socket.set_nonblocking(true).unwrap();
            while let Ok(n) = socket.recv(&mut buf) {
                *got |= &buf[..n] == message;
            }
        }
    }
    got.iter().filter(|g| **g).count()
}

/// `n` local sockets sending to `forward`'s port.
fn sockets(forward: &Forward, n: usize) -> Vec<UdpSocket> {
    (0..n).map(|_| forward.client()).collect()
}

/// The connector holds at most 256 flows (the listener would take no more from one peer): a new
/// source beyond them is dropped and counted until a flow has been idle long enough.
#[test]
fn the_flow_cap_turns_new_sources_away_until_a_flow_is_idle() {
    let (port, _) = udp_echo();
    // The first sources are answered within 1.5 s and the late ones wait 1.5 s for nothing:
    // well inside the idle time, even on a loaded machine.
    let idle = ["--udp-idle", "6"];
    let forward = Forward::start(port, "quic", &idle, &idle);
    let first = sockets(&forward, 256);
    assert_eq!(answered(&first, b"in"), 256);
    let late = sockets(&forward, 4);
    assert_eq!(
        answered(&late, b"late"),
        0,
        "a flow beyond the cap got through"
    );
    std::thread::sleep(Duration::from_millis(6500));
    assert_eq!(answered(&late, b"later"), 4, "no room after the idle time");
    let (connector, listener) = forward.done();
    assert_eq!(connector["flows"], 260, "{connector}");
    assert!(connector["refused"].as_u64() >= Some(4), "{connector}");
    assert_eq!(listener["flows"], 260, "{listener}");
    assert_eq!(listener["refused"], 0, "{listener}");
}

/// A listener serves at most 512 flows over all its peers at once (each is a socket): a third
/// peer with 200 flows beside two others gets 112 of them.
#[test]
fn a_listener_holds_at_most_512_flows_over_all_its_peers() {
    let (port, _) = udp_echo();
    let (a, b) = (Node::new(), Node::new());
    let target = format!("127.0.0.1:{port}");
    let mut listener = a.listen(
        &["-k", "--forward-udp", &target],
        Stdio::null(),
        Stdio::null(),
    );
    let mut served = 0;
    let mut connectors = Vec::new();
    for _ in 0..3 {
        let mut connector = Running::spawn(
            b.command(&["connect", &listener.addr, "--local-udp", "127.0.0.1:0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        );
        let local: SocketAddr = connector.wait_event("forwarding")["local"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let sockets: Vec<UdpSocket> = (0..200)
            .map(|_| {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(local).unwrap();
                socket
            })
            .collect();
        served += answered(&sockets, b"hello");
        connectors.push((connector, sockets));
    }
    assert_eq!(served, 512);
    for (connector, _) in &connectors {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &connector.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut refused = 0;
    for _ in 0..3 {
        let done = listener.wait_event("done");
        refused += done["refused"].as_u64().unwrap_or_default();
    }
    assert!(refused >= 88, "{refused}");
    let said = warnings(&listener.stderr());
    assert!(
        said.iter().any(|w| w.contains("UDP flows at their cap")),
        "{said:?}"
    );
}

/// A `--forward-udp` listener stopped (SIGTERM) ends its session with the shutdown reason: the
/// connector learns at once and exits 1 saying why, the listener exits 0 (a service).
fn listener_stopped(via: &str) {
    let (port, _) = udp_echo();
    let forward = Forward::start(port, via, &[], &[]);
    assert_eq!(ask(&forward.client(), b"hi").as_deref(), Some(&b"hi"[..]));
    let Forward {
        listener,
        connector,
        _nodes,
        ..
    } = forward;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &listener.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let stopped = Instant::now();
    let listener = listener.finish(WAIT);
    let connector = connector.finish(WAIT);
    let took = stopped.elapsed();
    assert_eq!(listener.code, Some(0), "{:#?}", listener.stderr);
    assert_eq!(connector.code, Some(1), "{:#?}", connector.stderr);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let message = connector.event("error").expect("an error event")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("shutting down"), "{message}");
    assert!(connector.event("done").is_some(), "{:?}", connector.events);
}

#[test]
fn a_stopped_listener_ends_the_session_with_its_reason_over_quic() {
    listener_stopped("quic");
}

#[test]
fn a_stopped_listener_ends_the_session_with_its_reason_over_tcp() {
    listener_stopped("tcp");
}

/// The other way round: a `--local` connector's TCP stream reaching a `--forward-udp` listener
/// is refused as no UDP session (its bytes never reach the UDP target), and the listener says
/// why.
#[test]
fn a_tcp_forward_stream_is_refused_by_a_udp_forwarding_listener() {
    let (port, seen) = udp_echo();
    let (a, b) = (Node::new(), Node::new());
    let target = format!("127.0.0.1:{port}");
    let listener = a.listen(&["--forward-udp", &target], Stdio::null(), Stdio::null());
    let mut connector = Running::spawn(
        b.command(&["connect", &listener.addr, "--local", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    let local = connector.wait_event("forwarding")["local"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tcp = std::net::TcpStream::connect(&local).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut tcp, b"SSH-2.0-client\r\n").unwrap();
    let mut rest = Vec::new();
    // Reset or closed, with nothing from the UDP side.
    let _ = std::io::Read::read_to_end(&mut tcp, &mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    let listener = listener.finish(WAIT);
    assert_eq!(listener.code, Some(1), "{:#?}", listener.stderr);
    let message = listener.event("error").expect("an error event")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("not a UDP session"), "{message}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "bytes reached the UDP target"
    );
}
