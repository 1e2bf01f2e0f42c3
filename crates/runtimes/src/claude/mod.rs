//! The Claude Code adapter: `claude -p` in stream-json mode with the stdio control
//! protocol, run under an [`atelier-stdio-host`](crate::stdio_host).
//!
//! Everything Claude-specific (flags, message shapes, tool names, the control protocol)
//! lives in this module. [`command`] builds the agent's command line:
//!
//! ```text
//! claude -p --verbose --output-format stream-json --input-format stream-json
//!        --include-partial-messages --permission-prompt-tool stdio
//!        [--model M] [--effort E] [--permission-mode plan] [--append-system-prompt S]
//! ```
//!
//! # Wire → events
//!
//! - A `{"type":"user"}` line the adapter writes starts a turn (`status: running`); a
//!   prompt written while a turn runs is queued by Claude and starts the next one.
//! - `stream_event` `content_block_delta` (`text_delta` / `thinking_delta`) → `text` /
//!   `reasoning` deltas; `assistant` lines carry the full blocks: `text`, `thinking`, and
//!   `tool_use` → `tool_call` (running). `TodoWrite` input → `todos` (Claude has no
//!   priorities and no cancelled status). Tool names are mapped to OpenCode's words
//!   (`Bash` → `bash`, `Edit` → `edit`, `AskUserQuestion` → `question`, …).
//! - `user` lines with `tool_result` blocks → the tool call completed or failed; a
//!   successful `Edit`/`Write`/`MultiEdit`/`NotebookEdit` → `files_touched`.
//! - `control_request` `can_use_tool` → `interaction_asked`: a question for
//!   `AskUserQuestion` (`multiSelect` → multiple; free text is always allowed, Claude
//!   offers "Other"), a permission otherwise (patterns: the command, the file, the
//!   pattern or URL). `control_cancel_request` → cancelled.
//! - `result` → `usage` and `turn_ended`. `total_cost_usd` and `modelUsage` are running
//!   totals of the Claude process, so each turn reports the difference to the previous
//!   result; an error subtype or `is_error` ends the turn with an error.
//! - `system` `api_retry` → `status: retry`. Other control requests from Claude (hook
//!   callbacks, MCP messages) are answered with an error: no hooks are registered.
//!
//! # Answers
//!
//! `control_response` with `behavior: allow` and `updatedInput` (the questions' answers
//! go into `updatedInput.answers` as `{question: "label, label"}`), `updatedPermissions`
//! for "always" (Claude's own suggestions, else a session rule for the tool and
//! pattern); `behavior: deny` with the message — without a message (and for a dismissed
//! question) also `interrupt: true`, which halts the turn like OpenCode does. Abort is the
//! control request `interrupt`, and every open ask is denied.

pub mod profile;

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::event::{
    AgentEvent, Answer, Interaction, InteractionKind, InteractionOutcome, PermissionReply,
    Question, QuestionOption, RunState, TodoItem, TodoStatus, ToolStatus, TurnEndReason, Usage,
};
use crate::stdio::{
    noted_outcome, outcome_note, outcome_of, str_at, Dialect, StdioRuntime, Turns, WireNormalizer,
};
use crate::stdio_host::{random_id, HostClient, Input, Record, RecordBody, StdioConfig};
use crate::{Result, RuntimeError, Session, SessionSpec};

/// The npm package of Claude Code (the CLI is `claude`).
pub const CLAUDE_PACKAGE: &str = "@anthropic-ai/claude-code";

/// The `claude` command line for a session with `spec`.
pub fn command(binary: &str, spec: &SessionSpec) -> Vec<String> {
    let mut argv: Vec<String> = [
        binary,
        "-p",
        "--verbose",
        "--output-format",
        "stream-json",
        "--input-format",
        "stream-json",
        "--include-partial-messages",
        "--permission-prompt-tool",
        "stdio",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(m) = &spec.model {
        argv.extend(["--model".into(), m.model.clone()]);
    }
    if let Some(v) = &spec.variant {
        argv.extend(["--effort".into(), v.clone()]);
    }
    match spec.agent.as_deref() {
        None | Some("build") => {}
        Some("plan") => argv.extend(["--permission-mode".into(), "plan".into()]),
        Some(other) => argv.extend(["--agent".into(), other.to_string()]),
    }
    if let Some(s) = &spec.system {
        argv.extend(["--append-system-prompt".into(), s.clone()]);
    }
    argv
}

/// A runtime for Claude Code behind the stdio host at `cfg.base_url`.
pub fn runtime(cfg: StdioConfig) -> Result<StdioRuntime> {
    StdioRuntime::with_dialect(cfg, std::sync::Arc::new(ClaudeDialect))
}

struct ClaudeDialect;

#[async_trait::async_trait]
impl Dialect for ClaudeDialect {
    fn kind(&self) -> &'static str {
        "claude"
    }

    fn normalizer(&self, session: &Session) -> Box<dyn WireNormalizer> {
        Box::new(ClaudeNormalizer::new(&session.spec.directory))
    }

    /// One Claude process is one conversation: the session is the host's transcript.
    /// The control protocol's `initialize` (once per Claude process) checks that it
    /// speaks stream-json.
    async fn start_session(&self, host: &HostClient, spec: &SessionSpec) -> Result<Session> {
        let st = host.status().await?;
        if !st.running() {
            return Err(RuntimeError::Disconnected(
                "the agent is not running".into(),
            ));
        }
        let rid = format!("initialize-{}", st.started_seq);
        let input = Input {
            id: rid.clone(),
            message: json!({
                "type": "control_request",
                "request_id": rid,
                "request": {"subtype": "initialize", "hooks": null}
            }),
            note: None,
        };
        let timeout = host.config().handshake_timeout;
        host.exchange(&input, timeout, |rec| {
            let v = out_json(rec)?;
            (str_at(&v, "/type") == Some("control_response")
                && str_at(&v, "/response/request_id") == Some(rid.as_str()))
            .then(|| match str_at(&v, "/response/subtype") {
                Some("error") => Err(RuntimeError::Protocol(format!(
                    "Claude refused initialize: {}",
                    str_at(&v, "/response/error").unwrap_or("no reason")
                ))),
                _ => Ok(()),
            })
        })
        .await??;
        Ok(Session {
            id: st.transcript_id,
            spec: spec.clone(),
        })
    }

    async fn attach_session(
        &self,
        host: &HostClient,
        id: &str,
        spec: &SessionSpec,
    ) -> Result<Session> {
        let st = host.status().await?;
        if st.transcript_id != id {
            return Err(RuntimeError::NotFound(format!(
                "session {id} (the host runs {})",
                st.transcript_id
            )));
        }
        Ok(Session {
            id: id.to_string(),
            spec: spec.clone(),
        })
    }

    fn prompt(&self, _session: &Session, text: &str) -> Input {
        Input {
            id: format!("prompt-{}", random_id()),
            message: json!({"type": "user", "message": {"role": "user", "content": text}}),
            note: None,
        }
    }
}

