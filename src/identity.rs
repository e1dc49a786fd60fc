//! The node's identity: a P-256 key pair kept under the home directory (mode 0600), and the
//! short printable node id derived from its public key.
//!
//! Neighbours: [`crate::addr`] carries the public key, [`crate::link`] makes certificates from
//! the secret key and pins peers by their public key.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use sha2::{Digest, Sha256};

/// File name of the key inside the home directory.
pub const KEY_FILE: &str = "identity.pem";

/// Length of a compressed SEC1 P-256 public key.
pub const PUBLIC_KEY_LEN: usize = 33;
/// Length of an ECDSA P-256 signature (r ‖ s).
pub const SIGNATURE_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create home directory {path}: {source}")]
    CreateHome {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read identity key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write identity key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("identity key {path} is not a valid P-256 PKCS#8 key")]
    Invalid { path: PathBuf },
}

/// The node's key pair.
pub struct Identity {
    secret: p256::SecretKey,
}

impl Identity {
    /// Loads the key from `home`, creating the home (0700) and a new key (0600) on first use.
    pub fn load_or_create(home: &Path) -> Result<Self, IdentityError> {
        let path = home.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let secret = p256::SecretKey::from_pkcs8_pem(&pem)
                    .map_err(|_| IdentityError::Invalid { path: path.clone() })?;
                Ok(Self { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(home, &path),
            Err(source) => Err(IdentityError::Read { path, source }),
        }
    }

    fn create(home: &Path, path: &Path) -> Result<Self, IdentityError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(home)
            .map_err(|source| IdentityError::CreateHome {
                path: home.to_path_buf(),
                source,
            })?;
        let Self { secret } = Self::generate();
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| IdentityError::Invalid {
                path: path.to_path_buf(),
            })?;
        let write_err = |source| IdentityError::Write {
            path: path.to_path_buf(),
            source,
        };
        // create_new: two processes starting on a fresh home must not overwrite each other's key.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                file.write_all(pem.as_bytes()).map_err(write_err)?;
                file.sync_all().map_err(write_err)?;
                Ok(Self { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(home),
            Err(e) => Err(write_err(e)),
        }
    }

    /// A fresh key pair kept only in memory (tests, and nodes that need no home).
    pub fn generate() -> Self {
        Self {
            secret: p256::SecretKey::random(&mut rand_core::OsRng),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.secret.public_key())
    }

    pub fn id(&self) -> NodeId {
        self.public_key().id()
    }

    /// Signs `message` with ECDSA P-256 / SHA-256 (64-byte r ‖ s). Callers put a
    /// domain-separation label in `message`, so one signature never counts for another purpose.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        use p256::ecdsa::signature::Signer;
        let signature: p256::ecdsa::Signature =
            p256::ecdsa::SigningKey::from(&self.secret).sign(message);
        signature.to_bytes().into()
    }

    /// The secret key as PKCS#8 DER, for building certificates.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.secret
            .to_pkcs8_der()
            .map(|doc| doc.as_bytes().to_vec())
            .expect("a valid P-256 secret key always encodes as PKCS#8")
    }
}

/// A peer's P-256 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(p256::PublicKey);

impl PublicKey {
    /// Parses a SEC1-encoded point (compressed or not). Returns `None` for anything else.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        p256::PublicKey::from_sec1_bytes(bytes).ok().map(Self)
    }

    /// The compressed SEC1 encoding (33 bytes).
    pub fn to_compressed(&self) -> [u8; PUBLIC_KEY_LEN] {
        let point = self.0.to_encoded_point(true);
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(point.as_bytes());
        out
    }

    pub fn id(&self) -> NodeId {
        let digest = Sha256::digest(self.to_compressed());
        let mut id = [0u8; NODE_ID_LEN];
        id.copy_from_slice(&digest[..NODE_ID_LEN]);
        NodeId(id)
    }

    /// Whether `signature` (64-byte r ‖ s) is this key's ECDSA P-256 / SHA-256 signature of
    /// `message`. Total: malformed signatures are simply not valid.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
            return false;
        };
        p256::ecdsa::VerifyingKey::from(&self.0)
            .verify(message, &signature)
            .is_ok()
    }

    /// A fingerprint that names the whole key: lowercase base32 of its SHA-256 (52 characters).
    /// What users compare when a name's key changes; the node id is only its first 16.
    pub fn fingerprint(&self) -> String {
        crate::base32::encode(&Sha256::digest(self.to_compressed()))
    }

    /// A stable number derived from the key (used for the default listen port).
    pub fn fingerprint_u64(&self) -> u64 {
        let digest = Sha256::digest(self.to_compressed());
        u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

/// Bytes of a node id: the first 80 bits of the SHA-256 of the compressed public key.
pub const NODE_ID_LEN: usize = 10;

/// The short printable id of a node: the first 80 bits of the SHA-256 of its compressed public
/// key, shown as 16 characters of lowercase base32. For display and topics; anything that
/// authorises compares whole keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId([u8; NODE_ID_LEN]);

impl NodeId {
    /// Validates user input (`--allow ID`): 16 characters of the base32 alphabet.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 16 {
            return None;
        }
        let decoded = crate::base32::decode(text).ok()?;
        Some(Self(decoded.try_into().ok()?))
    }

    pub fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::base32::encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_created_once_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let first = Identity::load_or_create(&home).unwrap();
        let second = Identity::load_or_create(&home).unwrap();
        assert_eq!(first.public_key(), second.public_key());
        let mode = std::fs::metadata(home.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn node_id_round_trips_and_rejects_garbage() {
        let id = Identity::generate().id();
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(NodeId::parse(&id.to_string().to_uppercase()), Some(id));
        assert_eq!(NodeId::parse("not-an-id"), None);
        assert_eq!(NodeId::parse("aaaa"), None);
    }

    #[test]
    fn signatures_verify_under_their_key_only() {
        let (alice, bob) = (Identity::generate(), Identity::generate());
        let signature = alice.sign(b"label\0message");
        assert!(alice.public_key().verify(b"label\0message", &signature));
        assert!(!alice.public_key().verify(b"label\0massage", &signature));
        assert!(!bob.public_key().verify(b"label\0message", &signature));
        assert!(!alice
            .public_key()
            .verify(b"label\0message", &signature[..63]));
        assert!(!alice.public_key().verify(b"label\0message", &[0u8; 64]));
        assert_eq!(alice.public_key().fingerprint().len(), 52);
        assert!(alice
            .public_key()
            .fingerprint()
            .starts_with(&alice.id().to_string()));
    }

    #[test]
    fn corrupt_key_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Invalid { .. })
        ));
    }
}
