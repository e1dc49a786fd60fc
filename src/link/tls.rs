//! The TCP transport: TLS 1.3 (tokio-rustls) carrying HTTP/2 framing (h2) as the stream
//! multiplexer. h2 gives per-stream flow control and, unlike simpler multiplexers, tells a
//! cleanly finished stream (END_STREAM) from a dropped connection (an error), which is what lets
//! warpgate report an interrupted transfer instead of a short one.
//!
//! The connector is the HTTP/2 client (it opens streams, one request per stream); the listener
//! is the server (one response per stream). Headers are minimal; bytes travel as DATA frames.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio_util::task::AbortOnDropHandle;

use super::limits::{CONNECTION_WINDOW, UNTAKEN_WINDOW};
use crate::timing::RESET_FLUSH;

use super::{
    pin, CloseReason, Inner, Link, LinkError, LinkInfo, Path, RecvInner, RecvStream, SendInner,
    SendStream, Stream, Transport,
};

/// Per-stream flow-control window: a stream may use the whole connection window.
const STREAM_WINDOW: u32 = CONNECTION_WINDOW;
/// Largest DATA frame we accept (the peer's frames are split at this size), and so the most a
/// peer can make h2 buffer of one frame. 64 KiB frames cost no loopback throughput (16 KiB
/// ones cost ~10%: scripts/bench).
const MAX_FRAME: u32 = 64 << 10;
/// Data h2 may buffer per stream before asking the writer to wait, whatever window the peer
/// advertises: a connector that stops reading makes us hold at most this per stream. 64 KiB
/// (one frame) keeps loopback throughput (scripts/bench: as fast as 4 MiB was).
const SEND_BUFFER: usize = 64 << 10;
/// Most bytes taken from one `poll_write`.
const MAX_WRITE: usize = 1 << 20;
/// Streams the listener lets one connector have open at once (and streams it queues for the
/// driver): [`super::limits::MAX_STREAMS`].
const MAX_STREAMS: u32 = super::limits::MAX_STREAMS;
/// The largest header list either side accepts. A stream's request is four pseudo-headers
/// (POST, https, warpgate, /: 175 bytes as HTTP/2 counts them) and its response one (:status,
/// 42): 1 KiB leaves room and keeps a peer from making h2 buffer headers (16 MiB by default).
const MAX_HEADER_LIST: u32 = 1 << 10;

pub(super) struct TlsLink {
    role: Role,
    driver: Mutex<Option<AbortOnDropHandle<Result<(), h2::Error>>>>,
    /// Holds the reason once the connection has ended; waited on by every `closed()` call.
    lost: watch::Receiver<Option<String>>,
}

enum Role {
    Client(h2::client::SendRequest<Bytes>),
    Server {
        incoming: Mutex<mpsc::Receiver<Stream>>,
        shutdown: Mutex<Option<oneshot::Sender<CloseReason>>>,
        /// Opens the connection window once the driver took the link.
        widen: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    },
}

fn map_tls_error(
    e: io::Error,
    mismatch: Option<&std::sync::Mutex<Option<pin::KeyMismatch>>>,
) -> LinkError {
    match mismatch.and_then(|m| m.lock().ok().and_then(|g| g.clone())) {
        Some(m) => LinkError::KeyMismatch(m),
        None => LinkError::from(e),
    }
}

/// The connector's HTTP/2 settings.
fn client_builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .enable_push(false)
        .max_header_list_size(MAX_HEADER_LIST)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER);
    builder
}

/// The listener's HTTP/2 settings: the connection window starts at [`UNTAKEN_WINDOW`] and
/// opens to [`CONNECTION_WINDOW`] when the driver takes the link ([`TlsLink::widen`]).
fn server_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .max_header_list_size(MAX_HEADER_LIST)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(UNTAKEN_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER)
        .max_concurrent_streams(MAX_STREAMS);
    builder
}

