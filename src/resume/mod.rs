//! Resuming a file transfer: `--recv FILE` with a `FILE.part` left by an earlier run tells the
//! sender how many bytes it has and their SHA-256; a `--send FILE` sender hashes its own first
//! that many bytes and either continues from there or has both sides start over.
//!
//! # Protocol
//!
//! Nothing of it travels in band of a stream that may be spliced to a TCP port or stdio:
//!
//! 1. **Notes, in the link's selection** ([`crate::link`]: the connector's after its select
//!    word, the listener's in the acknowledgement; no extra round trip). A transfer end says
//!    whether it sends a file (and its length) and, when its `.part` holds a sound prefix,
//!    offers it ([`Note`]). An end with neither (stdio, `--forward`, `--local`, a fresh
//!    `--recv`) sends no note at all, and the listener answers only a connector that sent
//!    one: such a selection is what it was before resuming existed. (Whenever a verdict is
//!    due, the connector has something to say, so it hears the listener's note.)
//! 2. **A verdict, first on the sender's side of the data stream**, written only when the
//!    receiver offered *and* the sender sends a file ([`Verdict`], [`VERDICT_LEN`] bytes).
//!    Both ends know both notes, so both know whether a verdict comes: a stdio or TCP end never
//!    offers and never sends a file, so it never sees or writes one.
//!
//! The receiver waits for the verdict at most [`verdict_timeout`] (the sender reads and hashes
//! the offered bytes first). A receiver whose peer does not send a file (stdin cannot be
//! resumed) starts over without waiting. What is offered always describes the `.part` as it is
//! on disk ([`part`]). An empty note means offset 0 and costs nothing.
//!
//! Neighbours: [`part`] keeps the `.part`, its running hash and the sidecar; [`sha`] is the
//! SHA-256 whose state is saved there; `cli::transfer` drives the two ends and reports.

pub mod part;
pub mod sha;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::timing::{RESUME_HASH_FLOOR, RESUME_VERDICT_TIMEOUT};

/// A receiver's partial file: its first `len` bytes hash to `sha256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    pub len: u64,
    pub sha256: [u8; 32],
}

/// What a transfer end says in the selection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Note {
    /// It sends a file of this many bytes, and answers an offer with a verdict.
    pub sends_file: Option<u64>,
    /// It receives into a file and already holds this much of it.
    pub offer: Option<Offer>,
}

/// First bytes of a note (resume protocol version 1).
const NOTE_MAGIC: &[u8; 4] = b"WGR1";
const SENDS_FILE: u8 = 1;
const OFFERS: u8 = 2;
/// First bytes of a verdict.
const VERDICT_MAGIC: &[u8; 4] = b"WGRV";
/// Bytes of a verdict on the stream: magic, kind, offset.
pub const VERDICT_LEN: usize = 4 + 1 + 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("the peer's transfer note is not one this version reads ({0})")]
    BadNote(&'static str),
    #[error("the peer's resume verdict is malformed ({0})")]
    BadVerdict(&'static str),
    #[error("the peer did not answer the resume offer within {0:?}")]
    Timeout(Duration),
    #[error("the peer ended its side before answering the resume offer")]
    NoVerdict,
}

impl Note {
    /// The note's bytes; none when there is nothing to say.
    pub fn encode(&self) -> Vec<u8> {
        if *self == Note::default() {
            return Vec::new();
        }
        let mut out = NOTE_MAGIC.to_vec();
        let flags = u8::from(self.sends_file.is_some()) * SENDS_FILE
            + u8::from(self.offer.is_some()) * OFFERS;
        out.push(flags);
        if let Some(len) = self.sends_file {
            out.extend_from_slice(&len.to_le_bytes());
        }
        if let Some(offer) = &self.offer {
            out.extend_from_slice(&offer.len.to_le_bytes());
            out.extend_from_slice(&offer.sha256);
        }
        out
    }

    /// Reads a peer's note; no bytes is the empty note. Anything else that is not exactly a
    /// note of this version is refused (a misread note could make us take a verdict for data).
    pub fn decode(bytes: &[u8]) -> Result<Self, ResumeError> {
        if bytes.is_empty() {
            return Ok(Note::default());
        }
        let rest = bytes
            .strip_prefix(NOTE_MAGIC)
            .ok_or(ResumeError::BadNote("unknown magic"))?;
        let (&flags, mut rest) = rest
            .split_first()
            .ok_or(ResumeError::BadNote("cut short"))?;
        if flags & !(SENDS_FILE | OFFERS) != 0 {
            return Err(ResumeError::BadNote("unknown flags"));
        }
        // Nothing to say is said with no bytes: one encoding per note.
        if flags == 0 {
            return Err(ResumeError::BadNote("says nothing"));
        }
        let mut u64_field = || -> Result<u64, ResumeError> {
            let (head, tail) = rest
                .split_first_chunk::<8>()
                .ok_or(ResumeError::BadNote("cut short"))?;
            rest = tail;
            Ok(u64::from_le_bytes(*head))
        };
        let sends_file = (flags & SENDS_FILE != 0).then(&mut u64_field).transpose()?;
        let offer_len = (flags & OFFERS != 0).then(&mut u64_field).transpose()?;
        let offer = match offer_len {
            Some(len) => {
                let (sha256, tail) = rest
                    .split_first_chunk::<32>()
                    .ok_or(ResumeError::BadNote("cut short"))?;
                rest = tail;
                if len == 0 {
                    return Err(ResumeError::BadNote("an empty offer"));
                }
                Some(Offer {
                    len,
                    sha256: *sha256,
                })
            }
            None => None,
        };
        if !rest.is_empty() {
            return Err(ResumeError::BadNote("trailing bytes"));
        }
        Ok(Note { sends_file, offer })
    }
}

/// The sender's answer to an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The offered bytes match: the data that follows starts at this offset (the offer's length).
    Resume(u64),
    /// They differ from the sender's file: start over.
    Mismatch,
    /// The sender's file is shorter than the offer: start over.
    Shorter,
}

