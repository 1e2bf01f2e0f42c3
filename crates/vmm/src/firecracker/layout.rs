//! Where a Firecracker sandbox's files live: its directory under the data dir, and
//! under the jailer the chroot Firecracker sees (with the kernel, initramfs and disks
//! linked into it); making them before a launch.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use atelier_core::SandboxId;
use atelier_proto::{AgentAddr, GuestNetwork};

use super::disk;
use super::driver::{FirecrackerConfig, FirecrackerDriver};
use super::jailer::JailerConfig;
use super::plan::guest_config_with;
use crate::driver::{DriverKind, Runtime, SandboxSpec, VmmError};
use crate::guest;
use crate::image::BootArtifacts;

/// Longest path a Unix socket address can hold.
const SUN_PATH_MAX: usize = 107;
/// Where one sandbox's files are on the host, and how Firecracker names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    /// `<data-dir>/sandboxes/<id>`.
    pub dir: PathBuf,
    /// The sandbox's disk (in `dir`, kept across restarts).
    pub rootfs: PathBuf,
    /// The config disk (in `dir`).
    pub config_disk: PathBuf,
    /// Firecracker's stdout and stderr: the serial console.
    pub console_log: PathBuf,
    /// The jail (`<chroot-base>/<exec name>/<id>`), under the jailer.
    pub jail: Option<PathBuf>,
    /// The directory Firecracker's files are in: `dir`, or the chroot under the jailer.
    pub root: PathBuf,
    pub api_socket: PathBuf,
    pub vsock_socket: PathBuf,
    pub firecracker_log: PathBuf,
    pub metrics: PathBuf,
    /// Where Firecracker writes (and a clone reads) snapshot files: in the chroot under
    /// the jailer.
    pub snapshot_dir: PathBuf,
    /// `launch.json`: how the running VM was configured (a snapshot records it).
    pub launch_record: PathBuf,
}

impl SandboxPaths {
    /// How Firecracker names the host file `host` (inside its chroot, under the jailer).
    pub fn visible(&self, host: &Path) -> Result<String, VmmError> {
        let p = match &self.jail {
            Some(_) => {
                let rel = host.strip_prefix(&self.root).map_err(|_| {
                    VmmError::Corrupt(format!(
                        "{} is outside the jail {}",
                        host.display(),
                        self.root.display()
                    ))
                })?;
                Path::new("/").join(rel)
            }
            None => host.to_path_buf(),
        };
        p.to_str().map(str::to_owned).ok_or_else(|| VmmError::Io {
            context: format!("passing {} to Firecracker", p.display()),
            source: io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        })
    }

    /// Kernel and initramfs as placed for Firecracker: in the chroot under the jailer,
    /// the image's own files otherwise.
    pub(super) fn boot_files(&self, artifacts: &BootArtifacts) -> (PathBuf, PathBuf) {
        match &self.jail {
            Some(_) => (self.root.join("vmlinux"), self.root.join("initramfs")),
            None => (artifacts.vmlinux.clone(), artifacts.initramfs.clone()),
        }
    }

    /// Where Firecracker opens the disks: the sandbox's, or their links in the chroot.
    pub(super) fn disks(&self) -> (PathBuf, PathBuf) {
        match &self.jail {
            Some(_) => (self.root.join("rootfs.ext4"), self.root.join("config.img")),
            None => (self.rootfs.clone(), self.config_disk.clone()),
        }
    }
}

impl FirecrackerDriver {
    /// Where the sandbox `id`'s files are.
    pub fn paths(&self, id: &SandboxId) -> SandboxPaths {
        let dir = self.sandboxes_dir.join(id.as_str());
        let (jail, root, sockets) = match &self.config.jailer {
            Some(j) => {
                let root = j.chroot(&self.config.binary, id);
                let run = root.join("run");
                (Some(j.jail_dir(&self.config.binary, id)), root, run)
            }
            None => (None, dir.clone(), dir.clone()),
        };
        SandboxPaths {
            rootfs: dir.join("rootfs.ext4"),
            config_disk: dir.join("config.img"),
            console_log: dir.join("console.log"),
            api_socket: sockets.join("api.sock"),
            vsock_socket: sockets.join("vsock.sock"),
            firecracker_log: root.join("firecracker.log"),
            metrics: root.join("metrics.json"),
            snapshot_dir: root.join("snapshot"),
            launch_record: dir.join("launch.json"),
            jail,
            root,
            dir,
        }
    }

