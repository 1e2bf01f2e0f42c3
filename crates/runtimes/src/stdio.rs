//! What the stdio adapters ([`crate::claude`], [`crate::acp`]) share: the runtime that
//! talks to an [`atelier-stdio-host`](crate::stdio_host) and the turn bookkeeping of
//! their normalizers.
//!
//! The host's transcript holds both directions of the agent's stdio, including every
//! answer and interrupt this adapter wrote (with a note of what it meant). A normalizer
//! is therefore a pure function of the transcript: [`StdioRuntime::events`] replays the
//! transcript from its first record to rebuild the normalizer's state and delivers only
//! what lies after the caller's cursor, and [`StdioRuntime::pending`] replays it to list
//! what is still open. Nothing is lost when the manager restarts, and nothing depends on
//! which process of the manager sent what.
//!
//! Cursors name a transcript record (`last_event_id` is its `seq`) plus how many
//! normalized events of the next record were delivered (`skip`). Without a cursor a
//! stream starts at the end of the transcript (like OpenCode's `/event`, live from now);
//! `Some(Cursor::default())` replays the session from its beginning.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::Value;

use crate::event::{
    AgentEvent, Answer, Interaction, InteractionOutcome, RunState, TodoItem, TurnEndReason,
};
use crate::pump::{EventSource, Fed};
use crate::sse::{SseEvent, SseParser};
use crate::stdio_host::{ByteStream, HostClient, Input, Record, RecordBody, StdioConfig};
use crate::ReconnectPolicy;
use crate::{AgentRuntime, Cursor, EventStream, Result, RuntimeError, Session, SessionSpec};

/// One stdio protocol: how to open a session, prompt, and read the transcript.
#[async_trait::async_trait]
pub(crate) trait Dialect: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    /// A fresh normalizer for `session` (fed the transcript from its first record).
    fn normalizer(&self, session: &Session) -> Box<dyn WireNormalizer>;
    async fn start_session(&self, host: &HostClient, spec: &SessionSpec) -> Result<Session>;
    async fn attach_session(
        &self,
        host: &HostClient,
        id: &str,
        spec: &SessionSpec,
    ) -> Result<Session>;
    /// The stdin line that prompts `session` with `text`.
    fn prompt(&self, session: &Session, text: &str) -> Input;
}

/// Transcript records of one session → normalized events, plus what to write back.
pub(crate) trait WireNormalizer: Send {
    /// Normalizes one record (in transcript order).
    fn push(&mut self, rec: &Record) -> Vec<AgentEvent>;
    /// Interactions open at this point of the transcript.
    fn pending(&self) -> Vec<Interaction>;
    /// The stdin lines that give `answer` to the open interaction `id`.
    fn answer(&self, id: &str, answer: &Answer) -> Result<Vec<Input>>;
    /// The stdin lines that abort the running turn (none when idle).
    fn abort(&self) -> Vec<Input>;
    /// Replies owed to agent requests this adapter does not support (each with an
    /// idempotent id, so replaying the transcript never answers twice).
    fn take_auto_replies(&mut self) -> Vec<Input>;
    /// The host became unreachable for good: end an open turn with an error.
    fn connection_lost(&mut self, message: &str) -> Vec<AgentEvent>;
    /// Why the agent is gone, once its exit is in the transcript.
    fn exited(&self) -> Option<&str>;
}

struct Cached {
    norm: Box<dyn WireNormalizer>,
    seq: u64,
}

/// A stdio agent (Claude Code, ACP) behind an `atelier-stdio-host`. Cheap to clone.
#[derive(Clone)]
pub struct StdioRuntime {
    dialect: Arc<dyn Dialect>,
    host: HostClient,
    cache: Arc<tokio::sync::Mutex<HashMap<String, Cached>>>,
}

impl std::fmt::Debug for StdioRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioRuntime")
            .field("kind", &self.dialect.kind())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl StdioRuntime {
    pub(crate) fn with_dialect(cfg: StdioConfig, dialect: Arc<dyn Dialect>) -> Result<Self> {
        Ok(StdioRuntime {
            dialect,
            host: HostClient::new(cfg)?,
            cache: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
        })
    }

    /// The host client (status, transcript, signals).
    pub fn host(&self) -> &HostClient {
        &self.host
    }

    /// Runs `f` on the session's normalizer, brought up to date with the transcript.
    async fn with_synced<T>(
        &self,
        session: &Session,
        f: impl FnOnce(&mut dyn WireNormalizer) -> T,
    ) -> Result<T> {
        let mut cache = self.cache.lock().await;
        let entry = cache.entry(session.id.clone()).or_insert_with(|| Cached {
            norm: self.dialect.normalizer(session),
            seq: 0,
        });
        for rec in self.host.transcript(entry.seq).await? {
            entry.seq = rec.seq;
            entry.norm.push(&rec);
            // Replies owed to the agent are the event stream's job.
            entry.norm.take_auto_replies();
        }
        Ok(f(entry.norm.as_mut()))
    }
}

