//! The writer thread: group commit, TTL sweeps and compaction.
//!
//! redb allows one write transaction at a time and each durable commit costs
//! an fsync, so writes are funnelled through one thread that takes
//! everything queued (up to `max_batch` requests), applies it in one
//! transaction, commits once and then answers every request. Concurrent
//! writers thus share the fsync. An item that cannot be applied (a corrupt
//! value in its way) gets its own error and the rest of the batch is
//! committed; a failed commit fails every request in it, and nothing of it
//! is stored. (A [`crate::CommitFaults`] hook makes a commit fail on
//! purpose, for tests that prove exactly that.)
//!
//! Each version write also keeps the derived records (the address's head,
//! the TTL indexes, hierarchy, links, tombstones) consistent in the same
//! transaction: they
//! are derived from the newest stored version of each address, so they are
//! updated whenever that newest version changes. Items are applied in two
//! steps, first every read and decode that can fail on bad data, then the
//! inserts, so an item refused for bad data leaves nothing half-written.
//!
//! A hinted put (hinted handoff) also records, per version it stored or
//! found already stored, a hint in the `hints` table, in the same
//! transaction as the version: a crash never leaves a hint without its
//! version or a hinted version without its hint. Whatever deletes a version
//! (the sweeper, a purge, a collection) removes its hints in the same
//! transaction, so every hint names a stored version.
//!
//! Sweeps, purges, collections (see [`crate::removal`]) and compaction run
//! on this thread too, between batches: the removals are write
//! transactions like any other, and compaction needs the database to
//! itself (`Database::compact` takes `&mut`), which this thread gets by
//! taking the database lock exclusively while no transaction is open.
//!
//! A put is refused with [`PutOutcome::Collected`] when the address has a
//! collected marker at or after the version: the address was deleted and
//! collected, and the version is a late copy of what that deletion
//! superseded.
//!
//! Every transaction that inserts or removes versions collects their keys
//! and hands them to the slot digests ([`crate::digest`]) with its commit,
//! which applies them only once the commit succeeded.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use redb::{ReadableTable, Table, WriteTransaction};
use slurp_protocol::address::parent_path;
use slurp_protocol::{Framed, RecordMeta, VersionId};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::digest::DigestDelta;
use crate::error::{CorruptValue, MaintenanceError, WriteError};
use crate::layout::{self, LINK_BY_FROM, LINK_BY_TO};
use crate::observer::{CommitEvent, CompactionEvent};
use crate::record::{
    CollectedMarker, Head, LatestEntry, TombstoneEntry, decode_framed, decode_version,
};
use crate::removal::{self, CollectOutcome, PurgeReport, SweepReport};
use crate::store::{PutOutcome, Shared};

/// One version, validated and encoded by the caller.
pub(crate) struct PreparedPut {
    pub meta: RecordMeta,
    pub version_key: Vec<u8>,
    /// The framed `StoredVersion`.
    pub value: Vec<u8>,
}

pub(crate) enum Command {
    Put {
        items: Vec<PreparedPut>,
        /// The peer every stored version of `items` belongs on: record a
        /// hint for each (hinted handoff).
        hint_for: Option<Arc<str>>,
        reply: oneshot::Sender<Vec<Result<PutOutcome, WriteError>>>,
    },
    /// New sealed bytes for versions already stored (key rotation
    /// rewraps an envelope; the metadata must not change).
    Replace {
        items: Vec<PreparedPut>,
        reply: oneshot::Sender<Vec<Result<bool, WriteError>>>,
    },
    RemoveHints {
        /// `hints` table keys, validated by the caller.
        keys: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<usize, WriteError>>,
    },
    Backup {
        id: String,
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<bool, WriteError>>,
    },
    Sweep {
        limit: usize,
        reply: oneshot::Sender<Result<SweepReport, MaintenanceError>>,
    },
    /// Remove exactly these versions (keys validated by the caller).
    Purge {
        versions: Vec<(String, VersionId)>,
        reply: oneshot::Sender<Result<PurgeReport, WriteError>>,
    },
    /// Remove every version of `key` if its newest is `tombstone`, and
    /// remember the deletion (key validated by the caller).
    Collect {
        key: String,
        tombstone: VersionId,
        reply: oneshot::Sender<Result<CollectOutcome, WriteError>>,
    },
    PruneCollected {
        older_than_ms: u64,
        limit: usize,
        reply: oneshot::Sender<Result<u64, WriteError>>,
    },
    Compact {
        force: bool,
        reply: oneshot::Sender<Result<CompactionReport, MaintenanceError>>,
    },
}

