//! Hinted handoff, both halves.
//!
//! When a replica fails a write, the coordinator gives the versions it
//! missed to the next member of the partition's preference list that takes
//! them ([`Replicator::hint_to_fallbacks`]), with a hint naming the
//! replica; hinted copies never count toward the write quorum. The
//! `handoff` worker of the fallback ([`pass`]) hands them to the replica
//! once it answers again, then forgets the hint and, when the fallback is
//! not itself a replica of the version's partition, drops its copy. Hints
//! live in the local store beside the versions they name, so they survive
//! a restart of either side. Hints for a replica that left the layout are
//! not dropped: their versions go to the partitions' replicas under the
//! layout now, and the hints go once all of those hold them.

use std::collections::HashMap;

use libp2p::PeerId;

use slurp_protocol::messages::PutOutcome as WirePut;

use super::Replicator;
use super::coordinator::{WriteItem, cluster_peer_label};
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::store::Engine;
use crate::workers::PassReport;

impl Replicator {
    /// Gives the versions `idx` that `down` missed to the first fallback of
    /// their partition that takes them, with a hint naming `down`.
    pub(super) async fn hint_to_fallbacks(
        &self,
        cluster: &Cluster,
        down: &PeerId,
        items: &[WriteItem],
        idx: &[usize],
    ) {
        // Versions of one batch may belong to different partitions; group
        // them by their first fallback.
        let mut by_fallbacks: HashMap<Vec<PeerId>, Vec<usize>> = HashMap::new();
        for &i in idx {
            let mut f = items[i].route.fallbacks();
            cluster.order(&mut f);
            by_fallbacks.entry(f).or_default().push(i);
        }
        for (fallbacks, idx) in by_fallbacks {
            let mut done = false;
            for f in fallbacks.iter().take(3) {
                if self
                    .send_group(cluster, f, items, &idx, Some(down))
                    .await
                    .is_ok_and(|o| o.iter().all(|o| !matches!(o, WirePut::Rejected { .. })))
                {
                    self.0
                        .engine
                        .metrics()
                        .replication("hinted", idx.len() as u64);
                    done = true;
                    break;
                }
            }
            if !done {
                tracing::warn!(
                    replica = %cluster_peer_label(cluster, down),
                    versions = idx.len(),
                    "no fallback took the versions of a down replica; anti-entropy must repair it"
                );
            }
        }
    }
}

/// The worker's name in `slurp workers`.
pub const WORKER: &str = "handoff";

/// The `handoff` worker: hands hinted versions back to their replicas.
pub struct Handoff {
    pub store: Engine,
    pub cluster: Cluster,
    pub metrics: Metrics,
    /// Versions per request (`cluster.handoff_batch`).
    pub batch: usize,
    /// `cluster.handoff_interval`.
    pub interval: std::time::Duration,
}

impl crate::workers::Worker for Handoff {
    fn name(&self) -> &'static str {
        WORKER
    }

    fn description(&self) -> &'static str {
        "hands versions held for a down replica back to it, then drops the copies held only for it"
    }

    fn interval(&self) -> std::time::Duration {
        self.interval
    }

    fn pass(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PassReport, String>> + Send + '_>>
    {
        Box::pin(pass(&self.store, &self.cluster, &self.metrics, self.batch))
    }
}

