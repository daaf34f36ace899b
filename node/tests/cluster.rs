//! Several nodes in one process on the in-memory libp2p transport: joins,
//! leaves, quorum writes and reads, concurrent writers, read repair, quorum
//! failure and distributed search, through the real store, swarm and
//! cluster code (no sockets, no mocks).

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Opts, admin, ctx, digest, run_worker};
use common::wait_until;
use slurp_index::{ContextIndex, IndexConfig, IndexEntry, SearchQuery};
use slurp_node::error::StoreError;
use slurp_node::store::{PutRequest, QuorumOpts};
use slurp_node::tokens::Principal;
use slurp_protocol::{RoleName, UcxlAddress};

const A: &str = "ucxl://claude:developer@shop:checkout/*^/src/auth.rs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_auto_join_and_every_node_reads_what_one_wrote() {
    let c = Cluster::start(Opts {
        n: 3,
        rf: 3,
        auto_join: true,
    })
    .await;
    c.converged(3).await;
    let w = c
        .node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "bearer token checks")))
        .await
        .unwrap();
    let a = UcxlAddress::parse(A).unwrap();
    for i in 0..3 {
        let r = c.node(i).store.get(&admin(), &a).await.unwrap();
        assert_eq!(r.version, w.version, "node {i}");
        assert_eq!(r.context.summary, "bearer token checks");
    }
    // Replication put the sealed record in every replica's own store.
    wait_until("all replicas stored", async || {
        (0..3).all(|i| {
            c.node(i)
                .store
                .local()
                .latest_meta(&a.key())
                .unwrap()
                .is_some()
        })
    })
    .await;
    // Batches replicate item by item; all-or-nothing is refused in a cluster.
    let items: Vec<_> = (0..20)
        .map(|i| slurp_node::store::BatchStoreItem {
            context: ctx(
                &format!("ucxl://claude:developer@shop:checkout/*^/src/b{i}.rs"),
                &format!("batch item {i}"),
            ),
            roles: None,
            change_reason: None,
            ttl_secs: None,
        })
        .collect();
    let report = c
        .node(1)
        .store
        .batch_put(&admin(), items.clone(), false)
        .await
        .unwrap();
    assert_eq!(
        (report.succeeded, report.failed),
        (20, 0),
        "{:?}",
        report.results.iter().find_map(|r| r.error.as_ref())
    );
    let b7 = UcxlAddress::parse("ucxl://claude:developer@shop:checkout/*^/src/b7.rs").unwrap();
    assert_eq!(
        c.node(2)
            .store
            .get(&admin(), &b7)
            .await
            .unwrap()
            .context
            .summary,
        "batch item 7"
    );
    let err = c
        .node(0)
        .store
        .batch_put(&admin(), items, true)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadRequest(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_find_each_other_without_their_bootstrap_peer() {
    let mut c = Cluster::start(Opts {
        n: 3,
        rf: 3,
        auto_join: true,
    })
    .await;
    c.converged(3).await;
    for i in 0..3 {
        c.stop(i).await;
    }
    // Nodes 1 and 2 come back; node 0, their only bootstrap peer, does not.
    let gone: libp2p::Multiaddr = format!("{}/p2p/{}", c.configs[0].net.listen[0], c.peer(0))
        .parse()
        .unwrap();
    c.restart_in_place(1, vec![gone.clone()]).await;
    c.restart_in_place(2, vec![gone]).await;
    wait_until("1 and 2 reconnect", async || {
        c.node(1).cluster.peers().view(&c.peer_id(2)).up
    })
    .await;
    // W = 2 of the 3 replicas: the two of them take writes and reads.
    let w = c
        .node(1)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "without node 0")))
        .await
        .unwrap();
    let r = c
        .node(2)
        .store
        .get(&admin(), &UcxlAddress::parse(A).unwrap())
        .await
        .unwrap();
    assert_eq!(r.version, w.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_joins_and_removes_members() {
    let c = Cluster::start(Opts {
        n: 3,
        rf: 2,
        auto_join: false,
    })
    .await;
    // Both joined with their invites: certified, known to node 0, but not
    // in the layout (they did not ask to be added at once).
    wait_until("peers known", async || {
        let s = c.node(0).cluster.status();
        s.others.iter().filter(|p| p.name.is_some()).count() == 2
    })
    .await;
    let l0 = c.node(0).cluster.layout().unwrap();
    assert_eq!((l0.version(), l0.members().len()), (1, 1));
    assert!(c.node(1).cluster.identity().is_some());
    let n0 = &c.node(0).cluster;
    n0.stage_join(None, Some("z1".into()), None).unwrap();
    n0.stage_join(Some(&c.peer(1)), Some("z2".into()), Some(200))
        .unwrap();
    n0.stage_join(Some(&c.peer(2)), None, None).unwrap();
    let l1 = n0.apply().await.unwrap();
    assert_eq!(l1.version(), 2);
    c.converged(3).await;
    let m1 = l1.members().iter().find(|m| m.id == c.peer(1)).unwrap();
    assert_eq!((m1.zone.as_str(), m1.capacity), ("z2", 200));
    // Only the holder of the cluster key signs layouts.
    let n1 = &c.node(1).cluster;
    n1.stage_remove(&c.peer(2)).unwrap();
    assert!(matches!(
        n1.apply().await,
        Err(slurp_node::cluster::ClusterError::KeyUnavailable(_))
    ));
    n0.stage_remove(&c.peer(2)).unwrap();
    let l2 = n0.apply().await.unwrap();
    assert_eq!(l2.version(), 3);
    c.converged(2).await;
    assert!(!c.node(2).cluster.is_member());
    assert!(c.node(0).cluster.is_member());
    // Writes go to the remaining members only, and still succeed.
    c.node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "after the removal")))
        .await
        .unwrap();
    let a = UcxlAddress::parse(A).unwrap();
    assert!(
        c.node(2)
            .store
            .local()
            .latest_meta(&a.key())
            .unwrap()
            .is_none()
    );
    // A removed member is refused by the others, although its
    // certificate has not expired.
    let p2: libp2p::PeerId = c.peer(2).parse().unwrap();
    assert!(!c.node(0).cluster.admits(&p2));
    assert!(!c.node(1).cluster.admits(&p2));
    // Nothing staged: apply is refused.
    assert!(matches!(
        n0.apply().await,
        Err(slurp_node::cluster::ClusterError::NothingStaged)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_keep_every_version_and_agree_on_the_latest() {
    let c = Cluster::start(Opts {
        n: 3,
        rf: 3,
        auto_join: true,
    })
    .await;
    c.converged(3).await;
    let a = UcxlAddress::parse(A).unwrap();
    let rounds = 8;
    let adm = admin();
    let mut acked = Vec::new();
    for round in 0..rounds {
        let (x, y) = tokio::join!(
            c.node(0).store.put(
                &adm,
                PutRequest::new(ctx(A, &format!("from node 0, round {round}")))
            ),
            c.node(1).store.put(
                &adm,
                PutRequest::new(ctx(A, &format!("from node 1, round {round}")))
            ),
        );
        acked.push(x.unwrap().version);
        acked.push(y.unwrap().version);
    }
    // Every acknowledged version is in the history, on every node.
    let mut latest = Vec::new();
    for i in 0..3 {
        let h = c.node(i).store.history(&admin(), &a).await.unwrap();
        let ids: Vec<&str> = h.iter().map(|e| e.version.as_str()).collect();
        for v in &acked {
            assert!(ids.contains(&v.as_str()), "node {i} lost {v}");
        }
        latest.push(c.node(i).store.get(&admin(), &a).await.unwrap().version);
    }
    assert!(latest.iter().all(|v| *v == latest[0]), "{latest:?}");
    // The latest is the greatest version by (clock, writer).
    let max = acked
        .iter()
        .map(|v| v.parse::<slurp_protocol::VersionId>().unwrap())
        .max()
        .unwrap();
    assert_eq!(latest[0], max.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_repairs_a_replica_that_missed_a_write() {
    let c = Cluster::start(Opts {
        n: 3,
        rf: 3,
        auto_join: true,
    })
    .await;
    c.converged(3).await;
    let a = UcxlAddress::parse(A).unwrap();
    c.node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "first")))
        .await
        .unwrap();
    wait_until("node 2 has the first version", async || {
        c.node(2)
            .store
            .local()
            .latest_meta(&a.key())
            .unwrap()
            .is_some()
    })
    .await;
    // Node 0's requests to node 2 are cut while the second version is
    // written (W = 2: nodes 0 and 1). Node 2 stays up and connected, so
    // anti-entropy (hourly here, and at a reconnection) does not heal it
    // before the read does.
    let faults = slurp_node::net::Faults::new(1);
    assert!(c.node(0).net.install_faults(faults.clone()));
    let (n0, n2) = (c.node(0).net.peer_id(), c.node(2).net.peer_id());
    faults.update(|r| {
        r.blocked.insert((n0, n2));
    });
    let second = c
        .node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "second")))
        .await
        .unwrap();
    faults.clear();
    let local = |c: &Cluster| {
        c.node(2)
            .store
            .local()
            .latest_meta(&a.key())
            .unwrap()
            .map(|(m, _)| m.version.to_string())
    };
    assert_ne!(
        local(&c).as_deref(),
        Some(second.version.as_str()),
        "node 2 missed it"
    );
    // A read through node 2 asks two replicas; the newest wins and node 2's
    // own copy is repaired.
    let r = c
        .node(2)
        .store
        .get_opts(
            &admin(),
            &a,
            QuorumOpts {
                w: None,
                r: Some(3),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.version, second.version);
    assert_eq!(r.context.summary, "second");
    wait_until("node 2 repaired", async || {
        local(&c).as_deref() == Some(second.version.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_w_replicas_up_is_an_error_not_a_silent_success() {
    let mut c = Cluster::start(Opts {
        n: 3,
        rf: 3,
        auto_join: true,
    })
    .await;
    c.converged(3).await;
    c.stop(1).await;
    // One replica down: W = 2 still holds.
    c.node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "two of three")))
        .await
        .unwrap();
    c.stop(2).await;
    let a = UcxlAddress::parse(A).unwrap();
    let err = c
        .node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "one of three")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Quorum { needed: 2, .. }), "{err}");
    // With W = 1 asked for, the one replica is enough.
    let r = c
        .node(0)
        .store
        .get_opts(
            &admin(),
            &a,
            QuorumOpts {
                w: None,
                r: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(r.context.summary, "two of three");
    let err = c.node(0).store.get(&admin(), &a).await.unwrap_err();
    assert!(matches!(err, StoreError::Quorum { .. }), "{err}");
    // History and existence take the same per-request read quorum.
    let one = QuorumOpts {
        w: None,
        r: Some(1),
    };
    let versions = c
        .node(0)
        .store
        .history_opts(&admin(), &a, one)
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
    let err = c.node(0).store.history(&admin(), &a).await.unwrap_err();
    assert!(matches!(err, StoreError::Quorum { .. }), "{err}");
    assert!(
        c.node(0)
            .store
            .exists_opts(&admin(), &a, one)
            .await
            .unwrap()
    );
    let err = c.node(0).store.exists(&admin(), &a).await.unwrap_err();
    assert!(matches!(err, StoreError::Quorum { .. }), "{err}");
}

/// Stops node `down_i` and writes `addr` through node 0 with W = 1: the
/// other replica acknowledges and a fallback keeps a hint. Returns the
/// address's key once a hint is held.
async fn write_while_down(c: &mut Cluster, down_i: usize, addr: &str) -> String {
    c.stop(down_i).await;
    c.node(0)
        .store
        .put_opts(
            &admin(),
            PutRequest::new(ctx(addr, "while a replica was down")),
            QuorumOpts {
                w: Some(1),
                r: Some(1),
            },
        )
        .await
        .unwrap();
    wait_until("a fallback holds a hint", async || {
        hints_held(c, down_i) == 1
    })
    .await;
    UcxlAddress::parse(addr).unwrap().key()
}

/// Hinted versions held by the running nodes other than `down_i`.
fn hints_held(c: &Cluster, down_i: usize) -> u64 {
    (0..4)
        .filter(|&i| i != down_i)
        .filter_map(|i| c.nodes[i].as_ref())
        .map(|n| {
            n.store
                .local()
                .hint_targets()
                .unwrap()
                .iter()
                .map(|t| t.count)
                .sum::<u64>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_handoff_returns_versions_to_a_replica_that_was_down() {
    let mut c = Cluster::start(Opts {
        n: 4,
        rf: 2,
        auto_join: true,
    })
    .await;
    c.converged(4).await;
    // An address whose replicas do not include node 0, the coordinator.
    let layout = c.node(0).cluster.layout().unwrap();
    let (addr, down) = (0..500)
        .map(|i| format!("ucxl://claude:developer@shop:checkout/*^/src/f{i}.rs"))
        .find_map(|s| {
            let key = UcxlAddress::parse(&s).unwrap().key();
            let reps: Vec<String> = layout
                .replicas_for_key(&key)
                .iter()
                .map(|&m| layout.member(m).id.clone())
                .collect();
            (!reps.contains(&c.peer(0))).then(|| (s, reps[0].clone()))
        })
        .unwrap();
    let down_i = (0..4).find(|&i| c.peer(i) == down).unwrap();
    let key = write_while_down(&mut c, down_i, &addr).await;
    let hinted = |c: &Cluster| hints_held(c, down_i);
    let fallback = (0..4)
        .filter(|&i| i != down_i)
        .find(|&i| !c.node(i).store.local().hint_targets().unwrap().is_empty())
        .unwrap();
    assert!(
        !layout
            .replicas_for_key(&key)
            .iter()
            .any(|&m| layout.member(m).id == c.peer(fallback))
    );
    // The hint survives a restart of the fallback (node 0 bootstraps the
    // others, so it stays).
    if fallback != 0 {
        c.stop(fallback).await;
        c.restart(fallback).await;
    }
    c.restart(down_i).await;
    wait_until("the hint is handed back", async || {
        hinted(&c) == 0
            && c.node(down_i)
                .store
                .local()
                .latest_meta(&key)
                .unwrap()
                .is_some()
    })
    .await;
    // The fallback is not a replica: its copy goes with the hint.
    wait_until("the fallback dropped its copy", async || {
        c.node(fallback)
            .store
            .local()
            .latest_meta(&key)
            .unwrap()
            .is_none()
    })
    .await;
}

/// A replica removed from the layout while a fallback held hints for it:
/// the versions go to the partition's replicas under the new layout, and
/// the hints (and the fallback's copy, when it is not a replica now) go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_for_a_replica_that_left_go_to_the_new_replicas() {
    let mut c = Cluster::start(Opts {
        n: 4,
        rf: 2,
        auto_join: true,
    })
    .await;
    c.converged(4).await;
    let layout = c.node(0).cluster.layout().unwrap();
    // An address whose replicas exclude node 0 (the coordinator, so the
    // hint lands on node 0, the first fallback it tries: itself), and
    // which, once its first replica is removed, gets a replica that holds
    // no copy yet: only the hint can bring it the version.
    let ids = |l: &slurp_protocol::placement::Layout, key: &str| -> Vec<String> {
        l.replicas_for_key(key)
            .iter()
            .map(|&m| l.member(m).id.clone())
            .collect()
    };
    let (addr, down) = (0..2000)
        .map(|i| format!("ucxl://claude:developer@shop:checkout/*^/src/g{i}.rs"))
        .find_map(|s| {
            let key = UcxlAddress::parse(&s).unwrap().key();
            let reps = ids(&layout, &key);
            if reps.contains(&c.peer(0)) {
                return None;
            }
            let rest: Vec<_> = layout
                .members()
                .iter()
                .filter(|m| m.id != reps[0])
                .cloned()
                .collect();
            let after =
                slurp_protocol::placement::Layout::next(&layout, layout.version() + 1, rest)
                    .unwrap();
            ids(&after, &key)
                .iter()
                .any(|r| *r != reps[1] && *r != c.peer(0))
                .then(|| (s, reps[0].clone()))
        })
        .unwrap();
    let down_i = (0..4).find(|&i| c.peer(i) == down).unwrap();
    let key = write_while_down(&mut c, down_i, &addr).await;
    let hinted = |c: &Cluster| hints_held(c, down_i);
    // The replica that was down leaves for good.
    let n0 = &c.node(0).cluster;
    n0.stage_remove(&down).unwrap();
    let after = n0.apply().await.unwrap();
    c.converged(3).await;
    let replicas: Vec<usize> = after
        .replicas_for_key(&key)
        .iter()
        .map(|&m| {
            let id = &after.member(m).id;
            (0..4).find(|&i| c.peer(i) == *id).unwrap()
        })
        .collect();
    wait_until(
        "the new replicas hold the version and no hint is left",
        async || {
            hinted(&c) == 0
                && replicas
                    .iter()
                    .all(|&i| c.node(i).store.local().latest_meta(&key).unwrap().is_some())
        },
    )
    .await;
    // Nodes that are not replicas now keep no copy held for the one that
    // left.
    for i in (0..4).filter(|i| *i != down_i && !replicas.contains(i)) {
        let node = c.node(i);
        wait_until("a non-replica dropped its hinted copy", async || {
            node.store.local().latest_meta(&key).unwrap().is_none()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_search_ranks_like_one_index_and_reports_missing_partitions() {
    let mut c = Cluster::start(Opts {
        n: 4,
        rf: 2,
        auto_join: true,
    })
    .await;
    c.converged(4).await;
    let words = [
        "token", "cache", "session", "replica", "quorum", "index", "search", "clock", "audit",
        "envelope", "rotation", "backup",
    ];
    let single = ContextIndex::open_in_memory(IndexConfig::default()).unwrap();
    let mut reqs = Vec::new();
    for i in 0..96usize {
        let mut text = Vec::new();
        for j in 0..(3 + i % 7) {
            text.push(words[(i * 7 + j * 3 + j * j) % words.len()]);
        }
        let addr = format!("ucxl://claude:developer@shop:checkout/*^/src/m{i}.rs");
        let mut n = ctx(&addr, &text.join(" "));
        n.tags = vec![words[i % 4].to_string()];
        reqs.push(n);
    }
    for n in reqs {
        let addr = n.address.clone();
        c.node(i_of(&addr))
            .store
            .put(&admin(), PutRequest::new(n))
            .await
            .unwrap();
        let r = c.node(0).store.get(&admin(), &addr).await.unwrap();
        single
            .upsert(&IndexEntry {
                key: addr.key(),
                version: r.context.version.as_ref().unwrap().id.clone(),
                readers: vec![
                    RoleName::new("admin").unwrap(),
                    RoleName::new("architect").unwrap(),
                    RoleName::new("developer").unwrap(),
                ],
                context: r.context,
            })
            .unwrap();
    }
    single.commit().unwrap();
    let role = RoleName::new("developer").unwrap();
    let dev = Principal {
        token_id: "t".into(),
        role: role.clone(),
    };
    for text in ["token cache", "quorum replica rotation", "audit"] {
        let q = SearchQuery::new(role.clone(), text);
        let want = single.search(&q).unwrap();
        let mut got = None;
        // Replicas index within about a second of a write.
        wait_until("search settles", async || {
            let r = c.node(1).store.search(&dev, q.clone()).await.unwrap();
            let ok = r.total_hits == want.total_hits;
            got = Some(r);
            ok
        })
        .await;
        let got = got.unwrap();
        assert!(!got.partial);
        assert_eq!(got.hits.len(), want.hits.len().min(10), "{text}");
        for (g, w) in got.hits.iter().zip(&want.hits) {
            assert!(
                (g.score - w.score).abs() < 1e-4,
                "{text}: {} vs {}",
                g.score,
                w.score
            );
        }
        let got_keys: Vec<String> = got
            .hits
            .iter()
            .map(|h| UcxlAddress::parse(&h.address).unwrap().key())
            .collect();
        // Equal scores may order differently: compare the top as sets.
        let mut a = got_keys;
        let mut b: Vec<String> = want.hits.iter().map(|h| h.key.clone()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{text}");
        assert_eq!(got.facets, want.facets, "{text}");
    }
    // A listing merges every node's share in key order, pages included.
    let pattern = UcxlAddress::parse("ucxl://any:any@shop:checkout/*^/src").unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let page = c
            .node(3)
            .store
            .list(&dev, &pattern, after.as_deref(), 30)
            .await
            .unwrap();
        seen.extend(page.entries.iter().map(|e| e.address.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(seen.len(), 96, "every context once");
    assert_eq!(unique.len(), 96);
    // Two nodes down: the partitions they both held have no replica left.
    c.stop(2).await;
    c.stop(3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c
        .node(0)
        .store
        .search(&dev, SearchQuery::new(role.clone(), "token"))
        .await
        .unwrap();
    assert!(r.partial, "{} hits, nodes {}", r.total_hits, r.nodes);
    let layout = c.node(0).cluster.layout().unwrap();
    let down = [c_peer(&layout, &c, 2), c_peer(&layout, &c, 3)];
    // Exactly the partitions both of whose replicas are down are missing.
    let expected: Vec<u32> = (0..layout.partitions().count())
        .filter(|&p| {
            layout
                .replicas(slurp_protocol::Partition(p as u16))
                .iter()
                .all(|&m| down.contains(&layout.member(m).id))
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(r.missing_partitions, expected);
}

fn c_peer(_l: &slurp_protocol::placement::Layout, c: &Cluster, i: usize) -> String {
    c.peer(i)
}

fn i_of(addr: &UcxlAddress) -> usize {
    addr.key().len() % 4
}

fn heal_addr(i: usize) -> String {
    format!("ucxl://claude:developer@shop:checkout/*^/src/heal{i}.rs")
}

fn key_of(addr: &str) -> String {
    UcxlAddress::parse(addr).unwrap().key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_was_down_converges_without_any_read() {
    let mut c = Cluster::start_with(
        Opts {
            n: 3,
            rf: 3,
            auto_join: true,
        },
        |c| c.replication.anti_entropy_interval = Duration::from_millis(200),
    )
    .await;
    c.converged(3).await;
    for i in 0..20 {
        c.node(0)
            .store
            .put(&admin(), PutRequest::new(ctx(&heal_addr(i), "before")))
            .await
            .unwrap();
    }
    wait_until("every node holds the first writes", async || {
        (0..3).all(|i| digest(&c, i).versions == 20)
    })
    .await;
    c.stop(2).await;
    for i in 20..50 {
        c.node(i % 2)
            .store
            .put(&admin(), PutRequest::new(ctx(&heal_addr(i), "while down")))
            .await
            .unwrap();
    }
    for i in 0..10 {
        c.node(1)
            .store
            .delete(&admin(), &UcxlAddress::parse(&heal_addr(i)).unwrap())
            .await
            .unwrap();
    }
    c.restart(2).await;
    // Nothing reads through the store from here on: only anti-entropy can
    // bring node 2 what it missed.
    wait_until("node 2 holds what the others hold", async || {
        let d0 = digest(&c, 0);
        d0.versions == 60 && digest(&c, 1) == d0 && digest(&c, 2) == d0
    })
    .await;
    let local = c.node(2).store.local();
    for i in 0..10 {
        let (meta, _) = local.latest_meta(&key_of(&heal_addr(i))).unwrap().unwrap();
        assert!(meta.tombstone, "{} is deleted on node 2 too", heal_addr(i));
    }
    for i in 10..50 {
        let (meta, _) = local.latest_meta(&key_of(&heal_addr(i))).unwrap().unwrap();
        assert!(!meta.tombstone);
    }
    let partitions = 1u32 << 6;
    wait_until("every node reports every partition converged", async || {
        (0..3).all(|i| {
            let s = c.node(i).anti_entropy.status();
            s.partitions == partitions && s.converged == partitions && s.differing == 0
        })
    })
    .await;
    let moved: u64 = (0..3)
        .map(|i| {
            let m = c.node(i).metrics.encode();
            m.lines()
                .filter(|l| l.contains("anti_entropy_total{cause=\"versions_"))
                .filter(|l| l.contains("sent") || l.contains("received"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    assert!(moved >= 40, "the metrics count what moved ({moved})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_goes_only_once_every_replica_holds_it() {
    let mut c = Cluster::start_with(
        Opts {
            n: 3,
            rf: 3,
            auto_join: true,
        },
        |c| c.replication.gc_min_age = Duration::ZERO,
    )
    .await;
    c.converged(3).await;
    let a = UcxlAddress::parse(A).unwrap();
    let key = a.key();
    let first = c
        .node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "doomed")))
        .await
        .unwrap();
    let version: slurp_protocol::VersionId = first.version.parse().unwrap();
    wait_until("node 2 has the version", async || {
        c.node(2).store.local().latest_meta(&key).unwrap().is_some()
    })
    .await;
    let old = c
        .node(0)
        .store
        .local()
        .get(&key, &version)
        .unwrap()
        .unwrap();
    c.stop(2).await;
    c.node(0).store.delete(&admin(), &a).await.unwrap();
    let head = |c: &Cluster, i: usize| c.node(i).store.local().latest_meta(&key).unwrap();
    wait_until("nodes 0 and 1 hold the tombstone", async || {
        [0, 1]
            .iter()
            .all(|&i| head(&c, i).is_some_and(|(m, _)| m.tombstone))
    })
    .await;
    // Node 2 lacks the tombstone (it is down): nothing is collected.
    run_worker(&c, &[0, 1], "tombstone-gc").await;
    for i in [0, 1] {
        assert!(head(&c, i).is_some_and(|(m, _)| m.tombstone), "node {i}");
    }
    c.restart(2).await;
    c.converged(3).await;
    // Anti-entropy (run when a member connects) brings node 2 the
    // tombstone; then it goes everywhere.
    run_worker(&c, &[0, 1, 2], "anti-entropy").await;
    assert!(head(&c, 2).is_some_and(|(m, _)| m.tombstone));
    run_worker(&c, &[0, 1, 2], "tombstone-gc").await;
    for i in 0..3 {
        assert!(head(&c, i).is_none(), "node {i} collected the address");
        assert!(c.node(i).store.local().collected(&key).unwrap().is_some());
    }
    // A late copy of the deleted version (a hint, a push, a repair) is
    // answered as held and not stored: the context does not come back.
    let push = slurp_protocol::messages::ReplicateRequest::PutVersions {
        versions: vec![slurp_protocol::messages::SealedVersion {
            meta: old.meta.clone(),
            envelope: old.envelope.clone().into(),
        }],
        layout_version: None,
        write_quorum_id: None,
        hint_for: None,
    };
    match c
        .node(1)
        .store
        .replicator()
        .unwrap()
        .serve_replicate(&c.peer_id(0), push)
        .await
    {
        slurp_protocol::messages::ReplicateResponse::Stored { outcomes } => {
            assert_eq!(
                outcomes[0].outcome,
                slurp_protocol::messages::PutOutcome::AlreadyPresent
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(head(&c, 1).is_none());
    run_worker(&c, &[0, 1, 2], "anti-entropy").await;
    assert!((0..3).all(|i| head(&c, i).is_none()));
    assert!(matches!(
        c.node(2).store.get(&admin(), &a).await,
        Err(StoreError::NotFound(_))
    ));
    // Writing the address again works, with a newer version.
    c.node(1)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "reborn")))
        .await
        .unwrap();
    let r = c.node(2).store.get(&admin(), &a).await.unwrap();
    assert_eq!(r.context.summary, "reborn");

    // A replica that is up but lacks a tombstone (its copy of the delete
    // was lost on the way) holds the collection back too.
    let b = UcxlAddress::parse(&heal_addr(7)).unwrap();
    let bkey = b.key();
    let put = c
        .node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(&heal_addr(7), "kept")))
        .await
        .unwrap();
    let bhead = |c: &Cluster, i: usize| c.node(i).store.local().latest_meta(&bkey).unwrap();
    wait_until("node 2 has the second address", async || {
        bhead(&c, 2).is_some()
    })
    .await;
    let (mut tomb, _) = bhead(&c, 0).unwrap();
    let live: slurp_protocol::VersionId = put.version.parse().unwrap();
    tomb.parent_version = Some(live.clone());
    tomb.version.hlc.logical += 1;
    tomb.tombstone = true;
    for i in [0, 1] {
        let req = slurp_protocol::messages::ReplicateRequest::PutVersions {
            versions: vec![slurp_protocol::messages::SealedVersion {
                meta: tomb.clone(),
                envelope: Vec::new().into(),
            }],
            layout_version: None,
            write_quorum_id: None,
            hint_for: None,
        };
        c.node(i)
            .store
            .replicator()
            .unwrap()
            .serve_replicate(&c.peer_id(2), req)
            .await;
    }
    run_worker(&c, &[0, 1, 2], "tombstone-gc").await;
    for i in [0, 1] {
        assert!(
            bhead(&c, i).is_some_and(|(m, _)| m.tombstone),
            "node {i} keeps it"
        );
    }
    assert!(bhead(&c, 2).is_some_and(|(m, _)| m.version == live));
    run_worker(&c, &[0, 1, 2], "anti-entropy").await;
    run_worker(&c, &[0, 1, 2], "tombstone-gc").await;
    for i in 0..3 {
        assert!(
            bhead(&c, i).is_none(),
            "node {i} collected the second address"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_limit_over_the_maximum_is_refused_once_not_reported_as_missing_partitions() {
    let c = Cluster::start(Opts {
        n: 3,
        rf: 2,
        auto_join: true,
    })
    .await;
    c.converged(3).await;
    c.node(0)
        .store
        .put(&admin(), PutRequest::new(ctx(A, "searchable token")))
        .await
        .unwrap();
    let q = |limit: usize, offset: usize| {
        let mut q = SearchQuery::new(RoleName::new("admin").unwrap(), "token");
        q.limit = limit;
        q.offset = offset;
        q
    };
    let e = c
        .node(1)
        .store
        .search(&admin(), q(150, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Search(_) | StoreError::InvalidQuery(_) | StoreError::BadRequest(_)
        ),
        "a 400, not missing partitions: {e}"
    );
    // Within the limit, even when offset + limit is past it.
    let r = c.node(1).store.search(&admin(), q(60, 50)).await.unwrap();
    assert!(!r.partial, "{r:?}");
    let r = c.node(1).store.search(&admin(), q(10, 0)).await.unwrap();
    assert_eq!(r.hits.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_heals_only_the_partitions_two_members_share() {
    // 4 members, 2 copies: each pair of members shares some partitions
    // only. Handoff is off, so only anti-entropy can heal.
    let mut c = Cluster::start_with(
        Opts {
            n: 4,
            rf: 2,
            auto_join: true,
        },
        |c| {
            c.replication.anti_entropy_interval = Duration::from_millis(200);
            c.cluster.handoff_interval = Duration::from_secs(3600);
        },
    )
    .await;
    c.converged(4).await;
    let layout = c.node(0).cluster.layout().unwrap();
    let peers: Vec<String> = (0..4).map(|i| c.peer(i)).collect();
    let replicas = |key: &str| -> Vec<usize> {
        layout
            .replicas_for_key(key)
            .iter()
            .map(|&m| {
                peers
                    .iter()
                    .position(|p| *p == layout.member(m).id)
                    .unwrap()
            })
            .collect()
    };
    c.stop(3).await;
    let mut written = Vec::new();
    for i in 0..40 {
        let addr = heal_addr(100 + i);
        let key = key_of(&addr);
        let reps = replicas(&key);
        // W = 1: a write whose other replica is node 3 still succeeds.
        let via = reps.iter().copied().find(|&r| r != 3).unwrap();
        c.node(via)
            .store
            .put_opts(
                &admin(),
                PutRequest::new(ctx(&addr, "while node 3 was down")),
                QuorumOpts {
                    w: Some(1),
                    r: Some(1),
                },
            )
            .await
            .unwrap();
        written.push((key, reps));
    }
    assert!(written.iter().any(|(_, r)| r.contains(&3)));
    c.restart(3).await;
    wait_until("every replica holds every write", async || {
        written.iter().all(|(key, reps)| {
            reps.iter()
                .all(|&r| c.node(r).store.local().latest_meta(key).unwrap().is_some())
        })
    })
    .await;
    // Nothing went where it does not belong: a node outside the replicas
    // holds a version only as a hinted copy for node 3 (the write's
    // fallback; handoff is off here).
    for (key, reps) in &written {
        for i in (0..4).filter(|i| !reps.contains(i)) {
            let local = c.node(i).store.local();
            if local.latest_meta(key).unwrap().is_some() {
                let hints = local.hints(&peers[3], None, 1000).unwrap();
                assert!(
                    hints.hints.iter().any(|h| &h.key == key),
                    "node {i} is not a replica of {key} and holds no hint for it"
                );
            }
        }
    }
}
