//! Real microVMs under QEMU (KVM when the boot probe passes, TCG otherwise): the same API
//! as the local driver, against a guest with its own kernel.

mod common;

use std::time::Duration;

use common::{eventually, processes_under, Manager};
use serde_json::json;

use atelier_testkit::{data_dir_with_image_cache as qemu_data_dir, ensure_guest_agent};

macro_rules! require_qemu {
    () => {
        atelier_testkit::require!(atelier_testkit::qemu_missing());
        ensure_guest_agent();
    };
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_microvm_sandbox_runs_its_own_kernel_and_the_whole_api() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    let data = qemu_data_dir(dir.path(), "");
    let m = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let system = api.get("/system").await;
    assert_eq!(system.body["driver"], "qemu", "{}", system.body);
    let notes = system.body["driver_notes"].to_string();
    assert!(
        notes.contains("accelerator") && (notes.contains("Tcg") || notes.contains("Kvm")),
        "{notes}"
    );

    let r = api
        .post(
            "/sandboxes?wait=true",
            json!({"name": "vm1", "image": "minimal", "vcpus": 1, "memory_mib": 512}),
        )
        .await;
    assert_eq!(r.body["state"], "running", "{}\n{}", r.body, m.log());
    let id = r.body["id"].as_str().unwrap().to_owned();
    let sandbox_dir = data.join("sandboxes").join(&id);

    let images = api.get("/images").await;
    let guest_kernel = images
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "minimal")
        .unwrap()["kernel_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let uname = api.exec(&id, "uname", &["-r"]).await;
    assert_eq!(uname.body["stdout"].as_str().unwrap().trim(), guest_kernel);
    assert_ne!(guest_kernel, host_kernel(), "the guest runs its own kernel");
    let hostname = api.exec(&id, "hostname", &[]).await;
    assert_eq!(hostname.body["stdout"], "vm1\n");
    assert_eq!(
        api.exec(&id, "grep", &["-q", "vm1", "/etc/hosts"])
            .await
            .body["exit_code"],
        0
    );
    // The clock was synced from the host once the agent answered.
    let guest_now: i64 = api.exec(&id, "date", &["+%s"]).await.body["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_now - host_now).abs() <= 2,
        "guest clock {guest_now} vs host {host_now}"
    );

    // Files.
    let files = format!("/sandboxes/{id}/files/content?path=%2Froot%2Fnote.txt");
    let w = api
        .send(
            api.req(reqwest::Method::PUT, &files)
                .body("inside the VM\n"),
        )
        .await;
    assert_eq!(w.status, 200, "{}", w.body);
    let cat = api.exec(&id, "cat", &["/root/note.txt"]).await;
    assert_eq!(cat.body["stdout"], "inside the VM\n");
    assert!(
        !sandbox_dir.join("root/note.txt").exists(),
        "the file lives in the guest's disk, not on the host"
    );

    // A supervised service is restarted after it is killed inside the guest.
    let s = api
        .send(
            api.req(
                reqwest::Method::PUT,
                &format!("/sandboxes/{id}/services/sleeper"),
            )
            .json(&json!({
                "command": {"argv": ["sleep", "600"]}, "restart": "always"
            })),
        )
        .await;
    assert_eq!(s.body["state"], "running", "{}", s.body);
    let pid = s.body["pid"].as_i64().unwrap();
    api.exec(&id, "kill", &["-9", &pid.to_string()]).await;
    let (a, i) = (api.clone(), id.clone());
    eventually(
        Duration::from_secs(20),
        "the watchdog to restart the service",
        || {
            let (api, id) = (a.clone(), i.clone());
            async move {
                let s = api.get(&format!("/sandboxes/{id}/services/sleeper")).await;
                (s.body["restarts"].as_i64() >= Some(1)
                    && s.body["state"] == "running"
                    && s.body["pid"].as_i64() != Some(pid))
                .then_some(())
            }
        },
    )
    .await;

    // Stop keeps the disk; start boots it again.
    let r = api.post(&format!("/sandboxes/{id}/stop"), json!({})).await;
    assert_eq!(r.body["state"], "stopped", "{}", r.body);
    assert!(
        processes_under(&sandbox_dir).is_empty(),
        "no qemu left after stop"
    );
    let r = api
        .post(&format!("/sandboxes/{id}/start?wait=true"), json!({}))
        .await;
    assert_eq!(r.body["state"], "running", "{}", r.body);
    let cat = api.exec(&id, "cat", &["/root/note.txt"]).await;
    assert_eq!(
        cat.body["stdout"], "inside the VM\n",
        "the disk survives stop/start"
    );

    // Pause freezes the VM (QMP stop), resume thaws it.
    assert_eq!(
        api.post(&format!("/sandboxes/{id}/pause"), json!({}))
            .await
            .body["state"],
        "paused"
    );
    assert_eq!(
        api.post(&format!("/sandboxes/{id}/resume"), json!({}))
            .await
            .body["state"],
        "running"
    );
    assert_eq!(api.exec(&id, "true", &[]).await.body["exit_code"], 0);

    let r = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(r.body["state"], "destroyed", "{}", r.body);
    assert!(
        processes_under(&sandbox_dir).is_empty(),
        "no qemu left after destroy"
    );
    assert!(!sandbox_dir.exists(), "no disk left after destroy");
}

