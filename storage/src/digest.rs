//! Slot digests: what anti-entropy compares before it compares versions.
//!
//! Two replicas of a partition should hold the same versions. Listing and
//! comparing every version id to find out costs a scan on both sides and
//! the whole list on the wire, while in the common case nothing differs.
//! So each side first compares a *digest* of a slot range: the XOR of
//! `blake3(versions table key)` over the versions in the range, with their
//! count. Only when two digests differ do the replicas narrow down, by
//! halving the range, to the slots that differ, and list versions there.
//!
//! XOR makes the digest order-free and incremental: adding a version and
//! removing it are the same operation, and the digest of a range is the
//! XOR of the digests of its slots. The store therefore keeps one digest
//! per slot in memory (65,536 of 40 bytes: 2.5 MiB) and answers any range
//! without touching the disk ([`Store::digest`]).
//!
//! Why the key alone is hashed: a version is immutable and named by its
//! key (slot, storage key, version id), so two replicas holding the same
//! keys hold the same versions (a rewrap of the sealed bytes,
//! [`Store::replace_envelopes`], changes nothing the replicas need to
//! exchange). Heads (`slot | key | 0x01`) are derived per replica and are
//! not versions; they never count. A key too short to name a slot (only
//! damage makes one) is in no slot and never counts either; any other key
//! counts by its raw bytes, whether or not it decodes, so a digest never
//! fails on bad data. The digest detects divergence between honest
//! replicas; it is not a commitment against an adversary (with enough
//! chosen keys an XOR of hashes can be steered).
//!
//! Keeping it exact: the digests are built at open by one scan of the
//! `versions` table, before the writer thread starts, so no write races
//! the scan. Afterwards only the writer thread changes versions; each of
//! its transactions collects the keys it inserted and removed (a
//! [`DigestDelta`]) and applies them after `commit()` returned `Ok`, so a
//! failed commit changes nothing. The commit and the application of its
//! delta happen under one lock (the *commit gate*): [`Store::check`] takes
//! the gate while it opens its read snapshot and copies the digests, so the
//! versions it scans and the digests it compares them with are of the same
//! commit. [`Store::digest`] does not wait for a commit: it sees the
//! digests of the last commit applied, all of one transaction or none of
//! it.

use std::ops::{Bound, RangeInclusive};
use std::sync::{Mutex, PoisonError, RwLock};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::error::ReadError;
use crate::layout;
use crate::store::Store;

/// Slots there are (`u16`).
const SLOTS: usize = 1 << 16;

/// The digest of a set of versions: the XOR of `blake3` of their
/// `versions` table keys, and how many there are. The empty set is
/// [`RangeDigest::default`] (all zeros, 0 versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeDigest {
    pub digest: [u8; 32],
    pub versions: u64,
}

impl RangeDigest {
    /// Adds the digest of a disjoint set (another slot range): the digest
    /// of the union.
    pub fn merge(&mut self, other: &RangeDigest) {
        for (a, b) in self.digest.iter_mut().zip(&other.digest) {
            *a ^= b;
        }
        self.versions = self.versions.wrapping_add(other.versions);
    }
}

/// A digest as the store keeps and combines it: the 32 bytes as four
/// little-endian words, so an XOR is four instructions (the full range
/// folds 65,536 of them). XOR commutes with the byte order, so the bytes of
/// the words are the XOR of the hashes' bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Digest {
    words: [u64; 4],
    versions: u64,
}

type Hash = [u64; 4];

impl Digest {
    fn merge(&mut self, other: &Digest) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a ^= b;
        }
        self.versions = self.versions.wrapping_add(other.versions);
    }

    fn add(&mut self, hash: &Hash) {
        for (a, b) in self.words.iter_mut().zip(hash) {
            *a ^= b;
        }
        self.versions = self.versions.wrapping_add(1);
    }

    fn remove(&mut self, hash: &Hash) {
        for (a, b) in self.words.iter_mut().zip(hash) {
            *a ^= b;
        }
        self.versions = self.versions.wrapping_sub(1);
    }

    fn public(&self) -> RangeDigest {
        let mut digest = [0u8; 32];
        for (out, w) in digest.chunks_exact_mut(8).zip(&self.words) {
            out.copy_from_slice(&w.to_le_bytes());
        }
        RangeDigest {
            digest,
            versions: self.versions,
        }
    }
}