impl Verdict {
    /// Where the data that follows the verdict starts.
    pub fn from(self) -> u64 {
        match self {
            Verdict::Resume(at) => at,
            Verdict::Mismatch | Verdict::Shorter => 0,
        }
    }

    /// Why it starts over, for events (`None` when it resumes).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Verdict::Resume(_) => None,
            Verdict::Mismatch => Some("mismatch"),
            Verdict::Shorter => Some("shorter"),
        }
    }

    pub fn encode(self) -> [u8; VERDICT_LEN] {
        let mut out = [0u8; VERDICT_LEN];
        out[..4].copy_from_slice(VERDICT_MAGIC);
        out[4] = match self {
            Verdict::Resume(_) => 0,
            Verdict::Mismatch => 1,
            Verdict::Shorter => 2,
        };
        out[5..].copy_from_slice(&self.from().to_le_bytes());
        out
    }

    /// Reads the verdict on `offer`: a resume must be at exactly the offered length, a restart
    /// at 0.
    pub fn decode(bytes: &[u8; VERDICT_LEN], offer: &Offer) -> Result<Self, ResumeError> {
        if &bytes[..4] != VERDICT_MAGIC {
            return Err(ResumeError::BadVerdict("unknown magic"));
        }
        let at = u64::from_le_bytes(bytes[5..].try_into().unwrap_or_default());
        let verdict = match bytes[4] {
            0 => Verdict::Resume(at),
            1 => Verdict::Mismatch,
            2 => Verdict::Shorter,
            _ => return Err(ResumeError::BadVerdict("unknown kind")),
        };
        match verdict {
            Verdict::Resume(at) if at != offer.len => {
                Err(ResumeError::BadVerdict("not at the offered length"))
            }
            v if v.from() != at => Err(ResumeError::BadVerdict("a restart not at 0")),
            v => Ok(v),
        }
    }
}

/// How long a receiver waits for the verdict on an offer of `len` bytes: a round trip's worth
/// plus the sender reading and hashing them at [`RESUME_HASH_FLOOR`].
pub fn verdict_timeout(len: u64) -> Duration {
    RESUME_VERDICT_TIMEOUT + Duration::from_secs(len / RESUME_HASH_FLOOR)
}

/// Bytes read at once while judging an offer.
const JUDGE_CHUNK: usize = 1 << 20;

