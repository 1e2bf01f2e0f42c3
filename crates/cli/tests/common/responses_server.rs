//! A scripted OpenAI Responses API on 127.0.0.1, for driving the real Codex without a
//! model key or the internet.
//!
//! `POST /v1/responses` streams server-sent events: `response.created`, then per output
//! item `response.output_item.added`, its deltas (`response.output_text.delta` for a
//! message, `response.function_call_arguments.delta`/`.done` for a function call) and
//! `response.output_item.done`, then `response.completed` with the usage. The test's
//! script picks the reply from the request (a call of a freeform tool the request offers,
//! with a string as its arguments, streams as a `custom_tool_call`) (usually from how many
//! `function_call_output` items its `input` holds, [`tool_results`]). `GET /v1/models`
//! lists the one model; anything else is a harmless 404. Every request is recorded with
//! its headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

pub struct ResponsesServer {
    /// The base URL OpenAI clients take: `http://127.0.0.1:PORT/v1`.
    pub url: String,
    shared: Shared,
    _server: super::loopback::LoopbackServer,
}

/// Tokens reported for every reply.
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 20;

impl ResponsesServer {
    pub async fn start(
        script: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Result<ResponsesServer, String> {
        let shared = Shared {
            script: Arc::new(script),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/v1/responses", post(responses))
            .route("/v1/models", get(models))
            .fallback(other)
            .with_state(shared.clone());
        let server = super::loopback::LoopbackServer::start(app).await?;
        Ok(ResponsesServer {
            url: format!("{}/v1", server.url),
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

    /// The `POST /v1/responses` requests that offered tools: the agent's working turns.
    pub fn working(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/responses" && offers_tools(&r.body))
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

fn input_items(req: &Value) -> Vec<Value> {
    req.get("input")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The `function_call_output` (and `custom_tool_call_output`) items of the input.
pub fn tool_outputs(req: &Value) -> Vec<Value> {
    input_items(req)
        .into_iter()
        .filter(|i| {
            matches!(
                i.get("type").and_then(Value::as_str),
                Some("function_call_output" | "custom_tool_call_output")
            )
        })
        .collect()
}

/// How many tool results the conversation holds: the script's step counter.
pub fn tool_results(req: &Value) -> usize {
    tool_outputs(req).len()
}

/// The text of a tool output item (a string, or content parts).
pub fn output_text(item: &Value) -> String {
    match item.get("output") {
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

/// The instructions and every developer or system message, joined.
pub fn instructions_text(req: &Value) -> String {
    let mut out = vec![req
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()];
    for i in input_items(req) {
        if matches!(
            i.get("role").and_then(Value::as_str),
            Some("developer" | "system")
        ) {
            out.push(i.get("content").map(|c| c.to_string()).unwrap_or_default());
        }
    }
    out.join("\n")
}

fn sse(data: Value) -> String {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message")
        .to_owned();
    format!("event: {kind}\ndata: {data}\n\n")
}

/// The names of the freeform (`"type": "custom"`) tools the request offers.
pub fn custom_tools(req: &Value) -> Vec<String> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("custom"))
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn stream(req: &Value, reply: &Reply, n: usize, model: &str) -> String {
    let rid = format!("resp_scripted_{n:04}");
    let response = |status: &str, output: Value| {
        json!({"id": rid, "object": "response", "created_at": 1, "status": status,
               "model": model, "output": output})
    };
    let mut body = sse(json!({"type": "response.created", "sequence_number": 0,
                              "response": response("in_progress", json!([]))}));
    let item = match reply {
        Reply::Text(parts) => {
            let id = format!("msg_scripted_{n:04}");
            body.push_str(&sse(
                json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"id": id, "type": "message", "status": "in_progress",
                         "role": "assistant", "content": []}}),
            ));
            body.push_str(&sse(
                json!({"type": "response.content_part.added", "item_id": id,
                "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            ));
            for p in parts {
                body.push_str(&sse(
                    json!({"type": "response.output_text.delta", "item_id": id,
                    "output_index": 0, "content_index": 0, "delta": p}),
                ));
            }
            let text = parts.concat();
            body.push_str(&sse(
                json!({"type": "response.output_text.done", "item_id": id,
                "output_index": 0, "content_index": 0, "text": text}),
            ));
            json!({"id": id, "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
        Reply::ToolCall {
            name,
            arguments: Value::String(input),
        } if custom_tools(req).contains(name) => {
            // A freeform tool (Codex's `apply_patch`): its input is plain text.
            let id = format!("ctc_scripted_{n:04}");
            let call_id = format!("call_{n:04}");
            body.push_str(&sse(
                json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"id": id, "type": "custom_tool_call", "status": "in_progress",
                         "call_id": call_id, "name": name, "input": ""}}),
            ));
            body.push_str(&sse(
                json!({"type": "response.custom_tool_call_input.delta",
                "item_id": id, "output_index": 0, "delta": input}),
            ));
            body.push_str(&sse(json!({"type": "response.custom_tool_call_input.done",
                "item_id": id, "output_index": 0, "input": input})));
            json!({"id": id, "type": "custom_tool_call", "status": "completed",
                   "call_id": call_id, "name": name, "input": input})
        }
        Reply::ToolCall { name, arguments } => {
            let id = format!("fc_scripted_{n:04}");
            let call_id = format!("call_{n:04}");
            let args = arguments.to_string();
            body.push_str(&sse(
                json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"id": id, "type": "function_call", "status": "in_progress",
                         "call_id": call_id, "name": name, "arguments": ""}}),
            ));
            body.push_str(&sse(
                json!({"type": "response.function_call_arguments.delta",
                "item_id": id, "output_index": 0, "delta": args}),
            ));
            body.push_str(&sse(
                json!({"type": "response.function_call_arguments.done",
                "item_id": id, "output_index": 0, "arguments": args}),
            ));
            json!({"id": id, "type": "function_call", "status": "completed",
                   "call_id": call_id, "name": name, "arguments": args})
        }
    };
    body.push_str(&sse(
        json!({"type": "response.output_item.done", "output_index": 0,
                              "item": item}),
    ));
    let mut done = response("completed", json!([item]));
    done["usage"] = json!({
        "input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS
    });
    body.push_str(&sse(
        json!({"type": "response.completed", "response": done}),
    ));
    body
}

async fn responses(
    State(shared): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> Response {
    record(&shared, &method, "/v1/responses", &headers, req.clone());
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
    (
        [("content-type", "text/event-stream")],
        stream(&req, &reply, n, &model),
    )
        .into_response()
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "scripted"}]}),
    )
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
        Json(json!({"error": {"message": "scripted", "type": "not_found"}})),
    )
        .into_response()
}
