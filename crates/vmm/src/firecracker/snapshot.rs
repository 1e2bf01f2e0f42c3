//! Memory snapshots of Firecracker sandboxes, and clones restored from them.
//!
//! **Snapshot** ([`FirecrackerDriver::take_snapshot`]), into a directory of its own:
//!
//! 1. the guest flushes its caches (the agent runs `sync`);
//! 2. `PATCH /vm {"state":"Paused"}`, then `PUT /snapshot/create` (`Full`) writes the
//!    device state and the guest memory into the sandbox's `snapshot/` directory (in the
//!    chroot: Firecracker can write nowhere else), from where they move to
//!    `vmstate.bin` and `memory.bin` (read-only from then on: every clone maps the memory
//!    file privately, and a change would corrupt them all). Should the creation fail,
//!    the VM is resumed and the source carries on;
//! 3. the source is stopped, as after `stop`, keeping its own disk;
//! 4. its disk, now final, is copied to `rootfs.ext4` — a reflink where the filesystem
//!    can, else a sparse copy (the [`crate::storage`] backends; Firecracker opens raw
//!    files only) — and the kernel and initramfs it booted beside it;
//! 5. `snapshot.json` (the [`SnapshotInfo`]) is written last: a directory without it is
//!    an unfinished snapshot.
//!
//! **Paths are part of the state.** The state file records where the VM's disks are
//! (`path_on_host`), its tap (`host_dev_name`) and its vsock socket (`uds_path`).
//! Firecracker can override the last two on load (`network_overrides` ≥ 1.12,
//! `vsock_override` ≥ 1.16) but not a drive's path. Under the jailer every sandbox sees
//! the same paths (`/rootfs.ext4` in its own chroot), so each clone opens its own disk
//! by construction. Without the jailer a sandbox's disk path names the sandbox: a clone
//! restored from memory would write the *source's* disk. So without the jailer a
//! snapshot is disk-only (`memory: None`) and its clones boot their copy of the disk; a
//! memory snapshot whose recorded paths differ from the clone's is refused
//! ([`load_params`]).
//!
//! **Restore** ([`FirecrackerDriver::restore`]): the clone's disk is a reflink (or copy)
//! of the snapshot's; a fresh config disk; the state and memory files are hard-linked
//! into the clone's chroot; the clone gets its own network namespace (same inside
//! addresses, so nothing to re-address); a fresh Firecracker gets `PUT /logger` and
//! `PUT /snapshot/load` with the memory file as `File` backend, `resume_vm: true`, and the
//! clone's tap and vsock socket as overrides (where the Firecracker version knows them).
//!
//! **Identity**: every clone wakes with the snapshot's host name, token, clock and
//! machine id; [`FirecrackerDriver::refresh_identity`] (from `wait_ready`) gives it its
//! own through the agent's `PUT /v1/identity`, as for QEMU.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use atelier_proto::ExecRequest;
use serde::{Deserialize, Serialize};

use super::api::{
    MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotCreateParams, SnapshotLoadParams,
    SnapshotType, VsockOverride,
};
use super::disk;
use super::driver::{blocking, FirecrackerDriver, LaunchRecord};
use super::layout::{chown, create_dir, prepare, remove_file_if_present, SandboxPaths};
use super::plan::{configure, logging_calls, BootPlan};
use crate::driver::{Driver, DriverKind, Runtime, SandboxSpec, SnapshotInfo, VmmError};
use crate::guest;
use crate::image::BootArtifacts;
use crate::now_ms;
use crate::storage::{CopyBackend, ReflinkBackend, StorageBackend, StorageError, StorageKind};

/// Files of a snapshot directory.
pub const VMSTATE_FILE: &str = "vmstate.bin";
pub const MEMORY_FILE: &str = "memory.bin";
pub const DISK_FILE: &str = "rootfs.ext4";
pub const KERNEL_FILE: &str = "vmlinux";
pub const INITRAMFS_FILE: &str = "initramfs";
pub use crate::snapshot_dir::INFO_FILE;

/// How long the guest may take to flush its caches.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// The Firecracker part of a [`SnapshotInfo`] (its `machine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerSnapshot {
    /// The device and vCPU state; `None` for a disk-only snapshot (clones boot).
    pub vmstate: Option<PathBuf>,
    /// How the captured VM was configured, paths as Firecracker saw them: the state file
    /// records them.
    pub plan: BootPlan,
    /// Whether it ran under the jailer (its paths are then relative to its chroot).
    pub jailed: bool,
    /// `GET /version` of the Firecracker that wrote the state (restoring needs a
    /// compatible snapshot format).
    pub firecracker_version: Option<String>,
    /// How the disk was copied into the snapshot.
    pub disk_copy: StorageKind,
}

