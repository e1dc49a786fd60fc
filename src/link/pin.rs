//! Key pinning: certificates made from the node's P-256 key, and rustls verifiers that accept a
//! peer by its key alone: the connector pins the key from the address; the listener takes any
//! key, or only those of its `--allow` list. TLS 1.3 only, ring provider.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{Allowed, Identity, NodeId, PublicKey};

/// A certificate and key made from the node identity.
pub struct Credentials {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Credentials {
    pub fn new(identity: &Identity) -> Result<Self, rcgen::Error> {
        let der = identity.pkcs8_der();
        let key_pair = rcgen::KeyPair::try_from(der.as_slice())?;
        let params = rcgen::CertificateParams::new(vec![crate::TLS_SERVER_NAME.to_string()])?;
        let cert = params.self_signed(&key_pair)?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(der),
        })
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// The P-256 key a certificate carries, if it is a well-formed certificate with one.
pub fn key_of_cert(cert: &CertificateDer<'_>) -> Option<PublicKey> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    PublicKey::from_sec1(&parsed.public_key().subject_public_key.data)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where a client config records the key a server presented instead of the pinned one.
pub type MismatchSlot = Arc<Mutex<Option<KeyMismatch>>>;

/// The peer presented a key other than the pinned one.
#[derive(Debug, Clone)]
pub struct KeyMismatch {
    pub expected: NodeId,
    pub presented: Option<NodeId>,
}

impl fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.presented {
            Some(p) => write!(f, "peer is {p}, not {} as the address says", self.expected),
            None => write!(
                f,
                "peer presented no valid P-256 key (expected {})",
                self.expected
            ),
        }
    }
}

impl std::error::Error for KeyMismatch {}

/// Client side: the server must present exactly `expected`. A mismatch is also written to
/// `mismatch` so the caller can report it precisely whatever transport wrapped the TLS error.
#[derive(Debug)]
struct PinnedServer {
    expected: PublicKey,
    mismatch: MismatchSlot,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = key_of_cert(end_entity);
        if presented == Some(self.expected) {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = KeyMismatch {
            expected: self.expected.id(),
            presented: presented.map(|k| k.id()),
        };
        if let Ok(mut slot) = self.mismatch.lock() {
            *slot = Some(mismatch.clone());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server side: every client must present a P-256 key; with an allow list, one of those.
#[derive(Debug)]
struct PeerClients {
    allowed: Option<Vec<Allowed>>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PeerClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = key_of_cert(end_entity).ok_or(rustls::Error::InvalidCertificate(
            CertificateError::BadEncoding,
        ))?;
        match &self.allowed {
            Some(allowed) if !crate::identity::admitted(Some(allowed), &key) => {
                tracing::info!(peer = %key.id(), "refused a peer that is not in the --allow list");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ClientCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that pins `expected`; mismatches are recorded in the returned slot.
pub fn client_config(
    creds: &Credentials,
    expected: PublicKey,
) -> Result<(rustls::ClientConfig, MismatchSlot), rustls::Error> {
    let provider = provider();
    let mismatch = Arc::new(Mutex::new(None));
    let verifier = PinnedServer {
        expected,
        mismatch: mismatch.clone(),
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(creds.chain(), creds.key())?;
    config.alpn_protocols = vec![crate::ALPN.to_vec()];
    Ok((config, mismatch))
}

/// A server config that requires a client key, restricted to `allowed` when given.
pub fn server_config(
    creds: &Credentials,
    allowed: Option<Vec<Allowed>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = provider();
    let verifier = PeerClients {
        allowed,
        provider: provider.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(creds.chain(), creds.key())?;
    config.alpn_protocols = vec![crate::ALPN.to_vec()];
    Ok(config)
}

/// The peer key of an established rustls session.
pub fn peer_key(certs: Option<&[CertificateDer<'_>]>) -> Option<PublicKey> {
    certs.and_then(|c| c.first()).and_then(key_of_cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_identity_key() {
        let identity = Identity::generate();
        let creds = Credentials::new(&identity).unwrap();
        assert_eq!(key_of_cert(&creds.cert), Some(identity.public_key()));
        assert_eq!(key_of_cert(&CertificateDer::from(vec![0u8; 10])), None);
    }
}