fn out_json(rec: &Record) -> Option<Value> {
    match &rec.body {
        RecordBody::Out { .. } => rec.json(),
        _ => None,
    }
}

/// Claude's tool names in OpenCode's words (unknown tools keep their name).
pub fn tool_name(wire: &str) -> String {
    match wire {
        "Bash" => "bash",
        "Edit" => "edit",
        "Write" => "write",
        "MultiEdit" => "multiedit",
        "NotebookEdit" => "notebookedit",
        "Read" => "read",
        "Glob" => "glob",
        "Grep" => "grep",
        "LS" => "list",
        "TodoWrite" => "todowrite",
        "AskUserQuestion" => "question",
        "WebFetch" => "webfetch",
        "WebSearch" => "websearch",
        "Task" => "task",
        "ExitPlanMode" => "plan_exit",
        other => return other.to_string(),
    }
    .to_string()
}

const EDIT_TOOLS: &[&str] = &["Edit", "Write", "MultiEdit", "NotebookEdit"];

/// Running totals of one Claude process, from its last `result`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Totals {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cost: f64,
}

/// Claude stream-json transcript → normalized events.
#[derive(Debug)]
pub struct ClaudeNormalizer {
    turns: Turns,
    /// Prompts written while a turn ran (Claude runs them one after the other).
    queued: u32,
    /// Tool calls by id: wire name and input.
    tools: HashMap<String, (String, Value)>,
    /// Open `can_use_tool` requests by request id.
    requests: HashMap<String, Value>,
    /// Content blocks seen per assistant message (their index in the message).
    blocks: HashMap<String, usize>,
    /// The message being streamed (`stream_event`), and its blocks' kinds by index.
    stream_message: Option<String>,
    stream_reasoning: HashSet<u64>,
    totals: Totals,
    auto: Vec<Input>,
}

impl ClaudeNormalizer {
    pub fn new(directory: &std::path::Path) -> ClaudeNormalizer {
        ClaudeNormalizer {
            turns: Turns::new(directory),
            queued: 0,
            tools: HashMap::new(),
            requests: HashMap::new(),
            blocks: HashMap::new(),
            stream_message: None,
            stream_reasoning: HashSet::new(),
            totals: Totals::default(),
            auto: Vec::new(),
        }
    }

    fn input_line(&mut self, v: &Value, note: Option<&Value>) -> Vec<AgentEvent> {
        match str_at(v, "/type") {
            Some("user") => {
                if self.turns.busy {
                    self.queued += 1;
                    Vec::new()
                } else {
                    self.turns.start()
                }
            }
            Some("control_request") => {
                if str_at(v, "/request/subtype") == Some("interrupt") && self.turns.busy {
                    self.turns.abort_requested = true;
                }
                Vec::new()
            }
            Some("control_response") => {
                let Some(rid) = str_at(v, "/response/request_id") else {
                    return Vec::new();
                };
                let Some(request) = self.requests.remove(rid) else {
                    return Vec::new();
                };
                let is_question = str_at(&request, "/tool_name") == Some("AskUserQuestion");
                let behavior = str_at(v, "/response/response/behavior").unwrap_or("deny");
                let outcome =
                    noted_outcome(note).unwrap_or_else(|| match (behavior, is_question) {
                        ("allow", true) => InteractionOutcome::Answered {
                            answers: answers_from_input(
                                &request,
                                v.pointer("/response/response/updatedInput"),
                            ),
                        },
                        ("allow", false) => {
                            let always = v
                                .pointer("/response/response/updatedPermissions")
                                .and_then(Value::as_array)
                                .is_some_and(|a| !a.is_empty());
                            if always {
                                InteractionOutcome::Always
                            } else {
                                InteractionOutcome::Once
                            }
                        }
                        (_, true) => InteractionOutcome::Dismissed,
                        (_, false) => InteractionOutcome::Rejected,
                    });
                let interrupts = v
                    .pointer("/response/response/interrupt")
                    .and_then(Value::as_bool)
                    == Some(true);
                if behavior == "deny"
                    && interrupts
                    && outcome != InteractionOutcome::Cancelled
                    && self.turns.busy
                {
                    self.turns.halted = true;
                }
                let rid = rid.to_string();
                self.turns.resolve(&rid, outcome)
            }
            _ => Vec::new(),
        }
    }

