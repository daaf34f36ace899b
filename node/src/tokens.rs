//! API tokens: bearer secrets bound to a role.
//!
//! A token reads `slurp_<id>_<secret>`. The id (public, 8 bytes hex) finds
//! the entry; only blake3 of the secret is stored, compared in constant
//! time, so the tokens file does not let anyone who reads it call the API.
//! On a fresh data directory the node creates one admin token and writes it
//! to `admin.token` (mode 0600) for the operator; every other token is made
//! and revoked by an admin through the API.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use slurp_protocol::RoleName;

/// What can go wrong with tokens.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed (expected slurp_<id>_<secret>)")]
    Malformed,
    #[error("token is unknown or revoked")]
    Unknown,
    /// No token with this id was made on this node; another cluster member
    /// may know it (see [`TokenStore::authenticate_with`]).
    #[error("token {0} was not made on this node")]
    NotHere(String),
    #[error("no token with id {0}")]
    NoSuchId(String),
    #[error("tokens file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tokens file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// One stored token (no secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenEntry {
    pub id: String,
    pub role: RoleName,
    /// blake3 of the secret part, hex.
    pub secret_hash: String,
    #[serde(default)]
    pub label: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    format: u16,
    tokens: BTreeMap<String, TokenEntry>,
}

/// A caller the API has authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub role: RoleName,
}

/// The token table, persisted as JSON next to the node's data.
pub struct TokenStore {
    path: PathBuf,
    file: RwLock<TokensFile>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hash_secret(secret: &str) -> blake3::Hash {
    blake3::hash(secret.as_bytes())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, fsync, rename, with mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

impl TokenStore {
    /// Opens (or starts) the tokens file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, TokenError> {
        let path = path.into();
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TokenError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokensFile {
                format: 1,
                tokens: BTreeMap::new(),
            },
            Err(source) => return Err(TokenError::Io { path, source }),
        };
        Ok(TokenStore {
            path,
            file: RwLock::new(file),
        })
    }

