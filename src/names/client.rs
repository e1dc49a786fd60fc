//! The HTTP/1.1 client of one name registry, speaking the API of `docs/names.md`: health, get,
//! put (claim or renew) and delete (release). `http://` over a `tokio::net::TcpStream`, or
//! `https://` through TLS (rustls, the system's trusted roots, which `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` can replace), driven by hyper's one-connection client; every call is bounded by
//! [`crate::timing::REGISTRY_TIMEOUT`] and reads at most [`MAX_RESPONSE_LEN`] bytes of body,
//! so a hostile or broken registry costs a few seconds and a few KiB, never more. Nothing a
//! registry says is trusted: records are verified by the caller ([`super::resolve`]), and text
//! it sends back is cut short and stripped of control characters before anyone prints it.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use data_encoding::BASE64URL_NOPAD;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, CONNECTION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

use super::name::Name;
use crate::config::HostPort;
use crate::timing::REGISTRY_TIMEOUT;

/// Largest response body read from a registry: a record (at most 4 KiB, about 5.5 KiB as
/// base64) in its JSON envelope fits with room to spare; anything longer is refused unread.
pub const MAX_RESPONSE_LEN: usize = 16 * 1024;
/// Largest response head (status line and headers) hyper buffers: its minimum allowed value.
const MAX_HEAD_LEN: usize = 8 * 1024;
/// Longest piece of registry-supplied text (an error message) shown to the user.
const MAX_TEXT_LEN: usize = 200;
/// The registry API version this client speaks.
pub const API_VERSION: u64 = 1;

/// What went wrong with one registry call.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    #[error("not a registry URL: expected http://HOST[:PORT][/PATH]")]
    BadUrl,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the name belongs to another key (fingerprint {owner})")]
    Taken { owner: String },
    #[error("refused: {0}")]
    Invalid(String),
    #[error("rate limited: try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("over its quota of names per key: {0}")]
    Quota(String),
    #[error("the name is not held there")]
    NotHeld,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("not asked: the registry that refereed the claim gave the name to another key")]
    Skipped,
}

impl ClientError {
    /// The registry could not be asked at all (as opposed to an answer we did not like).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Timeout(_))
    }
}

/// What a successful `PUT` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PutOutcome {
    /// The name was free and is now ours.
    Claimed,
    /// Ours already; the newer record replaced the stored one.
    Renewed,
    /// The very same record was stored already.
    Unchanged,
}

/// The registry's answer to a `PUT` it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub outcome: PutOutcome,
    pub seq: u64,
    pub expires_at: u64,
}

/// The registry's answer to `GET /v1/health`, and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub names: u64,
    /// The address the request went to.
    pub addr: SocketAddr,
    pub rtt: Duration,
}

/// One registry, by its URL: `http://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    url: String,
    server: HostPort,
    /// The `Host` header: the authority as written.
    authority: String,
    /// The path the API lives under, without a trailing slash ("" for the root).
    prefix: String,
    /// `https://`: TLS to the server, checked against the system's trusted roots.
    tls: bool,
    timeout: Duration,
}

/// A response, read whole (within the limits).
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Bytes,
    addr: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    retry_after: Option<u64>,
}

