//! The values the store writes, and how they are encoded.
//!
//! Every structured value is a [`Framed`] CBOR record (`[kind, version,
//! body]`), so a value read from the wrong table or written by a newer build
//! fails with a typed error instead of half-parsing. The one exception is
//! the latest-version entry, read on every write: a fixed binary header (a
//! format byte and two counters) followed by a framed [`RecordMeta`], so it
//! needs no kind of its own. Decoding never panics; every failure becomes a
//! [`CorruptValue`] naming the table and the key.

use serde::{Deserialize, Serialize};
use slurp_protocol::wire::{DEFAULT_MAX_DECODE, kinds};
use slurp_protocol::{Bytes, Framed, Hlc, RecordMeta, RoleName, VersionId};

use crate::error::CorruptValue;

/// How an envelope is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// The envelope bytes as given.
    Raw,
    /// A zstd frame of the envelope.
    Zstd,
}

/// A value of the `versions` table: one version of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    pub meta: RecordMeta,
    pub codec: Codec,
    /// Length of the envelope once decoded.
    pub raw_len: u64,
    /// The envelope, encoded with `codec`.
    pub data: Bytes,
}

impl Framed for StoredVersion {
    const KIND: u16 = kinds::STORED_VERSION;
    const NAME: &'static str = "stored-version";
    const VERSION: u16 = 1;
}

/// A value of the `acl` table: who owns an address and who may read and
/// write it. The node decides what the fields mean; the store keeps them
/// with the address so they move with its partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRecord {
    /// The writer (node or agent id) that owns the address.
    pub owner: String,
    /// Roles that may read it.
    #[serde(default)]
    pub readers: Vec<RoleName>,
    /// Roles that may write new versions.
    #[serde(default)]
    pub writers: Vec<RoleName>,
    /// When the record was last changed.
    #[serde(default)]
    pub updated: Hlc,
}

impl Framed for AclRecord {
    const KIND: u16 = kinds::ACL_RECORD;
    const NAME: &'static str = "acl";
    const VERSION: u16 = 1;
}

/// A value of the `tombstones` table: the address's newest version is a
/// tombstone. Kept until a garbage collector has seen every replica
/// acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneEntry {
    /// The tombstone version.
    pub version: VersionId,
    /// Local time the tombstone became the newest version, milliseconds
    /// since the Unix epoch.
    pub recorded_at_ms: u64,
}

impl Framed for TombstoneEntry {
    const KIND: u16 = kinds::TOMBSTONE;
    const NAME: &'static str = "tombstone";
    const VERSION: u16 = 1;
}

/// Whether a backup holds everything or only what changed since another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    /// Versions with a clock after the base backup's watermark.
    Incremental {
        base: String,
    },
}

/// A value of the `backups` table: what one backup contains and where it
/// went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// `[A-Za-z0-9_.-]{1,128}`.
    pub id: String,
    pub kind: BackupKind,
    /// Local time the backup was taken, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Versions with a clock after this were not included (`None`: from the
    /// beginning).
    #[serde(default)]
    pub since: Option<Hlc>,
    /// Every version up to this clock is included.
    pub watermark: Hlc,
    /// The inclusive slot range covered.
    pub slots: (u16, u16),
    pub versions: u64,
    pub bytes: u64,
    /// Where the backup was written (a path or URL; the node decides).
    pub location: String,
    /// A digest of the backup's content, if the writer computed one.
    #[serde(default)]
    pub digest: Option<Bytes>,
    /// Whether the backup was written to the end.
    pub complete: bool,
}

impl Framed for BackupMeta {
    const KIND: u16 = kinds::BACKUP_META;
    const NAME: &'static str = "backup-meta";
    const VERSION: u16 = 1;
}

/// A value of the `latest` table: the newest stored version of an address
/// (expired or not) plus the counters the read path needs without scanning.
///
/// Layout: `[format = 1][flags][versions: u64 BE][next_expiry: u64 BE]`
/// then the framed [`RecordMeta`] of the newest version. Flag bit 0: the
/// address has a version with an expiry, and `next_expiry` is the earliest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestEntry {
    /// Metadata of the greatest stored [`VersionId`].
    pub meta: RecordMeta,
    /// Number of stored versions (expired ones not yet swept included).
    pub versions: u64,
    /// Earliest expiry among the stored versions.
    pub next_expiry: Option<u64>,
}

const LATEST_FORMAT: u8 = 1;
const LATEST_HEADER: usize = 1 + 1 + 8 + 8;

impl LatestEntry {
    pub fn encode(&self) -> Result<Vec<u8>, slurp_protocol::EncodeError> {
        let meta = self.meta.encode()?;
        let mut out = Vec::with_capacity(LATEST_HEADER + meta.len());
        out.push(LATEST_FORMAT);
        out.push(u8::from(self.next_expiry.is_some()));
        out.extend_from_slice(&self.versions.to_be_bytes());
        out.extend_from_slice(&self.next_expiry.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&meta);
        Ok(out)
    }

