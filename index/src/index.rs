//! The index handle: writes, commits, merges, rebuilds and status.
//!
//! [`ContextIndex`] is shared by the node's write path, its search API and
//! its maintenance worker, so every method takes `&self`. Writes go through
//! one mutex that holds the engine's writer together with the map of the
//! newest version indexed per key; holding both under one lock is what makes
//! "an older version never replaces a newer one" hold when replication
//! delivers versions out of order. Searches never take that lock: they
//! clone the current engine (an `Arc`) and search its last committed state.
//!
//! The index lives in memory (see `docs/index.md` for the measurements
//! behind that choice): nothing of it is ever written to disk, and the node
//! rebuilds it from the store at start with [`ContextIndex::rebuild`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tantivy::indexer::IndexWriterOptions;
use tantivy::query::QueryParser;
use tantivy::schema::Schema;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument};

use slurp_protocol::VersionId;

use crate::config::{IndexConfig, TextMatch};
use crate::coverage::{Coverage, RebuildItem, UnopenableCounts, UnopenableEntry, UnopenableSet};
use crate::error::{IndexError, RebuildError};
use crate::observer::{CommitEvent, CommitTrigger, IndexObserver, NoopObserver};
use crate::schema::{Fields, IndexEntry, build_schema, register_analyzers};
use crate::stats::StatsCache;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write changed the index (visible after the next commit).
    Applied,
    /// This exact version is already the one indexed (or deleted); nothing
    /// changed.
    AlreadyApplied,
    /// A newer version of the key is already indexed or deleted; the write
    /// was ignored.
    Superseded {
        /// The newer version that stays.
        current: VersionId,
    },
}

/// The newest version the index has seen for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub version: VersionId,
    /// `false` when that version is a tombstone, or a version that could
    /// not be opened ([`ContextIndex::mark_unopenable`]): either way no
    /// document of the key is indexed.
    pub live: bool,
}

/// Outcome of [`ContextIndex::optimize`].
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    pub segments_before: usize,
    pub segments_after: usize,
    /// Live documents after the merge.
    pub docs: u64,
    /// Deleted documents reclaimed by the merge.
    pub deleted_docs_reclaimed: u64,
    pub took: Duration,
    pub finished_at: SystemTime,
}

/// Progress of a rebuild, reported while it runs and returned at the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RebuildProgress {
    /// Entries read from the source so far.
    pub read: u64,
    /// Entries added to the new index.
    pub indexed: u64,
    /// Entries skipped because the same or a newer version of the key came
    /// earlier in the feed.
    pub superseded: u64,
    /// Entries refused as invalid (see [`IndexError::InvalidEntry`]); each
    /// is logged with its key.
    pub rejected: u64,
    /// Records the feed could not open ([`RebuildItem::Unopenable`]) that
    /// the new index counts, by reason: not indexed, not an error.
    pub unopenable: UnopenableCounts,
    pub elapsed: Duration,
    /// Whether the new index is committed and live.
    pub finished: bool,
}

/// A snapshot of the index's state for status pages and maintenance.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStatus {
    /// Live documents in the committed state.
    pub docs: u64,
    /// Deleted documents not yet reclaimed by a merge.
    pub deleted_docs: u64,
    /// Searchable segments.
    pub segments: usize,
    /// Bytes of index data held in memory (all segments).
    pub index_bytes: u64,
    /// Writes not yet committed (not yet visible to search).
    pub pending_ops: usize,
    /// Keys whose newest version is live.
    pub live_keys: usize,
    /// Keys whose newest version is a tombstone (remembered so an older
    /// version arriving late does not resurrect them).
    pub tombstones: usize,
    pub last_commit: Option<SystemTime>,
    pub last_merge: Option<MergeReport>,
    /// Set while a rebuild runs.
    pub rebuild: Option<RebuildProgress>,
    /// Whether the index holds everything its source has (a rebuild
    /// expected, running or failed means it does not).
    pub coverage: Coverage,
    /// Records the source holds that could not be opened, by reason.
    pub unopenable: UnopenableCounts,
}

