//! Every request body the Firecracker driver sends is checked against the vendored
//! Firecracker API spec (`crates/vmm/spec/firecracker-api.yaml`, Swagger 2.0): the
//! operation exists for (method, path), every `required` property is present, no property
//! is unknown (Firecracker refuses unknown fields), and types and enums match.

#[path = "fc_api_spec/mod.rs"]
mod fc_api_spec;
mod firecracker_support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use atelier_vmm::firecracker::api::*;
use atelier_vmm::firecracker::calls::{self, ApiCall};
use atelier_vmm::firecracker::{boot_calls, FirecrackerConfig, FirecrackerDriver, JailerConfig};
use fc_api_spec::ApiSpec;
use firecracker_support::{fake_artifacts, spec as sandbox_spec, FakeImages};
use serde_json::{json, Value};

/// The vendored spec, checking the driver's typed calls.
struct Spec {
    api: ApiSpec,
}

impl Spec {
    fn load() -> Self {
        Self {
            api: ApiSpec::load(),
        }
    }

    fn definition(&self, name: &str) -> &Value {
        self.api.definition(name)
    }

    fn validate(&self, value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
        self.api.validate(value, schema, at, errors)
    }

    /// Checks one request against the spec; returns every problem found.
    fn check_call(&self, call: &ApiCall) -> Vec<String> {
        self.api
            .check(call.method.as_str(), &call.path, call.body.as_ref())
    }

    fn assert_valid(&self, call: &ApiCall) {
        let errors = self.check_call(call);
        assert!(
            errors.is_empty(),
            "{} {:?}:\n{}",
            call.describe(),
            call.body,
            errors.join("\n")
        );
    }

