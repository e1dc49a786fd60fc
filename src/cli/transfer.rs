//! The stdio/file side of `listen` and `connect`: where our bytes come from (stdin, `--send
//! FILE`, or nothing with `--recv` alone) and where the peer's go (stdout or `--recv FILE`,
//! written to `FILE.part` and renamed only once complete), with a progress bar on a TTY. A
//! transfer stopped by a signal keeps its `FILE.part` and says it was interrupted.
//!
//! A `FILE.part` left by an earlier run is resumed ([`crate::resume`]): its sound prefix is
//! offered in the link's selection note, a `--send FILE` peer answers ahead of its data, and
//! the receiver continues after the bytes it has, or starts over and says why (the sender's
//! file differs or is shorter, the peer sends stdin). A `.part` its hash record does not
//! describe is hashed again first, saying so. `FILE.part` and its sidecar are never opened
//! through a symlink and never truncated before they are known to be regular files of ours
//! ([`crate::resume::part`]). The progress bar starts at the resumed offset.

use std::io::{IsTerminal, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::Interrupted;
use crate::link::{RecvStream, SendStream, Stream};
use crate::report::{Reporter, Resume};
use crate::resume::part::{self, part_path, Part};
use crate::resume::{self, Note, Offer, ResumeError, Verdict};
use crate::splice::{self, Progress, SpliceError, Totals};
use crate::timing::HANDSHAKE_TIMEOUT;

/// What a transfer reads and writes locally.
#[derive(Clone, Debug)]
pub struct Ends {
    pub send: Option<PathBuf>,
    pub recv: Option<PathBuf>,
}

impl Ends {
    /// Fails early, before any network work, on a file that cannot be read or written, and
    /// looks at what an earlier run left in `FILE.part` (changing nothing yet), hashing it
    /// again if its record does not describe it.
    pub async fn prepare(self) -> anyhow::Result<Transfer> {
        let send_len = match &self.send {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let meta = file
                    .metadata()
                    .with_context(|| format!("cannot read {}", path.display()))?;
                // Only a regular file has a length to resume in; a FIFO or a device is a stream.
                meta.is_file().then_some(meta.len())
            }
            None => None,
        };
        let part = match &self.recv {
            Some(path) => {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                anyhow::ensure!(
                    dir.is_dir(),
                    "cannot write {}: no directory {}",
                    path.display(),
                    dir.display()
                );
                let mut part = Part::open(path)?;
                if let Some((why, len)) = part.needs_rehash() {
                    tracing::warn!(
                        "{} {}: hashing its {len} bytes again before offering them",
                        part_path(path).display(),
                        why.describe()
                    );
                    // Off the runtime, so a signal still stops us; given up, it stops too.
                    let cancelled = Arc::new(AtomicBool::new(false));
                    let _stop = SetOnDrop(cancelled.clone());
                    part =
                        tokio::task::spawn_blocking(move || part.rehash(&cancelled).map(|()| part))
                            .await
                            .context("hashing the partial file failed")??;
                }
                Some(part)
            }
            None => None,
        };
        let note = Note {
            sends_file: send_len,
            offer: part.as_ref().and_then(Part::offer),
        };
        Ok(Transfer {
            ends: self,
            note,
            part,
        })
    }
}

/// A transfer's ends, prepared: what its selection note says, and the `.part` it resumes.
pub struct Transfer {
    ends: Ends,
    /// What this end tells the peer in the selection ([`Transfer::note`]).
    note: Note,
    /// What an earlier run left for `--recv FILE`; taken by the transfer that writes it.
    part: Option<Part>,
}

impl Transfer {
    /// The selection note: empty unless this end sends a file or offers a `.part`.
    pub fn note(&self) -> Vec<u8> {
        self.note.encode()
    }

    /// How long a listener waits for the connector's stream: longer when the connector hashes
    /// our offer before it writes anything (a QUIC stream appears only with its first bytes).
    pub fn stream_timeout(&self, peer_note: &[u8]) -> Duration {
        let sends_file = Note::decode(peer_note).is_ok_and(|n| n.sends_file.is_some());
        match self.note.offer {
            Some(offer) if sends_file => HANDSHAKE_TIMEOUT + resume::verdict_timeout(offer.len),
            _ => HANDSHAKE_TIMEOUT,
        }
    }
}