/// One generation of the engine: an index, its reader and query parser.
/// A rebuild makes a new one and swaps it in.
pub(crate) struct Engine {
    /// Distinguishes engines in caches (reader generations restart at 0).
    pub id: u64,
    pub index: Index,
    pub reader: IndexReader,
    pub parser: QueryParser,
}

struct WriteState {
    writer: IndexWriter<TantivyDocument>,
    versions: HashMap<String, KeyState>,
    pending: usize,
    pending_since: Option<Instant>,
}

pub(crate) struct Shared {
    pub config: IndexConfig,
    pub schema: Schema,
    pub fields: Fields,
    engine: RwLock<Arc<Engine>>,
    write: Mutex<WriteState>,
    next_engine_id: AtomicU64,
    pub stats_cache: StatsCache,
    pub observer: Arc<dyn IndexObserver>,
    last_commit: Mutex<Option<SystemTime>>,
    last_merge: Mutex<Option<MergeReport>>,
    rebuilding: AtomicBool,
    rebuild_progress: Mutex<RebuildProgress>,
    /// Entries read by the running rebuild (updated per entry).
    rebuild_read: AtomicU64,
    /// `Complete`, `Failed`, or `Rebuilding` (whose `read` is
    /// `rebuild_read`).
    coverage: Mutex<Coverage>,
    /// Records marked unopenable; changed only under `write` (lock
    /// `write` first), read without it.
    unopenable: Mutex<UnopenableSet>,
    /// Pending writes, live keys and tombstones when the running rebuild
    /// took the write lock: the figures `status()` reports meanwhile, as
    /// writes wait for the rebuild.
    counts_before_rebuild: Mutex<(usize, usize, usize)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The per-node full-text index of contexts.
///
/// Cheap to share behind an `Arc`; all methods take `&self`. Dropping it
/// stops the background committer; uncommitted writes are discarded (use
/// [`ContextIndex::close`] to commit them first).
pub struct ContextIndex {
    // Declared first so it is dropped (and its thread joined) before the
    // shared state.
    committer: Option<Committer>,
    pub(crate) shared: Arc<Shared>,
}

struct Committer {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for ContextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextIndex")
            .field("engine", &self.shared.engine().id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn new_engine(&self) -> Result<Engine, IndexError> {
        let id = self.next_engine_id.fetch_add(1, Ordering::Relaxed);
        make_engine(id, &self.schema, &self.fields, &self.config)
    }

    fn commit_locked(&self, w: &mut WriteState, trigger: CommitTrigger) -> Result<(), IndexError> {
        let start = Instant::now();
        let ops = w.pending;
        w.writer.commit()?;
        // The reader also reloads by itself when the engine announces a new
        // commit, but not synchronously; reloading here makes a commit
        // visible to every search that starts after this call returns.
        self.engine().reader.reload()?;
        w.pending = 0;
        w.pending_since = None;
        *lock(&self.last_commit) = Some(SystemTime::now());
        self.observer.on_commit(&CommitEvent {
            ops,
            took: start.elapsed(),
            trigger,
        });
        Ok(())
    }

    fn note_write(&self, w: &mut WriteState) -> Result<(), IndexError> {
        w.pending += 1;
        if w.pending_since.is_none() {
            w.pending_since = Some(Instant::now());
        }
        if w.pending >= self.config.commit_every_ops {
            self.commit_locked(w, CommitTrigger::BatchFull)?;
        }
        Ok(())
    }

    /// Pending writes, live keys and tombstones (tombstones exclude keys
    /// marked unopenable). Call with `write` held.
    fn counts(&self, w: &WriteState) -> (usize, usize, usize) {
        let live = w.versions.values().filter(|s| s.live).count();
        let unopenable = lock(&self.unopenable).len();
        (
            w.pending,
            live,
            (w.versions.len() - live).saturating_sub(unopenable),
        )
    }

    /// Forgets `key` as unopenable (a version of it was indexed or
    /// deleted). Call with `write` held.
    fn clear_unopenable(&self, key: &str) {
        let mut u = lock(&self.unopenable);
        if u.remove(key) {
            self.observer.on_unopenable(&u.counts());
        }
    }

    fn set_coverage(&self, c: Coverage) {
        let mut cur = lock(&self.coverage);
        *cur = c;
        self.observer.on_coverage(&cur);
    }

    pub(crate) fn coverage(&self) -> Coverage {
        match &*lock(&self.coverage) {
            Coverage::Rebuilding { expected, .. } => Coverage::Rebuilding {
                read: self.rebuild_read.load(Ordering::Relaxed),
                expected: *expected,
            },
            c => c.clone(),
        }
    }

    pub(crate) fn unopenable_in(
        &self,
        role: &slurp_protocol::RoleName,
        scope: &crate::SlotScope,
    ) -> u64 {
        lock(&self.unopenable).in_scope(role, scope)
    }

    fn commit_if_due(&self) {
        let mut w = lock(&self.write);
        let due = w
            .pending_since
            .is_some_and(|t| t.elapsed() >= self.config.commit_interval());
        if due
            && w.pending > 0
            && let Err(e) = self.commit_locked(&mut w, CommitTrigger::Interval)
        {
            tracing::warn!(error = %e, "timed index commit failed; will retry");
        }
    }
}

fn make_engine(
    id: u64,
    schema: &Schema,
    fields: &Fields,
    config: &IndexConfig,
) -> Result<Engine, IndexError> {
    let index = Index::create_in_ram(schema.clone());
    register_analyzers(&index);
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::OnCommitWithDelay)
        .doc_store_cache_num_blocks(config.doc_store_cache_blocks)
        .try_into()?;
    let mut parser = QueryParser::for_index(&index, fields.text_fields().to_vec());
    if config.text_match == TextMatch::AllWords {
        parser.set_conjunction_by_default();
    }
    Ok(Engine {
        id,
        index,
        reader,
        parser,
    })
}

fn make_writer(
    index: &Index,
    threads: usize,
    heap_bytes: usize,
    config: &IndexConfig,
) -> Result<IndexWriter<TantivyDocument>, IndexError> {
    let options = IndexWriterOptions::builder()
        .num_worker_threads(threads)
        .memory_budget_per_thread(heap_bytes / threads)
        .num_merge_threads(config.merge_threads)
        .build();
    let writer = index.writer_with_options(options)?;
    writer.set_merge_policy(Box::new(config.merge_policy()));
    Ok(writer)
}

impl ContextIndex {
    /// Opens an empty in-memory index.
    pub fn open_in_memory(config: IndexConfig) -> Result<Self, IndexError> {
        Self::open_in_memory_with_observer(config, Arc::new(NoopObserver))
    }

