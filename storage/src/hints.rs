//! Hinted handoff: versions this node holds for a peer that was down.
//!
//! With quorum replication a coordinator whose replica is unreachable
//! writes the version to the next node of the partition's preference list
//! (a *fallback*). The fallback stores it like any other version and also
//! records a *hint*: "this version belongs on peer X". A background worker
//! later pages through X's hints ([`Store::hints`]), reads each version
//! ([`Store::get`]), sends them to X and removes the hints X acknowledged
//! ([`Store::remove_hints`]).
//!
//! The store's promises, which the worker may rely on:
//!
//! - A hint is committed in the same transaction as its version
//!   ([`Store::put_many_hinted`]), so after a crash either both are there
//!   or neither is.
//! - Every hint names a stored version: the TTL sweeper, a purge
//!   ([`Store::purge`]) and a collection ([`Store::collect`]) remove the
//!   hints of the versions they delete, in the same transaction, and
//!   [`Store::check`] reports a hint without its version. A version that
//!   has expired but is not yet swept still has its hint, and
//!   [`Store::get`] already returns `None` for it; the target does not
//!   need an expired version, so the worker drops such a hint (and one
//!   whose version was swept between its two reads) rather than retry it.
//! - Hints are keyed by target, then storage key, then version
//!   (`layout::HINTS`): one target's hints are one range, read in pages
//!   with a cursor that stays valid across restarts.

use std::ops::Bound;

use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable};
use slurp_protocol::VersionId;

use crate::error::{CorruptValue, ReadError};
use crate::layout;
use crate::store::Store;
use crate::validate::check_hint_target;

/// One hint: the version `key`/`version`, stored on this node, belongs on
/// the peer `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hint {
    /// The peer the version belongs on (its id, as the caller gave it).
    pub target: String,
    /// The storage key of the version.
    pub key: String,
    pub version: VersionId,
    /// When the hint was first recorded, milliseconds since the Unix epoch
    /// (the store's clock at the commit).
    pub created_ms: u64,
}

/// Where a page of one target's hints resumes: after the hint it names.
/// Opaque; valid across restarts of the same store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HintCursor(Vec<u8>);

impl HintCursor {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        HintCursor(bytes)
    }
}

/// A page of one target's hints, in key and then version order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HintPage {
    pub hints: Vec<Hint>,
    /// Entries of the target's range whose table key does not decode; left
    /// out of `hints` (they do not stop the pages behind them).
    pub corrupt: Vec<CorruptValue>,
    /// Pass as `after` to get the next page; `None` when the target has no
    /// hints after this page.
    pub next: Option<HintCursor>,
}

/// The hints pending for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintTarget {
    pub target: String,
    /// Hints recorded for it.
    pub count: u64,
    /// Creation time of its oldest hint, milliseconds since the Unix epoch.
    pub oldest_ms: u64,
}

fn corrupt_key(e: layout::KeyLayoutError) -> CorruptValue {
    CorruptValue {
        table: "hints",
        key: e.hex,
        reason: e.reason.to_string(),
    }
}

impl Store {
    fn hints_table<T>(
        &self,
        f: impl FnOnce(&ReadOnlyTable<&'static [u8], u64>) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let db = self.shared().db();
        let txn = db.begin_read()?;
        let table = txn.open_table(layout::HINTS)?;
        let out = f(&table);
        drop(table);
        drop(txn);
        drop(db);
        out
    }

    /// The hints for `target`, in storage key and then version order,
    /// after `after` (a cursor from a previous page), at most `limit` (at
    /// least 1) per page. The page is one read snapshot; hints added or
    /// removed between pages show up or drop out like in any range scan.
    /// An invalid target is [`ReadError::HintTarget`].
    pub fn hints(
        &self,
        target: &str,
        after: Option<&HintCursor>,
        limit: usize,
    ) -> Result<HintPage, ReadError> {
        check_hint_target(target)?;
        let prefix = layout::hint_prefix(target);
        // A target never contains 0x00, so `target | 0x00` is not all 0xff
        // and has an end.
        let end = layout::prefix_end(&prefix);
        let resume = after.map(|c| {
            let mut k = prefix.clone();
            k.extend_from_slice(&c.0);
            k
        });
        let lower = match &resume {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Included(prefix.as_slice()),
        };
        let upper = match &end {
            Some(e) => Bound::Excluded(e.as_slice()),
            None => Bound::Unbounded,
        };
        let limit = limit.max(1);
        self.hints_table(|table| {
            let mut page = HintPage::default();
            let mut last: Option<Vec<u8>> = None;
            for r in table.range::<&[u8]>((lower, upper))? {
                let (k, v) = r?;
                let bytes = k.value();
                if page.hints.len() >= limit {
                    page.next = last.map(HintCursor);
                    break;
                }
                last = Some(bytes[prefix.len()..].to_vec());
                // Inside the range every key starts with `target | 0x00`,
                // so a key that decodes names this target.
                match layout::decode_hint_key(bytes) {
                    Ok(h) => page.hints.push(Hint {
                        target: target.to_string(),
                        key: h.key.to_string(),
                        version: h.version,
                        created_ms: v.value(),
                    }),
                    Err(e) => page.corrupt.push(corrupt_key(e)),
                }
            }
            Ok(page)
        })
    }

    /// Every target with hints, in target order, with how many hints it
    /// has and the creation time of its oldest: what metrics and the
    /// command line show. Walks the whole `hints` table in one read
    /// snapshot, so it costs time in proportion to the hints stored (they
    /// are few while peers come back; well under a microsecond each). Entries
    /// whose key does not decode are left out ([`Store::check`] reports
    /// them).
    pub fn hint_targets(&self) -> Result<Vec<HintTarget>, ReadError> {
        self.hints_table(|table| {
            let mut out: Vec<HintTarget> = Vec::new();
            for r in table.iter()? {
                let (k, v) = r?;
                let Ok(h) = layout::decode_hint_key(k.value()) else {
                    continue;
                };
                let created = v.value();
                match out.last_mut() {
                    Some(t) if t.target == h.target => {
                        t.count += 1;
                        t.oldest_ms = t.oldest_ms.min(created);
                    }
                    _ => out.push(HintTarget {
                        target: h.target.to_string(),
                        count: 1,
                        oldest_ms: created,
                    }),
                }
            }
            Ok(out)
        })
    }
}
