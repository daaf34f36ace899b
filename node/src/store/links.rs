//! Decision links: which decisions shaped which, within N hops.
//!
//! A context lists the addresses its decision influenced and was influenced
//! by; the local store keeps both directions as a table, so walking the
//! graph never opens an envelope except to show a summary. The walk is
//! breadth-first and only passes through contexts the caller may read: an
//! unreadable context is neither shown nor expanded, so the graph leaks
//! neither its existence nor its neighbours.

use std::collections::{BTreeMap, VecDeque};

use slurp_protocol::UcxlAddress;

use super::ContextStore;
use crate::error::StoreError;
use crate::tokens::Principal;

// The graph is the API's body.
pub use slurp_protocol::api::{LinkEdge, LinkNode, LinksResponse as LinkGraph};

impl ContextStore {
    /// The contexts within `hops` links of `address`, both directions.
    pub async fn links(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
        hops: u32,
    ) -> Result<LinkGraph, StoreError> {
        let hops = hops.min(self.options().max_link_hops);
        let root = address.with_temporal(slurp_protocol::Temporal::Latest);
        // The root must be readable; this also audits the access.
        let first = self.get(caller, &root).await?;
        let root_key = root.key();
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut nodes = vec![LinkNode {
            address: first.address.clone(),
            hops: 0,
            summary: first.context.summary.clone(),
        }];
        seen.insert(root_key.clone(), 0);
        let mut edges = std::collections::BTreeSet::new();
        let mut queue = VecDeque::from([(root_key, 0u32, first.context.links.clone())]);
        let max_nodes = self.options().batch_size.max(1);
        while let Some((key, depth, declared)) = queue.pop_front() {
            if depth >= hops {
                continue;
            }
            // A lone node has both directions of every link in its store. In
            // a cluster the records linking here may live in other
            // partitions, so the record's own declared links are followed.
            let links = if matches!(self.tier(), super::Tier::Cluster(..)) {
                slurp_storage::Links {
                    influences: declared.influences.iter().map(|a| a.key()).collect(),
                    influenced_by: declared.influenced_by.iter().map(|a| a.key()).collect(),
                }
            } else {
                self.local().links(&key)?
            };
            let out = links
                .influences
                .iter()
                .map(|t| (key.clone(), t.clone(), t.clone()));
            let inc = links
                .influenced_by
                .iter()
                .map(|f| (f.clone(), key.clone(), f.clone()));
            for (from, to, next) in out.chain(inc).collect::<Vec<_>>() {
                let readable = match seen.get(&next) {
                    Some(_) => true,
                    None => {
                        if nodes.len() >= max_nodes {
                            continue;
                        }
                        let Ok(addr) = UcxlAddress::from_key(&next) else {
                            continue;
                        };
                        match self.get(caller, &addr).await {
                            Ok(read) => {
                                seen.insert(next.clone(), depth + 1);
                                nodes.push(LinkNode {
                                    address: read.address,
                                    hops: depth + 1,
                                    summary: read.context.summary,
                                });
                                queue.push_back((next.clone(), depth + 1, read.context.links));
                                true
                            }
                            Err(
                                StoreError::NotFound(_)
                                | StoreError::Deleted { .. }
                                | StoreError::Forbidden { .. },
                            ) => false,
                            Err(e) => return Err(e),
                        }
                    }
                };
                if readable {
                    edges.insert(LinkEdge { from, to });
                }
            }
        }
        let display = |k: &str| {
            UcxlAddress::from_key(k)
                .map(|a| a.to_string())
                .unwrap_or_else(|_| k.to_string())
        };
        Ok(LinkGraph {
            root: first.address,
            nodes,
            edges: edges
                .into_iter()
                .map(|e| LinkEdge {
                    from: display(&e.from),
                    to: display(&e.to),
                })
                .collect(),
        })
    }
}
