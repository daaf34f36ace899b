//! The store handle: opening the database and submitting writes.
//!
//! A [`Store`] is a cheap, cloneable handle. Writes are validated and
//! encoded (and compressed) on the caller's thread, then queued to the one
//! writer thread, which commits everything pending in one durable
//! transaction (group commit) and answers each request; a write's call
//! returns only after its transaction is durable. Reads open their own read
//! transaction on the caller's thread (see [`crate::read`]). When the last
//! handle is dropped the writer thread finishes the queue and the database
//! is closed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use slurp_protocol::version::{SystemTimeSource, TimeSource};
use slurp_protocol::{Framed, RecordMeta, VersionId};
use tokio::sync::{mpsc, oneshot};

use crate::compress;
use crate::config::StoreConfig;
use crate::digest::SlotDigests;
use crate::error::{MaintenanceError, OpenError, WriteError};
use crate::hints::Hint;
use crate::layout::{self, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use crate::observer::{NoopObserver, StoreObserver};
use crate::record::{BackupMeta, StoredVersion};
use crate::removal::{CollectOutcome, PurgeReport, SweepReport};
use crate::validate;
use crate::writer::{self, Command, CompactionReport, PreparedPut};

/// A version to store: its metadata and the sealed envelope (opaque bytes;
/// the store never looks inside). A tombstone may have an empty envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    pub meta: RecordMeta,
    pub envelope: Vec<u8>,
}

/// What storing one version did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The version was added; `latest` tells whether it is now the greatest
    /// version of its address.
    Inserted { latest: bool },
    /// A version with this address and id was already stored; nothing
    /// changed. `identical` is false when the stored content differs from
    /// the one offered (versions are immutable: the first one stays).
    AlreadyPresent { identical: bool },
    /// The version had already expired when it reached the writer; it was
    /// not stored.
    Expired,
    /// The address was deleted and collected ([`Store::collect`]) at a
    /// version at or after this one; the version is superseded and was not
    /// stored (a hinted put records no hint for it). Not an error: a
    /// replica that missed the deletion is offering what the deletion
    /// removed.
    Collected,
}

/// A hook the writer thread consults right before it commits a batch of
/// writes: a disk that fails on purpose, for tests that prove a failed
/// commit loses nothing acknowledged (the fault-injection suite,
/// `docs/reliability.md`). Installed with [`StoreBuilder::commit_faults`]
/// or [`Store::set_commit_faults`]; a store without one pays one branch
/// per commit.
///
/// It covers the batched writes (puts, hinted puts, replaced envelopes,
/// hint removals, backups), not the removals (sweep, purge,
/// collect), which commit on their own.
pub trait CommitFaults: Send + Sync {
    /// Called before each batch commits. An error fails that commit
    /// exactly as a failed fsync would: every request of the batch gets
    /// [`WriteError::CommitFailed`] and nothing of it is stored.
    fn before_commit(&self) -> std::io::Result<()>;
}

/// A [`CommitFaults`] switched from outside: fails the next `n` commits,
/// or every commit until disarmed.
#[derive(Debug, Default)]
pub struct CommitFailpoint {
    /// Commits still to fail; `u64::MAX` fails until [`Self::disarm`].
    remaining: AtomicU64,
    failed: AtomicU64,
}

impl CommitFailpoint {
    /// Fails the next `n` commits (replacing what was armed before).
    pub fn fail_next(&self, n: u64) {
        self.remaining.store(n, Ordering::SeqCst);
    }

    /// Fails every commit until [`Self::disarm`].
    pub fn fail_until_disarmed(&self) {
        self.remaining.store(u64::MAX, Ordering::SeqCst);
    }

    /// Lets every commit through again.
    pub fn disarm(&self) {
        self.remaining.store(0, Ordering::SeqCst);
    }

    /// Commits failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl CommitFaults for CommitFailpoint {
    fn before_commit(&self) -> std::io::Result<()> {
        let take = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            });
        if take.is_err() {
            return Ok(());
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        Err(std::io::Error::other("injected commit failure (failpoint)"))
    }
}

