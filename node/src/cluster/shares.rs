//! The cluster key in custody of the members: Shamir shares, not a file.
//!
//! `cluster init` makes the cluster key on one node. As soon as the layout
//! has `cluster.key_shares` members up, that node splits the key (t of n,
//! `cluster.key_threshold` of `cluster.key_shares`, 3 of 5 by default;
//! Shamir over GF(256) via `blahaj`, each share carrying a check value of
//! the key, see `slurp_crypto::shamir`), hands one share to each of the
//! first n members by peer id, and deletes the whole key from its disk.
//! A share travels sealed to a key its holder made for that one share,
//! with an assignment the cluster key signed (set, index, holder), so a
//! holder takes only a share the real key dealt to it; the holder keeps it
//! sealed at rest like a role key.
//!
//! An admin operation (publishing a layout, certifying a node, redeeming
//! an invite) rebuilds the key in memory: the node asks the members for
//! their shares with a caller authorisation for role admin (so only a node
//! certified for admin gets any) and a reason; each holder audits the
//! release. t shares rebuild the key, which is checked against the
//! cluster's public key and dropped (zeroed) after the one operation;
//! fewer than t is a clear error naming who did not answer.

use libp2p::PeerId;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use slurp_crypto::{AuditRecord, ClusterKey, KeyShare, x25519};
use slurp_protocol::messages::{ClusterRequest, ClusterResponse, ErrorCode, RemoteError};
use slurp_protocol::{Bytes, ClusterId, Framed, RoleName, Signed};

use super::membership::MAX_STATEMENT;
use super::{CLUSTER_KEY_SECRET, Cluster, ClusterError, other};

/// The name of a node's key share among the keystore's sealed secrets.
const SHARE_SECRET: &str = "cluster-share";
/// What the cluster key's signature over a [`ShareAssignment`] is for.
pub const PURPOSE_SHARE: &str = "slurp cluster key share v1";
/// Framed shares are small; anything larger is refused.
const MAX_SHARE: usize = 4096;
/// How long a recipient made for `PrepareShare` waits for its share.
const PREPARED_FOR: Duration = Duration::from_secs(60);

/// The cluster key's statement that share `index` of set `set` belongs to
/// `holder`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareAssignment {
    pub cluster: ClusterId,
    pub set: Bytes,
    pub index: u8,
    pub threshold: u8,
    pub total: u8,
    pub holder: String,
}

impl Framed for ShareAssignment {
    const KIND: u16 = slurp_protocol::wire::kinds::SHARE_ASSIGNMENT;
    const NAME: &'static str = "share-assignment";
    const VERSION: u16 = 1;
}

/// What `PutShare` carries (sealed): the share and its signed assignment.
#[derive(Serialize, Deserialize)]
struct DealtShare {
    share: Bytes,
    assignment: Signed,
}

impl Framed for DealtShare {
    const KIND: u16 = slurp_protocol::wire::kinds::DEALT_SHARE;
    const NAME: &'static str = "dealt-share";
    const VERSION: u16 = 1;
}

/// How the cluster key is kept, as this node sees it: the API's body.
pub use slurp_protocol::api::{KeyCustody, ShareView};

impl Cluster {
    /// The whole cluster key, when this node holds it.
    pub fn whole_key(&self) -> Result<Option<ClusterKey>, ClusterError> {
        let Some(seed) = self
            .0
            .custody
            .keystore()
            .load_secret(CLUSTER_KEY_SECRET)
            .map_err(|e| ClusterError::Io(e.to_string()))?
        else {
            return Ok(None);
        };
        let seed: [u8; 32] = seed[..]
            .try_into()
            .map_err(|_| ClusterError::Io("the sealed cluster key is not 32 bytes".into()))?;
        let key = ClusterKey::from_seed(&seed);
        match self.identity() {
            Some(id) if id.public != key.public() => Err(ClusterError::Io(format!(
                "the sealed cluster key is of cluster {}, this node belongs to {}",
                key.public().id(),
                id.id()
            ))),
            _ => Ok(Some(key)),
        }
    }

    /// This node's share of the cluster key, if it holds one.
    fn local_share(&self) -> Option<KeyShare> {
        let bytes = self
            .0
            .custody
            .keystore()
            .load_secret(SHARE_SECRET)
            .map_err(|e| tracing::warn!(error = %e, "cannot read this node's key share"))
            .ok()??;
        KeyShare::from_bytes(&bytes)
            .map_err(|e| tracing::warn!(error = %e, "this node's key share does not decode"))
            .ok()
    }

