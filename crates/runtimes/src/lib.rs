//! Coding-agent runtimes for Atelier.
//!
//! One trait, [`AgentRuntime`], drives any coding agent that runs in a sandbox: start or
//! attach a session, send a prompt (and make sure it landed), follow the session's
//! normalized [`AgentEvent`]s with reconnect and resume, answer the agent's permission
//! requests and questions, abort a turn, and re-read what is pending after a reconnect.
//! [`runtime_for`] picks an adapter by name.
//!
//! Adapters:
//! - [`opencode::OpenCodeRuntime`] (`"opencode"`): `opencode serve` (HTTP + SSE, the 1.x
//!   dialect, pinned to `opencode-ai@1.18.33`). Everything OpenCode-specific lives in
//!   that one module.
//! - [`claude`] (`"claude"`): Claude Code, `claude -p` with stream-json in and out and
//!   the stdio control protocol (tool approvals, `AskUserQuestion`, `TodoWrite` → todos).
//! - [`acp`] (`"acp"`): any Agent Client Protocol agent (Gemini CLI, Qwen Code,
//!   `opencode acp`, Zed's Claude and Codex adapters).
//! - [`codex`] (`"codex"`): OpenAI Codex, `codex app-server` (JSON-RPC over stdio,
//!   pinned to `@openai/codex@0.169.0`): approvals keyed by `approvalId`, questions
//!   from `item/tool/requestUserInput` (secret ones masked), plans → todos.
//!
//! Claude Code, ACP agents and Codex speak over stdio. In the sandbox they run under the
//! `atelier-stdio-host` binary (its own crate; [`stdio_host`] is its wire and client), which keeps a numbered transcript
//! of both directions and serves it over HTTP with SSE resume, so the manager reaches
//! them like `opencode serve` and a restarted manager loses nothing: the stdio adapters
//! ([`stdio::StdioRuntime`]) rebuild their state by replaying the transcript.
//!
//! Testing: the `fake-agent` binary (crate `atelier-fake-agent`) is a scenario-driven fake
//! agent that speaks all four protocols, so every adapter runs offline against every
//! scenario (`tests/conformance.rs`, `tests/conformance_matrix.rs`).

pub mod acp;
pub mod claude;
pub mod codex;
pub mod event;
pub mod launch;
pub mod opencode;
pub mod pump;
pub mod sse;
pub mod stdio;
pub mod stdio_host;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use event::{
    progress_percent, AgentEvent, Answer, Interaction, InteractionKind, InteractionOutcome,
    PermissionReply, Question, QuestionOption, RunState, TodoItem, TodoProgress, TodoStatus,
    ToolStatus, TurnEndReason, Usage,
};
pub use opencode::{OpenCodeConfig, OpenCodeRuntime};
pub use stdio::StdioRuntime;
pub use stdio_host::StdioConfig;

/// Which model to use: a provider id and the model id within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

/// What a session runs with. Everything but the directory is optional; the agent's
/// own defaults apply to what is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// The project directory the agent works in (inside the sandbox).
    pub directory: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// The agent or mode (`build`, `plan`, or a custom agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Reasoning effort, in the agent's own words (OpenCode: the model's `variant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Extra system instructions appended to the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// A title for the session, if the agent keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A session of an agent: its native id plus the spec it runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub spec: SessionSpec,
}

/// Where a consumer stands in a session's event stream.
///
/// Opaque to callers: store it next to each event (its `Display` form is a short
/// string) and pass the last one back to [`AgentRuntime::events`] to resume. It names
/// the last wire event fully delivered before this one (`last_event_id`) and how many
/// normalized events of the following wire event were already delivered (`skip`), so a
/// wire event that maps to several normalized events can be resumed in the middle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub last_event_id: Option<String>,
    pub skip: usize,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.skip,
            self.last_event_id.as_deref().unwrap_or("")
        )
    }
}

impl FromStr for Cursor {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Cursor> {
        let (skip, id) = s
            .split_once(':')
            .ok_or_else(|| RuntimeError::Protocol(format!("bad cursor {s:?}")))?;
        let skip = skip
            .parse()
            .map_err(|_| RuntimeError::Protocol(format!("bad cursor {s:?}")))?;
        Ok(Cursor {
            last_event_id: (!id.is_empty()).then(|| id.to_string()),
            skip,
        })
    }
}

