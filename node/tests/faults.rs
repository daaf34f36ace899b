//! The fault-injection suite, in process: a 3-node cluster (RF 3, W 2,
//! R 2) on the in-memory transport runs seeded schedules that mix puts,
//! deletes and reads through every node with network faults (lost
//! requests and answers, delays that reorder, duplicates, partitions, an
//! isolated node, one-way partitions) and failed disk commits. Every
//! client operation is recorded; once the faults stop and the replicas
//! have converged, `slurp_node::history::check` verifies that no
//! acknowledged write was lost, no deleted context came back, the replicas
//! hold the same versions and digests, and quorum reads saw every write
//! acknowledged before they began (see `docs/reliability.md`).
//!
//! `SLURP_FAULT_SEEDS=n` runs n schedules (default 100), spread over the
//! test functions below so that a runner runs them in parallel;
//! `SLURP_FAULT_SEED=s` runs schedule s alone, which is how a failure
//! reproduces: the seed fixes the schedule (operations, nodes, quorums,
//! fault changes) and the odds of every fault, while the exact
//! interleaving of messages is the runtime's. `SLURP_FAULT_SEED_BASE`
//! moves the first seed and `SLURP_FAULT_SECS` stops starting schedules
//! that many seconds after the first test function started, however many
//! of them the runner runs at once (`testnet/faults.sh` runs thousands
//! that way). Each schedule prints one `fault-schedule` line (run with
//! `--nocapture` to see them).
//!
//! Schedules share one cluster per test function (starting a cluster
//! costs more than a schedule); each schedule writes addresses of its
//! own, so what one leaves behind never enters another's history. The
//! tombstone GC is held off (`gc_min_age` of a day) so every tombstone
//! is still there when the final state is gathered.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::LIVENESS;
use common::cluster::{Cluster, Opts, admin, ctx};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use slurp_node::error::StoreError;
use slurp_node::history::{self, FinalState, History, NodeState, Op, OpKind, Outcome};
use slurp_node::net::{FaultRules, Faults};
use slurp_node::store::{PutRequest, QuorumOpts};
use slurp_protocol::UcxlAddress;
use slurp_storage::CommitFailpoint;

const NODES: usize = 3;
const RF: u8 = 3;
/// The cluster's default quorums.
const W: u8 = 2;
const R: u8 = 2;
/// Test functions the seeds are spread over.
const PARTS: u64 = 4;
const DEFAULT_SEEDS: u64 = 100;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

/// The seeds test function `part` runs.
fn seeds_for(part: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SLURP_FAULT_SEED") {
        return if part == 0 { vec![seed] } else { vec![] };
    }
    let n = env_u64("SLURP_FAULT_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let base = env_u64("SLURP_FAULT_SEED_BASE").unwrap_or(0);
    (0..n)
        .filter(|i| i % PARTS == part)
        .map(|i| base + i)
        .collect()
}

/// One client operation of a schedule.
#[derive(Debug, Clone)]
struct ClientOp {
    kind: OpKind,
    /// Index into the schedule's addresses.
    addr: usize,
    node: usize,
    r: Option<u8>,
    w: Option<u8>,
}

/// A fault of the network or of one node's disk.
#[derive(Debug, Clone, PartialEq)]
enum Fault {
    Drop {
        requests: f64,
        responses: f64,
    },
    Delay {
        chance: f64,
        max_ms: u64,
    },
    Duplicate {
        chance: f64,
    },
    /// One node on one side, the other two on the other.
    Partition {
        alone: usize,
    },
    Isolate(usize),
    /// Requests from one node to another fail; the other way works.
    Block {
        from: usize,
        to: usize,
    },
    /// Every commit of this node's store fails.
    FailCommits(usize),
}

#[derive(Debug, Clone)]
enum Step {
    /// Operations run concurrently.
    Ops(Vec<ClientOp>),
    Start(Fault),
    End(Fault),
    /// A layout change, applied by node 0 (faults may make it fail).
    Change(Change),
}

/// A layout change of the layout bench, resolved against the layout
/// held when it runs (the cluster outlives schedules).
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// The first started node outside the layout joins.
    Join,
    /// A member other than node 0 leaves (the `n`th, modulo their count),
    /// unless only three are left.
    Remove(usize),
    /// A member's capacity changes.
    Capacity(usize, u32),
}

