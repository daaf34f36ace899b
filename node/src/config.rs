//! Node configuration: defaults, then a TOML file, then `SLURP_*`
//! environment variables, then command-line flags.
//!
//! Every limit and interval of the node is a key here with a default that
//! works, so `slurp node run` needs no file at all. Nested keys map to
//! environment variables with `__`: `[api] listen` is `SLURP_API__LISTEN`.
//! `SLURP_NODE`, `SLURP_TOKEN`, `SLURP_CONFIG`, `SLURP_LOG` (a log filter)
//! and `SLURP_KEYSTORE_PASSPHRASE` belong to the client and the launcher and
//! are not config keys; neither are `SLURP_TESTNET_*`, `SLURP_DEMO_*` and
//! `SLURP_BENCH_*`, which the scripts in `testnet/` read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use slurp_protocol::ContextLimits;

use crate::cache::CacheConfig;
use crate::keys::KeysConfig;

/// HTTP API settings (`[api]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the HTTP API listens; loopback by default.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests served at once; more wait.
    pub max_concurrent_requests: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            max_body_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
        }
    }
}

/// Context store behaviour (`[store_options]`), after the original
/// `ContextStoreOptions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// Most items in one batch request.
    pub batch_size: usize,
    /// Items of a batch processed at once (the worker pool size).
    pub max_concurrent_ops: usize,
    /// A single operation that takes longer fails with a timeout.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Index contexts for search.
    pub indexing: bool,
    /// How often expired records are swept.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// How often the local store is compacted.
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Duration,
    /// How often the index merges segments.
    #[serde(with = "humantime_serde")]
    pub index_merge_interval: Duration,
    /// Hops followed at most when walking decision links.
    pub max_link_hops: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            batch_size: 1000,
            max_concurrent_ops: 16,
            operation_timeout: Duration::from_secs(10),
            indexing: true,
            cleanup_interval: Duration::from_secs(60),
            compaction_interval: Duration::from_secs(6 * 3600),
            index_merge_interval: Duration::from_secs(600),
            max_link_hops: 8,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The whole node configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its data (store, keys, tokens, audit log).
    pub data_dir: PathBuf,
    /// A roles file (TOML); empty means the built-in roles.
    pub roles_file: Option<PathBuf>,
    /// A stable name for this node, used as the writer id of versions;
    /// empty means one is generated and kept in the data directory.
    pub node_name: Option<String>,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `slurp_node=debug`.
    pub log_level: String,
    pub api: ApiConfig,
    pub store_options: StoreOptions,
    pub cache: CacheConfig,
    pub limits: ContextLimits,
    /// The local store (`slurp-storage`).
    pub store: slurp_storage::StoreConfig,
    /// The full-text index (`slurp-index`).
    pub index: slurp_index::IndexConfig,
    pub keys: KeysConfig,
    pub audit: crate::audit::AuditSettings,
    /// The libp2p swarm (`[net]`).
    pub net: crate::net::NetConfig,
    /// Membership, placement and quorums (`[cluster]`).
    pub cluster: crate::cluster::ClusterConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("slurp-data"),
            roles_file: None,
            node_name: None,
            log_format: LogFormat::Human,
            log_level: "info".into(),
            api: ApiConfig::default(),
            store_options: StoreOptions::default(),
            cache: CacheConfig::default(),
            limits: ContextLimits::default(),
            store: slurp_storage::StoreConfig::default(),
            index: slurp_index::IndexConfig::default(),
            keys: KeysConfig::default(),
            audit: crate::audit::AuditSettings::default(),
            net: crate::net::NetConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
        }
    }
}

/// Flags of `slurp node run` that override the config; `None` keeps it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<NetOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterOverrides>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct NetOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<Vec<libp2p::Multiaddr>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Vec<libp2p::Multiaddr>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_join: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// A config that could not be loaded: names the source and the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl NodeConfig {
    /// Defaults, then `file` (if given), then `SLURP_*` variables of the
    /// process environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError(format!(
                    "config file {} not found",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig
            .merge(
                Env::prefixed("SLURP_")
                    .ignore(&["NODE", "TOKEN", "CONFIG", "LOG", "KEYSTORE_PASSPHRASE"])
                    // Settings of the scripts in testnet/, not of a node.
                    .filter(|k| {
                        let k = k.as_str().to_ascii_lowercase();
                        !["testnet_", "demo_", "bench_"]
                            .iter()
                            .any(|p| k.starts_with(p))
                    })
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        fig.extract::<NodeConfig>()
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// The config as TOML (for `slurp node config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn defaults_file_env_flags_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slurp.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\n[api]\nlisten = \"127.0.0.1:9000\"\nmax_body_bytes = 1000\n[cache]\nttl = \"5m\"\n",
        )
        .unwrap();
        let cfg = NodeConfig::load(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/from/file"));
        assert_eq!(cfg.api.max_body_bytes, 1000);
        assert_eq!(cfg.cache.ttl, Duration::from_secs(300));
        assert_eq!(cfg.store_options, StoreOptions::default());

        // figment's Env reads the process environment: set the variables
        // for this test only (names unique to it).
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLURP_API__MAX_BODY_BYTES", "2000");
            jail.set_env("SLURP_NODE", "http://ignored");
            jail.set_env("SLURP_LOG", "debug");
            jail.set_env("SLURP_KEYSTORE_PASSPHRASE", "not a config key");
            let overrides = ConfigOverrides {
                data_dir: Some(PathBuf::from("/from/flag")),
                ..Default::default()
            };
            let cfg = NodeConfig::load(Some(&file), &overrides).unwrap();
            assert_eq!(cfg.api.max_body_bytes, 2000);
            assert_eq!(cfg.data_dir, PathBuf::from("/from/flag"));
            assert_eq!(cfg.api.listen.port(), 9000);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slurp.toml");
        std::fs::write(&file, "[api]\nlisen = \"x\"\n").unwrap();
        let e = NodeConfig::load(Some(&file), &ConfigOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        std::fs::write(&file, "[cache]\nttl = \"soon\"\n").unwrap();
        assert!(NodeConfig::load(Some(&file), &ConfigOverrides::default()).is_err());
        assert!(
            NodeConfig::load(
                Some(&dir.path().join("missing.toml")),
                &ConfigOverrides::default()
            )
            .is_err()
        );
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = NodeConfig::default().to_toml();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slurp.toml");
        std::fs::write(&file, text).unwrap();
        let cfg = NodeConfig::load(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(cfg, NodeConfig::default());
    }
}
