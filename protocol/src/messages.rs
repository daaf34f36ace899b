//! Messages of the cluster's request-response protocols.
//!
//! Nodes talk to each other over four protocols, each a pair of request and
//! response enums sent as one [`Framed`](crate::wire::Framed) value per
//! stream (see `docs/protocol.md`):
//!
//! * replication (`/slurp/replicate/1`): sealed versions and their ids, so
//!   writes, read repair, hinted handoff, anti-entropy and rebalancing are
//!   all "send the versions the other side lacks";
//! * forwarding (`/slurp/forward/1`): an API call handed to the node that
//!   should serve it, opaque to the network;
//! * search fan-out (`/slurp/search/1`): global term statistics, then a
//!   search scored with them on every node;
//! * cluster state (`/slurp/cluster/1`): who a node is, which layout it
//!   holds, whether it is healthy.
//!
//! Replication messages carry only what storage already sees: the
//! non-secret [`RecordMeta`] and the sealed envelope bytes, never
//! plaintext. Payloads whose types live in other crates (search queries and
//! results, the cluster layout) travel as JSON values or bytes, so this
//! crate keeps depending on nothing else of ours. Every enum is framed with
//! its own kind number and a format version: a node reads
//! `MIN_VERSION..=VERSION` and refuses anything else with a typed error.

use serde::{Deserialize, Serialize};

use crate::context::RecordMeta;
use crate::membership::{ClusterId, SealedGrant, Signed};
use crate::role::RoleName;
use crate::version::VersionId;
use crate::wire::{Bytes, Framed, kinds};

/// Protocol name of replication, version 1.
pub const REPLICATE_PROTOCOL: &str = "/slurp/replicate/1";
/// Protocol name of API forwarding, version 1.
pub const FORWARD_PROTOCOL: &str = "/slurp/forward/1";
/// Protocol name of search fan-out, version 1.
pub const SEARCH_PROTOCOL: &str = "/slurp/search/1";
/// Protocol name of cluster state, version 1.
pub const CLUSTER_PROTOCOL: &str = "/slurp/cluster/1";

/// Why a peer could not serve a request it decoded. Sent back instead of a
/// result, so the caller can tell a refusal from a network failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub code: ErrorCode,
    /// A short human-readable reason; never content.
    pub message: String,
}

/// What kind of refusal a [`RemoteError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or violates a limit.
    BadRequest,
    /// The caller's role may not do this.
    Forbidden,
    /// This node does not hold the partition under its current layout.
    NotReplica,
    /// The caller's layout is older or newer than this node's.
    LayoutMismatch,
    /// The node is overloaded or shutting down; retry elsewhere or later.
    Unavailable,
    /// Anything else went wrong on the peer.
    Internal,
    /// A code this build does not know (sent by a newer node).
    #[serde(other)]
    Other,
}

/// One stored version as replicas exchange it: metadata in clear, content
/// sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedVersion {
    pub meta: RecordMeta,
    /// The framed age envelope, exactly as stored.
    pub envelope: Bytes,
}

/// Which keys a [`ReplicateRequest::VersionIds`] asks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// These storage keys.
    Keys(Vec<String>),
    /// Every version whose slot is in `first..=last`, in slot, key and
    /// version order, starting after `after` (the opaque cursor of the
    /// previous page), at most `limit` versions. A key's versions may span
    /// two pages: the caller merges entries of the same key.
    Slots {
        first: u16,
        last: u16,
        #[serde(default)]
        after: Option<Bytes>,
        limit: u32,
        /// A pull for a layout transition: the layout version the puller
        /// syncs to. The peer refuses (`LayoutMismatch`) while it holds an
        /// older layout, and answers only once every replica write it
        /// admitted under an older layout has committed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settled_under: Option<u64>,
    },
}

