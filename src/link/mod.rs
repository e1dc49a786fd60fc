//! Links: an authenticated, encrypted, multiplexed connection to one peer, pinned to its key.
//!
//! Two transports share one interface: TLS 1.3 over TCP with HTTP/2 framing as the stream
//! multiplexer ([`tls`]), and QUIC ([`quic`]). Only the connector opens streams; the listener
//! accepts them. A link is *verified* by a round trip on its first (control) stream before the
//! cascade counts it, and *selected* by the connector so the listener knows which of several
//! racing links is the one in use ([`Link::verify`], [`Link::answer`]).
//!
//! The selection may carry a short *note* each way (at most [`MAX_NOTE`] bytes): the connector's
//! after its select word, the listener's in its acknowledgement. They cost no round trip and
//! travel on the control stream, never on a data stream, so a stream spliced to a TCP port or
//! stdio never sees them. The link does not read them: [`Link::peer_note`] hands the peer's to
//! the driver ([`crate::resume`] puts a transfer's resume facts there). A side with nothing to
//! say sends none, and the listener answers only a connector that sent one: a selection
//! without notes is byte for byte what it was before notes, so a connector older than them
//! still gets through.
//!
//! Neighbours: [`pin`] makes certificates and verifiers; [`listener`] accepts inbound links;
//! [`crate::traversal`] makes outbound ones; [`crate::splice`] moves bytes over the streams.

pub mod demux;
pub mod limits;
pub mod listener;
pub mod paths;
pub mod pin;
pub mod quic;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::identity::PublicKey;
use crate::timing::{CLOSE_TIMEOUT, SELECT_TIMEOUT, SHUTDOWN_CLOSE_TIMEOUT, VERIFY_TIMEOUT};

/// First bytes of the control stream: protocol magic and version.
const HELLO_MAGIC: &[u8; 8] = b"WGHELLO1";
/// The connector's word that this link is the one in use.
const SELECT_WORD: &[u8; 4] = b"USE!";
/// The longest selection note either side takes from the other (module doc).
pub const MAX_NOTE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Quic => "quic",
        }
    }
}

/// How a link's packets reach the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Straight between the two sockets (through NATs, perhaps).
    Direct,
    /// Through a relay server.
    Relayed,
}

impl Path {
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        }
    }
}

/// A relayed link moved to another path (DESIGN §1: the `path` event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathChange {
    pub path: Path,
    /// The strategy that found the new path.
    pub method: &'static str,
    pub remote: SocketAddr,
    /// Counted from when the link was made.
    pub after: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    KeyMismatch(pin::KeyMismatch),
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Lost(String),
    /// The peer closed the link (or abandoned our stream) and said why.
    #[error("the peer closed the link: {0}")]
    PeerClosed(String),
    #[error("peer spoke an unexpected protocol: {0}")]
    Protocol(&'static str),
    #[error(transparent)]
    Io(io::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("no relay: {0}")]
    Relay(String),
}

/// What a refused connector is told.
const NOT_ALLOWED: &str = "this node is not in the listener's --allow list";
/// TLS alert 49 (access_denied) as a QUIC crypto error code (0x100 + alert).
const QUIC_ACCESS_DENIED: u64 = 0x100 + 49;

/// Whether `err` is, however deeply the transport wrapped it, the peer refusing our key. In TLS
/// 1.3 a client learns of that only after its handshake completed, so the refusal can surface
/// from any later read or write, wrapped by h2, quinn and `io::Error`.
fn is_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(rustls::Error::AlertReceived(rustls::AlertDescription::AccessDenied)) =
            e.downcast_ref()
        {
            return true;
        }
        if let Some(quinn::ConnectionError::ConnectionClosed(close)) = e.downcast_ref() {
            return u64::from(close.error_code) == QUIC_ACCESS_DENIED;
        }
        next = match (e.downcast_ref::<io::Error>(), e.downcast_ref::<h2::Error>()) {
            (Some(io), _) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            (_, Some(h2)) => h2
                .get_io()
                .map(|io| io as &(dyn std::error::Error + 'static)),
            _ => e.source(),
        };
    }
    false
}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        if is_refusal(&e) {
            LinkError::Refused(NOT_ALLOWED.into())
        } else {
            LinkError::Io(e)
        }
    }
}

