//! The receiver's files: `FILE.part` (the bytes so far) and its sidecar `FILE.part.hash` (the
//! running SHA-256 of exactly those bytes, [`RunningSha256`]), so a later run can offer the
//! sender how much it has and the hash of it without reading the `.part` back.
//!
//! **When the record is trusted.** Every write goes to the `.part` first; only once it returned
//! is the sidecar rewritten, in one `pwrite` of one fixed-size record: magic, hash state, and
//! the `.part`'s stamp right after that write (device, inode, change time), then a checksum. A
//! later run takes the record as it is only when the `.part` is still exactly what it
//! describes: same stamp, size equal to the hashed length. Any other change to the file since
//! (a byte flipped in place, the file cut or copied, or our own write that a SIGKILL or power
//! loss kept from being recorded) moves its change time, which nobody can set back, and a
//! record that is missing, torn or cut proves nothing: then the `.part` is read again and
//! hashed from its real bytes ([`Part::rehash`]) before anything is offered. So the offer always
//! describes what is on disk, and a `.part` altered under a sound record is caught by the
//! sender, whose hash of its own first bytes differs. Re-reading is the exception: a receiver
//! that was stopped, lost its link or saw its sender die leaves an exact record.
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
/// Bytes of the `.part`'s stamp in a record: device, inode, change time (s, ns).
const STAMP: usize = 4 * 8;
/// Where the record's checksum starts.
const BODY: usize = 8 + STATE_BYTES + STAMP;
/// Bytes of the record's checksum (a truncated SHA-256 of what precedes it).
const CHECK: usize = 16;
/// A sidecar record: magic, hash state, stamp, checksum.
const RECORD: usize = BODY + CHECK;
/// Bytes read at once when hashing a `.part` again.
const REHASH_CHUNK: usize = 1 << 20;

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

/// Why a `.part`'s record was not taken as it is, and the file was hashed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rehash {
    /// There is no sidecar beside it.
    NoRecord,
    /// The sidecar is not a whole, intact record.
    BadRecord,
    /// The `.part` is not what the record describes (altered, cut, moved, or written after
    /// its last record).
    Changed,
}

impl Rehash {
    /// Completes "FILE.part …".
    pub fn describe(self) -> &'static str {
        match self {
            Rehash::NoRecord => "has no hash record beside it",
            Rehash::BadRecord => "has a damaged hash record",
            Rehash::Changed => "changed since its hash record was written",
        }
    }
}

/// What identifies a `.part`'s content as of one moment: its device, inode and change time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stamp([u64; 4]);

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp([
            meta.dev(),
            meta.ino(),
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ])
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

fn encode_record(sha: &RunningSha256, stamp: Stamp) -> [u8; RECORD] {
    let mut record = [0u8; RECORD];
    record[..8].copy_from_slice(MAGIC);
    record[8..8 + STATE_BYTES].copy_from_slice(&sha.to_bytes());
    for (bytes, field) in record[8 + STATE_BYTES..BODY]
        .chunks_exact_mut(8)
        .zip(stamp.0)
    {
        bytes.copy_from_slice(&field.to_le_bytes());
    }
    let check = checksum(&record[..BODY]);
    record[BODY..].copy_from_slice(&check);
    record
}

