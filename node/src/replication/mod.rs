//! Replication, in one place: everything that keeps the copies of a
//! partition on its replicas alike.
//!
//! The write path runs downward: the API calls the store front
//! ([`crate::store::ContextStore`]), which seals a version once and hands
//! it here; the [`coordinator`] sends it to the partition's replicas and
//! counts acknowledgements; each replica's [`server`] checks and applies
//! it to its local engine. What a write or a read could not finish is
//! finished here in the background: read repair (in the coordinator),
//! hinted handoff ([`handoff`]: a fallback keeps a version for a down
//! replica and hands it back, then drops its copy), anti-entropy
//! ([`anti_entropy`]: replicas compare per-partition digests and exchange
//! the versions either side lacks, without any client read) and the
//! collection of deleted addresses ([`gc`]: a tombstone goes only once
//! every replica holds it).
//!
//! Versions are append-only and merge by union, so every one of these is
//! "send the versions the other side lacks"; none of them opens an
//! envelope except to index what the receiving node stores.

pub mod coordinator;
pub mod handoff;
pub mod server;

pub use coordinator::QuorumOpts;
