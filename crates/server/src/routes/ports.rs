//! Opening a sandbox's port (a dev server) in a browser; see [`crate::preview`].
//!
//! `POST /api/v1/sandboxes/{id}/ports/{port}/link` (with the token) gives the port's own
//! origin, a one-minute sign-in URL for it, and a signed `/p/<grant>/` path on the
//! manager's origin that proxies plain HTTP to the port. The grants are the capability —
//! a browser tab cannot send the API token — and they open nothing else.

use std::collections::HashMap;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::sandbox_id;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::preview::{GrantKind, LINK_TTL_SECS};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewLink {
    /// Path on this manager (`/p/<grant>/`) that shows the sandbox's port.
    pub url: String,
    /// The port's own origin (`http://<port>-<sandbox>.<preview-domain>/`).
    pub preview_url: String,
    /// Signs a browser in to `preview_url` and lands on `path`; valid for one minute.
    pub open_url: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Where `open_url` lands on the preview origin (default `/`).
    path: Option<String>,
}

/// A link that opens a sandbox's port (a dev server) in a browser, without the token.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/ports/{port}/link", tag = "sandboxes",
    params(("id" = String, Path), ("port" = u16, Path, description = "1-65535"), LinkQuery),
    responses((status = 201, body = PreviewLink), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn link(
    State(state): State<AppState>,
    Path((id, port)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<LinkQuery>,
) -> ApiResult<(StatusCode, Json<PreviewLink>)> {
    let id = sandbox_id(&id)?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::invalid("port", "must be between 1 and 65535"))?;
    // Only a running sandbox can serve anything.
    state.lifecycle.agent(&id).await?;
    let previews = &state.previews;
    let path = query.path.unwrap_or_else(|| "/".into());
    let expires = chrono::Utc::now() + chrono::Duration::seconds(LINK_TTL_SECS);
    Ok((
        StatusCode::CREATED,
        Json(PreviewLink {
            url: previews.link(&id, port),
            preview_url: previews.url_of(&id, port),
            open_url: previews.handoff_url(&id, port, &path),
            expires_at: expires,
        }),
    ))
}

/// A dev command of the sandbox's workspace, where it opens, and how it runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    /// The dev command's name (its service is `dev-<name>`).
    pub name: String,
    pub port: u16,
    pub command: String,
    /// Opens without signing in.
    pub public: bool,
    /// The port's own origin.
    pub url: String,
    /// The service's state; absent while the sandbox is not running or the service was
    /// never started.
    pub service: Option<atelier_proto::ServiceState>,
}

