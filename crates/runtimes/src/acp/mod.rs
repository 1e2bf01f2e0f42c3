//! The generic Agent Client Protocol adapter (JSON-RPC 2.0 over stdio, protocol
//! version 1): Gemini CLI (`gemini --acp`), Qwen Code (`qwen --acp`), `opencode acp`,
//! GitHub Copilot (`copilot --acp`) and Zed's adapters (`claude-agent-acp`,
//! `codex-acp`), run under an [`atelier-stdio-host`](crate::stdio_host).
//!
//! Everything ACP-specific lives in this module.
//!
//! # Session setup
//!
//! `initialize` (once per agent process; the client advertises no file system and no
//! terminal, form elicitation, and OpenCode's `opencode/question` extension), then
//! `session/new {cwd, mcpServers: []}` → the session id. The spec's `agent` becomes
//! `session/set_mode` (it must be one of the agent's modes), `model` and `variant` become
//! `session/set_config_option` on the options of category `model` and `thought_level`
//! when the agent offers them; an agent with no model option but the unstable model list
//! (`models.availableModels`: Gemini CLI) gets `session/set_model` instead. ACP has no
//! system prompt: `system` is not sent.
//!
//! # Wire → events
//!
//! - `session/prompt` (written by the adapter) starts a turn; its response ends it:
//!   `stopReason` `end_turn` → completed, `cancelled` → cancelled, `max_tokens`,
//!   `max_turn_requests`, `refusal` and JSON-RPC errors → error.
//! - `session/update`: `agent_message_chunk` / `agent_thought_chunk` → `text` /
//!   `reasoning` deltas; ACP never repeats the whole text, so the adapter closes each
//!   part with its full text when something else arrives. `tool_call` and
//!   `tool_call_update` → `tool_call` (name from the tool kind: `execute` → `bash`,
//!   `edit` → `edit`, `search` → `grep`, `fetch` → `webfetch`, …); a completed edit,
//!   delete or move, or a `diff` content, → `files_touched` from its locations. `plan` →
//!   `todos` (ACP plans have no cancelled status). `usage_update.cost` (a running total)
//!   and the prompt response's `usage` (Gemini CLI's `_meta.quota.token_count`) → one
//!   `usage` per turn.
//! - `session/request_permission` → a permission (patterns: the command, the locations;
//!   "always" only when the agent offers an `allow_always` option).
//! - Questions: `elicitation/create` (form) → one question per schema property, in
//!   document order: an `enum`/`oneOf` is a choice, an `array` of one a multiple choice,
//!   a plain string free text. **Fallback:** a form field is either a choice or free
//!   text, so a question with options accepts no free text besides them (`custom` is
//!   false) and such an answer is refused before it reaches the agent. OpenCode's
//!   `opencode/question` extension keeps its questions whole (options and free text).
//! - Requests the client does not support (`fs/*`, `terminal/*`, unknown methods) are
//!   answered with JSON-RPC error -32601.
//!
//! # Answers
//!
//! Permissions select the option of the matching kind (`allow_once`, `allow_always` —
//! or `allow_once` when the agent offers no "always" —, `reject_once`). ACP cannot carry
//! a message with a rejection: with a message the agent goes on (the message is not
//! delivered); without one, and for a dismissed question, the adapter also sends
//! `session/cancel` so the turn halts as OpenCode's does, and the turn counts as
//! completed. Abort is `session/cancel`, and every open request is answered `cancelled`.

pub mod profile;

use std::collections::HashMap;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Value};

use crate::event::{
    AgentEvent, Answer, Interaction, InteractionKind, InteractionOutcome, PermissionReply,
    Question, QuestionOption, TodoItem, TodoStatus, ToolStatus, TurnEndReason, Usage,
};
use crate::stdio::{
    noted_outcome, outcome_note, outcome_of, str_at, u64_at, Dialect, StdioRuntime, Turns,
    WireNormalizer,
};
use crate::stdio_host::{random_id, HostClient, Input, Record, RecordBody, StdioConfig};
use crate::{Result, RuntimeError, Session, SessionSpec};

/// The ACP protocol version this adapter speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// A runtime for an ACP agent behind the stdio host at `cfg.base_url`.
pub fn runtime(cfg: StdioConfig) -> Result<StdioRuntime> {
    StdioRuntime::with_dialect(cfg, std::sync::Arc::new(AcpDialect))
}

fn request(id: &str, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The client side of `initialize`.
fn initialize_params() -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "clientCapabilities": {
            "fs": {"readTextFile": false, "writeTextFile": false},
            "terminal": false,
            "elicitation": {"form": {}},
            "_meta": {"opencode/question": {"version": 1}},
        },
        "clientInfo": {"name": "atelier", "version": env!("CARGO_PKG_VERSION")},
    })
}

struct AcpDialect;

impl AcpDialect {
    /// Sends a request and returns its result (or the agent's error).
    async fn call(host: &HostClient, input_id: &str, method: &str, params: Value) -> Result<Value> {
        let rpc_id = format!("atelier-{input_id}");
        let input = Input {
            id: input_id.to_string(),
            message: request(&rpc_id, method, params),
            note: None,
        };
        let timeout = host.config().handshake_timeout;
        host.exchange(&input, timeout, |rec| {
            let v = match &rec.body {
                RecordBody::Out { .. } => rec.json()?,
                _ => return None,
            };
            if v.get("method").is_some() || str_at(&v, "/id") != Some(rpc_id.as_str()) {
                return None;
            }
            Some(match v.get("error") {
                Some(e) => Err(RuntimeError::Protocol(format!(
                    "{method}: {}",
                    str_at(e, "/message").unwrap_or("the agent refused")
                ))),
                None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
            })
        })
        .await?
    }
}

#[async_trait::async_trait]
impl Dialect for AcpDialect {
    fn kind(&self) -> &'static str {
        "acp"
    }

    fn normalizer(&self, session: &Session) -> Box<dyn WireNormalizer> {
        Box::new(AcpNormalizer::new(&session.id, &session.spec.directory))
    }

    async fn start_session(&self, host: &HostClient, spec: &SessionSpec) -> Result<Session> {
        let st = host.status().await?;
        if !st.running() {
            return Err(RuntimeError::Disconnected(
                "the agent is not running".into(),
            ));
        }
        let init = Self::call(
            host,
            &format!("initialize-{}", st.started_seq),
            "initialize",
            initialize_params(),
        )
        .await?;
        if let Some(v) = init.get("protocolVersion").and_then(Value::as_u64) {
            if v != PROTOCOL_VERSION {
                return Err(RuntimeError::Protocol(format!(
                    "the agent speaks ACP version {v}, not {PROTOCOL_VERSION}"
                )));
            }
        }
        let new = Self::call(
            host,
            &format!("session-new-{}", random_id()),
            "session/new",
            json!({"cwd": spec.directory, "mcpServers": []}),
        )
        .await?;
        let sid = str_at(&new, "/sessionId")
            .ok_or_else(|| RuntimeError::Protocol(format!("session/new answered {new}")))?
            .to_string();
        if let Some(mode) = &spec.agent {
            let modes: Vec<&str> = new
                .pointer("/modes/availableModes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| str_at(m, "/id"))
                .collect();
            if !modes.contains(&mode.as_str()) {
                return Err(RuntimeError::Protocol(format!(
                    "the agent has no mode {mode:?} (it has {modes:?})"
                )));
            }
            Self::call(
                host,
                &format!("set-mode-{sid}"),
                "session/set_mode",
                json!({"sessionId": sid, "modeId": mode}),
            )
            .await?;
        }
        for (label, method, params) in setup_calls(&sid, &new, spec) {
            Self::call(host, &format!("{label}-{sid}"), method, params).await?;
        }
        if spec.system.is_some() {
            tracing::warn!("ACP has no system prompt; the session's system text is not sent");
        }
        Ok(Session {
            id: sid,
            spec: spec.clone(),
        })
    }

    async fn attach_session(
        &self,
        host: &HostClient,
        id: &str,
        spec: &SessionSpec,
    ) -> Result<Session> {
        // The session must have been created by the agent process that runs now.
        let mut alive = false;
        for rec in host.transcript(0).await? {
            match &rec.body {
                RecordBody::Start { .. } | RecordBody::Exit { .. } => alive = false,
                RecordBody::Out { .. } => {
                    if rec
                        .json()
                        .as_ref()
                        .and_then(|v| str_at(v, "/result/sessionId"))
                        == Some(id)
                    {
                        alive = true;
                    }
                }
                RecordBody::In { .. } => {}
            }
        }
        if !alive {
            return Err(RuntimeError::NotFound(format!(
                "ACP session {id} (unknown, or its agent process is gone)"
            )));
        }
        Ok(Session {
            id: id.to_string(),
            spec: spec.clone(),
        })
    }

    fn prompt(&self, session: &Session, text: &str) -> Input {
        let n = random_id();
        Input {
            id: format!("prompt-{n}"),
            message: request(
                &format!("atelier-prompt-{n}"),
                "session/prompt",
                json!({"sessionId": session.id, "prompt": [{"type": "text", "text": text}]}),
            ),
            note: None,
        }
    }
}