/// Nodes of the layout bench, and members at its start.
const LAYOUT_NODES: usize = 5;
const LAYOUT_MEMBERS: usize = 4;

/// Addresses per schedule.
const ADDRESSES: usize = 4;

/// The schedule of `seed`: 20 to 40 operations in groups of one to three
/// run at once; before about a third of the groups a fault starts, which
/// lasts one to four groups (so faults overlap), and every fault has
/// ended before the last group.
fn schedule(seed: u64) -> Vec<Step> {
    schedule_with(seed, false)
}

/// [`schedule`], with layout changes (joins, removals, capacity changes)
/// before about one group in six when `layout`.
fn schedule_with(seed: u64, layout: bool) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ops = rng.gen_range(20..=40);
    let mut steps = Vec::new();
    let mut active: Vec<(Fault, usize)> = Vec::new();
    let mut made = 0;
    while made < ops {
        active.retain_mut(|(f, left)| {
            *left -= 1;
            if *left == 0 {
                steps.push(Step::End(f.clone()));
            }
            *left > 0
        });
        if rng.gen_bool(0.35) {
            let f = fault(&mut rng);
            steps.push(Step::Start(f.clone()));
            active.push((f, rng.gen_range(1..=4)));
        }
        if layout && rng.gen_bool(0.18) {
            steps.push(Step::Change(match rng.gen_range(0..3) {
                0 => Change::Join,
                1 => Change::Remove(rng.gen_range(0..LAYOUT_NODES)),
                _ => Change::Capacity(rng.gen_range(0..LAYOUT_NODES), rng.gen_range(1..=4) * 100),
            }));
        }
        let group = rng.gen_range(1..=3usize).min(ops - made);
        let group: Vec<ClientOp> = (0..group).map(|_| client_op(&mut rng)).collect();
        made += group.len();
        steps.push(Step::Ops(group));
    }
    steps.extend(active.into_iter().map(|(f, _)| Step::End(f)));
    steps
}

fn quorum(rng: &mut StdRng) -> Option<u8> {
    match rng.gen_range(0..10) {
        0 => Some(1),
        1 => Some(3),
        _ => None,
    }
}

fn client_op(rng: &mut StdRng) -> ClientOp {
    let kind = match rng.gen_range(0..20) {
        0..=8 => OpKind::Put,
        9..=12 => OpKind::Delete,
        _ => OpKind::Read,
    };
    ClientOp {
        kind,
        addr: rng.gen_range(0..ADDRESSES),
        node: rng.gen_range(0..NODES),
        r: quorum(rng),
        w: quorum(rng),
    }
}

fn fault(rng: &mut StdRng) -> Fault {
    let node = rng.gen_range(0..NODES);
    match rng.gen_range(0..8) {
        0 => Fault::Drop {
            requests: rng.gen_range(0.05..0.3),
            responses: rng.gen_range(0.05..0.3),
        },
        1 => Fault::Delay {
            chance: rng.gen_range(0.2..0.8),
            max_ms: rng.gen_range(5..50),
        },
        2 => Fault::Duplicate {
            chance: rng.gen_range(0.1..0.5),
        },
        3 => Fault::Partition { alone: node },
        4 => Fault::Isolate(node),
        5 => Fault::Block {
            from: node,
            to: (node + rng.gen_range(1..NODES)) % NODES,
        },
        _ => Fault::FailCommits(node),
    }
}

/// One cluster with its faults, run through schedules.
struct Bench {
    c: Cluster,
    faults: Faults,
    disks: Vec<Arc<CommitFailpoint>>,
    /// Whether schedules change the layout (then not every node holds
    /// every partition).
    layout: bool,
    /// Layout changes applied.
    changes: std::sync::atomic::AtomicU64,
}

