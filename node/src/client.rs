//! The HTTP client the CLI and `slurp bench` use to talk to a node.
//!
//! It knows the API's routes and its error body, and turns a response into
//! either the route's typed body (`slurp_protocol::api`, the types the
//! node's handlers answer with) or a [`ClientError`] whose kind decides the
//! CLI's exit code, so scripts can tell "not found" from "forbidden" from
//! "the node is down". The untyped `get`/`post`/`delete` remain for the
//! load and fault-injection drivers, which also speak to other APIs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use slurp_protocol::api::{
    ApplyResponse, AuditTailResponse, AuditVerifyResponse, BatchGetRequest, BatchGetResponse,
    BatchPutRequest, BatchPutResponse, ClusterInitResponse, ClusterStatusResponse, ContextResponse,
    CreateTokenRequest, CreateTokenResponse, ErrorBody, GrantRequest, GrantResponse,
    HealthResponse, HistoryResponse, InviteRequest, InviteResponse, InvitesResponse, JoinRequest,
    JoinResponse, KeyStatusResponse, KeysResponse, LinksResponse, ListResponse, PlacementResponse,
    PutContextRequest, PutResponse, RemoveRequest, RemoveResponse, ResolveResponse,
    RotateKeyRequest, RotateKeyResponse, SearchRequest, SearchResponse, StatusResponse, TokenView,
    TokensResponse, TriggeredResponse, WhoamiResponse, WorkersResponse,
};

/// What kind of failure a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 404 or 410.
    NotFound,
    /// 401 or 403.
    Forbidden,
    /// 400, 409, 413, 415.
    BadInput,
    /// The node could not be reached or answered 5xx.
    Unavailable,
}

impl ErrorKind {
    /// The CLI exit code of this kind (see `slurp --help`).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::NotFound => 3,
            ErrorKind::Forbidden => 4,
            ErrorKind::BadInput => 5,
            ErrorKind::Unavailable => 6,
        }
    }
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

/// The nodes a client talks to, parsed from `--node` / `SLURP_NODE`: one
/// or more URLs separated by commas or spaces; a bare `host:port` means
/// `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<String>);

impl Endpoints {
    /// Parses the list; names the entry that is not a URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split([',', ' ', '\t', '\n']).filter(|p| !p.is_empty()) {
            let url = if part.contains("://") {
                part.to_string()
            } else {
                format!("http://{part}")
            };
            let parsed = reqwest::Url::parse(&url)
                .map_err(|e| format!("`{part}` is not a node URL ({e})"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!(
                    "`{part}`: the scheme must be http or https, not {}",
                    parsed.scheme()
                ));
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(format!("`{part}` names no host"));
            }
            out.push(url.trim_end_matches('/').to_string());
        }
        if out.is_empty() {
            return Err("no node URL given".into());
        }
        Ok(Endpoints(out))
    }

    /// The URLs, in the order they are tried.
    pub fn urls(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl std::str::FromStr for Endpoints {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Endpoints::parse(s)
    }
}

