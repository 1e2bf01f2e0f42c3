//! Task dispatch to the agent's first event, three ways in the same run: a task that
//! starts from a clone of the workspace's warm prebuild (QEMU, `dev` image, 2 vCPUs,
//! 1 GiB), one that cold-boots the same image, and one on the `local` driver; beside a
//! bare spawn from the same prebuild to agent-ready (the restore a task's dispatch builds
//! on; `benches/prebuild.rs` puts that within 1.2× of a raw QEMU restore). The raw restore
//! cannot stand in here: the prebuild's machine has its tap in a network namespace, which
//! a QEMU restored by hand would need rebuilt.
//!
//! The agent is the scripted fake agent (its first step says a line), so the figure is
//! Atelier's path — sandbox, repo fetched to the base branch, agent shipped and started,
//! session opened, prompt sent — and not a model's latency. Times are the manager's own
//! (`created_at` of the task to `at` of its first text event), so polling adds nothing.
//!
//! Run: `cargo bench -p atelier-cli --bench dispatch` (needs QEMU, mmdebstrap, npm, git
//! and root; the first run builds the `dev` image, which takes minutes).

#[path = "../tests/common/mod.rs"]
mod common;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::git::served_origin;
use serde_json::{json, Value};

const SCENARIO: &str = "steps:\n  - say: \"on it\"\n  - finish\n";

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// Dispatches a task in `workspace` and waits for its agent's first text event; returns
/// the manager's time from the task's creation to that event, and the task's sandbox.
async fn dispatch(api: &common::Api, workspace: &str) -> (Duration, Value) {
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Say something", "workspace": workspace, "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let created = at(&t.body["created_at"]);
    let first = common::eventually(Duration::from_secs(600), "the first event", || {
        let (api, id) = (api.clone(), id.clone());
        async move {
            let task = api.get(&format!("/tasks/{id}")).await.body;
            assert_ne!(task["status"], "failed", "{task}");
            let events = api.get(&format!("/tasks/{id}/events")).await.body;
            events
                .as_array()
                .and_then(|e| e.iter().find(|e| e["event"]["type"] == "text").cloned())
        }
    })
    .await;
    let took = (at(&first["at"]) - created).to_std().unwrap_or_default();
    let task = api.get(&format!("/tasks/{id}")).await.body;
    (took, task)
}

/// Ends the task and waits for its sandbox to go, so that rounds do not overlap.
async fn finish(api: &common::Api, task: &Value) {
    let id = task["id"].as_str().unwrap();
    common::eventually(Duration::from_secs(300), "review", || async {
        (api.get(&format!("/tasks/{id}")).await.body["status"] == "review").then_some(())
    })
    .await;
    api.post(&format!("/tasks/{id}/done"), json!({})).await;
    if let Some(s) = task["sandbox_id"].as_str() {
        common::eventually(Duration::from_secs(300), "the sandbox to go", || async {
            (api.get(&format!("/sandboxes/{s}")).await.body["state"] == "destroyed").then_some(())
        })
        .await;
    }
}

fn workspace(name: &str, repo: &str, git_port: Option<u16>) -> Value {
    let mut w = json!({
        "name": name,
        "repos": [{"url": repo}],
        "base_image": "dev",
        "resources": {"vcpus": 2, "memory_mib": 1024, "disk_mib": 10240},
        "prebuild": {"auto_rebuild": false},
        "agent_config": {"runtime": "fake", "scenario": SCENARIO}
    });
    if let Some(port) = git_port {
        w["network"] = json!({"host_services": [{"port": port, "name": "git"}]});
    }
    w
}

