//! Every door of the cluster, tried by peers that should not get through:
//! a stranger that only knows a member's address, one that forged its own
//! certificate, one that replays a spent invite, and a certified peer that
//! lies (serves an old layout, or one signed by another key). Real nodes
//! and a real swarm on the in-memory transport; the intruders are bare
//! swarms that send whatever they like.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{LIVENESS, wait_until};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use slurp_crypto::{AuditEntry, AuditFilter, ClusterKey};
use slurp_node::config::NodeConfig;
use slurp_node::net::{self, NetClient, NetConfig, NetEvent, Request, Response};
use slurp_node::node::Node;
use slurp_protocol::membership::{PURPOSE_CERTIFICATE, PURPOSE_LAYOUT};
use slurp_protocol::messages::{
    ClusterRequest, ClusterResponse, ErrorCode, ForwardRequest, ForwardResponse, KeyScope,
    NodeInfo, ReplicateRequest, ReplicateResponse, SearchRequest, SearchResponse,
};
use slurp_protocol::placement::Layout;
use slurp_protocol::{Bytes, Framed, NodeCertificate, PartitionScheme, RoleName, Signed};
use tokio::sync::mpsc;

static PORTS: AtomicU64 = AtomicU64::new(0);

fn memory_addr() -> Multiaddr {
    // Unique within this process, and apart from the other test files'.
    let n = 7_000_000 + std::process::id() as u64 * 1000 + PORTS.fetch_add(1, Ordering::SeqCst);
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
    c.cluster.replication_factor = 2;
    c.cluster.write_quorum = 1;
    c.cluster.read_quorum = 1;
    c.cluster.partition_bits = 4;
    c
}

/// Two members: node 0 made the cluster, node 1 joined with an invite.
struct Members {
    _dir: tempfile::TempDir,
    n0: Node,
    n1: Node,
    addr0: Multiaddr,
    addr1: Multiaddr,
}

impl Members {
    async fn start() -> Members {
        let dir = tempfile::tempdir().unwrap();
        let c0 = config(dir.path(), 0);
        let n0 = Node::open(c0.clone()).await.unwrap();
        n0.cluster.init().await.unwrap();
        let addr0 = c0.net.listen[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(n0.net.peer_id()));
        let mut c1 = config(dir.path(), 1);
        c1.net.bootstrap = vec![addr0.clone()];
        c1.cluster.auto_join = true;
        let (_, token) = n0.cluster.invite(None, None).unwrap();
        c1.cluster.join_token = Some(token.to_string());
        let addr1 = c1.net.listen[0].clone();
        let n1 = Node::open(c1).await.unwrap();
        let addr1 = addr1.with(libp2p::multiaddr::Protocol::P2p(n1.net.peer_id()));
        let m = Members {
            _dir: dir,
            n0,
            n1,
            addr0,
            addr1,
        };
        wait_until(
            "both members hold the same 2-member layout, node 1 its keys",
            async || {
                let (a, b) = (m.n0.cluster.layout(), m.n1.cluster.layout());
                a.zip(b)
                    .is_some_and(|(a, b)| a.members().len() == 2 && a.version() == b.version())
                    && m.n1.cluster.granted_roles_held()
            },
        )
        .await;
        m
    }

    async fn close(self) {
        self.n0.close().await;
        self.n1.close().await;
    }
}

