//! The cluster as one node sees it: the layout it holds, the peers it
//! talks to, and where each key lives.
//!
//! A cluster is created once, by `slurp cluster init` on its first node,
//! which makes the cluster key (see [`membership`]). Membership is a
//! versioned [`Layout`] (members with zone and capacity, the replication
//! factor, a fixed partition count) signed by that key. A new node joins
//! with a one-time invite (`slurp cluster invite`, then the node runs with
//! `cluster.join_token`), or an admin certifies a connected node with
//! `slurp cluster join PEER`; `slurp cluster remove|apply` change the
//! layout. Nodes converge by pulling: every `Hello` and health probe
//! carries the sender's layout version, and a node that sees a newer one
//! fetches it (see [`layout`] for how ties break) and takes it only if the
//! cluster key signed it.
//!
//! A peer that is neither in the layout nor holds a valid certificate gets
//! nothing from any protocol: no layout, no health, no node details, no
//! replication, search, forwarding or token lookups. It may only redeem an
//! invite. Only layout members may send replication and search requests.

pub mod anchors;
pub mod authorise;
pub mod batch;
pub mod detector;
pub mod layout;
pub mod membership;
pub mod peers;
pub mod shares;
pub mod transition;
pub mod workers;

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use slurp_protocol::Framed;
use slurp_protocol::messages::{
    ClusterRequest, ClusterResponse, ErrorCode, ForwardRequest, ForwardResponse, HealthStatus,
    NodeInfo, RemoteError, ReplicateRequest, ReplicateResponse, SearchRequest, SearchResponse,
    TokenRecord,
};
use slurp_protocol::placement::{Layout, Member};
use slurp_protocol::{Partition, PartitionScheme};

use crate::audit::AuditSink;
use crate::keys::Custody;
use crate::metrics::Metrics;
use crate::net::{NetClient, NetError};
use layout::LayoutState;
use membership::{Membership, certify};
use peers::PeerBook;
use slurp_crypto::{AuditAction, AuditRecord, ClusterKey, ClusterPublic};
use slurp_protocol::membership::PURPOSE_LAYOUT;
use slurp_protocol::{JoinToken, Signed};

/// Cluster settings (`[cluster]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Copies of every context, a count; fixed by the first layout.
    pub replication_factor: u8,
    /// Durable replica writes a write waits for, a count (per request
    /// `w=`).
    pub write_quorum: u8,
    /// Replicas a read asks, a count (per request `r=`).
    pub read_quorum: u8,
    /// Partitions as a power of two (10 means 1,024 partitions); fixed by
    /// the first layout.
    pub partition_bits: u8,
    /// This node's failure domain for placement, a name.
    pub zone: String,
    /// This node's relative capacity for placement, a weight (at least 1).
    pub capacity: u32,
    /// Ask to be added to the layout at once when redeeming `join_token`,
    /// true or false. For testnets; production clusters certify a node
    /// with the token and add it with `slurp cluster join` and `apply`.
    pub auto_join: bool,
    /// A join token from `slurp cluster invite` (one-time, expiring): the
    /// node redeems it at start if it belongs to no cluster yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// How long a node certificate signed by this node stays valid, a
    /// duration such as `365days`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub certificate_validity: Duration,
    /// How long an invite is valid when `slurp cluster invite` gives no
    /// `--ttl`, a duration such as `1h`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub invite_ttl: Duration,
    /// Shares the cluster key is split into once the layout has this many
    /// members up (0: never split, the key stays whole on the node that
    /// made it), a count.
    pub key_shares: u8,
    /// Shares that rebuild the cluster key, a count (at least 2, at most
    /// `key_shares`).
    pub key_threshold: u8,
    /// How long a member's statement that it acts for a caller (on a
    /// forwarded call or a search it fans out) stays valid, a duration
    /// such as `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub authorisation_ttl: Duration,
    /// How often peers are probed and layouts compared, a duration such as
    /// `1s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub probe_interval: Duration,
    /// A probe without an answer after this long counts as a failure, a
    /// duration such as `2s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub probe_timeout: Duration,
    /// A request to a replica without an answer after this long counts as
    /// a failure (the quorum then tries another), a duration such as `3s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub replica_timeout: Duration,
    /// How often hinted versions are handed back to their replicas, a
    /// duration such as `2s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub handoff_interval: Duration,
    /// Versions per handoff request, a count.
    pub handoff_batch: usize,
    /// Writes (or head reads) to one replica folded into one request at
    /// most, when they queue behind requests in flight; a count.
    pub replica_batch: usize,
    /// Requests in flight to one replica before further ones queue (and
    /// get folded together), a count.
    pub replica_in_flight: usize,
    /// How often every member's token list is pulled (a revocation a
    /// member missed when it was broadcast reaches it within this), a
    /// duration such as `10s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub token_sync_interval: Duration,
    /// How long a token made on another member is trusted before it is
    /// looked up again (so a revocation there takes effect here within it),
    /// a duration such as `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub token_cache_ttl: Duration,
    /// Members each probe round exchanges heartbeats with, a count: the
    /// failure detector's cost per node, whatever the cluster's size.
    pub probe_fanout: usize,
    /// Heartbeats one probe carries at most, a count.
    pub gossip_entries: usize,
    /// The failure detector's suspicion (phi) above which a peer counts as
    /// down, a number (8 is about 1 in 10⁸ that a live peer is that late).
    pub suspicion_threshold: f64,
    /// How far a member's clock may run ahead of this node's, a duration
    /// such as `30s`: a heartbeat dated later than that is refused.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_clock_skew: Duration,
    /// Silence from a member beyond its usual heartbeat interval that is
    /// still normal (a loaded machine, a slow gossip path), a duration such
    /// as `5s`: the failure detector's suspicion grows only after it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub suspicion_pause: Duration,
    /// How long a peer that is not a layout member (a client, a probe, a
    /// removed node) is remembered after it disconnected and went silent,
    /// a duration such as `10m`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub peer_ttl: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            replication_factor: 3,
            write_quorum: 2,
            read_quorum: 2,
            partition_bits: slurp_protocol::partition::DEFAULT_PARTITION_BITS,
            zone: "default".into(),
            capacity: 100,
            auto_join: false,
            join_token: None,
            certificate_validity: Duration::from_secs(365 * 86_400),
            invite_ttl: Duration::from_secs(3600),
            authorisation_ttl: Duration::from_secs(30),
            key_shares: 5,
            key_threshold: 3,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            replica_timeout: Duration::from_secs(3),
            handoff_interval: Duration::from_secs(2),
            handoff_batch: 256,
            replica_batch: 128,
            replica_in_flight: 4,
            token_cache_ttl: Duration::from_secs(30),
            token_sync_interval: Duration::from_secs(10),
            probe_fanout: 4,
            gossip_entries: 64,
            suspicion_threshold: 8.0,
            max_clock_skew: Duration::from_secs(30),
            suspicion_pause: Duration::from_secs(5),
            peer_ttl: Duration::from_secs(600),
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.replication_factor == 0 {
            return Err("cluster.replication_factor must be at least 1".into());
        }
        if self.write_quorum == 0 || self.read_quorum == 0 {
            return Err("cluster.write_quorum and cluster.read_quorum must be at least 1".into());
        }
        if self.write_quorum > self.replication_factor || self.read_quorum > self.replication_factor
        {
            return Err("cluster quorums cannot exceed the replication factor".into());
        }
        PartitionScheme::new(self.partition_bits).map_err(|e| format!("cluster.{e}"))?;
        if self.capacity == 0 {
            return Err("cluster.capacity must be positive".into());
        }
        if let Some(t) = &self.join_token {
            t.parse::<slurp_protocol::JoinToken>()
                .map_err(|e| format!("cluster.join_token: {e}"))?;
        }
        if self.certificate_validity.is_zero()
            || self.invite_ttl.is_zero()
            || self.authorisation_ttl.is_zero()
        {
            return Err("cluster.certificate_validity, cluster.invite_ttl and cluster.authorisation_ttl must be positive".into());
        }
        if self.key_shares != 0 && (self.key_threshold < 2 || self.key_threshold > self.key_shares)
        {
            return Err(
                "cluster.key_threshold must be at least 2 and at most cluster.key_shares".into(),
            );
        }
        if self.handoff_batch == 0 {
            return Err("cluster.handoff_batch must be at least 1".into());
        }
        if self.probe_fanout == 0 || self.gossip_entries == 0 {
            return Err(
                "cluster.probe_fanout and cluster.gossip_entries must be at least 1".into(),
            );
        }
        if !(self.suspicion_threshold.is_finite() && self.suspicion_threshold > 0.0) {
            return Err("cluster.suspicion_threshold must be a positive number".into());
        }
        if self.peer_ttl.is_zero() {
            return Err("cluster.peer_ttl must be positive".into());
        }
        if self.replica_batch == 0 || self.replica_in_flight == 0 {
            return Err(
                "cluster.replica_batch and cluster.replica_in_flight must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// Cluster failures.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("peer refused: {0:?}: {1}")]
    Remote(ErrorCode, String),
    #[error("peer answered with an unexpected message")]
    Unexpected,
    #[error("{0:?} is not a peer id")]
    BadPeerId(String),
    #[error(
        "no cluster layout yet: join members with `slurp cluster join` and `slurp cluster apply`, or run nodes with cluster.auto_join"
    )]
    NoLayout,
    #[error("no layout changes are staged")]
    NothingStaged,
    #[error("layout: {0}")]
    Layout(String),
    #[error("cluster state: {0}")]
    Io(String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(PeerId, Duration),
    #[error(
        "this node belongs to no cluster: run `slurp cluster init` on the first node, or start this one with a join token from `slurp cluster invite`"
    )]
    NotInitialized,
    #[error("this node already belongs to cluster {0}")]
    AlreadyInitialized(slurp_protocol::ClusterId),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the cluster key cannot be rebuilt: {0}")]
    KeyUnavailable(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl ClusterError {
    fn remote(e: RemoteError) -> Self {
        ClusterError::Remote(e.code, e.message)
    }
}

/// Where a key lives under the active layouts (see [`transition`]).
#[derive(Debug, Clone)]
pub struct Route {
    /// The current layout.
    pub layout: Arc<Layout>,
    pub partition: Partition,
    /// The partition's replicas under the current layout, in preference
    /// order.
    pub replicas: Vec<PeerId>,
    /// Whether this node is one of them.
    pub local: bool,
    /// The partition's replica sets under older active layouts that differ
    /// from `replicas` (empty outside a transition): a write needs its
    /// quorum in each of them too.
    pub older: Vec<Vec<PeerId>>,
    /// Where reads go: `replicas`, or the oldest active layout's set
    /// until the new owners have pulled the partition.
    pub read: Vec<PeerId>,
    /// Whether this node is in `read`.
    pub read_local: bool,
}

impl Route {
    /// Every replica set a write must reach a quorum in, current first.
    pub fn write_sets(&self) -> impl Iterator<Item = &Vec<PeerId>> {
        std::iter::once(&self.replicas).chain(&self.older)
    }

    /// Every peer a write goes to, each once.
    pub fn write_targets(&self) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = Vec::new();
        for p in self.write_sets().flatten() {
            if !out.contains(p) {
                out.push(*p);
            }
        }
        out
    }

    /// The members after the replicas in the partition's preference list:
    /// where writes for a down replica go (hinted handoff).
    pub fn fallbacks(&self) -> Vec<PeerId> {
        self.layout
            .fallbacks(self.partition, self.layout.members().len())
            .into_iter()
            .filter_map(|m| member_peer(&self.layout, m))
            .collect()
    }
}

