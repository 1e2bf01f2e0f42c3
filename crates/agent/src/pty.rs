//! Interactive shells under pseudo-terminals, served as WebSockets (`GET /v1/terminal`).
//!
//! Binary frames carry terminal bytes both ways; text frames carry JSON control messages
//! ([`TerminalClientMessage`] in, [`TerminalServerMessage`] out). A session outlives its
//! WebSocket: when the client goes away the shell keeps running, detached, for
//! [`DETACHED_TTL`], and the last [`REPLAY_BYTES`] of its output are replayed to whoever
//! reattaches with the session id. One client is attached at a time; a new attachment
//! takes the session over and the previous socket is closed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use atelier_proto::{
    valid_terminal_session, TerminalClientMessage, TerminalServerMessage, TERMINAL_SIZE_RANGE,
    TOKEN_ENV,
};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::Q;
use crate::error::{ApiError, ApiResult};
use crate::files::Roots;
use crate::process::{kill_group, resolve_cwd, ActiveGroups, GroupRegistration, SandboxEnv};
use crate::users;

/// How long a shell nobody is attached to keeps running.
pub const DETACHED_TTL: Duration = Duration::from_secs(5 * 60);
/// Recent output kept per session and replayed on reattach.
pub const REPLAY_BYTES: usize = 64 * 1024;
/// Output chunks queued towards a client before the shell is slowed down.
const CLIENT_QUEUE: usize = 64;
/// After the shell exits, output still arriving (from its background jobs) is forwarded
/// until the terminal has been quiet this long.
const EXIT_DRAIN: Duration = Duration::from_millis(200);
/// Time between the hangup signal and SIGKILL when a session expires.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

/// The live terminal sessions of one agent.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    active: ActiveGroups,
    /// The sandbox's environment (its workspace's secrets…), which every new shell gets.
    sandbox_env: SandboxEnv,
    /// The file roots: a shell's working directory is resolved against the first.
    roots: Arc<Roots>,
    detached_ttl: Duration,
    /// The shells' home when not the agent user's own (tests: a login shell must not
    /// read the profile of whoever runs them).
    home: Option<PathBuf>,
    me: Weak<Sessions>,
}

struct Session {
    id: String,
    /// The shell's pid, which is also its process group (it leads its own session).
    pid: i32,
    input: tokio::sync::Mutex<pty_process::OwnedWritePty>,
    shared: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    replay: VecDeque<u8>,
    exit: Option<i32>,
    /// Bumped by every attachment; a detach or an expiry only acts on its own generation.
    generation: u64,
    attached: Option<Client>,
}

struct Client {
    generation: u64,
    events: mpsc::Sender<Event>,
    /// Cancelled when another client takes the session over.
    kicked: CancellationToken,
}

enum Event {
    Output(Bytes),
    Exit(i32),
}

/// One client's hold on a session; detaches when dropped.
pub struct Attachment {
    session: Arc<Session>,
    sessions: Arc<Sessions>,
    generation: u64,
    events: mpsc::Receiver<Event>,
    kicked: CancellationToken,
    /// Output recorded before this attachment (empty for a new shell).
    replay: Bytes,
    resumed: bool,
}

impl Attachment {
    pub fn session_id(&self) -> &str {
        &self.session.id
    }