impl Bench {
    async fn start(layout: bool) -> Bench {
        let n = if layout { LAYOUT_NODES } else { NODES };
        let c = Cluster::start_with(
            Opts {
                n,
                rf: RF,
                auto_join: !layout,
            },
            |c| {
                c.cluster.partition_bits = 4;
                c.cluster.write_quorum = W;
                c.cluster.read_quorum = R;
                c.replication.anti_entropy_interval = Duration::from_millis(200);
                // Nothing is collected while a schedule runs: every
                // tombstone is still there for the checker.
                c.replication.gc_min_age = Duration::from_secs(86_400);
            },
        )
        .await;
        if layout {
            common::wait_until("peers known", async || {
                let s = c.node(0).cluster.status();
                s.others.iter().filter(|p| p.name.is_some()).count() == n - 1
            })
            .await;
            let n0 = &c.node(0).cluster;
            n0.stage_join(None, None, None).unwrap();
            for i in 1..LAYOUT_MEMBERS {
                n0.stage_join(Some(&c.peer(i)), None, None).unwrap();
            }
            n0.apply().await.unwrap();
            c.converged(LAYOUT_MEMBERS).await;
        } else {
            c.converged(NODES).await;
        }
        let faults = Faults::new(0);
        let mut disks = Vec::new();
        for i in 0..n {
            assert!(c.node(i).net.install_faults(faults.clone()));
            let disk = Arc::new(CommitFailpoint::default());
            c.node(i)
                .store
                .local()
                .set_commit_faults(Some(disk.clone()));
            disks.push(disk);
        }
        Bench {
            c,
            faults,
            disks,
            layout,
            changes: Default::default(),
        }
    }

