//! Search: free text with BM25, filters, snippets and facet counts, always
//! as one role.
//!
//! The role filter is part of the query the engine runs, not a pass over
//! its results: hits, the total count, facet counts and paging all come
//! from the same filtered query, so documents a role may not read can never
//! show up in any of them, whatever the limit or offset. Ranking statistics
//! are scoped to the role as well (see [`crate::stats`]). A slot scope
//! ([`crate::SlotScope`], for one node's share of a distributed search) is
//! one more filter clause of the same query, with the same guarantees; the
//! unscoped entry points add no clause at all.
//!
//! Query text uses the engine's query language (words, `"phrases"`,
//! `field:word`, `+must`, `-not`, `AND`/`OR`/`NOT`, parentheses). Text that
//! does not say one clear thing (unbalanced parentheses or quotes, `AND`
//! or `OR` without a term on each side, an unknown field, anything else
//! the engine would have to repair) is a [`SearchError::InvalidQuery`]
//! listing every [`crate::QueryProblem`] found, never a repaired guess: a
//! repaired `AND OR (((` would match every document. In the default
//! [`QuerySyntax::Lenient`] mode, ordinary text the engine reads as words
//! (`c++`, `what's this?`, `foo-bar`) is accepted; [`QuerySyntax::Strict`]
//! uses the engine's strict grammar, which refuses some of it. Neither mode
//! panics on any input: length and nesting are bounded first.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParserError,
    RangeQuery, TermQuery,
};
use tantivy::schema::{Facet, IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};

use slurp_protocol::{RoleName, VersionId};

use crate::error::{QueryProblem, SearchError, quote};
use crate::index::{ContextIndex, Engine};
use crate::observer::SearchEvent;
use crate::schema::{
    Fields, TAG_FACET_ROOT, TECH_FACET_ROOT, facet, names, normalize_facet_value, normalize_path,
};
use crate::scope::SlotScope;
use crate::stats::{Population, QueryStatistics, ScopedStats, SuppliedStats};

/// How query text is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuerySyntax {
    /// Read ordinary text as words (`what's this?`, `c++`); refuse text
    /// that is still broken with [`SearchError::InvalidQuery`].
    #[default]
    Lenient,
    /// The engine's strict grammar: also refuses some ordinary text
    /// (`what's this?`) with [`SearchError::InvalidQuery`].
    Strict,
}

fn default_limit() -> usize {
    10
}

fn yes() -> bool {
    true
}

/// One search, always as one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The role searching. Only documents this role may read are matched,
    /// counted, faceted and ranked against.
    pub role: RoleName,
    /// Free text, searched in summary, purpose, insights and path. Empty
    /// means "every document passing the filters", newest first.
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub syntax: QuerySyntax,
    /// Documents must have every one of these tags (case-insensitive).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Documents must have every one of these technologies
    /// (case-insensitive).
    #[serde(default)]
    pub technologies: Vec<String>,
    /// Documents whose path is this path or lies under it, by whole
    /// components (`src/auth` matches `src/auth/x.rs`, not `src/authz`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Generated at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub generated_after: Option<u64>,
    /// Generated strictly before this time (ms since the Unix epoch).
    #[serde(default)]
    pub generated_before: Option<u64>,
    /// Hits to return, `1..=max_limit`.
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Hits to skip, at most `max_offset`.
    #[serde(default)]
    pub offset: usize,
    /// Whether to count tags and technologies over all matches.
    #[serde(default = "yes")]
    pub facets: bool,
    /// Whether to build highlighted snippets for the hits.
    #[serde(default = "yes")]
    pub snippets: bool,
}

impl SearchQuery {
    /// A search for `text` as `role`, with default paging and no filters.
    pub fn new(role: RoleName, text: impl Into<String>) -> Self {
        SearchQuery {
            role,
            text: text.into(),
            syntax: QuerySyntax::default(),
            tags: vec![],
            technologies: vec![],
            path_prefix: None,
            generated_after: None,
            generated_before: None,
            limit: default_limit(),
            offset: 0,
            facets: true,
            snippets: true,
        }
    }
}