/// Requests of `/slurp/replicate/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicateRequest {
    /// Store these versions (a write, a repair, a handoff or a transfer).
    /// Storing is idempotent: a version already present is reported as
    /// such.
    PutVersions {
        versions: Vec<SealedVersion>,
        /// The layout version the sender placed the versions with.
        #[serde(default)]
        layout_version: Option<u64>,
        /// Identifies the write quorum this belongs to, for tracing.
        #[serde(default)]
        write_quorum_id: Option<String>,
        /// Set when the receiver is a fallback holding the versions for
        /// this peer (hinted handoff): it stores them and remembers to hand
        /// them to that peer once it is back.
        #[serde(default)]
        hint_for: Option<String>,
    },
    /// The versions of one key: all of them, or only those named.
    GetVersions {
        key: String,
        #[serde(default)]
        versions: Option<Vec<VersionId>>,
    },
    /// The version ids held for some keys (anti-entropy compares these).
    VersionIds { scope: KeyScope },
    /// The latest version of each key (a quorum read), with its envelope
    /// only when `with_envelope` is set.
    Heads {
        keys: Vec<String>,
        #[serde(default)]
        with_envelope: bool,
    },
    /// The metadata of every version of a key, oldest first (a quorum
    /// history read).
    History { key: String },
    /// Anti-entropy: the digest of each slot range, counting only the
    /// partitions that both the sender and the receiver replicate under
    /// layout `layout_version` (a receiver on another layout version
    /// refuses with `LayoutMismatch`). At most the node's batch size of
    /// ranges.
    Digests {
        layout_version: u64,
        ranges: Vec<SlotRange>,
    },
    /// These versions, named by key and id, in one answer (anti-entropy
    /// pulls what it lacks). Versions the receiver does not hold are left
    /// out; the answer stops at the receiver's batch size or byte budget,
    /// and the sender asks again for the rest.
    Fetch { entries: Vec<KeyVersion> },
    /// Tombstone collection, in two rounds: with `apply` unset, say for
    /// each entry whether this replica holds that tombstone as the newest
    /// version of its key (or has collected it already); with `apply` set,
    /// collect each entry whose tombstone is still the newest version
    /// (remove every version of the key and remember the collection).
    Collect {
        entries: Vec<KeyVersion>,
        #[serde(default)]
        apply: bool,
    },
}

/// An inclusive range of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
}

impl SlotRange {
    /// Number of slots in the range (0 when `first > last`).
    pub fn len(&self) -> u32 {
        if self.first > self.last {
            0
        } else {
            u32::from(self.last) - u32::from(self.first) + 1
        }
    }

    /// Whether the range holds no slot.
    pub fn is_empty(&self) -> bool {
        self.first > self.last
    }
}

/// The digest of a slot range: XOR of the BLAKE3 hashes of the storage
/// keys of its versions (32 bytes), and their number. Two replicas hold
/// the same versions of a range exactly when (up to hash collisions)
/// their digests agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    pub versions: u64,
    pub digest: Bytes,
}

/// One version of one key, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub key: String,
    pub version: VersionId,
}

/// What a replica says about one entry of a [`ReplicateRequest::Collect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectState {
    /// The tombstone is the newest version of its key here.
    Holds,
    /// The key was collected here at this tombstone or a newer one.
    Collected,
    /// This replica does not hold the tombstone.
    Lacks,
    /// A version newer than the tombstone is stored here: the address was
    /// written again and must not be collected.
    Newer,
    /// A state this build does not know (sent by a newer node).
    #[serde(other)]
    Other,
}

/// What one replica holds for a key: its latest version (the envelope is
/// empty unless asked for) and how many versions it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub key: String,
    #[serde(default)]
    pub latest: Option<SealedVersion>,
    pub versions: u64,
}

/// What happened to one version of a [`ReplicateRequest::PutVersions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PutOutcome {
    Stored,
    AlreadyPresent,
    Rejected { reason: String },
}

/// The outcome for one version, named by key and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionOutcome {
    pub key: String,
    pub version: VersionId,
    pub outcome: PutOutcome,
}

