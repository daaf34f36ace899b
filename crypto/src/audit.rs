//! The audit log: an append-only, hash-chained record of who did what.
//!
//! Access decisions (reads, writes, searches, key operations, allowed or
//! denied) must be reviewable after the fact, and an intruder who gains
//! write access to the node's disk must not be able to quietly remove the
//! traces. Each entry therefore carries the hash of the entry before it
//! (the first chains to a fixed genesis value), so editing, dropping or
//! reordering any entry breaks the chain at that point. The *head* (the
//! sequence number and hash of the last durable entry) is kept in a small
//! side file and returned by every append, so callers can anchor it
//! elsewhere (another node, a ticket, a printout); dropping entries from
//! the end of the log is only detectable against such a head.
//!
//! Entries hold identifiers only (actor, role, action, target address or
//! key id, decision, reason), never any context content.
//!
//! # File format
//!
//! The log is a sequence of records `[len: u32 big-endian][entry]` where
//! `entry` is the framed CBOR of an [`AuditEntry`] (kind `AUDIT_ENTRY`).
//! The hash of an entry is BLAKE3 in derive-key mode (context
//! `"slurp audit entry v1"`) over its framed bytes. The head file
//! (`<log>.head`) is one fixed-length text line, see [`AuditHead`].
//!
//! # Durability and crashes
//!
//! [`AuditLog::append`] returns after the entry is fsynced and the head
//! file updated. Concurrent appends share fsyncs (group commit), and
//! [`AuditLog::append_batch`] writes many entries with one fsync. A crash
//! in the middle of an append can leave an incomplete last record (a cut
//! length prefix, a body shorter than its length, or trailing zeros); that
//! is reported as [`AuditError::TruncatedTail`], distinct from tampering,
//! and [`AuditLog::open`] repairs it by truncating the file to the end of
//! the last complete entry when [`AuditConfig::repair_truncated_tail`] is
//! set (the default). Nothing durable is lost: the head is only advanced
//! after the log is fsynced, so an incomplete entry was never acknowledged.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use slurp_protocol::RoleName;
use slurp_protocol::wire::{EncodeError, Framed, kinds};

use crate::fsutil;

/// Bytes of the length prefix before each entry.
pub const LEN_PREFIX: u64 = 4;

/// Problems appending to, reading or verifying the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit {field} is {len} bytes, over the limit of {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("audit actor must not be empty")]
    EmptyActor,
    #[error("audit entry is {len} bytes, over the limit of {max}")]
    EntryTooLarge { len: usize, max: usize },
    #[error(
        "log ends with an incomplete entry at offset {offset} ({bytes} bytes after entry \
         {last_seq}): an append was interrupted"
    )]
    TruncatedTail {
        offset: u64,
        last_seq: u64,
        bytes: u64,
    },
    #[error("entry {seq} at offset {offset} is unreadable: {reason}")]
    Malformed {
        offset: u64,
        seq: u64,
        reason: String,
    },
    #[error(
        "entry at offset {offset} has seq {found}, expected {expected}: entries were dropped, \
         inserted or reordered"
    )]
    SeqMismatch {
        offset: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "entry {seq} at offset {offset} does not chain to the entry before it: an earlier entry \
         was edited, dropped or reordered"
    )]
    ChainBroken { offset: u64, seq: u64 },
    #[error(
        "the head records entry {head_seq} but the log ends at entry {last_seq}: entries were \
         dropped from the end"
    )]
    HeadAhead { head_seq: u64, last_seq: u64 },
    #[error(
        "entry {seq} hashes to {found}, the head records {expected}: the entry was edited or \
         the log rewritten"
    )]
    HeadMismatch {
        seq: u64,
        expected: EntryHash,
        found: EntryHash,
    },
    #[error("head file {path} is unreadable: {reason}")]
    BadHead { path: PathBuf, reason: String },
    #[error("an earlier write to the audit log failed and could not be undone; reopen the log")]
    Poisoned,
    #[error("audit entry could not be encoded: {0}")]
    Encode(#[from] EncodeError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A BLAKE3 hash of an audit entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryHash([u8; 32]);

impl EntryHash {
    /// The value the first entry chains to: BLAKE3 of
    /// `"slurp audit log genesis v1"`.
    pub fn genesis() -> Self {
        EntryHash(*blake3::hash(b"slurp audit log genesis v1").as_bytes())
    }

    /// The hash of an entry's framed bytes.
    pub fn of_entry_bytes(bytes: &[u8]) -> Self {
        EntryHash(
            *blake3::Hasher::new_derive_key("slurp audit entry v1")
                .update(bytes)
                .finalize()
                .as_bytes(),
        )
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({self})")
    }
}

impl FromStr for EntryHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut h = [0u8; 32];
        hex::decode_to_slice(s, &mut h).map_err(|_| format!("not a 64-hex-digit hash: {s:?}"))?;
        Ok(EntryHash(h))
    }
}

