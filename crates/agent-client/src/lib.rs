//! `atelier-agent-client`: the manager's async client for `atelier-agent`.
//!
//! [`AgentClient`] speaks the HTTP/1.1 API documented in [`atelier_proto`] over any
//! [`AgentAddr`]: TCP, Unix sockets, AF_VSOCK, and Firecracker's hybrid vsock (`fcvsock:`,
//! a Unix socket on the host followed by a `CONNECT <port>` / `OK <n>` handshake).
//!
//! Connections are HTTP/1.1 keep-alive connections made with
//! `hyper::client::conn::http1::handshake`; idle ones are kept in a small per-client pool
//! (shared by clones) so back-to-back calls skip the connect (and handshake). A request that
//! could not be written on a pooled connection the agent had closed is retried once on a
//! fresh connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), atelier_agent_client::Error> {
//! use atelier_agent_client::AgentClient;
//! use atelier_proto::ExecRequest;
//! let agent = AgentClient::new("tcp:127.0.0.1:7000".parse().unwrap(), "secret");
//! agent.wait_healthy(std::time::Duration::from_secs(10)).await?;
//! let r = agent.exec(&ExecRequest::shell("echo hi")).await?;
//! assert_eq!(r.stdout, "hi\n");
//! # Ok(()) }
//! ```

pub mod connect;
mod upgrade;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

pub use atelier_proto as proto;
use atelier_proto::{
    AgentAddr, DirListing, ErrorBody, ExecEvent, ExecRequest, ExecResult, FileStat, Health,
    LogChunk, ServiceSpec, ServiceStatus, API_PREFIX, DEFAULT_TIMEOUT_MS,
};
use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
/// The WebSocket library [`TerminalStream`] comes from (its `Message` type, errors).
pub use tokio_tungstenite::tungstenite;
pub use upgrade::{TerminalStream, Tunnel};

/// Errors of [`AgentClient`] calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transport could not be connected (refused, missing socket, timeout).
    #[error("cannot connect to the agent at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The hybrid-vsock `CONNECT`/`OK` exchange or the HTTP handshake failed.
    #[error("agent handshake failed: {0}")]
    Handshake(String),
    /// The HTTP exchange failed (connection reset, malformed response…).
    #[error("HTTP exchange with the agent failed: {0}")]
    Http(String),
    /// The agent answered with an error status; the manager relays status + code.
    #[error("agent answered {status} {}: {}", body.error.code, body.error.message)]
    Agent { status: u16, body: ErrorBody },
    /// The agent's answer was not what the protocol says.
    #[error("cannot decode the agent's answer: {0}")]
    Decode(String),
    /// The call did not complete within its timeout.
    #[error("the agent did not answer in time")]
    Timeout,
}

impl Error {
    /// The HTTP status of an [`Error::Agent`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Agent { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable error code of an [`Error::Agent`] (`not_found`, `forbidden_path`…).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Agent { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }

    /// Whether the agent could not be reached at all (worth retrying while it boots).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Handshake(_))
    }
}

type ReqBody = Full<Bytes>;
type Sender = SendRequest<ReqBody>;

/// Idle connections kept per client.
const MAX_IDLE: usize = 8;
/// Margin added to an exec's own timeout for the HTTP round trip.
const EXEC_MARGIN: Duration = Duration::from_secs(30);
/// Delay between attempts in [`AgentClient::wait_healthy`].
const HEALTH_RETRY: Duration = Duration::from_millis(25);

/// Characters escaped in query values (everything but unreserved characters and `/`).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// Characters escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

struct Inner {
    addr: AgentAddr,
    auth: Result<HeaderValue, String>,
    host: HeaderValue,
    idle: Mutex<Vec<Sender>>,
}

impl Inner {
    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(s);
            }
        }
    }
}

/// A client for one agent. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
    timeout: Duration,
    transfer_timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

