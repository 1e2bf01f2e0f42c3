//! What the test suites share about the host they run on.
//!
//! A test that needs a real part (QEMU, Chromium, mmdebstrap, root for namespaces, …)
//! asks [`missing`] whether the part is here, and when it is not calls [`skip`]: the
//! reason is printed as `skipped: <reason>` and appended to the run's skip log
//! (`ATELIER_SKIP_LOG`, which `scripts/test.sh` lists at the end of the run).
//!
//! Where the README promises a part, CI must prove it: with `ATELIER_REQUIRE_REAL=1`
//! (set by `.ci/run`, and by `scripts/test.sh` under `CI=true`) [`skip`] fails the test
//! instead, naming the package to install. [`skip_documented`] is for what no machine of
//! this kind can have (Firecracker without its binary or a bootable KVM, device-mapper):
//! it never fails, and the run lists it.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Set to `1` to fail, rather than skip, a test whose real part is missing.
pub const REQUIRE_ENV: &str = "ATELIER_REQUIRE_REAL";
/// A file each skipped test appends one line to: `<test>\t<kind>\t<reason>`.
pub const SKIP_LOG_ENV: &str = "ATELIER_SKIP_LOG";

/// What a microVM sandbox needs on the host: the tool, and the Debian package it is in.
pub const QEMU_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("apt-get", "apt"),
    ("dpkg", "dpkg"),
    ("mkfs.ext4", "e2fsprogs"),
    ("/bin/busybox", "busybox-static"),
];

/// True when a missing real part fails the test (CI) instead of skipping it.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The first of `tools` that is not here, as `<tool> is not installed (apt-get install
/// <package>)`. A tool is a program looked up on PATH, or an absolute path.
pub fn missing(tools: &[(&str, &str)]) -> Option<String> {
    tools
        .iter()
        .find(|(tool, _)| !have(tool))
        .map(|(tool, package)| format!("{tool} is not installed (apt-get install {package})"))
}

/// Why QEMU microVMs cannot run here, if they cannot.
pub fn qemu_missing() -> Option<String> {
    missing(QEMU_TOOLS)
}

/// True when `tool` (a program on PATH, or an absolute path) is here.
pub fn have(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(tool)))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Skips the calling test because a part the README promises is missing: prints
/// `skipped: <why>` and logs it, or, when [`required`], fails the test with the reason.
/// The caller returns right after.
#[track_caller]
pub fn skip(why: impl Display) {
    let why = why.to_string();
    if required() {
        panic!("{why}: this test needs it ({REQUIRE_ENV}=1 makes a missing part a failure)");
    }
    record("skipped", &why);
}

/// Skips the calling test because this kind of machine cannot have what it needs
/// (Firecracker's binary or a KVM that boots a stock kernel; device-mapper). Never fails;
/// the run lists it as documented.
pub fn skip_documented(why: impl Display) {
    record("documented", &why.to_string());
}

fn record(kind: &str, why: &str) {
    let test = test_name();
    eprintln!("skipped: {why}");
    let Some(log) = std::env::var_os(SKIP_LOG_ENV).map(PathBuf::from) else {
        return;
    };
    let line = format!("{test}\t{kind}\t{}\n", why.replace(['\n', '\t'], " "));
    // One write with O_APPEND per line: tests run in parallel processes.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// `<binary id> <test>`: nextest's binary id when it runs us, and libtest's thread name.
fn test_name() -> String {
    let binary = std::env::var("NEXTEST_BINARY_ID").unwrap_or_else(|_| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|s| match s.rsplit_once('-') {
                Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    name.to_owned()
                }
                _ => s,
            })
            .unwrap_or_default()
    });
    let test = std::env::var("NEXTEST_TEST_NAME")
        .ok()
        .or_else(|| std::thread::current().name().map(str::to_owned))
        .filter(|n| n != "main")
        .unwrap_or_else(|| "?".to_owned());
    format!("{binary} {test}")
}

/// The workspace's root (where `scripts/` is). Taken from the running test's
/// `CARGO_MANIFEST_DIR` (cargo and nextest set it) before the one this crate was built
/// in: a target directory shared by two clones may hold this crate built in the other.
pub fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("../..")
}

/// Builds the static guest agent with `scripts/build-agent.sh` (a no-op when up to date).
pub fn ensure_guest_agent() {
    let status = std::process::Command::new(workspace_root().join("scripts/build-agent.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/build-agent.sh");
    assert!(status.success(), "scripts/build-agent.sh failed");
}

/// The guest image cache shared by tests, benchmarks and runs (images take minutes to
/// build): `ATELIER_TEST_CACHE`, or `~/.cache/atelier/test-images`.
pub fn image_cache_dir() -> PathBuf {
    let dir = std::env::var_os("ATELIER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/atelier/test-images")
        });
    std::fs::create_dir_all(&dir).expect("create the image cache");
    dir
}

/// `<dir>/data` with a `config.toml` that points the manager at the shared image cache,
/// after `extra` (more TOML for the top of the file).
pub fn data_dir_with_image_cache(dir: &Path, extra: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create the data dir");
    std::fs::write(
        data.join("config.toml"),
        format!(
            "{extra}\n[images]\ncache_dir = \"{}\"\n",
            image_cache_dir().display()
        ),
    )
    .expect("write config.toml");
    data
}

/// Returns from the calling test when `$why` (an `Option` of a reason) is `Some`, after
/// [`skip`]: `require!(atelier_testkit::qemu_missing());`.
#[macro_export]
macro_rules! require {
    ($why:expr) => {
        if let Some(why) = $why {
            $crate::skip(why);
            return;
        }
    };
}

/// A binary of another package of the workspace (`fake-agent`, `atelier-stdio-host`…),
/// built for this test run by `cargo build -p <package> --bin <bin>` (once per process:
/// cargo makes it fresh, as it would a test's own binary), in the profile directory of
/// the running test. Panics when it cannot be built.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let exe = std::env::current_exe().expect("the test's own path");
    // <target>/<profile>/deps/<test>-<hash>: the binaries are in <target>/<profile>.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join(bin);
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|b| b == bin) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", package, "--bin", bin])
            .args(release.then_some("--release"))
            .status()
            .unwrap_or_else(|e| panic!("running cargo to build {bin}: {e}"));
        assert!(status.success(), "building {bin} failed");
        built.push(bin.to_owned());
    }
    assert!(path.is_file(), "{bin} missing at {}", path.display());
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        assert_eq!(
            missing(&[("sh", "dash"), ("no-such-tool-here", "some-package")]),
            Some("no-such-tool-here is not installed (apt-get install some-package)".into())
        );
        assert_eq!(missing(&[("sh", "dash"), ("/", "base-files")]), None);
        assert!(!have("/no/such/path"));
    }
}
