//! A scripted Gemini API on 127.0.0.1 (the Generative Language API that `@google/genai`
//! calls), for driving the real Gemini CLI without a model key or the internet.
//!
//! Gemini CLI takes it as `GOOGLE_GEMINI_BASE_URL` and sends its key in `x-goog-api-key`.
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` answers with server-sent
//! events, one `GenerateContentResponse` per text piece or `functionCall` part, the last
//! with `finishReason` and `usageMetadata`. Requests that declare tools go to the test's
//! script, which picks the reply from the conversation so far (usually from how many
//! `functionResponse` parts it holds, [`function_responses`]); the others (and
//! `:generateContent`, Gemini CLI's side calls: routing, topics, summaries) get a short
//! text. `:countTokens` answers a fixed count; anything else is a 404 in the API's error
//! shape. Every request is recorded with its headers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the model answers to one request: text (streamed in the given pieces), then calls
/// of the agent's tools, in one response.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub text: Vec<String>,
    pub calls: Vec<(String, Value)>,
}

impl Reply {
    pub fn text(s: &str) -> Reply {
        Reply {
            text: vec![s.to_owned()],
            calls: Vec::new(),
        }
    }

    /// Text in several pieces, as a model streams it.
    pub fn pieces(parts: &[&str]) -> Reply {
        Reply {
            text: parts.iter().map(|p| (*p).to_owned()).collect(),
            calls: Vec::new(),
        }
    }

    pub fn call(name: &str, args: Value) -> Reply {
        Reply {
            text: Vec::new(),
            calls: vec![(name.to_owned(), args)],
        }
    }

    /// The same reply, said after `text`.
    pub fn after(mut self, text: &str) -> Reply {
        self.text.insert(0, text.to_owned());
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path with its query (`/v1beta/models/m:streamGenerateContent?alt=sse`).
    pub path: String,
    /// Every header, by lower-case name.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The model the path names (`gemini-2.5-flash`).
    pub fn model(&self) -> Option<&str> {
        let rest = self.path.strip_prefix("/v1beta/models/")?;
        Some(rest.split(':').next().unwrap_or(rest))
    }

    /// The API method the path names (`streamGenerateContent`).
    pub fn api_method(&self) -> Option<&str> {
        let after = self.path.split_once(':')?.1;
        Some(after.split('?').next().unwrap_or(after))
    }
}

type Script = dyn Fn(&Value) -> Reply + Send + Sync;

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

pub struct GeminiServer {
    /// The base URL `@google/genai` takes (`GOOGLE_GEMINI_BASE_URL`): `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Shared,
    _server: super::loopback::LoopbackServer,
}

/// Tokens reported for every reply.
pub const INPUT_TOKENS: u64 = 100;
pub const OUTPUT_TOKENS: u64 = 20;

impl GeminiServer {
    /// Starts the server; `script` picks the reply to each request that declares tools.
    pub async fn start(
        script: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Result<GeminiServer, String> {
        let shared = Shared {
            script: Arc::new(script),
            requests: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = super::loopback::LoopbackServer::start(app).await?;
        Ok(GeminiServer {
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

    /// The streamed requests that declared tools: the agent's working turns.
    pub fn working(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.api_method() == Some("streamGenerateContent") && declares_tools(&r.body))
            .collect()
    }
}

/// The function declarations of the request's tools.
fn declarations(req: &Value) -> impl Iterator<Item = &Value> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
}

/// Whether the request declares any function the model may call.
pub fn declares_tools(req: &Value) -> bool {
    declarations(req).next().is_some()
}

/// The names of the functions the request declares.
pub fn tool_names(req: &Value) -> Vec<String> {
    declarations(req)
        .filter_map(|d| d.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The parts of every turn of the conversation, in order.
fn parts(req: &Value) -> impl Iterator<Item = &Value> {
    req.get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("parts").and_then(Value::as_array))
        .flatten()
}

/// The `functionResponse` parts of the conversation (`{name, response, id}`), in order.
pub fn function_responses(req: &Value) -> Vec<Value> {
    parts(req)
        .filter_map(|p| p.get("functionResponse").cloned())
        .collect()
}

/// How many tool results the conversation holds: the script's step counter.
pub fn steps(req: &Value) -> usize {
    function_responses(req).len()
}

/// The text of every part of the conversation, joined.
pub fn conversation_text(req: &Value) -> String {
    parts(req)
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The system instruction, as text.
pub fn system_text(req: &Value) -> String {
    req.pointer("/systemInstruction/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

fn usage() -> Value {
    json!({"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
           "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS})
}

/// The reply's parts: each text piece, then each call.
fn reply_parts(reply: &Reply) -> Vec<Value> {
    let mut out: Vec<Value> = reply.text.iter().map(|t| json!({"text": t})).collect();
    out.extend(
        reply
            .calls
            .iter()
            .map(|(name, args)| json!({"functionCall": {"name": name, "args": args}})),
    );
    out
}

/// One `GenerateContentResponse` per part; the last one finishes with the usage.
fn stream(reply: &Reply, model: &str) -> String {
    let parts = reply_parts(reply);
    let n = parts.len();
    let mut body = String::new();
    for (i, part) in parts.into_iter().enumerate() {
        let mut candidate = json!({"content": {"role": "model", "parts": [part]}, "index": 0});
        let mut chunk = json!({"modelVersion": model, "responseId": "scripted"});
        if i + 1 == n {
            candidate["finishReason"] = json!("STOP");
            chunk["usageMetadata"] = usage();
        }
        chunk["candidates"] = json!([candidate]);
        body.push_str(&format!("data: {chunk}\r\n\r\n"));
    }
    body
}

fn whole(reply: &Reply, model: &str) -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": reply_parts(reply)},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage(),
        "modelVersion": model,
        "responseId": "scripted"
    })
}

/// What a side call (no tools) gets: text that also parses as the JSON Gemini CLI's
/// routing and next-speaker checks ask for.
fn side_reply() -> Reply {
    Reply::text(r#"{"reasoning": "scripted", "next_speaker": "user", "model_choice": "flash"}"#)
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned());
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recorded = Recorded {
        method: method.to_string(),
        path,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: req.clone(),
    };
    let model = recorded.model().unwrap_or("gemini").to_owned();
    let api = recorded.api_method().map(str::to_owned);
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(recorded);
    if method != Method::POST {
        return not_found();
    }
    match api.as_deref() {
        Some("streamGenerateContent") => {
            let reply = if declares_tools(&req) {
                (shared.script)(&req)
            } else {
                side_reply()
            };
            (
                [("content-type", "text/event-stream")],
                stream(&reply, &model),
            )
                .into_response()
        }
        Some("generateContent") => {
            let reply = if declares_tools(&req) {
                (shared.script)(&req)
            } else {
                side_reply()
            };
            Json(whole(&reply, &model)).into_response()
        }
        Some("countTokens") => Json(json!({"totalTokens": INPUT_TOKENS})).into_response(),
        _ => not_found(),
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": 404, "message": "scripted", "status": "NOT_FOUND"}})),
    )
        .into_response()
}
