//! Splicing: moves bytes between a local end (stdio, a file, a TCP socket) and a link stream,
//! both directions at once, with half-close: EOF on the local reader finishes our send side; the
//! peer finishing its side ends the local writer. Byte counts feed the progress bar.
//!
//! A failure on one side cancels the other, and the stream is reset, never finished, so the peer
//! sees an interrupted transfer as an error rather than as a short clean one. A cancelled
//! [`CancellationToken`] stops a splice the same way, telling the peer this side is shutting down.
//!
//! Each direction may first have a word with the peer on its half of the stream before its
//! copy starts ([`Source`], [`Sink`]: a resumed file's verdict, [`crate::resume`]); the two
//! directions still start independently, so one waiting for the peer never holds up the other.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::link::{RecvStream, SendStream, Stream};

/// Size of each direction's copy buffer.
const BUFFER: usize = 256 << 10;

/// How a splice went wrong, by side.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    /// The link failed (peer gone, stream reset): the transfer is incomplete.
    #[error("transfer interrupted after {sent} bytes sent and {received} received")]
    Interrupted {
        sent: u64,
        received: u64,
        source: io::Error,
    },
    /// Reading the local input failed.
    #[error("reading local input failed: {0}")]
    LocalRead(io::Error),
    /// Writing the local output failed; `BrokenPipe` means the reader went away (`| head`).
    #[error("writing local output failed: {0}")]
    LocalWrite(io::Error),
    /// This side was told to stop (its token was cancelled): the transfer is incomplete.
    #[error("stopped after {sent} bytes sent and {received} received")]
    Stopped { sent: u64, received: u64 },
    /// A direction could not get ready to copy (the two ends did not agree how to start).
    #[error("{0}")]
    Start(String),
}

impl SpliceError {
    /// Our local output was closed by its reader: end quietly, as `cat | head` does.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, SpliceError::LocalWrite(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Bytes moved in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
}

/// What the send side of a splice needs beyond `AsyncWrite`: ending cleanly or abandoning.
#[allow(async_fn_in_trait)]
pub trait Outbound: AsyncWrite + Unpin {
    /// The peer reads EOF after every byte written.
    async fn finish(&mut self) -> io::Result<()>;
    /// The peer sees an error.
    fn abandon(&mut self);
    /// Resolves once the peer will take no more, with the error to report.
    async fn abandoned(&mut self) -> io::Error;
}

impl Outbound for SendStream {
    async fn finish(&mut self) -> io::Result<()> {
        SendStream::finish(self).await
    }

    async fn abandoned(&mut self) -> io::Error {
        SendStream::abandoned(self).await
    }

    fn abandon(&mut self) {
        self.reset();
    }
}

/// Counts bytes as they move (drives the progress bar; a hidden bar costs an atomic add).
pub type Progress = indicatif::ProgressBar;

/// Copies `input` into `send` until EOF, then finishes `send`; counts into `total`. Reset on
/// failure.
pub async fn send_all<R, S>(
    input: &mut R,
    send: &mut S,
    progress: &Progress,
    total: &AtomicU64,
) -> Result<(), SpliceError>
where
    R: AsyncRead + Unpin,
    S: Outbound,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        // While our input has nothing, watch for a peer that went away: a sender idle on a
        // terminal or a pipe would otherwise not learn of it until its next write.
        let read = tokio::select! {
            biased;
            read = input.read(&mut buf) => read,
            gone = send.abandoned() => {
                send.abandon();
                return Err(interrupted(gone));
            }
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                send.abandon();
                return Err(SpliceError::LocalRead(e));
            }
        };
        if let Err(e) = send.write_all(&buf[..n]).await {
            send.abandon();
            return Err(interrupted(e));
        }
        total.fetch_add(n as u64, Ordering::Relaxed);
        progress.inc(n as u64);
    }
    send.finish().await.map_err(interrupted)
}

