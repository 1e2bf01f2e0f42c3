//! Memory snapshots of QEMU sandboxes, and clones restored from them.
//!
//! **Snapshot** ([`QemuDriver::take_snapshot`]), into a directory of its own:
//!
//! 1. the guest flushes its caches (the agent runs `sync`);
//! 2. QMP `migrate` to `exec:cat > memory.bin` while the VM **runs** (QEMU pauses it
//!    itself for the final pass; stopping it with QMP `stop` first gave, on QEMU 7.2 with
//!    TCG, restores whose network never answered), polling `query-migrate` until
//!    `completed`;
//! 3. QMP `quit`; the source is left **stopped** with its own disk, like after `stop`;
//! 4. its disk overlay is flattened with `qemu-img convert` into `disk.qcow2`: a
//!    self-contained image (no backing file), so the snapshot outlives the image build it
//!    came from; the kernel and initramfs the machine booted are copied beside it, for
//!    the same reason; `overlay.qcow2`, an empty overlay of `disk.qcow2`, is made once;
//! 5. `snapshot.json` (the [`SnapshotInfo`]) is written last: a directory without it is
//!    an unfinished snapshot.
//!
//! **Restore** ([`QemuDriver::restore`]): the clone's `disk.qcow2` is a copy of
//! `overlay.qcow2` (a copy-on-write overlay of the snapshot's disk, made without running
//! `qemu-img`), with a fresh config disk; QEMU runs the recorded machine (same vCPUs,
//! memory, CPU model, kernel, initramfs, devices in the same order) with
//! `-incoming "exec:cat memory.bin"` and a new forwarded port (or vsock CID); once the
//! incoming migration is done the VM runs (QEMU starts a VM captured running by itself;
//! one left paused gets QMP `cont`).
//!
//! **Identity**: every clone wakes with the snapshot's host name, token, clock, kernel
//! RNG and machine id — and, by construction, the same inside network address
//! (10.0.2.15 behind its own user-mode NAT, reached only through its own forwarded
//! port), so nothing the guest sees of the outside differs between clones.
//! [`QemuDriver::refresh_identity`] (from `wait_ready`) gives each clone its own
//! through the agent's `PUT /v1/identity`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atelier_proto::ExecRequest;
use serde::{Deserialize, Serialize};

use super::qmp::Qmp;
use super::{
    read_machine, tail, transport_of_kind, write_config_disk, write_machine, Machine, QemuDriver,
};
use crate::driver::{Driver, DriverKind, Runtime, SandboxSpec, SnapshotInfo, VmmError};
use crate::guest;
use crate::now_ms;
use crate::process;

/// Files of a snapshot directory.
pub const MEMORY_FILE: &str = "memory.bin";
pub const DISK_FILE: &str = "disk.qcow2";
pub const OVERLAY_FILE: &str = "overlay.qcow2";
pub const KERNEL_FILE: &str = "bzImage";
pub const INITRAMFS_FILE: &str = "initramfs.img";
pub use crate::snapshot_dir::INFO_FILE;

/// How long a migration to the memory file may take.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a restore may take to load the memory and run.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(120);

/// The QEMU-specific part of a [`SnapshotInfo`] (its `machine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuSnapshot {
    /// The machine to rebuild (kernel and initramfs: the copies in the snapshot).
    pub machine: Machine,
    /// An empty qcow2 overlay of the snapshot's disk, copied for every clone.
    pub overlay: PathBuf,
    /// `qemu-system-x86_64 --version` of the QEMU that wrote the memory file (a migration
    /// stream is only guaranteed to load in the same version).
    pub qemu_version: String,
}

/// `s` quoted for `/bin/sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn snap_err(what: impl Into<String>) -> VmmError {
    VmmError::Snapshot(what.into())
}

/// Runs a tool to completion; its stderr becomes the error.
fn run_tool(cmd: &mut Command, what: &str) -> Result<(), VmmError> {
    let out = cmd
        .output()
        .map_err(VmmError::io(format!("running {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(snap_err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Hard-links `from` to `to`, or copies it across filesystems.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), VmmError> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(VmmError::io(format!(
            "copying {} to {}",
            from.display(),
            to.display()
        )))
}

/// The QEMU version string (for the record).
fn qemu_version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

impl QemuDriver {
    /// [`Driver::snapshot`] for QEMU; see the module documentation.
    pub(super) async fn take_snapshot(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        dest: &Path,
    ) -> Result<SnapshotInfo, VmmError> {
        if !self.is_alive(runtime) {
            return Err(snap_err("the sandbox is not running"));
        }
        let machine = read_machine(&runtime.dir)?;
        if !machine.shares.is_empty() {
            return Err(snap_err(
                "the sandbox shares host folders, which a snapshot cannot carry",
            ));
        }
        let files = [
            MEMORY_FILE,
            DISK_FILE,
            OVERLAY_FILE,
            KERNEL_FILE,
            INITRAMFS_FILE,
        ];
        crate::snapshot_dir::capture_into(dest, &files, |dest| async move {
            self.capture(spec, runtime, &dest, machine).await
        })
        .await
    }

