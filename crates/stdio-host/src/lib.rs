//! `atelier-stdio-host`: runs a stdio coding agent (Claude Code, an ACP agent) in its
//! sandbox and makes it reachable over HTTP the way `opencode serve` is. The protocol
//! (routes, records, resume) is described in [`atelier_runtimes::stdio_host`], which
//! also holds the manager's client; this crate is the server half.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use atelier_runtimes::stdio_host::{
    random_id, Record, RecordBody, HOST_URL_ENV, MAX_LINE_BYTES, TOKEN_ENV,
};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::sync::watch;

/// Lines of the agent's stderr kept for the `exit` record.
const STDERR_TAIL: usize = 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How to run a host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The agent's command line (program first).
    pub argv: Vec<String>,
    /// The transcript file; created if missing, continued if present.
    pub transcript: PathBuf,
    /// The agent's working directory (default: the host's).
    pub cwd: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Period of the SSE heartbeat comment.
    pub heartbeat: Duration,
}

impl HostConfig {
    pub fn new(argv: Vec<String>, transcript: PathBuf) -> HostConfig {
        HostConfig {
            argv,
            transcript,
            cwd: None,
            token: None,
            heartbeat: Duration::from_secs(15),
        }
    }
}

/// Errors of the host itself (startup; requests answer with HTTP errors).
#[derive(Debug)]
pub struct HostError(pub String);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Log {
    /// `(kind, JSON text)` of record `n` at index `n - 1`.
    records: Vec<(&'static str, Arc<str>)>,
    file: Option<std::fs::File>,
    /// Input ids already written, with the seq of their record.
    input_ids: HashMap<String, u64>,
}

#[derive(Debug, Clone, Default)]
struct ChildState {
    pid: Option<u32>,
    running: bool,
    code: Option<i32>,
    signal: Option<i32>,
    started_seq: u64,
}

struct Host {
    transcript_id: String,
    log: Mutex<Log>,
    seq_tx: watch::Sender<u64>,
    close_tx: watch::Sender<u64>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    child: Mutex<ChildState>,
    subscribers_total: AtomicU64,
    subscribers_open: Arc<AtomicU64>,
    inputs: AtomicU64,
    token: Option<String>,
    heartbeat: Duration,
}

impl Host {
    /// Appends a record and wakes the subscribers; returns its seq.
    fn append(&self, body: RecordBody) -> u64 {
        let mut log = lock(&self.log);
        let seq = log.records.len() as u64 + 1;
        let kind = body.kind();
        if let RecordBody::In { id, .. } = &body {
            log.input_ids.insert(id.clone(), seq);
        }
        let rec = Record {
            seq,
            t: now_ms(),
            body,
        };
        let text = serde_json::to_string(&rec).unwrap_or_else(|_| "{}".into());
        if let Some(f) = log.file.as_mut() {
            // One write per record: a host crash leaves at most one torn line, which
            // the next start drops.
            let mut line = text.clone().into_bytes();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::error!("transcript write failed: {e}");
            }
        }
        log.records.push((kind, Arc::from(text)));
        drop(log);
        self.seq_tx.send_replace(seq);
        seq
    }

    fn seq(&self) -> u64 {
        lock(&self.log).records.len() as u64
    }

    fn status_json(&self) -> Value {
        let c = lock(&self.child).clone();
        json!({
            "state": if c.running { "running" } else { "exited" },
            "pid": c.pid,
            "code": c.code,
            "signal": c.signal,
            "seq": self.seq(),
            "started_seq": c.started_seq,
            "transcript_id": self.transcript_id,
            "subscribers_total": self.subscribers_total.load(Ordering::SeqCst),
            "subscribers_open": self.subscribers_open.load(Ordering::SeqCst),
            "inputs": self.inputs.load(Ordering::SeqCst),
        })
    }
}

