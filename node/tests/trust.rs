//! Authority that must not lapse: a write over a deleted version needs the
//! authority of a write over the live one, and API tokens limited to
//! networks and to a validity window are refused outside them. Every
//! refusal is a 403 with its own code, and is in the audit log.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestNode, http, peer_id, wait};
use serde_json::{Value, json};
use slurp_crypto::{AuditAction, AuditConfig, AuditEntry, AuditFilter, AuditLog, Decision};
use slurp_node::config::NodeConfig;
use slurp_node::error::StoreError;
use slurp_node::node::Node;
use slurp_node::store::PutRequest;
use slurp_node::tokens::Principal;
use slurp_protocol::{ContextNode, RecordMeta, RoleName, UcxlAddress, VersionId};

const ARCH: &str = "ucxl://claude:architect@slurp:core/*^/docs/adr-9.md";
const ARCH_KEY_ADDR: &str = "ucxl://claude:architect@slurp:core/*^/docs/adr-10.md";

fn who(role: &str) -> Principal {
    Principal {
        token_id: format!("test-{role}"),
        role: RoleName::new(role).unwrap(),
    }
}

fn ctx(addr: &str, summary: &str, roles: &[&str]) -> ContextNode {
    ContextNode::new(
        UcxlAddress::parse(addr).unwrap(),
        summary,
        roles.iter().map(|r| RoleName::new(*r).unwrap()).collect(),
    )
}

async fn lone_node(dir: &Path) -> Node {
    let config = NodeConfig {
        data_dir: dir.join("data"),
        ..NodeConfig::default()
    };
    Node::open(config).await.unwrap()
}

/// The denials the node's audit log holds for `actor`.
async fn denials_of(node: &Node, actor: &str) -> Vec<AuditEntry> {
    node.store.audit().flush().await;
    node.audit_log
        .query(&AuditFilter {
            actor: Some(actor.to_string()),
            decision: Some(Decision::Deny),
            ..AuditFilter::default()
        })
        .unwrap()
}

/// Stores a tombstone as nodes wrote them before tombstones carried the
/// readers of the version they delete: no readers at all.
async fn legacy_tombstone(node: &Node, addr: &str, parent: Option<&VersionId>) {
    let key = UcxlAddress::parse(addr).unwrap().key();
    let after = parent.map(|p| p.hlc.wall_ms).unwrap_or(1_000);
    let version: VersionId = format!("{}.0@legacy-writer", after + 1).parse().unwrap();
    let meta = RecordMeta {
        key: key.clone(),
        path: "docs/adr.md".into(),
        version,
        parent_version: parent.cloned(),
        readers: vec![],
        influences: vec![],
        influenced_by: vec![],
        expires_at_ms: None,
        tombstone: true,
    };
    let r = node
        .store
        .local()
        .put_many(vec![slurp_storage::NewVersion {
            meta,
            envelope: Vec::new(),
        }])
        .await;
    assert!(r.iter().all(|o| o.is_ok()), "{r:?}");
}