fn progress_bar(len: Option<u64>, reporter: &Reporter, ends: &Ends) -> ProgressBar {
    let on_tty = std::io::stderr().is_terminal() && !reporter.quiet && !reporter.json;
    let moving_data =
        ends.send.is_some() || ends.recv.is_some() || !std::io::stdout().is_terminal();
    if !on_tty || !moving_data {
        return ProgressBar::hidden();
    }
    match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

/// How a standard stream is best driven: a pipe by the reactor (no thread hand-off per call,
/// which matters at hundreds of MB/s); a regular file or /dev/null in place (they never wait
/// for anyone, so a hand-off would cost more than the call); anything else (a terminal, a
/// socket, another device) through tokio's blocking stdio.
enum Kind {
    Pipe,
    Inline,
    Other,
}

fn kind(fd: std::os::fd::BorrowedFd<'_>) -> Kind {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = fd
        .try_clone_to_owned()
        .and_then(|owned| std::fs::File::from(owned).metadata())
    else {
        return Kind::Other;
    };
    let file_type = meta.file_type();
    // /dev/null is character device 1:3.
    let dev_null = file_type.is_char_device() && meta.rdev() == makedev(1, 3);
    if file_type.is_fifo() {
        Kind::Pipe
    } else if file_type.is_file() || dev_null {
        Kind::Inline
    } else {
        Kind::Other
    }
}

/// Linux's `makedev` for small major and minor numbers.
fn makedev(major: u64, minor: u64) -> u64 {
    (major << 8) | minor
}

fn owned_file(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::fs::File> {
    fd.try_clone_to_owned().ok().map(std::fs::File::from)
}

fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    match kind(fd) {
        Kind::Pipe => owned_file(fd)
            .and_then(|f| tokio::net::unix::pipe::Receiver::from_file(f).ok())
            .map_or_else(|| Box::new(tokio::io::stdin()) as _, |p| Box::new(p) as _),
        Kind::Inline => owned_file(fd).map_or_else(
            || Box::new(tokio::io::stdin()) as _,
            |f| Box::new(splice::Inline(f)) as _,
        ),
        Kind::Other => Box::new(tokio::io::stdin()),
    }
}

fn stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let fd = stdout.as_fd();
    match kind(fd) {
        Kind::Pipe => owned_file(fd)
            .and_then(|f| tokio::net::unix::pipe::Sender::from_file(f).ok())
            .map_or_else(|| Box::new(tokio::io::stdout()) as _, |p| Box::new(p) as _),
        Kind::Inline => owned_file(fd).map_or_else(
            || Box::new(tokio::io::stdout()) as _,
            |f| Box::new(splice::Inline(f)) as _,
        ),
        Kind::Other => Box::new(tokio::io::stdout()),
    }
}

/// Where our outbound bytes come from.
enum Input<'a> {
    Stream(Box<dyn AsyncRead + Unpin + Send>),
    /// `--send FILE`, answering the peer's offer first if it made one.
    File {
        file: std::fs::File,
        path: &'a Path,
        offer: Option<Offer>,
        resumed: &'a AtomicU64,
        reporter: &'a Reporter,
    },
}

/// Sets the flag when dropped: stops the hashing of an abandoned verdict.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn link_failed(source: std::io::Error) -> SpliceError {
    SpliceError::Interrupted {
        sent: 0,
        received: 0,
        source,
    }
}

impl splice::Source for Input<'_> {
    type Reader = Box<dyn AsyncRead + Unpin + Send>;

    async fn start(
        self,
        send: &mut SendStream,
        progress: &Progress,
    ) -> Result<Self::Reader, SpliceError> {
        let (mut file, path, offer, resumed, reporter) = match self {
            Input::Stream(reader) => return Ok(reader),
            Input::File {
                file, offer: None, ..
            } => return Ok(Box::new(splice::Inline(file))),
            Input::File {
                file,
                path,
                offer: Some(offer),
                resumed,
                reporter,
            } => (file, path, offer, resumed, reporter),
        };
        // Hashed off the runtime, which keeps the link going meanwhile; given up with this
        // future (a stop), the hashing stops at its next chunk.
        let cancelled = Arc::new(AtomicBool::new(false));
        let _stop_hashing = SetOnDrop(cancelled.clone());
        let copy = file.try_clone().map_err(SpliceError::LocalRead)?;
        let verdict = tokio::task::spawn_blocking(move || resume::judge(&copy, &offer, &cancelled))
            .await
            .map_err(|e| SpliceError::LocalRead(std::io::Error::other(e)))?
            .map_err(SpliceError::LocalRead)?;
        resume::send_verdict(send, verdict)
            .await
            .map_err(link_failed)?;
        let from = verdict.from();
        file.seek(std::io::SeekFrom::Start(from))
            .map_err(SpliceError::LocalRead)?;
        reporter.resume(&outcome("sender", path, verdict, offer.len));
        resumed.store(from, Ordering::Relaxed);
        resumed_at(progress, from);
        Ok(Box::new(splice::Inline(file)))
    }
}