/// Reads an existing transcript: its records (a torn or corrupt tail is cut off, and the
/// file truncated to the last good line) and its id.
fn load_transcript(path: &Path) -> std::result::Result<(Vec<Record>, u64), HostError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(HostError(format!("cannot read {}: {e}", path.display()))),
    };
    let mut records = Vec::new();
    let mut good_len = 0u64;
    let mut pos = 0usize;
    while pos < text.len() {
        let Some(nl) = text[pos..].iter().position(|b| *b == b'\n') else {
            break; // torn last line
        };
        let line = &text[pos..pos + nl];
        match serde_json::from_slice::<Record>(line) {
            Ok(r) if r.seq == records.len() as u64 + 1 => records.push(r),
            _ => break,
        }
        pos += nl + 1;
        good_len = pos as u64;
    }
    Ok((records, good_len))
}

/// Starts the agent and serves the host on `listener` until the process ends (or the
/// returned future is dropped).
pub async fn serve(cfg: HostConfig, listener: tokio::net::TcpListener) -> Result<(), HostError> {
    serve_until(cfg, listener, std::future::pending()).await
}

/// Like [`serve`], until `shutdown` completes: then the agent's process group gets
/// SIGTERM, and SIGKILL if it is still there after `grace`, so the agent's own children
/// (npx → node) do not outlive the host.
pub async fn serve_until(
    cfg: HostConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), HostError> {
    let addr = listener
        .local_addr()
        .map_err(|e| HostError(e.to_string()))?;
    let host = start(cfg, &format!("http://{addr}")).await?;
    tokio::select! {
        r = axum::serve(listener, router(host.clone())) => r.map_err(|e| HostError(e.to_string())),
        _ = shutdown => {
            stop_agent(&host, Duration::from_secs(5)).await;
            Ok(())
        }
    }
}

async fn stop_agent(host: &Host, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    let c = lock(&host.child).clone();
    let (true, Some(pid)) = (c.running, c.pid.and_then(|p| i32::try_from(p).ok())) else {
        return;
    };
    let group = nix::unistd::Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    let mut seq_rx = host.seq_tx.subscribe();
    while lock(&host.child).running && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout_at(deadline, seq_rx.changed()).await;
    }
    if lock(&host.child).running {
        let _ = killpg(group, Signal::SIGKILL);
    }
}