    async fn capture(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        dest: &Path,
        machine: Machine,
    ) -> Result<SnapshotInfo, VmmError> {
        // 1. Flush the guest's caches to its disk. The client (and its pooled
        // connection) is gone before the memory is captured.
        {
            let agent = self.agent(runtime, &spec.agent_token)?;
            let mut sync = ExecRequest::argv(["sync"]);
            sync.timeout_ms = Some(15_000);
            let r = tokio::time::timeout(Duration::from_secs(20), agent.exec(&sync))
                .await
                .map_err(|_| snap_err("the guest did not sync in time"))?
                .map_err(|e| snap_err(format!("the guest did not sync: {e}")))?;
            if r.status.exit_code != Some(0) {
                return Err(snap_err(format!("sync in the guest failed: {}", r.stderr)));
            }
        }

        // 2. Live migration of the running VM into the memory file.
        let memory = dest.join(MEMORY_FILE);
        let memory_str = memory
            .to_str()
            .ok_or_else(|| snap_err("the snapshot path is not UTF-8"))?;
        let qmp_sock = runtime.dir.join("qmp.sock");
        let mut qmp = Qmp::connect(&qmp_sock).await?;
        // Unthrottled: the destination is a local file (QEMU's default is 128 MiB/s).
        qmp.execute(
            "migrate-set-parameters",
            Some(serde_json::json!({ "max-bandwidth": 64u64 << 30 })),
        )
        .await?;
        qmp.execute(
            "migrate",
            Some(serde_json::json!({ "uri": format!("exec:cat > {}", sh_quote(memory_str)) })),
        )
        .await?;
        let started = Instant::now();
        loop {
            let info = qmp.execute("query-migrate", None).await?;
            match info.get("status").and_then(|s| s.as_str()).unwrap_or("") {
                "completed" => break,
                "failed" | "cancelled" => {
                    return Err(snap_err(format!(
                        "migration to {} failed: {}",
                        memory.display(),
                        info.get("error-desc")
                            .and_then(|d| d.as_str())
                            .unwrap_or("no reason given")
                    )))
                }
                _ if started.elapsed() > MIGRATE_TIMEOUT => {
                    let _ = qmp.execute("migrate_cancel", None).await;
                    return Err(snap_err(format!(
                        "the migration did not complete within {MIGRATE_TIMEOUT:?}"
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }

        // 3. The VM is paused (postmigrate); end it. QEMU waits for `cat` when it closes
        // the migration channel, and `cat` is in its session: wait for the whole session
        // to leave rather than kill it (a killed `cat` would truncate the memory file).
        let migrated = started.elapsed();
        qmp.quit().await?;
        drop(qmp);
        if let Some(pid) = runtime.pid {
            let live = |p: &u32| !matches!(process::state_of(*p), Some('Z') | Some('X') | None);
            let deadline = Instant::now() + Duration::from_secs(30);
            while (self.is_alive(runtime) || process::session_members(pid).iter().any(live))
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tracing::debug!(?migrated, ended = ?started.elapsed(), "snapshot: memory captured");
        self.stop(&spec.id, Some(runtime)).await?;
        let written = std::fs::metadata(&memory).map(|m| m.len()).unwrap_or(0);
        if written == 0 {
            return Err(snap_err(format!("{} is empty", memory.display())));
        }

        // 4. The disk, flattened; the boot files; the clones' overlay.
        let disk = dest.join(DISK_FILE);
        let src_disk = runtime.dir.join("disk.qcow2");
        let (d, s) = (disk.clone(), src_disk.clone());
        tokio::task::spawn_blocking(move || {
            run_tool(
                Command::new("qemu-img")
                    .args(["convert", "-O", "qcow2"])
                    .arg(&s)
                    .arg(&d),
                "qemu-img convert",
            )
        })
        .await
        .map_err(|e| VmmError::Corrupt(e.to_string()))??;
        tracing::debug!(elapsed = ?started.elapsed(), "snapshot: disk flattened");
        let kernel = dest.join(KERNEL_FILE);
        let initramfs = dest.join(INITRAMFS_FILE);
        link_or_copy(&machine.kernel, &kernel)?;
        link_or_copy(&machine.initramfs, &initramfs)?;
        let overlay = dest.join(OVERLAY_FILE);
        run_tool(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(&disk)
                .arg(&overlay),
            "qemu-img create",
        )?;

        // 5. The record, last.
        let snap = QemuSnapshot {
            machine: Machine {
                kernel: kernel.clone(),
                initramfs: initramfs.clone(),
                ..machine.clone()
            },
            overlay,
            qemu_version: qemu_version(&self.binary),
        };
        let info = SnapshotInfo {
            driver: DriverKind::Qemu,
            dir: dest.to_path_buf(),
            memory: Some(memory),
            disk,
            kernel: Some(kernel),
            initramfs: Some(initramfs),
            image: spec.image.clone(),
            memory_mib: machine.memory_mib,
            vcpus: machine.vcpus,
            created_at_ms: now_ms(),
            machine: serde_json::to_value(&snap).map_err(|e| VmmError::Corrupt(e.to_string()))?,
        };
        crate::snapshot_dir::write_info(&info)?;
        Ok(info)
    }

    /// The QEMU part of `snapshot`, checked against this driver and `spec`.
    fn check_snapshot(
        &self,
        spec: &SandboxSpec,
        snapshot: &SnapshotInfo,
    ) -> Result<QemuSnapshot, VmmError> {
        if snapshot.driver != DriverKind::Qemu {
            return Err(snap_err(format!(
                "a {} snapshot cannot be restored by the qemu driver",
                snapshot.driver
            )));
        }
        let snap: QemuSnapshot = serde_json::from_value(snapshot.machine.clone())
            .map_err(|e| snap_err(format!("not a QEMU snapshot record: {e}")))?;
        if snap.machine.accel != self.accel.accel {
            return Err(snap_err(format!(
                "the snapshot was taken under {:?} and this host runs {:?}",
                snap.machine.accel, self.accel.accel
            )));
        }
        if spec.resources.vcpus != snap.machine.vcpus
            || spec.resources.memory_mib != snap.machine.memory_mib
        {
            return Err(snap_err(format!(
                "the snapshot's machine has {} vCPUs and {} MiB; a clone cannot have {} and {}",
                snap.machine.vcpus,
                snap.machine.memory_mib,
                spec.resources.vcpus,
                spec.resources.memory_mib
            )));
        }
        let wanted: Vec<u16> = spec.network.host_services.iter().map(|h| h.port).collect();
        if !snap.machine.netns && snap.machine.host_services != wanted {
            return Err(snap_err(format!(
                "the snapshot's user-mode network forwards host ports {:?}, and this sandbox \
                 names {wanted:?}",
                snap.machine.host_services
            )));
        }
        let memory = snapshot
            .memory
            .as_ref()
            .ok_or_else(|| snap_err("the snapshot holds no memory to restore"))?;
        for f in [
            memory,
            &snapshot.disk,
            &snap.overlay,
            &snap.machine.kernel,
            &snap.machine.initramfs,
        ] {
            if !f.is_file() {
                return Err(snap_err(format!("{} is missing", f.display())));
            }
        }
        if spec.restore_token.is_none() {
            return Err(snap_err(
                "restore_token (the snapshot's agent token) is required to restore",
            ));
        }
        Ok(snap)
    }

    /// [`Driver::launch_from_snapshot`] for QEMU; see the module documentation.
    pub(super) async fn restore(
        &self,
        spec: &SandboxSpec,
        snapshot: &SnapshotInfo,
    ) -> Result<Runtime, VmmError> {
        let started = Instant::now();
        let snap = self.check_snapshot(spec, snapshot)?;
        let dir = self.dir(&spec.id);
        std::fs::create_dir_all(&dir)
            .map_err(VmmError::io(format!("creating {}", dir.display())))?;
        // The clone's disk: a copy of the ready-made overlay (a few hundred KiB).
        std::fs::copy(&snap.overlay, dir.join("disk.qcow2"))
            .map_err(VmmError::io("creating the clone's disk"))?;
        let netns = self.netns_of(&spec.id, &snap.machine)?;
        // The namespace's links now (QEMU opens the tap); its rules while QEMU loads the
        // memory, the VM held paused (`-S`) until they are in place.
        let net = match (netns.as_ref(), &self.net) {
            (Some(_), Some(m)) => Some(m.setup_links(&spec.id, &spec.network)?),
            _ => None,
        };
        let prepared = (|| {
            let transport = transport_of_kind(&spec.id, snap.machine.vsock, net.as_ref())?;
            // The restored agent read its config at boot and never again; the disk is
            // there because the machine has it (and for a later cold start).
            write_config_disk(
                &dir,
                spec,
                transport,
                self.guest_network(&snap.machine),
                &snap.machine.shares,
            )?;
            write_machine(&dir, &snap.machine)?;
            let memory = snapshot
                .memory
                .as_deref()
                .and_then(|m| m.to_str())
                .ok_or_else(|| snap_err("the snapshot path is not UTF-8"))?;
            let mut cmd = self.command(&snap.machine, &dir, transport);
            cmd.arg("-incoming")
                .arg(format!("exec:cat {}", sh_quote(memory)));
            if net.is_some() {
                cmd.arg("-S");
            }
            Ok::<_, VmmError>((cmd, transport))
        })();
        let (cmd, transport) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = self.tear_down_network(&spec.id);
                return Err(e);
            }
        };
        let firewall = match (&net, &self.net) {
            (Some(n), Some(m)) => {
                let (m, id, n) = (m.clone(), spec.id.clone(), n.clone());
                Some(tokio::task::spawn_blocking(move || {
                    m.setup_firewall(&id, &n)
                }))
            }
            _ => None,
        };
        let prepared = started.elapsed();
        let runtime = match self.spawn(cmd, &dir, transport, netns.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                // The rules are torn down only once they stop being added.
                if let Some(firewall) = firewall {
                    let _ = firewall.await;
                }
                let _ = self.tear_down_network(&spec.id);
                return Err(e);
            }
        };
        if let Some(firewall) = firewall {
            let ready = firewall
                .await
                .unwrap_or_else(|_| Err(snap_err("setting up the firewall panicked")));
            if let Err(e) = ready {
                let _ = self.stop(&spec.id, Some(&runtime)).await;
                return Err(e);
            }
        }
        // Before the guest runs, so that its first name query finds its resolver.
        if let Err(e) = self.open_forwards(spec) {
            let _ = self.stop(&spec.id, Some(&runtime)).await;
            return Err(e);
        }
        if let Err(e) = self.run_restored(&runtime).await {
            let _ = self.stop(&spec.id, Some(&runtime)).await;
            return Err(e);
        }
        tracing::debug!(?prepared, running = ?started.elapsed(), "restore: files ready, VM running");
        Ok(runtime)
    }

    /// Waits for the incoming migration to finish, then makes sure the VM runs.
    async fn run_restored(&self, runtime: &Runtime) -> Result<(), VmmError> {
        let started = Instant::now();
        let socket = runtime.dir.join("qmp.sock");
        let exited = || VmmError::ExitedEarly {
            log_tail: tail(&runtime.dir.join("qemu.log")),
        };
        let mut qmp = loop {
            if !self.is_alive(runtime) {
                return Err(exited());
            }
            if started.elapsed() > RESTORE_TIMEOUT {
                return Err(snap_err("QEMU's QMP socket never appeared"));
            }
            if socket.exists() {
                if let Ok(q) = Qmp::connect(&socket).await {
                    break q;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        loop {
            let status = match qmp.execute("query-status", None).await {
                Ok(s) => s,
                Err(_) if !self.is_alive(runtime) => return Err(exited()),
                Err(e) => return Err(e),
            };
            match status.get("status").and_then(|s| s.as_str()).unwrap_or("") {
                "running" => return Ok(()),
                "paused" | "postmigrate" | "prelaunch" => {
                    qmp.execute("cont", None).await?;
                    return Ok(());
                }
                "inmigrate" | "restore-vm" | "finish-migrate" => {}
                other => {
                    return Err(snap_err(format!(
                        "the restored VM is {other:?}: {}",
                        tail(&runtime.dir.join("qemu.log"))
                    )))
                }
            }
            if started.elapsed() > RESTORE_TIMEOUT {
                return Err(snap_err(format!(
                    "the memory was not restored within {RESTORE_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `wait_ready` of a restored sandbox: the snapshot's agent answers to `old`; give it
    /// the clone's identity, then check that it answers to the new token.
    pub(super) async fn refresh_identity(
        &self,
        spec: &SandboxSpec,
        old: &str,
        runtime: &Runtime,
        within: Duration,
        started: Instant,
    ) -> Result<(), VmmError> {
        // One client throughout: the connection that found the agent healthy carries the
        // identity, then (re-keyed) the first call with the new token.
        let old_client = self.agent(runtime, old)?;
        if !self
            .wait_health(runtime, &old_client, within, started)
            .await?
        {
            // The old token is refused: an earlier attempt may have applied the identity.
            return match self.agent(runtime, &spec.agent_token)?.health().await {
                Ok(_) => Ok(()),
                Err(e) => Err(snap_err(format!(
                    "the restored agent refuses the snapshot's token and the new one ({e})"
                ))),
            };
        }
        let healthy = started.elapsed();
        let r = guest::apply_identity(&old_client, spec).await;
        tracing::debug!(
            ?healthy,
            answered = ?started.elapsed(),
            "restore: agent healthy (old token), identity applied, new token answered"
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote("/a b/c"), "'/a b/c'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
