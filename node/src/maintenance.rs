//! The local upkeep of a node as [`Worker`] types: sweeping expired
//! versions, compacting the store file, merging index segments and
//! refreshing the gauges. Each wraps the part it keeps (the storage and
//! index crates own the work; these say when it runs and what it did).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use slurp_index::ContextIndex;
use slurp_storage::{Store, Sweeper};

use crate::metrics::Metrics;
use crate::net::NetClient;
use crate::store::ContextStore;
use crate::workers::{PassReport, Worker};

type Pass<'a> = Pin<Box<dyn Future<Output = Result<PassReport, String>> + Send + 'a>>;

/// Deletes expired versions: `store.sweep.batch` versions per transaction,
/// `store.sweep.pause_ms` apart, at most `store.sweep.max_batches_per_pass`.
pub struct Sweep {
    pub sweeper: Sweeper,
    pub interval: Duration,
}

impl Worker for Sweep {
    fn name(&self) -> &'static str {
        "sweeper"
    }

    fn description(&self) -> &'static str {
        "deletes expired versions from the local store"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            let p = self.sweeper.run_once().await.map_err(|e| e.to_string())?;
            let mut note = format!("removed {} expired versions", p.removed);
            if !p.errors.is_empty() {
                note += &format!(", {} left in place (corrupt)", p.errors.len());
            }
            if p.more {
                note += ", more left for the next pass";
            }
            Ok(PassReport {
                items: p.removed,
                note,
            })
        })
    }
}

/// Compacts the store file when enough of it is free.
pub struct Compact {
    pub store: Store,
    pub interval: Duration,
}

impl Worker for Compact {
    fn name(&self) -> &'static str {
        "compactor"
    }

    fn description(&self) -> &'static str {
        "compacts the local store file"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            let r = self.store.compact(false).await.map_err(|e| e.to_string())?;
            Ok(PassReport {
                items: u64::from(r.compacted),
                note: format!("{} -> {} bytes", r.file_bytes_before, r.file_bytes_after),
            })
        })
    }
}

/// Merges the full-text index into one segment.
pub struct IndexMerge {
    pub index: Arc<ContextIndex>,
    pub interval: Duration,
}

impl Worker for IndexMerge {
    fn name(&self) -> &'static str {
        "index-merge"
    }

    fn description(&self) -> &'static str {
        "merges full-text index segments"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            let index = self.index.clone();
            let r = tokio::task::spawn_blocking(move || index.optimize())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok(PassReport {
                items: r.segments_before.saturating_sub(r.segments_after) as u64,
                note: format!("{} -> {} segments", r.segments_before, r.segments_after),
            })
        })
    }
}

/// Refreshes the store, index, cache and swarm gauges.
pub struct Gauges {
    pub store: ContextStore,
    pub metrics: Metrics,
    pub net: NetClient,
}

impl Worker for Gauges {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn description(&self) -> &'static str {
        "refreshes store, index and cache gauges"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            let (store, metrics) = (&self.store, &self.metrics);
            let n = self.net.stats();
            store.cache().maintain().await;
            for (name, v) in [
                ("connections_established", n.connections_established),
                ("connections_closed", n.connections_closed),
                ("dial_failures", n.dial_failures),
                ("outbound_requests", n.outbound_requests),
                ("outbound_failures", n.outbound_failures),
                ("outbound_timeouts", n.outbound_timeouts),
                ("inbound_requests", n.inbound_requests),
                ("inbound_failures", n.inbound_failures),
                ("oversized_messages", n.oversized_messages),
                ("inbound_dropped", n.inbound_dropped),
                ("kad_queries", n.kad_queries),
            ] {
                metrics
                    .net_counters
                    .get_or_create(&crate::metrics::CounterLabels { counter: name })
                    .set(v as i64);
            }
            let s = store.local().stats().map_err(|e| e.to_string())?;
            metrics.store_keys.set(s.keys as i64);
            metrics.store_versions.set(s.versions as i64);
            metrics.store_bytes.set(s.file_bytes as i64);
            if let Some(index) = store.index() {
                let st = index.status().map_err(|e| e.to_string())?;
                metrics.index_docs.set(st.docs as i64);
                metrics.index_segments.set(st.segments as i64);
            }
            Ok(PassReport::default())
        })
    }
}