impl Command {
    /// Removals and compactions run alone, not inside a batch of writes:
    /// each gets its own transaction (and report).
    fn exclusive(&self) -> bool {
        matches!(
            self,
            Command::Sweep { .. }
                | Command::Purge { .. }
                | Command::Collect { .. }
                | Command::PruneCollected { .. }
                | Command::Compact { .. }
        )
    }

    /// How much of the batch budget the command uses.
    fn weight(&self) -> usize {
        match self {
            Command::Put { items, .. } | Command::Replace { items, .. } => items.len().max(1),
            Command::RemoveHints { keys, .. } => keys.len().max(1),
            _ => 1,
        }
    }
}

/// What a compaction attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionReport {
    pub compacted: bool,
    /// Free space inside the file before, as redb counts it.
    pub free_bytes_before: u64,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    /// How long reads and writes were held off.
    pub duration: Duration,
}

/// Takes queued commands into `batch` until the queue is empty, the batch
/// is full, or an exclusive command turns up (kept in `held`).
fn drain(
    rx: &mut mpsc::Receiver<Command>,
    batch: &mut Vec<Command>,
    weight: &mut usize,
    held: &mut Option<Command>,
    max_batch: usize,
) {
    while *weight < max_batch && held.is_none() {
        match rx.try_recv() {
            Ok(c) if c.exclusive() => *held = Some(c),
            Ok(c) => {
                *weight += c.weight();
                batch.push(c);
            }
            Err(_) => break,
        }
    }
}

/// The writer thread's loop; returns when every [`crate::Store`] handle is
/// gone and the queue is drained.
///
/// Linger: when the previous batch had several requests, writers are
/// probably about to send their next ones (they were waiting for that
/// batch's answer). Starting a transaction with the first one alone would
/// spend a whole commit on it, so the thread waits, for at most
/// `group_commit_wait_us` and at most half the previous commit's duration,
/// until as many requests as last time are queued. A lone writer (batches
/// of one) never waits.
pub(crate) fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Command>) {
    let max_batch = shared.config.max_batch;
    let max_wait = Duration::from_micros(shared.config.group_commit_wait_us);
    let mut held: Option<Command> = None;
    let mut expected = 1usize;
    let mut last_commit = Duration::ZERO;
    loop {
        let first = match held.take() {
            Some(c) => c,
            None => match rx.blocking_recv() {
                Some(c) => c,
                None => break,
            },
        };
        if first.exclusive() {
            run_exclusive(&shared, first);
            continue;
        }
        let mut weight = first.weight();
        let mut batch = vec![first];
        drain(&mut rx, &mut batch, &mut weight, &mut held, max_batch);
        let wait = max_wait.min(last_commit / 2);
        if batch.len() < expected && !wait.is_zero() {
            let deadline = Instant::now() + wait;
            while batch.len() < expected && weight < max_batch && held.is_none() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                // Senders unpark this thread after queueing.
                std::thread::park_timeout(deadline - now);
                drain(&mut rx, &mut batch, &mut weight, &mut held, max_batch);
            }
        }
        expected = batch.len();
        shared.observer.on_queue_depth(rx.len());
        let started = Instant::now();
        commit_batch(&shared, batch);
        last_commit = started.elapsed();
    }
    debug!("store writer thread stopped");
}

fn run_exclusive(shared: &Shared, command: Command) {
    match command {
        Command::Sweep { limit, reply } => {
            let _ = reply.send(removal::sweep(shared, limit));
        }
        Command::Purge { versions, reply } => {
            let _ = reply.send(removal::purge(shared, &versions));
        }
        Command::Collect {
            key,
            tombstone,
            reply,
        } => {
            let _ = reply.send(removal::collect(shared, &key, &tombstone));
        }
        Command::PruneCollected {
            older_than_ms,
            limit,
            reply,
        } => {
            let _ = reply.send(removal::prune_collected(shared, older_than_ms, limit));
        }
        Command::Compact { force, reply } => {
            let _ = reply.send(compact(shared, force));
        }
        other => commit_batch(shared, vec![other]),
    }
}