fn q(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn agent_error(status: StatusCode, body: &[u8]) -> Error {
    let body = serde_json::from_slice::<ErrorBody>(body).unwrap_or_else(|_| {
        let text = String::from_utf8_lossy(body);
        let code = match status.as_u16() {
            401 => "unauthorized",
            404 => "not_found",
            413 => "payload_too_large",
            400..=499 => "invalid_value",
            _ => "internal",
        };
        ErrorBody::new(
            code,
            if text.trim().is_empty() {
                status.to_string()
            } else {
                text.into_owned()
            },
        )
    });
    Error::Agent {
        status: status.as_u16(),
        body,
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        Error::Decode(format!("{e} in {head:?}"))
    })
}

impl AgentClient {
    /// A client for the agent at `addr`, authenticating with `token`. Nothing is connected
    /// until the first call.
    pub fn new(addr: AgentAddr, token: impl Into<String>) -> Self {
        let token = token.into();
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token contains characters not allowed in a header".to_string());
        let host = match &addr {
            AgentAddr::Tcp(sa) => HeaderValue::from_str(&sa.to_string()).ok(),
            _ => None,
        }
        .unwrap_or(HeaderValue::from_static("atelier-agent"));
        Self {
            inner: Arc::new(Inner {
                addr,
                auth,
                host,
                idle: Mutex::new(Vec::new()),
            }),
            timeout: Duration::from_secs(60),
            transfer_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Timeout of ordinary calls (default 60 s). Exec calls use the request's own timeout
    /// plus a margin instead.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Timeout of file reads and writes (default 10 min).
    pub fn with_transfer_timeout(mut self, timeout: Duration) -> Self {
        self.transfer_timeout = timeout;
        self
    }

    /// Timeout of connecting, including the hybrid-vsock handshake (default 5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub fn addr(&self) -> &AgentAddr {
        &self.inner.addr
    }

    /// A client of the same agent authenticating with `token` instead, which takes over
    /// this client's idle connections (the token goes with each request, not with the
    /// connection): after a token swap (`PUT /v1/identity`) the next call skips the
    /// connect. Same timeouts.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        let mut next = Self::new(self.inner.addr.clone(), token);
        next.timeout = self.timeout;
        next.transfer_timeout = self.transfer_timeout;
        next.connect_timeout = self.connect_timeout;
        let idle = self
            .inner
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        for sender in idle {
            next.inner.put_idle(sender);
        }
        next
    }

