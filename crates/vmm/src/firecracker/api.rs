//! Request and response bodies of the Firecracker API, mirroring the vendored Swagger
//! spec (`crates/vmm/spec/firecracker-api.yaml`) field for field.
//!
//! Only what an orchestrator sends (and the few answers it reads) is modelled. Field names
//! and optionality follow the spec's `definitions`; optional fields are left out of the
//! JSON when unset, because Firecracker rejects unknown fields and treats an absent
//! optional field as its default. `tests/firecracker_spec.rs` validates every body the
//! driver builds against the spec.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `BootSource` — `PUT /boot-source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSource {
    /// Path (as Firecracker sees it) of the uncompressed kernel.
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// `Drive.cache_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    Unsafe,
    Writeback,
}

/// `Drive.io_engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    Sync,
    Async,
}

/// `TokenBucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// The total number of tokens the bucket can hold.
    pub size: u64,
    /// Milliseconds it takes for the bucket to refill.
    pub refill_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
}

/// `RateLimiter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Bytes as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Operations as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// `Drive` — `PUT /drives/{drive_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drive {
    pub drive_id: String,
    pub is_root_device: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<CacheType>,
    /// Required for virtio-block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// Required for virtio-block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// vhost-user-block backend socket (not used by Atelier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl Drive {
    /// A virtio-block drive backed by the file at `path_on_host`.
    pub fn virtio_block(
        id: impl Into<String>,
        path_on_host: impl Into<String>,
        root: bool,
        read_only: bool,
    ) -> Self {
        Self {
            drive_id: id.into(),
            is_root_device: root,
            partuuid: None,
            cache_type: None,
            is_read_only: Some(read_only),
            path_on_host: Some(path_on_host.into()),
            rate_limiter: None,
            io_engine: None,
            socket: None,
        }
    }
}

/// `CpuTemplate` (deprecated upstream in favour of `/cpu-config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    None,
}

/// `MachineConfiguration.huge_pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    None,
    /// Unreleased upstream (1.17-dev).
    Transparent,
    #[serde(rename = "2M")]
    TwoM,
}

/// `MachineConfiguration` — `PUT /machine-config` (and the answer of its `GET`).
///
/// A `PUT` resets every optional field left out to its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// 1–32; 1 or an even number when `smt` is on.
    pub vcpu_count: u32,
    pub mem_size_mib: u32,
    /// Simultaneous multithreading (x86 only); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Dirty page tracking, needed for diff snapshots; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

/// `NetworkInterface` — `PUT /network-interfaces/{iface_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    pub iface_id: String,
    /// The host tap device.
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// 68–65535 (Firecracker ≥ 1.16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// `Vsock` — `PUT /vsock`. Host-initiated connections go through `uds_path` with the
/// `CONNECT <port>\n` handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsock {
    /// ≥ 3.
    pub guest_cid: u32,
    pub uds_path: String,
    /// Deprecated upstream; never sent by Atelier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
}

/// `EntropyDevice` — `PUT /entropy` (virtio-rng).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntropyDevice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// `Logger.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warning,
    Info,
    Debug,
    Trace,
    Off,
}

/// `Logger` — `PUT /logger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `Metrics` — `PUT /metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub metrics_path: String,
    /// Unreleased upstream (1.17-dev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_id: Option<bool>,
    /// Unreleased upstream (1.17-dev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

/// `InstanceActionInfo.action_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    FlushMetrics,
    InstanceStart,
    SendCtrlAltDel,
}

/// `InstanceActionInfo` — `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// `Vm.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// `Vm` — `PATCH /vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub state: VmState,
}

/// `SnapshotCreateParams.snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    Full,
    /// Needs `track_dirty_pages` (or swap off); developer preview upstream.
    Diff,
}

/// `SnapshotCreateParams` — `PUT /snapshot/create` (the VM must be paused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    /// The microVM state file to write.
    pub snapshot_path: String,
    /// The guest memory file to write.
    pub mem_file_path: String,
    /// Default `Full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotType>,
}

/// `MemoryBackend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// `backend_path` is the memory file (mapped privately, lazily).
    File,
    /// `backend_path` is a Unix socket where a page-fault handler listens.
    Uffd,
}

/// `MemoryBackend`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBackend {
    pub backend_type: MemoryBackendType,
    pub backend_path: String,
}

/// `NetworkOverride` (Firecracker ≥ 1.12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkOverride {
    pub iface_id: String,
    pub host_dev_name: String,
}

/// `VsockOverride` (Firecracker ≥ 1.16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockOverride {
    pub uds_path: String,
}

/// `SnapshotLoadParams.huge_pages` (unreleased upstream, 1.17-dev).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotHugePages {
    Snapshot,
    None,
    Transparent,
    #[serde(rename = "2M")]
    TwoM,
}

/// `SnapshotLoadParams` — `PUT /snapshot/load`, on a fresh process only (nothing but the
/// logger and metrics configured).
///
/// Exactly one of `mem_backend` and the deprecated `mem_file_path` must be present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    pub snapshot_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// Deprecated upstream; use `mem_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Deprecated upstream; use `track_dirty_pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Resume the VM once loaded (otherwise it stays paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// x86 only, Firecracker ≥ 1.16: advance kvmclock by the wall time since the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<SnapshotHugePages>,
}

impl SnapshotLoadParams {
    /// Loads `snapshot_path` with guest memory from the file `mem_path`.
    pub fn from_file(snapshot_path: impl Into<String>, mem_path: impl Into<String>) -> Self {
        Self {
            snapshot_path: snapshot_path.into(),
            mem_backend: Some(MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: mem_path.into(),
            }),
            mem_file_path: None,
            track_dirty_pages: None,
            enable_diff_snapshots: None,
            resume_vm: None,
            network_overrides: None,
            vsock_override: None,
            clock_realtime: None,
            huge_pages: None,
        }
    }
}

/// `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

/// `InstanceInfo` — the answer of `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub app_name: String,
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
}

/// `FirecrackerVersion` — the answer of `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

/// `Error` — the body of every error answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn optional_fields_are_left_out() {
        let d = Drive::virtio_block("rootfs", "/r.ext4", true, false);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"drive_id": "rootfs", "is_root_device": true, "is_read_only": false,
                   "path_on_host": "/r.ext4"})
        );
        assert_eq!(
            serde_json::to_value(EntropyDevice::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn enums_use_the_spec_spelling() {
        let m = MachineConfiguration {
            vcpu_count: 2,
            mem_size_mib: 512,
            smt: Some(false),
            track_dirty_pages: None,
            cpu_template: None,
            huge_pages: Some(HugePages::TwoM),
        };
        assert_eq!(serde_json::to_value(&m).unwrap()["huge_pages"], "2M");
        let info: InstanceInfo = serde_json::from_value(json!({
            "app_name": "Firecracker", "id": "x", "state": "Not started", "vmm_version": "1.16.1"
        }))
        .unwrap();
        assert_eq!(info.state, InstanceState::NotStarted);
        let e: ApiError = serde_json::from_str(r#"{"fault_message":"Invalid drive"}"#).unwrap();
        assert_eq!(e.fault_message.as_deref(), Some("Invalid drive"));
    }
}
