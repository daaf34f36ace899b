//! Background workers: every periodic job of a node, visible and throttled.
//!
//! Sweeping expired records, compaction, index merging and (later) hinted
//! handoff, anti-entropy, rebalancing, key rotation and backups all share
//! one shape: run a *pass* now and then, report what it did. The libraries
//! provide the passes; this module schedules them, records their status
//! (idle/active, runs, items, errors, last error, next run), feeds the
//! metrics, and lets an operator trigger a pass now from the API or the
//! CLI. Nothing runs in the background without showing up here.
//!
//! A pass that fails after the node began shutting down was cut short by
//! the shutdown (the network, store or thread pool it used is going away):
//! it is logged at debug level and noted as cancelled, not counted as an
//! error in the status or the metrics.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};

use crate::metrics::{Metrics, WorkerLabels};

/// What one pass of a worker reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Items handled (records swept, segments merged, ...).
    pub items: u64,
    /// A short human note ("compacted 3.2 MiB"), shown in status.
    pub note: String,
}

/// A background job as a type, beside the data it owns: its name and
/// description (what `slurp workers` shows), how often it runs, and one
/// pass. [`Workers::start`] schedules it; between passes it waits for its
/// interval or a trigger (`slurp workers run NAME`, or the node itself
/// when there is work, such as a member connecting for anti-entropy).
pub trait Worker: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// Time between passes; zero runs it only when triggered.
    fn interval(&self) -> Duration;
    /// One pass: what it did, or why it failed.
    fn pass(&self) -> Pin<Box<dyn Future<Output = Result<PassReport, String>> + Send + '_>>;
}

/// A worker pass: an async function returning what it did.
pub type PassFn =
    Box<dyn FnMut() -> Pin<Box<dyn Future<Output = Result<PassReport, String>> + Send>> + Send>;

/// A worker's state and status are API types: the CLI reads them back.
pub use slurp_protocol::api::{WorkerState, WorkerStatus};

struct Slot {
    status: Mutex<WorkerStatus>,
    trigger: Notify,
}

/// All workers of a node.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Mutex<BTreeMap<String, Arc<Slot>>>>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A worker name that is not registered.
#[derive(Debug, thiserror::Error)]
#[error("no worker named {0:?}")]
pub struct NoSuchWorker(pub String);

impl Workers {
    /// A registry whose workers stop when `shutdown` turns true.
    pub fn new(metrics: Metrics, shutdown: watch::Receiver<bool>) -> Self {
        Workers {
            inner: Arc::default(),
            metrics,
            shutdown,
        }
    }

