//! The bodies of the node's HTTP API, shared by the server and its clients.
//!
//! The node's handlers build these and the CLI's client decodes them, so
//! the two cannot drift apart field by field; `docs/openapi.json`
//! describes the same shapes. Every type here is plain data, and the one
//! definition of its shape: the node's store, cluster, audit and
//! replication answer with these types themselves (re-exported under
//! their own names, as the index does with its coverage and facet
//! counts). Only where the node keeps more than the API shows (a token's
//! parsed limits, the index's and store's statistics) does it build the
//! body from a type of its own.
//!
//! Responses do not refuse unknown fields, so an older client can read a
//! newer node; request bodies refuse them where the node always has.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::context::ContextNode;
use crate::messages::HealthStatus;
use crate::placement::Member;
use crate::role::RoleName;

/// Types that travel as strings (they serialize through `Display`).
macro_rules! string_schema {
    ($($ty:ty => $name:literal),* $(,)?) => {$(
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string" })
            }
        }
    )*};
}

string_schema!(
    RoleName => "RoleName",
    crate::version::WriterId => "WriterId",
    crate::address::UcxlAddress => "UcxlAddress",
);

// ---------------------------------------------------------------- errors

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

// -------------------------------------------------------------- contexts

/// `POST /v1/contexts`: a write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutContextRequest {
    pub context: ContextNode,
    /// Why this version was written.
    #[serde(default)]
    pub change_reason: Option<String>,
    /// The record expires this many seconds after the write.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Refuse the write unless the latest version is this one
    /// (`wall.logical@writer`), or, with `""`, unless there is none.
    #[serde(default)]
    pub expect_latest: Option<String>,
}

impl PutContextRequest {
    /// A plain write of `context`: no reason, no expiry, no precondition.
    pub fn new(context: ContextNode) -> Self {
        PutContextRequest {
            context,
            change_reason: None,
            ttl_secs: None,
            expect_latest: None,
        }
    }
}

/// What a write (or a delete: a tombstone) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PutResponse {
    /// The `*^` address of the new version (a `*~N` form is not stable
    /// under concurrent writers).
    pub address: String,
    pub version: String,
    pub parent: Option<String>,
    /// Roles that can read the new version.
    pub readers: Vec<RoleName>,
    /// False when this exact version was already stored (a retry).
    pub created: bool,
}

/// `GET /v1/contexts`: one version of a context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ContextResponse {
    /// The `*^` address when the newest version was asked for, else `*~N`
    /// with N = `ordinal` (whatever temporal form the request used).
    pub address: String,
    pub version: String,
    /// 1-based position in the address's history.
    pub ordinal: u64,
    pub context: ContextNode,
}

/// One version in a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    pub ordinal: u64,
    pub version: String,
    pub parent: Option<String>,
    pub tombstone: bool,
    pub expires_at_ms: Option<u64>,
    pub readers: Vec<RoleName>,
}

/// `GET /v1/contexts/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryResponse {
    /// The address with the temporal part `*`.
    pub address: String,
    pub versions: Vec<HistoryEntry>,
}

/// `GET /v1/contexts/exists`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExistsResponse {
    pub exists: bool,
}

/// One address in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListEntry {
    pub address: String,
    pub latest: String,
    pub versions: u64,
    pub path: String,
}

/// `GET /v1/list`: a page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListResponse {
    pub entries: Vec<ListEntry>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

// ---------------------------------------------------------------- search

/// `POST /v1/search` as the CLI sends it. The node reads the body as the
/// index's full query (syntax, time range, facets, snippets too) and
/// replaces any `role` with the caller's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchRequest {
    pub text: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub technologies: Vec<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
}

/// One search hit, decrypted for the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchHit {
    pub address: String,
    pub version: String,
    pub score: f32,
    /// HTML with matched terms in `<b>`; text is escaped.
    pub snippet: String,
    pub context: ContextNode,
}

/// How many matching documents carry one tag or technology (the index's
/// facet counts, re-exported by `slurp_index`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

