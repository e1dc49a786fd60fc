//! The stdio/file side of `listen` and `connect`: where our bytes come from (stdin, `--send
//! FILE`, or nothing with `--recv` alone) and where the peer's go (stdout or `--recv FILE`,
//! written to `FILE.part` and renamed only once complete), with a progress bar on a TTY. A
//! transfer stopped by a signal keeps its `FILE.part` and says it was interrupted.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::Interrupted;
use crate::link::Stream;
use crate::report::Reporter;
use crate::splice::{self, SpliceError, Totals};

/// What a transfer reads and writes locally.
#[derive(Clone, Debug)]
pub struct Ends {
    pub send: Option<PathBuf>,
    pub recv: Option<PathBuf>,
}

impl Ends {
    /// Fails early, before any network work, on a file that cannot be read or written.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.send {
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        }
        if let Some(path) = &self.recv {
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
        }
        Ok(())
    }
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
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

/// Runs one transfer over `stream` and reports it; `stop` cancelled ends it as interrupted.
pub async fn run(
    stream: Stream,
    ends: &Ends,
    reporter: &Reporter,
    peer: &str,
    stop: &CancellationToken,
) -> anyhow::Result<Totals> {
    let (input, len): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) =
        match (&ends.send, &ends.recv) {
            (Some(path), _) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let len = file.metadata().ok().map(|m| m.len());
                (Box::new(splice::Inline(file)), len)
            }
            // Receiving into a file: there is nothing to send, and stdin is left alone.
            (None, Some(_)) => (Box::new(splice::nothing()), None),
            (None, None) => (stdin(), None),
        };
    let output: Box<dyn AsyncWrite + Unpin + Send> = match &ends.recv {
        Some(path) => Box::new(splice::Inline(
            std::fs::File::create(part_path(path))
                .with_context(|| format!("cannot write {}", part_path(path).display()))?,
        )),
        None => stdout(),
    };
    let progress = progress_bar(len, reporter, ends);
    let result = splice::splice(stream, input, output, &progress, stop).await;
    progress.finish_and_clear();
    match (result, &ends.recv) {
        // Never renamed and never deleted: the bytes so far stay in FILE.part.
        (Err(SpliceError::Stopped { sent, received }), recv) => Err(Interrupted {
            totals: Some(Totals { sent, received }),
            kept: recv.as_deref().map(part_path),
        }
        .into()),
        (Ok(totals), recv) => {
            if let Some(path) = recv {
                tokio::fs::rename(part_path(path), path)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot move the received file into place at {}",
                            path.display()
                        )
                    })?;
            }
            reporter.done(peer, totals);
            Ok(totals)
        }
        (Err(e), Some(path)) => Err(anyhow::Error::new(e).context(format!(
            "partial data kept in {}",
            part_path(path).display()
        ))),
        (Err(e), None) => Err(e.into()),
    }
}
