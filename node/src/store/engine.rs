//! The local engine: everything a node does with contexts on its own,
//! knowing no peers.
//!
//! It validates nothing about the cluster and sends nothing anywhere: it
//! checks a caller's authority over a record, versions writes with this
//! node's clock, seals and opens envelopes, keeps the per-role cache and
//! the index in step with what the local store holds, audits every
//! decision, and applies sealed versions (its own, or a peer's after the
//! replica checks) to the local store. The store front
//! ([`super::ContextStore`]) runs a lone node on it directly; in a cluster
//! the replicator ([`crate::replication::Replicator`]) calls it on every
//! replica, so a write reaches storage through the same code either way.

use std::sync::Arc;
use std::time::Instant;

use slurp_crypto::{AuditAction, Envelope, EnvelopeConfig, Keyring};
use slurp_index::{ContextIndex, IndexEntry, UnopenableEntry, UnopenableReason};
use slurp_protocol::messages::{Head, PutOutcome as WirePut, SealedVersion, VersionOutcome};
use slurp_protocol::{
    Authority, ContextLimits, ContextNode, Framed, HlcClock, RecordMeta, RoleName, RoleSet,
    Temporal, UcxlAddress, VersionId, WriterId,
};
use slurp_storage::{Latest, NewVersion, PutOutcome, Store, StoredRecord};

use super::{ListEntry, ListPage, Prepared, PutResult, ReadResult, list_prefix, read_result};
use crate::audit::AuditSink;
use crate::cache::{CachedRead, ContextCache, Selector};
use crate::config::StoreOptions;
use crate::error::StoreError;
use crate::keys::Custody;
use crate::metrics::Metrics;
use crate::tokens::Principal;

/// The local engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine(pub(crate) Arc<EngineInner>);

pub(crate) struct EngineInner {
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
}

impl Engine {
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

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn options(&self) -> &StoreOptions {
        &self.0.options
    }

    pub fn writer(&self) -> &WriterId {
        &self.0.writer
    }

    pub fn limits(&self) -> &ContextLimits {
        &self.0.limits
    }

