//! Search: the index finds, the store opens.
//!
//! The index answers with keys, scores, snippets and facet counts computed
//! only over documents the caller's role may read. Each hit is then read
//! like any other get (cache first, access re-checked, envelope opened with
//! the caller's key), so a search never returns more than a get would.
//!
//! In a cluster every node indexes the partitions it replicates, so a
//! search picks for each partition one node that holds it (this node
//! first, then nodes already picked, so few nodes are asked), and each
//! picked node answers for exactly its share of slots: every context is
//! counted once. Ranking is that of one index over everything: the picked
//! nodes first report their term statistics for their share, the sums go
//! back with the search, and each node scores with them. Hits merge by
//! score, totals and facet counts add up, and partitions no reachable node
//! answered for are named in the response (`partial`). A query the index
//! refuses (bad text, a limit) is checked on this node before any other is
//! asked and fails the whole search with one error; a node refusing it is
//! never taken for a node that is down.
//!
//! An answer that may lack matches says so: `incomplete` with its
//! `incomplete_reasons`, each explained in `warnings`. Besides missing
//! partitions, that is an index still being rebuilt from its store (or
//! whose rebuild failed), records in the search's role and scope that the
//! node holding them cannot open (sealed to roles it holds no key for, or
//! corrupt; counted in `unopenable`), and hits that could not be opened
//! for the caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use slurp_crypto::AuditAction;
use slurp_index::{
    ContextIndex, Coverage, FacetCount, FacetCounts, QueryStatistics, SearchHit, SearchQuery,
    SearchResults, SlotScope,
};
use slurp_protocol::messages::{ErrorCode, RemoteError, SearchRequest, SearchResponse as Wire};
use slurp_protocol::placement::Layout;
use slurp_protocol::{RoleName, UcxlAddress};

use super::{ContextStore, ListEntry, ListPage};
use crate::cluster::{Cluster, ClusterError};
use crate::error::StoreError;
use crate::replication::Replicator;
use crate::replication::coordinator::cluster_peer_label;
use crate::tokens::Principal;
use libp2p::PeerId;

// The answer is the API's body.
pub use slurp_protocol::api::{Incomplete, SearchHit as SearchResultHit, SearchResponse};

/// What makes an answer incomplete, gathered while it is put together.
#[derive(Default)]
struct Gaps {
    reasons: Vec<Incomplete>,
    warnings: Vec<String>,
    unopenable: u64,
}

impl Gaps {
    fn note(&mut self, reason: Incomplete, warning: String) {
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
        self.warnings.push(warning);
    }

    /// What one node's answer says of its own coverage (`who`: "this
    /// node", or the node's name).
    fn share(&mut self, who: &str, role: &RoleName, r: &SearchResults) {
        match &r.coverage {
            Coverage::Complete => {}
            Coverage::Rebuilding { read, expected } => self.note(
                Incomplete::IndexRebuilding,
                format!(
                    "the index of {who} is still being rebuilt from its store ({read}{} records read): matches among the rest are missing",
                    expected.map(|n| format!(" of at most {n}")).unwrap_or_default()
                ),
            ),
            Coverage::Failed { error } => self.note(
                Incomplete::IndexRebuildFailed,
                format!(
                    "the index rebuild of {who} failed ({error}): matches among the records it did not reach are missing (`slurp workers --run index-rebuild` there retries)"
                ),
            ),
        }
        if r.unopenable > 0 {
            self.unopenable += r.unopenable;
            self.note(
                Incomplete::UnopenableRecords,
                format!(
                    "{} readable by role {role} {} held by {who} but cannot be opened there (no key held, or corrupt), so {} not searched",
                    if r.unopenable == 1 {
                        "1 record".to_string()
                    } else {
                        format!("{} records", r.unopenable)
                    },
                    if r.unopenable == 1 { "is" } else { "are" },
                    if r.unopenable == 1 { "it was" } else { "they were" },
                ),
            );
        }
    }

