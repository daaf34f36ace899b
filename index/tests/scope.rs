//! Slot scopes: a distributed search where every partition is answered by
//! one node counts, facets and ranks exactly like one index over everything.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use slurp_index::{
    ContextIndex, FacetCounts, IndexConfig, IndexEntry, QueryStatistics, SearchError, SearchQuery,
    SearchResults, SlotScope, StatisticsError,
};
use slurp_protocol::{Partition, PartitionScheme, Slot};

const TAGS: &[&str] = &["security", "api", "storage", "perf", "ops"];
const TECHS: &[&str] = &["rust", "go", "postgres"];

/// Scores computed from the same figures by different indexes agree to
/// this much.
const EPS: f32 = 1e-4;

/// Tests ask for every match at once, so the largest page must hold the
/// whole corpus.
const ALL: usize = 1_000;

fn config() -> IndexConfig {
    IndexConfig {
        max_limit: ALL,
        ..manual_config()
    }
}

/// The shared corpus with tags, technologies and distinct generation times,
/// so facets and text-less (newest first) searches have something to show.
fn labelled(n: usize, seed: u64) -> Vec<IndexEntry> {
    corpus(n, seed)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.context.tags = vec![TAGS[i % TAGS.len()].into()];
            if i % 3 == 0 {
                e.context.tags.push(TAGS[(i / 3) % TAGS.len()].into());
            }
            e.context.technologies = vec![TECHS[(i / 2) % TECHS.len()].into()];
            e.context.generated_at = 1_000 + i as u64;
            e
        })
        .collect()
}

fn index_with(entries: &[IndexEntry]) -> ContextIndex {
    let index = ContextIndex::open_in_memory(config()).unwrap();
    for e in entries {
        index.upsert(e).unwrap();
    }
    index.commit().unwrap();
    index
}

fn slot(e: &IndexEntry) -> Slot {
    Slot::of(&e.key)
}

/// `k` disjoint scopes covering every slot, each a scattered set of
/// partitions of a 32-partition scheme (so most are several ranges).
fn split(k: usize) -> Vec<SlotScope> {
    let scheme = PartitionScheme::new(5).unwrap();
    (0..k)
        .map(|owner| {
            SlotScope::from_partitions(
                &scheme,
                (0..32u16)
                    .filter(|p| usize::from(p ^ (p >> 2)) % k == owner)
                    .map(Partition),
            )
        })
        .collect()
}

fn queries() -> Vec<SearchQuery> {
    let mut qs = vec![];
    for text in [
        "cache",
        "token session",
        "retry OR backoff OR quorum",
        "\"token cache\"",
        "insights:shard lock",
        "",
    ] {
        for r in ["developer", "architect"] {
            qs.push(query(r, text));
        }
    }
    let mut q = query("developer", "cache OR token");
    q.path_prefix = Some("src/m3".into());
    qs.push(q);
    let mut q = query("developer", "session OR lock");
    q.tags = vec!["security".into()];
    qs.push(q);
    qs
}

fn with_limit(q: &SearchQuery, limit: usize) -> SearchQuery {
    SearchQuery { limit, ..q.clone() }
}

fn scored(r: &SearchResults) -> Vec<(String, f32)> {
    r.hits.iter().map(|h| (h.key.clone(), h.score)).collect()
}

fn facet_map(f: &FacetCounts) -> BTreeMap<String, u64> {
    f.tags
        .iter()
        .map(|c| (format!("tag/{}", c.value), c.count))
        .chain(
            f.technologies
                .iter()
                .map(|c| (format!("tech/{}", c.value), c.count)),
        )
        .collect()
}

/// One distributed search: every node reports its scoped statistics, they
/// are summed, and every node searches its scope with the sum.
fn distributed(
    nodes: &[(&ContextIndex, &SlotScope)],
    q: &SearchQuery,
) -> (QueryStatistics, Vec<SearchResults>) {
    let mut merged: Option<QueryStatistics> = None;
    for (index, scope) in nodes {
        let s = index.term_statistics_scoped(q, scope).unwrap();
        match &mut merged {
            None => merged = Some(s),
            Some(m) => m.merge(&s).unwrap(),
        }
    }
    let merged = merged.expect("at least one node");
    let results = nodes
        .iter()
        .map(|(index, scope)| index.search_scoped(q, scope, Some(&merged)).unwrap())
        .collect();
    (merged, results)
}