    pub fn resumed(&self) -> bool {
        self.resumed
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.sessions.detach(&self.session, self.generation);
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    pub fn new(active: ActiveGroups, sandbox_env: SandboxEnv, roots: Arc<Roots>) -> Arc<Self> {
        Self::with_ttl(active, sandbox_env, roots, DETACHED_TTL)
    }

    /// Like [`new`](Self::new) with another lifetime for detached sessions.
    pub fn with_ttl(
        active: ActiveGroups,
        sandbox_env: SandboxEnv,
        roots: Arc<Roots>,
        detached_ttl: Duration,
    ) -> Arc<Self> {
        Self::build(active, sandbox_env, roots, detached_ttl, None)
    }

    fn build(
        active: ActiveGroups,
        sandbox_env: SandboxEnv,
        roots: Arc<Roots>,
        detached_ttl: Duration,
        home: Option<PathBuf>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            map: Mutex::new(HashMap::new()),
            active,
            sandbox_env,
            roots,
            detached_ttl,
            home,
            me: me.clone(),
        })
    }

    fn arc(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of sessions, attached or not.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reattaches session `id` if it still exists, else starts a new shell in the home
    /// directory.
    pub async fn open(&self, cols: u16, rows: u16, id: Option<&str>) -> ApiResult<Attachment> {
        self.open_in(cols, rows, id, None).await
    }

    /// Like [`open`](Self::open); a new shell starts in `cwd` (absolute, or relative to the
    /// first root, as for commands) instead of the home directory.
    pub async fn open_in(
        &self,
        cols: u16,
        rows: u16,
        id: Option<&str>,
        cwd: Option<&str>,
    ) -> ApiResult<Attachment> {
        let me = self
            .arc()
            .ok_or_else(|| ApiError::internal("the agent is shutting down"))?;
        let existing = id.and_then(|id| self.map().get(id).cloned());
        if let Some(session) = existing {
            let attachment = me.attach(session, true);
            if let Err(e) = attachment.session.resize(cols, rows).await {
                tracing::debug!(error = %e, "resizing a reattached terminal");
            }
            return Ok(attachment);
        }
        let cwd = cwd.map(|c| resolve_cwd(&self.roots, Some(c))).transpose()?;
        let session = me.spawn(cols, rows, cwd)?;
        Ok(me.attach(session, false))
    }

    fn attach(self: &Arc<Self>, session: Arc<Session>, resumed: bool) -> Attachment {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let kicked = CancellationToken::new();
        let (generation, replay, exit) = {
            let mut shared = lock(&session.shared);
            shared.generation += 1;
            let generation = shared.generation;
            if let Some(previous) = shared.attached.take() {
                previous.kicked.cancel();
            }
            shared.attached = Some(Client {
                generation,
                events: tx.clone(),
                kicked: kicked.clone(),
            });
            let (a, b) = shared.replay.as_slices();
            let replay = Bytes::from([a, b].concat());
            (generation, replay, shared.exit)
        };
        if let Some(code) = exit {
            // Ended while detached: the client gets the replay, then the exit, and the
            // session is gone.
            let _ = tx.try_send(Event::Exit(code));
            self.map().remove(&session.id);
        }
        Attachment {
            session,
            sessions: self.clone(),
            generation,
            events: rx,
            kicked,
            replay,
            resumed,
        }
    }

    fn detach(&self, session: &Arc<Session>, generation: u64) {
        {
            let mut shared = lock(&session.shared);
            match &shared.attached {
                Some(c) if c.generation == generation => shared.attached = None,
                _ => return,
            }
        }
        let (Some(me), Ok(rt)) = (self.arc(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let session = session.clone();
        let ttl = self.detached_ttl;
        rt.spawn(async move {
            tokio::time::sleep(ttl).await;
            me.expire(&session, generation);
        });
    }

    /// Ends a session still detached since `generation`.
    fn expire(&self, session: &Arc<Session>, generation: u64) {
        {
            let shared = lock(&session.shared);
            if shared.attached.is_some() || shared.generation != generation {
                return;
            }
        }
        let removed = {
            let mut map = self.map();
            match map.get(&session.id) {
                Some(s) if Arc::ptr_eq(s, session) => map.remove(&session.id).is_some(),
                _ => false,
            }
        };
        if removed {
            tracing::info!(session = %session.id, "detached terminal expired");
            hang_up(session.pid);
        }
    }

    fn spawn(
        self: &Arc<Self>,
        cols: u16,
        rows: u16,
        cwd: Option<PathBuf>,
    ) -> ApiResult<Arc<Session>> {
        let (pty, pts) =
            pty_process::open().map_err(|e| ApiError::internal(format!("opening a pty: {e}")))?;
        pty.resize(pty_process::Size::new(rows, cols))
            .map_err(|e| ApiError::internal(format!("sizing the pty: {e}")))?;
        let shell = login_shell();
        let home = self.home.clone().unwrap_or_else(home_dir);
        let env = self
            .sandbox_env
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let child = shell_command(&shell, &home, &env)
            .current_dir(cwd.as_deref().unwrap_or(&home))
            .spawn(pts)
            .map_err(|e| ApiError::internal(format!("starting {}: {e}", shell.display())))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| ApiError::internal("the shell exited at once"))?;
        let registration = self.active.register(pid);
        let (reader, writer) = pty.into_split();
        let session = Arc::new(Session {
            id: new_session_id()?,
            pid,
            input: tokio::sync::Mutex::new(writer),
            shared: Mutex::new(Shared::default()),
        });
        self.map().insert(session.id.clone(), session.clone());
        tracing::info!(session = %session.id, pid, shell = %shell.display(), "terminal started");
        tokio::spawn(pump(
            self.clone(),
            session.clone(),
            reader,
            child,
            registration,
        ));
        Ok(session)
    }

    /// The session's shell ended with `code`.
    async fn finish(&self, session: &Arc<Session>, code: i32) {
        let client = {
            let mut shared = lock(&session.shared);
            shared.exit = Some(code);
            shared.attached.as_ref().map(|c| c.events.clone())
        };
        tracing::info!(session = %session.id, code, "terminal ended");
        if let Some(events) = client {
            if events.send(Event::Exit(code)).await.is_ok() {
                let mut map = self.map();
                if map
                    .get(&session.id)
                    .is_some_and(|s| Arc::ptr_eq(s, session))
                {
                    map.remove(&session.id);
                }
            }
        }
        // Otherwise it stays (with its exit code) until reattached or expired.
    }
}

impl Session {
    /// Records output for replay and hands it to the attached client (waiting for room:
    /// a slow client slows the shell down, as a real terminal would).
    async fn output(&self, chunk: Bytes) {
        let client = {
            let mut shared = lock(&self.shared);
            shared.replay.extend(chunk.iter().copied());
            let excess = shared.replay.len().saturating_sub(REPLAY_BYTES);
            shared.replay.drain(..excess);
            shared.attached.as_ref().map(|c| c.events.clone())
        };
        if let Some(events) = client {
            // A gone client fails the send; its own detach cleans up.
            let _ = events.send(Event::Output(chunk)).await;
        }
    }

    /// TIOCSWINSZ on the terminal (the shell gets SIGWINCH).
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), pty_process::Error> {
        let input = self.input.lock().await;
        input.resize(pty_process::Size::new(rows, cols))
    }

    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut input = self.input.lock().await;
        input.write_all(bytes).await?;
        input.flush().await
    }
}