/// One pass of hinted handoff: for every replica this node holds
/// versions for and that answers again, send them (a page of `batch` at a
/// time) and drop the hints it acknowledged.
pub async fn pass(
    store: &Engine,
    cluster: &Cluster,
    metrics: &Metrics,
    batch: usize,
) -> Result<PassReport, String> {
    use slurp_protocol::messages::{
        PutOutcome as WirePut, ReplicateRequest, ReplicateResponse, SealedVersion,
    };
    let local = store.local();
    let targets = local.hint_targets().map_err(|e| e.to_string())?;
    metrics
        .hints_pending
        .set(targets.iter().map(|t| t.count as i64).sum());
    let mut handed = 0u64;
    let mut waiting = 0u64;
    let mut dropped = 0u64;
    let layout = cluster.layout();
    let targets_left: Vec<String> = targets.iter().map(|t| t.target.clone()).collect();
    for t in targets {
        if layout
            .as_ref()
            .is_some_and(|l| l.member_index(&t.target).is_none())
        {
            // The replica left the layout: what it missed goes to the
            // partitions' replicas under the layout now, then the hints go.
            let (moved, left) = redirect(store, cluster, metrics, &t.target, &targets_left, batch)
                .await
                .map_err(|e| e.to_string())?;
            handed += moved;
            waiting += left;
            continue;
        }
        let Ok(target) = t.target.parse::<PeerId>() else {
            // Hints are written only for layout members, which are peer
            // ids; one that is not names nobody to hand it to.
            tracing::warn!(target = %t.target, "hints for a target that is not a peer id stay");
            continue;
        };
        if !cluster.peers().is_up(&target) {
            waiting += t.count;
            continue;
        }
        // Bounded per pass; the next pass continues.
        for _ in 0..16 {
            let page = local
                .hints(&t.target, None, batch.max(1))
                .map_err(|e| e.to_string())?;
            if page.hints.is_empty() {
                break;
            }
            let mut versions = Vec::with_capacity(page.hints.len());
            let mut gone = Vec::new();
            for h in &page.hints {
                match local.get(&h.key, &h.version).map_err(|e| e.to_string())? {
                    Some(rec) => versions.push((
                        h.clone(),
                        SealedVersion {
                            meta: rec.meta,
                            envelope: rec.envelope.into(),
                        },
                    )),
                    // Expired and swept since: nothing to hand over.
                    None => gone.push(h.clone()),
                }
            }
            let req = ReplicateRequest::PutVersions {
                versions: versions.iter().map(|(_, v)| v.clone()).collect(),
                layout_version: Some(cluster.layout_version()),
                write_quorum_id: None,
                hint_for: None,
            };
            let mut done = gone;
            match cluster.replicate(&target, req).await {
                Ok(ReplicateResponse::Stored { outcomes }) => {
                    for ((h, _), o) in versions.iter().zip(outcomes) {
                        if !matches!(o.outcome, WirePut::Rejected { .. }) {
                            done.push(h.clone());
                        }
                    }
                }
                Ok(_) => return Err(format!("{}: unexpected answer", t.target)),
                Err(e) => {
                    waiting += t.count;
                    tracing::debug!(target = %t.target, error = %e, "handoff deferred");
                    break;
                }
            }
            let n = local.remove_hints(&done).await.map_err(|e| e.to_string())?;
            handed += n as u64;
            metrics.replication("handed_off", n as u64);
            dropped += drop_hinted_copies(store, cluster, &t.target, &targets_left, &done)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
        }
    }
    Ok(PassReport {
        items: handed,
        note: format!(
            "handed off {handed} versions, {waiting} wait for their replica, dropped {dropped} copies held only for a replica"
        ),
    })
}

