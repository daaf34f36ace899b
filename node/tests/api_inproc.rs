//! The HTTP API of in-process nodes (a lone node, and a cluster on the
//! in-memory libp2p transport), served on 127.0.0.1 and driven with an HTTP
//! client: what a user of `slurp get`, `slurp search` and `slurp cluster
//! status` sees in the answers and the errors.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::wait_until;
use serde_json::{Value, json};
use slurp_node::config::NodeConfig;
use slurp_node::error::StoreError;
use slurp_node::node::Node;
use slurp_node::store::{PutRequest, QuorumOpts};
use slurp_node::tokens::Principal;
use slurp_protocol::{ContextNode, RoleName, UcxlAddress};

static PORTS: AtomicU64 = AtomicU64::new(0);

fn memory_addr() -> libp2p::Multiaddr {
    // Unique within this process, and apart from tests/cluster.rs's.
    let n = 5_000_000 + std::process::id() as u64 * 1000 + PORTS.fetch_add(1, Ordering::SeqCst);
    format!("/memory/{n}").parse().unwrap()
}

fn config(dir: &Path, i: usize, cluster: bool) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: dir.join(format!("node{i}")),
        node_name: Some(format!("node{i}")),
        ..NodeConfig::default()
    };
    c.index.commit_every_ops = 1;
    c.net.listen = vec![memory_addr()];
    // Nodes after the first join with an invite and ask to be added.
    c.cluster.auto_join = cluster && i > 0;
    c.cluster.probe_interval = Duration::from_millis(100);
    // Generous: on a loaded machine a slow answer must not count as a
    // down peer; stopped nodes fail at once (the dial is refused).
    c.cluster.probe_timeout = Duration::from_secs(10);
    c.cluster.replica_timeout = Duration::from_secs(10);
    c.cluster.replication_factor = 3;
    c.cluster.write_quorum = 2;
    c.cluster.read_quorum = 2;
    c.cluster.partition_bits = 4;
    c.replication.rebalance_interval = Duration::from_millis(100);
    c.replication.rebalance_grace = Duration::from_millis(200);
    c
}

/// Node 0 served over HTTP; the others reachable only through the
/// cluster (they can be stopped and restarted).
struct Nodes {
    _dir: tempfile::TempDir,
    first: Arc<Node>,
    url: String,
    others: Vec<Option<Node>>,
    configs: Vec<NodeConfig>,
    http: reqwest::Client,
}

