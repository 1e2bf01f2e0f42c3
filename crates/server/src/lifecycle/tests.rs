//! The lifecycle against the fake driver, in process: transitions, failures on the way up
//! and start-up reconciliation of every state a crash can leave a record in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_core::{Resources, SandboxId, SandboxState};
use atelier_store::{HostResource, NewSandbox, Store};
use atelier_vmm::fake::{FakeDriver, FakeOp};
use atelier_vmm::{Driver, DriverKind};

use super::{Lifecycle, LifecycleError};
use crate::events::EventBus;

struct Bench {
    _dir: tempfile::TempDir,
    store: Store,
    fake: FakeDriver,
    lifecycle: Lifecycle,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(5);

/// A store in a fresh directory and a lifecycle on the fake driver; the prebuild tests
/// stand on it too.
pub(crate) async fn fake_services() -> (tempfile::TempDir, Store, FakeDriver, Lifecycle, EventBus) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("atelier.db"),
        &dir.path().join("secrets.key"),
    )
    .await
    .unwrap();
    let fake = FakeDriver::new(DriverKind::Local);
    let driver: Arc<dyn Driver> = Arc::new(fake.clone());
    let bus = EventBus::new(store.clone());
    let lifecycle = Lifecycle::new(
        store.clone(),
        driver.clone(),
        vec![driver],
        bus.clone(),
        BOOT_TIMEOUT,
        0,
    );
    (dir, store, fake, lifecycle, bus)
}

async fn bench() -> Bench {
    let (dir, store, fake, lifecycle, _) = fake_services().await;
    Bench {
        _dir: dir,
        store,
        fake,
        lifecycle,
    }
}

/// A sandbox record of `name` on the fake driver, without a workspace.
pub(crate) fn new_sandbox(name: &str) -> NewSandbox {
    NewSandbox {
        name: name.into(),
        workspace_id: None,
        driver: "local".into(),
        resources: Resources::default(),
        image: "base".into(),
        agent_token: "t".repeat(32),
        prebuild_id: None,
        shared_folders: vec![],
    }
}

impl Bench {
    async fn state(&self, id: &SandboxId) -> SandboxState {
        self.store.get_sandbox(id).await.unwrap().sandbox.state
    }

    async fn error(&self, id: &SandboxId) -> Option<String> {
        self.store.get_sandbox(id).await.unwrap().sandbox.error
    }

    async fn resources(&self, id: &SandboxId) -> usize {
        self.store.host_resources(Some(id)).await.unwrap().len()
    }

    /// Creates a sandbox and waits for it to settle.
    async fn up(&self, name: &str) -> SandboxId {
        let (sandbox, created) = self
            .lifecycle
            .create(new_sandbox(name), None)
            .await
            .unwrap();
        assert!(created);
        let deadline = self.lifecycle.settle_deadline();
        self.lifecycle
            .wait_settled(&sandbox.id, deadline)
            .await
            .unwrap();
        sandbox.id
    }

    /// A record left in `state` by a manager that died, with a machine (`alive`) or not.
    async fn left_in(&self, state: SandboxState, alive: bool) -> SandboxId {
        let (rec, _) = self
            .store
            .insert_sandbox(&new_sandbox(&format!("left-{state}-{alive}")), None)
            .await
            .unwrap();
        let id = rec.sandbox.id;
        self.store
            .record_resource(&HostResource {
                sandbox_id: id.clone(),
                kind: "fake-disk".into(),
                ident: id.to_string(),
            })
            .await
            .unwrap();
        let spec = self
            .lifecycle
            .spec(&self.store.get_sandbox(&id).await.unwrap())
            .await;
        let runtime = self.fake.launch(&spec).await.unwrap();
        self.store
            .set_runtime(&id, Some(&runtime.to_json()))
            .await
            .unwrap();
        if !alive {
            self.fake.crash(&id);
        }
        let path: &[SandboxState] = match state {
            SandboxState::Creating => &[],
            SandboxState::Running => &[SandboxState::Running],
            SandboxState::Paused => &[SandboxState::Running, SandboxState::Paused],
            SandboxState::Stopping => &[SandboxState::Running, SandboxState::Stopping],
            SandboxState::Stopped => &[
                SandboxState::Running,
                SandboxState::Stopping,
                SandboxState::Stopped,
            ],
            SandboxState::Starting => &[
                SandboxState::Running,
                SandboxState::Stopping,
                SandboxState::Stopped,
                SandboxState::Starting,
            ],
            SandboxState::Destroying => &[SandboxState::Running, SandboxState::Destroying],
            SandboxState::Error => &[SandboxState::Error],
            SandboxState::Destroyed => unreachable!("a destroyed record is never reconciled"),
        };
        let mut from = SandboxState::Creating;
        for to in path {
            self.store
                .transition(&id, from, *to, Some("left by the test"))
                .await
                .unwrap();
            from = *to;
        }
        id
    }
}

