//! UDP forwarding across a NAT pair (issue 14): a real DNS server (dnsmasq) behind one
//! port-restricted NAT answers a query made behind the other, through `listen --forward-udp`
//! and `connect --local-udp` on a punched QUIC link; and 10,000 datagrams echoed the same way,
//! with loss and round trips reported.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{infra, lab, shared, Lab};
use crate::process::Running;

/// The listener's and the connector's hosts: each behind its own port-restricted NAT.
const LISTENER: &str = "pr1h";
const CONNECTOR: &str = "pr2h";
/// Where the servers listen inside the listener's host, and the connector's local port.
const DNS_PORT: u16 = 5353;
const ECHO_PORT: u16 = 7007;
const LOCAL_PORT: u16 = 5300;
/// The name dnsmasq answers, and its address.
const NAME: &str = "warpgate.lab";
const ANSWER: &str = "192.0.2.53";

/// A server started in a lab host, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(lab: &Lab, host: &str, program: &str, args: &[&str]) -> Server {
    let child = lab
        .command(host, program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} in {host}: {e} (scripts/install-deps)"));
    Server(child)
}

/// Runs a Python snippet in `host` with `args` and returns its stdout (one JSON document).
fn python(lab: &Lab, host: &str, code: &str, args: &[&str]) -> Value {
    let mut all = vec!["python3", "-c", code];
    all.extend_from_slice(args);
    let out = lab.exec(host, &all);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{host}: bad output {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `listen --forward-udp 127.0.0.1:PORT` on [`LISTENER`] and `connect --local-udp` on
/// [`CONNECTOR`] through a punched QUIC link; returns both once the connector forwards.
fn forward(lab: &Lab, port: u16) -> (Running, Running) {
    let infra = infra();
    let global: Vec<&str> = infra.iter().map(String::as_str).collect();
    let target = format!("127.0.0.1:{port}");
    let mut listener = lab.spawn(
        LISTENER,
        &global,
        &["listen", "--port", "0", "--forward-udp", &target],
        b"",
    );
    let addr = listener.wait_event("listening")["addr"]
        .as_str()
        .expect("addr")
        .to_string();
    let local = format!("127.0.0.1:{LOCAL_PORT}");
    let mut connector = lab.spawn(
        CONNECTOR,
        &global,
        &[
            "connect",
            &addr,
            "--timeout",
            "10",
            "--via",
            "udp_punch",
            "--local-udp",
            &local,
        ],
        b"",
    );
    let connected = connector.wait_event("connected");
    assert_eq!(connected["transport"], "quic", "{connected}");
    assert_eq!(connected["path"], "direct", "{connected}");
    connector.wait_event("forwarding");
    (listener, connector)
}

/// A DNS query for `sys.argv[2]` (type A) to 127.0.0.1:`sys.argv[1]`, three tries; prints
/// {"answer": "a.b.c.d", "answers": N, "rcode": R} or {"error": …}.
const DNS_QUERY: &str = r#"
import json, socket, struct, sys
port, name = int(sys.argv[1]), sys.argv[2]
query = struct.pack(">HHHHHH", 0x5747, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for _ in range(3):
    s.sendto(query, ("127.0.0.1", port))
    try:
        reply = s.recv(4096)
        break
    except socket.timeout:
        continue
else:
    print(json.dumps({"error": "no answer"}))
    sys.exit()
ident, flags, _, answers = struct.unpack(">HHHH", reply[:8])
print(json.dumps({"id": ident, "rcode": flags & 15, "answers": answers,
                  "answer": ".".join(str(b) for b in reply[-4:])}))
"#;

#[test]
fn a_dns_query_crosses_a_nat_pair_through_forward_udp() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let pid_file = format!("/tmp/warpgate-lab-dnsmasq-{}.pid", std::process::id());
    let _dns = server(
        lab,
        LISTENER,
        "dnsmasq",
        &[
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            &format!("--port={DNS_PORT}"),
            &format!("--address=/{NAME}/{ANSWER}"),
            &format!("--pid-file={pid_file}"),
        ],
    );
    // dnsmasq answers at once when it is up: ask it directly first (inside its own host).
    let mut direct = Value::Null;
    for _ in 0..20 {
        direct = python(lab, LISTENER, DNS_QUERY, &[&DNS_PORT.to_string(), NAME]);
        if direct["answer"] == ANSWER {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(direct["answer"], ANSWER, "dnsmasq itself: {direct}");

    let (listener, connector) = forward(lab, DNS_PORT);
    let got = python(lab, CONNECTOR, DNS_QUERY, &[&LOCAL_PORT.to_string(), NAME]);
    eprintln!("DNS through --forward-udp across {CONNECTOR} -> {LISTENER}: {got}");
    let (c, l) = (connector.stderr(), listener.stderr());
    assert_eq!(got["id"], 0x5747, "{got}\nconnector: {c}\nlistener: {l}");
    assert_eq!(got["rcode"], 0, "{got}");
    assert_eq!(got["answers"], 1, "{got}");
    assert_eq!(got["answer"], ANSWER, "{got}");
    let _ = std::fs::remove_file(Path::new(&pid_file));
}

/// A UDP echo on 127.0.0.1:`sys.argv[1]`, datagrams kept whole.
const ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"#;

/// `sys.argv[2]` datagrams of 64 bytes to 127.0.0.1:`sys.argv[1]`, at most 32 unanswered (by
/// sequence number), each timed; prints {"sent", "received", "p50_us", "p99_us", "max_us",
/// "seconds"}.
const BLAST: &str = r#"
import json, socket, struct, sys, time
port, count, window = int(sys.argv[1]), int(sys.argv[2]), 32
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
s.setblocking(False)
start = time.perf_counter()
rtts, seq, progress, last_progress = [], 0, 0, time.perf_counter()
while True:
    now = time.perf_counter()
    if seq < count and (seq < progress + window or now - last_progress > 0.2):
        s.send(struct.pack(">Qd", seq, now) + bytes(48))
        seq += 1
        continue
    try:
        data = s.recv(128)
    except BlockingIOError:
        if seq >= count and now - last_progress > 2:
            break
        time.sleep(0.0001)
        continue
    n, sent = struct.unpack(">Qd", data[:16])
    rtts.append(time.perf_counter() - sent)
    progress, last_progress = max(progress, n + 1), time.perf_counter()
    if n + 1 == count:
        break
rtts.sort()
pick = lambda p: round(rtts[min(len(rtts) - 1, len(rtts) * p // 100)] * 1e6) if rtts else None
print(json.dumps({"sent": seq, "received": len(rtts), "p50_us": pick(50), "p99_us": pick(99),
                  "max_us": pick(100), "seconds": round(time.perf_counter() - start, 3)}))
"#;

#[test]
fn ten_thousand_datagrams_echo_across_a_nat_pair_with_loss_and_latency_reported() {
    let Some(lab) = lab() else { return };
    let _g = shared();
    let port = ECHO_PORT.to_string();
    let _echo = server(lab, LISTENER, "python3", &["-c", ECHO, &port]);
    std::thread::sleep(Duration::from_millis(300));
    let direct = python(lab, LISTENER, BLAST, &[&port, "1000"]);
    let (listener, connector) = forward(lab, ECHO_PORT);
    let got = python(lab, CONNECTOR, BLAST, &[&LOCAL_PORT.to_string(), "10000"]);
    let received = got["received"].as_u64().unwrap_or_default();
    let loss = (10_000 - received.min(10_000)) as f64 / 100.0;
    eprintln!(
        "10,000 datagrams across {CONNECTOR} -> {LISTENER}: {got} ({loss:.2}% lost); the echo \
         from its own host: {direct}"
    );
    assert!(
        loss < 1.0,
        "{loss}% lost: {got}\nconnector: {}\nlistener: {}",
        connector.stderr(),
        listener.stderr()
    );
}
