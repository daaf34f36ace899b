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
//!
//! Each knob is one key, and the doc comment of its field is its only
//! description: the structs derive `schemars::JsonSchema`, which reads the
//! doc comments, and [`NodeConfig::to_commented_toml`] prints them above
//! the keys (`slurp node config`). So every field's doc comment says what
//! the key does and its unit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use slurp_protocol::ContextLimits;

use crate::cache::CacheConfig;
use crate::keys::KeysConfig;

/// HTTP API settings (`[api]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the HTTP API listens, an IP address and port; loopback by
    /// default.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; a larger one is answered
    /// 413.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503, a duration such as
    /// `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    /// Requests served at once, a count; more wait.
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
/// `ContextStoreOptions`. The sweeper and compactor intervals are
/// `store.sweep.interval_ms` and `store.compaction.interval_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StoreOptions {
    /// Most items in one batch request, list page, search page or link
    /// walk, a count.
    pub batch_size: usize,
    /// Items of a batch processed at once (the worker pool size), a count.
    pub max_concurrent_ops: usize,
    /// A single store operation that takes longer fails with a timeout, a
    /// duration such as `10s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub operation_timeout: Duration,
    /// Index contexts for search (true or false); without it the index is
    /// not built and searches are refused.
    pub indexing: bool,
    /// How often the `index-merge` worker merges the whole index into one
    /// segment, dropping deleted documents, a duration such as `10m`. The
    /// background merges between runs follow `index.merge`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub index_merge_interval: Duration,
    /// Hops followed at most when walking decision links, a count.
    pub max_link_hops: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            batch_size: 1000,
            max_concurrent_ops: 16,
            operation_timeout: Duration::from_secs(10),
            indexing: true,
            index_merge_interval: Duration::from_secs(600),
            max_link_hops: 8,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The configuration of a slurp node: defaults, then the file given by
/// `--config`, then `SLURP_*` variables (nested keys joined by `__`, as in
/// `SLURP_API__LISTEN`), then flags. Every key is optional; unknown keys
/// are errors. Durations are written like `500ms`, `60s`, `10m` or `6h`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its data (store, keys, tokens, audit log), a
    /// directory path.
    pub data_dir: PathBuf,
    /// A roles file (TOML), a path; not set means the built-in roles.
    pub roles_file: Option<PathBuf>,
    /// A stable name for this node, used as the writer id of versions; not
    /// set means one is generated and kept in the data directory.
    pub node_name: Option<String>,
    /// How log lines on stderr are written.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `slurp_node=debug`;
    /// `SLURP_LOG` overrides it.
    pub log_level: String,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Batches, timeouts and maintenance of the context store.
    pub store_options: StoreOptions,
    /// The in-memory cache of decrypted contexts.
    pub cache: CacheConfig,
    /// Limits on the fields of a context a client writes.
    pub limits: ContextLimits,
    /// The local store (`slurp-storage`).
    pub store: slurp_storage::StoreConfig,
    /// The full-text index (`slurp-index`).
    pub index: slurp_index::IndexConfig,
    /// How role keys are kept.
    pub keys: KeysConfig,
    /// Key rotation: the rewrap worker.
    pub rotation: crate::rotation::RotationConfig,
    /// The audit log writer.
    pub audit: crate::audit::AuditSettings,
    /// The libp2p swarm.
    pub net: crate::net::NetConfig,
    /// Membership, placement and quorums.
    pub cluster: crate::cluster::ClusterConfig,
    /// Anti-entropy and the collection of deleted addresses.
    pub replication: crate::replication::ReplicationConfig,
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
            rotation: crate::rotation::RotationConfig::default(),
            audit: crate::audit::AuditSettings::default(),
            net: crate::net::NetConfig::default(),
            cluster: crate::cluster::ClusterConfig::default(),
            replication: crate::replication::ReplicationConfig::default(),
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_join: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
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

    /// The config as TOML, without comments.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The config as TOML with every key and table preceded by `# ` lines
    /// from its field's doc comment (for `slurp node config`). The values
    /// are exactly those of [`NodeConfig::to_toml`], so it loads back to
    /// the same config; a key whose value is not set is shown commented
    /// out.
    pub fn to_commented_toml(&self) -> String {
        let text = self.to_toml();
        let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
            return text;
        };
        let schema = config_schema();
        let mut out = comment_lines(&schema);
        annotate(doc.as_table_mut(), &schema, !out.is_empty());
        out.push_str(&doc.to_string());
        out
    }
}

