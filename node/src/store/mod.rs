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
//! This module is the store *front*: the API's one entry. It does what
//! every write and read needs whatever the topology (validation, authority,
//! versioning, sealing, the audit entry) through the local [`Engine`], and
//! reaches versions through one [`Tier`]: the local store of a lone node,
//! or the replicator's quorum reads and writes in a cluster. The front
//! picks the tier in one place ([`ContextStore::tier`]); nothing else in
//! it knows whether the node runs alone.

mod batch;
mod engine;
mod links;
pub mod rebuild;
mod resolve;
mod search;
mod tier;

use std::sync::Arc;
use std::time::{Duration, Instant};

use slurp_crypto::{AuditAction, EnvelopeConfig};
use slurp_index::ContextIndex;
use slurp_protocol::{
    Authority, ContextLimits, ContextNode, HlcClock, RecordMeta, RoleName, RoleSet, Temporal,
    UcxlAddress, VersionId, VersionInfo, WriterId,
};
use slurp_storage::Store;

pub use crate::replication::QuorumOpts;
use crate::replication::Replicator;
pub use batch::{BatchItemResult, BatchProgress, BatchReport, BatchStoreItem, Batches};
pub use engine::Engine;
use engine::EngineInner;
pub(crate) use engine::{log_unopenable, open_for_index};
pub use links::{LinkEdge, LinkGraph, LinkNode};
pub use resolve::{FieldSource, Resolved};
pub use search::{Incomplete, SearchResponse, SearchResultHit};
pub(crate) use tier::Tier;

use crate::audit::AuditSink;
use crate::cache::{CachedRead, ContextCache};
use crate::config::StoreOptions;
use crate::error::StoreError;
use crate::keys::Custody;
use crate::metrics::Metrics;
use crate::tokens::Principal;

