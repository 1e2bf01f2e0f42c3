//! The Firecracker driver against a fake Firecracker: an API server on a Unix socket that
//! records every request (and a fake agent behind the hybrid vsock socket).
//!
//! The full-launch tests start a shell script as "firecracker"; it re-runs this test
//! binary with only `fake_firecracker_process` selected, which then serves the fake API on
//! the `--api-sock` path until it is killed.

mod firecracker_support;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atelier_vmm::firecracker::api::{
    InstanceState, MemoryBackendType, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
    VsockOverride,
};
use atelier_vmm::firecracker::disk::same_file;
use atelier_vmm::firecracker::{
    boot_calls, configure, ClientError, FirecrackerClient, FirecrackerConfig, FirecrackerDriver,
    JailerConfig,
};
use atelier_vmm::{process, Driver, VmmError};
use firecracker_support::{
    accept_all, fake_artifacts, refuse, spec, FakeApi, FakeImages, Recorded,
};
use serde_json::{json, Value};

const BOOT_ORDER: [(&str, &str); 8] = [
    ("PUT", "/logger"),
    ("PUT", "/boot-source"),
    ("PUT", "/drives/rootfs"),
    ("PUT", "/drives/config"),
    ("PUT", "/machine-config"),
    ("PUT", "/vsock"),
    ("PUT", "/entropy"),
    ("PUT", "/actions"),
];

fn order(calls: &[Recorded]) -> Vec<(String, String)> {
    calls.iter().map(Recorded::key).collect()
}

fn expected(n: usize) -> Vec<(String, String)> {
    BOOT_ORDER[..n]
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

fn driver_in(dir: &Path, binary: PathBuf) -> FirecrackerDriver {
    let artifacts = fake_artifacts(&dir.join("image"));
    let mut config =
        FirecrackerConfig::new(binary, Arc::new(FakeImages(artifacts)), dir.join("data"));
    config.socket_timeout = Duration::from_secs(20);
    FirecrackerDriver::new(config).unwrap()
}

#[tokio::test]
async fn configure_sends_the_boot_sequence_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver_in(dir.path(), "firecracker".into());
    let socket = dir.path().join("api.sock");
    let api = FakeApi::start(&socket, accept_all(), None, false);
    let s = spec();
    let calls = boot_calls(&d.plan(&s).unwrap());
    configure(&FirecrackerClient::new(&socket), &calls)
        .await
        .unwrap();

    let got = api.calls();
    assert_eq!(order(&got), expected(BOOT_ORDER.len()));
    for (sent, seen) in calls.iter().zip(&got) {
        assert_eq!(sent.body, seen.body, "{}", sent.describe());
    }
    let body = |path: &str| {
        got.iter()
            .find(|c| c.path == path)
            .unwrap()
            .body
            .clone()
            .unwrap()
    };
    let paths = d.paths(&s.id);
    assert_eq!(
        body("/drives/rootfs"),
        json!({"drive_id": "rootfs", "is_root_device": true, "is_read_only": false,
               "path_on_host": paths.rootfs.to_str().unwrap()})
    );
    assert_eq!(
        body("/drives/config"),
        json!({"drive_id": "config", "is_root_device": false, "is_read_only": true,
               "path_on_host": paths.config_disk.to_str().unwrap()})
    );
    assert_eq!(
        body("/machine-config"),
        json!({"vcpu_count": 2, "mem_size_mib": 512, "smt": false, "track_dirty_pages": false})
    );
    assert_eq!(
        body("/vsock"),
        json!({"guest_cid": 3, "uds_path": paths.vsock_socket.to_str().unwrap()})
    );
    assert_eq!(body("/actions"), json!({"action_type": "InstanceStart"}));
    let boot = body("/boot-source");
    assert_eq!(
        boot["boot_args"],
        "console=ttyS0 reboot=k panic=1 pci=off quiet"
    );
    assert!(boot["kernel_image_path"]
        .as_str()
        .unwrap()
        .ends_with("/vmlinux"));
    assert!(boot["initrd_path"]
        .as_str()
        .unwrap()
        .ends_with("initramfs.cpio.gz"));
}

