//! Where a store operation finds its versions: the one fork between a lone
//! node and a cluster.
//!
//! A lone node (or a cluster member before the first layout) keeps every
//! version in its own store and answers from it. Under a layout a
//! version's replicas hold it, so the same operations run as quorum reads
//! and writes through the replicator. The store front asks for the tier
//! once per operation ([`super::ContextStore::tier`]) and calls the same
//! method either way.

use std::sync::Arc;

use slurp_protocol::placement::Layout;
use slurp_protocol::{RecordMeta, UcxlAddress};

use super::{Engine, ListPage, Prepared, PutResult, QuorumOpts, ReadResult};
use crate::error::StoreError;
use crate::replication::Replicator;
use crate::tokens::Principal;

/// The versions' tier for one operation.
pub(crate) enum Tier<'a> {
    /// This node's own store.
    Alone(&'a Engine),
    /// The replicas of the layout the operation started under.
    Cluster(&'a Replicator, Arc<Layout>),
}

impl Tier<'_> {
    /// The newest version's metadata of `key`: the local one alone, the
    /// newest of a read quorum in a cluster.
    pub(crate) async fn latest_meta(
        &self,
        key: &str,
        opts: QuorumOpts,
    ) -> Result<Option<RecordMeta>, StoreError> {
        match self {
            Tier::Alone(engine) => Ok(engine.local().latest_meta(key)?.map(|(m, _)| m)),
            Tier::Cluster(r, _) => {
                let route = r.route_or_unavailable(key)?;
                Ok(r.quorum_heads(&route, key, opts.r, false)
                    .await?
                    .newest
                    .map(|v| v.meta))
            }
        }
    }

    /// Every version of `key`, oldest first (merged over `r` replicas in a
    /// cluster).
    pub(crate) async fn history(
        &self,
        key: &str,
        r: Option<usize>,
    ) -> Result<Vec<RecordMeta>, StoreError> {
        match self {
            Tier::Alone(engine) => Ok(engine.local().history(key)?),
            Tier::Cluster(rep, _) => {
                let route = rep.route_or_unavailable(key)?;
                rep.quorum_history(&route, key, r).await
            }
        }
    }

    /// Stores prepared versions: one durable local commit, or a quorum
    /// write. One result per version, in order.
    pub(crate) async fn commit(
        &self,
        prepared: Vec<Prepared>,
        opts: QuorumOpts,
    ) -> Vec<Result<PutResult, StoreError>> {
        match self {
            Tier::Alone(engine) => engine.commit(prepared).await,
            Tier::Cluster(r, _) => r.commit(prepared, opts).await,
        }
    }

    /// Reads the version `address` names, as `caller`.
    pub(crate) async fn get(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        opts: QuorumOpts,
    ) -> Result<ReadResult, StoreError> {
        match self {
            Tier::Cluster(r, _) if !address.is_pattern() => {
                let route = r.route_or_unavailable(&address.key())?;
                r.get(caller, address, route, opts)
                    .await
                    .map_err(|e| e.quorum_of("read", &address.to_string(), None))
            }
            Tier::Cluster(r, _) => r.engine().get(caller, address).await,
            Tier::Alone(engine) => engine.get(caller, address).await,
        }
    }

    /// A page of the addresses matching `pattern` that `caller` may read.
    pub(crate) async fn list(
        &self,
        caller: &Principal,
        pattern: &UcxlAddress,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        match self {
            Tier::Alone(engine) => engine.list(pattern, after, limit, None, &caller.role),
            Tier::Cluster(r, layout) => {
                super::search::list_cluster(r, layout, caller, pattern, after, limit).await
            }
        }
    }
}