/// A stream of normalized events, each with the cursor that resumes right after it.
/// It ends after a terminal error (the agent is unreachable and reconnecting gave up).
pub type EventStream = BoxStream<'static, Result<(Cursor, AgentEvent)>>;

/// Errors of a runtime adapter.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The agent could not be reached (connection refused, reset, timed out, …).
    #[error("cannot reach the agent: {0}")]
    Transport(String),
    /// The agent answered with an unexpected HTTP status.
    #[error("{method} {path} returned {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    /// The session or interaction does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The agent accepted a prompt but never recorded it, even after a retry.
    #[error("the prompt did not land after {attempts} attempts")]
    PromptNotDelivered { attempts: u32 },
    /// The event stream was lost and reconnecting gave up.
    #[error("event stream lost: {0}")]
    Disconnected(String),
    /// The agent sent something we cannot make sense of.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The agent rejected the credentials.
    #[error("unauthorized: the agent rejected the credentials")]
    Unauthorized,
    /// The agent config cannot be launched as it is (the field named).
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    /// [`runtime_for`] was asked for an adapter that does not exist.
    #[error("unknown runtime {0:?} (one of: opencode, claude, acp, codex)")]
    UnknownKind(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The pauses between asks of a server that is starting: short at first, so a fast
/// start is heard within milliseconds of it (every pause adds to a task's start), then
/// growing to a tenth of a second, so a slow start is not flooded with refused
/// connections (each one costs an emulated guest real work).
#[derive(Debug)]
pub(crate) struct StartPoll(Duration);

impl StartPoll {
    const FIRST: Duration = Duration::from_millis(10);
    const MOST: Duration = Duration::from_millis(100);

    pub(crate) fn new() -> StartPoll {
        StartPoll(Self::FIRST)
    }

    /// The next pause, longer each time up to the cap.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 3 / 2).min(Self::MOST);
        pause
    }
}

