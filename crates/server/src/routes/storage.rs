//! Disk usage: what a sandbox's disk costs on its own, and how full the pool is.

use atelier_vmm::storage::{filesystem_usage, tree_usage, DiskUsage};
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
    let dir = rec
        .runtime
        .as_ref()
        .and_then(|v| atelier_vmm::Runtime::from_json(v).ok())
        .map(|r| r.dir)
        .unwrap_or_else(|| state.data_dir.join("sandboxes").join(id.as_str()));
    let usage: DiskUsage = tokio::task::spawn_blocking(move || tree_usage(&dir))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(SandboxDisk {
        own_bytes: usage.own_bytes,
        exact: usage.exact,
    }))
}

/// The storage mechanism for `driver` in `data_dir`, detected once at start-up.
pub fn detect(data_dir: &std::path::Path, driver: atelier_vmm::DriverKind) -> (String, String) {
    if driver == atelier_vmm::DriverKind::Qemu {
        return (
            "qcow2".into(),
            "QEMU disks are qcow2 overlays of their image or prebuild snapshot (O(1) clones)"
                .into(),
        );
    }
    let detected = atelier_vmm::storage::detect(
        &data_dir.join("sandboxes"),
        &atelier_vmm::storage::DetectOptions::default(),
    );
    (detected.kind().to_string(), detected.reason)
}

/// The pool's usage now, next to how clones are made.
pub fn info(state: &AppState) -> StorageInfo {
    let usage = filesystem_usage(&state.data_dir).ok();
    StorageInfo {
        kind: state.storage.0.clone(),
        reason: state.storage.1.clone(),
        pool_used_bytes: usage.map(|u| u.used_bytes).unwrap_or(0),
        pool_total_bytes: usage.map(|u| u.total_bytes).unwrap_or(0),
    }
}
