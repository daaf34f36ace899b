//! Audit heads held by the other members.
//!
//! A node's audit log is hash-chained and its head is anchored in a file
//! next to it, which finds an edited or reordered entry, but not the end
//! of the log cut off together with its head file. So every node
//! periodically signs its head (the last entry's seq and hash) with its
//! node key and hands it to every other member, which keeps the newest it
//! got from each node (`cluster/audit-heads.json`). A head older than the
//! one held (the log went back) is refused and audited where it arrives.
//! `slurp audit verify` asks the members for the heads they hold of this
//! node and checks the log against each: an entry that was dropped or
//! changed since a member saw it is reported with that member's name.

use std::collections::BTreeMap;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use slurp_crypto::{AuditHead, AuditRecord};
use slurp_protocol::membership::PURPOSE_AUDIT_HEAD;
use slurp_protocol::messages::{ClusterRequest, ClusterResponse, ErrorCode, RemoteError};
use slurp_protocol::{AuditAnchor, Bytes, Signed};

use super::authorise::verify_peer_signed;
use super::membership::now_ms;
use super::{Cluster, ClusterError, other};

/// `audit-heads.json`: the newest signed head of each peer.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct HeldHeads {
    heads: BTreeMap<String, HeldHead>,
}

#[derive(Clone, Serialize, Deserialize)]
struct HeldHead {
    seq: u64,
    statement: String,
    signature: String,
}

impl HeldHead {
    fn signed(&self) -> Option<Signed> {
        Some(Signed {
            statement: Bytes(hex::decode(&self.statement).ok()?),
            signature: Bytes(hex::decode(&self.signature).ok()?),
        })
    }
}

/// What one member's copy of this node's head says about the log: the
/// API's body.
pub use slurp_protocol::api::AnchorCheck;

impl Cluster {
    fn heads_path(&self) -> std::path::PathBuf {
        self.0.data_dir.join("cluster").join("audit-heads.json")
    }

    fn load_heads(&self) -> HeldHeads {
        std::fs::read(self.heads_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Signs this node's audit head and hands it to every other layout
    /// member; returns how many took it.
    pub async fn anchor_audit(&self, head: AuditHead) -> Result<usize, ClusterError> {
        let Some(layout) = self.layout() else {
            return Ok(0);
        };
        let signed = self
            .0
            .authoriser
            .sign_statement(
                PURPOSE_AUDIT_HEAD,
                &AuditAnchor {
                    node: self.0.me_id.clone(),
                    seq: head.seq,
                    hash: head.hash.to_string(),
                    at_ms: now_ms(),
                },
            )
            .map_err(ClusterError::Io)?;
        let peers = self.others_in(&layout);
        let sends = peers.iter().map(|p| {
            self.cluster_request(
                p,
                ClusterRequest::PutAuditHead {
                    head: signed.clone(),
                },
            )
        });
        Ok(futures::future::join_all(sends)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(ClusterResponse::AuditHeadTaken)))
            .count())
    }

    /// `PutAuditHead` from a layout member: keeps its newest head.
    pub(crate) async fn serve_put_audit_head(
        &self,
        peer: &PeerId,
        signed: Signed,
    ) -> ClusterResponse {
        let from = peer.to_base58();
        let refuse = |message: String| {
            ClusterResponse::Error(RemoteError {
                code: ErrorCode::Forbidden,
                message,
            })
        };
        if !self.accepts_from(peer) {
            return refuse("audit heads are kept for layout members".into());
        }
        let anchor: AuditAnchor = match verify_peer_signed(peer, PURPOSE_AUDIT_HEAD, &signed) {
            Ok(a) => a,
            Err(e) => return refuse(e),
        };
        if anchor.node != from {
            return refuse(format!("the head is of {}, not of the sender", anchor.node));
        }
        let _guard = self.0.heads_lock.lock().await;
        let mut held = self.load_heads();
        if let Some(h) = held.heads.get(&from)
            && anchor.seq < h.seq
        {
            let why = format!(
                "the audit log of {from} went back from seq {} to {}: entries were dropped",
                h.seq, anchor.seq
            );
            tracing::warn!(peer = %from, %why, "a member's audit log lost entries");
            self.audit(AuditRecord::deny(
                from.as_str(),
                other("audit_anchor"),
                from.as_str(),
                why.clone(),
            ))
            .await;
            return refuse(why);
        }
        held.heads.insert(
            from,
            HeldHead {
                seq: anchor.seq,
                statement: hex::encode(&signed.statement.0),
                signature: hex::encode(&signed.signature.0),
            },
        );
        let path = self.heads_path();
        match serde_json::to_vec_pretty(&held)
            .map_err(|e| e.to_string())
            .and_then(|b| crate::tokens::write_private_file(&path, &b).map_err(|e| e.to_string()))
        {
            Ok(()) => ClusterResponse::AuditHeadTaken,
            Err(e) => ClusterResponse::Error(RemoteError {
                code: ErrorCode::Internal,
                message: e,
            }),
        }
    }

    /// `GetAuditHead`: the newest head of `node` this node holds.
    pub(crate) fn serve_get_audit_head(&self, node: &str) -> ClusterResponse {
        ClusterResponse::AuditHead {
            head: self.load_heads().heads.get(node).and_then(|h| h.signed()),
        }
    }

    /// The heads of this node's audit log the other members hold, checked
    /// against this node's own key: each becomes an anchor to verify the
    /// log against.
    pub async fn held_heads_of_me(&self) -> Vec<(PeerId, Result<AuditHead, String>)> {
        let Some(layout) = self.layout() else {
            return Vec::new();
        };
        let me = self.0.me;
        let peers = self.others_in(&layout);
        let asks = peers.iter().map(|p| async move {
            let r = self
                .cluster_request(
                    p,
                    ClusterRequest::GetAuditHead {
                        node: self.0.me_id.clone(),
                    },
                )
                .await;
            (*p, r)
        });
        let mut out = Vec::new();
        for (peer, r) in futures::future::join_all(asks).await {
            let head = match r {
                Ok(ClusterResponse::AuditHead { head: None }) => continue,
                Ok(ClusterResponse::AuditHead { head: Some(s) }) => {
                    verify_peer_signed::<AuditAnchor>(&me, PURPOSE_AUDIT_HEAD, &s).and_then(|a| {
                        if a.node != self.0.me_id {
                            return Err(format!("the member holds a head of {}", a.node));
                        }
                        Ok(AuditHead {
                            seq: a.seq,
                            hash: a.hash.parse()?,
                        })
                    })
                }
                Ok(_) => Err("unexpected answer".into()),
                Err(e) => Err(e.to_string()),
            };
            out.push((peer, head));
        }
        out
    }
}
