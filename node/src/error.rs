//! Errors of the context store, each one a caller can act on.
//!
//! The API maps each variant to one HTTP status and the CLI to one exit
//! code, so "not found", "forbidden" and "bad input" stay distinguishable
//! from the edge of the system to a script's `$?`.

use slurp_protocol::{AddressError, RoleName, ValidationError, VersionId};

/// The error of a lower layer (storage, crypto, index) a [`StoreError`]
/// carries, kept whole so `source()` walks down to it.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong with a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("invalid context: {0}")]
    Invalid(#[from] ValidationError),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("no context at {0}")]
    NotFound(String),
    #[error("{address} was deleted (tombstone {version})")]
    Deleted { address: String, version: VersionId },
    #[error("role {role} may not {action} {target}")]
    Forbidden {
        role: RoleName,
        action: &'static str,
        target: String,
    },
    #[error("{address} changed: latest is {actual}, the write expected {expected}")]
    Conflict {
        address: String,
        expected: String,
        actual: String,
    },
    #[error("{what} has {len} items, over the limit of {max}")]
    TooMany {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("operation timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("this node holds no key of role {0}; it cannot open records for it")]
    NoKey(RoleName),
    #[error("local store: {0}")]
    Storage(#[source] Cause),
    #[error("encryption: {0}")]
    Crypto(#[source] Cause),
    #[error("index: {0}")]
    Index(#[source] Cause),
    #[error("search: {0}")]
    Search(String),
    /// Query text that does not say one clear thing; the message names
    /// every problem found in it.
    #[error("{0}")]
    InvalidQuery(String),
    #[error("internal: {0}")]
    Internal(String),
    /// Fewer replicas answered than the quorum needs. The write may have
    /// reached some of them; it is not acknowledged. `op` and `address`
    /// are the operation the user asked for and the address as given;
    /// `during` names the step that failed when it is not the operation
    /// itself (a write first reads the parent version from a read quorum).
    #[error(
        "{op} of {address}{}: {acked} of the {needed} replicas needed answered ({detail})",
        .during.map(|d| format!(" failed while {d}")).unwrap_or_default()
    )]
    Quorum {
        op: &'static str,
        address: String,
        during: Option<&'static str>,
        needed: usize,
        acked: usize,
        detail: String,
    },
    /// The cluster cannot serve the request now (no layout member
    /// reachable, the node is shutting down).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// A short machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Address(_) => "bad_address",
            StoreError::Invalid(_) => "invalid_context",
            StoreError::BadRequest(_) => "bad_request",
            StoreError::NotFound(_) => "not_found",
            StoreError::Deleted { .. } => "deleted",
            StoreError::Forbidden { .. } => "forbidden",
            StoreError::Conflict { .. } => "conflict",
            StoreError::TooMany { .. } => "too_many",
            StoreError::Timeout(_) => "timeout",
            StoreError::NoKey(_) => "no_key",
            StoreError::Storage(_) => "storage",
            StoreError::Crypto(_) => "crypto",
            StoreError::Index(_) => "index",
            StoreError::Search(_) => "bad_query",
            StoreError::InvalidQuery(_) => "invalid_query",
            StoreError::Internal(_) => "internal",
            StoreError::Quorum { .. } => "quorum",
            StoreError::Unavailable(_) => "unavailable",
        }
    }
}

impl StoreError {
    /// A quorum failure of one step restated as a failure of the operation
    /// the user asked for (`op` of `address`, as given), `during` that
    /// step; any other error is returned as it is.
    pub(crate) fn quorum_of(
        self,
        op: &'static str,
        address: &str,
        during: Option<&'static str>,
    ) -> Self {
        match self {
            StoreError::Quorum {
                needed,
                acked,
                detail,
                ..
            } => StoreError::Quorum {
                op,
                address: address.to_string(),
                during,
                needed,
                acked,
                detail,
            },
            e => e,
        }
    }
}

impl From<slurp_storage::ReadError> for StoreError {
    fn from(e: slurp_storage::ReadError) -> Self {
        StoreError::Storage(Box::new(e))
    }
}

impl From<slurp_storage::WriteError> for StoreError {
    fn from(e: slurp_storage::WriteError) -> Self {
        StoreError::Storage(Box::new(e))
    }
}

impl From<slurp_crypto::EnvelopeError> for StoreError {
    fn from(e: slurp_crypto::EnvelopeError) -> Self {
        StoreError::Crypto(Box::new(e))
    }
}

impl From<slurp_crypto::KeyError> for StoreError {
    fn from(e: slurp_crypto::KeyError) -> Self {
        StoreError::Crypto(Box::new(e))
    }
}

impl From<slurp_index::IndexError> for StoreError {
    fn from(e: slurp_index::IndexError) -> Self {
        StoreError::Index(Box::new(e))
    }
}

impl From<slurp_index::SearchError> for StoreError {
    fn from(e: slurp_index::SearchError) -> Self {
        match e {
            slurp_index::SearchError::InvalidQuery { .. } => {
                StoreError::InvalidQuery(e.to_string())
            }
            e if e.is_invalid_request() => StoreError::Search(e.to_string()),
            e => StoreError::Index(Box::new(e)),
        }
    }
}
