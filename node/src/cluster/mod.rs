//! The cluster as one node sees it: the layout it holds, the peers it
//! talks to, and where each key lives.
//!
//! Membership is a versioned [`Layout`] (members with zone and capacity,
//! the replication factor, a fixed partition count). An admin changes it
//! with `slurp cluster join|remove|apply` on any node, or a node started
//! with `cluster.auto_join` adds peers that have been healthy for a while
//! (for testnets). Nodes converge by pulling: every `Hello` and health
//! probe carries the sender's layout version, and a node that sees a newer
//! one fetches it (see [`layout`] for how ties break).
//!
//! Only layout members may send replication, search and forwarding
//! requests; anyone connected may ask for the layout and health, which is
//! how a new node learns the cluster before it is a member.

pub mod batch;
pub mod layout;
pub mod peers;

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

use crate::metrics::Metrics;
use crate::net::{NetClient, NetError};
use layout::{LayoutState, Staged};
use peers::{PeerBook, PeerView};

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
    /// Add peers to the layout automatically once they have been healthy
    /// for `auto_join_after` (and this node, if no layout exists yet), true
    /// or false. For testnets; production clusters join members explicitly.
    pub auto_join: bool,
    /// How long a peer must have been healthy before `auto_join` adds it, a
    /// duration such as `2s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub auto_join_after: Duration,
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
    /// How long a token made on another member is trusted before it is
    /// looked up again (so a revocation there takes effect here within it),
    /// a duration such as `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub token_cache_ttl: Duration,
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
            auto_join_after: Duration::from_secs(2),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            replica_timeout: Duration::from_secs(3),
            handoff_interval: Duration::from_secs(2),
            handoff_batch: 256,
            replica_batch: 128,
            replica_in_flight: 4,
            token_cache_ttl: Duration::from_secs(30),
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
        if self.handoff_batch == 0 {
            return Err("cluster.handoff_batch must be at least 1".into());
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
    Timeout(String, Duration),
}

impl ClusterError {
    fn remote(e: RemoteError) -> Self {
        ClusterError::Remote(e.code, e.message)
    }
}

/// Where a key lives under the current layout.
#[derive(Debug, Clone)]
pub struct Route {
    pub layout: Arc<Layout>,
    pub partition: Partition,
    /// The partition's replicas (peer ids), in preference order.
    pub replicas: Vec<String>,
    /// Whether this node is one of them.
    pub local: bool,
}

impl Route {
    /// The members after the replicas in the partition's preference list:
    /// where writes for a down replica go (hinted handoff).
    pub fn fallbacks(&self) -> Vec<String> {
        self.layout
            .fallbacks(self.partition, self.layout.members().len())
            .into_iter()
            .map(|m| self.layout.member(m).id.clone())
            .collect()
    }
}

/// What `slurp cluster status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub peer_id: String,
    pub name: String,
    pub layout_version: u64,
    pub replication_factor: Option<u8>,
    pub partitions: Option<u32>,
    pub write_quorum: u8,
    pub read_quorum: u8,
    pub auto_join: bool,
    pub member: bool,
    pub members: Vec<MemberView>,
    /// Connected or remembered peers that are not members.
    pub others: Vec<PeerView>,
    pub staged: Staged,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: String,
    pub zone: String,
    pub capacity: u32,
    pub address: String,
    /// Replicas of partitions it holds under the layout.
    pub partitions: usize,
    pub is_self: bool,
    #[serde(flatten)]
    pub peer: PeerView,
}

/// The cluster side of a node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    net: NetClient,
    me: String,
    info: RwLock<NodeInfo>,
    config: ClusterConfig,
    layout: LayoutState,
    peers: PeerBook,
    started: Instant,
    metrics: Metrics,
    batcher: batch::Batcher,
    /// Tokens found on other members (or not found), with when.
    tokens: std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<TokenRecord>)>>,
}

/// Token lookups remembered at most (the map is cleared past it).
const TOKEN_CACHE_ENTRIES: usize = 10_000;
/// How long "no member knows this token" is remembered.
const TOKEN_MISS_TTL: Duration = Duration::from_secs(2);

/// A [`Cluster`] that does not keep it alive (held by background tasks).
#[derive(Clone)]
pub(crate) struct WeakCluster(std::sync::Weak<Inner>);

impl WeakCluster {
    pub(crate) fn upgrade(&self) -> Option<Cluster> {
        self.0.upgrade().map(Cluster)
    }
}

fn parse_peer(id: &str) -> Result<PeerId, ClusterError> {
    PeerId::from_str(id).map_err(|_| ClusterError::BadPeerId(id.to_string()))
}

