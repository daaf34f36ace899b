//! Start-up: a data directory and a config become a running node.
//!
//! The data directory holds everything a node keeps: `store.redb` (sealed
//! records), `keys/` (role keys, sealed), `node.key` (when keys are sealed
//! to it), `audit.log` and its head, `tokens.json` (hashed), `admin.token`
//! (the first admin token, for the operator) and `node.id` (the writer id).
//! The full-text index lives only in memory and is rebuilt from the store
//! at start, so no plaintext is ever written here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use slurp_crypto::{AuditConfig, AuditLog, Envelope, EnvelopeConfig, SecretString};
use slurp_index::{
    ContextIndex, IndexEntry, RebuildItem, RebuildProgress, UnopenableEntry, UnopenableReason,
};
use slurp_protocol::{ContextNode, Framed, RoleSet, WriterId};
use slurp_storage::{Latest, ReadError, Store};
use tokio::sync::watch;

use crate::audit::AuditSink;
use crate::cache::ContextCache;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::keys::Custody;
use crate::metrics::{IndexMetrics, Metrics, StoreMetrics};
use crate::net::{NetClient, NetEvent, Request, Response};
use crate::store::{ContextStore, StoreParts};
use crate::tokens::TokenStore;
use crate::workers::{PassReport, Workers};