pub(crate) struct Shared {
    pub db: RwLock<Database>,
    /// Per-slot digests of the stored versions, kept exact by the writer.
    pub digests: SlotDigests,
    pub path: PathBuf,
    pub config: StoreConfig,
    pub observer: Arc<dyn StoreObserver>,
    pub time: Arc<dyn TimeSource>,
    pub commit_faults: RwLock<Option<Arc<dyn CommitFaults>>>,
}

impl Shared {
    /// Shared access to the database: reads and write transactions. Held
    /// only for the length of one transaction; compaction takes it
    /// exclusively.
    pub fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn now_ms(&self) -> u64 {
        self.time.now_ms()
    }

    /// Consults the [`CommitFaults`] hook, if one is installed.
    pub fn before_commit(&self) -> std::io::Result<()> {
        let hook = self
            .commit_faults
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match hook.as_ref() {
            None => Ok(()),
            Some(h) => h.before_commit(),
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    /// The writer thread, unparked after each request is queued (it may be
    /// waiting for more before committing).
    writer_thread: std::thread::Thread,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is pending and exit;
        // joining it releases its hold on the database before the file is
        // closed, so the path can be reopened as soon as this returns.
        self.tx.take();
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// The local store. Clone it freely; every clone talks to the same
/// database and writer thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.shared.path)
            .finish_non_exhaustive()
    }
}

/// Options for opening a [`Store`] beyond its configuration.
pub struct StoreBuilder {
    path: PathBuf,
    config: StoreConfig,
    observer: Arc<dyn StoreObserver>,
    time: Arc<dyn TimeSource>,
    commit_faults: Option<Arc<dyn CommitFaults>>,
}

impl StoreBuilder {
    pub fn config(mut self, config: StoreConfig) -> Self {
        self.config = config;
        self
    }

    /// Where measurements go (default: nowhere).
    pub fn observer(mut self, observer: Arc<dyn StoreObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The clock expiry is judged by (default: the system clock).
    pub fn time_source(mut self, time: Arc<dyn TimeSource>) -> Self {
        self.time = time;
        self
    }

    /// A hook consulted before every batch commit (default: none); see
    /// [`CommitFaults`].
    pub fn commit_faults(mut self, hook: Arc<dyn CommitFaults>) -> Self {
        self.commit_faults = Some(hook);
        self
    }

    /// Opens (or creates) the database file and starts the writer thread.
    pub fn open(self) -> Result<Store, OpenError> {
        self.config.validate()?;
        let display = self.path.display().to_string();
        let db = redb::Builder::new()
            .set_cache_size(self.config.cache_bytes)
            .create(&self.path)
            .map_err(|source| OpenError::Database {
                path: display.clone(),
                source,
            })?;
        check_schema(&db, &display)?;
        // Before the writer thread starts: no write can race the scan.
        let started = std::time::Instant::now();
        let digests = SlotDigests::build(&db).map_err(|e| OpenError::Digests {
            path: display.clone(),
            source: Box::new(e),
        })?;
        tracing::debug!(
            path = ?self.path,
            versions = digests.range(0..=u16::MAX).versions,
            ms = started.elapsed().as_millis() as u64,
            "slot digests built"
        );
        let shared = Arc::new(Shared {
            db: RwLock::new(db),
            digests,
            path: self.path,
            config: self.config,
            observer: self.observer,
            time: self.time,
            commit_faults: RwLock::new(self.commit_faults),
        });
        let (tx, rx) = mpsc::channel(shared.config.queue_capacity);
        let for_writer = shared.clone();
        let writer = std::thread::Builder::new()
            .name("slurp-store-writer".into())
            .spawn(move || writer::run(for_writer, rx))
            .map_err(OpenError::Thread)?;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
                writer_thread: writer.thread().clone(),
                writer: Some(writer),
            }),
        })
    }
}

/// The `acl` table of schemas 1 to 3 (access-control records, which
/// nothing read or wrote). The upgrade to schema 4 deletes it; nothing else
/// names it.
const RETIRED_ACL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("acl");

