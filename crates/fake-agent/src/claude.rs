//! A fake Claude Code: `claude -p --input-format stream-json --output-format stream-json
//! --include-partial-messages --permission-prompt-tool stdio`, scripted by a scenario.
//!
//! It answers the control requests `initialize`, `interrupt`, `set_model` and
//! `set_permission_mode`; starts a turn per `{"type":"user"}` line (`system init` first);
//! streams text and thinking as `stream_event` deltas followed by the `assistant` block;
//! runs tools as `tool_use` + `tool_result` (`TodoWrite` for todos — without priorities or
//! cancelled items, which Claude's todos do not have); asks with `control_request
//! can_use_tool` (`AskUserQuestion` for questions); and ends each turn with a `result`
//! whose `total_cost_usd` and `modelUsage` are running totals of the process, as the real
//! CLI's are. Reasoning tokens have no place in Claude's usage and are dropped.

use std::path::Path;

use serde_json::{json, Value};

use crate::opencode::chunks;
use crate::scenario::{QuestionSpec, TodoSpec};
use crate::stdio::{answers_text, Call, Edit, Incoming, TurnEnd, UsageStep, Verdict, Wire};
use atelier_runtimes::stdio::str_at;

/// The Claude stream-json side of the fake.
pub(crate) struct ClaudeWire {
    directory: String,
    n: u64,
    turns: u64,
    turn_usage: UsageStep,
    total: UsageStep,
}

impl ClaudeWire {
    pub(crate) fn new(directory: &Path) -> ClaudeWire {
        ClaudeWire {
            directory: directory.to_string_lossy().into_owned(),
            n: 0,
            turns: 0,
            turn_usage: UsageStep::default(),
            total: UsageStep::default(),
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}_{:06}", self.n)
    }

    fn assistant(&self, mid: &str, block: Value) -> Value {
        json!({
            "type": "assistant",
            "message": {"id": mid, "type": "message", "role": "assistant", "model": "fake", "content": [block]},
            "parent_tool_use_id": null,
            "session_id": "fake-session",
        })
    }

    fn tool_result(&self, id: &str, text: &str, error: bool) -> Value {
        let mut block = json!({"type": "tool_result", "tool_use_id": id, "content": text});
        if error {
            block["is_error"] = json!(true);
        }
        json!({
            "type": "user",
            "message": {"role": "user", "content": [block]},
            "parent_tool_use_id": null,
            "session_id": "fake-session",
        })
    }

    fn tool_use(&mut self, name: &str, input: &Value) -> (Value, String) {
        let mid = self.id("msg");
        let tid = self.id("toolu");
        let line = self.assistant(
            &mid,
            json!({"type": "tool_use", "id": tid, "name": name, "input": input}),
        );
        (line, tid)
    }

    fn success(request_id: &str, response: Value) -> Value {
        json!({"type": "control_response", "response": {"subtype": "success", "request_id": request_id, "response": response}})
    }
}

/// Scenario tool words → Claude's tool names.
fn claude_tool(tool: &str) -> String {
    match tool {
        "bash" => "Bash".into(),
        "edit" => "Edit".into(),
        "write" => "Write".into(),
        "read" => "Read".into(),
        "glob" => "Glob".into(),
        "grep" => "Grep".into(),
        "webfetch" => "WebFetch".into(),
        other => {
            let mut c = other.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => "Tool".into(),
            }
        }
    }
}

impl Wire for ClaudeWire {
    fn classify(&mut self, v: &Value) -> Incoming {
        match str_at(v, "/type") {
            Some("user") => Incoming::Prompt { reply_to: None },
            Some("control_request") => {
                let rid = str_at(v, "/request_id").unwrap_or("").to_string();
                match str_at(v, "/request/subtype") {
                    Some("interrupt") => Incoming::Interrupt {
                        respond: vec![Self::success(&rid, json!({}))],
                    },
                    Some("initialize") => Incoming::Respond(vec![Self::success(
                        &rid,
                        json!({"commands": [], "output_style": "default", "available_output_styles": ["default"],
                               "models": [{"value": "fake", "displayName": "Fake"}], "account": {}}),
                    )]),
                    Some("set_model" | "set_permission_mode" | "set_max_thinking_tokens") => {
                        Incoming::Respond(vec![Self::success(&rid, json!({}))])
                    }
                    other => Incoming::Respond(vec![json!({
                        "type": "control_response",
                        "response": {"subtype": "error", "request_id": rid, "error": format!("unsupported: {other:?}")}
                    })]),
                }
            }
            Some("control_response") => Incoming::Reply {
                id: str_at(v, "/response/request_id").unwrap_or("").to_string(),
                body: v
                    .pointer("/response/response")
                    .cloned()
                    .unwrap_or(Value::Null),
            },
            _ => Incoming::Ignore,
        }
    }