/// One hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The storage key of the context.
    pub key: String,
    /// The version indexed.
    pub version: VersionId,
    pub path: String,
    /// BM25 score; 0 when the query has no text (hits are then newest
    /// first).
    pub score: f32,
    /// An HTML snippet: text is escaped, matched words are wrapped in
    /// `<b>…</b>`. From the summary if a query word is in it, else from the
    /// insights, else the start of the summary. Empty when snippets were
    /// not requested.
    pub snippet: String,
    /// When the context was generated, ms since the Unix epoch.
    pub generated_at: u64,
}

pub use slurp_protocol::api::{FacetCount, FacetCounts};

/// The answer to a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    /// Documents matching the query and filters.
    pub total_hits: u64,
    /// The requested page, best first.
    pub hits: Vec<SearchHit>,
    pub facets: FacetCounts,
    /// Notes about the results (none from the index itself: query text
    /// that would need repairing is an error; a cluster adds notes such
    /// as hits left out).
    pub warnings: Vec<String>,
    /// Wall time of the search.
    pub took: Duration,
    /// Records the query's role may read, in the search's scope, that the
    /// index's source holds but could not open
    /// ([`ContextIndex::mark_unopenable`]): their matches, if any, are not
    /// in these results.
    #[serde(default)]
    pub unopenable: u64,
    /// Whether the index held everything its source has when it answered
    /// (not while a rebuild is expected or running, nor after one failed).
    #[serde(default)]
    pub coverage: crate::Coverage,
}

/// Parsed query text (none when the text is blank).
type ParsedText = Option<Box<dyn Query>>;

/// A validated query turned into engine queries.
struct Plan {
    /// The parsed text, if any.
    text: Option<Box<dyn Query>>,
    /// The full query: text (if any) and every filter.
    full: Box<dyn Query>,
}

/// Deepest nesting of parentheses outside quotes.
fn paren_depth(text: &str) -> usize {
    let (mut depth, mut max, mut quoted, mut escaped) = (0usize, 0usize, false, false);
    for c in text.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                max = max.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The first `max_chars` characters of `s`, cut at a word boundary when
/// one is near.
fn leading_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        None => s,
        Some((cut, _)) => {
            let head = &s[..cut];
            match head.rfind(char::is_whitespace) {
                Some(sp) if sp > cut / 2 => head[..sp].trim_end(),
                _ => head,
            }
        }
    }
}

impl ContextIndex {
    /// Runs `query` as `query.role`, ranking with statistics of this index
    /// (scoped to the role).
    pub fn search(&self, query: &SearchQuery) -> Result<SearchResults, SearchError> {
        self.run_search(query, &SlotScope::all(), None)
    }

    /// Runs `query` ranking with `stats`: the merged
    /// [`ContextIndex::term_statistics`] of several nodes makes each node
    /// score its hits exactly as one index over all their documents would.
    /// Terms or fields `stats` lacks fall back to this index's figures.
    pub fn search_with_statistics(
        &self,
        query: &SearchQuery,
        stats: &QueryStatistics,
    ) -> Result<SearchResults, SearchError> {
        self.search_scoped(query, &SlotScope::all(), Some(stats))
    }

    /// Runs `query` over the documents whose slot is in `scope` only: the
    /// hits, `total_hits`, facet counts and paging all come from the scoped
    /// query, exactly as from the role filter. This is one node's part of a
    /// distributed search, where every partition is answered by one node.
    ///
    /// With `stats` (the merged [`ContextIndex::term_statistics_scoped`] of
    /// every node, each over its own scope), hits score exactly as in one
    /// index holding every node's scoped documents; terms or fields `stats`
    /// lacks fall back to this index's figures within `scope`. Without, the
    /// ranking uses this index's figures within `scope`. An empty scope
    /// matches nothing. `stats` for another role is refused.
    pub fn search_scoped(
        &self,
        query: &SearchQuery,
        scope: &SlotScope,
        stats: Option<&QueryStatistics>,
    ) -> Result<SearchResults, SearchError> {
        if let Some(stats) = stats
            && stats.role != query.role
        {
            return Err(crate::error::StatisticsError::RoleMismatch {
                expected: query.role.to_string(),
                found: stats.role.to_string(),
            }
            .into());
        }
        self.run_search(query, scope, stats)
    }

