//! Acting for a caller on another member, with proof.
//!
//! A member that forwards an API call, or fans a search out, asks the
//! others to act for the caller's role. Without proof, one compromised
//! member could claim any role and read every record through the others.
//! So each such request carries a [`CallerAuthorisation`]: the sender
//! states the role, the target, a digest of the request, a short validity
//! and a nonce, signs it with its own node key (its libp2p identity, which
//! the connection already authenticated) and encloses its certificate.
//! The target checks that the statement is for it, for this very request,
//! fresh, never seen before, signed by the peer that sent it, and that the
//! cluster key certified that peer for the role. A member certified for
//! `developer` only therefore cannot read `architect` records through the
//! others, and a captured statement is good for nothing else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use slurp_crypto::ClusterPublic;
use slurp_protocol::membership::{CLOCK_SKEW_MS, PURPOSE_AUTHORISATION};
use slurp_protocol::messages::{ClusterRequest, ForwardRequest, SearchRequest};
use slurp_protocol::{Bytes, CallerAuthorisation, Framed, RoleName, Signed};

use super::membership::{MAX_STATEMENT, check_certificate, now_ms};

/// Nonces remembered at most; past it, expired ones are dropped first and
/// then new statements are refused until room frees up (a flood of
/// statements can only come from a certified member).
const MAX_NONCES: usize = 1_000_000;

/// Why a caller authorisation was refused (the `code` goes in the audit
/// log and the error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request carries no caller authorisation")]
    Missing,
    #[error("the authorisation does not decode: {0}")]
    Malformed(String),
    #[error("the authorisation was made by {claimed}, the request came from {sender}")]
    WrongSender { claimed: String, sender: String },
    #[error("the authorisation is for {0}, not this node")]
    WrongTarget(String),
    #[error("the authorisation is for another request or role")]
    WrongRequest,
    #[error("the signature does not verify against the sender's key")]
    BadSignature,
    #[error("the authorisation is not valid now (issued {issued_ms}, expires {expires_ms})")]
    Expired { issued_ms: u64, expires_ms: u64 },
    #[error("the authorisation was seen before: a replay")]
    Replay,
    #[error("the sender's certificate: {0}")]
    Certificate(String),
    #[error("the sender is not certified for role {0}")]
    RoleNotGranted(RoleName),
    #[error("too many authorisations in flight")]
    Busy,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Missing => "authorisation_missing",
            Refusal::Malformed(_) => "authorisation_malformed",
            Refusal::WrongSender { .. } => "authorisation_wrong_sender",
            Refusal::WrongTarget(_) => "authorisation_wrong_target",
            Refusal::WrongRequest => "authorisation_wrong_request",
            Refusal::BadSignature => "authorisation_bad_signature",
            Refusal::Expired { .. } => "authorisation_expired",
            Refusal::Replay => "authorisation_replay",
            Refusal::Certificate(_) => "authorisation_certificate",
            Refusal::RoleNotGranted(_) => "role_not_granted",
            Refusal::Busy => "authorisation_busy",
        }
    }
}

/// Signs this node's authorisations and checks those of others.
pub struct Authoriser {
    keypair: Keypair,
    me: String,
    ttl: Duration,
    /// Nonces seen, with when they expire.
    seen: Mutex<HashMap<[u8; 16], u64>>,
}

/// The digest an authorisation binds: the request framed without its
/// authorisation.
pub fn forward_digest(req: &ForwardRequest) -> [u8; 32] {
    let mut bare = req.clone();
    bare.set_authorisation(None);
    digest(&bare)
}

pub fn search_digest(req: &SearchRequest) -> [u8; 32] {
    let mut bare = req.clone();
    bare.set_authorisation(None);
    digest(&bare)
}

/// The digest of a cluster request that carries an authorisation
/// (`GetShare`), with it left out.
pub fn cluster_digest(req: &ClusterRequest) -> [u8; 32] {
    let mut bare = req.clone();
    if let ClusterRequest::GetShare { authorisation, .. } = &mut bare {
        *authorisation = None;
    }
    digest(&bare)
}

fn digest<T: Framed>(bare: &T) -> [u8; 32] {
    // Encoding our own message types cannot fail; an empty encoding would
    // only make every check of it fail.
    *blake3::hash(&bare.encode().unwrap_or_default()).as_bytes()
}

fn message(statement: &[u8]) -> Vec<u8> {
    message_for(PURPOSE_AUTHORISATION, statement)
}

