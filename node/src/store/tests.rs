//! Behaviour of the context store over real parts (redb, age, Tantivy) in
//! a temporary data directory.

use super::*;
use crate::config::NodeConfig;
use crate::node::Node;
use slurp_protocol::RoleName;

fn who(role: &str) -> Principal {
    Principal {
        token_id: format!("test-{role}"),
        role: RoleName::new(role).unwrap(),
    }
}

async fn node() -> (tempfile::TempDir, Node) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig {
        data_dir: dir.path().join("data"),
        ..NodeConfig::default()
    };
    config.index.commit_every_ops = 1;
    let node = Node::open(config).await.unwrap();
    // A liveness bound only: a loaded machine rebuilds slowly.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(90) {
        if node.index_ready.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    (dir, node)
}

fn ctx(addr: &str, summary: &str, roles: &[&str]) -> ContextNode {
    ContextNode::new(
        UcxlAddress::parse(addr).unwrap(),
        summary,
        roles.iter().map(|r| RoleName::new(*r).unwrap()).collect(),
    )
}

fn addr(s: &str) -> UcxlAddress {
    UcxlAddress::parse(s).unwrap()
}

const A: &str = "ucxl://claude:developer@slurp:core/*^/src/store.rs";

#[tokio::test]
async fn put_get_versions_and_temporal_addresses() {
    let (_d, node) = node().await;
    let s = &node.store;
    let dev = who("developer");
    let r1 = s
        .put(&dev, PutRequest::new(ctx(A, "first", &["developer"])))
        .await
        .unwrap();
    assert!(r1.created);
    assert_eq!(
        r1.readers,
        vec![
            RoleName::new("admin").unwrap(),
            RoleName::new("architect").unwrap(),
            RoleName::new("developer").unwrap()
        ]
    );
    let mut req = PutRequest::new(ctx(A, "second", &["developer"]));
    req.change_reason = Some("rewrote it".into());
    let r2 = s.put(&dev, req).await.unwrap();
    assert_eq!(r2.parent.as_deref(), Some(r1.version.as_str()));
    s.put(&dev, PutRequest::new(ctx(A, "third", &["developer"])))
        .await
        .unwrap();

    let latest = s.get(&dev, &addr(A)).await.unwrap();
    assert_eq!(latest.context.summary, "third");
    assert_eq!(latest.ordinal, 3);
    // Cached read gives the same answer.
    assert_eq!(s.get(&dev, &addr(A)).await.unwrap(), latest);
    let a = addr(A);
    let v1 = s
        .get(&dev, &a.with_temporal(Temporal::Version(1)))
        .await
        .unwrap();
    assert_eq!(v1.context.summary, "first");
    let back1 = s
        .get(&dev, &a.with_temporal(Temporal::Back(1)))
        .await
        .unwrap();
    assert_eq!(back1.context.summary, "second");
    assert_eq!(
        back1.context.version.as_ref().unwrap().change_reason,
        "rewrote it"
    );
    let fwd = s
        .get(&dev, &a.with_temporal(Temporal::Forward(2)))
        .await
        .unwrap();
    assert_eq!(fwd.context.summary, "third");
    assert!(matches!(
        s.get(&dev, &a.with_temporal(Temporal::Version(9))).await,
        Err(StoreError::NotFound(_))
    ));
    let h = s.history(&dev, &a).await.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[2].parent.as_deref(), Some(r2.version.as_str()));
}

#[tokio::test]
async fn forbidden_reads_and_writes_are_refused_and_audited() {
    let (_d, node) = node().await;
    let s = &node.store;
    let arch_addr = "ucxl://claude:architect@slurp:core/*^/docs/adr-1.md";
    s.put(
        &who("architect"),
        PutRequest::new(ctx(arch_addr, "secret plan", &["architect"])),
    )
    .await
    .unwrap();
    // A developer cannot read architect records; admin can.
    let e = s
        .get(&who("developer"), &addr(arch_addr))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }), "{e}");
    assert_eq!(
        s.get(&who("admin"), &addr(arch_addr))
            .await
            .unwrap()
            .context
            .summary,
        "secret plan"
    );
    // Even after admin's read is cached, the developer still gets nothing.
    assert!(s.get(&who("developer"), &addr(arch_addr)).await.is_err());
    // Observers have read-only authority.
    let e = s
        .put(
            &who("observer"),
            PutRequest::new(ctx("ucxl://a:observer@p:t/*^/x", "x", &["observer"])),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }));
    // A developer may not write a record only architects can read.
    let e = s
        .put(
            &who("developer"),
            PutRequest::new(ctx("ucxl://a:dev@p:t/*^/y", "y", &["architect"])),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }));
    // Nor overwrite it.
    let e = s
        .put(
            &who("developer"),
            PutRequest::new(ctx(arch_addr, "mine now", &["developer"])),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }));
    s.audit().flush().await;
    let denied = node
        .audit_log
        .query(&slurp_crypto::AuditFilter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.decision == slurp_crypto::Decision::Deny)
        .count();
    assert!(denied >= 4, "denied {denied}");
    node.audit_log.verify().unwrap();
}

