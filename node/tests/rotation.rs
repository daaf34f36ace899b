//! Key rotation without downtime: a role's key is rotated while writes
//! and reads run through every node, none of them fails, new records are
//! sealed to the new epoch, and the key-rewrap workers leave no stored
//! copy on the old one. Three in-process nodes on the in-memory transport.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::wait_until;
use slurp_crypto::{EnvelopeConfig, peek_header};
use slurp_node::config::NodeConfig;
use slurp_node::node::Node;
use slurp_node::store::PutRequest;
use slurp_node::tokens::Principal;
use slurp_node::workers::WorkerState;
use slurp_protocol::{ContextNode, RoleName, UcxlAddress};
use slurp_storage::SlotScan;

static PORTS: AtomicU64 = AtomicU64::new(0);

fn memory_addr() -> libp2p::Multiaddr {
    let n = 9_000_000 + std::process::id() as u64 * 1000 + PORTS.fetch_add(1, Ordering::SeqCst);
    format!("/memory/{n}").parse().unwrap()
}

fn config(dir: &Path, i: usize) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: dir.join(format!("node{i}")),
        node_name: Some(format!("node{i}")),
        ..NodeConfig::default()
    };
    c.net.listen = vec![memory_addr()];
    c.cluster.probe_interval = Duration::from_millis(100);
    c.cluster.probe_timeout = Duration::from_secs(10);
    c.cluster.replica_timeout = Duration::from_secs(10);
    c.cluster.partition_bits = 4;
    // Passes run when the test triggers them.
    c.rotation.rewrap_interval = Duration::from_secs(3600);
    c.rotation.rewrap_pause = Duration::ZERO;
    c.rotation.rewrap_batch = 7;
    c
}

fn who(role: &str) -> Principal {
    Principal {
        token_id: "t".into(),
        role: RoleName::new(role).unwrap(),
    }
}

fn addr(i: usize) -> UcxlAddress {
    UcxlAddress::parse(&format!("ucxl://a:developer@shop:checkout/*^/src/f{i}.rs")).unwrap()
}

fn put(i: usize, text: &str) -> PutRequest {
    PutRequest::new(ContextNode::new(
        addr(i),
        text,
        vec![RoleName::new("developer").unwrap()],
    ))
}

