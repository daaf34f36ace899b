//! API tokens: bearer secrets bound to a role.
//!
//! A token reads `slurp_<id>_<secret>`. The id (public, 8 bytes hex) finds
//! the entry; only blake3 of the secret is stored, compared in constant
//! time, so the tokens file does not let anyone who reads it call the API.
//! On a fresh data directory the node creates one admin token and writes it
//! to `admin.token` (mode 0600) for the operator; every other token is made
//! and revoked by an admin through the API.
//!
//! A token may carry limits ([`TokenLimits`]): networks its caller's
//! address must be in and a validity window. They are checked after the
//! secret, on every use, by the node the client connected to, and travel
//! with the token's record when another member looks it up.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use slurp_protocol::RoleName;
use slurp_protocol::messages::{TokenRecord, TokenRecordLimits};

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
    /// The secret is right but the token's limits refuse this use.
    #[error("{refusal}")]
    Refused {
        principal: Principal,
        refusal: LimitRefusal,
    },
}

/// Where and when a token may be used. The default has no limits.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenLimits {
    /// Networks the caller's address must be in; empty: any address.
    #[serde(default)]
    pub allow_from: Vec<IpNet>,
    /// Not valid before this time, milliseconds since the Unix epoch.
    #[serde(default)]
    pub not_before_ms: Option<u64>,
    /// Not valid after this time (inclusive), milliseconds since the Unix
    /// epoch.
    #[serde(default)]
    pub not_after_ms: Option<u64>,
}

/// Networks a token may list at most.
pub const MAX_ALLOW_FROM: usize = 64;

/// Why a token's limits refuse a use. Each has its own API error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitRefusal {
    #[error("token {id} is not valid before {}", time_text(*not_before_ms))]
    NotYetValid { id: String, not_before_ms: u64 },
    #[error("token {id} expired at {}", time_text(*not_after_ms))]
    Expired { id: String, not_after_ms: u64 },
    #[error(
        "token {id} may not be used from {} (allowed: {})",
        client.map(|c| c.to_string()).unwrap_or_else(|| "an unknown address".into()),
        allowed.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    )]
    Network {
        id: String,
        client: Option<IpAddr>,
        allowed: Vec<IpNet>,
    },
}

impl LimitRefusal {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            LimitRefusal::NotYetValid { .. } => "token_not_yet_valid",
            LimitRefusal::Expired { .. } => "token_expired",
            LimitRefusal::Network { .. } => "token_network",
        }
    }
}

/// A time in milliseconds since the Unix epoch as RFC 3339 (UTC).
pub fn time_text(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    if ms.is_multiple_of(1000) {
        humantime::format_rfc3339_seconds(t).to_string()
    } else {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

/// A time as RFC 3339 in UTC (`2026-11-01T09:00:00Z`; the `T` may be a
/// space and the `Z` left out) or as milliseconds since the Unix epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("`{s}` is too large for milliseconds since the Unix epoch"));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("`{s}` is not an RFC 3339 time in UTC such as 2026-11-01T09:00:00Z ({e})")
    })?;
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("`{s}` is before 1970"))
}

