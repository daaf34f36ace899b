//! Key custody of one node: the role keys it holds and how they are kept.
//!
//! A node that serves reads for a role must hold that role's private key.
//! The keys live in the keystore directory, each sealed either to the node
//! key (an age identity file next to it, mode 0600, so the node restarts
//! unattended) or to an operator passphrase (`SLURP_KEYSTORE_PASSPHRASE`),
//! never in clear. On first start the node generates epoch 1 of every role
//! in the roles file; a role added to the file later gets its key at the
//! next start. The keyring is behind a lock so rotation (a later capability)
//! can swap it while requests run.
//!
//! Keys are named by their fingerprint wherever they are shown
//! (`GET /v1/keys`, `/v1/status`, audit entries of key generation), so an
//! operator can match what a node reports against the key files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use slurp_crypto::{
    Keyring, Keystore, KeystoreConfig, NodeKey, PublicRoleKey, RoleKey, SecretString, Unlock,
};
use slurp_protocol::RoleSet;

/// How role keys are sealed on disk (`[keys]`).
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UnlockMode {
    /// Sealed to the node key file in the data directory.
    #[default]
    NodeKey,
    /// Sealed to a passphrase read from `SLURP_KEYSTORE_PASSPHRASE`.
    Passphrase,
}

/// Key settings (`[keys]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// How the role keys in the data directory are sealed.
    pub unlock: UnlockMode,
    /// scrypt work factor for passphrase sealing, as log2 of N (each step
    /// doubles the time and memory of an unlock).
    pub scrypt_log_n: u8,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            unlock: UnlockMode::NodeKey,
            scrypt_log_n: KeystoreConfig::default().scrypt_log_n,
        }
    }
}