/// Facet counts over every document matching the query and filters (not
/// only the returned page), highest count first, at most `max_facet_values`
/// each.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct FacetCounts {
    pub tags: Vec<FacetCount>,
    pub technologies: Vec<FacetCount>,
}

/// Why a search's answer may lack matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Incomplete {
    /// Partitions no reachable node answered for (`partial`,
    /// `missing_partitions`).
    MissingPartitions,
    /// An answering node's index is still being rebuilt from its store.
    IndexRebuilding,
    /// An answering node's index rebuild failed: its index lacks what the
    /// rebuild did not reach.
    IndexRebuildFailed,
    /// Records in scope that the node holding them cannot open
    /// (`unopenable`).
    UnopenableRecords,
    /// Hits the index found that could not be read or opened for the
    /// caller.
    HitsLeftOut,
    /// A reason this client does not know yet.
    #[serde(other)]
    Other,
}

/// `POST /v1/search`: a page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchResponse {
    pub total_hits: u64,
    pub hits: Vec<SearchHit>,
    pub facets: FacetCounts,
    pub warnings: Vec<String>,
    /// Time spent in the index, in microseconds.
    pub index_micros: u64,
    /// Time for the whole search including decryption, in microseconds.
    pub took_micros: u64,
    /// Whether some partitions were not searched (no reachable node holds
    /// them); `missing_partitions` names them.
    #[serde(default)]
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_partitions: Vec<u32>,
    /// Nodes that answered for a share of the partitions (1 on a lone node).
    #[serde(default)]
    pub nodes: usize,
    /// Whether the answer may lack matches, for any of
    /// `incomplete_reasons` (each explained in `warnings`). `partial`
    /// keeps its narrower meaning: partitions were not searched.
    #[serde(default)]
    pub incomplete: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete_reasons: Vec<Incomplete>,
    /// Records the caller's role may read, in the search's scope, that the
    /// nodes answering hold but cannot open: matches among them are not
    /// in this answer.
    #[serde(default)]
    pub unopenable: u64,
}

// ------------------------------------------------------------ resolve, links

/// A list item and the context it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FieldSource {
    pub value: String,
    pub source: String,
}

/// `GET /v1/resolve`: the merged view of a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResolveResponse {
    pub address: String,
    pub path: String,
    pub summary: String,
    pub summary_source: String,
    pub purpose: String,
    pub purpose_source: Option<String>,
    pub technologies: Vec<FieldSource>,
    pub tags: Vec<FieldSource>,
    pub insights: Vec<FieldSource>,
    /// The contexts that were merged, root first.
    pub chain: Vec<String>,
}

/// A context reached by following links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LinkNode {
    pub address: String,
    pub hops: u32,
    pub summary: String,
}

/// A link: `from` influenced `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct LinkEdge {
    pub from: String,
    pub to: String,
}

/// `GET /v1/links`: the neighbourhood of an address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LinksResponse {
    pub root: String,
    pub nodes: Vec<LinkNode>,
    pub edges: Vec<LinkEdge>,
}

// ---------------------------------------------------------------- batches

/// One item of `POST /v1/batch/put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchPutItem {
    pub context: ContextNode,
    /// Replaces the context's `encrypted_for` when given.
    #[serde(default)]
    pub roles: Option<Vec<RoleName>>,
    #[serde(default)]
    pub change_reason: Option<String>,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// `POST /v1/batch/put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchPutRequest {
    pub items: Vec<BatchPutItem>,
    /// Store all items or none.
    #[serde(default)]
    pub atomic: bool,
}

/// `POST /v1/batch/get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchGetRequest {
    pub addresses: Vec<String>,
}

/// Why one item of a batch failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ItemError {
    pub code: String,
    pub message: String,
}

/// The outcome of one item, by its position in the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchItemResult<T> {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

/// The answer to a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchReport<T> {
    pub id: u64,
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// True when an atomic batch committed nothing because an item failed.
    pub aborted: bool,
    pub took_ms: u64,
    pub results: Vec<BatchItemResult<T>>,
}

