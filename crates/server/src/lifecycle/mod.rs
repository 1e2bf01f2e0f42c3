//! Sandbox lifecycle: every operation persists its in-flight state before the side
//! effect, performs it through the driver, then settles. One operation at a time per
//! sandbox. On start-up, [`Lifecycle::reconcile`] finishes or rolls back what a crash
//! interrupted and sweeps host resources that belong to no sandbox.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_agent_client::AgentClient;
use atelier_core::sandbox::Outcome;
use atelier_core::sandbox::{validate_name, CreateSandbox, SharedFolder};
use atelier_core::workspace::validate_image;
use atelier_core::{
    FieldError, Operation, Resources, Sandbox, SandboxId, SandboxState, ValidationErrors,
};
use atelier_store::{HostResource, Idempotency, NewSandbox, SandboxFilter, SandboxRecord, Store};
use atelier_vmm::{Driver, Runtime, SandboxSpec, SnapshotInfo, VmmError};
use tokio::sync::OwnedMutexGuard;

use crate::events::EventBus;

/// What a sandbox operation can fail with; mapped to HTTP once, in [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] atelier_store::StoreError),
    /// The operation does not apply to the sandbox's state (stop a stopped sandbox…).
    #[error(transparent)]
    Transition(#[from] atelier_core::TransitionError),
    #[error(transparent)]
    Vmm(#[from] VmmError),
    #[error(transparent)]
    Agent(#[from] atelier_agent_client::Error),
    /// The operation needs a running sandbox.
    #[error("sandbox {id} is {state}; {needs}")]
    NotRunning {
        id: SandboxId,
        state: SandboxState,
        needs: &'static str,
    },
    /// A sandbox whose state says it has a machine holds no handle to one.
    #[error("sandbox {id} is {state} but has no runtime record")]
    NoRuntime { id: SandboxId, state: SandboxState },
    /// The request, field by field.
    #[error(transparent)]
    Invalid(#[from] atelier_core::ValidationErrors),
    /// `prebuild: true` and the workspace has no ready prebuild that fits.
    #[error(
        "the workspace has no ready prebuild that fits (same driver, image, vCPUs and memory)"
    )]
    NoFittingPrebuild,
    /// A sandbox waited for came up in another state than `running`.
    #[error("sandbox {id} is {state}: {error}")]
    DidNotStart {
        id: SandboxId,
        state: SandboxState,
        error: String,
    },
    /// [`Lifecycle::wait_settled`] ran out of time.
    #[error("sandbox {id} is still {state} after {waited:?}")]
    Timeout {
        id: SandboxId,
        state: SandboxState,
        waited: Duration,
    },
}

pub type LifecycleResult<T> = Result<T, LifecycleError>;

#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// The driver new sandboxes get.
    default: Arc<dyn Driver>,
    /// Every usable driver; a sandbox stays with the driver that made it.
    drivers: Vec<Arc<dyn Driver>>,
    bus: EventBus,
    boot_timeout: Duration,
    /// The model proxy's port on the host's loopback.
    model_proxy_port: u16,
    locks: Mutex<HashMap<SandboxId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Lifecycle {
    pub fn new(
        store: Store,
        default: Arc<dyn Driver>,
        drivers: Vec<Arc<dyn Driver>>,
        bus: EventBus,
        boot_timeout: Duration,
        model_proxy_port: u16,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                default,
                drivers,
                bus,
                boot_timeout,
                model_proxy_port,
                locks: Mutex::default(),
            }),
        }
    }

    /// The driver new sandboxes get.
    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.inner.default
    }

    pub fn drivers(&self) -> &[Arc<dyn Driver>] {
        &self.inner.drivers
    }

    /// The driver named on a sandbox record (the default when that one is not loaded:
    /// its handle — pid, start time, directory — is generic enough to stop and clean up).
    pub fn driver_named(&self, kind: &str) -> Arc<dyn Driver> {
        self.inner
            .drivers
            .iter()
            .find(|d| d.kind().as_str() == kind)
            .cloned()
            .unwrap_or_else(|| self.inner.default.clone())
    }

    async fn driver_of(&self, id: &SandboxId) -> Arc<dyn Driver> {
        match self.inner.store.get_sandbox(id).await {
            Ok(rec) => self.driver_named(&rec.sandbox.driver),
            Err(_) => self.inner.default.clone(),
        }
    }

    async fn lock(&self, id: &SandboxId) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(id.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }

    async fn transition(
        &self,
        id: &SandboxId,
        from: SandboxState,
        to: SandboxState,
        reason: Option<&str>,
    ) -> LifecycleResult<()> {
        let event = self.inner.store.transition(id, from, to, reason).await?;
        self.inner.bus.publish(event);
        Ok(())
    }

    /// What the driver is told about a sandbox: its record, and its workspace's network
    /// policy (a workspace that cannot be read gives the strictest: nothing out).
    async fn spec(&self, rec: &SandboxRecord) -> SandboxSpec {
        let s = &rec.sandbox;
        let network = match &s.workspace_id {
            Some(w) => match self.inner.store.workspace_spec(w).await {
                Ok(spec) => self.with_model_proxy(spec.network, &spec.agent_config),
                Err(e) => {
                    tracing::warn!(sandbox = %s.id, error = %e, "no workspace network policy; egress none");
                    atelier_core::NetworkSpec {
                        egress: atelier_core::Egress::None,
                        ..Default::default()
                    }
                }
            },
            None => atelier_core::NetworkSpec::default(),
        };
        SandboxSpec {
            network,
            id: s.id.clone(),
            name: s.name.clone(),
            resources: s.resources,
            image: s.image.clone(),
            agent_token: rec.agent_token.clone(),
            env: BTreeMap::new(),
            restore_token: None,
            shared_folders: s.shared_folders.clone(),
        }
    }

    /// A workspace whose agent has proxied providers reaches the model proxy as one more
    /// host service (which a clone's snapshot then has too, on every driver).
    fn with_model_proxy(
        &self,
        mut network: atelier_core::NetworkSpec,
        agent_config: &serde_json::Value,
    ) -> atelier_core::NetworkSpec {
        let proxied = atelier_core::agent_config::AgentConfig::from_value(agent_config)
            .is_ok_and(|c| c.providers.values().any(|p| p.proxy));
        let port = self.inner.model_proxy_port;
        if proxied && !network.host_services.iter().any(|h| h.port == port) {
            network
                .host_services
                .push(atelier_core::network::HostService {
                    port,
                    name: Some("model proxy".into()),
                });
        }
        network
    }

    /// Records a sandbox as `req` asks, every field defaulted from its workspace (or the
    /// built-in defaults without one), as a clone of the workspace's prebuild when one
    /// fits and `req.prebuild` allows it; then brings it up in the background (see
    /// [`Self::create`]).
    pub async fn create_sandbox(
        &self,
        req: &CreateSandbox,
        idempotency: Option<&Idempotency>,
    ) -> LifecycleResult<(Sandbox, bool)> {
        let store = &self.inner.store;
        let mut errors = ValidationErrors::default();
        let workspace = match &req.workspace {
            Some(w) => match store.get_workspace(w).await {
                Ok(w) => Some(w),
                Err(_) => {
                    errors.push(FieldError::new("workspace", format!("no workspace {w:?}")));
                    return Err(errors.into());
                }
            },
            None => None,
        };
        let base = workspace.as_ref().map(|w| w.resources).unwrap_or_default();
        let resources = Resources {
            vcpus: req.vcpus.unwrap_or(base.vcpus),
            memory_mib: req.memory_mib.unwrap_or(base.memory_mib),
            disk_mib: req.disk_mib.unwrap_or(base.disk_mib),
        };
        let name = req.name.clone().unwrap_or_else(|| {
            workspace
                .as_ref()
                .map(|w| slug(&w.name))
                .unwrap_or_else(|| "sandbox".into())
        });
        let image = req
            .image
            .clone()
            .or_else(|| workspace.as_ref().map(|w| w.image_name.clone()))
            .unwrap_or_else(|| "dev".into());
        validate_name("name", &name, &mut errors);
        let mut resource_errors = ValidationErrors::default();
        resources.validate("resources", &mut resource_errors);
        for e in resource_errors.into_vec() {
            // The request names these fields flat.
            errors.push(FieldError::new(
                e.field.trim_start_matches("resources."),
                e.message,
            ));
        }
        validate_image("image", &image, &mut errors);
        if req.prebuild == Some(true) && workspace.is_none() {
            errors.push(FieldError::new(
                "prebuild",
                "needs a workspace: prebuilds belong to workspaces",
            ));
        }
        let shared_folders = self.check_shared_folders(&req.shared_folders, &mut errors);
        if req.prebuild == Some(true) && !req.shared_folders.is_empty() {
            errors.push(FieldError::new(
                "prebuild",
                "a sandbox with shared folders boots cold: a prebuild cannot carry them",
            ));
        }
        errors.finish()?;

        let driver = self.inner.default.kind().to_string();
        let prebuild = match (&workspace, req.prebuild) {
            (Some(w), None | Some(true)) if shared_folders.is_empty() => {
                store
                    .fitting_prebuild(&w.id, &driver, &image, &resources)
                    .await?
            }
            _ => None,
        };
        if req.prebuild == Some(true) && prebuild.is_none() {
            return Err(LifecycleError::NoFittingPrebuild);
        }
        let new = NewSandbox {
            name,
            workspace_id: workspace.map(|w| w.id),
            driver,
            resources,
            image,
            agent_token: atelier_core::id::random_token(),
            prebuild_id: prebuild.map(|p| p.prebuild.id),
            shared_folders,
        };
        self.create(new, idempotency).await
    }

    /// The shared folders of a request, each host directory resolved (symbolic links
    /// followed) on this host; what is wrong goes into `errors` under `shared_folders`.
    fn check_shared_folders(
        &self,
        folders: &[SharedFolder],
        errors: &mut ValidationErrors,
    ) -> Vec<SharedFolder> {
        if folders.is_empty() {
            return vec![];
        }
        let before = errors.iter().count();
        SharedFolder::validate_all("shared_folders", folders, errors);
        if let Err(why) = self.inner.default.shares_folders() {
            errors.push(FieldError::new("shared_folders", why));
        }
        if errors.iter().count() > before {
            return vec![];
        }
        let mut resolved = Vec::with_capacity(folders.len());
        for (i, f) in folders.iter().enumerate() {
            match resolve_host_dir(&f.host_path) {
                Ok(host_path) => resolved.push(SharedFolder {
                    host_path,
                    guest_path: f.guest_path.trim_end_matches('/').to_owned(),
                    read_only: f.read_only,
                }),
                Err(why) => errors.push(FieldError::new(
                    format!("shared_folders[{i}].host_path"),
                    why,
                )),
            }
        }
        resolved
    }

    /// Records a new sandbox and brings it up in the background. A retried request with
    /// the same idempotency key returns the first sandbox and starts nothing.
    /// Returns the sandbox and whether it was created now (false for a replay).
    pub async fn create(
        &self,
        new: NewSandbox,
        idempotency: Option<&Idempotency>,
    ) -> LifecycleResult<(Sandbox, bool)> {
        let (rec, event) = self.inner.store.insert_sandbox(&new, idempotency).await?;
        let created = event.is_some();
        if let Some(event) = event {
            self.inner.bus.publish(event);
            let this = self.clone();
            let id = rec.sandbox.id.clone();
            tokio::spawn(async move { this.bring_up(&id, SandboxState::Creating).await });
        }
        Ok((rec.sandbox, created))
    }

    /// Launches the machine of a sandbox in `creating` or `starting`, then settles it.
    async fn bring_up(&self, id: &SandboxId, from: SandboxState) {
        let _guard = self.lock(id).await;
        let rec = match self.inner.store.get_sandbox(id).await {
            Ok(r) if r.sandbox.state == from => r,
            _ => return, // destroyed meanwhile
        };
        match self.launch(&rec).await {
            Ok(()) => {
                if let Err(e) = self.transition(id, from, SandboxState::Running, None).await {
                    tracing::warn!(sandbox = %id, error = %e, "could not record the sandbox as running");
                }
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "sandbox failed to come up");
                let runtime = self.runtime(id).await;
                let cleanup = if from == SandboxState::Creating {
                    self.driver_of(id).await.destroy(id, runtime.as_ref()).await
                } else {
                    self.driver_of(id).await.stop(id, runtime.as_ref()).await
                };
                if let Err(c) = cleanup {
                    tracing::warn!(sandbox = %id, error = %c, "cleanup after a failed start failed");
                }
                if from == SandboxState::Creating {
                    self.forget_resources(id).await;
                }
                let _ = self
                    .transition(id, from, SandboxState::Error, Some(&e.to_string()))
                    .await;
            }
        }
    }

    async fn launch(&self, rec: &SandboxRecord) -> LifecycleResult<()> {
        let id = &rec.sandbox.id;
        for (kind, ident) in self.driver_named(&rec.sandbox.driver).planned_resources(id) {
            let r = HostResource {
                sandbox_id: id.clone(),
                kind,
                ident,
            };
            self.inner.store.record_resource(&r).await?;
        }
        let mut spec = self.spec(rec).await;
        let driver = self.driver_named(&rec.sandbox.driver);
        let runtime = match &rec.sandbox.prebuild_id {
            // A clone starts from its prebuild once; later starts boot its own disk.
            Some(prebuild) if rec.sandbox.state == SandboxState::Creating => {
                let (snapshot, token) = self.prebuild_snapshot(prebuild).await?;
                spec.restore_token = Some(token);
                driver.launch_from_snapshot(&spec, &snapshot).await?
            }
            _ => driver.launch(&spec).await?,
        };
        // Persist the handle before waiting on it: a crash now leaves a record to adopt.
        self.inner
            .store
            .set_runtime(id, Some(&runtime.to_json()))
            .await?;
        driver
            .wait_ready(&spec, &runtime, self.inner.boot_timeout)
            .await?;
        if driver.info().isolated {
            // The guest stepped its clock to the launch time; booting took a while since.
            let agent = driver.agent(&runtime, &rec.agent_token)?;
            if let Err(e) = agent.set_clock(now_ms()).await {
                tracing::warn!(sandbox = %id, error = %e, "could not sync the guest clock");
            }
        }
        if let Some(workspace) = &rec.sandbox.workspace_id {
            let agent = driver.agent(&runtime, &rec.agent_token)?;
            self.deliver_secrets(&agent, workspace).await?;
            // A dev server that does not start leaves the sandbox usable: its service
            // shows why.
            let spec = self.inner.store.workspace_spec(workspace).await?;
            match crate::dev_services::ensure_in_first_repo(&agent, &spec).await {
                Ok(started) if !started.is_empty() => {
                    tracing::info!(sandbox = %id, services = ?started, "started the dev commands")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "could not start the dev commands")
                }
            }
        }
        Ok(())
    }

    /// Takes a running sandbox's workspace secrets back (its environment emptied, its
    /// secret files deleted) before it is captured into a prebuild.
    pub async fn withdraw_secrets(&self, id: &SandboxId) -> LifecycleResult<()> {
        let rec = self.inner.store.get_sandbox(id).await?;
        let Some(workspace) = &rec.sandbox.workspace_id else {
            return Ok(());
        };
        let agent = self.agent(id).await?;
        agent.set_env(&BTreeMap::new()).await?;
        let spec = self.inner.store.workspace_spec(workspace).await?;
        for (path, _) in secret_file_paths(&agent, &spec.secrets.files).await? {
            if let Err(e) = agent.delete(&path, false).await {
                if e.status() != Some(404) {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Gives a sandbox its workspace's secrets, after every start: env secrets become
    /// the environment of the commands it runs (not of services: the coding agent gets
    /// only what its config exposes; the keys of proxied providers not at all, they stay
    /// with the model proxy), file secrets are written (`~/` is the
    /// home of the agent's user). Never part of an image or a prebuild: a restored
    /// clone gets them here, like a cold boot.
    async fn deliver_secrets(
        &self,
        agent: &AgentClient,
        workspace: &atelier_core::WorkspaceId,
    ) -> LifecycleResult<()> {
        let spec = self.inner.store.workspace_spec(workspace).await?;
        let config = atelier_core::agent_config::AgentConfig::from_value(&spec.agent_config)
            .unwrap_or_default();
        let host_only = config.host_only_secrets();
        let env: BTreeMap<String, String> = spec
            .secrets
            .env
            .iter()
            .filter(|s| !host_only.contains(s.name.as_str()))
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect();
        if !env.is_empty() {
            agent.set_env(&env).await?;
        }
        let files = secret_file_paths(agent, &spec.secrets.files).await?;
        for (path, f) in files {
            if let Some((parent, _)) = path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
                let _ = agent.mkdir(parent).await;
            }
            agent
                .write_file(&path, f.content.clone().into_bytes().into(), Some(f.mode))
                .await?;
        }
        Ok(())
    }

    /// The snapshot of a ready prebuild and the token of the agent captured in it.
    async fn prebuild_snapshot(&self, id: &str) -> Result<(SnapshotInfo, String), VmmError> {
        let gone = |why: String| VmmError::Snapshot(format!("prebuild {id}: {why}"));
        let rec = self
            .inner
            .store
            .get_prebuild(id)
            .await
            .map_err(|e| gone(e.to_string()))?;
        let (Some(snapshot), Some(token)) = (rec.snapshot, rec.agent_token) else {
            return Err(gone("it holds no snapshot (any more)".into()));
        };
        let snapshot: SnapshotInfo =
            serde_json::from_value(snapshot).map_err(|e| gone(e.to_string()))?;
        Ok((snapshot, token))
    }

    /// Captures a running sandbox into `dest` (see [`Driver::snapshot`]); the sandbox
    /// ends `stopped`. Returns the snapshot and the token of the agent it captured.
    pub async fn capture(
        &self,
        id: &SandboxId,
        dest: &std::path::Path,
    ) -> LifecycleResult<(SnapshotInfo, String)> {
        let _guard = self.lock(id).await;
        let rec = self.inner.store.get_sandbox(id).await?;
        if rec.sandbox.state != SandboxState::Running {
            return Err(LifecycleError::NotRunning {
                id: id.clone(),
                state: rec.sandbox.state,
                needs: "only a running sandbox can be captured",
            });
        }
        if !rec.sandbox.shared_folders.is_empty() {
            return Err(VmmError::Snapshot(format!(
                "sandbox {id} shares host folders, which a snapshot cannot carry"
            ))
            .into());
        }
        let runtime = rec.runtime_or_error()?;
        let next = rec.sandbox.state.begin(Operation::Stop)?;
        self.transition(id, rec.sandbox.state, next, None).await?;
        self.flush_guest(&rec).await;
        let driver = self.driver_named(&rec.sandbox.driver);
        match driver
            .snapshot(&self.spec(&rec).await, &runtime, dest)
            .await
        {
            Ok(snapshot) => {
                self.transition(id, SandboxState::Stopping, SandboxState::Stopped, None)
                    .await?;
                Ok((snapshot, rec.agent_token))
            }
            Err(e) => {
                let _ = self.finish_stop(id, Some(&runtime)).await;
                Err(e.into())
            }
        }
    }

    async fn runtime(&self, id: &SandboxId) -> Option<Runtime> {
        let rec = self.inner.store.get_sandbox(id).await.ok()?;
        rec.runtime
            .as_ref()
            .and_then(|v| Runtime::from_json(v).ok())
    }

    async fn forget_resources(&self, id: &SandboxId) {
        if let Ok(resources) = self.inner.store.host_resources(Some(id)).await {
            for r in resources {
                let _ = self.inner.store.forget_resource(&r).await;
            }
        }
    }

    /// Starts a stopped (or failed) sandbox in the background; returns it in `starting`.
    pub async fn start(&self, id: &SandboxId) -> LifecycleResult<Sandbox> {
        {
            let _guard = self.lock(id).await;
            let rec = self.inner.store.get_sandbox(id).await?;
            let next = rec.sandbox.state.begin(Operation::Start)?;
            self.transition(id, rec.sandbox.state, next, None).await?;
        }
        let this = self.clone();
        let task_id = id.clone();
        tokio::spawn(async move { this.bring_up(&task_id, SandboxState::Starting).await });
        Ok(self.inner.store.get_sandbox(id).await?.sandbox)
    }

    pub async fn stop(&self, id: &SandboxId) -> LifecycleResult<Sandbox> {
        let _guard = self.lock(id).await;
        let rec = self.inner.store.get_sandbox(id).await?;
        let next = rec.sandbox.state.begin(Operation::Stop)?;
        self.transition(id, rec.sandbox.state, next, None).await?;
        if rec.sandbox.state == SandboxState::Running {
            self.flush_guest(&rec).await;
        }
        self.finish_stop(id, rec.runtime_handle().as_ref()).await?;
        Ok(self.inner.store.get_sandbox(id).await?.sandbox)
    }

    /// Asks the guest to write its caches to disk before its machine is stopped: a VM
    /// killed from outside would lose what its kernel had not flushed yet.
    async fn flush_guest(&self, rec: &SandboxRecord) {
        let Some(runtime) = rec.runtime_handle() else {
            return;
        };
        let Ok(agent) = self
            .driver_named(&rec.sandbox.driver)
            .agent(&runtime, &rec.agent_token)
        else {
            return;
        };
        let mut sync = atelier_proto::ExecRequest::argv(["sync"]);
        sync.timeout_ms = Some(10_000);
        if let Err(e) = tokio::time::timeout(Duration::from_secs(12), agent.exec(&sync)).await {
            tracing::warn!(sandbox = %rec.sandbox.id, error = %e, "the guest did not sync before stopping");
        }
    }

    async fn finish_stop(&self, id: &SandboxId, runtime: Option<&Runtime>) -> LifecycleResult<()> {
        match self.driver_of(id).await.stop(id, runtime).await {
            Ok(()) => {
                self.transition(id, SandboxState::Stopping, SandboxState::Stopped, None)
                    .await
            }
            Err(e) => self.failed(id, SandboxState::Stopping, "stop", e).await,
        }
    }

    pub async fn destroy(&self, id: &SandboxId) -> LifecycleResult<Sandbox> {
        let _guard = self.lock(id).await;
        let rec = self.inner.store.get_sandbox(id).await?;
        let next = rec.sandbox.state.begin(Operation::Destroy)?;
        self.transition(id, rec.sandbox.state, next, None).await?;
        self.finish_destroy(id, rec.runtime_handle().as_ref())
            .await?;
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(self.inner.store.get_sandbox(id).await?.sandbox)
    }

    async fn finish_destroy(
        &self,
        id: &SandboxId,
        runtime: Option<&Runtime>,
    ) -> LifecycleResult<()> {
        match self.driver_of(id).await.destroy(id, runtime).await {
            Ok(()) => {
                self.forget_resources(id).await;
                self.inner.store.set_runtime(id, None).await?;
                self.transition(id, SandboxState::Destroying, SandboxState::Destroyed, None)
                    .await
            }
            Err(e) => {
                self.failed(id, SandboxState::Destroying, "destroy", e)
                    .await
            }
        }
    }

    /// A driver operation (`what`) failed on a sandbox in `from`: it goes to `error`,
    /// naming why, and the caller gets the driver's error.
    async fn failed(
        &self,
        id: &SandboxId,
        from: SandboxState,
        what: &str,
        e: VmmError,
    ) -> LifecycleResult<()> {
        let reason = format!("{what} failed: {e}");
        self.transition(id, from, SandboxState::Error, Some(&reason))
            .await?;
        Err(e.into())
    }

    pub async fn pause(&self, id: &SandboxId) -> LifecycleResult<Sandbox> {
        self.pause_or_resume(id, Operation::Pause).await
    }

    pub async fn resume(&self, id: &SandboxId) -> LifecycleResult<Sandbox> {
        self.pause_or_resume(id, Operation::Resume).await
    }

    async fn pause_or_resume(&self, id: &SandboxId, op: Operation) -> LifecycleResult<Sandbox> {
        let _guard = self.lock(id).await;
        let rec = self.inner.store.get_sandbox(id).await?;
        let next = rec.sandbox.state.begin(op)?;
        let runtime = rec.runtime_or_error()?;
        match op {
            Operation::Pause => self.driver_of(id).await.pause(&runtime).await?,
            _ => self.driver_of(id).await.resume(&runtime).await?,
        }
        self.transition(id, rec.sandbox.state, next, None).await?;
        Ok(self.inner.store.get_sandbox(id).await?.sandbox)
    }

    /// A client for the agent of a running sandbox; 409 in any other state.
    pub async fn agent(&self, id: &SandboxId) -> LifecycleResult<AgentClient> {
        let rec = self.inner.store.get_sandbox(id).await?;
        if !rec.sandbox.state.accepts_work() {
            return Err(LifecycleError::NotRunning {
                id: id.clone(),
                state: rec.sandbox.state,
                needs: "it must be running",
            });
        }
        let runtime = rec.runtime_or_error()?;
        Ok(self
            .driver_named(&rec.sandbox.driver)
            .agent(&runtime, &rec.agent_token)?)
    }

    /// Waits until a sandbox leaves `creating`/`starting` (woken by any event, looking
    /// again at least every second), and returns it as it settled; `Timeout` when it is
    /// still coming up at `deadline`.
    pub async fn wait_settled(
        &self,
        id: &SandboxId,
        deadline: Instant,
    ) -> LifecycleResult<Sandbox> {
        let started = Instant::now();
        let mut events = self.inner.bus.subscribe();
        loop {
            let sandbox = self.inner.store.get_sandbox(id).await?.sandbox;
            if !matches!(
                sandbox.state,
                SandboxState::Creating | SandboxState::Starting
            ) {
                return Ok(sandbox);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LifecycleError::Timeout {
                    id: id.clone(),
                    state: sandbox.state,
                    waited: started.elapsed(),
                });
            }
            // Any event (or a lag) is a reason to look again.
            let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), events.recv()).await;
        }
    }

    /// The deadline a sandbox coming up now must meet: the boot timeout, plus what
    /// recording it and delivering its secrets may take.
    pub fn settle_deadline(&self) -> Instant {
        Instant::now() + self.inner.boot_timeout + Duration::from_secs(10)
    }

    /// Waits as [`Self::wait_settled`] and insists the sandbox came up `running`: any
    /// other end is [`LifecycleError::DidNotStart`], naming the sandbox's error.
    pub async fn wait_running(
        &self,
        id: &SandboxId,
        deadline: Instant,
    ) -> LifecycleResult<Sandbox> {
        let sandbox = self.wait_settled(id, deadline).await?;
        if sandbox.state == SandboxState::Running {
            return Ok(sandbox);
        }
        Err(LifecycleError::DidNotStart {
            id: id.clone(),
            state: sandbox.state,
            error: sandbox.error.unwrap_or_default(),
        })
    }

    /// Brings the records and the host back into agreement after a (re)start.
    pub async fn reconcile(&self) -> LifecycleResult<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let records = self
            .inner
            .store
            .list_sandboxes(&SandboxFilter::default())
            .await?;
        let mut keep = HashSet::new();
        for rec in records {
            let id = rec.sandbox.id.clone();
            let runtime = rec.runtime_handle();
            let alive = runtime
                .as_ref()
                .is_some_and(|r| self.driver_named(&rec.sandbox.driver).is_alive(r));
            let state = rec.sandbox.state;
            let _guard = self.lock(&id).await;
            match state {
                SandboxState::Running | SandboxState::Paused if alive => {
                    if let Some(runtime) = &runtime {
                        let spec = self.spec(&rec).await;
                        if let Err(e) = self.driver_of(&id).await.adopt(&spec, runtime).await {
                            tracing::warn!(sandbox = %id, error = %e, "adopting a running sandbox");
                        }
                    }
                    report.adopted.push(id.clone())
                }
                SandboxState::Running | SandboxState::Paused => {
                    let _ = self.driver_of(&id).await.stop(&id, runtime.as_ref()).await;
                    let next = state.settle(Outcome::Failed)?;
                    self.transition(
                        &id,
                        state,
                        next,
                        Some("its process is gone (the host or the sandbox crashed)"),
                    )
                    .await?;
                    report.failed.push(id.clone());
                }
                SandboxState::Creating | SandboxState::Starting => {
                    // Roll back: the request that started it is gone, and a half-booted
                    // machine is not worth guessing about.
                    let cleanup = if state == SandboxState::Creating {
                        self.driver_of(&id)
                            .await
                            .destroy(&id, runtime.as_ref())
                            .await
                    } else {
                        self.driver_of(&id).await.stop(&id, runtime.as_ref()).await
                    };
                    if let Err(e) = cleanup {
                        tracing::warn!(sandbox = %id, error = %e, "cleanup of an interrupted sandbox failed");
                    }
                    let reason =
                        format!("interrupted: the manager stopped while the sandbox was {state}");
                    self.transition(&id, state, SandboxState::Error, Some(&reason))
                        .await?;
                    report.rolled_back.push(id.clone());
                }
                SandboxState::Stopping => {
                    let _ = self.finish_stop(&id, runtime.as_ref()).await;
                    report.finished.push(id.clone());
                }
                SandboxState::Destroying => {
                    let _ = self.finish_destroy(&id, runtime.as_ref()).await;
                    report.finished.push(id.clone());
                    continue;
                }
                SandboxState::Stopped | SandboxState::Error | SandboxState::Destroyed => {}
            }
            keep.insert(id);
        }
        report.swept = self.inner.default.sweep(&keep).await;
        // Host resources recorded for sandboxes that no longer exist.
        for r in self.inner.store.host_resources(None).await? {
            if !keep.contains(&r.sandbox_id) {
                let _ = self.inner.store.forget_resource(&r).await;
            }
        }
        Ok(report)
    }
}

