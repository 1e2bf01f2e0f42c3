//! The Codex adapter: `codex app-server` (pinned `@openai/codex@0.169.0`), JSON-RPC
//! over stdio as JSON lines *without* the `"jsonrpc"` member, run under an
//! [`atelier-stdio-host`](crate::stdio_host).
//!
//! Everything Codex-specific lives in this module ([`profile`] builds its command line,
//! [`normalize`] maps its wire onto normalized events).
//!
//! # Session setup
//!
//! `initialize {clientInfo, capabilities: {experimentalApi: true}}` and the notification
//! `initialized`, once per agent process; then `thread/start {cwd, approvalPolicy:
//! "untrusted", sandbox: "workspace-write", model?, modelProvider?,
//! developerInstructions?}` → the thread id, which is the session id. The spec's
//! `model` becomes `model`/`modelProvider`, `system` the developer instructions, agent
//! `plan` the `read-only` sandbox (any other agent name is refused), and `variant` the
//! `effort` of every `turn/start`. `untrusted` makes Codex ask before every command it
//! does not know to be safe and before file changes outside the sandbox's rules.
//!
//! # Wire → events
//!
//! - `turn/start` (written by the adapter) starts a turn; `turn/completed {turn:
//!   {status}}` ends it: `completed` → completed, `interrupted` → cancelled, `failed` →
//!   error with `turn.error.message`. A JSON-RPC error answering `turn/start` ends the
//!   turn with that error.
//! - Items (`item/started`, `item/completed`, which is authoritative): `agentMessage` →
//!   `text` (deltas from `item/agentMessage/delta`, the full text on completion; one
//!   part per item), `reasoning` → `reasoning` (summary deltas, then the summary or
//!   content), `commandExecution` → `tool_call` `bash` (output: `aggregatedOutput`;
//!   `failed` and `declined` fail the call), `fileChange` → `tool_call` `edit` and, once
//!   completed, `files_touched` from its changes, `mcpToolCall` → `tool_call` named by
//!   the MCP tool, `webSearch` → `websearch`.
//! - `turn/plan/updated` → `todos` (Codex plans have neither priorities nor a cancelled
//!   status).
//! - `thread/tokenUsage/updated` carries the thread's running totals; each turn reports
//!   one `usage`, the difference over the turn. Codex counts cached input inside
//!   `inputTokens` and reasoning inside `outputTokens`; the adapter reports them apart
//!   (`input_tokens` without the cached ones, `output_tokens` without reasoning). Codex
//!   reports no cost and no cache writes.
//! - `error {willRetry: true}` → `status: retry`.
//! - Server requests: `item/commandExecution/requestApproval` and
//!   `item/fileChange/requestApproval` → a permission (`bash` with the command, `edit`
//!   with the paths of the file change the item announced), keyed by **`approvalId`
//!   when present** (several approvals can share one item), else by the item id;
//!   `item/tool/requestUserInput` → questions (`isOther` → free text allowed,
//!   **`isSecret` → `secret`**, no multiple choice in Codex), keyed by the item id.
//!   `item/permissions/requestApproval` (more than Codex's own sandbox allows: network,
//!   paths) → a permission of tool `permissions` naming each (`network`, `write
//!   /path`), granted as asked for the turn (once) or the session (always), or with
//!   nothing granted (reject). `serverRequest/resolved` for a request still open
//!   cancels it. Other requests (MCP elicitations, dynamic tool calls, the legacy v1
//!   approvals) are answered with JSON-RPC error -32601.
//!
//! # Answers
//!
//! Permissions: once → `{decision: "accept"}`, always → the command prefix Codex
//! proposes (`acceptWithExecpolicyAmendment`, what "always" then allows), else
//! `acceptForSession` (when the request offers it), reject with a message → `decline` (the agent goes on; Codex
//! cannot carry the message). A reject without a message, a dismissed permission and a
//! dismissed question halt the turn: the adapter sends `turn/interrupt` first, then
//! `cancel` (or an empty answer), and the turn counts as completed, as OpenCode's
//! halted turns do. Questions: `{answers: {<question id>: {answers: [..]}}}`; free
//! text for a question without `isOther` is refused before it reaches the agent. A
//! secret answer is reported masked in `interaction_resolved` (the stdio host's
//! transcript still holds the line written to the agent). Abort is `turn/interrupt
//! {threadId, turnId}`, and every open request is answered `cancel` (or with no
//! answers).

pub mod normalize;
pub mod profile;

use serde_json::{json, Value};

use crate::stdio::{str_at, Dialect, StdioRuntime, WireNormalizer};
use crate::stdio_host::{random_id, HostClient, Input, RecordBody, StdioConfig};
use crate::{Result, RuntimeError, Session, SessionSpec};

pub use normalize::CodexNormalizer;

/// The npm package of Codex (the CLI is `codex`).
pub const CODEX_PACKAGE: &str = "@openai/codex";
/// The Codex version this adapter was written against.
pub const CODEX_VERSION: &str = "0.169.0";

/// The approval policy every thread starts with: ask before anything not known safe.
pub const APPROVAL_POLICY: &str = "untrusted";
/// The sandbox of a building thread (`plan` gets `read-only`).
pub const SANDBOX: &str = "workspace-write";

/// A runtime for `codex app-server` behind the stdio host at `cfg.base_url`.
pub fn runtime(cfg: StdioConfig) -> Result<StdioRuntime> {
    StdioRuntime::with_dialect(cfg, std::sync::Arc::new(CodexDialect))
}

