//! The model proxy: keeps model API keys on the host.
//!
//! A provider with `proxy: true` is not given to the coding agent as it is. Each task
//! gets a placeholder key per proxied provider (`atl-proxy-<32 hex>`, derived from its
//! sandbox's token, so that a restarted manager derives it again) and the proxy's
//! address, `http://<proxy>/<provider-id>`. The proxy listens on the host's loopback, on
//! a port of its own (never the manager API's): the local driver's agents reach it
//! there, a VM through its host-service forward at `172.16.0.1:<port>`.
//!
//! For every request it takes the placeholder (`Authorization: Bearer …` or
//! `x-api-key: …`), finds its task and provider, and forwards method, path (under the
//! provider's `base_url`, nowhere else), query and body to that provider with the real
//! key in the same header. The reply streams back chunk by chunk (server-sent events
//! too), while the `usage` it reports (OpenAI's `prompt_tokens`/`completion_tokens`,
//! Anthropic's `input_tokens`/`output_tokens`) is added to the task's `proxy_usage`.
//! Unknown placeholders, placeholders of tasks that left `running`/`needs_attention`,
//! another provider's path, absolute-URI and `CONNECT` requests get a 403 JSON error.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use atelier_store::Store;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use atelier_core::agent_config::AgentConfig;

use crate::coding_agent::LaunchError;
use crate::error::{ApiError, ApiResult};

/// The file in the data directory that keeps the proxy's port: agents of running tasks
/// have the address in their config, so a restarted manager listens there again.
const PORT_FILE: &str = "model-proxy.port";

/// A request body larger than this is refused (model calls with long contexts are a few
/// MiB at most).
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// How much of a JSON reply is kept to read its `usage`; a longer one is forwarded
/// whole but not counted in tokens.
const MAX_JSON_SCAN: usize = 8 * 1024 * 1024;

/// Longest server-sent-events line read for `usage`; longer lines are skipped.
const MAX_SSE_LINE: usize = 1024 * 1024;

/// What one placeholder lets its holder do.
#[derive(Clone)]
struct Grant {
    task_id: String,
    provider: String,
    upstream: reqwest::Url,
    /// The real key; `None` for a provider that takes none.
    key: Option<String>,
    /// USD per million input and output tokens, by model id.
    prices: BTreeMap<String, (f64, f64)>,
}

#[derive(Clone)]
pub struct ModelProxy {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    port: u16,
    /// Placeholder → grant.
    grants: Mutex<HashMap<String, Grant>>,
    http: reqwest::Client,
}

/// The placeholder key of `task_id`'s calls to `provider`, in the sandbox whose agent
/// token is `sandbox_token`: one-way, so it reveals nothing of the token.
pub fn placeholder(sandbox_token: &str, task_id: &str, provider: &str) -> String {
    let hex =
        crate::auth::derived_secret("atelier model proxy", &[sandbox_token, task_id, provider]);
    format!("atl-proxy-{}", &hex[..32])
}

