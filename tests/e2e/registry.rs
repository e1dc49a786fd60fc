//! `warpgate registry serve` as a real process on loopback, spoken to over HTTP/1.1 by a tiny
//! blocking client (the helpers here, shared with `registry_limits`): the rules of
//! docs/names.md (claim, lookup, renew, conflict, release, forged records, malformed requests),
//! one winner among simultaneous claims, expiry and grace. Records are signed here with the
//! library, with fresh keys.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use serde_json::{json, Value};
use warpgate::addr::Address;
use warpgate::identity::Identity;
use warpgate::names::{Name, Record, Release};

use crate::support::{Node, Running};

/// A registry process and where it listens.
pub struct Registry {
    pub running: Running,
    pub addr: SocketAddr,
}

impl Registry {
    /// Starts `registry serve --bind 127.0.0.1:0 --db DB <extra>` and reads the bound address
    /// from its `registry` event.
    pub fn start(node: &Node, db: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["registry", "serve", "--bind", "127.0.0.1:0"];
        let db = db.to_str().unwrap();
        args.extend_from_slice(&["--db", db]);
        args.extend_from_slice(extra);
        let mut running = Running::spawn(&mut node.command(&args));
        let event = running.wait_event("registry");
        assert_eq!(event["db"], db);
        let addr = event["bind"].as_str().unwrap().parse().unwrap();
        Self { running, addr }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        request(self.addr, "GET", path, "")
    }

    pub fn claim(&self, name: &str, record: &[u8]) -> (u16, Value) {
        let body = json!({ "record": BASE64URL_NOPAD.encode(record) }).to_string();
        request(self.addr, "PUT", &format!("/v1/names/{name}"), &body)
    }

    pub fn release(&self, name: &str, release: &[u8]) -> (u16, Value) {
        let body = json!({ "release": BASE64URL_NOPAD.encode(release) }).to_string();
        request(self.addr, "DELETE", &format!("/v1/names/{name}"), &body)
    }
}

pub fn db_path(node: &Node) -> PathBuf {
    node.dir.path().join("registry.db")
}

/// One request on a fresh connection; the status and the JSON body.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body.as_bytes()).unwrap();
    response(&mut conn)
}

/// Reads a whole `Connection: close` response.
pub fn response(conn: &mut impl Read) -> (u16, Value) {
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `owner`'s record for `name`, issued at `issued_at`, living `life` seconds.
pub fn record(owner: &Identity, name: &str, seq: u64, issued_at: u64, life: u64) -> Vec<u8> {
    Record {
        name: Name::parse(name).unwrap(),
        key: owner.public_key(),
        address: Address::new(owner.public_key(), Vec::new()),
        seq,
        issued_at,
        expires_at: issued_at + life,
    }
    .sign(owner)
    .unwrap()
}

pub fn release(owner: &Identity, name: &str, seq: u64) -> Vec<u8> {
    Release {
        name: Name::parse(name).unwrap(),
        key: owner.public_key(),
        seq,
        issued_at: unix_now(),
    }
    .sign(owner)
    .unwrap()
}

#[test]
fn claims_lookups_renewals_conflicts_and_releases() {
    let node = Node::new();
    let registry = Registry::start(&node, &db_path(&node), &[]);
    let (alice, mallory) = (Identity::generate(), Identity::generate());
    let now = unix_now();
    assert_eq!(
        registry.get("/v1/health"),
        (200, json!({"status": "ok", "version": 1, "names": 0}))
    );

    let first = record(&alice, "bob", 1, now, 3600);
    let (status, body) = registry.claim("bob", &first);
    assert_eq!(
        (status, &body["outcome"]),
        (200, &json!("claimed")),
        "{body}"
    );
    assert_eq!(
        (&body["seq"], &body["expires_at"]),
        (&json!(1), &json!(now + 3600))
    );
    let (status, body) = registry.get("/v1/names/bob");
    assert_eq!(status, 200);
    assert_eq!(body["record"], BASE64URL_NOPAD.encode(&first));
    assert_eq!(registry.get("/v1/health").1["names"], 1);

    // Another key: 409 naming the owner's fingerprint.
    let (status, body) = registry.claim("bob", &record(&mallory, "bob", 9, now, 3600));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["owner"], alice.public_key().fingerprint());
    assert!(body["error"].is_string());

    // The owner renews with a higher sequence; the same bytes again are unchanged; the same or
    // a lower sequence with other bytes is refused.
    let second = record(&alice, "bob", 2, now, 7200);
    assert_eq!(registry.claim("bob", &second).1["outcome"], "renewed");
    assert_eq!(registry.claim("bob", &second).1["outcome"], "unchanged");
    assert_eq!(
        registry
            .claim("bob", &record(&alice, "bob", 2, now + 1, 60))
            .0,
        422
    );
    assert_eq!(
        registry.claim("bob", &record(&alice, "bob", 1, now, 60)).0,
        422
    );
    assert_eq!(
        registry.get("/v1/names/bob").1["record"],
        BASE64URL_NOPAD.encode(&second)
    );

    // Invalid records: tampered, forged, for another name, post-dated, garbage: 422.
    let mut tampered = second.clone();
    tampered[6] ^= 1;
    let mut forged = record(&alice, "carol", 1, now, 60);
    let last = forged.len() - 1;
    forged[last] ^= 0x40;
    for (name, bytes) in [
        ("bob", tampered),
        ("carol", forged),
        ("carol", record(&alice, "dave", 1, now, 60)),
        ("carol", record(&alice, "carol", 1, now + 600, 60)),
        ("carol", b"not a record at all".to_vec()),
    ] {
        let (status, body) = registry.claim(name, &bytes);
        assert_eq!(status, 422, "{body}");
        assert!(body["error"].is_string());
    }
    assert_eq!(registry.get("/v1/names/carol").0, 404);

    // Malformed requests: a bad name, bad JSON, bad base64, a body over 16 KiB.
    let put = |path: &str, body: &str| request(registry.addr, "PUT", path, body).0;
    assert_eq!(registry.get("/v1/names/Bob").0, 400);
    assert_eq!(registry.get("/v1/names/bob.p2p").0, 400);
    assert_eq!(put("/v1/names/bob", "{\"record\": 12"), 400);
    assert_eq!(put("/v1/names/bob", "{\"record\": \"***\"}"), 400);
    let huge = json!({ "record": "A".repeat(17 * 1024) }).to_string();
    let (status, body) = request(registry.addr, "PUT", "/v1/names/bob", &huge);
    assert_eq!(status, 413, "{body}");

    // Releases: another key 409, a stale sequence 422, the owner 200, then nothing held.
    let (status, body) = registry.release("bob", &release(&mallory, "bob", 3));
    assert_eq!(
        (status, &body["owner"]),
        (409, &json!(alice.public_key().fingerprint()))
    );
    assert_eq!(registry.release("bob", &release(&alice, "bob", 2)).0, 422);
    assert_eq!(
        registry.release("bob", &release(&alice, "bob", 3)),
        (200, json!({"outcome": "released"}))
    );
    assert_eq!(registry.get("/v1/names/bob").0, 404);
    assert_eq!(registry.release("bob", &release(&alice, "bob", 4)).0, 404);
    // Free again: anyone's first valid claim wins.
    let theirs = record(&mallory, "bob", 1, now, 60);
    assert_eq!(registry.claim("bob", &theirs).1["outcome"], "claimed");

    // SIGTERM: drains and exits 0 promptly.
    let mut running = registry.running;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let since = Instant::now();
    assert_eq!(
        running.wait(Duration::from_secs(10)),
        0,
        "{}",
        running.stderr()
    );
    assert!(since.elapsed() < Duration::from_secs(3));
}

