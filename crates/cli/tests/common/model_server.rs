//! A scripted OpenAI-compatible model server on 127.0.0.1, for driving real coding agents
//! without a model key or the internet.
//!
//! It serves `POST /v1/chat/completions` (streamed, as OpenCode asks) and `GET /v1/models`.
//! Requests without tools (title and summary generation) get a short text; every other
//! request goes to the test's script, which decides the reply from the conversation so far
//! (usually from how many tool results it already holds). Every request is recorded with
//! its `Authorization` header.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the model answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Assistant text, streamed in the given pieces.
    Text(Vec<String>),
    /// A call of one of the agent's tools.
    ToolCall { name: String, arguments: Value },
}

impl Reply {
    pub fn text(s: &str) -> Reply {
        Reply::Text(vec![s.to_owned()])
    }

    pub fn tool(name: &str, arguments: Value) -> Reply {
        Reply::ToolCall {
            name: name.to_owned(),
            arguments,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub authorization: Option<String>,
    pub body: Value,
}

type Script = dyn Fn(&Value) -> Reply + Send + Sync;

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Token usage reported with every reply.
    usage: (u64, u64),
}

pub struct ModelServer {
    /// Base URL as OpenAI clients take it: `http://127.0.0.1:PORT/v1`.
    pub url: String,
    shared: Shared,
    _server: super::loopback::LoopbackServer,
}

impl ModelServer {
    /// Starts the server; `script` picks the reply to each request that offers tools.
    pub async fn start(
        script: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Result<ModelServer, String> {
        let shared = Shared {
            script: Arc::new(script),
            requests: Arc::new(Mutex::new(Vec::new())),
            usage: (100, 20),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let server = super::loopback::LoopbackServer::start(app).await?;
        Ok(ModelServer {
            url: format!("{}/v1", server.url),
            shared,
            _server: server,
        })
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

/// Whether the request offers the model any tools (the agent's working turns do).
pub fn offers_tools(req: &Value) -> bool {
    req.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

/// How many tool results the conversation holds: the script's step counter.
pub fn tool_results(req: &Value) -> usize {
    messages(req)
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .count()
}

/// The text of the last tool result, if any.
pub fn last_tool_result(req: &Value) -> Option<String> {
    messages(req)
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        })
}

/// Every system message, joined.
pub fn system_text(req: &Value) -> String {
    messages(req)
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("system"))
        .map(|m| m.get("content").map(|c| c.to_string()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn messages(req: &Value) -> Vec<Value> {
    req.get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    })
}

fn frames(reply: &Reply, call_id: usize) -> Vec<Value> {
    match reply {
        Reply::Text(parts) => {
            let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
            out.extend(parts.iter().map(|p| chunk(json!({"content": p}), None)));
            out.push(chunk(json!({}), Some("stop")));
            out
        }
        Reply::ToolCall { name, arguments } => vec![
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                    "id": format!("call_{call_id}"), "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                None,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments.to_string()}}]}),
                None,
            ),
            chunk(json!({}), Some("tool_calls")),
        ],
    }
}

async fn completions(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    let n = {
        let mut r = shared.requests.lock().unwrap_or_else(|p| p.into_inner());
        r.push(Recorded {
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: req.clone(),
        });
        r.len()
    };
    let reply = if offers_tools(&req) {
        (shared.script)(&req)
    } else {
        Reply::text("Scripted title")
    };
    let (input, output) = shared.usage;
    let usage = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        let text = match &reply {
            Reply::Text(parts) => parts.concat(),
            Reply::ToolCall { .. } => String::new(),
        };
        return Json(json!({
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage
        }))
        .into_response();
    }
    let mut body = String::new();
    for f in frames(&reply, n) {
        body.push_str(&format!("data: {f}\n\n"));
    }
    let last = json!({
        "id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": usage
    });
    body.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    ([("content-type", "text/event-stream")], body).into_response()
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "scripted"}]}),
    )
}
