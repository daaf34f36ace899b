//! The local persistent tier of a slurp node, on redb.
//!
//! The store keeps what the node hands it, sealed envelopes (opaque bytes)
//! and the non-secret [`slurp_protocol::RecordMeta`] beside each, and never
//! sees plaintext. Its shape follows from how replicas work:
//!
//! - **Versions are append-only.** An address holds a set of versions
//!   ordered by [`slurp_protocol::VersionId`]; nothing is overwritten, and
//!   storing a version that is already there changes nothing. Replicas merge
//!   by union: list what you have ([`Store::version_ids`],
//!   [`Store::scan_slots`]) and put what the other side lacks
//!   ([`Store::put_many`]).
//! - **Partitions are ranges.** Every version key starts with its address's
//!   [`slurp_protocol::Slot`], so a partition is one range scan.
//! - **Expiry is exact.** An expired version is never returned, even before
//!   the [`Sweeper`] deletes it.
//! - **Hints travel with their versions.** A fallback replica stores a
//!   version for a peer that is down with [`Store::put_many_hinted`]; the
//!   hint is committed with the version and removed with it (by the
//!   sweeper, a purge or a collection; hinted handoff, see [`Hint`]).
//! - **Digests say where replicas differ.** The store keeps a digest per
//!   slot of the versions it holds, exact after every commit
//!   ([`Store::digest`], [`RangeDigest`]): replicas compare those before
//!   they compare versions.
//! - **Deletions are collected.** Once every replica has seen a tombstone,
//!   [`Store::collect`] removes the address's versions and leaves a marker
//!   that refuses late copies of them ([`PutOutcome::Collected`]);
//!   [`Store::purge`] drops chosen versions (a hinted copy that has reached
//!   its replica).
//! - **Writes share commits.** One writer thread commits everything queued
//!   in one durable transaction (group commit); a write returns once it is
//!   durable.
//!
//! The table layout is in [`layout`] and `docs/storage.md`.

pub mod check;
mod compress;
pub mod config;
mod digest;
pub mod error;
mod hints;
pub mod layout;
pub mod observer;
mod read;
pub mod record;
mod removal;
mod store;
mod validate;
mod workers;
mod writer;

pub use check::{CheckReport, Inconsistency};
pub use compress::DecompressError;
pub use config::{CompactionConfig, CompressionConfig, ConfigError, StoreConfig, SweepConfig};
pub use digest::RangeDigest;
pub use error::{
    CorruptValue, Error, HintTargetError, MaintenanceError, OpenError, ReadError, RecordProblem,
    WriteError,
};
pub use hints::{Hint, HintCursor, HintPage, HintTarget};
pub use observer::{
    CommitEvent, CompactionEvent, NoopObserver, ReadKind, ReadOutcome, StoreObserver, SweepEvent,
};
pub use read::{
    Child, KeyEntry, KeyPage, Latest, Links, Listing, ScanCursor, ScanPage, ScannedVersion,
    SlotScan, StoreStats, StoredRecord, Tombstone,
};
pub use record::{BackupKind, BackupMeta, Codec, CollectedMarker, TombstoneEntry};
pub use removal::{CollectOutcome, PurgeReport, SweepReport};
pub use store::{CommitFailpoint, CommitFaults, NewVersion, PutOutcome, Store, StoreBuilder};
pub use validate::{check_backup_id, check_hint_target, check_key, check_path};
pub use workers::{Compactor, StatusHandle, SweepPass, Sweeper, WorkerState, WorkerStatus};
pub use writer::CompactionReport;