#[test]
fn simultaneous_claims_of_one_free_name_have_one_winner() {
    let node = Node::new();
    let registry = Registry::start(&node, &db_path(&node), &[]);
    let now = unix_now();
    let claimants: Vec<(Identity, Vec<u8>)> = (0..16)
        .map(|_| {
            let key = Identity::generate();
            let bytes = record(&key, "race", 1, now, 600);
            (key, bytes)
        })
        .collect();
    let barrier = Arc::new(Barrier::new(claimants.len()));
    let addr = registry.addr;
    let threads: Vec<_> = claimants
        .iter()
        .map(|(_, bytes)| {
            let (barrier, body) = (barrier.clone(), bytes.clone());
            std::thread::spawn(move || {
                let body = json!({ "record": BASE64URL_NOPAD.encode(&body) }).to_string();
                barrier.wait();
                request(addr, "PUT", "/v1/names/race", &body)
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].0 == 200)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let winner = &claimants[winners[0]];
    let fingerprint = winner.0.public_key().fingerprint();
    for (status, body) in answers.iter().filter(|a| a.0 != 200) {
        assert_eq!((*status, &body["owner"]), (409, &json!(fingerprint)));
    }
    assert_eq!(
        registry.get("/v1/names/race").1["record"],
        BASE64URL_NOPAD.encode(&winner.1)
    );
}

#[test]
fn expired_names_are_held_for_their_owner_through_the_grace() {
    let node = Node::new();
    let registry = Registry::start(&node, &db_path(&node), &["--grace", "2"]);
    let (alice, mallory) = (Identity::generate(), Identity::generate());
    let t0 = unix_now();
    assert_eq!(
        registry.claim("eve", &record(&alice, "eve", 1, t0, 2)).0,
        200
    );
    wait_until(t0 + 2);
    // Expired, within the grace: not served, not anyone else's, renewable by the owner.
    assert_eq!(registry.get("/v1/names/eve").0, 404);
    let (status, body) = registry.claim("eve", &record(&mallory, "eve", 1, unix_now(), 60));
    assert_eq!(
        (status, &body["owner"]),
        (409, &json!(alice.public_key().fingerprint()))
    );
    let t1 = unix_now();
    let renewed = record(&alice, "eve", 2, t1, 1);
    assert_eq!(registry.claim("eve", &renewed).1["outcome"], "renewed");
    assert_eq!(registry.get("/v1/names/eve").0, 200);
    // Past expiry and grace: free for anyone.
    wait_until(t1 + 1 + 2);
    let theirs = record(&mallory, "eve", 1, unix_now(), 60);
    assert_eq!(registry.claim("eve", &theirs).1["outcome"], "claimed");
    assert_eq!(
        registry.get("/v1/names/eve").1["record"],
        BASE64URL_NOPAD.encode(&theirs)
    );
}

pub fn wait_until(unix: u64) {
    while unix_now() < unix {
        std::thread::sleep(Duration::from_millis(50));
    }
}
