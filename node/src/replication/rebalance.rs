//! Rebalancing: the worker that carries a node through a layout
//! transition (the rule and why it is safe: [`crate::cluster::transition`]).
//!
//! Each pass, while more than one layout is active:
//!
//! 1. pulls the partitions this node gained in the newest layout that it
//!    has not pulled yet, from the owners under the oldest active layout
//!    (ids by slot-range scan, then the versions it lacks), throttled in
//!    bytes per second and partitions in flight, and pausing while the
//!    node serves API requests;
//! 2. asks every node involved where it stands (each answers for itself);
//! 3. reads from the newest layout once every new owner has pulled, and
//!    ends the transition once every node reads from it: hands each new
//!    owner what it still lacks of the partitions this node leaves, drops
//!    them, and forgets the older layouts.
//!
//! Every step is idempotent and recorded, so a pass cut short (a restart,
//! a peer that fails) is simply run again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::PeerId;
use slurp_protocol::messages::{KeyVersion, SlotRange, TransitionReport};
use slurp_protocol::placement::Layout;
use slurp_protocol::{Partition, VersionId};

use super::ReplicationConfig;
use super::anti_entropy::{AntiEntropy, Throttle};
use super::coordinator::cluster_peer_label as cluster_peer_label_of;
use crate::cluster::transition::{self, set_of};
use crate::cluster::{Cluster, layout_peers};
use crate::metrics::Metrics;
use crate::store::Engine;
use crate::workers::PassReport;

/// The worker's name in `slurp workers`.
pub const WORKER: &str = "rebalance";

/// What pulling one partition moved (bytes, versions), or why it failed.
type Pulled = Result<(u64, u64), String>;

/// While API requests are in flight, a transfer waits this many times as
/// long as its last batch took.
const FOREGROUND_SHARE: u32 = 3;

/// Versions fetched per request when pulling (small, so a batch's burst of
/// work is short next to the foreground's requests).
const PULL_BATCH: usize = 64;

/// Versions purged per transaction when a partition is dropped.
const DROP_BATCH: usize = 256;

/// What `slurp cluster status` shows of a transition.
pub use slurp_protocol::api::TransitionStatus;

/// The rebalancing worker. Cheap to clone.
#[derive(Clone)]
pub struct Rebalance(Arc<Inner>);

struct Inner {
    store: Engine,
    cluster: Cluster,
    anti_entropy: AntiEntropy,
    config: ReplicationConfig,
    metrics: Metrics,
    /// The status of the last pass (phase, what it waits for).
    status: Mutex<Option<TransitionStatus>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn slots_of(layout: &Layout, p: Partition) -> SlotRange {
    let r = layout.partitions().slots(p);
    SlotRange {
        first: *r.start(),
        last: *r.end(),
    }
}

impl Rebalance {
    pub fn new(
        store: Engine,
        cluster: Cluster,
        anti_entropy: AntiEntropy,
        config: ReplicationConfig,
        metrics: Metrics,
    ) -> Self {
        Rebalance(Arc::new(Inner {
            store,
            cluster,
            anti_entropy,
            config,
            metrics,
            status: Mutex::new(None),
        }))
    }

    /// The transition under way as of the last pass, if any.
    pub fn status(&self) -> Option<TransitionStatus> {
        if !self.0.cluster.in_transition() {
            return None;
        }
        let mut st = self
            .0
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        self.fill(&mut st);
        Some(st)
    }

    /// Fills in this node's own figures (they move between passes).
    fn fill(&self, st: &mut TransitionStatus) {
        let c = &self.0.cluster;
        let report = c.transition_report();
        let state = c.transitions().state();
        st.active = report.active.clone();
        st.reading = report.reading;
        st.partitions_total = report.partitions_total;
        st.partitions_done = report.partitions_done;
        st.bytes = state.bytes;
        st.versions = state.versions;
        let secs = now_ms().saturating_sub(state.started_ms) as f64 / 1000.0;
        st.bytes_per_sec = if secs > 0.0 {
            state.bytes as f64 / secs
        } else {
            0.0
        };
        let left = report.partitions_total - report.partitions_done.min(report.partitions_total);
        st.eta_secs = if left == 0 {
            Some(0)
        } else if report.partitions_done > 0 && secs > 0.0 {
            Some((secs / f64::from(report.partitions_done) * f64::from(left)).ceil() as u64)
        } else {
            None
        };
        if st.phase.is_empty() {
            st.phase = "pulling".into();
        }
    }

