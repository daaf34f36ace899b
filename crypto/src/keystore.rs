//! The keystore: role identities on disk, never in clear.
//!
//! A node must survive restarts with its role keys, but a role identity in a
//! readable file is every record of that role in the clear for whoever copies
//! the disk. So each identity is written only inside an age file, sealed
//! either to the node key (an X25519 identity the node holds, see
//! [`NodeKey`]) or to an operator passphrase (age scrypt). One key per file,
//! named `<role>.<epoch>.key`; the file is framed CBOR (kind `SEALED_KEY`)
//! carrying in clear what is needed to list keys without unlocking them
//! (role, epoch, fingerprint, recipient, how it is sealed) and the sealed
//! identity. Loading checks that the decrypted identity really is the key
//! the clear fields describe.
//!
//! The sealed payload is an age identity file (comments naming the role and
//! epoch, then the `AGE-SECRET-KEY-1...` line), so in an emergency an
//! operator can recover a key with the stock tool: extract the payload and
//! run `age -d -i node.key`. Writes are atomic and files are mode 0600.
//!
//! # Node key or passphrase
//!
//! A node key lets a node restart unattended, but it sits on the same disk
//! as the keystore, protected only by file permissions (0600, refused when
//! looser): anyone who can read both files as the node's user or as root
//! has the role keys. It protects against copies of the keystore alone
//! (backups, a keystore directory synced elsewhere). A passphrase keeps the
//! secret off the disk entirely, at the cost of an operator typing it (or a
//! secret manager supplying it) at every start, and scrypt's deliberate cost
//! on every unlock.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use age::{DecryptError, Decryptor, Encryptor, scrypt, x25519};
use serde::{Deserialize, Serialize};
use slurp_protocol::RoleName;
use slurp_protocol::wire::{Framed, kinds};
use zeroize::Zeroizing;

use crate::fsutil;
use crate::keys::{Fingerprint, KeyError, Keyring, PublicRoleKey, RoleKey, parse_identity};

/// File extension of sealed role key files.
pub const KEY_FILE_EXT: &str = "key";

/// Largest node key file accepted, in bytes.
pub const MAX_NODE_KEY_FILE: u64 = 4096;

