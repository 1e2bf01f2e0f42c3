use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use atelier_core::sandbox::CreateSandbox;
use atelier_core::{FieldError, Sandbox, ValidationErrors};
use atelier_proto::{CommandLine, ExecEvent, ExecRequest, ExecResult};
use atelier_store::{Idempotency, SandboxFilter};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::sandbox_id;
use crate::error::{ApiError, ApiResult};
use crate::extract::{
    check_json_content_type, parse_json, ApiBytes, ApiJson, ApiQuery, IdempotencyKey,
};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// Answer only once the sandbox is running (or failed).
    #[serde(default)]
    pub wait: bool,
}

/// Create a sandbox. It is recorded in `creating` and comes up in the background; with
/// `?wait=true` the answer comes once it is `running` (or in `error`, with the reason).
#[utoipa::path(post, path = "/api/v1/sandboxes", tag = "sandboxes", request_body = CreateSandbox,
    params(CreateQuery, ("Idempotency-Key" = Option<String>, Header, description = "a retried create returns the same sandbox")),
    responses((status = 201, body = Sandbox), (status = 200, description = "idempotent replay", body = Sandbox),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CreateQuery>,
    IdempotencyKey(key): IdempotencyKey,
    headers: axum::http::HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    check_json_content_type(&headers)?;
    let req: CreateSandbox = parse_json(&body)?;
    let idem = key.map(|k| Idempotency::new(k, &body));
    let (sandbox, fresh) = state.lifecycle.create_sandbox(&req, idem.as_ref()).await?;
    let sandbox = if query.wait {
        state.wait_settled(&sandbox.id).await?
    } else {
        sandbox
    };
    Ok((
        if fresh {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(sandbox),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated states; default: every state but `destroyed`.
    pub state: Option<String>,
    /// Workspace id or name.
    pub workspace: Option<String>,
    pub name: Option<String>,
    /// Page size, 1–1000 (default 1000).
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page.
    pub after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
    /// Cursor of the next page, when there may be one.
    pub next: Option<String>,
}

/// List sandboxes in creation order.
#[utoipa::path(get, path = "/api/v1/sandboxes", tag = "sandboxes", params(ListQuery),
    responses((status = 200, body = SandboxList), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<SandboxList>> {
    let mut filter = SandboxFilter::default();
    if let Some(states) = &q.state {
        for s in states.split(',').filter(|s| !s.is_empty()) {
            filter.states.push(
                s.parse()
                    .map_err(|e: String| ApiError::invalid("state", e))?,
            );
        }
    }
    if let Some(w) = &q.workspace {
        filter.workspace_id = Some(
            super::workspace_id(&state.store, w)
                .await
                .map_err(|_| ApiError::invalid("workspace", format!("no workspace {w:?}")))?,
        );
    }
    filter.name = q.name.clone();
    let limit = q.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    filter.limit = Some(limit);
    if let Some(after) = &q.after {
        filter.after = Some(
            atelier_core::SandboxId::parse(after)
                .ok_or_else(|| ApiError::invalid("after", "not a sandbox id"))?,
        );
    }
    let sandboxes = state.store.list_sandbox_views(&filter).await?;
    let next = (sandboxes.len() == limit as usize)
        .then(|| sandboxes.last().map(|s| s.id.to_string()))
        .flatten();
    Ok(Json(SandboxList { sandboxes, next }))
}

#[utoipa::path(get, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(
        state.store.get_sandbox(&sandbox_id(&id)?).await?.sandbox,
    ))
}

/// Start a stopped (or failed) sandbox; `?wait=true` answers once it runs.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/start", tag = "sandboxes", params(("id" = String, Path), CreateQuery),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CreateQuery>,
) -> ApiResult<Json<Sandbox>> {
    let id = sandbox_id(&id)?;
    let sandbox = state.lifecycle.start(&id).await?;
    Ok(Json(if q.wait {
        state.wait_settled(&id).await?
    } else {
        sandbox
    }))
}

/// Stop a sandbox; its disk (or directory) is kept for a later start.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/stop", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(state.lifecycle.stop(&sandbox_id(&id)?).await?))
}

#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/pause", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(state.lifecycle.pause(&sandbox_id(&id)?).await?))
}

