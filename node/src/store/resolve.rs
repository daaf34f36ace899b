//! Hierarchy resolution: what a path means once its parents are counted.
//!
//! A context about `src/auth/login.rs` says little about the crate it lives
//! in; the contexts of `src/auth`, `src` and the project root do. Resolving
//! a path reads the latest context of every ancestor (same agent, role,
//! project and task) the caller may read and merges them, root first:
//!
//! - an ancestor counts only if it `applies_to_children`; the path's own
//!   context always counts;
//! - a context that `overrides_parent` discards what its ancestors said;
//! - single-valued fields (summary, purpose) come from the counted context
//!   with the highest `context_specificity`, the deepest on a tie;
//! - lists (technologies, tags, insights) are the union, root first,
//!   without duplicates.
//!
//! The answer says which address every field and list item came from.

use slurp_protocol::UcxlAddress;

use super::ContextStore;
use crate::error::StoreError;
use crate::tokens::Principal;

// The merged view is the API's body.
pub use slurp_protocol::api::{FieldSource, ResolveResponse as Resolved};

/// Every prefix of `path` at a `/`, the root (`""`) first, `path` last.
fn ancestors(path: &str) -> Vec<String> {
    let path = path.trim_matches('/');
    let mut out = vec![String::new()];
    if path.is_empty() {
        return out;
    }
    for (i, _) in path.match_indices('/') {
        out.push(path[..i].to_string());
    }
    out.push(path.to_string());
    out
}

impl ContextStore {
    /// Resolves the context of `address`'s path through its ancestors.
    pub async fn resolve(
        &self,
        caller: &Principal,
        address: &UcxlAddress,
    ) -> Result<Resolved, StoreError> {
        if address.is_pattern() {
            return Err(StoreError::BadRequest(
                "resolve needs a concrete address, not a pattern".into(),
            ));
        }
        let paths = ancestors(&address.path);
        let last = paths.len() - 1;
        let mut counted = Vec::new();
        for (depth, p) in paths.iter().enumerate() {
            let mut a = address.clone();
            a.path = p.clone();
            let read = match self.get(caller, &a).await {
                Ok(r) => r,
                // The path itself must be readable; ancestors are optional.
                Err(e) if depth == last => return Err(e),
                Err(
                    StoreError::NotFound(_)
                    | StoreError::Deleted { .. }
                    | StoreError::Forbidden { .. },
                ) => continue,
                Err(e) => return Err(e),
            };
            let node = read.context;
            if depth != last && !node.applies_to_children {
                continue;
            }
            if node.overrides_parent {
                counted.clear();
            }
            counted.push((depth, read.address, node));
        }
        let mut best: Option<(i32, usize, usize)> = None;
        let mut purpose: Option<(i32, usize, usize)> = None;
        for (i, (depth, _, node)) in counted.iter().enumerate() {
            let rank = (node.context_specificity, *depth, i);
            if best.is_none_or(|b| rank > b) {
                best = Some(rank);
            }
            if !node.purpose.is_empty() && purpose.is_none_or(|b| rank > b) {
                purpose = Some(rank);
            }
        }
        let Some((_, _, best)) = best else {
            return Err(StoreError::NotFound(address.to_string()));
        };
        let mut technologies: Vec<FieldSource> = Vec::new();
        let mut tags: Vec<FieldSource> = Vec::new();
        let mut insights: Vec<FieldSource> = Vec::new();
        for (_, source, node) in &counted {
            for (list, items) in [
                (&mut technologies, &node.technologies),
                (&mut tags, &node.tags),
                (&mut insights, &node.insights),
            ] {
                for item in items {
                    if !list.iter().any(|f| &f.value == item) {
                        list.push(FieldSource {
                            value: item.clone(),
                            source: source.clone(),
                        });
                    }
                }
            }
        }
        let (_, best_src, best_node) = &counted[best];
        let purpose = purpose.map(|(_, _, i)| &counted[i]);
        Ok(Resolved {
            address: address
                .with_temporal(slurp_protocol::Temporal::Latest)
                .to_string(),
            path: address.path.clone(),
            summary: best_node.summary.clone(),
            summary_source: best_src.clone(),
            purpose: purpose
                .map(|(_, _, n)| n.purpose.clone())
                .unwrap_or_default(),
            purpose_source: purpose.map(|(_, s, _)| s.clone()),
            technologies,
            tags,
            insights,
            chain: counted.iter().map(|(_, s, _)| s.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ancestors;

    #[test]
    fn ancestors_root_first() {
        assert_eq!(
            ancestors("src/auth/x.rs"),
            vec!["", "src", "src/auth", "src/auth/x.rs"]
        );
        assert_eq!(ancestors(""), vec![""]);
        assert_eq!(ancestors("/a/"), vec!["", "a"]);
    }
}