impl Serialize for EntryHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = serde_bytes::ByteBuf::deserialize(d)?;
        let h: [u8; 32] = b
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(b.len(), &"a 32-byte hash"))?;
        Ok(EntryHash(h))
    }
}

/// What was attempted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Read,
    Write,
    Delete,
    Search,
    List,
    History,
    KeyGenerate,
    KeyRotate,
    KeyRewrap,
    KeyUnlock,
    KeyExport,
    ShareSplit,
    ShareRecover,
    /// Anything else, named by the caller.
    Other(String),
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuditAction::Read => "read",
            AuditAction::Write => "write",
            AuditAction::Delete => "delete",
            AuditAction::Search => "search",
            AuditAction::List => "list",
            AuditAction::History => "history",
            AuditAction::KeyGenerate => "key_generate",
            AuditAction::KeyRotate => "key_rotate",
            AuditAction::KeyRewrap => "key_rewrap",
            AuditAction::KeyUnlock => "key_unlock",
            AuditAction::KeyExport => "key_export",
            AuditAction::ShareSplit => "share_split",
            AuditAction::ShareRecover => "share_recover",
            AuditAction::Other(s) => s,
        })
    }
}

/// Whether the action was allowed.
pub use slurp_protocol::api::Decision;

/// What a caller records; the log adds seq, time and the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who acted: a token id, agent or role id. Never a secret.
    pub actor: String,
    /// The role the actor acted as, if any.
    pub role: Option<RoleName>,
    pub action: AuditAction,
    /// What was acted on: an address key or a key id. Never content.
    pub target: String,
    pub decision: Decision,
    /// Why (mostly for denials). Never content.
    pub reason: String,
}

impl AuditRecord {
    /// An allowed action with no reason.
    pub fn allow(actor: impl Into<String>, action: AuditAction, target: impl Into<String>) -> Self {
        AuditRecord {
            actor: actor.into(),
            role: None,
            action,
            target: target.into(),
            decision: Decision::Allow,
            reason: String::new(),
        }
    }

    /// A denied action and why.
    pub fn deny(
        actor: impl Into<String>,
        action: AuditAction,
        target: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        AuditRecord {
            decision: Decision::Deny,
            reason: reason.into(),
            ..Self::allow(actor, action, target)
        }
    }

    /// Sets the role acted as.
    pub fn with_role(mut self, role: RoleName) -> Self {
        self.role = Some(role);
        self
    }

    /// Sets why (an allowed action may say why too).
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    fn validate(&self, config: &AuditConfig) -> Result<(), AuditError> {
        if self.actor.is_empty() {
            return Err(AuditError::EmptyActor);
        }
        let other = match &self.action {
            AuditAction::Other(s) => s.len(),
            _ => 0,
        };
        for (field, len) in [
            ("actor", self.actor.len()),
            ("target", self.target.len()),
            ("reason", self.reason.len()),
            ("action", other),
        ] {
            if len > config.max_field_bytes {
                return Err(AuditError::FieldTooLong {
                    field,
                    len,
                    max: config.max_field_bytes,
                });
            }
        }
        Ok(())
    }
}

/// One entry of the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1 for the first entry, then +1 each.
    pub seq: u64,
    /// Milliseconds since the Unix epoch; never decreases along the log.
    pub time_ms: u64,
    pub actor: String,
    pub role: Option<RoleName>,
    pub action: AuditAction,
    pub target: String,
    pub decision: Decision,
    pub reason: String,
    /// Hash of the previous entry, or [`EntryHash::genesis`] for seq 1.
    pub prev: EntryHash,
}

impl Framed for AuditEntry {
    const KIND: u16 = kinds::AUDIT_ENTRY;
    const NAME: &'static str = "audit-entry";
    const VERSION: u16 = 1;
}

/// The last entry of a log: its seq and hash. An empty log's head is seq 0
/// with the genesis hash.
///
/// Written to the head file as one 122-byte line:
/// `slurp-audit-head 1 <seq, 20 digits> <hash, 64 hex> <check, 16 hex>\n`,
/// where check is the first 8 bytes of BLAKE3 of everything before it. The
/// `Display` form `<seq>:<hash>` is for anchoring elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: EntryHash,
}

const HEAD_MAGIC: &str = "slurp-audit-head 1";
const HEAD_LINE_LEN: usize = HEAD_MAGIC.len() + 1 + 20 + 1 + 64 + 1 + 16 + 1;

impl AuditHead {
    /// The head of an empty log.
    pub fn empty() -> Self {
        AuditHead {
            seq: 0,
            hash: EntryHash::genesis(),
        }
    }

    fn to_line(self) -> String {
        let body = format!("{HEAD_MAGIC} {:020} {}", self.seq, self.hash);
        let check = blake3::hash(body.as_bytes());
        format!("{body} {}\n", hex::encode(&check.as_bytes()[..8]))
    }

