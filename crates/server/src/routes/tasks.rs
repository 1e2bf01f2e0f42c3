//! Tasks and the attention feed.

use atelier_core::{Task, TaskSpec, TaskStatus};
use atelier_store::{Idempotency, Interaction, NewTask, TaskEvent};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::extract::{
    check_json_content_type, parse_json, ApiBytes, ApiJson, ApiQuery, IdempotencyKey,
};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

/// Create a task; with `"dispatch": true` it is queued at once (else it waits in the backlog).
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", request_body = TaskSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retried create returns the same task")),
    responses((status = 201, body = Task), (status = 200, body = Task), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    headers: axum::http::HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<Task>)> {
    check_json_content_type(&headers)?;
    let spec: TaskSpec = parse_json(&body)?;
    let idem = key.map(|k| Idempotency::new(k, &body));
    let (task, created) = state.tasks.create(&spec, idem.as_ref()).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(task),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// Workspace id or name.
    pub workspace: Option<String>,
}

/// Tasks, newest first.
#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(ListQuery), responses((status = 200, body = Vec<Task>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<Task>>> {
    let mut statuses = vec![];
    for s in q
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        statuses.push(
            s.parse()
                .map_err(|e: String| ApiError::invalid("status", e))?,
        );
    }
    let workspace = match &q.workspace {
        Some(w) => Some(
            state
                .store
                .get_workspace(w)
                .await
                .map_err(|_| ApiError::invalid("workspace", format!("no workspace {w:?}")))?
                .id,
        ),
        None => None,
    };
    let tasks = state
        .store
        .list_tasks(&statuses, workspace.as_ref())
        .await?;
    Ok(Json(tasks.into_iter().map(|r| r.task).collect()))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    Ok(Json(state.store.get_task(&id).await?.task))
}

/// Queue a task from the backlog (or retry a failed one).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/dispatch", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn dispatch(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    Ok(Json(state.tasks.dispatch(&id).await?))
}

/// Stop a task; its sandbox is destroyed, its preserved branch kept.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    Ok(Json(state.tasks.cancel(&id).await?))
}

/// Accept a task in review.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/done", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn done(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Task>> {
    Ok(Json(state.tasks.done(&id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this sequence number.
    #[serde(default)]
    pub after: i64,
    /// At most this many (default 500, at most 5000).
    pub limit: Option<u32>,
}

/// The task's timeline: every normalized agent event, in order.
#[utoipa::path(get, path = "/api/v1/tasks/{id}/events", tag = "tasks", params(("id" = String, Path), EventsQuery),
    responses((status = 200, body = Vec<TaskEvent>), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Json<Vec<TaskEvent>>> {
    state.store.get_task(&id).await?;
    let limit = q.limit.unwrap_or(500);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 5000"));
    }
    Ok(Json(state.store.task_events(&id, q.after, limit).await?))
}

/// The branch's unified diff against its base (once the turn has ended).
#[utoipa::path(get, path = "/api/v1/tasks/{id}/diff", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody)))]
pub async fn diff(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<String> {
    state.store.task_diff(&id).await?.ok_or_else(|| {
        ApiError::not_found(format!("a diff for task {id:?} (its turn has not ended)"))
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttentionQuery {
    /// Include answered asks too.
    #[serde(default)]
    pub all: bool,
}

/// Every pending permission request and question across tasks, oldest first.
#[utoipa::path(get, path = "/api/v1/attention", tag = "attention", params(AttentionQuery),
    responses((status = 200, body = Vec<Interaction>)))]
pub async fn attention(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AttentionQuery>,
) -> ApiResult<Json<Vec<Interaction>>> {
    Ok(Json(state.store.interactions(None, q.all).await?))
}

/// Answer an ask: `{"kind":"permission","reply":"once|always|reject","message":…}`,
/// `{"kind":"question","answers":[["label"],…]}` or `{"kind":"dismiss"}`. It reaches the
/// agent at once.
#[utoipa::path(post, path = "/api/v1/attention/{task_id}/{interaction_id}/answer", tag = "attention",
    params(("task_id" = String, Path), ("interaction_id" = String, Path)),
    request_body(content = Object, description = "the answer"),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn answer(
    State(state): State<AppState>,
    Path((task_id, interaction_id)): Path<(String, String)>,
    ApiJson(answer): ApiJson<atelier_runtimes::Answer>,
) -> ApiResult<StatusCode> {
    state
        .tasks
        .answer(&task_id, &interaction_id, answer)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// A review template, e.g. `security-review`.
    pub template: String,
    #[serde(default)]
    pub effort: atelier_core::Effort,
}

/// Chain a review: a new task runs `template` on this task's branch, in a fresh sandbox.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/review", tag = "tasks", params(("id" = String, Path)), request_body = ReviewRequest,
    responses((status = 201, body = Task), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn review(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let parent = state.store.get_task(&id).await?.task;
    if !matches!(parent.status, TaskStatus::Review | TaskStatus::Done) {
        return Err(ApiError::conflict(format!(
            "task {id} is {}; only work in review or done can be reviewed",
            parent.status
        )));
    }
    let template = state
        .store
        .template(Some(&parent.workspace_id), &req.template)
        .await
        .map_err(|_| {
            ApiError::invalid(
                "template",
                format!("no session template {:?}", req.template),
            )
        })?;
    let new = NewTask {
        title: format!("{}: {}", template.title, parent.title),
        prompt: parent.prompt.clone(),
        workspace_id: parent.workspace_id.clone(),
        template: template.name.clone(),
        effort: req.effort,
        base_branch: parent.branch.clone(),
        repo: parent.repo.clone(),
        status: TaskStatus::Queued,
        parent_id: Some(parent.id.clone()),
    };
    let (rec, event) = state.store.create_task(&new, None).await?;
    if let Some(e) = event {
        state.bus.publish(e);
    }
    state.tasks.wake();
    Ok((StatusCode::CREATED, Json(rec.task)))
}