#[async_trait::async_trait]
impl AgentRuntime for StdioRuntime {
    fn kind(&self) -> &'static str {
        self.dialect.kind()
    }

    async fn wait_ready(&self, timeout: std::time::Duration) -> Result<String> {
        let st = self.host.wait_ready(timeout).await?;
        if st.running() {
            Ok(format!("{} via atelier-stdio-host", self.dialect.kind()))
        } else {
            let msg = self
                .host
                .transcript(st.seq.saturating_sub(1))
                .await?
                .iter()
                .rev()
                .find_map(Record::exit_message)
                .unwrap_or_else(|| "the agent is not running".into());
            Err(RuntimeError::Disconnected(msg))
        }
    }

    async fn start_session(&self, spec: &SessionSpec) -> Result<Session> {
        self.dialect.start_session(&self.host, spec).await
    }

    async fn attach_session(&self, id: &str, spec: &SessionSpec) -> Result<Session> {
        self.dialect.attach_session(&self.host, id, spec).await
    }

    async fn prompt(&self, session: &Session, text: &str) -> Result<()> {
        // The host acknowledges the line once it is in the agent's stdin pipe, which
        // cannot drop it; a retried write carries the same id and is not repeated.
        self.host
            .send(&self.dialect.prompt(session, text))
            .await
            .map(|_| ())
    }

    async fn events(&self, session: &Session, after: Option<Cursor>) -> Result<EventStream> {
        let (through, skip) = match &after {
            Some(c) => {
                let through = match c.last_event_id.as_deref() {
                    None => 0,
                    Some(s) => s
                        .parse::<u64>()
                        .map_err(|_| RuntimeError::Protocol(format!("not a stdio cursor: {c}")))?,
                };
                (Some(through), c.skip)
            }
            None => (None, 0),
        };
        let mut body = self.host.open_events(0).await?;
        let mut parser = SseParser::new();
        // Wait for `hello`, so the subscription is live when we return.
        let deadline = tokio::time::Instant::now() + self.host.config().first_event_timeout;
        let mut buffered = Vec::new();
        let hello = loop {
            match tokio::time::timeout_at(deadline, body.next()).await {
                Ok(Some(Ok(bytes))) => {
                    buffered.extend(parser.push(&bytes));
                    if let Some(pos) = buffered
                        .iter()
                        .position(|e| e.event.as_deref() == Some("hello"))
                    {
                        let h = buffered.remove(pos);
                        break serde_json::from_str::<Value>(&h.data).unwrap_or_default();
                    }
                }
                Ok(Some(Err(e))) => return Err(RuntimeError::Transport(e.to_string())),
                Ok(None) => {
                    return Err(RuntimeError::Disconnected(
                        "the host closed the event stream before its hello".into(),
                    ))
                }
                Err(_) => {
                    return Err(RuntimeError::Transport(
                        "no hello from the host on the event stream".into(),
                    ))
                }
            }
        };
        let host_seq = hello.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if let Some(t) = through {
            if t > host_seq {
                return Err(RuntimeError::Protocol(format!(
                    "the cursor ({t}) lies beyond the host's transcript ({host_seq}): a different host?"
                )));
            }
        }
        let pump = Pump {
            host: self.host.clone(),
            norm: self.dialect.normalizer(session),
            parser,
            seq: 0,
            through: through.unwrap_or(host_seq),
            skip,
            buffered,
        };
        Ok(Box::pin(crate::pump::pump(pump, body)))
    }

    async fn answer(&self, session: &Session, interaction_id: &str, answer: Answer) -> Result<()> {
        let inputs = self
            .with_synced(session, |n| n.answer(interaction_id, &answer))
            .await??;
        for input in inputs {
            self.host.send(&input).await?;
        }
        Ok(())
    }

    async fn abort(&self, session: &Session) -> Result<()> {
        let (inputs, exited) = self
            .with_synced(session, |n| (n.abort(), n.exited().map(str::to_string)))
            .await?;
        if let Some(msg) = exited {
            return Err(RuntimeError::Disconnected(msg));
        }
        for input in inputs {
            self.host.send(&input).await?;
        }
        Ok(())
    }

    async fn pending(&self, session: &Session) -> Result<Vec<Interaction>> {
        self.with_synced(session, |n| n.pending()).await
    }
}