/// What `slurp cluster status` shows, and a member in it: the API's
/// bodies. [`Cluster::status`] leaves `anti_entropy` to the node's
/// anti-entropy worker.
pub use slurp_protocol::api::{ClusterStatusResponse as ClusterStatus, MemberStatus as MemberView};

/// The cluster side of a node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    net: NetClient,
    me: PeerId,
    /// `me` as the layout and the wire write it.
    me_id: String,
    info: RwLock<NodeInfo>,
    config: ClusterConfig,
    layout: LayoutState,
    peers: PeerBook,
    started: Instant,
    metrics: Metrics,
    batcher: batch::Batcher,
    membership: Membership,
    authoriser: authorise::Authoriser,
    custody: Arc<Custody>,
    audit: AuditSink,
    /// The data directory (for `cluster/audit-heads.json`).
    data_dir: std::path::PathBuf,
    /// Serialises updates of the held audit heads.
    heads_lock: tokio::sync::Mutex<()>,
    /// The one-share recipient made for `PrepareShare`, with when.
    share_request: std::sync::Mutex<Option<(slurp_crypto::x25519::Identity, Instant)>>,
    /// Why redeeming `join_token` failed for good (shown in the status).
    join_error: std::sync::Mutex<Option<String>>,
    /// This node's last complete key-rewrap pass.
    rewrap: std::sync::Mutex<Option<slurp_protocol::messages::RewrapReport>>,
    /// Tokens found on other members (or not found), with when.
    tokens: std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<TokenRecord>)>>,
    /// Peers that said they hold a newer layout, for the `layout-pull`
    /// worker (at most [`MAX_LAYOUT_PULLS`]; more wait for the next probe).
    layout_pulls: std::sync::Mutex<std::collections::BTreeSet<PeerId>>,
    /// Wakes the `layout-pull` worker.
    layout_pull_wake: tokio::sync::Notify,
    /// Where this node stands in a layout transition.
    transitions: transition::Transitions,
    /// Replica writes being stored under each layout version (the
    /// transition fence: see [`Cluster::enter_write`]).
    writes: WriteFence,
}

/// Counts replica writes in flight by the layout version they were sent
/// under, so a pull for a newer layout can wait for those sent under older
/// ones to commit.
#[derive(Default)]
struct WriteFence {
    in_flight: std::sync::Mutex<std::collections::BTreeMap<u64, usize>>,
    drained: tokio::sync::Notify,
}

/// A replica write admitted by the fence; leaving it ends the write.
pub struct FenceGuard {
    cluster: WeakCluster,
    version: u64,
}

impl Drop for FenceGuard {
    fn drop(&mut self) {
        if let Some(c) = self.cluster.upgrade() {
            let mut m =
                c.0.writes
                    .in_flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = m.get_mut(&self.version) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.version);
                }
            }
            drop(m);
            c.0.writes.drained.notify_waiters();
        }
    }
}

/// Older active layouts taken at most from one answer.
pub const MAX_HISTORY: usize = 16;

/// Peers remembered at most for a layout pull; requests past it are
/// dropped (the membership probe compares layouts with every peer anyway).
pub const MAX_LAYOUT_PULLS: usize = 64;

/// The name of the cluster key among the keystore's sealed secrets.
const CLUSTER_KEY_SECRET: &str = "cluster";

fn other(action: &str) -> AuditAction {
    AuditAction::Other(action.to_string())
}

/// Token lookups remembered at most (the map is cleared past it).
const TOKEN_CACHE_ENTRIES: usize = 10_000;
/// How long "no member knows this token" is remembered.
const TOKEN_MISS_TTL: Duration = Duration::from_secs(2);

/// What a [`Cluster`] is made of.
pub struct ClusterParts {
    pub net: NetClient,
    /// What this node says about itself.
    pub info: NodeInfo,
    pub config: ClusterConfig,
    pub metrics: Metrics,
    /// The keystore holds the cluster key on the node that made it.
    pub custody: Arc<Custody>,
    pub audit: AuditSink,
    /// The node's libp2p identity, which signs its caller authorisations.
    pub keypair: libp2p::identity::Keypair,
}

/// A [`Cluster`] that does not keep it alive (held by background tasks).
#[derive(Clone)]
pub(crate) struct WeakCluster(std::sync::Weak<Inner>);

impl WeakCluster {
    pub(crate) fn upgrade(&self) -> Option<Cluster> {
        self.0.upgrade().map(Cluster)
    }
}

/// The peer id of member `m` of `layout`. A layout is taken only when
/// every member id is a peer id ([`membership::Membership::verify_layout`]).
pub(crate) fn member_peer(
    layout: &Layout,
    m: slurp_protocol::placement::MemberIndex,
) -> Option<PeerId> {
    PeerId::from_str(&layout.member(m).id).ok()
}

/// The peer ids of every member of `layout`.
pub(crate) fn layout_peers(layout: &Layout) -> Vec<PeerId> {
    layout
        .members()
        .iter()
        .filter_map(|m| PeerId::from_str(&m.id).ok())
        .collect()
}

pub(crate) fn parse_peer(id: &str) -> Result<PeerId, ClusterError> {
    PeerId::from_str(id).map_err(|_| ClusterError::BadPeerId(id.to_string()))
}

impl Cluster {
    /// The cluster state under `data_dir`, talking through `net`.
    pub fn new(parts: ClusterParts, data_dir: &std::path::Path) -> Result<Self, ClusterError> {
        let ClusterParts {
            net,
            info,
            config,
            metrics,
            custody,
            audit,
            keypair,
        } = parts;
        config.validate().map_err(ClusterError::Layout)?;
        let membership = Membership::load(data_dir)?;
        let authoriser = authorise::Authoriser::new(keypair, config.authorisation_ttl);
        let layout = LayoutState::load(data_dir, |s| membership.verify_layout(s))?;
        let peers = PeerBook::new(detector::Detector::new(
            net.peer_id(),
            detector::DetectorConfig {
                interval: config.probe_interval,
                threshold: config.suspicion_threshold,
                max_skew: config.max_clock_skew,
                pause: config.suspicion_pause,
            },
            membership::now_ms(),
        ));
        Ok(Cluster(Arc::new(Inner {
            me: net.peer_id(),
            me_id: net.peer_id().to_base58(),
            net,
            info: RwLock::new(info),
            config,
            layout,
            peers,
            started: Instant::now(),
            metrics,
            batcher: batch::Batcher::default(),
            membership,
            authoriser,
            custody,
            audit,
            join_error: Default::default(),
            rewrap: Default::default(),
            share_request: Default::default(),
            data_dir: data_dir.to_path_buf(),
            heads_lock: Default::default(),
            tokens: Default::default(),
            layout_pulls: Default::default(),
            layout_pull_wake: tokio::sync::Notify::new(),
            transitions: transition::Transitions::load(data_dir)?,
            writes: WriteFence::default(),
        })))
    }

    pub fn me(&self) -> PeerId {
        self.0.me
    }

    /// This node's peer id as the layout and the wire write it.
    pub fn me_id(&self) -> &str {
        &self.0.me_id
    }

    pub fn net(&self) -> &NetClient {
        &self.0.net
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.0.config
    }

    pub fn peers(&self) -> &PeerBook {
        &self.0.peers
    }

