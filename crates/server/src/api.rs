//! The router and its OpenAPI document, built from the same route list so that they
//! cannot drift apart.

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::routes::terminal;
use crate::routes::{
    events, files, images, ports, prebuilds, sandboxes, services, storage, system, tasks,
    templates, workspaces,
};
use crate::{AppState, ServeOptions};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Atelier API",
        description = "Run AI coding agents in sandboxes. Every route but `/api/v1/health` needs \
                       `Authorization: Bearer <token>` (the admin token is in `<data-dir>/admin.token`). \
                       Errors are `{\"error\":{\"code\",\"message\",\"details\"}}`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "system", description = "Health and host information"),
        (name = "workspaces", description = "Recipes sandboxes are made from"),
        (name = "sandboxes", description = "Sandbox lifecycle"),
        (name = "exec", description = "Commands in a sandbox"),
        (name = "files", description = "Files in a sandbox"),
        (name = "services", description = "Supervised processes in a sandbox"),
        (name = "events", description = "The typed event stream"),
        (name = "tasks", description = "Prompts run by coding agents on branches"),
        (name = "templates", description = "Session templates: what the agent is told, per effort"),
        (name = "attention", description = "Questions and permission requests waiting for a human"),
        (name = "images", description = "Kernels and root filesystems sandboxes boot from"),
        (name = "prebuilds", description = "A workspace's setup captured once; its sandboxes start as clones of it"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn api_routes(max_file_bytes: usize) -> OpenApiRouter<AppState> {
    let uploads = OpenApiRouter::new()
        .routes(routes!(files::read, files::write))
        .layer(DefaultBodyLimit::max(max_file_bytes));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::system))
        .routes(routes!(workspaces::create, workspaces::list))
        .routes(routes!(
            workspaces::get,
            workspaces::update,
            workspaces::delete
        ))
        .routes(routes!(sandboxes::create, sandboxes::list))
        .routes(routes!(sandboxes::get, sandboxes::destroy))
        .routes(routes!(sandboxes::start))
        .routes(routes!(sandboxes::stop))
        .routes(routes!(sandboxes::pause))
        .routes(routes!(sandboxes::resume))
        .routes(routes!(sandboxes::exec))
        .routes(routes!(sandboxes::exec_stream))
        .routes(routes!(terminal::terminal))
        .routes(routes!(files::list, files::delete))
        .routes(routes!(files::stat))
        .routes(routes!(files::mkdir))
        .routes(routes!(services::list))
        .routes(routes!(services::put, services::get, services::delete))
        .routes(routes!(services::start))
        .routes(routes!(services::stop))
        .routes(routes!(services::logs))
        .routes(routes!(events::stream))
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::dispatch))
        .routes(routes!(tasks::cancel))
        .routes(routes!(tasks::done))
        .routes(routes!(tasks::events))
        .routes(routes!(tasks::diff))
        .routes(routes!(tasks::attention))
        .routes(routes!(tasks::review))
        .routes(routes!(templates::list))
        .routes(routes!(templates::put, templates::delete))
        .routes(routes!(templates::list_for_workspace))
        .routes(routes!(templates::put_for_workspace))
        .routes(routes!(tasks::answer))
        .routes(routes!(images::list))
        .routes(routes!(images::show))
        .routes(routes!(images::build))
        .routes(routes!(images::remove))
        .routes(routes!(prebuilds::start, prebuilds::status))
        .routes(routes!(prebuilds::check))
        .routes(routes!(prebuilds::get))
        .routes(routes!(prebuilds::list))
        .routes(routes!(prebuilds::logs))
        .routes(routes!(storage::sandbox_disk))
        .routes(routes!(ports::link))
        .routes(routes!(ports::previews))
        .routes(routes!(ports::editor))
        .merge(uploads)
}

/// The OpenAPI document of the API (also served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    with_unique_operation_ids(api_routes(0).split_for_parts().1)
}

/// Handlers are named for what they do within their module (`list`, `get`…), so the
/// generated operation ids repeat across tags; clients generated from the document need
/// them unique. Each becomes `<tag>_<handler>` (`sandboxes_list`, `prebuilds_get`).
fn with_unique_operation_ids(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let tag = op
                .tags
                .as_ref()
                .and_then(|t| t.first())
                .cloned()
                .unwrap_or_default();
            if let Some(id) = &op.operation_id {
                if !tag.is_empty() && !id.starts_with(&format!("{tag}_")) {
                    op.operation_id = Some(format!("{tag}_{id}"));
                }
            }
        }
    }
    doc
}

pub fn router(state: AppState, opts: &ServeOptions) -> Router {
    let (api, doc) = api_routes(opts.max_file_bytes).split_for_parts();
    let doc = with_unique_operation_ids(doc);
    let doc_json = doc.to_pretty_json().unwrap_or_else(|_| "{}".into());
    api.route(
        "/api/v1/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc_json) }),
    )
    .route("/api/v1/tls/ask", get(crate::preview::tls_ask))
    .route("/swagger", get(swagger_page))
    .route("/swagger/", get(swagger_page))
    .route("/swagger/{asset}", get(swagger_asset))
    .route("/p/{ticket}", get(ports::preview_root))
    .route("/p/{ticket}/", axum::routing::any(ports::preview))
    .route("/p/{ticket}/{*rest}", axum::routing::any(ports::preview))
    .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    })
    .layer(middleware::from_fn_with_state(
        state.clone(),
        crate::auth::require_token,
    ))
    .layer(DefaultBodyLimit::max(opts.max_json_bytes))
    .layer(middleware::from_fn(crate::web::dashboard))
    // Outside the dashboard and the token check: a preview host reaches neither.
    .layer(middleware::from_fn_with_state(
        state.clone(),
        crate::preview::by_host,
    ))
    .layer(CatchPanicLayer::custom(|_| {
        ApiError::internal("the manager hit a bug; see its log").into_response()
    }))
    .with_state(state)
}

const SWAGGER_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Atelier API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/swagger/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/swagger/swagger-ui-bundle.js"></script>
<script src="/swagger/init.js"></script></body></html>"#;

const SWAGGER_INIT: &str =
    "window.ui = SwaggerUIBundle({ url: '/api/v1/openapi.json', dom_id: '#swagger-ui', \
                            persistAuthorization: true, deepLinking: true });\n";

async fn swagger_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        SWAGGER_PAGE,
    )
}

async fn swagger_asset(axum::extract::Path(asset): axum::extract::Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match asset.as_str() {
        "swagger-ui-bundle.js" => (
            include_bytes!("../assets/swagger/swagger-ui-bundle.js"),
            "text/javascript",
        ),
        "swagger-ui.css" => (
            include_bytes!("../assets/swagger/swagger-ui.css"),
            "text/css",
        ),
        "init.js" => (SWAGGER_INIT.as_bytes(), "text/javascript"),
        _ => return ApiError::not_found(format!("swagger asset {asset:?}")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn every_operation_has_its_own_id() {
        let doc = super::openapi();
        let mut seen: HashMap<String, String> = HashMap::new();
        let mut count = 0;
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                let id = op.operation_id.clone().expect("an operation id");
                count += 1;
                if let Some(other) = seen.insert(id.clone(), path.clone()) {
                    panic!("{id} names an operation of both {other} and {path}");
                }
            }
        }
        assert!(count > 40, "only {count} operations");
        assert!(seen.contains_key("sandboxes_list"), "{:?}", seen.keys());
        assert!(seen.contains_key("prebuilds_get"), "{:?}", seen.keys());
    }
}
