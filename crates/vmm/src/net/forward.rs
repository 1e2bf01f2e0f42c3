//! Host services: for each port a workspace names, a listener inside the sandbox's
//! namespace at the tap's address (the guest's gateway), forwarding each connection to
//! that port on the host's loopback. Nothing else of the host is reachable, and a
//! neighbour's namespace has listeners only for its own workspace's ports.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use atelier_core::HostService;
use tokio::task::JoinHandle;

use crate::driver::VmmError;

/// The forwards of one sandbox; closed when dropped.
#[derive(Debug, Default)]
pub struct HostForwards {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HostForwards {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl HostForwards {
    /// Adds a task that lives (and dies) with the forwards.
    pub fn push(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }
}

/// Runs `make` (which opens a socket, say) on a thread inside the network namespace
/// `netns`. Sockets stay in that namespace; the thread that entered it ends.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let netns = netns.to_path_buf();
    std::thread::Builder::new()
        .name("netns-bind".into())
        .spawn(move || {
            let ns = std::fs::File::open(&netns)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            make()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// A TCP listener bound to `addr` inside the network namespace `netns`.
pub fn bind_in_netns(netns: &Path, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    in_netns(netns, move || {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
}

/// Opens the forwards of `services` in `netns`, listening on `listen`:<port>. Must run
/// inside a Tokio runtime.
pub fn open(
    netns: &Path,
    listen: Ipv4Addr,
    services: &[HostService],
) -> Result<HostForwards, VmmError> {
    let mut forwards = HostForwards::default();
    for service in services {
        let at = SocketAddr::from((listen, service.port));
        let listener = bind_in_netns(netns, at)
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(VmmError::io(format!(
                "opening the host service forward {at} in {}",
                netns.display()
            )))?;
        let port = service.port;
        forwards.tasks.push(tokio::spawn(async move {
            loop {
                let Ok((mut inside, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again, not in a spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(async move {
                    match tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
                        Ok(mut host) => {
                            let _ = tokio::io::copy_bidirectional(&mut inside, &mut host).await;
                        }
                        Err(e) => {
                            tracing::debug!(port, error = %e, "a host service is not answering")
                        }
                    }
                });
            }
        }));
    }
    Ok(forwards)
}