#[tokio::test]
async fn a_sandbox_goes_up_stops_starts_pauses_and_is_destroyed() {
    let b = bench().await;
    let id = b.up("web").await;
    assert_eq!(b.state(&id).await, SandboxState::Running);
    assert!(b.fake.has_machine(&id));
    assert_eq!(b.resources(&id).await, 1, "recorded before the launch");
    assert!(b.store.get_sandbox(&id).await.unwrap().runtime.is_some());

    let paused = b.lifecycle.pause(&id).await.unwrap();
    assert_eq!(paused.state, SandboxState::Paused);
    assert!(b.fake.is_paused(&id));
    assert_eq!(
        b.lifecycle.resume(&id).await.unwrap().state,
        SandboxState::Running
    );

    assert_eq!(
        b.lifecycle.stop(&id).await.unwrap().state,
        SandboxState::Stopped
    );
    assert!(
        !b.fake.has_machine(&id) && b.fake.has_disk(&id),
        "stopped keeps its disk"
    );
    let e = b.lifecycle.stop(&id).await.unwrap_err();
    assert!(matches!(e, LifecycleError::Transition(_)), "{e}");

    // The launch runs in the background; the fake machine may be up before the answer.
    let starting = b.lifecycle.start(&id).await.unwrap().state;
    assert!(
        matches!(starting, SandboxState::Starting | SandboxState::Running),
        "{starting:?}"
    );
    let deadline = b.lifecycle.settle_deadline();
    let started = b.lifecycle.wait_running(&id, deadline).await.unwrap();
    assert_eq!(started.state, SandboxState::Running);

    assert_eq!(
        b.lifecycle.destroy(&id).await.unwrap().state,
        SandboxState::Destroyed
    );
    assert!(!b.fake.has_disk(&id));
    assert_eq!(b.resources(&id).await, 0, "its resources are forgotten");
    assert!(b.store.get_sandbox(&id).await.unwrap().runtime.is_none());
}

#[tokio::test]
async fn a_failed_bring_up_cleans_up_and_says_why() {
    let b = bench().await;
    b.fake.fail_next(FakeOp::WaitReady, "the kernel panicked");
    let id = b.up("broken").await;
    assert_eq!(b.state(&id).await, SandboxState::Error);
    assert!(
        b.error(&id)
            .await
            .unwrap_or_default()
            .contains("the kernel panicked"),
        "{:?}",
        b.error(&id).await
    );
    assert!(
        !b.fake.has_disk(&id),
        "a failed create destroys what it made"
    );
    assert_eq!(b.resources(&id).await, 0);
    let deadline = b.lifecycle.settle_deadline();
    let e = b.lifecycle.wait_running(&id, deadline).await.unwrap_err();
    assert!(
        matches!(&e, LifecycleError::DidNotStart { state: SandboxState::Error, error, .. } if error.contains("panicked")),
        "{e}"
    );
    let e = b.lifecycle.agent(&id).await.unwrap_err();
    assert!(matches!(e, LifecycleError::NotRunning { .. }), "{e}");

    // A failed start (from stopped) only stops: the disk stays for the next try.
    let id = b.up("flaky").await;
    b.lifecycle.stop(&id).await.unwrap();
    b.fake.fail_next(FakeOp::Launch, "no memory");
    b.lifecycle.start(&id).await.unwrap();
    let deadline = b.lifecycle.settle_deadline();
    b.lifecycle.wait_settled(&id, deadline).await.unwrap();
    assert_eq!(b.state(&id).await, SandboxState::Error);
    assert!(b.fake.has_disk(&id));
    assert!(b.fake.calls().contains(&format!("stop {id}")));
}

