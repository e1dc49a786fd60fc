//! Sealed signalling messages: a pure, total codec.
//!
//! A message on the wire is `magic "WGS" ‖ version (1) ‖ HPKE encapsulated key (65) ‖ ciphertext`,
//! encrypted with RFC 9180 HPKE (base mode, DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM)
//! to the recipient's identity key, with the 4-byte header as associated data. The plaintext is
//!
//! ```text
//! sender key (33, compressed SEC1) ‖ recipient node id (10) ‖ message id (16) ‖
//! reply inbox (16) ‖ timestamp (8, unix ms, big endian) ‖ kind (1) ‖ body length (2) ‖ body ‖
//! signature (64)
//! ```
//!
//! where the body is the kind's fields in postcard and the signature is ECDSA P-256 (SHA-256) by
//! the sender's identity key over [`SIGNATURE_DOMAIN`] ‖ everything before the signature. The
//! reply inbox names the topic the sender reads replies on (see [`super::topic`]): its listening
//! topic, or a random one for this session, so a connector is answered on a topic nobody else
//! can name. Sender, recipient and inbox are inside the encryption; what a broker still learns is
//! in [`super`]'s module doc. Decoding untrusted bytes never panics: every failure is a
//! [`MessageError`], classified by [`MessageError::class`] for the drop counters.
//!
//! Neighbours: [`super::session`] seals and opens with these functions; [`crate::identity`] owns
//! the keys.

use hpke::kem::DhP256HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};

use std::net::SocketAddr;

use crate::addr::{Candidate, CandidateKind};
use crate::identity::{Identity, NodeId, PublicKey, NODE_ID_LEN, PUBLIC_KEY_LEN};
use crate::nat::SocketMapping;

use super::{MAX_MESSAGE_LEN, WIRE_VERSION};

type Kem = DhP256HkdfSha256;
type Aead = hpke::aead::AesGcm128;
type Kdf = hpke::kdf::HkdfSha256;

/// First bytes of every sealed message.
pub const MAGIC: &[u8; 3] = b"WGS";
/// HPKE `info`: binds the keys derived to this protocol and version.
pub const HPKE_INFO: &[u8] = b"warpgate/v1 signal";
/// Prefix of the bytes a sender signs, so a signature can mean nothing else.
pub const SIGNATURE_DOMAIN: &[u8] = b"warpgate/v1 signal signature\0";

/// Upper bounds on the fields of a payload, checked on encode and decode.
pub const MAX_CANDIDATES: usize = 32;
pub const MAX_STRATEGIES: usize = 16;
pub const MAX_STRATEGY_LEN: usize = 32;

const HEADER_LEN: usize = MAGIC.len() + 1;
const ENCAPPED_LEN: usize = 65;
const TAG_LEN: usize = 16;
const SIGNATURE_LEN: usize = 64;
/// Plaintext bytes around the body: key, id, message id, inbox, timestamp, kind, length,
/// signature.
const INNER_FIXED_LEN: usize =
    PUBLIC_KEY_LEN + NODE_ID_LEN + 16 + INBOX_LEN + 8 + 1 + 2 + SIGNATURE_LEN;
/// Bytes of an [`Inbox`].
pub const INBOX_LEN: usize = 16;
/// Size of a sealed message with an empty body.
pub const SEALED_OVERHEAD: usize = HEADER_LEN + ENCAPPED_LEN + INNER_FIXED_LEN + TAG_LEN;

/// Message kinds on the wire.
mod kind {
    pub const OFFER: u8 = 1;
    pub const ANSWER: u8 = 2;
    pub const PING: u8 = 3;
    pub const PONG: u8 = 4;
    pub const ACK: u8 = 5;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_LEN}-byte bound")]
    TooLarge(usize),
    #[error("message is truncated")]
    TooShort,
    #[error("not a warpgate signalling message")]
    BadMagic,
    #[error("signalling version {0} is not supported (this build speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("message cannot be decrypted with this node's key")]
    Undecryptable,
    #[error("message carries an invalid sender key")]
    BadSender,
    #[error("message is addressed to another node")]
    Misaddressed,
    #[error("message signature does not verify against its sender key")]
    BadSignature,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("message body is malformed")]
    BadBody,
    #[error("payload exceeds its bounds: {0}")]
    PayloadBounds(&'static str),
    #[error("encryption failed")]
    Encrypt,
    #[error("the identity key cannot be used for signalling")]
    BadKey,
}

/// How a rejected message is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropClass {
    Garbage,
    Oversized,
    Undecryptable,
    Forged,
}

impl MessageError {
    pub fn class(&self) -> DropClass {
        match self {
            MessageError::TooLarge(_) => DropClass::Oversized,
            MessageError::Undecryptable => DropClass::Undecryptable,
            MessageError::BadSender | MessageError::Misaddressed | MessageError::BadSignature => {
                DropClass::Forged
            }
            _ => DropClass::Garbage,
        }
    }
}

