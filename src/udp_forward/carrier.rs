//! How datagrams cross one link: the session stream's hello and acknowledgement, then either
//! QUIC datagrams ([`Mode::Datagrams`]) or frames on the session stream ([`Mode::Stream`],
//! written and read by two tasks of the [`Carrier`]). Sending never waits: an [`Outlet`] says
//! at once whether a datagram went, was too large for the link, or found the queue full.

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::codec::{self, Mode, ACK, HELLO_LEN};
use super::UdpError;
use crate::link::limits::UDP_QUEUE_BYTES;
use crate::link::{Link, LinkError, RecvStream, SendStream, Stream};
use crate::timing::{CLOSE_TIMEOUT, VERIFY_TIMEOUT};

/// Frames read from the session stream and not yet taken by the session: the reader waits
/// beyond this, and the stream's flow control holds the peer back.
const INBOUND_FRAMES: usize = 64;
/// Frames written to the session stream in one write.
const BATCH: usize = 64;

/// What became of a datagram handed to an [`Outlet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Sent,
    /// Larger than the link carries now: at most `max` payload bytes fit.
    TooLarge {
        max: usize,
    },
    /// The link's queue is full: dropped.
    Full,
    /// The session is over.
    Closed,
}

/// What a [`Carrier`] received.
#[derive(Debug)]
pub enum Received {
    Datagram(u64, Bytes),
    /// A datagram with no complete header: dropped.
    Malformed,
    Ended(Ending),
}

/// Why the session ended.
#[derive(Debug)]
pub enum Ending {
    /// The peer closed the link or finished the session, saying this.
    PeerClosed(String),
    /// The link failed.
    Lost(String),
}

impl Ending {
    pub fn describe(&self) -> &str {
        match self {
            Ending::PeerClosed(why) | Ending::Lost(why) => why,
        }
    }
}

type Queued = (Bytes, OwnedSemaphorePermit);

/// The sending half, shared by everyone who sends on the link.
#[derive(Clone)]
pub enum Outlet {
    Quic(quinn::Connection),
    Stream {
        queue: mpsc::UnboundedSender<Queued>,
        /// Bytes that may wait in `queue` ([`UDP_QUEUE_BYTES`]).
        budget: Arc<Semaphore>,
    },
}

impl Outlet {
    /// Sends `payload` as a datagram of flow `flow`, or says why not.
    pub fn send(&self, flow: u64, payload: &[u8]) -> Sent {
        let header = codec::varint_len(flow);
        match self {
            Outlet::Quic(connection) => {
                let Some(max) = connection.max_datagram_size() else {
                    return Sent::Closed;
                };
                if header + payload.len() > max {
                    return Sent::TooLarge {
                        max: max.saturating_sub(header),
                    };
                }
                let datagram = codec::datagram(flow, payload);
                // quinn would make room by dropping older datagrams unseen: count it here.
                if connection.datagram_send_buffer_space() < datagram.len() {
                    return Sent::Full;
                }
                match connection.send_datagram(datagram) {
                    Ok(()) => Sent::Sent,
                    Err(quinn::SendDatagramError::TooLarge) => Sent::TooLarge {
                        max: connection
                            .max_datagram_size()
                            .unwrap_or(0)
                            .saturating_sub(header),
                    },
                    Err(_) => Sent::Closed,
                }
            }
            Outlet::Stream { queue, budget } => {
                let Some(frame) = codec::frame(flow, payload) else {
                    return Sent::TooLarge {
                        max: codec::MAX_FRAME - header,
                    };
                };
                let Ok(held) = budget.clone().try_acquire_many_owned(frame.len() as u32) else {
                    return Sent::Full;
                };
                match queue.send((frame, held)) {
                    Ok(()) => Sent::Sent,
                    Err(_) => Sent::Closed,
                }
            }
        }
    }
}

enum Inlet {
    Quic(quinn::Connection),
    Stream(mpsc::Receiver<Result<Bytes, Ending>>),
}

/// Datagrams to and from the peer over one link.
pub struct Carrier {
    pub outlet: Outlet,
    inlet: Inlet,
    mode: Mode,
    /// QUIC datagrams read from the link so far.
    read: u64,
    /// The session stream of a QUIC session, open while the session lasts.
    control: Option<Stream>,
    /// Stops the stream tasks, which then abandon the stream with the shutdown reason.
    stop: CancellationToken,
    tasks: Vec<AbortOnDropHandle<()>>,
}

