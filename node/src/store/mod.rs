//! The context store: the one place a node turns requests into sealed,
//! versioned, indexed, cached records and back.
//!
//! Every path through here follows the same order. A write validates,
//! checks the caller's authority, assigns a version (hybrid logical clock +
//! this node's writer id), seals the context once to the reader closure of
//! its roles, persists the sealed bytes, indexes the plaintext in memory and
//! invalidates the cache. A read picks the version the address's temporal
//! part names, looks in the cache (per role), then the local store, checks
//! that the caller's role is among the record's readers, opens the envelope
//! with that role's key and caches the plaintext for that role only. Every
//! access decision, allowed or denied, goes to the audit log.
//!
//! The local store is the single storage tier of a lone node; a replicated
//! tier goes behind the same `put_many`/`latest`/`history`/`get` calls, so
//! the store reaches its tier only through those.

mod batch;
mod links;
mod resolve;
mod search;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use slurp_crypto::{AuditAction, Envelope, EnvelopeConfig, Keyring};
use slurp_index::{ContextIndex, IndexEntry};
use slurp_protocol::{
    Authority, ContextLimits, ContextNode, Framed, HlcClock, RecordMeta, RoleName, RoleSet,
    Temporal, UcxlAddress, VersionId, VersionInfo, WriterId,
};
use slurp_storage::{Latest, NewVersion, PutOutcome, Store, StoredRecord};

pub use crate::replication::QuorumOpts;
use crate::replication::coordinator as quorum;
pub use batch::{BatchItemResult, BatchProgress, BatchReport, BatchStoreItem, Batches};
pub use links::{LinkEdge, LinkGraph, LinkNode};
pub use resolve::{FieldSource, Resolved};
pub use search::{Incomplete, SearchResponse, SearchResultHit};

use crate::audit::AuditSink;
use crate::cache::{CachedRead, ContextCache, Selector};
use crate::cluster::Cluster;
use crate::config::StoreOptions;
use crate::error::StoreError;
use crate::keys::Custody;
use crate::metrics::Metrics;
use crate::tokens::Principal;

/// A write request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
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

impl PutRequest {
    pub fn new(context: ContextNode) -> Self {
        PutRequest {
            context,
            change_reason: None,
            ttl_secs: None,
            expect_latest: None,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PutResult {
    /// The address of the new version (`*~N` form is not stable under
    /// concurrent writers, so this is the `*^` address).
    pub address: String,
    pub version: String,
    pub parent: Option<String>,
    /// Roles that can read the new version.
    pub readers: Vec<RoleName>,
    /// False when this exact version was already stored (a retry).
    pub created: bool,
}

/// A read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadResult {
    /// The address of the version returned: the `*^` address when the
    /// newest version was asked for, else `*~N` with N = `ordinal`
    /// (whatever temporal form the request used).
    pub address: String,
    pub version: String,
    /// 1-based position in the address's history.
    pub ordinal: u64,
    pub context: ContextNode,
}

/// One address in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListEntry {
    pub address: String,
    pub latest: String,
    pub versions: u64,
    pub path: String,
}

/// A page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListPage {
    pub entries: Vec<ListEntry>,
    /// Pass as `after` for the next page.
    pub next: Option<String>,
}

/// One version in a history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    pub ordinal: u64,
    pub version: String,
    pub parent: Option<String>,
    pub tombstone: bool,
    pub expires_at_ms: Option<u64>,
    pub readers: Vec<RoleName>,
}

/// Everything the store is built from.
pub struct StoreParts {
    pub roles: RoleSet,
    pub limits: ContextLimits,
    pub options: StoreOptions,
    pub writer: WriterId,
    pub store: Store,
    pub index: Option<Arc<ContextIndex>>,
    pub custody: Arc<Custody>,
    pub cache: ContextCache,
    pub audit: AuditSink,
    pub metrics: Metrics,
    /// The cluster this node belongs to; `None` runs a lone node on its
    /// local store.
    pub cluster: Option<Cluster>,
    /// Limits of the replication exchanges this node serves.
    pub replication: crate::replication::ReplicationConfig,
}

pub(crate) struct Inner {
    pub(crate) roles: RoleSet,
    pub(crate) limits: ContextLimits,
    pub(crate) options: StoreOptions,
    pub(crate) writer: WriterId,
    pub(crate) clock: HlcClock,
    pub(crate) store: Store,
    pub(crate) index: Option<Arc<ContextIndex>>,
    pub(crate) custody: Arc<Custody>,
    pub(crate) cache: ContextCache,
    pub(crate) audit: AuditSink,
    pub(crate) metrics: Metrics,
    pub(crate) envelope: EnvelopeConfig,
    pub(crate) batches: Batches,
    pub(crate) cluster: Option<Cluster>,
    pub(crate) replication: crate::replication::ReplicationConfig,
    /// Read repairs in flight at most (each a background task); past it a
    /// repair is skipped and left to anti-entropy.
    pub(crate) repairs: Arc<tokio::sync::Semaphore>,
}

