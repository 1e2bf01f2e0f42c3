//! A fake `opencode serve`: the OpenCode 1.x server protocol subset the adapter uses,
//! with the agent's behaviour scripted by a [`Scenario`].
//!
//! Routes: `GET /global/health`, `GET /agent`, `POST /session`, `GET /session/{id}`,
//! `GET /session/status`, `POST /session/{id}/prompt_async`, `GET /session/{id}/message`
//! (`?limit=`), `POST /session/{id}/abort`, `GET /session/{id}/todo`,
//! `GET /session/{id}/diff`, `GET /event` (SSE), `GET /permission`,
//! `POST /permission/{id}/reply`, `GET /question`, `POST /question/{id}/reply`,
//! `POST /question/{id}/reject`, and `GET /__fake/prompts` (the prompt bodies received,
//! for tests) and `GET /__fake/stats` (event connections, events, prompts). Basic auth (user `opencode`) when a password is set.
//!
//! Events carry the same JSON as OpenCode 1.18.33 (`{id:"evt_…", type, properties}`).
//! Unlike the real server, every event is kept in a log and, in replay mode (the
//! default), frames carry SSE `id:` lines and `Last-Event-ID` replays what a client
//! missed; `--no-replay` behaves like the real server (no `id:` lines, no replay).

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::scenario::{Scenario, Step};

/// How to run the fake.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub scenario: Scenario,
    /// Where `edit_file` writes and what sessions report as their directory.
    pub directory: PathBuf,
    /// Require Basic auth with this password (user [`FakeConfig::username`]).
    pub password: Option<String>,
    pub username: String,
    /// Keep SSE `id:` lines and honour `Last-Event-ID` (the real 1.18.33 does neither).
    pub replay: bool,
}

impl FakeConfig {
    pub fn new(scenario: Scenario, directory: PathBuf) -> FakeConfig {
        FakeConfig {
            scenario,
            directory,
            password: None,
            username: atelier_runtimes::opencode::DEFAULT_USERNAME.to_string(),
            replay: true,
        }
    }
}

/// Serves the fake on `listener` until the process ends.
pub async fn serve(cfg: FakeConfig, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = App::new(cfg);
    axum::serve(listener, router(app)).await
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct App {
    cfg: FakeConfig,
    /// Every event ever published, as its JSON text; event `n` (1-based) is `log[n-1]`.
    log: Mutex<Vec<String>>,
    log_tx: watch::Sender<u64>,
    /// Bumped by `drop_stream`: every open SSE connection ends.
    drop_tx: watch::Sender<u64>,
    ids: AtomicU64,
    sessions: Mutex<HashMap<String, Arc<FakeSession>>>,
    /// Session ids in creation order.
    order: Mutex<Vec<String>>,
    dropped_prompts: AtomicU32,
    prompts: Mutex<Vec<Value>>,
    /// `GET /event` connections opened so far.
    connections: AtomicU64,
}

struct FakeSession {
    id: String,
    info: Value,
    data: Mutex<SessionData>,
    prompt_tx: mpsc::UnboundedSender<()>,
    abort_tx: watch::Sender<u64>,
}

#[derive(Default)]
struct SessionData {
    /// `(info, parts)` in order.
    messages: Vec<(Value, Vec<Value>)>,
    busy: bool,
    todos: Value,
    permissions: Vec<(Value, oneshot::Sender<PermissionAnswer>)>,
    questions: Vec<(Value, oneshot::Sender<QuestionAnswer>)>,
    always: HashSet<(String, String)>,
    diff: Vec<Value>,
}

#[derive(Debug)]
struct PermissionAnswer {
    reply: String,
    message: Option<String>,
}

#[derive(Debug)]
enum QuestionAnswer {
    Answers(Value),
    Rejected,
}

impl App {
    fn new(cfg: FakeConfig) -> Arc<App> {
        Arc::new(App {
            cfg,
            log: Mutex::new(Vec::new()),
            log_tx: watch::channel(0).0,
            drop_tx: watch::channel(0).0,
            ids: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
            order: Mutex::new(Vec::new()),
            dropped_prompts: AtomicU32::new(0),
            prompts: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
        })
    }

    /// Deterministic ids (`ses_000001`, `msg_000002`, …): the same requests in the same
    /// order give the same ids, so two runs of a scenario can be compared.
    fn id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::SeqCst) + 1;
        format!("{prefix}_{n:06}")
    }

    fn emit(&self, kind: &str, properties: Value) {
        let mut log = lock(&self.log);
        let seq = log.len() as u64 + 1;
        let frame = json!({"id": event_id(seq), "type": kind, "properties": properties});
        log.push(frame.to_string());
        drop(log);
        self.log_tx.send_replace(seq);
    }

    fn session(&self, id: &str) -> Option<Arc<FakeSession>> {
        lock(&self.sessions).get(id).cloned()
    }

    fn all_sessions(&self) -> Vec<Arc<FakeSession>> {
        let order = lock(&self.order).clone();
        let map = lock(&self.sessions);
        order.iter().filter_map(|id| map.get(id).cloned()).collect()
    }
}

