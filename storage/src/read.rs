//! Reads: versions, the newest version, history, listings and scans.
//!
//! Every read opens its own read transaction on the caller's thread, copies
//! out what it returns and closes the transaction before returning, so it
//! sees one consistent snapshot and never holds the database open (which
//! compaction needs). Expiry is judged at read time: an expired version is
//! never returned, whether or not the sweeper has deleted it yet. A value
//! that does not decode fails the read of its own address with a
//! [`CorruptValue`]; listings and scans report it beside their results and
//! carry on with the other addresses.

use std::ops::{Bound, RangeInclusive};
use std::time::Instant;

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
};
use slurp_protocol::{Hlc, RecordMeta, Temporal, VersionId};

use crate::compress;
use crate::config::MAX_VALUE_LIMIT;
use crate::error::{CorruptValue, ReadError};
use crate::layout::{self, LINK_BY_FROM, LINK_BY_TO};
use crate::observer::{ReadKind, ReadOutcome};
use crate::record::{
    BackupMeta, CollectedMarker, Head, LatestEntry, StoredVersion, TombstoneEntry, decode_framed,
    decode_version,
};
use crate::store::Store;
use crate::writer::expired;

/// A stored version with its envelope (decompressed, exactly as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub meta: RecordMeta,
    pub envelope: Vec<u8>,
}

/// The newest version of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latest {
    /// The newest live version; `ordinal` is its 1-based position in the
    /// address's history (equal to the number of live versions).
    Live { record: StoredRecord, ordinal: u64 },
    /// The newest live version is a tombstone: the address reads as
    /// deleted. History still lists every version.
    Deleted { tombstone: RecordMeta, ordinal: u64 },
    /// No live version (never written, or every version expired).
    Absent,
}

/// One address in a key listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub key: String,
    /// The newest live version.
    pub latest: VersionId,
    /// Live versions of the address.
    pub versions: u64,
}

/// A page of a key listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<KeyEntry>,
    /// Latest entries that did not decode; their addresses are left out.
    pub corrupt: Vec<CorruptValue>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next_after: Option<String>,
}

/// A child of a path in the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Child {
    pub key: String,
    /// The path its newest version is about.
    pub path: String,
}

/// The decision links of an address, both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// Addresses this one influenced.
    pub influences: Vec<String>,
    /// Addresses that influenced this one.
    pub influenced_by: Vec<String>,
}

/// Where a slot scan resumes: after the version it names. Opaque; valid
/// across restarts of the same store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScanCursor(Vec<u8>);

impl ScanCursor {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        ScanCursor(bytes)
    }
}

/// A scan over the versions of a slot range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotScan {
    /// Inclusive slot range, e.g. `PartitionScheme::slots(p)`.
    pub slots: RangeInclusive<u16>,
    /// Only versions whose clock is after this.
    pub since: Option<Hlc>,
    /// Resume after this cursor (from a previous page).
    pub after: Option<ScanCursor>,
    /// Most versions returned in one page.
    pub limit: usize,
    /// Whether to return envelopes (otherwise only metadata).
    pub envelopes: bool,
}

impl SlotScan {
    /// Every version of `slots`, metadata only, in pages of 1024.
    pub fn metas(slots: RangeInclusive<u16>) -> Self {
        SlotScan {
            slots,
            since: None,
            after: None,
            limit: 1024,
            envelopes: false,
        }
    }
}

/// One version found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedVersion {
    pub meta: RecordMeta,
    /// The envelope, if the scan asked for envelopes.
    pub envelope: Option<Vec<u8>>,
}

/// A page of a slot scan, in slot, address, version order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub versions: Vec<ScannedVersion>,
    /// Versions that did not decode; left out of `versions`.
    pub corrupt: Vec<CorruptValue>,
    /// Pass as `after` to continue; `None` when the range is exhausted.
    pub next: Option<ScanCursor>,
}

/// A listing that skips (and reports) values that do not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub corrupt: Vec<CorruptValue>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            items: vec![],
            corrupt: vec![],
        }
    }
}