fn message_for(purpose: &str, statement: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(purpose.len() + 8 + statement.len());
    m.extend_from_slice(&(purpose.len() as u64).to_le_bytes());
    m.extend_from_slice(purpose.as_bytes());
    m.extend_from_slice(statement);
    m
}

/// Checks that `peer`'s node key signed `signed` for `purpose`, and
/// decodes the statement.
pub fn verify_peer_signed<T: Framed>(
    peer: &PeerId,
    purpose: &str,
    signed: &Signed,
) -> Result<T, String> {
    let key = PublicKey::try_decode_protobuf(peer.as_ref().digest())
        .map_err(|_| "the peer id holds no public key".to_string())?;
    if !key.verify(
        &message_for(purpose, &signed.statement.0),
        &signed.signature.0,
    ) {
        return Err("the signature does not verify against the peer's key".into());
    }
    T::decode_limited(&signed.statement.0, MAX_STATEMENT).map_err(|e| e.to_string())
}

impl Authoriser {
    pub fn new(keypair: Keypair, ttl: Duration) -> Self {
        Authoriser {
            me: keypair.public().to_peer_id().to_base58(),
            keypair,
            ttl,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Signs `statement` for `purpose` with this node's key.
    pub fn sign_statement<T: Framed>(
        &self,
        purpose: &str,
        statement: &T,
    ) -> Result<Signed, String> {
        let bytes = statement.encode().map_err(|e| e.to_string())?;
        let signature = self
            .keypair
            .sign(&message_for(purpose, &bytes))
            .map_err(|e| e.to_string())?;
        Ok(Signed {
            statement: Bytes(bytes),
            signature: Bytes(signature),
        })
    }

    /// This node's statement that it acts for `role` in the request with
    /// `digest` to `target`.
    pub fn sign(
        &self,
        target: &str,
        role: &RoleName,
        digest: [u8; 32],
        certificate: Signed,
    ) -> Result<Signed, String> {
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let now = now_ms();
        let statement = CallerAuthorisation {
            sender: self.me.clone(),
            target: target.to_string(),
            role: role.clone(),
            request: Bytes(digest.to_vec()),
            issued_ms: now,
            expires_ms: now.saturating_add(self.ttl.as_millis() as u64),
            nonce: Bytes(nonce.to_vec()),
            certificate,
        }
        .encode()
        .map_err(|e| e.to_string())?;
        let signature = self
            .keypair
            .sign(&message(&statement))
            .map_err(|e| e.to_string())?;
        Ok(Signed {
            statement: Bytes(statement),
            signature: Bytes(signature),
        })
    }

    /// Checks the authorisation `sender` attached to a request with
    /// `digest` in which it acts for `role`.
    pub fn check(
        &self,
        cluster: &ClusterPublic,
        sender: &PeerId,
        role: &RoleName,
        digest: [u8; 32],
        auth: Option<&Signed>,
    ) -> Result<(), Refusal> {
        let auth = auth.ok_or(Refusal::Missing)?;
        let st = CallerAuthorisation::decode_limited(&auth.statement.0, MAX_STATEMENT)
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let sender_id = sender.to_base58();
        if st.sender != sender_id {
            return Err(Refusal::WrongSender {
                claimed: st.sender,
                sender: sender_id,
            });
        }
        // The peer id of an Ed25519 key holds the key itself.
        let key = PublicKey::try_decode_protobuf(sender.as_ref().digest())
            .map_err(|_| Refusal::BadSignature)?;
        if !key.verify(&message(&auth.statement.0), &auth.signature.0) {
            return Err(Refusal::BadSignature);
        }
        if st.target != self.me {
            return Err(Refusal::WrongTarget(st.target));
        }
        if st.role != *role || st.request.0 != digest {
            return Err(Refusal::WrongRequest);
        }
        let now = now_ms();
        let max_life = self.ttl.as_millis() as u64 + CLOCK_SKEW_MS;
        if st.issued_ms > now.saturating_add(CLOCK_SKEW_MS)
            || now > st.expires_ms
            || st.expires_ms.saturating_sub(st.issued_ms) > max_life
        {
            return Err(Refusal::Expired {
                issued_ms: st.issued_ms,
                expires_ms: st.expires_ms,
            });
        }
        let cert = check_certificate(cluster, &st.certificate, &sender_id, now)
            .map_err(Refusal::Certificate)?;
        if !cert.roles.contains(role) {
            return Err(Refusal::RoleNotGranted(role.clone()));
        }
        let nonce: [u8; 16] = st.nonce.0[..]
            .try_into()
            .map_err(|_| Refusal::Malformed("the nonce is not 16 bytes".into()))?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, exp| *exp >= now);
            if seen.len() >= MAX_NONCES {
                return Err(Refusal::Busy);
            }
        }
        if seen.insert(nonce, st.expires_ms).is_some() {
            return Err(Refusal::Replay);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::certify;
    use slurp_crypto::ClusterKey;

    fn role(r: &str) -> RoleName {
        RoleName::new(r).unwrap()
    }

    struct Two {
        key: ClusterKey,
        a: Authoriser,
        b: Authoriser,
        a_peer: PeerId,
    }

    fn two(roles: &[&str]) -> (Two, Signed) {
        let key = ClusterKey::generate();
        let ka = Keypair::generate_ed25519();
        let a_peer = ka.public().to_peer_id();
        let a = Authoriser::new(ka, Duration::from_secs(30));
        let b = Authoriser::new(Keypair::generate_ed25519(), Duration::from_secs(30));
        let cert = certify(
            &key,
            &a_peer.to_base58(),
            roles.iter().map(|r| role(r)).collect(),
            Duration::from_secs(60),
        )
        .unwrap();
        (Two { key, a, b, a_peer }, cert)
    }

    #[test]
    fn a_statement_holds_once_for_its_request_target_role_and_sender() {
        let (t, cert) = two(&["developer"]);
        let public = t.key.public();
        let dev = role("developer");
        let auth = t.a.sign(&t.b.me, &dev, [1; 32], cert.clone()).unwrap();
        t.b.check(&public, &t.a_peer, &dev, [1; 32], Some(&auth))
            .unwrap();
        // Once.
        assert_eq!(
            t.b.check(&public, &t.a_peer, &dev, [1; 32], Some(&auth)),
            Err(Refusal::Replay)
        );
        let fresh = || t.a.sign(&t.b.me, &dev, [1; 32], cert.clone()).unwrap();
        // Another request, another role.
        assert_eq!(
            t.b.check(&public, &t.a_peer, &dev, [2; 32], Some(&fresh())),
            Err(Refusal::WrongRequest)
        );
        assert_eq!(
            t.b.check(&public, &t.a_peer, &role("admin"), [1; 32], Some(&fresh())),
            Err(Refusal::WrongRequest)
        );
        // Relayed by another peer.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert!(matches!(
            t.b.check(&public, &other, &dev, [1; 32], Some(&fresh())),
            Err(Refusal::WrongSender { .. })
        ));
        // Sent to another target.
        let for_a = t.a.sign(&t.a.me, &dev, [1; 32], cert.clone()).unwrap();
        assert!(matches!(
            t.b.check(&public, &t.a_peer, &dev, [1; 32], Some(&for_a)),
            Err(Refusal::WrongTarget(_))
        ));
        // Changed after signing.
        let mut changed = fresh();
        let last = changed.statement.0.len() - 1;
        changed.statement.0[last] ^= 1;
        assert!(
            t.b.check(&public, &t.a_peer, &dev, [1; 32], Some(&changed))
                .is_err()
        );
        assert_eq!(
            t.b.check(&public, &t.a_peer, &dev, [1; 32], None),
            Err(Refusal::Missing)
        );
        // Another cluster's key did not certify it.
        let foreign = ClusterKey::generate().public();
        assert!(matches!(
            t.b.check(&foreign, &t.a_peer, &dev, [1; 32], Some(&fresh())),
            Err(Refusal::Certificate(_))
        ));
    }

    #[test]
    fn a_member_acts_only_for_roles_it_was_certified_for() {
        let (t, cert) = two(&["developer"]);
        let admin = role("admin");
        let auth = t.a.sign(&t.b.me, &admin, [1; 32], cert).unwrap();
        assert_eq!(
            t.b.check(&t.key.public(), &t.a_peer, &admin, [1; 32], Some(&auth)),
            Err(Refusal::RoleNotGranted(admin))
        );
    }

    #[test]
    fn an_expired_statement_is_refused() {
        let (t, cert) = two(&["developer"]);
        let dev = role("developer");
        let short = Authoriser::new(t.a.keypair.clone(), Duration::ZERO);
        let auth = short.sign(&t.b.me, &dev, [1; 32], cert).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            t.b.check(&t.key.public(), &t.a_peer, &dev, [1; 32], Some(&auth)),
            Err(Refusal::Expired { .. })
        ));
    }
}