    fn turn_start(&mut self) -> Vec<Value> {
        self.turns += 1;
        self.turn_usage = UsageStep::default();
        vec![json!({
            "type": "system", "subtype": "init", "cwd": self.directory, "session_id": "fake-session",
            "tools": ["Bash", "Edit", "Write", "Read", "TodoWrite", "AskUserQuestion"],
            "mcp_servers": [], "model": "fake", "permissionMode": "default",
            "apiKeySource": "none", "claude_code_version": "fake", "uuid": self.id("uuid"),
        })]
    }

    fn text(&mut self, text: &str, reasoning: bool) -> Vec<Value> {
        let mid = self.id("msg");
        let (block_type, delta_type, field) = if reasoning {
            ("thinking", "thinking_delta", "thinking")
        } else {
            ("text", "text_delta", "text")
        };
        let mut out = vec![
            json!({"type": "stream_event", "event": {"type": "message_start", "message": {"id": mid, "role": "assistant", "content": []}}, "session_id": "fake-session"}),
            json!({"type": "stream_event", "event": {"type": "content_block_start", "index": 0, "content_block": {"type": block_type, field: ""}}, "session_id": "fake-session"}),
        ];
        for c in chunks(text) {
            out.push(json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0, "delta": {"type": delta_type, field: c}}, "session_id": "fake-session"}));
        }
        out.push(self.assistant(&mid, json!({"type": block_type, field: text})));
        out
    }

    fn todos(&mut self, items: &[TodoSpec]) -> Vec<Value> {
        let todos: Vec<Value> = items
            .iter()
            .filter(|t| t.status != "cancelled")
            .map(|t| json!({"content": t.content, "status": t.status, "activeForm": t.content}))
            .collect();
        let (line, tid) = self.tool_use("TodoWrite", &json!({"todos": todos}));
        vec![
            line,
            self.tool_result(
                &tid,
                "Todos have been modified successfully. Ensure that you continue to use the todo list to track your progress.",
                false,
            ),
        ]
    }

    fn tool(
        &mut self,
        call: Option<Call>,
        name: &str,
        input: &Value,
        output: &str,
        title: Option<&str>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        let id = match call {
            Some(c) => c.id,
            None => {
                let mut input = input.clone();
                if let (Some(t), Some(obj)) = (title, input.as_object_mut()) {
                    obj.insert("description".into(), json!(t));
                }
                let (line, id) = self.tool_use(&claude_tool(name), &input);
                out.push(line);
                id
            }
        };
        out.push(self.tool_result(&id, output, false));
        out
    }

    fn edit(&mut self, call: Option<Call>, e: &Edit) -> Vec<Value> {
        let mut out = Vec::new();
        let abs = e.abs.to_string_lossy();
        let id = match call {
            Some(c) => c.id,
            None => {
                let (name, input) = match &e.old {
                    Some(old) => (
                        "Edit",
                        json!({"file_path": abs, "old_string": old, "new_string": e.content}),
                    ),
                    None => ("Write", json!({"file_path": abs, "content": e.content})),
                };
                let (line, id) = self.tool_use(name, &input);
                out.push(line);
                id
            }
        };
        out.push(match &e.result {
            Ok(()) if e.existed => {
                self.tool_result(&id, &format!("The file {abs} has been updated."), false)
            }
            Ok(()) => self.tool_result(&id, &format!("File created successfully at: {abs}"), false),
            Err(err) => self.tool_result(&id, err, true),
        });
        out
    }

    fn ask_permission(
        &mut self,
        tool: &str,
        pattern: &str,
        title: Option<&str>,
        abs: &Path,
    ) -> (Vec<Value>, String, Call) {
        let name = claude_tool(tool);
        let input = match name.as_str() {
            "Bash" => {
                let mut i = json!({"command": pattern});
                if let Some(t) = title {
                    i["description"] = json!(t);
                }
                i
            }
            "Edit" | "Write" | "Read" => json!({"file_path": abs.to_string_lossy()}),
            _ => json!({"pattern": pattern}),
        };
        let (line, tid) = self.tool_use(&name, &input);
        let rid = self.id("req");
        let request = json!({
            "type": "control_request",
            "request_id": rid,
            "request": {
                "subtype": "can_use_tool", "tool_name": name, "input": input,
                "tool_use_id": tid, "permission_suggestions": [],
            }
        });
        (
            vec![line, request],
            rid,
            Call {
                id: tid,
                tool: name,
            },
        )
    }

    fn permission_verdict(&self, body: &Value) -> Verdict {
        match str_at(body, "/behavior") {
            Some("allow") => Verdict::Allow {
                always: body
                    .get("updatedPermissions")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()),
            },
            _ => Verdict::Deny {
                halt: body.get("interrupt").and_then(Value::as_bool) == Some(true),
                message: str_at(body, "/message").map(str::to_string),
            },
        }
    }

    fn close_call(&mut self, call: Call, refused: Option<&str>) -> Vec<Value> {
        match refused {
            Some(m) => vec![self.tool_result(&call.id, m, true)],
            None => vec![self.tool_result(&call.id, &format!("{} done", call.tool), false)],
        }
    }

    fn ask_question(&mut self, questions: &[QuestionSpec]) -> (Vec<Value>, String, Option<Call>) {
        let qs: Vec<Value> = questions
            .iter()
            .map(|q| {
                json!({
                    "question": q.question,
                    "header": q.header.clone().unwrap_or_else(|| q.question.chars().take(12).collect()),
                    "options": q.options.iter().map(|o| json!({"label": o.label(), "description": o.description()})).collect::<Vec<_>>(),
                    "multiSelect": q.multiple,
                })
            })
            .collect();
        let input = json!({"questions": qs});
        let (line, tid) = self.tool_use("AskUserQuestion", &input);
        let rid = self.id("req");
        let request = json!({
            "type": "control_request",
            "request_id": rid,
            "request": {"subtype": "can_use_tool", "tool_name": "AskUserQuestion", "input": input, "tool_use_id": tid},
        });
        (
            vec![line, request],
            rid,
            Some(Call {
                id: tid,
                tool: "AskUserQuestion".into(),
            }),
        )
    }

    fn question_verdict(&self, body: &Value, questions: &[QuestionSpec]) -> Verdict {
        if str_at(body, "/behavior") != Some("allow") {
            return Verdict::Dismissed;
        }
        Verdict::Answers(
            questions
                .iter()
                .map(|q| {
                    body.pointer("/updatedInput/answers")
                        .and_then(|a| a.get(&q.question))
                        .and_then(Value::as_str)
                        .map(|a| a.split(", ").map(str::to_string).collect())
                        .unwrap_or_default()
                })
                .collect(),
        )
    }

    fn question_done(
        &mut self,
        call: Option<Call>,
        questions: &[QuestionSpec],
        verdict: &Verdict,
    ) -> Vec<Value> {
        let Some(call) = call else {
            return Vec::new();
        };
        match verdict {
            Verdict::Answers(a) => vec![self.tool_result(
                &call.id,
                &format!(
                    "User has answered your questions: {}. You can now continue with the user's answers in mind.",
                    answers_text(questions, a)
                ),
                false,
            )],
            _ => vec![self.tool_result(&call.id, "The user dismissed this question", true)],
        }
    }

    fn usage(&mut self, u: UsageStep) -> Vec<Value> {
        for acc in [&mut self.turn_usage, &mut self.total] {
            acc.input += u.input;
            acc.output += u.output;
            acc.cache_read += u.cache_read;
            acc.cache_write += u.cache_write;
            acc.cost += u.cost;
        }
        Vec::new()
    }

    fn turn_end(&mut self, end: &TurnEnd, _reply_to: Option<Value>) -> Vec<Value> {
        let (subtype, is_error, errors) = match end {
            TurnEnd::Done => ("success", false, vec![]),
            TurnEnd::Halted | TurnEnd::Aborted => ("error_during_execution", false, vec![]),
            TurnEnd::Failed(m) => ("error_during_execution", true, vec![m.clone()]),
        };
        let t = self.turn_usage;
        let s = self.total;
        let mut result = json!({
            "type": "result", "subtype": subtype, "is_error": is_error,
            "duration_ms": 1, "duration_api_ms": 1, "num_turns": self.turns,
            "session_id": "fake-session", "total_cost_usd": s.cost,
            "usage": {"input_tokens": t.input, "output_tokens": t.output,
                      "cache_read_input_tokens": t.cache_read, "cache_creation_input_tokens": t.cache_write},
            "modelUsage": {"fake": {"inputTokens": s.input, "outputTokens": s.output,
                      "cacheReadInputTokens": s.cache_read, "cacheCreationInputTokens": s.cache_write, "costUSD": s.cost}},
            "permission_denials": [], "uuid": self.id("res"),
        });
        if !errors.is_empty() {
            result["errors"] = json!(errors);
        }
        vec![result]
    }
}
