//! Behaviour of search: what a user searching as a role gets back.

mod common;

use common::*;
use proptest::prelude::*;
use slurp_index::{MissingSide, QueryProblem, QuerySyntax, SearchError, SearchQuery};

#[test]
fn finds_words_in_summary_purpose_insights_and_path() {
    let index = open();
    let mut a = context("src/auth/login.rs", "handles the login form");
    a.purpose = "authenticates operators against the directory".into();
    let mut b = context("src/cache/lru.rs", "a bounded cache");
    b.insights = vec![
        "eviction is least recently used".into(),
        "sharded to cut lock contention".into(),
    ];
    index.upsert(&entry(a, 1, &["developer"])).unwrap();
    index.upsert(&entry(b, 2, &["developer"])).unwrap();
    index.commit().unwrap();

    let login = key_of("src/auth/login.rs");
    let lru = key_of("src/cache/lru.rs");
    assert_eq!(
        keys(&index, &query("developer", "login")),
        vec![login.clone()]
    );
    assert_eq!(
        keys(&index, &query("developer", "operators")),
        vec![login.clone()]
    );
    assert_eq!(
        keys(&index, &query("developer", "contention")),
        vec![lru.clone()]
    );
    // Path components are words too.
    assert_eq!(
        keys(&index, &query("developer", "auth")),
        vec![login.clone()]
    );
    assert_eq!(keys(&index, &query("developer", "lru")), vec![lru.clone()]);
    // Case does not matter; all words must match by default.
    assert_eq!(
        keys(&index, &query("developer", "BOUNDED Cache")),
        vec![lru.clone()]
    );
    assert!(keys(&index, &query("developer", "bounded login")).is_empty());
    // Field-qualified terms.
    assert_eq!(
        keys(&index, &query("developer", "insights:eviction")),
        [lru]
    );
    assert!(keys(&index, &query("developer", "summary:eviction")).is_empty());
}

#[test]
fn tags_and_technologies_are_words_too() {
    let index = open();
    let mut a = context("src/auth/login.rs", "handles the login form");
    a.tags = vec!["Security".into()];
    a.technologies = vec!["postgres".into()];
    let b = context("src/cache/lru.rs", "a bounded cache");
    index.upsert(&entry(a, 1, &["developer"])).unwrap();
    index.upsert(&entry(b, 2, &["developer"])).unwrap();
    index.commit().unwrap();
    let login = key_of("src/auth/login.rs");
    assert_eq!(
        keys(&index, &query("developer", "security")),
        vec![login.clone()]
    );
    assert_eq!(
        keys(&index, &query("developer", "postgres login")),
        vec![login]
    );
    assert!(keys(&index, &query("developer", "postgres cache")).is_empty());
}

#[test]
fn phrase_query_needs_the_words_in_order() {
    let index = open();
    index
        .upsert(&entry(
            context("a.rs", "token cache for sessions"),
            1,
            &["developer"],
        ))
        .unwrap();
    index
        .upsert(&entry(
            context("b.rs", "cache of every token"),
            1,
            &["developer"],
        ))
        .unwrap();
    index.commit().unwrap();
    assert_eq!(
        keys(&index, &query("developer", "\"token cache\"")),
        [key_of("a.rs")]
    );
    let mut both = keys(&index, &query("developer", "token cache"));
    both.sort();
    assert_eq!(both, [key_of("a.rs"), key_of("b.rs")]);
}

