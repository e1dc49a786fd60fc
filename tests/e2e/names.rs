//! Names through the real binary on loopback: local aliases (no registry at all), the name
//! commands' errors and files, and claim → lookup → connect by name against registry doubles
//! served from this test process (the API of docs/names.md over axum, records in memory). A
//! strict double keeps the rules; a lax one stores any valid record, as a compromised registry
//! would, so a pinned name's key can change under a client.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, HEXLOWER};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use warpgate::names::{Record, Release};

use crate::support::{file_out, file_stdio, random_file, sha256_file, Node, Running, BIN};

const EXIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Store {
    /// Keep the rules (first claim wins, only the owner renews or releases).
    strict: bool,
    /// Answer every write with 429.
    rate_limited: bool,
    records: HashMap<String, Vec<u8>>,
}

type Shared = Arc<Mutex<Store>>;

/// A registry double on a free loopback port, stopped when dropped.
struct Registry {
    url: String,
    store: Shared,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Answer = (StatusCode, Json<Value>);

fn refuse(status: StatusCode, error: &str) -> Answer {
    (status, Json(json!({ "error": error })))
}

fn statement(body: &Value, field: &str) -> Option<Vec<u8>> {
    BASE64URL_NOPAD
        .decode(body[field].as_str()?.as_bytes())
        .ok()
}

async fn health(State(store): State<Shared>) -> Json<Value> {
    let names = store.lock().unwrap().records.len();
    Json(json!({ "status": "ok", "version": 1, "names": names }))
}

async fn fetch(State(store): State<Shared>, UrlPath(name): UrlPath<String>) -> Answer {
    match store.lock().unwrap().records.get(&name) {
        Some(bytes) => (
            StatusCode::OK,
            Json(json!({ "record": BASE64URL_NOPAD.encode(bytes) })),
        ),
        None => refuse(StatusCode::NOT_FOUND, "unknown name"),
    }
}

async fn put(
    State(store): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<Value>,
) -> Answer {
    let mut store = store.lock().unwrap();
    if store.rate_limited {
        let answer = json!({ "error": "too many writes", "retry_after": 7 });
        return (StatusCode::TOO_MANY_REQUESTS, Json(answer));
    }
    let Some(bytes) = statement(&body, "record") else {
        return refuse(StatusCode::BAD_REQUEST, "malformed");
    };
    let record = match Record::open(&bytes) {
        Ok(r) if r.name.as_str() == name => r,
        _ => return refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid record"),
    };
    let held = store.records.get(&name).and_then(|b| Record::open(b).ok());
    let outcome = match held {
        Some(old) if store.strict && old.key != record.key => {
            let answer = json!({ "error": "taken", "owner": old.key.fingerprint() });
            return (StatusCode::CONFLICT, Json(answer));
        }
        Some(old) if old.key == record.key => "renewed",
        _ => "claimed",
    };
    store.records.insert(name, bytes);
    let answer = json!({ "outcome": outcome, "seq": record.seq, "expires_at": record.expires_at });
    (StatusCode::OK, Json(answer))
}

async fn delete(
    State(store): State<Shared>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<Value>,
) -> Answer {
    let mut store = store.lock().unwrap();
    let Some(release) = statement(&body, "release").and_then(|b| Release::open(&b).ok()) else {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid release");
    };
    match store.records.get(&name).and_then(|b| Record::open(b).ok()) {
        None => refuse(StatusCode::NOT_FOUND, "not held"),
        Some(old) if old.key != release.key => refuse(StatusCode::CONFLICT, "held by another key"),
        Some(_) => {
            store.records.remove(&name);
            (StatusCode::OK, Json(json!({ "outcome": "released" })))
        }
    }
}

impl Registry {
    fn start(strict: bool) -> Self {
        let store = Shared::new(Mutex::new(Store {
            strict,
            ..Store::default()
        }));
        let app = Router::new()
            .route("/v1/health", get(health))
            .route("/v1/names/{name}", get(fetch).put(put).delete(delete))
            .with_state(store.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            url,
            store,
            _stop: stop,
        }
    }

