//! The coordinator side of replication: quorum writes and reads.
//!
//! The node that receives a request coordinates it. A write sends the
//! sealed version to every replica of its partition at once (this node's
//! own store counts as one when it is a replica) and is acknowledged after
//! `W` of them made it durable; the others finish in the background. A
//! replica that fails gets the version through the next member of the
//! partition's preference list instead, which keeps a hint and hands it
//! back when the replica answers again (hinted handoff). Hinted copies do
//! not count toward `W`: a write that reaches fewer than `W` replicas is an
//! error, never a silent success.
//!
//! A read asks `R` replicas for their newest version (one more for each
//! that fails), returns the newest of all by version order (hybrid clock,
//! then writer id, the same order on every node), and sends that version to
//! any asked replica that lacked it (read repair).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use slurp_crypto::AuditAction;
use slurp_protocol::{Temporal, UcxlAddress};
use slurp_storage::StoredRecord;

use slurp_protocol::RecordMeta;
use slurp_protocol::messages::{
    Head, PutOutcome as WirePut, ReplicateRequest, ReplicateResponse, SealedVersion,
};
use slurp_protocol::{ContextNode, VersionId};

use super::ReplicationError;
use super::Replicator;
use super::strategy::{RequestStrategy, try_call_many};
use crate::cache::{CachedRead, Selector};
use crate::cluster::{Cluster, Route, short_peer};
use crate::error::StoreError;
use crate::store::{Prepared, PutResult, ReadResult, read_result};
use crate::tokens::Principal;

/// Per-request quorum overrides (`w=`, `r=` on the API).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuorumOpts {
    pub w: Option<usize>,
    pub r: Option<usize>,
}

/// A peer as errors and logs name it: its node name with the short peer
/// id in parentheses (`node2 (h7Yq3kLm)`), or the short id alone when its
/// name is not known yet.
pub(crate) fn peer_label(name: Option<&str>, peer: &PeerId) -> String {
    match name {
        Some(n) if !n.is_empty() => format!("{n} ({})", short_peer(peer)),
        _ => short_peer(peer),
    }
}

/// `peer` labelled with the name this node knows for it (its own name
/// for itself; peers announce theirs when they connect).
pub(crate) fn cluster_peer_label(cluster: &Cluster, peer: &PeerId) -> String {
    let name = if *peer == cluster.me() {
        Some(cluster.info().name)
    } else {
        cluster
            .peers()
            .get(peer)
            .and_then(|p| p.info)
            .map(|i| i.name)
    };
    peer_label(name.as_deref(), peer)
}

/// A read of `key` that fewer than `need` replicas answered, with each
/// replica named as the cluster knows it.
fn read_quorum_failed(
    cluster: &Cluster,
    key: &str,
    need: usize,
    acked: usize,
    failed: &[ReplicationError],
) -> StoreError {
    let failed: Vec<(PeerId, String)> = failed
        .iter()
        .map(|e| (e.peer_id().copied().unwrap_or(cluster.me()), e.reason()))
        .collect();
    quorum_failed("read", &address_of(key), need, acked, &failed, |p| {
        cluster_peer_label(cluster, p)
    })
}