    fn set_status(&self, mut st: TransitionStatus) {
        self.fill(&mut st);
        // One line per node or partition; a long list is cut.
        const SHOWN: usize = 8;
        if st.waiting_for.len() > SHOWN {
            let more = st.waiting_for.len() - SHOWN;
            st.waiting_for.truncate(SHOWN);
            st.waiting_for.push(format!("and {more} more"));
        }
        let m = &self.0.metrics;
        let g = &m.rebalance_partitions;
        g.get_or_create(&crate::metrics::StateLabels { state: "done" })
            .set(i64::from(st.partitions_done));
        g.get_or_create(&crate::metrics::StateLabels { state: "pending" })
            .set(i64::from(
                st.partitions_total - st.partitions_done.min(st.partitions_total),
            ));
        *self
            .0
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(st);
    }

    fn count(&self, what: &'static str, n: u64) {
        if n > 0 {
            self.0
                .metrics
                .rebalance
                .get_or_create(&crate::metrics::CauseLabels { cause: what })
                .inc_by(n);
        }
    }

    /// After a batch that took `spent`, waits while the node serves API
    /// requests: [`FOREGROUND_SHARE`] times as long, so that a transfer
    /// takes at most a quarter of the time while clients are served, and
    /// all of it when none are.
    async fn yield_to_foreground(&self, spent: Duration) {
        if self.0.metrics.api_in_flight.get() > 0 {
            tokio::time::sleep((spent * FOREGROUND_SHARE).min(Duration::from_secs(1))).await;
        }
    }

    /// One pass (see the module docs).
    pub async fn pass(&self) -> Result<PassReport, String> {
        let c = &self.0.cluster;
        let active = c.active_layouts();
        self.0.metrics.layouts_active.set(active.len() as i64);
        let Some(newest) = active.last().cloned() else {
            return Ok(PassReport {
                items: 0,
                note: "no layout yet".into(),
            });
        };
        if active.len() == 1 {
            *self
                .0
                .status
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            return Ok(PassReport {
                items: 0,
                note: format!("layout v{}: no transition", newest.version()),
            });
        }
        let target = newest.version();
        c.transitions().aim(target).map_err(|e| e.to_string())?;
        // 0. A node that was away while the others ended this transition
        // (one of them holds no older layout any more, which it does only
        // once every node read from the new owners) ends it at once: the
        // old owners have let go, and anti-entropy brings what it missed
        // from its co-replicas under the new layout.
        let early = self.reports(&active).await;
        if early
            .iter()
            .any(|(p, r)| *p != c.me() && r.active.first().is_some_and(|v| *v >= target))
        {
            c.transitions()
                .read_from(target)
                .map_err(|e| e.to_string())?;
            return self
                .end(
                    &active,
                    target,
                    format!("to layout v{target}: the others ended it already"),
                    0,
                )
                .await;
        }
        // 1. Pull what this node gained.
        let (pulled, failures) = self.pull_gained(&active, target).await;
        let report = c.transition_report();
        if report.partitions_done == report.partitions_total {
            c.transitions().synced(target).map_err(|e| e.to_string())?;
        }
        let mut note = format!(
            "to layout v{target}: pulled {}/{} partitions ({pulled} versions this pass)",
            report.partitions_done, report.partitions_total
        );
        if !failures.is_empty() {
            let shown: Vec<&str> = failures.iter().take(3).map(String::as_str).collect();
            note += &format!("; {} failed: {}", failures.len(), shown.join("; "));
            self.set_status(TransitionStatus {
                phase: "pulling".into(),
                waiting_for: failures.clone(),
                ..Default::default()
            });
            return Ok(PassReport {
                items: pulled,
                note,
            });
        }
        // 2. Where does everyone stand? (Asked again only when pulling
        // took this pass's time.)
        let reports = if pulled == 0 {
            early
        } else {
            self.reports(&active).await
        };
        let newest_members = layout_peers(&newest);
        let mut waiting: Vec<String> = Vec::new();
        for p in &newest_members {
            match reports.get(p) {
                Some(r) if r.synced >= target => {}
                Some(r) => waiting.push(format!(
                    "{}: pulling {}/{}",
                    cluster_peer_label_of(c, p),
                    r.partitions_done,
                    r.partitions_total
                )),
                None => waiting.push(format!("{}: no answer", cluster_peer_label_of(c, p))),
            }
        }
        if !waiting.is_empty() {
            self.set_status(TransitionStatus {
                phase: "syncing".into(),
                waiting_for: waiting,
                ..Default::default()
            });
            return Ok(PassReport {
                items: pulled,
                note: note + "; waiting for the other new owners",
            });
        }
        // 3a. Every new owner holds its partitions. Before this node says
        // it reads from them (after which the others may end the
        // transition and stop answering a node that leaves), it hands
        // each new owner whatever it still lacks of the partitions this
        // node leaves: a write acknowledged by fewer replicas than the
        // configured quorum (`w=1`) may be here alone.
        if c.transitions().state().handed_off < target {
            let (_, failed) = self.leave(&active, false).await;
            if !failed.is_empty() {
                self.set_status(TransitionStatus {
                    phase: "syncing".into(),
                    waiting_for: failed.clone(),
                    ..Default::default()
                });
                return Ok(PassReport {
                    items: pulled,
                    note: format!("{note}; hand-off failed: {}", failed.join("; ")),
                });
            }
            c.transitions()
                .handed_off(target)
                .map_err(|e| e.to_string())?;
        }
        c.transitions()
            .read_from(target)
            .map_err(|e| e.to_string())?;
        let mut involved: BTreeSet<PeerId> = newest_members.iter().copied().collect();
        for l in &active[..active.len() - 1] {
            for p in layout_peers(l) {
                // An old member that does not answer is gone (a member
                // leaving is no longer probed, so the failure detector
                // says nothing of it); one that comes back finds the
                // transition over and ends its own at once.
                if newest_members.contains(&p) || !reports.contains_key(&p) {
                    continue;
                }
                involved.insert(p);
            }
        }
        for p in &involved {
            match reports.get(p) {
                Some(r) if r.reading >= target || r.active.first() >= Some(&target) => {}
                Some(_) => waiting.push(format!(
                    "{}: still reads from the old owners",
                    cluster_peer_label_of(c, p)
                )),
                None => waiting.push(format!("{}: no answer", cluster_peer_label_of(c, p))),
            }
        }
        if !waiting.is_empty() {
            self.set_status(TransitionStatus {
                phase: "draining".into(),
                waiting_for: waiting,
                ..Default::default()
            });
            return Ok(PassReport {
                items: pulled,
                note: note + "; waiting for nodes to read from the new owners",
            });
        }
        // 3b. End it.
        self.end(&active, target, note, pulled).await
    }

