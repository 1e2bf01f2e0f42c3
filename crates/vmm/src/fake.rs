//! A [`Driver`] with no machines behind it, for testing the orchestration that drives
//! drivers (the server's lifecycle, start-up reconciliation) in process and fast.
//!
//! It keeps a table of "machines" in memory, records every call it gets, and can be told
//! to fail an operation, to let a machine die, to hold a launch until released, or to
//! leave a leftover for [`Driver::sweep`] to find. Built only with the `fake` feature.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

/// Where the fake says its sandboxes live: nowhere.
const FAKE_DIR: &str = "/nonexistent/atelier-fake";
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use atelier_core::SandboxId;
use tokio::sync::Semaphore;

use crate::driver::{
    Driver, DriverInfo, DriverKind, Runtime, SandboxSpec, SnapshotInfo, StorageChoice, VmmError,
};

/// An operation of the fake, as [`FakeDriver::fail_next`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Launch,
    WaitReady,
    Stop,
    Destroy,
    Pause,
    Resume,
    Adopt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MachineState {
    Running,
    Paused,
}

#[derive(Default)]
struct State {
    /// Machines that exist, by sandbox; absent once stopped or destroyed.
    machines: HashMap<SandboxId, MachineState>,
    /// Sandboxes whose disk (their "directory") exists: from launch to destroy.
    disks: BTreeSet<SandboxId>,
    /// Leftovers of sandboxes the manager does not know, for `sweep`.
    leftovers: BTreeSet<String>,
    failures: HashMap<FakeOp, String>,
    calls: Vec<String>,
}

/// See the module documentation.
#[derive(Clone)]
pub struct FakeDriver {
    kind: DriverKind,
    state: Arc<Mutex<State>>,
    /// When set, `wait_ready` waits for a permit: [`FakeDriver::release_ready`] gives one.
    ready_gate: Arc<Mutex<Option<Arc<Semaphore>>>>,
}