// The store's requests and answers are the API's bodies.
pub use slurp_protocol::api::{
    ContextResponse as ReadResult, HistoryEntry, ListEntry, ListResponse as ListPage,
    PutContextRequest as PutRequest, PutResponse as PutResult,
};

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
    pub cluster: Option<crate::cluster::Cluster>,
    /// Limits of the replication exchanges this node serves.
    pub replication: crate::replication::ReplicationConfig,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    /// Set when the node belongs to a cluster (always, outside tests); it
    /// replicates only while the cluster has a layout.
    pub(crate) replicator: Option<Replicator>,
    pub(crate) batches: Batches,
}

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
        let engine = Engine(Arc::new(EngineInner {
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
        }));
        let replicator = parts
            .cluster
            .map(|cluster| Replicator::new(engine.clone(), cluster, parts.replication));
        ContextStore(Arc::new(Inner {
            engine,
            replicator,
            batches: Batches::default(),
        }))
    }

    /// The local engine under this front.
    pub fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// The replicator, when this node belongs to a cluster.
    pub fn replicator(&self) -> Option<&Replicator> {
        self.0.replicator.as_ref()
    }

    /// Where versions live for the operation about to run: this node's
    /// own store, or the replicas of the cluster's current layout. The one
    /// place the store forks between a lone node and a cluster.
    pub(crate) fn tier(&self) -> Tier<'_> {
        match &self.0.replicator {
            // Listings and searches cover the partitions where reads go:
            // the old owners until a layout transition has moved them.
            Some(r) => match r.cluster().read_layout() {
                Some(layout) => Tier::Cluster(r, layout),
                None => Tier::Alone(&self.0.engine),
            },
            None => Tier::Alone(&self.0.engine),
        }
    }

    pub fn roles(&self) -> &RoleSet {
        self.0.engine.roles()
    }

    pub fn local(&self) -> &Store {
        self.0.engine.local()
    }

    pub fn index(&self) -> Option<&Arc<ContextIndex>> {
        self.0.engine.index()
    }

    pub fn cache(&self) -> &ContextCache {
        self.0.engine.cache()
    }

    pub fn audit(&self) -> &AuditSink {
        self.0.engine.audit()
    }

    pub fn batches(&self) -> &Batches {
        &self.0.batches
    }

    pub fn metrics(&self) -> &Metrics {
        self.0.engine.metrics()
    }

    pub fn options(&self) -> &StoreOptions {
        self.0.engine.options()
    }

    pub fn writer(&self) -> &WriterId {
        self.0.engine.writer()
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
        if self.roles().authority(role) == Some(Authority::Master) {
            return Ok(true);
        }
        let Some(deleted) = &current.parent_version else {
            return Ok(false);
        };
        let found = self
            .tier()
            .history(&current.key, opts.r)
            .await?
            .into_iter()
            .find(|m| &m.version == deleted);
        Ok(found.is_some_and(|m| !m.tombstone && m.readers.contains(role)))
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
        let limit = self.options().operation_timeout;
        let start = Instant::now();
        let r = bounded(limit, async {
            let (version, target) = self.prepare_put(caller, req, opts).await?;
            self.commit_put(vec![version], opts)
                .await
                .pop()
                .unwrap_or_else(|| Err(StoreError::Internal(format!("no result for {target}"))))
        })
        .await;
        self.0.engine.time("put", "store", start, &r);
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
            && reason.len() > self.0.engine.limits().max_text
        {
            return Err(StoreError::BadRequest(format!(
                "change_reason is {} bytes, over the limit of {}",
                reason.len(),
                self.0.engine.limits().max_text
            )));
        }
        node.version = None;
        node.validate(self.roles(), self.0.engine.limits())?;
        let key = node.address.key();
        if !self.0.engine.may_write(&caller.role) {
            return Err(self
                .0
                .engine
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
            .roles()
            .reader_closure(&node.encrypted_for)
            .map_err(|e| StoreError::BadRequest(e.to_string()))?;
        if !readers.contains(&caller.role) {
            return Err(self
                .0
                .engine
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
            .tier()
            .latest_meta(&key, opts)
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
                .0
                .engine
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
        let version = self.0.engine.next_version(parent.map(|p| &p.version));
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
        let sealed = self.0.engine.seal(&node, &readers);
        self.0.engine.time("seal", "crypto", seal_start, &sealed);
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

    /// Persists prepared versions (one durable commit on a lone node, a
    /// quorum write in a cluster), then indexes them and invalidates the
    /// cache. One result per version, in order.
    pub(crate) async fn commit_put(
        &self,
        prepared: Vec<Prepared>,
        opts: QuorumOpts,
    ) -> Vec<Result<PutResult, StoreError>> {
        self.tier().commit(prepared, opts).await
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
        let r = bounded(self.options().operation_timeout, async {
            if address.is_pattern() {
                return Err(StoreError::BadRequest(
                    "delete needs a concrete address, not a pattern".into(),
                ));
            }
            let key = address.key();
            if !self.0.engine.may_write(&caller.role) {
                return Err(self
                    .0
                    .engine
                    .deny(
                        caller,
                        AuditAction::Delete,
                        &key,
                        "delete",
                        "role has read-only authority",
                    )
                    .await);
            }
            let Some(latest) = self.tier().latest_meta(&key, opts).await.map_err(|e| {
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
                self.0
                    .engine
                    .require_tombstone_reader(caller, &key, &latest)
                    .await?;
                return Err(StoreError::Deleted {
                    address: address.to_string(),
                    version: latest.version.clone(),
                });
            }
            if !latest.readers.contains(&caller.role) {
                return Err(self
                    .0
                    .engine
                    .deny(
                        caller,
                        AuditAction::Delete,
                        &key,
                        "delete",
                        "role may not read the record",
                    )
                    .await);
            }
            let version = self.0.engine.next_version(Some(&latest.version));
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
        self.0.engine.time("delete", "store", start, &r);
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
        let r = bounded(
            self.options().operation_timeout,
            self.tier().get(caller, address, opts),
        )
        .await;
        self.0.engine.time("get", "store", start, &r);
        r
    }

    /// Whether the address has a live, undeleted version `caller` may read.
    pub async fn exists(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
    ) -> Result<bool, StoreError> {
        self.exists_opts(caller, address, QuorumOpts::default())
            .await
    }

    /// [`ContextStore::exists`] with a per-request read quorum.
    pub async fn exists_opts(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        opts: QuorumOpts,
    ) -> Result<bool, StoreError> {
        let key = address.key();
        let latest = self
            .tier()
            .latest_meta(&key, opts)
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
        self.history_opts(caller, address, QuorumOpts::default())
            .await
    }

    /// [`ContextStore::history`] with a per-request read quorum (`r`: how
    /// many replicas' histories are merged).
    pub async fn history_opts(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        opts: QuorumOpts,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let key = address.key();
        let history = self
            .tier()
            .history(&key, opts.r)
            .await
            .map_err(|e| e.quorum_of("history read", &address.to_string(), None))?;
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
                .0
                .engine
                .deny(
                    caller,
                    AuditAction::History,
                    &key,
                    "read the history of",
                    "role reads no version",
                )
                .await);
        }
        self.audit()
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
        let page = self.tier().list(caller, pattern, after, limit).await?;
        self.audit()
            .allow(
                &caller.token_id,
                &caller.role,
                AuditAction::List,
                &pattern.to_string(),
            )
            .await;
        Ok(page)
    }
}

/// A write that has been validated, versioned and sealed.
pub(crate) struct Prepared {
    pub(crate) meta: RecordMeta,
    pub(crate) envelope: Vec<u8>,
    /// The plaintext, for the index; `None` for a tombstone.
    pub(crate) node: Option<ContextNode>,
    pub(crate) caller: Principal,
    /// The address as the request gave it, for errors.
    pub(crate) address: String,
}

impl Prepared {
    /// What the user asked for, as errors name it.
    pub(crate) fn op(&self) -> &'static str {
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
pub(crate) fn read_result(key: &str, read: &CachedRead, latest: bool) -> ReadResult {
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
pub(crate) fn list_prefix(pattern: &UcxlAddress) -> String {
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