/// The version ids held for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersions {
    pub key: String,
    pub versions: Vec<VersionId>,
}

/// Responses of `/slurp/replicate/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicateResponse {
    /// Answers `PutVersions`, one outcome per version sent, in order.
    Stored {
        outcomes: Vec<VersionOutcome>,
    },
    /// Answers `GetVersions`, oldest first.
    Versions {
        key: String,
        versions: Vec<SealedVersion>,
    },
    /// Answers `VersionIds`; `next` is the cursor of the following page of
    /// a slot scan, `None` when the range is done.
    VersionIds {
        entries: Vec<KeyVersions>,
        #[serde(default)]
        next: Option<Bytes>,
    },
    /// Answers `Heads`, one entry per key asked, in order.
    Heads {
        entries: Vec<Head>,
    },
    /// Answers `History`, oldest first.
    History {
        key: String,
        metas: Vec<RecordMeta>,
    },
    /// Answers `Digests`, one per range asked, in order.
    Digests {
        digests: Vec<RangeDigest>,
    },
    /// Answers `Fetch`: the versions found, in the order asked.
    Fetched {
        versions: Vec<SealedVersion>,
    },
    /// Answers `Collect`, one state per entry, in order (after collecting,
    /// when asked to apply).
    Collected {
        states: Vec<CollectState>,
    },
    Error(RemoteError),
}

/// Requests of `/slurp/forward/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardRequest {
    /// An HTTP API call handed to another node, already authenticated by
    /// the node that received it: the peer acts as `caller_role`.
    Call {
        method: String,
        /// Path and query, e.g. `/v1/contexts?address=...`.
        path: String,
        #[serde(default)]
        content_type: Option<String>,
        body: Bytes,
        caller_role: RoleName,
        /// Lets logs of both nodes be joined.
        #[serde(default)]
        request_id: Option<String>,
        /// From a node outside the layout: proof that it holds
        /// `caller_role`'s key, bound to this call (see the node's key
        /// custody); members need none.
        #[serde(default)]
        proof: Option<Bytes>,
        /// The sender's signed [`CallerAuthorisation`] for this call.
        #[serde(default)]
        authorisation: Option<Signed>,
    },
}

/// Responses of `/slurp/forward/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardResponse {
    /// The HTTP answer of the peer, relayed as is.
    Reply {
        status: u16,
        #[serde(default)]
        content_type: Option<String>,
        body: Bytes,
    },
    Error(RemoteError),
}

/// Requests of `/slurp/search/*`. A fan-out search is two rounds: every
/// node reports its term statistics, the coordinator sums them, and every
/// node scores with the global figures so results merge by score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchRequest {
    /// Document and term counts for a query, over what `role` may read.
    TermStatistics {
        query: serde_json::Value,
        role: RoleName,
        /// The slots this node answers for (a list of `[first, last]`
        /// ranges); absent means every slot it holds.
        #[serde(default)]
        scope: Option<serde_json::Value>,
        /// The sender's signed [`CallerAuthorisation`] for `role`.
        #[serde(default)]
        authorisation: Option<Signed>,
    },
    /// Run the query, scoring with `stats` (the summed statistics) if given.
    Search {
        query: serde_json::Value,
        role: RoleName,
        #[serde(default)]
        stats: Option<serde_json::Value>,
        limit: u32,
        #[serde(default)]
        scope: Option<serde_json::Value>,
        /// The sender's signed [`CallerAuthorisation`] for `role`.
        #[serde(default)]
        authorisation: Option<Signed>,
    },
    /// A page of the addresses matching `pattern` that `role` may read,
    /// over the slots of `scope` (a list of `[first, last]` ranges), in
    /// key order after the storage key `after`, at most `limit`: one
    /// node's share of a listing.
    List {
        pattern: String,
        role: RoleName,
        #[serde(default)]
        after: Option<String>,
        limit: u32,
        scope: serde_json::Value,
        /// The sender's signed [`CallerAuthorisation`] for `role`.
        #[serde(default)]
        authorisation: Option<Signed>,
    },
}