impl Registry {
    /// Parses a configured registry URL: `http://` or `https://`, a host, an optional port
    /// (80 or 443) and an optional path prefix.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let url = url.trim();
        let (tls, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            _ => return Err(ClientError::BadUrl),
        };
        if rest.contains(['?', '#', '@']) {
            return Err(ClientError::BadUrl);
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let default_port = if tls { 443 } else { 80 };
        let server = HostPort::parse(authority, Some(default_port)).ok_or(ClientError::BadUrl)?;
        let prefix = path.trim_end_matches('/');
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c))
        {
            return Err(ClientError::BadUrl);
        }
        Ok(Self {
            url: url.to_string(),
            server,
            authority: authority.to_string(),
            prefix: prefix.to_string(),
            tls,
            timeout: REGISTRY_TIMEOUT,
        })
    }

    /// The same registry with another bound on each call (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The registry's host and port.
    pub fn server(&self) -> &HostPort {
        &self.server
    }

    /// The URL as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /v1/health`: whether the registry is up and speaks our API version.
    pub async fn health(&self) -> Result<Health, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            status: String,
            version: u64,
            #[serde(default)]
            names: u64,
        }
        let started = Instant::now();
        let answer = self.exchange(Method::GET, "/v1/health", None).await?;
        let rtt = started.elapsed();
        if answer.status != StatusCode::OK {
            return Err(error_of(&answer));
        }
        let body: Body = json(&answer.body)?;
        if body.status != "ok" {
            return Err(ClientError::Protocol(format!(
                "health status {:?}",
                tidy(&body.status)
            )));
        }
        if body.version != API_VERSION {
            return Err(ClientError::Protocol(format!(
                "the registry speaks API version {}, this warpgate speaks {API_VERSION}",
                body.version
            )));
        }
        Ok(Health {
            names: body.names,
            addr: answer.addr,
            rtt,
        })
    }

    /// `GET /v1/names/{name}`: the stored record's bytes (unverified), or `None` when the
    /// registry has none (unknown, free, or expired).
    pub async fn get(&self, name: &Name) -> Result<Option<Vec<u8>>, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            record: String,
        }
        let answer = self.exchange(Method::GET, &name_path(name), None).await?;
        match answer.status {
            StatusCode::OK => {
                let body: Body = json(&answer.body)?;
                decode(&body.record).map(Some)
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(error_of(&answer)),
        }
    }

    /// `PUT /v1/names/{name}`: claims or renews the name with the signed `record`.
    pub async fn put(&self, name: &Name, record: &[u8]) -> Result<Stored, ClientError> {
        #[derive(Deserialize)]
        struct Body {
            outcome: String,
            seq: u64,
            expires_at: u64,
        }
        let body = serde_json::json!({ "record": BASE64URL_NOPAD.encode(record) });
        let answer = self
            .exchange(Method::PUT, &name_path(name), Some(body))
            .await?;
        if answer.status != StatusCode::OK {
            return Err(error_of(&answer));
        }
        let body: Body = json(&answer.body)?;
        let outcome = match body.outcome.as_str() {
            "claimed" => PutOutcome::Claimed,
            "renewed" => PutOutcome::Renewed,
            "unchanged" => PutOutcome::Unchanged,
            other => {
                return Err(ClientError::Protocol(format!(
                    "unknown outcome {:?}",
                    tidy(other)
                )))
            }
        };
        Ok(Stored {
            outcome,
            seq: body.seq,
            expires_at: body.expires_at,
        })
    }

    /// `DELETE /v1/names/{name}`: releases the name with the signed `release`.
    pub async fn delete(&self, name: &Name, release: &[u8]) -> Result<(), ClientError> {
        #[derive(Deserialize)]
        struct Body {
            outcome: String,
        }
        let body = serde_json::json!({ "release": BASE64URL_NOPAD.encode(release) });
        let answer = self
            .exchange(Method::DELETE, &name_path(name), Some(body))
            .await?;
        match answer.status {
            StatusCode::OK => {
                let body: Body = json(&answer.body)?;
                if body.outcome == "released" {
                    Ok(())
                } else {
                    Err(ClientError::Protocol(format!(
                        "unknown outcome {:?}",
                        tidy(&body.outcome)
                    )))
                }
            }
            StatusCode::NOT_FOUND => Err(ClientError::NotHeld),
            _ => Err(error_of(&answer)),
        }
    }

    /// One request and its whole response, within the timeout and the size limits.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ClientError> {
        tokio::time::timeout(self.timeout, self.exchange_unbounded(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    async fn exchange_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ClientError> {
        let (stream, addr) = self.connect().await?;
        if !self.tls {
            return self.send(stream, addr, method, path, body).await;
        }
        let host = self
            .server
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| ClientError::BadUrl)?;
        let stream = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(server_name, stream)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        self.send(stream, addr, method, path, body).await
    }

    /// One request and its response over `stream`, already connected (and secured).
    async fn send<S>(
        &self,
        stream: S,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_HEAD_LEN)
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, &self.authority)
            .header(ACCEPT, "application/json")
            .header(CONNECTION, "close")
            .header(USER_AGENT, concat!("warpgate/", env!("CARGO_PKG_VERSION")));
        let request = match body {
            Some(json) => request
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(json.to_string()))),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_LEN)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ClientError::Protocol(format!(
                            "response body larger than {MAX_RESPONSE_LEN} bytes"
                        ))
                    } else {
                        ClientError::Protocol(e.to_string())
                    }
                })?
                .to_bytes();
            let retry_after = parts
                .headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            Ok(Answer {
                status: parts.status,
                retry_after,
                body,
                addr,
            })
        };
        // The connection is driven here, beside the exchange, rather than by a spawned task:
        // dropping this future (the timeout) drops the socket too.
        tokio::pin!(connection, exchange);
        tokio::select! {
            biased;
            answer = &mut exchange => answer,
            ended = &mut connection => {
                if let Err(e) = ended {
                    tracing::debug!(registry = %self.url, "connection ended: {e}");
                }
                // The response, if it came whole, is buffered; else the exchange fails now.
                exchange.await
            }
        }
    }

    /// A TCP connection to the first of the server's addresses that accepts one.
    async fn connect(&self) -> Result<(tokio::net::TcpStream, SocketAddr), ClientError> {
        let addrs = tokio::net::lookup_host((self.server.host.as_str(), self.server.port))
            .await
            .map_err(|e| {
                ClientError::Unreachable(format!("cannot resolve {}: {e}", self.server))
            })?;
        let mut last = format!("{} resolved to no address", self.server);
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(ClientError::Unreachable(last))
    }
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// The TLS client configuration of https registries: the system's trusted roots (loaded
/// once; `SSL_CERT_FILE`/`SSL_CERT_DIR` replace them), TLS 1.2 and 1.3, HTTP/1.1.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(match found.errors.first() {
                    Some(e) => format!("no trusted root certificates: {e}"),
                    None => "no trusted root certificates on this system".to_string(),
                });
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(ClientError::Tls)
}