    /// Fills the response's fields (warnings after those it has).
    fn apply(self, resp: &mut SearchResponse) {
        if resp.partial
            && !resp
                .incomplete_reasons
                .contains(&Incomplete::MissingPartitions)
        {
            resp.incomplete_reasons.push(Incomplete::MissingPartitions);
        }
        for r in self.reasons {
            if !resp.incomplete_reasons.contains(&r) {
                resp.incomplete_reasons.push(r);
            }
        }
        resp.warnings.extend(self.warnings);
        resp.unopenable += self.unopenable;
        resp.incomplete = !resp.incomplete_reasons.is_empty();
    }
}

fn remote_err(e: impl std::fmt::Display) -> Wire {
    Wire::Error(RemoteError {
        code: ErrorCode::BadRequest,
        message: e.to_string(),
    })
}

fn internal_err(message: String) -> Wire {
    Wire::Error(RemoteError {
        code: ErrorCode::Internal,
        message,
    })
}

/// An index error as a peer answers it: the request's fault is a bad
/// request, anything else the peer's.
fn search_err(e: slurp_index::SearchError) -> Wire {
    if e.is_invalid_request() {
        remote_err(e)
    } else {
        internal_err(e.to_string())
    }
}

/// Why one node's share of a distributed search has no answer.
enum ShareError {
    /// The query itself was refused: the whole search fails with it.
    Refused(StoreError),
    /// The node failed or did not answer: its partitions are missing.
    Failed(String),
}

impl From<slurp_index::SearchError> for ShareError {
    fn from(e: slurp_index::SearchError) -> Self {
        if e.is_invalid_request() {
            ShareError::Refused(e.into())
        } else {
            ShareError::Failed(e.to_string())
        }
    }
}

fn merge_facets(into: &mut Vec<FacetCount>, from: Vec<FacetCount>) {
    for f in from {
        match into.iter_mut().find(|x| x.value == f.value) {
            Some(x) => x.count += f.count,
            None => into.push(f),
        }
    }
}

impl ContextStore {
    /// Full-text search as the caller's role (the query's `role` is
    /// replaced by the caller's).
    pub async fn search(
        &self,
        caller: &Principal,
        mut query: SearchQuery,
    ) -> Result<SearchResponse, StoreError> {
        let start = Instant::now();
        let Some(index) = self.index().cloned() else {
            return Err(StoreError::BadRequest(
                "indexing is disabled on this node (store_options.indexing = false)".into(),
            ));
        };
        query.role = caller.role.clone();
        let r = match self.tier() {
            super::Tier::Cluster(r, layout) => {
                self.search_cluster(caller, query, r.cluster(), layout, index)
                    .await
            }
            super::Tier::Alone(_) => self.search_local(caller, query, index).await,
        };
        self.engine().time("search", "store", start, &r);
        let mut resp = r?;
        resp.took_micros = start.elapsed().as_micros() as u64;
        self.audit()
            .allow(
                &caller.token_id,
                &caller.role,
                AuditAction::Search,
                "search",
            )
            .await;
        Ok(resp)
    }

    async fn search_local(
        &self,
        caller: &Principal,
        query: SearchQuery,
        index: Arc<ContextIndex>,
    ) -> Result<SearchResponse, StoreError> {
        super::bounded(self.options().operation_timeout, async {
            let index_start = Instant::now();
            let results = tokio::task::spawn_blocking(move || index.search(&query))
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let results = results?;
            let index_micros = index_start.elapsed().as_micros() as u64;
            self.metrics()
                .record("search", "index", true, index_start.elapsed());
            let mut gaps = Gaps::default();
            gaps.share("this node", &caller.role, &results);
            let mut hits = Vec::with_capacity(results.hits.len());
            for hit in results.hits {
                let Ok(addr) = UcxlAddress::from_key(&hit.key) else {
                    continue;
                };
                match self.get(caller, &addr).await {
                    Ok(read) => hits.push(SearchResultHit {
                        address: read.address,
                        version: read.version,
                        score: hit.score,
                        snippet: hit.snippet,
                        context: read.context,
                    }),
                    // Deleted or expired since it was indexed.
                    Err(StoreError::NotFound(_) | StoreError::Deleted { .. }) => {}
                    // Indexed with another role's key this node holds.
                    Err(e @ StoreError::NoKey(_)) => gaps.note(
                        Incomplete::HitsLeftOut,
                        format!("hit {} left out: {e}", hit.key),
                    ),
                    Err(e) => return Err(e),
                }
            }
            let mut resp = SearchResponse {
                total_hits: results.total_hits,
                hits,
                facets: results.facets,
                warnings: results.warnings,
                index_micros,
                took_micros: 0,
                partial: false,
                missing_partitions: Vec::new(),
                nodes: 1,
                incomplete: false,
                incomplete_reasons: Vec::new(),
                unopenable: 0,
            };
            gaps.apply(&mut resp);
            Ok(resp)
        })
        .await
    }
}