impl Cluster {
    /// The cluster state under `data_dir`, talking through `net`.
    pub fn new(
        net: NetClient,
        info: NodeInfo,
        config: ClusterConfig,
        data_dir: &std::path::Path,
        metrics: Metrics,
    ) -> Result<Self, ClusterError> {
        config.validate().map_err(ClusterError::Layout)?;
        let layout = LayoutState::load(data_dir)?;
        Ok(Cluster(Arc::new(Inner {
            me: net.peer_id().to_base58(),
            net,
            info: RwLock::new(info),
            config,
            layout,
            peers: PeerBook::default(),
            started: Instant::now(),
            metrics,
            batcher: batch::Batcher::default(),
            tokens: Default::default(),
        })))
    }

    pub fn me(&self) -> &str {
        &self.0.me
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
            .is_some_and(|l| l.member_index(&self.0.me).is_some())
    }

    /// Whether `peer` may send replication, search and forwarding
    /// requests: a member of the current layout.
    pub fn accepts_from(&self, peer: &PeerId) -> bool {
        self.layout()
            .is_some_and(|l| l.member_index(&peer.to_base58()).is_some())
    }

    /// Where `key` lives, or `None` before the first layout.
    pub fn route(&self, key: &str) -> Option<Route> {
        let layout = self.layout()?;
        let partition = layout.partition_of(key);
        let mut replicas: Vec<String> = layout
            .replicas(partition)
            .iter()
            .map(|&m| layout.member(m).id.clone())
            .collect();
        let local = replicas.iter().any(|r| *r == self.0.me);
        self.order(&mut replicas);
        Some(Route {
            layout,
            partition,
            replicas,
            local,
        })
    }

    /// Picks for every partition of `layout` one replica to answer for it
    /// (this node first, then nodes already picked, then any that is up;
    /// never one in `exclude`), so a fan-out asks few nodes and counts
    /// every key once. Partitions with no such replica are returned apart.
    pub fn cover(
        &self,
        layout: &Layout,
        exclude: &[String],
    ) -> (std::collections::BTreeMap<String, Vec<Partition>>, Vec<u32>) {
        let mut plan: std::collections::BTreeMap<String, Vec<Partition>> = Default::default();
        let mut missing = Vec::new();
        for p in 0..layout.partitions().count() {
            let partition = Partition(p as u16);
            let replicas: Vec<&str> = layout
                .replicas(partition)
                .iter()
                .map(|&m| layout.member(m).id.as_str())
                .filter(|id| !exclude.iter().any(|e| e == id))
                .collect();
            let pick = replicas
                .iter()
                .find(|r| **r == self.0.me)
                .or_else(|| replicas.iter().find(|r| plan.contains_key(**r)))
                .or_else(|| replicas.iter().find(|r| self.0.peers.is_up(r)));
            match pick {
                Some(id) => plan.entry(id.to_string()).or_default().push(partition),
                None => missing.push(p),
            }
        }
        (plan, missing)
    }

