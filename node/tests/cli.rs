//! The CLI as a Unix tool, through the real binary: a closed standard
//! output ends it quietly, usage mistakes and bad input get their exit
//! codes, errors are JSON under `--json`, `--node` takes several URLs and
//! says why none answered, `put --merge` keeps what it is not told to
//! change, and a node that cannot start leaves nothing behind.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

use common::{BIN, TestNode};
use serde_json::Value;

const SIGPIPE: i32 = 13;

/// A port nobody listens on: port 1 (tcpmux) is privileged and unused.
/// A port freed by the test itself could be taken by a node another test
/// starts.
fn dead_node() -> String {
    "127.0.0.1:1".to_string()
}

/// Runs the CLI without a reachable node.
fn offline(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SLURP_NODE", dead_node())
        .env("SLURP_TOKEN", "x")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON error the CLI printed on stderr.
fn json_error(o: &Output) -> Value {
    let text = stderr(o);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs `slurp ARGS` against `node` with its standard output a pipe whose
/// reader is already gone, and returns the exit status and stderr.
fn into_closed_pipe(node: &TestNode, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(args)
        .env("SLURP_NODE", &node.url)
        .env("SLURP_TOKEN", &node.admin)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    (out.status, stderr(&out))
}

/// Runs `slurp ARGS | head -c1` in bash with pipefail and returns slurp's
/// own status (`PIPESTATUS[0]`) and stderr.
fn into_head(node: &TestNode, args: &[&str]) -> (i32, String) {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "set -o pipefail; \"$TEST_SLURP_BINARY\" {} | head -c1 >/dev/null; echo \"${{PIPESTATUS[0]}}\" >&3",
        quoted.join(" ")
    );
    let status_file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3>'{}'; {script}",
            status_file.path().display()
        ))
        .env("TEST_SLURP_BINARY", BIN)
        .env("SLURP_NODE", &node.url)
        .env("SLURP_TOKEN", &node.admin)
        .output()
        .unwrap();
    let code = std::fs::read_to_string(status_file.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status: {}", stderr(&out)));
    (code, stderr(&out))
}

/// `n` import lines for developer contexts `src/{prefix}{i}.rs` of
/// `project`, with the summary `summary(i)`.
fn import_lines(
    project: &str,
    prefix: &str,
    n: usize,
    summary: impl Fn(usize) -> String,
) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "address": format!("ucxl://t:developer@{project}:main/*^/src/{prefix}{i}.rs"),
                "summary": summary(i),
                "encrypted_for": ["developer"],
            })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn a_closed_stdout_ends_every_output_shape_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    // Enough data that an export overflows a pipe's buffer (64 KiB).
    let jsonl = import_lines("pipe", "f", 150, |i| {
        format!("pipe checkout {i} {}", "x".repeat(600))
    });
    let file = dir.path().join("many.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    node.ok(&node.admin, &["batch", "import", file.to_str().unwrap()]);
    let addr = "ucxl://t:developer@pipe:main/*^/src/f1.rs";

    let shapes: Vec<Vec<&str>> = vec![
        vec!["get", addr],
        vec!["get", addr, "--json"],
        vec!["search", "checkout"],
        vec!["search", "checkout", "--json"],
        vec!["list", "ucxl://any:any@pipe:any/*^/"],
        vec!["export", "ucxl://any:any@pipe:any/*^/"],
        vec!["status"],
        vec!["workers", "--json"],
        vec!["history", addr],
        vec!["resolve", addr],
        vec!["health"],
        vec!["whoami", "--json"],
        vec!["token", "list"],
        vec!["cluster", "status"],
        vec!["batch", "import", file.to_str().unwrap()],
        vec!["completions", "bash"],
        vec!["node", "config"],
        vec!["--help"],
    ];
    for args in &shapes {
        let (status, err) = into_closed_pipe(&node, args);
        assert_eq!(
            status.signal(),
            Some(SIGPIPE),
            "slurp {args:?} into a closed pipe: {status:?}, stderr: {err}"
        );
        assert!(err.is_empty(), "slurp {args:?} wrote to stderr: {err}");

        let (code, err) = into_head(&node, args);
        assert!(
            code == 0 || code == 128 + SIGPIPE,
            "slurp {args:?} | head -c1 exited {code}: {err}"
        );
        assert!(err.is_empty(), "slurp {args:?} | head -c1 stderr: {err}");
    }
    // An export larger than the pipe's buffer always meets the closed pipe.
    let (code, _) = into_head(&node, &["export", "ucxl://any:any@pipe:any/*^/"]);
    assert_eq!(code, 128 + SIGPIPE);

    // The node's log, redirected to a pipe, carries no colour codes.
    assert!(!node.log().contains('\u{1b}'), "ANSI codes in the log");
}

