//! Boots a real Firecracker microVM — when this host can: `firecracker` on PATH (or
//! `ATELIER_TEST_FIRECRACKER`), `/dev/kvm` usable, and boot artifacts given by
//! `ATELIER_TEST_VMLINUX`, `ATELIER_TEST_INITRAMFS` and `ATELIER_TEST_ROOTFS` (an image
//! whose init starts `atelier-agent` from the config disk). Otherwise it prints why it
//! skipped and passes.

mod firecracker_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atelier_proto::ExecRequest;
use atelier_vmm::firecracker::{probe, FirecrackerConfig, FirecrackerDriver};
use atelier_vmm::{BootArtifacts, Driver};
use firecracker_support::{spec, FakeImages};

fn artifacts() -> Result<BootArtifacts, String> {
    let var = |name: &str| -> Result<PathBuf, String> {
        let p = std::env::var_os(name)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{name} is not set"))?;
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{name}={} does not exist", p.display()))
        }
    };
    let vmlinux = var("ATELIER_TEST_VMLINUX")?;
    Ok(BootArtifacts {
        bzimage: vmlinux.clone(),
        vmlinux,
        initramfs: var("ATELIER_TEST_INITRAMFS")?,
        rootfs: var("ATELIER_TEST_ROOTFS")?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_a_real_microvm() {
    let given = std::env::var_os("ATELIER_TEST_FIRECRACKER").map(PathBuf::from);
    let found = match probe(given.as_deref()) {
        Ok(p) => p,
        Err(why) => {
            atelier_testkit::skip_documented(format!("Firecracker cannot run here: {why}"));
            return;
        }
    };
    let artifacts = match artifacts() {
        Ok(a) => a,
        Err(why) => {
            atelier_testkit::skip_documented(format!("no Firecracker boot artifacts: {why}"));
            return;
        }
    };
    eprintln!(
        "booting with {} ({})",
        found.binary.display(),
        found.version
    );
    let dir = tempfile::tempdir().unwrap();
    let config = FirecrackerConfig::new(
        found.binary,
        Arc::new(FakeImages(artifacts)),
        dir.path().join("data"),
    );
    let d = FirecrackerDriver::new(config).unwrap();
    let mut s = spec();
    s.resources.disk_mib = 1024;
    let rt = d.launch(&s).await.expect("launch");
    let ready = d.wait_ready(&s, &rt, Duration::from_secs(60)).await;
    if let Err(e) = ready {
        let _ = d.destroy(&s.id, Some(&rt)).await;
        panic!("the VM did not come up: {e}");
    }
    let agent = d.agent(&rt, &s.agent_token).unwrap();
    let health = agent.health().await.unwrap();
    assert_eq!(health.hostname, "box");
    let out = agent
        .exec(&ExecRequest::shell("echo $GREETING from $(uname -s)"))
        .await
        .unwrap();
    assert_eq!(out.stdout.trim(), "hello from Linux");

    d.pause(&rt).await.unwrap();
    d.resume(&rt).await.unwrap();
    agent.wait_healthy(Duration::from_secs(10)).await.unwrap();

    d.stop(&s.id, Some(&rt)).await.unwrap();
    assert!(!d.is_alive(&rt));
    d.destroy(&s.id, None).await.unwrap();
    assert!(!d.paths(&s.id).dir.exists());
}
