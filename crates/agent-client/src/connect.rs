//! Opening a byte stream to an agent over any [`AgentAddr`] transport.

use std::io;
use std::path::Path;
use std::time::Duration;

use atelier_proto::AgentAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::Error;

/// A connected, bidirectional byte stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;

/// Longest reply line accepted during the hybrid-vsock handshake.
const MAX_HANDSHAKE_LINE: usize = 128;

fn connect_err(addr: &AgentAddr, source: io::Error) -> Error {
    Error::Connect {
        addr: addr.to_string(),
        source,
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

/// Connects to `addr`, performing Firecracker's `CONNECT <port>` handshake for `fcvsock:`.
pub async fn connect(addr: &AgentAddr, timeout: Duration) -> Result<BoxIo, Error> {
    match addr {
        AgentAddr::Tcp(sa) => {
            let s = tokio::time::timeout(timeout, TcpStream::connect(sa))
                .await
                .map_err(|_| connect_err(addr, timed_out("connect")))?
                .map_err(|e| connect_err(addr, e))?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        AgentAddr::Unix(path) => Ok(Box::new(unix(addr, path, timeout).await?)),
        AgentAddr::Vsock { cid, port } => {
            let va = tokio_vsock::VsockAddr::new(*cid, *port);
            let s = tokio::time::timeout(timeout, tokio_vsock::VsockStream::connect(va))
                .await
                .map_err(|_| connect_err(addr, timed_out("connect")))?
                .map_err(|e| connect_err(addr, e))?;
            Ok(Box::new(s))
        }
        AgentAddr::HybridVsock { uds, port } => {
            let mut s = unix(addr, uds, timeout).await?;
            tokio::time::timeout(timeout, hybrid_handshake(&mut s, *port))
                .await
                .map_err(|_| {
                    Error::Handshake(format!(
                        "no answer to CONNECT {port} on {} within {timeout:?}",
                        uds.display()
                    ))
                })??;
            Ok(Box::new(s))
        }
    }
}

async fn unix(addr: &AgentAddr, path: &Path, timeout: Duration) -> Result<UnixStream, Error> {
    tokio::time::timeout(timeout, UnixStream::connect(path))
        .await
        .map_err(|_| connect_err(addr, timed_out("connect")))?
        .map_err(|e| connect_err(addr, e))
}

/// Firecracker hybrid vsock: send `CONNECT <port>\n`, expect `OK <host port>\n`.
///
/// The reply is read byte by byte so nothing past the newline is consumed.
pub async fn hybrid_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    port: u32,
) -> Result<(), Error> {
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| Error::Handshake(format!("sending CONNECT {port}: {e}")))?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut b = [0u8; 1];
        let n = s
            .read(&mut b)
            .await
            .map_err(|e| Error::Handshake(format!("reading the reply to CONNECT {port}: {e}")))?;
        if n == 0 {
            return Err(Error::Handshake(format!(
                "connection closed in reply to CONNECT {port} (is the agent listening on \
                 vsock port {port} in the guest?)"
            )));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > MAX_HANDSHAKE_LINE {
            return Err(Error::Handshake(format!(
                "reply to CONNECT {port} is too long"
            )));
        }
    }
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end_matches('\r');
    match text.strip_prefix("OK ") {
        Some(n) if n.trim().parse::<u32>().is_ok() => Ok(()),
        _ => Err(Error::Handshake(format!(
            "unexpected reply to CONNECT {port}: {text:?} (expected \"OK <port>\")"
        ))),
    }
}