    pub(super) fn check_socket_paths(&self, paths: &SandboxPaths) -> Result<(), VmmError> {
        for s in [&paths.api_socket, &paths.vsock_socket] {
            if s.as_os_str().len() > SUN_PATH_MAX {
                return Err(VmmError::NotAvailable {
                    driver: DriverKind::Firecracker,
                    reason: format!(
                        "the socket path {} is too long; use a shorter --data-dir (or \
                         jailer chroot base)",
                        s.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The API socket of a launched sandbox: next to its vsock socket.
pub fn api_socket_of(runtime: &Runtime) -> Result<PathBuf, VmmError> {
    match runtime.agent_addr()? {
        AgentAddr::HybridVsock { uds, .. } => Ok(uds.with_file_name("api.sock")),
        other => Err(VmmError::Corrupt(format!(
            "a Firecracker sandbox's agent address should be fcvsock:…, not {other}"
        ))),
    }
}

/// Creates the sandbox's files (blocking: may copy a disk image).
pub(super) fn prepare(
    config: &FirecrackerConfig,
    spec: &SandboxSpec,
    artifacts: &BootArtifacts,
    paths: &SandboxPaths,
    network: Option<GuestNetwork>,
) -> Result<(), VmmError> {
    for (what, p) in [
        ("kernel", &artifacts.vmlinux),
        ("initramfs", &artifacts.initramfs),
        ("root filesystem", &artifacts.rootfs),
    ] {
        if !p.is_file() {
            return Err(VmmError::Io {
                context: format!("image {:?}: {what} {}", spec.image, p.display()),
                source: io::Error::new(io::ErrorKind::NotFound, "missing"),
            });
        }
    }
    create_dir(&paths.dir, 0o700)?;
    let min_disk = u64::from(spec.resources.disk_mib) * 1024 * 1024;
    disk::ensure_disk_copy(&artifacts.rootfs, &paths.rootfs, min_disk)?;
    guest::write_config_disk(&paths.config_disk, &guest_config_with(spec, network))?;
    for s in [&paths.api_socket, &paths.vsock_socket] {
        remove_file_if_present(s)?;
    }
    truncate(&paths.console_log, 0o600, None)?;
    match (&config.jailer, &paths.jail) {
        (Some(j), Some(jail)) => prepare_jail(config, j, jail, artifacts, paths),
        _ => {
            truncate(&paths.firecracker_log, 0o600, None)?;
            if config.metrics {
                truncate(&paths.metrics, 0o600, None)?;
            }
            Ok(())
        }
    }
}

/// Fills a fresh chroot with what Firecracker opens, owned so that it can.
fn prepare_jail(
    config: &FirecrackerConfig,
    j: &JailerConfig,
    jail: &Path,
    artifacts: &BootArtifacts,
    paths: &SandboxPaths,
) -> Result<(), VmmError> {
    let owner = Some((j.uid, j.gid));
    remove_dir_if_present(jail)?;
    create_dir(&paths.root, 0o755)?;
    let run = paths.api_socket.parent().unwrap_or(&paths.root);
    create_dir(run, 0o700)?;
    chown(run, owner)?;
    let (kernel, initrd) = paths.boot_files(artifacts);
    link_readable(&artifacts.vmlinux, &kernel, owner)?;
    link_readable(&artifacts.initramfs, &initrd, owner)?;
    let (rootfs, config_disk) = paths.disks();
    link_private(&paths.rootfs, &rootfs, owner)?;
    link_private(&paths.config_disk, &config_disk, owner)?;
    truncate(&paths.firecracker_log, 0o600, owner)?;
    if config.metrics {
        truncate(&paths.metrics, 0o600, owner)?;
    }
    Ok(())
}

pub(super) fn create_dir(path: &Path, mode: u32) -> Result<(), VmmError> {
    std::fs::create_dir_all(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .map_err(VmmError::io(format!("creating {}", path.display())))
}

pub(super) fn remove_file_if_present(path: &Path) -> Result<(), VmmError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VmmError::Io {
            context: format!("removing {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

pub(super) fn remove_dir_if_present(path: &Path) -> Result<(), VmmError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(VmmError::Io {
            context: format!("removing {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Creates (or empties) `path` with `mode`, owned by `owner` when given.
fn truncate(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), VmmError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(VmmError::io(format!("creating {}", path.display())))?;
    chown(path, owner)
}

pub(super) fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), VmmError> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(
            VmmError::io(format!("changing the owner of {}", path.display())),
        ),
        None => Ok(()),
    }
}

/// Puts a shared, read-only file (kernel, initramfs) into the jail: a hard link when
/// everyone may read it (never chowned: it is the image's), else a copy owned by `owner`.
fn link_readable(src: &Path, dst: &Path, owner: Option<(u32, u32)>) -> Result<(), VmmError> {
    let world_readable = std::fs::metadata(src)
        .map(|m| m.permissions().mode() & 0o004 != 0)
        .unwrap_or(false);
    if world_readable && std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    disk::clone_or_copy(src, dst).map_err(VmmError::io(format!(
        "copying {} into the jail",
        src.display()
    )))?;
    chown(dst, owner)
}

/// Puts one of the sandbox's own files (disk, config disk) into the jail, owned by
/// `owner`: a hard link (same file), else a copy.
fn link_private(src: &Path, dst: &Path, owner: Option<(u32, u32)>) -> Result<(), VmmError> {
    if std::fs::hard_link(src, dst).is_err() {
        disk::clone_or_copy(src, dst).map_err(VmmError::io(format!(
            "copying {} into the jail",
            src.display()
        )))?;
    }
    chown(dst, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(jail: Option<&str>) -> SandboxPaths {
        let dir = PathBuf::from("/data/sandboxes/sabc");
        let root = jail.map_or(dir.clone(), |j| Path::new(j).join("root"));
        SandboxPaths {
            rootfs: dir.join("rootfs.ext4"),
            config_disk: dir.join("config.img"),
            console_log: dir.join("console.log"),
            jail: jail.map(PathBuf::from),
            api_socket: root.join("run/api.sock"),
            vsock_socket: root.join("run/vsock.sock"),
            firecracker_log: root.join("firecracker.log"),
            metrics: root.join("metrics.json"),
            snapshot_dir: root.join("snapshot"),
            launch_record: dir.join("launch.json"),
            root,
            dir,
        }
    }

    #[test]
    fn in_a_jail_firecracker_sees_paths_from_its_chroot() {
        let p = paths(Some("/srv/jail/firecracker/sabc"));
        assert_eq!(p.visible(&p.api_socket).unwrap(), "/run/api.sock");
        assert_eq!(
            p.disks().0,
            p.root.join("rootfs.ext4"),
            "a link in the chroot"
        );
        let e = p.visible(&p.rootfs).unwrap_err();
        assert!(e.to_string().contains("outside the jail"), "{e}");
    }

    #[test]
    fn without_a_jail_paths_are_the_hosts() {
        let p = paths(None);
        assert_eq!(
            p.visible(&p.rootfs).unwrap(),
            "/data/sandboxes/sabc/rootfs.ext4"
        );
        assert_eq!(p.disks(), (p.rootfs.clone(), p.config_disk.clone()));
        let artifacts = BootArtifacts {
            bzimage: "/images/base/bzImage".into(),
            vmlinux: "/images/base/vmlinux".into(),
            initramfs: "/images/base/initramfs".into(),
            rootfs: "/images/base/rootfs.ext4".into(),
        };
        assert_eq!(
            p.boot_files(&artifacts),
            (artifacts.vmlinux.clone(), artifacts.initramfs.clone()),
            "the image's own kernel, not a copy"
        );
    }

    #[test]
    fn the_api_socket_is_found_next_to_the_vsock_socket() {
        let runtime = Runtime {
            agent: "fcvsock:/srv/jail/run/vsock.sock:1024".into(),
            pid: None,
            pid_start: None,
            dir: "/data/sandboxes/sabc".into(),
        };
        assert_eq!(
            api_socket_of(&runtime).unwrap(),
            PathBuf::from("/srv/jail/run/api.sock")
        );
        let tcp = Runtime {
            agent: "tcp:127.0.0.1:1024".into(),
            ..runtime
        };
        assert!(api_socket_of(&tcp).is_err());
    }
}