#[tokio::test]
async fn delete_is_a_tombstone_and_history_keeps_versions() {
    let (_d, node) = node().await;
    let s = &node.store;
    let dev = who("developer");
    s.put(&dev, PutRequest::new(ctx(A, "alive", &["developer"])))
        .await
        .unwrap();
    s.get(&dev, &addr(A)).await.unwrap();
    s.delete(&dev, &addr(A)).await.unwrap();
    assert!(matches!(
        s.get(&dev, &addr(A)).await,
        Err(StoreError::Deleted { .. })
    ));
    assert!(!s.exists(&dev, &addr(A)).await.unwrap());
    let h = s.history(&dev, &addr(A)).await.unwrap();
    assert_eq!(h.len(), 2);
    assert!(h[1].tombstone);
    assert!(matches!(
        s.delete(&dev, &addr(A)).await,
        Err(StoreError::Deleted { .. })
    ));
    // Writing again revives it.
    s.put(&dev, PutRequest::new(ctx(A, "back", &["developer"])))
        .await
        .unwrap();
    assert_eq!(s.get(&dev, &addr(A)).await.unwrap().context.summary, "back");
}

#[tokio::test]
async fn conflicting_expectations_are_refused() {
    let (_d, node) = node().await;
    let s = &node.store;
    let dev = who("developer");
    let mut req = PutRequest::new(ctx(A, "one", &["developer"]));
    req.expect_latest = Some(String::new());
    let r1 = s.put(&dev, req.clone()).await.unwrap();
    assert!(matches!(
        s.put(&dev, req).await,
        Err(StoreError::Conflict { .. })
    ));
    let mut req = PutRequest::new(ctx(A, "two", &["developer"]));
    req.expect_latest = Some(r1.version.clone());
    s.put(&dev, req).await.unwrap();
}

#[tokio::test]
async fn list_by_pattern_and_prefix_hides_unreadable() {
    let (_d, node) = node().await;
    let s = &node.store;
    for (a, roles) in [
        (
            "ucxl://claude:developer@slurp:core/*^/src/a.rs",
            &["developer"][..],
        ),
        (
            "ucxl://claude:developer@slurp:core/*^/src/b.rs",
            &["developer"][..],
        ),
        (
            "ucxl://gpt:developer@slurp:core/*^/src/c.rs",
            &["developer"][..],
        ),
        (
            "ucxl://claude:architect@slurp:core/*^/src/d.rs",
            &["architect"][..],
        ),
        (
            "ucxl://claude:developer@other:core/*^/src/e.rs",
            &["developer"][..],
        ),
    ] {
        s.put(&who("admin"), PutRequest::new(ctx(a, "x", roles)))
            .await
            .unwrap();
    }
    let dev = who("developer");
    let page = s
        .list(&dev, &addr("ucxl://any:any@slurp:any/*~/src"), None, 100)
        .await
        .unwrap();
    let paths: Vec<&str> = page.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["src/a.rs", "src/b.rs", "src/c.rs"]);
    let page = s
        .list(
            &who("admin"),
            &addr("ucxl://claude:any@any:any/*~/src"),
            None,
            2,
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2);
    let rest = s
        .list(
            &who("admin"),
            &addr("ucxl://claude:any@any:any/*~/src"),
            page.next.as_deref(),
            10,
        )
        .await
        .unwrap();
    assert_eq!(rest.entries.len(), 2);
    assert!(rest.next.is_none());
}

