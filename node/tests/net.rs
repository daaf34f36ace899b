//! The cluster network over real sockets: three in-process nodes on
//! loopback discover each other through Kademlia, talk on each of our
//! protocols, refuse oversized messages with typed errors, time out in
//! bounded time and keep working when their bootstrap peer goes away.

use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use slurp_node::net::{
    self, NetClient, NetConfig, NetError, NetEvent, ProtocolLimits, Request, Response,
};
use slurp_protocol::messages::{
    ClusterRequest, ClusterResponse, ErrorCode, ForwardRequest, ForwardResponse, HealthStatus,
    KeyScope, NodeInfo, PutOutcome, RemoteError, ReplicateRequest, ReplicateResponse,
    SealedVersion, SearchRequest, SearchResponse, VersionOutcome,
};
use slurp_protocol::{Bytes, Hlc, RecordMeta, RoleName, VersionId, WriterId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a step may take before the test gives up: only a bound that
/// ends a broken test. On a loaded machine steps take many times their
/// usual milliseconds, and no test here asserts how fast anything is.
const BOUND: Duration = Duration::from_secs(90);

fn tcp() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn quic() -> Multiaddr {
    "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()
}

fn config(listen: Vec<Multiaddr>, bootstrap: Vec<Multiaddr>) -> NetConfig {
    NetConfig {
        listen,
        bootstrap,
        request_timeout: Duration::from_secs(2),
        kad_query_timeout: Duration::from_secs(5),
        bootstrap_interval: Duration::from_secs(1),
        ..NetConfig::default()
    }
}

struct Node {
    client: NetClient,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    stop: Option<oneshot::Sender<()>>,
    event_loop: JoinHandle<()>,
}

impl Node {
    /// `/.../p2p/<id>` for the first listen address with `proto` in it.
    fn addr(&self, proto: &str) -> Multiaddr {
        let a = self
            .addrs
            .iter()
            .find(|a| a.to_string().contains(proto))
            .expect("a listen address of that transport")
            .clone();
        a.with(libp2p::multiaddr::Protocol::P2p(self.peer))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        timeout(BOUND, self.event_loop).await.unwrap().unwrap();
    }
}

/// Starts a node; unless `manual`, a task answers its inbound requests
/// with [`answer`]. With `manual`, the event stream is returned instead.
async fn start_with(
    config: NetConfig,
    key: Keypair,
    manual: bool,
) -> (Node, Option<mpsc::Receiver<NetEvent>>) {
    let (client, events, event_loop) = net::new(config, key).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let event_loop = tokio::spawn(event_loop.run(async move {
        let _ = stopped.await;
    }));
    let addrs = timeout(BOUND, client.listen_addrs())
        .await
        .unwrap()
        .unwrap();
    let events = if manual {
        Some(events)
    } else {
        tokio::spawn(serve(client.clone(), events));
        None
    };
    let node = Node {
        peer: client.peer_id(),
        client,
        addrs,
        stop: Some(stop),
        event_loop,
    };
    (node, events)
}

async fn start(config: NetConfig) -> Node {
    start_with(config, Keypair::generate_ed25519(), false)
        .await
        .0
}

/// Answers every inbound request; requests it means to leave unanswered
/// (`GetLayout { newer_than: Some(u64::MAX) }`) are held until the node
/// stops.
async fn serve(client: NetClient, mut events: mpsc::Receiver<NetEvent>) {
    let mut held = Vec::new();
    while let Some(event) = events.recv().await {
        if let NetEvent::InboundRequest {
            request, handle, ..
        } = event
        {
            match answer(&client, *request) {
                Some(response) => {
                    let _ = client.respond(handle, response).await;
                }
                None => held.push(handle),
            }
        }
    }
}

fn info(peer: PeerId) -> NodeInfo {
    NodeInfo {
        name: format!("n{}", &peer.to_string()[..8]),
        peer_id: peer.to_string(),
        api_addr: None,
        software_version: "test".into(),
        zone: None,
        capacity: None,
        listen_addrs: vec![],
        auto_join: false,
    }
}

fn answer(client: &NetClient, request: Request) -> Option<Response> {
    Some(match request {
        Request::Replicate(ReplicateRequest::PutVersions { versions, .. }) => {
            ReplicateResponse::Stored {
                outcomes: versions
                    .into_iter()
                    .map(|v| VersionOutcome {
                        key: v.meta.key,
                        version: v.meta.version,
                        outcome: PutOutcome::Stored,
                    })
                    .collect(),
            }
            .into()
        }
        Request::Replicate(ReplicateRequest::GetVersions { key, .. }) => {
            // "big" asks for a response larger than small limits allow.
            let size = if key == "big" { 8 * 1024 } else { 16 };
            ReplicateResponse::Versions {
                versions: vec![sealed(&key, size)],
                key,
            }
            .into()
        }
        Request::Replicate(ReplicateRequest::VersionIds { .. }) => ReplicateResponse::VersionIds {
            entries: vec![],
            next: None,
        }
        .into(),
        Request::Replicate(ReplicateRequest::Heads { .. }) => {
            ReplicateResponse::Heads { entries: vec![] }.into()
        }
        Request::Replicate(ReplicateRequest::History { key }) => {
            ReplicateResponse::History { key, metas: vec![] }.into()
        }
        Request::Replicate(ReplicateRequest::Digests { ranges, .. }) => {
            ReplicateResponse::Digests {
                digests: ranges
                    .iter()
                    .map(|_| slurp_protocol::messages::RangeDigest {
                        versions: 0,
                        digest: vec![0; 32].into(),
                    })
                    .collect(),
            }
            .into()
        }
        Request::Replicate(ReplicateRequest::Fetch { .. }) => {
            ReplicateResponse::Fetched { versions: vec![] }.into()
        }
        Request::Replicate(ReplicateRequest::Collect { entries, .. }) => {
            ReplicateResponse::Collected {
                states: entries
                    .iter()
                    .map(|_| slurp_protocol::messages::CollectState::Lacks)
                    .collect(),
            }
            .into()
        }
        Request::Forward(ForwardRequest::Call { body, .. }) => ForwardResponse::Reply {
            status: 200,
            content_type: Some("application/json".into()),
            body,
        }
        .into(),
        Request::Search(SearchRequest::TermStatistics { .. }) => SearchResponse::TermStatistics {
            stats: serde_json::json!({"docs": 3}),
        }
        .into(),
        Request::Search(SearchRequest::List { .. }) => SearchResponse::Listed {
            page: serde_json::json!({"entries": [], "next": null}),
        }
        .into(),
        Request::Search(SearchRequest::Search { .. }) => SearchResponse::Results {
            results: serde_json::json!([{"peer": client.peer_id().to_string()}]),
        }
        .into(),
        Request::Cluster(ClusterRequest::Hello { layout_version, .. }) => ClusterResponse::Hello {
            node: info(client.peer_id()),
            layout_version: layout_version + 1,
            certificate: None,
            keys_version: 0,
        }
        .into(),
        Request::Cluster(ClusterRequest::GetLayout {
            newer_than: Some(u64::MAX),
        }) => return None,
        Request::Cluster(ClusterRequest::GetLayout { .. }) => ClusterResponse::Layout {
            version: 7,
            layout: Some(Bytes(vec![1, 2, 3])),
            history: Vec::new(),
        }
        .into(),
        Request::Cluster(ClusterRequest::GetToken { .. }) => {
            ClusterResponse::Token { token: None }.into()
        }
        Request::Cluster(ClusterRequest::Health) => ClusterResponse::Health {
            status: HealthStatus::Ok,
            layout_version: 7,
            uptime_secs: 1,
            partitions_syncing: 0,
            keys_version: 0,
            rewrap: None,
            heartbeats: Vec::new(),
        }
        .into(),
        // Membership, keys, shares and tokens: not served by this bare
        // swarm.
        Request::Cluster(_) => ClusterResponse::Error(RemoteError {
            code: ErrorCode::Forbidden,
            message: "no cluster here".into(),
        })
        .into(),
    })
}

fn sealed(key: &str, envelope: usize) -> SealedVersion {
    SealedVersion {
        meta: RecordMeta {
            key: key.into(),
            path: "src/lib.rs".into(),
            version: VersionId {
                hlc: Hlc {
                    wall_ms: 1,
                    logical: 0,
                },
                writer: WriterId::new("w").unwrap(),
            },
            parent_version: None,
            readers: vec![RoleName::new("developer").unwrap()],
            influences: vec![],
            influenced_by: vec![],
            expires_at_ms: None,
            tombstone: false,
        },
        envelope: Bytes(vec![0x5a; envelope]),
    }
}

fn role() -> RoleName {
    RoleName::new("developer").unwrap()
}

/// Retries `f` until it succeeds or `BOUND` passes.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, NetError>>,
{
    let deadline = Instant::now() + BOUND;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%e, what, "retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// One round trip on each protocol from `from` to `to`.
async fn round_trips(from: &NetClient, to: PeerId) {
    let put = from
        .replicate(
            to,
            ReplicateRequest::PutVersions {
                versions: vec![sealed("p/t/a", 100), sealed("p/t/b", 100)],
                layout_version: Some(1),
                write_quorum_id: None,
                hint_for: None,
            },
        )
        .await
        .unwrap();
    match put {
        ReplicateResponse::Stored { outcomes } => {
            assert_eq!(outcomes.len(), 2);
            assert_eq!(outcomes[1].key, "p/t/b");
        }
        other => panic!("{other:?}"),
    }
    let got = from
        .replicate(
            to,
            ReplicateRequest::GetVersions {
                key: "p/t/a".into(),
                versions: None,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(got, ReplicateResponse::Versions { ref key, ref versions } if key == "p/t/a" && versions.len() == 1)
    );
    let ids = from
        .replicate(
            to,
            ReplicateRequest::VersionIds {
                scope: KeyScope::Slots {
                    first: 0,
                    last: 10,
                    after: None,
                    limit: 100,
                    settled_under: None,
                },
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        ids,
        ReplicateResponse::VersionIds { next: None, .. }
    ));

    let fwd = from
        .forward(
            to,
            ForwardRequest::Call {
                method: "POST".into(),
                path: "/v1/contexts".into(),
                content_type: Some("application/json".into()),
                body: Bytes(b"{\"x\":1}".to_vec()),
                caller_role: role(),
                request_id: None,
                proof: None,
                authorisation: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        fwd,
        ForwardResponse::Reply {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes(b"{\"x\":1}".to_vec()),
        }
    );

    let stats = from
        .search(
            to,
            SearchRequest::TermStatistics {
                query: serde_json::json!({"text": "x"}),
                role: role(),
                scope: None,
                authorisation: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        stats,
        SearchResponse::TermStatistics {
            stats: serde_json::json!({"docs": 3})
        }
    );
    let results = from
        .search(
            to,
            SearchRequest::Search {
                query: serde_json::json!({"text": "x"}),
                role: role(),
                stats: Some(serde_json::json!({"docs": 9})),
                limit: 10,
                scope: None,
                authorisation: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        results,
        SearchResponse::Results {
            results: serde_json::json!([{"peer": to.to_string()}])
        }
    );

    let hello = from
        .cluster(
            to,
            ClusterRequest::Hello {
                node: info(from.peer_id()),
                layout_version: 4,
                certificate: None,
                keys_version: 0,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(hello, ClusterResponse::Hello { layout_version: 5, ref node, .. } if node.peer_id == to.to_string())
    );
    let layout = from
        .cluster(to, ClusterRequest::GetLayout { newer_than: None })
        .await
        .unwrap();
    assert_eq!(
        layout,
        ClusterResponse::Layout {
            version: 7,
            layout: Some(Bytes(vec![1, 2, 3])),
            history: Vec::new(),
        }
    );
    let health = from.cluster(to, ClusterRequest::Health).await.unwrap();
    assert!(matches!(
        health,
        ClusterResponse::Health {
            status: HealthStatus::Ok,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_discover_each_other_and_outlive_their_bootstrap_peer() {
    timeout(3 * BOUND, async {
        let a = start(config(vec![tcp()], vec![])).await;
        let b = start(config(vec![tcp()], vec![a.addr("/tcp/")])).await;
        let c = start(config(vec![tcp()], vec![a.addr("/tcp/")])).await;

        timeout(BOUND, b.client.bootstrap()).await.unwrap().unwrap();
        let lonely = a.client.bootstrap().await;
        assert!(lonely.is_ok() || matches!(lonely, Err(NetError::NoKnownPeers)));

        // C learns B's addresses from the DHT; nobody gives it B's address.
        let found = eventually("C finds B", || c.client.find_peer(b.peer)).await;
        assert!(!found.is_empty());
        assert!(
            found.iter().any(|addr| b
                .addrs
                .iter()
                .any(|l| addr.to_string().starts_with(&l.to_string()))),
            "{found:?} vs {:?}",
            b.addrs
        );
        round_trips(&c.client, b.peer).await;
        round_trips(&b.client, c.peer).await;
        round_trips(&b.client, a.peer).await;

        let stranger = Keypair::generate_ed25519().public().to_peer_id();
        let lookup = timeout(BOUND, c.client.find_peer(stranger)).await.unwrap();
        assert!(
            matches!(lookup, Err(NetError::PeerNotFound(p)) if p == stranger)
                || matches!(lookup, Err(NetError::QueryTimeout { .. })),
            "{lookup:?}"
        );

        // The bootstrap peer goes away; B and C keep reaching each other,
        // through periodic bootstrap rounds that now fail to reach A.
        let a_peer = a.peer;
        a.stop().await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        round_trips(&c.client, b.peer).await;
        round_trips(&b.client, c.peer).await;
        // Lookups still work without A: C's table has B, B's has C.
        let found = timeout(BOUND, c.client.find_peer(b.peer))
            .await
            .unwrap()
            .unwrap();
        assert!(!found.is_empty());
        let found = timeout(BOUND, b.client.find_peer(c.peer))
            .await
            .unwrap()
            .unwrap();
        assert!(!found.is_empty());
        let gone = b.client.cluster(a_peer, ClusterRequest::Health).await;
        assert!(gone.is_err(), "{gone:?}");
        assert!(b.client.stats().kad_queries >= 2);
        assert!(c.client.stats().outbound_requests >= 16);
        b.stop().await;
        c.stop().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_carries_every_protocol() {
    timeout(3 * BOUND, async {
        let a = start(config(vec![quic()], vec![])).await;
        let b = start(config(vec![tcp(), quic()], vec![a.addr("/quic-v1")])).await;
        let dialed = timeout(BOUND, b.client.dial(a.addr("/quic-v1")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dialed, a.peer);
        round_trips(&b.client, a.peer).await;
        // A listens only on QUIC, so B cannot have reached it any other way.
        assert!(
            a.addrs
                .iter()
                .all(|addr| addr.to_string().contains("quic-v1"))
        );
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_network_key_fences_tcp() {
    timeout(3 * BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let key_file = |name: &str, byte: u8| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!("{}\n", libp2p::pnet::PreSharedKey::new([byte; 32])),
            )
            .unwrap();
            path
        };
        let (ours, theirs) = (key_file("ours", 1), key_file("theirs", 2));
        let fenced = |key: &std::path::Path| NetConfig {
            swarm_key: Some(key.to_path_buf()),
            ..config(vec![tcp()], vec![])
        };
        let a = start(fenced(&ours)).await;
        // The same key: every protocol works.
        let b = start(fenced(&ours)).await;
        let dialed = timeout(BOUND, b.client.dial(a.addr("/tcp/")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dialed, a.peer);
        round_trips(&b.client, a.peer).await;
        // Another key, or none: the connection never completes, so no
        // protocol of ours is ever reached.
        for stranger in [
            start(fenced(&theirs)).await,
            start(config(vec![tcp()], vec![])).await,
        ] {
            let refused = timeout(BOUND, stranger.client.dial(a.addr("/tcp/")))
                .await
                .unwrap();
            assert!(refused.is_err(), "{refused:?}");
            let asked = stranger
                .client
                .cluster(a.peer, ClusterRequest::Health)
                .await;
            assert!(asked.is_err(), "{asked:?}");
            stranger.stop().await;
        }
        // A key file that is not one is refused before anything listens.
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "not a key").unwrap();
        let err = net::new(fenced(&bad), Keypair::generate_ed25519())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("is not a private-network key"),
            "{err}"
        );
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_with_typed_errors_and_the_connection_survives() {
    timeout(3 * BOUND, async {
        let mut a_config = config(vec![tcp()], vec![]);
        a_config.forward = ProtocolLimits::new(1024, 1024 * 1024);
        a_config.search = ProtocolLimits::new(1024 * 1024, 64);
        let a = start(a_config).await;
        let mut b_config = config(vec![tcp()], vec![a.addr("/tcp/")]);
        b_config.replicate = ProtocolLimits::new(1024, 2048);
        let b = start(b_config).await;
        timeout(BOUND, b.client.dial(a.addr("/tcp/")))
            .await
            .unwrap()
            .unwrap();

        // Over B's own request limit: refused before anything is sent.
        let err = b
            .client
            .replicate(
                a.peer,
                ReplicateRequest::PutVersions {
                    versions: vec![sealed("p/t/a", 4096)],
                    layout_version: None,
                    write_quorum_id: None,
                    hint_for: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::RequestTooLarge { limit: 1024, .. }),
            "{err}"
        );

        // A's answer is over B's response limit: B stops reading.
        let err = b
            .client
            .replicate(
                a.peer,
                ReplicateRequest::GetVersions {
                    key: "big".into(),
                    versions: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::ResponseTooLarge { limit: 2048, .. }),
            "{err}"
        );

        // Over A's request limit (B allows it): A refuses to read it.
        let err = b
            .client
            .forward(
                a.peer,
                ForwardRequest::Call {
                    method: "PUT".into(),
                    path: "/v1/contexts".into(),
                    content_type: None,
                    body: Bytes(vec![7; 4096]),
                    caller_role: role(),
                    request_id: None,
                    proof: None,
                    authorisation: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::Refused { peer } if peer == a.peer),
            "{err}"
        );

        // A's answer is over A's own response limit: A does not send it.
        let err = b
            .client
            .search(
                a.peer,
                SearchRequest::Search {
                    query: serde_json::json!({"text": "x"}),
                    role: role(),
                    stats: None,
                    limit: 10,
                    scope: None,
                    authorisation: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::Refused { peer } if peer == a.peer),
            "{err}"
        );

        // The connection is still up and serves the next requests.
        assert!(b.client.connected_peers().await.unwrap().contains(&a.peer));
        let health = b
            .client
            .cluster(a.peer, ClusterRequest::Health)
            .await
            .unwrap();
        assert!(matches!(health, ClusterResponse::Health { .. }));
        let stats = b
            .client
            .search(
                a.peer,
                SearchRequest::TermStatistics {
                    query: serde_json::json!({"text": "x"}),
                    role: role(),
                    scope: None,
                    authorisation: None,
                },
            )
            .await
            .unwrap();
        assert!(matches!(stats, SearchResponse::TermStatistics { .. }));
        assert_eq!(b.client.stats().oversized_messages, 2);
        // The request A would not read and the answer A would not send.
        assert_eq!(a.client.stats().oversized_messages, 2);
        assert!(a.client.stats().inbound_failures >= 1);
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_in_bounded_time_with_typed_errors() {
    timeout(3 * BOUND, async {
        let mut a_config = config(vec![tcp()], vec![]);
        a_config.request_timeout = Duration::from_secs(1);
        let a = start(a_config).await;
        let (b, events) = start_with(
            config(vec![tcp()], vec![]),
            Keypair::generate_ed25519(),
            true,
        )
        .await;
        let mut events = events.unwrap();

        // A peer nobody knows an address of.
        let stranger = Keypair::generate_ed25519().public().to_peer_id();
        // Unreachable, not a timeout: it did not wait for an answer.
        let err = a
            .client
            .cluster(stranger, ClusterRequest::Health)
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::PeerUnreachable { peer, .. } if peer == stranger),
            "{err}"
        );

        // A peer that never answers: the configured timeout, typed.
        timeout(BOUND, a.client.dial(b.addr("/tcp/")))
            .await
            .unwrap()
            .unwrap();
        let asker = a.client.clone();
        let b_peer = b.peer;
        let pending = tokio::spawn(async move {
            let started = Instant::now();
            (
                asker.cluster(b_peer, ClusterRequest::Health).await,
                started.elapsed(),
            )
        });
        let held = loop {
            match timeout(BOUND, events.recv()).await.unwrap().unwrap() {
                NetEvent::InboundRequest {
                    request,
                    handle,
                    peer,
                } => {
                    assert_eq!(peer, a.peer);
                    assert_eq!(*request, Request::Cluster(ClusterRequest::Health));
                    break handle;
                }
                _ => continue,
            }
        };
        let (result, elapsed) = pending.await.unwrap();
        assert!(
            matches!(result, Err(NetError::Timeout { peer, .. }) if peer == b.peer),
            "{result:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < BOUND,
            "{elapsed:?}"
        );
        assert!(a.client.stats().outbound_timeouts >= 1);
        drop(held);

        // An answer of the wrong protocol is refused locally, and the
        // requester sees a refusal rather than waiting for its timeout.
        let asker = a.client.clone();
        let pending =
            tokio::spawn(async move { asker.cluster(b_peer, ClusterRequest::Health).await });
        let handle = loop {
            if let NetEvent::InboundRequest { handle, .. } =
                timeout(BOUND, events.recv()).await.unwrap().unwrap()
            {
                break handle;
            }
        };
        let wrong = b
            .client
            .respond(
                handle,
                SearchResponse::Results {
                    results: serde_json::json!([]),
                }
                .into(),
            )
            .await;
        assert!(
            matches!(wrong, Err(NetError::WrongResponse { .. })),
            "{wrong:?}"
        );
        let refused = timeout(BOUND, pending).await.unwrap().unwrap();
        assert!(refused.is_err(), "{refused:?}");

        a.stop().await;
        // Once the loop is gone, clients fail fast.
        let after = a_client_after_stop(b).await;
        assert!(matches!(after, Err(NetError::ShutDown)), "{after:?}");
    })
    .await
    .expect("test bounded in time");
}

async fn a_client_after_stop(node: Node) -> Result<Vec<PeerId>, NetError> {
    let client = node.client.clone();
    node.stop().await;
    client.connected_peers().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_persists_across_restarts() {
    timeout(3 * BOUND, async {
        let dir = tempfile::tempdir().unwrap();
        let key = net::identity::load_or_create(dir.path()).unwrap();
        let (first, _) = start_with(config(vec![tcp()], vec![]), key, false).await;
        let peer = first.peer;
        let lonely = first.client.bootstrap().await;
        assert!(matches!(lonely, Err(NetError::NoKnownPeers)), "{lonely:?}");
        first.stop().await;
        let key = net::identity::load_or_create(dir.path()).unwrap();
        let (second, _) = start_with(config(vec![tcp()], vec![]), key, false).await;
        assert_eq!(second.peer, peer);
        second.stop().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_queue_per_peer_instead_of_failing() {
    timeout(3 * BOUND, async {
        let a = start(config(vec![tcp()], vec![])).await;
        let mut b_config = config(vec![tcp()], vec![]);
        b_config.request_timeout = Duration::from_secs(10);
        let b = start(b_config).await;
        timeout(BOUND, b.client.dial(a.addr("/tcp/")))
            .await
            .unwrap()
            .unwrap();

        // Far more requests at once than a connection has streams for.
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..600 {
            let client = b.client.clone();
            let peer = a.peer;
            burst.spawn(async move { client.cluster(peer, ClusterRequest::Health).await });
        }
        while let Some(result) = burst.join_next().await {
            let response = result.unwrap().unwrap();
            assert!(matches!(response, ClusterResponse::Health { .. }));
        }
        assert_eq!(b.client.stats().outbound_failures, 0);

        // Past the queue bound a request fails at once, typed.
        let mut c_config = config(vec![tcp()], vec![]);
        c_config.max_outbound_streams_per_peer = 1;
        c_config.max_queued_requests_per_peer = 2;
        let c = start(c_config).await;
        timeout(BOUND, c.client.dial(a.addr("/tcp/")))
            .await
            .unwrap()
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            let client = c.client.clone();
            let peer = a.peer;
            held.push(tokio::spawn(async move {
                // A holds these unanswered.
                client
                    .cluster(
                        peer,
                        ClusterRequest::GetLayout {
                            newer_than: Some(u64::MAX),
                        },
                    )
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err = c
            .client
            .cluster(a.peer, ClusterRequest::Health)
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetError::Overloaded { queued: 2, peer } if peer == a.peer),
            "{err}"
        );
        for h in held {
            h.abort();
        }
        a.stop().await;
        b.stop().await;
        c.stop().await;
    })
    .await
    .expect("test bounded in time");
}

#[tokio::test]
async fn bad_settings_are_refused_before_anything_listens() {
    let no_peer_id = config(
        vec![tcp()],
        vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
    );
    let err = net::new(no_peer_id, Keypair::generate_ed25519()).unwrap_err();
    assert!(matches!(err, NetError::InvalidAddress { .. }), "{err}");
    let mut zero = config(vec![tcp()], vec![]);
    zero.max_outbound_streams_per_peer = 0;
    let err = net::new(zero, Keypair::generate_ed25519()).unwrap_err();
    assert!(
        matches!(err, NetError::Config(ref m) if m.contains("max_outbound_streams_per_peer")),
        "{err}"
    );
    let unlistenable = config(vec!["/ip4/127.0.0.1/udp/0".parse().unwrap()], vec![]);
    let err = net::new(unlistenable, Keypair::generate_ed25519()).unwrap_err();
    assert!(matches!(err, NetError::Listen { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_stopped_peer_says_why_it_failed() {
    timeout(3 * BOUND, async {
        let a = start(config(vec![tcp()], vec![])).await;
        let b = start(config(vec![tcp()], vec![])).await;
        let b_peer = b.peer;
        timeout(BOUND, a.client.dial(b.addr("/tcp/")))
            .await
            .unwrap()
            .unwrap();
        round_trips(&a.client, b_peer).await;
        b.stop().await;
        // Once the connection is gone, the next request dials again and is
        // refused by the closed port: the error says so.
        let err = eventually("b is seen unreachable", || async {
            match a.client.cluster(b_peer, ClusterRequest::Health).await {
                Err(e @ NetError::PeerUnreachable { .. }) => Ok(e),
                // Not yet: the old connection still closing; try again.
                _ => Err(NetError::Refused { peer: b_peer }),
            }
        })
        .await;
        assert!(
            err.to_string()
                .to_lowercase()
                .contains("connection refused"),
            "{err}"
        );
        a.stop().await;
    })
    .await
    .expect("test bounded in time");
}
