//! Building commands (argv, env, cwd, user) and managing process groups.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use atelier_proto::TOKEN_ENV;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::error::{ApiError, ApiResult};
use crate::files::Roots;
use crate::users;

/// What commands need to know about the agent.
pub struct ProcessContext {
    pub roots: Arc<Roots>,
    /// Effective uid of the agent (switching users needs 0).
    pub euid: u32,
    /// passwd file used for `user` lookups (`/etc/passwd`).
    pub passwd: PathBuf,
    /// Process groups of running execs, killed when the agent shuts down.
    pub active: ActiveGroups,
    /// The sandbox's own environment (`PUT /v1/env`), under each request's `env`; the
    /// terminal's shells start from it too.
    pub sandbox_env: SandboxEnv,
}

/// The sandbox's own environment, shared by commands and terminals.
pub type SandboxEnv = Arc<std::sync::RwLock<BTreeMap<String, String>>>;

impl ProcessContext {
    pub fn new(roots: Arc<Roots>) -> Self {
        Self {
            roots,
            euid: nix::unistd::geteuid().as_raw(),
            passwd: PathBuf::from("/etc/passwd"),
            active: ActiveGroups::default(),
            sandbox_env: Default::default(),
        }
    }
}

/// The set of live exec process groups.
#[derive(Clone, Default)]
pub struct ActiveGroups(Arc<Mutex<HashSet<i32>>>);

impl ActiveGroups {
    pub fn register(&self, pgid: i32) -> GroupRegistration {
        if let Ok(mut s) = self.0.lock() {
            s.insert(pgid);
        }
        GroupRegistration {
            groups: self.clone(),
            pgid,
        }
    }

    /// SIGKILLs every registered group (agent shutdown).
    pub fn kill_all(&self) {
        let groups: Vec<i32> = match self.0.lock() {
            Ok(s) => s.iter().copied().collect(),
            Err(_) => return,
        };
        for g in groups {
            kill_group(g, Signal::SIGKILL);
        }
    }
}

/// Unregisters its group when dropped.
pub struct GroupRegistration {
    groups: ActiveGroups,
    pgid: i32,
}

impl Drop for GroupRegistration {
    fn drop(&mut self) {
        if let Ok(mut s) = self.groups.0.lock() {
            s.remove(&self.pgid);
        }
    }
}

/// Sends `sig` to process group `pgid`, ignoring "no such process".
pub fn kill_group(pgid: i32, sig: Signal) {
    if pgid <= 1 {
        return; // never signal our own group or everything
    }
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, signal = %sig, error = %e, "killpg failed"),
    }
}

/// Exit code / signal of a finished process.
pub fn split_status(st: &std::process::ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (st.code(), st.signal())
}

/// Everything needed to start a command; shared by exec and services.
pub struct CommandParts<'a> {
    pub argv: Vec<String>,
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
    pub user: Option<&'a str>,
    /// Start from the sandbox's own environment (`PUT /v1/env`): true for commands,
    /// false for services, which get exactly what their spec names.
    pub sandbox_env: bool,
}

/// Builds a command that runs in its own process group, with the agent's environment plus
/// `env` (minus the agent token), in `cwd` (default: the first root), as `user`.
pub fn build_command(ctx: &ProcessContext, parts: CommandParts<'_>) -> ApiResult<Command> {
    let argv = parts.argv;
    let Some(program) = argv.first() else {
        return Err(ApiError::invalid("command: argv must not be empty"));
    };
    if program.is_empty() {
        return Err(ApiError::invalid("command: the program name is empty"));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid(
            "command: arguments must not contain NUL bytes",
        ));
    }
    for (k, v) in parts.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(ApiError::invalid(format!(
                "env: invalid variable name {k:?}"
            )));
        }
        if v.contains('\0') {
            return Err(ApiError::invalid(format!(
                "env: value of {k} contains a NUL byte"
            )));
        }
    }
    let cwd = resolve_cwd(&ctx.roots, parts.cwd)?;

    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]);
    cmd.current_dir(&cwd);
    cmd.env_remove(TOKEN_ENV);
    if let Some(user) = parts.user {
        let entry = users::lookup_in(&ctx.passwd, user)
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", ctx.passwd.display())))?
            .ok_or_else(|| ApiError::invalid(format!("user: no user {user:?} in /etc/passwd")))?;
        if ctx.euid != 0 && entry.uid != ctx.euid {
            return Err(ApiError::forbidden(format!(
                "user: running commands as {user:?} needs the agent to run as root \
                 (it runs as uid {})",
                ctx.euid
            )));
        }
        if ctx.euid == 0 {
            cmd.uid(entry.uid);
            cmd.gid(entry.gid);
        }
        cmd.env("HOME", &entry.home);
        cmd.env("USER", &entry.name);
        cmd.env("LOGNAME", &entry.name);
    }
    if parts.sandbox_env {
        cmd.envs(
            ctx.sandbox_env
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter(),
        );
    }
    cmd.envs(parts.env);
    cmd.process_group(0);
    cmd.kill_on_drop(false);
    Ok(cmd)
}

/// Resolves a working directory: default the first root, relative paths against it.
pub fn resolve_cwd(roots: &Roots, cwd: Option<&str>) -> ApiResult<PathBuf> {
    let first = roots.first();
    let dir = match cwd {
        None | Some("") => first.to_path_buf(),
        Some(c) if c.contains('\0') => return Err(ApiError::invalid("cwd contains a NUL byte")),
        Some(c) if Path::new(c).is_absolute() => PathBuf::from(c),
        Some(c) => first.join(c),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(ApiError::invalid(format!(
            "cwd: {} is not a directory",
            dir.display()
        ))),
        Err(_) => Err(ApiError::invalid(format!(
            "cwd: {} does not exist",
            dir.display()
        ))),
    }
}

/// Exit code a shell would report for a command that could not be started.
pub fn spawn_failure_code(err: &std::io::Error) -> Option<i32> {
    match err.raw_os_error() {
        Some(libc::ENOENT) => Some(127),
        Some(libc::EACCES) | Some(libc::ENOEXEC) | Some(libc::EPERM) | Some(libc::ENOTDIR) => {
            Some(126)
        }
        _ => None,
    }
}
