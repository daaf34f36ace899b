//! The HTTP API: JSON over HTTP, versioned under `/v1`.
//!
//! Every `/v1` route needs a bearer token; the token's role is the role the
//! request acts as, so the API never trusts a role named in a body. Errors
//! are JSON `{"error": {"code", "message"}}` with a status that tells
//! not-found (404), deleted (410), forbidden (403), conflict (409) and bad
//! input (400) apart; bad input never yields a 500. Request bodies are
//! limited in size, requests in number and time, all from `[api]` config.
//! `/health*` and `/metrics` are open: they carry no context data.
//! `docs/openapi.json` describes every route; a test keeps the two equal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use slurp_index::SearchQuery;
use slurp_protocol::api::{
    self as wire, ApplyResponse, BatchGetRequest, BatchPutRequest, BatchesResponse,
    ClusterInitResponse, Component, CreateTokenRequest, CreateTokenResponse, ErrorBody,
    ErrorDetail, ExistsResponse, GrantRequest, HealthComponents, HealthResponse, HistoryResponse,
    InviteRequest, InviteResponse, InviteView, InvitesResponse, JoinRequest, JoinResponse,
    KeyStatusResponse, KeysResponse, LiveResponse, PlacementResponse, RemoveRequest,
    RemoveResponse, ReplicaView, RewrapStatus, RoleKeyStatus, RotateKeyRequest, RotateKeyResponse,
    StatusResponse, TimeArg, TokensResponse, TriggeredResponse, WhoamiResponse, WorkersResponse,
};
use slurp_protocol::{Authority, UcxlAddress};

use crate::error::StoreError;
use crate::metrics::{HttpLabels, RouteLabels};
use crate::node::Node;
use crate::store::{PutRequest, QuorumOpts};
use crate::tokens::{Principal, TokenEntry, TokenError, TokenLimits, TokenUse};

/// An API error: a status and a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code,
                    message: self.message,
                },
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Address(_)
            | StoreError::Invalid(_)
            | StoreError::BadRequest(_)
            | StoreError::Search(_)
            | StoreError::InvalidQuery(_)
            | StoreError::TooMany { .. } => StatusCode::BAD_REQUEST,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Deleted { .. } => StatusCode::GONE,
            StoreError::Forbidden { .. } | StoreError::NoKey(_) => StatusCode::FORBIDDEN,
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::Timeout(_) | StoreError::Quorum { .. } | StoreError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StoreError::Storage(_)
            | StoreError::Crypto(_)
            | StoreError::Index(_)
            | StoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match &r {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "bad_json"
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_query_string", r.body_text())
    }
}

/// `Json` whose rejection is an [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiJson(Json::<T>::from_request(req, state).await?.0))
    }
}

/// `Query` whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiQuery(
            axum::extract::Query::<T>::from_request_parts(parts, state)
                .await?
                .0,
        ))
    }
}

type Shared = Arc<Node>;

/// The authenticated caller.
pub struct Caller(pub Principal);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, node: &Shared) -> Result<Self, Self::Rejection> {
        if let Some(ForwardedCaller(p)) = parts.extensions.get::<ForwardedCaller>() {
            return Ok(Caller(p.clone()));
        }
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing Authorization: Bearer <token>",
                )
            })?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "expected a Bearer token",
            )
        })?;
        // The address of the connection, never a header: network limits
        // are checked by the node the client connected to (a call it
        // forwards to a member carries the caller it authenticated).
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        // A token made on another member is looked up there (hashes only,
        // with the token's limits).
        let found = node
            .tokens
            .authenticate_with(token.trim(), TokenUse::now(client), |id| async move {
                let record = node.cluster.find_token(&id).await?;
                TokenEntry::from_record(record)
                    .map_err(|e| tracing::warn!(token = %id, error = %e, "a member sent a token whose limits do not parse; refusing it"))
                    .ok()
            })
            .await;
        match found {
            Ok(p) => Ok(Caller(p)),
            Err(TokenError::Refused { principal, refusal }) => {
                let target: String = format!("{} {}", parts.method, parts.uri.path())
                    .chars()
                    .take(256)
                    .collect();
                node.store
                    .audit()
                    .deny(
                        &principal.token_id,
                        &principal.role,
                        slurp_crypto::AuditAction::Other("authenticate".into()),
                        &target,
                        &format!("{}: {refusal}", refusal.code()),
                    )
                    .await;
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    refusal.code(),
                    refusal.to_string(),
                ))
            }
            Err(TokenError::Malformed) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "token is malformed",
            )),
            Err(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "token is unknown or revoked",
            )),
        }
    }
}

/// The caller of a call another cluster member forwarded here, already
/// authenticated there. Set only by [`serve_forward`]; an HTTP client
/// cannot set request extensions.
#[derive(Clone)]
pub struct ForwardedCaller(pub Principal);

