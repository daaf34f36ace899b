//! Collecting deleted addresses: when a tombstone may go.
//!
//! A delete is a tombstone version. It must outlive every older version of
//! its address on every replica: were one replica to drop it while another
//! still held an older live version and not the tombstone, anti-entropy or
//! a quorum read would bring the deleted context back. So a tombstone is
//! collected only once **every replica of its partition has said it holds
//! that tombstone as the newest version of the address** (asked, never
//! assumed from time), and then all of them drop every version of the
//! address together.
//!
//! The partition's primary (the first replica of its preference list)
//! coordinates, in two rounds: it asks every replica about its tombstones
//! (`Collect` without `apply`), and for those every replica holds (or has
//! already collected) it asks each replica to collect them, collecting its
//! own copy last. A replica collects only while the tombstone is still its
//! newest version (a write after the delete keeps the address), and keeps
//! a *collected marker* that refuses any version at or before the
//! tombstone: a hinted copy handed back late, a version pushed by a
//! replica that had not collected yet, or a repair, is answered as
//! already present and not stored. Markers are dropped after
//! `replication.gc_keep_collected`. `docs/cluster.md` has the proof sketch.

use libp2p::PeerId;
use slurp_protocol::VersionId;
use slurp_protocol::messages::{CollectState, KeyVersion, ReplicateRequest, ReplicateResponse};
use slurp_storage::{CollectOutcome, Store};

use super::{ReplicationConfig, ReplicationError};
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::store::Engine;
use crate::workers::PassReport;

/// What this node holds of `tombstone` for `key`.
pub(crate) fn state_of(
    store: &Store,
    key: &str,
    tombstone: &VersionId,
) -> Result<CollectState, slurp_storage::ReadError> {
    if let Some(m) = store.collected(key)?
        && m.version >= *tombstone
    {
        return Ok(CollectState::Collected);
    }
    Ok(match store.latest_meta(key)? {
        Some((meta, _)) if meta.version == *tombstone && meta.tombstone => CollectState::Holds,
        Some((meta, _)) if meta.version > *tombstone => CollectState::Newer,
        _ => CollectState::Lacks,
    })
}

/// Answers a [`ReplicateRequest::Collect`]: the state of each entry, after
/// collecting those still held when `apply` is set.
pub(crate) async fn serve_collect(
    store: &Engine,
    entries: &[KeyVersion],
    apply: bool,
) -> Result<Vec<CollectState>, ReplicationError> {
    let local = store.local();
    let mut states = Vec::with_capacity(entries.len());
    for e in entries {
        let mut state = state_of(local, &e.key, &e.version)?;
        if apply && state == CollectState::Holds {
            match local.collect(&e.key, &e.version).await? {
                CollectOutcome::Collected { .. } => {
                    store.forget_removed(&e.key, &e.version).await;
                    state = CollectState::Collected;
                }
                // Written or collected in between: say what holds now.
                _ => state = state_of(local, &e.key, &e.version)?,
            }
        }
        states.push(state);
    }
    Ok(states)
}

/// The worker's name in `slurp workers`.
pub const WORKER: &str = "tombstone-gc";