fn event_id(seq: u64) -> String {
    format!("evt_{seq:012}")
}

fn parse_event_id(s: &str) -> Option<u64> {
    s.trim().strip_prefix("evt_")?.parse().ok()
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/global/health", get(health))
        .route("/agent", get(agents))
        .route("/session", post(create_session).get(list_sessions))
        .route("/session/status", get(session_status))
        .route("/session/{id}", get(get_session))
        .route("/session/{id}/prompt_async", post(prompt_async))
        .route("/session/{id}/message", get(messages))
        .route("/session/{id}/abort", post(abort))
        .route("/session/{id}/todo", get(todos))
        .route("/session/{id}/diff", get(diff))
        .route("/event", get(events))
        .route("/permission", get(list_permissions))
        .route("/permission/{id}/reply", post(reply_permission))
        .route("/question", get(list_questions))
        .route("/question/{id}/reply", post(reply_question))
        .route("/question/{id}/reject", post(reject_question))
        .route("/__fake/prompts", get(received_prompts))
        .route("/__fake/stats", get(stats))
        .layer(middleware::from_fn_with_state(app.clone(), basic_auth))
        .with_state(app)
}

async fn basic_auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(pw) = &app.cfg.password {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{pw}", app.cfg.username))
        );
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        if got != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
    }
    next.run(req).await
}

fn not_found(tag: &str, what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"_tag": tag, "requestID": id, "message": format!("{what} not found: {id}")})),
    )
        .into_response()
}

fn session_not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"name": "NotFoundError", "data": {"message": format!("Session not found: {id}")}})),
    )
        .into_response()
}

fn bad_request(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"name": "BadRequest", "data": {"message": msg}})),
    )
        .into_response()
}

async fn health() -> Json<Value> {
    Json(
        json!({"healthy": true, "version": format!("{}-fake", atelier_runtimes::opencode::OPENCODE_VERSION)}),
    )
}

async fn agents() -> Json<Value> {
    Json(json!([
        {"name": "build", "description": "fake build agent", "mode": "primary", "native": true},
        {"name": "plan", "description": "fake plan agent", "mode": "primary", "native": true}
    ]))
}

async fn create_session(State(app): State<Arc<App>>, body: Option<Json<Value>>) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let id = app.id("ses");
    let now = now_ms();
    let info = json!({
        "id": id,
        "slug": "fake",
        "projectID": "global",
        "directory": app.cfg.directory.to_string_lossy(),
        "path": "",
        "title": body.get("title").and_then(Value::as_str).unwrap_or("New session"),
        "version": atelier_runtimes::opencode::OPENCODE_VERSION,
        "cost": 0,
        "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
        "time": {"created": now, "updated": now}
    });
    let (prompt_tx, prompt_rx) = mpsc::unbounded_channel();
    let session = Arc::new(FakeSession {
        id: id.clone(),
        info: info.clone(),
        data: Mutex::new(SessionData {
            todos: json!([]),
            ..SessionData::default()
        }),
        prompt_tx,
        abort_tx: watch::channel(0).0,
    });
    lock(&app.sessions).insert(id.clone(), session.clone());
    lock(&app.order).push(id.clone());
    app.emit(
        "session.created",
        json!({"sessionID": id, "info": info.clone()}),
    );
    tokio::spawn(run_session(app.clone(), session, prompt_rx));
    Json(info).into_response()
}

async fn list_sessions(State(app): State<Arc<App>>) -> Json<Value> {
    Json(Value::Array(
        app.all_sessions().iter().map(|s| s.info.clone()).collect(),
    ))
}