impl ModelProxy {
    /// Binds the proxy on `127.0.0.1` (the port it had before when it is free, else a
    /// new one, remembered in the data directory) and serves until `shutdown`.
    pub async fn start(
        store: Store,
        data_dir: &Path,
        shutdown: CancellationToken,
    ) -> std::io::Result<ModelProxy> {
        let port_file = data_dir.join(PORT_FILE);
        let previous = std::fs::read_to_string(&port_file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|p| *p != 0);
        let listener = match previous {
            Some(port) => match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port, error = %e, "the model proxy's previous port is taken; agents of running tasks will not reach it");
                    tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?
                }
            },
            None => tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?,
        };
        let port = listener.local_addr()?.port();
        std::fs::write(&port_file, format!("{port}\n"))?;
        let proxy = Self::with_port(store, port)?;
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(proxy.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the model proxy stopped");
            }
        });
        tracing::info!(addr = %SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "model proxy listening");
        Ok(proxy)
    }

    fn with_port(store: Store, port: u16) -> std::io::Result<ModelProxy> {
        let http = reqwest::Client::builder()
            // A redirect would lead the call to another upstream than the provider's.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            // Reasoning models may think for minutes before their first byte.
            .read_timeout(Duration::from_secs(600))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(ModelProxy {
            inner: Arc::new(Inner {
                store,
                port,
                grants: Mutex::new(HashMap::new()),
                http,
            }),
        })
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Points every proxied provider of `config` at the proxy for `task_id`: its
    /// `base_url` becomes the proxy's, and the value of its `api_key_env` in `env` (the
    /// real key) becomes the task's placeholder, kept with the real key in the proxy
    /// alone. The agent is reached on the host's loopback when it shares it (`local`),
    /// else at the sandbox's host-service address.
    pub fn route_config(
        &self,
        task_id: &str,
        sandbox_token: &str,
        config: &mut AgentConfig,
        env: &mut BTreeMap<String, String>,
        local: bool,
    ) -> Result<(), LaunchError> {
        for (id, provider) in config.providers.iter_mut().filter(|(_, p)| p.proxy) {
            let field = |f: &str| format!("agent_config.providers.{id}.{f}");
            let base_url = provider.base_url.as_deref().ok_or_else(|| {
                LaunchError::invalid(field("base_url"), "a proxied provider needs one")
            })?;
            let var = provider.api_key_env.as_deref().ok_or_else(|| {
                LaunchError::invalid(
                    field("api_key_env"),
                    "a proxied provider needs the env var its placeholder key goes in",
                )
            })?;
            let key = env.get(var).cloned();
            if let Some(real) = &key {
                // The same value under another name would carry the key into the sandbox.
                if let Some((other, _)) = env.iter().find(|(n, v)| n.as_str() != var && *v == real)
                {
                    return Err(LaunchError::invalid(
                        "agent_config.secrets",
                        format!(
                            "the key of the proxied provider {id:?} is also given to the agent as {other}"
                        ),
                    ));
                }
            }
            let upstream = reqwest::Url::parse(base_url)
                .map_err(|e| LaunchError::invalid(field("base_url"), format!("not a URL: {e}")))?;
            if !matches!(upstream.scheme(), "http" | "https") || upstream.host().is_none() {
                return Err(LaunchError::invalid(
                    field("base_url"),
                    "must be an http:// or https:// URL",
                ));
            }
            let prices = provider
                .models
                .iter()
                .map(|(m, p)| {
                    (
                        m.clone(),
                        (p.input_cost.unwrap_or(0.0), p.output_cost.unwrap_or(0.0)),
                    )
                })
                .collect();
            let key_for_agent = placeholder(sandbox_token, task_id, id);
            self.inner
                .grants
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    key_for_agent.clone(),
                    Grant {
                        task_id: task_id.to_owned(),
                        provider: id.clone(),
                        upstream,
                        key,
                        prices,
                    },
                );
            let host = if local {
                Ipv4Addr::LOCALHOST
            } else {
                atelier_core::network::HOST_SERVICES_ADDRESS
            };
            provider.base_url = Some(format!("http://{host}:{}/{id}", self.inner.port));
            env.insert(var.to_owned(), key_for_agent);
        }
        Ok(())
    }

    /// Every placeholder of the task stops working.
    pub fn revoke_task(&self, task_id: &str) {
        self.inner
            .grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, g| g.task_id != task_id);
    }

    fn lookup(&self, placeholder: &str) -> Option<Grant> {
        self.inner
            .grants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(placeholder)
            .cloned()
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

async fn handle(State(proxy): State<ModelProxy>, req: Request) -> Response {
    match forward(&proxy, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The key the caller presents, and the header it came in.
fn presented_key(headers: &HeaderMap) -> Option<(HeaderName, String)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| (header::AUTHORIZATION, token.trim().to_owned()));
    bearer.or_else(|| {
        let name = HeaderName::from_static("x-api-key");
        let value = headers.get(&name)?.to_str().ok()?.trim().to_owned();
        Some((name, value))
    })
}

/// The upstream URL of `path` (`/<provider>/<rest>`) under the grant's base URL, or
/// why it is refused. Dot segments, encoded slashes or dots and backslashes are refused
/// rather than normalized: the path must mean the same to every server on the way.
fn upstream_url(grant: &Grant, path: &str, query: Option<&str>) -> ApiResult<reqwest::Url> {
    let rest = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(grant.provider.as_str()))
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(|| {
            forbidden(format!(
                "this key is for the provider {:?}: its calls go to /{}/…",
                grant.provider, grant.provider
            ))
        })?;
    let lower = rest.to_ascii_lowercase();
    if rest.contains('\\')
        || ["%2e", "%2f", "%5c", "%00"]
            .iter()
            .any(|e| lower.contains(e))
        || rest.split('/').any(|s| s == "." || s == "..")
    {
        return Err(forbidden(
            "the path must not contain dot segments or encoded slashes",
        ));
    }
    let mut url = grant.upstream.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}{rest}"));
    url.set_query(query);
    // Belt and braces: still the provider's server, still under its base path.
    if url.scheme() != grant.upstream.scheme()
        || url.host() != grant.upstream.host()
        || url.port_or_known_default() != grant.upstream.port_or_known_default()
        || !url.path().starts_with(&base)
    {
        return Err(forbidden("the path leaves the provider's base URL"));
    }
    Ok(url)
}