impl Carrier {
    /// Connector: opens the session stream, says how datagrams will travel (QUIC datagrams when
    /// the link is QUIC and the peer takes them, else the stream) and waits for the peer's
    /// acknowledgement.
    pub async fn open(link: &Link) -> Result<Carrier, UdpError> {
        let quic = link
            .quic_connection()
            .filter(|c| c.max_datagram_size().is_some());
        let mode = match quic {
            Some(_) => Mode::Datagrams,
            None => Mode::Stream,
        };
        let mut stream = link.open().await?;
        let acked = async {
            stream.send.write_all(&codec::hello(mode)).await?;
            stream.send.flush().await?;
            let mut ack = [0u8; 4];
            stream.recv.read_exact(&mut ack).await?;
            Ok::<_, io::Error>(ack)
        };
        let why = match tokio::time::timeout(VERIFY_TIMEOUT, acked).await {
            Ok(Ok(ack)) if &ack == ACK => return Ok(Self::start(link, stream, mode)),
            Ok(Ok(_)) => "it answered something else".to_string(),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                "it ended the session stream".to_string()
            }
            Ok(Err(e)) => LinkError::from(e).to_string(),
            Err(_) => format!("no answer within {} s", VERIFY_TIMEOUT.as_secs()),
        };
        stream.send.reset();
        stream.recv.stop();
        Err(UdpError::NotForwarding(why))
    }

    /// Listener: reads the connector's hello on `stream` (the link's first stream), within
    /// [`VERIFY_TIMEOUT`]. Refuse with [`Carrier::refuse`], or go on with [`Carrier::accept`].
    pub async fn hello(link: &Link, stream: &mut Stream) -> Result<Mode, UdpError> {
        let mut hello = [0u8; HELLO_LEN];
        match tokio::time::timeout(VERIFY_TIMEOUT, stream.recv.read_exact(&mut hello)).await {
            Ok(Ok(_)) => {}
            _ => return Err(UdpError::NotASession),
        }
        let mode = codec::parse_hello(&hello).ok_or(UdpError::NotASession)?;
        let datagrams = link
            .quic_connection()
            .and_then(|c| c.max_datagram_size())
            .is_some();
        if mode == Mode::Datagrams && !datagrams {
            return Err(UdpError::NoDatagrams);
        }
        Ok(mode)
    }

    /// Listener: abandons a stream that is no session, or one it cannot serve.
    pub fn refuse(mut stream: Stream) {
        stream.send.reset();
        stream.recv.stop();
    }

    /// Listener: acknowledges the session on `stream` and starts carrying datagrams in `mode`.
    pub async fn accept(link: &Link, mut stream: Stream, mode: Mode) -> Result<Carrier, UdpError> {
        let acked = async {
            stream.send.write_all(ACK).await?;
            stream.send.flush().await
        };
        match tokio::time::timeout(VERIFY_TIMEOUT, acked).await {
            Ok(Ok(())) => Ok(Self::start(link, stream, mode)),
            Ok(Err(e)) => Err(UdpError::Ended(LinkError::from(e).to_string())),
            Err(_) => Err(UdpError::Ended("the session stream is stuck".into())),
        }
    }

    fn start(link: &Link, stream: Stream, mode: Mode) -> Carrier {
        let stop = CancellationToken::new();
        match (mode, link.quic_connection()) {
            (Mode::Datagrams, Some(connection)) => Carrier {
                outlet: Outlet::Quic(connection.clone()),
                inlet: Inlet::Quic(connection),
                mode,
                read: 0,
                control: Some(stream),
                stop,
                tasks: Vec::new(),
            },
            // A TCP link, or a QUIC link whose peer takes no datagrams.
            _ => {
                let Stream { send, recv } = stream;
                let (queue, pending) = mpsc::unbounded_channel();
                let (inbound, inlet) = mpsc::channel(INBOUND_FRAMES);
                let writer = tokio::spawn(write_frames(send, pending, stop.clone()));
                let reader = tokio::spawn(read_frames(recv, inbound, stop.clone()));
                Carrier {
                    outlet: Outlet::Stream {
                        queue,
                        budget: Arc::new(Semaphore::new(UDP_QUEUE_BYTES)),
                    },
                    inlet: Inlet::Stream(inlet),
                    mode: Mode::Stream,
                    read: 0,
                    control: None,
                    stop,
                    tasks: vec![
                        AbortOnDropHandle::new(writer),
                        AbortOnDropHandle::new(reader),
                    ],
                }
            }
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The next datagram from the peer (cancel-safe: nothing is lost when another branch of a
    /// `select!` wins).
    pub async fn recv(&mut self) -> Received {
        let got = match &mut self.inlet {
            Inlet::Quic(connection) => match connection.read_datagram().await {
                Ok(datagram) => {
                    self.read += 1;
                    Ok(datagram)
                }
                Err(e) => Err(match crate::link::quic::closed_by_peer(&e) {
                    Some(why) => Ending::PeerClosed(why),
                    None => Ending::Lost(e.to_string()),
                }),
            },
            Inlet::Stream(frames) => match frames.recv().await {
                Some(got) => got,
                None => Err(Ending::Lost("the session stream's reader stopped".into())),
            },
        };
        match got {
            Ok(datagram) => match codec::parse_datagram(datagram) {
                Some((flow, payload)) => Received::Datagram(flow, payload),
                None => Received::Malformed,
            },
            Err(ending) => Received::Ended(ending),
        }
    }

    /// Datagrams that arrived over the link but were never read: quinn drops the oldest when
    /// its receive buffer ([`crate::link::limits::DATAGRAM_BUFFER`]) is full, and counts
    /// only what arrived. Ask at the end of the session (before it, some are merely unread).
    pub fn unread(&self) -> u64 {
        match &self.inlet {
            Inlet::Quic(connection) => connection
                .stats()
                .frame_rx
                .datagram
                .saturating_sub(self.read),
            // The stream's reader waits instead of dropping.
            Inlet::Stream(_) => 0,
        }
    }

    /// This side is shutting down: the session stream is abandoned with the shutdown reason,
    /// which the peer sees (close the link with it next).
    pub async fn shutdown(&mut self) {
        if let Some(control) = &mut self.control {
            control.send.cancel();
            control.recv.cancel();
        }
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, task).await;
        }
    }
}