impl ContextStore {
    /// Answers a search fan-out request from a peer, over the slots it was
    /// given.
    pub async fn serve_search(&self, req: SearchRequest) -> Wire {
        let Some(index) = self.index().cloned() else {
            return Wire::Error(RemoteError {
                code: ErrorCode::Unavailable,
                message: "indexing is disabled on this node".into(),
            });
        };
        let (query, role, scope, stats, limit) = match req {
            SearchRequest::List {
                pattern,
                role,
                after,
                limit,
                scope,
                ..
            } => return self.serve_list(&pattern, &role, after.as_deref(), limit, scope),
            SearchRequest::TermStatistics {
                query, role, scope, ..
            } => (query, role, scope, None, None),
            SearchRequest::Search {
                query,
                role,
                stats,
                limit,
                scope,
                ..
            } => (query, role, scope, stats, Some(limit)),
        };
        let mut query: SearchQuery = match serde_json::from_value(query) {
            Ok(q) => q,
            Err(e) => return remote_err(format!("query: {e}")),
        };
        query.role = role;
        let scope: SlotScope = match scope.map(serde_json::from_value).transpose() {
            Ok(s) => s.unwrap_or_else(SlotScope::all),
            Err(e) => return remote_err(format!("scope: {e}")),
        };
        let stats: Option<QueryStatistics> = match stats.map(serde_json::from_value).transpose() {
            Ok(s) => s,
            Err(e) => return remote_err(format!("stats: {e}")),
        };
        // The shard's top: the client's page is checked as the client
        // sent it, and this node answers with its best `offset + limit`.
        let top = limit.map(|l| (l as usize).min(self.options().batch_size.max(1)));
        let r = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, Wire> {
            let json = |v: Result<serde_json::Value, serde_json::Error>| {
                v.map_err(|e| internal_err(e.to_string()))
            };
            match limit {
                None => json(serde_json::to_value(
                    index
                        .term_statistics_scoped(&query, &scope)
                        .map_err(search_err)?,
                )),
                Some(_) => json(serde_json::to_value(
                    index
                        .search_scoped_top(&query, &scope, stats.as_ref(), top.unwrap_or(1))
                        .map_err(search_err)?,
                )),
            }
        })
        .await;
        match (r, limit) {
            (Ok(Ok(stats)), None) => Wire::TermStatistics { stats },
            (Ok(Ok(results)), Some(_)) => Wire::Results { results },
            (Ok(Err(e)), _) => e,
            (Err(e), _) => internal_err(e.to_string()),
        }
    }

    /// One node's share of a listing (`SearchRequest::List`), straight
    /// from the local store.
    fn serve_list(
        &self,
        pattern: &str,
        role: &RoleName,
        after: Option<&str>,
        limit: u32,
        scope: serde_json::Value,
    ) -> Wire {
        let r = (|| -> Result<super::ListPage, StoreError> {
            let pattern = UcxlAddress::parse(pattern)?;
            let scope: SlotScope = serde_json::from_value(scope)
                .map_err(|e| StoreError::BadRequest(format!("scope: {e}")))?;
            self.engine()
                .list(&pattern, after, limit as usize, Some(&scope), role)
        })();
        match r.and_then(|page| {
            serde_json::to_value(page).map_err(|e| StoreError::Internal(e.to_string()))
        }) {
            Ok(page) => Wire::Listed { page },
            Err(e @ (StoreError::Internal(_) | StoreError::Storage(_))) => {
                internal_err(e.to_string())
            }
            Err(e) => remote_err(e.to_string()),
        }
    }

    /// Term statistics or a scored search on one node's share.
    async fn search_share(
        &self,
        cluster: &Cluster,
        index: &Arc<ContextIndex>,
        peer: &PeerId,
        query: &SearchQuery,
        scope: &SlotScope,
        stats: Option<&QueryStatistics>,
    ) -> Result<Share, ShareError> {
        let failed = |e: &dyn std::fmt::Display| ShareError::Failed(e.to_string());
        if *peer == cluster.me() {
            let (index, query, scope, stats) =
                (index.clone(), query.clone(), scope.clone(), stats.cloned());
            return tokio::task::spawn_blocking(move || match stats {
                None => Ok(Share::Stats(index.term_statistics_scoped(&query, &scope)?)),
                Some(stats) => {
                    let top = query.offset.saturating_add(query.limit);
                    Ok(Share::Results(index.search_scoped_top(
                        &query,
                        &scope,
                        Some(&stats),
                        top,
                    )?))
                }
            })
            .await
            .map_err(|e| failed(&e))?;
        }
        let q = serde_json::to_value(query).map_err(|e| failed(&e))?;
        let sc = serde_json::to_value(scope).map_err(|e| failed(&e))?;
        let role: RoleName = query.role.clone();
        let req = match stats {
            None => SearchRequest::TermStatistics {
                query: q,
                role,
                scope: Some(sc),
                authorisation: None,
            },
            Some(st) => SearchRequest::Search {
                query: q,
                role,
                stats: Some(serde_json::to_value(st).map_err(|e| failed(&e))?),
                // The shard's top: every hit of the client's page may be
                // on this one node.
                limit: query.offset.saturating_add(query.limit) as u32,
                scope: Some(sc),
                authorisation: None,
            },
        };
        match cluster.search(peer, req).await {
            Ok(Wire::TermStatistics { stats }) => serde_json::from_value(stats)
                .map(Share::Stats)
                .map_err(|e| failed(&e)),
            Ok(Wire::Results { results }) => serde_json::from_value(results)
                .map(Share::Results)
                .map_err(|e| failed(&e)),
            // This node checked the query before asking; a peer refusing
            // it (a newer or older build) refuses it for the whole search.
            Err(ClusterError::Remote(ErrorCode::BadRequest, message)) => {
                Err(ShareError::Refused(StoreError::Search(message)))
            }
            Ok(Wire::Error(e)) => Err(ShareError::Failed(e.message)),
            Ok(Wire::Listed { .. }) => Err(ShareError::Failed(
                "answered a search with a listing".into(),
            )),
            Err(e) => Err(failed(&e)),
        }
    }

    async fn search_cluster(
        &self,
        caller: &Principal,
        query: SearchQuery,
        cluster: &Cluster,
        layout: Arc<Layout>,
        index: Arc<ContextIndex>,
    ) -> Result<SearchResponse, StoreError> {
        // A query this node refuses is refused once, here, before any
        // other node is asked: one error, not every partition missing.
        index.check_query(&query)?;
        let scheme = layout.partitions();
        // Each node answers for the full page: the global top `offset +
        // limit` is among the union of every node's top `offset + limit`.
        // (search_share asks each for `offset + limit` hits from the first.)
        let shard_query = query.clone();
        super::bounded(self.options().operation_timeout, async {
            let index_start = Instant::now();
            let mut excluded: Vec<PeerId> = Vec::new();
            let mut missing;
            let mut stats_by: HashMap<PeerId, QueryStatistics>;
            let mut plan;
            // Statistics round; a node that fails is replaced by another
            // replica of its partitions once.
            let mut attempt = 0;
            loop {
                let (p, m) = cluster.cover(&layout, &excluded);
                plan = p;
                missing = m;
                let asks = plan.iter().map(|(peer, parts)| {
                    let scope = SlotScope::from_partitions(&scheme, parts.iter().copied());
                    let (peer, shard_query, index) = (*peer, &shard_query, &index);
                    async move {
                        let r = self
                            .search_share(cluster, index, &peer, shard_query, &scope, None)
                            .await;
                        (peer, scope, r)
                    }
                });
                let answers = futures::future::join_all(asks).await;
                stats_by = HashMap::new();
                let mut failed = Vec::new();
                for (peer, _, r) in answers {
                    match r {
                        Ok(Share::Stats(s)) => {
                            stats_by.insert(peer, s);
                        }
                        Ok(Share::Results(_)) => failed.push(peer),
                        Err(ShareError::Refused(e)) => return Err(e),
                        Err(ShareError::Failed(e)) => {
                            tracing::debug!(%peer, error = %e, "search share failed");
                            failed.push(peer);
                        }
                    }
                }
                if failed.is_empty() || attempt == 1 {
                    for f in &failed {
                        if let Some(parts) = plan.remove(f) {
                            missing.extend(parts.iter().map(|p| u32::from(p.0)));
                        }
                    }
                    break;
                }
                excluded.extend(failed);
                attempt += 1;
            }
            let mut merged: Option<QueryStatistics> = None;
            for s in stats_by.values() {
                match &mut merged {
                    None => merged = Some(s.clone()),
                    Some(m) => m.merge(s).map_err(|e| StoreError::Index(Box::new(e)))?,
                }
            }
            let merged = merged.unwrap_or_else(|| QueryStatistics {
                role: query.role.clone(),
                total_docs: 0,
                field_tokens: BTreeMap::new(),
                terms: Vec::new(),
            });
            let asks =
                plan.iter()
                    .filter(|(p, _)| stats_by.contains_key(*p))
                    .map(|(peer, parts)| {
                        let scope = SlotScope::from_partitions(&scheme, parts.iter().copied());
                        let (peer, shard_query, index, merged) =
                            (*peer, &shard_query, &index, &merged);
                        async move {
                            let r = self
                                .search_share(
                                    cluster,
                                    index,
                                    &peer,
                                    shard_query,
                                    &scope,
                                    Some(merged),
                                )
                                .await;
                            (peer, r)
                        }
                    });
            let answers = futures::future::join_all(asks).await;
            let mut total_hits = 0u64;
            let mut hits: Vec<SearchHit> = Vec::new();
            let mut facets = FacetCounts::default();
            let mut warnings: Vec<String> = Vec::new();
            let mut gaps = Gaps::default();
            let mut nodes = 0usize;
            for (peer, r) in answers {
                if let Ok(Share::Results(results)) = &r {
                    let who = if peer == cluster.me() {
                        "this node".to_string()
                    } else {
                        format!("node {}", cluster_peer_label(cluster, &peer))
                    };
                    gaps.share(&who, &caller.role, results);
                }
                match r {
                    Ok(Share::Results(SearchResults {
                        total_hits: t,
                        hits: h,
                        facets: f,
                        warnings: w,
                        ..
                    })) => {
                        nodes += 1;
                        total_hits += t;
                        hits.extend(h);
                        merge_facets(&mut facets.tags, f.tags);
                        merge_facets(&mut facets.technologies, f.technologies);
                        for w in w {
                            if !warnings.contains(&w) {
                                warnings.push(w);
                            }
                        }
                    }
                    Err(ShareError::Refused(e)) => return Err(e),
                    _ => {
                        if let Some(parts) = plan.get(&peer) {
                            missing.extend(parts.iter().map(|p| u32::from(p.0)));
                        }
                    }
                }
            }
            for v in [&mut facets.tags, &mut facets.technologies] {
                v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
                v.truncate(index.config().max_facet_values);
            }
            let text = !query.text.trim().is_empty();
            hits.sort_by(|a, b| {
                if text {
                    b.score
                        .partial_cmp(&a.score)
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then_with(|| a.key.cmp(&b.key))
                } else {
                    b.generated_at
                        .cmp(&a.generated_at)
                        .then_with(|| a.key.cmp(&b.key))
                }
            });
            let page: Vec<SearchHit> = hits
                .into_iter()
                .skip(query.offset)
                .take(query.limit)
                .collect();
            let index_micros = index_start.elapsed().as_micros() as u64;
            self.metrics().record(
                "search",
                "cluster",
                missing.is_empty(),
                index_start.elapsed(),
            );
            // Search is as fresh as the indexes (about a second behind
            // writes), so one replica's copy of each hit is enough.
            let one = super::QuorumOpts {
                w: None,
                r: Some(1),
            };
            let reads = page.iter().map(|hit| async move {
                let addr = UcxlAddress::from_key(&hit.key).ok()?;
                Some((hit, self.get_opts(caller, &addr, one).await))
            });
            let mut out = Vec::with_capacity(page.len());
            for r in futures::future::join_all(reads).await.into_iter().flatten() {
                match r {
                    (hit, Ok(read)) => out.push(SearchResultHit {
                        address: read.address,
                        version: read.version,
                        score: hit.score,
                        snippet: hit.snippet.clone(),
                        context: read.context,
                    }),
                    (_, Err(StoreError::NotFound(_) | StoreError::Deleted { .. })) => {}
                    (
                        hit,
                        Err(
                            e @ (StoreError::Quorum { .. }
                            | StoreError::Unavailable(_)
                            | StoreError::NoKey(_)),
                        ),
                    ) => {
                        gaps.note(
                            Incomplete::HitsLeftOut,
                            format!("hit {} left out: {e}", hit.key),
                        );
                    }
                    (_, Err(e)) => return Err(e),
                }
            }
            missing.sort_unstable();
            missing.dedup();
            let mut resp = SearchResponse {
                total_hits,
                hits: out,
                facets,
                warnings,
                index_micros,
                took_micros: 0,
                partial: !missing.is_empty(),
                missing_partitions: missing,
                nodes,
                incomplete: false,
                incomplete_reasons: Vec::new(),
                unopenable: 0,
            };
            gaps.apply(&mut resp);
            Ok(resp)
        })
        .await
    }
}