/// A bare swarm that connects to a member and sends what a test tells it.
struct Intruder {
    keypair: Keypair,
    client: NetClient,
    peer: PeerId,
    events: Option<mpsc::Receiver<NetEvent>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Intruder {
    async fn start(target: &Multiaddr) -> Intruder {
        let config = NetConfig {
            listen: vec![memory_addr()],
            request_timeout: LIVENESS,
            ..NetConfig::default()
        };
        let keypair = Keypair::generate_ed25519();
        let (client, events, event_loop) = net::new(config, keypair.clone()).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(event_loop.run(async move {
            let _ = stopped.await;
        }));
        client.dial(target.clone()).await.unwrap();
        Intruder {
            keypair,
            peer: client.peer_id(),
            client,
            events: Some(events),
            stop: Some(stop),
        }
    }

    fn id(&self) -> String {
        self.peer.to_base58()
    }

    async fn cluster(&self, to: PeerId, req: ClusterRequest) -> ClusterResponse {
        self.client.cluster(to, req).await.unwrap()
    }

    /// Redeems an invite of node 0 for `roles` (all when `None`) and asks
    /// to be added to the layout: a real member from then on. Returns its
    /// certificate.
    async fn join(&self, m: &Members, roles: Option<Vec<RoleName>>) -> Signed {
        let (_, token) = m.n0.cluster.invite(roles, None).unwrap();
        let join = ClusterRequest::Join {
            invite: token.id.clone(),
            secret: token.secret.clone(),
            node: info(&self.id()),
            apply: true,
        };
        match self.cluster(m.n0.net.peer_id(), join).await {
            ClusterResponse::Joined { certificate, .. } => certificate,
            other => panic!("the invite was not honoured: {other:?}"),
        }
    }
}

impl Drop for Intruder {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn info(peer: &str) -> NodeInfo {
    NodeInfo {
        name: "intruder".into(),
        peer_id: peer.into(),
        api_addr: Some("127.0.0.1:1".into()),
        software_version: "0".into(),
        zone: None,
        capacity: None,
        listen_addrs: vec![],
        auto_join: true,
    }
}

fn forbidden_cluster(r: &ClusterResponse) -> String {
    match r {
        ClusterResponse::Error(e) if e.code == ErrorCode::Forbidden => e.message.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Audit entries of `node` with action `action`.
async fn audited(node: &Node, action: &str) -> Vec<AuditEntry> {
    node.store.audit().flush().await;
    let filter = AuditFilter {
        action: Some(slurp_crypto::AuditAction::Other(action.into())),
        ..AuditFilter::default()
    };
    node.audit_log.query(&filter).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_nothing_from_any_protocol() {
    let m = Members::start().await;
    let mut stranger = Intruder::start(&m.addr0).await;
    let to = m.n0.net.peer_id();
    let me = stranger.id();

    // Cluster state: no hello, layout, health or token lookups.
    for req in [
        ClusterRequest::Hello {
            node: info(&me),
            layout_version: 0,
            certificate: None,
            keys_version: 0,
        },
        ClusterRequest::GetLayout { newer_than: None },
        ClusterRequest::Health,
        ClusterRequest::Transition,
        ClusterRequest::GetToken {
            id: m.n0.tokens.list()[0].id.clone(),
        },
        // Heartbeats: its own, to look alive, and a member's, to keep it
        // looking alive.
        ClusterRequest::Gossip {
            heartbeats: vec![
                slurp_protocol::messages::Heartbeat {
                    peer: me.clone(),
                    generation_ms: 1,
                    beat_ms: 2,
                },
                slurp_protocol::messages::Heartbeat {
                    peer: to.to_base58(),
                    generation_ms: 1,
                    beat_ms: 2,
                },
            ],
        },
    ] {
        let why = forbidden_cluster(&stranger.cluster(to, req.clone()).await);
        assert!(
            why.contains("not a member of this cluster"),
            "{req:?}: {why}"
        );
    }
    assert!(
        !m.n0
            .cluster
            .peers()
            .detector()
            .knows(&me.parse().expect("a peer id")),
        "a stranger's heartbeat reached the failure detector"
    );
    // A certificate signed by a key of its own making does not help.
    let forger = ClusterKey::generate();
    let forged = forger
        .sign(
            PURPOSE_CERTIFICATE,
            &NodeCertificate {
                cluster: m.n0.cluster.identity().unwrap().id(),
                peer_id: me.clone(),
                roles: vec![RoleName::new("admin").unwrap()],
                issued_ms: 0,
                not_after_ms: u64::MAX,
            },
        )
        .unwrap();
    let r = stranger
        .cluster(
            to,
            ClusterRequest::Hello {
                node: info(&me),
                layout_version: 99,
                certificate: Some(forged.clone()),
                keys_version: 0,
            },
        )
        .await;
    forbidden_cluster(&r);
    let denied = audited(&m.n0, "cluster_hello").await;
    assert!(
        denied
            .iter()
            .any(|e| e.actor == me && e.reason.contains("does not verify")),
        "{denied:?}"
    );
    // Nor can it make a member take its certificate as the member's own.
    let r = stranger
        .cluster(
            to,
            ClusterRequest::Admit {
                cluster_key: Bytes(forger.public().to_bytes().to_vec()),
                certificate: forger
                    .sign(
                        PURPOSE_CERTIFICATE,
                        &NodeCertificate {
                            cluster: forger.public().id(),
                            peer_id: to.to_base58(),
                            roles: vec![],
                            issued_ms: 0,
                            not_after_ms: u64::MAX,
                        },
                    )
                    .unwrap(),
            },
        )
        .await;
    assert!(forbidden_cluster(&r).contains("belongs to cluster"));
    // A made-up invite is an invalid join token, whatever was wrong.
    let r = stranger
        .cluster(
            to,
            ClusterRequest::Join {
                invite: "inv0000000000000000".into(),
                secret: "00".repeat(32),
                node: info(&me),
                apply: true,
            },
        )
        .await;
    assert_eq!(forbidden_cluster(&r), "invalid join token");

    // Data: no replication, search or forwarded calls.
    let key = "shop/checkout/src/a.rs".to_string();
    for req in [
        ReplicateRequest::GetVersions {
            key: key.clone(),
            versions: None,
        },
        ReplicateRequest::VersionIds {
            scope: KeyScope::Keys(vec![key.clone()]),
        },
        ReplicateRequest::Heads {
            keys: vec![key.clone()],
            with_envelope: true,
        },
        ReplicateRequest::History { key: key.clone() },
        ReplicateRequest::PutVersions {
            versions: vec![],
            layout_version: None,
            write_quorum_id: None,
            hint_for: None,
        },
        ReplicateRequest::VersionIds {
            scope: KeyScope::Slots {
                first: 0,
                last: u16::MAX,
                after: None,
                limit: 100,
                settled_under: None,
            },
        },
        ReplicateRequest::Digests {
            layout_version: 1,
            ranges: vec![slurp_protocol::messages::SlotRange {
                first: 0,
                last: u16::MAX,
            }],
        },
        ReplicateRequest::Fetch { entries: vec![] },
        ReplicateRequest::Collect {
            entries: vec![],
            apply: true,
        },
    ] {
        match stranger.client.replicate(to, req.clone()).await.unwrap() {
            ReplicateResponse::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden, "{req:?}"),
            other => panic!("{req:?} answered {other:?}"),
        }
    }
    let role = RoleName::new("admin").unwrap();
    for req in [
        SearchRequest::TermStatistics {
            query: serde_json::json!({"text": "token"}),
            role: role.clone(),
            scope: None,
            authorisation: None,
        },
        SearchRequest::Search {
            query: serde_json::json!({"text": "token"}),
            role: role.clone(),
            stats: None,
            limit: 10,
            scope: None,
            authorisation: None,
        },
        SearchRequest::List {
            pattern: "ucxl://any:any@shop:checkout/*^/".into(),
            role: role.clone(),
            after: None,
            limit: 10,
            scope: serde_json::json!([[0, 65535]]),
            authorisation: None,
        },
    ] {
        match stranger.client.search(to, req).await.unwrap() {
            SearchResponse::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden),
            other => panic!("search answered {other:?}"),
        }
    }
    for proof in [None, Some(Bytes(vec![0; 32]))] {
        let call = ForwardRequest::Call {
            method: "GET".into(),
            path: "/v1/list?prefix=ucxl://".into(),
            content_type: None,
            body: Bytes(vec![]),
            caller_role: role.clone(),
            request_id: None,
            proof,
            authorisation: None,
        };
        match stranger.client.forward(to, call).await.unwrap() {
            ForwardResponse::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden),
            other => panic!("forward answered {other:?}"),
        }
    }

    // The stranger is not in the layout, and the members never told it
    // who they are: every hello they sent it names no zone, address or API.
    let layout = m.n0.cluster.layout().unwrap();
    assert!(layout.member_index(&me).is_none());
    assert!(
        !m.n0
            .cluster
            .status()
            .others
            .iter()
            .any(|p| p.peer_id == me && p.name.is_some())
    );
    let mut rx = stranger.events.take().unwrap();
    let mut hellos = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(e)) = tokio::time::timeout_at(until, rx.recv()).await {
        if let NetEvent::InboundRequest { request, .. } = e
            && let Request::Cluster(ClusterRequest::Hello { node, .. }) = *request
        {
            hellos.push(node);
        }
    }
    assert!(!hellos.is_empty(), "the member greeted the new connection");
    for h in &hellos {
        assert!(
            h.name.is_empty() && h.api_addr.is_none() && h.listen_addrs.is_empty(),
            "{h:?}"
        );
    }
    drop(stranger);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_are_spent_once_expire_and_every_refusal_is_audited() {
    let m = Members::start().await;
    let peer = Intruder::start(&m.addr0).await;
    let to = m.n0.net.peer_id();
    let me = peer.id();
    let join = |invite: &str, secret: &str| ClusterRequest::Join {
        invite: invite.into(),
        secret: secret.into(),
        node: info(&me),
        apply: false,
    };

    let (_, token) = m.n0.cluster.invite(None, None).unwrap();
    let r = peer.cluster(to, join(&token.id, &"ab".repeat(32))).await;
    assert_eq!(forbidden_cluster(&r), "invalid join token");
    let ClusterResponse::Joined {
        cluster_key,
        certificate,
        layout,
    } = peer.cluster(to, join(&token.id, &token.secret)).await
    else {
        panic!("the invite was not honoured");
    };
    assert!(layout.is_none(), "not added without asking");
    let public = slurp_crypto::ClusterPublic::from_bytes(&cluster_key.0).unwrap();
    assert_eq!(public.id(), token.cluster);
    let cert: NodeCertificate = public
        .verify(PURPOSE_CERTIFICATE, &certificate, 1 << 20)
        .unwrap();
    assert_eq!(cert.peer_id, me, "certified for its own peer id");
    // Spent: a replay of the same join is refused.
    let r = peer.cluster(to, join(&token.id, &token.secret)).await;
    assert_eq!(forbidden_cluster(&r), "invalid join token");
    // Expired.
    let (_, late) =
        m.n0.cluster
            .invite(None, Some(Duration::from_millis(1)))
            .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = peer.cluster(to, join(&late.id, &late.secret)).await;
    assert_eq!(forbidden_cluster(&r), "invalid join token");
    let entries = audited(&m.n0, "cluster_join").await;
    for want in ["invite_wrong_secret", "invite_used", "invite_expired"] {
        assert!(
            entries
                .iter()
                .any(|e| e.actor == me && e.reason.starts_with(want)),
            "{want}: {entries:?}"
        );
    }
    assert!(entries.iter().any(|e| e.actor == me
        && e.decision == slurp_crypto::Decision::Allow
        && e.reason.starts_with("certified")));

    // Certified, but not in the layout: it may say hello and learn the
    // layout, but a replica does not take its writes.
    let r = peer
        .cluster(
            to,
            ClusterRequest::Hello {
                node: info(&me),
                layout_version: 0,
                certificate: Some(certificate),
                keys_version: 0,
            },
        )
        .await;
    assert!(matches!(r, ClusterResponse::Hello { .. }), "{r:?}");
    match peer
        .client
        .replicate(
            to,
            ReplicateRequest::PutVersions {
                versions: vec![],
                layout_version: None,
                write_quorum_id: None,
                hint_for: None,
            },
        )
        .await
        .unwrap()
    {
        ReplicateResponse::Error(e) => assert_eq!(e.code, ErrorCode::LayoutMismatch),
        other => panic!("a certified non-member replicated: {other:?}"),
    }
    drop(peer);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_serves_an_old_or_forged_layout_is_refused_and_audited() {
    let m = Members::start().await;
    let mut liar = Intruder::start(&m.addr0).await;
    let to = m.n0.net.peer_id();
    let me = liar.id();
    // The liar is a real member: it joined with an invite.
    let (_, token) = m.n0.cluster.invite(None, None).unwrap();
    let ClusterResponse::Joined {
        certificate,
        layout: Some(old),
        ..
    } = liar
        .cluster(
            to,
            ClusterRequest::Join {
                invite: token.id.clone(),
                secret: token.secret.clone(),
                node: info(&me),
                apply: true,
            },
        )
        .await
    else {
        panic!("the invite was not honoured");
    };
    // A later layout supersedes the one the liar kept.
    m.n0.cluster
        .stage_join(None, Some("elsewhere".into()), None)
        .unwrap();
    let current = m.n0.cluster.apply().await.unwrap().version();
    let old_version = Layout::decode(&Signed::decode(&old.0).unwrap().statement.0)
        .unwrap()
        .version();
    assert!(old_version < current);

    // It answers every layout request with what `serve` holds.
    let serve: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(old.0.clone()));
    let mut rx = liar.events.take().unwrap();
    let (client, held, cert) = (liar.client.clone(), serve.clone(), certificate.clone());
    let liar_id = me.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let NetEvent::InboundRequest {
                request, handle, ..
            } = e
                && let Request::Cluster(req) = *request
            {
                let resp = match req {
                    ClusterRequest::GetLayout { .. } => ClusterResponse::Layout {
                        version: 1000,
                        layout: Some(Bytes(held.lock().unwrap().clone())),
                        history: Vec::new(),
                    },
                    _ => ClusterResponse::Hello {
                        node: info(&liar_id),
                        layout_version: 1000,
                        certificate: Some(cert.clone()),
                        keys_version: 0,
                    },
                };
                let _ = client.respond(handle, Response::Cluster(resp)).await;
            }
        }
    });
    let claim_newer = || ClusterRequest::Hello {
        node: info(&me),
        layout_version: 1000,
        certificate: Some(certificate.clone()),
        keys_version: 0,
    };
    liar.cluster(to, claim_newer()).await;
    wait_until("the replayed layout is refused and audited", async || {
        audited(&m.n0, "cluster_layout").await.iter().any(|e| {
            e.actor == me
                && e.reason
                    .contains(&format!("stale layout version {old_version}"))
        })
    })
    .await;
    assert_eq!(m.n0.cluster.layout_version(), current);

    // A newer layout signed by another key: refused too.
    let forger = ClusterKey::generate();
    let forged = Layout::new(
        1000,
        1,
        PartitionScheme::new(4).unwrap(),
        vec![slurp_protocol::Member {
            id: me.clone(),
            zone: "z".into(),
            capacity: 100,
            address: "/memory/1".into(),
        }],
    )
    .unwrap();
    *serve.lock().unwrap() = forger
        .sign(PURPOSE_LAYOUT, &forged)
        .unwrap()
        .encode()
        .unwrap();
    liar.cluster(to, claim_newer()).await;
    wait_until("the forged layout is refused and audited", async || {
        audited(&m.n0, "cluster_layout")
            .await
            .iter()
            .any(|e| e.actor == me && e.reason.contains("does not verify"))
    })
    .await;
    assert_eq!(m.n0.cluster.layout_version(), current);
    // The other member takes the current layout from n0 (in its own
    // time), never the forged one.
    wait_until("n1 holds the current layout", async || {
        m.n1.cluster.layout_version() == current
    })
    .await;
    assert_eq!(m.n1.cluster.layout_version(), current);
    drop(liar);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_acts_for_a_caller_only_in_roles_it_was_certified_for_and_once() {
    let Members {
        _dir,
        n0,
        n1,
        addr0,
        ..
    } = Members::start().await;
    let n0 = Arc::new(n0);
    // Forwarded calls are served through the API router.
    slurp_node::api::serve_forwarded_calls(&n0, slurp_node::api::router(n0.clone()));
    let peer = Intruder::start(&addr0).await;
    let to = n0.net.peer_id();
    let me = peer.id();
    // A real member, certified for `developer` only.
    let dev = RoleName::new("developer").unwrap();
    let admin = RoleName::new("admin").unwrap();
    let (_, token) = n0.cluster.invite(Some(vec![dev.clone()]), None).unwrap();
    let ClusterResponse::Joined { certificate, .. } = peer
        .cluster(
            to,
            ClusterRequest::Join {
                invite: token.id.clone(),
                secret: token.secret.clone(),
                node: info(&me),
                apply: true,
            },
        )
        .await
    else {
        panic!("the invite was not honoured");
    };
    let signer = slurp_node::cluster::authorise::Authoriser::new(
        peer.keypair.clone(),
        Duration::from_secs(30),
    );
    let whoami = |role: &RoleName| ForwardRequest::Call {
        method: "GET".into(),
        path: "/v1/whoami".into(),
        content_type: None,
        body: Bytes(vec![]),
        caller_role: role.clone(),
        request_id: Some("r".into()),
        proof: None,
        authorisation: None,
    };
    let signed = |role: &RoleName| {
        let mut call = whoami(role);
        let digest = slurp_node::cluster::authorise::forward_digest(&call);
        call.set_authorisation(Some(
            signer
                .sign(&to.to_base58(), role, digest, certificate.clone())
                .unwrap(),
        ));
        call
    };
    let refused = |r: ForwardResponse| match r {
        ForwardResponse::Error(e) if e.code == ErrorCode::Forbidden => e.message,
        other => panic!("expected a refusal, got {other:?}"),
    };

    // As developer, with a statement: served as developer.
    let call = signed(&dev);
    match peer.client.forward(to, call.clone()).await.unwrap() {
        ForwardResponse::Reply { status, body, .. } => {
            assert_eq!(status, 200);
            let v: serde_json::Value = serde_json::from_slice(&body.0).unwrap();
            assert_eq!(v["role"], "developer", "{v}");
        }
        other => panic!("a certified developer was refused: {other:?}"),
    }
    // The same statement again: a replay.
    let why = refused(peer.client.forward(to, call).await.unwrap());
    assert!(why.contains("replay"), "{why}");
    // As admin, which its certificate does not allow.
    let why = refused(peer.client.forward(to, signed(&admin)).await.unwrap());
    assert!(why.contains("not certified for role admin"), "{why}");
    // Without a statement, or with one for another request.
    let why = refused(peer.client.forward(to, whoami(&dev)).await.unwrap());
    assert!(why.contains("no caller authorisation"), "{why}");
    let mut swapped = whoami(&dev);
    swapped.set_authorisation(signed(&dev).authorisation().cloned());
    let ForwardRequest::Call { path, .. } = &mut swapped;
    *path = "/v1/status".into();
    let why = refused(peer.client.forward(to, swapped).await.unwrap());
    assert!(why.contains("another request"), "{why}");
    // A search fanned out as admin: refused the same way.
    let search = SearchRequest::Search {
        query: serde_json::json!({"text": "token"}),
        role: admin.clone(),
        stats: None,
        limit: 10,
        scope: None,
        authorisation: None,
    };
    let mut s = search.clone();
    let digest = slurp_node::cluster::authorise::search_digest(&s);
    s.set_authorisation(Some(
        signer
            .sign(&to.to_base58(), &admin, digest, certificate.clone())
            .unwrap(),
    ));
    match peer.client.search(to, s).await.unwrap() {
        SearchResponse::Error(e) => assert_eq!(e.code, ErrorCode::Forbidden),
        other => panic!("an admin search was served: {other:?}"),
    }
    // Every refusal is audited with its reason.
    let entries = audited(&n0, "caller_authorisation").await;
    for want in [
        "authorisation_replay",
        "role_not_granted",
        "authorisation_missing",
        "authorisation_wrong_request",
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e.actor == me && e.reason.starts_with(want)),
            "{want}: {entries:?}"
        );
    }
    drop(peer);
    n1.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_only_the_keys_its_invite_granted_and_cannot_open_the_rest_from_its_disk() {
    use slurp_node::store::{PutRequest, QuorumOpts};
    use slurp_node::tokens::Principal;
    use slurp_protocol::{ContextNode, UcxlAddress};
    let dir = tempfile::tempdir().unwrap();
    let c0 = config(dir.path(), 0);
    let n0 = Node::open(c0.clone()).await.unwrap();
    n0.cluster.init().await.unwrap();
    let dev = RoleName::new("developer").unwrap();
    let (_, token) = n0.cluster.invite(Some(vec![dev.clone()]), None).unwrap();
    let mut c1 = config(dir.path(), 1);
    c1.net.bootstrap = vec![
        c0.net.listen[0]
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(n0.net.peer_id())),
    ];
    c1.cluster.auto_join = true;
    c1.cluster.join_token = Some(token.to_string());
    let n1 = Node::open(c1).await.unwrap();
    wait_until("node 1 joined and holds its granted keys", async || {
        n0.cluster.layout().is_some_and(|l| l.members().len() == 2)
            && n1.cluster.layout().is_some_and(|l| l.members().len() == 2)
            && n1.cluster.granted_roles_held()
    })
    .await;
    // Only the developer key reached it; it knows the others' public keys.
    let held: Vec<String> = n1
        .custody
        .keyring()
        .held_roles()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(held, ["developer"]);
    assert!(
        n1.custody
            .keyring()
            .current_public(&RoleName::new("architect").unwrap())
            .is_some()
    );
    let on_disk: Vec<String> = n1
        .custody
        .keystore()
        .list()
        .unwrap()
        .iter()
        .map(|k| k.role.to_string())
        .collect();
    assert_eq!(on_disk, ["developer"]);

    let who = |role: &str| Principal {
        token_id: "t".into(),
        role: RoleName::new(role).unwrap(),
    };
    let arch = UcxlAddress::parse("ucxl://a:architect@shop:checkout/*^/docs/adr.md").unwrap();
    let devr = UcxlAddress::parse("ucxl://a:developer@shop:checkout/*^/src/a.rs").unwrap();
    let put = |addr: &UcxlAddress, role: &str| {
        PutRequest::new(ContextNode::new(
            addr.clone(),
            "granted or not",
            vec![RoleName::new(role).unwrap()],
        ))
    };
    let both = QuorumOpts {
        w: Some(2),
        ..QuorumOpts::default()
    };
    for (addr, role) in [(&arch, "architect"), (&devr, "developer")] {
        n0.store
            .put_opts(&who("admin"), put(addr, role), both)
            .await
            .unwrap();
    }
    // Both are on node 1's disk; it opens only the one it was granted.
    assert!(n1.store.local().latest_meta(&arch.key()).unwrap().is_some());
    let got = n1.store.get(&who("developer"), &devr).await.unwrap();
    assert_eq!(got.context.summary, "granted or not");
    let err = n1.store.get(&who("architect"), &arch).await.unwrap_err();
    assert!(err.to_string().contains("no key"), "{err}");
    assert!(n0.store.get(&who("architect"), &arch).await.is_ok());
    // The issuer audited what it granted, by fingerprint.
    let dev_fp = n0
        .custody
        .keyring()
        .current(&dev)
        .unwrap()
        .fingerprint()
        .to_hex();
    let grants = audited(&n0, "key_grant").await;
    let to_n1: Vec<_> = grants
        .iter()
        .filter(|e| e.actor == n1.net.peer_id().to_base58())
        .collect();
    assert!(!to_n1.is_empty());
    for e in to_n1 {
        assert_eq!(e.target, format!("developer/1:{dev_fp}"), "{e:?}");
    }
    n1.close().await;
    n0.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_key_is_split_among_members_and_rebuilt_from_threshold_shares() {
    let dir = tempfile::tempdir().unwrap();
    let split = |mut c: NodeConfig| {
        c.cluster.key_shares = 3;
        c.cluster.key_threshold = 2;
        c
    };
    let c0 = split(config(dir.path(), 0));
    let n0 = Node::open(c0.clone()).await.unwrap();
    n0.cluster.init().await.unwrap();
    let addr0 = c0.net.listen[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(n0.net.peer_id()));
    let mut others = Vec::new();
    for i in 1..3 {
        let mut c = split(config(dir.path(), i));
        c.net.bootstrap = vec![addr0.clone()];
        c.cluster.auto_join = true;
        let (_, token) = n0.cluster.invite(None, None).unwrap();
        c.cluster.join_token = Some(token.to_string());
        others.push(Some(Node::open(c).await.unwrap()));
    }
    wait_until(
        "the key is split: no node holds it whole, each holds a share",
        async || {
            let all = [Some(&n0), others[0].as_ref(), others[1].as_ref()];
            all.iter().all(|n| {
                n.is_some_and(|n| {
                    let c = n.cluster.key_custody();
                    !c.whole && c.share.is_some()
                })
            })
        },
    )
    .await;
    let sets: Vec<String> = [Some(&n0), others[0].as_ref(), others[1].as_ref()]
        .iter()
        .map(|n| n.unwrap().cluster.key_custody().share.unwrap().set)
        .collect();
    assert!(
        sets.iter().all(|s| *s == sets[0]),
        "one share set: {sets:?}"
    );
    // The whole key is gone from the disk that made it.
    assert!(!c0.data_dir.join("keys").join("cluster.secret").exists());

    // A member certified for developer only gets no share, with or
    // without a statement claiming admin.
    let peer = Intruder::start(&addr0).await;
    let to = n0.net.peer_id();
    let dev = RoleName::new("developer").unwrap();
    let admin = RoleName::new("admin").unwrap();
    let (_, token) = n0.cluster.invite(Some(vec![dev]), None).unwrap();
    let ClusterResponse::Joined { certificate, .. } = peer
        .cluster(
            to,
            ClusterRequest::Join {
                invite: token.id.clone(),
                secret: token.secret.clone(),
                node: info(&peer.id()),
                apply: false,
            },
        )
        .await
    else {
        panic!("the invite was not honoured");
    };
    let signer = slurp_node::cluster::authorise::Authoriser::new(
        peer.keypair.clone(),
        Duration::from_secs(30),
    );
    let ask = |auth: bool| {
        let mut req = ClusterRequest::GetShare {
            recipient: slurp_crypto::x25519::Identity::generate()
                .to_public()
                .to_string(),
            reason: "curiosity".into(),
            authorisation: None,
        };
        if auth {
            let digest = slurp_node::cluster::authorise::cluster_digest(&req);
            let signed = signer
                .sign(&to.to_base58(), &admin, digest, certificate.clone())
                .unwrap();
            if let ClusterRequest::GetShare { authorisation, .. } = &mut req {
                *authorisation = Some(signed);
            }
        }
        req
    };
    let why = forbidden_cluster(&peer.cluster(to, ask(true)).await);
    assert!(why.contains("not certified for role admin"), "{why}");
    let why = forbidden_cluster(&peer.cluster(to, ask(false)).await);
    assert!(why.contains("no caller authorisation"), "{why}");
    let denied: Vec<_> = audited(&n0, "share_release")
        .await
        .into_iter()
        .filter(|e| e.actor == peer.id())
        .collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|e| e.decision == slurp_crypto::Decision::Deny && e.target == "curiosity"),
        "{denied:?}"
    );
    drop(peer);

    // Any member certified for admin signs a layout from two shares.
    let n1 = others[0].as_ref().unwrap();
    n1.cluster
        .stage_join(None, Some("z-one".into()), None)
        .unwrap();
    let v = n1.cluster.apply().await.unwrap().version();
    wait_until("node 0 takes the layout node 1 signed", async || {
        n0.cluster.layout_version() == v
    })
    .await;
    // Node 0 released its share to node 1 for that, and said why.
    let n1_peer = n1.net.peer_id().to_base58();
    let released = audited(&n0, "share_release").await;
    assert!(
        released
            .iter()
            .any(|e| e.actor == n1_peer && e.target.starts_with("publish layout version")),
        "{released:?}"
    );
    assert!(!audited(n1, "cluster_key_rebuild").await.is_empty());
    // One holder down: still two shares.
    let n2 = others[1].take().unwrap();
    let n2_peer = n2.net.peer_id();
    n2.close().await;
    wait_until("node 0 sees node 2 down", async || {
        !n0.cluster.peers().is_up(&n2_peer)
    })
    .await;
    n0.cluster
        .stage_join(None, Some("z-zero".into()), None)
        .unwrap();
    let v = n0.cluster.apply().await.unwrap().version();
    assert_eq!(n0.cluster.layout_version(), v);
    // Two holders down: one share is not enough, and the error says so.
    let n1 = others[0].take().unwrap();
    n1.close().await;
    n0.cluster
        .stage_join(None, Some("z-again".into()), None)
        .unwrap();
    match n0.cluster.apply().await {
        Err(slurp_node::cluster::ClusterError::KeyUnavailable(why)) => {
            assert!(why.contains("needs 2 shares, 1 were given"), "{why}")
        }
        other => panic!("signed with one share: {other:?}"),
    }
    n0.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_audit_log_cut_short_with_its_head_file_is_caught_by_the_heads_others_hold() {
    use slurp_node::tokens::Principal;
    let m = Members::start().await;
    let Members {
        _dir,
        n0,
        n1,
        addr0,
        ..
    } = m;
    let who = Principal {
        token_id: "t".into(),
        role: RoleName::new("admin").unwrap(),
    };
    let write = async |i: usize| {
        let addr = slurp_protocol::UcxlAddress::parse(&format!(
            "ucxl://a:developer@shop:checkout/*^/src/x{i}.rs"
        ))
        .unwrap();
        n1.store
            .put(
                &who,
                slurp_node::store::PutRequest::new(slurp_protocol::ContextNode::new(
                    addr,
                    "audited",
                    vec![RoleName::new("developer").unwrap()],
                )),
            )
            .await
            .unwrap();
    };
    write(0).await;
    n1.store.audit().flush().await;
    let data1 = n1.config.data_dir.clone();
    let saved = tempfile::tempdir().unwrap();
    for f in ["audit.log", "audit.log.head"] {
        std::fs::copy(data1.join(f), saved.path().join(f)).unwrap();
    }
    let early = n1.audit_log.head().seq;
    // More entries, then the head goes to node 0.
    for i in 1..6 {
        write(i).await;
    }
    n1.store.audit().flush().await;
    let later = n1.audit_log.head().seq;
    assert!(later > early);
    let runs = n1.workers.get("audit-anchor").unwrap().runs;
    n1.workers.trigger("audit-anchor").unwrap();
    wait_until("node 0 holds node 1's head", async || {
        n1.workers
            .get("audit-anchor")
            .is_some_and(|w| w.runs > runs && w.last_note.contains("held by 1 members"))
    })
    .await;
    // Node 1's log and head file are cut back to the earlier state.
    let c1 = n1.config.clone();
    let p1 = n1.net.peer_id().to_base58();
    n1.close().await;
    for f in ["audit.log", "audit.log.head"] {
        std::fs::copy(saved.path().join(f), data1.join(f)).unwrap();
    }
    let mut c1 = c1;
    c1.net.listen = vec![memory_addr()];
    c1.net.bootstrap = vec![addr0.clone()];
    let n1 = Node::open(c1).await.unwrap();
    wait_until("node 1 is back among the members", async || {
        n1.cluster.peers().is_up(&n0.net.peer_id())
    })
    .await;
    // On its own the log looks whole...
    let local = slurp_node::audit::verify(&n1.audit_log);
    assert!(local.ok, "{local:?}");
    // ...but not against the head node 0 holds.
    let held = n1.cluster.held_heads_of_me().await;
    assert_eq!(held.len(), 1, "{held:?}");
    let (member, head) = &held[0];
    assert_eq!(*member, n0.net.peer_id());
    let head = head.clone().unwrap();
    assert!(head.seq >= later, "{head}");
    let err = n1.audit_log.verify_against(Some(head)).unwrap_err();
    assert!(err.to_string().contains(&head.seq.to_string()), "{err}");
    // Its next head, older than the one held, is refused and audited there.
    n1.workers.trigger("audit-anchor").unwrap();
    wait_until("node 0 audits the log that went back", async || {
        audited(&n0, "audit_anchor")
            .await
            .iter()
            .any(|e| e.actor == p1 && e.reason.contains("went back"))
    })
    .await;
    n1.close().await;
    n0.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_grant_voids_the_older_certificate_everywhere_and_a_rotation_shuts_the_member_out() {
    let m = Members::start().await;
    let dev = RoleName::new("developer").unwrap();
    let obs = RoleName::new("observer").unwrap();
    let to = m.n0.net.peer_id();
    let n1_id = m.n1.net.peer_id().to_base58();

    // A member that lies: certified for developer and observer, it will
    // refuse the certificate that cuts it and keep showing the old one.
    let mut liar = Intruder::start(&m.addr0).await;
    let me = liar.id();
    let old_cert = liar.join(&m, Some(vec![dev.clone(), obs.clone()])).await;
    let mut rx = liar.events.take().unwrap();
    let client = liar.client.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let NetEvent::InboundRequest { handle, .. } = e {
                let no = ClusterResponse::Error(slurp_protocol::messages::RemoteError {
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                });
                let _ = client.respond(handle, Response::Cluster(no)).await;
            }
        }
    });
    let hello = |cert: &Signed| ClusterRequest::Hello {
        node: info(&me),
        layout_version: 0,
        certificate: Some(cert.clone()),
        keys_version: 0,
    };
    let granted = async |liar: &Intruder| -> Vec<(String, u32)> {
        let ask = ClusterRequest::GetKeys {
            recipient: slurp_crypto::x25519::Identity::generate()
                .to_public()
                .to_string(),
        };
        match liar.cluster(to, ask).await {
            ClusterResponse::Keys { grants, .. } => {
                let mut g: Vec<_> = grants
                    .iter()
                    .map(|g| (g.role.to_string(), g.epoch))
                    .collect();
                g.sort();
                g
            }
            ClusterResponse::Error(e) => vec![(format!("refused: {}", e.message), 0)],
            other => panic!("{other:?}"),
        }
    };
    liar.cluster(to, hello(&old_cert)).await;
    assert_eq!(
        granted(&liar).await,
        [("developer".to_string(), 1), ("observer".to_string(), 1)]
    );

    // The admin cuts both members to observer.
    let cut = m.n0.cluster.grant(&me, vec![obs.clone()]).await.unwrap();
    assert!(!cut.delivered, "the liar refused its new certificate");
    let cut1 = m.n0.cluster.grant(&n1_id, vec![obs.clone()]).await.unwrap();
    assert!(cut1.delivered);
    // The real member took it and retired its developer key, on disk too.
    wait_until("node 1 holds only observer keys", async || {
        m.n1.cluster
            .identity()
            .is_some_and(|i| i.cert.roles == [obs.clone()])
            && m.n1.custody.roles() == [obs.clone()]
    })
    .await;
    assert!(
        m.n1.custody
            .keystore()
            .list()
            .unwrap()
            .iter()
            .all(|k| k.role == obs)
    );
    // Node 1 learns the new directory, and with it that the liar's old
    // certificate is void.
    wait_until(
        "node 1 holds the directory that voids the old certificates",
        async || m.n1.cluster.keys_version() == m.n0.cluster.keys_version(),
    )
    .await;
    for n in [&m.n0, &m.n1] {
        let why = n
            .cluster
            .membership()
            .admit_certificate(&me, &old_cert)
            .unwrap_err();
        assert!(why.contains("superseded"), "{why}");
    }

    // Replaying the old certificate gets it nothing more, and is audited.
    liar.cluster(to, hello(&old_cert)).await;
    assert_eq!(granted(&liar).await, [("observer".to_string(), 1)]);
    let hellos = audited(&m.n0, "cluster_hello").await;
    assert!(
        hellos
            .iter()
            .any(|e| e.actor == me && e.reason.contains("superseded")),
        "{hellos:?}"
    );

    // A rotation of the role it lost: the new epoch reaches nobody cut.
    let (epoch, _) = m.n0.cluster.rotate(&dev).await.unwrap();
    assert_eq!(epoch, 2);
    assert_eq!(granted(&liar).await, [("observer".to_string(), 1)]);
    // Node 1 learns the new public key (it seals to it) but not the
    // private one.
    wait_until("node 1 knows developer epoch 2", async || {
        m.n1.cluster.keys_version() == m.n0.cluster.keys_version()
            && m.n1
                .custody
                .keyring()
                .current_public(&dev)
                .map(|k| k.epoch())
                == Some(2)
    })
    .await;
    assert!(
        m.n1.custody.keyring().current(&dev).is_none(),
        "node 1 holds developer epoch {:?}; node 0 holds its certificate for {:?}; node 1's own: {:?}",
        m.n1.custody.keyring().current(&dev).map(|k| k.epoch()),
        m.n0.cluster
            .membership()
            .certificate_of(&n1_id)
            .map(|c| c.roles),
        m.n1.cluster.identity().map(|i| i.cert.roles.clone())
    );
    // The grants are audited with the roles.
    let grants = audited(&m.n0, "cluster_grant").await;
    assert!(grants.iter().any(|e| e.target == me
        && e.reason.contains("[observer]")
        && e.reason.contains("not delivered")));
    assert!(
        grants
            .iter()
            .any(|e| e.target == n1_id && !e.reason.contains("not delivered"))
    );
    drop(liar);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_hands_out_keys_of_its_own_is_refused_and_audited() {
    use slurp_crypto::RoleKey;
    let m = Members::start().await;
    wait_until("node 1 holds its keys", async || {
        m.n1.cluster.granted_roles_held()
    })
    .await;
    let dev = RoleName::new("developer").unwrap();
    let real = m.n1.custody.keyring().current(&dev).unwrap().fingerprint();
    let mut liar = Intruder::start(&m.addr0).await;
    let me = liar.id();
    let certificate = liar.join(&m, None).await;
    wait_until("node 1 has the liar in its layout", async || {
        m.n1.cluster
            .layout()
            .is_some_and(|l| l.members().iter().any(|x| x.id == me))
    })
    .await;
    // It answers GetKeys with a key of its own (a "new epoch"), first
    // under a directory signed by a key of its own, then under none.
    let own = RoleKey::generate(dev.clone(), 9);
    let own_fp = own.fingerprint();
    let forged: Arc<Mutex<Option<Bytes>>> = Arc::new(Mutex::new(None));
    {
        let forger = ClusterKey::generate();
        let dir = slurp_protocol::KeyDirectory {
            cluster: forger.public().id(),
            version: 1000,
            issued_ms: 0,
            keys: vec![slurp_protocol::DirectoryKey {
                role: dev.clone(),
                epoch: 9,
                recipient: own.public().recipient().to_string(),
            }],
            superseded: vec![],
            retired: vec![],
        };
        let signed = forger
            .sign(slurp_protocol::membership::PURPOSE_KEYS, &dir)
            .unwrap();
        *forged.lock().unwrap() = Some(Bytes(signed.encode().unwrap()));
    }
    let mut rx = liar.events.take().unwrap();
    let (client, serve, cert, liar_id) = (
        liar.client.clone(),
        forged.clone(),
        certificate.clone(),
        me.clone(),
    );
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let NetEvent::InboundRequest {
                request, handle, ..
            } = e
                && let Request::Cluster(req) = *request
            {
                let resp = match req {
                    ClusterRequest::GetKeys { recipient } => {
                        let to = recipient.parse().unwrap();
                        ClusterResponse::Keys {
                            directory: serve
                                .lock()
                                .unwrap()
                                .clone()
                                .map(|b| Signed::decode(&b.0).unwrap()),
                            grants: vec![slurp_crypto::seal_grant(&own, &to).unwrap()],
                        }
                    }
                    _ => ClusterResponse::Hello {
                        node: info(&liar_id),
                        layout_version: 0,
                        certificate: Some(cert.clone()),
                        keys_version: 1000,
                    },
                };
                let _ = client.respond(handle, Response::Cluster(resp)).await;
            }
        }
    });
    let boast = || ClusterRequest::Hello {
        node: info(&me),
        layout_version: 0,
        certificate: Some(certificate.clone()),
        keys_version: 1000,
    };
    let to1 = m.n1.net.peer_id();
    liar.client.dial(m.addr1.clone()).await.unwrap();
    liar.cluster(to1, boast()).await;
    wait_until("the forged directory is refused and audited", async || {
        audited(&m.n1, "key_directory")
            .await
            .iter()
            .any(|e| e.actor == me && e.decision == slurp_crypto::Decision::Deny)
    })
    .await;
    *forged.lock().unwrap() = None;
    liar.cluster(to1, boast()).await;
    wait_until("the unlisted key is refused and audited", async || {
        audited(&m.n1, "key_grant").await.iter().any(|e| {
            e.actor == me
                && e.target == own_fp.to_hex()
                && e.reason.contains("not in the signed key directory")
        })
    })
    .await;
    // Node 1 never took the liar's key nor its directory.
    let ring = m.n1.custody.keyring();
    assert!(ring.get(&own_fp).is_none());
    assert_eq!(ring.current(&dev).unwrap().fingerprint(), real);
    assert_eq!(m.n1.cluster.keys_version(), m.n0.cluster.keys_version());
    assert!(
        m.n1.custody
            .keystore()
            .list()
            .unwrap()
            .iter()
            .all(|k| k.fingerprint != own_fp)
    );
    drop(liar);
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_store_envelopes_sealed_to_keys_outside_the_directory_or_its_readers() {
    use slurp_crypto::{Envelope, EnvelopeConfig, PublicRoleKey, RoleKey};
    use slurp_protocol::messages::{PutOutcome as WirePut, ReplicateResponse, SealedVersion};
    use slurp_protocol::{ContextNode, Hlc, RecordMeta, UcxlAddress, VersionId, WriterId};
    let m = Members::start().await;
    let liar = Intruder::start(&m.addr0).await;
    let to = m.n0.net.peer_id();
    let me = liar.id();
    let certificate = liar.join(&m, None).await;
    liar.cluster(
        to,
        ClusterRequest::Hello {
            node: info(&me),
            layout_version: 0,
            certificate: Some(certificate),
            keys_version: 0,
        },
    )
    .await;

    let dev = RoleName::new("developer").unwrap();
    let readers =
        m.n0.store
            .roles()
            .reader_closure(std::slice::from_ref(&dev))
            .unwrap();
    let addr = UcxlAddress::parse("ucxl://liar:developer@shop:checkout/*^/src/forged.rs").unwrap();
    let plain = ContextNode::new(addr.clone(), "forged", vec![dev.clone()])
        .encode()
        .unwrap();
    let meta = |n: u64, readers: Vec<RoleName>| RecordMeta {
        key: addr.key(),
        path: "src/forged.rs".into(),
        version: VersionId {
            hlc: Hlc {
                wall_ms: 1_700_000_000_000 + n,
                logical: 0,
            },
            writer: WriterId::new("liar").unwrap(),
        },
        parent_version: None,
        readers,
        influences: vec![],
        influenced_by: vec![],
        expires_at_ms: None,
        tombstone: false,
    };
    let seal = |to: &[PublicRoleKey]| {
        Bytes(
            Envelope::seal_with(&plain, to, &EnvelopeConfig::default())
                .unwrap()
                .to_bytes()
                .unwrap(),
        )
    };
    let real = m.n0.custody.keyring().recipients_for(&readers).unwrap();
    let own: Vec<PublicRoleKey> = readers
        .iter()
        .map(|r| RoleKey::generate(r.clone(), 1).public().clone())
        .collect();
    let versions = vec![
        // Sealed to keys of its own, named as the roles' epoch 1.
        SealedVersion {
            meta: meta(1, readers.clone()),
            envelope: seal(&own),
        },
        // Sealed to the cluster's keys, but not to the readers it claims.
        SealedVersion {
            meta: meta(2, vec![RoleName::new("observer").unwrap()]),
            envelope: seal(&real),
        },
        // An honest one.
        SealedVersion {
            meta: meta(3, readers.clone()),
            envelope: seal(&real),
        },
    ];
    let answer = liar
        .client
        .replicate(
            to,
            ReplicateRequest::PutVersions {
                versions,
                layout_version: Some(m.n0.cluster.layout_version()),
                write_quorum_id: None,
                hint_for: None,
            },
        )
        .await
        .unwrap();
    let ReplicateResponse::Stored { outcomes } = answer else {
        panic!("{answer:?}");
    };
    let reasons: Vec<String> = outcomes
        .iter()
        .map(|o| match &o.outcome {
            WirePut::Rejected { reason } => reason.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        reasons[0].contains("not in the cluster's key directory"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("but its readers are [observer]"),
        "{reasons:?}"
    );
    assert!(
        matches!(outcomes[2].outcome, WirePut::Stored),
        "{reasons:?}"
    );
    // Only the honest version was stored, and it opens.
    let history = m.n0.store.local().history(&addr.key()).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].version.hlc.wall_ms, 1_700_000_000_003);
    drop(liar);
    m.close().await;
}