/// Reads the terminal until the shell is gone, then reports its exit.
async fn pump(
    sessions: Arc<Sessions>,
    session: Arc<Session>,
    mut reader: pty_process::OwnedReadPty,
    mut child: tokio::process::Child,
    _registration: GroupRegistration,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut exit: Option<i32> = None;
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                // EIO: every process holding the terminal has closed it.
                Ok(0) | Err(_) => break,
                Ok(n) => session.output(Bytes::copy_from_slice(&buf[..n])).await,
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status.map(|s| exit_code(&s)).unwrap_or(255));
            }
            _ = tokio::time::sleep(EXIT_DRAIN), if exit.is_some() => break,
        }
    }
    let code = match exit {
        Some(c) => c,
        None => child.wait().await.map(|s| exit_code(&s)).unwrap_or(255),
    };
    // What is left of the shell's session (background jobs) gets the hangup a closing
    // terminal would give it.
    kill_group(session.pid, Signal::SIGHUP);
    sessions.finish(&session, code).await;
}

/// SIGHUP the shell's group, SIGKILL it a little later.
fn hang_up(pgid: i32) {
    kill_group(pgid, Signal::SIGHUP);
    kill_group(pgid, Signal::SIGCONT);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            tokio::time::sleep(HANGUP_GRACE).await;
            kill_group(pgid, Signal::SIGKILL);
        });
    }
}

/// A shell-style exit code: the code, or 128 + the signal that ended it.
fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// `/bin/bash` if present, else `/bin/sh`.
fn login_shell() -> PathBuf {
    let bash = Path::new("/bin/bash");
    if bash.is_file() {
        bash.to_path_buf()
    } else {
        PathBuf::from("/bin/sh")
    }
}

/// The agent user's home: `$HOME` when it names a real directory other than `/` (the
/// local driver points it at the sandbox), else the passwd entry's, else `/`.
fn home_dir() -> PathBuf {
    let from_env = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h != Path::new("/") && h.is_dir());
    if let Some(h) = from_env {
        return h;
    }
    passwd_entry()
        .map(|e| PathBuf::from(e.home))
        .filter(|h| h.is_absolute() && h.is_dir())
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn passwd_entry() -> Option<users::PasswdEntry> {
    let uid = nix::unistd::geteuid().as_raw();
    users::lookup(&uid.to_string()).ok().flatten()
}

/// The shell, as a login shell, in a login-like environment with the sandbox's own
/// (`env`) on top.
fn shell_command(
    shell: &Path,
    home: &Path,
    env: &BTreeMap<String, String>,
) -> pty_process::Command {
    let name = shell
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sh".into());
    let entry = passwd_entry();
    let user = entry
        .as_ref()
        .map(|e| e.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into());
    let path = std::env::var("PATH")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    pty_process::Command::new(shell)
        // A leading dash makes both bash and sh read the login profile.
        .arg0(format!("-{name}"))
        .env_remove(TOKEN_ENV)
        .env("TERM", "xterm-256color")
        .env("HOME", home)
        .env("USER", &user)
        .env("LOGNAME", &user)
        .env("SHELL", shell)
        .env("PATH", path)
        .env(
            "LANG",
            std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".into()),
        )
        .envs(env)
        .current_dir(home)
}