pub(crate) fn request(id: &str, method: &str, params: Value) -> Value {
    json!({"id": id, "method": method, "params": params})
}

pub(crate) fn response(id: &Value, result: Value) -> Value {
    json!({"id": id, "result": result})
}

/// The client side of `initialize`.
fn initialize_params() -> Value {
    json!({
        "clientInfo": {"name": "atelier", "title": "Atelier", "version": env!("CARGO_PKG_VERSION")},
        "capabilities": {"experimentalApi": true},
    })
}

/// The `thread/start` parameters for `spec`.
pub fn thread_params(spec: &SessionSpec) -> Result<Value> {
    let sandbox = match spec.agent.as_deref() {
        None | Some("build") => SANDBOX,
        Some("plan") => "read-only",
        Some(other) => {
            return Err(RuntimeError::Protocol(format!(
                "codex has no agent {other:?} (build or plan)"
            )))
        }
    };
    let mut params = json!({
        "cwd": spec.directory,
        "approvalPolicy": APPROVAL_POLICY,
        "sandbox": sandbox,
    });
    if let Some(m) = &spec.model {
        params["model"] = json!(m.model);
        params["modelProvider"] = json!(m.provider);
    }
    if let Some(s) = &spec.system {
        params["developerInstructions"] = json!(s);
    }
    Ok(params)
}

struct CodexDialect;

impl CodexDialect {
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
impl Dialect for CodexDialect {
    fn kind(&self) -> &'static str {
        "codex"
    }

    fn normalizer(&self, session: &Session) -> Box<dyn WireNormalizer> {
        Box::new(CodexNormalizer::new(&session.id, &session.spec.directory))
    }

    async fn start_session(&self, host: &HostClient, spec: &SessionSpec) -> Result<Session> {
        let params = thread_params(spec)?;
        let st = host.status().await?;
        if !st.running() {
            return Err(RuntimeError::Disconnected(
                "the agent is not running".into(),
            ));
        }
        // Once per agent process: the ids repeat, and the host writes a line once.
        Self::call(
            host,
            &format!("initialize-{}", st.started_seq),
            "initialize",
            initialize_params(),
        )
        .await?;
        host.send(&Input {
            id: format!("initialized-{}", st.started_seq),
            message: json!({"method": "initialized"}),
            note: None,
        })
        .await?;
        let started = Self::call(
            host,
            &format!("thread-start-{}", random_id()),
            "thread/start",
            params,
        )
        .await?;
        let id = str_at(&started, "/thread/id")
            .ok_or_else(|| RuntimeError::Protocol(format!("thread/start answered {started}")))?
            .to_string();
        Ok(Session {
            id,
            spec: spec.clone(),
        })
    }

    async fn attach_session(
        &self,
        host: &HostClient,
        id: &str,
        spec: &SessionSpec,
    ) -> Result<Session> {
        // The thread must have been started by the agent process that runs now.
        let mut alive = false;
        for rec in host.transcript(0).await? {
            match &rec.body {
                RecordBody::Start { .. } | RecordBody::Exit { .. } => alive = false,
                RecordBody::Out { .. } => {
                    if rec
                        .json()
                        .as_ref()
                        .and_then(|v| str_at(v, "/result/thread/id"))
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
                "Codex thread {id} (unknown, or its agent process is gone)"
            )));
        }
        Ok(Session {
            id: id.to_string(),
            spec: spec.clone(),
        })
    }

    fn prompt(&self, session: &Session, text: &str) -> Input {
        let n = random_id();
        let mut params = json!({
            "threadId": session.id,
            "input": [{"type": "text", "text": text, "text_elements": []}],
        });
        if let Some(effort) = &session.spec.variant {
            params["effort"] = json!(effort);
        }
        Input {
            id: format!("prompt-{n}"),
            message: request(&format!("atelier-prompt-{n}"), "turn/start", params),
            note: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ModelRef;

    #[test]
    fn threads_ask_for_approvals_in_the_workspace_sandbox() {
        let spec = SessionSpec {
            directory: "/srv/app".into(),
            model: Some(ModelRef {
                provider: "local".into(),
                model: "qwen3-coder".into(),
            }),
            system: Some("Be brief.".into()),
            ..SessionSpec::default()
        };
        assert_eq!(
            thread_params(&spec).unwrap(),
            json!({"cwd": "/srv/app", "approvalPolicy": "untrusted", "sandbox": "workspace-write",
                   "model": "qwen3-coder", "modelProvider": "local",
                   "developerInstructions": "Be brief."})
        );
        let plan = SessionSpec {
            agent: Some("plan".into()),
            ..SessionSpec::default()
        };
        assert_eq!(thread_params(&plan).unwrap()["sandbox"], "read-only");
        let other = SessionSpec {
            agent: Some("yolo".into()),
            ..SessionSpec::default()
        };
        assert!(
            matches!(thread_params(&other), Err(RuntimeError::Protocol(m)) if m.contains("yolo"))
        );
    }

    #[test]
    fn prompts_are_turn_starts_with_the_effort() {
        let session = Session {
            id: "thr_1".into(),
            spec: SessionSpec {
                variant: Some("high".into()),
                ..SessionSpec::default()
            },
        };
        let input = CodexDialect.prompt(&session, "go");
        assert_eq!(input.message["method"], "turn/start");
        assert!(input.message.get("jsonrpc").is_none());
        assert_eq!(
            input.message["params"],
            json!({"threadId": "thr_1", "effort": "high",
                   "input": [{"type": "text", "text": "go", "text_elements": []}]})
        );
    }
}
