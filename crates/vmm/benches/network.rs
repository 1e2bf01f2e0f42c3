//! What a sandbox's own network namespace costs, on the QEMU driver, in one run: the
//! same snapshot spawn (a prebuild's clone is exactly this) with the per-sandbox
//! namespace network and with the unprivileged fallback (restricted user-mode
//! networking), interleaved so both see the same host:
//!
//! - **spawn**: `launch_from_snapshot` + `wait_ready` — for the namespace, its slot, the
//!   netns, veth, tap, rule sets, host rules, host-service forwards and resolver, then
//!   QEMU `-incoming`, the identity refresh and the agent answering its new token;
//! - **network alone**: a namespace without a VM: `setup_links` (on the spawn's critical
//!   path: QEMU opens the tap), `setup_firewall` (run while QEMU loads the memory, the VM
//!   paused until it is done) and `teardown`;
//! - **exec round trip**: `POST /v1/exec` of `true` to a running sandbox — through the
//!   namespace's DNAT (routed) or through QEMU's loopback `hostfwd` (user mode);
//! - **host service round trip**: from inside the guest, 20 connections in a row to a
//!   host service through its forward (the namespace's listener, or a user-mode
//!   `guestfwd` spawning `nc`), per connection.
//!
//! Medians of `ATELIER_BENCH_RUNS` (default 7). Needs root (namespaces), iproute2,
//! iptables, qemu-system-x86, qemu-utils and busybox-static; skipped with the reason
//! otherwise.
//!
//! ```sh
//! cargo bench -p atelier-vmm --bench network
//! ```

#[path = "../tests/qemu_support/mod.rs"]
mod qemu_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_core::{HostService, SandboxId};
use atelier_proto::ExecRequest;
use atelier_vmm::net::{NetnsConfig, NetnsManager};
use atelier_vmm::storage::SystemRunner;
use atelier_vmm::{Driver, Runtime, SandboxSpec, SnapshotInfo};
use qemu_support::{spec, QemuHarness};

const WITHIN: Duration = Duration::from_secs(180);
const HOST_SERVICE_CONNECTIONS: u32 = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A driver in one network mode, with a snapshot of a ready VM that names `port` as a
/// host service.
struct Mode {
    name: &'static str,
    h: QemuHarness,
    snap: SnapshotInfo,
    source: SandboxSpec,
    source_rt: Runtime,
}

fn with_service(name: &str, port: u16) -> SandboxSpec {
    let mut s = spec(name);
    s.network.host_services = vec![HostService {
        port,
        name: Some("bench".into()),
    }];
    s
}

async fn mode(name: &'static str, user: bool, port: u16) -> Option<Mode> {
    // The driver reads the mode once, when it is made.
    if user {
        std::env::set_var("ATELIER_QEMU_NETWORK", "user");
    } else {
        std::env::remove_var("ATELIER_QEMU_NETWORK");
    }
    let h = QemuHarness::new()?;
    std::env::remove_var("ATELIER_QEMU_NETWORK");
    let source = with_service(&format!("{name}-source"), port);
    let source_rt = h.driver.launch(&source).await.expect("launch the source");
    h.driver
        .wait_ready(&source, &source_rt, WITHIN)
        .await
        .expect("source ready");
    let snap = h
        .driver
        .snapshot(&source, &source_rt, &h.dir.path().join("snapshot"))
        .await
        .expect("snapshot");
    Some(Mode {
        name,
        h,
        snap,
        source,
        source_rt,
    })
}

impl Mode {
    /// One clone spawned to ready (left running), and how long it took.
    async fn spawn(&self, i: usize, port: u16) -> (SandboxSpec, Runtime, Duration) {
        let mut s = with_service(&format!("{}-{i}", self.name), port);
        s.restore_token = Some(self.source.agent_token.clone());
        let t = Instant::now();
        let rt = self
            .h
            .driver
            .launch_from_snapshot(&s, &self.snap)
            .await
            .expect("launch from snapshot");
        self.h
            .driver
            .wait_ready(&s, &rt, WITHIN)
            .await
            .expect("ready");
        (s, rt, t.elapsed())
    }

    /// Exec round trips to the running clone: their median.
    async fn exec_round_trip(&self, s: &SandboxSpec, rt: &Runtime) -> Duration {
        let agent = self.h.driver.agent(rt, &s.agent_token).expect("agent");
        let mut took = vec![];
        for _ in 0..10 {
            let t = Instant::now();
            let r = agent.exec(&ExecRequest::shell("true")).await.expect("exec");
            assert_eq!(r.status.exit_code, Some(0));
            took.push(t.elapsed());
        }
        median(took)
    }

