use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use atelier_agent_client::AgentClient;
use atelier_core::{Resources, SandboxId};
use atelier_proto::AgentAddr;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    Local,
    Qemu,
    Firecracker,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Qemu => "qemu",
            Self::Firecracker => "firecracker",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Self::Local),
            "qemu" => Ok(Self::Qemu),
            "firecracker" => Ok(Self::Firecracker),
            _ => Err(format!("unknown driver {s:?} (local, qemu, firecracker)")),
        }
    }
}

/// What a driver needs to know to bring up one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: SandboxId,
    pub name: String,
    pub resources: Resources,
    pub image: String,
    pub agent_token: String,
    /// Extra environment for the agent and everything it runs.
    pub env: BTreeMap<String, String>,
}

/// The driver's handle on a launched sandbox, persisted (as JSON) before the manager
/// waits on it, so that a restarted manager can adopt or clean it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// How to reach the agent (an [`AgentAddr`] string).
    pub agent: String,
    /// The VMM (or agent) process, identified by pid *and* start time so that a recycled
    /// pid is never mistaken for ours.
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    /// The sandbox's directory on the host.
    pub dir: PathBuf,
}

impl Runtime {
    pub fn agent_addr(&self) -> Result<AgentAddr, VmmError> {
        self.agent.parse().map_err(VmmError::Corrupt)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Self, VmmError> {
        serde_json::from_value(v.clone()).map_err(|e| VmmError::Corrupt(e.to_string()))
    }
}

/// What `atelier system` shows about the active driver.
#[derive(Debug, Clone, Serialize)]
pub struct DriverInfo {
    pub kind: DriverKind,
    /// False for `local`: sandboxes are plain host processes.
    pub isolated: bool,
    pub can_pause: bool,
    /// Why this driver was chosen, and anything the operator should know.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("driver {driver} is not available: {reason}")]
    NotAvailable { driver: DriverKind, reason: String },
    #[error("the {driver} driver cannot {operation}")]
    Unsupported {
        driver: DriverKind,
        operation: &'static str,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the agent did not become ready within {waited:?}: {reason}{}", format_tail(.log_tail))]
    BootTimeout {
        waited: Duration,
        reason: String,
        log_tail: String,
    },
    #[error("the sandbox's process exited during start-up{}", format_tail(.log_tail))]
    ExitedEarly { log_tail: String },
    #[error("corrupt runtime record: {0}")]
    Corrupt(String),
    /// Firecracker refused an API request; `fault` is its `fault_message`.
    #[error("Firecracker answered {status} to {request}: {fault}")]
    Firecracker {
        request: String,
        status: u16,
        fault: String,
    },
}

fn format_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last output:\n{tail}")
    }
}

impl VmmError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

#[async_trait]
pub trait Driver: Send + Sync + 'static {
    fn info(&self) -> DriverInfo;

    fn kind(&self) -> DriverKind {
        self.info().kind
    }

    /// Host resources (kind, identifier) the sandbox will own. The server records them
    /// before calling [`Driver::launch`], so nothing is ever created unrecorded.
    fn planned_resources(&self, id: &SandboxId) -> Vec<(String, String)>;

    /// Creates what the sandbox needs (directory, disk…) and starts its machine. Returns
    /// as soon as the process runs; [`Driver::wait_ready`] waits for the agent.
    async fn launch(&self, spec: &SandboxSpec) -> Result<Runtime, VmmError>;

    /// Waits until the agent answers its health check, or fails with the log tail.
    async fn wait_ready(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        within: Duration,
    ) -> Result<(), VmmError>;

    /// Stops the machine; idempotent. The disk/directory stays for a later launch.
    async fn stop(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError>;

    /// Stops the machine and removes every host resource it owns; idempotent.
    async fn destroy(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError>;

    async fn pause(&self, _runtime: &Runtime) -> Result<(), VmmError> {
        Err(VmmError::Unsupported {
            driver: self.kind(),
            operation: "pause",
        })
    }

    async fn resume(&self, _runtime: &Runtime) -> Result<(), VmmError> {
        Err(VmmError::Unsupported {
            driver: self.kind(),
            operation: "resume",
        })
    }

    /// True while the sandbox's process (the same one, not a recycled pid) is alive.
    fn is_alive(&self, runtime: &Runtime) -> bool;

    /// Removes host resources belonging to no sandbox in `keep` (left by a crash).
    /// Returns a description of each thing removed.
    async fn sweep(&self, keep: &HashSet<SandboxId>) -> Vec<String>;

    fn agent(&self, runtime: &Runtime, token: &str) -> Result<AgentClient, VmmError> {
        Ok(AgentClient::new(runtime.agent_addr()?, token))
    }
}