/// Why this side ends a link, as the peer is told it. QUIC carries the code and the text in its
/// CONNECTION_CLOSE; HTTP/2 carries only the code (in RST_STREAM and GOAWAY), and the peer reads
/// the text back from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The work is done and everything was delivered.
    Done,
    /// This side was told to stop (SIGINT or SIGTERM) and abandons what is in flight.
    Shutdown,
    /// The listener serves as many peers as it will at once (or its driver took no new link
    /// in time): this link is turned away before any stream was opened on it.
    Busy,
}

/// The application error code of [`CloseReason::Shutdown`]: outside HTTP/2's own codes
/// (0x0-0xd) and QUIC's codes in use here (0: done, 1: stream abandoned).
const SHUTDOWN_CODE: u32 = 0x7767_0001;
/// The application error code of [`CloseReason::Busy`], beside [`SHUTDOWN_CODE`].
const BUSY_CODE: u32 = 0x7767_0002;

impl CloseReason {
    fn code(self) -> u32 {
        match self {
            CloseReason::Done => 0,
            CloseReason::Shutdown => SHUTDOWN_CODE,
            CloseReason::Busy => BUSY_CODE,
        }
    }

    fn text(self) -> &'static str {
        match self {
            CloseReason::Done => "done",
            CloseReason::Shutdown => "shutting down",
            CloseReason::Busy => "busy (serving other peers), try again later",
        }
    }

    /// What the peer meant by `code` on a stream it abandoned, if it was a reason of ours.
    fn from_stream_code(code: u64) -> Option<Self> {
        [CloseReason::Shutdown, CloseReason::Busy]
            .into_iter()
            .find(|reason| u64::from(reason.code()) == code)
    }

    /// How long closing for this reason may take.
    fn bound(self) -> std::time::Duration {
        match self {
            CloseReason::Done => CLOSE_TIMEOUT,
            CloseReason::Shutdown | CloseReason::Busy => SHUTDOWN_CLOSE_TIMEOUT,
        }
    }
}

/// The error a stream read or write fails with once the peer closed the link for `reason`.
fn peer_closed(reason: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        LinkError::PeerClosed(reason.into()),
    )
}

/// Who the link is with and how it runs.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    pub peer: PublicKey,
    pub transport: Transport,
    pub path: Path,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// When this side began making the link (handshake start).
    pub started: std::time::Instant,
}

enum Inner {
    Tcp(tls::TlsLink),
    Quic(quic::QuicLink),
}

/// An established link.
pub struct Link {
    inner: Inner,
    info: LinkInfo,
    relayed: Option<Relayed>,
    /// The listener's count of links handed out ([`limits::MAX_LINKS`]), released with the link.
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    /// What the peer said in the selection (module doc); empty when it said nothing.
    peer_note: Vec<u8>,
}

/// What a relayed link carries besides the connection.
struct Relayed {
    /// Whatever its path needs (the relay, the probing for a direct path), dropped with it.
    _keeper: Box<dyn Send + Sync>,
    changes: tokio::sync::watch::Receiver<Option<PathChange>>,
    /// Set once the link is the one in use: only then may its path move (before, another link
    /// to the same peer may be using the direct path it would take over).
    selected: tokio::sync::watch::Sender<bool>,
}

impl Link {
    /// Counts this link against `slot` until it is dropped or closed.
    fn hold(&mut self, slot: tokio::sync::OwnedSemaphorePermit) {
        self.held = Some(slot);
    }

    /// Listener: the driver took the link; its flow-control window opens from
    /// [`limits::UNTAKEN_WINDOW`] to [`limits::CONNECTION_WINDOW`].
    fn widen(&self) {
        match &self.inner {
            Inner::Tcp(l) => l.widen(),
            Inner::Quic(l) => l.widen(),
        }
    }

    pub fn info(&self) -> &LinkInfo {
        &self.info
    }

    /// The note the peer sent with the selection (empty when it sent none).
    pub fn peer_note(&self) -> &[u8] {
        &self.peer_note
    }

    /// Keeps the note the peer sent with the selection ([`Verified::select`]'s answer).
    pub fn set_peer_note(&mut self, note: Vec<u8>) {
        self.peer_note = note;
    }

    /// Makes this QUIC link a relayed one: shown with the peer at `remote`, keeping `keeper`
    /// for as long as it lives, its moves to another path reported on `changes`; `selected`
    /// is set once the link is the one in use ([`Link::mark_selected`]).
    pub fn into_relayed(
        mut self,
        remote: SocketAddr,
        keeper: Box<dyn Send + Sync>,
        changes: tokio::sync::watch::Receiver<Option<PathChange>>,
        selected: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        self.info.path = Path::Relayed;
        self.info.remote = remote;
        if let Inner::Quic(quic) = &mut self.inner {
            // The kit's endpoint goes with the link: let the close get out first.
            quic.owns_endpoint = true;
        }
        self.relayed = Some(Relayed {
            _keeper: keeper,
            changes,
            selected,
        });
        self
    }

