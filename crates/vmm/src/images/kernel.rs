//! The guest kernel: Debian's `linux-image-cloud-amd64`, fetched with `apt-get download`
//! and unpacked with `dpkg -x` into the data dir — never installed into the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{vmlinux, ImageError};

/// An unpacked kernel: the bzImage (QEMU), its ELF (Firecracker), and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// `6.1.0-56-cloud-amd64`, or `custom` for a user-supplied kernel.
    pub version: String,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    /// `…/lib/modules/<version>`.
    pub modules_dir: PathBuf,
}

const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// The concrete package the meta package points at, e.g. `linux-image-6.1.0-56-cloud-amd64`.
fn resolve_package() -> Result<String, ImageError> {
    let out = Command::new("apt-cache")
        .args(["depends", META_PACKAGE])
        .output()
        .map_err(ImageError::io("running apt-cache (is this a Debian host?)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(str::to_owned)
        .ok_or_else(|| {
            ImageError::Kernel(format!("apt knows no {META_PACKAGE}; run `apt-get update` (Debian's main archive is needed)"))
        })
}

/// Fetches (once) and unpacks Debian's cloud kernel under `kernels_dir`.
pub fn debian_cloud_kernel(
    kernels_dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<Kernel, ImageError> {
    let package = resolve_package()?;
    let version = package.trim_start_matches("linux-image-").to_owned();
    let root = kernels_dir.join(&version);
    let kernel = Kernel {
        bzimage: root.join(format!("boot/vmlinuz-{version}")),
        vmlinux: root.join("vmlinux"),
        modules_dir: root.join(format!("lib/modules/{version}")),
        version: version.clone(),
    };
    if kernel.vmlinux.is_file() && kernel.bzimage.is_file() {
        return Ok(kernel);
    }
    progress(&format!("fetching {package} with apt-get download"));
    let staging = kernels_dir.join(format!(".{version}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(ImageError::io(format!("creating {}", staging.display())))?;
    run(
        Command::new("apt-get")
            .arg("download")
            .arg(&package)
            .current_dir(&staging),
        "apt-get download",
    )?;
    let deb = std::fs::read_dir(&staging)
        .map_err(ImageError::io("listing the download"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| ImageError::Kernel("apt-get download produced no .deb".into()))?;
    let tree = staging.join("tree");
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&tree),
        "dpkg -x",
    )?;
    progress("extracting vmlinux from the bzImage");
    let bz = std::fs::read(tree.join(format!("boot/vmlinuz-{version}")))
        .map_err(ImageError::io("reading the bzImage"))?;
    let elf = vmlinux::extract_vmlinux(&bz).map_err(|e| ImageError::Kernel(e.to_string()))?;
    std::fs::write(tree.join("vmlinux"), elf).map_err(ImageError::io("writing vmlinux"))?;
    if !root.join("vmlinux").is_file() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tree, &root).map_err(ImageError::io(format!(
            "moving the kernel to {}",
            root.display()
        )))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(kernel)
}

/// A kernel the user supplies: a bzImage and the directory of its modules.
pub fn custom_kernel(
    bzimage: &Path,
    modules_dir: &Path,
    kernels_dir: &Path,
) -> Result<Kernel, ImageError> {
    let bz =
        std::fs::read(bzimage).map_err(ImageError::io(format!("reading {}", bzimage.display())))?;
    let vmlinux_path = kernels_dir.join("custom-vmlinux");
    if let Ok(elf) = vmlinux::extract_vmlinux(&bz) {
        std::fs::create_dir_all(kernels_dir).map_err(ImageError::io("creating the kernels dir"))?;
        std::fs::write(&vmlinux_path, elf).map_err(ImageError::io("writing vmlinux"))?;
    }
    Ok(Kernel {
        version: "custom".into(),
        bzimage: bzimage.to_owned(),
        vmlinux: vmlinux_path,
        modules_dir: modules_dir.to_owned(),
    })
}

pub(super) fn run(cmd: &mut Command, what: &str) -> Result<(), ImageError> {
    let out = cmd
        .output()
        .map_err(ImageError::io(format!("running {what}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::Tool {
            tool: what.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
