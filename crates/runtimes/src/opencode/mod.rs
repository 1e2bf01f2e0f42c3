//! The OpenCode adapter: `opencode serve`, 1.x server dialect.
//!
//! Everything OpenCode-specific (routes, event names, field names, quirks) lives in this
//! module. Pinned version: `opencode-ai@1.18.33` ([`OPENCODE_VERSION`]).
//!
//! # Verified against the real `opencode-ai@1.18.33` binary
//!
//! (with a scripted OpenAI-compatible model on loopback; see `tests/opencode_real.rs`)
//!
//! - Startup line `opencode server listening on http://HOST:PORT`; `GET /global/health`
//!   → `{"healthy":true,"version":"1.18.33"}`; `GET /doc` serves the OpenAPI document.
//!   Basic auth (user `opencode`) when `OPENCODE_SERVER_PASSWORD` is set.
//! - `POST /session?directory=…` `{title?}` → `Session{id:"ses_…",directory,…}`.
//! - `POST /session/{id}/prompt_async` `{parts:[{type:"text",text}], model?{providerID,
//!   modelID}, agent?, variant?, system?}` → `204` (also for prompts it later drops);
//!   `GET /session/{id}/message?limit=N` → `[{info:{id,role,…}, parts:[…]}]`.
//! - `GET /event?directory=…`: SSE frames carry **only `data:` lines** (no `id:` field);
//!   the JSON is `{id:"evt_…", type, properties}` and the first event is
//!   `server.connected`; `server.heartbeat` comes periodically. **`Last-Event-ID` is
//!   ignored** (nothing is replayed), so after a reconnect this adapter resyncs over REST
//!   (pending permissions/questions, todos, the current turn's messages, session status).
//! - Turn shape: `message.updated`(user) → `message.part.updated`(user text) →
//!   `session.status{busy}` (repeated) → `message.updated`(assistant, zero tokens) →
//!   `message.part.updated` `step-start` / `tool` (`pending` → `running` → `completed` |
//!   `error`) / `text` (empty, then `message.part.delta{field:"text",delta}` chunks,
//!   then the full text) / `step-finish{tokens,cost}` / `patch{files}` →
//!   `message.updated`(assistant with `tokens`, `cost`, `finish`, then `time.completed`)
//!   → `session.status{idle}` → `session.idle` (deprecated, still sent). A tool-call
//!   step and the final text step are separate assistant messages.
//! - `permission.asked{id:"per_…",sessionID,permission:"edit",patterns:["hello.txt"],
//!   metadata{filepath,diff},always:["*"],tool{messageID,callID}}`;
//!   `POST /permission/{id}/reply {reply:"once"|"always"|"reject", message?}` → `true`,
//!   then `permission.replied{sessionID,requestID,reply}`. A `reject` with a message lets
//!   the turn continue (the tool fails with the feedback); unknown ids → `404`
//!   `PermissionNotFoundError`.
//! - `question.asked{id:"que_…",sessionID,questions[{question,header,options[{label,
//!   description}]}],tool{messageID,callID}}` (needs `OPENCODE_ENABLE_QUESTION_TOOL=1`);
//!   `POST /question/{id}/reply {answers:[[label]]}`, `POST /question/{id}/reject` →
//!   `question.rejected{sessionID,requestID}`.
//! - `file.edited{file:<absolute path>}` (no session id), `session.diff{sessionID,diff}`,
//!   tool `metadata.filepath`.
//! - `POST /session/{id}/abort` → `true`, then `session.error{error:{name:
//!   "MessageAbortedError"}}`, `session.status{idle}`, `session.idle`, and *after* idle
//!   the aborted tool part (`error`, `metadata.interrupted`) and the assistant message
//!   with `error`. **A pending question stays listed in `GET /question` after an abort**
//!   (no `question.rejected`), so [`OpenCodeRuntime::abort`] rejects the session's
//!   leftover questions and permissions itself.
//!
//! Tolerance: both `permission.asked` (1.x) and `permission.updated` (legacy 0.x) are
//! accepted, as are `permission.replied` with `reply` or `response`; unknown events of
//! the session become [`AgentEvent::Raw`].

pub(crate) mod normalize;
pub mod profile;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::event::{AgentEvent, Answer, Interaction, InteractionOutcome, PermissionReply};
use crate::sse::{SseEvent, SseParser};
use crate::{
    AgentRuntime, Cursor, EventStream, ReconnectPolicy, Result, RuntimeError, Session, SessionSpec,
};

pub use normalize::Normalizer;
use normalize::{permission_interaction, question_interaction, short, str_at};

/// The OpenCode release this dialect was written and verified against.
pub const OPENCODE_VERSION: &str = "1.18.33";
/// The npm package to install for [`OPENCODE_VERSION`].
pub const OPENCODE_PACKAGE: &str = "opencode-ai@1.18.33";
/// Basic-auth user name OpenCode expects unless `OPENCODE_SERVER_USERNAME` says otherwise.
pub const DEFAULT_USERNAME: &str = "opencode";
/// The line `opencode serve` prints once it listens, followed by the URL.
pub const LISTENING_PREFIX: &str = "opencode server listening on ";

/// Routes of the 1.x dialect.
mod routes {
    pub const HEALTH: &str = "/global/health";
    pub const SESSIONS: &str = "/session";
    pub const SESSION_STATUS: &str = "/session/status";
    pub const EVENTS: &str = "/event";
    pub const PERMISSIONS: &str = "/permission";
    pub const QUESTIONS: &str = "/question";

    pub fn session(id: &str) -> String {
        format!("/session/{id}")
    }
    pub fn prompt_async(id: &str) -> String {
        format!("/session/{id}/prompt_async")
    }
    pub fn messages(id: &str) -> String {
        format!("/session/{id}/message")
    }
    pub fn abort(id: &str) -> String {
        format!("/session/{id}/abort")
    }
    pub fn todo(id: &str) -> String {
        format!("/session/{id}/todo")
    }
    pub fn permission_reply(id: &str) -> String {
        format!("/permission/{id}/reply")
    }
    pub fn question_reply(id: &str) -> String {
        format!("/question/{id}/reply")
    }
    pub fn question_reject(id: &str) -> String {
        format!("/question/{id}/reject")
    }
}

