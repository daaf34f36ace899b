//! The failure detector in a running cluster: a member that stops is
//! suspected by every other, one that returns is trusted again, each probe
//! round costs a bounded number of messages whatever the cluster's size,
//! and only members take part.
//!
//! `detector_scale` (ignored; run by hand) measures the figures in
//! `docs/cluster.md` for 3, 30 and 100 nodes:
//! `SLURP_DETECTOR_SIZES=3,30,100 cargo nextest run -p slurp-node --test detector --run-ignored only`.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Opts};
use common::wait_until;
use slurp_node::workers::WorkerStatus;

fn membership(n: &slurp_node::node::Node) -> WorkerStatus {
    n.workers
        .list()
        .into_iter()
        .find(|w| w.name == "membership")
        .expect("the membership worker")
}

fn probes(n: &slurp_node::node::Node) -> u64 {
    n.metrics.cluster_probes.get()
}

/// Every running node other than `i` sees node `i` as `up`.
fn all_see(c: &Cluster, i: usize, up: bool) -> bool {
    let p = c.peer_id(i);
    c.nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .filter_map(|(_, n)| n.as_ref())
        .all(|n| n.cluster.peers().is_up(&p) == up)
}

async fn start(n: usize, fanout: usize) -> Cluster {
    let c = Cluster::start_with(
        Opts {
            n,
            rf: 3.min(n as u8),
            auto_join: true,
        },
        |cfg| {
            cfg.cluster.probe_fanout = fanout;
            cfg.cluster.suspicion_pause = Duration::from_millis(500);
        },
    )
    .await;
    c.converged(n).await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_is_suspected_everywhere_and_trusted_again_when_back() {
    // Fanout 1 of 5: most nodes never probe node 4 in a given round, so
    // they learn of its silence, and of its return, from the others.
    let mut c = start(5, 1).await;
    c.stop(4).await;
    wait_until("every member sees node 4 down", async || {
        all_see(&c, 4, false)
    })
    .await;
    let p4 = c.peer_id(4);
    for n in c.nodes.iter().flatten() {
        let view = n.cluster.peers().view(&p4);
        assert!(!view.up, "{view:?}");
    }
    c.restart_in_place(4, Vec::new()).await;
    wait_until("every member sees node 4 up again", async || {
        all_see(&c, 4, true)
    })
    .await;
    wait_until("node 4 sees every member up", async || {
        (0..4).all(|i| c.node(4).cluster.peers().is_up(&c.peer_id(i)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_round_costs_a_bounded_number_of_messages() {
    let c = start(6, 1).await;
    // Once every member has met every other (hellos done), a round sends
    // at most the fanout plus members to re-check: with everyone up, the
    // fanout alone. Counted per round, not per second, so a slow machine
    // changes nothing.
    let n = c.node(0);
    wait_until("node 0 has met every member", async || {
        (1..6).all(|i| {
            n.cluster
                .peers()
                .get(&c.peer_id(i))
                .is_some_and(|s| s.info.is_some())
        })
    })
    .await;
    let (runs0, probes0) = (membership(n).runs, probes(n));
    wait_until("ten more rounds", async || membership(n).runs >= runs0 + 10).await;
    let (runs1, probes1) = (membership(n).runs, probes(n));
    let per_round = (probes1 - probes0) as f64 / (runs1 - runs0) as f64;
    assert!(
        per_round <= 2.0,
        "{per_round} probes a round with fanout 1 (5 others, all up)"
    );
}

/// Figures for `docs/cluster.md`: probes per node per second, and the time
/// until every other node marks a stopped node down, and a returned one
/// up. By hand only (a 100-node cluster in one process is heavy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn detector_scale() {
    let sizes: Vec<usize> = std::env::var("SLURP_DETECTOR_SIZES")
        .unwrap_or_else(|_| "3,30".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    for size in sizes {
        let started = Instant::now();
        let mut c = Cluster::start_with(
            Opts {
                n: size,
                rf: 3.min(size as u8),
                auto_join: false,
            },
            |cfg| {
                // The defaults, at production pace; the cluster key stays
                // whole so that forming the layout is one signature.
                cfg.cluster.probe_interval = Duration::from_secs(1);
                cfg.cluster.suspicion_pause =
                    slurp_node::cluster::ClusterConfig::default().suspicion_pause;
                cfg.cluster.key_shares = 0;
                cfg.index.commit_every_ops = 1000;
                // Lighter nodes, so that a hundred fit one process on two
                // cores: the smallest index writer, and the periodic jobs
                // that talk to every member (token lists, audit anchors)
                // or scan the store (rewrap, handoff) only once an hour.
                // The membership probe and the failure detector, which
                // are measured, run at production pace.
                cfg.index.writer_threads = 1;
                cfg.index.writer_heap_bytes = 15_000_000;
                cfg.cluster.token_sync_interval = Duration::from_secs(3600);
                cfg.cluster.handoff_interval = Duration::from_secs(3600);
                cfg.audit.anchor_interval = Duration::from_secs(3600);
                cfg.rotation.rewrap_interval = Duration::from_secs(3600);
                cfg.replication.rebalance_interval = Duration::from_secs(1);
            },
        )
        .await;
        // Every node redeemed its invite; one layout change adds them all.
        let n0 = &c.node(0).cluster;
        // A hundred nodes in one process take longer to start than the
        // suite's usual bound: wait up to ten minutes here.
        let deadline = Instant::now() + Duration::from_secs(600);
        while !(1..size).all(|i| n0.admits(&c.peer_id(i))) {
            assert!(Instant::now() < deadline, "not every node is certified");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        n0.stage_join(None, None, None).unwrap();
        for i in 1..size {
            n0.stage_join(Some(&c.peer(i)), None, None).unwrap();
        }
        let version = n0.apply().await.unwrap().version();
        // As above: up to ten minutes for a hundred nodes to take the
        // layout and end the transition from one member to all.
        while !c
            .nodes
            .iter()
            .flatten()
            .all(|n| n.cluster.layout_version() == version && !n.cluster.in_transition())
        {
            assert!(
                Instant::now() < deadline,
                "the layout did not reach every node"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        c.converged(size).await;
        let formed = started.elapsed();
        let window = Duration::from_secs(10);
        let before: Vec<u64> = c.nodes.iter().flatten().map(probes).collect();
        tokio::time::sleep(window).await;
        let after: Vec<u64> = c.nodes.iter().flatten().map(probes).collect();
        let per_node_per_s = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a - b) as f64 / window.as_secs_f64())
            .sum::<f64>()
            / before.len() as f64;
        let victim = size - 1;
        c.stop(victim).await;
        let t = Instant::now();
        wait_until("all see the stopped node down", async || {
            all_see(&c, victim, false)
        })
        .await;
        let down = t.elapsed();
        let t = Instant::now();
        c.restart_in_place(victim, Vec::new()).await;
        wait_until("all see the returned node up", async || {
            all_see(&c, victim, true)
        })
        .await;
        let up = t.elapsed();
        println!(
            "detector: {size} nodes (formed in {formed:.1?}): {per_node_per_s:.2} probes per node per second; \
             stopped node down everywhere after {down:.1?}, returned node up everywhere after {up:.1?}"
        );
    }
}
