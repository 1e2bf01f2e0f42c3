//! A fake Firecracker for snapshot tests: an API server that checks every request body
//! against the vendored spec (`crates/vmm/spec/firecracker-api.yaml`) and acts on what a
//! snapshot needs — `PUT /snapshot/create` writes a state and a memory file that record
//! the agent's token and vsock path, `PUT /snapshot/load` reads them back and starts the
//! restored agent behind the (overridden) vsock socket — and a fake agent that answers
//! health, exec and `PUT /v1/identity` (switching its token), recording what it is asked.
#![allow(dead_code)]

#[path = "../fc_api_spec/mod.rs"]
mod fc_api_spec;
pub use fc_api_spec::ApiSpec;

use std::convert::Infallible;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use atelier_proto::{ExecResult, ExitStatus, GuestConfig, Health, Identity, IdentityApplied};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// The fake Firecracker.

/// One request the fake API answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRecord {
    /// The API socket of the process that answered (one per sandbox).
    pub socket: String,
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    pub status: u16,
}

impl ApiRecord {
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Appends one record line to `file` in a single `write` on an O_APPEND descriptor:
/// concurrent fake processes then never interleave their lines (`writeln!` may split a
/// line into several writes).
pub fn append_record(file: &std::path::Path, record: &Value) {
    let mut line = record.to_string();
    line.push('\n');
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(file) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Reads the records the fake processes appended to `file`.
pub fn api_records(file: &Path) -> Vec<ApiRecord> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            ApiRecord {
                socket: v["socket"].as_str().unwrap().to_owned(),
                method: v["method"].as_str().unwrap().to_owned(),
                path: v["path"].as_str().unwrap().to_owned(),
                body: (!v["body"].is_null()).then(|| v["body"].clone()),
                status: v["status"].as_u64().unwrap() as u16,
            }
        })
        .collect()
}

/// The records of the process serving `socket`.
pub fn api_records_of(file: &Path, socket: &Path) -> Vec<ApiRecord> {
    let socket = socket.to_string_lossy();
    api_records(file)
        .into_iter()
        .filter(|r| r.socket == socket)
        .collect()
}

/// How the fake behaves (read from the environment in the fake process).
#[derive(Debug, Clone, Default)]
pub struct FakeSettings {
    pub socket: PathBuf,
    pub record: Option<PathBuf>,
    pub agent_record: Option<PathBuf>,
    /// Body paths are relative to this directory (the jail's root).
    pub chroot: Option<PathBuf>,
    /// `METHOD PATH` answered 400 with the fault message "refused by the fake".
    pub refuse: Option<String>,
}

