//! `warpgate registry serve` under pressure, as a real process on loopback: nothing
//! acknowledged is lost to SIGKILL, the name quota and the write rate limit, TLS with the given
//! certificate, and idle strangers cannot pin it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use serde_json::json;
use warpgate::identity::Identity;

use crate::registry::{db_path, record, response, unix_now, Registry};
use crate::support::Node;

/// A name and the record bytes whose claim the server acknowledged.
type Claimed = (String, Vec<u8>);

#[test]
fn sigkill_loses_no_acknowledged_claim() {
    let node = Node::new();
    let db = db_path(&node);
    let generous = ["--writes-per-minute", "100000", "--max-names", "1000"];
    let mut registry = Registry::start(&node, &db, &generous);
    let now = unix_now();
    let acked: Arc<Mutex<Vec<Claimed>>> = Arc::default();
    // Writers claim as fast as they can; the server is killed while they are at it.
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (acked, addr) = (acked.clone(), registry.addr);
            std::thread::spawn(move || {
                let owner = Identity::generate();
                for i in 0.. {
                    let name = format!("w{w}-n{i}");
                    let bytes = record(&owner, &name, 1, now, 600);
                    let body = json!({ "record": BASE64URL_NOPAD.encode(&bytes) }).to_string();
                    let Some(status) = try_request(addr, &format!("/v1/names/{name}"), &body)
                    else {
                        return;
                    };
                    assert_eq!(status, 200);
                    acked.lock().unwrap().push((name, bytes));
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    registry.running.child.kill().unwrap(); // SIGKILL
    registry.running.child.wait().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= 60,
        "only {} claims before the deadline",
        acked.len()
    );

    let restarted = Registry::start(&node, &db, &generous);
    for (name, bytes) in &acked {
        let (status, body) = restarted.get(&format!("/v1/names/{name}"));
        assert_eq!(status, 200, "{name} was acknowledged, then lost: {body}");
        assert_eq!(body["record"], BASE64URL_NOPAD.encode(bytes));
    }
}

/// A PUT whose answer may never come (the server being killed): the status if it did.
fn try_request(addr: SocketAddr, path: &str, body: &str) -> Option<u16> {
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).ok()?;
    conn.write_all(body.as_bytes()).ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

#[test]
fn quota_and_write_rate_limit() {
    let node = Node::new();
    let flags = ["--max-names", "2", "--writes-per-minute", "5"];
    let registry = Registry::start(&node, &db_path(&node), &flags);
    let alice = Identity::generate();
    let now = unix_now();
    for name in ["one", "two"] {
        assert_eq!(
            registry.claim(name, &record(&alice, name, 1, now, 60)).0,
            200
        );
    }
    let (status, body) = registry.claim("three", &record(&alice, "three", 1, now, 60));
    assert_eq!(status, 403, "{body}");
    // Five writes a minute: two more pass (refused or not, they count), the sixth waits.
    for _ in 0..2 {
        assert_eq!(
            registry.claim("one", &record(&alice, "one", 1, now, 60)).0,
            200
        );
    }
    let (status, body) = registry.claim("one", &record(&alice, "one", 1, now, 60));
    assert_eq!(status, 429, "{body}");
    let retry = body["retry_after"].as_u64().expect("retry_after");
    assert!((1..=12).contains(&retry), "{body}");
    // Reads are not limited.
    assert_eq!(registry.get("/v1/names/one").0, 200);
}

#[test]
fn tls_with_the_given_certificate() {
    let node = Node::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_file, key_file) = (node.dir.path().join("c.pem"), node.dir.path().join("k.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let (c, k) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
    let registry = Registry::start(&node, &db_path(&node), &["--cert", c, "--key", k]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = "localhost".try_into().unwrap();
    let tls = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let tcp = TcpStream::connect(registry.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut stream = rustls::StreamOwned::new(tls, tcp);
    stream
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (status, body) = response(&mut stream);
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = TcpStream::connect(registry.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain.write_all(b"GET /v1/health HTTP/1.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
}

#[test]
fn idle_strangers_cannot_pin_the_server() {
    let node = Node::new();
    let registry = Registry::start(&node, &db_path(&node), &[]);
    // A source holding its 32 connections silent gets no 33rd...
    let idle: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(registry.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(registry.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        extra.read(&mut buf).unwrap(),
        0,
        "the 33rd connection is closed"
    );
    // ...and each silent one is closed by the header timeout (5 s), freeing its slot.
    let since = Instant::now();
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        assert_eq!(conn.read(&mut buf).unwrap_or(0), 0);
    }
    assert!(
        since.elapsed() < Duration::from_secs(8),
        "{:?}",
        since.elapsed()
    );
    assert_eq!(registry.get("/v1/health").0, 200);
}
