//! Layout transitions in one process: a member joins, a member leaves,
//! a capacity changes; the data moves to the new owners, the old owners
//! drop it only afterwards, and every acknowledged write stays readable
//! throughout, through the real store, swarm and cluster code.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, Opts, admin, ctx};
use common::wait_until;
use slurp_node::store::PutRequest;
use slurp_protocol::UcxlAddress;

const CONTEXTS: usize = 120;

fn addr(i: usize) -> String {
    format!("ucxl://claude:developer@shop:checkout/*^/src/moved{i}.rs")
}

/// A cluster of `n` started nodes of which the first `members` are in the
/// layout (replication factor 3, quorums 2), with [`CONTEXTS`] contexts
/// written through node 0.
async fn cluster(
    n: usize,
    members: usize,
    tweak: impl Fn(&mut slurp_node::config::NodeConfig),
) -> Cluster {
    let c = Cluster::start_with(
        Opts {
            n,
            rf: 3,
            auto_join: false,
        },
        tweak,
    )
    .await;
    wait_until("peers known", async || {
        let s = c.node(0).cluster.status();
        s.others.iter().filter(|p| p.name.is_some()).count() == n - 1
    })
    .await;
    let n0 = &c.node(0).cluster;
    n0.stage_join(None, None, None).unwrap();
    for i in 1..members {
        n0.stage_join(Some(&c.peer(i)), None, None).unwrap();
    }
    n0.apply().await.unwrap();
    c.converged(members).await;
    for i in 0..CONTEXTS {
        c.node(0)
            .store
            .put(
                &admin(),
                PutRequest::new(ctx(&addr(i), &format!("moved {i}"))),
            )
            .await
            .unwrap();
    }
    c
}

/// Reads every context through node `via` once; panics on any miss.
async fn read_all(c: &Cluster, via: usize, during: &str) {
    for i in 0..CONTEXTS {
        let a = UcxlAddress::parse(&addr(i)).unwrap();
        let r = c.node(via).store.get(&admin(), &a).await;
        let r =
            r.unwrap_or_else(|e| panic!("{during}: read of context {i} through node {via}: {e}"));
        assert_eq!(r.context.summary, format!("moved {i}"), "{during}");
    }
}