    /// One shard of a distributed search: `query` is checked as the
    /// client sent it (its `limit` and `offset` within the configured
    /// maxima), then the `top` best hits of `scope` are returned from the
    /// first (at most `offset + limit` of them). The coordinator merges the
    /// shards' tops and only then skips `offset`, so each shard must answer
    /// for the whole page; checking the client's query rather than the
    /// shard's keeps a page within the limits answerable.
    pub fn search_scoped_top(
        &self,
        query: &SearchQuery,
        scope: &SlotScope,
        stats: Option<&QueryStatistics>,
        top: usize,
    ) -> Result<SearchResults, SearchError> {
        self.validate(query)?;
        let mut shard = query.clone();
        shard.offset = 0;
        shard.limit = top.clamp(1, query.offset.saturating_add(query.limit).max(1));
        if let Some(stats) = stats
            && stats.role != query.role
        {
            return Err(crate::error::StatisticsError::RoleMismatch {
                expected: query.role.to_string(),
                found: stats.role.to_string(),
            }
            .into());
        }
        let c = &self.shared.config;
        self.run_search_within(
            &shard,
            scope,
            stats,
            c.max_limit.saturating_add(c.max_offset),
        )
    }

    /// Checks `query` as a search would (limits, filters, query text)
    /// without running it: how a node coordinating a distributed search
    /// refuses a bad query once, before asking any other node.
    pub fn check_query(&self, query: &SearchQuery) -> Result<(), SearchError> {
        let engine = self.shared.engine();
        self.validate(query)?;
        self.parse_text(&engine, query).map(|_| ())
    }

    /// The BM25 statistics of `query`'s text on this index, scoped to
    /// `query.role`: what a node contributes to a distributed search.
    pub fn term_statistics(&self, query: &SearchQuery) -> Result<QueryStatistics, SearchError> {
        self.term_statistics_scoped(query, &SlotScope::all())
    }

    /// The BM25 statistics of `query`'s text over the documents `query.role`
    /// may read whose slot is in `scope`: document count, per-term document
    /// frequencies and per-field token totals. Reports of disjoint scopes
    /// sum ([`QueryStatistics::merge`]) to the figures of their union; an
    /// empty scope reports zeros.
    pub fn term_statistics_scoped(
        &self,
        query: &SearchQuery,
        scope: &SlotScope,
    ) -> Result<QueryStatistics, SearchError> {
        let shared = &self.shared;
        let engine = shared.engine();
        let searcher = engine.reader.searcher();
        let plan = self.plan(&engine, query, scope, self.shared.config.max_limit)?;
        let population = Population::new(&shared.fields, &query.role, scope);
        let totals = shared.stats_cache.totals(
            engine.id,
            &searcher,
            &shared.fields,
            &query.role,
            scope,
            &population,
        )?;
        let scoped = ScopedStats::new(&searcher, &population, totals);
        Ok(QueryStatistics::collect(
            &query.role,
            &shared.schema,
            plan.text.as_deref(),
            &scoped,
        )?)
    }

    fn validate(&self, q: &SearchQuery) -> Result<(), SearchError> {
        self.validate_within(q, self.shared.config.max_limit)
    }

