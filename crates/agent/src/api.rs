//! HTTP routes (see the endpoint table in `atelier_proto`).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use atelier_proto::{ExecRequest, Health, ServiceSpec, API_PREFIX};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::{header, request::Parts, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::error::{ApiError, ApiResult};
use crate::files::{self, Roots, MAX_FILE_BYTES};
use crate::process::ProcessContext;
use crate::services::Supervisor;
use crate::{exec, health};

/// Largest JSON request body.
pub const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

/// Shared state of the HTTP handlers.
pub struct AppState {
    /// The bearer token every request must carry; swapped by `PUT /v1/identity`.
    pub token: RwLock<String>,
    /// Serializes identity changes (and the check that the caller's token is still current).
    pub identity_lock: tokio::sync::Mutex<()>,
    pub started: Instant,
    pub roots: Arc<Roots>,
    pub procs: Arc<ProcessContext>,
    pub services: Arc<Supervisor>,
    /// In a VM (guest mode) the agent owns the machine and may step its clock.
    pub guest: bool,
}

impl AppState {
    /// Whether `presented` is the current token (constant-time).
    pub fn token_matches(&self, presented: &str) -> bool {
        let current = self.token.read().unwrap_or_else(|p| p.into_inner());
        ct_eq(presented.as_bytes(), current.as_bytes())
    }

    /// Replaces the token: every request checked after this returns needs the new one.
    pub fn set_token(&self, token: String) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }
}

type St = State<Arc<AppState>>;