/// What `session/new` answered turned into the requests that set the spec's model and
/// variant: `session/set_config_option` on the options of category `model` and
/// `thought_level`; an agent without a model option but with the unstable model list
/// (`models.availableModels`, as Gemini CLI has) gets `session/set_model`. Each is
/// `(input label, method, params)`.
fn setup_calls(sid: &str, new: &Value, spec: &SessionSpec) -> Vec<(String, &'static str, Value)> {
    let options = new
        .get("configOptions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let wanted = [
        (
            "model",
            spec.model
                .as_ref()
                .map(|m| (format!("{}/{}", m.provider, m.model), m.model.clone())),
        ),
        (
            "thought_level",
            spec.variant.clone().map(|v| (v.clone(), v)),
        ),
    ];
    // Agents name models `provider/model` (OpenCode) or just `model` (Gemini CLI).
    let pick = |offered: &[&str], full: String, bare: String| {
        if offered.contains(&bare.as_str()) && !offered.contains(&full.as_str()) {
            bare
        } else {
            full
        }
    };
    let mut calls = Vec::new();
    for (category, value) in wanted {
        let Some((full, bare)) = value else { continue };
        let Some(opt) = options
            .iter()
            .find(|o| str_at(o, "/category") == Some(category))
        else {
            let models = new
                .pointer("/models/availableModels")
                .and_then(Value::as_array);
            if let (Some(models), "model") = (models, category) {
                let offered: Vec<&str> = models
                    .iter()
                    .filter_map(|m| str_at(m, "/modelId"))
                    .collect();
                // A list of bare ids takes any model by its bare id (Gemini CLI lists a
                // few, and serves whichever it is given).
                let prefixed = offered.iter().any(|m| m.contains('/'));
                let id = if offered.contains(&full.as_str())
                    || (prefixed && !offered.contains(&bare.as_str()))
                {
                    full
                } else {
                    bare
                };
                calls.push((
                    "set-model".to_string(),
                    "session/set_model",
                    json!({"sessionId": sid, "modelId": id}),
                ));
            } else {
                tracing::warn!("the ACP agent offers no {category} option; {full:?} is not set");
            }
            continue;
        };
        let Some(config_id) = str_at(opt, "/id") else {
            continue;
        };
        let offered: Vec<&str> = opt
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| str_at(o, "/value"))
            .collect();
        calls.push((
            format!("set-{category}"),
            "session/set_config_option",
            json!({"sessionId": sid, "configId": config_id, "value": pick(&offered, full, bare)}),
        ));
    }
    calls
}

// ---------------------------------------------------------------------------------------
// Normalization.
// ---------------------------------------------------------------------------------------

/// What an open agent request is.
#[derive(Debug, Clone)]
enum AskKind {
    Permission {
        options: Vec<Value>,
    },
    /// Form elicitation: the property key of each question, and whether it is a
    /// number or a boolean (sent as such, not as text).
    Form {
        keys: Vec<(String, &'static str)>,
    },
    /// OpenCode's `opencode/question` extension.
    OpenCodeQuestion,
}

#[derive(Debug, Clone)]
struct OpenAsk {
    rpc_id: Value,
    kind: AskKind,
}

#[derive(Debug, Default, Clone)]
struct ToolState {
    kind: Option<String>,
    title: Option<String>,
    input: Option<Value>,
    locations: Vec<String>,
}

#[derive(Debug)]
struct OpenPart {
    reasoning: bool,
    part_id: String,
    text: String,
}

/// ACP transcript → normalized events, for one session.
#[derive(Debug)]
pub struct AcpNormalizer {
    session_id: String,
    turns: Turns,
    /// JSON-RPC ids of our `session/prompt` requests not answered yet.
    prompts: Vec<Value>,
    asks: HashMap<String, OpenAsk>,
    tools: HashMap<String, ToolState>,
    part: Option<OpenPart>,
    parts: u32,
    /// The agent's running cost (USD), and its value when the turn started.
    cost: Option<f64>,
    cost_at_start: f64,
    auto: Vec<Input>,
}

impl AcpNormalizer {
    pub fn new(session_id: &str, directory: &std::path::Path) -> AcpNormalizer {
        AcpNormalizer {
            session_id: session_id.to_string(),
            turns: Turns::new(directory),
            prompts: Vec::new(),
            asks: HashMap::new(),
            tools: HashMap::new(),
            part: None,
            parts: 0,
            cost: None,
            cost_at_start: 0.0,
            auto: Vec::new(),
        }
    }

    fn ours(&self, params: &Value) -> bool {
        let sid = str_at(params, "/sessionId").or_else(|| str_at(params, "/scope/sessionId"));
        !matches!(sid, Some(s) if s != self.session_id)
    }

    fn message_id(&self) -> String {
        format!("turn-{}", self.turns.turn)
    }

    fn close_part(&mut self) -> Vec<AgentEvent> {
        let Some(p) = self.part.take() else {
            return Vec::new();
        };
        let message_id = self.message_id();
        vec![if p.reasoning {
            AgentEvent::Reasoning {
                message_id,
                part_id: p.part_id,
                delta: None,
                text: Some(p.text),
            }
        } else {
            AgentEvent::Text {
                message_id,
                part_id: p.part_id,
                delta: None,
                text: Some(p.text),
            }
        }]
    }

    fn chunk(&mut self, reasoning: bool, text: &str) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        if self.part.as_ref().is_some_and(|p| p.reasoning != reasoning) {
            out.extend(self.close_part());
        }
        if self.part.is_none() {
            self.parts += 1;
            self.part = Some(OpenPart {
                reasoning,
                part_id: format!("{}:{}", self.message_id(), self.parts),
                text: String::new(),
            });
        }
        let message_id = self.message_id();
        if let Some(p) = self.part.as_mut() {
            p.text.push_str(text);
            let part_id = p.part_id.clone();
            let delta = Some(text.to_string());
            out.push(if reasoning {
                AgentEvent::Reasoning {
                    message_id,
                    part_id,
                    delta,
                    text: None,
                }
            } else {
                AgentEvent::Text {
                    message_id,
                    part_id,
                    delta,
                    text: None,
                }
            });
        }
        out
    }

    fn start_turn(&mut self) -> Vec<AgentEvent> {
        let out = self.turns.start();
        if !out.is_empty() {
            self.parts = 0;
            self.cost_at_start = self.cost.unwrap_or(0.0);
        }
        out
    }