/// The previews of a sandbox: one per dev command of its workspace.
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/previews", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = Vec<Preview>), (status = 404, body = ErrorBody)))]
pub async fn previews(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<Preview>>> {
    let id = sandbox_id(&id)?;
    let rec = state.store.get_sandbox(&id).await?;
    let Some(workspace) = &rec.sandbox.workspace_id else {
        return Ok(Json(vec![]));
    };
    let spec = state.store.workspace_spec(workspace).await?;
    let services = match state.lifecycle.agent(&id).await {
        Ok(agent) => agent.services().await.unwrap_or_default(),
        Err(_) => vec![],
    };
    let list = spec
        .dev_commands
        .iter()
        .map(|d| {
            let service = crate::dev_services::service_name(d);
            Preview {
                name: d.name.clone(),
                port: d.port,
                command: d.command.clone(),
                public: d.public,
                url: state.previews.url_of(&id, d.port),
                service: services.iter().find(|s| s.name == service).map(|s| s.state),
            }
        })
        .collect();
    Ok(Json(list))
}

/// The port the in-browser editor listens on inside a sandbox.
pub const EDITOR_PORT: u16 = 13337;

/// `POST /api/v1/sandboxes/{id}/editor`: starts VS Code in the browser (`code-server`, from
/// the sandbox's image) as the service `editor` if it is not running, waits until it
/// listens, and answers like a preview link for its port. Its own auth is off: the
/// preview origin's cookie is the lock.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/editor", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 201, body = PreviewLink), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn editor(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<PreviewLink>)> {
    use atelier_proto::{CommandLine, ExecRequest, RestartPolicy, ServiceSpec, ServiceState};
    let id = sandbox_id(&id)?;
    let agent = state.lifecycle.agent(&id).await?;
    let running = agent
        .services()
        .await?
        .into_iter()
        .any(|s| s.name == "editor" && s.state == ServiceState::Running);
    if !running {
        let probe = agent
            .exec(&ExecRequest::argv(["sh", "-c", "command -v code-server"]))
            .await?;
        if probe.status.exit_code != Some(0) {
            return Err(ApiError::conflict(
                "this sandbox's image has no code-server: give the workspace an image that has it",
            ));
        }
        // The workspace's first repo when it is there, else the agent's directory.
        let mut candidates = vec![None];
        if let Some(ws) = &state.store.get_sandbox(&id).await?.sandbox.workspace_id {
            if let Some(repo) = state.store.workspace_spec(ws).await?.repos.first() {
                candidates.insert(0, Some(repo.clone_path()));
            }
        }
        let mut folder = ".".to_owned();
        for cwd in candidates {
            let mut pwd = ExecRequest::argv(["pwd"]);
            pwd.cwd = cwd;
            if let Ok(r) = agent.exec(&pwd).await {
                if r.status.exit_code == Some(0) {
                    folder = r.stdout.trim().to_owned();
                    break;
                }
            }
        }
        let spec = ServiceSpec {
            command: CommandLine::Argv(vec![
                "code-server".into(),
                "--auth".into(),
                "none".into(),
                "--bind-addr".into(),
                format!("127.0.0.1:{EDITOR_PORT}"),
                "--disable-telemetry".into(),
                "--disable-update-check".into(),
                folder,
            ]),
            env: Default::default(),
            cwd: None,
            user: None,
            restart: RestartPolicy::OnFailure,
        };
        agent.put_service("editor", &spec).await?;
    }
    // Hand the browser over only once the editor answers.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match agent.open_tunnel(EDITOR_PORT).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(sandbox = %id, error = %e, "waiting for the editor");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "editor_not_listening",
                    format!("code-server did not listen on port {EDITOR_PORT} within 30 s: see the `editor` service's log"),
                ))
            }
        }
    }
    let previews = &state.previews;
    Ok((
        StatusCode::CREATED,
        Json(PreviewLink {
            url: previews.link(&id, EDITOR_PORT),
            preview_url: previews.url_of(&id, EDITOR_PORT),
            open_url: previews.handoff_url(&id, EDITOR_PORT, "/"),
            expires_at: chrono::Utc::now() + chrono::Duration::seconds(LINK_TTL_SECS),
        }),
    ))
}

/// `/p/{ticket}` → `/p/{ticket}/`, so that relative links resolve under the ticket.
pub async fn preview_root(Path(ticket): Path<String>) -> Redirect {
    Redirect::permanent(&format!("/p/{ticket}/"))
}

/// `/p/{ticket}/{rest}`: the request, proxied to the sandbox's port.
pub async fn preview(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    match proxy(&state, &params, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn proxy(
    state: &AppState,
    params: &HashMap<String, String>,
    req: Request,
) -> ApiResult<Response> {
    let ticket = params.get("ticket").map(String::as_str).unwrap_or_default();
    let grant = state
        .previews
        .key()
        .verify(ticket, GrantKind::Link, chrono::Utc::now().timestamp())
        .ok_or_else(|| ApiError::not_found("preview link (unknown or expired)"))?;
    let agent = state.lifecycle.agent(&grant.sandbox).await?;
    let rest = params.get("rest").map(String::as_str).unwrap_or_default();
    let path_and_query = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    let mut req = req;
    // Ours, not the dev server's.
    req.headers_mut().remove(axum::http::header::AUTHORIZATION);
    crate::preview::forward(
        state.previews.pool(),
        &agent,
        &grant.sandbox,
        grant.port,
        req,
        &path_and_query,
        "http",
    )
    .await
}