/// How to reach one `opencode serve`.
#[derive(Debug, Clone)]
pub struct OpenCodeConfig {
    /// e.g. `http://127.0.0.1:4096` (no trailing slash needed).
    pub base_url: String,
    /// Basic-auth user (used only with a password).
    pub username: String,
    /// `OPENCODE_SERVER_PASSWORD` of the server, if it has one.
    pub password: Option<String>,
    pub reconnect: ReconnectPolicy,
    /// How long to wait for a prompt to show up in the session before retrying it.
    pub prompt_confirm_timeout: Duration,
    /// Timeout of one REST call (not of the event stream).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long `events()` waits for the stream's first frame (`server.connected`).
    pub first_event_timeout: Duration,
}

impl OpenCodeConfig {
    pub fn new(base_url: impl Into<String>) -> OpenCodeConfig {
        OpenCodeConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            username: DEFAULT_USERNAME.to_string(),
            password: None,
            reconnect: ReconnectPolicy::default(),
            prompt_confirm_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            first_event_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_password(mut self, password: impl Into<String>) -> OpenCodeConfig {
        self.password = Some(password.into());
        self
    }

    pub fn with_reconnect(mut self, policy: ReconnectPolicy) -> OpenCodeConfig {
        self.reconnect = policy;
        self
    }
}

/// Per-session flags shared between the control calls and the event streams.
#[derive(Debug, Default)]
struct SessionShared {
    /// `abort()` was called; the stream reports the end of this turn as cancelled.
    abort_requested: AtomicBool,
    /// A prompt landed and its turn has not been seen to end yet.
    prompted: AtomicBool,
    /// Outcomes of the answers given through this runtime, by interaction id, so a
    /// resync can tell how an interaction that vanished while we were away was settled.
    answered: Mutex<HashMap<String, InteractionOutcome>>,
}

/// The OpenCode adapter. Cheap to clone; clones share the HTTP client and session flags.
#[derive(Clone)]
pub struct OpenCodeRuntime {
    cfg: Arc<OpenCodeConfig>,
    http: reqwest::Client,
    shared: Arc<Mutex<HashMap<String, Arc<SessionShared>>>>,
}

impl std::fmt::Debug for OpenCodeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenCodeRuntime")
            .field("base_url", &self.cfg.base_url)
            .finish_non_exhaustive()
    }
}

/// Rejects ids that would escape their path segment.
fn seg(id: &str) -> Result<&str> {
    if !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(id)
    } else {
        Err(RuntimeError::Protocol(format!("invalid id {id:?}")))
    }
}

fn transport(e: reqwest::Error) -> RuntimeError {
    RuntimeError::Transport(e.to_string())
}

