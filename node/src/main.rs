//! The `slurp` binary: runs a node and, from the same executable, talks to
//! one as a client.
//!
//! Flags are parsed into plain argument structs here and resolved into the
//! library's settings (`NodeConfig`, the HTTP client) in one place each, so
//! help text, completions and behaviour come from the same table. Each
//! command group runs in its own module under `cli/`; errors of every
//! group are classified into exit codes here.

mod cli;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::json;
use slurp_node::client::{ClientError, Endpoints};
use slurp_node::config::{
    ApiOverrides, ClusterOverrides, ConfigOverrides, LogFormat, NetOverrides, NodeConfig,
};

use cli::output::out;

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

/// Following a layout change until its data has moved.
#[derive(clap::Args, Debug, Clone)]
pub struct WaitArgs {
    /// After applying, wait until the layout transition is over (every
    /// moved partition pulled by its new owners, the old copies dropped),
    /// showing progress on stderr.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit code 1; the transition goes
    /// on).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub wait_timeout: std::time::Duration,
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
        wait: WaitArgs,
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
    /// Stage a member's removal. Once applied, the member drains: its
    /// partitions move to their new owners, and it leaves only when they
    /// hold them (`--wait` follows it).
    Remove {
        /// The peer id of the member to remove.
        peer: String,
        /// Apply the staged changes at once.
        #[arg(long)]
        apply: bool,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        c: ClientArgs,
    },
    /// Publish the staged changes as the next layout version.
    Apply {
        #[command(flatten)]
        wait: WaitArgs,
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

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Node(cmd) => cli::node::run(cmd).await,
        Command::Cluster(cmd) => cli::cluster::run(cmd).await,
        Command::Put(a) => cli::context::put(a).await,
        Command::Get { address, r, c } => cli::context::get(address, r, c).await,
        Command::Delete { address, w, c } => cli::context::delete(address, w, c).await,
        Command::List {
            pattern,
            limit,
            after,
            c,
        } => cli::context::list(pattern, limit, after, c).await,
        Command::History { address, c } => cli::context::history(address, c).await,
        Command::Search(a) => cli::context::search(a).await,
        Command::Resolve { address, c } => cli::context::resolve(address, c).await,
        Command::Links { address, hops, c } => cli::context::links(address, hops, c).await,
        Command::Batch(BatchCommand::Import {
            file,
            chunk,
            atomic,
            c,
        }) => cli::batch::import(file, chunk, atomic, c).await,
        Command::Export { pattern, output, c } => cli::batch::export(pattern, output, c).await,
        Command::Token(cmd) => cli::token::run(cmd).await,
        Command::Audit(cmd) => cli::audit::run(cmd).await,
        Command::Keys(cmd) => cli::keys::run(cmd).await,
        Command::Status { c } => cli::status::status(c).await,
        Command::Workers { run, c } => cli::status::workers(run, c).await,
        Command::Health { c } => cli::status::health(c).await,
        Command::Whoami { c } => cli::status::whoami(c).await,
        Command::Bench(args) => slurp_node::bench::run(args).await,
        Command::Chaos(args) => slurp_node::chaos::run(args).await,
        Command::Completions { shell, json } => completions(shell, json),
    }
}

/// What `completions --json` prints.
#[derive(serde::Serialize)]
struct Completions {
    shell: String,
    script: String,
}

/// `slurp completions`.
fn completions(shell: clap_complete::Shell, json: bool) -> Result<()> {
    // Generated into memory: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "slurp", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    if json {
        out(&serde_json::to_string_pretty(&serde_json::to_value(
            Completions {
                shell: shell.to_string(),
                script,
            },
        )?)?)?;
    } else {
        std::io::stdout().lock().write_all(script.as_bytes())?;
    }
    Ok(())
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