    /// [`ContextIndex::validate`] with `max_limit` hits allowed.
    fn validate_within(&self, q: &SearchQuery, max_limit: usize) -> Result<(), SearchError> {
        let c = &self.shared.config;
        if q.text.len() > c.max_query_len {
            return Err(SearchError::QueryTooLong {
                len: q.text.len(),
                max: c.max_query_len,
            });
        }
        let depth = paren_depth(&q.text);
        if depth > c.max_query_depth {
            return Err(SearchError::QueryTooDeep {
                depth,
                max: c.max_query_depth,
            });
        }
        if q.limit == 0 || q.limit > max_limit {
            return Err(SearchError::LimitOutOfRange {
                limit: q.limit,
                max: max_limit,
            });
        }
        if q.offset > c.max_offset {
            return Err(SearchError::OffsetTooLarge {
                offset: q.offset,
                max: c.max_offset,
            });
        }
        for (filter, values) in [("tags", &q.tags), ("technologies", &q.technologies)] {
            if values.len() > c.max_filter_values {
                return Err(SearchError::TooManyFilterValues {
                    filter,
                    len: values.len(),
                    max: c.max_filter_values,
                });
            }
            if values.iter().any(|v| normalize_facet_value(v).is_none()) {
                return Err(SearchError::EmptyFilterValue { filter });
            }
        }
        if let (Some(after), Some(before)) = (q.generated_after, q.generated_before)
            && after >= before
        {
            return Err(SearchError::EmptyTimeRange { after, before });
        }
        Ok(())
    }