impl OpenCodeRuntime {
    pub fn new(cfg: OpenCodeConfig) -> Result<OpenCodeRuntime> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .build()
            .map_err(transport)?;
        Ok(OpenCodeRuntime {
            cfg: Arc::new(cfg),
            http,
            shared: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    pub fn config(&self) -> &OpenCodeConfig {
        &self.cfg
    }

    fn shared(&self, session_id: &str) -> Arc<SessionShared> {
        let mut map = match self.shared.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(session_id.to_string()).or_default().clone()
    }

    fn request(&self, method: Method, path: &str, dir: Option<&Path>) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, format!("{}{}", self.cfg.base_url, path));
        if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let d = dir.to_string_lossy();
            rb = rb.query(&[("directory", d.as_ref())]);
            if let Ok(h) = reqwest::header::HeaderValue::from_str(&d) {
                rb = rb.header("x-opencode-directory", h);
            }
        }
        if let Some(pw) = &self.cfg.password {
            rb = rb.basic_auth(&self.cfg.username, Some(pw));
        }
        rb
    }

    /// Sends a REST call and returns the JSON body (or `Null` for an empty body).
    async fn call(
        &self,
        method: Method,
        path: &str,
        dir: Option<&Path>,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut rb = self
            .request(method.clone(), path, dir)
            .timeout(self.cfg.request_timeout);
        if !query.is_empty() {
            rb = rb.query(query);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.as_u16() == 401 {
            return Err(RuntimeError::Unauthorized);
        }
        if status.as_u16() == 404 {
            let msg = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    str_at(&v, "/message")
                        .or_else(|| str_at(&v, "/data/message"))
                        .map(str::to_string)
                })
                .unwrap_or_else(|| format!("{method} {path}"));
            return Err(RuntimeError::NotFound(msg));
        }
        if !status.is_success() {
            return Err(RuntimeError::Status {
                method: method.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(2000).collect(),
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Protocol(format!("{method} {path}: invalid JSON: {e}")))
    }

    /// `GET /global/health` → the server's version.
    pub async fn health(&self) -> Result<String> {
        let v = self
            .call(Method::GET, routes::HEALTH, None, &[], None)
            .await?;
        if v.get("healthy").and_then(Value::as_bool) != Some(true) {
            return Err(RuntimeError::Protocol(format!("unhealthy: {v}")));
        }
        Ok(str_at(&v, "/version").unwrap_or("unknown").to_string())
    }

    /// Waits until the server answers its health check, up to `timeout`.
    ///
    /// Polls with short attempts: a server still starting may accept a connection and
    /// never answer on it, which would hold one long request past the deadline. Each
    /// attempt that times out gives the next twice as long (up to 16 s), so a server that
    /// is only slow to answer (an emulated guest on a busy host) is still heard.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut patience = Duration::from_secs(2);
        let mut poll = crate::StartPoll::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = tokio::time::timeout(
                patience.min(left).max(Duration::from_millis(100)),
                self.health(),
            )
            .await;
            let now = tokio::time::Instant::now();
            match attempt {
                Ok(Ok(version)) => return Ok(version),
                Ok(Err(RuntimeError::Unauthorized)) => return Err(RuntimeError::Unauthorized),
                Ok(Err(e)) if now >= deadline => return Err(e),
                Err(_) if now >= deadline => {
                    return Err(RuntimeError::Protocol(
                        "the agent takes connections but does not answer its health check".into(),
                    ))
                }
                Err(_) => patience = (patience * 2).min(Duration::from_secs(16)),
                Ok(Err(_)) => tokio::time::sleep(poll.next_pause()).await,
            }
        }
    }

    fn dir(session: &Session) -> Option<&Path> {
        Some(session.spec.directory.as_path())
    }

    /// The latest `limit` messages of a session, as OpenCode returns them.
    async fn messages(&self, session: &Session, limit: Option<usize>) -> Result<Vec<Value>> {
        let query: Vec<(&str, String)> = limit
            .map(|l| ("limit", l.to_string()))
            .into_iter()
            .collect();
        let v = self
            .call(
                Method::GET,
                &routes::messages(seg(&session.id)?),
                Self::dir(session),
                &query,
                None,
            )
            .await?;
        match v {
            Value::Array(a) => Ok(a),
            other => Err(RuntimeError::Protocol(format!(
                "messages: expected an array, got {}",
                short(&other)
            ))),
        }
    }

    fn user_message_ids(messages: &[Value]) -> HashSet<String> {
        messages
            .iter()
            .filter(|m| str_at(m, "/info/role") == Some("user"))
            .filter_map(|m| str_at(m, "/info/id").map(str::to_string))
            .collect()
    }

    fn prompt_body(spec: &SessionSpec, text: &str) -> Value {
        let mut body = json!({ "parts": [{ "type": "text", "text": text }] });
        if let Some(m) = &spec.model {
            body["model"] = json!({ "providerID": m.provider, "modelID": m.model });
        }
        if let Some(a) = &spec.agent {
            body["agent"] = json!(a);
        }
        if let Some(v) = &spec.variant {
            body["variant"] = json!(v);
        }
        if let Some(s) = &spec.system {
            body["system"] = json!(s);
        }
        body
    }

    /// The REST view used to resync after a reconnect to a server that does not replay:
    /// the pending asks (`None` if they could not be read), then wire-shaped events for
    /// the normalizer (todos, the current turn's messages and parts, and the session's
    /// status last).
    async fn resync_wire_events(&self, session: &Session) -> (Option<Vec<Value>>, Vec<Value>) {
        let sid = session.id.as_str();
        let pending = match self.pending_wire(session).await {
            Ok((perms, questions)) => Some(
                perms
                    .into_iter()
                    .map(|p| json!({"type": "permission.asked", "properties": p}))
                    .chain(
                        questions
                            .into_iter()
                            .map(|q| json!({"type": "question.asked", "properties": q})),
                    )
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(session = sid, "resync: pending: {e}");
                None
            }
        };
        let mut out = Vec::new();
        if let Ok(path) = seg(sid).map(routes::todo) {
            match self
                .call(Method::GET, &path, Self::dir(session), &[], None)
                .await
            {
                Ok(todos @ Value::Array(_)) => out.push(json!({
                    "type": "todo.updated",
                    "properties": {"sessionID": sid, "todos": todos}
                })),
                Ok(_) => {}
                Err(e) => tracing::warn!(session = sid, "resync: todos: {e}"),
            }
        }
        match self.messages(session, Some(50)).await {
            Ok(msgs) => {
                // Only the current turn: from the last user message on.
                let start = msgs
                    .iter()
                    .rposition(|m| str_at(m, "/info/role") == Some("user"))
                    .unwrap_or(0);
                for m in &msgs[start..] {
                    if let Some(info) = m.get("info") {
                        out.push(json!({"type": "message.updated", "properties": {"sessionID": sid, "info": info}}));
                    }
                    for p in m
                        .get("parts")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        out.push(json!({"type": "message.part.updated", "properties": {"sessionID": sid, "part": p}}));
                    }
                }
            }
            Err(e) => tracing::warn!(session = sid, "resync: messages: {e}"),
        }
        match self
            .call(
                Method::GET,
                routes::SESSION_STATUS,
                Self::dir(session),
                &[],
                None,
            )
            .await
        {
            Ok(map) => {
                // Idle sessions are absent from the map.
                let status = map
                    .get(sid)
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "idle"}));
                out.push(json!({"type": "session.status", "properties": {"sessionID": sid, "status": status}}));
            }
            Err(e) => tracing::warn!(session = sid, "resync: status: {e}"),
        }
        (pending, out)
    }

    async fn pending_wire(&self, session: &Session) -> Result<(Vec<Value>, Vec<Value>)> {
        let mine = |v: Value| -> Vec<Value> {
            match v {
                Value::Array(a) => a
                    .into_iter()
                    .filter(|x| str_at(x, "/sessionID") == Some(session.id.as_str()))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let perms = self
            .call(
                Method::GET,
                routes::PERMISSIONS,
                Self::dir(session),
                &[],
                None,
            )
            .await?;
        let questions = self
            .call(
                Method::GET,
                routes::QUESTIONS,
                Self::dir(session),
                &[],
                None,
            )
            .await?;
        Ok((mine(perms), mine(questions)))
    }

    /// Opens `GET /event`, sending `Last-Event-ID` when we have one.
    async fn connect(&self, session: &Session, last_id: Option<&str>) -> Result<ByteStream> {
        let mut rb = self
            .request(Method::GET, routes::EVENTS, Self::dir(session))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id {
            if let Ok(h) = reqwest::header::HeaderValue::from_str(id) {
                rb = rb.header("Last-Event-ID", h);
            }
        }
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
                path: routes::EVENTS.into(),
                status: s,
                body: String::new(),
            }),
        }
    }
}

