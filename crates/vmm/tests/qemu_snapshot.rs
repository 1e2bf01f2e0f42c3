//! Snapshots and clones on real QEMU microVMs, driving [`QemuDriver`] directly: a booted
//! VM is captured (memory, devices, disk), two clones are restored from it at once, and
//! each must be its own machine — host name, kernel RNG, token, clock, disk — while
//! sharing everything that was there before the snapshot.
//!
//! Skipped (with the reason) without qemu-system-x86_64, qemu-img or busybox-static.
//! Images come from the shared cache `$HOME/.cache/atelier/test-images`.

mod qemu_support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use atelier_agent_client::AgentClient;
use atelier_proto::ExecRequest;
use atelier_vmm::{Driver, Runtime, SandboxSpec, SnapshotInfo, VmmError};
use qemu_support::{host_ms, processes_mentioning, sha256_file, spec, QemuHarness};

const BOOT: Duration = Duration::from_secs(180);

async fn sh(agent: &AgentClient, script: &str) -> String {
    let r = agent
        .exec(&ExecRequest::shell(script))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert_eq!(r.status.exit_code, Some(0), "{script}: {}", r.stderr);
    r.stdout
}

async fn restore(h: &QemuHarness, spec: &SandboxSpec, snap: &SnapshotInfo) -> (Runtime, Duration) {
    let started = Instant::now();
    let rt = h
        .driver
        .launch_from_snapshot(spec, snap)
        .await
        .unwrap_or_else(|e| panic!("restoring {}: {e}", spec.name));
    let loaded = started.elapsed();
    h.driver
        .wait_ready(spec, &rt, BOOT)
        .await
        .unwrap_or_else(|e| panic!("{} ready: {e}", spec.name));
    eprintln!(
        "{}: memory restored in {loaded:?}, agent ready with its identity in {:?}",
        spec.name,
        started.elapsed()
    );
    (rt, started.elapsed())
}

/// The guest's wall clock (ms), read from the mtime of a file it writes now.
async fn guest_clock_ms(agent: &AgentClient) -> (i64, i64, i64) {
    let before = host_ms();
    let stat = agent
        .write_file("/tmp/clock-probe", bytes::Bytes::from_static(b"x"), None)
        .await
        .expect("write the clock probe");
    (before, stat.modified_ms, host_ms())
}

