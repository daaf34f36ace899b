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

use libp2p::PeerId;
use slurp_protocol::messages::{
    ErrorCode, KeyScope, KeyVersions, RemoteError, ReplicateRequest, ReplicateResponse,
    SealedVersion,
};

use super::Replicator;
use super::{anti_entropy, gc};
use crate::error::StoreError;

fn refuse(code: ErrorCode, message: impl Into<String>) -> ReplicateResponse {
    ReplicateResponse::Error(RemoteError {
        code,
        message: message.into(),
    })
}

impl Replicator {
    /// Answers a replication request from `peer` (a member: the network
    /// layer admits no one else).
    pub async fn serve_replicate(&self, peer: &PeerId, req: ReplicateRequest) -> ReplicateResponse {
        let max = self.0.engine.options().batch_size.max(1);
        match req {
            ReplicateRequest::PutVersions {
                versions,
                hint_for,
                layout_version,
                ..
            } => {
                if versions.len() > max {
                    return refuse(
                        ErrorCode::BadRequest,
                        format!("{} versions, over the limit of {max}", versions.len()),
                    );
                }
                // The transition fence: a sender that does not know this
                // node's layout would miss the new replica sets.
                let _admitted = match self.0.cluster.enter_write(layout_version) {
                    Ok(g) => g,
                    Err(current) => {
                        return refuse(
                            ErrorCode::LayoutMismatch,
                            format!(
                                "sent under layout version {}; this node holds version {current}: send again under it",
                                layout_version.unwrap_or(0)
                            ),
                        );
                    }
                };
                let items = versions.into_iter().map(|v| (v, None)).collect();
                ReplicateResponse::Stored {
                    outcomes: self.0.engine.apply_sealed(items, hint_for.as_deref()).await,
                }
            }
            ReplicateRequest::GetVersions { key, versions } => {
                let r = (|| -> Result<Vec<SealedVersion>, StoreError> {
                    let metas = self.0.engine.local().history(&key)?;
                    let mut out = Vec::new();
                    for m in metas {
                        if versions.as_ref().is_some_and(|w| !w.contains(&m.version)) {
                            continue;
                        }
                        if let Some(rec) = self.0.engine.local().get(&key, &m.version)? {
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
                        match self.0.engine.local().version_ids(&key) {
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
                    settled_under,
                } => {
                    if let Some(v) = settled_under {
                        let have = self.0.cluster.layout_version();
                        if have < v {
                            self.0.cluster.want_layout_from(peer);
                            return refuse(
                                ErrorCode::LayoutMismatch,
                                format!(
                                    "a pull for layout version {v}; this node holds version {have} yet"
                                ),
                            );
                        }
                        self.0.cluster.writes_before_done(v).await;
                    }
                    let limit = (limit as usize).clamp(1, max);
                    match anti_entropy::serve_slot_ids(
                        self.0.engine.local(),
                        first,
                        last,
                        after,
                        limit,
                    ) {
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
                anti_entropy::serve_digests(
                    self.0.engine.local(),
                    &self.0.cluster,
                    peer,
                    layout_version,
                    &ranges,
                )
            }
            ReplicateRequest::Fetch { entries } => {
                if entries.len() > max {
                    return refuse(ErrorCode::BadRequest, "too many versions asked");
                }
                let budget = self.0.config.message_bytes;
                let started = std::time::Instant::now();
                let r =
                    match anti_entropy::serve_fetch(self.0.engine.local(), &entries, max, budget) {
                        Ok(r) => r,
                        Err(why) => refuse(ErrorCode::Internal, why),
                    };
                // Fetches feed background transfers (anti-entropy, a
                // layout transition's pulls): while this node serves API
                // requests, the answer waits three times as long as it
                // took, so the puller slows down to the busiest source's
                // pace and the clients here come first.
                if self.0.engine.metrics().api_in_flight.get() > 0 {
                    let wait = (started.elapsed() * 3).min(std::time::Duration::from_secs(1));
                    tokio::time::sleep(wait).await;
                }
                r
            }
            ReplicateRequest::Collect { entries, apply } => {
                if entries.len() > max {
                    return refuse(ErrorCode::BadRequest, "too many tombstones");
                }
                match gc::serve_collect(&self.0.engine, &entries, apply).await {
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
                    match self.0.engine.local_head(&key, with_envelope) {
                        Ok(h) => entries.push(h),
                        Err(e) => return refuse(ErrorCode::Internal, e.to_string()),
                    }
                }
                ReplicateResponse::Heads { entries }
            }
            ReplicateRequest::History { key } => match self.0.engine.local().history(&key) {
                Ok(metas) => ReplicateResponse::History { key, metas },
                Err(e) => refuse(ErrorCode::Internal, e.to_string()),
            },
        }
    }
}