#[test]
fn usage_mistakes_exit_2_and_bad_input_exits_5_with_json_errors() {
    // No --summary: a usage error, with the usage of `put`.
    let o = offline(&["put", "ucxl://a:developer@p:t/*^/x.rs"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--summary"), "{}", stderr(&o));
    assert!(stderr(&o).contains("Usage: slurp put"), "{}", stderr(&o));
    // No address either.
    let o = offline(&["put"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // The same as JSON on stderr, with the same code.
    let o = offline(&["put", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let e = json_error(&o);
    assert_eq!(e["error"]["code"], "usage");
    assert_eq!(e["error"]["exit_code"], 2);
    assert!(e["error"]["usage"].as_str().unwrap().contains("slurp put"));
    // clap's own parse errors too.
    let o = offline(&["get", "--no-such-flag", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(json_error(&o)["error"]["code"], "usage");
    assert!(o.stdout.is_empty());

    // A missing import file and a bad line are invalid input, named.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let o = offline(&["batch", "import", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.jsonl"), "{}", stderr(&o));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"address\":\"ucxl://a:developer@p:t/*^/x.rs\",\"summary\":\"s\",\"encrypted_for\":[\"developer\"]}\n\n{\"address\":\"ucxl://a:developer@p:t/*^/y.rs\"}\nnot json\n",
    )
    .unwrap();
    let o = offline(&["batch", "import", bad.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let e = json_error(&o);
    assert_eq!(e["error"]["code"], "invalid_input");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("bad.jsonl:3: missing field `summary`"),
        "{msg}"
    );
    assert!(msg.contains("bad.jsonl:4:"), "{msg}");
    assert!(msg.contains("nothing was imported"), "{msg}");
    // A bad address.
    let o = offline(&["get", "not-an-address", "--json"]);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(json_error(&o)["error"]["code"], "invalid_address");

    // A node that is not there: exit 6, the cause named, JSON too.
    let dead = dead_node();
    let o = Command::new(BIN)
        .args(["status", "--json"])
        .env("SLURP_NODE", &dead)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(6));
    let e = json_error(&o);
    assert_eq!(e["error"]["code"], "unreachable");
    let msg = e["error"]["message"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(msg.contains(&format!("http://{dead}")), "{msg}");
    // A malformed --node is a usage error that names it.
    let o = Command::new(BIN)
        .args(["status", "--node", "ftp://x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ftp://x"), "{}", stderr(&o));
}

#[test]
fn json_everywhere_and_failover_between_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));

    let o = offline(&["node", "config", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["api"]["listen"].is_string(), "{v}");
    let o = offline(&[
        "node",
        "peer-id",
        "--data",
        dir.path().join("p").to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["peer_id"].as_str().unwrap().starts_with("12D3"), "{v}");
    let o = offline(&["completions", "bash", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["script"].as_str().unwrap().contains("slurp"));

    // Several nodes, the first one down; a bare host:port works.
    let bare = node.url.trim_start_matches("http://");
    let o = Command::new(BIN)
        .args(["whoami", "--json"])
        .env("SLURP_NODE", format!("{},{bare}", dead_node()))
        .env("SLURP_TOKEN", &node.admin)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["role"], "admin");
}

#[test]
fn put_merge_keeps_what_it_is_not_told_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    let a = "ucxl://me:developer@proj:main/*^/src/lib.rs";
    node.ok(
        &node.admin,
        &[
            "put",
            a,
            "--summary",
            "crate root",
            "--purpose",
            "exports the API",
            "--tag",
            "core",
            "--insight",
            "keep it small",
        ],
    );
    node.ok(&node.admin, &["put", a, "--merge", "--tag", "api"]);
    let v = node.json(&node.admin, &["get", a]);
    let ctx = &v["context"];
    assert_eq!(ctx["summary"], "crate root");
    assert_eq!(ctx["purpose"], "exports the API");
    assert_eq!(ctx["tags"], serde_json::json!(["core", "api"]));
    assert_eq!(ctx["insights"], serde_json::json!(["keep it small"]));
    assert_eq!(v["ordinal"], 2);

    // A plain put replaces the whole context (documented).
    node.ok(&node.admin, &["put", a, "--summary", "root"]);
    let ctx = node.json(&node.admin, &["get", a])["context"].clone();
    assert_eq!(ctx["tags"], serde_json::json!([]));
    assert_eq!(ctx["purpose"], "");

    // Merging into nothing needs a summary.
    let b = "ucxl://me:developer@proj:main/*^/src/new.rs";
    let o = node
        .cli(&node.admin, &["put", b, "--merge", "--tag", "x"])
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    node.ok(&node.admin, &["put", b, "--merge", "--summary", "new"]);
    assert_eq!(
        node.json(&node.admin, &["get", b])["context"]["summary"],
        "new"
    );
}

#[test]
fn import_derives_paths_and_search_says_what_it_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("data"));
    let mut jsonl = import_lines("imp", "m", 12, |i| format!("importer module {i}"));
    // A batch item line with its own roles.
    jsonl.push_str("{\"context\":{\"address\":\"ucxl://t:developer@imp:main/*^/docs/one.md\",\"summary\":\"a single doc\",\"encrypted_for\":[\"developer\"]},\"roles\":[\"architect\"]}\n");
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    let out = node.ok(&node.admin, &["batch", "import", file.to_str().unwrap()]);
    assert!(out.contains("imported 13 contexts, 0 failed"), "{out}");
    let v = node.json(
        &node.admin,
        &["get", "ucxl://t:developer@imp:main/*^/src/m3.rs"],
    );
    assert_eq!(v["context"]["path"], "src/m3.rs");

    // The index makes writes searchable within about a second: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = node.json(&node.admin, &["search", "importer"]);
        if v["total_hits"] == 12 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never indexed: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = node.ok(&node.admin, &["search", "importer"]);
    assert!(text.starts_with("12 hits"), "{text}");
    assert!(
        text.contains("showing 1-10 of 12 (next: --offset 10)"),
        "{text}"
    );
    let text = node.ok(&node.admin, &["search", "single"]);
    assert!(text.starts_with("1 hit ("), "{text}");
    let text = node.ok(&node.admin, &["list", "ucxl://any:any@imp:any/*^/docs"]);
    assert!(text.contains("(1 version)"), "{text}");

    // The workers table is aligned: every row's state column starts at the
    // same place as the header's.
    let text = node.ok(&node.admin, &["workers"]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("last error")).collect();
    let col = lines[0].find("STATE").unwrap();
    for l in &lines[1..] {
        assert_eq!(
            l.as_bytes().get(col - 1),
            Some(&b' '),
            "misaligned row {l:?} in\n{text}"
        );
        assert_ne!(l.as_bytes().get(col), Some(&b' '), "{l:?}\n{text}");
    }
}

#[test]
fn a_node_that_cannot_start_leaves_no_data_behind() {
    let dir = tempfile::tempdir().unwrap();
    // The API port is taken.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let data = dir.path().join("api-busy");
    let o = Command::new(BIN)
        .args(["node", "run", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&port.to_string()), "{}", stderr(&o));
    assert!(!data.exists(), "the failed start left {}", data.display());

    // The swarm port is taken: the node fails later, after making its
    // data directory; it removes what it made.
    let data = dir.path().join("p2p-busy");
    let o = Command::new(BIN)
        .args([
            "node",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--p2p-listen",
            &format!("/ip4/127.0.0.1/tcp/{port}"),
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(!data.exists(), "the failed start left {}", data.display());

    // An existing data directory is never removed.
    let data = dir.path().join("kept");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::File::create(data.join("mine"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let o = Command::new(BIN)
        .args(["node", "run", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(data.join("mine").exists());
    drop(busy);
}
