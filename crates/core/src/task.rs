//! Tasks: a prompt run by a coding agent on a branch, tracked on a kanban.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, ValidationErrors};
use crate::{SandboxId, WorkspaceId};

/// Kanban status. `needs_attention` means an agent waits for a human answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Backlog,
    Queued,
    Running,
    NeedsAttention,
    Review,
    Done,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 8] = [
        Self::Backlog,
        Self::Queued,
        Self::Running,
        Self::NeedsAttention,
        Self::Review,
        Self::Done,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backlog => "backlog",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::NeedsAttention => "needs_attention",
            Self::Review => "review",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether moving from `self` to `to` is legal.
    pub fn can_move_to(self, to: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, to),
            (Backlog, Queued | Cancelled)
                | (Queued, Backlog | Running | Cancelled | Failed)
                | (Running, NeedsAttention | Review | Failed | Cancelled)
                | (NeedsAttention, Running | Review | Failed | Cancelled)
                | (Review, Done | Queued | Failed)
                | (Failed, Queued | Cancelled)
        )
    }

    /// Checks a move, naming both ends when it is illegal.
    pub fn move_to(self, to: TaskStatus) -> Result<TaskStatus, TaskTransitionError> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(TaskTransitionError { from: self, to })
        }
    }

    /// A sandbox and an agent are working on it.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::NeedsAttention)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a task cannot move from {from} to {to}")]
pub struct TaskTransitionError {
    pub from: TaskStatus,
    pub to: TaskStatus,
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown task status {s:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effort {
    Low,
    #[default]
    Medium,
    High,
    Max,
}

/// What a user sends to create a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Short title; defaults to the prompt's first line.
    #[serde(default)]
    pub title: Option<String>,
    pub prompt: String,
    /// Workspace id or name.
    pub workspace: String,
    /// Session template (default `implementation`).
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub effort: Effort,
    /// Branch to start from (default: the repo's branch in the workspace).
    #[serde(default)]
    pub base_branch: Option<String>,
    /// Which of the workspace's repos (its clone path; default: the first).
    #[serde(default)]
    pub repo: Option<String>,
    /// Queue it right away instead of leaving it in the backlog.
    #[serde(default)]
    pub dispatch: bool,
}

impl TaskSpec {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.prompt.trim().is_empty() {
            errors.push(FieldError::new("prompt", "must not be empty"));
        } else if self.prompt.len() > 256 * 1024 {
            errors.push(FieldError::new("prompt", "must be at most 256 KiB"));
        }
        if let Some(t) = &self.title {
            if t.trim().is_empty() || t.chars().count() > 200 {
                errors.push(FieldError::new("title", "must be 1–200 characters"));
            }
        }
        if self.workspace.trim().is_empty() {
            errors.push(FieldError::new("workspace", "must not be empty"));
        }
        if let Some(b) = &self.base_branch {
            if let Err(m) = crate::workspace::check_branch(b) {
                errors.push(FieldError::new("base_branch", m));
            }
        }
        errors.finish()
    }

    /// The title to show: the given one, or the prompt's first line (shortened).
    pub fn effective_title(&self) -> String {
        match &self.title {
            Some(t) => t.trim().to_owned(),
            None => {
                let line = self
                    .prompt
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("task")
                    .trim();
                let mut t: String = line.chars().take(80).collect();
                if line.chars().count() > 80 {
                    t.push('…');
                }
                t
            }
        }
    }
}

/// `atelier/<slug>-<short id>`: unique per task, safe as a git ref.
pub fn branch_name(title: &str, task_id: &str) -> String {
    let mut slug = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let short: String = task_id
        .chars()
        .rev()
        .take(6)
        .collect::<String>()
        .chars()
        .rev()
        .collect();
    if slug.is_empty() {
        format!("atelier/task-{short}")
    } else {
        format!("atelier/{slug}-{short}")
    }
}

/// One item of the agent's todo list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TodoItem {
    pub content: String,
    /// pending, in_progress, completed or cancelled.
    pub status: String,
}

/// Tokens and money spent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: f64,
}

