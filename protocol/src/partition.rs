//! Partitions: how keys are grouped for placement, transfer and repair.
//!
//! A key hashes (blake3) to a 16-bit *slot*, the first two bytes of its
//! hash. A cluster groups slots into `2^bits` partitions by taking the top
//! `bits` bits of the slot, so a partition is always a contiguous range of
//! slots. The local store prefixes every key with its slot, which makes any
//! partition, at any partition count up to 65,536, one range scan: a Merkle
//! digest, a transfer or a backup of a partition never walks the whole
//! store, and the partition count can change without rewriting keys.

use serde::{Deserialize, Serialize};

/// The 16-bit hash prefix of a key; the leading part of every stored key.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Slot(pub u16);

impl Slot {
    /// The slot of a storage key (`UcxlAddress::key`).
    pub fn of(key: &str) -> Slot {
        let h = blake3::hash(key.as_bytes());
        let b = h.as_bytes();
        Slot(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// A partition number under some [`PartitionScheme`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Partition(pub u16);

/// How many partitions a cluster has: `2^bits`, with `bits` in `0..=16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionScheme {
    bits: u8,
}

/// The default partition count is 2^10 = 1024.
pub const DEFAULT_PARTITION_BITS: u8 = 10;

impl Default for PartitionScheme {
    fn default() -> Self {
        PartitionScheme {
            bits: DEFAULT_PARTITION_BITS,
        }
    }
}

/// A partition count that is not a power of two between 1 and 65,536.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partition bits must be within 0..=16, got {0}")]
pub struct PartitionSchemeError(pub u8);

impl PartitionScheme {
    pub fn new(bits: u8) -> Result<Self, PartitionSchemeError> {
        if bits > 16 {
            return Err(PartitionSchemeError(bits));
        }
        Ok(PartitionScheme { bits })
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Number of partitions.
    pub fn count(&self) -> u32 {
        1u32 << self.bits
    }

    /// The partition a slot belongs to.
    pub fn partition_of_slot(&self, slot: Slot) -> Partition {
        if self.bits == 0 {
            return Partition(0);
        }
        Partition(slot.0 >> (16 - self.bits))
    }

    /// The partition of a storage key.
    pub fn partition_of(&self, key: &str) -> Partition {
        self.partition_of_slot(Slot::of(key))
    }

    /// The inclusive slot range of a partition.
    pub fn slots(&self, p: Partition) -> std::ops::RangeInclusive<u16> {
        let width = 1u32 << (16 - self.bits);
        let start = u32::from(p.0) * width;
        (start as u16)..=((start + width - 1) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn slot_lies_in_its_partitions_range(key in ".{0,64}", bits in 0u8..=16) {
            let scheme = PartitionScheme::new(bits).unwrap();
            let slot = Slot::of(&key);
            let p = scheme.partition_of_slot(slot);
            prop_assert!(u32::from(p.0) < scheme.count());
            prop_assert!(scheme.slots(p).contains(&slot.0));
        }
    }

    #[test]
    fn bits_bound() {
        assert!(PartitionScheme::new(17).is_err());
        let s = PartitionScheme::new(16).unwrap();
        assert_eq!(s.count(), 65536);
        assert_eq!(s.slots(Partition(5)), 5..=5);
        let s = PartitionScheme::new(0).unwrap();
        assert_eq!(s.slots(Partition(0)), 0..=u16::MAX);
    }

    #[test]
    fn keys_spread_over_partitions() {
        let s = PartitionScheme::default();
        let mut counts = vec![0u32; s.count() as usize];
        for i in 0..100_000 {
            counts[s.partition_of(&format!("ucxl://a:b@c:d/file{i}")).0 as usize] += 1;
        }
        let mean = 100_000.0 / s.count() as f64;
        let max = *counts.iter().max().unwrap() as f64;
        assert!(max < mean * 1.6, "max {max} mean {mean}");
    }
}