/// The JSON schema of [`NodeConfig`], every sub-schema inlined, so that
/// each property carries its own `description` (its doc comment).
fn config_schema() -> Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<NodeConfig>()
        .to_value()
}

/// The `# ` lines describing one schema: its description, then the values
/// an enum accepts (with their own descriptions, if any).
fn comment_lines(schema: &Value) -> String {
    let mut lines: Vec<String> = Vec::new();
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        // Rustdoc links read as plain code in a TOML comment.
        let d = d.replace("[`", "`").replace("`]", "`");
        lines.extend(d.lines().map(|l| l.trim_end().to_owned()));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(Value::to_string).collect();
        lines.push(format!("One of: {}.", values.join(", ")));
    }
    if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
        lines.push("One of:".to_owned());
        for v in variants {
            let name = v
                .get("const")
                .or_else(|| v.pointer("/enum/0"))
                .map(Value::to_string)
                .unwrap_or_default();
            let what = v.get("description").and_then(Value::as_str).unwrap_or("");
            lines.push(format!("  {name}: {}", what.replace('\n', " ")));
        }
    }
    lines
        .iter()
        .map(|l| {
            if l.is_empty() {
                "#\n".to_owned()
            } else {
                format!("# {l}\n")
            }
        })
        .collect()
}

/// Puts the comment of every key and sub-table of `table` before it, a
/// blank line between entries, recursively. Keys the schema has but the
/// table lacks (options not set) come first, commented out. `gap`: the
/// first entry needs a blank line before it.
fn annotate(table: &mut toml_edit::Table, schema: &Value, mut gap: bool) {
    let empty = serde_json::Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let blank = |gap: bool| if gap { "\n" } else { "" };
    let mut unset = String::new();
    for (name, prop) in props {
        if !table.contains_key(name) {
            unset.push_str(blank(gap));
            unset.push_str(&comment_lines(prop));
            unset.push_str(&format!("# {name} = (not set)\n"));
            gap = true;
        }
    }
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
    for key in keys {
        let prop = props.get(&key).unwrap_or(&Value::Null);
        let comment = comment_lines(prop);
        let unset = std::mem::take(&mut unset);
        if let Some(toml_edit::Item::Table(sub)) = table.get_mut(&key) {
            // A table header always follows a blank line.
            sub.decor_mut().set_prefix(format!("{unset}\n{comment}"));
            annotate(sub, prop, false);
        } else if let Some(mut k) = table.key_mut(&key) {
            k.leaf_decor_mut()
                .set_prefix(format!("{unset}{}{comment}", blank(gap)));
        }
        gap = true;
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

    fn load_text(text: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("slurp.toml");
        std::fs::write(&file, text).unwrap();
        NodeConfig::load(Some(&file), &ConfigOverrides::default())
    }

    /// A config unlike the defaults in every section, with the optional
    /// keys set.
    fn changed_config() -> NodeConfig {
        let mut c = NodeConfig {
            roles_file: Some(PathBuf::from("/etc/slurp/roles.toml")),
            node_name: Some("node \"a\"".into()),
            log_format: LogFormat::Json,
            ..NodeConfig::default()
        };
        c.api.request_timeout = Duration::from_millis(1500);
        c.store_options.index_merge_interval = Duration::from_secs(90);
        c.cache.enabled = false;
        c.limits.max_list = 7;
        c.store.sweep.interval_ms = 1234;
        c.store.compaction.min_free_ratio = 0.5;
        c.index.text_match = slurp_index::TextMatch::AnyWord;
        c.index.merge.level_log_size = 0.5;
        c.keys.unlock = crate::keys::UnlockMode::Passphrase;
        c.audit.linger = Duration::from_millis(7);
        c.net.bootstrap = vec![
            "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .parse()
                .unwrap(),
        ];
        c.net.search.max_response_bytes = 12345;
        c.cluster.zone = "eu-1".into();
        c
    }

    #[test]
    fn commented_toml_loads_back_to_the_same_config() {
        for cfg in [NodeConfig::default(), changed_config()] {
            let text = cfg.to_commented_toml();
            assert_eq!(load_text(&text).unwrap(), cfg, "{text}");
            // Deterministic.
            assert_eq!(cfg.to_commented_toml(), text);
        }
    }

    /// The `# ` lines of a decor prefix that say something.
    fn has_comment(prefix: Option<&toml_edit::RawString>) -> bool {
        prefix
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.lines().any(|l| l.starts_with("# ") && l.len() > 3))
    }

    /// Every key and table of `table`, dotted, with whether a non-empty
    /// comment precedes it.
    fn commented_keys(table: &toml_edit::Table, path: &str, out: &mut Vec<(String, bool)>) {
        for (key, item) in table.iter() {
            let name = format!("{path}{key}");
            match item {
                toml_edit::Item::Table(sub) => {
                    out.push((name.clone(), has_comment(sub.decor().prefix())));
                    commented_keys(sub, &format!("{name}."), out);
                }
                _ => {
                    let k = table.key(key).unwrap();
                    out.push((name, has_comment(k.leaf_decor().prefix())));
                }
            }
        }
    }

    #[test]
    fn every_key_of_the_commented_toml_has_a_comment() {
        let text = changed_config().to_commented_toml();
        let doc: toml_edit::DocumentMut = text.parse().unwrap();
        let mut keys = Vec::new();
        commented_keys(doc.as_table(), "", &mut keys);
        let bare: Vec<_> = keys.iter().filter(|(_, c)| !c).map(|(k, _)| k).collect();
        assert!(bare.is_empty(), "keys without a comment: {bare:?}\n{text}");
        // Every leaf of the plain TOML is there, and nothing else.
        let plain: toml_edit::DocumentMut = changed_config().to_toml().parse().unwrap();
        let mut plain_keys = Vec::new();
        commented_keys(plain.as_table(), "", &mut plain_keys);
        let names = |v: &[(String, bool)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(names(&keys), names(&plain_keys));
        assert!(keys.len() > 100, "{}", keys.len());
        // Units are spelled out, e.g. for a duration and a size.
        assert!(
            text.contains("# A request that takes longer is answered 503, a duration such as\n# `30s`.\nrequest_timeout = \"1s 500ms\""),
            "{text}"
        );
        // An option that is not set is shown, commented out.
        let text = NodeConfig::default().to_commented_toml();
        assert!(text.contains("\n# roles_file = (not set)\n"), "{text}");
        assert!(text.contains("  \"passphrase\": "), "{text}");
    }

    /// Every field of every config struct has a doc comment: they are the
    /// descriptions `slurp node config` prints.
    #[test]
    fn every_config_field_is_documented() {
        fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (name, prop) in props {
                let described = prop
                    .get("description")
                    .and_then(Value::as_str)
                    .is_some_and(|d| !d.trim().is_empty());
                if !described {
                    missing.push(format!("{path}{name}"));
                }
                walk(prop, &format!("{path}{name}."), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&config_schema(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a doc comment: {missing:?}"
        );
    }

    #[test]
    fn removed_duplicate_keys_are_unknown() {
        for (table, key, value) in [
            ("store_options", "cleanup_interval", "\"60s\""),
            ("store_options", "compaction_interval", "\"6h\""),
            ("limits", "max_txt", "1"),
        ] {
            let e = load_text(&format!("[{table}]\n{key} = {value}\n")).unwrap_err();
            let e = e.to_string();
            assert!(e.contains(key) && e.contains("unknown field"), "{e}");
        }
        // The keys that replace them.
        let c = load_text(
            "[store.sweep]\ninterval_ms = 5000\n[store.compaction]\ninterval_ms = 7000\n",
        )
        .unwrap();
        assert_eq!(c.store.sweep.interval_ms, 5000);
        assert_eq!(c.store.compaction.interval_ms, 7000);
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