/// Problems reading or writing the keystore and the node key. Each names
/// the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} is {len} bytes, over the limit of {limit}")]
    TooLarge { path: PathBuf, len: u64, limit: u64 },
    #[error("wrong passphrase for {path} (or the sealed key was altered)")]
    WrongPassphrase { path: PathBuf },
    #[error("{path} is sealed to node key {sealed_to}, but this node's key is {have}")]
    WrongNodeKey {
        path: PathBuf,
        sealed_to: Fingerprint,
        have: Fingerprint,
    },
    #[error("{path} is sealed with {sealed_with}, but the keystore was unlocked with {unlock}")]
    SealedDifferently {
        path: PathBuf,
        sealed_with: String,
        unlock: &'static str,
    },
    #[error("{path} needs scrypt work factor 2^{required}, over the configured maximum 2^{max}")]
    WorkFactorTooHigh {
        path: PathBuf,
        required: u8,
        max: u8,
    },
    #[error("{path}: the sealed identity has fingerprint {actual}, the file claims {claimed}")]
    FingerprintMismatch {
        path: PathBuf,
        claimed: Fingerprint,
        actual: Fingerprint,
    },
    #[error("{path}: {reason}")]
    LabelMismatch { path: PathBuf, reason: String },
    #[error("{path} already holds key {existing}; refusing to replace it with {offered}")]
    Conflict {
        path: PathBuf,
        existing: Fingerprint,
        offered: Fingerprint,
    },
    #[error("no key for role {role} epoch {epoch} (looked for {path})")]
    NotFound {
        role: RoleName,
        epoch: u32,
        path: PathBuf,
    },
    #[error(
        "{path} has mode {mode:o}; a node key file must not be readable by group or others (chmod 600)"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("node key file {path} already exists; refusing to overwrite it")]
    NodeKeyExists { path: PathBuf },
    #[error("invalid keystore configuration: {0}")]
    InvalidConfig(String),
    #[error("sealing failed: {0}")]
    Seal(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> KeystoreError {
    KeystoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Limits and costs of the keystore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeystoreConfig {
    /// scrypt work factor (log2 of N) used when sealing to a passphrase.
    /// The default, 18, is age's usual target (about a second, 256 MiB).
    /// Lower only for tests.
    pub scrypt_log_n: u8,
    /// Highest work factor accepted when unlocking; bounds the memory and
    /// time a crafted key file can demand (2^20 is 1 GiB of scrypt memory).
    pub max_scrypt_log_n: u8,
    /// Largest key file accepted, in bytes.
    pub max_file_bytes: u64,
}

impl Default for KeystoreConfig {
    fn default() -> Self {
        KeystoreConfig {
            scrypt_log_n: 18,
            max_scrypt_log_n: 20,
            max_file_bytes: 64 * 1024,
        }
    }
}

impl KeystoreConfig {
    fn validate(&self) -> Result<(), KeystoreError> {
        if self.scrypt_log_n == 0 || self.scrypt_log_n > self.max_scrypt_log_n {
            return Err(KeystoreError::InvalidConfig(format!(
                "scrypt_log_n {} must be within 1..=max_scrypt_log_n ({})",
                self.scrypt_log_n, self.max_scrypt_log_n
            )));
        }
        if self.max_scrypt_log_n > 30 {
            return Err(KeystoreError::InvalidConfig(format!(
                "max_scrypt_log_n {} is over 30 (scrypt would need over 128 GiB)",
                self.max_scrypt_log_n
            )));
        }
        Ok(())
    }
}

/// The node's own X25519 identity, used to seal role keys for unattended
/// restarts. Its file is an age identity file (usable with `age -d -i`),
/// mode 0600. `Debug` never shows the secret.
#[derive(Clone)]
pub struct NodeKey {
    identity: x25519::Identity,
    recipient: x25519::Recipient,
    fingerprint: Fingerprint,
}

impl NodeKey {
    /// Generates a fresh node key.
    pub fn generate() -> Self {
        Self::from_identity(x25519::Identity::generate())
    }

    pub fn from_identity(identity: x25519::Identity) -> Self {
        let recipient = identity.to_public();
        let fingerprint = Fingerprint::of_recipient(&recipient);
        NodeKey {
            identity,
            recipient,
            fingerprint,
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub fn recipient(&self) -> &x25519::Recipient {
        &self.recipient
    }

    /// Generates a node key and writes it to `path` (mode 0600, atomic).
    /// Refuses to overwrite an existing file: losing a node key loses every
    /// role key sealed to it.
    pub fn create_file(path: &Path) -> Result<Self, KeystoreError> {
        let key = Self::generate();
        key.write_new(path)?;
        Ok(key)
    }

    /// Writes this key to a new file at `path` (mode 0600, atomic); fails if
    /// the file exists.
    pub fn write_new(&self, path: &Path) -> Result<(), KeystoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_private_dir(dir).map_err(io_err(dir))?;
        }
        let text = Zeroizing::new(format!(
            "# slurp node key: unlocks the role keys sealed in this node's keystore\n\
             # public key: {}\n{}\n",
            self.recipient,
            self.identity.to_string().expose_secret()
        ));
        fsutil::write_new_atomic(path, text.as_bytes()).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeystoreError::NodeKeyExists {
                    path: path.to_path_buf(),
                }
            } else {
                KeystoreError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })
    }

    /// Loads a node key file. Refuses files readable by group or others,
    /// files over [`MAX_NODE_KEY_FILE`] bytes, and files whose
    /// `# public key:` comment does not match the identity.
    pub fn load_file(path: &Path) -> Result<Self, KeystoreError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if !meta.is_file() {
            return Err(corrupt(path, "not a regular file"));
        }
        let mode = fsutil::mode_of(&meta);
        if mode & 0o077 != 0 {
            return Err(KeystoreError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        if meta.len() > MAX_NODE_KEY_FILE {
            return Err(KeystoreError::TooLarge {
                path: path.to_path_buf(),
                len: meta.len(),
                limit: MAX_NODE_KEY_FILE,
            });
        }
        let bytes = Zeroizing::new(fs::read(path).map_err(io_err(path))?);
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt(path, "not UTF-8 text"))?;
        let parsed = IdentityText::parse(text).map_err(|r| corrupt(path, r))?;
        let key = NodeKey::from_identity(parsed.identity);
        if let Some(claimed) = parsed.public_key
            && claimed != key.recipient.to_string()
        {
            return Err(corrupt(
                path,
                format!(
                    "public key comment {claimed} does not match the identity ({})",
                    key.recipient
                ),
            ));
        }
        Ok(key)
    }

    /// Loads the node key at `path`, creating it if the file does not
    /// exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeystoreError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok((Self::load_file(path)?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Self::create_file(path)?, true)),
            Err(e) => Err(io_err(path)(e)),
        }
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("fingerprint", &self.fingerprint)
            .field("identity", &"<redacted>")
            .finish()
    }
}