/// Connector side: TLS client handshake pinned to `expected`, then HTTP/2.
pub async fn connect(
    tcp: TcpStream,
    creds: &pin::Credentials,
    expected: crate::identity::PublicKey,
) -> Result<Link, LinkError> {
    let started = std::time::Instant::now();
    let (local, remote) = (tcp.local_addr()?, tcp.peer_addr()?);
    crate::net::tune_link_socket(&tcp)?;
    let (config, mismatch) = pin::client_config(creds, expected)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(crate::TLS_SERVER_NAME)
        .map_err(|_| LinkError::Protocol("invalid server name"))?;
    let tls = connector
        .connect(name, crate::net::LingeringTcp::new(tcp))
        .await
        .map_err(|e| map_tls_error(e, Some(&mismatch)))?;
    let (send_request, connection) = client_builder()
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(h2_error)?;
    let (lost_tx, lost_rx) = watch::channel(None);
    let driver = tokio::spawn(async move {
        let result = connection.await;
        let _ = lost_tx.send(Some(describe_end(&result)));
        result
    });
    Ok(Link {
        inner: Inner::Tcp(TlsLink {
            role: Role::Client(send_request),
            driver: Mutex::new(Some(AbortOnDropHandle::new(driver))),
            lost: lost_rx,
        }),
        held: None,
        peer_note: Vec::new(),
        info: LinkInfo {
            peer: expected,
            transport: Transport::Tcp,
            path: Path::Direct,
            local,
            remote,
            started,
        },
        relayed: None,
    })
}

/// Listener side: TLS server handshake (client key checked by the acceptor's verifier), then
/// HTTP/2. Returns the link and the peer key.
pub async fn accept(
    tcp: TcpStream,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> Result<Link, LinkError> {
    let started = std::time::Instant::now();
    let (local, remote) = (tcp.local_addr()?, tcp.peer_addr()?);
    crate::net::tune_link_socket(&tcp)?;
    let tls = acceptor
        .accept(crate::net::LingeringTcp::new(tcp))
        .await
        .map_err(|e| map_tls_error(e, None))?;
    let peer = pin::peer_key(tls.get_ref().1.peer_certificates())
        .ok_or(LinkError::Protocol("peer sent no key"))?;
    let mut connection = server_builder()
        .handshake::<_, Bytes>(tls)
        .await
        .map_err(h2_error)?;
    let (tx, rx) = mpsc::channel(MAX_STREAMS as usize);
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<CloseReason>();
    let (widen_tx, widen_rx) = oneshot::channel();
    let (lost_tx, lost_rx) = watch::channel(None);
    let driver = tokio::spawn(async move {
        let result = serve(&mut connection, tx, shutdown_rx, widen_rx).await;
        let _ = lost_tx.send(Some(describe_end(&result)));
        result
    });
    Ok(Link {
        inner: Inner::Tcp(TlsLink {
            role: Role::Server {
                incoming: Mutex::new(rx),
                shutdown: Mutex::new(Some(shutdown_tx)),
                widen: std::sync::Mutex::new(Some(widen_tx)),
            },
            driver: Mutex::new(Some(AbortOnDropHandle::new(driver))),
            lost: lost_rx,
        }),
        held: None,
        peer_note: Vec::new(),
        info: LinkInfo {
            peer,
            transport: Transport::Tcp,
            path: Path::Direct,
            local,
            remote,
            started,
        },
        relayed: None,
    })
}

/// The listener's connection driver: hands each stream the connector opens to `tx` until the
/// connection ends, closing it when `shutdown` says so and opening its window when `widen`
/// does. Streams nobody took yet are at most
/// [`MAX_STREAMS`]: beyond that (a peer opening and resetting streams the driver does not
/// take) new ones are refused.
async fn serve<T>(
    connection: &mut h2::server::Connection<T, Bytes>,
    tx: mpsc::Sender<Stream>,
    mut shutdown: oneshot::Receiver<CloseReason>,
    mut widen: oneshot::Receiver<()>,
) -> Result<(), h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut shutting_down, mut widened) = (false, false);
    loop {
        let next = tokio::select! {
            next = connection.accept() => next,
            told = &mut widen, if !widened => {
                widened = true;
                if told.is_ok() {
                    connection.set_target_window_size(CONNECTION_WINDOW);
                }
                continue;
            }
            reason = &mut shutdown, if !shutting_down => {
                shutting_down = true;
                match reason {
                    Ok(reason @ (CloseReason::Shutdown | CloseReason::Busy)) => {
                        go_away(connection, reason).await
                    }
                    // GOAWAY, and streams in flight run to their end.
                    Ok(CloseReason::Done) | Err(_) => connection.graceful_shutdown(),
                }
                continue;
            }
        };
        let Some(next) = next else { return Ok(()) };
        let (request, mut respond) = next?;
        let queued = match tx.try_reserve() {
            Ok(queued) => queued,
            Err(mpsc::error::TrySendError::Full(())) => {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
                continue;
            }
            // The receiver is gone (link being closed); the stream is dropped (reset).
            Err(mpsc::error::TrySendError::Closed(())) => continue,
        };
        // A stream the connector already reset ends here, not the link with it.
        let send = match respond.send_response(http::Response::new(()), false) {
            Ok(send) => send,
            Err(e) => {
                tracing::debug!("inbound stream gone before it was answered: {e}");
                continue;
            }
        };
        let stream = Stream {
            send: SendStream(SendInner::Tcp(H2Send {
                inner: send,
                finished: false,
            })),
            recv: RecvStream(RecvInner::Tcp(H2Recv::body(request.into_body()))),
        };
        queued.send(stream);
    }
}

