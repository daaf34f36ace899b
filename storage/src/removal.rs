//! Removing versions: the TTL sweep, purges, and collection of deleted
//! addresses (tombstone GC).
//!
//! Three callers remove stored versions, for different reasons: the
//! sweeper deletes expired ones; a purge drops copies this node no longer
//! needs (a hinted copy once its real replica holds it); collection removes
//! every version of an address whose tombstone every replica has seen, and
//! leaves a marker so that a late replica of it is not stored again. A
//! removal must leave every derived record as if the version had never
//! been written: the address's head (its count, its next expiry, and the
//! newest version when the newest goes), the key list, both TTL indexes,
//! hierarchy, links and tombstones, the hints naming the version, and the
//! slot digests. That is one function, [`remove_version`], for all three,
//! so they cannot drift apart. Like a put, it reads and decodes everything
//! that can fail on bad data before it writes, so a removal refused for a
//! corrupt value leaves nothing half-done.
//!
//! Each runs on the writer thread as an exclusive command, in a
//! transaction of its own. A sweep and a purge commit what they could
//! remove and report the rest. A collection is all or nothing: if any
//! version of the address is in the way it aborts, because a marker beside
//! versions that are still stored, or a deleted address stripped of its
//! tombstone but not of its older versions, would be worse than waiting
//! for a repair. A purge or collection that changes nothing aborts instead
//! of committing, so it costs no fsync.

use std::ops::Bound;
use std::sync::Arc;

use redb::{ReadableTable, Table, WriteTransaction};
use slurp_protocol::{Framed, VersionId};

use crate::digest::DigestDelta;
use crate::error::{CorruptValue, MaintenanceError, WriteError};
use crate::layout;
use crate::record::{CollectedMarker, Head, LatestEntry, decode_framed, decode_version};
use crate::store::Shared;
use crate::writer::{
    Tables, TombstoneChange, begin, expired, rederive, set_tombstone, tombstone_change,
};

/// What one sweep transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired versions deleted.
    pub removed: u64,
    /// Index entries that pointed at nothing and were dropped.
    pub stale_entries: u64,
    /// Versions that could not be swept because a value in the way is
    /// corrupt; they stay (and stay invisible to reads).
    pub errors: Vec<CorruptValue>,
    /// Whether more expired versions may be waiting.
    pub more: bool,
    /// Hints (hinted handoff) removed with the versions they named.
    pub hints_removed: u64,
}

/// What one [`crate::Store::purge`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Versions removed.
    pub removed: u64,
    /// Versions asked for that were not stored (never were, or already
    /// removed; a version named twice is removed once and then absent).
    pub absent: u64,
    /// Hints (hinted handoff) removed with the versions they named.
    pub hints_removed: u64,
    /// Versions left in place because a value in the way is corrupt.
    pub errors: Vec<CorruptValue>,
}

/// What [`crate::Store::collect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectOutcome {
    /// Every version of the address was removed (`removed` of them, the
    /// tombstone included) and the collected marker written.
    Collected { removed: u64 },
    /// The address's newest version is not that tombstone (a newer version
    /// arrived, the newest is not a tombstone, or the tombstone has
    /// expired, so reads no longer see the address as deleted); nothing
    /// changed.
    NotNewest,
    /// The address has no stored version; nothing changed.
    Absent,
}

/// A stored version to remove.
pub(crate) struct Victim<'a> {
    pub key: &'a str,
    pub version: &'a VersionId,
    /// Its `versions` table key.
    pub version_key: &'a [u8],
    /// Its expiry: where its `ttl` and `key_ttl` entries are.
    pub expires_at: Option<u64>,
}

/// What [`remove_version`] found.
pub(crate) enum Removal {
    /// Removed, with `hints` hints that named it.
    Removed { hints: u64 },
    /// The version was not stored; nothing changed.
    Absent,
}

/// The `hints` table inside a removing transaction, with the targets it
/// held when the transaction began (removals add no hints).
pub(crate) struct HintsOfRemoved<'t> {
    table: Table<'t, &'static [u8], u64>,
    targets: Vec<String>,
}