/// How the keystore unlocks (and seals) role keys.
pub enum Unlock {
    /// Seal to, and open with, the node key.
    NodeKey(NodeKey),
    /// Seal to, and open with, an operator passphrase (age scrypt).
    Passphrase(SecretString),
}

impl Unlock {
    fn name(&self) -> &'static str {
        match self {
            Unlock::NodeKey(_) => "the node key",
            Unlock::Passphrase(_) => "a passphrase",
        }
    }
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::NodeKey(k) => f.debug_tuple("NodeKey").field(k).finish(),
            Unlock::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

/// How a key file is sealed, as recorded in clear in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealedWith {
    /// Sealed to the node key with this fingerprint.
    NodeKey { fingerprint: Fingerprint },
    /// Sealed to a passphrase with scrypt work factor 2^log_n.
    Passphrase { log_n: u8 },
}

impl fmt::Display for SealedWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealedWith::NodeKey { fingerprint } => write!(f, "node key {fingerprint}"),
            SealedWith::Passphrase { log_n } => write!(f, "a passphrase (scrypt 2^{log_n})"),
        }
    }
}

/// The on-disk form of one sealed role key (framed CBOR, kind
/// `SEALED_KEY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SealedKeyFile {
    role: RoleName,
    epoch: u32,
    fingerprint: Fingerprint,
    recipient: String,
    sealed_with: SealedWith,
    /// The age file holding the identity file text.
    #[serde(with = "serde_bytes")]
    sealed: Vec<u8>,
}

impl Framed for SealedKeyFile {
    const KIND: u16 = kinds::SEALED_KEY;
    const NAME: &'static str = "sealed-key";
    const VERSION: u16 = 1;
}

/// The on-disk form of a sealed secret other than a role key (framed CBOR,
/// kind `SEALED_SECRET`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SealedSecretFile {
    name: String,
    sealed_with: SealedWith,
    #[serde(with = "serde_bytes")]
    sealed: Vec<u8>,
}

impl Framed for SealedSecretFile {
    const KIND: u16 = kinds::SEALED_SECRET;
    const NAME: &'static str = "sealed-secret";
    const VERSION: u16 = 1;
}

/// What a key file says about itself in clear; listing needs no unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKeyInfo {
    pub path: PathBuf,
    pub role: RoleName,
    pub epoch: u32,
    pub fingerprint: Fingerprint,
    /// The public key, checked against the fingerprint.
    pub public: PublicRoleKey,
    pub sealed_with: SealedWith,
}

/// An age identity file's text, parsed: the identity and the comments we
/// write (`# role:`, `# epoch:`, `# public key:`).
struct IdentityText {
    identity: x25519::Identity,
    role: Option<String>,
    epoch: Option<String>,
    public_key: Option<String>,
}

impl IdentityText {
    fn parse(text: &str) -> Result<Self, String> {
        let mut identity = None;
        let (mut role, mut epoch, mut public_key) = (None, None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim();
                if let Some(v) = comment.strip_prefix("role:") {
                    role = Some(v.trim().to_string());
                } else if let Some(v) = comment.strip_prefix("epoch:") {
                    epoch = Some(v.trim().to_string());
                } else if let Some(v) = comment.strip_prefix("public key:") {
                    public_key = Some(v.trim().to_string());
                }
                continue;
            }
            if identity.is_some() {
                return Err("more than one identity line".into());
            }
            identity = Some(parse_identity(line).map_err(|e| e.to_string())?);
        }
        Ok(IdentityText {
            identity: identity.ok_or("no AGE-SECRET-KEY-1 line")?,
            role,
            epoch,
            public_key,
        })
    }
}

/// A directory of sealed role keys, unlocked with a node key or a
/// passphrase.
pub struct Keystore {
    dir: PathBuf,
    unlock: Unlock,
    config: KeystoreConfig,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore")
            .field("dir", &self.dir)
            .field("unlock", &self.unlock)
            .finish()
    }
}

