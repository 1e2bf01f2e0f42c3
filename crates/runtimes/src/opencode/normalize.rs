//! Normalization: OpenCode wire events → [`AgentEvent`]. Pure (no I/O), fed in stream
//! order by the runtime's pump.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::event::{
    AgentEvent, Interaction, InteractionKind, InteractionOutcome, Question, QuestionOption,
    RunState, TodoItem, TodoStatus, ToolStatus, TurnEndReason, Usage,
};

/// Turns OpenCode 1.x wire events (`{type, properties}`) of one session into
/// [`AgentEvent`]s. Stateful only where the wire needs it: which messages are the
/// user's, which parts are text or reasoning, whether the session is busy, what error
/// ended the turn, and what was already reported (usage per message, files per turn,
/// interactions, todos).
#[derive(Debug)]
pub struct Normalizer {
    session_id: String,
    directory: PathBuf,
    user_messages: HashSet<String>,
    reasoning_parts: HashSet<String>,
    /// `None` until the first status of the session is seen.
    busy: Option<bool>,
    turn_end: Option<(TurnEndReason, Option<String>)>,
    abort_requested: bool,
    usage_seen: HashMap<String, Usage>,
    files_seen: HashSet<String>,
    interactions_seen: HashSet<String>,
    open_interactions: Vec<String>,
    last_todos: Option<Vec<TodoItem>>,
    /// Full text last reported per part (a resync re-reads parts; don't repeat them).
    part_texts: HashMap<String, String>,
    /// The stream resumes from a caller's cursor.
    resumed: bool,
}

/// Events that are understood and deliberately not reported.
const IGNORED: &[&str] = &[
    "server.connected",
    "server.heartbeat",
    "session.created",
    "session.updated",
    "session.deleted",
    "session.compacted",
    "message.removed",
    "message.part.removed",
    "command.executed",
    "file.watcher.updated",
];

const EDIT_TOOLS: &[&str] = &["write", "edit", "multiedit", "apply_patch", "patch"];

impl Normalizer {
    pub fn new(session_id: &str, directory: &Path) -> Normalizer {
        Normalizer {
            session_id: session_id.to_string(),
            directory: directory.to_path_buf(),
            user_messages: HashSet::new(),
            reasoning_parts: HashSet::new(),
            busy: None,
            turn_end: None,
            abort_requested: false,
            usage_seen: HashMap::new(),
            files_seen: HashSet::new(),
            interactions_seen: HashSet::new(),
            open_interactions: Vec::new(),
            last_todos: None,
            part_texts: HashMap::new(),
            resumed: false,
        }
    }

    /// The stream resumes from a caller's cursor: interactions asked before it may be
    /// settled in it.
    pub fn set_resumed(&mut self) {
        self.resumed = true;
    }