/// A developer must never see, count or facet an architect-only document,
/// however the search is phrased or paged.
#[test]
fn role_filter_hides_unreadable_documents_everywhere() {
    let index = open();
    for i in 0..30 {
        let mut c = context(&format!("arch/{i}.md"), "secret migration plan");
        c.tags = vec!["arch-only".into()];
        c.technologies = vec!["postgres".into()];
        c.generated_at = 1_000 + i;
        index.upsert(&entry(c, 1, &["admin", "architect"])).unwrap();
    }
    for i in 0..5 {
        let mut c = context(&format!("dev/{i}.rs"), "secret handling in the client");
        c.tags = vec!["shared".into()];
        c.generated_at = 10 + i;
        index
            .upsert(&entry(c, 1, &["admin", "architect", "developer"]))
            .unwrap();
    }
    index.commit().unwrap();

    let dev_keys: Vec<String> = (0..5).map(|i| key_of(&format!("dev/{i}.rs"))).collect();
    for text in [
        "secret",
        "secret migration",
        "migration",
        "*",
        "secret OR readers:architect",
        "readers:architect",
        "path_prefix:arch",
        // Unquoted, `/tag/arch-only` reads as a regex the engine refuses
        // (an InvalidQuery, tested elsewhere); quoted, it is a facet term.
        "facets:\"/tag/arch-only\"",
        "",
    ] {
        for offset in [0, 3, 5, 29] {
            let mut q = query("developer", text);
            q.limit = 100;
            q.offset = offset;
            let r = index.search(&q).unwrap();
            for hit in &r.hits {
                assert!(dev_keys.contains(&hit.key), "{text:?} leaked {}", hit.key);
            }
            assert!(
                r.total_hits <= 5,
                "{text:?}: total {} counts hidden docs",
                r.total_hits
            );
            assert!(
                r.facets.tags.iter().all(|t| t.value != "arch-only"),
                "{text:?}: facets leak {:?}",
                r.facets.tags
            );
            assert!(r.facets.technologies.is_empty(), "{text:?}");
        }
    }
    let r = index.search(&query("developer", "secret")).unwrap();
    assert_eq!(r.total_hits, 5);
    // The architect sees both sets.
    let mut q = query("architect", "secret");
    q.limit = 100;
    assert_eq!(index.search(&q).unwrap().total_hits, 35);
    // A role with no documents sees nothing at all.
    assert_eq!(
        index
            .search(&query("observer", "secret"))
            .unwrap()
            .total_hits,
        0
    );
    assert_eq!(index.search(&query("observer", "")).unwrap().total_hits, 0);
}

