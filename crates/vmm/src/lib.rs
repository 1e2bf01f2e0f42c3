//! Hypervisor drivers.
//!
//! Every driver implements [`Driver`]: launch a sandbox's machine (or process), wait for
//! its `atelier-agent`, stop, pause, destroy, and sweep what a crash left behind. The
//! server never touches host resources directly; it persists what the driver reports
//! ([`Runtime`]) before waiting on it, so a restart can adopt or clean up.

mod driver;
#[cfg(feature = "fake")]
pub mod fake;
pub mod firecracker;
pub mod guest;
pub mod image;
pub mod images;
pub mod local;
pub mod net;
pub mod process;
pub mod qemu;
mod select;
mod snapshot_dir;
pub mod storage;

pub use driver::{
    Driver, DriverInfo, DriverKind, Runtime, SandboxSpec, SnapshotInfo, StorageChoice, VmmError,
};
pub use image::{BootArtifacts, ImageResolver};
pub use select::{find_agent_binary, select_driver, DriverChoice, DriverConfig, Selected};

/// Milliseconds since the Unix epoch on the host's clock (0 if it is before 1970).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
