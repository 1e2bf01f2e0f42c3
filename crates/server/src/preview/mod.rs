//! Previews: a dev server inside a sandbox, opened in a browser.
//!
//! Every port of every sandbox has its own origin, `<port>-<sandbox>.<preview-domain>`
//! (by default `<port>-<sandbox>.localhost:<listen-port>`, which browsers resolve to
//! loopback by themselves). A request whose `Host` is such a name never reaches the API
//! or the dashboard: it is carried to that port through the sandbox's agent tunnel, with
//! WebSocket upgrades and streamed bodies passed through.
//!
//! Access follows Coder's pattern. A browser without the preview's cookie is sent to
//! the dashboard (`/open?sandbox=…&port=…&path=…`), which holds the API token and asks
//! for a one-minute hand-off grant; the preview host trades that for a cookie of its own
//! origin, signed for that sandbox and port alone. The dashboard's token never travels
//! to a preview origin, the preview's cookie is stripped before the dev server sees the
//! request, and a port a workspace marks `public` needs no cookie at all. Grants are
//! signed ([`grant`]), so they outlive a manager restart.

pub mod grant;
mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use atelier_core::{SandboxId, SandboxState};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

pub use grant::{Grant, GrantKey, GrantKind};
pub use proxy::{forward, ConnectionPool};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The cookie a preview origin keeps its grant in.
const COOKIE: &str = "atelier_preview";
/// The path on a preview origin that trades a hand-off grant for the cookie.
pub const HANDOFF_PATH: &str = "/__atelier/auth";
const HANDOFF_TTL_SECS: i64 = 60;
const COOKIE_TTL_SECS: i64 = 24 * 60 * 60;
pub const LINK_TTL_SECS: i64 = 12 * 60 * 60;

/// Where previews live, as configured (`[preview]` in config.toml, `serve --domain`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreviewSettings {
    /// Parent domain of every preview origin (default `localhost`).
    pub domain: Option<String>,
    /// The dashboard's public URL (default `http://<listen address>`); previews take its
    /// scheme and port.
    pub public_url: Option<String>,
}

