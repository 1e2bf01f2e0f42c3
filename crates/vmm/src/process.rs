//! Host processes identified by pid *and* start time, and signalling of whole sessions.
//!
//! Sandbox processes are started in a session of their own (`setsid`), so they survive
//! the manager and everything they spawn can be found and stopped together.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The start time of `pid` (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).and_then(|f| f.get(19).and_then(|s| s.parse().ok()))
}

/// The session id of `pid` (field 6 of `/proc/<pid>/stat`).
pub fn session_of(pid: u32) -> Option<u32> {
    stat_fields(pid).and_then(|f| f.get(3).and_then(|s| s.parse().ok()))
}

/// The state letter of `pid` (`R`, `S`, `T`, `Z`…).
pub fn state_of(pid: u32) -> Option<char> {
    stat_fields(pid).and_then(|f| f.first().and_then(|s| s.chars().next()))
}

/// Fields of `/proc/<pid>/stat` after the command name (which may contain spaces),
/// starting with field 3 (state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// True when `pid` runs and started at `start` (a zombie counts as gone).
pub fn is_same_process(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start) && !matches!(state_of(pid), Some('Z') | Some('X') | None)
}

/// Every live process whose session is `sid`.
pub fn session_members(sid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| session_of(*p) == Some(sid))
        .collect()
}

/// Every pid on the host.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The command line of `pid`, arguments split.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pids whose command line mentions a path inside `dir`.
pub fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    all_pids()
        .into_iter()
        .filter(|p| cmdline(*p).iter().any(|a| a.starts_with(&needle)))
        .collect()
}

/// Stops the whole session `pid` belongs to — unless that is our own session, in which
/// case only `pid` itself is stopped.
pub async fn terminate_session_of(pid: u32, grace: Duration) {
    let own = session_of(std::process::id());
    match session_of(pid) {
        Some(sid) if Some(sid) != own => terminate_session(sid, grace).await,
        _ => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Stops everything a sandbox runs: the recorded process's whole session (if it is still
/// that process), then any other process whose command line names one of `dirs` (e.g. one
/// spawned just before a crash, before its pid was recorded).
pub async fn stop_sandbox_processes(
    runtime: Option<&crate::Runtime>,
    dirs: &[&Path],
    grace: Duration,
) {
    if let Some(pid) = runtime
        .filter(|rt| rt.process_alive())
        .and_then(|rt| rt.pid)
    {
        terminate_session(pid, grace).await;
    }
    let me = std::process::id();
    let mut stray: Vec<u32> = dirs
        .iter()
        .flat_map(|d| processes_using(d))
        .filter(|p| *p != me)
        .collect();
    stray.sort_unstable();
    stray.dedup();
    for pid in stray {
        terminate_session_of(pid, Duration::from_secs(2)).await;
    }
}

/// Removes the directories under `sandboxes_dir` of sandboxes not in `keep`, after
/// stopping whatever still runs from them; returns what was removed.
pub async fn sweep_sandbox_dirs(
    sandboxes_dir: &Path,
    keep: &std::collections::HashSet<atelier_core::SandboxId>,
) -> Vec<String> {
    let mut removed = vec![];
    let Ok(entries) = std::fs::read_dir(sandboxes_dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let id =
            atelier_core::SandboxId::from_trusted(entry.file_name().to_string_lossy().into_owned());
        if keep.contains(&id) {
            continue;
        }
        stop_sandbox_processes(None, &[&entry.path()], Duration::from_secs(2)).await;
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed.push(format!("directory {}", entry.path().display())),
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a leftover")
            }
        }
    }
    removed
}

/// Sends `signal` to every process of the session led by `sid`.
pub fn signal_session(sid: u32, signal: Signal) {
    for pid in session_members(sid) {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

/// Stops a session: SIGTERM, then SIGKILL to whatever is left after `grace`. Returns
/// once no member of the session remains (or after a hard deadline).
pub async fn terminate_session(sid: u32, grace: Duration) {
    // A stopped process would never act on SIGTERM.
    signal_session(sid, Signal::SIGCONT);
    signal_session(sid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if live_members(sid).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hard = Instant::now() + Duration::from_secs(5);
    while Instant::now() < hard {
        let left = live_members(sid);
        if left.is_empty() {
            return;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(sid, "processes of the session survived SIGKILL");
}

fn live_members(sid: u32) -> Vec<u32> {
    session_members(sid)
        .into_iter()
        .filter(|p| !matches!(state_of(*p), Some('Z') | Some('X') | None))
        .collect()
}

/// Makes `cmd` start in a session of its own and, with `netns`, inside that network
/// namespace (entered between fork and exec). The returned file holds the namespace
/// open: keep it until the spawn has returned.
pub fn detach_into_netns(
    cmd: &mut std::process::Command,
    netns: Option<&Path>,
) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::process::CommandExt;
    let netns_file = netns.map(std::fs::File::open).transpose()?;
    let netns_fd = netns_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: setsid and setns are async-signal-safe system calls. A session of its own
    // keeps the VM alive across manager restarts and lets its whole session be stopped
    // at once; `netns_fd` stays valid while the caller holds the returned file.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(netns_file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn identifies_this_process() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(is_same_process(me, start));
        assert!(
            !is_same_process(me, start + 1),
            "another start time is another process"
        );
        assert_eq!(
            session_of(me),
            Some(nix::unistd::getsid(None).unwrap().as_raw() as u32)
        );
    }

    #[tokio::test]
    async fn terminating_a_session_kills_its_descendants() {
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "trap '' TERM; sleep 60 & sleep 60 & wait"]);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let sid = child.id();
        let reaper = std::thread::spawn(move || child.wait());
        for _ in 0..100 {
            if session_members(sid).len() >= 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(session_members(sid).len() >= 3, "shell and two sleeps");
        terminate_session(sid, Duration::from_millis(200)).await;
        assert!(live_members(sid).is_empty());
        reaper.join().unwrap().unwrap();
    }
}
