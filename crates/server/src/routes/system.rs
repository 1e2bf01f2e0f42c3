use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
    pub version: &'static str,
}

/// Liveness of the manager. The only route that needs no token.
#[utoipa::path(get, path = "/api/v1/health", tag = "system", security(()),
    responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, ToSchema)]
pub struct SystemInfo {
    pub version: &'static str,
    /// The active hypervisor driver.
    pub driver: String,
    /// False when sandboxes are plain host processes (the `local` driver).
    pub isolated: bool,
    pub can_pause: bool,
    /// Why this driver was chosen, one line per driver considered.
    pub driver_notes: Vec<String>,
    /// Every usable driver (sandboxes keep the driver that made them).
    pub drivers: Vec<String>,
    pub data_dir: String,
    pub schema_version: i64,
    pub sandboxes: SandboxCounts,
    /// How sandbox disks are cloned, and how full their filesystem is.
    pub storage: super::storage::StorageInfo,
    pub uptime_secs: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SandboxCounts {
    pub total: usize,
    pub running: usize,
}

/// Driver, versions and counts.
#[utoipa::path(get, path = "/api/v1/system", tag = "system",
    responses((status = 200, body = SystemInfo), (status = 401, body = atelier_proto::ErrorBody)))]
pub async fn system(State(state): State<AppState>) -> ApiResult<Json<SystemInfo>> {
    let info = state.lifecycle.driver().info();
    let all = state.store.list_sandbox_views(&Default::default()).await?;
    Ok(Json(SystemInfo {
        version: env!("CARGO_PKG_VERSION"),
        driver: info.kind.to_string(),
        isolated: info.isolated,
        can_pause: info.can_pause,
        driver_notes: state
            .driver_notes
            .iter()
            .cloned()
            .chain(info.notes)
            .collect(),
        drivers: state
            .lifecycle
            .drivers()
            .iter()
            .map(|d| d.kind().to_string())
            .collect(),
        data_dir: state.data_dir.display().to_string(),
        schema_version: state.store.schema_version().await?,
        sandboxes: SandboxCounts {
            total: all.len(),
            running: all
                .iter()
                .filter(|s| s.state == atelier_core::SandboxState::Running)
                .count(),
        },
        storage: super::storage::info(&state),
        uptime_secs: state.started.elapsed().as_secs(),
    }))
}
