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
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use slurp_crypto::{AuditConfig, AuditLog, SecretString};
use slurp_index::ContextIndex;
use slurp_protocol::{RoleSet, WriterId};
use slurp_storage::Store;
use tokio::sync::watch;

use crate::audit::AuditSink;
use crate::cache::ContextCache;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::inbound::Forwarder;
use crate::keys::Custody;
use crate::metrics::{IndexMetrics, Metrics, StoreMetrics};
use crate::net::{NetClient, NetEvent};
use crate::store::rebuild::{IndexRebuild, REBUILD_WORKER, RebuildControl, RebuildHold};
use crate::store::{ContextStore, StoreParts};
use crate::tokens::TokenStore;
use crate::workers::Workers;

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
    /// The layout-transition worker (its status shows in `cluster status`).
    pub rebalance: crate::replication::rebalance::Rebalance,
    shutdown: watch::Sender<bool>,
    rebuilds: RebuildControl,
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
            store.engine().clone(),
            cluster.clone(),
            config.replication.clone(),
            metrics.clone(),
            &dir,
        );
        let rebalance = crate::replication::rebalance::Rebalance::new(
            store.engine().clone(),
            cluster.clone(),
            anti_entropy.clone(),
            config.replication.clone(),
            metrics.clone(),
        );
        let node = Node {
            anti_entropy,
            rebalance,
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
                store: self.store.engine().clone(),
                cluster: self.cluster.clone(),
                metrics: self.metrics.clone(),
                batch: self.config.cluster.handoff_batch,
                interval: self.config.cluster.handoff_interval,
            }));
        self.workers.start(Arc::new(self.anti_entropy.clone()));
        self.workers.start(Arc::new(self.rebalance.clone()));
        self.workers
            .start(Arc::new(crate::replication::gc::TombstoneGc::new(
                self.store.engine().clone(),
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
    fn start_network(&self, events: tokio::sync::mpsc::Receiver<NetEvent>) {
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
                for m in layout.members().iter().filter(|m| m.id != cluster.me_id()) {
                    if let Ok(addr) = m.address.parse::<libp2p::Multiaddr>()
                        && let Err(e) = net.dial(addr).await
                    {
                        tracing::debug!(member = %m.id, error = %e, "layout member not reachable yet");
                    }
                }
            }
        });
        let inbound = crate::inbound::Inbound {
            store: self.store.clone(),
            cluster: self.cluster.clone(),
            custody: self.custody.clone(),
            tokens: self.tokens.clone(),
            forward: self.forwarder.clone(),
            net: self.net.clone(),
            workers: self.workers.clone(),
        };
        tokio::spawn(inbound.run(events));
    }

    /// Registers the `index-rebuild` worker and runs it once.
    fn start_rebuild(&self, index: Arc<ContextIndex>) {
        self.workers.start(Arc::new(IndexRebuild {
            index,
            local: self.store.local().clone(),
            custody: self.custody.clone(),
            ready: self.index_ready.clone(),
            control: self.rebuilds.clone(),
        }));
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
