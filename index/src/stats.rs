//! BM25 statistics: scoped to the searching role, and exchangeable between
//! nodes.
//!
//! BM25 ranks with corpus statistics: how many documents there are, how
//! many contain each term, how long a field is on average. Two choices here
//! follow from what the index promises.
//!
//! *Scoped to the role.* Statistics over the whole index would let a search
//! by `developer` be influenced by architect-only documents: the score of a
//! visible hit would change with how often a word appears in documents the
//! role may not read, a side channel. So every statistic counts only the
//! live documents the searching role may read ([`ScopedStats`]), and within
//! the search's slot scope ([`crate::SlotScope`]) when it has one. Totals
//! per role and scope are computed once per searcher generation; a term's
//! document frequency is an intersection count (the term's and the role's
//! posting lists, and the scope's filter), remembered for the rest of the
//! generation (a commit starts a new one).
//!
//! *Exchangeable.* Distributed search must rank as one global index would.
//! [`QueryStatistics`] is what a node reports for a query (document count,
//! per-term document frequency, per-field token totals), [`QueryStatistics::merge`]
//! sums reports from several nodes, and a search with the merged figures
//! ([`crate::ContextIndex::search_with_statistics`]) scores every local hit
//! exactly as the union index would. Counting only live documents (not the
//! deleted ones an engine keeps until a merge) and summing field lengths
//! per document makes the figures independent of segment layout, so the
//! equality is exact. Nodes holding replicas of the same document must
//! report it once: the coordinator gives each node a slot scope (the
//! partitions it answers for, disjoint between nodes), and each node reports
//! [`crate::ContextIndex::term_statistics_scoped`] and searches with
//! [`crate::ContextIndex::search_scoped`] in that scope.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, EnableScoring, Query, TermQuery};
use tantivy::schema::{Facet, Field, IndexRecordOption, Schema, Type};
use tantivy::{DocSet, Searcher, TERMINATED, Term};

use slurp_protocol::RoleName;

use crate::error::StatisticsError;
use crate::schema::Fields;
use crate::scope::SlotScope;

/// Figures of one role's documents within one slot scope, for one
/// searcher generation. Immutable data, so they are shared by every search
/// of that generation; the memo of document frequencies fills as queries
/// come.
#[derive(Debug, Default)]
pub(crate) struct RoleTotals {
    /// Live documents the role may read, within the scope.
    pub docs: u64,
    /// Sum over those documents of each text field's length in tokens (as
    /// the engine encodes it for scoring).
    pub tokens: HashMap<Field, u64>,
    /// Terms' document frequencies among those documents, as counted so far.
    doc_freqs: Mutex<HashMap<Term, u64>>,
    /// Token totals of fields other than the text fields, as counted so far.
    extra_tokens: Mutex<HashMap<Field, u64>>,
}

/// Most document frequencies remembered per role, scope and generation;
/// past it the memo starts over.
const DOC_FREQ_MEMO: usize = 16_384;

/// The documents statistics count: those one role may read, within one
/// slot scope.
pub(crate) struct Population {
    role_term: Term,
    /// The scope's filter clause; `None` for every slot, which keeps the
    /// unscoped path a single posting list.
    scope: Option<Box<dyn Query>>,
}

impl Population {
    pub fn new(fields: &Fields, role: &RoleName, scope: &SlotScope) -> Self {
        Population {
            role_term: fields.reader_term(role),
            scope: scope.filter_query(),
        }
    }

    fn role_query(&self) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            self.role_term.clone(),
            IndexRecordOption::Basic,
        ))
    }

    /// The population's documents, with `extra` clauses required as well.
    fn query_with(&self, extra: Option<Box<dyn Query>>) -> Box<dyn Query> {
        if extra.is_none() && self.scope.is_none() {
            return self.role_query();
        }
        let mut clauses: Vec<Box<dyn Query>> = extra.into_iter().collect();
        clauses.push(self.role_query());
        if let Some(scope) = &self.scope {
            clauses.push(scope.box_clone());
        }
        Box::new(BooleanQuery::intersection(clauses))
    }
}

/// Walks the live documents of `population`, calling `visit` with each
/// document's segment ordinal and id.
fn for_each_doc(
    searcher: &Searcher,
    population: &Population,
    mut visit: impl FnMut(usize, u32),
) -> tantivy::Result<()> {
    let weight = population
        .query_with(None)
        .weight(EnableScoring::disabled_from_searcher(searcher))?;
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let mut scorer = weight.scorer(segment, 1.0)?;
        let alive = segment.alive_bitset();
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                visit(ord, doc);
            }
            doc = scorer.advance();
        }
    }
    Ok(())
}