fn snap_err(what: impl Into<String>) -> VmmError {
    VmmError::Snapshot(what.into())
}

/// `(major, minor)` of a Firecracker version: `1.16.1`, `v1.16.1`, `Firecracker v1.16.1`,
/// `1.17.0-dev`.
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
}

/// The `PUT /snapshot/load` body that restores a VM recorded as `recorded` as the clone
/// configured as `clone`, on a Firecracker of `version` (`None`: unknown, assumed
/// recent).
///
/// Refuses what would make the clone use another sandbox's files: a drive path that
/// differs (Firecracker cannot override it), a tap or vsock socket that differs where
/// the version cannot override it, or a network interface the clone has no tap for.
pub fn load_params(
    recorded: &BootPlan,
    clone: &BootPlan,
    snapshot_path: String,
    mem_path: String,
    version: Option<(u32, u32)>,
) -> Result<SnapshotLoadParams, VmmError> {
    let at_least = |want: (u32, u32)| version.is_none_or(|v| v >= want);
    for (what, was, is) in [
        ("root disk", &recorded.rootfs, &clone.rootfs),
        ("config disk", &recorded.config_disk, &clone.config_disk),
    ] {
        if was != is {
            return Err(snap_err(format!(
                "the snapshot's VM opens its {what} at {was} and this clone's is {is}: \
                 Firecracker cannot override a drive's path, so a memory snapshot restores \
                 only where every sandbox sees the same paths (run Firecracker under the \
                 jailer)"
            )));
        }
    }
    let vsock_override = if at_least((1, 16)) {
        Some(VsockOverride {
            uds_path: clone.vsock_uds.clone(),
        })
    } else if recorded.vsock_uds != clone.vsock_uds {
        return Err(snap_err(format!(
            "the snapshot's vsock socket is {} and this clone's is {}: overriding it needs \
             Firecracker 1.16 or later",
            recorded.vsock_uds, clone.vsock_uds
        )));
    } else {
        None
    };
    let network_overrides = match (&recorded.network, &clone.network) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(snap_err(
                "the snapshot's VM has a network interface and this clone has no network \
                 namespace to give it a tap (per-sandbox networks are off on this host)",
            ))
        }
        (Some(was), Some(is)) if at_least((1, 12)) => Some(vec![NetworkOverride {
            iface_id: was.iface_id.clone(),
            host_dev_name: is.host_dev_name.clone(),
        }]),
        (Some(was), Some(is)) if was.host_dev_name == is.host_dev_name => None,
        (Some(was), Some(is)) => {
            return Err(snap_err(format!(
                "the snapshot's tap is {} and this clone's is {}: overriding it needs \
                 Firecracker 1.12 or later",
                was.host_dev_name, is.host_dev_name
            )))
        }
    };
    Ok(SnapshotLoadParams {
        snapshot_path,
        mem_backend: Some(MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: mem_path,
        }),
        mem_file_path: None,
        track_dirty_pages: clone.track_dirty_pages.then_some(true),
        enable_diff_snapshots: None,
        resume_vm: Some(true),
        network_overrides,
        vsock_override,
        clock_realtime: None,
        huge_pages: None,
    })
}

/// Copies the raw disk `src` to `dst` (which must not exist) with the best storage
/// backend for `dst`'s directory: a reflink where the filesystem can (XFS, btrfs), else
/// a sparse copy. Returns which one it was.
pub fn clone_raw_disk(src: &Path, dst: &Path) -> Result<StorageKind, VmmError> {
    let dir = dst.parent().unwrap_or(Path::new("."));
    let storage_err = |e: StorageError| VmmError::Io {
        context: format!("copying the disk {} to {}", src.display(), dst.display()),
        source: io::Error::other(e.to_string()),
    };
    match ReflinkBackend::from_probed(dir).clone_disk(src, dst, None) {
        Ok(h) => Ok(h.kind),
        Err(StorageError::Unsupported { .. } | StorageError::CrossDevice { .. }) => {
            CopyBackend::new(dir)
                .clone_disk(src, dst, None)
                .map(|h| h.kind)
                .map_err(storage_err)
        }
        Err(e) => Err(storage_err(e)),
    }
}