    fn input_line(&mut self, v: &Value, note: Option<&Value>) -> Vec<AgentEvent> {
        let null = Value::Null;
        let params = v.get("params").unwrap_or(&null);
        match str_at(v, "/method") {
            Some("session/prompt") if self.ours(params) => {
                if let Some(id) = v.get("id") {
                    self.prompts.push(id.clone());
                }
                self.start_turn()
            }
            Some("session/cancel") if self.ours(params) && self.turns.busy => {
                let halt = note.and_then(|n| n.get("halt")).and_then(Value::as_bool) == Some(true);
                if !halt {
                    self.turns.abort_requested = true;
                    return Vec::new();
                }
                // A halt answers an ask and stops the turn; the agent may end the turn
                // before it reads the answer, so the ask is settled here.
                self.turns.halted = true;
                match (
                    note.and_then(|n| n.get("id")).and_then(Value::as_str),
                    noted_outcome(note),
                ) {
                    (Some(id), Some(outcome)) => {
                        let id = id.to_string();
                        self.asks.remove(&id);
                        self.turns.resolve(&id, outcome)
                    }
                    _ => Vec::new(),
                }
            }
            Some(_) => Vec::new(),
            None => {
                // Our response to an agent request.
                let Some(id) = v.get("id") else {
                    return Vec::new();
                };
                let Some(ask_id) = self
                    .asks
                    .iter()
                    .find(|(_, a)| &a.rpc_id == id)
                    .map(|(k, _)| k.clone())
                else {
                    return Vec::new();
                };
                let ask = self.asks.remove(&ask_id);
                let outcome = noted_outcome(note)
                    .unwrap_or_else(|| parse_reply(ask.as_ref().map(|a| &a.kind), v.get("result")));
                self.turns.resolve(&ask_id, outcome)
            }
        }
    }

    fn output_line(&mut self, seq: u64, line: &str, v: &Value) -> Vec<AgentEvent> {
        let null = Value::Null;
        let params = v.get("params").unwrap_or(&null);
        match (str_at(v, "/method"), v.get("id")) {
            (Some("session/update"), None) if self.ours(params) => {
                self.update(params.get("update").unwrap_or(&null))
            }
            (Some(_), None) => Vec::new(),
            (Some(method), Some(rpc_id)) => self.agent_request(seq, line, method, rpc_id, params),
            (None, Some(id)) => {
                // A response to one of our requests.
                let Some(pos) = self.prompts.iter().position(|p| p == id) else {
                    return Vec::new();
                };
                self.prompts.remove(pos);
                self.prompt_answered(v)
            }
            (None, None) => vec![AgentEvent::Raw {
                kind: "acp".into(),
                value: v.clone(),
            }],
        }
    }

    fn prompt_answered(&mut self, v: &Value) -> Vec<AgentEvent> {
        let mut out = self.close_part();
        let (reason, error) = match v.get("error") {
            Some(e) => (
                TurnEndReason::Error,
                Some(
                    str_at(e, "/message")
                        .map(str::to_string)
                        .unwrap_or_else(|| e.to_string()),
                ),
            ),
            None => match str_at(v, "/result/stopReason").unwrap_or("end_turn") {
                "end_turn" => (TurnEndReason::Completed, None),
                "cancelled" => (TurnEndReason::Cancelled, None),
                other => (TurnEndReason::Error, Some(format!("stop reason: {other}"))),
            },
        };
        let u = v.pointer("/result/usage").unwrap_or(&Value::Null);
        // Gemini CLI reports the prompt's tokens as `_meta.quota.token_count` instead.
        let quota = v
            .pointer("/result/_meta/quota/token_count")
            .unwrap_or(&Value::Null);
        let either = |ours: &str, gemini: &str| match u64_at(u, ours) {
            0 => u64_at(quota, gemini),
            n => n,
        };
        let cost = self.cost.map(|c| (c - self.cost_at_start).max(0.0));
        let usage = Usage {
            message_id: Some(self.message_id()),
            input_tokens: either("/inputTokens", "/input_tokens"),
            output_tokens: either("/outputTokens", "/output_tokens"),
            reasoning_tokens: u64_at(u, "/thoughtTokens"),
            cache_read: u64_at(u, "/cachedReadTokens"),
            cache_write: u64_at(u, "/cachedWriteTokens"),
            cost_usd: cost.filter(|c| *c > 0.0),
        };
        let any = usage.input_tokens
            + usage.output_tokens
            + usage.reasoning_tokens
            + usage.cache_read
            + usage.cache_write
            > 0
            || usage.cost_usd.is_some();
        if any && self.turns.busy {
            out.push(AgentEvent::Usage(usage));
        }
        // A cancelled stop without our cancel (the agent gave up by itself) is still a
        // cancellation.
        let reason = if reason == TurnEndReason::Cancelled && !self.turns.halted {
            self.turns.abort_requested = true;
            reason
        } else {
            reason
        };
        out.extend(self.turns.end(reason, error));
        self.asks.clear();
        if !self.prompts.is_empty() {
            out.extend(self.start_turn());
        }
        out
    }