/// The tables a transaction writes, opened once per transaction, and the
/// version keys it inserted and removed (for the slot digests, once it
/// has committed).
pub(crate) struct Tables<'t> {
    pub versions: Table<'t, &'static [u8], &'static [u8]>,
    pub keys: Table<'t, &'static str, ()>,
    pub ttl: Table<'t, &'static [u8], ()>,
    pub key_ttl: Table<'t, &'static [u8], ()>,
    pub hierarchy: Table<'t, &'static [u8], &'static [u8]>,
    pub links_out: Table<'t, &'static [u8], u8>,
    pub links_in: Table<'t, &'static [u8], u8>,
    pub tombstones: Table<'t, &'static [u8], &'static [u8]>,
    pub collected: Table<'t, &'static [u8], &'static [u8]>,
    pub digest: DigestDelta,
}

impl<'t> Tables<'t> {
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Tables {
            versions: txn.open_table(layout::VERSIONS)?,
            keys: txn.open_table(layout::KEYS)?,
            ttl: txn.open_table(layout::TTL)?,
            key_ttl: txn.open_table(layout::KEY_TTL)?,
            hierarchy: txn.open_table(layout::HIERARCHY)?,
            links_out: txn.open_table(layout::LINKS_OUT)?,
            links_in: txn.open_table(layout::LINKS_IN)?,
            tombstones: txn.open_table(layout::TOMBSTONES)?,
            collected: txn.open_table(layout::COLLECTED)?,
            digest: DigestDelta::default(),
        })
    }
}

/// The result of one command inside a batch, before the commit.
enum Applied {
    Put(Vec<Result<PutOutcome, WriteError>>),
    Replace(Vec<Result<bool, WriteError>>),
    Simple(Result<bool, WriteError>),
    Count(Result<usize, WriteError>),
}

#[derive(Default)]
struct BatchCounts {
    inserted: usize,
    duplicates: usize,
    rejected: usize,
    bytes: u64,
}

pub(crate) fn begin(shared: &Shared, db: &redb::Database) -> Result<WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_quick_repair(shared.config.quick_repair);
    Ok(txn)
}

fn commit_batch(shared: &Shared, batch: Vec<Command>) {
    let start = Instant::now();
    let now = shared.now_ms();
    let mut counts = BatchCounts::default();
    let result = {
        let db = shared.db();
        apply_batch(shared, &db, &batch, now, &mut counts)
    };
    let ok = result.is_ok();
    shared.observer.on_commit(&CommitEvent {
        requests: batch.len(),
        inserted: if ok { counts.inserted } else { 0 },
        duplicates: counts.duplicates,
        rejected: counts.rejected,
        bytes: counts.bytes,
        duration: start.elapsed(),
        ok,
    });
    match result {
        Ok(applied) => {
            for (command, outcome) in batch.into_iter().zip(applied) {
                match (command, outcome) {
                    (Command::Put { reply, .. }, Applied::Put(r)) => {
                        let _ = reply.send(r);
                    }
                    (Command::Replace { reply, .. }, Applied::Replace(r)) => {
                        let _ = reply.send(r);
                    }
                    (Command::Backup { reply, .. }, Applied::Simple(r)) => {
                        let _ = reply.send(r);
                    }
                    (Command::RemoveHints { reply, .. }, Applied::Count(r)) => {
                        let _ = reply.send(r);
                    }
                    // Commands and outcomes are built in the same order
                    // from the same batch; a mismatch cannot happen, and
                    // dropping the reply reports the request as failed.
                    _ => {}
                }
            }
        }
        Err(e) => {
            warn!(error = %e, requests = batch.len(), "store commit failed");
            let e = Arc::new(e);
            let failed = || WriteError::CommitFailed(e.clone());
            for command in batch {
                match command {
                    Command::Put { items, reply, .. } => {
                        let _ = reply.send(items.iter().map(|_| Err(failed())).collect());
                    }
                    Command::Replace { items, reply } => {
                        let _ = reply.send(items.iter().map(|_| Err(failed())).collect());
                    }
                    Command::Backup { reply, .. } => {
                        let _ = reply.send(Err(failed()));
                    }
                    Command::RemoveHints { reply, .. } => {
                        let _ = reply.send(Err(failed()));
                    }
                    Command::Sweep { reply, .. } => {
                        let _ = reply.send(Err(MaintenanceError::Storage(e.clone())));
                    }
                    Command::Purge { reply, .. } => {
                        let _ = reply.send(Err(failed()));
                    }
                    Command::Collect { reply, .. } => {
                        let _ = reply.send(Err(failed()));
                    }
                    Command::PruneCollected { reply, .. } => {
                        let _ = reply.send(Err(failed()));
                    }
                    Command::Compact { reply, .. } => {
                        let _ = reply.send(Err(MaintenanceError::Storage(e.clone())));
                    }
                }
            }
        }
    }
}

