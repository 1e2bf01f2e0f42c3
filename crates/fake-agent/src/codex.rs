//! A fake `codex app-server`: JSON-RPC over stdin/stdout without the `"jsonrpc"`
//! member, as `codex app-server` speaks it.
//!
//! - `initialize` → `{userAgent}`; `initialized` is a notification; `thread/start` →
//!   `{thread: {id: "thr_000001", …}}` and `thread/started`. `turn/start` is answered
//!   when its turn starts (`{turn: {id, status: "inProgress"}}`, then `turn/started`);
//!   `turn/interrupt` → `{}` and the turn ends `interrupted`.
//! - `say` / `think` → `agentMessage` / `reasoning` items (started, deltas, completed);
//!   `todos` → `turn/plan/updated` (cancelled items left out); `tool` `bash` → a
//!   `commandExecution` item, any other tool an `mcpToolCall` of server `fake`;
//!   `edit_file` → a `fileChange` item; `usage` → `thread/tokenUsage/updated` with the
//!   thread's totals, counted as Codex does (cached input inside `inputTokens`,
//!   reasoning inside `outputTokens`; no cost, no cache writes).
//! - `ask_permission` for `edit`-like tools starts a `fileChange` item and sends
//!   `item/fileChange/requestApproval {itemId}`; for any other tool it starts a
//!   `commandExecution` and sends `item/commandExecution/requestApproval {itemId,
//!   approvalId, command, cwd, reason}`. `accept` / `acceptForSession` go on, `decline`
//!   fails the call and goes on, `cancel` halts the turn.
//! - `ask_question` → `item/tool/requestUserInput {itemId, questions: [{id: "q1", header,
//!   question, isOther, isSecret, options}]}`; an empty `answers` map dismisses.
//! - The turn ends with `turn/completed {turn: {status: completed | interrupted |
//!   failed, error}}`; items still open are completed `declined` first.

use std::path::Path;

use serde_json::{json, Value};

use crate::opencode::chunks;
use crate::scenario::{QuestionSpec, TodoSpec};
use crate::stdio::{Call, Edit, Incoming, TurnEnd, UsageStep, Verdict, Wire};
use atelier_runtimes::stdio::str_at;

/// The Codex side of the fake.
pub(crate) struct CodexWire {
    directory: String,
    n: u64,
    threads: u64,
    thread: String,
    turn: String,
    turns: u64,
    next_request: u64,
    /// `turn/start` requests whose turn has not started yet.
    queued: Vec<Value>,
    /// Items started and not completed, by id.
    open: Vec<(String, Value)>,
    totals: UsageStep,
}

impl CodexWire {
    pub(crate) fn new(directory: &Path) -> CodexWire {
        CodexWire {
            directory: directory.to_string_lossy().into_owned(),
            n: 0,
            threads: 0,
            thread: String::new(),
            turn: String::new(),
            turns: 0,
            next_request: 0,
            queued: Vec::new(),
            open: Vec::new(),
            totals: UsageStep::default(),
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}_{:06}", self.n)
    }

    fn note(&self, method: &str, mut params: Value) -> Value {
        params["threadId"] = json!(self.thread);
        params["turnId"] = json!(self.turn);
        json!({"method": method, "params": params})
    }

    fn started(&mut self, item: Value) -> Value {
        if let Some(id) = str_at(&item, "/id") {
            self.open.push((id.to_string(), item.clone()));
        }
        self.note("item/started", json!({"item": item}))
    }

    fn completed(&mut self, item: Value) -> Value {
        if let Some(id) = str_at(&item, "/id") {
            self.open.retain(|(i, _)| i != id);
        }
        self.note("item/completed", json!({"item": item}))
    }

    fn request(&mut self, method: &str, params: Value) -> (Value, String) {
        let id = self.next_request;
        self.next_request += 1;
        let mut msg = self.note(method, params);
        msg["id"] = json!(id);
        (msg, id.to_string())
    }

    fn result(id: &Value, result: Value) -> Value {
        json!({"id": id, "result": result})
    }

