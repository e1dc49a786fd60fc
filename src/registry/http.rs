//! The registry's HTTP API, version 1 (docs/names.md), as an axum router: routes, the request
//! checks that come before any work (name syntax, the write rate limit, the body size and read
//! time), and the mapping of [`rules::Refusal`]s to statuses. Every response body is JSON and
//! every error is `{"error": …}` plus the fields the contract names. Signatures are verified and
//! the store is touched on the blocking pool, never on the runtime's thread.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, HttpBody as _};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use data_encoding::BASE64URL_NOPAD;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{json, Value};

use super::limit::RateLimiter;
use super::rules::{self, Policy, Refusal};
use super::store::{Store, StoreError};
use super::{MAX_BODY, PROTOCOL_VERSION};
use crate::names::Name;
use crate::timing::REGISTRY_BODY_TIMEOUT;

/// The source address of the connection a request came on (set by the server per connection).
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    pub store: Arc<Store>,
    pub policy: Policy,
    pub limiter: Arc<Mutex<RateLimiter>>,
}

/// The routes of API version 1.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/names/{name}", get(lookup).put(claim).delete(release))
        .fallback(|| async { Failure::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Failure::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .with_state(app)
}

#[derive(Deserialize)]
struct ClaimBody {
    record: String,
}

#[derive(Deserialize)]
struct ReleaseBody {
    release: String,
}

/// A request ended early: its status and JSON body (`{"error": …}` and the contract's fields).
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, message: &str) -> Self {
        Self::with(status, json!({ "error": message }))
    }

    fn with(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Invalid(message) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, &message),
            Refusal::Taken { owner } => Self::with(
                StatusCode::CONFLICT,
                json!({"error": "the name belongs to another key", "owner": owner.fingerprint()}),
            ),
            Refusal::Quota { max } => Self::new(
                StatusCode::FORBIDDEN,
                &format!("this key already holds {max} names, the most this registry allows"),
            ),
            Refusal::NotHeld => Self::new(StatusCode::NOT_FOUND, "the name is not held by anyone"),
        }
    }
}

type Reply = Result<Json<Value>, Failure>;

async fn health(State(app): State<App>) -> Reply {
    let store = app.store.clone();
    let names = blocking(move || store.live_count(now())).await?;
    Ok(Json(
        json!({"status": "ok", "version": PROTOCOL_VERSION, "names": names}),
    ))
}

async fn lookup(State(app): State<App>, path: Result<Path<String>, PathRejection>) -> Reply {
    let name = path_name(path)?;
    let store = app.store.clone();
    let wanted = name.clone();
    match blocking(move || store.lookup(&wanted, now())).await? {
        Some(bytes) => Ok(Json(json!({"record": BASE64URL_NOPAD.encode(&bytes)}))),
        None => Err(Failure::new(
            StatusCode::NOT_FOUND,
            &format!("{name} is not registered"),
        )),
    }
}

async fn claim(
    State(app): State<App>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let (name, body) = write_request::<ClaimBody>(&app, ip, path, body).await?;
    let bytes = decode(&body.record, "record")?;
    let (store, policy) = (app.store.clone(), app.policy);
    let decided = blocking(move || {
        let now = now();
        let record = match rules::check_record(&bytes, &name, now) {
            Ok(record) => record,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let outcome = store.claim(&record, &bytes, now, policy)?;
        Ok(outcome.map(|o| (o, record)))
    })
    .await?;
    let (outcome, record) = decided?;
    tracing::info!(name = %record.name, owner = %record.key.id(), seq = record.seq, "{}", outcome.as_str());
    Ok(Json(
        json!({"outcome": outcome.as_str(), "seq": record.seq, "expires_at": record.expires_at}),
    ))
}

async fn release(
    State(app): State<App>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Reply {
    let (name, body) = write_request::<ReleaseBody>(&app, ip, path, body).await?;
    let bytes = decode(&body.release, "release")?;
    let (store, policy) = (app.store.clone(), app.policy);
    let decided = blocking(move || match rules::check_release(&bytes, &name) {
        Ok(release) => Ok(store.release(&release, now(), policy)?.map(|()| release)),
        Err(refusal) => Ok(Err(refusal)),
    })
    .await?;
    let release = decided?;
    tracing::info!(name = %release.name, owner = %release.key.id(), "released");
    Ok(Json(json!({"outcome": "released"})))
}

/// The checks every write passes before any work: the name in the path, the source's rate
/// limit, then a JSON body of at most [`MAX_BODY`] read within [`REGISTRY_BODY_TIMEOUT`].
async fn write_request<T: serde::de::DeserializeOwned>(
    app: &App,
    ip: IpAddr,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<(Name, T), Failure> {
    let name = path_name(path)?;
    let allowed = app
        .limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(ip, Instant::now());
    if let Err(wait) = allowed {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        tracing::debug!(%ip, "write refused by the rate limit");
        let mut failure = Failure::with(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "too many writes from this address; try again later", "retry_after": secs}),
        );
        failure.retry_after = Some(secs);
        return Err(failure);
    }
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {MAX_BODY} bytes"),
        )
    };
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    let read = tokio::time::timeout(
        REGISTRY_BODY_TIMEOUT,
        Limited::new(body, MAX_BODY).collect(),
    );
    let bytes = match read.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(_)) => {
            return Err(Failure::new(
                StatusCode::BAD_REQUEST,
                "the request body broke off",
            ))
        }
        Err(_) => {
            return Err(Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body took too long to arrive",
            ))
        }
    };
    let parsed = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not the expected JSON: {e}"),
        )
    })?;
    Ok((name, parsed))
}

/// The canonical name in the path, or a 400.
fn path_name(path: Result<Path<String>, PathRejection>) -> Result<Name, Failure> {
    let text = path
        .map(|Path(text)| text)
        .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, &e.body_text()))?;
    Name::from_canonical(&text).ok_or_else(|| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            &format!(
                "{text:?} is not a name: use 1-63 lowercase letters, digits and inner hyphens, without .p2p"
            ),
        )
    })
}

fn decode(text: &str, what: &str) -> Result<Vec<u8>, Failure> {
    BASE64URL_NOPAD.decode(text.as_bytes()).map_err(|_| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            &format!("the {what} is not unpadded base64url"),
        )
    })
}

/// Runs store work on the blocking pool; a failure is a logged 500.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Failure> {
    let failed = |message: String| {
        tracing::error!("{message}");
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the registry's store failed",
        )
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(e) => Err(failed(format!("store task failed: {e}"))),
    }
}

/// Unix seconds now.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