impl<'t> HintsOfRemoved<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        let table = txn.open_table(layout::HINTS)?;
        let targets = hint_targets_of(&table)?;
        Ok(HintsOfRemoved { table, targets })
    }

    /// Removes every hint naming `key`/`version`: one point lookup per
    /// target, none when there are no hints. Returns how many were removed.
    fn forget(&mut self, key: &str, version: &VersionId) -> Result<u64, redb::Error> {
        let mut removed = 0;
        for target in &self.targets {
            let hk = layout::hint_key(target, key, version);
            // Look before removing, so removals of unhinted versions leave
            // the table's pages untouched.
            if self.table.get(hk.as_slice())?.is_some() {
                self.table.remove(hk.as_slice())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The distinct targets of a `hints` table, in order, found by seeking
/// from one target's range to the next (one lookup per target, not one
/// per hint). Keys without a target terminator are skipped (`check`
/// reports them).
fn hint_targets_of(
    table: &impl ReadableTable<&'static [u8], u64>,
) -> Result<Vec<String>, redb::Error> {
    let mut targets = Vec::new();
    let mut lower: Bound<Vec<u8>> = Bound::Unbounded;
    loop {
        let bounds = (lower.as_ref().map(Vec::as_slice), Bound::Unbounded);
        let first = table.range::<&[u8]>(bounds)?.next().transpose()?;
        let Some((k, _)) = first else { break };
        let bytes = k.value();
        match layout::hint_key_target(bytes) {
            Some(t) => {
                if let Ok(t) = std::str::from_utf8(t)
                    && !t.is_empty()
                {
                    targets.push(t.to_string());
                }
                // Every key of this target starts with `t | 0x00`; the next
                // target starts at or after `t | 0x01`.
                let mut next = t.to_vec();
                next.push(1);
                lower = Bound::Included(next);
            }
            None => lower = Bound::Excluded(bytes.to_vec()),
        }
    }
    Ok(targets)
}

fn corrupt(table: &'static str, key: &str, reason: impl ToString) -> CorruptValue {
    CorruptValue {
        table,
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

/// Removes one stored version and everything that derives from it, in the
/// caller's transaction. The outer error aborts the transaction (storage
/// failure); the inner one refuses this version only, before anything of
/// it was written.
pub(crate) fn remove_version(
    t: &mut Tables<'_>,
    hints: &mut HintsOfRemoved<'_>,
    v: &Victim<'_>,
    now: u64,
) -> Result<Result<Removal, CorruptValue>, redb::Error> {
    let key = v.key;
    if t.versions.get(v.version_key)?.is_none() {
        return Ok(Ok(Removal::Absent));
    }
    // Its expiry entries: `ttl` is `expires_at | version key`.
    let ttl_key = v.expires_at.map(|e| {
        let mut k = e.to_be_bytes().to_vec();
        k.extend_from_slice(v.version_key);
        k
    });
    let key_ttl_key = v.expires_at.map(|e| layout::key_ttl_key(e, key, v.version));
    // Step 1: reads and decodes.
    let prefix = layout::version_prefix(key);
    let head_key = layout::head_key(key);
    let entry = match t.versions.get(head_key.as_slice())? {
        Some(raw) => match LatestEntry::decode(raw.value(), key) {
            Ok(e) => Some(e),
            Err(c) => return Ok(Err(c)),
        },
        None => None,
    };
    let removing_newest = entry.as_ref().is_none_or(|e| &e.head.version == v.version);
    let mut replacement: Option<Head> = None;
    let mut others = false;
    {
        // The key's versions (its head sorts right after them).
        let range = t
            .versions
            .range::<&[u8]>(prefix.as_slice()..head_key.as_slice())?;
        for r in range.rev() {
            let (k, val) = r?;
            if k.value() == v.version_key {
                continue;
            }
            others = true;
            if removing_newest {
                let vk = match layout::decode_version_key(k.value()) {
                    Ok(vk) => vk,
                    Err(e) => return Ok(Err(corrupt("versions", key, e))),
                };
                match decode_version(val.value(), key, &vk.version) {
                    Ok(sv) => replacement = Some(Head::of(&sv.meta)),
                    Err(c) => return Ok(Err(c)),
                }
            }
            break;
        }
    }
    let next_expiry = {
        let end = layout::prefix_end(&prefix);
        let range = match &end {
            Some(end) => t
                .key_ttl
                .range::<&[u8]>(prefix.as_slice()..end.as_slice())?,
            None => t.key_ttl.range::<&[u8]>(prefix.as_slice()..)?,
        };
        let mut next = None;
        for r in range {
            let (k, _) = r?;
            if key_ttl_key.as_deref() != Some(k.value()) {
                next = layout::key_ttl_expiry(k.value(), prefix.len());
                break;
            }
        }
        next
    };
    let new_entry = if others {
        let head = match (&replacement, &entry) {
            (Some(h), _) => h.clone(),
            (None, Some(e)) => e.head.clone(),
            // Without a head, the version removed counts as the newest and
            // the scan above decoded the next one or returned; so this is
            // only reached if the table changed under it.
            (None, None) => {
                return Ok(Err(corrupt(
                    "versions/head",
                    key,
                    "no head and no readable version to make one from",
                )));
            }
        };
        let versions = entry
            .as_ref()
            .map_or(1, |e| e.versions.saturating_sub(1).max(1));
        let e = LatestEntry {
            head,
            versions,
            next_expiry,
        };
        match e.encode() {
            Ok(bytes) => Some((e, bytes)),
            Err(err) => return Ok(Err(corrupt("versions/head", key, err))),
        }
    } else {
        None
    };
    let old_tombstone = entry.as_ref().is_some_and(|e| e.head.tombstone);
    let tombstone = if removing_newest {
        match tombstone_change(key, old_tombstone, replacement.as_ref(), now) {
            Ok(c) => c,
            Err(e) => return Ok(Err(corrupt("tombstones", key, e))),
        }
    } else {
        TombstoneChange::Keep
    };
    // Step 2: the writes.
    t.versions.remove(v.version_key)?;
    t.digest.removed(v.version_key);
    if let Some(k) = &ttl_key {
        t.ttl.remove(k.as_slice())?;
    }
    if let Some(k) = &key_ttl_key {
        t.key_ttl.remove(k.as_slice())?;
    }
    match new_entry {
        Some((e, bytes)) => {
            t.versions.insert(head_key.as_slice(), bytes.as_slice())?;
            if removing_newest {
                rederive(t, key, entry.as_ref().map(|o| &o.head), Some(&e.head))?;
                set_tombstone(t, key, tombstone)?;
            }
        }
        None => {
            t.versions.remove(head_key.as_slice())?;
            t.keys.remove(key)?;
            rederive(t, key, entry.as_ref().map(|o| &o.head), None)?;
            set_tombstone(t, key, tombstone)?;
        }
    }
    let hints = hints.forget(key, v.version)?;
    Ok(Ok(Removal::Removed { hints }))
}

/// A storage failure inside a removing transaction: nothing of it was
/// committed.
fn storage(e: impl Into<redb::Error>) -> WriteError {
    WriteError::CommitFailed(Arc::new(e.into()))
}

/// Deletes up to `limit` expired versions in one transaction.
pub(crate) fn sweep(shared: &Shared, limit: usize) -> Result<SweepReport, MaintenanceError> {
    let now = shared.now_ms();
    let db = shared.db();
    let txn = begin(shared, &db)?;
    let mut report = SweepReport::default();
    let delta = {
        let mut t = Tables::open(&txn)?;
        let mut hints = HintsOfRemoved::open(&txn)?;
        // Entries that cannot be swept stay in the index; look a little
        // past them so they do not block the ones behind.
        let examine = limit.saturating_mul(2).max(limit.saturating_add(16));
        let upper = now.saturating_add(1).to_be_bytes();
        let candidates: Vec<Vec<u8>> = t
            .ttl
            .range::<&[u8]>(..upper.as_slice())?
            .take(examine)
            .map(|r| r.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for tk in &candidates {
            if report.removed as usize >= limit {
                break;
            }
            let d = match layout::decode_ttl_key(tk) {
                Ok(d) => d,
                Err(e) => {
                    // An index entry that names nothing: drop it.
                    t.ttl.remove(tk.as_slice())?;
                    report.stale_entries += 1;
                    report.errors.push(corrupt("ttl", &e.hex, &e));
                    continue;
                }
            };
            let victim = Victim {
                key: d.key,
                version: &d.version,
                version_key: d.version_key,
                expires_at: Some(d.expires_at),
            };
            match remove_version(&mut t, &mut hints, &victim, now)? {
                Ok(Removal::Removed { hints }) => {
                    report.removed += 1;
                    report.hints_removed += hints;
                }
                Ok(Removal::Absent) => {
                    // The version is gone: the index entries were stale.
                    t.ttl.remove(tk.as_slice())?;
                    t.key_ttl
                        .remove(layout::key_ttl_key(d.expires_at, d.key, &d.version).as_slice())?;
                    report.stale_entries += 1;
                }
                Err(c) => report.errors.push(c),
            }
        }
        report.more = report.removed as usize >= limit;
        std::mem::take(&mut t.digest)
    };
    shared.digests.commit(txn, delta)?;
    Ok(report)
}

/// Removes exactly `versions` in one transaction.
pub(crate) fn purge(
    shared: &Shared,
    versions: &[(String, VersionId)],
) -> Result<PurgeReport, WriteError> {
    let now = shared.now_ms();
    let db = shared.db();
    let txn = begin(shared, &db).map_err(storage)?;
    let mut report = PurgeReport::default();
    let delta = {
        let mut t = Tables::open(&txn).map_err(storage)?;
        let mut hints = HintsOfRemoved::open(&txn).map_err(storage)?;
        for (key, version) in versions {
            let version_key = layout::version_key(key, version);
            let expires_at = match t.versions.get(version_key.as_slice()).map_err(storage)? {
                None => {
                    report.absent += 1;
                    continue;
                }
                Some(raw) => match decode_version(raw.value(), key, version) {
                    Ok(sv) => sv.meta.expires_at_ms,
                    Err(c) => {
                        report.errors.push(c);
                        continue;
                    }
                },
            };
            let victim = Victim {
                key,
                version,
                version_key: &version_key,
                expires_at,
            };
            match remove_version(&mut t, &mut hints, &victim, now).map_err(storage)? {
                Ok(Removal::Removed { hints }) => {
                    report.removed += 1;
                    report.hints_removed += hints;
                }
                Ok(Removal::Absent) => report.absent += 1,
                Err(c) => report.errors.push(c),
            }
        }
        std::mem::take(&mut t.digest)
    };
    if report.removed == 0 {
        txn.abort().map_err(storage)?;
    } else {
        shared.digests.commit(txn, delta).map_err(storage)?;
    }
    Ok(report)
}

/// Removes every version of `key` if its newest is the tombstone
/// `tombstone`, and writes the collected marker; all or nothing.
pub(crate) fn collect(
    shared: &Shared,
    key: &str,
    tombstone: &VersionId,
) -> Result<CollectOutcome, WriteError> {
    let now = shared.now_ms();
    let db = shared.db();
    let txn = begin(shared, &db).map_err(storage)?;
    match collect_in(&txn, key, tombstone, now).map_err(storage)? {
        Ok((outcome @ CollectOutcome::Collected { .. }, delta)) => {
            shared.digests.commit(txn, delta).map_err(storage)?;
            Ok(outcome)
        }
        Ok((outcome, _)) => {
            txn.abort().map_err(storage)?;
            Ok(outcome)
        }
        Err(e) => {
            txn.abort().map_err(storage)?;
            Err(e)
        }
    }
}

type Collected = (CollectOutcome, DigestDelta);

fn collect_in(
    txn: &WriteTransaction,
    key: &str,
    tombstone: &VersionId,
    now: u64,
) -> Result<Result<Collected, WriteError>, redb::Error> {
    let unchanged = |o| Ok(Ok((o, DigestDelta::default())));
    let mut t = Tables::open(txn)?;
    let head_key = layout::head_key(key);
    let entry = match t.versions.get(head_key.as_slice())? {
        Some(raw) => match LatestEntry::decode(raw.value(), key) {
            Ok(e) => e,
            Err(c) => return Ok(Err(c.into())),
        },
        None => return unchanged(CollectOutcome::Absent),
    };
    let h = &entry.head;
    if &h.version != tombstone || !h.tombstone || expired(h.expires_at_ms, now) {
        return unchanged(CollectOutcome::NotNewest);
    }
    // Step 1: every version and its expiry, before anything is removed.
    let prefix = layout::version_prefix(key);
    let mut victims = Vec::new();
    for r in t
        .versions
        .range::<&[u8]>(prefix.as_slice()..head_key.as_slice())?
    {
        let (k, v) = r?;
        let vk = match layout::decode_version_key(k.value()) {
            Ok(vk) => vk,
            Err(e) => return Ok(Err(corrupt("versions", key, e).into())),
        };
        match decode_version(v.value(), key, &vk.version) {
            Ok(sv) => victims.push((k.value().to_vec(), vk.version, sv.meta.expires_at_ms)),
            Err(c) => return Ok(Err(c.into())),
        }
    }
    let mut hints = HintsOfRemoved::open(txn)?;
    let mut removed = 0;
    // In key order: oldest first, the tombstone (the greatest) last, so
    // until the end the address keeps its head and reads as deleted.
    for (version_key, version, expires_at) in &victims {
        let victim = Victim {
            key,
            version,
            version_key,
            expires_at: *expires_at,
        };
        match remove_version(&mut t, &mut hints, &victim, now)? {
            Ok(Removal::Removed { .. }) => removed += 1,
            // Read in this transaction just above.
            Ok(Removal::Absent) => {}
            Err(c) => return Ok(Err(c.into())),
        }
    }
    // A marker already there for a later tombstone stays (collections of
    // one address only move forward; this keeps it so if one does not).
    let sk = layout::slot_key(key);
    let later = match t.collected.get(sk.as_slice())? {
        Some(raw) => decode_framed::<CollectedMarker>(raw.value(), "collected", key)
            .is_ok_and(|m| &m.version > tombstone),
        None => false,
    };
    if !later {
        let marker = CollectedMarker {
            version: tombstone.clone(),
            collected_at_ms: now,
        };
        let bytes = match marker.encode() {
            Ok(b) => b,
            Err(e) => {
                return Ok(Err(WriteError::Encode {
                    key: key.to_string(),
                    reason: e.to_string(),
                }));
            }
        };
        t.collected.insert(sk.as_slice(), bytes.as_slice())?;
    }
    Ok(Ok((
        CollectOutcome::Collected { removed },
        std::mem::take(&mut t.digest),
    )))
}

/// Removes up to `limit` collected markers older than `older_than_ms`.
pub(crate) fn prune_collected(
    shared: &Shared,
    older_than_ms: u64,
    limit: usize,
) -> Result<u64, WriteError> {
    let db = shared.db();
    let txn = begin(shared, &db).map_err(storage)?;
    let pruned = {
        let mut table = txn.open_table(layout::COLLECTED).map_err(storage)?;
        let mut old = Vec::new();
        for r in table.iter().map_err(storage)? {
            if old.len() >= limit {
                break;
            }
            let (k, v) = r.map_err(storage)?;
            // A marker that does not decode stays (`check` reports it).
            if decode_framed::<CollectedMarker>(v.value(), "collected", "")
                .is_ok_and(|m| m.collected_at_ms < older_than_ms)
            {
                old.push(k.value().to_vec());
            }
        }
        for k in &old {
            table.remove(k.as_slice()).map_err(storage)?;
        }
        old.len() as u64
    };
    if pruned == 0 {
        txn.abort().map_err(storage)?;
    } else {
        txn.commit().map_err(storage)?;
    }
    Ok(pruned)
}
