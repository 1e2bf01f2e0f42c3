//! Listening transports behind one abstraction: TCP, Unix sockets and AF_VSOCK.
//!
//! [`AgentListener`] yields [`Conn`]s (AsyncRead + AsyncWrite) whatever the transport, and
//! implements [`axum::serve::Listener`] so the HTTP layer does not care.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use atelier_proto::AgentAddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

/// A bound listener on any supported transport.
pub enum AgentListener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Vsock(VsockListener),
}

/// One accepted connection.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    Vsock(VsockStream),
}

impl AgentListener {
    /// Binds `addr`. For Unix sockets a stale socket file is removed first and the new
    /// socket is made `0600`.
    pub async fn bind(addr: &AgentAddr) -> io::Result<Self> {
        match addr {
            AgentAddr::Tcp(sa) => Ok(Self::Tcp(TcpListener::bind(sa).await?)),
            AgentAddr::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Ok(Self::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            AgentAddr::Vsock { cid, port } => Ok(Self::Vsock(VsockListener::bind(
                VsockAddr::new(*cid, *port),
            )?)),
            AgentAddr::HybridVsock { .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fcvsock: is the host side of Firecracker's vsock; inside the guest listen on \
                 vsock:<cid>:<port> (e.g. vsock:4294967295:1024)",
            )),
        }
    }

    /// The address actually bound (with the real port for `tcp:…:0`).
    pub fn local_agent_addr(&self) -> io::Result<AgentAddr> {
        match self {
            Self::Tcp(l) => Ok(AgentAddr::Tcp(l.local_addr()?)),
            Self::Unix { path, .. } => Ok(AgentAddr::Unix(path.clone())),
            Self::Vsock(l) => {
                let a = l.local_addr()?;
                Ok(AgentAddr::Vsock {
                    cid: a.cid(),
                    port: a.port(),
                })
            }
        }
    }

    /// The Unix socket path to remove at shutdown, if any.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Self::Unix { path, .. } => Some(path),
            _ => None,
        }
    }

    async fn accept_once(&self) -> io::Result<Conn> {
        match self {
            Self::Tcp(l) => {
                let (s, _) = l.accept().await?;
                // Small request/response exchanges: do not let Nagle delay them.
                let _ = s.set_nodelay(true);
                Ok(Conn::Tcp(s))
            }
            Self::Unix { listener, .. } => Ok(Conn::Unix(listener.accept().await?.0)),
            Self::Vsock(l) => Ok(Conn::Vsock(l.accept().await?.0)),
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for AgentListener {
    type Io = Conn;
    type Addr = String;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.accept_once().await {
                Ok(c) => {
                    let peer = c.peer();
                    return (c, peer);
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.local_agent_addr().map(|a| a.to_string())
    }
}

impl Conn {
    fn peer(&self) -> String {
        match self {
            Self::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "tcp".into()),
            Self::Unix(_) => "unix".into(),
            Self::Vsock(s) => s
                .peer_addr()
                .map(|a| format!("vsock:{}:{}", a.cid(), a.port()))
                .unwrap_or_else(|_| "vsock".into()),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Vsock(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
            Self::Vsock(s) => s.is_write_vectored(),
        }
    }
}
