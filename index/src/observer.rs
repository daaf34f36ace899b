//! Hooks for metrics: what the index did and how long it took.
//!
//! The node turns these into its metrics (it owns the metrics registry; this
//! crate does not depend on one). Events carry counts and durations only,
//! never query text or context content, so forwarding them to logs or
//! metrics cannot leak plaintext.

use std::time::Duration;

use slurp_protocol::RoleName;

/// One finished search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchEvent {
    /// The role the search ran as.
    pub role: RoleName,
    /// Wall time from the call to the results (parse, search, snippets).
    pub took: Duration,
    /// Documents matching the query and filters.
    pub total_hits: u64,
    /// Hits returned (at most the limit).
    pub returned: usize,
    /// Whether globally supplied statistics were used for ranking.
    pub global_statistics: bool,
}

/// One commit (explicit, batch-full or timed).
#[derive(Debug, Clone, PartialEq)]
pub struct CommitEvent {
    /// Writes (upserts and deletes) the commit made visible.
    pub ops: usize,
    /// Time to commit and reload the searcher.
    pub took: Duration,
    /// What triggered it.
    pub trigger: CommitTrigger,
}

/// What triggered a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitTrigger {
    /// [`crate::ContextIndex::commit`] or a maintenance call.
    Explicit,
    /// The batch reached `commit_every_ops`.
    BatchFull,
    /// `commit_interval_ms` passed since the oldest uncommitted write.
    Interval,
}

/// Observes the index. Every method has an empty default; implement what
/// you record. Methods are called on the thread doing the work and must
/// return quickly.
pub trait IndexObserver: Send + Sync {
    fn on_search(&self, _event: &SearchEvent) {}
    fn on_commit(&self, _event: &CommitEvent) {}
    fn on_merge(&self, _report: &crate::MergeReport) {}
    fn on_rebuild_progress(&self, _progress: &crate::RebuildProgress) {}
    /// The records marked unopenable changed (a mark, a newer version
    /// indexed or deleted, a rebuild swapped in): the counts now.
    fn on_unopenable(&self, _counts: &crate::UnopenableCounts) {}
    /// Coverage changed: a rebuild was announced, started, finished or
    /// failed.
    fn on_coverage(&self, _coverage: &crate::Coverage) {}
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl IndexObserver for NoopObserver {}
