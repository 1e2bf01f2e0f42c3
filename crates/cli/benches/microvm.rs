//! MicroVM benchmark (QEMU driver): cold boot of the `minimal` image to agent-ready
//! through Atelier, beside the raw QEMU boot of the same kernel + initramfs to init (the
//! floor), measured in the same run; the agent's binary size and its RSS in the guest.
//! Run: `cargo bench -p atelier-cli --bench microvm`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Spawn → `/init` runs (the probe marker on the serial console), for the same kernel,
/// initramfs and accelerator as Atelier uses.
fn raw_boot_to_init(bzimage: &str, initramfs: &str, accel: &str) -> Duration {
    let khz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|i| {
            i.lines()
                .find(|l| l.starts_with("cpu MHz"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|mhz| format!(" tsc_early_khz={}", (mhz * 1000.0) as u64))
        .unwrap_or_default();
    let cpu = if accel == "kvm" { "host" } else { "max" };
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M", "microvm", "-accel", accel, "-cpu", cpu, "-m", "512", "-smp", "1",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args(["-kernel", bzimage, "-initrd", initramfs, "-append"])
        .arg(format!("console=ttyS0 panic=-1 quiet atelier.probe{khz}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu");
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let took = loop {
        let n = out.read(&mut buf).unwrap_or(0);
        if n == 0 {
            panic!("QEMU exited before init ran: {seen}");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains("ATELIER_PROBE_OK") {
            break started.elapsed();
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    took
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let data = atelier_testkit::data_dir_with_image_cache(dir.path(), "");
    let cache = atelier_testkit::image_cache_dir();
    atelier_testkit::ensure_guest_agent();
    let m = common::Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let system = api.get("/system").await;
    let notes = system.body["driver_notes"].to_string();
    let accel = if notes.contains("accelerator Kvm") {
        "kvm"
    } else {
        "tcg"
    };
    println!("Atelier microVM benchmark (QEMU microvm, accelerator {accel}, minimal image)");

    let rounds = 5;
    let mut atelier = vec![];
    let mut rss = String::new();
    for i in 0..rounds {
        let t = Instant::now();
        let r = api
            .post(
                "/sandboxes?wait=true",
                json!({"name": format!("b{i}"), "image": "minimal", "vcpus": 1, "memory_mib": 512}),
            )
            .await;
        atelier.push(t.elapsed());
        assert_eq!(r.body["state"], "running", "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        if i == 0 {
            let r = api
                .post(&format!("/sandboxes/{id}/exec"), json!({"command": "for p in $(pidof atelier-agent); do grep VmRSS /proc/$p/status; done", "shell": true}))
                .await;
            rss = r.body["stdout"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
        }
        api.delete(&format!("/sandboxes/{id}")).await;
    }

    let images = std::fs::read_dir(cache.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("image.json").is_file());
    let image_dir = images
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("minimal-")
        })
        .max_by_key(|p| {
            std::fs::metadata(p.join("image.json"))
                .and_then(|m| m.modified())
                .ok()
        })
        .unwrap();
    let kernel = std::fs::read_dir(cache.join("kernels"))
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .unwrap()
        .path();
    let bz = std::fs::read_dir(kernel.join("boot"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz"))
        .unwrap()
        .path();
    let raw: Vec<Duration> = (0..rounds)
        .map(|_| {
            raw_boot_to_init(
                bz.to_str().unwrap(),
                image_dir.join("initramfs.img").to_str().unwrap(),
                accel,
            )
        })
        .collect();

    let (a, r) = (median(atelier), median(raw));
    println!(
        "raw QEMU boot to init, same kernel+initramfs (median of {rounds}): {}",
        secs(r)
    );
    println!(
        "Atelier create → agent ready (median of {rounds}):             {}",
        secs(a)
    );
    println!(
        "ratio (Atelier / raw):                                     {:.2}×",
        a.as_secs_f64() / r.as_secs_f64()
    );
    let agent = common::atelier_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("x86_64-unknown-linux-gnu/agent/atelier-agent");
    if let Ok(meta) = std::fs::metadata(&agent) {
        println!(
            "static atelier-agent binary:                               {:.2} MiB",
            meta.len() as f64 / (1 << 20) as f64
        );
    }
    println!("atelier-agent RSS in the guest (init, agent):              {rss}");
}
