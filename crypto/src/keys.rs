//! Role keys: who can open what.
//!
//! Every role has a sequence of key pairs, one per *epoch*; rotating a role's
//! key starts a new epoch and leaves the old private keys able to open what
//! was sealed to them. A key pair is an age X25519 identity. Writers only
//! need the public half ([`PublicRoleKey`]) of the current epoch of each
//! role in a record's reader closure; readers need a private [`RoleKey`].
//!
//! Keys are named by a [`Fingerprint`], a hash of the public recipient
//! string. Envelope headers and keystore files carry fingerprints in clear so
//! the right key can be found without trying every key, and so a loaded key
//! can be checked against what the file claims it is.
//!
//! A [`Keyring`] is what one node holds: its private role keys, indexed by
//! fingerprint and by role, plus the public keys of every role (a developer's
//! node must seal to the admin role without holding the admin's private key).

use std::collections::{BTreeMap, btree_map};
use std::fmt;
use std::str::FromStr;

use age::secrecy::SecretString;
use age::x25519;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use slurp_protocol::RoleName;

/// Length of a fingerprint in bytes: the first 16 bytes of a BLAKE3 hash.
pub const FINGERPRINT_LEN: usize = 16;

/// Problems with keys and keyrings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an age X25519 identity (expected AGE-SECRET-KEY-1...): {0}")]
    InvalidIdentity(&'static str),
    #[error("not an age X25519 recipient (expected age1...): {reason} (in {input:?})")]
    InvalidRecipient { input: String, reason: &'static str },
    #[error("invalid fingerprint {0:?}: expected {len} hex characters", len = FINGERPRINT_LEN * 2)]
    InvalidFingerprint(String),
    #[error(
        "fingerprint {claimed} does not match recipient {recipient} (its fingerprint is {actual})"
    )]
    FingerprintMismatch {
        recipient: String,
        claimed: Fingerprint,
        actual: Fingerprint,
    },
    #[error(
        "conflicting keys for {role} epoch {epoch}: {existing} is already known, refusing {offered}"
    )]
    Conflict {
        role: RoleName,
        epoch: u32,
        existing: Fingerprint,
        offered: Fingerprint,
    },
    #[error("no public key is known for role {0}")]
    UnknownRole(RoleName),
}

/// The name of a key: the first [`FINGERPRINT_LEN`] bytes of the BLAKE3 hash
/// of its recipient string (`age1...`). Shown as 32 lowercase hex characters.
///
/// A fingerprint names a key; it does not authenticate one. Whoever loads a
/// key recomputes the fingerprint from the key itself and compares.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The fingerprint of a recipient.
    pub fn of_recipient(recipient: &x25519::Recipient) -> Self {
        Self::of_recipient_str(&recipient.to_string())
    }

    /// The fingerprint of a recipient string, exactly as written (`age1...`,
    /// lowercase as age prints it).
    pub fn of_recipient_str(recipient: &str) -> Self {
        let hash = blake3::hash(recipient.as_bytes());
        let mut fp = [0u8; FINGERPRINT_LEN];
        fp.copy_from_slice(&hash.as_bytes()[..FINGERPRINT_LEN]);
        Fingerprint(fp)
    }

    /// Wraps raw fingerprint bytes (as read from a header).
    pub fn from_bytes(bytes: [u8; FINGERPRINT_LEN]) -> Self {
        Fingerprint(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }

    /// The 32-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl FromStr for Fingerprint {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut fp = [0u8; FINGERPRINT_LEN];
        hex::decode_to_slice(s, &mut fp)
            .map_err(|_| KeyError::InvalidFingerprint(s.chars().take(80).collect()))?;
        Ok(Fingerprint(fp))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        let fp: [u8; FINGERPRINT_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"a 16-byte fingerprint"))?;
        Ok(Fingerprint(fp))
    }
}

/// Parses an `age1...` recipient string.
pub(crate) fn parse_recipient(s: &str) -> Result<x25519::Recipient, KeyError> {
    x25519::Recipient::from_str(s).map_err(|reason| KeyError::InvalidRecipient {
        input: s.chars().take(100).collect(),
        reason,
    })
}

/// Parses an `AGE-SECRET-KEY-1...` identity string.
pub(crate) fn parse_identity(s: &str) -> Result<x25519::Identity, KeyError> {
    x25519::Identity::from_str(s.trim()).map_err(KeyError::InvalidIdentity)
}

