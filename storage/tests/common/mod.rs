//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use slurp_protocol::version::TimeSource;
use slurp_protocol::{Hlc, RecordMeta, RoleName, VersionId, WriterId};
use slurp_storage::{CommitEvent, NewVersion, Store, StoreConfig, StoreObserver};

/// A clock tests move by hand.
#[derive(Clone, Default)]
pub struct ManualClock(pub Arc<AtomicU64>);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl TimeSource for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Counts commits and what they carried.
#[derive(Default)]
pub struct CountingObserver {
    pub commits: AtomicUsize,
    pub inserted: AtomicUsize,
    pub largest_batch: AtomicUsize,
    pub largest_insert: AtomicUsize,
}

impl StoreObserver for CountingObserver {
    fn on_commit(&self, e: &CommitEvent) {
        if e.ok {
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.inserted.fetch_add(e.inserted, Ordering::SeqCst);
            self.largest_batch.fetch_max(e.requests, Ordering::SeqCst);
            self.largest_insert.fetch_max(e.inserted, Ordering::SeqCst);
        }
    }
}

pub fn key(path: &str) -> String {
    format!("ucxl://agent:developer@proj:task/{path}")
}

pub fn vid(wall_ms: u64, logical: u32, writer: &str) -> VersionId {
    VersionId {
        hlc: Hlc { wall_ms, logical },
        writer: WriterId::new(writer).unwrap(),
    }
}

pub fn meta(path: &str, version: VersionId) -> RecordMeta {
    RecordMeta {
        key: key(path),
        path: path.to_string(),
        version,
        parent_version: None,
        readers: vec![RoleName::new("developer").unwrap()],
        influences: vec![],
        influenced_by: vec![],
        expires_at_ms: None,
        tombstone: false,
    }
}

/// A version of `path` whose envelope names it (so mix-ups show).
pub fn version(path: &str, v: VersionId) -> NewVersion {
    let envelope = format!("sealed:{path}:{v}").into_bytes();
    NewVersion {
        meta: meta(path, v),
        envelope,
    }
}

pub fn tombstone(path: &str, v: VersionId) -> NewVersion {
    let mut m = meta(path, v);
    m.tombstone = true;
    NewVersion {
        meta: m,
        envelope: vec![],
    }
}

pub fn open(dir: &tempfile::TempDir, clock: &ManualClock) -> Store {
    open_with(dir, clock, StoreConfig::default())
}

pub fn open_with(dir: &tempfile::TempDir, clock: &ManualClock, config: StoreConfig) -> Store {
    Store::builder(dir.path().join("store.redb"))
        .config(config)
        .time_source(Arc::new(clock.clone()))
        .open()
        .unwrap()
}
