//! Prebuilds against the fake driver, in process: start-up reconciliation of an
//! interrupted build, supersession, and the collection of unused snapshots.

use std::sync::Arc;

use atelier_core::prebuild::PrebuildState;
use atelier_core::{SandboxState, WorkspaceSpec};
use atelier_store::{NewPrebuild, NewSandbox, Store};
use atelier_vmm::fake::FakeDriver;
use atelier_vmm::images::{ImageConfig, ImageStore};

use super::{Prebuilds, SNAPSHOT_DIR};
use crate::lifecycle::tests::new_sandbox;
use crate::lifecycle::Lifecycle;

struct Bench {
    dir: tempfile::TempDir,
    store: Store,
    fake: FakeDriver,
    lifecycle: Lifecycle,
    prebuilds: Prebuilds,
    workspace: atelier_core::WorkspaceId,
}

async fn bench() -> Bench {
    let (dir, store, fake, lifecycle, bus) = crate::lifecycle::tests::fake_services().await;
    let images = Arc::new(ImageStore::new(
        dir.path(),
        ImageConfig {
            busybox: None,
            guest_agent: None,
            kernel: None,
        },
    ));
    let prebuilds = Prebuilds::new(store.clone(), bus, lifecycle.clone(), images, dir.path());
    let spec: WorkspaceSpec = serde_json::from_value(serde_json::json!({"name": "shop"})).unwrap();
    let (workspace, _) = store.create_workspace(&spec, None).await.unwrap();
    Bench {
        dir,
        store,
        fake,
        lifecycle,
        prebuilds,
        workspace: workspace.id,
    }
}

impl Bench {
    /// A prebuild in `building`, as a build records it first.
    async fn building(&self) -> String {
        let new = NewPrebuild {
            workspace_id: self.workspace.clone(),
            driver: "local".into(),
            origin: "build".into(),
            config_hash: "c".into(),
            image_hash: "host".into(),
            vcpus: 2,
            memory_mib: 2048,
        };
        self.store
            .insert_prebuild(&new)
            .await
            .unwrap()
            .0
            .prebuild
            .id
    }

    /// A prebuild made ready, with a snapshot directory on disk.
    async fn ready(&self) -> String {
        let id = self.building().await;
        std::fs::create_dir_all(self.snapshot_dir(&id)).unwrap();
        std::fs::write(self.snapshot_dir(&id).join("memory.bin"), b"memory").unwrap();
        let snapshot = serde_json::json!({"dir": self.snapshot_dir(&id)});
        self.store
            .finish_prebuild(&id, &snapshot, "token")
            .await
            .unwrap();
        id
    }

    fn snapshot_dir(&self, id: &str) -> std::path::PathBuf {
        self.dir
            .path()
            .join("prebuilds")
            .join(id)
            .join(SNAPSHOT_DIR)
    }

    async fn state(&self, id: &str) -> PrebuildState {
        self.store.get_prebuild(id).await.unwrap().prebuild.state
    }

    /// A sandbox record of `name` (a clone of `prebuild`), not launched: the fake needs
    /// no snapshot.
    async fn sandbox(&self, name: &str, prebuild: Option<&str>) -> atelier_core::SandboxId {
        let new = NewSandbox {
            prebuild_id: prebuild.map(str::to_owned),
            ..new_sandbox(name)
        };
        let (rec, _) = self.store.insert_sandbox(&new, None).await.unwrap();
        rec.sandbox.id
    }
}

#[tokio::test]
async fn an_interrupted_build_fails_and_its_builder_and_leftovers_go() {
    let b = bench().await;
    let id = b.building().await;
    let (builder, _) = b
        .lifecycle
        .create(new_sandbox(&format!("prebuild-{id}")), None)
        .await
        .unwrap();
    let deadline = b.lifecycle.settle_deadline();
    b.lifecycle
        .wait_running(&builder.id, deadline)
        .await
        .unwrap();
    b.store
        .set_prebuild_sandbox(&id, &builder.id)
        .await
        .unwrap();
    // An unrelated sandbox named in no prebuild stays.
    let bystander = b.sandbox("bystander", None).await;
    let ghost = b.dir.path().join("prebuilds").join("ghost");
    std::fs::create_dir_all(&ghost).unwrap();

    b.prebuilds.reconcile().await.unwrap();

    let rec = b.store.get_prebuild(&id).await.unwrap().prebuild;
    assert_eq!(rec.state, PrebuildState::Failed);
    assert!(
        rec.error
            .as_deref()
            .unwrap_or_default()
            .contains("interrupted"),
        "{:?}",
        rec.error
    );
    let builder = b.store.get_sandbox(&builder.id).await.unwrap().sandbox;
    assert_eq!(builder.state, SandboxState::Destroyed);
    assert!(!b.fake.has_disk(&builder.id));
    assert!(!ghost.exists(), "a directory no record names is removed");
    let bystander = b.store.get_sandbox(&bystander).await.unwrap().sandbox;
    assert_ne!(bystander.state, SandboxState::Destroyed);
}

#[tokio::test]
async fn a_new_ready_prebuild_supersedes_the_last_whose_unused_snapshot_goes() {
    let b = bench().await;
    let first = b.ready().await;
    assert_eq!(b.state(&first).await, PrebuildState::Ready);
    let second = b.ready().await;
    assert_eq!(b.state(&first).await, PrebuildState::Superseded);
    assert_eq!(b.state(&second).await, PrebuildState::Ready);
    let current = b
        .store
        .current_prebuild(&b.workspace, "local")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.prebuild.id, second);

    // A clone of the superseded prebuild keeps its snapshot alive (qcow2 clones read it).
    let clone = b.sandbox("clone", Some(&first)).await;
    b.prebuilds.collect_garbage().await;
    assert!(b.snapshot_dir(&first).exists(), "a clone still uses it");

    b.store
        .transition(
            &clone,
            SandboxState::Creating,
            SandboxState::Error,
            Some("test"),
        )
        .await
        .unwrap();
    b.store
        .transition(&clone, SandboxState::Error, SandboxState::Destroying, None)
        .await
        .unwrap();
    b.store
        .transition(
            &clone,
            SandboxState::Destroying,
            SandboxState::Destroyed,
            None,
        )
        .await
        .unwrap();
    b.prebuilds.collect_garbage().await;
    assert!(
        !b.snapshot_dir(&first).exists(),
        "unused once its last clone is gone"
    );
    assert!(b
        .store
        .get_prebuild(&first)
        .await
        .unwrap()
        .snapshot
        .is_none());
    assert!(
        b.snapshot_dir(&second).exists(),
        "the current one is never collected"
    );
}
