//! The cluster key: an Ed25519 key whose signatures say who belongs.
//!
//! Membership must not follow from being connected: a peer is a member
//! because the cluster's admin key signed a certificate for its peer id, and
//! a layout counts because the same key signed it. Ed25519 because the
//! peers' own identities already are Ed25519 keys (libp2p), signatures are
//! small and fast to check, and `ed25519-dalek` is already in the build.
//!
//! A signature covers a purpose string and the framed bytes of the
//! statement ([`slurp_protocol::membership`]), so a signed certificate can
//! never pass as a signed layout. Verification uses `verify_strict` (no
//! malleable or small-order forms).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use slurp_protocol::{Bytes, ClusterId, Framed, Signed};
use zeroize::Zeroizing;

/// Why a signed statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not 64 bytes")]
    Malformed,
    #[error("the signature does not verify against cluster key {0}")]
    BadSignature(ClusterId),
    #[error("the signed statement does not decode: {0}")]
    Statement(String),
    #[error("{0} is not a cluster public key (32 bytes of a valid Ed25519 point)")]
    BadKey(String),
    #[error("cannot encode the statement: {0}")]
    Encode(String),
}

/// The private cluster key. `Debug` never shows it; the seed it is made
/// from is zeroed on drop.
pub struct ClusterKey {
    signing: SigningKey,
}

impl ClusterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
        Self::from_seed(&seed)
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        ClusterKey {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte seed, for sealing or splitting.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn public(&self) -> ClusterPublic {
        ClusterPublic::from_key(self.signing.verifying_key())
    }

    /// Signs `statement` for `purpose`.
    pub fn sign<T: Framed>(&self, purpose: &str, statement: &T) -> Result<Signed, SignatureError> {
        let bytes = statement
            .encode()
            .map_err(|e| SignatureError::Encode(e.to_string()))?;
        let signature = self.signing.sign(&message(purpose, &bytes));
        Ok(Signed {
            statement: Bytes(bytes),
            signature: Bytes(signature.to_bytes().to_vec()),
        })
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterKey")
            .field("cluster", &self.public().id())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The public cluster key, which every node keeps and checks statements
/// against.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterPublic {
    key: VerifyingKey,
    id: ClusterId,
}

impl ClusterPublic {
    fn from_key(key: VerifyingKey) -> Self {
        ClusterPublic {
            id: ClusterId::of_key(key.as_bytes()),
            key,
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SignatureError::BadKey(hex::encode(bytes)))?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| SignatureError::BadKey(hex::encode(bytes)))?;
        if key.is_weak() {
            return Err(SignatureError::BadKey(hex::encode(bytes)));
        }
        Ok(Self::from_key(key))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The cluster's name.
    pub fn id(&self) -> ClusterId {
        self.id
    }

    /// Checks the signature over `signed` for `purpose` and decodes the
    /// statement (at most `limit` bytes).
    pub fn verify<T: Framed>(
        &self,
        purpose: &str,
        signed: &Signed,
        limit: usize,
    ) -> Result<T, SignatureError> {
        let raw: [u8; 64] = signed.signature.0[..]
            .try_into()
            .map_err(|_| SignatureError::Malformed)?;
        let signature = Signature::from_bytes(&raw);
        self.key
            .verify_strict(&message(purpose, &signed.statement.0), &signature)
            .map_err(|_| SignatureError::BadSignature(self.id))?;
        T::decode_limited(&signed.statement.0, limit)
            .map_err(|e| SignatureError::Statement(e.to_string()))
    }
}

impl fmt::Debug for ClusterPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterPublic({})", self.id)
    }
}

/// What is signed: a length-prefixed purpose, then the statement bytes.
fn message(purpose: &str, statement: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + purpose.len() + statement.len());
    m.extend_from_slice(&(purpose.len() as u64).to_le_bytes());
    m.extend_from_slice(purpose.as_bytes());
    m.extend_from_slice(statement);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurp_protocol::membership::{PURPOSE_CERTIFICATE, PURPOSE_LAYOUT};
    use slurp_protocol::{NodeCertificate, RoleName};

    fn cert(peer: &str) -> NodeCertificate {
        NodeCertificate {
            cluster: ClusterKey::from_seed(&[1; 32]).public().id(),
            peer_id: peer.into(),
            roles: vec![RoleName::new("developer").unwrap()],
            issued_ms: 1,
            not_after_ms: 2,
        }
    }

    #[test]
    fn statements_verify_only_with_their_key_and_purpose() {
        let key = ClusterKey::generate();
        let other = ClusterKey::generate();
        let signed = key.sign(PURPOSE_CERTIFICATE, &cert("a")).unwrap();
        let back: NodeCertificate = key
            .public()
            .verify(PURPOSE_CERTIFICATE, &signed, 1 << 16)
            .unwrap();
        assert_eq!(back, cert("a"));
        assert_eq!(
            other
                .public()
                .verify::<NodeCertificate>(PURPOSE_CERTIFICATE, &signed, 1 << 16),
            Err(SignatureError::BadSignature(other.public().id()))
        );
        // The same bytes signed for another purpose do not verify.
        assert!(
            key.public()
                .verify::<NodeCertificate>(PURPOSE_LAYOUT, &signed, 1 << 16)
                .is_err()
        );
    }

    #[test]
    fn a_changed_statement_or_signature_is_refused() {
        let key = ClusterKey::generate();
        let signed = key.sign(PURPOSE_CERTIFICATE, &cert("a")).unwrap();
        // Swap the statement for another peer's, keep the signature.
        let mut swapped = signed.clone();
        swapped.statement = key.sign(PURPOSE_CERTIFICATE, &cert("b")).unwrap().statement;
        assert!(
            key.public()
                .verify::<NodeCertificate>(PURPOSE_CERTIFICATE, &swapped, 1 << 16)
                .is_err()
        );
        for i in 0..signed.statement.0.len() {
            let mut bad = signed.clone();
            bad.statement.0[i] ^= 1;
            assert!(
                key.public()
                    .verify::<NodeCertificate>(PURPOSE_CERTIFICATE, &bad, 1 << 16)
                    .is_err()
            );
        }
        let mut short = signed.clone();
        short.signature.0.pop();
        assert_eq!(
            key.public()
                .verify::<NodeCertificate>(PURPOSE_CERTIFICATE, &short, 1 << 16),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn keys_round_trip_through_their_bytes() {
        let key = ClusterKey::generate();
        let again = ClusterKey::from_seed(&key.seed());
        assert_eq!(again.public(), key.public());
        let public = ClusterPublic::from_bytes(&key.public().to_bytes()).unwrap();
        assert_eq!(public.id(), key.public().id());
        assert!(ClusterPublic::from_bytes(&[0; 31]).is_err());
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(ClusterPublic::from_bytes(&identity).is_err());
        assert!(!format!("{key:?}").contains(&hex::encode(&key.seed()[..])));
    }
}
