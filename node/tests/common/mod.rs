//! A real `slurp` node process on 127.0.0.1 for end-to-end tests.

#![allow(dead_code)]

pub mod cluster;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_slurp");

/// A node process; killed on drop.
pub struct TestNode {
    pub child: Option<Child>,
    pub url: String,
    pub data: PathBuf,
    pub admin: String,
    /// Everything the process wrote to stdout and stderr.
    pub log: Arc<Mutex<String>>,
}

impl TestNode {
    /// Starts a node on a free port with its data in `data`.
    pub fn start(data: &Path) -> TestNode {
        Self::start_with(data, &[])
    }

    pub fn start_with(data: &Path, extra: &[&str]) -> TestNode {
        Self::start_logging(data, extra, "info")
    }

    /// Starts a node whose log filter is `log` (e.g. `debug`).
    pub fn start_logging(data: &Path, extra: &[&str], log: &str) -> TestNode {
        let node = Self::spawn(data, extra, log);
        node.wait_ready();
        node
    }

    /// Starts a node whose swarm listens on a port the system picks, and
    /// returns it with its swarm address (for `--bootstrap`). Choosing a
    /// free port first and passing it races other tests for that port.
    pub fn start_boot(data: &Path, extra: &[&str]) -> (TestNode, String) {
        Self::start_boot_logging(data, extra, "info")
    }

    pub fn start_boot_logging(data: &Path, extra: &[&str], log: &str) -> (TestNode, String) {
        let mut a = vec!["--p2p-listen", "/ip4/127.0.0.1/tcp/0"];
        a.extend_from_slice(extra);
        let node = Self::start_logging(data, &a, log);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = node.json(&node.admin, &["cluster", "status"]);
            if let Some(addr) = status["listen_addrs"].as_array().and_then(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .find(|a| a.contains("/tcp/"))
            }) {
                return (node, addr.to_string());
            }
            assert!(Instant::now() < deadline, "no swarm address: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a node and returns once it serves its API, ready or not.
    pub fn spawn(data: &Path, extra: &[&str], log: &str) -> TestNode {
        let mut child = Command::new(BIN)
            .args(["node", "run", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("SLURP_LOG", log)
            .env_remove("SLURP_NODE")
            .env_remove("SLURP_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting slurp");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut stderr = child.stderr.take().expect("stderr");
        let l2 = log.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            l2.lock().unwrap().push_str(&s);
        });
        let mut url = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        while url.is_none() && Instant::now() < deadline {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            log.lock().unwrap().push_str(&line);
            if let Some(u) = line.trim().strip_prefix("slurp node listening on ") {
                url = Some(u.to_string());
            }
        }
        let l3 = log.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            l3.lock().unwrap().push_str(&s);
        });
        let url = url.unwrap_or_else(|| panic!("node did not start: {}", log.lock().unwrap()));
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_string();
        TestNode {
            child: Some(child),
            url,
            data: data.to_path_buf(),
            admin,
            log,
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(out) = self.cli(&self.admin, &["health", "--json"])
                && out.status.success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("node never became ready");
    }

    /// Runs the CLI against this node with `token`.
    pub fn cli(&self, token: &str, args: &[&str]) -> std::io::Result<Output> {
        Command::new(BIN)
            .args(args)
            .env("SLURP_NODE", &self.url)
            .env("SLURP_TOKEN", token)
            .output()
    }

    /// Runs the CLI and returns stdout, panicking on failure.
    pub fn ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli(token, args).expect("running slurp");
        assert!(
            out.status.success(),
            "slurp {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs the CLI with `--json` and parses stdout.
    pub fn json(&self, token: &str, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(token, &a)).expect("json output")
    }

    /// Creates the cluster on this node (`slurp cluster init`).
    pub fn init_cluster(&self) {
        self.ok(&self.admin, &["cluster", "init"]);
    }

    /// A one-time join token from this node (`slurp cluster invite`).
    pub fn invite(&self) -> String {
        self.ok(&self.admin, &["cluster", "invite"])
            .trim()
            .to_string()
    }

    /// Arguments for a node that joins this node's cluster through
    /// `boot` with a fresh invite and asks to be added at once.
    pub fn joining(&self, boot: &str) -> Vec<String> {
        [
            "--bootstrap",
            boot,
            "--auto-join",
            "--join-token",
            &self.invite(),
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Creates a token for `role`.
    pub fn token(&self, role: &str) -> String {
        self.json(&self.admin, &["token", "create", role])["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Stops the node with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[cfg(unix)]
            unsafe {
                libc_kill(child.id() as i32, 15);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

#[cfg(unix)]
unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP client for raw API checks.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// How long a test waits for something that takes well under a second on
/// an idle machine (a node to start, a layout to converge, a replica to
/// catch up): only a bound that ends a broken test. On a loaded machine
/// these take many times longer, and no test asserts how fast they are.
pub const LIVENESS: Duration = Duration::from_secs(90);

/// Polls `f` until it holds, for at most [`LIVENESS`].
pub fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIVENESS;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {LIVENESS:?}");
}

/// Polls the async `f` until it holds, for at most [`LIVENESS`].
pub async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < LIVENESS {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {LIVENESS:?}");
}

/// The peer id of the node whose data directory is `data` (made if new).
pub fn peer_id(data: &Path) -> String {
    let out = Command::new(BIN)
        .args(["node", "peer-id", "--data"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Copies the role keys (and the node key they are sealed to) of one data
/// directory into another, as the testnet does until keys travel through
/// the swarm.
pub fn copy_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("keys")).unwrap();
    for e in std::fs::read_dir(from.join("keys")).unwrap() {
        let e = e.unwrap();
        // Role keys only: the cluster key stays with the node that made it.
        if e.path().extension().is_some_and(|x| x == "secret") {
            continue;
        }
        std::fs::copy(e.path(), to.join("keys").join(e.file_name())).unwrap();
    }
    if from.join("node.key").exists() {
        std::fs::copy(from.join("node.key"), to.join("node.key")).unwrap();
    }
}
