//! `slurp node`: run a node in the foreground, print its effective
//! configuration, make a private-network key, print its peer id.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Serialize;
use slurp_node::config::{LogFormat, NodeConfig};
use slurp_node::node::Node;

use super::output::{out, print_as};
use crate::{NodeCommand, RunArgs};

/// What `node swarm-key --json` prints.
#[derive(Serialize)]
struct SwarmKey {
    swarm_key: String,
    fingerprint: String,
}

/// What `node peer-id --json` prints.
#[derive(Serialize)]
struct PeerId {
    peer_id: String,
}

/// Runs one `slurp node` command.
pub async fn run(cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Run(args) => run_node(args).await,
        NodeCommand::Config { run, json } => {
            let config = run.load()?;
            if json {
                out(&serde_json::to_string_pretty(&config)?)?;
            } else {
                out(&config.to_commented_toml())?;
            }
            Ok(())
        }
        NodeCommand::SwarmKey { json } => {
            let mut raw = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
            let key = libp2p::pnet::PreSharedKey::new(raw);
            let v = SwarmKey {
                swarm_key: key.to_string(),
                fingerprint: key.fingerprint().to_string(),
            };
            print_as(json, &v, |v| v.swarm_key.clone())
        }
        NodeCommand::PeerId { data, json } => {
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            let key = slurp_node::net::identity::load_or_create(&data)?;
            let v = PeerId {
                peer_id: key.public().to_peer_id().to_string(),
            };
            print_as(json, &v, |v| v.peer_id.clone())
        }
    }
}

/// `slurp node run`: serves the API until SIGINT or SIGTERM.
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
