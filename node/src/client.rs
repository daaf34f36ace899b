//! The HTTP client the CLI and `slurp bench` use to talk to a node.
//!
//! It knows the API's routes and its error body, and turns a response into
//! either the JSON value or a [`ClientError`] whose kind decides the CLI's
//! exit code, so scripts can tell "not found" from "forbidden" from "the
//! node is down".

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

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

/// A client of one node.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| ClientError {
                kind: ErrorKind::Unavailable,
                status: None,
                code: "client".into(),
                message: e.to_string(),
            })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError {
            kind: ErrorKind::Unavailable,
            status: None,
            code: "unreachable".into(),
            message: format!("cannot reach the node at {}: {e}", self.base),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| ClientError {
            kind: ErrorKind::Unavailable,
            status: Some(status.as_u16()),
            code: "read".into(),
            message: e.to_string(),
        })?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(body);
        }
        let kind = match status.as_u16() {
            404 | 410 => ErrorKind::NotFound,
            401 | 403 => ErrorKind::Forbidden,
            400 | 409 | 413 | 415 | 422 => ErrorKind::BadInput,
            _ => ErrorKind::Unavailable,
        };
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or("error")
            .to_string();
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}: {body}"));
        Err(ClientError {
            kind,
            status: Some(status.as_u16()),
            code,
            message,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::GET, path).query(query))
            .await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::DELETE, path).query(query))
            .await
    }

    pub async fn post<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<Value, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
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
}
