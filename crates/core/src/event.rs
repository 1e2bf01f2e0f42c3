//! Typed events published on the event stream and persisted with a monotonic id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{SandboxId, WorkspaceId};
use crate::sandbox::SandboxState;

/// One event as stored and streamed: `id` orders events and lets a client resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. The `type` tag is also the SSE event name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A sandbox moved from one state to another.
    SandboxState {
        sandbox_id: SandboxId,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<SandboxState>,
        to: SandboxState,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    WorkspaceCreated {
        workspace_id: WorkspaceId,
        name: String,
    },
    WorkspaceUpdated {
        workspace_id: WorkspaceId,
        name: String,
    },
    WorkspaceDeleted {
        workspace_id: WorkspaceId,
    },
    /// A task moved on the kanban.
    TaskStatus {
        task_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<crate::TaskStatus>,
        to: crate::TaskStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Something the task's agent did (a normalized agent event).
    TaskActivity {
        task_id: String,
        #[schema(value_type = Object)]
        activity: serde_json::Value,
    },
    /// An agent asks a human (permission or question): it is in the attention feed.
    AttentionAsked {
        task_id: String,
        interaction_id: String,
        title: String,
    },
    /// The ask was answered (or withdrawn).
    AttentionResolved {
        task_id: String,
        interaction_id: String,
        outcome: String,
    },
    /// A prebuild moved from one state to another, or became stale.
    PrebuildState {
        prebuild_id: String,
        workspace_id: WorkspaceId,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<crate::PrebuildState>,
        to: crate::PrebuildState,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl EventKind {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SandboxState { .. } => "sandbox_state",
            Self::WorkspaceCreated { .. } => "workspace_created",
            Self::WorkspaceUpdated { .. } => "workspace_updated",
            Self::WorkspaceDeleted { .. } => "workspace_deleted",
            Self::TaskStatus { .. } => "task_status",
            Self::TaskActivity { .. } => "task_activity",
            Self::AttentionAsked { .. } => "attention_asked",
            Self::AttentionResolved { .. } => "attention_resolved",
            Self::PrebuildState { .. } => "prebuild_state",
        }
    }

    /// The task this event is about, if any (used for filtering).
    pub fn task_id(&self) -> Option<&str> {
        match self {
            Self::TaskStatus { task_id, .. }
            | Self::TaskActivity { task_id, .. }
            | Self::AttentionAsked { task_id, .. }
            | Self::AttentionResolved { task_id, .. } => Some(task_id),
            _ => None,
        }
    }

    /// The sandbox this event is about, if any (used for filtering).
    pub fn sandbox_id(&self) -> Option<&SandboxId> {
        match self {
            Self::SandboxState { sandbox_id, .. } => Some(sandbox_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_flat_with_a_type_tag_matching_their_name() {
        let kind = EventKind::SandboxState {
            sandbox_id: SandboxId::from_trusted("sabcdefghjkm".into()),
            from: Some(SandboxState::Creating),
            to: SandboxState::Running,
            reason: None,
        };
        let e = Event {
            id: 7,
            at: Utc::now(),
            kind: kind.clone(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], kind.name());
        assert_eq!(v["id"], 7);
        assert_eq!(v["to"], "running");
        assert!(v.get("reason").is_none());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
