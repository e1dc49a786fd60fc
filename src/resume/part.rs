//! The receiver's files: `FILE.part` (the bytes so far) and its sidecar `FILE.part.hash` (the
//! running SHA-256 of exactly those bytes, [`RunningSha256`]), so a later run can offer the
//! sender how much it has and the hash of it without reading the `.part` back.
//!
//! **Crash safety.** Bytes go to the `.part` first; only once their write returned is the
//! sidecar rewritten, in one `pwrite` of one fixed-size record (magic, state, checksum), every
//! [`RECORD_EVERY`] bytes and when the writer is flushed or dropped. A process killed at any
//! instant therefore leaves a record that claims at most what the `.part` holds (the bytes
//! past it, under [`RECORD_EVERY`], are dropped on resume and sent again); a record that claims more than the file's real size
//! (power loss, a hand-edited file), a torn or truncated one, or none at all is not offered,
//! and the transfer starts over. A `.part` altered in place under a sound record is caught by
//! the sender, whose hash of its own first bytes then differs.
//!
//! **Never through a link.** Both files are opened with `O_NOFOLLOW` and without truncation,
//! then must be regular files of ours with no other hard link; files that are not there are
//! created new (`O_EXCL`). A link planted at either name (in a shared directory, say) is
//! refused by name and cannot make us write or truncate something else.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};

use super::sha::{RunningSha256, STATE_BYTES};
use super::Offer;

/// First bytes of a sidecar record (format version 1).
const MAGIC: &[u8; 8] = b"WGPARTH1";
/// Bytes of the record's checksum (a truncated SHA-256 of what precedes it).
const CHECK: usize = 16;
/// A sidecar record: magic, hash state, checksum.
const RECORD: usize = 8 + STATE_BYTES + CHECK;
/// Where the record's checksum starts.
const BODY: usize = 8 + STATE_BYTES;

/// The sidecar is brought up to date after at least this many new bytes: a `pwrite` per MiB
/// costs nothing beside the data, and a killed transfer sends at most this much again.
pub const RECORD_EVERY: u64 = 1 << 20;

/// `FILE.part`.
pub fn part_path(target: &Path) -> PathBuf {
    suffixed(target, ".part")
}

/// `FILE.part.hash`, beside the `.part`.
pub fn hash_path(target: &Path) -> PathBuf {
    suffixed(target, ".part.hash")
}

fn suffixed(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Why a `.part` that holds bytes cannot be offered for resuming.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// There is no sidecar beside it.
    NoRecord,
    /// The sidecar is not a whole, intact record.
    BadRecord,
    /// The record claims more bytes than the `.part` holds.
    BeyondFile,
}

impl Unusable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unusable::NoRecord => "no-record",
            Unusable::BadRecord => "bad-record",
            Unusable::BeyondFile => "record-beyond-file",
        }
    }

    /// Completes "FILE.part …: starting over".
    pub fn describe(self) -> &'static str {
        match self {
            Unusable::NoRecord => "has no hash record beside it",
            Unusable::BadRecord => "has a damaged hash record",
            Unusable::BeyondFile => "is shorter than its hash record says",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error(
        "{0} is a symbolic link: refusing to write through it; move it away or delete it first"
    )]
    Symlink(PathBuf),
    #[error("{0} is not a regular file: move it away or delete it first")]
    NotRegular(PathBuf),
    #[error("{0} belongs to another user: move it away or delete it first")]
    NotOurs(PathBuf),
    #[error("{0} has other hard links: refusing to write to it; move it away or delete it first")]
    Linked(PathBuf),
    #[error("{0} already exists (it appeared while this transfer was starting): move it away or delete it first")]
    Appeared(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PartError + '_ {
    move |source| PartError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Opens `path` if it is there, never through a symlink and never truncating; it must be a
/// regular file of ours with one link. `None` when there is nothing at `path`.
fn open_existing(path: &Path, access: rustix::fs::OFlags) -> Result<Option<File>, PartError> {
    use rustix::fs::{Mode, OFlags};
    // NONBLOCK: a FIFO planted there must not hang the open (it is refused just after).
    let flags = access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let file = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => return Err(PartError::Symlink(path.to_owned())),
        // A FIFO nobody reads (with NONBLOCK), a device without a driver.
        Err(rustix::io::Errno::NXIO) => return Err(PartError::NotRegular(path.to_owned())),
        Err(e) => return Err(io_error(path)(e.into())),
    };
    let meta = file.metadata().map_err(io_error(path))?;
    if !meta.file_type().is_file() {
        return Err(PartError::NotRegular(path.to_owned()));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(PartError::NotOurs(path.to_owned()));
    }
    if meta.nlink() != 1 {
        return Err(PartError::Linked(path.to_owned()));
    }
    Ok(Some(file))
}

/// Creates `path` new (mode 0666 less the umask, like any created file), never through a
/// symlink and never an existing file.
fn create_new(path: &Path, access: rustix::fs::OFlags) -> Result<File, PartError> {
    use rustix::fs::{Mode, OFlags};
    let flags = access | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags, Mode::from_raw_mode(0o666)) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::EXIST) => Err(PartError::Appeared(path.to_owned())),
        Err(e) => Err(io_error(path)(e.into())),
    }
}

fn checksum(body: &[u8]) -> [u8; CHECK] {
    let digest = Sha256::digest(body);
    let mut check = [0u8; CHECK];
    check.copy_from_slice(&digest[..CHECK]);
    check
}