/// Counts the population's live documents and sums each of `fields'`
/// encoded lengths over them. A field without length norms counts one
/// token per document, as the engine scores it.
fn population_sums(
    searcher: &Searcher,
    population: &Population,
    fields: &[Field],
) -> tantivy::Result<(u64, Vec<u64>)> {
    let mut norms = Vec::with_capacity(searcher.segment_readers().len());
    for segment in searcher.segment_readers() {
        let mut per_field = Vec::with_capacity(fields.len());
        for f in fields {
            per_field.push(segment.fieldnorms_readers().get_field(*f)?);
        }
        norms.push(per_field);
    }
    let mut docs = 0u64;
    let mut sums = vec![0u64; fields.len()];
    for_each_doc(searcher, population, |ord, doc| {
        docs += 1;
        for (sum, n) in sums.iter_mut().zip(&norms[ord]) {
            *sum += n.as_ref().map_or(1, |n| u64::from(n.fieldnorm(doc)));
        }
    })?;
    Ok((docs, sums))
}

fn compute_totals(
    searcher: &Searcher,
    fields: &Fields,
    population: &Population,
) -> tantivy::Result<RoleTotals> {
    let text_fields = fields.text_fields();
    let (docs, sums) = population_sums(searcher, population, &text_fields)?;
    Ok(RoleTotals {
        docs,
        tokens: text_fields.into_iter().zip(sums).collect(),
        ..RoleTotals::default()
    })
}

/// Engine id, searcher generation, role and slot scope.
type TotalsKey = (u64, u64, RoleName, SlotScope);

/// Caches [`RoleTotals`] per (engine, searcher generation, role, slot
/// scope). A commit makes a new generation, so entries never go stale; old
/// ones are evicted first-in first-out. A node of a cluster sees a handful
/// of scopes (the partitions a coordinator assigns it), so scoped entries
/// are reused as unscoped ones are.
#[derive(Default)]
pub(crate) struct StatsCache {
    entries: Mutex<VecDeque<(TotalsKey, Arc<RoleTotals>)>>,
}

const STATS_CACHE_ENTRIES: usize = 64;

impl StatsCache {
    pub fn totals(
        &self,
        engine_id: u64,
        searcher: &Searcher,
        fields: &Fields,
        role: &RoleName,
        scope: &SlotScope,
        population: &Population,
    ) -> tantivy::Result<Arc<RoleTotals>> {
        let generation = searcher.generation().generation_id();
        let matches =
            |k: &TotalsKey| k.0 == engine_id && k.1 == generation && k.2 == *role && k.3 == *scope;
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, t)) = entries.iter().find(|(k, _)| matches(k)) {
                return Ok(t.clone());
            }
        }
        let totals = Arc::new(compute_totals(searcher, fields, population)?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= STATS_CACHE_ENTRIES {
            entries.pop_front();
        }
        entries.push_back((
            (engine_id, generation, role.clone(), scope.clone()),
            totals.clone(),
        ));
        Ok(totals)
    }
}

/// BM25 statistics of one searcher restricted to one role's documents
/// within one slot scope.
pub(crate) struct ScopedStats<'a> {
    searcher: &'a Searcher,
    population: &'a Population,
    totals: Arc<RoleTotals>,
}

impl<'a> ScopedStats<'a> {
    pub fn new(
        searcher: &'a Searcher,
        population: &'a Population,
        totals: Arc<RoleTotals>,
    ) -> Self {
        ScopedStats {
            searcher,
            population,
            totals,
        }
    }

    pub fn docs(&self) -> u64 {
        self.totals.docs
    }

    /// Live documents of the population containing `term`.
    pub fn scoped_doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let memo = &self.totals.doc_freqs;
        if let Some(n) = memo.lock().unwrap_or_else(|e| e.into_inner()).get(term) {
            return Ok(*n);
        }
        let n = if self.totals.docs == 0 {
            0
        } else {
            let term_query = TermQuery::new(term.clone(), IndexRecordOption::Basic);
            self.population
                .query_with(Some(Box::new(term_query)))
                .count(self.searcher)? as u64
        };
        let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() >= DOC_FREQ_MEMO {
            memo.clear();
        }
        memo.insert(term.clone(), n);
        Ok(n)
    }

    /// Total tokens of `field` over the population's documents.
    pub fn scoped_tokens(&self, field: Field) -> tantivy::Result<u64> {
        if let Some(n) = self.totals.tokens.get(&field) {
            return Ok(*n);
        }
        let mut extra = self
            .totals
            .extra_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = extra.get(&field) {
            return Ok(*n);
        }
        let (_, sums) = population_sums(self.searcher, self.population, &[field])?;
        let n = sums[0];
        extra.insert(field, n);
        Ok(n)
    }
}

