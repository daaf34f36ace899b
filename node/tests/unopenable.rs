//! A node holds records it cannot open: envelopes sealed to keys it does
//! not hold (as replicas will, once role keys are granted per node) or
//! corrupt ones. They are counted, never fatal: the index rebuild at start
//! indexes everything else, `/health` goes ready, the count is a metric and
//! in the status, and searches in their scope say they are incomplete.
//! While the index is rebuilt, `/health` is not ready and searches say so.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::wait_until;
use serde_json::{Value, json};
use slurp_crypto::{Envelope, RoleKey};
use slurp_node::config::NodeConfig;
use slurp_node::node::Node;
use slurp_node::store::PutRequest;
use slurp_node::tokens::Principal;
use slurp_node::workers::WorkerState;
use slurp_protocol::messages::{PutOutcome, ReplicateRequest, ReplicateResponse, SealedVersion};
use slurp_protocol::{
    ContextNode, Framed, Hlc, RecordMeta, RoleName, UcxlAddress, VersionId, WriterId,
};

fn role(r: &str) -> RoleName {
    RoleName::new(r).unwrap()
}

fn who(r: &str) -> Principal {
    Principal {
        token_id: format!("test-{r}"),
        role: role(r),
    }
}

fn address(i: usize) -> String {
    format!("ucxl://claude:developer@slurp:core/*^/src/trust/m{i}.rs")
}

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig {
        data_dir: dir.join("data"),
        node_name: Some("solo".into()),
        ..NodeConfig::default()
    };
    c.index.commit_every_ops = 1;
    c.net.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c
}

