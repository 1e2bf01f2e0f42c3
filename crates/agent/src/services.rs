//! Supervised long-running services with a restarting watchdog.
//!
//! Each service has at most one runner task. A run starts the command in its own process
//! group with stdout+stderr appended to `<state-dir>/services/<name>.log`; when the group
//! leader exits, what is left of its group is killed, and the restart policy decides
//! whether to start it again after an exponential backoff.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atelier_proto::{
    LogChunk, RestartPolicy, ServiceExit, ServiceSpec, ServiceState, ServiceStatus,
};
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::process::{build_command, kill_group, split_status, CommandParts, ProcessContext};

/// First restart delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run that lived this long resets the backoff.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Time between SIGTERM and SIGKILL when stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Default and largest log chunk.
pub const LOG_LIMIT_DEFAULT: u64 = 64 * 1024;
pub const LOG_LIMIT_MAX: u64 = 1024 * 1024;

/// Exponential restart backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    /// The delay before restarting a run that lived `lived`.
    pub fn delay(&mut self, lived: Duration) -> Duration {
        if lived >= BACKOFF_RESET_AFTER {
            self.next = BACKOFF_INITIAL;
        }
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        d
    }
}

/// Whether a run that ended with this status is restarted under `policy`.
pub fn should_restart(policy: RestartPolicy, exit_code: Option<i32>) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => exit_code != Some(0),
        RestartPolicy::Always => true,
    }
}

/// `[a-z0-9][a-z0-9_.-]{0,63}`
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct Status {
    spec: ServiceSpec,
    state: ServiceState,
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<ServiceExit>,
    started_ms: Option<i64>,
}

struct Runner {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

#[derive(Default)]
struct Control {
    runner: Option<Runner>,
    deleted: bool,
}

struct Service {
    name: String,
    log_path: PathBuf,
    status: Mutex<Status>,
    /// Serializes start/stop/replace/delete of this service.
    ctl: tokio::sync::Mutex<Control>,
}

impl Service {
    fn update(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    fn snapshot(&self) -> ApiResult<ServiceStatus> {
        let s = self
            .status
            .lock()
            .map_err(|_| ApiError::internal("service state poisoned"))?;
        Ok(ServiceStatus {
            name: self.name.clone(),
            spec: s.spec.clone(),
            state: s.state,
            pid: s.pid,
            restarts: s.restarts,
            last_exit: s.last_exit.clone(),
            started_ms: s.started_ms,
        })
    }

    fn spec(&self) -> Option<ServiceSpec> {
        self.status.lock().ok().map(|s| s.spec.clone())
    }
}

/// All services of this agent.
pub struct Supervisor {
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    log_dir: PathBuf,
    ctx: Arc<ProcessContext>,
}

impl Supervisor {
    /// `log_dir` (`<state-dir>/services`) is created if missing.
    pub fn new(log_dir: PathBuf, ctx: Arc<ProcessContext>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&log_dir)?;
        Ok(Self {
            services: Mutex::new(BTreeMap::new()),
            log_dir,
            ctx,
        })
    }

    fn check_name(name: &str) -> ApiResult<()> {
        if valid_name(name) {
            Ok(())
        } else {
            Err(ApiError::invalid(format!(
                "service name {name:?} must match [a-z0-9][a-z0-9_.-]{{0,63}}"
            )))
        }
    }

    fn get(&self, name: &str) -> ApiResult<Arc<Service>> {
        Self::check_name(name)?;
        self.services
            .lock()
            .map_err(|_| ApiError::internal("service table poisoned"))?
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no service named {name:?}")))
    }

    /// Defines (or replaces) a service and (re)starts it.
    pub async fn put(&self, name: &str, spec: ServiceSpec) -> ApiResult<ServiceStatus> {
        Self::check_name(name)?;
        // Validate now so a bad spec is a 4xx rather than a crash loop.
        build_command(&self.ctx, parts(&spec))?;
        loop {
            let svc = {
                let mut map = self
                    .services
                    .lock()
                    .map_err(|_| ApiError::internal("service table poisoned"))?;
                map.entry(name.to_string())
                    .or_insert_with(|| {
                        Arc::new(Service {
                            name: name.to_string(),
                            log_path: self.log_dir.join(format!("{name}.log")),
                            status: Mutex::new(Status {
                                spec: spec.clone(),
                                state: ServiceState::Stopped,
                                pid: None,
                                restarts: 0,
                                last_exit: None,
                                started_ms: None,
                            }),
                            ctl: tokio::sync::Mutex::new(Control::default()),
                        })
                    })
                    .clone()
            };
            let mut ctl = svc.ctl.lock().await;
            if ctl.deleted {
                continue; // lost a race with DELETE: define it anew
            }
            stop_runner(&svc, &mut ctl).await;
            svc.update(|s| {
                s.spec = spec.clone();
                s.restarts = 0;
            });
            start_runner(&svc, self.ctx.clone(), &mut ctl).await;
            return svc.snapshot();
        }
    }

    pub fn status(&self, name: &str) -> ApiResult<ServiceStatus> {
        self.get(name)?.snapshot()
    }