/// 16 random bytes in hex, from the kernel.
fn new_session_id() -> ApiResult<String> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ApiError::internal(format!("getrandom: {e}")));
        }
        filled += n as usize;
    }
    Ok(atelier_proto::to_hex(&bytes))
}

#[derive(Deserialize)]
pub struct TerminalQuery {
    cols: Option<String>,
    rows: Option<String>,
    session: Option<String>,
    /// Where a new shell starts (default: the home directory).
    cwd: Option<String>,
}

fn size_param(name: &str, value: Option<&str>) -> ApiResult<u16> {
    let value = value.ok_or_else(|| ApiError::invalid(format!("{name}: required")))?;
    value
        .parse::<u16>()
        .ok()
        .filter(|v| TERMINAL_SIZE_RANGE.contains(v))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{name}: must be a whole number from {} to {}, not {value:?}",
                TERMINAL_SIZE_RANGE.start(),
                TERMINAL_SIZE_RANGE.end()
            ))
        })
}

/// `GET /v1/terminal?cols=&rows=&session=`: a shell over a WebSocket.
pub async fn terminal_h(
    State(sessions): State<Arc<Sessions>>,
    Q(q): Q<TerminalQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let cols = size_param("cols", q.cols.as_deref())?;
    let rows = size_param("rows", q.rows.as_deref())?;
    let session = q.session.filter(|s| !s.is_empty());
    if session
        .as_deref()
        .is_some_and(|s| !valid_terminal_session(s))
    {
        return Err(ApiError::invalid(
            "session: must be 1–64 of A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    let ws = ws.map_err(|rej| ApiError::new(rej.status(), "upgrade_required", rej.body_text()))?;
    let cwd = q.cwd.filter(|c| !c.is_empty());
    let attachment = sessions
        .open_in(cols, rows, session.as_deref(), cwd.as_deref())
        .await?;
    Ok(ws.on_upgrade(move |socket| serve_attachment(socket, attachment)))
}

/// Relays one client's socket to its session until either side ends.
async fn serve_attachment(socket: WebSocket, mut attachment: Attachment) {
    let (mut sink, mut stream) = socket.split();
    let hello = TerminalServerMessage::Session {
        id: attachment.session.id.clone(),
        resumed: attachment.resumed,
    };
    if sink.send(control(&hello)).await.is_err() {
        return;
    }
    let replay = std::mem::take(&mut attachment.replay);
    if !replay.is_empty() && sink.send(Message::Binary(replay)).await.is_err() {
        return;
    }
    let session = attachment.session.clone();
    let kicked = attachment.kicked.clone();
    let events = &mut attachment.events;
    let output = async {
        while let Some(event) = events.recv().await {
            match event {
                Event::Output(bytes) => {
                    if sink.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                Event::Exit(code) => {
                    let _ = sink
                        .send(control(&TerminalServerMessage::Exit { code }))
                        .await;
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: 1000,
                            reason: "the shell exited".into(),
                        })))
                        .await;
                    return;
                }
            }
        }
    };
    let input = async {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(bytes) => {
                    if let Err(e) = session.write(&bytes).await {
                        tracing::debug!(error = %e, "writing to the terminal");
                        return;
                    }
                }
                Message::Text(text) => match serde_json::from_str::<TerminalClientMessage>(&text) {
                    Ok(TerminalClientMessage::Resize { cols, rows })
                        if TERMINAL_SIZE_RANGE.contains(&cols)
                            && TERMINAL_SIZE_RANGE.contains(&rows) =>
                    {
                        if let Err(e) = session.resize(cols, rows).await {
                            tracing::debug!(error = %e, "resizing the terminal");
                        }
                    }
                    Ok(TerminalClientMessage::Resize { cols, rows }) => {
                        tracing::debug!(cols, rows, "ignoring an out-of-range resize");
                    }
                    Err(e) => tracing::debug!(error = %e, "ignoring a malformed control message"),
                },
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
        _ = kicked.cancelled() => {}
    }
}

