//! Firecracker snapshots and clones against a fake Firecracker whose API checks every
//! request body against the vendored spec, writes and reads snapshot files, and runs a
//! fake agent (health, exec, `PUT /v1/identity`) behind the hybrid vsock.
//!
//! The driver starts a shell script as `firecracker`; it re-runs this test binary with
//! only `fake_firecracker_for_snapshots` selected, which serves the fake API until the
//! driver kills it. A fake jailer (no chroot, no privileges) makes body paths relative to
//! the would-be chroot, as the real one does.

mod fc_snapshot_support;
mod firecracker_support;

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_core::SandboxId;
use atelier_vmm::firecracker::disk::same_file;
use atelier_vmm::firecracker::snapshot::FirecrackerSnapshot;
use atelier_vmm::firecracker::{
    FirecrackerClient, FirecrackerConfig, FirecrackerDriver, JailerConfig, NetnsChoice,
};
use atelier_vmm::storage::{CommandOutput, CommandRunner};
use atelier_vmm::{process, Driver, Runtime, SandboxSpec, SnapshotInfo, VmmError};
use fc_snapshot_support::{
    agent_records, api_records_of, fake_firecracker, fake_jailer, serve_fake_firecracker, ApiSpec,
    FakeSettings,
};
use firecracker_support::{fake_artifacts, spec, FakeImages};
use serde_json::{json, Value};

/// Entry point of the fake Firecracker process (a no-op in a normal test run).
#[test]
fn fake_firecracker_for_snapshots() {
    let Some(settings) = FakeSettings::from_env() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Runs until the driver kills it; a bounded life in case a failed test never does.
        let _ =
            tokio::time::timeout(Duration::from_secs(120), serve_fake_firecracker(settings)).await;
    });
}

/// Records the network commands the driver runs; every one succeeds.
#[derive(Default)]
struct NetRecorder(Mutex<Vec<String>>);

impl NetRecorder {
    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl CommandRunner for NetRecorder {
    fn run(&self, program: &str, args: &[OsString]) -> io::Result<CommandOutput> {
        let mut line = program.to_owned();
        for a in args {
            line.push(' ');
            line.push_str(&a.to_string_lossy());
        }
        self.0.lock().unwrap().push(line);
        Ok(CommandOutput::ok(""))
    }
}

/// Whether `call` is the host's `ip -batch` script and it adds the namespace `netns`.
fn makes_namespace(call: &str, netns: &str) -> bool {
    call.strip_prefix("ip -batch ")
        .and_then(|file| std::fs::read_to_string(file).ok())
        .is_some_and(|script| script.lines().any(|l| l == format!("netns add {netns}")))
}

/// A test directory: images, data, jails, and the records of the fakes.
struct Bench {
    dir: tempfile::TempDir,
    api_record: PathBuf,
    agent_record: PathBuf,
    jailer_argv: PathBuf,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            api_record: dir.path().join("api.jsonl"),
            agent_record: dir.path().join("agent.jsonl"),
            jailer_argv: dir.path().join("jailer-argv.txt"),
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A driver whose `firecracker` is the fake (refusing `refuse`, e.g. `PUT /x`).
    fn driver(
        &self,
        jailed: bool,
        refuse: &str,
        net: Option<Arc<NetRecorder>>,
    ) -> FirecrackerDriver {
        FirecrackerDriver::new(self.config(jailed, refuse, net)).unwrap()
    }