/// How an event stream reconnects after the connection drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Consecutive failed attempts before the stream gives up (reset by any success).
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// A connection that delivers nothing (not even a heartbeat) for this long is
    /// considered dead and reopened.
    pub idle_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> ReconnectPolicy {
        ReconnectPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

impl ReconnectPolicy {
    /// Delay before reconnect attempt `attempt` (1-based): exponential, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// The adapters [`runtime_for`] knows.
pub const RUNTIME_KINDS: &[&str] = &["opencode", "claude", "acp", "codex"];

/// Connection options of [`runtime_for`].
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// OpenCode: `OPENCODE_SERVER_PASSWORD` (Basic auth); Claude, ACP and Codex: the
    /// stdio host's bearer token (`ATELIER_STDIO_HOST_TOKEN`).
    pub secret: Option<String>,
    /// How event streams reconnect (the default when `None`).
    pub reconnect: Option<ReconnectPolicy>,
}

/// The adapter named `kind` (`"opencode"`, `"claude"`, `"acp"`, `"codex"`) for the
/// agent reached at `base_url`: `opencode serve` for OpenCode, the `atelier-stdio-host`
/// running the agent for Claude Code, ACP agents and Codex.
pub fn runtime_for(
    kind: &str,
    base_url: &str,
    options: &RuntimeOptions,
) -> Result<Box<dyn AgentRuntime>> {
    let reconnect = options.reconnect.clone().unwrap_or_default();
    match kind {
        "opencode" => {
            let mut cfg = OpenCodeConfig::new(base_url).with_reconnect(reconnect);
            cfg.password = options.secret.clone();
            Ok(Box::new(OpenCodeRuntime::new(cfg)?))
        }
        "claude" | "acp" | "codex" => {
            let mut cfg = StdioConfig::new(base_url).with_reconnect(reconnect);
            cfg.token = options.secret.clone();
            Ok(Box::new(match kind {
                "claude" => claude::runtime(cfg)?,
                "acp" => acp::runtime(cfg)?,
                _ => codex::runtime(cfg)?,
            }))
        }
        other => Err(RuntimeError::UnknownKind(other.to_string())),
    }
}

impl RuntimeError {
    /// A launch refused for what the agent config says in `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A coding agent behind a uniform interface.
///
/// Typical use: [`start_session`](AgentRuntime::start_session), then
/// [`events`](AgentRuntime::events) (subscribe *before* prompting, so nothing is missed),
/// then [`prompt`](AgentRuntime::prompt); answer every
/// [`AgentEvent::InteractionAsked`] with [`answer`](AgentRuntime::answer) until
/// [`AgentEvent::TurnEnded`].
#[async_trait::async_trait]
pub trait AgentRuntime: Send + Sync {
    /// A short name of the agent kind (`"opencode"`, …).
    fn kind(&self) -> &'static str;

    /// Waits until the agent answers (up to `timeout`) and returns a short description
    /// of what answers (a version, or the transport).
    async fn wait_ready(&self, timeout: Duration) -> Result<String>;

    /// Creates a new session.
    async fn start_session(&self, spec: &SessionSpec) -> Result<Session>;

    /// Attaches to an existing session by its native id (for example after a restart of
    /// the orchestrator); fails with [`RuntimeError::NotFound`] if the agent lost it.
    async fn attach_session(&self, id: &str, spec: &SessionSpec) -> Result<Session>;

    /// Sends a prompt and returns once the agent has recorded it (retrying once if the
    /// agent silently dropped it); [`RuntimeError::PromptNotDelivered`] otherwise.
    async fn prompt(&self, session: &Session, text: &str) -> Result<()>;

    /// Subscribes to the session's events. With `after`, resumes right after that
    /// cursor. The returned stream is already connected; it reconnects by itself (and
    /// resumes or resyncs) and ends only after a terminal error.
    async fn events(&self, session: &Session, after: Option<Cursor>) -> Result<EventStream>;

    /// Answers a pending interaction.
    async fn answer(&self, session: &Session, interaction_id: &str, answer: Answer) -> Result<()>;

    /// Aborts the current turn (the session stays usable). Pending interactions of the
    /// session are cancelled.
    async fn abort(&self, session: &Session) -> Result<()>;

    /// The session's pending interactions as the agent knows them now (use after a
    /// reconnect or a restart to re-surface what still needs a human).
    async fn pending(&self, session: &Session) -> Result<Vec<Interaction>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_through_its_string_form() {
        for c in [
            Cursor::default(),
            Cursor {
                last_event_id: Some("evt_1:with:colons".into()),
                skip: 2,
            },
        ] {
            let s = c.to_string();
            assert_eq!(s.parse::<Cursor>().expect("parse"), c, "{s}");
        }
        assert!("nope".parse::<Cursor>().is_err());
        assert!("x:1".parse::<Cursor>().is_err());
    }

    #[test]
    fn runtime_for_picks_adapters_by_name() {
        for kind in RUNTIME_KINDS {
            let rt = runtime_for(kind, "http://127.0.0.1:9", &RuntimeOptions::default())
                .expect("runtime");
            assert_eq!(rt.kind(), *kind);
        }
        assert!(RUNTIME_KINDS.contains(&"codex"));
        match runtime_for("aider", "http://127.0.0.1:9", &RuntimeOptions::default()) {
            Err(RuntimeError::UnknownKind(k)) => assert_eq!(k, "aider"),
            other => panic!("{:?}", other.map(|r| r.kind())),
        }
    }

    #[test]
    fn reconnect_delay_is_exponential_and_capped() {
        let p = ReconnectPolicy {
            max_attempts: 50,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(4), Duration::from_millis(800));
        assert_eq!(p.delay(5), Duration::from_secs(1));
        assert_eq!(p.delay(40), Duration::from_secs(1));
    }

    #[test]
    fn start_polls_begin_short_and_grow_to_a_cap() {
        let mut poll = StartPoll::new();
        let pauses: Vec<u128> = (0..10).map(|_| poll.next_pause().as_millis()).collect();
        assert_eq!(pauses, [10, 15, 22, 33, 50, 75, 100, 100, 100, 100]);
    }
}