/// Writes queued frames to the session stream, many per write, until the queue closes or the
/// stream fails; on `stop`, abandons the stream with the shutdown reason.
async fn write_frames(
    mut send: SendStream,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    stop: CancellationToken,
) {
    let stopped = tokio::select! {
        () = drain_queue(&mut send, &mut queue) => false,
        () = stop.cancelled() => true,
    };
    if stopped {
        send.cancel();
    }
}

async fn drain_queue(send: &mut SendStream, queue: &mut mpsc::UnboundedReceiver<Queued>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut buf = BytesMut::new();
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        for (frame, _) in &batch {
            buf.extend_from_slice(frame);
        }
        let written = send.write_all(&buf).await;
        // The budget is given back once h2 has the bytes.
        batch.clear();
        buf.clear();
        if let Err(e) = written {
            tracing::debug!("udp session stream: write failed: {e}");
            return;
        }
    }
}

/// Reads frames from the session stream into `frames` until it ends, then says why; on
/// `stop`, abandons the stream with the shutdown reason.
async fn read_frames(
    mut recv: RecvStream,
    frames: mpsc::Sender<Result<Bytes, Ending>>,
    stop: CancellationToken,
) {
    let ending = tokio::select! {
        ending = pump_frames(&mut recv, &frames) => ending,
        () = stop.cancelled() => {
            recv.cancel();
            return;
        }
    };
    if let Some(ending) = ending {
        let _ = frames.send(Err(ending)).await;
    }
}

/// Frames into `frames` until the stream ends (why) or nobody takes them any more (`None`).
async fn pump_frames(
    recv: &mut RecvStream,
    frames: &mpsc::Sender<Result<Bytes, Ending>>,
) -> Option<Ending> {
    loop {
        match read_frame(recv).await {
            Ok(Some(body)) => frames.send(Ok(body)).await.ok()?,
            Ok(None) => return Some(Ending::PeerClosed("it ended the session".into())),
            Err(e) => {
                return Some(match LinkError::from(e) {
                    LinkError::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref()) {
                        Some(LinkError::PeerClosed(why)) => Ending::PeerClosed(why.clone()),
                        _ => Ending::Lost(e.to_string()),
                    },
                    other => Ending::Lost(other.to_string()),
                })
            }
        }
    }
}

/// One frame's body; `None` when the stream ends cleanly between frames.
async fn read_frame(recv: &mut RecvStream) -> io::Result<Option<Bytes>> {
    let mut len = [0u8; 2];
    if recv.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    recv.read_exact(&mut len[1..]).await?;
    let mut body = BytesMut::zeroed(usize::from(u16::from_be_bytes(len)));
    recv.read_exact(&mut body).await?;
    Ok(Some(body.freeze()))
}
