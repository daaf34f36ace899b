//! Who belongs to a cluster: the statements its admin key signs, and the
//! join tokens that let a new node obtain one.
//!
//! A cluster is named by its key: the [`ClusterId`] is a hash of the
//! cluster's Ed25519 public key, so a node that knows the id can check any
//! key it is shown. The admin key signs two kinds of statement:
//!
//! - a [`NodeCertificate`]: this peer id belongs to the cluster, may hold
//!   these roles' keys, until this time;
//! - a layout (`placement::Layout`, already versioned): these members hold
//!   these partitions.
//!
//! Both travel as a [`Signed`] blob: the framed bytes of the statement and
//! a signature over a purpose string and those bytes, so a signature made
//! for one kind of statement never verifies as another. The signing and
//! checking live in `slurp-crypto`; this module is the vocabulary every
//! crate shares. A replayed statement is harmless by construction: a
//! layout is taken only when its version is newer than the one held, and a
//! certificate only while it is not past its `not_after_ms`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::role::RoleName;
use crate::wire::{Bytes, Framed, kinds};

/// Length of a cluster id in bytes (hex: twice that).
pub const CLUSTER_ID_LEN: usize = 16;

/// What a signature over a certificate is for (part of the signed bytes).
pub const PURPOSE_CERTIFICATE: &str = "slurp node certificate v1";
/// What a signature over a layout is for (part of the signed bytes).
pub const PURPOSE_LAYOUT: &str = "slurp layout v1";
/// What a member's signature over a [`CallerAuthorisation`] is for.
pub const PURPOSE_AUTHORISATION: &str = "slurp caller authorisation v1";

/// The name of a cluster: the first 16 bytes of the blake3 hash of its
/// Ed25519 public key, shown as 32 lowercase hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ClusterId([u8; CLUSTER_ID_LEN]);

impl ClusterId {
    /// The id of a cluster whose public key is `public_key`.
    pub fn of_key(public_key: &[u8; 32]) -> Self {
        let h = blake3::derive_key("slurp cluster id v1", public_key);
        let mut id = [0u8; CLUSTER_ID_LEN];
        id.copy_from_slice(&h[..CLUSTER_ID_LEN]);
        ClusterId(id)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<ClusterId> for String {
    fn from(id: ClusterId) -> String {
        id.to_hex()
    }
}

impl TryFrom<String> for ClusterId {
    type Error = MembershipError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for ClusterId {
    type Err = MembershipError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| MembershipError::BadClusterId(s.to_string()))?;
        let id: [u8; CLUSTER_ID_LEN] = bytes
            .try_into()
            .map_err(|_| MembershipError::BadClusterId(s.to_string()))?;
        Ok(ClusterId(id))
    }
}

/// Problems with membership statements and join tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("{0:?} is not a cluster id (32 hex characters)")]
    BadClusterId(String),
    #[error(
        "not a join token: {0} (a token looks like slurp-join-v1.<cluster>.<issuer>.<id>.<secret>; create one with `slurp cluster invite`)"
    )]
    BadJoinToken(&'static str),
}

/// The admin's statement that a peer belongs to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCertificate {
    pub cluster: ClusterId,
    /// The libp2p peer id (base58) the certificate is for; it is checked
    /// against the peer id the connection authenticated, never taken from
    /// a message.
    pub peer_id: String,
    /// Roles whose keys the node may be granted.
    pub roles: Vec<RoleName>,
    /// When it was signed, milliseconds since the Unix epoch.
    pub issued_ms: u64,
    /// Not valid after, milliseconds since the Unix epoch.
    pub not_after_ms: u64,
}

impl Framed for NodeCertificate {
    const KIND: u16 = kinds::NODE_CERTIFICATE;
    const NAME: &'static str = "node-certificate";
    const VERSION: u16 = 1;
}

impl NodeCertificate {
    /// Whether the certificate is within its validity at `now_ms`.
    pub fn valid_at(&self, now_ms: u64) -> bool {
        self.issued_ms <= now_ms.saturating_add(CLOCK_SKEW_MS) && now_ms <= self.not_after_ms
    }
}

/// A member's statement that it acts for a caller of `role` in one request
/// to `target`: signed with the sender's own node key (its libp2p
/// identity), with the sender's certificate inside, so the target can check
/// that the cluster key allowed the sender that role. A member therefore
/// acts through the others only for roles it was certified for, and a
/// statement is good for one request, one target and a short time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerAuthorisation {
    /// Peer id (base58) of the member acting for the caller.
    pub sender: String,
    /// Peer id (base58) of the member asked.
    pub target: String,
    pub role: RoleName,
    /// blake3 of the framed request with its authorisation left out.
    pub request: Bytes,
    pub issued_ms: u64,
    pub expires_ms: u64,
    /// 16 random bytes; a target refuses a nonce it has seen.
    pub nonce: Bytes,
    /// The sender's certificate.
    pub certificate: Signed,
}

