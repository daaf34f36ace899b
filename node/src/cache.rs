//! The in-memory tier: decrypted contexts, per role, in moka.
//!
//! Opening an envelope costs an X25519 operation; a cache hit costs a hash
//! lookup. Entries are keyed by *role* as well as address, so one role never
//! receives a copy decrypted for another, even for the same record. The cache
//! is bounded by bytes (a weigher), by time to live and time to idle, and
//! admits with TinyLFU (moka's default), so a scan of cold records does not
//! flush the hot set. Large entries are kept zstd-compressed. Plaintext
//! lives here only in memory; nothing is ever written to disk.
//!
//! Invalidation: every write and delete of an address drops the
//! "latest" entries of that address for every role. Entries for an exact
//! version never go stale, because versions are append-only.
//!
//! A reader that loaded a record just before a write must not put the old
//! version back after the writer invalidated it. Each address hashes to one
//! of a fixed set of *generation* counters; a writer bumps the counter
//! before invalidating, and a reader inserts only if the counter it saw
//! before reading is unchanged after inserting (else it removes its own
//! entry again). Either the reader sees the bump, or the writer's
//! invalidation comes after the reader's insert.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use serde::{Deserialize, Serialize};
use slurp_protocol::{ContextNode, Framed, RoleName, VersionId};

use crate::metrics::{CauseLabels, Metrics};

/// Cache settings (`[cache]` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Keep decrypted contexts in memory at all (true or false).
    pub enabled: bool,
    /// Upper bound of the cache's weighted size (the encoded contexts it
    /// holds), in bytes.
    pub max_bytes: u64,
    /// An entry is dropped this long after it was written, a duration such
    /// as `10m`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ttl: Duration,
    /// An entry is dropped when unread for this long, a duration such as
    /// `2m`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub tti: Duration,
    /// Entries whose encoding is larger than this, in bytes, are kept
    /// zstd-compressed.
    pub compress_above: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_bytes: 256 * 1024 * 1024,
            ttl: Duration::from_secs(600),
            tti: Duration::from_secs(120),
            compress_above: 16 * 1024,
        }
    }
}

/// Which version of an address an entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    Latest,
    Exact(VersionId),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    role: RoleName,
    key: Arc<str>,
    selector: Selector,
}

/// A cached read: the decrypted context plus its position in the history.
#[derive(Debug, Clone)]
pub struct CachedRead {
    pub node: Arc<ContextNode>,
    /// 1-based position of the version in the address's history.
    pub ordinal: u64,
}

#[derive(Clone)]
enum Stored {
    Plain(Arc<ContextNode>, u32),
    Compressed(Arc<[u8]>),
}

#[derive(Clone)]
struct Entry {
    stored: Stored,
    ordinal: u64,
}

impl Entry {
    fn weight(&self) -> u32 {
        match &self.stored {
            Stored::Plain(_, w) => *w,
            Stored::Compressed(b) => b.len() as u32 + 64,
        }
    }
}

/// Generation counters, striped by address hash.
const GENERATIONS: usize = 4096;

/// The role-keyed context cache.
#[derive(Clone)]
pub struct ContextCache {
    inner: Option<Cache<CacheKey, Entry>>,
    generations: Arc<[AtomicU64]>,
    compress_above: usize,
    metrics: Metrics,
}

fn stripe(key: &str) -> usize {
    let h = blake3::hash(key.as_bytes());
    let b = h.as_bytes();
    (u16::from_le_bytes([b[0], b[1]]) as usize) % GENERATIONS
}

impl ContextCache {
    pub fn new(config: &CacheConfig, metrics: Metrics) -> Self {
        let inner = config.enabled.then(|| {
            let evictions = metrics.cache_evictions.clone();
            Cache::builder()
                .max_capacity(config.max_bytes)
                .weigher(|k: &CacheKey, v: &Entry| {
                    v.weight()
                        .saturating_add(k.key.len() as u32)
                        .saturating_add(64)
                })
                .time_to_live(config.ttl)
                .time_to_idle(config.tti)
                .eviction_listener(move |_k, _v, cause| {
                    let cause = match cause {
                        RemovalCause::Size => "size",
                        RemovalCause::Expired => "expired",
                        _ => return,
                    };
                    evictions.get_or_create(&CauseLabels { cause }).inc();
                })
                .build()
        });
        ContextCache {
            inner,
            generations: (0..GENERATIONS).map(|_| AtomicU64::new(0)).collect(),
            compress_above: config.compress_above,
            metrics,
        }
    }

    /// Looks up what `role` read before at `key`/`selector`.
    pub async fn get(&self, role: &RoleName, key: &str, selector: &Selector) -> Option<CachedRead> {
        let cache = self.inner.as_ref()?;
        let k = CacheKey {
            role: role.clone(),
            key: Arc::from(key),
            selector: selector.clone(),
        };
        let Some(entry) = cache.get(&k).await else {
            self.metrics.cache_misses.inc();
            return None;
        };
        let node = match entry.stored {
            Stored::Plain(n, _) => n,
            Stored::Compressed(bytes) => {
                // An entry that fails to decode is dropped and read again
                // from the store.
                let decoded = zstd::bulk::decompress(&bytes, 64 * 1024 * 1024)
                    .ok()
                    .and_then(|raw| ContextNode::decode(&raw).ok());
                match decoded {
                    Some(n) => Arc::new(n),
                    None => {
                        cache.invalidate(&k).await;
                        self.metrics.cache_misses.inc();
                        return None;
                    }
                }
            }
        };
        self.metrics.cache_hits.inc();
        Some(CachedRead {
            node,
            ordinal: entry.ordinal,
        })
    }

