//! Prebuilds of a workspace: build, promote, status, staleness check, logs.

use atelier_core::prebuild::{Prebuild, PrebuildState};
use atelier_core::SandboxId;
use atelier_proto::LogChunk;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{IntoParams, ToSchema};

use super::workspace_id;
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_json_content_type, parse_json, ApiBytes, ApiQuery};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartPrebuild {
    /// Make this running sandbox of the workspace the prebuild (it ends stopped) instead
    /// of building one from the workspace's settings.
    pub from_sandbox: Option<String>,
}

/// A workspace's prebuilds at a glance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PrebuildStatus {
    /// The prebuild new sandboxes start from (the newest ready one), if any.
    pub current: Option<Prebuild>,
    /// The build in progress, if any.
    pub building: Option<Prebuild>,
    /// Every prebuild of the workspace, newest first.
    pub history: Vec<Prebuild>,
}

async fn status_of(
    state: &AppState,
    workspace: &atelier_core::WorkspaceId,
) -> ApiResult<PrebuildStatus> {
    let driver = state.lifecycle.driver().kind().to_string();
    let history: Vec<Prebuild> = state
        .store
        .list_prebuilds(Some(workspace))
        .await?
        .into_iter()
        .map(|r| r.prebuild)
        .collect();
    let current = state
        .store
        .current_prebuild(workspace, &driver)
        .await?
        .map(|r| r.prebuild);
    let building = history
        .iter()
        .find(|p| p.state == PrebuildState::Building)
        .cloned();
    Ok(PrebuildStatus {
        current,
        building,
        history,
    })
}

/// Start a prebuild of the workspace (or promote one of its running sandboxes). The
/// build runs in the background; follow it with the status and logs routes.
#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/prebuilds", tag = "prebuilds",
    params(("workspace" = String, Path, description = "id or name")),
    request_body(content = Option<StartPrebuild>),
    responses((status = 202, body = Prebuild), (status = 404, body = ErrorBody),
              (status = 409, description = "a build is in progress, or the sandbox is not running", body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
    headers: axum::http::HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<Prebuild>)> {
    let req: StartPrebuild = if body.is_empty() {
        StartPrebuild::default()
    } else {
        check_json_content_type(&headers)?;
        parse_json(&body)?
    };
    let workspace = workspace_id(&state.store, &workspace).await?;
    let prebuild = match req.from_sandbox {
        Some(raw) => {
            let sandbox = SandboxId::parse(&raw)
                .ok_or_else(|| ApiError::invalid("from_sandbox", format!("no sandbox {raw:?}")))?;
            state.prebuilds.promote(&workspace, sandbox).await?
        }
        None => state.prebuilds.build(&workspace).await?,
    };
    Ok((StatusCode::ACCEPTED, Json(prebuild)))
}

/// The workspace's current prebuild, the build in progress, and the history.
#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/prebuilds", tag = "prebuilds",
    params(("workspace" = String, Path, description = "id or name")),
    responses((status = 200, body = PrebuildStatus), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<PrebuildStatus>> {
    let workspace = workspace_id(&state.store, &workspace).await?;
    Ok(Json(status_of(&state, &workspace).await?))
}

/// Check the current prebuild against its inputs now (`git ls-remote` of every repo,
/// the workspace's settings, the base image). A stale prebuild keeps serving; with the
/// workspace's `prebuild.auto_rebuild` a new build starts.
#[utoipa::path(post, path = "/api/v1/workspaces/{workspace}/prebuilds/check", tag = "prebuilds",
    params(("workspace" = String, Path, description = "id or name")),
    responses((status = 200, body = PrebuildStatus), (status = 404, body = ErrorBody)))]
pub async fn check(
    State(state): State<AppState>,
    Path(workspace): Path<String>,
) -> ApiResult<Json<PrebuildStatus>> {
    let workspace = workspace_id(&state.store, &workspace).await?;
    state.prebuilds.check(&workspace).await?;
    Ok(Json(status_of(&state, &workspace).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListPrebuilds {
    /// Only prebuilds in this state (`building`, `ready`, `failed`, `superseded`).
    pub state: Option<String>,
    /// Only the ready prebuilds that are stale.
    #[serde(default)]
    pub stale: bool,
}

/// Every workspace's prebuilds, newest first (for an overview of what is building,
/// failed or stale).
#[utoipa::path(get, path = "/api/v1/prebuilds", tag = "prebuilds", params(ListPrebuilds),
    responses((status = 200, body = Vec<Prebuild>), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListPrebuilds>,
) -> ApiResult<Json<Vec<Prebuild>>> {
    let wanted: Option<PrebuildState> = q
        .state
        .as_deref()
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::invalid("state", "one of building, ready, failed, superseded")
            })
        })
        .transpose()?;
    Ok(Json(
        state
            .store
            .list_prebuilds(None)
            .await?
            .into_iter()
            .map(|r| r.prebuild)
            .filter(|p| wanted.is_none_or(|w| p.state == w))
            .filter(|p| !q.stale || (p.state == PrebuildState::Ready && p.stale.is_some()))
            .collect(),
    ))
}

fn prebuild_id(raw: &str) -> ApiResult<String> {
    atelier_core::id::PrebuildId::parse(raw)
        .map(|p| p.to_string())
        .ok_or_else(|| ApiError::not_found(format!("prebuild {raw:?}")))
}

/// One prebuild.
#[utoipa::path(get, path = "/api/v1/prebuilds/{id}", tag = "prebuilds",
    params(("id" = String, Path)),
    responses((status = 200, body = Prebuild), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Prebuild>> {
    let id = prebuild_id(&id)?;
    Ok(Json(state.store.get_prebuild(&id).await?.prebuild))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PrebuildLogQuery {
    /// Byte offset to read from (the `next_offset` of the previous read).
    #[serde(default)]
    pub offset: u64,
    /// Bytes to read at most (default 64 KiB, at most 1 MiB).
    pub limit: Option<u64>,
}

/// A slice of a prebuild's build log (the clone, each init command's output, the
/// capture). Poll with `next_offset` while the prebuild is `building`.
#[utoipa::path(get, path = "/api/v1/prebuilds/{id}/logs", tag = "prebuilds",
    params(("id" = String, Path), PrebuildLogQuery),
    responses((status = 200, body = LogChunk), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PrebuildLogQuery>,
) -> ApiResult<Json<LogChunk>> {
    let id = prebuild_id(&id)?;
    let limit = q.limit.unwrap_or(64 * 1024);
    if limit == 0 || limit > 1024 * 1024 {
        return Err(ApiError::invalid("limit", "must be between 1 and 1048576"));
    }
    state.store.get_prebuild(&id).await?;
    let path = state.prebuilds.log_path(&id);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Json(LogChunk {
                offset: q.offset,
                next_offset: q.offset,
                size: 0,
                data: String::new(),
            }))
        }
        Err(e) => return Err(ApiError::internal(format!("reading the build log: {e}"))),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .len();
    let offset = q.offset.min(size);
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut buf = Vec::new();
    file.take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(LogChunk {
        offset,
        next_offset: offset + buf.len() as u64,
        size,
        data: String::from_utf8_lossy(&buf).into_owned(),
    }))
}