    /// The configuration of [`Self::driver`]. A scripted network makes no namespace, so
    /// no resolver can listen in one: it is off unless a test makes the namespace.
    fn config(
        &self,
        jailed: bool,
        refuse: &str,
        net: Option<Arc<NetRecorder>>,
    ) -> FirecrackerConfig {
        let tag = format!("{jailed}-{}", refuse.replace([' ', '/'], "_"));
        let bin = self.path(&format!("bin-{tag}"));
        let fc = fake_firecracker(
            &bin,
            "fake_firecracker_for_snapshots",
            &self.api_record,
            &self.agent_record,
            refuse,
        );
        let artifacts = fake_artifacts(&self.path("image"));
        let mut config =
            FirecrackerConfig::new(fc, Arc::new(FakeImages(artifacts)), self.path("data"));
        config.socket_timeout = Duration::from_secs(20);
        if jailed {
            let mut j = JailerConfig::new(
                fake_jailer(&bin, &self.jailer_argv),
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
            j.chroot_base = self.path("jails");
            config.jailer = Some(j);
        }
        if let Some(runner) = net {
            config.netns = NetnsChoice::On;
            config.net_runner = runner;
            config.resolver = false;
        }
        config
    }
}

fn clone_spec(name: &str, token: &str) -> SandboxSpec {
    let mut s = spec();
    s.name = name.into();
    s.agent_token = token.into();
    s.restore_token = Some("secret-token".into());
    s
}

fn keys(records: &[fc_snapshot_support::ApiRecord]) -> Vec<String> {
    records.iter().map(|r| r.key()).collect()
}

fn body_of(records: &[fc_snapshot_support::ApiRecord], key: &str) -> Value {
    records
        .iter()
        .find(|r| r.key() == key)
        .and_then(|r| r.body.clone())
        .unwrap_or_else(|| panic!("no {key} in {:?}", keys(records)))
}

/// Writes `data` at `offset` of a disk, as its guest would.
fn write_at(disk: &Path, offset: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, data, offset).unwrap();
}

fn read_at(disk: &Path, offset: u64, n: usize) -> Vec<u8> {
    let f = std::fs::File::open(disk).unwrap();
    let mut buf = vec![0; n];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, offset).unwrap();
    buf
}

async fn launch_ready(d: &FirecrackerDriver, s: &SandboxSpec) -> Runtime {
    let rt = d.launch(s).await.unwrap();
    d.wait_ready(s, &rt, Duration::from_secs(10)).await.unwrap();
    rt
}

