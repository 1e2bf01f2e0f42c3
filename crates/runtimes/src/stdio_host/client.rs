//! The manager's client of a stdio host: status, input, signals, the transcript and its
//! resumable event stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Record;
use crate::{ReconnectPolicy, Result, RuntimeError};

/// How to reach one stdio host.
#[derive(Debug, Clone)]
pub struct StdioConfig {
    /// e.g. `http://127.0.0.1:4097` (the host as the manager reaches it).
    pub base_url: String,
    /// The host's bearer token, if it has one.
    pub token: Option<String>,
    pub reconnect: ReconnectPolicy,
    /// Timeout of one REST call (not of the event stream).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long `events()` waits for the stream's `hello` frame.
    pub first_event_timeout: Duration,
    /// How long a protocol handshake (initialize, new session) may take.
    pub handshake_timeout: Duration,
}

impl StdioConfig {
    pub fn new(base_url: impl Into<String>) -> StdioConfig {
        StdioConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            token: None,
            reconnect: ReconnectPolicy::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            first_event_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(60),
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> StdioConfig {
        self.token = Some(token.into());
        self
    }

    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> StdioConfig {
        self.reconnect = policy;
        self
    }
}

/// A line for the agent's stdin, with its idempotency id and an optional note kept in
/// the transcript only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    pub id: String,
    pub message: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<Value>,
}

/// `GET /status` of a host.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HostStatus {
    pub state: String,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    pub seq: u64,
    #[serde(default)]
    pub started_seq: u64,
    pub transcript_id: String,
    #[serde(default)]
    pub subscribers_total: u64,
    #[serde(default)]
    pub inputs: u64,
}

impl HostStatus {
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

pub(crate) use crate::pump::ByteStream;

fn transport(e: reqwest::Error) -> RuntimeError {
    RuntimeError::Transport(e.to_string())
}

/// HTTP client of one stdio host. Cheap to clone.
#[derive(Clone)]
pub struct HostClient {
    cfg: Arc<StdioConfig>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("base_url", &self.cfg.base_url)
            .finish_non_exhaustive()
    }
}

impl HostClient {
    pub fn new(cfg: StdioConfig) -> Result<HostClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(transport)?;
        Ok(HostClient {
            cfg: Arc::new(cfg),
            http,
        })
    }

    pub fn config(&self) -> &StdioConfig {
        &self.cfg
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .http
            .request(method, format!("{}{}", self.cfg.base_url, path));
        match &self.cfg.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes> {
        let mut rb = self
            .request(method.clone(), path)
            .timeout(self.cfg.request_timeout);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        match status {
            200..=299 => Ok(bytes),
            401 => Err(RuntimeError::Unauthorized),
            409 => {
                let msg = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| "the agent is not running".into());
                Err(RuntimeError::Disconnected(msg))
            }
            s => Err(RuntimeError::Status {
                method: method.to_string(),
                path: path.to_string(),
                status: s,
                body: String::from_utf8_lossy(&bytes).chars().take(2000).collect(),
            }),
        }
    }

    pub async fn status(&self) -> Result<HostStatus> {
        let bytes = self.call(reqwest::Method::GET, "/status", None).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Protocol(format!("GET /status: {e}")))
    }

    /// Waits until the host answers, up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<HostStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut poll = crate::StartPoll::new();
        loop {
            match self.status().await {
                Ok(s) => return Ok(s),
                Err(RuntimeError::Unauthorized) => return Err(RuntimeError::Unauthorized),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(poll.next_pause()).await,
            }
        }
    }

    /// Writes a line to the agent's stdin; returns its transcript seq. Transport errors
    /// are retried with the same id, so the agent gets the line at most once.
    pub async fn send(&self, input: &Input) -> Result<u64> {
        let body = serde_json::to_value(input)
            .map_err(|e| RuntimeError::Protocol(format!("unencodable input: {e}")))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .call(reqwest::Method::POST, "/input", Some(&body))
                .await
            {
                Ok(bytes) => {
                    let v: Value = serde_json::from_slice(&bytes)
                        .map_err(|e| RuntimeError::Protocol(format!("POST /input: {e}")))?;
                    return v.get("seq").and_then(Value::as_u64).ok_or_else(|| {
                        RuntimeError::Protocol(format!("POST /input answered {v}"))
                    });
                }
                Err(RuntimeError::Transport(e)) if attempt < 3 => {
                    tracing::debug!(id = %input.id, attempt, "input retried: {e}");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The transcript records after `after`.
    pub async fn transcript(&self, after: u64) -> Result<Vec<Record>> {
        let bytes = self
            .call(
                reqwest::Method::GET,
                &format!("/transcript?after={after}"),
                None,
            )
            .await?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l)
                    .map_err(|e| RuntimeError::Protocol(format!("bad transcript record: {e}")))
            })
            .collect()
    }

    /// Opens `GET /events` after `after`.
    pub async fn open_events(&self, after: u64) -> Result<ByteStream> {
        let rb = self
            .request(reqwest::Method::GET, "/events")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", after.to_string());
        let resp = tokio::time::timeout(
            self.cfg.connect_timeout + self.cfg.request_timeout,
            rb.send(),
        )
        .await
        .map_err(|_| RuntimeError::Transport("timed out opening the event stream".into()))?
        .map_err(transport)?;
        match resp.status().as_u16() {
            200..=299 => Ok(Box::pin(resp.bytes_stream())),
            401 => Err(RuntimeError::Unauthorized),
            s => Err(RuntimeError::Status {
                method: "GET".into(),
                path: "/events".into(),
                status: s,
                body: String::new(),
            }),
        }
    }

    /// Ends every open event stream once (they resume with `Last-Event-ID`).
    pub async fn close_subscribers(&self) -> Result<u64> {
        let bytes = self
            .call(reqwest::Method::POST, "/subscribers/close", None)
            .await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Protocol(format!("POST /subscribers/close: {e}")))?;
        Ok(v.get("closed").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Sends `interrupt`, `terminate` or `kill` to the agent's process group.
    pub async fn signal(&self, signal: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/signal",
            Some(&json!({"signal": signal})),
        )
        .await
        .map(|_| ())
    }

    /// Sends `input` and waits for the first record after it that `answer` accepts
    /// (a response to a request); fails if the agent exits first or `timeout` passes.
    pub async fn exchange<T>(
        &self,
        input: &Input,
        timeout: Duration,
        mut answer: impl FnMut(&Record) -> Option<T>,
    ) -> Result<T> {
        let mut after = self.send(input).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for rec in self.transcript(after).await? {
                after = rec.seq;
                if let Some(t) = answer(&rec) {
                    return Ok(t);
                }
                if let Some(msg) = rec.exit_message() {
                    return Err(RuntimeError::Disconnected(msg));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Protocol(format!(
                    "the agent did not answer {} within {timeout:?}",
                    input.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
