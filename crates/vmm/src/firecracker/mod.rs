//! The `firecracker` driver: every sandbox is a Firecracker microVM.
//!
//! - [`api`]: serde types of the API bodies, as in the vendored Swagger spec
//!   (`crates/vmm/spec/firecracker-api.yaml`);
//! - [`calls`]: requests as data (method, path, JSON body), the single place bodies are
//!   built;
//! - [`client`]: HTTP/1.1 over the API Unix socket;
//! - [`driver`]: [`FirecrackerDriver`], the [`Driver`](crate::Driver) implementation:
//!   starting, waiting on, stopping and sweeping VMMs;
//! - [`plan`]: the boot plan (every API setting of a boot) and the VMM's command line;
//! - [`layout`]: where a sandbox's files live (and in the jail), made before a launch;
//! - [`jailer`]: running Firecracker under its jailer;
//! - [`disk`]: the sandbox's root disk copy (the config disk is [`crate::guest`]'s);
//! - [`snapshot`]: memory snapshots and the clones restored from them.
//!
//! [`probe`] tells whether Firecracker can run on this host at all.

pub mod api;
pub mod calls;
pub mod client;
pub mod disk;
pub mod driver;
pub mod jailer;
pub mod layout;
pub mod plan;
pub mod snapshot;

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use client::{ClientError, FirecrackerClient};
pub use driver::{FirecrackerConfig, FirecrackerDriver, LaunchRecord, NetnsChoice};
pub use jailer::JailerConfig;
pub use layout::SandboxPaths;
pub use plan::{
    boot_calls, configure, guest_config, guest_config_with, logging_calls, BootPlan, NicPlan,
    DEFAULT_BOOT_ARGS, GUEST_CID,
};

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The Firecracker binary (resolved on PATH when given as a bare name).
    pub binary: PathBuf,
    /// First line of `firecracker --version`, e.g. `Firecracker v1.16.1`.
    pub version: String,
}

/// How long `firecracker --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that Firecracker can run here: the binary exists (given, or `firecracker` on
/// PATH), `/dev/kvm` opens read-write, and `firecracker --version` runs. The error says
/// what is missing and how to fix it.
pub fn probe(binary: Option<&Path>) -> Result<Probe, String> {
    let wanted = binary.unwrap_or(Path::new("firecracker"));
    let binary = find_binary(wanted).ok_or_else(|| match binary {
        Some(p) => format!(
            "the Firecracker binary {} does not exist or is not executable",
            p.display()
        ),
        None => "firecracker was not found on PATH (install a release from \
                 https://github.com/firecracker-microvm/firecracker/releases)"
            .to_owned(),
    })?;
    check_kvm(Path::new("/dev/kvm"))?;
    let version = run_version(&binary)?;
    Ok(Probe { binary, version })
}

/// Checks the jailer part of a configuration: the jailer exists, we run as root (the
/// jailer needs it), and the exec file is named so that the jailer accepts it.
pub fn probe_jailer(jailer: &JailerConfig, firecracker: &Path) -> Result<(), String> {
    if find_binary(&jailer.binary).is_none() {
        return Err(format!(
            "the jailer binary {} does not exist or is not executable",
            jailer.binary.display()
        ));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("the jailer needs root; run atelier as root or disable the jailer".into());
    }
    let name = firecracker
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains("firecracker") {
        return Err(format!(
            "the jailer only runs executables whose name contains \"firecracker\" ({} does not)",
            firecracker.display()
        ));
    }
    Ok(())
}

/// `path` when it contains a `/`, else the first executable of that name on PATH.
pub fn find_binary(path: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if path.components().count() > 1 || path.is_absolute() {
        return executable(path).then(|| path.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(path))
        .find(|p| executable(p))
}

/// `/dev/kvm` must exist and open read-write.
pub fn check_kvm(dev: &Path) -> Result<(), String> {
    match OpenOptions::new().read(true).write(true).open(dev) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{} does not exist (no hardware virtualization: enable VT-x/AMD-V or nested \
                 virtualization, and load kvm_intel, kvm_amd or kvm_pvm)",
                dev.display()
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "{} cannot be opened read-write by this user (add it to the kvm group, or \
                 run as root)",
                dev.display()
            ),
            _ => format!("{} cannot be opened: {e}", dev.display()),
        }),
    }
}

fn run_version(binary: &Path) -> Result<String, String> {
    let mut cmd = Command::new(binary);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = driver::spawn_retrying(&mut cmd)
        .map_err(|e| format!("{} cannot be run: {e}", binary.display()))?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{} --version` did not finish within {VERSION_TIMEOUT:?}",
                    binary.display()
                ));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", binary.display())),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!(
            "`{} --version` failed ({status})",
            binary.display()
        ));
    }
    Ok(out.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn probe_explains_a_missing_binary() {
        let e = probe(Some(Path::new("/nonexistent/firecracker"))).unwrap_err();
        assert!(e.contains("/nonexistent/firecracker"), "{e}");
    }

    #[test]
    fn version_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(dir.path(), "fc", "echo 'Firecracker v1.16.1'; echo; echo x");
        assert_eq!(run_version(&ok).unwrap(), "Firecracker v1.16.1");
        let bad = script(dir.path(), "bad", "exit 3");
        assert!(run_version(&bad).unwrap_err().contains("failed"));
    }

    #[test]
    fn kvm_check_names_the_device() {
        let e = check_kvm(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(
            e.contains("/nonexistent/kvm") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn binaries_are_found_by_path_or_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "tool", "true");
        assert_eq!(find_binary(&p), Some(p.clone()));
        assert_eq!(
            find_binary(Path::new("sh")).map(|p| p.is_file()),
            Some(true)
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find_binary(&p), None, "not executable");
    }
}
