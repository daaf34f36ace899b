//! Handing a role key to another node.
//!
//! A node receives the private keys of the roles it was granted from a
//! member that holds them. Each key travels as an age file sealed to an
//! X25519 recipient the receiving node made for that one request and keeps
//! only in memory, so the key is readable by that node alone even if the
//! message is logged or relayed; the receiver then seals it at rest like
//! any role key (see [`crate::keystore`]). The receiver checks that what it
//! opened is the key the sender named (role, epoch, fingerprint), and the
//! caller checks that fingerprint against the cluster's signed key
//! directory, so a member cannot slip in a key of its own.

use std::io::{Read, Write};

use age::secrecy::ExposeSecret;
use age::x25519;
pub use slurp_protocol::membership::SealedGrant;
use slurp_protocol::{Bytes, RoleName};
use zeroize::Zeroizing;

use crate::keys::{Fingerprint, RoleKey};

/// Sealed grants decoded at most, in bytes.
pub const MAX_GRANT: usize = 4096;

/// Why a grant could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("cannot seal the key: {0}")]
    Seal(String),
    #[error("the grant of {role} epoch {epoch} does not open: {reason}")]
    Open {
        role: RoleName,
        epoch: u32,
        reason: String,
    },
    #[error("the grant names key {claimed} of {role} epoch {epoch}, it holds {actual}")]
    Mismatch {
        role: RoleName,
        epoch: u32,
        claimed: String,
        actual: Fingerprint,
    },
}

/// Seals `secret` (a key, a key share) to `recipient` as an age file.
pub fn seal_to(secret: &[u8], recipient: &x25519::Recipient) -> Result<Vec<u8>, GrantError> {
    let seal = |e: &dyn std::fmt::Display| GrantError::Seal(e.to_string());
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .map_err(|e| seal(&e))?;
    let mut out = Vec::with_capacity(secret.len() + 256);
    let mut w = encryptor.wrap_output(&mut out).map_err(|e| seal(&e))?;
    w.write_all(secret).map_err(|e| seal(&e))?;
    w.finish().map_err(|e| seal(&e))?;
    Ok(out)
}

/// Opens what [`seal_to`] made, at most `limit` bytes of it.
pub fn open_sealed(
    sealed: &[u8],
    identity: &x25519::Identity,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, String> {
    if sealed.len() > limit + 1024 {
        return Err(format!("over {limit} bytes"));
    }
    let decryptor = age::Decryptor::new_buffered(sealed).map_err(|e| e.to_string())?;
    if decryptor.is_scrypt() {
        return Err("passphrase-sealed".into());
    }
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new(Vec::new());
    reader
        .by_ref()
        .take(limit as u64)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Seals `key` to `recipient`.
pub fn seal_grant(key: &RoleKey, recipient: &x25519::Recipient) -> Result<SealedGrant, GrantError> {
    let secret = key.to_secret_string();
    let out = seal_to(secret.expose_secret().as_bytes(), recipient)?;
    Ok(SealedGrant {
        role: key.role().clone(),
        epoch: key.epoch(),
        fingerprint: key.fingerprint().to_hex(),
        sealed: Bytes(out),
    })
}

/// Opens a grant with the request key `identity`, checking that it holds
/// the key it names.
pub fn open_grant(grant: &SealedGrant, identity: &x25519::Identity) -> Result<RoleKey, GrantError> {
    let fail = |reason: String| GrantError::Open {
        role: grant.role.clone(),
        epoch: grant.epoch,
        reason,
    };
    let text = open_sealed(&grant.sealed.0, identity, MAX_GRANT).map_err(fail)?;
    let text = std::str::from_utf8(&text).map_err(|_| fail("not UTF-8".into()))?;
    let key = RoleKey::from_secret_str(grant.role.clone(), grant.epoch, text.trim())
        .map_err(|e| fail(e.to_string()))?;
    if key.fingerprint().to_hex() != grant.fingerprint {
        return Err(GrantError::Mismatch {
            role: grant.role.clone(),
            epoch: grant.epoch,
            claimed: grant.fingerprint.clone(),
            actual: key.fingerprint(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(r: &str) -> RoleName {
        RoleName::new(r).unwrap()
    }

    #[test]
    fn a_grant_opens_only_with_its_request_key_and_is_the_key_it_names() {
        let key = RoleKey::generate(role("developer"), 3);
        let request = x25519::Identity::generate();
        let grant = seal_grant(&key, &request.to_public()).unwrap();
        let back = open_grant(&grant, &request).unwrap();
        assert_eq!(back.fingerprint(), key.fingerprint());
        assert_eq!((back.role(), back.epoch()), (&role("developer"), 3));
        assert!(matches!(
            open_grant(&grant, &x25519::Identity::generate()),
            Err(GrantError::Open { .. })
        ));
        // A grant that names another key than it holds.
        let mut lying = grant.clone();
        lying.fingerprint = RoleKey::generate(role("developer"), 3)
            .fingerprint()
            .to_hex();
        assert!(matches!(
            open_grant(&lying, &request),
            Err(GrantError::Mismatch { .. })
        ));
        let mut garbage = grant.clone();
        garbage.sealed.0.truncate(10);
        assert!(open_grant(&garbage, &request).is_err());
        // The secret is nowhere in the sealed form.
        let secret = key.to_secret_string();
        let s = secret.expose_secret().as_bytes();
        assert!(!grant.sealed.0.windows(s.len()).any(|w| w == s));
    }
}