/// Headers of one connection, never passed on (the body's length is set anew too).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Request headers the upstream must not get from the agent besides those: the host, the
/// placeholder, and `accept-encoding` (a compressed reply could not be read for its
/// usage; the proxy sits next to the agent, so plain bytes cost nothing).
const DROPPED_REQUEST: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "proxy-authorization",
    "accept-encoding",
];

async fn forward(proxy: &ModelProxy, req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    // A proxy that took absolute URIs or CONNECT would reach anywhere.
    if parts.method == Method::CONNECT
        || parts.uri.scheme().is_some()
        || parts.uri.authority().is_some()
    {
        return Err(forbidden(
            "the model proxy only forwards to the providers it was configured with",
        ));
    }
    let (header_name, placeholder) = presented_key(&parts.headers).ok_or_else(|| {
        forbidden("send the task's proxy key as `Authorization: Bearer …` or `x-api-key`")
    })?;
    let grant = proxy
        .lookup(&placeholder)
        .ok_or_else(|| forbidden("unknown or expired proxy key"))?;
    // A task out of its turn (in review, failed) or deleted calls nothing; its key works
    // again when it is given another turn, until the task lets its sandbox go.
    let active = proxy
        .inner
        .store
        .get_task(&grant.task_id)
        .await
        .is_ok_and(|t| t.task.status.is_active());
    if !active {
        return Err(forbidden("this key's task is not running"));
    }
    let url = upstream_url(&grant, parts.uri.path(), parts.uri.query())?;
    let body = axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body could not be read (at most 64 MiB): {e}"),
            )
        })?;
    // The model named in the request prices its tokens.
    let price = if grant.prices.is_empty() {
        None
    } else {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("model")?.as_str().map(str::to_owned))
            .and_then(|m| grant.prices.get(&m).copied())
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) && !DROPPED_REQUEST.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(key) = &grant.key {
        let value = if header_name == header::AUTHORIZATION {
            format!("Bearer {key}")
        } else {
            key.clone()
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ApiError::invalid(
                format!("agent_config.providers.{}.api_key_env", grant.provider),
                "the key is not a valid HTTP header value",
            )
        })?;
        value.set_sensitive(true);
        headers.insert(header_name, value);
    }
    let upstream = proxy
        .inner
        .http
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            // Without the URL: it may carry a query the provider keeps private.
            ApiError::bad_gateway(format!(
                "the provider {:?} did not answer: {}",
                grant.provider,
                e.without_url()
            ))
        })?;
    let status = upstream.status();
    let mut out_headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out_headers.append(name.clone(), value.clone());
        }
    }
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let store = proxy.inner.store.clone();
    let task_id = grant.task_id.clone();
    let tapped = Tapped {
        inner: Box::pin(upstream.bytes_stream()),
        scanner: Some(UsageScanner::new(&content_type)),
        on_end: Some(Box::new(move |usage: Option<Tokens>| {
            let (input, output) = usage.map(|t| (t.input, t.output)).unwrap_or_default();
            let (input_price, output_price) = price.unwrap_or_default();
            let cost = (input as f64 * input_price + output as f64 * output_price) / 1e6;
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            rt.spawn(async move {
                if let Err(e) = store.add_proxy_usage(&task_id, input, output, cost).await {
                    tracing::warn!(task = %task_id, error = %e, "could not record a model call's usage");
                }
            });
        })),
    };
    let mut response = Response::new(Body::from_stream(tapped));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    Ok(response)
}