impl ForwardRequest {
    /// The authorisation the call carries.
    pub fn authorisation(&self) -> Option<&Signed> {
        match self {
            ForwardRequest::Call { authorisation, .. } => authorisation.as_ref(),
        }
    }

    /// Sets (or clears) the call's authorisation.
    pub fn set_authorisation(&mut self, auth: Option<Signed>) {
        match self {
            ForwardRequest::Call { authorisation, .. } => *authorisation = auth,
        }
    }

    /// The role the sender acts as.
    pub fn role(&self) -> &RoleName {
        match self {
            ForwardRequest::Call { caller_role, .. } => caller_role,
        }
    }
}

impl SearchRequest {
    pub fn authorisation(&self) -> Option<&Signed> {
        match self {
            SearchRequest::TermStatistics { authorisation, .. }
            | SearchRequest::Search { authorisation, .. }
            | SearchRequest::List { authorisation, .. } => authorisation.as_ref(),
        }
    }

    pub fn set_authorisation(&mut self, auth: Option<Signed>) {
        match self {
            SearchRequest::TermStatistics { authorisation, .. }
            | SearchRequest::Search { authorisation, .. }
            | SearchRequest::List { authorisation, .. } => *authorisation = auth,
        }
    }

    /// The role the sender acts as.
    pub fn role(&self) -> &RoleName {
        match self {
            SearchRequest::TermStatistics { role, .. }
            | SearchRequest::Search { role, .. }
            | SearchRequest::List { role, .. } => role,
        }
    }
}

/// Responses of `/slurp/search/*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchResponse {
    TermStatistics {
        stats: serde_json::Value,
    },
    Results {
        results: serde_json::Value,
    },
    /// Answers `List`: the page (`entries`, `next`).
    Listed {
        page: serde_json::Value,
    },
    Error(RemoteError),
}

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's writer id.
    pub name: String,
    /// The libp2p peer id, base58.
    pub peer_id: String,
    /// Where its HTTP API listens, if it serves one.
    #[serde(default)]
    pub api_addr: Option<String>,
    /// The software version (`CARGO_PKG_VERSION`).
    pub software_version: String,
    /// Failure domain for placement (zone, rack, host).
    #[serde(default)]
    pub zone: Option<String>,
    /// Relative storage capacity for placement.
    #[serde(default)]
    pub capacity: Option<u64>,
    /// The swarm addresses it listens on (multiaddrs), for the layout.
    #[serde(default)]
    pub listen_addrs: Vec<String>,
    /// Whether it asks to be added to the layout automatically.
    #[serde(default)]
    pub auto_join: bool,
}

