//! The OpenCode adapter against the real `opencode-ai@1.18.33` binary, with a scripted
//! OpenAI-compatible model served on 127.0.0.1 (no key, no internet).
//!
//! The package is installed once with npm into `$HOME/.cache/atelier/opencode-1.18.33`
//! (override with `ATELIER_OPENCODE_CACHE`); later runs reuse it. OpenCode's own config
//! and cache (it installs its plugin package with npm on first start) live under that
//! directory too. If npm or the binary is unavailable the test prints
//! `skipped: <reason>` and returns.
//!
//! Three turns: (1) the model calls `write`; the edit permission is set to `ask`, the
//! adapter allows it once; then the model answers with text. (2) the model calls the
//! `question` tool; the adapter answers. (3) the model asks again; the adapter aborts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_runtimes::opencode::{LISTENING_PREFIX, OPENCODE_PACKAGE, OPENCODE_VERSION};
use atelier_runtimes::{
    AgentEvent, AgentRuntime, Answer, EventStream, Interaction, InteractionKind,
    InteractionOutcome, OpenCodeConfig, OpenCodeRuntime, PermissionReply, ReconnectPolicy, Session,
    SessionSpec, ToolStatus, TurnEndReason,
};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

fn cache_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("ATELIER_OPENCODE_CACHE") {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")?;
    Some(
        PathBuf::from(home)
            .join(".cache/atelier")
            .join(format!("opencode-{OPENCODE_VERSION}")),
    )
}

async fn version_of(bin: &Path) -> Option<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin).arg("--version").output(),
    )
    .await
    .ok()?
    .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The `opencode` binary of the pinned version, installing it if needed.
async fn opencode_binary() -> Result<PathBuf, String> {
    let dir = cache_dir().ok_or("no HOME to keep the npm cache in")?;
    let bin = dir.join("node_modules/.bin/opencode");
    if bin.exists() && version_of(&bin).await.as_deref() == Some(OPENCODE_VERSION) {
        return Ok(bin);
    }
    let npm_ok = tokio::process::Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false);
    if !npm_ok {
        return Err("npm is not installed".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    eprintln!("installing {OPENCODE_PACKAGE} into {} …", dir.display());
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&dir)
            .args([
                OPENCODE_PACKAGE,
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .output(),
    )
    .await
    .map_err(|_| "npm install timed out".to_string())?
    .map_err(|e| format!("npm install failed to start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm install {OPENCODE_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    match version_of(&bin).await {
        Some(v) if v == OPENCODE_VERSION => Ok(bin),
        other => Err(format!("installed opencode reports version {other:?}")),
    }
}

// ---- the scripted model -----------------------------------------------------------------

#[derive(Clone)]
struct Model {
    project: PathBuf,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    })
}

fn tool_call(id: &str, name: &str, args: Value) -> Vec<Value> {
    vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": args.to_string()}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ]
}

fn text(parts: &[&str]) -> Vec<Value> {
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    out.extend(parts.iter().map(|p| chunk(json!({"content": p}), None)));
    out.push(chunk(json!({}), Some("stop")));
    out
}

/// Decides the reply from the conversation: titles for title requests, text after a
/// tool result, else a tool call chosen by a keyword in the last user message.
fn script(model: &Model, req: &Value) -> Vec<Value> {
    let has_tools = req
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if !has_tools {
        return text(&["Fake title"]);
    }
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    if last.get("role").and_then(Value::as_str) == Some("tool") {
        return text(&["All ", "done."]);
    }
    let said = last.to_string();
    if said.contains("ASKQ") {
        return tool_call(
            "call_q",
            "question",
            json!({"questions": [{"question": "Which database?", "header": "DB", "options": [
                {"label": "Postgres", "description": "server"}, {"label": "SQLite", "description": "file"}]}]}),
        );
    }
    if said.contains("WRITE") {
        let path = model.project.join("hello.txt");
        return tool_call(
            "call_w",
            "write",
            json!({"filePath": path.to_string_lossy(), "content": "hello from the fake model\n"}),
        );
    }
    text(&["Nothing to do."])
}

