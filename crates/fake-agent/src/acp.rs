//! A fake ACP agent (JSON-RPC 2.0 over stdio, protocol version 1), scripted by a
//! scenario.
//!
//! It answers `initialize`, `session/new` (modes `build` and `plan`, config options of
//! category `model` and `thought_level`), `session/set_mode` and
//! `session/set_config_option`; runs a turn per `session/prompt` and answers it with the
//! stop reason (and the turn's `usage`); streams `agent_message_chunk` /
//! `agent_thought_chunk`, `plan` (ACP plans have no cancelled entries: they are left out),
//! `tool_call` / `tool_call_update` (an edit carries its `diff`), `usage_update` with the
//! running cost; asks with `session/request_permission` (options `allow_once`,
//! `allow_always`, `reject_once`; a rejection lets the turn go on, as Gemini's does) and
//! with `elicitation/create` forms for questions (a field per question: `oneOf` choices,
//! an `array` of them for multiple choice, a plain string without options). A failure
//! answers the prompt with a JSON-RPC error; `session/cancel` ends the turn `cancelled`.

use std::path::Path;

use serde_json::{json, Value};

use crate::opencode::chunks;
use crate::scenario::{QuestionSpec, TodoSpec};
use crate::stdio::{Call, Edit, Incoming, TurnEnd, UsageStep, Verdict, Wire};
use atelier_runtimes::stdio::str_at;

/// The ACP side of the fake.
pub(crate) struct AcpWire {
    n: u64,
    sessions: u64,
    session: String,
    /// JSON-RPC ids of requests sent to the client.
    next_request: u64,
    turn_usage: UsageStep,
    cost: f64,
}

impl AcpWire {
    pub(crate) fn new(_directory: &Path) -> AcpWire {
        AcpWire {
            n: 0,
            sessions: 0,
            session: String::new(),
            next_request: 0,
            turn_usage: UsageStep::default(),
            cost: 0.0,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}_{:06}", self.n)
    }

    fn update(&self, update: Value) -> Value {
        json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": self.session, "update": update}})
    }

    fn request(&mut self, method: &str, params: Value) -> (Value, String) {
        let id = self.next_request;
        self.next_request += 1;
        (
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
            id.to_string(),
        )
    }

    fn result(id: &Value, result: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": result})
    }
}

/// Scenario tool words → ACP tool kinds.
fn kind_of(tool: &str) -> &'static str {
    match tool {
        "bash" => "execute",
        "edit" | "write" | "multiedit" | "apply_patch" => "edit",
        "read" => "read",
        "grep" | "glob" | "list" => "search",
        "webfetch" | "websearch" => "fetch",
        _ => "other",
    }
}

