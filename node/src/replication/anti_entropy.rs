//! Anti-entropy: replicas heal without being read.
//!
//! A replica that missed writes (it was down, a message was lost, a
//! hinted copy never came back) would otherwise stay behind until a quorum
//! read of each address repaired it, and would answer listings and
//! searches without what it missed. Here every member compares, on a
//! schedule, the partitions it shares with each other member and exchanges
//! the versions either side lacks.
//!
//! **The digest.** The local store keeps, per slot, the XOR of the BLAKE3
//! hashes of its version keys and their count, updated on every commit
//! (`slurp_storage::Store::digest`). The digest of any slot range is the
//! XOR of its slots', so the tree two replicas descend is implicit: a
//! request names slot ranges and gets their digests back, counting only
//! the partitions both sides replicate under the layout version the
//! request names. Comparing everything costs one request per peer when
//! all partitions agree (16 ranges of 4,096 slots); a range that differs
//! is split in 16 until it lies inside one partition and holds few
//! versions (`replication.anti_entropy_leaf_versions`), and the versions
//! of such a leaf are listed by id on both sides.
//!
//! **The exchange.** Union merge: the versions the peer lacks are pushed
//! (`PutVersions`, the newest of a key first, so a tombstone never lands
//! after the version it deletes) and those this node lacks are fetched
//! and stored like any replicated version (checked, then indexed if this
//! node holds a reader key). Envelopes are never opened to do it. The
//! exchange is throttled (`anti_entropy_bytes_per_sec`, leaves in flight)
//! and idempotent, so a pass cut short by a restart is simply done again;
//! what survives a restart is when each partition last converged with each
//! co-replica (`cluster/anti-entropy.json`).

use libp2p::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use slurp_protocol::messages::{
    ErrorCode, KeyScope, KeyVersion, KeyVersions, PutOutcome as WirePut, RangeDigest,
    ReplicateRequest, ReplicateResponse, SealedVersion, SlotRange,
};
use slurp_protocol::placement::Layout;
use slurp_protocol::wire::Bytes;
use slurp_protocol::{Partition, PartitionScheme, Slot, VersionId};
use slurp_storage::{ScanCursor, SlotScan, Store};

use super::{ReplicationConfig, ReplicationError};
use crate::cluster::Cluster;
use crate::metrics::Metrics;
use crate::store::Engine;
use crate::workers::PassReport;

/// The worker's name in `slurp workers`.
pub const WORKER: &str = "anti-entropy";

/// How often the state is written when nothing but agreement times
/// changed (a restart then reports older "last converged" times, never
/// wrong ones).
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Ranges a differing range is split into.
const FANOUT: u32 = 16;
/// Rounds of compare-and-exchange with one peer in one pass.
const ROUNDS: usize = 3;

/// [`shared_partitions`] less the partitions a layout transition is
/// moving: the rebalance worker moves those, throttled, and anti-entropy
/// takes them up again once the transition is over.
pub fn shared_settled(cluster: &Cluster, layout: &Layout, a: &str, b: &str) -> Vec<bool> {
    let mut shared = shared_partitions(layout, a, b);
    let moving = crate::cluster::transition::moving(&cluster.active_layouts());
    for (s, m) in shared.iter_mut().zip(moving) {
        *s &= !m;
    }
    shared
}

/// Which partitions members `a` and `b` both replicate under `layout`,
/// indexed by partition number.
pub fn shared_partitions(layout: &Layout, a: &str, b: &str) -> Vec<bool> {
    let count = layout.partitions().count() as usize;
    let (Some(ia), Some(ib)) = (layout.member_index(a), layout.member_index(b)) else {
        return vec![false; count];
    };
    (0..count)
        .map(|p| {
            let r = layout.replicas(Partition(p as u16));
            r.contains(&ia) && r.contains(&ib)
        })
        .collect()
}

/// Partitions overlapping `range`.
fn partitions_in(scheme: PartitionScheme, range: SlotRange) -> std::ops::RangeInclusive<u16> {
    let first = scheme.partition_of_slot(Slot(range.first)).0;
    let last = scheme.partition_of_slot(Slot(range.last)).0;
    first..=last
}

fn is_shared(shared: &[bool], p: u16) -> bool {
    shared.get(usize::from(p)).copied().unwrap_or(false)
}