/// Requests of `/slurp/cluster/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRequest {
    /// Introduce this node and the layout version it holds, with its
    /// certificate (a peer that shows none, or a bad one, learns nothing).
    Hello {
        node: NodeInfo,
        layout_version: u64,
        #[serde(default)]
        certificate: Option<Signed>,
        /// The version of the key directory the sender holds.
        #[serde(default)]
        keys_version: u64,
    },
    /// Redeem an invite (the parts of a join token after the cluster and
    /// issuer): the issuer certifies the sender's peer id and, with
    /// `apply`, adds it to the layout.
    Join {
        invite: String,
        secret: String,
        node: NodeInfo,
        #[serde(default)]
        apply: bool,
    },
    /// An admin's `slurp cluster join PEER`: the certificate the cluster key
    /// signed for the receiver, and the key to check it with.
    Admit {
        cluster_key: Bytes,
        certificate: Signed,
    },
    /// The peer's current layout if it is newer than `newer_than`.
    GetLayout {
        #[serde(default)]
        newer_than: Option<u64>,
    },
    /// How the peer is doing.
    Health,
    /// How the peer is doing, with the heartbeats the sender knows (its
    /// own first): the failure detector's gossip. Answered with `Health`
    /// carrying the receiver's heartbeats (members only).
    Gossip { heartbeats: Vec<Heartbeat> },
    /// The API token `id` if the peer made it (members only): lets any
    /// member accept a token made on another.
    GetToken { id: String },
    /// The signed key directory, and the private keys of the roles the
    /// sender's certificate grants it, sealed to `recipient` (an age
    /// X25519 recipient the sender made for this request).
    GetKeys { recipient: String },
    /// From the holder of the whole cluster key splitting it: a recipient
    /// to seal this node's share to (made for this one share).
    PrepareShare,
    /// A share of the cluster key for this node to keep: a framed key
    /// share, age-sealed to the recipient `PrepareShare` answered.
    PutShare { sealed: Bytes },
    /// The head of the sender's audit log, a `Signed`
    /// [`AuditAnchor`](crate::AuditAnchor) made with its node key, for the
    /// receiver to hold (members only).
    PutAuditHead { head: Signed },
    /// The newest audit head of `node` the receiver holds (members only).
    GetAuditHead { node: String },
    /// Token records (hashes only) the sender made or revoked: the
    /// receiver keeps them, so a token works, and a revocation holds, on
    /// every member without a lookup (members only).
    PutTokens { tokens: Vec<TokenRecord> },
    /// Every token record the peer made (members only).
    GetTokens,
    /// This node's share of the cluster key, sealed to `recipient`, for an
    /// admin operation (`reason`, audited). `authorisation` is the
    /// sender's caller authorisation for role admin.
    GetShare {
        recipient: String,
        reason: String,
        #[serde(default)]
        authorisation: Option<Signed>,
    },
    /// Where the peer stands in a layout transition: the layouts it holds
    /// active, what it has pulled and which layout it reads from (members
    /// of any active layout, and removed members, which drain).
    Transition,
}

/// A node's place in a layout transition, as it reports it itself (a
/// report is never relayed: each node asks each other directly).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionReport {
    /// The layout versions the node holds active, oldest first; the last
    /// is its current layout.
    pub active: Vec<u64>,
    /// The newest layout version for which the node holds every partition
    /// it gained (pulled from the previous owners); its current version
    /// when it gained nothing.
    pub synced: u64,
    /// The layout version whose replica sets the node reads from.
    pub reading: u64,
    /// Partitions the node must pull for its current layout, and how many
    /// it has.
    pub partitions_total: u32,
    pub partitions_done: u32,
}

/// An API token as members share it: never the secret, only its blake3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub role: RoleName,
    /// blake3 of the secret part, hex. Empty for a token with limits, whose
    /// hash travels in `limits`: a member too old to know limits then
    /// refuses the token instead of accepting it without them.
    pub secret_hash: String,
    #[serde(default)]
    pub revoked: bool,
    /// Where and when the token may be used; absent: anywhere, any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TokenRecordLimits>,
}

/// The limits of a [`TokenRecord`], which every member enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecordLimits {
    /// blake3 of the secret part, hex.
    pub secret_hash: String,
    /// Networks in CIDR form the caller's address must be in; empty: any.
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// Not valid before, milliseconds since the Unix epoch.
    #[serde(default)]
    pub not_before_ms: Option<u64>,
    /// Not valid after, milliseconds since the Unix epoch.
    #[serde(default)]
    pub not_after_ms: Option<u64>,
}

/// A node's health as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Draining,
    #[serde(other)]
    Unknown,
}