async fn completions(State(model): State<Model>, Json(req): Json<Value>) -> Response {
    if let Ok(mut r) = model.requests.lock() {
        r.push(req.clone());
    }
    let mut frames = script(&model, &req);
    frames.push(json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    }));
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        // Not used by OpenCode 1.18.33, but answer sensibly anyway.
        return Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }))
        .into_response();
    }
    let mut body = String::new();
    for f in frames {
        body.push_str(&format!("data: {f}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "fake"}]}))
}

async fn start_model(project: PathBuf) -> Result<(String, Model), String> {
    let model = Model {
        project,
        requests: Arc::new(Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .with_state(model.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind the fake model: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/v1"), model))
}

// ---- driving ------------------------------------------------------------------------------

async fn run_turn(
    rt: &OpenCodeRuntime,
    session: &Session,
    stream: &mut EventStream,
    mut on_ask: impl FnMut(&Interaction) -> Option<Answer>,
    abort_on_ask: bool,
) -> Vec<AgentEvent> {
    let mut out = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(120), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no event for 120 s; so far: {out:#?}"));
        let ev = match item {
            Some(Ok((_, ev))) => ev,
            Some(Err(e)) => panic!("stream error {e}; so far: {out:#?}"),
            None => panic!("stream ended; so far: {out:#?}"),
        };
        eprintln!("  {}", serde_json::to_string(&ev).unwrap_or_default());
        out.push(ev.clone());
        match ev {
            AgentEvent::InteractionAsked(i) => {
                if abort_on_ask {
                    rt.abort(session).await.expect("abort");
                } else if let Some(a) = on_ask(&i) {
                    rt.answer(session, &i.id, a).await.expect("answer");
                }
            }
            AgentEvent::TurnEnded { .. } => return out,
            _ => {}
        }
    }
}

fn turn_end(events: &[AgentEvent]) -> TurnEndReason {
    match events.last() {
        Some(AgentEvent::TurnEnded { reason, .. }) => *reason,
        other => panic!("{other:?}"),
    }
}

fn final_texts(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { text: Some(t), .. } => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn real_opencode_with_a_scripted_model() {
    let bin = match opencode_binary().await {
        Ok(b) => b,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return;
        }
    };
    let cache = cache_dir().expect("cache dir");
    let home = cache.join("home");
    let work = tempfile::tempdir().expect("tempdir");
    let project = work.path().join("project");
    std::fs::create_dir_all(&project).expect("project dir");
    let project = std::fs::canonicalize(&project).expect("canonical");
    // A sandbox's project is a git repository; OpenCode roots its project (and the
    // permission patterns) at the worktree. Without git it falls back to `/`.
    let git = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(&project)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let (model_url, model) = match start_model(project.clone()).await {
        Ok(m) => m,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return;
        }
    };
    let config = json!({
        "$schema": "https://opencode.ai/config.json",
        "model": "fake/m",
        "small_model": "fake/m",
        "share": "disabled",
        "autoupdate": false,
        "provider": {"fake": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Fake",
            "options": {"baseURL": model_url, "apiKey": "not-a-key"},
            "models": {"m": {"name": "Fake model", "tool_call": true,
                "limit": {"context": 100000, "output": 4000},
                "cost": {"input": 1, "output": 2}}}
        }},
        "permission": {"edit": "ask", "question": "allow"}
    });
    std::fs::write(
        project.join("opencode.json"),
        serde_json::to_vec_pretty(&config).expect("config"),
    )
    .expect("write opencode.json");

    let password = format!("pw-{}", std::process::id());
    let log_path = work.path().join("opencode.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--port", "0", "--hostname", "127.0.0.1"])
        .current_dir(&project)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", work.path().join("data"))
        .env("XDG_STATE_HOME", work.path().join("state"))
        .env("OPENCODE_SERVER_PASSWORD", &password)
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_SHARE", "1")
        .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
        .env("OPENCODE_DISABLE_CLAUDE_CODE", "1")
        .env("OPENCODE_DISABLE_EXTERNAL_SKILLS", "1")
        .env("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1")
        .env("OPENCODE_ENABLE_QUESTION_TOOL", "1")
        .env_remove("OPENCODE_CONFIG")
        .env_remove("OPENCODE_CONFIG_CONTENT")
        .env_remove("OPENCODE_PERMISSION")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn opencode serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = line.trim().strip_prefix(LISTENING_PREFIX) {
                return Some(url.to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        panic!(
            "opencode serve did not start:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    });
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let mut cfg = OpenCodeConfig::new(&url)
        .with_password(&password)
        .with_reconnect(ReconnectPolicy {
            max_attempts: 5,
            ..ReconnectPolicy::default()
        });
    // The first request for a directory runs OpenCode's instance bootstrap.
    cfg.request_timeout = Duration::from_secs(120);
    cfg.first_event_timeout = Duration::from_secs(60);
    let rt = OpenCodeRuntime::new(cfg).expect("runtime");
    assert_eq!(
        rt.wait_healthy(Duration::from_secs(60))
            .await
            .expect("health"),
        OPENCODE_VERSION
    );
    let wrong = OpenCodeRuntime::new(OpenCodeConfig::new(&url).with_password("wrong")).expect("rt");
    assert!(matches!(
        wrong.health().await,
        Err(atelier_runtimes::RuntimeError::Unauthorized)
    ));

    let spec = SessionSpec {
        directory: project.clone(),
        title: Some("atelier real test".into()),
        ..SessionSpec::default()
    };
    let session = rt.start_session(&spec).await.expect("session");
    assert!(session.id.starts_with("ses"));
    let mut stream = rt.events(&session, None).await.expect("events");

    // Turn 1: write a file behind an edit permission, then text.
    eprintln!("turn 1: permission");
    rt.prompt(&session, "Please WRITE hello.txt")
        .await
        .expect("prompt");
    let events = run_turn(
        &rt,
        &session,
        &mut stream,
        |_| {
            Some(Answer::Permission {
                reply: PermissionReply::Once,
                message: None,
            })
        },
        false,
    )
    .await;
    let ask = events
        .iter()
        .find_map(|e| match e {
            AgentEvent::InteractionAsked(i) => Some(i.clone()),
            _ => None,
        })
        .expect("a permission ask");
    match &ask.kind {
        InteractionKind::Permission { tool, patterns, .. } => {
            assert_eq!(tool, "edit");
            if git {
                assert_eq!(patterns, &vec!["hello.txt".to_string()]);
            } else {
                assert!(
                    patterns.len() == 1 && patterns[0].ends_with("hello.txt"),
                    "{patterns:?}"
                );
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(events.contains(&AgentEvent::InteractionResolved {
        id: ask.id.clone(),
        outcome: InteractionOutcome::Once
    }));
    assert!(events.iter().any(|e| matches!(e,
        AgentEvent::ToolCall { name, status: ToolStatus::Completed, .. } if name == "write")));
    assert!(events.iter().any(|e| matches!(e,
        AgentEvent::FilesTouched { paths } if paths.contains(&"hello.txt".to_string()))));
    assert!(
        final_texts(&events).contains(&"All done.".to_string()),
        "{events:#?}"
    );
    let usage: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert!(!usage.is_empty(), "no usage");
    assert!(usage
        .iter()
        .all(|u| u.input_tokens == 100 && u.output_tokens == 20));
    assert!(usage.iter().any(|u| u.cost_usd.unwrap_or(0.0) > 0.0));
    assert_eq!(turn_end(&events), TurnEndReason::Completed);
    assert_eq!(
        std::fs::read_to_string(project.join("hello.txt")).expect("hello.txt"),
        "hello from the fake model\n"
    );
    assert!(
        !events.iter().any(|e| e.kind() == "raw"),
        "unmapped: {events:#?}"
    );

    // Turn 2: a question, answered.
    eprintln!("turn 2: question");
    rt.prompt(&session, "ASKQ which database")
        .await
        .expect("prompt");
    let events = run_turn(
        &rt,
        &session,
        &mut stream,
        |i| {
            assert!(matches!(&i.kind, InteractionKind::Question { questions } if questions[0].options.len() == 2));
            Some(Answer::Question {
                answers: vec![vec!["SQLite".into()]],
            })
        },
        false,
    )
    .await;
    assert!(events.iter().any(|e| matches!(e,
        AgentEvent::InteractionResolved { outcome: InteractionOutcome::Answered { answers }, .. } if answers == &vec![vec!["SQLite".to_string()]])));
    assert!(events.iter().any(|e| matches!(e,
        AgentEvent::ToolCall { name, status: ToolStatus::Completed, output: Some(o), .. } if name == "question" && o.contains("SQLite"))));
    assert_eq!(turn_end(&events), TurnEndReason::Completed);

    // Turn 3: a question, and an abort while it is pending.
    eprintln!("turn 3: abort");
    rt.prompt(&session, "ASKQ again").await.expect("prompt");
    let events = run_turn(&rt, &session, &mut stream, |_| None, true).await;
    assert_eq!(turn_end(&events), TurnEndReason::Cancelled);
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::InteractionResolved {
            outcome: InteractionOutcome::Cancelled,
            ..
        }
    )));
    assert!(rt.pending(&session).await.expect("pending").is_empty());

    let n = model.requests.lock().map(|r| r.len()).unwrap_or(0);
    assert!(n >= 4, "the fake model saw {n} requests");
    let _ = child.kill().await;
}