impl FakeSettings {
    pub fn from_env() -> Option<Self> {
        let socket = std::env::var_os("ATELIER_FAKE_FC_SOCK")?;
        let var = |n: &str| {
            std::env::var_os(n)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Some(Self {
            socket: PathBuf::from(socket),
            record: var("ATELIER_FAKE_FC_RECORD"),
            agent_record: var("ATELIER_FAKE_AGENT_RECORD"),
            chroot: var("ATELIER_FAKE_FC_CHROOT"),
            refuse: std::env::var("ATELIER_FAKE_FC_REFUSE")
                .ok()
                .filter(|r| !r.is_empty()),
        })
    }

    fn resolve(&self, p: &str) -> PathBuf {
        match &self.chroot {
            Some(root) => root.join(p.trim_start_matches('/')),
            None => PathBuf::from(p),
        }
    }
}

/// What the fake VM holds: its config disk, and the agent's identity once it runs.
#[derive(Default)]
struct FakeVm {
    config_disk: Option<PathBuf>,
    uds_path: Option<String>,
    agent: Option<AgentState>,
}

/// Serves the fake API on `settings.socket` until the process is killed.
pub async fn serve_fake_firecracker(settings: FakeSettings) {
    let spec = Arc::new(ApiSpec::load());
    let vm = Arc::new(Mutex::new(FakeVm::default()));
    let _ = std::fs::remove_file(&settings.socket);
    let listener = UnixListener::bind(&settings.socket).unwrap();
    println!("fake firecracker: serving {}", settings.socket.display());
    let settings = Arc::new(settings);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (spec, vm, settings) = (spec.clone(), vm.clone(), settings.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (spec, vm, settings) = (spec.clone(), vm.clone(), settings.clone());
                async move {
                    let method = req.method().to_string();
                    let path = req.uri().path().to_owned();
                    let bytes = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let body: Option<Value> = if bytes.is_empty() {
                        None
                    } else {
                        serde_json::from_slice(&bytes).ok()
                    };
                    let (status, answer) = answer(&spec, &vm, &settings, &method, &path, &body);
                    if let Some(file) = &settings.record {
                        let line = json!({
                            "socket": settings.socket.to_string_lossy(),
                            "method": method, "path": path, "body": body, "status": status,
                        });
                        append_record(file, &line);
                    }
                    let mut resp = Response::new(Full::new(Bytes::from(answer)));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn fault(status: u16, message: impl Into<String>) -> (u16, String) {
    (
        status,
        json!({ "fault_message": message.into() }).to_string(),
    )
}

fn answer(
    spec: &ApiSpec,
    vm: &Mutex<FakeVm>,
    settings: &FakeSettings,
    method: &str,
    path: &str,
    body: &Option<Value>,
) -> (u16, String) {
    let problems = spec.check(method, path, body.as_ref());
    if !problems.is_empty() {
        return fault(400, format!("spec: {}", problems.join("; ")));
    }
    if settings.refuse.as_deref() == Some(&format!("{method} {path}")) {
        return fault(400, "refused by the fake");
    }
    let Ok(mut vm) = vm.lock() else {
        return fault(500, "poisoned");
    };
    let field = |name: &str| -> String {
        body.as_ref()
            .and_then(|b| b[name].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    match (method, path) {
        ("GET", "/version") => (200, r#"{"firecracker_version":"1.16.1"}"#.into()),
        ("GET", "/") => (
            200,
            r#"{"app_name":"Firecracker","id":"fake","state":"Running","vmm_version":"1.16.1"}"#
                .into(),
        ),
        ("PUT", "/drives/config") => {
            vm.config_disk = Some(settings.resolve(&field("path_on_host")));
            (204, String::new())
        }
        ("PUT", "/vsock") => {
            // "Boots": the agent reads its token and name from the config disk.
            let Some(config) = vm.config_disk.as_ref().and_then(|p| read_config(p)) else {
                return fault(400, "no readable config disk");
            };
            let uds = field("uds_path");
            let agent = AgentState::new(&config.token, &config.hostname);
            start_fake_agent(
                &settings.resolve(&uds),
                agent.clone(),
                settings.agent_record.clone(),
            );
            vm.uds_path = Some(uds);
            vm.agent = Some(agent);
            (204, String::new())
        }
        ("PUT", "/snapshot/create") => {
            let Some(agent) = &vm.agent else {
                return fault(400, "the VM is not running");
            };
            let state = json!({
                "token": agent.token(), "hostname": agent.hostname(), "uds_path": vm.uds_path,
            });
            let (state_path, mem_path) = (
                settings.resolve(&field("snapshot_path")),
                settings.resolve(&field("mem_file_path")),
            );
            let written = std::fs::write(&state_path, state.to_string()).and_then(|()| {
                std::fs::write(&mem_path, format!("guest memory of {}", agent.hostname()))
            });
            match written {
                Ok(()) => (204, String::new()),
                Err(e) => fault(400, format!("cannot write the snapshot: {e}")),
            }
        }
        ("PUT", "/snapshot/load") => {
            let Some(b) = body else {
                return fault(400, "no body");
            };
            let state_path = settings.resolve(&field("snapshot_path"));
            let mem_path =
                settings.resolve(b["mem_backend"]["backend_path"].as_str().unwrap_or(""));
            let state: Value = match std::fs::read(&state_path)
                .ok()
                .and_then(|s| serde_json::from_slice(&s).ok())
            {
                Some(s) => s,
                None => return fault(400, format!("cannot load {}", state_path.display())),
            };
            if std::fs::read(&mem_path).is_err() {
                return fault(400, format!("cannot map {}", mem_path.display()));
            }
            // The recorded vsock socket, unless overridden.
            let uds = b["vsock_override"]["uds_path"]
                .as_str()
                .or(state["uds_path"].as_str())
                .unwrap_or_default()
                .to_owned();
            let agent = AgentState::new(
                state["token"].as_str().unwrap_or_default(),
                state["hostname"].as_str().unwrap_or_default(),
            );
            start_fake_agent(
                &settings.resolve(&uds),
                agent.clone(),
                settings.agent_record.clone(),
            );
            vm.uds_path = Some(uds);
            vm.agent = Some(agent);
            (204, String::new())
        }
        _ => (204, String::new()),
    }
}

fn read_config(path: &Path) -> Option<GuestConfig> {
    let bytes = std::fs::read(path).ok()?;
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    serde_json::from_slice(&bytes[..end]).ok()
}

// ---------------------------------------------------------------------------------------
// The fake agent.

/// The agent's token and host name, which `PUT /v1/identity` replaces.
#[derive(Clone)]
pub struct AgentState(Arc<Mutex<(String, String)>>);

impl AgentState {
    pub fn new(token: &str, hostname: &str) -> Self {
        Self(Arc::new(Mutex::new((
            token.to_owned(),
            hostname.to_owned(),
        ))))
    }
    pub fn token(&self) -> String {
        self.0.lock().map(|s| s.0.clone()).unwrap_or_default()
    }
    pub fn hostname(&self) -> String {
        self.0.lock().map(|s| s.1.clone()).unwrap_or_default()
    }
    fn set(&self, token: &str, hostname: &str) {
        if let Ok(mut s) = self.0.lock() {
            *s = (token.to_owned(), hostname.to_owned());
        }
    }
}

/// One request the fake agent received.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    pub uds: String,
    pub method: String,
    pub path: String,
    pub authorized: bool,
    pub body: Value,
}

pub fn agent_records(file: &Path) -> Vec<AgentRecord> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            AgentRecord {
                uds: v["uds"].as_str().unwrap().to_owned(),
                method: v["method"].as_str().unwrap().to_owned(),
                path: v["path"].as_str().unwrap().to_owned(),
                authorized: v["authorized"].as_bool().unwrap(),
                body: v["body"].clone(),
            }
        })
        .collect()
}

/// Serves a fake agent behind a hybrid vsock socket at `uds`: `CONNECT 1024` → `OK`,
/// then HTTP.
pub fn start_fake_agent(uds: &Path, state: AgentState, record: Option<PathBuf>) {
    let _ = std::fs::remove_file(uds);
    let Ok(listener) = UnixListener::bind(uds) else {
        return;
    };
    let uds = uds.to_string_lossy().into_owned();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_agent(
                stream,
                state.clone(),
                record.clone(),
                uds.clone(),
            ));
        }
    });
}