/// Hands the versions hinted for `target`, a peer that left the layout, to
/// the replicas their partitions have now; a hint goes once every one of
/// them (other than this node, which holds the version) stored it.
/// Returns how many hints were settled and how many wait.
async fn redirect(
    store: &Engine,
    cluster: &Cluster,
    metrics: &Metrics,
    target: &str,
    targets: &[String],
    batch: usize,
) -> Result<(u64, u64), super::ReplicationError> {
    use slurp_protocol::messages::{ReplicateRequest, ReplicateResponse, SealedVersion};
    let local = store.local();
    let me = cluster.me();
    let (mut settled, mut waiting) = (0u64, 0u64);
    // Bounded per pass; the next pass continues.
    for _ in 0..16 {
        let page = local.hints(target, None, batch.max(1))?;
        if page.hints.is_empty() {
            break;
        }
        let mut done = Vec::new();
        let mut versions: Vec<(slurp_storage::Hint, SealedVersion, Vec<PeerId>)> = Vec::new();
        for h in page.hints {
            let Some(rec) = local.get(&h.key, &h.version)? else {
                // Expired and swept since: nothing to hand over.
                done.push(h);
                continue;
            };
            let Some(route) = cluster.route(&h.key) else {
                return Ok((settled, waiting + 1));
            };
            let replicas: Vec<PeerId> = route.replicas.into_iter().filter(|r| *r != me).collect();
            versions.push((
                h,
                SealedVersion {
                    meta: rec.meta,
                    envelope: rec.envelope.into(),
                },
                replicas,
            ));
        }
        let mut by_replica: HashMap<PeerId, Vec<usize>> = HashMap::new();
        for (i, (_, _, replicas)) in versions.iter().enumerate() {
            for r in replicas {
                by_replica.entry(*r).or_default().push(i);
            }
        }
        let mut stored = vec![0usize; versions.len()];
        for (replica, idx) in by_replica {
            let req = ReplicateRequest::PutVersions {
                versions: idx.iter().map(|&i| versions[i].1.clone()).collect(),
                layout_version: Some(cluster.layout_version()),
                write_quorum_id: None,
                hint_for: None,
            };
            match cluster.replicate(&replica, req).await {
                Ok(ReplicateResponse::Stored { outcomes }) if outcomes.len() == idx.len() => {
                    for (&i, o) in idx.iter().zip(outcomes) {
                        if !matches!(o.outcome, WirePut::Rejected { .. }) {
                            stored[i] += 1;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%replica, error = %e, "a new replica did not take hinted versions yet")
                }
            }
        }
        for ((h, _, replicas), n) in versions.into_iter().zip(stored) {
            if n == replicas.len() {
                done.push(h);
            } else {
                waiting += 1;
            }
        }
        let n = local.remove_hints(&done).await? as u64;
        settled += n;
        metrics.replication("hints_redirected", n);
        drop_hinted_copies(store, cluster, target, targets, &done).await?;
        if n == 0 {
            break;
        }
    }
    Ok((settled, waiting))
}

/// Most hints of other targets looked at to keep a copy another replica
/// still needs; past it, copies stay (anti-entropy does not need them, but
/// dropping one a hint still names would lose that replica's copy).
const MAX_OTHER_HINTS: usize = 100_000;

/// Removes this node's copies of versions `target` now holds, when this
/// node is not a replica of their partition and no hint for another
/// target still names them. Returns how many were removed.
async fn drop_hinted_copies(
    store: &Engine,
    cluster: &Cluster,
    target: &str,
    targets: &[String],
    handed: &[slurp_storage::Hint],
) -> Result<u64, super::ReplicationError> {
    let Some(layout) = cluster.layout() else {
        return Ok(0);
    };
    let me = layout.member_index(cluster.me_id());
    let mut copies: Vec<(String, slurp_protocol::VersionId)> = handed
        .iter()
        .filter(|h| me.is_none_or(|m| !layout.replicas_for_key(&h.key).contains(&m)))
        .map(|h| (h.key.clone(), h.version.clone()))
        .collect();
    if copies.is_empty() {
        return Ok(0);
    }
    let local = store.local();
    // Versions other targets still wait for stay.
    let mut others = std::collections::HashSet::new();
    for other in targets.iter().filter(|o| *o != target) {
        let mut after = None;
        loop {
            let page = local.hints(other, after.as_ref(), 1024)?;
            for h in page.hints {
                others.insert((h.key, h.version));
            }
            if others.len() > MAX_OTHER_HINTS {
                return Ok(0);
            }
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
    }
    copies.retain(|c| !others.contains(c));
    if copies.is_empty() {
        return Ok(0);
    }
    let report = local.purge(copies.clone()).await?;
    for (key, version) in &copies {
        store.forget_removed(key, version).await;
    }
    store
        .metrics()
        .replication("hinted_copies_dropped", report.removed);
    Ok(report.removed)
}
