pub mod events;
pub mod files;
pub mod images;
pub mod ports;
pub mod prebuilds;
pub mod sandboxes;
pub mod services;
pub mod storage;
pub mod system;
pub mod tasks;
pub mod templates;
pub mod terminal;
pub mod workspaces;

use atelier_core::{SandboxId, WorkspaceId};

use crate::error::{ApiError, ApiResult};

/// Parses a sandbox id from a path; anything that cannot be one is simply not found.
pub fn sandbox_id(raw: &str) -> ApiResult<SandboxId> {
    SandboxId::parse(raw).ok_or_else(|| ApiError::not_found(format!("sandbox {raw:?}")))
}

/// Resolves a workspace given by id or by name.
pub async fn workspace_id(store: &atelier_store::Store, raw: &str) -> ApiResult<WorkspaceId> {
    Ok(store.get_workspace(raw).await?.id)
}
