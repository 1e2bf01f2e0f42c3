//! Root filesystems, built without Docker: a staging directory turned into an ext4 image
//! with `mkfs.ext4 -d`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::kernel::run;
use super::ImageError;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n";
const GROUP: &str = "root:x:0:\ndev:x:1000:\n";

/// `minimal`: busybox and the agent — boots in seconds, used by tests.
pub fn stage_minimal(staging: &Path, busybox: &Path, agent: &Path) -> Result<(), ImageError> {
    for d in [
        "bin",
        "dev",
        "etc",
        "home/dev",
        "proc",
        "root",
        "run",
        "sys",
        "tmp",
        "usr/local/bin",
        "var/lib/atelier",
    ] {
        let p = staging.join(d);
        std::fs::create_dir_all(&p).map_err(ImageError::io(format!("creating {}", p.display())))?;
    }
    std::fs::set_permissions(staging.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(ImageError::io("chmod /tmp"))?;
    std::fs::copy(busybox, staging.join("bin/busybox"))
        .map_err(ImageError::io("copying busybox"))?;
    let applets = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(ImageError::io("listing busybox applets"))?;
    for applet in String::from_utf8_lossy(&applets.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let _ = std::os::unix::fs::symlink("busybox", staging.join("bin").join(applet));
    }
    std::os::unix::fs::symlink("bin", staging.join("sbin"))
        .map_err(ImageError::io("linking /sbin"))?;
    install_agent(staging, agent)?;
    write(staging, "etc/passwd", PASSWD)?;
    write(staging, "etc/group", GROUP)?;
    write(staging, "etc/hostname", "sandbox\n")?;
    write(staging, "etc/resolv.conf", "")?;
    Ok(())
}

/// Puts the static agent at `/usr/local/bin/atelier-agent` (it is also the guest's init).
pub fn install_agent(staging: &Path, agent: &Path) -> Result<(), ImageError> {
    let target = staging.join("usr/local/bin/atelier-agent");
    std::fs::create_dir_all(staging.join("usr/local/bin"))
        .map_err(ImageError::io("creating /usr/local/bin"))?;
    std::fs::copy(agent, &target)
        .map_err(ImageError::io(format!("copying {}", agent.display())))?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io("chmod the agent"))
}

fn write(staging: &Path, rel: &str, content: &str) -> Result<(), ImageError> {
    std::fs::write(staging.join(rel), content).map_err(ImageError::io(format!("writing /{rel}")))
}

/// `dev`: Debian bookworm by mmdebstrap with the tools coding agents need, a `dev` user
/// with passwordless sudo, and the agent.
pub fn stage_dev(staging: &Path, agent: &Path, progress: &dyn Fn(&str)) -> Result<(), ImageError> {
    progress("mmdebstrap bookworm (this takes a few minutes)");
    let packages = "git,curl,ca-certificates,build-essential,nodejs,npm,sudo,iproute2,procps,less,openssh-client";
    run(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--mode=root", &format!("--include={packages}")])
            .arg("--customize-hook=chroot \"$1\" useradd --create-home --uid 1000 --shell /bin/bash dev")
            .arg("--customize-hook=echo 'dev ALL=(ALL) NOPASSWD:ALL' > \"$1/etc/sudoers.d/dev\"")
            .arg("--customize-hook=rm -rf \"$1/var/cache/apt/archives\"/*.deb \"$1/var/lib/apt/lists\"/*")
            .arg("bookworm")
            .arg(staging),
        "mmdebstrap (apt-get install mmdebstrap)",
    )?;
    install_agent(staging, agent)?;
    std::fs::create_dir_all(staging.join("var/lib/atelier"))
        .map_err(ImageError::io("creating /var/lib/atelier"))
}

/// Turns `staging` into an ext4 image at `out` with `extra_mib` of free space.
pub fn make_ext4(staging: &Path, out: &Path, extra_mib: u64) -> Result<(), ImageError> {
    let used = du_bytes(staging);
    let size_mib = used / (1 << 20) + used / (1 << 20) / 4 + extra_mib;
    run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "atelier-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(staging)
            .arg(out)
            .arg(format!("{size_mib}M")),
        "mkfs.ext4 (e2fsprogs)",
    )
}

fn du_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            }
            total += meta.len().max(4096);
        }
    }
    total
}
