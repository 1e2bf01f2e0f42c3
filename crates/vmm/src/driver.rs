use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::storage::DiskUsage;
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
    /// Set when the sandbox comes from [`Driver::launch_from_snapshot`]: the token of the
    /// agent captured in the snapshot. A restored agent answers only to it until
    /// [`Driver::wait_ready`] hands it `agent_token` (with a new host name, clock, entropy
    /// and machine id). `None` for a sandbox that boots.
    pub restore_token: Option<String>,
    /// What the sandbox may reach (its workspace's policy; the default for others).
    pub network: atelier_core::NetworkSpec,
    /// Host folders shared into it (host paths absolute and resolved), mounted before
    /// anything runs. Only drivers whose [`Driver::shares_folders`] is `Ok` get any.
    pub shared_folders: Vec<atelier_core::SharedFolder>,
}

/// A running sandbox captured by [`Driver::snapshot`]: memory and device state plus its
/// disk, from which [`Driver::launch_from_snapshot`] starts any number of clones. Plain
/// data (JSON) so the manager can persist it; every path is absolute and the directory
/// must not move while clones of it exist (their disks are overlays of `disk`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub driver: DriverKind,
    /// The directory holding everything below (`snapshot.json` describes it too).
    pub dir: PathBuf,
    /// Memory and device state (QEMU: its migration stream). Never modified once written.
    /// `None` for a driver without memory snapshots (`local`): its clones boot from the
    /// disk instead of resuming, and [`SnapshotInfo::restores_memory`] says so.
    #[serde(default)]
    pub memory: Option<PathBuf>,
    /// The disk at the instant of the snapshot, self-contained (QEMU: a qcow2 with no
    /// backing file; `local`: a directory tree). Clones get copy-on-write copies of it;
    /// it is never written.
    pub disk: PathBuf,
    /// The kernel and initramfs the captured machine booted, copied here: a restore must
    /// build the very same machine, whatever the image store holds by then. `None`
    /// where there is no kernel (`local`).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub initramfs: Option<PathBuf>,
    /// The image the captured sandbox was created from.
    pub image: String,
    /// The machine's size; clones get exactly this (a restore cannot resize).
    pub memory_mib: u32,
    pub vcpus: u32,
    /// When the snapshot was taken, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Driver-specific settings a restore must reproduce (QEMU: accelerator, CPU model,
    /// kernel command line, how the agent is reached).
    #[serde(default)]
    pub machine: serde_json::Value,
}

impl SnapshotInfo {
    /// Whether clones resume the captured memory (true) or boot the captured disk.
    pub fn restores_memory(&self) -> bool {
        self.memory.is_some()
    }
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