/// Refuses a file written by a newer schema, creates every table (and the
/// schema record) in a new one, and upgrades an older one: schema 1 lacked
/// the `hints` table and schema 2 the `collected` table, which are created
/// here like every other missing table, and schemas 1 to 3 had the `acl`
/// table, which is deleted; the record is rewritten in the same
/// transaction.
fn check_schema(db: &Database, path: &str) -> Result<(), OpenError> {
    let unreadable = |reason: String| OpenError::SchemaUnreadable {
        path: path.to_string(),
        reason,
    };
    let found = {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        match txn.open_table(layout::META) {
            Ok(meta) => match meta.get(SCHEMA_VERSION_KEY).map_err(redb::Error::from)? {
                Some(v) => {
                    let bytes: [u8; 4] = v.value().try_into().map_err(|_| {
                        unreadable(format!("{} bytes, expected 4", v.value().len()))
                    })?;
                    Some(u32::from_be_bytes(bytes))
                }
                None => None,
            },
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(redb::Error::from(e).into()),
        }
    };
    match found {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(OpenError::SchemaTooNew {
                path: path.to_string(),
                found: v,
                supported: SCHEMA_VERSION,
            });
        }
        Some(0) => return Err(unreadable("version 0".into())),
        _ => {}
    }
    let txn = db.begin_write().map_err(redb::Error::from)?;
    {
        let versions = txn
            .open_table(layout::VERSIONS)
            .map_err(redb::Error::from)?;
        if found.is_none() && !versions.is_empty().map_err(redb::Error::from)? {
            return Err(unreadable(
                "no schema record in a file that holds versions".into(),
            ));
        }
        txn.open_table(layout::KEYS).map_err(redb::Error::from)?;
        txn.open_table(layout::TTL).map_err(redb::Error::from)?;
        txn.open_table(layout::KEY_TTL).map_err(redb::Error::from)?;
        txn.open_table(layout::HIERARCHY)
            .map_err(redb::Error::from)?;
        txn.open_table(layout::LINKS_OUT)
            .map_err(redb::Error::from)?;
        txn.open_table(layout::LINKS_IN)
            .map_err(redb::Error::from)?;
        txn.open_table(layout::TOMBSTONES)
            .map_err(redb::Error::from)?;
        txn.open_table(layout::BACKUPS).map_err(redb::Error::from)?;
        txn.open_table(layout::HINTS).map_err(redb::Error::from)?;
        txn.open_table(layout::COLLECTED)
            .map_err(redb::Error::from)?;
        // 3 -> 4: the unused `acl` table goes, in the transaction that
        // writes the new schema record.
        if found.is_some_and(|v| v < 4) {
            txn.delete_table(RETIRED_ACL).map_err(redb::Error::from)?;
        }
        let mut meta = txn.open_table(layout::META).map_err(redb::Error::from)?;
        if found.is_none_or(|v| v < SCHEMA_VERSION) {
            meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_be_bytes().as_slice())
                .map_err(redb::Error::from)?;
        }
    }
    txn.commit().map_err(redb::Error::from)?;
    if let Some(old) = found.filter(|v| *v < SCHEMA_VERSION) {
        tracing::info!(
            path,
            from = old,
            to = SCHEMA_VERSION,
            "store schema upgraded"
        );
    }
    Ok(())
}

impl Store {
    /// A builder for a store at `path` with the default configuration.
    pub fn builder(path: impl AsRef<Path>) -> StoreBuilder {
        StoreBuilder {
            path: path.as_ref().to_path_buf(),
            config: StoreConfig::default(),
            observer: Arc::new(NoopObserver),
            time: Arc::new(SystemTimeSource),
            commit_faults: None,
        }
    }

