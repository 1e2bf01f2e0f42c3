//! Choosing a driver: an explicit choice must work; `auto` takes the best usable one and
//! says why.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::driver::{Driver, DriverKind, VmmError};
use crate::local::LocalDriver;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    Auto,
    Only(DriverKind),
}

impl FromStr for DriverChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            Ok(Self::Auto)
        } else {
            s.parse()
                .map(Self::Only)
                .map_err(|_| format!("unknown driver {s:?} (auto, local, qemu, firecracker)"))
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DriverConfig {
    /// The `atelier-agent` binary; found next to the running executable when unset.
    pub agent_binary: Option<PathBuf>,
}

pub struct Selected {
    pub driver: Arc<dyn Driver>,
    /// One line per driver considered, saying why it was or was not taken.
    pub reasons: Vec<String>,
}

/// Builds the driver to use under `data_dir`.
pub fn select_driver(
    choice: DriverChoice,
    data_dir: &Path,
    config: &DriverConfig,
) -> Result<Selected, VmmError> {
    let mut reasons = vec![];
    // Virtual-machine drivers come first when they are usable; this build has none yet.
    for vm in [DriverKind::Firecracker, DriverKind::Qemu] {
        let why = "not available in this build of Atelier".to_owned();
        if choice == DriverChoice::Only(vm) {
            return Err(VmmError::NotAvailable {
                driver: vm,
                reason: why,
            });
        }
        reasons.push(format!("{vm}: skipped ({why})"));
    }
    let agent = find_agent_binary(config)?;
    let chosen = match choice {
        DriverChoice::Auto => "local: chosen (no virtual-machine driver is usable)",
        DriverChoice::Only(_) => "local: chosen (asked for)",
    };
    reasons.push(chosen.to_owned());
    reasons.push("local: sandboxes are plain host processes with NO isolation".to_owned());
    let driver = LocalDriver::new(data_dir, agent, reasons.clone())?;
    Ok(Selected {
        driver: Arc::new(driver),
        reasons,
    })
}

/// The agent binary: configured, `ATELIER_AGENT_BIN`, next to this executable, or on PATH.
pub fn find_agent_binary(config: &DriverConfig) -> Result<PathBuf, VmmError> {
    let missing = |reason: String| VmmError::NotAvailable {
        driver: DriverKind::Local,
        reason,
    };
    if let Some(p) = config
        .agent_binary
        .clone()
        .or_else(|| std::env::var_os("ATELIER_AGENT_BIN").map(PathBuf::from))
    {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(missing(format!(
                "the agent binary {} does not exist",
                p.display()
            )))
        };
    }
    let beside = std::env::current_exe().ok().and_then(|exe| {
        // Test binaries live one level deeper (target/debug/deps) than the real ones.
        let dir = exe.parent()?;
        [
            dir.join("atelier-agent"),
            dir.parent()?.join("atelier-agent"),
        ]
        .into_iter()
        .find(|p| p.is_file())
    });
    if let Some(p) = beside {
        return Ok(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("atelier-agent"))
            .find(|p| p.is_file())
    });
    on_path.ok_or_else(|| {
        missing(
            "atelier-agent was not found next to atelier nor on PATH; build it with \
             `cargo build -p atelier-agent` or set agent_binary in config.toml"
                .into(),
        )
    })
}