    fn output_line(&mut self, v: &Value) -> Vec<AgentEvent> {
        let kind = str_at(v, "/type").unwrap_or("");
        match kind {
            "system" => match str_at(v, "/subtype") {
                Some("api_retry") => vec![AgentEvent::Status {
                    state: RunState::Retry,
                    message: str_at(v, "/error")
                        .or_else(|| str_at(v, "/message"))
                        .map(str::to_string),
                }],
                // init (once per turn), session_state_changed, status, hooks, tasks,
                // compaction…: informational.
                _ => Vec::new(),
            },
            "stream_event" => self.stream_event(v.get("event").unwrap_or(&Value::Null)),
            "assistant" => self.assistant(v),
            "user" => self.tool_results(v),
            "control_request" => self.control_request(v),
            "control_cancel_request" => match str_at(v, "/request_id") {
                Some(rid) => {
                    let rid = rid.to_string();
                    self.requests.remove(&rid);
                    self.turns.resolve(&rid, InteractionOutcome::Cancelled)
                }
                None => Vec::new(),
            },
            "control_response" | "keep_alive" | "rate_limit_event" => Vec::new(),
            "result" => self.result(v),
            _ => vec![AgentEvent::Raw {
                kind: if kind.is_empty() { "claude" } else { kind }.to_string(),
                value: v.clone(),
            }],
        }
    }

