//! Helpers shared by the `firecracker_*` tests: a fake image resolver, sandbox specs, and
//! a fake Firecracker API server (with a fake agent behind its hybrid vsock).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use atelier_core::{Resources, SandboxId};
use atelier_vmm::{BootArtifacts, ImageResolver, SandboxSpec, VmmError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Resolves every image name to the same three files.
pub struct FakeImages(pub BootArtifacts);

impl ImageResolver for FakeImages {
    fn resolve(&self, image: &str) -> Result<BootArtifacts, VmmError> {
        if image == "missing" {
            return Err(VmmError::NotAvailable {
                driver: atelier_vmm::DriverKind::Firecracker,
                reason: format!("no image {image:?}"),
            });
        }
        Ok(self.0.clone())
    }
}

/// Writes small stand-ins for a kernel, an initramfs and a root filesystem under `dir`.
pub fn fake_artifacts(dir: &Path) -> BootArtifacts {
    std::fs::create_dir_all(dir).unwrap();
    let a = BootArtifacts {
        bzimage: dir.join("bzImage"),
        vmlinux: dir.join("vmlinux"),
        initramfs: dir.join("initramfs.cpio.gz"),
        rootfs: dir.join("rootfs.ext4"),
    };
    for (p, content) in [
        (&a.bzimage, &b"bz"[..]),
        (&a.vmlinux, b"\x7fELF"),
        (&a.initramfs, b"070701"),
        (&a.rootfs, b"ext4 image"),
    ] {
        std::fs::write(p, content).unwrap();
    }
    a
}

pub fn spec() -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::generate(),
        name: "box".into(),
        resources: Resources {
            vcpus: 2,
            memory_mib: 512,
            disk_mib: 256,
        },
        image: "minimal".into(),
        agent_token: "secret-token".into(),
        env: BTreeMap::from([("GREETING".into(), "hello".into())]),
        restore_token: None,
        network: Default::default(),
        shared_folders: vec![],
    }
}

/// One request the fake API received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn key(&self) -> (String, String) {
        (self.method.clone(), self.path.clone())
    }
}

/// Decides the answer to a request: status and body.
pub type Responder = Arc<dyn Fn(&Recorded) -> (u16, String) + Send + Sync>;

/// Answers 204 to everything, and `GET /` with an `InstanceInfo`.
pub fn accept_all() -> Responder {
    Arc::new(|r: &Recorded| {
        if r.method == "GET" && r.path == "/" {
            (
                200,
                r#"{"app_name":"Firecracker","id":"fake","state":"Running","vmm_version":"0.0.0"}"#
                    .into(),
            )
        } else {
            (204, String::new())
        }
    })
}

/// Answers `status` with `fault` as `fault_message` to `method path`, 204 otherwise.
pub fn refuse(method: &str, path: &str, status: u16, fault: &str) -> Responder {
    let (method, path, fault) = (method.to_owned(), path.to_owned(), fault.to_owned());
    let base = accept_all();
    Arc::new(move |r: &Recorded| {
        if r.method == method && r.path == path {
            (
                status,
                serde_json::json!({ "fault_message": fault }).to_string(),
            )
        } else {
            base(r)
        }
    })
}

/// A fake Firecracker API server on a Unix socket.
pub struct FakeApi {
    pub calls: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    /// Serves on `socket`. With `record_to`, every request is also appended to that file
    /// as a JSON line. With `serve_agent`, a successful `PUT /vsock` starts a fake agent
    /// behind the hybrid vsock socket it names.
    pub fn start(
        socket: &Path,
        responder: Responder,
        record_to: Option<PathBuf>,
        serve_agent: bool,
    ) -> Self {
        Self::start_in(socket, responder, record_to, serve_agent, None)
    }

    /// Like [`FakeApi::start`], for a "jailed" process: paths in request bodies are
    /// relative to `chroot`.
    pub fn start_in(
        socket: &Path,
        responder: Responder,
        record_to: Option<PathBuf>,
        serve_agent: bool,
        chroot: Option<PathBuf>,
    ) -> Self {
        let listener = UnixListener::bind(socket).unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let shared = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let calls = shared.clone();
                let responder = responder.clone();
                let record_to = record_to.clone();
                let chroot = chroot.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let calls = calls.clone();
                        let responder = responder.clone();
                        let record_to = record_to.clone();
                        let chroot = chroot.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = if bytes.is_empty() {
                                None
                            } else {
                                Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                                    Value::String(String::from_utf8_lossy(&bytes).into())
                                }))
                            };
                            let rec = Recorded { method, path, body };
                            let (status, answer) = responder(&rec);
                            if let Some(file) = &record_to {
                                let line = serde_json::json!({
                                    "method": rec.method, "path": rec.path, "body": rec.body,
                                });
                                if let Ok(mut f) =
                                    OpenOptions::new().create(true).append(true).open(file)
                                {
                                    let _ = writeln!(f, "{line}");
                                }
                            }
                            if serve_agent
                                && status == 204
                                && rec.method == "PUT"
                                && rec.path == "/vsock"
                            {
                                if let Some(uds) =
                                    rec.body.as_ref().and_then(|b| b["uds_path"].as_str()).map(
                                        |p| match &chroot {
                                            Some(root) => root.join(p.trim_start_matches('/')),
                                            None => PathBuf::from(p),
                                        },
                                    )
                                {
                                    start_fake_agent(&uds);
                                }
                            }
                            if let Ok(mut c) = calls.lock() {
                                c.push(rec);
                            }
                            let mut resp = Response::new(Full::new(Bytes::from(answer)));
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(status).unwrap_or_default();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { calls, task }
    }

    pub fn calls(&self) -> Vec<Recorded> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// A fake agent behind Firecracker's hybrid vsock: answers `CONNECT 1024` with `OK`, then
/// `GET /v1/health` with a health report.
pub fn start_fake_agent(uds: &Path) {
    let _ = std::fs::remove_file(uds);
    let Ok(listener) = UnixListener::bind(uds) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_agent_connection(stream));
        }
    });
}

async fn serve_agent_connection(mut stream: UnixStream) {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match stream.read(&mut b).await {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            _ => return,
        }
    }
    if line != b"CONNECT 1024" {
        return; // Firecracker closes when nobody listens on the port.
    }
    if stream.write_all(b"OK 1073741824\n").await.is_err() {
        return;
    }
    let svc = service_fn(|req: Request<Incoming>| async move {
        let ok = req.uri().path() == "/v1/health"
            && req
                .headers()
                .get("authorization")
                .is_some_and(|v| v == "Bearer secret-token");
        let (status, body) = if ok {
            (
                200,
                r#"{"version":"fake","uptime_ms":1,"load":[0.0,0.0,0.0],"hostname":"box","pid":1}"#,
            )
        } else {
            (
                401,
                r#"{"error":{"code":"unauthorized","message":"bad token"}}"#,
            )
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        Ok::<_, Infallible>(resp)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
