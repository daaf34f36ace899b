//! Slot scopes: which part of the key space a search answers for.
//!
//! In a cluster a context is indexed on every node that replicates its
//! partition, so the same document sits in several indexes. A distributed
//! search therefore picks, for every partition, one node to answer for it,
//! and each node must answer for its partitions only: hits, the total count,
//! facet counts and the BM25 statistics it reports. Counting a replica twice
//! would inflate totals and facets and skew every score; missing one would
//! lose hits. A [`SlotScope`] is that assignment, expressed in slots (the
//! 16-bit hash prefix of a key, [`Slot::of`]) so it does not depend on the
//! partition count: a partition is a contiguous slot range
//! ([`PartitionScheme::slots`]).
//!
//! Every document carries its slot in the `slot` field, and the scope is a
//! filter clause of the query the engine runs, beside the role filter, so
//! the guarantees of the role filter hold for the scope too: nothing outside
//! it is matched, counted, faceted or used in ranking statistics, whatever
//! the limit and offset.

use std::ops::RangeInclusive;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::query::doc_predicate_query::{DocPredicateQuery, FunctionPredicate};
use tantivy::query::{EmptyQuery, Query};
use tantivy::{DocId, SegmentReader};

use slurp_protocol::{Partition, PartitionScheme, Slot};

use crate::error::SlotScopeError;
use crate::schema::names;

/// A set of slots, as a normalised list of inclusive ranges: sorted, with
/// no two ranges overlapping or adjacent (`0..=9` and `10..=19` are kept as
/// `0..=19`), so two scopes holding the same slots are equal.
///
/// The empty scope holds no slot: a search in it matches nothing and its
/// statistics are zero (a node assigned no partition answers with nothing).
/// It is never read as "everything"; that is [`SlotScope::all`].
///
/// Serialised as a list of `[first, last]` pairs (`[[0, 99], [200, 300]]`).
/// Deserialising normalises the list and refuses a pair whose `first` is
/// greater than its `last`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(u16, u16)>", into = "Vec<(u16, u16)>")]
pub struct SlotScope {
    /// Sorted, non-empty, pairwise disjoint and non-adjacent.
    ranges: Vec<RangeInclusive<u16>>,
}

impl SlotScope {
    /// Every slot: the scope of a search on a node that answers for all it
    /// holds (a single node, or every entry point without a scope).
    pub fn all() -> Self {
        SlotScope {
            ranges: vec![0..=u16::MAX],
        }
    }

    /// No slot at all.
    pub fn none() -> Self {
        SlotScope { ranges: Vec::new() }
    }

    /// The slots of any of `ranges`, normalised. Empty ranges (`5..=3`) add
    /// nothing; overlapping and adjacent ranges are joined.
    pub fn from_ranges(ranges: impl IntoIterator<Item = RangeInclusive<u16>>) -> Self {
        let mut raw: Vec<RangeInclusive<u16>> =
            ranges.into_iter().filter(|r| !r.is_empty()).collect();
        raw.sort_unstable_by_key(|r| *r.start());
        let mut out: Vec<RangeInclusive<u16>> = Vec::with_capacity(raw.len());
        for r in raw {
            match out.last_mut() {
                // Overlapping or adjacent: extend. `saturating_add` keeps a
                // range ending at the last slot from wrapping around.
                Some(last) if *r.start() <= last.end().saturating_add(1) => {
                    if r.end() > last.end() {
                        *last = *last.start()..=*r.end();
                    }
                }
                _ => out.push(r),
            }
        }
        SlotScope { ranges: out }
    }

    /// The slots of `partitions` under `scheme`.
    pub fn from_partitions(
        scheme: &PartitionScheme,
        partitions: impl IntoIterator<Item = Partition>,
    ) -> Self {
        Self::from_ranges(partitions.into_iter().map(|p| scheme.slots(p)))
    }

    /// Whether this scope holds every slot.
    pub fn is_all(&self) -> bool {
        matches!(self.ranges.as_slice(), [r] if *r.start() == 0 && *r.end() == u16::MAX)
    }

    /// Whether this scope holds no slot.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `slot` is in this scope.
    pub fn contains(&self, slot: Slot) -> bool {
        let i = self.ranges.partition_point(|r| *r.end() < slot.0);
        self.ranges.get(i).is_some_and(|r| *r.start() <= slot.0)
    }

    /// The normalised ranges: sorted, disjoint, non-adjacent.
    pub fn ranges(&self) -> &[RangeInclusive<u16>] {
        &self.ranges
    }

    /// How many slots the scope holds (at most 65,536).
    pub fn slot_count(&self) -> u32 {
        self.ranges
            .iter()
            .map(|r| u32::from(*r.end()) - u32::from(*r.start()) + 1)
            .sum()
    }

    /// The filter clause selecting the documents of this scope, or `None`
    /// for [`SlotScope::all`], which needs no clause. It matches with a
    /// constant score; callers put it under a `Must` beside the role.
    ///
    /// The clause reads each candidate's slot from the `slot` fast field
    /// and looks it up in the ranges (a binary search). Inside an
    /// intersection it is only asked about the documents the other clauses
    /// propose, so its cost follows the candidates, not the segment size or
    /// the number of ranges.
    pub(crate) fn filter_query(&self) -> Option<Box<dyn Query>> {
        if self.is_all() {
            return None;
        }
        if self.is_empty() {
            return Some(Box::new(EmptyQuery));
        }
        let scope = Arc::new(self.clone());
        let predicate = FunctionPredicate::from(move |segment: &SegmentReader| {
            let column = segment.fast_fields().u64(names::SLOT)?;
            let scope = scope.clone();
            Ok(move |doc: DocId| {
                column
                    .first(doc)
                    .and_then(|v| u16::try_from(v).ok())
                    .is_some_and(|slot| scope.contains(Slot(slot)))
            })
        });
        Some(Box::new(DocPredicateQuery::from(predicate)))
    }
}