#[tokio::test]
async fn a_jailed_snapshot_restores_into_clones_that_are_their_own_machines() {
    let b = Bench::new();
    let d = b.driver(true, "", None);
    let src = spec();
    let rt = launch_ready(&d, &src).await;
    let src_paths = d.paths(&src.id);
    write_at(&src_paths.rootfs, 8192, b"setup done");
    let booted = api_records_of(&b.api_record, &src_paths.api_socket).len();

    let dest = b.path("prebuild");
    let info = d.snapshot(&src, &rt, &dest).await.unwrap();

    // The source: flushed, paused, captured, then stopped with its jail gone.
    let src_calls = api_records_of(&b.api_record, &src_paths.api_socket);
    assert!(src_calls.iter().all(|r| r.status < 300), "{src_calls:#?}");
    assert_eq!(
        keys(&src_calls[booted..]),
        ["GET /version", "PATCH /vm", "PUT /snapshot/create"]
    );
    assert_eq!(body_of(&src_calls, "PATCH /vm"), json!({"state": "Paused"}));
    assert_eq!(
        body_of(&src_calls, "PUT /snapshot/create"),
        json!({"snapshot_type": "Full", "snapshot_path": "/snapshot/vmstate.bin",
               "mem_file_path": "/snapshot/memory.bin"})
    );
    let flushes: Vec<_> = agent_records(&b.agent_record)
        .into_iter()
        .filter(|r| r.path == "/v1/exec")
        .collect();
    assert_eq!(flushes.len(), 1);
    assert_eq!(flushes[0].body["command"], json!({"argv": ["sync"]}));
    assert!(flushes[0].authorized);
    assert!(!d.is_alive(&rt));
    assert!(!src_paths.jail.as_ref().unwrap().exists());
    assert!(src_paths.rootfs.is_file(), "the source keeps its disk");

    // The snapshot directory.
    let dest = dest.canonicalize().unwrap();
    assert_eq!(info.dir, dest);
    assert_eq!(
        info.memory.as_deref(),
        Some(dest.join("memory.bin").as_path())
    );
    assert_eq!(info.disk, dest.join("rootfs.ext4"));
    assert_eq!(info.kernel.as_deref(), Some(dest.join("vmlinux").as_path()));
    assert_eq!((info.vcpus, info.memory_mib), (2, 512));
    assert!(info.restores_memory());
    let machine: FirecrackerSnapshot = serde_json::from_value(info.machine.clone()).unwrap();
    assert_eq!(
        machine.vmstate.as_deref(),
        Some(dest.join("vmstate.bin").as_path())
    );
    assert!(machine.jailed);
    assert_eq!(machine.firecracker_version.as_deref(), Some("1.16.1"));
    assert_eq!(machine.plan.rootfs, "/rootfs.ext4");
    let on_disk: SnapshotInfo =
        serde_json::from_slice(&std::fs::read(dest.join("snapshot.json")).unwrap()).unwrap();
    assert_eq!(on_disk, info);
    assert_eq!(read_at(&info.disk, 8192, 10), b"setup done");
    for f in ["memory.bin", "vmstate.bin"] {
        let mode = std::fs::metadata(dest.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440, "{f} is read-only for everyone");
    }

    // Two clones at once.
    let a = clone_spec("clone-a", "token-of-clone-a-0123456789");
    let c = clone_spec("clone-b", "token-of-clone-b-0123456789");
    let (ra, rc) = tokio::join!(
        d.launch_from_snapshot(&a, &info),
        d.launch_from_snapshot(&c, &info)
    );
    let (ra, rc) = (ra.unwrap(), rc.unwrap());
    for (s, rt) in [(&a, &ra), (&c, &rc)] {
        let paths = d.paths(&s.id);
        let calls = api_records_of(&b.api_record, &paths.api_socket);
        assert_eq!(
            keys(&calls),
            ["PUT /logger", "GET /version", "PUT /snapshot/load"],
            "{calls:#?}"
        );
        assert!(calls.iter().all(|r| r.status < 300), "{calls:#?}");
        assert_eq!(
            body_of(&calls, "PUT /snapshot/load"),
            json!({
                "snapshot_path": "/snapshot/vmstate.bin",
                "mem_backend": {"backend_type": "File", "backend_path": "/snapshot/memory.bin"},
                "resume_vm": true,
                "vsock_override": {"uds_path": "/run/vsock.sock"},
            })
        );
        // The snapshot's files are shared, not copied; the disk is the clone's own.
        assert!(same_file(
            &paths.snapshot_dir.join("memory.bin"),
            &dest.join("memory.bin")
        ));
        assert!(!same_file(&paths.rootfs, &info.disk));
        assert!(same_file(&paths.root.join("rootfs.ext4"), &paths.rootfs));
        assert_eq!(read_at(&paths.rootfs, 8192, 10), b"setup done");

        d.wait_ready(s, rt, Duration::from_secs(10)).await.unwrap();
        let agent = d.agent(rt, &s.agent_token).unwrap();
        assert_eq!(agent.health().await.unwrap().hostname, s.name);
        let stale = d
            .agent(rt, "secret-token")
            .unwrap()
            .health()
            .await
            .unwrap_err();
        assert_eq!(
            stale.status(),
            Some(401),
            "the snapshot's token is refused now"
        );
    }
    let identities: Vec<Value> = agent_records(&b.agent_record)
        .into_iter()
        .filter(|r| r.path == "/v1/identity")
        .map(|r| {
            assert!(r.authorized, "sent with the snapshot's token");
            r.body
        })
        .collect();
    assert_eq!(identities.len(), 2);
    assert_ne!(identities[0]["entropy"], identities[1]["entropy"]);
    assert_ne!(identities[0]["machine_id"], identities[1]["machine_id"]);

    // A write in one clone is in neither the other nor the snapshot.
    write_at(&d.paths(&a.id).rootfs, 8192, b"clone a!!!");
    assert_eq!(read_at(&d.paths(&c.id).rootfs, 8192, 10), b"setup done");
    assert_eq!(read_at(&info.disk, 8192, 10), b"setup done");

    for (s, rt) in [(&a, &ra), (&c, &rc)] {
        d.destroy(&s.id, Some(rt)).await.unwrap();
        assert!(!d.paths(&s.id).dir.exists());
    }
    assert!(
        dest.join("memory.bin").is_file(),
        "clones never take the snapshot with them"
    );
    d.destroy(&src.id, None).await.unwrap();
}