#[tokio::main]
async fn main() {
    atelier_testkit::ensure_guest_agent();
    common::ensure_fake_agent_built();
    let dir = tempfile::tempdir().unwrap();
    let daemon = served_origin(dir.path());
    let data = atelier_testkit::data_dir_with_image_cache(&dir.path().join("vm"), "");
    let m = common::Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let local = common::Manager::start_with(&dir.path().join("local"), &["--driver", "local"]);
    let local_api = local.client();
    let built = api
        .send(
            api.req(reqwest::Method::POST, "/images/dev/build")
                .timeout(Duration::from_secs(2400)),
        )
        .await;
    assert_eq!(built.status, 200, "{}", built.body);
    let notes = api.get("/system").await.body["driver_notes"].to_string();
    let accel = if notes.contains("accelerator Kvm") {
        "kvm"
    } else {
        "tcg"
    };
    println!("Atelier dispatch benchmark (QEMU microvm, accelerator {accel}, dev image, 2 vCPUs, 1 GiB; fake agent)");

    // Two workspaces alike but for a prebuild: one has it, the other boots cold.
    let mut prebuild = String::new();
    for (name, prebuilt) in [("warm", true), ("cold", false)] {
        let r = api
            .post(
                "/workspaces",
                workspace(name, &daemon.sandbox_url(), Some(daemon.port)),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        if !prebuilt {
            continue;
        }
        let id = api
            .post(&format!("/workspaces/{name}/prebuilds"), json!({}))
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let p = common::eventually(Duration::from_secs(900), "the prebuild", || async {
            let p = api.get(&format!("/prebuilds/{id}")).await.body;
            (p["state"] != "building").then_some(p)
        })
        .await;
        assert_eq!(p["state"], "ready", "{p}");
        prebuild = id;
    }
    let local_repo = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let r = local_api
        .post("/workspaces", workspace("local", &local_repo, None))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Interleaved, so that every path sees the same host conditions.
    let rounds = 3;
    let (mut warm, mut cold, mut on_host, mut raw) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (d, task) = dispatch(&api, "warm").await;
        let s = api
            .get(&format!(
                "/sandboxes/{}",
                task["sandbox_id"].as_str().unwrap()
            ))
            .await
            .body;
        assert_eq!(s["prebuild_id"], prebuild.as_str(), "a clone: {s}");
        warm.push(d);
        finish(&api, &task).await;
        let (d, task) = dispatch(&api, "cold").await;
        cold.push(d);
        finish(&api, &task).await;
        let (d, task) = dispatch(&local_api, "local").await;
        on_host.push(d);
        finish(&local_api, &task).await;
        let t = Instant::now();
        let r = api
            .post(
                "/sandboxes?wait=true",
                json!({"workspace": "warm", "prebuild": true}),
            )
            .await;
        raw.push(t.elapsed());
        assert_eq!(r.body["state"], "running", "{}", r.body);
        api.delete(&format!("/sandboxes/{}", r.body["id"].as_str().unwrap()))
            .await;
    }
    let (w, c, l, r) = (
        percentile(warm, 0.5),
        percentile(cold, 0.5),
        percentile(on_host, 0.5),
        percentile(raw, 0.5),
    );
    println!(
        "dispatch → first event, warm prebuild clone (median of {rounds}): {}",
        ms(w)
    );
    println!(
        "dispatch → first event, cold boot (median of {rounds}):           {}",
        ms(c)
    );
    println!(
        "dispatch → first event, local driver (median of {rounds}):        {}",
        ms(l)
    );
    println!(
        "spawn from the prebuild → agent ready (median of {rounds}):  {}",
        ms(r)
    );
    println!(
        "ratio (cold / prebuild clone):                               {:.1}×",
        c.as_secs_f64() / w.as_secs_f64()
    );
    println!(
        "overhead (dispatch from a clone / spawn of a clone):         {:.2}×",
        w.as_secs_f64() / r.as_secs_f64()
    );
    // Where the time goes: the manager logs each dispatch's steps.
    println!("the manager's steps, per dispatch (warm and cold, in order):");
    for line in m.log().lines().filter(|l| l.contains("dispatched: ")) {
        if let Some(steps) = line.split("dispatched: ").nth(1) {
            println!("  {steps}");
        }
    }
}