/// Writes an architect-only record at `ARCH` and deletes it; returns its
/// address and the tombstone.
async fn deleted_architect_record(node: &Node) -> (UcxlAddress, slurp_node::store::PutResult) {
    let arch = who("architect");
    let a = UcxlAddress::parse(ARCH).unwrap();
    node.store
        .put(
            &arch,
            PutRequest::new(ctx(ARCH, "the plan", &["architect"])),
        )
        .await
        .unwrap();
    let gone = node.store.delete(&arch, &a).await.unwrap();
    (a, gone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_over_a_deleted_version_needs_the_authority_of_a_put_over_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = lone_node(dir.path()).await;
    let s = &node.store;
    let (arch, dev) = (who("architect"), who("developer"));
    let (a, gone) = deleted_architect_record(&node).await;
    // The tombstone carries the readers of the version it deleted.
    assert!(gone.readers.contains(&arch.role));
    assert!(!gone.readers.contains(&dev.role));

    // A developer may not write over the deleted architect record ...
    let e = s
        .put(&dev, PutRequest::new(ctx(ARCH, "mine now", &["developer"])))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }), "{e}");
    assert!(matches!(
        s.get(&arch, &a).await,
        Err(StoreError::Deleted { .. })
    ));
    let denied = denials_of(&node, "test-developer").await;
    assert!(
        denied
            .iter()
            .any(|e| e.action == AuditAction::Write && e.target == a.key()),
        "{denied:?}"
    );
    // ... and the architect may, as over the live version.
    let back = s
        .put(
            &arch,
            PutRequest::new(ctx(ARCH, "the plan again", &["architect"])),
        )
        .await
        .unwrap();
    assert_eq!(back.parent, Some(gone.version));
    assert_eq!(
        s.get(&arch, &a).await.unwrap().context.summary,
        "the plan again"
    );

    // A role still revives what it deleted itself.
    let d = "ucxl://claude:developer@slurp:core/*^/src/lib.rs";
    s.put(&dev, PutRequest::new(ctx(d, "lib", &["developer"])))
        .await
        .unwrap();
    s.delete(&dev, &UcxlAddress::parse(d).unwrap())
        .await
        .unwrap();
    s.put(&dev, PutRequest::new(ctx(d, "lib again", &["developer"])))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_reader_of_a_deleted_record_learns_that_it_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let node = lone_node(dir.path()).await;
    let s = &node.store;
    let (arch, dev) = (who("architect"), who("developer"));
    let (a, _) = deleted_architect_record(&node).await;
    // The architect sees "deleted"; the developer is refused as for the
    // live record, not told that something was there.
    assert!(matches!(
        s.get(&arch, &a).await,
        Err(StoreError::Deleted { .. })
    ));
    for e in [
        s.get(&dev, &a).await.unwrap_err(),
        s.get(&dev, &a.with_temporal(slurp_protocol::Temporal::Version(2)))
            .await
            .unwrap_err(),
        s.delete(&dev, &a).await.unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::Forbidden { .. }), "{e}");
    }
    let denied = denials_of(&node, "test-developer").await;
    assert!(denied.iter().any(|e| e.target == a.key()), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_without_readers_fall_back_to_the_deleted_version_or_to_master() {
    let dir = tempfile::tempdir().unwrap();
    let node = lone_node(dir.path()).await;
    let s = &node.store;
    let (arch, dev, admin) = (who("architect"), who("developer"), who("admin"));

    // A legacy tombstone over an architect record: the readers of the
    // version it deleted decide.
    let live = s
        .put(
            &arch,
            PutRequest::new(ctx(ARCH, "old plan", &["architect"])),
        )
        .await
        .unwrap();
    legacy_tombstone(&node, ARCH, Some(&live.version.parse().unwrap())).await;
    let e = s
        .put(&dev, PutRequest::new(ctx(ARCH, "mine now", &["developer"])))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }), "{e}");
    s.put(
        &arch,
        PutRequest::new(ctx(ARCH, "new plan", &["architect"])),
    )
    .await
    .unwrap();

    // A legacy tombstone whose deleted version is not there: only a role
    // of master authority may write over it.
    legacy_tombstone(&node, ARCH_KEY_ADDR, None).await;
    let e = s
        .put(
            &arch,
            PutRequest::new(ctx(ARCH_KEY_ADDR, "plan", &["architect"])),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Forbidden { .. }), "{e}");
    s.put(
        &admin,
        PutRequest::new(ctx(ARCH_KEY_ADDR, "plan", &["architect"])),
    )
    .await
    .unwrap();
    assert_eq!(denials_of(&node, "test-developer").await.len(), 1);
    assert_eq!(denials_of(&node, "test-architect").await.len(), 1);
}

// ---- over HTTP, with the real binary ----------------------------------