    /// Orders peers for requests: this node first, then peers that are up,
    /// each group in its given order.
    pub fn order(&self, peers: &mut [String]) {
        let me = &self.0.me;
        peers.sort_by_key(|p| {
            if p == me {
                0
            } else if self.0.peers.is_up(p) {
                1
            } else {
                2
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
        peer: &str,
        limit: Duration,
        fut: impl std::future::Future<Output = Result<T, NetError>>,
    ) -> Result<T, ClusterError> {
        let r = match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::Net(e)),
            Err(_) => Err(ClusterError::Timeout(peer.to_string(), limit)),
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
        peer: &str,
        version: slurp_protocol::messages::SealedVersion,
    ) -> Result<slurp_protocol::messages::PutOutcome, String> {
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
            .unwrap_or_else(|_| Err("the request was dropped".into()))
    }

    /// `peer`'s head of `key`, folded with other head reads queued for it.
    pub async fn head(
        &self,
        peer: &str,
        key: &str,
        with_envelope: bool,
    ) -> Result<slurp_protocol::messages::Head, String> {
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
            .unwrap_or_else(|_| Err("the request was dropped".into()))
    }

    /// A replication request to `peer`; a refusal is an error.
    pub async fn replicate(
        &self,
        peer: &str,
        req: ReplicateRequest,
    ) -> Result<ReplicateResponse, ClusterError> {
        let id = parse_peer(peer)?;
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
        peer: &str,
        req: SearchRequest,
    ) -> Result<SearchResponse, ClusterError> {
        let id = parse_peer(peer)?;
        let limit = self.0.config.replica_timeout;
        match self.timed(peer, limit, self.0.net.search(id, req)).await? {
            SearchResponse::Error(e) => Err(ClusterError::remote(e)),
            r => Ok(r),
        }
    }

    pub async fn forward(
        &self,
        peer: &str,
        req: ForwardRequest,
        limit: Duration,
    ) -> Result<ForwardResponse, ClusterError> {
        let id = parse_peer(peer)?;
        match self.timed(peer, limit, self.0.net.forward(id, req)).await? {
            ForwardResponse::Error(e) => Err(ClusterError::remote(e)),
            r => Ok(r),
        }
    }

    async fn cluster_request(
        &self,
        peer: &str,
        req: ClusterRequest,
    ) -> Result<ClusterResponse, ClusterError> {
        let id = parse_peer(peer)?;
        let limit = self.0.config.probe_timeout;
        match self.timed(peer, limit, self.0.net.cluster(id, req)).await? {
            ClusterResponse::Error(e) => Err(ClusterError::remote(e)),
            r => Ok(r),
        }
    }

    /// Answers a cluster-state request from `peer`.
    pub async fn serve(&self, peer: PeerId, req: ClusterRequest) -> ClusterResponse {
        let version = self.layout_version();
        match req {
            ClusterRequest::Hello {
                node,
                layout_version,
            } => {
                let from = peer.to_base58();
                self.0.peers.record_info(&from, node, layout_version);
                if layout_version > version {
                    let this = self.clone();
                    tokio::spawn(async move { this.pull_layout(&from).await });
                }
                ClusterResponse::Hello {
                    node: self.info(),
                    layout_version: version,
                }
            }
            ClusterRequest::GetLayout { newer_than } => {
                let layout = self
                    .layout()
                    .filter(|l| newer_than.is_none_or(|v| l.version() > v));
                match layout.map(|l| l.encode()) {
                    Some(Ok(bytes)) => ClusterResponse::Layout {
                        version,
                        layout: Some(bytes.into()),
                    },
                    Some(Err(e)) => ClusterResponse::Error(RemoteError {
                        code: ErrorCode::Internal,
                        message: e.to_string(),
                    }),
                    None => ClusterResponse::Layout {
                        version,
                        layout: None,
                    },
                }
            }
            // Answered by the node, which holds the tokens.
            ClusterRequest::GetToken { .. } => ClusterResponse::Error(RemoteError {
                code: ErrorCode::Internal,
                message: "token lookups are served by the node".into(),
            }),
            ClusterRequest::Health => ClusterResponse::Health {
                status: HealthStatus::Ok,
                layout_version: version,
                uptime_secs: self.0.started.elapsed().as_secs(),
                partitions_syncing: 0,
            },
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
        let mut members: Vec<String> = layout
            .members()
            .iter()
            .map(|m| m.id.clone())
            .filter(|m| *m != self.0.me)
            .collect();
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

    /// Fetches `peer`'s layout if it is newer than ours.
    pub async fn pull_layout(&self, peer: &str) {
        let have = self.layout_version();
        let req = ClusterRequest::GetLayout {
            newer_than: Some(have),
        };
        match self.cluster_request(peer, req).await {
            Ok(ClusterResponse::Layout {
                layout: Some(bytes),
                ..
            }) => match Layout::decode(&bytes.0) {
                Ok(l) => {
                    if let Err(e) = self.0.layout.offer(l) {
                        tracing::warn!(error = %e, "cannot keep the layout");
                    }
                }
                Err(e) => tracing::warn!(%peer, error = %e, "peer sent a bad layout"),
            },
            Ok(_) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "layout pull failed"),
        }
    }

    /// Introduces this node to `peer` (on every new connection).
    pub async fn hello(&self, peer: &str) {
        let req = ClusterRequest::Hello {
            node: self.info(),
            layout_version: self.layout_version(),
        };
        match self.cluster_request(peer, req).await {
            Ok(ClusterResponse::Hello {
                node,
                layout_version,
            }) => {
                self.0.peers.record_info(peer, node, layout_version);
                if layout_version > self.layout_version() {
                    self.pull_layout(peer).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "hello failed"),
        }
    }

    /// One round of membership upkeep: probe every member and known peer,
    /// pull newer layouts, and (with `auto_join`) add healthy peers.
    /// Returns how many peers answered.
    pub async fn tick(&self) -> usize {
        let mut targets: Vec<String> = self.0.peers.known();
        if let Some(l) = self.layout() {
            for m in l.members() {
                if !targets.contains(&m.id) {
                    targets.push(m.id.clone());
                }
            }
        }
        targets.retain(|p| *p != self.0.me);
        // Where the layout says each member listens: a member that is down
        // and not connected is dialed there again before it is probed, so
        // two members that restarted while the other was away find each
        // other without a bootstrap peer, even after Kademlia dropped the
        // address that failed.
        let addresses: std::collections::HashMap<String, String> = self
            .layout()
            .map(|l| {
                l.members()
                    .iter()
                    .map(|m| (m.id.clone(), m.address.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let addresses = &addresses;
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
            if !known {
                self.hello(peer).await;
                return self.0.peers.is_up(peer);
            }
            match self.cluster_request(peer, ClusterRequest::Health).await {
                Ok(ClusterResponse::Health {
                    status,
                    layout_version,
                    uptime_secs,
                    ..
                }) => {
                    self.0
                        .peers
                        .record_health(peer, status, layout_version, uptime_secs);
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
        if self.0.config.auto_join {
            self.auto_join();
        }
        self.0
            .metrics
            .cluster_layout_version
            .set(self.layout_version() as i64);
        self.0.metrics.cluster_peers_up.set(answered as i64);
        answered
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

    /// Adds peers that ask for it (they run with `auto_join` too) and have
    /// been healthy for `auto_join_after` to the layout. Only the
    /// member with the smallest id among the healthy ones does it (any
    /// node, when there is no layout yet), so changes rarely race; when
    /// they do, the layout tie-break settles it and the next round adds
    /// what the losing change had.
    fn auto_join(&self) {
        let healthy = self.0.peers.healthy_for(self.0.config.auto_join_after);
        let layout = self.layout();
        let is_member = |id: &str| {
            layout
                .as_ref()
                .is_some_and(|l| l.member_index(id).is_some())
        };
        let mut candidates: Vec<Member> = healthy
            .iter()
            .filter(|(id, _)| !is_member(id) && !self.0.layout.was_removed(id))
            .filter_map(|(id, p)| {
                p.info
                    .as_ref()
                    .filter(|i| i.auto_join)
                    .map(|i| self.member_of(id, i))
            })
            .collect();
        if !is_member(&self.0.me) && !self.0.layout.was_removed(&self.0.me) {
            candidates.push(self.member_of(&self.0.me, &self.info()));
        }
        if candidates.is_empty() {
            return;
        }
        let mut deciders: Vec<&str> = healthy
            .iter()
            .map(|(id, _)| id.as_str())
            .filter(|id| layout.is_none() || is_member(id))
            .collect();
        if layout.is_none() || is_member(&self.0.me) {
            deciders.push(&self.0.me);
        }
        if deciders.iter().min() != Some(&self.0.me.as_str()) {
            return;
        }
        for m in candidates {
            self.0.layout.stage_join(m);
        }
        match self.apply() {
            Ok(l) => tracing::info!(version = l.version(), "auto-join applied a layout"),
            Err(e) => tracing::warn!(error = %e, "auto-join failed"),
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
        let id = peer.unwrap_or(&self.0.me).to_string();
        parse_peer(&id)?;
        let info = if id == self.0.me {
            Some(self.info())
        } else {
            self.0.peers.get(&id).and_then(|p| p.info)
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

    /// Commits the staged changes as the next layout and tells the peers.
    pub fn apply(&self) -> Result<Arc<Layout>, ClusterError> {
        let l = self.0.layout.apply(
            self.0.config.replication_factor,
            self.0.config.partition_bits,
        )?;
        self.announce();
        Ok(l)
    }

    /// Takes a layout made elsewhere (tests, restore) if it is newer.
    pub fn offer_layout(&self, layout: Layout) -> Result<bool, ClusterError> {
        let taken = self.0.layout.offer(layout)?;
        if taken {
            self.announce();
        }
        Ok(taken)
    }

    /// Sends `Hello` (with our layout version) to every known peer, so
    /// they pull a new layout now rather than at their next probe.
    fn announce(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut peers = this.0.peers.known();
            if let Some(l) = this.layout() {
                peers.extend(l.members().iter().map(|m| m.id.clone()));
            }
            peers.sort();
            peers.dedup();
            peers.retain(|p| *p != this.0.me);
            futures::future::join_all(peers.iter().map(|p| this.hello(p))).await;
        });
    }

    pub fn status(&self) -> ClusterStatus {
        let layout = self.layout();
        let info = self.info();
        let mut members = Vec::new();
        if let Some(l) = &layout {
            for m in l.members() {
                let mut peer = self.0.peers.view(&m.id);
                // The layout's zone is the one placement uses.
                peer.zone = Some(m.zone.clone());
                let is_self = m.id == self.0.me;
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
                    zone: m.zone.clone(),
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
            .filter(|p| layout.as_ref().is_none_or(|l| l.member_index(p).is_none()))
            .map(|p| self.0.peers.view(&p))
            .collect();
        ClusterStatus {
            peer_id: self.0.me.clone(),
            name: info.name,
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
        }
    }
}

/// A peer id short enough for a metric label or an error message (its
/// last 8 characters).
pub(crate) fn short_peer(peer: &str) -> &str {
    &peer[peer.len().saturating_sub(8)..]
}