/// A client of one node, or of several it fails over between.
///
/// Like etcdctl's `--endpoints`: a request goes to the node that answered
/// last; when that node cannot be connected to (the request never reached
/// it, so sending it again is safe whatever it is), the next one is tried.
/// Any answer, an error status included, is final.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of `base`, one URL or a list (see [`Endpoints`]).
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        let endpoints = Endpoints::parse(base).map_err(|message| ClientError {
            kind: ErrorKind::BadInput,
            status: None,
            code: "bad_endpoint".into(),
            message,
        })?;
        Self::with_endpoints(&endpoints, token, timeout)
    }

    /// A client of the given nodes.
    pub fn with_endpoints(
        endpoints: &Endpoints,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| ClientError {
                kind: ErrorKind::Unavailable,
                status: None,
                code: "client".into(),
                message: format!("cannot make an HTTP client: {}", root_cause(&e)),
            })?;
        Ok(Client {
            http,
            bases: Arc::new(endpoints.urls().to_vec()),
            current: Arc::new(AtomicUsize::new(0)),
            token,
            timeout,
        })
    }

    /// The node that answered last (or the first one).
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    fn request(&self, base: &str, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{base}{path}"));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// Sends to the current node, failing over to the next ones while a
    /// node cannot be connected to.
    async fn send(
        &self,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        method: reqwest::Method,
        path: &str,
    ) -> Result<Value, ClientError> {
        let n = self.bases.len();
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let base = &self.bases[i];
            let e = match build(self.request(base, method.clone(), path)).send().await {
                Ok(resp) => {
                    if i != first {
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return self.answer(resp).await;
                }
                Err(e) => e,
            };
            let why = if e.is_timeout() {
                format!(
                    "no answer within {}",
                    humantime::format_duration(self.timeout)
                )
            } else {
                root_cause(&e)
            };
            failures.push(format!("{base}: {why}"));
            if e.is_connect() && k + 1 < n {
                continue;
            }
            let message = if failures.len() == 1 {
                format!("cannot reach the node at {}", failures[0])
            } else {
                format!("cannot reach any node ({})", failures.join("; "))
            };
            return Err(ClientError {
                kind: ErrorKind::Unavailable,
                status: None,
                code: if e.is_timeout() {
                    "timeout"
                } else {
                    "unreachable"
                }
                .into(),
                message,
            });
        }
        unreachable!("the last endpoint's failure returns")
    }

    async fn answer(&self, resp: reqwest::Response) -> Result<Value, ClientError> {
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError {
            kind: ErrorKind::Unavailable,
            status: Some(status.as_u16()),
            code: "read".into(),
            message: format!("reading the answer: {}", root_cause(&e)),
        })?;
        if status.is_success() {
            return Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            });
        }
        let kind = match status.as_u16() {
            404 | 410 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::Forbidden,
            400 | 409 | 413 | 415 | 422 => ErrorKind::BadInput,
            _ => ErrorKind::Unavailable,
        };
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(ErrorBody { error }) => (error.code, error.message),
            Err(_) => {
                // Not the API's error body (a proxy's page, a health
                // answer): shown as it came.
                let body: Value = if text.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                };
                ("error".to_string(), format!("HTTP {status}: {body}"))
            }
        };
        Err(ClientError {
            kind,
            status: Some(status.as_u16()),
            code,
            message,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(|r| r.query(query), reqwest::Method::GET, path)
            .await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(|r| r.query(query), reqwest::Method::DELETE, path)
            .await
    }

    pub async fn post<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<Value, ClientError> {
        self.send(|r| r.json(body), reqwest::Method::POST, path)
            .await
    }

    /// Decodes a JSON value into a type.
    pub fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
        serde_json::from_value(v).map_err(|e| ClientError {
            kind: ErrorKind::Unavailable,
            status: None,
            code: "decode".into(),
            message: format!("unexpected answer from the node: {e}"),
        })
    }

    /// `GET path` decoded as `T`.
    pub async fn get_as<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        Self::decode(self.get(path, query).await?)
    }

    /// `POST path` with a JSON body, decoded as `T`.
    pub async fn post_as<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        Self::decode(self.post(path, body).await?)
    }

    /// `DELETE path` decoded as `T`.
    pub async fn delete_as<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        Self::decode(self.delete(path, query).await?)
    }

    /// Stores a new version of a context (`w`: the write quorum).
    pub async fn put(
        &self,
        req: &PutContextRequest,
        w: Option<usize>,
    ) -> Result<PutResponse, ClientError> {
        let path = match w {
            Some(w) => format!("/v1/contexts?w={w}"),
            None => "/v1/contexts".to_string(),
        };
        self.post_as(&path, req).await
    }

    /// Reads a context (`r`: the read quorum).
    pub async fn get_context(
        &self,
        address: &str,
        r: Option<usize>,
    ) -> Result<ContextResponse, ClientError> {
        let mut q = vec![("address", address.to_string())];
        if let Some(r) = r {
            q.push(("r", r.to_string()));
        }
        self.get_as("/v1/contexts", &q).await
    }

    /// Deletes a context: writes a tombstone (`w`: the write quorum).
    pub async fn delete_context(
        &self,
        address: &str,
        w: Option<usize>,
    ) -> Result<PutResponse, ClientError> {
        let mut q = vec![("address", address.to_string())];
        if let Some(w) = w {
            q.push(("w", w.to_string()));
        }
        self.delete_as("/v1/contexts", &q).await
    }

    /// Every version of an address.
    pub async fn history(&self, address: &str) -> Result<HistoryResponse, ClientError> {
        self.get_as("/v1/contexts/history", &[("address", address.to_string())])
            .await
    }

    /// A page of the addresses matching a pattern.
    pub async fn list(
        &self,
        pattern: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<ListResponse, ClientError> {
        let mut q = vec![
            ("pattern", pattern.to_string()),
            ("limit", limit.to_string()),
        ];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        self.get_as("/v1/list", &q).await
    }

    pub async fn search(&self, req: &SearchRequest) -> Result<SearchResponse, ClientError> {
        self.post_as("/v1/search", req).await
    }

    pub async fn resolve(&self, address: &str) -> Result<ResolveResponse, ClientError> {
        self.get_as("/v1/resolve", &[("address", address.to_string())])
            .await
    }

    pub async fn links(&self, address: &str, hops: u32) -> Result<LinksResponse, ClientError> {
        self.get_as(
            "/v1/links",
            &[("address", address.to_string()), ("hops", hops.to_string())],
        )
        .await
    }

    pub async fn batch_put(&self, req: &BatchPutRequest) -> Result<BatchPutResponse, ClientError> {
        self.post_as("/v1/batch/put", req).await
    }

    pub async fn batch_get(&self, req: &BatchGetRequest) -> Result<BatchGetResponse, ClientError> {
        self.post_as("/v1/batch/get", req).await
    }

    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<CreateTokenResponse, ClientError> {
        self.post_as("/v1/tokens", req).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenView, ClientError> {
        self.delete_as(&format!("/v1/tokens/{id}"), &[]).await
    }

    pub async fn tokens(&self) -> Result<TokensResponse, ClientError> {
        self.get_as("/v1/tokens", &[]).await
    }

    pub async fn audit_tail(&self, limit: usize) -> Result<AuditTailResponse, ClientError> {
        self.get_as("/v1/audit", &[("limit", limit.to_string())])
            .await
    }

    pub async fn audit_verify(&self) -> Result<AuditVerifyResponse, ClientError> {
        self.post_as("/v1/audit/verify", &serde_json::Map::new())
            .await
    }

    pub async fn keys(&self) -> Result<KeysResponse, ClientError> {
        self.get_as("/v1/keys", &[]).await
    }

    pub async fn rotate_key(
        &self,
        req: &RotateKeyRequest,
    ) -> Result<RotateKeyResponse, ClientError> {
        self.post_as("/v1/keys/rotate", req).await
    }

    pub async fn key_status(&self) -> Result<KeyStatusResponse, ClientError> {
        self.get_as("/v1/keys/status", &[]).await
    }

    pub async fn whoami(&self) -> Result<WhoamiResponse, ClientError> {
        self.get_as("/v1/whoami", &[]).await
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get_as("/v1/status", &[]).await
    }

    pub async fn workers(&self) -> Result<WorkersResponse, ClientError> {
        self.get_as("/v1/workers", &[]).await
    }

    pub async fn run_worker(&self, name: &str) -> Result<TriggeredResponse, ClientError> {
        self.post_as(&format!("/v1/workers/{name}/run"), &serde_json::Map::new())
            .await
    }

    /// The node's health; a node that is not ready answers 503, an error
    /// here.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.get_as("/health", &[]).await
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse, ClientError> {
        self.get_as("/v1/cluster", &[]).await
    }

    pub async fn cluster_placement(&self, address: &str) -> Result<PlacementResponse, ClientError> {
        self.get_as("/v1/cluster/placement", &[("address", address.to_string())])
            .await
    }

    /// Which of `addresses` the node stores a copy of itself.
    pub async fn cluster_holdings(
        &self,
        addresses: Vec<String>,
    ) -> Result<slurp_protocol::api::HoldingsResponse, ClientError> {
        self.post_as(
            "/v1/cluster/holdings",
            &slurp_protocol::api::HoldingsRequest { addresses },
        )
        .await
    }

    pub async fn cluster_init(&self) -> Result<ClusterInitResponse, ClientError> {
        self.post_as("/v1/cluster/init", &serde_json::Map::new())
            .await
    }

    pub async fn cluster_invite(&self, req: &InviteRequest) -> Result<InviteResponse, ClientError> {
        self.post_as("/v1/cluster/invites", req).await
    }

    pub async fn cluster_invites(&self) -> Result<InvitesResponse, ClientError> {
        self.get_as("/v1/cluster/invites", &[]).await
    }

    pub async fn cluster_join(&self, req: &JoinRequest) -> Result<JoinResponse, ClientError> {
        self.post_as("/v1/cluster/join", req).await
    }

    pub async fn cluster_grant(&self, req: &GrantRequest) -> Result<GrantResponse, ClientError> {
        self.post_as("/v1/cluster/grant", req).await
    }

    pub async fn cluster_remove(&self, req: &RemoveRequest) -> Result<RemoveResponse, ClientError> {
        self.post_as("/v1/cluster/remove", req).await
    }

    pub async fn cluster_apply(&self) -> Result<ApplyResponse, ClientError> {
        self.post_as("/v1/cluster/apply", &serde_json::Map::new())
            .await
    }
}

/// The innermost cause of an error: "Connection refused (os error 111)"
/// rather than reqwest's "error sending request for url (...)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_lists_and_bare_host_ports() {
        let e = Endpoints::parse("127.0.0.1:7101, http://h:2/,https://x.example").unwrap();
        assert_eq!(
            e.urls(),
            ["http://127.0.0.1:7101", "http://h:2", "https://x.example"]
        );
        assert!(Endpoints::parse("").unwrap_err().contains("no node"));
        assert!(
            Endpoints::parse("ftp://h:1")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(Endpoints::parse("http://[::1").is_err());
    }

    /// A port nobody listens on: port 1 (tcpmux) is privileged and
    /// unused, where a port freed here could be taken by another test.
    fn dead_port() -> std::net::SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[tokio::test]
    async fn fails_over_to_a_node_that_answers_and_says_why_when_none_does() {
        let dead = dead_port();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = live.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = "{\"ok\":true}";
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let c = Client::new(
            &format!("{dead},{live_addr}"),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        let v = c.get("/v1/x", &[]).await.unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(c.base(), format!("http://{live_addr}"));

        let c = Client::new(&dead.to_string(), None, Duration::from_secs(10)).unwrap();
        let e = c.get("/v1/x", &[]).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(
            e.message.to_lowercase().contains("connection refused"),
            "{}",
            e.message
        );
        assert!(e.message.contains(&dead.to_string()), "{}", e.message);
    }
}