impl TryFrom<Vec<(u16, u16)>> for SlotScope {
    type Error = SlotScopeError;

    fn try_from(pairs: Vec<(u16, u16)>) -> Result<Self, Self::Error> {
        if let Some(&(first, last)) = pairs.iter().find(|(first, last)| first > last) {
            return Err(SlotScopeError::ReversedRange { first, last });
        }
        Ok(SlotScope::from_ranges(
            pairs.into_iter().map(|(first, last)| first..=last),
        ))
    }
}

impl From<SlotScope> for Vec<(u16, u16)> {
    fn from(scope: SlotScope) -> Self {
        scope
            .ranges
            .into_iter()
            .map(|r| (*r.start(), *r.end()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw_contains(raw: &[(u16, u16)], slot: u16) -> bool {
        raw.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }

    /// Ranges that cluster, so overlaps, adjacency and containment are
    /// common, plus reversed (empty) ones and the ends of the slot space.
    fn raw_ranges() -> impl Strategy<Value = Vec<(u16, u16)>> {
        let bound = prop_oneof![
            4 => 0u16..64,
            1 => Just(0u16),
            1 => Just(u16::MAX),
            1 => (u16::MAX - 64)..=u16::MAX,
            1 => any::<u16>(),
        ];
        prop::collection::vec((bound.clone(), bound), 0..12)
    }

    proptest! {
        #[test]
        fn normalised_scope_holds_exactly_the_raw_slots(
            raw in raw_ranges(),
            probes in prop::collection::vec(any::<u16>(), 0..32),
        ) {
            let scope = SlotScope::from_ranges(raw.iter().map(|&(a, b)| a..=b));
            let mut interesting: Vec<u16> = probes;
            for &(a, b) in &raw {
                for v in [a, b] {
                    interesting.extend([v.saturating_sub(1), v, v.saturating_add(1)]);
                }
            }
            for slot in interesting {
                prop_assert_eq!(
                    scope.contains(Slot(slot)),
                    raw_contains(&raw, slot),
                    "slot {} in {:?} from {:?}", slot, scope, raw
                );
            }
            // Normal form: sorted, non-empty, with a gap of at least one
            // slot between consecutive ranges.
            for r in scope.ranges() {
                prop_assert!(r.start() <= r.end());
            }
            for w in scope.ranges().windows(2) {
                prop_assert!(u32::from(*w[0].end()) + 1 < u32::from(*w[1].start()), "{:?}", scope);
            }
            // The same slots in another order give the same scope.
            let mut reversed = raw.clone();
            reversed.reverse();
            prop_assert_eq!(
                SlotScope::from_ranges(reversed.iter().map(|&(a, b)| a..=b)),
                scope.clone()
            );
        }

        #[test]
        fn slot_count_matches_a_full_sweep(raw in raw_ranges()) {
            let scope = SlotScope::from_ranges(raw.iter().map(|&(a, b)| a..=b));
            let swept = (0..=u16::MAX).filter(|s| raw_contains(&raw, *s)).count();
            prop_assert_eq!(scope.slot_count() as usize, swept);
        }
    }

    #[test]
    fn all_and_none_are_what_they_say() {
        let all = SlotScope::all();
        assert!(all.is_all() && !all.is_empty());
        assert!(all.contains(Slot(0)) && all.contains(Slot(u16::MAX)));
        assert_eq!(all.slot_count(), 65_536);
        let none = SlotScope::none();
        assert!(none.is_empty() && !none.is_all());
        assert!(!none.contains(Slot(0)) && !none.contains(Slot(u16::MAX)));
        // Pieces that cover every slot are the whole space.
        let halves = SlotScope::from_ranges([40_000..=u16::MAX, 0..=39_999]);
        assert!(halves.is_all());
        assert_eq!(halves, all);
        // An empty range list and a list of empty ranges hold nothing.
        assert!(SlotScope::from_ranges([]).is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = SlotScope::from_ranges([5..=3]);
        assert!(reversed.is_empty());
    }

    #[test]
    fn partitions_become_their_slot_ranges() {
        let scheme = PartitionScheme::new(4).unwrap();
        let scope = SlotScope::from_partitions(&scheme, [Partition(3), Partition(1), Partition(2)]);
        assert_eq!(scope.ranges(), &[4096..=16383]);
        let scope = SlotScope::from_partitions(&scheme, [Partition(0), Partition(15)]);
        assert_eq!(scope.ranges(), &[0..=4095, 61440..=65535]);
        let every = SlotScope::from_partitions(&scheme, (0..16).map(Partition));
        assert!(every.is_all());
    }

    #[test]
    fn serde_is_a_list_of_pairs_and_refuses_reversed_ones() {
        let scope = SlotScope::from_ranges([200..=300, 0..=99, 100..=120]);
        let json = serde_json::to_string(&scope).unwrap();
        assert_eq!(json, "[[0,120],[200,300]]");
        let back: SlotScope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, scope);
        // Unnormalised input is normalised.
        let messy: SlotScope = serde_json::from_str("[[10,20],[0,9],[15,30]]").unwrap();
        assert_eq!(messy.ranges(), &[0..=30]);
        // Empty is empty, not everything.
        let empty: SlotScope = serde_json::from_str("[]").unwrap();
        assert!(empty.is_empty());
        let err = serde_json::from_str::<SlotScope>("[[9,3]]").unwrap_err();
        assert!(err.to_string().contains("9"), "{err}");
        assert!(serde_json::from_str::<SlotScope>("[[0,70000]]").is_err());
        assert!(serde_json::from_str::<SlotScope>("[[1]]").is_err());
    }
}