/// The sender's judgement of `offer` against its `file` (blocking: run it off the runtime).
/// Stops early with `Interrupted` once `cancelled` is set.
pub fn judge(file: &File, offer: &Offer, cancelled: &AtomicBool) -> io::Result<Verdict> {
    if file.metadata()?.len() < offer.len {
        return Ok(Verdict::Shorter);
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; JUDGE_CHUNK];
    let mut at = 0u64;
    while at < offer.len {
        if cancelled.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let want = (offer.len - at).min(JUDGE_CHUNK as u64) as usize;
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            // Shrunk while we read.
            return Ok(Verdict::Shorter);
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(if <[u8; 32]>::from(hasher.finalize()) == offer.sha256 {
        Verdict::Resume(offer.len)
    } else {
        Verdict::Mismatch
    })
}

/// Sender: writes `verdict` ahead of the data.
pub async fn send_verdict<W: AsyncWrite + Unpin>(send: &mut W, verdict: Verdict) -> io::Result<()> {
    send.write_all(&verdict.encode()).await
}

/// Receiver: the verdict on `offer`, the first bytes of the peer's side of the stream, within
/// `wait` ([`verdict_timeout`]). An `Err(Ok(_))` is the protocol's failure, an `Err(Err(_))`
/// the link's.
pub async fn read_verdict<R: AsyncRead + Unpin>(
    recv: &mut R,
    offer: &Offer,
    wait: Duration,
) -> Result<Verdict, Result<ResumeError, io::Error>> {
    let mut bytes = [0u8; VERDICT_LEN];
    match tokio::time::timeout(wait, recv.read_exact(&mut bytes)).await {
        Err(_) => Err(Ok(ResumeError::Timeout(wait))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Ok(ResumeError::NoVerdict)),
        Ok(Err(e)) => Err(Err(e)),
        Ok(Ok(_)) => Verdict::decode(&bytes, offer).map_err(Ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(len: u64) -> Offer {
        Offer {
            len,
            sha256: [7; 32],
        }
    }

    #[test]
    fn notes_round_trip_and_the_empty_note_is_no_bytes() {
        assert!(Note::default().encode().is_empty());
        assert_eq!(Note::decode(&[]), Ok(Note::default()));
        for note in [
            Note {
                sends_file: Some(0),
                offer: None,
            },
            Note {
                sends_file: None,
                offer: Some(offer(5)),
            },
            Note {
                sends_file: Some(u64::MAX),
                offer: Some(offer(1 << 40)),
            },
        ] {
            let bytes = note.encode();
            assert!(bytes.len() <= crate::link::MAX_NOTE);
            assert_eq!(Note::decode(&bytes), Ok(note));
            // Every cut and every extra byte is refused, never misread.
            for cut in 0..bytes.len() {
                if cut > 0 {
                    assert!(
                        Note::decode(&bytes[..cut]).is_err(),
                        "{note:?} cut at {cut}"
                    );
                }
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(Note::decode(&long).is_err());
        }
        assert!(Note::decode(b"WGR1\x04").is_err());
        // Found by fuzzing: nothing said in bytes is not the empty note's encoding.
        assert!(Note::decode(b"WGR1\x00").is_err());
        assert!(Note::decode(b"WGR2\x00").is_err());
        let empty_offer = [&b"WGR1\x02"[..], &0u64.to_le_bytes(), &[0; 32]].concat();
        assert!(Note::decode(&empty_offer).is_err());
    }

    #[test]
    fn verdicts_round_trip_and_must_fit_the_offer() {
        let o = offer(1000);
        for v in [Verdict::Resume(1000), Verdict::Mismatch, Verdict::Shorter] {
            assert_eq!(Verdict::decode(&v.encode(), &o), Ok(v));
        }
        assert!(Verdict::decode(&Verdict::Resume(999).encode(), &o).is_err());
        let mut restart_at_5 = Verdict::Mismatch.encode();
        restart_at_5[5] = 5;
        assert!(Verdict::decode(&restart_at_5, &o).is_err());
        let mut junk = Verdict::Mismatch.encode();
        junk[4] = 9;
        assert!(Verdict::decode(&junk, &o).is_err());
        assert!(Verdict::decode(&[0; VERDICT_LEN], &o).is_err());
    }

    #[test]
    fn judging_an_offer_hashes_exactly_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let no = AtomicBool::new(false);
        let len = 2_500_001;
        let good = Offer {
            len: len as u64,
            sha256: Sha256::digest(&data[..len]).into(),
        };
        assert_eq!(
            judge(&file, &good, &no).unwrap(),
            Verdict::Resume(len as u64)
        );
        let mut flipped = data[..len].to_vec();
        flipped[1234] ^= 1;
        let bad = Offer {
            sha256: Sha256::digest(&flipped).into(),
            ..good
        };
        assert_eq!(judge(&file, &bad, &no).unwrap(), Verdict::Mismatch);
        let long = Offer {
            len: data.len() as u64 + 1,
            ..good
        };
        assert_eq!(judge(&file, &long, &no).unwrap(), Verdict::Shorter);
        let stop = AtomicBool::new(true);
        assert!(judge(&file, &good, &stop).is_err());
    }

    #[tokio::test]
    async fn a_verdict_is_read_off_the_stream_and_the_data_follows() {
        let o = offer(10);
        let wait = Duration::from_secs(5);
        let mut stream = [&Verdict::Resume(10).encode()[..], b"rest"].concat();
        let mut reader = stream.as_slice();
        let got = read_verdict(&mut reader, &o, wait).await;
        assert!(matches!(got, Ok(Verdict::Resume(10))), "{got:?}");
        assert_eq!(reader, b"rest");
        stream.truncate(5);
        let mut cut = stream.as_slice();
        let got = read_verdict(&mut cut, &o, wait).await;
        assert!(matches!(got, Err(Ok(ResumeError::NoVerdict))), "{got:?}");
    }

    #[tokio::test]
    async fn a_silent_sender_is_waited_for_no_longer_than_allowed() {
        let (_quiet, mut recv) = tokio::io::duplex(64);
        let wait = Duration::from_millis(50);
        let started = std::time::Instant::now();
        let got = read_verdict(&mut recv, &offer(10), wait).await;
        assert!(matches!(got, Err(Ok(ResumeError::Timeout(_)))), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The allowance grows with what the sender has to hash.
        assert_eq!(verdict_timeout(0), RESUME_VERDICT_TIMEOUT);
        assert_eq!(
            verdict_timeout(10 * RESUME_HASH_FLOOR),
            RESUME_VERDICT_TIMEOUT + Duration::from_secs(10)
        );
    }
}
