//! Every limit and interval of the store, in one place.
//!
//! The node reads this from its configuration file (`[store]`); every
//! field has a default that works on a small machine, and
//! [`StoreConfig::validate`] rejects combinations that would make the store
//! misbehave (a zero batch, a value limit the decoder would refuse) before
//! anything is opened.

use serde::{Deserialize, Serialize};

/// Largest value limit accepted: the framed decoder refuses inputs over
/// [`slurp_protocol::wire::DEFAULT_MAX_DECODE`], so a larger limit would let
/// the store write values it could not read back.
pub const MAX_VALUE_LIMIT: usize = slurp_protocol::wire::DEFAULT_MAX_DECODE;

/// Configuration of a [`crate::Store`] and its background workers.
///
/// Every field's doc comment is also its description in the node's
/// commented configuration (`slurp node config`), so each states its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Most write requests committed in one transaction by the writer
    /// thread (group commit), a count; also the most items of an atomic
    /// batch.
    pub max_batch: usize,
    /// Write requests that may wait for the writer thread, a count; callers
    /// wait (async callers yield) when the queue is full.
    pub queue_capacity: usize,
    /// Longest the writer thread waits for more requests before starting a
    /// transaction, in microseconds, when the previous batch showed
    /// concurrent writers (never for a lone writer; never longer than half
    /// the previous commit). 0 disables waiting.
    pub group_commit_wait_us: u64,
    /// Largest stored value (sealed envelope plus its metadata, encoded)
    /// in bytes, 1024 to 16 MiB; larger writes are refused before they are
    /// queued.
    pub max_value_bytes: usize,
    /// Most decision links (`influences` plus `influenced_by`) and most
    /// readers one stored version may carry, a count.
    pub max_links: usize,
    /// Page cache of the database file (redb), in bytes.
    pub cache_bytes: usize,
    /// Have every commit also save the allocator state, so that reopening
    /// after a crash is immediate instead of a walk over the whole file
    /// (true or false). Commits become slower; see `docs/storage.md`.
    pub quick_repair: bool,
    /// When stored envelopes are compressed with zstd.
    pub compression: CompressionConfig,
    /// The TTL sweeper (the node's `sweeper` worker): how often it runs and
    /// how much it deletes at a time.
    pub sweep: SweepConfig,
    /// Compaction of the database file (the node's `compactor` worker).
    pub compaction: CompactionConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_batch: 256,
            queue_capacity: 4096,
            group_commit_wait_us: 300,
            max_value_bytes: 4 * 1024 * 1024,
            max_links: 256,
            cache_bytes: 64 * 1024 * 1024,
            quick_repair: false,
            compression: CompressionConfig::default(),
            sweep: SweepConfig::default(),
            compaction: CompactionConfig::default(),
        }
    }
}

/// When envelopes are compressed.
///
/// Sealed envelopes are mostly ciphertext, which does not compress; the
/// store tries zstd only on envelopes of at least `min_bytes` and keeps the
/// compressed form only when it saves at least `min_saving_bytes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// Try compressing envelopes at all (true or false).
    pub enabled: bool,
    /// Envelopes shorter than this, in bytes, are stored as they are,
    /// without trying.
    pub min_bytes: usize,
    /// zstd level, 1 (fastest) to 19.
    pub level: i32,
    /// The compressed form is kept only if it is at least this many bytes
    /// shorter than the envelope.
    pub min_saving_bytes: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            min_bytes: 4096,
            level: 1,
            min_saving_bytes: 64,
        }
    }
}

/// The TTL sweeper: how often it runs and how much it deletes at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// Time between two passes of the sweeper, which deletes expired
    /// versions, in milliseconds (at least 1).
    pub interval_ms: u64,
    /// Expired versions deleted per transaction, a count.
    pub batch: usize,
    /// Most transactions in one pass, a count; the rest waits for the next
    /// pass.
    pub max_batches_per_pass: u32,
    /// Pause between two transactions of one pass, in milliseconds, so a
    /// large backlog does not starve foreground writes.
    pub pause_ms: u64,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            interval_ms: 60_000,
            batch: 512,
            max_batches_per_pass: 64,
            pause_ms: 5,
        }
    }
}