    /// Learns message roles and part kinds from `GET /session/{id}/message` output.
    pub fn preload(&mut self, messages: &[Value]) {
        for m in messages {
            if str_at(m, "/info/role") == Some("user") {
                if let Some(id) = str_at(m, "/info/id") {
                    self.user_messages.insert(id.to_string());
                }
            }
            for p in m
                .get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if str_at(p, "/type") == Some("reasoning") {
                    if let Some(id) = str_at(p, "/id") {
                        self.reasoning_parts.insert(id.to_string());
                    }
                }
            }
        }
    }

    /// After a resync: interactions still open here but no longer pending on the
    /// server were settled while we were away; report them with the outcome we know
    /// (an answer given through the runtime), else as cancelled.
    pub fn settle_missing(
        &mut self,
        still_pending: &HashSet<String>,
        known: &HashMap<String, InteractionOutcome>,
    ) -> Vec<AgentEvent> {
        let gone: Vec<String> = self
            .open_interactions
            .iter()
            .filter(|id| !still_pending.contains(*id))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in gone {
            let outcome = known
                .get(&id)
                .cloned()
                .unwrap_or(InteractionOutcome::Cancelled);
            out.extend(self.resolve(&id, outcome));
        }
        out
    }

    /// Sets the known run state (from `GET /session/status` when a stream starts).
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = Some(busy);
    }

    /// Marks that the caller asked for an abort: the current turn ends as cancelled.
    /// Ignored while the session is known to be idle (there is nothing to cancel, and
    /// the next turn must not inherit it).
    pub fn abort_requested(&mut self) {
        if self.busy != Some(false) {
            self.abort_requested = true;
        }
    }

    /// Whether a turn is known to be in progress.
    pub fn is_busy(&self) -> bool {
        self.busy == Some(true)
    }

    /// The agent became unreachable for good: end an open turn with an error.
    pub fn connection_lost(&mut self, message: &str, turn_expected: bool) -> Vec<AgentEvent> {
        if !(self.is_busy() || turn_expected) {
            return Vec::new();
        }
        self.turn_end = Some((TurnEndReason::Error, Some(message.to_string())));
        let mut out = vec![AgentEvent::Status {
            state: RunState::Error,
            message: Some(message.to_string()),
        }];
        out.extend(self.end_turn(true));
        out
    }

    fn rel_path(&self, p: &str) -> String {
        let path = Path::new(p);
        match path.strip_prefix(&self.directory) {
            Ok(rel) if path.is_absolute() && !rel.as_os_str().is_empty() => {
                rel.to_string_lossy().into_owned()
            }
            _ => p.to_string(),
        }
    }

    fn files(&mut self, paths: impl IntoIterator<Item = String>) -> Option<AgentEvent> {
        let mut new = Vec::new();
        for p in paths {
            let rel = self.rel_path(&p);
            if !rel.is_empty() && self.files_seen.insert(rel.clone()) {
                new.push(rel);
            }
        }
        (!new.is_empty()).then_some(AgentEvent::FilesTouched { paths: new })
    }

    fn end_turn(&mut self, force: bool) -> Vec<AgentEvent> {
        if self.busy == Some(false) && !force {
            return Vec::new();
        }
        self.busy = Some(false);
        let (reason, error) = match self.turn_end.take() {
            Some(r) => r,
            None if self.abort_requested => (TurnEndReason::Cancelled, None),
            None => (TurnEndReason::Completed, None),
        };
        self.abort_requested = false;
        self.files_seen.clear();
        self.part_texts.clear();
        let mut out = vec![AgentEvent::Status {
            state: RunState::Idle,
            message: None,
        }];
        for id in std::mem::take(&mut self.open_interactions) {
            out.push(AgentEvent::InteractionResolved {
                id,
                outcome: InteractionOutcome::Cancelled,
            });
        }
        out.push(AgentEvent::TurnEnded { reason, error });
        out
    }

    fn resolve(&mut self, id: &str, outcome: InteractionOutcome) -> Vec<AgentEvent> {
        match self.open_interactions.iter().position(|i| i == id) {
            Some(pos) => {
                self.open_interactions.remove(pos);
            }
            // A stream resumed from a cursor never saw the asks made before it, but its
            // consumer did: their settlement must still reach it (once).
            None if self.resumed && self.interactions_seen.insert(id.to_string()) => {}
            // Unknown or already settled (e.g. reported cancelled at the end of a turn).
            None => return Vec::new(),
        }
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

    fn asked(&mut self, interaction: Option<Interaction>) -> Vec<AgentEvent> {
        let Some(i) = interaction else {
            return Vec::new();
        };
        if !self.interactions_seen.insert(i.id.clone()) {
            return Vec::new();
        }
        self.open_interactions.push(i.id.clone());
        vec![AgentEvent::InteractionAsked(i)]
    }

    fn session_of(props: &Value) -> Option<&str> {
        str_at(props, "/sessionID")
            .or_else(|| str_at(props, "/info/sessionID"))
            .or_else(|| str_at(props, "/part/sessionID"))
    }

    /// Normalizes one wire event `{type, properties}`.
    pub fn push(&mut self, wire: &Value) -> Vec<AgentEvent> {
        let kind = str_at(wire, "/type").unwrap_or("");
        let null = Value::Null;
        let props = wire.get("properties").unwrap_or(&null);
        match Self::session_of(props) {
            Some(s) if s != self.session_id => return Vec::new(),
            Some(_) => {}
            None => {
                // Instance-wide events: only file edits matter, attributed to our
                // session unless it is known to be idle (OpenCode does not say whose
                // edit it was).
                if kind == "file.edited" && self.busy != Some(false) {
                    if let Some(f) = str_at(props, "/file") {
                        return self.files([f.to_string()]).into_iter().collect();
                    }
                }
                return Vec::new();
            }
        }
        match kind {
            "session.status" => match str_at(props, "/status/type") {
                Some("busy") => {
                    if self.is_busy() {
                        Vec::new()
                    } else {
                        self.busy = Some(true);
                        vec![AgentEvent::Status {
                            state: RunState::Running,
                            message: None,
                        }]
                    }
                }
                Some("idle") => self.end_turn(false),
                Some("retry") => vec![AgentEvent::Status {
                    state: RunState::Retry,
                    message: str_at(props, "/status/message").map(str::to_string),
                }],
                _ => vec![raw(kind, props)],
            },
            "session.idle" => self.end_turn(false),
            "session.error" => {
                let name = str_at(props, "/error/name").unwrap_or("UnknownError");
                let message = str_at(props, "/error/data/message")
                    .map(|m| format!("{name}: {m}"))
                    .unwrap_or_else(|| name.to_string());
                if name == "MessageAbortedError" {
                    if self.turn_end.is_none() {
                        self.turn_end = Some((TurnEndReason::Cancelled, None));
                    }
                    Vec::new()
                } else {
                    self.turn_end = Some((TurnEndReason::Error, Some(message.clone())));
                    vec![AgentEvent::Status {
                        state: RunState::Error,
                        message: Some(message),
                    }]
                }
            }
            "message.updated" => self.message_updated(props),
            "message.part.updated" => match props.get("part") {
                Some(part) => self.part_updated(part),
                None => Vec::new(),
            },
            "message.part.delta" => {
                let (Some(mid), Some(pid), Some(delta)) = (
                    str_at(props, "/messageID"),
                    str_at(props, "/partID"),
                    str_at(props, "/delta"),
                ) else {
                    return Vec::new();
                };
                if self.user_messages.contains(mid)
                    || str_at(props, "/field").unwrap_or("text") != "text"
                {
                    return Vec::new();
                }
                let (message_id, part_id, delta) =
                    (mid.to_string(), pid.to_string(), Some(delta.to_string()));
                if self.reasoning_parts.contains(pid) {
                    vec![AgentEvent::Reasoning {
                        message_id,
                        part_id,
                        delta,
                        text: None,
                    }]
                } else {
                    vec![AgentEvent::Text {
                        message_id,
                        part_id,
                        delta,
                        text: None,
                    }]
                }
            }
            "todo.updated" => {
                let items = parse_todos(props.get("todos"));
                if self.last_todos.as_deref().unwrap_or(&[]) == items.as_slice() {
                    return Vec::new();
                }
                self.last_todos = Some(items.clone());
                vec![AgentEvent::Todos { items }]
            }
            "permission.asked" | "permission.updated" => self.asked(permission_interaction(props)),
            "permission.replied" => {
                let id = str_at(props, "/requestID").or_else(|| str_at(props, "/permissionID"));
                let reply = str_at(props, "/reply").or_else(|| str_at(props, "/response"));
                match (id, reply) {
                    (Some(id), Some(reply)) => {
                        let outcome = match reply {
                            "once" => InteractionOutcome::Once,
                            "always" => InteractionOutcome::Always,
                            _ => InteractionOutcome::Rejected,
                        };
                        let id = id.to_string();
                        self.resolve(&id, outcome)
                    }
                    _ => vec![raw(kind, props)],
                }
            }
            "question.asked" => self.asked(question_interaction(props)),
            "question.replied" => match str_at(props, "/requestID") {
                Some(id) => {
                    let answers = props
                        .get("answers")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().map(strings).collect())
                        .unwrap_or_default();
                    let id = id.to_string();
                    self.resolve(&id, InteractionOutcome::Answered { answers })
                }
                None => vec![raw(kind, props)],
            },
            "question.rejected" => match str_at(props, "/requestID") {
                Some(id) => {
                    let id = id.to_string();
                    self.resolve(&id, InteractionOutcome::Dismissed)
                }
                None => vec![raw(kind, props)],
            },
            "session.diff" => {
                if self.busy == Some(false) {
                    return Vec::new();
                }
                let files: Vec<String> = props
                    .get("diff")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|d| str_at(d, "/file").map(str::to_string))
                    .collect();
                self.files(files).into_iter().collect()
            }
            k if IGNORED.contains(&k) || k.starts_with("session.next.") => Vec::new(),
            // The preview V2 dialect's copies of permission/question events.
            k if k.starts_with("permission.v2.") || k.starts_with("question.v2.") => Vec::new(),
            _ => vec![raw(kind, props)],
        }
    }

    fn message_updated(&mut self, props: &Value) -> Vec<AgentEvent> {
        let Some(info) = props.get("info") else {
            return Vec::new();
        };
        let Some(id) = str_at(info, "/id") else {
            return Vec::new();
        };
        match str_at(info, "/role") {
            Some("user") => {
                self.user_messages.insert(id.to_string());
                Vec::new()
            }
            Some("assistant") => {
                let mut out = Vec::new();
                if let (Some(name), true) = (str_at(info, "/error/name"), self.is_busy()) {
                    if name == "MessageAbortedError" {
                        if self.turn_end.is_none() {
                            self.turn_end = Some((TurnEndReason::Cancelled, None));
                        }
                    } else if self.turn_end.is_none() {
                        let msg = str_at(info, "/error/data/message")
                            .map(|m| format!("{name}: {m}"))
                            .unwrap_or_else(|| name.to_string());
                        self.turn_end = Some((TurnEndReason::Error, Some(msg)));
                    }
                }
                let u = Usage {
                    message_id: Some(id.to_string()),
                    input_tokens: u64_at(info, "/tokens/input"),
                    output_tokens: u64_at(info, "/tokens/output"),
                    reasoning_tokens: u64_at(info, "/tokens/reasoning"),
                    cache_read: u64_at(info, "/tokens/cache/read"),
                    cache_write: u64_at(info, "/tokens/cache/write"),
                    cost_usd: info.get("cost").and_then(Value::as_f64),
                };
                let any = u.input_tokens
                    + u.output_tokens
                    + u.reasoning_tokens
                    + u.cache_read
                    + u.cache_write
                    > 0
                    || u.cost_usd.unwrap_or(0.0) > 0.0;
                // Reported once the message is complete: OpenCode re-sends the same
                // totals several times (at `finish`, then with `time.completed`).
                let completed = info
                    .pointer("/time/completed")
                    .is_some_and(|c| !c.is_null());
                if any && completed && self.usage_seen.get(id) != Some(&u) {
                    self.usage_seen.insert(id.to_string(), u.clone());
                    out.push(AgentEvent::Usage(u));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    fn part_updated(&mut self, part: &Value) -> Vec<AgentEvent> {
        let ptype = str_at(part, "/type").unwrap_or("");
        let message_id = str_at(part, "/messageID").unwrap_or("").to_string();
        let part_id = str_at(part, "/id").unwrap_or("").to_string();
        if self.user_messages.contains(&message_id) {
            return Vec::new();
        }
        match ptype {
            "text" | "reasoning" => {
                if ptype == "reasoning" {
                    self.reasoning_parts.insert(part_id.clone());
                }
                let text = str_at(part, "/text").unwrap_or("");
                let skip = text.is_empty()
                    || part.get("synthetic").and_then(Value::as_bool) == Some(true)
                    || part.get("ignored").and_then(Value::as_bool) == Some(true);
                if skip || self.part_texts.get(&part_id).map(String::as_str) == Some(text) {
                    return Vec::new();
                }
                self.part_texts.insert(part_id.clone(), text.to_string());
                let text = Some(text.to_string());
                if ptype == "reasoning" {
                    vec![AgentEvent::Reasoning {
                        message_id,
                        part_id,
                        delta: None,
                        text,
                    }]
                } else {
                    vec![AgentEvent::Text {
                        message_id,
                        part_id,
                        delta: None,
                        text,
                    }]
                }
            }
            "tool" => {
                let state = part.get("state").unwrap_or(&Value::Null);
                let status = match str_at(state, "/status") {
                    Some("pending") => ToolStatus::Pending,
                    Some("running") => ToolStatus::Running,
                    Some("completed") => ToolStatus::Completed,
                    Some("error") => ToolStatus::Failed,
                    _ => ToolStatus::Pending,
                };
                let name = str_at(part, "/tool").unwrap_or("unknown").to_string();
                let input = state
                    .get("input")
                    .filter(|i| {
                        !i.is_null() && i.as_object().map(|o| !o.is_empty()).unwrap_or(true)
                    })
                    .cloned();
                let id = str_at(part, "/callID").unwrap_or(&part_id).to_string();
                let mut out = vec![AgentEvent::ToolCall {
                    id,
                    name: name.clone(),
                    status,
                    title: str_at(state, "/title").map(str::to_string),
                    input,
                    output: str_at(state, "/output").map(str::to_string),
                    error: str_at(state, "/error").map(str::to_string),
                }];
                if status == ToolStatus::Completed && EDIT_TOOLS.contains(&name.as_str()) {
                    out.extend(self.files(edited_paths(state)));
                }
                out
            }
            "patch" => {
                let files: Vec<String> = part
                    .get("files")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect();
                self.files(files).into_iter().collect()
            }
            "step-start" | "step-finish" | "snapshot" | "agent" | "subtask" | "retry"
            | "compaction" | "file" => Vec::new(),
            _ => vec![raw("message.part.updated", part)],
        }
    }
}

pub(super) fn raw(kind: &str, value: &Value) -> AgentEvent {
    AgentEvent::Raw {
        kind: kind.to_string(),
        value: value.clone(),
    }
}

pub(super) fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

pub(super) fn u64_at(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(|x| x.as_u64().or_else(|| x.as_f64().map(|f| f.max(0.0) as u64)))
        .unwrap_or(0)
}

pub(super) fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

pub(super) fn short(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

/// Paths an edit-like tool reports in its state.
pub(super) fn edited_paths(state: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in [
        "/metadata/filepath",
        "/metadata/filePath",
        "/input/filePath",
        "/input/path",
        "/input/file",
    ] {
        if let Some(s) = str_at(state, p) {
            out.push(s.to_string());
            break;
        }
    }
    for f in state
        .pointer("/metadata/files")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = f
            .as_str()
            .or_else(|| str_at(f, "/filePath"))
            .or_else(|| str_at(f, "/filepath"))
            .or_else(|| str_at(f, "/path"))
            .or_else(|| str_at(f, "/file"));
        if let Some(s) = s {
            out.push(s.to_string());
        }
    }
    out
}

pub(super) fn parse_todos(v: Option<&Value>) -> Vec<TodoItem> {
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

/// A permission request (`permission.asked` 1.x, or legacy `permission.updated`).
pub(super) fn permission_interaction(p: &Value) -> Option<Interaction> {
    let id = str_at(p, "/id")?.to_string();
    let tool = str_at(p, "/permission")
        .or_else(|| str_at(p, "/type"))
        .unwrap_or("unknown")
        .to_string();
    let patterns = match p.get("patterns").or_else(|| p.get("pattern")) {
        Some(v) => strings(v),
        None => Vec::new(),
    };
    let title = str_at(p, "/title")
        .or_else(|| str_at(p, "/metadata/title"))
        .or_else(|| str_at(p, "/metadata/description"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            if patterns.is_empty() {
                tool.clone()
            } else {
                format!("{tool} {}", patterns.join(", "))
            }
        });
    let call_id = str_at(p, "/tool/callID")
        .or_else(|| str_at(p, "/callID"))
        .map(str::to_string);
    Some(Interaction {
        id,
        title,
        call_id,
        kind: InteractionKind::Permission {
            tool,
            patterns,
            always: p.get("always").map(strings).unwrap_or_default(),
            detail: p.get("metadata").cloned().unwrap_or(Value::Null),
        },
    })
}

/// A question request (`question.asked`).
pub(super) fn question_interaction(p: &Value) -> Option<Interaction> {
    let id = str_at(p, "/id")?.to_string();
    let questions = parse_questions(p.get("questions"));
    let title = questions
        .first()
        .map(|q| q.question.clone())
        .unwrap_or_else(|| "question".to_string());
    Some(Interaction {
        id,
        title,
        call_id: str_at(p, "/tool/callID").map(str::to_string),
        kind: InteractionKind::Question { questions },
    })
}

/// OpenCode's `QuestionInfo[]` (also carried by its ACP extension `opencode/question`).
pub(crate) fn parse_questions(v: Option<&Value>) -> Vec<Question> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|q| {
            Some(Question {
                question: str_at(q, "/question")?.to_string(),
                header: str_at(q, "/header").map(str::to_string),
                options: q
                    .get("options")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|o| {
                        let label = o.as_str().or_else(|| str_at(o, "/label"))?;
                        Some(QuestionOption {
                            label: label.to_string(),
                            description: str_at(o, "/description").map(str::to_string),
                        })
                    })
                    .collect(),
                multiple: q.get("multiple").and_then(Value::as_bool).unwrap_or(false),
                custom: q.get("custom").and_then(Value::as_bool).unwrap_or(true),
                secret: false,
            })
        })
        .collect()
}
