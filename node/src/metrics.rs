//! Prometheus metrics of a node, in one registry.
//!
//! Every operation is counted and timed by tier (cache, local, index,
//! crypto, api), so an operator can see where time goes; background workers
//! report their state here too. The libraries below the node stay free of
//! any metrics dependency: they expose observer hooks, and the node feeds
//! those hooks into this registry.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An operation on one tier, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
    pub tier: &'static str,
    pub outcome: &'static str,
}

/// An operation on one tier (for latency).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub op: &'static str,
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterLabels {
    pub counter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~42 s, doubling.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 23))
}

/// All metrics of a node. Cheap to clone (every metric is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub ops: Family<OpLabels, Counter>,
    pub op_seconds: Family<TierLabels, Histogram, fn() -> Histogram>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_evictions: Family<CauseLabels, Counter>,
    pub cache_entries: Gauge,
    pub cache_bytes: Gauge,
    pub store_keys: Gauge,
    pub store_versions: Gauge,
    pub store_bytes: Gauge,
    pub store_commits: Counter,
    pub store_committed_writes: Counter,
    pub index_docs: Gauge,
    pub index_segments: Gauge,
    pub index_ready: Gauge,
    pub index_unopenable: Family<ReasonLabels, Gauge>,
    /// Key rotation: envelopes rewrapped or left, by outcome.
    pub key_rewraps: Family<CauseLabels, Counter>,
    /// Local versions still sealed to a retired epoch after the last pass.
    pub key_rewrap_pending: Gauge,
    pub worker_active: Family<WorkerLabels, Gauge>,
    pub worker_runs: Family<WorkerLabels, Counter>,
    pub worker_items: Family<WorkerLabels, Counter>,
    pub worker_errors: Family<WorkerLabels, Counter>,
    pub worker_last_run: Family<WorkerLabels, Gauge>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub audit_entries: Family<CauseLabels, Counter>,
    pub cluster_layout_version: Gauge,
    pub cluster_peers_up: Gauge,
    pub cluster_request_failures: Family<PeerLabels, Counter>,
    /// Failure-detector probes sent (heartbeat exchanges and hellos).
    pub cluster_probes: Counter,
    /// Layout members the failure detector suspects.
    pub cluster_peers_suspected: Gauge,
    pub replication_events: Family<CauseLabels, Counter>,
    pub hints_pending: Gauge,
    /// Anti-entropy: partitions compared and differing, versions and
    /// bytes sent and received, by what.
    pub anti_entropy: Family<CauseLabels, Counter>,
    /// Partitions this node replicates, by anti-entropy state
    /// (converged, differing, unknown).
    pub anti_entropy_partitions: Family<StateLabels, Gauge>,
    /// Layout transitions: versions and bytes pulled, partitions pulled
    /// and dropped, transitions ended, by what.
    pub rebalance: Family<CauseLabels, Counter>,
    /// Partitions this node must pull in the current transition, by state
    /// (done, pending).
    pub rebalance_partitions: Family<StateLabels, Gauge>,
    /// Layouts this node holds active (1 outside a transition).
    pub layouts_active: Gauge,
    /// API requests being served (background transfers yield to them).
    pub api_in_flight: Gauge,
    pub net_counters: Family<CounterLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("slurp");
        let ops = Family::<OpLabels, Counter>::default();
        r.register("ops", "Operations by kind, tier and outcome", ops.clone());
        let op_seconds: Family<TierLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        r.register(
            "op_duration_seconds",
            "Latency of operations by kind and tier",
            op_seconds.clone(),
        );
        let cache_hits = Counter::default();
        r.register(
            "cache_hits",
            "Cache lookups that found an entry",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        r.register(
            "cache_misses",
            "Cache lookups that found nothing",
            cache_misses.clone(),
        );
        let cache_evictions = Family::<CauseLabels, Counter>::default();
        r.register(
            "cache_evictions",
            "Cache entries evicted, by cause (size, expired)",
            cache_evictions.clone(),
        );
        let cache_entries = Gauge::default();
        r.register(
            "cache_entries",
            "Entries in the cache",
            cache_entries.clone(),
        );
        let cache_bytes = Gauge::default();
        r.register(
            "cache_bytes",
            "Weighted size of the cache in bytes",
            cache_bytes.clone(),
        );
        let store_keys = Gauge::default();
        r.register(
            "store_keys",
            "Addresses in the local store",
            store_keys.clone(),
        );
        let store_versions = Gauge::default();
        r.register(
            "store_versions",
            "Versions in the local store",
            store_versions.clone(),
        );
        let store_bytes = Gauge::default();
        r.register(
            "store_bytes",
            "Size of the local store file in bytes",
            store_bytes.clone(),
        );
        let store_commits = Counter::default();
        r.register(
            "store_commits",
            "Durable transactions committed",
            store_commits.clone(),
        );
        let store_committed_writes = Counter::default();
        r.register(
            "store_committed_writes",
            "Writes made durable (a commit carries one or more)",
            store_committed_writes.clone(),
        );
        let index_docs = Gauge::default();
        r.register(
            "index_docs",
            "Documents in the full-text index",
            index_docs.clone(),
        );
        let index_segments = Gauge::default();
        r.register(
            "index_segments",
            "Segments in the full-text index",
            index_segments.clone(),
        );
        let index_ready = Gauge::default();
        r.register(
            "index_ready",
            "1 when the full-text index holds everything in the store; 0 while it is rebuilt from the store or after a failed rebuild",
            index_ready.clone(),
        );
        let index_unopenable = Family::<ReasonLabels, Gauge>::default();
        r.register(
            "index_unopenable_records",
            "Records this node holds but cannot open, so cannot index or search, by reason: no_key (sealed to roles it holds no key for; normal on a replica), corrupt",
            index_unopenable.clone(),
        );
        for reason in [
            slurp_index::UnopenableReason::NoKey,
            slurp_index::UnopenableReason::Corrupt,
        ] {
            index_unopenable
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .set(0);
        }
        let key_rewraps = Family::<CauseLabels, Counter>::default();
        r.register(
            "key_rewraps",
            "Envelopes the key-rewrap worker handled after a rotation, by outcome: rewrapped (sealed to the current epochs), unopenable (sealed to roles this node holds no key for; another replica rewraps its copy), failed",
            key_rewraps.clone(),
        );
        let key_rewrap_pending = Gauge::default();
        r.register(
            "key_rewrap_pending",
            "Versions in the local store still sealed to a role key epoch that is no longer current, after the last key-rewrap pass",
            key_rewrap_pending.clone(),
        );
        let worker_active = Family::<WorkerLabels, Gauge>::default();
        r.register(
            "worker_active",
            "1 while a background worker is working",
            worker_active.clone(),
        );
        let worker_runs = Family::<WorkerLabels, Counter>::default();
        r.register(
            "worker_runs",
            "Passes run by each background worker",
            worker_runs.clone(),
        );
        let worker_items = Family::<WorkerLabels, Counter>::default();
        r.register(
            "worker_items",
            "Items processed by each background worker",
            worker_items.clone(),
        );
        let worker_errors = Family::<WorkerLabels, Counter>::default();
        r.register(
            "worker_errors",
            "Failed passes of each background worker",
            worker_errors.clone(),
        );
        let worker_last_run = Family::<WorkerLabels, Gauge>::default();
        r.register(
            "worker_last_run_timestamp_seconds",
            "Unix time of the last finished pass of each worker",
            worker_last_run.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        r.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_seconds.clone(),
        );
        let audit_entries = Family::<CauseLabels, Counter>::default();
        r.register(
            "audit_entries",
            "Access decisions written to the audit log, by decision",
            audit_entries.clone(),
        );
        let cluster_layout_version = Gauge::default();
        r.register(
            "cluster_layout_version",
            "Version of the cluster layout this node holds (0: none)",
            cluster_layout_version.clone(),
        );
        let cluster_peers_up = Gauge::default();
        r.register(
            "cluster_peers_up",
            "Peers that answered the last membership probe",
            cluster_peers_up.clone(),
        );
        let cluster_request_failures = Family::<PeerLabels, Counter>::default();
        r.register(
            "cluster_request_failures",
            "Requests to a peer that failed or timed out, by peer (id suffix)",
            cluster_request_failures.clone(),
        );
        let cluster_probes = Counter::default();
        r.register(
            "cluster_probes",
            "Membership probes sent (heartbeat exchanges with a few members each round)",
            cluster_probes.clone(),
        );
        let cluster_peers_suspected = Gauge::default();
        r.register(
            "cluster_peers_suspected",
            "Layout members the failure detector counts as down",
            cluster_peers_suspected.clone(),
        );
        let replication_events = Family::<CauseLabels, Counter>::default();
        r.register(
            "replication_events",
            "Replication outcomes: replica_ack, replica_fail, hinted, handed_off, hinted_copies_dropped, hints_redirected, quorum_failed, read_repair, read_repair_skipped, tombstones_collected",
            replication_events.clone(),
        );
        let hints_pending = Gauge::default();
        r.register(
            "hints_pending",
            "Versions this node holds for a down replica (hinted handoff)",
            hints_pending.clone(),
        );
        let anti_entropy = Family::<CauseLabels, Counter>::default();
        r.register(
            "anti_entropy",
            "Anti-entropy: partitions_compared, partitions_differing, versions_sent, versions_received, versions_refused, bytes_sent, bytes_received",
            anti_entropy.clone(),
        );
        let anti_entropy_partitions = Family::<StateLabels, Gauge>::default();
        r.register(
            "anti_entropy_partitions",
            "Partitions this node replicates, by anti-entropy state: converged, differing, unknown (not yet compared with every co-replica)",
            anti_entropy_partitions.clone(),
        );
        let rebalance = Family::<CauseLabels, Counter>::default();
        r.register(
            "rebalance",
            "Layout transitions: versions_pulled, bytes_pulled, partitions_pulled, versions_handed_off, partitions_dropped, versions_dropped, transitions_ended",
            rebalance.clone(),
        );
        let rebalance_partitions = Family::<StateLabels, Gauge>::default();
        r.register(
            "rebalance_partitions",
            "Partitions this node must pull for the layout it moves to, by state: done, pending",
            rebalance_partitions.clone(),
        );
        let layouts_active = Gauge::default();
        r.register(
            "layouts_active",
            "Layouts this node holds active: 1, or more while a layout transition is under way",
            layouts_active.clone(),
        );
        let api_in_flight = Gauge::default();
        r.register(
            "api_requests_in_flight",
            "API requests being served now",
            api_in_flight.clone(),
        );
        let net_counters = Family::<CounterLabels, Gauge>::default();
        r.register(
            "net",
            "Swarm counters since start (connections, dials, requests, failures, timeouts, oversized messages, dropped inbound requests, Kademlia queries), by counter",
            net_counters.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            cluster_layout_version,
            cluster_peers_up,
            cluster_request_failures,
            cluster_probes,
            cluster_peers_suspected,
            replication_events,
            hints_pending,
            anti_entropy,
            anti_entropy_partitions,
            rebalance,
            rebalance_partitions,
            layouts_active,
            api_in_flight,
            net_counters,
            ops,
            op_seconds,
            cache_hits,
            cache_misses,
            cache_evictions,
            cache_entries,
            cache_bytes,
            store_keys,
            store_versions,
            store_bytes,
            store_commits,
            store_committed_writes,
            index_docs,
            index_segments,
            index_ready,
            index_unopenable,
            key_rewraps,
            key_rewrap_pending,
            worker_active,
            worker_runs,
            worker_items,
            worker_errors,
            worker_last_run,
            http_requests,
            http_seconds,
            audit_entries,
        }
    }

    /// Counts one replication outcome (see `replication_events`).
    pub fn replication(&self, cause: &'static str, n: u64) {
        self.replication_events
            .get_or_create(&CauseLabels { cause })
            .inc_by(n);
    }

    /// Counts one operation and records its latency.
    pub fn record(&self, op: &'static str, tier: &'static str, ok: bool, took: Duration) {
        self.ops
            .get_or_create(&OpLabels {
                op,
                tier,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        self.op_seconds
            .get_or_create(&TierLabels { op, tier })
            .observe(took.as_secs_f64());
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The registry in the classic Prometheus text format (0.0.4), for
    /// scrapers and tools (such as `promtool check metrics`) that do not
    /// speak OpenMetrics. The two differ for counters, whose `HELP` and
    /// `TYPE` lines name the `_total` sample in the classic format, and in
    /// the `# EOF` trailer.
    pub fn encode_classic(&self) -> String {
        let open = self.encode();
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len() + 256);
        for line in open.lines() {
            if line == "# EOF" {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{p}{name}_total {tail}"))
            });
            match renamed {
                Some(l) => out.push_str(&l),
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }
}

/// Feeds the local store's hooks into the registry.
pub struct StoreMetrics(pub Metrics);

impl slurp_storage::StoreObserver for StoreMetrics {
    fn on_commit(&self, e: &slurp_storage::CommitEvent) {
        self.0.store_commits.inc();
        self.0.store_committed_writes.inc_by(e.inserted as u64);
        self.0.record("commit", "local", e.ok, e.duration);
    }

    fn on_sweep(&self, e: &slurp_storage::SweepEvent) {
        self.0.record("sweep", "local", e.errors == 0, e.duration);
    }

    fn on_compaction(&self, e: &slurp_storage::CompactionEvent) {
        self.0.record("compact", "local", e.ok, e.duration);
    }
}

/// Feeds the index's hooks into the registry.
pub struct IndexMetrics(pub Metrics);

impl slurp_index::IndexObserver for IndexMetrics {
    fn on_commit(&self, e: &slurp_index::CommitEvent) {
        self.0.record("commit", "index", true, e.took);
    }

    fn on_unopenable(&self, counts: &slurp_index::UnopenableCounts) {
        for reason in [
            slurp_index::UnopenableReason::NoKey,
            slurp_index::UnopenableReason::Corrupt,
        ] {
            self.0
                .index_unopenable
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .set(counts.get(reason) as i64);
        }
    }

    fn on_coverage(&self, coverage: &slurp_index::Coverage) {
        self.0.index_ready.set(i64::from(coverage.is_complete()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_our_names() {
        let m = Metrics::new();
        m.record("get", "cache", true, Duration::from_micros(50));
        m.cache_hits.inc();
        let text = m.encode();
        assert!(text.contains("slurp_ops_total{op=\"get\",tier=\"cache\",outcome=\"ok\"} 1"));
        assert!(text.contains("slurp_cache_hits_total 1"));
        assert!(text.contains("slurp_op_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
        let classic = m.encode_classic();
        assert!(classic.contains("# TYPE slurp_cache_hits_total counter"));
        assert!(classic.contains("# HELP slurp_cache_hits_total "));
        assert!(classic.contains("# TYPE slurp_cache_entries gauge"));
        assert!(classic.contains("slurp_index_unopenable_records{reason=\"no_key\"} 0"));
        assert!(classic.contains("slurp_index_unopenable_records{reason=\"corrupt\"} 0"));
        assert!(!classic.contains("# EOF"));
    }
}
