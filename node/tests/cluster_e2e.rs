//! The cluster through the real binary on 127.0.0.1: a node creates the
//! cluster, others join over TCP with invites, a certified node outside
//! the layout forwards API calls to a member, and an admin joins and
//! removes members with the CLI.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, wait};
use serde_json::Value;

fn status(n: &TestNode) -> Value {
    n.json(&n.admin, &["cluster", "status"])
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn members(v: &Value) -> usize {
    v["members"].as_array().map(|m| m.len()).unwrap_or(0)
}

const ADDR: &str = "ucxl://claude:developer@shop:checkout/*^/src/forwarded.rs";

#[test]
fn join_forward_and_leave_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d: Vec<_> = (1..=3).map(|i| dir.path().join(format!("n{i}"))).collect();
    let (n1, boot) = TestNode::start_boot(&d[0], &["--name", "n1"]);
    n1.init_cluster();
    let n2 = TestNode::start_with(
        &d[1],
        &[
            "--bootstrap",
            &boot,
            "--name",
            "n2",
            "--auto-join",
            "--join-token",
            &n1.invite(),
        ],
    );
    // n3 joins without asking to be added: it is certified, learns the
    // layout, but stays outside it.
    let n3 = TestNode::start_with(
        &d[2],
        &[
            "--bootstrap",
            &boot,
            "--name",
            "n3",
            "--join-token",
            &n1.invite(),
        ],
    );
    wait("n1 and n2 form a layout", || members(&status(&n1)) == 2);
    wait("n3 learns the layout", || {
        status(&n3)["layout_version"].as_u64() >= Some(1)
    });
    let s3 = status(&n3);
    assert_eq!(s3["member"], false);
    assert_eq!(members(&s3), 2);

    // A token made on one member works on every member (its hash is
    // looked up there); an unknown one nowhere.
    let dev1 = n1.token("developer");
    n1.ok(&n1.admin, &["put", ADDR, "--summary", "for any member"]);
    let v = n2.json(&dev1, &["get", ADDR]);
    assert_eq!(v["context"]["summary"], "for any member");
    let bogus = format!("{}x", &dev1[..dev1.len() - 1]);
    let out = n2.cli(&bogus, &["get", ADDR]).unwrap();
    assert_eq!(out.status.code(), Some(4));
    let out = n2
        .cli("slurp_0123456789abcdef_nosuchtoken", &["get", ADDR])
        .unwrap();
    assert_eq!(out.status.code(), Some(4));

    // n3 is not a member: it forwards the write to one, as its caller.
    let out = n3.ok(
        &n3.admin,
        &["put", ADDR, "--summary", "through a non-member"],
    );
    assert!(out.contains("stored"), "{out}");
    for n in [&n1, &n2, &n3] {
        let v = n.json(&n.admin, &["get", ADDR]);
        assert_eq!(v["context"]["summary"], "through a non-member");
    }
    // The member that took it audited which peer proved which key.
    let n3_peer = status(&n3)["peer_id"].as_str().unwrap().to_string();
    let admin_fp = n1.json(&n1.admin, &["keys", "list"])["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["role"] == "admin" && k["current"] == true)
        .unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let forwarded: Vec<Value> = [&n1, &n2]
        .iter()
        .flat_map(|n| {
            let tail = n.json(&n.admin, &["audit", "tail", "-n", "200"]);
            tail["entries"].as_array().unwrap().clone()
        })
        .filter(|e| e["action"] == "forward" && e["actor"] == n3_peer.as_str())
        .collect();
    assert!(!forwarded.is_empty(), "no forward entry from {n3_peer}");
    for e in &forwarded {
        assert_eq!(e["decision"], "allow", "{e}");
        assert_eq!(e["role"], "admin", "{e}");
        assert_eq!(e["reason"], format!("proved key {admin_fp}"), "{e}");
    }
    // Forwarded calls keep the caller's role: a developer token of n3
    // cannot read an architect record through n1.
    let arch = "ucxl://claude:architect@shop:checkout/*^/docs/adr.md";
    n1.ok(&n1.admin, &["put", arch, "--summary", "architects only"]);
    let dev = n3.token("developer");
    let out = n3.cli(&dev, &["get", arch]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = n3.ok(&n3.admin, &["cluster", "status"]);
    assert!(text.contains("members (2)"), "{text}");
    let w = n3.json(&n3.admin, &["cluster", "where", ADDR]);
    assert_eq!(w["replicas"].as_array().unwrap().len(), 2);

    // An admin joins n3 from n1, then removes n2. Only n1 holds the
    // cluster key, so only n1 can publish the change.
    let p3 = status(&n3)["peer_id"].as_str().unwrap().to_string();
    let v = n1.json(
        &n1.admin,
        &["cluster", "join", &p3, "--zone", "z3", "--apply"],
    );
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    wait("n3 becomes a member", || status(&n3)["member"] == true);
    let p2 = status(&n2)["peer_id"].as_str().unwrap().to_string();
    n3.ok(&n3.admin, &["cluster", "remove", &p2]);
    let out = n3.cli(&n3.admin, &["cluster", "apply", "--json"]).unwrap();
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"]["code"], "key_unavailable", "{err}");
    n1.ok(&n1.admin, &["cluster", "remove", &p2]);
    let staged = status(&n1);
    assert_eq!(staged["staged"]["remove"][0], p2.as_str());
    let applied = n1.json(&n1.admin, &["cluster", "apply"]);
    let version = applied["version"].as_u64();
    let converged = || {
        [&n1, &n2, &n3].iter().all(|n| {
            let s = status(n);
            // The removal is a layout transition: n2 drains, then the
            // members stop answering it.
            members(&s) == 2 && s["layout_version"].as_u64() == version && s["transition"].is_null()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !converged() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        converged(),
        "every node drops n2: {:?}",
        [&n1, &n2, &n3]
            .iter()
            .map(|n| (status(n)["layout_version"].clone(), members(&status(n))))
            .collect::<Vec<_>>()
    );
    assert_eq!(status(&n2)["member"], false);
    // The members refuse the removed node, although its certificate has
    // not expired: it can no longer write through them.
    let out = n2
        .cli(
            &n2.admin,
            &["put", ADDR, "--summary", "from a removed node"],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not a member of this cluster"), "{stderr}");
    // Writes and reads keep working through the members.
    n3.ok(&n3.admin, &["put", ADDR, "--summary", "after n2 left"]);
    let v = n1.json(&n1.admin, &["get", ADDR]);
    assert_eq!(v["context"]["summary"], "after n2 left");
    // Only admins change the layout.
    let out = n1
        .cli(&n1.token("developer"), &["cluster", "apply"])
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
}

/// Replication, read repair and search across nodes carry only sealed
/// envelopes to replicas: no node's data directory or debug log holds a
/// context's plaintext, including the replicas that never saw a request.
#[test]
fn replicas_hold_only_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let d: Vec<_> = (1..=3).map(|i| dir.path().join(format!("n{i}"))).collect();
    let (mut n1, boot) = TestNode::start_boot_logging(&d[0], &[], "debug");
    n1.init_cluster();
    let join = n1.joining(&boot);
    let mut n2 = TestNode::start_logging(&d[1], &args(&join), "debug");
    let join = n1.joining(&boot);
    let mut n3 = TestNode::start_logging(&d[2], &args(&join), "debug");
    wait("three members", || {
        [&n1, &n2, &n3].iter().all(|n| members(&status(n)) == 3)
    });
    let marker = "WOMBATMARKER4417";
    for i in 0..12 {
        n1.ok(
            &n1.admin,
            &[
                "put",
                &format!("ucxl://claude:developer@shop:checkout/*^/src/w{i}.rs"),
                "--summary",
                &format!("{marker} summary {i}"),
                "--insight",
                &format!("{marker} insight"),
                "--w",
                "3",
            ],
        );
    }
    // Reads through the other nodes, and a search fanned out from one.
    for n in [&n2, &n3] {
        let v = n.json(
            &n.admin,
            &["get", "ucxl://claude:developer@shop:checkout/*^/src/w3.rs"],
        );
        assert!(v["context"]["summary"].as_str().unwrap().contains(marker));
    }
    wait("search finds them", || {
        n3.json(&n3.admin, &["search", marker])["total_hits"] == 12
    });
    // Every node holds every context (RF 3): the scan below covers replicas.
    for n in [&n1, &n2, &n3] {
        let keys = n.json(&n.admin, &["status"])["store"]["keys"]
            .as_u64()
            .unwrap();
        assert!(keys >= 12, "{keys} keys");
    }
    for n in [&mut n1, &mut n2, &mut n3] {
        n.stop();
    }
    let needles = [
        marker.as_bytes().to_vec(),
        marker.to_lowercase().into_bytes(),
    ];
    for (i, n) in [&n1, &n2, &n3].iter().enumerate() {
        let files = common::files_under(&d[i]);
        assert!(files.iter().any(|f| f.ends_with("store.redb")));
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            for needle in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "plaintext marker found in {}",
                    f.display()
                );
            }
        }
        let log = n.log();
        assert!(!log.is_empty());
        assert!(
            !log.contains(marker) && !log.to_lowercase().contains(&marker.to_lowercase()),
            "marker in the log of node {}",
            i + 1
        );
    }
}
