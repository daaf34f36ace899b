//! Typed errors, one enum per concern.
//!
//! Callers match on what they can handle: a bad query is the user's to fix
//! ([`SearchError::InvalidQuery`]), a bad configuration the operator's
//! ([`ConfigError`]), a failed write the node's ([`IndexError`]). Messages
//! never carry the text of a context: at most a storage key, a field name or
//! (for query errors, which go back to the user who typed it) a bounded
//! excerpt of the query.

/// Longest excerpt of user input quoted in an error message, in bytes.
pub(crate) const MAX_QUOTED: usize = 200;

/// Cuts `s` to at most [`MAX_QUOTED`] bytes on a character boundary.
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_string();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A configuration value out of range. Names the key and the allowed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("index config `{key}` = {value} is out of range: {expected}")]
    OutOfRange {
        key: &'static str,
        value: String,
        expected: String,
    },
}

impl ConfigError {
    pub(crate) fn out_of_range(
        key: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        ConfigError::OutOfRange {
            key,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Why an index operation (write, commit, merge, open) failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("entry for key {key:?} rejected: {reason}")]
    InvalidEntry { key: String, reason: String },
    #[error("segment merge did not start: {0}")]
    MergeBusy(String),
    #[error("index engine error: {0}")]
    Engine(#[from] tantivy::TantivyError),
    #[error("index data directory: {0}")]
    Io(#[from] std::io::Error),
}

impl IndexError {
    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        IndexError::InvalidEntry {
            key: quote(key),
            reason: reason.into(),
        }
    }
}

/// Which side of an operator lacks a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingSide {
    Before,
    After,
    Both,
}

/// One thing wrong with query text. Columns count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryProblem {
    #[error("{}", unclosed_parentheses(.columns))]
    UnclosedParentheses { columns: Vec<usize> },
    #[error("`)` at column {column} closes no parenthesis")]
    UnopenedParenthesis { column: usize },
    #[error("the quote at column {column} is never closed")]
    UnclosedQuote { column: usize },
    #[error("`{operator}` at column {column} has no term {}", match .side {
        MissingSide::Before => "before it",
        MissingSide::After => "after it",
        MissingSide::Both => "on either side",
    })]
    MissingOperand {
        operator: &'static str,
        column: usize,
        side: MissingSide,
    },
    #[error("there is no field {field:?} (fields: {known})")]
    UnknownField { field: String, known: String },
    /// What the engine's parser says, as it says it.
    #[error("{0}")]
    Syntax(String),
}

fn unclosed_parentheses(columns: &[usize]) -> String {
    let at = columns
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match columns.len() {
        1 => format!("the parenthesis at column {at} is never closed"),
        n => format!("{n} parentheses are never closed (at columns {at})"),
    }
}

fn join_problems(list: &[QueryProblem]) -> String {
    list.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a search (or a statistics request) was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query text does not say one clear thing; every problem found
    /// is listed.
    #[error(
        "invalid query {query:?}: {}; put words in double quotes to search for them as written",
        join_problems(.problems)
    )]
    InvalidQuery {
        query: String,
        problems: Vec<QueryProblem>,
    },
    #[error("query text is {len} bytes, over the limit of {max}")]
    QueryTooLong { len: usize, max: usize },
    #[error("query nests parentheses {depth} deep, over the limit of {max}")]
    QueryTooDeep { depth: usize, max: usize },
    #[error("limit {limit} is outside 1..={max}")]
    LimitOutOfRange { limit: usize, max: usize },
    #[error("offset {offset} is over the limit of {max}")]
    OffsetTooLarge { offset: usize, max: usize },
    #[error("{filter} filter has {len} values, over the limit of {max}")]
    TooManyFilterValues {
        filter: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{filter} filter has an empty value")]
    EmptyFilterValue { filter: &'static str },
    #[error("stored field {field} of a hit is unreadable: {reason}")]
    StoredField { field: &'static str, reason: String },
    #[error("time range is empty: generated_after {after} is not before generated_before {before}")]
    EmptyTimeRange { after: u64, before: u64 },
    #[error(transparent)]
    Statistics(#[from] StatisticsError),
    #[error("index engine error: {0}")]
    Engine(#[from] tantivy::TantivyError),
}

impl SearchError {
    /// Whether the request is at fault (bad query text, a limit exceeded,
    /// a bad filter) rather than the index or the statistics a node was
    /// given: the user who sent it can fix it.
    pub fn is_invalid_request(&self) -> bool {
        !matches!(
            self,
            SearchError::StoredField { .. } | SearchError::Statistics(_) | SearchError::Engine(_)
        )
    }
}

/// Term statistics that cannot be used or combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatisticsError {
    #[error("statistics are for role {found:?}, the query is for role {expected:?}")]
    RoleMismatch { expected: String, found: String },
    #[error(
        "term {field}:{term:?} has document frequency {doc_freq}, over the document count {total_docs}"
    )]
    DocFreqOverTotal {
        field: String,
        term: String,
        doc_freq: u64,
        total_docs: u64,
    },
    #[error("statistics name field {0:?}, which this index does not have")]
    UnknownField(String),
    #[error("statistics count overflowed while merging")]
    Overflow,
}

/// A slot scope that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotScopeError {
    #[error("slot range [{first}, {last}] is reversed: first is greater than last")]
    ReversedRange { first: u16, last: u16 },
}

/// Why a rebuild stopped. The index that was live before the rebuild is
/// still live and unchanged.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("reading the store failed after {indexed} entries: {source}")]
    Source {
        indexed: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("rebuild failed after {indexed} entries: {source}")]
    Index {
        indexed: u64,
        #[source]
        source: IndexError,
    },
}
