//! A small HTTP/1.1 client for the Firecracker API socket.
//!
//! One connection per request: the API is called a dozen times per boot, and a fresh
//! connection never trips over one Firecracker closed in between. Successful `PUT`s and
//! `PATCH`es answer `204`; any non-2xx answer becomes [`ClientError::Api`] carrying the
//! `fault_message` of Firecracker's error body.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::api::{
    ActionType, ApiError, BootSource, Drive, EntropyDevice, FirecrackerVersion, InstanceInfo,
    Logger, MachineConfiguration, Metrics, NetworkInterface, SnapshotCreateParams,
    SnapshotLoadParams, Vsock,
};
use super::calls::{self, ApiCall, ApiMethod};
use crate::driver::VmmError;

/// Largest answer read from Firecracker (they are a few hundred bytes).
const MAX_ANSWER: usize = 1024 * 1024;
/// Delay between connection attempts while waiting for the socket.
const SOCKET_RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Firecracker answered with an error status.
    #[error("Firecracker answered {status} to {request}: {fault_message}")]
    Api {
        request: String,
        status: u16,
        /// The `fault_message` of the answer (or its raw text when it had none).
        fault_message: String,
    },
    #[error("cannot connect to the Firecracker API at {}: {source}", .socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    #[error("HTTP exchange with Firecracker failed ({request}): {message}")]
    Http { request: String, message: String },
    #[error("Firecracker did not answer {request} within {timeout:?}")]
    Timeout { request: String, timeout: Duration },
    #[error("cannot decode Firecracker's answer to {request}: {message}")]
    Decode { request: String, message: String },
    #[error("the Firecracker API socket {} did not accept connections within {waited:?}{}",
        .socket.display(),
        .last.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NoSocket {
        socket: PathBuf,
        waited: Duration,
        last: Option<io::Error>,
    },
    /// The process that should have served the socket is gone.
    #[error("the Firecracker process exited before its API socket {} was ready", .socket.display())]
    Exited { socket: PathBuf },
}

impl ClientError {
    /// The `fault_message` of an [`ClientError::Api`].
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            Self::Api { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }
}

impl From<ClientError> for VmmError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api {
                request,
                status,
                fault_message,
            } => VmmError::Firecracker {
                request,
                status,
                fault: fault_message,
            },
            ClientError::Connect { socket, source } => VmmError::Io {
                context: format!("connecting to the Firecracker API at {}", socket.display()),
                source,
            },
            other => {
                let kind = match other {
                    ClientError::Timeout { .. } | ClientError::NoSocket { .. } => {
                        io::ErrorKind::TimedOut
                    }
                    ClientError::Exited { .. } => io::ErrorKind::NotFound,
                    _ => io::ErrorKind::Other,
                };
                VmmError::Io {
                    context: "calling the Firecracker API".into(),
                    source: io::Error::new(kind, other.to_string()),
                }
            }
        }
    }
}

/// A client for one Firecracker process's API socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FirecrackerClient {
    socket: PathBuf,
    timeout: Duration,
    snapshot_timeout: Duration,
}