#[test]
fn tag_technology_path_and_time_filters() {
    let index = open();
    let mk = |path: &str, tags: &[&str], techs: &[&str], at: u64| {
        let mut c = context(path, "service notes");
        c.tags = tags.iter().map(|s| s.to_string()).collect();
        c.technologies = techs.iter().map(|s| s.to_string()).collect();
        c.generated_at = at;
        entry(c, 1, &["developer"])
    };
    index
        .upsert(&mk(
            "src/auth/login.rs",
            &["security", "api"],
            &["Rust"],
            100,
        ))
        .unwrap();
    index
        .upsert(&mk(
            "src/auth/token.rs",
            &["security"],
            &["rust", "redis"],
            200,
        ))
        .unwrap();
    index
        .upsert(&mk(
            "src/authz/policy.rs",
            &["security", "api"],
            &["go"],
            300,
        ))
        .unwrap();
    index
        .upsert(&mk("docs/api.md", &["api"], &[], 400))
        .unwrap();
    index.commit().unwrap();

    let run = |f: &dyn Fn(&mut SearchQuery)| {
        let mut q = query("developer", "service");
        f(&mut q);
        let mut k = keys(&index, &q);
        k.sort();
        k
    };
    let sorted = |paths: &[&str]| {
        let mut v: Vec<String> = paths.iter().map(|p| key_of(p)).collect();
        v.sort();
        v
    };
    assert_eq!(
        run(&|q| q.tags = vec!["security".into(), "API".into()]),
        sorted(&["src/auth/login.rs", "src/authz/policy.rs"])
    );
    assert_eq!(
        run(&|q| q.technologies = vec!["rust".into()]),
        sorted(&["src/auth/login.rs", "src/auth/token.rs"])
    );
    assert_eq!(
        run(&|q| q.technologies = vec!["rust".into(), "redis".into()]),
        sorted(&["src/auth/token.rs"])
    );
    // Whole components only: src/auth does not match src/authz.
    assert_eq!(
        run(&|q| q.path_prefix = Some("src/auth".into())),
        sorted(&["src/auth/login.rs", "src/auth/token.rs"])
    );
    assert_eq!(
        run(&|q| q.path_prefix = Some("/src/".into())),
        sorted(&[
            "src/auth/login.rs",
            "src/auth/token.rs",
            "src/authz/policy.rs"
        ])
    );
    assert_eq!(
        run(&|q| q.path_prefix = Some("src/auth/token.rs".into())),
        sorted(&["src/auth/token.rs"])
    );
    assert!(run(&|q| q.path_prefix = Some("src/au".into())).is_empty());
    // After is inclusive, before exclusive.
    assert_eq!(
        run(&|q| {
            q.generated_after = Some(200);
            q.generated_before = Some(400);
        }),
        sorted(&["src/auth/token.rs", "src/authz/policy.rs"])
    );
    assert_eq!(
        run(&|q| q.generated_after = Some(301)),
        sorted(&["docs/api.md"])
    );
    assert_eq!(
        run(&|q| q.generated_before = Some(101)),
        sorted(&["src/auth/login.rs"])
    );
    // Filters without text: every match, newest first.
    let mut q = query("developer", "");
    q.tags = vec!["api".into()];
    assert_eq!(
        keys(&index, &q),
        [
            key_of("docs/api.md"),
            key_of("src/authz/policy.rs"),
            key_of("src/auth/login.rs")
        ]
    );
    let mut q = query("developer", "service");
    q.generated_after = Some(5);
    q.generated_before = Some(5);
    assert!(matches!(
        index.search(&q),
        Err(SearchError::EmptyTimeRange { .. })
    ));
    let mut q = query("developer", "service");
    q.tags = vec!["  ".into()];
    assert!(matches!(
        index.search(&q),
        Err(SearchError::EmptyFilterValue { filter: "tags" })
    ));
}

#[test]
fn facet_counts_cover_every_match_not_just_the_page() {
    let index = open();
    for i in 0..12u64 {
        let mut c = context(&format!("m/{i}.rs"), "module notes");
        c.tags = if i % 3 == 0 {
            vec!["hot".into(), "Security".into()]
        } else {
            vec!["security".into()]
        };
        c.technologies = vec!["rust".into()];
        index.upsert(&entry(c, 1, &["developer"])).unwrap();
    }
    let mut other = context("x.rs", "unrelated");
    other.tags = vec!["hot".into()];
    index.upsert(&entry(other, 1, &["developer"])).unwrap();
    index.commit().unwrap();

    let mut q = query("developer", "module");
    q.limit = 1;
    let r = index.search(&q).unwrap();
    assert_eq!(r.hits.len(), 1);
    assert_eq!(r.total_hits, 12);
    let tags: Vec<(&str, u64)> = r
        .facets
        .tags
        .iter()
        .map(|f| (f.value.as_str(), f.count))
        .collect();
    assert_eq!(tags, [("security", 12), ("hot", 4)]);
    assert_eq!(r.facets.technologies.len(), 1);
    assert_eq!(r.facets.technologies[0].count, 12);
    q.facets = false;
    assert!(index.search(&q).unwrap().facets.tags.is_empty());
}