    /// Properties of a definition: (all, required).
    fn properties(&self, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let d = self.definition(name);
        let all = d["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let required = d["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        (all, required)
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn driver(jailed: bool, metrics: bool) -> (tempfile::TempDir, FirecrackerDriver) {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = fake_artifacts(&dir.path().join("image"));
    let fc = dir.path().join("bin/firecracker");
    std::fs::create_dir_all(fc.parent().unwrap()).unwrap();
    std::fs::write(&fc, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&fc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = FirecrackerConfig::new(
        &fc,
        Arc::new(FakeImages(artifacts)),
        dir.path().join("data"),
    );
    config.metrics = metrics;
    if jailed {
        let mut j = JailerConfig::new("/usr/bin/jailer", 123, 456);
        j.chroot_base = dir.path().join("jail");
        config.jailer = Some(j);
    }
    let d = FirecrackerDriver::new(config).unwrap();
    (dir, d)
}

/// Every request body the driver and client build.
fn everything_the_driver_sends() -> Vec<ApiCall> {
    let mut all = vec![];
    for (jailed, metrics) in [(false, false), (false, true), (true, true)] {
        let (_dir, d) = driver(jailed, metrics);
        all.extend(boot_calls(&d.plan(&sandbox_spec()).unwrap()));
    }
    all.push(calls::pause());
    all.push(calls::resume());
    all.push(calls::action(ActionType::SendCtrlAltDel));
    all.push(calls::action(ActionType::FlushMetrics));
    for t in [None, Some(SnapshotType::Full), Some(SnapshotType::Diff)] {
        all.push(calls::create_snapshot(&SnapshotCreateParams {
            snapshot_path: "/snap/vm.state".into(),
            mem_file_path: "/snap/vm.mem".into(),
            snapshot_type: t,
        }));
    }
    all.push(calls::load_snapshot(&SnapshotLoadParams::from_file(
        "/snap/vm.state",
        "/snap/vm.mem",
    )));
    let mut uffd = SnapshotLoadParams::from_file("/snap/vm.state", "/run/uffd.sock");
    if let Some(b) = uffd.mem_backend.as_mut() {
        b.backend_type = MemoryBackendType::Uffd;
    }
    uffd.resume_vm = Some(true);
    uffd.track_dirty_pages = Some(true);
    uffd.network_overrides = Some(vec![NetworkOverride {
        iface_id: "eth0".into(),
        host_dev_name: "tap7".into(),
    }]);
    uffd.vsock_override = Some(VsockOverride {
        uds_path: "/run/v7.sock".into(),
    });
    all.push(calls::load_snapshot(&uffd));
    all
}

#[test]
fn every_body_the_driver_sends_matches_the_spec() {
    let spec = Spec::load();
    let all = everything_the_driver_sends();
    assert!(all.len() > 20);
    for call in &all {
        spec.assert_valid(call);
    }
}

#[test]
fn the_boot_sequence_is_the_documented_one() {
    let (_dir, d) = driver(false, false);
    let calls = boot_calls(&d.plan(&sandbox_spec()).unwrap());
    let order: Vec<String> = calls.iter().map(ApiCall::describe).collect();
    assert_eq!(
        order,
        [
            "PUT /logger",
            "PUT /boot-source",
            "PUT /drives/rootfs",
            "PUT /drives/config",
            "PUT /machine-config",
            "PUT /vsock",
            "PUT /entropy",
            "PUT /actions"
        ]
    );
}

/// A renamed, missing, mistyped or out-of-enum field is caught.
#[test]
fn mutated_bodies_fail_validation() {
    let spec = Spec::load();
    let (_dir, d) = driver(false, false);
    let calls = boot_calls(&d.plan(&sandbox_spec()).unwrap());
    let drive = calls
        .iter()
        .find(|c| c.path == "/drives/config")
        .unwrap()
        .clone();
    spec.assert_valid(&drive);

    let mutate = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = drive.clone();
        if let Some(Value::Object(m)) = c.body.as_mut() {
            f(m);
        }
        spec.check_call(&c)
    };
    // Renamed key: `is_read_only` → `read_only`.
    let errors = mutate(&|m| {
        let v = m.remove("is_read_only").unwrap();
        m.insert("read_only".into(), v);
    });
    assert!(
        errors
            .iter()
            .any(|e| e.contains("read_only: unknown property")),
        "{errors:?}"
    );
    // Renamed required key: `drive_id` → `id`.
    let errors = mutate(&|m| {
        let v = m.remove("drive_id").unwrap();
        m.insert("id".into(), v);
    });
    assert!(
        errors
            .iter()
            .any(|e| e.contains("required property drive_id is missing")),
        "{errors:?}"
    );
    // Wrong type.
    let errors = mutate(&|m| {
        m.insert("is_read_only".into(), json!("yes"));
    });
    assert!(
        errors.iter().any(|e| e.contains("expected boolean")),
        "{errors:?}"
    );
    // Not in the enum.
    let errors = mutate(&|m| {
        m.insert("io_engine".into(), json!("Uring"));
    });
    assert!(
        errors.iter().any(|e| e.contains("is not one of")),
        "{errors:?}"
    );
    // Path and body disagree.
    let errors = mutate(&|m| {
        m.insert("drive_id".into(), json!("other"));
    });
    assert!(
        errors.iter().any(|e| e.contains("path parameter")),
        "{errors:?}"
    );

    // Nested and other operations too.
    let mut load = calls::load_snapshot(&SnapshotLoadParams::from_file("/s", "/m"));
    load.body.as_mut().unwrap()["mem_backend"]["backend_type"] = json!("Memory");
    assert!(!spec.check_call(&load).is_empty());
    let mut vm = calls::pause();
    vm.body = Some(json!({"state": "Pause"}));
    assert!(!spec.check_call(&vm).is_empty());
    let mut machine = calls
        .iter()
        .find(|c| c.path == "/machine-config")
        .unwrap()
        .clone();
    machine.body.as_mut().unwrap()["vcpu_count"] = json!(64);
    assert!(spec
        .check_call(&machine)
        .iter()
        .any(|e| e.contains("above the maximum")));
    // Unknown paths and methods.
    assert!(!spec
        .check_call(&ApiCall::put("/drive/rootfs", &json!({})))
        .is_empty());
    assert!(!spec
        .check_call(&ApiCall::patch("/boot-source", &json!({})))
        .is_empty());
}

/// Our types have exactly the spec's fields: all of them when every option is set, and
/// exactly the required ones when none is.
#[test]
fn api_types_mirror_the_spec_definitions() {
    let spec = Spec::load();
    let bucket = TokenBucket {
        size: 1,
        refill_time: 2,
        one_time_burst: Some(3),
    };
    let limiter = RateLimiter {
        bandwidth: Some(bucket),
        ops: Some(bucket),
    };
    let full_and_minimal: Vec<(&str, Value, Value)> = vec![
        (
            "BootSource",
            json!(BootSource {
                kernel_image_path: "k".into(),
                boot_args: Some("a".into()),
                initrd_path: Some("i".into()),
            }),
            json!(BootSource {
                kernel_image_path: "k".into(),
                boot_args: None,
                initrd_path: None,
            }),
        ),
        (
            "Drive",
            json!(Drive {
                drive_id: "d".into(),
                is_root_device: false,
                partuuid: Some("p".into()),
                cache_type: Some(CacheType::Writeback),
                is_read_only: Some(true),
                path_on_host: Some("/d".into()),
                rate_limiter: Some(limiter),
                io_engine: Some(IoEngine::Async),
                socket: Some("/s".into()),
            }),
            json!(Drive {
                drive_id: "d".into(),
                is_root_device: false,
                partuuid: None,
                cache_type: None,
                is_read_only: None,
                path_on_host: None,
                rate_limiter: None,
                io_engine: None,
                socket: None,
            }),
        ),
        (
            "MachineConfiguration",
            json!(MachineConfiguration {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: Some(true),
                track_dirty_pages: Some(true),
                cpu_template: Some(CpuTemplate::T2S),
                huge_pages: Some(HugePages::TwoM),
            }),
            json!(MachineConfiguration {
                vcpu_count: 2,
                mem_size_mib: 256,
                smt: None,
                track_dirty_pages: None,
                cpu_template: None,
                huge_pages: None,
            }),
        ),
        (
            "NetworkInterface",
            json!(NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                guest_mac: Some("06:00:00:00:00:01".into()),
                mtu: Some(1500),
                rx_rate_limiter: Some(limiter),
                tx_rate_limiter: Some(limiter),
            }),
            json!(NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                guest_mac: None,
                mtu: None,
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            }),
        ),
        (
            "Vsock",
            json!(Vsock {
                guest_cid: 3,
                uds_path: "/v".into(),
                vsock_id: Some("v".into()),
            }),
            json!(Vsock {
                guest_cid: 3,
                uds_path: "/v".into(),
                vsock_id: None,
            }),
        ),
        (
            "EntropyDevice",
            json!(EntropyDevice {
                rate_limiter: Some(limiter)
            }),
            json!(EntropyDevice::default()),
        ),
        (
            "Logger",
            json!(Logger {
                log_path: Some("/l".into()),
                level: Some(LogLevel::Debug),
                show_level: Some(true),
                show_log_origin: Some(true),
                module: Some("api_server".into()),
            }),
            json!(Logger::default()),
        ),
        (
            "Metrics",
            json!(Metrics {
                metrics_path: "/m".into(),
                emit_id: Some(true),
                properties: Some(BTreeMap::from([("k".into(), "v".into())])),
            }),
            json!(Metrics {
                metrics_path: "/m".into(),
                emit_id: None,
                properties: None,
            }),
        ),
        (
            "InstanceActionInfo",
            json!(InstanceActionInfo {
                action_type: ActionType::InstanceStart
            }),
            json!(InstanceActionInfo {
                action_type: ActionType::InstanceStart
            }),
        ),
        (
            "Vm",
            json!(Vm {
                state: VmState::Paused
            }),
            json!(Vm {
                state: VmState::Resumed
            }),
        ),
        (
            "SnapshotCreateParams",
            json!(SnapshotCreateParams {
                snapshot_path: "/s".into(),
                mem_file_path: "/m".into(),
                snapshot_type: Some(SnapshotType::Diff),
            }),
            json!(SnapshotCreateParams {
                snapshot_path: "/s".into(),
                mem_file_path: "/m".into(),
                snapshot_type: None,
            }),
        ),
        (
            "SnapshotLoadParams",
            json!(SnapshotLoadParams {
                snapshot_path: "/s".into(),
                mem_backend: Some(MemoryBackend {
                    backend_type: MemoryBackendType::File,
                    backend_path: "/m".into(),
                }),
                mem_file_path: Some("/m".into()),
                track_dirty_pages: Some(true),
                enable_diff_snapshots: Some(true),
                resume_vm: Some(true),
                network_overrides: Some(vec![NetworkOverride {
                    iface_id: "eth0".into(),
                    host_dev_name: "tap1".into(),
                }]),
                vsock_override: Some(VsockOverride {
                    uds_path: "/v".into(),
                }),
                clock_realtime: Some(true),
                huge_pages: Some(SnapshotHugePages::Snapshot),
            }),
            json!(SnapshotLoadParams {
                mem_backend: None,
                ..SnapshotLoadParams::from_file("/s", "/m")
            }),
        ),
        (
            "TokenBucket",
            json!(bucket),
            json!(TokenBucket {
                size: 1,
                refill_time: 2,
                one_time_burst: None,
            }),
        ),
        ("RateLimiter", json!(limiter), json!(RateLimiter::default())),
        (
            "MemoryBackend",
            json!(MemoryBackend {
                backend_type: MemoryBackendType::Uffd,
                backend_path: "/u".into(),
            }),
            json!(MemoryBackend {
                backend_type: MemoryBackendType::File,
                backend_path: "/u".into(),
            }),
        ),
    ];
    for (name, full, minimal) in full_and_minimal {
        let (all, required) = spec.properties(name);
        assert_eq!(keys(&full), all, "{name}: fields with every option set");
        assert_eq!(
            keys(&minimal),
            required,
            "{name}: fields with no option set"
        );
        let schema = json!({ "$ref": format!("#/definitions/{name}") });
        for v in [&full, &minimal] {
            let mut errors = vec![];
            spec.validate(v, &schema, name, &mut errors);
            assert!(errors.is_empty(), "{name}: {errors:?}");
        }
    }
}

/// The answers the client decodes have the spec's shape.
#[test]
fn response_types_decode_spec_shaped_answers() {
    let spec = Spec::load();
    let info = json!({"app_name": "Firecracker", "id": "anonymous-instance",
                      "state": "Not started", "vmm_version": "1.16.1"});
    let mut errors = vec![];
    spec.validate(
        &info,
        &json!({"$ref": "#/definitions/InstanceInfo"}),
        "info",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let decoded: InstanceInfo = serde_json::from_value(info).unwrap();
    assert_eq!(decoded.state, InstanceState::NotStarted);
    for state in spec.definition("InstanceInfo")["properties"]["state"]["enum"]
        .as_array()
        .unwrap()
    {
        serde_json::from_value::<InstanceState>(state.clone()).unwrap();
    }
    let (all, _) = spec.properties("Error");
    assert_eq!(all, BTreeSet::from(["fault_message".to_owned()]));
    let (all, _) = spec.properties("FirecrackerVersion");
    assert_eq!(
        keys(&json!(FirecrackerVersion {
            firecracker_version: "1".into()
        })),
        all
    );
    // `GET /` and `GET /version` exist with these answers.
    for path in ["/", "/version", "/machine-config"] {
        assert!(spec.check_call(&ApiCall::get(path)).is_empty(), "{path}");
    }
    assert!(spec.check_call(&calls::describe_instance()).is_empty());
}

/// Every enum value we can send is one the spec lists (and vice versa).
#[test]
fn enum_spellings_match_the_spec() {
    let spec = Spec::load();
    fn spelled<T: serde::Serialize>(values: &[T]) -> BTreeSet<String> {
        values
            .iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
    fn listed(v: &Value) -> BTreeSet<String> {
        v["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }
    let defs = |d: &str, p: &str| listed(&spec.definition(d)["properties"][p]);
    assert_eq!(
        spelled(&[
            ActionType::FlushMetrics,
            ActionType::InstanceStart,
            ActionType::SendCtrlAltDel
        ]),
        defs("InstanceActionInfo", "action_type")
    );
    assert_eq!(
        spelled(&[VmState::Paused, VmState::Resumed]),
        defs("Vm", "state")
    );
    assert_eq!(
        spelled(&[SnapshotType::Full, SnapshotType::Diff]),
        defs("SnapshotCreateParams", "snapshot_type")
    );
    assert_eq!(
        spelled(&[MemoryBackendType::File, MemoryBackendType::Uffd]),
        defs("MemoryBackend", "backend_type")
    );
    assert_eq!(
        spelled(&[
            LogLevel::Error,
            LogLevel::Warning,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
            LogLevel::Off
        ]),
        defs("Logger", "level")
    );
    assert_eq!(
        spelled(&[CacheType::Unsafe, CacheType::Writeback]),
        defs("Drive", "cache_type")
    );
    assert_eq!(
        spelled(&[IoEngine::Sync, IoEngine::Async]),
        defs("Drive", "io_engine")
    );
    assert_eq!(
        spelled(&[HugePages::None, HugePages::Transparent, HugePages::TwoM]),
        defs("MachineConfiguration", "huge_pages")
    );
    assert_eq!(
        spelled(&[
            SnapshotHugePages::Snapshot,
            SnapshotHugePages::None,
            SnapshotHugePages::Transparent,
            SnapshotHugePages::TwoM
        ]),
        defs("SnapshotLoadParams", "huge_pages")
    );
    assert_eq!(
        spelled(&[
            CpuTemplate::C3,
            CpuTemplate::T2,
            CpuTemplate::T2S,
            CpuTemplate::T2CL,
            CpuTemplate::T2A,
            CpuTemplate::V1N1,
            CpuTemplate::None
        ]),
        listed(spec.definition("CpuTemplate"))
    );
}

/// Under the jailer, every path in the API bodies is inside the chroot (absolute from its
/// root) and the chroot holds the sockets.
#[test]
fn jailed_paths_are_chroot_relative() {
    let (dir, d) = driver(true, true);
    let s = sandbox_spec();
    let plan = d.plan(&s).unwrap();
    for p in [
        &plan.kernel,
        plan.initrd.as_ref().unwrap(),
        &plan.rootfs,
        &plan.config_disk,
        &plan.vsock_uds,
        &plan.log_path,
        plan.metrics_path.as_ref().unwrap(),
    ] {
        assert!(p.starts_with('/'), "{p}");
        assert!(
            !p.contains(&*dir.path().to_string_lossy()),
            "{p} is a host path"
        );
    }
    assert_eq!(plan.vsock_uds, "/run/vsock.sock");
    let paths = d.paths(&s.id);
    assert!(paths.api_socket.starts_with(paths.jail.as_ref().unwrap()));
    let (program, args) = d.command_line(&s.id, &paths).unwrap();
    assert_eq!(program, std::path::Path::new("/usr/bin/jailer"));
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let sep = args.iter().position(|a| a == "--").unwrap();
    assert_eq!(&args[sep + 1..], ["--api-sock", "/run/api.sock"]);
    assert!(args
        .windows(2)
        .any(|w| w[0] == "--cgroup-version" && w[1] == "2"));
}