#[tokio::test]
async fn clones_get_a_network_namespace_and_their_tap_in_the_overrides() {
    let b = Bench::new();
    let net = Arc::new(NetRecorder::default());
    let d = b.driver(true, "", Some(net.clone()));
    assert!(d.has_network());
    let src = spec();
    let planned = d.planned_resources(&src.id);
    for (kind, ident) in [
        ("netns", format!("atelier-{}", src.id)),
        ("veth", format!("atl{}", src.id)),
    ] {
        assert!(
            planned.contains(&(kind.to_owned(), ident.clone())),
            "{ident} in {planned:?}"
        );
    }

    let rt = launch_ready(&d, &src).await;
    let src_paths = d.paths(&src.id);
    let boot = api_records_of(&b.api_record, &src_paths.api_socket);
    assert_eq!(
        body_of(&boot, "PUT /network-interfaces/eth0"),
        json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"})
    );
    let config = std::fs::read(&src_paths.config_disk).unwrap();
    let end = config.iter().position(|b| *b == 0).unwrap();
    let guest: atelier_proto::GuestConfig = serde_json::from_slice(&config[..end]).unwrap();
    let network = guest.network.expect("the guest is told its address");
    assert_eq!(
        (network.address.as_str(), network.gateway.as_str()),
        ("172.16.0.2/30", "172.16.0.1")
    );
    assert!(
        net.calls()
            .iter()
            .any(|c| makes_namespace(c, &format!("atelier-{}", src.id))),
        "{:?}",
        net.calls()
    );
    let jailer_args = std::fs::read_to_string(&b.jailer_argv).unwrap();
    assert!(
        jailer_args.contains(&format!("--netns /var/run/netns/atelier-{}", src.id)),
        "{jailer_args}"
    );

    let info = d.snapshot(&src, &rt, &b.path("prebuild")).await.unwrap();
    let machine: FirecrackerSnapshot = serde_json::from_value(info.machine.clone()).unwrap();
    assert_eq!(machine.plan.network.as_ref().unwrap().host_dev_name, "tap0");
    // The stopped source's network is gone: host rules, then veth, then namespace.
    let calls = net.calls();
    let del_veth = calls
        .iter()
        .position(|c| *c == format!("ip link del atl{}", src.id))
        .expect("the veth is removed");
    assert_eq!(
        calls[del_veth + 1],
        format!("ip netns del atelier-{}", src.id)
    );

    let clone = clone_spec("clone", "token-of-the-clone-0123456789");
    let before = net.calls().len();
    let rc = d.launch_from_snapshot(&clone, &info).await.unwrap();
    assert!(
        makes_namespace(&net.calls()[before], &format!("atelier-{}", clone.id)),
        "the clone's namespace is made before its VMM starts: {:?}",
        &net.calls()[before..]
    );
    let calls = api_records_of(&b.api_record, &d.paths(&clone.id).api_socket);
    let load = body_of(&calls, "PUT /snapshot/load");
    assert_eq!(
        load["network_overrides"],
        json!([{"iface_id": "eth0", "host_dev_name": "tap0"}])
    );
    assert_eq!(
        load["vsock_override"],
        json!({"uds_path": "/run/vsock.sock"})
    );
    d.wait_ready(&clone, &rc, Duration::from_secs(10))
        .await
        .unwrap();

    let before = net.calls().len();
    d.destroy(&clone.id, Some(&rc)).await.unwrap();
    assert_eq!(
        net.calls()[before..]
            .iter()
            .filter(|c| c.contains(" del "))
            .collect::<Vec<_>>(),
        [
            &format!("ip link del atl{}", clone.id),
            &format!("ip netns del atelier-{}", clone.id)
        ]
    );
    d.destroy(&src.id, None).await.unwrap();
}