/// A random 128-bit message id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        Self(id)
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Which of a node's topics a message goes to (with the node's key, [`super::topic`] names it):
/// [`Inbox::LISTENING`], where a listener can be reached by anyone holding its key, or a random
/// inbox a node opens for one session and names inside its messages for the replies.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Inbox(pub [u8; INBOX_LEN]);

impl Inbox {
    /// A listener's inbox: the topic its address lets a connector compute.
    pub const LISTENING: Inbox = Inbox([0; INBOX_LEN]);

    /// A fresh session inbox: 128 random bits, so its topic cannot be guessed.
    pub fn random() -> Self {
        let mut inbox = [0u8; INBOX_LEN];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut inbox);
        Self(inbox)
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Inbox::LISTENING {
            return write!(f, "listening");
        }
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The connector's request: fresh candidates and the strategies it wants to try.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Where the connector's punching UDP socket can be reached (local and public).
    #[serde(with = "candidates")]
    pub udp: Vec<Candidate>,
    /// Where the connector's punching TCP port can be reached.
    #[serde(with = "candidates")]
    pub tcp: Vec<Candidate>,
    pub strategies: Vec<String>,
    /// Ties the answer to this offer; also the token of the session's punch probes.
    pub nonce: [u8; 16],
    /// The connector's relayed addresses (its TURN allocation), when it has one. Only the
    /// address: the TURN credentials never leave the node.
    pub relayed: Vec<SocketAddr>,
    /// What the connector's NAT did with its punching UDP socket's mapping (one byte; a value
    /// unknown to the reader reads as unknown): with the answer's, it picks `random_probe`'s
    /// roles.
    pub mapping: SocketMapping,
}

/// The listener's reply to an [`Offer`] with the same nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    #[serde(with = "candidates")]
    pub udp: Vec<Candidate>,
    #[serde(with = "candidates")]
    pub tcp: Vec<Candidate>,
    pub nonce: [u8; 16],
    /// Both sides start punching this long after the answer arrives (the listener adds half
    /// the round trip it measures).
    pub fire_in_ms: u32,
    /// The listener's relayed addresses, when it has a TURN allocation.
    pub relayed: Vec<SocketAddr>,
    /// What the listener's NAT did with its punching UDP socket's mapping.
    pub mapping: SocketMapping,
}

/// A round-trip probe (for punch timing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub nonce: u64,
    /// The pinger's clock when it sent this, unix ms.
    pub sent_ms: u64,
}

/// The answer to a [`Ping`]: its nonce and time echoed, plus the ponger's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub nonce: u64,
    pub ping_sent_ms: u64,
    pub sent_ms: u64,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Offer(Offer),
    Answer(Answer),
    Ping(Ping),
    Pong(Pong),
    /// Receipt of the message with this id (never itself acknowledged).
    Ack(MessageId),
}

impl Payload {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Payload::Offer(_) => "offer",
            Payload::Answer(_) => "answer",
            Payload::Ping(_) => "ping",
            Payload::Pong(_) => "pong",
            Payload::Ack(_) => "ack",
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Payload::Offer(_) => kind::OFFER,
            Payload::Answer(_) => kind::ANSWER,
            Payload::Ping(_) => kind::PING,
            Payload::Pong(_) => kind::PONG,
            Payload::Ack(_) => kind::ACK,
        }
    }

    fn check_bounds(&self) -> Result<(), MessageError> {
        let (udp, tcp) = match self {
            Payload::Offer(o) => {
                if o.strategies.len() > MAX_STRATEGIES
                    || o.strategies.iter().any(|s| s.len() > MAX_STRATEGY_LEN)
                {
                    return Err(MessageError::PayloadBounds(
                        "too many or too long strategies",
                    ));
                }
                (&o.udp, &o.tcp)
            }
            Payload::Answer(a) => (&a.udp, &a.tcp),
            _ => return Ok(()),
        };
        if udp.len() > MAX_CANDIDATES || tcp.len() > MAX_CANDIDATES {
            return Err(MessageError::PayloadBounds("too many candidates"));
        }
        Ok(())
    }

    fn encode_body(&self) -> Result<Vec<u8>, MessageError> {
        self.check_bounds()?;
        let body = match self {
            Payload::Offer(o) => postcard::to_allocvec(o),
            Payload::Answer(a) => postcard::to_allocvec(a),
            Payload::Ping(p) => postcard::to_allocvec(p),
            Payload::Pong(p) => postcard::to_allocvec(p),
            Payload::Ack(id) => postcard::to_allocvec(id),
        };
        body.map_err(|_| MessageError::PayloadBounds("body does not encode"))
    }

    fn decode_body(kind: u8, body: &[u8]) -> Result<Self, MessageError> {
        let payload = match kind {
            kind::OFFER => Payload::Offer(exact(body)?),
            kind::ANSWER => Payload::Answer(exact(body)?),
            kind::PING => Payload::Ping(exact(body)?),
            kind::PONG => Payload::Pong(exact(body)?),
            kind::ACK => Payload::Ack(exact(body)?),
            other => return Err(MessageError::UnknownKind(other)),
        };
        payload.check_bounds().map_err(|_| MessageError::BadBody)?;
        Ok(payload)
    }
}