#[tokio::test]
async fn resolve_merges_parents() {
    let (_d, node) = node().await;
    let s = &node.store;
    let admin = who("admin");
    let mut root = ctx("ucxl://c:developer@p:t/*^/", "the project", &["developer"]);
    root.tags = vec!["rust".into()];
    root.purpose = "store contexts".into();
    let mut src = ctx(
        "ucxl://c:developer@p:t/*^/src",
        "the sources",
        &["developer"],
    );
    src.tags = vec!["code".into()];
    src.context_specificity = 5;
    let mut hidden = ctx(
        "ucxl://c:developer@p:t/*^/src/auth",
        "auth only",
        &["developer"],
    );
    hidden.applies_to_children = false;
    hidden.tags = vec!["not-inherited".into()];
    let mut leaf = ctx(
        "ucxl://c:developer@p:t/*^/src/auth/login.rs",
        "login",
        &["developer"],
    );
    leaf.tags = vec!["security".into(), "rust".into()];
    for c in [root, src, hidden, leaf] {
        s.put(&admin, PutRequest::new(c)).await.unwrap();
    }
    let r = s
        .resolve(
            &who("developer"),
            &addr("ucxl://c:developer@p:t/*^/src/auth/login.rs"),
        )
        .await
        .unwrap();
    // src has the highest specificity.
    assert_eq!(r.summary, "the sources");
    assert!(r.summary_source.ends_with("/src"));
    assert_eq!(r.purpose, "store contexts");
    let tags: Vec<&str> = r.tags.iter().map(|t| t.value.as_str()).collect();
    assert_eq!(tags, vec!["rust", "code", "security"]);
    assert!(r.tags[0].source.ends_with("/*^/"));
    assert_eq!(r.chain.len(), 3);

    // An override drops what the parents said.
    let mut leaf = ctx(
        "ucxl://c:developer@p:t/*^/src/auth/login.rs",
        "login v2",
        &["developer"],
    );
    leaf.overrides_parent = true;
    s.put(&admin, PutRequest::new(leaf)).await.unwrap();
    let r = s
        .resolve(
            &who("developer"),
            &addr("ucxl://c:developer@p:t/*^/src/auth/login.rs"),
        )
        .await
        .unwrap();
    assert_eq!(r.summary, "login v2");
    assert!(r.tags.is_empty());
    assert_eq!(r.chain.len(), 1);
}

#[tokio::test]
async fn links_walk_both_directions_within_hops() {
    let (_d, node) = node().await;
    let s = &node.store;
    let admin = who("admin");
    let a = "ucxl://c:developer@p:t/*^/a";
    let b = "ucxl://c:developer@p:t/*^/b";
    let c = "ucxl://c:developer@p:t/*^/c";
    let secret = "ucxl://c:architect@p:t/*^/secret";
    let mut na = ctx(a, "decision a", &["developer"]);
    na.links.influences = vec![addr(b)];
    let mut nb = ctx(b, "decision b", &["developer"]);
    nb.links.influences = vec![addr(c)];
    let mut ns = ctx(secret, "secret", &["architect"]);
    ns.links.influences = vec![addr(b)];
    for n in [na, nb, ctx(c, "decision c", &["developer"]), ns] {
        s.put(&admin, PutRequest::new(n)).await.unwrap();
    }
    let g = s.links(&who("developer"), &addr(b), 1).await.unwrap();
    let mut found: Vec<&str> = g.nodes.iter().map(|n| n.summary.as_str()).collect();
    found.sort();
    assert_eq!(found, vec!["decision a", "decision b", "decision c"]);
    assert_eq!(g.edges.len(), 2);
    let g = s.links(&who("admin"), &addr(a), 2).await.unwrap();
    assert_eq!(g.nodes.len(), 4);
    let g = s.links(&who("admin"), &addr(a), 1).await.unwrap();
    assert_eq!(g.nodes.len(), 2);
}