    pub fn list(&self) -> ApiResult<Vec<ServiceStatus>> {
        let all: Vec<Arc<Service>> = self
            .services
            .lock()
            .map_err(|_| ApiError::internal("service table poisoned"))?
            .values()
            .cloned()
            .collect();
        all.iter().map(|s| s.snapshot()).collect()
    }

    /// Starts a stopped or exited service; a running one is left alone.
    pub async fn start(&self, name: &str) -> ApiResult<ServiceStatus> {
        let svc = self.get(name)?;
        let mut ctl = svc.ctl.lock().await;
        if ctl.deleted {
            return Err(ApiError::not_found(format!("no service named {name:?}")));
        }
        let alive = ctl.runner.as_ref().is_some_and(|r| !r.handle.is_finished());
        if !alive {
            start_runner(&svc, self.ctx.clone(), &mut ctl).await;
        }
        svc.snapshot()
    }

    /// Stops a service: SIGTERM to its group, SIGKILL after [`STOP_GRACE`]; no restart.
    pub async fn stop(&self, name: &str) -> ApiResult<ServiceStatus> {
        let svc = self.get(name)?;
        let mut ctl = svc.ctl.lock().await;
        stop_runner(&svc, &mut ctl).await;
        svc.snapshot()
    }

    /// Stops a service, forgets it and removes its log.
    pub async fn delete(&self, name: &str) -> ApiResult<()> {
        let svc = self.get(name)?;
        if let Ok(mut map) = self.services.lock() {
            if map.get(name).is_some_and(|s| Arc::ptr_eq(s, &svc)) {
                map.remove(name);
            }
        }
        let mut ctl = svc.ctl.lock().await;
        ctl.deleted = true;
        stop_runner(&svc, &mut ctl).await;
        let _ = std::fs::remove_file(&svc.log_path);
        Ok(())
    }

    /// Stops every service (agent shutdown).
    pub async fn stop_all(&self) {
        let all: Vec<Arc<Service>> = match self.services.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return,
        };
        let stops = all.into_iter().map(|svc| async move {
            let mut ctl = svc.ctl.lock().await;
            stop_runner(&svc, &mut ctl).await;
        });
        futures::future::join_all(stops).await;
    }

    /// A slice of the service's log starting at `offset`, cut on a UTF-8 boundary.
    pub fn logs(&self, name: &str, offset: u64, limit: Option<u64>) -> ApiResult<LogChunk> {
        let svc = self.get(name)?;
        read_log(&svc.log_path, offset, limit)
    }
}

fn parts(spec: &ServiceSpec) -> CommandParts<'_> {
    CommandParts {
        argv: spec.command.to_argv(),
        env: &spec.env,
        cwd: spec.cwd.as_deref(),
        user: spec.user.as_deref(),
        // A service gets exactly the environment its spec names: a coding agent, say,
        // only the secrets its config exposes to it.
        sandbox_env: false,
    }
}

/// Reads a log chunk. Missing logs read as empty.
pub fn read_log(path: &Path, offset: u64, limit: Option<u64>) -> ApiResult<LogChunk> {
    let limit = limit.unwrap_or(LOG_LIMIT_DEFAULT).min(LOG_LIMIT_MAX);
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogChunk {
                offset: 0,
                next_offset: 0,
                size: 0,
                data: String::new(),
            })
        }
        Err(e) => return Err(ApiError::from_io(&e, path)),
    };
    let size = file
        .metadata()
        .map_err(|e| ApiError::from_io(&e, path))?
        .len();
    let start = offset.min(size);
    let want = limit.min(size - start);
    let mut data = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    if want > 0 {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| ApiError::from_io(&e, path))?;
        file.take(want)
            .read_to_end(&mut data)
            .map_err(|e| ApiError::from_io(&e, path))?;
    }
    let mut cut = crate::utf8::complete_prefix_len(&data);
    if cut == 0 && !data.is_empty() && data.len() as u64 >= limit {
        // The limit is smaller than one character: give it out lossily to make progress.
        cut = data.len();
    }
    data.truncate(cut);
    Ok(LogChunk {
        offset: start,
        next_offset: start + data.len() as u64,
        size,
        data: String::from_utf8_lossy(&data).into_owned(),
    })
}

