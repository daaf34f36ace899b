//! Several nodes in one process on the in-memory libp2p transport, through
//! the real store, swarm and cluster code (no sockets, no mocks): the
//! harness of `cluster.rs` and `faults.rs`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slurp_node::config::NodeConfig;
use slurp_node::node::Node;
use slurp_node::tokens::Principal;
use slurp_protocol::{ContextNode, RoleName, UcxlAddress};

use super::{LIVENESS, wait_until};

static PORTS: AtomicU64 = AtomicU64::new(0);

pub fn memory_addr() -> libp2p::Multiaddr {
    // Unique within this process (tests run in parallel threads).
    let n = 1_000_000 + std::process::id() as u64 * 1000 + PORTS.fetch_add(1, Ordering::SeqCst);
    format!("/memory/{n}").parse().unwrap()
}

pub fn admin() -> Principal {
    Principal {
        token_id: "test-admin".into(),
        role: RoleName::new("admin").unwrap(),
    }
}

pub fn ctx(addr: &str, summary: &str) -> ContextNode {
    ContextNode::new(
        UcxlAddress::parse(addr).unwrap(),
        summary,
        vec![RoleName::new("developer").unwrap()],
    )
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Option<Node>>,
    pub configs: Vec<NodeConfig>,
    pub peers: Vec<String>,
}

pub struct Opts {
    pub n: usize,
    pub rf: u8,
    pub auto_join: bool,
}

pub fn config(dir: &Path, i: usize, listen: libp2p::Multiaddr, o: &Opts) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: dir.join(format!("node{i}")),
        node_name: Some(format!("node{i}")),
        ..NodeConfig::default()
    };
    c.index.commit_every_ops = 1;
    c.net.listen = vec![listen];
    c.cluster.auto_join = o.auto_join;
    c.cluster.probe_interval = Duration::from_millis(100);
    // Generous: a loaded machine (CI, a parallel build) must not turn slow
    // answers into failed quorums. Stopped nodes fail at once anyway (the
    // memory transport refuses the dial).
    c.cluster.replica_timeout = Duration::from_secs(10);
    c.cluster.probe_timeout = Duration::from_secs(10);
    // Likewise a starved process must not look dead: suspicion from
    // silence starts late here (the failure-detector tests set their own).
    c.cluster.suspicion_pause = Duration::from_secs(30);
    c.cluster.handoff_interval = Duration::from_millis(200);
    c.cluster.replication_factor = o.rf;
    c.cluster.write_quorum = 2.min(o.rf);
    c.cluster.read_quorum = 2.min(o.rf);
    c.cluster.partition_bits = 6;
    // Healing runs only in the tests about it: the others watch what a
    // write or a read does on its own.
    c.replication.anti_entropy_interval = Duration::from_secs(3600);
    c.replication.gc_interval = Duration::from_secs(3600);
    c.replication.rebalance_grace = Duration::from_millis(200);
    c.replication.rebalance_interval = Duration::from_millis(100);
    c
}

impl Cluster {
    pub async fn start(o: Opts) -> Cluster {
        Cluster::start_with(o, |_| {}).await
    }