/// Moves the bar to where a resumed file starts, without counting the jump as speed.
fn resumed_at(progress: &Progress, from: u64) {
    progress.inc(from);
    progress.reset_eta();
}

/// The `resume` event for `verdict` on an offer of `had` bytes.
fn outcome(side: &'static str, file: &Path, verdict: Verdict, had: u64) -> Resume {
    Resume {
        side,
        file: file.display().to_string(),
        outcome: match verdict {
            Verdict::Resume(_) => "resumed",
            _ => "restarted",
        },
        offset: verdict.from(),
        had,
        reason: verdict.reason(),
        rehashed: false,
    }
}

/// Where the peer's bytes go.
enum Output<'a> {
    Stream(Box<dyn AsyncWrite + Unpin + Send>),
    /// `--recv FILE`: resumed or started over once the peer's verdict (if one comes) is in.
    Part {
        part: Box<Part>,
        path: &'a Path,
        /// What our note offered.
        offer: Option<Offer>,
        /// Whether the peer sends a file (and so answers an offer).
        peer_sends_file: bool,
        resumed: &'a AtomicU64,
        reporter: &'a Reporter,
    },
}

impl splice::Sink for Output<'_> {
    type Writer = Box<dyn AsyncWrite + Unpin + Send>;

    async fn start(
        self,
        recv: &mut RecvStream,
        progress: &Progress,
    ) -> Result<Self::Writer, SpliceError> {
        let (part, path, offer, peer_sends_file, resumed, reporter) = match self {
            Output::Stream(writer) => return Ok(writer),
            Output::Part {
                part,
                path,
                offer,
                peer_sends_file,
                resumed,
                reporter,
            } => (part, path, offer, peer_sends_file, resumed, reporter),
        };
        let part_file = part_path(path);
        let rehashed = part.rehashed();
        let from = match offer {
            Some(offer) if peer_sends_file => {
                let wait = resume::verdict_timeout(offer.len);
                let verdict =
                    resume::read_verdict(recv, &offer, wait)
                        .await
                        .map_err(|e| match e {
                            Ok(e) => SpliceError::Start(e.to_string()),
                            Err(e) => link_failed(e),
                        })?;
                let mut event = outcome("receiver", &part_file, verdict, offer.len);
                event.rehashed = rehashed;
                reporter.resume(&event);
                verdict.from()
            }
            Some(offer) => {
                reporter.resume(&Resume {
                    side: "receiver",
                    file: part_file.display().to_string(),
                    outcome: "restarted",
                    offset: 0,
                    had: offer.len,
                    reason: Some("stream"),
                    rehashed,
                });
                0
            }
            None => 0,
        };
        let writer = part
            .start(from)
            .map_err(|e| SpliceError::Start(e.to_string()))?;
        resumed.store(from, Ordering::Relaxed);
        resumed_at(progress, from);
        Ok(Box::new(writer))
    }
}