/// The `tombstone-gc` worker of one node.
#[derive(Clone)]
pub struct TombstoneGc {
    store: Engine,
    cluster: Cluster,
    config: ReplicationConfig,
    metrics: Metrics,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TombstoneGc {
    pub fn new(
        store: Engine,
        cluster: Cluster,
        config: ReplicationConfig,
        metrics: Metrics,
    ) -> Self {
        TombstoneGc {
            store,
            cluster,
            config,
            metrics,
        }
    }

    /// One pass over the partitions this node is primary of.
    pub async fn pass(&self) -> Result<PassReport, String> {
        let local = self.store.local();
        let now = now_ms();
        let keep = self.config.gc_keep_collected.as_millis() as u64;
        let pruned = local
            .prune_collected(now.saturating_sub(keep), 10_000)
            .await
            .map_err(|e| e.to_string())?;
        // A tombstone goes once every replica holds it; while a layout
        // transition moves partitions, "every replica" spans two sets
        // whose copies are still on their way: collection waits.
        if self.cluster.in_transition() {
            return Ok(PassReport {
                items: pruned,
                note: "paused: a layout transition is under way".into(),
            });
        }
        let Some(layout) = self.cluster.layout() else {
            return Ok(PassReport {
                items: 0,
                note: "no layout yet".into(),
            });
        };
        let me = self.cluster.me_id().to_string();
        let min_age = self.config.gc_min_age.as_millis() as u64;
        let mut collected = 0u64;
        let mut held_back = 0u64;
        let mut waiting_partitions = 0u64;
        let mut failures = Vec::new();
        for p in 0..layout.partitions().count() {
            let partition = slurp_protocol::Partition(p as u16);
            if layout.primary(partition).is_none_or(|m| m.id != me) {
                continue;
            }
            let others: Vec<PeerId> = layout
                .replica_members(partition)
                .filter(|m| m.id != me)
                .filter_map(|m| m.id.parse().ok())
                .collect();
            let slots = layout.partitions().slots(partition);
            let mut after: Option<String> = None;
            loop {
                let page = local
                    .tombstones(slots.clone(), after.as_deref(), self.config.gc_batch)
                    .map_err(|e| e.to_string())?;
                let Some(last) = page.items.last() else { break };
                after = Some(last.key.clone());
                let full = page.items.len() >= self.config.gc_batch;
                let entries: Vec<KeyVersion> = page
                    .items
                    .iter()
                    .filter(|t| t.entry.recorded_at_ms.saturating_add(min_age) <= now)
                    .map(|t| KeyVersion {
                        key: t.key.clone(),
                        version: t.entry.version.clone(),
                    })
                    .collect();
                if !entries.is_empty() {
                    if others.iter().any(|o| !self.cluster.peers().is_up(o)) {
                        // Every replica must answer; a down one holds the
                        // partition's collection back until it is up.
                        waiting_partitions += 1;
                        break;
                    }
                    match self.collect(&others, entries).await {
                        Ok((c, h)) => {
                            collected += c;
                            held_back += h;
                        }
                        Err(e) => {
                            failures.push(e.to_string());
                            break;
                        }
                    }
                }
                if !full {
                    break;
                }
            }
        }
        self.metrics.replication("tombstones_collected", collected);
        let mut note = format!(
            "collected {collected} deleted addresses, {held_back} held back (not yet on every replica), {waiting_partitions} partitions wait for a down replica, {pruned} old markers dropped"
        );
        if !failures.is_empty() {
            note += &format!("; {} failed: {}", failures.len(), failures.join("; "));
        }
        Ok(PassReport {
            items: collected,
            note,
        })
    }

    /// The two rounds for one page of tombstones: returns how many were
    /// collected and how many are not on every replica yet.
    async fn collect(
        &self,
        others: &[PeerId],
        entries: Vec<KeyVersion>,
    ) -> Result<(u64, u64), ReplicationError> {
        let local = self.store.local();
        let mut ok: Vec<bool> = Vec::with_capacity(entries.len());
        for e in &entries {
            let s = state_of(local, &e.key, &e.version)?;
            ok.push(matches!(s, CollectState::Holds | CollectState::Collected));
        }
        for peer in others {
            let states = self.ask(peer, &entries, false).await?;
            for (o, s) in ok.iter_mut().zip(states) {
                *o &= matches!(s, CollectState::Holds | CollectState::Collected);
            }
        }
        let ready: Vec<KeyVersion> = entries
            .iter()
            .zip(&ok)
            .filter(|(_, o)| **o)
            .map(|(e, _)| e.clone())
            .collect();
        let held_back = (entries.len() - ready.len()) as u64;
        if ready.is_empty() {
            return Ok((0, held_back));
        }
        for peer in others {
            self.ask(peer, &ready, true).await?;
        }
        let states = serve_collect(&self.store, &ready, true).await?;
        let collected = states
            .iter()
            .filter(|s| **s == CollectState::Collected)
            .count() as u64;
        Ok((collected, held_back))
    }

    async fn ask(
        &self,
        peer: &PeerId,
        entries: &[KeyVersion],
        apply: bool,
    ) -> Result<Vec<CollectState>, ReplicationError> {
        let req = ReplicateRequest::Collect {
            entries: entries.to_vec(),
            apply,
        };
        match self
            .cluster
            .replicate(peer, req)
            .await
            .map_err(|e| ReplicationError::peer(peer, e))?
        {
            ReplicateResponse::Collected { states } if states.len() == entries.len() => Ok(states),
            _ => Err(ReplicationError::unexpected(peer, "tombstone states")),
        }
    }
}

impl crate::workers::Worker for TombstoneGc {
    fn name(&self) -> &'static str {
        WORKER
    }

    fn description(&self) -> &'static str {
        "collects deleted addresses once every replica of their partition holds the tombstone"
    }

    fn interval(&self) -> std::time::Duration {
        self.config.gc_interval
    }

    fn pass(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PassReport, String>> + Send + '_>>
    {
        Box::pin(TombstoneGc::pass(self))
    }
}