    /// Ends the transition to `target`: hands off and drops what this
    /// node leaves, then forgets the older layouts.
    async fn end(
        &self,
        active: &[Arc<Layout>],
        target: u64,
        note: String,
        pulled: u64,
    ) -> Result<PassReport, String> {
        let c = &self.0.cluster;
        self.set_status(TransitionStatus {
            phase: "dropping".into(),
            ..Default::default()
        });
        // A read that began before the last node switched may still be
        // asking the old owners: let it finish first.
        tokio::time::sleep(self.0.config.rebalance_grace).await;
        let (dropped, kept) = self.leave(active, true).await;
        if !kept.is_empty() {
            self.set_status(TransitionStatus {
                phase: "dropping".into(),
                waiting_for: kept.clone(),
                ..Default::default()
            });
            return Ok(PassReport {
                items: pulled,
                note: format!("{note}; could not hand off: {}", kept.join("; ")),
            });
        }
        c.collapse_below(target).map_err(|e| e.to_string())?;
        c.transitions().ended(target).map_err(|e| e.to_string())?;
        self.count("transitions_ended", 1);
        self.0
            .metrics
            .layouts_active
            .set(c.active_layouts().len() as i64);
        Ok(PassReport {
            items: pulled,
            note: format!(
                "{note}; transition to layout v{target} ended, {dropped} partitions dropped"
            ),
        })
    }

