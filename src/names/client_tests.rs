//! The registry client against small in-test servers on loopback: one that keeps the API's
//! rules in memory (axum), fixed error answers, and hostile ones (endless bodies, silence,
//! not HTTP at all).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode as Status;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::addr::Address;
use crate::identity::Identity;
use crate::names::record::{Record, Release};

type Store = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// Serves `app` on a free loopback port for the rest of the test.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn b64(body: &Value, field: &str) -> Vec<u8> {
    BASE64URL_NOPAD
        .decode(body[field].as_str().unwrap().as_bytes())
        .unwrap()
}

/// The API's rules, in memory: first valid claim wins, the owner renews or releases.
fn registry_app() -> Router {
    async fn fetch(State(store): State<Store>, Path(name): Path<String>) -> (Status, Json<Value>) {
        match store.lock().unwrap().get(&name) {
            Some(bytes) => (
                Status::OK,
                Json(json!({ "record": BASE64URL_NOPAD.encode(bytes) })),
            ),
            None => (Status::NOT_FOUND, Json(json!({ "error": "unknown name" }))),
        }
    }
    async fn put(
        State(store): State<Store>,
        Path(name): Path<String>,
        Json(body): Json<Value>,
    ) -> (Status, Json<Value>) {
        let bytes = b64(&body, "record");
        let Ok(record) = Record::open(&bytes) else {
            return (
                Status::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": "bad signature" })),
            );
        };
        let mut store = store.lock().unwrap();
        let outcome = match store.get(&name).map(|b| Record::open(b).unwrap()) {
            Some(old) if old.key != record.key => {
                let owner = old.key.fingerprint();
                return (
                    Status::CONFLICT,
                    Json(json!({ "error": "taken", "owner": owner })),
                );
            }
            Some(old) if old.seq == record.seq => "unchanged",
            Some(_) => "renewed",
            None => "claimed",
        };
        store.insert(name, bytes);
        let answer =
            json!({ "outcome": outcome, "seq": record.seq, "expires_at": record.expires_at });
        (Status::OK, Json(answer))
    }
    async fn delete(
        State(store): State<Store>,
        Path(name): Path<String>,
        Json(body): Json<Value>,
    ) -> (Status, Json<Value>) {
        let release = Release::open(&b64(&body, "release")).unwrap();
        let mut store = store.lock().unwrap();
        match store.get(&name).map(|b| Record::open(b).unwrap()) {
            None => (Status::NOT_FOUND, Json(json!({ "error": "not held" }))),
            Some(old) if old.key != release.key => (
                Status::CONFLICT,
                Json(json!({ "error": "held by another key", "owner": old.key.fingerprint() })),
            ),
            Some(_) => {
                store.remove(&name);
                (Status::OK, Json(json!({ "outcome": "released" })))
            }
        }
    }
    async fn health(State(store): State<Store>) -> Json<Value> {
        let names = store.lock().unwrap().len();
        Json(json!({ "status": "ok", "version": 1, "names": names }))
    }
    let api = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/names/{name}", get(fetch).put(put).delete(delete))
        .with_state(Store::default());
    // Mounted under a prefix too, as a registry behind a reverse proxy would be.
    Router::new().merge(api.clone()).nest("/reg", api)
}

/// Answers every request with `status` and `body`.
fn fixed(status: Status, body: Value) -> Router {
    Router::new().fallback(move || {
        let body = body.clone();
        async move { (status, Json(body)) }
    })
}

/// Accepts connections and answers each with `response` (raw bytes), or with nothing at all.
async fn raw(response: Option<Vec<u8>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match response {
                    Some(bytes) => {
                        let _ = socket.write_all(&bytes).await;
                    }
                    // Silent: hold the connection open until the client gives up.
                    None => {
                        let _ = socket.read(&mut buf).await;
                    }
                }
            });
        }
    });
    addr
}

fn at(addr: SocketAddr) -> Registry {
    Registry::parse(&format!("http://{addr}")).unwrap()
}

fn record(owner: &Identity, name: &str, seq: u64) -> Vec<u8> {
    let now = 1_800_000_000;
    Record {
        name: Name::parse(name).unwrap(),
        key: owner.public_key(),
        address: Address::new(owner.public_key(), Vec::new()),
        seq,
        issued_at: now,
        expires_at: now + 86_400,
    }
    .sign(owner)
    .unwrap()
}