impl Bm25StatisticsProvider for ScopedStats<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        self.scoped_tokens(field)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        // The engine divides by this; a role (or scope) with no documents
        // matches nothing, so 1 changes no score.
        Ok(self.totals.docs.max(1))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        Ok(self.scoped_doc_freq(term)?.min(self.totals.docs))
    }
}

/// A term's value as exchanged between nodes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TermValue {
    /// A token of a text or keyword field.
    Text(String),
    /// A facet, as `/tag/security`.
    Facet(String),
}

/// The document frequency of one query term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermStatistic {
    /// The field name (see [`crate::schema::names`]).
    pub field: String,
    pub value: TermValue,
    /// Documents containing the term.
    pub doc_freq: u64,
}

/// The BM25 statistics of one query over the documents one role may read
/// (within a slot scope, when one was given).
///
/// What [`crate::ContextIndex::term_statistics`] and
/// [`crate::ContextIndex::term_statistics_scoped`] return and
/// [`crate::ContextIndex::search_with_statistics`] and
/// [`crate::ContextIndex::search_scoped`] accept. Several nodes' reports
/// [`merge`](QueryStatistics::merge) by summing; the scope is not recorded,
/// since reports of disjoint scopes are what get summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryStatistics {
    /// The role the figures are scoped to.
    pub role: RoleName,
    /// Documents the role may read (within the scope).
    pub total_docs: u64,
    /// Total tokens per field over those documents, for every field a
    /// query term is in.
    pub field_tokens: BTreeMap<String, u64>,
    /// One entry per distinct query term, sorted by field then value.
    pub terms: Vec<TermStatistic>,
}

impl QueryStatistics {
    /// Adds `other` (another node's report for the same query and role).
    /// Terms and fields only one side has are kept as they are.
    pub fn merge(&mut self, other: &QueryStatistics) -> Result<(), StatisticsError> {
        if self.role != other.role {
            return Err(StatisticsError::RoleMismatch {
                expected: self.role.to_string(),
                found: other.role.to_string(),
            });
        }
        self.total_docs = self
            .total_docs
            .checked_add(other.total_docs)
            .ok_or(StatisticsError::Overflow)?;
        for (field, n) in &other.field_tokens {
            let slot = self.field_tokens.entry(field.clone()).or_insert(0);
            *slot = slot.checked_add(*n).ok_or(StatisticsError::Overflow)?;
        }
        let mut terms: BTreeMap<(String, TermValue), u64> = self
            .terms
            .drain(..)
            .map(|t| ((t.field, t.value), t.doc_freq))
            .collect();
        for t in &other.terms {
            let slot = terms.entry((t.field.clone(), t.value.clone())).or_insert(0);
            *slot = slot
                .checked_add(t.doc_freq)
                .ok_or(StatisticsError::Overflow)?;
        }
        self.terms = terms
            .into_iter()
            .map(|((field, value), doc_freq)| TermStatistic {
                field,
                value,
                doc_freq,
            })
            .collect();
        Ok(())
    }

    /// Collects the statistics of `query`'s terms.
    pub(crate) fn collect(
        role: &RoleName,
        schema: &Schema,
        query: Option<&dyn Query>,
        stats: &ScopedStats<'_>,
    ) -> tantivy::Result<QueryStatistics> {
        let mut terms: BTreeSet<Term> = BTreeSet::new();
        if let Some(q) = query {
            q.query_terms(&mut |t, _| {
                terms.insert(t.clone());
            });
        }
        let mut field_tokens = BTreeMap::new();
        let mut out = Vec::new();
        for term in terms {
            let Some(value) = term_value(&term) else {
                continue;
            };
            let field = schema.get_field_name(term.field()).to_string();
            if !field_tokens.contains_key(&field) {
                field_tokens.insert(field.clone(), stats.scoped_tokens(term.field())?);
            }
            out.push(TermStatistic {
                field,
                value,
                doc_freq: stats.scoped_doc_freq(&term)?,
            });
        }
        out.sort_by(|a, b| (&a.field, &a.value).cmp(&(&b.field, &b.value)));
        Ok(QueryStatistics {
            role: role.clone(),
            total_docs: stats.docs(),
            field_tokens,
            terms: out,
        })
    }
}

fn term_value(term: &Term) -> Option<TermValue> {
    let v = term.value();
    match v.typ() {
        Type::Str => v.as_str().map(|s| TermValue::Text(s.to_string())),
        Type::Facet => v.as_facet().map(|f| TermValue::Facet(f.to_string())),
        _ => None,
    }
}