#[tokio::test]
async fn without_the_jailer_snapshots_are_disk_only_and_clones_boot() {
    let b = Bench::new();
    let d = b.driver(false, "", None);
    assert!(
        d.info().notes.iter().any(|n| n.contains("disk-only")),
        "{:?}",
        d.info().notes
    );
    let src = spec();
    let rt = launch_ready(&d, &src).await;
    write_at(&d.paths(&src.id).rootfs, 4096, b"installed");
    let booted = api_records_of(&b.api_record, &d.paths(&src.id).api_socket).len();
    let info = d.snapshot(&src, &rt, &b.path("prebuild")).await.unwrap();
    assert!(!info.restores_memory());
    let machine: FirecrackerSnapshot = serde_json::from_value(info.machine.clone()).unwrap();
    assert_eq!(machine.vmstate, None);
    let src_calls = api_records_of(&b.api_record, &d.paths(&src.id).api_socket);
    assert_eq!(src_calls.len(), booted, "no pause, no memory capture");
    assert!(!d.is_alive(&rt));

    let clone = clone_spec("clone", "token-of-the-clone-0123456789");
    let rc = d.launch_from_snapshot(&clone, &info).await.unwrap();
    let calls = api_records_of(&b.api_record, &d.paths(&clone.id).api_socket);
    assert_eq!(calls.len(), 8, "a full boot: {:?}", keys(&calls));
    assert_eq!(
        body_of(&calls, "PUT /boot-source")["kernel_image_path"],
        info.kernel.as_ref().unwrap().to_str().unwrap(),
        "it boots the snapshot's kernel"
    );
    assert_eq!(read_at(&d.paths(&clone.id).rootfs, 4096, 9), b"installed");
    // The booted agent has the clone's token from its config disk: nothing to refresh.
    d.wait_ready(&clone, &rc, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(agent_records(&b.agent_record)
        .iter()
        .all(|r| r.path != "/v1/identity"));
    d.destroy(&clone.id, Some(&rc)).await.unwrap();
    d.destroy(&src.id, None).await.unwrap();
}

#[tokio::test]
async fn a_memory_snapshot_is_refused_where_the_disk_path_would_differ() {
    let b = Bench::new();
    let jailed = b.driver(true, "", None);
    let src = spec();
    let rt = launch_ready(&jailed, &src).await;
    let info = jailed
        .snapshot(&src, &rt, &b.path("prebuild"))
        .await
        .unwrap();

    let plain = b.driver(false, "", None);
    let clone = clone_spec("clone", "token-of-the-clone-0123456789");
    let e = plain.launch_from_snapshot(&clone, &info).await.unwrap_err();
    match &e {
        VmmError::Snapshot(why) => assert!(
            why.contains("/rootfs.ext4") && why.contains("jailer"),
            "{why}"
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!plain.paths(&clone.id).dir.exists(), "nothing was made");
    assert!(api_records_of(&b.api_record, &plain.paths(&clone.id).api_socket).is_empty());
    jailed.destroy(&src.id, None).await.unwrap();
}

#[tokio::test]
async fn a_refused_snapshot_leaves_the_source_running() {
    let b = Bench::new();
    let d = b.driver(true, "PUT /snapshot/create", None);
    let src = spec();
    let rt = launch_ready(&d, &src).await;
    let dest = b.path("prebuild");
    let e = d.snapshot(&src, &rt, &dest).await.unwrap_err();
    match &e {
        VmmError::Firecracker {
            request,
            status,
            fault,
        } => {
            assert_eq!(request, "PUT /snapshot/create");
            assert_eq!(*status, 400);
            assert_eq!(fault, "refused by the fake");
        }
        other => panic!("unexpected {other:?}"),
    }
    let calls = api_records_of(&b.api_record, &d.paths(&src.id).api_socket);
    let tail: Vec<(String, Value)> = calls[calls.len() - 2..]
        .iter()
        .map(|r| (r.key(), r.body.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        tail,
        [
            ("PUT /snapshot/create".to_owned(), tail[0].1.clone()),
            ("PATCH /vm".to_owned(), json!({"state": "Resumed"})),
        ]
    );
    assert!(
        d.is_alive(&rt),
        "nothing was captured: the source carries on"
    );
    assert!(!dest.exists(), "nothing is left of the snapshot");
    d.agent(&rt, &src.agent_token)
        .unwrap()
        .health()
        .await
        .unwrap();
    d.destroy(&src.id, Some(&rt)).await.unwrap();
}

#[tokio::test]
async fn a_refused_load_is_reported_and_leaves_no_process() {
    let b = Bench::new();
    let d = b.driver(true, "", None);
    let src = spec();
    let rt = launch_ready(&d, &src).await;
    let info = d.snapshot(&src, &rt, &b.path("prebuild")).await.unwrap();

    let refusing = b.driver(true, "PUT /snapshot/load", None);
    let clone = clone_spec("clone", "token-of-the-clone-0123456789");
    let e = refusing
        .launch_from_snapshot(&clone, &info)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VmmError::Firecracker { request, fault, .. }
            if request == "PUT /snapshot/load" && fault == "refused by the fake"),
        "{e:?}"
    );
    assert!(e.to_string().contains("PUT /snapshot/load"), "{e}");
    let paths = refusing.paths(&clone.id);
    assert!(process::processes_using(&paths.dir).is_empty());
    assert!(process::processes_using(paths.jail.as_ref().unwrap()).is_empty());
    refusing.destroy(&clone.id, None).await.unwrap();
    d.destroy(&src.id, None).await.unwrap();
}

#[tokio::test]
async fn a_clone_must_have_the_snapshots_size_and_token() {
    let b = Bench::new();
    let d = b.driver(true, "", None);
    let src = spec();
    let rt = launch_ready(&d, &src).await;
    let info = d.snapshot(&src, &rt, &b.path("prebuild")).await.unwrap();
    let mut bigger = clone_spec("clone", "token-of-the-clone-0123456789");
    bigger.resources.memory_mib = 1024;
    let e = d.launch_from_snapshot(&bigger, &info).await.unwrap_err();
    assert!(e.to_string().contains("512 MiB"), "{e}");
    let mut tokenless = clone_spec("clone", "token-of-the-clone-0123456789");
    tokenless.restore_token = None;
    let e = d.launch_from_snapshot(&tokenless, &info).await.unwrap_err();
    assert!(e.to_string().contains("restore_token"), "{e}");
    // A snapshot directory holds one snapshot.
    let again = spec();
    let rt2 = launch_ready(&d, &again).await;
    let e = d.snapshot(&again, &rt2, &info.dir).await.unwrap_err();
    assert!(e.to_string().contains("already holds a snapshot"), "{e}");
    assert!(d.is_alive(&rt2));
    d.destroy(&again.id, Some(&rt2)).await.unwrap();
    d.destroy(&src.id, None).await.unwrap();
}

#[tokio::test]
async fn sweep_removes_the_networks_of_unknown_sandboxes() {
    let b = Bench::new();
    let net = Arc::new(NetRecorder::default());
    let d = b.driver(true, "", Some(net.clone()));
    let kept = spec();
    let rt = launch_ready(&d, &kept).await;
    let removed = d.sweep(&HashSet::from([kept.id.clone()])).await;
    assert!(removed.is_empty(), "{removed:?}");
    assert!(!net.calls().iter().any(|c| c.contains(" del ")));
    // A crash left a sandbox we no longer know of: its slot file names it.
    let lost = SandboxId::generate();
    std::fs::write(b.path("data/net/slots/7"), lost.as_str()).unwrap();
    let removed = d.sweep(&HashSet::from([kept.id.clone()])).await;
    assert_eq!(removed, [format!("network namespace atelier-{lost}")]);
    assert!(net
        .calls()
        .contains(&format!("ip netns del atelier-{lost}")));
    assert!(!b.path("data/net/slots/7").exists());
    d.destroy(&kept.id, Some(&rt)).await.unwrap();
}

/// The fake's own check: a body the spec does not allow is refused, naming the field.
#[tokio::test]
async fn the_fake_refuses_bodies_the_spec_does_not_allow() {
    let spec = ApiSpec::load();
    assert!(spec
        .check(
            "PUT",
            "/snapshot/load",
            Some(&json!({"snapshot_path": "/s", "mem_backend":
                {"backend_type": "File", "backend_path": "/m"},
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
                "vsock_override": {"uds_path": "/v.sock"}, "resume_vm": true}))
        )
        .is_empty());
    let problems = spec.check(
        "PUT",
        "/snapshot/load",
        Some(
            &json!({"snapshot_path": "/s", "mem_backend": {"backend_type": "Disk",
            "backend_path": "/m"}, "network_overrides": [{"iface_id": "eth0"}], "resume": true}),
        ),
    );
    let text = problems.join("\n");
    for expected in [
        "backend_type: \"Disk\" is not one of",
        "network_overrides[0]: required property host_dev_name is missing",
        ".resume: unknown property",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    assert!(!spec
        .check("PATCH", "/vm", Some(&json!({"state": "Stopped"})))
        .is_empty());
    assert!(!spec
        .check(
            "PUT",
            "/snapshot/create",
            Some(&json!({"snapshot_path": "/s"}))
        )
        .is_empty());

    // Served: the refusal reaches the client as a fault naming the field.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let settings = FakeSettings {
        socket: socket.clone(),
        ..FakeSettings::default()
    };
    let server = tokio::spawn(serve_fake_firecracker(settings));
    let client = FirecrackerClient::new(&socket);
    client
        .wait_for_socket(Duration::from_secs(5), || true)
        .await
        .unwrap();
    let e = client
        .put(
            "/snapshot/create",
            &json!({"snapshot_path": "/s", "mem_file_path": "/m", "kind": "Full"}),
        )
        .await
        .unwrap_err();
    let e = VmmError::from(e);
    assert!(
        matches!(&e, VmmError::Firecracker { request, status: 400, fault }
            if request == "PUT /snapshot/create" && fault.contains(".kind: unknown property")),
        "{e:?}"
    );
    server.abort();
}

/// Runs `cmd` on the host; panics with its stderr on failure, returns its stdout.
fn host(cmd: &[&str]) -> String {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_named_host_service_is_forwarded_into_the_sandbox_namespace_and_closed_with_it() {
    atelier_testkit::require!(atelier_testkit::missing(&[("ip", "iproute2")])
        .or_else(|| { (!atelier_testkit::is_root()).then(|| "namespaces need root".to_string()) }));
    let b = Bench::new();
    let d = b.driver(false, "", Some(Arc::new(NetRecorder::default())));
    // A service on the host's loopback, which answers every connection with a line.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = service.accept().await {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut c, b"hello from the host\n").await;
        }
    });
    let mut s = spec();
    s.network.host_services = vec![atelier_core::network::HostService { port, name: None }];
    // The namespace the scripted runner only records, made for real, with the gateway's
    // address (on tap0 in a real sandbox) on its loopback.
    let ns = format!("atelier-{}", s.id);
    host(&["ip", "netns", "add", &ns]);
    host(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    host(&["ip", "-n", &ns, "addr", "add", "172.16.0.1/32", "dev", "lo"]);
    let inside = |ns: String| async move {
        tokio::process::Command::new("timeout")
            .args(["5", "ip", "netns", "exec", &ns, "bash", "-c"])
            .arg(format!(
                "exec 3<>/dev/tcp/172.16.0.1/{port} && head -n 1 <&3"
            ))
            .output()
            .await
            .unwrap()
    };

    let rt = launch_ready(&d, &s).await;
    let out = inside(ns.clone()).await;
    let reached = String::from_utf8_lossy(&out.stdout).into_owned();
    d.destroy(&s.id, Some(&rt)).await.unwrap();
    let after = inside(ns.clone()).await;
    host(&["ip", "netns", "del", &ns]);
    assert_eq!(
        reached,
        "hello from the host\n",
        "the guest's side reaches the host service at the gateway: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !after.status.success(),
        "the forward closes with the sandbox: {}",
        String::from_utf8_lossy(&after.stdout)
    );
}