#[tokio::test]
async fn a_restarted_manager_adopts_a_running_vm() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    let data = qemu_data_dir(dir.path(), "");
    let mut m = Manager::start_with(&data, &["--driver", "qemu"]);
    let r = m
        .client()
        .post(
            "/sandboxes?wait=true",
            json!({"name": "keep", "image": "minimal", "memory_mib": 512}),
        )
        .await;
    assert_eq!(r.body["state"], "running", "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    m.kill9();
    assert!(
        !processes_under(&data.join("sandboxes").join(&id)).is_empty(),
        "the VM outlives the manager"
    );

    let m2 = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m2.client();
    assert_eq!(
        api.get(&format!("/sandboxes/{id}")).await.body["state"],
        "running"
    );
    let r = api.exec(&id, "echo", &["adopted"]).await;
    assert_eq!(r.body["stdout"], "adopted\n", "{}", r.body);
    api.delete(&format!("/sandboxes/{id}")).await;
    assert!(processes_under(&data.join("sandboxes").join(&id)).is_empty());
}

#[tokio::test]
async fn a_vm_that_misses_its_boot_deadline_is_killed_with_its_console_tail_kept() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    // One second is far too short for a boot (even with KVM, the guest needs longer).
    let data = qemu_data_dir(dir.path(), "boot_timeout_secs = 1");
    let m = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let r = api
        .post(
            "/sandboxes?wait=true",
            json!({"name": "slow", "image": "minimal", "memory_mib": 512}),
        )
        .await;
    assert_eq!(r.body["state"], "error", "{}", r.body);
    let error = r.body["error"].as_str().unwrap();
    assert!(error.contains("did not become ready"), "{error}");
    let id = r.body["id"].as_str().unwrap();
    assert!(
        processes_under(&data.join("sandboxes").join(id)).is_empty(),
        "the VM was killed"
    );
    assert!(
        !data.join("sandboxes").join(id).exists(),
        "its disk was removed"
    );
}