impl Keystore {
    /// Opens (creating with mode 0700 if missing) the keystore directory.
    pub fn open(
        dir: impl Into<PathBuf>,
        unlock: Unlock,
        config: KeystoreConfig,
    ) -> Result<Self, KeystoreError> {
        config.validate()?;
        let dir = dir.into();
        fsutil::create_private_dir(&dir).map_err(io_err(&dir))?;
        Ok(Keystore {
            dir,
            unlock,
            config,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a role key of `role` at `epoch` lives in.
    pub fn path_for(&self, role: &RoleName, epoch: u32) -> PathBuf {
        self.dir.join(format!("{role}.{epoch}.{KEY_FILE_EXT}"))
    }

    /// Seals `key` and writes it atomically (mode 0600). Storing the same
    /// key again re-seals it; a different key for the same role and epoch is
    /// a [`KeystoreError::Conflict`].
    pub fn store(&self, key: &RoleKey) -> Result<PathBuf, KeystoreError> {
        let path = self.path_for(key.role(), key.epoch());
        match self.read_file(&path) {
            Ok(existing) if existing.fingerprint != key.fingerprint() => {
                return Err(KeystoreError::Conflict {
                    path,
                    existing: existing.fingerprint,
                    offered: key.fingerprint(),
                });
            }
            Ok(_) => {}
            Err(KeystoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let text = Zeroizing::new(format!(
            "# slurp role key\n# role: {}\n# epoch: {}\n# public key: {}\n{}\n",
            key.role(),
            key.epoch(),
            key.public().recipient(),
            key.to_secret_string().expose_secret()
        ));
        let (sealed, sealed_with) = self.seal(text.as_bytes())?;
        let file = SealedKeyFile {
            role: key.role().clone(),
            epoch: key.epoch(),
            fingerprint: key.fingerprint(),
            recipient: key.public().recipient().to_string(),
            sealed_with,
            sealed,
        };
        let bytes = file
            .encode()
            .map_err(|e| KeystoreError::Seal(e.to_string()))?;
        fsutil::write_atomic(&path, &bytes).map_err(io_err(&path))?;
        Ok(path)
    }

    fn seal(&self, plaintext: &[u8]) -> Result<(Vec<u8>, SealedWith), KeystoreError> {
        let seal_err = |e: &dyn fmt::Display| KeystoreError::Seal(e.to_string());
        let (encryptor, sealed_with) = match &self.unlock {
            Unlock::NodeKey(node) => (
                Encryptor::with_recipients(std::iter::once(&node.recipient as &dyn age::Recipient))
                    .map_err(|e| seal_err(&e))?,
                SealedWith::NodeKey {
                    fingerprint: node.fingerprint,
                },
            ),
            Unlock::Passphrase(pass) => {
                let mut recipient = scrypt::Recipient::new(pass.clone());
                recipient.set_work_factor(self.config.scrypt_log_n);
                (
                    Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                        .map_err(|e| seal_err(&e))?,
                    SealedWith::Passphrase {
                        log_n: self.config.scrypt_log_n,
                    },
                )
            }
        };
        let mut out = Vec::with_capacity(plaintext.len() + 256);
        let mut w = encryptor.wrap_output(&mut out).map_err(|e| seal_err(&e))?;
        w.write_all(plaintext).map_err(|e| seal_err(&e))?;
        w.finish().map_err(|e| seal_err(&e))?;
        Ok((out, sealed_with))
    }

    /// Reads and decodes a key file without unlocking it.
    fn read_file(&self, path: &Path) -> Result<SealedKeyFile, KeystoreError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if meta.len() > self.config.max_file_bytes {
            return Err(KeystoreError::TooLarge {
                path: path.to_path_buf(),
                len: meta.len(),
                limit: self.config.max_file_bytes,
            });
        }
        let bytes = fs::read(path).map_err(io_err(path))?;
        SealedKeyFile::decode_limited(&bytes, self.config.max_file_bytes as usize)
            .map_err(|e| corrupt(path, e.to_string()))
    }

    /// Loads the key of `role` at `epoch`.
    pub fn load(&self, role: &RoleName, epoch: u32) -> Result<RoleKey, KeystoreError> {
        let path = self.path_for(role, epoch);
        if !path.exists() {
            return Err(KeystoreError::NotFound {
                role: role.clone(),
                epoch,
                path,
            });
        }
        let key = self.load_file(&path)?;
        if key.role() != role || key.epoch() != epoch {
            return Err(KeystoreError::LabelMismatch {
                path,
                reason: format!(
                    "file holds {} epoch {}, its name says {role} epoch {epoch}",
                    key.role(),
                    key.epoch()
                ),
            });
        }
        Ok(key)
    }

    /// Loads and verifies one key file: decrypts it, then checks that the
    /// identity's fingerprint, recipient, role and epoch are those the
    /// clear fields claim.
    pub fn load_file(&self, path: &Path) -> Result<RoleKey, KeystoreError> {
        let file = self.read_file(path)?;
        let text = self.unseal(path, &file)?;
        let text = std::str::from_utf8(&text)
            .map_err(|_| corrupt(path, "sealed identity is not UTF-8 text"))?;
        let parsed = IdentityText::parse(text)
            .map_err(|r| corrupt(path, format!("sealed identity: {r}")))?;
        let key = RoleKey::from_identity(file.role.clone(), file.epoch, parsed.identity);
        if key.fingerprint() != file.fingerprint
            || key.public().recipient().to_string() != file.recipient
        {
            return Err(KeystoreError::FingerprintMismatch {
                path: path.to_path_buf(),
                claimed: file.fingerprint,
                actual: key.fingerprint(),
            });
        }
        if let Some(claimed) = &parsed.public_key
            && *claimed != file.recipient
        {
            return Err(KeystoreError::LabelMismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "sealed public key comment {claimed} differs from the recipient {}",
                    file.recipient
                ),
            });
        }
        let epoch = file.epoch.to_string();
        if parsed.role.as_deref() != Some(file.role.as_str())
            || parsed.epoch.as_deref() != Some(epoch.as_str())
        {
            return Err(KeystoreError::LabelMismatch {
                path: path.to_path_buf(),
                reason: format!(
                    "clear fields say {} epoch {}, the sealed identity says {} epoch {}",
                    file.role,
                    file.epoch,
                    parsed.role.as_deref().unwrap_or("(none)"),
                    parsed.epoch.as_deref().unwrap_or("(none)")
                ),
            });
        }
        Ok(key)
    }

    fn unseal(
        &self,
        path: &Path,
        file: &SealedKeyFile,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        self.unseal_bytes(path, &file.sealed_with, &file.sealed)
    }

    fn unseal_bytes(
        &self,
        path: &Path,
        sealed_with: &SealedWith,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        let mismatch = || KeystoreError::SealedDifferently {
            path: path.to_path_buf(),
            sealed_with: sealed_with.to_string(),
            unlock: self.unlock.name(),
        };
        let decryptor = Decryptor::new_buffered(sealed)
            .map_err(|e| corrupt(path, format!("sealed identity: {e}")))?;
        let result = match (&self.unlock, sealed_with) {
            (Unlock::NodeKey(node), SealedWith::NodeKey { fingerprint }) => {
                if *fingerprint != node.fingerprint {
                    return Err(KeystoreError::WrongNodeKey {
                        path: path.to_path_buf(),
                        sealed_to: *fingerprint,
                        have: node.fingerprint,
                    });
                }
                if decryptor.is_scrypt() {
                    return Err(corrupt(path, "says node key but is passphrase-sealed"));
                }
                decryptor
                    .decrypt(std::iter::once(&node.identity as &dyn age::Identity))
                    .map_err(|e| match e {
                        DecryptError::NoMatchingKeys => KeystoreError::WrongNodeKey {
                            path: path.to_path_buf(),
                            sealed_to: *fingerprint,
                            have: node.fingerprint,
                        },
                        other => corrupt(path, format!("sealed identity: {other}")),
                    })
            }
            (Unlock::Passphrase(pass), SealedWith::Passphrase { .. }) => {
                if !decryptor.is_scrypt() {
                    return Err(corrupt(
                        path,
                        "says passphrase but is not passphrase-sealed",
                    ));
                }
                let mut identity = scrypt::Identity::new(pass.clone());
                identity.set_max_work_factor(self.config.max_scrypt_log_n);
                decryptor
                    .decrypt(std::iter::once(&identity as &dyn age::Identity))
                    .map_err(|e| match e {
                        DecryptError::DecryptionFailed | DecryptError::NoMatchingKeys => {
                            KeystoreError::WrongPassphrase {
                                path: path.to_path_buf(),
                            }
                        }
                        DecryptError::ExcessiveWork { required, .. } => {
                            KeystoreError::WorkFactorTooHigh {
                                path: path.to_path_buf(),
                                required,
                                max: self.config.max_scrypt_log_n,
                            }
                        }
                        other => corrupt(path, format!("sealed identity: {other}")),
                    })
            }
            _ => return Err(mismatch()),
        };
        let mut reader = result?;
        let mut out = Zeroizing::new(Vec::with_capacity(sealed.len()));
        io::Read::read_to_end(&mut reader, &mut out)
            .map_err(|e| corrupt(path, format!("sealed identity: {e}")))?;
        Ok(out)
    }

    /// Writes `secret` (another key than a role key, such as the cluster
    /// key) sealed like the role keys, to `<name>.secret` in the keystore
    /// directory (atomic, mode 0600). `name` is a plain word.
    pub fn store_secret(&self, name: &str, secret: &[u8]) -> Result<PathBuf, KeystoreError> {
        let path = self.secret_path(name)?;
        let (sealed, sealed_with) = self.seal(secret)?;
        let bytes = SealedSecretFile {
            name: name.to_string(),
            sealed_with,
            sealed,
        }
        .encode()
        .map_err(|e| KeystoreError::Seal(e.to_string()))?;
        fsutil::write_atomic(&path, &bytes).map_err(io_err(&path))?;
        Ok(path)
    }

    /// Reads back a secret written by [`Keystore::store_secret`]; `None`
    /// when there is no such file.
    pub fn load_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        let path = self.secret_path(name)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let file = SealedSecretFile::decode_limited(&bytes, self.config.max_file_bytes as usize)
            .map_err(|e| corrupt(&path, e.to_string()))?;
        if file.name != name {
            return Err(KeystoreError::LabelMismatch {
                path,
                reason: format!("the file holds secret {:?}, not {name:?}", file.name),
            });
        }
        self.unseal_bytes(&path, &file.sealed_with, &file.sealed)
            .map(Some)
    }

    /// Deletes the secret `name` (a no-op when there is none).
    pub fn remove_secret(&self, name: &str) -> Result<(), KeystoreError> {
        let path = self.secret_path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => fsutil::sync_dir(&self.dir).map_err(io_err(&self.dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn secret_path(&self, name: &str) -> Result<PathBuf, KeystoreError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(KeystoreError::Seal(format!(
                "{name:?} is not a plain name for a secret"
            )));
        }
        Ok(self.dir.join(format!("{name}.secret")))
    }

    /// Key files in the directory, sorted by path (temporary files of
    /// interrupted writes are skipped).
    fn key_paths(&self) -> Result<Vec<PathBuf>, KeystoreError> {
        let mut paths = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || path.extension().is_none_or(|e| e != KEY_FILE_EXT) {
                continue;
            }
            paths.push(path);
        }
        paths.sort();
        Ok(paths)
    }

    /// Lists every key file from its clear fields, without unlocking.
    pub fn list(&self) -> Result<Vec<SealedKeyInfo>, KeystoreError> {
        self.key_paths()?
            .into_iter()
            .map(|path| {
                // A key removed since the directory was read (a retired
                // epoch) is simply not listed.
                let file = match self.read_file(&path) {
                    Err(KeystoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Ok(None);
                    }
                    r => r?,
                };
                let public = PublicRoleKey::parse(file.role.clone(), file.epoch, &file.recipient)
                    .map_err(|e| corrupt(&path, e.to_string()))?;
                if public.fingerprint() != file.fingerprint {
                    return Err(KeystoreError::FingerprintMismatch {
                        path,
                        claimed: file.fingerprint,
                        actual: public.fingerprint(),
                    });
                }
                Ok(Some(SealedKeyInfo {
                    path,
                    role: file.role,
                    epoch: file.epoch,
                    fingerprint: file.fingerprint,
                    public,
                    sealed_with: file.sealed_with,
                }))
            })
            .filter_map(Result::transpose)
            .collect()
    }

    /// Loads every key into a keyring. Fails on the first file that does
    /// not load, naming it.
    pub fn load_all(&self) -> Result<Keyring, KeystoreError> {
        let mut ring = Keyring::new();
        for path in self.key_paths()? {
            match self.load_file(&path) {
                // Removed since the directory was read (a retired epoch).
                Err(KeystoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                r => ring.insert(r?)?,
            }
        }
        Ok(ring)
    }

    /// Deletes the key file of `role` at `epoch`.
    pub fn remove(&self, role: &RoleName, epoch: u32) -> Result<(), KeystoreError> {
        let path = self.path_for(role, epoch);
        match fs::remove_file(&path) {
            Ok(()) => fsutil::sync_dir(&self.dir).map_err(io_err(&self.dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KeystoreError::NotFound {
                role: role.clone(),
                epoch,
                path,
            }),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(s: &str) -> RoleName {
        RoleName::new(s).unwrap()
    }

    fn fast() -> KeystoreConfig {
        KeystoreConfig {
            scrypt_log_n: 10,
            ..KeystoreConfig::default()
        }
    }

    fn pass(s: &str) -> Unlock {
        Unlock::Passphrase(SecretString::from(s.to_string()))
    }

    #[test]
    fn node_key_round_trip_and_no_clear_identity_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeKey::create_file(&dir.path().join("node.key")).unwrap();
        let store = Keystore::open(
            dir.path().join("keys"),
            Unlock::NodeKey(NodeKey::load_file(&dir.path().join("node.key")).unwrap()),
            fast(),
        )
        .unwrap();
        let key = RoleKey::generate(role("developer"), 2);
        let path = store.store(&key).unwrap();
        assert_eq!(path.file_name().unwrap(), "developer.2.key");
        assert_eq!(fsutil::mode_of(&fs::metadata(&path).unwrap()), 0o600);
        let raw = fs::read(&path).unwrap();
        let secret = key.to_secret_string().expose_secret().to_string();
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert!(!raw.windows(14).any(|w| w == b"AGE-SECRET-KEY"));

        let loaded = store.load(&role("developer"), 2).unwrap();
        assert_eq!(loaded.fingerprint(), key.fingerprint());
        assert_eq!(loaded.epoch(), 2);
        let ring = store.load_all().unwrap();
        assert_eq!(ring.len(), 1);
        let listed = store.list().unwrap();
        assert_eq!(listed[0].fingerprint, key.fingerprint());
        assert_eq!(
            listed[0].sealed_with,
            SealedWith::NodeKey {
                fingerprint: node.fingerprint()
            }
        );
    }

    #[test]
    fn a_key_removed_while_the_keystore_is_read_is_left_out() {
        // A retired epoch's file can go between reading the directory and
        // reading the file: a dangling link stands for that moment.
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::open(dir.path(), pass("p"), fast()).unwrap();
        let key = RoleKey::generate(role("developer"), 2);
        store.store(&key).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("developer.1.key"))
            .unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].epoch, 2);
        assert_eq!(store.load_all().unwrap().len(), 1);
    }

    #[test]
    fn passphrase_round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::open(dir.path(), pass("correct horse"), fast()).unwrap();
        let key = RoleKey::generate(role("admin"), 1);
        store.store(&key).unwrap();
        assert_eq!(
            store.load(&role("admin"), 1).unwrap().fingerprint(),
            key.fingerprint()
        );
        let wrong = Keystore::open(dir.path(), pass("battery staple"), fast()).unwrap();
        let err = wrong.load(&role("admin"), 1).unwrap_err();
        assert!(
            matches!(&err, KeystoreError::WrongPassphrase { path } if path.ends_with("admin.1.key")),
            "{err:?}"
        );
        // Unlocking a passphrase keystore with a node key says so.
        let node =
            Keystore::open(dir.path(), Unlock::NodeKey(NodeKey::generate()), fast()).unwrap();
        assert!(matches!(
            node.load(&role("admin"), 1),
            Err(KeystoreError::SealedDifferently { .. })
        ));
    }