    /// Applies a layout change on node 0; one that faults make fail
    /// changes nothing (it is staged again by a later change or not).
    async fn change(&self, change: &Change) {
        let n0 = &self.c.node(0).cluster;
        let Some(layout) = n0.layout() else { return };
        let n = self.c.nodes.len();
        let members: Vec<usize> = (0..n)
            .filter(|&i| layout.member_index(&self.c.peer(i)).is_some())
            .collect();
        let staged = match *change {
            Change::Join => (0..n)
                .find(|i| !members.contains(i))
                .map(|i| n0.stage_join(Some(&self.c.peer(i)), None, None).map(|_| ())),
            Change::Remove(k) if members.len() > 3 => {
                let others: Vec<usize> = members.iter().copied().filter(|&i| i != 0).collect();
                Some(n0.stage_remove(&self.c.peer(others[k % others.len()])))
            }
            Change::Remove(_) => None,
            Change::Capacity(k, cap) => {
                let i = members[k % members.len()];
                Some(
                    n0.stage_join(Some(&self.c.peer(i)), None, Some(cap))
                        .map(|_| ()),
                )
            }
        };
        if matches!(staged, Some(Ok(()))) && n0.apply().await.is_ok() {
            self.changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn peer(&self, i: usize) -> libp2p::PeerId {
        self.c.node(i).net.peer_id()
    }

    /// Starts (`on`) or ends a fault. Faults of one kind do not nest:
    /// ending one ends every fault of its kind (the partition, the drop
    /// odds), except isolations, blocks and disks, which are per node.
    fn apply(&self, fault: &Fault, on: bool) {
        match *fault {
            Fault::Drop {
                requests,
                responses,
            } => self.faults.update(|r| {
                (r.drop_requests, r.drop_responses) = if on {
                    (requests, responses)
                } else {
                    (0.0, 0.0)
                };
            }),
            Fault::Delay { chance, max_ms } => self.faults.update(|r| {
                r.delay = if on { chance } else { 0.0 };
                r.delay_range = (Duration::from_millis(1), Duration::from_millis(max_ms));
            }),
            Fault::Duplicate { chance } => self.faults.update(|r| {
                r.duplicate = if on { chance } else { 0.0 };
                if r.delay_range.1.is_zero() {
                    r.delay_range = (Duration::from_millis(1), Duration::from_millis(20));
                }
            }),
            Fault::Partition { alone } => {
                let rest = (0..NODES).filter(|&i| i != alone).map(|i| self.peer(i));
                let groups = if on {
                    vec![[self.peer(alone)].into(), rest.collect()]
                } else {
                    vec![]
                };
                self.faults.update(|r| r.partition = groups);
            }
            Fault::Isolate(i) => {
                let p = self.peer(i);
                self.faults.update(|r| {
                    if on {
                        r.isolated.insert(p);
                    } else {
                        r.isolated.remove(&p);
                    }
                });
            }
            Fault::Block { from, to } => {
                let pair = (self.peer(from), self.peer(to));
                self.faults.update(|r| {
                    if on {
                        r.blocked.insert(pair);
                    } else {
                        r.blocked.remove(&pair);
                    }
                });
            }
            Fault::FailCommits(i) if on => self.disks[i].fail_until_disarmed(),
            Fault::FailCommits(i) => self.disks[i].disarm(),
        }
    }

    fn heal(&self) {
        self.faults.set(FaultRules::default());
        self.disks.iter().for_each(|d| d.disarm());
    }

    async fn run_op(&self, addresses: &[String], op: &ClientOp, n: usize, start: Instant) -> Op {
        let address = UcxlAddress::parse(&addresses[op.addr]).unwrap();
        let store = &self.c.node(op.node).store;
        let opts = QuorumOpts {
            r: op.r.map(usize::from),
            w: op.w.map(usize::from),
        };
        let invoked = start.elapsed().as_micros() as u64;
        let outcome = match op.kind {
            OpKind::Put => {
                let req = PutRequest::new(ctx(&addresses[op.addr], &format!("write {n}")));
                match store.put_opts(&admin(), req, opts).await {
                    Ok(w) => Outcome::Written {
                        version: w.version.parse().unwrap(),
                    },
                    Err(e) => failed(e),
                }
            }
            OpKind::Delete => match store.delete_opts(&admin(), &address, opts).await {
                Ok(w) => Outcome::Written {
                    version: w.version.parse().unwrap(),
                },
                Err(e) => seen(e),
            },
            OpKind::Read => match store.get_opts(&admin(), &address, opts).await {
                Ok(r) => Outcome::Found {
                    version: r.version.parse().unwrap(),
                },
                Err(e) => seen(e),
            },
        };
        Op {
            kind: op.kind,
            address: address.key(),
            node: format!("node{}", op.node),
            r: op.r.unwrap_or(R),
            w: match op.kind {
                OpKind::Read => 0,
                _ => op.w.unwrap_or(W),
            },
            invoked,
            completed: start.elapsed().as_micros() as u64,
            outcome,
        }
    }

    /// What every node holds of `keys`, and its digest.
    fn final_state(&self, keys: &[String]) -> FinalState {
        let layout = self.c.node(0).cluster.layout().expect("a layout");
        let nodes = (0..self.c.nodes.len())
            .map(|i| {
                let me = self.c.peer(i);
                let local = self.c.node(i).store.local();
                let d = local.digest(0..=u16::MAX);
                let holdings = keys
                    .iter()
                    .filter(|k| {
                        layout
                            .replicas_for_key(k)
                            .iter()
                            .any(|&m| layout.member(m).id == me)
                    })
                    .map(|k| {
                        let versions = local
                            .history(k)
                            .unwrap()
                            .into_iter()
                            .map(|m| (m.version.to_string(), m.tombstone))
                            .collect();
                        (k.clone(), versions)
                    })
                    .collect();
                NodeState {
                    node: format!("node{i}"),
                    // Under layout changes nodes hold different partitions:
                    // their whole-store digests do not compare.
                    digest: (!self.layout).then(|| format!("{}:{}", d.versions, hex(&d.digest))),
                    holdings,
                }
            })
            .collect();
        FinalState { nodes }
    }

    /// Runs schedule `seed`; returns its line for the figures, or panics
    /// naming the seed.
    async fn run(&self, seed: u64) -> Figures {
        let steps = schedule_with(seed, self.layout);
        let addresses: Vec<String> = (0..ADDRESSES)
            .map(|a| format!("ucxl://claude:developer@faults:s{seed}/*^/src/f{a}.rs"))
            .collect();
        let keys: Vec<String> = addresses
            .iter()
            .map(|a| UcxlAddress::parse(a).unwrap().key())
            .collect();
        self.faults.reseed(seed ^ 0x5eed_f417);
        let disk_failures_before: u64 = self.disks.iter().map(|d| d.failed()).sum();
        let changes_before = self.changes.load(std::sync::atomic::Ordering::Relaxed);
        let start = Instant::now();
        let mut ops = Vec::new();
        for step in &steps {
            match step {
                Step::Start(f) => self.apply(f, true),
                Step::End(f) => self.apply(f, false),
                Step::Change(ch) => self.change(ch).await,
                Step::Ops(group) => {
                    let n = ops.len();
                    let done = futures::future::join_all(
                        group
                            .iter()
                            .enumerate()
                            .map(|(k, op)| self.run_op(&addresses, op, n + k, start)),
                    )
                    .await;
                    ops.extend(done);
                }
            }
        }
        let injected = self.faults.counts();
        let disk_failures =
            self.disks.iter().map(|d| d.failed()).sum::<u64>() - disk_failures_before;
        self.heal();
        let healed = Instant::now();
        let history = History {
            replication_factor: RF,
            ops,
        };
        // Converged: every node's whole-store digest and every replica's
        // versions of this schedule's addresses agree.
        let state = loop {
            // After every layout transition has ended (then every node
            // agrees on where each address lives).
            let settled = !self.layout
                || self
                    .c
                    .nodes
                    .iter()
                    .flatten()
                    .all(|n| !n.cluster.in_transition());
            let s = self.final_state(&keys);
            let agree = |n: &NodeState| {
                if self.layout {
                    // Each replica of an address holds what every other
                    // replica of it holds.
                    return n.holdings.iter().all(|(k, h)| {
                        s.nodes
                            .iter()
                            .filter_map(|o| o.holdings.get(k))
                            .all(|o| o == h)
                    });
                }
                n.digest == s.nodes[0].digest
                    && n.holdings.values().eq(s.nodes[0].holdings.values())
            };
            if settled && s.nodes.iter().all(agree) {
                break s;
            }
            if healed.elapsed() > LIVENESS {
                let report = history::check(&history, &s);
                panic!(
                    "seed {seed}: the replicas did not converge within {LIVENESS:?} after the \
                     faults stopped\n{report}\nrerun: {}\nschedule: {steps:#?}",
                    rerun(seed)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let converge = healed.elapsed();
        let report = history::check(&history, &state);
        assert!(
            report.is_clean(),
            "seed {seed} failed the checker\n{report}\nrerun: {}\nschedule: {steps:#?}\nhistory: {:#?}\nfinal state: {:#?}",
            rerun(seed),
            history.ops,
            state.nodes,
        );
        let figures = Figures {
            seed,
            operations: report.operations,
            acknowledged: report.acknowledged_writes,
            failed: report.failed,
            lost: report.lost_writes(),
            resurrected: report.resurrected_deletes(),
            converge,
        };
        eprintln!(
            "fault-schedule seed={seed} ops={} acked={} failed={} lost={} resurrected={} \
             converge_ms={} cut={} dropped={} delayed={} duplicated={} disk_failures={disk_failures} \
             layout_changes={}",
            figures.operations,
            figures.acknowledged,
            figures.failed,
            figures.lost,
            figures.resurrected,
            converge.as_millis(),
            injected.cut,
            injected.dropped_requests + injected.dropped_responses,
            injected.delayed,
            injected.duplicated,
            self.changes.load(std::sync::atomic::Ordering::Relaxed) - changes_before,
        );
        figures
    }
}

fn rerun(seed: u64) -> String {
    format!("SLURP_FAULT_SEED={seed} cargo test -p slurp-node --test faults")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A failed write (its effect unknown).
fn failed(e: StoreError) -> Outcome {
    Outcome::Failed {
        error: e.to_string(),
    }
}

/// What a read (or a refused delete) saw.
fn seen(e: StoreError) -> Outcome {
    match e {
        StoreError::NotFound(_) => Outcome::NotFound,
        StoreError::Deleted { version, .. } => Outcome::Deleted { version },
        e => failed(e),
    }
}

struct Figures {
    seed: u64,
    operations: usize,
    acknowledged: usize,
    failed: usize,
    lost: usize,
    resurrected: usize,
    converge: Duration,
}

async fn run_part(part: u64) {
    run_bench(part, seeds_for(part), false).await
}

/// The seeds layout-bench function `part` runs: `SLURP_LAYOUT_SEEDS`
/// (default 24) over [`LAYOUT_PARTS`] functions, from
/// `SLURP_FAULT_SEED_BASE`; `SLURP_FAULT_SEED` runs one here too.
fn layout_seeds_for(part: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SLURP_FAULT_SEED") {
        return if part == 0 { vec![seed] } else { vec![] };
    }
    let n = env_u64("SLURP_LAYOUT_SEEDS").unwrap_or(DEFAULT_LAYOUT_SEEDS);
    let base = env_u64("SLURP_FAULT_SEED_BASE").unwrap_or(0);
    (0..n)
        .filter(|i| i % LAYOUT_PARTS == part)
        .map(|i| base + i)
        .collect()
}

const LAYOUT_PARTS: u64 = 2;
const DEFAULT_LAYOUT_SEEDS: u64 = 24;

async fn run_bench(part: u64, seeds: Vec<u64>, layout: bool) {
    if seeds.is_empty() {
        return;
    }
    let budget = env_u64("SLURP_FAULT_SECS").map(Duration::from_secs);
    // The budget counts from the first part to start: a runner may run
    // the parts one or two at a time.
    static FIRST: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let first = *FIRST.get_or_init(Instant::now);
    let started = Instant::now();
    if budget.is_some_and(|b| first.elapsed() > b) {
        return;
    }
    let bench = Bench::start(layout).await;
    let mut all = Vec::new();
    for seed in seeds {
        if budget.is_some_and(|b| first.elapsed() > b) {
            break;
        }
        all.push(bench.run(seed).await);
    }
    let mut ms: Vec<u128> = all.iter().map(|f| f.converge.as_millis()).collect();
    ms.sort_unstable();
    let slowest = all.iter().max_by_key(|f| f.converge).map_or(0, |f| f.seed);
    eprintln!(
        "fault-part part={part} layout={layout} schedules={} ops={} acked={} failed={} lost={} resurrected={} \
         converge_p50_ms={} converge_max_ms={} slowest_seed={slowest} secs={}",
        all.len(),
        all.iter().map(|f| f.operations).sum::<usize>(),
        all.iter().map(|f| f.acknowledged).sum::<usize>(),
        all.iter().map(|f| f.failed).sum::<usize>(),
        all.iter().map(|f| f.lost).sum::<usize>(),
        all.iter().map(|f| f.resurrected).sum::<usize>(),
        ms.get(ms.len() / 2).copied().unwrap_or(0),
        ms.last().copied().unwrap_or(0),
        started.elapsed().as_secs(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_part_0() {
    run_part(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_part_1() {
    run_part(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_part_2() {
    run_part(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_part_3() {
    run_part(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_schedules_with_layout_changes_part_0() {
    run_bench(0, layout_seeds_for(0), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_schedules_with_layout_changes_part_1() {
    run_bench(1, layout_seeds_for(1), true).await;
}

#[test]
fn a_seed_fixes_its_schedule() {
    let show = |s: u64| format!("{:?}", schedule(s));
    assert_eq!(show(7), show(7));
    assert_ne!(show(7), show(8));
    // Every kind of fault and operation appears within a few seeds.
    let all: String = (0..20).map(show).collect();
    for what in [
        "Drop",
        "Delay",
        "Duplicate",
        "Partition",
        "Isolate",
        "Block",
        "FailCommits",
        "Put",
        "Delete",
        "Read",
    ] {
        assert!(all.contains(what), "{what}");
    }
    let ops: BTreeMap<u64, usize> = (0..20)
        .map(|s| {
            let n = schedule(s)
                .iter()
                .map(|st| match st {
                    Step::Ops(g) => g.len(),
                    Step::Start(_) | Step::End(_) | Step::Change(_) => 0,
                })
                .sum();
            (s, n)
        })
        .collect();
    assert!(ops.values().all(|n| (20..=40).contains(n)), "{ops:?}");
    // Every fault that starts ends, after it started.
    for s in 0..50 {
        let mut open: Vec<Fault> = Vec::new();
        for step in schedule(s) {
            match step {
                Step::Start(f) => open.push(f),
                Step::End(f) => {
                    let i = open
                        .iter()
                        .position(|o| *o == f)
                        .expect("ends after it starts");
                    open.remove(i);
                }
                Step::Ops(_) | Step::Change(_) => {}
            }
        }
        assert!(open.is_empty(), "seed {s} leaves {open:?} on");
    }
    // Layout schedules add joins, removals and capacity changes; plain
    // ones have none.
    let changes: String = (0..20)
        .map(|s| format!("{:?}", schedule_with(s, true)))
        .collect();
    for what in ["Join", "Remove", "Capacity"] {
        assert!(changes.contains(what), "{what}");
    }
    assert!(!all.contains("Change"));
}
