//! The node's identity: a P-256 key pair kept under the home directory (mode 0600), and the
//! short printable node id derived from its public key.
//!
//! Like ssh, a key file that other users can open at all, a home directory they can write to
//! (and so replace the key in), or either belonging to someone else, is refused. A new key is written to a temporary file beside it, synced,
//! and linked into place: the key file is either absent or whole, and of two processes
//! starting on a fresh home, one key wins and both use it.
//!
//! Neighbours: [`crate::addr`] carries the public key, [`crate::link`] makes certificates from
//! the secret key and pins peers by their public key.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
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
    #[error(
        "{what} {path} is open to other users (mode {mode:03o}); fix it with: chmod {fix} {path}"
    )]
    Exposed {
        what: &'static str,
        path: PathBuf,
        mode: u32,
        fix: &'static str,
    },
    #[error("{what} {path} belongs to another user (uid {uid}), not to this one")]
    NotOwned {
        what: &'static str,
        path: PathBuf,
        uid: u32,
    },
}

/// The modes a new home and a new key get.
const HOME_MODE: u32 = 0o700;
const KEY_MODE: u32 = 0o600;

/// What the home's existing mode must not allow: writing by group or others (they could
/// replace the key). Reading is allowed, as ssh allows it for ~/.ssh: the key is private by
/// its own mode, and homes made by tools (tempfile's directories are 0755) stay usable.
const HOME_FORBIDDEN: (u32, &str) = (0o022, "go-w");
/// What the key's mode must not allow: anything by group or others, as ssh demands of a
/// private key.
const KEY_FORBIDDEN: (u32, &str) = (0o077, "600");