/// The public half of a role key: what a writer seals to.
///
/// Serialized as `{role, epoch, recipient, fingerprint}`; deserializing
/// recomputes the fingerprint from the recipient and refuses a mismatch.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicRoleKey {
    role: RoleName,
    epoch: u32,
    recipient: x25519::Recipient,
    fingerprint: Fingerprint,
}

impl PublicRoleKey {
    /// Builds the public key of `role` at `epoch` from a recipient.
    pub fn new(role: RoleName, epoch: u32, recipient: x25519::Recipient) -> Self {
        let fingerprint = Fingerprint::of_recipient(&recipient);
        PublicRoleKey {
            role,
            epoch,
            recipient,
            fingerprint,
        }
    }

    /// Parses the recipient string (`age1...`).
    pub fn parse(role: RoleName, epoch: u32, recipient: &str) -> Result<Self, KeyError> {
        Ok(Self::new(role, epoch, parse_recipient(recipient)?))
    }

    pub fn role(&self) -> &RoleName {
        &self.role
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn recipient(&self) -> &x25519::Recipient {
        &self.recipient
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

impl fmt::Debug for PublicRoleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicRoleKey")
            .field("role", &self.role.as_str())
            .field("epoch", &self.epoch)
            .field("recipient", &self.recipient.to_string())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct PublicRoleKeyRepr {
    role: RoleName,
    epoch: u32,
    recipient: String,
    fingerprint: Fingerprint,
}

impl Serialize for PublicRoleKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PublicRoleKeyRepr {
            role: self.role.clone(),
            epoch: self.epoch,
            recipient: self.recipient.to_string(),
            fingerprint: self.fingerprint,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for PublicRoleKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = PublicRoleKeyRepr::deserialize(d)?;
        let key = PublicRoleKey::parse(repr.role, repr.epoch, &repr.recipient)
            .map_err(serde::de::Error::custom)?;
        if key.fingerprint != repr.fingerprint {
            return Err(serde::de::Error::custom(KeyError::FingerprintMismatch {
                recipient: repr.recipient,
                claimed: repr.fingerprint,
                actual: key.fingerprint,
            }));
        }
        Ok(key)
    }
}

/// A private role key: the age identity of one role at one epoch.
///
/// `Debug` shows the role, epoch and fingerprint, never the secret. The
/// secret is zeroed when the key is dropped.
#[derive(Clone)]
pub struct RoleKey {
    identity: x25519::Identity,
    public: PublicRoleKey,
}

impl RoleKey {
    /// Generates a fresh key for `role` at `epoch` from the OS random source.
    pub fn generate(role: RoleName, epoch: u32) -> Self {
        Self::from_identity(role, epoch, x25519::Identity::generate())
    }

    /// Wraps an existing identity.
    pub fn from_identity(role: RoleName, epoch: u32, identity: x25519::Identity) -> Self {
        let public = PublicRoleKey::new(role, epoch, identity.to_public());
        RoleKey { identity, public }
    }

    /// Parses an `AGE-SECRET-KEY-1...` string.
    pub fn from_secret_str(role: RoleName, epoch: u32, secret: &str) -> Result<Self, KeyError> {
        Ok(Self::from_identity(role, epoch, parse_identity(secret)?))
    }

    pub fn role(&self) -> &RoleName {
        self.public.role()
    }

    pub fn epoch(&self) -> u32 {
        self.public.epoch()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint()
    }

    /// The public half, for writers.
    pub fn public(&self) -> &PublicRoleKey {
        &self.public
    }

    /// The age identity, for decryption.
    pub fn identity(&self) -> &x25519::Identity {
        &self.identity
    }

    /// The `AGE-SECRET-KEY-1...` form, for sealing into a keystore or
    /// splitting into shares. Zeroed on drop.
    pub fn to_secret_string(&self) -> SecretString {
        self.identity.to_string()
    }
}

impl fmt::Debug for RoleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleKey")
            .field("role", &self.role().as_str())
            .field("epoch", &self.epoch())
            .field("fingerprint", &self.fingerprint())
            .field("identity", &"<redacted>")
            .finish()
    }
}