fn apply_batch(
    shared: &Shared,
    db: &redb::Database,
    batch: &[Command],
    now: u64,
    counts: &mut BatchCounts,
) -> Result<Vec<Applied>, redb::Error> {
    let txn = begin(shared, db)?;
    let mut applied = Vec::with_capacity(batch.len());
    let delta = {
        let mut t = Tables::open(&txn)?;
        let mut backups = None;
        let mut hints = None;
        for command in batch {
            match command {
                Command::Put {
                    items, hint_for, ..
                } => {
                    let mut results = Vec::with_capacity(items.len());
                    for item in items {
                        let r = apply_put(&mut t, item, now)?;
                        if let (
                            Some(target),
                            Ok(PutOutcome::Inserted { .. } | PutOutcome::AlreadyPresent { .. }),
                        ) = (hint_for, &r)
                        {
                            let table = match &mut hints {
                                Some(t) => t,
                                None => hints.insert(txn.open_table(layout::HINTS)?),
                            };
                            let hk = layout::hint_key(target, &item.meta.key, &item.meta.version);
                            // A hint already there keeps its creation time
                            // (the target has lacked the version since
                            // then): put it back. Re-hints are rare, so this
                            // costs less than a lookup before every insert.
                            let old = table.insert(hk.as_slice(), now)?.map(|g| g.value());
                            if let Some(old) = old.filter(|o| *o != now) {
                                table.insert(hk.as_slice(), old)?;
                            }
                        }
                        match &r {
                            Ok(PutOutcome::Inserted { .. }) => {
                                counts.inserted += 1;
                                counts.bytes += item.value.len() as u64;
                            }
                            Ok(PutOutcome::AlreadyPresent { .. }) => counts.duplicates += 1,
                            Ok(PutOutcome::Expired | PutOutcome::Collected) | Err(_) => {
                                counts.rejected += 1
                            }
                        }
                        results.push(r);
                    }
                    applied.push(Applied::Put(results));
                }
                Command::Replace { items, .. } => {
                    let mut results = Vec::with_capacity(items.len());
                    for item in items {
                        let r = apply_replace(&mut t, item)?;
                        if matches!(r, Ok(true)) {
                            counts.bytes += item.value.len() as u64;
                        }
                        results.push(r);
                    }
                    applied.push(Applied::Replace(results));
                }
                Command::Backup { id, value, .. } => {
                    let table = match &mut backups {
                        Some(t) => t,
                        None => backups.insert(txn.open_table(layout::BACKUPS)?),
                    };
                    let existed = match value {
                        Some(v) => {
                            counts.bytes += v.len() as u64;
                            table.insert(id.as_str(), v.as_slice())?.is_some()
                        }
                        None => table.remove(id.as_str())?.is_some(),
                    };
                    applied.push(Applied::Simple(Ok(existed)));
                }
                Command::RemoveHints { keys, .. } => {
                    let table = match &mut hints {
                        Some(t) => t,
                        None => hints.insert(txn.open_table(layout::HINTS)?),
                    };
                    let mut removed = 0;
                    for k in keys {
                        if table.remove(k.as_slice())?.is_some() {
                            removed += 1;
                        }
                    }
                    applied.push(Applied::Count(Ok(removed)));
                }
                // Exclusive commands never enter a batch.
                Command::Sweep { .. }
                | Command::Purge { .. }
                | Command::Collect { .. }
                | Command::PruneCollected { .. }
                | Command::Compact { .. } => {}
            }
        }
        std::mem::take(&mut t.digest)
    };
    // An injected failure drops the transaction uncommitted, as a failed
    // fsync leaves it (tests only; see `CommitFaults`).
    shared.before_commit().map_err(redb::Error::Io)?;
    shared.digests.commit(txn, delta)?;
    Ok(applied)
}