/// Refuses `meta` (of `path`, a `what`) if it belongs to another user or its mode has any of
/// the `forbidden` bits; the error suggests the `chmod` that fixes it.
fn check_private(
    meta: &std::fs::Metadata,
    what: &'static str,
    path: &Path,
    (forbidden, fix): (u32, &'static str),
) -> Result<(), IdentityError> {
    let uid = meta.uid();
    if uid != rustix::process::geteuid().as_raw() {
        return Err(IdentityError::NotOwned {
            what,
            path: path.to_path_buf(),
            uid,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & forbidden != 0 {
        return Err(IdentityError::Exposed {
            what,
            path: path.to_path_buf(),
            mode,
            fix,
        });
    }
    Ok(())
}

/// The node's key pair.
pub struct Identity {
    secret: p256::SecretKey,
}

impl Identity {
    /// Loads the key from `home`, creating the home (0700) and a new key (0600) on first use.
    /// A home or key that is not private to this user is refused.
    pub fn load_or_create(home: &Path) -> Result<Self, IdentityError> {
        match std::fs::metadata(home) {
            Ok(meta) => check_private(&meta, "home directory", home, HOME_FORBIDDEN)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_home(home)?,
            Err(source) => {
                return Err(IdentityError::Read {
                    path: home.to_path_buf(),
                    source,
                })
            }
        }
        let path = home.join(KEY_FILE);
        match Self::load(&path) {
            Err(IdentityError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Self::create(home, &path, |file, pem| file.write_all(pem))
            }
            loaded => loaded,
        }
    }

    fn load(path: &Path) -> Result<Self, IdentityError> {
        let read_err = |source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        check_private(&meta, "identity key", path, KEY_FORBIDDEN)?;
        let mut pem = String::new();
        file.read_to_string(&mut pem).map_err(read_err)?;
        let secret = p256::SecretKey::from_pkcs8_pem(&pem).map_err(|_| IdentityError::Invalid {
            path: path.to_path_buf(),
        })?;
        Ok(Self { secret })
    }

    /// Makes a new key and puts it at `path` whole: written by `write` to a temporary file in
    /// `home`, synced, then hard-linked to `path`, which fails if the file exists. If another
    /// process got there first, its key is the one.
    fn create(
        home: &Path,
        path: &Path,
        write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
    ) -> Result<Self, IdentityError> {
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
        let temp = home.join(format!(".{KEY_FILE}.{:016x}.tmp", rand_u64()));
        let linked = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(KEY_MODE)
                .open(&temp)?;
            write(&mut file, pem.as_bytes())?;
            file.sync_all()?;
            std::fs::hard_link(&temp, path)
        })();
        // The temporary name goes whatever happened; the key, if linked, stays.
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                // The new name must survive a crash too.
                std::fs::File::open(home)
                    .and_then(|dir| dir.sync_all())
                    .map_err(write_err)?;
                Ok(Self { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
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

fn create_home(home: &Path) -> Result<(), IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(HOME_MODE)
        .create(home)
        .map_err(|source| IdentityError::CreateHome {
            path: home.to_path_buf(),
            source,
        })
}

fn rand_u64() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64()
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
/// key, shown as 16 characters of lowercase base32. For display (and, sealed, the recipient
/// field of signalling messages); never in signalling topics, and anything that authorises
/// compares whole keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId([u8; NODE_ID_LEN]);

/// A peer a listener lets in (`--allow`, or the one peer of a punching kit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// The whole key (given as an address, a pinned name, or to a kit by the rendezvous).
    Key(PublicKey),
    /// The key's SHA-256 fingerprint, as `name list` shows it: as strong as the whole key.
    Fingerprint(String),
    /// Only the 80-bit node id: shorter than the key, so weaker (the CLI says so).
    Id(NodeId),
}

impl Allowed {
    pub fn admits(&self, key: &PublicKey) -> bool {
        match self {
            Allowed::Key(allowed) => allowed == key,
            Allowed::Fingerprint(fingerprint) => key.fingerprint() == *fingerprint,
            Allowed::Id(id) => key.id() == *id,
        }
    }
}

/// Whether `allowed` (no list: everyone) lets `key` in.
pub fn admitted(allowed: Option<&[Allowed]>, key: &PublicKey) -> bool {
    allowed.map_or(true, |list| list.iter().any(|a| a.admits(key)))
}

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
    fn processes_racing_on_a_fresh_home_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let keys: Vec<_> = (0..8)
            .map(|_| {
                let home = home.clone();
                std::thread::spawn(move || Identity::load_or_create(&home).unwrap().public_key())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]));
        // Nothing but the key is left behind.
        let names: Vec<_> = std::fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [KEY_FILE]);
    }

    #[test]
    fn a_key_write_cut_short_leaves_no_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        // The disk fills up half-way through the key.
        let failed = Identity::create(dir.path(), &path, |file, pem| {
            file.write_all(&pem[..pem.len() / 2])?;
            Err(std::io::Error::other("no space left on device"))
        });
        assert!(matches!(failed, Err(IdentityError::Write { .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // The next start makes a whole key.
        let identity = Identity::load_or_create(dir.path()).unwrap();
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(identity.public_key(), again.public_key());
    }

    #[test]
    fn a_key_others_can_open_or_a_home_they_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        Identity::load_or_create(&home).unwrap();
        let key = home.join(KEY_FILE);
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        chmod(&key, 0o644);
        let refused = Identity::load_or_create(&home).err().expect("refused");
        assert_eq!(
            refused.to_string(),
            format!(
                "identity key {} is open to other users (mode 644); fix it with: chmod 600 {}",
                key.display(),
                key.display()
            )
        );
        chmod(&key, 0o640);
        assert!(Identity::load_or_create(&home).is_err());
        chmod(&key, 0o600);
        // Others could replace the key in a home they can write to.
        chmod(&home, 0o775);
        let refused = Identity::load_or_create(&home).err().expect("refused");
        let fix = format!("chmod go-w {}", home.display());
        assert!(refused.to_string().ends_with(&fix), "{refused}");
        // A home others can only read is fine: the key in it is private by itself.
        chmod(&home, 0o755);
        assert!(Identity::load_or_create(&home).is_ok());
    }

    #[test]
    fn corrupt_key_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join(KEY_FILE))
            .and_then(|mut f| f.write_all(b"garbage"))
            .unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path()),
            Err(IdentityError::Invalid { .. })
        ));
    }

    #[test]
    fn allowed_admits_by_key_fingerprint_or_id() {
        let (a, b) = (
            Identity::generate().public_key(),
            Identity::generate().public_key(),
        );
        for allowed in [
            Allowed::Key(a),
            Allowed::Fingerprint(a.fingerprint()),
            Allowed::Id(a.id()),
        ] {
            assert!(allowed.admits(&a), "{allowed:?}");
            assert!(!allowed.admits(&b), "{allowed:?}");
        }
        assert!(admitted(None, &b));
        assert!(!admitted(Some(&[Allowed::Key(a)]), &b));
        assert!(admitted(Some(&[Allowed::Key(a), Allowed::Key(b)]), &b));
    }
}