async fn get_session(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    match app.session(&id) {
        Some(s) => Json(s.info.clone()).into_response(),
        None => session_not_found(&id),
    }
}

async fn session_status(State(app): State<Arc<App>>) -> Json<Value> {
    let mut map = serde_json::Map::new();
    for s in app.all_sessions() {
        if lock(&s.data).busy {
            map.insert(s.id.clone(), json!({"type": "busy"}));
        }
    }
    Json(Value::Object(map))
}

async fn prompt_async(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(session) = app.session(&id) else {
        return session_not_found(&id);
    };
    let Some(Json(body)) = body else {
        return bad_request("a JSON body is required");
    };
    let Some(parts) = body.get("parts").and_then(Value::as_array) else {
        return bad_request("parts is required");
    };
    lock(&app.prompts).push(body.clone());
    if app.dropped_prompts.load(Ordering::SeqCst) < app.cfg.scenario.drop_prompts {
        // Like OpenCode's prompt_async at its worst: accepted, never recorded.
        app.dropped_prompts.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NO_CONTENT.into_response();
    }
    let msg_id = app.id("msg");
    let info = json!({
        "id": msg_id,
        "sessionID": id,
        "role": "user",
        "time": {"created": now_ms()},
        "agent": body.get("agent").and_then(Value::as_str).unwrap_or("build"),
        "model": body.get("model").cloned().unwrap_or(json!({"providerID": "fake", "modelID": "fake"})),
    });
    let mut stored_parts = Vec::new();
    for p in parts {
        let mut part = p.clone();
        part["id"] = json!(app.id("prt"));
        part["sessionID"] = json!(id);
        part["messageID"] = json!(msg_id);
        stored_parts.push(part);
    }
    lock(&session.data)
        .messages
        .push((info.clone(), stored_parts.clone()));
    app.emit("message.updated", json!({"sessionID": id, "info": info}));
    for part in stored_parts {
        app.emit(
            "message.part.updated",
            json!({"sessionID": id, "part": part, "time": now_ms()}),
        );
    }
    let _ = session.prompt_tx.send(());
    StatusCode::NO_CONTENT.into_response()
}

#[derive(serde::Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn messages(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<LimitQuery>,
) -> Response {
    let Some(session) = app.session(&id) else {
        return session_not_found(&id);
    };
    let data = lock(&session.data);
    let all: Vec<Value> = data
        .messages
        .iter()
        .map(|(info, parts)| json!({"info": info, "parts": parts}))
        .collect();
    let start = q.limit.map(|l| all.len().saturating_sub(l)).unwrap_or(0);
    Json(Value::Array(all[start..].to_vec())).into_response()
}

async fn abort(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let Some(session) = app.session(&id) else {
        return session_not_found(&id);
    };
    if lock(&session.data).busy {
        session.abort_tx.send_modify(|g| *g += 1);
    }
    Json(json!(true)).into_response()
}

async fn todos(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    match app.session(&id) {
        Some(s) => Json(lock(&s.data).todos.clone()).into_response(),
        None => session_not_found(&id),
    }
}

async fn diff(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    match app.session(&id) {
        Some(s) => Json(Value::Array(lock(&s.data).diff.clone())).into_response(),
        None => session_not_found(&id),
    }
}

async fn list_permissions(State(app): State<Arc<App>>) -> Json<Value> {
    let mut out = Vec::new();
    for s in app.all_sessions() {
        out.extend(lock(&s.data).permissions.iter().map(|(r, _)| r.clone()));
    }
    Json(Value::Array(out))
}

async fn list_questions(State(app): State<Arc<App>>) -> Json<Value> {
    let mut out = Vec::new();
    for s in app.all_sessions() {
        out.extend(lock(&s.data).questions.iter().map(|(r, _)| r.clone()));
    }
    Json(Value::Array(out))
}

async fn reply_permission(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(body)) = body else {
        return bad_request("a JSON body is required");
    };
    let reply = match body.get("reply").and_then(Value::as_str) {
        Some(r @ ("once" | "always" | "reject")) => r.to_string(),
        _ => return bad_request("reply must be once, always or reject"),
    };
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string);
    for s in app.all_sessions() {
        let taken = {
            let mut data = lock(&s.data);
            data.permissions
                .iter()
                .position(|(r, _)| r.get("id").and_then(Value::as_str) == Some(id.as_str()))
                .map(|pos| data.permissions.remove(pos))
        };
        if let Some((_, tx)) = taken {
            let _ = tx.send(PermissionAnswer { reply, message });
            return Json(json!(true)).into_response();
        }
    }
    not_found("PermissionNotFoundError", "Permission request", &id)
}