    /// Starts a worker that runs `pass` every `interval` (and whenever
    /// triggered). A zero interval means "only when triggered".
    pub fn spawn(&self, name: &str, description: &str, interval: Duration, mut pass: PassFn) {
        let worker = Arc::new(Slot {
            status: Mutex::new(WorkerStatus {
                name: name.to_string(),
                description: description.to_string(),
                state: WorkerState::Idle,
                interval_ms: interval.as_millis() as u64,
                runs: 0,
                errors: 0,
                items_total: 0,
                last_items: 0,
                last_note: String::new(),
                last_error: None,
                last_started_ms: None,
                last_finished_ms: None,
                last_duration_ms: None,
                next_run_ms: (!interval.is_zero()).then(|| now_ms() + interval.as_millis() as u64),
            }),
            trigger: Notify::new(),
        });
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), worker.clone());
        let labels = WorkerLabels {
            worker: name.to_string(),
        };
        let metrics = self.metrics.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let sleep = async {
                    if interval.is_zero() {
                        std::future::pending::<()>().await
                    } else {
                        tokio::time::sleep(interval).await
                    }
                };
                tokio::select! {
                    _ = sleep => {}
                    _ = worker.trigger.notified() => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
                let started = now_ms();
                {
                    let mut s = worker.status.lock().unwrap_or_else(|e| e.into_inner());
                    s.state = WorkerState::Active;
                    s.last_started_ms = Some(started);
                }
                metrics.worker_active.get_or_create(&labels).set(1);
                let result = pass().await;
                let finished = now_ms();
                metrics.worker_active.get_or_create(&labels).set(0);
                metrics.worker_runs.get_or_create(&labels).inc();
                metrics
                    .worker_last_run
                    .get_or_create(&labels)
                    .set((finished / 1000) as i64);
                let mut s = worker.status.lock().unwrap_or_else(|e| e.into_inner());
                s.state = WorkerState::Idle;
                s.runs += 1;
                s.last_finished_ms = Some(finished);
                s.last_duration_ms = Some(finished.saturating_sub(started));
                s.next_run_ms =
                    (!interval.is_zero()).then(|| finished + interval.as_millis() as u64);
                match result {
                    Ok(report) => {
                        s.items_total += report.items;
                        s.last_items = report.items;
                        s.last_note = report.note;
                        s.last_error = None;
                        metrics
                            .worker_items
                            .get_or_create(&labels)
                            .inc_by(report.items);
                    }
                    // A pass that fails once shutdown has begun was cut
                    // short by it (the network, store or blocking pool
                    // it used is going away): normal, not an error.
                    Err(e) if *shutdown.borrow() => {
                        tracing::debug!(worker = %s.name, error = %e, "worker pass cancelled by shutdown");
                        s.last_note = "cancelled by shutdown".into();
                    }
                    Err(e) => {
                        tracing::warn!(worker = %s.name, error = %e, "worker pass failed");
                        s.errors += 1;
                        s.last_error = Some(e);
                        metrics.worker_errors.get_or_create(&labels).inc();
                    }
                }
            }
            let mut s = worker.status.lock().unwrap_or_else(|e| e.into_inner());
            s.state = WorkerState::Stopped;
            s.next_run_ms = None;
        });
    }

    /// Starts `worker` (see [`Workers::spawn`]).
    pub fn start(&self, worker: std::sync::Arc<dyn Worker>) {
        let (name, description, interval) =
            (worker.name(), worker.description(), worker.interval());
        self.spawn(
            name,
            description,
            interval,
            Box::new(move || {
                let w = worker.clone();
                Box::pin(async move { w.pass().await })
            }),
        );
    }

    /// Asks a worker to run a pass now.
    pub fn trigger(&self, name: &str) -> Result<(), NoSuchWorker> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let w = map
            .get(name)
            .ok_or_else(|| NoSuchWorker(name.to_string()))?;
        w.trigger.notify_one();
        Ok(())
    }

    /// Status of every worker, by name.
    pub fn list(&self) -> Vec<WorkerStatus> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.values()
            .map(|w| w.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Status of one worker.
    pub fn get(&self, name: &str) -> Option<WorkerStatus> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name)
            .map(|w| w.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    async fn wait_for(workers: &Workers, name: &str, runs: u64) -> WorkerStatus {
        for _ in 0..200 {
            let s = workers.get(name).unwrap();
            if s.runs >= runs && s.state == WorkerState::Idle {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("worker {name} did not reach {runs} runs");
    }

    #[tokio::test]
    async fn triggered_passes_report_items_and_errors() {
        let (tx, rx) = watch::channel(false);
        let metrics = Metrics::new();
        let workers = Workers::new(metrics.clone(), rx);
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        workers.spawn(
            "sweeper",
            "deletes expired records",
            Duration::ZERO,
            Box::new(move || {
                let c = c.clone();
                Box::pin(async move {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    if n == 1 {
                        Err("disk on fire".to_string())
                    } else {
                        Ok(PassReport {
                            items: 5,
                            note: "swept".into(),
                        })
                    }
                })
            }),
        );
        assert_eq!(workers.get("sweeper").unwrap().runs, 0);
        workers.trigger("sweeper").unwrap();
        let s = wait_for(&workers, "sweeper", 1).await;
        assert_eq!(s.items_total, 5);
        workers.trigger("sweeper").unwrap();
        let s = wait_for(&workers, "sweeper", 2).await;
        assert_eq!(s.errors, 1);
        assert_eq!(s.last_error.as_deref(), Some("disk on fire"));
        assert!(workers.trigger("nope").is_err());
        let text = metrics.encode();
        assert!(
            text.contains("slurp_worker_items_total{worker=\"sweeper\"} 5"),
            "{text}"
        );
        assert!(text.contains("slurp_worker_errors_total{worker=\"sweeper\"} 1"));
        tx.send(true).unwrap();
        for _ in 0..100 {
            if workers.get("sweeper").unwrap().state == WorkerState::Stopped {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("worker did not stop");
    }

    /// Collects formatted log lines.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn a_pass_cut_short_by_shutdown_is_not_an_error() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // The test runtime has one thread: the worker task logs here too.
        let _guard = tracing::subscriber::set_default(subscriber);
        let (tx, rx) = watch::channel(false);
        let metrics = Metrics::new();
        let workers = Workers::new(metrics.clone(), rx.clone());
        let started = Arc::new(Notify::new());
        let s2 = started.clone();
        workers.spawn(
            "handoff",
            "hands versions back",
            Duration::ZERO,
            Box::new(move || {
                let (mut rx, started) = (rx.clone(), s2.clone());
                Box::pin(async move {
                    started.notify_one();
                    // Like a pass whose network goes away mid-pass.
                    let _ = rx.wait_for(|stop| *stop).await;
                    Err("the network is shut down".to_string())
                })
            }),
        );
        workers.trigger("handoff").unwrap();
        started.notified().await;
        tx.send(true).unwrap();
        let mut s = workers.get("handoff").unwrap();
        for _ in 0..200 {
            if s.state == WorkerState::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            s = workers.get("handoff").unwrap();
        }
        assert_eq!(s.state, WorkerState::Stopped);
        assert_eq!(s.errors, 0, "{s:?}");
        assert_eq!(s.last_error, None);
        assert_eq!(s.last_note, "cancelled by shutdown");
        let text = metrics.encode();
        assert!(
            !text.contains("slurp_worker_errors_total{worker=\"handoff\"} 1"),
            "{text}"
        );
        let log = logs.text();
        assert!(!log.contains("WARN"), "{log}");
        assert!(log.contains("worker pass cancelled by shutdown"), "{log}");
    }

    #[tokio::test]
    async fn interval_runs_on_its_own() {
        let (_tx, rx) = watch::channel(false);
        let workers = Workers::new(Metrics::new(), rx);
        workers.spawn(
            "tick",
            "",
            Duration::from_millis(20),
            Box::new(|| Box::pin(async { Ok(PassReport::default()) })),
        );
        let s = wait_for(&workers, "tick", 2).await;
        assert!(s.next_run_ms.is_some());
    }
}