#[tokio::test]
async fn a_refusal_stops_the_sequence_and_carries_the_fault_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver_in(dir.path(), "firecracker".into());
    let socket = dir.path().join("api.sock");
    let api = FakeApi::start(
        &socket,
        refuse("PUT", "/drives/config", 400, "Invalid drive"),
        None,
        false,
    );
    let calls = boot_calls(&d.plan(&spec()).unwrap());
    let e = configure(&FirecrackerClient::new(&socket), &calls)
        .await
        .unwrap_err();
    match &e {
        VmmError::Firecracker {
            request,
            status,
            fault,
        } => {
            assert_eq!(request, "PUT /drives/config");
            assert_eq!(*status, 400);
            assert_eq!(fault, "Invalid drive");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(e.to_string().contains("Invalid drive"), "{e}");
    assert_eq!(
        order(&api.calls()),
        expected(4),
        "nothing sent after the refusal"
    );
}

#[tokio::test]
async fn client_calls_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let api = FakeApi::start(
        &socket,
        Arc::new(|r: &Recorded| match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/") => (
                200,
                r#"{"app_name":"Firecracker","id":"x","state":"Paused","vmm_version":"1.16.1"}"#
                    .into(),
            ),
            ("GET", "/version") => (200, r#"{"firecracker_version":"1.16.1"}"#.into()),
            ("PUT", "/snapshot/load") => (500, "load failed: no such file\n".into()),
            ("PUT", "/actions") => (400, String::new()),
            _ => (204, String::new()),
        }),
        None,
        false,
    );
    let client = FirecrackerClient::new(&socket);
    client
        .wait_for_socket(Duration::from_secs(1), || true)
        .await
        .unwrap();
    assert_eq!(
        client.describe_instance().await.unwrap().state,
        InstanceState::Paused
    );
    assert_eq!(
        client.version().await.unwrap().firecracker_version,
        "1.16.1"
    );
    client.pause().await.unwrap();
    client.resume().await.unwrap();
    client
        .create_snapshot(&SnapshotCreateParams {
            snapshot_path: "/s/vm.state".into(),
            mem_file_path: "/s/vm.mem".into(),
            snapshot_type: Some(SnapshotType::Full),
        })
        .await
        .unwrap();
    let mut load = SnapshotLoadParams::from_file("/s/vm.state", "/s/vm.mem");
    load.resume_vm = Some(true);
    load.vsock_override = Some(VsockOverride {
        uds_path: "/s/v.sock".into(),
    });
    let e = client.load_snapshot(&load).await.unwrap_err();
    assert_eq!(
        e.fault_message(),
        Some("load failed: no such file"),
        "raw text when not JSON"
    );
    let e = client.start_instance().await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Api { status: 400, fault_message, .. } if fault_message == "400 Bad Request"),
        "{e}"
    );

    let got = api.calls();
    let bodies: Vec<(String, String, Option<Value>)> = got
        .iter()
        .map(|c| (c.method.clone(), c.path.clone(), c.body.clone()))
        .collect();
    assert_eq!(
        bodies,
        [
            ("GET".into(), "/".into(), None),
            ("GET".into(), "/version".into(), None),
            (
                "PATCH".into(),
                "/vm".into(),
                Some(json!({"state": "Paused"}))
            ),
            (
                "PATCH".into(),
                "/vm".into(),
                Some(json!({"state": "Resumed"}))
            ),
            (
                "PUT".into(),
                "/snapshot/create".into(),
                Some(
                    json!({"snapshot_path": "/s/vm.state", "mem_file_path": "/s/vm.mem",
                            "snapshot_type": "Full"})
                )
            ),
            (
                "PUT".into(),
                "/snapshot/load".into(),
                Some(json!({"snapshot_path": "/s/vm.state",
                            "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"},
                            "resume_vm": true, "vsock_override": {"uds_path": "/s/v.sock"}}))
            ),
            (
                "PUT".into(),
                "/actions".into(),
                Some(json!({"action_type": "InstanceStart"}))
            ),
        ]
    );
    assert_eq!(
        load.mem_backend.unwrap().backend_type,
        MemoryBackendType::File
    );

    // A socket nobody serves is a connection error, not an API error.
    drop(api);
    let gone = FirecrackerClient::new(dir.path().join("nobody.sock"));
    let e = gone.pause().await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    assert!(matches!(VmmError::from(e), VmmError::Io { .. }));
}