/// Read repairs running at once at most.
const MAX_REPAIRS: usize = 256;

/// The context store. Cheap to clone.
#[derive(Clone)]
pub struct ContextStore(pub(crate) Arc<Inner>);

fn parse_version(s: &str) -> Result<VersionId, StoreError> {
    s.parse::<VersionId>()
        .map_err(|e| StoreError::BadRequest(e.to_string()))
}

/// Fails an operation that runs past `limit`.
async fn bounded<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout(limit)),
    }
}

impl ContextStore {
    pub fn new(parts: StoreParts) -> Self {
        let batches = Batches::default();
        ContextStore(Arc::new(Inner {
            roles: parts.roles,
            limits: parts.limits,
            options: parts.options,
            writer: parts.writer,
            clock: HlcClock::default(),
            store: parts.store,
            index: parts.index,
            custody: parts.custody,
            cache: parts.cache,
            audit: parts.audit,
            metrics: parts.metrics,
            envelope: EnvelopeConfig::default(),
            batches,
            cluster: parts.cluster,
            replication: parts.replication,
            repairs: Arc::new(tokio::sync::Semaphore::new(MAX_REPAIRS)),
        }))
    }

    pub fn roles(&self) -> &RoleSet {
        &self.0.roles
    }

    pub fn local(&self) -> &Store {
        &self.0.store
    }

    pub fn index(&self) -> Option<&Arc<ContextIndex>> {
        self.0.index.as_ref()
    }

    pub fn cache(&self) -> &ContextCache {
        &self.0.cache
    }

    pub fn audit(&self) -> &AuditSink {
        &self.0.audit
    }