/// The hash state and stamp a sidecar holds; `None` unless it is exactly one intact record.
fn decode_record(bytes: &[u8]) -> Option<(RunningSha256, Stamp)> {
    if bytes.len() != RECORD || &bytes[..8] != MAGIC || bytes[BODY..] != checksum(&bytes[..BODY]) {
        return None;
    }
    let sha = RunningSha256::from_bytes(bytes[8..8 + STATE_BYTES].try_into().ok()?)?;
    let mut stamp = Stamp::default();
    for (field, chunk) in stamp
        .0
        .iter_mut()
        .zip(bytes[8 + STATE_BYTES..BODY].chunks_exact(8))
    {
        *field = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some((sha, stamp))
}

/// What an earlier run left for `FILE`, opened and judged, nothing changed yet.
pub struct Part {
    target: PathBuf,
    part: Option<File>,
    hash: Option<File>,
    /// The `.part`'s size when opened.
    size: u64,
    /// The hash of the `.part`'s bytes: the record's when it is trusted, else `Err` until
    /// [`Part::rehash`] has read them.
    sha: Result<RunningSha256, Rehash>,
    /// Whether the hash had to be made again by reading the `.part`.
    rehashed: bool,
}

impl Part {
    /// Looks at `FILE.part` and `FILE.part.hash` (see the module doc for what is refused and
    /// when the record is taken as it is).
    pub fn open(target: &Path) -> Result<Self, PartError> {
        use rustix::fs::OFlags;
        let part_path = part_path(target);
        let hash_path = hash_path(target);
        // Read too: an untrusted record means hashing the file again.
        let part = open_existing(&part_path, OFlags::RDWR)?;
        let hash = open_existing(&hash_path, OFlags::RDWR)?;
        let meta = match &part {
            Some(file) => Some(file.metadata().map_err(io_error(&part_path))?),
            None => None,
        };
        let size = meta.as_ref().map_or(0, |m| m.len());
        let record = match &hash {
            None => Err(Rehash::NoRecord),
            Some(file) => {
                let mut bytes = Vec::with_capacity(RECORD + 1);
                file.take(RECORD as u64 + 1)
                    .read_to_end(&mut bytes)
                    .map_err(io_error(&hash_path))?;
                decode_record(&bytes).ok_or(Rehash::BadRecord)
            }
        };
        let sha = match (meta, record) {
            // Nothing there, or nothing in it: nothing to hash.
            (None, _) => Ok(RunningSha256::default()),
            (Some(_), _) if size == 0 => Ok(RunningSha256::default()),
            (Some(meta), Ok((sha, stamp))) if stamp == Stamp::of(&meta) && sha.len() == size => {
                Ok(sha)
            }
            (Some(_), Ok(_)) => Err(Rehash::Changed),
            (Some(_), Err(why)) => Err(why),
        };
        Ok(Self {
            target: target.to_owned(),
            part,
            hash,
            size,
            sha,
            rehashed: false,
        })
    }

    /// Why the `.part` must be hashed again before it can be offered ([`Part::rehash`]), and
    /// how many bytes that reads; `None` when its record was taken as it is.
    pub fn needs_rehash(&self) -> Option<(Rehash, u64)> {
        self.sha.as_ref().err().map(|why| (*why, self.size))
    }

    /// Whether [`Part::rehash`] made the hash (the record was not trusted).
    pub fn rehashed(&self) -> bool {
        self.rehashed
    }

    /// Reads the `.part` and hashes what it really holds (blocking: off the runtime). Stops
    /// with `Interrupted` once `cancelled` is set.
    pub fn rehash(&mut self, cancelled: &std::sync::atomic::AtomicBool) -> Result<(), PartError> {
        let (Err(_), Some(file)) = (&self.sha, &self.part) else {
            return Ok(());
        };
        let path = part_path(&self.target);
        let mut sha = RunningSha256::default();
        let mut buf = vec![0u8; REHASH_CHUNK];
        loop {
            if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(io_error(&path)(io::ErrorKind::Interrupted.into()));
            }
            match file.read_at(&mut buf, sha.len()).map_err(io_error(&path))? {
                0 => break,
                n => sha.update(&buf[..n]),
            }
        }
        self.sha = Ok(sha);
        self.rehashed = true;
        Ok(())
    }

    /// What a resumed transfer can build on: the `.part`'s bytes and their hash (`None` when
    /// there are none, or they still need [`Part::rehash`]).
    pub fn offer(&self) -> Option<Offer> {
        match &self.sha {
            Ok(sha) if !sha.is_empty() => Some(Offer {
                len: sha.len(),
                sha256: sha.digest(),
            }),
            _ => None,
        }
    }

    /// Starts writing at `from`: the offer's length (the sender agreed) or 0 (starting over).
    /// Files not there yet are created; the `.part` is cut to `from`, everything after it is
    /// written there and hashed on.
    pub fn start(self, from: u64) -> Result<PartWriter, PartError> {
        use rustix::fs::OFlags;
        let (part_path, hash_path) = (part_path(&self.target), hash_path(&self.target));
        let sha = match self.sha {
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
        // A record no file matches first: stopped between the two, the next run hashes again.
        hash.write_all_at(&encode_record(&sha, Stamp::default()), 0)
            .map_err(io_error(&hash_path))?;
        hash.set_len(RECORD as u64).map_err(io_error(&hash_path))?;
        part.set_len(from).map_err(io_error(&part_path))?;
        let mut part = part;
        io::Seek::seek(&mut part, io::SeekFrom::Start(from)).map_err(io_error(&part_path))?;
        let mut writer = PartWriter { part, hash, sha };
        writer.record().map_err(io_error(&hash_path))?;
        Ok(writer)
    }
}

/// Writes the `.part` in place (a regular file never waits for anyone) and records every write
/// in the sidecar right after it (module doc).
pub struct PartWriter {
    part: File,
    hash: File,
    sha: RunningSha256,
}

impl PartWriter {
    /// Records the hash of what the `.part` holds, with its stamp as of now.
    fn record(&mut self) -> io::Result<()> {
        let stamp = Stamp::of(&self.part.metadata()?);
        self.hash.write_all_at(&encode_record(&self.sha, stamp), 0)
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
        this.record()?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().part.flush())
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