/// Decodes a postcard value that must use every byte of `body`.
fn exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, MessageError> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        _ => Err(MessageError::BadBody),
    }
}

/// Candidates travel as (kind, socket address); [`Candidate`] itself is not `Deserialize`.
/// The kind is one flag, "outside the NAT": a mapped candidate travels as a public one (to the
/// peer both are addresses on the gateway's outside), so the wire stays what older peers read.
mod candidates {
    use super::*;
    use std::net::SocketAddr;

    #[derive(Serialize, Deserialize)]
    struct Wire(bool, SocketAddr);

    pub fn serialize<S: serde::Serializer>(v: &[Candidate], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            v.iter()
                .map(|c| Wire(c.kind != CandidateKind::Local, c.addr)),
        )
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Candidate>, D::Error> {
        let wire = Vec::<Wire>::deserialize(d)?;
        Ok(wire
            .into_iter()
            .map(|Wire(public, addr)| Candidate {
                kind: if public {
                    CandidateKind::Public
                } else {
                    CandidateKind::Local
                },
                addr,
            })
            .collect())
    }
}

/// A node's keys as signalling uses them: ECDSA signing and HPKE decryption.
#[derive(Clone)]
pub struct Keys {
    signing: SigningKey,
    hpke_secret: <Kem as hpke::Kem>::PrivateKey,
    public: PublicKey,
}

impl Keys {
    pub fn from_identity(identity: &Identity) -> Result<Self, MessageError> {
        let secret = p256::SecretKey::from_pkcs8_der(&identity.pkcs8_der())
            .map_err(|_| MessageError::BadKey)?;
        Self::from_secret(secret)
    }

    pub fn from_secret(secret: p256::SecretKey) -> Result<Self, MessageError> {
        let public = PublicKey::from_sec1(secret.public_key().to_encoded_point(true).as_bytes())
            .ok_or(MessageError::BadKey)?;
        let hpke_secret = <Kem as hpke::Kem>::PrivateKey::from_bytes(&secret.to_bytes())
            .map_err(|_| MessageError::BadKey)?;
        Ok(Self {
            signing: SigningKey::from(&secret),
            hpke_secret,
            public,
        })
    }

    /// A fresh random key pair (tests, throwaway nodes).
    pub fn random() -> Self {
        loop {
            if let Ok(keys) = Self::from_secret(p256::SecretKey::random(&mut rand_core::OsRng)) {
                return keys;
            }
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// ECDSA P-256 over `bytes` (SHA-256), as 64 bytes `r ‖ s`.
    pub fn sign(&self, bytes: &[u8]) -> [u8; SIGNATURE_LEN] {
        let signature: Signature = self.signing.sign(bytes);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(&signature.to_bytes());
        out
    }
}

/// A decoded (or to-be-sealed) message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: PublicKey,
    pub to: NodeId,
    pub id: MessageId,
    /// Where the sender reads replies to this message (acks, pongs, answers).
    pub reply: Inbox,
    pub timestamp_ms: u64,
    pub payload: Payload,
}

impl Message {
    /// Signs with `signer`, encrypts to `recipient`. `self.from` should be `signer`'s key.
    pub fn seal(&self, signer: &Keys, recipient: &PublicKey) -> Result<Vec<u8>, MessageError> {
        let unsigned = self.encode_unsigned()?;
        let signature = signer.sign(&signed_bytes(&unsigned));
        let mut inner = unsigned;
        inner.extend_from_slice(&signature);
        encrypt(recipient, &inner)
    }

    /// The plaintext with `signature` appended as is (for tests that forge signatures).
    pub fn encode_with_signature(&self, signature: &[u8; 64]) -> Result<Vec<u8>, MessageError> {
        let mut inner = self.encode_unsigned()?;
        inner.extend_from_slice(signature);
        Ok(inner)
    }

    /// The bytes a signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, MessageError> {
        Ok(signed_bytes(&self.encode_unsigned()?))
    }