/// The keys one node holds.
///
/// Private keys are indexed by fingerprint (to open an envelope whose header
/// names the key) and by role (the *current* key of a role is the one with
/// the highest epoch). Public keys are known for every role the node may
/// seal to, held or not; adding a private key also adds its public half.
#[derive(Default, Clone)]
pub struct Keyring {
    private: BTreeMap<Fingerprint, RoleKey>,
    /// role → epoch → fingerprint of a held private key.
    private_by_role: BTreeMap<RoleName, BTreeMap<u32, Fingerprint>>,
    /// role → epoch → public key.
    public: BTreeMap<RoleName, BTreeMap<u32, PublicRoleKey>>,
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a private key (and its public half). Adding the same key twice
    /// is a no-op; a different key for a role and epoch already known is a
    /// [`KeyError::Conflict`].
    pub fn insert(&mut self, key: RoleKey) -> Result<(), KeyError> {
        self.add_public(key.public().clone())?;
        let fp = key.fingerprint();
        self.private_by_role
            .entry(key.role().clone())
            .or_default()
            .insert(key.epoch(), fp);
        self.private.insert(fp, key);
        Ok(())
    }

    /// Adds the public key of a role this node may seal to. Adding the same
    /// key twice is a no-op; a different key for a known role and epoch is a
    /// [`KeyError::Conflict`].
    pub fn add_public(&mut self, key: PublicRoleKey) -> Result<(), KeyError> {
        let epochs = self.public.entry(key.role().clone()).or_default();
        match epochs.entry(key.epoch()) {
            btree_map::Entry::Occupied(e) => {
                if e.get().fingerprint() != key.fingerprint() {
                    return Err(KeyError::Conflict {
                        role: key.role().clone(),
                        epoch: key.epoch(),
                        existing: e.get().fingerprint(),
                        offered: key.fingerprint(),
                    });
                }
            }
            btree_map::Entry::Vacant(e) => {
                e.insert(key);
            }
        }
        Ok(())
    }

    /// The private key with this fingerprint, if held.
    pub fn get(&self, fingerprint: &Fingerprint) -> Option<&RoleKey> {
        self.private.get(fingerprint)
    }

    /// The held private key of `role` with the highest epoch.
    pub fn current(&self, role: &RoleName) -> Option<&RoleKey> {
        let (_, fp) = self.private_by_role.get(role)?.last_key_value()?;
        self.private.get(fp)
    }

    /// The held private key of `role` at `epoch`.
    pub fn private_at(&self, role: &RoleName, epoch: u32) -> Option<&RoleKey> {
        let fp = self.private_by_role.get(role)?.get(&epoch)?;
        self.private.get(fp)
    }

    /// The known public key of `role` with the highest epoch: the one new
    /// records are sealed to.
    pub fn current_public(&self, role: &RoleName) -> Option<&PublicRoleKey> {
        self.public.get(role)?.last_key_value().map(|(_, k)| k)
    }

    /// The current public keys of `roles`, in the order given. Fails with
    /// [`KeyError::UnknownRole`] naming the first role without one.
    pub fn recipients_for(&self, roles: &[RoleName]) -> Result<Vec<PublicRoleKey>, KeyError> {
        roles
            .iter()
            .map(|r| {
                self.current_public(r)
                    .cloned()
                    .ok_or_else(|| KeyError::UnknownRole(r.clone()))
            })
            .collect()
    }

    /// Every held private key, ordered by fingerprint.
    pub fn keys(&self) -> impl Iterator<Item = &RoleKey> {
        self.private.values()
    }

    /// Every known public key, ordered by role then epoch.
    pub fn public_keys(&self) -> impl Iterator<Item = &PublicRoleKey> {
        self.public.values().flat_map(|e| e.values())
    }

    /// Roles of which at least one private key is held.
    pub fn held_roles(&self) -> impl Iterator<Item = &RoleName> {
        self.private_by_role.keys()
    }

    /// Number of held private keys.
    pub fn len(&self) -> usize {
        self.private.len()
    }