/// Moves `src` to `dst`: a rename, or a copy across filesystems.
fn move_file(src: &Path, dst: &Path) -> Result<(), VmmError> {
    let _ = std::fs::remove_file(dst);
    if std::fs::rename(src, dst).is_ok() {
        return Ok(());
    }
    disk::clone_or_copy(src, dst)
        .and_then(|()| std::fs::remove_file(src))
        .map_err(VmmError::io(format!(
            "moving {} to {}",
            src.display(),
            dst.display()
        )))
}

/// Hard-links `src` to `dst` (same file, no copy), or copies it across filesystems.
fn link_or_copy(src: &Path, dst: &Path) -> Result<(), VmmError> {
    let _ = std::fs::remove_file(dst);
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    tracing::warn!(
        from = %src.display(),
        to = %dst.display(),
        "copying a snapshot file (it is on another filesystem): keep the data directory \
         and the jailer's chroot base on one filesystem to make this a link"
    );
    disk::clone_or_copy(src, dst).map_err(VmmError::io(format!(
        "copying {} to {}",
        src.display(),
        dst.display()
    )))
}

/// Makes a snapshot file read-only: readable by its owner and by `group` (the jailer's,
/// whose Firecrackers map it), writable by nobody.
fn seal(path: &Path, group: Option<u32>) -> Result<(), VmmError> {
    if let Some(gid) = group {
        chown(path, Some((nix::unistd::geteuid().as_raw(), gid)))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o440))
        .map_err(VmmError::io(format!("protecting {}", path.display())))
}

impl FirecrackerDriver {
    /// [`Driver::snapshot`] for Firecracker; see the module documentation.
    pub(super) async fn take_snapshot(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        dest: &Path,
    ) -> Result<SnapshotInfo, VmmError> {
        if !self.is_alive(runtime) {
            return Err(snap_err("the sandbox is not running"));
        }
        let paths = self.paths(&spec.id);
        let record = LaunchRecord::read(&paths.launch_record)?;
        let files = [
            VMSTATE_FILE,
            MEMORY_FILE,
            DISK_FILE,
            KERNEL_FILE,
            INITRAMFS_FILE,
        ];
        crate::snapshot_dir::capture_into(dest, &files, |dest| async move {
            self.capture(spec, runtime, &paths, record, &dest).await
        })
        .await
    }

