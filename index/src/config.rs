//! Index configuration: every limit, budget and policy in one place.
//!
//! The index runs inside a node that shares its cores and memory with the
//! store, the network and the API, so nothing here is hidden: writer
//! threads and heap, the commit batch, the merge policy, and the bounds on
//! what one search may ask for. Every key has a default that works for a
//! node with a few hundred thousand contexts; [`IndexConfig::validate`]
//! refuses values the engine would reject (or panic on) later.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Smallest heap the engine accepts per writer thread (15 MB).
pub const MIN_HEAP_PER_THREAD: usize = 15_000_000;
/// Largest heap the engine accepts per writer thread (just under 4 GiB).
pub const MAX_HEAP_PER_THREAD: usize = u32::MAX as usize - 1_000_000;
/// Most writer threads the engine runs.
pub const MAX_WRITER_THREADS: usize = 8;

/// How free text combines its words when the query does not say.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TextMatch {
    /// Every word must match (`auth token` means `auth AND token`).
    #[default]
    AllWords,
    /// Any word may match; documents with more matches rank higher.
    AnyWord,
}

/// The segment merge policy (a log-structured policy: segments of similar
/// size are merged together in the background).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MergeConfig {
    /// Fewest segments of one size level merged at once, a count (at
    /// least 2).
    pub min_num_segments: usize,
    /// Segments with more documents than this count are not merged further
    /// by the background policy (a full merge, `optimize`, still merges
    /// them).
    pub max_docs_before_merge: usize,
    /// Segments smaller than this many documents all count as one level.
    pub min_layer_size: u32,
    /// Ratio between the sizes of two consecutive levels, as a log (a
    /// number above 0).
    pub level_log_size: f64,
    /// A segment whose share of deleted documents exceeds this ratio is
    /// merged even if alone on its level, which reclaims the memory of
    /// replaced versions. Within `(0, 1]`; `1` disables it.
    pub del_docs_ratio_before_merge: f32,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            min_num_segments: 8,
            max_docs_before_merge: 10_000_000,
            min_layer_size: 10_000,
            level_log_size: 0.75,
            // Contexts are rewritten often (every version replaces the
            // previous one), so deleted documents pile up; merging a segment
            // once 30% of it is dead keeps memory close to the live set.
            del_docs_ratio_before_merge: 0.3,
        }
    }
}

/// Configuration of a [`crate::ContextIndex`].
///
/// Every field's doc comment is also its description in the node's
/// commented configuration (`slurp node config`), so each states its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Indexing threads of the steady-state writer, a count (1 to 8).
    pub writer_threads: usize,
    /// Heap of the steady-state writer in bytes, shared by its threads (at
    /// least 15 MB per thread).
    pub writer_heap_bytes: usize,
    /// Indexing threads of a rebuild (at start), a count (1 to 8).
    pub rebuild_threads: usize,
    /// Heap of the rebuild writer in bytes, shared by its threads. Larger
    /// means fewer, larger segments and a faster rebuild.
    pub rebuild_heap_bytes: usize,
    /// Threads that merge segments in the background, a count (1 to 16).
    pub merge_threads: usize,
    /// Commit after this many uncommitted writes (upserts and deletes), a
    /// count.
    pub commit_every_ops: usize,
    /// Commit this long after the oldest uncommitted write, in
    /// milliseconds, even if the batch is not full.
    pub commit_interval_ms: u64,
    /// The background merge policy.
    pub merge: MergeConfig,
    /// Largest `limit` (results per page) one search may ask for, a count.
    pub max_limit: usize,
    /// Largest `offset` one search may ask for, a count of results. Paging
    /// deep costs `offset + limit` work per query.
    pub max_offset: usize,
    /// Longest query text, in bytes.
    pub max_query_len: usize,
    /// Deepest nesting of parentheses in query text, a count of levels.
    pub max_query_depth: usize,
    /// Most values in one filter list (tags, technologies), a count.
    pub max_filter_values: usize,
    /// Longest snippet, in characters of the source text.
    pub snippet_max_chars: usize,
    /// Most values returned per facet (tags, technologies), highest counts
    /// first; a count.
    pub max_facet_values: usize,
    /// How the words of free text combine when the query does not say.
    pub text_match: TextMatch,
    /// A rebuild reports progress every this many entries, a count.
    pub rebuild_progress_every: u64,
    /// Compressed document-store blocks cached per segment for reading
    /// hits, a count of blocks.
    pub doc_store_cache_blocks: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            writer_threads: 1,
            writer_heap_bytes: 50_000_000,
            rebuild_threads: 2,
            rebuild_heap_bytes: 256_000_000,
            merge_threads: 1,
            commit_every_ops: 1_000,
            commit_interval_ms: 1_000,
            merge: MergeConfig::default(),
            max_limit: 100,
            max_offset: 10_000,
            max_query_len: 4_096,
            max_query_depth: 16,
            max_filter_values: 32,
            snippet_max_chars: 200,
            max_facet_values: 50,
            text_match: TextMatch::AllWords,
            rebuild_progress_every: 10_000,
            doc_store_cache_blocks: 100,
        }
    }
}

fn check(
    ok: bool,
    key: &'static str,
    value: impl ToString,
    expected: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::out_of_range(key, value, expected))
    }
}

fn check_writer(
    threads_key: &'static str,
    threads: usize,
    heap_key: &'static str,
    heap: usize,
) -> Result<(), ConfigError> {
    check(
        (1..=MAX_WRITER_THREADS).contains(&threads),
        threads_key,
        threads,
        &format!("1..={MAX_WRITER_THREADS}"),
    )?;
    let per_thread = heap / threads;
    check(
        (MIN_HEAP_PER_THREAD..MAX_HEAP_PER_THREAD).contains(&per_thread),
        heap_key,
        heap,
        &format!(
            "{MIN_HEAP_PER_THREAD}..{MAX_HEAP_PER_THREAD} bytes per thread ({threads} threads)"
        ),
    )
}

