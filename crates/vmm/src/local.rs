//! The `local` driver: `atelier-agent` as a plain host process in a directory.
//!
//! No isolation at all — it exists so that everything above the hypervisor can be
//! developed and tested fast. Layout of `<data-dir>/sandboxes/<id>/`:
//! `root/` (the agent's file root and working directory), `state/` (service logs),
//! `agent.sock`, `agent.token` (0600) and `agent.log`.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atelier_core::SandboxId;
use atelier_proto::AgentAddr;
use nix::sys::signal::Signal;

use crate::driver::{Driver, DriverInfo, DriverKind, Runtime, SandboxSpec, SnapshotInfo, VmmError};
use crate::process;

/// Longest path a Unix socket address can hold.
const SUN_PATH_MAX: usize = 107;

pub struct LocalDriver {
    sandboxes_dir: PathBuf,
    agent_binary: PathBuf,
    notes: Vec<String>,
}

impl LocalDriver {
    pub fn new(
        data_dir: &Path,
        agent_binary: PathBuf,
        notes: Vec<String>,
    ) -> Result<Self, VmmError> {
        let sandboxes_dir = data_dir.join("sandboxes");
        std::fs::create_dir_all(&sandboxes_dir).map_err(VmmError::io(format!(
            "creating {}",
            sandboxes_dir.display()
        )))?;
        Ok(Self {
            sandboxes_dir,
            agent_binary,
            notes,
        })
    }

    fn dir(&self, id: &SandboxId) -> PathBuf {
        self.sandboxes_dir.join(id.as_str())
    }

    fn socket(&self, id: &SandboxId) -> PathBuf {
        self.dir(id).join("agent.sock")
    }

    fn prepare(&self, spec: &SandboxSpec) -> Result<PathBuf, VmmError> {
        let dir = self.dir(&spec.id);
        let socket = self.socket(&spec.id);
        if socket.as_os_str().len() > SUN_PATH_MAX {
            return Err(VmmError::NotAvailable {
                driver: DriverKind::Local,
                reason: format!(
                    "the socket path {} is too long; use a shorter --data-dir",
                    socket.display()
                ),
            });
        }
        for sub in ["root", "state"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(VmmError::io(format!("creating {}", p.display())))?;
        }
        let token_path = dir.join("agent.token");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&token_path)
            .map_err(VmmError::io(format!("writing {}", token_path.display())))?;
        f.write_all(spec.agent_token.as_bytes())
            .map_err(VmmError::io("writing the agent token"))?;
        for folder in &spec.shared_folders {
            link_shared_folder(&dir.join("root"), folder)?;
        }
        Ok(dir)
    }

    async fn kill_everything_of(&self, id: &SandboxId, runtime: Option<&Runtime>) {
        process::stop_sandbox_processes(runtime, &[&self.dir(id)], Duration::from_secs(5)).await;
    }
}

/// Shares a host folder into a sandbox's root: there is no machine to mount it in, so
/// `<root>/<guest path>` becomes a symbolic link to it (replacing a link left there).
fn link_shared_folder(root: &Path, folder: &atelier_core::SharedFolder) -> Result<(), VmmError> {
    let link = root.join(folder.guest_path.trim_start_matches('/'));
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)
            .map_err(VmmError::io(format!("creating {}", parent.display())))?;
    }
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&link)
            .map_err(VmmError::io(format!("replacing {}", link.display())))?,
        Ok(_) => {
            return Err(VmmError::Io {
                context: format!("sharing {}", folder.host_path),
                source: std::io::Error::other(format!(
                    "{} already exists in the sandbox",
                    folder.guest_path
                )),
            })
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&folder.host_path, &link)
        .map_err(VmmError::io(format!("linking {}", link.display())))
}

fn log_tail(path: &Path) -> String {
    crate::guest::console_tail(path, 20)
}

#[async_trait]
impl Driver for LocalDriver {
    fn sandboxes_dir(&self) -> &Path {
        &self.sandboxes_dir
    }

    /// As links in the sandbox's root (the shell starts there): no isolation to cross.
    fn shares_folders(&self) -> Result<(), String> {
        Ok(())
    }

    fn info(&self) -> DriverInfo {
        DriverInfo {
            kind: DriverKind::Local,
            isolated: false,
            can_pause: true,
            notes: self.notes.clone(),
        }
    }

    fn planned_resources(&self, id: &SandboxId) -> Vec<(String, String)> {
        vec![("dir".into(), self.dir(id).display().to_string())]
    }