/// A running node's parts.
pub struct Node {
    pub config: NodeConfig,
    pub store: ContextStore,
    pub tokens: Arc<TokenStore>,
    pub metrics: Metrics,
    pub workers: Workers,
    pub custody: Arc<Custody>,
    pub audit_log: Arc<AuditLog>,
    /// Set once the index has been rebuilt from the store (cleared while a
    /// rebuild runs, and after a failed one). `/health` reads the index's
    /// own [`ContextIndex::coverage`], which says why.
    pub index_ready: Arc<AtomicBool>,
    /// Where the first admin token was written, when this start made it.
    pub admin_token_file: Option<PathBuf>,
    pub net: NetClient,
    pub cluster: Cluster,
    /// The API router, for calls other nodes forward here (set when the
    /// API starts).
    pub forwarder: Forwarder,
    /// Anti-entropy, whose state `slurp cluster status` shows.
    pub anti_entropy: crate::replication::anti_entropy::AntiEntropy,
    shutdown: watch::Sender<bool>,
    rebuilds: RebuildControl,
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

/// Answers one inbound request of a peer.
async fn serve(
    store: &ContextStore,
    cluster: &Cluster,
    custody: &Custody,
    tokens: &TokenStore,
    forward: &Forwarder,
    peer: libp2p::PeerId,
    request: Request,
) -> Response {
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
    if let Request::Cluster(slurp_protocol::messages::ClusterRequest::GetToken { id }) = &request {
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
        cluster.want_layout_from(&peer.to_base58());
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
        Request::Replicate(r) => {
            Response::Replicate(store.serve_replicate(&peer.to_base58(), r).await)
        }
        Request::Search(r) => Response::Search(store.serve_search(r).await),
        Request::Forward(r) => Response::Forward(forward_call(forward, r).await),
        Request::Cluster(_) => unreachable_cluster(),
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

/// The writer id of this node: the configured name, or one generated on
/// first start and kept in `node.id`.
fn writer_id(config: &NodeConfig) -> Result<WriterId> {
    if let Some(name) = &config.node_name {
        return WriterId::new(name.clone()).context("node_name");
    }
    let path = config.data_dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(s) => WriterId::new(s.trim().to_string()).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 6];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
            let id = WriterId::new(format!("n{}", hex::encode(b)))?;
            crate::tokens::write_private_file(&path, id.as_str().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn load_roles(config: &NodeConfig) -> Result<RoleSet> {
    match &config.roles_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading roles file {}", p.display()))?;
            RoleSet::from_toml(&text).with_context(|| format!("roles file {}", p.display()))
        }
        None => Ok(RoleSet::default()),
    }
}

impl Node {
    /// Opens everything under the data directory and starts the workers.
    /// Must run inside a tokio runtime.
    pub async fn open(config: NodeConfig) -> Result<Node> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        config
            .rotation
            .validate()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config
            .replication
            .validate()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        let roles = load_roles(&config)?;
        let writer = writer_id(&config)?;
        let metrics = Metrics::new();

        let local = Store::builder(dir.join("store.redb"))
            .config(config.store.clone())
            .observer(Arc::new(StoreMetrics(metrics.clone())))
            .open()
            .context("opening the local store")?;

        let passphrase = std::env::var("SLURP_KEYSTORE_PASSPHRASE")
            .ok()
            .map(SecretString::from);
        // Role keys are made by a node on its own (which may create a
        // cluster later) and by the holder of the cluster key; every other
        // member is granted the cluster's keys through the swarm and must
        // never seal to keys of its own.
        let in_cluster = dir.join("cluster").join("identity.json").exists();
        let key_holder = dir.join("keys").join("cluster.secret").exists();
        let generate = if in_cluster {
            key_holder
        } else {
            config.cluster.join_token.is_none()
        };
        let custody = Arc::new(
            Custody::open_with(&dir, &roles, &config.keys, passphrase, generate)
                .context("opening role keys")?,
        );
        if !custody.created().is_empty() {
            tracing::info!(roles = ?custody.created(), "generated role keys");
        }

        let audit_log = Arc::new(
            AuditLog::open(dir.join("audit.log"), AuditConfig::default())
                .context("opening the audit log")?,
        );
        // Keys generated by this start go in the audit log, named by
        // fingerprint like every key the node shows.
        let keyring = custody.keyring();
        let generated: Vec<slurp_crypto::AuditRecord> = custody
            .created()
            .iter()
            .filter_map(|r| {
                let role = slurp_protocol::RoleName::new(r.as_str()).ok()?;
                let key = keyring.current(&role)?;
                let mut record = slurp_crypto::AuditRecord::allow(
                    "node",
                    slurp_crypto::AuditAction::KeyGenerate,
                    key.fingerprint().to_hex(),
                )
                .with_role(role);
                record.reason = format!("epoch {}, first start", key.epoch());
                Some(record)
            })
            .collect();
        if !generated.is_empty() {
            audit_log
                .append_batch(&generated)
                .context("auditing the generated role keys")?;
        }
        let audit = AuditSink::start(audit_log.clone(), metrics.clone(), &config.audit);

        let index = if config.store_options.indexing {
            let index = ContextIndex::open_in_memory_with_observer(
                config.index.clone(),
                Arc::new(IndexMetrics(metrics.clone())),
            )
            .context("creating the index")?;
            // Not complete until the rebuild below has read the store: the
            // node says so on /health and in every search meanwhile.
            index.expect_rebuild(local.stats().ok().map(|s| s.keys));
            Some(Arc::new(index))
        } else {
            metrics.index_ready.set(1);
            None
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let keypair =
            crate::net::identity::load_or_create(&dir).context("loading the node identity")?;
        let (net, events, event_loop) =
            crate::net::new(config.net.clone(), keypair.clone()).context("starting the swarm")?;
        let mut stop = shutdown_rx.clone();
        tokio::spawn(event_loop.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
        let info = slurp_protocol::messages::NodeInfo {
            name: writer.as_str().to_string(),
            peer_id: net.peer_id().to_base58(),
            api_addr: Some(config.api.listen.to_string()),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
            zone: Some(config.cluster.zone.clone()),
            capacity: Some(u64::from(config.cluster.capacity)),
            listen_addrs: Vec::new(),
            auto_join: config.cluster.auto_join,
        };
        let cluster = Cluster::new(
            crate::cluster::ClusterParts {
                net: net.clone(),
                info,
                config: config.cluster.clone(),
                metrics: metrics.clone(),
                custody: custody.clone(),
                audit: audit.clone(),
                keypair,
            },
            &dir,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if cluster.identity().is_some() {
            // The key holder publishes keys made at this start (a role
            // added to the roles file); every member loads the directory.
            if let Err(e) = cluster.publish_new_keys() {
                tracing::warn!(error = %e, "cannot publish the new role keys");
            }
            cluster.reload_keys();
        }
        if cluster.identity().is_none()
            && config.cluster.auto_join
            && config.cluster.join_token.is_none()
        {
            anyhow::bail!(
                "cluster.auto_join needs cluster.join_token (--join-token): create one with `slurp cluster invite` on a member"
            );
        }

        let cache = ContextCache::new(&config.cache, metrics.clone());
        let store = ContextStore::new(StoreParts {
            roles,
            limits: config.limits,
            options: config.store_options.clone(),
            writer,
            store: local.clone(),
            index: index.clone(),
            custody: custody.clone(),
            cache,
            audit,
            metrics: metrics.clone(),
            cluster: Some(cluster.clone()),
            replication: config.replication.clone(),
        });

        let tokens = Arc::new(TokenStore::open(dir.join("tokens.json"))?);
        let admin_token_file = if tokens.is_empty() {
            let admin = store
                .roles()
                .roles()
                .find(|r| r.as_str() == "admin")
                .or_else(|| store.roles().roles().next())
                .cloned()
                .context("the roles file defines no roles")?;
            let (_, token) = tokens.create(admin, "created at first start")?;
            let path = dir.join("admin.token");
            crate::tokens::write_private_file(&path, format!("{token}\n").as_bytes())?;
            Some(path)
        } else {
            None
        };

        let workers = Workers::new(metrics.clone(), shutdown_rx);
        let index_ready = Arc::new(AtomicBool::new(index.is_none()));
        let anti_entropy = crate::replication::anti_entropy::AntiEntropy::new(
            store.clone(),
            cluster.clone(),
            config.replication.clone(),
            metrics.clone(),
            &dir,
        );
        let node = Node {
            anti_entropy,
            config,
            store,
            tokens,
            metrics,
            workers,
            custody,
            audit_log,
            index_ready,
            admin_token_file,
            net,
            cluster,
            forwarder: Arc::new(std::sync::OnceLock::new()),
            shutdown,
            rebuilds: RebuildControl::default(),
        };
        node.start_network(events);
        node.start_workers();
        if let Some(index) = index {
            node.start_rebuild(index);
        }
        Ok(node)
    }

    fn start_workers(&self) {
        use crate::maintenance::{Compact, Gauges, IndexMerge, Sweep};
        let ms = std::time::Duration::from_millis;
        self.workers.start(Arc::new(Sweep {
            sweeper: slurp_storage::Sweeper::new(self.store.local().clone()),
            interval: ms(self.config.store.sweep.interval_ms),
        }));
        self.workers.start(Arc::new(Compact {
            store: self.store.local().clone(),
            interval: ms(self.config.store.compaction.interval_ms),
        }));
        if let Some(index) = self.store.index().cloned() {
            self.workers.start(Arc::new(IndexMerge {
                index,
                interval: self.config.store_options.index_merge_interval,
            }));
        }
        self.workers.start(Arc::new(crate::rotation::RewrapWorker {
            local: self.store.local().clone(),
            custody: self.custody.clone(),
            metrics: self.metrics.clone(),
            config: self.config.rotation.clone(),
            cluster: self.cluster.clone(),
        }));
        self.workers
            .start(Arc::new(crate::cluster::workers::AuditAnchor {
                cluster: self.cluster.clone(),
                audit_log: self.audit_log.clone(),
                store: self.store.clone(),
                interval: self.config.audit.anchor_interval,
            }));
        self.workers
            .start(Arc::new(crate::cluster::workers::TokenSync {
                cluster: self.cluster.clone(),
                tokens: self.tokens.clone(),
                interval: self.config.cluster.token_sync_interval,
            }));
        self.workers
            .start(Arc::new(crate::cluster::workers::MembershipProbe {
                cluster: self.cluster.clone(),
            }));
        self.workers
            .start(Arc::new(crate::cluster::workers::LayoutPull {
                cluster: self.cluster.clone(),
            }));
        // A peer announcing a newer layout is asked at once, not at the
        // next interval.
        let (cluster, workers) = (self.cluster.clone(), self.workers.clone());
        let mut stop = self.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cluster.layout_pull_wanted() => {
                        let _ = workers.trigger(crate::cluster::workers::LAYOUT_PULL);
                    }
                    _ = stop.changed() => break,
                }
            }
        });
        // The replication workers (`crate::replication`).
        self.workers
            .start(Arc::new(crate::replication::handoff::Handoff {
                store: self.store.clone(),
                cluster: self.cluster.clone(),
                metrics: self.metrics.clone(),
                batch: self.config.cluster.handoff_batch,
                interval: self.config.cluster.handoff_interval,
            }));
        self.workers.start(Arc::new(self.anti_entropy.clone()));
        self.workers
            .start(Arc::new(crate::replication::gc::TombstoneGc::new(
                self.store.clone(),
                self.cluster.clone(),
                self.config.replication.clone(),
                self.metrics.clone(),
            )));
        self.workers.start(Arc::new(Gauges {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            net: self.net.clone(),
        }));
    }

