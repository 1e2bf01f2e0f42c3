//! Shared by the QEMU snapshot test and benchmark: a [`QemuDriver`] over the shared image
//! cache, in a temporary data dir, skipped with the reason when the host lacks QEMU.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atelier_core::{Resources, SandboxId};
use atelier_proto::to_hex;
use atelier_vmm::guest::host_random;
use atelier_vmm::image::ImageResolver;
use atelier_vmm::images::{ImageConfig, ImageStore};
use atelier_vmm::qemu::{choose_accel, find_qemu, QemuDriver};
use atelier_vmm::{BootArtifacts, SandboxSpec};

pub use atelier_testkit::{ensure_guest_agent, image_cache_dir as cache_dir};

pub struct QemuHarness {
    pub driver: QemuDriver,
    pub artifacts: BootArtifacts,
    pub binary: PathBuf,
    /// Holds `sandboxes/` (the driver's) and whatever the test puts there.
    pub dir: tempfile::TempDir,
}

impl QemuHarness {
    /// `None` (with the reason printed) when the host cannot run QEMU sandboxes.
    pub fn new() -> Option<Self> {
        if let Some(why) = atelier_testkit::qemu_missing() {
            atelier_testkit::skip(why);
            return None;
        }
        ensure_guest_agent();
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_writer(std::io::stderr)
                .try_init();
        }
        let cache = cache_dir();
        let store = Arc::new(ImageStore::new(&cache, ImageConfig::default()));
        let artifacts = store.resolve("minimal").expect("the minimal image");
        let binary = find_qemu().expect("qemu");
        let accel = choose_accel(
            &binary,
            &artifacts,
            &cache.join("qemu-accel.json"),
            Duration::from_secs(15),
        );
        eprintln!("accelerator: {:?} ({})", accel.accel, accel.reason);
        let dir = tempfile::tempdir().unwrap();
        let driver = QemuDriver::new(
            dir.path(),
            binary.clone(),
            store as Arc<dyn ImageResolver>,
            accel,
            vec![],
        )
        .expect("driver");
        Some(Self {
            driver,
            artifacts,
            binary,
            dir,
        })
    }
}

pub fn random_token() -> String {
    to_hex(&host_random(32).unwrap())
}

/// A 1-vCPU, 512 MiB `minimal` sandbox named `name`, with a fresh token.
pub fn spec(name: &str) -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::generate(),
        name: name.into(),
        resources: Resources {
            vcpus: 1,
            memory_mib: 512,
            disk_mib: 256,
        },
        image: "minimal".into(),
        agent_token: random_token(),
        env: BTreeMap::new(),
        restore_token: None,
        network: Default::default(),
        shared_folders: vec![],
    }
}

pub fn host_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    to_hex(&Sha256::digest(std::fs::read(p).unwrap()))
}

/// Pids whose command line mentions `dir` anywhere.
pub fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    atelier_vmm::process::all_pids()
        .into_iter()
        .filter(|p| *p != std::process::id())
        .filter(|p| {
            atelier_vmm::process::cmdline(*p)
                .iter()
                .any(|a| a.contains(&needle))
        })
        .collect()
}
