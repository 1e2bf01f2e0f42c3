//! Foundation benchmark: a real `atelier serve` (local driver) on loopback.
//!
//! Prints: list latency over 1,000 sandboxes; create+destroy rate; exec round-trip
//! through manager → agent against a raw HTTP round-trip to the same agent (ratio).
//! Run: `cargo bench -p atelier-cli --bench foundation`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use atelier_agent_client::AgentClient;
use atelier_proto::ExecRequest;
use serde_json::json;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn seed(data: &std::path::Path, n: usize) {
    std::fs::create_dir_all(data).unwrap();
    let store = atelier_store::Store::open(&data.join("atelier.db"), &data.join("secrets.key"))
        .await
        .unwrap();
    for i in 0..n {
        let new = atelier_store::NewSandbox {
            name: format!("seed-{i}"),
            workspace_id: None,
            driver: "local".into(),
            resources: Default::default(),
            image: "dev".into(),
            agent_token: atelier_core::id::random_token(),
            prebuild_id: None,
            shared_folders: vec![],
        };
        store.insert_sandbox(&new, None).await.unwrap();
    }
    sqlx_stop_all(&store).await;
    store.close().await;
}

/// Seeded sandboxes are records only: mark them stopped so nothing tries to run them.
async fn sqlx_stop_all(store: &atelier_store::Store) {
    let ids: Vec<_> = store
        .list_sandboxes(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sandbox.id)
        .collect();
    for id in ids {
        use atelier_core::SandboxState::*;
        store
            .transition(&id, Creating, Destroying, None)
            .await
            .unwrap();
        store
            .transition(&id, Destroying, Error, Some("benchmark record"))
            .await
            .unwrap();
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    seed(&data, 1000).await;
    let m = common::Manager::start(&data);
    let api = m.client();
    println!(
        "Atelier foundation benchmark (local driver, loopback, {} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // 1. List 1,000 sandboxes.
    let listed = api.get("/sandboxes?state=error&limit=1000").await;
    assert_eq!(listed.body["sandboxes"].as_array().unwrap().len(), 1000);
    let mut samples = vec![];
    for _ in 0..200 {
        let t = Instant::now();
        let r = api
            .req(reqwest::Method::GET, "/sandboxes?state=error&limit=1000")
            .send()
            .await
            .unwrap();
        let _ = r.bytes().await.unwrap();
        samples.push(t.elapsed());
    }
    let (p50, p99) = (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    );
    println!(
        "list 1,000 sandboxes (200 requests):      p50 {}   p99 {}",
        ms(p50),
        ms(p99)
    );

    // 2. Create + destroy rate.
    let cycles = 30;
    let t = Instant::now();
    let mut create_samples = vec![];
    for i in 0..cycles {
        let c = Instant::now();
        let r = api
            .post(
                "/sandboxes?wait=true",
                json!({ "name": format!("bench-{i}") }),
            )
            .await;
        assert_eq!(r.body["state"], "running", "{}", r.body);
        create_samples.push(c.elapsed());
        let id = r.body["id"].as_str().unwrap().to_owned();
        let d = api.delete(&format!("/sandboxes/{id}")).await;
        assert_eq!(d.body["state"], "destroyed");
    }
    let total = t.elapsed();
    println!(
        "create+destroy ({cycles} sequential cycles):   {:.1} cycles/s   create→running p50 {}",
        cycles as f64 / total.as_secs_f64(),
        ms(percentile(&mut create_samples, 0.5))
    );

    // 3. Exec round-trip: through the manager vs straight to the agent.
    let id = api.running_sandbox("exec-bench").await;
    let sandbox_dir = data.join("sandboxes").join(&id);
    let token = std::fs::read_to_string(sandbox_dir.join("agent.token")).unwrap();
    let agent = AgentClient::new(
        format!("unix:{}", sandbox_dir.join("agent.sock").display())
            .parse()
            .unwrap(),
        token,
    );
    let req = ExecRequest::argv(["true"]);
    let rounds = 300;
    for _ in 0..20 {
        agent.exec(&req).await.unwrap();
        api.exec(&id, "true", &[]).await;
    }
    let (mut direct, mut via) = (vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        let r = agent.exec(&req).await.unwrap();
        direct.push(t.elapsed());
        assert_eq!(r.status.exit_code, Some(0));
        let t = Instant::now();
        let r = api.exec(&id, "true", &[]).await;
        via.push(t.elapsed());
        assert_eq!(r.body["exit_code"], 0);
    }
    let (d50, v50) = (percentile(&mut direct, 0.5), percentile(&mut via, 0.5));
    let (d99, v99) = (percentile(&mut direct, 0.99), percentile(&mut via, 0.99));
    println!(
        "exec `true`, raw HTTP to the agent ({rounds}):  p50 {}   p99 {}",
        ms(d50),
        ms(d99)
    );
    println!(
        "exec `true`, manager → agent ({rounds}):        p50 {}   p99 {}",
        ms(v50),
        ms(v99)
    );
    println!(
        "manager overhead on exec (p50 ratio):        {:.2}×",
        v50.as_secs_f64() / d50.as_secs_f64()
    );
    api.delete(&format!("/sandboxes/{id}")).await;
}