/// The coordinator's merge: best first (newest first for text-less
/// queries), cut to the limit.
fn merge_pages(q: &SearchQuery, results: &[SearchResults]) -> Vec<(String, f32)> {
    let mut hits: Vec<_> = results.iter().flat_map(|r| r.hits.iter()).collect();
    if q.text.is_empty() {
        hits.sort_by_key(|h| std::cmp::Reverse(h.generated_at));
    } else {
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    hits.truncate(q.limit);
    hits.into_iter().map(|h| (h.key.clone(), h.score)).collect()
}

/// The merged page equals the single index's page: same scores in order,
/// and the same keys, except that keys tied with the last score may be
/// swapped for other keys of that score.
fn assert_same_page(combined: &[(String, f32)], whole: &[(String, f32)], what: &str) {
    assert_eq!(combined.len(), whole.len(), "{what}: page length");
    for ((ck, cs), (wk, ws)) in combined.iter().zip(whole) {
        assert!((cs - ws).abs() <= EPS, "{what}: {ck} {cs} vs {wk} {ws}");
    }
    let Some((_, cutoff)) = whole.last() else {
        return;
    };
    let above = |v: &[(String, f32)]| -> BTreeSet<String> {
        v.iter()
            .filter(|(_, s)| *s > cutoff + EPS)
            .map(|(k, _)| k.clone())
            .collect()
    };
    assert_eq!(
        above(combined),
        above(whole),
        "{what}: keys above the cutoff"
    );
    let whole: BTreeMap<_, _> = whole.iter().cloned().collect();
    for (k, s) in combined {
        if let Some(w) = whole.get(k) {
            assert!((s - w).abs() <= EPS, "{what}: {k} scores {s} vs {w}");
        }
    }
}

/// Every match, as key -> score.
fn all_matches(r: &[SearchResults]) -> BTreeMap<String, f32> {
    let mut out = BTreeMap::new();
    for res in r {
        for h in &res.hits {
            assert!(
                out.insert(h.key.clone(), h.score).is_none(),
                "{} answered twice",
                h.key
            );
        }
    }
    out
}

/// Checks one distributed search against the single index `whole`.
fn check_distributed(
    nodes: &[(&ContextIndex, &SlotScope)],
    whole: &ContextIndex,
    q: &SearchQuery,
    what: &str,
) {
    // Statistics: the scoped reports sum to the single index's figures.
    let (merged, results) = distributed(nodes, q);
    assert_eq!(
        merged,
        whole.term_statistics(q).unwrap(),
        "{what}: statistics"
    );

    // The top page.
    let page = whole.search(q).unwrap();
    assert_same_page(&merge_pages(q, &results), &scored(&page), what);

    // Totals and facet counts of the scoped searches sum to the whole.
    let total: u64 = results.iter().map(|r| r.total_hits).sum();
    assert_eq!(total, page.total_hits, "{what}: total");
    let mut facets: BTreeMap<String, u64> = BTreeMap::new();
    for r in &results {
        for (v, n) in facet_map(&r.facets) {
            *facets.entry(v).or_default() += n;
        }
    }
    assert_eq!(facets, facet_map(&page.facets), "{what}: facets");

    // Every match, each from exactly one node, with the same score.
    let q_all = with_limit(q, ALL);
    let (_, results) = distributed(nodes, &q_all);
    let every = whole.search(&q_all).unwrap();
    assert!(every.total_hits < ALL as u64, "{what}: page too small");
    let combined = all_matches(&results);
    let expected: BTreeMap<String, f32> = scored(&every).into_iter().collect();
    assert_eq!(
        combined.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{what}: matching keys"
    );
    for (k, s) in &combined {
        assert!(
            (s - expected[k]).abs() <= EPS,
            "{what}: {k} {s} vs {}",
            expected[k]
        );
    }
}

#[test]
fn scoped_searches_over_disjoint_scopes_rank_like_one_index() {
    let entries = labelled(400, 7);
    let index = index_with(&entries);
    for k in [2, 3, 4] {
        let scopes = split(k);
        assert_eq!(
            scopes.iter().map(SlotScope::slot_count).sum::<u32>(),
            65_536
        );
        for e in &entries {
            let owners = scopes.iter().filter(|s| s.contains(slot(e))).count();
            assert_eq!(owners, 1, "{} has {owners} owners", e.key);
        }
        assert!(
            scopes.iter().any(|s| s.ranges().len() > 1),
            "scopes should be scattered"
        );
        let nodes: Vec<_> = scopes.iter().map(|s| (&index, s)).collect();
        // A scope's own figures rank differently from the merged ones: the
        // exchange is what makes the scores agree.
        let q = query("developer", "cache");
        let (merged, _) = distributed(&nodes, &q);
        let local = index.search_scoped(&q, &scopes[0], None).unwrap();
        let global = index.search_scoped(&q, &scopes[0], Some(&merged)).unwrap();
        assert_ne!(scored(&local), scored(&global));
        for q in queries() {
            check_distributed(&nodes, &index, &q, &format!("{k} scopes, {:?}", q.text));
        }
    }
}

#[test]
fn replicas_answer_once_each_when_scopes_pick_one_holder() {
    let entries = labelled(500, 13);
    let whole = index_with(&entries);
    // Node A holds the lower 60% of the slot space, node B the upper 60%:
    // contexts in the middle fifth are on both.
    let a_holds = SlotScope::from_ranges([0..=39_321]);
    let b_holds = SlotScope::from_ranges([26_214..=u16::MAX]);
    let on = |held: &SlotScope| -> Vec<IndexEntry> {
        entries
            .iter()
            .filter(|e| held.contains(slot(e)))
            .cloned()
            .collect()
    };
    let (a_entries, b_entries) = (on(&a_holds), on(&b_holds));
    let shared = a_entries
        .iter()
        .filter(|e| b_holds.contains(slot(e)))
        .count();
    assert!(shared > 50, "only {shared} replicated contexts");
    let a = index_with(&a_entries);
    let b = index_with(&b_entries);
    // B also carries deleted documents (replaced versions) the single index
    // never had; they must not count anywhere.
    for e in b_entries.iter().take(30) {
        let mut newer = e.clone();
        newer.version.hlc.wall_ms += 10_000;
        b.upsert(&newer).unwrap();
    }
    b.commit().unwrap();
    assert_eq!(b.status().unwrap().deleted_docs, 30);

    // Unscoped, the replicas are counted twice: the scopes are needed.
    let q = query("developer", "cache");
    let mut doubled = a.term_statistics(&q).unwrap();
    doubled.merge(&b.term_statistics(&q).unwrap()).unwrap();
    assert!(doubled.total_docs > whole.term_statistics(&q).unwrap().total_docs);

    // Split the shared middle at its centre, and again with the middle
    // interleaved between the two holders partition by partition.
    let scheme = PartitionScheme::new(8).unwrap();
    let middle: Vec<Partition> = (0..256u16)
        .map(Partition)
        .filter(|p| {
            let r = scheme.slots(*p);
            a_holds.contains(Slot(*r.start())) && b_holds.contains(Slot(*r.end()))
        })
        .collect();
    let below = SlotScope::from_ranges([0..=26_213]);
    let above = SlotScope::from_ranges([39_322..=u16::MAX]);
    let interleaved_a = SlotScope::from_ranges(
        below.ranges().iter().cloned().chain(
            middle
                .iter()
                .filter(|p| p.0 % 2 == 0)
                .map(|p| scheme.slots(*p)),
        ),
    );
    let interleaved_b = SlotScope::from_ranges(
        above.ranges().iter().cloned().chain(
            middle
                .iter()
                .filter(|p| p.0 % 2 == 1)
                .map(|p| scheme.slots(*p)),
        ),
    );
    let halves = (
        SlotScope::from_ranges([0..=32_767]),
        SlotScope::from_ranges([32_768..=u16::MAX]),
    );
    for (scope_a, scope_b) in [halves, (interleaved_a, interleaved_b)] {
        // Every context is answered by exactly one holder of it (slots not
        // in the middle partitions are covered by the holder owning them).
        for e in &entries {
            let s = slot(e);
            let by_a = scope_a.contains(s) && a_holds.contains(s);
            let by_b = scope_b.contains(s) && b_holds.contains(s);
            assert!(by_a ^ by_b, "{} answered by a: {by_a}, b: {by_b}", e.key);
        }
        let nodes = [(&a, &scope_a), (&b, &scope_b)];
        for q in queries() {
            check_distributed(&nodes, &whole, &q, &format!("replicas, {:?}", q.text));
        }
    }
}

#[test]
fn every_slot_is_the_unscoped_search() {
    let index = index_with(&labelled(200, 3));
    for q in queries() {
        let plain = index.search(&q).unwrap();
        let all = index.search_scoped(&q, &SlotScope::all(), None).unwrap();
        assert_eq!(scored(&all), scored(&plain), "{:?}", q.text);
        assert_eq!(all.total_hits, plain.total_hits);
        assert_eq!(all.facets, plain.facets);
        assert_eq!(
            index.term_statistics_scoped(&q, &SlotScope::all()).unwrap(),
            index.term_statistics(&q).unwrap()
        );
    }
}

#[test]
fn empty_scope_matches_nothing_and_counts_nothing() {
    let index = index_with(&labelled(200, 5));
    let none = SlotScope::none();
    for q in queries() {
        let r = index.search_scoped(&q, &none, None).unwrap();
        assert_eq!(r.total_hits, 0, "{:?}", q.text);
        assert!(r.hits.is_empty());
        assert_eq!(r.facets, FacetCounts::default());

        let stats = index.term_statistics_scoped(&q, &none).unwrap();
        assert_eq!(stats.total_docs, 0);
        assert!(stats.field_tokens.values().all(|n| *n == 0), "{stats:?}");
        assert!(stats.terms.iter().all(|t| t.doc_freq == 0), "{stats:?}");
        if !q.text.is_empty() {
            assert!(!stats.terms.is_empty(), "the terms are still listed");
        }
        // Global statistics do not make an empty scope match anything.
        let global = index.term_statistics(&q).unwrap();
        let r = index.search_scoped(&q, &none, Some(&global)).unwrap();
        assert_eq!(r.total_hits, 0);
        assert!(r.hits.is_empty());
    }
}

#[test]
fn role_filter_applies_inside_a_scope() {
    let entries = labelled(300, 17);
    let index = index_with(&entries);
    let scope = SlotScope::from_ranges([0..=9_999, 30_000..=49_999]);
    let readable = |e: &IndexEntry, r: &str| e.readers.iter().any(|x| x.as_str() == r);
    for r in ["developer", "architect"] {
        let expected: BTreeSet<String> = entries
            .iter()
            .filter(|e| scope.contains(slot(e)) && readable(e, r))
            .map(|e| e.key.clone())
            .collect();
        // Text-less: every document of the role in the scope, newest first.
        let q = with_limit(&query(r, ""), ALL);
        let res = index.search_scoped(&q, &scope, None).unwrap();
        assert_eq!(res.total_hits, expected.len() as u64, "{r}");
        let got: BTreeSet<String> = res.hits.iter().map(|h| h.key.clone()).collect();
        assert_eq!(got, expected, "{r}");
        let times: Vec<u64> = res.hits.iter().map(|h| h.generated_at).collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
        assert_eq!(
            index
                .term_statistics_scoped(&query(r, "cache"), &scope)
                .unwrap()
                .total_docs,
            expected.len() as u64,
            "{r}: statistics count the role's documents in the scope"
        );
    }
    // Architect-only documents inside the scope exist and stay hidden from
    // developers, even when the query text asks for them.
    let hidden: BTreeSet<String> = entries
        .iter()
        .filter(|e| scope.contains(slot(e)) && !readable(e, "developer"))
        .map(|e| e.key.clone())
        .collect();
    assert!(!hidden.is_empty());
    for text in ["cache OR token OR session", "readers:architect", "*"] {
        let q = with_limit(&query("developer", text), ALL);
        let res = index.search_scoped(&q, &scope, None).unwrap();
        for h in &res.hits {
            assert!(!hidden.contains(&h.key), "{text:?} returned {}", h.key);
            assert!(scope.contains(Slot::of(&h.key)), "{text:?} left the scope");
        }
    }
}

/// For any scope, a text-less search in it finds exactly the role's
/// documents whose slot the scope holds, whether they were written by
/// upserts or by a rebuild.
#[test]
fn any_scope_selects_exactly_its_slots() {
    let entries = labelled(240, 23);
    let upserted = index_with(&entries);
    let rebuilt = ContextIndex::open_in_memory(config()).unwrap();
    rebuilt
        .rebuild(
            entries.iter().cloned().map(Ok::<_, std::io::Error>),
            &mut |_| {},
        )
        .unwrap();
    let slots: Vec<u16> = entries.iter().map(|e| slot(e).0).collect();
    // Bounds drawn near the documents' own slots, so ranges start and end
    // on them, just before and just after.
    let bound = prop_oneof![
        prop::sample::select(slots).prop_flat_map(|s| prop_oneof![
            Just(s),
            Just(s.saturating_sub(1)),
            Just(s.saturating_add(1)),
        ]),
        any::<u16>(),
    ];
    let ranges = prop::collection::vec((bound.clone(), bound), 0..6);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    runner
        .run(&ranges, |raw| {
            let scope = SlotScope::from_ranges(raw.iter().map(|&(a, b)| a..=b));
            let expected: BTreeSet<String> = entries
                .iter()
                .filter(|e| raw.iter().any(|&(a, b)| (a..=b).contains(&slot(e).0)))
                .map(|e| e.key.clone())
                .collect();
            let q = with_limit(&query("admin", ""), ALL);
            for index in [&upserted, &rebuilt] {
                let res = index.search_scoped(&q, &scope, None).unwrap();
                let got: BTreeSet<String> = res.hits.iter().map(|h| h.key.clone()).collect();
                prop_assert_eq!(&got, &expected, "scope {:?}", scope);
                prop_assert_eq!(res.total_hits, expected.len() as u64);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn scoped_search_refuses_statistics_of_another_role() {
    let index = index_with(&labelled(50, 1));
    let scope = SlotScope::from_ranges([0..=32_767]);
    let q = query("developer", "cache");
    let mut stats = index.term_statistics_scoped(&q, &scope).unwrap();
    stats.role = role("architect");
    assert!(matches!(
        index.search_scoped(&q, &scope, Some(&stats)),
        Err(SearchError::Statistics(
            StatisticsError::RoleMismatch { .. }
        ))
    ));
}

/// Scoped statistics are remembered per scope: a second scope in the same
/// generation must not be answered with the first one's figures, and a
/// commit must not leave stale ones behind.
#[test]
fn scoped_statistics_follow_the_scope_and_the_generation() {
    let entries = labelled(200, 29);
    let index = index_with(&entries);
    let q = query("architect", "cache");
    let lower = SlotScope::from_ranges([0..=32_767]);
    let upper = SlotScope::from_ranges([32_768..=u16::MAX]);
    let count =
        |scope: &SlotScope| entries.iter().filter(|e| scope.contains(slot(e))).count() as u64;
    for _ in 0..2 {
        assert_eq!(
            index.term_statistics_scoped(&q, &lower).unwrap().total_docs,
            count(&lower)
        );
        assert_eq!(
            index.term_statistics_scoped(&q, &upper).unwrap().total_docs,
            count(&upper)
        );
    }
    let extra = entry(context("extra/new.rs", "cache cache"), 1, &["architect"]);
    index.upsert(&extra).unwrap();
    index.commit().unwrap();
    let (in_lower, in_upper) = if lower.contains(Slot::of(&extra.key)) {
        (1, 0)
    } else {
        (0, 1)
    };
    assert_eq!(
        index.term_statistics_scoped(&q, &lower).unwrap().total_docs,
        count(&lower) + in_lower
    );
    assert_eq!(
        index.term_statistics_scoped(&q, &upper).unwrap().total_docs,
        count(&upper) + in_upper
    );
}