/// A network in CIDR form (`10.1.0.0/16`, `fd00::/8`); a bare address is
/// that one host. Host bits are cleared (`10.1.2.3/16` is `10.1.0.0/16`).
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{s}` is not a network in CIDR form such as 10.0.0.0/8 or fd00::/8"))
}

impl TokenLimits {
    /// Whether the token may be used anywhere, any time.
    pub fn is_empty(&self) -> bool {
        self.allow_from.is_empty() && self.not_before_ms.is_none() && self.not_after_ms.is_none()
    }

    /// Checks limits a new token is given at `now_ms`: a window that ends
    /// before it starts, or has already ended, would make a token nobody
    /// can use.
    pub fn validate(&self, now_ms: u64) -> Result<(), String> {
        if self.allow_from.len() > MAX_ALLOW_FROM {
            return Err(format!(
                "allow_from lists {} networks, over the limit of {MAX_ALLOW_FROM}",
                self.allow_from.len()
            ));
        }
        if let (Some(b), Some(a)) = (self.not_before_ms, self.not_after_ms)
            && a < b
        {
            return Err(format!(
                "not_after ({}) is before not_before ({})",
                time_text(a),
                time_text(b)
            ));
        }
        if let Some(a) = self.not_after_ms
            && a < now_ms
        {
            return Err(format!("not_after ({}) has already passed", time_text(a)));
        }
        Ok(())
    }

    /// Whether token `id` may be used as `at` says: inside its window
    /// (both ends included) and, when it lists networks, from an address in
    /// one of them (an IPv4 address mapped into IPv6 counts as IPv4; an
    /// unknown address is in none).
    pub fn check(&self, id: &str, at: TokenUse) -> Result<(), LimitRefusal> {
        if let Some(b) = self.not_before_ms
            && at.now_ms < b
        {
            return Err(LimitRefusal::NotYetValid {
                id: id.to_string(),
                not_before_ms: b,
            });
        }
        if let Some(a) = self.not_after_ms
            && at.now_ms > a
        {
            return Err(LimitRefusal::Expired {
                id: id.to_string(),
                not_after_ms: a,
            });
        }
        if !self.allow_from.is_empty() {
            let client = at.client.map(|c| c.to_canonical());
            if !client.is_some_and(|c| self.allow_from.iter().any(|n| n.contains(&c))) {
                return Err(LimitRefusal::Network {
                    id: id.to_string(),
                    client,
                    allowed: self.allow_from.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Where and when a token is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUse {
    /// The address of the client's connection (never a header); `None`
    /// when unknown, which no network limit admits.
    pub client: Option<IpAddr>,
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
}

impl TokenUse {
    /// A use now from `client`.
    pub fn now(client: Option<IpAddr>) -> Self {
        TokenUse {
            client,
            now_ms: now_ms(),
        }
    }
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
    /// Where and when the token may be used (absent in files written
    /// before tokens had limits: none).
    #[serde(flatten)]
    pub limits: TokenLimits,
}

impl TokenEntry {
    /// The record other members get when they look this token up.
    pub fn to_record(&self) -> TokenRecord {
        let limited = !self.limits.is_empty();
        TokenRecord {
            id: self.id.clone(),
            role: self.role.clone(),
            secret_hash: if limited {
                String::new()
            } else {
                self.secret_hash.clone()
            },
            revoked: self.revoked_at_ms.is_some(),
            limits: limited.then(|| TokenRecordLimits {
                secret_hash: self.secret_hash.clone(),
                allow_from: self
                    .limits
                    .allow_from
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
                not_before_ms: self.limits.not_before_ms,
                not_after_ms: self.limits.not_after_ms,
            }),
        }
    }

    /// The entry of a record another member sent; an error when its
    /// limits do not parse (the token is then refused, never accepted
    /// without them).
    pub fn from_record(r: TokenRecord) -> Result<TokenEntry, String> {
        let (secret_hash, limits) = match r.limits {
            None => (r.secret_hash, TokenLimits::default()),
            Some(l) => (
                l.secret_hash,
                TokenLimits {
                    allow_from: l
                        .allow_from
                        .iter()
                        .map(|n| parse_network(n))
                        .collect::<Result<_, _>>()?,
                    not_before_ms: l.not_before_ms,
                    not_after_ms: l.not_after_ms,
                },
            ),
        };
        Ok(TokenEntry {
            id: r.id,
            role: r.role,
            secret_hash,
            label: String::new(),
            created_at_ms: 0,
            revoked_at_ms: r.revoked.then_some(0),
            limits,
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    format: u16,
    /// Tokens made on this node.
    tokens: BTreeMap<String, TokenEntry>,
    /// Tokens other members made, as they replicated them (hashes only).
    #[serde(default)]
    others: BTreeMap<String, TokenEntry>,
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
                others: BTreeMap::new(),
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
        self.create_limited(role, label, TokenLimits::default())
    }

    /// [`TokenStore::create`] with limits (checked by the caller, see
    /// [`TokenLimits::validate`]).
    pub fn create_limited(
        &self,
        role: RoleName,
        label: &str,
        limits: TokenLimits,
    ) -> Result<(TokenEntry, String), TokenError> {
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
            limits,
        };
        let mut file = self.file.write().unwrap_or_else(|e| e.into_inner());
        file.tokens.insert(id.clone(), entry.clone());
        if let Err(e) = self.save(&file) {
            file.tokens.remove(&id);
            return Err(e);
        }
        Ok((entry, format!("slurp_{id}_{secret}")))
    }

    /// Revokes a token by id: one made here, or one another member made
    /// and replicated here (the revocation is then replicated back).
    pub fn revoke(&self, id: &str) -> Result<TokenEntry, TokenError> {
        let mut file = self.file.write().unwrap_or_else(|e| e.into_inner());
        let own = file.tokens.contains_key(id);
        let entry = if own {
            file.tokens.get_mut(id)
        } else {
            file.others.get_mut(id)
        }
        .ok_or_else(|| TokenError::NoSuchId(id.to_string()))?;
        let before = entry.revoked_at_ms;
        entry.revoked_at_ms.get_or_insert_with(now_ms);
        let out = entry.clone();
        if let Err(e) = self.save(&file) {
            let entry = if own {
                file.tokens.get_mut(id)
            } else {
                file.others.get_mut(id)
            };
            if let Some(entry) = entry {
                entry.revoked_at_ms = before;
            }
            return Err(e);
        }
        Ok(out)
    }

    /// The records of every token made on this node (for a member's
    /// `GetTokens`).
    pub fn own_records(&self) -> Vec<TokenRecord> {
        self.file
            .read()
            .map(|f| f.tokens.values().map(|e| e.to_record()).collect())
            .unwrap_or_default()
    }

    /// The record of token `id`, made here or replicated here.
    pub fn record(&self, id: &str) -> Option<TokenRecord> {
        let f = self.file.read().unwrap_or_else(|e| e.into_inner());
        f.tokens
            .get(id)
            .or_else(|| f.others.get(id))
            .map(|e| e.to_record())
    }

    /// Takes records another member sent: new tokens are kept, and a
    /// revocation always wins (also of a token made here). A record is
    /// taken only if `may` allows its role (the sender was certified for
    /// it). Returns how many records changed what this node holds.
    pub fn merge(
        &self,
        records: Vec<TokenRecord>,
        may: impl Fn(&RoleName) -> bool,
    ) -> Result<usize, TokenError> {
        let mut file = self.file.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = 0;
        for r in records {
            if !may(&r.role) || split_token(&format!("slurp_{}_x", r.id)).is_err() {
                continue;
            }
            let revoked = r.revoked;
            if let Some(own) = file.tokens.get_mut(&r.id) {
                if revoked && own.revoked_at_ms.is_none() && own.role == r.role {
                    own.revoked_at_ms = Some(now_ms());
                    changed += 1;
                }
                continue;
            }
            let Ok(mut entry) = TokenEntry::from_record(r) else {
                continue;
            };
            match file.others.get_mut(&entry.id) {
                Some(have) if have.revoked_at_ms.is_some() => {}
                Some(have) if revoked => {
                    have.revoked_at_ms = Some(now_ms());
                    changed += 1;
                }
                Some(_) => {}
                None => {
                    if revoked {
                        entry.revoked_at_ms = Some(now_ms());
                    }
                    file.others.insert(entry.id.clone(), entry);
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            self.save(&file)?;
        }
        Ok(changed)
    }

    /// Every token entry: those made here, then those other members
    /// made and replicated here.
    pub fn list(&self) -> Vec<TokenEntry> {
        self.file
            .read()
            .map(|f| {
                f.tokens
                    .values()
                    .chain(f.others.values())
                    .cloned()
                    .collect()
            })
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

    /// The entry of token `id` as another member replicated it.
    pub fn replicated(&self, id: &str) -> Option<TokenEntry> {
        self.file
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .others
            .get(id)
            .cloned()
    }

    /// Checks a bearer token against the tokens made on this node or
    /// replicated to it, and its limits against `at`.
    pub fn authenticate(&self, token: &str, at: TokenUse) -> Result<Principal, TokenError> {
        let (id, secret) = split_token(token)?;
        let entry = self
            .entry(id)
            .or_else(|| self.replicated(id))
            .ok_or_else(|| TokenError::NotHere(id.to_string()))?;
        verify(&entry, secret, at)
    }

    /// Checks a bearer token made on this node or, when not, against the
    /// entry `remote` finds for its id (another cluster member's; only
    /// hashes of secrets travel), and its limits against `at`. Unknown
    /// everywhere is `Unknown`.
    pub async fn authenticate_with<F, Fut>(
        &self,
        token: &str,
        at: TokenUse,
        remote: F,
    ) -> Result<Principal, TokenError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Option<TokenEntry>>,
    {
        match self.authenticate(token, at) {
            Err(TokenError::NotHere(id)) => {
                let (_, secret) = split_token(token)?;
                match remote(id).await {
                    Some(entry) => verify(&entry, secret, at),
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

/// Whether `secret` is `entry`'s, the entry is not revoked and its limits
/// admit `at` (checked only once the secret matched, so they tell nothing
/// to whoever lacks it).
fn verify(entry: &TokenEntry, secret: &str, at: TokenUse) -> Result<Principal, TokenError> {
    if entry.revoked_at_ms.is_some() {
        return Err(TokenError::Unknown);
    }
    let stored = blake3::Hash::from_hex(&entry.secret_hash).map_err(|_| TokenError::Unknown)?;
    // blake3::Hash equality is constant time.
    if stored != hash_secret(secret) {
        return Err(TokenError::Unknown);
    }
    let principal = Principal {
        token_id: entry.id.clone(),
        role: entry.role.clone(),
    };
    match entry.limits.check(&entry.id, at) {
        Ok(()) => Ok(principal),
        Err(refusal) => Err(TokenError::Refused { principal, refusal }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anywhere() -> TokenUse {
        TokenUse::now(None)
    }

    #[test]
    fn replicated_tokens_authenticate_and_revocations_always_win() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenStore::open(dir.path().join("a.json")).unwrap();
        let b = TokenStore::open(dir.path().join("b.json")).unwrap();
        let dev = RoleName::new("developer").unwrap();
        let (entry, token) = a.create(dev.clone(), "made on a").unwrap();
        // A member not certified for the role cannot hand it over.
        assert_eq!(b.merge(a.own_records(), |_| false).unwrap(), 0);
        assert!(b.authenticate(&token, anywhere()).is_err());
        assert_eq!(b.merge(a.own_records(), |r| *r == dev).unwrap(), 1);
        assert_eq!(b.authenticate(&token, anywhere()).unwrap().role, dev);
        // Taking the same record again changes nothing.
        assert_eq!(b.merge(a.own_records(), |_| true).unwrap(), 0);
        // Revoked on b, which did not make it; a takes the revocation.
        let revoked = b.revoke(&entry.id).unwrap().to_record();
        assert!(matches!(
            b.authenticate(&token, anywhere()),
            Err(TokenError::Unknown)
        ));
        assert_eq!(a.merge(vec![revoked], |_| true).unwrap(), 1);
        assert!(a.authenticate(&token, anywhere()).is_err());
        // An older, unrevoked record does not bring it back anywhere.
        let mut stale = entry.to_record();
        stale.revoked = false;
        assert_eq!(a.merge(vec![stale.clone()], |_| true).unwrap(), 0);
        assert_eq!(b.merge(vec![stale], |_| true).unwrap(), 0);
        assert!(b.authenticate(&token, anywhere()).is_err());
        // Replicated records survive a restart.
        let again = TokenStore::open(dir.path().join("b.json")).unwrap();
        assert!(again.replicated(&entry.id).unwrap().revoked_at_ms.is_some());
    }

    #[test]
    fn create_authenticate_revoke_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let store = TokenStore::open(&path).unwrap();
        assert!(store.is_empty());
        let (entry, token) = store
            .create(RoleName::new("developer").unwrap(), "ci")
            .unwrap();
        let p = store.authenticate(&token, anywhere()).unwrap();
        assert_eq!(p.role.as_str(), "developer");
        // The secret is not in the file.
        let text = std::fs::read_to_string(&path).unwrap();
        let secret = token.rsplit('_').next().unwrap();
        assert!(!text.contains(secret));
        // Reopen: still valid.
        let store = TokenStore::open(&path).unwrap();
        assert!(store.authenticate(&token, anywhere()).is_ok());
        // A changed secret fails.
        let mut bad = token.clone();
        bad.pop();
        bad.push('x');
        assert!(matches!(
            store.authenticate(&bad, anywhere()),
            Err(TokenError::Unknown)
        ));
        assert!(matches!(
            store.authenticate("nope", anywhere()),
            Err(TokenError::Malformed)
        ));
        store.revoke(&entry.id).unwrap();
        assert!(matches!(
            store.authenticate(&token, anywhere()),
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
            matches!(here.authenticate(&token, anywhere()), Err(TokenError::NotHere(id)) if id == entry.id)
        );
        let remote = |e: Option<TokenEntry>| move |_id: String| async move { e };
        let p = here
            .authenticate_with(&token, anywhere(), remote(Some(entry.clone())))
            .await
            .unwrap();
        assert_eq!(p.role.as_str(), "architect");
        // No member knows it, a wrong secret, a revoked entry: refused.
        assert!(matches!(
            here.authenticate_with(&token, anywhere(), remote(None))
                .await,
            Err(TokenError::Unknown)
        ));
        let mut bad = token.clone();
        bad.pop();
        bad.push('x');
        assert!(matches!(
            here.authenticate_with(&bad, anywhere(), remote(Some(entry.clone())))
                .await,
            Err(TokenError::Unknown)
        ));
        let revoked = TokenEntry {
            revoked_at_ms: Some(1),
            ..entry.clone()
        };
        assert!(matches!(
            here.authenticate_with(&token, anywhere(), remote(Some(revoked)))
                .await,
            Err(TokenError::Unknown)
        ));
        // A token made here never asks the others.
        let (_, mine) = here.create(RoleName::new("admin").unwrap(), "").unwrap();
        let p = here
            .authenticate_with(&mine, anywhere(), |_| async {
                panic!("looked up a local token")
            })
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

    fn at(client: &str, now_ms: u64) -> TokenUse {
        TokenUse {
            client: Some(client.parse().unwrap()),
            now_ms,
        }
    }

    #[test]
    fn limits_admit_only_their_networks_and_window() {
        let limits = TokenLimits {
            allow_from: vec![
                parse_network("10.1.2.3/16").unwrap(),
                parse_network("fd00::/8").unwrap(),
                parse_network("192.0.2.7").unwrap(),
            ],
            not_before_ms: Some(1_000),
            not_after_ms: Some(2_000),
        };
        assert_eq!(limits.allow_from[0].to_string(), "10.1.0.0/16");
        assert_eq!(limits.allow_from[2].to_string(), "192.0.2.7/32");
        for ok in ["10.1.200.9", "fd12::1", "192.0.2.7", "::ffff:10.1.0.1"] {
            assert_eq!(limits.check("t", at(ok, 1_500)), Ok(()), "{ok}");
        }
        // Both ends of the window are inside it.
        assert_eq!(limits.check("t", at("10.1.0.1", 1_000)), Ok(()));
        assert_eq!(limits.check("t", at("10.1.0.1", 2_000)), Ok(()));
        let e = limits.check("t", at("10.1.0.1", 999)).unwrap_err();
        assert_eq!(e.code(), "token_not_yet_valid");
        assert!(e.to_string().contains("1970-01-01T00:00:01Z"), "{e}");
        let e = limits.check("t", at("10.1.0.1", 2_001)).unwrap_err();
        assert_eq!(e.code(), "token_expired");
        for bad in ["10.2.0.1", "127.0.0.1", "::1", "192.0.2.8"] {
            let e = limits.check("t", at(bad, 1_500)).unwrap_err();
            assert_eq!(e.code(), "token_network", "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        // An unknown client address is in no network.
        let unknown = TokenUse {
            client: None,
            now_ms: 1_500,
        };
        assert_eq!(
            limits.check("t", unknown).unwrap_err().code(),
            "token_network"
        );
        // No limits: anything goes.
        assert_eq!(TokenLimits::default().check("t", unknown), Ok(()));
    }

    #[test]
    fn limit_inputs_are_checked() {
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("localhost").is_err());
        assert_eq!(parse_time("1500").unwrap(), 1_500);
        assert_eq!(parse_time("1970-01-01T00:00:02Z").unwrap(), 2_000);
        assert_eq!(parse_time("1970-01-01 00:00:02").unwrap(), 2_000);
        assert!(parse_time("tomorrow").is_err());
        let window = |b, a| TokenLimits {
            not_before_ms: b,
            not_after_ms: a,
            ..TokenLimits::default()
        };
        assert!(window(Some(5), Some(4)).validate(0).is_err());
        assert!(window(None, Some(4)).validate(5).is_err());
        assert!(window(Some(5), Some(9)).validate(0).is_ok());
        let many = TokenLimits {
            allow_from: vec![parse_network("10.0.0.0/8").unwrap(); MAX_ALLOW_FROM + 1],
            ..TokenLimits::default()
        };
        assert!(many.validate(0).is_err());
    }

    #[test]
    fn limited_tokens_are_refused_after_the_secret_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let store = TokenStore::open(&path).unwrap();
        let limits = TokenLimits {
            allow_from: vec![parse_network("10.0.0.0/8").unwrap()],
            not_before_ms: None,
            not_after_ms: Some(now_ms() + 3_600_000),
        };
        let (entry, token) = store
            .create_limited(RoleName::new("developer").unwrap(), "ci", limits.clone())
            .unwrap();
        assert_eq!(entry.limits, limits);
        let here = TokenUse::now(Some("127.0.0.1".parse().unwrap()));
        match store.authenticate(&token, here) {
            Err(TokenError::Refused { principal, refusal }) => {
                assert_eq!(principal.token_id, entry.id);
                assert_eq!(refusal.code(), "token_network");
            }
            other => panic!("{other:?}"),
        }
        // A wrong secret says nothing about the limits.
        let mut bad = token.clone();
        bad.pop();
        bad.push('x');
        assert!(matches!(
            store.authenticate(&bad, here),
            Err(TokenError::Unknown)
        ));
        let inside = TokenUse::now(Some("10.9.8.7".parse().unwrap()));
        assert!(store.authenticate(&token, inside).is_ok());
        // The limits are kept in the file.
        let store = TokenStore::open(&path).unwrap();
        assert_eq!(store.entry(&entry.id).unwrap().limits, limits);
        assert!(store.authenticate(&token, here).is_err());
    }

    #[test]
    fn token_files_without_limits_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let (entry, token) = TokenStore::open(&path)
            .unwrap()
            .create(RoleName::new("admin").unwrap(), "old")
            .unwrap();
        // As written before tokens had limits.
        let old = serde_json::json!({"format": 1, "tokens": {entry.id.clone(): {
            "id": entry.id, "role": "admin", "secret_hash": entry.secret_hash,
            "label": "old", "created_at_ms": 1, "revoked_at_ms": null}}});
        std::fs::write(&path, old.to_string()).unwrap();
        let store = TokenStore::open(&path).unwrap();
        assert!(store.entry(&entry.id).unwrap().limits.is_empty());
        assert!(store.authenticate(&token, anywhere()).is_ok());
    }

    #[test]
    fn limits_travel_with_the_record_and_old_members_refuse_limited_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path().join("t.json")).unwrap();
        let (plain, _) = store.create(RoleName::new("admin").unwrap(), "").unwrap();
        let r = plain.to_record();
        assert_eq!(r.secret_hash, plain.secret_hash);
        assert!(r.limits.is_none());
        assert_eq!(TokenEntry::from_record(r).unwrap().limits, plain.limits);

        let limits = TokenLimits {
            allow_from: vec![parse_network("fd00::/8").unwrap()],
            not_before_ms: Some(5),
            not_after_ms: None,
        };
        let (limited, token) = store
            .create_limited(RoleName::new("admin").unwrap(), "", limits.clone())
            .unwrap();
        let r = limited.to_record();
        // A member that does not know limits finds no hash to match.
        assert!(r.secret_hash.is_empty());
        let back = TokenEntry::from_record(r.clone()).unwrap();
        assert_eq!(back.limits, limits);
        assert_eq!(back.secret_hash, limited.secret_hash);
        let (_, secret) = split_token(&token).unwrap();
        let as_old_member = TokenEntry {
            secret_hash: r.secret_hash.clone(),
            limits: TokenLimits::default(),
            ..back.clone()
        };
        assert!(matches!(
            verify(&as_old_member, secret, anywhere()),
            Err(TokenError::Unknown)
        ));
        // Limits that do not parse refuse the token.
        let mut broken = r;
        broken.limits.as_mut().unwrap().allow_from = vec!["not a network".into()];
        assert!(TokenEntry::from_record(broken).is_err());
    }
}