    fn save(&self, file: &TokensFile) -> Result<(), TokenError> {
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| TokenError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_private_file(&self.path, &bytes).map_err(|source| TokenError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Whether any token (revoked or not) exists.
    pub fn is_empty(&self) -> bool {
        self.file
            .read()
            .map(|f| f.tokens.is_empty())
            .unwrap_or(true)
    }

    /// Creates a token for `role`; returns the entry and the token string,
    /// which is shown once and never stored.
    pub fn create(&self, role: RoleName, label: &str) -> Result<(TokenEntry, String), TokenError> {
        let mut rng = rand::thread_rng();
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let id = hex::encode(id);
        let secret = hex::encode(secret);
        let entry = TokenEntry {
            id: id.clone(),
            role,
            secret_hash: hash_secret(&secret).to_hex().to_string(),
            label: label.chars().take(200).collect(),
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        let mut file = self.file.write().unwrap_or_else(|e| e.into_inner());
        file.tokens.insert(id.clone(), entry.clone());
        if let Err(e) = self.save(&file) {
            file.tokens.remove(&id);
            return Err(e);
        }
        Ok((entry, format!("slurp_{id}_{secret}")))
    }

    /// Revokes a token by id.
    pub fn revoke(&self, id: &str) -> Result<TokenEntry, TokenError> {
        let mut file = self.file.write().unwrap_or_else(|e| e.into_inner());
        let entry = file
            .tokens
            .get_mut(id)
            .ok_or_else(|| TokenError::NoSuchId(id.to_string()))?;
        let before = entry.revoked_at_ms;
        entry.revoked_at_ms.get_or_insert_with(now_ms);
        let out = entry.clone();
        if let Err(e) = self.save(&file) {
            if let Some(entry) = file.tokens.get_mut(id) {
                entry.revoked_at_ms = before;
            }
            return Err(e);
        }
        Ok(out)
    }

    /// Every token entry.
    pub fn list(&self) -> Vec<TokenEntry> {
        self.file
            .read()
            .map(|f| f.tokens.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The entry of token `id`, if this node made it.
    pub fn entry(&self, id: &str) -> Option<TokenEntry> {
        self.file
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .tokens
            .get(id)
            .cloned()
    }

    /// Checks a bearer token against the tokens made on this node.
    pub fn authenticate(&self, token: &str) -> Result<Principal, TokenError> {
        let (id, secret) = split_token(token)?;
        let entry = self
            .entry(id)
            .ok_or_else(|| TokenError::NotHere(id.to_string()))?;
        verify(&entry, secret)
    }

    /// Checks a bearer token made on this node or, when not, against the
    /// entry `remote` finds for its id (another cluster member's; only
    /// hashes of secrets travel). Unknown everywhere is `Unknown`.
    pub async fn authenticate_with<F, Fut>(
        &self,
        token: &str,
        remote: F,
    ) -> Result<Principal, TokenError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Option<TokenEntry>>,
    {
        match self.authenticate(token) {
            Err(TokenError::NotHere(id)) => {
                let (_, secret) = split_token(token)?;
                match remote(id).await {
                    Some(entry) => verify(&entry, secret),
                    None => Err(TokenError::Unknown),
                }
            }
            other => other,
        }
    }
}

/// `slurp_<id>_<secret>` into its id and secret.
fn split_token(token: &str) -> Result<(&str, &str), TokenError> {
    let rest = token.strip_prefix("slurp_").ok_or(TokenError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    if id.len() != 16 || secret.is_empty() || secret.len() > 128 {
        return Err(TokenError::Malformed);
    }
    Ok((id, secret))
}

/// Whether `secret` is `entry`'s (and the entry is not revoked).
fn verify(entry: &TokenEntry, secret: &str) -> Result<Principal, TokenError> {
    if entry.revoked_at_ms.is_some() {
        return Err(TokenError::Unknown);
    }
    let stored = blake3::Hash::from_hex(&entry.secret_hash).map_err(|_| TokenError::Unknown)?;
    // blake3::Hash equality is constant time.
    if stored != hash_secret(secret) {
        return Err(TokenError::Unknown);
    }
    Ok(Principal {
        token_id: entry.id.clone(),
        role: entry.role.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let store = TokenStore::open(&path).unwrap();
        assert!(store.is_empty());
        let (entry, token) = store
            .create(RoleName::new("developer").unwrap(), "ci")
            .unwrap();
        let p = store.authenticate(&token).unwrap();
        assert_eq!(p.role.as_str(), "developer");
        // The secret is not in the file.
        let text = std::fs::read_to_string(&path).unwrap();
        let secret = token.rsplit('_').next().unwrap();
        assert!(!text.contains(secret));
        // Reopen: still valid.
        let store = TokenStore::open(&path).unwrap();
        assert!(store.authenticate(&token).is_ok());
        // A changed secret fails.
        let mut bad = token.clone();
        bad.pop();
        bad.push('x');
        assert!(matches!(store.authenticate(&bad), Err(TokenError::Unknown)));
        assert!(matches!(
            store.authenticate("nope"),
            Err(TokenError::Malformed)
        ));
        store.revoke(&entry.id).unwrap();
        assert!(matches!(
            store.authenticate(&token),
            Err(TokenError::Unknown)
        ));
        assert!(matches!(store.revoke("0000"), Err(TokenError::NoSuchId(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn tokens_of_other_members_verify_against_their_entry() {
        let dir = tempfile::tempdir().unwrap();
        let here = TokenStore::open(dir.path().join("here.json")).unwrap();
        let there = TokenStore::open(dir.path().join("there.json")).unwrap();
        let (entry, token) = there
            .create(RoleName::new("architect").unwrap(), "elsewhere")
            .unwrap();
        // Not made here: a plain check says so, with the id to look up.
        assert!(
            matches!(here.authenticate(&token), Err(TokenError::NotHere(id)) if id == entry.id)
        );
        let remote = |e: Option<TokenEntry>| move |_id: String| async move { e };
        let p = here
            .authenticate_with(&token, remote(Some(entry.clone())))
            .await
            .unwrap();
        assert_eq!(p.role.as_str(), "architect");
        // No member knows it, a wrong secret, a revoked entry: refused.
        assert!(matches!(
            here.authenticate_with(&token, remote(None)).await,
            Err(TokenError::Unknown)
        ));
        let mut bad = token.clone();
        bad.pop();
        bad.push('x');
        assert!(matches!(
            here.authenticate_with(&bad, remote(Some(entry.clone())))
                .await,
            Err(TokenError::Unknown)
        ));
        let revoked = TokenEntry {
            revoked_at_ms: Some(1),
            ..entry.clone()
        };
        assert!(matches!(
            here.authenticate_with(&token, remote(Some(revoked))).await,
            Err(TokenError::Unknown)
        ));
        // A token made here never asks the others.
        let (_, mine) = here.create(RoleName::new("admin").unwrap(), "").unwrap();
        let p = here
            .authenticate_with(&mine, |_| async { panic!("looked up a local token") })
            .await
            .unwrap();
        assert_eq!(p.role.as_str(), "admin");
    }

    #[test]
    fn corrupt_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            TokenStore::open(&path),
            Err(TokenError::Corrupt { .. })
        ));
    }
}