async fn start(cfg: HostConfig, url: &str) -> Result<Arc<Host>, HostError> {
    if cfg.argv.is_empty() {
        return Err(HostError("no agent command given".into()));
    }
    let (old, good_len) = load_transcript(&cfg.transcript)?;
    if let Some(dir) = cfg
        .transcript
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| HostError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.transcript)
        .map_err(|e| HostError(format!("cannot open {}: {e}", cfg.transcript.display())))?;
    file.set_len(good_len)
        .map_err(|e| HostError(format!("cannot truncate the transcript: {e}")))?;
    let transcript_id = old
        .iter()
        .find_map(|r| match &r.body {
            RecordBody::Start { transcript_id, .. } => Some(transcript_id.clone()),
            _ => None,
        })
        .unwrap_or_else(random_id);
    let mut log = Log {
        records: Vec::with_capacity(old.len()),
        file: Some(file),
        input_ids: HashMap::new(),
    };
    let mut exited = true;
    for r in &old {
        if let RecordBody::In { id, .. } = &r.body {
            log.input_ids.insert(id.clone(), r.seq);
        }
        exited = matches!(r.body, RecordBody::Exit { .. });
        let text = serde_json::to_string(r).unwrap_or_else(|_| "{}".into());
        log.records.push((r.body.kind(), Arc::from(text)));
    }
    let host = Arc::new(Host {
        transcript_id: transcript_id.clone(),
        seq_tx: watch::channel(log.records.len() as u64).0,
        log: Mutex::new(log),
        close_tx: watch::channel(0).0,
        stdin: tokio::sync::Mutex::new(None),
        child: Mutex::new(ChildState::default()),
        subscribers_total: AtomicU64::new(0),
        subscribers_open: Arc::new(AtomicU64::new(0)),
        inputs: AtomicU64::new(0),
        token: cfg.token.clone(),
        heartbeat: cfg.heartbeat,
    });
    if !old.is_empty() && !exited {
        // The previous host died without recording its agent's end.
        host.append(RecordBody::Exit {
            code: None,
            signal: None,
            error: Some("the host restarted while the agent ran".into()),
            stderr_tail: Vec::new(),
        });
    }

    let mut cmd = Command::new(&cfg.argv[0]);
    cmd.args(&cfg.argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env(HOST_URL_ENV, url)
        .env_remove(TOKEN_ENV)
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &cfg.cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            // Serve the failure instead of dying: the adapter reads why.
            host.append(RecordBody::Start {
                transcript_id,
                pid: None,
                argv: cfg.argv.clone(),
            });
            host.append(RecordBody::Exit {
                code: None,
                signal: None,
                error: Some(format!("cannot start {:?}: {e}", cfg.argv[0])),
                stderr_tail: Vec::new(),
            });
            return Ok(host);
        }
    };
    let pid = child.id();
    let started_seq = host.append(RecordBody::Start {
        transcript_id,
        pid,
        argv: cfg.argv.clone(),
    });
    *lock(&host.child) = ChildState {
        pid,
        running: true,
        started_seq,
        ..ChildState::default()
    };
    *host.stdin.lock().await = child.stdin.take();

    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let out_task = stdout.map(|out| {
        let host = host.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(out);
            while let Some(line) = read_line_capped(&mut reader, MAX_LINE_BYTES).await {
                host.append(RecordBody::Out { line });
            }
        })
    });
    let err_task = stderr.map(|err| {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(err);
            while let Some(line) = read_line_capped(&mut reader, 64 * 1024).await {
                eprintln!("{line}");
                let mut t = lock(&tail);
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
    });
    let waiter_host = host.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        // Whatever the agent printed before it died belongs before its exit record; a
        // grandchild holding the pipe open must not hold the record back for long.
        for task in [out_task, err_task].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let (code, signal, error) = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                (s.code(), s.signal(), None)
            }
            Err(e) => (None, None, Some(e.to_string())),
        };
        *waiter_host.stdin.lock().await = None;
        {
            let mut c = lock(&waiter_host.child);
            c.running = false;
            c.code = code;
            c.signal = signal;
        }
        let stderr_tail = lock(&tail).iter().cloned().collect();
        waiter_host.append(RecordBody::Exit {
            code,
            signal,
            error,
            stderr_tail,
        });
    });
    Ok(host)
}

/// Reads one line (without its `\n`, lossily decoded) keeping at most `cap` bytes of it;
/// `None` at the end of the stream.
async fn read_line_capped<R: AsyncBufRead + Unpin>(reader: &mut R, cap: usize) -> Option<String> {
    let mut line = Vec::new();
    let mut truncated = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("reading the agent's output: {e}");
                return None;
            }
        };
        if buf.is_empty() {
            if line.is_empty() {
                return None;
            }
            break;
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        let room = cap.saturating_sub(line.len());
        if take > room {
            truncated = true;
        }
        line.extend_from_slice(&buf[..take.min(room)]);
        let consumed = if done { take + 1 } else { take };
        reader.consume(consumed);
        if done {
            break;
        }
    }
    if truncated {
        tracing::warn!("an agent output line longer than {cap} bytes was cut");
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/status", get(status))
        .route("/events", get(events))
        .route("/transcript", get(transcript))
        .route("/input", post(input))
        .route("/signal", post(signal))
        .route("/subscribers/close", post(close_subscribers))
        .layer(middleware::from_fn_with_state(host.clone(), bearer_auth))
        .with_state(host)
}

fn error(
    status: StatusCode,
    code: &str,
    field: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let mut body = json!({"error": code, "message": message.into()});
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}

