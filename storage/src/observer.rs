//! Metrics hooks: what the store reports as it works.
//!
//! The store does not depend on a metrics library; the node implements
//! [`StoreObserver`] (with Prometheus) and passes it in. Every method has a
//! no-op default, so an observer implements only what it records. Methods
//! are called on the thread doing the work (the writer thread for commits,
//! sweeps and compactions; the caller's thread for reads) and must return
//! quickly.

use std::time::Duration;

/// One commit of the writer thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEvent {
    /// Requests in the transaction (a request may carry several versions).
    pub requests: usize,
    /// Versions newly stored.
    pub inserted: usize,
    /// Versions that were already present.
    pub duplicates: usize,
    /// Items refused individually (their requests got an error, the rest
    /// of the batch was committed).
    pub rejected: usize,
    /// Encoded bytes of the values written.
    pub bytes: u64,
    /// From the start of the transaction to the end of the durable commit.
    pub duration: Duration,
    /// Whether the commit succeeded.
    pub ok: bool,
}

/// Which read an outcome is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// A specific version.
    Version,
    /// The newest version of an address.
    Latest,
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    Found,
    /// The address's newest live version is a tombstone.
    Deleted,
    /// The version exists but has expired (and is not returned).
    Expired,
    Miss,
    Error,
}

/// One pass of the TTL sweeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepEvent {
    pub removed: u64,
    pub transactions: u32,
    pub errors: u64,
    pub duration: Duration,
}

/// One compaction attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionEvent {
    /// Whether the file was compacted (false: not worth it, or failed).
    pub compacted: bool,
    pub file_bytes_before: u64,
    pub file_bytes_after: u64,
    /// How long reads and writes were held off.
    pub duration: Duration,
    pub ok: bool,
}

/// Receives the store's measurements. All methods default to doing nothing.
pub trait StoreObserver: Send + Sync + 'static {
    /// After every commit (or failed commit) of the writer thread.
    fn on_commit(&self, _event: &CommitEvent) {}
    /// After every point read (`get`, `latest`).
    fn on_read(&self, _kind: ReadKind, _outcome: ReadOutcome, _duration: Duration) {}
    /// After every sweeper pass.
    fn on_sweep(&self, _event: &SweepEvent) {}
    /// After every compaction attempt.
    fn on_compaction(&self, _event: &CompactionEvent) {}
    /// Depth of the write queue when the writer thread picks up a batch.
    fn on_queue_depth(&self, _depth: usize) {}
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl StoreObserver for NoopObserver {}