    /// Per connection to the host service at 172.16.0.1:`port` from inside the guest (each
    /// with its `printf | nc | grep` pipeline).
    async fn host_service_round_trip(&self, s: &SandboxSpec, rt: &Runtime, port: u16) -> Duration {
        let agent = self.h.driver.agent(rt, &s.agent_token).expect("agent");
        let script = format!(
            "n=0; ok=0; while [ $n -lt {HOST_SERVICE_CONNECTIONS} ]; do \
             printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 4 172.16.0.1 {port} | grep -q bench-ok \
             && ok=$((ok+1)); n=$((n+1)); done; echo $ok"
        );
        let r = agent
            .exec(&ExecRequest::shell(&script))
            .await
            .expect("exec");
        let ok: u32 = r.stdout.trim().parse().unwrap_or(0);
        assert_eq!(
            ok, HOST_SERVICE_CONNECTIONS,
            "{}: not every host service connection answered: {r:?}",
            self.name
        );
        // The agent times the whole loop (busybox's `date` has no nanoseconds).
        Duration::from_millis(r.status.duration_ms) / HOST_SERVICE_CONNECTIONS
    }
}

/// A host service answering every connection with `bench-ok`.
fn host_service() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = stream;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nbench-ok");
            });
        }
    });
    port
}

/// One namespace (no VM) made and removed, `runs` times: (links, firewall, teardown).
fn network_alone(dir: &std::path::Path, runs: usize) -> Vec<[Duration; 3]> {
    let mut config = NetnsConfig::new(dir.join("net-alone"));
    config.resolver = true;
    config.agent_port = Some(1024);
    let m = NetnsManager::new(config, Arc::new(SystemRunner));
    let policy = atelier_core::NetworkSpec::default();
    (0..runs)
        .map(|_| {
            let id = SandboxId::generate();
            let t = Instant::now();
            let net = m.setup_links(&id, &policy).expect("links");
            let links = t.elapsed();
            let t = Instant::now();
            m.setup_firewall(&id, &net).expect("firewall");
            let firewall = t.elapsed();
            let t = Instant::now();
            m.teardown(&id).expect("teardown");
            [links, firewall, t.elapsed()]
        })
        .collect()
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
    if !atelier_testkit::is_root() {
        atelier_testkit::skip("network namespaces need root");
        return;
    }
    if let Some(why) = atelier_testkit::missing(&[("iptables", "iptables"), ("ip", "iproute2")]) {
        atelier_testkit::skip(why);
        return;
    }
    let runs: usize = std::env::var("ATELIER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1);
    let port = host_service();
    let Some(ns) = mode("netns", false, port).await else {
        return;
    };
    let Some(user) = mode("user", true, port).await else {
        return;
    };
    assert!(ns
        .h
        .driver
        .info()
        .notes
        .iter()
        .any(|n| n.contains("a namespace per sandbox")));
    assert!(user
        .h
        .driver
        .info()
        .notes
        .iter()
        .any(|n| n.contains("user-mode, restricted")));
    println!(
        "QEMU network benchmark: minimal image, 1 vCPU, 512 MiB, snapshot spawns, {runs} runs each"
    );

    let (mut ns_spawn, mut user_spawn) = (vec![], vec![]);
    let (mut ns_exec, mut user_exec) = (vec![], vec![]);
    let (mut ns_service, mut user_service) = (vec![], vec![]);
    for i in 0..runs {
        for (m, spawns, execs, services) in [
            (&ns, &mut ns_spawn, &mut ns_exec, &mut ns_service),
            (&user, &mut user_spawn, &mut user_exec, &mut user_service),
        ] {
            let (s, rt, took) = m.spawn(i, port).await;
            spawns.push(took);
            execs.push(m.exec_round_trip(&s, &rt).await);
            services.push(m.host_service_round_trip(&s, &rt, port).await);
            m.h.driver.destroy(&s.id, Some(&rt)).await.expect("destroy");
        }
    }
    let alone = network_alone(ns.h.dir.path(), runs);
    for m in [&ns, &user] {
        m.h.driver
            .destroy(&m.source.id, Some(&m.source_rt))
            .await
            .ok();
    }

    let (a, b) = (median(ns_spawn.clone()), median(user_spawn.clone()));
    let extra = a.as_secs_f64() - b.as_secs_f64();
    println!();
    println!("| figure | namespace | user mode |");
    println!("| --- | --- | --- |");
    println!(
        "| spawn from snapshot → agent ready, median | {} | {} |",
        ms(a),
        ms(b)
    );
    println!(
        "| exec round trip (`true`), median | {} | {} |",
        ms(median(ns_exec)),
        ms(median(user_exec))
    );
    println!(
        "| host service, per connection from the guest, median | {} | {} |",
        ms(median(ns_service)),
        ms(median(user_service))
    );
    let part = |i: usize| ms(median(alone.iter().map(|a| a[i]).collect()));
    println!(
        "| namespace alone: links (before QEMU starts), median | {} | — |",
        part(0)
    );
    println!(
        "| namespace alone: rules (while QEMU loads the memory, VM paused), median | {} | — |",
        part(1)
    );
    println!(
        "| namespace alone: teardown (after the sandbox), median | {} | — |",
        part(2)
    );
    println!();
    println!(
        "namespace over user mode: {:+.1} ms per spawn, **{:.2}×** (target: < 10 ms more)",
        extra * 1000.0,
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "samples (ms): namespace {:?}; user {:?}",
        ns_spawn.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        user_spawn.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
}