#[test]
fn snippets_highlight_matches_and_escape_html() {
    let index = open();
    let mut c = context(
        "ui.rs",
        "renders <script> tags safely & escapes the cache key",
    );
    c.insights = vec!["the cache is warmed at start".into()];
    index.upsert(&entry(c, 1, &["developer"])).unwrap();
    let mut d = context("other.rs", "nothing to see <here>");
    d.insights = vec!["a retry budget bounds the backoff".into()];
    index.upsert(&entry(d, 1, &["developer"])).unwrap();
    index.commit().unwrap();

    let hit = &index.search(&query("developer", "cache")).unwrap().hits[0];
    assert!(hit.snippet.contains("<b>cache</b>"), "{}", hit.snippet);
    assert!(hit.snippet.contains("&lt;script&gt;"), "{}", hit.snippet);
    assert!(!hit.snippet.contains("<script>"), "{}", hit.snippet);
    // A match only in the insights gives an insights snippet.
    let hit = &index.search(&query("developer", "backoff")).unwrap().hits[0];
    assert!(hit.snippet.contains("<b>backoff</b>"), "{}", hit.snippet);
    // No text: the start of the summary, escaped.
    let mut q = query("developer", "");
    q.path_prefix = Some("other.rs".into());
    let hit = &index.search(&q).unwrap().hits[0];
    assert_eq!(hit.snippet, "nothing to see &lt;here&gt;");
    // Snippets off.
    let mut q = query("developer", "cache");
    q.snippets = false;
    assert_eq!(index.search(&q).unwrap().hits[0].snippet, "");
}

#[test]
fn newest_version_replaces_older_and_older_after_newer_does_not() {
    use slurp_index::WriteOutcome;
    let index = open();
    let key = key_of("svc.rs");
    let v = |summary: &str, at: u64| entry(context("svc.rs", summary), at, &["developer"]);

    assert_eq!(
        index.upsert(&v("first draft alpha", 10)).unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        index.upsert(&v("second draft beta", 20)).unwrap(),
        WriteOutcome::Applied
    );
    index.commit().unwrap();
    assert!(keys(&index, &query("developer", "alpha")).is_empty());
    assert_eq!(keys(&index, &query("developer", "beta")), vec![key.clone()]);

    // An older version replicated late changes nothing.
    assert_eq!(
        index.upsert(&v("stale gamma", 15)).unwrap(),
        WriteOutcome::Superseded {
            current: version(20)
        }
    );
    assert_eq!(
        index.upsert(&v("second draft beta", 20)).unwrap(),
        WriteOutcome::AlreadyApplied
    );
    index.commit().unwrap();
    assert!(keys(&index, &query("developer", "gamma")).is_empty());
    assert_eq!(keys(&index, &query("developer", "beta")), vec![key.clone()]);
    let r = index.search(&query("developer", "draft")).unwrap();
    assert_eq!(r.total_hits, 1);
    assert_eq!(r.hits[0].version, version(20));
    assert_eq!(index.status().unwrap().docs, 1);
}

#[test]
fn delete_removes_and_tombstones_stop_late_versions() {
    use slurp_index::WriteOutcome;
    let index = open();
    let key = key_of("gone.rs");
    let v = |summary: &str, at: u64| entry(context("gone.rs", summary), at, &["developer"]);
    index.upsert(&v("doomed module", 10)).unwrap();
    index.commit().unwrap();
    assert_eq!(
        keys(&index, &query("developer", "doomed")),
        vec![key.clone()]
    );

    // A tombstone older than the indexed version is ignored.
    assert_eq!(
        index.delete(&key, &version(5)).unwrap(),
        WriteOutcome::Superseded {
            current: version(10)
        }
    );
    assert_eq!(
        index.delete(&key, &version(30)).unwrap(),
        WriteOutcome::Applied
    );
    assert_eq!(
        index.delete(&key, &version(30)).unwrap(),
        WriteOutcome::AlreadyApplied
    );
    index.commit().unwrap();
    assert!(keys(&index, &query("developer", "doomed")).is_empty());

    // A version older than the tombstone does not resurrect the key.
    assert!(matches!(
        index.upsert(&v("doomed again", 20)).unwrap(),
        WriteOutcome::Superseded { .. }
    ));
    index.commit().unwrap();
    assert!(keys(&index, &query("developer", "doomed")).is_empty());
    // A newer one does.
    index.upsert(&v("reborn module", 40)).unwrap();
    index.commit().unwrap();
    assert_eq!(
        keys(&index, &query("developer", "reborn")),
        vec![key.clone()]
    );
    let state = index.indexed_version(&key).unwrap();
    assert!(state.live);
    assert_eq!(state.version, version(40));

    // Deleting a key never seen still remembers the tombstone.
    let never = key_of("never.rs");
    index.delete(&never, &version(50)).unwrap();
    assert!(matches!(
        index
            .upsert(&entry(context("never.rs", "late"), 49, &["developer"]))
            .unwrap(),
        WriteOutcome::Superseded { .. }
    ));
    let status = index.status().unwrap();
    assert_eq!((status.live_keys, status.tombstones), (1, 1));
}

