//! One-shot command execution, collected or streamed as NDJSON [`ExecEvent`]s.

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_proto::{
    ExecEvent, ExecRequest, ExecResult, ExitStatus, DEFAULT_OUTPUT_LIMIT, DEFAULT_TIMEOUT_MS,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use nix::sys::signal::Signal;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::process::{
    build_command, kill_group, spawn_failure_code, split_status, CommandParts, GroupRegistration,
    ProcessContext,
};
use crate::utf8::Utf8Chunker;

/// How long output pipes may stay open after the command itself exited (background
/// processes holding them); what they wrote by then is kept, the rest dropped.
const DRAIN_GRACE: Duration = Duration::from_millis(100);
const READ_BUF: usize = 32 * 1024;

/// A validated exec request, ready to spawn.
pub struct Prepared {
    cmd: Command,
    program: String,
    timeout: Duration,
    limit: u64,
    stdin: Option<Vec<u8>>,
}

pub fn prepare(ctx: &ProcessContext, req: ExecRequest) -> ApiResult<Prepared> {
    let argv = req.command.to_argv();
    let program = argv.first().cloned().unwrap_or_default();
    let cmd = build_command(
        ctx,
        CommandParts {
            argv,
            env: &req.env,
            cwd: req.cwd.as_deref(),
            user: req.user.as_deref(),
            sandbox_env: true,
        },
    )?;
    let timeout_ms = req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 {
        return Err(ApiError::invalid("timeout_ms must be positive"));
    }
    Ok(Prepared {
        cmd,
        program,
        timeout: Duration::from_millis(timeout_ms),
        limit: req.output_limit.unwrap_or(DEFAULT_OUTPUT_LIMIT),
        stdin: req.stdin.map(String::into_bytes),
    })
}

enum Spawned {
    Running(Box<Running>),
    /// Could not execute the program: reported like a shell would (127/126).
    Failed {
        code: i32,
        message: String,
    },
}

struct Running {
    child: Child,
    pgid: i32,
    _registration: GroupRegistration,
}

fn spawn(ctx: &ProcessContext, p: &mut Prepared) -> ApiResult<Spawned> {
    p.cmd
        .stdin(if p.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match p.cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return match spawn_failure_code(&e) {
                Some(code) => Ok(Spawned::Failed {
                    code,
                    message: format!("atelier-agent: cannot execute {}: {e}\n", p.program),
                }),
                None => Err(ApiError::internal(format!(
                    "cannot start {}: {e}",
                    p.program
                ))),
            }
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    if let (Some(data), Some(mut stdin)) = (p.stdin.take(), child.stdin.take()) {
        tokio::spawn(async move {
            // EPIPE when the command does not read its input is fine.
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    Ok(Spawned::Running(Box::new(Running {
        child,
        pgid: pid,
        _registration: ctx.active.register(pid),
    })))
}

/// Waits for the child, killing its whole group on timeout or cancellation.
/// Returns the exit status and whether the timeout fired.
async fn wait_child(
    r: &mut Running,
    timeout: Duration,
    cancel: Option<&CancellationToken>,
) -> ApiResult<(std::process::ExitStatus, bool)> {
    let cancelled = async {
        match cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    // If this future is dropped (the client went away), kill the group.
    let mut on_drop = KillGroupOnDrop {
        pgid: r.pgid,
        armed: true,
    };
    // The leader is not reaped until `wait` returns, so its pgid cannot be reused while we
    // might still signal it.
    let (res, timed_out) = tokio::select! {
        biased;
        st = r.child.wait() => (st, false),
        _ = tokio::time::sleep(timeout) => {
            kill_group(r.pgid, Signal::SIGKILL);
            (r.child.wait().await, true)
        }
        _ = cancelled => {
            tracing::info!(pgid = r.pgid, "client went away; killing the exec's process group");
            kill_group(r.pgid, Signal::SIGKILL);
            (r.child.wait().await, false)
        }
    };
    on_drop.armed = false;
    let st = res.map_err(|e| ApiError::internal(format!("waiting for the command: {e}")))?;
    Ok((st, timed_out))
}

struct KillGroupOnDrop {
    pgid: i32,
    armed: bool,
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                pgid = self.pgid,
                "exec abandoned; killing its process group"
            );
            kill_group(self.pgid, Signal::SIGKILL);
        }
    }
}

/// Waits for both drain tasks, giving them [`DRAIN_GRACE`] before stopping them.
async fn finish_drains<T: Default>(
    a: JoinHandle<T>,
    b: JoinHandle<T>,
    stop: &CancellationToken,
) -> (T, T) {
    let both = async { (a.await.unwrap_or_default(), b.await.unwrap_or_default()) };
    tokio::pin!(both);
    match tokio::time::timeout(DRAIN_GRACE, &mut both).await {
        Ok(r) => r,
        Err(_) => {
            stop.cancel();
            both.await
        }
    }
}

/// Reads `r` to the end (or until `stop`), keeping at most `limit` bytes.
async fn collect<R: AsyncRead + Unpin>(
    mut r: R,
    limit: u64,
    stop: CancellationToken,
) -> (Vec<u8>, bool) {
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::new();
    let mut truncated = false;
    loop {
        let n = tokio::select! {
            res = r.read(&mut buf) => match res {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let room = limit.saturating_sub(out.len() as u64);
        let take = (n as u64).min(room) as usize;
        out.extend_from_slice(&buf[..take]);
        if take < n {
            truncated = true; // keep draining so the child never blocks on a full pipe
        }
    }
    (out, truncated)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a command to completion and returns its collected output.
pub async fn run_collect(ctx: &ProcessContext, mut p: Prepared) -> ApiResult<ExecResult> {
    let started = Instant::now();
    let mut running = match spawn(ctx, &mut p)? {
        Spawned::Failed { code, message } => {
            return Ok(ExecResult {
                status: failed_status(code, started),
                stdout: String::new(),
                stderr: message,
            })
        }
        Spawned::Running(r) => r,
    };
    let stop = CancellationToken::new();
    let out = spawn_collect(running.child.stdout.take(), p.limit, &stop);
    let err = spawn_collect(running.child.stderr.take(), p.limit, &stop);
    let (st, timed_out) = wait_child(&mut running, p.timeout, None).await?;
    let ((stdout, stdout_truncated), (stderr, stderr_truncated)) =
        finish_drains(out, err, &stop).await;
    let (exit_code, signal) = split_status(&st);
    Ok(ExecResult {
        status: ExitStatus {
            exit_code,
            signal,
            timed_out,
            duration_ms: ms(started.elapsed()),
            stdout_truncated,
            stderr_truncated,
        },
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn spawn_collect<R: AsyncRead + Unpin + Send + 'static>(
    r: Option<R>,
    limit: u64,
    stop: &CancellationToken,
) -> JoinHandle<(Vec<u8>, bool)> {
    let stop = stop.clone();
    tokio::spawn(async move {
        match r {
            Some(r) => collect(r, limit, stop).await,
            None => (Vec::new(), false),
        }
    })
}

fn failed_status(code: i32, started: Instant) -> ExitStatus {
    ExitStatus {
        exit_code: Some(code),
        signal: None,
        timed_out: false,
        duration_ms: ms(started.elapsed()),
        stdout_truncated: false,
        stderr_truncated: false,
    }
}

fn event_line(ev: &ExecEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}

#[derive(Clone, Copy)]
enum Which {
    Stdout,
    Stderr,
}

impl Which {
    fn event(self, data: String) -> ExecEvent {
        match self {
            Self::Stdout => ExecEvent::Stdout { data },
            Self::Stderr => ExecEvent::Stderr { data },
        }
    }
}

/// Forwards `r` as events, at most `limit` bytes, never splitting a UTF-8 character.
async fn stream_drain<R: AsyncRead + Unpin>(
    mut r: R,
    which: Which,
    limit: u64,
    tx: mpsc::Sender<Bytes>,
    stop: CancellationToken,
) -> bool {
    let mut buf = vec![0u8; READ_BUF];
    let mut dec = Utf8Chunker::new();
    let mut emitted: u64 = 0;
    let mut truncated = false;
    let send = |data: String| {
        let tx = tx.clone();
        let stop = stop.clone();
        async move {
            if data.is_empty() {
                return;
            }
            let line = event_line(&which.event(data));
            tokio::select! {
                _ = tx.send(line) => {}
                _ = stop.cancelled() => {}
            }
        }
    };
    loop {
        let n = tokio::select! {
            res = r.read(&mut buf) => match res {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let room = limit.saturating_sub(emitted);
        let take = (n as u64).min(room) as usize;
        if take > 0 {
            emitted += take as u64;
            send(dec.push(&buf[..take])).await;
        }
        if take < n && !truncated {
            truncated = true;
            send(dec.finish()).await;
        }
    }
    send(dec.finish()).await;
    truncated
}

/// Starts a command and returns its NDJSON event stream. Dropping the stream before the
/// `exit` event (client disconnect) kills the command's process group.
pub async fn run_stream(
    ctx: Arc<ProcessContext>,
    mut p: Prepared,
) -> ApiResult<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static> {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let cancel = CancellationToken::new();
    match spawn(&ctx, &mut p)? {
        Spawned::Failed { code, message } => {
            let _ = tx.try_send(event_line(&ExecEvent::Stderr { data: message }));
            let _ = tx.try_send(event_line(&ExecEvent::Exit(failed_status(code, started))));
        }
        Spawned::Running(mut running) => {
            let stop = CancellationToken::new();
            let out = running.child.stdout.take().map(|r| {
                tokio::spawn(stream_drain(
                    r,
                    Which::Stdout,
                    p.limit,
                    tx.clone(),
                    stop.clone(),
                ))
            });
            let err = running.child.stderr.take().map(|r| {
                tokio::spawn(stream_drain(
                    r,
                    Which::Stderr,
                    p.limit,
                    tx.clone(),
                    stop.clone(),
                ))
            });
            let cancel = cancel.clone();
            let timeout = p.timeout;
            tokio::spawn(async move {
                let res = wait_child(&mut running, timeout, Some(&cancel)).await;
                let out = out.unwrap_or_else(|| tokio::spawn(async { false }));
                let err = err.unwrap_or_else(|| tokio::spawn(async { false }));
                let (stdout_truncated, stderr_truncated) = finish_drains(out, err, &stop).await;
                let line = match res {
                    Ok((st, timed_out)) => {
                        let (exit_code, signal) = split_status(&st);
                        event_line(&ExecEvent::Exit(ExitStatus {
                            exit_code,
                            signal,
                            timed_out,
                            duration_ms: ms(started.elapsed()),
                            stdout_truncated,
                            stderr_truncated,
                        }))
                    }
                    Err(e) => {
                        tracing::error!(error = ?e.body, "exec stream: wait failed");
                        event_line(&ExecEvent::Exit(ExitStatus {
                            exit_code: None,
                            signal: None,
                            timed_out: false,
                            duration_ms: ms(started.elapsed()),
                            stdout_truncated,
                            stderr_truncated,
                        }))
                    }
                };
                let _ = tx.send(line).await;
                drop(running);
            });
        }
    }
    let guard = cancel.drop_guard();
    Ok(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(move |b| {
            let _keep = &guard;
            Ok(b)
        }),
    )
}
