//! The context record: what a file or module is for and why.
//!
//! [`ContextNode`] is the plaintext a writer submits and a reader gets back.
//! It never reaches disk as such: the node seals it (see `slurp-crypto`) and
//! stores the sealed envelope with the small, non-secret [`RecordMeta`]
//! beside it, which is all the storage and routing layers ever see.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::address::UcxlAddress;
use crate::role::{RoleName, RoleSet};
use crate::version::VersionId;

/// Limits on a context's fields, so one record cannot exhaust memory or the
/// index. Configurable by the node (`[limits]`); these are the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ContextLimits {
    /// Longest summary, purpose, path, change reason, tag, technology or
    /// insight of a context, in bytes.
    pub max_text: usize,
    /// Most entries in each list of a context (technologies, tags,
    /// insights, `influences`, `influenced_by`, `encrypted_for`), a count.
    pub max_list: usize,
    /// Largest metadata map of a context, encoded as JSON, in bytes.
    pub max_metadata: usize,
}

impl Default for ContextLimits {
    fn default() -> Self {
        ContextLimits {
            max_text: 64 * 1024,
            max_list: 256,
            max_metadata: 64 * 1024,
        }
    }
}

/// How widely a context may be shared, from least to most restricted.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    Public,
    #[default]
    Internal,
    Confidential,
    Restricted,
}

/// The version data of a context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VersionInfo {
    /// This version's id; assigned by the store, not the writer.
    pub id: VersionId,
    /// The version this one was written on top of, if any.
    #[serde(default)]
    pub parent: Option<VersionId>,
    /// Why this version was written.
    #[serde(default)]
    pub change_reason: String,
}

/// Decision links: which addresses this context's decision influenced and
/// was influenced by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct DecisionLinks {
    #[serde(default)]
    pub influences: Vec<UcxlAddress>,
    #[serde(default)]
    pub influenced_by: Vec<UcxlAddress>,
}

/// A context about one path of a codebase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ContextNode {
    /// Where the context is stored (its temporal part is ignored on write).
    pub address: UcxlAddress,
    /// The file or directory the context is about (defaults to the
    /// address path: absent or empty, the store fills it in).
    #[serde(default)]
    pub path: String,
    pub summary: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub technologies: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub insights: Vec<String>,
    /// When resolving a hierarchy, this context replaces what its parents
    /// say instead of adding to it.
    #[serde(default)]
    pub overrides_parent: bool,
    /// How specific the context is; higher wins when merging a hierarchy.
    #[serde(default)]
    pub context_specificity: i32,
    /// Whether the context applies to the paths under its own.
    #[serde(default = "default_true")]
    pub applies_to_children: bool,
    /// When the context was generated, milliseconds since the Unix epoch.
    #[serde(default)]
    pub generated_at: u64,
    /// Confidence of whatever generated it, in 0..=1.
    #[serde(default = "default_confidence")]
    pub rag_confidence: f64,
    /// Roles the context is written for; readers are these plus every role
    /// that may read one of them.
    pub encrypted_for: Vec<RoleName>,
    #[serde(default)]
    pub access_level: AccessLevel,
    /// Free metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Version data; `None` on a write request, set by the store.
    #[serde(default)]
    pub version: Option<VersionInfo>,
    #[serde(default)]
    pub links: DecisionLinks,
}

fn default_true() -> bool {
    true
}

fn default_confidence() -> f64 {
    1.0
}

/// Why a context was rejected. Each names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("summary must not be empty")]
    EmptySummary,
    #[error("rag_confidence must be within 0..=1, got {0}")]
    ConfidenceOutOfRange(f64),
    #[error("encrypted_for must name at least one role")]
    NoRoles,
    #[error("unknown role {0:?} in encrypted_for")]
    UnknownRole(String),
    #[error("address {0} is a pattern (has `any`); a context needs a concrete address")]
    PatternAddress(String),
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} has {len} entries, over the limit of {max}")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} entry must not be empty")]
    EmptyEntry { field: &'static str },
    #[error("path {0:?}: only [A-Za-z0-9_-/.] allowed")]
    BadPath(String),
    #[error("decision link {0} is a pattern; links name concrete addresses")]
    PatternLink(String),
}

impl ContextNode {
    /// A minimal context: address, summary and roles; the rest defaulted.
    pub fn new(address: UcxlAddress, summary: impl Into<String>, roles: Vec<RoleName>) -> Self {
        ContextNode {
            path: address.path.clone(),
            address,
            summary: summary.into(),
            purpose: String::new(),
            technologies: vec![],
            tags: vec![],
            insights: vec![],
            overrides_parent: false,
            context_specificity: 0,
            applies_to_children: true,
            generated_at: 0,
            rag_confidence: 1.0,
            encrypted_for: roles,
            access_level: AccessLevel::Internal,
            metadata: BTreeMap::new(),
            version: None,
            links: DecisionLinks::default(),
        }
    }