/// Problems loading keys.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("keystore: {0}")]
    Keystore(#[from] slurp_crypto::KeystoreError),
    #[error("keyring: {0}")]
    Key(#[from] slurp_crypto::KeyError),
    #[error("keys.unlock = \"passphrase\" needs SLURP_KEYSTORE_PASSPHRASE to be set")]
    NoPassphrase,
    #[error("keystore: {0}")]
    Io(String),
}

/// The role keys of a node.
pub struct Custody {
    keyring: RwLock<Arc<Keyring>>,
    /// Held by every change of the keyring (read, change, publish), so two
    /// changes at once (a grant arriving while a directory reloads) never
    /// lose one of them.
    changing: std::sync::Mutex<()>,
    keystore: Keystore,
    created: Vec<String>,
    /// The roles of the roles file.
    roles: Vec<slurp_protocol::RoleName>,
}

impl Custody {
    /// Opens the keystore under `data_dir/keys`, creating missing epoch-1
    /// keys for every role of `roles`.
    pub fn open(
        data_dir: &Path,
        roles: &RoleSet,
        config: &KeysConfig,
        passphrase: Option<SecretString>,
    ) -> Result<Self, CustodyError> {
        Self::open_with(data_dir, roles, config, passphrase, true)
    }

    /// [`Custody::open`], generating missing keys only with `generate`: a
    /// node that joins a cluster takes the cluster's keys instead (granted
    /// through the swarm), so that it never seals to keys of its own.
    pub fn open_with(
        data_dir: &Path,
        roles: &RoleSet,
        config: &KeysConfig,
        passphrase: Option<SecretString>,
        generate: bool,
    ) -> Result<Self, CustodyError> {
        let unlock = match config.unlock {
            UnlockMode::NodeKey => {
                let (key, _created) = NodeKey::load_or_create(&node_key_path(data_dir))?;
                Unlock::NodeKey(key)
            }
            UnlockMode::Passphrase => {
                Unlock::Passphrase(passphrase.ok_or(CustodyError::NoPassphrase)?)
            }
        };
        let ks_config = KeystoreConfig {
            scrypt_log_n: config.scrypt_log_n,
            ..KeystoreConfig::default()
        };
        let keystore = Keystore::open(data_dir.join("keys"), unlock, ks_config)?;
        let mut keyring = keystore.load_all()?;
        let mut created = Vec::new();
        for role in roles.roles().filter(|_| generate) {
            if keyring.current(role).is_none() {
                let key = RoleKey::generate(role.clone(), 1);
                keystore.store(&key)?;
                created.push(role.to_string());
                keyring.insert(key)?;
            }
        }
        Ok(Custody {
            keyring: RwLock::new(Arc::new(keyring)),
            changing: std::sync::Mutex::new(()),
            keystore,
            created,
            roles: roles.roles().cloned().collect(),
        })
    }

    /// The keyring as of now; cheap to clone and hold for one request.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Roles whose keys were generated by this start.
    pub fn created(&self) -> &[String] {
        &self.created
    }

    /// The roles of the roles file.
    pub fn role_names(&self) -> &[slurp_protocol::RoleName] {
        &self.roles
    }

    /// Roles whose current key this node holds, sorted.
    pub fn roles(&self) -> Vec<slurp_protocol::RoleName> {
        let keyring = self.keyring();
        let mut roles: Vec<_> = keyring.held_roles().cloned().collect();
        roles.sort();
        roles.dedup();
        roles
    }

    pub fn keystore(&self) -> &Keystore {
        &self.keystore
    }

    /// Rebuilds the keyring from the keystore and the public keys of the
    /// cluster's key directory. A private key the directory contradicts
    /// (another key for the same role and epoch: one this node made before
    /// it joined) is moved to `keys/retired/` and no longer used.
    pub fn reload(&self, directory: &[PublicRoleKey]) -> Result<Vec<String>, CustodyError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let listed: std::collections::HashMap<(String, u32), slurp_crypto::Fingerprint> = directory
            .iter()
            .map(|k| ((k.role().to_string(), k.epoch()), k.fingerprint()))
            .collect();
        self.reload_retiring(directory, |info| {
            listed
                .get(&(info.role.to_string(), info.epoch))
                .is_some_and(|fp| *fp != info.fingerprint)
        })
    }

    /// [`Custody::reload`], first deleting the private keys of `retired`
    /// epochs (no stored record depends on them any more).
    pub fn reload_dropping(
        &self,
        directory: &[PublicRoleKey],
        retired: &[slurp_protocol::RetiredEpoch],
    ) -> Result<Vec<String>, CustodyError> {
        if !retired.is_empty() {
            let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
            for info in self.keystore.list()? {
                if retired
                    .iter()
                    .any(|r| r.role == info.role && r.epoch == info.epoch)
                {
                    std::fs::remove_file(&info.path)
                        .map_err(|e| CustodyError::Io(format!("{}: {e}", info.path.display())))?;
                    tracing::info!(role = %info.role, epoch = info.epoch, fingerprint = %info.fingerprint, "deleted a retired role key");
                }
            }
        }
        self.reload(directory)
    }

    /// After an admin cut this node's roles (`slurp cluster grant`): moves
    /// the keys of roles not in `granted` to `keys/retired/` and rebuilds
    /// the keyring, so a node that follows the rules stops opening what it
    /// is no longer granted. (A node that does not follow them keeps what
    /// it had; rotating the role shuts it out of later writes.)
    pub fn retire_ungranted(
        &self,
        granted: &[slurp_protocol::RoleName],
        directory: &[PublicRoleKey],
    ) -> Result<Vec<String>, CustodyError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        self.reload_retiring(directory, |info| !granted.contains(&info.role))
    }

    fn reload_retiring(
        &self,
        directory: &[PublicRoleKey],
        retire: impl Fn(&slurp_crypto::SealedKeyInfo) -> bool,
    ) -> Result<Vec<String>, CustodyError> {
        let mut retired = Vec::new();
        for info in self.keystore.list()? {
            if retire(&info) {
                let dir = self.keystore.dir().join("retired");
                std::fs::create_dir_all(&dir)
                    .map_err(|e| CustodyError::Io(format!("{}: {e}", dir.display())))?;
                let to = dir.join(info.path.file_name().unwrap_or_default());
                std::fs::rename(&info.path, &to)
                    .map_err(|e| CustodyError::Io(format!("{}: {e}", info.path.display())))?;
                retired.push(format!(
                    "{} epoch {} ({})",
                    info.role, info.epoch, info.fingerprint
                ));
            }
        }
        let mut keyring = self.keystore.load_all()?;
        for k in directory {
            keyring.add_public(k.clone())?;
        }
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
        Ok(retired)
    }

    /// Generates epoch 1 of every role of the roles file that has no key
    /// yet (a node that creates a cluster after it failed to join one);
    /// returns the roles it made keys for.
    pub fn generate_missing(&self) -> Result<Vec<String>, CustodyError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut ring = (*self.keyring()).clone();
        let mut made = Vec::new();
        for role in &self.roles {
            if ring.current_public(role).is_none() {
                let key = RoleKey::generate(role.clone(), 1);
                self.keystore.store(&key)?;
                ring.insert(key)?;
                made.push(role.to_string());
            }
        }
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(made)
    }

    /// Makes the next epoch of `role`'s key (one past the highest known,
    /// held or public), keeps it sealed at rest and returns it.
    pub fn rotate(&self, role: &slurp_protocol::RoleName) -> Result<RoleKey, CustodyError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut ring = (*self.keyring()).clone();
        let epoch = ring.current_public(role).map(|k| k.epoch()).unwrap_or(0) + 1;
        let key = RoleKey::generate(role.clone(), epoch);
        self.keystore.store(&key)?;
        ring.insert(key.clone())?;
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(key)
    }

    /// Keeps a granted key (sealed at rest like every role key); false when
    /// it was already held.
    pub fn add_granted(&self, key: &RoleKey) -> Result<bool, CustodyError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if self.keyring().get(&key.fingerprint()).is_some() {
            return Ok(false);
        }
        self.keystore.store(key)?;
        let mut ring = (*self.keyring()).clone();
        ring.insert(key.clone())?;
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(true)
    }

    /// Every held private key of `roles`, each sealed to `recipient`.
    pub fn grants_for(
        &self,
        roles: &[slurp_protocol::RoleName],
        recipient: &slurp_crypto::x25519::Recipient,
    ) -> Result<Vec<slurp_protocol::SealedGrant>, slurp_crypto::GrantError> {
        self.keyring()
            .keys()
            .filter(|k| roles.contains(k.role()))
            .map(|k| slurp_crypto::seal_grant(k, recipient))
            .collect()
    }
}

