//! A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code
//! without a model key or the internet.
//!
//! `POST /v1/messages` answers streamed (server-sent events: `message_start`,
//! `content_block_start`/`delta`/`stop` for text and `tool_use` with
//! `input_json_delta`, `message_delta` with the stop reason and usage, `message_stop`)
//! or as one JSON message. Requests without tools (Claude's titles, quota and topic
//! checks) get a short text; every other request goes to the test's script, which picks
//! the reply from the conversation so far (usually from how many `tool_result` blocks
//! it holds, [`tool_results`]). `count_tokens` answers a fixed count; anything else is
//! a harmless 404. Every request is recorded with its headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

pub use super::model_server::Reply;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Every header, by lower-case name.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

type Script = dyn Fn(&Value) -> Reply + Send + Sync;

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

pub struct AnthropicServer {
    /// The base URL Anthropic clients take (`ANTHROPIC_BASE_URL`): `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Shared,
    _server: super::loopback::LoopbackServer,
}

/// Tokens reported for every reply.
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 20;

impl AnthropicServer {
    /// Starts the server; `script` picks the reply to each request that offers tools.
    pub async fn start(
        script: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Result<AnthropicServer, String> {
        let shared = Shared {
            script: Arc::new(script),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .fallback(other)
            .with_state(shared.clone());
        let server = super::loopback::LoopbackServer::start(app).await?;
        Ok(AnthropicServer {
            url: server.url.clone(),
            shared,
            _server: server,
        })
    }

    /// Every request, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// The `POST /v1/messages` requests that offered tools: the agent's working turns.
    pub fn working(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/messages" && offers_tools(&r.body))
            .collect()
    }
}

fn record(shared: &Shared, method: &Method, path: &str, headers: &HeaderMap, body: Value) {
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut r = shared.requests.lock().unwrap_or_else(|p| p.into_inner());
    r.push(Recorded {
        method: method.to_string(),
        path: path.to_owned(),
        headers,
        body,
    });
}

/// Whether the request offers the model any tools.
pub fn offers_tools(req: &Value) -> bool {
    req.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

/// The names of the tools the request offers.
pub fn tool_names(req: &Value) -> Vec<String> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The `tool_result` blocks of the conversation, in order.
pub fn tool_result_blocks(req: &Value) -> Vec<Value> {
    req.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .cloned()
        .collect()
}

/// How many tool results the conversation holds: the script's step counter.
pub fn tool_results(req: &Value) -> usize {
    tool_result_blocks(req).len()
}

/// The text of a tool result block (its content is a string or text blocks).
pub fn result_text(block: &Value) -> String {
    match block.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The system prompt, as text.
pub fn system_text(req: &Value) -> String {
    match req.get("system") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The content blocks of a reply, complete.
fn blocks(reply: &Reply, n: usize) -> Vec<Value> {
    match reply {
        Reply::Text(parts) => vec![json!({"type": "text", "text": parts.concat()})],
        Reply::ToolCall { name, arguments } => vec![json!({
            "type": "tool_use", "id": format!("toolu_{n:04}"), "name": name, "input": arguments
        })],
    }
}

fn stop_reason(reply: &Reply) -> &'static str {
    match reply {
        Reply::Text(_) => "end_turn",
        Reply::ToolCall { .. } => "tool_use",
    }
}

fn stream(reply: &Reply, n: usize, model: &str) -> String {
    let id = format!("msg_scripted_{n:04}");
    let mut body = sse(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    );
    match reply {
        Reply::Text(parts) => {
            body.push_str(&sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ));
            for p in parts {
                body.push_str(&sse(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": p}}),
                ));
            }
        }
        Reply::ToolCall { name, arguments } => {
            body.push_str(&sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": format!("toolu_{n:04}"), "name": name, "input": {}}}),
            ));
            // The arguments in two pieces, as a model streams them.
            let text = arguments.to_string();
            let mid = text
                .char_indices()
                .nth(text.chars().count() / 2)
                .map_or(0, |(i, _)| i);
            for piece in [&text[..mid], &text[mid..]] {
                body.push_str(&sse(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
        }
    }
    body.push_str(&sse(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    body.push_str(&sse(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason(reply), "stop_sequence": null},
               "usage": {"output_tokens": OUTPUT_TOKENS}}),
    ));
    body.push_str(&sse("message_stop", json!({"type": "message_stop"})));
    body
}

async fn messages(
    State(shared): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    record(&shared, &method, "/v1/messages", &headers, req.clone());
    let n = shared.requests.lock().map(|r| r.len()).unwrap_or(0);
    let reply = if offers_tools(&req) {
        (shared.script)(&req)
    } else {
        Reply::text("Scripted title")
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("m")
        .to_owned();
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return (
            [("content-type", "text/event-stream")],
            stream(&reply, n, &model),
        )
            .into_response();
    }
    Json(json!({
        "id": format!("msg_scripted_{n:04}"), "type": "message", "role": "assistant",
        "model": model, "content": blocks(&reply, n), "stop_reason": stop_reason(&reply),
        "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    }))
    .into_response()
}

async fn count_tokens(
    State(shared): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Json<Value> {
    record(&shared, &method, "/v1/messages/count_tokens", &headers, req);
    Json(json!({"input_tokens": INPUT_TOKENS}))
}

async fn other(
    State(shared): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    record(&shared, &method, uri.path(), &headers, Value::Null);
    (
        StatusCode::NOT_FOUND,
        Json(json!({"type": "error", "error": {"type": "not_found_error", "message": "scripted"}})),
    )
        .into_response()
}