/// An address whose newest version is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub key: String,
    pub entry: TombstoneEntry,
}

/// Counts and sizes of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Addresses with at least one stored version.
    pub keys: u64,
    /// Stored versions (expired ones not yet swept included).
    pub versions: u64,
    /// Versions with an expiry.
    pub expiring: u64,
    /// Addresses whose newest version is a tombstone.
    pub tombstones: u64,
    pub backups: u64,
    /// Hints (hinted handoff) pending, over all targets.
    pub hints: u64,
    /// Collected markers: addresses deleted and collected (tombstone GC)
    /// whose marker has not been pruned.
    pub collected: u64,
    /// Bytes of keys and values in all tables.
    pub stored_bytes: u64,
    /// Size of the database file.
    pub file_bytes: u64,
}

/// Most entries one page of a scan or listing examines, whatever it
/// returns, so a page over mostly filtered data still ends quickly.
const EXAMINE_FACTOR: usize = 8;
const EXAMINE_MIN: usize = 4096;

fn examine_limit(limit: usize) -> usize {
    limit.saturating_mul(EXAMINE_FACTOR).max(EXAMINE_MIN)
}

type BytesTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

fn prefix_range<V: redb::Value + 'static>(
    table: &ReadOnlyTable<&'static [u8], V>,
    prefix: &[u8],
) -> Result<redb::Range<'static, &'static [u8], V>, redb::StorageError> {
    match layout::prefix_end(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice()),
        None => table.range::<&[u8]>(prefix..),
    }
}

/// The versions of one address (`prefix` is its version prefix; its head
/// sorts right after the range).
fn versions_of(
    table: &BytesTable,
    prefix: &[u8],
) -> Result<redb::Range<'static, &'static [u8], &'static [u8]>, redb::StorageError> {
    prefix_range(table, prefix)
}