    /// Checks the context against the roles and limits.
    pub fn validate(&self, roles: &RoleSet, limits: &ContextLimits) -> Result<(), ValidationError> {
        if self.address.is_pattern() {
            return Err(ValidationError::PatternAddress(self.address.to_string()));
        }
        if self.summary.trim().is_empty() {
            return Err(ValidationError::EmptySummary);
        }
        if !(0.0..=1.0).contains(&self.rag_confidence) {
            return Err(ValidationError::ConfidenceOutOfRange(self.rag_confidence));
        }
        if self.encrypted_for.is_empty() {
            return Err(ValidationError::NoRoles);
        }
        for r in &self.encrypted_for {
            if !roles.contains(r) {
                return Err(ValidationError::UnknownRole(r.to_string()));
            }
        }
        if !self
            .path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.'))
        {
            return Err(ValidationError::BadPath(
                self.path.chars().take(80).collect(),
            ));
        }
        let text = |field: &'static str, s: &str| {
            if s.len() > limits.max_text {
                Err(ValidationError::TooLong {
                    field,
                    len: s.len(),
                    max: limits.max_text,
                })
            } else {
                Ok(())
            }
        };
        text("summary", &self.summary)?;
        text("purpose", &self.purpose)?;
        text("path", &self.path)?;
        if let Some(v) = &self.version {
            text("change_reason", &v.change_reason)?;
        }
        let list = |field: &'static str, items: &[String]| {
            if items.len() > limits.max_list {
                return Err(ValidationError::TooMany {
                    field,
                    len: items.len(),
                    max: limits.max_list,
                });
            }
            for i in items {
                if i.trim().is_empty() {
                    return Err(ValidationError::EmptyEntry { field });
                }
                text(field, i)?;
            }
            Ok(())
        };
        list("technologies", &self.technologies)?;
        list("tags", &self.tags)?;
        list("insights", &self.insights)?;
        for (field, links) in [
            ("links.influences", &self.links.influences),
            ("links.influenced_by", &self.links.influenced_by),
        ] {
            if links.len() > limits.max_list {
                return Err(ValidationError::TooMany {
                    field,
                    len: links.len(),
                    max: limits.max_list,
                });
            }
            if let Some(p) = links.iter().find(|a| a.is_pattern()) {
                return Err(ValidationError::PatternLink(p.to_string()));
            }
        }
        if self.encrypted_for.len() > limits.max_list {
            return Err(ValidationError::TooMany {
                field: "encrypted_for",
                len: self.encrypted_for.len(),
                max: limits.max_list,
            });
        }
        let meta_len = serde_json::to_vec(&self.metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if meta_len > limits.max_metadata {
            return Err(ValidationError::TooLong {
                field: "metadata",
                len: meta_len,
                max: limits.max_metadata,
            });
        }
        Ok(())
    }
}

/// What the storage and routing layers know about a stored version: no
/// content, only what placement, hierarchy, links, expiry and key rotation
/// need. Content lives in the sealed envelope next to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The storage key (`UcxlAddress::key`).
    pub key: String,
    /// The path the context is about (for hierarchy lookups).
    pub path: String,
    pub version: VersionId,
    #[serde(default)]
    pub parent_version: Option<VersionId>,
    /// The reader closure the envelope is sealed to.
    pub readers: Vec<RoleName>,
    /// Decision links, as storage keys.
    #[serde(default)]
    pub influences: Vec<String>,
    #[serde(default)]
    pub influenced_by: Vec<String>,
    /// Expiry, milliseconds since the Unix epoch; `None` never expires.
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    /// A tombstone marks the address deleted as of this version; it carries
    /// no content.
    #[serde(default)]
    pub tombstone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> ContextNode {
        ContextNode::new(
            UcxlAddress::parse("ucxl://a:developer@p:t/*^/src/lib.rs").unwrap(),
            "the library root",
            vec![RoleName::new("developer").unwrap()],
        )
    }

    #[test]
    fn validation_names_the_problem() {
        let roles = RoleSet::default();
        let lim = ContextLimits::default();
        assert_eq!(node().validate(&roles, &lim), Ok(()));

        let mut n = node();
        n.summary = "  ".into();
        assert_eq!(n.validate(&roles, &lim), Err(ValidationError::EmptySummary));

        let mut n = node();
        n.rag_confidence = 1.5;
        assert!(matches!(
            n.validate(&roles, &lim),
            Err(ValidationError::ConfidenceOutOfRange(_))
        ));
        n.rag_confidence = f64::NAN;
        assert!(matches!(
            n.validate(&roles, &lim),
            Err(ValidationError::ConfidenceOutOfRange(_))
        ));

        let mut n = node();
        n.encrypted_for = vec![RoleName::new("ghost").unwrap()];
        assert_eq!(
            n.validate(&roles, &lim),
            Err(ValidationError::UnknownRole("ghost".into()))
        );

        let mut n = node();
        n.encrypted_for.clear();
        assert_eq!(n.validate(&roles, &lim), Err(ValidationError::NoRoles));

        let mut n = node();
        n.address = UcxlAddress::parse("ucxl://any:developer@p:t/*^/x").unwrap();
        assert!(matches!(
            n.validate(&roles, &lim),
            Err(ValidationError::PatternAddress(_))
        ));

        let mut n = node();
        n.tags = vec!["x".repeat(lim.max_text + 1)];
        assert!(matches!(
            n.validate(&roles, &lim),
            Err(ValidationError::TooLong { field: "tags", .. })
        ));

        let mut n = node();
        n.tags = vec!["".into()];
        assert!(matches!(
            n.validate(&roles, &lim),
            Err(ValidationError::EmptyEntry { field: "tags" })
        ));
    }

    #[test]
    fn json_defaults_fill_optional_fields() {
        let n: ContextNode = serde_json::from_str(
            r#"{"address":"ucxl://a:developer@p:t/*^/x","path":"x","summary":"s","encrypted_for":["developer"]}"#,
        )
        .unwrap();
        assert!(n.applies_to_children);
        assert_eq!(n.rag_confidence, 1.0);
        assert!(n.version.is_none());
    }

    #[test]
    fn path_may_be_left_out() {
        // Import files need not repeat the address's path.
        let n: ContextNode = serde_json::from_str(
            r#"{"address":"ucxl://a:developer@p:t/*^/src/x.rs","summary":"s","encrypted_for":["developer"]}"#,
        )
        .unwrap();
        assert_eq!(n.path, "");
        assert_eq!(n.address.path, "src/x.rs");
    }
}