#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/resume", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(state.lifecycle.resume(&sandbox_id(&id)?).await?))
}

/// Destroy a sandbox and every host resource it owns. The record stays, `destroyed`.
#[utoipa::path(delete, path = "/api/v1/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path)),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn destroy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(state.lifecycle.destroy(&sandbox_id(&id)?).await?))
}

/// A command to run in a sandbox.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The program (or, with `shell: true`, a shell script).
    #[schema(example = "ls")]
    pub command: String,
    #[serde(default)]
    #[schema(example = json!(["-la"]))]
    pub args: Vec<String>,
    /// Run `command` with `/bin/sh -c` (then `args` must be empty).
    #[serde(default)]
    pub shell: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// Kill the command after this many milliseconds (1 ms – 24 h; default 10 min).
    pub timeout_ms: Option<u64>,
    pub user: Option<String>,
    /// Text written to the command's standard input.
    pub stdin: Option<String>,
    /// Bytes of stdout and of stderr kept, each (default 16 MiB).
    pub output_limit: Option<u64>,
}

impl ExecBody {
    fn into_request(self) -> ApiResult<ExecRequest> {
        let mut errors = ValidationErrors::default();
        if self.command.is_empty() {
            errors.push(FieldError::new("command", "must not be empty"));
        }
        if self.shell && !self.args.is_empty() {
            errors.push(FieldError::new(
                "args",
                "must be empty when shell is true (put everything in command)",
            ));
        }
        for name in self.env.keys() {
            let ok = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                errors.push(FieldError::new(
                    format!("env.{name}"),
                    "is not a valid environment variable name",
                ));
            }
        }
        if let Some(t) = self.timeout_ms {
            if !(1..=24 * 3600 * 1000).contains(&t) {
                errors.push(FieldError::new(
                    "timeout_ms",
                    "must be between 1 and 86400000",
                ));
            }
        }
        if self.cwd.as_deref().is_some_and(str::is_empty) {
            errors.push(FieldError::new("cwd", "must not be empty"));
        }
        errors.finish()?;
        let command = if self.shell {
            CommandLine::Shell(self.command)
        } else {
            CommandLine::Argv(std::iter::once(self.command).chain(self.args).collect())
        };
        Ok(ExecRequest {
            command,
            env: self.env,
            cwd: self.cwd,
            user: self.user,
            timeout_ms: self.timeout_ms,
            output_limit: self.output_limit,
            stdin: self.stdin,
        })
    }
}

/// Run a command and wait for it: exit code (or signal), stdout and stderr.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/exec", tag = "exec", params(("id" = String, Path)), request_body = ExecBody,
    responses((status = 200, body = ExecResult), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> ApiResult<Json<ExecResult>> {
    let id = sandbox_id(&id)?;
    let req = body.into_request()?;
    let agent = state.lifecycle.agent(&id).await?;
    Ok(Json(agent.exec(&req).await?))
}

/// Run a command and stream its output as Server-Sent Events: `stdout` and `stderr`
/// events carry `{"data": "..."}`, the final `exit` event the exit status. Closing the
/// connection kills the command.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/exec/stream", tag = "exec", params(("id" = String, Path)),
    request_body = ExecBody,
    responses((status = 200, content_type = "text/event-stream", body = ExecEvent), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn exec_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let id = sandbox_id(&id)?;
    let req = body.into_request()?;
    let agent = state.lifecycle.agent(&id).await?;
    let events = agent.exec_stream(&req).await?;
    let stream = events.map(|item| {
        let event = match item {
            Ok(ExecEvent::Stdout { data }) => SseEvent::default()
                .event("stdout")
                .json_data(serde_json::json!({ "data": data })),
            Ok(ExecEvent::Stderr { data }) => SseEvent::default()
                .event("stderr")
                .json_data(serde_json::json!({ "data": data })),
            Ok(ExecEvent::Exit(status)) => SseEvent::default().event("exit").json_data(status),
            Err(e) => SseEvent::default()
                .event("error")
                .json_data(serde_json::json!({ "message": e.to_string() })),
        };
        Ok(event.unwrap_or_else(|_| SseEvent::default().event("error").data("{}")))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