// ---------------------------------------------------------------------------------------
// Full launches with a fake Firecracker process.

/// Entry point of the fake Firecracker process (a no-op in a normal test run).
#[test]
fn fake_firecracker_process() {
    let Ok(socket) = std::env::var("ATELIER_FAKE_FC_SOCK") else {
        return;
    };
    let record = std::env::var("ATELIER_FAKE_FC_RECORD")
        .ok()
        .map(PathBuf::from);
    let responder = match std::env::var("ATELIER_FAKE_FC_REFUSE") {
        Ok(r) if !r.is_empty() => {
            let (method, path) = r.split_once(' ').unwrap();
            refuse(method, path, 400, "refused by the fake")
        }
        _ => accept_all(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        println!("fake firecracker: serving {socket}");
        let chroot = std::env::var_os("ATELIER_FAKE_FC_CHROOT").map(PathBuf::from);
        let _api = FakeApi::start_in(Path::new(&socket), responder, record, true, chroot);
        // Runs until the driver kills it; a bounded life in case a failed test never does.
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

/// Writes a "firecracker" script that runs [`fake_firecracker_process`].
fn fake_firecracker(dir: &Path, record: &Path, refuse: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        r#"#!/bin/sh
sock=
while [ $# -gt 0 ]; do
  case "$1" in
    --api-sock) sock="$2"; shift 2 ;;
    --version) echo "Firecracker v0.0.0-fake"; exit 0 ;;
    *) shift ;;
  esac
done
ATELIER_FAKE_FC_SOCK="$sock" ATELIER_FAKE_FC_RECORD='{record}' ATELIER_FAKE_FC_REFUSE='{refuse}' \
  exec '{exe}' --exact fake_firecracker_process --nocapture --test-threads=1 "$sock"
"#,
        record = record.display(),
        exe = exe.display(),
    );
    write_script(dir, "firecracker", &script)
}

fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn head(file: &Path, n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0; n];
    std::fs::File::open(file)
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