impl Transfer {
    /// Runs one transfer over `stream` with the peer whose selection note was `peer_note`, and
    /// reports it; `stop` cancelled ends it as interrupted.
    pub async fn run(
        &mut self,
        stream: Stream,
        peer_note: &[u8],
        reporter: &Reporter,
        peer: &str,
        stop: &CancellationToken,
    ) -> anyhow::Result<Totals> {
        // What can fail before the splice fails the stream too: dropped, a QUIC stream would
        // end cleanly, as if it had carried a whole (empty) transfer.
        let early = (|| {
            let theirs = Note::decode(peer_note).map_err(|e: ResumeError| anyhow::anyhow!(e))?;
            let file = match &self.ends.send {
                Some(path) => Some(
                    std::fs::File::open(path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let part = match (&self.ends.recv, self.part.take()) {
                (Some(_), Some(part)) => Some(part),
                (Some(path), None) => Some(Part::open(path)?),
                (None, _) => None,
            };
            anyhow::Ok((theirs, file, part))
        })();
        let (theirs, file, part) = match early {
            Ok(ready) => ready,
            Err(e) => {
                let Stream { mut send, mut recv } = stream;
                send.reset();
                recv.stop();
                return Err(e);
            }
        };
        let resumed = (AtomicU64::new(0), AtomicU64::new(0));
        let ends = &self.ends;
        let input = match (&ends.send, file) {
            (Some(path), Some(file)) => {
                let offer = theirs.offer.filter(|_| self.note.sends_file.is_some());
                Input::File {
                    file,
                    path,
                    offer,
                    resumed: &resumed.0,
                    reporter,
                }
            }
            // Receiving into a file: there is nothing to send, and stdin is left alone.
            _ if ends.recv.is_some() => Input::Stream(Box::new(splice::nothing())),
            _ => {
                if theirs.offer.is_some() {
                    tracing::info!("the peer holds part of what we send, but stdin cannot be resumed: it starts over");
                }
                Input::Stream(stdin())
            }
        };
        let output = match (&ends.recv, part) {
            (Some(path), Some(part)) => Output::Part {
                part: Box::new(part),
                path,
                offer: self.note.offer,
                peer_sends_file: theirs.sends_file.is_some(),
                resumed: &resumed.1,
                reporter,
            },
            _ => Output::Stream(stdout()),
        };
        // The bar counts toward our file's size, or else the file the peer sends us.
        let len = self
            .note
            .sends_file
            .or(theirs.sends_file.filter(|_| ends.recv.is_some()));
        let progress = progress_bar(len, reporter, ends);
        let result = splice::splice_from(stream, input, output, &progress, stop).await;
        progress.finish_and_clear();
        let resumed = Totals {
            sent: resumed.0.into_inner(),
            received: resumed.1.into_inner(),
        };
        match (result, &ends.recv) {
            // Never renamed and never deleted: the bytes so far stay in FILE.part.
            (Err(SpliceError::Stopped { sent, received }), recv) => Err(Interrupted {
                totals: Some(Totals { sent, received }),
                kept: recv.as_deref().map(part_path),
            }
            .into()),
            (Ok(totals), recv) => {
                if let Some(path) = recv {
                    part::complete(path).with_context(|| {
                        format!(
                            "cannot move the received file into place at {}",
                            path.display()
                        )
                    })?;
                }
                reporter.done(peer, totals, resumed);
                Ok(totals)
            }
            (Err(e), Some(path)) => Err(anyhow::Error::new(e).context(format!(
                "partial data kept in {}",
                part_path(path).display()
            ))),
            (Err(e), None) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn receiving(target: &Path) -> Ends {
        Ends {
            send: None,
            recv: Some(target.to_owned()),
        }
    }

    #[test]
    fn a_planted_symlink_is_refused_by_name_before_any_network_work() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("precious");
        std::fs::write(&victim, b"keep me").unwrap();
        let target = dir.path().join("received.bin");
        let part = part_path(&target);
        std::os::unix::fs::symlink(&victim, &part).unwrap();
        let refused = block_on(receiving(&target).prepare())
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            refused,
            format!(
                "{} is a symbolic link: refusing to write through it; move it away or delete it first",
                part.display()
            )
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn a_part_left_by_an_earlier_run_is_offered_after_its_record_or_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("received.bin");
        let fresh = block_on(receiving(&target).prepare()).unwrap();
        assert!(fresh.note().is_empty(), "nothing to say: no note at all");
        // Once refused (issue 13); now offered, hashed from its bytes without a record.
        std::fs::write(part_path(&target), b"half of it").unwrap();
        let transfer = block_on(receiving(&target).prepare()).unwrap();
        let offer = transfer.note.offer.unwrap();
        assert_eq!(offer.len, 10);
        assert!(transfer.part.as_ref().unwrap().rehashed());
        assert_eq!(std::fs::read(part_path(&target)).unwrap(), b"half of it");

        drop(transfer);
        std::fs::remove_file(part_path(&target)).unwrap();
        let mut writer = Part::open(&target).unwrap().start(0).unwrap();
        block_on(tokio::io::AsyncWriteExt::write_all(
            &mut writer,
            b"half of it",
        ))
        .unwrap();
        drop(writer);
        let transfer = block_on(receiving(&target).prepare()).unwrap();
        assert_eq!(transfer.note.offer, Some(offer));
        assert!(
            !transfer.part.as_ref().unwrap().rehashed(),
            "taken from the record"
        );
        assert_eq!(Note::decode(&transfer.note()), Ok(transfer.note));
    }

    #[test]
    fn a_stream_sender_is_no_file_sender() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        let ends = |send: &Path| Ends {
            send: Some(send.to_owned()),
            recv: None,
        };
        assert_eq!(
            block_on(ends(&file).prepare()).unwrap().note.sends_file,
            Some(5)
        );
        assert_eq!(
            block_on(ends(Path::new("/dev/zero")).prepare())
                .unwrap()
                .note
                .sends_file,
            None
        );
    }
}