type OnEnd = Box<dyn FnOnce(Option<Tokens>) + Send>;

/// The upstream's reply, passed on chunk by chunk and read for its usage on the way;
/// the usage is recorded when the reply ends, or when the agent hangs up.
struct Tapped {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    scanner: Option<UsageScanner>,
    on_end: Option<OnEnd>,
}

impl Tapped {
    fn end(&mut self) {
        if let (Some(scanner), Some(on_end)) = (self.scanner.take(), self.on_end.take()) {
            on_end(scanner.finish());
        }
    }
}

impl Stream for Tapped {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(s) = self.scanner.as_mut() {
                    s.feed(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.end();
                Poll::Ready(Some(Err(std::io::Error::other(e.without_url()))))
            }
            Poll::Ready(None) => {
                self.end();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Tapped {
    fn drop(&mut self) {
        self.end();
    }
}

/// Tokens one reply reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tokens {
    pub input: u64,
    pub output: u64,
}

enum ScanMode {
    /// `text/event-stream`: each `data:` line is a JSON event.
    Sse { line: Vec<u8>, skipping: bool },
    /// Anything else: one JSON document, read at the end.
    Json { body: Vec<u8>, overflow: bool },
}

/// Reads `usage` out of a reply as it passes, whatever its chunking.
pub(crate) struct UsageScanner {
    mode: ScanMode,
    usage: Option<Tokens>,
}

impl UsageScanner {
    pub(crate) fn new(content_type: &str) -> UsageScanner {
        let sse = content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"));
        let mode = if sse {
            ScanMode::Sse {
                line: Vec::new(),
                skipping: false,
            }
        } else {
            ScanMode::Json {
                body: Vec::new(),
                overflow: false,
            }
        };
        UsageScanner { mode, usage: None }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        let mut found = Vec::new();
        match &mut self.mode {
            ScanMode::Json { body, overflow } => {
                if body.len() + chunk.len() > MAX_JSON_SCAN {
                    *overflow = true;
                    body.clear();
                } else if !*overflow {
                    body.extend_from_slice(chunk);
                }
            }
            ScanMode::Sse { line, skipping } => {
                for &b in chunk {
                    if b == b'\n' {
                        if !*skipping {
                            if let Some(t) = sse_line_usage(line) {
                                found.push(t);
                            }
                        }
                        line.clear();
                        *skipping = false;
                    } else if !*skipping {
                        if line.len() >= MAX_SSE_LINE {
                            line.clear();
                            *skipping = true;
                        } else {
                            line.push(b);
                        }
                    }
                }
            }
        }
        for t in found {
            self.merge(t);
        }
    }

    /// The reply's usage, when it reported any.
    pub(crate) fn finish(mut self) -> Option<Tokens> {
        match std::mem::replace(
            &mut self.mode,
            ScanMode::Json {
                body: Vec::new(),
                overflow: true,
            },
        ) {
            ScanMode::Json {
                body,
                overflow: false,
            } => {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    if let Some(t) = usage_in(&v) {
                        self.merge(t);
                    }
                }
            }
            ScanMode::Sse { line, skipping } if !skipping => {
                if let Some(t) = sse_line_usage(&line) {
                    self.merge(t);
                }
            }
            _ => {}
        }
        self.usage
    }

    /// OpenAI reports the totals once, at the end; Anthropic's counts grow from event to
    /// event: the largest count seen is the reply's either way.
    fn merge(&mut self, t: Tokens) {
        let u = self.usage.get_or_insert_with(Tokens::default);
        u.input = u.input.max(t.input);
        u.output = u.output.max(t.output);
    }
}

fn sse_line_usage(line: &[u8]) -> Option<Tokens> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let data = line.strip_prefix("data:")?.trim();
    if data.is_empty() || data == "[DONE]" {
        return None;
    }
    usage_in(&serde_json::from_str(data).ok()?)
}

