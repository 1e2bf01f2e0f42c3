//! Choosing drivers: an explicit choice must work; `auto` takes the best usable one and
//! says why. Every usable driver is kept, so sandboxes made by one keep being managed by it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::driver::{Driver, DriverKind, VmmError};
use crate::firecracker::{FirecrackerConfig, FirecrackerDriver};
use crate::image::ImageResolver;
use crate::images::{ImageConfig, ImageStore};
use crate::local::LocalDriver;
use crate::qemu::{choose_accel, find_qemu, QemuDriver};

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
    /// The `atelier-agent` binary for the local driver; found next to the running
    /// executable when unset.
    pub agent_binary: Option<PathBuf>,
    pub images: ImageConfig,
    /// Where kernels and images are built and cached (default: the data dir).
    pub image_cache: Option<PathBuf>,
    /// The Firecracker binary (default: `firecracker` on PATH).
    pub firecracker_binary: Option<PathBuf>,
    /// Run every Firecracker through the jailer (uid/gid, chroot, cgroup v2, netns).
    pub jailer: Option<crate::firecracker::JailerConfig>,
}

pub struct Selected {
    /// The driver new sandboxes get.
    pub default: Arc<dyn Driver>,
    /// Every usable driver (the default among them), by kind.
    pub all: Vec<Arc<dyn Driver>>,
    pub images: Arc<ImageStore>,
    /// One line per driver considered, saying why it was or was not taken.
    pub reasons: Vec<String>,
}

/// Builds the drivers usable under `data_dir` and picks the default one.
pub fn select_driver(
    choice: DriverChoice,
    data_dir: &Path,
    config: &DriverConfig,
) -> Result<Selected, VmmError> {
    let cache = config
        .image_cache
        .clone()
        .unwrap_or_else(|| data_dir.to_path_buf());
    let images = Arc::new(ImageStore::new(&cache, config.images.clone()));
    let mut reasons = vec![];
    let mut all: Vec<Arc<dyn Driver>> = vec![];
    // Why no microVM driver was chosen, to say what to install when `local` is the fallback.
    let mut qemu_unusable: Option<String> = None;
    let wants = |k: DriverKind| choice == DriverChoice::Auto || choice == DriverChoice::Only(k);

    if wants(DriverKind::Firecracker) {
        let made =
            crate::firecracker::probe(config.firecracker_binary.as_deref()).and_then(|probe| {
                let mut fc = FirecrackerConfig::new(
                    probe.binary,
                    images.clone() as Arc<dyn ImageResolver>,
                    data_dir,
                );
                fc.jailer = config.jailer.clone();
                fc.netns = crate::firecracker::NetnsChoice::Auto;
                if let Some(j) = &fc.jailer {
                    crate::firecracker::probe_jailer(j, &fc.binary)?;
                }
                FirecrackerDriver::new(fc)
                    .map(|d| (d, probe.version))
                    .map_err(|e| e.to_string())
            });
        match made {
            Ok((d, version)) => {
                reasons.push(format!("firecracker: usable ({version})"));
                all.push(Arc::new(d));
            }
            Err(why) if choice == DriverChoice::Only(DriverKind::Firecracker) => {
                return Err(VmmError::NotAvailable {
                    driver: DriverKind::Firecracker,
                    reason: why,
                });
            }
            Err(why) => reasons.push(format!("firecracker: skipped ({why})")),
        }
    }
    if wants(DriverKind::Qemu) {
        match qemu_driver(data_dir, &cache, images.clone()) {
            Ok(d) => {
                reasons.push(format!("qemu: usable ({})", d.accel().reason));
                all.push(Arc::new(d));
            }
            Err(why) if choice == DriverChoice::Only(DriverKind::Qemu) => {
                return Err(VmmError::NotAvailable {
                    driver: DriverKind::Qemu,
                    reason: why,
                });
            }
            Err(why) => {
                reasons.push(format!("qemu: skipped ({why})"));
                qemu_unusable = Some(why);
            }
        }
    }
    match find_agent_binary(config) {
        Ok(agent) => {
            let local = LocalDriver::new(data_dir, agent, vec![])?;
            all.push(Arc::new(local));
        }
        Err(e) if choice == DriverChoice::Only(DriverKind::Local) => return Err(e),
        Err(e) if all.is_empty() => return Err(e),
        Err(e) => reasons.push(format!("local: unavailable ({e})")),
    }
    let default = all.first().cloned().ok_or_else(|| VmmError::NotAvailable {
        driver: DriverKind::Local,
        reason: "no driver is usable".into(),
    })?;
    match (&qemu_unusable, default.kind()) {
        (Some(why), DriverKind::Local) => reasons.push(format!(
            "local: chosen for new sandboxes because qemu cannot run: {why}"
        )),
        _ => reasons.push(format!("{}: chosen for new sandboxes", default.kind())),
    }
    if default.kind() == DriverKind::Local {
        reasons.push("local: sandboxes are plain host processes with NO isolation".to_owned());
    }
    Ok(Selected {
        default,
        all,
        images,
        reasons,
    })
}

/// The QEMU driver, after building the default image and choosing KVM or TCG.
fn qemu_driver(
    data_dir: &Path,
    cache: &Path,
    images: Arc<ImageStore>,
) -> Result<QemuDriver, String> {
    let binary = find_qemu()?;
    which("qemu-img").ok_or("qemu-img is not installed (apt-get install qemu-utils)")?;
    let artifacts = images.resolve("minimal").map_err(|e| e.to_string())?;
    let accel = choose_accel(
        &binary,
        &artifacts,
        &cache.join("qemu-accel.json"),
        Duration::from_secs(15),
    );
    QemuDriver::new(
        data_dir,
        binary,
        images as Arc<dyn ImageResolver>,
        accel,
        vec![],
    )
    .map_err(|e| e.to_string())
}

fn which(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
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
    which("atelier-agent").ok_or_else(|| {
        missing(
            "atelier-agent was not found next to atelier nor on PATH; build it with \
             `cargo build -p atelier-agent` or set agent_binary in config.toml"
                .into(),
        )
    })
}