    fn command_item(&self, id: &str, command: &str, status: &str, output: Option<&str>) -> Value {
        json!({
            "type": "commandExecution", "id": id, "command": command, "cwd": self.directory,
            "status": status, "commandActions": [],
            "exitCode": if status == "completed" { json!(0) } else { Value::Null },
            "aggregatedOutput": output,
        })
    }

    fn file_item(id: &str, abs: &str, existed: bool, diff: &str, status: &str) -> Value {
        let kind = if existed {
            json!({"type": "update", "move_path": null})
        } else {
            json!({"type": "add"})
        };
        json!({
            "type": "fileChange", "id": id, "status": status,
            "changes": [{"path": abs, "kind": kind, "diff": diff}],
        })
    }
}

fn edit_like(tool: &str) -> bool {
    matches!(
        tool,
        "edit" | "write" | "multiedit" | "apply_patch" | "patch"
    )
}

fn reply_id(v: &Value) -> String {
    match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

impl Wire for CodexWire {
    fn classify(&mut self, v: &Value) -> Incoming {
        let null = Value::Null;
        let id = v.get("id").unwrap_or(&null);
        match str_at(v, "/method") {
            Some("initialize") => Incoming::Respond(vec![Self::result(
                id,
                json!({"userAgent": format!("fake-agent/{}", env!("CARGO_PKG_VERSION"))}),
            )]),
            Some("initialized") => Incoming::Ignore,
            Some("thread/start") => {
                self.threads += 1;
                self.thread = format!("thr_{:06}", self.threads);
                let params = v.get("params").cloned().unwrap_or_default();
                let thread = json!({"id": self.thread, "preview": "", "modelProvider": "fake",
                                    "cwd": params.get("cwd"), "turns": []});
                Incoming::Respond(vec![
                    Self::result(
                        id,
                        json!({
                            "thread": thread, "model": params.get("model").cloned().unwrap_or(json!("fake")),
                            "modelProvider": "fake", "cwd": params.get("cwd"),
                            "approvalPolicy": params.get("approvalPolicy"),
                            "sandbox": {"type": "workspaceWrite"}, "reasoningEffort": null,
                        }),
                    ),
                    json!({"method": "thread/started", "params": {"thread": thread}}),
                ])
            }
            Some("turn/start") => {
                self.queued.push(id.clone());
                Incoming::Prompt {
                    reply_to: Some(id.clone()),
                }
            }
            Some("turn/interrupt") => Incoming::Interrupt {
                respond: vec![Self::result(id, json!({}))],
            },
            Some(other) if !id.is_null() => Incoming::Respond(vec![json!({
                "id": id,
                "error": {"code": -32601, "message": format!("Method not found: {other}")}
            })]),
            Some(_) => Incoming::Ignore,
            None if v.get("result").is_some() || v.get("error").is_some() => Incoming::Reply {
                id: reply_id(v),
                body: v.get("result").cloned().unwrap_or(Value::Null),
            },
            None => Incoming::Ignore,
        }
    }

    fn turn_start(&mut self) -> Vec<Value> {
        self.turns += 1;
        self.turn = format!("turn_{:06}", self.turns);
        let turn = json!({"id": self.turn, "items": [], "status": "inProgress", "error": null});
        let mut out = Vec::new();
        if !self.queued.is_empty() {
            let id = self.queued.remove(0);
            out.push(Self::result(&id, json!({"turn": turn})));
        }
        out.push(
            json!({"method": "turn/started", "params": {"threadId": self.thread, "turn": turn}}),
        );
        out
    }

    fn text(&mut self, text: &str, reasoning: bool) -> Vec<Value> {
        let id = self.id(if reasoning { "rs" } else { "msg" });
        let (item, method) = if reasoning {
            (
                json!({"type": "reasoning", "id": id, "summary": [], "content": []}),
                "item/reasoning/summaryTextDelta",
            )
        } else {
            (
                json!({"type": "agentMessage", "id": id, "text": ""}),
                "item/agentMessage/delta",
            )
        };
        let mut out = vec![self.started(item)];
        for c in chunks(text) {
            let mut p = json!({"itemId": id, "delta": c});
            if reasoning {
                p["summaryIndex"] = json!(0);
            }
            out.push(self.note(method, p));
        }
        out.push(self.completed(if reasoning {
            json!({"type": "reasoning", "id": id, "summary": [text], "content": []})
        } else {
            json!({"type": "agentMessage", "id": id, "text": text})
        }));
        out
    }

    fn todos(&mut self, items: &[TodoSpec]) -> Vec<Value> {
        let plan: Vec<Value> = items
            .iter()
            .filter(|t| t.status != "cancelled")
            .map(|t| {
                let status = match t.status.as_str() {
                    "in_progress" => "inProgress",
                    "completed" => "completed",
                    _ => "pending",
                };
                json!({"step": t.content, "status": status})
            })
            .collect();
        vec![self.note(
            "turn/plan/updated",
            json!({"explanation": null, "plan": plan}),
        )]
    }

    fn tool(
        &mut self,
        call: Option<Call>,
        name: &str,
        input: &Value,
        output: &str,
        _title: Option<&str>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        if name == "bash" {
            let command = str_at(input, "/command").unwrap_or(name).to_string();
            let id = match call {
                Some(c) => c.id,
                None => {
                    let id = self.id("call");
                    out.push(self.started(self.command_item(&id, &command, "inProgress", None)));
                    id
                }
            };
            out.push(self.completed(self.command_item(&id, &command, "completed", Some(output))));
        } else {
            let id = call.map(|c| c.id).unwrap_or_else(|| self.id("call"));
            let item = |status: &str, result: Value| {
                json!({"type": "mcpToolCall", "id": id, "server": "fake", "tool": name,
                       "status": status, "arguments": input, "result": result, "error": null})
            };
            out.push(self.started(item("inProgress", Value::Null)));
            out.push(self.completed(item(
                "completed",
                json!({"content": [{"type": "text", "text": output}]}),
            )));
        }
        out
    }

    fn edit(&mut self, call: Option<Call>, e: &Edit) -> Vec<Value> {
        let mut out = Vec::new();
        let abs = e.abs.to_string_lossy().into_owned();
        let diff = format!(
            "{}{}",
            e.old
                .as_deref()
                .map(|o| o.lines().map(|l| format!("-{l}\n")).collect::<String>())
                .unwrap_or_default(),
            e.content
                .lines()
                .map(|l| format!("+{l}\n"))
                .collect::<String>()
        );
        let id = match call {
            Some(c) => c.id,
            None => {
                let id = self.id("call");
                out.push(self.started(Self::file_item(&id, &abs, e.existed, &diff, "inProgress")));
                id
            }
        };
        let status = if e.result.is_ok() {
            "completed"
        } else {
            "failed"
        };
        out.push(self.completed(Self::file_item(&id, &abs, e.existed, &diff, status)));
        out
    }

    fn ask_permission(
        &mut self,
        tool: &str,
        pattern: &str,
        title: Option<&str>,
        abs: &Path,
    ) -> (Vec<Value>, String, Call) {
        let call_id = self.id("call");
        let reason = title.map(str::to_string);
        let (announce, (req, rid)) = if edit_like(tool) {
            let abs = abs.to_string_lossy().into_owned();
            let item = Self::file_item(&call_id, &abs, Path::new(&abs).exists(), "", "inProgress");
            let announce = self.started(item);
            (
                announce,
                self.request(
                    "item/fileChange/requestApproval",
                    json!({"itemId": call_id, "reason": reason, "grantRoot": null}),
                ),
            )
        } else {
            let item = self.command_item(&call_id, pattern, "inProgress", None);
            let announce = self.started(item);
            let approval = self.id("apr");
            (
                announce,
                self.request(
                    "item/commandExecution/requestApproval",
                    json!({
                        "itemId": call_id, "approvalId": approval, "command": pattern,
                        "cwd": self.directory, "reason": reason,
                        "availableDecisions": ["accept", "acceptForSession", "decline", "cancel"],
                    }),
                ),
            )
        };
        (
            vec![announce, req],
            rid,
            Call {
                id: call_id,
                tool: tool.to_string(),
            },
        )
    }

    fn permission_verdict(&self, body: &Value) -> Verdict {
        match str_at(body, "/decision") {
            Some("accept") => Verdict::Allow { always: false },
            Some("acceptForSession") => Verdict::Allow { always: true },
            Some("decline") => Verdict::Deny {
                halt: false,
                message: None,
            },
            _ => Verdict::Deny {
                halt: true,
                message: None,
            },
        }
    }

    fn close_call(&mut self, call: Call, refused: Option<&str>) -> Vec<Value> {
        let item = self
            .open
            .iter()
            .find(|(i, _)| *i == call.id)
            .map(|(_, item)| item.clone());
        let Some(mut item) = item else {
            return Vec::new();
        };
        match refused {
            Some(m) => {
                item["status"] = json!("declined");
                if item["type"] == "commandExecution" {
                    item["aggregatedOutput"] = json!(m);
                }
            }
            None => {
                item["status"] = json!("completed");
                if item["type"] == "commandExecution" {
                    item["exitCode"] = json!(0);
                    item["aggregatedOutput"] = json!(format!("{} done", call.tool));
                }
            }
        }
        vec![self.completed(item)]
    }

    fn ask_question(&mut self, questions: &[QuestionSpec]) -> (Vec<Value>, String, Option<Call>) {
        let item = self.id("call");
        let qs: Vec<Value> = questions
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let options: Vec<Value> = q
                    .options
                    .iter()
                    .map(|o| json!({"label": o.label(), "description": o.description()}))
                    .collect();
                json!({
                    "id": format!("q{}", i + 1),
                    "header": q.header.clone().unwrap_or_default(),
                    "question": q.question,
                    "isOther": q.custom,
                    "isSecret": q.secret,
                    "options": if options.is_empty() { Value::Null } else { json!(options) },
                })
            })
            .collect();
        let (req, rid) = self.request(
            "item/tool/requestUserInput",
            json!({"itemId": item, "questions": qs}),
        );
        (vec![req], rid, None)
    }

    fn question_verdict(&self, body: &Value, questions: &[QuestionSpec]) -> Verdict {
        match body.get("answers").and_then(Value::as_object) {
            Some(map) if !map.is_empty() => Verdict::Answers(
                (0..questions.len())
                    .map(|i| {
                        map.get(&format!("q{}", i + 1))
                            .and_then(|a| a.get("answers"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .collect(),
            ),
            _ => Verdict::Dismissed,
        }
    }

    fn question_done(&mut self, _: Option<Call>, _: &[QuestionSpec], _: &Verdict) -> Vec<Value> {
        Vec::new()
    }

    fn usage(&mut self, u: UsageStep) -> Vec<Value> {
        let t = &mut self.totals;
        t.input += u.input;
        t.output += u.output;
        t.reasoning += u.reasoning;
        t.cache_read += u.cache_read;
        let t = *t;
        let total = |input: u64, cached: u64, output: u64, reasoning: u64| {
            json!({
                "inputTokens": input + cached, "cachedInputTokens": cached,
                "outputTokens": output + reasoning, "reasoningOutputTokens": reasoning,
                "totalTokens": input + cached + output + reasoning,
            })
        };
        vec![self.note(
            "thread/tokenUsage/updated",
            json!({"tokenUsage": {
                "total": total(t.input, t.cache_read, t.output, t.reasoning),
                "last": total(u.input, u.cache_read, u.output, u.reasoning),
                "modelContextWindow": 200000,
            }}),
        )]
    }

    fn turn_end(&mut self, end: &TurnEnd, _reply_to: Option<Value>) -> Vec<Value> {
        let mut out = Vec::new();
        for (_, mut item) in std::mem::take(&mut self.open) {
            item["status"] = json!("declined");
            out.push(self.note("item/completed", json!({"item": item})));
        }
        let (status, error) = match end {
            TurnEnd::Done => ("completed", Value::Null),
            TurnEnd::Halted | TurnEnd::Aborted => ("interrupted", Value::Null),
            TurnEnd::Failed(m) => ("failed", json!({"message": m, "codexErrorInfo": null})),
        };
        out.push(json!({"method": "turn/completed", "params": {
            "threadId": self.thread,
            "turn": {"id": self.turn, "items": [], "status": status, "error": error},
        }}));
        out
    }
}