impl FirecrackerClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(30),
            snapshot_timeout: Duration::from_secs(300),
        }
    }

    /// Timeout of one ordinary request (default 30 s; `InstanceStart` loads the kernel).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Timeout of snapshot creation and loading (default 5 min: they write or map all of
    /// the guest's memory).
    pub fn with_snapshot_timeout(mut self, timeout: Duration) -> Self {
        self.snapshot_timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until the API socket accepts connections, for at most `within`. `alive` is
    /// asked between attempts; when it says the process is gone, waiting stops at once.
    pub async fn wait_for_socket(
        &self,
        within: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Result<(), ClientError> {
        let deadline = Instant::now() + within;
        loop {
            let last = match UnixStream::connect(&self.socket).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if !alive() {
                return Err(ClientError::Exited {
                    socket: self.socket.clone(),
                });
            }
            if Instant::now() >= deadline {
                return Err(ClientError::NoSocket {
                    socket: self.socket.clone(),
                    waited: within,
                    last: Some(last),
                });
            }
            tokio::time::sleep_until((Instant::now() + SOCKET_RETRY).min(deadline)).await;
        }
    }

    /// Sends one request; returns the answer's body on a 2xx status.
    pub async fn send(&self, call: &ApiCall) -> Result<Bytes, ClientError> {
        let timeout = match call.path.as_str() {
            "/snapshot/create" | "/snapshot/load" => self.snapshot_timeout,
            _ => self.timeout,
        };
        let request = call.describe();
        tokio::time::timeout(timeout, self.exchange(call))
            .await
            .map_err(|_| ClientError::Timeout { request, timeout })?
    }

    async fn exchange(&self, call: &ApiCall) -> Result<Bytes, ClientError> {
        let request = call.describe();
        let http_err = |message: String| ClientError::Http {
            request: request.clone(),
            message,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| http_err(format!("handshake: {e}")))?;
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Firecracker API connection ended");
            }
        });
        let method = match call.method {
            ApiMethod::Get => Method::GET,
            ApiMethod::Put => Method::PUT,
            ApiMethod::Patch => Method::PATCH,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(call.path.as_str())
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        let body = match &call.body {
            Some(v) => {
                let bytes = serde_json::to_vec(v).map_err(|e| http_err(e.to_string()))?;
                builder = builder
                    .header(CONTENT_TYPE, "application/json")
                    .header(CONTENT_LENGTH, bytes.len());
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let req = builder
            .body(Full::new(body))
            .map_err(|e| http_err(format!("building the request: {e}")))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| http_err(e.to_string()))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| http_err(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, bytes))
        }
        .await;
        drop(sender);
        conn.abort();
        let (status, bytes) = result?;
        if !status.is_success() {
            return Err(ClientError::Api {
                request,
                status: status.as_u16(),
                fault_message: fault_message(status, &bytes),
            });
        }
        Ok(bytes)
    }

    async fn send_unit(&self, call: &ApiCall) -> Result<(), ClientError> {
        self.send(call).await.map(|_| ())
    }

    async fn send_json<T: DeserializeOwned>(&self, call: &ApiCall) -> Result<T, ClientError> {
        let bytes = self.send(call).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            request: call.describe(),
            message: format!(
                "{e} in {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        })
    }

    /// `PUT <path>` with a JSON body.
    pub async fn put(&self, path: &str, body: &impl serde::Serialize) -> Result<(), ClientError> {
        self.send_unit(&ApiCall::put(path, body)).await
    }

    /// `PATCH <path>` with a JSON body.
    pub async fn patch(&self, path: &str, body: &impl serde::Serialize) -> Result<(), ClientError> {
        self.send_unit(&ApiCall::patch(path, body)).await
    }

    /// `GET <path>`, decoding the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send_json(&ApiCall::get(path)).await
    }

    /// `GET /`.
    pub async fn describe_instance(&self) -> Result<InstanceInfo, ClientError> {
        self.send_json(&calls::describe_instance()).await
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<FirecrackerVersion, ClientError> {
        self.send_json(&calls::version()).await
    }

    /// `GET /machine-config`.
    pub async fn machine_config(&self) -> Result<MachineConfiguration, ClientError> {
        self.send_json(&calls::get_machine_config()).await
    }

    pub async fn put_logger(&self, logger: &Logger) -> Result<(), ClientError> {
        self.send_unit(&calls::put_logger(logger)).await
    }

    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<(), ClientError> {
        self.send_unit(&calls::put_metrics(metrics)).await
    }

    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), ClientError> {
        self.send_unit(&calls::put_boot_source(boot)).await
    }

    pub async fn put_drive(&self, drive: &Drive) -> Result<(), ClientError> {
        self.send_unit(&calls::put_drive(drive)).await
    }

    pub async fn put_machine_config(
        &self,
        machine: &MachineConfiguration,
    ) -> Result<(), ClientError> {
        self.send_unit(&calls::put_machine_config(machine)).await
    }

    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<(), ClientError> {
        self.send_unit(&calls::put_network_interface(iface)).await
    }

    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), ClientError> {
        self.send_unit(&calls::put_vsock(vsock)).await
    }

    pub async fn put_entropy(&self, entropy: &EntropyDevice) -> Result<(), ClientError> {
        self.send_unit(&calls::put_entropy(entropy)).await
    }

    /// `PUT /actions`.
    pub async fn action(&self, action: ActionType) -> Result<(), ClientError> {
        self.send_unit(&calls::action(action)).await
    }

    /// `PUT /actions {"action_type":"InstanceStart"}`.
    pub async fn start_instance(&self) -> Result<(), ClientError> {
        self.action(ActionType::InstanceStart).await
    }

    /// `PATCH /vm {"state":"Paused"}`.
    pub async fn pause(&self) -> Result<(), ClientError> {
        self.send_unit(&calls::pause()).await
    }

    /// `PATCH /vm {"state":"Resumed"}`.
    pub async fn resume(&self) -> Result<(), ClientError> {
        self.send_unit(&calls::resume()).await
    }

    /// `PUT /snapshot/create` (pause the VM first).
    pub async fn create_snapshot(&self, params: &SnapshotCreateParams) -> Result<(), ClientError> {
        self.send_unit(&calls::create_snapshot(params)).await
    }

    /// `PUT /snapshot/load` (on a fresh process only; Firecracker exits if it fails).
    pub async fn load_snapshot(&self, params: &SnapshotLoadParams) -> Result<(), ClientError> {
        self.send_unit(&calls::load_snapshot(params)).await
    }
}

/// The `fault_message` of an error answer, or its text, or the status's reason.
fn fault_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(ApiError {
        fault_message: Some(m),
    }) = serde_json::from_slice::<ApiError>(body)
    {
        return m;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        text.chars().take(1000).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_messages_fall_back_to_text_then_status() {
        assert_eq!(
            fault_message(
                StatusCode::BAD_REQUEST,
                br#"{"fault_message":"Invalid drive"}"#
            ),
            "Invalid drive"
        );
        assert_eq!(
            fault_message(StatusCode::BAD_REQUEST, b"plain words\n"),
            "plain words"
        );
        assert_eq!(
            fault_message(StatusCode::INTERNAL_SERVER_ERROR, b""),
            "500 Internal Server Error"
        );
    }

    #[tokio::test]
    async fn waiting_for_a_missing_socket_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let client = FirecrackerClient::new(dir.path().join("api.sock"));
        let e = client
            .wait_for_socket(Duration::from_millis(50), || true)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::NoSocket { .. }), "{e}");
        let e = client
            .wait_for_socket(Duration::from_secs(5), || false)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Exited { .. }), "{e}");
    }
}