#[tokio::test]
async fn a_qemu_prebuild_restores_clones_that_are_distinct_machines_on_the_host_clock() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    let data = qemu_data_dir(dir.path(), "");
    // A repo to clone (on the host) into the builder VM.
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&work)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(work.join("hello.txt"), "from the repo\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "init"]);

    let m = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let r = api
        .post(
            "/workspaces",
            json!({
                "name": "vmapp",
                "base_image": "minimal",
                "resources": {"vcpus": 1, "memory_mib": 512, "disk_mib": 2048},
                "repos": [{"url": format!("file://{}", work.display()), "branch": "main", "path": "app"}],
                "init_commands": ["echo warmed > .warm && cat hello.txt"],
                "prebuild": {"auto_rebuild": false},
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = api.post("/workspaces/vmapp/prebuilds", json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let p = eventually(Duration::from_secs(240), "the prebuild", || async {
        let p = api.get(&format!("/prebuilds/{id}")).await.body;
        (p["state"] != "building").then_some(p)
    })
    .await;
    let log = api.get(&format!("/prebuilds/{id}/logs")).await.body["data"].to_string();
    assert_eq!(p["state"], "ready", "{p}\n{log}\n{}", m.log());
    assert_eq!(p["memory_snapshot"], true, "{p}");
    assert!(log.contains("from the repo"), "{log}");

    // Let the snapshot age: a restored guest's clock starts where it was captured.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let spawn = |name: &'static str| {
        let api = api.clone();
        async move {
            let r = api
                .post(
                    "/sandboxes?wait=true",
                    json!({"workspace": "vmapp", "name": name}),
                )
                .await;
            assert_eq!(r.body["state"], "running", "{}", r.body);
            r.body
        }
    };
    let (a, b) = tokio::join!(spawn("clone-a"), spawn("clone-b"));
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let out = |id: String, script: &'static str| {
        let api = api.clone();
        async move {
            let r = api.exec(&id, "sh", &["-c", script]).await;
            assert_eq!(r.body["exit_code"], 0, "{}", r.body);
            r.body["stdout"].as_str().unwrap().to_owned()
        }
    };
    // The host's clock, right after restore.
    for id in [&a, &b] {
        // busybox's date has no sub-second format; adjtimex reads the clock exactly.
        let clock = out(id.clone(), "adjtimex").await;
        let field = |name: &str| -> f64 {
            clock
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {clock}"))
        };
        let fraction = field("time.tv_usec:");
        // With STA_NANO (the kernel's default) the "usec" field holds nanoseconds.
        let fraction = if fraction >= 1e6 {
            fraction / 1e9
        } else {
            fraction / 1e6
        };
        let guest = field("time.tv_sec:") + fraction;
        let host = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (host - guest).abs() < 1.0,
            "guest clock {guest} vs host {host}"
        );
    }
    assert_eq!(out(a.clone(), "hostname").await, "clone-a\n");
    assert_eq!(out(b.clone(), "hostname").await, "clone-b\n");
    let random = "head -c 16 /dev/urandom | od -An -tx1";
    assert_ne!(out(a.clone(), random).await, out(b.clone(), random).await);
    assert_ne!(
        out(a.clone(), "cat /etc/machine-id").await,
        out(b.clone(), "cat /etc/machine-id").await
    );
    // Set up by the prebuild, and apart from each other.
    assert_eq!(out(a.clone(), "cat app/.warm").await, "warmed\n");
    out(a.clone(), "echo mine > app/only-in-a && sync").await;
    assert_eq!(
        api.exec(&b, "test", &["-e", "app/only-in-a"]).await.body["exit_code"],
        1
    );
    // A clone is a sandbox like any other: it stops and boots its own disk again.
    let stopped = api.post(&format!("/sandboxes/{a}/stop"), json!({})).await;
    assert_eq!(stopped.body["state"], "stopped", "{}", stopped.body);
    api.post(&format!("/sandboxes/{a}/start"), json!({})).await;
    let running = eventually(
        Duration::from_secs(120),
        "the clone to boot again",
        || async {
            let s = api.get(&format!("/sandboxes/{a}")).await.body;
            (s["state"] != "starting").then_some(s)
        },
    )
    .await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(out(a.clone(), "cat app/only-in-a").await, "mine\n");
    for id in [&a, &b] {
        api.delete(&format!("/sandboxes/{id}")).await;
    }
    assert_eq!(processes_under(&data.join("sandboxes")), Vec::<u32>::new());
}

/// What of the namespace network of sandbox `id` is on the host: its namespace, its
/// host-side veth, iptables rules naming it, its address slot.
fn network_traces(id: &str) -> Vec<String> {
    let mut out = vec![];
    let ns = format!("atelier-{id}");
    if std::path::Path::new("/var/run/netns").join(&ns).exists() {
        out.push(format!("namespace {ns}"));
    }
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&links.stdout).contains(&format!("atl{id}")) {
        out.push(format!("veth atl{id}"));
    }
    for table in ["filter", "nat"] {
        let rules = std::process::Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&rules.stdout).lines() {
            if line.contains(id) {
                out.push(format!("rule {line}"));
            }
        }
    }
    for slot in std::fs::read_dir(atelier_vmm::net::SHARED_SLOTS_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        if std::fs::read_to_string(slot.path()).is_ok_and(|t| t.starts_with(id)) {
            out.push(format!("slot {}", slot.path().display()));
        }
    }
    out
}

