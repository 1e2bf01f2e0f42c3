//! The floor of a restore: a QEMU snapshot restored by hand, without Atelier — the
//! clone's files prepared beforehand (untimed), then `qemu-system-x86_64 … -incoming`,
//! QMP `cont` if it is paused, and a hand-written health check on the forwarded port.
//! Shared by the driver-level and the API-level benchmarks.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atelier_proto::GUEST_AGENT_PORT;
use atelier_vmm::qemu::snapshot::QemuSnapshot;
use atelier_vmm::qemu::Accel;
use atelier_vmm::SnapshotInfo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const WITHIN: Duration = Duration::from_secs(180);

/// QMP by hand: capabilities, then `query-status` until the incoming migration is done,
/// `cont` if the VM is paused.
pub async fn raw_qmp_run(socket: &Path) {
    let stream = loop {
        if let Ok(s) = tokio::net::UnixStream::connect(socket).await {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    async fn next(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    ) -> serde_json::Value {
        loop {
            let line = lines.next_line().await.expect("qmp").expect("qmp closed");
            let v: serde_json::Value = serde_json::from_str(&line).expect("qmp json");
            if v.get("event").is_none() {
                return v;
            }
        }
    }
    next(&mut lines).await;
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .await
        .unwrap();
    next(&mut lines).await;
    loop {
        w.write_all(b"{\"execute\":\"query-status\"}\n")
            .await
            .unwrap();
        let v = next(&mut lines).await;
        match v["return"]["status"].as_str().unwrap_or("") {
            "running" => return,
            "paused" | "postmigrate" | "prelaunch" => {
                w.write_all(b"{\"execute\":\"cont\"}\n").await.unwrap();
                next(&mut lines).await;
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// `GET /v1/health` by hand; true on a 200 — or, without the token (a prebuild's is
/// sealed in the manager's store), on any answer of the agent (a 401 is one).
async fn raw_health(port: u16, token: Option<&str>) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!(
            "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            token.unwrap_or("-")
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let answer = &buf[..n];
        Some(
            answer.starts_with(b"HTTP/1.1 200")
                || (token.is_none() && answer.starts_with(b"HTTP/1.1 401")),
        )
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The snapshot restored without Atelier: (running, health answered with the old token).
pub async fn raw_restore(
    qemu: &Path,
    work: &Path,
    snap: &SnapshotInfo,
    old_token: Option<&str>,
    i: usize,
) -> (Duration, Duration) {
    let q: QemuSnapshot = serde_json::from_value(snap.machine.clone()).expect("a QEMU snapshot");
    // Untimed preparation: the clone's directory, disk overlay and config disk.
    let dir = work.join(format!("raw-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&q.overlay, dir.join("disk.qcow2")).unwrap();
    std::fs::write(
        dir.join("config.img"),
        vec![0u8; atelier_proto::GUEST_CONFIG_DISK_BYTES],
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = &q.machine;
    let accel = match m.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    };
    let mut cmd = Command::new(qemu);
    cmd.args(["-M", "microvm", "-accel", accel, "-cpu", &m.cpu])
        .args([
            "-m",
            &m.memory_mib.to_string(),
            "-smp",
            &m.vcpus.to_string(),
        ])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&m.kernel)
        .arg("-initrd")
        .arg(&m.initramfs)
        .arg("-append")
        .arg(&m.append)
        .arg("-serial")
        .arg(format!("file:{}", dir.join("console.log").display()))
        .arg("-drive")
        .arg(format!(
            "id=root,file={},format=qcow2,if=none,discard=unmap",
            dir.join("disk.qcow2").display()
        ))
        .args(["-device", "virtio-blk-device,drive=root"])
        .arg("-drive")
        .arg(format!(
            "id=cfg,file={},format=raw,if=none,readonly=on",
            dir.join("config.img").display()
        ))
        .args(["-device", "virtio-blk-device,drive=cfg"])
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{GUEST_AGENT_PORT}"
        ))
        .args([
            "-device",
            "virtio-net-device,netdev=n0",
            "-device",
            "virtio-rng-device",
        ])
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ))
        .arg("-incoming")
        .arg(format!(
            "exec:cat {}",
            snap.memory
                .as_ref()
                .expect("a QEMU snapshot holds memory")
                .display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("qemu");
    raw_qmp_run(&dir.join("qmp.sock")).await;
    let running = t.elapsed();
    while !raw_health(port, old_token).await {
        assert!(t.elapsed() < WITHIN, "the raw restore never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = t.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (running, ready)
}