    async fn capture(
        &self,
        spec: &SandboxSpec,
        runtime: &Runtime,
        paths: &SandboxPaths,
        record: LaunchRecord,
        dest: &Path,
    ) -> Result<SnapshotInfo, VmmError> {
        let started = Instant::now();
        // 1. The guest's caches to its disk.
        self.flush_guest(spec, runtime).await?;

        // 2. Memory and device state, where a clone can be given the same paths.
        let jailed = self.config.jailer.is_some();
        let (mut vmstate, mut memory, mut version) = (None, None, None);
        if jailed {
            let client = self.client_for(runtime)?;
            version = client.version().await.ok().map(|v| v.firecracker_version);
            let owner = self.config.jailer.as_ref().map(|j| (j.uid, j.gid));
            let snap_dir = paths.snapshot_dir.clone();
            create_dir(&snap_dir, 0o700)?;
            chown(&snap_dir, owner)?;
            let (state_src, mem_src) = (snap_dir.join(VMSTATE_FILE), snap_dir.join(MEMORY_FILE));
            let params = SnapshotCreateParams {
                snapshot_path: paths.visible(&state_src)?,
                mem_file_path: paths.visible(&mem_src)?,
                snapshot_type: Some(SnapshotType::Full),
            };
            client.pause().await?;
            if let Err(e) = client.create_snapshot(&params).await {
                // Nothing was captured: the source carries on.
                if let Err(r) = client.resume().await {
                    tracing::warn!(sandbox = %spec.id, error = %r, "could not resume after a failed snapshot");
                }
                let _ = std::fs::remove_file(&state_src);
                let _ = std::fs::remove_file(&mem_src);
                return Err(e.into());
            }
            let (state_dst, mem_dst) = (dest.join(VMSTATE_FILE), dest.join(MEMORY_FILE));
            let group = self.config.jailer.as_ref().map(|j| j.gid);
            let (s, m, sd, md) = (state_src, mem_src, state_dst.clone(), mem_dst.clone());
            let moved = blocking(move || {
                for (from, to) in [(&s, &sd), (&m, &md)] {
                    let written = std::fs::metadata(from).map(|m| m.len()).unwrap_or(0);
                    if written == 0 {
                        return Err(snap_err(format!(
                            "Firecracker left {} empty",
                            from.display()
                        )));
                    }
                    move_file(from, to)?;
                    seal(to, group)?;
                }
                Ok(())
            })
            .await;
            // The memory is captured (or lost): either way the source ends stopped.
            self.stop(&spec.id, Some(runtime)).await?;
            moved?;
            vmstate = Some(state_dst);
            memory = Some(mem_dst);
        } else {
            self.stop(&spec.id, Some(runtime)).await?;
        }
        let captured = started.elapsed();

        // 3. The disk, final now that the VM is gone; the boot files beside it.
        let disk = dest.join(DISK_FILE);
        let (src, dst) = (paths.rootfs.clone(), disk.clone());
        let disk_copy = blocking(move || clone_raw_disk(&src, &dst)).await?;
        let kernel = dest.join(KERNEL_FILE);
        let initramfs = dest.join(INITRAMFS_FILE);
        link_or_copy(&record.kernel, &kernel)?;
        link_or_copy(&record.initramfs, &initramfs)?;
        tracing::debug!(?captured, disk = ?started.elapsed(), %disk_copy, "snapshot taken");

        // 4. The record, last.
        let machine = FirecrackerSnapshot {
            vmstate,
            plan: record.plan.clone(),
            jailed,
            firecracker_version: version,
            disk_copy,
        };
        let info = SnapshotInfo {
            driver: DriverKind::Firecracker,
            dir: dest.to_path_buf(),
            memory,
            disk,
            kernel: Some(kernel),
            initramfs: Some(initramfs),
            image: spec.image.clone(),
            memory_mib: record.plan.mem_mib,
            vcpus: record.plan.vcpus,
            created_at_ms: now_ms(),
            machine: serde_json::to_value(&machine)
                .map_err(|e| VmmError::Corrupt(e.to_string()))?,
        };
        crate::snapshot_dir::write_info(&info)?;
        Ok(info)
    }

    /// Asks the guest to write its caches to its disk.
    async fn flush_guest(&self, spec: &SandboxSpec, runtime: &Runtime) -> Result<(), VmmError> {
        let agent = self.agent(runtime, &spec.agent_token)?;
        let mut sync = ExecRequest::argv(["sync"]);
        sync.timeout_ms = Some(15_000);
        let r = tokio::time::timeout(SYNC_TIMEOUT, agent.exec(&sync))
            .await
            .map_err(|_| snap_err("the guest did not sync in time"))?
            .map_err(|e| snap_err(format!("the guest did not sync: {e}")))?;
        if r.status.exit_code != Some(0) {
            return Err(snap_err(format!("sync in the guest failed: {}", r.stderr)));
        }
        Ok(())
    }

    /// The Firecracker part of `snapshot`, checked against `spec`.
    fn check_snapshot(
        &self,
        spec: &SandboxSpec,
        snapshot: &SnapshotInfo,
    ) -> Result<FirecrackerSnapshot, VmmError> {
        if snapshot.driver != DriverKind::Firecracker {
            return Err(snap_err(format!(
                "a {} snapshot cannot be restored by the firecracker driver",
                snapshot.driver
            )));
        }
        let fc: FirecrackerSnapshot = serde_json::from_value(snapshot.machine.clone())
            .map_err(|e| snap_err(format!("not a Firecracker snapshot record: {e}")))?;
        let mut files = vec![&snapshot.disk];
        files.extend(snapshot.kernel.iter());
        files.extend(snapshot.initramfs.iter());
        if let (Some(state), Some(memory)) = (&fc.vmstate, &snapshot.memory) {
            files.extend([state, memory]);
            if spec.resources.vcpus != snapshot.vcpus
                || spec.resources.memory_mib != snapshot.memory_mib
            {
                return Err(snap_err(format!(
                    "the snapshot's machine has {} vCPUs and {} MiB; a clone cannot have {} \
                     and {}",
                    snapshot.vcpus,
                    snapshot.memory_mib,
                    spec.resources.vcpus,
                    spec.resources.memory_mib
                )));
            }
            if spec.restore_token.is_none() {
                return Err(snap_err(
                    "restore_token (the snapshot's agent token) is required to restore",
                ));
            }
        }
        for f in files {
            if !f.is_file() {
                return Err(snap_err(format!("{} is missing", f.display())));
            }
        }
        Ok(fc)
    }