    /// True while the recorded process (same pid *and* start time) is alive.
    pub fn process_alive(&self) -> bool {
        matches!((self.pid, self.pid_start), (Some(pid), Some(start)) if crate::process::is_same_process(pid, start))
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
    /// The guest's configuration does not fit its config disk.
    #[error(
        "the guest configuration takes {bytes} bytes, more than the {} of the config disk \
         (is the sandbox's environment too large?)",
        atelier_proto::GUEST_CONFIG_DISK_BYTES
    )]
    GuestConfigTooLarge { bytes: usize },
    #[error("corrupt runtime record: {0}")]
    Corrupt(String),
    /// A snapshot could not be taken, or does not fit this driver or host.
    #[error("snapshot: {0}")]
    Snapshot(String),
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

    /// `Ok` when this driver can share host folders into its sandboxes, else why not.
    fn shares_folders(&self) -> Result<(), String> {
        Err(format!(
            "the {} driver cannot share host folders",
            self.kind()
        ))
    }

    /// Host resources (kind, identifier) the sandbox will own. The server records them
    /// before calling [`Driver::launch`], so nothing is ever created unrecorded.
    fn planned_resources(&self, id: &SandboxId) -> Vec<(String, String)>;

    /// Creates what the sandbox needs (directory, disk…) and starts its machine. Returns
    /// as soon as the process runs; [`Driver::wait_ready`] waits for the agent.
    async fn launch(&self, spec: &SandboxSpec) -> Result<Runtime, VmmError>;

    /// Waits until the agent answers its health check, or fails with the log tail. For a
    /// sandbox from [`Driver::launch_from_snapshot`] (`spec.restore_token` set), it waits
    /// for the snapshot's agent, gives it the clone's identity (`spec.name`,
    /// `spec.agent_token`, the host's clock, fresh entropy, a new machine id), and returns
    /// once the agent answers to `spec.agent_token` alone.
    async fn wait_ready(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        within: Duration,
    ) -> Result<(), VmmError>;

    /// Stops the machine; idempotent. The disk/directory stays for a later launch.
    async fn stop(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError>;

    /// Takes over a sandbox that a previous manager process launched and left running
    /// (reopens what lived in that process, such as host-service forwards).
    async fn adopt(&self, _spec: &SandboxSpec, _runtime: &Runtime) -> Result<(), VmmError> {
        Ok(())
    }

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

    /// Captures a running sandbox into `dest_dir` (created if missing; it must not hold a
    /// snapshot already): memory and device state, and its disk at the same instant.
    /// The guest is asked to flush its caches first (with `spec.agent_token`).
    ///
    /// The source is left **stopped**, as after [`Driver::stop`]: its own disk is kept,
    /// so a later launch cold-boots it as it was (a fresh boot, a fresh identity). It
    /// is not left running because every clone starts as a copy of it — same token, same
    /// kernel RNG state — until [`Driver::wait_ready`] gives the clone its own identity.
    /// On failure nothing is left in `dest_dir`; the source still runs if the memory was
    /// not captured yet (QEMU resumes a VM whose migration failed), else it is stopped.
    async fn snapshot(
        &self,
        _spec: &SandboxSpec,
        _runtime: &Runtime,
        _dest_dir: &Path,
    ) -> Result<SnapshotInfo, VmmError> {
        Err(VmmError::Unsupported {
            driver: self.kind(),
            operation: "snapshot",
        })
    }

    /// Starts a new sandbox from `snapshot`: its disk a copy-on-write overlay of the
    /// snapshot's disk, its memory restored. Returns once the machine runs again; then
    /// [`Driver::wait_ready`] (with `spec.restore_token` set to the snapshot's agent token)
    /// waits for the agent and gives the clone its own identity. `spec.resources` must
    /// match the snapshot's vCPUs and memory.
    async fn launch_from_snapshot(
        &self,
        _spec: &SandboxSpec,
        _snapshot: &SnapshotInfo,
    ) -> Result<Runtime, VmmError> {
        Err(VmmError::Unsupported {
            driver: self.kind(),
            operation: "launch from a snapshot",
        })
    }

    /// True while the sandbox's process (the same one, not a recycled pid) is alive.
    fn is_alive(&self, runtime: &Runtime) -> bool {
        runtime.process_alive()
    }

    /// Removes host resources belonging to no sandbox in `keep` (left by a crash).
    /// Returns a description of each thing removed.
    async fn sweep(&self, keep: &HashSet<SandboxId>) -> Vec<String>;

    fn agent(&self, runtime: &Runtime, token: &str) -> Result<AgentClient, VmmError> {
        Ok(AgentClient::new(runtime.agent_addr()?, token))
    }

    /// The directory holding every sandbox's own files (`<data-dir>/sandboxes`).
    fn sandboxes_dir(&self) -> &Path;

    /// How this driver's sandbox disks are made on this host, and why: the best
    /// copy-on-write mechanism the sandboxes' filesystem offers. Probes the filesystem;
    /// the manager asks once, at start-up.
    fn storage(&self) -> StorageChoice {
        let detected = crate::storage::detect(
            self.sandboxes_dir(),
            &crate::storage::DetectOptions::default(),
        );
        StorageChoice {
            kind: detected.kind().to_string(),
            reason: detected.reason,
        }
    }

    /// What the files of the sandbox `id` cost on their own: blocks it wrote, not those
    /// it shares with its image or prebuild.
    fn disk_usage(&self, id: &SandboxId, runtime: Option<&Runtime>) -> DiskUsage {
        let dir = runtime
            .map(|r| r.dir.clone())
            .unwrap_or_else(|| self.sandboxes_dir().join(id.as_str()));
        crate::storage::tree_usage(&dir)
    }
}

/// How sandbox disks are made (`reflink`, `qcow2`, `lvm-thin` or `copy`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageChoice {
    pub kind: String,
    pub reason: String,
}
