//! The values the store writes, and how they are encoded.
//!
//! Every structured value is a [`Framed`] CBOR record (`[kind, version,
//! body]`), so a value read from the wrong table or written by a newer build
//! fails with a typed error instead of half-parsing. The one exception is
//! the address head (latest-version entry), read and rewritten on every
//! write: a compact binary record with its own format byte
//! ([`LatestEntry`]). Decoding never panics; every failure becomes a
//! [`CorruptValue`] naming the table and the key.

use serde::{Deserialize, Serialize};
use slurp_protocol::wire::{DEFAULT_MAX_DECODE, kinds};
use slurp_protocol::{Bytes, Framed, Hlc, RecordMeta, VersionId};

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

/// The frame kind of [`CollectedMarker`], registered in
/// `slurp_protocol::wire::kinds` (`docs/encoding.md`).
pub const COLLECTED_MARKER_KIND: u16 = slurp_protocol::wire::kinds::COLLECTED_MARKER;

/// A value of the `collected` table: every version of the address was
/// removed by tombstone collection ([`crate::Store::collect`]) when its
/// newest version was the tombstone `version`. A version at or before it
/// arriving later is superseded by that deletion and is not stored
/// ([`crate::PutOutcome::Collected`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectedMarker {
    /// The tombstone that was the address's newest version.
    pub version: VersionId,
    /// Local time of the collection, milliseconds since the Unix epoch
    /// ([`crate::Store::prune_collected`] goes by it).
    pub collected_at_ms: u64,
}

impl Framed for CollectedMarker {
    const KIND: u16 = COLLECTED_MARKER_KIND;
    const NAME: &'static str = "collected-marker";
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

/// What the store keeps about the newest version of an address in its head
/// record: everything reads and derived-table maintenance need without
/// opening the version itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: VersionId,
    pub expires_at_ms: Option<u64>,
    pub tombstone: bool,
    pub path: String,
    pub influences: Vec<String>,
    pub influenced_by: Vec<String>,
}

impl Head {
    /// The head of a version.
    pub fn of(meta: &RecordMeta) -> Head {
        Head {
            version: meta.version.clone(),
            expires_at_ms: meta.expires_at_ms,
            tombstone: meta.tombstone,
            path: meta.path.clone(),
            influences: meta.influences.clone(),
            influenced_by: meta.influenced_by.clone(),
        }
    }
}

/// An address's head, its latest-version entry (stored in the `versions`
/// table just before its versions): the newest stored version of the
/// address (expired or not) plus the counters the read path needs without
/// scanning.
///
/// It is read and rewritten on every write, and there is one per address,
/// so it is a compact binary record rather than CBOR:
///
/// ```text
/// [format = 1][flags]
/// [versions: u64][next_expiry: u64][expires_at: u64]
/// [wall_ms: u64][logical: u32][writer_len: u8][writer]
/// [path_len: u16][path]
/// [CBOR ([influences], [influenced_by])]   only if flag bit 3
/// ```
///
/// Integers are big-endian. Flags: bit 0 `next_expiry` is set, bit 1
/// `expires_at` is set, bit 2 tombstone, bit 3 links follow. Absent values
/// are written as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestEntry {
    /// The greatest stored [`VersionId`] and what derives from it.
    pub head: Head,
    /// Number of stored versions (expired ones not yet swept included).
    pub versions: u64,
    /// Earliest expiry among the stored versions.
    pub next_expiry: Option<u64>,
}

const LATEST_FORMAT: u8 = 1;
const FLAG_NEXT_EXPIRY: u8 = 1;
const FLAG_EXPIRES: u8 = 2;
const FLAG_TOMBSTONE: u8 = 4;
const FLAG_LINKS: u8 = 8;
const LATEST_FIXED: usize = 1 + 1 + 8 + 8 + 8 + 8 + 4 + 1;

/// A byte reader that fails instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Some(u32::from_be_bytes(a))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(u64::from_be_bytes(a))
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = self.bytes.get(self.at..).unwrap_or_default();
        self.at = self.bytes.len();
        out
    }
}

