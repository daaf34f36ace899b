//! Batch operations: many items, a bounded worker pool, a result per item.
//!
//! Sealing is the expensive part of a write (one X25519 per reader role),
//! so a batch seals its items on a pool of `max_concurrent_ops` tasks and
//! then commits them in chunks, each chunk one durable transaction of the
//! local store. By default a failing item fails alone; with `atomic` every
//! item is validated and sealed first and either all are committed in one
//! transaction or none is; such a batch holds at most `store.max_batch`
//! items (the most the local store commits in one transaction). Running batches report progress, which the API
//! (`GET /v1/batches`) and the CLI show.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use slurp_protocol::{RoleName, UcxlAddress};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ContextStore, Prepared, PutRequest, PutResult, ReadResult};
use crate::error::StoreError;
use crate::tokens::Principal;

/// Finished batches kept for status queries.
const KEEP_FINISHED: usize = 32;

/// Items committed per transaction in a non-atomic batch.
const COMMIT_CHUNK: usize = 256;

// A batch's items and answers are the API's bodies.
pub use slurp_protocol::api::{
    BatchItemResult, BatchProgress, BatchPutItem as BatchStoreItem, BatchReport, ItemError,
};

/// The outcome of item `index`.
fn item_result<T>(index: usize, r: Result<T, StoreError>) -> BatchItemResult<T> {
    match r {
        Ok(v) => BatchItemResult {
            index,
            ok: Some(v),
            error: None,
        },
        Err(e) => BatchItemResult {
            index,
            ok: None,
            error: Some(ItemError {
                code: e.code().to_string(),
                message: e.to_string(),
            }),
        },
    }
}

struct Tracker {
    progress: Mutex<BatchProgress>,
}

impl Tracker {
    fn step(&self, ok: bool) {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.done += 1;
        if !ok {
            p.failed += 1;
        }
    }
}

/// The registry of batches.
#[derive(Default)]
pub struct Batches {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Arc<Tracker>>>,
}

