//! Test harness: starts the real `atelier-agent` binary and drives it.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use atelier_agent_client::AgentClient;
use atelier_proto::{AgentAddr, LISTENING_BANNER, TOKEN_ENV};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

pub const TOKEN: &str = "test-token-0123456789";
pub const BIN: &str = env!("CARGO_BIN_EXE_atelier-agent");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
}

/// A running agent in a temp dir: root at `<tmp>/root`, state at `<tmp>/state`.
pub struct Agent {
    pub child: Child,
    pub addr: AgentAddr,
    pub client: AgentClient,
    /// Canonical path of the (first) root.
    pub root: PathBuf,
    pub state: PathBuf,
    pub dir: tempfile::TempDir,
    /// SIGTERM on drop (false when wrapped, e.g. by `unshare`, which ignores SIGTERM).
    graceful: bool,
    _stdout: BufReader<ChildStdout>,
}

impl Agent {
    pub async fn start(t: Transport) -> Agent {
        Self::start_with(t, &[])
            .await
            .unwrap_or_else(|e| panic!("starting the agent: {e}"))
    }

    /// Starts the agent, with `prefix` (e.g. `unshare …`) in front of the binary.
    pub async fn start_with(t: Transport, prefix: &[&str]) -> Result<Agent, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let listen = match t {
            Transport::Tcp => "tcp:127.0.0.1:0".to_string(),
            Transport::Unix => format!("unix:{}", dir.path().join("agent.sock").display()),
        };
        let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        argv.push(BIN.to_string());
        argv.extend(
            [
                "--listen",
                &listen,
                "--root",
                root.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
            ]
            .map(String::from),
        );
        let stderr = std::fs::File::create(dir.path().join("agent.stderr")).unwrap();
        // An empty home, so a terminal's login shell reads no profile of the user running
        // the tests (nor runs what that profile starts).
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env(TOKEN_ENV, TOKEN)
            .env("HOME", &home)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawning {argv:?}: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut line)).await;
        let errors =
            || std::fs::read_to_string(dir.path().join("agent.stderr")).unwrap_or_default();
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                let _ = child.start_kill();
                return Err(format!("no banner from {argv:?}; stderr:\n{}", errors()));
            }
        }
        let addr_s = line
            .trim_end()
            .strip_prefix(&format!("{LISTENING_BANNER} "))
            .ok_or_else(|| format!("bad banner line {line:?}"))?;
        let addr: AgentAddr = addr_s.parse()?;
        match (&addr, t) {
            (AgentAddr::Tcp(sa), Transport::Tcp) => assert_ne!(sa.port(), 0, "real port"),
            (AgentAddr::Unix(_), Transport::Unix) => {}
            other => panic!("unexpected banner address {other:?}"),
        }
        let client = AgentClient::new(addr.clone(), TOKEN);
        Ok(Agent {
            child,
            addr,
            client,
            root: std::fs::canonicalize(&root).unwrap(),
            state,
            dir,
            graceful: prefix.is_empty(),
            _stdout: stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.stderr")).unwrap_or_default()
    }

    /// The root-relative path as an absolute string.
    pub fn abs(&self, rel: &str) -> String {
        self.root.join(rel).to_string_lossy().into_owned()
    }

    /// SIGTERM, then wait up to `within` for the exit status.
    pub async fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Graceful first, so services and execs do not outlive the test.
        if !self.graceful {
            // `unshare --kill-child`: killing it tears down the whole namespace.
            let _ = self.child.start_kill();
            return;
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            let until = Instant::now() + Duration::from_secs(7);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.start_kill();
        }
    }
}

/// Polls `f` until it yields `Some`, panicking with `what` after `within`.
pub async fn poll<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= until {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Process state letter from /proc/<pid>/stat, None when the process does not exist.
pub fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.chars().next()
}

/// Dead: gone, or a zombie nobody reaped yet (outside our control in the test host).
pub fn proc_dead(pid: u32) -> bool {
    matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Sends raw bytes on a fresh connection and returns everything read until EOF.
pub async fn raw_request(addr: &AgentAddr, request: &[u8]) -> String {
    let mut out = Vec::new();
    match addr {
        AgentAddr::Tcp(sa) => {
            let mut s = tokio::net::TcpStream::connect(sa).await.unwrap();
            s.write_all(request).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        }
        AgentAddr::Unix(p) => {
            let mut s = tokio::net::UnixStream::connect(p).await.unwrap();
            s.write_all(request).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        }
        other => panic!("raw_request over {other}"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code and body of a raw HTTP/1.1 response.
pub fn split_response(resp: &str) -> (u16, String) {
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

pub fn write_file(path: &Path, data: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, data).unwrap();
}