    /// Opens (or creates) a store at `path` with `config`.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store, OpenError> {
        Store::builder(path).config(config).open()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.shared.config
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// Installs (or, with `None`, removes) the hook consulted before every
    /// batch commit; see [`CommitFaults`]. Takes effect from the next
    /// commit.
    pub fn set_commit_faults(&self, hook: Option<Arc<dyn CommitFaults>>) {
        *self
            .inner
            .shared
            .commit_faults
            .write()
            .unwrap_or_else(PoisonError::into_inner) = hook;
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn sender(&self) -> Result<&mpsc::Sender<Command>, WriteError> {
        self.inner.tx.as_ref().ok_or(WriteError::Closed)
    }

    async fn submit<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.sender().ok()?.send(make(tx)).await.ok()?;
        self.inner.writer_thread.unpark();
        rx.await.ok()
    }

    fn submit_blocking<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.sender().ok()?.blocking_send(make(tx)).ok()?;
        self.inner.writer_thread.unpark();
        rx.blocking_recv().ok()
    }

    /// Validates, compresses and encodes one version for the writer thread.
    fn prepare(&self, v: NewVersion) -> Result<PreparedPut, WriteError> {
        let config = &self.inner.shared.config;
        let key = v.meta.key.clone();
        validate::check_version(&v.meta, v.envelope.len(), config.max_links).map_err(
            |problem| WriteError::Invalid {
                key: key.clone(),
                problem,
            },
        )?;
        let limit = config.max_value_bytes;
        if v.envelope.len() > limit {
            return Err(WriteError::TooLarge {
                key,
                size: v.envelope.len(),
                limit,
            });
        }
        let raw_len = v.envelope.len() as u64;
        let (codec, data) = compress::encode(v.envelope, &config.compression);
        let version_key = layout::version_key(&key, &v.meta.version);
        let stored = StoredVersion {
            meta: v.meta,
            codec,
            raw_len,
            data: slurp_protocol::Bytes(data),
        };
        let value = stored.encode().map_err(|e| WriteError::Encode {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if value.len() > limit {
            return Err(WriteError::TooLarge {
                key,
                size: value.len(),
                limit,
            });
        }
        Ok(PreparedPut {
            meta: stored.meta,
            version_key,
            value,
        })
    }

    /// Prepares every version; refused ones keep their error, in place.
    fn prepare_all(&self, versions: Vec<NewVersion>) -> Vec<Result<PreparedPut, WriteError>> {
        versions.into_iter().map(|v| self.prepare(v)).collect()
    }

    /// Splits prepared versions into those to queue and the final results
    /// (refusals already known, the rest to be filled in by the writer).
    fn split(
        prepared: Vec<Result<PreparedPut, WriteError>>,
    ) -> (
        Vec<PreparedPut>,
        Vec<Option<Result<PutOutcome, WriteError>>>,
    ) {
        let mut queued = Vec::new();
        let mut results = Vec::with_capacity(prepared.len());
        for p in prepared {
            match p {
                Ok(item) => {
                    queued.push(item);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        (queued, results)
    }

    /// Fills the open results with the writer's answers, in order; those
    /// the writer never answered were cut off by the store closing.
    fn join(
        results: Vec<Option<Result<PutOutcome, WriteError>>>,
        answers: Vec<Result<PutOutcome, WriteError>>,
    ) -> Vec<Result<PutOutcome, WriteError>> {
        let mut answers = answers.into_iter();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| answers.next().unwrap_or(Err(WriteError::Closed))))
            .collect()
    }

    /// Replaces the sealed bytes of versions already stored, keeping their
    /// metadata (key rotation rewraps envelopes in place); each answer is
    /// whether the version was there. Durable when this returns.
    pub async fn replace_envelopes(
        &self,
        versions: Vec<NewVersion>,
    ) -> Vec<Result<bool, WriteError>> {
        let prepared = self.prepare_all(versions);
        let mut queued = Vec::new();
        let mut results: Vec<Option<Result<bool, WriteError>>> = Vec::new();
        for p in prepared {
            match p {
                Ok(item) => {
                    queued.push(item);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let answers = if queued.is_empty() {
            Vec::new()
        } else {
            self.submit(|reply| Command::Replace {
                items: queued,
                reply,
            })
            .await
            .unwrap_or_default()
        };
        let mut answers = answers.into_iter();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| answers.next().unwrap_or(Err(WriteError::Closed))))
            .collect()
    }

    /// Stores one version; returns once it is durable. Invalid or oversized
    /// versions are refused before they are queued.
    pub async fn put(&self, version: NewVersion) -> Result<PutOutcome, WriteError> {
        let item = self.prepare(version)?;
        let mut out = self
            .submit(|reply| Command::Put {
                items: vec![item],
                hint_for: None,
                reply,
            })
            .await
            .ok_or(WriteError::Closed)?;
        out.pop().unwrap_or(Err(WriteError::Closed))
    }

    /// [`Store::put`] for synchronous callers. Must not be called from
    /// inside an async runtime (it blocks the thread until the commit).
    pub fn put_blocking(&self, version: NewVersion) -> Result<PutOutcome, WriteError> {
        let item = self.prepare(version)?;
        let mut out = self
            .submit_blocking(|reply| Command::Put {
                items: vec![item],
                hint_for: None,
                reply,
            })
            .ok_or(WriteError::Closed)?;
        out.pop().unwrap_or(Err(WriteError::Closed))
    }

    /// Cuts prepared versions into requests of at most `max_batch`, so a
    /// large `put_many` does not hold the writer in one huge transaction.
    fn chunks(&self, items: Vec<PreparedPut>) -> Vec<Vec<PreparedPut>> {
        let size = self.inner.shared.config.max_batch.max(1);
        let mut out = Vec::with_capacity(items.len().div_ceil(size));
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            out.push(items.by_ref().take(size).collect());
        }
        out
    }

    /// Stores several versions (for example those a replica lacks); each
    /// gets its own result, in order. A refused version does not affect the
    /// others. Versions are committed in transactions of at most
    /// `max_batch` (so the call is not atomic as a whole); it returns once
    /// all accepted versions are durable.
    pub async fn put_many(&self, versions: Vec<NewVersion>) -> Vec<Result<PutOutcome, WriteError>> {
        self.put_many_with(versions, None).await
    }

    /// [`Store::put_many`] for synchronous callers.
    pub fn put_many_blocking(
        &self,
        versions: Vec<NewVersion>,
    ) -> Vec<Result<PutOutcome, WriteError>> {
        self.put_many_with_blocking(versions, None)
    }

    /// Stores versions exactly as [`Store::put_many`] does and records, in
    /// the same transaction as each version, a hint that it belongs on the
    /// peer `hint_for` (hinted handoff: this node holds the versions for a
    /// replica that is down). A version that was already stored gets its
    /// hint too (the target may still lack it); an expired or refused one
    /// gets none. Re-hinting a version keeps the hint's first creation
    /// time. The hints are read with [`Store::hints`] and removed with
    /// [`Store::remove_hints`] once the target has acknowledged them.
    ///
    /// An invalid `hint_for` (empty, over
    /// [`crate::layout::MAX_HINT_TARGET_LEN`] bytes, or holding `0x00`)
    /// refuses every version with [`WriteError::HintTarget`] and stores
    /// nothing.
    pub async fn put_many_hinted(
        &self,
        versions: Vec<NewVersion>,
        hint_for: &str,
    ) -> Vec<Result<PutOutcome, WriteError>> {
        match validate::check_hint_target(hint_for) {
            Ok(()) => self.put_many_with(versions, Some(hint_for.into())).await,
            Err(e) => versions.iter().map(|_| Err(e.clone().into())).collect(),
        }
    }

    /// [`Store::put_many_hinted`] for synchronous callers.
    pub fn put_many_hinted_blocking(
        &self,
        versions: Vec<NewVersion>,
        hint_for: &str,
    ) -> Vec<Result<PutOutcome, WriteError>> {
        match validate::check_hint_target(hint_for) {
            Ok(()) => self.put_many_with_blocking(versions, Some(hint_for.into())),
            Err(e) => versions.iter().map(|_| Err(e.clone().into())).collect(),
        }
    }

    async fn put_many_with(
        &self,
        versions: Vec<NewVersion>,
        hint_for: Option<Arc<str>>,
    ) -> Vec<Result<PutOutcome, WriteError>> {
        let (items, results) = Self::split(self.prepare_all(versions));
        let mut pending = Vec::new();
        if let Ok(sender) = self.sender() {
            for chunk in self.chunks(items) {
                let (tx, rx) = oneshot::channel();
                if sender
                    .send(Command::Put {
                        items: chunk,
                        hint_for: hint_for.clone(),
                        reply: tx,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                self.inner.writer_thread.unpark();
                pending.push(rx);
            }
        }
        let mut answers = Vec::new();
        for rx in pending {
            match rx.await {
                Ok(a) => answers.extend(a),
                Err(_) => break,
            }
        }
        Self::join(results, answers)
    }

    fn put_many_with_blocking(
        &self,
        versions: Vec<NewVersion>,
        hint_for: Option<Arc<str>>,
    ) -> Vec<Result<PutOutcome, WriteError>> {
        let (items, results) = Self::split(self.prepare_all(versions));
        let mut pending = Vec::new();
        if let Ok(sender) = self.sender() {
            for chunk in self.chunks(items) {
                let (tx, rx) = oneshot::channel();
                if sender
                    .blocking_send(Command::Put {
                        items: chunk,
                        hint_for: hint_for.clone(),
                        reply: tx,
                    })
                    .is_err()
                {
                    break;
                }
                self.inner.writer_thread.unpark();
                pending.push(rx);
            }
        }
        let mut answers = Vec::new();
        for rx in pending {
            match rx.blocking_recv() {
                Ok(a) => answers.extend(a),
                Err(_) => break,
            }
        }
        Self::join(results, answers)
    }

    /// The `hints` keys of `hints`, cut into requests of at most
    /// `max_batch`. Every hint is checked first: a bad target or key (which
    /// [`Store::hints`] never returns) refuses the whole call.
    fn hint_removals(&self, hints: &[Hint]) -> Result<Vec<Vec<Vec<u8>>>, WriteError> {
        let mut keys = Vec::with_capacity(hints.len());
        for h in hints {
            validate::check_hint_target(&h.target)?;
            validate::check_key(&h.key).map_err(|problem| WriteError::Invalid {
                key: h.key.clone(),
                problem,
            })?;
            keys.push(layout::hint_key(&h.target, &h.key, &h.version));
        }
        let size = self.inner.shared.config.max_batch.max(1);
        Ok(keys.chunks(size).map(<[_]>::to_vec).collect())
    }

    /// Removes hints (those the target acknowledged), matched by target,
    /// key and version (`created_ms` is ignored). A hint that is not there
    /// is not an error; returns how many were removed. Removals are
    /// committed in transactions of at most `max_batch` hints, so a failure
    /// may leave some removed; removing again is safe.
    pub async fn remove_hints(&self, hints: &[Hint]) -> Result<usize, WriteError> {
        let mut removed = 0;
        for keys in self.hint_removals(hints)? {
            removed += self
                .submit(|reply| Command::RemoveHints { keys, reply })
                .await
                .unwrap_or(Err(WriteError::Closed))?;
        }
        Ok(removed)
    }

    /// [`Store::remove_hints`] for synchronous callers.
    pub fn remove_hints_blocking(&self, hints: &[Hint]) -> Result<usize, WriteError> {
        let mut removed = 0;
        for keys in self.hint_removals(hints)? {
            removed += self
                .submit_blocking(|reply| Command::RemoveHints { keys, reply })
                .unwrap_or(Err(WriteError::Closed))?;
        }
        Ok(removed)
    }

    fn prepare_backup(
        &self,
        id: &str,
        meta: Option<&BackupMeta>,
    ) -> Result<BackupWrite, WriteError> {
        validate::check_backup_id(id).map_err(|problem| WriteError::Invalid {
            key: id.to_string(),
            problem,
        })?;
        let value = match meta {
            None => None,
            Some(m) => Some(m.encode().map_err(|e| WriteError::Encode {
                key: id.to_string(),
                reason: e.to_string(),
            })?),
        };
        Ok(BackupWrite {
            id: id.to_string(),
            value,
        })
    }

    async fn submit_backup(&self, c: BackupWrite) -> Result<bool, WriteError> {
        self.submit(|reply| c.with_reply(reply))
            .await
            .unwrap_or(Err(WriteError::Closed))
    }

    fn submit_backup_blocking(&self, c: BackupWrite) -> Result<bool, WriteError> {
        self.submit_blocking(|reply| c.with_reply(reply))
            .unwrap_or(Err(WriteError::Closed))
    }

    /// Records a backup's metadata under its id (replacing any). Returns
    /// whether one existed.
    pub async fn put_backup(&self, meta: &BackupMeta) -> Result<bool, WriteError> {
        let c = self.prepare_backup(&meta.id, Some(meta))?;
        self.submit_backup(c).await
    }

    /// [`Store::put_backup`] for synchronous callers.
    pub fn put_backup_blocking(&self, meta: &BackupMeta) -> Result<bool, WriteError> {
        let c = self.prepare_backup(&meta.id, Some(meta))?;
        self.submit_backup_blocking(c)
    }

    /// Forgets a backup. Returns whether it was recorded.
    pub async fn delete_backup(&self, id: &str) -> Result<bool, WriteError> {
        let c = self.prepare_backup(id, None)?;
        self.submit_backup(c).await
    }

    /// [`Store::delete_backup`] for synchronous callers.
    pub fn delete_backup_blocking(&self, id: &str) -> Result<bool, WriteError> {
        let c = self.prepare_backup(id, None)?;
        self.submit_backup_blocking(c)
    }

    /// Deletes up to `limit` expired versions in one transaction (fixing
    /// the latest, hierarchy, link and tombstone tables of their
    /// addresses). The [`crate::Sweeper`] worker calls this in a loop.
    pub async fn sweep_expired(&self, limit: usize) -> Result<SweepReport, MaintenanceError> {
        self.submit(|reply| Command::Sweep { limit, reply })
            .await
            .unwrap_or(Err(MaintenanceError::Closed))
    }

    /// [`Store::sweep_expired`] for synchronous callers.
    pub fn sweep_expired_blocking(&self, limit: usize) -> Result<SweepReport, MaintenanceError> {
        self.submit_blocking(|reply| Command::Sweep { limit, reply })
            .unwrap_or(Err(MaintenanceError::Closed))
    }

    /// Checks the keys of a purge before anything is queued: a key the
    /// store would never hold is a caller's mistake, not an absent version.
    fn check_purge(versions: &[(String, VersionId)]) -> Result<(), WriteError> {
        for (key, _) in versions {
            validate::check_key(key).map_err(|problem| WriteError::Invalid {
                key: key.clone(),
                problem,
            })?;
        }
        Ok(())
    }

    /// Removes exactly these versions, in one transaction, keeping every
    /// derived record consistent as the sweeper does (the address's head
    /// moves to the greatest remaining version, its TTL entries go, the
    /// hierarchy, links and tombstone follow the new newest version, the
    /// address disappears with its last version) and removing every hint
    /// naming a removed version. Versions not stored are skipped and
    /// counted; a version whose removal runs into a corrupt value stays and
    /// is reported. An invalid key refuses the whole call before anything is
    /// queued.
    ///
    /// The node calls this to drop a hinted copy once the replica it
    /// belongs on holds it. A purge is one transaction however long the
    /// list: callers bound it (a few hundred versions, like `max_batch`).
    pub async fn purge(
        &self,
        versions: Vec<(String, VersionId)>,
    ) -> Result<PurgeReport, WriteError> {
        Self::check_purge(&versions)?;
        self.submit(|reply| Command::Purge { versions, reply })
            .await
            .unwrap_or(Err(WriteError::Closed))
    }

    /// [`Store::purge`] for synchronous callers.
    pub fn purge_blocking(
        &self,
        versions: Vec<(String, VersionId)>,
    ) -> Result<PurgeReport, WriteError> {
        Self::check_purge(&versions)?;
        self.submit_blocking(|reply| Command::Purge { versions, reply })
            .unwrap_or(Err(WriteError::Closed))
    }

    fn check_collect(key: &str) -> Result<(), WriteError> {
        validate::check_key(key).map_err(|problem| WriteError::Invalid {
            key: key.to_string(),
            problem,
        })
    }

    /// Collects a deleted address (tombstone garbage collection): if the
    /// newest version of `key` is the tombstone `tombstone` (and it has not
    /// expired), removes every version of `key`, older ones first and the
    /// tombstone last, exactly as [`Store::purge`] would, and records a
    /// collected marker (`collected` table) at the tombstone's id, all in
    /// one transaction. From then on a put of a version of `key` at or
    /// before that id is not stored ([`PutOutcome::Collected`]); a newer one
    /// is stored as usual. The caller (the node's tombstone GC) decides
    /// when every replica has seen the tombstone.
    ///
    /// All or nothing: [`CollectOutcome::NotNewest`] and
    /// [`CollectOutcome::Absent`] change nothing, and a version of the
    /// address that does not decode fails the call with
    /// [`WriteError::Corrupt`] and changes nothing either.
    pub async fn collect(
        &self,
        key: &str,
        tombstone: &VersionId,
    ) -> Result<CollectOutcome, WriteError> {
        Self::check_collect(key)?;
        self.submit(|reply| Command::Collect {
            key: key.to_string(),
            tombstone: tombstone.clone(),
            reply,
        })
        .await
        .unwrap_or(Err(WriteError::Closed))
    }

    /// [`Store::collect`] for synchronous callers.
    pub fn collect_blocking(
        &self,
        key: &str,
        tombstone: &VersionId,
    ) -> Result<CollectOutcome, WriteError> {
        Self::check_collect(key)?;
        self.submit_blocking(|reply| Command::Collect {
            key: key.to_string(),
            tombstone: tombstone.clone(),
            reply,
        })
        .unwrap_or(Err(WriteError::Closed))
    }

    /// Removes up to `limit` collected markers recorded before
    /// `older_than_ms` (the store's clock, milliseconds since the Unix
    /// epoch), in one transaction; returns how many. For the node's
    /// housekeeping, once no replica can still hold a version a marker
    /// refuses. Walks the `collected` table (one entry per collected
    /// address not yet pruned); markers that do not decode stay
    /// ([`Store::check`] reports them).
    pub async fn prune_collected(
        &self,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<u64, WriteError> {
        self.submit(|reply| Command::PruneCollected {
            older_than_ms,
            limit,
            reply,
        })
        .await
        .unwrap_or(Err(WriteError::Closed))
    }

    /// [`Store::prune_collected`] for synchronous callers.
    pub fn prune_collected_blocking(
        &self,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<u64, WriteError> {
        self.submit_blocking(|reply| Command::PruneCollected {
            older_than_ms,
            limit,
            reply,
        })
        .unwrap_or(Err(WriteError::Closed))
    }

    /// Compacts the database file if enough of it is free space (per
    /// [`crate::config::CompactionConfig`]), or regardless with `force`.
    /// Reads and writes wait while the file is compacted.
    pub async fn compact(&self, force: bool) -> Result<CompactionReport, MaintenanceError> {
        self.submit(|reply| Command::Compact { force, reply })
            .await
            .unwrap_or(Err(MaintenanceError::Closed))
    }

    /// [`Store::compact`] for synchronous callers.
    pub fn compact_blocking(&self, force: bool) -> Result<CompactionReport, MaintenanceError> {
        self.submit_blocking(|reply| Command::Compact { force, reply })
            .unwrap_or(Err(MaintenanceError::Closed))
    }
}

/// A backup-metadata write (`None`: remove), before its reply channel is
/// attached.
struct BackupWrite {
    id: String,
    value: Option<Vec<u8>>,
}

impl BackupWrite {
    fn with_reply(self, reply: oneshot::Sender<Result<bool, WriteError>>) -> Command {
        Command::Backup {
            id: self.id,
            value: self.value,
            reply,
        }
    }
}