/// The usage of a reply or event: `usage` at the top (OpenAI chat completions and its
/// last stream chunk, Anthropic's `message_delta`), in `message` (Anthropic's
/// `message_start`) or in `response` (OpenAI's Responses API).
fn usage_in(v: &Value) -> Option<Tokens> {
    let mut found = None;
    for u in [
        v.get("usage"),
        v.get("message").and_then(|m| m.get("usage")),
        v.get("response").and_then(|r| r.get("usage")),
    ]
    .into_iter()
    .flatten()
    {
        let count = |names: [&str; 2]| names.iter().find_map(|n| u.get(*n).and_then(Value::as_u64));
        let input = count(["prompt_tokens", "input_tokens"]);
        let output = count(["completion_tokens", "output_tokens"]);
        if input.is_some() || output.is_some() {
            let t: &mut Tokens = found.get_or_insert_with(Tokens::default);
            t.input = t.input.max(input.unwrap_or(0));
            t.output = t.output.max(output.unwrap_or(0));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_core::{Effort, TaskStatus};
    use atelier_store::NewTask;
    use serde_json::json;

    fn scan(content_type: &str, chunks: &[&str]) -> Option<Tokens> {
        let mut s = UsageScanner::new(content_type);
        for c in chunks {
            s.feed(c.as_bytes());
        }
        s.finish()
    }

    #[test]
    fn usage_is_read_from_a_json_reply_whatever_its_chunking() {
        let body = json!({"id": "x", "choices": [],
            "usage": {"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168}})
        .to_string();
        let (a, b) = body.split_at(17);
        assert_eq!(
            scan("application/json", &[a, b]),
            Some(Tokens {
                input: 123,
                output: 45
            })
        );
        assert_eq!(scan("application/json", &[r#"{"data": []}"#]), None);
        assert_eq!(scan("application/json", &["not json"]), None);
        assert_eq!(
            scan(
                "application/json",
                &[r#"{"usage": {"input_tokens": 9, "output_tokens": 2}}"#]
            ),
            Some(Tokens {
                input: 9,
                output: 2
            })
        );
    }

    #[test]
    fn usage_is_read_from_the_sse_chunk_that_carries_it() {
        let chunk = |v: Value| format!("data: {v}\n\n");
        let stream = [
            chunk(json!({"choices": [{"delta": {"content": "hi"}}]})),
            chunk(json!({"choices": [{"delta": {}, "finish_reason": "stop"}], "usage": null})),
            chunk(json!({"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        // Split everywhere, even inside the usage line.
        for at in [1, 40, stream.len() / 2, stream.len() - 20] {
            let (a, b) = stream.split_at(at);
            assert_eq!(
                scan("text/event-stream; charset=utf-8", &[a, b]),
                Some(Tokens {
                    input: 100,
                    output: 20
                }),
                "split at {at}"
            );
        }
        // Anthropic: input at the start, the output count growing to its final value.
        let anthropic = [
            "event: message_start\r\n",
            &format!(
                "data: {}\r\n\r\n",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1}}})
            ),
            &format!(
                "data: {}\r\n\r\n",
                json!({"type": "message_delta", "usage": {"output_tokens": 12}})
            ),
        ]
        .concat();
        assert_eq!(
            scan("text/event-stream", &[&anthropic]),
            Some(Tokens {
                input: 30,
                output: 12
            })
        );
        assert_eq!(
            scan(
                "text/event-stream",
                &["data: {\"choices\": []}\n\ndata: [DONE]\n\n"]
            ),
            None
        );
        // A last line without its newline still counts.
        assert_eq!(
            scan(
                "text/event-stream",
                &["data: {\"usage\": {\"prompt_tokens\": 1, \"completion_tokens\": 2}}"]
            ),
            Some(Tokens {
                input: 1,
                output: 2
            })
        );
    }

    #[test]
    fn placeholders_are_stable_distinct_and_reveal_nothing() {
        let p = placeholder("sandbox-token-0123456789", "t1", "openai");
        assert_eq!(p, placeholder("sandbox-token-0123456789", "t1", "openai"));
        assert_ne!(p, placeholder("sandbox-token-0123456789", "t1", "other"));
        assert_ne!(p, placeholder("sandbox-token-0123456789", "t2", "openai"));
        assert_ne!(p, placeholder("sandbox-token-9876543210", "t1", "openai"));
        assert!(p.starts_with("atl-proxy-") && p.len() == "atl-proxy-".len() + 32);
        assert!(!p.contains("sandbox-token"));
    }

    fn grant(base: &str) -> Grant {
        Grant {
            task_id: "t".into(),
            provider: "p".into(),
            upstream: reqwest::Url::parse(base).unwrap(),
            key: None,
            prices: BTreeMap::new(),
        }
    }

    #[test]
    fn paths_map_under_the_base_url_and_nowhere_else() {
        let g = grant("http://127.0.0.1:9/v1");
        assert_eq!(
            upstream_url(&g, "/p/chat/completions", Some("a=1"))
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/v1/chat/completions?a=1"
        );
        assert_eq!(
            upstream_url(&grant("https://api.example.com/v1/"), "/p/models", None)
                .unwrap()
                .as_str(),
            "https://api.example.com/v1/models"
        );
        for bad in [
            "/other/chat/completions",
            "/pp/chat",
            "/",
            "/p/../../admin",
            "/p/./x",
            "/p/%2e%2e/admin",
            "/p/a%2Fb",
            "/p/a\\b",
        ] {
            let e = upstream_url(&g, bad, None).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{bad}");
        }
    }

    /// An upstream on loopback that records what reaches it.
    async fn upstream() -> (String, Arc<Mutex<Vec<(String, HeaderMap)>>>) {
        let seen: Arc<Mutex<Vec<(String, HeaderMap)>>> = Arc::default();
        let s = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let s = s.clone();
            async move {
                s.lock()
                    .unwrap()
                    .push((req.uri().to_string(), req.headers().clone()));
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    json!({"usage": {"prompt_tokens": 5, "completion_tokens": 3}}).to_string(),
                )
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        (format!("http://{addr}/v1"), seen)
    }

    async fn raw(port: u16, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_proxy_swaps_the_key_counts_usage_and_refuses_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), &dir.path().join("key"))
            .await
            .unwrap();
        let ws = store
            .create_workspace(&serde_json::from_value(json!({"name": "w"})).unwrap(), None)
            .await
            .unwrap()
            .0
            .id;
        let (task, _) = store
            .create_task(
                &NewTask {
                    title: "t".into(),
                    prompt: "p".into(),
                    workspace_id: ws,
                    template: "implementation".into(),
                    effort: Effort::Medium,
                    base_branch: "main".into(),
                    repo: "app".into(),
                    status: TaskStatus::Queued,
                    parent_id: None,
                },
                None,
            )
            .await
            .unwrap();
        let id = task.task.id.clone();
        store
            .transition_task(&id, TaskStatus::Queued, TaskStatus::Running, None)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let proxy = ModelProxy::start(store.clone(), dir.path(), shutdown.clone())
            .await
            .unwrap();
        let (base, seen) = upstream().await;
        let mut config = AgentConfig::from_value(&json!({
            "providers": {
                "p": {"base_url": base, "api_key_env": "P_KEY", "proxy": true,
                      "models": {"m": {"input_cost": 2.0, "output_cost": 10.0}}},
                "direct": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "D_KEY"}
            },
            "secrets": {"PK": "P_KEY", "DK": "D_KEY"}
        }))
        .unwrap();
        let mut env = BTreeMap::from([
            ("P_KEY".to_owned(), "sk-real".to_owned()),
            ("D_KEY".to_owned(), "sk-direct".to_owned()),
        ]);
        proxy
            .route_config(&id, "tok", &mut config, &mut env, true)
            .unwrap();
        let key = placeholder("tok", &id, "p");
        assert_eq!(
            config.providers["p"].base_url.as_deref(),
            Some(format!("http://127.0.0.1:{}/p", proxy.port()).as_str())
        );
        assert_eq!(env["P_KEY"], key, "the agent holds the placeholder only");
        assert_eq!(
            (
                config.providers["direct"].base_url.as_deref(),
                env["D_KEY"].as_str()
            ),
            (Some("http://127.0.0.1:9/v1"), "sk-direct"),
            "a provider without `proxy` is left alone"
        );
        let mut vm_config = config.clone();
        vm_config.providers.get_mut("p").unwrap().base_url = Some(base.clone());
        let mut vm_env = BTreeMap::from([("P_KEY".to_owned(), "sk-real".to_owned())]);
        proxy
            .route_config("t-vm", "tok2", &mut vm_config, &mut vm_env, false)
            .unwrap();
        assert_eq!(
            vm_config.providers["p"].base_url.as_deref(),
            Some(format!("http://172.16.0.1:{}/p", proxy.port()).as_str()),
            "a VM reaches the proxy at its host-service address"
        );
        let mut leaky = BTreeMap::from([
            ("P_KEY".to_owned(), "sk-real".to_owned()),
            ("ALSO".to_owned(), "sk-real".to_owned()),
        ]);
        let mut c = vm_config.clone();
        c.providers.get_mut("p").unwrap().base_url = Some(base.clone());
        let e = proxy
            .route_config("t3", "tok3", &mut c, &mut leaky, false)
            .unwrap_err();
        assert!(
            matches!(&e, LaunchError::Invalid { field, .. } if field == "agent_config.secrets"),
            "{e:?}"
        );
        let http = reqwest::Client::new();
        let call = |path: &str, auth: Option<(&str, String)>| {
            let mut r = http.post(format!("http://127.0.0.1:{}{path}", proxy.port()));
            if let Some((h, v)) = auth {
                r = r.header(h, v);
            }
            r.body("{}").send()
        };

        let ok = http
            .post(format!(
                "http://127.0.0.1:{}/p/chat/completions",
                proxy.port()
            ))
            .header("authorization", format!("Bearer {key}"))
            .body(json!({"model": "m", "messages": []}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(
            ok.json::<Value>().await.unwrap()["usage"]["prompt_tokens"],
            5
        );
        let ok = call("/p/messages", Some(("x-api-key", key.clone())))
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen[0].0, "/v1/chat/completions");
            assert_eq!(seen[0].1["authorization"], "Bearer sk-real");
            assert_eq!(seen[1].0, "/v1/messages");
            assert_eq!(seen[1].1["x-api-key"], "sk-real");
            assert!(seen[1].1.get("authorization").is_none());
        }
        let mut usage = Default::default();
        for _ in 0..100 {
            usage = store.get_task(&id).await.unwrap().task.proxy_usage;
            if usage.requests == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            usage,
            atelier_core::task::ProxyUsage {
                requests: 2,
                input_tokens: 10,
                output_tokens: 6,
                // Only the first call named a priced model: 5 × $2 + 3 × $10 per million.
                cost_usd: 40e-6
            }
        );

        let refused = [
            call("/p/chat/completions", None).await.unwrap(),
            call(
                "/p/chat/completions",
                Some(("authorization", "Bearer atl-proxy-bogus".into())),
            )
            .await
            .unwrap(),
            call(
                "/other/chat/completions",
                Some(("authorization", format!("Bearer {key}"))),
            )
            .await
            .unwrap(),
        ];
        for r in refused {
            assert_eq!(r.status(), 403);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
        }
        for request in [
            format!("GET {base}/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"),
            format!("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"),
            format!("GET /p/../../v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"),
        ] {
            let reply = raw(proxy.port(), &request).await;
            assert!(reply.starts_with("HTTP/1.1 403"), "{request}: {reply}");
        }
        assert_eq!(seen.lock().unwrap().len(), 2, "nothing else got through");

        // Out of its turn the key calls nothing; when the task lets its sandbox go, the
        // key is forgotten.
        store
            .transition_task(&id, TaskStatus::Running, TaskStatus::Review, None)
            .await
            .unwrap();
        let r = call(
            "/p/chat/completions",
            Some(("authorization", format!("Bearer {key}"))),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert!(proxy.lookup(&key).is_some());
        proxy.revoke_task(&id);
        assert!(proxy.lookup(&key).is_none());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_restarted_proxy_listens_on_its_previous_port() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), &dir.path().join("key"))
            .await
            .unwrap();
        let first = CancellationToken::new();
        let a = ModelProxy::start(store.clone(), dir.path(), first.clone())
            .await
            .unwrap();
        let port = a.port();
        first.cancel();
        drop(a);
        let mut again = None;
        for _ in 0..50 {
            // A failed try remembers its own port: point it back each time.
            std::fs::write(dir.path().join(PORT_FILE), port.to_string()).unwrap();
            let stop = CancellationToken::new();
            let p = ModelProxy::start(store.clone(), dir.path(), stop.clone())
                .await
                .unwrap();
            if p.port() == port {
                again = Some(p);
                break;
            }
            stop.cancel();
            // The first listener may take a moment to close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(again.is_some(), "the proxy did not get port {port} back");
    }
}