    fn stream_event(&mut self, e: &Value) -> Vec<AgentEvent> {
        match str_at(e, "/type") {
            Some("message_start") => {
                self.stream_message = str_at(e, "/message/id").map(str::to_string);
                self.stream_reasoning.clear();
                Vec::new()
            }
            Some("content_block_start") => {
                if str_at(e, "/content_block/type") == Some("thinking") {
                    if let Some(i) = e.get("index").and_then(Value::as_u64) {
                        self.stream_reasoning.insert(i);
                    }
                }
                Vec::new()
            }
            Some("content_block_delta") => {
                let (Some(mid), Some(index)) = (
                    self.stream_message.clone(),
                    e.get("index").and_then(Value::as_u64),
                ) else {
                    return Vec::new();
                };
                let part_id = format!("{mid}:{index}");
                match str_at(e, "/delta/type") {
                    Some("text_delta") => vec![AgentEvent::Text {
                        message_id: mid,
                        part_id,
                        delta: str_at(e, "/delta/text").map(str::to_string),
                        text: None,
                    }],
                    Some("thinking_delta") => vec![AgentEvent::Reasoning {
                        message_id: mid,
                        part_id,
                        delta: str_at(e, "/delta/thinking").map(str::to_string),
                        text: None,
                    }],
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn assistant(&mut self, v: &Value) -> Vec<AgentEvent> {
        let mid = str_at(v, "/message/id").unwrap_or("").to_string();
        let mut out = Vec::new();
        for block in v
            .pointer("/message/content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let n = self.blocks.entry(mid.clone()).or_insert(0);
            let part_id = format!("{mid}:{n}");
            *n += 1;
            match str_at(block, "/type") {
                Some("text") => {
                    let text = str_at(block, "/text").unwrap_or("");
                    if !text.is_empty() {
                        out.push(AgentEvent::Text {
                            message_id: mid.clone(),
                            part_id,
                            delta: None,
                            text: Some(text.to_string()),
                        });
                    }
                }
                Some("thinking") => {
                    let text = str_at(block, "/thinking").unwrap_or("");
                    if !text.is_empty() {
                        out.push(AgentEvent::Reasoning {
                            message_id: mid.clone(),
                            part_id,
                            delta: None,
                            text: Some(text.to_string()),
                        });
                    }
                }
                Some("tool_use") => {
                    let (Some(id), Some(name)) = (str_at(block, "/id"), str_at(block, "/name"))
                    else {
                        continue;
                    };
                    let input = block.get("input").cloned().unwrap_or(Value::Null);
                    self.tools
                        .insert(id.to_string(), (name.to_string(), input.clone()));
                    out.push(AgentEvent::ToolCall {
                        id: id.to_string(),
                        name: tool_name(name),
                        status: ToolStatus::Running,
                        title: str_at(&input, "/description").map(str::to_string),
                        input: Some(input.clone()),
                        output: None,
                        error: None,
                    });
                    if name == "TodoWrite" {
                        out.extend(self.turns.todos(parse_todos(input.get("todos"))));
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn tool_results(&mut self, v: &Value) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        for block in v
            .pointer("/message/content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|b| str_at(b, "/type") == Some("tool_result"))
        {
            let Some(id) = str_at(block, "/tool_use_id") else {
                continue;
            };
            let (wire, input) = self
                .tools
                .get(id)
                .cloned()
                .unwrap_or_else(|| ("unknown".to_string(), Value::Null));
            let text = content_text(block.get("content"));
            let failed = block.get("is_error").and_then(Value::as_bool) == Some(true);
            out.push(AgentEvent::ToolCall {
                id: id.to_string(),
                name: tool_name(&wire),
                status: if failed {
                    ToolStatus::Failed
                } else {
                    ToolStatus::Completed
                },
                title: str_at(&input, "/description").map(str::to_string),
                input: Some(input.clone()),
                output: (!failed).then(|| text.clone()),
                error: failed.then_some(text),
            });
            if !failed && EDIT_TOOLS.contains(&wire.as_str()) {
                let path =
                    str_at(&input, "/file_path").or_else(|| str_at(&input, "/notebook_path"));
                out.extend(self.turns.files(path.map(str::to_string)));
            }
        }
        out
    }

    fn control_request(&mut self, v: &Value) -> Vec<AgentEvent> {
        let Some(rid) = str_at(v, "/request_id") else {
            return Vec::new();
        };
        let request = v.get("request").cloned().unwrap_or(Value::Null);
        match str_at(&request, "/subtype") {
            Some("can_use_tool") => {
                let interaction = self.interaction(rid, &request);
                self.requests.insert(rid.to_string(), request);
                self.turns.asked(interaction)
            }
            other => {
                // Hook callbacks, MCP messages…: we register none, so say so rather
                // than leave Claude waiting.
                self.auto.push(Input {
                    id: format!("auto-{rid}"),
                    message: json!({
                        "type": "control_response",
                        "response": {
                            "subtype": "error",
                            "request_id": rid,
                            "error": format!("unsupported control request {:?}", other.unwrap_or("")),
                        }
                    }),
                    note: None,
                });
                Vec::new()
            }
        }
    }

    fn interaction(&self, rid: &str, request: &Value) -> Interaction {
        let wire = str_at(request, "/tool_name").unwrap_or("unknown");
        let null = Value::Null;
        let input = request.get("input").unwrap_or(&null);
        let call_id = str_at(request, "/tool_use_id").map(str::to_string);
        if wire == "AskUserQuestion" {
            let questions: Vec<Question> = input
                .get("questions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|q| Question {
                    question: str_at(q, "/question").unwrap_or("").to_string(),
                    header: str_at(q, "/header").map(str::to_string),
                    options: q
                        .get("options")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|o| QuestionOption {
                            label: str_at(o, "/label").unwrap_or("").to_string(),
                            description: str_at(o, "/description")
                                .filter(|d| !d.is_empty())
                                .map(str::to_string),
                        })
                        .collect(),
                    multiple: q.get("multiSelect").and_then(Value::as_bool) == Some(true),
                    custom: true,
                    secret: false,
                })
                .collect();
            return Interaction {
                id: rid.to_string(),
                title: questions
                    .first()
                    .map(|q| q.question.clone())
                    .unwrap_or_else(|| "Claude has a question".into()),
                call_id,
                kind: InteractionKind::Question { questions },
            };
        }
        let patterns: Vec<String> = match wire {
            "Bash" => str_at(input, "/command")
                .map(str::to_string)
                .into_iter()
                .collect(),
            "Edit" | "Write" | "MultiEdit" | "Read" | "NotebookEdit" => str_at(input, "/file_path")
                .or_else(|| str_at(input, "/notebook_path"))
                .map(|p| self.turns.rel_path(p))
                .into_iter()
                .collect(),
            "Glob" | "Grep" => str_at(input, "/pattern")
                .map(str::to_string)
                .into_iter()
                .collect(),
            "WebFetch" => str_at(input, "/url")
                .map(str::to_string)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        let title = str_at(request, "/title")
            .or_else(|| str_at(input, "/description"))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{wire} {}", patterns.join(" ")).trim().to_string());
        Interaction {
            id: rid.to_string(),
            title,
            call_id,
            kind: InteractionKind::Permission {
                tool: tool_name(wire),
                always: patterns.clone(),
                patterns,
                detail: request.clone(),
            },
        }
    }

    fn result(&mut self, v: &Value) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        let model_usage = v
            .get("modelUsage")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty());
        let cost_total = v.get("total_cost_usd").and_then(Value::as_f64);
        let num = |m: &Value, keys: &[&str]| -> u64 {
            keys.iter()
                .find_map(|k| m.get(*k).and_then(Value::as_u64))
                .unwrap_or(0)
        };
        let usage = if let Some(models) = model_usage {
            // Running totals of the process: report the difference.
            let mut now = Totals::default();
            for m in models.values() {
                now.input += num(m, &["inputTokens", "input_tokens"]);
                now.output += num(m, &["outputTokens", "output_tokens"]);
                now.cache_read += num(m, &["cacheReadInputTokens", "cache_read_input_tokens"]);
                now.cache_write += num(
                    m,
                    &["cacheCreationInputTokens", "cache_creation_input_tokens"],
                );
            }
            now.cost = cost_total.unwrap_or(self.totals.cost);
            let prev = self.totals;
            self.totals = now;
            Usage {
                message_id: None,
                input_tokens: now.input.saturating_sub(prev.input),
                output_tokens: now.output.saturating_sub(prev.output),
                reasoning_tokens: 0,
                cache_read: now.cache_read.saturating_sub(prev.cache_read),
                cache_write: now.cache_write.saturating_sub(prev.cache_write),
                cost_usd: cost_total.map(|c| (c - prev.cost).max(0.0)),
            }
        } else {
            let u = v.get("usage").unwrap_or(&Value::Null);
            let prev_cost = self.totals.cost;
            if let Some(c) = cost_total {
                self.totals.cost = c;
            }
            Usage {
                message_id: None,
                input_tokens: num(u, &["input_tokens"]),
                output_tokens: num(u, &["output_tokens"]),
                reasoning_tokens: 0,
                cache_read: num(u, &["cache_read_input_tokens"]),
                cache_write: num(u, &["cache_creation_input_tokens"]),
                cost_usd: cost_total.map(|c| (c - prev_cost).max(0.0)),
            }
        };
        let any = usage.input_tokens + usage.output_tokens + usage.cache_read + usage.cache_write
            > 0
            || usage.cost_usd.unwrap_or(0.0) > 0.0;
        if any && self.turns.busy {
            out.push(AgentEvent::Usage(Usage {
                message_id: Some(
                    str_at(v, "/uuid")
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("turn-{}", self.turns.turn)),
                ),
                ..usage
            }));
        }
        let subtype = str_at(v, "/subtype").unwrap_or("success");
        let failed =
            subtype != "success" || v.get("is_error").and_then(Value::as_bool) == Some(true);
        if failed {
            let errors: Vec<&str> = v
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let msg = if !errors.is_empty() {
                errors.join("; ")
            } else {
                str_at(v, "/result")
                    .filter(|r| !r.is_empty())
                    .unwrap_or(subtype)
                    .to_string()
            };
            out.extend(self.turns.end(TurnEndReason::Error, Some(msg)));
        } else {
            out.extend(self.turns.end(TurnEndReason::Completed, None));
        }
        self.requests.clear();
        if self.queued > 0 {
            self.queued -= 1;
            out.extend(self.turns.start());
        }
        out
    }
}

impl WireNormalizer for ClaudeNormalizer {
    fn push(&mut self, rec: &Record) -> Vec<AgentEvent> {
        match &rec.body {
            RecordBody::Start { .. } => {
                self.totals = Totals::default();
                self.queued = 0;
                self.requests.clear();
                self.turns.agent_started()
            }
            RecordBody::Exit { .. } => {
                self.requests.clear();
                self.queued = 0;
                let msg = rec
                    .exit_message()
                    .unwrap_or_else(|| "the agent exited".into());
                self.turns.agent_gone(&msg)
            }
            RecordBody::In { line, note, .. } => match serde_json::from_str::<Value>(line) {
                Ok(v) => self.input_line(&v, note.as_ref()),
                Err(_) => Vec::new(),
            },
            RecordBody::Out { line } => match serde_json::from_str::<Value>(line) {
                Ok(v) => self.output_line(&v),
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
        let (Some(request), Some(_)) = (self.requests.get(id), self.turns.interaction(id)) else {
            return Err(RuntimeError::NotFound(format!("interaction {id}")));
        };
        let is_question = str_at(request, "/tool_name") == Some("AskUserQuestion");
        let input = request.get("input").cloned().unwrap_or_else(|| json!({}));
        let deny = |message: &str, interrupt: bool| {
            let mut r = json!({"behavior": "deny", "message": message});
            if interrupt {
                r["interrupt"] = json!(true);
            }
            r
        };
        let response = match (answer, is_question) {
            (Answer::Permission { reply, message }, false) => match reply {
                PermissionReply::Once => json!({"behavior": "allow", "updatedInput": input}),
                PermissionReply::Always => json!({
                    "behavior": "allow",
                    "updatedInput": input,
                    "updatedPermissions": always_rules(request),
                }),
                PermissionReply::Reject => match message {
                    Some(m) => deny(m, false),
                    None => deny("The user denied this action.", true),
                },
            },
            (Answer::Question { answers }, true) => {
                let questions = input
                    .get("questions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if answers.len() != questions.len() {
                    return Err(RuntimeError::Protocol(format!(
                        "{} answers for {} questions",
                        answers.len(),
                        questions.len()
                    )));
                }
                let mut map = serde_json::Map::new();
                for (q, a) in questions.iter().zip(answers) {
                    let text = str_at(q, "/question").unwrap_or("").to_string();
                    map.insert(text, json!(a.join(", ")));
                }
                let mut updated = input.clone();
                updated["answers"] = Value::Object(map);
                json!({"behavior": "allow", "updatedInput": updated})
            }
            (Answer::Dismiss, true) => deny("The user dismissed this question", true),
            (Answer::Dismiss, false) => deny("The user denied this action.", true),
            (Answer::Question { .. }, false) => {
                return Err(RuntimeError::Protocol(format!(
                    "{id} is a permission request, not a question"
                )))
            }
            (Answer::Permission { .. }, true) => {
                return Err(RuntimeError::Protocol(format!(
                    "{id} is a question, not a permission request"
                )))
            }
        };
        Ok(vec![Input {
            id: format!("answer-{id}"),
            message: json!({
                "type": "control_response",
                "response": {"subtype": "success", "request_id": id, "response": response}
            }),
            note: Some(outcome_note(&outcome_of(answer, is_question))),
        }])
    }

    fn abort(&self) -> Vec<Input> {
        if !self.turns.busy {
            return Vec::new();
        }
        let rid = format!("interrupt-{}", self.turns.turn);
        let mut out = vec![Input {
            id: rid.clone(),
            message: json!({"type": "control_request", "request_id": rid, "request": {"subtype": "interrupt"}}),
            note: None,
        }];
        for i in self.turns.open() {
            out.push(Input {
                id: format!("answer-{}", i.id),
                message: json!({
                    "type": "control_response",
                    "response": {
                        "subtype": "success",
                        "request_id": i.id,
                        "response": {"behavior": "deny", "message": "The turn was cancelled.", "interrupt": true}
                    }
                }),
                note: Some(outcome_note(&InteractionOutcome::Cancelled)),
            });
        }
        out
    }

    fn take_auto_replies(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.auto)
    }

    fn connection_lost(&mut self, message: &str) -> Vec<AgentEvent> {
        self.turns.connection_lost(message)
    }

    fn exited(&self) -> Option<&str> {
        self.turns.exited()
    }
}

/// The permission updates an "always" answer sends: Claude's own suggestions, else a
/// session rule for the tool (and its command or path).
fn always_rules(request: &Value) -> Value {
    if let Some(s) = request
        .get("permission_suggestions")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    {
        return Value::Array(s.clone());
    }
    let tool = str_at(request, "/tool_name").unwrap_or("");
    let mut rule = json!({"toolName": tool});
    let content = str_at(request, "/input/command").or_else(|| str_at(request, "/input/file_path"));
    if let Some(c) = content {
        rule["ruleContent"] = json!(c);
    }
    json!([{"type": "addRules", "rules": [rule], "behavior": "allow", "destination": "session"}])
}

/// Answers of an `updatedInput.answers` map, in question order (labels split at ", ").
fn answers_from_input(request: &Value, updated: Option<&Value>) -> Vec<Vec<String>> {
    let map = updated.and_then(|u| u.get("answers"));
    request
        .pointer("/input/questions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|q| {
            let text = str_at(q, "/question").unwrap_or("");
            map.and_then(|m| m.get(text))
                .and_then(Value::as_str)
                .map(|a| a.split(", ").map(str::to_string).collect())
                .unwrap_or_default()
        })
        .collect()
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| str_at(i, "/text"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn parse_todos(v: Option<&Value>) -> Vec<TodoItem> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(TodoItem {
                content: str_at(t, "/content")?.to_string(),
                status: TodoStatus::parse_lenient(str_at(t, "/status").unwrap_or("pending")),
                priority: str_at(t, "/priority").map(str::to_string),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelRef;
    use std::path::Path;

    /// A hand-written transcript in Claude's shapes: `<` lines are written by the
    /// adapter, `>` lines by Claude, `!` is an exit with that code.
    fn transcript(text: &str) -> Vec<Record> {
        let mut out = vec![Record {
            seq: 1,
            t: 0,
            body: RecordBody::Start {
                transcript_id: "tr".into(),
                pid: Some(1),
                argv: vec![],
            },
        }];
        for (i, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let (dir, rest) = line.split_at(1);
            let rest = rest.trim().to_string();
            let body = match dir {
                "<" => {
                    let (note, line) = match rest.split_once(" #note ") {
                        Some((l, n)) => {
                            (Some(serde_json::from_str(n).expect("note")), l.to_string())
                        }
                        None => (None, rest),
                    };
                    RecordBody::In {
                        id: format!("in{i}"),
                        line,
                        note,
                    }
                }
                ">" => RecordBody::Out { line: rest },
                "!" => RecordBody::Exit {
                    code: rest.parse().ok(),
                    signal: None,
                    error: None,
                    stderr_tail: vec!["boom".into()],
                },
                other => panic!("bad fixture line {other}"),
            };
            out.push(Record {
                seq: i as u64 + 2,
                t: 0,
                body,
            });
        }
        out
    }

    fn run(n: &mut ClaudeNormalizer, recs: &[Record]) -> Vec<AgentEvent> {
        recs.iter().flat_map(|r| n.push(r)).collect()
    }

    fn norm() -> ClaudeNormalizer {
        ClaudeNormalizer::new(Path::new("/srv/proj"))
    }

    const TURN: &str = r#"
< {"type":"user","message":{"role":"user","content":"add a test"}}
> {"type":"system","subtype":"init","cwd":"/srv/proj","session_id":"s1","tools":["Bash","Edit"],"model":"claude-sonnet-4-5","permissionMode":"default"}
> {"type":"stream_event","event":{"type":"message_start","message":{"id":"msg_1","role":"assistant"}}}
> {"type":"stream_event","event":{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}}
> {"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}}}
> {"type":"assistant","message":{"id":"msg_1","role":"assistant","content":[{"type":"thinking","thinking":"Let me see"}]},"session_id":"s1"}
> {"type":"stream_event","event":{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"I will "}}}
> {"type":"stream_event","event":{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"edit it."}}}
> {"type":"assistant","message":{"id":"msg_1","role":"assistant","content":[{"type":"text","text":"I will edit it."}]},"session_id":"s1"}
> {"type":"assistant","message":{"id":"msg_1","role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"TodoWrite","input":{"todos":[{"content":"Write test","status":"in_progress","activeForm":"Writing test"},{"content":"Run it","status":"pending","activeForm":"Running it"}]}}]},"session_id":"s1"}
> {"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"Todos have been modified successfully"}]},"session_id":"s1"}
> {"type":"assistant","message":{"id":"msg_2","role":"assistant","content":[{"type":"tool_use","id":"toolu_2","name":"Edit","input":{"file_path":"/srv/proj/src/lib.rs","old_string":"a","new_string":"b"}}]},"session_id":"s1"}
> {"type":"control_request","request_id":"req_1","request":{"subtype":"can_use_tool","tool_name":"Edit","input":{"file_path":"/srv/proj/src/lib.rs","old_string":"a","new_string":"b"},"tool_use_id":"toolu_2","permission_suggestions":[{"type":"setMode","mode":"acceptEdits","destination":"session"}]}}
< {"type":"control_response","response":{"subtype":"success","request_id":"req_1","response":{"behavior":"allow","updatedInput":{"file_path":"/srv/proj/src/lib.rs"},"updatedPermissions":[{"type":"setMode","mode":"acceptEdits","destination":"session"}]}}}
> {"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"The file was updated"}]}]},"session_id":"s1"}
> {"type":"system","subtype":"api_retry","attempt":1,"error":"overloaded"}
> {"type":"result","subtype":"success","is_error":false,"num_turns":3,"result":"Done.","session_id":"s1","total_cost_usd":0.02,"usage":{"input_tokens":5,"output_tokens":7},"modelUsage":{"claude-sonnet-4-5":{"inputTokens":100,"outputTokens":20,"cacheReadInputTokens":30,"cacheCreationInputTokens":4,"costUSD":0.02}},"uuid":"res_1"}
"#;

    #[test]
    fn a_full_turn_maps_every_message_kind() {
        let mut n = norm();
        let out = run(&mut n, &transcript(TURN));
        let kinds: Vec<&str> = out.iter().map(AgentEvent::kind).collect();
        assert_eq!(
            kinds,
            vec![
                "status",    // running
                "reasoning", // delta
                "reasoning", // full
                "text",      // delta
                "text",      // delta
                "text",      // full
                "tool_call", // TodoWrite
                "todos",
                "tool_call", // TodoWrite done
                "tool_call", // Edit running
                "interaction_asked",
                "interaction_resolved",
                "tool_call", // Edit done
                "files_touched",
                "status", // retry
                "usage",
                "status", // idle
                "turn_ended",
            ],
            "{out:#?}"
        );
        // Deltas and full text share the part id.
        assert!(matches!(&out[3], AgentEvent::Text { part_id, .. } if part_id == "msg_1:1"));
        assert!(
            matches!(&out[5], AgentEvent::Text { part_id, text: Some(t), .. } if part_id == "msg_1:1" && t == "I will edit it.")
        );
        match &out[7] {
            AgentEvent::Todos { items } => {
                assert_eq!(items.len(), 2);
                assert_eq!(items[0].status, TodoStatus::InProgress);
                assert_eq!(items[0].priority, None);
            }
            other => panic!("{other:?}"),
        }
        match &out[10] {
            AgentEvent::InteractionAsked(i) => {
                assert_eq!(i.id, "req_1");
                assert_eq!(i.title, "Edit src/lib.rs");
                assert_eq!(i.call_id.as_deref(), Some("toolu_2"));
                assert!(
                    matches!(&i.kind, InteractionKind::Permission { tool, patterns, .. }
                    if tool == "edit" && patterns == &vec!["src/lib.rs".to_string()])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            out[11],
            AgentEvent::InteractionResolved {
                id: "req_1".into(),
                outcome: InteractionOutcome::Always
            }
        );
        assert_eq!(
            out[13],
            AgentEvent::FilesTouched {
                paths: vec!["src/lib.rs".into()]
            }
        );
        match &out[15] {
            AgentEvent::Usage(u) => {
                assert_eq!(
                    (u.input_tokens, u.output_tokens, u.cache_read, u.cache_write),
                    (100, 20, 30, 4)
                );
                assert_eq!(u.cost_usd, Some(0.02));
                assert_eq!(u.message_id.as_deref(), Some("res_1"));
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
        assert!(n.pending().is_empty());
    }

    #[test]
    fn the_second_turn_reports_only_its_own_usage() {
        let mut n = norm();
        run(&mut n, &transcript(TURN));
        let second = r#"
< {"type":"user","message":{"role":"user","content":"more"}}
> {"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.05,"modelUsage":{"claude-sonnet-4-5":{"inputTokens":150,"outputTokens":30,"cacheReadInputTokens":30,"cacheCreationInputTokens":4},"claude-haiku":{"inputTokens":10,"outputTokens":1}}}
"#;
        let recs: Vec<Record> = transcript(second).into_iter().skip(1).collect();
        let out = run(&mut n, &recs);
        let u = out
            .iter()
            .find_map(|e| match e {
                AgentEvent::Usage(u) => Some(u.clone()),
                _ => None,
            })
            .expect("usage");
        assert_eq!((u.input_tokens, u.output_tokens, u.cache_read), (60, 11, 0));
        assert!((u.cost_usd.expect("cost") - 0.03).abs() < 1e-9);
        assert_eq!(u.message_id.as_deref(), Some("turn-2"));
    }

    #[test]
    fn questions_answers_and_a_dismiss_that_halts() {
        let mut n = norm();
        let recs = transcript(
            r#"
< {"type":"user","message":{"role":"user","content":"pick"}}
> {"type":"assistant","message":{"id":"m","content":[{"type":"tool_use","id":"toolu_q","name":"AskUserQuestion","input":{"questions":[{"question":"Which DB?","header":"DB","options":[{"label":"Postgres","description":"prod"},{"label":"SQLite","description":""}],"multiSelect":false},{"question":"Features?","header":"F","options":[{"label":"a","description":""},{"label":"b","description":""}],"multiSelect":true}]}}]}}
> {"type":"control_request","request_id":"req_q","request":{"subtype":"can_use_tool","tool_name":"AskUserQuestion","input":{"questions":[{"question":"Which DB?","header":"DB","options":[{"label":"Postgres","description":"prod"},{"label":"SQLite","description":""}],"multiSelect":false},{"question":"Features?","header":"F","options":[{"label":"a","description":""},{"label":"b","description":""}],"multiSelect":true}]},"tool_use_id":"toolu_q"}}
"#,
        );
        let out = run(&mut n, &recs);
        let asked = out
            .iter()
            .find_map(|e| match e {
                AgentEvent::InteractionAsked(i) => Some(i.clone()),
                _ => None,
            })
            .expect("asked");
        assert_eq!(asked.title, "Which DB?");
        match &asked.kind {
            InteractionKind::Question { questions } => {
                assert_eq!(questions.len(), 2);
                assert_eq!(questions[0].options[0].description.as_deref(), Some("prod"));
                assert_eq!(questions[0].options[1].description, None);
                assert!(!questions[0].multiple && questions[1].multiple);
                assert!(questions[0].custom && questions[1].custom);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(n.pending().len(), 1);
        // The answer as written: answers keyed by question text.
        let inputs = n
            .answer(
                "req_q",
                &Answer::Question {
                    answers: vec![vec!["SQLite".into()], vec!["a".into(), "b".into()]],
                },
            )
            .expect("answer");
        let resp = &inputs[0].message["response"];
        assert_eq!(resp["request_id"], "req_q");
        assert_eq!(resp["response"]["behavior"], "allow");
        assert_eq!(
            resp["response"]["updatedInput"]["answers"]["Which DB?"],
            "SQLite"
        );
        assert_eq!(
            resp["response"]["updatedInput"]["answers"]["Features?"],
            "a, b"
        );
        assert_eq!(
            resp["response"]["updatedInput"]["questions"][0]["header"],
            "DB"
        );
        assert!(n
            .answer("req_q", &Answer::Question { answers: vec![] })
            .is_err());
        assert!(matches!(
            n.answer("nope", &Answer::Dismiss),
            Err(RuntimeError::NotFound(_))
        ));
        // A dismiss is a deny that interrupts: the turn halts, and ends completed even
        // though Claude reports the interruption as an error.
        let dismiss = n.answer("req_q", &Answer::Dismiss).expect("dismiss");
        assert_eq!(
            dismiss[0].message["response"]["response"]["interrupt"],
            true
        );
        let more = transcript(&format!(
            "< {} #note {}\n> {}\n",
            dismiss[0].message,
            dismiss[0].note.clone().expect("note"),
            r#"{"type":"result","subtype":"error_during_execution","is_error":true,"errors":["interrupted"]}"#
        ));
        let out = run(&mut n, &more[1..]);
        assert_eq!(
            out,
            vec![
                AgentEvent::InteractionResolved {
                    id: "req_q".into(),
                    outcome: InteractionOutcome::Dismissed
                },
                AgentEvent::Status {
                    state: RunState::Idle,
                    message: None
                },
                AgentEvent::TurnEnded {
                    reason: TurnEndReason::Completed,
                    error: None
                }
            ]
        );
    }

    #[test]
    fn permission_answers_have_claudes_shapes() {
        let mut n = norm();
        let recs = transcript(
            r#"
< {"type":"user","message":{"role":"user","content":"clean"}}
> {"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"rm -rf build","description":"Remove the build directory"},"tool_use_id":"t1"}}
"#,
        );
        let out = run(&mut n, &recs);
        assert!(out.iter().any(|e| matches!(e, AgentEvent::InteractionAsked(i)
            if i.title == "Remove the build directory"
            && matches!(&i.kind, InteractionKind::Permission { tool, patterns, .. } if tool == "bash" && patterns == &vec!["rm -rf build".to_string()]))));
        let once = n
            .answer(
                "r1",
                &Answer::Permission {
                    reply: PermissionReply::Once,
                    message: None,
                },
            )
            .expect("once");
        assert_eq!(
            once[0].message["response"]["response"],
            json!({"behavior": "allow", "updatedInput": {"command": "rm -rf build", "description": "Remove the build directory"}})
        );
        let always = n
            .answer(
                "r1",
                &Answer::Permission {
                    reply: PermissionReply::Always,
                    message: None,
                },
            )
            .expect("always");
        assert_eq!(
            always[0].message["response"]["response"]["updatedPermissions"][0]["rules"][0],
            json!({"toolName": "Bash", "ruleContent": "rm -rf build"})
        );
        let with_msg = n
            .answer(
                "r1",
                &Answer::Permission {
                    reply: PermissionReply::Reject,
                    message: Some("keep it".into()),
                },
            )
            .expect("reject");
        assert_eq!(
            with_msg[0].message["response"]["response"],
            json!({"behavior": "deny", "message": "keep it"})
        );
        assert!(n
            .answer("r1", &Answer::Question { answers: vec![] })
            .is_err());
        // Abort: interrupt first, then the open ask denied as cancelled.
        let abort = n.abort();
        assert_eq!(abort.len(), 2);
        assert_eq!(abort[0].message["request"]["subtype"], "interrupt");
        assert_eq!(
            abort[1].note,
            Some(json!({"outcome": {"kind": "cancelled"}}))
        );
    }

    #[test]
    fn interrupt_cancels_exit_fails_and_unknown_requests_get_an_error_reply() {
        let mut n = norm();
        let recs = transcript(
            r#"
< {"type":"user","message":{"role":"user","content":"go"}}
> {"type":"control_request","request_id":"hook_1","request":{"subtype":"hook_callback","callback_id":"x","input":{}}}
> {"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Write","input":{"file_path":"/srv/proj/a.txt","content":"x"},"tool_use_id":"t1"}}
< {"type":"control_request","request_id":"interrupt-1","request":{"subtype":"interrupt"}}
> {"type":"control_cancel_request","request_id":"r1"}
> {"type":"result","subtype":"error_during_execution","is_error":false,"errors":[]}
< {"type":"user","message":{"role":"user","content":"again"}}
> {"type":"mystery","x":1}
!70
"#,
        );
        let out = run(&mut n, &recs);
        let auto = n.take_auto_replies();
        assert_eq!(auto.len(), 1);
        assert_eq!(auto[0].id, "auto-hook_1");
        assert_eq!(auto[0].message["response"]["subtype"], "error");
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
                (TurnEndReason::Cancelled, None),
                (
                    TurnEndReason::Error,
                    Some("the agent exited with code 70: boom".into())
                )
            ]
        );
        assert!(out.contains(&AgentEvent::InteractionResolved {
            id: "r1".into(),
            outcome: InteractionOutcome::Cancelled
        }));
        assert!(out
            .iter()
            .any(|e| matches!(e, AgentEvent::Raw { kind, .. } if kind == "mystery")));
        assert_eq!(n.exited(), Some("the agent exited with code 70: boom"));
        assert!(n.abort().is_empty(), "nothing runs");
    }

    #[test]
    fn a_prompt_during_a_turn_starts_the_next_one() {
        let mut n = norm();
        let recs = transcript(
            r#"
< {"type":"user","message":{"role":"user","content":"one"}}
< {"type":"user","message":{"role":"user","content":"two"}}
> {"type":"result","subtype":"success","is_error":false}
> {"type":"result","subtype":"success","is_error":false}
"#,
        );
        let out = run(&mut n, &recs);
        let kinds: Vec<&str> = out.iter().map(AgentEvent::kind).collect();
        assert_eq!(
            kinds,
            vec![
                "status",
                "status",
                "turn_ended",
                "status",
                "status",
                "turn_ended"
            ]
        );
    }

    #[test]
    fn the_command_line_carries_the_spec() {
        let spec = SessionSpec {
            directory: "/p".into(),
            model: Some(ModelRef {
                provider: "anthropic".into(),
                model: "claude-opus-4-5".into(),
            }),
            agent: Some("plan".into()),
            variant: Some("high".into()),
            system: Some("Be brief.".into()),
            title: None,
        };
        let argv = command("claude", &spec);
        let s = argv.join(" ");
        assert!(s.starts_with(
            "claude -p --verbose --output-format stream-json --input-format stream-json"
        ));
        assert!(s.contains("--permission-prompt-tool stdio"));
        assert!(s.contains("--model claude-opus-4-5"));
        assert!(s.contains("--effort high"));
        assert!(s.contains("--permission-mode plan"));
        assert!(argv.ends_with(&[
            "--append-system-prompt".to_string(),
            "Be brief.".to_string()
        ]));
    }
}
