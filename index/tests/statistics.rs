//! Ranking statistics: scoped to the role, and exchangeable so that several
//! indexes rank like one.

mod common;

use common::*;
use slurp_index::{
    ContextIndex, QueryStatistics, SearchError, SearchQuery, StatisticsError, TermStatistic,
    TermValue,
};

fn queries() -> Vec<SearchQuery> {
    let mut qs = vec![];
    for text in [
        "cache",
        "token session",
        "retry OR backoff OR quorum",
        "\"token cache\"",
        "insights:shard lock",
        "merge segment index",
    ] {
        for r in ["developer", "architect"] {
            let mut q = query(r, text);
            q.limit = 20;
            qs.push(q);
        }
    }
    let mut q = query("developer", "cache OR token");
    q.limit = 20;
    q.path_prefix = Some("src/m3".into());
    qs.push(q);
    qs
}

fn scored(
    index: &ContextIndex,
    q: &SearchQuery,
    stats: Option<&QueryStatistics>,
) -> Vec<(String, f32)> {
    let r = match stats {
        Some(s) => index.search_with_statistics(q, s).unwrap(),
        None => index.search(q).unwrap(),
    };
    r.hits.into_iter().map(|h| (h.key, h.score)).collect()
}

#[test]
fn local_statistics_reproduce_local_ranking_exactly() {
    let index = index_of(&corpus(400, 7));
    for q in queries() {
        let plain = scored(&index, &q, None);
        assert!(!plain.is_empty(), "{:?} matched nothing", q.text);
        let stats = index.term_statistics(&q).unwrap();
        assert!(stats.total_docs > 0);
        assert!(!stats.terms.is_empty());
        assert_eq!(scored(&index, &q, Some(&stats)), plain, "{:?}", q.text);
    }
}

#[test]
fn merged_statistics_of_two_halves_rank_like_one_index() {
    let all = corpus(600, 11);
    let (left, right) = all.split_at(300);
    let union = index_of(&all);
    let a = index_of(left);
    let b = index_of(right);
    // Rewrite some documents in one half so it carries deleted documents
    // (replaced versions) the union never had: statistics must not see them.
    for e in left.iter().take(40) {
        let mut newer = e.clone();
        newer.version.hlc.wall_ms += 10_000;
        a.upsert(&newer).unwrap();
    }
    a.commit().unwrap();
    assert_eq!(a.status().unwrap().deleted_docs, 40);

    for q in queries() {
        let mut merged = a.term_statistics(&q).unwrap();
        merged.merge(&b.term_statistics(&q).unwrap()).unwrap();
        assert_eq!(merged, union.term_statistics(&q).unwrap(), "{:?}", q.text);

        let mut combined = scored(&a, &q, Some(&merged));
        combined.extend(scored(&b, &q, Some(&merged)));
        combined.sort_by(|x, y| y.1.total_cmp(&x.1));
        combined.truncate(q.limit);
        let whole = scored(&union, &q, None);
        assert_eq!(combined.len(), whole.len(), "{:?}", q.text);
        let scores = |v: &[(String, f32)]| v.iter().map(|(_, s)| *s).collect::<Vec<_>>();
        assert_eq!(scores(&combined), scores(&whole), "{:?}", q.text);
        // Every key scores the same wherever it is found.
        for (key, score) in &combined {
            if let Some((_, s)) = whole.iter().find(|(k, _)| k == key) {
                assert_eq!(s, score, "{key}");
            }
        }
        // Local statistics alone would rank differently: the check above
        // is not vacuous.
        if q.text == "cache" && q.role.as_str() == "developer" {
            assert_ne!(scored(&a, &q, None), scored(&a, &q, Some(&merged)));
        }
    }
}

/// A developer's scores must not depend on documents the developer cannot
/// read: otherwise a score would tell how common a word is in hidden
/// documents.
#[test]
fn unreadable_documents_do_not_move_scores() {
    let visible = corpus(200, 3)
        .into_iter()
        .map(|mut e| {
            e.readers = vec![role("developer")];
            e
        })
        .collect::<Vec<_>>();
    let index = index_of(&visible);
    let q = query("developer", "cache token");
    let before = scored(&index, &q, None);
    assert!(!before.is_empty());
    for i in 0..300 {
        let c = context(&format!("hidden/{i}.md"), "cache cache token cache plan");
        index.upsert(&entry(c, 1, &["architect"])).unwrap();
    }
    index.commit().unwrap();
    assert_eq!(scored(&index, &q, None), before);
    assert_eq!(
        index.term_statistics(&q).unwrap().total_docs,
        200,
        "statistics count only the developer's documents"
    );
}

#[test]
fn supplied_statistics_are_checked() {
    let index = index_of(&corpus(50, 5));
    let q = query("developer", "cache");
    let good = index.term_statistics(&q).unwrap();

    let mut other_role = good.clone();
    other_role.role = role("architect");
    assert!(matches!(
        index.search_with_statistics(&q, &other_role),
        Err(SearchError::Statistics(
            StatisticsError::RoleMismatch { .. }
        ))
    ));

    let mut too_many = good.clone();
    too_many.terms[0].doc_freq = too_many.total_docs + 1;
    assert!(matches!(
        index.search_with_statistics(&q, &too_many),
        Err(SearchError::Statistics(
            StatisticsError::DocFreqOverTotal { .. }
        ))
    ));

    let mut unknown = good.clone();
    unknown.terms.push(TermStatistic {
        field: "nope".into(),
        value: TermValue::Text("cache".into()),
        doc_freq: 1,
    });
    assert!(matches!(
        index.search_with_statistics(&q, &unknown),
        Err(SearchError::Statistics(StatisticsError::UnknownField(_)))
    ));

    // Statistics that omit the terms fall back to local figures, and odd
    // but consistent figures (no documents at all) never panic.
    let mut empty = good.clone();
    empty.terms.clear();
    empty.field_tokens.clear();
    index.search_with_statistics(&q, &empty).unwrap();
    empty.total_docs = 0;
    index.search_with_statistics(&q, &empty).unwrap();
}