/// Background compaction of the database file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// Time between two checks of the compactor, which compacts the
    /// database file when enough of it is free, in milliseconds (at least
    /// 1).
    pub interval_ms: u64,
    /// A check compacts only when at least this share of the file is free
    /// space, a ratio within 0..=1, and ...
    pub min_free_ratio: f64,
    /// ... at least this many bytes would be reclaimed.
    pub min_free_bytes: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            interval_ms: 6 * 60 * 60 * 1000,
            min_free_ratio: 0.3,
            min_free_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A configuration value the store cannot work with. Names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid storage configuration: {key} = {value}: {reason}")]
pub struct ConfigError {
    /// The configuration key, e.g. `sweep.batch`.
    pub key: &'static str,
    /// The rejected value, as written.
    pub value: String,
    /// What an acceptable value is.
    pub reason: &'static str,
}

impl StoreConfig {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, value: impl ToString, reason: &'static str) -> ConfigError {
            ConfigError {
                key,
                value: value.to_string(),
                reason,
            }
        }
        if self.max_batch == 0 {
            return Err(bad("max_batch", self.max_batch, "must be at least 1"));
        }
        if self.queue_capacity == 0 {
            return Err(bad(
                "queue_capacity",
                self.queue_capacity,
                "must be at least 1",
            ));
        }
        if self.max_value_bytes < 1024 || self.max_value_bytes > MAX_VALUE_LIMIT {
            return Err(bad(
                "max_value_bytes",
                self.max_value_bytes,
                "must be within 1024..=16777216",
            ));
        }
        if self.max_links == 0 {
            return Err(bad("max_links", self.max_links, "must be at least 1"));
        }
        if !(1..=19).contains(&self.compression.level) {
            return Err(bad(
                "compression.level",
                self.compression.level,
                "must be within 1..=19",
            ));
        }
        if self.sweep.batch == 0 {
            return Err(bad("sweep.batch", self.sweep.batch, "must be at least 1"));
        }
        if self.sweep.max_batches_per_pass == 0 {
            return Err(bad(
                "sweep.max_batches_per_pass",
                self.sweep.max_batches_per_pass,
                "must be at least 1",
            ));
        }
        if self.sweep.interval_ms == 0 {
            return Err(bad(
                "sweep.interval_ms",
                self.sweep.interval_ms,
                "must be at least 1",
            ));
        }
        if self.compaction.interval_ms == 0 {
            return Err(bad(
                "compaction.interval_ms",
                self.compaction.interval_ms,
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.compaction.min_free_ratio) {
            return Err(bad(
                "compaction.min_free_ratio",
                self.compaction.min_free_ratio,
                "must be within 0..=1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_partial_toml_fills_the_rest() {
        assert_eq!(StoreConfig::default().validate(), Ok(()));
        let c: StoreConfig = toml::from_str("max_batch = 8\n[sweep]\nbatch = 3\n").unwrap();
        assert_eq!(c.max_batch, 8);
        assert_eq!(c.sweep.batch, 3);
        assert_eq!(c.sweep.interval_ms, SweepConfig::default().interval_ms);
        assert_eq!(c.compression, CompressionConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        assert!(toml::from_str::<StoreConfig>("max_btach = 8").is_err());
        let c = StoreConfig {
            max_value_bytes: MAX_VALUE_LIMIT + 1,
            ..StoreConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "max_value_bytes");
        let mut c = StoreConfig::default();
        c.compression.level = 0;
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "compression.level");
        assert!(e.to_string().contains("compression.level = 0"), "{e}");
        let mut c = StoreConfig::default();
        c.compaction.min_free_ratio = f64::NAN;
        assert_eq!(c.validate().unwrap_err().key, "compaction.min_free_ratio");
    }
}