#[derive(Debug, Default)]
pub struct ReconcileReport {
    pub adopted: Vec<SandboxId>,
    pub failed: Vec<SandboxId>,
    pub rolled_back: Vec<SandboxId>,
    pub finished: Vec<SandboxId>,
    pub swept: Vec<String>,
}

trait RuntimeHandle {
    fn runtime_handle(&self) -> Option<Runtime>;
    /// The handle a sandbox in a state with a machine must have.
    fn runtime_or_error(&self) -> LifecycleResult<Runtime>;
}

impl RuntimeHandle for SandboxRecord {
    fn runtime_handle(&self) -> Option<Runtime> {
        self.runtime
            .as_ref()
            .and_then(|v| Runtime::from_json(v).ok())
    }

    fn runtime_or_error(&self) -> LifecycleResult<Runtime> {
        self.runtime_handle()
            .ok_or_else(|| LifecycleError::NoRuntime {
                id: self.sandbox.id.clone(),
                state: self.sandbox.state,
            })
    }
}

/// Where each file secret goes in the sandbox: `~/…` is the agent user's home there.
async fn secret_file_paths<'a>(
    agent: &AgentClient,
    files: &'a [atelier_core::workspace::FileSecret],
) -> Result<Vec<(String, &'a atelier_core::workspace::FileSecret)>, atelier_agent_client::Error> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let home = agent
        .exec(&atelier_proto::ExecRequest::argv([
            "sh",
            "-c",
            "printf %s \"$HOME\"",
        ]))
        .await?
        .stdout;
    Ok(files
        .iter()
        .map(|f| {
            let path = match f.path.strip_prefix("~/") {
                Some(rest) => format!("{}/{rest}", home.trim_end_matches('/')),
                None => f.path.clone(),
            };
            (path, f)
        })
        .collect())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A host directory to share, resolved (symbolic links followed), or why it cannot be.
fn resolve_host_dir(path: &str) -> Result<String, String> {
    let resolved = std::fs::canonicalize(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{path} does not exist on the manager's host"),
        _ => format!("cannot resolve {path}: {e}"),
    })?;
    if !resolved.is_dir() {
        return Err(format!("{path} is not a directory"));
    }
    if resolved == std::path::Path::new("/") {
        return Err("the host's root directory cannot be shared".into());
    }
    match resolved.to_str() {
        Some(s) if !s.contains(',') => Ok(s.to_owned()),
        _ => Err(format!(
            "{path} resolves to a path that is not UTF-8 or holds a comma"
        )),
    }
}

/// Turns a workspace name into a DNS label.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out: String = out.trim_end_matches('-').chars().take(40).collect();
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() {
        "sandbox".into()
    } else {
        out
    }
}

#[cfg(test)]
pub(crate) mod tests;
