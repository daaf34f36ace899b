//! The door of the swarm: who may ask this node what.
//!
//! Every request a peer sends arrives here before any part of the node
//! sees it. A peer that is neither a layout member nor certified may only
//! redeem an invite (cluster requests); token lookups and the replicated
//! token list are for members; a member acting for a caller needs a
//! statement the cluster key signed for that role; a certified node
//! outside the layout may forward an API call only with a proof that it
//! holds the caller's role key. What passes goes to the replicator, the
//! search shard or the API's forwarded-call handler; every refusal says
//! why, and refused authorisations are audited.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::keys::Custody;
use crate::net::{NetClient, NetEvent, Request, Response};
use crate::store::ContextStore;
use crate::tokens::TokenStore;
use crate::workers::Workers;

/// What the door needs to answer peers. Cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    pub store: ContextStore,
    pub cluster: Cluster,
    pub custody: Arc<Custody>,
    pub tokens: Arc<TokenStore>,
    pub forward: Forwarder,
    pub net: NetClient,
    pub workers: Workers,
}

/// Serves an API call another node forwarded here; the API layer installs
/// it when it starts (the node knows nothing of HTTP).
pub type ForwardHandler = Arc<
    dyn Fn(
            slurp_protocol::messages::ForwardRequest,
        )
            -> futures::future::BoxFuture<'static, slurp_protocol::messages::ForwardResponse>
        + Send
        + Sync,
>;

/// Where forwarded API calls are served, once the API runs.
pub type Forwarder = Arc<std::sync::OnceLock<ForwardHandler>>;

async fn forward_call(
    forward: &Forwarder,
    r: slurp_protocol::messages::ForwardRequest,
) -> slurp_protocol::messages::ForwardResponse {
    use slurp_protocol::messages::{ErrorCode, ForwardResponse, RemoteError};
    match forward.get() {
        Some(handler) => handler(r).await,
        None => ForwardResponse::Error(RemoteError {
            code: ErrorCode::Unavailable,
            message: "the API is not serving yet".into(),
        }),
    }
}