    /// Pulls every gained partition not pulled yet; returns the versions
    /// pulled and why partitions failed.
    async fn pull_gained(&self, active: &[Arc<Layout>], target: u64) -> (u64, Vec<String>) {
        let c = &self.0.cluster;
        let done = c.transitions().state().done;
        let todo: Vec<Partition> = transition::gained(active, c.me_id())
            .into_iter()
            .filter(|p| !done.contains(&p.0))
            .collect();
        if todo.is_empty() {
            return (0, Vec::new());
        }
        let throttle = Throttle::new(self.0.config.rebalance_bytes_per_sec);
        let results: Vec<(Partition, Pulled)> = futures::stream::iter(todo)
            .map(|p| {
                let throttle = &throttle;
                async move { (p, self.pull_partition(active, target, p, throttle).await) }
            })
            .buffer_unordered(self.0.config.rebalance_partitions_in_flight.max(1))
            .collect()
            .await;
        let mut versions = 0;
        let mut failures = Vec::new();
        for (p, r) in results {
            match r {
                Ok((bytes, n)) => {
                    versions += n;
                    self.count("partitions_pulled", 1);
                    self.count("versions_pulled", n);
                    self.count("bytes_pulled", bytes);
                    if let Err(e) = c.transitions().pulled(target, p, bytes, n) {
                        failures.push(format!("partition {}: {e}", p.0));
                    }
                }
                Err(e) => failures.push(format!("partition {}: {e}", p.0)),
            }
        }
        (versions, failures)
    }