fn corrupt(table: &'static str, key: &str, reason: impl ToString) -> CorruptValue {
    CorruptValue {
        table,
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn open_envelope(v: StoredVersion) -> Result<StoredRecord, CorruptValue> {
    let key = v.meta.key.clone();
    let envelope = compress::decode(v.codec, v.data.0, v.raw_len, MAX_VALUE_LIMIT)
        .map_err(|e| corrupt("versions", &key, e))?;
    Ok(StoredRecord {
        meta: v.meta,
        envelope,
    })
}

/// The newest live version of an address, resolved against expiry: its
/// head and ordinal, or `None` when every version has expired.
type Resolved = Option<(Head, u64)>;

/// Reads within one read transaction.
struct Snapshot {
    txn: ReadTransaction,
    now: u64,
}

impl Snapshot {
    fn table(&self, def: redb::TableDefinition<&[u8], &[u8]>) -> Result<BytesTable, ReadError> {
        Ok(self.txn.open_table(def)?)
    }

    /// The head of an address.
    fn latest_entry(
        &self,
        versions: &BytesTable,
        key: &str,
    ) -> Result<Option<LatestEntry>, ReadError> {
        match versions.get(layout::head_key(key).as_slice())? {
            Some(raw) => Ok(Some(LatestEntry::decode(raw.value(), key)?)),
            None => Ok(None),
        }
    }

    /// The newest live version: the latest entry if it has not expired,
    /// otherwise the greatest unexpired version found by a backward scan.
    fn resolve(&self, key: &str, entry: &LatestEntry) -> Result<Resolved, ReadError> {
        if entry.next_expiry.is_none_or(|e| e > self.now) {
            return Ok(Some((entry.head.clone(), entry.versions)));
        }
        let prefix = layout::version_prefix(key);
        let key_ttl: ReadOnlyTable<&[u8], ()> = self.txn.open_table(layout::KEY_TTL)?;
        let mut gone = 0u64;
        for r in prefix_range(&key_ttl, &prefix)? {
            let (k, _) = r?;
            match layout::key_ttl_expiry(k.value(), prefix.len()) {
                Some(e) if e <= self.now => gone += 1,
                Some(_) => break,
                None => return Err(corrupt("key_ttl", key, "short key").into()),
            }
        }
        let live = entry.versions.saturating_sub(gone);
        if !expired(entry.head.expires_at_ms, self.now) {
            return Ok(Some((entry.head.clone(), live)));
        }
        let versions = self.table(layout::VERSIONS)?;
        for r in versions_of(&versions, &prefix)?.rev() {
            let (k, v) = r?;
            let vk =
                layout::decode_version_key(k.value()).map_err(|e| corrupt("versions", key, e))?;
            let sv = decode_version(v.value(), key, &vk.version)?;
            if !expired(sv.meta.expires_at_ms, self.now) {
                return Ok(Some((Head::of(&sv.meta), live)));
            }
        }
        Ok(None)
    }

    /// Whether the newest stored version of `key` is live and not a
    /// tombstone: the condition for its hierarchy and link entries to show.
    fn newest_is_live(&self, versions: &BytesTable, key: &str) -> Result<bool, ReadError> {
        Ok(self
            .latest_entry(versions, key)?
            .is_some_and(|e| !e.head.tombstone && !expired(e.head.expires_at_ms, self.now)))
    }

    fn version(&self, key: &str, version: &VersionId) -> Result<Option<StoredVersion>, ReadError> {
        let versions = self.table(layout::VERSIONS)?;
        let raw = versions.get(layout::version_key(key, version).as_slice())?;
        match raw {
            Some(raw) => Ok(Some(decode_version(raw.value(), key, version)?)),
            None => Ok(None),
        }
    }

    fn history(&self, key: &str) -> Result<Vec<RecordMeta>, ReadError> {
        let versions = self.table(layout::VERSIONS)?;
        let prefix = layout::version_prefix(key);
        let mut out = Vec::new();
        for r in versions_of(&versions, &prefix)? {
            let (k, v) = r?;
            let vk =
                layout::decode_version_key(k.value()).map_err(|e| corrupt("versions", key, e))?;
            let sv = decode_version(v.value(), key, &vk.version)?;
            if !expired(sv.meta.expires_at_ms, self.now) {
                out.push(sv.meta);
            }
        }
        Ok(out)
    }
}

impl Store {
    fn snapshot<T>(
        &self,
        f: impl FnOnce(&Snapshot) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let shared = self.shared();
        let db = shared.db();
        let snap = Snapshot {
            txn: db.begin_read()?,
            now: shared.now_ms(),
        };
        let out = f(&snap);
        drop(snap);
        drop(db);
        out
    }

    fn observe<T>(
        &self,
        kind: ReadKind,
        start: Instant,
        r: &Result<T, ReadError>,
        outcome: impl FnOnce(&T) -> ReadOutcome,
    ) {
        let o = match r {
            Ok(v) => outcome(v),
            Err(_) => ReadOutcome::Error,
        };
        self.shared().observer.on_read(kind, o, start.elapsed());
    }

    /// One version of an address, if it is stored and has not expired.
    pub fn get(&self, key: &str, version: &VersionId) -> Result<Option<StoredRecord>, ReadError> {
        let start = Instant::now();
        let mut was_expired = false;
        let r = self.snapshot(|s| match s.version(key, version)? {
            Some(v) if expired(v.meta.expires_at_ms, s.now) => {
                was_expired = true;
                Ok(None)
            }
            Some(v) => Ok(Some(open_envelope(v)?)),
            None => Ok(None),
        });
        self.observe(ReadKind::Version, start, &r, |v| match v {
            Some(_) => ReadOutcome::Found,
            None if was_expired => ReadOutcome::Expired,
            None => ReadOutcome::Miss,
        });
        r
    }

    /// The newest live version of an address (greatest [`VersionId`] among
    /// the unexpired ones), or whether it is deleted or absent.
    pub fn latest(&self, key: &str) -> Result<Latest, ReadError> {
        let start = Instant::now();
        let r = self.snapshot(|s| {
            let versions = s.table(layout::VERSIONS)?;
            let Some(entry) = s.latest_entry(&versions, key)? else {
                return Ok(Latest::Absent);
            };
            let Some((head, ordinal)) = s.resolve(key, &entry)? else {
                return Ok(Latest::Absent);
            };
            let v = s.version(key, &head.version)?.ok_or_else(|| {
                corrupt(
                    "versions/head",
                    key,
                    format!("names missing version {}", head.version),
                )
            })?;
            if v.meta.tombstone {
                Ok(Latest::Deleted {
                    tombstone: v.meta,
                    ordinal,
                })
            } else {
                Ok(Latest::Live {
                    record: open_envelope(v)?,
                    ordinal,
                })
            }
        });
        self.observe(ReadKind::Latest, start, &r, |l| match l {
            Latest::Live { .. } => ReadOutcome::Found,
            Latest::Deleted { .. } => ReadOutcome::Deleted,
            Latest::Absent => ReadOutcome::Miss,
        });
        r
    }

    /// Metadata of the newest live version of an address (a tombstone
    /// included) and its 1-based position in the history, without reading
    /// the other versions: what a writer needs to chain a new version onto
    /// the current one, and what an access check needs.
    pub fn latest_meta(&self, key: &str) -> Result<Option<(RecordMeta, u64)>, ReadError> {
        self.snapshot(|s| {
            let versions = s.table(layout::VERSIONS)?;
            let Some(entry) = s.latest_entry(&versions, key)? else {
                return Ok(None);
            };
            let Some((head, ordinal)) = s.resolve(key, &entry)? else {
                return Ok(None);
            };
            let v = s.version(key, &head.version)?.ok_or_else(|| {
                corrupt(
                    "versions/head",
                    key,
                    format!("names missing version {}", head.version),
                )
            })?;
            Ok(Some((v.meta, ordinal)))
        })
    }

    /// Whether the address has a live version that is not a tombstone.
    pub fn exists(&self, key: &str) -> Result<bool, ReadError> {
        self.snapshot(|s| {
            let versions = s.table(layout::VERSIONS)?;
            let Some(entry) = s.latest_entry(&versions, key)? else {
                return Ok(false);
            };
            Ok(matches!(s.resolve(key, &entry)?, Some((h, _)) if !h.tombstone))
        })
    }

    /// Metadata of every live version of an address, oldest first
    /// ([`VersionId`] order), tombstones included.
    pub fn history(&self, key: &str) -> Result<Vec<RecordMeta>, ReadError> {
        self.snapshot(|s| s.history(key))
    }

    /// The ids of every live version of an address, oldest first: what a
    /// replica compares to find the versions the other side lacks.
    pub fn version_ids(&self, key: &str) -> Result<Vec<VersionId>, ReadError> {
        Ok(self.history(key)?.into_iter().map(|m| m.version).collect())
    }

    /// The version a temporal selector names in the address's history
    /// (`*^` the newest, `*~N` the N-th, `~~N` N back, `^^N` N forward).
    /// Tombstones count as versions; the returned record may be one.
    pub fn get_selected(
        &self,
        key: &str,
        temporal: Temporal,
    ) -> Result<Option<StoredRecord>, ReadError> {
        self.snapshot(|s| {
            let history = s.history(key)?;
            let Some(i) = temporal.select(history.len()) else {
                return Ok(None);
            };
            match s.version(key, &history[i].version)? {
                Some(v) => Ok(Some(open_envelope(v)?)),
                None => Ok(None),
            }
        })
    }

    /// Live, undeleted addresses whose key starts with `prefix`, in key
    /// order, starting after `after`, at most `limit` per page.
    pub fn list_keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, ReadError> {
        self.snapshot(|s| {
            let keys: ReadOnlyTable<&str, ()> = s.txn.open_table(layout::KEYS)?;
            let versions = s.table(layout::VERSIONS)?;
            let lower = match after {
                Some(a) if a >= prefix => Bound::Excluded(a),
                _ => Bound::Included(prefix),
            };
            let limit = limit.max(1);
            let mut page = KeyPage::default();
            let max_examined = examine_limit(limit);
            let mut last: Option<String> = None;
            for (examined, r) in keys.range::<&str>((lower, Bound::Unbounded))?.enumerate() {
                let (k, _) = r?;
                let key = k.value();
                if !key.starts_with(prefix) {
                    break;
                }
                if page.keys.len() >= limit || examined >= max_examined {
                    page.next_after = last.take();
                    break;
                }
                last = Some(key.to_string());
                let entry = match s.latest_entry(&versions, key) {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        page.corrupt
                            .push(corrupt("keys", key, "listed address has no head"));
                        continue;
                    }
                    Err(ReadError::Corrupt(c)) => {
                        page.corrupt.push(c);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match s.resolve(key, &entry) {
                    Ok(Some((head, versions))) if !head.tombstone => {
                        page.keys.push(KeyEntry {
                            key: key.to_string(),
                            latest: head.version,
                            versions,
                        });
                    }
                    Ok(_) => {}
                    Err(ReadError::Corrupt(c)) => page.corrupt.push(c),
                    Err(e) => return Err(e),
                }
            }
            Ok(page)
        })
    }

    /// Addresses whose newest version is about a path directly under
    /// `parent_path` (`""` is the root), in key order.
    pub fn children(&self, parent_path: &str) -> Result<Vec<Child>, ReadError> {
        self.snapshot(|s| {
            let hierarchy = s.table(layout::HIERARCHY)?;
            let versions = s.table(layout::VERSIONS)?;
            let prefix = layout::pair_prefix(parent_path);
            let mut out = Vec::new();
            for r in prefix_range(&hierarchy, &prefix)? {
                let (k, v) = r?;
                let (_, child) = layout::decode_pair_key(k.value())
                    .map_err(|e| corrupt("hierarchy", parent_path, e))?;
                let path =
                    std::str::from_utf8(v.value()).map_err(|e| corrupt("hierarchy", child, e))?;
                if s.newest_is_live(&versions, child)? {
                    out.push(Child {
                        key: child.to_string(),
                        path: path.to_string(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// The decision links of an address in both directions, each list in
    /// key order. A link shows while the newest version of an address that
    /// asserts it is live.
    pub fn links(&self, key: &str) -> Result<Links, ReadError> {
        self.snapshot(|s| {
            let versions = s.table(layout::VERSIONS)?;
            let prefix = layout::pair_prefix(key);
            let mut links = Links::default();
            for (def, outgoing) in [(layout::LINKS_OUT, true), (layout::LINKS_IN, false)] {
                let table: ReadOnlyTable<&[u8], u8> = s.txn.open_table(def)?;
                for r in prefix_range(&table, &prefix)? {
                    let (k, v) = r?;
                    let (_, other) = layout::decode_pair_key(k.value())
                        .map_err(|e| corrupt(def_name(outgoing), key, e))?;
                    let (from, to) = if outgoing { (key, other) } else { (other, key) };
                    let flags = v.value();
                    let shown = (flags & LINK_BY_FROM != 0 && s.newest_is_live(&versions, from)?)
                        || (flags & LINK_BY_TO != 0 && s.newest_is_live(&versions, to)?);
                    if shown {
                        if outgoing {
                            links.influences.push(other.to_string());
                        } else {
                            links.influenced_by.push(other.to_string());
                        }
                    }
                }
            }
            Ok(links)
        })
    }

    /// Versions in a slot range (one partition, or several), in slot,
    /// address, version order; expired versions are left out. With `since`,
    /// only versions whose clock is after it: the increment for a backup or
    /// a replica that has seen everything up to `since`.
    pub fn scan_slots(&self, scan: &SlotScan) -> Result<ScanPage, ReadError> {
        self.snapshot(|s| {
            let versions = s.table(layout::VERSIONS)?;
            let start_key = layout::slot_start(*scan.slots.start());
            let lower = match &scan.after {
                Some(c) if c.0.as_slice() >= start_key.as_slice() => {
                    Bound::Excluded(c.0.as_slice())
                }
                _ => Bound::Included(start_key.as_slice()),
            };
            let end_key = scan.slots.end().checked_add(1).map(layout::slot_start);
            let upper = match &end_key {
                Some(e) => Bound::Excluded(e.as_slice()),
                None => Bound::Unbounded,
            };
            let mut page = ScanPage::default();
            if scan.slots.is_empty() || past_end(&lower, &end_key) {
                return Ok(page);
            }
            let limit = scan.limit.max(1);
            let max_examined = examine_limit(limit);
            let mut last: Option<Vec<u8>> = None;
            for (examined, r) in versions.range::<&[u8]>((lower, upper))?.enumerate() {
                let (k, v) = r?;
                let kb = k.value();
                if page.versions.len() >= limit || examined >= max_examined {
                    page.next = last.take().map(ScanCursor);
                    break;
                }
                last = Some(kb.to_vec());
                if layout::is_head_key(kb) {
                    continue;
                }
                if let (Some(since), Some(hlc)) = (scan.since, layout::version_key_hlc(kb))
                    && hlc <= since
                {
                    continue;
                }
                let vk = match layout::decode_version_key(kb) {
                    Ok(vk) => vk,
                    Err(e) => {
                        page.corrupt.push(corrupt("versions", &e.hex, e.reason));
                        continue;
                    }
                };
                let sv = match decode_version(v.value(), vk.key, &vk.version) {
                    Ok(sv) => sv,
                    Err(c) => {
                        page.corrupt.push(c);
                        continue;
                    }
                };
                if expired(sv.meta.expires_at_ms, s.now) {
                    continue;
                }
                if scan.envelopes {
                    match open_envelope(sv) {
                        Ok(rec) => page.versions.push(ScannedVersion {
                            meta: rec.meta,
                            envelope: Some(rec.envelope),
                        }),
                        Err(c) => page.corrupt.push(c),
                    }
                } else {
                    page.versions.push(ScannedVersion {
                        meta: sv.meta,
                        envelope: None,
                    });
                }
            }
            Ok(page)
        })
    }

    /// A backup's metadata.
    pub fn backup(&self, id: &str) -> Result<Option<BackupMeta>, ReadError> {
        self.snapshot(|s| {
            let backups: ReadOnlyTable<&str, &[u8]> = s.txn.open_table(layout::BACKUPS)?;
            match backups.get(id)? {
                Some(v) => Ok(Some(decode_framed(v.value(), "backups", id)?)),
                None => Ok(None),
            }
        })
    }

    /// Every recorded backup, in id order.
    pub fn backups(&self) -> Result<Listing<BackupMeta>, ReadError> {
        self.snapshot(|s| {
            let backups: ReadOnlyTable<&str, &[u8]> = s.txn.open_table(layout::BACKUPS)?;
            let mut out = Listing::default();
            for r in backups.iter()? {
                let (k, v) = r?;
                match decode_framed(v.value(), "backups", k.value()) {
                    Ok(b) => out.items.push(b),
                    Err(c) => out.corrupt.push(c),
                }
            }
            Ok(out)
        })
    }

    /// Addresses in a slot range whose newest version is a tombstone, in
    /// slot and key order, after the address `after`, at most `limit`.
    pub fn tombstones(
        &self,
        slots: RangeInclusive<u16>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing<Tombstone>, ReadError> {
        self.snapshot(|s| {
            let table = s.table(layout::TOMBSTONES)?;
            let start_key = layout::slot_start(*slots.start());
            let after_key = after.map(layout::slot_key);
            let lower = match &after_key {
                Some(a) if a.as_slice() >= start_key.as_slice() => Bound::Excluded(a.as_slice()),
                _ => Bound::Included(start_key.as_slice()),
            };
            let end_key = slots.end().checked_add(1).map(layout::slot_start);
            let upper = match &end_key {
                Some(e) => Bound::Excluded(e.as_slice()),
                None => Bound::Unbounded,
            };
            let mut out = Listing::default();
            if slots.is_empty() || past_end(&lower, &end_key) {
                return Ok(out);
            }
            for r in table.range::<&[u8]>((lower, upper))? {
                if out.items.len() >= limit {
                    break;
                }
                let (k, v) = r?;
                let key = match layout::decode_slot_key(k.value()) {
                    Ok((_, key)) => key,
                    Err(e) => {
                        out.corrupt.push(corrupt("tombstones", &e.hex, e.reason));
                        continue;
                    }
                };
                match decode_framed::<TombstoneEntry>(v.value(), "tombstones", key) {
                    Ok(entry) => out.items.push(Tombstone {
                        key: key.to_string(),
                        entry,
                    }),
                    Err(c) => out.corrupt.push(c),
                }
            }
            Ok(out)
        })
    }

    /// The collected marker of an address: it was deleted and collected
    /// ([`Store::collect`]) at the marker's version, and versions at or
    /// before it are not stored. `None` if it never was (or the marker was
    /// pruned).
    pub fn collected(&self, key: &str) -> Result<Option<CollectedMarker>, ReadError> {
        self.snapshot(|s| {
            let table = s.table(layout::COLLECTED)?;
            match table.get(layout::slot_key(key).as_slice())? {
                Some(v) => Ok(Some(decode_framed(v.value(), "collected", key)?)),
                None => Ok(None),
            }
        })
    }

    /// Counts and sizes; cheap (no table is walked).
    pub fn stats(&self) -> Result<StoreStats, ReadError> {
        let mut stats = self.snapshot(|s| {
            let mut st = StoreStats::default();
            let mut bytes = 0u64;
            let keys: ReadOnlyTable<&str, ()> = s.txn.open_table(layout::KEYS)?;
            st.keys = keys.len()?;
            bytes += keys.stats()?.stored_bytes();
            let versions = s.table(layout::VERSIONS)?;
            // One head per address sits among the versions.
            st.versions = versions.len()?.saturating_sub(st.keys);
            bytes += versions.stats()?.stored_bytes();
            let ttl: ReadOnlyTable<&[u8], ()> = s.txn.open_table(layout::TTL)?;
            st.expiring = ttl.len()?;
            bytes += ttl.stats()?.stored_bytes();
            let key_ttl: ReadOnlyTable<&[u8], ()> = s.txn.open_table(layout::KEY_TTL)?;
            bytes += key_ttl.stats()?.stored_bytes();
            let tombstones = s.table(layout::TOMBSTONES)?;
            st.tombstones = tombstones.len()?;
            bytes += tombstones.stats()?.stored_bytes();
            let backups: ReadOnlyTable<&str, &[u8]> = s.txn.open_table(layout::BACKUPS)?;
            st.backups = backups.len()?;
            bytes += backups.stats()?.stored_bytes();
            let hints: ReadOnlyTable<&[u8], u64> = s.txn.open_table(layout::HINTS)?;
            st.hints = hints.len()?;
            bytes += hints.stats()?.stored_bytes();
            let collected = s.table(layout::COLLECTED)?;
            st.collected = collected.len()?;
            bytes += collected.stats()?.stored_bytes();
            bytes += s.table(layout::HIERARCHY)?.stats()?.stored_bytes();
            for def in [layout::LINKS_OUT, layout::LINKS_IN] {
                let t: ReadOnlyTable<&[u8], u8> = s.txn.open_table(def)?;
                bytes += t.stats()?.stored_bytes();
            }
            st.stored_bytes = bytes;
            Ok(st)
        })?;
        stats.file_bytes = std::fs::metadata(self.path()).map_or(0, |m| m.len());
        Ok(stats)
    }
}

fn def_name(outgoing: bool) -> &'static str {
    if outgoing { "links_out" } else { "links_in" }
}

/// Whether a resume bound lies at or past the end of the range (redb, like
/// `BTreeMap`, must not be given an inverted range).
fn past_end(lower: &Bound<&[u8]>, end: &Option<[u8; 2]>) -> bool {
    match (lower, end) {
        (Bound::Excluded(l) | Bound::Included(l), Some(e)) => *l >= e.as_slice(),
        _ => false,
    }
}