/// `POST /v1/batch/put`.
pub type BatchPutResponse = BatchReport<PutResponse>;
/// `POST /v1/batch/get`.
pub type BatchGetResponse = BatchReport<ContextResponse>;

/// Progress of a batch, running or recently finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchProgress {
    pub id: u64,
    pub kind: String,
    pub role: RoleName,
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub started_ms: u64,
    pub finished: bool,
}

/// `GET /v1/batches`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchesResponse {
    pub batches: Vec<BatchProgress>,
}

// ---------------------------------------------------------------- tokens

/// A time in a request: milliseconds since the Unix epoch, or text
/// (RFC 3339 in UTC, or milliseconds as a string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TimeArg {
    Ms(u64),
    Text(String),
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub role: String,
    #[serde(default)]
    pub label: String,
    /// Networks (CIDR) the token may be used from; none: anywhere.
    #[serde(default)]
    pub allow_from: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<TimeArg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<TimeArg>,
    /// A duration (`1h`, `30m`): `not_after` is this long after
    /// `not_before`, or after now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_for: Option<String>,
}

/// `POST /v1/tokens`: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateTokenResponse {
    pub id: String,
    pub role: RoleName,
    pub label: String,
    pub token: String,
    pub allow_from: Vec<String>,
    pub not_before_ms: Option<u64>,
    pub not_after_ms: Option<u64>,
}

/// One stored token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenView {
    pub id: String,
    pub role: RoleName,
    /// blake3 of the secret part, hex.
    pub secret_hash: String,
    #[serde(default)]
    pub label: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
    /// Networks the caller's address must be in; empty: any address.
    #[serde(default)]
    pub allow_from: Vec<String>,
    #[serde(default)]
    pub not_before_ms: Option<u64>,
    #[serde(default)]
    pub not_after_ms: Option<u64>,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokensResponse {
    pub tokens: Vec<TokenView>,
}

/// `GET /v1/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WhoamiResponse {
    pub token_id: String,
    pub role: RoleName,
}

// ----------------------------------------------------------------- audit

/// Whether an audited action was allowed (the audit log's own type,
/// re-exported by `slurp_crypto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: String,
    pub role: Option<RoleName>,
    pub action: String,
    pub target: String,
    pub decision: Decision,
    pub reason: String,
    /// Hash of the entry before (the genesis value for seq 1).
    pub prev: String,
    /// Hash of this entry: what the next entry, or the head, chains to.
    pub hash: String,
}

/// `GET /v1/audit`: the last entries, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditTailResponse {
    pub entries: Vec<AuditEntry>,
    /// Entries read from the start of the log.
    pub total: u64,
    /// Why reading stopped early: the chain is broken after `total`
    /// entries (see `POST /v1/audit/verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A head of this node's log another member holds, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnchorCheck {
    /// The member that holds the head (peer id).
    pub member: String,
    /// The head it holds, `<seq>:<hash>`, if any.
    pub head: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditVerifyResponse {
    pub ok: bool,
    /// Entries verified (when `ok`).
    pub entries: u64,
    /// The last entry, `<seq>:<hash>` (when `ok`): anchor it elsewhere to
    /// detect entries later dropped from the end.
    pub head: Option<String>,
    /// What the head file records, `<seq>:<hash>`.
    pub head_file: Option<String>,
    /// The first entry found broken (or missing), when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_seq: Option<u64>,
    /// What is wrong, naming the entry and its offset, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The heads of this log the other members hold, each checked against
    /// the log (`ok` is false if any fails).
    #[serde(default)]
    pub anchors: Vec<AnchorCheck>,
}

// ------------------------------------------------------------------ keys

/// One role key a node knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyView {
    pub role: String,
    pub epoch: u32,
    /// 32 hex characters, see docs/crypto.md "Fingerprint".
    pub fingerprint: String,
    /// Whether this node holds the private key.
    pub held: bool,
    /// Whether this is the role's current key (the highest epoch known).
    pub current: bool,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeysResponse {
    pub keys: Vec<KeyView>,
}