    pub fn batches(&self) -> &Batches {
        &self.0.batches
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn options(&self) -> &StoreOptions {
        &self.0.options
    }

    pub fn writer(&self) -> &WriterId {
        &self.0.writer
    }

    fn time<T>(
        &self,
        op: &'static str,
        tier: &'static str,
        start: Instant,
        r: &Result<T, StoreError>,
    ) {
        self.0.metrics.record(op, tier, r.is_ok(), start.elapsed());
    }

    async fn deny(
        &self,
        caller: &Principal,
        action: AuditAction,
        target: &str,
        verb: &'static str,
        reason: &str,
    ) -> StoreError {
        self.0
            .audit
            .deny(&caller.token_id, &caller.role, action, target, reason)
            .await;
        StoreError::Forbidden {
            role: caller.role.clone(),
            action: verb,
            target: target.to_string(),
        }
    }

    /// A new version id of this node, greater than `after` (the version it
    /// is written on top of) even if that came from a node whose clock is
    /// ahead.
    fn next_version(&self, after: Option<&VersionId>) -> VersionId {
        if let Some(v) = after {
            self.0.clock.observe(v.hlc);
        }
        VersionId {
            hlc: self.0.clock.now(),
            writer: self.0.writer.clone(),
        }
    }

    /// Whether `role` may write a new version over `current`, the newest
    /// version of its address: only if it can read it. A tombstone carries
    /// the readers of the version it deleted, so writing over a deleted
    /// version needs the same authority as writing over the live one. A
    /// tombstone without readers (written before tombstones carried them)
    /// falls back to the readers of the version it deleted, and when that
    /// version is not found, to roles of master authority alone.
    async fn may_replace(
        &self,
        role: &RoleName,
        current: &RecordMeta,
        opts: QuorumOpts,
    ) -> Result<bool, StoreError> {
        if !current.tombstone || !current.readers.is_empty() {
            return Ok(current.readers.contains(role));
        }
        if self.0.roles.authority(role) == Some(Authority::Master) {
            return Ok(true);
        }
        let Some(deleted) = &current.parent_version else {
            return Ok(false);
        };
        let found = match self.route(&current.key) {
            Some(route) => self
                .quorum_history(&route, &current.key, opts.r)
                .await?
                .into_iter()
                .find(|m| &m.version == deleted),
            None => self.0.store.get(&current.key, deleted)?.map(|r| r.meta),
        };
        Ok(found.is_some_and(|m| !m.tombstone && m.readers.contains(role)))
    }

    /// Whether `role` may write (anything but read-only authority).
    fn may_write(&self, role: &RoleName) -> bool {
        !matches!(
            self.0.roles.authority(role),
            Some(Authority::ReadOnly) | None
        )
    }

    // ---- writes ------------------------------------------------------

    /// Stores a new version of a context.
    pub async fn put(&self, caller: &Principal, req: PutRequest) -> Result<PutResult, StoreError> {
        self.put_opts(caller, req, QuorumOpts::default()).await
    }

    /// [`ContextStore::put`] with per-request quorum overrides.
    pub async fn put_opts(
        &self,
        caller: &Principal,
        req: PutRequest,
        opts: QuorumOpts,
    ) -> Result<PutResult, StoreError> {
        let limit = self.0.options.operation_timeout;
        let start = Instant::now();
        let r = bounded(limit, async {
            let (version, target) = self.prepare_put(caller, req, opts).await?;
            self.commit_put(vec![version], opts)
                .await
                .pop()
                .unwrap_or_else(|| Err(StoreError::Internal(format!("no result for {target}"))))
        })
        .await;
        self.time("put", "store", start, &r);
        r
    }

    /// Validates, checks authority, versions and seals one write; nothing is
    /// stored yet.
    pub(crate) async fn prepare_put(
        &self,
        caller: &Principal,
        req: PutRequest,
        opts: QuorumOpts,
    ) -> Result<(Prepared, String), StoreError> {
        let mut node = req.context;
        // Errors name the address as the request gave it.
        let given = node.address.to_string();
        node.address = node.address.with_temporal(Temporal::Latest);
        if node.path.is_empty() {
            node.path = node.address.path.clone();
        }
        if let Some(reason) = &req.change_reason
            && reason.len() > self.0.limits.max_text
        {
            return Err(StoreError::BadRequest(format!(
                "change_reason is {} bytes, over the limit of {}",
                reason.len(),
                self.0.limits.max_text
            )));
        }
        node.version = None;
        node.validate(&self.0.roles, &self.0.limits)?;
        let key = node.address.key();
        if !self.may_write(&caller.role) {
            return Err(self
                .deny(
                    caller,
                    AuditAction::Write,
                    &key,
                    "write",
                    "role has read-only authority",
                )
                .await);
        }
        let readers = self
            .0
            .roles
            .reader_closure(&node.encrypted_for)
            .map_err(|e| StoreError::BadRequest(e.to_string()))?;
        if !readers.contains(&caller.role) {
            return Err(self
                .deny(
                    caller,
                    AuditAction::Write,
                    &key,
                    "write",
                    "a role may only write records it can read",
                )
                .await);
        }
        let current = self
            .latest_meta_any(&key, opts)
            .await
            .map_err(|e| e.quorum_of("write", &given, Some("reading the parent version")))?;
        let parent = current.as_ref();
        if let Some(p) = parent
            && !self
                .may_replace(&caller.role, p, opts)
                .await
                .map_err(|e| e.quorum_of("write", &given, Some("reading the deleted version")))?
        {
            let reason = if p.tombstone {
                "the deleted version is not readable by this role"
            } else {
                "the current version is not readable by this role"
            };
            return Err(self
                .deny(caller, AuditAction::Write, &key, "write", reason)
                .await);
        }
        if let Some(expect) = &req.expect_latest {
            let actual = parent.map(|p| p.version.to_string()).unwrap_or_default();
            let matches = if expect.is_empty() {
                parent.is_none()
            } else {
                parent.is_some_and(|p| Some(&p.version) == parse_version(expect).ok().as_ref())
            };
            if !matches {
                return Err(StoreError::Conflict {
                    address: key,
                    expected: expect.clone(),
                    actual,
                });
            }
        }
        let version = self.next_version(parent.map(|p| &p.version));
        node.version = Some(VersionInfo {
            id: version.clone(),
            parent: parent.map(|p| p.version.clone()),
            change_reason: req.change_reason.unwrap_or_default(),
        });
        let expires_at_ms = req
            .ttl_secs
            .map(|s| version.hlc.wall_ms.saturating_add(s.saturating_mul(1000)));
        let meta = RecordMeta {
            key: key.clone(),
            path: node.path.clone(),
            version: version.clone(),
            parent_version: parent.map(|p| p.version.clone()),
            readers: readers.clone(),
            influences: node.links.influences.iter().map(|a| a.key()).collect(),
            influenced_by: node.links.influenced_by.iter().map(|a| a.key()).collect(),
            expires_at_ms,
            tombstone: false,
        };
        let seal_start = Instant::now();
        let sealed = self.seal(&node, &readers);
        self.time("seal", "crypto", seal_start, &sealed);
        Ok((
            Prepared {
                meta,
                envelope: sealed?,
                node: Some(node),
                caller: caller.clone(),
                address: given,
            },
            key,
        ))
    }

    fn seal(&self, node: &ContextNode, readers: &[RoleName]) -> Result<Vec<u8>, StoreError> {
        let plaintext = slurp_crypto::Zeroizing::new(
            node.encode()
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        );
        let keyring = self.0.custody.keyring();
        let recipients = keyring.recipients_for(readers)?;
        Ok(Envelope::seal_with(&plaintext, &recipients, &self.0.envelope)?.to_bytes()?)
    }

    /// Persists prepared versions (one durable commit on a lone node, a
    /// quorum write in a cluster), then indexes them and invalidates the
    /// cache. One result per version, in order.
    pub(crate) async fn commit_put(
        &self,
        prepared: Vec<Prepared>,
        opts: QuorumOpts,
    ) -> Vec<Result<PutResult, StoreError>> {
        if let Some(cluster) = self.cluster()
            && cluster.layout().is_some()
        {
            return self.commit_put_cluster(cluster, prepared, opts).await;
        }
        let start = Instant::now();
        let outcomes = self
            .0
            .store
            .put_many(
                prepared
                    .iter()
                    .map(|p| NewVersion {
                        meta: p.meta.clone(),
                        envelope: p.envelope.clone(),
                    })
                    .collect(),
            )
            .await;
        self.0.metrics.record(
            "put",
            "local",
            outcomes.iter().all(|o| o.is_ok()),
            start.elapsed(),
        );
        let mut results = Vec::with_capacity(prepared.len());
        for (p, outcome) in prepared.into_iter().zip(outcomes) {
            let created = match outcome {
                Ok(PutOutcome::Inserted { .. }) => Ok(true),
                Ok(PutOutcome::AlreadyPresent { .. }) => Ok(false),
                Ok(PutOutcome::Expired) => Err(StoreError::BadRequest(format!(
                    "{}: the version had already expired when it was stored",
                    p.meta.key
                ))),
                // A fresh version is newer than any collected deletion;
                // this is a clock far behind the deletion's.
                Ok(PutOutcome::Collected) => Err(StoreError::Conflict {
                    address: p.address.clone(),
                    expected: p.meta.version.to_string(),
                    actual: "deleted and collected at a later version".into(),
                }),
                Err(e) => Err(e.into()),
            };
            results.push(match created {
                Ok(created) => Ok(self.after_put(p, created, true).await),
                Err(e) => Err(e),
            });
        }
        results
    }

    async fn commit_put_cluster(
        &self,
        cluster: &Cluster,
        prepared: Vec<Prepared>,
        opts: QuorumOpts,
    ) -> Vec<Result<PutResult, StoreError>> {
        let start = Instant::now();
        let mut items = Vec::with_capacity(prepared.len());
        let mut refused: Vec<Option<StoreError>> = Vec::with_capacity(prepared.len());
        let mut sent = Vec::with_capacity(prepared.len());
        for p in prepared {
            let Some(route) = cluster.route(&p.meta.key) else {
                refused.push(Some(StoreError::Unavailable(
                    "the cluster layout is gone".into(),
                )));
                continue;
            };
            let need = cluster.write_quorum(opts.w, route.replicas.len());
            // Refuse before writing anywhere when too few replicas are up,
            // so a failed write rarely leaves a copy behind.
            let up: Vec<&String> = route
                .replicas
                .iter()
                .filter(|r| *r == cluster.me() || cluster.peers().is_up(r))
                .collect();
            if up.len() < need {
                self.0.metrics.replication("quorum_failed", 1);
                let down: Vec<String> = route
                    .replicas
                    .iter()
                    .filter(|r| !up.contains(r))
                    .map(|r| quorum::cluster_peer_label(cluster, r))
                    .collect();
                refused.push(Some(StoreError::Quorum {
                    op: p.op(),
                    address: p.address.clone(),
                    during: None,
                    needed: need,
                    acked: 0,
                    detail: format!(
                        "only {} of the {} replicas are up; down: {}",
                        up.len(),
                        route.replicas.len(),
                        down.join(", ")
                    ),
                }));
                continue;
            }
            refused.push(None);
            items.push(quorum::WriteItem {
                version: slurp_protocol::messages::SealedVersion {
                    meta: p.meta.clone(),
                    envelope: p.envelope.clone().into(),
                },
                plain: p.node.clone(),
                route,
                need,
            });
            sent.push(p);
        }
        let tallies = self.quorum_write(items).await;
        self.0.metrics.record(
            "put",
            "cluster",
            tallies.iter().all(|t| t.acked >= t.need),
            start.elapsed(),
        );
        let mut decided = Vec::with_capacity(sent.len());
        for (p, t) in sent.into_iter().zip(tallies) {
            if t.acked >= t.need {
                decided.push(Ok(self.after_put(p, t.created, false).await));
            } else {
                decided.push(Err(quorum::quorum_failed(
                    p.op(),
                    &p.address,
                    t.need,
                    t.acked,
                    &t.errors,
                    |peer| quorum::cluster_peer_label(cluster, peer),
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

    /// The newest version's metadata of `key`: from the local store on a
    /// lone node, from a read quorum in a cluster.
    async fn latest_meta_any(
        &self,
        key: &str,
        opts: QuorumOpts,
    ) -> Result<Option<RecordMeta>, StoreError> {
        match self.route(key) {
            Some(route) => Ok(self
                .quorum_heads(&route, key, opts.r, false)
                .await?
                .newest
                .map(|v| v.meta)),
            None => Ok(self.0.store.latest_meta(key)?.map(|(m, _)| m)),
        }
    }

    /// What follows a stored version on the coordinator: the cache, the
    /// audit entry and (`index`: when the store wrote it locally) the index.
    async fn after_put(&self, p: Prepared, created: bool, index_it: bool) -> PutResult {
        let key = p.meta.key.clone();
        self.0
            .cache
            .invalidate_latest(&key, self.0.roles.roles())
            .await;
        let action = if p.meta.tombstone {
            AuditAction::Delete
        } else {
            AuditAction::Write
        };
        self.0
            .audit
            .allow(&p.caller.token_id, &p.caller.role, action, &key)
            .await;
        if let Some(index) = &self.0.index
            && self.0.options.indexing
            && index_it
        {
            let start = Instant::now();
            let r = match &p.node {
                Some(node) => index
                    .upsert(&IndexEntry {
                        key: key.clone(),
                        version: p.meta.version.clone(),
                        readers: p.meta.readers.clone(),
                        context: node.clone(),
                    })
                    .map(|_| ()),
                None => index.delete(&key, &p.meta.version).map(|_| ()),
            };
            let r = r.map_err(StoreError::from);
            self.time("index", "index", start, &r);
            if let Err(e) = r {
                // The record is durable; the index catches up on the
                // next rebuild. Say so rather than fail the write.
                tracing::warn!(key = %key, error = %e, "indexing failed");
            }
        }
        let address = UcxlAddress::from_key(&key)
            .map(|a| a.to_string())
            .unwrap_or(key);
        PutResult {
            address,
            version: p.meta.version.to_string(),
            parent: p.meta.parent_version.as_ref().map(|v| v.to_string()),
            readers: p.meta.readers,
            created,
        }
    }

    /// Deletes an address: writes a tombstone version. History keeps every
    /// version; reads of the latest answer "deleted".
    pub async fn delete(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
    ) -> Result<PutResult, StoreError> {
        self.delete_opts(caller, address, QuorumOpts::default())
            .await
    }

    /// [`ContextStore::delete`] with per-request quorum overrides.
    pub async fn delete_opts(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        opts: QuorumOpts,
    ) -> Result<PutResult, StoreError> {
        let start = Instant::now();
        let r = bounded(self.0.options.operation_timeout, async {
            if address.is_pattern() {
                return Err(StoreError::BadRequest(
                    "delete needs a concrete address, not a pattern".into(),
                ));
            }
            let key = address.key();
            if !self.may_write(&caller.role) {
                return Err(self
                    .deny(
                        caller,
                        AuditAction::Delete,
                        &key,
                        "delete",
                        "role has read-only authority",
                    )
                    .await);
            }
            let Some(latest) = self.latest_meta_any(&key, opts).await.map_err(|e| {
                e.quorum_of(
                    "delete",
                    &address.to_string(),
                    Some("reading the current version"),
                )
            })?
            else {
                return Err(StoreError::NotFound(address.to_string()));
            };
            if latest.tombstone {
                // Only a role that could read what was deleted learns that
                // it existed.
                self.require_tombstone_reader(caller, &key, &latest).await?;
                return Err(StoreError::Deleted {
                    address: address.to_string(),
                    version: latest.version.clone(),
                });
            }
            if !latest.readers.contains(&caller.role) {
                return Err(self
                    .deny(
                        caller,
                        AuditAction::Delete,
                        &key,
                        "delete",
                        "role may not read the record",
                    )
                    .await);
            }
            let version = self.next_version(Some(&latest.version));
            let meta = RecordMeta {
                key: key.clone(),
                path: latest.path.clone(),
                version,
                parent_version: Some(latest.version.clone()),
                readers: latest.readers.clone(),
                influences: vec![],
                influenced_by: vec![],
                expires_at_ms: None,
                tombstone: true,
            };
            let prepared = Prepared {
                meta,
                envelope: Vec::new(),
                node: None,
                caller: caller.clone(),
                address: address.to_string(),
            };
            self.commit_put(vec![prepared], opts)
                .await
                .pop()
                .unwrap_or_else(|| Err(StoreError::Internal("no delete result".into())))
        })
        .await;
        self.time("delete", "store", start, &r);
        r
    }

    // ---- reads -------------------------------------------------------

    /// Reads the version of a context its address names.
    pub async fn get(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
    ) -> Result<ReadResult, StoreError> {
        self.get_opts(caller, address, QuorumOpts::default()).await
    }

    /// [`ContextStore::get`] with per-request quorum overrides.
    pub async fn get_opts(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        opts: QuorumOpts,
    ) -> Result<ReadResult, StoreError> {
        let start = Instant::now();
        let r = bounded(self.0.options.operation_timeout, async {
            if !address.is_pattern()
                && let Some(route) = self.route(&address.key())
            {
                self.get_cluster(caller, address, route, opts)
                    .await
                    .map_err(|e| e.quorum_of("read", &address.to_string(), None))
            } else {
                self.get_inner(caller, address).await
            }
        })
        .await;
        self.time("get", "store", start, &r);
        r
    }

    async fn get_inner(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
    ) -> Result<ReadResult, StoreError> {
        if address.is_pattern() {
            return Err(StoreError::BadRequest(
                "get needs a concrete address; use list for patterns".into(),
            ));
        }
        let key = address.key();
        let role = &caller.role;
        let latest = matches!(address.temporal, Temporal::Latest | Temporal::Any);
        if latest {
            let start = Instant::now();
            if let Some(hit) = self.0.cache.get(role, &key, &Selector::Latest).await {
                self.0.metrics.record("get", "cache", true, start.elapsed());
                self.0
                    .audit
                    .allow(&caller.token_id, role, AuditAction::Read, &key)
                    .await;
                return Ok(read_result(&key, &hit, true));
            }
        }
        let generation = self.0.cache.generation(&key);
        let start = Instant::now();
        let (record, ordinal) = if latest {
            match self.0.store.latest(&key)? {
                Latest::Live { record, ordinal } => (record, ordinal),
                Latest::Deleted { tombstone, .. } => {
                    self.require_tombstone_reader(caller, &key, &tombstone)
                        .await?;
                    return Err(StoreError::Deleted {
                        address: address.to_string(),
                        version: tombstone.version,
                    });
                }
                Latest::Absent => return Err(StoreError::NotFound(address.to_string())),
            }
        } else {
            let history = self.0.store.history(&key)?;
            let i = address
                .temporal
                .select(history.len())
                .ok_or_else(|| StoreError::NotFound(address.to_string()))?;
            let meta = &history[i];
            self.require_reader(caller, &key, meta).await?;
            if meta.tombstone {
                return Err(StoreError::Deleted {
                    address: address.to_string(),
                    version: meta.version.clone(),
                });
            }
            let sel = Selector::Exact(meta.version.clone());
            if let Some(hit) = self.0.cache.get(role, &key, &sel).await {
                self.0
                    .audit
                    .allow(&caller.token_id, role, AuditAction::Read, &key)
                    .await;
                return Ok(read_result(&key, &hit, false));
            }
            let record = self
                .0
                .store
                .get(&key, &meta.version)?
                .ok_or_else(|| StoreError::NotFound(address.to_string()))?;
            (record, i as u64 + 1)
        };
        self.0.metrics.record("get", "local", true, start.elapsed());
        self.require_reader(caller, &key, &record.meta).await?;
        let node = self.open(role, &record)?;
        let read = CachedRead {
            node: Arc::new(node),
            ordinal,
        };
        let sel = if latest {
            Selector::Latest
        } else {
            Selector::Exact(record.meta.version.clone())
        };
        Ok(self
            .finish_read(caller, &key, sel, read, generation, latest)
            .await)
    }

    /// Caches a read for the caller's role, audits it and answers it
    /// (`latest`: the newest version was asked for).
    async fn finish_read(
        &self,
        caller: &Principal,
        key: &str,
        sel: Selector,
        read: CachedRead,
        generation: u64,
        latest: bool,
    ) -> ReadResult {
        self.0
            .cache
            .insert(&caller.role, key, sel, &read, generation)
            .await;
        self.0
            .audit
            .allow(&caller.token_id, &caller.role, AuditAction::Read, key)
            .await;
        read_result(key, &read, latest)
    }

    /// A read in a cluster: the newest version from a read quorum (or, for
    /// older versions, the merged history), opened here. The cache is
    /// consulted by exact version only, since another node may have
    /// written a newer one.
    async fn get_cluster(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        route: crate::cluster::Route,
        opts: QuorumOpts,
    ) -> Result<ReadResult, StoreError> {
        let key = address.key();
        let role = &caller.role;
        let latest = matches!(address.temporal, Temporal::Latest | Temporal::Any);
        let generation = self.0.cache.generation(&key);
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
            .metrics
            .record("get", "cluster", true, start.elapsed());
        if meta.tombstone {
            self.require_tombstone_reader(caller, &key, &meta).await?;
            return Err(StoreError::Deleted {
                address: address.to_string(),
                version: meta.version,
            });
        }
        self.require_reader(caller, &key, &meta).await?;
        let sel = Selector::Exact(meta.version.clone());
        if let Some(hit) = self.0.cache.get(role, &key, &sel).await {
            self.0
                .audit
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
        let node = self.open(role, &record)?;
        let read = CachedRead {
            node: Arc::new(node),
            ordinal,
        };
        Ok(self
            .finish_read(caller, &key, sel, read, generation, latest)
            .await)
    }

    /// Refuses (and audits) a read of `meta` by a role not among its readers.
    async fn require_reader(
        &self,
        caller: &Principal,
        key: &str,
        meta: &RecordMeta,
    ) -> Result<(), StoreError> {
        if meta.readers.contains(&caller.role) {
            return Ok(());
        }
        Err(self
            .deny(
                caller,
                AuditAction::Read,
                key,
                "read",
                "role is not a reader of the record",
            )
            .await)
    }

    /// A tombstone answers "deleted" only to a role that could read what it
    /// deleted (its readers); others are refused as for the live record,
    /// so the answer does not reveal that the address ever held anything
    /// they may not read. Tombstones written before they carried readers
    /// (none recorded) answer "deleted" to anyone, as they always did.
    async fn require_tombstone_reader(
        &self,
        caller: &Principal,
        key: &str,
        tombstone: &RecordMeta,
    ) -> Result<(), StoreError> {
        if tombstone.readers.is_empty() {
            return Ok(());
        }
        self.require_reader(caller, key, tombstone).await
    }

    /// Opens a stored record with `role`'s key: the stanza for that role is
    /// named in the envelope header, so exactly one key is tried.
    fn open(&self, role: &RoleName, record: &StoredRecord) -> Result<ContextNode, StoreError> {
        let start = Instant::now();
        let keyring: Arc<Keyring> = self.0.custody.keyring();
        let r = (|| {
            let env = Envelope::from_bytes(&record.envelope, &self.0.envelope)?;
            let key = env
                .sealed_to()
                .iter()
                .filter(|s| &s.role == role)
                .find_map(|s| keyring.get(&s.fingerprint))
                .ok_or_else(|| StoreError::NoKey(role.clone()))?;
            let plain = env.open_with_key(key)?;
            ContextNode::decode(&plain).map_err(|e| {
                StoreError::Crypto(
                    format!("{}: sealed context does not decode: {e}", record.meta.key).into(),
                )
            })
        })();
        self.time("open", "crypto", start, &r);
        r
    }

    /// Whether the address has a live, undeleted version `caller` may read.
    pub async fn exists(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
    ) -> Result<bool, StoreError> {
        let key = address.key();
        let latest = self
            .latest_meta_any(&key, QuorumOpts::default())
            .await
            .map_err(|e| e.quorum_of("read", &address.to_string(), None))?;
        Ok(matches!(
            latest,
            Some(m) if !m.tombstone && m.readers.contains(&caller.role)
        ))
    }

    /// Every version of an address the caller may read, oldest first.
    pub async fn history(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let key = address.key();
        let history = match self.route(&key) {
            Some(route) => self
                .quorum_history(&route, &key, None)
                .await
                .map_err(|e| e.quorum_of("history read", &address.to_string(), None))?,
            None => self.0.store.history(&key)?,
        };
        if history.is_empty() {
            return Err(StoreError::NotFound(address.to_string()));
        }
        let visible: Vec<HistoryEntry> = history
            .iter()
            .enumerate()
            .filter(|(_, m)| m.readers.contains(&caller.role))
            .map(|(i, m)| HistoryEntry {
                ordinal: i as u64 + 1,
                version: m.version.to_string(),
                parent: m.parent_version.as_ref().map(|v| v.to_string()),
                tombstone: m.tombstone,
                expires_at_ms: m.expires_at_ms,
                readers: m.readers.clone(),
            })
            .collect();
        if visible.is_empty() {
            return Err(self
                .deny(
                    caller,
                    AuditAction::History,
                    &key,
                    "read the history of",
                    "role reads no version",
                )
                .await);
        }
        self.0
            .audit
            .allow(&caller.token_id, &caller.role, AuditAction::History, &key)
            .await;
        Ok(visible)
    }

    /// Addresses matching a pattern (segments may be `any`; the path is a
    /// prefix) whose latest version the caller may read, in key order.
    pub async fn list(
        &self,
        caller: &Principal,
        pattern: &UcxlAddress,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let page = match self.cluster().and_then(|c| c.layout().map(|l| (c, l))) {
            Some((cluster, layout)) => {
                self.list_cluster(caller, cluster, &layout, pattern, after, limit)
                    .await?
            }
            None => self.list_local(pattern, after, limit, None, &caller.role)?,
        };
        self.0
            .audit
            .allow(
                &caller.token_id,
                &caller.role,
                AuditAction::List,
                &pattern.to_string(),
            )
            .await;
        Ok(page)
    }

    /// A listing in a cluster: every node of a partition cover lists its
    /// share of slots (through the forwarding protocol, as the caller),
    /// and the pages merge in key order. Listing reads each node's local
    /// copy, so it is eventually consistent, unlike get.
    async fn list_cluster(
        &self,
        caller: &Principal,
        cluster: &Cluster,
        layout: &slurp_protocol::placement::Layout,
        pattern: &UcxlAddress,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        use slurp_protocol::messages::{SearchRequest, SearchResponse};
        let limit = limit.clamp(1, self.0.options.batch_size.max(1));
        let (plan, missing) = cluster.cover(layout, &[]);
        if !missing.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "{} partitions have no reachable replica; the listing would be incomplete",
                missing.len()
            )));
        }
        let scheme = layout.partitions();
        let asks = plan.iter().map(|(peer, parts)| {
            let scope = slurp_index::SlotScope::from_partitions(&scheme, parts.iter().copied());
            async move {
                if peer == cluster.me() {
                    return self.list_local(pattern, after, limit, Some(&scope), &caller.role);
                }
                let req = SearchRequest::List {
                    pattern: pattern.to_string(),
                    role: caller.role.clone(),
                    after: after.map(str::to_string),
                    limit: limit as u32,
                    scope: serde_json::to_value(&scope)
                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                    authorisation: None,
                };
                let label = crate::replication::coordinator::cluster_peer_label(cluster, peer);
                match cluster.search(peer, req).await {
                    Ok(SearchResponse::Listed { page }) => serde_json::from_value::<ListPage>(page)
                        .map_err(|e| StoreError::Internal(format!("{label}: {e}"))),
                    // The peer refused the request itself: the same refusal
                    // for the whole listing, never taken for a peer that is
                    // down.
                    Err(crate::cluster::ClusterError::Remote(
                        slurp_protocol::messages::ErrorCode::BadRequest,
                        message,
                    )) => Err(StoreError::BadRequest(format!("{label}: {message}"))),
                    Ok(_) => Err(StoreError::Unavailable(format!(
                        "{label}: answered a listing with something else"
                    ))),
                    Err(e) => Err(StoreError::Unavailable(format!("{label}: {e}"))),
                }
            }
        });
        let mut all: Vec<(String, ListEntry)> = Vec::new();
        let mut more = false;
        for page in futures::future::join_all(asks).await {
            let page = page?;
            more |= page.next.is_some();
            for e in page.entries {
                let key = UcxlAddress::parse(&e.address)
                    .map(|a| a.key())
                    .unwrap_or_else(|_| e.address.clone());
                all.push((key, e));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        more |= all.len() > limit;
        all.truncate(limit);
        let next = if more {
            all.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Ok(ListPage {
            entries: all.into_iter().map(|(_, e)| e).collect(),
            next,
        })
    }

    /// A listing of this node's own store, limited to `scope` if given.
    pub fn list_local(
        &self,
        pattern: &UcxlAddress,
        after: Option<&str>,
        limit: usize,
        scope: Option<&slurp_index::SlotScope>,
        role: &RoleName,
    ) -> Result<ListPage, StoreError> {
        let limit = limit.clamp(1, self.0.options.batch_size.max(1));
        let prefix = list_prefix(pattern);
        let mut entries = Vec::new();
        let mut cursor = after.map(str::to_string);
        // Pages of keys are filtered by pattern and readability; keep
        // reading pages until the answer is full or the keys run out,
        // bounded so one request cannot walk the whole store.
        let mut examined = 0usize;
        let budget = limit.saturating_mul(50).max(10_000);
        let next = loop {
            let page = self
                .0
                .store
                .list_keys(&prefix, cursor.as_deref(), limit.max(256))?;
            let mut stopped_at = None;
            for k in &page.keys {
                examined += 1;
                if scope.is_some_and(|s| !s.contains(slurp_protocol::Slot::of(&k.key))) {
                    continue;
                }
                let Ok(addr) = UcxlAddress::from_key(&k.key) else {
                    continue;
                };
                if !pattern.matches(&addr) {
                    continue;
                }
                let Some((meta, _)) = self.0.store.latest_meta(&k.key)? else {
                    continue;
                };
                if meta.tombstone || !meta.readers.contains(role) {
                    continue;
                }
                entries.push(ListEntry {
                    address: addr.to_string(),
                    latest: k.latest.to_string(),
                    versions: k.versions,
                    path: meta.path.clone(),
                });
                if entries.len() >= limit {
                    stopped_at = Some(k.key.clone());
                    break;
                }
            }
            if let Some(at) = stopped_at {
                break Some(at);
            }
            match page.next_after {
                Some(n) if examined < budget => cursor = Some(n),
                Some(n) => break Some(n),
                None => break None,
            }
        };
        Ok(ListPage { entries, next })
    }
}

/// A write that has been validated, versioned and sealed.
pub(crate) struct Prepared {
    meta: RecordMeta,
    envelope: Vec<u8>,
    /// The plaintext, for the index; `None` for a tombstone.
    node: Option<ContextNode>,
    caller: Principal,
    /// The address as the request gave it, for errors.
    address: String,
}

impl Prepared {
    /// What the user asked for, as errors name it.
    fn op(&self) -> &'static str {
        if self.meta.tombstone {
            "delete"
        } else {
            "write"
        }
    }
}

/// The answer to a read. Its address names the version returned: `*^`
/// when the newest was asked for, else `*~N` with N its ordinal (whatever
/// form the request used: `~~1`, `^^0` and `*~2` may all name version 2).
fn read_result(key: &str, read: &CachedRead, latest: bool) -> ReadResult {
    let version = read
        .node
        .version
        .as_ref()
        .map(|v| v.id.to_string())
        .unwrap_or_default();
    let temporal = if latest {
        Temporal::Latest
    } else {
        Temporal::Version(read.ordinal)
    };
    ReadResult {
        address: UcxlAddress::from_key(key)
            .map(|a| a.with_temporal(temporal).to_string())
            .unwrap_or_else(|_| key.to_string()),
        version,
        ordinal: read.ordinal,
        context: (*read.node).clone(),
    }
}

/// The longest key prefix every match of `pattern` shares.
fn list_prefix(pattern: &UcxlAddress) -> String {
    use slurp_protocol::Segment;
    let mut prefix = String::from(slurp_protocol::address::SCHEME);
    let parts = [
        (&pattern.agent, ":"),
        (&pattern.role, "@"),
        (&pattern.project, ":"),
        (&pattern.task, "/"),
    ];
    for (seg, sep) in parts {
        match seg {
            Segment::Any => return prefix,
            Segment::Name(n) => {
                prefix.push_str(n);
                prefix.push_str(sep);
            }
        }
    }
    prefix.push_str(&pattern.path);
    prefix
}

#[cfg(test)]
mod tests;