/// Drives one event stream: SSE from the host → records → normalized events.
struct Pump {
    host: HostClient,
    norm: Box<dyn WireNormalizer>,
    parser: SseParser,
    /// Last record fed to the normalizer.
    seq: u64,
    /// Records up to this one were delivered before (or predate a cursorless stream).
    through: u64,
    /// Normalized events of record `through + 1` already delivered.
    skip: usize,
    buffered: Vec<SseEvent>,
}

#[async_trait::async_trait]
impl EventSource for Pump {
    fn policy(&self) -> ReconnectPolicy {
        self.host.config().reconnect.clone()
    }

    fn parser(&mut self) -> &mut SseParser {
        &mut self.parser
    }

    fn take_buffered(&mut self) -> Vec<SseEvent> {
        std::mem::take(&mut self.buffered)
    }

    async fn reconnect(&mut self) -> Result<ByteStream> {
        let body = self.host.open_events(self.seq).await?;
        self.parser = SseParser::new();
        Ok(body)
    }

    async fn feed(&mut self, sse: SseEvent, attempt: &mut u32) -> Fed {
        if sse.event.as_deref() == Some("hello") {
            // A good connection: reset the failure count.
            *attempt = 0;
            return Fed::Events(Vec::new());
        }
        self.feed_record(sse).await
    }

    fn connection_lost(&mut self, message: &str) -> Vec<(Cursor, AgentEvent)> {
        let cursor = self.cursor();
        self.norm
            .connection_lost(message)
            .into_iter()
            .map(|ev| (cursor.clone(), ev))
            .collect()
    }

    fn peer(&self) -> &'static str {
        "host"
    }
}

impl Pump {
    fn cursor(&self) -> Cursor {
        Cursor {
            last_event_id: Some(self.seq.to_string()),
            skip: 0,
        }
    }

    async fn feed_record(&mut self, sse: SseEvent) -> Fed {
        let rec: Record = match serde_json::from_str(&sse.data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("undecodable transcript record: {e}");
                return Fed::Events(Vec::new());
            }
        };
        if rec.seq <= self.seq {
            // Already fed (a replay overlapping what we had).
            return Fed::Events(Vec::new());
        }
        let mut evs = self.norm.push(&rec);
        self.seq = rec.seq;
        for reply in self.norm.take_auto_replies() {
            if let Err(e) = self.host.send(&reply).await {
                tracing::warn!(id = %reply.id, "could not answer the agent: {e}");
            }
        }
        let out = if rec.seq <= self.through {
            Vec::new()
        } else {
            let skipped = if rec.seq == self.through + 1 {
                std::mem::take(&mut self.skip).min(evs.len())
            } else {
                0
            };
            evs.drain(..skipped);
            let n = evs.len();
            evs.into_iter()
                .enumerate()
                .map(|(k, ev)| {
                    let cursor = if k + 1 == n {
                        Cursor {
                            last_event_id: Some(rec.seq.to_string()),
                            skip: 0,
                        }
                    } else {
                        Cursor {
                            last_event_id: Some((rec.seq - 1).to_string()),
                            skip: skipped + k + 1,
                        }
                    };
                    (cursor, ev)
                })
                .collect()
        };
        if matches!(rec.body, RecordBody::Exit { .. }) {
            // The end, unless the host already started the agent again.
            let msg = rec
                .exit_message()
                .unwrap_or_else(|| "the agent exited".into());
            match self.host.status().await {
                Ok(st) if st.running() || st.seq > rec.seq => {}
                _ => return Fed::End(out, msg),
            }
        }
        Fed::Events(out)
    }
}

// ---------------------------------------------------------------------------------------
// Turn bookkeeping shared by the normalizers.
// ---------------------------------------------------------------------------------------

/// Where a session stands: whether a turn runs, how it should end, what is open and
/// what was already reported this turn.
#[derive(Debug)]
pub(crate) struct Turns {
    directory: PathBuf,
    pub busy: bool,
    /// Turns started so far (1 while the first runs).
    pub turn: u64,
    /// The adapter interrupted this turn: it ends as cancelled.
    pub abort_requested: bool,
    /// An answer halted this turn (a reject without message, a dismissed question): it
    /// ends as completed whatever the agent reports, as OpenCode's halted turns do.
    pub halted: bool,
    open: Vec<Interaction>,
    seen: HashSet<String>,
    files_seen: HashSet<String>,
    last_todos: Option<Vec<TodoItem>>,
    exited: Option<String>,
}