/// What a task's agent spent through the model proxy, counted by the manager from the
/// provider's replies (the agent's own count is [`Usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProxyUsage {
    /// Calls forwarded to a provider.
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// From the prices of the workspace's provider models (0 where none are set).
    pub cost_usd: f64,
}

/// Lines added and removed per file on the task's branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileChange {
    pub path: String,
    pub added: u64,
    pub removed: u64,
}

/// A task as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: String,
    pub title: String,
    pub prompt: String,
    pub workspace_id: WorkspaceId,
    pub template: String,
    pub effort: Effort,
    pub base_branch: String,
    /// Clone path of the repo the task works in.
    pub repo: String,
    pub branch: String,
    pub status: TaskStatus,
    pub sandbox_id: Option<SandboxId>,
    pub todos: Vec<TodoItem>,
    /// Percentage of todos completed (cancelled ones excluded).
    pub progress: Option<u8>,
    pub files_touched: Vec<String>,
    pub usage: Usage,
    /// Calls made through the model proxy (providers with `proxy: true`).
    pub proxy_usage: ProxyUsage,
    pub changes: Vec<FileChange>,
    pub summary: Option<String>,
    pub error: Option<String>,
    /// The push of the branch to the repo's origin at the end of the last turn, when the
    /// workspace asks for one.
    pub push: Option<PushOutcome>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How pushing a task's branch to origin went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushOutcome {
    /// The origin, shown without credentials.
    pub remote: String,
    pub branch: String,
    /// The commit now at the branch's head in origin.
    pub commit: Option<String>,
    pub ok: bool,
    /// Git's message when the push failed.
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Progress from a todo list: completed / (all but cancelled).
pub fn progress(todos: &[TodoItem]) -> Option<u8> {
    let counted: Vec<_> = todos.iter().filter(|t| t.status != "cancelled").collect();
    if counted.is_empty() {
        return None;
    }
    let done = counted.iter().filter(|t| t.status == "completed").count();
    Some(((done * 100) / counted.len()) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn the_kanban_moves_that_make_sense_are_the_only_legal_ones() {
        for (from, to) in [
            (Backlog, Queued),
            (Queued, Running),
            (Running, NeedsAttention),
            (NeedsAttention, Running),
            (Running, Review),
            (Review, Done),
        ] {
            assert!(from.can_move_to(to), "{from} → {to}");
        }
        for (from, to) in [
            (Backlog, Running),
            (Done, Running),
            (Cancelled, Queued),
            (Review, Running),
            (Backlog, Done),
        ] {
            assert!(!from.can_move_to(to), "{from} → {to}");
            assert_eq!(
                from.move_to(to).unwrap_err().to_string(),
                format!("a task cannot move from {from} to {to}")
            );
        }
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), s);
        }
    }

    #[test]
    fn branch_names_are_unique_slugs() {
        assert_eq!(
            branch_name("Fix the login bug!", "t0123456789ab"),
            "atelier/fix-the-login-bug-6789ab"
        );
        assert_eq!(branch_name("!!!", "tabcdef"), "atelier/task-abcdef");
        assert!(crate::workspace::check_branch(&branch_name("Ünïcode & spaces", "t1")).is_ok());
    }

    #[test]
    fn progress_ignores_cancelled_todos() {
        let t = |s: &str| TodoItem {
            content: "x".into(),
            status: s.into(),
        };
        assert_eq!(progress(&[]), None);
        assert_eq!(
            progress(&[t("completed"), t("pending"), t("cancelled")]),
            Some(50)
        );
    }

    #[test]
    fn specs_are_validated_and_titles_derived() {
        let spec: TaskSpec =
            serde_json::from_value(serde_json::json!({"prompt": "  ", "workspace": ""})).unwrap();
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(fields, ["prompt", "workspace"]);
        let spec: TaskSpec = serde_json::from_value(
            serde_json::json!({"prompt": "\nAdd a README\nwith details", "workspace": "w"}),
        )
        .unwrap();
        assert_eq!(spec.effective_title(), "Add a README");
    }
}