fn name_path(name: &Name) -> String {
    // A canonical label is letters, digits and hyphens: nothing to escape.
    format!("/v1/names/{}", name.as_str())
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Protocol(format!("unexpected response body: {e}")))
}

fn decode(b64: &str) -> Result<Vec<u8>, ClientError> {
    BASE64URL_NOPAD
        .decode(b64.as_bytes())
        .map_err(|_| ClientError::Protocol("a record that is not unpadded base64url".into()))
}

/// The error a non-success status stands for, with the registry's one line when it sent one.
fn error_of(answer: &Answer) -> ClientError {
    let doc: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or_default();
    let message = doc.error.as_deref().map(tidy).unwrap_or_else(|| {
        answer
            .status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_string()
    });
    match answer.status {
        StatusCode::CONFLICT => ClientError::Taken {
            owner: doc
                .owner
                .as_deref()
                .map(tidy)
                .unwrap_or_else(|| "not given".into()),
        },
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
            ClientError::Invalid(message)
        }
        StatusCode::FORBIDDEN => ClientError::Quota(message),
        StatusCode::TOO_MANY_REQUESTS => ClientError::RateLimited {
            retry_after: doc.retry_after.or(answer.retry_after).unwrap_or(60),
        },
        status => ClientError::Protocol(format!("HTTP {}: {message}", status.as_u16())),
    }
}

/// Registry-supplied text made safe to print: no control characters, at most
/// [`MAX_TEXT_LEN`] characters.
fn tidy(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT_LEN)
        .collect();
    if text
        .chars()
        .filter(|c| !c.is_control())
        .nth(MAX_TEXT_LEN)
        .is_some()
    {
        out.push('…');
    }
    out
}

/// Asks every registry for `name` at once; one answer per registry, in order.
pub async fn get_all(
    registries: &[Result<Registry, ClientError>],
    name: &Name,
) -> Vec<Result<Option<Vec<u8>>, ClientError>> {
    futures_util::future::join_all(registries.iter().map(|r| async move {
        match r {
            Ok(registry) => registry.get(name).await,
            Err(e) => Err(e.clone()),
        }
    }))
    .await
}

/// Puts `record` on the registries one after another, in the order of their URLs (not the
/// order given), and stops at the first that says the name is another key's; one outcome per
/// registry, in the order given. The fixed order makes the first registry that answers the
/// referee between two keys claiming a free name at once: both claimants reach it first, it
/// lets one win (its writes are atomic), and the loser goes no further, so the winner gets
/// every registry that answers and the loser none.
pub async fn put_all(
    registries: &[Result<Registry, ClientError>],
    name: &Name,
    record: &[u8],
) -> Vec<Result<Stored, ClientError>> {
    let mut order: Vec<usize> = (0..registries.len()).collect();
    order.sort_by_key(|&i| registries[i].as_ref().map(Registry::url).ok());
    let mut outcomes: Vec<Option<Result<Stored, ClientError>>> = vec![None; registries.len()];
    for i in order {
        let outcome = match &registries[i] {
            Ok(registry) => registry.put(name, record).await,
            Err(e) => Err(e.clone()),
        };
        let taken = matches!(outcome, Err(ClientError::Taken { .. }));
        outcomes[i] = Some(outcome);
        if taken {
            break;
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Err(ClientError::Skipped)))
        .collect()
}

/// Sends `release` to every registry at once; one outcome per registry, in order.
pub async fn delete_all(
    registries: &[Result<Registry, ClientError>],
    name: &Name,
    release: &[u8],
) -> Vec<Result<(), ClientError>> {
    futures_util::future::join_all(registries.iter().map(|r| async move {
        match r {
            Ok(registry) => registry.delete(name, release).await,
            Err(e) => Err(e.clone()),
        }
    }))
    .await
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