#[test]
fn paging_is_stable_and_complete() {
    let index = open();
    for i in 0..25 {
        // Same text everywhere: every score ties, so order rests on the
        // tie-break alone.
        index
            .upsert(&entry(
                context(&format!("p/{i:02}.rs"), "paged item"),
                1,
                &["developer"],
            ))
            .unwrap();
    }
    index.commit().unwrap();
    let mut all = query("developer", "paged");
    all.limit = 25;
    let whole = keys(&index, &all);
    assert_eq!(whole.len(), 25);
    for _ in 0..3 {
        let mut paged = vec![];
        for offset in [0, 10, 20] {
            let mut q = query("developer", "paged");
            q.offset = offset;
            let r = index.search(&q).unwrap();
            assert_eq!(r.total_hits, 25);
            paged.extend(r.hits.into_iter().map(|h| h.key));
        }
        assert_eq!(paged, whole);
    }
    let mut past = query("developer", "paged");
    past.offset = 25;
    assert!(keys(&index, &past).is_empty());
}

#[test]
fn limits_are_typed_errors() {
    let index = open();
    let max = index.config().max_limit;
    let mut q = query("developer", "x");
    q.limit = 0;
    assert!(matches!(
        index.search(&q),
        Err(SearchError::LimitOutOfRange { .. })
    ));
    q.limit = max + 1;
    assert!(matches!(
        index.search(&q),
        Err(SearchError::LimitOutOfRange { .. })
    ));
    q.limit = max;
    index.search(&q).unwrap();
    q.offset = index.config().max_offset + 1;
    assert!(matches!(
        index.search(&q),
        Err(SearchError::OffsetTooLarge { .. })
    ));
    let q = query("developer", &"a ".repeat(index.config().max_query_len));
    assert!(matches!(
        index.search(&q),
        Err(SearchError::QueryTooLong { .. })
    ));
    let deep = format!("{}x{}", "(".repeat(200), ")".repeat(200));
    assert!(matches!(
        index.search(&query("developer", &deep)),
        Err(SearchError::QueryTooDeep { .. })
    ));
    // At the limits themselves the parser copes, in both syntaxes.
    let max_depth = index.config().max_query_depth;
    let nested = format!("{}x{}", "(".repeat(max_depth), ")".repeat(max_depth));
    let long: String = "alpha AND (beta OR \"gamma delta\") -x +y ~ ^ : "
        .chars()
        .cycle()
        .take(index.config().max_query_len)
        .collect();
    for text in [nested, long] {
        for syntax in [QuerySyntax::Lenient, QuerySyntax::Strict] {
            let mut q = query("developer", &text);
            q.syntax = syntax;
            let _ = index.search(&q);
        }
    }
    let mut q = query("developer", "x");
    q.tags = vec!["t".into(); index.config().max_filter_values + 1];
    assert!(matches!(
        index.search(&q),
        Err(SearchError::TooManyFilterValues { filter: "tags", .. })
    ));
}

