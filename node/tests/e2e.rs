//! End-to-end tests: the real `slurp` binary on 127.0.0.1, driven through
//! its HTTP API and its CLI.

mod common;

use common::{TestNode, files_under, http};
use serde_json::{Value, json};

const DEV_ADDR: &str = "ucxl://claude:developer@slurp:core/*^/src/store.rs";
const ARCH_ADDR: &str = "ucxl://claude:architect@slurp:core/*^/docs/adr-7.md";

#[test]
fn cli_round_trips_versions_search_and_batch() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    let admin = &node.admin;
    let dev = node.token("developer");

    // put / get / temporal addresses / history
    node.ok(
        &dev,
        &[
            "put",
            DEV_ADDR,
            "--summary",
            "the store orchestrator",
            "--tag",
            "core",
            "--tech",
            "rust",
        ],
    );
    node.ok(
        &dev,
        &[
            "put",
            DEV_ADDR,
            "--summary",
            "the context store orchestrator",
            "--reason",
            "clearer",
        ],
    );
    let latest = node.json(&dev, &["get", DEV_ADDR]);
    assert_eq!(
        latest["context"]["summary"],
        "the context store orchestrator"
    );
    assert_eq!(latest["ordinal"], 2);
    assert_eq!(latest["context"]["version"]["change_reason"], "clearer");
    let first = node.json(
        &dev,
        &["get", "ucxl://claude:developer@slurp:core/*~1/src/store.rs"],
    );
    assert_eq!(first["context"]["summary"], "the store orchestrator");
    let back = node.json(
        &dev,
        &["get", "ucxl://claude:developer@slurp:core/~~1/src/store.rs"],
    );
    assert_eq!(back["context"]["summary"], "the store orchestrator");
    let hist = node.json(&dev, &["history", DEV_ADDR]);
    assert_eq!(hist["versions"].as_array().unwrap().len(), 2);
    let text = node.ok(&dev, &["get", DEV_ADDR]);
    assert!(
        text.contains("summary: the context store orchestrator"),
        "{text}"
    );

    // batch import from JSON lines, with one bad line reported by number
    let file = dir.path().join("import.jsonl");
    let mut lines = Vec::new();
    for i in 0..40 {
        lines.push(
            json!({
                "address": format!("ucxl://claude:developer@slurp:core/*^/src/mod{i}.rs"),
                "path": format!("src/mod{i}.rs"),
                "summary": format!("module {i} handles quorum replication"),
                "tags": ["replication"],
                "encrypted_for": ["developer"],
            })
            .to_string(),
        );
    }
    lines.push(json!({"address": "ucxl://claude:developer@slurp:core/*^/bad", "path": "bad", "summary": "", "encrypted_for": ["developer"]}).to_string());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = node
        .cli(
            admin,
            &[
                "batch",
                "import",
                file.to_str().unwrap(),
                "--chunk",
                "16",
                "--json",
            ],
        )
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "a failed item makes the import exit 5"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stored"], 40);
    assert_eq!(report["errors"][0]["line"], 41);

    // search (the index commits within a second)
    let mut hits = 0;
    for _ in 0..50 {
        let r = node.json(&dev, &["search", "quorum", "replication", "--limit", "5"]);
        hits = r["total_hits"].as_u64().unwrap();
        if hits == 40 {
            assert_eq!(r["hits"].as_array().unwrap().len(), 5);
            assert!(r["hits"][0]["snippet"].as_str().unwrap().contains("<b>"));
            assert_eq!(r["facets"]["tags"][0]["value"], "replication");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(hits, 40);

    // list and export
    let list = node.json(
        &dev,
        &[
            "list",
            "ucxl://any:developer@slurp:any/*~/src",
            "--limit",
            "100",
        ],
    );
    assert_eq!(list["entries"].as_array().unwrap().len(), 41);
    let export = dir.path().join("export.jsonl");
    node.ok(
        admin,
        &[
            "export",
            "ucxl://any:any@slurp:any/*^/",
            "-o",
            export.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&export).unwrap().lines().count(),
        41
    );

    // delete: gone for reads (exit 3), kept in history
    node.ok(&dev, &["delete", DEV_ADDR]);
    assert_eq!(
        node.cli(&dev, &["get", DEV_ADDR]).unwrap().status.code(),
        Some(3)
    );
    assert_eq!(
        node.json(&dev, &["history", DEV_ADDR])["versions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // status and workers
    let status = node.json(admin, &["status"]);
    assert!(status["store"]["keys"].as_u64().unwrap() >= 41);
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "sweeper")
    );
    node.ok(admin, &["workers", "--run", "sweeper"]);
}

#[test]
fn roles_tokens_and_forbidden_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    let arch = node.token("architect");
    let dev = node.token("developer");
    let obs = node.token("observer");
    node.ok(
        &arch,
        &[
            "put",
            ARCH_ADDR,
            "--summary",
            "we split the index per node",
            "--roles",
            "architect",
        ],
    );

    // developer: forbidden (exit 4, HTTP 403); architect and admin read it
    let out = node.cli(&dev, &["get", ARCH_ADDR]).unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not read"));
    assert_eq!(
        node.json(&arch, &["get", ARCH_ADDR])["context"]["summary"],
        "we split the index per node"
    );
    assert_eq!(
        node.json(&node.admin, &["get", ARCH_ADDR])["context"]["summary"],
        "we split the index per node"
    );
    let r = http()
        .get(format!("{}/v1/contexts", node.url))
        .query(&[("address", ARCH_ADDR)])
        .bearer_auth(&dev)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "forbidden");

    // observers cannot write; developers cannot manage tokens
    assert_eq!(
        node.cli(
            &obs,
            &["put", "ucxl://o:observer@p:t/*^/x", "--summary", "x"]
        )
        .unwrap()
        .status
        .code(),
        Some(4)
    );
    assert_eq!(
        node.cli(&dev, &["token", "create", "admin"])
            .unwrap()
            .status
            .code(),
        Some(4)
    );

    // revoke: the token stops working
    let who = node.json(&dev, &["whoami"]);
    let id = who["token_id"].as_str().unwrap().to_string();
    node.ok(&node.admin, &["token", "revoke", &id]);
    assert_eq!(node.cli(&dev, &["whoami"]).unwrap().status.code(), Some(4));

    // the audit log recorded the denial (checked through the file's chain)
    let log = dir.path().join("data").join("audit.log");
    assert!(std::fs::metadata(&log).unwrap().len() > 0);
}

