//! Background workers: the TTL sweeper and the compactor.
//!
//! Each is a value the node spawns on tokio (`tokio::spawn(w.run(shutdown))`)
//! with its interval and throttle from [`crate::StoreConfig`], and each
//! keeps a [`WorkerStatus`] the node can show (idle or active, last run,
//! items processed, errors, next run). `run_once` does one pass on demand;
//! tests and the command line use it. The work itself happens on the
//! store's writer thread, one bounded transaction at a time, so a worker
//! never holds the database for long and foreground writes interleave with
//! its batches.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{CorruptValue, MaintenanceError};
use crate::observer::SweepEvent;
use crate::store::Store;
use crate::writer::CompactionReport;

/// Whether a worker is doing something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for its next run.
    Idle,
    /// In a pass.
    Active,
    /// `run` has returned (shutdown).
    Stopped,
}

/// What a worker reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub name: &'static str,
    pub state: WorkerState,
    /// Passes completed (successfully or not).
    pub runs: u64,
    /// Start of the last pass, milliseconds since the Unix epoch.
    pub last_started_ms: Option<u64>,
    pub last_duration: Option<Duration>,
    /// Items the last pass processed (versions swept; 1 per compaction).
    pub last_items: u64,
    pub items_total: u64,
    pub errors_total: u64,
    pub last_error: Option<String>,
    /// When `run` will start the next pass, milliseconds since the Unix
    /// epoch; `None` when not running on a schedule.
    pub next_run_ms: Option<u64>,
}

/// A shared view of a worker's status; clone it before spawning the
/// worker.
#[derive(Debug, Clone)]
pub struct StatusHandle(Arc<Mutex<WorkerStatus>>);

impl StatusHandle {
    fn new(name: &'static str) -> Self {
        StatusHandle(Arc::new(Mutex::new(WorkerStatus {
            name,
            state: WorkerState::Idle,
            runs: 0,
            last_started_ms: None,
            last_duration: None,
            last_items: 0,
            items_total: 0,
            errors_total: 0,
            last_error: None,
            next_run_ms: None,
        })))
    }

    /// The current status.
    pub fn get(&self) -> WorkerStatus {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn start(&self, now_ms: u64) {
        self.update(|s| {
            s.state = WorkerState::Active;
            s.last_started_ms = Some(now_ms);
        });
    }

    fn finish(&self, started: Instant, items: u64, errors: u64, last_error: Option<String>) {
        self.update(|s| {
            s.state = WorkerState::Idle;
            s.runs += 1;
            s.last_duration = Some(started.elapsed());
            s.last_items = items;
            s.items_total += items;
            s.errors_total += errors;
            if last_error.is_some() {
                s.last_error = last_error;
            }
        });
    }
}

/// Sleeps `interval` between passes until `shutdown` completes; a pass in
/// progress is abandoned at shutdown (each of its transactions is atomic).
async fn schedule<F, Fut>(
    store: &Store,
    status: &StatusHandle,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        let next = store
            .shared()
            .now_ms()
            .saturating_add(interval.as_millis() as u64);
        status.update(|s| s.next_run_ms = Some(next));
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = pass() => {}
        }
    }
    status.update(|s| {
        s.state = WorkerState::Stopped;
        s.next_run_ms = None;
    });
}

/// What one sweeper pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepPass {
    pub removed: u64,
    pub transactions: u32,
    /// Versions left in place because a value in the way is corrupt.
    pub errors: Vec<CorruptValue>,
    /// Whether the pass stopped at `max_batches_per_pass` with expired
    /// versions still waiting.
    pub more: bool,
    /// Hints removed with the versions they named.
    pub hints_removed: u64,
}

/// Deletes expired versions in bounded batches.
pub struct Sweeper {
    store: Store,
    status: StatusHandle,
}

impl Sweeper {
    pub fn new(store: Store) -> Self {
        Sweeper {
            store,
            status: StatusHandle::new("ttl-sweeper"),
        }
    }

    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// One pass: transactions of `sweep.batch` deletions, `sweep.pause_ms`
    /// apart, until nothing expired is left or `sweep.max_batches_per_pass`
    /// transactions ran.
    pub async fn run_once(&self) -> Result<SweepPass, MaintenanceError> {
        let cfg = self.store.config().sweep.clone();
        let started = Instant::now();
        self.status.start(self.store.shared().now_ms());
        let mut pass = SweepPass::default();
        let result = loop {
            match self.store.sweep_expired(cfg.batch).await {
                Ok(r) => {
                    pass.transactions += 1;
                    pass.removed += r.removed;
                    pass.hints_removed += r.hints_removed;
                    pass.errors.extend(r.errors);
                    pass.more = r.more;
                    if !r.more || pass.transactions >= cfg.max_batches_per_pass {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
            if cfg.pause_ms > 0 {
                tokio::time::sleep(Duration::from_millis(cfg.pause_ms)).await;
            }
        };
        let errors = pass.errors.len() as u64 + u64::from(result.is_err());
        let last_error = match &result {
            Err(e) => Some(e.to_string()),
            Ok(()) => pass.errors.last().map(|c| c.to_string()),
        };
        self.status
            .finish(started, pass.removed, errors, last_error);
        self.store.shared().observer.on_sweep(&SweepEvent {
            removed: pass.removed,
            transactions: pass.transactions,
            errors,
            duration: started.elapsed(),
        });
        result.map(|()| pass)
    }

    /// Runs a pass every `sweep.interval_ms` until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let interval = Duration::from_millis(self.store.config().sweep.interval_ms);
        let (store, status) = (self.store.clone(), self.status.clone());
        schedule(&store, &status, interval, shutdown, || async {
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "ttl sweep failed");
            }
        })
        .await;
    }
}

/// Compacts the database file when enough of it is free space.
pub struct Compactor {
    store: Store,
    status: StatusHandle,
}

impl Compactor {
    pub fn new(store: Store) -> Self {
        Compactor {
            store,
            status: StatusHandle::new("compactor"),
        }
    }

    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// One check: compacts if the thresholds of `compaction` are met, or
    /// regardless with `force`.
    pub async fn run_once(&self, force: bool) -> Result<CompactionReport, MaintenanceError> {
        let started = Instant::now();
        self.status.start(self.store.shared().now_ms());
        let r = self.store.compact(force).await;
        let (items, errors, last_error) = match &r {
            Ok(rep) => (u64::from(rep.compacted), 0, None),
            Err(e) => (0, 1, Some(e.to_string())),
        };
        self.status.finish(started, items, errors, last_error);
        r
    }

    /// Runs a check every `compaction.interval_ms` until `shutdown`
    /// completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let interval = Duration::from_millis(self.store.config().compaction.interval_ms);
        let (store, status) = (self.store.clone(), self.status.clone());
        schedule(&store, &status, interval, shutdown, || async {
            if let Err(e) = self.run_once(false).await {
                tracing::warn!(error = %e, "compaction failed");
            }
        })
        .await;
    }
}