/// Builds the agent's router.
pub fn router(state: Arc<AppState>) -> Router {
    let p = |s: &str| format!("{API_PREFIX}{s}");
    Router::new()
        .route(&p("/health"), get(health_h))
        .route(&p("/exec"), post(exec_h))
        .route(&p("/exec/stream"), post(exec_stream_h))
        .route(
            &p("/files/content"),
            get(read_file_h)
                .put(write_file_h)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(&p("/files/list"), get(list_h))
        .route(&p("/files/stat"), get(stat_h))
        .route(&p("/files/mkdir"), post(mkdir_h))
        .route(&p("/files"), axum::routing::delete(delete_h))
        .route(&p("/services"), get(services_h))
        .route(
            &p("/services/{name}"),
            get(service_h).put(put_service_h).delete(delete_service_h),
        )
        .route(&p("/services/{name}/start"), post(start_service_h))
        .route(&p("/services/{name}/stop"), post(stop_service_h))
        .route(&p("/services/{name}/logs"), get(logs_h))
        .route(&p("/clock"), axum::routing::put(clock_h))
        .route(&p("/env"), axum::routing::put(env_h))
        .route(&p("/identity"), axum::routing::put(identity_h))
        .route(&p("/tunnel/{port}"), get(crate::tunnel::tunnel_h))
        .merge(
            Router::new()
                .route(&p("/terminal"), get(crate::pty::terminal_h))
                .with_state(crate::pty::Sessions::new(
                    state.procs.active.clone(),
                    state.procs.sandbox_env.clone(),
                    state.procs.roots.clone(),
                )),
        )
        .fallback(fallback_h)
        .method_not_allowed_fallback(method_not_allowed_h)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

/// Constant-time comparison (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The bearer token a request presents.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn auth(State(st): St, req: Request, next: Next) -> Response {
    let ok = presented_token(req.headers()).is_some_and(|t| st.token_matches(t));
    if !ok {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

async fn fallback_h(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed_h(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A JSON body whose failures answer as [`ApiError`]s (400, or 413 past the limit).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(MAX_JSON_BYTES as u64)
            } else {
                ApiError::invalid(rej.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

/// A query string whose failures answer as [`ApiError`]s.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Q(t))
            .map_err(|e| ApiError::invalid(format!("query string: {}", e.body_text())))
    }
}

/// The `{name}` path segment.
pub struct Name(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Name {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(n)| Name(n))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

async fn health_h(State(st): St) -> Json<Health> {
    Json(health::collect(st.started))
}

/// Steps the guest's wall clock (a VM's clock is stale after boot or restore). Refused
/// outside a VM: the local driver's agent shares the host's clock.
async fn env_h(
    State(st): St,
    JsonBody(req): JsonBody<atelier_proto::SandboxEnv>,
) -> ApiResult<Json<atelier_proto::SandboxEnvSet>> {
    for (k, v) in &req.env {
        let valid_name = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(ApiError::invalid(format!(
                "env: invalid variable name {k:?}"
            )));
        }
        if v.contains('\0') {
            return Err(ApiError::invalid(format!(
                "env: value of {k} contains a NUL byte"
            )));
        }
    }
    let names = req.env.keys().cloned().collect();
    *st.procs
        .sandbox_env
        .write()
        .unwrap_or_else(|p| p.into_inner()) = req.env;
    Ok(Json(atelier_proto::SandboxEnvSet { names }))
}

async fn clock_h(
    State(st): St,
    JsonBody(req): JsonBody<atelier_proto::ClockSet>,
) -> ApiResult<Json<atelier_proto::ClockSet>> {
    if !st.guest {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            "the clock can only be set in a VM (guest mode)",
        ));
    }
    if let Err(e) = crate::guest::step_clock(req.epoch_ms) {
        return Err(ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e,
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(Json(atelier_proto::ClockSet { epoch_ms: now }))
}

/// Makes a VM restored from a memory snapshot its own machine: steps the clock, mixes
/// host entropy into the kernel RNG and reseeds it, renames the host, writes a new
/// machine id, then swaps the bearer token. Guest mode only (409 otherwise); every field
/// is checked before anything changes (422 naming the field).
///
/// The caller authenticated with the current token; the new one is in force before the
/// answer is written, so a request sent after the answer arrives needs the new token, and
/// the old token is refused (401) from then on.
///
/// Userspace RNG state: the agent holds none to reset — it generates no secrets itself
/// (no `rand`); the only per-process random state it has is std's per-thread SipHash
/// keys for `HashMap` and tokio's scheduler seed, which guard against hash flooding and
/// order tasks, are not secrets, and cannot be reseeded through std or tokio.
async fn identity_h(
    State(st): St,
    headers: HeaderMap,
    JsonBody(req): JsonBody<atelier_proto::Identity>,
) -> ApiResult<Json<atelier_proto::IdentityApplied>> {
    if !st.guest {
        return Err(ApiError::conflict(
            "the identity can only be changed in a VM (guest mode)",
        ));
    }
    let entropy = req
        .validate()
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", e))?;
    let _one_at_a_time = st.identity_lock.lock().await;
    // Another identity change may have won the race since this request was authenticated.
    if !presented_token(&headers).is_some_and(|t| st.token_matches(t)) {
        return Err(ApiError::unauthorized());
    }
    // A handful of short system calls, run in place: a hop to the blocking pool (a thread
    // to wake or create) costs more than they do, above all right after a restore.
    crate::guest::step_clock(req.epoch_ms).map_err(ApiError::internal)?;
    let entropy_bytes = crate::guest::mix_entropy(&entropy).map_err(ApiError::internal)?;
    crate::guest::set_hostname(&req.hostname).map_err(ApiError::internal)?;
    crate::guest::set_machine_id(&req.machine_id).map_err(ApiError::internal)?;
    st.set_token(req.token);
    // `/etc/machine-id` (tmpfs) is already the new one; its copy for the next boot is
    // written once the manager has its answer rather than on the restore's critical path.
    let machine_id = req.machine_id;
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let written =
            tokio::task::spawn_blocking(move || crate::guest::persist_machine_id(&machine_id))
                .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "could not persist the machine id");
        }
    });
    tracing::debug!(hostname = %req.hostname, "identity changed");
    Ok(Json(atelier_proto::IdentityApplied {
        hostname: req.hostname,
        epoch_ms: now_ms(),
        entropy_bytes,
        reseeded: true,
    }))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn exec_h(State(st): St, JsonBody(req): JsonBody<ExecRequest>) -> ApiResult<Response> {
    let procs = st.procs.clone();
    let prepared = blocking(move || exec::prepare(&procs, req)).await?;
    Ok(Json(exec::run_collect(&st.procs, prepared).await?).into_response())
}

async fn exec_stream_h(State(st): St, JsonBody(req): JsonBody<ExecRequest>) -> ApiResult<Response> {
    let procs = st.procs.clone();
    let prepared = blocking(move || exec::prepare(&procs, req)).await?;
    let stream = exec::run_stream(st.procs.clone(), prepared).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Deserialize)]