    /// Says this link is the one in use (the connector selected it, the listener took it).
    pub fn mark_selected(&self) {
        if let Some(relayed) = &self.relayed {
            relayed.selected.send_replace(true);
        }
    }

    /// A relayed link's moves to another path (`None` for a link that is not relayed).
    pub fn path_changes(&self) -> Option<tokio::sync::watch::Receiver<Option<PathChange>>> {
        self.relayed.as_ref().map(|r| r.changes.clone())
    }

    /// The QUIC connection under the link, if it is one.
    pub(crate) fn quic_connection(&self) -> Option<quinn::Connection> {
        match &self.inner {
            Inner::Quic(quic) => Some(quic.connection.clone()),
            Inner::Tcp(_) => None,
        }
    }

    /// Opens a new bidirectional stream (connector side).
    pub async fn open(&self) -> Result<Stream, LinkError> {
        match &self.inner {
            Inner::Tcp(l) => l.open().await,
            Inner::Quic(l) => l.open().await,
        }
    }

    /// The next stream the peer opened; `None` once the peer closed the link gracefully.
    pub async fn accept(&self) -> Result<Option<Stream>, LinkError> {
        match &self.inner {
            Inner::Tcp(l) => l.accept().await,
            Inner::Quic(l) => l.accept().await,
        }
    }

    /// Resolves when the link is gone, with the reason.
    pub async fn closed(&self) -> LinkError {
        match &self.inner {
            Inner::Tcp(l) => l.closed().await,
            Inner::Quic(l) => l.closed().await,
        }
    }

    /// Closes gracefully: what was sent is delivered, then the peer learns the link is done.
    /// Bounded by [`CLOSE_TIMEOUT`].
    pub async fn close(self) {
        self.close_with(CloseReason::Done).await;
    }

    /// Closes and tells the peer why. [`CloseReason::Done`] is [`Link::close`];
    /// [`CloseReason::Shutdown`] and [`CloseReason::Busy`] abandon whatever is still in flight
    /// (the peer's streams fail with the reason) and are bounded by [`SHUTDOWN_CLOSE_TIMEOUT`].
    pub async fn close_with(self, reason: CloseReason) {
        let _relayed = self.relayed;
        let done = async {
            match self.inner {
                Inner::Tcp(l) => l.close(reason).await,
                Inner::Quic(l) => l.close(reason).await,
            }
        };
        if tokio::time::timeout(reason.bound(), done).await.is_err() {
            tracing::debug!(?reason, "link close timed out");
        }
    }

    /// Connector: proves the link end to end with a round trip on a control stream.
    pub async fn verify(&self) -> Result<Verified, LinkError> {
        let round_trip = async {
            let mut control = self.open().await?;
            let nonce: [u8; 16] = rand_nonce();
            let mut hello = HELLO_MAGIC.to_vec();
            hello.extend_from_slice(&nonce);
            control.send.write_all(&hello).await?;
            control.send.flush().await?;
            let mut echo = [0u8; 16];
            control.recv.read_exact(&mut echo).await?;
            if echo != nonce {
                return Err(LinkError::Protocol("verification echo does not match"));
            }
            Ok(Verified { control })
        };
        tokio::time::timeout(VERIFY_TIMEOUT, round_trip)
            .await
            .map_err(|_| LinkError::Timeout("link verification"))?
    }

    /// Listener: answers the connector's verification, then waits until this link is selected.
    /// An error means the connector chose another link or went away. The connector waits for
    /// [`Selected::confirm`] before it opens a stream, so a link nobody takes holds no data.
    pub async fn answer(&self) -> Result<Selected, LinkError> {
        let answer = async {
            let mut control = self
                .accept()
                .await?
                .ok_or(LinkError::Protocol("link closed before hello"))?;
            let mut hello = [0u8; 24];
            control.recv.read_exact(&mut hello).await?;
            if &hello[..8] != HELLO_MAGIC {
                return Err(LinkError::Protocol("bad hello"));
            }
            control.send.write_all(&hello[8..]).await?;
            control.send.flush().await?;
            // The select word and the connector's note are the whole of its side: read them to
            // their end before ending ours, so neither side drops a stream the other is still
            // closing (h2 would reset it, and the connector would see its selection fail after
            // we took the link).
            let mut word = Vec::new();
            (&mut control.recv)
                .take((SELECT_WORD.len() + MAX_NOTE) as u64 + 1)
                .read_to_end(&mut word)
                .await?;
            let Some(note) = word.strip_prefix(SELECT_WORD) else {
                return Err(LinkError::Protocol("bad select word"));
            };
            if note.len() > MAX_NOTE {
                return Err(LinkError::Protocol("selection note too long"));
            }
            Ok(Selected {
                control,
                note: note.to_vec(),
            })
        };
        tokio::time::timeout(SELECT_TIMEOUT, answer)
            .await
            .map_err(|_| LinkError::Timeout("link selection"))?
    }
}

