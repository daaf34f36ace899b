//! Search: the index finds, the store opens.
//!
//! The index answers with keys, scores, snippets and facet counts computed
//! only over documents the caller's role may read. Each hit is then read
//! like any other get (cache first, access re-checked, envelope opened with
//! the caller's key), so a search never returns more than a get would.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use slurp_crypto::AuditAction;
use slurp_index::{FacetCounts, SearchQuery};
use slurp_protocol::{ContextNode, UcxlAddress};

use super::ContextStore;
use crate::error::StoreError;
use crate::tokens::Principal;

/// One search hit, decrypted for the caller.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResultHit {
    pub address: String,
    pub version: String,
    pub score: f32,
    /// HTML with matched terms in `<b>`; text is escaped.
    pub snippet: String,
    pub context: ContextNode,
}

/// A page of search results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResponse {
    pub total_hits: u64,
    pub hits: Vec<SearchResultHit>,
    pub facets: FacetCounts,
    pub warnings: Vec<String>,
    /// Time spent in the index, in microseconds.
    pub index_micros: u64,
    /// Time for the whole search including decryption, in microseconds.
    pub took_micros: u64,
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
        let Some(index) = self.0.index.clone() else {
            return Err(StoreError::BadRequest(
                "indexing is disabled on this node (store_options.indexing = false)".into(),
            ));
        };
        query.role = caller.role.clone();
        let r = super::bounded(self.0.options.operation_timeout, async {
            let index_start = Instant::now();
            let results = tokio::task::spawn_blocking(move || index.search(&query))
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let results = results?;
            let index_micros = index_start.elapsed().as_micros() as u64;
            self.0
                .metrics
                .record("search", "index", true, index_start.elapsed());
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
                    Err(e) => return Err(e),
                }
            }
            Ok(SearchResponse {
                total_hits: results.total_hits,
                hits,
                facets: results.facets,
                warnings: results.warnings,
                index_micros,
                took_micros: 0,
            })
        })
        .await;
        self.time("search", "store", start, &r);
        let mut resp = r?;
        resp.took_micros = start.elapsed().as_micros() as u64;
        self.0
            .audit
            .allow(
                &caller.token_id,
                &caller.role,
                AuditAction::Search,
                "search",
            )
            .await;
        Ok(resp)
    }
}
