//! Supervised services (dev servers, coding agents) inside a sandbox.

use atelier_proto::{LogChunk, ServiceSpec, ServiceStatus};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

fn check_name(name: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "must be 1–64 of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
        ))
    }
}

#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/services", tag = "services", params(("id" = String, Path)),
    responses((status = 200, body = Vec<ServiceStatus>), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ServiceStatus>>> {
    let agent = state.agent(&id).await?;
    Ok(Json(agent.services().await?))
}

/// Define a service and (re)start it under the agent's watchdog.
#[utoipa::path(put, path = "/api/v1/sandboxes/{id}/services/{name}", tag = "services", request_body = ServiceSpec,
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ServiceStatus), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    ApiJson(spec): ApiJson<ServiceSpec>,
) -> ApiResult<Json<ServiceStatus>> {
    check_name(&name)?;
    let agent = state.agent(&id).await?;
    Ok(Json(agent.put_service(&name, &spec).await?))
}

#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/services/{name}", tag = "services",
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ServiceStatus), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceStatus>> {
    check_name(&name)?;
    let agent = state.agent(&id).await?;
    Ok(Json(agent.service(&name).await?))
}

#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/services/{name}/start", tag = "services",
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ServiceStatus), (status = 404, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceStatus>> {
    check_name(&name)?;
    let agent = state.agent(&id).await?;
    Ok(Json(agent.start_service(&name).await?))
}

#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/services/{name}/stop", tag = "services",
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ServiceStatus), (status = 404, body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<ServiceStatus>> {
    check_name(&name)?;
    let agent = state.agent(&id).await?;
    Ok(Json(agent.stop_service(&name).await?))
}

#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}/services/{name}", tag = "services",
    params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_name(&name)?;
    let agent = state.agent(&id).await?;
    agent.delete_service(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset to read from (the `next_offset` of the previous read).
    #[serde(default)]
    pub offset: u64,
    /// Bytes to read at most (default 64 KiB, at most 1 MiB).
    pub limit: Option<u64>,
}

/// A slice of a service's log.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/services/{name}/logs", tag = "services",
    params(("id" = String, Path), ("name" = String, Path), LogQuery),
    responses((status = 200, body = LogChunk), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<LogChunk>> {
    check_name(&name)?;
    if q.limit.is_some_and(|l| l == 0 || l > 1024 * 1024) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1048576"));
    }
    let agent = state.agent(&id).await?;
    Ok(Json(agent.service_logs(&name, q.offset, q.limit).await?))
}
