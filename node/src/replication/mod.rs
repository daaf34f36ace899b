//! Replication, in one place: everything that keeps the copies of a
//! partition on its replicas alike.
//!
//! The write path runs downward: the API calls the store front
//! ([`crate::store::ContextStore`]), which seals a version once and hands
//! it here; the [`coordinator`] sends it to the partition's replicas and
//! counts acknowledgements; each replica's [`server`] checks and applies
//! it to its local engine. What a write or a read could not finish is
//! finished here in the background: read repair (in the coordinator),
//! hinted handoff ([`handoff`]: a fallback keeps a version for a down
//! replica and hands it back, then drops its copy), anti-entropy
//! ([`anti_entropy`]: replicas compare per-partition digests and exchange
//! the versions either side lacks, without any client read) and the
//! collection of deleted addresses ([`gc`]: a tombstone goes only once
//! every replica holds it).
//!
//! Versions are append-only and merge by union, so every one of these is
//! "send the versions the other side lacks"; none of them opens an
//! envelope except to index what the receiving node stores.

pub mod coordinator;
pub mod handoff;
pub mod server;

pub use coordinator::QuorumOpts;
pub mod anti_entropy;
pub mod gc;
pub mod rebalance;
pub mod strategy;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use libp2p::PeerId;

use crate::cluster::{Cluster, ClusterError, Route, short_peer};
use crate::error::StoreError;
use crate::store::Engine;

/// Settings of the healing workers (`[replication]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// How often every shared partition is compared with each co-replica,
    /// a duration such as `5s`. A replica that comes back converges within
    /// about one interval plus the time to move what it missed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub anti_entropy_interval: Duration,
    /// Versions and ids moved between two replicas by anti-entropy, bytes
    /// per second at most per pass.
    pub anti_entropy_bytes_per_sec: u64,
    /// Leaves (slot ranges of one partition) exchanged at once, a count.
    pub anti_entropy_partitions_in_flight: usize,
    /// A differing range holding at most this many versions on either
    /// side is listed by id instead of split further, a count.
    pub anti_entropy_leaf_versions: usize,
    /// Ranges, ids or versions per anti-entropy request, a count (at most
    /// the receiver's `store_options.batch_size`).
    pub anti_entropy_batch: usize,
    /// Sealed bytes per anti-entropy request at most (the replication
    /// protocol's message limit must be larger), bytes.
    pub message_bytes: usize,
    /// How often deleted addresses are looked at for collection, a
    /// duration such as `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub gc_interval: Duration,
    /// A tombstone younger than this is not collected yet (writes in
    /// flight settle first), a duration such as `1m`. Never the reason a
    /// tombstone goes: that is every replica holding it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub gc_min_age: Duration,
    /// Tombstones checked per request, a count.
    pub gc_batch: usize,
    /// How long the marker of a collected address refuses old versions of
    /// it (a late hinted copy, a replica restored from an old backup), a
    /// duration such as `7days`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub gc_keep_collected: Duration,
    /// Replica writes in flight at most on a coordinator, a count. A write
    /// is acknowledged once its quorum has it and the other replicas finish
    /// in the background; past this many, new writes wait for them.
    pub replica_writes_in_flight: usize,
    /// Read repairs in flight at most (each a background write), a count;
    /// past it a repair is skipped and left to anti-entropy.
    pub read_repairs_in_flight: usize,
    /// How often a layout transition is advanced (pull, ask the other
    /// nodes where they stand, end it), a duration such as `1s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub rebalance_interval: Duration,
    /// Sealed bytes a node pulls per second at most in a layout
    /// transition.
    pub rebalance_bytes_per_sec: u64,
    /// Partitions pulled at once in a layout transition, a count.
    pub rebalance_partitions_in_flight: usize,
    /// How long an old owner waits, once every node reads from the new
    /// owners, before dropping what it left (reads that began earlier
    /// finish first), a duration such as `5s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub rebalance_grace: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            anti_entropy_interval: Duration::from_secs(5),
            anti_entropy_bytes_per_sec: 16 * 1024 * 1024,
            anti_entropy_partitions_in_flight: 4,
            anti_entropy_leaf_versions: 1024,
            anti_entropy_batch: 512,
            message_bytes: 4 * 1024 * 1024,
            gc_interval: Duration::from_secs(30),
            gc_min_age: Duration::from_secs(60),
            gc_batch: 256,
            gc_keep_collected: Duration::from_secs(7 * 86_400),
            replica_writes_in_flight: 1024,
            read_repairs_in_flight: 256,
            rebalance_interval: Duration::from_secs(1),
            rebalance_bytes_per_sec: 32 * 1024 * 1024,
            rebalance_partitions_in_flight: 2,
            rebalance_grace: Duration::from_secs(5),
        }
    }
}

impl ReplicationConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.anti_entropy_interval.is_zero() || self.gc_interval.is_zero() {
            return Err(
                "replication.anti_entropy_interval and replication.gc_interval must be positive"
                    .into(),
            );
        }
        if self.rebalance_interval.is_zero()
            || self.rebalance_bytes_per_sec == 0
            || self.rebalance_partitions_in_flight == 0
        {
            return Err(
                "replication.rebalance_interval, rebalance_bytes_per_sec and rebalance_partitions_in_flight must be positive"
                    .into(),
            );
        }
        if self.anti_entropy_bytes_per_sec == 0
            || self.anti_entropy_partitions_in_flight == 0
            || self.anti_entropy_leaf_versions == 0
            || self.anti_entropy_batch == 0
            || self.message_bytes == 0
            || self.gc_batch == 0
            || self.replica_writes_in_flight == 0
            || self.read_repairs_in_flight == 0
        {
            return Err("replication limits (bytes per second, in flight, leaf versions, batches, message bytes, replica writes, read repairs) must be positive".into());
        }
        Ok(())
    }
}

