//! The index rebuild: the in-memory full-text index made again from the
//! sealed records of the local store.
//!
//! The index never touches disk (it holds plaintext), so every start
//! rebuilds it, and an operator can run it again after a failed one. It
//! is a worker like the others (`slurp workers` shows its passes): it reads
//! the store a page at a time, opens each newest version with the keys
//! this node holds, and counts what it cannot open (no key held, which is
//! normal on a replica, or corrupt) instead of failing on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use slurp_crypto::EnvelopeConfig;
use slurp_index::{
    ContextIndex, IndexEntry, RebuildItem, RebuildProgress, UnopenableEntry, UnopenableReason,
};
use slurp_storage::{Latest, ReadError, Store};

use super::{log_unopenable, open_for_index};
use crate::keys::Custody;
use crate::workers::PassReport;

/// The `index-rebuild` worker. It runs when triggered (once at start);
/// a rebuild that fails (the store cannot be read) leaves the index
/// marked failed, and running the worker again retries it.
pub struct IndexRebuild {
    pub index: Arc<ContextIndex>,
    pub local: Store,
    pub custody: Arc<Custody>,
    /// Set once a rebuild finished (readiness of the node).
    pub ready: Arc<AtomicBool>,
    pub control: RebuildControl,
}

impl crate::workers::Worker for IndexRebuild {
    fn name(&self) -> &'static str {
        REBUILD_WORKER
    }

    fn description(&self) -> &'static str {
        "rebuilds the full-text index from the store (once at start; run it again after a failed rebuild)"
    }

    fn interval(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    fn pass(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PassReport, String>> + Send + '_>>
    {
        Box::pin(async move {
            self.ready.store(false, Ordering::SeqCst);
            self.index
                .expect_rebuild(self.local.stats().ok().map(|s| s.keys));
            let running = self.control.start();
            let (index, local, keyring, control) = (
                self.index.clone(),
                self.local.clone(),
                self.custody.keyring(),
                self.control.clone(),
            );
            let p = tokio::task::spawn_blocking(move || {
                let _running = running;
                rebuild_index(&index, local, keyring, control)
            })
            .await
            .map_err(|e| e.to_string())??;
            self.ready.store(true, Ordering::SeqCst);
            Ok(PassReport {
                items: p.indexed,
                note: rebuild_note(&p),
            })
        })
    }
}

/// The worker that rebuilds the index.
pub const REBUILD_WORKER: &str = "index-rebuild";

/// Rebuilds `index` from every live record of `local`, logging the outcome.
fn rebuild_index(
    index: &ContextIndex,
    local: Store,
    keyring: Arc<slurp_crypto::Keyring>,
    control: RebuildControl,
) -> Result<RebuildProgress, String> {
    let start = Instant::now();
    let entries = RebuildEntries::new(local, keyring, control);
    match index.rebuild(entries, &mut |_| {}) {
        Ok(p) => {
            tracing::info!(
                indexed = p.indexed,
                unopenable_no_key = p.unopenable.no_key,
                unopenable_corrupt = p.unopenable.corrupt,
                rejected = p.rejected,
                took_ms = start.elapsed().as_millis() as u64,
                "index rebuilt from the store"
            );
            Ok(p)
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "index rebuild failed: search misses what it did not reach (`slurp workers --run index-rebuild` retries)"
            );
            Err(e.to_string())
        }
    }
}

/// What a rebuild did, for the worker's status.
fn rebuild_note(p: &RebuildProgress) -> String {
    let mut note = format!("indexed {} of {} records", p.indexed, p.read);
    let u = p.unopenable;
    if u.total() > 0 {
        note += &format!(
            "; {} held but not openable here (no key: {}, corrupt: {})",
            u.total(),
            u.no_key,
            u.corrupt
        );
    }
    if p.rejected > 0 {
        note += &format!("; {} invalid", p.rejected);
    }
    note + &format!(" in {} ms", p.elapsed.as_millis())
}

/// Index rebuilds in flight, and holds that pause them (for tests).
#[derive(Clone, Default)]
pub struct RebuildControl(Arc<RebuildControlInner>);

