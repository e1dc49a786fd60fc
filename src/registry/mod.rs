//! The name registry server (`warpgate registry serve`, DESIGN §8): stores and serves the
//! records names' owners sign, over the HTTP API of docs/names.md. It is never trusted: it
//! verifies signatures so as not to store junk, but clients verify every record again.
//!
//! - [`rules`]: the decisions (who may claim, renew, release) as pure functions.
//! - [`store`]: SQLite in WAL mode, one fsynced transaction per write.
//! - [`http`]: the axum routes, request limits and the JSON errors.
//! - [`limit`]: per-source write rate limit and connection count, in bounded tables.
//!
//! This file is the server itself: it binds, optionally wraps connections in TLS (rustls),
//! serves HTTP/1.1 on each with hyper under caps (connections in all and per source, header and
//! body read times, a connection lifetime) so strangers cannot pin it, and on shutdown stops
//! accepting, lets requests in flight finish briefly, and closes the database.

pub mod http;
pub mod limit;
pub mod rules;
pub mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::http::{App, ClientIp};
use self::limit::{ConnectionSlot, Connections, RateLimiter};
use self::rules::Policy;
use self::store::{Store, StoreError};
use crate::timing::{
    ACCEPT_RETRY_PAUSE, HANDSHAKE_TIMEOUT, REGISTRY_CONN_LIFETIME, REGISTRY_DRAIN,
    REGISTRY_HEADER_TIMEOUT, REGISTRY_PURGE_INTERVAL,
};

/// The API version `GET /v1/health` reports.
pub const PROTOCOL_VERSION: u32 = 1;
/// The port a registry listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7700;
/// Names one key may hold, unless `--max-names` says otherwise.
pub const DEFAULT_MAX_NAMES: u32 = 8;
/// Writes (claims, renewals, releases) per minute per source, unless `--writes-per-minute`.
pub const DEFAULT_WRITES_PER_MINUTE: u32 = 30;
/// Largest request body: a record is at most 4 KiB, so 16 KiB of JSON is plenty.
pub const MAX_BODY: usize = 16 * 1024;
/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections one source may hold open at once; more are closed at once.
pub const MAX_CONNECTIONS_PER_SOURCE: u32 = 32;
/// Sources with a rate-limit bucket of their own; beyond it newcomers share one.
pub const MAX_TRACKED_IPS: usize = 4096;
/// hyper's read buffer, which bounds a request's head (hyper's own floor is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot read {0}: {1}")]
    Pem(PathBuf, rustls::pki_types::pem::Error),
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("cannot use the certificate and key: {0}")]
    Tls(#[from] rustls::Error),
}

/// TLS material: PEM files of the certificate chain and its private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to run a registry.
#[derive(Clone, Debug)]
pub struct Options {
    pub bind: SocketAddr,
    pub db: PathBuf,
    pub tls: Option<TlsFiles>,
    pub policy: Policy,
    pub writes_per_minute: u32,
}

/// A bound registry, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: App,
}

impl Server {
    /// Opens the store, loads the TLS files and binds: every mistake shows before serving.
    pub async fn bind(options: &Options) -> Result<Self, RegistryError> {
        let tls = match &options.tls {
            Some(files) => Some(TlsAcceptor::from(Arc::new(tls_config(files)?))),
            None => None,
        };
        // Before serving, nothing else runs on the runtime for this to hold up.
        let store = Store::open(&options.db)?;
        let listener = TcpListener::bind(options.bind)
            .await
            .map_err(|e| RegistryError::Bind(options.bind, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| RegistryError::Bind(options.bind, e))?;
        let limiter = RateLimiter::new(options.writes_per_minute, MAX_TRACKED_IPS, Instant::now());
        Ok(Self {
            listener,
            local,
            tls,
            app: App {
                store: Arc::new(store),
                policy: options.policy,
                limiter: Arc::new(Mutex::new(limiter)),
            },
        })
    }

    /// The address actually bound (the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `stop` is cancelled, then drains: no new connections, requests in flight
    /// get [`REGISTRY_DRAIN`] to finish, the rest are cut, and the database is closed.
    pub async fn run(self, stop: CancellationToken) {
        let router = http::router(self.app.clone());
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let sources = Connections::new(MAX_CONNECTIONS_PER_SOURCE);
        let mut tasks = JoinSet::new();
        tasks.spawn(purge(self.app.clone(), stop.clone()));
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                _ = stop.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("registry: accept failed: {e}");
                        tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                        continue;
                    }
                },
            };
            let Some(slot) = sources.admit(peer.ip()) else {
                tracing::debug!(%peer, "registry: too many connections from this source");
                continue;
            };
            let (tls, router, stop) = (self.tls.clone(), router.clone(), stop.clone());
            tasks.spawn(async move {
                connection(tcp, peer, tls, router, stop, slot).await;
                drop(permit);
            });
        }
        drop(self.listener);
        let drained = tokio::time::timeout(REGISTRY_DRAIN, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "registry: {} connections still busy after {REGISTRY_DRAIN:?}; cutting them",
                tasks.len()
            );
            tasks.shutdown().await;
        }
        // The store closes when its last handle goes: here, unless a write is still committing
        // on the blocking pool (it then closes the store when it is done).
        drop(router);
        drop(self.app);
    }
}

/// Serves one connection: TLS first if configured, then HTTP/1.1 until the client is done, the
/// connection's lifetime is up, or the server stops (then gracefully, bounded).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    stop: CancellationToken,
    _slot: ConnectionSlot,
) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_http(tcp, peer, router, stop).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => serve_http(stream, peer, router, stop).await,
        Ok(Err(e)) => tracing::debug!(%peer, "registry: TLS handshake failed: {e}"),
        Err(_) => tracing::debug!(%peer, "registry: TLS handshake timed out"),
    }
}

async fn serve_http<S>(io: S, peer: SocketAddr, router: axum::Router, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let ip = ClientIp(peer.ip());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ip);
        service.call(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REGISTRY_HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "registry: connection ended: {e}");
            }
            return;
        }
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(REGISTRY_CONN_LIFETIME) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(REGISTRY_DRAIN, conn).await;
}

/// Deletes the rows of names past their grace every [`REGISTRY_PURGE_INTERVAL`].
async fn purge(app: App, stop: CancellationToken) {
    let mut every = tokio::time::interval(REGISTRY_PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let store = app.store.clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match tokio::task::spawn_blocking(move || store.purge(now, app.policy)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!("registry: forgot {n} names past their grace"),
            Ok(Err(e)) => tracing::warn!("registry: purge failed: {e}"),
            Err(e) => tracing::warn!("registry: purge task failed: {e}"),
        }
    }
}

/// A rustls server config from the PEM files (ring provider, TLS 1.2 and 1.3, HTTP/1.1).
fn tls_config(files: &TlsFiles) -> Result<rustls::ServerConfig, RegistryError> {
    let pem = |path: &Path, e| RegistryError::Pem(path.to_path_buf(), e);
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem(&files.cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, e))?;
    if certs.is_empty() {
        return Err(RegistryError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem(&files.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