    /// Opens an empty in-memory index reporting to `observer`.
    pub fn open_in_memory_with_observer(
        config: IndexConfig,
        observer: Arc<dyn IndexObserver>,
    ) -> Result<Self, IndexError> {
        config.validate()?;
        let (schema, fields) = build_schema();
        let engine = make_engine(0, &schema, &fields, &config)?;
        let writer = make_writer(
            &engine.index,
            config.writer_threads,
            config.writer_heap_bytes,
            &config,
        )?;
        let interval = config.commit_interval();
        let shared = Arc::new(Shared {
            config,
            schema,
            fields,
            engine: RwLock::new(Arc::new(engine)),
            write: Mutex::new(WriteState {
                writer,
                versions: HashMap::new(),
                pending: 0,
                pending_since: None,
            }),
            next_engine_id: AtomicU64::new(1),
            stats_cache: StatsCache::default(),
            observer,
            last_commit: Mutex::new(None),
            last_merge: Mutex::new(None),
            rebuilding: AtomicBool::new(false),
            rebuild_progress: Mutex::new(RebuildProgress::default()),
            rebuild_read: AtomicU64::new(0),
            coverage: Mutex::new(Coverage::Complete),
            unopenable: Mutex::new(UnopenableSet::default()),
            counts_before_rebuild: Mutex::new((0, 0, 0)),
        });
        let committer = spawn_committer(Arc::downgrade(&shared), interval)?;
        Ok(ContextIndex {
            shared,
            committer: Some(committer),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &IndexConfig {
        &self.shared.config
    }

    /// Indexes `entry`, replacing any older version of its key. An entry
    /// whose version is not newer than the one indexed (or deleted) for its
    /// key changes nothing. The change is visible to search after the next
    /// commit (batch full, interval elapsed, or [`ContextIndex::commit`]).
    pub fn upsert(&self, entry: &IndexEntry) -> Result<WriteOutcome, IndexError> {
        let doc = self.shared.fields.document(entry)?;
        let mut w = lock(&self.shared.write);
        if let Some(outcome) = check_version(&w.versions, &entry.key, &entry.version) {
            return Ok(outcome);
        }
        w.writer
            .delete_term(self.shared.fields.key_term(&entry.key));
        w.writer.add_document(doc)?;
        w.versions.insert(
            entry.key.clone(),
            KeyState {
                version: entry.version.clone(),
                live: true,
            },
        );
        self.shared.clear_unopenable(&entry.key);
        self.shared.note_write(&mut w)?;
        Ok(WriteOutcome::Applied)
    }

    /// Removes `key` as of tombstone `version`. A newer version already
    /// indexed stays; an older version arriving later is ignored. Deleting
    /// a key the index never saw records the tombstone all the same.
    pub fn delete(&self, key: &str, version: &VersionId) -> Result<WriteOutcome, IndexError> {
        let mut w = lock(&self.shared.write);
        match w.versions.get(key) {
            Some(s) if s.version > *version => {
                return Ok(WriteOutcome::Superseded {
                    current: s.version.clone(),
                });
            }
            Some(s) if s.version == *version && !s.live => {
                return Ok(WriteOutcome::AlreadyApplied);
            }
            _ => {}
        }
        w.writer.delete_term(self.shared.fields.key_term(key));
        w.versions.insert(
            key.to_string(),
            KeyState {
                version: version.clone(),
                live: false,
            },
        );
        self.shared.clear_unopenable(key);
        self.shared.note_write(&mut w)?;
        Ok(WriteOutcome::Applied)
    }

    /// Records that the source holds `entry`'s version but could not open
    /// it (no key held, or corrupt). Under the newest-version rule of
    /// [`ContextIndex::upsert`]: when it is newer than what is indexed for
    /// its key, the key's document is removed (its plaintext is of an older
    /// version) and the record is counted as unopenable until a newer
    /// version is indexed or deleted. Searches by its readers report it in
    /// [`crate::SearchResults::unopenable`]; [`ContextIndex::status`]
    /// counts it by reason. Not an error.
    pub fn mark_unopenable(&self, entry: &UnopenableEntry) -> Result<WriteOutcome, IndexError> {
        let mut w = lock(&self.shared.write);
        if let Some(outcome) = check_version(&w.versions, &entry.key, &entry.version) {
            return Ok(outcome);
        }
        w.writer
            .delete_term(self.shared.fields.key_term(&entry.key));
        w.versions.insert(
            entry.key.clone(),
            KeyState {
                version: entry.version.clone(),
                live: false,
            },
        );
        {
            let mut u = lock(&self.shared.unopenable);
            u.insert(entry);
            self.shared.observer.on_unopenable(&u.counts());
        }
        self.shared.note_write(&mut w)?;
        Ok(WriteOutcome::Applied)
    }

    /// Records held but not openable, by reason.
    pub fn unopenable(&self) -> UnopenableCounts {
        lock(&self.shared.unopenable).counts()
    }

    /// Whether the index holds everything its source has.
    pub fn coverage(&self) -> Coverage {
        self.shared.coverage()
    }

    /// Announces a rebuild: until the next [`ContextIndex::rebuild`]
    /// finishes, [`ContextIndex::coverage`] is `Rebuilding` (with
    /// `expected`, what the feed will hold at most) and searches report
    /// their results as possibly incomplete. A node calls this before it
    /// starts reading its store, so it is never taken for complete
    /// meanwhile.
    pub fn expect_rebuild(&self, expected: Option<u64>) {
        self.shared.rebuild_read.store(0, Ordering::Relaxed);
        self.shared
            .set_coverage(Coverage::Rebuilding { read: 0, expected });
    }

    /// Commits every pending write and makes it visible to searches that
    /// start after this returns.
    pub fn commit(&self) -> Result<(), IndexError> {
        let mut w = lock(&self.shared.write);
        self.shared.commit_locked(&mut w, CommitTrigger::Explicit)
    }

    /// The newest version the index has seen for `key` (committed or not),
    /// and whether it is live.
    pub fn indexed_version(&self, key: &str) -> Option<KeyState> {
        lock(&self.shared.write).versions.get(key).cloned()
    }

    /// The index's state: documents, segments, memory, pending writes, the
    /// last commit and merge, and a running rebuild.
    pub fn status(&self) -> Result<IndexStatus, IndexError> {
        // Never waits for a running rebuild (which holds the write lock
        // throughout): writes wait for it, so the figures from when it
        // started are still the current ones.
        let (pending_ops, live_keys, tombstones) = loop {
            match self.shared.write.try_lock() {
                Ok(w) => break self.shared.counts(&w),
                Err(TryLockError::Poisoned(e)) => break self.shared.counts(&e.into_inner()),
                Err(TryLockError::WouldBlock) => {
                    if self.shared.rebuilding.load(Ordering::Acquire) {
                        break *lock(&self.shared.counts_before_rebuild);
                    }
                    // A write or commit holds it for a moment.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let searcher = self.shared.engine().reader.searcher();
        let deleted_docs = searcher
            .segment_readers()
            .iter()
            .map(|s| u64::from(s.num_deleted_docs()))
            .sum();
        let index_bytes = searcher.space_usage()?.total().get_bytes();
        let rebuild = self
            .shared
            .rebuilding
            .load(Ordering::Acquire)
            .then(|| lock(&self.shared.rebuild_progress).clone());
        Ok(IndexStatus {
            docs: searcher.num_docs(),
            deleted_docs,
            segments: searcher.segment_readers().len(),
            index_bytes,
            pending_ops,
            live_keys,
            tombstones,
            last_commit: *lock(&self.shared.last_commit),
            last_merge: lock(&self.shared.last_merge).clone(),
            rebuild,
            coverage: self.shared.coverage(),
            unopenable: self.unopenable(),
        })
    }

    /// Commits pending writes, then merges every segment into one, dropping
    /// deleted documents, and waits for it. For a maintenance worker: the
    /// background merge policy keeps the segment count bounded on its own;
    /// this reclaims everything at once (after a large delete, say). Writes
    /// are not blocked while the merge runs.
    pub fn optimize(&self) -> Result<MergeReport, IndexError> {
        const ATTEMPTS: usize = 20;
        let start = Instant::now();
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS {
            let started = {
                let mut w = lock(&self.shared.write);
                if w.pending > 0 {
                    self.shared.commit_locked(&mut w, CommitTrigger::Explicit)?;
                }
                // Under the write lock the engine cannot be swapped by a
                // rebuild, so the writer and the segment ids belong together.
                let engine = self.shared.engine();
                let before = engine.reader.searcher();
                let segments_before = before.segment_readers().len();
                let deleted_before: u64 = before
                    .segment_readers()
                    .iter()
                    .map(|s| u64::from(s.num_deleted_docs()))
                    .sum();
                let ids = engine.index.searchable_segment_ids()?;
                if ids.is_empty() || (ids.len() == 1 && deleted_before == 0) {
                    return Ok(self.record_merge(segments_before, 0, start));
                }
                (
                    engine,
                    segments_before,
                    deleted_before,
                    w.writer.merge(&ids),
                )
            };
            let (engine, segments_before, deleted_before, future) = started;
            // Wait without the lock: writes go on while the merge runs.
            match future.wait() {
                Ok(_) => {
                    {
                        let w = lock(&self.shared.write);
                        // Old segment files are dropped once no searcher
                        // holds them; collect them now rather than at the
                        // next commit.
                        let _ = w.writer.garbage_collect_files().wait();
                    }
                    engine.reader.reload()?;
                    return Ok(self.record_merge(segments_before, deleted_before, start));
                }
                Err(e) => {
                    // A background merge took some of these segments
                    // first; wait for it and try again with the new set.
                    last_error = e.to_string();
                    tracing::debug!(attempt, error = %e, "optimize merge raced a background merge");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Err(IndexError::MergeBusy(last_error))
    }

    fn record_merge(&self, segments_before: usize, reclaimed: u64, start: Instant) -> MergeReport {
        let searcher = self.shared.engine().reader.searcher();
        let report = MergeReport {
            segments_before,
            segments_after: searcher.segment_readers().len(),
            docs: searcher.num_docs(),
            deleted_docs_reclaimed: reclaimed,
            took: start.elapsed(),
            finished_at: SystemTime::now(),
        };
        *lock(&self.shared.last_merge) = Some(report.clone());
        self.shared.observer.on_merge(&report);
        report
    }

    /// Recreates the index from scratch from `entries` (the node feeds every
    /// live context of its store: opened as an [`IndexEntry`], or, when it
    /// cannot be opened, as an [`UnopenableEntry`], counted and not
    /// indexed), then swaps it in atomically.
    ///
    /// Searches keep running against the previous index until the swap;
    /// writes wait for the rebuild to finish and then apply to the new
    /// index (with the usual newest-version check). The rebuild uses its
    /// own writer (`rebuild_threads`, `rebuild_heap_bytes`). `progress` is
    /// called every `rebuild_progress_every` entries and once at the end;
    /// [`ContextIndex::status`] shows the same figures. On error the
    /// previous index stays live and unchanged (and
    /// [`ContextIndex::coverage`] says the rebuild failed). Invalid entries
    /// are skipped and counted, not fatal; so are unopenable ones. While it
    /// runs the node holds both indexes in memory.
    pub fn rebuild<I, T, E>(
        &self,
        entries: I,
        progress: &mut dyn FnMut(&RebuildProgress),
    ) -> Result<RebuildProgress, RebuildError>
    where
        I: IntoIterator<Item = Result<T, E>>,
        T: Into<RebuildItem>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let shared = &self.shared;
        let mut w = lock(&shared.write);
        *lock(&shared.counts_before_rebuild) = shared.counts(&w);
        let expected = match &*lock(&shared.coverage) {
            Coverage::Rebuilding { expected, .. } => *expected,
            _ => None,
        };
        shared.rebuild_read.store(0, Ordering::Relaxed);
        shared.set_coverage(Coverage::Rebuilding { read: 0, expected });
        shared.rebuilding.store(true, Ordering::Release);
        *lock(&shared.rebuild_progress) = RebuildProgress::default();
        let result = self.rebuild_locked(&mut w, entries, progress);
        shared.set_coverage(match &result {
            Ok(_) => Coverage::Complete,
            Err(e) => Coverage::Failed {
                error: e.to_string(),
            },
        });
        shared.rebuilding.store(false, Ordering::Release);
        result
    }

    fn rebuild_locked<I, T, E>(
        &self,
        w: &mut WriteState,
        entries: I,
        progress: &mut dyn FnMut(&RebuildProgress),
    ) -> Result<RebuildProgress, RebuildError>
    where
        I: IntoIterator<Item = Result<T, E>>,
        T: Into<RebuildItem>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        let shared = &self.shared;
        let config = &shared.config;
        let start = Instant::now();
        let mut p = RebuildProgress::default();
        let index_err = |p: &RebuildProgress, source: IndexError| RebuildError::Index {
            indexed: p.indexed,
            source,
        };
        let engine = shared.new_engine().map_err(|e| index_err(&p, e))?;
        let mut writer = make_writer(
            &engine.index,
            config.rebuild_threads,
            config.rebuild_heap_bytes,
            config,
        )
        .map_err(|e| index_err(&p, e))?;
        let mut versions: HashMap<String, KeyState> = HashMap::new();
        let mut unopenable = UnopenableSet::default();
        let report = |p: &mut RebuildProgress, progress: &mut dyn FnMut(&RebuildProgress)| {
            p.elapsed = start.elapsed();
            *lock(&shared.rebuild_progress) = p.clone();
            shared.observer.on_rebuild_progress(p);
            progress(p);
        };

        for item in entries {
            let item = item.map_err(|e| RebuildError::Source {
                indexed: p.indexed,
                source: e.into(),
            })?;
            p.read += 1;
            shared.rebuild_read.store(p.read, Ordering::Relaxed);
            let entry = match item.into() {
                RebuildItem::Entry(entry) => entry,
                RebuildItem::Unopenable(u) => {
                    match check_version(&versions, &u.key, &u.version) {
                        Some(_) => p.superseded += 1,
                        None => {
                            if versions.get(&u.key).is_some_and(|s| s.live) {
                                writer.delete_term(shared.fields.key_term(&u.key));
                            }
                            versions.insert(
                                u.key.clone(),
                                KeyState {
                                    version: u.version.clone(),
                                    live: false,
                                },
                            );
                            unopenable.insert(&u);
                            p.unopenable = unopenable.counts();
                        }
                    }
                    if p.read.is_multiple_of(config.rebuild_progress_every) {
                        report(&mut p, progress);
                    }
                    continue;
                }
            };
            match check_version(&versions, &entry.key, &entry.version) {
                Some(WriteOutcome::Superseded { .. }) | Some(WriteOutcome::AlreadyApplied) => {
                    p.superseded += 1;
                }
                _ => match shared.fields.document(&entry) {
                    Ok(doc) => {
                        if versions.contains_key(&entry.key) {
                            writer.delete_term(shared.fields.key_term(&entry.key));
                        }
                        writer
                            .add_document(doc)
                            .map_err(|e| index_err(&p, e.into()))?;
                        if unopenable.remove(&entry.key) {
                            p.unopenable = unopenable.counts();
                        }
                        versions.insert(
                            entry.key,
                            KeyState {
                                version: entry.version,
                                live: true,
                            },
                        );
                        p.indexed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "rebuild skipped an invalid entry");
                        p.rejected += 1;
                    }
                },
            }
            if p.read.is_multiple_of(config.rebuild_progress_every) {
                report(&mut p, progress);
            }
        }
        writer.commit().map_err(|e| index_err(&p, e.into()))?;
        // Hand the index to a steady-state writer (small heap). Waiting for
        // the rebuild writer's merges first releases its memory and lock.
        writer
            .wait_merging_threads()
            .map_err(|e| index_err(&p, e.into()))?;
        let steady = make_writer(
            &engine.index,
            config.writer_threads,
            config.writer_heap_bytes,
            config,
        )
        .map_err(|e| index_err(&p, e))?;
        engine
            .reader
            .reload()
            .map_err(|e| index_err(&p, e.into()))?;

        // Swap: from here on searches use the new engine.
        let old_writer = std::mem::replace(&mut w.writer, steady);
        *shared.engine.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
        w.versions = versions;
        {
            let mut u = lock(&shared.unopenable);
            *u = unopenable;
            shared.observer.on_unopenable(&u.counts());
        }
        w.pending = 0;
        w.pending_since = None;
        *lock(&shared.last_commit) = Some(SystemTime::now());
        // Uncommitted writes to the old index are gone with it; the source
        // had them (the node writes the store before the index).
        drop(old_writer);

        p.finished = true;
        report(&mut p, progress);
        Ok(p)
    }

    /// Stops the background committer, then commits pending writes.
    pub fn close(mut self) -> Result<(), IndexError> {
        drop(self.committer.take());
        self.commit()?;
        Ok(())
    }
}

/// Whether a write of `version` to `key` must be skipped, and why.
fn check_version(
    versions: &HashMap<String, KeyState>,
    key: &str,
    version: &VersionId,
) -> Option<WriteOutcome> {
    let s = versions.get(key)?;
    if s.version > *version {
        Some(WriteOutcome::Superseded {
            current: s.version.clone(),
        })
    } else if s.version == *version {
        Some(WriteOutcome::AlreadyApplied)
    } else {
        None
    }
}

fn spawn_committer(shared: Weak<Shared>, interval: Duration) -> Result<Committer, IndexError> {
    let (stop, rx) = mpsc::channel::<()>();
    // Check four times per interval: a write becomes visible at most
    // `interval + tick` after it was made (plus the commit itself).
    let tick = (interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
    let handle = std::thread::Builder::new()
        .name("slurp-index-commit".into())
        .spawn(move || {
            // A message or a disconnect (the index was dropped) stops it.
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(tick) {
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                shared.commit_if_due();
            }
        })?;
    Ok(Committer {
        stop: Some(stop),
        handle: Some(handle),
    })
}
