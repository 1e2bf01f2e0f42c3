//! Spawn from a memory snapshot vs cold boot, on the QEMU driver, in one run:
//!
//! - **(a) cold boot**: `QemuDriver::launch` + `wait_ready` of the `minimal` image (1 vCPU,
//!   512 MiB) — qcow2 overlay, config disk, QEMU, kernel, initramfs, the agent's set-up;
//! - **(b) restore**: `launch_from_snapshot` + `wait_ready` from a snapshot of such a VM
//!   taken once it was ready — overlay, config disk, QEMU with `-incoming`, memory load,
//!   the VM running again, the agent answering the snapshot's token, `PUT /v1/identity`
//!   (host name, token, clock, entropy, machine id), the agent answering the new token;
//! - **(c) raw restore**: the same snapshot restored without Atelier: its files prepared
//!   beforehand (untimed), then `qemu-system-x86_64 … -incoming "exec:cat memory.bin"`,
//!   QMP `cont` if it is paused, and a hand-written HTTP health check with the snapshot's
//!   token polled on the forwarded port until it answers 200 — the floor;
//! - **(d)** 10 restores from the one snapshot at once: total time, per-sandbox p50/p99.
//!
//! Medians of `ATELIER_BENCH_RUNS` (default 5). Needs qemu-system-x86, qemu-utils and
//! busybox-static (skipped with the reason otherwise); builds the static agent and the
//! `minimal` image in the shared cache first.
//!
//! ```sh
//! cargo bench -p atelier-vmm --bench snapshot
//! ```

#[path = "../tests/qemu_support/mod.rs"]
mod qemu_support;
#[path = "support/raw_restore.rs"]
mod raw_restore;

use std::time::{Duration, Instant};

use atelier_vmm::{Driver, SandboxSpec, SnapshotInfo};
use qemu_support::{spec, QemuHarness};

const WITHIN: Duration = Duration::from_secs(180);

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn cold_boot(h: &QemuHarness) -> Duration {
    let s = spec("cold");
    let t = Instant::now();
    let rt = h.driver.launch(&s).await.expect("launch");
    h.driver.wait_ready(&s, &rt, WITHIN).await.expect("ready");
    let took = t.elapsed();
    h.driver.destroy(&s.id, Some(&rt)).await.expect("destroy");
    took
}

/// One restore through the driver: (memory restored and running, agent ready with its
/// identity). The clone is left running for the caller to destroy.
async fn restore(
    h: &QemuHarness,
    snap: &SnapshotInfo,
    old_token: &str,
    name: String,
) -> (SandboxSpec, atelier_vmm::Runtime, Duration, Duration) {
    let mut s = spec(&name);
    s.restore_token = Some(old_token.to_owned());
    let t = Instant::now();
    let rt = h
        .driver
        .launch_from_snapshot(&s, snap)
        .await
        .expect("launch from snapshot");
    let running = t.elapsed();
    h.driver.wait_ready(&s, &rt, WITHIN).await.expect("ready");
    (s, rt, running, t.elapsed())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let Some(h) = QemuHarness::new() else { return };
    let runs: usize = std::env::var("ATELIER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let concurrent = 10;
    println!("QEMU snapshot benchmark: minimal image, 1 vCPU, 512 MiB, {runs} runs each");

    // (a) cold boots.
    let mut cold = vec![];
    for _ in 0..runs {
        cold.push(cold_boot(&h).await);
    }

    // The snapshot: a VM booted to agent-ready, captured.
    let source = spec("source");
    let src_rt = h.driver.launch(&source).await.expect("launch the source");
    h.driver
        .wait_ready(&source, &src_rt, WITHIN)
        .await
        .expect("source ready");
    let t = Instant::now();
    let snap = h
        .driver
        .snapshot(&source, &src_rt, &h.dir.path().join("snapshot"))
        .await
        .expect("snapshot");
    let snap_took = t.elapsed();
    let memory_mib = std::fs::metadata(snap.memory.as_ref().expect("a QEMU snapshot holds memory"))
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / (1 << 20) as f64;

    // (b) and (c), interleaved so that both see the same host conditions.
    let (mut restored, mut restored_running) = (vec![], vec![]);
    let (mut raw, mut raw_running) = (vec![], vec![]);
    for i in 0..runs {
        let (s, rt, running, ready) = restore(&h, &snap, &source.agent_token, "clone".into()).await;
        h.driver.destroy(&s.id, Some(&rt)).await.expect("destroy");
        restored.push(ready);
        restored_running.push(running);
        let (running, ready) =
            raw_restore::raw_restore(&h.binary, h.dir.path(), &snap, Some(&source.agent_token), i)
                .await;
        raw.push(ready);
        raw_running.push(running);
    }

    // (d) concurrent restores.
    let t = Instant::now();
    let handles: Vec<_> = (0..concurrent)
        .map(|i| restore(&h, &snap, &source.agent_token, format!("many-{i}")))
        .collect();
    let done = futures_join_all(handles).await;
    let total = t.elapsed();
    let per: Vec<Duration> = done.iter().map(|d| d.3).collect();
    for (s, rt, _, _) in &done {
        h.driver.destroy(&s.id, Some(rt)).await.expect("destroy");
    }
    h.driver.destroy(&source.id, Some(&src_rt)).await.ok();

    let (a, b, c) = (
        median(cold.clone()),
        median(restored.clone()),
        median(raw.clone()),
    );
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| snapshot of a ready VM (sync, migrate, quit, flatten disk) | {} (memory file {memory_mib:.0} MiB) |",
        ms(snap_took)
    );
    println!("| (a) cold boot → agent ready, median | {} |", ms(a));
    println!(
        "| (b) restore → agent ready with its identity, median | {} (running after {}) |",
        ms(b),
        ms(median(restored_running))
    );
    println!(
        "| (c) raw QEMU restore → agent health (old token), median | {} (running after {}) |",
        ms(c),
        ms(median(raw_running))
    );
    println!(
        "| spawn vs cold boot (a)/(b) | **{:.1}×** (target ≥ 5×) |",
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "| Atelier overhead over the raw restore (b)/(c) | **{:.2}×** (target ≤ 1.25×) |",
        b.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "| (d) {concurrent} concurrent restores: total | {} |",
        ms(total)
    );
    println!(
        "| (d) per sandbox p50 / p99 | {} / {} |",
        ms(percentile(per.clone(), 0.5)),
        ms(percentile(per, 0.99))
    );
    println!();
    println!(
        "samples (ms): cold {:?}; restore {:?}; raw {:?}",
        cold.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        restored.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        raw.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
