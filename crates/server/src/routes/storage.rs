//! Disk usage: what a sandbox's disk costs on its own, and how full the pool is.

use atelier_vmm::storage::{filesystem_usage, DiskUsage};
use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::sandbox_id;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

type ErrorBody = atelier_proto::ErrorBody;

/// How clones are made on this host, and how full the filesystem holding them is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StorageInfo {
    /// `reflink`, `qcow2`, `lvm-thin` or `copy`.
    pub kind: String,
    /// Why this mechanism, and why not the better ones.
    pub reason: String,
    pub pool_used_bytes: u64,
    pub pool_total_bytes: u64,
}

/// What the storage of a sandbox costs on its own.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxDisk {
    /// Bytes that belong to this sandbox alone: blocks it wrote, not those it shares
    /// with its image or prebuild.
    pub own_bytes: u64,
    /// False when the filesystem cannot tell shared blocks apart (`own_bytes` then
    /// counts every allocated block: an upper bound).
    pub exact: bool,
}

/// The storage a sandbox owns on its own (its writes, not what it shares with its
/// image or prebuild).
#[utoipa::path(get, path = "/api/v1/sandboxes/{id}/disk", tag = "sandboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = SandboxDisk), (status = 404, body = ErrorBody)))]
pub async fn sandbox_disk(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxDisk>> {
    let id = sandbox_id(&id)?;
    let rec = state.store.get_sandbox(&id).await?;
    let runtime = rec
        .runtime
        .as_ref()
        .and_then(|v| atelier_vmm::Runtime::from_json(v).ok());
    let driver = state.lifecycle.driver_named(&rec.sandbox.driver);
    let usage: DiskUsage =
        tokio::task::spawn_blocking(move || driver.disk_usage(&id, runtime.as_ref()))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(SandboxDisk {
        own_bytes: usage.own_bytes,
        exact: usage.exact,
    }))
}

/// The pool's usage now, next to how clones are made.
pub fn info(state: &AppState) -> StorageInfo {
    let usage = filesystem_usage(&state.data_dir).ok();
    StorageInfo {
        kind: state.storage.kind.clone(),
        reason: state.storage.reason.clone(),
        pool_used_bytes: usage.map(|u| u.used_bytes).unwrap_or(0),
        pool_total_bytes: usage.map(|u| u.total_bytes).unwrap_or(0),
    }
}