/// Copies `recv` into `output` until the peer finishes, then flushes and shuts `output` down;
/// counts into `total`.
pub async fn receive_all<R, W>(
    recv: &mut R,
    output: &mut W,
    progress: &Progress,
    total: &AtomicU64,
) -> Result<(), SpliceError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match recv.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(interrupted(e)),
        };
        output
            .write_all(&buf[..n])
            .await
            .map_err(SpliceError::LocalWrite)?;
        total.fetch_add(n as u64, Ordering::Relaxed);
        progress.inc(n as u64);
    }
    output.flush().await.map_err(SpliceError::LocalWrite)?;
    output.shutdown().await.map_err(SpliceError::LocalWrite)
}

/// Where a splice's outbound bytes come from, made ready once the stream is there: it may say
/// something on the stream first.
#[allow(async_fn_in_trait)]
pub trait Source {
    type Reader: AsyncRead + Unpin;
    async fn start(
        self,
        send: &mut SendStream,
        progress: &Progress,
    ) -> Result<Self::Reader, SpliceError>;
}

/// Where a splice's inbound bytes go, made ready once the stream is there: it may read
/// something off the stream first.
#[allow(async_fn_in_trait)]
pub trait Sink {
    type Writer: AsyncWrite + Unpin;
    async fn start(
        self,
        recv: &mut RecvStream,
        progress: &Progress,
    ) -> Result<Self::Writer, SpliceError>;
}

/// A reader or writer that is ready as it is.
pub struct Ready<T>(pub T);

impl<R: AsyncRead + Unpin> Source for Ready<R> {
    type Reader = R;
    async fn start(self, _: &mut SendStream, _: &Progress) -> Result<R, SpliceError> {
        Ok(self.0)
    }
}

impl<W: AsyncWrite + Unpin> Sink for Ready<W> {
    type Writer = W;
    async fn start(self, _: &mut RecvStream, _: &Progress) -> Result<W, SpliceError> {
        Ok(self.0)
    }
}

/// A link-side failure; the byte counts are filled in by [`splice`], which sees both directions.
fn interrupted(source: io::Error) -> SpliceError {
    SpliceError::Interrupted {
        sent: 0,
        received: 0,
        source,
    }
}

/// Both directions of `stream` against a local reader and writer, concurrently. Returns when
/// both are done, at the first failure (the other direction is then dropped), or when `stop` is
/// cancelled (the stream is then abandoned with the shutdown reason, never finished: a dropped
/// QUIC stream would end cleanly and pass a cut transfer off as complete).
pub async fn splice<R, W>(
    stream: Stream,
    input: R,
    output: W,
    progress: &Progress,
    stop: &CancellationToken,
) -> Result<Totals, SpliceError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    splice_from(stream, Ready(input), Ready(output), progress, stop).await
}

/// [`splice`] with each direction made ready on the stream first: `source` before the send
/// direction copies, `sink` before the receive direction does, each within its direction. A
/// failure or `stop` while getting ready ends the splice as one while copying does.
pub async fn splice_from<S, K>(
    stream: Stream,
    source: S,
    sink: K,
    progress: &Progress,
    stop: &CancellationToken,
) -> Result<Totals, SpliceError>
where
    S: Source,
    K: Sink,
{
    let Stream { mut send, mut recv } = stream;
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let result = tokio::select! {
        // The copy first: the token is looked at only while both directions wait.
        biased;
        copied = async {
            tokio::try_join!(
                async {
                    let mut input = source.start(&mut send, progress).await?;
                    send_all(&mut input, &mut send, progress, &sent).await
                },
                async {
                    let mut output = sink.start(&mut recv, progress).await?;
                    receive_all(&mut recv, &mut output, progress, &received).await
                }
            )
        } => copied.map(drop),
        () = stop.cancelled() => Err(SpliceError::Stopped { sent: 0, received: 0 }),
    };
    let totals = Totals {
        sent: sent.into_inner(),
        received: received.into_inner(),
    };
    match result {
        Ok(()) => Ok(totals),
        Err(SpliceError::Stopped { .. }) => {
            send.cancel();
            recv.cancel();
            Err(SpliceError::Stopped {
                sent: totals.sent,
                received: totals.received,
            })
        }
        Err(e) => {
            send.reset();
            recv.stop();
            Err(match e {
                SpliceError::Interrupted { source, .. } => SpliceError::Interrupted {
                    sent: totals.sent,
                    received: totals.received,
                    source,
                },
                other => other,
            })
        }
    }
}