/// Asks `name` (type A) of the resolver at the guest's gateway, from inside `ns` (over
/// TCP with a second argument `tcp`); prints `<rcode> <answers> <last address>`.
const DNS_PROBE: &str = r#"
import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
if sys.argv[2:] == ["tcp"]:
    s = socket.create_connection(("172.16.0.1", 53), timeout=3)
    s.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", s.recv(2))[0]
    r = b""
    while len(r) < n:
        r += s.recv(n - len(r))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, ("172.16.0.1", 53))
    r = s.recv(512)
print(r[3] & 15, struct.unpack(">H", r[6:8])[0], ".".join(map(str, r[-4:])))
"#;

#[tokio::test]
async fn an_allowed_host_name_resolves_at_the_gateway_and_opens_its_address_others_are_nxdomain() {
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{rdata, RData, Record};
    atelier_testkit::require!(atelier_testkit::missing(&[
        ("ip", "iproute2"),
        ("python3", "python3")
    ])
    .or_else(|| { (!atelier_testkit::is_root()).then(|| "namespaces need root".to_string()) }));
    // The host's name server, scripted: every A query is 203.0.113.7.
    let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let upstream_at = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = upstream.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::new();
            reply
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .add_queries(query.queries().to_vec());
            let name = query.queries()[0].name().clone();
            reply.add_answer(Record::from_rdata(
                name,
                60,
                RData::A(rdata::A(std::net::Ipv4Addr::new(203, 0, 113, 7))),
            ));
            let _ = upstream.send_to(&reply.to_vec().unwrap(), from).await;
        }
    });
    // SAFETY: this test's process is its own (nextest), and no other thread reads the
    // environment while the driver is made.
    unsafe { std::env::set_var("ATELIER_NAME_SERVERS", upstream_at.to_string()) };
    let b = Bench::new();
    let rules = Arc::new(NetRecorder::default());
    let mut config = b.config(false, "", Some(rules.clone()));
    config.resolver = true;
    let d = FirecrackerDriver::new(config).unwrap();
    let mut s = spec();
    s.network.egress = atelier_core::network::Egress::Allow;
    s.network.allow = vec!["api.allowed.test".into()];
    let ns = format!("atelier-{}", s.id);
    host(&["ip", "netns", "add", &ns]);
    host(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    host(&["ip", "-n", &ns, "addr", "add", "172.16.0.1/32", "dev", "lo"]);
    let ask = |ns: String, name: &'static str| async move {
        let out = tokio::process::Command::new("timeout")
            .args([
                "10", "ip", "netns", "exec", &ns, "python3", "-c", DNS_PROBE, name,
            ])
            .output()
            .await
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    };

    // Host names in the allowlist no longer keep a Firecracker sandbox from starting.
    let rt = launch_ready(&d, &s).await;
    let allowed = ask(ns.clone(), "api.allowed.test").await;
    let denied = ask(ns.clone(), "elsewhere.test").await;
    // Over TCP too (where a guest asks again after a truncated answer).
    let denied_tcp = ask(ns.clone(), "elsewhere.test tcp").await;
    let learnt = rules
        .calls()
        .into_iter()
        // (The scripted runner says yes to the check, so the rule counts as there.)
        .filter(|c| c.contains("atelier-names -i tap0 -d 203.0.113.7/32 -j ACCEPT"))
        .count();
    d.destroy(&s.id, Some(&rt)).await.unwrap();
    host(&["ip", "netns", "del", &ns]);
    assert_eq!(allowed, "0 1 203.0.113.7", "the allowed name resolves");
    assert!(
        denied.starts_with("3 0"),
        "another name is NXDOMAIN: {denied}"
    );
    assert!(
        denied_tcp.starts_with("3 0"),
        "over TCP as well: {denied_tcp}"
    );
    assert_eq!(
        learnt,
        1,
        "the answer opened its address: {:?}",
        rules.calls()
    );
}
