//! Errors as HTTP responses in the shared [`ErrorBody`] shape.

use std::io;
use std::path::Path;

use atelier_proto::ErrorBody;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answered to the client: a status and a stable code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.body.error.details = details;
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_value", message)
    }

    pub fn forbidden_path(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden_path", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "already_exists", message)
    }

    pub fn is_a_directory(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "is_a_directory", message)
    }

    pub fn not_a_directory(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "not_a_directory", message)
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
        .with_details(serde_json::json!({ "limit": limit }))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Maps an I/O error on `path` to a client-meaningful error.
    pub fn from_io(err: &io::Error, path: &Path) -> Self {
        let p = path.display();
        match err.raw_os_error() {
            Some(libc::ENOENT) => {
                return Self::not_found(format!("{p}: no such file or directory"))
            }
            Some(libc::ENOTDIR) => return Self::not_a_directory(format!("{p}: not a directory")),
            Some(libc::EISDIR) => return Self::is_a_directory(format!("{p}: is a directory")),
            Some(libc::ENOTEMPTY) => {
                return Self::conflict(format!(
                    "{p}: directory not empty (pass recursive=true to delete it)"
                ))
            }
            Some(libc::EEXIST) => return Self::already_exists(format!("{p}: already exists")),
            Some(libc::EACCES) | Some(libc::EPERM) => {
                return Self::new(
                    StatusCode::FORBIDDEN,
                    "permission_denied",
                    format!("{p}: permission denied"),
                )
            }
            Some(libc::ELOOP) => {
                return Self::forbidden_path(format!("{p}: too many levels of symbolic links"))
            }
            Some(libc::ENAMETOOLONG) => return Self::invalid(format!("{p}: name too long")),
            Some(libc::ENOSPC) => {
                return Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "no_space",
                    format!("{p}: no space left on device"),
                )
            }
            _ => {}
        }
        match err.kind() {
            io::ErrorKind::NotFound => Self::not_found(format!("{p}: not found")),
            io::ErrorKind::InvalidInput => Self::invalid(format!("{p}: {err}")),
            _ => Self::internal(format!("{p}: {err}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body).unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"error serialization failed"}}"#.to_vec()
        });
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
