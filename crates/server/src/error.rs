//! The one error shape of the API: `{"error":{"code","message","details"}}`.

use atelier_agent_client::Error as AgentError;
use atelier_core::{TransitionError, ValidationErrors};
use atelier_proto::{ErrorBody, ErrorDetail};
use atelier_store::StoreError;
use atelier_vmm::VmmError;
use axum::http::StatusCode;

use crate::coding_agent::LaunchError;
use crate::lifecycle::LifecycleError;
use crate::prebuild::PrebuildError;
use crate::tasks::TaskError;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: serde_json::Value,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// Something behind the manager (an agent, a server in a sandbox) failed.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "bad_gateway", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token: send `Authorization: Bearer <token>` (see <data-dir>/admin.token)",
        )
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    /// 422 naming one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            format!("{field}: {message}"),
        )
        .with_details(serde_json::json!({ "fields": [{ "field": field, "message": message }] }))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                details: self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        let message = errors.to_string();
        let fields = serde_json::to_value(errors.into_vec()).unwrap_or_default();
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message)
            .with_details(serde_json::json!({ "fields": fields }))
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
            .with_details(serde_json::json!({ "state": e.state, "operation": e.operation }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what } => Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found")),
            StoreError::Conflict(m) => Self::conflict(m),
            StoreError::IdempotencyMismatch => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency-Key: this key was already used with a different request body",
            )
            .with_details(serde_json::json!({ "fields": [{ "field": "Idempotency-Key", "message": "reused with a different body" }] })),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<VmmError> for ApiError {
    fn from(e: VmmError) -> Self {
        match e {
            VmmError::Unsupported { .. } => {
                Self::new(StatusCode::CONFLICT, "unsupported", e.to_string())
            }
            VmmError::NotAvailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "driver_unavailable",
                e.to_string(),
            ),
            other => Self::internal(other.to_string()),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Store(e) => e.into(),
            LifecycleError::Transition(e) => e.into(),
            LifecycleError::Vmm(e) => e.into(),
            LifecycleError::Agent(e) => e.into(),
            LifecycleError::NotRunning { state, .. } => {
                Self::new(StatusCode::CONFLICT, "invalid_state", e.to_string())
                    .with_details(serde_json::json!({ "state": state }))
            }
            LifecycleError::DidNotStart { state, .. } => {
                Self::new(StatusCode::CONFLICT, "sandbox_failed", e.to_string())
                    .with_details(serde_json::json!({ "state": state }))
            }
            LifecycleError::Timeout { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string())
            }
            LifecycleError::NoRuntime { .. } => Self::internal(e.to_string()),
            LifecycleError::Invalid(e) => e.into(),
            LifecycleError::NoFittingPrebuild => Self::conflict(e.to_string()),
        }
    }
}

impl From<PrebuildError> for ApiError {
    fn from(e: PrebuildError) -> Self {
        match e {
            PrebuildError::Store(e) => e.into(),
            PrebuildError::Sandbox(e) => e.into(),
            PrebuildError::Invalid { field, message } => Self::invalid(field, message),
            PrebuildError::NotRunning { .. } => Self::conflict(e.to_string()),
            PrebuildError::InProgress(m) => {
                Self::new(StatusCode::CONFLICT, "prebuild_in_progress", m)
            }
            PrebuildError::InitFailed { .. } | PrebuildError::Step { .. } => {
                Self::internal(e.to_string())
            }
        }
    }
}

impl From<LaunchError> for ApiError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Invalid { field, message } => Self::invalid(field, message),
            LaunchError::Agent(e) => e.into(),
            LaunchError::Failed(m) => Self::internal(m),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Store(e) => e.into(),
            TaskError::Validation(e) => e.into(),
            TaskError::Sandbox(e) => e.into(),
            TaskError::Prebuild(e) => e.into(),
            TaskError::Agent(e) => e.into(),
            TaskError::Launch(e) => e.into(),
            TaskError::Runtime(_) | TaskError::AgentDidNotStart(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "agent_error", e.to_string())
            }
            TaskError::InvalidState(m) => Self::new(StatusCode::CONFLICT, "invalid_state", m),
            TaskError::Conflict(m) => Self::conflict(m),
            TaskError::NotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            TaskError::Invalid { field, message } => Self::invalid(field, message),
            TaskError::Failed(m) => Self::internal(m),
        }
    }
}

impl From<AgentError> for ApiError {
    /// The agent's own 4xx answers (missing file, path escape…) pass through as they are.
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Agent { status, body } if (400..500).contains(&status) && status != 401 => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let code = agent_code(&body.error.code);
                Self {
                    status,
                    code,
                    message: body.error.message,
                    details: body.error.details,
                }
            }
            other => Self::new(
                StatusCode::BAD_GATEWAY,
                "agent_unreachable",
                format!("the sandbox's agent failed: {other}"),
            ),
        }
    }
}

/// Maps the agent's error codes onto static strings (unknown ones become `agent_error`).
fn agent_code(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "not_found",
        "forbidden_path",
        "invalid_value",
        "is_a_directory",
        "not_a_directory",
        "already_exists",
        "conflict",
        "payload_too_large",
        "malformed_json",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("agent_error")
}