/// The developer epochs every stored version on `node` is sealed to.
fn developer_epochs(node: &Node) -> Vec<u32> {
    let page = node
        .store
        .local()
        .scan_slots(&SlotScan {
            limit: 100_000,
            envelopes: true,
            ..SlotScan::metas(0..=u16::MAX)
        })
        .unwrap();
    let config = EnvelopeConfig::default();
    page.versions
        .iter()
        .filter_map(|v| v.envelope.as_deref())
        .filter(|e| !e.is_empty())
        .flat_map(|e| {
            peek_header(e, &config)
                .unwrap()
                .sealed_to()
                .iter()
                .filter(|s| s.role.as_str() == "developer")
                .map(|s| s.epoch)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_key_rotates_under_load_with_no_failed_request_and_every_copy_moves() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = config(dir.path(), 0);
    let n0 = Node::open(c0.clone()).await.unwrap();
    n0.cluster.init().await.unwrap();
    let boot = c0.net.listen[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(n0.net.peer_id()));
    let mut nodes = vec![n0];
    for i in 1..3 {
        let mut c = config(dir.path(), i);
        c.net.bootstrap = vec![boot.clone()];
        c.cluster.auto_join = true;
        let (_, token) = nodes[0].cluster.invite(None, None).unwrap();
        c.cluster.join_token = Some(token.to_string());
        nodes.push(Node::open(c).await.unwrap());
    }
    let nodes = Arc::new(nodes);
    wait_until("three members holding their keys", async || {
        nodes.iter().all(|n| {
            n.cluster.layout().is_some_and(|l| l.members().len() == 3)
                && n.cluster.granted_roles_held()
        })
    })
    .await;
    // Records written before the rotation.
    for i in 0..20 {
        nodes[i % 3]
            .store
            .put(&who("developer"), put(i, &format!("before {i}")))
            .await
            .unwrap();
    }

    // Writes and reads through every node, while the key rotates.
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for w in 0..3 {
        let (nodes, failures, done) = (nodes.clone(), failures.clone(), done.clone());
        load.push(tokio::spawn(async move {
            for round in 0..30 {
                let i = 20 + w * 100 + round;
                let node = &nodes[(w + round) % 3];
                let wrote = node
                    .store
                    .put(&who("developer"), put(i, &format!("during {i}")))
                    .await;
                let read = node.store.get(&who("developer"), &addr(round % 20)).await;
                if let Err(e) = &wrote {
                    eprintln!("write failed: {e}");
                }
                if let Err(e) = &read {
                    eprintln!("read failed: {e}");
                }
                if wrote.is_err() || read.is_err() {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    wait_until("the load is under way", async || {
        done.load(Ordering::SeqCst) >= 10
    })
    .await;
    let dev = RoleName::new("developer").unwrap();
    let (epoch, _) = nodes[0].cluster.rotate(&dev).await.unwrap();
    assert_eq!(epoch, 2);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during the rotation"
    );
    assert_eq!(done.load(Ordering::SeqCst), 90);

    // Every node learns the new directory and holds the new key.
    wait_until("every node holds developer epoch 2", async || {
        nodes.iter().all(|n| {
            n.cluster.granted_roles_held()
                && n.custody.keyring().current(&dev).map(|k| k.epoch()) == Some(2)
        })
    })
    .await;
    // A record written now is sealed to epoch 2 only.
    nodes[1]
        .store
        .put(&who("developer"), put(999, "after"))
        .await
        .unwrap();
    // The rewrap workers move every stored copy. Until the last member
    // has reported a clean pass, epoch 1 stays.
    let lists_epoch_1 = |n: &Node| {
        n.cluster
            .membership()
            .directory()
            .is_some_and(|(d, _)| d.keys.iter().any(|k| k.role == dev && k.epoch == 1))
    };
    for (i, n) in nodes.iter().enumerate() {
        let before = n.workers.get("key-rewrap").unwrap().runs;
        n.workers.trigger("key-rewrap").unwrap();
        wait_until("a rewrap pass", async || {
            n.workers
                .get("key-rewrap")
                .is_some_and(|w| w.runs > before && w.state == WorkerState::Idle)
        })
        .await;
        if i < 2 {
            assert!(
                nodes.iter().all(lists_epoch_1),
                "epoch 1 was retired before node 2 had rewrapped"
            );
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let epochs = developer_epochs(n);
        assert!(!epochs.is_empty());
        assert!(
            epochs.iter().all(|e| *e == 2),
            "node {i} still holds copies sealed to epoch 1: {epochs:?}"
        );
        let w = n.workers.get("key-rewrap").unwrap();
        assert_eq!(w.errors, 0, "{w:?}");
        assert!(w.last_note.contains("0 left on old epochs"), "{w:?}");
    }
    // Every member reported a clean pass: epoch 1 is retired, its public
    // key leaves the directory and every node deletes its private key.
    let gone = |n: &Node| {
        !lists_epoch_1(n)
            && n.custody
                .keystore()
                .list()
                .unwrap()
                .iter()
                .all(|k| !(k.role == dev && k.epoch == 1))
            && n.custody
                .keyring()
                .keys()
                .all(|k| !(k.role() == &dev && k.epoch() == 1))
    };
    wait_until("developer epoch 1 retired on every node", async || {
        for n in nodes.iter() {
            let _ = n.workers.trigger("key-rewrap");
        }
        nodes.iter().all(gone)
    })
    .await;
    for n in nodes.iter() {
        assert_eq!(
            n.custody.keyring().current(&dev).map(|k| k.epoch()),
            Some(2)
        );
    }
    // Everything still reads, through every node.
    for (i, n) in nodes.iter().enumerate() {
        for k in [0, 7, 19] {
            let got = n.store.get(&who("developer"), &addr(k)).await.unwrap();
            assert_eq!(got.context.summary, format!("before {k}"), "node {i}");
        }
    }
    let nodes = Arc::into_inner(nodes).unwrap();
    for n in nodes {
        n.close().await;
    }
}