impl FakeDriver {
    /// A fake that answers to `kind` (the driver name sandbox records carry).
    pub fn new(kind: DriverKind) -> Self {
        Self {
            kind,
            state: Arc::default(),
            ready_gate: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, as `"<operation> <sandbox id>"`, oldest first.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// The next `op` fails with `message`.
    pub fn fail_next(&self, op: FakeOp, message: &str) {
        self.state().failures.insert(op, message.to_owned());
    }

    /// The machine of `id` dies (as when the host or the VMM crashed).
    pub fn crash(&self, id: &SandboxId) {
        self.state().machines.remove(id);
    }

    /// Whether a machine of `id` exists (running or paused).
    pub fn has_machine(&self, id: &SandboxId) -> bool {
        self.state().machines.contains_key(id)
    }

    /// Whether the machine of `id` is paused.
    pub fn is_paused(&self, id: &SandboxId) -> bool {
        self.state().machines.get(id) == Some(&MachineState::Paused)
    }

    /// Whether the disk of `id` exists.
    pub fn has_disk(&self, id: &SandboxId) -> bool {
        self.state().disks.contains(id)
    }

    /// Leaves what a crashed manager might: resources named `name` of no known sandbox.
    pub fn plant_leftover(&self, name: &str) {
        self.state().leftovers.insert(name.to_owned());
    }

    /// From now on, `wait_ready` waits until [`Self::release_ready`] lets one through.
    pub fn hold_ready(&self) {
        *self.ready_gate.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets one held `wait_ready` finish.
    pub fn release_ready(&self) {
        if let Some(gate) = &*self.ready_gate.lock().unwrap_or_else(|p| p.into_inner()) {
            gate.add_permits(1);
        }
    }

    /// The runtime record a machine of `id` gets: no process, a directory named after it.
    pub fn runtime_of(id: &SandboxId) -> Runtime {
        Runtime {
            agent: "tcp:127.0.0.1:9".into(),
            pid: None,
            pid_start: None,
            dir: Path::new(FAKE_DIR).join(id.as_str()),
        }
    }

    /// Records the call; fails it if told to.
    fn call(&self, op: FakeOp, id: &SandboxId) -> Result<(), VmmError> {
        let mut s = self.state();
        s.calls.push(format!("{} {id}", op.name()));
        match s.failures.remove(&op) {
            Some(message) => Err(VmmError::Io {
                context: format!("fake {}", op.name()),
                source: std::io::Error::other(message),
            }),
            None => Ok(()),
        }
    }

    fn id_of(runtime: &Runtime) -> SandboxId {
        let name = runtime
            .dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        SandboxId::from_trusted(name.into_owned())
    }
}

impl FakeOp {
    fn name(self) -> &'static str {
        match self {
            Self::Launch => "launch",
            Self::WaitReady => "wait_ready",
            Self::Stop => "stop",
            Self::Destroy => "destroy",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Adopt => "adopt",
        }
    }
}

#[async_trait]
impl Driver for FakeDriver {
    fn sandboxes_dir(&self) -> &Path {
        Path::new(FAKE_DIR)
    }

    fn storage(&self) -> StorageChoice {
        StorageChoice {
            kind: "copy".into(),
            reason: "fake driver: no disks".into(),
        }
    }

    fn info(&self) -> DriverInfo {
        DriverInfo {
            kind: self.kind,
            isolated: false,
            can_pause: true,
            notes: vec!["fake driver: no machines behind it".into()],
        }
    }

    fn planned_resources(&self, id: &SandboxId) -> Vec<(String, String)> {
        vec![("fake-disk".into(), id.to_string())]
    }

    /// As the real driver of its kind: all but Firecracker share host folders.
    fn shares_folders(&self) -> Result<(), String> {
        match self.kind {
            DriverKind::Firecracker => {
                Err("the firecracker driver cannot share host folders".into())
            }
            DriverKind::Local | DriverKind::Qemu => Ok(()),
        }
    }

    async fn launch(&self, spec: &SandboxSpec) -> Result<Runtime, VmmError> {
        self.call(FakeOp::Launch, &spec.id)?;
        let mut s = self.state();
        s.disks.insert(spec.id.clone());
        s.machines.insert(spec.id.clone(), MachineState::Running);
        Ok(Self::runtime_of(&spec.id))
    }

    async fn launch_from_snapshot(
        &self,
        spec: &SandboxSpec,
        _snapshot: &SnapshotInfo,
    ) -> Result<Runtime, VmmError> {
        self.launch(spec).await
    }

    async fn wait_ready(
        &self,
        spec: &SandboxSpec,
        _runtime: &Runtime,
        within: Duration,
    ) -> Result<(), VmmError> {
        let gate = self
            .ready_gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(gate) = gate {
            match tokio::time::timeout(within, gate.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => {
                    return Err(VmmError::BootTimeout {
                        waited: within,
                        reason: "held by the test".into(),
                        log_tail: String::new(),
                    })
                }
            }
        }
        self.call(FakeOp::WaitReady, &spec.id)
    }

    async fn stop(&self, id: &SandboxId, _runtime: Option<&Runtime>) -> Result<(), VmmError> {
        self.call(FakeOp::Stop, id)?;
        self.state().machines.remove(id);
        Ok(())
    }

    async fn adopt(&self, spec: &SandboxSpec, _runtime: &Runtime) -> Result<(), VmmError> {
        self.call(FakeOp::Adopt, &spec.id)
    }

    async fn destroy(&self, id: &SandboxId, _runtime: Option<&Runtime>) -> Result<(), VmmError> {
        self.call(FakeOp::Destroy, id)?;
        let mut s = self.state();
        s.machines.remove(id);
        s.disks.remove(id);
        Ok(())
    }

    async fn pause(&self, runtime: &Runtime) -> Result<(), VmmError> {
        let id = Self::id_of(runtime);
        self.call(FakeOp::Pause, &id)?;
        self.state().machines.insert(id, MachineState::Paused);
        Ok(())
    }

    async fn resume(&self, runtime: &Runtime) -> Result<(), VmmError> {
        let id = Self::id_of(runtime);
        self.call(FakeOp::Resume, &id)?;
        self.state().machines.insert(id, MachineState::Running);
        Ok(())
    }

    fn is_alive(&self, runtime: &Runtime) -> bool {
        self.has_machine(&Self::id_of(runtime))
    }

    async fn sweep(&self, keep: &HashSet<SandboxId>) -> Vec<String> {
        let mut s = self.state();
        s.calls.push("sweep".into());
        let mut swept: Vec<String> = std::mem::take(&mut s.leftovers).into_iter().collect();
        let unknown: Vec<SandboxId> = s
            .disks
            .iter()
            .filter(|id| !keep.contains(*id))
            .cloned()
            .collect();
        for id in unknown {
            s.disks.remove(&id);
            s.machines.remove(&id);
            swept.push(format!("disk of {id}"));
        }
        swept
    }
}
