//! Reaching a TCP port inside a sandbox from the host, whatever the driver.
//!
//! A [`PortForward`] listens on `127.0.0.1:<ephemeral>` and carries each connection it
//! accepts through the sandbox's agent ([`AgentClient::open_tunnel`]) to a port on the
//! sandbox's own loopback. It is how the manager talks to a server inside a VM (a coding
//! agent's HTTP API, a dev server) without any guest networking set-up:
//!
//! ```no_run
//! # async fn demo(agent: atelier_agent_client::AgentClient) -> std::io::Result<()> {
//! use atelier_server::forward::PortForward;
//! // The coding agent listens on 127.0.0.1:4096 inside the sandbox.
//! let forward = PortForward::start(agent, 4096).await?;
//! let base_url = forward.url(); // "http://127.0.0.1:<port>": use it as if it were local
//! // … talk HTTP to `base_url` …
//! drop(forward); // the listener closes and open connections are cut
//! # Ok(()) }
//! ```
//!
//! Dropping the handle closes the listener and ends the connections it carried: keep it
//! for as long as the port is needed. Each connection is its own tunnel, so a failure
//! (nothing listening in the sandbox yet) only closes that connection.
//!
//! Only the manager may use a forward: a connection from any other process on the host
//! (another user's, a sandbox of the local driver) is closed before a tunnel opens. The
//! check finds the connecting socket in the kernel's TCP table and asks whether this
//! process holds it.

use std::net::{Ipv4Addr, SocketAddr};

use atelier_agent_client::AgentClient;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A host loopback port forwarded to a port inside a sandbox; stops when dropped.
#[derive(Debug)]
pub struct PortForward {
    local_addr: SocketAddr,
    sandbox_port: u16,
    stop: CancellationToken,
}

impl PortForward {
    /// Binds `127.0.0.1:0` and forwards every connection to `sandbox_port` inside the
    /// sandbox `agent` belongs to. Fails only if the host port cannot be bound, or for
    /// port 0; an unreachable sandbox port shows up as connections that close at once.
    pub async fn start(agent: AgentClient, sandbox_port: u16) -> std::io::Result<Self> {
        if sandbox_port == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the sandbox port must be 1–65535",
            ));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, agent, sandbox_port, stop.clone()));
        tracing::debug!(%local_addr, sandbox_port, "port forward started");
        Ok(Self {
            local_addr,
            sandbox_port,
            stop,
        })
    }

    /// The host address to connect to (`127.0.0.1:<port>`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port inside the sandbox.
    pub fn sandbox_port(&self) -> u16 {
        self.sandbox_port
    }

    /// `http://127.0.0.1:<port>`, for HTTP servers behind the forward.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    agent: AgentClient,
    sandbox_port: u16,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((socket, peer)) => {
                let local = socket.local_addr().ok();
                if !local.is_some_and(|local| from_this_process(peer, local)) {
                    tracing::warn!(%peer, sandbox_port, "port forward: refused a connection from another process");
                    continue;
                }
                tokio::spawn(carry(socket, agent.clone(), sandbox_port, stop.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "port forward: accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
    }
    tracing::debug!(sandbox_port, "port forward stopped");
}

async fn carry(mut socket: TcpStream, agent: AgentClient, port: u16, stop: CancellationToken) {
    let _ = socket.set_nodelay(true);
    let mut tunnel = tokio::select! {
        _ = stop.cancelled() => return,
        t = agent.open_tunnel(port) => match t {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(port, error = %e, "port forward: no tunnel");
                return;
            }
        },
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        r = tokio::io::copy_bidirectional(&mut socket, &mut tunnel) => {
            if let Err(e) = r {
                tracing::debug!(port, error = %e, "port forward: connection ended");
            }
        }
    }
}

/// Whether the TCP connection from `peer` to `local` (both on IPv4 loopback) was opened
/// by this process: its socket's inode is among this process's open files.
fn from_this_process(peer: SocketAddr, local: SocketAddr) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/net/tcp") else {
        return false;
    };
    let Some(inode) = socket_inode(&table, peer, local) else {
        return false;
    };
    let wanted = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
    })
}

/// The inode of the socket whose local end is `from` and remote end is `to`, in the
/// text of `/proc/net/tcp` (addresses as the kernel prints them: the IPv4 address as a
/// native-endian hex word, the port as hex).
fn socket_inode(table: &str, from: SocketAddr, to: SocketAddr) -> Option<u64> {
    let key = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    };
    let (from, to) = (key(from)?, key(to)?);
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&from.as_str()) && fields.get(2) == Some(&to.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_found_by_both_of_its_ends() {
        // Two lines as a little-endian host prints them: 127.0.0.1:41000 -> 127.0.0.1:8080
        // and the reverse direction.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:A028 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 424242 1 0 20 4 30 10 -1\n   \
            1: 0100007F:1F90 0100007F:A028 01 00000000:00000000 00:00000000 00000000     0        0 434343 1 0 20 4 30 10 -1\n";
        let client: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(socket_inode(table, client, server), Some(424242));
            assert_eq!(socket_inode(table, server, client), Some(434343));
        }
        assert_eq!(
            socket_inode(table, client, "127.0.0.1:9".parse().unwrap()),
            None
        );
    }

    #[tokio::test]
    async fn a_connection_of_this_process_is_recognised_as_its_own() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(from_this_process(peer, accepted.local_addr().unwrap()));
        // A connection that does not exist is nobody's.
        assert!(!from_this_process("127.0.0.1:1".parse().unwrap(), addr));
    }
}