fn encode_record(sha: &RunningSha256) -> [u8; RECORD] {
    let mut record = [0u8; RECORD];
    record[..8].copy_from_slice(MAGIC);
    record[8..BODY].copy_from_slice(&sha.to_bytes());
    let check = checksum(&record[..BODY]);
    record[BODY..].copy_from_slice(&check);
    record
}

/// The hash state a sidecar holds; `None` unless it is exactly one intact record.
fn decode_record(bytes: &[u8]) -> Option<RunningSha256> {
    if bytes.len() != RECORD || &bytes[..8] != MAGIC || bytes[BODY..] != checksum(&bytes[..BODY]) {
        return None;
    }
    RunningSha256::from_bytes(bytes[8..BODY].try_into().ok()?)
}

/// What an earlier run left for `FILE`, opened and judged, nothing changed yet.
pub struct Part {
    target: PathBuf,
    part: Option<File>,
    hash: Option<File>,
    /// The `.part`'s size when opened.
    size: u64,
    /// The sidecar's state, when it is sound and within the `.part`.
    record: Result<RunningSha256, Unusable>,
}

impl Part {
    /// Looks at `FILE.part` and `FILE.part.hash` (see the module doc for what is refused).
    pub fn open(target: &Path) -> Result<Self, PartError> {
        use rustix::fs::OFlags;
        let part_path = part_path(target);
        let hash_path = hash_path(target);
        let part = open_existing(&part_path, OFlags::WRONLY)?;
        let hash = open_existing(&hash_path, OFlags::RDWR)?;
        let size = match &part {
            Some(file) => file.metadata().map_err(io_error(&part_path))?.len(),
            None => 0,
        };
        let record = match &hash {
            None => Err(Unusable::NoRecord),
            Some(file) => {
                let mut bytes = Vec::with_capacity(RECORD + 1);
                (&*file)
                    .take(RECORD as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map_err(io_error(&hash_path))?;
                match decode_record(&bytes) {
                    None => Err(Unusable::BadRecord),
                    Some(sha) if sha.len() > size => Err(Unusable::BeyondFile),
                    Some(sha) => Ok(sha),
                }
            }
        };
        Ok(Self {
            target: target.to_owned(),
            part,
            hash,
            size,
            record,
        })
    }

    /// What a resumed transfer can build on: the recorded bytes and their hash (`None` when
    /// there is nothing, or nothing sound).
    pub fn offer(&self) -> Option<Offer> {
        match &self.record {
            Ok(sha) if !sha.is_empty() => Some(Offer {
                len: sha.len(),
                sha256: sha.digest(),
            }),
            _ => None,
        }
    }

    /// Why bytes already in the `.part` cannot be offered, and how many there are; `None`
    /// when there is an offer or nothing to lose.
    pub fn unusable(&self) -> Option<(Unusable, u64)> {
        match &self.record {
            Err(why) if self.size > 0 => Some((*why, self.size)),
            _ => None,
        }
    }

    /// Starts writing at `from`: the offer's length (the sender agreed) or 0 (starting over).
    /// Files not there yet are created; the `.part` is cut to `from`, everything after it is
    /// written there and hashed on.
    pub fn start(self, from: u64) -> Result<PartWriter, PartError> {
        use rustix::fs::OFlags;
        let (part_path, hash_path) = (part_path(&self.target), hash_path(&self.target));
        let sha = match self.record {
            Ok(sha) if from > 0 && sha.len() == from => sha,
            _ if from == 0 => RunningSha256::default(),
            _ => {
                return Err(io_error(&part_path)(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot resume at {from}: not what was offered"),
                )))
            }
        };
        let hash = match self.hash {
            Some(file) => file,
            None => create_new(&hash_path, OFlags::RDWR)?,
        };
        let part = match self.part {
            Some(file) => file,
            None => create_new(&part_path, OFlags::WRONLY)?,
        };
        // The record first: it never claims more than the cut file holds, even if we stop
        // between the two.
        hash.write_all_at(&encode_record(&sha), 0)
            .map_err(io_error(&hash_path))?;
        hash.set_len(RECORD as u64).map_err(io_error(&hash_path))?;
        part.set_len(from).map_err(io_error(&part_path))?;
        let mut part = part;
        io::Seek::seek(&mut part, io::SeekFrom::Start(from)).map_err(io_error(&part_path))?;
        Ok(PartWriter {
            part,
            hash,
            recorded: sha.len(),
            sha,
        })
    }
}

/// Writes the `.part` in place (a regular file never waits for anyone) and keeps the sidecar's
/// record in step (module doc).
pub struct PartWriter {
    part: File,
    hash: File,
    sha: RunningSha256,
    /// The length the sidecar's record has.
    recorded: u64,
}

impl PartWriter {
    /// Brings the sidecar up to what the `.part` holds.
    fn record(&mut self) -> io::Result<()> {
        if self.recorded != self.sha.len() {
            self.hash.write_all_at(&encode_record(&self.sha), 0)?;
            self.recorded = self.sha.len();
        }
        Ok(())
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if let Err(e) = self.record() {
            tracing::warn!("cannot update the partial file's hash record: {e}");
        }
    }
}

impl tokio::io::AsyncWrite for PartWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = this.part.write(buf)?;
        this.sha.update(&buf[..n]);
        if this.sha.len() - this.recorded >= RECORD_EVERY {
            this.record()?;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.part.flush()?;
        Poll::Ready(this.record())
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// The transfer into `target` is complete: its `.part` becomes `target` and the sidecar goes.
pub fn complete(target: &Path) -> io::Result<()> {
    std::fs::rename(part_path(target), target)?;
    match std::fs::remove_file(hash_path(target)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!("cannot remove {}: {e}", hash_path(target).display());
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
#[path = "part_tests.rs"]
mod tests;