impl LatestEntry {
    pub fn encode(&self) -> Result<Vec<u8>, slurp_protocol::EncodeError> {
        let h = &self.head;
        let writer = h.version.writer.as_str().as_bytes();
        let links = !h.influences.is_empty() || !h.influenced_by.is_empty();
        let path_len = u16::try_from(h.path.len())
            .map_err(|_| slurp_protocol::EncodeError(format!("path of {} bytes", h.path.len())))?;
        let writer_len = u8::try_from(writer.len()).map_err(|_| {
            slurp_protocol::EncodeError(format!("writer id of {} bytes", writer.len()))
        })?;
        let mut flags = 0u8;
        for (on, bit) in [
            (self.next_expiry.is_some(), FLAG_NEXT_EXPIRY),
            (h.expires_at_ms.is_some(), FLAG_EXPIRES),
            (h.tombstone, FLAG_TOMBSTONE),
            (links, FLAG_LINKS),
        ] {
            if on {
                flags |= bit;
            }
        }
        let mut out = Vec::with_capacity(LATEST_FIXED + writer.len() + 2 + h.path.len());
        out.push(LATEST_FORMAT);
        out.push(flags);
        out.extend_from_slice(&self.versions.to_be_bytes());
        out.extend_from_slice(&self.next_expiry.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&h.expires_at_ms.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(&h.version.hlc.wall_ms.to_be_bytes());
        out.extend_from_slice(&h.version.hlc.logical.to_be_bytes());
        out.push(writer_len);
        out.extend_from_slice(writer);
        out.extend_from_slice(&path_len.to_be_bytes());
        out.extend_from_slice(h.path.as_bytes());
        if links {
            out.extend_from_slice(&slurp_protocol::wire::to_cbor(&(
                &h.influences,
                &h.influenced_by,
            ))?);
        }
        Ok(out)
    }

    pub fn decode(bytes: &[u8], key: &str) -> Result<Self, CorruptValue> {
        let bad = |reason: String| CorruptValue {
            table: "versions/head",
            key: key.to_string(),
            reason,
        };
        let short = || bad(format!("{} bytes, truncated", bytes.len()));
        let mut c = Cursor { bytes, at: 0 };
        let format = c.u8().ok_or_else(short)?;
        if format != LATEST_FORMAT {
            return Err(bad(format!("unknown format {format}")));
        }
        let flags = c.u8().ok_or_else(short)?;
        if flags & !(FLAG_NEXT_EXPIRY | FLAG_EXPIRES | FLAG_TOMBSTONE | FLAG_LINKS) != 0 {
            return Err(bad(format!("unknown flags {flags:#04x}")));
        }
        let versions = c.u64().ok_or_else(short)?;
        let next_expiry = c.u64().ok_or_else(short)?;
        let expires_at = c.u64().ok_or_else(short)?;
        let wall_ms = c.u64().ok_or_else(short)?;
        let logical = c.u32().ok_or_else(short)?;
        let writer_len = c.u8().ok_or_else(short)?;
        let writer = std::str::from_utf8(c.take(usize::from(writer_len)).ok_or_else(short)?)
            .ok()
            .and_then(|w| slurp_protocol::WriterId::new(w).ok())
            .ok_or_else(|| bad("invalid writer id".into()))?;
        let path_len = c.u16().ok_or_else(short)?;
        let path = std::str::from_utf8(c.take(usize::from(path_len)).ok_or_else(short)?)
            .map_err(|_| bad("path is not UTF-8".into()))?
            .to_string();
        let rest = c.rest();
        let (influences, influenced_by) = if flags & FLAG_LINKS != 0 {
            slurp_protocol::wire::from_cbor::<(Vec<String>, Vec<String>)>(rest, DEFAULT_MAX_DECODE)
                .map_err(|e| bad(format!("links: {e}")))?
        } else if !rest.is_empty() {
            return Err(bad(format!("{} trailing bytes", rest.len())));
        } else {
            (vec![], vec![])
        };
        if versions == 0 {
            return Err(bad("counts zero versions".into()));
        }
        Ok(LatestEntry {
            head: Head {
                version: VersionId {
                    hlc: Hlc { wall_ms, logical },
                    writer,
                },
                expires_at_ms: (flags & FLAG_EXPIRES != 0).then_some(expires_at),
                tombstone: flags & FLAG_TOMBSTONE != 0,
                path,
                influences,
                influenced_by,
            },
            versions,
            next_expiry: (flags & FLAG_NEXT_EXPIRY != 0).then_some(next_expiry),
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
    use slurp_protocol::{RoleName, WriterId};

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
        let mut m = meta("k");
        let e = LatestEntry {
            head: Head::of(&m),
            versions: 3,
            next_expiry: Some(7),
        };
        let bytes = e.encode().unwrap();
        assert_eq!(LatestEntry::decode(&bytes, "k").unwrap(), e);
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        let err = LatestEntry::decode(&wrong, "k").unwrap_err();
        assert_eq!((err.table, err.key.as_str()), ("versions/head", "k"));
        for cut in 0..bytes.len() {
            assert!(
                LatestEntry::decode(&bytes[..cut], "k").is_err(),
                "cut {cut}"
            );
        }
        m.influences = vec!["ucxl://a:b@c:d/x".into()];
        m.influenced_by = vec!["ucxl://a:b@c:d/y".into()];
        m.tombstone = true;
        m.expires_at_ms = None;
        let links = LatestEntry {
            head: Head::of(&m),
            versions: 1,
            next_expiry: None,
        };
        assert_eq!(
            LatestEntry::decode(&links.encode().unwrap(), "k").unwrap(),
            links
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
        let tomb = TombstoneEntry {
            version: id.clone(),
            recorded_at_ms: 1,
        };
        let err = decode_version(&tomb.encode().unwrap(), "k", &id).unwrap_err();
        assert!(err.reason.contains("expected a stored-version"), "{err}");
    }

    #[test]
    fn collected_markers_round_trip_and_are_not_tombstones() {
        let m = CollectedMarker {
            version: meta("k").version,
            collected_at_ms: 7,
        };
        let bytes = m.encode().unwrap();
        assert_eq!(
            decode_framed::<CollectedMarker>(&bytes, "collected", "k").unwrap(),
            m
        );
        // Same fields as a tombstone entry, another kind: never misread.
        let err = decode_framed::<TombstoneEntry>(&bytes, "tombstones", "k").unwrap_err();
        assert!(err.reason.contains("expected a tombstone"), "{err}");
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let id = meta("k").version;
            let _ = LatestEntry::decode(&bytes, "k");
            let _ = decode_version(&bytes, "k", &id);
            let _ = decode_framed::<BackupMeta>(&bytes, "backups", "b");
            let _ = decode_framed::<TombstoneEntry>(&bytes, "tombstones", "k");
            let _ = decode_framed::<CollectedMarker>(&bytes, "collected", "k");
        }

        #[test]
        fn mutated_latest_entries_never_panic(i in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut bytes = LatestEntry { head: Head::of(&meta("k")), versions: 1, next_expiry: None }
                .encode()
                .unwrap();
            let at = i.index(bytes.len());
            bytes[at] = b;
            let _ = LatestEntry::decode(&bytes, "k");
        }
    }
}