fn control(msg: &TerminalServerMessage) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .unwrap_or_else(|_| "{}".into())
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_by_name() {
        assert_eq!(size_param("cols", Some("80")).unwrap(), 80);
        for bad in ["0", "1001", "-1", "x", ""] {
            let e = size_param("rows", Some(bad)).unwrap_err();
            assert!(e.body.error.message.starts_with("rows:"), "{bad}");
        }
        assert!(size_param("cols", None).is_err());
    }

    #[test]
    fn exit_codes_read_like_a_shell() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(&std::process::ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(&std::process::ExitStatus::from_raw(9)), 137);
    }

    #[tokio::test]
    async fn a_detached_session_expires_and_its_shell_is_hung_up() {
        let sessions = in_empty_home(
            ActiveGroups::default(),
            Default::default(),
            slash(),
            Duration::from_millis(300),
        );
        let attachment = sessions.open(80, 24, None).await.unwrap();
        let id = attachment.session_id().to_owned();
        let pid = attachment.session.pid;
        assert_eq!(sessions.len(), 1);
        drop(attachment);
        // Still there right after the detach…
        assert_eq!(sessions.len(), 1);
        let gone = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(sessions.is_empty() && gone(pid)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the session did not expire"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // …and a fresh shell for its id afterwards.
        let next = sessions.open(80, 24, Some(&id)).await.unwrap();
        assert!(!next.resumed());
        assert_ne!(next.session_id(), id);
    }

    /// Sessions whose shells start in an empty home, so the login profile of the user
    /// running the tests (and whatever it starts) stays out of them.
    fn in_empty_home(
        active: ActiveGroups,
        sandbox_env: SandboxEnv,
        roots: Arc<Roots>,
        detached_ttl: Duration,
    ) -> Arc<Sessions> {
        let home = std::env::temp_dir().join("atelier-pty-test-home");
        std::fs::create_dir_all(&home).unwrap();
        Sessions::build(active, sandbox_env, roots, detached_ttl, Some(home))
    }

    fn slash() -> Arc<Roots> {
        Arc::new(Roots::new(&[PathBuf::from("/")]).unwrap())
    }

    #[tokio::test]
    async fn a_new_shell_starts_where_it_is_asked_to_and_nowhere_missing() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Arc::new(Roots::new(&[dir.path().to_path_buf()]).unwrap());
        std::fs::create_dir(dir.path().join("workspace")).unwrap();
        let sessions = in_empty_home(
            ActiveGroups::default(),
            Default::default(),
            roots,
            DETACHED_TTL,
        );
        let e = sessions
            .open_in(80, 24, None, Some("missing"))
            .await
            .err()
            .expect("a missing directory is refused");
        assert!(
            e.body.error.message.contains("does not exist"),
            "{}",
            e.body.error.message
        );
        let mut attachment = sessions
            .open_in(80, 24, None, Some("workspace"))
            .await
            .unwrap();
        attachment
            .session
            .input
            .lock()
            .await
            .write_all(b"echo \"[$(pwd)]\"; exit 0\n")
            .await
            .unwrap();
        let want = format!("[{}]", dir.path().join("workspace").display());
        let mut output = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !output.contains(&want) {
            match tokio::time::timeout_at(deadline, attachment.events.recv()).await {
                Ok(Some(Event::Output(b))) => output.push_str(&String::from_utf8_lossy(&b)),
                Ok(Some(Event::Exit(_))) | Ok(None) | Err(_) => break,
            }
        }
        assert!(output.contains(&want), "{output}");
    }

    #[tokio::test]
    async fn a_new_shell_gets_the_sandbox_environment() {
        let env: SandboxEnv = Default::default();
        let sessions = in_empty_home(ActiveGroups::default(), env.clone(), slash(), DETACHED_TTL);
        env.write()
            .unwrap()
            .insert("ATELIER_TEST_SECRET".into(), "s3cr3t-value".into());
        let mut attachment = sessions.open(80, 24, None).await.unwrap();
        attachment
            .session
            .input
            .lock()
            .await
            .write_all(b"echo \"[$ATELIER_TEST_SECRET]\"; exit 0\n")
            .await
            .unwrap();
        let mut output = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !output.contains("[s3cr3t-value]") {
            match tokio::time::timeout_at(deadline, attachment.events.recv()).await {
                Ok(Some(Event::Output(b))) => output.push_str(&String::from_utf8_lossy(&b)),
                Ok(Some(Event::Exit(_))) | Ok(None) | Err(_) => break,
            }
        }
        assert!(output.contains("[s3cr3t-value]"), "{output}");
    }

    #[test]
    fn session_ids_are_random_hex() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(valid_terminal_session(&a));
        assert_ne!(a, b);
    }
}