impl Framed for CallerAuthorisation {
    const KIND: u16 = kinds::CALLER_AUTHORISATION;
    const NAME: &'static str = "caller-authorisation";
    const VERSION: u16 = 1;
}

/// What a member's signature over an [`AuditAnchor`] is for.
pub const PURPOSE_AUDIT_HEAD: &str = "slurp audit head v1";

/// A member's statement of the head of its audit log (the last entry's
/// seq and hash), signed with its node key and held by the other members,
/// so that cutting the end of its log is noticed elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    /// Peer id (base58) of the member whose log it is.
    pub node: String,
    pub seq: u64,
    /// The entry's hash, hex.
    pub hash: String,
    pub at_ms: u64,
}

impl Framed for AuditAnchor {
    const KIND: u16 = kinds::AUDIT_ANCHOR;
    const NAME: &'static str = "audit-anchor";
    const VERSION: u16 = 1;
}

/// What a signature over a [`KeyDirectory`] is for.
pub const PURPOSE_KEYS: &str = "slurp role key directory v1";

/// The cluster key's list of the role keys of the cluster: every epoch of
/// every role, public halves only. Writers seal only to keys listed here
/// and nodes take a granted private key only if it is listed, so no member
/// can slip in a key of its own. Versioned like a layout: a node takes a
/// directory only if it is newer than the one it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDirectory {
    pub cluster: ClusterId,
    pub version: u64,
    pub issued_ms: u64,
    pub keys: Vec<DirectoryKey>,
    /// Certificates an admin replaced (`slurp cluster grant`): a node's
    /// certificate issued before its floor here is void everywhere, so a
    /// node whose roles were cut cannot show its older certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<CertificateFloor>,
    /// Role key epochs retired once every member had rewrapped its records
    /// onto newer ones: their keys are no longer listed, and every node
    /// deletes its copy of their private halves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredEpoch>,
}

/// A role key epoch no record depends on any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredEpoch {
    pub role: RoleName,
    pub epoch: u32,
}

/// Certificates of `peer_id` issued before `issued_ms` are void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateFloor {
    pub peer_id: String,
    pub issued_ms: u64,
}

impl KeyDirectory {
    /// The time before which `peer`'s certificates are void, if an admin
    /// replaced one.
    pub fn floor_of(&self, peer: &str) -> Option<u64> {
        self.superseded
            .iter()
            .filter(|f| f.peer_id == peer)
            .map(|f| f.issued_ms)
            .max()
    }
}

/// One public role key of a [`KeyDirectory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryKey {
    pub role: RoleName,
    pub epoch: u32,
    /// The age recipient (`age1...`).
    pub recipient: String,
}

impl Framed for KeyDirectory {
    const KIND: u16 = kinds::KEY_DIRECTORY;
    const NAME: &'static str = "key-directory";
    const VERSION: u16 = 1;
}

/// One role key handed to a granted node, sealed (age) to a key that node
/// made for the request (see `slurp_crypto::grant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedGrant {
    pub role: RoleName,
    pub epoch: u32,
    /// The key's fingerprint, hex.
    pub fingerprint: String,
    /// An age file holding the `AGE-SECRET-KEY-1...` line.
    pub sealed: Bytes,
}

/// How far a peer's clock may run ahead of ours before a statement it
/// signed "in the future" is refused.
pub const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// A statement and the admin key's signature over it: `statement` is the
/// framed bytes of a [`NodeCertificate`] or a layout, `signature` an
/// Ed25519 signature over the purpose string and those bytes (see
/// `slurp_crypto::cluster`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub statement: Bytes,
    pub signature: Bytes,
}

impl Framed for Signed {
    const KIND: u16 = kinds::SIGNED_STATEMENT;
    const NAME: &'static str = "signed-statement";
    const VERSION: u16 = 1;
}

/// A one-time invitation to join a cluster, as an operator passes it to the
/// new node: which cluster, which member to redeem it at, and the secret.
/// The issuer keeps only a hash of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub cluster: ClusterId,
    /// Peer id (base58) of the member that issued it and redeems it.
    pub issuer: String,
    /// The invite's id at the issuer.
    pub id: String,
    /// The secret, 32 random bytes in hex.
    pub secret: String,
}

