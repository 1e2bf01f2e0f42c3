//! Wire types between the manager and `atelier-agent`.
//!
//! The agent speaks HTTP/1.1 with JSON bodies under [`API_PREFIX`]. Every request carries
//! `Authorization: Bearer <token>` with the per-sandbox token the manager handed the agent
//! at start. Errors use the same shape as the manager's API: [`ErrorBody`].
//!
//! | method | path | body → response |
//! | --- | --- | --- |
//! | GET | `/v1/health` | → [`Health`] |
//! | POST | `/v1/exec` | [`ExecRequest`] → [`ExecResult`] |
//! | POST | `/v1/exec/stream` | [`ExecRequest`] → NDJSON lines of [`ExecEvent`] |
//! | GET | `/v1/files/content?path=` | → raw bytes |
//! | PUT | `/v1/files/content?path=&mode=` | raw bytes → [`FileStat`] (parents created; `mode` octal, e.g. `644`) |
//! | GET | `/v1/files/list?path=` | → [`DirListing`] |
//! | GET | `/v1/files/stat?path=` | → [`FileStat`] |
//! | POST | `/v1/files/mkdir?path=` | → [`FileStat`] (parents created) |
//! | DELETE | `/v1/files?path=&recursive=` | → 204 |
//! | GET | `/v1/services` | → `[`[`ServiceStatus`]`]` |
//! | PUT | `/v1/services/{name}` | [`ServiceSpec`] → [`ServiceStatus`] (defines, then (re)starts) |
//! | GET | `/v1/services/{name}` | → [`ServiceStatus`] |
//! | POST | `/v1/services/{name}/start` | → [`ServiceStatus`] |
//! | POST | `/v1/services/{name}/stop` | → [`ServiceStatus`] |
//! | DELETE | `/v1/services/{name}` | → 204 (stops and forgets) |
//! | GET | `/v1/services/{name}/logs?offset=&limit=` | → [`LogChunk`] |
//! | PUT | `/v1/clock` | [`ClockSet`] → [`ClockSet`] (guest mode only: steps the wall clock) |
//! | PUT | `/v1/identity` | [`Identity`] → [`IdentityApplied`] (guest mode only: a restored clone becomes its own machine) |
//! | GET | `/v1/terminal?cols=&rows=&session=` | WebSocket upgrade: a shell under a pseudo-terminal (see [`TerminalServerMessage`]) |
//! | GET | `/v1/tunnel/{port}` | `Upgrade: `[`TUNNEL_UPGRADE`] → raw bytes to `127.0.0.1:{port}` in the sandbox (502 if nothing listens) |
//!
//! File paths are absolute (and must lie inside one of the agent's roots) or relative to
//! its first root. `..` components and symlinks leading out of the roots are refused (403).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const API_PREFIX: &str = "/v1";
/// Environment variable the agent reads its token from when no token file is given.
pub const TOKEN_ENV: &str = "ATELIER_AGENT_TOKEN";
/// Line printed on the agent's stdout once it listens: `ATELIER_AGENT_LISTENING <addr>`.
pub const LISTENING_BANNER: &str = "ATELIER_AGENT_LISTENING";
/// Default cap on captured output per stream (stdout and stderr each).
pub const DEFAULT_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;
/// Default exec timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Error body shared with the manager's API: `{"error":{"code","message","details"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `not_found`, `invalid_value`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                details: serde_json::Value::Null,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    pub version: String,
    pub uptime_ms: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub hostname: String,
    pub pid: u32,
}

/// What to run: an argv vector (no shell), or a string run by `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    Argv(Vec<String>),
    Shell(String),
}

impl CommandLine {
    /// The program and its arguments as the agent will execute them.
    pub fn to_argv(&self) -> Vec<String> {
        match self {
            Self::Argv(v) => v.clone(),
            Self::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub command: CommandLine,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; defaults to the agent's first root.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User name to run as (needs the agent to run as root).
    #[serde(default)]
    pub user: Option<String>,
    /// Kill the process group after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bytes of stdout and of stderr kept (each); the rest is dropped and flagged.
    #[serde(default)]
    pub output_limit: Option<u64>,
    /// Bytes written to the command's stdin, which is then closed.
    #[serde(default)]
    pub stdin: Option<String>,
}

impl ExecRequest {
    pub fn argv<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(CommandLine::Argv(
            args.into_iter().map(Into::into).collect(),
        ))
    }

    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(CommandLine::Shell(script.into()))
    }