/// Replaces the stored bytes of a version that exists, keeping its
/// metadata: false when the version is not stored (swept, never here).
fn apply_replace(
    t: &mut Tables<'_>,
    item: &PreparedPut,
) -> Result<Result<bool, WriteError>, redb::Error> {
    let meta = &item.meta;
    let existing = match t.versions.get(item.version_key.as_slice())? {
        Some(v) => match decode_version(v.value(), &meta.key, &meta.version) {
            Ok(stored) => stored.meta,
            Err(c) => return Ok(Err(c.into())),
        },
        None => return Ok(Ok(false)),
    };
    if existing != *meta {
        return Ok(Err(WriteError::Invalid {
            key: meta.key.clone(),
            problem: crate::error::RecordProblem::MetadataChanged,
        }));
    }
    t.versions
        .insert(item.version_key.as_slice(), item.value.as_slice())?;
    Ok(Ok(true))
}

/// Whether something expiring at `expires_at_ms` has expired at `now`.
pub(crate) fn expired(expires_at_ms: Option<u64>, now: u64) -> bool {
    expires_at_ms.is_some_and(|e| e <= now)
}

/// Stores one version. The outer error aborts the whole batch (storage
/// failure); the inner one refuses this item only, before anything of it
/// was written.
fn apply_put(
    t: &mut Tables<'_>,
    item: &PreparedPut,
    now: u64,
) -> Result<Result<PutOutcome, WriteError>, redb::Error> {
    let meta = &item.meta;
    let key = meta.key.as_str();
    if expired(meta.expires_at_ms, now) {
        return Ok(Ok(PutOutcome::Expired));
    }
    // Step 1: everything that can fail on bad data.
    if let Some(raw) = t.collected.get(layout::slot_key(key).as_slice())? {
        match decode_framed::<CollectedMarker>(raw.value(), "collected", key) {
            Ok(m) if meta.version <= m.version => return Ok(Ok(PutOutcome::Collected)),
            Ok(_) => {}
            Err(c) => return Ok(Err(c.into())),
        }
    }
    if let Some(existing) = t.versions.get(item.version_key.as_slice())? {
        let existing = existing.value();
        let identical = existing == item.value.as_slice()
            || match same_content(existing, &item.value, meta) {
                Ok(same) => same,
                Err(c) => return Ok(Err(c.into())),
            };
        return Ok(Ok(PutOutcome::AlreadyPresent { identical }));
    }
    let head_key = layout::head_key(key);
    let old = match t.versions.get(head_key.as_slice())? {
        Some(raw) => match LatestEntry::decode(raw.value(), key) {
            Ok(e) => Some(e),
            Err(c) => return Ok(Err(c.into())),
        },
        None => None,
    };
    let becomes_latest = old.as_ref().is_none_or(|o| meta.version > o.head.version);
    let next_expiry = match (old.as_ref().and_then(|o| o.next_expiry), meta.expires_at_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let new_head = Head::of(meta);
    let entry = LatestEntry {
        head: match (&old, becomes_latest) {
            (Some(o), false) => o.head.clone(),
            _ => new_head.clone(),
        },
        versions: old.as_ref().map_or(0, |o| o.versions) + 1,
        next_expiry,
    };
    let entry_bytes = match entry.encode() {
        Ok(b) => b,
        Err(e) => {
            return Ok(Err(WriteError::Encode {
                key: key.to_string(),
                reason: e.to_string(),
            }));
        }
    };
    let tombstone = if becomes_latest {
        let old_tombstone = old.as_ref().is_some_and(|o| o.head.tombstone);
        match tombstone_change(key, old_tombstone, Some(&new_head), now) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        }
    } else {
        TombstoneChange::Keep
    };
    // Step 2: the writes.
    t.versions
        .insert(item.version_key.as_slice(), item.value.as_slice())?;
    t.digest.inserted(&item.version_key);
    if let Some(exp) = meta.expires_at_ms {
        t.ttl
            .insert(layout::ttl_key(exp, key, &meta.version).as_slice(), ())?;
        t.key_ttl
            .insert(layout::key_ttl_key(exp, key, &meta.version).as_slice(), ())?;
    }
    t.versions
        .insert(head_key.as_slice(), entry_bytes.as_slice())?;
    if old.is_none() {
        t.keys.insert(key, ())?;
    }
    if becomes_latest {
        rederive(t, key, old.as_ref().map(|o| &o.head), Some(&new_head))?;
        set_tombstone(t, key, tombstone)?;
    }
    Ok(Ok(PutOutcome::Inserted {
        latest: becomes_latest,
    }))
}