/// Whether `range` overlaps a shared partition.
fn touches_shared(scheme: PartitionScheme, range: SlotRange, shared: &[bool]) -> bool {
    !range.is_empty() && partitions_in(scheme, range).any(|p| is_shared(shared, p))
}

/// The maximal slot ranges inside `range` made of shared partitions only:
/// what a leaf lists on both sides.
fn shared_runs(scheme: PartitionScheme, range: SlotRange, shared: &[bool]) -> Vec<SlotRange> {
    let mut runs: Vec<SlotRange> = Vec::new();
    if range.is_empty() {
        return runs;
    }
    for p in partitions_in(scheme, range) {
        if !is_shared(shared, p) {
            continue;
        }
        let s = scheme.slots(Partition(p));
        let lo = (*s.start()).max(range.first);
        let hi = (*s.end()).min(range.last);
        match runs.last_mut() {
            Some(r) if u32::from(r.last) + 1 == u32::from(lo) => r.last = hi,
            _ => runs.push(SlotRange {
                first: lo,
                last: hi,
            }),
        }
    }
    runs
}

/// The digest of `range` in this node's store, over the shared partitions
/// only.
pub fn range_digest(
    store: &Store,
    scheme: PartitionScheme,
    range: SlotRange,
    shared: &[bool],
) -> slurp_storage::RangeDigest {
    let mut d = slurp_storage::RangeDigest::default();
    for run in shared_runs(scheme, range, shared) {
        d.merge(&store.digest(run.first..=run.last));
    }
    d
}

/// The wire form of a digest.
pub fn to_wire(d: &slurp_storage::RangeDigest) -> RangeDigest {
    RangeDigest {
        versions: d.versions,
        digest: Bytes(d.digest.to_vec()),
    }
}

fn same(ours: &slurp_storage::RangeDigest, theirs: &RangeDigest) -> bool {
    ours.versions == theirs.versions && theirs.digest.0.as_slice() == ours.digest.as_slice()
}

/// The ranges `range` splits into when it differs: up to [`FANOUT`] of
/// equal size, down to single slots.
fn children(range: SlotRange) -> Vec<SlotRange> {
    let len = range.len();
    if len <= 1 {
        return Vec::new();
    }
    let step = len.div_ceil(FANOUT).max(1);
    let mut out = Vec::new();
    let mut first = u32::from(range.first);
    let last = u32::from(range.last);
    while first <= last {
        let end = (first + step - 1).min(last);
        out.push(SlotRange {
            first: first as u16,
            last: end as u16,
        });
        first = end + 1;
    }
    out
}

/// Version ids per key, as a range listing gives them.
pub(crate) type Listing = BTreeMap<String, BTreeSet<VersionId>>;

/// The versions `from` lists that `to` lacks, newest first within a key,
/// so a tombstone is stored before the versions it deletes.
pub(crate) fn missing(from: &Listing, to: &Listing) -> Vec<KeyVersion> {
    let mut out = Vec::new();
    for (key, ids) in from {
        let have = to.get(key);
        for v in ids.iter().rev() {
            if !have.is_some_and(|h| h.contains(v)) {
                out.push(KeyVersion {
                    key: key.clone(),
                    version: v.clone(),
                });
            }
        }
    }
    out
}

/// The answer to a peer's [`ReplicateRequest::Digests`].
pub(crate) fn serve_digests(
    store: &Store,
    cluster: &Cluster,
    peer: &PeerId,
    layout_version: u64,
    ranges: &[SlotRange],
) -> ReplicateResponse {
    let Some(layout) = cluster.layout() else {
        return ReplicateResponse::Error(slurp_protocol::messages::RemoteError {
            code: ErrorCode::LayoutMismatch,
            message: "this node has no layout yet".into(),
        });
    };
    if layout.version() != layout_version {
        return ReplicateResponse::Error(slurp_protocol::messages::RemoteError {
            code: ErrorCode::LayoutMismatch,
            message: format!(
                "digests asked under layout version {layout_version}; this node is on {}",
                layout.version()
            ),
        });
    }
    let shared = shared_settled(cluster, &layout, cluster.me_id(), &peer.to_base58());
    let scheme = layout.partitions();
    ReplicateResponse::Digests {
        digests: ranges
            .iter()
            .map(|r| to_wire(&range_digest(store, scheme, *r, &shared)))
            .collect(),
    }
}

