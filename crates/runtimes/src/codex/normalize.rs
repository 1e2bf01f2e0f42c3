//! `codex app-server` transcript → normalized events, for one thread (see the module
//! doc of [`crate::codex`] for the mapping).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::response;
use crate::event::{
    AgentEvent, Answer, Interaction, InteractionKind, InteractionOutcome, PermissionReply,
    Question, QuestionOption, RunState, TodoItem, TodoStatus, ToolStatus, TurnEndReason, Usage,
};
use crate::stdio::{
    noted_outcome, outcome_note, outcome_of, str_at, u64_at, Turns, WireNormalizer,
};
use crate::stdio_host::{Input, Record, RecordBody};
use crate::{Result, RuntimeError};

/// What stands in the outcome of a secret answer.
pub const MASK: &str = "********";

/// What an open agent request is.
#[derive(Debug, Clone)]
enum AskKind {
    /// A command or file-change approval; `session` when it offers `acceptForSession`;
    /// `amendment`, the command prefix Codex proposes to allow from now on, which
    /// "always" accepts in preference (`acceptWithExecpolicyAmendment`).
    Permission {
        session: bool,
        amendment: Option<Vec<String>>,
    },
    /// `item/tool/requestUserInput`: the id of each question and whether it is secret.
    Questions { ids: Vec<(String, bool)> },
    /// `item/permissions/requestApproval`: more than Codex's own sandbox allows
    /// (network, paths); granted as asked, for the turn or the session, or not at all.
    Grant { requested: Value },
}

#[derive(Debug, Clone)]
struct OpenAsk {
    rpc_id: Value,
    kind: AskKind,
}

/// Running token totals of the thread (Codex's own counting).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    input: u64,
    cached: u64,
    output: u64,
    reasoning: u64,
}

impl Totals {
    fn of(v: &Value) -> Totals {
        Totals {
            input: u64_at(v, "/inputTokens"),
            cached: u64_at(v, "/cachedInputTokens"),
            output: u64_at(v, "/outputTokens"),
            reasoning: u64_at(v, "/reasoningOutputTokens"),
        }
    }
}

/// Codex transcript → normalized events, for one thread.
#[derive(Debug)]
pub struct CodexNormalizer {
    thread_id: String,
    turns: Turns,
    /// JSON-RPC ids of our `turn/start` requests whose turn has not completed.
    prompts: Vec<Value>,
    /// Codex's id of the running turn.
    turn_id: Option<String>,
    asks: HashMap<String, OpenAsk>,
    /// The items seen so far, by id (their latest form).
    items: HashMap<String, Value>,
    /// Text of open message and reasoning items, from their deltas.
    partial: HashMap<String, String>,
    totals: Totals,
    totals_at_start: Totals,
    auto: Vec<Input>,
}

impl CodexNormalizer {
    pub fn new(thread_id: &str, directory: &std::path::Path) -> CodexNormalizer {
        CodexNormalizer {
            thread_id: thread_id.to_string(),
            turns: Turns::new(directory),
            prompts: Vec::new(),
            turn_id: None,
            asks: HashMap::new(),
            items: HashMap::new(),
            partial: HashMap::new(),
            totals: Totals::default(),
            totals_at_start: Totals::default(),
            auto: Vec::new(),
        }
    }

    fn ours(&self, params: &Value) -> bool {
        !matches!(str_at(params, "/threadId"), Some(t) if t != self.thread_id)
    }

    fn message_id(&self) -> String {
        self.turn_id
            .clone()
            .unwrap_or_else(|| format!("turn-{}", self.turns.turn))
    }

    fn start_turn(&mut self) -> Vec<AgentEvent> {
        let out = self.turns.start();
        if !out.is_empty() {
            self.totals_at_start = self.totals;
            self.turn_id = None;
        }
        out
    }

    fn input_line(&mut self, v: &Value, note: Option<&Value>) -> Vec<AgentEvent> {
        let null = Value::Null;
        let params = v.get("params").unwrap_or(&null);
        match str_at(v, "/method") {
            Some("turn/start") if self.ours(params) => {
                if let Some(id) = v.get("id") {
                    self.prompts.push(id.clone());
                }
                self.start_turn()
            }
            Some("turn/interrupt") if self.ours(params) && self.turns.busy => {
                let halt = note.and_then(|n| n.get("halt")).and_then(Value::as_bool) == Some(true);
                if !halt {
                    self.turns.abort_requested = true;
                    return Vec::new();
                }
                // A halt answers an ask and stops the turn; the ask is settled here.
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
                let Some(ask_id) = self.ask_by_rpc_id(id) else {
                    return Vec::new();
                };
                let ask = self.asks.remove(&ask_id);
                let outcome = noted_outcome(note)
                    .unwrap_or_else(|| parse_reply(ask.as_ref().map(|a| &a.kind), v.get("result")));
                self.turns.resolve(&ask_id, outcome)
            }
        }
    }

    fn ask_by_rpc_id(&self, id: &Value) -> Option<String> {
        self.asks
            .iter()
            .find(|(_, a)| &a.rpc_id == id)
            .map(|(k, _)| k.clone())
    }

    fn output_line(&mut self, seq: u64, v: &Value) -> Vec<AgentEvent> {
        let null = Value::Null;
        let params = v.get("params").unwrap_or(&null);
        match (str_at(v, "/method"), v.get("id")) {
            (Some(method), None) if self.ours(params) => self.notification(method, params),
            (Some(_), None) => Vec::new(),
            (Some(method), Some(rpc_id)) => self.agent_request(seq, method, rpc_id, params),
            (None, Some(id)) => {
                // A response to one of our turn/start requests.
                if !self.prompts.contains(id) {
                    return Vec::new();
                }
                match v.get("error") {
                    Some(e) => {
                        self.prompts.retain(|p| p != id);
                        let msg = str_at(e, "/message")
                            .map(str::to_string)
                            .unwrap_or_else(|| e.to_string());
                        if self.prompts.is_empty() {
                            self.end_turn(TurnEndReason::Error, Some(msg))
                        } else {
                            Vec::new()
                        }
                    }
                    None => {
                        if self.prompts.first() == Some(id) {
                            if let Some(t) = str_at(v, "/result/turn/id") {
                                self.turn_id = Some(t.to_string());
                            }
                        }
                        Vec::new()
                    }
                }
            }
            (None, None) => vec![AgentEvent::Raw {
                kind: "codex".into(),
                value: v.clone(),
            }],
        }
    }