    async fn launch(&self, spec: &SandboxSpec) -> Result<Runtime, VmmError> {
        let dir = self.prepare(spec)?;
        let socket = self.socket(&spec.id);
        let _ = std::fs::remove_file(&socket);
        let log_path = dir.join("agent.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(VmmError::io(format!("opening {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(VmmError::io("duplicating the log handle"))?;
        let root = dir.join("root");
        let mut cmd = Command::new(&self.agent_binary);
        cmd.arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--token-file")
            .arg(dir.join("agent.token"))
            .arg("--root")
            .arg(&root)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .current_dir(&root)
            .env("HOME", &root)
            .env("ATELIER_SANDBOX_ID", spec.id.as_str())
            .env("ATELIER_SANDBOX_NAME", &spec.name)
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: setsid is async-signal-safe. A session of its own keeps the sandbox
        // alive across manager restarts and lets us stop all it spawned at once.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(VmmError::io(format!(
            "starting {}",
            self.agent_binary.display()
        )))?;
        let pid = child.id();
        let pid_start = process::start_time(pid);
        // Reap it if it exits while we run; after a manager restart, init does.
        std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || child.wait())
            .map_err(VmmError::io("starting the reaper thread"))?;
        Ok(Runtime {
            agent: AgentAddr::Unix(socket).to_string(),
            pid: Some(pid),
            pid_start,
            dir,
        })
    }

    async fn wait_ready(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        within: Duration,
    ) -> Result<(), VmmError> {
        let client = self.agent(runtime, &spec.agent_token)?;
        let started = Instant::now();
        let log = runtime.dir.join("agent.log");
        loop {
            if !self.is_alive(runtime) {
                return Err(VmmError::ExitedEarly {
                    log_tail: log_tail(&log),
                });
            }
            let left = within.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(VmmError::BootTimeout {
                    waited: within,
                    reason: "no answer from the agent".into(),
                    log_tail: log_tail(&log),
                });
            }
            match client
                .wait_healthy(left.min(Duration::from_millis(500)))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() >= within => {
                    return Err(VmmError::BootTimeout {
                        waited: within,
                        reason: e.to_string(),
                        log_tail: log_tail(&log),
                    })
                }
                Err(_) => continue,
            }
        }
    }

    async fn stop(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError> {
        self.kill_everything_of(id, runtime).await;
        let _ = std::fs::remove_file(self.socket(id));
        Ok(())
    }

    async fn destroy(&self, id: &SandboxId, runtime: Option<&Runtime>) -> Result<(), VmmError> {
        self.kill_everything_of(id, runtime).await;
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VmmError::Io {
                context: format!("removing {}", dir.display()),
                source: e,
            }),
        }
    }

    async fn pause(&self, runtime: &Runtime) -> Result<(), VmmError> {
        signal_runtime(runtime, Signal::SIGSTOP)
    }

    async fn resume(&self, runtime: &Runtime) -> Result<(), VmmError> {
        signal_runtime(runtime, Signal::SIGCONT)
    }

    async fn sweep(&self, keep: &HashSet<SandboxId>) -> Vec<String> {
        process::sweep_sandbox_dirs(&self.sandboxes_dir, keep).await
    }

    /// A local sandbox has no memory to capture: its snapshot is a copy of its file
    /// root (reflinked where the filesystem can), and clones boot a fresh agent on a
    /// copy of that.
    async fn snapshot(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        dest_dir: &Path,
    ) -> Result<SnapshotInfo, VmmError> {
        crate::snapshot_dir::capture_into(dest_dir, &["disk"], |dest| async move {
            // Stop first so that nothing writes while the tree is copied.
            self.stop(&spec.id, Some(runtime)).await?;
            let disk = dest.join("disk");
            copy_tree(&runtime.dir.join("root"), &disk).await?;
            let info = SnapshotInfo {
                driver: DriverKind::Local,
                dir: dest,
                memory: None,
                disk,
                kernel: None,
                initramfs: None,
                image: spec.image.clone(),
                memory_mib: spec.resources.memory_mib,
                vcpus: spec.resources.vcpus,
                created_at_ms: crate::now_ms(),
                machine: serde_json::Value::Null,
            };
            crate::snapshot_dir::write_info(&info)?;
            Ok(info)
        })
        .await
    }

    async fn launch_from_snapshot(
        &self,
        spec: &SandboxSpec,
        snapshot: &SnapshotInfo,
    ) -> Result<Runtime, VmmError> {
        if snapshot.driver != DriverKind::Local {
            return Err(VmmError::Snapshot(format!(
                "a {} snapshot cannot start a local sandbox",
                snapshot.driver
            )));
        }
        let root = self.dir(&spec.id).join("root");
        if root.exists() {
            return Err(VmmError::Snapshot(format!(
                "{} exists already",
                root.display()
            )));
        }
        std::fs::create_dir_all(self.dir(&spec.id))
            .map_err(VmmError::io("creating the sandbox directory"))?;
        copy_tree(&snapshot.disk, &root).await?;
        self.launch(spec).await
    }
}

/// Copies a directory tree with `cp -a`, reflinking file data where the filesystem can
/// (XFS, btrfs): O(1) in the data's size there, a plain copy elsewhere.
async fn copy_tree(from: &Path, to: &Path) -> Result<(), VmmError> {
    let out = tokio::process::Command::new("cp")
        .args(["-a", "--reflink=auto", "--no-target-directory"])
        .arg(from)
        .arg(to)
        .output()
        .await
        .map_err(VmmError::io("running cp"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VmmError::Io {
            context: format!("copying {} to {}", from.display(), to.display()),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        })
    }
}

fn signal_runtime(runtime: &Runtime, signal: Signal) -> Result<(), VmmError> {
    match runtime.pid.filter(|_| runtime.process_alive()) {
        Some(pid) => {
            process::signal_session(pid, signal);
            Ok(())
        }
        None => Err(VmmError::Io {
            context: "signalling the sandbox".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "its process is gone"),
        }),
    }
}
