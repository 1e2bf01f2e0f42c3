//! Normalized agent events: one vocabulary for every coding agent.
//!
//! The shape follows the Agent Client Protocol's `session/update` kinds (message chunks,
//! thoughts, tool calls, plan entries, usage) plus what ACP lacks and Atelier needs:
//! questions with options, permission requests as first-class interactions, cost in USD
//! and an explicit end-of-turn with a reason. Every adapter maps its wire protocol onto
//! these types; nothing agent-specific leaks out except through [`AgentEvent::Raw`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One normalized event from a coding agent's session.
///
/// Serialized with a `type` tag in snake_case, e.g.
/// `{"type":"turn_ended","reason":"completed"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The session's run state changed (busy, idle, backing off after a provider error, …).
    Status {
        state: RunState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Assistant text. `delta` appends to the part; `text` is the part's full text so far
    /// (authoritative: replace whatever was accumulated from deltas).
    Text {
        message_id: String,
        part_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// Model reasoning ("thinking"), same merge rules as [`AgentEvent::Text`].
    Reasoning {
        message_id: String,
        part_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delta: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A tool call was created or changed; upsert by `id`.
    ToolCall {
        id: String,
        name: String,
        status: ToolStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Files the agent created or modified, relative to the session directory when they
    /// lie inside it. Each path is reported once per turn.
    FilesTouched { paths: Vec<String> },
    /// The agent's todo list (full replacement).
    Todos { items: Vec<TodoItem> },
    /// The agent needs a human: a permission to grant or questions to answer.
    InteractionAsked(Interaction),
    /// A pending interaction was settled (by us, by a rule, or by cancellation).
    InteractionResolved {
        id: String,
        outcome: InteractionOutcome,
    },
    /// Token usage and cost of one assistant message, reported when the message is
    /// complete (OpenCode: one message per model step). Sum over `message_id`s for a
    /// turn or session total; a repeated `message_id` replaces the earlier figures.
    Usage(Usage),
    /// The turn is over; the session waits for the next prompt.
    TurnEnded {
        reason: TurnEndReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A wire event the adapter does not map, kept for logs and debugging.
    Raw { kind: String, value: Value },
}

impl AgentEvent {
    /// The snake_case tag of this event (`"text"`, `"turn_ended"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            AgentEvent::Status { .. } => "status",
            AgentEvent::Text { .. } => "text",
            AgentEvent::Reasoning { .. } => "reasoning",
            AgentEvent::ToolCall { .. } => "tool_call",
            AgentEvent::FilesTouched { .. } => "files_touched",
            AgentEvent::Todos { .. } => "todos",
            AgentEvent::InteractionAsked(_) => "interaction_asked",
            AgentEvent::InteractionResolved { .. } => "interaction_resolved",
            AgentEvent::Usage(_) => "usage",
            AgentEvent::TurnEnded { .. } => "turn_ended",
            AgentEvent::Raw { .. } => "raw",
        }
    }
}

/// Run state of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Idle,
    Error,
    Retry,
}

/// Status of a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEndReason {
    Completed,
    Cancelled,
    Error,
}

/// One todo entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoItem {
    pub content: String,
    pub status: TodoStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// Status of a todo entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TodoStatus {
    Pending,
    InProgress,
    Completed,
    Cancelled,
}

impl TodoStatus {
    /// Tolerant parse of an agent's status word; unknown words count as pending.
    pub fn parse_lenient(s: &str) -> TodoStatus {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', ' '], "_")
            .as_str()
        {
            "in_progress" | "inprogress" | "active" | "running" => TodoStatus::InProgress,
            "completed" | "complete" | "done" => TodoStatus::Completed,
            "cancelled" | "canceled" | "deleted" => TodoStatus::Cancelled,
            _ => TodoStatus::Pending,
        }
    }
}

/// Percentage of finished todos, `completed / (total - cancelled)`, rounded down.
/// `None` when there is nothing to do (empty list, or everything cancelled).
pub fn progress_percent(todos: &[TodoItem]) -> Option<u8> {
    let p = TodoProgress::of(todos);
    p.percent
}