const JOIN_PREFIX: &str = "slurp-join-v1";

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{JOIN_PREFIX}.{}.{}.{}.{}",
            self.cluster, self.issuer, self.id, self.secret
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("cluster", &self.cluster)
            .field("issuer", &self.issuer)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl FromStr for JoinToken {
    type Err = MembershipError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [prefix, cluster, issuer, id, secret] = parts[..] else {
            return Err(MembershipError::BadJoinToken(
                "it has not five dot-separated parts",
            ));
        };
        if prefix != JOIN_PREFIX {
            return Err(MembershipError::BadJoinToken(
                "it does not start with slurp-join-v1",
            ));
        }
        let cluster = cluster.parse().map_err(|_| {
            MembershipError::BadJoinToken("the cluster id is not 32 hex characters")
        })?;
        let plain = |p: &str| {
            !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        if !plain(issuer) || !plain(id) {
            return Err(MembershipError::BadJoinToken(
                "the issuer or id is malformed",
            ));
        }
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MembershipError::BadJoinToken(
                "the secret is not 64 hex characters",
            ));
        }
        Ok(JoinToken {
            cluster,
            issuer: issuer.to_string(),
            id: id.to_string(),
            secret: secret.to_ascii_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> JoinToken {
        JoinToken {
            cluster: ClusterId::of_key(&[7; 32]),
            issuer: "12D3KooWAbc".into(),
            id: "inv1".into(),
            secret: "ab".repeat(32),
        }
    }

    #[test]
    fn join_tokens_round_trip_and_hide_their_secret() {
        let t = token();
        let s = t.to_string();
        assert_eq!(s.parse::<JoinToken>().unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn malformed_join_tokens_say_what_is_wrong() {
        let good = token().to_string();
        for (bad, why) in [
            ("", "five"),
            ("slurp-join-v2.a.b.c.d", "start"),
            ("a.b.c", "five"),
            (&good.replace("slurp-join-v1", "slurp-join-v9"), "start"),
            (&format!("{good}0"), "secret"),
            (&good.replace("inv1", "in/v1"), "malformed"),
        ] {
            let e = bad.parse::<JoinToken>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn cluster_ids_name_their_key() {
        let a = ClusterId::of_key(&[1; 32]);
        assert_ne!(a, ClusterId::of_key(&[2; 32]));
        assert_eq!(a.to_hex().parse::<ClusterId>().unwrap(), a);
        assert!("xyz".parse::<ClusterId>().is_err());
    }

    #[test]
    fn certificates_are_valid_only_in_their_window() {
        let c = NodeCertificate {
            cluster: ClusterId::of_key(&[1; 32]),
            peer_id: "p".into(),
            roles: vec![],
            issued_ms: 10_000_000,
            not_after_ms: 20_000_000,
        };
        assert!(c.valid_at(15_000_000));
        assert!(!c.valid_at(20_000_001));
        assert!(c.valid_at(10_000_000 - CLOCK_SKEW_MS));
        assert!(!c.valid_at(10_000_000 - CLOCK_SKEW_MS - 1));
        assert_eq!(NodeCertificate::decode(&c.encode().unwrap()).unwrap(), c);
    }

    #[test]
    fn key_directories_name_superseded_certificates_and_read_older_ones() {
        let mut d = KeyDirectory {
            cluster: ClusterId::of_key(&[1; 32]),
            version: 3,
            issued_ms: 5,
            keys: vec![],
            superseded: vec![],
            retired: vec![],
        };
        // A directory without floors encodes as before the field existed.
        #[derive(Serialize)]
        struct Before<'a> {
            cluster: &'a ClusterId,
            version: u64,
            issued_ms: u64,
            keys: &'a [DirectoryKey],
        }
        let before = crate::wire::to_cbor(&Before {
            cluster: &d.cluster,
            version: 3,
            issued_ms: 5,
            keys: &[],
        })
        .unwrap();
        assert_eq!(crate::wire::to_cbor(&d).unwrap(), before);
        assert_eq!(d.floor_of("p"), None);
        d.superseded = vec![
            CertificateFloor {
                peer_id: "p".into(),
                issued_ms: 7,
            },
            CertificateFloor {
                peer_id: "p".into(),
                issued_ms: 9,
            },
            CertificateFloor {
                peer_id: "q".into(),
                issued_ms: 1,
            },
        ];
        assert_eq!(d.floor_of("p"), Some(9));
        assert_eq!(d.floor_of("r"), None);
        assert_eq!(KeyDirectory::decode(&d.encode().unwrap()).unwrap(), d);
    }

    proptest! {
        #[test]
        fn token_parsing_never_panics(s in ".{0,200}") {
            let _ = s.parse::<JoinToken>();
        }
    }
}