fn append_log(path: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn spawn_service(
    ctx: &ProcessContext,
    log_path: &Path,
    spec: &ServiceSpec,
) -> Result<Child, String> {
    let mut cmd = build_command(ctx, parts(spec)).map_err(|e| e.body.error.message)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    cmd.spawn().map_err(|e| e.to_string())
}

async fn start_runner(svc: &Arc<Service>, ctx: Arc<ProcessContext>, ctl: &mut Control) {
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = oneshot::channel();
    let handle = tokio::spawn(run_loop(svc.clone(), ctx, stop.clone(), ready_tx));
    // Wait for the first spawn so the answer carries the pid.
    let _ = ready_rx.await;
    ctl.runner = Some(Runner { stop, handle });
}

async fn stop_runner(svc: &Service, ctl: &mut Control) {
    if let Some(r) = ctl.runner.take() {
        r.stop.cancel();
        if let Err(e) = r.handle.await {
            tracing::error!(service = %svc.name, error = %e, "service runner failed");
        }
    }
    svc.update(|s| {
        s.state = ServiceState::Stopped;
        s.pid = None;
    });
}

/// SIGTERM the group, SIGKILL after the grace period, then reap.
async fn terminate(child: &mut Child, pgid: i32) -> Option<std::process::ExitStatus> {
    kill_group(pgid, Signal::SIGTERM);
    let st = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(r) => r.ok(),
        Err(_) => {
            kill_group(pgid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    kill_group(pgid, Signal::SIGKILL);
    st
}

async fn run_loop(
    svc: Arc<Service>,
    ctx: Arc<ProcessContext>,
    stop: CancellationToken,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = Backoff::default();
    loop {
        let Some(spec) = svc.spec() else { return };
        let started = Instant::now();
        let (exit_code, signal) = match spawn_service(&ctx, &svc.log_path, &spec) {
            Ok(mut child) => {
                let pid = child.id();
                let pgid = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
                svc.update(|s| {
                    s.state = ServiceState::Running;
                    s.pid = pid;
                    s.started_ms = Some(now_ms());
                });
                tracing::info!(service = %svc.name, pid = ?pid, "service started");
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                tokio::select! {
                    st = child.wait() => {
                        // The leader is gone: take the rest of its group with it.
                        kill_group(pgid, Signal::SIGKILL);
                        match st {
                            Ok(st) => split_status(&st),
                            Err(_) => (None, None),
                        }
                    }
                    _ = stop.cancelled() => {
                        let st = terminate(&mut child, pgid).await;
                        let (exit_code, signal) = st.as_ref().map(split_status).unwrap_or((None, None));
                        svc.update(|s| {
                            s.state = ServiceState::Stopped;
                            s.pid = None;
                            s.last_exit = Some(ServiceExit { exit_code, signal, at_ms: now_ms() });
                        });
                        tracing::info!(service = %svc.name, "service stopped");
                        return;
                    }
                }
            }
            Err(msg) => {
                tracing::warn!(service = %svc.name, error = %msg, "service failed to start");
                append_log(
                    &svc.log_path,
                    &format!("atelier-agent: cannot start service {}: {msg}\n", svc.name),
                );
                svc.update(|s| s.started_ms = Some(now_ms()));
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                (Some(127), None)
            }
        };
        let lived = started.elapsed();
        svc.update(|s| {
            s.pid = None;
            s.last_exit = Some(ServiceExit {
                exit_code,
                signal,
                at_ms: now_ms(),
            });
        });
        tracing::info!(service = %svc.name, ?exit_code, ?signal, "service exited");
        if !should_restart(spec.restart, exit_code) {
            svc.update(|s| s.state = ServiceState::Exited);
            return;
        }
        let delay = backoff.delay(lived);
        svc.update(|s| s.state = ServiceState::Backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {
                svc.update(|s| s.state = ServiceState::Stopped);
                return;
            }
        }
        svc.update(|s| s.restarts = s.restarts.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for ok in ["a", "web", "dev-server_1.2", "0", &"a".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            ".a",
            "A",
            "a b",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(10);
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(b.delay(short).as_millis());
        }
        assert_eq!(seen, [200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        assert_eq!(b.delay(Duration::from_secs(10)).as_millis(), 200);
        assert_eq!(b.delay(short).as_millis(), 400);
    }

    #[test]
    fn restart_policies() {
        use RestartPolicy::*;
        assert!(!should_restart(Never, Some(1)));
        assert!(should_restart(OnFailure, Some(1)));
        assert!(should_restart(OnFailure, None)); // signal
        assert!(!should_restart(OnFailure, Some(0)));
        assert!(should_restart(Always, Some(0)));
    }

    #[test]
    fn log_chunks_respect_offsets_and_char_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        assert_eq!(read_log(&p, 0, None).unwrap().size, 0);
        std::fs::write(&p, "héllo wörld").unwrap(); // é and ö are 2 bytes
        let all = read_log(&p, 0, None).unwrap();
        assert_eq!(all.data, "héllo wörld");
        assert_eq!(all.next_offset, all.size);
        // Limit 2 would cut é in half: the chunk stops before it.
        let c = read_log(&p, 0, Some(2)).unwrap();
        assert_eq!(c.data, "h");
        assert_eq!(c.next_offset, 1);
        let c = read_log(&p, c.next_offset, Some(2)).unwrap();
        assert_eq!(c.data, "é");
        let c = read_log(&p, 1000, None).unwrap();
        assert_eq!((c.offset, c.next_offset, c.data.as_str()), (13, 13, ""));
        // A limit smaller than one character still makes progress.
        let c = read_log(&p, 1, Some(1)).unwrap();
        assert_eq!(c.next_offset, 2);
        // Reassembling chunk by chunk gives the text back.
        let mut off = 0;
        let mut text = String::new();
        loop {
            let c = read_log(&p, off, Some(3)).unwrap();
            if c.next_offset == off {
                break;
            }
            text.push_str(&c.data);
            off = c.next_offset;
        }
        assert_eq!(text, "héllo wörld");
    }
}
