//! The replica side of replication: what a node does with versions other
//! nodes send it, and how it answers their reads.
//!
//! A replica stores sealed versions as they come (storing is idempotent:
//! versions are append-only and merge by union), then refreshes what it
//! derives from them: the cache entries of the address are invalidated and
//! the newest live version is indexed, opened with whichever of the
//! record's reader roles this node holds a key for. A version no held key
//! opens (or a corrupt one) is stored all the same and counted by the
//! index as held but not openable, never an error. Nothing here needs or
//! produces plaintext beyond that in-memory index entry.

use std::time::Instant;

use slurp_crypto::Keyring;
use slurp_index::{IndexEntry, UnopenableEntry};
use slurp_protocol::ContextNode;
use slurp_protocol::messages::{
    ErrorCode, Head, KeyScope, KeyVersions, PutOutcome as WirePut, RemoteError, ReplicateRequest,
    ReplicateResponse, SealedVersion, VersionOutcome,
};
use slurp_storage::{Latest, NewVersion, PutOutcome};

use super::{anti_entropy, gc};
use crate::error::StoreError;
use crate::store::ContextStore;

fn refuse(code: ErrorCode, message: impl Into<String>) -> ReplicateResponse {
    ReplicateResponse::Error(RemoteError {
        code,
        message: message.into(),
    })
}

impl ContextStore {
    /// Answers a replication request from `peer` (a member: the network
    /// layer admits no one else).
    pub async fn serve_replicate(&self, peer: &str, req: ReplicateRequest) -> ReplicateResponse {
        let max = self.0.options.batch_size.max(1);
        match req {
            ReplicateRequest::PutVersions {
                versions, hint_for, ..
            } => {
                if versions.len() > max {
                    return refuse(
                        ErrorCode::BadRequest,
                        format!("{} versions, over the limit of {max}", versions.len()),
                    );
                }
                let items = versions.into_iter().map(|v| (v, None)).collect();
                ReplicateResponse::Stored {
                    outcomes: self.store_replicated(items, hint_for.as_deref()).await,
                }
            }
            ReplicateRequest::GetVersions { key, versions } => {
                let r = (|| -> Result<Vec<SealedVersion>, StoreError> {
                    let metas = self.0.store.history(&key)?;
                    let mut out = Vec::new();
                    for m in metas {
                        if versions.as_ref().is_some_and(|w| !w.contains(&m.version)) {
                            continue;
                        }
                        if let Some(rec) = self.0.store.get(&key, &m.version)? {
                            out.push(SealedVersion {
                                meta: rec.meta,
                                envelope: rec.envelope.into(),
                            });
                        }
                        if out.len() >= max {
                            break;
                        }
                    }
                    Ok(out)
                })();
                match r {
                    Ok(versions) => ReplicateResponse::Versions { key, versions },
                    Err(e) => refuse(ErrorCode::Internal, e.to_string()),
                }
            }
            ReplicateRequest::VersionIds { scope } => match scope {
                KeyScope::Keys(keys) => {
                    if keys.len() > max {
                        return refuse(ErrorCode::BadRequest, "too many keys");
                    }
                    let mut entries = Vec::with_capacity(keys.len());
                    for key in keys {
                        match self.0.store.version_ids(&key) {
                            Ok(versions) => entries.push(KeyVersions { key, versions }),
                            Err(e) => return refuse(ErrorCode::Internal, e.to_string()),
                        }
                    }
                    ReplicateResponse::VersionIds {
                        entries,
                        next: None,
                    }
                }
                KeyScope::Slots {
                    first,
                    last,
                    after,
                    limit,
                } => {
                    let limit = (limit as usize).clamp(1, max);
                    match anti_entropy::serve_slot_ids(&self.0.store, first, last, after, limit) {
                        Ok(r) => r,
                        Err(why) => refuse(ErrorCode::BadRequest, why),
                    }
                }
            },
            ReplicateRequest::Digests {
                layout_version,
                ranges,
            } => {
                if ranges.len() > max {
                    return refuse(ErrorCode::BadRequest, "too many ranges");
                }
                let Some(cluster) = self.cluster() else {
                    return refuse(ErrorCode::NotReplica, "this node runs alone");
                };
                anti_entropy::serve_digests(&self.0.store, cluster, peer, layout_version, &ranges)
            }
            ReplicateRequest::Fetch { entries } => {
                if entries.len() > max {
                    return refuse(ErrorCode::BadRequest, "too many versions asked");
                }
                let budget = self.0.replication.message_bytes;
                match anti_entropy::serve_fetch(&self.0.store, &entries, max, budget) {
                    Ok(r) => r,
                    Err(why) => refuse(ErrorCode::Internal, why),
                }
            }
            ReplicateRequest::Collect { entries, apply } => {
                if entries.len() > max {
                    return refuse(ErrorCode::BadRequest, "too many tombstones");
                }
                match gc::serve_collect(self, &entries, apply).await {
                    Ok(states) => ReplicateResponse::Collected { states },
                    Err(e) => refuse(ErrorCode::Internal, e.to_string()),
                }
            }
            ReplicateRequest::Heads {
                keys,
                with_envelope,
            } => {
                if keys.len() > max {
                    return refuse(ErrorCode::BadRequest, "too many keys");
                }
                let mut entries = Vec::with_capacity(keys.len());
                for key in keys {
                    match self.local_head(&key, with_envelope) {
                        Ok(h) => entries.push(h),
                        Err(e) => return refuse(ErrorCode::Internal, e.to_string()),
                    }
                }
                ReplicateResponse::Heads { entries }
            }
            ReplicateRequest::History { key } => match self.0.store.history(&key) {
                Ok(metas) => ReplicateResponse::History { key, metas },
                Err(e) => refuse(ErrorCode::Internal, e.to_string()),
            },
        }
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
    pub(crate) async fn store_replicated(
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
        crate::node::open_for_index(&v.envelope.0, &self.0.envelope, keyring)
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
                None => crate::node::open_for_index(&v.envelope.0, &self.0.envelope, keyring),
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
                    crate::node::log_unopenable(key, reason, &error);
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
