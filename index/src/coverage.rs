//! What the index does not hold: records its source keeps but could not
//! open, and whether a rebuild is still to finish.
//!
//! A node indexes the plaintext of the records it can open. With role keys
//! granted per node, a replica also stores envelopes sealed to roles it does
//! not hold: it keeps them (it is their replica) but cannot read, index or
//! search them. That is normal, not an error; the index records each such
//! record ([`ContextIndex::mark_unopenable`], or
//! [`RebuildItem::Unopenable`] in a rebuild) under the same newest-version
//! rule as a document, so it can tell a search how many records in the
//! search's role and scope it could not look into
//! ([`crate::SearchResults::unopenable`]) and an operator how many it holds
//! by reason ([`crate::IndexStatus::unopenable`]).
//!
//! [`Coverage`] says whether the index holds everything its source has:
//! after [`ContextIndex::expect_rebuild`] and until a rebuild finishes it
//! does not, and after a failed rebuild it still does not.
//!
//! [`ContextIndex::mark_unopenable`]: crate::ContextIndex::mark_unopenable
//! [`ContextIndex::expect_rebuild`]: crate::ContextIndex::expect_rebuild

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use slurp_protocol::{RoleName, Slot, VersionId};

/// Whether the index holds everything its source has: the API shows the
/// index's own type.
pub use slurp_protocol::api::IndexCoverage as Coverage;

use crate::schema::IndexEntry;
use crate::scope::SlotScope;

/// Why a record the source holds could not be opened for the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnopenableReason {
    /// No key the node holds opens the envelope: it is sealed to roles (or
    /// key epochs) the node does not hold. Normal on a replica.
    NoKey,
    /// The envelope, or the context inside it, does not decode.
    Corrupt,
}

impl UnopenableReason {
    /// `no_key` or `corrupt`, as in metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UnopenableReason::NoKey => "no_key",
            UnopenableReason::Corrupt => "corrupt",
        }
    }
}

impl std::fmt::Display for UnopenableReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version the source holds but could not open: what the index knows of
/// it without its plaintext (its key, version and readers are in the
/// record's clear metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct UnopenableEntry {
    pub key: String,
    pub version: VersionId,
    /// Roles that may read the record: searches by these roles are told
    /// they could not look into it.
    pub readers: Vec<RoleName>,
    pub reason: UnopenableReason,
}

/// Records held but not openable, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnopenableCounts {
    pub no_key: u64,
    pub corrupt: u64,
}

impl UnopenableCounts {
    pub fn total(&self) -> u64 {
        self.no_key + self.corrupt
    }

    /// The count of one reason.
    pub fn get(&self, reason: UnopenableReason) -> u64 {
        match reason {
            UnopenableReason::NoKey => self.no_key,
            UnopenableReason::Corrupt => self.corrupt,
        }
    }

    fn slot(&mut self, reason: UnopenableReason) -> &mut u64 {
        match reason {
            UnopenableReason::NoKey => &mut self.no_key,
            UnopenableReason::Corrupt => &mut self.corrupt,
        }
    }
}

/// One item of a rebuild's feed: a context to index, or a record that
/// could not be opened (counted, not indexed, never an error).
// Nearly every item is an entry: boxing it would add an allocation per
// entry to spare the rare unopenable one some bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RebuildItem {
    Entry(IndexEntry),
    Unopenable(UnopenableEntry),
}

impl From<IndexEntry> for RebuildItem {
    fn from(e: IndexEntry) -> Self {
        RebuildItem::Entry(e)
    }
}

impl From<UnopenableEntry> for RebuildItem {
    fn from(e: UnopenableEntry) -> Self {
        RebuildItem::Unopenable(e)
    }
}

struct Held {
    reason: UnopenableReason,
    readers: Vec<RoleName>,
    slot: u16,
}

/// The records marked unopenable, with counts by reason and by role and
/// slot (so a search's count in its role and scope costs a few map
/// lookups, not a walk over every record).
#[derive(Default)]
pub(crate) struct UnopenableSet {
    keys: HashMap<String, Held>,
    by_role: HashMap<RoleName, BTreeMap<u16, u64>>,
    counts: UnopenableCounts,
}

impl UnopenableSet {
    /// Records `e` (replacing what was recorded for its key).
    pub(crate) fn insert(&mut self, e: &UnopenableEntry) {
        self.remove(&e.key);
        let mut readers = e.readers.clone();
        readers.sort();
        readers.dedup();
        let slot = Slot::of(&e.key).0;
        for r in &readers {
            *self
                .by_role
                .entry(r.clone())
                .or_default()
                .entry(slot)
                .or_default() += 1;
        }
        *self.counts.slot(e.reason) += 1;
        self.keys.insert(
            e.key.clone(),
            Held {
                reason: e.reason,
                readers,
                slot,
            },
        );
    }

    /// Forgets `key`; whether it was recorded.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let Some(h) = self.keys.remove(key) else {
            return false;
        };
        for r in &h.readers {
            if let Some(slots) = self.by_role.get_mut(r) {
                if let Some(n) = slots.get_mut(&h.slot) {
                    *n -= 1;
                    if *n == 0 {
                        slots.remove(&h.slot);
                    }
                }
                if slots.is_empty() {
                    self.by_role.remove(r);
                }
            }
        }
        *self.counts.slot(h.reason) -= 1;
        true
    }

    pub(crate) fn counts(&self) -> UnopenableCounts {
        self.counts
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Records `role` may read whose slot is in `scope`.
    pub(crate) fn in_scope(&self, role: &RoleName, scope: &SlotScope) -> u64 {
        let Some(slots) = self.by_role.get(role) else {
            return 0;
        };
        scope
            .ranges()
            .iter()
            .map(|r| slots.range(r.clone()).map(|(_, n)| *n).sum::<u64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, readers: &[&str], reason: UnopenableReason) -> UnopenableEntry {
        UnopenableEntry {
            key: key.into(),
            version: "1.0@w".parse().unwrap(),
            readers: readers.iter().map(|r| RoleName::new(*r).unwrap()).collect(),
            reason,
        }
    }

    #[test]
    fn counts_follow_inserts_and_removals_by_reason_role_and_scope() {
        let mut s = UnopenableSet::default();
        let dev = RoleName::new("developer").unwrap();
        let admin = RoleName::new("admin").unwrap();
        s.insert(&entry(
            "a",
            &["developer", "admin"],
            UnopenableReason::NoKey,
        ));
        s.insert(&entry("b", &["admin"], UnopenableReason::Corrupt));
        assert_eq!(
            s.counts(),
            UnopenableCounts {
                no_key: 1,
                corrupt: 1
            }
        );
        assert_eq!(s.in_scope(&dev, &SlotScope::all()), 1);
        assert_eq!(s.in_scope(&admin, &SlotScope::all()), 2);
        assert_eq!(s.in_scope(&admin, &SlotScope::none()), 0);
        let slot_a = Slot::of("a").0;
        assert_eq!(
            s.in_scope(&dev, &SlotScope::from_ranges([slot_a..=slot_a])),
            1
        );
        // Re-marking a key replaces it; it is counted once.
        s.insert(&entry("a", &["admin"], UnopenableReason::Corrupt));
        assert_eq!(s.counts().total(), 2);
        assert_eq!(s.in_scope(&dev, &SlotScope::all()), 0);
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.in_scope(&admin, &SlotScope::all()), 1);
        assert!(s.remove("b"));
        assert_eq!(s.counts(), UnopenableCounts::default());
        assert!(s.by_role.is_empty());
    }
}