impl Batches {
    fn start(&self, kind: &str, role: &RoleName, total: usize) -> (u64, Arc<Tracker>) {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let t = Arc::new(Tracker {
            progress: Mutex::new(BatchProgress {
                id,
                kind: kind.to_string(),
                role: role.clone(),
                total,
                done: 0,
                failed: 0,
                started_ms,
                finished: false,
            }),
        });
        let mut map = self.running.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id, t.clone());
        // Forget the oldest finished batches.
        let finished: Vec<u64> = map
            .iter()
            .filter(|(_, t)| t.progress.lock().map(|p| p.finished).unwrap_or(true))
            .map(|(id, _)| *id)
            .collect();
        if finished.len() > KEEP_FINISHED {
            for id in &finished[..finished.len() - KEEP_FINISHED] {
                map.remove(id);
            }
        }
        (id, t)
    }

    fn finish(&self, t: &Tracker) {
        t.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finished = true;
    }

    /// Running and recently finished batches, newest first.
    pub fn list(&self) -> Vec<BatchProgress> {
        let map = self.running.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .rev()
            .map(|t| t.progress.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Batches not finished yet.
    pub fn running(&self) -> usize {
        self.list().iter().filter(|p| !p.finished).count()
    }
}

fn check_size(store: &ContextStore, len: usize) -> Result<(), StoreError> {
    let max = store.options().batch_size;
    if len > max {
        return Err(StoreError::TooMany {
            what: "batch",
            len,
            max,
        });
    }
    if len == 0 {
        return Err(StoreError::BadRequest("batch has no items".into()));
    }
    Ok(())
}

impl ContextStore {
    /// Stores many contexts. See the module docs for `atomic`.
    pub async fn batch_put(
        &self,
        caller: &Principal,
        items: Vec<BatchStoreItem>,
        atomic: bool,
    ) -> Result<BatchReport<PutResult>, StoreError> {
        check_size(self, items.len())?;
        if atomic && matches!(self.tier(), super::Tier::Cluster(..)) {
            // Replicas commit each version on their own: all-or-nothing
            // across them needs a commit protocol the cluster does not have.
            return Err(StoreError::BadRequest(
                "atomic batches are not available in a cluster (replicas commit each version \
                 on their own); send the batch without \"atomic\""
                    .into(),
            ));
        }
        // An atomic batch is one transaction of the local store, whose
        // writer commits at most `store.max_batch` writes at once.
        let max_atomic = self.local().config().max_batch;
        if atomic && items.len() > max_atomic {
            return Err(StoreError::TooMany {
                what: "atomic batch (store.max_batch)",
                len: items.len(),
                max: max_atomic,
            });
        }
        let start = Instant::now();
        let total = items.len();
        let (id, tracker) = self.batches().start("put", &caller.role, total);
        // Phase 1: validate and seal on the worker pool.
        let pool = Arc::new(Semaphore::new(self.options().max_concurrent_ops.max(1)));
        let mut set = JoinSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let store = self.clone();
            let caller = caller.clone();
            let pool = pool.clone();
            set.spawn(async move {
                let _permit = pool.acquire_owned().await;
                let mut context = item.context;
                if let Some(roles) = item.roles {
                    context.encrypted_for = roles;
                }
                let req = PutRequest {
                    context,
                    change_reason: item.change_reason,
                    ttl_secs: item.ttl_secs,
                    expect_latest: None,
                };
                (
                    i,
                    store
                        .prepare_put(&caller, req, super::QuorumOpts::default())
                        .await
                        .map(|(p, _)| p),
                )
            });
        }
        let mut prepared: Vec<Option<Result<Prepared, StoreError>>> =
            (0..total).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| StoreError::Internal(e.to_string()))?;
            if r.is_err() {
                tracker.step(false);
            }
            prepared[i] = Some(r);
        }
        let any_failed = prepared.iter().any(|p| matches!(p, Some(Err(_))));
        let mut results: Vec<BatchItemResult<PutResult>> = Vec::with_capacity(total);
        let mut ready: Vec<(usize, Prepared)> = Vec::new();
        for (i, p) in prepared.into_iter().enumerate() {
            match p {
                Some(Ok(p)) => ready.push((i, p)),
                Some(Err(e)) => results.push(item_result(i, Err(e))),
                None => results.push(item_result(
                    i,
                    Err(StoreError::Internal("item was not processed".into())),
                )),
            }
        }
        let aborted = atomic && any_failed;
        if aborted {
            for (i, _) in ready.drain(..) {
                tracker.step(false);
                results.push(item_result(
                    i,
                    Err(StoreError::BadRequest(
                        "not stored: another item of this atomic batch failed".into(),
                    )),
                ));
            }
        } else {
            // Phase 2: durable commits, one transaction per chunk (the whole
            // batch in one when atomic).
            let chunk = if atomic {
                ready.len().max(1)
            } else {
                COMMIT_CHUNK
            };
            let mut ready = ready.into_iter().peekable();
            while ready.peek().is_some() {
                let part: Vec<(usize, Prepared)> = ready.by_ref().take(chunk).collect();
                let (idx, preps): (Vec<usize>, Vec<Prepared>) = part.into_iter().unzip();
                for (i, r) in idx
                    .into_iter()
                    .zip(self.commit_put(preps, super::QuorumOpts::default()).await)
                {
                    tracker.step(r.is_ok());
                    results.push(item_result(i, r));
                }
            }
        }
        Ok(self.report("batch_put", id, &tracker, start, aborted, results))
    }

    /// Reads many addresses, each like a get.
    pub async fn batch_get(
        &self,
        caller: &Principal,
        addresses: Vec<String>,
    ) -> Result<BatchReport<ReadResult>, StoreError> {
        check_size(self, addresses.len())?;
        let start = Instant::now();
        let total = addresses.len();
        let (id, tracker) = self.batches().start("get", &caller.role, total);
        let pool = Arc::new(Semaphore::new(self.options().max_concurrent_ops.max(1)));
        let mut set = JoinSet::new();
        for (i, a) in addresses.into_iter().enumerate() {
            let store = self.clone();
            let caller = caller.clone();
            let pool = pool.clone();
            set.spawn(async move {
                let _permit = pool.acquire_owned().await;
                let r = match UcxlAddress::parse(&a) {
                    Ok(addr) => store.get(&caller, &addr).await,
                    Err(e) => Err(StoreError::Address(e)),
                };
                (i, r)
            });
        }
        let mut results = Vec::with_capacity(total);
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| StoreError::Internal(e.to_string()))?;
            tracker.step(r.is_ok());
            results.push(item_result(i, r));
        }
        Ok(self.report("batch_get", id, &tracker, start, false, results))
    }

    /// Finishes a batch: marks it done, records it and builds the report.
    fn report<T>(
        &self,
        op: &'static str,
        id: u64,
        tracker: &Tracker,
        start: Instant,
        aborted: bool,
        mut results: Vec<BatchItemResult<T>>,
    ) -> BatchReport<T> {
        results.sort_by_key(|r| r.index);
        self.batches().finish(tracker);
        let total = results.len();
        let failed = results.iter().filter(|r| r.error.is_some()).count();
        self.metrics()
            .record(op, "store", failed == 0, start.elapsed());
        BatchReport {
            id,
            total,
            succeeded: total - failed,
            failed,
            aborted,
            took_ms: start.elapsed().as_millis() as u64,
            results,
        }
    }
}