#[test]
fn bad_query_text_is_an_error_in_both_syntaxes() {
    let index = open();
    index
        .upsert(&entry(context("a.rs", "alpha beta"), 1, &["developer"]))
        .unwrap();
    index
        .upsert(&entry(context("b.rs", "gamma delta"), 2, &["developer"]))
        .unwrap();
    index.commit().unwrap();
    for text in [
        "AND OR (((",
        "alpha AND (",
        "a OR",
        "alpha AND",
        "OR",
        "NOT",
        "alpha)",
        "nosuchfield:alpha",
        "TODO: fix",
        "\"unclosed",
        "alpha ^^^",
        "[a TO",
        "{x}",
        "alpha:",
    ] {
        for syntax in [QuerySyntax::Lenient, QuerySyntax::Strict] {
            let mut q = query("developer", text);
            q.syntax = syntax;
            match index.search(&q) {
                Err(SearchError::InvalidQuery { query, problems }) => {
                    assert!(text.starts_with(query.trim_end_matches('…')), "{query}");
                    assert!(!problems.is_empty());
                }
                other => panic!("{text:?} ({syntax:?}): expected InvalidQuery, got {other:?}"),
            }
            // Statistics requests refuse it the same way.
            assert!(matches!(
                index.term_statistics(&q),
                Err(SearchError::InvalidQuery { .. })
            ));
            assert!(matches!(
                index.check_query(&q),
                Err(SearchError::InvalidQuery { .. })
            ));
        }
    }
}

/// The report that started this: six engine warnings and every document
/// matched with score 0. Now one error naming each mistake.
#[test]
fn broken_operators_and_parentheses_name_what_is_wrong() {
    let index = open();
    index
        .upsert(&entry(context("a.rs", "alpha beta"), 1, &["developer"]))
        .unwrap();
    index.commit().unwrap();
    let err = index.search(&query("developer", "AND OR (((")).unwrap_err();
    let SearchError::InvalidQuery { problems, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        problems,
        &[
            QueryProblem::MissingOperand {
                operator: "AND",
                column: 1,
                side: MissingSide::Both
            },
            QueryProblem::MissingOperand {
                operator: "OR",
                column: 5,
                side: MissingSide::Before
            },
            QueryProblem::UnclosedParentheses {
                columns: vec![8, 9, 10]
            },
        ]
    );
    assert_eq!(
        err.to_string(),
        "invalid query \"AND OR (((\": `AND` at column 1 has no term on either side; \
         `OR` at column 5 has no term before it; 3 parentheses are never closed (at columns \
         8, 9, 10); put words in double quotes to search for them as written"
    );
    assert!(err.is_invalid_request());
    let err = index.search(&query("developer", "TODO: fix")).unwrap_err();
    assert!(
        err.to_string().contains(
            "there is no field \"TODO\" (fields: summary, purpose, insights, path_text, labels)"
        ),
        "{err}"
    );
}

/// Ordinary text, operators used properly and exclusions keep working in
/// the default syntax, with no warnings.
#[test]
fn ordinary_query_text_still_works() {
    let index = open();
    index
        .upsert(&entry(
            context("a.rs", "c++ token refresh, what's this foo-bar: a phrase"),
            1,
            &["developer"],
        ))
        .unwrap();
    index
        .upsert(&entry(
            context("b.rs", "legacy token cache"),
            2,
            &["developer"],
        ))
        .unwrap();
    index.commit().unwrap();
    let a = key_of("a.rs");
    let b = key_of("b.rs");
    for (text, want) in [
        ("c++ token", vec![a.clone()]),
        ("what's this?", vec![a.clone()]),
        ("foo-bar", vec![a.clone()]),
        ("\"a phrase\"", vec![a.clone()]),
        ("refresh AND token", vec![a.clone()]),
        ("refresh OR cache", vec![a.clone(), b.clone()]),
        ("token NOT legacy", vec![a.clone()]),
        ("(refresh OR legacy) AND token", vec![a.clone(), b.clone()]),
        ("-legacy", vec![a.clone()]),
        ("token -legacy", vec![a.clone()]),
    ] {
        let r = index.search(&query("developer", text)).unwrap();
        assert!(r.warnings.is_empty(), "{text:?}: {:?}", r.warnings);
        let mut got: Vec<String> = r.hits.iter().map(|h| h.key.clone()).collect();
        got.sort();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "{text:?}");
    }
}