/// Closes for [`CloseReason::Shutdown`] or [`CloseReason::Busy`]: GOAWAY with its code, so the
/// link ends with the reason, once the streams' resets (already queued with the code, so each
/// stream ends with it too) are out.
async fn go_away<T>(connection: &mut h2::server::Connection<T, Bytes>, reason: CloseReason)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let code = h2::Reason::from(reason.code());
    let flushed = std::future::poll_fn(|cx| {
        loop {
            match connection.poll_accept(cx) {
                // A stream opened just now is refused with the reason.
                Poll::Ready(Some(Ok((_, mut respond)))) => respond.send_reset(code),
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        // A stream counts until its last frame (here its reset) has left the queue.
        if connection.has_streams() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    });
    let _ = tokio::time::timeout(RESET_FLUSH, flushed).await;
    connection.abrupt_shutdown(code);
}

fn describe_end(result: &Result<(), h2::Error>) -> String {
    match result {
        Ok(()) => "closed by the peer".into(),
        Err(e) => describe(e),
    }
}

/// The reason the peer gave, when a RST_STREAM or GOAWAY it sent carries one of ours.
fn peer_reason(e: &h2::Error) -> Option<CloseReason> {
    let code = e.reason().filter(|_| e.is_remote())?;
    CloseReason::from_stream_code(u64::from(u32::from(code)))
}

/// h2 errors carry either an I/O error (the connection broke) or a protocol reason.
fn describe(e: &h2::Error) -> String {
    if let Some(reason) = peer_reason(e) {
        return LinkError::PeerClosed(reason.text().into()).to_string();
    }
    match e.get_io() {
        Some(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the peer's connection ended without a clean close".into()
        }
        Some(io) => io.to_string(),
        None if e.is_go_away() || e.is_remote() => format!("peer ended the link ({e})"),
        None => e.to_string(),
    }
}

fn h2_error(e: h2::Error) -> LinkError {
    if super::is_refusal(&e) {
        return LinkError::Refused(super::NOT_ALLOWED.into());
    }
    if let Some(reason) = peer_reason(&e) {
        return LinkError::PeerClosed(reason.text().into());
    }
    LinkError::Lost(describe(&e))
}

fn h2_io(e: h2::Error) -> io::Error {
    if let Some(reason) = peer_reason(&e) {
        return super::peer_closed(reason.text());
    }
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = if e.is_reset() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::ConnectionAborted
    };
    io::Error::new(kind, e)
}