/// Whether `path` exists in the root filesystem of the qcow2 `disk` (via a raw copy and
/// debugfs); `None` when debugfs is not installed.
fn file_in_disk(disk: &Path, path: &str, scratch: &Path) -> Option<Option<String>> {
    let debugfs = ["/sbin/debugfs", "/usr/sbin/debugfs"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let raw = scratch.join("disk.raw");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(disk)
        .arg(&raw)
        .output()
        .expect("qemu-img convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(debugfs)
        .args(["-R", &format!("cat {path}")])
        .arg(&raw)
        .output()
        .expect("debugfs");
    let _ = std::fs::remove_file(&raw);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("File not found") {
        Some(None)
    } else {
        Some(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_a_snapshot_are_distinct_machines_sharing_its_past() {
    let Some(h) = QemuHarness::new() else { return };
    let t0 = Instant::now();

    // A VM boots; a file is written in it; it is captured.
    let source = spec("source");
    let rt = h.driver.launch(&source).await.expect("launch");
    h.driver.wait_ready(&source, &rt, BOOT).await.expect("boot");
    eprintln!("source booted in {:?}", t0.elapsed());
    let agent = h.driver.agent(&rt, &source.agent_token).unwrap();
    agent
        .write_file(
            "/root/before.txt",
            bytes::Bytes::from_static(b"written before the snapshot\n"),
            None,
        )
        .await
        .unwrap();
    let snap_dir = h.dir.path().join("snapshots/s1");
    let started = Instant::now();
    let snap = h
        .driver
        .snapshot(&source, &rt, &snap_dir)
        .await
        .expect("snapshot");
    let snapped_at = Instant::now();
    eprintln!(
        "snapshot in {:?}: memory file {} MiB",
        started.elapsed(),
        std::fs::metadata(snap.memory.as_ref().expect("a QEMU snapshot holds memory"))
            .unwrap()
            .len()
            >> 20
    );
    assert!(!h.driver.is_alive(&rt), "the source is left stopped");
    assert!(
        rt.dir.join("disk.qcow2").is_file(),
        "the stopped source keeps its own disk"
    );
    assert_eq!((snap.vcpus, snap.memory_mib), (1, 512));
    assert_eq!(snap.image, "minimal");
    let json = serde_json::to_string(&snap).unwrap();
    assert_eq!(serde_json::from_str::<SnapshotInfo>(&json).unwrap(), snap);
    let recorded: SnapshotInfo =
        serde_json::from_slice(&std::fs::read(snap_dir.join("snapshot.json")).unwrap()).unwrap();
    assert_eq!(recorded, snap);
    let disk_hash = sha256_file(&snap.disk);
    let snapshot_files: HashSet<String> = std::fs::read_dir(&snap_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();

    // While the snapshot ages: what a restore refuses.
    let mut wrong_size = spec("wrong-size");
    wrong_size.restore_token = Some(source.agent_token.clone());
    wrong_size.resources.memory_mib = 1024;
    assert!(matches!(
        h.driver.launch_from_snapshot(&wrong_size, &snap).await,
        Err(VmmError::Snapshot(_))
    ));
    let no_token = spec("no-token");
    assert!(matches!(
        h.driver.launch_from_snapshot(&no_token, &snap).await,
        Err(VmmError::Snapshot(_))
    ));
    let mut again = snap_dir.clone();
    again.push(".");
    assert!(
        h.driver.snapshot(&source, &rt, &again).await.is_err(),
        "a stopped sandbox (or a used directory) cannot be captured"
    );

    // The snapshot is minutes old when its clones start: its guests' clocks stopped then.
    let age = Duration::from_secs(150);
    if let Some(left) = age.checked_sub(snapped_at.elapsed()) {
        eprintln!("waiting {left:?} for the snapshot to be {age:?} old");
        tokio::time::sleep(left).await;
    }

    let mut a = spec("clone-a");
    a.restore_token = Some(source.agent_token.clone());
    let mut b = spec("clone-b");
    b.restore_token = Some(source.agent_token.clone());
    let ((rt_a, _), (rt_b, _)) = tokio::join!(restore(&h, &a, &snap), restore(&h, &b, &snap));
    let agent_a = h.driver.agent(&rt_a, &a.agent_token).unwrap();
    let agent_b = h.driver.agent(&rt_b, &b.agent_token).unwrap();

    // Right after the restore, each guest's clock is the host's (the snapshot's is
    // minutes behind).
    for agent in [&agent_a, &agent_b] {
        let (before, guest, after) = guest_clock_ms(agent).await;
        assert!(
            guest >= before - 1000 && guest <= after + 1000,
            "guest clock {guest} vs host {before}..{after}"
        );
    }

    // Both answer, each under its own name.
    assert_eq!(agent_a.health().await.unwrap().hostname, "clone-a");
    assert_eq!(agent_b.health().await.unwrap().hostname, "clone-b");
    assert_eq!(sh(&agent_a, "hostname").await, "clone-a\n");
    assert_eq!(sh(&agent_b, "cat /etc/hostname").await, "clone-b\n");
    assert!(sh(&agent_b, "cat /etc/hosts").await.contains("clone-b"));
    let id_a = sh(&agent_a, "cat /etc/machine-id").await;
    let id_b = sh(&agent_b, "cat /etc/machine-id").await;
    assert_eq!(id_a.trim().len(), 32);
    assert_ne!(id_a, id_b, "distinct machine ids");

    // Their kernel RNGs diverged.
    let rand = "head -c 32 /dev/urandom | od -x";
    let (ra, rb) = (sh(&agent_a, rand).await, sh(&agent_b, rand).await);
    assert!(!ra.is_empty());
    assert_ne!(ra, rb, "/dev/urandom differs between clones");

    // Each answers to its own token alone; the snapshot's token is refused.
    for rt in [&rt_a, &rt_b] {
        let old = h.driver.agent(rt, &source.agent_token).unwrap();
        assert_eq!(old.health().await.unwrap_err().status(), Some(401));
    }
    let crossed = h.driver.agent(&rt_a, &b.agent_token).unwrap();
    assert_eq!(crossed.health().await.unwrap_err().status(), Some(401));
    let crossed = h.driver.agent(&rt_b, &a.agent_token).unwrap();
    assert_eq!(crossed.health().await.unwrap_err().status(), Some(401));

    // The past is shared; the present is not.
    for agent in [&agent_a, &agent_b] {
        assert_eq!(
            agent.read_file("/root/before.txt").await.unwrap(),
            "written before the snapshot\n"
        );
    }
    agent_a
        .write_file("/root/only-a.txt", bytes::Bytes::from_static(b"a\n"), None)
        .await
        .unwrap();
    sh(&agent_a, "sync").await;
    assert_eq!(sh(&agent_a, "cat /root/only-a.txt").await, "a\n");
    assert_eq!(
        agent_b.stat("/root/only-a.txt").await.unwrap_err().status(),
        Some(404),
        "clone B does not see clone A's file"
    );

    // Destroying the clones leaves nothing of them.
    for (s, rt) in [(&a, &rt_a), (&b, &rt_b)] {
        h.driver.destroy(&s.id, Some(rt)).await.expect("destroy");
        assert!(!h.driver.is_alive(rt));
        assert!(!rt.dir.exists(), "{} is removed", rt.dir.display());
        assert!(
            processes_mentioning(&rt.dir).is_empty(),
            "no process of {} is left",
            s.name
        );
    }
    h.driver.destroy(&source.id, Some(&rt)).await.unwrap();
    let left: Vec<_> = std::fs::read_dir(h.dir.path().join("sandboxes"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "no sandbox directory is left: {left:?}");
    assert!(processes_mentioning(&snap_dir).is_empty());

    // The snapshot itself is untouched.
    let now_files: HashSet<String> = std::fs::read_dir(&snap_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(now_files, snapshot_files);
    assert_eq!(
        sha256_file(&snap.disk),
        disk_hash,
        "the snapshot's disk is unchanged"
    );
    match file_in_disk(&snap.disk, "/root/only-a.txt", h.dir.path()) {
        None => {
            eprintln!("debugfs is not installed: the snapshot disk's contents are not inspected")
        }
        Some(found) => {
            assert_eq!(found, None, "clone A's file is not in the snapshot's disk");
            assert_eq!(
                file_in_disk(&snap.disk, "/root/before.txt", h.dir.path()),
                Some(Some("written before the snapshot\n".into()))
            );
        }
    }
    eprintln!("total {:?}", t0.elapsed());
}