/// One role key a node knows, as `GET /v1/keys` lists it (an API type).
pub use slurp_protocol::api::KeyView;

impl Custody {
    /// Every role key the node knows (held or public only), by role then
    /// epoch.
    pub fn key_views(&self) -> Vec<KeyView> {
        let keyring = self.keyring();
        keyring
            .public_keys()
            .map(|k| {
                let fp = k.fingerprint();
                KeyView {
                    role: k.role().to_string(),
                    epoch: k.epoch(),
                    fingerprint: fp.to_hex(),
                    held: keyring.get(&fp).is_some(),
                    current: keyring
                        .current_public(k.role())
                        .is_some_and(|c| c.fingerprint() == fp),
                }
            })
            .collect()
    }
}

impl Custody {
    /// A proof that the node holding this custody holds `role`'s current
    /// key, bound to one forwarded API call from `sender` (its peer id).
    /// A member serves a call forwarded by a node outside the layout only
    /// with a valid proof, so a peer without the role's key cannot act as
    /// that role. `None` when this node holds no key of `role`.
    pub fn forward_proof(
        &self,
        role: &slurp_protocol::RoleName,
        sender: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Option<[u8; 32]> {
        use slurp_crypto::ExposeSecret;
        let keyring = self.keyring();
        let key = keyring.current(role)?;
        let secret = key.to_secret_string();
        let mac_key = blake3::derive_key(
            "slurp 2026 forwarded call proof v1",
            secret.expose_secret().as_bytes(),
        );
        let mut h = blake3::Hasher::new_keyed(&mac_key);
        for part in [
            sender.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
            role.as_str().as_bytes(),
        ] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(blake3::hash(body).as_bytes());
        Some(*h.finalize().as_bytes())
    }

    /// Whether `proof` is [`Custody::forward_proof`] of this call (compared
    /// in constant time).
    pub fn check_forward_proof(
        &self,
        proof: &[u8],
        role: &slurp_protocol::RoleName,
        sender: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> bool {
        let Ok(given) = <[u8; 32]>::try_from(proof) else {
            return false;
        };
        self.forward_proof(role, sender, method, path, body)
            .is_some_and(|want| blake3::Hash::from(want) == blake3::Hash::from(given))
    }
}

/// Where the node key file lives.
pub fn node_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node.key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurp_protocol::RoleName;

    #[test]
    fn first_start_creates_keys_and_restart_loads_them() {
        let dir = tempfile::tempdir().unwrap();
        let roles = RoleSet::default();
        let c = Custody::open(dir.path(), &roles, &KeysConfig::default(), None).unwrap();
        assert_eq!(c.created().len(), 4);
        let fp = c
            .keyring()
            .current(&RoleName::new("developer").unwrap())
            .unwrap()
            .fingerprint();
        drop(c);
        let c = Custody::open(dir.path(), &roles, &KeysConfig::default(), None).unwrap();
        assert!(c.created().is_empty());
        assert_eq!(
            c.keyring()
                .current(&RoleName::new("developer").unwrap())
                .unwrap()
                .fingerprint(),
            fp
        );
    }

    #[test]
    fn key_views_name_every_key_by_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let c = Custody::open(
            dir.path(),
            &RoleSet::default(),
            &KeysConfig::default(),
            None,
        )
        .unwrap();
        let views = c.key_views();
        assert_eq!(views.len(), 4);
        let on_disk: Vec<String> = c
            .keystore()
            .list()
            .unwrap()
            .iter()
            .map(|i| i.fingerprint.to_hex())
            .collect();
        for v in &views {
            assert!(v.held && v.current && v.epoch == 1, "{v:?}");
            assert_eq!(v.fingerprint.len(), 32);
            assert!(on_disk.contains(&v.fingerprint), "{v:?} not in {on_disk:?}");
        }
    }

    #[test]
    fn passphrase_mode_needs_a_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = KeysConfig {
            unlock: UnlockMode::Passphrase,
            scrypt_log_n: 2,
        };
        assert!(matches!(
            Custody::open(dir.path(), &RoleSet::default(), &cfg, None),
            Err(CustodyError::NoPassphrase)
        ));
        let pass = || Some(SecretString::from("correct horse".to_string()));
        Custody::open(dir.path(), &RoleSet::default(), &cfg, pass()).unwrap();
        Custody::open(dir.path(), &RoleSet::default(), &cfg, pass()).unwrap();
        let wrong = Some(SecretString::from("wrong".to_string()));
        assert!(Custody::open(dir.path(), &RoleSet::default(), &cfg, wrong).is_err());
    }
}