/// A node served over HTTP on 127.0.0.1.
struct Served {
    node: Arc<Node>,
    url: String,
    token: String,
    http: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn open(config: NodeConfig) -> Served {
        let node = Arc::new(Node::open(config).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = slurp_node::api::router(node.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let token = node.tokens.create(role("developer"), "test").unwrap().1;
        Served {
            node,
            url: format!("http://{addr}"),
            token,
            http: reqwest::Client::new(),
            stop,
            server,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn search(&self, text: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/search", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.unwrap()
    }

    /// Waits until the rebuild worker has finished `runs` passes, then
    /// checks that the node is ready.
    async fn rebuilt(&self, runs: u64) {
        wait_until("index rebuild", async || {
            self.node
                .workers
                .get("index-rebuild")
                .is_some_and(|w| w.runs >= runs && w.state == WorkerState::Idle)
        })
        .await;
        let (code, health) = self.get("/health").await;
        assert_eq!(code, 200, "after rebuild {runs}: {health}");
    }

    /// Stops serving (the connections close with the client) and closes
    /// the node, so its data directory can be opened again.
    async fn close(self) {
        drop(self.http);
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
        // The server's connection tasks drop their clones of the node
        // just after the server reports that it stopped.
        let mut node = self.node;
        let deadline = std::time::Instant::now() + common::LIVENESS;
        let node = loop {
            match Arc::try_unwrap(node) {
                Ok(n) => break n,
                Err(again) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "something still holds the node"
                    );
                    node = again;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        node.close().await;
    }
}

/// A version of `addr` sealed to a fresh key of `developer` that no node
/// holds, with the clear metadata a replica would receive.
fn foreign_version(addr: &str, summary: &str, after: Option<&str>) -> SealedVersion {
    let address = UcxlAddress::parse(addr).unwrap();
    let mut context = ContextNode::new(address.clone(), summary, vec![role("developer")]);
    context.path = address.path.clone();
    // Keys of an epoch newer than any the node knows (a rotation it has
    // not heard of yet): a replica takes them on trust.
    let keys: Vec<_> = ["admin", "architect", "developer"]
        .iter()
        .map(|r| RoleKey::generate(role(r), 7).public().clone())
        .collect();
    let envelope = Envelope::seal(&context.encode().unwrap(), &keys)
        .unwrap()
        .to_bytes()
        .unwrap();
    sealed(addr, envelope, after)
}

fn sealed(addr: &str, envelope: Vec<u8>, after: Option<&str>) -> SealedVersion {
    let address = UcxlAddress::parse(addr).unwrap();
    let wall_ms = match after {
        // Newer than the version given.
        Some(v) => v.parse::<VersionId>().unwrap().hlc.wall_ms + 1,
        None => 1_000,
    };
    SealedVersion {
        meta: RecordMeta {
            key: address.key(),
            path: address.path.clone(),
            version: VersionId {
                hlc: Hlc {
                    wall_ms,
                    logical: 0,
                },
                writer: WriterId::new("elsewhere").unwrap(),
            },
            parent_version: after.map(|v| v.parse().unwrap()),
            readers: vec![role("admin"), role("architect"), role("developer")],
            influences: vec![],
            influenced_by: vec![],
            expires_at_ms: None,
            tombstone: false,
        },
        envelope: envelope.into(),
    }
}

/// Stores versions the way a replica does: through the replication
/// request a peer sends.
async fn replicate(node: &Node, versions: Vec<SealedVersion>) {
    let n = versions.len();
    match node
        .store
        .replicator()
        .unwrap()
        .serve_replicate(
            &libp2p::PeerId::random(),
            ReplicateRequest::PutVersions {
                versions,
                layout_version: None,
                write_quorum_id: None,
                hint_for: None,
            },
        )
        .await
    {
        ReplicateResponse::Stored { outcomes } => {
            assert_eq!(outcomes.len(), n);
            for o in outcomes {
                assert_eq!(o.outcome, PutOutcome::Stored, "{}", o.key);
            }
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

async fn put(node: &Node, i: usize, summary: &str) -> String {
    let context = ContextNode::new(
        UcxlAddress::parse(&address(i)).unwrap(),
        summary,
        vec![role("developer")],
    );
    node.store
        .put(&who("developer"), PutRequest::new(context))
        .await
        .unwrap()
        .version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_this_node_cannot_open_are_counted_and_never_fail_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::open(config(dir.path())).await;
    served.rebuilt(1).await;
    let node = &served.node;
    for i in 0..5 {
        put(node, i, &format!("quince marmalade {i}")).await;
    }
    let shadowed = put(node, 5, "quince shadowed").await;
    // Sealed to a key no node holds; corrupt; and a newer foreign version
    // of a record the node could read, whose old text must go.
    replicate(
        node,
        vec![
            foreign_version(&address(10), "quince foreign", None),
            foreign_version(&address(5), "quince newer", Some(&shadowed)),
        ],
    )
    .await;
    // A replica refuses an envelope that is not one; such a record can
    // only be on disk (rotted, or from an older node): put it there.
    let corrupt = sealed(&address(11), b"not an envelope".to_vec(), None);
    match node
        .store
        .replicator()
        .unwrap()
        .serve_replicate(
            &libp2p::PeerId::random(),
            ReplicateRequest::PutVersions {
                versions: vec![corrupt.clone()],
                layout_version: None,
                write_quorum_id: None,
                hint_for: None,
            },
        )
        .await
    {
        ReplicateResponse::Stored { outcomes } => assert!(
            matches!(&outcomes[0].outcome, PutOutcome::Rejected { reason } if reason.contains("header does not decode")),
            "{outcomes:?}"
        ),
        other => panic!("unexpected answer {other:?}"),
    }
    // A live version without any envelope is refused too: it would be a
    // context no reader can open (a member that lies).
    let empty = sealed(&address(12), Vec::new(), None);
    match node
        .store
        .replicator()
        .unwrap()
        .serve_replicate(
            &libp2p::PeerId::random(),
            ReplicateRequest::PutVersions {
                versions: vec![empty.clone()],
                layout_version: None,
                write_quorum_id: None,
                hint_for: None,
            },
        )
        .await
    {
        ReplicateResponse::Stored { outcomes } => assert!(
            matches!(&outcomes[0].outcome, PutOutcome::Rejected { reason } if reason.contains("no envelope")),
            "{outcomes:?}"
        ),
        other => panic!("unexpected answer {other:?}"),
    }
    assert!(
        node.store
            .local()
            .latest_meta(&empty.meta.key)
            .unwrap()
            .is_none()
    );
    let written = node
        .store
        .local()
        .put_many(vec![slurp_storage::NewVersion {
            meta: corrupt.meta.clone(),
            envelope: corrupt.envelope.0.clone(),
        }])
        .await;
    assert!(written[0].is_ok(), "{written:?}");

    let check = async |served: &Served, when: &str, corrupt: u64| {
        let total = 2 + corrupt;
        let r = served.search("quince").await;
        assert_eq!(r["total_hits"], 5, "{when}: {r}");
        assert_eq!(r["hits"].as_array().unwrap().len(), 5, "{when}: {r}");
        assert_eq!(r["incomplete"], true, "{when}: {r}");
        assert_eq!(
            r["incomplete_reasons"],
            json!(["unopenable_records"]),
            "{when}: {r}"
        );
        assert_eq!(r["unopenable"], total, "{when}: {r}");
        assert_eq!(r["partial"], false, "{when}: {r}");
        let warnings = r["warnings"].to_string();
        assert!(
            warnings.contains(&format!("{total} records readable by role developer")),
            "{when}: {r}"
        );
        // A role that may not read them has a complete answer.
        let observer = served
            .node
            .store
            .search(
                &who("observer"),
                slurp_index::SearchQuery::new(role("observer"), "quince"),
            )
            .await
            .unwrap();
        assert!(!observer.incomplete, "{when}: {observer:?}");
        assert_eq!(observer.unopenable, 0);

        let metrics = served.text("/metrics").await;
        assert_eq!(
            metric(
                &metrics,
                "slurp_index_unopenable_records{reason=\"no_key\"}"
            ),
            Some(2.0),
            "{when}"
        );
        assert_eq!(
            metric(
                &metrics,
                "slurp_index_unopenable_records{reason=\"corrupt\"}"
            ),
            Some(corrupt as f64),
            "{when}"
        );
        assert_eq!(metric(&metrics, "slurp_index_ready"), Some(1.0), "{when}");
        let (code, status) = served.get("/v1/status").await;
        assert_eq!(code, 200);
        assert_eq!(
            status["index"]["unopenable"],
            json!({"total": total, "no_key": 2, "corrupt": corrupt}),
            "{when}"
        );
        assert_eq!(status["index"]["ready"], true, "{when}");
        assert_eq!(status["index"]["coverage"]["state"], "complete", "{when}");
        let (code, health) = served.get("/health").await;
        assert_eq!(code, 200, "{when}: {health}");
        assert_eq!(health["components"]["index"]["ok"], true);
        let detail = health["components"]["index"]["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!(
                "{total} held but not openable here (no key: 2, corrupt: {corrupt})"
            )),
            "{when}: {detail}"
        );
    };
    // As replicated: the foreign writes are stored and counted (the one
    // written to disk behind the node's back is not seen until a rebuild).
    check(&served, "after replication", 0).await;

    // After a restart, the rebuild reads them all and finishes.
    served.close().await;
    let served = Served::open(config(dir.path())).await;
    served.rebuilt(1).await;
    check(&served, "after restart", 1).await;
    let (_, workers) = served.get("/v1/workers").await;
    let rebuild = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "index-rebuild")
        .cloned()
        .expect("the rebuild is a worker");
    assert_eq!(rebuild["runs"], 1, "{rebuild}");
    assert_eq!(rebuild["errors"], 0, "{rebuild}");
    assert_eq!(rebuild["last_items"], 5, "{rebuild}");
    let note = rebuild["last_note"].as_str().unwrap();
    assert!(
        note.contains(
            "indexed 5 of 8 records; 3 held but not openable here (no key: 2, corrupt: 1)"
        ),
        "{note}"
    );

    // A readable newer version makes the record searchable again.
    put(&served.node, 10, "quince readable again").await;
    let r = served.search("quince").await;
    assert_eq!(r["total_hits"], 6, "{r}");
    assert_eq!(r["unopenable"], 2, "{r}");
    served.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_ready_while_the_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::open(config(dir.path())).await;
    served.rebuilt(1).await;
    put(&served.node, 1, "damson jam").await;
    wait_until("the write is searchable", async || {
        served.search("damson").await["total_hits"] == 1
    })
    .await;

    // Rebuild again, paused inside the rebuild (which holds the index's
    // write lock) until the hold is dropped.
    let hold = served.node.hold_index_rebuilds();
    served.node.workers.trigger("index-rebuild").unwrap();
    wait_until("the rebuild reaches the hold", async || {
        served.node.index_rebuilds_held() == 1
    })
    .await;

    let (code, health) = served.get("/health").await;
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["ready"], false);
    assert_eq!(health["components"]["index"]["ok"], false);
    let detail = health["components"]["index"]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("rebuilding: 0 of at most 1 records read"),
        "{detail}"
    );
    let (code, _) = served.get("/health/ready").await;
    assert_eq!(code, 503);
    let (_, status) = served.get("/v1/status").await;
    assert_eq!(status["index"]["ready"], false, "{status}");
    assert_eq!(
        status["index"]["coverage"]["state"], "rebuilding",
        "{status}"
    );
    assert_eq!(
        metric(&served.text("/metrics").await, "slurp_index_ready"),
        Some(0.0)
    );
    // Search answers from the index as it was, and says it may miss some.
    let r = served.search("damson").await;
    assert_eq!(r["total_hits"], 1, "{r}");
    assert_eq!(r["incomplete"], true, "{r}");
    assert_eq!(r["incomplete_reasons"], json!(["index_rebuilding"]), "{r}");
    assert!(
        r["warnings"].to_string().contains("still being rebuilt"),
        "{r}"
    );

    drop(hold);
    served.rebuilt(2).await;
    let r = served.search("damson").await;
    assert_eq!(
        (r["total_hits"].clone(), r["incomplete"].clone()),
        (json!(1), json!(false)),
        "{r}"
    );
    assert!(r.get("incomplete_reasons").is_none(), "{r}");
    let w = served.node.workers.get("index-rebuild").unwrap();
    assert_eq!((w.runs, w.errors), (2, 0), "{w:?}");
    served.close().await;
}