/// Responses of `/slurp/cluster/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterResponse {
    Hello {
        node: NodeInfo,
        layout_version: u64,
        #[serde(default)]
        certificate: Option<Signed>,
        /// The version of the key directory the peer holds.
        #[serde(default)]
        keys_version: u64,
    },
    /// Answers `Join`: the cluster's public key, the sender's certificate
    /// and, when it was added, the layout that has it (a framed `Signed`).
    Joined {
        cluster_key: Bytes,
        certificate: Signed,
        #[serde(default)]
        layout: Option<Bytes>,
    },
    /// Answers `GetKeys`: the signed [`KeyDirectory`](crate::KeyDirectory)
    /// (absent before the cluster has one) and the granted keys this member
    /// holds.
    Keys {
        #[serde(default)]
        directory: Option<Signed>,
        #[serde(default)]
        grants: Vec<SealedGrant>,
    },
    /// Answers `PutAuditHead`.
    AuditHeadTaken,
    /// Answers `GetAuditHead`: the head held, as signed.
    AuditHead {
        #[serde(default)]
        head: Option<Signed>,
    },
    /// Answers `PutTokens`: how many records changed what the peer holds.
    TokensTaken {
        taken: u32,
    },
    /// Answers `GetTokens`.
    Tokens {
        tokens: Vec<TokenRecord>,
    },
    /// Answers `PrepareShare`.
    ShareRecipient {
        recipient: String,
    },
    /// Answers `PutShare`: the share is kept, sealed at rest.
    ShareStored,
    /// Answers `GetShare`: the framed share, age-sealed to the recipient
    /// asked for.
    Share {
        sealed: Bytes,
    },
    /// Answers `Admit`: the receiver took the certificate.
    Admitted {
        cluster: ClusterId,
    },
    /// `layout` is the framed `Signed` layout, or `None` when the peer's is
    /// not newer than asked.
    Layout {
        version: u64,
        #[serde(default)]
        layout: Option<Bytes>,
        /// The older layouts the peer still holds active (framed `Signed`
        /// layouts, oldest first): a node that joins or returns during a
        /// transition learns where the data still is.
        #[serde(default)]
        history: Vec<Bytes>,
    },
    Health {
        status: HealthStatus,
        layout_version: u64,
        uptime_secs: u64,
        /// Partitions this node holds that are not yet synced to
        /// `layout_version`.
        #[serde(default)]
        partitions_syncing: u32,
        /// The version of the key directory the peer holds.
        #[serde(default)]
        keys_version: u64,
        /// What the peer's last complete key-rewrap pass found, so the
        /// node that retires old key epochs knows when every member is done.
        #[serde(default)]
        rewrap: Option<RewrapReport>,
        /// The heartbeats the peer knows, its own first (answering
        /// `Gossip`; empty for `Health`).
        #[serde(default)]
        heartbeats: Vec<Heartbeat>,
    },
    /// Answers `GetToken`; `None` when the peer made no such token.
    Token {
        #[serde(default)]
        token: Option<TokenRecord>,
    },
    /// Answers `Transition`.
    Transition(TransitionReport),
    Error(RemoteError),
}

/// A node's heartbeat as some node last heard it: the node was alive at
/// `beat_ms` (its own clock) in the run that started at `generation_ms`.
/// A restart is a new generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node's peer id.
    pub peer: String,
    pub generation_ms: u64,
    pub beat_ms: u64,
}

/// A node's last complete key-rewrap pass: the key directory version it
/// ran against, and how many stored versions it left on epochs older than
/// their role's current one (copies it cannot open included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapReport {
    pub keys_version: u64,
    pub pending: u64,
}

macro_rules! framed {
    ($ty:ty, $kind:expr, $name:literal) => {
        impl Framed for $ty {
            const KIND: u16 = $kind;
            const NAME: &'static str = $name;
            const VERSION: u16 = 1;
        }
    };
}