/// The answer to a peer's slot scan ([`KeyScope::Slots`]): version ids of
/// a slot range, a page at a time.
pub(crate) fn serve_slot_ids(
    store: &Store,
    first: u16,
    last: u16,
    after: Option<Bytes>,
    limit: usize,
) -> Result<ReplicateResponse, String> {
    if first > last {
        return Err(format!("slot range {first}..={last} is empty"));
    }
    let after = match after {
        Some(c) => {
            // A cursor is a version key of the range: it starts with a slot
            // inside it.
            let slot =
                c.0.get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or("the cursor is too short")?;
            if slot < first || slot > last {
                return Err(format!(
                    "the cursor's slot {slot} is outside {first}..={last}"
                ));
            }
            Some(ScanCursor::from_bytes(c.0))
        }
        None => None,
    };
    let page = store
        .scan_slots(&SlotScan {
            slots: first..=last,
            since: None,
            after,
            limit: limit.max(1),
            envelopes: false,
        })
        .map_err(|e| e.to_string())?;
    let mut entries: Vec<KeyVersions> = Vec::new();
    for v in page.versions {
        match entries.last_mut() {
            Some(e) if e.key == v.meta.key => e.versions.push(v.meta.version),
            _ => entries.push(KeyVersions {
                key: v.meta.key,
                versions: vec![v.meta.version],
            }),
        }
    }
    Ok(ReplicateResponse::VersionIds {
        entries,
        next: page.next.map(|c| Bytes(c.as_bytes().to_vec())),
    })
}

/// The answer to a peer's [`ReplicateRequest::Fetch`].
pub(crate) fn serve_fetch(
    store: &Store,
    entries: &[KeyVersion],
    max: usize,
    budget: usize,
) -> Result<ReplicateResponse, String> {
    let mut versions = Vec::new();
    let mut bytes = 0usize;
    for e in entries {
        if versions.len() >= max || bytes >= budget {
            break;
        }
        if let Some(rec) = store.get(&e.key, &e.version).map_err(|e| e.to_string())? {
            bytes += rec.envelope.len() + 256;
            versions.push(SealedVersion {
                meta: rec.meta,
                envelope: rec.envelope.into(),
            });
        }
    }
    Ok(ReplicateResponse::Fetched { versions })
}

/// Bytes moved per second at most, over a pass.
pub(crate) struct Throttle {
    rate: u64,
    start: Instant,
    moved: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(rate: u64) -> Self {
        Throttle {
            rate: rate.max(1),
            start: Instant::now(),
            moved: AtomicU64::new(0),
        }
    }