/// Serves an API call forwarded by another member through the router, as
/// the caller it names.
/// Makes `app` answer the API calls other nodes forward to `node`.
pub fn serve_forwarded_calls(node: &Node, app: Router) {
    let _ = node.forwarder.set(Arc::new(move |req| {
        let router = app.clone();
        Box::pin(serve_forward(router, req))
    }));
}

pub async fn serve_forward(
    router: Router,
    req: slurp_protocol::messages::ForwardRequest,
) -> slurp_protocol::messages::ForwardResponse {
    use slurp_protocol::messages::{ErrorCode, ForwardRequest, ForwardResponse, RemoteError};
    use tower::ServiceExt;
    let refuse = |code, message: String| ForwardResponse::Error(RemoteError { code, message });
    let ForwardRequest::Call {
        method,
        path,
        content_type,
        body,
        caller_role,
        request_id,
        ..
    } = req;
    if !path.starts_with("/v1/") {
        return refuse(
            ErrorCode::BadRequest,
            format!("{path:?} is not an API path"),
        );
    }
    let mut builder = axum::http::Request::builder()
        .method(method.as_str())
        .uri(&path);
    if let Some(ct) = &content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    let mut request = match builder.body(axum::body::Body::from(body.0)) {
        Ok(r) => r,
        Err(e) => return refuse(ErrorCode::BadRequest, e.to_string()),
    };
    request.extensions_mut().insert(ForwardedCaller(Principal {
        token_id: format!("forwarded:{}", request_id.unwrap_or_default()),
        role: caller_role,
    }));
    let response = match router.oneshot(request).await {
        Ok(r) => r,
        Err(e) => return refuse(ErrorCode::Internal, e.to_string()),
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await {
        Ok(b) => ForwardResponse::Reply {
            status,
            content_type,
            body: b.to_vec().into(),
        },
        Err(e) => refuse(ErrorCode::Internal, e.to_string()),
    }
}

/// Routes that carry context data: a node outside the layout hands them
/// to a member, which coordinates them.
fn forwardable(path: &str) -> bool {
    [
        "/v1/contexts",
        "/v1/list",
        "/v1/search",
        "/v1/batch/",
        "/v1/resolve",
        "/v1/links",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

/// Forwards data calls to a layout member when this node is not one.
async fn forward_if_not_member(State(node): State<Shared>, req: Request, next: Next) -> Response {
    use slurp_protocol::messages::{ForwardRequest, ForwardResponse};
    let cluster = &node.cluster;
    let Some(layout) = cluster.layout() else {
        return next.run(req).await;
    };
    if cluster.is_member()
        || !forwardable(req.uri().path())
        || req.extensions().get::<ForwardedCaller>().is_some()
    {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &node).await {
        Ok(Caller(p)) => p,
        Err(e) => return e.into_response(),
    };
    let limit = node.config.api.max_body_bytes;
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "body over the limit",
            )
            .into_response();
        }
    };
    let mut members = crate::cluster::layout_peers(&layout);
    cluster.order(&mut members);
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let mut last = String::from("no member in the layout");
    let method = parts.method.to_string();
    let proof = node
        .custody
        .forward_proof(&caller.role, cluster.me_id(), &method, &path, &body)
        .map(|p| p.to_vec().into());
    for peer in members.iter().take(3) {
        let call = ForwardRequest::Call {
            method: method.clone(),
            path: path.clone(),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: body.to_vec().into(),
            caller_role: caller.role.clone(),
            request_id: None,
            proof: proof.clone(),
            authorisation: None,
        };
        match cluster
            .forward(peer, call, node.config.api.request_timeout)
            .await
        {
            Ok(ForwardResponse::Reply {
                status,
                content_type,
                body,
            }) => {
                let mut resp = Response::new(axum::body::Body::from(body.0));
                *resp.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                if let Some(ct) = content_type
                    && let Ok(v) = ct.parse()
                {
                    resp.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                return resp;
            }
            Ok(ForwardResponse::Error(e)) => last = e.message,
            Err(e) => last = e.to_string(),
        }
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("this node is not a cluster member and no member took the call: {last}"),
    )
    .into_response()
}

fn require_admin(node: &Node, caller: &Principal) -> Result<(), ApiError> {
    if node.store.roles().authority(&caller.role) == Some(Authority::Master) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "role {} may not manage the node (needs master authority)",
                caller.role
            ),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressQuery {
    address: String,
    /// Read quorum for this request (cluster only).
    #[serde(default)]
    r: Option<usize>,
    /// Write quorum for this request (cluster only).
    #[serde(default)]
    w: Option<usize>,
}

impl AddressQuery {
    fn opts(&self) -> QuorumOpts {
        QuorumOpts {
            w: self.w,
            r: self.r,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QuorumQuery {
    #[serde(default)]
    r: Option<usize>,
    #[serde(default)]
    w: Option<usize>,
}

fn parse_address(s: &str) -> Result<UcxlAddress, ApiError> {
    UcxlAddress::parse(s).map_err(|e| StoreError::Address(e).into())
}

async fn put_context(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<QuorumQuery>,
    ApiJson(req): ApiJson<PutRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let opts = QuorumOpts { w: q.w, r: q.r };
    let r = node.store.put_opts(&caller, req, opts).await?;
    let status = if r.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(r)))
}

async fn get_context(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AddressQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = parse_address(&q.address)?;
    Ok(Json(node.store.get_opts(&caller, &a, q.opts()).await?))
}

async fn delete_context(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AddressQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = parse_address(&q.address)?;
    Ok(Json(node.store.delete_opts(&caller, &a, q.opts()).await?))
}

async fn history(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AddressQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = parse_address(&q.address)?;
    let versions = node.store.history_opts(&caller, &a, q.opts()).await?;
    Ok(Json(HistoryResponse {
        address: a.with_temporal(slurp_protocol::Temporal::Any).to_string(),
        versions,
    }))
}

async fn exists(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AddressQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = parse_address(&q.address)?;
    Ok(Json(ExistsResponse {
        exists: node.store.exists_opts(&caller, &a, q.opts()).await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    pattern: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn list(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let p = parse_address(&q.pattern)?;
    Ok(Json(
        node.store
            .list(&caller, &p, q.after.as_deref(), q.limit.unwrap_or(100))
            .await?,
    ))
}

/// Search: the body is a `SearchQuery` of the index whose `role` is
/// always the caller's (a `role` in the body is replaced).
async fn search(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(mut body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> Result<impl IntoResponse, ApiError> {
    body.insert("role".into(), caller.role.to_string().into());
    let q: SearchQuery = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    Ok(Json(node.store.search(&caller, q).await?))
}

async fn batch_put(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<BatchPutRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        node.store
            .batch_put(&caller, body.items, body.atomic)
            .await?,
    ))
}

async fn batch_get(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<BatchGetRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(node.store.batch_get(&caller, body.addresses).await?))
}

async fn batches(State(node): State<Shared>, Caller(_): Caller) -> impl IntoResponse {
    Json(BatchesResponse {
        batches: node.store.batches().list(),
    })
}

async fn resolve(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AddressQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = parse_address(&q.address)?;
    Ok(Json(node.store.resolve(&caller, &a).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinksQuery {
    address: String,
    #[serde(default)]
    hops: Option<u32>,
}

async fn links(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<LinksQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = parse_address(&q.address)?;
    Ok(Json(
        node.store.links(&caller, &a, q.hops.unwrap_or(1)).await?,
    ))
}

/// The milliseconds of a time in a request.
fn time_ms(t: &TimeArg, field: &str) -> Result<u64, String> {
    match t {
        TimeArg::Ms(ms) => Ok(*ms),
        TimeArg::Text(s) => crate::tokens::parse_time(s).map_err(|e| format!("{field}: {e}")),
    }
}

/// The limits a token request asks for, checked.
fn token_limits(body: &CreateTokenRequest) -> Result<TokenLimits, String> {
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let allow_from = body
            .allow_from
            .iter()
            .enumerate()
            .map(|(i, n)| {
                crate::tokens::parse_network(n).map_err(|e| format!("allow_from[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let not_before_ms = body
            .not_before
            .as_ref()
            .map(|t| time_ms(t, "not_before"))
            .transpose()?;
        let mut not_after_ms = body
            .not_after
            .as_ref()
            .map(|t| time_ms(t, "not_after"))
            .transpose()?;
        if let Some(d) = &body.valid_for {
            if not_after_ms.is_some() {
                return Err("give not_after or valid_for, not both".into());
            }
            let d = humantime::parse_duration(d).map_err(|e| {
                format!("valid_for: `{d}` is not a duration such as 1h or 30m ({e})")
            })?;
            let from = not_before_ms.unwrap_or(now);
            not_after_ms = Some(from.saturating_add(d.as_millis().min(u64::MAX as u128) as u64));
        }
        let limits = TokenLimits {
            allow_from,
            not_before_ms,
            not_after_ms,
        };
        limits.validate(now)?;
        Ok(limits)
    }
}

async fn create_token(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    let role = node
        .store
        .roles()
        .get(&body.role)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "unknown_role", e.to_string()))?;
    let limits = token_limits(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    let (entry, token) = node
        .tokens
        .create_limited(role, &body.label, limits)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "tokens", e.to_string()))?;
    node.store
        .audit()
        .allow(
            &caller.token_id,
            &caller.role,
            slurp_crypto::AuditAction::Other("token_create".into()),
            &entry.id,
        )
        .await;
    node.cluster.share_tokens(vec![entry.to_record()]);
    Ok((
        StatusCode::CREATED,
        Json(CreateTokenResponse {
            allow_from: entry
                .limits
                .allow_from
                .iter()
                .map(ToString::to_string)
                .collect(),
            not_before_ms: entry.limits.not_before_ms,
            not_after_ms: entry.limits.not_after_ms,
            id: entry.id,
            role: entry.role,
            label: entry.label,
            token: token.to_string(),
        }),
    ))
}

async fn list_tokens(
    State(node): State<Shared>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    Ok(Json(TokensResponse {
        tokens: node.tokens.list().into_iter().map(token_view).collect(),
    }))
}

async fn revoke_token(
    State(node): State<Shared>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    let entry = node.tokens.revoke(&id).map_err(|e| match e {
        TokenError::NoSuchId(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "tokens", e.to_string()),
    })?;
    node.store
        .audit()
        .allow(
            &caller.token_id,
            &caller.role,
            slurp_crypto::AuditAction::Other("token_revoke".into()),
            &id,
        )
        .await;
    node.cluster.share_tokens(vec![entry.to_record()]);
    Ok(Json(token_view(entry)))
}

/// [`require_admin`] for the audit and key routes, which are themselves
/// audited: the call is recorded as `action` on `target`, allowed or denied.
async fn admin_audited(
    node: &Node,
    caller: &Principal,
    action: &str,
    target: &str,
) -> Result<(), ApiError> {
    let action_of = || slurp_crypto::AuditAction::Other(action.into());
    match require_admin(node, caller) {
        Ok(()) => {
            node.store
                .audit()
                .allow(&caller.token_id, &caller.role, action_of(), target)
                .await;
            Ok(())
        }
        Err(e) => {
            node.store
                .audit()
                .deny(
                    &caller.token_id,
                    &caller.role,
                    action_of(),
                    target,
                    "needs master authority",
                )
                .await;
            Err(e)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Entries to return, the newest last.
    #[serde(default = "default_audit_limit")]
    limit: usize,
}

fn default_audit_limit() -> usize {
    20
}

/// Most entries one tail returns.
const MAX_AUDIT_TAIL: usize = 10_000;

/// The last entries of the node's audit log (admin). Includes this call.
async fn audit_tail(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    admin_audited(&node, &caller, "audit_tail", "audit.log").await?;
    node.store.audit().flush().await;
    let (log, limit) = (node.audit_log.clone(), q.limit.min(MAX_AUDIT_TAIL));
    let tail = tokio::task::spawn_blocking(move || crate::audit::tail(&log, limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "audit", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "audit", e.to_string()))?;
    Ok(Json(tail))
}

/// Verifies the whole hash chain of the audit log and its head file
/// (admin). A broken chain is `ok: false` with a 200: the check worked.
async fn audit_verify(
    State(node): State<Shared>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    admin_audited(&node, &caller, "audit_verify", "audit.log").await?;
    node.store.audit().flush().await;
    let log = node.audit_log.clone();
    let mut verdict = tokio::task::spawn_blocking(move || crate::audit::verify(&log))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "audit", e.to_string()))?;
    // Against the heads the other members hold: a log cut short together
    // with its head file is found here.
    for (member, held) in node.cluster.held_heads_of_me().await {
        let check = match held {
            Ok(head) => {
                let log = node.audit_log.clone();
                let r = tokio::task::spawn_blocking(move || log.verify_against(Some(head)))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                crate::cluster::anchors::AnchorCheck {
                    member: member.to_base58(),
                    head: Some(head.to_string()),
                    ok: r.is_ok(),
                    error: r.err(),
                }
            }
            Err(e) => crate::cluster::anchors::AnchorCheck {
                member: member.to_base58(),
                head: None,
                ok: false,
                error: Some(format!("the head it holds is not valid: {e}")),
            },
        };
        if !check.ok {
            verdict.ok = false;
        }
        verdict.anchors.push(check);
    }
    Ok(Json(verdict))
}

/// Every role key this node knows, by fingerprint (admin).
async fn list_keys(
    State(node): State<Shared>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    admin_audited(&node, &caller, "key_list", "keys").await?;
    Ok(Json(KeysResponse {
        keys: node.custody.key_views(),
    }))
}

async fn rotate_key(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<RotateKeyRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    if !node.store.roles().contains(&body.role) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_role",
            format!("role {} is not in the roles file", body.role),
        ));
    }
    let (epoch, fingerprint) = node
        .cluster
        .rotate(&body.role)
        .await
        .map_err(cluster_error)?;
    node.store
        .audit()
        .allow(
            &caller.token_id,
            &caller.role,
            slurp_crypto::AuditAction::KeyRotate,
            &fingerprint.to_hex(),
        )
        .await;
    // Start moving stored records onto the new epoch now.
    let _ = node.workers.trigger("key-rewrap");
    Ok(Json(RotateKeyResponse {
        role: body.role,
        epoch,
        fingerprint: fingerprint.to_hex(),
        directory_version: node.cluster.keys_version(),
    }))
}

/// Every role's current epoch, what this node holds, and how far the
/// rewrap of stored records is.
async fn key_status(
    State(node): State<Shared>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    admin_audited(&node, &caller, "key_status", "keys").await?;
    let keyring = node.custody.keyring();
    let mut roles = Vec::new();
    for role in node.store.roles().roles() {
        let current = keyring.current_public(role);
        roles.push(RoleKeyStatus {
            role: role.clone(),
            current_epoch: current.map(|k| k.epoch()),
            current_fingerprint: current.map(|k| k.fingerprint().to_hex()),
            held_epochs: keyring
                .keys()
                .filter(|k| k.role() == role)
                .map(|k| k.epoch())
                .collect(),
        });
    }
    let worker = node.workers.get("key-rewrap");
    Ok(Json(KeyStatusResponse {
        directory_version: node.cluster.keys_version(),
        keys_held: node.cluster.granted_roles_held(),
        roles,
        rewrap: RewrapStatus {
            pending: node.metrics.key_rewrap_pending.get(),
            worker,
        },
    }))
}

async fn whoami(Caller(caller): Caller) -> impl IntoResponse {
    Json(WhoamiResponse {
        token_id: caller.token_id,
        role: caller.role,
    })
}

async fn status(
    State(node): State<Shared>,
    Caller(_): Caller,
) -> Result<impl IntoResponse, ApiError> {
    let stats = node.store.local().stats().map_err(StoreError::from)?;
    let index = match node.store.index() {
        Some(i) => {
            let s = i.status().map_err(StoreError::from)?;
            wire::IndexStatus {
                enabled: true,
                ready: Some(s.coverage.is_complete()),
                docs: Some(s.docs),
                segments: Some(s.segments as u64),
                bytes: Some(s.index_bytes),
                pending_ops: Some(s.pending_ops as u64),
                coverage: Some(s.coverage),
                unopenable: Some(wire::UnopenableCounts {
                    total: s.unopenable.total(),
                    no_key: s.unopenable.no_key,
                    corrupt: s.unopenable.corrupt,
                }),
            }
        }
        None => wire::IndexStatus::disabled(),
    };
    let keyring = node.custody.keyring();
    let roles = node.store.roles();
    Ok(Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_string(),
        writer_id: node.store.writer().as_str().to_string(),
        store: wire::StoreStatus {
            keys: stats.keys,
            versions: stats.versions,
            tombstones: stats.tombstones,
            expiring: stats.expiring,
            file_bytes: stats.file_bytes,
            stored_bytes: stats.stored_bytes,
        },
        index,
        cache: wire::CacheStatus {
            entries: node.store.cache().entry_count(),
            bytes: node.store.cache().weighted_size(),
        },
        workers: node.workers.list(),
        batches: node.store.batches().list(),
        roles: roles.roles().cloned().collect(),
        keys: roles
            .roles()
            .map(|r| {
                (
                    r.to_string(),
                    keyring.current_public(r).map(|k| k.fingerprint().to_hex()),
                )
            })
            .collect(),
        cluster: wire::ClusterSummary {
            peer_id: node.cluster.me().to_string(),
            layout_version: node.cluster.layout_version(),
            member: node.cluster.is_member(),
            members: node
                .cluster
                .layout()
                .map(|l| l.members().len())
                .unwrap_or(0),
        },
    }))
}

async fn cluster_status(State(node): State<Shared>, Caller(_): Caller) -> impl IntoResponse {
    let mut status = node.cluster.status();
    status.anti_entropy = node.anti_entropy.status();
    status.transition = node.rebalance.status();
    Json(status)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementQuery {
    address: String,
}

/// Which of the given addresses this node stores a copy of (admin).
async fn cluster_holdings(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<slurp_protocol::api::HoldingsRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    let max = node.config.store_options.batch_size.max(1);
    if body.addresses.len() > max {
        return Err(StoreError::BadRequest(format!(
            "{} addresses, over the limit of {max}",
            body.addresses.len()
        ))
        .into());
    }
    let mut held = Vec::with_capacity(body.addresses.len());
    for a in &body.addresses {
        let key = parse_address(a)?.key();
        let meta = node
            .store
            .local()
            .latest_meta(&key)
            .map_err(StoreError::from)?;
        held.push(meta.map(|(m, _)| m.version.to_string()));
    }
    Ok(Json(slurp_protocol::api::HoldingsResponse {
        layout_version: node.cluster.layout_version(),
        held,
    }))
}

/// Where an address lives: its partition and replicas, in the order
/// requests try them from this node.
async fn cluster_placement(
    State(node): State<Shared>,
    Caller(_): Caller,
    ApiQuery(q): ApiQuery<PlacementQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let a = parse_address(&q.address)?;
    let route = node
        .cluster
        .route(&a.key())
        .ok_or_else(|| cluster_error(crate::cluster::ClusterError::NoLayout))?;
    let me = node.cluster.me();
    let replicas: Vec<_> = route
        .replicas
        .iter()
        .map(|id| {
            let p = node.cluster.peers().view(id);
            let is_self = *id == me;
            ReplicaView {
                id: id.to_base58(),
                name: if is_self {
                    Some(node.store.writer().as_str().to_string())
                } else {
                    p.name
                },
                api_addr: if is_self {
                    Some(node.config.api.listen.to_string())
                } else {
                    p.api_addr
                },
                up: is_self || p.up,
            }
        })
        .collect();
    Ok(Json(PlacementResponse {
        address: a.to_string(),
        partition: route.partition.0,
        layout_version: route.layout.version(),
        replicas,
        fallbacks: route.fallbacks().iter().map(|p| p.to_base58()).collect(),
    }))
}

fn cluster_error(e: crate::cluster::ClusterError) -> ApiError {
    use crate::cluster::ClusterError as E;
    match e {
        E::BadPeerId(_) | E::Layout(_) | E::NothingStaged => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_layout", e.to_string())
        }
        E::NoLayout => ApiError::new(StatusCode::CONFLICT, "no_layout", e.to_string()),
        E::NotInitialized => ApiError::new(StatusCode::CONFLICT, "no_cluster", e.to_string()),
        E::AlreadyInitialized(_) => {
            ApiError::new(StatusCode::CONFLICT, "already_initialized", e.to_string())
        }
        E::KeyUnavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "key_unavailable",
            e.to_string(),
        ),
        E::Refused(_) | E::Remote(..) => {
            ApiError::new(StatusCode::BAD_GATEWAY, "refused", e.to_string())
        }
        _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cluster", e.to_string()),
    }
}

async fn cluster_join(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<JoinRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    // A peer that has no certificate yet gets one first (it must be
    // connected to this node).
    if let Some(peer) = body.peer.as_deref()
        && peer != node.cluster.me_id()
        && let Ok(id) = peer.parse::<libp2p::PeerId>()
        && !node.cluster.admits(&id)
    {
        node.cluster
            .certify_peer(peer)
            .await
            .map_err(cluster_error)?;
    }
    let m = node
        .cluster
        .stage_join(body.peer.as_deref(), body.zone, body.capacity)
        .map_err(cluster_error)?;
    Ok(Json(JoinResponse {
        staged: m,
        pending: node.cluster.status().staged,
    }))
}

async fn cluster_init(
    State(node): State<Shared>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    let l = node.cluster.init().await.map_err(cluster_error)?;
    let status = node.cluster.status();
    Ok(Json(ClusterInitResponse {
        cluster: status.cluster,
        layout_version: l.version(),
        members: l.members().len(),
        certificate_not_after_ms: status.certificate_not_after_ms,
    }))
}

async fn cluster_invite(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<InviteRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    if let Some(roles) = &body.roles
        && let Some(r) = roles.iter().find(|r| !node.store.roles().contains(r))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_role",
            format!("role {r} is not in the roles file"),
        ));
    }
    let ttl = body
        .ttl
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("ttl: {e}")))?;
    let (invite, token) = node
        .cluster
        .invite(body.roles, ttl)
        .map_err(cluster_error)?;
    node.store
        .audit()
        .allow(
            &caller.token_id,
            &caller.role,
            slurp_crypto::AuditAction::Other("cluster_invite".into()),
            &invite.id,
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(InviteResponse {
            id: invite.id,
            token: token.to_string(),
            roles: invite.roles,
            not_after_ms: invite.not_after_ms,
        }),
    ))
}