#[tokio::test]
async fn search_is_role_scoped_and_decrypted() {
    let (_d, node) = node().await;
    let s = &node.store;
    let admin = who("admin");
    let mut dev = ctx(
        "ucxl://c:developer@p:t/*^/src/auth.rs",
        "token authentication middleware",
        &["developer"],
    );
    dev.tags = vec!["security".into()];
    s.put(&admin, PutRequest::new(dev)).await.unwrap();
    s.put(
        &admin,
        PutRequest::new(ctx(
            "ucxl://c:architect@p:t/*^/adr",
            "authentication redesign",
            &["architect"],
        )),
    )
    .await
    .unwrap();
    s.index().unwrap().commit().unwrap();
    let q =
        |role: &str| slurp_index::SearchQuery::new(RoleName::new(role).unwrap(), "authentication");
    let r = s.search(&who("developer"), q("developer")).await.unwrap();
    assert_eq!(r.total_hits, 1);
    assert_eq!(r.hits[0].context.summary, "token authentication middleware");
    assert!(r.hits[0].snippet.contains("<b>"));
    // The query's role is replaced by the caller's.
    let r = s.search(&who("developer"), q("admin")).await.unwrap();
    assert_eq!(r.total_hits, 1);
    let r = s.search(&who("architect"), q("architect")).await.unwrap();
    assert_eq!(r.total_hits, 2);
}

#[tokio::test]
async fn batch_put_partial_and_atomic() {
    let (_d, node) = node().await;
    let s = &node.store;
    let admin = who("admin");
    let item = |a: &str, summary: &str| BatchStoreItem {
        context: ctx(a, summary, &["developer"]),
        roles: None,
        change_reason: None,
        ttl_secs: None,
    };
    let items = vec![
        item("ucxl://c:developer@p:t/*^/1", "one"),
        item("ucxl://c:developer@p:t/*^/2", ""),
        item("ucxl://c:developer@p:t/*^/3", "three"),
    ];
    let r = s.batch_put(&admin, items.clone(), false).await.unwrap();
    assert_eq!((r.succeeded, r.failed, r.aborted), (2, 1, false));
    assert_eq!(r.results[1].error.as_ref().unwrap().code, "invalid_context");
    let items2: Vec<_> = items
        .into_iter()
        .map(|mut i| {
            i.context.address.path.push('b');
            i
        })
        .collect();
    let r = s.batch_put(&admin, items2, true).await.unwrap();
    assert!(r.aborted);
    assert_eq!(r.succeeded, 0);
    assert!(matches!(
        s.get(&admin, &addr("ucxl://c:developer@p:t/*^/1b")).await,
        Err(StoreError::NotFound(_))
    ));
    let got = s
        .batch_get(
            &admin,
            vec![
                "ucxl://c:developer@p:t/*^/1".into(),
                "ucxl://c:developer@p:t/*^/2".into(),
                "not an address".into(),
            ],
        )
        .await
        .unwrap();
    assert_eq!(got.succeeded, 1);
    assert_eq!(got.results[2].error.as_ref().unwrap().code, "bad_address");
    assert!(s.batches().list().iter().all(|b| b.finished));
    // An atomic batch must fit one transaction of the local store.
    let max = s.local().config().max_batch;
    let many: Vec<_> = (0..=max)
        .map(|i| item(&format!("ucxl://c:developer@p:t/*^/many/{i}"), "x"))
        .collect();
    assert!(matches!(
        s.batch_put(&admin, many, true).await,
        Err(StoreError::TooMany { .. })
    ));
}

#[tokio::test]
async fn expired_records_are_never_returned() {
    let (_d, node) = node().await;
    let s = &node.store;
    let dev = who("developer");
    let mut req = PutRequest::new(ctx(A, "short lived", &["developer"]));
    req.ttl_secs = Some(1);
    s.put(&dev, req).await.unwrap();
    assert!(s.get(&dev, &addr(A)).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    s.cache().clear();
    assert!(matches!(
        s.get(&dev, &addr(A)).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn index_is_rebuilt_from_the_store_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        data_dir: dir.path().join("data"),
        ..NodeConfig::default()
    };
    {
        let node = Node::open(config.clone()).await.unwrap();
        node.store
            .put(
                &who("admin"),
                PutRequest::new(ctx(A, "persistent marmalade", &["developer"])),
            )
            .await
            .unwrap();
        node.close().await;
    }
    let node = Node::open(config).await.unwrap();
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(90) {
        if node.index_ready.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = node
        .store
        .search(
            &who("developer"),
            slurp_index::SearchQuery::new(RoleName::new("developer").unwrap(), "marmalade"),
        )
        .await
        .unwrap();
    assert_eq!(r.total_hits, 1);
}