    pub fn info(&self) -> NodeInfo {
        self.0
            .info
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the swarm's listen addresses (known once listeners are up).
    pub fn set_listen_addrs(&self, addrs: Vec<String>) {
        self.0
            .info
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .listen_addrs = addrs;
    }

    pub fn layout(&self) -> Option<Arc<Layout>> {
        self.0.layout.current()
    }

    pub fn layout_version(&self) -> u64 {
        self.0.layout.version()
    }

    /// Whether this node is a member of the current layout.
    pub fn is_member(&self) -> bool {
        self.layout()
            .is_some_and(|l| l.member_index(&self.0.me_id).is_some())
    }

    /// Every active layout, oldest first (see [`transition`]); the last
    /// is the current one.
    pub fn active_layouts(&self) -> Vec<Arc<Layout>> {
        self.0.layout.active()
    }

    /// Whether a layout transition is under way (older layouts active).
    pub fn in_transition(&self) -> bool {
        self.0.layout.active().len() > 1
    }

    /// The layout whose replica sets reads (and search and listing covers)
    /// use: the oldest active one until this node reads from the newest.
    pub fn read_layout(&self) -> Option<Arc<Layout>> {
        let active = self.0.layout.active();
        transition::read_layout(&active, self.0.transitions.reading()).cloned()
    }

    pub fn transitions(&self) -> &transition::Transitions {
        &self.0.transitions
    }

    /// This node's own transition report.
    pub fn transition_report(&self) -> slurp_protocol::messages::TransitionReport {
        self.0
            .transitions
            .report(&self.0.layout.active(), &self.0.me_id)
    }

    /// `peer`'s own report of where it stands in a layout transition.
    pub async fn transition_of(
        &self,
        peer: &PeerId,
    ) -> Result<slurp_protocol::messages::TransitionReport, ClusterError> {
        match self
            .cluster_request(peer, ClusterRequest::Transition)
            .await?
        {
            ClusterResponse::Transition(r) => Ok(r),
            _ => Err(ClusterError::Refused(
                "answered a transition request with something else".into(),
            )),
        }
    }

    /// Forgets the layouts older than `version` (the transition to it is
    /// over).
    pub fn collapse_below(&self, version: u64) -> Result<usize, ClusterError> {
        let n = self.0.layout.collapse_below(version)?;
        if n > 0 {
            tracing::info!(version, forgotten = n, "layout transition over");
        }
        Ok(n)
    }

    /// Admits a replica write sent under layout `sent_under` (the
    /// sender's current version; `None` from senders that name none):
    /// refused with this node's version when that is older than this
    /// node's current layout, since the sender does not know the newer
    /// replica sets yet. The guard counts the write as in flight until it
    /// is dropped (after the commit).
    pub fn enter_write(&self, sent_under: Option<u64>) -> Result<FenceGuard, u64> {
        let mut m = self
            .0
            .writes
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.layout_version();
        let version = sent_under.unwrap_or(current);
        if version < current {
            return Err(current);
        }
        *m.entry(version).or_default() += 1;
        Ok(FenceGuard {
            cluster: self.downgrade(),
            version,
        })
    }

    /// Waits until no replica write sent under a layout older than
    /// `version` is in flight here (they were admitted before this node
    /// took `version`; none is admitted after).
    pub async fn writes_before_done(&self, version: u64) {
        loop {
            let drained = self.0.writes.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let busy = self
                .0
                .writes
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .range(..version)
                .next()
                .is_some();
            if !busy {
                return;
            }
            drained.await;
        }
    }

    /// Whether `peer` may send replication and search requests: a member
    /// of an active layout (an old member keeps serving pulls, and may
    /// write, until the transition away from it is over).
    pub fn accepts_from(&self, peer: &PeerId) -> bool {
        let id = peer.to_base58();
        self.0
            .layout
            .active()
            .iter()
            .any(|l| l.member_index(&id).is_some())
    }

    /// Whether this node answers `peer` at all: it is in the current
    /// (signed) layout, or it showed a valid certificate and no later
    /// layout removed it.
    pub fn admits(&self, peer: &PeerId) -> bool {
        let id = peer.to_base58();
        self.accepts_from(peer)
            || (self.0.membership.certified(&id) && !self.0.layout.was_removed(&id))
    }

    /// The cluster this node belongs to, if any.
    pub fn identity(&self) -> Option<Arc<membership::Identity>> {
        self.0.membership.identity()
    }

    /// The membership state (invites, certificates).
    pub fn membership(&self) -> &Membership {
        &self.0.membership
    }

    /// Whether this node holds the whole cluster key (it made it and has
    /// not split it among the members yet).
    pub fn holds_cluster_key(&self) -> bool {
        self.whole_key().ok().flatten().is_some()
    }

    /// Creates the cluster: a new cluster key (sealed in this node's
    /// keystore), this node's certificate, and the first layout with this
    /// node as its only member.
    pub async fn init(&self) -> Result<Arc<Layout>, ClusterError> {
        if let Some(id) = self.identity() {
            return Err(ClusterError::AlreadyInitialized(id.id()));
        }
        if self.layout().is_some() {
            return Err(ClusterError::Refused(
                "this node already holds a layout of another cluster".into(),
            ));
        }
        let key = ClusterKey::generate();
        self.0
            .custody
            .generate_missing()
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        self.0
            .custody
            .keystore()
            .store_secret(CLUSTER_KEY_SECRET, &key.seed()[..])
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        let roles = self.0.custody.roles();
        let cert = certify(
            &key,
            &self.0.me_id,
            roles,
            self.0.config.certificate_validity,
        )?;
        let identity = self.0.membership.adopt(key.public(), cert, &self.0.me_id)?;
        self.publish_directory(&key, None)?;
        self.audit(
            AuditRecord::allow("node", other("cluster_init"), identity.id().to_hex())
                .with_reason(format!("cluster key {}", identity.id())),
        )
        .await;
        self.0
            .layout
            .stage_join(self.member_of(&self.0.me_id, &self.info()));
        self.apply().await
    }

    /// Creates a one-time invite; returns it and the join token.
    pub fn invite(
        &self,
        roles: Option<Vec<slurp_protocol::RoleName>>,
        ttl: Option<Duration>,
    ) -> Result<(membership::Invite, JoinToken), ClusterError> {
        let identity = self.identity().ok_or(ClusterError::NotInitialized)?;
        // Redeeming it takes the cluster key, which only a node certified
        // for admin may rebuild.
        if !identity.cert.roles.iter().any(|r| r.as_str() == "admin") {
            return Err(ClusterError::Refused(
                "this node is not certified for admin, so it cannot redeem invites".into(),
            ));
        }
        let roles = roles.unwrap_or_else(|| self.0.custody.roles());
        self.0.membership.create_invite(
            &self.0.me_id,
            roles,
            ttl.unwrap_or(self.0.config.invite_ttl),
        )
    }

    /// This node's statement that it acts for `role` in the request with
    /// `digest` to `peer` (none before it belongs to a cluster).
    fn authorise(
        &self,
        peer: &PeerId,
        role: &slurp_protocol::RoleName,
        digest: [u8; 32],
    ) -> Result<Option<Signed>, ClusterError> {
        let Some(identity) = self.identity() else {
            return Ok(None);
        };
        self.0
            .authoriser
            .sign(
                &peer.to_base58(),
                role,
                digest,
                identity.certificate.clone(),
            )
            .map(Some)
            .map_err(ClusterError::Io)
    }

    /// Checks the authorisation `peer` attached to a request in which it
    /// acts for `role` (see [`authorise`]).
    pub fn check_authorisation(
        &self,
        peer: &PeerId,
        role: &slurp_protocol::RoleName,
        digest: [u8; 32],
        auth: Option<&Signed>,
    ) -> Result<(), authorise::Refusal> {
        let public =
            self.0.membership.public().ok_or_else(|| {
                authorise::Refusal::Certificate("this node is in no cluster".into())
            })?;
        self.0.authoriser.check(&public, peer, role, digest, auth)
    }

    async fn audit(&self, record: AuditRecord) {
        self.0.audit.record(record).await;
    }

    /// Where `key` lives, or `None` before the first layout.
    pub fn route(&self, key: &str) -> Option<Route> {
        let active = self.0.layout.active();
        let layout = active.last()?.clone();
        let partition = layout.partition_of(key);
        let reading = self.0.transitions.reading();
        let transition::Sets {
            newest: mut replicas,
            mut older,
            mut read,
        } = transition::sets(&active, reading, partition)?;
        let local = replicas.contains(&self.0.me);
        let read_local = read.contains(&self.0.me);
        self.order(&mut replicas);
        self.order(&mut read);
        for o in &mut older {
            self.order(o);
        }
        Some(Route {
            layout,
            partition,
            replicas,
            local,
            older,
            read,
            read_local,
        })
    }

    /// Picks for every partition of `layout` one replica to answer for it
    /// (this node first, then nodes already picked, then any that is up;
    /// never one in `exclude`), so a fan-out asks few nodes and counts
    /// every key once. Partitions with no such replica are returned apart.
    pub fn cover(
        &self,
        layout: &Layout,
        exclude: &[PeerId],
    ) -> (std::collections::BTreeMap<PeerId, Vec<Partition>>, Vec<u32>) {
        let mut plan: std::collections::BTreeMap<PeerId, Vec<Partition>> = Default::default();
        let mut missing = Vec::new();
        for p in 0..layout.partitions().count() {
            let partition = Partition(p as u16);
            let replicas: Vec<PeerId> = layout
                .replicas(partition)
                .iter()
                .filter_map(|&m| member_peer(layout, m))
                .filter(|id| !exclude.contains(id))
                .collect();
            let pick = replicas
                .iter()
                .find(|r| **r == self.0.me)
                .or_else(|| replicas.iter().find(|r| plan.contains_key(*r)))
                .or_else(|| replicas.iter().find(|r| self.0.peers.is_up(r)));
            match pick {
                Some(id) => plan.entry(*id).or_default().push(partition),
                None => missing.push(p),
            }
        }
        (plan, missing)
    }

    /// Orders peers for requests: this node first, then peers that are up
    /// (those the failure detector finds late after those it just heard
    /// from, in steps of 2 phi), then peers that are down; each group in
    /// its given (preference) order.
    pub fn order(&self, peers: &mut [PeerId]) {
        let me = &self.0.me;
        peers.sort_by_cached_key(|p| {
            if p == me {
                (0, 0)
            } else if self.0.peers.is_up(p) {
                (1, (self.0.peers.suspicion(p) / 2.0).floor() as u64)
            } else {
                (2, 0)
            }
        });
    }

    /// `requested` clamped to what `replicas` can give, defaulting to the
    /// configured write quorum.
    pub fn write_quorum(&self, requested: Option<usize>, replicas: usize) -> usize {
        requested
            .unwrap_or(usize::from(self.0.config.write_quorum))
            .clamp(1, replicas.max(1))
    }

    pub fn read_quorum(&self, requested: Option<usize>, replicas: usize) -> usize {
        requested
            .unwrap_or(usize::from(self.0.config.read_quorum))
            .clamp(1, replicas.max(1))
    }

    async fn timed<T>(
        &self,
        peer: &PeerId,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, NetError>>,
    ) -> Result<T, ClusterError> {
        let r = match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::Net(e)),
            Err(_) => Err(ClusterError::Timeout(*peer, limit)),
        };
        match &r {
            Ok(_) => self.0.peers.record_ok(peer),
            Err(e) => {
                self.0
                    .metrics
                    .cluster_request_failures
                    .get_or_create(&crate::metrics::PeerLabels {
                        peer: short_peer(peer).to_string(),
                    })
                    .inc();
                self.0.peers.record_err(peer, e.to_string());
            }
        }
        r
    }

    pub(crate) fn downgrade(&self) -> WeakCluster {
        WeakCluster(Arc::downgrade(&self.0))
    }

    /// Stores one version on `peer`, folded with other writes queued for
    /// it (see [`batch`]).
    pub async fn put_version(
        &self,
        peer: &PeerId,
        version: slurp_protocol::messages::SealedVersion,
    ) -> Result<slurp_protocol::messages::PutOutcome, batch::Failure> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.0.batcher.submit(
            self,
            peer,
            batch::Item::Put {
                version: Box::new(version),
                reply,
            },
        );
        rx.await
            .unwrap_or_else(|_| Err(Arc::new(ClusterError::ShuttingDown)))
    }

    /// `peer`'s head of `key`, folded with other head reads queued for it.
    pub async fn head(
        &self,
        peer: &PeerId,
        key: &str,
        with_envelope: bool,
    ) -> Result<slurp_protocol::messages::Head, batch::Failure> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.0.batcher.submit(
            self,
            peer,
            batch::Item::Head {
                key: key.to_string(),
                with_envelope,
                reply,
            },
        );
        rx.await
            .unwrap_or_else(|_| Err(Arc::new(ClusterError::ShuttingDown)))
    }

    /// A replication request to `peer`; a refusal is an error.
    pub async fn replicate(
        &self,
        peer: &PeerId,
        req: ReplicateRequest,
    ) -> Result<ReplicateResponse, ClusterError> {
        let id = *peer;
        let limit = self.0.config.replica_timeout;
        match self
            .timed(peer, limit, self.0.net.replicate(id, req))
            .await?
        {
            ReplicateResponse::Error(e) => Err(ClusterError::remote(e)),
            r => Ok(r),
        }
    }

    pub async fn search(
        &self,
        peer: &PeerId,
        mut req: SearchRequest,
    ) -> Result<SearchResponse, ClusterError> {
        let id = *peer;
        let auth = self.authorise(peer, req.role(), authorise::search_digest(&req))?;
        req.set_authorisation(auth);
        let limit = self.0.config.replica_timeout;
        match self.timed(peer, limit, self.0.net.search(id, req)).await? {
            SearchResponse::Error(e) => Err(ClusterError::remote(e)),
            r => Ok(r),
        }
    }

    pub async fn forward(
        &self,
        peer: &PeerId,
        mut req: ForwardRequest,
        limit: Duration,
    ) -> Result<ForwardResponse, ClusterError> {
        let id = *peer;
        let auth = self.authorise(peer, req.role(), authorise::forward_digest(&req))?;
        req.set_authorisation(auth);
        match self.timed(peer, limit, self.0.net.forward(id, req)).await? {
            ForwardResponse::Error(e) => Err(ClusterError::remote(e)),
            r => Ok(r),
        }
    }

    async fn cluster_request(
        &self,
        peer: &PeerId,
        req: ClusterRequest,
    ) -> Result<ClusterResponse, ClusterError> {
        let id = *peer;
        let limit = self.0.config.probe_timeout;
        match self.timed(peer, limit, self.0.net.cluster(id, req)).await? {
            ClusterResponse::Error(e) => Err(ClusterError::remote(e)),
            r => Ok(r),
        }
    }

    /// Answers a cluster-state request from `peer`. A peer this node does
    /// not admit may only redeem an invite, be admitted by an admin, or
    /// show a certificate in its `Hello`; everything else is refused
    /// without detail.
    pub async fn serve(&self, peer: PeerId, req: ClusterRequest) -> ClusterResponse {
        let from = peer.to_base58();
        let refuse = |why: &str| {
            ClusterResponse::Error(RemoteError {
                code: ErrorCode::Forbidden,
                message: why.to_string(),
            })
        };
        const NOT_ADMITTED: &str =
            "not a member of this cluster: join with a token from `slurp cluster invite`";
        match req {
            ClusterRequest::Join {
                invite,
                secret,
                node,
                apply,
            } => self.serve_join(&peer, &invite, &secret, node, apply).await,
            ClusterRequest::Admit {
                cluster_key,
                certificate,
            } => self.serve_admit(&peer, &cluster_key.0, certificate).await,
            ClusterRequest::Hello {
                node,
                layout_version,
                certificate,
                keys_version,
            } => {
                // The certificate is checked even from a layout member: it
                // says which roles the member may be granted.
                if let Some(c) = &certificate
                    && let Err(why) = self.0.membership.admit_certificate(&from, c)
                {
                    self.audit(AuditRecord::deny(
                        from.clone(),
                        other("cluster_hello"),
                        from.clone(),
                        why,
                    ))
                    .await;
                }
                if !self.admits(&peer) {
                    return refuse(NOT_ADMITTED);
                }
                let version = self.layout_version();
                self.0.peers.record_info(&peer, node, layout_version);
                self.newer_keys(&peer, keys_version);
                if layout_version > version {
                    self.want_layout_from(&peer);
                }
                ClusterResponse::Hello {
                    node: self.info(),
                    layout_version: version,
                    certificate: self.identity().map(|i| i.certificate.clone()),
                    keys_version: self.keys_version(),
                }
            }
            // A member that was removed still holds a certificate: it may
            // learn the layout that removed it, and nothing else.
            ClusterRequest::GetLayout { .. } | ClusterRequest::Transition
                if !self.admits(&peer) && !self.0.membership.certified(&from) =>
            {
                refuse(NOT_ADMITTED)
            }
            // Heartbeats are members' business: a peer outside the layout
            // can neither feed the detector nor learn who is alive.
            ClusterRequest::Gossip { .. } if !self.accepts_from(&peer) => refuse(NOT_ADMITTED),
            ClusterRequest::GetToken { .. }
            | ClusterRequest::Health
            | ClusterRequest::GetKeys { .. }
            | ClusterRequest::PutAuditHead { .. }
            | ClusterRequest::GetAuditHead { .. }
            | ClusterRequest::PrepareShare
            | ClusterRequest::PutShare { .. }
            | ClusterRequest::GetShare { .. }
                if !self.admits(&peer) =>
            {
                refuse(NOT_ADMITTED)
            }
            ClusterRequest::GetKeys { recipient } => self.serve_keys(&peer, &recipient).await,
            ClusterRequest::PutAuditHead { head } => self.serve_put_audit_head(&peer, head).await,
            ClusterRequest::GetAuditHead { node } => self.serve_get_audit_head(&node),
            ClusterRequest::PrepareShare => self.serve_prepare_share(),
            ClusterRequest::PutShare { sealed } => self.serve_put_share(&from, &sealed.0).await,
            req @ ClusterRequest::GetShare { .. } => self.serve_get_share(&peer, &req).await,
            ClusterRequest::GetLayout { newer_than } => {
                let version = self.layout_version();
                let layout = self
                    .0
                    .layout
                    .signed()
                    .filter(|_| newer_than.is_none_or(|v| version > v));
                let history: Result<Vec<slurp_protocol::Bytes>, _> = self
                    .0
                    .layout
                    .older_signed()
                    .iter()
                    .map(|s| s.encode().map(Into::into))
                    .collect();
                match (layout.map(|l| l.encode()).transpose(), history) {
                    (Ok(layout), Ok(history)) => ClusterResponse::Layout {
                        version,
                        layout: layout.map(Into::into),
                        history,
                    },
                    (Err(e), _) | (_, Err(e)) => ClusterResponse::Error(RemoteError {
                        code: ErrorCode::Internal,
                        message: e.to_string(),
                    }),
                }
            }
            ClusterRequest::Transition => ClusterResponse::Transition(self.transition_report()),
            // Answered by the node, which holds the tokens.
            ClusterRequest::GetToken { .. }
            | ClusterRequest::PutTokens { .. }
            | ClusterRequest::GetTokens => ClusterResponse::Error(RemoteError {
                code: ErrorCode::Internal,
                message: "token lookups are served by the node".into(),
            }),
            ClusterRequest::Health => self.health(Vec::new()),
            ClusterRequest::Gossip { heartbeats } => {
                self.take_heartbeats(&peer, heartbeats);
                // Answering is a sign of life too: the beat is fresh even
                // when this node's own probe round is held up.
                self.0.peers.detector().beat(membership::now_ms());
                let digest = self.0.peers.detector().digest(self.0.config.gossip_entries);
                self.health(digest)
            }
        }
    }

    fn health(&self, heartbeats: Vec<slurp_protocol::messages::Heartbeat>) -> ClusterResponse {
        ClusterResponse::Health {
            status: HealthStatus::Ok,
            layout_version: self.layout_version(),
            uptime_secs: self.0.started.elapsed().as_secs(),
            partitions_syncing: {
                let r = self.transition_report();
                r.partitions_total - r.partitions_done.min(r.partitions_total)
            },
            keys_version: self.keys_version(),
            rewrap: self.rewrap_report(),
            heartbeats,
        }
    }

    /// A peer holds a newer key directory (a rotation): fetch it, and the
    /// new keys this node is granted, in the background.
    fn newer_keys(&self, peer: &PeerId, theirs: u64) {
        if theirs > self.keys_version() && self.identity().is_some() {
            let (this, peer) = (self.clone(), *peer);
            tokio::spawn(async move {
                this.fetch_keys_from(Some(&peer), theirs).await;
            });
        }
    }

    /// Redeems an invite for `peer` (the peer id the connection
    /// authenticated): certifies it and, with `apply`, adds it to the
    /// layout. Every attempt is audited; the joiner learns only "invalid
    /// join token" when the invite does not hold.
    async fn serve_join(
        &self,
        peer_id: &PeerId,
        invite: &str,
        secret: &str,
        node: NodeInfo,
        apply: bool,
    ) -> ClusterResponse {
        let peer_s = peer_id.to_base58();
        let peer = peer_s.as_str();
        let target: String = invite.chars().take(64).collect();
        let deny = |code: ErrorCode, message: String| {
            ClusterResponse::Error(RemoteError { code, message })
        };
        if self.0.layout.was_removed(peer) {
            self.audit(AuditRecord::deny(
                peer,
                other("cluster_join"),
                target,
                "the peer was removed from the layout",
            ))
            .await;
            return deny(
                ErrorCode::Forbidden,
                "this peer was removed from the cluster".into(),
            );
        }
        // The invite is checked before the cluster key is rebuilt (a
        // stranger's guess never costs the share holders anything), and
        // spent after.
        if let Err(why) = self.0.membership.check_invite(invite, secret) {
            self.audit(AuditRecord::deny(
                peer,
                other("cluster_join"),
                target,
                format!("{} ({why})", why.code()),
            ))
            .await;
            return deny(ErrorCode::Forbidden, "invalid join token".into());
        }
        let key = match self.obtain_key(&format!("redeem invite {target}")).await {
            Ok(k) => k,
            Err(e) => return deny(ErrorCode::Unavailable, e.to_string()),
        };
        let spent = match self.0.membership.redeem(invite, secret, peer) {
            Ok(i) => i,
            Err(why) => {
                self.audit(AuditRecord::deny(
                    peer,
                    other("cluster_join"),
                    target,
                    format!("{} ({why})", why.code()),
                ))
                .await;
                return deny(ErrorCode::Forbidden, "invalid join token".into());
            }
        };
        let cert = match certify(
            &key,
            peer,
            spent.roles.clone(),
            self.0.config.certificate_validity,
        ) {
            Ok(c) => c,
            Err(e) => return deny(ErrorCode::Internal, e.to_string()),
        };
        if let Err(e) = self.0.membership.admit_certificate(peer, &cert) {
            return deny(ErrorCode::Internal, e);
        }
        self.0.peers.record_info(peer_id, node.clone(), 0);
        let mut layout = None;
        if apply {
            self.0.layout.stage_join(self.member_of(peer, &node));
            let applied = self.apply_with(&key);
            // Another join applied at the same moment may have taken this
            // one's staged change with its own: what counts is the layout.
            let added = self
                .layout()
                .is_some_and(|l| l.members().iter().any(|m| m.id == peer));
            match applied {
                _ if added => layout = self.0.layout.signed().and_then(|s| s.encode().ok()),
                Ok(_) => {}
                Err(e) => tracing::warn!(%peer, error = %e, "could not add the joining node"),
            }
        }
        let roles: Vec<&str> = spent.roles.iter().map(|r| r.as_str()).collect();
        self.audit(
            AuditRecord::allow(peer, other("cluster_join"), target).with_reason(format!(
                "certified for roles [{}]{}",
                roles.join(","),
                if layout.is_some() {
                    ", added to the layout"
                } else {
                    ""
                }
            )),
        )
        .await;
        tracing::info!(%peer, invite, "a node joined with an invite");
        ClusterResponse::Joined {
            cluster_key: key.public().to_bytes().to_vec().into(),
            certificate: cert,
            layout: layout.map(Into::into),
        }
    }

    /// Answers a certified peer's `GetKeys`: the key directory, and every
    /// key this node holds of the roles the peer's certificate grants,
    /// sealed to the peer's request key. Audited.
    async fn serve_keys(&self, peer_id: &PeerId, recipient: &str) -> ClusterResponse {
        let peer_s = peer_id.to_base58();
        let peer = peer_s.as_str();
        let refuse = |message: String| {
            ClusterResponse::Error(RemoteError {
                code: ErrorCode::Forbidden,
                message,
            })
        };
        let Some(cert) = self.0.membership.certificate_of(peer) else {
            return refuse("show a valid certificate (hello) before asking for keys".into());
        };
        let Ok(recipient) = recipient.parse::<slurp_crypto::x25519::Recipient>() else {
            return ClusterResponse::Error(RemoteError {
                code: ErrorCode::BadRequest,
                message: "recipient is not an age X25519 recipient".into(),
            });
        };
        let grants = match self.0.custody.grants_for(&cert.roles, &recipient) {
            Ok(g) => g,
            Err(e) => {
                return ClusterResponse::Error(RemoteError {
                    code: ErrorCode::Internal,
                    message: e.to_string(),
                });
            }
        };
        if !grants.is_empty() {
            let keys: Vec<String> = grants
                .iter()
                .map(|g| format!("{}/{}:{}", g.role, g.epoch, g.fingerprint))
                .collect();
            let target: String = keys.join(",").chars().take(1024).collect();
            self.audit(
                AuditRecord::allow(peer, other("key_grant"), target).with_reason(format!(
                    "{} keys sealed to the peer's request key",
                    grants.len()
                )),
            )
            .await;
        }
        ClusterResponse::Keys {
            directory: self.0.membership.directory().map(|(_, s)| s),
            grants,
        }
    }

    /// Asks members for the key directory and the keys this node's
    /// certificate grants, and keeps what it did not hold. Returns how
    /// many keys it took.
    pub async fn fetch_keys(&self) -> usize {
        self.fetch_keys_from(None, 0).await
    }

    /// [`Cluster::fetch_keys`], asking `first` first (the peer that showed
    /// a newer directory) and going on until this node holds directory
    /// version `want` or newer and the keys it grants: a member that has
    /// not caught up yet answers with the old directory, which is not
    /// enough.
    async fn fetch_keys_from(&self, first: Option<&PeerId>, want: u64) -> usize {
        if self.identity().is_none() {
            return 0;
        }
        let request_key = slurp_crypto::x25519::Identity::generate();
        let recipient = request_key.to_public().to_string();
        let mut peers: Vec<PeerId> = self.layout().map(|l| layout_peers(&l)).unwrap_or_default();
        peers.extend(self.0.peers.known());
        peers.sort();
        peers.dedup();
        peers.retain(|p| *p != self.0.me && self.admits(p));
        self.order(&mut peers);
        if let Some(first) = first
            && let Some(i) = peers.iter().position(|p| p == first)
        {
            peers[..=i].rotate_right(1);
        }
        let mut taken = 0;
        for peer in peers.iter().take(4) {
            let req = ClusterRequest::GetKeys {
                recipient: recipient.clone(),
            };
            let mut answer = self.cluster_request(peer, req.clone()).await;
            if let Err(ClusterError::Remote(ErrorCode::Forbidden, _)) = &answer {
                // The peer has not seen this node's certificate (its hello
                // came before the peer joined): show it and ask again.
                self.hello(peer).await;
                answer = self.cluster_request(peer, req).await;
            }
            let (directory, grants) = match answer {
                Ok(ClusterResponse::Keys { directory, grants }) => (directory, grants),
                Ok(other) => {
                    tracing::debug!(%peer, answer = ?other, "a member did not answer GetKeys with keys");
                    continue;
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "asking a member for keys failed");
                    continue;
                }
            };
            if let Some(d) = directory {
                match self.0.membership.offer_directory(d) {
                    Ok(true) => self.reload_keys(),
                    Ok(false) => {}
                    Err(e) => {
                        self.audit(AuditRecord::deny(
                            peer.to_base58(),
                            other("key_directory"),
                            peer.to_base58(),
                            e.to_string(),
                        ))
                        .await;
                        continue;
                    }
                }
            }
            let listed = self.0.membership.directory_keys();
            for g in &grants {
                let known = listed.iter().any(|k| {
                    k.role() == &g.role
                        && k.epoch() == g.epoch
                        && k.fingerprint().to_hex() == g.fingerprint
                });
                // The certificate now, not the one at the start: an admin
                // may have cut it while this answer was on its way.
                let granted = self
                    .identity()
                    .is_some_and(|i| i.cert.roles.contains(&g.role));
                let why = if !granted {
                    Some(format!("role {} is not granted to this node", g.role))
                } else if !known {
                    Some(format!(
                        "key {} of {} epoch {} is not in the signed key directory",
                        g.fingerprint, g.role, g.epoch
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    tracing::warn!(%peer, %why, "refused a granted key");
                    self.audit(AuditRecord::deny(
                        peer.to_base58(),
                        other("key_grant"),
                        g.fingerprint.clone(),
                        why,
                    ))
                    .await;
                    continue;
                }
                match slurp_crypto::open_grant(g, &request_key)
                    .map_err(|e| e.to_string())
                    .and_then(|k| self.0.custody.add_granted(&k).map_err(|e| e.to_string()))
                {
                    Ok(true) => taken += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(%peer, error = %e, "a granted key did not open"),
                }
            }
            if self.granted_roles_held() && self.keys_version() >= want {
                break;
            }
        }
        if taken > 0 {
            tracing::info!(keys = taken, "received role keys from the cluster");
            // A cut that landed between the check above and the key being
            // kept: retire again what the certificate no longer grants.
            if let Some(now) = self.identity()
                && let Err(e) = self
                    .0
                    .custody
                    .retire_ungranted(&now.cert.roles, &self.0.membership.directory_keys())
            {
                tracing::error!(error = %e, "cannot retire the keys of roles no longer granted");
            }
        }
        taken
    }

    /// Whether this node holds the current key (the directory's newest
    /// epoch) of every role its certificate grants, and the directory.
    pub fn granted_roles_held(&self) -> bool {
        let Some(identity) = self.identity() else {
            return true;
        };
        let Some((directory, _)) = self.0.membership.directory() else {
            return false;
        };
        let keyring = self.0.custody.keyring();
        identity.cert.roles.iter().all(|r| {
            let newest = directory
                .keys
                .iter()
                .filter(|k| k.role == *r)
                .map(|k| k.epoch)
                .max();
            match (keyring.current(r), newest) {
                (Some(held), Some(newest)) => held.epoch() >= newest,
                (Some(_), None) => true,
                (None, _) => false,
            }
        })
    }

    /// The version of the key directory this node holds (0: none).
    pub fn keys_version(&self) -> u64 {
        self.0
            .membership
            .directory()
            .map(|(d, _)| d.version)
            .unwrap_or(0)
    }

    /// Makes the next epoch of `role`'s key on this node (which must be
    /// granted the role) and publishes it in a new key directory; returns
    /// the new key's epoch and fingerprint. New records are sealed to it
    /// at once here, and on every other node as soon as it holds the new
    /// directory; the key-rewrap workers move stored records onto it.
    pub async fn rotate(
        &self,
        role: &slurp_protocol::RoleName,
    ) -> Result<(u32, slurp_crypto::Fingerprint), ClusterError> {
        let identity = self.identity().ok_or(ClusterError::NotInitialized)?;
        if !identity.cert.roles.contains(role) {
            return Err(ClusterError::Refused(format!(
                "this node is not granted role {role}: rotate it on a node that is"
            )));
        }
        let key = self.obtain_key(&format!("rotate role {role}")).await?;
        let new = self
            .0
            .custody
            .rotate(role)
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        self.publish_directory(&key, None)?;
        self.audit(
            AuditRecord::allow("node", AuditAction::KeyRotate, new.fingerprint().to_hex())
                .with_role(role.clone())
                .with_reason(format!("epoch {}", new.epoch())),
        )
        .await;
        self.announce();
        Ok((new.epoch(), new.fingerprint()))
    }

    /// This node's last complete key-rewrap pass, as health answers give it.
    pub fn rewrap_report(&self) -> Option<slurp_protocol::messages::RewrapReport> {
        *self.0.rewrap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a complete key-rewrap pass that started with key directory
    /// `keys_version` and left `pending` versions on old epochs.
    pub fn note_rewrap(&self, keys_version: u64, pending: u64) {
        *self.0.rewrap.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(slurp_protocol::messages::RewrapReport {
                keys_version,
                pending,
            });
    }

    /// Retires the role key epochs older than each role's current one once
    /// every member of the layout reports a complete rewrap pass against
    /// the current key directory with nothing left on an old epoch (a
    /// member that cannot open some copies reports them as left, and so
    /// holds the retirement back). Runs on a node certified for admin
    /// (it rebuilds the cluster key to sign the new directory); returns the
    /// epochs retired, `role/epoch`.
    pub async fn retire_epochs(&self) -> Result<Vec<String>, ClusterError> {
        let Some(identity) = self.identity() else {
            return Ok(vec![]);
        };
        let admin =
            slurp_protocol::RoleName::new("admin").map_err(|e| ClusterError::Io(e.to_string()))?;
        if !identity.cert.roles.contains(&admin) {
            return Ok(vec![]);
        }
        let Some((directory, _)) = self.0.membership.directory() else {
            return Ok(vec![]);
        };
        let mut newest: std::collections::BTreeMap<&slurp_protocol::RoleName, u32> =
            std::collections::BTreeMap::new();
        for k in &directory.keys {
            let e = newest.entry(&k.role).or_insert(k.epoch);
            *e = (*e).max(k.epoch);
        }
        let old: Vec<slurp_protocol::RetiredEpoch> = directory
            .keys
            .iter()
            .filter(|k| newest.get(&k.role).is_some_and(|n| k.epoch < *n))
            .map(|k| slurp_protocol::RetiredEpoch {
                role: k.role.clone(),
                epoch: k.epoch,
            })
            .collect();
        if old.is_empty() {
            return Ok(vec![]);
        }
        let done = |r: Option<slurp_protocol::messages::RewrapReport>| {
            r.is_some_and(|r| r.keys_version == directory.version && r.pending == 0)
        };
        if !done(self.rewrap_report()) {
            return Ok(vec![]);
        }
        let Some(layout) = self.layout() else {
            return Ok(vec![]);
        };
        if let Some(m) = layout.members().iter().find(|m| {
            m.id != self.0.me_id
                && !PeerId::from_str(&m.id).is_ok_and(|p| done(self.0.peers.rewrap_of(&p)))
        }) {
            tracing::debug!(member = %m.id, "old key epochs stay: a member has not reported a clean rewrap");
            return Ok(vec![]);
        }
        let names: Vec<String> = old
            .iter()
            .map(|r| format!("{}/{}", r.role, r.epoch))
            .collect();
        let key = self
            .obtain_key(&format!("retire key epochs {}", names.join(",")))
            .await?;
        let keys = directory
            .keys
            .iter()
            .filter(|k| !old.iter().any(|r| r.role == k.role && r.epoch == k.epoch))
            .cloned()
            .collect();
        let signed = self.0.membership.sign_directory(&key, keys, None, old)?;
        self.0.membership.offer_directory(signed)?;
        self.reload_keys();
        self.audit(
            AuditRecord::allow("node", other("key_retire_epoch"), names.join(","))
                .with_reason("every member rewrapped its records onto newer epochs"),
        )
        .await;
        tracing::info!(retired = ?names, "retired old role key epochs");
        self.announce();
        Ok(names)
    }

    /// Rebuilds the keyring with the directory's public keys.
    pub fn reload_keys(&self) {
        let retired = self
            .0
            .membership
            .directory()
            .map(|(d, _)| d.retired)
            .unwrap_or_default();
        match self
            .0
            .custody
            .reload_dropping(&self.0.membership.directory_keys(), &retired)
        {
            Ok(retired) if !retired.is_empty() => tracing::warn!(
                ?retired,
                "retired role keys this node made before it joined the cluster"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot load the cluster's key directory"),
        }
    }

    /// On the key holder: publishes a new key directory when the keyring
    /// has public keys the directory lacks (keys made at this start).
    /// Returns whether it published.
    pub fn publish_new_keys(&self) -> Result<bool, ClusterError> {
        let Ok(Some(key)) = self.whole_key() else {
            return Ok(false);
        };
        let listed = self.0.membership.directory_keys();
        let missing = self
            .0
            .custody
            .keyring()
            .public_keys()
            .any(|k| !listed.iter().any(|l| l.fingerprint() == k.fingerprint()));
        if missing {
            self.publish_directory(&key, None)?;
        }
        Ok(missing)
    }

    /// Signs and takes a key directory of every public key this node
    /// knows (the key holder, after `cluster init` or a rotation).
    fn publish_directory(
        &self,
        key: &ClusterKey,
        supersede: Option<slurp_protocol::CertificateFloor>,
    ) -> Result<(), ClusterError> {
        let keys = self
            .0
            .custody
            .keyring()
            .public_keys()
            .map(|k| slurp_protocol::DirectoryKey {
                role: k.role().clone(),
                epoch: k.epoch(),
                recipient: k.recipient().to_string(),
            })
            .collect();
        let signed = self
            .0
            .membership
            .sign_directory(key, keys, supersede, vec![])?;
        self.0.membership.offer_directory(signed)?;
        self.reload_keys();
        Ok(())
    }

    /// Takes a certificate an admin's `cluster join` sent: only on a node
    /// that belongs to no cluster yet, or to the same one.
    async fn serve_admit(
        &self,
        peer_id: &PeerId,
        cluster_key: &[u8],
        certificate: Signed,
    ) -> ClusterResponse {
        let peer_s = peer_id.to_base58();
        let peer = peer_s.as_str();
        let result = ClusterPublic::from_bytes(cluster_key)
            .map_err(|e| ClusterError::Refused(e.to_string()))
            .and_then(|public| self.0.membership.adopt(public, certificate, &self.0.me_id));
        match result {
            Ok(identity) => {
                self.audit(
                    AuditRecord::allow(peer, other("cluster_admit"), identity.id().to_hex())
                        .with_reason("took a certificate of the cluster key"),
                )
                .await;
                tracing::info!(cluster = %identity.id(), "admitted to a cluster");
                match self
                    .0
                    .custody
                    .retire_ungranted(&identity.cert.roles, &self.0.membership.directory_keys())
                {
                    Ok(retired) if !retired.is_empty() => {
                        tracing::warn!(
                            ?retired,
                            "retired the keys of roles this node is no longer granted"
                        );
                        self.audit(
                            AuditRecord::allow("node", other("key_retire"), peer)
                                .with_reason(format!("no longer granted: {}", retired.join(", "))),
                        )
                        .await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot retire the keys of roles no longer granted")
                    }
                }
                let this = self.clone();
                let from = *peer_id;
                tokio::spawn(async move { this.hello(&from).await });
                ClusterResponse::Admitted {
                    cluster: identity.id(),
                }
            }
            Err(e) => {
                self.audit(AuditRecord::deny(
                    peer,
                    other("cluster_admit"),
                    peer,
                    e.to_string(),
                ))
                .await;
                ClusterResponse::Error(RemoteError {
                    code: ErrorCode::Forbidden,
                    message: e.to_string(),
                })
            }
        }
    }

    /// The API token `id` as the member that made it has it, when this
    /// node did not make it. Answers are remembered for
    /// `cluster.token_cache_ttl` (a miss for two seconds), so most requests
    /// with such a token need no lookup.
    pub async fn find_token(&self, id: &str) -> Option<TokenRecord> {
        let layout = self.layout()?;
        {
            let cache = self.0.tokens.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, found)) = cache.get(id) {
                let ttl = if found.is_some() {
                    self.0.config.token_cache_ttl
                } else {
                    TOKEN_MISS_TTL
                };
                if at.elapsed() < ttl {
                    return found.clone();
                }
            }
        }
        let mut members = self.others_in(&layout);
        self.order(&mut members);
        let mut found = None;
        for peer in members.iter().take(8) {
            let req = ClusterRequest::GetToken { id: id.to_string() };
            if let Ok(ClusterResponse::Token { token: Some(t) }) =
                self.cluster_request(peer, req).await
                && t.id == id
            {
                found = Some(t);
                break;
            }
        }
        let mut cache = self.0.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TOKEN_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(id.to_string(), (Instant::now(), found.clone()));
        found
    }

    /// Sends token records (a token made or revoked here) to every other
    /// layout member, in the background; members that miss it get it at
    /// their next token sync.
    pub fn share_tokens(&self, records: Vec<TokenRecord>) {
        let Some(layout) = self.layout() else {
            return;
        };
        let this = self.clone();
        let peers = self.others_in(&layout);
        tokio::spawn(async move {
            let sends = peers.iter().map(|p| {
                this.cluster_request(
                    p,
                    ClusterRequest::PutTokens {
                        tokens: records.clone(),
                    },
                )
            });
            for r in futures::future::join_all(sends).await {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "a member missed a token update; it gets it at its next sync");
                }
            }
        });
    }

    /// Pulls the tokens every other layout member made and keeps them
    /// (only roles each member's certificate allows). Returns how many
    /// members answered and how many records changed.
    pub async fn sync_tokens(&self, tokens: &crate::tokens::TokenStore) -> (usize, usize) {
        let Some(layout) = self.layout() else {
            return (0, 0);
        };
        let peers = self.others_in(&layout);
        let asks = peers
            .iter()
            .map(|p| async move { (p, self.cluster_request(p, ClusterRequest::GetTokens).await) });
        let (mut answered, mut changed) = (0, 0);
        for (peer, r) in futures::future::join_all(asks).await {
            if let Ok(ClusterResponse::Tokens { tokens: records }) = r {
                answered += 1;
                let granted = self
                    .0
                    .membership
                    .certificate_of(&peer.to_base58())
                    .map(|c| c.roles)
                    .unwrap_or_default();
                match tokens.merge(records, |role| granted.contains(role)) {
                    Ok(n) => changed += n,
                    Err(e) => tracing::warn!(error = %e, "cannot keep replicated tokens"),
                }
            }
        }
        (answered, changed)
    }

    /// Asks the `layout-pull` worker to fetch `peer`'s layout: a bounded
    /// queue instead of a task per request, so peers cannot make this
    /// node start unbounded work. Returns whether it was queued.
    pub fn want_layout_from(&self, peer: &PeerId) -> bool {
        let queued = {
            let mut q = self
                .0
                .layout_pulls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            q.len() < MAX_LAYOUT_PULLS && q.insert(*peer)
        };
        if queued {
            self.0.layout_pull_wake.notify_one();
        }
        queued
    }

    /// One pass of the `layout-pull` worker: pulls from every queued peer.
    pub async fn pull_wanted_layouts(&self) -> usize {
        let peers: Vec<PeerId> = std::mem::take(
            &mut *self
                .0
                .layout_pulls
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .collect();
        for p in &peers {
            self.pull_layout(p).await;
        }
        peers.len()
    }

    /// Waits until a layout pull is wanted.
    pub async fn layout_pull_wanted(&self) {
        self.0.layout_pull_wake.notified().await
    }

    /// Fetches `peer`'s layout if it is newer than ours, and takes it if
    /// the cluster key signed it. A layout that is not newer than the one
    /// held (a replay) or not signed by the key is refused and audited.
    pub async fn pull_layout(&self, peer: &PeerId) {
        let have = self.layout_version();
        let req = ClusterRequest::GetLayout {
            newer_than: Some(have),
        };
        match self.cluster_request(peer, req).await {
            Ok(ClusterResponse::Layout {
                layout, history, ..
            }) => {
                if let Some(bytes) = layout
                    && let Err(e) = self.take_layout(peer, &bytes.0).await
                {
                    tracing::warn!(%peer, error = %e, "refused a layout");
                }
                self.take_history(peer, &history).await;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "layout pull failed"),
        }
    }

    /// Takes the older active layouts a peer sent (see
    /// [`layout::LayoutState::adopt_older`]); at most
    /// [`MAX_HISTORY`] of them.
    async fn take_history(&self, from: &PeerId, history: &[slurp_protocol::Bytes]) {
        let floor = self.0.transitions.state().collapsed;
        for bytes in history.iter().take(MAX_HISTORY) {
            let taken = Signed::decode_limited(&bytes.0, membership::MAX_STATEMENT)
                .map_err(|e| ClusterError::Refused(e.to_string()))
                .and_then(|signed| {
                    let layout = self.0.membership.verify_layout(&signed)?;
                    let version = layout.version();
                    Ok((version, self.0.layout.adopt_older(layout, signed, floor)?))
                });
            match taken {
                Ok((version, true)) => {
                    tracing::info!(%from, version, "took an older layout still active on a peer")
                }
                Ok(_) => {}
                Err(e) => {
                    let from = from.to_base58();
                    self.audit(AuditRecord::deny(
                        from.as_str(),
                        other("cluster_layout"),
                        from.as_str(),
                        format!("older layout refused: {e}"),
                    ))
                    .await;
                }
            }
        }
    }

    /// Checks and takes a framed signed layout `from` sent.
    async fn take_layout(&self, from: &PeerId, bytes: &[u8]) -> Result<bool, ClusterError> {
        let from = from.to_base58();
        let from = from.as_str();
        let deny = |why: String| AuditRecord::deny(from, other("cluster_layout"), from, why);
        let signed = match Signed::decode_limited(bytes, membership::MAX_STATEMENT) {
            Ok(s) => s,
            Err(e) => {
                self.audit(deny(format!("undecodable layout: {e}"))).await;
                return Err(ClusterError::Refused(e.to_string()));
            }
        };
        let layout = match self.0.membership.verify_layout(&signed) {
            Ok(l) => l,
            Err(e) => {
                self.audit(deny(e.to_string())).await;
                return Err(e);
            }
        };
        let (version, have) = (layout.version(), self.layout_version());
        if version < have {
            self.audit(deny(format!(
                "stale layout version {version} (holding {have}): a replay"
            )))
            .await;
            return Err(ClusterError::Refused(format!(
                "layout version {version} is older than the held {have}"
            )));
        }
        let taken = self.0.layout.offer(layout, signed)?;
        if taken {
            self.audit(
                AuditRecord::allow(from, other("cluster_layout"), from)
                    .with_reason(format!("took layout version {version}")),
            )
            .await;
        }
        Ok(taken)
    }

    /// What this node tells `peer` about itself: everything to a peer it
    /// admits, only its peer id and version to any other.
    fn info_for(&self, peer: &PeerId) -> NodeInfo {
        let info = self.info();
        if self.admits(peer) {
            return info;
        }
        NodeInfo {
            name: String::new(),
            peer_id: info.peer_id,
            api_addr: None,
            software_version: info.software_version,
            zone: None,
            capacity: None,
            listen_addrs: Vec::new(),
            auto_join: false,
        }
    }

    /// Introduces this node to `peer` (on every new connection), with its
    /// certificate; takes the peer's certificate from the answer.
    pub async fn hello(&self, peer: &PeerId) {
        let Some(identity) = self.identity() else {
            return;
        };
        let req = ClusterRequest::Hello {
            node: self.info_for(peer),
            layout_version: self.layout_version(),
            certificate: Some(identity.certificate.clone()),
            keys_version: self.keys_version(),
        };
        match self.cluster_request(peer, req).await {
            Ok(ClusterResponse::Hello {
                node,
                layout_version,
                certificate,
                keys_version,
            }) => {
                if let Some(c) = certificate
                    && let Err(why) = self.0.membership.admit_certificate(&peer.to_base58(), &c)
                {
                    tracing::warn!(%peer, %why, "peer showed a bad certificate");
                }
                if !self.admits(peer) {
                    return;
                }
                self.0.peers.record_info(peer, node, layout_version);
                self.newer_keys(peer, keys_version);
                if layout_version > self.layout_version() {
                    self.pull_layout(peer).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "hello failed"),
        }
    }

    /// Redeems `cluster.join_token` at its issuer, once this node belongs to
    /// no cluster. A refusal (invalid, used or expired token, another
    /// cluster) is final and shown in the status; an unreachable issuer is
    /// tried again next round.
    async fn join_with_token(&self) {
        if self.identity().is_some()
            || self
                .0
                .join_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        {
            return;
        }
        let Some(text) = &self.0.config.join_token else {
            return;
        };
        let token: JoinToken = match text.parse() {
            Ok(t) => t,
            Err(e) => return self.join_failed(e.to_string()),
        };
        let issuer = match parse_peer(&token.issuer) {
            Ok(p) => p,
            Err(e) => return self.join_failed(e.to_string()),
        };
        let req = ClusterRequest::Join {
            invite: token.id.clone(),
            secret: token.secret.clone(),
            node: self.info(),
            apply: self.0.config.auto_join,
        };
        match self.cluster_request(&issuer, req).await {
            Ok(ClusterResponse::Joined {
                cluster_key,
                certificate,
                layout,
            }) => {
                let result = ClusterPublic::from_bytes(&cluster_key.0)
                    .map_err(|e| ClusterError::Refused(e.to_string()))
                    .and_then(|public| {
                        if public.id() != token.cluster {
                            return Err(ClusterError::Refused(format!(
                                "the issuer answered with cluster {}, the token names {}",
                                public.id(),
                                token.cluster
                            )));
                        }
                        self.0.membership.adopt(public, certificate, &self.0.me_id)
                    });
                match result {
                    Ok(identity) => {
                        tracing::info!(cluster = %identity.id(), "joined the cluster");
                        if let Some(l) = layout
                            && let Err(e) = self.take_layout(&issuer, &l.0).await
                        {
                            tracing::warn!(error = %e, "refused the layout of the join");
                        }
                        // A transition may be under way: learn the older
                        // layouts before serving anything.
                        self.pull_layout(&issuer).await;
                        self.hello(&issuer).await;
                        self.fetch_keys().await;
                    }
                    Err(e) => self.join_failed(e.to_string()),
                }
            }
            Ok(_) => self.join_failed("the issuer answered with an unexpected message".into()),
            Err(ClusterError::Remote(ErrorCode::Forbidden, why)) => self.join_failed(why),
            Err(e) => {
                tracing::info!(issuer = %token.issuer, error = %e, "cannot reach the invite's issuer yet")
            }
        }
    }

    fn join_failed(&self, why: String) {
        tracing::error!(%why, "joining the cluster failed; start the node with a new join token");
        *self.0.join_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// An admin's `cluster join PEER`: certifies the connected `peer`
    /// (roles: all this node holds) and sends it the certificate.
    pub async fn certify_peer(&self, peer: &str) -> Result<(), ClusterError> {
        let id = parse_peer(peer)?;
        let key = self.obtain_key(&format!("certify {peer}")).await?;
        let cert = certify(
            &key,
            peer,
            self.0.custody.roles(),
            self.0.config.certificate_validity,
        )?;
        self.0
            .membership
            .admit_certificate(peer, &cert)
            .map_err(ClusterError::Refused)?;
        let req = ClusterRequest::Admit {
            cluster_key: key.public().to_bytes().to_vec().into(),
            certificate: cert,
        };
        match self.cluster_request(&id, req).await? {
            ClusterResponse::Admitted { cluster } if cluster == key.public().id() => {
                self.audit(
                    AuditRecord::allow("admin", other("cluster_certify"), peer)
                        .with_reason(format!("certified for cluster {cluster}")),
                )
                .await;
                Ok(())
            }
            _ => Err(ClusterError::Unexpected),
        }
    }

    /// An admin's `cluster grant PEER --roles ...`: certifies `peer` anew
    /// for exactly `roles` (fewer roles revoke a grant), voids its older
    /// certificates everywhere through a new key directory, and sends the
    /// certificate to the peer. After a revocation, rotate the roles it
    /// lost: it is never granted their new epochs, so it cannot read
    /// records written after the rotation.
    pub async fn grant(
        &self,
        peer: &str,
        roles: Vec<slurp_protocol::RoleName>,
    ) -> Result<GrantOutcome, ClusterError> {
        let id = parse_peer(peer)?;
        if peer != self.0.me_id && !self.admits(&id) {
            return Err(ClusterError::Refused(format!(
                "{peer} is not a member of this cluster: invite it or `slurp cluster join` it first"
            )));
        }
        let known = self.0.custody.role_names();
        if let Some(r) = roles.iter().find(|r| !known.contains(r)) {
            return Err(ClusterError::Refused(format!(
                "role {r} is not in the roles file"
            )));
        }
        let key = self.obtain_key(&format!("grant {peer}")).await?;
        // The floor is the new certificate's issue time: it must be later
        // than the one it replaces, or that one would stay valid.
        if let Some(old) = self.0.membership.certificate_of(peer).or_else(|| {
            (peer == self.0.me_id)
                .then(|| self.identity().map(|i| i.cert.clone()))
                .flatten()
        }) {
            if old.issued_ms > membership::now_ms().saturating_add(2_000) {
                return Err(ClusterError::Refused(format!(
                    "{peer}'s certificate was issued {} ms from now: fix the clocks first",
                    old.issued_ms - membership::now_ms()
                )));
            }
            while membership::now_ms() <= old.issued_ms {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        let signed = certify(
            &key,
            peer,
            roles.clone(),
            self.0.config.certificate_validity,
        )?;
        let cert =
            membership::check_certificate(&key.public(), &signed, peer, membership::now_ms())
                .map_err(ClusterError::Refused)?;
        self.publish_directory(
            &key,
            Some(slurp_protocol::CertificateFloor {
                peer_id: peer.to_string(),
                issued_ms: cert.issued_ms,
            }),
        )?;
        let delivered = if peer == self.0.me_id {
            self.0
                .membership
                .adopt(key.public(), signed, &self.0.me_id)
                .map(|_| true)?
        } else {
            self.0
                .membership
                .admit_certificate(peer, &signed)
                .map_err(ClusterError::Refused)?;
            let req = ClusterRequest::Admit {
                cluster_key: key.public().to_bytes().to_vec().into(),
                certificate: signed,
            };
            match self.cluster_request(&id, req).await {
                Ok(ClusterResponse::Admitted { .. }) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "the new certificate did not reach the peer");
                    false
                }
            }
        };
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        self.audit(
            AuditRecord::allow("admin", other("cluster_grant"), peer).with_reason(format!(
                "certified for roles [{}]; older certificates void{}",
                names.join(","),
                if delivered { "" } else { "; not delivered" }
            )),
        )
        .await;
        self.announce();
        Ok(GrantOutcome {
            peer: peer.to_string(),
            roles,
            issued_ms: cert.issued_ms,
            not_after_ms: cert.not_after_ms,
            delivered,
        })
    }

    /// One round of membership upkeep: redeem the join token if this node
    /// belongs to no cluster yet, probe every member and known peer, and
    /// pull newer layouts. Returns how many peers answered.
    pub async fn tick(&self) -> usize {
        self.join_with_token().await;
        self.maybe_split().await;
        if !self.granted_roles_held() {
            self.fetch_keys().await;
        }
        let now_ms = membership::now_ms();
        self.0.peers.detector().beat(now_ms);
        let layout = self.layout();
        let members: Vec<PeerId> = layout
            .as_ref()
            .map(|l| layout_peers(l))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| *p != self.0.me && self.admits(p))
            .collect();
        let targets = self.probe_targets(&members);
        // Forget peers that are not members and went away long ago: they
        // are neither probed nor dialled again.
        for gone in self
            .0
            .peers
            .expire(self.0.config.peer_ttl, |p| members.contains(p))
        {
            tracing::debug!(peer = %gone, "forgot a peer that is not a member");
        }
        // Where the layout says each member listens: a member that is down
        // and not connected is dialed there again before it is probed, so
        // two members that restarted while the other was away find each
        // other without a bootstrap peer, even after Kademlia dropped the
        // address that failed.
        let addresses: std::collections::HashMap<PeerId, String> = layout
            .as_ref()
            .map(|l| {
                l.members()
                    .iter()
                    .filter_map(|m| Some((PeerId::from_str(&m.id).ok()?, m.address.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let addresses = &addresses;
        let members_ref = &members;
        let probes = targets.iter().map(|peer| async move {
            let state = self.0.peers.get(peer);
            if state
                .as_ref()
                .is_some_and(|p| p.failures > 0 && !p.connected)
                && let Some(addr) = addresses.get(peer)
                && let Ok(addr) = addr.parse::<libp2p::Multiaddr>()
            {
                let dial = self.0.net.dial(addr);
                match tokio::time::timeout(self.0.config.probe_timeout, dial).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "member still unreachable at its layout address");
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "dialing the member's layout address timed out");
                    }
                }
            }
            let known = state.is_some_and(|p| p.info.is_some());
            self.0.metrics.cluster_probes.inc();
            if !known {
                self.hello(peer).await;
                return self.0.peers.is_up(peer);
            }
            // Heartbeats are exchanged between layout members; a certified
            // node outside the layout (or a member probing one) only asks
            // how the peer is doing, which carries the layout version.
            let probe = if self.is_member() && members_ref.contains(peer) {
                ClusterRequest::Gossip {
                    heartbeats: self.0.peers.detector().digest(self.0.config.gossip_entries),
                }
            } else {
                ClusterRequest::Health
            };
            match self.cluster_request(peer, probe).await {
                Ok(ClusterResponse::Health {
                    status,
                    layout_version,
                    uptime_secs,
                    keys_version,
                    rewrap,
                    heartbeats,
                    ..
                }) => {
                    self.take_heartbeats(peer, heartbeats);
                    self.0.peers.record_health(
                        peer,
                        status,
                        layout_version,
                        uptime_secs,
                        rewrap,
                    );
                    self.newer_keys(peer, keys_version);
                    if layout_version > self.layout_version() {
                        self.pull_layout(peer).await;
                    }
                    true
                }
                _ => false,
            }
        });
        let answered = futures::future::join_all(probes)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        self.0
            .metrics
            .cluster_layout_version
            .set(self.layout_version() as i64);
        self.0.metrics.cluster_peers_up.set(answered as i64);
        self.0
            .metrics
            .cluster_peers_suspected
            .set(members.iter().filter(|p| !self.0.peers.is_up(p)).count() as i64);
        answered
    }

    /// Whom this round probes: `probe_fanout` members at random, members
    /// never spoken to yet (a hello), members that failed here but whose
    /// heartbeat others still see advancing (to find out whether they are
    /// back), and connected peers this node admits that are not members
    /// (certified nodes outside the layout). Each group is bounded, so a
    /// round costs the same whatever the cluster's size.
    fn probe_targets(&self, members: &[PeerId]) -> Vec<PeerId> {
        use rand::seq::SliceRandom;
        let fanout = self.0.config.probe_fanout;
        let mut rng = rand::thread_rng();
        let mut targets: Vec<PeerId> = members.choose_multiple(&mut rng, fanout).copied().collect();
        let mut add = |extra: Vec<PeerId>| {
            for p in extra {
                if !targets.contains(&p) {
                    targets.push(p);
                }
            }
        };
        let mut unmet: Vec<PeerId> = members
            .iter()
            .filter(|p| self.0.peers.get(p).is_none_or(|s| s.info.is_none()))
            .copied()
            .collect();
        unmet.shuffle(&mut rng);
        unmet.truncate(fanout);
        add(unmet);
        let now = Instant::now();
        let mut returning: Vec<PeerId> = members
            .iter()
            .filter(|p| {
                self.0.peers.failed(p)
                    && self.0.peers.detector().knows(p)
                    && !self.0.peers.detector().suspects(p, now)
            })
            .copied()
            .collect();
        returning.shuffle(&mut rng);
        returning.truncate(fanout);
        add(returning);
        let mut others: Vec<PeerId> = self
            .0
            .peers
            .known()
            .into_iter()
            .filter(|p| {
                *p != self.0.me
                    && !members.contains(p)
                    && self.admits(p)
                    && self.0.peers.get(p).is_some_and(|s| s.connected)
            })
            .collect();
        others.shuffle(&mut rng);
        others.truncate(fanout);
        add(others);
        targets
    }

    /// Takes the heartbeats `from` sent (a member): of layout members
    /// only, at most `gossip_entries` of them.
    fn take_heartbeats(&self, from: &PeerId, heartbeats: Vec<slurp_protocol::messages::Heartbeat>) {
        let Some(layout) = self.layout() else {
            return;
        };
        let now = Instant::now();
        let now_ms = membership::now_ms();
        for hb in heartbeats.iter().take(self.0.config.gossip_entries) {
            let Ok(peer) = PeerId::from_str(&hb.peer) else {
                continue;
            };
            if peer != *from && layout.member_index(&hb.peer).is_none() {
                continue;
            }
            if self.0.peers.detector().observe(peer, hb, now, now_ms) == detector::Observed::Refused
            {
                tracing::debug!(%from, about = %peer, "refused a heartbeat from the future");
            }
        }
    }

    fn member_of(&self, id: &str, info: &NodeInfo) -> Member {
        Member {
            id: id.to_string(),
            zone: info.zone.clone().unwrap_or_else(|| "default".into()),
            capacity: info
                .capacity
                .map(|c| c.clamp(1, u64::from(u32::MAX)) as u32)
                .unwrap_or(100),
            address: info
                .listen_addrs
                .first()
                .cloned()
                .unwrap_or_else(|| format!("/p2p/{id}")),
        }
    }

    /// Stages `peer` (this node when `None`) to join with the given zone
    /// and capacity (defaults: what the peer announced).
    pub fn stage_join(
        &self,
        peer: Option<&str>,
        zone: Option<String>,
        capacity: Option<u32>,
    ) -> Result<Member, ClusterError> {
        let id = peer.unwrap_or(&self.0.me_id).to_string();
        let peer_id = parse_peer(&id)?;
        let info = if peer_id == self.0.me {
            Some(self.info())
        } else {
            self.0.peers.get(&peer_id).and_then(|p| p.info)
        };
        let mut m = match info {
            Some(i) => self.member_of(&id, &i),
            None => Member {
                id: id.clone(),
                zone: "default".into(),
                capacity: 100,
                address: format!("/p2p/{id}"),
            },
        };
        if let Some(z) = zone {
            m.zone = z;
        }
        if let Some(c) = capacity {
            m.capacity = c;
        }
        self.0.layout.stage_join(m.clone());
        Ok(m)
    }

    pub fn stage_remove(&self, peer: &str) -> Result<(), ClusterError> {
        parse_peer(peer)?;
        self.0.layout.stage_remove(peer);
        Ok(())
    }

    /// Commits the staged changes as the next layout, signed with the
    /// cluster key, and tells the peers.
    pub async fn apply(&self) -> Result<Arc<Layout>, ClusterError> {
        if self.identity().is_none() {
            return Err(ClusterError::NotInitialized);
        }
        if self.0.layout.staged().is_empty() {
            return Err(ClusterError::NothingStaged);
        }
        let key = self
            .obtain_key(&format!(
                "publish layout version {}",
                self.layout_version() + 1
            ))
            .await?;
        self.apply_with(&key)
    }

    /// [`Cluster::apply`] with the cluster key at hand.
    fn apply_with(&self, key: &ClusterKey) -> Result<Arc<Layout>, ClusterError> {
        let l = self.0.layout.apply(
            self.0.config.replication_factor,
            self.0.config.partition_bits,
            |layout| {
                key.sign(PURPOSE_LAYOUT, layout)
                    .map_err(|e| ClusterError::Io(e.to_string()))
            },
        )?;
        self.announce();
        Ok(l)
    }

    /// The members of `layout` other than this node, by peer id.
    fn others_in(&self, layout: &Layout) -> Vec<PeerId> {
        layout_peers(layout)
            .into_iter()
            .filter(|m| *m != self.0.me)
            .collect()
    }

    /// Sends `Hello` (with our layout version) to every known peer, so
    /// they pull a new layout now rather than at their next probe.
    fn announce(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut peers = this.0.peers.known();
            if let Some(l) = this.layout() {
                peers.extend(layout_peers(&l));
            }
            peers.sort();
            peers.dedup();
            peers.retain(|p| *p != this.0.me);
            futures::future::join_all(peers.iter().map(|p| this.hello(p))).await;
        });
    }

    /// What `slurp cluster status` shows, but for `anti_entropy`
    /// (left at its default: the anti-entropy worker knows it).
    pub fn status(&self) -> ClusterStatus {
        let layout = self.layout();
        let info = self.info();
        let mut members = Vec::new();
        if let Some(l) = &layout {
            for m in l.members() {
                let mut peer = match PeerId::from_str(&m.id) {
                    Ok(p) => self.0.peers.view(&p),
                    Err(_) => peers::PeerView::unknown(&m.id),
                };
                // The layout's zone is the one placement uses.
                peer.zone = Some(m.zone.clone());
                let is_self = m.id == self.0.me_id;
                if is_self {
                    peer.up = true;
                    peer.connected = true;
                    peer.name = Some(info.name.clone());
                    peer.api_addr = info.api_addr.clone();
                    peer.layout_version = l.version();
                    peer.status = Some(HealthStatus::Ok);
                    peer.uptime_secs = self.0.started.elapsed().as_secs();
                    peer.last_seen_ms_ago = Some(0);
                }
                members.push(MemberView {
                    id: m.id.clone(),
                    capacity: m.capacity,
                    address: m.address.clone(),
                    partitions: l.partitions_of(&m.id).len(),
                    is_self,
                    peer,
                });
            }
        }
        let others = self
            .0
            .peers
            .known()
            .into_iter()
            .filter(|p| {
                layout
                    .as_ref()
                    .is_none_or(|l| l.member_index(&p.to_base58()).is_none())
            })
            .map(|p| self.0.peers.view(&p))
            .collect();
        ClusterStatus {
            peer_id: self.0.me_id.clone(),
            listen_addrs: info.listen_addrs,
            name: info.name,
            cluster: self.identity().map(|i| i.id().to_hex()),
            keys_held: self.granted_roles_held(),
            key_holder: self.identity().is_some() && self.holds_cluster_key(),
            key_custody: self.key_custody(),
            certificate_not_after_ms: self.identity().map(|i| i.cert.not_after_ms),
            join_error: self
                .0
                .join_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            layout_version: layout.as_ref().map(|l| l.version()).unwrap_or(0),
            replication_factor: layout.as_ref().map(|l| l.replication_factor()),
            partitions: layout.as_ref().map(|l| l.partitions().count()),
            write_quorum: self.0.config.write_quorum,
            read_quorum: self.0.config.read_quorum,
            auto_join: self.0.config.auto_join,
            member: self.is_member(),
            members,
            others,
            staged: self.0.layout.staged(),
            // The anti-entropy and rebalance workers', which the cluster
            // does not see.
            anti_entropy: Default::default(),
            transition: None,
        }
    }
}

/// A peer id short enough for a metric label or an error message (its
/// last 8 characters).
/// The last 8 characters of a peer id, as logs and errors name a peer.
pub(crate) fn short_peer(peer: &PeerId) -> String {
    let id = peer.to_base58();
    id[id.len().saturating_sub(8)..].to_string()
}

/// What `Cluster::grant` did: the API's body.
pub use slurp_protocol::api::GrantResponse as GrantOutcome;