async fn cluster_invites(
    State(node): State<Shared>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    let invites = node
        .cluster
        .membership()
        .invites()
        .into_iter()
        .map(|i| InviteView {
            id: i.id,
            roles: i.roles,
            created_ms: i.created_ms,
            not_after_ms: i.not_after_ms,
            used_by: i.used_by,
            used_ms: i.used_ms,
        })
        .collect();
    Ok(Json(InvitesResponse { invites }))
}

/// Certifies a member anew for exactly the roles given (fewer revoke);
/// its older certificates are void on every member.
async fn cluster_grant(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<GrantRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    let outcome = node
        .cluster
        .grant(&body.peer, body.roles)
        .await
        .map_err(cluster_error)?;
    Ok(Json(outcome))
}

async fn cluster_remove(
    State(node): State<Shared>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<RemoveRequest>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    node.cluster
        .stage_remove(&body.peer)
        .map_err(cluster_error)?;
    Ok(Json(RemoveResponse {
        pending: node.cluster.status().staged,
    }))
}

async fn cluster_apply(
    State(node): State<Shared>,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    let before = node.cluster.layout();
    let l = node.cluster.apply().await.map_err(cluster_error)?;
    let moved = before.map(|b| b.diff(&l).moved_replicas()).unwrap_or(0);
    node.store
        .audit()
        .allow(
            &caller.token_id,
            &caller.role,
            slurp_crypto::AuditAction::Other("layout_apply".into()),
            &l.version().to_string(),
        )
        .await;
    Ok(Json(ApplyResponse {
        version: l.version(),
        members: l.members().to_vec(),
        replication_factor: l.replication_factor(),
        partitions: l.partitions().count(),
        moved_replicas: moved,
    }))
}