fn take_question(app: &App, id: &str) -> Option<oneshot::Sender<QuestionAnswer>> {
    for s in app.all_sessions() {
        let mut data = lock(&s.data);
        if let Some(pos) = data
            .questions
            .iter()
            .position(|(r, _)| r.get("id").and_then(Value::as_str) == Some(id))
        {
            return Some(data.questions.remove(pos).1);
        }
    }
    None
}

async fn reply_question(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(body)) = body else {
        return bad_request("a JSON body is required");
    };
    let answers = match body.get("answers") {
        Some(Value::Array(a))
            if a.iter()
                .all(|x| x.as_array().is_some_and(|v| v.iter().all(Value::is_string))) =>
        {
            Value::Array(a.clone())
        }
        _ => return bad_request("answers must be an array of arrays of strings"),
    };
    match take_question(&app, &id) {
        Some(tx) => {
            let _ = tx.send(QuestionAnswer::Answers(answers));
            Json(json!(true)).into_response()
        }
        None => not_found("QuestionNotFoundError", "Question request", &id),
    }
}

async fn reject_question(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    match take_question(&app, &id) {
        Some(tx) => {
            let _ = tx.send(QuestionAnswer::Rejected);
            Json(json!(true)).into_response()
        }
        None => not_found("QuestionNotFoundError", "Question request", &id),
    }
}

async fn stats(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "event_connections": app.connections.load(Ordering::SeqCst),
        "events": lock(&app.log).len(),
        "prompts": lock(&app.prompts).len(),
    }))
}

async fn received_prompts(State(app): State<Arc<App>>) -> Json<Value> {
    Json(Value::Array(lock(&app.prompts).clone()))
}

fn sse_frame(id: Option<&str>, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 40);
    if let Some(id) = id {
        s.push_str("id: ");
        s.push_str(id);
        s.push('\n');
    }
    // Our JSON has no raw newlines, but split anyway to stay valid SSE.
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

