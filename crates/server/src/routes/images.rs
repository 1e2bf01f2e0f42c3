//! Images sandboxes boot from: listed, built on demand (cached by recipe), removed.

use atelier_vmm::images::{BuildSteps, ImageInfo};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

#[derive(Serialize, ToSchema)]
pub struct ImageView {
    /// Recipe name (`minimal`, `dev`), or a workspace extension's `dev-ext-<hash>`.
    pub name: String,
    /// What an extension adds to its base (absent for the built-in recipes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<atelier_core::image::ImageExtension>,
    pub built: bool,
    /// Content address of the build (hash of the recipe and its inputs).
    pub id: Option<String>,
    pub kernel_version: Option<String>,
    pub rootfs_bytes: Option<u64>,
    pub built_at_ms: Option<i64>,
    /// What the build holds, with versions (empty for images that record none).
    pub contents: Vec<ImageContentView>,
    /// A build of this image is running now.
    pub building: bool,
    /// The latest steps of the running build, or of the last one since the manager
    /// started (a failed build's last step says why).
    pub steps: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ImageContentView {
    /// A tool (`node`, `go`, `claude`) or a pinned npm package (`npm:opencode-ai`).
    pub name: String,
    /// Its version, or `missing` when it did not answer at build time.
    pub version: String,
}

fn view(
    name: &str,
    extension: Option<atelier_core::image::ImageExtension>,
    info: Option<&ImageInfo>,
    steps: BuildSteps,
) -> ImageView {
    ImageView {
        name: name.to_owned(),
        extension,
        built: info.is_some(),
        id: info.map(|i| i.id.clone()),
        kernel_version: info.map(|i| i.kernel_version.clone()),
        rootfs_bytes: info.map(|i| i.rootfs_bytes),
        built_at_ms: info.map(|i| i.built_at_ms),
        contents: info
            .map(|i| {
                i.contents
                    .iter()
                    .map(|c| ImageContentView {
                        name: c.name.clone(),
                        version: c.version.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        building: steps.running,
        steps: steps.steps,
    }
}

fn view_of(state: &AppState, name: &str) -> ImageView {
    let built = state.images.list();
    view(
        name,
        state.images.extension(name),
        built.iter().find(|i| i.name == name),
        state.images.steps(name),
    )
}

fn known(state: &AppState, name: &str) -> ApiResult<()> {
    if state.images.is_known(name) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "image {name:?} (known: {})",
            state.images.names().join(", ")
        )))
    }
}

/// Every image recipe, and every workspace's extension, and whether it is built.
#[utoipa::path(get, path = "/api/v1/images", tag = "images", responses((status = 200, body = Vec<ImageView>)))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<ImageView>> {
    Json(
        state
            .images
            .names()
            .iter()
            .map(|r| view_of(&state, r))
            .collect(),
    )
}

/// One image: its build, what it holds, and how far a running build has come.
#[utoipa::path(get, path = "/api/v1/images/{name}", tag = "images", params(("name" = String, Path)),
    responses((status = 200, body = ImageView), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageView>> {
    known(&state, &name)?;
    Ok(Json(view_of(&state, &name)))
}

/// Build an image (a no-op when a build of the same recipe and inputs exists).
#[utoipa::path(post, path = "/api/v1/images/{name}/build", tag = "images", params(("name" = String, Path)),
    responses((status = 200, body = ImageView), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn build(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageView>> {
    known(&state, &name)?;
    let images = state.images.clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || images.build(&n, &|msg| tracing::info!("{msg}")))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "image_build_failed",
                e.to_string(),
            )
        })?;
    Ok(Json(view_of(&state, &name)))
}

/// Remove every build of an image.
#[utoipa::path(delete, path = "/api/v1/images/{name}", tag = "images", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    known(&state, &name)?;
    match state.images.remove(&name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!("a build of image {name:?}"))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}