#[test]
fn searches_as_json_require_a_role() {
    let q: SearchQuery =
        serde_json::from_str(r#"{"role":"developer","text":"cache","tags":["a"]}"#).unwrap();
    assert_eq!(q.limit, 10);
    assert!(q.facets && q.snippets);
    assert!(serde_json::from_str::<SearchQuery>(r#"{"text":"cache"}"#).is_err());
    assert!(serde_json::from_str::<SearchQuery>(r#"{"role":"bad role","text":""}"#).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any text in any field indexes without panicking, and every tag that
    /// has a normal form finds its document.
    #[test]
    fn arbitrary_contexts_are_indexed_and_found_by_their_tags(
        summary in "\\PC{0,120}",
        tags in proptest::collection::vec("\\PC{0,16}|.{0,16}", 0..4),
        path in ".{0,40}",
        insight in ".{0,60}",
    ) {
        let index = open();
        let mut c = context("p.rs", &summary);
        c.path = path;
        c.tags = tags.clone();
        c.technologies = tags.clone();
        c.insights = vec![insight];
        let outcome = index.upsert(&entry(c, 1, &["developer"]));
        index.commit().unwrap();
        if outcome.is_ok() {
            for tag in &tags {
                let mut q = query("developer", "");
                q.tags = vec![tag.clone()];
                q.technologies = vec![tag.clone()];
                match index.search(&q) {
                    Ok(r) => prop_assert_eq!(r.total_hits, 1, "tag {:?}", tag),
                    Err(SearchError::EmptyFilterValue { .. }) => {
                        prop_assert!(slurp_index::schema::normalize_facet_value(tag).is_none())
                    }
                    Err(e) => prop_assert!(false, "tag {:?}: {}", tag, e),
                }
            }
            let r = index.search(&query("developer", "")).unwrap();
            prop_assert_eq!(r.total_hits, 1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text, in either syntax, gives results or a typed error.
    #[test]
    fn random_query_text_never_panics(text in ".{0,120}", strict in any::<bool>()) {
        thread_local! {
            static INDEX: slurp_index::ContextIndex = {
                let index = open();
                let mut c = context("src/a.rs", "alpha beta gamma (delta) \"quoted\"");
                c.insights = vec!["epsilon: zeta".into()];
                index.upsert(&entry(c, 1, &["developer"])).unwrap();
                index.commit().unwrap();
                index
            };
        }
        let mut q = query("developer", &text);
        q.syntax = if strict { QuerySyntax::Strict } else { QuerySyntax::Lenient };
        INDEX.with(|index| {
            let _ = index.search(&q);
            let _ = index.term_statistics(&q);
        });
    }

    /// Query-language punctuation mixed with words never panics either.
    #[test]
    fn random_query_syntax_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("alpha"), Just("("), Just(")"), Just("\""), Just("AND"), Just("OR"),
                Just("NOT"), Just("-"), Just("+"), Just(":"), Just("summary:"), Just("*"),
                Just("["), Just("]"), Just("{"), Just("}"), Just(" TO "), Just("^2"),
                Just("~1"), Just("\\"), Just(" "), Just("facets:/tag/x"), Just("IN ["),
            ],
            0..24,
        ),
        strict in any::<bool>(),
    ) {
        thread_local! {
            static INDEX: slurp_index::ContextIndex = {
                let index = open();
                index.upsert(&entry(context("a.rs", "alpha"), 1, &["developer"])).unwrap();
                index.commit().unwrap();
                index
            };
        }
        let text: String = parts.concat();
        let mut q = query("developer", &text);
        q.syntax = if strict { QuerySyntax::Strict } else { QuerySyntax::Lenient };
        INDEX.with(|index| {
            let _ = index.search(&q);
        });
    }
}
