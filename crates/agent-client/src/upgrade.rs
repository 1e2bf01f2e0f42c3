//! Connections that leave HTTP behind after their first exchange: the terminal (a
//! WebSocket) and TCP tunnels (an `Upgrade: atelier-tunnel` connection carrying raw bytes).
//!
//! Each one gets its own transport connection (never a pooled one), over whatever
//! transport the client uses (TCP, Unix, vsock, Firecracker hybrid vsock).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use atelier_proto::{API_PREFIX, TUNNEL_UPGRADE};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;

use crate::connect::{self, BoxIo};
use crate::{agent_error, q, AgentClient, Error};

/// A terminal session: binary frames are terminal bytes both ways, text frames JSON
/// control messages ([`atelier_proto::TerminalClientMessage`] from the client,
/// [`atelier_proto::TerminalServerMessage`] from the agent).
pub type TerminalStream = tokio_tungstenite::WebSocketStream<BoxIo>;

/// A byte stream to a TCP port inside the sandbox ([`AgentClient::open_tunnel`]).
pub struct Tunnel {
    io: TokioIo<Upgraded>,
    port: u16,
}

impl Tunnel {
    /// The sandbox port at the other end.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel").field("port", &self.port).finish()
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn handshake_error(e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status();
            let body = resp.body().clone().unwrap_or_default();
            agent_error(status, &body)
        }
        other => Error::Handshake(format!("WebSocket: {other}")),
    }
}

impl AgentClient {
    /// `GET /v1/terminal`: a shell under a pseudo-terminal of `cols` × `rows` (each 1–1000).
    /// With `session`, reattaches to that shell if it is still alive (its recent output is
    /// replayed); otherwise a new shell starts. The first message is always
    /// [`atelier_proto::TerminalServerMessage::Session`].
    pub async fn open_terminal(
        &self,
        cols: u16,
        rows: u16,
        session: Option<&str>,
    ) -> Result<TerminalStream, Error> {
        self.open_terminal_in(cols, rows, session, None).await
    }

    /// Like [`open_terminal`](Self::open_terminal); a new shell starts in `cwd` (absolute,
    /// or relative to the sandbox's root) instead of the home directory.
    pub async fn open_terminal_in(
        &self,
        cols: u16,
        rows: u16,
        session: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<TerminalStream, Error> {
        let auth = self.inner.auth.clone().map_err(Error::Http)?;
        let auth = auth
            .to_str()
            .map_err(|e| Error::Http(format!("authorization header: {e}")))?
            .to_owned();
        let host = self
            .inner
            .host
            .to_str()
            .map_err(|e| Error::Http(format!("host header: {e}")))?;
        let mut pq = format!("{API_PREFIX}/terminal?cols={cols}&rows={rows}");
        if let Some(s) = session {
            pq.push_str(&format!("&session={}", q(s)));
        }
        if let Some(c) = cwd {
            pq.push_str(&format!("&cwd={}", q(c)));
        }
        let uri: http::Uri = format!("ws://{host}{pq}")
            .parse()
            .map_err(|e| Error::Http(format!("terminal URI: {e}")))?;
        let request = ClientRequestBuilder::new(uri).with_header(AUTHORIZATION.as_str(), auth);
        tokio::time::timeout(self.timeout, async {
            let io = connect::connect(&self.inner.addr, self.connect_timeout).await?;
            let (ws, _answer) = tokio_tungstenite::client_async(request, io)
                .await
                .map_err(handshake_error)?;
            Ok(ws)
        })
        .await
        .map_err(|_| Error::Timeout)?
    }

    /// `GET /v1/tunnel/{port}`: a byte stream to `127.0.0.1:{port}` inside the sandbox.
    /// Nothing listening there is an [`Error::Agent`] with status 502 (code
    /// `connection_refused`).
    pub async fn open_tunnel(&self, port: u16) -> Result<Tunnel, Error> {
        let auth = self.inner.auth.clone().map_err(Error::Http)?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("{API_PREFIX}/tunnel/{port}"))
            .header(HOST, self.inner.host.clone())
            .header(AUTHORIZATION, auth)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, TUNNEL_UPGRADE)
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Http(format!("building the request: {e}")))?;
        tokio::time::timeout(self.timeout, async {
            let io = connect::connect(&self.inner.addr, self.connect_timeout).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| Error::Handshake(format!("HTTP/1.1: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "tunnel connection ended");
                }
            });
            let answer = sender
                .send_request(request)
                .await
                .map_err(|e| Error::Http(e.to_string()))?;
            let status = answer.status();
            if status != StatusCode::SWITCHING_PROTOCOLS {
                let body = answer
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if status.is_success() {
                    return Err(Error::Decode(format!(
                        "the agent answered {status} instead of switching to a tunnel"
                    )));
                }
                return Err(agent_error(status, &body));
            }
            let upgraded = hyper::upgrade::on(answer)
                .await
                .map_err(|e| Error::Handshake(format!("tunnel upgrade: {e}")))?;
            Ok(Tunnel {
                io: TokioIo::new(upgraded),
                port,
            })
        })
        .await
        .map_err(|_| Error::Timeout)?
    }
}