    /// Pulls partition `p` from its owners under the oldest active layout:
    /// from enough of them that every acknowledged write is among what is
    /// seen. Returns the bytes and versions stored.
    async fn pull_partition(
        &self,
        active: &[Arc<Layout>],
        target: u64,
        p: Partition,
        throttle: &Throttle,
    ) -> Result<(u64, u64), String> {
        let c = &self.0.cluster;
        let ae = &self.0.anti_entropy;
        let oldest = &active[0];
        let owners = set_of(oldest, p);
        // Every acknowledged write is on at least W of them, so any
        // `owners - W + 1` include a copy of it; every owner that is up
        // is asked all the same.
        let need = owners.len() + 1 - c.write_quorum(None, owners.len()).min(owners.len());
        let range = slots_of(oldest, p);
        let local = ae.local_ids(range).map_err(|e| e.to_string())?;
        let has = |key: &str, v: &VersionId| local.get(key).is_some_and(|s| s.contains(v));
        let mut answered = usize::from(owners.contains(&c.me()));
        let mut wanted: BTreeMap<PeerId, Vec<KeyVersion>> = BTreeMap::new();
        let mut seen: BTreeSet<(String, VersionId)> = BTreeSet::new();
        let mut errors = Vec::new();
        for owner in owners.iter().filter(|o| **o != c.me()) {
            if !c.peers().is_up(owner) {
                errors.push(format!("{} is down", cluster_peer_label_of(c, owner)));
                continue;
            }
            match ae.remote_ids(owner, range, Some(target)).await {
                Ok(ids) => {
                    answered += 1;
                    for (key, versions) in ids {
                        for v in versions.into_iter().rev() {
                            if has(&key, &v) || !seen.insert((key.clone(), v.clone())) {
                                continue;
                            }
                            wanted.entry(*owner).or_default().push(KeyVersion {
                                key: key.clone(),
                                version: v,
                            });
                        }
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if answered < need {
            return Err(format!(
                "{answered} of the {need} previous owners needed answered ({})",
                errors.join("; ")
            ));
        }
        let (mut bytes, mut versions) = (0, 0);
        for (owner, entries) in wanted {
            for chunk in entries.chunks(PULL_BATCH) {
                let started = std::time::Instant::now();
                let moved = ae
                    .pull(&owner, chunk.to_vec(), throttle)
                    .await
                    .map_err(|e| e.to_string())?;
                bytes += moved.bytes_received;
                versions += moved.received;
                self.yield_to_foreground(started.elapsed()).await;
            }
        }
        Ok((bytes, versions))
    }

    /// Every involved node's own report: the members of every active
    /// layout (this node answers for itself).
    async fn reports(&self, active: &[Arc<Layout>]) -> BTreeMap<PeerId, TransitionReport> {
        let c = &self.0.cluster;
        let mut peers: BTreeSet<PeerId> = BTreeSet::new();
        for l in active {
            peers.extend(layout_peers(l));
        }
        let asks = peers
            .iter()
            .filter(|p| **p != c.me())
            .map(|p| async move { (*p, c.transition_of(p).await) });
        let mut out: BTreeMap<PeerId, TransitionReport> = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(|(p, r)| r.ok().map(|r| (p, r)))
            .collect();
        out.insert(c.me(), c.transition_report());
        out
    }

    /// Hands each new owner what it lacks of the partitions this node
    /// leaves and, with `drop`, then drops them. Returns how many were
    /// dropped, and the partitions whose hand-off failed (why; kept).
    async fn leave(&self, active: &[Arc<Layout>], drop: bool) -> (usize, Vec<String>) {
        let c = &self.0.cluster;
        let me = c.me_id();
        let Some((newest, older)) = active.split_last() else {
            return (0, Vec::new());
        };
        let newest_mi = newest.member_index(me);
        let mut leaving: BTreeSet<u16> = BTreeSet::new();
        for o in older {
            let Some(mi) = o.member_index(me) else {
                continue;
            };
            for p in 0..o.partitions().count() {
                let partition = Partition(p as u16);
                if o.replicas(partition).contains(&mi)
                    && !newest_mi.is_some_and(|n| newest.replicas(partition).contains(&n))
                {
                    leaving.insert(partition.0);
                }
            }
        }
        let throttle = Throttle::new(self.0.config.rebalance_bytes_per_sec);
        let mut dropped = 0;
        let mut kept = Vec::new();
        // At the end, a node leaving the cluster hands nothing off again:
        // the members no longer answer it (it did before it said it reads
        // from the new owners).
        let hand_off = !drop || newest_mi.is_some();
        for p in leaving {
            let partition = Partition(p);
            match self
                .hand_off_and_drop(newest, partition, hand_off, drop, &throttle)
                .await
            {
                Ok(true) => dropped += 1,
                Ok(false) => {}
                Err(e) => kept.push(format!("partition {p}: {e}")),
            }
        }
        (dropped, kept)
    }

    /// Sends every new owner of `p` what it lacks (with `hand_off`), then
    /// (with `drop`) removes `p` from this node; `Ok(true)` when it was
    /// dropped.
    async fn hand_off_and_drop(
        &self,
        newest: &Arc<Layout>,
        p: Partition,
        hand_off: bool,
        drop: bool,
        throttle: &Throttle,
    ) -> Result<bool, String> {
        let c = &self.0.cluster;
        let ae = &self.0.anti_entropy;
        let range = slots_of(newest, p);
        let local = ae.local_ids(range).map_err(|e| e.to_string())?;
        if local.is_empty() {
            return Ok(false);
        }
        let owners = if hand_off {
            set_of(newest, p)
        } else {
            Vec::new()
        };
        for owner in owners.iter().filter(|o| **o != c.me()) {
            let theirs = ae
                .remote_ids(owner, range, None)
                .await
                .map_err(|e| e.to_string())?;
            let push = super::anti_entropy::missing(&local, &theirs);
            if !push.is_empty() {
                let moved = ae
                    .push(newest, owner, push, throttle)
                    .await
                    .map_err(|e| e.to_string())?;
                self.count("versions_handed_off", moved.sent);
            }
        }
        if !drop {
            return Ok(false);
        }
        let mut all: Vec<(String, VersionId)> = local
            .into_iter()
            .flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v)))
            .collect();
        let store = self.0.store.local();
        let mut removed = 0;
        while !all.is_empty() {
            let batch: Vec<(String, VersionId)> = all.drain(..all.len().min(DROP_BATCH)).collect();
            let report = store
                .purge(batch.clone())
                .await
                .map_err(|e| e.to_string())?;
            removed += report.removed;
            let mut last: BTreeMap<&str, &VersionId> = BTreeMap::new();
            for (k, v) in &batch {
                last.insert(k, v);
            }
            for (k, v) in last {
                self.0.store.forget_removed(k, v).await;
            }
        }
        self.count("partitions_dropped", 1);
        self.count("versions_dropped", removed);
        Ok(true)
    }
}

impl crate::workers::Worker for Rebalance {
    fn name(&self) -> &'static str {
        WORKER
    }

    fn description(&self) -> &'static str {
        "carries this node through a layout change: pulls the partitions it gained, then drops those it left once every node reads from the new owners"
    }

    fn interval(&self) -> Duration {
        self.0.config.rebalance_interval
    }

    fn pass(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PassReport, String>> + Send + '_>>
    {
        Box::pin(Rebalance::pass(self))
    }
}
