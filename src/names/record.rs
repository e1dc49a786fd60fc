//! Signed name statements: the [`Record`] an owner publishes (name → key and current address)
//! and the [`Release`] that gives a name up. A registry stores and serves their bytes; trust
//! comes only from the owner's signature, which every client checks (DESIGN §8).
//!
//! Wire form, for both: `version (1) ‖ kind (1) ‖ fields ‖ signature (64)`. Each field is a TLV
//! `type (1) ‖ length (2, big-endian) ‖ value`; unknown types are skipped, so later versions can
//! add fields. The signature is the owner's ECDSA P-256 / SHA-256 over a domain-separation
//! label (one per kind) followed by everything before the signature, so a record's signature
//! never passes for a release, a signalling message or a TLS handshake. Decoding untrusted
//! bytes never panics: every failure is a [`RecordError`].

use crate::addr::Address;
use crate::identity::{Identity, PublicKey, PUBLIC_KEY_LEN, SIGNATURE_LEN};

use super::name::Name;

/// Version byte of the statements this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Largest statement accepted, so a registry or client rejects a novel before any work.
pub const MAX_RECORD_LEN: usize = 4096;
/// Longest lifetime a record may claim: 30 days.
pub const MAX_LIFETIME_SECS: u64 = 30 * 24 * 3600;

const RECORD_LABEL: &[u8] = b"warpgate name record v1\0";
const RELEASE_LABEL: &[u8] = b"warpgate name release v1\0";

mod kind {
    pub const RECORD: u8 = 1;
    pub const RELEASE: u8 = 2;
}