fn recorded(file: &Path) -> Vec<(String, String, Value)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["method"].as_str().unwrap().to_owned(),
                v["path"].as_str().unwrap().to_owned(),
                v["body"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn launch_wait_pause_resume_stop_and_destroy_with_a_fake_firecracker() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let d = driver_in(dir.path(), fake_firecracker(dir.path(), &record, ""));
    let s = spec();
    let paths = d.paths(&s.id);

    let rt = d.launch(&s).await.unwrap();
    assert_eq!(
        rt.agent,
        format!("fcvsock:{}:1024", paths.vsock_socket.display())
    );
    assert_eq!(rt.dir, paths.dir);
    assert!(d.is_alive(&rt));
    let calls = recorded(&record);
    let keys: Vec<(String, String)> = calls
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(keys, expected(BOOT_ORDER.len()));

    // The sandbox's files.
    assert_eq!(
        std::fs::metadata(&paths.rootfs).unwrap().len(),
        256 * 1024 * 1024,
        "grown (sparsely) to disk_mib"
    );
    assert_eq!(head(&paths.rootfs, 10), b"ext4 image");
    let config = std::fs::read(&paths.config_disk).unwrap();
    assert_eq!(config.len(), atelier_proto::GUEST_CONFIG_DISK_BYTES);
    let end = config.iter().position(|b| *b == 0).unwrap();
    let guest: atelier_proto::GuestConfig = serde_json::from_slice(&config[..end]).unwrap();
    assert_eq!(guest.hostname, "box");
    assert_eq!(guest.token, "secret-token");
    assert_eq!(guest.listen, "vsock:4294967295:1024");
    assert_eq!(guest.env["GREETING"], "hello");
    assert!(guest.clock_epoch_ms > 1_600_000_000_000);
    let mode = std::fs::metadata(&paths.config_disk)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token stays private");

    // The agent answers through the hybrid vsock.
    d.wait_ready(&s, &rt, Duration::from_secs(10))
        .await
        .unwrap();
    d.agent(&rt, &s.agent_token)
        .unwrap()
        .health()
        .await
        .unwrap();

    d.pause(&rt).await.unwrap();
    d.resume(&rt).await.unwrap();
    let calls = recorded(&record);
    let tail: Vec<(String, String, Value)> = calls[BOOT_ORDER.len()..].to_vec();
    assert_eq!(
        tail,
        [
            ("PATCH".into(), "/vm".into(), json!({"state": "Paused"})),
            ("PATCH".into(), "/vm".into(), json!({"state": "Resumed"})),
        ]
    );

    d.stop(&s.id, Some(&rt)).await.unwrap();
    assert!(!d.is_alive(&rt));
    assert!(process::processes_using(&paths.dir).is_empty());
    assert!(!paths.api_socket.exists() && !paths.vsock_socket.exists());
    assert!(paths.rootfs.exists(), "the disk outlives a stop");
    assert!(d.pause(&rt).await.is_err(), "nothing to pause");

    // A second launch keeps the disk (and its writes).
    std::fs::write(&paths.rootfs, b"written by the guest").unwrap();
    let rt2 = d.launch(&s).await.unwrap();
    assert_ne!(rt2.pid, rt.pid);
    assert_eq!(head(&paths.rootfs, 20), b"written by the guest");
    d.wait_ready(&s, &rt2, Duration::from_secs(10))
        .await
        .unwrap();

    d.destroy(&s.id, Some(&rt2)).await.unwrap();
    assert!(!d.is_alive(&rt2));
    assert!(!paths.dir.exists());
    d.destroy(&s.id, Some(&rt2)).await.unwrap(); // idempotent
    d.stop(&s.id, None).await.unwrap();
}

#[tokio::test]
async fn launch_surfaces_a_refusal_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let d = driver_in(
        dir.path(),
        fake_firecracker(dir.path(), &record, "PUT /machine-config"),
    );
    let s = spec();
    let e = d.launch(&s).await.unwrap_err();
    assert!(
        matches!(&e, VmmError::Firecracker { fault, .. } if fault == "refused by the fake"),
        "{e:?}"
    );
    assert!(e.to_string().contains("PUT /machine-config"), "{e}");
    let keys: Vec<(String, String)> = recorded(&record)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    assert_eq!(keys, expected(5));
    assert!(process::processes_using(&d.paths(&s.id).dir).is_empty());
    d.destroy(&s.id, None).await.unwrap();
}

#[tokio::test]
async fn a_vmm_that_exits_at_once_is_reported_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let bin = write_script(
        dir.path(),
        "firecracker",
        "#!/bin/sh\necho 'Error: cannot open /dev/kvm: No such file or directory' >&2\nexit 1\n",
    );
    let d = driver_in(dir.path(), bin);
    let s = spec();
    let e = d.launch(&s).await.unwrap_err();
    match &e {
        VmmError::ExitedEarly { log_tail } => {
            assert!(log_tail.contains("cannot open /dev/kvm"), "{log_tail}")
        }
        other => panic!("unexpected {other:?}"),
    }
    d.destroy(&s.id, None).await.unwrap();
}

