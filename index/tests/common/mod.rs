//! Builders shared by the integration tests.
#![allow(dead_code)]

use slurp_index::{ContextIndex, IndexConfig, IndexEntry, SearchQuery};
use slurp_protocol::{ContextNode, Hlc, RoleName, UcxlAddress, VersionId, WriterId};

pub fn role(s: &str) -> RoleName {
    RoleName::new(s).unwrap()
}

pub fn version(wall_ms: u64) -> VersionId {
    VersionId {
        hlc: Hlc {
            wall_ms,
            logical: 0,
        },
        writer: WriterId::new("node-a").unwrap(),
    }
}

/// A context at `path` with `summary`, readable by `readers`.
pub fn context(path: &str, summary: &str) -> ContextNode {
    let address = UcxlAddress::new("claude", "developer", "slurp", "main", path).unwrap();
    ContextNode::new(address, summary, vec![role("developer")])
}

pub fn entry(ctx: ContextNode, wall_ms: u64, readers: &[&str]) -> IndexEntry {
    IndexEntry::new(
        version(wall_ms),
        readers.iter().map(|r| role(r)).collect(),
        ctx,
    )
}

/// A config whose batch and interval never commit during a test, so tests
/// decide when writes become visible.
pub fn manual_config() -> IndexConfig {
    IndexConfig {
        commit_every_ops: 1_000_000,
        commit_interval_ms: 3_600_000,
        ..IndexConfig::default()
    }
}

pub fn open() -> ContextIndex {
    ContextIndex::open_in_memory(manual_config()).unwrap()
}

pub fn query(r: &str, text: &str) -> SearchQuery {
    SearchQuery::new(role(r), text)
}

pub fn keys(index: &ContextIndex, q: &SearchQuery) -> Vec<String> {
    index
        .search(q)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.key)
        .collect()
}

pub fn key_of(path: &str) -> String {
    UcxlAddress::new("claude", "developer", "slurp", "main", path)
        .unwrap()
        .key()
}

const WORDS: &[&str] = &[
    "cache",
    "token",
    "session",
    "login",
    "retry",
    "backoff",
    "shard",
    "lock",
    "queue",
    "replica",
    "merge",
    "segment",
    "index",
    "schema",
    "role",
    "policy",
    "audit",
    "key",
    "rotate",
    "envelope",
    "quorum",
    "partition",
    "gossip",
    "tombstone",
    "version",
    "clock",
    "writer",
    "reader",
    "budget",
    "latency",
];

/// A deterministic corpus: varied lengths and word mixes so BM25's length
/// normalisation and idf both matter.
pub fn corpus(n: usize, seed: u64) -> Vec<IndexEntry> {
    let mut state = seed;
    let mut next = move |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    (0..n)
        .map(|i| {
            let mut words = |k: usize| -> String {
                (0..k)
                    .map(|_| WORDS[next(WORDS.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let summary_len = 4 + (i * 7) % 13;
            let mut c = context(&format!("src/m{}/f{i}.rs", i % 7), &words(summary_len));
            c.purpose = words(3 + i % 5);
            c.insights = vec![words(5), words(2 + i % 9)];
            let readers: &[&str] = if i % 5 == 0 {
                &["admin", "architect"]
            } else {
                &["admin", "architect", "developer"]
            };
            entry(c, 1 + i as u64, readers)
        })
        .collect()
}

pub fn index_of(entries: &[IndexEntry]) -> ContextIndex {
    let index = open();
    for e in entries {
        index.upsert(e).unwrap();
    }
    index.commit().unwrap();
    index
}