#[tokio::test]
async fn waiting_for_a_sandbox_that_never_comes_up_times_out_with_its_state() {
    let b = bench().await;
    b.fake.hold_ready();
    let (sandbox, _) = b.lifecycle.create(new_sandbox("slow"), None).await.unwrap();
    let e = b
        .lifecycle
        .wait_settled(&sandbox.id, Instant::now() + Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            LifecycleError::Timeout {
                state: SandboxState::Creating,
                ..
            }
        ),
        "{e}"
    );
    b.fake.release_ready();
    let deadline = b.lifecycle.settle_deadline();
    let up = b
        .lifecycle
        .wait_running(&sandbox.id, deadline)
        .await
        .unwrap();
    assert_eq!(up.state, SandboxState::Running);
}

#[tokio::test]
async fn a_failed_stop_or_destroy_ends_in_error_with_the_reason() {
    let b = bench().await;
    let id = b.up("stuck").await;
    b.fake.fail_next(FakeOp::Stop, "the VMM ignores SIGTERM");
    assert!(b.lifecycle.stop(&id).await.is_err());
    assert_eq!(b.state(&id).await, SandboxState::Error);
    assert!(b
        .error(&id)
        .await
        .unwrap_or_default()
        .contains("stop failed"));

    b.fake.fail_next(FakeOp::Destroy, "busy disk");
    assert!(b.lifecycle.destroy(&id).await.is_err());
    assert_eq!(b.state(&id).await, SandboxState::Error);
    assert_eq!(b.resources(&id).await, 1, "kept until a destroy succeeds");
    b.lifecycle.destroy(&id).await.unwrap();
    assert_eq!(b.resources(&id).await, 0);
}