#[tokio::test]
async fn boot_timeout_carries_the_console_tail() {
    // A "VMM" that serves the API but whose guest never brings the agent up.
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let d = driver_in(dir.path(), fake_firecracker(dir.path(), &record, ""));
    let s = spec();
    let rt = d.launch(&s).await.unwrap();
    // The agent never listens: Firecracker would close the connection to CONNECT.
    let _ = std::fs::remove_file(d.paths(&s.id).vsock_socket);
    let e = d
        .wait_ready(&s, &rt, Duration::from_millis(600))
        .await
        .unwrap_err();
    match &e {
        VmmError::BootTimeout { log_tail, .. } => {
            assert!(log_tail.contains("fake firecracker: serving"), "{log_tail}")
        }
        other => panic!("unexpected {other:?}"),
    }
    d.destroy(&s.id, Some(&rt)).await.unwrap();
}

#[tokio::test]
async fn sweep_removes_what_no_sandbox_owns() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let d = driver_in(dir.path(), fake_firecracker(dir.path(), &record, ""));
    let kept = spec();
    let lost = spec();
    let rt_kept = d.launch(&kept).await.unwrap();
    let rt_lost = d.launch(&lost).await.unwrap();
    let removed = d.sweep(&HashSet::from([kept.id.clone()])).await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(removed[0].contains(lost.id.as_str()));
    assert!(!d.is_alive(&rt_lost));
    assert!(!d.paths(&lost.id).dir.exists());
    assert!(d.is_alive(&rt_kept));
    d.destroy(&kept.id, Some(&rt_kept)).await.unwrap();
}

#[test]
fn planned_resources_name_the_directory_and_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver_in(dir.path(), "firecracker".into());
    let s = spec();
    let paths = d.paths(&s.id);
    let planned = d.planned_resources(&s.id);
    assert_eq!(
        planned,
        [
            ("dir".to_owned(), paths.dir.display().to_string()),
            ("socket".to_owned(), paths.api_socket.display().to_string()),
            (
                "socket".to_owned(),
                paths.vsock_socket.display().to_string()
            ),
        ]
    );
    let info = d.info();
    assert!(info.isolated && info.can_pause);
    assert_eq!(info.kind, atelier_vmm::DriverKind::Firecracker);
}

// ---------------------------------------------------------------------------------------
// Under a (fake) jailer.

/// A "jailer" that does no jailing: it execs the exec file with the API socket moved into
/// the would-be chroot, and tells the fake which chroot the body paths are relative to.
fn fake_jailer(dir: &Path) -> PathBuf {
    write_script(
        dir,
        "jailer",
        r#"#!/bin/sh
base= id= exe=
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    --chroot-base-dir) base="$2"; shift 2 ;;
    --id) id="$2"; shift 2 ;;
    --exec-file) exe="$2"; shift 2 ;;
    *) shift 2 ;;
  esac
done
root="$base/$(basename "$exe")/$id/root"
api=
while [ $# -gt 0 ]; do
  case "$1" in --api-sock) api="$2"; shift 2 ;; *) shift ;; esac
done
ATELIER_FAKE_FC_CHROOT="$root" exec "$exe" --api-sock "$root$api"
"#,
    )
}