/// A quorum error naming each replica that failed (by `label`) and why.
/// `op` of `address` is what failed, as the user would say it.
pub(crate) fn quorum_failed(
    op: &'static str,
    address: &str,
    need: usize,
    acked: usize,
    failed: &[(PeerId, String)],
    label: impl Fn(&PeerId) -> String,
) -> StoreError {
    let detail = if failed.is_empty() {
        "no replica answered in time".into()
    } else {
        failed
            .iter()
            .map(|(p, e)| format!("{}: {e}", label(p)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    StoreError::Quorum {
        op,
        address: address.to_string(),
        during: None,
        needed: need,
        acked,
        detail,
    }
}

/// The latest-version address of a storage key, for messages (callers
/// restate errors with the address the user gave: see
/// [`StoreError::quorum_of`]).
fn address_of(key: &str) -> String {
    slurp_protocol::UcxlAddress::from_key(key)
        .map(|a| a.to_string())
        .unwrap_or_else(|_| key.to_string())
}

/// What a quorum read of one key found.
pub(crate) struct HeadsRead {
    /// The newest version any asked replica holds (envelope included when
    /// asked for and live).
    pub newest: Option<SealedVersion>,
    /// Versions of the key on the replica with the most.
    pub versions: u64,
}

/// One write to replicate, with its route.
pub(crate) struct WriteItem {
    pub version: SealedVersion,
    pub plain: Option<ContextNode>,
    pub route: Route,
    /// The write quorum of each of the route's write sets, in the order of
    /// [`Route::write_sets`].
    pub needs: Vec<usize>,
}

/// How one replicated write ended.
pub(crate) struct WriteTally {
    /// Whether every write set reached its quorum.
    pub ok: bool,
    /// Acknowledgements and quorum of the set that fell short (the
    /// current layout's set when none did).
    pub acked: usize,
    pub need: usize,
    pub created: bool,
    pub errors: Vec<(PeerId, String)>,
    /// A replica that refused for holding a newer layout.
    pub stale_layout: Option<PeerId>,
}

impl WriteTally {
    fn new(item: &WriteItem) -> Self {
        WriteTally {
            ok: false,
            acked: 0,
            need: item.needs.first().copied().unwrap_or(1),
            created: false,
            errors: Vec::new(),
            stale_layout: None,
        }
    }

    /// Recounts from the replicas that acknowledged.
    fn count(&mut self, item: &WriteItem, acked: &[PeerId]) {
        self.ok = true;
        let mut first = true;
        for (set, &need) in item.route.write_sets().zip(&item.needs) {
            let n = set.iter().filter(|p| acked.contains(p)).count();
            if first || (self.ok && n < need) {
                self.acked = n;
                self.need = need;
            }
            first = false;
            if n < need {
                self.ok = false;
            }
        }
    }
}

impl Replicator {
    /// Writes prepared versions to their replicas, each acknowledged once
    /// its write quorum has it, then refreshes the coordinator's cache and
    /// audit. One result per version, in order.
    pub(crate) async fn commit(
        &self,
        prepared: Vec<Prepared>,
        opts: QuorumOpts,
    ) -> Vec<Result<PutResult, StoreError>> {
        let cluster = self.cluster();
        let start = Instant::now();
        let mut items = Vec::with_capacity(prepared.len());
        let mut refused: Vec<Option<StoreError>> = Vec::with_capacity(prepared.len());
        let mut sent = Vec::with_capacity(prepared.len());
        for p in prepared {
            match self.write_item(&p, opts) {
                Ok(item) => {
                    refused.push(None);
                    items.push(item);
                    sent.push(p);
                }
                Err(e) => refused.push(Some(e)),
            }
        }
        let mut tallies = self.quorum_write(items).await;
        // A replica that holds a newer layout refused: take it from that
        // replica and send once more under it (the new replica sets).
        let stale: Vec<PeerId> = {
            let mut peers: Vec<PeerId> = tallies.iter().filter_map(|t| t.stale_layout).collect();
            peers.sort();
            peers.dedup();
            peers
        };
        if !stale.is_empty() {
            let before = cluster.layout_version();
            for peer in &stale {
                cluster.pull_layout(peer).await;
            }
            if cluster.layout_version() > before {
                let again: Vec<usize> = (0..tallies.len())
                    .filter(|&i| tallies[i].stale_layout.is_some() && !tallies[i].ok)
                    .collect();
                let mut retry = Vec::new();
                let mut retried = Vec::new();
                for &i in &again {
                    if let Ok(item) = self.write_item(&sent[i], opts) {
                        retry.push(item);
                        retried.push(i);
                    }
                }
                self.0
                    .engine
                    .metrics()
                    .replication("layout_retry", retry.len() as u64);
                for (i, t) in retried.into_iter().zip(self.quorum_write(retry).await) {
                    tallies[i] = t;
                }
            }
        }
        self.0.engine.metrics().record(
            "put",
            "cluster",
            tallies.iter().all(|t| t.ok),
            start.elapsed(),
        );
        let mut decided = Vec::with_capacity(sent.len());
        for (p, t) in sent.into_iter().zip(tallies) {
            if t.ok {
                decided.push(Ok(self.0.engine.after_put(p, t.created, false).await));
            } else {
                decided.push(Err(quorum_failed(
                    p.op(),
                    &p.address,
                    t.need,
                    t.acked,
                    &t.errors,
                    |peer| cluster_peer_label(cluster, peer),
                )));
            }
        }
        let mut decided = decided.into_iter();
        refused
            .into_iter()
            .map(|r| match r {
                Some(e) => Err(e),
                None => decided
                    .next()
                    .unwrap_or_else(|| Err(StoreError::Internal("no write result".into()))),
            })
            .collect()
    }

    /// The write of one prepared version under the current layouts, or
    /// why it is refused before anything is sent: too few replicas up in
    /// one of its replica sets (so a failed write rarely leaves a copy
    /// behind).
    fn write_item(&self, p: &Prepared, opts: QuorumOpts) -> Result<WriteItem, StoreError> {
        let cluster = self.cluster();
        let Some(route) = cluster.route(&p.meta.key) else {
            return Err(StoreError::Unavailable("the cluster layout is gone".into()));
        };
        let mut needs = Vec::with_capacity(1 + route.older.len());
        for set in route.write_sets() {
            let need = cluster.write_quorum(opts.w, set.len());
            let up: Vec<&PeerId> = set
                .iter()
                .filter(|r| **r == cluster.me() || cluster.peers().is_up(r))
                .collect();
            if up.len() < need {
                self.0.engine.metrics().replication("quorum_failed", 1);
                let down: Vec<String> = set
                    .iter()
                    .filter(|r| !up.contains(r))
                    .map(|r| cluster_peer_label(cluster, r))
                    .collect();
                let which = if needs.is_empty() {
                    ""
                } else {
                    " (of the layout the cluster is moving away from)"
                };
                return Err(StoreError::Quorum {
                    op: p.op(),
                    address: p.address.clone(),
                    during: None,
                    needed: need,
                    acked: 0,
                    detail: format!(
                        "only {} of the {} replicas{which} are up; down: {}",
                        up.len(),
                        set.len(),
                        down.join(", ")
                    ),
                });
            }
            needs.push(need);
        }
        Ok(WriteItem {
            version: slurp_protocol::messages::SealedVersion {
                meta: p.meta.clone(),
                envelope: p.envelope.clone().into(),
            },
            plain: p.node.clone(),
            route,
            needs,
        })
    }

    /// A read in a cluster: the newest version from a read quorum (or, for
    /// older versions, the merged history), opened here. The cache is
    /// consulted by exact version only, since another node may have
    /// written a newer one.
    pub(crate) async fn get(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        route: crate::cluster::Route,
        opts: QuorumOpts,
    ) -> Result<ReadResult, StoreError> {
        let key = address.key();
        let role = &caller.role;
        let latest = matches!(address.temporal, Temporal::Latest | Temporal::Any);
        let generation = self.0.engine.cache().generation(&key);
        let start = Instant::now();
        let (meta, envelope, ordinal) = if latest {
            let heads = self.quorum_heads(&route, &key, opts.r, true).await?;
            let Some(newest) = heads.newest else {
                return Err(StoreError::NotFound(address.to_string()));
            };
            (newest.meta, Some(newest.envelope.0), heads.versions)
        } else {
            let history = self.quorum_history(&route, &key, opts.r).await?;
            let i = address
                .temporal
                .select(history.len())
                .ok_or_else(|| StoreError::NotFound(address.to_string()))?;
            (history[i].clone(), None, i as u64 + 1)
        };
        self.0
            .engine
            .metrics()
            .record("get", "cluster", true, start.elapsed());
        if meta.tombstone {
            self.0
                .engine
                .require_tombstone_reader(caller, &key, &meta)
                .await?;
            return Err(StoreError::Deleted {
                address: address.to_string(),
                version: meta.version,
            });
        }
        self.0.engine.require_reader(caller, &key, &meta).await?;
        let sel = Selector::Exact(meta.version.clone());
        if let Some(hit) = self.0.engine.cache().get(role, &key, &sel).await {
            self.0
                .engine
                .audit()
                .allow(&caller.token_id, role, AuditAction::Read, &key)
                .await;
            let hit = CachedRead {
                node: hit.node,
                ordinal,
            };
            return Ok(read_result(&key, &hit, latest));
        }
        let record = match envelope {
            Some(envelope) if !envelope.is_empty() => StoredRecord { meta, envelope },
            _ => self
                .fetch_version(&route, &key, &meta.version)
                .await?
                .ok_or_else(|| StoreError::NotFound(address.to_string()))?,
        };
        let node = self.0.engine.open(role, &record)?;
        let read = CachedRead {
            node: Arc::new(node),
            ordinal,
        };
        Ok(self
            .0
            .engine
            .finish_read(caller, &key, sel, read, generation, latest)
            .await)
    }

    async fn ask_heads(
        &self,
        cluster: &Cluster,
        peer: PeerId,
        key: &str,
        with_envelope: bool,
    ) -> Result<Head, ReplicationError> {
        if peer == cluster.me() {
            return self.0.engine.local_head(key, with_envelope).map_err(|e| {
                ReplicationError::Rejected {
                    peer,
                    reason: e.to_string(),
                }
            });
        }
        cluster
            .head(&peer, key, with_envelope)
            .await
            .map_err(|source| ReplicationError::Peer { peer, source })
    }

    /// Reads the newest version of `key` from `R` replicas and repairs
    /// those that lack it.
    pub(crate) async fn quorum_heads(
        &self,
        route: &Route,
        key: &str,
        r: Option<usize>,
        with_envelope: bool,
    ) -> Result<HeadsRead, StoreError> {
        let cluster = self.cluster();
        let strategy = RequestStrategy::read(cluster, r, route.read.len());
        let need = strategy.quorum;
        // When this node is a replica, its own copy carries the envelope and
        // the others only say which version they hold: the envelope crosses
        // the network only when a peer has a newer version than ours.
        let g = try_call_many(&route.read, &strategy, |p| {
            let envelope = with_envelope && (p == cluster.me() || !route.read_local);
            self.ask_heads(cluster, p, key, envelope)
        })
        .await;
        if !g.reached(&strategy) {
            return Err(read_quorum_failed(
                cluster,
                key,
                need,
                g.ok.len(),
                &g.failed,
            ));
        }
        let ok = g.ok;
        let mut newest = ok
            .iter()
            .filter_map(|(_, h)| h.latest.as_ref())
            .max_by(|a, b| a.meta.version.cmp(&b.meta.version))
            .cloned();
        if with_envelope
            && let Some(n) = newest.as_mut()
            && !n.meta.tombstone
            && n.envelope.0.is_empty()
        {
            match self.fetch_version(route, key, &n.meta.version).await? {
                Some(rec) => n.envelope = rec.envelope.into(),
                None => {
                    return Err(StoreError::Quorum {
                        op: "read",
                        address: address_of(key),
                        during: None,
                        needed: need,
                        acked: ok.len(),
                        detail: format!("no replica returned version {}", n.meta.version),
                    });
                }
            }
        }
        let versions = ok.iter().map(|(_, h)| h.versions).max().unwrap_or(0);
        if let Some(n) = &newest
            && (with_envelope || n.meta.tombstone)
        {
            let stale: Vec<PeerId> = ok
                .iter()
                .filter(|(_, h)| {
                    h.latest
                        .as_ref()
                        .is_none_or(|l| l.meta.version < n.meta.version)
                })
                .map(|(p, _)| *p)
                .collect();
            if !stale.is_empty() {
                self.repair(stale, n.clone());
            }
        }
        Ok(HeadsRead { newest, versions })
    }

    /// Sends `version` to replicas that lack it, in the background.
    fn repair(&self, peers: Vec<PeerId>, version: SealedVersion) {
        // Bounded: past the limit anti-entropy heals the replica instead.
        let Ok(permit) = self.0.repairs.clone().try_acquire_owned() else {
            self.0
                .engine
                .metrics()
                .replication("read_repair_skipped", 1);
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let cluster = this.cluster().clone();
            for peer in peers {
                let ok = if peer == cluster.me() {
                    let out = this
                        .0
                        .engine
                        .apply_sealed(vec![(version.clone(), None)], None)
                        .await;
                    out.iter()
                        .all(|o| !matches!(o.outcome, WirePut::Rejected { .. }))
                } else {
                    let req = ReplicateRequest::PutVersions {
                        versions: vec![version.clone()],
                        layout_version: Some(cluster.layout_version()),
                        write_quorum_id: None,
                        hint_for: None,
                    };
                    cluster.replicate(&peer, req).await.is_ok()
                };
                if ok {
                    this.0.engine.metrics().replication("read_repair", 1);
                }
            }
        });
    }

    /// The metadata of every version of `key` on `R` replicas, merged.
    pub(crate) async fn quorum_history(
        &self,
        route: &Route,
        key: &str,
        r: Option<usize>,
    ) -> Result<Vec<RecordMeta>, StoreError> {
        let cluster = self.cluster();
        let strategy = RequestStrategy::read(cluster, r, route.read.len());
        let g = try_call_many(&route.read, &strategy, |peer| async move {
            if peer == cluster.me() {
                return self.0.engine.local().history(key).map_err(|e| {
                    ReplicationError::Rejected {
                        peer,
                        reason: e.to_string(),
                    }
                });
            }
            let req = ReplicateRequest::History {
                key: key.to_string(),
            };
            match cluster.replicate(&peer, req).await {
                Ok(ReplicateResponse::History { metas, .. }) => Ok(metas),
                Ok(_) => Err(ReplicationError::unexpected(&peer, "history")),
                Err(e) => Err(ReplicationError::peer(&peer, e)),
            }
        })
        .await;
        if !g.reached(&strategy) {
            return Err(read_quorum_failed(
                cluster,
                key,
                strategy.quorum,
                g.ok.len(),
                &g.failed,
            ));
        }
        let ok = g.ok;
        let mut merged: HashMap<VersionId, RecordMeta> = HashMap::new();
        for (_, metas) in ok {
            for m in metas {
                merged.entry(m.version.clone()).or_insert(m);
            }
        }
        let mut all: Vec<RecordMeta> = merged.into_values().collect();
        all.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(all)
    }

    /// One version of `key`, from this node's store or a replica's.
    pub(crate) async fn fetch_version(
        &self,
        route: &Route,
        key: &str,
        version: &VersionId,
    ) -> Result<Option<slurp_storage::StoredRecord>, StoreError> {
        if let Some(rec) = self.0.engine.local().get(key, version)? {
            return Ok(Some(rec));
        }
        let cluster = self.cluster();
        let peers = route.read.iter().chain(route.write_sets().flatten());
        let mut asked: Vec<&PeerId> = Vec::new();
        for peer in peers.filter(|p| **p != cluster.me()) {
            if asked.contains(&peer) {
                continue;
            }
            asked.push(peer);
            let req = ReplicateRequest::GetVersions {
                key: key.to_string(),
                versions: Some(vec![version.clone()]),
            };
            if let Ok(ReplicateResponse::Versions { versions, .. }) =
                cluster.replicate(peer, req).await
                && let Some(v) = versions.into_iter().find(|v| &v.meta.version == version)
            {
                return Ok(Some(slurp_storage::StoredRecord {
                    meta: v.meta,
                    envelope: v.envelope.0,
                }));
            }
        }
        Ok(None)
    }

    /// Replicates versions to their partitions' replicas; one tally per
    /// item, in order, once each has `need` acknowledgements or every
    /// replica has answered. Replicas still working finish in the
    /// background, and a failed replica's versions go to a fallback with
    /// a hint.
    pub(crate) async fn quorum_write(&self, items: Vec<WriteItem>) -> Vec<WriteTally> {
        let cluster = self.cluster().clone();
        let mut tallies: Vec<WriteTally> = items.iter().map(WriteTally::new).collect();
        let mut acked: Vec<Vec<PeerId>> = vec![Vec::new(); items.len()];
        let mut groups: HashMap<PeerId, Vec<usize>> = HashMap::new();
        let mut waiting: Vec<usize> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let targets = item.route.write_targets();
            waiting.push(targets.len());
            for p in targets {
                groups.entry(p).or_default().push(i);
            }
        }
        let items = std::sync::Arc::new(items);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (peer, idx) in groups {
            // Replica writes outlive the quorum (the slow replicas finish
            // in the background); at most `replica_writes_in_flight` of
            // them run at once, and past it a write waits here.
            let Ok(permit) = self.0.replica_writes.clone().acquire_owned().await else {
                break;
            };
            let this = self.clone();
            let cluster = cluster.clone();
            let items = items.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let r = this.send_group(&cluster, &peer, &items, &idx, None).await;
                // A replica on a newer layout is not down: the write goes
                // again under that layout instead of to a fallback.
                let hint = matches!(&r, Err(e) if !e.stale_layout());
                let _ = tx.send((peer, idx.clone(), r));
                if hint {
                    this.hint_to_fallbacks(&cluster, &peer, &items, &idx).await;
                }
            });
        }
        drop(tx);
        let decided =
            |t: &[WriteTally], w: &[usize]| t.iter().zip(w).all(|(t, &left)| t.ok || left == 0);
        while !decided(&tallies, &waiting) {
            let Some((peer, idx, r)) = rx.recv().await else {
                break;
            };
            match r {
                Ok(outcomes) => {
                    for (&i, o) in idx.iter().zip(outcomes) {
                        waiting[i] -= 1;
                        match o {
                            WirePut::Stored => {
                                acked[i].push(peer);
                                tallies[i].created = true;
                            }
                            WirePut::AlreadyPresent => acked[i].push(peer),
                            WirePut::Rejected { reason } => tallies[i].errors.push((peer, reason)),
                        }
                        tallies[i].count(&items[i], &acked[i]);
                    }
                    self.0.engine.metrics().replication("replica_ack", 1);
                }
                Err(e) => {
                    for &i in &idx {
                        waiting[i] -= 1;
                        tallies[i].errors.push((peer, e.reason()));
                        if e.stale_layout() {
                            tallies[i].stale_layout = Some(peer);
                        }
                    }
                    self.0.engine.metrics().replication("replica_fail", 1);
                }
            }
        }
        for t in &tallies {
            if !t.ok {
                self.0.engine.metrics().replication("quorum_failed", 1);
            }
        }
        tallies
    }

    /// Sends the versions `idx` of `items` to `peer` (this node's own
    /// store when it is `peer`); one outcome per version.
    pub(super) async fn send_group(
        &self,
        cluster: &Cluster,
        peer: &PeerId,
        items: &[WriteItem],
        idx: &[usize],
        hint_for: Option<&PeerId>,
    ) -> Result<Vec<WirePut>, ReplicationError> {
        // Hints name their replica as the wire and the store write it.
        let hint_for = hint_for.map(|p| p.to_base58());
        if *peer == cluster.me() {
            let batch = idx
                .iter()
                .map(|&i| (items[i].version.clone(), items[i].plain.clone()))
                .collect();
            let out = self.0.engine.apply_sealed(batch, hint_for.as_deref()).await;
            return Ok(out.into_iter().map(|o| o.outcome).collect());
        }
        if hint_for.is_none() {
            // Folded with other writes queued for the same peer.
            let puts = idx
                .iter()
                .map(|&i| cluster.put_version(peer, items[i].version.clone()));
            return futures::future::join_all(puts)
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|source| ReplicationError::Peer {
                    peer: *peer,
                    source,
                });
        }
        let req = ReplicateRequest::PutVersions {
            versions: idx.iter().map(|&i| items[i].version.clone()).collect(),
            layout_version: Some(cluster.layout_version()),
            write_quorum_id: None,
            hint_for,
        };
        match cluster.replicate(peer, req).await {
            Ok(ReplicateResponse::Stored { outcomes }) if outcomes.len() == idx.len() => {
                Ok(outcomes.into_iter().map(|o| o.outcome).collect())
            }
            Ok(_) => Err(ReplicationError::unexpected(peer, "stored versions")),
            Err(e) => Err(ReplicationError::peer(peer, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ucxl://claude:developer@shop:checkout/*~3/src/auth.rs";

    /// Two peers, and their ids' last 8 characters as labels show them.
    fn two_peers() -> (PeerId, String, PeerId, String) {
        let one = PeerId::random();
        let two = PeerId::random();
        let short = |p: &PeerId| {
            let s = p.to_base58();
            s[s.len() - 8..].to_string()
        };
        (one, short(&one), two, short(&two))
    }

    #[test]
    fn a_failed_write_names_the_write_the_address_and_the_peers() {
        let (one, one_short, two, two_short) = two_peers();
        let names = |p: &PeerId| {
            let name = (*p == one).then_some("node1");
            peer_label(name, p)
        };
        let failed = vec![
            (one, "did not answer within 2s".to_string()),
            (two, "connection refused".to_string()),
        ];
        let e = quorum_failed("write", A, 2, 1, &failed, names);
        assert_eq!(
            e.to_string(),
            format!(
                "write of ucxl://claude:developer@shop:checkout/*~3/src/auth.rs: 1 of the 2 \
                 replicas needed answered (node1 ({one_short}): did not answer within 2s; \
                 {two_short}: connection refused)"
            )
        );
        // The parent read of a write failed: still the write, and where.
        let read = quorum_failed(
            "read",
            "ucxl://claude:developer@shop:checkout/*^/src/auth.rs",
            2,
            0,
            &[],
            |p| p.to_string(),
        );
        let e = read.quorum_of("write", A, Some("reading the parent version"));
        assert_eq!(
            e.to_string(),
            "write of ucxl://claude:developer@shop:checkout/*~3/src/auth.rs failed while \
             reading the parent version: 0 of the 2 replicas needed answered (no replica \
             answered in time)"
        );
        assert!(matches!(
            e,
            StoreError::Quorum {
                op: "write",
                needed: 2,
                acked: 0,
                ..
            }
        ));
        // Other errors pass through unchanged.
        let other = StoreError::NotFound(A.into()).quorum_of("write", A, None);
        assert!(matches!(other, StoreError::NotFound(_)));
    }

    #[test]
    fn peers_without_a_known_name_are_their_short_id() {
        let (p, short, _, _) = two_peers();
        assert_eq!(peer_label(Some("node2"), &p), format!("node2 ({short})"));
        assert_eq!(peer_label(Some(""), &p), short);
        assert_eq!(peer_label(None, &p), short);
    }
}