/// `POST /v1/keys/rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    pub role: RoleName,
}

/// `POST /v1/keys/rotate`: the role's new epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RotateKeyResponse {
    pub role: RoleName,
    pub epoch: u32,
    pub fingerprint: String,
    pub directory_version: u64,
}

/// One role's keys in `GET /v1/keys/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoleKeyStatus {
    pub role: RoleName,
    pub current_epoch: Option<u32>,
    pub current_fingerprint: Option<String>,
    pub held_epochs: Vec<u32>,
}

/// How far the rewrap of stored records onto current epochs is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RewrapStatus {
    /// Stored versions left on old epochs.
    pub pending: i64,
    /// The `key-rewrap` worker.
    pub worker: Option<WorkerStatus>,
}

/// `GET /v1/keys/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeyStatusResponse {
    pub directory_version: u64,
    pub keys_held: bool,
    pub roles: Vec<RoleKeyStatus>,
    pub rewrap: RewrapStatus,
}

// --------------------------------------------------------------- workers

/// A worker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Idle,
    Active,
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Active => "active",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A worker's status, as the API and CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerStatus {
    pub name: String,
    pub description: String,
    pub state: WorkerState,
    pub interval_ms: u64,
    pub runs: u64,
    pub errors: u64,
    pub items_total: u64,
    pub last_items: u64,
    pub last_note: String,
    pub last_error: Option<String>,
    pub last_started_ms: Option<u64>,
    pub last_finished_ms: Option<u64>,
    pub last_duration_ms: Option<u64>,
    pub next_run_ms: Option<u64>,
}

/// `GET /v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkersResponse {
    pub workers: Vec<WorkerStatus>,
}

/// `POST /v1/workers/{name}/run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TriggeredResponse {
    pub triggered: String,
}

// ---------------------------------------------------------- status, health

/// The local store in `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoreStatus {
    pub keys: u64,
    pub versions: u64,
    pub tombstones: u64,
    pub expiring: u64,
    pub file_bytes: u64,
    pub stored_bytes: u64,
}

/// Whether the index holds everything its source has (the index's own
/// type, re-exported by `slurp_index` as `Coverage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum IndexCoverage {
    /// Every entry fed to it is indexed (or counted as unopenable): no
    /// rebuild is expected, or the last one finished.
    #[default]
    Complete,
    /// A rebuild is expected or running; searches answer from the state
    /// before it (empty at a node's start).
    Rebuilding {
        /// Entries the rebuild has read from its feed so far.
        read: u64,
        /// What the caller announced it would feed (the node: the keys of
        /// its store, an upper bound as deleted keys are not fed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<u64>,
    },
    /// The last rebuild stopped with this error; searches answer from the
    /// state before it, which lacks what the rebuild would have added.
    Failed { error: String },
}

impl IndexCoverage {
    pub fn is_complete(&self) -> bool {
        matches!(self, IndexCoverage::Complete)
    }
}

impl std::fmt::Display for IndexCoverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexCoverage::Complete => f.write_str("complete"),
            IndexCoverage::Rebuilding {
                read,
                expected: Some(n),
            } => write!(f, "rebuilding: {read} of at most {n} records read"),
            IndexCoverage::Rebuilding {
                read,
                expected: None,
            } => write!(f, "rebuilding: {read} records read"),
            IndexCoverage::Failed { error } => write!(f, "rebuild failed: {error}"),
        }
    }
}

/// Records held but not openable here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UnopenableCounts {
    pub total: u64,
    pub no_key: u64,
    pub corrupt: u64,
}

/// The index in `GET /v1/status`; only `enabled` when there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IndexStatus {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_ops: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<IndexCoverage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unopenable: Option<UnopenableCounts>,
}

impl IndexStatus {
    /// A node without an index.
    pub fn disabled() -> Self {
        IndexStatus {
            enabled: false,
            ready: None,
            docs: None,
            segments: None,
            bytes: None,
            pending_ops: None,
            coverage: None,
            unopenable: None,
        }
    }
}