async fn workers(State(node): State<Shared>, Caller(_): Caller) -> impl IntoResponse {
    Json(WorkersResponse {
        workers: node.workers.list(),
    })
}

async fn run_worker(
    State(node): State<Shared>,
    Caller(caller): Caller,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    require_admin(&node, &caller)?;
    node.workers
        .trigger(&name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggeredResponse { triggered: name }),
    ))
}

fn component(ok: bool, detail: String) -> Component {
    Component::new(ok, detail)
}

/// Liveness and readiness with per-component status.
async fn health(State(node): State<Shared>) -> impl IntoResponse {
    let store = match node.store.local().stats() {
        Ok(s) => component(true, format!("{} keys, {} versions", s.keys, s.versions)),
        Err(e) => component(false, e.to_string()),
    };
    // Ready once the index holds everything in the store: not while it is
    // rebuilt from it, nor after a failed rebuild. Records this node holds
    // but cannot open are normal (sealed to roles it holds no key for):
    // they are named, and do not make it unready.
    let index = match node.store.index() {
        None => component(true, "disabled".into()),
        Some(i) => match i.status() {
            Ok(s) => {
                let u = s.unopenable;
                let unopenable = if u.total() > 0 {
                    format!(
                        "; {} held but not openable here (no key: {}, corrupt: {})",
                        u.total(),
                        u.no_key,
                        u.corrupt
                    )
                } else {
                    String::new()
                };
                match &s.coverage {
                    slurp_index::Coverage::Complete => component(
                        true,
                        format!("{} docs in {} segments{unopenable}", s.docs, s.segments),
                    ),
                    c => component(false, format!("{c}{unopenable}")),
                }
            }
            Err(e) => component(false, e.to_string()),
        },
    };
    let cache = component(
        true,
        format!("{} entries", node.store.cache().entry_count()),
    );
    // A member needs the keys of the roles its certificate grants (they
    // arrive through the swarm after it joins); a node on its own needs
    // a key of every role.
    let keyring = node.custody.keyring();
    let c = node.cluster.status();
    let needed: Vec<slurp_protocol::RoleName> = match node.cluster.identity() {
        Some(id) => id.cert.roles.clone(),
        None => node.store.roles().roles().cloned().collect(),
    };
    let missing: Vec<String> = needed
        .iter()
        .filter(|r| keyring.current(r).is_none())
        .map(|r| r.to_string())
        .collect();
    let keys = if let Some(e) = &c.join_error {
        component(false, format!("joining the cluster failed: {e}"))
    } else if node.cluster.identity().is_none() && node.config.cluster.join_token.is_some() {
        component(false, "joining the cluster with the join token".into())
    } else if missing.is_empty() {
        component(true, format!("{} role keys held", keyring.len()))
    } else {
        component(false, format!("no key for roles {}", missing.join(", ")))
    };
    // The cluster component informs; it does not gate readiness (a node
    // serves what its quorums allow, and says so per request).
    let cluster = match (c.layout_version, c.member) {
        (0, _) => component(true, "no layout: serving alone".into()),
        (v, member) => {
            let up = c.members.iter().filter(|m| m.peer.up).count();
            component(
                true,
                format!(
                    "layout v{v}, {up} of {} members up{}",
                    c.members.len(),
                    if member {
                        ""
                    } else {
                        ", this node is not a member"
                    }
                ),
            )
        }
    };
    let ready = [&store, &index, &keys].iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(HealthResponse {
            live: true,
            ready,
            components: HealthComponents {
                cache,
                cluster,
                index,
                keys,
                store,
            },
        }),
    )
}