impl PreviewSettings {
    /// The settings' own errors, as `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(domain) = &self.domain {
            if !is_hostname(domain) {
                return Err((
                    "preview.domain".into(),
                    format!("{domain:?} is not a host name (letters, digits, '-', dots)"),
                ));
            }
        }
        if let Some(url) = &self.public_url {
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| ("preview.public_url".to_owned(), format!("{url:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err((
                    "preview.public_url".into(),
                    format!("{url:?} must be an http(s) URL with a host"),
                ));
            }
            let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
            let domain = self.domain.as_deref().unwrap_or("localhost");
            if host == domain || host.ends_with(&format!(".{domain}")) {
                return Err((
                    "preview.domain".into(),
                    format!(
                        "must not contain the dashboard's host {host}: a dev server would share its origin's cookies"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// What a `Host` names.
#[derive(Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// Not under the preview domain: the manager's own API and dashboard.
    Manager,
    /// Under the preview domain, but no `<port>-<sandbox>` of any sandbox.
    Unknown,
    Port(SandboxId, u16),
}

/// The preview origins of this manager, and the key their grants are signed with.
#[derive(Clone)]
pub struct Previews(Arc<Inner>);

struct Inner {
    key: GrantKey,
    pool: ConnectionPool,
    /// `.localhost`, with the leading dot.
    suffix: String,
    scheme: &'static str,
    /// `:4000`, or empty for the scheme's default port.
    port: String,
    /// `http://127.0.0.1:4000`, no trailing slash.
    dashboard: String,
    dashboard_host: String,
}

impl Previews {
    /// `bound` is the address the manager listens on, for the defaults.
    pub fn new(key: GrantKey, settings: &PreviewSettings, bound: SocketAddr) -> Self {
        let domain = settings
            .domain
            .clone()
            .unwrap_or_else(|| "localhost".into());
        let public = settings
            .public_url
            .as_deref()
            .and_then(|u| reqwest::Url::parse(u).ok());
        let (scheme, port, dashboard, dashboard_host) = match &public {
            Some(url) => {
                let scheme = if url.scheme() == "https" {
                    "https"
                } else {
                    "http"
                };
                let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
                let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
                let dashboard = format!("{scheme}://{host}{port}");
                (scheme, port, dashboard, host)
            }
            None => (
                "http",
                format!(":{}", bound.port()),
                format!("http://{bound}"),
                bound.ip().to_string(),
            ),
        };
        Self(Arc::new(Inner {
            key,
            pool: ConnectionPool::default(),
            suffix: format!(".{domain}"),
            scheme,
            port,
            dashboard,
            dashboard_host,
        }))
    }

    pub fn key(&self) -> &GrantKey {
        &self.0.key
    }

    /// Connections to sandbox ports, kept between requests.
    pub fn pool(&self) -> &ConnectionPool {
        &self.0.pool
    }

    /// Whether cookies must be `Secure` (previews are served over https).
    fn secure(&self) -> bool {
        self.0.scheme == "https"
    }

    /// `5173-s….localhost`
    pub fn host_of(&self, sandbox: &SandboxId, port: u16) -> String {
        format!("{port}-{sandbox}{}", self.0.suffix)
    }

    /// `http://5173-s….localhost:4000/`
    pub fn url_of(&self, sandbox: &SandboxId, port: u16) -> String {
        format!(
            "{}://{}{}/",
            self.0.scheme,
            self.host_of(sandbox, port),
            self.0.port
        )
    }

    /// What `host` (a `Host` header: name, maybe a port) names.
    pub fn target(&self, host: &str) -> HostMatch {
        let name = strip_port(host).to_ascii_lowercase();
        let Some(label) = name.strip_suffix(&self.0.suffix) else {
            return HostMatch::Manager;
        };
        let parsed = label.split_once('-').and_then(|(port, sandbox)| {
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            Some((SandboxId::parse(sandbox)?, port))
        });
        match parsed {
            Some((sandbox, port)) => HostMatch::Port(sandbox, port),
            None => HostMatch::Unknown,
        }
    }

    /// Whether `host` is the dashboard's own name (for the TLS permission check).
    fn is_dashboard(&self, host: &str) -> bool {
        strip_port(host).eq_ignore_ascii_case(&self.0.dashboard_host)
    }

    fn mint(&self, kind: GrantKind, sandbox: &SandboxId, port: u16, ttl: i64) -> String {
        self.0.key.sign(&Grant {
            kind,
            sandbox: sandbox.clone(),
            port,
            expires: now() + ttl,
        })
    }

    /// A `/p/<grant>/` path that opens the port on the manager's own origin.
    pub fn link(&self, sandbox: &SandboxId, port: u16) -> String {
        format!(
            "/p/{}/",
            self.mint(GrantKind::Link, sandbox, port, LINK_TTL_SECS)
        )
    }

    /// The URL that signs a browser in to the preview origin and lands on `path`.
    pub fn handoff_url(&self, sandbox: &SandboxId, port: u16, path: &str) -> String {
        let grant = self.mint(GrantKind::Handoff, sandbox, port, HANDOFF_TTL_SECS);
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant", &grant)
            .append_pair("next", safe_next(path))
            .finish();
        format!(
            "{}://{}{}{HANDOFF_PATH}?{query}",
            self.0.scheme,
            self.host_of(sandbox, port),
            self.0.port
        )
    }

    /// Where a browser without the cookie is sent: the dashboard's page that asks for
    /// a hand-off (after sign-in, if it has no token yet).
    fn sign_in_url(&self, sandbox: &SandboxId, port: u16, path: &str) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("sandbox", sandbox.as_str())
            .append_pair("port", &port.to_string())
            .append_pair("path", safe_next(path))
            .finish();
        format!("{}/open?{query}", self.0.dashboard)
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `path` when it is a path on the same origin, else `/`: the hand-off must not become
/// an open redirect (`//evil.example`, `/\evil.example`, `https://…`).
fn safe_next(path: &str) -> &str {
    let same_origin = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.bytes().any(|b| b.is_ascii_control());
    if same_origin {
        path
    } else {
        "/"
    }
}

/// The host a request was sent to.
fn request_host(req: &Request) -> Option<&str> {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
}

/// The outermost layer: a request to a preview origin is served here and never reaches
/// the API, the dashboard or their token check.
pub async fn by_host(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let target = request_host(&req)
        .map(|h| state.previews.target(h))
        .unwrap_or(HostMatch::Manager);
    match target {
        HostMatch::Manager => next.run(req).await,
        HostMatch::Unknown => {
            ApiError::not_found("preview (the host names no port of a sandbox)").into_response()
        }
        HostMatch::Port(sandbox, port) => serve(&state, sandbox, port, req)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

async fn serve(
    state: &AppState,
    sandbox: SandboxId,
    port: u16,
    mut req: Request,
) -> ApiResult<Response> {
    let previews = &state.previews;
    if req.uri().path() == HANDOFF_PATH {
        return Ok(handoff(previews, &sandbox, port, req.uri().query()));
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let signed_in = cookie_grants(req.headers())
        .any(|token| grants(previews.key(), token, GrantKind::Cookie, &sandbox, port));
    if !signed_in && !is_public(state, &sandbox, port).await {
        return Ok(refuse(previews, &sandbox, port, &req, &path_and_query));
    }
    strip_manager_credentials(req.headers_mut(), &state.admin_token);
    let agent = state.lifecycle.agent(&sandbox).await?;
    let proto = if previews.secure() { "https" } else { "http" };
    let mut response = forward(
        previews.pool(),
        &agent,
        &sandbox,
        port,
        req,
        &path_and_query,
        proto,
    )
    .await?;
    drop_cookie_setters(response.headers_mut());
    Ok(response)
}

/// Whether `token` is a live grant of `kind` for exactly this sandbox and port.
fn grants(key: &GrantKey, token: &str, kind: GrantKind, sandbox: &SandboxId, port: u16) -> bool {
    key.verify(token, kind, now())
        .is_some_and(|g| &g.sandbox == sandbox && g.port == port)
}

/// `GET /__atelier/auth?grant=…&next=…` on a preview origin: the hand-off, traded for
/// the origin's cookie.
fn handoff(previews: &Previews, sandbox: &SandboxId, port: u16, query: Option<&str>) -> Response {
    let mut grant = None;
    let mut next = "/".to_owned();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "grant" => grant = Some(v.into_owned()),
            "next" => next = safe_next(&v).to_owned(),
            _ => {}
        }
    }
    let valid = grant
        .as_deref()
        .is_some_and(|g| grants(previews.key(), g, GrantKind::Handoff, sandbox, port));
    if !valid {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this preview sign-in link is invalid or expired: open the preview again from the dashboard",
        )
        .into_response();
    }
    let cookie = previews.mint(GrantKind::Cookie, sandbox, port, COOKIE_TTL_SECS);
    let secure = if previews.secure() { "; Secure" } else { "" };
    let set_cookie = format!(
        "{COOKIE}={cookie}; Path=/; Max-Age={COOKIE_TTL_SECS}; HttpOnly; SameSite=Lax{secure}"
    );
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    if let (Ok(location), Ok(cookie)) = (
        HeaderValue::from_str(&next),
        HeaderValue::from_str(&set_cookie),
    ) {
        headers.insert(header::LOCATION, location);
        headers.insert(header::SET_COOKIE, cookie);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Without a grant: a browser navigating is sent to sign in through the dashboard;
/// anything else is told 401.
fn refuse(
    previews: &Previews,
    sandbox: &SandboxId,
    port: u16,
    req: &Request,
    path_and_query: &str,
) -> Response {
    let navigating = matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if navigating {
        let target = previews.sign_in_url(sandbox, port, path_and_query);
        if let Ok(location) = HeaderValue::from_str(&target) {
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            return response;
        }
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this preview needs signing in: open it from the dashboard",
    )
    .into_response()
}

/// Whether the sandbox's workspace makes `port` public.
async fn is_public(state: &AppState, sandbox: &SandboxId, port: u16) -> bool {
    let Ok(rec) = state.store.get_sandbox(sandbox).await else {
        return false;
    };
    let Some(workspace) = &rec.sandbox.workspace_id else {
        return false;
    };
    let Ok(spec) = state.store.workspace_spec(workspace).await else {
        return false;
    };
    spec.dev_commands.iter().any(|d| d.port == port && d.public)
}

/// The values of every `atelier_preview` cookie the request carries.
fn cookie_grants(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The preview's cookie and the manager's token are the manager's, not the dev
/// server's: neither is passed on.
fn strip_manager_credentials(headers: &mut HeaderMap, admin_token: &str) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').is_none_or(|(name, _)| name != COOKIE))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, v);
        }
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == admin_token);
    if bearer {
        headers.remove(header::AUTHORIZATION);
    }
}

/// A dev server may not set (or shadow) the preview's own cookie.
fn drop_cookie_setters(headers: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            v.to_str().ok().is_some_and(|s| {
                s.split_once('=')
                    .is_some_and(|(name, _)| name.trim() != COOKIE)
            })
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

#[derive(Debug, Deserialize)]
pub struct AskQuery {
    domain: Option<String>,
}

/// `GET /api/v1/tls/ask?domain=<name>`: whether a TLS front (Caddy's on-demand TLS) may
/// get a certificate for `name`: the dashboard's name, or a preview origin of a sandbox
/// that exists. Anything else is refused, so nobody can make the front ask a CA for
/// names this manager does not serve.
pub async fn tls_ask(State(state): State<AppState>, Query(q): Query<AskQuery>) -> Response {
    let Some(domain) = q.domain.filter(|d| !d.is_empty()) else {
        return ApiError::invalid("domain", "is required").into_response();
    };
    if state.previews.is_dashboard(&domain) {
        return StatusCode::OK.into_response();
    }
    if let HostMatch::Port(sandbox, _) = state.previews.target(&domain) {
        let exists = state
            .store
            .get_sandbox(&sandbox)
            .await
            .is_ok_and(|r| r.sandbox.state != SandboxState::Destroyed);
        if exists {
            return StatusCode::OK.into_response();
        }
    }
    ApiError::not_found(format!("a name this manager serves ({domain:?})")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn previews(settings: PreviewSettings) -> Previews {
        Previews::new(
            GrantKey::from_bytes([3; 32]),
            &settings,
            "127.0.0.1:4000".parse().unwrap(),
        )
    }

    #[test]
    fn preview_hosts_name_a_port_of_a_sandbox_and_nothing_else() {
        let p = previews(PreviewSettings::default());
        let id = SandboxId::generate();
        let host = p.host_of(&id, 5173);
        assert_eq!(host, format!("5173-{id}.localhost"));
        assert_eq!(p.url_of(&id, 5173), format!("http://{host}:4000/"));
        assert_eq!(p.target(&host), HostMatch::Port(id.clone(), 5173));
        assert_eq!(
            p.target(&format!("{}:4000", host.to_uppercase())),
            HostMatch::Port(id.clone(), 5173)
        );
        for manager in [
            "127.0.0.1:4000",
            "localhost:4000",
            "localhost",
            "example.com",
        ] {
            assert_eq!(p.target(manager), HostMatch::Manager, "{manager}");
        }
        for unknown in [
            "x.localhost".to_owned(),
            format!("0-{id}.localhost"),
            format!("70000-{id}.localhost"),
            "5173-nope.localhost".to_owned(),
            format!("a.5173-{id}.localhost"),
        ] {
            assert_eq!(p.target(&unknown), HostMatch::Unknown, "{unknown}");
        }
    }

    #[test]
    fn a_public_url_gives_previews_its_scheme_and_port() {
        let p = previews(PreviewSettings {
            domain: Some("preview.example.com".into()),
            public_url: Some("https://example.com".into()),
        });
        let id = SandboxId::generate();
        assert_eq!(
            p.url_of(&id, 3000),
            format!("https://3000-{id}.preview.example.com/")
        );
        assert!(p.secure());
        assert!(p.is_dashboard("example.com") && !p.is_dashboard("preview.example.com"));
        let open = p.sign_in_url(&id, 3000, "/a?b=1");
        assert!(
            open.starts_with(&format!(
                "https://example.com/open?sandbox={id}&port=3000&path=%2Fa%3Fb%3D1"
            )),
            "{open}"
        );
    }

    #[test]
    fn settings_are_checked() {
        let ok = PreviewSettings {
            domain: Some("preview.example.com".into()),
            public_url: Some("https://example.com".into()),
        };
        assert!(ok.validate().is_ok());
        let bad_domain = PreviewSettings {
            domain: Some("Preview_.example.com".into()),
            ..Default::default()
        };
        assert_eq!(bad_domain.validate().unwrap_err().0, "preview.domain");
        let bad_url = PreviewSettings {
            public_url: Some("ftp://example.com".into()),
            ..Default::default()
        };
        assert_eq!(bad_url.validate().unwrap_err().0, "preview.public_url");
        let shared = PreviewSettings {
            domain: Some("example.com".into()),
            public_url: Some("https://app.example.com".into()),
        };
        assert_eq!(shared.validate().unwrap_err().0, "preview.domain");
    }

    #[test]
    fn the_handoff_never_redirects_off_the_origin() {
        for (path, want) in [
            ("/app?x=1", "/app?x=1"),
            ("//evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example/", "/"),
            ("/a\nb", "/"),
        ] {
            assert_eq!(safe_next(path), want, "{path:?}");
        }
        let p = previews(PreviewSettings::default());
        let id = SandboxId::generate();
        let url = p.handoff_url(&id, 8080, "//evil.example");
        assert!(url.ends_with("&next=%2F"), "{url}");
    }

    #[test]
    fn a_handoff_sets_a_cookie_for_its_own_sandbox_and_port_only() {
        let p = previews(PreviewSettings::default());
        let id = SandboxId::generate();
        let other = SandboxId::generate();
        let url = p.handoff_url(&id, 8080, "/dash");
        let query = url.split_once('?').unwrap().1;
        // Presented at another sandbox's origin, or another port's, it opens nothing.
        assert_eq!(handoff(&p, &other, 8080, Some(query)).status(), 401);
        assert_eq!(handoff(&p, &id, 8081, Some(query)).status(), 401);
        let r = handoff(&p, &id, 8080, Some(query));
        assert_eq!(r.status(), StatusCode::FOUND);
        assert_eq!(r.headers()[header::LOCATION], "/dash");
        let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        let value = cookie
            .strip_prefix("atelier_preview=")
            .and_then(|c| c.split(';').next())
            .unwrap();
        assert!(grants(p.key(), value, GrantKind::Cookie, &id, 8080));
        assert!(!grants(p.key(), value, GrantKind::Cookie, &other, 8080));
        assert!(!grants(p.key(), value, GrantKind::Cookie, &id, 8081));
        // A hand-off grant is not a cookie, and a cookie is not a hand-off.
        let handoff_grant = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "grant")
            .unwrap()
            .1
            .into_owned();
        assert!(!grants(
            p.key(),
            &handoff_grant,
            GrantKind::Cookie,
            &id,
            8080
        ));
        assert_eq!(
            handoff(&p, &id, 8080, Some(&format!("grant={value}"))).status(),
            401
        );
    }

    #[test]
    fn the_manager_credentials_are_stripped_and_the_dev_servers_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; atelier_preview=abc; sid=42"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer atl_x"),
        );
        strip_manager_credentials(&mut h, "atl_x");
        assert_eq!(h[header::COOKIE], "theme=dark; sid=42");
        assert!(!h.contains_key(header::AUTHORIZATION));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("atelier_preview=abc"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer app-own"),
        );
        strip_manager_credentials(&mut h, "atl_x");
        assert!(!h.contains_key(header::COOKIE));
        assert_eq!(h[header::AUTHORIZATION], "Bearer app-own");

        let mut r = HeaderMap::new();
        r.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sid=1; Path=/"),
        );
        r.append(
            header::SET_COOKIE,
            HeaderValue::from_static("atelier_preview=forged; Domain=localhost"),
        );
        drop_cookie_setters(&mut r);
        let left: Vec<_> = r.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["sid=1; Path=/"]);
    }
}