/// A token made by the node's admin through the API: (id, token).
fn make_token(node: &TestNode, body: Value) -> (String, String) {
    let r = http()
        .post(format!("{}/v1/tokens", node.url))
        .bearer_auth(&node.admin)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

fn put_body(addr: &str, summary: &str, role: &str) -> Value {
    json!({"context": {"address": addr, "path": "docs/adr.md", "summary": summary, "encrypted_for": [role]}})
}

fn put(node: &TestNode, token: &str, body: &Value) -> reqwest::blocking::Response {
    http()
        .post(format!("{}/v1/contexts", node.url))
        .bearer_auth(token)
        .json(body)
        .send()
        .unwrap()
}

/// The audit entries of a running node: its log and head copied aside and
/// opened there (the node keeps writing to its own), polled until `want`
/// finds an entry or 90 s passed (a liveness bound: the node appends within
/// `audit.linger`).
fn audited(data: &Path, want: impl Fn(&AuditEntry) -> bool) -> AuditEntry {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let copy = tempfile::tempdir().unwrap();
        let log = copy.path().join("audit.log");
        // The head first: the log is then at least as long as the head says.
        std::fs::copy(
            data.join("audit.log.head"),
            copy.path().join("audit.log.head"),
        )
        .unwrap();
        std::fs::copy(data.join("audit.log"), &log).unwrap();
        let entries = AuditLog::open(&log, AuditConfig::default())
            .unwrap()
            .query(&AuditFilter::default())
            .unwrap();
        if let Some(e) = entries.into_iter().find(|e| want(e)) {
            return e;
        }
        assert!(Instant::now() < deadline, "no such audit entry");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn error_code(r: reqwest::blocking::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn over_http_a_developer_cannot_write_over_a_deleted_architect_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = TestNode::start(&data);
    let (_, arch) = make_token(&node, json!({"role": "architect"}));
    let (dev_id, dev) = make_token(&node, json!({"role": "developer"}));
    let r = put(&node, &arch, &put_body(ARCH, "the plan", "architect"));
    assert_eq!(r.status(), 201);
    let r = http()
        .delete(format!("{}/v1/contexts", node.url))
        .query(&[("address", ARCH)])
        .bearer_auth(&arch)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let (status, code, message) =
        error_code(put(&node, &dev, &put_body(ARCH, "mine", "developer")));
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{message}");
    let key = UcxlAddress::parse(ARCH).unwrap().key();
    let e = audited(&data, |e| {
        e.actor == dev_id && e.decision == Decision::Deny && e.target == key
    });
    assert_eq!(e.action, AuditAction::Write);
    assert_eq!(e.role.as_ref().map(|r| r.as_str()), Some("developer"));

    let r = put(&node, &arch, &put_body(ARCH, "the plan again", "architect"));
    assert_eq!(r.status(), 201);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn whoami(node: &TestNode, token: &str) -> reqwest::blocking::Response {
    http()
        .get(format!("{}/v1/whoami", node.url))
        .bearer_auth(token)
        .send()
        .unwrap()
}

/// The audited refusal of token `id`'s use, with its reason.
fn refusal_audited(data: &Path, id: &str, code: &str) -> AuditEntry {
    let e = audited(data, |e| {
        e.actor == id && e.decision == Decision::Deny && e.reason.starts_with(code)
    });
    assert_eq!(e.action, AuditAction::Other("authenticate".into()));
    assert_eq!(e.target, "GET /v1/whoami");
    e
}

#[test]
fn over_http_tokens_are_refused_outside_their_networks_and_window() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = TestNode::start(&data);

    // Networks: the client is 127.0.0.1 (the connection's address).
    let (far_id, far) = make_token(
        &node,
        json!({"role": "developer", "allow_from": ["10.0.0.0/8"]}),
    );
    let (status, code, message) = error_code(whoami(&node, &far));
    assert_eq!((status, code.as_str()), (403, "token_network"), "{message}");
    assert!(
        message.contains("127.0.0.1") && message.contains("10.0.0.0/8"),
        "{message}"
    );
    // A forged forwarding header changes nothing.
    let r = http()
        .get(format!("{}/v1/whoami", node.url))
        .bearer_auth(&far)
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let e = refusal_audited(&data, &far_id, "token_network");
    assert_eq!(e.role.as_ref().map(|r| r.as_str()), Some("developer"));

    let (_, near) = make_token(
        &node,
        json!({"role": "developer", "allow_from": ["10.0.0.0/8", "127.0.0.0/8"]}),
    );
    let r = whoami(&node, &near);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["role"], "developer");

    // A window that has not begun.
    let (early_id, early) = make_token(
        &node,
        json!({"role": "developer", "not_before": now_ms() + 3_600_000}),
    );
    let (status, code, message) = error_code(whoami(&node, &early));
    assert_eq!(
        (status, code.as_str()),
        (403, "token_not_yet_valid"),
        "{message}"
    );
    refusal_audited(&data, &early_id, "token_not_yet_valid");

    // A window that ends: used after its end.
    let r = http()
        .post(format!("{}/v1/tokens", node.url))
        .bearer_auth(&node.admin)
        .json(&json!({"role": "developer", "valid_for": "1s"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().unwrap();
    let (late_id, late) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    let end = v["not_after_ms"].as_u64().unwrap();
    while now_ms() <= end + 50 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, code, message) = error_code(whoami(&node, &late));
    assert_eq!((status, code.as_str()), (403, "token_expired"), "{message}");
    refusal_audited(&data, &late_id, "token_expired");

    // A window in RFC 3339 that holds now.
    let (_, open) = make_token(
        &node,
        json!({"role": "developer", "not_before": "2020-01-01T00:00:00Z", "not_after": now_ms() + 3_600_000}),
    );
    assert_eq!(whoami(&node, &open).status(), 200);

    // Limits nobody could use, or that do not parse, are refused.
    for body in [
        json!({"role": "developer", "allow_from": ["10.0.0.0/33"]}),
        json!({"role": "developer", "allow_from": ["example.com"]}),
        json!({"role": "developer", "not_after": "2020-01-01T00:00:00Z"}),
        json!({"role": "developer", "not_before": now_ms() + 10_000, "not_after": now_ms() + 5_000}),
        json!({"role": "developer", "not_after": "next tuesday"}),
        json!({"role": "developer", "valid_for": "1h", "not_after": now_ms() + 5_000}),
        json!({"role": "developer", "valid_for": "a while"}),
    ] {
        let r = http()
            .post(format!("{}/v1/tokens", node.url))
            .bearer_auth(&node.admin)
            .json(&body)
            .send()
            .unwrap();
        let (status, code, message) = error_code(r);
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_request"),
            "{body}: {message}"
        );
    }

    // The list shows the limits.
    let list = node.json(&node.admin, &["token", "list"]);
    let far_entry = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == far_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(far_entry["allow_from"], json!(["10.0.0.0/8"]));
    assert!(far_entry["not_after_ms"].is_null());
    let text = node.ok(&node.admin, &["token", "list"]);
    assert!(text.contains("from 10.0.0.0/8"), "{text}");
}

#[test]
fn the_cli_creates_tokens_with_limits() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    let before = now_ms();
    let v = node.json(
        &node.admin,
        &[
            "token",
            "create",
            "developer",
            "--allow-from",
            "127.0.0.0/8",
            "--allow-from",
            "::1",
            "--valid-for",
            "1h",
        ],
    );
    assert_eq!(v["allow_from"], json!(["127.0.0.0/8", "::1/128"]));
    let end = v["not_after_ms"].as_u64().unwrap();
    assert!(
        end >= before + 3_600_000 && end <= now_ms() + 3_600_000,
        "{v}"
    );
    let token = v["token"].as_str().unwrap();
    assert_eq!(node.json(token, &["whoami"])["role"], "developer");

    let v = node.json(
        &node.admin,
        &[
            "token",
            "create",
            "developer",
            "--allow-from",
            "10.0.0.0/8",
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2999-01-01T00:00:00Z",
        ],
    );
    assert_eq!(v["not_before_ms"], 1_577_836_800_000u64);
    let far = v["token"].as_str().unwrap();
    let out = node.cli(far, &["whoami", "--json"]).unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["code"], "token_network", "{err}");

    // --valid-for and --not-after contradict each other.
    let out = node
        .cli(
            &node.admin,
            &[
                "token",
                "create",
                "developer",
                "--valid-for",
                "1h",
                "--not-after",
                "2999-01-01T00:00:00Z",
            ],
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A network that does not parse is refused by the node.
    let out = node
        .cli(
            &node.admin,
            &[
                "token",
                "create",
                "developer",
                "--allow-from",
                "10.0.0.0/40",
            ],
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
}

// ---- in a cluster, with the real binary --------------------------------

#[test]
fn every_cluster_member_enforces_token_limits_and_tombstone_readers() {
    let dir = tempfile::tempdir().unwrap();
    let d: Vec<_> = (1..=3).map(|i| dir.path().join(format!("n{i}"))).collect();
    let (n1, boot) = TestNode::start_boot(&d[0], &["--name", "n1"]);
    n1.init_cluster();
    let mut a2 = n1.joining(&boot);
    a2.extend(["--name".to_string(), "n2".to_string()]);
    let n2 = TestNode::start_with(&d[1], &a2.iter().map(String::as_str).collect::<Vec<_>>());
    // n3 is certified but stays outside the layout: it forwards data calls
    // to a member.
    let t3 = n1.invite();
    let n3 = TestNode::start_with(
        &d[2],
        &["--bootstrap", &boot, "--name", "n3", "--join-token", &t3],
    );
    let members = |n: &TestNode| {
        n.json(&n.admin, &["cluster", "status"])["members"]
            .as_array()
            .map(|m| m.len())
            .unwrap_or(0)
    };
    wait("n1 and n2 form a layout", || {
        members(&n1) == 2 && members(&n2) == 2
    });
    wait("n3 learns the layout", || members(&n3) == 2);

    // A token made on n1 keeps its limits on n2, which looks it up there.
    let (far_id, far) = make_token(
        &n1,
        json!({"role": "developer", "allow_from": ["10.0.0.0/8"]}),
    );
    let (status, code, message) = error_code(whoami(&n2, &far));
    assert_eq!((status, code.as_str()), (403, "token_network"), "{message}");
    refusal_audited(&d[1], &far_id, "token_network");
    let (_, late) = make_token(
        &n1,
        json!({"role": "developer", "not_before": now_ms() + 3_600_000}),
    );
    let (status, code, _) = error_code(whoami(&n2, &late));
    assert_eq!((status, code.as_str()), (403, "token_not_yet_valid"));
    let (_, near) = make_token(
        &n1,
        json!({"role": "developer", "allow_from": ["127.0.0.0/8"]}),
    );
    assert_eq!(whoami(&n2, &near).status(), 200);

    // A non-member checks the limits of its tokens before forwarding.
    let (_, far3) = make_token(
        &n3,
        json!({"role": "developer", "allow_from": ["10.0.0.0/8"]}),
    );
    let r = http()
        .get(format!("{}/v1/contexts", n3.url))
        .query(&[("address", ARCH)])
        .bearer_auth(&far3)
        .send()
        .unwrap();
    let (status, code, message) = error_code(r);
    assert_eq!((status, code.as_str()), (403, "token_network"), "{message}");

    // A deleted architect record: a developer may not write over it through
    // any member, nor through the non-member; an architect may.
    let (_, arch) = make_token(&n1, json!({"role": "architect"}));
    assert_eq!(
        put(&n1, &arch, &put_body(ARCH, "the plan", "architect")).status(),
        201
    );
    let r = http()
        .delete(format!("{}/v1/contexts", n1.url))
        .query(&[("address", ARCH)])
        .bearer_auth(&arch)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let (dev_id, dev) = make_token(&n2, json!({"role": "developer"}));
    let (status, code, message) = error_code(put(&n2, &dev, &put_body(ARCH, "mine", "developer")));
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{message}");
    let key = UcxlAddress::parse(ARCH).unwrap().key();
    audited(&d[1], |e| {
        e.actor == dev_id && e.decision == Decision::Deny && e.target == key
    });
    let (_, dev3) = make_token(&n3, json!({"role": "developer"}));
    let (status, code, message) = error_code(put(&n3, &dev3, &put_body(ARCH, "mine", "developer")));
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{message}");
    assert_eq!(
        put(&n2, &near, &put_body(ARCH, "mine", "developer")).status(),
        403
    );
    assert_eq!(
        put(&n2, &arch, &put_body(ARCH, "the plan again", "architect")).status(),
        201
    );
}

/// The intrusion of the security review, as a test: a node with a fresh
/// data directory, nothing copied, bootstraps to a member. With
/// `--auto-join` and no invite it does not even start; with a cluster of
/// its own it is not added, its tokens mean nothing to the members, and it
/// can neither read, write, list nor learn addresses.
#[test]
fn a_foreign_node_bootstrapping_to_a_member_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d: Vec<_> = ["n1", "n2", "foreign"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    let (n1, boot) = TestNode::start_boot(&d[0], &["--name", "n1"]);
    n1.init_cluster();
    let a2 = n1.joining(&boot);
    let n2 = TestNode::start_with(&d[1], &a2.iter().map(String::as_str).collect::<Vec<_>>());
    let members = |n: &TestNode| {
        n.json(&n.admin, &["cluster", "status"])["members"]
            .as_array()
            .map(|m| m.len())
            .unwrap_or(0)
    };
    wait("n1 and n2 form a layout", || {
        members(&n1) == 2 && members(&n2) == 2
    });
    let secret = "ucxl://claude:architect@shop:checkout/*^/docs/secret.md";
    n1.ok(&n1.admin, &["put", secret, "--summary", "architects only"]);

    // --auto-join without an invite: refused at start, nothing listens.
    let out = std::process::Command::new(common::BIN)
        .args(["node", "run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&d[2])
        .args(["--bootstrap", &boot, "--auto-join"])
        .env_remove("SLURP_NODE")
        .env_remove("SLURP_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs cluster.join_token"), "{stderr}");
    // A made-up invite for this cluster: refused by the issuer, audited.
    let cluster_id = n1.json(&n1.admin, &["cluster", "status"])["cluster"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = format!(
        "slurp-join-v1.{cluster_id}.{}.inv0123456789abcdef.{}",
        peer_id(&d[0]),
        "0".repeat(64)
    );
    let foreign = TestNode::spawn(
        &d[2],
        &["--bootstrap", &boot, "--auto-join", "--join-token", &forged],
        "info",
    );
    wait("the forged invite is refused", || {
        foreign.json(&foreign.admin, &["cluster", "status"])["join_error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid join token"))
    });
    let refused = audited(&d[0], |e| {
        e.action.to_string() == "cluster_join" && e.decision == Decision::Deny
    });
    assert!(refused.reason.starts_with("invite_unknown"), "{refused:?}");

    // With a cluster of its own, connected to n1.
    foreign.init_cluster();
    let fpeer = peer_id(&d[2]);
    let p1 = peer_id(&d[0]);
    wait("the foreign node is connected to n1", || {
        foreign.json(&foreign.admin, &["cluster", "status"])["others"]
            .as_array()
            .is_some_and(|o| {
                o.iter()
                    .any(|p| p["peer_id"] == p1.as_str() && p["connected"] == true)
            })
    });
    let s1 = n1.json(&n1.admin, &["cluster", "status"]);
    let ids: Vec<&str> = s1["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&fpeer.as_str()));
    // Its admin token means nothing to the members.
    for n in [&n1, &n2] {
        let r = http()
            .get(format!("{}/v1/whoami", n.url))
            .bearer_auth(&foreign.admin)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    // It reads, lists and searches only its own (empty) store, and what it
    // writes stays with it.
    let out = foreign.cli(&foreign.admin, &["get", secret]).unwrap();
    assert!(!out.status.success());
    let listed = foreign.json(&foreign.admin, &["list", "ucxl://any:any@any:any/*^/"]);
    assert!(!listed.to_string().contains("secret.md"), "{listed}");
    let mine = "ucxl://x:developer@shop:checkout/*^/src/foreign.rs";
    foreign.ok(&foreign.admin, &["put", mine, "--summary", "from outside"]);
    let out = n1.cli(&n1.admin, &["get", mine]).unwrap();
    assert_eq!(out.status.code(), Some(3), "not found on the members");
    // It learned no member's name, zone or addresses.
    let fs = foreign.json(&foreign.admin, &["cluster", "status"]);
    assert_eq!(fs["members"].as_array().unwrap().len(), 1, "{fs}");
    for p in fs["others"].as_array().into_iter().flatten() {
        assert!(p["name"].is_null(), "{p}");
        assert!(p["api_addr"].is_null(), "{p}");
    }
    assert_ne!(fs["cluster"], s1["cluster"]);
}

/// Tokens are a replicated list: a token made on one member works on the
/// others from their own copy, and revoking it on a member that did not
/// make it refuses it everywhere. Prints how long the revocation took to
/// reach every member (docs/security.md records it).
#[test]
fn tokens_are_replicated_and_a_revocation_on_any_member_reaches_every_other() {
    let dir = tempfile::tempdir().unwrap();
    let d: Vec<_> = (1..=3).map(|i| dir.path().join(format!("n{i}"))).collect();
    let (n1, boot) = TestNode::start_boot(&d[0], &["--name", "n1"]);
    n1.init_cluster();
    let a2 = n1.joining(&boot);
    let n2 = TestNode::start_with(&d[1], &a2.iter().map(String::as_str).collect::<Vec<_>>());
    let a3 = n1.joining(&boot);
    let n3 = TestNode::start_with(&d[2], &a3.iter().map(String::as_str).collect::<Vec<_>>());
    let members = |n: &TestNode| {
        n.json(&n.admin, &["cluster", "status"])["members"]
            .as_array()
            .map(|m| m.len())
            .unwrap_or(0)
    };
    wait("three members", || {
        [&n1, &n2, &n3].iter().all(|n| members(n) == 3)
    });
    let (id, token) = make_token(&n2, json!({"role": "developer"}));
    // Every member keeps the record (the secret's hash, never the secret).
    for (n, data) in [(&n1, &d[0]), (&n3, &d[2])] {
        wait("the token is replicated", || {
            std::fs::read_to_string(data.join("tokens.json")).is_ok_and(|t| t.contains(&id))
        });
        let file = std::fs::read_to_string(data.join("tokens.json")).unwrap();
        assert!(!file.contains(token.rsplit('_').next().unwrap()));
        assert_eq!(whoami(n, &token).status().as_u16(), 200);
    }
    // Revoked on n3, which did not make it.
    let out = n3.cli(&n3.admin, &["token", "revoke", &id]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    wait("the revocation reaches every member", || {
        [&n1, &n2, &n3]
            .iter()
            .all(|n| whoami(n, &token).status().as_u16() == 401)
    });
    println!(
        "revocation reached every member in {} ms",
        start.elapsed().as_millis()
    );
}