impl Nodes {
    async fn start(n: usize) -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        let cluster = n > 1;
        let c0 = config(dir.path(), 0, cluster);
        let first = Arc::new(Node::open(c0.clone()).await.unwrap());
        if cluster {
            first.cluster.init().await.unwrap();
        }
        let boot: libp2p::Multiaddr = format!("{}/p2p/{}", c0.net.listen[0], first.net.peer_id())
            .parse()
            .unwrap();
        let mut configs = vec![c0.clone()];
        let mut others = Vec::new();
        for i in 1..n {
            let mut c = config(dir.path(), i, cluster);
            c.net.bootstrap = vec![boot.clone()];
            let (_, token) = first.cluster.invite(None, None).unwrap();
            c.cluster.join_token = Some(token.to_string());
            others.push(Some(Node::open(c.clone()).await.unwrap()));
            configs.push(c);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = slurp_node::api::router(first.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let nodes = Nodes {
            _dir: dir,
            first,
            url: format!("http://{addr}"),
            others,
            configs,
            http: reqwest::Client::new(),
        };
        if cluster {
            nodes.converged(n).await;
        }
        nodes
    }

    async fn converged(&self, members: usize) {
        wait_until("every node holds its granted keys", async || {
            self.first.cluster.granted_roles_held()
                && self
                    .others
                    .iter()
                    .flatten()
                    .all(|n| n.cluster.granted_roles_held())
        })
        .await;
        wait_until("layout convergence", async || {
            let mut layouts = vec![self.first.cluster.layout()];
            layouts.extend(self.others.iter().flatten().map(|n| n.cluster.layout()));
            layouts.iter().all(|l| {
                l.as_ref().is_some_and(|l| {
                    l.members().len() == members
                        && Some(l.version()) == layouts[0].as_ref().map(|f| f.version())
                })
            })
        })
        .await;
        // The joins were layout changes: their transitions end first.
        wait_until("no layout transition under way", async || {
            !self.first.cluster.in_transition()
                && self
                    .others
                    .iter()
                    .flatten()
                    .all(|n| !n.cluster.in_transition())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    fn token(&self, role: &str) -> String {
        self.first
            .tokens
            .create(RoleName::new(role).unwrap(), "test")
            .unwrap()
            .1
    }

    fn peer(&self, i: usize) -> String {
        if i == 0 {
            self.first.net.peer_id().to_base58()
        } else {
            self.others[i - 1]
                .as_ref()
                .unwrap()
                .net
                .peer_id()
                .to_base58()
        }
    }

    async fn stop(&mut self, i: usize) {
        if let Some(n) = self.others[i - 1].take() {
            n.close().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Restarts node `i` on its address and identity (the layout lists it).
    async fn restart(&mut self, i: usize) {
        for _ in 0..100 {
            match Node::open(self.configs[i].clone()).await {
                Ok(n) => {
                    self.others[i - 1] = Some(n);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        panic!("node {i} did not restart");
    }

    async fn call(&self, req: reqwest::RequestBuilder, token: &str) -> (u16, Value) {
        let resp = req.bearer_auth(token).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: &str, address: &str) -> (u16, Value) {
        let req = self
            .http
            .get(format!("{}/v1/contexts", self.url))
            .query(&[("address", address)]);
        self.call(req, token).await
    }

    async fn put(&self, token: &str, address: &str, summary: &str) -> (u16, Value) {
        let req = self
            .http
            .post(format!("{}/v1/contexts", self.url))
            .json(&json!({"context": ctx(address, summary)}));
        self.call(req, token).await
    }

    async fn search(&self, token: &str, text: &str) -> (u16, Value) {
        let req = self
            .http
            .post(format!("{}/v1/search", self.url))
            .json(&json!({"text": text}));
        self.call(req, token).await
    }
}

fn ctx(addr: &str, summary: &str) -> ContextNode {
    ContextNode::new(
        UcxlAddress::parse(addr).unwrap(),
        summary,
        vec![RoleName::new("developer").unwrap()],
    )
}

const A: &str = "ucxl://claude:developer@shop:checkout/*^/src/auth.rs";
const A1: &str = "ucxl://claude:developer@shop:checkout/*~1/src/auth.rs";
const A2: &str = "ucxl://claude:developer@shop:checkout/*~2/src/auth.rs";
const A_BACK1: &str = "ucxl://claude:developer@shop:checkout/~~1/src/auth.rs";
const A_FIRST: &str = "ucxl://claude:developer@shop:checkout/^^0/src/auth.rs";

/// Three versions; each read answers the address of the version it
/// returned (`*~N`, or `*^` for the newest).
async fn versions_echo_their_own_address(nodes: &Nodes) {
    let dev = nodes.token("developer");
    for summary in ["first", "second", "third token refresh"] {
        let (status, body) = nodes.put(&dev, A, summary).await;
        assert_eq!(status, 201, "{body}");
    }
    for (asked, summary, ordinal, answered) in [
        (A, "third token refresh", 3, A),
        (A1, "first", 1, A1),
        (A2, "second", 2, A2),
        (A_BACK1, "second", 2, A2),
        (A_FIRST, "first", 1, A1),
    ] {
        // Twice: the second read may come from the cache.
        for _ in 0..2 {
            let (status, body) = nodes.get(&dev, asked).await;
            assert_eq!(status, 200, "{asked}: {body}");
            assert_eq!(body["context"]["summary"], summary, "{asked}");
            assert_eq!(body["ordinal"], ordinal, "{asked}");
            assert_eq!(body["address"], answered, "{asked}");
        }
    }
}

/// Broken query text is one 400 `invalid_query` naming the mistakes;
/// ordinary text searches as before.
async fn broken_search_syntax_is_one_clear_error(nodes: &Nodes) {
    let dev = nodes.token("developer");
    let (status, body) = nodes.search(&dev, "AND OR (((").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for part in [
        "`AND` at column 1 has no term on either side",
        "`OR` at column 5 has no term before it",
        "3 parentheses are never closed",
    ] {
        assert!(message.contains(part), "{message}");
    }
    let (status, body) = nodes.search(&dev, "nosuchfield:token").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    // A limit out of range is still `bad_query`.
    let req = nodes
        .http
        .post(format!("{}/v1/search", nodes.url))
        .json(&json!({"text": "token", "limit": 0}));
    let (status, body) = nodes.call(req, &dev).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_query", "{body}");
    for text in [
        "token refresh",
        "c++ token",
        "what's this?",
        "foo-bar",
        "\"token refresh\"",
        "refresh AND token",
        "-legacy",
    ] {
        let (status, body) = nodes.search(&dev, text).await;
        assert_eq!(status, 200, "{text}: {body}");
        assert_eq!(body["warnings"], json!([]), "{text}: {body}");
        assert_eq!(body["partial"], false, "{text}: {body}");
    }
    // The index commits within about a second of a write.
    wait_until("search finds the writes", async || {
        let (_, body) = nodes.search(&dev, "token refresh").await;
        body["total_hits"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_answers_versions_and_query_errors() {
    let nodes = Nodes::start(1).await;
    versions_echo_their_own_address(&nodes).await;
    broken_search_syntax_is_one_clear_error(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_answers_versions_and_query_errors_like_a_lone_node() {
    let nodes = Nodes::start(3).await;
    versions_echo_their_own_address(&nodes).await;
    broken_search_syntax_is_one_clear_error(&nodes).await;
}

/// With two of three replicas down a write fails: the error says it was
/// the write of the address as given, where it failed, and names the
/// nodes. Once a node answers again its old error is gone from status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_errors_name_the_write_and_the_nodes_and_recovery_clears_them() {
    let mut nodes = Nodes::start(3).await;
    let admin = Principal {
        token_id: "test-admin".into(),
        role: RoleName::new("admin").unwrap(),
    };
    nodes
        .first
        .store
        .put(&admin, PutRequest::new(ctx(A, "first")))
        .await
        .unwrap();
    let (p1, p2) = (nodes.peer(1), nodes.peer(2));
    nodes.stop(1).await;
    nodes.stop(2).await;
    let label = |name: &str, peer: &str| format!("{name} ({})", &peer[peer.len() - 8..]);

    // The parent version is read first, from a read quorum of 2.
    let err = nodes
        .first
        .store
        .put(&admin, PutRequest::new(ctx(A, "second")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "write of {A} failed while reading the parent version: 1 of the 2 replicas needed answered"
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&label("node1", &p1)) && msg.contains(&label("node2", &p2)),
        "{msg}"
    );
    assert!(!msg.contains("read of"), "{msg}");

    // With R = 1 the parent read succeeds; too few replicas are up for W.
    let err = nodes
        .first
        .store
        .put_opts(
            &admin,
            PutRequest::new(ctx(A, "second")),
            QuorumOpts {
                w: None,
                r: Some(1),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Quorum {
                op: "write",
                during: None,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("write of {A}: 0 of the 2")),
        "{msg}"
    );
    assert!(
        msg.contains(&label("node1", &p1)) && msg.contains(&label("node2", &p2)),
        "{msg}"
    );

    // A read of an older version names the address with its version.
    let err = nodes
        .first
        .store
        .get(&admin, &UcxlAddress::parse(A1).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!("read of {A1}: ")),
        "{err}"
    );

    // Status while node 1 is down shows why; once it is back, not any more.
    let admin_token = nodes.token("admin");
    let member = async |nodes: &Nodes, peer: &str| -> Value {
        let req = nodes.http.get(format!("{}/v1/cluster", nodes.url));
        let (status, body) = nodes.call(req, &admin_token).await;
        assert_eq!(status, 200, "{body}");
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == peer)
            .cloned()
            .unwrap()
    };
    wait_until("node 1 seen down", async || {
        let m = member(&nodes, &p1).await;
        m["up"] == false && m["last_error"].is_string()
    })
    .await;
    nodes.restart(1).await;
    wait_until("node 1 seen up", async || {
        member(&nodes, &p1).await["up"] == true
    })
    .await;
    let m = member(&nodes, &p1).await;
    assert_eq!(m["last_error"], Value::Null, "{m}");
    assert_eq!(m["name"], "node1", "{m}");
}

/// `POST /v1/cluster/holdings` says which addresses the node stores a copy
/// of itself: admins only, bounded, clear errors.
async fn holdings_name_the_copies_a_node_stores(nodes: &Nodes) {
    let admin = nodes.token("admin");
    let dev = nodes.token("developer");
    let (status, body) = nodes.put(&admin, A, "held here").await;
    assert_eq!(status, 201, "{body}");
    let version = body["version"].as_str().unwrap().to_string();
    let missing = "ucxl://claude:developer@shop:checkout/*^/src/never-written.rs";
    let ask = |token: &str, addresses: Vec<String>| {
        let req = nodes
            .http
            .post(format!("{}/v1/cluster/holdings", nodes.url))
            .json(&json!({ "addresses": addresses }));
        let token = token.to_string();
        async move { nodes.call(req, &token).await }
    };
    let (status, body) = ask(&admin, vec![A.to_string(), missing.to_string()]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["held"], json!([version, null]), "{body}");
    let (status, body) = ask(&dev, vec![A.to_string()]).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = ask(&admin, vec!["not an address".into()]).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = ask(&admin, vec![A.to_string(); 100_000]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_says_which_copies_it_holds() {
    let nodes = Nodes::start(1).await;
    holdings_name_the_copies_a_node_stores(&nodes).await;
}