/// The decrypted-context cache in `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CacheStatus {
    pub entries: u64,
    pub bytes: u64,
}

/// The node's place in the cluster in `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterSummary {
    pub peer_id: String,
    pub layout_version: u64,
    pub member: bool,
    /// Members of the layout (0 without one).
    pub members: usize,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusResponse {
    pub version: String,
    pub writer_id: String,
    pub store: StoreStatus,
    pub index: IndexStatus,
    pub cache: CacheStatus,
    pub workers: Vec<WorkerStatus>,
    pub batches: Vec<BatchProgress>,
    pub roles: Vec<RoleName>,
    /// The fingerprint of each role's current key (null: none known).
    pub keys: BTreeMap<String, Option<String>>,
    pub cluster: ClusterSummary,
}

/// One component of the node's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Component {
    pub ok: bool,
    pub detail: String,
}

impl Component {
    pub fn new(ok: bool, detail: impl Into<String>) -> Self {
        Component {
            ok,
            detail: detail.into(),
        }
    }
}

/// The components of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthComponents {
    pub cache: Component,
    pub cluster: Component,
    pub index: Component,
    pub keys: Component,
    pub store: Component,
}

impl HealthComponents {
    /// Each component with its name, in the order of the names.
    pub fn named(&self) -> [(&'static str, &Component); 5] {
        [
            ("cache", &self.cache),
            ("cluster", &self.cluster),
            ("index", &self.index),
            ("keys", &self.keys),
            ("store", &self.store),
        ]
    }
}

/// `GET /health` and `GET /health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthResponse {
    pub live: bool,
    pub ready: bool,
    pub components: HealthComponents,
}

/// `GET /health/live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LiveResponse {
    pub live: bool,
}

// --------------------------------------------------------------- cluster

/// A share of the cluster key this node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShareView {
    /// The share set, hex.
    pub set: String,
    pub index: u8,
    pub threshold: u8,
    pub total: u8,
}

/// How this node keeps the cluster key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyCustody {
    /// This node holds the whole key (it ran `cluster init` and has not
    /// split it yet).
    pub whole: bool,
    /// This node's share, if it holds one.
    pub share: Option<ShareView>,
}

/// A peer as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PeerStatus {
    pub peer_id: String,
    pub name: Option<String>,
    pub api_addr: Option<String>,
    pub zone: Option<String>,
    pub up: bool,
    pub connected: bool,
    pub layout_version: u64,
    pub status: Option<HealthStatus>,
    pub uptime_secs: u64,
    pub last_seen_ms_ago: Option<u64>,
    /// Why the peer is down; none once it answers again.
    pub last_error: Option<String>,
    /// How suspect the failure detector finds the peer (phi: 0 just heard
    /// from; above `cluster.suspicion_threshold` it counts as down).
    #[serde(default)]
    pub suspicion: f64,
}

impl PeerStatus {
    /// A peer this node knows nothing of (a layout entry that names no
    /// peer id).
    pub fn unknown(id: &str) -> Self {
        PeerStatus {
            peer_id: id.to_string(),
            name: None,
            api_addr: None,
            zone: None,
            up: false,
            connected: false,
            layout_version: 0,
            status: None,
            uptime_secs: 0,
            last_seen_ms_ago: None,
            last_error: None,
            suspicion: 0.0,
        }
    }
}

/// A member of the layout as this node sees it: the layout's facts and
/// the peer's, flattened into one object (`zone` is the layout's, the one
/// placement uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberStatus {
    pub id: String,
    pub capacity: u32,
    pub address: String,
    /// Replicas of partitions it holds under the layout.
    pub partitions: usize,
    pub is_self: bool,
    #[serde(flatten)]
    pub peer: PeerStatus,
}

/// Layout changes waiting for `apply`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StagedChanges {
    /// Members to add or update, by id.
    pub join: BTreeMap<String, Member>,
    /// Members to remove.
    pub remove: BTreeSet<String>,
}