    pub fn decode(bytes: &[u8], key: &str) -> Result<Self, CorruptValue> {
        let bad = |reason: String| CorruptValue {
            table: "latest",
            key: key.to_string(),
            reason,
        };
        if bytes.len() < LATEST_HEADER {
            return Err(bad(format!(
                "{} bytes, shorter than the header",
                bytes.len()
            )));
        }
        if bytes[0] != LATEST_FORMAT {
            return Err(bad(format!("unknown format {}", bytes[0])));
        }
        let flags = bytes[1];
        if flags & !1 != 0 {
            return Err(bad(format!("unknown flags {flags:#04x}")));
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&bytes[2..10]);
        let versions = u64::from_be_bytes(n);
        n.copy_from_slice(&bytes[10..18]);
        let next_expiry = (flags & 1 == 1).then_some(u64::from_be_bytes(n));
        let meta = RecordMeta::decode(&bytes[LATEST_HEADER..]).map_err(|e| bad(e.to_string()))?;
        if meta.key != key {
            return Err(bad(format!("holds the record of {:?}", meta.key)));
        }
        if versions == 0 {
            return Err(bad("counts zero versions".into()));
        }
        Ok(LatestEntry {
            meta,
            versions,
            next_expiry,
        })
    }
}

/// Decodes a framed value of `table`, naming `key` on failure.
pub fn decode_framed<T: Framed>(
    bytes: &[u8],
    table: &'static str,
    key: &str,
) -> Result<T, CorruptValue> {
    T::decode_limited(bytes, DEFAULT_MAX_DECODE).map_err(|e| CorruptValue {
        table,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes a `versions` value and checks it belongs where it was found.
pub fn decode_version(
    bytes: &[u8],
    key: &str,
    version: &VersionId,
) -> Result<StoredVersion, CorruptValue> {
    let v: StoredVersion = decode_framed(bytes, "versions", key)?;
    if v.meta.key != key || &v.meta.version != version {
        return Err(CorruptValue {
            table: "versions",
            key: key.to_string(),
            reason: format!(
                "holds version {} of {:?}, stored as version {version}",
                v.meta.version, v.meta.key
            ),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use slurp_protocol::WriterId;

    fn meta(key: &str) -> RecordMeta {
        RecordMeta {
            key: key.into(),
            path: "src/lib.rs".into(),
            version: VersionId {
                hlc: Hlc {
                    wall_ms: 5,
                    logical: 1,
                },
                writer: WriterId::new("w").unwrap(),
            },
            parent_version: None,
            readers: vec![RoleName::new("developer").unwrap()],
            influences: vec![],
            influenced_by: vec![],
            expires_at_ms: Some(99),
            tombstone: false,
        }
    }

    #[test]
    fn latest_entry_round_trip_and_checks() {
        let e = LatestEntry {
            meta: meta("k"),
            versions: 3,
            next_expiry: Some(7),
        };
        let bytes = e.encode().unwrap();
        assert_eq!(LatestEntry::decode(&bytes, "k").unwrap(), e);
        let err = LatestEntry::decode(&bytes, "other").unwrap_err();
        assert_eq!(err.key, "other");
        assert!(err.reason.contains("holds the record"), "{err}");
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(LatestEntry::decode(&wrong, "k").is_err());
        let none = LatestEntry {
            next_expiry: None,
            ..e
        };
        assert_eq!(
            LatestEntry::decode(&none.encode().unwrap(), "k").unwrap(),
            none
        );
    }

    #[test]
    fn stored_version_is_checked_against_its_key() {
        let v = StoredVersion {
            meta: meta("k"),
            codec: Codec::Raw,
            raw_len: 3,
            data: Bytes(vec![1, 2, 3]),
        };
        let bytes = v.encode().unwrap();
        let id = v.meta.version.clone();
        assert_eq!(decode_version(&bytes, "k", &id).unwrap(), v);
        assert!(decode_version(&bytes, "j", &id).is_err());
        // A framed value of another kind is refused, not misread.
        let acl = AclRecord {
            owner: "o".into(),
            readers: vec![],
            writers: vec![],
            updated: Hlc::ZERO,
        };
        let err = decode_version(&acl.encode().unwrap(), "k", &id).unwrap_err();
        assert!(err.reason.contains("expected a stored-version"), "{err}");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let id = meta("k").version;
            let _ = LatestEntry::decode(&bytes, "k");
            let _ = decode_version(&bytes, "k", &id);
            let _ = decode_framed::<AclRecord>(&bytes, "acl", "k");
            let _ = decode_framed::<BackupMeta>(&bytes, "backups", "b");
            let _ = decode_framed::<TombstoneEntry>(&bytes, "tombstones", "k");
        }

        #[test]
        fn mutated_latest_entries_never_panic(i in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut bytes = LatestEntry { meta: meta("k"), versions: 1, next_expiry: None }
                .encode()
                .unwrap();
            let at = i.index(bytes.len());
            bytes[at] = b;
            let _ = LatestEntry::decode(&bytes, "k");
        }
    }
}
