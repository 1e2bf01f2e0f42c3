//! Files inside a sandbox, relayed to its agent (which confines them to its roots).

use atelier_proto::{DirListing, FileStat};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiBytes, ApiQuery};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Absolute path in the sandbox, or relative to its work directory.
    pub path: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    pub path: String,
    /// Permission bits in octal, e.g. `644` (the default) or `600`.
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    pub path: String,
    /// Delete a non-empty directory with everything in it.
    #[serde(default)]
    pub recursive: bool,
}

fn check_path(path: &str) -> ApiResult<()> {
    if path.is_empty() {
        return Err(ApiError::invalid("path", "must not be empty"));
    }
    if path.contains('\0') {
        return Err(ApiError::invalid("path", "must not contain NUL"));
    }
    Ok(())
}

/// Read a file's bytes.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files/content", tag = "files", params(("id" = String, Path), PathQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Response> {
    check_path(&q.path)?;
    let agent = state.agent(&id).await?;
    let bytes = agent.read_file(&q.path).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Write a file (the request body is its content), creating parent directories.
#[utoipa::path(put, path = "/api/v1/sandboxes/{id}/files/content", tag = "files", params(("id" = String, Path), WriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileStat), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn write(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WriteQuery>,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<FileStat>> {
    check_path(&q.path)?;
    let mode =
        match &q.mode {
            Some(m) => Some(atelier_proto::parse_mode(m).ok_or_else(|| {
                ApiError::invalid("mode", "must be octal permission bits, e.g. 644")
            })?),
            None => None,
        };
    let agent = state.agent(&id).await?;
    Ok(Json(agent.write_file(&q.path, body, mode).await?))
}

/// List a directory, entries sorted by name.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files", tag = "files", params(("id" = String, Path), PathQuery),
    responses((status = 200, body = DirListing), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Json<DirListing>> {
    check_path(&q.path)?;
    let agent = state.agent(&id).await?;
    Ok(Json(agent.list_dir(&q.path).await?))
}

#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/files/stat", tag = "files", params(("id" = String, Path), PathQuery),
    responses((status = 200, body = FileStat), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Json<FileStat>> {
    check_path(&q.path)?;
    let agent = state.agent(&id).await?;
    Ok(Json(agent.stat(&q.path).await?))
}

/// Create a directory (and its parents).
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/files/mkdir", tag = "files", params(("id" = String, Path), PathQuery),
    responses((status = 200, body = FileStat), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn mkdir(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> ApiResult<Json<FileStat>> {
    check_path(&q.path)?;
    let agent = state.agent(&id).await?;
    Ok(Json(agent.mkdir(&q.path).await?))
}

/// Delete a file or directory.
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}/files", tag = "files", params(("id" = String, Path), DeleteQuery),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    check_path(&q.path)?;
    let agent = state.agent(&id).await?;
    agent.delete(&q.path, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}