    /// The generation of `key`; read it before loading what will be
    /// inserted.
    pub fn generation(&self, key: &str) -> u64 {
        self.generations[stripe(key)].load(Ordering::SeqCst)
    }

    /// Remembers what `role` read, unless `key` was invalidated since
    /// `generation` was read.
    pub async fn insert(
        &self,
        role: &RoleName,
        key: &str,
        selector: Selector,
        read: &CachedRead,
        generation: u64,
    ) {
        let Some(cache) = self.inner.as_ref() else {
            return;
        };
        if self.generation(key) != generation {
            return;
        }
        let encoded_len = read
            .node
            .summary
            .len()
            .saturating_add(read.node.purpose.len())
            .saturating_add(read.node.insights.iter().map(|s| s.len()).sum::<usize>())
            .saturating_add(512);
        let stored = if encoded_len > self.compress_above {
            match read
                .node
                .encode()
                .ok()
                .and_then(|raw| zstd::bulk::compress(&raw, 1).ok())
            {
                Some(c) => Stored::Compressed(c.into()),
                None => Stored::Plain(read.node.clone(), encoded_len as u32),
            }
        } else {
            Stored::Plain(read.node.clone(), encoded_len as u32)
        };
        let key = CacheKey {
            role: role.clone(),
            key: Arc::from(key),
            selector,
        };
        cache
            .insert(
                key.clone(),
                Entry {
                    stored,
                    ordinal: read.ordinal,
                },
            )
            .await;
        if self.generation(&key.key) != generation {
            cache.invalidate(&key).await;
        }
    }

    /// Drops the latest-version entries of `key` for every role in `roles`.
    pub async fn invalidate_latest<'a>(
        &self,
        key: &str,
        roles: impl Iterator<Item = &'a RoleName>,
    ) {
        self.generations[stripe(key)].fetch_add(1, Ordering::SeqCst);
        let Some(cache) = self.inner.as_ref() else {
            return;
        };
        let key: Arc<str> = Arc::from(key);
        for role in roles {
            cache
                .invalidate(&CacheKey {
                    role: role.clone(),
                    key: key.clone(),
                    selector: Selector::Latest,
                })
                .await;
        }
    }

    /// Drops everything (after a restore, for example).
    pub fn clear(&self) {
        if let Some(c) = &self.inner {
            c.invalidate_all();
        }
    }

    /// Applies pending evictions and refreshes the size gauges.
    pub async fn maintain(&self) {
        if let Some(c) = &self.inner {
            c.run_pending_tasks().await;
            self.metrics.cache_entries.set(c.entry_count() as i64);
            self.metrics.cache_bytes.set(c.weighted_size() as i64);
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.entry_count())
    }

    pub fn weighted_size(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| c.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurp_protocol::UcxlAddress;

    fn node(summary: &str) -> Arc<ContextNode> {
        Arc::new(ContextNode::new(
            UcxlAddress::parse("ucxl://a:developer@p:t/*^/x").unwrap(),
            summary,
            vec![RoleName::new("developer").unwrap()],
        ))
    }

    fn role(s: &str) -> RoleName {
        RoleName::new(s).unwrap()
    }

    #[tokio::test]
    async fn roles_do_not_share_entries_and_writes_invalidate() {
        let metrics = Metrics::new();
        let cache = ContextCache::new(&CacheConfig::default(), metrics.clone());
        let read = CachedRead {
            node: node("hello"),
            ordinal: 1,
        };
        let g = cache.generation("k");
        cache
            .insert(&role("developer"), "k", Selector::Latest, &read, g)
            .await;
        assert!(
            cache
                .get(&role("developer"), "k", &Selector::Latest)
                .await
                .is_some()
        );
        assert!(
            cache
                .get(&role("admin"), "k", &Selector::Latest)
                .await
                .is_none()
        );
        cache
            .invalidate_latest("k", [role("developer"), role("admin")].iter())
            .await;
        assert!(
            cache
                .get(&role("developer"), "k", &Selector::Latest)
                .await
                .is_none()
        );
        assert_eq!(metrics.cache_hits.get(), 1);
        assert_eq!(metrics.cache_misses.get(), 2);
        // A reader that loaded before the write may not insert after it.
        cache
            .insert(&role("developer"), "k", Selector::Latest, &read, g)
            .await;
        assert!(
            cache
                .get(&role("developer"), "k", &Selector::Latest)
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn large_entries_are_compressed_and_read_back() {
        let cache = ContextCache::new(
            &CacheConfig {
                compress_above: 100,
                ..CacheConfig::default()
            },
            Metrics::new(),
        );
        let big = "decision ".repeat(1000);
        let read = CachedRead {
            node: node(&big),
            ordinal: 3,
        };
        cache
            .insert(&role("developer"), "k", Selector::Latest, &read, 0)
            .await;
        cache.maintain().await;
        assert!(cache.weighted_size() < 2000, "{}", cache.weighted_size());
        let back = cache
            .get(&role("developer"), "k", &Selector::Latest)
            .await
            .unwrap();
        assert_eq!(back.node.summary, big);
        assert_eq!(back.ordinal, 3);
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let metrics = Metrics::new();
        let cache = ContextCache::new(
            &CacheConfig {
                max_bytes: 64 * 1024,
                compress_above: usize::MAX,
                ..CacheConfig::default()
            },
            metrics.clone(),
        );
        let read = CachedRead {
            node: node(&"x".repeat(1024)),
            ordinal: 1,
        };
        for i in 0..500 {
            cache
                .insert(
                    &role("developer"),
                    &format!("k{i}"),
                    Selector::Latest,
                    &read,
                    0,
                )
                .await;
        }
        cache.maintain().await;
        assert!(cache.weighted_size() <= 64 * 1024);
        assert!(cache.entry_count() < 500);
    }
}