/// Every state a crash can leave a record in, with its machine alive or gone: what
/// start-up reconciliation makes of it.
#[tokio::test]
async fn reconcile_finishes_or_rolls_back_every_interrupted_state() {
    use SandboxState::*;
    struct Case {
        left: SandboxState,
        alive: bool,
        then: SandboxState,
        bucket: &'static str,
        driver_call: Option<&'static str>,
        disk_kept: bool,
    }
    let case = |left, alive, then, bucket, driver_call, disk_kept| Case {
        left,
        alive,
        then,
        bucket,
        driver_call,
        disk_kept,
    };
    let cases = [
        case(Running, true, Running, "adopted", Some("adopt"), true),
        case(Paused, true, Paused, "adopted", Some("adopt"), true),
        case(Running, false, Error, "failed", Some("stop"), true),
        case(Paused, false, Error, "failed", Some("stop"), true),
        case(Creating, true, Error, "rolled_back", Some("destroy"), false),
        case(Starting, true, Error, "rolled_back", Some("stop"), true),
        case(Stopping, true, Stopped, "finished", Some("stop"), true),
        case(
            Destroying,
            true,
            Destroyed,
            "finished",
            Some("destroy"),
            false,
        ),
        case(Stopped, false, Stopped, "", None, true),
        case(Error, false, Error, "", None, true),
    ];
    let b = bench().await;
    let mut ids = Vec::new();
    for c in &cases {
        ids.push(b.left_in(c.left, c.alive).await);
    }
    b.fake.plant_leftover("netns atelier-ghost");
    let orphan = SandboxId::from_trusted("sghostghostgh".into());
    b.store
        .record_resource(&HostResource {
            sandbox_id: orphan.clone(),
            kind: "fake-disk".into(),
            ident: "ghost".into(),
        })
        .await
        .unwrap();

    let calls_before = b.fake.calls().len();
    let report = b.lifecycle.reconcile().await.unwrap();
    let calls = b.fake.calls()[calls_before..].to_vec();

    for (c, id) in cases.iter().zip(&ids) {
        let what = format!("{} ({}alive)", c.left, if c.alive { "" } else { "not " });
        assert_eq!(b.state(id).await, c.then, "{what}");
        let bucket = [
            ("adopted", &report.adopted),
            ("failed", &report.failed),
            ("rolled_back", &report.rolled_back),
            ("finished", &report.finished),
        ]
        .into_iter()
        .filter(|(_, ids)| ids.contains(id))
        .map(|(name, _)| name)
        .collect::<Vec<_>>();
        let expected: Vec<&str> = Some(c.bucket)
            .filter(|b| !b.is_empty())
            .into_iter()
            .collect();
        assert_eq!(bucket, expected, "{what}");
        let driver_calls: Vec<&str> = calls
            .iter()
            .filter_map(|call| call.strip_suffix(&format!(" {id}")))
            .collect();
        assert_eq!(
            driver_calls,
            c.driver_call.into_iter().collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(b.fake.has_disk(id), c.disk_kept, "{what}: disk");
        if c.then == Error && c.left != Error {
            assert!(b.error(id).await.is_some(), "{what}: an error names why");
        }
    }
    assert_eq!(
        calls.last().map(String::as_str),
        Some("sweep"),
        "sweep comes last"
    );
    assert!(
        report.swept.contains(&"netns atelier-ghost".to_owned()),
        "{:?}",
        report.swept
    );
    assert!(
        b.store
            .host_resources(Some(&orphan))
            .await
            .unwrap()
            .is_empty(),
        "resources of sandboxes that no longer exist are forgotten"
    );
    // A second pass finds nothing left to do.
    let again = b.lifecycle.reconcile().await.unwrap();
    assert!(again.failed.is_empty() && again.rolled_back.is_empty() && again.finished.is_empty());
    assert_eq!(again.adopted.len(), 2);
}

fn sharing(host: &str) -> atelier_core::sandbox::CreateSandbox {
    atelier_core::sandbox::CreateSandbox {
        shared_folders: vec![atelier_core::SharedFolder {
            host_path: host.into(),
            guest_path: "/workspace/".into(),
            read_only: false,
        }],
        ..Default::default()
    }
}

fn invalid_fields(e: LifecycleError) -> Vec<String> {
    match e {
        LifecycleError::Invalid(errors) => errors
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect(),
        other => panic!("not a validation error: {other}"),
    }
}

#[tokio::test]
async fn a_shared_folder_is_resolved_on_the_host_and_kept_with_its_sandbox() {
    let b = bench().await;
    let host = tempfile::tempdir().unwrap();
    let link = b._dir.path().join("link-to-src");
    std::os::unix::fs::symlink(host.path(), &link).unwrap();
    let (sandbox, _) = b
        .lifecycle
        .create_sandbox(&sharing(link.to_str().unwrap()), None)
        .await
        .unwrap();
    let real = std::fs::canonicalize(host.path()).unwrap();
    assert_eq!(sandbox.shared_folders.len(), 1);
    assert_eq!(sandbox.shared_folders[0].host_path, real.to_str().unwrap());
    assert_eq!(sandbox.shared_folders[0].guest_path, "/workspace");
    assert_eq!(sandbox.prebuild_id, None);
}

#[tokio::test]
async fn a_shared_folder_that_is_missing_or_malformed_is_refused_by_field() {
    let b = bench().await;
    let missing = b._dir.path().join("nope");
    let e = b
        .lifecycle
        .create_sandbox(&sharing(missing.to_str().unwrap()), None)
        .await
        .unwrap_err();
    assert_eq!(
        invalid_fields(e),
        [format!(
            "shared_folders[0].host_path: {} does not exist on the manager's host",
            missing.display()
        )]
    );
    let e = b
        .lifecycle
        .create_sandbox(&sharing("relative/dir"), None)
        .await
        .unwrap_err();
    assert_eq!(
        invalid_fields(e),
        ["shared_folders[0].host_path: must be an absolute path, got \"relative/dir\""]
    );
    let host = tempfile::tempdir().unwrap();
    let mut cold = sharing(host.path().to_str().unwrap());
    cold.prebuild = Some(true);
    let fields = invalid_fields(b.lifecycle.create_sandbox(&cold, None).await.unwrap_err());
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("prebuild: a sandbox with shared folders boots cold")),
        "{fields:?}"
    );
    assert!(b
        .store
        .list_sandboxes(&Default::default())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_driver_that_cannot_share_folders_refuses_them() {
    let (dir, store, _, _, bus) = fake_services().await;
    let fc: Arc<dyn Driver> = Arc::new(FakeDriver::new(DriverKind::Firecracker));
    let lifecycle = Lifecycle::new(store, fc.clone(), vec![fc], bus, BOOT_TIMEOUT, 0);
    let e = lifecycle
        .create_sandbox(&sharing(dir.path().to_str().unwrap()), None)
        .await
        .unwrap_err();
    assert_eq!(
        invalid_fields(e),
        ["shared_folders: the firecracker driver cannot share host folders"]
    );
}