    /// Accounts `n` bytes and waits until the pass is back under its rate.
    pub(crate) async fn take(&self, n: u64) {
        let total = self.moved.fetch_add(n, Ordering::Relaxed) + n;
        let due = Duration::from_secs_f64(total as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// What one exchange moved.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moved {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) refused: u64,
}

impl Moved {
    fn add(&mut self, o: Moved) {
        self.sent += o.sent;
        self.received += o.received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.refused += o.refused;
    }
}

/// partition → peers whose last comparison differed.
type Differing = BTreeMap<u16, BTreeSet<String>>;

/// Per partition and co-replica: when their digests last agreed, and
/// whether the last comparison found them differing. Kept across
/// restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// The layout version the entries were recorded under; a new layout
    /// starts them over.
    layout_version: u64,
    /// partition → peer → ms since the Unix epoch of the last agreement.
    matched: BTreeMap<u16, BTreeMap<String, u64>>,
    /// partition → peers whose last comparison differed.
    differing: Differing,
}

/// Anti-entropy as `slurp workers` and `slurp cluster status` show it:
/// the API's body.
pub use slurp_protocol::api::AntiEntropyStatus;

/// The anti-entropy worker of one node.
#[derive(Clone)]
pub struct AntiEntropy(Arc<Inner>);

struct Inner {
    store: Engine,
    cluster: Cluster,
    config: ReplicationConfig,
    metrics: Metrics,
    path: PathBuf,
    state: Mutex<State>,
    started_ms: u64,
    /// When the state was last written, and the differing partitions it
    /// held then: it is written when those change, else once a minute.
    saved: Mutex<Option<(Instant, Differing)>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl AntiEntropy {
    /// The worker, with the state it kept in `data_dir` (a missing or
    /// unreadable file starts over: comparisons are cheap and idempotent).
    pub fn new(
        store: Engine,
        cluster: Cluster,
        config: ReplicationConfig,
        metrics: Metrics,
        data_dir: &std::path::Path,
    ) -> Self {
        let path = data_dir.join("cluster").join("anti-entropy.json");
        let state = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        AntiEntropy(Arc::new(Inner {
            store,
            cluster,
            config,
            metrics,
            path,
            state: Mutex::new(state),
            started_ms: now_ms(),
            saved: Mutex::new(None),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self) {
        let bytes = {
            let st = self.state();
            let mut saved = self
                .0
                .saved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, differing)) = &*saved
                && *differing == st.differing
                && at.elapsed() < SAVE_EVERY
            {
                return;
            }
            let Ok(bytes) = serde_json::to_vec(&*st) else {
                return;
            };
            *saved = Some((Instant::now(), st.differing.clone()));
            bytes
        };
        if let Some(dir) = self.0.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = self.0.path.with_extension("json.tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &self.0.path);
        }
    }

    /// Where things stand, per partition this node replicates.
    pub fn status(&self) -> AntiEntropyStatus {
        let all = self.0.store.local().digest(0..=u16::MAX);
        let mut s = self.partition_status();
        s.store_digest = all.digest.iter().map(|b| format!("{b:02x}")).collect();
        s.store_versions = all.versions;
        s
    }

    fn partition_status(&self) -> AntiEntropyStatus {
        let Some(layout) = self.0.cluster.layout() else {
            return AntiEntropyStatus::default();
        };
        let me = self.0.cluster.me_id().to_string();
        let Some(mi) = layout.member_index(&me) else {
            return AntiEntropyStatus {
                layout_version: layout.version(),
                ..Default::default()
            };
        };
        let state = self.state();
        let current = state.layout_version == layout.version();
        let mut s = AntiEntropyStatus {
            layout_version: layout.version(),
            ..Default::default()
        };
        for p in 0..layout.partitions().count() {
            let partition = Partition(p as u16);
            let replicas = layout.replicas(partition);
            if !replicas.contains(&mi) {
                continue;
            }
            s.partitions += 1;
            let others: Vec<&str> = replicas
                .iter()
                .filter(|&&r| r != mi)
                .map(|&r| layout.member(r).id.as_str())
                .collect();
            let key = p as u16;
            if current
                && state
                    .differing
                    .get(&key)
                    .is_some_and(|d| others.iter().any(|o| d.contains(*o)))
            {
                s.differing += 1;
                continue;
            }
            let matched = state.matched.get(&key);
            let times: Option<Vec<u64>> = others
                .iter()
                .map(|o| matched.and_then(|m| m.get(*o)).copied())
                .collect();
            // Agreements from before this start say when the partition
            // last converged, not that it still does.
            match times.filter(|t| t.iter().all(|&at| at >= self.0.started_ms)) {
                Some(t) if current => {
                    s.converged += 1;
                    let at = t.into_iter().min().unwrap_or_else(now_ms);
                    s.oldest_converged_ms = Some(s.oldest_converged_ms.map_or(at, |o| o.min(at)));
                }
                _ => s.unknown += 1,
            }
        }
        s
    }

    fn publish(&self, status: &AntiEntropyStatus) {
        let g = &self.0.metrics.anti_entropy_partitions;
        for (state, n) in [
            ("converged", status.converged),
            ("differing", status.differing),
            ("unknown", status.unknown),
        ] {
            g.get_or_create(&crate::metrics::StateLabels { state })
                .set(i64::from(n));
        }
    }

    fn count(&self, what: &'static str, n: u64) {
        if n > 0 {
            self.0
                .metrics
                .anti_entropy
                .get_or_create(&crate::metrics::CauseLabels { cause: what })
                .inc_by(n);
        }
    }

    /// One pass: every member this node shares partitions with, that is
    /// up, is compared and exchanged with.
    pub async fn pass(&self) -> Result<PassReport, String> {
        let cluster = &self.0.cluster;
        let Some(layout) = cluster.layout() else {
            return Ok(PassReport {
                items: 0,
                note: "no layout yet".into(),
            });
        };
        let me = cluster.me_id().to_string();
        if layout.member_index(&me).is_none() {
            return Ok(PassReport {
                items: 0,
                note: "not a member of the layout".into(),
            });
        }
        {
            let mut st = self.state();
            if st.layout_version != layout.version() {
                *st = State {
                    layout_version: layout.version(),
                    ..Default::default()
                };
            }
        }
        let throttle = Throttle::new(self.0.config.anti_entropy_bytes_per_sec);
        let mut moved = Moved::default();
        let mut peers = 0;
        let mut failures = Vec::new();
        let mut down = 0;
        for m in layout.members() {
            if m.id == me {
                continue;
            }
            let shared = shared_settled(cluster, &layout, &me, &m.id);
            if !shared.iter().any(|s| *s) {
                continue;
            }
            let Ok(peer) = m.id.parse::<PeerId>() else {
                continue;
            };
            if !cluster.peers().is_up(&peer) {
                down += 1;
                continue;
            }
            peers += 1;
            match self.sync_peer(&layout, &peer, &shared, &throttle).await {
                Ok(mv) => moved.add(mv),
                Err(e) => {
                    tracing::debug!(peer = %m.id, error = %e, "anti-entropy with a peer failed");
                    failures.push(e.to_string());
                }
            }
        }
        self.save();
        let status = self.status();
        self.publish(&status);
        let mut note = format!(
            "{} of {} partitions converged, {} differing; {peers} peers compared, {down} down; {} versions sent, {} received",
            status.converged, status.partitions, status.differing, moved.sent, moved.received
        );
        if moved.refused > 0 {
            note += &format!(", {} refused", moved.refused);
        }
        if !failures.is_empty() {
            // A peer that fails is compared again next pass; the pass
            // fails only when no peer could be compared.
            if peers > 0 && failures.len() == peers {
                return Err(failures.join("; "));
            }
            note += &format!("; {} peers failed: {}", failures.len(), failures.join("; "));
        }
        Ok(PassReport {
            items: moved.sent + moved.received,
            note,
        })
    }

    /// Compares and exchanges with `peer` until their shared partitions
    /// agree, or [`ROUNDS`] rounds.
    async fn sync_peer(
        &self,
        layout: &Arc<Layout>,
        peer: &PeerId,
        shared: &[bool],
        throttle: &Throttle,
    ) -> Result<Moved, ReplicationError> {
        let mut moved = Moved::default();
        for round in 0..ROUNDS {
            let leaves = self.compare(layout, peer, shared, round == 0).await?;
            if leaves.is_empty() {
                break;
            }
            let in_flight = self.0.config.anti_entropy_partitions_in_flight.max(1);
            let results: Vec<Result<Moved, ReplicationError>> = futures::stream::iter(leaves)
                .map(|leaf| self.exchange(layout, peer, leaf, throttle, round == 0))
                .buffer_unordered(in_flight)
                .collect()
                .await;
            for r in results {
                moved.add(r?);
            }
        }
        self.count("versions_sent", moved.sent);
        self.count("versions_received", moved.received);
        self.count("bytes_sent", moved.bytes_sent);
        self.count("bytes_received", moved.bytes_received);
        self.count("versions_refused", moved.refused);
        Ok(moved)
    }

    /// The digests of `ranges` on `peer`, in order.
    async fn remote_digests(
        &self,
        layout: &Layout,
        peer: &PeerId,
        ranges: &[SlotRange],
    ) -> Result<Vec<RangeDigest>, ReplicationError> {
        let mut out = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(self.0.config.anti_entropy_batch.max(1)) {
            let req = ReplicateRequest::Digests {
                layout_version: layout.version(),
                ranges: chunk.to_vec(),
            };
            match self.call(peer, req).await? {
                ReplicateResponse::Digests { digests } if digests.len() == chunk.len() => {
                    out.extend(digests)
                }
                _ => return Err(ReplicationError::unexpected(peer, "digests")),
            }
        }
        Ok(out)
    }

    async fn call(
        &self,
        peer: &PeerId,
        req: ReplicateRequest,
    ) -> Result<ReplicateResponse, ReplicationError> {
        self.0
            .cluster
            .replicate(peer, req)
            .await
            .map_err(|e| ReplicationError::peer(peer, e))
    }

    /// Descends the ranges that differ from `peer`; returns the leaves to
    /// exchange. Records agreements and differences per partition.
    async fn compare(
        &self,
        layout: &Layout,
        peer: &PeerId,
        shared: &[bool],
        first_round: bool,
    ) -> Result<Vec<SlotRange>, ReplicationError> {
        let scheme = layout.partitions();
        let partition_slots = 1u32 << (16 - u32::from(scheme.bits()));
        let store = self.0.store.local();
        let mut frontier: Vec<SlotRange> = children(SlotRange {
            first: 0,
            last: u16::MAX,
        })
        .into_iter()
        .filter(|r| touches_shared(scheme, *r, shared))
        .collect();
        if first_round {
            self.count(
                "partitions_compared",
                shared.iter().filter(|s| **s).count() as u64,
            );
        }
        let mut leaves = Vec::new();
        while !frontier.is_empty() {
            let theirs = self.remote_digests(layout, peer, &frontier).await?;
            let mut next = Vec::new();
            for (range, t) in frontier.iter().zip(theirs) {
                let ours = range_digest(store, scheme, *range, shared);
                let whole: Vec<u16> = if range.len() >= partition_slots {
                    partitions_in(scheme, *range)
                        .filter(|p| is_shared(shared, *p))
                        .collect()
                } else {
                    Vec::new()
                };
                if same(&ours, &t) {
                    self.agreed(peer, &whole);
                    continue;
                }
                // Few versions either side: list them (over the shared
                // partitions of the range) rather than descend further.
                let most = ours.versions.max(t.versions);
                if most <= self.0.config.anti_entropy_leaf_versions as u64 || range.len() == 1 {
                    leaves.push(*range);
                    continue;
                }
                next.extend(
                    children(*range)
                        .into_iter()
                        .filter(|r| touches_shared(scheme, *r, shared)),
                );
            }
            frontier = next;
        }
        Ok(leaves)
    }

    fn agreed(&self, peer: &PeerId, partitions: &[u16]) {
        let peer = peer.to_base58();
        let peer = peer.as_str();
        if partitions.is_empty() {
            return;
        }
        let now = now_ms();
        let mut st = self.state();
        for p in partitions {
            st.matched
                .entry(*p)
                .or_default()
                .insert(peer.to_string(), now);
            if let Some(d) = st.differing.get_mut(p) {
                d.remove(peer);
                if d.is_empty() {
                    st.differing.remove(p);
                }
            }
        }
    }

    fn differs(&self, peer: &PeerId, partition: u16, count: bool) {
        let peer = peer.to_base58();
        let peer = peer.as_str();
        let newly = self
            .state()
            .differing
            .entry(partition)
            .or_default()
            .insert(peer.to_string());
        if newly && count {
            self.count("partitions_differing", 1);
        }
    }

    /// Every version id of `range` here, by key.
    pub(crate) fn local_ids(
        &self,
        range: SlotRange,
    ) -> Result<BTreeMap<String, BTreeSet<VersionId>>, slurp_storage::ReadError> {
        let store = self.0.store.local();
        let mut out: BTreeMap<String, BTreeSet<VersionId>> = BTreeMap::new();
        let mut after = None;
        loop {
            let page = store.scan_slots(&SlotScan {
                slots: range.first..=range.last,
                since: None,
                after,
                limit: 1024,
                envelopes: false,
            })?;
            for v in page.versions {
                out.entry(v.meta.key).or_default().insert(v.meta.version);
            }
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// Every version id of `range` on `peer`, by key.
    pub(crate) async fn remote_ids(
        &self,
        peer: &PeerId,
        range: SlotRange,
        settled_under: Option<u64>,
    ) -> Result<BTreeMap<String, BTreeSet<VersionId>>, ReplicationError> {
        let mut out: BTreeMap<String, BTreeSet<VersionId>> = BTreeMap::new();
        let mut after = None;
        // Bounded: a page holds at least one version, and a range holds
        // finitely many; the cap stops a peer that lies with cursors.
        for _ in 0..100_000 {
            let req = ReplicateRequest::VersionIds {
                scope: KeyScope::Slots {
                    first: range.first,
                    last: range.last,
                    after: after.take(),
                    limit: self.0.config.anti_entropy_batch.max(1) as u32,
                    settled_under,
                },
            };
            match self.call(peer, req).await? {
                ReplicateResponse::VersionIds { entries, next } => {
                    for e in entries {
                        out.entry(e.key).or_default().extend(e.versions);
                    }
                    match next {
                        Some(c) => after = Some(c),
                        None => return Ok(out),
                    }
                }
                _ => return Err(ReplicationError::unexpected(peer, "version ids")),
            }
        }
        Err(ReplicationError::Malformed {
            peer: *peer,
            why: "a slot scan that never ends".into(),
        })
    }

    /// Lists both sides of `range`, pushes what `peer` lacks and fetches
    /// what this node lacks.
    async fn exchange(
        &self,
        layout: &Layout,
        peer: &PeerId,
        range: SlotRange,
        throttle: &Throttle,
        count_differing: bool,
    ) -> Result<Moved, ReplicationError> {
        let scheme = layout.partitions();
        let shared = shared_settled(
            &self.0.cluster,
            layout,
            self.0.cluster.me_id(),
            &peer.to_base58(),
        );
        let mut ours = BTreeMap::new();
        let mut theirs = BTreeMap::new();
        for run in shared_runs(scheme, range, &shared) {
            ours.extend(self.local_ids(run)?);
            theirs.extend(self.remote_ids(peer, run, None).await?);
        }
        let push = missing(&ours, &theirs);
        let pull = missing(&theirs, &ours);
        // The partitions that turned out to differ (or, when the lists
        // agree but the digests did not, every shared one of the leaf:
        // versions past their expiry that a sweep has yet to remove).
        let mut differing: BTreeSet<u16> = push
            .iter()
            .chain(&pull)
            .map(|e| scheme.partition_of(&e.key).0)
            .collect();
        if differing.is_empty() {
            differing = partitions_in(scheme, range)
                .filter(|p| is_shared(&shared, *p))
                .collect();
        }
        for p in differing {
            self.differs(peer, p, count_differing);
        }
        let mut moved = Moved::default();
        if !push.is_empty() {
            moved.add(self.push(layout, peer, push, throttle).await?);
        }
        if !pull.is_empty() {
            moved.add(self.pull(peer, pull, throttle).await?);
        }
        Ok(moved)
    }

    pub(crate) async fn push(
        &self,
        layout: &Layout,
        peer: &PeerId,
        entries: Vec<KeyVersion>,
        throttle: &Throttle,
    ) -> Result<Moved, ReplicationError> {
        let store = self.0.store.local();
        let max = self.0.config.anti_entropy_batch.max(1);
        let budget = self.0.config.message_bytes.max(1);
        let mut moved = Moved::default();
        let mut batch: Vec<SealedVersion> = Vec::new();
        let mut bytes = 0usize;
        let mut entries = entries.into_iter();
        loop {
            while batch.len() < max && bytes < budget {
                let Some(e) = entries.next() else { break };
                // Swept or collected since the listing: nothing to send.
                if let Some(rec) = store.get(&e.key, &e.version)? {
                    bytes += rec.envelope.len() + 256;
                    batch.push(SealedVersion {
                        meta: rec.meta,
                        envelope: rec.envelope.into(),
                    });
                }
            }
            if batch.is_empty() {
                break;
            }
            throttle.take(bytes as u64).await;
            let n = batch.len();
            let req = ReplicateRequest::PutVersions {
                versions: std::mem::take(&mut batch),
                layout_version: Some(layout.version()),
                write_quorum_id: None,
                hint_for: None,
            };
            match self.call(peer, req).await? {
                ReplicateResponse::Stored { outcomes } if outcomes.len() == n => {
                    for o in outcomes {
                        match o.outcome {
                            WirePut::Stored => moved.sent += 1,
                            WirePut::AlreadyPresent => {}
                            WirePut::Rejected { .. } => moved.refused += 1,
                        }
                    }
                }
                _ => return Err(ReplicationError::unexpected(peer, "stored versions")),
            }
            moved.bytes_sent += bytes as u64;
            bytes = 0;
        }
        Ok(moved)
    }

    pub(crate) async fn pull(
        &self,
        peer: &PeerId,
        mut wanted: Vec<KeyVersion>,
        throttle: &Throttle,
    ) -> Result<Moved, ReplicationError> {
        let mut moved = Moved::default();
        let max = self.0.config.anti_entropy_batch.max(1);
        while !wanted.is_empty() {
            let ask: Vec<KeyVersion> = wanted.iter().take(max).cloned().collect();
            let req = ReplicateRequest::Fetch {
                entries: ask.clone(),
            };
            let versions = match self.call(peer, req).await? {
                ReplicateResponse::Fetched { versions } => versions,
                _ => return Err(ReplicationError::unexpected(peer, "fetched versions")),
            };
            // Only what was asked for; anything else is the peer's lie.
            let asked: BTreeSet<(&str, &VersionId)> =
                ask.iter().map(|e| (e.key.as_str(), &e.version)).collect();
            let versions: Vec<SealedVersion> = versions
                .into_iter()
                .filter(|v| asked.contains(&(v.meta.key.as_str(), &v.meta.version)))
                .collect();
            // What the peer no longer holds (swept, collected) is not asked
            // again; an answer cut short by its budget is continued.
            let answered = versions.len();
            let last = versions
                .last()
                .and_then(|v| {
                    ask.iter()
                        .position(|e| e.key == v.meta.key && e.version == v.meta.version)
                })
                .map_or(ask.len(), |i| i + 1);
            let done = if answered == 0 { ask.len() } else { last };
            wanted.drain(..done.min(wanted.len()));
            let bytes: usize = versions.iter().map(|v| v.envelope.0.len() + 256).sum();
            throttle.take(bytes as u64).await;
            moved.bytes_received += bytes as u64;
            let items = versions.into_iter().map(|v| (v, None)).collect();
            for o in self.0.store.apply_sealed(items, None).await {
                match o.outcome {
                    WirePut::Stored => moved.received += 1,
                    WirePut::AlreadyPresent => {}
                    WirePut::Rejected { .. } => moved.refused += 1,
                }
            }
        }
        Ok(moved)
    }
}

impl crate::workers::Worker for AntiEntropy {
    fn name(&self) -> &'static str {
        WORKER
    }

    fn description(&self) -> &'static str {
        "compares every partition with its co-replicas by digest and exchanges the versions either side lacks"
    }

    fn interval(&self) -> Duration {
        self.0.config.anti_entropy_interval
    }

    fn pass(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<PassReport, String>> + Send + '_>>
    {
        Box::pin(AntiEntropy::pass(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_cover_the_range_without_overlap() {
        for (first, last) in [(0u16, u16::MAX), (0, 4095), (64, 127), (5, 5), (10, 20)] {
            let r = SlotRange { first, last };
            let c = children(r);
            if r.len() == 1 {
                assert!(c.is_empty());
                continue;
            }
            assert!(c.len() <= FANOUT as usize);
            assert_eq!(c.first().unwrap().first, first);
            assert_eq!(c.last().unwrap().last, last);
            for w in c.windows(2) {
                assert_eq!(u32::from(w[0].last) + 1, u32::from(w[1].first));
            }
        }
    }

    #[test]
    fn a_leaf_lists_only_runs_of_shared_partitions() {
        let scheme = PartitionScheme::new(10).unwrap();
        let mut shared = vec![false; 1024];
        for p in [0, 1, 2, 5, 1023] {
            shared[p] = true;
        }
        let runs = shared_runs(
            scheme,
            SlotRange {
                first: 0,
                last: 511,
            },
            &shared,
        );
        assert_eq!(
            runs,
            vec![
                SlotRange {
                    first: 0,
                    last: 191
                },
                SlotRange {
                    first: 320,
                    last: 383
                }
            ]
        );
        let tail = shared_runs(
            scheme,
            SlotRange {
                first: 65_500,
                last: u16::MAX,
            },
            &shared,
        );
        assert_eq!(
            tail,
            vec![SlotRange {
                first: 65_500,
                last: u16::MAX
            }]
        );
        assert!(
            shared_runs(
                scheme,
                SlotRange {
                    first: 200,
                    last: 300
                },
                &shared
            )
            .is_empty()
        );
    }

    #[test]
    fn aligned_children_never_straddle_a_partition() {
        // 1,024 partitions of 64 slots: every range of the descent is a
        // union of whole partitions or lies inside one.
        let scheme = PartitionScheme::new(10).unwrap();
        let mut frontier = children(SlotRange {
            first: 0,
            last: u16::MAX,
        });
        while let Some(r) = frontier.pop() {
            let ps = partitions_in(scheme, r);
            if r.len() >= 64 {
                assert_eq!(r.first % 64, 0);
                assert_eq!(r.len() % 64, 0);
            } else {
                assert_eq!(ps.start(), ps.end());
            }
            if r.len() > 16 {
                frontier.extend(children(r));
            }
        }
    }
}