impl Inbound {
    /// Serves the swarm's events until the swarm stops: each inbound
    /// request in its own task, connections to the peer book.
    pub async fn run(self, mut events: tokio::sync::mpsc::Receiver<NetEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                NetEvent::InboundRequest {
                    peer,
                    request,
                    handle,
                } => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let response = this.serve(peer, *request).await;
                        if let Err(e) = this.net.respond(handle, response).await {
                            tracing::debug!(%peer, error = %e, "response not sent");
                        }
                    });
                }
                NetEvent::PeerConnected { peer, .. } => {
                    self.cluster.peers().connected(&peer, true);
                    let (cluster, workers) = (self.cluster.clone(), self.workers.clone());
                    tokio::spawn(async move {
                        cluster.hello(&peer).await;
                        // A member back from a restart or a partition is
                        // compared at once, not at the next interval.
                        if cluster
                            .layout()
                            .is_some_and(|l| l.member_index(&peer.to_base58()).is_some())
                        {
                            let _ = workers.trigger(crate::replication::anti_entropy::WORKER);
                        }
                    });
                }
                NetEvent::PeerDisconnected { peer } => {
                    self.cluster.peers().connected(&peer, false);
                }
            }
        }
    }

    /// Answers one inbound request of a peer.
    pub async fn serve(&self, peer: libp2p::PeerId, request: Request) -> Response {
        let (store, cluster, custody, tokens, forward) = (
            &self.store,
            &self.cluster,
            &*self.custody,
            &self.tokens,
            &self.forward,
        );
        use slurp_protocol::messages::{
            ErrorCode, ForwardResponse, RemoteError, ReplicateResponse, SearchResponse,
        };
        let stranger = || RemoteError {
            code: ErrorCode::Forbidden,
            message: "not a member of this cluster: join with a token from `slurp cluster invite`"
                .into(),
        };
        // Nothing but cluster requests (joining, certificates) for a peer that
        // is neither in the layout nor certified.
        if !matches!(request, Request::Cluster(_)) && !cluster.admits(&peer) {
            return match request {
                Request::Replicate(_) => Response::Replicate(ReplicateResponse::Error(stranger())),
                Request::Search(_) => Response::Search(SearchResponse::Error(stranger())),
                _ => Response::Forward(ForwardResponse::Error(stranger())),
            };
        }
        if let Request::Cluster(slurp_protocol::messages::ClusterRequest::GetToken { id }) =
            &request
        {
            // Hashes of secrets, but still only for members.
            let r = if !cluster.admits(&peer) {
                slurp_protocol::messages::ClusterResponse::Error(stranger())
            } else if cluster.accepts_from(&peer) {
                slurp_protocol::messages::ClusterResponse::Token {
                    token: tokens.entry(id).map(|e| e.to_record()),
                }
            } else {
                slurp_protocol::messages::ClusterResponse::Error(RemoteError {
                    code: ErrorCode::Forbidden,
                    message: "token lookups are for layout members".into(),
                })
            };
            return Response::Cluster(r);
        }
        // The replicated token list: for layout members, and a member may
        // only hand over tokens of roles its certificate allows.
        if let Request::Cluster(
            slurp_protocol::messages::ClusterRequest::PutTokens { .. }
            | slurp_protocol::messages::ClusterRequest::GetTokens,
        ) = &request
        {
            use slurp_protocol::messages::{ClusterRequest, ClusterResponse};
            if !cluster.accepts_from(&peer) {
                return Response::Cluster(ClusterResponse::Error(stranger()));
            }
            return Response::Cluster(match request {
                Request::Cluster(ClusterRequest::PutTokens { tokens: records }) => {
                    let granted = cluster
                        .membership()
                        .certificate_of(&peer.to_base58())
                        .map(|c| c.roles)
                        .unwrap_or_default();
                    match tokens.merge(records, |r| granted.contains(r)) {
                        Ok(n) => ClusterResponse::TokensTaken { taken: n as u32 },
                        Err(e) => ClusterResponse::Error(RemoteError {
                            code: ErrorCode::Internal,
                            message: e.to_string(),
                        }),
                    }
                }
                _ => ClusterResponse::Tokens {
                    tokens: tokens.own_records(),
                },
            });
        }
        if let Request::Cluster(r) = request {
            return Response::Cluster(cluster.serve(peer, r).await);
        }
        // A member acts for a caller only with a statement, signed by it and
        // holding its certificate, that the cluster key allowed it the role.
        let checked = match &request {
            Request::Forward(r) => Some((
                r.role().clone(),
                cluster.check_authorisation(
                    &peer,
                    r.role(),
                    crate::cluster::authorise::forward_digest(r),
                    r.authorisation(),
                ),
            )),
            Request::Search(r) => Some((
                r.role().clone(),
                cluster.check_authorisation(
                    &peer,
                    r.role(),
                    crate::cluster::authorise::search_digest(r),
                    r.authorisation(),
                ),
            )),
            _ => None,
        };
        if let Some((role, Err(refusal))) = checked {
            let sender = peer.to_base58();
            store
                .audit()
                .record(
                    slurp_crypto::AuditRecord::deny(
                        &sender,
                        slurp_crypto::AuditAction::Other("caller_authorisation".into()),
                        &sender,
                        format!("{}: {refusal}", refusal.code()),
                    )
                    .with_role(role.clone()),
                )
                .await;
            let e = RemoteError {
                code: ErrorCode::Forbidden,
                message: format!("acting for role {role} refused: {refusal}"),
            };
            return match request {
                Request::Search(_) => Response::Search(SearchResponse::Error(e)),
                _ => Response::Forward(ForwardResponse::Error(e)),
            };
        }
        // A certified node outside the layout may forward API calls when it
        // proves it holds the key of the role it acts as.
        if let Request::Forward(slurp_protocol::messages::ForwardRequest::Call {
            method,
            path,
            body,
            caller_role,
            proof: Some(proof),
            ..
        }) = &request
            && cluster.layout().is_some()
            && !cluster.accepts_from(&peer)
        {
            let sender = peer.to_base58();
            let verified =
                custody.check_forward_proof(&proof.0, caller_role, &sender, method, path, &body.0);
            // The proof names a key: the audit entry says which (by
            // fingerprint), and which peer proved it.
            let key = custody
                .keyring()
                .current(caller_role)
                .map(|k| k.fingerprint().to_hex());
            let target: String = format!("{method} {path}").chars().take(256).collect();
            let action = || slurp_crypto::AuditAction::Other("forward".into());
            if verified {
                let mut record = slurp_crypto::AuditRecord::allow(&sender, action(), target)
                    .with_role(caller_role.clone());
                record.reason = format!("proved key {}", key.unwrap_or_default());
                store.audit().record(record).await;
                if let Request::Forward(r) = request {
                    return Response::Forward(forward_call(forward, r).await);
                }
            } else {
                let reason = match &key {
                    Some(fp) => format!("proof does not verify against key {fp}"),
                    None => "this node holds no key of the role".to_string(),
                };
                store
                    .audit()
                    .record(
                        slurp_crypto::AuditRecord::deny(&sender, action(), target, reason)
                            .with_role(caller_role.clone()),
                    )
                    .await;
                return Response::Forward(ForwardResponse::Error(RemoteError {
                    code: ErrorCode::Forbidden,
                    message: format!("the call's proof for role {caller_role} does not verify"),
                }));
            }
        }
        if !cluster.accepts_from(&peer) {
            // The sender may hold a newer layout that has it as a member.
            cluster.want_layout_from(&peer);
            let e = RemoteError {
                code: ErrorCode::LayoutMismatch,
                message: format!(
                    "{peer} is not a member of layout version {}",
                    cluster.layout_version()
                ),
            };
            return match request {
                Request::Replicate(_) => Response::Replicate(ReplicateResponse::Error(e)),
                Request::Search(_) => Response::Search(SearchResponse::Error(e)),
                _ => Response::Forward(ForwardResponse::Error(e)),
            };
        }
        match request {
            Request::Replicate(r) => Response::Replicate(match store.replicator() {
                Some(replicator) => replicator.serve_replicate(&peer, r).await,
                None => ReplicateResponse::Error(RemoteError {
                    code: ErrorCode::NotReplica,
                    message: "this node runs alone".into(),
                }),
            }),
            Request::Search(r) => Response::Search(store.serve_search(r).await),
            Request::Forward(r) => Response::Forward(forward_call(forward, r).await),
            Request::Cluster(_) => unreachable_cluster(),
        }
    }
}

fn unreachable_cluster() -> Response {
    Response::Cluster(slurp_protocol::messages::ClusterResponse::Error(
        slurp_protocol::messages::RemoteError {
            code: slurp_protocol::messages::ErrorCode::Internal,
            message: "cluster requests are served above".into(),
        },
    ))
}