    async fn new_connection(&self) -> Result<Sender, Error> {
        let io = connect::connect(&self.inner.addr, self.connect_timeout).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::Handshake(format!("HTTP/1.1: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection ended");
            }
        });
        Ok(sender)
    }

    fn build(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Request<ReqBody>, Error> {
        let auth = self.inner.auth.clone().map_err(Error::Http)?;
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{API_PREFIX}{path_and_query}"))
            .header(HOST, self.inner.host.clone())
            .header(AUTHORIZATION, auth);
        let body = match body {
            Some((bytes, ctype)) => {
                b = b
                    .header(CONTENT_TYPE, ctype)
                    .header(CONTENT_LENGTH, bytes.len());
                bytes
            }
            None => Bytes::new(),
        };
        b.body(Full::new(body))
            .map_err(|e| Error::Http(format!("building the request: {e}")))
    }

    /// Sends `req` on a pooled connection (or a new one). Returns the response and the
    /// connection, to be given back to the pool once the body has been read.
    async fn send(&self, mut req: Request<ReqBody>) -> Result<(Response<Incoming>, Sender), Error> {
        while let Some(mut sender) = self.inner.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, sender)),
                Err(mut e) => match e.take_message() {
                    // Not written: the connection was closed under us; try another.
                    Some(r) => req = r,
                    None => return Err(Error::Http(e.into_error().to_string())),
                },
            }
        }
        let mut sender = self.new_connection().await?;
        sender
            .ready()
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok((resp, sender))
    }

    /// One full exchange; non-2xx answers become [`Error::Agent`].
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(Bytes, &'static str)>,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        let req = self.build(method, path_and_query, body)?;
        tokio::time::timeout(timeout, async {
            let (resp, sender) = self.send(req).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::Http(format!("reading the response: {e}")))?
                .to_bytes();
            self.inner.put_idle(sender);
            if !status.is_success() {
                return Err(agent_error(status, &bytes));
            }
            Ok(bytes)
        })
        .await
        .map_err(|_| Error::Timeout)?
    }

    async fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, Error> {
        decode(
            &self
                .call(Method::GET, path_and_query, None, self.timeout)
                .await?,
        )
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Decode(e.to_string()))?;
        decode(
            &self
                .call(
                    method,
                    path_and_query,
                    Some((Bytes::from(body), "application/json")),
                    timeout,
                )
                .await?,
        )
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, Error> {
        self.get_json("/health").await
    }

    /// Polls [`health`](Self::health) until it succeeds or `within` has passed. Connect,
    /// handshake and HTTP errors are retried every ~25 ms; an [`Error::Agent`] answer (e.g.
    /// a wrong token) is returned at once. On expiry the last error is returned
    /// ([`Error::Timeout`] if there was none).
    pub async fn wait_healthy(&self, within: Duration) -> Result<Health, Error> {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(last.unwrap_or(Error::Timeout));
            }
            match tokio::time::timeout_at(deadline, self.health()).await {
                Ok(Ok(h)) => return Ok(h),
                Ok(Err(e @ (Error::Agent { .. } | Error::Decode(_)))) => return Err(e),
                Ok(Err(e)) => last = Some(e),
                Err(_) => return Err(last.unwrap_or(Error::Timeout)),
            }
            tokio::time::sleep_until((Instant::now() + HEALTH_RETRY).min(deadline)).await;
        }
    }

    fn exec_timeout(req: &ExecRequest) -> Duration {
        Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)) + EXEC_MARGIN
    }

    /// `POST /v1/exec`: runs a command to completion.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecResult, Error> {
        self.send_json(Method::POST, "/exec", req, Self::exec_timeout(req))
            .await
    }

    /// `POST /v1/exec/stream`: runs a command and yields its output as it arrives, ending
    /// with [`ExecEvent::Exit`]. Dropping the stream early makes the agent kill the command.
    /// A stream that ends without an exit event yields an [`Error::Http`] last.
    pub async fn exec_stream(&self, req: &ExecRequest) -> Result<ExecStream, Error> {
        let deadline = Instant::now() + Self::exec_timeout(req);
        let body = serde_json::to_vec(req).map_err(|e| Error::Decode(e.to_string()))?;
        let request = self.build(
            Method::POST,
            "/exec/stream",
            Some((Bytes::from(body), "application/json")),
        )?;
        let (resp, sender) = tokio::time::timeout_at(deadline, self.send(request))
            .await
            .map_err(|_| Error::Timeout)??;
        let status = resp.status();
        if !status.is_success() {
            let bytes = tokio::time::timeout_at(deadline, resp.into_body().collect())
                .await
                .map_err(|_| Error::Timeout)?
                .map_err(|e| Error::Http(e.to_string()))?
                .to_bytes();
            self.inner.put_idle(sender);
            return Err(agent_error(status, &bytes));
        }
        Ok(ExecStream::new(
            resp.into_body(),
            deadline,
            Some((sender, self.inner.clone())),
        ))
    }

    /// `GET /v1/files/content`: the whole file.
    pub async fn read_file(&self, path: &str) -> Result<Bytes, Error> {
        self.call(
            Method::GET,
            &format!("/files/content?path={}", q(path)),
            None,
            self.transfer_timeout,
        )
        .await
    }

    /// `PUT /v1/files/content`: writes atomically, creating parents; `mode` defaults to 0644.
    pub async fn write_file(
        &self,
        path: &str,
        data: Bytes,
        mode: Option<u32>,
    ) -> Result<FileStat, Error> {
        let mut pq = format!("/files/content?path={}", q(path));
        if let Some(m) = mode {
            pq.push_str(&format!("&mode={m:o}"));
        }
        decode(
            &self
                .call(
                    Method::PUT,
                    &pq,
                    Some((data, "application/octet-stream")),
                    self.transfer_timeout,
                )
                .await?,
        )
    }

    /// `GET /v1/files/stat` (a symlink is reported as itself).
    pub async fn stat(&self, path: &str) -> Result<FileStat, Error> {
        self.get_json(&format!("/files/stat?path={}", q(path)))
            .await
    }

    /// `GET /v1/files/list`: entries sorted by name.
    pub async fn list_dir(&self, path: &str) -> Result<DirListing, Error> {
        self.get_json(&format!("/files/list?path={}", q(path)))
            .await
    }

    /// `POST /v1/files/mkdir`: creates the directory and its parents.
    pub async fn mkdir(&self, path: &str) -> Result<FileStat, Error> {
        decode(
            &self
                .call(
                    Method::POST,
                    &format!("/files/mkdir?path={}", q(path)),
                    None,
                    self.timeout,
                )
                .await?,
        )
    }

    /// `DELETE /v1/files`: a non-empty directory needs `recursive`.
    pub async fn delete(&self, path: &str, recursive: bool) -> Result<(), Error> {
        self.call(
            Method::DELETE,
            &format!("/files?path={}&recursive={recursive}", q(path)),
            None,
            self.transfer_timeout,
        )
        .await
        .map(|_| ())
    }

    /// `PUT /v1/services/{name}`: defines (or replaces) and (re)starts a service.
    pub async fn put_service(
        &self,
        name: &str,
        spec: &ServiceSpec,
    ) -> Result<ServiceStatus, Error> {
        self.send_json(
            Method::PUT,
            &format!("/services/{}", seg(name)),
            spec,
            self.timeout,
        )
        .await
    }

    /// `PUT /v1/clock`: steps a guest's wall clock to `epoch_ms`; returns the guest's time.
    pub async fn set_clock(&self, epoch_ms: i64) -> Result<i64, Error> {
        let set: atelier_proto::ClockSet = self
            .send_json(
                Method::PUT,
                "/clock",
                &atelier_proto::ClockSet { epoch_ms },
                self.timeout,
            )
            .await?;
        Ok(set.epoch_ms)
    }

    /// `PUT /v1/env`: the environment every later command starts with (a request's own
    /// `env` overrides it; services get only their spec's); replaces the previous set.
    pub async fn set_env(
        &self,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<String>, Error> {
        let set: atelier_proto::SandboxEnvSet = self
            .send_json(
                Method::PUT,
                "/env",
                &atelier_proto::SandboxEnv { env: env.clone() },
                self.timeout,
            )
            .await?;
        Ok(set.names)
    }

    /// `PUT /v1/identity`: makes a restored clone its own machine (host name, token,
    /// clock, kernel RNG, machine id). Authenticated with this client's token, which the
    /// agent refuses from the answer on: talk to it with a client for `identity.token`.
    pub async fn set_identity(
        &self,
        identity: &atelier_proto::Identity,
    ) -> Result<atelier_proto::IdentityApplied, Error> {
        self.send_json(Method::PUT, "/identity", identity, self.timeout)
            .await
    }

    /// `GET /v1/services/{name}`.
    pub async fn service(&self, name: &str) -> Result<ServiceStatus, Error> {
        self.get_json(&format!("/services/{}", seg(name))).await
    }

    /// `GET /v1/services`.
    pub async fn services(&self) -> Result<Vec<ServiceStatus>, Error> {
        self.get_json("/services").await
    }

    /// `POST /v1/services/{name}/start`.
    pub async fn start_service(&self, name: &str) -> Result<ServiceStatus, Error> {
        decode(
            &self
                .call(
                    Method::POST,
                    &format!("/services/{}/start", seg(name)),
                    None,
                    self.timeout,
                )
                .await?,
        )
    }

    /// `POST /v1/services/{name}/stop` (SIGTERM, SIGKILL after 5 s; may take that long).
    pub async fn stop_service(&self, name: &str) -> Result<ServiceStatus, Error> {
        decode(
            &self
                .call(
                    Method::POST,
                    &format!("/services/{}/stop", seg(name)),
                    None,
                    self.timeout,
                )
                .await?,
        )
    }

    /// `DELETE /v1/services/{name}`: stops and forgets it.
    pub async fn delete_service(&self, name: &str) -> Result<(), Error> {
        self.call(
            Method::DELETE,
            &format!("/services/{}", seg(name)),
            None,
            self.timeout,
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1/services/{name}/logs`: from `offset`, at most `limit` bytes (agent default
    /// 64 KiB, max 1 MiB). Continue from the returned `next_offset`.
    pub async fn service_logs(
        &self,
        name: &str,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<LogChunk, Error> {
        let mut pq = format!("/services/{}/logs?offset={offset}", seg(name));
        if let Some(l) = limit {
            pq.push_str(&format!("&limit={l}"));
        }
        self.get_json(&pq).await
    }
}

struct StreamState {
    body: Incoming,
    buf: BytesMut,
    deadline: Instant,
    saw_exit: bool,
    done: bool,
    give_back: Option<(Sender, Arc<Inner>)>,
}

impl StreamState {
    fn parse(&mut self, line: &[u8]) -> Option<Result<ExecEvent, Error>> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return None;
        }
        Some(match serde_json::from_slice::<ExecEvent>(line) {
            Ok(ev) => {
                if matches!(ev, ExecEvent::Exit(_)) {
                    self.saw_exit = true;
                }
                Ok(ev)
            }
            Err(e) => {
                self.done = true;
                Err(Error::Decode(format!("exec event: {e}")))
            }
        })
    }

    async fn next(&mut self) -> Option<Result<ExecEvent, Error>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                match self.parse(&line) {
                    Some(r) => return Some(r),
                    None => continue,
                }
            }
            match tokio::time::timeout_at(self.deadline, self.body.frame()).await {
                Err(_) => {
                    self.done = true;
                    return Some(Err(Error::Timeout));
                }
                Ok(Some(Err(e))) => {
                    self.done = true;
                    return Some(Err(Error::Http(format!("exec stream: {e}"))));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Ok(None) => {
                    let rest = std::mem::take(&mut self.buf);
                    if let Some(r) = self.parse(&rest) {
                        return Some(r);
                    }
                    self.done = true;
                    if !self.saw_exit {
                        return Some(Err(Error::Http(
                            "exec stream ended before the exit event".into(),
                        )));
                    }
                    if let Some((sender, inner)) = self.give_back.take() {
                        inner.put_idle(sender);
                    }
                    return None;
                }
            }
        }
    }
}

/// The events of [`AgentClient::exec_stream`]: a `Stream` of `Result<ExecEvent, Error>`.
pub struct ExecStream {
    inner: Pin<Box<dyn Stream<Item = Result<ExecEvent, Error>> + Send>>,
}

impl ExecStream {
    fn new(body: Incoming, deadline: Instant, give_back: Option<(Sender, Arc<Inner>)>) -> Self {
        let state = StreamState {
            body,
            buf: BytesMut::new(),
            deadline,
            saw_exit: false,
            done: false,
            give_back,
        };
        let inner = futures::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for ExecStream {
    type Item = Result<ExecEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(q("/a b/c&d=e?#%ü"), "/a%20b/c%26d%3De%3F%23%25%C3%BC");
        assert_eq!(seg("a/b"), "a%2Fb");
        assert_eq!(q("plain-name_1.txt~"), "plain-name_1.txt~");
    }

    #[test]
    fn non_json_error_bodies_still_give_a_code() {
        let e = agent_error(StatusCode::NOT_FOUND, b"nope");
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.code(), Some("not_found"));
        let body = serde_json::to_vec(&ErrorBody::new("forbidden_path", "no")).unwrap();
        let e = agent_error(StatusCode::FORBIDDEN, &body);
        assert_eq!(e.code(), Some("forbidden_path"));
        assert!(e.to_string().contains("forbidden_path"), "{e}");
    }
}