impl Turns {
    pub fn new(directory: &Path) -> Turns {
        Turns {
            directory: directory.to_path_buf(),
            busy: false,
            turn: 0,
            abort_requested: false,
            halted: false,
            open: Vec::new(),
            seen: HashSet::new(),
            files_seen: HashSet::new(),
            last_todos: None,
            exited: None,
        }
    }

    /// A turn starts (no-op while one runs).
    pub fn start(&mut self) -> Vec<AgentEvent> {
        if self.busy {
            return Vec::new();
        }
        self.busy = true;
        self.turn += 1;
        self.abort_requested = false;
        self.halted = false;
        self.files_seen.clear();
        vec![AgentEvent::Status {
            state: RunState::Running,
            message: None,
        }]
    }

    /// The turn ends: an error status first if it failed, then idle, open interactions
    /// cancelled, and the end with its reason.
    pub fn end(&mut self, reason: TurnEndReason, error: Option<String>) -> Vec<AgentEvent> {
        if !self.busy {
            return Vec::new();
        }
        self.busy = false;
        let (reason, error) = if self.abort_requested {
            (TurnEndReason::Cancelled, None)
        } else if self.halted {
            (TurnEndReason::Completed, None)
        } else {
            (reason, error)
        };
        self.abort_requested = false;
        self.halted = false;
        let mut out = Vec::new();
        if reason == TurnEndReason::Error {
            out.push(AgentEvent::Status {
                state: RunState::Error,
                message: error.clone(),
            });
        }
        out.push(AgentEvent::Status {
            state: RunState::Idle,
            message: None,
        });
        for i in std::mem::take(&mut self.open) {
            out.push(AgentEvent::InteractionResolved {
                id: i.id,
                outcome: InteractionOutcome::Cancelled,
            });
        }
        out.push(AgentEvent::TurnEnded { reason, error });
        out
    }

    /// The agent process is gone (`message` says why): a running turn fails.
    pub fn agent_gone(&mut self, message: &str) -> Vec<AgentEvent> {
        self.exited = Some(message.to_string());
        let mut out = self.end(TurnEndReason::Error, Some(message.to_string()));
        // Asks of an idle session (none expected) are void too.
        for i in std::mem::take(&mut self.open) {
            out.push(AgentEvent::InteractionResolved {
                id: i.id,
                outcome: InteractionOutcome::Cancelled,
            });
        }
        out
    }

    /// A new agent process started (the host restarted).
    pub fn agent_started(&mut self) -> Vec<AgentEvent> {
        let out = if self.exited.is_none() {
            self.agent_gone("the agent restarted")
        } else {
            Vec::new()
        };
        self.exited = None;
        out
    }

    pub fn exited(&self) -> Option<&str> {
        self.exited.as_deref()
    }

    /// The connection to the host is lost for good.
    pub fn connection_lost(&mut self, message: &str) -> Vec<AgentEvent> {
        self.end(TurnEndReason::Error, Some(message.to_string()))
    }

    /// The agent asks something (reported once per id).
    pub fn asked(&mut self, i: Interaction) -> Vec<AgentEvent> {
        if !self.seen.insert(i.id.clone()) {
            return Vec::new();
        }
        self.open.push(i.clone());
        vec![AgentEvent::InteractionAsked(i)]
    }

    /// An open interaction is settled (unknown or settled ids yield nothing).
    pub fn resolve(&mut self, id: &str, outcome: InteractionOutcome) -> Vec<AgentEvent> {
        let Some(pos) = self.open.iter().position(|i| i.id == id) else {
            return Vec::new();
        };
        self.open.remove(pos);
        let outcome = if self.abort_requested {
            InteractionOutcome::Cancelled
        } else {
            outcome
        };
        vec![AgentEvent::InteractionResolved {
            id: id.to_string(),
            outcome,
        }]
    }

    pub fn open(&self) -> &[Interaction] {
        &self.open
    }

    pub fn interaction(&self, id: &str) -> Option<&Interaction> {
        self.open.iter().find(|i| i.id == id)
    }

    /// A path relative to the session directory when it lies inside it.
    pub fn rel_path(&self, p: &str) -> String {
        let path = Path::new(p);
        match path.strip_prefix(&self.directory) {
            Ok(rel) if path.is_absolute() && !rel.as_os_str().is_empty() => {
                rel.to_string_lossy().into_owned()
            }
            _ => p.to_string(),
        }
    }