/// Reads everything through every running node until no node holds more
/// than one layout; then checks that each node stores exactly the keys
/// whose partitions it owns.
async fn through_the_transition(c: &Cluster, running: &[usize], during: &str) {
    let start = std::time::Instant::now();
    let mut rounds = 0;
    loop {
        for &i in running {
            read_all(c, i, during).await;
        }
        rounds += 1;
        let over = running.iter().all(|&i| !c.node(i).cluster.in_transition());
        if over {
            break;
        }
        assert!(
            start.elapsed() < common::LIVENESS,
            "{during}: the transition did not end (status of node 0: {:?})",
            c.node(0).rebalance.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rounds >= 1);
    let layout = c.node(running[0]).cluster.layout().unwrap();
    for &i in running {
        let me = c.peer(i);
        let mi = layout.member_index(&me);
        for k in 0..CONTEXTS {
            let key = UcxlAddress::parse(&addr(k)).unwrap().key();
            let owns = mi.is_some_and(|mi| layout.replicas_for_key(&key).contains(&mi));
            let holds = c.node(i).store.local().latest_meta(&key).unwrap().is_some();
            assert_eq!(
                owns, holds,
                "{during}: node {i} owns context {k}: {owns}, holds it: {holds}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_then_a_removal_move_the_data_and_every_write_stays_readable() {
    let c = cluster(4, 3, |_| {}).await;
    let n0 = &c.node(0).cluster;
    // A fourth member: it gains partitions it holds nothing of.
    n0.stage_join(Some(&c.peer(3)), None, None).unwrap();
    n0.apply().await.unwrap();
    through_the_transition(&c, &[0, 1, 2, 3], "after the join").await;
    let pulled = c.node(3).cluster.transitions().state();
    assert!(pulled.versions > 0, "{pulled:?}");
    // Writes during and after keep going: one more now.
    c.node(3)
        .store
        .put(&admin(), PutRequest::new(ctx(&addr(0), "moved 0")))
        .await
        .unwrap();
    // Node 1 is decommissioned: it drains, then leaves.
    n0.stage_remove(&c.peer(1)).unwrap();
    n0.apply().await.unwrap();
    through_the_transition(&c, &[0, 2, 3], "after the removal").await;
    wait_until("the removed node dropped its copies", async || {
        !c.node(1).cluster.in_transition()
            && (0..CONTEXTS).all(|k| {
                let key = UcxlAddress::parse(&addr(k)).unwrap().key();
                c.node(1).store.local().latest_meta(&key).unwrap().is_none()
            })
    })
    .await;
    let p1: libp2p::PeerId = c.peer(1).parse().unwrap();
    assert!(!c.node(0).cluster.admits(&p1), "a drained node is out");
    // A member that sends a write under a layout older than the
    // replica's (it lags, or replays an old request) is refused, and
    // nothing is stored: it would miss the new replica sets.
    let stale = c.node(0).cluster.layout_version() - 1;
    // A version of context 1 no node holds: the next one after its head.
    let key = UcxlAddress::parse(&addr(1)).unwrap().key();
    let local = c.node(0).store.local();
    let (head, _) = local
        .latest_meta(&key)
        .unwrap()
        .expect("node 0 holds context 1");
    let record = local.get(&key, &head.version).unwrap().unwrap();
    let mut forged = record.meta.clone();
    forged.version.hlc.logical += 1;
    let req = slurp_protocol::messages::ReplicateRequest::PutVersions {
        versions: vec![slurp_protocol::messages::SealedVersion {
            meta: forged.clone(),
            envelope: record.envelope.clone().into(),
        }],
        layout_version: Some(stale),
        write_quorum_id: None,
        hint_for: None,
    };
    let to: libp2p::PeerId = c.peer(2).parse().unwrap();
    let r = c.node(0).cluster.replicate(&to, req).await;
    assert!(
        matches!(
            &r,
            Err(slurp_node::cluster::ClusterError::Remote(
                slurp_protocol::messages::ErrorCode::LayoutMismatch,
                _
            ))
        ),
        "{r:?}"
    );
    assert!(
        c.node(2)
            .store
            .local()
            .get(&forged.key, &forged.version)
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarting_mid_transition_resumes_and_a_capacity_change_moves_data() {
    // Pulls are slowed down so that the restart lands in the middle.
    let mut c = cluster(4, 3, |cfg| {
        cfg.replication.rebalance_bytes_per_sec = 20_000;
        cfg.replication.rebalance_partitions_in_flight = 1;
    })
    .await;
    let n0 = &c.node(0).cluster;
    n0.stage_join(Some(&c.peer(3)), None, None).unwrap();
    n0.apply().await.unwrap();
    wait_until("node 3 pulled some partitions", async || {
        !c.node(3).cluster.transitions().state().done.is_empty()
    })
    .await;
    let before = c.node(3).cluster.transitions().state();
    let total = c.node(3).cluster.transition_report().partitions_total;
    c.stop(3).await;
    let listen = c.configs[0].net.listen[0].clone();
    let boot = format!("{listen}/p2p/{}", c.peer(0)).parse().unwrap();
    c.restart_in_place(3, vec![boot]).await;
    let after = c.node(3).cluster.transitions().state();
    assert!(
        after.done.is_superset(&before.done) && after.target == before.target,
        "{before:?} then {after:?}"
    );
    c.converged(4).await;
    through_the_transition(&c, &[0, 1, 2, 3], "after a restart mid-transition").await;
    // The restarted node pulled only what was left: nothing done before
    // the stop was pulled again.
    let pulled_since = c
        .node(3)
        .metrics
        .rebalance
        .get_or_create(&slurp_node::metrics::CauseLabels {
            cause: "partitions_pulled",
        })
        .get();
    assert!(
        pulled_since <= u64::from(total) - before.done.len() as u64,
        "pulled {pulled_since} after the restart; {} of {total} were done before it",
        before.done.len()
    );
    // A capacity change is a transition like any other.
    let n0 = &c.node(0).cluster;
    n0.stage_join(Some(&c.peer(2)), None, Some(300)).unwrap();
    let l = n0.apply().await.unwrap();
    assert_eq!(
        l.members()
            .iter()
            .find(|m| m.id == c.peer(2))
            .unwrap()
            .capacity,
        300
    );
    through_the_transition(&c, &[0, 1, 2, 3], "after a capacity change").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_that_lies_about_having_pulled_still_gets_every_copy() {
    // Node 3's own pulls never finish (a throttle of one byte a second):
    // it says it pulled every partition it gained, and reads from the new
    // layout, without having stored anything. The old owners hand it what
    // it lacks before they drop anything, so no copy is lost.
    let c = cluster(4, 3, |cfg| {
        if cfg.node_name.as_deref() == Some("node3") {
            cfg.replication.rebalance_bytes_per_sec = 1;
        }
    })
    .await;
    let n0 = &c.node(0).cluster;
    n0.stage_join(Some(&c.peer(3)), None, None).unwrap();
    let target = n0.apply().await.unwrap().version();
    let liar = &c.node(3).cluster;
    wait_until("node 3 holds the new layout", async || {
        liar.layout_version() == target
    })
    .await;
    let active = liar.active_layouts();
    let t = liar.transitions();
    t.aim(target).unwrap();
    for p in slurp_node::cluster::transition::gained(&active, liar.me_id()) {
        t.pulled(target, p, 0, 0).unwrap();
    }
    t.synced(target).unwrap();
    t.read_from(target).unwrap();
    assert_eq!(t.state().versions, 0, "node 3 pulled nothing itself");
    // The others end the transition; node 3 holds every context it owns.
    wait_until("nodes 0 to 2 end the transition", async || {
        (0..3).all(|i| !c.node(i).cluster.in_transition())
    })
    .await;
    let layout = n0.layout().unwrap();
    let mi = layout.member_index(&c.peer(3)).unwrap();
    let mut owned = 0;
    for k in 0..CONTEXTS {
        let key = UcxlAddress::parse(&addr(k)).unwrap().key();
        if layout.replicas_for_key(&key).contains(&mi) {
            owned += 1;
            assert!(
                c.node(3).store.local().latest_meta(&key).unwrap().is_some(),
                "node 3 owns context {k} but was never handed it"
            );
        }
    }
    assert!(owned > 0);
    read_all(&c, 0, "after a lying new owner").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_down_drops_its_copies_when_it_returns() {
    let mut c = cluster(4, 4, |_| {}).await;
    // Node 1 is down when an admin removes it: the others move its
    // partitions without it and end the transition.
    c.stop(1).await;
    let n0 = &c.node(0).cluster;
    n0.stage_remove(&c.peer(1)).unwrap();
    n0.apply().await.unwrap();
    through_the_transition(&c, &[0, 2, 3], "after removing a member that is down").await;
    // Back, it finds the transition over: it ends its own at once and
    // drops every copy, and the others never answer it again.
    let listen = c.configs[0].net.listen[0].clone();
    let boot = format!("{listen}/p2p/{}", c.peer(0)).parse().unwrap();
    c.restart_in_place(1, vec![boot]).await;
    wait_until(
        "the returned node ended its transition and dropped its copies",
        async || {
            !c.node(1).cluster.in_transition()
                && (0..CONTEXTS).all(|k| {
                    let key = UcxlAddress::parse(&addr(k)).unwrap().key();
                    c.node(1).store.local().latest_meta(&key).unwrap().is_none()
                })
        },
    )
    .await;
    read_all(&c, 0, "after the removed node came back").await;
}