/// Counts behind [`progress_percent`], plus the current task (the first in-progress item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TodoProgress {
    pub completed: usize,
    pub in_progress: usize,
    pub pending: usize,
    /// Items that count, i.e. all but the cancelled ones.
    pub total: usize,
    pub current: Option<String>,
    pub percent: Option<u8>,
}

impl TodoProgress {
    pub fn of(todos: &[TodoItem]) -> TodoProgress {
        let count = |s: TodoStatus| todos.iter().filter(|t| t.status == s).count();
        let completed = count(TodoStatus::Completed);
        let in_progress = count(TodoStatus::InProgress);
        let pending = count(TodoStatus::Pending);
        let total = completed + in_progress + pending;
        // completed <= total, so the quotient is within 0..=100.
        let percent = (completed * 100)
            .checked_div(total)
            .and_then(|p| u8::try_from(p).ok());
        let current = todos
            .iter()
            .find(|t| t.status == TodoStatus::InProgress)
            .map(|t| t.content.clone());
        TodoProgress {
            completed,
            in_progress,
            pending,
            total,
            current,
            percent,
        }
    }
}

/// Something the agent needs from a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// The agent's request id; pass it to `AgentRuntime::answer`.
    pub id: String,
    /// A one-line summary for a UI or a notification.
    pub title: String,
    /// The tool call that is blocked on this interaction, when the agent says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(flatten)]
    pub kind: InteractionKind,
}

/// The two kinds of human-in-the-loop requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InteractionKind {
    /// Permission to run a tool on some patterns (paths, commands).
    Permission {
        /// The permission or tool name (`edit`, `bash`, …).
        tool: String,
        /// What the tool wants to touch (file paths, command lines, …).
        patterns: Vec<String>,
        /// Patterns that an "always" reply would allow from now on.
        #[serde(default)]
        always: Vec<String>,
        /// Agent-specific details (a diff, the command, …).
        #[serde(default)]
        detail: Value,
    },
    /// One or more questions, each with options.
    Question { questions: Vec<Question> },
}

/// One question of a [`InteractionKind::Question`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub question: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default)]
    pub options: Vec<QuestionOption>,
    /// Several options may be selected.
    #[serde(default)]
    pub multiple: bool,
    /// Free text is accepted besides the options.
    #[serde(default = "yes")]
    pub custom: bool,
    /// The answer is a secret (a password, a token): mask it while it is typed, and
    /// keep it out of logs. The adapter reports it masked once answered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

fn yes() -> bool {
    true
}

/// One option of a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionOption {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// How an interaction was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InteractionOutcome {
    /// Permission granted for this one request.
    Once,
    /// Permission granted for this request and matching ones.
    Always,
    /// Permission refused.
    Rejected,
    /// Questions answered (one list of labels or free text per question).
    Answered { answers: Vec<Vec<String>> },
    /// Questions dismissed without an answer.
    Dismissed,
    /// The turn ended (abort, error, crash) while the interaction was pending.
    Cancelled,
}

/// Token usage and cost.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    #[serde(default)]
    pub cache_read: u64,
    #[serde(default)]
    pub cache_write: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// A human's answer to an [`Interaction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Answer {
    /// Reply to a permission request. A `reject` with a `message` lets the agent go on
    /// with that feedback; without one, the agent halts the turn.
    Permission {
        reply: PermissionReply,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Answers to a question request, one list per question, in question order.
    Question { answers: Vec<Vec<String>> },
    /// Dismiss the interaction (a question is rejected, a permission refused).
    Dismiss,
}

/// Reply to a permission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionReply {
    Once,
    Always,
    Reject,
}

impl PermissionReply {
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionReply::Once => "once",
            PermissionReply::Always => "always",
            PermissionReply::Reject => "reject",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn todo(content: &str, status: TodoStatus) -> TodoItem {
        TodoItem {
            content: content.into(),
            status,
            priority: None,
        }
    }

