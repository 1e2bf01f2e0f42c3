//! Running as PID 1 (the agent as a microVM's init).
//!
//! PID 1 inherits every orphan and must reap it, but a `waitpid(-1)` loop in the agent
//! itself would race tokio's `Child::wait` and steal exit codes. So PID 1 forks: the parent
//! stays a tiny init that reaps everything, forwards SIGTERM/SIGINT to the agent and
//! restarts it if it dies abnormally; the child runs the agent, whose own children are then
//! reaped only by tokio.

use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

const RESTART_DELAY: Duration = Duration::from_millis(500);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Best effort: mount /proc when it is missing.
fn mount_proc() {
    if Path::new("/proc/self").exists() {
        return;
    }
    let _ = std::fs::create_dir_all("/proc");
    use nix::mount::{mount, MsFlags};
    if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        eprintln!("atelier-agent (init): mounting /proc failed: {e}");
    }
}

/// When this process is PID 1, becomes the init described in the module docs; returns in
/// the forked agent child (or right away when not PID 1). Must run before any thread exists.
pub fn init_if_pid1() {
    if std::process::id() != 1 {
        return;
    }
    mount_proc();
    // The kernel starts init without PATH and the initramfs hands over its own (`/bin`,
    // for busybox); commands run by name need the root filesystem's, `/usr/local` first
    // so that the image's own tools (the `dev` image's Node 22) win over the distro's.
    std::env::set_var("PATH", DEFAULT_PATH);
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    let old = match mask.thread_swap_mask(SigmaskHow::SIG_BLOCK) {
        Ok(old) => old,
        Err(e) => {
            eprintln!("atelier-agent (init): cannot block signals ({e}); running without init");
            return;
        }
    };
    loop {
        // SAFETY: called before the runtime or any other thread is started.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let _ = old.thread_set_mask();
                return;
            }
            Ok(ForkResult::Parent { child }) => {
                if let Some(code) = supervise(child, &mask) {
                    nix::unistd::sync();
                    std::process::exit(code);
                }
                eprintln!(
                    "atelier-agent (init): agent died abnormally; restarting in {RESTART_DELAY:?}"
                );
                std::thread::sleep(RESTART_DELAY);
                reap_all(None);
            }
            Err(e) => {
                eprintln!("atelier-agent (init): fork failed: {e}");
                std::thread::sleep(RESTART_DELAY);
            }
        }
    }
}

/// Reaps every zombie; returns the agent's status if it was among them.
fn reap_all(agent: Option<Pid>) -> Option<WaitStatus> {
    let mut agent_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break,
            Ok(st) => {
                if agent.is_some() && st.pid() == agent {
                    agent_status = Some(st);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: nothing left
        }
    }
    agent_status
}

/// Waits for signals until the agent exits. `Some(code)`: init exits with it; `None`:
/// restart the agent.
fn supervise(agent: Pid, mask: &SigSet) -> Option<i32> {
    let mut terminating = false;
    loop {
        if let Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) = mask.wait() {
            terminating = true;
            let _ = kill(agent, sig);
        }
        match reap_all(Some(agent)) {
            Some(WaitStatus::Exited(_, code)) if code == 0 || terminating => return Some(code),
            Some(WaitStatus::Signaled(_, sig, _)) if terminating => return Some(128 + sig as i32),
            Some(_) => return None,
            None => {}
        }
    }
}