/// Listener: a link the connector selected; [`Selected::confirm`] tells it the link is taken.
pub struct Selected {
    control: Stream,
    /// The connector's selection note.
    note: Vec<u8>,
}

impl Selected {
    /// The connector's selection note, taken out (empty when it sent none).
    pub fn take_note(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.note)
    }

    /// Sends our `note` (nothing when empty; at most [`MAX_NOTE`] bytes) and ends our side of
    /// the control stream: the connector's selection is acknowledged and it opens its streams.
    pub async fn confirm(mut self, note: &[u8]) -> Result<(), LinkError> {
        if note.len() > MAX_NOTE {
            return Err(LinkError::Protocol("selection note too long"));
        }
        if !note.is_empty() {
            self.control.send.write_all(note).await?;
        }
        self.control.send.finish().await?;
        Ok(())
    }

    /// Turns the selection down for `reason`: the connector's wait for the confirmation fails
    /// with it. Close the link with the same reason next.
    pub fn refuse(mut self, reason: CloseReason) {
        self.control.send.reset_with(reason);
        self.control.recv.stop_with(reason);
    }
}

/// A link that passed verification; [`Verified::select`] tells the listener it is the one.
pub struct Verified {
    control: Stream,
}

impl Verified {
    /// Tells the listener this link is the one, with our `note` (nothing when empty; at most
    /// [`MAX_NOTE`] bytes), and waits for its acknowledgement (the listener ends its side of
    /// the control stream), so data streams are never opened on a link the listener has not
    /// taken, and the control stream is not torn down under the select word. Returns the
    /// listener's note (empty when it sent none).
    pub async fn select(mut self, note: &[u8]) -> Result<Vec<u8>, LinkError> {
        if note.len() > MAX_NOTE {
            return Err(LinkError::Protocol("selection note too long"));
        }
        let exchange = async {
            let mut word = SELECT_WORD.to_vec();
            word.extend_from_slice(note);
            self.control.send.write_all(&word).await?;
            self.control.send.finish().await?;
            // The listener's side ends after its note: one byte past the longest note is
            // enough to know it did not, and a listener that keeps sending is not read into
            // memory.
            let mut reply = Vec::new();
            (&mut self.control.recv)
                .take(MAX_NOTE as u64 + 1)
                .read_to_end(&mut reply)
                .await?;
            if reply.len() <= MAX_NOTE {
                Ok(reply)
            } else {
                Err(LinkError::Protocol(
                    "unexpected bytes after the verification echo",
                ))
            }
        };
        tokio::time::timeout(VERIFY_TIMEOUT, exchange)
            .await
            .map_err(|_| LinkError::Timeout("link selection"))?
    }
}

