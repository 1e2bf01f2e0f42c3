//! The dashboard: the built `web/` assets (Vite's `web/dist`), embedded in the binary and
//! served at `/` without a token (they hold no data; the API behind them needs one).
//! Paths that are not files fall back to `index.html`, so the app's own routes load.
//! Without a built dashboard the binary still builds, and `/` says how to build it.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "../../web/dist"]
#[allow_missing = true]
struct Assets;

/// Hashed file names never change content, so they may be cached for good; the index
/// must be revalidated so a new build is picked up at once.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Atelier</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem">
<h1>Atelier</h1>
<p>The dashboard was not built into this binary. Build it and the manager again:</p>
<pre>scripts/build-web.sh &amp;&amp; cargo build --release -p atelier-cli</pre>
<p>(<code>scripts/serve.sh</code> does both.) The API works without it:
<a href="/swagger">/swagger</a> describes every route.</p>
</body></html>
"#;

/// Whether a path belongs to the API or its docs (never answered by the dashboard).
fn is_server_path(path: &str) -> bool {
    path == "/api"
        || path.starts_with("/api/")
        || path == "/swagger"
        || path.starts_with("/swagger/")
        || path.starts_with("/p/")
}

/// Middleware in front of the router: GET/HEAD outside `/api` and `/swagger` are the
/// dashboard's; everything else goes on to the API.
pub async fn dashboard(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if is_server_path(path) || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    asset_response(path, if_none_match.as_deref())
}

fn asset_response(path: &str, if_none_match: Option<&str>) -> Response {
    let relative = path.trim_start_matches('/');
    if !relative.is_empty() && !relative.ends_with('/') {
        if let Some(file) = Assets::get(relative) {
            let cache = if relative.starts_with("assets/") {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            return file_response(&file, cache, if_none_match);
        }
        // A missing file (a stale hashed asset, a typo) is a 404, not the app's HTML.
        let last = relative.rsplit('/').next().unwrap_or(relative);
        if last.contains('.') {
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "not found",
            )
                .into_response();
        }
    }
    match Assets::get("index.html") {
        Some(index) => file_response(&index, REVALIDATE, if_none_match),
        None => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, REVALIDATE),
            ],
            NOT_BUILT,
        )
            .into_response(),
    }
}

fn file_response(
    file: &rust_embed::EmbeddedFile,
    cache: &'static str,
    if_none_match: Option<&str>,
) -> Response {
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime == "application/javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    let mut builder = Response::builder()
        .header(header::CACHE_CONTROL, cache)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Ok(v) = HeaderValue::from_str(&etag) {
        builder = builder.header(header::ETAG, v);
    }
    if if_none_match.is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag)) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::NOT_MODIFIED.into_response());
    }
    builder
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(file.data.clone().into_owned()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_and_docs_paths_are_left_to_the_router() {
        for p in ["/api", "/api/v1/tasks", "/swagger", "/swagger/init.js"] {
            assert!(is_server_path(p), "{p}");
        }
        for p in [
            "/",
            "/tasks/t1",
            "/assets/index-abc.js",
            "/apiary",
            "/swaggerish",
        ] {
            assert!(!is_server_path(p), "{p}");
        }
    }

    #[test]
    fn app_routes_get_the_index_and_missing_files_a_404() {
        let route = asset_response("/tasks/t123", None);
        assert_eq!(route.status(), StatusCode::OK);
        assert_eq!(
            route.headers()[header::CACHE_CONTROL],
            REVALIDATE,
            "the index is always revalidated"
        );
        assert!(route.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let missing = asset_response("/assets/gone-0000.js", None);
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn hashed_assets_are_cached_for_good_and_revalidate_by_etag() {
        let Some(name) = Assets::iter().find(|n| n.starts_with("assets/") && n.ends_with(".js"))
        else {
            atelier_testkit::skip("web/dist is not built (scripts/build-web.sh)");
            return;
        };
        let first = asset_response(&format!("/{name}"), None);
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CACHE_CONTROL], IMMUTABLE);
        assert!(first.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript"));
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = asset_response(&format!("/{name}"), Some(&etag));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }
}