    fn notification(&mut self, method: &str, p: &Value) -> Vec<AgentEvent> {
        match method {
            "turn/started" => {
                if let Some(t) = str_at(p, "/turn/id") {
                    self.turn_id = Some(t.to_string());
                }
                Vec::new()
            }
            "turn/completed" => {
                if let Some(t) = str_at(p, "/turn/id") {
                    self.turn_id = Some(t.to_string());
                }
                let (reason, error) = match str_at(p, "/turn/status") {
                    Some("interrupted") => {
                        // Interrupted without our interrupt is still a cancellation.
                        if !self.turns.halted {
                            self.turns.abort_requested = true;
                        }
                        (TurnEndReason::Cancelled, None)
                    }
                    Some("failed") => (
                        TurnEndReason::Error,
                        Some(
                            str_at(p, "/turn/error/message")
                                .unwrap_or("the turn failed")
                                .to_string(),
                        ),
                    ),
                    _ => (TurnEndReason::Completed, None),
                };
                if !self.prompts.is_empty() {
                    self.prompts.remove(0);
                }
                let mut out = self.end_turn(reason, error);
                if !self.prompts.is_empty() {
                    out.extend(self.start_turn());
                }
                out
            }
            "item/started" | "item/completed" => match p.get("item") {
                Some(item) => self.item(item, method == "item/completed"),
                None => Vec::new(),
            },
            "item/agentMessage/delta" => self.delta(p, false),
            "item/reasoning/summaryTextDelta" | "item/reasoning/textDelta" => self.delta(p, true),
            "turn/plan/updated" => {
                let items = p
                    .get("plan")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some(TodoItem {
                            content: str_at(e, "/step")?.to_string(),
                            status: TodoStatus::parse_lenient(
                                str_at(e, "/status").unwrap_or("pending"),
                            ),
                            priority: None,
                        })
                    })
                    .collect();
                self.turns.todos(items)
            }
            "thread/tokenUsage/updated" => {
                if let Some(total) = p.pointer("/tokenUsage/total") {
                    self.totals = Totals::of(total);
                }
                Vec::new()
            }
            "error" if p.get("willRetry").and_then(Value::as_bool) == Some(true) => {
                vec![AgentEvent::Status {
                    state: RunState::Retry,
                    message: str_at(p, "/error/message").map(str::to_string),
                }]
            }
            "serverRequest/resolved" => {
                let Some(ask_id) = p.get("requestId").and_then(|r| self.ask_by_rpc_id(r)) else {
                    return Vec::new();
                };
                self.asks.remove(&ask_id);
                self.turns.resolve(&ask_id, InteractionOutcome::Cancelled)
            }
            // Thread and turn bookkeeping, output deltas, the turn's diff, MCP start-up,
            // account news and the legacy `codex/event/*` stream carry nothing new.
            _ => Vec::new(),
        }
    }

    fn delta(&mut self, p: &Value, reasoning: bool) -> Vec<AgentEvent> {
        let (Some(item), Some(delta)) = (str_at(p, "/itemId"), str_at(p, "/delta")) else {
            return Vec::new();
        };
        if delta.is_empty() || !self.turns.busy {
            return Vec::new();
        }
        self.partial
            .entry(item.to_string())
            .or_default()
            .push_str(delta);
        let message_id = str_at(p, "/turnId")
            .map(str::to_string)
            .unwrap_or_else(|| self.message_id());
        let (part_id, delta) = (item.to_string(), Some(delta.to_string()));
        vec![if reasoning {
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
        }]
    }

    fn item(&mut self, item: &Value, completed: bool) -> Vec<AgentEvent> {
        let Some(id) = str_at(item, "/id").map(str::to_string) else {
            return Vec::new();
        };
        self.items.insert(id.clone(), item.clone());
        let message_id = self.message_id();
        let status = |s: Option<&str>| match s {
            Some("completed") => ToolStatus::Completed,
            Some("failed") | Some("declined") => ToolStatus::Failed,
            _ if completed => ToolStatus::Completed,
            _ => ToolStatus::Running,
        };
        match str_at(item, "/type").unwrap_or("") {
            "agentMessage" | "reasoning" if !completed => Vec::new(),
            "agentMessage" => {
                let partial = self.partial.remove(&id).unwrap_or_default();
                let text = str_at(item, "/text").map(str::to_string).unwrap_or(partial);
                if text.is_empty() {
                    return Vec::new();
                }
                vec![AgentEvent::Text {
                    message_id,
                    part_id: id,
                    delta: None,
                    text: Some(text),
                }]
            }
            "reasoning" => {
                let partial = self.partial.remove(&id).unwrap_or_default();
                let joined = |key: &str| -> String {
                    item.get(key)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                let text = [joined("summary"), joined("content"), partial]
                    .into_iter()
                    .find(|t| !t.is_empty());
                let Some(text) = text else {
                    return Vec::new();
                };
                vec![AgentEvent::Reasoning {
                    message_id,
                    part_id: id,
                    delta: None,
                    text: Some(text),
                }]
            }
            "commandExecution" => {
                let command = command_text(item.get("command")).unwrap_or_default();
                let status = status(str_at(item, "/status"));
                let output = str_at(item, "/aggregatedOutput").map(str::to_string);
                let error = (status == ToolStatus::Failed).then(|| {
                    match (str_at(item, "/status"), &output) {
                        (_, Some(o)) if !o.is_empty() => o.clone(),
                        (Some("declined"), _) => "declined".to_string(),
                        _ => match item.get("exitCode").and_then(Value::as_i64) {
                            Some(c) => format!("exit code {c}"),
                            None => "failed".to_string(),
                        },
                    }
                });
                vec![AgentEvent::ToolCall {
                    id,
                    name: "bash".into(),
                    status,
                    title: Some(command.clone()),
                    input: Some(json!({"command": command})),
                    output: if status == ToolStatus::Failed {
                        None
                    } else {
                        output
                    },
                    error,
                }]
            }
            "fileChange" => {
                let paths = change_paths(item);
                let status = status(str_at(item, "/status"));
                let rel: Vec<String> = paths.iter().map(|p| self.turns.rel_path(p)).collect();
                let mut out = vec![AgentEvent::ToolCall {
                    id,
                    name: "edit".into(),
                    status,
                    title: Some(format!("Edit {}", rel.join(", "))),
                    input: item.get("changes").cloned(),
                    output: None,
                    error: (status == ToolStatus::Failed)
                        .then(|| str_at(item, "/status").unwrap_or("failed").to_string()),
                }];
                if status == ToolStatus::Completed && completed {
                    out.extend(self.turns.files(paths));
                }
                out
            }
            "mcpToolCall" => {
                let status = status(str_at(item, "/status"));
                let tool = str_at(item, "/tool").unwrap_or("mcp").to_string();
                let text: Vec<&str> = item
                    .pointer("/result/content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| str_at(c, "/text"))
                    .collect();
                vec![AgentEvent::ToolCall {
                    id,
                    title: Some(match str_at(item, "/server") {
                        Some(s) => format!("{s}/{tool}"),
                        None => tool.clone(),
                    }),
                    name: tool,
                    status,
                    input: item.get("arguments").cloned(),
                    output: (!text.is_empty()).then(|| text.join("\n")),
                    error: (status == ToolStatus::Failed).then(|| {
                        str_at(item, "/error/message")
                            .unwrap_or("failed")
                            .to_string()
                    }),
                }]
            }
            "webSearch" => vec![AgentEvent::ToolCall {
                id,
                name: "websearch".into(),
                status: if completed {
                    ToolStatus::Completed
                } else {
                    ToolStatus::Running
                },
                title: str_at(item, "/query").map(str::to_string),
                input: Some(json!({"query": str_at(item, "/query")})),
                output: None,
                error: None,
            }],
            "userMessage" | "plan" | "contextCompaction" | "enteredReviewMode"
            | "exitedReviewMode" => Vec::new(),
            other if completed => vec![AgentEvent::Raw {
                kind: format!("codex.{other}"),
                value: item.clone(),
            }],
            _ => Vec::new(),
        }
    }

    fn agent_request(
        &mut self,
        seq: u64,
        method: &str,
        rpc_id: &Value,
        params: &Value,
    ) -> Vec<AgentEvent> {
        let item_id = str_at(params, "/itemId").map(str::to_string);
        let (id, kind, interaction) = match method {
            "item/commandExecution/requestApproval" | "item/fileChange/requestApproval"
                if self.ours(params) =>
            {
                // Several approvals may share one item: the approval id tells them apart.
                let id = str_at(params, "/approvalId")
                    .map(str::to_string)
                    .or_else(|| item_id.clone())
                    .unwrap_or_else(|| format!("approval-{seq}"));
                let command = method == "item/commandExecution/requestApproval";
                let (kind, i) = self.permission(&id, command, item_id, params);
                (id, kind, i)
            }
            "item/permissions/requestApproval" if self.ours(params) => {
                let id = item_id
                    .clone()
                    .map(|i| format!("grant-{i}"))
                    .unwrap_or_else(|| format!("grant-{seq}"));
                let requested = params.get("permissions").cloned().unwrap_or(json!({}));
                let wants = permissions_wanted(&requested);
                let title = str_at(params, "/reason")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("Allow {}", wants.join(", ")));
                let i = Interaction {
                    id: id.clone(),
                    title,
                    call_id: item_id,
                    kind: InteractionKind::Permission {
                        tool: "permissions".into(),
                        always: wants.clone(),
                        patterns: wants,
                        detail: params.clone(),
                    },
                };
                (id, AskKind::Grant { requested }, i)
            }
            "item/tool/requestUserInput" if self.ours(params) => {
                let id = item_id.clone().unwrap_or_else(|| format!("ask-{seq}"));
                let raw: Vec<&Value> = params
                    .get("questions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .collect();
                let ids = raw
                    .iter()
                    .enumerate()
                    .map(|(n, q)| {
                        (
                            str_at(q, "/id")
                                .map(str::to_string)
                                .unwrap_or_else(|| format!("q{}", n + 1)),
                            q.get("isSecret").and_then(Value::as_bool) == Some(true),
                        )
                    })
                    .collect();
                let questions: Vec<Question> = raw.iter().map(|q| question(q)).collect();
                let i = Interaction {
                    id: id.clone(),
                    title: questions
                        .first()
                        .map(|q| q.question.clone())
                        .unwrap_or_else(|| "The agent has a question".into()),
                    call_id: item_id,
                    kind: InteractionKind::Question { questions },
                };
                (id, AskKind::Questions { ids }, i)
            }
            _ => {
                self.auto.push(Input {
                    id: format!("auto-{seq}"),
                    message: json!({
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
        self.turns.asked(interaction)
    }

    fn permission(
        &self,
        id: &str,
        command: bool,
        item_id: Option<String>,
        params: &Value,
    ) -> (AskKind, Interaction) {
        let item = item_id.as_ref().and_then(|i| self.items.get(i));
        let offers = |d: &str| match params.get("availableDecisions").and_then(Value::as_array) {
            None => true,
            Some(list) => list.iter().any(|x| x.as_str() == Some(d)),
        };
        let session = offers("acceptForSession");
        let amendment: Option<Vec<String>> = params
            .get("proposedExecpolicyAmendment")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .filter(|a: &Vec<String>| command && !a.is_empty());
        let (tool, patterns, title) = if command {
            let cmd = command_text(params.get("command"))
                .or_else(|| item.and_then(|i| command_text(i.get("command"))))
                .unwrap_or_default();
            ("bash", vec![cmd.clone()], format!("Run {cmd}"))
        } else {
            let paths: Vec<String> = item
                .map(change_paths)
                .unwrap_or_default()
                .iter()
                .map(|p| self.turns.rel_path(p))
                .collect();
            let title = if paths.is_empty() {
                "Edit files".to_string()
            } else {
                format!("Edit {}", paths.join(", "))
            };
            ("edit", paths, title)
        };
        let interaction = Interaction {
            id: id.to_string(),
            title: title.trim().to_string(),
            call_id: item_id,
            kind: InteractionKind::Permission {
                tool: tool.to_string(),
                always: match (&amendment, session) {
                    (Some(prefix), _) => vec![prefix.join(" ")],
                    (None, true) => patterns.clone(),
                    (None, false) => Vec::new(),
                },
                patterns: patterns.into_iter().filter(|p| !p.is_empty()).collect(),
                detail: params.clone(),
            },
        };
        (AskKind::Permission { session, amendment }, interaction)
    }

    fn end_turn(&mut self, reason: TurnEndReason, error: Option<String>) -> Vec<AgentEvent> {
        let mut out = self.flush_partials();
        if self.turns.busy {
            let (a, b) = (self.totals, self.totals_at_start);
            let d = |x: u64, y: u64| x.saturating_sub(y);
            let (input, cached) = (d(a.input, b.input), d(a.cached, b.cached));
            let (output, reasoning) = (d(a.output, b.output), d(a.reasoning, b.reasoning));
            if input + output > 0 {
                out.push(AgentEvent::Usage(Usage {
                    message_id: Some(self.message_id()),
                    input_tokens: input.saturating_sub(cached),
                    output_tokens: output.saturating_sub(reasoning),
                    reasoning_tokens: reasoning,
                    cache_read: cached,
                    cache_write: 0,
                    cost_usd: None,
                }));
            }
        }
        out.extend(self.turns.end(reason, error));
        self.asks.clear();
        out
    }

    /// Message and reasoning items that never completed, closed with what they said.
    fn flush_partials(&mut self) -> Vec<AgentEvent> {
        let mut open: Vec<(String, String)> = self.partial.drain().collect();
        open.sort();
        let message_id = self.message_id();
        open.into_iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(part_id, text)| {
                let reasoning = self
                    .items
                    .get(&part_id)
                    .is_some_and(|i| str_at(i, "/type") == Some("reasoning"));
                if reasoning {
                    AgentEvent::Reasoning {
                        message_id: message_id.clone(),
                        part_id,
                        delta: None,
                        text: Some(text),
                    }
                } else {
                    AgentEvent::Text {
                        message_id: message_id.clone(),
                        part_id,
                        delta: None,
                        text: Some(text),
                    }
                }
            })
            .collect()
    }

    fn interrupt(&self, id: String, note: Option<Value>) -> Input {
        Input {
            id,
            message: super::request(
                &format!("atelier-interrupt-{}", self.turns.turn),
                "turn/interrupt",
                json!({"threadId": self.thread_id, "turnId": self.turn_id}),
            ),
            note,
        }
    }
}

/// A command as one line (Codex sends a string; older servers an argv), without the
/// login shell Codex wraps it in: the model's `echo hi` reaches the wire as
/// `/bin/bash -lc "echo hi"`, and the human is asked about `echo hi`.
fn command_text(v: Option<&Value>) -> Option<String> {
    let line = match v? {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    Some(unwrap_shell(&line).unwrap_or(line))
}

/// The script of `<shell> -lc <one word>` (or `-c`), unquoted as a POSIX shell would.
pub fn unwrap_shell(line: &str) -> Option<String> {
    let (shell, rest) = line.split_once(' ')?;
    let name = shell.rsplit('/').next()?;
    if !matches!(name, "bash" | "sh" | "zsh" | "dash") {
        return None;
    }
    let (flag, word) = rest.split_once(' ')?;
    if !matches!(flag, "-lc" | "-c") {
        return None;
    }
    shell_word(word)
}

/// One POSIX shell word (single quotes, double quotes, backslashes) unquoted; `None` when
/// `word` is more than one word or not closed.
fn shell_word(word: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = word.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        c @ ('$' | '`' | '"' | '\\') => out.push(c),
                        '\n' => {}
                        c => {
                            out.push('\\');
                            out.push(c);
                        }
                    },
                    c => out.push(c),
                }
            },
            '\\' => out.push(chars.next()?),
            c if c.is_whitespace() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// What a permissions request asks for, in words: `network`, `write /path`, `read /path`.
fn permissions_wanted(requested: &Value) -> Vec<String> {
    let mut wants = vec![];
    if requested.pointer("/network/enabled") == Some(&Value::Bool(true)) {
        wants.push("network".to_string());
    }
    let fs = requested.get("fileSystem");
    for access in ["write", "read"] {
        for path in fs
            .and_then(|f| f.get(access))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            wants.push(format!("{access} {path}"));
        }
    }
    for entry in fs
        .and_then(|f| f.get("entries"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let access = str_at(entry, "/access").unwrap_or("access");
        let path = str_at(entry, "/path/path")
            .or_else(|| str_at(entry, "/path/pattern"))
            .or_else(|| str_at(entry, "/path/value/kind"))
            .unwrap_or("?");
        wants.push(format!("{access} {path}"));
    }
    if wants.is_empty() {
        wants.push("more than its sandbox allows".to_string());
    }
    wants
}

/// The paths a `fileChange` item changes.
fn change_paths(item: &Value) -> Vec<String> {
    item.get("changes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| str_at(c, "/path").map(str::to_string))
        .collect()
}

/// One `requestUserInput` question.
fn question(q: &Value) -> Question {
    let options: Vec<QuestionOption> = q
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some(QuestionOption {
                label: str_at(o, "/label")?.to_string(),
                description: str_at(o, "/description")
                    .filter(|d| !d.is_empty())
                    .map(str::to_string),
            })
        })
        .collect();
    Question {
        question: str_at(q, "/question").unwrap_or_default().to_string(),
        header: str_at(q, "/header")
            .filter(|h| !h.is_empty())
            .map(str::to_string),
        // Without options the answer is free text whatever `isOther` says.
        custom: options.is_empty() || q.get("isOther").and_then(Value::as_bool) == Some(true),
        options,
        multiple: false,
        secret: q.get("isSecret").and_then(Value::as_bool) == Some(true),
    }
}

/// The outcome of a reply found in the transcript without a note.
fn parse_reply(kind: Option<&AskKind>, result: Option<&Value>) -> InteractionOutcome {
    let null = Value::Null;
    let r = result.unwrap_or(&null);
    match kind {
        Some(AskKind::Permission { .. })
            if r.pointer("/decision/acceptWithExecpolicyAmendment")
                .is_some() =>
        {
            InteractionOutcome::Always
        }
        Some(AskKind::Permission { .. }) => match str_at(r, "/decision") {
            Some("accept") => InteractionOutcome::Once,
            Some("acceptForSession") => InteractionOutcome::Always,
            Some("decline") => InteractionOutcome::Rejected,
            _ => InteractionOutcome::Cancelled,
        },
        Some(AskKind::Grant { .. }) => match str_at(r, "/scope") {
            _ if r
                .get("permissions")
                .is_some_and(|p| p.as_object().is_some_and(|o| o.is_empty())) =>
            {
                InteractionOutcome::Rejected
            }
            Some("session") => InteractionOutcome::Always,
            Some(_) => InteractionOutcome::Once,
            None => InteractionOutcome::Cancelled,
        },
        Some(AskKind::Questions { ids }) => match r.get("answers").and_then(Value::as_object) {
            Some(a) if !a.is_empty() => InteractionOutcome::Answered {
                answers: ids
                    .iter()
                    .map(|(id, secret)| {
                        a.get(id)
                            .and_then(|x| x.get("answers"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(|s| {
                                if *secret {
                                    MASK.to_string()
                                } else {
                                    s.to_string()
                                }
                            })
                            .collect()
                    })
                    .collect(),
            },
            _ => InteractionOutcome::Dismissed,
        },
        None => InteractionOutcome::Cancelled,
    }
}

impl WireNormalizer for CodexNormalizer {
    fn push(&mut self, rec: &Record) -> Vec<AgentEvent> {
        match &rec.body {
            RecordBody::Start { .. } => {
                self.prompts.clear();
                self.asks.clear();
                self.partial.clear();
                self.turn_id = None;
                self.totals = Totals::default();
                self.turns.agent_started()
            }
            RecordBody::Exit { .. } => {
                let mut out = self.flush_partials();
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
                Ok(v) => self.output_line(rec.seq, &v),
                // Codex logs to stderr; a stray stdout line is kept for debugging.
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
        let is_question = matches!(ask.kind, AskKind::Questions { .. });
        let mut outcome = outcome_of(answer, is_question);
        let mut halt = false;
        let result = match (&ask.kind, answer) {
            (
                AskKind::Permission {
                    amendment: Some(prefix),
                    ..
                },
                Answer::Permission {
                    reply: PermissionReply::Always,
                    ..
                },
            ) => {
                json!({"decision": {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": prefix}}})
            }
            (AskKind::Permission { session, .. }, Answer::Permission { reply, message }) => {
                json!({"decision": match reply {
                    PermissionReply::Once => "accept",
                    PermissionReply::Always if *session => "acceptForSession",
                    PermissionReply::Always => {
                        outcome = InteractionOutcome::Once;
                        "accept"
                    }
                    PermissionReply::Reject if message.is_some() => {
                        tracing::info!("Codex cannot carry a rejection message; it is not sent");
                        "decline"
                    }
                    PermissionReply::Reject => {
                        halt = true;
                        "cancel"
                    }
                }})
            }
            (AskKind::Permission { .. }, Answer::Dismiss) => {
                halt = true;
                json!({"decision": "cancel"})
            }
            (AskKind::Grant { requested }, Answer::Permission { reply, .. }) => match reply {
                PermissionReply::Once => json!({"permissions": requested, "scope": "turn"}),
                PermissionReply::Always => json!({"permissions": requested, "scope": "session"}),
                // Nothing granted: the command goes on inside Codex's own sandbox.
                PermissionReply::Reject => json!({"permissions": {}}),
            },
            (AskKind::Grant { .. }, Answer::Dismiss) => json!({"permissions": {}}),
            (AskKind::Questions { ids }, Answer::Question { answers }) => {
                let InteractionKind::Question { questions } = &interaction.kind else {
                    return Err(RuntimeError::Protocol(format!("{id} is not a question")));
                };
                let mut map = serde_json::Map::new();
                let mut shown = Vec::new();
                for (n, ((qid, secret), q)) in ids.iter().zip(questions).enumerate() {
                    let given = answers.get(n).cloned().unwrap_or_default();
                    if !q.custom {
                        if let Some(free) = given
                            .iter()
                            .find(|a| !q.options.iter().any(|o| &o.label == *a))
                        {
                            return Err(RuntimeError::Protocol(format!(
                                "{:?} takes one of its options, not free text ({free:?})",
                                q.question
                            )));
                        }
                    }
                    shown.push(if *secret {
                        given.iter().map(|_| MASK.to_string()).collect()
                    } else {
                        given.clone()
                    });
                    map.insert(qid.clone(), json!({"answers": given}));
                }
                outcome = InteractionOutcome::Answered { answers: shown };
                json!({"answers": map})
            }
            (AskKind::Questions { .. }, Answer::Dismiss) => {
                halt = true;
                json!({"answers": {}})
            }
            (AskKind::Permission { .. }, Answer::Question { .. }) => {
                return Err(RuntimeError::Protocol(format!(
                    "{id} is a permission request, not a question"
                )))
            }
            (AskKind::Questions { .. }, Answer::Permission { .. }) => {
                return Err(RuntimeError::Protocol(format!(
                    "{id} is a question, not a permission request"
                )))
            }
            (AskKind::Grant { .. }, Answer::Question { .. }) => {
                return Err(RuntimeError::Protocol(format!(
                    "{id} is a permission request, not a question"
                )))
            }
        };
        let mut out = Vec::new();
        if halt {
            // The interrupt goes first, so the agent does not run on between the answer
            // and the interrupt; its note settles the ask.
            let mut note = outcome_note(&outcome);
            note["halt"] = json!(true);
            note["id"] = json!(id);
            out.push(self.interrupt(format!("halt-{id}"), Some(note)));
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
        let mut out = vec![self.interrupt(format!("interrupt-{}", self.turns.turn), None)];
        for i in self.turns.open() {
            let Some(ask) = self.asks.get(&i.id) else {
                continue;
            };
            let result = match ask.kind {
                AskKind::Permission { .. } => json!({"decision": "cancel"}),
                AskKind::Questions { .. } => json!({"answers": {}}),
                AskKind::Grant { .. } => json!({"permissions": {}}),
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
        let mut out = self.flush_partials();
        out.extend(self.turns.connection_lost(message));
        out
    }

    fn exited(&self) -> Option<&str> {
        self.turns.exited()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn commands_lose_the_login_shell_codex_wraps_them_in() {
        // As the real Codex 0.169 sends the model's `sh -c 'echo checked-$((6*7))'`.
        let wire = r#"/bin/bash -lc "sh -c 'echo checked-"'$((6*7))'"'""#;
        assert_eq!(
            command_text(Some(&json!(wire))).as_deref(),
            Some("sh -c 'echo checked-$((6*7))'")
        );
        assert_eq!(
            unwrap_shell(r#"bash -c "echo \"hi\" \$HOME""#).as_deref(),
            Some(r#"echo "hi" $HOME"#)
        );
        assert_eq!(
            command_text(Some(&json!(["/bin/zsh", "-lc", "ls"]))).as_deref(),
            Some("ls")
        );
        // Not one quoted word, or not a shell: kept as it is.
        for line in [
            "/bin/bash -lc echo hi",
            "python3 -c 'print(1)'",
            "bash -lc 'open",
        ] {
            assert_eq!(command_text(Some(&json!(line))).as_deref(), Some(line));
        }
    }

    const THR: &str = "thr_1";

    fn out(seq: u64, v: Value) -> Record {
        Record {
            seq,
            t: 0,
            body: RecordBody::Out {
                line: v.to_string(),
            },
        }
    }

    fn input(seq: u64, input: &Input) -> Record {
        Record {
            seq,
            t: 0,
            body: RecordBody::In {
                id: input.id.clone(),
                line: input.message.to_string(),
                note: input.note.clone(),
            },
        }
    }

    /// A normalizer in a running turn `turn_1`.
    fn running() -> CodexNormalizer {
        let mut n = CodexNormalizer::new(THR, Path::new("/srv/app"));
        let start = Input {
            id: "p1".into(),
            message: json!({"id": "atelier-prompt-1", "method": "turn/start",
                            "params": {"threadId": THR, "input": []}}),
            note: None,
        };
        assert_eq!(n.push(&input(1, &start)).len(), 1);
        n.push(&out(
            2,
            json!({"id": "atelier-prompt-1", "result": {"turn": {"id": "turn_1"}}}),
        ));
        n
    }

    fn asked(evs: &[AgentEvent]) -> Vec<Interaction> {
        evs.iter()
            .filter_map(|e| match e {
                AgentEvent::InteractionAsked(i) => Some(i.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn always_accepts_the_command_prefix_codex_proposes_to_allow() {
        let mut n = running();
        let evs = n.push(&out(
            3,
            json!({"id": 3, "method": "item/commandExecution/requestApproval",
                   "params": {"threadId": THR, "turnId": "turn_1", "itemId": "call_3",
                              "command": "cargo test --all", "startedAtMs": 1,
                              "proposedExecpolicyAmendment": ["cargo", "test"]}}),
        ));
        let ask = asked(&evs);
        assert!(
            matches!(&ask[0].kind, InteractionKind::Permission { always, .. }
            if always == &vec!["cargo test".to_string()])
        );
        let reply = n
            .answer(
                "call_3",
                &Answer::Permission {
                    reply: PermissionReply::Always,
                    message: None,
                },
            )
            .unwrap();
        assert_eq!(
            reply[0].message["result"],
            json!({"decision": {"acceptWithExecpolicyAmendment": {"execpolicy_amendment": ["cargo", "test"]}}})
        );
        let evs = n.push(&input(4, &reply[0]));
        assert_eq!(
            evs,
            vec![AgentEvent::InteractionResolved {
                id: "call_3".into(),
                outcome: InteractionOutcome::Always
            }]
        );
        // Once is still a plain accept.
        n.push(&out(
            5,
            json!({"id": 4, "method": "item/commandExecution/requestApproval",
                   "params": {"threadId": THR, "turnId": "turn_1", "itemId": "call_4",
                              "command": "cargo build", "startedAtMs": 1,
                              "proposedExecpolicyAmendment": ["cargo", "build"]}}),
        ));
        let reply = n
            .answer(
                "call_4",
                &Answer::Permission {
                    reply: PermissionReply::Once,
                    message: None,
                },
            )
            .unwrap();
        assert_eq!(reply[0].message["result"], json!({"decision": "accept"}));
    }

    #[test]
    fn a_request_for_more_permissions_is_asked_and_granted_as_asked_or_not_at_all() {
        let mut n = running();
        let requested = json!({"network": {"enabled": true},
                               "fileSystem": {"write": ["/srv/cache"]}});
        let evs = n.push(&out(
            3,
            json!({"id": 4, "method": "item/permissions/requestApproval",
                   "params": {"threadId": THR, "turnId": "turn_1", "itemId": "call_9",
                              "cwd": "/srv/app", "startedAtMs": 1, "permissions": requested}}),
        ));
        let ask = asked(&evs);
        assert_eq!(ask.len(), 1);
        assert_eq!(ask[0].id, "grant-call_9");
        assert_eq!(ask[0].title, "Allow network, write /srv/cache");
        assert!(
            matches!(&ask[0].kind, InteractionKind::Permission { tool, patterns, .. }
            if tool == "permissions" && patterns == &vec!["network".to_string(), "write /srv/cache".into()])
        );
        // Always: everything asked, for the session.
        let reply = n
            .answer(
                "grant-call_9",
                &Answer::Permission {
                    reply: PermissionReply::Always,
                    message: None,
                },
            )
            .unwrap();
        assert_eq!(
            reply[0].message,
            json!({"id": 4, "result": {"permissions": requested, "scope": "session"}})
        );
        let evs = n.push(&input(4, &reply[0]));
        assert_eq!(
            evs,
            vec![AgentEvent::InteractionResolved {
                id: "grant-call_9".into(),
                outcome: InteractionOutcome::Always
            }]
        );

        // A refusal grants nothing; the turn goes on.
        n.push(&out(
            5,
            json!({"id": 5, "method": "item/permissions/requestApproval",
                   "params": {"threadId": THR, "turnId": "turn_1", "itemId": "call_10",
                              "cwd": "/srv/app", "startedAtMs": 1, "reason": "Fetch the crate index",
                              "permissions": {"network": {"enabled": true}}}}),
        ));
        assert_eq!(
            n.pending().last().map(|i| i.title.clone()).as_deref(),
            Some("Fetch the crate index")
        );
        let reply = n
            .answer(
                "grant-call_10",
                &Answer::Permission {
                    reply: PermissionReply::Reject,
                    message: None,
                },
            )
            .unwrap();
        assert_eq!(reply.len(), 1, "no interrupt: {reply:?}");
        assert_eq!(
            reply[0].message,
            json!({"id": 5, "result": {"permissions": {}}})
        );
    }

    #[test]
    fn approvals_are_keyed_by_approval_id_else_by_item_id() {
        let mut n = running();
        n.push(&out(3, json!({"method": "item/started", "params": {"threadId": THR,
            "item": {"type": "fileChange", "id": "call_1", "status": "inProgress",
                     "changes": [{"path": "/srv/app/src/lib.rs", "kind": {"type": "add"}, "diff": ""}]}}})));
        let evs = n.push(&out(
            4,
            json!({"id": 0, "method": "item/fileChange/requestApproval",
                   "params": {"threadId": THR, "turnId": "turn_1", "itemId": "call_1"}}),
        ));
        let file = asked(&evs);
        assert_eq!(file.len(), 1);
        assert_eq!(file[0].id, "call_1");
        assert_eq!(file[0].title, "Edit src/lib.rs");
        assert!(
            matches!(&file[0].kind, InteractionKind::Permission { tool, patterns, .. }
            if tool == "edit" && patterns == &vec!["src/lib.rs".to_string()])
        );

        // Two approvals of one command item, told apart by their approval ids.
        for (seq, rpc, approval) in [(5, 1, "apr_a"), (6, 2, "apr_b")] {
            let evs = n.push(&out(
                seq,
                json!({"id": rpc, "method": "item/commandExecution/requestApproval",
                       "params": {"threadId": THR, "turnId": "turn_1", "itemId": "call_2",
                                  "approvalId": approval, "command": "cargo test",
                                  "availableDecisions": ["accept", "decline", "cancel"]}}),
            ));
            let ask = asked(&evs);
            assert_eq!(ask.len(), 1, "{approval}");
            assert_eq!(ask[0].id, approval);
            assert_eq!(ask[0].call_id.as_deref(), Some("call_2"));
            // No acceptForSession offered: nothing to allow "always".
            assert!(
                matches!(&ask[0].kind, InteractionKind::Permission { always, .. } if always.is_empty())
            );
        }
        let ids: Vec<String> = n.pending().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, vec!["call_1", "apr_a", "apr_b"]);

        // The answer goes to the request that asked, by its JSON-RPC id.
        let reply = n
            .answer(
                "apr_b",
                &Answer::Permission {
                    reply: PermissionReply::Always,
                    message: None,
                },
            )
            .unwrap();
        assert_eq!(reply.len(), 1);
        assert_eq!(
            reply[0].message,
            json!({"id": 2, "result": {"decision": "accept"}})
        );
        let evs = n.push(&input(7, &reply[0]));
        assert_eq!(
            evs,
            vec![AgentEvent::InteractionResolved {
                id: "apr_b".into(),
                outcome: InteractionOutcome::Once
            }]
        );
        assert!(matches!(
            n.answer("apr_b", &Answer::Dismiss),
            Err(RuntimeError::NotFound(_))
        ));

        // A bare reject halts: the interrupt first, with the outcome in its note.
        let reply = n
            .answer(
                "apr_a",
                &Answer::Permission {
                    reply: PermissionReply::Reject,
                    message: None,
                },
            )
            .unwrap();
        assert_eq!(reply[0].message["method"], "turn/interrupt");
        assert_eq!(
            reply[0].message["params"],
            json!({"threadId": THR, "turnId": "turn_1"})
        );
        assert_eq!(reply[1].message["result"], json!({"decision": "cancel"}));
        let evs = n.push(&input(8, &reply[0]));
        assert_eq!(
            evs,
            vec![AgentEvent::InteractionResolved {
                id: "apr_a".into(),
                outcome: InteractionOutcome::Rejected
            }]
        );
        n.push(&input(9, &reply[1]));
        let evs = n.push(&out(
            10,
            json!({"method": "turn/completed", "params": {"threadId": THR,
            "turn": {"id": "turn_1", "status": "interrupted"}}}),
        ));
        assert!(evs.contains(&AgentEvent::InteractionResolved {
            id: "call_1".into(),
            outcome: InteractionOutcome::Cancelled
        }));
        assert_eq!(
            evs.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Completed,
                error: None
            })
        );
    }

    #[test]
    fn secret_questions_are_marked_and_their_answers_masked() {
        let mut n = running();
        let evs = n.push(&out(3, json!({"id": 7, "method": "item/tool/requestUserInput",
            "params": {"threadId": THR, "turnId": "turn_1", "itemId": "call_9", "questions": [
                {"id": "token", "header": "Token", "question": "Your registry token?",
                 "isOther": false, "isSecret": true, "options": null},
                {"id": "scope", "header": "", "question": "Which scope?", "isOther": false,
                 "options": [{"label": "read", "description": "Read only"}, {"label": "write", "description": ""}]}
            ]}})));
        let ask = asked(&evs);
        assert_eq!(ask.len(), 1);
        assert_eq!(ask[0].id, "call_9");
        assert_eq!(ask[0].title, "Your registry token?");
        let InteractionKind::Question { questions } = &ask[0].kind else {
            panic!("{ask:?}")
        };
        assert!(questions[0].secret && questions[0].custom);
        assert_eq!(questions[0].header.as_deref(), Some("Token"));
        assert!(!questions[1].secret && !questions[1].custom && !questions[1].multiple);
        assert_eq!(questions[1].header, None);
        assert_eq!(
            questions[1].options[0].description.as_deref(),
            Some("Read only")
        );
        assert_eq!(questions[1].options[1].description, None);

        let free = n.answer(
            "call_9",
            &Answer::Question {
                answers: vec![vec!["s3cr3t".into()], vec!["admin".into()]],
            },
        );
        assert!(
            matches!(&free, Err(RuntimeError::Protocol(m)) if m.contains("free text")),
            "{free:?}"
        );
        let reply = n
            .answer(
                "call_9",
                &Answer::Question {
                    answers: vec![vec!["s3cr3t".into()], vec!["read".into()]],
                },
            )
            .unwrap();
        assert_eq!(
            reply[0].message,
            json!({"id": 7, "result": {"answers": {"token": {"answers": ["s3cr3t"]},
                                                   "scope": {"answers": ["read"]}}}})
        );
        let note = reply[0].note.as_ref().expect("note").to_string();
        assert!(!note.contains("s3cr3t"), "{note}");
        let evs = n.push(&input(4, &reply[0]));
        assert_eq!(
            evs,
            vec![AgentEvent::InteractionResolved {
                id: "call_9".into(),
                outcome: InteractionOutcome::Answered {
                    answers: vec![vec![MASK.into()], vec!["read".into()]]
                }
            }]
        );
        // Without its note (written by another client) the reply is read, still masked.
        let mut m = running();
        m.push(&out(
            3,
            json!({"id": 7, "method": "item/tool/requestUserInput",
            "params": {"threadId": THR, "itemId": "call_9", "questions": [
                {"id": "token", "question": "Token?", "isSecret": true}]}}),
        ));
        let evs = m.push(&input(
            4,
            &Input {
                id: "x".into(),
                message: json!({"id": 7, "result": {"answers": {"token": {"answers": ["s3cr3t"]}}}}),
                note: None,
            },
        ));
        assert_eq!(
            evs,
            vec![AgentEvent::InteractionResolved {
                id: "call_9".into(),
                outcome: InteractionOutcome::Answered {
                    answers: vec![vec![MASK.into()]]
                }
            }]
        );
    }

    #[test]
    fn usage_is_the_turns_share_of_the_totals_and_failures_end_the_turn() {
        let mut n = running();
        let totals = |i: u64, c: u64, o: u64, r: u64| {
            json!({"method": "thread/tokenUsage/updated", "params": {"threadId": THR, "tokenUsage": {
                "total": {"inputTokens": i, "cachedInputTokens": c, "outputTokens": o,
                          "reasoningOutputTokens": r, "totalTokens": i + o}}}})
        };
        n.push(&out(3, totals(1000, 200, 300, 100)));
        // Another thread's news and unknown requests are not ours; the latter are refused.
        assert!(n
            .push(&out(
                4,
                json!({"method": "turn/completed", "params": {"threadId": "thr_other",
                "turn": {"id": "t", "status": "completed"}}})
            ))
            .is_empty());
        assert!(n
            .push(&out(
                5,
                json!({"id": 3, "method": "item/tool/call", "params": {"threadId": THR}})
            ))
            .is_empty());
        let auto = n.take_auto_replies();
        assert_eq!(auto.len(), 1);
        assert_eq!(auto[0].message["error"]["code"], -32601);
        let evs = n.push(&out(
            6,
            json!({"method": "turn/completed", "params": {"threadId": THR,
            "turn": {"id": "turn_1", "status": "completed"}}}),
        ));
        assert_eq!(
            evs[0],
            AgentEvent::Usage(Usage {
                message_id: Some("turn_1".into()),
                input_tokens: 800,
                output_tokens: 200,
                reasoning_tokens: 100,
                cache_read: 200,
                cache_write: 0,
                cost_usd: None,
            })
        );

        // The second turn reports only its own tokens, and fails.
        let start = Input {
            id: "p2".into(),
            message: json!({"id": "atelier-prompt-2", "method": "turn/start",
                            "params": {"threadId": THR, "input": []}}),
            note: None,
        };
        n.push(&input(7, &start));
        n.push(&out(8, totals(1500, 200, 350, 100)));
        let evs = n.push(&out(
            9,
            json!({"method": "turn/completed", "params": {"threadId": THR,
            "turn": {"id": "turn_2", "status": "failed",
                     "error": {"message": "Unauthorized", "codexErrorInfo": "unauthorized"}}}}),
        ));
        assert!(evs.iter().any(|e| matches!(e, AgentEvent::Usage(u)
            if u.input_tokens == 500 && u.output_tokens == 50 && u.cache_read == 0)));
        assert_eq!(
            evs.last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Error,
                error: Some("Unauthorized".into())
            })
        );
    }
}