    fn holds(&self, name: &str) -> bool {
        self.store.lock().unwrap().records.contains_key(name)
    }
}

/// A URL where no registry listens.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A config with these registries and no other servers: nothing leaves loopback.
fn config(node: &Node, registries: &[&str]) -> PathBuf {
    let path = node.dir.path().join("config.toml");
    let list: Vec<String> = registries.iter().map(|r| format!("{r:?}")).collect();
    let text = format!(
        "brokers = []\nstun = []\nturn = []\nregistries = [{}]\n",
        list.join(", ")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `warpgate --home … --json --no-portmap --config CONFIG <args>` (not offline: it talks to the
/// doubles; no port mapping: the machine's own gateway is no part of the test).
fn online(node: &Node, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--home")
        .arg(node.home())
        .arg("--json")
        .arg("--no-portmap")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null());
    cmd.env_remove("RUST_LOG").env_remove("WARPGATE_CONFIG");
    cmd
}

/// Runs `cmd` to its end: exit code, stdout as JSON (Null when empty), the `error` message.
fn run(cmd: &mut Command) -> (i32, Value, String) {
    let out = cmd.output().unwrap();
    let stdout = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let message = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "error")
        .map(|v| v["message"].as_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stdout, message)
}

/// The node's key fingerprint, computed here from `addr --json`'s key: base32 of its SHA-256.
fn fingerprint(node: &Node) -> String {
    let out = node.command(&["addr"]).output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = HEXLOWER
        .decode(doc["key"].as_str().unwrap().as_bytes())
        .unwrap();
    BASE32_NOPAD
        .encode(&Sha256::digest(&key))
        .to_ascii_lowercase()
}

fn assert_usage_error(node: &Node, args: &[&str], needle: &str) {
    let out = node.command(args).stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

/// A transfer both ways between a running listener and `connector`, checked byte for byte.
fn transfer_both_ways(listener: Running, connector: Running, files: [&Path; 4]) -> Vec<Value> {
    let [to_connector, to_listener, got_by_listener, got_by_connector] = files;
    let connector = connector.finish(EXIT);
    assert_eq!(connector.code, Some(0), "{:?}", connector.stderr);
    let listener = listener.finish(EXIT);
    assert_eq!(listener.code, Some(0), "{:?}", listener.stderr);
    assert_eq!(sha256_file(got_by_connector), sha256_file(to_connector));
    assert_eq!(sha256_file(got_by_listener), sha256_file(to_listener));
    connector.events
}

#[test]
fn an_alias_connects_with_no_registry_and_bytes_intact() {
    let (a, b) = (Node::new(), Node::new());
    let dir = b.dir.path();
    let files = [
        dir.join("l.in"),
        dir.join("c.in"),
        dir.join("l.out"),
        dir.join("c.out"),
    ];
    random_file(&files[0], 1 << 20, 3);
    random_file(&files[1], 1 << 20, 4);
    let listener = a.listen(&[], file_stdio(&files[0]), file_out(&files[2]));
    let added = b
        .command(&["name", "add", "Peer.P2P", &listener.addr])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // --offline (as every `command` is): aliases need no registry.
    let connector = Running::spawn(
        b.command(&["connect", "peer"])
            .stdin(file_stdio(&files[1]))
            .stdout(file_out(&files[3])),
    );
    let events = transfer_both_ways(
        listener,
        connector,
        [&files[0], &files[1], &files[2], &files[3]],
    );
    let resolved = events.iter().find(|e| e["event"] == "resolved").unwrap();
    assert_eq!(resolved["name"], "peer.p2p");
    assert_eq!(resolved["source"], "alias");
    assert_eq!(resolved["id"], a.id());
}

#[test]
fn bad_names_and_offline_names_exit_2_with_one_line() {
    let node = Node::new();
    let addr = node.command(&["addr"]).output().unwrap();
    let addr: Value = serde_json::from_slice(&addr.stdout).unwrap();
    let addr = addr["text"].as_str().unwrap();
    let invalid = "not a valid name: use 1-63 lowercase letters";
    let long = "x".repeat(64);
    for args in [
        &["connect", "bo_b"][..],
        &["connect", "bob-.p2p"],
        &["connect", "bob.example"],
        &["name", "claim", "a.b"],
        &["name", "lookup", ""],
        &["name", "release", &long],
        &["name", "add", "x_y", addr],
        &["name", "forget", "Bad Name"],
        &["listen", "--name", "b@d"],
    ] {
        assert_usage_error(&node, args, invalid);
    }
    // An address-looking name needs its suffix; an address-looking typo stays an address error.
    assert_usage_error(&node, &["connect", "wgserver"], "wgserver.p2p");
    assert_usage_error(&node, &["name", "add", "ok", "wgnonsense"], "address");
    // Offline, registries cannot be asked; online with none configured, neither.
    assert_usage_error(&node, &["name", "claim", "bob"], "--offline");
    assert_usage_error(&node, &["listen", "--name", "bob"], "--offline");
    assert_usage_error(&node, &["connect", "bob"], "not a local alias");
    let cfg = config(&node, &[]);
    let (code, _, message) = run(&mut online(&node, &cfg, &["name", "lookup", "bob"]));
    assert_eq!(code, 2);
    assert!(message.contains("--registry URL"), "{message}");
}

#[test]
fn list_shows_aliases_and_pins_and_forget_drops_them() {
    let (node, other) = (Node::new(), Node::new());
    let addr = |n: &Node| {
        let out = n.command(&["addr"]).output().unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let theirs = addr(&other);
    for alias in ["home", "work"] {
        let out = node
            .command(&["name", "add", alias, theirs["text"].as_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // A pin written by hand (base32 of the compressed key), beside a garbled line.
    let key = HEXLOWER
        .decode(theirs["key"].as_str().unwrap().as_bytes())
        .unwrap();
    let key = BASE32_NOPAD.encode(&key).to_ascii_lowercase();
    let pins = node.home().join("known_names");
    std::fs::write(&pins, format!("# mine\nbob.p2p {key}\nthis is garbage\n")).unwrap();

    let (code, list, _) = run(&mut node.command(&["name", "list"]));
    assert_eq!(code, 0);
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&list["aliases"]), ["home.p2p", "work.p2p"]);
    assert_eq!(list["aliases"][0]["id"], theirs["id"]);
    assert_eq!(names(&list["pins"]), ["bob.p2p"]);
    assert_eq!(list["pins"][0]["fingerprint"], fingerprint(&other));

    let (code, forgot, _) = run(&mut node.command(&["name", "forget", "bob"]));
    assert_eq!(code, 0);
    assert_eq!(forgot["pin"], fingerprint(&other));
    assert_eq!(forgot["alias"], false);
    let (_, forgot, _) = run(&mut node.command(&["name", "forget", "home"]));
    assert_eq!(
        (forgot["pin"].clone(), forgot["alias"].clone()),
        (Value::Null, json!(true))
    );
    let (_, list, _) = run(&mut node.command(&["name", "list"]));
    assert_eq!(names(&list["aliases"]), ["work.p2p"]);
    assert_eq!(names(&list["pins"]), Vec::<String>::new());
    // What the user wrote that we could not read is still there.
    let text = std::fs::read_to_string(&pins).unwrap();
    assert_eq!(text, "# mine\nthis is garbage\n");
}

#[test]
fn listen_by_name_then_lookup_and_connect_by_name() {
    let (r1, r2) = (Registry::start(true), Registry::start(true));
    let dead = dead_url();
    let (a, b) = (Node::new(), Node::new());
    let registries = [r1.url.as_str(), r2.url.as_str(), dead.as_str()];
    let (cfg_a, cfg_b) = (config(&a, &registries), config(&b, &registries));
    let dir = b.dir.path();
    let files = [
        dir.join("l.in"),
        dir.join("c.in"),
        dir.join("l.out"),
        dir.join("c.out"),
    ];
    random_file(&files[0], 1 << 20, 5);
    random_file(&files[1], 1 << 20, 6);

    // Two of three registries up: a majority, so the listener claims and announces its name.
    let mut listener = Running::spawn(
        online(&a, &cfg_a, &["listen", "--port", "0", "--name", "Alice"])
            .stdin(file_stdio(&files[0]))
            .stdout(file_out(&files[2])),
    );
    let listening = listener.wait_event("listening");
    assert_eq!(listening["name"], "alice.p2p");
    assert!(r1.holds("alice") && r2.holds("alice"));

    let (code, found, message) = run(&mut online(&b, &cfg_b, &["name", "lookup", "alice.p2p"]));
    assert_eq!(code, 0, "{message}");
    assert_eq!(found["source"], "registry");
    assert_eq!(found["fingerprint"], fingerprint(&a));
    assert_eq!(found["id"], a.id());
    assert_eq!(found["addr"], listening["addr"]);
    assert_eq!(found["agreeing"], json!([r1.url, r2.url]));
    assert_eq!(found["asked"], 3);
    assert_eq!(found["pinned_now"], true);

    let connector = Running::spawn(
        online(&b, &cfg_b, &["connect", "alice"])
            .stdin(file_stdio(&files[1]))
            .stdout(file_out(&files[3])),
    );
    let events = transfer_both_ways(
        listener,
        connector,
        [&files[0], &files[1], &files[2], &files[3]],
    );
    let resolved = events.iter().find(|e| e["event"] == "resolved").unwrap();
    assert_eq!(resolved["source"], "registry");
    assert_eq!(resolved["id"], a.id());
    assert_eq!(resolved["agreeing"], 2);
    // Pinned by the lookup already.
    assert_eq!(resolved["pinned_now"], false);
    // On loopback, with one registry refusing connections, well under a second.
    let resolve_ms = resolved["resolve_ms"].as_u64().unwrap();
    assert!(resolve_ms < 1000, "{resolve_ms} ms");
}

#[test]
fn a_pinned_name_whose_key_changed_is_refused_until_forget() {
    // A lax registry hands the name to whoever asks last, as a compromised one would.
    let registry = Registry::start(false);
    let (owner, mallory, client) = (Node::new(), Node::new(), Node::new());
    let cfg = |n: &Node| config(n, &[&registry.url]);
    let (code, claimed, message) =
        run(&mut online(&owner, &cfg(&owner), &["name", "claim", "bob"]));
    assert_eq!(code, 0, "{message}");
    assert_eq!(claimed["registries"][0]["outcome"], "claimed");
    assert_eq!(claimed["majority"], true);

    let lookup = || {
        run(&mut online(
            &client,
            &cfg(&client),
            &["name", "lookup", "bob"],
        ))
    };
    let (code, found, _) = lookup();
    assert_eq!(
        (code, found["fingerprint"].clone()),
        (0, json!(fingerprint(&owner)))
    );

    let (code, _, _) = run(&mut online(
        &mallory,
        &cfg(&mallory),
        &["name", "claim", "bob"],
    ));
    assert_eq!(code, 0, "the lax registry took mallory's record");
    let (code, _, message) = lookup();
    assert_eq!(code, 1);
    assert!(message.contains(&fingerprint(&owner)), "{message}");
    assert!(message.contains(&fingerprint(&mallory)), "{message}");
    assert!(
        message.contains("warpgate name forget bob.p2p"),
        "{message}"
    );
    // connect refuses the same way, before any connection attempt.
    let (code, _, refused) = run(&mut online(&client, &cfg(&client), &["connect", "bob"]));
    assert_eq!((code, refused), (1, message));

    let (code, _, _) = run(&mut online(
        &client,
        &cfg(&client),
        &["name", "forget", "bob"],
    ));
    assert_eq!(code, 0);
    let (code, found, _) = lookup();
    assert_eq!(code, 0);
    assert_eq!(found["fingerprint"], fingerprint(&mallory));
    assert_eq!(found["pinned_now"], true);
}

#[test]
fn a_taken_name_is_refused_naming_its_owner_until_released() {
    let registry = Registry::start(true);
    let (owner, other) = (Node::new(), Node::new());
    let (cfg_owner, cfg_other) = (
        config(&owner, &[&registry.url]),
        config(&other, &[&registry.url]),
    );
    let claim = |n: &Node, cfg: &Path| run(&mut online(n, cfg, &["name", "claim", "bob"]));
    assert_eq!(claim(&owner, &cfg_owner).0, 0);

    let (code, report, message) = claim(&other, &cfg_other);
    assert_eq!(code, 1);
    assert!(message.contains(&fingerprint(&owner)), "{message}");
    assert_eq!(report["registries"][0]["owner"], fingerprint(&owner));
    // listen --name ends before listening.
    let mut listener = Running::spawn(&mut online(
        &other,
        &cfg_other,
        &["listen", "--port", "0", "--name", "bob"],
    ));
    assert_eq!(listener.wait(EXIT), 1);
    let finished = listener.finish(EXIT);
    assert!(finished.event("listening").is_none());
    let error = finished.event("error").unwrap()["message"]
        .as_str()
        .unwrap();
    assert!(error.contains(&fingerprint(&owner)), "{error}");

    let (code, released, _) = run(&mut online(&owner, &cfg_owner, &["name", "release", "bob"]));
    assert_eq!(code, 0);
    assert_eq!(released["registries"][0]["outcome"], "released");
    assert_eq!(claim(&other, &cfg_other).0, 0);

    // A registry that limits writes says when to come back.
    registry.store.lock().unwrap().rate_limited = true;
    let (code, _, message) = claim(&other, &cfg_other);
    assert_eq!(code, 1);
    assert!(
        message.contains("rate limited: try again in 7 s"),
        "{message}"
    );
}

/// An https registry (the real `registry serve` with a certificate): trusted through
/// `SSL_CERT_FILE`, a claim and a lookup go through; with the system's roots only, the
/// unknown issuer is refused and said so.
#[test]
fn an_https_registry_is_checked_against_the_trusted_roots() {
    let (operator, owner) = (Node::new(), Node::new());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_file, key_file) = (
        operator.dir.path().join("c.pem"),
        operator.dir.path().join("k.pem"),
    );
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let db = operator.dir.path().join("registry.db");
    let (c, k, d) = (
        cert_file.to_str().unwrap(),
        key_file.to_str().unwrap(),
        db.to_str().unwrap(),
    );
    let mut server = Running::spawn(&mut operator.command(&[
        "registry",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--db",
        d,
        "--cert",
        c,
        "--key",
        k,
    ]));
    let bound = server.wait_event("registry");
    let port = bound["bind"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let url = format!("https://localhost:{port}");
    let cfg = config(&owner, &[&url]);

    let (code, claimed, message) = run(online(&owner, &cfg, &["name", "claim", "tls-bob"])
        .env("SSL_CERT_FILE", &cert_file)
        .env_remove("SSL_CERT_DIR"));
    assert_eq!(code, 0, "{message}");
    assert_eq!(claimed["registries"][0]["outcome"], "claimed");
    let (code, found, message) = run(online(&owner, &cfg, &["name", "lookup", "tls-bob"])
        .env("SSL_CERT_FILE", &cert_file)
        .env_remove("SSL_CERT_DIR"));
    assert_eq!(code, 0, "{message}");
    assert_eq!(found["fingerprint"], fingerprint(&owner));

    // Another trust store that does not hold the certificate: refused before any request.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_file = owner.dir.path().join("other.pem");
    std::fs::write(&other_file, other.cert.pem()).unwrap();
    let (code, _, message) = run(online(&owner, &cfg, &["name", "claim", "tls-eve"])
        .env("SSL_CERT_FILE", &other_file)
        .env_remove("SSL_CERT_DIR"));
    assert_eq!(code, 1, "{message}");
    assert!(message.contains("TLS"), "{message}");
    server.child.kill().unwrap();
}
