//! Preview benchmark: a request to a dev server in a sandbox through its preview origin
//! (`<port>-<sandbox>.localhost`: Host routing, cookie check, agent tunnel) against the
//! same request through a bare agent tunnel (a `PortForward`), same run, same server.
//!
//! Prints latency (p50, p99 of a small page) and throughput (a 4 MiB body) of both, and
//! the ratios. Run: `cargo bench -p atelier-cli --bench previews`

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use atelier_agent_client::AgentClient;
use atelier_server::forward::PortForward;
use serde_json::json;

const SMALL_ROUNDS: usize = 500;
const BIG_ROUNDS: usize = 30;
const BIG: usize = 4 * 1024 * 1024;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The dev server: `/` a few bytes, `/big` 4 MiB.
async fn dev_server() -> u16 {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route("/big", get(|| async { vec![b'x'; BIG] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

struct Path {
    name: &'static str,
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Path {
    async fn get(&self, path: &str) -> usize {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", self.name);
        r.bytes().await.unwrap().len()
    }
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let m = common::Manager::start(&tmp.path().join("data"));
    let api = m.client();
    let port = dev_server().await;
    let id = api.running_sandbox("preview-bench").await;

    // The bare tunnel: a forward straight to the sandbox's agent.
    let sandbox_dir = m.data_dir.join("sandboxes").join(&id);
    let token = std::fs::read_to_string(sandbox_dir.join("agent.token")).unwrap();
    let agent = AgentClient::new(
        format!("unix:{}", sandbox_dir.join("agent.sock").display())
            .parse()
            .unwrap(),
        token,
    );
    let forward = PortForward::start(agent, port).await.unwrap();

    // The preview origin, signed in through a hand-off.
    let manager: SocketAddr = m.url.trim_start_matches("http://").parse().unwrap();
    let host = format!("{port}-{id}.localhost");
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, manager)
        .build()
        .unwrap();
    let link = api
        .post(&format!("/sandboxes/{id}/ports/{port}/link"), json!({}))
        .await;
    let open = link.body["open_url"].as_str().unwrap();
    let r = browser.get(open).send().await.unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let paths = [
        Path {
            name: "agent tunnel (PortForward)",
            client: reqwest::Client::new(),
            base: forward.url(),
            cookie: None,
        },
        Path {
            name: "preview origin",
            client: browser,
            base: format!("http://{host}:{}", manager.port()),
            cookie: Some(cookie),
        },
    ];
    for p in &paths {
        for _ in 0..50 {
            p.get("/").await;
        }
    }
    // Interleaved, so that both see the same machine.
    let mut small = [vec![], vec![]];
    for _ in 0..SMALL_ROUNDS {
        for (i, p) in paths.iter().enumerate() {
            let t = Instant::now();
            assert_eq!(p.get("/").await, 3);
            small[i].push(t.elapsed());
        }
    }
    let mut big = [Duration::ZERO, Duration::ZERO];
    for _ in 0..BIG_ROUNDS {
        for (i, p) in paths.iter().enumerate() {
            let t = Instant::now();
            assert_eq!(p.get("/big").await, BIG);
            big[i] += t.elapsed();
        }
    }
    let mut p50 = [Duration::ZERO; 2];
    let mut mibs = [0.0; 2];
    for (i, p) in paths.iter().enumerate() {
        p50[i] = percentile(&mut small[i], 0.5);
        let p99 = percentile(&mut small[i], 0.99);
        mibs[i] = (BIG_ROUNDS * BIG) as f64 / (1024.0 * 1024.0) / big[i].as_secs_f64();
        println!(
            "{:<28} GET / ({SMALL_ROUNDS}): p50 {}  p99 {}   GET 4 MiB ({BIG_ROUNDS}): {:.0} MiB/s",
            p.name,
            ms(p50[i]),
            ms(p99),
            mibs[i]
        );
    }
    println!(
        "preview / tunnel: latency p50 {:.2}×, throughput {:.2}×",
        p50[1].as_secs_f64() / p50[0].as_secs_f64(),
        mibs[1] / mibs[0]
    );
    api.delete(&format!("/sandboxes/{id}")).await;
}
