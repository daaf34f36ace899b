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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use slurp_crypto::{AuditConfig, AuditLog, Envelope, EnvelopeConfig, SecretString};
use slurp_index::{ContextIndex, IndexEntry};
use slurp_protocol::{ContextNode, Framed, RoleSet, WriterId};
use slurp_storage::{Latest, Store};
use tokio::sync::watch;

use crate::audit::AuditSink;
use crate::cache::ContextCache;
use crate::config::NodeConfig;
use crate::keys::Custody;
use crate::metrics::{IndexMetrics, Metrics, StoreMetrics};
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
    /// Set once the index has been rebuilt from the store.
    pub index_ready: Arc<AtomicBool>,
    /// Where the first admin token was written, when this start made it.
    pub admin_token_file: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
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
        let custody = Arc::new(
            Custody::open(&dir, &roles, &config.keys, passphrase).context("opening role keys")?,
        );
        if !custody.created().is_empty() {
            tracing::info!(roles = ?custody.created(), "generated role keys");
        }

        let audit_log = Arc::new(
            AuditLog::open(dir.join("audit.log"), AuditConfig::default())
                .context("opening the audit log")?,
        );
        let audit = AuditSink::start(audit_log.clone(), metrics.clone(), &config.audit);

        let index = if config.store_options.indexing {
            Some(Arc::new(
                ContextIndex::open_in_memory_with_observer(
                    config.index.clone(),
                    Arc::new(IndexMetrics(metrics.clone())),
                )
                .context("creating the index")?,
            ))
        } else {
            None
        };

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

        let (shutdown, shutdown_rx) = watch::channel(false);
        let workers = Workers::new(metrics.clone(), shutdown_rx);
        let index_ready = Arc::new(AtomicBool::new(index.is_none()));
        let node = Node {
            config,
            store,
            tokens,
            metrics,
            workers,
            custody,
            audit_log,
            index_ready,
            admin_token_file,
            shutdown,
        };
        node.start_workers();
        if let Some(index) = index {
            node.start_rebuild(index);
        }
        Ok(node)
    }

    fn start_workers(&self) {
        let o = &self.config.store_options;
        let local = self.store.local().clone();
        let sweep_batch = self.config.store.sweep.batch;
        self.workers.spawn(
            "sweeper",
            "deletes expired versions from the local store",
            o.cleanup_interval,
            Box::new(move || {
                let local = local.clone();
                Box::pin(async move {
                    let mut removed = 0u64;
                    loop {
                        let r = local
                            .sweep_expired(sweep_batch)
                            .await
                            .map_err(|e| e.to_string())?;
                        removed += r.removed;
                        if !r.more {
                            break;
                        }
                    }
                    Ok(PassReport {
                        items: removed,
                        note: format!("removed {removed} expired versions"),
                    })
                })
            }),
        );
        let local = self.store.local().clone();
        self.workers.spawn(
            "compactor",
            "compacts the local store file",
            o.compaction_interval,
            Box::new(move || {
                let local = local.clone();
                Box::pin(async move {
                    let r = local.compact(false).await.map_err(|e| e.to_string())?;
                    Ok(PassReport {
                        items: u64::from(r.compacted),
                        note: format!("{} -> {} bytes", r.file_bytes_before, r.file_bytes_after),
                    })
                })
            }),
        );
        if let Some(index) = self.store.index().cloned() {
            self.workers.spawn(
                "index-merge",
                "merges full-text index segments",
                o.index_merge_interval,
                Box::new(move || {
                    let index = index.clone();
                    Box::pin(async move {
                        let r = tokio::task::spawn_blocking(move || index.optimize())
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| e.to_string())?;
                        Ok(PassReport {
                            items: r.segments_before.saturating_sub(r.segments_after) as u64,
                            note: format!("{} -> {} segments", r.segments_before, r.segments_after),
                        })
                    })
                }),
            );
        }
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        self.workers.spawn(
            "stats",
            "refreshes store, index and cache gauges",
            std::time::Duration::from_secs(5),
            Box::new(move || {
                let store = store.clone();
                let metrics = metrics.clone();
                Box::pin(async move {
                    store.cache().maintain().await;
                    let s = store.local().stats().map_err(|e| e.to_string())?;
                    metrics.store_keys.set(s.keys as i64);
                    metrics.store_versions.set(s.versions as i64);
                    metrics.store_bytes.set(s.file_bytes as i64);
                    if let Some(index) = store.index() {
                        let st = index.status().map_err(|e| e.to_string())?;
                        metrics.index_docs.set(st.docs as i64);
                        metrics.index_segments.set(st.segments as i64);
                    }
                    Ok(PassReport::default())
                })
            }),
        );
    }

    /// Rebuilds the in-memory index from the store in the background.
    fn start_rebuild(&self, index: Arc<ContextIndex>) {
        let local = self.store.local().clone();
        let custody = self.custody.clone();
        let ready = self.index_ready.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let keyring = custody.keyring();
            let entries = RebuildEntries::new(local, keyring);
            let r = index.rebuild(entries, &mut |_| {});
            match r {
                Ok(p) => tracing::info!(
                    indexed = p.indexed,
                    took_ms = start.elapsed().as_millis() as u64,
                    "index rebuilt from the store"
                ),
                Err(e) => tracing::error!(error = %e, "index rebuild failed"),
            }
            ready.store(true, Ordering::SeqCst);
        });
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
        while !self.index_ready.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }
}

/// Every live context of the local store, opened for the index.
struct RebuildEntries {
    local: Store,
    keyring: Arc<slurp_crypto::Keyring>,
    page: std::vec::IntoIter<String>,
    after: Option<String>,
    done: bool,
}

impl RebuildEntries {
    fn new(local: Store, keyring: Arc<slurp_crypto::Keyring>) -> Self {
        RebuildEntries {
            local,
            keyring,
            page: Vec::new().into_iter(),
            after: None,
            done: false,
        }
    }

    fn entry(&self, key: &str) -> Result<Option<IndexEntry>, String> {
        let Latest::Live { record, .. } = self.local.latest(key).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let env = Envelope::from_bytes(&record.envelope, &EnvelopeConfig::default())
            .map_err(|e| format!("{key}: {e}"))?;
        let plain = env.open(&self.keyring).map_err(|e| format!("{key}: {e}"))?;
        let context = ContextNode::decode(&plain).map_err(|e| format!("{key}: {e}"))?;
        Ok(Some(IndexEntry {
            key: key.to_string(),
            version: record.meta.version,
            readers: record.meta.readers,
            context,
        }))
    }
}

impl Iterator for RebuildEntries {
    type Item = Result<IndexEntry, String>;

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