    fn from_line(line: &[u8]) -> Result<Self, String> {
        if line.len() != HEAD_LINE_LEN {
            return Err(format!("{} bytes, expected {HEAD_LINE_LEN}", line.len()));
        }
        let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
        let body = &text[..HEAD_LINE_LEN - 18];
        let check = &text[HEAD_LINE_LEN - 17..HEAD_LINE_LEN - 1];
        if hex::encode(&blake3::hash(body.as_bytes()).as_bytes()[..8]) != check {
            return Err("check value does not match (torn or edited)".into());
        }
        let mut parts = body
            .strip_prefix(HEAD_MAGIC)
            .ok_or("wrong magic")?
            .split_ascii_whitespace();
        let seq = parts.next().and_then(|s| s.parse().ok()).ok_or("bad seq")?;
        let hash = parts.next().ok_or("missing hash")?.parse()?;
        Ok(AuditHead { seq, hash })
    }
}

impl fmt::Display for AuditHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for AuditHead {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (seq, hash) = s.split_once(':').ok_or("expected <seq>:<hash>")?;
        Ok(AuditHead {
            seq: seq.parse().map_err(|_| format!("bad seq {seq:?}"))?,
            hash: hash.parse()?,
        })
    }
}

/// Limits and recovery behaviour of the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// Largest encoded entry written or read, in bytes.
    pub max_entry_bytes: usize,
    /// Longest actor, target, reason or custom action, in bytes.
    pub max_field_bytes: usize,
    /// Whether [`AuditLog::open`] truncates an incomplete last record left
    /// by a crash (otherwise it fails with [`AuditError::TruncatedTail`]).
    pub repair_truncated_tail: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_entry_bytes: 16 * 1024,
            max_field_bytes: 1024,
            repair_truncated_tail: true,
        }
    }
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries walked.
    pub entries: u64,
    /// The last entry.
    pub last: AuditHead,
    /// The head the log was checked against, if any.
    pub anchored: Option<AuditHead>,
    /// Entries after the anchored head: chained correctly but not covered
    /// by the anchor (normal after a crash between fsync and head update).
    pub unanchored_entries: u64,
}

/// An incomplete last record removed by [`AuditLog::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailRepair {
    /// Where the log now ends.
    pub offset: u64,
    /// Bytes removed.
    pub dropped_bytes: u64,
}

/// Which entries [`AuditLog::query`] returns; unset fields match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub role: Option<RoleName>,
    pub action: Option<AuditAction>,
    pub decision: Option<Decision>,
    /// Only entries with seq at least this.
    pub since_seq: Option<u64>,
    /// At most this many entries (the first ones matching).
    pub limit: Option<usize>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.actor.as_ref().is_none_or(|a| *a == e.actor)
            && self.target.as_ref().is_none_or(|t| *t == e.target)
            && self
                .role
                .as_ref()
                .is_none_or(|r| Some(r) == e.role.as_ref())
            && self.action.as_ref().is_none_or(|a| *a == e.action)
            && self.decision.is_none_or(|d| d == e.decision)
            && self.since_seq.is_none_or(|s| e.seq >= s)
    }
}

/// Reads entries in order, checking the chain as it goes; stops after the
/// first error.
pub struct AuditIter {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    end: u64,
    next_seq: u64,
    prev: EntryHash,
    last_time_ms: u64,
    max_entry_bytes: usize,
    failed: bool,
}