    #[test]
    fn progress_excludes_cancelled_and_names_current_task() {
        assert_eq!(progress_percent(&[]), None);
        let items = vec![
            todo("a", TodoStatus::Completed),
            todo("b", TodoStatus::InProgress),
            todo("c", TodoStatus::Pending),
            todo("d", TodoStatus::Cancelled),
        ];
        assert_eq!(progress_percent(&items), Some(33));
        let p = TodoProgress::of(&items);
        assert_eq!(
            (p.completed, p.in_progress, p.pending, p.total),
            (1, 1, 1, 3)
        );
        assert_eq!(p.current.as_deref(), Some("b"));
        assert_eq!(progress_percent(&[todo("x", TodoStatus::Cancelled)]), None);
        assert_eq!(
            progress_percent(&[todo("x", TodoStatus::Completed)]),
            Some(100)
        );
    }

    #[test]
    fn lenient_todo_status() {
        assert_eq!(
            TodoStatus::parse_lenient("in-progress"),
            TodoStatus::InProgress
        );
        assert_eq!(TodoStatus::parse_lenient("Done"), TodoStatus::Completed);
        assert_eq!(TodoStatus::parse_lenient("canceled"), TodoStatus::Cancelled);
        assert_eq!(TodoStatus::parse_lenient("???"), TodoStatus::Pending);
    }

    #[test]
    fn events_round_trip_through_json() {
        let events = vec![
            AgentEvent::Status {
                state: RunState::Retry,
                message: Some("rate limited".into()),
            },
            AgentEvent::Text {
                message_id: "m".into(),
                part_id: "p".into(),
                delta: Some("he".into()),
                text: None,
            },
            AgentEvent::ToolCall {
                id: "c".into(),
                name: "bash".into(),
                status: ToolStatus::Failed,
                title: None,
                input: Some(json!({"command": "ls"})),
                output: None,
                error: Some("boom".into()),
            },
            AgentEvent::InteractionAsked(Interaction {
                id: "per_1".into(),
                title: "edit src/a.rs".into(),
                call_id: Some("call_1".into()),
                kind: InteractionKind::Permission {
                    tool: "edit".into(),
                    patterns: vec!["src/a.rs".into()],
                    always: vec!["*".into()],
                    detail: json!({"diff": "+x"}),
                },
            }),
            AgentEvent::InteractionAsked(Interaction {
                id: "que_1".into(),
                title: "Which DB?".into(),
                call_id: None,
                kind: InteractionKind::Question {
                    questions: vec![Question {
                        question: "Which DB?".into(),
                        header: Some("DB".into()),
                        options: vec![QuestionOption {
                            label: "SQLite".into(),
                            description: None,
                        }],
                        multiple: false,
                        custom: true,
                        secret: false,
                    }],
                },
            }),
            AgentEvent::InteractionResolved {
                id: "que_1".into(),
                outcome: InteractionOutcome::Answered {
                    answers: vec![vec!["SQLite".into()]],
                },
            },
            AgentEvent::Usage(Usage {
                message_id: Some("m".into()),
                input_tokens: 10,
                output_tokens: 5,
                cost_usd: Some(0.25),
                ..Usage::default()
            }),
            AgentEvent::TurnEnded {
                reason: TurnEndReason::Error,
                error: Some("boom".into()),
            },
            AgentEvent::Raw {
                kind: "x.y".into(),
                value: json!({"a": 1}),
            },
        ];
        for e in events {
            let v = serde_json::to_value(&e).expect("serialize");
            assert_eq!(v["type"], e.kind(), "{v}");
            let back: AgentEvent = serde_json::from_value(v.clone()).expect("deserialize");
            assert_eq!(back, e, "{v}");
        }
        let v = serde_json::to_value(AgentEvent::InteractionAsked(Interaction {
            id: "per_1".into(),
            title: "t".into(),
            call_id: None,
            kind: InteractionKind::Permission {
                tool: "bash".into(),
                patterns: vec![],
                always: vec![],
                detail: Value::Null,
            },
        }))
        .expect("serialize");
        assert_eq!(v["kind"], "permission");
        assert_eq!(v["tool"], "bash");
    }
}