/// Splices a TCP connection with a stream (port forwarding), both directions, until done or
/// `stop` is cancelled.
pub async fn splice_tcp(
    stream: Stream,
    tcp: tokio::net::TcpStream,
    stop: &CancellationToken,
) -> Result<Totals, SpliceError> {
    let _ = tcp.set_nodelay(true);
    let (read, write) = tcp.into_split();
    splice(stream, read, write, &Progress::hidden(), stop).await
}

/// A local file read or written in place, on the task that uses it: for regular files and
/// /dev/null, which never wait for anyone, a thread hand-off per call (tokio's file and stdio
/// types) costs more than the call itself.
pub struct Inline(pub std::fs::File);

impl AsyncRead for Inline {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::io::Read;
        let n = self.get_mut().0.read(buf.initialize_unfilled())?;
        buf.advance(n);
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Inline {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::io::Write;
        std::task::Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        use std::io::Write;
        std::task::Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// A receiver that never yields data: the send side of a receive-only transfer.
pub fn nothing() -> tokio::io::Empty {
    tokio::io::empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    impl Outbound for DuplexStream {
        async fn finish(&mut self) -> io::Result<()> {
            self.shutdown().await
        }
        fn abandon(&mut self) {}
        async fn abandoned(&mut self) -> io::Error {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn send_all_copies_and_finishes() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut near, mut far) = tokio::io::duplex(64 << 10);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            got
        });
        let sent = AtomicU64::new(0);
        send_all(&mut data.as_slice(), &mut near, &Progress::hidden(), &sent)
            .await
            .unwrap();
        assert_eq!(sent.into_inner(), data.len() as u64);
        assert_eq!(reader.await.unwrap(), data);
    }

    /// A stream the peer has already abandoned.
    struct Abandoned {
        reset: bool,
    }

    impl AsyncWrite for Abandoned {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl Outbound for Abandoned {
        async fn finish(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn abandon(&mut self) {
            self.reset = true;
        }
        async fn abandoned(&mut self) -> io::Error {
            io::ErrorKind::ConnectionAborted.into()
        }
    }

    /// Regression: a sender idle on its input (a terminal, a quiet pipe) did not learn that
    /// the peer had gone until it next had something to write.
    #[tokio::test]
    async fn send_all_idle_on_its_input_notices_the_peer_gone() {
        let (_writer, mut idle) = tokio::io::duplex(64);
        let mut send = Abandoned { reset: false };
        let sent = AtomicU64::new(0);
        let err = send_all(&mut idle, &mut send, &Progress::hidden(), &sent)
            .await
            .unwrap_err();
        assert!(matches!(err, SpliceError::Interrupted { .. }), "{err}");
        assert!(send.reset, "the stream is reset, never finished");
    }

    #[tokio::test]
    async fn receive_all_reports_a_broken_input_as_interrupted() {
        struct Broken(u8);
        impl AsyncRead for Broken {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if self.0 == 0 {
                    return std::task::Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                }
                self.0 -= 1;
                buf.put_slice(b"abc");
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut out = Vec::new();
        let received = AtomicU64::new(0);
        let err = receive_all(&mut Broken(2), &mut out, &Progress::hidden(), &received)
            .await
            .unwrap_err();
        assert!(matches!(err, SpliceError::Interrupted { .. }), "{err}");
        assert_eq!(received.into_inner(), 6);
        assert_eq!(out, b"abcabc");
    }
}