    /// [`Driver::launch_from_snapshot`] for Firecracker; see the module documentation.
    pub(super) async fn restore(
        &self,
        spec: &SandboxSpec,
        snapshot: &SnapshotInfo,
    ) -> Result<Runtime, VmmError> {
        let fc = self.check_snapshot(spec, snapshot)?;
        let (Some(kernel), Some(initramfs)) = (&snapshot.kernel, &snapshot.initramfs) else {
            return Err(snap_err("the snapshot holds no kernel and initramfs"));
        };
        let artifacts = BootArtifacts {
            bzimage: kernel.clone(),
            vmlinux: kernel.clone(),
            initramfs: initramfs.clone(),
            rootfs: snapshot.disk.clone(),
        };
        let paths = self.paths(&spec.id);
        let memory = match (&fc.vmstate, &snapshot.memory) {
            (Some(state), Some(memory)) => Some((state.clone(), memory.clone())),
            _ => None,
        };
        // What cannot be restored here is refused before anything is made.
        let clone_plan = match &memory {
            Some(_) => {
                let with_network = fc.plan.network.is_some() && self.net.is_some();
                let plan = self.plan_with(spec, &artifacts, &paths, with_network)?;
                load_params(&fc.plan, &plan, String::new(), String::new(), None)?;
                Some(plan)
            }
            None => None,
        };
        self.check_socket_paths(&paths)?;
        // The clone's own disk.
        let (src, dst, dir) = (
            snapshot.disk.clone(),
            paths.rootfs.clone(),
            paths.dir.clone(),
        );
        blocking(move || {
            create_dir(&dir, 0o700)?;
            remove_file_if_present(&dst)?;
            clone_raw_disk(&src, &dst).map(|_| ())
        })
        .await?;
        match (memory, clone_plan) {
            (Some((state, mem)), Some(plan)) => {
                self.resume_clone(spec, &fc, &artifacts, &paths, plan, &state, &mem)
                    .await
            }
            // Disk only: the clone boots its copy of the disk.
            _ => self.boot(spec, &artifacts).await,
        }
    }

    /// Starts a Firecracker for the clone and loads the snapshot into it.
    #[allow(clippy::too_many_arguments)]
    async fn resume_clone(
        &self,
        spec: &SandboxSpec,
        fc: &FirecrackerSnapshot,
        artifacts: &BootArtifacts,
        paths: &SandboxPaths,
        plan: BootPlan,
        state: &Path,
        memory: &Path,
    ) -> Result<Runtime, VmmError> {
        let started = Instant::now();
        let net = self.set_up_network(&spec.id, &spec.network, plan.network.is_some())?;
        let restored = async {
            let guest_network = net
                .as_ref()
                .and(self.net.as_ref())
                .map(|m| m.guest_network());
            let record = LaunchRecord {
                plan: plan.clone(),
                kernel: artifacts.vmlinux.clone(),
                initramfs: artifacts.initramfs.clone(),
            };
            let jail_owner = self.config.jailer.as_ref().map(|j| (j.uid, j.gid));
            let (config, spec2, artifacts2, paths2) = (
                self.config.clone(),
                spec.clone(),
                artifacts.clone(),
                paths.clone(),
            );
            let (state2, memory2) = (state.to_path_buf(), memory.to_path_buf());
            // The restored agent read its config at boot and never again; the disk is
            // there because the machine has it (and for a later cold start).
            let (state_path, mem_path) = blocking(move || {
                prepare(&config, &spec2, &artifacts2, &paths2, guest_network)?;
                record.write(&paths2.launch_record)?;
                match paths2.jail {
                    // Into the chroot, where the clone's Firecracker can open them.
                    Some(_) => {
                        let dir = &paths2.snapshot_dir;
                        create_dir(dir, 0o700)?;
                        chown(dir, jail_owner)?;
                        let (s, m) = (dir.join(VMSTATE_FILE), dir.join(MEMORY_FILE));
                        for (from, to) in [(&state2, &s), (&memory2, &m)] {
                            link_or_copy(from, to)?;
                            if !disk::same_file(from, to) {
                                // A copy is ours and private: let the jailed VMM read it.
                                seal(to, jail_owner.map(|(_, gid)| gid))?;
                            }
                        }
                        Ok((paths2.visible(&s)?, paths2.visible(&m)?))
                    }
                    None => Ok((paths2.visible(&state2)?, paths2.visible(&memory2)?)),
                }
            })
            .await?;
            let prepared = started.elapsed();
            let vmm = self.start_vmm(&spec.id, paths, net.as_ref()).await?;
            let loaded = async {
                configure(&vmm.client, &logging_calls(&plan)).await?;
                let version = vmm
                    .client
                    .version()
                    .await
                    .ok()
                    .and_then(|v| parse_version(&v.firecracker_version));
                let params = load_params(&fc.plan, &plan, state_path, mem_path, version)?;
                vmm.client.load_snapshot(&params).await?;
                Ok(())
            }
            .await;
            let runtime = self.finish_start(vmm, loaded, paths).await?;
            tracing::debug!(?prepared, running = ?started.elapsed(), "restore: files ready, VM running");
            Ok(runtime)
        }
        .await;
        if restored.is_err() {
            if let Err(e) = self.tear_down_network(&spec.id) {
                tracing::warn!(sandbox = %spec.id, error = %e, "could not remove the network of a failed restore");
            }
        }
        restored
    }