    fn encode_unsigned(&self) -> Result<Vec<u8>, MessageError> {
        let body = self.payload.encode_body()?;
        let len = u16::try_from(body.len())
            .ok()
            .filter(|_| body.len() + SEALED_OVERHEAD <= MAX_MESSAGE_LEN)
            .ok_or(MessageError::TooLarge(body.len() + SEALED_OVERHEAD))?;
        let mut out = Vec::with_capacity(INNER_FIXED_LEN + body.len());
        out.extend_from_slice(&self.from.to_compressed());
        out.extend_from_slice(self.to.as_bytes());
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.reply.0);
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.push(self.payload.kind());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts with `keys`, checks the recipient and the signature. Total: never panics.
    pub fn open(keys: &Keys, sealed: &[u8]) -> Result<Message, MessageError> {
        let inner = decrypt(keys, sealed)?;
        let message = Self::decode_inner(&inner)?;
        if message.to != keys.public.id() {
            return Err(MessageError::Misaddressed);
        }
        Ok(message)
    }

    /// Parses and verifies a plaintext (no recipient check).
    pub fn decode_inner(inner: &[u8]) -> Result<Message, MessageError> {
        let mut r = Reader(inner);
        let from_bytes = r.take(PUBLIC_KEY_LEN)?;
        let to = r.array::<NODE_ID_LEN>()?;
        let id = r.array::<16>()?;
        let reply = Inbox(r.array::<INBOX_LEN>()?);
        let timestamp_ms = u64::from_be_bytes(r.array::<8>()?);
        let kind = r.array::<1>()?[0];
        let len = usize::from(u16::from_be_bytes(r.array::<2>()?));
        let body = r.take(len)?;
        let signature = r.take(SIGNATURE_LEN)?;
        if !r.0.is_empty() {
            return Err(MessageError::BadBody);
        }
        let unsigned = &inner[..inner.len() - SIGNATURE_LEN];

        let verifying =
            VerifyingKey::from_sec1_bytes(from_bytes).map_err(|_| MessageError::BadSender)?;
        let from = PublicKey::from_sec1(from_bytes).ok_or(MessageError::BadSender)?;
        let signature = Signature::from_slice(signature).map_err(|_| MessageError::BadSignature)?;
        verifying
            .verify(&signed_bytes(unsigned), &signature)
            .map_err(|_| MessageError::BadSignature)?;

        let to = NodeId::from_bytes(to);
        Ok(Message {
            from,
            to,
            id: MessageId(id),
            reply,
            timestamp_ms,
            payload: Payload::decode_body(kind, body)?,
        })
    }
}

fn signed_bytes(unsigned: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 1 + unsigned.len());
    out.extend_from_slice(SIGNATURE_DOMAIN);
    out.push(WIRE_VERSION);
    out.extend_from_slice(unsigned);
    out
}

fn header() -> [u8; HEADER_LEN] {
    [MAGIC[0], MAGIC[1], MAGIC[2], WIRE_VERSION]
}

/// HPKE-seals `plaintext` to `recipient`: header ‖ encapsulated key ‖ ciphertext.
pub fn encrypt(recipient: &PublicKey, plaintext: &[u8]) -> Result<Vec<u8>, MessageError> {
    let total = HEADER_LEN + ENCAPPED_LEN + plaintext.len() + TAG_LEN;
    if total > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLarge(total));
    }
    let point = p256::PublicKey::from_sec1_bytes(&recipient.to_compressed())
        .map_err(|_| MessageError::Encrypt)?
        .to_encoded_point(false);
    let recipient = <Kem as hpke::Kem>::PublicKey::from_bytes(point.as_bytes())
        .map_err(|_| MessageError::Encrypt)?;
    let header = header();
    let (encapped, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
        &OpModeS::Base,
        &recipient,
        HPKE_INFO,
        plaintext,
        &header,
        &mut rand_core::OsRng,
    )
    .map_err(|_| MessageError::Encrypt)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&header);
    out.extend_from_slice(&encapped.to_bytes());
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens what [`encrypt`] sealed. Total: never panics.
pub fn decrypt(keys: &Keys, sealed: &[u8]) -> Result<Vec<u8>, MessageError> {
    if sealed.len() > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLarge(sealed.len()));
    }
    let mut r = Reader(sealed);
    let header = r.take(HEADER_LEN)?;
    if header[..MAGIC.len()] != MAGIC[..] {
        return Err(MessageError::BadMagic);
    }
    if header[MAGIC.len()] != WIRE_VERSION {
        return Err(MessageError::Version(header[MAGIC.len()]));
    }
    let encapped = r.take(ENCAPPED_LEN)?;
    if r.0.len() < TAG_LEN + INNER_FIXED_LEN {
        return Err(MessageError::TooShort);
    }
    let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(encapped)
        .map_err(|_| MessageError::Undecryptable)?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &keys.hpke_secret,
        &encapped,
        HPKE_INFO,
        r.0,
        header,
    )
    .map_err(|_| MessageError::Undecryptable)
}

/// A cursor over untrusted bytes whose reads fail instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.0.len() < n {
            return Err(MessageError::TooShort);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        self.take(N)?.try_into().map_err(|_| MessageError::TooShort)
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