/// Whether two encoded versions hold the same metadata and envelope
/// (their bytes may differ if compression settings changed in between).
fn same_content(existing: &[u8], offered: &[u8], meta: &RecordMeta) -> Result<bool, CorruptValue> {
    let a = decode_version(existing, &meta.key, &meta.version)?;
    let b = decode_version(offered, &meta.key, &meta.version)?;
    if a.meta != b.meta || a.raw_len != b.raw_len {
        return Ok(false);
    }
    let limit = crate::config::MAX_VALUE_LIMIT;
    let bad = |e: crate::compress::DecompressError| CorruptValue {
        table: "versions",
        key: meta.key.clone(),
        reason: e.to_string(),
    };
    let ea = crate::compress::decode(a.codec, a.data.0, a.raw_len, limit).map_err(bad)?;
    let eb = crate::compress::decode(b.codec, b.data.0, b.raw_len, limit).map_err(bad)?;
    Ok(ea == eb)
}

/// What happens to an address's `tombstones` entry.
pub(crate) enum TombstoneChange {
    Keep,
    Set(Vec<u8>),
    Clear,
}

/// The change of the `tombstones` entry of `key` when its newest version
/// changes from one that was (`old_tombstone`) or was not a tombstone to
/// `new` (`None`: no version left). Untouched unless a tombstone is
/// involved, so ordinary writes do not modify the table.
pub(crate) fn tombstone_change(
    key: &str,
    old_tombstone: bool,
    new: Option<&Head>,
    now: u64,
) -> Result<TombstoneChange, WriteError> {
    match new {
        Some(h) if h.tombstone => TombstoneEntry {
            version: h.version.clone(),
            recorded_at_ms: now,
        }
        .encode()
        .map(TombstoneChange::Set)
        .map_err(|e| WriteError::Encode {
            key: key.to_string(),
            reason: e.to_string(),
        }),
        _ if old_tombstone => Ok(TombstoneChange::Clear),
        _ => Ok(TombstoneChange::Keep),
    }
}

pub(crate) fn set_tombstone(
    t: &mut Tables<'_>,
    key: &str,
    change: TombstoneChange,
) -> Result<(), redb::Error> {
    let k = layout::slot_key(key);
    match change {
        TombstoneChange::Keep => {}
        TombstoneChange::Set(v) => {
            t.tombstones.insert(k.as_slice(), v.as_slice())?;
        }
        TombstoneChange::Clear => {
            t.tombstones.remove(k.as_slice())?;
        }
    }
    Ok(())
}

/// The hierarchy entry a newest version implies: `(parent path, path)`.
fn hierarchy_of(head: Option<&Head>) -> Option<(&str, &str)> {
    let h = head.filter(|h| !h.tombstone)?;
    parent_path(&h.path).map(|parent| (parent, h.path.as_str()))
}