mod field {
    /// The name's label, ASCII, canonical (lowercase, no `.p2p`).
    pub const NAME: u8 = 0x01;
    /// The owner's compressed SEC1 public key (33 bytes).
    pub const KEY: u8 = 0x02;
    /// The owner's current address, in the address's binary form (no checksum).
    pub const ADDRESS: u8 = 0x03;
    /// Sequence number (u64 big-endian): a newer statement has a higher one.
    pub const SEQ: u8 = 0x04;
    /// Issued at, unix seconds (u64 big-endian).
    pub const ISSUED_AT: u8 = 0x05;
    /// Expires at, unix seconds (u64 big-endian).
    pub const EXPIRES_AT: u8 = 0x06;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("name record is too long ({0} bytes, at most {MAX_RECORD_LEN})")]
    TooLong(usize),
    #[error("name record is cut short")]
    Truncated,
    #[error("name record version {0} is not supported (this warpgate reads {RECORD_VERSION})")]
    Version(u8),
    #[error("not a name {0}")]
    WrongKind(&'static str),
    #[error("name record lacks its {0}")]
    Missing(&'static str),
    #[error("name record carries an invalid {0}")]
    Invalid(&'static str),
    #[error("name record's signature does not verify under its key")]
    BadSignature,
    #[error("name record's address belongs to another key than the record's")]
    AddressKey,
    #[error("name record's lifetime is not between 1 s and 30 days")]
    Lifetime,
    #[error("cannot sign for a key that is not ours")]
    NotOurKey,
}

/// An owner's statement: `name` belongs to `key`, reachable at `address`, from `issued_at`
/// until `expires_at` (unix seconds). A higher `seq` supersedes a lower one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub key: PublicKey,
    pub address: Address,
    pub seq: u64,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// An owner's statement that `name` is given up; `seq` must be above the record it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub name: Name,
    pub key: PublicKey,
    pub seq: u64,
    pub issued_at: u64,
}

impl Record {
    /// Whether the record is past its expiry at `now` (unix seconds).
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// The signed bytes, signed by `owner` (whose key must be the record's).
    pub fn sign(&self, owner: &Identity) -> Result<Vec<u8>, RecordError> {
        if owner.public_key() != self.key {
            return Err(RecordError::NotOurKey);
        }
        check_lifetime(self.issued_at, self.expires_at)?;
        let mut out = vec![RECORD_VERSION, kind::RECORD];
        push(&mut out, field::NAME, self.name.as_str().as_bytes());
        push(&mut out, field::KEY, &self.key.to_compressed());
        push(&mut out, field::ADDRESS, &self.address.to_bytes());
        push(&mut out, field::SEQ, &self.seq.to_be_bytes());
        push(&mut out, field::ISSUED_AT, &self.issued_at.to_be_bytes());
        push(&mut out, field::EXPIRES_AT, &self.expires_at.to_be_bytes());
        finish(out, RECORD_LABEL, owner)
    }

    /// Decodes `bytes` and checks them: the signature under the record's own key, the address
    /// belonging to that key, a lifetime of at most 30 days. Whether the record has expired is
    /// the caller's question ([`Record::is_expired`]).
    pub fn open(bytes: &[u8]) -> Result<Self, RecordError> {
        let fields = Fields::read(bytes, kind::RECORD, RECORD_LABEL)?;
        let address_bytes = fields.get(field::ADDRESS, "address")?;
        let address =
            Address::from_bytes(address_bytes).map_err(|_| RecordError::Invalid("address"))?;
        let record = Record {
            name: fields.name()?,
            key: fields.key,
            address,
            seq: fields.u64(field::SEQ, "sequence number")?,
            issued_at: fields.u64(field::ISSUED_AT, "issue time")?,
            expires_at: fields.u64(field::EXPIRES_AT, "expiry time")?,
        };
        if record.address.key != record.key {
            return Err(RecordError::AddressKey);
        }
        check_lifetime(record.issued_at, record.expires_at)?;
        Ok(record)
    }
}

impl Release {
    /// The signed bytes, signed by `owner` (whose key must be the release's).
    pub fn sign(&self, owner: &Identity) -> Result<Vec<u8>, RecordError> {
        if owner.public_key() != self.key {
            return Err(RecordError::NotOurKey);
        }
        let mut out = vec![RECORD_VERSION, kind::RELEASE];
        push(&mut out, field::NAME, self.name.as_str().as_bytes());
        push(&mut out, field::KEY, &self.key.to_compressed());
        push(&mut out, field::SEQ, &self.seq.to_be_bytes());
        push(&mut out, field::ISSUED_AT, &self.issued_at.to_be_bytes());
        finish(out, RELEASE_LABEL, owner)
    }

    /// Decodes `bytes` and checks the signature under the release's own key.
    pub fn open(bytes: &[u8]) -> Result<Self, RecordError> {
        let fields = Fields::read(bytes, kind::RELEASE, RELEASE_LABEL)?;
        Ok(Release {
            name: fields.name()?,
            key: fields.key,
            seq: fields.u64(field::SEQ, "sequence number")?,
            issued_at: fields.u64(field::ISSUED_AT, "issue time")?,
        })
    }
}

fn check_lifetime(issued_at: u64, expires_at: u64) -> Result<(), RecordError> {
    match expires_at.checked_sub(issued_at) {
        Some(life) if life > 0 && life <= MAX_LIFETIME_SECS => Ok(()),
        _ => Err(RecordError::Lifetime),
    }
}

fn push(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    // Every value we write is far below 64 KiB (the address is bounded by its own codec).
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.push(ty);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

/// The value of the first field of type `ty`.
fn first<'a>(
    fields: &[(u8, &'a [u8])],
    ty: u8,
    what: &'static str,
) -> Result<&'a [u8], RecordError> {
    fields
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| *v)
        .ok_or(RecordError::Missing(what))
}

fn signed_message(label: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(label.len() + body.len());
    message.extend_from_slice(label);
    message.extend_from_slice(body);
    message
}

fn finish(mut body: Vec<u8>, label: &[u8], owner: &Identity) -> Result<Vec<u8>, RecordError> {
    let signature = owner.sign(&signed_message(label, &body));
    body.extend_from_slice(&signature);
    if body.len() > MAX_RECORD_LEN {
        return Err(RecordError::TooLong(body.len()));
    }
    Ok(body)
}

/// The fields of a statement whose signature checked out under its key.
struct Fields<'a> {
    key: PublicKey,
    fields: Vec<(u8, &'a [u8])>,
}

impl<'a> Fields<'a> {
    fn read(bytes: &'a [u8], want: u8, label: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong(bytes.len()));
        }
        if bytes.len() < 2 + SIGNATURE_LEN {
            return Err(RecordError::Truncated);
        }
        if bytes[0] != RECORD_VERSION {
            return Err(RecordError::Version(bytes[0]));
        }
        if bytes[1] != want {
            return Err(RecordError::WrongKind(if want == kind::RECORD {
                "record"
            } else {
                "release"
            }));
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut fields = Vec::new();
        let mut rest = &body[2..];
        while !rest.is_empty() {
            let [ty, hi, lo, ..] = *rest else {
                return Err(RecordError::Truncated);
            };
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let value = rest.get(3..3 + len).ok_or(RecordError::Truncated)?;
            fields.push((ty, value));
            rest = &rest[3 + len..];
        }
        let key_bytes = first(&fields, field::KEY, "key")?;
        if key_bytes.len() != PUBLIC_KEY_LEN {
            return Err(RecordError::Invalid("key"));
        }
        let key = PublicKey::from_sec1(key_bytes).ok_or(RecordError::Invalid("key"))?;
        if !key.verify(&signed_message(label, body), signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(Self { key, fields })
    }

    fn get(&self, ty: u8, what: &'static str) -> Result<&'a [u8], RecordError> {
        first(&self.fields, ty, what)
    }

    fn u64(&self, ty: u8, what: &'static str) -> Result<u64, RecordError> {
        let bytes: [u8; 8] = self
            .get(ty, what)?
            .try_into()
            .map_err(|_| RecordError::Invalid(what))?;
        Ok(u64::from_be_bytes(bytes))
    }

    fn name(&self) -> Result<Name, RecordError> {
        let text = std::str::from_utf8(self.get(field::NAME, "name")?)
            .map_err(|_| RecordError::Invalid("name"))?;
        Name::from_canonical(text).ok_or(RecordError::Invalid("name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Candidate, CandidateKind};

    fn record(owner: &Identity) -> Record {
        let address = Address::new(
            owner.public_key(),
            vec![Candidate {
                kind: CandidateKind::Public,
                addr: "203.0.113.7:4000".parse().unwrap(),
            }],
        );
        Record {
            name: Name::parse("bob").unwrap(),
            key: owner.public_key(),
            address,
            seq: 3,
            issued_at: 1_800_000_000,
            expires_at: 1_800_000_000 + 7 * 86400,
        }
    }

    #[test]
    fn records_and_releases_round_trip() {
        let owner = Identity::generate();
        let r = record(&owner);
        let bytes = r.sign(&owner).unwrap();
        assert_eq!(Record::open(&bytes).unwrap(), r);
        assert!(!r.is_expired(r.issued_at));
        assert!(r.is_expired(r.expires_at));
        let release = Release {
            name: r.name.clone(),
            key: r.key,
            seq: 4,
            issued_at: r.issued_at + 10,
        };
        assert_eq!(
            Release::open(&release.sign(&owner).unwrap()).unwrap(),
            release
        );
    }

    #[test]
    fn tampering_forgery_and_confusion_are_caught() {
        let (owner, mallory) = (Identity::generate(), Identity::generate());
        let r = record(&owner);
        let bytes = r.sign(&owner).unwrap();
        // Any flipped byte before the signature breaks it (or the framing).
        for i in 2..bytes.len() - SIGNATURE_LEN {
            let mut t = bytes.clone();
            t[i] ^= 0x20;
            assert!(Record::open(&t).is_err(), "byte {i}");
        }
        // Mallory cannot sign for the owner's key, nor claim the owner's address as hers.
        assert_eq!(r.sign(&mallory), Err(RecordError::NotOurKey));
        let mut hers = r.clone();
        hers.key = mallory.public_key();
        assert_eq!(
            Record::open(&hers.sign(&mallory).unwrap()),
            Err(RecordError::AddressKey)
        );
        // A record's signature does not pass for a release, nor the other way round.
        let release = Release {
            name: r.name.clone(),
            key: r.key,
            seq: 4,
            issued_at: r.issued_at,
        };
        let mut as_release = bytes.clone();
        as_release[1] = kind::RELEASE;
        assert!(Release::open(&as_release).is_err());
        assert_eq!(
            Record::open(&release.sign(&owner).unwrap()),
            Err(RecordError::WrongKind("record"))
        );
    }

    #[test]
    fn lifetimes_are_bounded() {
        let owner = Identity::generate();
        let mut r = record(&owner);
        r.expires_at = r.issued_at + MAX_LIFETIME_SECS + 1;
        assert_eq!(r.sign(&owner), Err(RecordError::Lifetime));
        r.expires_at = r.issued_at;
        assert_eq!(r.sign(&owner), Err(RecordError::Lifetime));
        r.expires_at = r.issued_at + MAX_LIFETIME_SECS;
        assert!(r.sign(&owner).is_ok());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let owner = Identity::generate();
        let r = record(&owner);
        let bytes = r.sign(&owner).unwrap();
        // Re-sign the body with an extra field of an unknown type in front.
        let mut body = bytes[..bytes.len() - SIGNATURE_LEN].to_vec();
        body.splice(2..2, [0x7f, 0, 3, 1, 2, 3]);
        let signature = owner.sign(&signed_message(RECORD_LABEL, &body));
        body.extend_from_slice(&signature);
        assert_eq!(Record::open(&body).unwrap(), r);
    }

    #[test]
    fn garbage_never_panics() {
        let owner = Identity::generate();
        let bytes = record(&owner).sign(&owner).unwrap();
        for len in 0..bytes.len() {
            assert!(Record::open(&bytes[..len]).is_err());
            assert!(Release::open(&bytes[..len]).is_err());
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut junk = bytes.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state as usize) % junk.len();
                junk[i] = (state >> 32) as u8;
            }
            let _ = Record::open(&junk);
        }
        assert_eq!(
            Record::open(&vec![1u8; MAX_RECORD_LEN + 1]),
            Err(RecordError::TooLong(MAX_RECORD_LEN + 1))
        );
    }
}