async fn serve_agent(
    mut stream: UnixStream,
    state: AgentState,
    record: Option<PathBuf>,
    uds: String,
) {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b).await {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            _ => return,
        }
    }
    if line != b"CONNECT 1024" || stream.write_all(b"OK 1073741824\n").await.is_err() {
        return;
    }
    let svc = service_fn(move |req: Request<Incoming>| {
        let (state, record, uds) = (state.clone(), record.clone(), uds.clone());
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let authorized = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == format!("Bearer {}", state.token()));
            let bytes = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if let Some(file) = &record {
                let line = json!({
                    "uds": uds, "method": method, "path": path, "authorized": authorized,
                    "body": body,
                });
                append_record(file, &line);
            }
            let (status, answer) = if !authorized {
                (
                    401,
                    r#"{"error":{"code":"unauthorized","message":"bad token"}}"#.to_owned(),
                )
            } else {
                agent_answer(&state, &method, &path, body)
            };
            let mut resp = Response::new(Full::new(Bytes::from(answer)));
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn agent_answer(state: &AgentState, method: &str, path: &str, body: Value) -> (u16, String) {
    match (method, path) {
        ("GET", "/v1/health") => (
            200,
            to_json(&Health {
                version: "fake".into(),
                uptime_ms: 1,
                load: [0.0; 3],
                hostname: state.hostname(),
                pid: 1,
            }),
        ),
        ("POST", "/v1/exec") => (
            200,
            to_json(&ExecResult {
                status: ExitStatus {
                    exit_code: Some(0),
                    signal: None,
                    timed_out: false,
                    duration_ms: 1,
                    stdout_truncated: false,
                    stderr_truncated: false,
                },
                stdout: String::new(),
                stderr: String::new(),
            }),
        ),
        ("PUT", "/v1/identity") => match serde_json::from_value::<Identity>(body) {
            Ok(id) => {
                state.set(&id.token, &id.hostname);
                (
                    200,
                    to_json(&IdentityApplied {
                        hostname: id.hostname,
                        epoch_ms: id.epoch_ms,
                        entropy_bytes: id.entropy.len() / 2,
                        reseeded: true,
                    }),
                )
            }
            Err(e) => (
                400,
                json!({"error": {"code": "invalid", "message": e.to_string()}}).to_string(),
            ),
        },
        _ => (
            404,
            r#"{"error":{"code":"not_found","message":"no such route"}}"#.to_owned(),
        ),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Scripts the driver runs as `firecracker` and `jailer`.

pub fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A `firecracker` (in `dir`) that re-runs the current test binary with only the test
/// `entry` selected, which serves the fake API (see [`FakeSettings::from_env`]).
pub fn fake_firecracker(
    dir: &Path,
    entry: &str,
    record: &Path,
    agent_record: &Path,
    refuse: &str,
) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        r#"#!/bin/sh
sock=
while [ $# -gt 0 ]; do
  case "$1" in
    --api-sock) sock="$2"; shift 2 ;;
    --version) echo "Firecracker v1.16.1"; exit 0 ;;
    *) shift ;;
  esac
done
ATELIER_FAKE_FC_SOCK="$sock" ATELIER_FAKE_FC_RECORD='{record}' \
ATELIER_FAKE_AGENT_RECORD='{agent}' ATELIER_FAKE_FC_REFUSE='{refuse}' \
  exec '{exe}' --exact {entry} --nocapture --test-threads=1
"#,
        record = record.display(),
        agent = agent_record.display(),
        exe = exe.display(),
    );
    write_script(dir, "firecracker", &script)
}

/// A `jailer` (in `dir`) that does no jailing: it records its arguments to `argv_record`
/// and execs the exec file with the API socket moved into the would-be chroot, telling
/// the fake which directory body paths are relative to.
pub fn fake_jailer(dir: &Path, argv_record: &Path) -> PathBuf {
    write_script(
        dir,
        "jailer",
        &format!(
            r#"#!/bin/sh
echo "$@" >> '{argv}'
base= id= exe=
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    --chroot-base-dir) base="$2"; shift 2 ;;
    --id) id="$2"; shift 2 ;;
    --exec-file) exe="$2"; shift 2 ;;
    *) shift 2 ;;
  esac
done
root="$base/$(basename "$exe")/$id/root"
api=
while [ $# -gt 0 ]; do
  case "$1" in --api-sock) api="$2"; shift 2 ;; *) shift ;; esac
done
ATELIER_FAKE_FC_CHROOT="$root" exec "$exe" --api-sock "$root$api"
"#,
            argv = argv_record.display()
        ),
    )
}