/// The slot a `versions` key counts in, `None` for a head or a key too
/// short to name a slot.
fn counted_slot(key: &[u8]) -> Option<usize> {
    if key.len() < 2 || layout::is_head_key(key) {
        return None;
    }
    Some(usize::from(u16::from_be_bytes([key[0], key[1]])))
}

fn hash(key: &[u8]) -> Hash {
    let bytes = blake3::hash(key);
    let mut words = [0u64; 4];
    for (w, chunk) in words.iter_mut().zip(bytes.as_bytes().chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    words
}

/// The `versions` keys one transaction inserted and removed, to apply to
/// the slot digests once it has committed.
#[derive(Default)]
pub(crate) struct DigestDelta(Vec<(usize, Hash, bool)>);

impl DigestDelta {
    /// `key` was inserted into `versions` (it was not there before).
    pub fn inserted(&mut self, key: &[u8]) {
        if let Some(slot) = counted_slot(key) {
            self.0.push((slot, hash(key), true));
        }
    }

    /// `key` was removed from `versions` (it was there before).
    pub fn removed(&mut self, key: &[u8]) {
        if let Some(slot) = counted_slot(key) {
            self.0.push((slot, hash(key), false));
        }
    }
}

/// The per-slot digests of a store, and the gate its commits pass.
pub(crate) struct SlotDigests {
    slots: RwLock<Box<[Digest]>>,
    /// Held across each commit that may change versions and the
    /// application of its delta (see the module doc).
    gate: Mutex<()>,
}

/// Calls `each` with the slot and hash of every counted `versions` key in
/// the slot range.
fn keys_in(
    txn: &ReadTransaction,
    slots: &RangeInclusive<u16>,
    mut each: impl FnMut(usize, &Hash),
) -> Result<(), ReadError> {
    let versions = txn.open_table(layout::VERSIONS)?;
    let start = layout::slot_start(*slots.start());
    let end = slots.end().checked_add(1).map(layout::slot_start);
    let upper = match &end {
        Some(e) => Bound::Excluded(e.as_slice()),
        None => Bound::Unbounded,
    };
    for r in versions.range::<&[u8]>((Bound::Included(start.as_slice()), upper))? {
        let (k, _) = r?;
        let key = k.value();
        if let Some(slot) = counted_slot(key) {
            each(slot, &hash(key));
        }
    }
    Ok(())
}

impl SlotDigests {
    /// Builds the digests by one scan of the `versions` table. Call before
    /// any write can happen.
    pub fn build(db: &Database) -> Result<SlotDigests, ReadError> {
        let mut slots = vec![Digest::default(); SLOTS].into_boxed_slice();
        let txn = db.begin_read()?;
        keys_in(&txn, &(0..=u16::MAX), |slot, h| slots[slot].add(h))?;
        Ok(SlotDigests {
            slots: RwLock::new(slots),
            gate: Mutex::new(()),
        })
    }

    /// The digest of a slot range as of the last commit applied.
    pub fn range(&self, slots: RangeInclusive<u16>) -> RangeDigest {
        let mut out = Digest::default();
        if slots.is_empty() {
            return out.public();
        }
        let all = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        let (start, end) = (usize::from(*slots.start()), usize::from(*slots.end()));
        for d in &all[start..=end] {
            out.merge(d);
        }
        out.public()
    }

    /// Commits `txn` and, only if that succeeded, applies `delta`.
    pub fn commit(&self, txn: WriteTransaction, delta: DigestDelta) -> Result<(), redb::Error> {
        let _gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        txn.commit()?;
        if !delta.0.is_empty() {
            let mut all = self.slots.write().unwrap_or_else(PoisonError::into_inner);
            for (slot, h, added) in &delta.0 {
                if let Some(d) = all.get_mut(*slot) {
                    if *added {
                        d.add(h);
                    } else {
                        d.remove(h);
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs `begin` (which opens a read transaction) while no commit is
    /// under way, and copies the digests, which then belong to the state
    /// that transaction sees.
    pub fn snapshot<T>(&self, begin: impl FnOnce() -> T) -> (T, Box<[Digest]>) {
        let _gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        let out = begin();
        let copy = self
            .slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (out, copy)
    }
}

/// Per-slot digests computed by scanning, for [`Store::check`].
pub(crate) struct ScannedDigests(Box<[Digest]>);

impl ScannedDigests {
    pub fn new() -> Self {
        ScannedDigests(vec![Digest::default(); SLOTS].into_boxed_slice())
    }

    /// Counts one `versions` key (heads and slotless keys are skipped).
    pub fn add(&mut self, key: &[u8]) {
        if let Some(slot) = counted_slot(key) {
            self.0[slot].add(&hash(key));
        }
    }

    /// The slots whose digests differ from `maintained`: the slot, the
    /// maintained digest and the scanned one.
    pub fn differences<'a>(
        &'a self,
        maintained: &'a [Digest],
    ) -> impl Iterator<Item = (u16, RangeDigest, RangeDigest)> + 'a {
        (0..=u16::MAX).filter_map(move |s| {
            let i = usize::from(s);
            let (m, scanned) = (maintained.get(i)?, self.0.get(i)?);
            (m != scanned).then(|| (s, m.public(), scanned.public()))
        })
    }
}

impl Store {
    /// The digest of the versions in a slot range (inclusive; an empty
    /// range has the empty digest), from the digests the store maintains:
    /// no disk access, one XOR per slot in the range. Expired versions
    /// count until the sweeper deletes them, like in
    /// [`crate::StoreStats::versions`]. A write is included once its
    /// commit has returned.
    pub fn digest(&self, slots: RangeInclusive<u16>) -> RangeDigest {
        self.shared().digests.range(slots)
    }

    /// [`Store::digest`] computed from scratch by scanning the slot range
    /// of the `versions` table in one read snapshot (what `check` compares
    /// the maintained digests with). Costs a range scan.
    pub fn digest_scan(&self, slots: RangeInclusive<u16>) -> Result<RangeDigest, ReadError> {
        let mut out = Digest::default();
        if slots.is_empty() {
            return Ok(out.public());
        }
        let db = self.shared().db();
        let txn = db.begin_read()?;
        keys_in(&txn, &slots, |_, h| out.add(h))?;
        drop(txn);
        drop(db);
        Ok(out.public())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_digest_is_the_xor_of_the_hashes_and_removal_undoes_addition() {
        let (ka, kb) = (&b"\x00\x01a\x00x"[..], &b"\x00\x02b\x00y"[..]);
        let mut d = Digest::default();
        d.add(&hash(ka));
        let mut e = Digest::default();
        e.add(&hash(kb));
        let mut both = d;
        both.merge(&e);
        let mut bytes = *blake3::hash(ka).as_bytes();
        for (x, y) in bytes.iter_mut().zip(blake3::hash(kb).as_bytes()) {
            *x ^= y;
        }
        assert_eq!(
            both.public(),
            RangeDigest {
                digest: bytes,
                versions: 2
            }
        );
        // The public merge agrees with the internal one.
        let mut public = d.public();
        public.merge(&e.public());
        assert_eq!(public, both.public());
        both.remove(&hash(ka));
        both.remove(&hash(kb));
        assert_eq!(both, Digest::default());
    }

    #[test]
    fn heads_and_slotless_keys_do_not_count() {
        let head = layout::head_key("ucxl://a:b@c:d/x");
        assert_eq!(counted_slot(&head), None);
        assert_eq!(counted_slot(b""), None);
        assert_eq!(counted_slot(b"\x07"), None);
        // A key that does not decode still counts, in the slot its first
        // two bytes name.
        assert_eq!(counted_slot(b"\x01\x02garbage"), Some(0x0102));
        let mut delta = DigestDelta::default();
        delta.inserted(&head);
        delta.removed(b"\x05");
        assert!(delta.0.is_empty());
    }

    proptest! {
        #[test]
        fn any_key_is_hashed_without_panicking(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut delta = DigestDelta::default();
            delta.inserted(&key);
            delta.removed(&key);
            let mut scanned = ScannedDigests::new();
            scanned.add(&key);
            let none = vec![Digest::default(); SLOTS];
            let n = scanned.differences(&none).count();
            prop_assert_eq!(n, usize::from(counted_slot(&key).is_some()));
        }
    }
}
