//! Fixed keys from deterministic seeds, and signing the fuzzer's bytes with them.

use std::sync::LazyLock;

use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use warpgate::identity::PublicKey;
use warpgate::signal::message::SIGNATURE_DOMAIN;
use warpgate::signal::{Keys, WIRE_VERSION};

/// A P-256 secret key from a one-byte seed: the scalar `[seed; 32]`, valid for any seed 1..=255.
pub fn secret(seed: u8) -> p256::SecretKey {
    p256::SecretKey::from_slice(&[seed; 32]).expect("a small constant scalar is a valid P-256 key")
}

/// Signalling keys of the fixed sender and recipient.
pub static SENDER: LazyLock<Keys> =
    LazyLock::new(|| Keys::from_secret(secret(1)).expect("fixed sender key"));
pub static RECIPIENT: LazyLock<Keys> =
    LazyLock::new(|| Keys::from_secret(secret(2)).expect("fixed recipient key"));

/// A signalling plaintext from `rest`: the sender's key, then `rest` (recipient id, message id,
/// reply inbox, timestamp, kind, body length, body), then the sender's valid signature over it.
pub fn signed_inner(sender: &Keys, rest: &[u8]) -> Vec<u8> {
    let mut unsigned = sender.public_key().to_compressed().to_vec();
    unsigned.extend_from_slice(rest);
    let mut covered = SIGNATURE_DOMAIN.to_vec();
    covered.push(WIRE_VERSION);
    covered.extend_from_slice(&unsigned);
    let signature = sender.sign(&covered);
    unsigned.extend_from_slice(&signature);
    unsigned
}

/// The secret key that signs the names target's statements.
pub static OWNER: LazyLock<p256::SecretKey> = LazyLock::new(|| secret(3));

/// The owner's key as warpgate sees it.
pub fn owner_key() -> PublicKey {
    let point = OWNER.public_key().to_encoded_point(true);
    PublicKey::from_sec1(point.as_bytes()).expect("fixed owner key")
}

/// ECDSA P-256 / SHA-256 by the owner, 64 bytes `r ‖ s` (what [`warpgate::identity::Identity`]
/// signs with).
pub fn owner_sign(message: &[u8]) -> [u8; 64] {
    let signature: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&*OWNER).sign(message);
    signature.to_bytes().into()
}
