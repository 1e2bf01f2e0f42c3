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
            Ok((socket, _)) => {
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