    #[test]
    fn work_factor_is_bounded_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::open(dir.path(), pass("p"), fast()).unwrap();
        store.store(&RoleKey::generate(role("admin"), 1)).unwrap();
        let strict = KeystoreConfig {
            scrypt_log_n: 8,
            max_scrypt_log_n: 9,
            ..fast()
        };
        let reader = Keystore::open(dir.path(), pass("p"), strict).unwrap();
        assert!(matches!(
            reader.load(&role("admin"), 1),
            Err(KeystoreError::WorkFactorTooHigh {
                required: 10,
                max: 9,
                ..
            })
        ));
        assert!(matches!(
            Keystore::open(
                dir.path(),
                pass("p"),
                KeystoreConfig {
                    scrypt_log_n: 21,
                    ..KeystoreConfig::default()
                }
            ),
            Err(KeystoreError::InvalidConfig(_))
        ));
    }

    #[test]
    fn wrong_node_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeKey::generate();
        let b = NodeKey::generate();
        let (fa, fb) = (a.fingerprint(), b.fingerprint());
        Keystore::open(dir.path(), Unlock::NodeKey(a), fast())
            .unwrap()
            .store(&RoleKey::generate(role("observer"), 4))
            .unwrap();
        let other = Keystore::open(dir.path(), Unlock::NodeKey(b), fast()).unwrap();
        match other.load(&role("observer"), 4) {
            Err(KeystoreError::WrongNodeKey {
                sealed_to, have, ..
            }) => {
                assert_eq!((sealed_to, have), (fa, fb));
            }
            other => panic!("expected WrongNodeKey, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_and_relabelled_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Keystore::open(dir.path(), Unlock::NodeKey(NodeKey::generate()), fast()).unwrap();
        let key = RoleKey::generate(role("developer"), 1);
        let path = store.store(&key).unwrap();
        let good = fs::read(&path).unwrap();

        // Garbage and truncation.
        for bad in [b"garbage".to_vec(), good[..good.len() / 2].to_vec()] {
            fs::write(&path, &bad).unwrap();
            match store.load(&role("developer"), 1) {
                Err(KeystoreError::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }

        // Claim another key's fingerprint and recipient.
        let mut file = SealedKeyFile::decode(&good).unwrap();
        let other = RoleKey::generate(role("developer"), 1);
        file.fingerprint = other.fingerprint();
        file.recipient = other.public().recipient().to_string();
        fs::write(&path, file.encode().unwrap()).unwrap();
        assert!(matches!(
            store.load(&role("developer"), 1),
            Err(KeystoreError::FingerprintMismatch { .. })
        ));

        // Relabel the role in clear: the sealed comments disagree.
        let mut file = SealedKeyFile::decode(&good).unwrap();
        file.role = role("admin");
        let admin_path = store.path_for(&role("admin"), 1);
        fs::write(&admin_path, file.encode().unwrap()).unwrap();
        assert!(matches!(
            store.load(&role("admin"), 1),
            Err(KeystoreError::LabelMismatch { .. })
        ));

        // A file copied under another name is refused as well.
        fs::write(&path, &good).unwrap();
        fs::copy(&path, store.path_for(&role("developer"), 7)).unwrap();
        assert!(matches!(
            store.load(&role("developer"), 7),
            Err(KeystoreError::LabelMismatch { .. })
        ));
        assert!(matches!(
            store.load(&role("nobody"), 1),
            Err(KeystoreError::NotFound { .. })
        ));
    }

    #[test]
    fn store_refuses_a_different_key_for_the_same_slot() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Keystore::open(dir.path(), Unlock::NodeKey(NodeKey::generate()), fast()).unwrap();
        let key = RoleKey::generate(role("developer"), 1);
        store.store(&key).unwrap();
        store.store(&key).unwrap();
        assert!(matches!(
            store.store(&RoleKey::generate(role("developer"), 1)),
            Err(KeystoreError::Conflict { .. })
        ));
        store.remove(&role("developer"), 1).unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn node_key_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let (created, fresh) = NodeKey::load_or_create(&path).unwrap();
        assert!(fresh);
        let (again, fresh) = NodeKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(again.fingerprint(), created.fingerprint());
        assert!(matches!(
            NodeKey::create_file(&path),
            Err(KeystoreError::NodeKeyExists { .. })
        ));
        assert!(!format!("{created:?}").contains("AGE-SECRET-KEY"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                NodeKey::load_file(&path),
                Err(KeystoreError::InsecurePermissions { mode: 0o644, .. })
            ));
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }

        // A public key comment that does not match is refused.
        let text = fs::read_to_string(&path).unwrap();
        let other = x25519::Identity::generate().to_public().to_string();
        let line = text.lines().find(|l| l.contains("public key:")).unwrap();
        fs::write(&path, text.replace(line, &format!("# public key: {other}"))).unwrap();
        assert!(matches!(
            NodeKey::load_file(&path),
            Err(KeystoreError::Corrupt { .. })
        ));
    }
}
