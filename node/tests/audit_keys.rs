//! Operators read a node's audit log and its keys over the API: the tail
//! shows the decisions of calls just made, verification finds an edited
//! entry, and every key is named by the fingerprint its key file records.
//! All of it is for admins only, and asking is itself audited.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, TestNode, http};
use serde_json::Value;
use slurp_crypto::{Keystore, KeystoreConfig, NodeKey, Unlock};

const ARCH_ADDR: &str = "ucxl://claude:architect@slurp:core/*^/docs/adr-3.md";

fn is_fingerprint(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Overwrites the first occurrence of `from` in the file with `to` (same
/// length), in place: the running node keeps appending behind it.
fn edit_in_place(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("bytes to edit");
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(to).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn audit_tail_shows_calls_just_made_and_verify_finds_an_edit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = TestNode::start(&data);
    let admin = node.admin.clone();
    let dev_token = node.json(&admin, &["token", "create", "developer"]);
    let (dev_id, dev) = (
        dev_token["id"].as_str().unwrap().to_string(),
        dev_token["token"].as_str().unwrap().to_string(),
    );
    let arch = node.token("architect");
    node.ok(
        &arch,
        &[
            "put",
            ARCH_ADDR,
            "--summary",
            "secret plan",
            "--roles",
            "architect",
        ],
    );
    // A denied read.
    assert_eq!(
        node.cli(&dev, &["get", ARCH_ADDR]).unwrap().status.code(),
        Some(4)
    );

    let tail = node.json(&admin, &["audit", "tail", "-n", "100"]);
    let entries = tail["entries"].as_array().unwrap();
    assert!(tail["error"].is_null(), "{tail}");
    let denied = entries
        .iter()
        .find(|e| e["actor"] == dev_id.as_str() && e["action"] == "read")
        .unwrap_or_else(|| panic!("no denied read in {tail:#}"));
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["role"], "developer");
    assert!(!denied["reason"].as_str().unwrap().is_empty());
    assert_eq!(denied["hash"].as_str().unwrap().len(), 64);
    // Entries chain: each one's prev is the hash of the one before.
    for w in entries.windows(2) {
        assert_eq!(w[1]["seq"].as_u64(), w[0]["seq"].as_u64().map(|s| s + 1));
        assert_eq!(w[1]["prev"], w[0]["hash"]);
    }
    // The keys made at first start are named by fingerprint.
    let generated: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "key_generate")
        .collect();
    assert_eq!(generated.len(), 4, "{tail:#}");
    for e in &generated {
        assert!(is_fingerprint(e["target"].as_str().unwrap()), "{e}");
        assert!(e["role"].is_string());
    }
    // The tail call itself is audited, last.
    let last = entries.last().unwrap();
    assert_eq!(last["action"], "audit_tail");
    assert_eq!(last["decision"], "allow");
    // -n limits, and text output shows the denial.
    let two = node.json(&admin, &["audit", "tail", "-n", "2"]);
    assert_eq!(two["entries"].as_array().unwrap().len(), 2);
    let text = node.ok(&admin, &["audit", "tail", "-n", "100"]);
    assert!(
        text.lines()
            .any(|l| l.contains(&dev_id) && l.contains("deny") && l.contains("read")),
        "{text}"
    );

    let v = node.json(&admin, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["entries"].as_u64().unwrap() >= entries.len() as u64);
    assert!(v["head"].as_str().unwrap().contains(':'));
    assert!(
        node.ok(&admin, &["audit", "verify"])
            .starts_with("audit log ok:")
    );

    // Not for other roles: 403 (CLI exit 4), and the attempt is audited.
    for (method, path) in [
        ("GET", "/v1/audit"),
        ("POST", "/v1/audit/verify"),
        ("GET", "/v1/keys"),
    ] {
        let r = http()
            .request(method.parse().unwrap(), format!("{}{path}", node.url))
            .bearer_auth(&dev)
            .send()
            .unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
    }
    assert_eq!(
        node.cli(&dev, &["audit", "tail"]).unwrap().status.code(),
        Some(4)
    );
    assert_eq!(
        node.cli(&dev, &["audit", "verify"]).unwrap().status.code(),
        Some(4)
    );
    let tail = node.json(&admin, &["audit", "tail", "-n", "20"]);
    let refused: Vec<&str> = tail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == dev_id.as_str() && e["decision"] == "deny")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in ["audit_tail", "audit_verify", "key_list"] {
        assert!(refused.contains(&action), "{action} not in {refused:?}");
    }

    // Edit entry 1 (a key generation) on disk: entry 2 no longer chains.
    let log = data.join("audit.log");
    edit_in_place(&log, b"first start", b"first stars");
    let out = node.cli(&admin, &["audit", "verify", "--json"]).unwrap();
    assert_eq!(out.status.code(), Some(5));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["broken_seq"], 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("entry 2"), "{v}");
    let out = node.cli(&admin, &["audit", "verify"]).unwrap();
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit log is broken"), "{stderr}");
    // The tail stops at the last good entry and says why.
    let tail = node.json(&admin, &["audit", "tail"]);
    assert_eq!(tail["total"], 1, "{tail}");
    assert!(tail["error"].as_str().unwrap().contains("entry 2"));

    // A restart refuses the broken log, saying so.
    node.stop();
    let mut child = Command::new(BIN)
        .args(["node", "run", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("SLURP_NODE")
        .env_remove("SLURP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node started over a broken audit log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("opening the audit log") && stderr.contains("entry 2"),
        "{stderr}"
    );

    // Undo the edit: the node starts and the chain verifies again.
    edit_in_place(&log, b"first stars", b"first start");
    let node = TestNode::start(&data);
    assert_eq!(node.json(&admin, &["audit", "verify"])["ok"], true);
}

#[test]
fn keys_list_names_every_role_key_by_its_file_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = TestNode::start(&data);
    let v = node.json(&node.admin, &["keys", "list"]);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "{v:#}");

    let store = Keystore::open(
        data.join("keys"),
        Unlock::NodeKey(NodeKey::load_file(&data.join("node.key")).unwrap()),
        KeystoreConfig::default(),
    )
    .unwrap();
    let files = store.list().unwrap();
    assert_eq!(files.len(), 4);
    let status = node.json(&node.admin, &["status"]);
    let text = node.ok(&node.admin, &["keys", "list"]);
    for role in ["admin", "architect", "developer", "observer"] {
        let k = keys
            .iter()
            .find(|k| k["role"] == role)
            .unwrap_or_else(|| panic!("no key of {role} in {v:#}"));
        let fp = k["fingerprint"].as_str().unwrap();
        assert!(is_fingerprint(fp), "{k}");
        assert_eq!(k["epoch"], 1);
        assert_eq!(k["held"], true);
        assert_eq!(k["current"], true);
        let file = files
            .iter()
            .find(|f| f.role.as_str() == role)
            .unwrap_or_else(|| panic!("no key file of {role}"));
        assert_eq!(fp, file.fingerprint.to_hex(), "{role}");
        assert_eq!(status["keys"][role], fp, "status names the current key");
        assert!(
            text.lines().any(|l| l.starts_with(role) && l.contains(fp)),
            "{text}"
        );
    }
}