impl StagedChanges {
    pub fn is_empty(&self) -> bool {
        self.join.is_empty() && self.remove.is_empty()
    }
}

/// Anti-entropy of this node's partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AntiEntropyStatus {
    /// The layout version the figures are for.
    pub layout_version: u64,
    /// Partitions this node replicates.
    pub partitions: u32,
    /// Of those, partitions whose digests agreed with every co-replica in
    /// the last comparison.
    pub converged: u32,
    /// Partitions the last comparison with some co-replica found
    /// differing.
    pub differing: u32,
    /// Partitions not yet compared with every co-replica under this layout.
    pub unknown: u32,
    /// The oldest "last converged" time over converged partitions, ms
    /// since the Unix epoch.
    pub oldest_converged_ms: Option<u64>,
    /// The digest of every version this node stores (hex; the XOR of
    /// their key hashes): nodes holding the same partitions hold the same
    /// versions exactly when their digests are equal.
    pub store_digest: String,
    /// Versions this node stores.
    pub store_versions: u64,
}

/// `GET /v1/cluster`: what `slurp cluster status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterStatusResponse {
    pub peer_id: String,
    pub name: String,
    /// This node's swarm addresses, each ending in `/p2p/<peer id>`: what
    /// another node passes to `--bootstrap` (empty until listeners are up).
    pub listen_addrs: Vec<String>,
    /// The cluster this node belongs to (the id of the cluster key), if
    /// any.
    pub cluster: Option<String>,
    /// Whether this node holds the whole cluster key (it made the
    /// cluster and has not split the key yet).
    pub key_holder: bool,
    /// How this node keeps the cluster key: whole, a share of it, or
    /// neither.
    pub key_custody: KeyCustody,
    /// When this node's certificate expires, ms since the Unix epoch.
    pub certificate_not_after_ms: Option<u64>,
    /// Why redeeming the join token failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_error: Option<String>,
    /// Whether this node holds the key directory and a key of every role
    /// its certificate grants (false while the keys are on their way).
    pub keys_held: bool,
    pub layout_version: u64,
    pub replication_factor: Option<u8>,
    pub partitions: Option<u32>,
    pub write_quorum: u8,
    pub read_quorum: u8,
    pub auto_join: bool,
    pub member: bool,
    pub members: Vec<MemberStatus>,
    /// Connected or remembered peers that are not members.
    pub others: Vec<PeerStatus>,
    pub staged: StagedChanges,
    pub anti_entropy: AntiEntropyStatus,
    /// The layout transition under way, as this node sees it (absent
    /// when only one layout is active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<TransitionStatus>,
}

/// A layout transition as one node sees it (`slurp cluster status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TransitionStatus {
    /// The active layout versions, oldest first; the last is current.
    pub active: Vec<u64>,
    /// What the transition waits for: `pulling` (this node pulls what it
    /// gained), `syncing` (other new owners still pull), `draining`
    /// (nodes still read from the old owners), `dropping` (old copies
    /// are being handed off and removed).
    pub phase: String,
    /// The layout version whose replica sets this node reads from.
    pub reading: u64,
    /// Partitions this node must pull, and has pulled.
    pub partitions_total: u32,
    pub partitions_done: u32,
    /// Sealed bytes and versions pulled so far.
    pub bytes: u64,
    pub versions: u64,
    /// Pull rate since the transition started, bytes per second.
    pub bytes_per_sec: f64,
    /// Estimated seconds until this node has pulled everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_secs: Option<u64>,
    /// Nodes the next phase waits for, with why (`node2: pulling 12/40`).
    #[serde(default)]
    pub waiting_for: Vec<String>,
}

/// A replica of an address's partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplicaView {
    pub id: String,
    pub name: Option<String>,
    pub api_addr: Option<String>,
    pub up: bool,
}

