//! The stdio/file side of `listen` and `connect`: where our bytes come from (stdin, `--send
//! FILE`, or nothing with `--recv` alone) and where the peer's go (stdout or `--recv FILE`,
//! written to `FILE.part` and renamed only once complete), with a progress bar on a TTY. A
//! transfer stopped by a signal keeps its `FILE.part` and says it was interrupted.
//!
//! `FILE.part` is always a file this transfer created: it is opened create-new and never
//! through a symlink, so a link planted at that name (in a shared directory, say) cannot make
//! us write or truncate something else. One left by an earlier run is refused, naming it.

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
            let part = part_path(path);
            // symlink_metadata: a dangling link is there too.
            if std::fs::symlink_metadata(&part).is_ok() {
                return Err(part_exists(&part));
            }
        }
        Ok(())
    }
}

fn part_exists(part: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} already exists (left by an earlier transfer?): move it away or delete it first",
        part.display()
    )
}

/// Creates `part` for writing: a new file (mode 0666 less the umask, like any created file),
/// never an existing one and never through a symlink.
fn create_part(part: &Path) -> anyhow::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::open(part, flags, Mode::from_raw_mode(0o666)) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        Err(rustix::io::Errno::EXIST) => Err(part_exists(part)),
        Err(e) => {
            Err(std::io::Error::from(e)).with_context(|| format!("cannot write {}", part.display()))
        }
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
        Some(path) => Box::new(splice::Inline(create_part(&part_path(path))?)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_is_neither_followed_nor_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("precious");
        std::fs::write(&victim, b"keep me").unwrap();
        let target = dir.path().join("received.bin");
        let part = part_path(&target);
        std::os::unix::fs::symlink(&victim, &part).unwrap();
        let ends = Ends {
            send: None,
            recv: Some(target),
        };
        let refused = ends.check().unwrap_err().to_string();
        assert!(refused.contains(&part.display().to_string()), "{refused}");
        // Even if the link appears after the check, the open does not go through it.
        let refused = create_part(&part).unwrap_err().to_string();
        assert!(refused.contains("already exists"), "{refused}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        // A dangling link is no way through either.
        std::fs::remove_file(&victim).unwrap();
        assert!(create_part(&part).is_err());
        assert!(!victim.exists());
    }

    #[test]
    fn a_part_left_by_an_earlier_run_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("received.bin");
        let part = part_path(&target);
        std::fs::write(&part, b"half of it").unwrap();
        let ends = Ends {
            send: None,
            recv: Some(target),
        };
        assert_eq!(
            ends.check().unwrap_err().to_string(),
            format!(
                "{} already exists (left by an earlier transfer?): move it away or delete it first",
                part.display()
            )
        );
        assert!(create_part(&part).is_err());
        assert_eq!(std::fs::read(&part).unwrap(), b"half of it");
        // Once it is gone, the transfer creates its own.
        std::fs::remove_file(&part).unwrap();
        create_part(&part).unwrap();
        assert_eq!(std::fs::read(&part).unwrap(), b"");
    }
}