#[derive(Default)]
struct RebuildControlInner {
    running: AtomicUsize,
    /// Holds alive, and rebuilds waiting at them.
    held: Mutex<(usize, usize)>,
    released: Condvar,
}

/// One rebuild in flight, until dropped.
struct Running(RebuildControl);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Pauses index rebuilds while alive ([`Node::hold_index_rebuilds`]).
#[doc(hidden)]
pub struct RebuildHold(RebuildControl);

impl Drop for RebuildHold {
    fn drop(&mut self) {
        let inner = &self.0.0;
        inner.held.lock().unwrap_or_else(|e| e.into_inner()).0 -= 1;
        inner.released.notify_all();
    }
}

impl RebuildControl {
    fn start(&self) -> Running {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    pub fn hold(&self) -> RebuildHold {
        self.0.held.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        RebuildHold(self.clone())
    }

    pub fn waiting(&self) -> usize {
        self.0.held.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Blocks while a hold is alive.
    fn wait_while_held(&self) {
        let inner = &self.0;
        let mut g = inner.held.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            return;
        }
        g.1 += 1;
        let mut g = inner
            .released
            .wait_while(g, |(holds, _)| *holds > 0)
            .unwrap_or_else(|e| e.into_inner());
        g.1 -= 1;
    }
}

/// Every live context of the local store for the index: opened, or, when
/// this node cannot open it, counted as unopenable (with why).
struct RebuildEntries {
    local: Store,
    keyring: Arc<slurp_crypto::Keyring>,
    control: RebuildControl,
    envelope: EnvelopeConfig,
    page: std::vec::IntoIter<String>,
    after: Option<String>,
    done: bool,
}

impl RebuildEntries {
    fn new(local: Store, keyring: Arc<slurp_crypto::Keyring>, control: RebuildControl) -> Self {
        RebuildEntries {
            local,
            keyring,
            control,
            envelope: EnvelopeConfig::default(),
            page: Vec::new().into_iter(),
            after: None,
            done: false,
        }
    }

    /// The newest version of `key` for the index; `None` when it is
    /// deleted or gone. Only a failure to read the store is an error.
    fn entry(&self, key: &str) -> Result<Option<RebuildItem>, String> {
        let record = match self.local.latest(key) {
            Ok(Latest::Live { record, .. }) => record,
            Ok(_) => return Ok(None),
            Err(ReadError::Corrupt(e)) => {
                // The stored bytes do not decode: counted when the
                // record's metadata still reads, skipped otherwise.
                log_unopenable(key, UnopenableReason::Corrupt, &e.to_string());
                return Ok(self.local.latest_meta(key).ok().flatten().map(|(meta, _)| {
                    RebuildItem::Unopenable(UnopenableEntry {
                        key: key.to_string(),
                        version: meta.version,
                        readers: meta.readers,
                        reason: UnopenableReason::Corrupt,
                    })
                }));
            }
            Err(e) => return Err(format!("{key}: {e}")),
        };
        let meta = record.meta;
        Ok(Some(
            match open_for_index(&record.envelope, &self.envelope, &self.keyring) {
                Ok(context) => RebuildItem::Entry(IndexEntry {
                    key: key.to_string(),
                    version: meta.version,
                    readers: meta.readers,
                    context,
                }),
                Err((reason, error)) => {
                    log_unopenable(key, reason, &error);
                    RebuildItem::Unopenable(UnopenableEntry {
                        key: key.to_string(),
                        version: meta.version,
                        readers: meta.readers,
                        reason,
                    })
                }
            },
        ))
    }
}

impl Iterator for RebuildEntries {
    type Item = Result<RebuildItem, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                match self.entry(&key) {
                    Ok(Some(e)) => return Some(Ok(e)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.done {
                return None;
            }
            self.control.wait_while_held();
            match self.local.list_keys("", self.after.as_deref(), 1024) {
                Ok(page) => {
                    self.done = page.next_after.is_none();
                    self.after = page.next_after;
                    self.page = page
                        .keys
                        .into_iter()
                        .map(|k| k.key)
                        .collect::<Vec<_>>()
                        .into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.to_string()));
                }
            }
        }
    }
}