#[test]
fn urls_parse_into_server_and_prefix() {
    let r = Registry::parse("http://names.example.org").unwrap();
    assert_eq!(
        (r.server.to_string(), r.prefix.as_str()),
        ("names.example.org:80".into(), "")
    );
    let r = Registry::parse(" http://198.51.100.1:4000/reg/ ").unwrap();
    assert_eq!(
        (r.server.to_string(), r.prefix.as_str()),
        ("198.51.100.1:4000".into(), "/reg")
    );
    assert_eq!(r.authority, "198.51.100.1:4000");
    let r = Registry::parse("HTTP://[2001:db8::1]:8080/x").unwrap();
    assert_eq!(r.server.to_string(), "[2001:db8::1]:8080");
    assert_eq!(r.authority, "[2001:db8::1]:8080");
    let r = Registry::parse("https://names.example.org/v").unwrap();
    assert_eq!(
        (r.server.to_string(), r.prefix.as_str(), r.tls),
        ("names.example.org:443".into(), "/v", true)
    );
    assert!(!Registry::parse("http://names.example.org").unwrap().tls);
    for bad in [
        "names.example.org",
        "ftp://names.example.org",
        "http://",
        "http://h:0",
        "http://h:99999",
        "http://u:p@h",
        "http://h/?q",
        "http://h/a b",
    ] {
        assert_eq!(Registry::parse(bad), Err(ClientError::BadUrl), "{bad}");
    }
}

#[tokio::test]
async fn claim_get_renew_and_release_speak_the_contract() {
    let addr = serve(registry_app()).await;
    for registry in [
        at(addr),
        Registry::parse(&format!("http://{addr}/reg/")).unwrap(),
    ] {
        let (owner, other) = (Identity::generate(), Identity::generate());
        let bob = Name::parse("bob").unwrap();
        assert_eq!(registry.health().await.unwrap().names, 0);
        assert_eq!(registry.get(&bob).await.unwrap(), None);

        let first = record(&owner, "bob", 1);
        let stored = registry.put(&bob, &first).await.unwrap();
        assert_eq!((stored.outcome, stored.seq), (PutOutcome::Claimed, 1));
        assert_eq!(registry.get(&bob).await.unwrap(), Some(first.clone()));
        let health = registry.health().await.unwrap();
        assert_eq!((health.names, health.addr), (1, addr));

        let same = registry.put(&bob, &first).await.unwrap();
        assert_eq!(same.outcome, PutOutcome::Unchanged);
        let renewed = registry.put(&bob, &record(&owner, "bob", 2)).await.unwrap();
        assert_eq!((renewed.outcome, renewed.seq), (PutOutcome::Renewed, 2));

        let theirs = registry.put(&bob, &record(&other, "bob", 9)).await;
        assert_eq!(
            theirs,
            Err(ClientError::Taken {
                owner: owner.public_key().fingerprint()
            })
        );
        assert!(matches!(
            registry.put(&bob, b"junk").await,
            Err(ClientError::Invalid(m)) if m == "bad signature"
        ));

        let release = |by: &Identity| {
            Release {
                name: bob.clone(),
                key: by.public_key(),
                seq: 3,
                issued_at: 1_800_000_100,
            }
            .sign(by)
            .unwrap()
        };
        assert!(matches!(
            registry.delete(&bob, &release(&other)).await,
            Err(ClientError::Taken { .. })
        ));
        registry.delete(&bob, &release(&owner)).await.unwrap();
        assert_eq!(registry.get(&bob).await.unwrap(), None);
        assert_eq!(
            registry.delete(&bob, &release(&owner)).await,
            Err(ClientError::NotHeld)
        );
    }
}

#[tokio::test]
async fn error_answers_become_typed_errors() {
    let bob = Name::parse("bob").unwrap();
    let owner = Identity::generate();
    let bytes = record(&owner, "bob", 1);
    let cases = [
        (
            Status::TOO_MANY_REQUESTS,
            json!({ "error": "slow down", "retry_after": 7 }),
            ClientError::RateLimited { retry_after: 7 },
        ),
        (
            Status::FORBIDDEN,
            json!({ "error": "8 names already" }),
            ClientError::Quota("8 names already".into()),
        ),
        (
            Status::UNPROCESSABLE_ENTITY,
            json!({ "error": "expired\u{1b}[31m" }),
            ClientError::Invalid("expired[31m".into()),
        ),
        (
            Status::CONFLICT,
            json!({ "error": "taken" }),
            ClientError::Taken {
                owner: "not given".into(),
            },
        ),
        (
            Status::INTERNAL_SERVER_ERROR,
            json!({}),
            ClientError::Protocol("HTTP 500: Internal Server Error".into()),
        ),
    ];
    for (status, body, want) in cases {
        let registry = at(serve(fixed(status, body)).await);
        assert_eq!(registry.put(&bob, &bytes).await, Err(want.clone()));
        assert_eq!(registry.get(&bob).await, Err(want));
    }
    // A 200 that does not say what the contract says is no success.
    let registry = at(serve(fixed(Status::OK, json!({ "status": "ok", "version": 2 }))).await);
    assert!(
        matches!(registry.health().await, Err(ClientError::Protocol(m)) if m.contains("version 2"))
    );
    assert!(matches!(
        registry.get(&bob).await,
        Err(ClientError::Protocol(_))
    ));
    let registry = at(serve(fixed(Status::OK, json!({ "record": "!!" }))).await);
    assert!(
        matches!(registry.get(&bob).await, Err(ClientError::Protocol(m)) if m.contains("base64url"))
    );
}

