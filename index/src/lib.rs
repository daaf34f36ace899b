//! The per-node full-text index of slurp.
//!
//! A node can read the plaintext of the contexts sealed to its roles; this
//! crate indexes that plaintext so the node can answer full-text search
//! without decrypting everything per query. It is built on Tantivy and
//! adds what slurp needs on top of a search engine:
//!
//! - **Role filtering inside the query.** Every search runs as one role and
//!   only ever matches, counts, facets and ranks against documents whose
//!   reader closure contains that role ([`search`]).
//! - **Newest version wins.** Versions of a context arrive out of order from
//!   replication; indexing an older version after a newer one changes
//!   nothing, and tombstones are remembered ([`ContextIndex::upsert`],
//!   [`ContextIndex::delete`]).
//! - **No plaintext at rest.** The index lives in memory only and is rebuilt
//!   from the store at start ([`ContextIndex::rebuild`]); see
//!   `docs/index.md` for the measurements behind that choice.
//! - **Slot scopes for a cluster.** Every document carries the slot of its
//!   key; a search or a statistics request can be limited to a
//!   [`SlotScope`], so each node of a distributed search answers for the
//!   partitions assigned to it and no replica is counted twice ([`scope`]).
//! - **Ranking that can go distributed.** Statistics of a query can be
//!   exported, summed across nodes and fed back so every node ranks as one
//!   global index would ([`stats`]).
//!
//! - **Says what it cannot search.** Records the node holds but cannot open
//!   (sealed to roles it holds no key for, or corrupt) are counted, not
//!   indexed and never an error, and a search reports how many of them its
//!   role and scope cover; while a rebuild is pending, running or failed,
//!   [`ContextIndex::coverage`] and every search say the index is
//!   incomplete ([`coverage`]).
//!
//! Commits are batched by count and time; a background thread commits what
//! the batch has not. Merging runs in the background under a configurable
//! log merge policy, and [`ContextIndex::optimize`] merges everything on
//! demand. Metrics go through the [`IndexObserver`] hooks.

pub mod config;
pub mod coverage;
pub mod error;
pub mod index;
pub mod observer;
pub mod schema;
pub mod scope;
pub mod search;
pub mod stats;
mod syntax;

pub use config::{IndexConfig, MergeConfig, TextMatch};
pub use coverage::{Coverage, RebuildItem, UnopenableCounts, UnopenableEntry, UnopenableReason};
pub use error::{
    ConfigError, IndexError, MissingSide, QueryProblem, RebuildError, SearchError, SlotScopeError,
    StatisticsError,
};
pub use index::{ContextIndex, IndexStatus, KeyState, MergeReport, RebuildProgress, WriteOutcome};
pub use observer::{CommitEvent, CommitTrigger, IndexObserver, NoopObserver, SearchEvent};
pub use schema::IndexEntry;
pub use scope::SlotScope;
pub use search::{FacetCount, FacetCounts, QuerySyntax, SearchHit, SearchQuery, SearchResults};
pub use stats::{QueryStatistics, TermStatistic, TermValue};