    /// Files touched, each reported once per turn.
    pub fn files(&mut self, paths: impl IntoIterator<Item = String>) -> Vec<AgentEvent> {
        let mut new = Vec::new();
        for p in paths {
            let rel = self.rel_path(&p);
            if !rel.is_empty() && self.files_seen.insert(rel.clone()) {
                new.push(rel);
            }
        }
        if new.is_empty() {
            Vec::new()
        } else {
            vec![AgentEvent::FilesTouched { paths: new }]
        }
    }

    /// A todo list, reported when it changed.
    pub fn todos(&mut self, items: Vec<TodoItem>) -> Vec<AgentEvent> {
        if self.last_todos.as_ref() == Some(&items) {
            return Vec::new();
        }
        self.last_todos = Some(items.clone());
        vec![AgentEvent::Todos { items }]
    }
}

/// The outcome an answer was noted with in the transcript (`note.outcome`).
pub(crate) fn noted_outcome(note: Option<&Value>) -> Option<InteractionOutcome> {
    note.and_then(|n| n.get("outcome"))
        .and_then(|o| serde_json::from_value(o.clone()).ok())
}

/// The note that records how an answer was meant.
pub(crate) fn outcome_note(outcome: &InteractionOutcome) -> Value {
    serde_json::json!({ "outcome": outcome })
}

/// The outcome an answer stands for.
pub(crate) fn outcome_of(answer: &Answer, is_question: bool) -> InteractionOutcome {
    use crate::event::PermissionReply;
    match answer {
        Answer::Permission { reply, .. } => match reply {
            PermissionReply::Once => InteractionOutcome::Once,
            PermissionReply::Always => InteractionOutcome::Always,
            PermissionReply::Reject => InteractionOutcome::Rejected,
        },
        Answer::Question { answers } => InteractionOutcome::Answered {
            answers: answers.clone(),
        },
        Answer::Dismiss if is_question => InteractionOutcome::Dismissed,
        Answer::Dismiss => InteractionOutcome::Rejected,
    }
}

pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

pub(crate) fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(id: &str) -> Interaction {
        Interaction {
            id: id.into(),
            title: "t".into(),
            call_id: None,
            kind: crate::InteractionKind::Permission {
                tool: "bash".into(),
                patterns: vec![],
                always: vec![],
                detail: Value::Null,
            },
        }
    }

    #[test]
    fn turns_cancel_open_asks_and_honour_abort_and_halt() {
        let mut t = Turns::new(Path::new("/p"));
        assert_eq!(t.start().len(), 1);
        assert!(t.start().is_empty(), "one turn at a time");
        assert_eq!(t.asked(perm("a")).len(), 1);
        assert!(t.asked(perm("a")).is_empty(), "asked once");
        t.halted = true;
        let out = t.end(TurnEndReason::Error, Some("interrupted".into()));
        assert_eq!(
            out,
            vec![
                AgentEvent::Status {
                    state: RunState::Idle,
                    message: None
                },
                AgentEvent::InteractionResolved {
                    id: "a".into(),
                    outcome: InteractionOutcome::Cancelled
                },
                AgentEvent::TurnEnded {
                    reason: TurnEndReason::Completed,
                    error: None
                },
            ]
        );
        t.start();
        t.asked(perm("b"));
        t.abort_requested = true;
        assert_eq!(
            t.resolve("b", InteractionOutcome::Once),
            vec![AgentEvent::InteractionResolved {
                id: "b".into(),
                outcome: InteractionOutcome::Cancelled
            }]
        );
        assert_eq!(
            t.end(TurnEndReason::Completed, None).last(),
            Some(&AgentEvent::TurnEnded {
                reason: TurnEndReason::Cancelled,
                error: None
            })
        );
        t.start();
        let out = t.agent_gone("the agent exited with code 70");
        assert_eq!(out.len(), 3);
        assert_eq!(t.exited(), Some("the agent exited with code 70"));
        assert!(t.agent_started().is_empty());
        assert_eq!(t.exited(), None);
    }

    #[test]
    fn files_are_relative_and_reported_once_per_turn() {
        let mut t = Turns::new(Path::new("/p"));
        t.start();
        assert_eq!(
            t.files([
                "/p/a.rs".to_string(),
                "b.rs".to_string(),
                "/elsewhere/c".to_string()
            ]),
            vec![AgentEvent::FilesTouched {
                paths: vec!["a.rs".into(), "b.rs".into(), "/elsewhere/c".into()]
            }]
        );
        assert!(t.files(["a.rs".to_string()]).is_empty());
        t.end(TurnEndReason::Completed, None);
        t.start();
        assert_eq!(t.files(["/p/a.rs".to_string()]).len(), 1);
    }
}