#[test]
fn bad_input_gets_4xx_with_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start_with(&dir.path().join("data"), &[]);
    let c = http();
    let url = |p: &str| format!("{}{}", node.url, p);
    let post = |p: &str, body: &str| {
        c.post(url(p))
            .bearer_auth(&node.admin)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let check = |r: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    };
    check(post("/v1/contexts", "{not json"), 400, "bad_json");
    check(
        post(
            "/v1/contexts",
            r#"{"context": {"address": "ucxl://a:b@c:d/*^/x"}}"#,
        ),
        400,
        "bad_json",
    );
    check(
        post(
            "/v1/contexts",
            r#"{"context": {"address": "http://nope", "path": "", "summary": "s", "encrypted_for": ["developer"]}}"#,
        ),
        400,
        "bad_json",
    );
    check(
        post(
            "/v1/contexts",
            r#"{"context": {"address": "ucxl://a:developer@c:d/*^/x", "path": "x", "summary": " ", "encrypted_for": ["developer"]}}"#,
        ),
        400,
        "invalid_context",
    );
    check(
        post(
            "/v1/contexts",
            r#"{"context": {"address": "ucxl://a:developer@c:d/*^/x", "path": "x", "summary": "s", "rag_confidence": 3, "encrypted_for": ["developer"]}}"#,
        ),
        400,
        "invalid_context",
    );
    check(
        post(
            "/v1/contexts",
            r#"{"context": {"address": "ucxl://a:developer@c:d/*^/x", "path": "x", "summary": "s", "encrypted_for": ["ghost"]}}"#,
        ),
        400,
        "invalid_context",
    );
    check(
        post("/v1/contexts", r#"{"context": {}, "surprise": 1}"#),
        400,
        "bad_json",
    );
    check(
        c.get(url("/v1/contexts"))
            .query(&[("address", "ucxl://a:b@c:d/*x/y")])
            .bearer_auth(&node.admin)
            .send()
            .unwrap(),
        400,
        "bad_address",
    );
    check(
        c.get(url("/v1/contexts"))
            .bearer_auth(&node.admin)
            .send()
            .unwrap(),
        400,
        "bad_query_string",
    );
    check(
        c.get(url("/v1/contexts"))
            .query(&[("address", "ucxl://any:b@c:d/*^/y")])
            .bearer_auth(&node.admin)
            .send()
            .unwrap(),
        400,
        "bad_request",
    );
    check(
        c.get(url("/v1/whoami")).send().unwrap(),
        401,
        "unauthorized",
    );
    check(
        c.get(url("/v1/whoami"))
            .bearer_auth("slurp_0000000000000000_x")
            .send()
            .unwrap(),
        401,
        "unauthorized",
    );
    check(
        c.get(url("/v1/nope"))
            .bearer_auth(&node.admin)
            .send()
            .unwrap(),
        404,
        "no_route",
    );
    check(
        post("/v1/search", r#"{"text": "a", "limit": 100000}"#),
        400,
        "bad_query",
    );
    check(
        post("/v1/batch/put", r#"{"items": []}"#),
        400,
        "bad_request",
    );
    // A body over the limit (8 MiB by default) is refused with 413: one
    // thread sends it, this one reads the answer.
    {
        use std::io::{Read, Write};
        let addr = node.url.trim_start_matches("http://").to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let mut w = s.try_clone().unwrap();
        let len = 9 * 1024 * 1024;
        let head = format!(
            "POST /v1/search HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            node.admin
        );
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(&vec![b' '; len]);
        });
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        drop(s);
        let _ = writer.join();
    }
    // Garbage query text never fails the server.
    let r = post("/v1/search", r#"{"text": "((((\"unbalanced AND OR -"}"#);
    assert!(
        r.status().is_success() || r.status().as_u16() == 400,
        "{}",
        r.status()
    );
    // Nothing stored was damaged; the node still answers.
    assert!(node.cli(&node.admin, &["health"]).unwrap().status.success());
}

#[test]
fn restart_keeps_data_and_rebuilds_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = TestNode::start(&data);
    let admin = node.admin.clone();
    node.ok(
        &admin,
        &[
            "put",
            DEV_ADDR,
            "--summary",
            "survives restarts with zeppelin",
        ],
    );
    node.ok(
        &admin,
        &["put", DEV_ADDR, "--summary", "second version with zeppelin"],
    );
    node.stop();
    let node = TestNode::start(&data);
    assert_eq!(node.admin, admin, "the admin token is kept");
    assert_eq!(
        node.json(&admin, &["get", DEV_ADDR])["context"]["summary"],
        "second version with zeppelin"
    );
    assert_eq!(
        node.json(&admin, &["history", DEV_ADDR])["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = node.json(&admin, &["search", "zeppelin"]);
    assert_eq!(r["total_hits"], 1);
}

#[test]
fn metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    node.ok(&node.admin, &["put", DEV_ADDR, "--summary", "m"]);
    node.ok(&node.admin, &["get", DEV_ADDR]);
    node.ok(&node.admin, &["get", DEV_ADDR]);
    node.ok(&node.admin, &["workers", "--run", "stats"]);
    for _ in 0..100 {
        let w = node.json(&node.admin, &["workers"]);
        if w["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "stats" && w["runs"] == 1)
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let text = http()
        .get(format!("{}/metrics", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in [
        "slurp_ops_total{op=\"get\",tier=\"cache\",outcome=\"ok\"}",
        "slurp_op_duration_seconds_bucket",
        "slurp_cache_hits_total",
        "slurp_store_commits_total",
        "slurp_http_requests_total",
        "slurp_worker_runs_total",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let h: Value = http()
        .get(format!("{}/health", node.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(h["ready"], true);
    for c in ["store", "index", "cache", "keys"] {
        assert_eq!(h["components"][c]["ok"], true, "{c}");
    }
    // promtool (Debian package prometheus) accepts the exposition.
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
    {
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        panic!(
            "promtool is missing: install the Debian package prometheus (testnet/check.sh does)"
        );
    }
}

#[test]
fn no_plaintext_reaches_disk_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Debug logs of every crate (Tantivy, redb, hyper included).
    let mut node = TestNode::start_logging(&data, &[], "debug");
    let marker = "QUOKKAMARKER7731";
    let admin = node.admin.clone();
    let dev = node.token("developer");
    for i in 0..30 {
        let body = json!({
            "context": {
                "address": format!("ucxl://claude:developer@slurp:core/*^/src/m{i}.rs"),
                "path": format!("src/m{i}.rs"),
                "summary": format!("{marker} summary {i}"),
                "purpose": format!("{marker} purpose"),
                "insights": [format!("{marker} insight")],
                "tags": [format!("{}tag", marker.to_lowercase())],
                "technologies": [format!("{marker}tech")],
                "metadata": {"note": marker},
                "encrypted_for": ["developer"],
            },
            "change_reason": format!("{marker} reason"),
        });
        let r = http()
            .post(format!("{}/v1/contexts", node.url))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // Read (fills the cache), search (uses the index), batch, export.
    for i in 0..30 {
        node.ok(
            &dev,
            &[
                "get",
                &format!("ucxl://claude:developer@slurp:core/*^/src/m{i}.rs"),
            ],
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let r = node.json(&dev, &["search", marker]);
    assert_eq!(r["total_hits"], 30);
    node.ok(&admin, &["workers", "--run", "index-merge"]);
    node.ok(&admin, &["workers", "--run", "compactor"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    node.stop();
    let needles = [
        marker.as_bytes().to_vec(),
        marker.to_lowercase().into_bytes(),
    ];
    for f in files_under(&data) {
        let bytes = std::fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "plaintext marker found in {}",
                f.display()
            );
        }
    }
    let log = node.log();
    assert!(!log.is_empty());
    assert!(
        !log.contains(marker) && !log.to_lowercase().contains(&marker.to_lowercase()),
        "marker in logs"
    );
    assert!(!log.contains(&admin[10..]), "token in logs");
}

/// Every route the OpenAPI file lists (see `api::ROUTES`, checked against
/// `docs/openapi.json`) is served by the router: none answers "no route"
/// or "method not allowed".
#[test]
fn every_documented_route_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    let c = http();
    for (method, path) in slurp_node::api::ROUTES {
        let path = path
            .replace("{id}", "0000000000000000")
            .replace("{name}", "stats");
        let url = format!("{}{}", node.url, path);
        let req = match *method {
            "get" => c.get(&url),
            "post" => c
                .post(&url)
                .header("content-type", "application/json")
                .body("{}"),
            "delete" => c.delete(&url),
            other => panic!("unexpected method {other}"),
        };
        let r = req.bearer_auth(&node.admin).send().unwrap();
        let status = r.status().as_u16();
        let body = r.text().unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !body.contains("no_route"),
            "{method} {path}: {status} {body}"
        );
        assert!(status < 500, "{method} {path}: {status} {body}");
    }
}
