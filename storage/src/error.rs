//! Errors of the store, one enum per concern.
//!
//! Opening, writing, reading and maintenance fail for different reasons and
//! callers handle them differently (a refused write is the caller's fault, a
//! failed commit is the disk's, a corrupt value concerns one key only), so
//! each has its own enum; [`Error`] unites them for callers that only report.

use std::sync::Arc;

use slurp_protocol::AddressError;

use crate::config::ConfigError;

/// A stored value that cannot be decoded. Names the table and the key, so
/// one damaged record can be found and repaired while every other key stays
/// readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt value in table {table} at {key}: {reason}")]
pub struct CorruptValue {
    /// The table the value is in.
    pub table: &'static str,
    /// The record's storage key (or the table key, printed, where no
    /// storage key can be recovered).
    pub key: String,
    /// What is wrong with the bytes.
    pub reason: String,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open database file {path}: {source}")]
    Database {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("database file {path} has schema version {found}; this build reads up to {supported}")]
    SchemaTooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("database file {path} has an unreadable schema version record: {reason}")]
    SchemaUnreadable { path: String, reason: String },
    #[error("storage error while opening: {0}")]
    Storage(#[from] redb::Error),
    #[error("cannot build the slot digests of {path}: {source}")]
    Digests {
        path: String,
        #[source]
        source: Box<ReadError>,
    },
    #[error("cannot start the writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What is wrong with a record a caller asked to store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    #[error("the key is not a storage key: {0}")]
    BadKey(#[source] AddressError),
    #[error("the key is a pattern (has `any`); only concrete addresses are stored")]
    PatternKey,
    #[error("the key is not in canonical form (expected {expected:?})")]
    NonCanonicalKey { expected: String },
    #[error("path {0:?}: only [A-Za-z0-9_-/.] allowed, at most 1024 bytes")]
    BadPath(String),
    #[error("decision link {link:?} is not a concrete storage key: {reason}")]
    BadLink { link: String, reason: String },
    #[error("{field} has {len} entries, over the limit of {max}")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the envelope is empty and the version is not a tombstone")]
    EmptyEnvelope,
    #[error("backup id {0:?}: 1 to 128 characters of [A-Za-z0-9_.-]")]
    BadBackupId(String),
    #[error("a replaced version must keep its metadata; only its sealed bytes may change")]
    MetadataChanged,
}

/// A hint target (the peer a hinted version belongs on) the store cannot
/// key hints by: empty, longer than
/// [`crate::layout::MAX_HINT_TARGET_LEN`] bytes, or containing `0x00` (the
/// terminator of the target inside a hint key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hint target {target:?}: {reason}")]
pub struct HintTargetError {
    /// The rejected target (bounded to 80 characters).
    pub target: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why a write was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("invalid record for {key}: {problem}")]
    Invalid {
        key: String,
        #[source]
        problem: RecordProblem,
    },
    #[error("value for {key} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
    #[error("cannot encode the value for {key}: {reason}")]
    Encode { key: String, reason: String },
    #[error(transparent)]
    HintTarget(#[from] HintTargetError),
    #[error(transparent)]
    Corrupt(#[from] CorruptValue),
    #[error("the commit failed; nothing of this batch was stored: {0}")]
    CommitFailed(#[source] Arc<redb::Error>),
    #[error("the store is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    #[error(transparent)]
    Corrupt(#[from] CorruptValue),
    #[error(transparent)]
    HintTarget(#[from] HintTargetError),
}

/// `From` each of redb's per-operation errors, through `redb::Error`.
macro_rules! from_redb {
    ($target:ty, $wrap:expr) => {
        from_redb!(@one $target, $wrap, redb::StorageError);
        from_redb!(@one $target, $wrap, redb::TransactionError);
        from_redb!(@one $target, $wrap, redb::TableError);
        from_redb!(@one $target, $wrap, redb::CommitError);
    };
    (@one $target:ty, $wrap:expr, $src:ty) => {
        impl From<$src> for $target {
            fn from(e: $src) -> Self {
                $wrap(redb::Error::from(e))
            }
        }
    };
}

from_redb!(ReadError, ReadError::Storage);

/// Why a sweep, compaction or check did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MaintenanceError {
    #[error("storage error: {0}")]
    Storage(#[source] Arc<redb::Error>),
    #[error("compaction failed: {0}")]
    Compaction(String),
    #[error(transparent)]
    Corrupt(#[from] CorruptValue),
    #[error("the store is closed")]
    Closed,
}

from_redb!(MaintenanceError, |e| MaintenanceError::Storage(Arc::new(e)));

impl From<redb::Error> for MaintenanceError {
    fn from(e: redb::Error) -> Self {
        MaintenanceError::Storage(Arc::new(e))
    }
}

/// Any error of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Maintenance(#[from] MaintenanceError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}