    /// Persists prepared versions in one durable commit of the local
    /// store, then indexes them and invalidates the cache. One result per
    /// version, in order.
    pub(crate) async fn commit(
        &self,
        prepared: Vec<Prepared>,
    ) -> Vec<Result<PutResult, StoreError>> {
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

    pub(crate) fn time<T>(
        &self,
        op: &'static str,
        tier: &'static str,
        start: Instant,
        r: &Result<T, StoreError>,
    ) {
        self.0.metrics.record(op, tier, r.is_ok(), start.elapsed());
    }

    pub(crate) async fn deny(
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
    pub(crate) fn next_version(&self, after: Option<&VersionId>) -> VersionId {
        if let Some(v) = after {
            self.0.clock.observe(v.hlc);
        }
        VersionId {
            hlc: self.0.clock.now(),
            writer: self.0.writer.clone(),
        }
    }

    /// Whether `role` may write (anything but read-only authority).
    pub(crate) fn may_write(&self, role: &RoleName) -> bool {
        !matches!(
            self.0.roles.authority(role),
            Some(Authority::ReadOnly) | None
        )
    }

    pub(crate) fn seal(
        &self,
        node: &ContextNode,
        readers: &[RoleName],
    ) -> Result<Vec<u8>, StoreError> {
        let plaintext = slurp_crypto::Zeroizing::new(
            node.encode()
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        );
        let keyring = self.0.custody.keyring();
        let recipients = keyring.recipients_for(readers)?;
        Ok(Envelope::seal_with(&plaintext, &recipients, &self.0.envelope)?.to_bytes()?)
    }

    /// What follows a stored version on the coordinator: the cache, the
    /// audit entry and (`index`: when the store wrote it locally) the index.
    pub(crate) async fn after_put(&self, p: Prepared, created: bool, index_it: bool) -> PutResult {
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

    pub(crate) async fn get(
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
    pub(crate) async fn finish_read(
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

    /// Refuses (and audits) a read of `meta` by a role not among its readers.
    pub(crate) async fn require_reader(
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
    pub(crate) async fn require_tombstone_reader(
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
    pub(crate) fn open(
        &self,
        role: &RoleName,
        record: &StoredRecord,
    ) -> Result<ContextNode, StoreError> {
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

    /// A listing of this node's own store, limited to `scope` if given.
    pub fn list(
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

    /// This node's head of `key`.
    pub(crate) fn local_head(&self, key: &str, with_envelope: bool) -> Result<Head, StoreError> {
        if with_envelope {
            Ok(match self.0.store.latest(key)? {
                Latest::Live { record, ordinal } => Head {
                    key: key.to_string(),
                    latest: Some(SealedVersion {
                        meta: record.meta,
                        envelope: record.envelope.into(),
                    }),
                    versions: ordinal,
                },
                Latest::Deleted { tombstone, ordinal } => Head {
                    key: key.to_string(),
                    latest: Some(SealedVersion {
                        meta: tombstone,
                        envelope: Vec::new().into(),
                    }),
                    versions: ordinal,
                },
                Latest::Absent => Head {
                    key: key.to_string(),
                    latest: None,
                    versions: 0,
                },
            })
        } else {
            Ok(match self.0.store.latest_meta(key)? {
                Some((meta, n)) => Head {
                    key: key.to_string(),
                    latest: Some(SealedVersion {
                        meta,
                        envelope: Vec::new().into(),
                    }),
                    versions: n,
                },
                None => Head {
                    key: key.to_string(),
                    latest: None,
                    versions: 0,
                },
            })
        }
    }

    /// Stores versions in one group commit (with a hint for `hint_for`
    /// when this node holds them for a down replica), then invalidates the
    /// cache and indexes what became the newest version. `plain` is the
    /// context when the caller already has it (the coordinator), so it is
    /// not opened again.
    pub(crate) async fn apply_sealed(
        &self,
        items: Vec<(SealedVersion, Option<ContextNode>)>,
        hint_for: Option<&str>,
    ) -> Vec<VersionOutcome> {
        let start = Instant::now();
        let keyring = self.0.custody.keyring();
        // A version another node sealed is checked before it is stored; a
        // refused one is answered as rejected and never reaches the store.
        let mut refused: Vec<Option<String>> = Vec::with_capacity(items.len());
        let items: Vec<(SealedVersion, Option<ContextNode>)> = items
            .into_iter()
            .map(|(v, plain)| match plain {
                Some(p) => {
                    refused.push(None);
                    (v, Some(p))
                }
                None => match self.check_envelope(&keyring, &v) {
                    Ok(opened) => {
                        refused.push(None);
                        (v, opened)
                    }
                    Err(why) => {
                        tracing::warn!(key = %v.meta.key, version = %v.meta.version, %why, "refused a replicated version");
                        refused.push(Some(why));
                        (v, None)
                    }
                },
            })
            .collect();
        let news: Vec<NewVersion> = items
            .iter()
            .zip(&refused)
            .filter(|(_, r)| r.is_none())
            .map(|((v, _), _)| NewVersion {
                meta: v.meta.clone(),
                envelope: v.envelope.0.clone(),
            })
            .collect();
        let stored = match hint_for {
            Some(target) => self.0.store.put_many_hinted(news, target).await,
            None => self.0.store.put_many(news).await,
        };
        let mut stored = stored.into_iter();
        let results: Vec<Result<PutOutcome, String>> = refused
            .iter()
            .map(|r| match r {
                Some(why) => Err(why.clone()),
                None => stored
                    .next()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .unwrap_or_else(|| Err("the store answered for fewer versions".into())),
            })
            .collect();
        self.0.metrics.record(
            "replica_put",
            "local",
            results.iter().all(|r| r.is_ok()),
            start.elapsed(),
        );
        let mut out = Vec::with_capacity(items.len());
        for ((v, plain), r) in items.into_iter().zip(results) {
            let outcome = match r {
                Ok(PutOutcome::Inserted { latest }) => {
                    self.0
                        .cache
                        .invalidate_latest(&v.meta.key, self.0.roles.roles())
                        .await;
                    if latest {
                        self.index_replicated(&keyring, &v, plain);
                    }
                    WirePut::Stored
                }
                Ok(PutOutcome::AlreadyPresent { .. }) => WirePut::AlreadyPresent,
                // The address was deleted and collected after this version:
                // this replica holds what supersedes it.
                Ok(PutOutcome::Collected) => WirePut::AlreadyPresent,
                Ok(PutOutcome::Expired) => WirePut::Rejected {
                    reason: "expired before it was stored".into(),
                },
                Err(reason) => WirePut::Rejected { reason },
            };
            out.push(VersionOutcome {
                key: v.meta.key,
                version: v.meta.version,
                outcome,
            });
        }
        out
    }

    /// Checks the envelope of a version another node sealed: it must be
    /// sealed to exactly its readers, to keys the cluster's signed key
    /// directory lists (an epoch newer than any this node knows is taken
    /// on trust until its directory arrives), and open with every such
    /// key this node holds. So a member cannot make its writes unreadable
    /// to the others by sealing them to keys of its own, as far as a
    /// replica can see. Returns the opened context, when it was opened,
    /// for the index.
    fn check_envelope(
        &self,
        keyring: &Keyring,
        v: &SealedVersion,
    ) -> Result<Option<ContextNode>, String> {
        if v.meta.tombstone {
            return Ok(None);
        }
        if v.envelope.0.is_empty() {
            // A live version always carries its sealed content; an empty
            // one would be stored as a context no reader can open.
            return Err("a live version with no envelope".into());
        }
        let header = slurp_crypto::peek_header(&v.envelope.0, &self.0.envelope)
            .map_err(|e| format!("the envelope's header does not decode: {e}"))?;
        let sealed: std::collections::BTreeSet<&str> =
            header.sealed_to().iter().map(|s| s.role.as_str()).collect();
        let readers: std::collections::BTreeSet<&str> =
            v.meta.readers.iter().map(|r| r.as_str()).collect();
        if sealed != readers {
            return Err(format!(
                "sealed to roles [{}] but its readers are [{}]",
                sealed.into_iter().collect::<Vec<_>>().join(","),
                readers.into_iter().collect::<Vec<_>>().join(",")
            ));
        }
        let mut holds = false;
        for s in header.sealed_to() {
            match keyring
                .public_keys()
                .find(|k| k.fingerprint() == s.fingerprint)
            {
                Some(k) if k.role() != &s.role || k.epoch() != s.epoch => {
                    return Err(format!(
                        "names key {} as {} epoch {}, but it is {} epoch {}",
                        s.fingerprint,
                        s.role,
                        s.epoch,
                        k.role(),
                        k.epoch()
                    ));
                }
                Some(_) => holds |= keyring.get(&s.fingerprint).is_some(),
                None => {
                    let newest = keyring
                        .current_public(&s.role)
                        .map(|k| k.epoch())
                        .unwrap_or(0);
                    if s.epoch <= newest {
                        return Err(format!(
                            "sealed to key {} of {} epoch {}, which is not in the cluster's key directory",
                            s.fingerprint, s.role, s.epoch
                        ));
                    }
                }
            }
        }
        if !holds {
            return Ok(None);
        }
        open_for_index(&v.envelope.0, &self.0.envelope, keyring)
            .map(Some)
            .map_err(|(_, e)| format!("does not open with this node's key of its roles: {e}"))
    }

    /// Refreshes what this node derives from `key` after versions of it
    /// were removed (a dropped hinted copy, a collected deletion, up to
    /// `removed`): the cache entries go, and the index document too when
    /// no version is left.
    pub(crate) async fn forget_removed(&self, key: &str, removed: &slurp_protocol::VersionId) {
        self.0
            .cache
            .invalidate_latest(key, self.0.roles.roles())
            .await;
        if let (Some(index), Ok(None)) = (&self.0.index, self.0.store.latest_meta(key))
            && let Err(e) = index.delete(key, removed)
        {
            tracing::warn!(%key, error = %e, "dropping the index entry of a removed address failed");
        }
    }

    fn index_replicated(&self, keyring: &Keyring, v: &SealedVersion, plain: Option<ContextNode>) {
        let Some(index) = &self.0.index else { return };
        if !self.0.options.indexing {
            return;
        }
        let key = &v.meta.key;
        let r = if v.meta.tombstone {
            index.delete(key, &v.meta.version).map(|_| ())
        } else {
            let context = match plain {
                Some(c) => Ok(c),
                None => open_for_index(&v.envelope.0, &self.0.envelope, keyring),
            };
            match context {
                Ok(context) => index
                    .upsert(&IndexEntry {
                        key: key.clone(),
                        version: v.meta.version.clone(),
                        readers: v.meta.readers.clone(),
                        context,
                    })
                    .map(|_| ()),
                // Sealed to roles this node holds no key for (normal for a
                // replica) or corrupt: counted, and the older version's
                // document goes, as it is no longer the newest.
                Err((reason, error)) => {
                    log_unopenable(key, reason, &error);
                    index
                        .mark_unopenable(&UnopenableEntry {
                            key: key.clone(),
                            version: v.meta.version.clone(),
                            readers: v.meta.readers.clone(),
                            reason,
                        })
                        .map(|_| ())
                }
            }
        };
        if let Err(e) = r {
            tracing::warn!(%key, error = %e, "indexing a replicated version failed");
        }
    }
}

/// Opens a sealed context for the index with whichever key this node
/// holds; when it cannot, why: no key held (sealed to roles it does not
/// hold) or corrupt.
pub(crate) fn open_for_index(
    envelope: &[u8],
    config: &EnvelopeConfig,
    keyring: &slurp_crypto::Keyring,
) -> Result<ContextNode, (UnopenableReason, String)> {
    let plain = Envelope::from_bytes(envelope, config)
        .and_then(|env| env.open(keyring))
        .map_err(|e| {
            let reason = match e {
                slurp_crypto::EnvelopeError::NoKey { .. } => UnopenableReason::NoKey,
                _ => UnopenableReason::Corrupt,
            };
            (reason, e.to_string())
        })?;
    ContextNode::decode(&plain).map_err(|e| (UnopenableReason::Corrupt, e.to_string()))
}

/// Logs a record the index cannot open: at debug when no key is held
/// (normal on a replica), as a warning when it is corrupt.
pub(crate) fn log_unopenable(key: &str, reason: UnopenableReason, error: &str) {
    match reason {
        UnopenableReason::NoKey => {
            tracing::debug!(%key, error, "held but not openable here (no key held); not indexed")
        }
        UnopenableReason::Corrupt => {
            tracing::warn!(%key, error, "a stored record does not open (corrupt); not indexed")
        }
    }
}