struct PathQuery {
    path: Option<String>,
}

#[derive(Deserialize)]
struct WriteQuery {
    path: Option<String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
struct DeleteQuery {
    path: Option<String>,
    recursive: Option<bool>,
}

#[derive(Deserialize)]
struct LogsQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

fn required(path: Option<String>) -> ApiResult<String> {
    path.filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::invalid("query parameter `path` is required"))
}

async fn read_file_h(State(st): St, Q(q): Q<PathQuery>) -> ApiResult<Response> {
    let path = required(q.path)?;
    let roots = st.roots.clone();
    let (file, len) = blocking(move || files::open_for_read(&roots, &path)).await?;
    // Never send more than announced, even if the file grows meanwhile.
    let reader = tokio::fs::File::from_std(file).take(len);
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}

async fn write_file_h(
    State(st): St,
    Q(q): Q<WriteQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<atelier_proto::FileStat>> {
    let path = required(q.path)?;
    let mode = match q.mode.as_deref() {
        None | Some("") => 0o644,
        Some(m) => atelier_proto::parse_mode(m)
            .ok_or_else(|| ApiError::invalid(format!("mode {m:?} is not an octal mode")))?,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_FILE_BYTES) {
        return Err(ApiError::payload_too_large(MAX_FILE_BYTES));
    }
    let roots = st.roots.clone();
    let plan = blocking(move || files::plan_write(&roots, &path)).await?;
    let stat = files::write_atomic(plan, body.into_data_stream(), mode, MAX_FILE_BYTES).await?;
    Ok(Json(stat))
}

async fn list_h(State(st): St, Q(q): Q<PathQuery>) -> ApiResult<Response> {
    let path = required(q.path)?;
    let roots = st.roots.clone();
    Ok(Json(blocking(move || files::list(&roots, &path)).await?).into_response())
}

async fn stat_h(State(st): St, Q(q): Q<PathQuery>) -> ApiResult<Response> {
    let path = required(q.path)?;
    let roots = st.roots.clone();
    Ok(Json(blocking(move || files::stat(&roots, &path)).await?).into_response())
}

async fn mkdir_h(State(st): St, Q(q): Q<PathQuery>) -> ApiResult<Response> {
    let path = required(q.path)?;
    let roots = st.roots.clone();
    Ok(Json(blocking(move || files::mkdir(&roots, &path)).await?).into_response())
}

async fn delete_h(State(st): St, Q(q): Q<DeleteQuery>) -> ApiResult<StatusCode> {
    let path = required(q.path)?;
    let recursive = q.recursive.unwrap_or(false);
    let roots = st.roots.clone();
    blocking(move || files::delete(&roots, &path, recursive)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn services_h(State(st): St) -> ApiResult<Response> {
    Ok(Json(st.services.list()?).into_response())
}

async fn service_h(State(st): St, Name(name): Name) -> ApiResult<Response> {
    Ok(Json(st.services.status(&name)?).into_response())
}

async fn put_service_h(
    State(st): St,
    Name(name): Name,
    JsonBody(spec): JsonBody<ServiceSpec>,
) -> ApiResult<Response> {
    Ok(Json(st.services.put(&name, spec).await?).into_response())
}

async fn delete_service_h(State(st): St, Name(name): Name) -> ApiResult<StatusCode> {
    st.services.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_service_h(State(st): St, Name(name): Name) -> ApiResult<Response> {
    Ok(Json(st.services.start(&name).await?).into_response())
}

async fn stop_service_h(State(st): St, Name(name): Name) -> ApiResult<Response> {
    Ok(Json(st.services.stop(&name).await?).into_response())
}

async fn logs_h(State(st): St, Name(name): Name, Q(q): Q<LogsQuery>) -> ApiResult<Response> {
    let services = st.services.clone();
    let offset = q.offset.unwrap_or(0);
    let chunk = blocking(move || services.logs(&name, offset, q.limit)).await?;
    Ok(Json(chunk).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use atelier_agent_client::AgentClient;
    use atelier_proto::{to_hex, AgentAddr, Identity};

    const OLD: &str = "old-token-0123456789";

    /// Serves the router on a loopback port; `guest` as given.
    async fn serve(guest: bool) -> (AgentClient, AgentAddr, Arc<AppState>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let roots = Arc::new(Roots::new(&[dir.path().join("root")]).unwrap());
        let procs = Arc::new(ProcessContext::new(roots.clone()));
        let services =
            Arc::new(Supervisor::new(dir.path().join("services"), procs.clone()).unwrap());
        let state = Arc::new(AppState {
            token: RwLock::new(OLD.into()),
            identity_lock: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            roots,
            procs,
            services,
            guest,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let addr = AgentAddr::Tcp(addr);
        (AgentClient::new(addr.clone(), OLD), addr, state, dir)
    }

    fn identity() -> Identity {
        Identity {
            hostname: "clone-a".into(),
            token: "new-token-0123456789".into(),
            epoch_ms: 1_700_000_000_000,
            entropy: to_hex(&[9u8; 32]),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[tokio::test]
    async fn identity_is_refused_outside_a_vm() {
        let (client, _, state, _dir) = serve(false).await;
        let e = client.set_identity(&identity()).await.unwrap_err();
        assert_eq!(e.status(), Some(409), "{e}");
        assert_eq!(e.code(), Some("conflict"));
        assert!(state.token_matches(OLD), "the token is unchanged");
    }

    #[tokio::test]
    async fn identity_fields_are_checked_before_anything_changes() {
        // Guest mode, but every request is invalid: nothing on this host is touched.
        let (client, addr, state, _dir) = serve(true).await;
        let mut short = identity();
        short.entropy = to_hex(&[1u8; 16]);
        let e = client.set_identity(&short).await.unwrap_err();
        assert_eq!(e.status(), Some(422), "{e}");
        assert_eq!(e.code(), Some("invalid_value"));
        assert!(e.to_string().contains("entropy"), "{e}");
        let mut not_hex = identity();
        not_hex.entropy = "g".repeat(64);
        assert_eq!(
            client.set_identity(&not_hex).await.unwrap_err().status(),
            Some(422)
        );
        let mut bad_host = identity();
        bad_host.hostname = "no spaces".into();
        let e = client.set_identity(&bad_host).await.unwrap_err();
        assert_eq!(e.status(), Some(422));
        assert!(e.to_string().contains("hostname"), "{e}");
        let mut bad_id = identity();
        bad_id.machine_id = "xyz".into();
        assert_eq!(
            client.set_identity(&bad_id).await.unwrap_err().status(),
            Some(422)
        );
        assert!(state.token_matches(OLD), "the token is unchanged");
        // A wrong token never reaches the handler.
        let stranger = AgentClient::new(addr, "not-the-token-at-all");
        let e = stranger.set_identity(&identity()).await.unwrap_err();
        assert_eq!(e.status(), Some(401));
    }

    #[tokio::test]
    async fn a_swapped_token_refuses_the_old_one() {
        let (client, addr, state, _dir) = serve(false).await;
        client.health().await.unwrap();
        state.set_token("new-token-0123456789".into());
        assert_eq!(client.health().await.unwrap_err().status(), Some(401));
        // A re-keyed client reuses the connection (and the old one stays refused).
        let new = client.with_token("new-token-0123456789");
        assert_eq!(new.addr(), &addr);
        new.health().await.unwrap();
        assert_eq!(client.health().await.unwrap_err().status(), Some(401));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
        assert!(ct_eq(b"", b""));
    }
}