fn run(cmd: &str, args: &[&str]) {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plain HTTP/1.0 server on the host's loopback answering `body` to every request.
fn host_service(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "HTTP/1.0 200 OK\r\n\r\n{body}");
        }
    });
    port
}

/// `GET url` from inside sandbox `id` (busybox `nc`), the body when it answered 200.
async fn fetch_inside(api: &common::Api, id: &str, host: &str, port: u16) -> Option<String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 8 nc -w 4 {host} {port}");
    let r = api
        .post(
            &format!("/sandboxes/{id}/exec"),
            json!({"command": script, "shell": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let out = r.body["stdout"].as_str()?.to_owned();
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

/// kill -9 of managers whose sandboxes use every network mode (the namespace network with
/// open egress, with no egress but a host service, restricted user-mode networking), one
/// sandbox caught mid-boot, and a planted leftover network of a sandbox nobody knows:
/// after the restart the running ones are adopted (the host service answers again), the
/// rest is swept, and after destroy nothing of any of them is left on the host.
#[tokio::test]
async fn managers_killed_with_sandboxes_in_every_network_mode_leak_nothing() {
    atelier_testkit::require!(atelier_testkit::qemu_missing().or_else(|| {
        (!atelier_testkit::is_root()).then(|| "the namespace network needs root".to_string())
    }));
    ensure_guest_agent();
    let dir = tempfile::tempdir().unwrap();
    let (data_ns, data_user) = (
        qemu_data_dir(&dir.path().join("ns"), ""),
        qemu_data_dir(&dir.path().join("user"), ""),
    );
    let user_env = [("ATELIER_QEMU_NETWORK", "user")];
    let service_port = host_service("host-service");
    let small = |name: &str| json!({"name": name, "image": "minimal", "memory_mib": 512});

    let mut m_ns = Manager::start_with(&data_ns, &["--driver", "qemu"]);
    let mut m_user = Manager::start_with_env(&data_user, &["--driver", "qemu"], &user_env);
    let (ns, user) = (m_ns.client(), m_user.client());
    let w = ns
        .post(
            "/workspaces",
            json!({"name": "svc", "repos": [],
                   "network": {"egress": "none",
                               "host_services": [{"port": service_port, "name": "svc"}]}}),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);
    let mut with_svc = small("svc");
    with_svc["workspace"] = json!("svc");
    let mut ids = vec![];
    for (api, body) in [
        (&ns, small("open")),
        (&ns, with_svc),
        (&user, small("user")),
    ] {
        let r = api.post("/sandboxes?wait=true", body).await;
        assert_eq!(r.body["state"], "running", "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let (open, svc, user_id) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    assert!(
        !network_traces(&open).is_empty(),
        "the open sandbox has a namespace"
    );
    assert!(
        network_traces(&user_id).is_empty(),
        "the user-mode one has none"
    );
    assert_eq!(
        fetch_inside(&ns, &svc, "172.16.0.1", service_port)
            .await
            .as_deref(),
        Some("host-service")
    );

    // One more, killed with the manager while it boots: its namespace exists already.
    let r = ns.post("/sandboxes", small("half")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let half = r.body["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(60),
        "the booting sandbox's namespace",
        || {
            let half = half.clone();
            async move {
                std::path::Path::new(&format!("/var/run/netns/atelier-{half}"))
                    .exists()
                    .then_some(())
            }
        },
    )
    .await;
    m_ns.kill9();
    m_user.kill9();

    // A leftover of a sandbox the manager has no record of, made the way the manager
    // makes them: an address slot in this manager's name, a namespace, a veth, a rule.
    let stray = atelier_core::SandboxId::generate().as_str().to_owned();
    let slots = std::path::Path::new(atelier_vmm::net::SHARED_SLOTS_DIR);
    let owner = std::fs::read_dir(slots)
        .unwrap()
        .flatten()
        .find_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let (id, owner) = text.split_once('\n')?;
            (id == open).then(|| owner.trim().to_owned())
        })
        .expect("the open sandbox's slot names its manager");
    let free = (4000..5000)
        .find(|n| !slots.join(n.to_string()).exists())
        .unwrap();
    std::fs::write(slots.join(free.to_string()), format!("{stray}\n{owner}\n")).unwrap();
    let (stray_ns, stray_veth) = (format!("atelier-{stray}"), format!("atl{stray}"));
    run("ip", &["netns", "add", &stray_ns]);
    run(
        "ip",
        &[
            "link",
            "add",
            &stray_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &stray_ns,
        ],
    );
    run(
        "iptables",
        &[
            "-I",
            "FORWARD",
            "-i",
            &stray_veth,
            "-m",
            "comment",
            "--comment",
            &stray_ns,
            "-j",
            "ACCEPT",
        ],
    );
    assert_eq!(
        network_traces(&stray).len(),
        4,
        "{:?}",
        network_traces(&stray)
    );

    let m_ns = Manager::start_with(&data_ns, &["--driver", "qemu"]);
    let m_user = Manager::start_with_env(&data_user, &["--driver", "qemu"], &user_env);
    let (ns, user) = (m_ns.client(), m_user.client());
    assert_eq!(
        network_traces(&stray),
        Vec::<String>::new(),
        "the planted leftover is swept"
    );
    let half_state = ns.get(&format!("/sandboxes/{half}")).await.body["state"].clone();
    assert!(
        half_state == "error" || half_state == "destroyed",
        "the sandbox caught booting: {half_state}"
    );
    assert_eq!(
        network_traces(&half),
        Vec::<String>::new(),
        "{half}: nothing left"
    );
    assert!(processes_under(&data_ns.join("sandboxes").join(&half)).is_empty());
    for (api, id) in [(&ns, &open), (&ns, &svc), (&user, &user_id)] {
        assert_eq!(
            api.get(&format!("/sandboxes/{id}")).await.body["state"],
            "running"
        );
        let r = api.exec(id, "echo", &["adopted"]).await;
        assert_eq!(r.body["stdout"], "adopted\n", "{}", r.body);
    }
    assert_eq!(
        fetch_inside(&ns, &svc, "172.16.0.1", service_port)
            .await
            .as_deref(),
        Some("host-service"),
        "the adopted sandbox's host service is forwarded again"
    );

    for (api, data, id) in [
        (&ns, &data_ns, &open),
        (&ns, &data_ns, &svc),
        (&ns, &data_ns, &half),
        (&user, &data_user, &user_id),
    ] {
        api.delete(&format!("/sandboxes/{id}")).await;
        assert_eq!(
            network_traces(id),
            Vec::<String>::new(),
            "{id}: nothing left"
        );
        assert!(
            processes_under(&data.join("sandboxes").join(id)).is_empty(),
            "{id}: no VM left"
        );
    }
}
