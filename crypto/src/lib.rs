//! Cryptography of slurp: who can read a context, and proof of who did.
//!
//! - [`keys`]: role key pairs (age X25519 identities) per role and epoch,
//!   their fingerprints, and the [`Keyring`] a node holds.
//! - [`envelope`]: a record sealed once to every role of its reader closure,
//!   with a clear header that lets a reader open it with one X25519
//!   operation and lets rotation find it without opening it.
//! - [`grant`]: a role key sealed to one request of another node.
//! - [`keystore`]: role identities on disk, only ever sealed (to a node key
//!   or a passphrase), written atomically with mode 0600.
//! - [`shamir`]: splitting a key into verified threshold shares for custody.
//! - [`cluster`]: the Ed25519 cluster key that signs membership
//!   certificates and layouts.
//! - [`audit`]: an append-only, hash-chained log of who did what.
//!
//! Each concern has its own error enum; [`CryptoError`] gathers them for
//! callers that only report.

pub mod audit;
pub mod cluster;
pub mod envelope;
mod fsutil;
pub mod grant;
pub mod keys;
pub mod keystore;
pub mod shamir;

pub use audit::{
    AuditAction, AuditConfig, AuditEntry, AuditError, AuditFilter, AuditHead, AuditIter, AuditLog,
    AuditRecord, Decision, EntryHash, TailRepair, VerifyReport, verify_file,
};
pub use cluster::{ClusterKey, ClusterPublic, SignatureError};
pub use envelope::{
    Envelope, EnvelopeConfig, EnvelopeError, EnvelopeHeader, StanzaRef, open, open_age_file,
    open_bytes, peek_header, rewrap, seal,
};
pub use grant::{GrantError, SealedGrant, open_grant, open_sealed, seal_grant, seal_to};
pub use keys::{Fingerprint, KeyError, Keyring, PublicRoleKey, RoleKey};
pub use keystore::{
    Keystore, KeystoreConfig, KeystoreError, NodeKey, SealedKeyInfo, SealedWith, Unlock,
};
pub use shamir::{
    KeyShare, Recovery, ShareError, recover, recover_identity, recover_verbose, split,
    split_identity,
};

/// Re-exported so callers can hold passphrases and secret strings without
/// depending on `secrecy` themselves.
pub use age::secrecy::{ExposeSecret, SecretString};
/// Re-exported for the one-request keys grants are sealed to.
pub use age::x25519;
/// Plaintext returned by `open` is wrapped in this and zeroed on drop.
pub use zeroize::Zeroizing;

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}