fn rand_nonce() -> [u8; 16] {
    use rand_core::RngCore;
    let mut nonce = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// One direction-pair of a link: bytes written to `send` arrive at the peer's `recv`.
pub struct Stream {
    pub send: SendStream,
    pub recv: RecvStream,
}

/// The sending half of a stream.
pub struct SendStream(SendInner);

enum SendInner {
    Tcp(tls::H2Send),
    Quic(quinn::SendStream),
}

impl SendStream {
    /// Ends the stream: the peer reads EOF after every byte written. On QUIC this waits (bounded)
    /// until the peer acknowledged all data, so a process may exit right after.
    pub async fn finish(&mut self) -> io::Result<()> {
        self.shutdown().await?;
        if let SendInner::Quic(s) = &mut self.0 {
            match tokio::time::timeout(CLOSE_TIMEOUT, s.stopped()).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(code))) => match CloseReason::from_stream_code(code.into_inner()) {
                    // It stopped reading before it had everything: this transfer is cut short.
                    Some(reason) => return Err(peer_closed(reason.text())),
                    None => tracing::debug!(%code, "peer stopped the stream after finish"),
                },
                Ok(Err(quinn::StoppedError::ConnectionLost(e))) => {
                    return Err(match quic::closed_by_peer(&e) {
                        Some(reason) => peer_closed(reason),
                        None => io::Error::new(io::ErrorKind::ConnectionAborted, e),
                    })
                }
                Ok(Err(e)) => return Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
                Err(_) => tracing::debug!("peer did not acknowledge the stream end in time"),
            }
        }
        Ok(())
    }

    /// Resolves once the peer will take no more of this stream (it stopped reading or reset
    /// it, or the link is gone), with the error to report. Lets a sender that waits on its own
    /// input notice a peer that went away.
    pub async fn abandoned(&mut self) -> io::Error {
        match &mut self.0 {
            SendInner::Tcp(s) => s.abandoned().await,
            SendInner::Quic(s) => match s.stopped().await {
                Ok(Some(code)) => match CloseReason::from_stream_code(code.into_inner()) {
                    Some(reason) => peer_closed(reason.text()),
                    None => io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("the peer stopped reading (code {code})"),
                    ),
                },
                // Finished and acknowledged: never while there is still something to send.
                Ok(None) => std::future::pending().await,
                Err(quinn::StoppedError::ConnectionLost(e)) => match quic::closed_by_peer(&e) {
                    Some(reason) => peer_closed(reason),
                    None => io::Error::new(io::ErrorKind::NotConnected, e),
                },
                Err(e) => io::Error::new(io::ErrorKind::ConnectionAborted, e),
            },
        }
    }

    /// Abandons the stream: the peer sees an error, never a clean EOF.
    pub fn reset(&mut self) {
        match &mut self.0 {
            SendInner::Tcp(s) => s.reset(h2::Reason::CANCEL),
            SendInner::Quic(s) => {
                let _ = s.reset(quinn::VarInt::from_u32(1));
            }
        }
    }

    /// Abandons the stream because this side is shutting down: the peer's reads fail with
    /// "the peer closed the link: shutting down" rather than a bare reset.
    pub fn cancel(&mut self) {
        self.reset_with(CloseReason::Shutdown);
    }

    /// Abandons the stream for `reason`, which the peer's reads fail with.
    fn reset_with(&mut self, reason: CloseReason) {
        let code = reason.code();
        match &mut self.0 {
            SendInner::Tcp(s) => s.reset(h2::Reason::from(code)),
            SendInner::Quic(s) => {
                let _ = s.reset(quinn::VarInt::from_u32(code));
            }
        }
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            SendInner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            SendInner::Quic(s) => Pin::new(s)
                .poll_write(cx, buf)
                .map_err(|e| quic::stream_error(e.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            SendInner::Tcp(s) => Pin::new(s).poll_flush(cx),
            SendInner::Quic(s) => Pin::new(s).poll_flush(cx).map_err(quic::stream_error),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            SendInner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            SendInner::Quic(s) => Pin::new(s).poll_shutdown(cx).map_err(quic::stream_error),
        }
    }
}

/// The receiving half of a stream. A clean EOF means the peer finished the stream; a lost link
/// or a reset stream is an error, never an EOF.
pub struct RecvStream(RecvInner);

enum RecvInner {
    Tcp(tls::H2Recv),
    Quic(quinn::RecvStream),
}

impl RecvStream {
    /// Tells the peer we will read no more.
    pub fn stop(&mut self) {
        match &mut self.0 {
            RecvInner::Tcp(r) => r.stop(),
            RecvInner::Quic(r) => {
                let _ = r.stop(quinn::VarInt::from_u32(0));
            }
        }
    }

    /// Stops reading because this side is shutting down: the peer's writes fail with the reason.
    pub fn cancel(&mut self) {
        self.stop_with(CloseReason::Shutdown);
    }

    /// Stops reading for `reason`, which the peer's writes fail with.
    fn stop_with(&mut self, reason: CloseReason) {
        match &mut self.0 {
            // h2 has no stop of its own: the send half's reset ends both directions.
            RecvInner::Tcp(r) => r.stop(),
            RecvInner::Quic(r) => {
                let _ = r.stop(quinn::VarInt::from_u32(reason.code()));
            }
        }
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            RecvInner::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            RecvInner::Quic(r) => Pin::new(r).poll_read(cx, buf).map_err(quic::stream_error),
        }
    }
}