impl AuditIter {
    fn new(path: &Path, end: u64, config: &AuditConfig) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(io_err(path))?;
        Ok(AuditIter {
            reader: BufReader::with_capacity(64 * 1024, file),
            path: path.to_path_buf(),
            offset: 0,
            end,
            next_seq: 1,
            prev: EntryHash::genesis(),
            last_time_ms: 0,
            max_entry_bytes: config.max_entry_bytes,
            failed: false,
        })
    }

    /// The head after the entries read so far.
    pub fn head(&self) -> AuditHead {
        AuditHead {
            seq: self.next_seq - 1,
            hash: self.prev,
        }
    }

    /// Offset of the end of the last entry read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn truncated(&self) -> AuditError {
        AuditError::TruncatedTail {
            offset: self.offset,
            last_seq: self.next_seq - 1,
            bytes: self.end - self.offset,
        }
    }

    /// Whether every byte from here to the end is zero (a file-size update
    /// that reached the disk before the data did).
    fn rest_is_zero(&mut self, already_read: &[u8]) -> Result<bool, AuditError> {
        if already_read.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        let mut left = self.end - self.offset - already_read.len() as u64;
        let mut buf = [0u8; 8192];
        while left > 0 {
            let n = (left as usize).min(buf.len());
            self.reader
                .read_exact(&mut buf[..n])
                .map_err(io_err(&self.path))?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            left -= n as u64;
        }
        Ok(true)
    }

    /// The next entry with its offset and hash, `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<(u64, AuditEntry, EntryHash)>, AuditError> {
        if self.failed {
            return Ok(None);
        }
        let result = self.read_one();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn read_one(&mut self) -> Result<Option<(u64, AuditEntry, EntryHash)>, AuditError> {
        let remaining = self.end - self.offset;
        if remaining == 0 {
            return Ok(None);
        }
        if remaining < LEN_PREFIX {
            return Err(self.truncated());
        }
        let mut len_buf = [0u8; 4];
        self.reader
            .read_exact(&mut len_buf)
            .map_err(io_err(&self.path))?;
        let len = u32::from_be_bytes(len_buf) as u64;
        let malformed = |me: &Self, reason: String| AuditError::Malformed {
            offset: me.offset,
            seq: me.next_seq,
            reason,
        };
        if len == 0 {
            return Err(if self.rest_is_zero(&len_buf)? {
                self.truncated()
            } else {
                malformed(self, "zero-length record".into())
            });
        }
        if len > self.max_entry_bytes as u64 {
            return Err(malformed(
                self,
                format!(
                    "record length {len} over the limit of {}",
                    self.max_entry_bytes
                ),
            ));
        }
        if len > remaining - LEN_PREFIX {
            return Err(self.truncated());
        }
        let mut body = vec![0u8; len as usize];
        self.reader
            .read_exact(&mut body)
            .map_err(io_err(&self.path))?;
        let entry = AuditEntry::decode_limited(&body, self.max_entry_bytes)
            .map_err(|e| malformed(self, e.to_string()))?;
        if entry.seq != self.next_seq {
            return Err(AuditError::SeqMismatch {
                offset: self.offset,
                expected: self.next_seq,
                found: entry.seq,
            });
        }
        if entry.prev != self.prev {
            return Err(AuditError::ChainBroken {
                offset: self.offset,
                seq: entry.seq,
            });
        }
        let hash = EntryHash::of_entry_bytes(&body);
        let at = self.offset;
        self.offset += LEN_PREFIX + len;
        self.next_seq += 1;
        self.prev = hash;
        self.last_time_ms = entry.time_ms;
        Ok(Some((at, entry, hash)))
    }
}

impl Iterator for AuditIter {
    type Item = Result<AuditEntry, AuditError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose().map(|r| r.map(|(_, e, _)| e))
    }
}

/// Walks a log of `len` bytes, checking it against `anchor` if given.
/// Returns the report and the time of the last entry.
fn walk(
    path: &Path,
    len: u64,
    anchor: Option<AuditHead>,
    config: &AuditConfig,
) -> Result<(VerifyReport, u64), AuditError> {
    let mut it = AuditIter::new(path, len, config)?;
    let anchor = anchor.filter(|a| a.seq > 0);
    while let Some((_, entry, hash)) = it.next_entry()? {
        if let Some(a) = anchor
            && a.seq == entry.seq
            && a.hash != hash
        {
            return Err(AuditError::HeadMismatch {
                seq: a.seq,
                expected: a.hash,
                found: hash,
            });
        }
    }
    let last = it.head();
    if let Some(a) = anchor
        && a.seq > last.seq
    {
        return Err(AuditError::HeadAhead {
            head_seq: a.seq,
            last_seq: last.seq,
        });
    }
    Ok((
        VerifyReport {
            entries: last.seq,
            last,
            anchored: anchor,
            unanchored_entries: last.seq - anchor.map_or(0, |a| a.seq),
        },
        it.last_time_ms,
    ))
}

/// Verifies a log file offline against an optional anchored head (for
/// example one kept on another machine). Reports the first problem with its
/// seq and offset.
pub fn verify_file(
    path: &Path,
    anchor: Option<AuditHead>,
    config: &AuditConfig,
) -> Result<VerifyReport, AuditError> {
    let len = std::fs::metadata(path).map_err(io_err(path))?.len();
    walk(path, len, anchor, config).map(|(r, _)| r)
}