async fn live() -> impl IntoResponse {
    Json(LiveResponse { live: true })
}

async fn ready(state: State<Shared>) -> Response {
    health(state).await.into_response()
}

/// Prometheus metrics: OpenMetrics when the scraper asks for it (as
/// Prometheus does), the classic text format otherwise.
async fn metrics(State(node): State<Shared>, req_headers: HeaderMap) -> impl IntoResponse {
    let open_metrics = req_headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let mut headers = HeaderMap::new();
    let (ctype, body) = if open_metrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            node.metrics.encode(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            node.metrics.encode_classic(),
        )
    };
    headers.insert(header::CONTENT_TYPE, ctype.parse().expect("static header"));
    (headers, body)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such route; see docs/openapi.json",
    )
}

/// Counts and times every request by route.
/// One request counted in the in-flight gauge until dropped (a request
/// cut short by its timeout too).
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn enter(g: &prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        InFlight(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn observe(State(node): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let start = Instant::now();
    let in_flight = InFlight::enter(&node.metrics.api_in_flight);
    let resp = next.run(req).await;
    drop(in_flight);
    node.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method,
            status: resp.status().as_u16(),
        })
        .inc();
    node.metrics
        .http_seconds
        .get_or_create(&RouteLabels { route })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// The token as the API shows it: its limits as text.
fn token_view(t: TokenEntry) -> wire::TokenView {
    wire::TokenView {
        id: t.id,
        role: t.role,
        secret_hash: t.secret_hash,
        label: t.label,
        created_at_ms: t.created_at_ms,
        revoked_at_ms: t.revoked_at_ms,
        allow_from: t
            .limits
            .allow_from
            .iter()
            .map(ToString::to_string)
            .collect(),
        not_before_ms: t.limits.not_before_ms,
        not_after_ms: t.limits.not_after_ms,
    }
}

/// Every route of the API as (method, path), for the OpenAPI check.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("post", "/v1/contexts"),
    ("get", "/v1/contexts"),
    ("delete", "/v1/contexts"),
    ("get", "/v1/contexts/history"),
    ("get", "/v1/contexts/exists"),
    ("get", "/v1/list"),
    ("post", "/v1/search"),
    ("post", "/v1/batch/put"),
    ("post", "/v1/batch/get"),
    ("get", "/v1/batches"),
    ("get", "/v1/resolve"),
    ("get", "/v1/links"),
    ("post", "/v1/tokens"),
    ("get", "/v1/tokens"),
    ("delete", "/v1/tokens/{id}"),
    ("get", "/v1/audit"),
    ("post", "/v1/audit/verify"),
    ("get", "/v1/keys"),
    ("post", "/v1/keys/rotate"),
    ("get", "/v1/keys/status"),
    ("get", "/v1/whoami"),
    ("get", "/v1/status"),
    ("get", "/v1/workers"),
    ("post", "/v1/workers/{name}/run"),
    ("get", "/v1/cluster"),
    ("get", "/v1/cluster/placement"),
    ("post", "/v1/cluster/holdings"),
    ("post", "/v1/cluster/init"),
    ("post", "/v1/cluster/invites"),
    ("get", "/v1/cluster/invites"),
    ("post", "/v1/cluster/join"),
    ("post", "/v1/cluster/remove"),
    ("post", "/v1/cluster/grant"),
    ("post", "/v1/cluster/apply"),
];