    pub fn new(command: CommandLine) -> Self {
        Self {
            command,
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            timeout_ms: None,
            output_limit: None,
            stdin: None,
        }
    }
}

/// How a finished command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExitStatus {
    /// Exit code, when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number, when the process was killed by a signal.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecResult {
    #[serde(flatten)]
    pub status: ExitStatus,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
}

/// One line of a streaming exec. Output chunks are lossy UTF-8 split on character boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    Stdout { data: String },
    Stderr { data: String },
    Exit(ExitStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileStat {
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits, e.g. 420 (0644).
    pub mode: u32,
    /// Last modification, milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirListing {
    pub path: String,
    /// Entries sorted by name.
    pub entries: Vec<FileStat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    Never,
    #[default]
    OnFailure,
    Always,
}

/// A supervised long-running process (dev server, coding agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub command: CommandLine,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// The process runs.
    Running,
    /// The process died and waits for its restart (after a backoff delay).
    Backoff,
    /// Stopped by request.
    Stopped,
    /// Exited and will not be restarted under its policy.
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    pub name: String,
    pub spec: ServiceSpec,
    pub state: ServiceState,
    pub pid: Option<u32>,
    /// How many times the watchdog restarted it.
    pub restarts: u32,
    /// How its last run ended, if it ended.
    pub last_exit: Option<ServiceExit>,
    /// When the current (or last) run started, milliseconds since the Unix epoch.
    pub started_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: i64,
}

/// A slice of a service's combined stdout+stderr log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogChunk {
    /// Byte offset of `data` in the log.
    pub offset: u64,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// Current size of the log.
    pub size: u64,
    /// Lossy UTF-8.
    pub data: String,
}

/// Where an agent listens (agent side) or how to reach it (manager side).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AgentAddr {
    /// `tcp:127.0.0.1:7000`
    Tcp(SocketAddr),
    /// `unix:/path/to/agent.sock`
    Unix(PathBuf),
    /// `vsock:<cid>:<port>` — an AF_VSOCK socket (listening inside a guest, or via vhost-vsock).
    Vsock { cid: u32, port: u32 },
    /// `fcvsock:<uds path>:<port>` — Firecracker's hybrid vsock: a Unix socket on the host,
    /// then `CONNECT <port>\n` / `OK <n>\n`.
    HybridVsock { uds: PathBuf, port: u32 },
}

impl fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Self::HybridVsock { uds, port } => write!(f, "fcvsock:{}:{port}", uds.display()),
        }
    }
}

impl FromStr for AgentAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected <scheme>:<address>"))?;
        match scheme {
            "tcp" => rest
                .parse()
                .map(Self::Tcp)
                .map_err(|e| format!("{s:?}: {e}")),
            "unix" if !rest.is_empty() => Ok(Self::Unix(rest.into())),
            "vsock" => {
                let (cid, port) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("{s:?}: expected vsock:<cid>:<port>"))?;
                Ok(Self::Vsock {
                    cid: cid.parse().map_err(|_| format!("{s:?}: bad cid"))?,
                    port: port.parse().map_err(|_| format!("{s:?}: bad port"))?,
                })
            }
            "fcvsock" => {
                let (uds, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| format!("{s:?}: expected fcvsock:<path>:<port>"))?;
                Ok(Self::HybridVsock {
                    uds: uds.into(),
                    port: port.parse().map_err(|_| format!("{s:?}: bad port"))?,
                })
            }
            _ => Err(format!(
                "{s:?}: unknown transport (tcp, unix, vsock, fcvsock)"
            )),
        }
    }
}

