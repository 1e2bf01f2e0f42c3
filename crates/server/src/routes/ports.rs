//! Preview links: a dev server inside a sandbox, opened in a browser.
//!
//! `POST /api/v1/sandboxes/{id}/ports/{port}/link` (with the token) mints a random,
//! expiring ticket for one port of one sandbox; `/p/{ticket}/…` then proxies plain HTTP
//! to that port through an agent tunnel (so it works inside a VM without guest
//! networking). The ticket is the capability — a browser tab cannot send the API token —
//! and it opens nothing else. Tickets live in the manager's memory: a restart forgets
//! them, and a new link is one click away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_core::SandboxId;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use utoipa::ToSchema;

use super::sandbox_id;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

/// How long a preview link works.
const TICKET_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// What a ticket opens: one port of one sandbox, until it expires.
type Target = (SandboxId, u16, Instant);

#[derive(Clone, Default)]
pub struct PreviewTickets(Arc<Mutex<HashMap<String, Target>>>);

impl PreviewTickets {
    fn mint(&self, sandbox: SandboxId, port: u16) -> String {
        let ticket = atelier_core::id::random_token();
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, _, expires)| *expires > now);
        map.insert(ticket.clone(), (sandbox, port, now + TICKET_TTL));
        ticket
    }

    fn resolve(&self, ticket: &str) -> Option<(SandboxId, u16)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(ticket)
            .filter(|(_, _, expires)| *expires > Instant::now())
            .map(|(s, p, _)| (s.clone(), *p))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewLink {
    /// Path on this manager (`/p/<ticket>/`) that shows the sandbox's port.
    pub url: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A link that opens a sandbox's port (a dev server) in a browser, without the token.
#[utoipa::path(post, path = "/api/v1/sandboxes/{id}/ports/{port}/link", tag = "sandboxes",
    params(("id" = String, Path), ("port" = u16, Path, description = "1-65535")),
    responses((status = 201, body = PreviewLink), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn link(
    State(state): State<AppState>,
    Path((id, port)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<PreviewLink>)> {
    let id = sandbox_id(&id)?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ApiError::invalid("port", "must be between 1 and 65535"))?;
    // Only a running sandbox can serve anything.
    state.lifecycle.agent(&id).await?;
    let ticket = state.previews.mint(id, port);
    let expires = chrono::Utc::now()
        + chrono::Duration::from_std(TICKET_TTL).unwrap_or(chrono::Duration::hours(12));
    Ok((
        StatusCode::CREATED,
        Json(PreviewLink {
            url: format!("/p/{ticket}/"),
            expires_at: expires,
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
    let (sandbox, port) = state
        .previews
        .resolve(ticket)
        .ok_or_else(|| ApiError::not_found("preview link (unknown or expired)"))?;
    let agent = state.lifecycle.agent(&sandbox).await?;
    let tunnel = agent.open_tunnel(port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tunnel))
        .await
        .map_err(|e| ApiError::bad_gateway(format!("talking HTTP to port {port}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });

    let rest = params.get("rest").map(String::as_str).unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    parts.uri = path_and_query
        .parse::<Uri>()
        .map_err(|e| ApiError::invalid("path", e.to_string()))?;
    parts.version = axum::http::Version::HTTP_11;
    if let Ok(host) = HeaderValue::from_str(&format!("127.0.0.1:{port}")) {
        parts.headers.insert(header::HOST, host);
    }
    // Ours, not the dev server's.
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(header::CONNECTION);
    let upstream = sender
        .send_request(axum::http::Request::from_parts(parts, body))
        .await
        .map_err(|e| ApiError::bad_gateway(format!("port {port} did not answer: {e}")))?;
    let (parts, body) = upstream.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}