/// The API router over a node.
pub fn router(node: Shared) -> Router {
    let cfg = node.config.api.clone();
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/v1/contexts",
            post(put_context).get(get_context).delete(delete_context),
        )
        .route("/v1/contexts/history", get(history))
        .route("/v1/contexts/exists", get(exists))
        .route("/v1/list", get(list))
        .route("/v1/search", post(search))
        .route("/v1/batch/put", post(batch_put))
        .route("/v1/batch/get", post(batch_get))
        .route("/v1/batches", get(batches))
        .route("/v1/resolve", get(resolve))
        .route("/v1/links", get(links))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/audit", get(audit_tail))
        .route("/v1/audit/verify", post(audit_verify))
        .route("/v1/keys", get(list_keys))
        .route("/v1/keys/rotate", post(rotate_key))
        .route("/v1/keys/status", get(key_status))
        .route("/v1/whoami", get(whoami))
        .route("/v1/status", get(status))
        .route("/v1/workers", get(workers))
        .route("/v1/workers/{name}/run", post(run_worker))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/cluster/placement", get(cluster_placement))
        .route("/v1/cluster/holdings", post(cluster_holdings))
        .route("/v1/cluster/init", post(cluster_init))
        .route(
            "/v1/cluster/invites",
            post(cluster_invite).get(cluster_invites),
        )
        .route("/v1/cluster/join", post(cluster_join))
        .route("/v1/cluster/remove", post(cluster_remove))
        .route("/v1/cluster/grant", post(cluster_grant))
        .route("/v1/cluster/apply", post(cluster_apply))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            node.clone(),
            forward_if_not_member,
        ))
        .layer(middleware::from_fn_with_state(node.clone(), observe))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            cfg.max_concurrent_requests.max(1),
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            cfg.request_timeout,
        ))
        .with_state(node)
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    node: Shared,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(node.clone());
    serve_forwarded_calls(&node, app.clone());
    // The connection's address reaches handlers as `ConnectInfo`, for the
    // network limits of tokens.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[cfg(test)]
mod tests {
    use super::ROUTES;
    use std::collections::BTreeSet;

    /// `docs/openapi.json` describes exactly the routes the router serves.
    #[test]
    fn openapi_matches_the_router() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"))
                .expect("docs/openapi.json");
        let spec: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let mut documented = BTreeSet::new();
        for (path, ops) in spec["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
        // Every $ref resolves.
        for r in text.match_indices("#/components/schemas/") {
            let name: String = text[r.0 + 21..]
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            assert!(
                spec["components"]["schemas"].get(&name).is_some(),
                "dangling $ref {name}"
            );
        }
    }
}
