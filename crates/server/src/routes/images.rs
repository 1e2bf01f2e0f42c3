//! Images sandboxes boot from: listed, built on demand (cached by recipe), removed.

use atelier_vmm::images::{ImageInfo, RECIPES};
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
    /// Recipe name (`minimal`, `dev`).
    pub name: String,
    pub built: bool,
    /// Content address of the build (hash of the recipe and its inputs).
    pub id: Option<String>,
    pub kernel_version: Option<String>,
    pub rootfs_bytes: Option<u64>,
    pub built_at_ms: Option<i64>,
}

fn view(name: &str, info: Option<&ImageInfo>) -> ImageView {
    ImageView {
        name: name.to_owned(),
        built: info.is_some(),
        id: info.map(|i| i.id.clone()),
        kernel_version: info.map(|i| i.kernel_version.clone()),
        rootfs_bytes: info.map(|i| i.rootfs_bytes),
        built_at_ms: info.map(|i| i.built_at_ms),
    }
}

fn known(name: &str) -> ApiResult<()> {
    if RECIPES.contains(&name) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "image {name:?} (known: {})",
            RECIPES.join(", ")
        )))
    }
}

/// Every image recipe and whether it is built.
#[utoipa::path(get, path = "/api/v1/images", tag = "images", responses((status = 200, body = Vec<ImageView>)))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<ImageView>> {
    let built = state.images.list();
    Json(
        RECIPES
            .iter()
            .map(|r| view(r, built.iter().find(|i| i.name == *r)))
            .collect(),
    )
}

/// Build an image (a no-op when a build of the same recipe and inputs exists).
#[utoipa::path(post, path = "/api/v1/images/{name}/build", tag = "images", params(("name" = String, Path)),
    responses((status = 200, body = ImageView), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn build(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<ImageView>> {
    known(&name)?;
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
    let built = state.images.list();
    Ok(Json(view(&name, built.iter().find(|i| i.name == name))))
}

/// Remove every build of an image.
#[utoipa::path(delete, path = "/api/v1/images/{name}", tag = "images", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    known(&name)?;
    match state.images.remove(&name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!("a build of image {name:?}"))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}