/// Parses a permission string written in octal (`644`, `0644`, `0o644`).
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for s in [
            "tcp:127.0.0.1:7000",
            "unix:/run/a.sock",
            "vsock:3:1024",
            "fcvsock:/srv/s/v.sock:1024",
        ] {
            let a: AgentAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        for bad in ["", "tcp:nope", "unix:", "vsock:3", "ftp:x"] {
            assert!(bad.parse::<AgentAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_serialize_as_tagged_objects() {
        let r = ExecRequest::argv(["echo", "hi"]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["command"], serde_json::json!({"argv": ["echo", "hi"]}));
        let s: ExecRequest = serde_json::from_str(r#"{"command":{"shell":"echo $HOME"}}"#).unwrap();
        assert_eq!(s.command.to_argv(), ["/bin/sh", "-c", "echo $HOME"]);
        assert!(
            serde_json::from_str::<ExecRequest>(r#"{"command":{"shell":"x"},"bogus":1}"#).is_err()
        );
    }

    #[test]
    fn exec_events_are_tagged() {
        let line = serde_json::to_string(&ExecEvent::Stdout { data: "a".into() }).unwrap();
        assert_eq!(line, r#"{"type":"stdout","data":"a"}"#);
        let exit = ExecEvent::Exit(ExitStatus {
            exit_code: Some(3),
            signal: None,
            timed_out: false,
            duration_ms: 5,
            stdout_truncated: false,
            stderr_truncated: false,
        });
        let v = serde_json::to_value(&exit).unwrap();
        assert_eq!(v["type"], "exit");
        assert_eq!(v["exit_code"], 3);
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("644"), Some(0o644));
        assert_eq!(parse_mode("0600"), Some(0o600));
        assert_eq!(parse_mode("0o755"), Some(0o755));
        assert_eq!(parse_mode("9"), None);
        assert_eq!(parse_mode("77777"), None);
    }
}

/// Wall-clock time, milliseconds since the Unix epoch: the host's when sent, the guest's
/// (after stepping) when answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockSet {
    pub epoch_ms: i64,
}

/// `PUT /v1/env`: environment every later command of the sandbox starts with (the
/// workspace's env secrets); a request's own `env` overrides it. Services are not given
/// it: they get exactly what their spec names. Replaces the previous set. Answered with
/// the names now set (never the values).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxEnv {
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Debug for SandboxEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values are secrets: only the names may reach a log.
        f.debug_struct("SandboxEnv")
            .field("names", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The answer to `PUT /v1/env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SandboxEnvSet {
    pub names: Vec<String>,
}

/// Least host randomness an [`Identity`] must carry, in bytes.
pub const IDENTITY_MIN_ENTROPY_BYTES: usize = 32;
/// Most host randomness an [`Identity`] may carry, in bytes.
pub const IDENTITY_MAX_ENTROPY_BYTES: usize = 512;

/// What makes a VM restored from a memory snapshot a distinct machine (`PUT /v1/identity`,
/// guest mode only). Every clone of one snapshot starts with the snapshot's hostname,
/// token, clock, kernel RNG state and machine id; the manager sends each clone its own.
///
/// The request is authenticated with the agent's current (the snapshot's) token; once the
/// answer is sent, only `token` is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The new host name (RFC 1123: letters, digits, `-` and `.`, at most 64 characters).
    pub hostname: String,
    /// The new bearer token (printable ASCII without spaces, 16 to 1024 characters).
    pub token: String,
    /// The host's wall clock, milliseconds since the Unix epoch (the guest steps to it).
    pub epoch_ms: i64,
    /// Fresh host randomness, hex: 32 to 512 bytes, mixed into the guest kernel's RNG
    /// (credited) before it is reseeded.
    pub entropy: String,
    /// The new `/etc/machine-id`: 32 lowercase hex digits, not all zero.
    pub machine_id: String,
}

/// The agent's answer to `PUT /v1/identity`: what the guest now says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityApplied {
    pub hostname: String,
    /// The guest's wall clock after stepping, milliseconds since the Unix epoch.
    pub epoch_ms: i64,
    /// Bytes of entropy credited to the kernel's RNG (0 if the kernel refused them).
    pub entropy_bytes: usize,
    /// Whether the kernel's CRNG was reseeded (`RNDRESEEDCRNG`), so that every clone's
    /// `/dev/urandom` diverges at once instead of at its next scheduled reseed.
    pub reseeded: bool,
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Decodes hex (either case); `None` on an odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let pairs = s.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    pairs
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

impl Identity {
    /// Checks every field; the error names the first bad one (`field: why`).
    pub fn validate(&self) -> Result<Vec<u8>, String> {
        let h = &self.hostname;
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if h.is_empty() || h.len() > 64 || !h.split('.').all(label_ok) {
            return Err(format!(
                "hostname: {h:?} is not a host name (letters, digits, '-' and '.', 1 to 64 characters)"
            ));
        }
        let t = &self.token;
        if t.len() < 16 || t.len() > 1024 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "token: must be 16 to 1024 printable ASCII characters without spaces".into(),
            );
        }
        if self.epoch_ms <= 0 {
            return Err("epoch_ms: must be after 1970".into());
        }
        let entropy = from_hex(&self.entropy)
            .ok_or_else(|| "entropy: must be hex (two digits per byte)".to_string())?;
        if !(IDENTITY_MIN_ENTROPY_BYTES..=IDENTITY_MAX_ENTROPY_BYTES).contains(&entropy.len()) {
            return Err(format!(
                "entropy: {} bytes given, {IDENTITY_MIN_ENTROPY_BYTES} to {IDENTITY_MAX_ENTROPY_BYTES} needed",
                entropy.len()
            ));
        }
        let m = &self.machine_id;
        if m.len() != 32
            || !m
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            || m.bytes().all(|b| b == b'0')
        {
            return Err("machine_id: must be 32 lowercase hex digits, not all zero".into());
        }
        Ok(entropy)
    }
}

/// Port the agent listens on inside a virtual machine (TCP or vsock).
pub const GUEST_AGENT_PORT: u32 = 1024;

/// What a VM driver hands the guest at boot, as JSON on a small read-only raw disk
/// (the second virtio-blk device, `/dev/vdb`), padded with NUL bytes. Keeping it off the
/// kernel command line keeps the token out of the host's process list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    pub hostname: String,
    /// The agent's bearer token.
    pub token: String,
    /// Where the agent listens in the guest, e.g. `tcp:0.0.0.0:1024` or `vsock:4294967295:1024`.
    pub listen: String,
    /// Host wall clock at launch, milliseconds since the Unix epoch (the guest steps to it).
    pub clock_epoch_ms: i64,
    /// Static network setup; `None` leaves the interface to DHCP-less user-mode defaults.
    #[serde(default)]
    pub network: Option<GuestNetwork>,
    /// Extra environment for the agent and everything it runs.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host folders to mount, before anything else runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<GuestMount>,
}

/// A host folder the guest mounts at boot, found by its device's mount tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub fs: GuestMountFs,
    /// The mount tag the device announces (`share0`, `share1`…).
    pub tag: String,
    /// Where it is mounted, absolute.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// How a shared folder reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMountFs {
    /// virtio-fs, served on the host by `virtiofsd`.
    #[serde(rename = "virtiofs")]
    Virtiofs,
    /// 9p over virtio (`virtio-9p-device`), served by the hypervisor itself.
    #[serde(rename = "9p")]
    NineP,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// Address with prefix length, e.g. `10.0.2.15/24`.
    pub address: String,
    pub gateway: String,
    #[serde(default)]
    pub dns: Vec<String>,
}

/// Size of the raw config disk: one 64 KiB block of NUL-padded JSON.
pub const GUEST_CONFIG_DISK_BYTES: usize = 64 * 1024;

/// Terminal sizes accepted in columns and in rows.
pub const TERMINAL_SIZE_RANGE: std::ops::RangeInclusive<u16> = 1..=1000;
/// Longest terminal session id a client may present.
pub const TERMINAL_SESSION_MAX_LEN: usize = 64;
/// WebSocket subprotocol of the terminal (the manager's browser route answers with it).
pub const TERMINAL_SUBPROTOCOL: &str = "atelier.terminal";
/// The `Upgrade:` protocol name of `GET /v1/tunnel/{port}`.
pub const TUNNEL_UPGRADE: &str = "atelier-tunnel";

/// Whether `id` can be a terminal session id: 1–64 of `A-Z a-z 0-9 _ -`.
pub fn valid_terminal_session(id: &str) -> bool {
    (1..=TERMINAL_SESSION_MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Control messages a terminal client sends as WebSocket text frames (keystrokes travel as
/// binary frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalClientMessage {
    /// The window changed size (both within [`TERMINAL_SIZE_RANGE`]).
    Resize { cols: u16, rows: u16 },
}

/// Control messages a terminal server sends as WebSocket text frames (output travels as
/// binary frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TerminalServerMessage {
    /// First message: the session to name when reconnecting. `resumed` is true when an
    /// earlier session was reattached (its recent output follows as binary frames).
    Session {
        id: String,
        #[serde(default)]
        resumed: bool,
    },
    /// The shell ended (a signal `n` is reported as `128 + n`); the socket closes next.
    Exit { code: i32 },
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    fn good() -> Identity {
        Identity {
            hostname: "clone-1.example".into(),
            token: "a".repeat(64),
            epoch_ms: 1_700_000_000_000,
            entropy: to_hex(&[7u8; 32]),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert_eq!(from_hex("ABcd").unwrap(), [0xab, 0xcd]);
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn identities_are_validated_field_by_field() {
        assert_eq!(good().validate().unwrap(), vec![7u8; 32]);
        type Breaks = Box<dyn Fn(&mut Identity)>;
        let cases: Vec<(&str, Breaks)> = vec![
            ("entropy", Box::new(|i| i.entropy = to_hex(&[1u8; 31]))),
            ("entropy", Box::new(|i| i.entropy = to_hex(&[1u8; 513]))),
            ("entropy", Box::new(|i| i.entropy = "xy".repeat(32))),
            ("hostname", Box::new(|i| i.hostname = String::new())),
            ("hostname", Box::new(|i| i.hostname = "-bad".into())),
            ("hostname", Box::new(|i| i.hostname = "a b".into())),
            ("hostname", Box::new(|i| i.hostname = "x".repeat(65))),
            ("token", Box::new(|i| i.token = "short".into())),
            (
                "token",
                Box::new(|i| i.token = format!("{} x", "a".repeat(20))),
            ),
            ("epoch_ms", Box::new(|i| i.epoch_ms = 0)),
            ("machine_id", Box::new(|i| i.machine_id = "0".repeat(32))),
            ("machine_id", Box::new(|i| i.machine_id = "A".repeat(32))),
            ("machine_id", Box::new(|i| i.machine_id = "a".repeat(31))),
        ];
        for (field, break_it) in cases {
            let mut i = good();
            break_it(&mut i);
            let e = i.validate().unwrap_err();
            assert!(e.starts_with(field), "{field}: {e}");
        }
    }
}

#[cfg(test)]
mod terminal_tests {
    use super::*;

    #[test]
    fn terminal_messages_have_the_documented_shape() {
        let resize: TerminalClientMessage =
            serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(
            resize,
            TerminalClientMessage::Resize {
                cols: 120,
                rows: 40
            }
        );
        let exit = serde_json::to_value(TerminalServerMessage::Exit { code: 3 }).unwrap();
        assert_eq!(exit, serde_json::json!({"type": "exit", "code": 3}));
        let session: TerminalServerMessage =
            serde_json::from_str(r#"{"type":"session","id":"abc"}"#).unwrap();
        assert_eq!(
            session,
            TerminalServerMessage::Session {
                id: "abc".into(),
                resumed: false
            }
        );
    }

    #[test]
    fn session_ids_are_short_and_plain() {
        assert!(valid_terminal_session("0123abcd-_Z"));
        assert!(!valid_terminal_session(""));
        assert!(!valid_terminal_session("a/b"));
        assert!(!valid_terminal_session(&"a".repeat(65)));
    }
}