    /// Starts a cluster whose node configs `tweak` adjusts.
    pub async fn start_with(o: Opts, tweak: impl Fn(&mut NodeConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut configs = Vec::new();
        let mut nodes = Vec::new();
        let first_addr = memory_addr();
        let mut c0 = config(dir.path(), 0, first_addr.clone(), &o);
        tweak(&mut c0);
        c0.cluster.auto_join = false;
        let n0 = Node::open(c0.clone()).await.unwrap();
        // Node 0 creates the cluster; every other node joins with an invite
        // (and, with `auto_join`, asks to be added to the layout at once).
        n0.cluster.init().await.unwrap();
        let boot: libp2p::Multiaddr = format!("{first_addr}/p2p/{}", n0.net.peer_id())
            .parse()
            .unwrap();
        configs.push(c0);
        nodes.push(Some(n0));
        for i in 1..o.n {
            let mut c = config(dir.path(), i, memory_addr(), &o);
            tweak(&mut c);
            c.net.bootstrap = vec![boot.clone()];
            let (_, token) = nodes[0]
                .as_ref()
                .unwrap()
                .cluster
                .invite(None, None)
                .unwrap();
            c.cluster.join_token = Some(token.to_string());
            nodes.push(Some(Node::open(c.clone()).await.unwrap()));
            configs.push(c);
        }
        let peers = nodes
            .iter()
            .flatten()
            .map(|n| n.net.peer_id().to_base58())
            .collect();
        Cluster {
            dir,
            nodes,
            configs,
            peers,
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn peer(&self, i: usize) -> String {
        self.peers[i].clone()
    }

    /// Node `i`'s peer id.
    pub fn peer_id(&self, i: usize) -> libp2p::PeerId {
        self.peers[i].parse().expect("a peer id")
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.close().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Restarts node `i` on the address it had (the layout lists it),
    /// waiting for the stopped swarm to release it.
    pub async fn restart_in_place(&mut self, i: usize, bootstrap: Vec<libp2p::Multiaddr>) {
        let mut c = self.configs[i].clone();
        c.net.bootstrap = bootstrap;
        let start = Instant::now();
        while start.elapsed() < LIVENESS {
            match Node::open(c.clone()).await {
                Ok(n) => {
                    self.nodes[i] = Some(n);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!("node {i} did not restart on its address");
    }

    pub async fn restart(&mut self, i: usize) {
        // A new address: the stopped swarm's may not be released yet.
        self.configs[i].net.listen = vec![memory_addr()];
        let mut c = self.configs[i].clone();
        if i > 0
            && let Some(n0) = &self.nodes[0]
        {
            let listen = self.configs[0].net.listen[0].clone();
            c.net.bootstrap = vec![
                format!("{listen}/p2p/{}", n0.net.peer_id())
                    .parse()
                    .unwrap(),
            ];
        }
        self.nodes[i] = Some(Node::open(c).await.unwrap());
    }

    /// Waits until every running node holds a layout of `members` members,
    /// all with the same version.
    pub async fn converged(&self, members: usize) {
        wait_until("every node holds its granted keys", async || {
            self.nodes
                .iter()
                .flatten()
                .all(|n| n.cluster.granted_roles_held())
        })
        .await;
        wait_until("layout convergence", async || {
            let layouts: Vec<_> = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.cluster.layout())
                .collect();
            layouts.iter().all(|l| {
                l.as_ref().is_some_and(|l| {
                    l.members().len() == members
                        && Some(l.version()) == layouts[0].as_ref().map(|f| f.version())
                })
            })
        })
        .await;
        // A layout change moves data before the old owners let go.
        wait_until("no layout transition under way", async || {
            self.nodes
                .iter()
                .flatten()
                .all(|n| !n.cluster.in_transition())
        })
        .await;
        // Peers learn each other's health from probes: wait until every
        // running member sees every other running member up, rather than
        // for a time that a busy machine may not honour. (A removed node
        // is refused by the members, so it sees them failing.)
        let layout = self
            .nodes
            .iter()
            .flatten()
            .next()
            .and_then(|n| n.cluster.layout());
        let is_member = |p: &str| layout.as_ref().is_some_and(|l| l.member_index(p).is_some());
        let running: Vec<String> = self
            .nodes
            .iter()
            .flatten()
            .map(|n| n.net.peer_id().to_base58())
            .filter(|p| is_member(p))
            .collect();
        wait_until("members see each other up", async || {
            self.nodes.iter().flatten().all(|n| {
                let me = n.net.peer_id().to_base58();
                if !is_member(&me) {
                    return true;
                }
                running.iter().filter(|p| **p != me).all(|p| {
                    // Heard from: directly, or through the heartbeats the
                    // failure detector gossips (a node probes only a few
                    // members a round).
                    let p = p.parse().expect("a peer id");
                    let peers = n.cluster.peers();
                    peers.is_up(&p)
                        && (peers.detector().knows(&p)
                            || peers.get(&p).is_some_and(|s| s.last_ok.is_some()))
                })
            })
        })
        .await;
    }
}

/// Node `i`'s digest of everything it stores.
pub fn digest(c: &Cluster, i: usize) -> slurp_storage::RangeDigest {
    c.node(i).store.local().digest(0..=u16::MAX)
}

/// Runs one pass of worker `name` on each of `nodes` and waits for it.
pub async fn run_worker(c: &Cluster, nodes: &[usize], name: &str) {
    let runs = |i: usize| c.node(i).workers.get(name).expect("worker").runs;
    let before: Vec<u64> = nodes.iter().map(|&i| runs(i)).collect();
    for &i in nodes {
        c.node(i).workers.trigger(name).unwrap();
    }
    wait_until(name, async || {
        nodes.iter().zip(&before).all(|(&i, &b)| runs(i) > b)
    })
    .await;
}