use crate::pump::{ByteStream, EventSource, Fed};

#[async_trait::async_trait]
impl AgentRuntime for OpenCodeRuntime {
    fn kind(&self) -> &'static str {
        "opencode"
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<String> {
        self.wait_healthy(timeout).await
    }

    async fn start_session(&self, spec: &SessionSpec) -> Result<Session> {
        let mut body = json!({});
        if let Some(t) = &spec.title {
            body["title"] = json!(t);
        }
        let v = self
            .call(
                Method::POST,
                routes::SESSIONS,
                Some(&spec.directory),
                &[],
                Some(&body),
            )
            .await?;
        let id = str_at(&v, "/id")
            .ok_or_else(|| RuntimeError::Protocol(format!("session without id: {}", short(&v))))?
            .to_string();
        let session = Session {
            id,
            spec: spec.clone(),
        };
        // `prompt_async` drops prompts for sessions that are not readable yet (Atelier's
        // finding); wait until the session reads back.
        let deadline = tokio::time::Instant::now() + self.cfg.prompt_confirm_timeout;
        loop {
            match self.attach_session(&session.id, spec).await {
                Ok(s) => return Ok(s),
                Err(RuntimeError::NotFound(_)) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn attach_session(&self, id: &str, spec: &SessionSpec) -> Result<Session> {
        let v = self
            .call(
                Method::GET,
                &routes::session(seg(id)?),
                Some(&spec.directory),
                &[],
                None,
            )
            .await?;
        if str_at(&v, "/id") != Some(id) {
            return Err(RuntimeError::Protocol(format!(
                "GET session {id} returned {}",
                short(&v)
            )));
        }
        Ok(Session {
            id: id.to_string(),
            spec: spec.clone(),
        })
    }

    async fn prompt(&self, session: &Session, text: &str) -> Result<()> {
        const LOOKBACK: usize = 20;
        let sid = seg(&session.id)?;
        let before = Self::user_message_ids(&self.messages(session, Some(LOOKBACK)).await?);
        let body = Self::prompt_body(&session.spec, text);
        let shared = self.shared(sid);
        for attempt in 1..=2u32 {
            self.call(
                Method::POST,
                &routes::prompt_async(sid),
                Self::dir(session),
                &[],
                Some(&body),
            )
            .await?;
            let deadline = tokio::time::Instant::now() + self.cfg.prompt_confirm_timeout;
            loop {
                let now = Self::user_message_ids(&self.messages(session, Some(LOOKBACK)).await?);
                if now.iter().any(|id| !before.contains(id)) {
                    shared.abort_requested.store(false, Ordering::SeqCst);
                    shared.prompted.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::warn!(
                session = sid,
                attempt,
                "prompt_async was not recorded; retrying"
            );
        }
        Err(RuntimeError::PromptNotDelivered { attempts: 2 })
    }

    async fn events(&self, session: &Session, after: Option<Cursor>) -> Result<EventStream> {
        let mut norm = Normalizer::new(&session.id, &session.spec.directory);
        let resumed = after.is_some();
        let after = after.unwrap_or_default();
        // Three independent requests, asked at once (each is a round trip into the
        // sandbox, and a task's prompt waits for all three): the user's messages and the
        // part kinds already in the session, so a resumed or attached stream does not
        // mistake the prompt for assistant text; whether a turn is running now (idle
        // sessions are absent from the map); and the subscription itself.
        let (messages, status, first) = tokio::join!(
            self.messages(session, Some(50)),
            self.call(
                Method::GET,
                routes::SESSION_STATUS,
                Self::dir(session),
                &[],
                None,
            ),
            self.connect(session, after.last_event_id.as_deref()),
        );
        match messages {
            Ok(msgs) => norm.preload(&msgs),
            Err(RuntimeError::NotFound(m)) => return Err(RuntimeError::NotFound(m)),
            Err(e) => tracing::warn!(session = %session.id, "preload: {e}"),
        }
        // Not when resuming: replayed events describe the past, so the state at the
        // cursor is unknown and the replay itself will tell.
        match status {
            Ok(map) if !resumed => {
                norm.set_busy(str_at(&map, &format!("/{}/type", session.id)) == Some("busy"))
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(session = %session.id, "preload status: {e}"),
        }
        if resumed {
            norm.set_resumed();
        }
        let first = first?;
        let mut pump = Pump {
            rt: self.clone(),
            session: session.clone(),
            shared: self.shared(&session.id),
            norm,
            parser: SseParser::with_last_event_id(after.last_event_id.clone()),
            last_id: after.last_event_id.clone(),
            skip: after.skip,
            resumed,
            reconnected: false,
            buffered: Vec::new(),
        };
        // Wait for the first frame (`server.connected`), so the subscription is live
        // when we return and the caller can prompt without missing anything.
        let mut first = first;
        let deadline = tokio::time::Instant::now() + self.cfg.first_event_timeout;
        while pump.buffered.is_empty() {
            match tokio::time::timeout_at(deadline, first.next()).await {
                Ok(Some(Ok(bytes))) => pump.buffered = pump.parser.push(&bytes),
                Ok(Some(Err(e))) => return Err(transport(e)),
                Ok(None) => {
                    return Err(RuntimeError::Disconnected(
                        "event stream closed before its first event".into(),
                    ))
                }
                Err(_) => break,
            }
        }
        Ok(Box::pin(crate::pump::pump(pump, first)))
    }

    async fn answer(&self, session: &Session, interaction_id: &str, answer: Answer) -> Result<()> {
        let id = seg(interaction_id)?;
        let dir = Self::dir(session);
        let outcome = match &answer {
            Answer::Permission { reply, .. } => match reply {
                PermissionReply::Once => InteractionOutcome::Once,
                PermissionReply::Always => InteractionOutcome::Always,
                PermissionReply::Reject => InteractionOutcome::Rejected,
            },
            Answer::Question { answers } => InteractionOutcome::Answered {
                answers: answers.clone(),
            },
            Answer::Dismiss if id.starts_with("per") => InteractionOutcome::Rejected,
            Answer::Dismiss => InteractionOutcome::Dismissed,
        };
        match answer {
            Answer::Permission { reply, message } => {
                let mut body = json!({ "reply": reply.as_str() });
                if let Some(m) = message {
                    body["message"] = json!(m);
                }
                self.call(
                    Method::POST,
                    &routes::permission_reply(id),
                    dir,
                    &[],
                    Some(&body),
                )
                .await?;
            }
            Answer::Question { answers } => {
                let body = json!({ "answers": answers });
                self.call(
                    Method::POST,
                    &routes::question_reply(id),
                    dir,
                    &[],
                    Some(&body),
                )
                .await?;
            }
            Answer::Dismiss => {
                let reject_permission = json!({ "reply": "reject" });
                if id.starts_with("per") {
                    self.call(
                        Method::POST,
                        &routes::permission_reply(id),
                        dir,
                        &[],
                        Some(&reject_permission),
                    )
                    .await?;
                } else {
                    match self
                        .call(Method::POST, &routes::question_reject(id), dir, &[], None)
                        .await
                    {
                        Err(RuntimeError::NotFound(_)) if !id.starts_with("que") => {
                            self.call(
                                Method::POST,
                                &routes::permission_reply(id),
                                dir,
                                &[],
                                Some(&reject_permission),
                            )
                            .await?;
                        }
                        other => {
                            other?;
                        }
                    }
                }
            }
        }
        let shared = self.shared(&session.id);
        let mut answered = match shared.answered.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        answered.insert(id.to_string(), outcome);
        Ok(())
    }

    async fn abort(&self, session: &Session) -> Result<()> {
        let sid = seg(&session.id)?;
        self.shared(sid)
            .abort_requested
            .store(true, Ordering::SeqCst);
        self.call(
            Method::POST,
            &routes::abort(sid),
            Self::dir(session),
            &[],
            None,
        )
        .await?;
        // 1.18.33 leaves questions pending after an abort; clear what is left so
        // `pending()` and other clients do not show stale requests.
        if let Ok((perms, questions)) = self.pending_wire(session).await {
            for p in perms {
                if let Some(id) = str_at(&p, "/id").and_then(|i| seg(i).ok()) {
                    let _ = self
                        .call(
                            Method::POST,
                            &routes::permission_reply(id),
                            Self::dir(session),
                            &[],
                            Some(&json!({"reply": "reject"})),
                        )
                        .await;
                }
            }
            for q in questions {
                if let Some(id) = str_at(&q, "/id").and_then(|i| seg(i).ok()) {
                    let _ = self
                        .call(
                            Method::POST,
                            &routes::question_reject(id),
                            Self::dir(session),
                            &[],
                            None,
                        )
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn pending(&self, session: &Session) -> Result<Vec<Interaction>> {
        let (perms, questions) = self.pending_wire(session).await?;
        Ok(perms
            .iter()
            .filter_map(permission_interaction)
            .chain(questions.iter().filter_map(question_interaction))
            .collect())
    }
}

/// Drives one event stream: reads SSE, normalizes, assigns cursors, reconnects.
struct Pump {
    rt: OpenCodeRuntime,
    session: Session,
    shared: Arc<SessionShared>,
    norm: Normalizer,
    parser: SseParser,
    /// Id of the last wire event fully turned into normalized events.
    last_id: Option<String>,
    /// Normalized events of the first replayed wire event that the caller already has.
    skip: usize,
    /// The stream started from a caller's cursor.
    resumed: bool,
    /// At least one reconnect happened.
    reconnected: bool,
    /// Frames read before the stream was handed out.
    buffered: Vec<SseEvent>,
}

enum Step {
    Events(Vec<(Cursor, AgentEvent)>),
    Nothing,
}

#[async_trait::async_trait]
impl EventSource for Pump {
    fn policy(&self) -> ReconnectPolicy {
        self.rt.cfg.reconnect.clone()
    }

    fn parser(&mut self) -> &mut SseParser {
        &mut self.parser
    }

    fn take_buffered(&mut self) -> Vec<SseEvent> {
        std::mem::take(&mut self.buffered)
    }

    async fn reconnect(&mut self) -> Result<ByteStream> {
        let body = self
            .rt
            .connect(&self.session, self.last_id.as_deref())
            .await?;
        self.reconnected = true;
        self.parser = SseParser::with_last_event_id(self.last_id.clone());
        Ok(body)
    }

    async fn feed(&mut self, sse: SseEvent, attempt: &mut u32) -> Fed {
        match self.handle(sse, attempt).await {
            Step::Events(evs) => Fed::Events(evs),
            Step::Nothing => Fed::Events(Vec::new()),
        }
    }

    fn connection_lost(&mut self, message: &str) -> Vec<(Cursor, AgentEvent)> {
        let turn_open = self.shared.prompted.load(Ordering::SeqCst);
        let evs = self.norm.connection_lost(message, turn_open);
        evs.into_iter()
            .map(|ev| {
                self.note_sent(&ev);
                (self.cursor(), ev)
            })
            .collect()
    }

    fn peer(&self) -> &'static str {
        "agent"
    }
}

impl Pump {
    fn cursor(&self) -> Cursor {
        Cursor {
            last_event_id: self.last_id.clone(),
            skip: 0,
        }
    }

    fn note_sent(&self, ev: &AgentEvent) {
        if matches!(ev, AgentEvent::TurnEnded { .. }) {
            self.shared.prompted.store(false, Ordering::SeqCst);
        }
    }

    fn check_abort_flag(&mut self) {
        if self.shared.abort_requested.swap(false, Ordering::SeqCst) {
            self.norm.abort_requested();
        }
    }

    async fn handle(&mut self, sse: SseEvent, attempt: &mut u32) -> Step {
        let wire: Value = match serde_json::from_str(&sse.data) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(session = %self.session.id, "undecodable event: {e}");
                if sse.id.is_some() {
                    self.last_id = sse.id;
                }
                return Step::Nothing;
            }
        };
        let kind = str_at(&wire, "/type").unwrap_or("");
        if kind == "server.connected" {
            // A good connection: reset the failure count.
            *attempt = 0;
            // OpenCode 1.18.33 sends no SSE `id:` and replays nothing; a server that does
            // send ids (the fake, vibe-kanban's expectation) resumes with Last-Event-ID.
            let replays = sse.id.is_some();
            if !replays {
                self.skip = 0;
            } else if self.last_id.is_none() {
                // The connected frame's id is where this stream starts; resume from it
                // if the connection drops before any event arrives.
                self.last_id = sse.id.filter(|i| !i.is_empty());
            }
            if (self.reconnected || self.resumed) && !replays {
                self.resumed = false;
                let (pending, rest) = self.rt.resync_wire_events(&self.session).await;
                self.check_abort_flag();
                let mut evs = Vec::new();
                if let Some(pending) = pending {
                    // Interactions settled while we were away: report how, if we know.
                    let still: HashSet<String> = pending
                        .iter()
                        .filter_map(|w| str_at(w, "/properties/id").map(str::to_string))
                        .collect();
                    let answered = match self.shared.answered.lock() {
                        Ok(m) => m.clone(),
                        Err(poisoned) => poisoned.into_inner().clone(),
                    };
                    evs.extend(self.norm.settle_missing(&still, &answered));
                    for w in &pending {
                        evs.extend(self.norm.push(w));
                    }
                }
                for w in &rest {
                    evs.extend(self.norm.push(w));
                }
                let mut out = Vec::with_capacity(evs.len());
                for ev in evs {
                    self.note_sent(&ev);
                    out.push((self.cursor(), ev));
                }
                return Step::Events(out);
            }
            return Step::Nothing;
        }
        self.check_abort_flag();
        let mut evs = self.norm.push(&wire);
        let wire_id = sse
            .id
            .filter(|i| !i.is_empty())
            .or_else(|| str_at(&wire, "/id").map(str::to_string));
        let skipped = std::mem::take(&mut self.skip).min(evs.len());
        evs.drain(..skipped);
        let n = evs.len();
        let mut out = Vec::with_capacity(n);
        for (k, ev) in evs.into_iter().enumerate() {
            self.note_sent(&ev);
            let cursor = if k + 1 == n && wire_id.is_some() {
                Cursor {
                    last_event_id: wire_id.clone(),
                    skip: 0,
                }
            } else {
                Cursor {
                    last_event_id: self.last_id.clone(),
                    skip: skipped + k + 1,
                }
            };
            out.push((cursor, ev));
        }
        if wire_id.is_some() {
            self.last_id = wire_id;
        }
        Step::Events(out)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize::*;
    use super::*;
    use crate::event::*;

    const SID: &str = "ses_1";

    fn ev(kind: &str, props: Value) -> Value {
        json!({"id": "evt_x", "type": kind, "properties": props})
    }

    fn norm() -> Normalizer {
        Normalizer::new(SID, Path::new("/srv/proj"))
    }

    fn feed(n: &mut Normalizer, events: &[Value]) -> Vec<AgentEvent> {
        events.iter().flat_map(|e| n.push(e)).collect()
    }

    fn busy() -> Value {
        ev(
            "session.status",
            json!({"sessionID": SID, "status": {"type": "busy"}}),
        )
    }

    fn idle() -> Value {
        ev(
            "session.status",
            json!({"sessionID": SID, "status": {"type": "idle"}}),
        )
    }

    #[test]
    fn a_real_turn_normalizes_to_text_tool_files_usage_and_turn_end() {
        // Shapes recorded from opencode-ai@1.18.33 (abridged).
        let mut n = norm();
        let out = feed(
            &mut n,
            &[
                ev(
                    "message.updated",
                    json!({"sessionID": SID, "info": {"id": "msg_u", "role": "user", "sessionID": SID}}),
                ),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"type": "text", "text": "write hello.txt", "messageID": "msg_u", "sessionID": SID, "id": "prt_u"}, "time": 1}),
                ),
                busy(),
                busy(),
                ev(
                    "message.updated",
                    json!({"sessionID": SID, "info": {"id": "msg_a", "role": "assistant", "sessionID": SID, "cost": 0, "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}}}),
                ),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"id": "prt_s", "messageID": "msg_a", "sessionID": SID, "type": "step-start"}}),
                ),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"id": "prt_t", "messageID": "msg_a", "sessionID": SID, "type": "tool", "tool": "write", "callID": "call_1", "state": {"status": "pending", "input": {}, "raw": ""}}}),
                ),
                ev("file.edited", json!({"file": "/srv/proj/hello.txt"})),
                ev(
                    "file.watcher.updated",
                    json!({"file": "/srv/proj/hello.txt", "event": "add"}),
                ),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"id": "prt_t", "messageID": "msg_a", "sessionID": SID, "type": "tool", "tool": "write", "callID": "call_1", "state": {"status": "completed", "input": {"filePath": "/srv/proj/hello.txt", "content": "hi"}, "output": "Wrote file successfully.", "metadata": {"filepath": "/srv/proj/hello.txt"}, "title": "hello.txt"}}}),
                ),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"id": "prt_p", "messageID": "msg_a", "sessionID": SID, "type": "patch", "hash": "h", "files": ["/srv/proj/hello.txt", "/srv/proj/b.txt"]}}),
                ),
                ev(
                    "message.updated",
                    json!({"sessionID": SID, "info": {"id": "msg_a", "role": "assistant", "sessionID": SID, "cost": 0.00014, "tokens": {"total": 120, "input": 100, "output": 20, "reasoning": 0, "cache": {"write": 0, "read": 0}}, "finish": "tool-calls"}}),
                ),
                ev(
                    "message.updated",
                    json!({"sessionID": SID, "info": {"id": "msg_a", "role": "assistant", "sessionID": SID, "cost": 0.00014, "tokens": {"total": 120, "input": 100, "output": 20, "reasoning": 0, "cache": {"write": 0, "read": 0}}, "finish": "tool-calls", "time": {"created": 1, "completed": 2}}}),
                ),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"id": "prt_x", "messageID": "msg_b", "sessionID": SID, "type": "text", "text": ""}}),
                ),
                ev(
                    "message.part.delta",
                    json!({"sessionID": SID, "messageID": "msg_b", "partID": "prt_x", "field": "text", "delta": "All "}),
                ),
                ev(
                    "message.part.delta",
                    json!({"sessionID": SID, "messageID": "msg_b", "partID": "prt_x", "field": "text", "delta": "done."}),
                ),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"id": "prt_x", "messageID": "msg_b", "sessionID": SID, "type": "text", "text": "All done."}}),
                ),
                busy(),
                idle(),
                ev("session.idle", json!({"sessionID": SID})),
                ev(
                    "session.diff",
                    json!({"sessionID": SID, "diff": [{"file": "late.txt", "additions": 1, "deletions": 0}]}),
                ),
                ev(
                    "session.updated",
                    json!({"sessionID": SID, "info": {"id": SID}}),
                ),
            ],
        );
        let kinds: Vec<&str> = out.iter().map(AgentEvent::kind).collect();
        assert_eq!(
            kinds,
            vec![
                "status",
                "tool_call",
                "files_touched",
                "tool_call",
                "files_touched",
                "usage",
                "text",
                "text",
                "text",
                "status",
                "turn_ended"
            ],
            "{out:#?}"
        );
        assert_eq!(
            out[2],
            AgentEvent::FilesTouched {
                paths: vec!["hello.txt".into()]
            }
        );
        assert_eq!(
            out[4],
            AgentEvent::FilesTouched {
                paths: vec!["b.txt".into()]
            }
        );
        match &out[5] {
            AgentEvent::Usage(u) => {
                assert_eq!((u.input_tokens, u.output_tokens), (100, 20));
                assert_eq!(u.cost_usd, Some(0.00014));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Completed,
                error: None
            })
        );
    }

    #[test]
    fn other_sessions_and_unknown_events() {
        let mut n = norm();
        let out = feed(
            &mut n,
            &[
                ev(
                    "session.status",
                    json!({"sessionID": "ses_other", "status": {"type": "busy"}}),
                ),
                ev("lsp.updated", json!({})),
                ev("brand.new.event", json!({"sessionID": SID, "x": 1})),
            ],
        );
        assert_eq!(
            out,
            vec![AgentEvent::Raw {
                kind: "brand.new.event".into(),
                value: json!({"sessionID": SID, "x": 1})
            }]
        );
    }

    #[test]
    fn permissions_in_both_dialects_and_their_replies() {
        let mut n = norm();
        let out = feed(
            &mut n,
            &[
                busy(),
                ev(
                    "permission.asked",
                    json!({"id": "per_1", "sessionID": SID, "permission": "edit", "patterns": ["hello.txt"], "metadata": {"filepath": "/srv/proj/hello.txt"}, "always": ["*"], "tool": {"messageID": "msg_a", "callID": "call_1"}}),
                ),
                ev(
                    "permission.asked",
                    json!({"id": "per_1", "sessionID": SID, "permission": "edit", "patterns": ["hello.txt"], "metadata": {}, "always": ["*"]}),
                ),
                ev(
                    "permission.replied",
                    json!({"sessionID": SID, "requestID": "per_1", "reply": "always"}),
                ),
                ev(
                    "permission.updated",
                    json!({"id": "per_2", "type": "bash", "pattern": "rm -rf x", "sessionID": SID, "messageID": "m", "callID": "c", "title": "Run rm", "metadata": {}}),
                ),
                ev(
                    "permission.replied",
                    json!({"sessionID": SID, "permissionID": "per_2", "response": "reject"}),
                ),
                ev(
                    "permission.replied",
                    json!({"sessionID": SID, "requestID": "per_2", "reply": "reject"}),
                ),
            ],
        );
        assert_eq!(out.len(), 5, "{out:#?}");
        match &out[1] {
            AgentEvent::InteractionAsked(i) => {
                assert_eq!(i.id, "per_1");
                assert_eq!(i.title, "edit hello.txt");
                assert_eq!(i.call_id.as_deref(), Some("call_1"));
                assert!(
                    matches!(&i.kind, InteractionKind::Permission { tool, patterns, .. } if tool == "edit" && patterns == &vec!["hello.txt".to_string()])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[2],
            AgentEvent::InteractionResolved {
                id: "per_1".into(),
                outcome: InteractionOutcome::Always
            }
        );
        match &out[3] {
            AgentEvent::InteractionAsked(i) => {
                assert_eq!(i.title, "Run rm");
                assert!(
                    matches!(&i.kind, InteractionKind::Permission { tool, patterns, .. } if tool == "bash" && patterns == &vec!["rm -rf x".to_string()])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[4],
            AgentEvent::InteractionResolved {
                id: "per_2".into(),
                outcome: InteractionOutcome::Rejected
            }
        );
    }

    #[test]
    fn questions_answered_and_abort_cancels_what_is_open() {
        let mut n = norm();
        let q = json!({"id": "que_1", "sessionID": SID, "questions": [{"question": "Which DB?", "header": "DB", "options": [{"label": "Postgres", "description": "pg"}, {"label": "SQLite", "description": "lite"}], "multiple": true}], "tool": {"messageID": "m", "callID": "call_q"}});
        let out = feed(
            &mut n,
            &[
                busy(),
                ev("question.asked", q.clone()),
                ev(
                    "question.replied",
                    json!({"sessionID": SID, "requestID": "que_1", "answers": [["SQLite"]]}),
                ),
                ev(
                    "question.asked",
                    json!({"id": "que_2", "sessionID": SID, "questions": [{"question": "Go?", "header": "Go", "options": []}]}),
                ),
            ],
        );
        match &out[1] {
            AgentEvent::InteractionAsked(i) => match &i.kind {
                InteractionKind::Question { questions } => {
                    assert_eq!(questions[0].options.len(), 2);
                    assert!(questions[0].multiple);
                    assert!(questions[0].custom);
                    assert_eq!(i.title, "Which DB?");
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[2],
            AgentEvent::InteractionResolved {
                id: "que_1".into(),
                outcome: InteractionOutcome::Answered {
                    answers: vec![vec!["SQLite".into()]]
                }
            }
        );
        // The abort sequence of 1.18.33: error, idle, idle again, late tool error.
        let out = feed(
            &mut n,
            &[
                ev(
                    "session.error",
                    json!({"sessionID": SID, "error": {"name": "MessageAbortedError", "data": {"message": "Aborted"}}}),
                ),
                idle(),
                ev("session.idle", json!({"sessionID": SID})),
                ev(
                    "message.updated",
                    json!({"sessionID": SID, "info": {"id": "msg_a", "role": "assistant", "sessionID": SID, "error": {"name": "MessageAbortedError"}}}),
                ),
                idle(),
                ev(
                    "question.rejected",
                    json!({"sessionID": SID, "requestID": "que_2"}),
                ),
            ],
        );
        assert_eq!(
            out,
            vec![
                AgentEvent::Status {
                    state: RunState::Idle,
                    message: None
                },
                AgentEvent::InteractionResolved {
                    id: "que_2".into(),
                    outcome: InteractionOutcome::Cancelled
                },
                AgentEvent::TurnEnded {
                    reason: TurnEndReason::Cancelled,
                    error: None
                },
            ]
        );
        // The late assistant error must not leak into the next turn.
        let out = feed(&mut n, &[busy(), idle()]);
        assert_eq!(
            out.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Completed,
                error: None
            })
        );
    }

    #[test]
    fn errors_todos_reasoning_and_connection_loss() {
        let mut n = norm();
        let todos = json!({"sessionID": SID, "todos": [{"content": "a", "status": "completed", "priority": "high"}, {"content": "b", "status": "in_progress", "priority": "low"}]});
        let out = feed(
            &mut n,
            &[
                busy(),
                ev("todo.updated", todos.clone()),
                ev("todo.updated", todos),
                ev(
                    "message.part.updated",
                    json!({"sessionID": SID, "part": {"id": "prt_r", "messageID": "msg_a", "sessionID": SID, "type": "reasoning", "text": ""}}),
                ),
                ev(
                    "message.part.delta",
                    json!({"sessionID": SID, "messageID": "msg_a", "partID": "prt_r", "field": "text", "delta": "hmm"}),
                ),
                ev(
                    "session.status",
                    json!({"sessionID": SID, "status": {"type": "retry", "attempt": 1, "message": "overloaded", "next": 5}}),
                ),
                ev(
                    "session.error",
                    json!({"sessionID": SID, "error": {"name": "ProviderAuthError", "data": {"providerID": "x", "message": "bad key"}}}),
                ),
                idle(),
            ],
        );
        let kinds: Vec<&str> = out.iter().map(AgentEvent::kind).collect();
        assert_eq!(
            kinds,
            vec![
                "status",
                "todos",
                "reasoning",
                "status",
                "status",
                "status",
                "turn_ended"
            ]
        );
        assert_eq!(
            out.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Error,
                error: Some("ProviderAuthError: bad key".into())
            })
        );
        assert!(
            n.connection_lost("gone", false).is_empty(),
            "idle session: nothing to end"
        );
        let out = n.connection_lost("gone", true);
        assert_eq!(
            out.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Error,
                error: Some("gone".into())
            })
        );
    }

    #[test]
    fn an_abort_while_idle_does_not_cancel_the_next_turn() {
        let mut n = norm();
        n.set_busy(false);
        n.abort_requested();
        let out = feed(&mut n, &[busy(), idle()]);
        assert_eq!(
            out.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Completed,
                error: None
            })
        );
        n.push(&busy());
        n.abort_requested();
        let out = n.push(&idle());
        assert_eq!(
            out.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Cancelled,
                error: None
            })
        );
    }

    #[test]
    fn preload_hides_the_users_own_text_on_resume() {
        let mut n = norm();
        n.preload(&[json!({"info": {"id": "msg_u", "role": "user"}, "parts": [{"id": "prt_u", "type": "text", "text": "do it"}]})]);
        let out = n.push(&ev("message.part.updated", json!({"sessionID": SID, "part": {"type": "text", "text": "do it", "messageID": "msg_u", "sessionID": SID, "id": "prt_u"}})));
        assert!(out.is_empty());
    }

    /// A health endpoint that answers each request after `delay`, or never.
    async fn slow_health_server(delay: Option<Duration>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let Some(delay) = delay else {
                        // Holds the connection open without a word.
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        return;
                    };
                    tokio::time::sleep(delay).await;
                    let body = r#"{"healthy":true,"version":"1.2.3"}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_server_slower_than_one_attempt_is_still_heard() {
        // Each answer takes 3 s, longer than the first 2 s attempt.
        let url = slow_health_server(Some(Duration::from_secs(3))).await;
        let runtime = OpenCodeRuntime::new(OpenCodeConfig::new(url)).unwrap();
        let version = runtime.wait_healthy(Duration::from_secs(20)).await;
        assert_eq!(version.unwrap(), "1.2.3");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_by_the_deadline() {
        let url = slow_health_server(None).await;
        let runtime = OpenCodeRuntime::new(OpenCodeConfig::new(url)).unwrap();
        let started = std::time::Instant::now();
        let err = runtime
            .wait_healthy(Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("does not answer its health check"),
            "{err}"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(6), "gave up after {took:?}");
    }
}