async fn bearer_auth(State(host): State<Arc<Host>>, req: Request, next: Next) -> Response {
    let open = matches!(req.uri().path(), "/health" | "/subscribers/close");
    if let (Some(token), false) = (&host.token, open) {
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if got != Some(token.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                None,
                "a valid bearer token is required",
            );
        }
    }
    next.run(req).await
}

async fn health() -> Json<Value> {
    Json(json!({"ok": true, "version": env!("CARGO_PKG_VERSION")}))
}

async fn status(State(host): State<Arc<Host>>) -> Json<Value> {
    Json(host.status_json())
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<String>,
}

/// Parses a record number (`after`, `Last-Event-ID`); empty means from the start.
fn parse_after(raw: Option<&str>, field: &str) -> std::result::Result<u64, Box<Response>> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(s) => s.parse().map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "invalid",
                Some(field),
                format!("{field} must be a record number, got {s:?}"),
            ))
        }),
    }
}

async fn transcript(State(host): State<Arc<Host>>, Query(q): Query<AfterQuery>) -> Response {
    let after = match parse_after(q.after.as_deref(), "after") {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let mut body = String::new();
    {
        let log = lock(&host.log);
        for (_, text) in log.records.iter().skip(after as usize) {
            body.push_str(text);
            body.push('\n');
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn sse_frame(id: Option<u64>, event: &str, data: &str) -> Bytes {
    let mut s = String::with_capacity(data.len() + 48);
    if let Some(id) = id {
        s.push_str(&format!("id: {id}\n"));
    }
    s.push_str("event: ");
    s.push_str(event);
    s.push('\n');
    // Record JSON has no raw newlines; split anyway to stay valid SSE.
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Bytes::from(s)
}

/// Decrements the open-subscriber count when a stream ends.
struct OpenGuard(Arc<AtomicU64>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn events(
    State(host): State<Arc<Host>>,
    headers: HeaderMap,
    Query(q): Query<AfterQuery>,
) -> Response {
    let header_after = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let after = match header_after {
        Some(h) => parse_after(Some(&h), "Last-Event-ID"),
        None => parse_after(q.after.as_deref(), "after"),
    };
    let after = match after {
        Ok(a) => a,
        Err(r) => return *r,
    };
    host.subscribers_total.fetch_add(1, Ordering::SeqCst);
    host.subscribers_open.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard(host.subscribers_open.clone());
    let mut seq_rx = host.seq_tx.subscribe();
    let mut close_rx = host.close_tx.subscribe();
    close_rx.borrow_and_update();
    let stream = async_stream::stream! {
        let _guard = guard;
        let running = lock(&host.child).running;
        let hello = json!({
            "seq": host.seq(),
            "transcript_id": host.transcript_id,
            "state": if running { "running" } else { "exited" },
        });
        yield Ok::<Bytes, std::convert::Infallible>(sse_frame(None, "hello", &hello.to_string()));
        let mut next = after;
        let period = host.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            seq_rx.borrow_and_update();
            let frames: Vec<(&'static str, Arc<str>)> = {
                let log = lock(&host.log);
                log.records.get(next as usize..).map(<[_]>::to_vec).unwrap_or_default()
            };
            for (kind, text) in frames {
                next += 1;
                yield Ok(sse_frame(Some(next), kind, &text));
            }
            tokio::select! {
                biased;
                _ = close_rx.changed() => break,
                changed = seq_rx.changed() => if changed.is_err() { break },
                _ = heartbeat.tick() => yield Ok(Bytes::from_static(b":\n\n")),
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

/// Longest accepted input id.
const MAX_INPUT_ID: usize = 200;

async fn input(State(host): State<Arc<Host>>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("body"),
            "a JSON body {id, message, note?} is required",
        );
    };
    let id = match body.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= MAX_INPUT_ID => id.to_string(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                Some("id"),
                format!("id must be a string of 1 to {MAX_INPUT_ID} bytes"),
            )
        }
    };
    let Some(message) = body.get("message").filter(|m| !m.is_null()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            Some("message"),
            "message (the JSON to write to the agent's stdin) is required",
        );
    };
    let line = message.to_string();
    let note = body.get("note").filter(|n| !n.is_null()).cloned();
    // One writer at a time, so an id is checked and written atomically.
    let mut stdin = host.stdin.lock().await;
    if let Some(seq) = lock(&host.log).input_ids.get(&id).copied() {
        return Json(json!({"seq": seq, "duplicate": true})).into_response();
    }
    let Some(pipe) = stdin.as_mut() else {
        let c = lock(&host.child).clone();
        return error(
            StatusCode::CONFLICT,
            "exited",
            None,
            format!("the agent is not running (exit code {:?})", c.code),
        );
    };
    // The record goes first: whatever the agent answers comes after its cause.
    let seq = host.append(RecordBody::In {
        id,
        line: line.clone(),
        note,
    });
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    let written = match pipe.write_all(&bytes).await {
        Ok(()) => pipe.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        *stdin = None;
        return error(
            StatusCode::CONFLICT,
            "exited",
            None,
            format!("the agent's stdin is closed: {e}"),
        );
    }
    host.inputs.fetch_add(1, Ordering::SeqCst);
    Json(json!({"seq": seq, "duplicate": false})).into_response()
}

async fn signal(State(host): State<Arc<Host>>, body: Option<Json<Value>>) -> Response {
    use nix::sys::signal::{killpg, Signal};
    let name = body
        .as_ref()
        .and_then(|Json(b)| b.get("signal"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let sig = match name {
        "interrupt" => Signal::SIGINT,
        "terminate" => Signal::SIGTERM,
        "kill" => Signal::SIGKILL,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                Some("signal"),
                "signal must be interrupt, terminate or kill",
            )
        }
    };
    let c = lock(&host.child).clone();
    let (true, Some(pid)) = (c.running, c.pid) else {
        return error(
            StatusCode::CONFLICT,
            "exited",
            None,
            "the agent is not running",
        );
    };
    let Ok(pid) = i32::try_from(pid) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            "bad pid",
        );
    };
    match killpg(nix::unistd::Pid::from_raw(pid), sig) {
        Ok(()) => Json(json!({"sent": sig.as_str()})).into_response(),
        Err(e) => error(
            StatusCode::CONFLICT,
            "exited",
            None,
            format!("cannot signal the agent: {e}"),
        ),
    }
}

async fn close_subscribers(State(host): State<Arc<Host>>) -> Json<Value> {
    let open = host.subscribers_open.load(Ordering::SeqCst);
    host.close_tx.send_modify(|g| *g += 1);
    Json(json!({"closed": open}))
}
#[cfg(test)]
mod tests {
    use super::*;
    use atelier_runtimes::stdio_host::{HostClient, Input, StdioConfig};
    use atelier_runtimes::RuntimeError;
    use futures::StreamExt;

    async fn spawn_host(argv: &[&str], transcript: &Path) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut cfg = HostConfig::new(
            argv.iter().map(|s| s.to_string()).collect(),
            transcript.to_path_buf(),
        );
        cfg.heartbeat = Duration::from_millis(100);
        let task = tokio::spawn(async move {
            let _ = serve(cfg, listener).await;
        });
        (url, task)
    }

    fn client(url: &str) -> HostClient {
        HostClient::new(StdioConfig::new(url)).expect("client")
    }

    async fn wait_records(c: &HostClient, n: usize) -> Vec<Record> {
        for _ in 0..200 {
            let recs = c.transcript(0).await.expect("transcript");
            if recs.len() >= n {
                return recs;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} records");
    }

    #[tokio::test]
    async fn echoes_through_cat_records_both_directions_and_dedupes_inputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let (url, task) = spawn_host(&["cat"], &path).await;
        let c = client(&url);
        let st = c.wait_ready(Duration::from_secs(5)).await.expect("ready");
        assert!(st.running());
        let input = Input {
            id: "a1".into(),
            message: json!({"hello": "world"}),
            note: Some(json!({"why": "test"})),
        };
        let seq = c.send(&input).await.expect("send");
        assert_eq!(
            c.send(&input).await.expect("resend"),
            seq,
            "same id, same seq"
        );
        let recs = wait_records(&c, 3).await;
        assert!(matches!(recs[0].body, RecordBody::Start { .. }));
        assert_eq!(
            recs[1].body,
            RecordBody::In {
                id: "a1".into(),
                line: r#"{"hello":"world"}"#.into(),
                note: Some(json!({"why": "test"}))
            }
        );
        assert_eq!(
            recs[2].body,
            RecordBody::Out {
                line: r#"{"hello":"world"}"#.into()
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            c.transcript(0).await.expect("t").len(),
            3,
            "no duplicate echo"
        );
        assert_eq!(c.status().await.expect("status").inputs, 1);
        // Bad input names the field.
        let r = reqwest::Client::new()
            .post(format!("{url}/input"))
            .json(&json!({"message": 1}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["field"], "id");
        // Kill the agent: an exit record with the signal, then 409 for input.
        c.signal("kill").await.expect("kill");
        let recs = wait_records(&c, 4).await;
        assert!(
            matches!(
                recs[3].body,
                RecordBody::Exit {
                    signal: Some(9),
                    ..
                }
            ),
            "{:?}",
            recs[3]
        );
        assert!(recs[3].exit_message().expect("msg").contains("signal 9"));
        let again = Input {
            id: "a2".into(),
            message: json!(1),
            note: None,
        };
        assert!(matches!(
            c.send(&again).await,
            Err(RuntimeError::Disconnected(_))
        ));
        assert!(!c.status().await.expect("status").running());
        task.abort();
    }

    #[tokio::test]
    async fn a_restarted_host_continues_the_transcript_and_remembers_input_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let (url, task) = spawn_host(&["cat"], &path).await;
        let c = client(&url);
        c.wait_ready(Duration::from_secs(5)).await.expect("ready");
        let input = Input {
            id: "once".into(),
            message: json!("x"),
            note: None,
        };
        c.send(&input).await.expect("send");
        wait_records(&c, 3).await;
        let id = c.status().await.expect("status").transcript_id;
        // The host dies abruptly (no exit record), leaving a torn line behind.
        task.abort();
        let _ = task.await;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"seq\":4,\"t\""))
            .expect("tear");
        let (url, task) = spawn_host(&["cat"], &path).await;
        let c = client(&url);
        let st = c.wait_ready(Duration::from_secs(5)).await.expect("ready");
        assert_eq!(st.transcript_id, id, "same transcript");
        let recs = wait_records(&c, 5).await;
        let kinds: Vec<&str> = recs.iter().map(|r| r.body.kind()).collect();
        assert_eq!(kinds, vec!["start", "in", "out", "exit", "start"]);
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        // The old id is known: not written again.
        assert_eq!(c.send(&input).await.expect("resend"), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.transcript(0).await.expect("t").len(), 5);
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(text.lines().count(), 5, "{text}");
        task.abort();
    }

    #[tokio::test]
    async fn events_replay_from_any_point_and_heartbeat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let (url, task) = spawn_host(&["cat"], &path).await;
        let c = client(&url);
        c.wait_ready(Duration::from_secs(5)).await.expect("ready");
        for i in 0..3 {
            c.send(&Input {
                id: format!("i{i}"),
                message: json!(i),
                note: None,
            })
            .await
            .expect("send");
        }
        wait_records(&c, 7).await;
        let mut body = c.open_events(4).await.expect("events");
        let mut parser = atelier_runtimes::sse::SseParser::new();
        let mut got = Vec::new();
        let mut heartbeats = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while heartbeats == 0 || got.len() < 4 {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .expect("timely")
                .expect("open")
                .expect("chunk");
            if chunk.as_ref() == b":\n\n" {
                heartbeats += 1;
            }
            got.extend(parser.push(&chunk));
        }
        assert_eq!(got[0].event.as_deref(), Some("hello"));
        let hello: Value = serde_json::from_str(&got[0].data).expect("hello");
        assert_eq!(hello["seq"], 7);
        let ids: Vec<_> = got[1..]
            .iter()
            .map(|e| e.id.clone().unwrap_or_default())
            .collect();
        assert_eq!(ids, vec!["5", "6", "7"]);
        let rec: Record = serde_json::from_str(&got[1].data).expect("record");
        assert_eq!(rec.seq, 5);
        // A bad Last-Event-ID is a 400 naming it.
        let r = reqwest::Client::new()
            .get(format!("{url}/events"))
            .header("Last-Event-ID", "nope")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["field"], "Last-Event-ID");
        task.abort();
    }

    #[tokio::test]
    async fn an_agent_that_cannot_start_is_reported_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let (url, task) = spawn_host(&["/nonexistent/agent-binary"], &path).await;
        let c = client(&url);
        let st = c.wait_ready(Duration::from_secs(5)).await.expect("ready");
        assert!(!st.running());
        let recs = c.transcript(0).await.expect("t");
        let msg = recs[1].exit_message().expect("exit");
        assert!(msg.contains("could not run"), "{msg}");
        task.abort();
    }

    #[tokio::test]
    async fn tokens_guard_everything_but_health_and_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut cfg = HostConfig::new(vec!["cat".into()], dir.path().join("t.jsonl"));
        cfg.token = Some("s3cret".into());
        let task = tokio::spawn(async move {
            let _ = serve(cfg, listener).await;
        });
        let anon = client(&url);
        assert!(matches!(
            anon.wait_ready(Duration::from_secs(5)).await,
            Err(RuntimeError::Unauthorized)
        ));
        assert_eq!(anon.close_subscribers().await.expect("close"), 0);
        let ok = HostClient::new(StdioConfig::new(&url).with_token("s3cret")).expect("client");
        assert!(ok
            .wait_ready(Duration::from_secs(5))
            .await
            .expect("ready")
            .running());
        task.abort();
    }

    #[tokio::test]
    async fn shutdown_stops_the_agents_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        // A shell with a child of its own: both must go.
        let cfg = HostConfig::new(
            vec!["sh".into(), "-c".into(), "sleep 30 & wait".into()],
            dir.path().join("t.jsonl"),
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = serve_until(cfg, listener, async {
                let _ = stop_rx.await;
            })
            .await;
        });
        let c = client(&url);
        let pid = c
            .wait_ready(Duration::from_secs(5))
            .await
            .expect("ready")
            .pid
            .expect("pid");
        let group = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the host stops")
            .expect("join");
        // No process is left in the agent's group.
        let mut gone = false;
        for _ in 0..100 {
            if nix::sys::signal::killpg(group, None) == Err(nix::errno::Errno::ESRCH) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the agent's process group outlived the host");
        let text = std::fs::read_to_string(dir.path().join("t.jsonl")).expect("transcript");
        assert!(
            text.lines()
                .last()
                .unwrap_or("")
                .contains("\"kind\":\"exit\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn long_lines_are_capped() {
        let data = format!("{}\nshort\n", "x".repeat(100));
        let mut reader = tokio::io::BufReader::with_capacity(7, data.as_bytes());
        let first = read_line_capped(&mut reader, 10).await.expect("line");
        assert_eq!(first, "x".repeat(10));
        assert_eq!(
            read_line_capped(&mut reader, 10).await.as_deref(),
            Some("short")
        );
        assert_eq!(read_line_capped(&mut reader, 10).await, None);
    }
}