framed!(
    ReplicateRequest,
    kinds::REPLICATE_REQUEST,
    "replicate-request"
);
framed!(
    ReplicateResponse,
    kinds::REPLICATE_RESPONSE,
    "replicate-response"
);
framed!(ForwardRequest, kinds::FORWARD_REQUEST, "forward-request");
framed!(ForwardResponse, kinds::FORWARD_RESPONSE, "forward-response");
framed!(SearchRequest, kinds::SEARCH_REQUEST, "search-request");
framed!(SearchResponse, kinds::SEARCH_RESPONSE, "search-response");
framed!(ClusterRequest, kinds::CLUSTER_REQUEST, "cluster-request");
framed!(ClusterResponse, kinds::CLUSTER_RESPONSE, "cluster-response");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Hlc, WriterId};
    use crate::wire::{DecodeError, to_cbor};
    use proptest::prelude::*;

    fn version() -> VersionId {
        VersionId {
            hlc: Hlc {
                wall_ms: 1_700_000_000_000,
                logical: 3,
            },
            writer: WriterId::new("node-a").unwrap(),
        }
    }

    fn sealed() -> SealedVersion {
        SealedVersion {
            meta: RecordMeta {
                key: "p/t/src/lib.rs".into(),
                path: "src/lib.rs".into(),
                version: version(),
                parent_version: None,
                readers: vec![RoleName::new("developer").unwrap()],
                influences: vec![],
                influenced_by: vec![],
                expires_at_ms: None,
                tombstone: false,
            },
            envelope: Bytes(vec![0xa5; 64]),
        }
    }

    #[test]
    fn every_message_round_trips() {
        let put = ReplicateRequest::PutVersions {
            versions: vec![sealed()],
            layout_version: Some(4),
            write_quorum_id: None,
            hint_for: Some("peer-b".into()),
        };
        assert_eq!(
            ReplicateRequest::decode(&put.encode().unwrap()).unwrap(),
            put
        );
        let ids = ReplicateRequest::VersionIds {
            scope: KeyScope::Slots {
                first: 0,
                last: 63,
                after: Some(Bytes(b"k".to_vec())),
                limit: 500,
                settled_under: Some(4),
            },
        };
        assert_eq!(
            ReplicateRequest::decode(&ids.encode().unwrap()).unwrap(),
            ids
        );
        let digests = ReplicateRequest::Digests {
            layout_version: 7,
            ranges: vec![SlotRange {
                first: 0,
                last: 4095,
            }],
        };
        assert_eq!(
            ReplicateRequest::decode(&digests.encode().unwrap()).unwrap(),
            digests
        );
        let collect = ReplicateRequest::Collect {
            entries: vec![KeyVersion {
                key: "k".into(),
                version: version(),
            }],
            apply: true,
        };
        assert_eq!(
            ReplicateRequest::decode(&collect.encode().unwrap()).unwrap(),
            collect
        );
        for r in [
            ReplicateResponse::Digests {
                digests: vec![RangeDigest {
                    versions: 3,
                    digest: Bytes(vec![7; 32]),
                }],
            },
            ReplicateResponse::Collected {
                states: vec![CollectState::Holds, CollectState::Newer],
            },
        ] {
            assert_eq!(ReplicateResponse::decode(&r.encode().unwrap()).unwrap(), r);
        }
        let stored = ReplicateResponse::Stored {
            outcomes: vec![VersionOutcome {
                key: "k".into(),
                version: version(),
                outcome: PutOutcome::Rejected {
                    reason: "not a replica".into(),
                },
            }],
        };
        assert_eq!(
            ReplicateResponse::decode(&stored.encode().unwrap()).unwrap(),
            stored
        );
        let call = ForwardRequest::Call {
            method: "GET".into(),
            path: "/v1/contexts?address=x".into(),
            content_type: None,
            body: Bytes(vec![]),
            caller_role: RoleName::new("developer").unwrap(),
            request_id: Some("r1".into()),
            proof: None,
            authorisation: None,
        };
        assert_eq!(
            ForwardRequest::decode(&call.encode().unwrap()).unwrap(),
            call
        );
        let search = SearchRequest::Search {
            query: serde_json::json!({"text": "token", "tags": ["core"], "limit": 10}),
            role: RoleName::new("developer").unwrap(),
            stats: Some(serde_json::json!({"docs": 12, "terms": {"token": 3}})),
            limit: 10,
            scope: Some(serde_json::json!([[0, 99], [200, 300]])),
            authorisation: None,
        };
        assert_eq!(
            SearchRequest::decode(&search.encode().unwrap()).unwrap(),
            search
        );
        let signed = Signed {
            statement: Bytes(vec![1, 2, 3]),
            signature: Bytes(vec![7; 64]),
        };
        for req in [
            ClusterRequest::Join {
                invite: "inv1".into(),
                secret: "ab".repeat(32),
                node: NodeInfo {
                    name: "n".into(),
                    peer_id: "p".into(),
                    api_addr: None,
                    software_version: "0".into(),
                    zone: None,
                    capacity: None,
                    listen_addrs: vec![],
                    auto_join: true,
                },
                apply: true,
            },
            ClusterRequest::Admit {
                cluster_key: Bytes(vec![3; 32]),
                certificate: signed.clone(),
            },
        ] {
            assert_eq!(ClusterRequest::decode(&req.encode().unwrap()).unwrap(), req);
        }
        let joined = ClusterResponse::Joined {
            cluster_key: Bytes(vec![3; 32]),
            certificate: signed,
            layout: Some(Bytes(vec![9; 10])),
        };
        assert_eq!(
            ClusterResponse::decode(&joined.encode().unwrap()).unwrap(),
            joined
        );
        let health = ClusterResponse::Health {
            status: HealthStatus::Ok,
            layout_version: 2,
            uptime_secs: 9,
            partitions_syncing: 0,
            keys_version: 3,
            rewrap: Some(RewrapReport {
                keys_version: 3,
                pending: 0,
            }),
            heartbeats: vec![Heartbeat {
                peer: "12D3KooWPeer".into(),
                generation_ms: 5,
                beat_ms: 9,
            }],
        };
        assert_eq!(
            ClusterResponse::decode(&health.encode().unwrap()).unwrap(),
            health
        );
    }

    #[test]
    fn requests_and_responses_are_not_confused() {
        let bytes = ClusterRequest::Health.encode().unwrap();
        assert!(matches!(
            ClusterResponse::decode(&bytes),
            Err(DecodeError::WrongKind { .. })
        ));
        assert!(matches!(
            ReplicateRequest::decode(&bytes),
            Err(DecodeError::WrongKind { .. })
        ));
    }

    #[test]
    fn unknown_codes_from_newer_nodes_decode() {
        let err: ErrorCode =
            crate::wire::from_cbor(&to_cbor("quota_exceeded").unwrap(), 64).unwrap();
        assert_eq!(err, ErrorCode::Other);
        let status: HealthStatus =
            crate::wire::from_cbor(&to_cbor("rebalancing").unwrap(), 64).unwrap();
        assert_eq!(status, HealthStatus::Unknown);
    }

    #[test]
    fn kinds_are_distinct_and_in_range() {
        let all = [
            ReplicateRequest::KIND,
            ReplicateResponse::KIND,
            ForwardRequest::KIND,
            ForwardResponse::KIND,
            SearchRequest::KIND,
            SearchResponse::KIND,
            ClusterRequest::KIND,
            ClusterResponse::KIND,
        ];
        for (i, k) in all.iter().enumerate() {
            assert!((20..=39).contains(k));
            assert!(!all[i + 1..].contains(k));
        }
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ReplicateRequest::decode(&bytes);
            let _ = ReplicateResponse::decode(&bytes);
            let _ = ForwardRequest::decode(&bytes);
            let _ = SearchRequest::decode(&bytes);
            let _ = ClusterResponse::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = ReplicateRequest::PutVersions {
                versions: vec![sealed()],
                layout_version: Some(1),
                write_quorum_id: Some("q".into()),
                hint_for: None,
            }
            .encode()
            .unwrap();
            let i = idx.index(bytes.len());
            bytes[i] = byte;
            let _ = ReplicateRequest::decode(&bytes);
        }
    }
}
