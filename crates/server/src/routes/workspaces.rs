use atelier_core::{Workspace, WorkspacePatch, WorkspaceSpec};
use atelier_store::Idempotency;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::error::ApiResult;
use crate::extract::{check_json_content_type, parse_json, ApiBytes, IdempotencyKey};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

/// Create a workspace. Secrets are write-only: the answer shows their names and a mask.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = WorkspaceSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retried create returns the first result")),
    responses((status = 201, body = Workspace), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    headers: axum::http::HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    check_json_content_type(&headers)?;
    let spec: WorkspaceSpec = parse_json(&body)?;
    spec.validate()?;
    define_image(&state, &spec)?;
    let idem = key.map(|k| Idempotency::new(k, &body));
    let (workspace, event) = state.store.create_workspace(&spec, idem.as_ref()).await?;
    let status = if event.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    if let Some(e) = event {
        state.bus.publish(e);
    }
    Ok((status, Json(workspace)))
}

/// Records the workspace's image extension, so that its image can be built and listed.
fn define_image(state: &AppState, spec: &WorkspaceSpec) -> ApiResult<()> {
    if let Some(image) = &spec.image {
        state
            .images
            .define(image)
            .map_err(|e| crate::error::ApiError::internal(e.to_string()))?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = Vec<Workspace>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Workspace>>> {
    Ok(Json(state.store.list_workspaces().await?))
}

/// Get a workspace by id or by name.
#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}", tag = "workspaces",
    params(("workspace" = String, Path, description = "id or name")),
    responses((status = 200, body = Workspace), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Workspace>> {
    Ok(Json(state.store.get_workspace(&key).await?))
}

/// Change a workspace: fields present replace the stored ones; secrets are merged
/// (`secrets` adds or overwrites, `remove_secrets` deletes by name or path).
#[utoipa::path(patch, path = "/api/v1/workspaces/{workspace}", tag = "workspaces", request_body = WorkspacePatch,
    params(("workspace" = String, Path, description = "id or name")),
    responses((status = 200, body = Workspace), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(key): Path<String>,
    crate::extract::ApiJson(patch): crate::extract::ApiJson<WorkspacePatch>,
) -> ApiResult<Json<Workspace>> {
    let id = super::workspace_id(&state.store, &key).await?;
    let mut spec = state.store.workspace_spec(&id).await?;
    spec.apply(patch);
    spec.validate()?;
    define_image(&state, &spec)?;
    let (workspace, event) = state.store.update_workspace(&id, &spec).await?;
    state.bus.publish(event);
    // A change to what the prebuild captured makes it stale (and, with auto_rebuild,
    // starts a new one) now rather than at the next periodic check.
    let prebuilds = state.prebuilds.clone();
    tokio::spawn(async move {
        if let Err(e) = prebuilds.check(&id).await {
            tracing::warn!(workspace = %id, error = %e, "prebuild check after an update failed");
        }
    });
    Ok(Json(workspace))
}

/// Delete a workspace; refused (409) while it still has sandboxes.
#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}", tag = "workspaces",
    params(("workspace" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    let id = super::workspace_id(&state.store, &key).await?;
    let event = state.store.delete_workspace(&id).await?;
    state.bus.publish(event);
    Ok(StatusCode::NO_CONTENT)
}