    fn parse_text(&self, engine: &Engine, q: &SearchQuery) -> Result<ParsedText, SearchError> {
        if q.text.trim().is_empty() {
            return Ok(None);
        }
        let invalid = |problems: Vec<QueryProblem>| SearchError::InvalidQuery {
            query: quote(&q.text),
            problems,
        };
        let problems = crate::syntax::check(&q.text);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        match q.syntax {
            QuerySyntax::Strict => match engine.parser.parse_query(&q.text) {
                Ok(query) => Ok(Some(query)),
                Err(e) => Err(invalid(vec![self.problem(e)])),
            },
            QuerySyntax::Lenient => {
                let (query, errors) = engine.parser.parse_query_lenient(&q.text);
                let mut problems: Vec<QueryProblem> = Vec::new();
                for e in errors {
                    // Only `-word` terms: "everything but those", which
                    // is what the user wrote (the structure check has
                    // ruled out operators that lost their terms).
                    if matches!(e, QueryParserError::AllButQueryForbidden) {
                        continue;
                    }
                    let p = self.problem(e);
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
                if !problems.is_empty() {
                    return Err(invalid(problems));
                }
                Ok(Some(query))
            }
        }
    }

    /// What the engine's parser found, in the user's terms.
    fn problem(&self, e: QueryParserError) -> QueryProblem {
        match e {
            QueryParserError::FieldDoesNotExist(field) => QueryProblem::UnknownField {
                field: quote(&field),
                known: self
                    .shared
                    .fields
                    .text_fields()
                    .iter()
                    .map(|f| self.shared.schema.get_field_name(*f))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            QueryParserError::SyntaxError(s) => {
                QueryProblem::Syntax(quote(s.strip_prefix("Syntax Error: ").unwrap_or(&s)))
            }
            e => QueryProblem::Syntax(quote(&e.to_string())),
        }
    }

    fn filter(&self, q: &SearchQuery, scope: &SlotScope) -> Box<dyn Query> {
        let f: &Fields = &self.shared.fields;
        let term_query =
            |t: Term| -> Box<dyn Query> { Box::new(TermQuery::new(t, IndexRecordOption::Basic)) };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, term_query(f.reader_term(&q.role)))];
        // Every slot needs no clause: the unscoped query stays as it was.
        if let Some(scope) = scope.filter_query() {
            clauses.push((Occur::Must, scope));
        }
        for (root, values) in [
            (TAG_FACET_ROOT, &q.tags),
            (TECH_FACET_ROOT, &q.technologies),
        ] {
            for v in values.iter().filter_map(|v| normalize_facet_value(v)) {
                clauses.push((
                    Occur::Must,
                    term_query(Term::from_facet(f.facets, &facet(root, &v))),
                ));
            }
        }
        if let Some(prefix) = q.path_prefix.as_deref().map(normalize_path)
            && !prefix.is_empty()
        {
            clauses.push((
                Occur::Must,
                term_query(Term::from_field_text(f.path_prefix, prefix)),
            ));
        }
        if q.generated_after.is_some() || q.generated_before.is_some() {
            let bound = |v: Option<u64>, incl: bool| match v {
                None => Bound::Unbounded,
                Some(v) if incl => Bound::Included(Term::from_field_u64(f.generated_at, v)),
                Some(v) => Bound::Excluded(Term::from_field_u64(f.generated_at, v)),
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(q.generated_after, true),
                    bound(q.generated_before, false),
                )),
            ));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    fn plan(
        &self,
        engine: &Engine,
        q: &SearchQuery,
        scope: &SlotScope,
        max_limit: usize,
    ) -> Result<Plan, SearchError> {
        self.validate_within(q, max_limit)?;
        let text = self.parse_text(engine, q)?;
        let filter = self.filter(q, scope);
        let full: Box<dyn Query> = match &text {
            Some(t) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, t.box_clone()),
                // Filters select; they add nothing to the score.
                (Occur::Must, Box::new(ConstScoreQuery::new(filter, 0.0))),
            ])),
            None => filter,
        };
        Ok(Plan { text, full })
    }

    fn run_search(
        &self,
        q: &SearchQuery,
        scope: &SlotScope,
        supplied: Option<&QueryStatistics>,
    ) -> Result<SearchResults, SearchError> {
        self.run_search_within(q, scope, supplied, self.shared.config.max_limit)
    }

    fn run_search_within(
        &self,
        q: &SearchQuery,
        scope: &SlotScope,
        supplied: Option<&QueryStatistics>,
        max_limit: usize,
    ) -> Result<SearchResults, SearchError> {
        let start = Instant::now();
        let shared = &self.shared;
        let engine = shared.engine();
        let searcher = engine.reader.searcher();
        let plan = self.plan(&engine, q, scope, max_limit)?;

        let facets = q.facets.then(|| {
            let mut c = FacetCollector::for_field(names::FACETS);
            c.add_facet(Facet::from_path([TAG_FACET_ROOT]));
            c.add_facet(Facet::from_path([TECH_FACET_ROOT]));
            c
        });
        let page = TopDocs::with_limit(q.limit).and_offset(q.offset);

        let (top, total, facet_counts): (Vec<(f32, DocAddress)>, usize, _) = if plan.text.is_some()
        {
            let population = Population::new(&shared.fields, &q.role, scope);
            let totals = shared.stats_cache.totals(
                engine.id,
                &searcher,
                &shared.fields,
                &q.role,
                scope,
                &population,
            )?;
            let scoped = ScopedStats::new(&searcher, &population, totals);
            let supplied = supplied
                .map(|s| SuppliedStats::new(s, &shared.schema, &scoped))
                .transpose()?;
            let provider: &dyn Bm25StatisticsProvider = match &supplied {
                Some(s) => s,
                None => &scoped,
            };
            searcher.search_with_statistics_provider(
                plan.full.as_ref(),
                &(page.order_by_score(), Count, facets),
                provider,
            )?
        } else {
            let (top, total, f) = searcher.search(
                plan.full.as_ref(),
                &(
                    page.order_by_fast_field::<u64>(names::GENERATED_AT, Order::Desc),
                    Count,
                    facets,
                ),
            )?;
            let top = top.into_iter().map(|(_, addr)| (0.0, addr)).collect();
            (top, total, f)
        };

        let snippets = if q.snippets {
            Some(self.snippet_generators(&searcher, plan.text.as_deref())?)
        } else {
            None
        };
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr)?;
            hits.push(self.hit(&doc, score, snippets.as_ref())?);
        }
        let facets = facet_counts
            .map(|counts| {
                let top = |root: &str| {
                    let mut v: Vec<FacetCount> = counts
                        .get(Facet::from_path([root]))
                        .filter_map(|(f, count)| {
                            f.to_path().last().map(|value| FacetCount {
                                value: value.to_string(),
                                count,
                            })
                        })
                        .collect();
                    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
                    v.truncate(shared.config.max_facet_values);
                    v
                };
                FacetCounts {
                    tags: top(TAG_FACET_ROOT),
                    technologies: top(TECH_FACET_ROOT),
                }
            })
            .unwrap_or_default();

        let took = start.elapsed();
        let results = SearchResults {
            total_hits: total as u64,
            hits,
            facets,
            warnings: Vec::new(),
            took,
            unopenable: shared.unopenable_in(&q.role, scope),
            coverage: shared.coverage(),
        };
        shared.observer.on_search(&SearchEvent {
            role: q.role.clone(),
            took,
            total_hits: results.total_hits,
            returned: results.hits.len(),
            global_statistics: supplied.is_some(),
        });
        Ok(results)
    }

    /// Snippet generators for summary and insights, highlighting the query
    /// terms of each field. All terms weigh the same: weighting by
    /// frequency would need statistics beyond the role's scope.
    fn snippet_generators(
        &self,
        searcher: &Searcher,
        text: Option<&dyn Query>,
    ) -> Result<Snippets, SearchError> {
        let f = &self.shared.fields;
        let mut per_field: [BTreeMap<String, f32>; 2] = Default::default();
        if let Some(q) = text {
            q.query_terms(&mut |term, _| {
                let slot = if term.field() == f.summary {
                    0
                } else if term.field() == f.insights {
                    1
                } else {
                    return;
                };
                if let Some(s) = term.value().as_str() {
                    per_field[slot].insert(s.to_string(), 1.0);
                }
            });
        }
        let [summary_terms, insight_terms] = per_field;
        let max = self.shared.config.snippet_max_chars;
        let make = |terms: BTreeMap<String, f32>, field| -> Result<_, SearchError> {
            if terms.is_empty() {
                return Ok(None);
            }
            let analyzer = searcher.index().tokenizer_for_field(field)?;
            Ok(Some(SnippetGenerator::new(terms, analyzer, field, max)))
        };
        Ok(Snippets {
            summary: make(summary_terms, f.summary)?,
            insights: make(insight_terms, f.insights)?,
            max_chars: max,
        })
    }

    fn hit(
        &self,
        doc: &TantivyDocument,
        score: f32,
        snippets: Option<&Snippets>,
    ) -> Result<SearchHit, SearchError> {
        let f = &self.shared.fields;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let version: VersionId =
            text(f.version)
                .parse()
                .map_err(
                    |e: slurp_protocol::version::VersionIdError| SearchError::StoredField {
                        field: names::VERSION,
                        reason: e.to_string(),
                    },
                )?;
        let summary = text(f.summary);
        let snippet = match snippets {
            None => String::new(),
            Some(s) => s.render(doc, &summary),
        };
        Ok(SearchHit {
            key: text(f.key),
            version,
            path: text(f.path),
            score,
            snippet,
            generated_at: doc
                .get_first(f.generated_at)
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
        })
    }
}

struct Snippets {
    summary: Option<SnippetGenerator>,
    insights: Option<SnippetGenerator>,
    max_chars: usize,
}

impl Snippets {
    fn render(&self, doc: &TantivyDocument, summary: &str) -> String {
        for generator in [&self.summary, &self.insights].into_iter().flatten() {
            let s = generator.snippet_from_doc(doc);
            if !s.is_empty() {
                return s.to_html();
            }
        }
        escape_html(leading_chars(summary, self.max_chars))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_quoted_and_escaped_parens() {
        assert_eq!(paren_depth("a (b (c)) d"), 2);
        assert_eq!(paren_depth(r#""((((" x"#), 0);
        assert_eq!(paren_depth(r"\(\(\( x"), 0);
        assert_eq!(paren_depth(")))((("), 3);
    }

    #[test]
    fn html_escaping_and_cutting() {
        assert_eq!(
            escape_html(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"
        );
        assert_eq!(leading_chars("short", 10), "short");
        assert_eq!(leading_chars("one two three four", 12), "one two");
        assert_eq!(leading_chars("ééééé", 2), "éé");
    }
}
