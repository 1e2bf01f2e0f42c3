//! What a task operation can fail with; mapped to HTTP once, in [`crate::error`]. A task
//! whose turn fails records its error's text.

use atelier_runtimes::RuntimeError;

use crate::coding_agent::LaunchError;
use crate::lifecycle::LifecycleError;
use crate::prebuild::PrebuildError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Store(#[from] atelier_store::StoreError),
    /// The task as asked is not valid (each field named).
    #[error(transparent)]
    Validation(#[from] atelier_core::ValidationErrors),
    /// The task's sandbox could not be made, reached or released.
    #[error(transparent)]
    Sandbox(#[from] LifecycleError),
    #[error(transparent)]
    Prebuild(#[from] PrebuildError),
    /// The sandbox's `atelier-agent` refused or failed a request.
    #[error(transparent)]
    Agent(#[from] atelier_agent_client::Error),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The coding agent refused or failed a request.
    #[error("coding agent: {0}")]
    Runtime(#[from] RuntimeError),
    /// The coding agent never answered after its start (the message ends with its log).
    #[error("{0}")]
    AgentDidNotStart(String),
    /// The task's status does not allow the operation.
    #[error("{0}")]
    InvalidState(String),
    /// The operation needs something the task does not have now (a running agent…).
    #[error("{0}")]
    Conflict(String),
    #[error("{what} not found")]
    NotFound { what: String },
    /// The task or its workspace names something that does not exist.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A step of the turn failed (git, the agent's event stream…).
    #[error("{0}")]
    Failed(String),
}

impl TaskError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::NotFound {
            what: what.to_string(),
        }
    }
}

pub type TaskResult<T> = Result<T, TaskError>;