    /// Serves the swarm's events: inbound requests go to the store or the
    /// cluster (replication, search and forwarding only from layout
    /// members), connections to the peer book.
    fn start_network(&self, mut events: tokio::sync::mpsc::Receiver<NetEvent>) {
        let net = self.net.clone();
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Ok(addrs) = net.listen_addrs().await {
                let me = net.peer_id();
                cluster
                    .set_listen_addrs(addrs.into_iter().map(|a| format!("{a}/p2p/{me}")).collect());
            }
            // A restarted node finds the members of the layout it kept at
            // the addresses the layout lists, even when its bootstrap peers
            // are gone.
            if let Some(layout) = cluster.layout() {
                for m in layout.members().iter().filter(|m| m.id != cluster.me()) {
                    if let Ok(addr) = m.address.parse::<libp2p::Multiaddr>()
                        && let Err(e) = net.dial(addr).await
                    {
                        tracing::debug!(member = %m.id, error = %e, "layout member not reachable yet");
                    }
                }
            }
        });
        let store = self.store.clone();
        let cluster = self.cluster.clone();
        let net = self.net.clone();
        let forward = self.forwarder.clone();
        let custody = self.custody.clone();
        let tokens = self.tokens.clone();
        let workers = self.workers.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    NetEvent::InboundRequest {
                        peer,
                        request,
                        handle,
                    } => {
                        let (store, cluster, net, forward, custody, tokens) = (
                            store.clone(),
                            cluster.clone(),
                            net.clone(),
                            forward.clone(),
                            custody.clone(),
                            tokens.clone(),
                        );
                        tokio::spawn(async move {
                            let response = serve(
                                &store, &cluster, &custody, &tokens, &forward, peer, *request,
                            )
                            .await;
                            if let Err(e) = net.respond(handle, response).await {
                                tracing::debug!(%peer, error = %e, "response not sent");
                            }
                        });
                    }
                    NetEvent::PeerConnected { peer, .. } => {
                        let id = peer.to_base58();
                        cluster.peers().connected(&id, true);
                        let (cluster, workers) = (cluster.clone(), workers.clone());
                        tokio::spawn(async move {
                            cluster.hello(&id).await;
                            // A member back from a restart or a partition
                            // is compared at once, not at the next interval.
                            if cluster
                                .layout()
                                .is_some_and(|l| l.member_index(&id).is_some())
                            {
                                let _ = workers.trigger(crate::replication::anti_entropy::WORKER);
                            }
                        });
                    }
                    NetEvent::PeerDisconnected { peer } => {
                        cluster.peers().connected(&peer.to_base58(), false);
                    }
                }
            }
        });
    }

    /// Registers the `index-rebuild` worker and runs it once: it rebuilds
    /// the in-memory index from the store in the background. Records this
    /// node cannot open are counted, never fatal; a rebuild that fails
    /// (the store cannot be read) leaves the index marked failed, and
    /// running the worker again retries it.
    fn start_rebuild(&self, index: Arc<ContextIndex>) {
        let local = self.store.local().clone();
        let custody = self.custody.clone();
        let ready = self.index_ready.clone();
        let control = self.rebuilds.clone();
        self.workers.spawn(
            REBUILD_WORKER,
            "rebuilds the full-text index from the store (once at start; run it again after a failed rebuild)",
            std::time::Duration::ZERO,
            Box::new(move || {
                let (index, local, custody, ready, control) = (
                    index.clone(),
                    local.clone(),
                    custody.clone(),
                    ready.clone(),
                    control.clone(),
                );
                Box::pin(async move {
                    ready.store(false, Ordering::SeqCst);
                    index.expect_rebuild(local.stats().ok().map(|s| s.keys));
                    let running = control.start();
                    let p = tokio::task::spawn_blocking(move || {
                        let _running = running;
                        rebuild_index(&index, local, custody.keyring(), control)
                    })
                    .await
                    .map_err(|e| e.to_string())??;
                    ready.store(true, Ordering::SeqCst);
                    Ok(PassReport {
                        items: p.indexed,
                        note: rebuild_note(&p),
                    })
                })
            }),
        );
        let _ = self.workers.trigger(REBUILD_WORKER);
    }

    /// Pauses index rebuilds until the returned hold is dropped: a rebuild
    /// waits before it reads each page of the store, with the index marked
    /// rebuilding. For tests that must see a rebuild in progress; run one
    /// with `workers.trigger("index-rebuild")`.
    #[doc(hidden)]
    pub fn hold_index_rebuilds(&self) -> RebuildHold {
        self.rebuilds.hold()
    }

    /// Rebuilds waiting at a [`Node::hold_index_rebuilds`] hold.
    #[doc(hidden)]
    pub fn index_rebuilds_held(&self) -> usize {
        self.rebuilds.waiting()
    }

    /// Stops the workers.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stops the workers, waits for them and for queued audit entries, and
    /// drops the node (closing the local store once no request holds it).
    pub async fn close(self) {
        self.shutdown();
        for _ in 0..500 {
            if self
                .workers
                .list()
                .iter()
                .all(|w| w.state == crate::workers::WorkerState::Stopped)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.store.audit().flush().await;
        // A rebuild cannot be cut short; it holds the store until it ends.
        while self.rebuilds.running() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

/// The worker that rebuilds the index.
pub const REBUILD_WORKER: &str = "index-rebuild";

/// Rebuilds `index` from every live record of `local`, logging the outcome.
fn rebuild_index(
    index: &ContextIndex,
    local: Store,
    keyring: Arc<slurp_crypto::Keyring>,
    control: RebuildControl,
) -> Result<RebuildProgress, String> {
    let start = Instant::now();
    let entries = RebuildEntries::new(local, keyring, control);
    match index.rebuild(entries, &mut |_| {}) {
        Ok(p) => {
            tracing::info!(
                indexed = p.indexed,
                unopenable_no_key = p.unopenable.no_key,
                unopenable_corrupt = p.unopenable.corrupt,
                rejected = p.rejected,
                took_ms = start.elapsed().as_millis() as u64,
                "index rebuilt from the store"
            );
            Ok(p)
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "index rebuild failed: search misses what it did not reach (`slurp workers --run index-rebuild` retries)"
            );
            Err(e.to_string())
        }
    }
}

/// What a rebuild did, for the worker's status.
fn rebuild_note(p: &RebuildProgress) -> String {
    let mut note = format!("indexed {} of {} records", p.indexed, p.read);
    let u = p.unopenable;
    if u.total() > 0 {
        note += &format!(
            "; {} held but not openable here (no key: {}, corrupt: {})",
            u.total(),
            u.no_key,
            u.corrupt
        );
    }
    if p.rejected > 0 {
        note += &format!("; {} invalid", p.rejected);
    }
    note + &format!(" in {} ms", p.elapsed.as_millis())
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

/// Index rebuilds in flight, and holds that pause them (for tests).
#[derive(Clone, Default)]
struct RebuildControl(Arc<RebuildControlInner>);

#[derive(Default)]
struct RebuildControlInner {
    running: AtomicUsize,
    /// Holds alive, and rebuilds waiting at them.
    held: Mutex<(usize, usize)>,
    released: Condvar,
}

/// One rebuild in flight, until dropped.
struct Running(RebuildControl);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Pauses index rebuilds while alive ([`Node::hold_index_rebuilds`]).
#[doc(hidden)]
pub struct RebuildHold(RebuildControl);

impl Drop for RebuildHold {
    fn drop(&mut self) {
        let inner = &self.0.0;
        inner.held.lock().unwrap_or_else(|e| e.into_inner()).0 -= 1;
        inner.released.notify_all();
    }
}

impl RebuildControl {
    fn start(&self) -> Running {
        self.0.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    fn hold(&self) -> RebuildHold {
        self.0.held.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        RebuildHold(self.clone())
    }

    fn waiting(&self) -> usize {
        self.0.held.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Blocks while a hold is alive.
    fn wait_while_held(&self) {
        let inner = &self.0;
        let mut g = inner.held.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            return;
        }
        g.1 += 1;
        let mut g = inner
            .released
            .wait_while(g, |(holds, _)| *holds > 0)
            .unwrap_or_else(|e| e.into_inner());
        g.1 -= 1;
    }
}

/// Every live context of the local store for the index: opened, or, when
/// this node cannot open it, counted as unopenable (with why).
struct RebuildEntries {
    local: Store,
    keyring: Arc<slurp_crypto::Keyring>,
    control: RebuildControl,
    envelope: EnvelopeConfig,
    page: std::vec::IntoIter<String>,
    after: Option<String>,
    done: bool,
}

impl RebuildEntries {
    fn new(local: Store, keyring: Arc<slurp_crypto::Keyring>, control: RebuildControl) -> Self {
        RebuildEntries {
            local,
            keyring,
            control,
            envelope: EnvelopeConfig::default(),
            page: Vec::new().into_iter(),
            after: None,
            done: false,
        }
    }

    /// The newest version of `key` for the index; `None` when it is
    /// deleted or gone. Only a failure to read the store is an error.
    fn entry(&self, key: &str) -> Result<Option<RebuildItem>, String> {
        let record = match self.local.latest(key) {
            Ok(Latest::Live { record, .. }) => record,
            Ok(_) => return Ok(None),
            Err(ReadError::Corrupt(e)) => {
                // The stored bytes do not decode: counted when the
                // record's metadata still reads, skipped otherwise.
                log_unopenable(key, UnopenableReason::Corrupt, &e.to_string());
                return Ok(self.local.latest_meta(key).ok().flatten().map(|(meta, _)| {
                    RebuildItem::Unopenable(UnopenableEntry {
                        key: key.to_string(),
                        version: meta.version,
                        readers: meta.readers,
                        reason: UnopenableReason::Corrupt,
                    })
                }));
            }
            Err(e) => return Err(format!("{key}: {e}")),
        };
        let meta = record.meta;
        Ok(Some(
            match open_for_index(&record.envelope, &self.envelope, &self.keyring) {
                Ok(context) => RebuildItem::Entry(IndexEntry {
                    key: key.to_string(),
                    version: meta.version,
                    readers: meta.readers,
                    context,
                }),
                Err((reason, error)) => {
                    log_unopenable(key, reason, &error);
                    RebuildItem::Unopenable(UnopenableEntry {
                        key: key.to_string(),
                        version: meta.version,
                        readers: meta.readers,
                        reason,
                    })
                }
            },
        ))
    }
}

impl Iterator for RebuildEntries {
    type Item = Result<RebuildItem, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                match self.entry(&key) {
                    Ok(Some(e)) => return Some(Ok(e)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.done {
                return None;
            }
            self.control.wait_while_held();
            match self.local.list_keys("", self.after.as_deref(), 1024) {
                Ok(page) => {
                    self.done = page.next_after.is_none();
                    self.after = page.next_after;
                    self.page = page
                        .keys
                        .into_iter()
                        .map(|k| k.key)
                        .collect::<Vec<_>>()
                        .into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.to_string()));
                }
            }
        }
    }
}