/// Statistics supplied by the caller (merged from several nodes), falling
/// back to the local scoped figures for anything they do not cover.
pub(crate) struct SuppliedStats<'a> {
    total_docs: u64,
    tokens: HashMap<Field, u64>,
    doc_freqs: HashMap<Term, u64>,
    local: &'a ScopedStats<'a>,
}

impl<'a> SuppliedStats<'a> {
    pub fn new(
        stats: &QueryStatistics,
        schema: &Schema,
        local: &'a ScopedStats<'a>,
    ) -> Result<Self, StatisticsError> {
        let field = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| StatisticsError::UnknownField(crate::error::quote(name)))
        };
        let mut tokens = HashMap::new();
        for (name, n) in &stats.field_tokens {
            tokens.insert(field(name)?, *n);
        }
        let mut doc_freqs = HashMap::new();
        for t in &stats.terms {
            if t.doc_freq > stats.total_docs {
                return Err(StatisticsError::DocFreqOverTotal {
                    field: crate::error::quote(&t.field),
                    term: match &t.value {
                        TermValue::Text(s) | TermValue::Facet(s) => crate::error::quote(s),
                    },
                    doc_freq: t.doc_freq,
                    total_docs: stats.total_docs,
                });
            }
            let f = field(&t.field)?;
            let term = match &t.value {
                TermValue::Text(s) => Term::from_field_text(f, s),
                TermValue::Facet(s) => match Facet::from_text(s) {
                    Ok(facet) => Term::from_facet(f, &facet),
                    Err(_) => continue,
                },
            };
            doc_freqs.insert(term, t.doc_freq);
        }
        Ok(SuppliedStats {
            total_docs: stats.total_docs,
            tokens,
            doc_freqs,
            local,
        })
    }
}

impl Bm25StatisticsProvider for SuppliedStats<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        match self.tokens.get(&field) {
            Some(n) => Ok(*n),
            None => self.local.scoped_tokens(field),
        }
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.total_docs.max(1))
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let n = match self.doc_freqs.get(term) {
            Some(n) => *n,
            None => self.local.scoped_doc_freq(term)?,
        };
        // The engine requires doc_freq <= total docs; a report missing a
        // term must not break that.
        Ok(n.min(self.total_docs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RoleName {
        RoleName::new(s).unwrap()
    }

    fn stats(role: &str, docs: u64, terms: &[(&str, &str, u64)]) -> QueryStatistics {
        QueryStatistics {
            role: r(role),
            total_docs: docs,
            field_tokens: terms
                .iter()
                .map(|(f, _, _)| (f.to_string(), docs * 3))
                .collect(),
            terms: terms
                .iter()
                .map(|(f, v, n)| TermStatistic {
                    field: f.to_string(),
                    value: TermValue::Text(v.to_string()),
                    doc_freq: *n,
                })
                .collect(),
        }
    }

    #[test]
    fn merge_sums_and_keeps_one_sided_terms() {
        let mut a = stats(
            "developer",
            10,
            &[("summary", "cache", 2), ("summary", "auth", 1)],
        );
        let b = stats(
            "developer",
            5,
            &[("summary", "cache", 3), ("insights", "lru", 4)],
        );
        a.merge(&b).unwrap();
        assert_eq!(a.total_docs, 15);
        assert_eq!(a.field_tokens["summary"], 45);
        assert_eq!(a.field_tokens["insights"], 15);
        let find = |f: &str, v: &str| {
            a.terms
                .iter()
                .find(|t| t.field == f && t.value == TermValue::Text(v.into()))
                .map(|t| t.doc_freq)
        };
        assert_eq!(find("summary", "cache"), Some(5));
        assert_eq!(find("summary", "auth"), Some(1));
        assert_eq!(find("insights", "lru"), Some(4));
    }

    #[test]
    fn merge_refuses_another_role_and_overflow() {
        let mut a = stats("developer", 10, &[]);
        assert!(matches!(
            a.merge(&stats("architect", 1, &[])),
            Err(StatisticsError::RoleMismatch { .. })
        ));
        let mut big = stats("developer", u64::MAX, &[]);
        assert_eq!(
            big.merge(&stats("developer", 1, &[])),
            Err(StatisticsError::Overflow)
        );
    }

    #[test]
    fn statistics_round_trip_through_json() {
        let mut s = stats("developer", 7, &[("summary", "cache", 2)]);
        s.terms.push(TermStatistic {
            field: "facets".into(),
            value: TermValue::Facet("/tag/security".into()),
            doc_freq: 1,
        });
        let back: QueryStatistics =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
