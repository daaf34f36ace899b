//! The `slurp` binary: runs a node and, from the same executable, talks to
//! one as a client.
//!
//! Flags are parsed into plain argument structs here and resolved into the
//! library's settings (`NodeConfig`, the HTTP client) in one place each, so
//! help text, completions and behaviour come from the same table.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Value, json};
use slurp_node::client::{Client, ClientError, Endpoints, ErrorKind};
use slurp_node::config::{
    ApiOverrides, ClusterOverrides, ConfigOverrides, LogFormat, NetOverrides, NodeConfig,
};
use slurp_node::node::Node;
use slurp_node::store::BatchStoreItem;
use slurp_protocol::{ContextNode, RoleName, Temporal, UcxlAddress};

/// The command line: a node and a client of nodes.
#[derive(Parser, Debug)]
#[command(
    name = "slurp",
    version,
    about = "A peer-to-peer, encrypted store for codebase context.",
    after_help = "Client commands talk to --node (SLURP_NODE) with --token (SLURP_TOKEN).\n\
Exit codes: 0 success, 1 error, 2 usage, 3 not found or deleted, 4 forbidden or bad token,\n\
5 invalid input, 6 node unreachable or failing."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// The node to talk to; several, comma separated, are tried in turn
    /// when one cannot be connected to. `host:port` means `http://host:port`.
    #[arg(
        long,
        env = "SLURP_NODE",
        default_value = "http://127.0.0.1:7070",
        value_parser = Endpoints::parse,
        global = true
    )]
    node: Endpoints,
    /// API token (see `admin.token` in the node's data directory).
    #[arg(long, env = "SLURP_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Request timeout.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run or inspect a node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Store a new version of a context.
    Put(PutArgs),
    /// Read a context (the address's temporal part picks the version).
    Get {
        /// The address; its temporal part picks the version: `*^` the
        /// newest, `*~N` version N, `~~N` N versions back from the newest.
        address: String,
        /// Read quorum for this read (cluster; default from the node).
        #[arg(long)]
        r: Option<usize>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Delete a context (writes a tombstone; history keeps the versions).
    Delete {
        /// The address to delete.
        address: String,
        /// Write quorum for this delete (cluster; default from the node).
        #[arg(long)]
        w: Option<usize>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// List addresses matching a pattern (`any` segments, path prefix).
    List {
        /// A pattern: `any` in a segment matches every value, the path
        /// matches as a prefix (`ucxl://any:any@proj:any/*^/src`).
        pattern: String,
        /// Addresses per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this address (printed as `more:` under a full page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Every version of an address.
    History {
        /// The address (its temporal part is ignored).
        address: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Full-text search.
    Search(SearchArgs),
    /// Resolve a path through its parents' contexts.
    Resolve {
        /// The address whose path is resolved through its parents.
        address: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Contexts linked by decisions, within N hops.
    Links {
        /// The address to start from.
        address: String,
        /// Decision links to follow (at most `store_options.max_link_hops`).
        #[arg(long, default_value_t = 1)]
        hops: u32,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Bulk operations.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Write every readable context matching a pattern as JSON lines.
    Export {
        /// Which contexts: a pattern, as for `list`.
        #[arg(default_value = "ucxl://any:any@any:any/*^/")]
        pattern: String,
        /// Output file (standard output if absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The node's audit log: the last entries, or a check of its hash
    /// chain (admin).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Role keys the node knows, by fingerprint (admin).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Node status: store, index, cache, workers, batches.
    Status {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Cluster membership: status, join, remove, apply (admin).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Background workers; `--run NAME` triggers one now (admin).
    Workers {
        /// Run this worker now, then list them all.
        #[arg(long)]
        run: Option<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Health of the node's components.
    Health {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Who the token is.
    Whoami {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Drive a running node with a load mix and print throughput and latency.
    Bench(slurp_node::bench::BenchArgs),
    /// Run a seeded workload over several nodes' APIs, wait until they
    /// converge and check the history (fault-injection suite).
    Chaos(slurp_node::chaos::ChaosArgs),
    /// Print shell completions.
    Completions {
        /// The shell to print completions for.
        shell: clap_complete::Shell,
        /// Print JSON (`{"shell": ..., "script": ...}`) instead of the script.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Run a node in the foreground.
    Run(RunArgs),
    /// Print the effective configuration: every key with its meaning and
    /// unit, as TOML (or JSON with --json).
    Config {
        #[command(flatten)]
        run: RunArgs,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Print a new private-network key (for `--swarm-key` /
    /// `net.swarm_key`); every node of the cluster gets the same file.
    SwarmKey {
        /// Print JSON (`{"swarm_key": ..., "fingerprint": ...}`) instead of
        /// the key file.
        #[arg(long)]
        json: bool,
    },
    /// Print the node's peer id (creating its identity if needed), e.g. to
    /// build a `--bootstrap` address before the node starts.
    PeerId {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Layout version, members and the health of each, as this node sees them.
    Status {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Create the cluster on this node: its key, and a layout with this
    /// node as the only member.
    Init {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Create a one-time join token for a new node (printed once).
    Invite {
        /// Roles the new node may hold, comma-separated (default: all this
        /// node holds).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// How long the token is valid, e.g. `30m` (default:
        /// cluster.invite_ttl).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Invites this node issued: who used them, when they expire.
    Invites {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Stage a peer (the node itself if no peer id) to join the layout; a
    /// connected peer without a certificate is certified first.
    Join {
        /// The peer id (see `slurp cluster status`: others).
        peer: Option<String>,
        /// Failure domain of the joining node (default: the zone it reports).
        #[arg(long)]
        zone: Option<String>,
        /// Relative capacity for placement (default: the node's own).
        #[arg(long)]
        capacity: Option<u32>,
        /// Apply the staged changes at once.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Certify a member anew for exactly these roles: fewer roles revoke
    /// a grant (then rotate the roles it lost), more add to it.
    Grant {
        /// The member's peer id.
        peer: String,
        /// The roles it may hold from now on, comma-separated (empty:
        /// none).
        #[arg(long, value_delimiter = ',', required = true, num_args = 0..)]
        roles: Vec<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Stage a member's removal.
    Remove {
        /// The peer id of the member to remove.
        peer: String,
        /// Apply the staged changes at once.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Publish the staged changes as the next layout version.
    Apply {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Which partition an address is in and which members replicate it.
    Where {
        /// The address to place.
        address: String,
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "SLURP_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Roles file (TOML).
    #[arg(long)]
    roles: Option<PathBuf>,
    /// Node name (writer id of its versions).
    #[arg(long)]
    name: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Swarm listen address (multiaddr, repeatable), e.g.
    /// `/ip4/127.0.0.1/tcp/7100`.
    #[arg(long = "p2p-listen")]
    p2p_listen: Vec<libp2p::Multiaddr>,
    /// A peer to join through, `/ip4/.../tcp/PORT/p2p/PEER_ID` (repeatable).
    #[arg(long)]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Failure domain of this node for placement.
    #[arg(long)]
    zone: Option<String>,
    /// Relative capacity of this node for placement.
    #[arg(long)]
    capacity: Option<u32>,
    /// With --join-token: ask to be added to the layout at once (testnets).
    #[arg(long)]
    auto_join: bool,
    /// A join token from `slurp cluster invite`, redeemed at start when
    /// this node belongs to no cluster yet.
    #[arg(long, env = "SLURP_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// A private-network key file (`slurp node swarm-key` makes one): TCP
    /// connections complete only between nodes holding the same key.
    #[arg(long)]
    swarm_key: Option<PathBuf>,
}

impl RunArgs {
    fn load(&self) -> Result<NodeConfig> {
        let overrides = ConfigOverrides {
            data_dir: self.data.clone(),
            roles_file: self.roles.clone(),
            node_name: self.name.clone(),
            log_format: self.log_json.then_some(LogFormat::Json),
            api: self.listen.map(|l| ApiOverrides { listen: Some(l) }),
            net: (!self.p2p_listen.is_empty()
                || !self.bootstrap.is_empty()
                || self.swarm_key.is_some())
            .then(|| NetOverrides {
                listen: (!self.p2p_listen.is_empty()).then(|| self.p2p_listen.clone()),
                bootstrap: (!self.bootstrap.is_empty()).then(|| self.bootstrap.clone()),
                swarm_key: self.swarm_key.clone(),
            }),
            cluster: (self.zone.is_some()
                || self.capacity.is_some()
                || self.auto_join
                || self.join_token.is_some())
            .then(|| ClusterOverrides {
                zone: self.zone.clone(),
                capacity: self.capacity,
                auto_join: self.auto_join.then_some(true),
                join_token: self.join_token.clone(),
            }),
        };
        Ok(NodeConfig::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(Args, Debug)]
struct PutArgs {
    /// The address (`ucxl://agent:role@project:task/*^/path`).
    address: Option<String>,
    /// A JSON file with the context (or `-` for standard input).
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// One line on what the path is for (required for a new context).
    #[arg(long)]
    summary: Option<String>,
    /// Why the path exists: the problem it solves.
    #[arg(long)]
    purpose: Option<String>,
    /// A tag to search by (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A technology the path uses (repeatable).
    #[arg(long = "tech")]
    technologies: Vec<String>,
    /// Something worth knowing about the path (repeatable).
    #[arg(long = "insight")]
    insights: Vec<String>,
    /// Roles the context is for, comma separated (default: the address's role).
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// Why this version was written.
    #[arg(long)]
    reason: Option<String>,
    /// Expire after this many seconds.
    #[arg(long)]
    ttl: Option<u64>,
    /// Write quorum for this write (cluster; default from the node).
    #[arg(long)]
    w: Option<usize>,
    /// Update the latest version instead of replacing it: fields not given
    /// keep their values, --tag/--tech/--insight add to the lists, --roles
    /// replaces them. Compare-and-set: retried if another write lands first.
    #[arg(long, conflicts_with = "file")]
    merge: bool,
    #[command(flatten)]
    c: ClientArgs,
}

#[derive(Args, Debug)]
struct SearchArgs {
    /// Query text (words, "phrases", AND/OR/-term).
    text: Vec<String>,
    /// Only contexts with this tag (repeatable: all of them).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only contexts with this technology (repeatable: all of them).
    #[arg(long = "tech")]
    technologies: Vec<String>,
    /// Only paths under this prefix.
    #[arg(long)]
    path: Option<String>,
    /// Hits to show.
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Hits to skip (for the next page).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    #[command(flatten)]
    c: ClientArgs,
}

#[derive(Subcommand, Debug)]
enum BatchCommand {
    /// Import contexts from a JSON-lines file (one context per line).
    Import {
        /// A JSON-lines file: one context (or batch item) per line, see
        /// docs/node.md, "batch import".
        file: PathBuf,
        /// Items per request.
        #[arg(long, default_value_t = 500)]
        chunk: usize,
        /// Each request stores all of its items or none.
        #[arg(long)]
        atomic: bool,
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// The last entries of the audit log, oldest first.
    Tail {
        /// How many entries (at most 10000).
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Verify the whole hash chain and the head; exits 5 when it is broken.
    Verify {
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Every role key: role, epoch, fingerprint, held here, current.
    List {
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Make the next epoch of a role's key; stored records move onto it in
    /// the background (every rewrap re-encrypts with a fresh file key).
    Rotate {
        /// The role whose key to rotate.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Each role's current epoch, what this node holds, and how far the
    /// rewrap of stored records is.
    Status {
        #[command(flatten)]
        c: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token for a role; prints it once.
    Create {
        /// The role the token acts as.
        role: String,
        /// A note that tells tokens apart in `token list`.
        #[arg(long, default_value = "")]
        label: String,
        /// A network the token may be used from, in CIDR form (`127.0.0.0/8`,
        /// `10.1.0.0/16`, `fd00::/8`; a bare address is one host), checked
        /// against the address of the client's connection; repeat for
        /// several. None: any address.
        #[arg(long = "allow-from", value_name = "CIDR")]
        allow_from: Vec<String>,
        /// The token is valid this long (`1h`, `30m`, `7days`) from
        /// --not-before, or from now.
        #[arg(long, value_name = "DURATION", conflicts_with = "not_after")]
        valid_for: Option<String>,
        /// The token is not valid before this time: RFC 3339 in UTC
        /// (`2026-11-01T09:00:00Z`) or milliseconds since the Unix epoch.
        #[arg(long, value_name = "TIME")]
        not_before: Option<String>,
        /// The token is not valid after this time: RFC 3339 in UTC
        /// (`2026-11-01T17:00:00Z`) or milliseconds since the Unix epoch.
        #[arg(long, value_name = "TIME")]
        not_after: Option<String>,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id (see `token list`).
        id: String,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// List tokens (ids and roles; never secrets).
    List {
        #[command(flatten)]
        c: ClientArgs,
    },
}

/// The limits of a token in `token list`: `  from NET, NET  valid FROM to
/// TO`, or nothing for a token without limits.
fn token_limits_text(t: &Value) -> String {
    let mut out = String::new();
    let nets: Vec<&str> = t["allow_from"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    if !nets.is_empty() {
        out.push_str(&format!("  from {}", nets.join(", ")));
    }
    let time = |f: &str| t[f].as_u64().map(slurp_node::tokens::time_text);
    match (time("not_before_ms"), time("not_after_ms")) {
        (None, None) => {}
        (Some(b), None) => out.push_str(&format!("  valid from {b}")),
        (None, Some(a)) => out.push_str(&format!("  valid until {a}")),
        (Some(b), Some(a)) => out.push_str(&format!("  valid {b} to {a}")),
    }
    out
}

fn client(c: &ClientArgs) -> Result<Client> {
    Ok(Client::with_endpoints(&c.node, c.token.clone(), c.timeout)?)
}

/// A mistake in how a command was called (exit 2, shown with the usage of
/// the command) or in the input it was given (exit 5): found before
/// anything is sent to a node, so nothing was changed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{message}")]
    Usage {
        message: String,
        /// The subcommand path, e.g. `["batch", "import"]`.
        command: &'static [&'static str],
    },
    #[error("{0}")]
    Invalid(String),
}

fn usage(command: &'static [&'static str], message: impl Into<String>) -> anyhow::Error {
    CliError::Usage {
        message: message.into(),
        command,
    }
    .into()
}

fn invalid(message: impl Into<String>) -> anyhow::Error {
    CliError::Invalid(message.into()).into()
}

/// The usage line of a subcommand, as clap renders it.
fn usage_of(path: &[&str]) -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut c = cmd;
    for p in path {
        match c.find_subcommand(p) {
            Some(s) => c = s.clone(),
            None => break,
        }
    }
    c.render_usage().to_string()
}

/// Writes a line to standard output. A closed pipe is an ordinary end for
/// a Unix tool (`slurp ... | head -1`): it comes back as a `BrokenPipe`
/// error, which `main` turns into a quiet death by SIGPIPE.
fn out(text: &str) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        o.write_all(b"\n")?;
    }
    o.flush()
}

fn print(c: &ClientArgs, v: &Value, text: impl FnOnce(&Value) -> String) -> Result<()> {
    print_as(c.json, v, text)
}

fn print_as(json: bool, v: &Value, text: impl FnOnce(&Value) -> String) -> Result<()> {
    if json {
        out(&serde_json::to_string_pretty(v)?)?;
    } else {
        let t = text(v);
        if !t.is_empty() {
            out(&t)?;
        }
    }
    Ok(())
}

/// `1 hit`, `2 hits`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line per audit entry: seq, UTC time, decision, actor and role,
/// action, target, and the reason of a denial.
fn show_audit_tail(v: &Value) -> String {
    let mut lines: Vec<String> = v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let time = e["time_ms"]
                .as_u64()
                .map(|ms| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + Duration::from_millis(ms),
                    )
                    .to_string()
                })
                .unwrap_or_default();
            let mut line = format!(
                "{:>6} {} {:<5} {} ({}) {} {}",
                e["seq"].as_u64().unwrap_or(0),
                time,
                e["decision"].as_str().unwrap_or(""),
                e["actor"].as_str().unwrap_or(""),
                e["role"].as_str().unwrap_or("-"),
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or("")
            );
            if let Some(r) = e["reason"].as_str().filter(|r| !r.is_empty()) {
                line.push_str(&format!(": {r}"));
            }
            line
        })
        .collect();
    if let Some(err) = v["error"].as_str() {
        lines.push(format!("(the log is broken after this: {err})"));
    }
    lines.join("\n")
}

fn show_context(v: &Value) -> String {
    let ctx = &v["context"];
    let mut out = format!(
        "{}\n  version {} (#{})\n  summary: {}",
        v["address"].as_str().unwrap_or(""),
        v["version"].as_str().unwrap_or(""),
        v["ordinal"],
        ctx["summary"].as_str().unwrap_or("")
    );
    if let Some(p) = ctx["purpose"].as_str().filter(|p| !p.is_empty()) {
        out.push_str(&format!("\n  purpose: {p}"));
    }
    for (label, field) in [("tags", "tags"), ("technologies", "technologies")] {
        if let Some(a) = ctx[field].as_array().filter(|a| !a.is_empty()) {
            let items: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
            out.push_str(&format!("\n  {label}: {}", items.join(", ")));
        }
    }
    if let Some(a) = ctx["insights"].as_array() {
        for i in a.iter().filter_map(|x| x.as_str()) {
            out.push_str(&format!("\n  - {i}"));
        }
    }
    let roles: Vec<&str> = ctx["encrypted_for"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    out.push_str(&format!("\n  for: {}", roles.join(", ")));
    out
}

fn read_context_file(path: &PathBuf) -> Result<ContextNode> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{} is not a context: {e}", path.display())))
}

/// Adds the items of `more` that `list` lacks, keeping the order.
fn add_missing(list: &mut Vec<String>, more: Vec<String>) {
    for m in more {
        if !list.contains(&m) {
            list.push(m);
        }
    }
}

/// Applies the flags of `put` to a context: the scalar fields given
/// replace, the list items are added, `--roles` replaces the roles.
fn apply_put_flags(ctx: &mut ContextNode, a: &PutArgs) -> Result<()> {
    if let Some(s) = &a.summary {
        ctx.summary = s.clone();
    }
    if let Some(p) = &a.purpose {
        ctx.purpose = p.clone();
    }
    add_missing(&mut ctx.tags, a.tags.clone());
    add_missing(&mut ctx.technologies, a.technologies.clone());
    add_missing(&mut ctx.insights, a.insights.clone());
    if !a.roles.is_empty() {
        ctx.encrypted_for = a
            .roles
            .iter()
            .map(|r| RoleName::new(r.trim()))
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}

async fn put(a: PutArgs) -> Result<()> {
    const CMD: &[&str] = &["put"];
    let client = client(&a.c)?;
    let path = match a.w {
        Some(w) => format!("/v1/contexts?w={w}"),
        None => "/v1/contexts".to_string(),
    };
    // With --merge: read the latest version, apply the flags to it and
    // write it back only if it is still the latest (compare-and-set).
    let attempts = if a.merge { 5 } else { 1 };
    let mut last_conflict = None;
    for _ in 0..attempts {
        let (mut ctx, expect_latest) = match (&a.file, &a.address) {
            (Some(f), _) => {
                let mut ctx = read_context_file(f)?;
                if let Some(addr) = &a.address {
                    ctx.address = UcxlAddress::parse(addr)?;
                    if ctx.path.is_empty() {
                        ctx.path = ctx.address.path.clone();
                    }
                }
                (ctx, None)
            }
            (None, Some(addr)) => {
                let address = UcxlAddress::parse(addr)?;
                let current = if a.merge {
                    match client
                        .get(
                            "/v1/contexts",
                            &[(
                                "address",
                                address.with_temporal(Temporal::Latest).to_string(),
                            )],
                        )
                        .await
                    {
                        Ok(v) => Some(v),
                        Err(e) if e.kind == ErrorKind::NotFound => None,
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    None
                };
                match current {
                    Some(v) => {
                        let mut ctx: ContextNode = serde_json::from_value(v["context"].clone())
                            .context("the node answered a context this client cannot read")?;
                        ctx.address = address.clone();
                        ctx.version = None;
                        let version = v["version"].as_str().unwrap_or("").to_string();
                        (ctx, Some(version))
                    }
                    None => {
                        let summary = a.summary.clone().ok_or_else(|| {
                            usage(
                                CMD,
                                if a.merge {
                                    "there is no context to merge into at this address: --summary is required to create one"
                                } else {
                                    "--summary is required without --file"
                                },
                            )
                        })?;
                        let role = address.role.as_str().to_string();
                        let ctx = ContextNode::new(address, summary, vec![RoleName::new(role)?]);
                        (ctx, a.merge.then(String::new))
                    }
                }
            }
            (None, None) => {
                return Err(usage(
                    CMD,
                    "give an address with --summary, or --file (see `slurp put --help`)",
                ));
            }
        };
        apply_put_flags(&mut ctx, &a)?;
        let body = json!({
            "context": ctx,
            "change_reason": a.reason,
            "ttl_secs": a.ttl,
            "expect_latest": expect_latest,
        });
        match client.post(&path, &body).await {
            Ok(v) => {
                return print(&a.c, &v, |v| {
                    format!(
                        "stored {} version {}",
                        v["address"].as_str().unwrap_or(""),
                        v["version"].as_str().unwrap_or("")
                    )
                });
            }
            Err(e) if a.merge && e.code == "conflict" => last_conflict = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_conflict
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("the merge did not complete"))
        .context(format!(
            "other writes kept landing first; gave up after {attempts} attempts"
        )))
}

async fn search(a: SearchArgs) -> Result<()> {
    let body = json!({
        "text": a.text.join(" "),
        "tags": a.tags,
        "technologies": a.technologies,
        "path_prefix": a.path,
        "limit": a.limit,
        "offset": a.offset,
    });
    let v = client(&a.c)?.post("/v1/search", &body).await?;
    let offset = a.offset;
    print(&a.c, &v, |v| {
        let nodes = v["nodes"].as_u64().unwrap_or(1);
        let total = v["total_hits"].as_u64().unwrap_or(0);
        let shown = v["hits"].as_array().map(|h| h.len()).unwrap_or(0) as u64;
        let mut out = format!(
            "{} ({} µs{})\n",
            plural(total, "hit", "hits"),
            v["took_micros"],
            if nodes > 1 {
                format!(", {nodes} nodes")
            } else {
                String::new()
            }
        );
        if shown > 0 && (offset as u64 > 0 || shown < total) {
            let first = offset as u64 + 1;
            let last = offset as u64 + shown;
            out.push_str(&format!("showing {first}-{last} of {total}"));
            if last < total {
                out.push_str(&format!(" (next: --offset {last})"));
            }
            out.push('\n');
        }
        if v["partial"].as_bool() == Some(true) {
            let missing = v["missing_partitions"]
                .as_array()
                .map(|m| m.len())
                .unwrap_or(0);
            out.push_str(&format!(
                "warning: partial results, {missing} partitions had no reachable replica\n"
            ));
        }
        for w in v["warnings"].as_array().into_iter().flatten() {
            out.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("")));
        }
        for h in v["hits"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:>6.2}  {}\n        {}\n",
                h["score"].as_f64().unwrap_or(0.0),
                h["address"].as_str().unwrap_or(""),
                h["context"]["summary"].as_str().unwrap_or("")
            ));
        }
        for (label, key) in [("tags", "tags"), ("technologies", "technologies")] {
            let f: Vec<String> = v["facets"][key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{} ({})", f["value"].as_str().unwrap_or(""), f["count"]))
                .collect();
            if !f.is_empty() {
                out.push_str(&format!("{label}: {}\n", f.join(", ")));
            }
        }
        out.trim_end().to_string()
    })?;
    Ok(())
}

/// Reads an import file: one context per line, or one batch item
/// (`{"context": ..., "roles": [...], "change_reason": ..., "ttl_secs": N}`)
/// per line; blank lines are skipped. Every line is checked before
/// anything is sent, and every bad line is named.
fn read_import_file(file: &PathBuf) -> Result<Vec<(usize, BatchStoreItem)>> {
    let f = std::fs::File::open(file)
        .map_err(|e| invalid(format!("cannot read {}: {e}", file.display())))?;
    let mut items = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| invalid(format!("{}:{}: {e}", file.display(), n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(&line).and_then(|v| {
            if v.get("context").is_some() {
                serde_json::from_value::<BatchStoreItem>(v)
            } else {
                serde_json::from_value::<ContextNode>(v).map(|context| BatchStoreItem {
                    context,
                    roles: None,
                    change_reason: None,
                    ttl_secs: None,
                })
            }
        });
        match parsed {
            Ok(item) => items.push((n + 1, item)),
            Err(e) => {
                // serde_json counts lines within the one line it was given.
                let what = e.to_string();
                let what = what.split(" at line ").next().unwrap_or(&what).to_string();
                let col = if e.column() > 0 {
                    format!(" (column {})", e.column())
                } else {
                    String::new()
                };
                bad.push(format!("{}:{}: {what}{col}", file.display(), n + 1));
            }
        }
    }
    if !bad.is_empty() {
        let more = bad.len().saturating_sub(20);
        let mut msg = format!(
            "{} of {} is not a context (nothing was imported):\n  {}",
            plural(bad.len() as u64, "line", "lines"),
            file.display(),
            bad.iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
        if more > 0 {
            msg.push_str(&format!("\n  ... and {more} more"));
        }
        return Err(invalid(msg));
    }
    Ok(items)
}

async fn import(file: PathBuf, chunk: usize, atomic: bool, c: ClientArgs) -> Result<()> {
    let items = read_import_file(&file)?;
    let client = client(&c)?;
    let bar = indicatif::ProgressBar::new(items.len() as u64);
    if c.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {rate} eta {eta}")
            .map(|s| {
                s.with_key(
                    "rate",
                    |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", st.per_sec());
                    },
                )
            })
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut errors = Vec::new();
    for part in items.chunks(chunk.max(1)) {
        let body =
            json!({"items": part.iter().map(|(_, i)| i).collect::<Vec<_>>(), "atomic": atomic});
        let v = client.post("/v1/batch/put", &body).await?;
        ok += v["succeeded"].as_u64().unwrap_or(0) as usize;
        failed += v["failed"].as_u64().unwrap_or(0) as usize;
        for r in v["results"].as_array().into_iter().flatten() {
            if let Some(e) = r.get("error") {
                let idx = r["index"].as_u64().unwrap_or(0) as usize;
                let line = part.get(idx).map(|(n, _)| *n).unwrap_or(0);
                errors.push(json!({"line": line, "error": e}));
            }
        }
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    let v = json!({"stored": ok, "failed": failed, "errors": errors});
    let file_name = file.display().to_string();
    print(&c, &v, |v| {
        let mut out = format!(
            "imported {}, {} failed",
            plural(ok as u64, "context", "contexts"),
            v["failed"]
        );
        for e in v["errors"].as_array().into_iter().flatten().take(20) {
            out.push_str(&format!(
                "\n  {file_name}:{}: {}",
                e["line"],
                e["error"]["message"].as_str().unwrap_or("")
            ));
        }
        out
    })?;
    if failed > 0 {
        return Err(invalid(format!(
            "{} of {} could not be stored",
            plural(failed as u64, "line", "lines"),
            file.display()
        )));
    }
    Ok(())
}

async fn export(pattern: String, output: Option<PathBuf>, c: ClientArgs) -> Result<()> {
    let client = client(&c)?;
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    if output.is_none() || c.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut after: Option<String> = None;
    let mut n = 0u64;
    loop {
        let mut q = vec![("pattern", pattern.clone()), ("limit", "500".to_string())];
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let page = client.get("/v1/list", &q).await?;
        let addrs: Vec<String> = page["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["address"].as_str().map(str::to_string))
            .collect();
        if !addrs.is_empty() {
            let got = client
                .post("/v1/batch/get", &json!({"addresses": addrs}))
                .await?;
            for r in got["results"].as_array().into_iter().flatten() {
                if let Some(ok) = r.get("ok") {
                    let mut ctx = ok["context"].clone();
                    if let Some(o) = ctx.as_object_mut() {
                        o.remove("version");
                    }
                    writeln!(out, "{}", serde_json::to_string(&ctx)?)?;
                    n += 1;
                    bar.set_message(format!("{n} contexts"));
                    bar.tick();
                }
            }
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    if let Some(p) = &output {
        let v = json!({"exported": n, "file": p.display().to_string()});
        print(&c, &v, |_| {
            format!(
                "exported {} to {}",
                plural(n, "context", "contexts"),
                p.display()
            )
        })?;
    }
    Ok(())
}

async fn run_node(args: RunArgs) -> Result<()> {
    let config = args.load()?;
    init_logging(&config);
    let listen = config.api.listen;
    // The API's port first: a node that cannot serve must not have made a
    // data directory, keys and tokens on its way to failing.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (the API address)"))?;
    let fresh = FreshDataDir::note(&config.data_dir);
    let node = match Node::open(config).await {
        Ok(node) => Arc::new(node),
        Err(e) => {
            fresh.undo();
            return Err(e);
        }
    };
    let bound = listener.local_addr()?;
    tracing::info!(
        listen = %bound,
        data = %node.data_dir().display(),
        writer = %node.store.writer(),
        "slurp node running"
    );
    // The node keeps running if nobody reads its standard output.
    let _ = out(&format!("slurp node listening on http://{bound}"));
    if let Some(p) = &node.admin_token_file {
        let _ = out(&format!("admin token written to {}", p.display()));
    }
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    };
    slurp_node::api::serve(node.clone(), listener, shutdown).await?;
    tracing::info!("shutting down");
    match Arc::try_unwrap(node) {
        Ok(node) => node.close().await,
        Err(node) => node.shutdown(),
    }
    Ok(())
}

/// A data directory this start is about to fill: absent or empty before
/// it. If the node fails to open, what the attempt wrote is removed, so a
/// failed start leaves no half-made node (keys, tokens) behind.
struct FreshDataDir {
    dir: PathBuf,
    existed: bool,
    fresh: bool,
}

impl FreshDataDir {
    fn note(dir: &std::path::Path) -> Self {
        let existed = dir.exists();
        let fresh = !existed
            || std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        FreshDataDir {
            dir: dir.to_path_buf(),
            existed,
            fresh,
        }
    }

    fn undo(&self) {
        if !self.fresh {
            return;
        }
        let r = if self.existed {
            std::fs::read_dir(&self.dir).and_then(|entries| {
                for e in entries {
                    let p = e?.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(&p)?;
                    } else {
                        std::fs::remove_file(&p)?;
                    }
                }
                Ok(())
            })
        } else {
            std::fs::remove_dir_all(&self.dir)
        };
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove what the failed start wrote");
        }
    }
}

fn init_logging(config: &NodeConfig) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLURP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    // Colour codes only on a terminal: a log file redirected from stderr
    // stays plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node(NodeCommand::Run(args)) => run_node(args).await,
        Command::Node(NodeCommand::Config { run, json }) => {
            let config = run.load()?;
            if json {
                out(&serde_json::to_string_pretty(&config)?)?;
            } else {
                out(&config.to_commented_toml())?;
            }
            Ok(())
        }
        Command::Node(NodeCommand::SwarmKey { json }) => {
            let mut raw = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
            let key = libp2p::pnet::PreSharedKey::new(raw);
            let text = key.to_string();
            print_as(
                json,
                &json!({ "swarm_key": text, "fingerprint": key.fingerprint().to_string() }),
                |_| text.clone(),
            )
        }
        Command::Node(NodeCommand::PeerId { data, json }) => {
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            let key = slurp_node::net::identity::load_or_create(&data)?;
            let peer = key.public().to_peer_id().to_string();
            print_as(json, &json!({ "peer_id": peer }), |_| peer.clone())
        }
        Command::Cluster(cmd) => cluster_command(cmd).await,
        Command::Put(a) => put(a).await,
        Command::Get { address, r, c } => {
            UcxlAddress::parse(&address)?;
            let mut q = vec![("address", address)];
            if let Some(r) = r {
                q.push(("r", r.to_string()));
            }
            let v = client(&c)?.get("/v1/contexts", &q).await?;
            print(&c, &v, show_context)?;
            Ok(())
        }
        Command::Delete { address, w, c } => {
            let mut q = vec![("address", address)];
            if let Some(w) = w {
                q.push(("w", w.to_string()));
            }
            let v = client(&c)?.delete("/v1/contexts", &q).await?;
            print(&c, &v, |v| {
                format!(
                    "deleted (tombstone {})",
                    v["version"].as_str().unwrap_or("")
                )
            })?;
            Ok(())
        }
        Command::List {
            pattern,
            limit,
            after,
            c,
        } => {
            let mut q = vec![("pattern", pattern), ("limit", limit.to_string())];
            if let Some(a) = after {
                q.push(("after", a));
            }
            let v = client(&c)?.get("/v1/list", &q).await?;
            print(&c, &v, |v| {
                let mut out: Vec<String> = v["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "{}  ({})",
                            e["address"].as_str().unwrap_or(""),
                            plural(e["versions"].as_u64().unwrap_or(0), "version", "versions")
                        )
                    })
                    .collect();
                if let Some(n) = v["next"].as_str() {
                    out.push(format!("more: --after '{n}'"));
                }
                out.join("\n")
            })?;
            Ok(())
        }
        Command::History { address, c } => {
            let v = client(&c)?
                .get("/v1/contexts/history", &[("address", address)])
                .await?;
            print(&c, &v, |v| {
                v["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        format!(
                            "#{:<4} {}{}",
                            e["ordinal"],
                            e["version"].as_str().unwrap_or(""),
                            if e["tombstone"].as_bool() == Some(true) {
                                "  (deleted)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            Ok(())
        }
        Command::Search(a) => search(a).await,
        Command::Resolve { address, c } => {
            let v = client(&c)?
                .get("/v1/resolve", &[("address", address)])
                .await?;
            print(&c, &v, |v| {
                let mut out = format!(
                    "{}\n  summary: {}\n    from {}",
                    v["address"].as_str().unwrap_or(""),
                    v["summary"].as_str().unwrap_or(""),
                    v["summary_source"].as_str().unwrap_or("")
                );
                if let Some(p) = v["purpose"].as_str().filter(|p| !p.is_empty()) {
                    out.push_str(&format!(
                        "\n  purpose: {p}\n    from {}",
                        v["purpose_source"].as_str().unwrap_or("")
                    ));
                }
                for field in ["technologies", "tags", "insights"] {
                    for f in v[field].as_array().into_iter().flatten() {
                        out.push_str(&format!(
                            "\n  {field}: {}  (from {})",
                            f["value"].as_str().unwrap_or(""),
                            f["source"].as_str().unwrap_or("")
                        ));
                    }
                }
                out
            })?;
            Ok(())
        }
        Command::Links { address, hops, c } => {
            let v = client(&c)?
                .get(
                    "/v1/links",
                    &[("address", address), ("hops", hops.to_string())],
                )
                .await?;
            print(&c, &v, |v| {
                let mut out: Vec<String> = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| {
                        format!(
                            "[{}] {}  {}",
                            n["hops"],
                            n["address"].as_str().unwrap_or(""),
                            n["summary"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                for e in v["edges"].as_array().into_iter().flatten() {
                    out.push(format!(
                        "{} -> {}",
                        e["from"].as_str().unwrap_or(""),
                        e["to"].as_str().unwrap_or("")
                    ));
                }
                out.join("\n")
            })?;
            Ok(())
        }
        Command::Batch(BatchCommand::Import {
            file,
            chunk,
            atomic,
            c,
        }) => import(file, chunk, atomic, c).await,
        Command::Export { pattern, output, c } => export(pattern, output, c).await,
        Command::Token(TokenCommand::Create {
            role,
            label,
            allow_from,
            valid_for,
            not_before,
            not_after,
            c,
        }) => {
            let mut body = json!({"role": role, "label": label, "allow_from": allow_from});
            for (field, value) in [
                ("valid_for", valid_for),
                ("not_before", not_before),
                ("not_after", not_after),
            ] {
                if let Some(v) = value {
                    body[field] = json!(v);
                }
            }
            let v = client(&c)?.post("/v1/tokens", &body).await?;
            print(&c, &v, |v| v["token"].as_str().unwrap_or("").to_string())?;
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id, c }) => {
            let v = client(&c)?.delete(&format!("/v1/tokens/{id}"), &[]).await?;
            print(&c, &v, |v| {
                format!("revoked {}", v["id"].as_str().unwrap_or(""))
            })?;
            Ok(())
        }
        Command::Token(TokenCommand::List { c }) => {
            let v = client(&c)?.get("/v1/tokens", &[]).await?;
            print(&c, &v, |v| {
                v["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        format!(
                            "{}  {:<10} {}{}{}",
                            t["id"].as_str().unwrap_or(""),
                            t["role"].as_str().unwrap_or(""),
                            t["label"].as_str().unwrap_or(""),
                            token_limits_text(t),
                            if t["revoked_at_ms"].is_null() {
                                ""
                            } else {
                                "  (revoked)"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            Ok(())
        }
        Command::Status { c } => {
            let v = client(&c)?.get("/v1/status", &[]).await?;
            print(&c, &v, |v| {
                let mut out = format!(
                    "slurp {} writer {}\ncluster: {}\nstore: {} keys, {} versions, {} bytes\nindex: {} docs, {} segments\ncache: {} entries, {} bytes\nworkers:",
                    v["version"].as_str().unwrap_or(""),
                    v["writer_id"].as_str().unwrap_or(""),
                    match v["cluster"]["layout_version"].as_u64() {
                        None | Some(0) => "no layout (alone)".to_string(),
                        Some(l) => format!(
                            "layout v{l}, {} members{}",
                            v["cluster"]["members"],
                            if v["cluster"]["member"] == true {
                                ""
                            } else {
                                ", not one of them"
                            }
                        ),
                    },
                    v["store"]["keys"],
                    v["store"]["versions"],
                    v["store"]["file_bytes"],
                    v["index"]["docs"],
                    v["index"]["segments"],
                    v["cache"]["entries"],
                    v["cache"]["bytes"],
                );
                out.push_str(&workers_text(&v["workers"]));
                for b in v["batches"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\nbatch {} {}: {}/{} done, {} failed{}",
                        b["id"],
                        b["kind"].as_str().unwrap_or(""),
                        b["done"],
                        b["total"],
                        b["failed"],
                        if b["finished"].as_bool() == Some(true) {
                            ""
                        } else {
                            " (running)"
                        }
                    ));
                }
                out
            })?;
            Ok(())
        }
        Command::Workers { run, c } => {
            let client = client(&c)?;
            if let Some(name) = run {
                client
                    .post(&format!("/v1/workers/{name}/run"), &json!({}))
                    .await?;
            }
            let v = client.get("/v1/workers", &[]).await?;
            print(&c, &v, |v| {
                workers_text(&v["workers"])
                    .trim_start_matches('\n')
                    .to_string()
            })?;
            Ok(())
        }
        Command::Health { c } => {
            let v = client(&c)?.get("/health", &[]).await?;
            print(&c, &v, |v| {
                let mut out = format!("ready: {}", v["ready"]);
                if let Some(m) = v["components"].as_object() {
                    for (k, c) in m {
                        out.push_str(&format!(
                            "\n  {k:<6} {}  {}",
                            if c["ok"].as_bool() == Some(true) {
                                "ok "
                            } else {
                                "BAD"
                            },
                            c["detail"].as_str().unwrap_or("")
                        ));
                    }
                }
                out
            })?;
            Ok(())
        }
        Command::Audit(AuditCommand::Tail { limit, c }) => {
            let v = client(&c)?
                .get("/v1/audit", &[("limit", limit.to_string())])
                .await?;
            print(&c, &v, show_audit_tail)?;
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { c }) => {
            let v = client(&c)?.post("/v1/audit/verify", &json!({})).await?;
            let anchors = v["anchors"].as_array().cloned().unwrap_or_default();
            print(&c, &v, |v| {
                if v["ok"].as_bool() == Some(true) {
                    format!(
                        "audit log ok: {} entries, head {}; checked against the heads {} other members hold",
                        v["entries"],
                        v["head"].as_str().unwrap_or(""),
                        anchors.len()
                    )
                } else {
                    String::new()
                }
            })?;
            if v["ok"].as_bool() != Some(true) {
                let mut why = v["error"].as_str().map(str::to_string);
                for a in &anchors {
                    if a["ok"] != true {
                        why.get_or_insert_with(|| {
                            format!(
                                "member {} holds head {} of this log: {}",
                                a["member"].as_str().unwrap_or("?"),
                                a["head"].as_str().unwrap_or("?"),
                                a["error"].as_str().unwrap_or("unknown error")
                            )
                        });
                    }
                }
                return Err(invalid(format!(
                    "the audit log is broken: {}",
                    why.unwrap_or_else(|| "unknown error".into())
                )));
            }
            Ok(())
        }
        Command::Keys(KeysCommand::List { c }) => {
            let v = client(&c)?.get("/v1/keys", &[]).await?;
            print(&c, &v, |v| {
                v["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        format!(
                            "{:<12} epoch {:<3} {}  {}{}",
                            k["role"].as_str().unwrap_or(""),
                            k["epoch"].as_u64().unwrap_or(0),
                            k["fingerprint"].as_str().unwrap_or(""),
                            if k["held"].as_bool() == Some(true) {
                                "held"
                            } else {
                                "public only"
                            },
                            if k["current"].as_bool() == Some(true) {
                                ", current"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate { role, c }) => {
            slurp_protocol::RoleName::new(role.as_str())
                .map_err(|e| usage(&["keys", "rotate"], format!("--role {role}: {e}")))?;
            let v = client(&c)?
                .post("/v1/keys/rotate", &json!({"role": role}))
                .await?;
            print(&c, &v, |v| {
                format!(
                    "role {} now at epoch {} (key {}); new records are sealed to it, stored ones move in the background (slurp keys status)",
                    v["role"].as_str().unwrap_or(""),
                    v["epoch"],
                    v["fingerprint"].as_str().unwrap_or("")
                )
            })?;
            Ok(())
        }
        Command::Keys(KeysCommand::Status { c }) => {
            let v = client(&c)?.get("/v1/keys/status", &[]).await?;
            print(&c, &v, |v| {
                let mut out = format!(
                    "key directory v{}{}",
                    v["directory_version"],
                    if v["keys_held"] == true {
                        ""
                    } else {
                        " (granted keys still arriving)"
                    }
                );
                for r in v["roles"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n{:<12} epoch {:<3} {}  held here: {}",
                        r["role"].as_str().unwrap_or(""),
                        r["current_epoch"],
                        r["current_fingerprint"].as_str().unwrap_or("-"),
                        r["held_epochs"]
                    ));
                }
                out.push_str(&format!(
                    "\nrewrap: {} stored versions left on old epochs; last pass: {}",
                    v["rewrap"]["pending"],
                    v["rewrap"]["worker"]["last_note"]
                        .as_str()
                        .unwrap_or("none yet")
                ));
                out
            })?;
            Ok(())
        }
        Command::Whoami { c } => {
            let v = client(&c)?.get("/v1/whoami", &[]).await?;
            print(&c, &v, |v| {
                format!(
                    "token {} role {}",
                    v["token_id"].as_str().unwrap_or(""),
                    v["role"].as_str().unwrap_or("")
                )
            })?;
            Ok(())
        }
        Command::Bench(args) => slurp_node::bench::run(args).await,
        Command::Chaos(args) => slurp_node::chaos::run(args).await,
        Command::Completions { shell, json } => {
            // Generated into memory: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "slurp", &mut script);
            let script = String::from_utf8_lossy(&script).into_owned();
            if json {
                out(&serde_json::to_string_pretty(
                    &json!({"shell": shell.to_string(), "script": script}),
                )?)?;
            } else {
                std::io::stdout().lock().write_all(script.as_bytes())?;
            }
            Ok(())
        }
    }
}

/// The workers as an aligned table (one leading newline per row, so it
/// follows a heading), with each worker's last note or error under it.
fn workers_text(workers: &Value) -> String {
    let rows: Vec<[String; 6]> = workers
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let next = match w["next_run_ms"].as_u64() {
                Some(at) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    let secs = at.saturating_sub(now).div_ceil(1000);
                    humantime::format_duration(Duration::from_secs(secs)).to_string()
                }
                None => "-".into(),
            };
            [
                w["name"].as_str().unwrap_or("").to_string(),
                w["state"].as_str().unwrap_or("").to_string(),
                w["runs"].to_string(),
                w["items_total"].to_string(),
                w["errors"].to_string(),
                next,
            ]
        })
        .collect();
    let header = ["NAME", "STATE", "RUNS", "ITEMS", "ERRORS", "NEXT RUN IN"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        format!(
            "\n  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
        )
        .trim_end()
        .to_string()
    };
    let mut out = line(header);
    for (r, w) in rows.iter().zip(workers.as_array().into_iter().flatten()) {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        if let Some(e) = w["last_error"].as_str() {
            out.push_str(&format!("\n      last error: {e}"));
        }
    }
    out
}

fn main() -> ExitCode {
    // Decided from the raw arguments so that errors of parsing itself can
    // be JSON too.
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e, json),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = anyhow::Error::from(e).context("cannot start the runtime");
            return ExitCode::from(report(&e, json));
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(report(&e, json)),
    }
}

/// The error code (as in the API's error bodies) and exit status of an
/// error.
fn classify(e: &anyhow::Error) -> (String, u8) {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            return match c {
                CliError::Usage { .. } => ("usage".into(), 2),
                CliError::Invalid(_) => ("invalid_input".into(), 5),
            };
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return (c.code.clone(), c.kind.exit_code() as u8);
        }
        if cause
            .downcast_ref::<slurp_protocol::AddressError>()
            .is_some()
        {
            return ("invalid_address".into(), 5);
        }
        if cause.downcast_ref::<slurp_protocol::RoleError>().is_some() {
            return ("invalid_role".into(), 5);
        }
        if cause
            .downcast_ref::<slurp_node::config::ConfigError>()
            .is_some()
        {
            return ("config".into(), 5);
        }
    }
    ("error".into(), 1)
}

/// Prints an error (as JSON on stderr under `--json`) and returns the exit
/// status. A closed standard output ends the process here, quietly.
fn report(e: &anyhow::Error, json: bool) -> u8 {
    if e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) {
        die_of_sigpipe();
    }
    let (code, exit) = classify(e);
    let usage = e.chain().find_map(|c| match c.downcast_ref::<CliError>() {
        Some(CliError::Usage { command, .. }) => Some(usage_of(command)),
        _ => None,
    });
    let message = format!("{e:#}");
    let text = if json {
        let mut body = json!({"code": code, "message": message, "exit_code": exit});
        if let Some(u) = &usage {
            body["usage"] = json!(u);
        }
        json!({ "error": body }).to_string()
    } else {
        match &usage {
            Some(u) => format!("error: {message}\n\n{u}\n\nFor more information, try '--help'."),
            None => format!("error: {message}"),
        }
    };
    let _ = writeln!(std::io::stderr(), "{text}");
    exit
}

/// Help and version go to standard output (exit 0); parse errors are usage
/// errors (exit 2), as JSON under `--json`.
fn clap_exit(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
        if let Err(io) = out(&e.render().to_string())
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            die_of_sigpipe();
        }
        return ExitCode::SUCCESS;
    }
    let code = e.exit_code() as u8;
    if json {
        let rendered = e.render().to_string();
        let message = rendered
            .split("\n\n")
            .next()
            .unwrap_or("")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        let usage = rendered
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or("")
            .to_string();
        let body = json!({"error": {"code": "usage", "message": message, "usage": usage, "exit_code": code}});
        let _ = writeln!(std::io::stderr(), "{body}");
    } else {
        let _ = e.print();
    }
    ExitCode::from(code)
}

/// Ends the process the way a Unix tool ends when its reader has gone:
/// killed by SIGPIPE (status 141 in a shell), with nothing printed.
///
/// Rust ignores SIGPIPE so that a closed socket is an error rather than a
/// death; the CLI keeps that (its HTTP client writes to sockets) and only
/// re-raises the signal once standard output is known to be closed.
fn die_of_sigpipe() -> ! {
    // SAFETY: restoring a signal's default disposition and raising it are
    // plain libc calls with no memory effects; nothing runs afterwards.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

async fn cluster_command(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Status { c } => {
            let v = client(&c)?.get("/v1/cluster", &[]).await?;
            print(&c, &v, cluster_text)?;
        }
        ClusterCommand::Init { c } => {
            let v = client(&c)?.post("/v1/cluster/init", &json!({})).await?;
            print(&c, &v, |v| {
                format!(
                    "cluster {} created: layout version {} with this node; add nodes with `slurp cluster invite`",
                    v["cluster"].as_str().unwrap_or(""),
                    v["layout_version"]
                )
            })?;
        }
        ClusterCommand::Invite { roles, ttl, c } => {
            if let Some(t) = &ttl {
                humantime::parse_duration(t)
                    .map_err(|e| usage(&["cluster", "invite"], format!("--ttl {t}: {e}")))?;
            }
            let body = json!({
                "roles": (!roles.is_empty()).then_some(roles),
                "ttl": ttl,
            });
            let v = client(&c)?.post("/v1/cluster/invites", &body).await?;
            print(&c, &v, |v| v["token"].as_str().unwrap_or("").to_string())?;
        }
        ClusterCommand::Invites { c } => {
            let v = client(&c)?.get("/v1/cluster/invites", &[]).await?;
            print(&c, &v, |v| {
                let mut out = String::new();
                for i in v["invites"].as_array().into_iter().flatten() {
                    let state = match i["used_by"].as_str() {
                        Some(p) => format!("used by {p}"),
                        None => format!(
                            "open until {}",
                            slurp_node::tokens::time_text(i["not_after_ms"].as_u64().unwrap_or(0))
                        ),
                    };
                    out.push_str(&format!(
                        "{}  roles {}  {state}\n",
                        i["id"].as_str().unwrap_or(""),
                        i["roles"]
                            .as_array()
                            .map(|r| r
                                .iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(","))
                            .unwrap_or_default()
                    ));
                }
                if out.is_empty() {
                    out = "no invites".into();
                }
                out.trim_end().to_string()
            })?;
        }
        ClusterCommand::Join {
            peer,
            zone,
            capacity,
            apply,
            c,
        } => {
            let client = client(&c)?;
            let v = client
                .post(
                    "/v1/cluster/join",
                    &json!({"peer": peer, "zone": zone, "capacity": capacity}),
                )
                .await?;
            if apply {
                let v = client.post("/v1/cluster/apply", &json!({})).await?;
                print(&c, &v, applied_text)?;
            } else {
                print(&c, &v, |v| {
                    format!(
                        "staged {} (zone {}, capacity {}); run `slurp cluster apply` to publish",
                        v["staged"]["id"].as_str().unwrap_or(""),
                        v["staged"]["zone"].as_str().unwrap_or(""),
                        v["staged"]["capacity"]
                    )
                })?;
            }
        }
        ClusterCommand::Grant { peer, roles, c } => {
            let roles: Vec<&String> = roles.iter().filter(|r| !r.is_empty()).collect();
            let v = client(&c)?
                .post("/v1/cluster/grant", &json!({"peer": peer, "roles": roles}))
                .await?;
            print(&c, &v, |v| {
                let roles: Vec<&str> = v["roles"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
                    .unwrap_or_default();
                format!(
                    "certified {} for roles [{}]; its older certificates are void{}",
                    v["peer"].as_str().unwrap_or(""),
                    roles.join(","),
                    if v["delivered"] == true {
                        ""
                    } else {
                        "\nthe peer did not take the certificate (unreachable?): every member refuses it until it gets one"
                    }
                )
            })?;
        }
        ClusterCommand::Remove { peer, apply, c } => {
            let client = client(&c)?;
            let v = client
                .post("/v1/cluster/remove", &json!({"peer": peer}))
                .await?;
            if apply {
                let v = client.post("/v1/cluster/apply", &json!({})).await?;
                print(&c, &v, applied_text)?;
            } else {
                print(&c, &v, |_| {
                    format!("staged the removal of {peer}; run `slurp cluster apply` to publish")
                })?;
            }
        }
        ClusterCommand::Where { address, c } => {
            UcxlAddress::parse(&address)?;
            let v = client(&c)?
                .get("/v1/cluster/placement", &[("address", address)])
                .await?;
            print(&c, &v, |v| {
                let mut out = format!(
                    "partition {} (layout v{}), replicas:",
                    v["partition"], v["layout_version"]
                );
                for r in v["replicas"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n  {} {} {}",
                        if r["up"].as_bool() == Some(true) {
                            "up  "
                        } else {
                            "DOWN"
                        },
                        r["name"].as_str().unwrap_or("?"),
                        r["id"].as_str().unwrap_or("")
                    ));
                }
                out
            })?;
        }
        ClusterCommand::Apply { c } => {
            let v = client(&c)?.post("/v1/cluster/apply", &json!({})).await?;
            print(&c, &v, applied_text)?;
        }
    }
    Ok(())
}

fn applied_text(v: &Value) -> String {
    format!(
        "layout version {} published: {} members, replication factor {}, {} partitions, {} replicas move",
        v["version"],
        v["members"].as_array().map(|m| m.len()).unwrap_or(0),
        v["replication_factor"],
        v["partitions"],
        v["moved_replicas"]
    )
}

fn cluster_text(v: &Value) -> String {
    let mut out = format!(
        "node {} ({})\ncluster {}\nlayout version {}{}",
        v["name"].as_str().unwrap_or(""),
        v["peer_id"].as_str().unwrap_or(""),
        match v["cluster"].as_str() {
            Some(id) if v["key_holder"] == true =>
                format!("{id} (this node holds the cluster key)"),
            Some(id) => id.to_string(),
            None => "none yet (slurp cluster init, or start with --join-token)".into(),
        },
        v["layout_version"],
        match v["replication_factor"].as_u64() {
            Some(rf) => format!(
                ", replication factor {rf}, {} partitions, W {} R {}",
                v["partitions"], v["write_quorum"], v["read_quorum"]
            ),
            None => " (no layout yet)".into(),
        }
    );
    if let Some(members) = v["members"].as_array() {
        out.push_str(&format!("\nmembers ({}):", members.len()));
        for m in members {
            out.push_str(&format!(
                "\n  {} {:<10} zone {:<8} {:>4} partitions  layout v{}  {}{}",
                if m["up"].as_bool() == Some(true) {
                    "up  "
                } else {
                    "DOWN"
                },
                m["name"].as_str().unwrap_or("?"),
                m["zone"].as_str().unwrap_or(""),
                m["partitions"],
                m["layout_version"],
                m["id"].as_str().unwrap_or(""),
                if m["is_self"].as_bool() == Some(true) {
                    "  (this node)"
                } else {
                    ""
                },
            ));
        }
    }
    if let Some(others) = v["others"].as_array().filter(|o| !o.is_empty()) {
        out.push_str("\nother peers (not members):");
        for p in others {
            out.push_str(&format!(
                "\n  {} {} {}",
                if p["up"].as_bool() == Some(true) {
                    "up  "
                } else {
                    "DOWN"
                },
                p["name"].as_str().unwrap_or("?"),
                p["peer_id"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(e) = v["join_error"].as_str() {
        out.push_str(&format!("\njoining failed: {e}"));
    }
    let ae = &v["anti_entropy"];
    if ae["partitions"].as_u64().is_some_and(|n| n > 0) {
        out.push_str(&format!(
            "\nanti-entropy: {} of {} partitions converged, {} differing, {} not compared yet{}",
            ae["converged"],
            ae["partitions"],
            ae["differing"],
            ae["unknown"],
            match ae["oldest_converged_ms"].as_u64() {
                Some(ms) => format!("; oldest convergence {}", slurp_node::tokens::time_text(ms)),
                None => String::new(),
            }
        ));
    }
    let staged = &v["staged"];
    let joins = staged["join"].as_object().map(|o| o.len()).unwrap_or(0);
    let removes = staged["remove"].as_array().map(|o| o.len()).unwrap_or(0);
    if joins + removes > 0 {
        out.push_str(&format!(
            "\nstaged: {joins} to join, {removes} to remove (slurp cluster apply)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "slurp", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:#?}");
    }

    #[test]
    fn the_command_table_is_consistent() {
        Cli::command().debug_assert();
    }
}