    pub fn key_custody(&self) -> KeyCustody {
        KeyCustody {
            whole: self.whole_key().ok().flatten().is_some(),
            share: self.local_share().map(|s| ShareView {
                set: hex::encode(s.set_id()),
                index: s.index(),
                threshold: s.threshold(),
                total: s.total(),
            }),
        }
    }

    /// The cluster key for one admin operation (`reason` goes in the
    /// audit logs of the share holders): the whole key if this node holds
    /// it, or rebuilt in memory from the members' shares.
    pub async fn obtain_key(&self, reason: &str) -> Result<ClusterKey, ClusterError> {
        let identity = self.identity().ok_or(ClusterError::NotInitialized)?;
        if let Some(k) = self.whole_key()? {
            return Ok(k);
        }
        let request_key = x25519::Identity::generate();
        let recipient = request_key.to_public().to_string();
        let mut shares: Vec<KeyShare> = self.local_share().into_iter().collect();
        let mut peers: Vec<PeerId> = self
            .layout()
            .map(|l| super::layout_peers(&l))
            .unwrap_or_default();
        peers.retain(|p| *p != self.0.me);
        let admin = RoleName::new("admin").map_err(|e| ClusterError::Io(e.to_string()))?;
        let certificate = &identity.certificate;
        let asks = peers.iter().map(|peer| {
            let (recipient, admin) = (recipient.clone(), admin.clone());
            async move {
                let mut req = ClusterRequest::GetShare {
                    recipient,
                    reason: reason.chars().take(256).collect(),
                    authorisation: None,
                };
                let digest = super::authorise::cluster_digest(&req);
                if let ClusterRequest::GetShare { authorisation, .. } = &mut req {
                    *authorisation = self
                        .0
                        .authoriser
                        .sign(&peer.to_base58(), &admin, digest, certificate.clone())
                        .ok();
                }
                (*peer, self.cluster_request(peer, req).await)
            }
        });
        let mut failed = Vec::new();
        for (peer, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(ClusterResponse::Share { sealed }) => {
                    match slurp_crypto::open_sealed(&sealed.0, &request_key, MAX_SHARE)
                        .and_then(|b| KeyShare::from_bytes(&b).map_err(|e| e.to_string()))
                    {
                        Ok(s) => shares.push(s),
                        Err(e) => failed.push(format!("{}: {e}", super::short_peer(&peer))),
                    }
                }
                Ok(_) => failed.push(format!("{}: unexpected answer", super::short_peer(&peer))),
                Err(ClusterError::Remote(ErrorCode::Unavailable, _)) => {}
                Err(e) => failed.push(format!("{}: {e}", super::short_peer(&peer))),
            }
        }
        // Shares of the newest split: the set most shares agree on.
        let mut sets: std::collections::HashMap<[u8; 16], Vec<KeyShare>> = Default::default();
        for s in shares {
            sets.entry(s.set_id()).or_default().push(s);
        }
        let best = sets
            .into_values()
            .max_by_key(|v| v.len())
            .unwrap_or_default();
        let need = best.first().map(|s| s.threshold()).unwrap_or(0);
        let key = slurp_crypto::recover(&best)
            .map_err(|e| e.to_string())
            .and_then(|seed| {
                let seed: [u8; 32] = seed[..]
                    .try_into()
                    .map_err(|_| "the rebuilt key is not 32 bytes".to_string())?;
                let key = ClusterKey::from_seed(&seed);
                if key.public() != identity.public {
                    return Err("the shares rebuild another key than the cluster's".into());
                }
                Ok(key)
            });
        match key {
            Ok(k) => {
                self.audit(
                    AuditRecord::allow(
                        "node",
                        other("cluster_key_rebuild"),
                        identity.id().to_hex(),
                    )
                    .with_reason(format!("from {} shares: {reason}", best.len())),
                )
                .await;
                Ok(k)
            }
            Err(e) => {
                let why = if best.is_empty() {
                    "no member holds a share of the cluster key: it is whole on the node that ran `cluster init` until the layout has cluster.key_shares members; run the command there".to_string()
                } else if best.len() < need as usize {
                    format!(
                        "the cluster key needs {need} shares, {} were given{}",
                        best.len(),
                        if failed.is_empty() {
                            String::new()
                        } else {
                            format!(" (no share from {})", failed.join("; "))
                        }
                    )
                } else {
                    e
                };
                self.audit(AuditRecord::deny(
                    "node",
                    other("cluster_key_rebuild"),
                    identity.id().to_hex(),
                    format!("{why}: {reason}"),
                ))
                .await;
                Err(ClusterError::KeyUnavailable(why))
            }
        }
    }

    /// Splits the whole cluster key among the first `cluster.key_shares`
    /// layout members once they are all up, then deletes the whole key.
    /// Returns whether it split.
    pub(crate) async fn maybe_split(&self) -> bool {
        let (n, t) = (self.0.config.key_shares, self.0.config.key_threshold);
        if n == 0 {
            return false;
        }
        let Some(identity) = self.identity() else {
            return false;
        };
        let Ok(Some(key)) = self.whole_key() else {
            return false;
        };
        let Some(layout) = self.layout() else {
            return false;
        };
        let mut holders: Vec<String> = layout.members().iter().map(|m| m.id.clone()).collect();
        if holders.len() < n as usize {
            return false;
        }
        holders.sort();
        holders.truncate(n as usize);
        let holders: Vec<PeerId> = holders.iter().filter_map(|h| h.parse().ok()).collect();
        if holders.len() < n as usize {
            return false;
        }
        if holders
            .iter()
            .any(|h| *h != self.0.me && !self.0.peers.is_up(h))
        {
            return false;
        }
        let shares = match slurp_crypto::split(&key.seed()[..], t, n) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot split the cluster key");
                return false;
            }
        };
        for (holder, share) in holders.iter().zip(&shares) {
            if let Err(e) = self.deal(&key, identity.id(), holder, share).await {
                tracing::warn!(%holder, error = %e, "cannot hand a share of the cluster key yet");
                return false;
            }
        }
        if let Err(e) = self.0.custody.keystore().remove_secret(CLUSTER_KEY_SECRET) {
            tracing::error!(error = %e, "the cluster key was split but its file could not be deleted");
            return false;
        }
        let names: Vec<String> = holders.iter().map(super::short_peer).collect();
        self.audit(
            AuditRecord::allow("node", other("cluster_key_split"), identity.id().to_hex())
                .with_reason(format!("{t} of {n} shares to [{}]", names.join(","))),
        )
        .await;
        tracing::info!(
            threshold = t,
            shares = n,
            "split the cluster key among the members; the whole key is deleted"
        );
        true
    }

    /// Hands `share` to `holder` (this node keeps its own directly).
    async fn deal(
        &self,
        key: &ClusterKey,
        cluster: ClusterId,
        holder: &PeerId,
        share: &KeyShare,
    ) -> Result<(), ClusterError> {
        let assignment = key
            .sign(
                PURPOSE_SHARE,
                &ShareAssignment {
                    cluster,
                    set: Bytes(share.set_id().to_vec()),
                    index: share.index(),
                    threshold: share.threshold(),
                    total: share.total(),
                    holder: holder.to_string(),
                },
            )
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        let bytes = share
            .to_bytes()
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        if *holder == self.0.me {
            return self.keep_share(&bytes);
        }
        let recipient = match self
            .cluster_request(holder, ClusterRequest::PrepareShare)
            .await?
        {
            ClusterResponse::ShareRecipient { recipient } => recipient
                .parse::<x25519::Recipient>()
                .map_err(|_| ClusterError::Refused("a bad share recipient".into()))?,
            _ => return Err(ClusterError::Unexpected),
        };
        let dealt = DealtShare {
            share: Bytes(bytes.to_vec()),
            assignment,
        }
        .encode()
        .map_err(|e| ClusterError::Io(e.to_string()))?;
        let sealed = slurp_crypto::seal_to(&dealt, &recipient)
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        match self
            .cluster_request(
                holder,
                ClusterRequest::PutShare {
                    sealed: Bytes(sealed),
                },
            )
            .await?
        {
            ClusterResponse::ShareStored => Ok(()),
            _ => Err(ClusterError::Unexpected),
        }
    }

    fn keep_share(&self, bytes: &[u8]) -> Result<(), ClusterError> {
        self.0
            .custody
            .keystore()
            .store_secret(SHARE_SECRET, bytes)
            .map(|_| ())
            .map_err(|e| ClusterError::Io(e.to_string()))
    }

    /// `PrepareShare`: a recipient made for the one share to come.
    pub(crate) fn serve_prepare_share(&self) -> ClusterResponse {
        let id = x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        *self
            .0
            .share_request
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((id, Instant::now()));
        ClusterResponse::ShareRecipient { recipient }
    }

    /// `PutShare`: keeps a share the cluster key assigned to this node.
    pub(crate) async fn serve_put_share(&self, peer: &str, sealed: &[u8]) -> ClusterResponse {
        let refuse = |message: String| {
            ClusterResponse::Error(RemoteError {
                code: ErrorCode::Forbidden,
                message,
            })
        };
        let Some(identity) = self.identity() else {
            return refuse("this node is in no cluster".into());
        };
        let prepared = self
            .0
            .share_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|(_, at)| at.elapsed() < PREPARED_FOR);
        let Some((request_key, _)) = prepared else {
            return refuse("no share was prepared for (PrepareShare first)".into());
        };
        let checked = slurp_crypto::open_sealed(sealed, &request_key, MAX_SHARE + MAX_STATEMENT)
            .and_then(|b| {
                DealtShare::decode_limited(&b, MAX_SHARE + MAX_STATEMENT).map_err(|e| e.to_string())
            })
            .and_then(|d| {
                let a: ShareAssignment = identity
                    .public
                    .verify(PURPOSE_SHARE, &d.assignment, MAX_STATEMENT)
                    .map_err(|e| format!("the assignment: {e}"))?;
                let share = KeyShare::from_bytes(&d.share.0).map_err(|e| e.to_string())?;
                if a.holder != self.0.me_id
                    || a.cluster != identity.id()
                    || a.set.0 != share.set_id()
                    || a.index != share.index()
                {
                    return Err(
                        "the share is not the one the cluster key assigned to this node".into(),
                    );
                }
                Ok(share)
            });
        match checked.and_then(|s| {
            let bytes = s.to_bytes().map_err(|e| e.to_string())?;
            self.keep_share(&bytes).map_err(|e| e.to_string())?;
            Ok(s)
        }) {
            Ok(s) => {
                self.audit(
                    AuditRecord::allow(peer, other("share_store"), hex::encode(s.set_id()))
                        .with_reason(format!(
                            "share {} of {} (threshold {})",
                            s.index(),
                            s.total(),
                            s.threshold()
                        )),
                )
                .await;
                ClusterResponse::ShareStored
            }
            Err(why) => {
                self.audit(AuditRecord::deny(
                    peer,
                    other("share_store"),
                    peer,
                    why.clone(),
                ))
                .await;
                refuse(why)
            }
        }
    }

    /// `GetShare`: releases this node's share to a member certified for
    /// admin, for an audited reason.
    pub(crate) async fn serve_get_share(
        &self,
        peer_id: &libp2p::PeerId,
        req: &ClusterRequest,
    ) -> ClusterResponse {
        let ClusterRequest::GetShare {
            recipient,
            reason,
            authorisation,
        } = req
        else {
            return ClusterResponse::Error(RemoteError {
                code: ErrorCode::Internal,
                message: "not a share request".into(),
            });
        };
        let peer = peer_id.to_base58();
        let target: String = reason.chars().take(256).collect();
        let admin = match RoleName::new("admin") {
            Ok(r) => r,
            Err(e) => {
                return ClusterResponse::Error(RemoteError {
                    code: ErrorCode::Internal,
                    message: e.to_string(),
                });
            }
        };
        if let Err(refusal) = self.check_authorisation(
            peer_id,
            &admin,
            super::authorise::cluster_digest(req),
            authorisation.as_ref(),
        ) {
            self.audit(AuditRecord::deny(
                peer.as_str(),
                other("share_release"),
                target,
                format!("{}: {refusal}", refusal.code()),
            ))
            .await;
            return ClusterResponse::Error(RemoteError {
                code: ErrorCode::Forbidden,
                message: format!("releasing a key share needs an admin authorisation: {refusal}"),
            });
        }
        let Some(share) = self.local_share() else {
            return ClusterResponse::Error(RemoteError {
                code: ErrorCode::Unavailable,
                message: "this node holds no share of the cluster key".into(),
            });
        };
        let sealed = recipient
            .parse::<x25519::Recipient>()
            .map_err(|_| "recipient is not an age X25519 recipient".to_string())
            .and_then(|r| {
                let bytes = share.to_bytes().map_err(|e| e.to_string())?;
                slurp_crypto::seal_to(&bytes, &r).map_err(|e| e.to_string())
            });
        match sealed {
            Ok(sealed) => {
                self.audit(
                    AuditRecord::allow(peer.as_str(), other("share_release"), target)
                        .with_role(admin)
                        .with_reason(format!(
                            "share {} of set {}",
                            share.index(),
                            hex::encode(share.set_id())
                        )),
                )
                .await;
                ClusterResponse::Share {
                    sealed: Bytes(sealed),
                }
            }
            Err(e) => ClusterResponse::Error(RemoteError {
                code: ErrorCode::BadRequest,
                message: e,
            }),
        }
    }
}