/// Reads a head file; `None` if it does not exist.
pub fn read_head_file(path: &Path) -> Result<Option<AuditHead>, AuditError> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => AuditHead::from_line(&bytes)
            .map(Some)
            .map_err(|reason| AuditError::BadHead {
                path: path.to_path_buf(),
                reason,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The head file path of a log: `<log>.head`.
pub fn head_path_of(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".head");
    log.with_file_name(name)
}

struct WriteState {
    file: File,
    /// Last entry written (maybe not yet durable).
    last: AuditHead,
    /// Bytes written.
    len: u64,
    last_time_ms: u64,
    poisoned: bool,
}

struct SyncState {
    durable: AuditHead,
    syncing: bool,
    poisoned: bool,
}

/// An open audit log; appends from many threads are safe and share fsyncs.
pub struct AuditLog {
    path: PathBuf,
    head_path: PathBuf,
    config: AuditConfig,
    write: Mutex<WriteState>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// A second handle on the log, fsynced without holding the write lock.
    sync_file: File,
    head_file: Mutex<File>,
    repaired: Option<TailRepair>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_private_rw(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(fsutil::PRIVATE_FILE_MODE);
    }
    opts.open(path)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AuditLog {
    /// Opens or creates the log at `path` (mode 0600) and its head file
    /// `<path>.head`, and verifies the whole chain against the head.
    ///
    /// An incomplete last record (crash mid-append) is truncated away if
    /// `config.repair_truncated_tail`, and reported by
    /// [`AuditLog::repaired`]. Any other problem (edited, dropped or
    /// reordered entries, a head ahead of the log) fails the open.
    pub fn open(path: impl Into<PathBuf>, config: AuditConfig) -> Result<Self, AuditError> {
        let path = path.into();
        let head_path = head_path_of(&path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fsutil::create_private_dir(dir).map_err(io_err(dir))?;
        }
        let file = open_private_rw(&path).map_err(io_err(&path))?;
        let head_file = open_private_rw(&head_path).map_err(io_err(&head_path))?;
        let anchor = read_head_file(&head_path)?;
        let mut len = file.metadata().map_err(io_err(&path))?.len();
        let mut repaired = None;
        let (report, last_time_ms) = match walk(&path, len, anchor, &config) {
            Ok(done) => done,
            Err(AuditError::TruncatedTail { offset, .. }) if config.repair_truncated_tail => {
                file.set_len(offset).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
                repaired = Some(TailRepair {
                    offset,
                    dropped_bytes: len - offset,
                });
                len = offset;
                walk(&path, len, anchor, &config)?
            }
            Err(e) => return Err(e),
        };
        let sync_file = file.try_clone().map_err(io_err(&path))?;
        let mut file = file;
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let log = AuditLog {
            write: Mutex::new(WriteState {
                file,
                last: report.last,
                len,
                last_time_ms,
                poisoned: false,
            }),
            sync: Mutex::new(SyncState {
                durable: report.last,
                syncing: false,
                poisoned: false,
            }),
            synced: Condvar::new(),
            sync_file,
            head_file: Mutex::new(head_file),
            path,
            head_path,
            config,
            repaired,
        };
        // Entries beyond the head are complete and chained: anchor them now.
        if anchor != Some(report.last) {
            log.sync_file.sync_data().map_err(io_err(&log.path))?;
            log.write_head(report.last)?;
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn head_path(&self) -> &Path {
        &self.head_path
    }

    /// The incomplete tail removed when opening, if any.
    pub fn repaired(&self) -> Option<TailRepair> {
        self.repaired
    }

    /// The head of the durable log.
    pub fn head(&self) -> AuditHead {
        lock(&self.sync).durable
    }

    /// Appends one entry and returns once it is durable (fsynced, head file
    /// updated). Concurrent calls share one fsync. Returns the new head: the
    /// entry's seq and hash.
    pub fn append(&self, record: &AuditRecord) -> Result<AuditHead, AuditError> {
        let heads = self.write_entries(std::slice::from_ref(record))?;
        let head = heads[0];
        self.sync_through(head.seq)?;
        Ok(head)
    }

    /// Appends several entries with one write and one fsync. Returns each
    /// entry's seq and hash, in order. Either all are written or none.
    pub fn append_batch(&self, records: &[AuditRecord]) -> Result<Vec<AuditHead>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let heads = self.write_entries(records)?;
        self.sync_through(heads[heads.len() - 1].seq)?;
        Ok(heads)
    }

    fn write_entries(&self, records: &[AuditRecord]) -> Result<Vec<AuditHead>, AuditError> {
        for r in records {
            r.validate(&self.config)?;
        }
        let mut w = lock(&self.write);
        if w.poisoned {
            return Err(AuditError::Poisoned);
        }
        let mut buf = Vec::with_capacity(records.len() * 256);
        let mut heads = Vec::with_capacity(records.len());
        let mut last = w.last;
        let time_ms = now_ms().max(w.last_time_ms);
        for r in records {
            let entry = AuditEntry {
                seq: last.seq + 1,
                time_ms,
                actor: r.actor.clone(),
                role: r.role.clone(),
                action: r.action.clone(),
                target: r.target.clone(),
                decision: r.decision,
                reason: r.reason.clone(),
                prev: last.hash,
            };
            let bytes = entry.encode()?;
            if bytes.len() > self.config.max_entry_bytes {
                return Err(AuditError::EntryTooLarge {
                    len: bytes.len(),
                    max: self.config.max_entry_bytes,
                });
            }
            buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            buf.extend_from_slice(&bytes);
            last = AuditHead {
                seq: entry.seq,
                hash: EntryHash::of_entry_bytes(&bytes),
            };
            heads.push(last);
        }
        if let Err(e) = w.file.write_all(&buf) {
            // Undo a partial write so the log stays a sequence of whole
            // entries; if even that fails, refuse further appends.
            let old_len = w.len;
            let undone = w
                .file
                .set_len(old_len)
                .and_then(|_| w.file.seek(SeekFrom::Start(old_len)).map(|_| ()));
            if undone.is_err() {
                w.poisoned = true;
            }
            return Err(io_err(&self.path)(e));
        }
        w.len += buf.len() as u64;
        w.last = last;
        w.last_time_ms = time_ms;
        Ok(heads)
    }

    /// Waits until entry `seq` is durable, leading an fsync if none is in
    /// progress. A failed fsync poisons the log: after one, the kernel may
    /// have dropped the dirty pages, and a later fsync could succeed
    /// without them.
    fn sync_through(&self, seq: u64) -> Result<(), AuditError> {
        let mut st = lock(&self.sync);
        loop {
            if st.poisoned {
                return Err(AuditError::Poisoned);
            }
            if st.durable.seq >= seq {
                return Ok(());
            }
            if !st.syncing {
                st.syncing = true;
                break;
            }
            st = self.synced.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        let target = lock(&self.write).last;
        let result = self
            .sync_file
            .sync_data()
            .map_err(io_err(&self.path))
            .and_then(|_| self.write_head(target));
        let mut st = lock(&self.sync);
        st.syncing = false;
        match &result {
            Ok(()) => st.durable = target,
            Err(_) => {
                st.poisoned = true;
                lock(&self.write).poisoned = true;
            }
        }
        self.synced.notify_all();
        result
    }

    fn write_head(&self, head: AuditHead) -> Result<(), AuditError> {
        let line = head.to_line();
        let mut f = lock(&self.head_file);
        (|| {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(line.as_bytes())?;
            f.set_len(line.len() as u64)?;
            f.sync_data()
        })()
        .map_err(io_err(&self.head_path))
    }

    /// Reads every written entry in order, checking the chain as it goes.
    pub fn iter(&self) -> Result<AuditIter, AuditError> {
        let len = lock(&self.write).len;
        AuditIter::new(&self.path, len, &self.config)
    }

    /// The entries matching `filter`, oldest first.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, AuditError> {
        let mut out = Vec::new();
        let limit = filter.limit.unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(out);
        }
        for entry in self.iter()? {
            let entry = entry?;
            if filter.matches(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Walks the log on disk and checks it against the head file: finds any
    /// edited, dropped or reordered entry and reports the first problem
    /// with its seq and offset.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let anchor = read_head_file(&self.head_path)?;
        self.verify_against(anchor)
    }

    /// Like [`AuditLog::verify`], against a head kept elsewhere.
    pub fn verify_against(&self, anchor: Option<AuditHead>) -> Result<VerifyReport, AuditError> {
        // Entries this process has finished writing; a concurrent append may
        // be half-way through the bytes after them. The anchor was read
        // before this snapshot, so it cannot be ahead of it.
        let written = lock(&self.write).len;
        let on_disk = std::fs::metadata(&self.path)
            .map_err(io_err(&self.path))?
            .len();
        let len = written.min(on_disk);
        walk(&self.path, len, anchor, &self.config).map(|(r, _)| r)
    }
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("head", &self.head())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;
    use std::sync::Arc;

    fn rec(i: usize) -> AuditRecord {
        let r = if i.is_multiple_of(3) {
            AuditRecord::deny(
                format!("token-{}", i % 4),
                AuditAction::Read,
                format!("ucxl://a:developer@p:t/src/f{}.rs", i % 5),
                "role may not read",
            )
        } else {
            AuditRecord::allow(
                format!("token-{}", i % 4),
                AuditAction::Write,
                format!("ucxl://a:developer@p:t/src/f{}.rs", i % 5),
            )
        };
        r.with_role(RoleName::new("developer").unwrap())
    }

    fn log_with(n: usize) -> (tempfile::TempDir, PathBuf, AuditHead) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, AuditConfig::default()).unwrap();
        let mut head = AuditHead::empty();
        for i in 0..n {
            head = log.append(&rec(i)).unwrap();
        }
        (dir, path, head)
    }

    /// Splits a log file into its raw records.
    fn records(path: &Path) -> Vec<Vec<u8>> {
        let bytes = fs::read(path).unwrap();
        let mut out = vec![];
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push(bytes[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        out
    }

    fn write_records(path: &Path, recs: &[Vec<u8>]) {
        let mut bytes = vec![];
        for r in recs {
            bytes.extend_from_slice(&(r.len() as u32).to_be_bytes());
            bytes.extend_from_slice(r);
        }
        fs::write(path, bytes).unwrap();
    }

    fn cfg() -> AuditConfig {
        AuditConfig::default()
    }

    #[test]
    fn append_chains_and_reads_back() {
        let (_dir, path, head) = log_with(10);
        let log = AuditLog::open(&path, cfg()).unwrap();
        assert_eq!(log.head(), head);
        assert_eq!(head.seq, 10);
        let entries: Vec<AuditEntry> = log.iter().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(entries.len(), 10);
        assert_eq!(entries[0].prev, EntryHash::genesis());
        for w in entries.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
            assert!(w[1].time_ms >= w[0].time_ms);
        }
        let report = log.verify().unwrap();
        assert_eq!(report.last, head);
        assert_eq!(report.unanchored_entries, 0);
        assert_eq!(read_head_file(&head_path_of(&path)).unwrap(), Some(head));
        assert_eq!(verify_file(&path, Some(head), &cfg()).unwrap().entries, 10);
        let h: AuditHead = head.to_string().parse().unwrap();
        assert_eq!(h, head);
    }

    #[test]
    fn query_filters() {
        let (_dir, path, _) = log_with(12);
        let log = AuditLog::open(&path, cfg()).unwrap();
        let denied = log
            .query(&AuditFilter {
                decision: Some(Decision::Deny),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(denied.len(), 4);
        assert!(denied.iter().all(|e| e.reason == "role may not read"));
        let by_actor = log
            .query(&AuditFilter {
                actor: Some("token-1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            by_actor.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 6, 10]
        );
        let by_target = log
            .query(&AuditFilter {
                target: Some("ucxl://a:developer@p:t/src/f0.rs".into()),
                since_seq: Some(2),
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_target.len(), 1);
        assert_eq!(by_target[0].seq, 6);
    }

    #[test]
    fn edited_entry_is_found() {
        let (_dir, path, head) = log_with(6);
        let mut recs = records(&path);
        let mut e = AuditEntry::decode(&recs[2]).unwrap();
        e.decision = Decision::Allow;
        e.reason = "nothing to see".into();
        recs[2] = e.encode().unwrap();
        write_records(&path, &recs);
        match verify_file(&path, Some(head), &cfg()) {
            Err(AuditError::ChainBroken { seq: 4, offset }) => {
                let expected: usize = recs[..3].iter().map(|r| r.len() + 4).sum();
                assert_eq!(offset, expected as u64);
            }
            other => panic!("expected ChainBroken at 4, got {other:?}"),
        }
        assert!(AuditLog::open(&path, cfg()).is_err());
    }

    #[test]
    fn edited_last_entry_needs_the_head() {
        let (_dir, path, head) = log_with(4);
        let mut recs = records(&path);
        let mut e = AuditEntry::decode(&recs[3]).unwrap();
        e.actor = "someone-else".into();
        recs[3] = e.encode().unwrap();
        write_records(&path, &recs);
        assert!(matches!(
            verify_file(&path, Some(head), &cfg()),
            Err(AuditError::HeadMismatch { seq: 4, .. })
        ));
        assert!(matches!(
            AuditLog::open(&path, cfg()),
            Err(AuditError::HeadMismatch { .. })
        ));
    }

    #[test]
    fn dropped_and_reordered_entries_are_found() {
        let (_dir, path, head) = log_with(6);
        let recs = records(&path);

        let mut dropped = recs.clone();
        dropped.remove(2);
        write_records(&path, &dropped);
        assert!(matches!(
            verify_file(&path, Some(head), &cfg()),
            Err(AuditError::SeqMismatch {
                expected: 3,
                found: 4,
                ..
            })
        ));

        let mut reordered = recs.clone();
        reordered.swap(1, 2);
        write_records(&path, &reordered);
        assert!(matches!(
            verify_file(&path, Some(head), &cfg()),
            Err(AuditError::SeqMismatch {
                expected: 2,
                found: 3,
                ..
            })
        ));

        // Dropping the last entries leaves a valid chain: only the head
        // shows it.
        write_records(&path, &recs[..4]);
        assert!(verify_file(&path, None, &cfg()).is_ok());
        assert!(matches!(
            verify_file(&path, Some(head), &cfg()),
            Err(AuditError::HeadAhead {
                head_seq: 6,
                last_seq: 4
            })
        ));
        assert!(matches!(
            AuditLog::open(&path, cfg()),
            Err(AuditError::HeadAhead { .. })
        ));
    }

    #[test]
    fn rewritten_chain_is_caught_by_an_external_anchor() {
        let (_dir, path, head) = log_with(3);
        // Rebuild a fully consistent forged log from scratch.
        fs::remove_file(&path).unwrap();
        fs::remove_file(head_path_of(&path)).unwrap();
        let log = AuditLog::open(&path, cfg()).unwrap();
        for i in 10..13 {
            log.append(&rec(i)).unwrap();
        }
        assert!(
            log.verify().is_ok(),
            "a forger can rewrite everything local"
        );
        assert!(matches!(
            log.verify_against(Some(head)),
            Err(AuditError::HeadMismatch { seq: 3, .. })
        ));
    }

    #[test]
    fn crash_mid_append_is_distinct_and_repaired() {
        let (_dir, path, head) = log_with(5);
        let full = fs::read(&path).unwrap();
        // A sixth entry as the writer would have produced it.
        let e = AuditEntry {
            seq: 6,
            time_ms: 1,
            actor: "x".into(),
            role: None,
            action: AuditAction::Search,
            target: "t".into(),
            decision: Decision::Allow,
            reason: String::new(),
            prev: head.hash,
        };
        let body = e.encode().unwrap();
        let mut record = (body.len() as u32).to_be_bytes().to_vec();
        record.extend_from_slice(&body);
        for cut in 1..record.len() {
            let mut torn = full.clone();
            torn.extend_from_slice(&record[..cut]);
            fs::write(&path, &torn).unwrap();
            match verify_file(&path, Some(head), &cfg()) {
                Err(AuditError::TruncatedTail {
                    offset, last_seq, ..
                }) => {
                    assert_eq!(offset, full.len() as u64);
                    assert_eq!(last_seq, 5);
                }
                other => panic!("cut {cut}: expected TruncatedTail, got {other:?}"),
            }
        }
        // Zeros where the data never landed.
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0u8; 700]);
        fs::write(&path, &zeros).unwrap();
        assert!(matches!(
            verify_file(&path, Some(head), &cfg()),
            Err(AuditError::TruncatedTail { .. })
        ));
        let strict = AuditConfig {
            repair_truncated_tail: false,
            ..cfg()
        };
        assert!(matches!(
            AuditLog::open(&path, strict),
            Err(AuditError::TruncatedTail { .. })
        ));
        let log = AuditLog::open(&path, cfg()).unwrap();
        assert_eq!(
            log.repaired(),
            Some(TailRepair {
                offset: full.len() as u64,
                dropped_bytes: 700
            })
        );
        assert_eq!(log.head(), head);
        let next = log.append(&rec(99)).unwrap();
        assert_eq!(next.seq, 6);
        assert_eq!(log.verify().unwrap().entries, 6);
    }

    #[test]
    fn head_lagging_after_a_crash_is_not_tampering() {
        let (_dir, path, head) = log_with(3);
        let head_path = head_path_of(&path);
        let old_head = fs::read(&head_path).unwrap();
        let log = AuditLog::open(&path, cfg()).unwrap();
        log.append(&rec(3)).unwrap();
        drop(log);
        // The crash hit between the log fsync and the head update.
        fs::write(&head_path, &old_head).unwrap();
        let report = verify_file(&path, Some(head), &cfg()).unwrap();
        assert_eq!(report.unanchored_entries, 1);
        let log = AuditLog::open(&path, cfg()).unwrap();
        assert_eq!(read_head_file(&head_path).unwrap(), Some(log.head()));
        assert_eq!(log.head().seq, 4);
        // A torn or edited head file is its own error.
        let mut bad = old_head.clone();
        bad[30] ^= 1;
        fs::write(&head_path, &bad).unwrap();
        assert!(matches!(
            AuditLog::open(&path, cfg()),
            Err(AuditError::BadHead { .. })
        ));
    }

    #[test]
    fn concurrent_appends_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = Arc::new(AuditLog::open(&path, cfg()).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| log.append(&rec(t * 10 + i)).unwrap().seq)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seqs.sort();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        let batch = log.append_batch(&[rec(1), rec(2), rec(3)]).unwrap();
        assert_eq!(
            batch.iter().map(|h| h.seq).collect::<Vec<_>>(),
            vec![41, 42, 43]
        );
        assert_eq!(log.head(), batch[2]);
        assert_eq!(log.verify().unwrap().last, batch[2]);
    }

    #[test]
    fn limits_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path().join("a.log"), cfg()).unwrap();
        let mut r = rec(1);
        r.reason = "x".repeat(2000);
        assert!(matches!(
            log.append(&r),
            Err(AuditError::FieldTooLong {
                field: "reason",
                ..
            })
        ));
        let mut r = rec(1);
        r.actor.clear();
        assert!(matches!(log.append(&r), Err(AuditError::EmptyActor)));
        assert_eq!(log.head(), AuditHead::empty());
        // A record length over the limit is corruption, not a torn tail.
        let path = dir.path().join("b.log");
        fs::write(&path, [0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
        assert!(matches!(
            verify_file(&path, None, &cfg()),
            Err(AuditError::Malformed { offset: 0, .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Changing any single byte of the log is reported, never accepted.
        #[test]
        fn any_byte_edit_is_detected(idx in any::<prop::sample::Index>(), delta in 1u8..=255) {
            let (_dir, path, head) = log_with(4);
            let mut bytes = fs::read(&path).unwrap();
            let i = idx.index(bytes.len());
            bytes[i] = bytes[i].wrapping_add(delta);
            fs::write(&path, &bytes).unwrap();
            prop_assert!(verify_file(&path, Some(head), &cfg()).is_err());
        }
    }
}