/// `POST /v1/cluster/holdings`: which of these addresses the node stores
/// a copy of itself (admin only; an operator's check of where copies are,
/// e.g. while a layout transition moves them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HoldingsRequest {
    /// Addresses (their latest version is looked up), at most the node's
    /// `store_options.batch_size`.
    pub addresses: Vec<String>,
}

/// Answers `POST /v1/cluster/holdings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HoldingsResponse {
    /// The node's current layout version.
    pub layout_version: u64,
    /// Per address, in order: the newest version id this node stores of
    /// it (a tombstone's too), or `null` when it stores none.
    pub held: Vec<Option<String>>,
}

/// `GET /v1/cluster/placement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlacementResponse {
    pub address: String,
    pub partition: u16,
    pub layout_version: u64,
    /// In the order requests try them from the answering node.
    pub replicas: Vec<ReplicaView>,
    /// Where writes for a down replica go.
    pub fallbacks: Vec<String>,
}

/// `POST /v1/cluster/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterInitResponse {
    pub cluster: Option<String>,
    pub layout_version: u64,
    pub members: usize,
    pub certificate_not_after_ms: Option<u64>,
}

/// `POST /v1/cluster/invites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Roles the joining node may hold; all the issuer holds when absent.
    #[serde(default)]
    pub roles: Option<Vec<RoleName>>,
    /// How long the invite is valid, e.g. `30m`; `cluster.invite_ttl`
    /// when absent.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// `POST /v1/cluster/invites`: the join token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InviteResponse {
    pub id: String,
    pub token: String,
    pub roles: Vec<RoleName>,
    pub not_after_ms: u64,
}

/// An invite as `GET /v1/cluster/invites` lists it (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InviteView {
    pub id: String,
    pub roles: Vec<RoleName>,
    pub created_ms: u64,
    pub not_after_ms: u64,
    pub used_by: Option<String>,
    pub used_ms: Option<u64>,
}

/// `GET /v1/cluster/invites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InvitesResponse {
    pub invites: Vec<InviteView>,
}

/// `POST /v1/cluster/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The peer id to add; the answering node when absent.
    #[serde(default)]
    pub peer: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub capacity: Option<u32>,
}

/// `POST /v1/cluster/join`: the staged member and everything staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JoinResponse {
    pub staged: Member,
    pub pending: StagedChanges,
}

/// `POST /v1/cluster/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    pub peer: String,
}

/// `POST /v1/cluster/remove`: everything staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RemoveResponse {
    pub pending: StagedChanges,
}

/// `POST /v1/cluster/grant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub peer: String,
    pub roles: Vec<RoleName>,
}

/// `POST /v1/cluster/grant`: the new certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GrantResponse {
    pub peer: String,
    pub roles: Vec<RoleName>,
    pub issued_ms: u64,
    pub not_after_ms: u64,
    /// Whether the peer took the certificate (it was reachable). One that
    /// did not is refused by every member until it gets one again.
    pub delivered: bool,
}

/// `POST /v1/cluster/apply`: the layout published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApplyResponse {
    pub version: u64,
    pub members: Vec<Member>,
    pub replication_factor: u8,
    pub partitions: u32,
    pub moved_replicas: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_reads_back_what_it_writes() {
        let m = MemberStatus {
            id: "p1".into(),
            capacity: 1,
            address: "/ip4/1.2.3.4/tcp/1".into(),
            partitions: 3,
            is_self: true,
            peer: PeerStatus {
                peer_id: "p1".into(),
                name: Some("n".into()),
                api_addr: None,
                zone: Some("z".into()),
                up: true,
                connected: false,
                layout_version: 2,
                status: Some(HealthStatus::Ok),
                uptime_secs: 5,
                last_seen_ms_ago: None,
                last_error: None,
                suspicion: 0.5,
            },
        };
        let text = serde_json::to_string(&m).unwrap();
        let back: MemberStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn an_index_without_one_is_only_disabled() {
        assert_eq!(
            serde_json::to_value(IndexStatus::disabled()).unwrap(),
            serde_json::json!({"enabled": false})
        );
    }
}