enum Share {
    Stats(QueryStatistics),
    Results(SearchResults),
}

/// A listing in a cluster: every node of a partition cover lists its
/// share of slots (through the forwarding protocol, as the caller),
/// and the pages merge in key order. Listing reads each node's local
/// copy, so it is eventually consistent, unlike get.
pub(crate) async fn list_cluster(
    replicator: &Replicator,
    layout: &slurp_protocol::placement::Layout,
    caller: &Principal,
    pattern: &UcxlAddress,
    after: Option<&str>,
    limit: usize,
) -> Result<ListPage, StoreError> {
    use slurp_protocol::messages::SearchRequest;
    let cluster = replicator.cluster();
    let engine = replicator.engine();
    let limit = limit.clamp(1, engine.options().batch_size.max(1));
    let (plan, missing) = cluster.cover(layout, &[]);
    if !missing.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "{} partitions have no reachable replica; the listing would be incomplete",
            missing.len()
        )));
    }
    let scheme = layout.partitions();
    let asks = plan.iter().map(|(peer, parts)| {
        let scope = slurp_index::SlotScope::from_partitions(&scheme, parts.iter().copied());
        async move {
            if *peer == cluster.me() {
                return engine.list(pattern, after, limit, Some(&scope), &caller.role);
            }
            let req = SearchRequest::List {
                pattern: pattern.to_string(),
                role: caller.role.clone(),
                after: after.map(str::to_string),
                limit: limit as u32,
                scope: serde_json::to_value(&scope)
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
                authorisation: None,
            };
            let label = crate::replication::coordinator::cluster_peer_label(cluster, peer);
            match cluster.search(peer, req).await {
                Ok(slurp_protocol::messages::SearchResponse::Listed { page }) => {
                    serde_json::from_value::<ListPage>(page)
                        .map_err(|e| StoreError::Internal(format!("{label}: {e}")))
                }
                // The peer refused the request itself: the same refusal
                // for the whole listing, never taken for a peer that is
                // down.
                Err(crate::cluster::ClusterError::Remote(
                    slurp_protocol::messages::ErrorCode::BadRequest,
                    message,
                )) => Err(StoreError::BadRequest(format!("{label}: {message}"))),
                Ok(_) => Err(StoreError::Unavailable(format!(
                    "{label}: answered a listing with something else"
                ))),
                Err(e) => Err(StoreError::Unavailable(format!("{label}: {e}"))),
            }
        }
    });
    let mut all: Vec<(String, ListEntry)> = Vec::new();
    let mut more = false;
    for page in futures::future::join_all(asks).await {
        let page = page?;
        more |= page.next.is_some();
        for e in page.entries {
            let key = UcxlAddress::parse(&e.address)
                .map(|a| a.key())
                .unwrap_or_else(|_| e.address.clone());
            all.push((key, e));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    more |= all.len() > limit;
    all.truncate(limit);
    let next = if more {
        all.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    Ok(ListPage {
        entries: all.into_iter().map(|(_, e)| e).collect(),
        next,
    })
}
