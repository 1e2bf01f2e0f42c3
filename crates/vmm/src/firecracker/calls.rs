//! Firecracker API requests as data: method, path and JSON body.
//!
//! Every request the driver and [`FirecrackerClient`](super::FirecrackerClient) send is
//! built here, so that `tests/firecracker_spec.rs` can check exactly those bodies against
//! the vendored spec.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::api::{
    ActionType, BootSource, Drive, EntropyDevice, InstanceActionInfo, Logger, MachineConfiguration,
    Metrics, NetworkInterface, SnapshotCreateParams, SnapshotLoadParams, Vm, VmState, Vsock,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiMethod {
    Get,
    Put,
    Patch,
}

impl ApiMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
        }
    }
}

impl fmt::Display for ApiMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub method: ApiMethod,
    /// Absolute path, e.g. `/drives/rootfs`.
    pub path: String,
    /// JSON body (`None` for `GET`).
    pub body: Option<Value>,
}

impl ApiCall {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: ApiMethod::Get,
            path: path.into(),
            body: None,
        }
    }

    pub fn put(path: impl Into<String>, body: &impl Serialize) -> Self {
        Self::with_body(ApiMethod::Put, path, body)
    }

    pub fn patch(path: impl Into<String>, body: &impl Serialize) -> Self {
        Self::with_body(ApiMethod::Patch, path, body)
    }

    fn with_body(method: ApiMethod, path: impl Into<String>, body: &impl Serialize) -> Self {
        // The API types hold only strings, numbers, booleans and string-keyed maps, which
        // always serialize; a `null` body would be refused by Firecracker anyway.
        Self {
            method,
            path: path.into(),
            body: Some(serde_json::to_value(body).unwrap_or(Value::Null)),
        }
    }

    /// `PUT /drives/rootfs`-style description, for errors and logs.
    pub fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub fn put_logger(logger: &Logger) -> ApiCall {
    ApiCall::put("/logger", logger)
}

pub fn put_metrics(metrics: &Metrics) -> ApiCall {
    ApiCall::put("/metrics", metrics)
}

pub fn put_boot_source(boot: &BootSource) -> ApiCall {
    ApiCall::put("/boot-source", boot)
}

pub fn put_drive(drive: &Drive) -> ApiCall {
    ApiCall::put(format!("/drives/{}", drive.drive_id), drive)
}

pub fn put_machine_config(machine: &MachineConfiguration) -> ApiCall {
    ApiCall::put("/machine-config", machine)
}

pub fn put_network_interface(iface: &NetworkInterface) -> ApiCall {
    ApiCall::put(format!("/network-interfaces/{}", iface.iface_id), iface)
}

pub fn put_vsock(vsock: &Vsock) -> ApiCall {
    ApiCall::put("/vsock", vsock)
}

pub fn put_entropy(entropy: &EntropyDevice) -> ApiCall {
    ApiCall::put("/entropy", entropy)
}

pub fn action(action_type: ActionType) -> ApiCall {
    ApiCall::put("/actions", &InstanceActionInfo { action_type })
}

pub fn set_vm_state(state: VmState) -> ApiCall {
    ApiCall::patch("/vm", &Vm { state })
}

pub fn pause() -> ApiCall {
    set_vm_state(VmState::Paused)
}

pub fn resume() -> ApiCall {
    set_vm_state(VmState::Resumed)
}

pub fn create_snapshot(params: &SnapshotCreateParams) -> ApiCall {
    ApiCall::put("/snapshot/create", params)
}

pub fn load_snapshot(params: &SnapshotLoadParams) -> ApiCall {
    ApiCall::put("/snapshot/load", params)
}

pub fn describe_instance() -> ApiCall {
    ApiCall::get("/")
}

pub fn version() -> ApiCall {
    ApiCall::get("/version")
}

pub fn get_machine_config() -> ApiCall {
    ApiCall::get("/machine-config")
}