    fn update(&mut self, u: &Value) -> Vec<AgentEvent> {
        let kind = str_at(u, "/sessionUpdate").unwrap_or("");
        match kind {
            "agent_message_chunk" | "agent_thought_chunk" => {
                match (str_at(u, "/content/type"), str_at(u, "/content/text")) {
                    (Some("text"), Some(t)) if !t.is_empty() => {
                        self.chunk(kind == "agent_thought_chunk", t)
                    }
                    _ => Vec::new(),
                }
            }
            "tool_call" | "tool_call_update" => {
                let mut out = self.close_part();
                out.extend(self.tool(u));
                out
            }
            "plan" => {
                let mut out = self.close_part();
                let items = u
                    .get("entries")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some(TodoItem {
                            content: str_at(e, "/content")?.to_string(),
                            status: TodoStatus::parse_lenient(
                                str_at(e, "/status").unwrap_or("pending"),
                            ),
                            priority: str_at(e, "/priority").map(str::to_string),
                        })
                    })
                    .collect();
                out.extend(self.turns.todos(items));
                out
            }
            "usage_update" => {
                let usd = !matches!(str_at(u, "/cost/currency"), Some(c) if !c.eq_ignore_ascii_case("USD"));
                if let (Some(amount), true) =
                    (u.pointer("/cost/amount").and_then(Value::as_f64), usd)
                {
                    self.cost = Some(amount);
                }
                Vec::new()
            }
            "user_message_chunk"
            | "available_commands_update"
            | "current_mode_update"
            | "config_option_update"
            | "session_info_update"
            | "notice"
            | "compaction_update"
            | "compaction_summary_chunk" => Vec::new(),
            _ => vec![AgentEvent::Raw {
                kind: format!("acp.{kind}"),
                value: u.clone(),
            }],
        }
    }

    fn tool(&mut self, u: &Value) -> Vec<AgentEvent> {
        let Some(id) = str_at(u, "/toolCallId") else {
            return Vec::new();
        };
        let state = self.tools.entry(id.to_string()).or_default();
        if let Some(k) = str_at(u, "/kind") {
            state.kind = Some(k.to_string());
        }
        if let Some(t) = str_at(u, "/title") {
            state.title = Some(t.to_string());
        }
        if let Some(i) = u.get("rawInput").filter(|i| !i.is_null()) {
            state.input = Some(i.clone());
        }
        let mut paths: Vec<String> = u
            .get("locations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| str_at(l, "/path").map(str::to_string))
            .collect();
        let content: Vec<&Value> = u
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let diff_paths: Vec<String> = content
            .iter()
            .filter(|c| str_at(c, "/type") == Some("diff"))
            .filter_map(|c| str_at(c, "/path").map(str::to_string))
            .collect();
        paths.extend(diff_paths.iter().cloned());
        for p in &paths {
            if !state.locations.contains(p) {
                state.locations.push(p.clone());
            }
        }
        let state = state.clone();
        let status = match str_at(u, "/status") {
            Some("in_progress") => ToolStatus::Running,
            Some("completed") => ToolStatus::Completed,
            Some("failed") => ToolStatus::Failed,
            _ => ToolStatus::Pending,
        };
        let text: Vec<&str> = content
            .iter()
            .filter(|c| str_at(c, "/type") == Some("content"))
            .filter_map(|c| str_at(c, "/content/text"))
            .collect();
        let text = if text.is_empty() {
            match u.get("rawOutput") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) if !v.is_null() => Some(v.to_string()),
                _ => None,
            }
        } else {
            Some(text.join("\n"))
        };
        let mut out = vec![AgentEvent::ToolCall {
            id: id.to_string(),
            name: tool_name(state.kind.as_deref()),
            status,
            title: state.title.clone(),
            input: state.input.clone(),
            output: (status != ToolStatus::Failed)
                .then(|| text.clone())
                .flatten(),
            error: (status == ToolStatus::Failed).then(|| text.unwrap_or_default()),
        }];
        let mutates = matches!(state.kind.as_deref(), Some("edit" | "delete" | "move"));
        if status == ToolStatus::Completed && (mutates || !diff_paths.is_empty()) {
            let touched = if mutates { state.locations } else { diff_paths };
            out.extend(self.turns.files(touched));
        }
        out
    }

    fn agent_request(
        &mut self,
        seq: u64,
        line: &str,
        method: &str,
        rpc_id: &Value,
        params: &Value,
    ) -> Vec<AgentEvent> {
        let (id, kind, interaction) = match method {
            "session/request_permission" if self.ours(params) => {
                let id = format!("perm-{seq}");
                let (kind, i) = self.permission(&id, params);
                (id, kind, i)
            }
            "elicitation/create" if self.ours(params) => {
                let id = format!("ask-{seq}");
                match form_questions(line) {
                    Some((keys, questions)) => {
                        let title = str_at(params, "/message")
                            .map(str::to_string)
                            .or_else(|| questions.first().map(|q| q.question.clone()))
                            .unwrap_or_else(|| "The agent has a question".into());
                        let i = Interaction {
                            id: id.clone(),
                            title,
                            call_id: str_at(params, "/scope/toolCallId")
                                .or_else(|| str_at(params, "/toolCallId"))
                                .map(str::to_string),
                            kind: InteractionKind::Question { questions },
                        };
                        (id, AskKind::Form { keys }, i)
                    }
                    None => {
                        // URL mode (or an unreadable form): nothing a question can hold.
                        self.auto.push(Input {
                            id: format!("auto-{seq}"),
                            message: response(rpc_id, json!({"action": "decline"})),
                            note: None,
                        });
                        return Vec::new();
                    }
                }
            }
            "opencode/question" if self.ours(params) => {
                let id = format!("ask-{seq}");
                let questions =
                    crate::opencode::normalize::parse_questions(params.get("questions"));
                let i = Interaction {
                    id: id.clone(),
                    title: questions
                        .first()
                        .map(|q| q.question.clone())
                        .unwrap_or_else(|| "The agent has a question".into()),
                    call_id: str_at(params, "/tool/callID").map(str::to_string),
                    kind: InteractionKind::Question { questions },
                };
                (id, AskKind::OpenCodeQuestion, i)
            }
            _ => {
                self.auto.push(Input {
                    id: format!("auto-{seq}"),
                    message: json!({
                        "jsonrpc": "2.0",
                        "id": rpc_id,
                        "error": {"code": -32601, "message": format!("Method not found: {method}")}
                    }),
                    note: None,
                });
                return Vec::new();
            }
        };
        self.asks.insert(
            id,
            OpenAsk {
                rpc_id: rpc_id.clone(),
                kind,
            },
        );
        let mut out = self.close_part();
        out.extend(self.turns.asked(interaction));
        out
    }

    fn permission(&self, id: &str, params: &Value) -> (AskKind, Interaction) {
        let null = Value::Null;
        let tc = params.get("toolCall").unwrap_or(&null);
        let known = str_at(tc, "/toolCallId")
            .and_then(|i| self.tools.get(i))
            .cloned()
            .unwrap_or_default();
        let kind = str_at(tc, "/kind").map(str::to_string).or(known.kind);
        let title = str_at(tc, "/title").map(str::to_string).or(known.title);
        let input = tc
            .get("rawInput")
            .filter(|i| !i.is_null())
            .cloned()
            .or(known.input);
        let mut patterns: Vec<String> = match input.as_ref().and_then(|i| i.get("command")) {
            Some(Value::String(c)) => vec![c.clone()],
            Some(Value::Array(parts)) => vec![parts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")],
            _ => Vec::new(),
        };
        if patterns.is_empty() {
            let mut locs: Vec<String> = tc
                .get("locations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| str_at(l, "/path"))
                .map(|p| self.turns.rel_path(p))
                .collect();
            if locs.is_empty() {
                locs = known
                    .locations
                    .iter()
                    .map(|p| self.turns.rel_path(p))
                    .collect();
            }
            patterns = locs;
        }
        let options: Vec<Value> = params
            .get("options")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let can_always = options
            .iter()
            .any(|o| str_at(o, "/kind") == Some("allow_always"));
        let tool = tool_name(kind.as_deref());
        let title =
            title.unwrap_or_else(|| format!("{tool} {}", patterns.join(" ")).trim().to_string());
        let interaction = Interaction {
            id: id.to_string(),
            title,
            call_id: str_at(tc, "/toolCallId").map(str::to_string),
            kind: InteractionKind::Permission {
                tool,
                always: if can_always {
                    patterns.clone()
                } else {
                    Vec::new()
                },
                patterns,
                detail: params.clone(),
            },
        };
        (AskKind::Permission { options }, interaction)
    }
}

/// The outcome of a reply found in the transcript without a note.
fn parse_reply(kind: Option<&AskKind>, result: Option<&Value>) -> InteractionOutcome {
    let null = Value::Null;
    let r = result.unwrap_or(&null);
    match kind {
        Some(AskKind::Permission { options }) => {
            if str_at(r, "/outcome/outcome") != Some("selected") {
                return InteractionOutcome::Cancelled;
            }
            let chosen = str_at(r, "/outcome/optionId");
            let kind = options
                .iter()
                .find(|o| str_at(o, "/optionId") == chosen)
                .and_then(|o| str_at(o, "/kind"));
            match kind {
                Some("allow_once") => InteractionOutcome::Once,
                Some("allow_always") => InteractionOutcome::Always,
                _ => InteractionOutcome::Rejected,
            }
        }
        Some(AskKind::Form { keys }) => match str_at(r, "/action") {
            Some("accept") => InteractionOutcome::Answered {
                answers: keys
                    .iter()
                    .map(|(k, _)| match r.pointer(&format!("/content/{k}")) {
                        Some(Value::Array(a)) => a.iter().map(value_text).collect(),
                        Some(v) => vec![value_text(v)],
                        None => Vec::new(),
                    })
                    .collect(),
            },
            Some("decline") => InteractionOutcome::Dismissed,
            _ => InteractionOutcome::Cancelled,
        },
        Some(AskKind::OpenCodeQuestion) => match r.get("answers").and_then(Value::as_array) {
            Some(a) => InteractionOutcome::Answered {
                answers: a
                    .iter()
                    .map(|x| x.as_array().into_iter().flatten().map(value_text).collect())
                    .collect(),
            },
            None => InteractionOutcome::Dismissed,
        },
        None => InteractionOutcome::Cancelled,
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ACP tool kinds in OpenCode's tool words.
pub fn tool_name(kind: Option<&str>) -> String {
    match kind {
        Some("execute") => "bash",
        Some("edit") => "edit",
        Some("read") => "read",
        Some("delete") => "delete",
        Some("move") => "move",
        Some("search") => "grep",
        Some("fetch") => "webfetch",
        Some("think") => "think",
        Some("switch_mode") => "switch_mode",
        Some(other) if !other.is_empty() && other != "other" => return other.to_string(),
        _ => "other",
    }
    .to_string()
}

impl WireNormalizer for AcpNormalizer {
    fn push(&mut self, rec: &Record) -> Vec<AgentEvent> {
        match &rec.body {
            RecordBody::Start { .. } => {
                self.prompts.clear();
                self.asks.clear();
                self.part = None;
                self.cost = None;
                self.turns.agent_started()
            }
            RecordBody::Exit { .. } => {
                let mut out = self.close_part();
                self.prompts.clear();
                self.asks.clear();
                let msg = rec
                    .exit_message()
                    .unwrap_or_else(|| "the agent exited".into());
                out.extend(self.turns.agent_gone(&msg));
                out
            }
            RecordBody::In { line, note, .. } => match serde_json::from_str::<Value>(line) {
                Ok(v) => self.input_line(&v, note.as_ref()),
                Err(_) => Vec::new(),
            },
            RecordBody::Out { line } => match serde_json::from_str::<Value>(line) {
                Ok(v) => self.output_line(rec.seq, line, &v),
                // Agents log to stderr; a stray stdout line is kept for debugging.
                Err(_) if line.trim().is_empty() => Vec::new(),
                Err(_) => vec![AgentEvent::Raw {
                    kind: "stdout".into(),
                    value: Value::String(line.clone()),
                }],
            },
        }
    }

    fn pending(&self) -> Vec<Interaction> {
        self.turns.open().to_vec()
    }

    fn answer(&self, id: &str, answer: &Answer) -> Result<Vec<Input>> {
        let (Some(ask), Some(interaction)) = (self.asks.get(id), self.turns.interaction(id)) else {
            return Err(RuntimeError::NotFound(format!("interaction {id}")));
        };
        let is_question = !matches!(ask.kind, AskKind::Permission { .. });
        let mut outcome = outcome_of(answer, is_question);
        let mut halt = false;
        let result = match (&ask.kind, answer) {
            (AskKind::Permission { options }, Answer::Permission { reply, message }) => {
                let pick = |kinds: &[&str]| {
                    kinds.iter().find_map(|k| {
                        options
                            .iter()
                            .find(|o| str_at(o, "/kind") == Some(k))
                            .and_then(|o| {
                                Some((str_at(o, "/optionId")?.to_string(), k.to_string()))
                            })
                    })
                };
                let chosen = match reply {
                    PermissionReply::Once => pick(&["allow_once", "allow_always"]),
                    PermissionReply::Always => pick(&["allow_always", "allow_once"]),
                    PermissionReply::Reject => {
                        if message.is_some() {
                            tracing::info!("ACP cannot carry a rejection message; it is not sent");
                        }
                        halt = message.is_none();
                        pick(&["reject_once", "reject_always"])
                    }
                };
                match chosen {
                    Some((option_id, kind)) => {
                        outcome = match kind.as_str() {
                            "allow_once" => InteractionOutcome::Once,
                            "allow_always" => InteractionOutcome::Always,
                            _ => InteractionOutcome::Rejected,
                        };
                        json!({"outcome": {"outcome": "selected", "optionId": option_id}})
                    }
                    None if *reply == PermissionReply::Reject => {
                        json!({"outcome": {"outcome": "cancelled"}})
                    }
                    None => {
                        return Err(RuntimeError::Protocol(format!(
                            "the agent offers no option to allow {id}"
                        )))
                    }
                }
            }
            (AskKind::Permission { .. }, Answer::Dismiss) => {
                halt = true;
                let options = match &ask.kind {
                    AskKind::Permission { options } => options.clone(),
                    _ => Vec::new(),
                };
                match options
                    .iter()
                    .find(|o| str_at(o, "/kind") == Some("reject_once"))
                    .and_then(|o| str_at(o, "/optionId"))
                {
                    Some(o) => json!({"outcome": {"outcome": "selected", "optionId": o}}),
                    None => json!({"outcome": {"outcome": "cancelled"}}),
                }
            }
            (AskKind::Form { keys }, Answer::Question { answers }) => {
                let InteractionKind::Question { questions } = &interaction.kind else {
                    return Err(RuntimeError::Protocol(format!("{id} is not a question")));
                };
                json!({"action": "accept", "content": form_content(keys, questions, answers)?})
            }
            (AskKind::OpenCodeQuestion, Answer::Question { answers }) => {
                json!({"answers": answers})
            }
            (AskKind::Form { .. }, Answer::Dismiss) => {
                halt = true;
                json!({"action": "decline"})
            }
            (AskKind::OpenCodeQuestion, Answer::Dismiss) => {
                halt = true;
                json!({"rejected": true})
            }
            (AskKind::Permission { .. }, Answer::Question { .. }) => {
                return Err(RuntimeError::Protocol(format!(
                    "{id} is a permission request, not a question"
                )))
            }
            (_, Answer::Permission { .. }) => {
                return Err(RuntimeError::Protocol(format!(
                    "{id} is a question, not a permission request"
                )))
            }
        };
        let mut out = Vec::new();
        if halt {
            // The cancel goes first, so the agent does not run on between the answer
            // and the cancel; its note settles the ask.
            let mut note = outcome_note(&outcome);
            note["halt"] = json!(true);
            note["id"] = json!(id);
            out.push(Input {
                id: format!("halt-{id}"),
                message: notification("session/cancel", json!({"sessionId": self.session_id})),
                note: Some(note),
            });
        }
        out.push(Input {
            id: format!("answer-{id}"),
            message: response(&ask.rpc_id, result),
            note: Some(outcome_note(&outcome)),
        });
        Ok(out)
    }

    fn abort(&self) -> Vec<Input> {
        if !self.turns.busy {
            return Vec::new();
        }
        let mut out = vec![Input {
            id: format!("cancel-{}", self.turns.turn),
            message: notification("session/cancel", json!({"sessionId": self.session_id})),
            note: None,
        }];
        // ACP: after session/cancel the client answers its open requests `cancelled`.
        for i in self.turns.open() {
            let Some(ask) = self.asks.get(&i.id) else {
                continue;
            };
            let result = match ask.kind {
                AskKind::Permission { .. } => json!({"outcome": {"outcome": "cancelled"}}),
                AskKind::Form { .. } => json!({"action": "cancel"}),
                AskKind::OpenCodeQuestion => json!({"rejected": true}),
            };
            out.push(Input {
                id: format!("answer-{}", i.id),
                message: response(&ask.rpc_id, result),
                note: Some(outcome_note(&InteractionOutcome::Cancelled)),
            });
        }
        out
    }

    fn take_auto_replies(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.auto)
    }

    fn connection_lost(&mut self, message: &str) -> Vec<AgentEvent> {
        let mut out = self.close_part();
        out.extend(self.turns.connection_lost(message));
        out
    }

    fn exited(&self) -> Option<&str> {
        self.turns.exited()
    }
}

/// The form content for `answers`, checked against the questions: a choice must be one
/// of its options (a form has no free text besides them), numbers and booleans must
/// parse.
fn form_content(
    keys: &[(String, &'static str)],
    questions: &[Question],
    answers: &[Vec<String>],
) -> Result<Value> {
    if answers.len() != questions.len() {
        return Err(RuntimeError::Protocol(format!(
            "{} answers for {} questions",
            answers.len(),
            questions.len()
        )));
    }
    let mut content = serde_json::Map::new();
    for (((key, ty), q), a) in keys.iter().zip(questions).zip(answers) {
        if !q.options.is_empty() {
            if let Some(bad) = a.iter().find(|x| !q.options.iter().any(|o| &o.label == *x)) {
                return Err(RuntimeError::Protocol(format!(
                    "{bad:?} is not an option of {:?}: ACP forms take no free text besides the options",
                    q.question
                )));
            }
        }
        let value = if q.multiple {
            json!(a)
        } else {
            if a.len() > 1 {
                return Err(RuntimeError::Protocol(format!(
                    "{:?} takes one answer",
                    q.question
                )));
            }
            let Some(text) = a.first() else {
                continue; // unanswered (optional) field
            };
            match *ty {
                "number" => json!(text.trim().parse::<f64>().map_err(|_| {
                    RuntimeError::Protocol(format!("{:?} takes a number", q.question))
                })?),
                "boolean" => json!(matches!(
                    text.trim().to_ascii_lowercase().as_str(),
                    "true" | "yes"
                )),
                _ => json!(text),
            }
        };
        content.insert(key.clone(), value);
    }
    Ok(Value::Object(content))
}

/// JSON whose object keys keep their document order (serde_json's `Value` sorts them,
/// and a form's fields come in the order the agent wrote them).
#[derive(Debug, Clone)]
enum Ordered {
    Object(Vec<(String, Ordered)>),
    Leaf(Value),
}

impl Ordered {
    fn get(&self, key: &str) -> Option<&Ordered> {
        match self {
            Ordered::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Ordered::Leaf(_) => None,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Ordered::Leaf(v) => v.clone(),
            Ordered::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Leaf(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Leaf(json!(v)))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Leaf(json!(v)))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Leaf(json!(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Leaf(Value::String(v.to_string())))
            }
            fn visit_unit<E>(self) -> std::result::Result<Ordered, E> {
                Ok(Ordered::Leaf(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = seq.next_element::<Ordered>()? {
                    items.push(x.to_value());
                }
                Ok(Ordered::Leaf(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Ordered>()? {
                    entries.push((k, v));
                }
                Ok(Ordered::Object(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The questions of a form elicitation (`params.requestedSchema`, also accepted under
/// `params.mode`), with each one's property key and value type.
#[allow(clippy::type_complexity)]
fn form_questions(line: &str) -> Option<(Vec<(String, &'static str)>, Vec<Question>)> {
    let doc: Ordered = serde_json::from_str(line).ok()?;
    let params = doc.get("params")?;
    let mode = params.get("mode");
    let schema = params
        .get("requestedSchema")
        .or_else(|| mode.and_then(|m| m.get("requestedSchema")))
        .or_else(|| {
            mode.and_then(|m| m.get("form"))
                .and_then(|f| f.get("requestedSchema"))
        })?;
    let Ordered::Object(props) = schema.get("properties")? else {
        return None;
    };
    let mut keys = Vec::new();
    let mut questions = Vec::new();
    for (key, prop) in props {
        let p = prop.to_value();
        let ty = str_at(&p, "/type").unwrap_or("string");
        let (items, multiple) = if ty == "array" {
            (p.get("items").cloned().unwrap_or(Value::Null), true)
        } else {
            (p.clone(), false)
        };
        let mut options: Vec<QuestionOption> = items
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| QuestionOption {
                label: value_text(e),
                description: None,
            })
            .collect();
        for alt in ["oneOf", "anyOf"] {
            options.extend(
                items
                    .get(alt)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|o| {
                        let label = value_text(o.get("const")?);
                        let description = str_at(o, "/description")
                            .or_else(|| str_at(o, "/title").filter(|t| *t != label))
                            .map(str::to_string);
                        Some(QuestionOption { label, description })
                    }),
            );
        }
        let kind: &'static str = match ty {
            "number" | "integer" => "number",
            "boolean" => {
                if options.is_empty() {
                    options = ["true", "false"]
                        .iter()
                        .map(|l| QuestionOption {
                            label: l.to_string(),
                            description: None,
                        })
                        .collect();
                }
                "boolean"
            }
            _ => "string",
        };
        let title = str_at(&p, "/title");
        let description = str_at(&p, "/description");
        questions.push(Question {
            question: description.or(title).unwrap_or(key).to_string(),
            header: title.filter(|_| description.is_some()).map(str::to_string),
            custom: options.is_empty(),
            secret: false,
            options,
            multiple,
        });
        keys.push((key.clone(), kind));
    }
    Some((keys, questions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SID: &str = "sess_1";

    fn recs(lines: &[(&str, &str)]) -> Vec<Record> {
        lines
            .iter()
            .enumerate()
            .map(|(i, (dir, line))| Record {
                seq: i as u64 + 1,
                t: 0,
                body: match *dir {
                    "<" => RecordBody::In {
                        id: format!("in{i}"),
                        line: line.to_string(),
                        note: None,
                    },
                    ">" => RecordBody::Out {
                        line: line.to_string(),
                    },
                    "<note" => {
                        let (l, n) = line.split_once(" #note ").expect("note");
                        RecordBody::In {
                            id: format!("in{i}"),
                            line: l.to_string(),
                            note: serde_json::from_str(n).ok(),
                        }
                    }
                    "!" => RecordBody::Exit {
                        code: line.parse().ok(),
                        signal: None,
                        error: None,
                        stderr_tail: vec![],
                    },
                    other => panic!("{other}"),
                },
            })
            .collect()
    }

    fn run(n: &mut AcpNormalizer, recs: &[Record]) -> Vec<AgentEvent> {
        recs.iter().flat_map(|r| n.push(r)).collect()
    }

    fn norm() -> AcpNormalizer {
        AcpNormalizer::new(SID, Path::new("/srv/proj"))
    }

    #[test]
    fn a_turn_with_chunks_tools_plan_permission_and_usage() {
        let mut n = norm();
        let out = run(
            &mut n,
            &recs(&[
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":"p1","method":"session/prompt","params":{"sessionId":"sess_1","prompt":[{"type":"text","text":"go"}]}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"agent_thought_chunk","content":{"type":"text","text":"Hmm"}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"I will "}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"edit."}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"plan","entries":[{"content":"Edit","priority":"high","status":"in_progress"},{"content":"Test","priority":"low","status":"pending"}]}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"tool_call","toolCallId":"call_1","title":"Edit src/lib.rs","kind":"edit","status":"pending","locations":[{"path":"/srv/proj/src/lib.rs"}],"rawInput":{"path":"/srv/proj/src/lib.rs"}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":0,"method":"session/request_permission","params":{"sessionId":"sess_1","toolCall":{"toolCallId":"call_1","title":"Edit src/lib.rs","kind":"edit","status":"pending","locations":[{"path":"/srv/proj/src/lib.rs"}]},"options":[{"optionId":"allow","name":"Allow","kind":"allow_once"},{"optionId":"always","name":"Always","kind":"allow_always"},{"optionId":"reject","name":"Reject","kind":"reject_once"}]}}"#,
                ),
                (
                    "<note",
                    r#"{"jsonrpc":"2.0","id":0,"result":{"outcome":{"outcome":"selected","optionId":"allow"}}} #note {"outcome":{"kind":"once"}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"tool_call_update","toolCallId":"call_1","status":"completed","content":[{"type":"diff","path":"/srv/proj/src/lib.rs","oldText":null,"newText":"x"}]}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"other","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"not mine"}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"usage_update","used":5000,"size":200000,"cost":{"amount":0.01,"currency":"USD"}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Done."}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":"p1","result":{"stopReason":"end_turn","usage":{"inputTokens":100,"outputTokens":20,"thoughtTokens":5,"cachedReadTokens":7,"totalTokens":132}}}"#,
                ),
            ]),
        );
        let kinds: Vec<&str> = out.iter().map(AgentEvent::kind).collect();
        assert_eq!(
            kinds,
            vec![
                "status",
                "reasoning",
                "reasoning", // closed by the text
                "text",
                "text",
                "text", // closed by the plan
                "todos",
                "tool_call",
                "interaction_asked",
                "interaction_resolved",
                "tool_call",
                "files_touched",
                "text",
                "text", // closed by the end of the turn
                "usage",
                "status",
                "turn_ended"
            ],
            "{out:#?}"
        );
        assert!(
            matches!(&out[5], AgentEvent::Text { text: Some(t), part_id, .. } if t == "I will edit." && part_id == "turn-1:2")
        );
        match &out[8] {
            AgentEvent::InteractionAsked(i) => {
                assert_eq!(i.id, "perm-7");
                assert_eq!(i.title, "Edit src/lib.rs");
                assert_eq!(i.call_id.as_deref(), Some("call_1"));
                assert!(
                    matches!(&i.kind, InteractionKind::Permission { tool, patterns, always, .. }
                    if tool == "edit" && patterns == &vec!["src/lib.rs".to_string()] && always == patterns)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[11],
            AgentEvent::FilesTouched {
                paths: vec!["src/lib.rs".into()]
            }
        );
        match &out[14] {
            AgentEvent::Usage(u) => {
                assert_eq!(
                    (
                        u.input_tokens,
                        u.output_tokens,
                        u.reasoning_tokens,
                        u.cache_read
                    ),
                    (100, 20, 5, 7)
                );
                assert_eq!(u.cost_usd, Some(0.01));
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

    fn open_permission(n: &mut AcpNormalizer, options: &str) -> String {
        let out = run(
            n,
            &recs(&[
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":"p1","method":"session/prompt","params":{"sessionId":"sess_1","prompt":[]}}"#,
                ),
                (
                    ">",
                    &format!(
                        r#"{{"jsonrpc":"2.0","id":3,"method":"session/request_permission","params":{{"sessionId":"sess_1","toolCall":{{"toolCallId":"c","title":"Run rm -rf build","kind":"execute","rawInput":{{"command":"rm -rf build"}}}},"options":{options}}}}}"#
                    ),
                ),
            ]),
        );
        match out.last() {
            Some(AgentEvent::InteractionAsked(i)) => i.id.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn permission_answers_pick_options_and_a_bare_reject_halts() {
        let mut n = norm();
        let id = open_permission(
            &mut n,
            r#"[{"optionId":"y","name":"Yes","kind":"allow_once"},{"optionId":"n","name":"No","kind":"reject_once"}]"#,
        );
        let ask = &n.pending()[0];
        assert!(
            matches!(&ask.kind, InteractionKind::Permission { tool, patterns, always, .. }
            if tool == "bash" && patterns == &vec!["rm -rf build".to_string()] && always.is_empty())
        );
        // No allow_always offered: "always" falls back to once, and says so.
        let always = n
            .answer(
                &id,
                &Answer::Permission {
                    reply: PermissionReply::Always,
                    message: None,
                },
            )
            .expect("always");
        assert_eq!(always[0].message["result"]["outcome"]["optionId"], "y");
        assert_eq!(always[0].note, Some(json!({"outcome": {"kind": "once"}})));
        assert_eq!(always[0].message["id"], 3);
        let with_msg = n
            .answer(
                &id,
                &Answer::Permission {
                    reply: PermissionReply::Reject,
                    message: Some("no".into()),
                },
            )
            .expect("reject");
        assert_eq!(with_msg.len(), 1, "a reject with a message goes on");
        let bare = n
            .answer(
                &id,
                &Answer::Permission {
                    reply: PermissionReply::Reject,
                    message: None,
                },
            )
            .expect("reject");
        assert_eq!(bare.len(), 2);
        assert_eq!(bare[0].message["method"], "session/cancel");
        // Replaying the halt: the agent's cancelled stop counts as a completed turn.
        let tail: Vec<Record> = recs(&[
            (
                "<note",
                &format!(
                    "{} #note {}",
                    bare[0].message,
                    bare[0].note.clone().expect("note")
                ),
            ),
            (
                "<note",
                &format!(
                    "{} #note {}",
                    bare[1].message,
                    bare[1].note.clone().expect("note")
                ),
            ),
            (
                ">",
                r#"{"jsonrpc":"2.0","id":"p1","result":{"stopReason":"cancelled"}}"#,
            ),
        ])
        .into_iter()
        .map(|mut r| {
            r.seq += 10;
            r
        })
        .collect();
        let out = run(&mut n, &tail);
        assert_eq!(
            out,
            vec![
                AgentEvent::InteractionResolved {
                    id: id.clone(),
                    outcome: InteractionOutcome::Rejected
                },
                AgentEvent::Status {
                    state: crate::RunState::Idle,
                    message: None
                },
                AgentEvent::TurnEnded {
                    reason: TurnEndReason::Completed,
                    error: None
                },
            ]
        );
        assert!(n.answer("perm-99", &Answer::Dismiss).is_err());
    }

    #[test]
    fn abort_cancels_open_requests_and_the_turn() {
        let mut n = norm();
        let id = open_permission(
            &mut n,
            r#"[{"optionId":"y","name":"Yes","kind":"allow_once"}]"#,
        );
        let abort = n.abort();
        assert_eq!(abort.len(), 2);
        assert_eq!(
            abort[0].message,
            json!({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": SID}})
        );
        assert_eq!(
            abort[1].message["result"],
            json!({"outcome": {"outcome": "cancelled"}})
        );
        let tail: Vec<Record> = recs(&[
            ("<", &abort[0].message.to_string()),
            ("<", &abort[1].message.to_string()),
            (
                ">",
                r#"{"jsonrpc":"2.0","id":"p1","result":{"stopReason":"cancelled"}}"#,
            ),
        ])
        .into_iter()
        .map(|mut r| {
            r.seq += 10;
            r
        })
        .collect();
        let out = run(&mut n, &tail);
        assert_eq!(
            out[0],
            AgentEvent::InteractionResolved {
                id,
                outcome: InteractionOutcome::Cancelled
            }
        );
        assert_eq!(
            out.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Cancelled,
                error: None
            })
        );
        assert!(n.abort().is_empty());
    }

    #[test]
    fn form_elicitation_keeps_field_order_and_refuses_free_text_for_choices() {
        let mut n = norm();
        let out = run(
            &mut n,
            &recs(&[
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":"p1","method":"session/prompt","params":{"sessionId":"sess_1","prompt":[]}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":9,"method":"elicitation/create","params":{"sessionId":"sess_1","message":"Which database should I use?","mode":"form","requestedSchema":{"type":"object","properties":{"zdb":{"type":"string","title":"Database","description":"Which database should I use?","oneOf":[{"const":"Postgres","title":"Postgres","description":"The production choice"},{"const":"SQLite","title":"SQLite"}]},"afeatures":{"type":"array","description":"Which features?","items":{"enum":["auth","billing"]}},"name":{"type":"string","description":"Project name?"},"n":{"type":"integer","description":"How many?"}},"required":["zdb"]}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":10,"method":"fs/read_text_file","params":{"sessionId":"sess_1","path":"/etc/passwd"}}"#,
                ),
            ]),
        );
        let q = match out.last() {
            Some(AgentEvent::InteractionAsked(i)) => i.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(q.title, "Which database should I use?");
        let InteractionKind::Question { questions } = &q.kind else {
            panic!("{q:?}")
        };
        let texts: Vec<&str> = questions.iter().map(|q| q.question.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Which database should I use?",
                "Which features?",
                "Project name?",
                "How many?"
            ]
        );
        assert_eq!(questions[0].header.as_deref(), Some("Database"));
        assert_eq!(
            questions[0].options[0].description.as_deref(),
            Some("The production choice")
        );
        assert!(!questions[0].custom && !questions[0].multiple);
        assert!(questions[1].multiple && !questions[1].custom);
        assert!(questions[2].custom && questions[2].options.is_empty());
        let auto = n.take_auto_replies();
        assert_eq!(auto[0].message["error"]["code"], -32601);
        assert_eq!(auto[0].id, "auto-3");
        let ok = n
            .answer(
                &q.id,
                &Answer::Question {
                    answers: vec![
                        vec!["SQLite".into()],
                        vec!["auth".into(), "billing".into()],
                        vec!["shop".into()],
                        vec!["3".into()],
                    ],
                },
            )
            .expect("answer");
        assert_eq!(
            ok[0].message["result"],
            json!({"action": "accept", "content": {"zdb": "SQLite", "afeatures": ["auth", "billing"], "name": "shop", "n": 3.0}})
        );
        let free = n.answer(
            &q.id,
            &Answer::Question {
                answers: vec![vec!["MySQL".into()], vec![], vec![], vec![]],
            },
        );
        assert!(matches!(free, Err(RuntimeError::Protocol(m)) if m.contains("free text")));
        let dismiss = n.answer(&q.id, &Answer::Dismiss).expect("dismiss");
        assert_eq!(
            dismiss[0].note,
            Some(json!({"halt": true, "id": q.id, "outcome": {"kind": "dismissed"}}))
        );
        assert_eq!(dismiss[1].message["result"], json!({"action": "decline"}));
    }

    #[test]
    fn opencode_questions_keep_free_text_and_errors_end_the_turn() {
        let mut n = norm();
        let out = run(
            &mut n,
            &recs(&[
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":"p1","method":"session/prompt","params":{"sessionId":"sess_1","prompt":[]}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":4,"method":"opencode/question","params":{"requestId":"que_1","sessionId":"sess_1","questions":[{"question":"Go?","header":"Go","options":[{"label":"Yes","description":"do it"}]}]}}"#,
                ),
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":4,"result":{"answers":[["Maybe later"]]}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":"p1","error":{"code":-32603,"message":"model exploded"}}"#,
                ),
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":"p2","method":"session/prompt","params":{"sessionId":"sess_1","prompt":[]}}"#,
                ),
                ("!", "1"),
            ]),
        );
        let asked = out
            .iter()
            .find_map(|e| match e {
                AgentEvent::InteractionAsked(i) => Some(i.clone()),
                _ => None,
            })
            .expect("asked");
        assert!(
            matches!(&asked.kind, InteractionKind::Question { questions } if questions[0].custom)
        );
        assert!(out.contains(&AgentEvent::InteractionResolved {
            id: asked.id.clone(),
            outcome: InteractionOutcome::Answered {
                answers: vec![vec!["Maybe later".into()]]
            }
        }));
        let ends: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                AgentEvent::TurnEnded { reason, error } => Some((*reason, error.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            ends,
            vec![
                (TurnEndReason::Error, Some("model exploded".into())),
                (
                    TurnEndReason::Error,
                    Some("the agent exited with code 1".into())
                ),
            ]
        );
        assert_eq!(n.exited(), Some("the agent exited with code 1"));
    }

    /// Gemini CLI's own shape of a turn: the permission comes before any `tool_call`,
    /// the edit completes as a `tool_call_update`, and the tokens are in the prompt
    /// response's `_meta.quota`.
    #[test]
    fn a_gemini_turn_asks_before_the_tool_call_and_reports_quota_usage() {
        let mut n = norm();
        let out = run(
            &mut n,
            &recs(&[
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":"p1","method":"session/prompt","params":{"sessionId":"sess_1","prompt":[{"type":"text","text":"go"}]}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Writing it."}}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":0,"method":"session/request_permission","params":{"sessionId":"sess_1","options":[{"optionId":"proceed_always","name":"Allow for this session","kind":"allow_always"},{"optionId":"proceed_once","name":"Allow","kind":"allow_once"},{"optionId":"cancel","name":"Reject","kind":"reject_once"}],"toolCall":{"toolCallId":"write_file_1","status":"pending","title":"Writing to NOTES.md","content":[{"type":"diff","path":"/srv/proj/NOTES.md","oldText":"","newText":"hi\n","_meta":{"kind":"add"}}],"locations":[{"path":"/srv/proj/NOTES.md"}],"kind":"edit"}}}"#,
                ),
                (
                    "<",
                    r#"{"jsonrpc":"2.0","id":0,"result":{"outcome":{"outcome":"selected","optionId":"proceed_once"}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"sess_1","update":{"sessionUpdate":"tool_call_update","toolCallId":"write_file_1","status":"completed","title":"Writing to NOTES.md","content":[{"type":"diff","path":"/srv/proj/NOTES.md","oldText":"","newText":"hi\n"}],"locations":[{"path":"/srv/proj/NOTES.md"}],"kind":"edit"}}}"#,
                ),
                (
                    ">",
                    r#"{"jsonrpc":"2.0","id":"p1","result":{"stopReason":"end_turn","_meta":{"quota":{"token_count":{"input_tokens":200,"output_tokens":40},"model_usage":[{"model":"gemini-2.5-flash","token_count":{"input_tokens":200,"output_tokens":40}}]}}}}"#,
                ),
            ]),
        );
        let kinds: Vec<&str> = out.iter().map(AgentEvent::kind).collect();
        assert_eq!(
            kinds,
            vec![
                "status",
                "text",
                "text", // closed by the ask
                "interaction_asked",
                "interaction_resolved",
                "tool_call",
                "files_touched",
                "usage",
                "status",
                "turn_ended"
            ],
            "{out:#?}"
        );
        match &out[3] {
            AgentEvent::InteractionAsked(i) => {
                assert_eq!(i.title, "Writing to NOTES.md");
                assert!(
                    matches!(&i.kind, InteractionKind::Permission { tool, patterns, .. }
                    if tool == "edit" && patterns == &vec!["NOTES.md".to_string()])
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(out.contains(&AgentEvent::InteractionResolved {
            id: "perm-3".into(),
            outcome: InteractionOutcome::Once
        }));
        assert_eq!(
            out[6],
            AgentEvent::FilesTouched {
                paths: vec!["NOTES.md".into()]
            }
        );
        match &out[7] {
            AgentEvent::Usage(u) => {
                assert_eq!((u.input_tokens, u.output_tokens), (200, 40));
                assert_eq!(u.cost_usd, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_model_is_set_by_config_option_or_by_gemini_s_model_list() {
        let spec = SessionSpec {
            model: Some(crate::ModelRef {
                provider: "google".into(),
                model: "gemini-2.5-flash".into(),
            }),
            variant: Some("high".into()),
            ..SessionSpec::default()
        };
        // Gemini CLI: no config options, the unstable model list of bare ids.
        let gemini = json!({
            "sessionId": "s1",
            "modes": {"availableModes": [{"id": "default"}], "currentModeId": "default"},
            "models": {"availableModels": [{"modelId": "auto", "name": "Auto"},
                                           {"modelId": "gemini-2.5-flash", "name": "Flash"}],
                       "currentModelId": "auto"}
        });
        assert_eq!(
            setup_calls("s1", &gemini, &spec),
            vec![(
                "set-model".to_string(),
                "session/set_model",
                json!({"sessionId": "s1", "modelId": "gemini-2.5-flash"})
            )]
        );
        // A model Gemini does not list still goes by its bare id.
        let mut other = spec.clone();
        other.model.as_mut().unwrap().model = "gemini-9-ultra".into();
        assert_eq!(
            setup_calls("s1", &gemini, &other)[0].2,
            json!({"sessionId": "s1", "modelId": "gemini-9-ultra"})
        );
        // OpenCode: config options of `provider/model` values win over the model list.
        let opencode = json!({
            "sessionId": "s2",
            "models": {"availableModels": [{"modelId": "google/gemini-2.5-flash"}]},
            "configOptions": [
                {"id": "model", "category": "model",
                 "options": [{"value": "google/gemini-2.5-flash"}]},
                {"id": "effort", "category": "thought_level",
                 "options": [{"value": "high"}]}
            ]
        });
        assert_eq!(
            setup_calls("s2", &opencode, &spec),
            vec![
                (
                    "set-model".to_string(),
                    "session/set_config_option",
                    json!({"sessionId": "s2", "configId": "model", "value": "google/gemini-2.5-flash"})
                ),
                (
                    "set-thought_level".to_string(),
                    "session/set_config_option",
                    json!({"sessionId": "s2", "configId": "effort", "value": "high"})
                ),
            ]
        );
        // Neither: nothing is sent.
        assert!(setup_calls("s3", &json!({"sessionId": "s3"}), &spec).is_empty());
    }
}