fn reply_id(v: &Value) -> String {
    match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

impl Wire for AcpWire {
    fn classify(&mut self, v: &Value) -> Incoming {
        let null = Value::Null;
        let id = v.get("id").unwrap_or(&null);
        match str_at(v, "/method") {
            Some("initialize") => Incoming::Respond(vec![Self::result(
                id,
                json!({
                    "protocolVersion": atelier_runtimes::acp::PROTOCOL_VERSION,
                    "agentCapabilities": {"loadSession": false, "promptCapabilities": {"image": false, "audio": false, "embeddedContext": false}},
                    "authMethods": [],
                    "agentInfo": {"name": "fake-agent", "version": env!("CARGO_PKG_VERSION")},
                }),
            )]),
            Some("session/new") => {
                self.sessions += 1;
                self.session = format!("sess_{:06}", self.sessions);
                Incoming::Respond(vec![Self::result(
                    id,
                    json!({
                        "sessionId": self.session,
                        "modes": {"currentModeId": "build", "availableModes": [
                            {"id": "build", "name": "Build"}, {"id": "plan", "name": "Plan"}]},
                        "configOptions": [
                            {"id": "model", "name": "Model", "category": "model", "type": "select",
                             "currentValue": "fake/fake", "options": [{"value": "fake/fake", "name": "Fake"}]},
                            {"id": "effort", "name": "Effort", "category": "thought_level", "type": "select",
                             "currentValue": "medium", "options": [{"value": "low", "name": "Low"}, {"value": "medium", "name": "Medium"}, {"value": "high", "name": "High"}]},
                        ],
                    }),
                )])
            }
            Some("session/set_mode") => Incoming::Respond(vec![Self::result(id, json!({}))]),
            Some("session/set_config_option") => {
                Incoming::Respond(vec![Self::result(id, json!({"configOptions": []}))])
            }
            Some("session/prompt") => Incoming::Prompt {
                reply_to: Some(id.clone()),
            },
            Some("session/cancel") => Incoming::Interrupt {
                respond: Vec::new(),
            },
            Some(other) if !id.is_null() => Incoming::Respond(vec![json!({
                "jsonrpc": "2.0", "id": id,
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
        self.turn_usage = UsageStep::default();
        Vec::new()
    }

    fn text(&mut self, text: &str, reasoning: bool) -> Vec<Value> {
        let kind = if reasoning {
            "agent_thought_chunk"
        } else {
            "agent_message_chunk"
        };
        chunks(text)
            .into_iter()
            .map(|c| {
                self.update(json!({"sessionUpdate": kind, "content": {"type": "text", "text": c}}))
            })
            .collect()
    }

    fn todos(&mut self, items: &[TodoSpec]) -> Vec<Value> {
        let entries: Vec<Value> = items
            .iter()
            .filter(|t| t.status != "cancelled")
            .map(|t| json!({"content": t.content, "priority": t.priority, "status": t.status}))
            .collect();
        vec![self.update(json!({"sessionUpdate": "plan", "entries": entries}))]
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
                let id = self.id("call");
                out.push(self.update(json!({
                    "sessionUpdate": "tool_call", "toolCallId": id, "title": title.unwrap_or(name),
                    "kind": kind_of(name), "status": "pending", "rawInput": input,
                })));
                id
            }
        };
        out.push(self.update(
            json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "in_progress"}),
        ));
        out.push(self.update(json!({
            "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "completed",
            "content": [{"type": "content", "content": {"type": "text", "text": output}}],
            "rawOutput": output,
        })));
        out
    }

    fn edit(&mut self, call: Option<Call>, e: &Edit) -> Vec<Value> {
        let mut out = Vec::new();
        let abs = e.abs.to_string_lossy().into_owned();
        let id = match call {
            Some(c) => c.id,
            None => {
                let id = self.id("call");
                out.push(self.update(json!({
                    "sessionUpdate": "tool_call", "toolCallId": id,
                    "title": format!("{} {}", if e.existed { "Edit" } else { "Write" }, e.path),
                    "kind": "edit", "status": "pending",
                    "locations": [{"path": abs}], "rawInput": {"path": abs, "content": e.content},
                })));
                id
            }
        };
        out.push(self.update(
            json!({"sessionUpdate": "tool_call_update", "toolCallId": id, "status": "in_progress"}),
        ));
        out.push(match &e.result {
            Ok(()) => self.update(json!({
                "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "completed",
                "locations": [{"path": abs}],
                "content": [{"type": "diff", "path": abs, "oldText": e.old, "newText": e.content}],
            })),
            Err(err) => self.update(json!({
                "sessionUpdate": "tool_call_update", "toolCallId": id, "status": "failed",
                "content": [{"type": "content", "content": {"type": "text", "text": err}}],
            })),
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
        let kind = kind_of(tool);
        let call_id = self.id("call");
        let title = title
            .map(str::to_string)
            .unwrap_or_else(|| format!("{tool} {pattern}"));
        let abs = abs.to_string_lossy().into_owned();
        let (input, locations) = if kind == "execute" {
            (json!({"command": pattern}), json!([]))
        } else {
            (json!({"path": abs}), json!([{"path": abs}]))
        };
        let tool_call = json!({
            "toolCallId": call_id, "title": title, "kind": kind, "status": "pending",
            "rawInput": input, "locations": locations,
        });
        let mut announce = tool_call.clone();
        announce["sessionUpdate"] = json!("tool_call");
        let announce = self.update(announce);
        let (req, rid) = self.request(
            "session/request_permission",
            json!({
                "sessionId": self.session,
                "toolCall": tool_call,
                "options": [
                    {"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                    {"optionId": "always", "name": "Always allow", "kind": "allow_always"},
                    {"optionId": "reject", "name": "Reject", "kind": "reject_once"},
                ],
            }),
        );
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
        match (
            str_at(body, "/outcome/outcome"),
            str_at(body, "/outcome/optionId"),
        ) {
            (Some("selected"), Some("allow")) => Verdict::Allow { always: false },
            (Some("selected"), Some("always")) => Verdict::Allow { always: true },
            // A rejection fails the tool; the agent goes on (the client cancels the
            // turn if it wants it stopped).
            (Some("selected"), _) => Verdict::Deny {
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
        let (status, text) = match refused {
            Some(m) => ("failed", m.to_string()),
            None => ("completed", format!("{} done", call.tool)),
        };
        vec![self.update(json!({
            "sessionUpdate": "tool_call_update", "toolCallId": call.id, "status": status,
            "content": [{"type": "content", "content": {"type": "text", "text": text}}],
        }))]
    }

    fn ask_question(&mut self, questions: &[QuestionSpec]) -> (Vec<Value>, String, Option<Call>) {
        let mut properties = serde_json::Map::new();
        for (i, q) in questions.iter().enumerate() {
            let choices: Vec<Value> = q
                .options
                .iter()
                .map(|o| {
                    let mut c = json!({"const": o.label(), "title": o.label()});
                    if !o.description().is_empty() {
                        c["description"] = json!(o.description());
                    }
                    c
                })
                .collect();
            let mut prop = if choices.is_empty() {
                json!({"type": "string"})
            } else if q.multiple {
                json!({"type": "array", "items": {"anyOf": choices}})
            } else {
                json!({"type": "string", "oneOf": choices})
            };
            prop["description"] = json!(q.question);
            if let Some(h) = &q.header {
                prop["title"] = json!(h);
            }
            // Zero-padded keys keep their order even where key order is lost.
            properties.insert(format!("q{:02}", i + 1), prop);
        }
        let message = questions
            .first()
            .map(|q| q.question.clone())
            .unwrap_or_default();
        let (req, rid) = self.request(
            "elicitation/create",
            json!({
                "sessionId": self.session,
                "message": message,
                "mode": "form",
                "requestedSchema": {"type": "object", "properties": properties},
            }),
        );
        (vec![req], rid, None)
    }

    fn question_verdict(&self, body: &Value, questions: &[QuestionSpec]) -> Verdict {
        if str_at(body, "/action") != Some("accept") {
            return Verdict::Dismissed;
        }
        Verdict::Answers(
            (0..questions.len())
                .map(|i| match body.pointer(&format!("/content/q{:02}", i + 1)) {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                    Some(Value::String(s)) => vec![s.clone()],
                    Some(other) => vec![other.to_string()],
                    None => Vec::new(),
                })
                .collect(),
        )
    }

    fn question_done(&mut self, _: Option<Call>, _: &[QuestionSpec], _: &Verdict) -> Vec<Value> {
        Vec::new()
    }

    fn usage(&mut self, u: UsageStep) -> Vec<Value> {
        let t = &mut self.turn_usage;
        t.input += u.input;
        t.output += u.output;
        t.reasoning += u.reasoning;
        t.cache_read += u.cache_read;
        t.cache_write += u.cache_write;
        self.cost += u.cost;
        let used = t.input + t.output + t.cache_read;
        vec![self.update(json!({
            "sessionUpdate": "usage_update", "used": used, "size": 200000,
            "cost": {"amount": self.cost, "currency": "USD"},
        }))]
    }

    fn turn_end(&mut self, end: &TurnEnd, reply_to: Option<Value>) -> Vec<Value> {
        let Some(id) = reply_to else {
            return Vec::new();
        };
        let t = self.turn_usage;
        let usage = json!({
            "inputTokens": t.input, "outputTokens": t.output, "thoughtTokens": t.reasoning,
            "cachedReadTokens": t.cache_read, "cachedWriteTokens": t.cache_write,
            "totalTokens": t.input + t.output + t.reasoning + t.cache_read + t.cache_write,
        });
        vec![match end {
            TurnEnd::Done | TurnEnd::Halted => {
                Self::result(&id, json!({"stopReason": "end_turn", "usage": usage}))
            }
            TurnEnd::Aborted => {
                Self::result(&id, json!({"stopReason": "cancelled", "usage": usage}))
            }
            TurnEnd::Failed(m) => json!({
                "jsonrpc": "2.0", "id": id,
                "error": {"code": -32603, "message": m},
            }),
        }]
    }
}