/// The replicator: the cluster side of the store. It owns the quorum
/// coordinator, the replica server and hinted handoff, over this node's
/// [`Engine`] (which it applies versions to) and the [`Cluster`] (which it
/// reaches peers through). Cheap to clone.
#[derive(Clone)]
pub struct Replicator(pub(crate) Arc<ReplicatorInner>);

pub(crate) struct ReplicatorInner {
    pub(crate) engine: Engine,
    pub(crate) cluster: Cluster,
    pub(crate) config: ReplicationConfig,
    /// Read repairs in flight (`read_repairs_in_flight`).
    pub(crate) repairs: Arc<tokio::sync::Semaphore>,
    /// Replica writes in flight (`replica_writes_in_flight`).
    pub(crate) replica_writes: Arc<tokio::sync::Semaphore>,
}

impl Replicator {
    pub fn new(engine: Engine, cluster: Cluster, config: ReplicationConfig) -> Self {
        Replicator(Arc::new(ReplicatorInner {
            repairs: Arc::new(tokio::sync::Semaphore::new(
                config.read_repairs_in_flight.max(1),
            )),
            replica_writes: Arc::new(tokio::sync::Semaphore::new(
                config.replica_writes_in_flight.max(1),
            )),
            engine,
            cluster,
            config,
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    pub fn cluster(&self) -> &Cluster {
        &self.0.cluster
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.0.config
    }

    /// The route of `key` under the current layout, if there is one.
    pub(crate) fn route(&self, key: &str) -> Option<Route> {
        self.0.cluster.route(key)
    }

    /// The route of `key`, or why there is none.
    pub(crate) fn route_or_unavailable(&self, key: &str) -> Result<Route, StoreError> {
        self.route(key)
            .ok_or_else(|| StoreError::Unavailable("the cluster layout is gone".into()))
    }
}

/// Why a replication exchange with a peer failed: always names the peer,
/// and keeps the cause.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The request failed on the way or the peer refused it (shared when
    /// one request carried several callers' items).
    #[error("{}: {source}", short_peer(peer))]
    Peer {
        peer: PeerId,
        #[source]
        source: Arc<ClusterError>,
    },
    /// The peer did not answer within the strategy's limit.
    #[error("{} did not answer within {after:?}", short_peer(peer))]
    Timeout { peer: PeerId, after: Duration },
    /// This node's own store, acting as a replica of the request, refused
    /// or failed it (its reason).
    #[error("{}: {reason}", short_peer(peer))]
    Rejected { peer: PeerId, reason: String },
    /// The peer answered with a message that does not answer the request.
    #[error(
        "{}: answered a request for {asked} with something else",
        short_peer(peer)
    )]
    Unexpected { peer: PeerId, asked: &'static str },
    /// The peer's answer breaks the protocol.
    #[error("{}: {why}", short_peer(peer))]
    Malformed { peer: PeerId, why: String },
    /// This node's own store failed.
    #[error("local store: {0}")]
    Local(#[from] slurp_storage::ReadError),
    /// This node's own store failed to write.
    #[error("local store: {0}")]
    LocalWrite(#[from] slurp_storage::WriteError),
}

impl ReplicationError {
    /// Whether the peer refused for holding a newer layout than the one
    /// the request was sent under.
    pub(crate) fn stale_layout(&self) -> bool {
        matches!(self, ReplicationError::Peer { source, .. }
            if matches!(**source, ClusterError::Remote(slurp_protocol::messages::ErrorCode::LayoutMismatch, _)))
    }

    pub(crate) fn peer(peer: &PeerId, source: ClusterError) -> Self {
        ReplicationError::Peer {
            peer: *peer,
            source: Arc::new(source),
        }
    }

    /// Why it failed, without the peer (for messages that name the peer
    /// their own way).
    pub fn reason(&self) -> String {
        match self {
            ReplicationError::Peer { source, .. } => source.to_string(),
            ReplicationError::Timeout { after, .. } => format!("did not answer within {after:?}"),
            ReplicationError::Rejected { reason, .. } => reason.clone(),
            ReplicationError::Unexpected { asked, .. } => {
                format!("answered a request for {asked} with something else")
            }
            ReplicationError::Malformed { why, .. } => why.clone(),
            ReplicationError::Local(e) => format!("local store: {e}"),
            ReplicationError::LocalWrite(e) => format!("local store: {e}"),
        }
    }

    pub(crate) fn unexpected(peer: &PeerId, asked: &'static str) -> Self {
        ReplicationError::Unexpected { peer: *peer, asked }
    }

    /// The peer the error is about, if it is about one.
    pub fn peer_id(&self) -> Option<&PeerId> {
        match self {
            ReplicationError::Peer { peer, .. }
            | ReplicationError::Timeout { peer, .. }
            | ReplicationError::Rejected { peer, .. }
            | ReplicationError::Unexpected { peer, .. }
            | ReplicationError::Malformed { peer, .. } => Some(peer),
            ReplicationError::Local(_) | ReplicationError::LocalWrite(_) => None,
        }
    }
}