/// The link assertions the newest version of `key` implies:
/// `(from, to, flag)`.
pub(crate) fn links_of(key: &str, head: Option<&Head>) -> BTreeSet<(String, String, u8)> {
    let mut out = BTreeSet::new();
    if let Some(h) = head.filter(|h| !h.tombstone) {
        for to in &h.influences {
            out.insert((key.to_string(), to.clone(), LINK_BY_FROM));
        }
        for from in &h.influenced_by {
            out.insert((from.clone(), key.to_string(), LINK_BY_TO));
        }
    }
    out
}

/// Moves the hierarchy and link entries of `key` from what its old newest
/// version implied to what the new one implies (`None`: no version left).
pub(crate) fn rederive(
    t: &mut Tables<'_>,
    key: &str,
    old: Option<&Head>,
    new: Option<&Head>,
) -> Result<(), redb::Error> {
    let (oh, nh) = (hierarchy_of(old), hierarchy_of(new));
    if oh != nh {
        if let Some((parent, _)) = oh {
            t.hierarchy
                .remove(layout::hierarchy_key(parent, key).as_slice())?;
        }
        if let Some((parent, path)) = nh {
            t.hierarchy.insert(
                layout::hierarchy_key(parent, key).as_slice(),
                path.as_bytes(),
            )?;
        }
    }
    if old.is_some_and(|h| h.influences.is_empty() && h.influenced_by.is_empty())
        && new.is_some_and(|h| h.influences.is_empty() && h.influenced_by.is_empty())
    {
        return Ok(());
    }
    let (ol, nl) = (links_of(key, old), links_of(key, new));
    for (from, to, flag) in ol.difference(&nl) {
        set_link_flag(t, from, to, *flag, false)?;
    }
    for (from, to, flag) in nl.difference(&ol) {
        set_link_flag(t, from, to, *flag, true)?;
    }
    Ok(())
}

fn set_link_flag(
    t: &mut Tables<'_>,
    from: &str,
    to: &str,
    flag: u8,
    on: bool,
) -> Result<(), redb::Error> {
    let out_key = layout::pair_key(from, to);
    let in_key = layout::pair_key(to, from);
    let current = t
        .links_out
        .get(out_key.as_slice())?
        .map(|g| g.value())
        .unwrap_or(0);
    let next = if on { current | flag } else { current & !flag };
    if next == current {
        return Ok(());
    }
    if next == 0 {
        t.links_out.remove(out_key.as_slice())?;
        t.links_in.remove(in_key.as_slice())?;
    } else {
        t.links_out.insert(out_key.as_slice(), next)?;
        t.links_in.insert(in_key.as_slice(), next)?;
    }
    Ok(())
}

fn file_len(shared: &Shared) -> u64 {
    std::fs::metadata(&shared.path).map_or(0, |m| m.len())
}

/// Compacts the file if it is worth it (or `force`), holding the database
/// exclusively while it runs.
fn compact(shared: &Shared, force: bool) -> Result<CompactionReport, MaintenanceError> {
    let start = Instant::now();
    let file_bytes_before = file_len(shared);
    let result = (|| {
        let mut db = shared.db.write().unwrap_or_else(PoisonError::into_inner);
        let free = {
            let txn = db.begin_write()?;
            let free = txn.stats()?.fragmented_bytes();
            txn.abort()?;
            free
        };
        let c = &shared.config.compaction;
        let worth =
            free >= c.min_free_bytes && free as f64 >= c.min_free_ratio * file_bytes_before as f64;
        let compacted = if force || worth {
            db.compact()
                .map_err(|e| MaintenanceError::Compaction(e.to_string()))?
        } else {
            false
        };
        Ok::<_, MaintenanceError>((free, compacted))
    })();
    let duration = start.elapsed();
    let file_bytes_after = file_len(shared);
    shared.observer.on_compaction(&CompactionEvent {
        compacted: matches!(result, Ok((_, true))),
        file_bytes_before,
        file_bytes_after,
        duration,
        ok: result.is_ok(),
    });
    let (free_bytes_before, compacted) = result?;
    if compacted {
        debug!(
            before = file_bytes_before,
            after = file_bytes_after,
            ms = duration.as_millis() as u64,
            "store compacted"
        );
    }
    Ok(CompactionReport {
        compacted,
        free_bytes_before,
        file_bytes_before,
        file_bytes_after,
        duration,
    })
}
