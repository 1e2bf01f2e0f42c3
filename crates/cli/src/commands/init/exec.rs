//! The host's tools and files, with errors that name the command (and its stderr) or
//! the file that failed.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::client::ClientError;

/// The Debian package a tool comes in, for the error when it is missing.
fn package_of(program: &str) -> Option<&'static str> {
    Some(match program {
        "dpkg-query" => "dpkg",
        "apt-get" => "apt",
        "chroot" => "coreutils",
        "mkfs.xfs" | "xfs_db" => "xfsprogs",
        "mount" | "umount" => "mount",
        "findmnt" | "losetup" | "blkid" => "util-linux",
        "useradd" => "passwd",
        "systemctl" => "systemd",
        _ => return None,
    })
}

fn shown<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

fn spawn_error(command: String, program: &str, e: &std::io::Error) -> ClientError {
    let hint = match (e.kind(), package_of(program)) {
        (ErrorKind::NotFound, Some(p)) => format!(" (apt-get install {p})"),
        _ => String::new(),
    };
    ClientError::Command {
        command,
        status: format!("could not start it: {e}{hint}"),
        stderr: String::new(),
    }
}

/// Runs `program` and returns its output whatever its exit status: for the tools whose
/// status is an answer (`findmnt`: not mounted, `blkid`: no filesystem).
pub fn output<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output, ClientError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(shown(program, args), program, &e))
}

/// The error for a command that ran and failed.
pub fn failed<S: AsRef<OsStr>>(program: &str, args: &[S], out: &Output) -> ClientError {
    ClientError::Command {
        command: shown(program, args),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

/// Runs `program` to completion; its stdout, or an error naming it with its stderr.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String, ClientError> {
    let out = output(program, args)?;
    if !out.status.success() {
        return Err(failed(program, args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a long command (apt-get) with its stdout on ours, so that progress shows; its
/// stderr is kept for the error.
pub fn run_shown<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> Result<(), ClientError> {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| spawn_error(shown(program, args), program, &e))?;
    if !out.status.success() {
        return Err(failed(program, args, &out));
    }
    Ok(())
}

/// True when `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            d.join(program)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

pub fn io_error(what: String) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

/// The file's text, or `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("reading {}", path.display()))(e)),
    }
}

/// Replaces (or creates) `path` with `contents` in one rename, so that a crash leaves
/// the old file or the new one, never half of it.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), ClientError> {
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::Usage(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    let tmp = temp_beside(path);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        // The mode asked for, whatever the umask.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(format!("writing {}", path.display()))(e)
    })
}

/// Copies the file `from` over `to` (atomically, as [`write_atomic`]).
pub fn copy_atomic(from: &Path, to: &Path, mode: u32) -> Result<(), ClientError> {
    let dir = to
        .parent()
        .ok_or_else(|| ClientError::Usage(format!("{} has no parent", to.display())))?;
    std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    let tmp = temp_beside(to);
    let copied = (|| {
        std::fs::copy(from, &tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, to)
    })();
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(format!("copying {} to {}", from.display(), to.display()))(e)
    })
}

fn temp_beside(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.atelier-init"))
}

/// True when both files hold the same bytes (a missing `b` differs).
pub fn same_file_contents(a: &Path, b: &Path) -> Result<bool, ClientError> {
    let open = |p: &Path| File::open(p).map_err(io_error(format!("reading {}", p.display())));
    let mut fa = open(a)?;
    let mut fb = match File::open(b) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(format!("reading {}", b.display()))(e)),
    };
    let len = |f: &File, p: &Path| {
        f.metadata()
            .map(|m| m.len())
            .map_err(io_error(format!("reading {}", p.display())))
    };
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n =
            read_full(&mut fa, &mut ba).map_err(io_error(format!("reading {}", a.display())))?;
        let m =
            read_full(&mut fb, &mut bb).map_err(io_error(format!("reading {}", b.display())))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The first `n` bytes of a file (fewer when it is shorter).
pub fn head(path: &Path, n: usize) -> Result<Vec<u8>, ClientError> {
    let mut buf = vec![0u8; n];
    let mut f = File::open(path).map_err(io_error(format!("reading {}", path.display())))?;
    let got =
        read_full(&mut f, &mut buf).map_err(io_error(format!("reading {}", path.display())))?;
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_is_named_with_its_stderr() {
        let e = run("sh", &["-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sh -c echo oops >&2; exit 3` failed (exit status: 3): oops"
        );
        let e = run("no-such-tool-for-init", &["x"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`no-such-tool-for-init x` failed (could not start it:"),
            "{e}"
        );
    }

    #[test]
    fn files_are_replaced_whole_and_compared_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("sub/a");
        write_atomic(&a, b"one", 0o640).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let b = dir.path().join("b");
        assert!(!same_file_contents(&a, &b).unwrap());
        copy_atomic(&a, &b, 0o755).unwrap();
        assert!(same_file_contents(&a, &b).unwrap());
        write_atomic(&b, b"two", 0o755).unwrap();
        assert!(!same_file_contents(&a, &b).unwrap());
        assert_eq!(read_optional(&dir.path().join("none")).unwrap(), None);
        assert_eq!(head(&b, 2).unwrap(), b"tw");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
