//! Session templates: built-ins, overridden globally and per workspace.

use atelier_core::template::SessionTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

/// The templates in force globally.
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", responses((status = 200, body = Vec<SessionTemplate>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<SessionTemplate>>> {
    Ok(Json(state.store.templates(None).await?))
}

fn checked(name: &str, template: SessionTemplate) -> ApiResult<SessionTemplate> {
    if template.name != name {
        return Err(ApiError::invalid(
            "name",
            format!("must match the path ({name:?})"),
        ));
    }
    template.validate()?;
    Ok(template)
}

/// Override (or add) a template for every workspace.
#[utoipa::path(put, path = "/api/v1/templates/{name}", tag = "templates", params(("name" = String, Path)),
    request_body = SessionTemplate, responses((status = 200, body = SessionTemplate), (status = 422, body = ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(t): ApiJson<SessionTemplate>,
) -> ApiResult<Json<SessionTemplate>> {
    let t = checked(&name, t)?;
    state.store.put_template(None, &t).await?;
    Ok(Json(t))
}

/// Drop the global override (back to the built-in).
#[utoipa::path(delete, path = "/api/v1/templates/{name}", tag = "templates", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_template(None, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "a global override of template {name:?}"
        )))
    }
}

/// The templates in force for a workspace.
#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}/templates", tag = "templates", params(("workspace" = String, Path)),
    responses((status = 200, body = Vec<SessionTemplate>), (status = 404, body = ErrorBody)))]
pub async fn list_for_workspace(
    State(state): State<AppState>,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<SessionTemplate>>> {
    let id = super::workspace_id(&state.store, &ws).await?;
    Ok(Json(state.store.templates(Some(&id)).await?))
}

/// Override (or add) a template for one workspace.
#[utoipa::path(put, path = "/api/v1/workspaces/{workspace}/templates/{name}", tag = "templates",
    params(("workspace" = String, Path), ("name" = String, Path)), request_body = SessionTemplate,
    responses((status = 200, body = SessionTemplate), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_for_workspace(
    State(state): State<AppState>,
    Path((ws, name)): Path<(String, String)>,
    ApiJson(t): ApiJson<SessionTemplate>,
) -> ApiResult<Json<SessionTemplate>> {
    let id = super::workspace_id(&state.store, &ws).await?;
    let t = checked(&name, t)?;
    state.store.put_template(Some(&id), &t).await?;
    Ok(Json(t))
}