impl TlsLink {
    pub(super) async fn open(&self) -> Result<Stream, LinkError> {
        let Role::Client(send_request) = &self.role else {
            return Err(LinkError::Protocol("only the connector opens streams"));
        };
        let mut ready = send_request.clone().ready().await.map_err(h2_error)?;
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri("https://warpgate/")
            .body(())
            .map_err(|_| LinkError::Protocol("cannot build stream request"))?;
        let (response, send) = ready.send_request(request, false).map_err(h2_error)?;
        Ok(Stream {
            send: SendStream(SendInner::Tcp(H2Send {
                inner: send,
                finished: false,
            })),
            recv: RecvStream(RecvInner::Tcp(H2Recv {
                state: RecvState::Waiting(response),
                chunk: Bytes::new(),
            })),
        })
    }

    /// Listener: opens the connection window from [`UNTAKEN_WINDOW`] to [`CONNECTION_WINDOW`].
    pub(super) fn widen(&self) {
        if let Role::Server { widen, .. } = &self.role {
            let tx = widen.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        }
    }

    pub(super) async fn accept(&self) -> Result<Option<Stream>, LinkError> {
        let Role::Server { incoming, .. } = &self.role else {
            return Err(LinkError::Protocol("only the listener accepts streams"));
        };
        Ok(incoming.lock().await.recv().await)
    }

    pub(super) async fn closed(&self) -> LinkError {
        let mut lost = self.lost.clone();
        let reason = match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "link dropped".into(),
        };
        LinkError::Lost(reason)
    }

    /// On [`CloseReason::Shutdown`] the streams were already reset with the reason (the
    /// client cannot send GOAWAY with a code of its own; the server does). The server closes
    /// for [`CloseReason::Busy`] as for a shutdown.
    pub(super) async fn close(self, reason: CloseReason) {
        match self.role {
            // Dropping the last request handle lets the client connection finish and flush.
            Role::Client(send_request) => drop(send_request),
            Role::Server {
                shutdown, incoming, ..
            } => {
                if reason != CloseReason::Done {
                    // Streams the connector opened that nobody took yet end with the reason too.
                    let mut incoming = incoming.lock().await;
                    incoming.close();
                    while let Ok(mut stream) = incoming.try_recv() {
                        stream.send.reset_with(reason);
                    }
                }
                if let Some(tx) = shutdown.lock().await.take() {
                    let _ = tx.send(reason);
                }
            }
        }
        if let Some(driver) = self.driver.lock().await.take() {
            let _ = driver.await;
        }
    }
}

/// Sending half of an h2 stream as an `AsyncWrite`.
pub(crate) struct H2Send {
    inner: h2::SendStream<Bytes>,
    finished: bool,
}

impl H2Send {
    pub(super) fn reset(&mut self, reason: h2::Reason) {
        self.inner.send_reset(reason);
    }

    /// Resolves once the peer reset the stream or the connection is gone, with the error.
    pub(super) async fn abandoned(&mut self) -> io::Error {
        match std::future::poll_fn(|cx| self.inner.poll_reset(cx)).await {
            Ok(code) => match CloseReason::from_stream_code(u64::from(u32::from(code))) {
                Some(reason) => super::peer_closed(reason.text()),
                None => io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("the peer reset the stream ({code:?})"),
                ),
            },
            Err(e) => h2_io(e),
        }
    }

    /// The stream can take no more: tell why, with the peer's reason if it reset the stream or
    /// went away with one. Only failures pass through here.
    fn unusable(&mut self, cx: &mut Context<'_>, fallback: io::Error) -> io::Error {
        match self.inner.poll_reset(cx) {
            Poll::Ready(Ok(code)) => {
                match CloseReason::from_stream_code(u64::from(u32::from(code))) {
                    Some(reason) => super::peer_closed(reason.text()),
                    None => fallback,
                }
            }
            Poll::Ready(Err(e)) => h2_io(e),
            Poll::Pending => fallback,
        }
    }
}