impl IndexConfig {
    /// Checks every key; the first value out of range is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_writer(
            "writer_threads",
            self.writer_threads,
            "writer_heap_bytes",
            self.writer_heap_bytes,
        )?;
        check_writer(
            "rebuild_threads",
            self.rebuild_threads,
            "rebuild_heap_bytes",
            self.rebuild_heap_bytes,
        )?;
        check(
            (1..=16).contains(&self.merge_threads),
            "merge_threads",
            self.merge_threads,
            "1..=16",
        )?;
        check(
            self.commit_every_ops >= 1,
            "commit_every_ops",
            self.commit_every_ops,
            "at least 1",
        )?;
        check(
            (1..=3_600_000).contains(&self.commit_interval_ms),
            "commit_interval_ms",
            self.commit_interval_ms,
            "1..=3600000 (one hour)",
        )?;
        let m = &self.merge;
        check(
            m.min_num_segments >= 2,
            "merge.min_num_segments",
            m.min_num_segments,
            "at least 2",
        )?;
        check(
            m.max_docs_before_merge >= 1,
            "merge.max_docs_before_merge",
            m.max_docs_before_merge,
            "at least 1",
        )?;
        check(
            m.level_log_size.is_finite() && m.level_log_size > 0.0,
            "merge.level_log_size",
            m.level_log_size,
            "a finite number above 0",
        )?;
        check(
            m.del_docs_ratio_before_merge > 0.0 && m.del_docs_ratio_before_merge <= 1.0,
            "merge.del_docs_ratio_before_merge",
            m.del_docs_ratio_before_merge,
            "within (0, 1]",
        )?;
        check(
            (1..=10_000).contains(&self.max_limit),
            "max_limit",
            self.max_limit,
            "1..=10000",
        )?;
        check(
            self.max_offset <= 1_000_000,
            "max_offset",
            self.max_offset,
            "0..=1000000",
        )?;
        check(
            (1..=1_048_576).contains(&self.max_query_len),
            "max_query_len",
            self.max_query_len,
            "1..=1048576",
        )?;
        check(
            (1..=256).contains(&self.max_query_depth),
            "max_query_depth",
            self.max_query_depth,
            "1..=256",
        )?;
        check(
            (1..=1_024).contains(&self.max_filter_values),
            "max_filter_values",
            self.max_filter_values,
            "1..=1024",
        )?;
        check(
            (16..=10_000).contains(&self.snippet_max_chars),
            "snippet_max_chars",
            self.snippet_max_chars,
            "16..=10000",
        )?;
        check(
            (1..=10_000).contains(&self.max_facet_values),
            "max_facet_values",
            self.max_facet_values,
            "1..=10000",
        )?;
        check(
            self.rebuild_progress_every >= 1,
            "rebuild_progress_every",
            self.rebuild_progress_every,
            "at least 1",
        )?;
        check(
            (1..=100_000).contains(&self.doc_store_cache_blocks),
            "doc_store_cache_blocks",
            self.doc_store_cache_blocks,
            "1..=100000",
        )
    }

    /// [`IndexConfig::commit_interval_ms`] as a duration.
    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    pub(crate) fn merge_policy(&self) -> tantivy::indexer::LogMergePolicy {
        let mut p = tantivy::indexer::LogMergePolicy::default();
        p.set_min_num_segments(self.merge.min_num_segments);
        p.set_max_docs_before_merge(self.merge.max_docs_before_merge);
        p.set_min_layer_size(self.merge.min_layer_size);
        p.set_level_log_size(self.merge.level_log_size);
        p.set_del_docs_ratio_before_merge(self.merge.del_docs_ratio_before_merge);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        IndexConfig::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        type Edit = Box<dyn Fn(&mut IndexConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("writer_threads", Box::new(|c| c.writer_threads = 0)),
            (
                "writer_heap_bytes",
                Box::new(|c| c.writer_heap_bytes = 1_000),
            ),
            (
                "rebuild_heap_bytes",
                Box::new(|c| {
                    c.rebuild_threads = 4;
                    c.rebuild_heap_bytes = 40_000_000;
                }),
            ),
            ("commit_every_ops", Box::new(|c| c.commit_every_ops = 0)),
            ("commit_interval_ms", Box::new(|c| c.commit_interval_ms = 0)),
            (
                "merge.del_docs_ratio_before_merge",
                Box::new(|c| c.merge.del_docs_ratio_before_merge = 0.0),
            ),
            (
                "merge.level_log_size",
                Box::new(|c| c.merge.level_log_size = f64::NAN),
            ),
            ("max_limit", Box::new(|c| c.max_limit = 0)),
        ];
        for (key, set) in cases {
            let mut c = IndexConfig::default();
            set(&mut c);
            match c.validate() {
                Err(ConfigError::OutOfRange { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn partial_config_files_fill_defaults() {
        let c: IndexConfig =
            serde_json::from_str(r#"{"commit_every_ops": 5, "merge": {"min_num_segments": 3}}"#)
                .unwrap();
        assert_eq!(c.commit_every_ops, 5);
        assert_eq!(c.merge.min_num_segments, 3);
        assert_eq!(c.max_limit, IndexConfig::default().max_limit);
        assert!(serde_json::from_str::<IndexConfig>(r#"{"no_such_key": 1}"#).is_err());
    }
}