async fn events(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    app.connections.fetch_add(1, Ordering::SeqCst);
    let mut log_rx = app.log_tx.subscribe();
    let mut drop_rx = app.drop_tx.subscribe();
    drop_rx.borrow_and_update();
    let current = lock(&app.log).len() as u64;
    let last = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(parse_event_id);
    let start = match (app.cfg.replay, last) {
        (true, Some(n)) => n.min(current),
        _ => current,
    };
    let replay = app.cfg.replay;
    let stream = async_stream::stream! {
        let connected = json!({"id": event_id(start), "type": "server.connected", "properties": {}}).to_string();
        // In replay mode the connected frame carries the resume point as its id, which
        // also tells clients that this server replays.
        let connected_id = event_id(start);
        yield Ok::<Bytes, std::convert::Infallible>(sse_frame(replay.then_some(connected_id.as_str()), &connected));
        let mut next = start;
        let period = Duration::from_secs(10);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let frames: Vec<String> = {
                let log = lock(&app.log);
                log.get(next as usize..).map(<[String]>::to_vec).unwrap_or_default()
            };
            for f in frames {
                next += 1;
                let id = event_id(next);
                yield Ok(sse_frame(replay.then_some(id.as_str()), &f));
            }
            tokio::select! {
                biased;
                _ = drop_rx.changed() => break,
                changed = log_rx.changed() => if changed.is_err() { break },
                _ = heartbeat.tick() => {
                    let hb = json!({"id": "evt_heartbeat", "type": "server.heartbeat", "properties": {}}).to_string();
                    yield Ok(sse_frame(None, &hb));
                }
            }
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------------------------------
// The scripted agent.
// ---------------------------------------------------------------------------------------

enum StepOutcome {
    Continue,
    /// The turn stops here (a reject without message, a dismissed question).
    Halt,
}

enum TurnEnd {
    Done,
    Halted,
    Failed(String),
    Aborted,
}

fn is_boundary(step: &Step) -> bool {
    matches!(step, Step::Finish | Step::WaitForPrompt | Step::Fail(_))
}

async fn run_session(app: Arc<App>, s: Arc<FakeSession>, mut prompts: mpsc::UnboundedReceiver<()>) {
    let steps = app.cfg.scenario.steps.clone();
    let mut pc = 0usize;
    while prompts.recv().await.is_some() {
        let mut abort_rx = s.abort_tx.subscribe();
        abort_rx.borrow_and_update();
        let mut turn = Turn::start(&app, &s);
        let end = loop {
            let Some(step) = steps.get(pc) else {
                break TurnEnd::Done;
            };
            pc += 1;
            match step {
                Step::Finish | Step::WaitForPrompt => break TurnEnd::Done,
                Step::Fail(m) => break TurnEnd::Failed(m.clone()),
                Step::Crash => {
                    // Give open connections a moment to flush what was already sent.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    std::process::exit(70);
                }
                _ => {}
            }
            let outcome = tokio::select! {
                o = turn.exec(step) => o,
                _ = abort_rx.changed() => {
                    break TurnEnd::Aborted;
                }
            };
            if let StepOutcome::Halt = outcome {
                break TurnEnd::Halted;
            }
        };
        if matches!(end, TurnEnd::Halted | TurnEnd::Aborted) {
            // Skip the rest of this turn's steps, through its boundary.
            while let Some(step) = steps.get(pc) {
                pc += 1;
                if is_boundary(step) {
                    break;
                }
            }
        }
        turn.end(end);
    }
}

struct Turn<'a> {
    app: &'a Arc<App>,
    s: &'a Arc<FakeSession>,
    assistant: Value,
}

impl<'a> Turn<'a> {
    fn start(app: &'a Arc<App>, s: &'a Arc<FakeSession>) -> Turn<'a> {
        let parent = {
            let data = lock(&s.data);
            data.messages
                .iter()
                .rev()
                .find(|(i, _)| i.get("role").and_then(Value::as_str) == Some("user"))
                .and_then(|(i, _)| i.get("id").cloned())
                .unwrap_or(Value::Null)
        };
        let dir = app.cfg.directory.to_string_lossy().into_owned();
        let assistant = json!({
            "id": app.id("msg"),
            "sessionID": s.id,
            "role": "assistant",
            "parentID": parent,
            "mode": "build",
            "agent": "build",
            "path": {"cwd": dir, "root": dir},
            "cost": 0,
            "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
            "modelID": "fake",
            "providerID": "fake",
            "time": {"created": now_ms()}
        });
        {
            let mut data = lock(&s.data);
            data.busy = true;
            data.messages.push((assistant.clone(), Vec::new()));
        }
        app.emit(
            "session.status",
            json!({"sessionID": s.id, "status": {"type": "busy"}}),
        );
        let turn = Turn { app, s, assistant };
        turn.publish_message();
        turn
    }

    fn msg_id(&self) -> String {
        self.assistant
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn publish_message(&self) {
        {
            let mut data = lock(&self.s.data);
            let id = self.assistant.get("id");
            if let Some(m) = data.messages.iter_mut().find(|(i, _)| i.get("id") == id) {
                m.0 = self.assistant.clone();
            }
        }
        self.app.emit(
            "message.updated",
            json!({"sessionID": self.s.id, "info": self.assistant}),
        );
    }

    /// Stores a part (insert or replace by id) and publishes it.
    fn part(&self, part: Value) {
        {
            let mut data = lock(&self.s.data);
            let id = self.assistant.get("id");
            if let Some((_, parts)) = data.messages.iter_mut().find(|(i, _)| i.get("id") == id) {
                match parts.iter_mut().find(|p| p.get("id") == part.get("id")) {
                    Some(p) => *p = part.clone(),
                    None => parts.push(part.clone()),
                }
            }
        }
        self.app.emit(
            "message.part.updated",
            json!({"sessionID": self.s.id, "part": part, "time": now_ms()}),
        );
    }

    fn tool_part(&self, part_id: &str, call_id: &str, tool: &str, state: Value) -> Value {
        json!({
            "id": part_id, "sessionID": self.s.id, "messageID": self.msg_id(),
            "type": "tool", "tool": tool, "callID": call_id, "state": state
        })
    }

    async fn exec(&mut self, step: &Step) -> StepOutcome {
        match step {
            Step::Say(text) => self.stream_text("text", text),
            Step::Think(text) => self.stream_text("reasoning", text),
            Step::Todos(items) => {
                let todos: Vec<Value> = items
                    .iter()
                    .map(|t| json!({"content": t.content, "status": t.status, "priority": t.priority}))
                    .collect();
                let input = json!({"todos": todos});
                let (pid, cid) = (self.app.id("prt"), self.app.id("call"));
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    "todowrite",
                    json!({"status": "running", "input": input, "time": {"start": now_ms()}}),
                ));
                lock(&self.s.data).todos = Value::Array(todos.clone());
                self.app.emit(
                    "todo.updated",
                    json!({"sessionID": self.s.id, "todos": todos}),
                );
                let open = todos
                    .iter()
                    .filter(|t| t.get("status").and_then(Value::as_str) != Some("completed"))
                    .count();
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    "todowrite",
                    json!({
                        "status": "completed", "input": input,
                        "output": Value::Array(todos.clone()).to_string(),
                        "title": format!("{open} todos"), "metadata": {"todos": todos},
                        "time": {"start": now_ms(), "end": now_ms()}
                    }),
                ));
                StepOutcome::Continue
            }
            Step::EditFile { path, content } => {
                self.edit_file(path, content).await;
                StepOutcome::Continue
            }
            Step::Tool {
                name,
                input,
                output,
                title,
            } => {
                let (pid, cid) = (self.app.id("prt"), self.app.id("call"));
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    name,
                    json!({"status": "pending", "input": {}, "raw": ""}),
                ));
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    name,
                    json!({"status": "running", "input": input, "time": {"start": now_ms()}}),
                ));
                let title = title.clone().unwrap_or_else(|| name.clone());
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    name,
                    json!({
                        "status": "completed", "input": input, "output": output, "title": title,
                        "metadata": {}, "time": {"start": now_ms(), "end": now_ms()}
                    }),
                ));
                StepOutcome::Continue
            }
            Step::AskPermission {
                tool,
                pattern,
                title,
            } => self.ask_permission(tool, pattern, title.as_deref()).await,
            Step::AskQuestion { questions } => self.ask_question(questions).await,
            Step::Usage {
                input,
                output,
                reasoning,
                cache_read,
                cache_write,
                cost,
            } => {
                let add = |v: &mut Value, p: &str, n: u64| {
                    if let Some(x) = v.pointer_mut(p) {
                        *x = json!(x.as_u64().unwrap_or(0) + n);
                    }
                };
                add(&mut self.assistant, "/tokens/input", *input);
                add(&mut self.assistant, "/tokens/output", *output);
                add(&mut self.assistant, "/tokens/reasoning", *reasoning);
                add(&mut self.assistant, "/tokens/cache/read", *cache_read);
                add(&mut self.assistant, "/tokens/cache/write", *cache_write);
                let c = self
                    .assistant
                    .get("cost")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                self.assistant["cost"] = json!(c + cost);
                self.part(json!({
                    "id": self.app.id("prt"), "sessionID": self.s.id, "messageID": self.msg_id(),
                    "type": "step-finish", "reason": "stop", "cost": cost,
                    "tokens": {"input": input, "output": output, "reasoning": reasoning, "cache": {"read": cache_read, "write": cache_write}}
                }));
                self.publish_message();
                StepOutcome::Continue
            }
            Step::SleepMs(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                StepOutcome::Continue
            }
            Step::DropStream => {
                self.app.drop_tx.send_modify(|g| *g += 1);
                StepOutcome::Continue
            }
            // Boundaries and crash are handled by the runner.
            Step::Finish | Step::WaitForPrompt | Step::Fail(_) | Step::Crash => {
                StepOutcome::Continue
            }
        }
    }

    fn stream_text(&self, kind: &str, text: &str) -> StepOutcome {
        let pid = self.app.id("prt");
        let base = json!({"id": pid, "sessionID": self.s.id, "messageID": self.msg_id(), "type": kind, "time": {"start": now_ms()}});
        let mut part = base.clone();
        part["text"] = json!("");
        self.part(part);
        for chunk in chunks(text) {
            self.app.emit(
                "message.part.delta",
                json!({"sessionID": self.s.id, "messageID": self.msg_id(), "partID": pid, "field": "text", "delta": chunk}),
            );
        }
        let mut part = base;
        part["text"] = json!(text);
        self.part(part);
        StepOutcome::Continue
    }

    async fn edit_file(&self, path: &str, content: &str) {
        let (pid, cid) = (self.app.id("prt"), self.app.id("call"));
        let rel = Path::new(path);
        let safe = !path.is_empty()
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        let abs = self.app.cfg.directory.join(rel);
        let abs_s = abs.to_string_lossy().into_owned();
        let existed = safe && abs.exists();
        let tool = if existed { "edit" } else { "write" };
        let input = json!({"filePath": abs_s, "content": content});
        self.part(self.tool_part(
            &pid,
            &cid,
            tool,
            json!({"status": "pending", "input": {}, "raw": ""}),
        ));
        self.part(self.tool_part(
            &pid,
            &cid,
            tool,
            json!({"status": "running", "input": input, "time": {"start": now_ms()}}),
        ));
        let written = if !safe {
            Err(format!(
                "path {path:?} must be relative and stay inside the directory"
            ))
        } else {
            let parent_ok = match abs.parent() {
                Some(p) => tokio::fs::create_dir_all(p)
                    .await
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            };
            match parent_ok {
                Ok(()) => tokio::fs::write(&abs, content)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        };
        match written {
            Ok(()) => {
                self.app.emit("file.edited", json!({"file": abs_s}));
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    tool,
                    json!({
                        "status": "completed", "input": input, "output": "Wrote file successfully.",
                        "metadata": {"filepath": abs_s, "exists": existed, "truncated": false},
                        "title": path, "time": {"start": now_ms(), "end": now_ms()}
                    }),
                ));
                let entry = json!({
                    "file": path, "additions": content.lines().count(), "deletions": 0,
                    "status": if existed { "modified" } else { "added" }
                });
                let diff = {
                    let mut data = lock(&self.s.data);
                    data.diff
                        .retain(|d| d.get("file").and_then(Value::as_str) != Some(path));
                    data.diff.push(entry);
                    data.diff.clone()
                };
                self.app.emit(
                    "session.diff",
                    json!({"sessionID": self.s.id, "diff": diff}),
                );
            }
            Err(e) => {
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    tool,
                    json!({
                        "status": "error", "input": input, "error": e,
                        "time": {"start": now_ms(), "end": now_ms()}
                    }),
                ));
            }
        }
    }

    async fn ask_permission(&self, tool: &str, pattern: &str, title: Option<&str>) -> StepOutcome {
        {
            let data = lock(&self.s.data);
            if data
                .always
                .contains(&(tool.to_string(), pattern.to_string()))
                || data.always.contains(&(tool.to_string(), "*".to_string()))
            {
                // Approved by an earlier "always": nothing is asked.
                return StepOutcome::Continue;
            }
        }
        let id = self.app.id("per");
        let call_id = self.app.id("call");
        let mut metadata = json!({});
        if let Some(t) = title {
            metadata["title"] = json!(t);
        }
        let request = json!({
            "id": id, "sessionID": self.s.id, "permission": tool, "patterns": [pattern],
            "metadata": metadata, "always": [pattern],
            "tool": {"messageID": self.msg_id(), "callID": call_id}
        });
        let (tx, rx) = oneshot::channel();
        lock(&self.s.data).permissions.push((request.clone(), tx));
        self.app.emit("permission.asked", request);
        let Ok(answer) = rx.await else {
            return StepOutcome::Halt;
        };
        self.app.emit(
            "permission.replied",
            json!({"sessionID": self.s.id, "requestID": id, "reply": answer.reply}),
        );
        match answer.reply.as_str() {
            "always" => {
                lock(&self.s.data)
                    .always
                    .insert((tool.to_string(), pattern.to_string()));
                StepOutcome::Continue
            }
            "reject" if answer.message.is_none() => StepOutcome::Halt,
            _ => StepOutcome::Continue,
        }
    }

    async fn ask_question(&self, questions: &[crate::scenario::QuestionSpec]) -> StepOutcome {
        let qs: Vec<Value> = questions
            .iter()
            .map(|q| {
                json!({
                    "question": q.question,
                    "header": q.header.clone().unwrap_or_else(|| q.question.chars().take(30).collect()),
                    "options": q.options.iter().map(|o| json!({"label": o.label(), "description": o.description()})).collect::<Vec<_>>(),
                    "multiple": q.multiple,
                    "custom": q.custom,
                })
            })
            .collect();
        let id = self.app.id("que");
        let (pid, cid) = (self.app.id("prt"), self.app.id("call"));
        let input = json!({"questions": qs});
        self.part(self.tool_part(
            &pid,
            &cid,
            "question",
            json!({"status": "running", "input": input, "time": {"start": now_ms()}}),
        ));
        let request = json!({
            "id": id, "sessionID": self.s.id, "questions": qs,
            "tool": {"messageID": self.msg_id(), "callID": cid}
        });
        let (tx, rx) = oneshot::channel();
        lock(&self.s.data).questions.push((request.clone(), tx));
        self.app.emit("question.asked", request);
        match rx.await {
            Ok(QuestionAnswer::Answers(answers)) => {
                self.app.emit(
                    "question.replied",
                    json!({"sessionID": self.s.id, "requestID": id, "answers": answers}),
                );
                let text = questions
                    .iter()
                    .zip(answers.as_array().into_iter().flatten())
                    .map(|(q, a)| {
                        let labels: Vec<&str> = a
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        format!("\"{}\"=\"{}\"", q.question, labels.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                self.part(self.tool_part(
                    &pid,
                    &cid,
                    "question",
                    json!({
                        "status": "completed", "input": input,
                        "output": format!("User has answered your questions: {text}"),
                        "title": "Asked a question", "metadata": {"answers": answers},
                        "time": {"start": now_ms(), "end": now_ms()}
                    }),
                ));
                StepOutcome::Continue
            }
            Ok(QuestionAnswer::Rejected) | Err(_) => {
                self.app.emit(
                    "question.rejected",
                    json!({"sessionID": self.s.id, "requestID": id}),
                );
                self.part(self.tool_part(&pid, &cid, "question", json!({
                    "status": "error", "input": input, "error": "The user dismissed this question",
                    "time": {"start": now_ms(), "end": now_ms()}
                })));
                StepOutcome::Halt
            }
        }
    }

    fn end(mut self, end: TurnEnd) {
        let sid = self.s.id.clone();
        match &end {
            TurnEnd::Failed(m) => {
                let err = json!({"name": "UnknownError", "data": {"message": m}});
                self.app
                    .emit("session.error", json!({"sessionID": sid, "error": err}));
                self.assistant["error"] = err;
            }
            TurnEnd::Aborted => {
                let err = json!({"name": "MessageAbortedError", "data": {"message": "Aborted"}});
                self.app
                    .emit("session.error", json!({"sessionID": sid, "error": err}));
                // Abort rejects the session's pending asks.
                let (perms, questions) = {
                    let mut data = lock(&self.s.data);
                    (
                        std::mem::take(&mut data.permissions),
                        std::mem::take(&mut data.questions),
                    )
                };
                for (r, _) in perms {
                    self.app.emit(
                        "permission.replied",
                        json!({"sessionID": sid, "requestID": r.get("id"), "reply": "reject"}),
                    );
                }
                for (r, _) in questions {
                    self.app.emit(
                        "question.rejected",
                        json!({"sessionID": sid, "requestID": r.get("id")}),
                    );
                }
                self.assistant["error"] = err;
            }
            TurnEnd::Done | TurnEnd::Halted => {
                self.assistant["finish"] = json!("stop");
            }
        }
        self.assistant["time"]["completed"] = json!(now_ms());
        self.publish_message();
        lock(&self.s.data).busy = false;
        self.app.emit(
            "session.status",
            json!({"sessionID": sid, "status": {"type": "idle"}}),
        );
        self.app.emit("session.idle", json!({"sessionID": sid}));
    }
}

/// Splits text into a few streaming chunks (at word boundaries).
pub(crate) fn chunks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, word) in text.split_inclusive(' ').enumerate() {
        cur.push_str(word);
        if i % 3 == 2 {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_rebuild_the_text() {
        for t in ["", "one", "one two three four five six seven", "a  b "] {
            assert_eq!(chunks(t).concat(), t);
        }
        assert_eq!(chunks("a b c d").len(), 2);
    }

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(parse_event_id(&event_id(42)), Some(42));
        assert_eq!(parse_event_id("evt_2039a5408001CPQPWAeG22AAgk"), None);
        assert_eq!(parse_event_id("nope"), None);
    }

    #[test]
    fn sse_frames_are_well_formed() {
        let f = sse_frame(Some("evt_1"), "{\"a\":1}");
        assert_eq!(&f[..], b"id: evt_1\ndata: {\"a\":1}\n\n");
        let mut p = atelier_runtimes::sse::SseParser::new();
        let ev = p.push(&sse_frame(None, "x\ny"));
        assert_eq!(ev[0].data, "x\ny");
    }
}