impl AsyncWrite for H2Send {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let capacity = self.inner.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                if let Err(e) = self
                    .inner
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                {
                    return Poll::Ready(Err(self.unusable(cx, h2_io(e))));
                }
                return Poll::Ready(Ok(n));
            }
            self.inner.reserve_capacity(buf.len().min(MAX_WRITE));
            match ready!(self.inner.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                None => {
                    let closed =
                        io::Error::new(io::ErrorKind::ConnectionReset, "stream closed by the peer");
                    return Poll::Ready(Err(self.unusable(cx, closed)));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes buffered frames as fast as flow control allows; there is nothing to push.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.finished {
            self.inner.send_data(Bytes::new(), true).map_err(h2_io)?;
            self.finished = true;
        }
        Poll::Ready(Ok(()))
    }
}

enum RecvState {
    /// Connector side: the listener's response (and with it the body) has not arrived yet.
    Waiting(h2::client::ResponseFuture),
    Body(h2::RecvStream),
    Stopped,
}

/// Receiving half of an h2 stream as an `AsyncRead`.
pub(crate) struct H2Recv {
    state: RecvState,
    chunk: Bytes,
}

impl H2Recv {
    fn body(body: h2::RecvStream) -> Self {
        Self {
            state: RecvState::Body(body),
            chunk: Bytes::new(),
        }
    }

    pub(super) fn stop(&mut self) {
        // Dropping the body tells h2 we will not read it; the peer's writes then fail.
        self.state = RecvState::Stopped;
        self.chunk = Bytes::new();
    }
}

impl AsyncRead for H2Recv {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                buf.put_slice(&self.chunk.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let this = &mut *self;
            match &mut this.state {
                RecvState::Waiting(response) => {
                    let response = ready!(Pin::new(response).poll(cx)).map_err(h2_io)?;
                    this.state = RecvState::Body(response.into_body());
                }
                RecvState::Body(body) => match ready!(body.poll_data(cx)) {
                    None => return Poll::Ready(Ok(())),
                    Some(Ok(chunk)) => {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        this.chunk = chunk;
                    }
                    Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                },
                RecvState::Stopped => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "stream was stopped",
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as a connector makes it, padded with a header of `pad` bytes.
    fn request(pad: usize) -> http::Request<()> {
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri("https://warpgate/");
        if pad > 0 {
            request = request.header("x-pad", "a".repeat(pad));
        }
        request.body(()).unwrap()
    }

    #[tokio::test]
    async fn the_listener_takes_no_headers_beyond_what_a_connector_sends() {
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let mut connection = server_builder()
                .handshake::<_, Bytes>(server_io)
                .await
                .unwrap();
            let mut answered = 0;
            while let Some(Ok((_, mut respond))) = connection.accept().await {
                respond
                    .send_response(http::Response::new(()), true)
                    .unwrap();
                answered += 1;
            }
            answered
        });
        let (client, connection) = client_builder()
            .handshake::<_, Bytes>(client_io)
            .await
            .unwrap();
        let driver = tokio::spawn(connection);
        let status = |pad| {
            let client = client.clone();
            async move {
                let mut ready = client.ready().await.unwrap();
                let (response, _) = ready.send_request(request(pad), true).unwrap();
                response.await.map(|r| r.status())
            }
        };
        assert_eq!(status(0).await.unwrap(), http::StatusCode::OK);
        // 2 KiB of headers: far more than any stream of ours needs; h2 allowed 16 MiB.
        let refused = status(2048).await;
        assert!(
            !matches!(refused, Ok(http::StatusCode::OK)),
            "an oversized header list was answered: {refused:?}"
        );
        assert_eq!(status(0).await.unwrap(), http::StatusCode::OK);
        drop(client);
        driver.await.unwrap().unwrap();
        assert_eq!(server.await.unwrap(), 2);
    }
}