    pub fn is_empty(&self) -> bool {
        self.private.is_empty()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("private", &self.private.values().collect::<Vec<_>>())
            .field("public", &self.public_keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn role(s: &str) -> RoleName {
        RoleName::new(s).unwrap()
    }

    #[test]
    fn fingerprint_is_blake3_prefix_of_recipient_string() {
        let key = RoleKey::generate(role("developer"), 1);
        let recipient = key.public().recipient().to_string();
        assert!(recipient.starts_with("age1"));
        let full = blake3::hash(recipient.as_bytes());
        assert_eq!(key.fingerprint().as_bytes()[..], full.as_bytes()[..16]);
        assert_eq!(key.fingerprint().to_hex().len(), 32);
        let parsed: Fingerprint = key.fingerprint().to_hex().parse().unwrap();
        assert_eq!(parsed, key.fingerprint());
        assert!("abc".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = RoleKey::generate(role("admin"), 3);
        let secret = key.to_secret_string().expose_secret().to_string();
        let shown = format!("{key:?} {:?}", {
            let mut ring = Keyring::new();
            ring.insert(key.clone()).unwrap();
            ring
        });
        assert!(!shown.contains(&secret));
        assert!(!shown.contains("AGE-SECRET-KEY"));
        assert!(shown.contains("admin"));
        assert!(shown.contains(&key.fingerprint().to_hex()));
    }

    #[test]
    fn secret_string_round_trips() {
        let key = RoleKey::generate(role("admin"), 3);
        let again =
            RoleKey::from_secret_str(role("admin"), 3, key.to_secret_string().expose_secret())
                .unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert!(matches!(
            RoleKey::from_secret_str(role("admin"), 3, "AGE-SECRET-KEY-1XYZ"),
            Err(KeyError::InvalidIdentity(_))
        ));
    }

    #[test]
    fn keyring_current_is_highest_epoch() {
        let mut ring = Keyring::new();
        let dev1 = RoleKey::generate(role("developer"), 1);
        let dev2 = RoleKey::generate(role("developer"), 2);
        ring.insert(dev2.clone()).unwrap();
        ring.insert(dev1.clone()).unwrap();
        assert_eq!(
            ring.current(&role("developer")).unwrap().fingerprint(),
            dev2.fingerprint()
        );
        assert_eq!(
            ring.private_at(&role("developer"), 1)
                .unwrap()
                .fingerprint(),
            dev1.fingerprint()
        );
        assert_eq!(
            ring.get(&dev1.fingerprint()).unwrap().epoch(),
            1,
            "old epochs stay usable"
        );
        // A newer public key that we do not hold becomes the sealing target.
        let dev3 = RoleKey::generate(role("developer"), 3);
        ring.add_public(dev3.public().clone()).unwrap();
        assert_eq!(ring.current_public(&role("developer")).unwrap().epoch(), 3);
        assert_eq!(ring.current(&role("developer")).unwrap().epoch(), 2);
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn keyring_seals_to_roles_it_cannot_open() {
        let mut ring = Keyring::new();
        ring.insert(RoleKey::generate(role("developer"), 1))
            .unwrap();
        let admin = RoleKey::generate(role("admin"), 1);
        ring.add_public(admin.public().clone()).unwrap();
        let rcpts = ring
            .recipients_for(&[role("admin"), role("developer")])
            .unwrap();
        assert_eq!(rcpts[0].fingerprint(), admin.fingerprint());
        assert_eq!(rcpts[1].role(), &role("developer"));
        assert!(ring.current(&role("admin")).is_none());
        assert_eq!(
            ring.recipients_for(&[role("observer")]),
            Err(KeyError::UnknownRole(role("observer")))
        );
    }

    #[test]
    fn conflicting_keys_are_refused() {
        let mut ring = Keyring::new();
        let a = RoleKey::generate(role("developer"), 1);
        let b = RoleKey::generate(role("developer"), 1);
        ring.insert(a.clone()).unwrap();
        ring.insert(a.clone()).unwrap();
        assert!(matches!(
            ring.insert(b),
            Err(KeyError::Conflict { epoch: 1, .. })
        ));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn public_key_serde_checks_fingerprint() {
        let key = RoleKey::generate(role("observer"), 7);
        let bytes = slurp_protocol::wire::to_cbor(key.public()).unwrap();
        let back: PublicRoleKey = slurp_protocol::wire::from_cbor(&bytes, 1 << 16).unwrap();
        assert_eq!(&back, key.public());

        let other = RoleKey::generate(role("observer"), 7);
        let forged = PublicRoleKeyRepr {
            role: role("observer"),
            epoch: 7,
            recipient: other.public().recipient().to_string(),
            fingerprint: key.fingerprint(),
        };
        let bytes = slurp_protocol::wire::to_cbor(&forged).unwrap();
        assert!(slurp_protocol::wire::from_cbor::<PublicRoleKey>(&bytes, 1 << 16).is_err());
    }
}