fn jailed_driver(dir: &Path, chroot_base: &Path, record: &Path) -> FirecrackerDriver {
    let artifacts = fake_artifacts(&dir.join("image"));
    let fc = fake_firecracker(dir, record, "");
    let mut config = FirecrackerConfig::new(fc, Arc::new(FakeImages(artifacts)), dir.join("data"));
    config.socket_timeout = Duration::from_secs(20);
    let mut jailer = JailerConfig::new(
        fake_jailer(dir),
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    jailer.chroot_base = chroot_base.to_path_buf();
    config.jailer = Some(jailer);
    FirecrackerDriver::new(config).unwrap()
}

#[tokio::test]
async fn jailed_launch_places_files_in_the_chroot_and_cleans_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("calls.jsonl");
    let d = jailed_driver(dir.path(), &dir.path().join("jails"), &record);
    let s = spec();
    let paths = d.paths(&s.id);
    let jail = paths.jail.clone().unwrap();
    assert_eq!(
        jail,
        dir.path().join("jails/firecracker").join(s.id.as_str())
    );

    let rt = d.launch(&s).await.unwrap();
    assert_eq!(
        rt.agent,
        format!("fcvsock:{}/run/vsock.sock:1024", paths.root.display())
    );
    // Every path Firecracker was given exists inside the chroot.
    let calls = recorded(&record);
    let mut given = vec![];
    for (_, _, body) in &calls {
        for key in [
            "kernel_image_path",
            "initrd_path",
            "path_on_host",
            "log_path",
        ] {
            if let Some(p) = body[key].as_str() {
                given.push(p.to_owned());
            }
        }
    }
    assert_eq!(
        given,
        [
            "/firecracker.log",
            "/vmlinux",
            "/initramfs",
            "/rootfs.ext4",
            "/config.img"
        ]
    );
    for p in &given {
        assert!(paths.root.join(&p[1..]).is_file(), "{p} is in the chroot");
    }
    // Same filesystem here: the disks are the sandbox's own files, hard-linked.
    assert!(same_file(&paths.root.join("rootfs.ext4"), &paths.rootfs));
    assert!(same_file(
        &paths.root.join("config.img"),
        &paths.config_disk
    ));

    d.wait_ready(&s, &rt, Duration::from_secs(10))
        .await
        .unwrap();
    d.pause(&rt).await.unwrap();
    d.stop(&s.id, Some(&rt)).await.unwrap();
    assert!(!d.is_alive(&rt));
    assert!(!jail.exists(), "the jail goes with the VM");
    assert!(paths.rootfs.is_file() && paths.dir.join("firecracker.log").is_file());

    let rt = d.launch(&s).await.unwrap();
    d.wait_ready(&s, &rt, Duration::from_secs(10))
        .await
        .unwrap();
    d.destroy(&s.id, Some(&rt)).await.unwrap();
    assert!(!jail.exists() && !paths.dir.exists());
}

#[tokio::test]
async fn a_disk_copied_into_a_jail_on_another_filesystem_is_saved_back_on_stop() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir()
        || std::fs::metadata(shm)
            .map(|m| m.permissions().readonly())
            .unwrap_or(true)
    {
        atelier_testkit::skip_documented("no writable /dev/shm for a jail on another filesystem");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jails = tempfile::tempdir_in(shm).unwrap();
    let record = dir.path().join("calls.jsonl");
    let d = jailed_driver(dir.path(), jails.path(), &record);
    let s = spec();
    let paths = d.paths(&s.id);
    let rt = d.launch(&s).await.unwrap();
    let jailed = paths.root.join("rootfs.ext4");
    if same_file(&jailed, &paths.rootfs) {
        atelier_testkit::skip_documented(
            "/dev/shm is on the same filesystem as the temporary directory",
        );
        d.destroy(&s.id, Some(&rt)).await.unwrap();
        return;
    }
    // The guest writes to its (copied) disk…
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&jailed)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"guest data", 4096).unwrap();
    drop(f);
    d.stop(&s.id, Some(&rt)).await.unwrap();
    // …and the sandbox's disk has it after the stop.
    let f = std::fs::File::open(&paths.rootfs).unwrap();
    let mut buf = [0u8; 10];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, 4096).unwrap();
    assert_eq!(&buf, b"guest data");
    assert_eq!(head(&paths.rootfs, 10), b"ext4 image");
    assert!(!paths.jail.unwrap().exists());
    d.destroy(&s.id, None).await.unwrap();
}