    /// `wait_ready` of a sandbox from a snapshot: the snapshot's agent answers to `old`;
    /// give it the clone's identity, then check that it answers to the new token. A clone
    /// that booted (disk-only snapshot) read its new token from its config disk, refuses
    /// `old`, and only has to answer to the new one.
    pub(super) async fn refresh_identity(
        &self,
        spec: &SandboxSpec,
        old: &str,
        runtime: &Runtime,
        within: Duration,
        started: Instant,
    ) -> Result<(), VmmError> {
        let paths = self.paths(&spec.id);
        // One client throughout: the connection that found the agent healthy carries the
        // identity, then (re-keyed) the first call with the new token.
        let old_client = self.agent(runtime, old)?;
        if !self
            .wait_health(runtime, &paths, &old_client, within, started)
            .await?
        {
            // The old token is refused: a booted clone, or an earlier attempt applied the
            // identity already.
            let new_client = self.agent(runtime, &spec.agent_token)?;
            return match self
                .wait_health(runtime, &paths, &new_client, within, started)
                .await?
            {
                true => Ok(()),
                false => Err(snap_err(
                    "the clone's agent refuses both the snapshot's token and its own",
                )),
            };
        }
        let r = guest::apply_identity(&old_client, spec).await;
        tracing::debug!(answered = ?started.elapsed(), "restore: identity applied");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::LogLevel;
    use super::super::plan::NicPlan;
    use super::*;

    fn plan(rootfs: &str, vsock: &str, tap: Option<&str>) -> BootPlan {
        BootPlan {
            kernel: "/vmlinux".into(),
            initrd: Some("/initramfs".into()),
            boot_args: "console=ttyS0".into(),
            rootfs: rootfs.into(),
            config_disk: "/config.img".into(),
            vcpus: 2,
            mem_mib: 512,
            smt: false,
            track_dirty_pages: false,
            vsock_uds: vsock.into(),
            guest_cid: 3,
            log_path: "/firecracker.log".into(),
            log_level: LogLevel::Warning,
            metrics_path: None,
            entropy: true,
            network: tap.map(|t| NicPlan {
                iface_id: "eth0".into(),
                host_dev_name: t.into(),
                guest_mac: "06:00:ac:10:00:02".into(),
            }),
        }
    }

    fn load(
        recorded: &BootPlan,
        clone: &BootPlan,
        version: Option<(u32, u32)>,
    ) -> Result<serde_json::Value, VmmError> {
        load_params(
            recorded,
            clone,
            "/snapshot/vmstate.bin".into(),
            "/snapshot/memory.bin".into(),
            version,
        )
        .map(|p| serde_json::to_value(p).unwrap())
    }

    #[test]
    fn overrides_name_the_clones_tap_and_vsock_socket() {
        let recorded = plan("/rootfs.ext4", "/run/vsock.sock", Some("tap0"));
        let clone = plan("/rootfs.ext4", "/run/clone.sock", Some("tap7"));
        assert_eq!(
            load(&recorded, &clone, Some((1, 16))).unwrap(),
            serde_json::json!({
                "snapshot_path": "/snapshot/vmstate.bin",
                "mem_backend": {"backend_type": "File", "backend_path": "/snapshot/memory.bin"},
                "resume_vm": true,
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap7"}],
                "vsock_override": {"uds_path": "/run/clone.sock"},
            })
        );
        // An unknown version is taken as a recent one.
        assert_eq!(
            load(&recorded, &clone, None).unwrap()["vsock_override"]["uds_path"],
            "/run/clone.sock"
        );
    }

    #[test]
    fn a_drive_path_that_differs_is_refused() {
        let recorded = plan("/data/sandboxes/sA/rootfs.ext4", "/d/sA/vsock.sock", None);
        let clone = plan("/data/sandboxes/sB/rootfs.ext4", "/d/sB/vsock.sock", None);
        let e = load(&recorded, &clone, Some((1, 16))).unwrap_err();
        assert!(matches!(e, VmmError::Snapshot(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("/data/sandboxes/sA/rootfs.ext4")
                && text.contains("/data/sandboxes/sB/rootfs.ext4")
                && text.contains("jailer"),
            "{text}"
        );
    }

    #[test]
    fn older_firecrackers_get_no_override_they_cannot_parse() {
        let recorded = plan("/rootfs.ext4", "/run/vsock.sock", Some("tap0"));
        let same = plan("/rootfs.ext4", "/run/vsock.sock", Some("tap0"));
        let v = load(&recorded, &same, Some((1, 11))).unwrap();
        assert!(v.get("vsock_override").is_none() && v.get("network_overrides").is_none());
        let v = load(&recorded, &same, Some((1, 12))).unwrap();
        assert!(v.get("vsock_override").is_none());
        assert_eq!(v["network_overrides"][0]["host_dev_name"], "tap0");
        // What differs and cannot be overridden is refused.
        let moved = plan("/rootfs.ext4", "/run/other.sock", Some("tap0"));
        let e = load(&recorded, &moved, Some((1, 15))).unwrap_err();
        assert!(e.to_string().contains("1.16"), "{e}");
        let retapped = plan("/rootfs.ext4", "/run/vsock.sock", Some("tap9"));
        let e = load(&recorded, &retapped, Some((1, 11))).unwrap_err();
        assert!(e.to_string().contains("1.12"), "{e}");
    }

    #[test]
    fn a_network_interface_needs_a_tap() {
        let recorded = plan("/rootfs.ext4", "/run/vsock.sock", Some("tap0"));
        let clone = plan("/rootfs.ext4", "/run/vsock.sock", None);
        let e = load(&recorded, &clone, None).unwrap_err();
        assert!(e.to_string().contains("network namespace"), "{e}");
        // A snapshot without one restores anywhere.
        let plain = plan("/rootfs.ext4", "/run/vsock.sock", None);
        let with_tap = plan("/rootfs.ext4", "/run/vsock.sock", Some("tap0"));
        assert!(load(&plain, &with_tap, None)
            .unwrap()
            .get("network_overrides")
            .is_none());
    }

    #[test]
    fn dirty_page_tracking_is_asked_for_again() {
        let recorded = plan("/rootfs.ext4", "/run/vsock.sock", None);
        let mut clone = recorded.clone();
        clone.track_dirty_pages = true;
        assert_eq!(
            load(&recorded, &clone, None).unwrap()["track_dirty_pages"],
            true
        );
    }

    #[test]
    fn versions_parse_in_every_spelling() {
        assert_eq!(parse_version("1.16.1"), Some((1, 16)));
        assert_eq!(parse_version("v1.12.0"), Some((1, 12)));
        assert_eq!(parse_version("Firecracker v1.17.0-dev"), Some((1, 17)));
        assert_eq!(parse_version("1.7-rc1"), Some((1, 7)));
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn disks_are_cloned_by_reflink_or_copied() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("base.ext4");
        std::fs::write(&src, b"filesystem blocks").unwrap();
        let dst = dir.path().join("clone.ext4");
        let kind = clone_raw_disk(&src, &dst).unwrap();
        assert!(
            matches!(kind, StorageKind::Reflink | StorageKind::Copy),
            "{kind}"
        );
        assert_eq!(std::fs::read(&dst).unwrap(), b"filesystem blocks");
        std::fs::write(&dst, b"clone writes").unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), b"filesystem blocks");
        assert!(clone_raw_disk(&src, &dst).is_err(), "never overwrites");
    }
}
