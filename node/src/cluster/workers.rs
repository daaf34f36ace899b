//! The cluster's background jobs, as [`Worker`] types beside the state
//! they keep: probing members, pulling newer layouts, syncing the token
//! lists and anchoring audit heads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use slurp_crypto::AuditLog;

use super::Cluster;
use crate::store::ContextStore;
use crate::tokens::TokenStore;
use crate::workers::{PassReport, Worker};

type Pass<'a> = Pin<Box<dyn Future<Output = Result<PassReport, String>> + Send + 'a>>;

/// The `layout-pull` worker's name.
pub const LAYOUT_PULL: &str = "layout-pull";

/// Redeems the join token, probes admitted peers, pulls newer layouts.
pub struct MembershipProbe {
    pub cluster: Cluster,
}

impl Worker for MembershipProbe {
    fn name(&self) -> &'static str {
        "membership"
    }

    fn description(&self) -> &'static str {
        "redeems the join token, probes admitted peers, pulls newer signed layouts"
    }

    fn interval(&self) -> Duration {
        self.cluster.config().probe_interval
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            let answered = self.cluster.tick().await;
            Ok(PassReport {
                items: answered as u64,
                note: format!(
                    "layout v{}, {answered} peers answered",
                    self.cluster.layout_version()
                ),
            })
        })
    }
}

/// Fetches the layout of the peers queued by
/// [`Cluster::want_layout_from`].
pub struct LayoutPull {
    pub cluster: Cluster,
}

impl Worker for LayoutPull {
    fn name(&self) -> &'static str {
        LAYOUT_PULL
    }

    fn description(&self) -> &'static str {
        "fetches the signed layout from peers that said they hold a newer one (a bounded queue)"
    }

    fn interval(&self) -> Duration {
        self.cluster.config().probe_interval
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            let n = self.cluster.pull_wanted_layouts().await;
            Ok(PassReport {
                items: n as u64,
                note: format!("asked {n} peers; layout v{}", self.cluster.layout_version()),
            })
        })
    }
}

/// Pulls the other members' token lists (hashes only).
pub struct TokenSync {
    pub cluster: Cluster,
    pub tokens: Arc<TokenStore>,
    pub interval: Duration,
}

impl Worker for TokenSync {
    fn name(&self) -> &'static str {
        "token-sync"
    }

    fn description(&self) -> &'static str {
        "pulls the token lists of the other members (hashes only), revocations included"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            let (answered, changed) = self.cluster.sync_tokens(&self.tokens).await;
            Ok(PassReport {
                items: changed as u64,
                note: format!("{answered} members answered, {changed} token records changed"),
            })
        })
    }
}

/// Signs this node's audit head and hands it to the other members.
pub struct AuditAnchor {
    pub cluster: Cluster,
    pub audit_log: Arc<AuditLog>,
    pub store: ContextStore,
    pub interval: Duration,
}

impl Worker for AuditAnchor {
    fn name(&self) -> &'static str {
        "audit-anchor"
    }

    fn description(&self) -> &'static str {
        "signs this node's audit head and hands it to the other members"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn pass(&self) -> Pass<'_> {
        Box::pin(async move {
            self.store.audit().flush().await;
            let head = self.audit_log.head();
            let took = self
                .cluster
                .anchor_audit(head)
                .await
                .map_err(|e| e.to_string())?;
            Ok(PassReport {
                items: took as u64,
                note: format!("head {head} held by {took} members"),
            })
        })
    }
}