#[tokio::test]
async fn hostile_registries_cost_little() {
    let bob = Name::parse("bob").unwrap();
    // A body far above the limit is refused, whether announced or streamed.
    let huge = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
        1 << 20,
        "x".repeat(1 << 20)
    );
    let registry = at(raw(Some(huge.into_bytes())).await);
    assert!(
        matches!(registry.get(&bob).await, Err(ClientError::Protocol(m)) if m.contains("larger than"))
    );
    let chunked = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{}",
        "4000\r\n".to_string()
            + &"y".repeat(0x4000)
            + "\r\n"
            + "4000\r\n"
            + &"y".repeat(0x4000)
            + "\r\n0\r\n\r\n"
    );
    let registry = at(raw(Some(chunked.into_bytes())).await);
    assert!(
        matches!(registry.get(&bob).await, Err(ClientError::Protocol(m)) if m.contains("larger than"))
    );
    // An endless head is cut at hyper's buffer limit.
    let head = format!("HTTP/1.1 200 OK\r\nx-junk: {}\r\n\r\n", "z".repeat(1 << 16));
    let registry = at(raw(Some(head.into_bytes())).await);
    assert!(matches!(
        registry.get(&bob).await,
        Err(ClientError::Protocol(_))
    ));
    // Not HTTP at all.
    let registry = at(raw(Some(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec())).await);
    assert!(matches!(
        registry.health().await,
        Err(ClientError::Protocol(_))
    ));
    // Silence: the call gives up at its bound.
    let bound = Duration::from_millis(300);
    let registry = at(raw(None).await).with_timeout(bound);
    let started = Instant::now();
    assert_eq!(registry.health().await, Err(ClientError::Timeout(bound)));
    assert!(started.elapsed() < bound * 3);
    // Nobody there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = at(closed).health().await.unwrap_err();
    assert!(e.is_unreachable(), "{e}");
}

#[tokio::test]
async fn fan_out_keeps_the_order_of_the_registries() {
    let owner = Identity::generate();
    let bob = Name::parse("bob").unwrap();
    let (a, b) = (serve(registry_app()).await, serve(registry_app()).await);
    let registries = vec![
        Ok(at(a)),
        Registry::parse("gopher://names.example.org"),
        Ok(at(b)),
    ];
    let bytes = record(&owner, "bob", 1);
    at(b).put(&bob, &bytes).await.unwrap();
    let answers = get_all(&registries, &bob).await;
    assert_eq!(answers[0], Ok(None));
    assert_eq!(answers[1], Err(ClientError::BadUrl));
    assert_eq!(answers[2], Ok(Some(bytes.clone())));
    let stored = put_all(&registries, &bob, &bytes).await;
    assert_eq!(stored[0].as_ref().unwrap().outcome, PutOutcome::Claimed);
    assert_eq!(stored[2].as_ref().unwrap().outcome, PutOutcome::Unchanged);
}

#[tokio::test]
async fn claims_go_in_url_order_and_stop_where_another_key_won() {
    let (owner, rival) = (Identity::generate(), Identity::generate());
    let bob = Name::parse("bob").unwrap();
    let (x, y) = (serve(registry_app()).await, serve(registry_app()).await);
    // The referee is the registry whose URL sorts first, whatever order the list has.
    let (first, second) = if at(x).url() < at(y).url() {
        (x, y)
    } else {
        (y, x)
    };
    at(first)
        .put(&bob, &record(&rival, "bob", 1))
        .await
        .unwrap();
    let registries = vec![Ok(at(second)), Ok(at(first))];
    let stored = put_all(&registries, &bob, &record(&owner, "bob", 2)).await;
    assert!(matches!(stored[1], Err(ClientError::Taken { .. })));
    assert_eq!(stored[0], Err(ClientError::Skipped));
    // The second registry was never asked: the name is still free there.
    assert_eq!(at(second).get(&bob).await, Ok(None));
}
