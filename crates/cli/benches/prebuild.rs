//! Prebuild benchmark (QEMU driver, `minimal` image, 1 vCPU, 512 MiB), all through the
//! API of a real manager: a sandbox spawned from a prebuild (disk clone, memory restore,
//! new identity) to agent-ready, beside a cold boot of the same image and the raw QEMU
//! restore of the same snapshot without Atelier (the floor), in the same run; 10 spawns
//! at once; the disk used by 20 clones.
//!
//! Run: `cargo bench -p atelier-cli --bench prebuild`

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../vmm/benches/support/raw_restore.rs"]
mod raw_restore;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Bytes actually allocated under `dir` (a clone's own blocks).
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                allocated(&e.path())
            } else {
                meta.blocks() * 512
            };
        }
    }
    total
}

async fn spawn(api: &common::Api, body: serde_json::Value) -> (Duration, String) {
    let t = Instant::now();
    let r = api.post("/sandboxes?wait=true", body).await;
    let took = t.elapsed();
    assert_eq!(r.body["state"], "running", "{}", r.body);
    (took, r.body["id"].as_str().unwrap().to_owned())
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let data = atelier_testkit::data_dir_with_image_cache(dir.path(), "");
    atelier_testkit::ensure_guest_agent();
    let m = common::Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let notes = api.get("/system").await.body["driver_notes"].to_string();
    let accel = if notes.contains("accelerator Kvm") {
        "kvm"
    } else {
        "tcg"
    };
    println!("Atelier prebuild benchmark (QEMU microvm, accelerator {accel}, minimal image, 1 vCPU, 512 MiB)");

    let r = api
        .post(
            "/workspaces",
            json!({"name": "bench", "base_image": "minimal",
                   "resources": {"vcpus": 1, "memory_mib": 512, "disk_mib": 2048},
                   "init_commands": ["echo warm > /root/warm"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let t = Instant::now();
    let id = api
        .post("/workspaces/bench/prebuilds", json!({}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = common::eventually(Duration::from_secs(300), "the prebuild", || async {
        let p = api.get(&format!("/prebuilds/{id}")).await.body;
        (p["state"] != "building").then_some(p)
    })
    .await;
    assert_eq!(p["state"], "ready", "{p}");
    println!(
        "prebuild build (boot, init, capture):                 {}",
        ms(t.elapsed())
    );

    let snapshot: atelier_vmm::SnapshotInfo = serde_json::from_slice(
        &std::fs::read(
            data.join("prebuilds")
                .join(&id)
                .join("snapshot/snapshot.json"),
        )
        .unwrap(),
    )
    .unwrap();

    // Interleaved, so that all three see the same host conditions.
    let rounds = 5;
    let (mut cold, mut warm, mut raw) = (vec![], vec![], vec![]);
    for i in 0..rounds {
        let (d, sid) = spawn(&api, json!({"workspace": "bench", "prebuild": false})).await;
        cold.push(d);
        api.delete(&format!("/sandboxes/{sid}")).await;
        let (d, sid) = spawn(&api, json!({"workspace": "bench", "prebuild": true})).await;
        warm.push(d);
        api.delete(&format!("/sandboxes/{sid}")).await;
        let (_, ready) = raw_restore::raw_restore(
            Path::new("qemu-system-x86_64"),
            dir.path(),
            &snapshot,
            None,
            i,
        )
        .await;
        raw.push(ready);
    }
    let (c, w, r) = (
        percentile(cold, 0.5),
        percentile(warm.clone(), 0.5),
        percentile(raw, 0.5),
    );
    println!(
        "cold boot → agent ready (median of {rounds}):             {}",
        ms(c)
    );
    println!(
        "spawn from prebuild → agent ready (median of {rounds}):   {}",
        ms(w)
    );
    println!(
        "raw QEMU restore of the same snapshot (median of {rounds}): {}",
        ms(r)
    );
    println!(
        "ratio (cold / prebuild):                              {:.1}×",
        c.as_secs_f64() / w.as_secs_f64()
    );
    println!(
        "overhead (prebuild spawn / raw restore):              {:.2}×",
        w.as_secs_f64() / r.as_secs_f64()
    );

    // 10 at once.
    let t = Instant::now();
    let spawns = (0..10).map(|_| {
        let api = api.clone();
        async move { spawn(&api, json!({"workspace": "bench", "prebuild": true})).await }
    });
    let results = futures::future::join_all(spawns).await;
    let total = t.elapsed();
    let each: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    println!(
        "10 concurrent spawns: total {}, per sandbox p50 {}, p99 {}",
        ms(total),
        ms(percentile(each.clone(), 0.5)),
        ms(percentile(each, 0.99))
    );
    let mut ids: Vec<String> = results.into_iter().map(|(_, id)| id).collect();
    // 20 clones alive: what each adds on disk.
    for _ in 0..10 {
        ids.push(
            spawn(&api, json!({"workspace": "bench", "prebuild": true}))
                .await
                .1,
        );
    }
    let per_clone: Vec<u64> = ids
        .iter()
        .map(|id| allocated(&data.join("sandboxes").join(id)))
        .collect();
    let snapshot = allocated(&data.join("prebuilds").join(&id).join("snapshot"));
    println!(
        "disk: prebuild snapshot {:.1} MiB; 20 clones {:.1} MiB in all ({:.2} MiB each on average)",
        snapshot as f64 / 1048576.0,
        per_clone.iter().sum::<u64>() as f64 / 1048576.0,
        per_clone.iter().sum::<u64>() as f64 / 1048576.0 / per_clone.len() as f64
    );
    for id in ids {
        api.delete(&format!("/sandboxes/{id}")).await;
    }
}
