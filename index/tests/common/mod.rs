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
