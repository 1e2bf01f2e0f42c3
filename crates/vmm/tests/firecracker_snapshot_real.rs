//! Snapshots and clones on a real Firecracker — when this host can: `firecracker` on PATH
//! (or `ATELIER_TEST_FIRECRACKER`), `/dev/kvm` usable, and boot artifacts given by
//! `ATELIER_TEST_VMLINUX`, `ATELIER_TEST_INITRAMFS` and `ATELIER_TEST_ROOTFS`. Memory
//! snapshots need the jailer (`jailer` on PATH or `ATELIER_TEST_JAILER`, and root; its
//! chroot base is a temporary directory); without it the snapshot is disk-only and the
//! clones boot. Otherwise it prints why it skipped and passes.

mod firecracker_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_agent_client::AgentClient;
use atelier_proto::ExecRequest;
use atelier_vmm::firecracker::{
    find_binary, probe, probe_jailer, FirecrackerConfig, FirecrackerDriver, JailerConfig,
    NetnsChoice,
};
use atelier_vmm::{BootArtifacts, Driver, SandboxSpec};
use firecracker_support::{spec, FakeImages};

const READY: Duration = Duration::from_secs(60);

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

async fn sh(agent: &AgentClient, script: &str) -> String {
    let r = agent
        .exec(&ExecRequest::shell(script))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert_eq!(r.status.exit_code, Some(0), "{script}: {}", r.stderr);
    r.stdout.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_a_real_snapshot_are_distinct_machines() {
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
    let dir = tempfile::tempdir().unwrap();
    let mut config = FirecrackerConfig::new(
        found.binary.clone(),
        Arc::new(FakeImages(artifacts)),
        dir.path().join("data"),
    );
    config.netns = NetnsChoice::Auto;
    let jailer = std::env::var_os("ATELIER_TEST_JAILER")
        .map(PathBuf::from)
        .or_else(|| find_binary(std::path::Path::new("jailer")));
    if let Some(binary) = jailer {
        let mut j = JailerConfig::new(binary, 10_000, 10_000);
        j.chroot_base = dir.path().join("jails");
        match probe_jailer(&j, &found.binary) {
            Ok(()) => config.jailer = Some(j),
            Err(why) => eprintln!("without the jailer (disk-only snapshot): {why}"),
        }
    } else {
        eprintln!("without the jailer (disk-only snapshot): jailer was not found");
    }
    let d = FirecrackerDriver::new(config).unwrap();
    eprintln!("{} — {:?}", found.version, d.info().notes);

    let mut src = spec();
    src.resources.disk_mib = 1024;
    let rt = d.launch(&src).await.expect("launch");
    if let Err(e) = d.wait_ready(&src, &rt, READY).await {
        let _ = d.destroy(&src.id, Some(&rt)).await;
        panic!("the VM did not come up: {e}");
    }
    let agent = d.agent(&rt, &src.agent_token).unwrap();
    sh(&agent, "echo prebuilt > /root/setup-marker && sync").await;
    let info = d
        .snapshot(&src, &rt, &dir.path().join("prebuild"))
        .await
        .expect("snapshot");
    eprintln!(
        "snapshot: memory {}",
        if info.restores_memory() {
            "captured"
        } else {
            "not captured (disk only)"
        }
    );

    let mut clones: Vec<(SandboxSpec, atelier_vmm::Runtime)> = vec![];
    for name in ["clone-a", "clone-b"] {
        let mut s = spec();
        s.name = name.into();
        s.agent_token = format!("token-of-{name}-0123456789");
        s.restore_token = Some(src.agent_token.clone());
        s.resources = src.resources;
        let started = Instant::now();
        let rt = d.launch_from_snapshot(&s, &info).await.expect("restore");
        d.wait_ready(&s, &rt, READY).await.expect("clone ready");
        eprintln!("{name}: ready in {:?}", started.elapsed());
        clones.push((s, rt));
    }
    let a = d.agent(&clones[0].1, &clones[0].0.agent_token).unwrap();
    let b = d.agent(&clones[1].1, &clones[1].0.agent_token).unwrap();
    assert_eq!(sh(&a, "hostname").await, "clone-a");
    assert_eq!(sh(&b, "hostname").await, "clone-b");
    assert_eq!(sh(&a, "cat /root/setup-marker").await, "prebuilt");
    assert_ne!(
        sh(&a, "head -c 16 /dev/urandom | od -An -tx1").await,
        sh(&b, "head -c 16 /dev/urandom | od -An -tx1").await
    );
    sh(&a, "echo mine > /root/only-in-a && sync").await;
    assert_eq!(
        sh(&b, "test -e /root/only-in-a && echo yes || echo no").await,
        "no"
    );

    for (s, rt) in &clones {
        d.destroy(&s.id, Some(rt)).await.unwrap();
    }
    d.destroy(&src.id, None).await.unwrap();
}
