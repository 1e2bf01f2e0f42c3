//! Prebuilds: a workspace's setup done once and captured, so that its sandboxes start
//! as clones of it instead of booting and setting up from scratch.
//!
//! A build: record the prebuild (`building`) → start a builder sandbox from the base
//! image → clone each repo at its branch on the host and unpack it in the sandbox (no
//! git or credentials needed in the guest) → run the init commands, their output
//! appended to `<data-dir>/prebuilds/<id>/build.log` as it comes → capture the sandbox
//! (disk, and memory where the driver can) into `<data-dir>/prebuilds/<id>/snapshot/`
//! → `ready`, which supersedes the previous ready prebuild of the workspace. The
//! builder sandbox is destroyed either way. A failure keeps the log tail on the record.
//!
//! Staleness: a prebuild records each repo's commit and hashes of the workspace settings
//! and the base image. [`Prebuilds::check`] compares them with `git ls-remote` and the
//! current workspace; a stale prebuild keeps serving, and with `auto_rebuild` a new
//! build starts at once. A periodic check runs in the background.

pub(crate) mod git;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_core::prebuild::{config_hash, Prebuild, PrebuildState, RepoCommit};
use atelier_core::{SandboxId, SandboxState, WorkspaceId, WorkspaceSpec};
use atelier_proto::{CommandLine, ExecEvent, ExecRequest};
use atelier_store::{NewPrebuild, NewSandbox, Store};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::events::EventBus;
use crate::lifecycle::{Lifecycle, LifecycleError};

/// What making or checking a prebuild can fail with; mapped to HTTP once, in
/// [`crate::error`]. A failed build records its error's text on the prebuild.
#[derive(Debug, thiserror::Error)]
pub enum PrebuildError {
    #[error(transparent)]
    Store(#[from] atelier_store::StoreError),
    #[error(transparent)]
    Sandbox(#[from] LifecycleError),
    /// The request names a sandbox a prebuild cannot be made from.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Only a running sandbox can be promoted.
    #[error("sandbox {id} is {state}; only a running sandbox can be promoted")]
    NotRunning { id: SandboxId, state: SandboxState },
    /// A workspace builds one prebuild at a time.
    #[error("{0}")]
    InProgress(String),
    /// An init command failed.
    #[error("init command {n} (`{command}`) exited with code {code}")]
    InitFailed {
        n: usize,
        command: String,
        code: i32,
    },
    /// A step of the build failed: what it was doing, and why.
    #[error("{step}: {reason}")]
    Step { step: String, reason: String },
}

impl PrebuildError {
    /// The error of a build step: `step` says what was being done.
    fn step(step: impl Into<String>) -> impl FnOnce(String) -> Self {
        let step = step.into();
        move |reason| Self::Step { step, reason }
    }
}

pub type PrebuildResult<T> = Result<T, PrebuildError>;

/// How long one init command may run.
const INIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Lines of the build log kept on a failed prebuild's record.
const TAIL_LINES: usize = 40;
const LOG_FILE: &str = "build.log";
const SNAPSHOT_DIR: &str = "snapshot";

#[derive(Clone)]
pub struct Prebuilds {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: EventBus,
    lifecycle: Lifecycle,
    images: Arc<atelier_vmm::images::ImageStore>,
    /// `<data-dir>/prebuilds`.
    dir: PathBuf,
    /// Prebuild snapshot directories being deleted or written right now.
    busy: Mutex<HashSet<String>>,
}

/// Where a prebuild comes from.
enum Source {
    /// A builder sandbox from the base image, set up from the workspace.
    Build,
    /// A sandbox the user set up by hand.
    Promote(SandboxId),
}

impl Prebuilds {
    pub fn new(
        store: Store,
        bus: EventBus,
        lifecycle: Lifecycle,
        images: Arc<atelier_vmm::images::ImageStore>,
        data_dir: &Path,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                bus,
                lifecycle,
                images,
                dir: data_dir.join("prebuilds"),
                busy: Mutex::default(),
            }),
        }
    }

    fn dir_of(&self, id: &str) -> PathBuf {
        self.inner.dir.join(id)
    }

    /// The build log of a prebuild (empty until the build writes to it).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir_of(id).join(LOG_FILE)
    }

    /// Starts a build of the workspace's prebuild in the background; 409 while one builds.
    pub async fn build(&self, workspace: &WorkspaceId) -> PrebuildResult<Prebuild> {
        self.start(workspace, Source::Build).await
    }

    /// Makes a running sandbox of the workspace its prebuild (the sandbox ends stopped).
    pub async fn promote(
        &self,
        workspace: &WorkspaceId,
        sandbox: SandboxId,
    ) -> PrebuildResult<Prebuild> {
        let rec =
            self.inner
                .store
                .get_sandbox(&sandbox)
                .await
                .map_err(|_| PrebuildError::Invalid {
                    field: "from_sandbox",
                    message: format!("no sandbox {sandbox}"),
                })?;
        if rec.sandbox.workspace_id.as_ref() != Some(workspace) {
            return Err(PrebuildError::Invalid {
                field: "from_sandbox",
                message: format!("sandbox {sandbox} does not belong to this workspace"),
            });
        }
        if rec.sandbox.state != SandboxState::Running {
            return Err(PrebuildError::NotRunning {
                id: sandbox,
                state: rec.sandbox.state,
            });
        }
        self.start(workspace, Source::Promote(sandbox)).await
    }

    async fn start(&self, workspace: &WorkspaceId, source: Source) -> PrebuildResult<Prebuild> {
        let spec = self.inner.store.workspace_spec(workspace).await?;
        let driver = self.inner.lifecycle.driver().kind().to_string();
        let (vcpus, memory_mib) = match &source {
            Source::Build => (spec.resources.vcpus, spec.resources.memory_mib),
            Source::Promote(id) => {
                let r = self.inner.store.get_sandbox(id).await?.sandbox.resources;
                (r.vcpus, r.memory_mib)
            }
        };
        let new = NewPrebuild {
            workspace_id: workspace.clone(),
            driver,
            origin: match source {
                Source::Build => "build".into(),
                Source::Promote(_) => "promote".into(),
            },
            config_hash: config_hash(&spec),
            image_hash: self.image_hash(&spec.image_name()),
            vcpus,
            memory_mib,
        };
        let (rec, event) = self
            .inner
            .store
            .insert_prebuild(&new)
            .await
            .map_err(|e| match e {
                atelier_store::StoreError::Conflict(m) => PrebuildError::InProgress(m),
                e => e.into(),
            })?;
        self.inner.bus.publish(event);
        let id = rec.prebuild.id.clone();
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = match source {
                Source::Build => this.run_build(&id, &spec).await,
                Source::Promote(sandbox) => this.run_promote(&id, &sandbox).await,
            };
            if let Err(e) = outcome {
                this.fail(&id, &e.to_string()).await;
            }
            this.collect_garbage().await;
        });
        Ok(rec.prebuild)
    }

    /// The id of the base image as built, or its name while it has not been built.
    fn image_hash(&self, image: &str) -> String {
        if !self.inner.lifecycle.driver().info().isolated {
            // The local driver boots no image.
            return "host".into();
        }
        self.inner
            .images
            .list()
            .into_iter()
            .find(|i| i.name == image)
            .map(|i| i.id)
            .unwrap_or_else(|| format!("unbuilt:{image}"))
    }

    async fn log(&self, id: &str, line: &str) {
        let path = self.log_path(id);
        if let Some(parent) = path.parent() {
            let _ = tokio::fs::create_dir_all(parent).await;
        }
        match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
        {
            Ok(mut f) => {
                let _ = f.write_all(line.as_bytes()).await;
            }
            Err(e) => tracing::warn!(prebuild = id, error = %e, "cannot write the build log"),
        }
    }

    /// Builds the workspace's image first (a no-op once built), its steps going to the
    /// prebuild's log: an extension's first build takes minutes, and this shows them.
    async fn build_image(&self, id: &str, spec: &WorkspaceSpec) -> PrebuildResult<()> {
        if !self.inner.lifecycle.driver().info().isolated {
            return Ok(());
        }
        let images = self.inner.images.clone();
        if let Some(ext) = &spec.image {
            images
                .define(ext)
                .map_err(|e| PrebuildError::step("recording the image extension")(e.to_string()))?;
        }
        let name = spec.image_name();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let image = name.clone();
        let build = tokio::task::spawn_blocking(move || {
            images.build(&image, &|step| {
                let _ = tx.send(step.to_owned());
            })
        });
        while let Some(step) = rx.recv().await {
            self.log(id, &format!("image {name}: {step}\n")).await;
        }
        build
            .await
            .map_err(|e| PrebuildError::step("building the image")(e.to_string()))?
            .map_err(|e| {
                PrebuildError::step(format!("building the image {name}"))(e.to_string())
            })?;
        Ok(())
    }

    async fn run_build(&self, id: &str, spec: &WorkspaceSpec) -> PrebuildResult<()> {
        self.log(
            id,
            &format!("==> building prebuild {id} of workspace {}\n", spec.name),
        )
        .await;
        self.build_image(id, spec).await?;
        let rec = self.inner.store.get_prebuild(id).await?;
        let new = NewSandbox {
            name: format!("prebuild-{id}"),
            // Not the workspace's: a sandbox of a workspace is given its secrets, and
            // those must never be captured into a prebuild.
            workspace_id: None,
            driver: rec.prebuild.driver.clone(),
            resources: spec.resources,
            image: spec.image_name(),
            agent_token: atelier_core::id::random_token(),
            prebuild_id: None,
            shared_folders: vec![],
        };
        let (sandbox, _) = self.inner.lifecycle.create(new, None).await?;
        self.inner
            .store
            .set_prebuild_sandbox(id, &sandbox.id)
            .await?;
        self.log(
            id,
            &format!("==> starting builder sandbox {}\n", sandbox.id),
        )
        .await;
        let captured = self.set_up_and_capture(id, spec, &sandbox.id).await;
        // The builder's work lives on in the snapshot (or failed): it goes either way,
        // before the prebuild is ready, so that nothing of it outlives the build.
        if let Err(e) = self.inner.lifecycle.destroy(&sandbox.id).await {
            tracing::warn!(prebuild = id, sandbox = %sandbox.id, error = %e, "could not destroy the builder sandbox");
        }
        let (snapshot, token) = captured?;
        self.finish(id, &snapshot, &token).await
    }

    async fn set_up_and_capture(
        &self,
        id: &str,
        spec: &WorkspaceSpec,
        sandbox: &SandboxId,
    ) -> PrebuildResult<(serde_json::Value, String)> {
        let lifecycle = &self.inner.lifecycle;
        let running = lifecycle
            .wait_running(sandbox, lifecycle.settle_deadline())
            .await
            .map_err(|e| PrebuildError::step("the builder sandbox did not come up")(e.to_string()))?
            .id;
        let agent = self.inner.lifecycle.agent(&running).await?;
        let workdir = sandbox_workdir(&agent).await?;

        // 1. The repos, cloned on the host and unpacked in the sandbox.
        let scratch = self.dir_of(id).join("src");
        let mut commits = Vec::new();
        for repo in &spec.repos {
            let path = repo.clone_path();
            self.log(
                id,
                &format!("==> cloning {} ({}) into {path}\n", repo.url, repo.branch),
            )
            .await;
            let url = git::seen_from_host(&repo.url, &spec.network.host_services);
            let commit = git::clone(&url, &repo.branch, &scratch.join(&path))
                .await
                .map_err(PrebuildError::step(format!("cloning {}", repo.url)))?;
            self.log(id, &format!("    at {commit}\n")).await;
            commits.push(RepoCommit {
                url: repo.url.clone(),
                branch: repo.branch.clone(),
                path,
                commit,
            });
        }
        if !commits.is_empty() {
            let paths: Vec<String> = commits.iter().map(|c| c.path.clone()).collect();
            let tarball = git::tar(&scratch, &paths)
                .await
                .map_err(PrebuildError::step("packing the repos"))?;
            let remote = format!("{workdir}/.atelier-prebuild-src.tar");
            agent
                .write_file(&remote, tarball.into(), Some(0o600))
                .await
                .map_err(|e| PrebuildError::step("uploading the repos")(e.to_string()))?;
            let mut unpack = ExecRequest::argv([
                "sh",
                "-c",
                "tar -xf .atelier-prebuild-src.tar && rm -f .atelier-prebuild-src.tar",
            ]);
            unpack.cwd = Some(workdir.clone());
            let r = agent
                .exec(&unpack)
                .await
                .map_err(|e| PrebuildError::step("unpacking the repos")(e.to_string()))?;
            if r.status.exit_code != Some(0) {
                return Err(PrebuildError::step("unpacking the repos failed")(
                    r.stderr.trim().to_owned(),
                ));
            }
        }
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        let image_hash = self.image_hash(&spec.image_name());
        self.inner
            .store
            .set_prebuild_inputs(id, &commits, &image_hash)
            .await?;

        // 2. The init commands, in the first repo (where a user would run them).
        let cwd = commits
            .first()
            .map(|c| format!("{workdir}/{}", c.path))
            .unwrap_or_else(|| workdir.clone());
        for (n, command) in spec.init_commands.iter().enumerate() {
            self.log(
                id,
                &format!(
                    "==> init {}/{}: {command}\n",
                    n + 1,
                    spec.init_commands.len()
                ),
            )
            .await;
            let code = self.run_logged(id, &agent, command, &cwd, spec).await?;
            if code != 0 {
                return Err(PrebuildError::InitFailed {
                    n: n + 1,
                    command: command.clone(),
                    code,
                });
            }
        }

        // 3. The dev servers, so that clones have them warm.
        let started = crate::dev_services::ensure(&agent, &spec.dev_commands, &cwd)
            .await
            .map_err(|e| PrebuildError::step("starting the dev commands")(e.to_string()))?;
        if !started.is_empty() {
            self.log(id, &format!("==> started {}\n", started.join(", ")))
                .await;
        }

        // What the init commands left untracked (installed dependencies, build output)
        // is excluded, so it never lands in a task's commit; done here, once, rather
        // than in each clone.
        for c in &commits {
            let mut exclude = ExecRequest::argv(["sh", "-c", crate::tasks::git::EXCLUDE_UNTRACKED]);
            exclude.cwd = Some(format!("{workdir}/{}", c.path));
            match agent.exec(&exclude).await {
                Ok(r) if r.status.exit_code == Some(0) => {}
                Ok(r) => {
                    return Err(PrebuildError::step(format!(
                        "excluding what init left in {}",
                        c.path
                    ))(r.stderr.trim().to_owned()))
                }
                Err(e) => {
                    return Err(PrebuildError::step("excluding what init left")(
                        e.to_string(),
                    ))
                }
            }
        }

        // 4. The coding agent, started once so that its first start is captured too;
        // in a VM its binaries are put in place either way, sparing each clone the copy.
        if let Some(first) = commits.first() {
            let repo_dir = format!("{workdir}/{}", first.path);
            let local = !self.inner.lifecycle.driver().info().isolated;
            if !local {
                let shipped =
                    match atelier_core::agent_config::AgentConfig::from_value(&spec.agent_config) {
                        Ok(config) => {
                            crate::coding_agent::ship_binaries(&agent, &config, &repo_dir)
                                .await
                                .map_err(|e| {
                                    PrebuildError::step("shipping the agent's binaries")(
                                        e.to_string(),
                                    )
                                })?
                        }
                        Err(_) => vec![],
                    };
                if !shipped.is_empty() {
                    self.log(id, &format!("==> shipped {}\n", shipped.join(", ")))
                        .await;
                }
            }
            if let Some(done) =
                crate::coding_agent::warm_agent(&agent, &spec.agent_config, &repo_dir, local)
                    .await
                    .map_err(PrebuildError::step("warming the coding agent"))?
            {
                self.log(id, &format!("==> warmed the coding agent: {done}\n"))
                    .await;
            }
        }

        // 5. The capture.
        self.log(id, "==> capturing the sandbox\n").await;
        self.capture(id, sandbox).await
    }

    /// Runs one init command, appending its output to the log; returns its exit code.
    async fn run_logged(
        &self,
        id: &str,
        agent: &atelier_agent_client::AgentClient,
        command: &str,
        cwd: &str,
        spec: &WorkspaceSpec,
    ) -> PrebuildResult<i32> {
        let mut req = ExecRequest {
            command: CommandLine::Shell(command.to_owned()),
            ..ExecRequest::argv(["true"])
        };
        req.cwd = Some(cwd.to_owned());
        req.timeout_ms = Some(INIT_TIMEOUT.as_millis() as u64);
        // Init commands may need the workspace's credentials (a private registry…).
        for s in &spec.secrets.env {
            req.env.insert(s.name.clone(), s.value.clone());
        }
        let mut stream = agent
            .exec_stream(&req)
            .await
            .map_err(|e| PrebuildError::step(format!("running `{command}`"))(e.to_string()))?;
        while let Some(event) = stream.next().await {
            let event = event
                .map_err(|e| PrebuildError::step(format!("running `{command}`"))(e.to_string()))?;
            match event {
                ExecEvent::Stdout { data } | ExecEvent::Stderr { data } => {
                    self.log(id, &data).await
                }
                ExecEvent::Exit(status) => {
                    if status.timed_out {
                        return Err(PrebuildError::step(format!("`{command}`"))(format!(
                            "timed out after {INIT_TIMEOUT:?}"
                        )));
                    }
                    return Ok(status
                        .exit_code
                        .unwrap_or_else(|| 128 + status.signal.unwrap_or(0)));
                }
            }
        }
        Err(PrebuildError::step(format!("`{command}`"))(
            "the sandbox stopped answering".into(),
        ))
    }

    async fn run_promote(&self, id: &str, sandbox: &SandboxId) -> PrebuildResult<()> {
        self.log(id, &format!("==> promoting sandbox {sandbox}\n"))
            .await;
        self.inner.store.set_prebuild_sandbox(id, sandbox).await?;
        // What the sandbox has checked out, so that a moved branch makes it stale too.
        let rec = self.inner.store.get_prebuild(id).await?;
        let spec = self
            .inner
            .store
            .workspace_spec(&rec.prebuild.workspace_id)
            .await?;
        let agent = self.inner.lifecycle.agent(sandbox).await?;
        let workdir = sandbox_workdir(&agent).await?;
        let mut commits = Vec::new();
        for repo in &spec.repos {
            let path = repo.clone_path();
            let mut head = ExecRequest::argv(["git", "rev-parse", "HEAD"]);
            head.cwd = Some(format!("{workdir}/{path}"));
            match agent.exec(&head).await {
                Ok(r) if r.status.exit_code == Some(0) => {
                    let commit = r.stdout.trim().to_owned();
                    self.log(id, &format!("    {path} at {commit}\n")).await;
                    commits.push(RepoCommit {
                        url: repo.url.clone(),
                        branch: repo.branch.clone(),
                        path,
                        commit,
                    });
                }
                _ => {
                    self.log(id, &format!("    {path}: no git checkout to record\n"))
                        .await
                }
            }
        }
        let image_hash = self.image_hash(&spec.image_name());
        self.inner
            .store
            .set_prebuild_inputs(id, &commits, &image_hash)
            .await?;
        // Secrets are given to each sandbox, never captured.
        self.inner
            .lifecycle
            .withdraw_secrets(sandbox)
            .await
            .map_err(|e| {
                PrebuildError::step("taking the secrets back before the capture")(e.to_string())
            })?;
        self.log(id, "==> workspace secrets removed before the capture\n")
            .await;
        let (snapshot, token) = self.capture(id, sandbox).await?;
        self.finish(id, &snapshot, &token).await
    }

    /// Captures the sandbox into the prebuild's directory; returns the snapshot (JSON)
    /// and the captured agent's token.
    async fn capture(
        &self,
        id: &str,
        sandbox: &SandboxId,
    ) -> PrebuildResult<(serde_json::Value, String)> {
        let dest = self.dir_of(id).join(SNAPSHOT_DIR);
        let (snapshot, token) = self
            .inner
            .lifecycle
            .capture(sandbox, &dest)
            .await
            .map_err(|e| PrebuildError::step("capturing the sandbox")(e.to_string()))?;
        let kind = if snapshot.restores_memory() {
            "disk and memory: clones resume it"
        } else {
            "disk only (this driver has no memory snapshots): clones boot it"
        };
        self.log(id, &format!("==> captured {kind}\n")).await;
        let json = serde_json::to_value(&snapshot)
            .map_err(|e| PrebuildError::step("recording the snapshot")(e.to_string()))?;
        Ok((json, token))
    }

    /// `building → ready`: new sandboxes of the workspace start from it from now on.
    async fn finish(
        &self,
        id: &str,
        snapshot: &serde_json::Value,
        token: &str,
    ) -> PrebuildResult<()> {
        let events = self
            .inner
            .store
            .finish_prebuild(id, snapshot, token)
            .await?;
        for e in events {
            self.inner.bus.publish(e);
        }
        self.log(id, "==> ready\n").await;
        Ok(())
    }

    async fn fail(&self, id: &str, error: &str) {
        tracing::warn!(prebuild = id, error, "prebuild failed");
        self.log(id, &format!("==> failed: {error}\n")).await;
        let tail = log_tail(&self.log_path(id), TAIL_LINES).await;
        let _ = tokio::fs::remove_dir_all(self.dir_of(id).join(SNAPSHOT_DIR)).await;
        let _ = tokio::fs::remove_dir_all(self.dir_of(id).join("src")).await;
        match self.inner.store.fail_prebuild(id, error, &tail).await {
            Ok(event) => self.inner.bus.publish(event),
            Err(e) => tracing::warn!(prebuild = id, error = %e, "could not record the failure"),
        }
    }

    /// Compares the workspace's current prebuild with its inputs now (branch heads,
    /// settings, image); marks it stale and, with `auto_rebuild`, starts a new build.
    /// Returns the prebuild as checked (`None` when the workspace has none).
    pub async fn check(&self, workspace: &WorkspaceId) -> PrebuildResult<Option<Prebuild>> {
        let driver = self.inner.lifecycle.driver().kind().to_string();
        let Some(current) = self
            .inner
            .store
            .current_prebuild(workspace, &driver)
            .await?
        else {
            return Ok(None);
        };
        let spec = self.inner.store.workspace_spec(workspace).await?;
        let reason = self.staleness(&current.prebuild, &spec).await;
        if let Some(event) = self
            .inner
            .store
            .set_prebuild_stale(&current.prebuild.id, reason.as_deref())
            .await?
        {
            self.inner.bus.publish(event);
        }
        if reason.is_some() && spec.prebuild.auto_rebuild {
            match self.build(workspace).await {
                Ok(p) => {
                    tracing::info!(prebuild = %p.id, workspace = %workspace, "rebuilding a stale prebuild")
                }
                Err(PrebuildError::InProgress(_)) => {} // already building
                Err(e) => {
                    tracing::warn!(workspace = %workspace, error = %e, "could not start a rebuild")
                }
            }
        }
        Ok(Some(
            self.inner
                .store
                .get_prebuild(&current.prebuild.id)
                .await?
                .prebuild,
        ))
    }

    /// Why `prebuild` no longer matches the workspace, or `None`.
    async fn staleness(&self, prebuild: &Prebuild, spec: &WorkspaceSpec) -> Option<String> {
        if config_hash(spec) != prebuild.config_hash {
            return Some("the workspace's settings changed".into());
        }
        let image = self.image_hash(&spec.image_name());
        if !image.starts_with("unbuilt:") && image != prebuild.image_hash {
            return Some(format!("the base image {} changed", spec.image_name()));
        }
        for c in &prebuild.commits {
            let url = git::seen_from_host(&c.url, &spec.network.host_services);
            match git::remote_head(&url, &c.branch).await {
                Ok(Some(head)) if head != c.commit => {
                    return Some(format!(
                        "{} {} moved from {} to {}",
                        c.url,
                        c.branch,
                        short(&c.commit),
                        short(&head)
                    ))
                }
                Ok(Some(_)) => {}
                Ok(None) => return Some(format!("{} has no branch {} any more", c.url, c.branch)),
                // An unreachable remote proves nothing: keep the prebuild.
                Err(e) => tracing::info!(url = %c.url, error = %e, "cannot check a repo's head"),
            }
        }
        None
    }

    /// Checks every workspace with a ready prebuild, every `every`, until cancelled.
    pub async fn run_checker(self, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Ok(all) = self.inner.store.list_prebuilds(None).await else {
                continue;
            };
            let mut seen = HashSet::new();
            for p in all {
                if p.prebuild.state == PrebuildState::Ready
                    && seen.insert(p.prebuild.workspace_id.clone())
                {
                    if let Err(e) = self.check(&p.prebuild.workspace_id).await {
                        tracing::warn!(workspace = %p.prebuild.workspace_id, error = %e, "prebuild check failed");
                    }
                }
            }
        }
    }

    /// After a restart: builds that were interrupted failed; leftovers are removed.
    pub async fn reconcile(&self) -> PrebuildResult<()> {
        let all = self.inner.store.list_prebuilds(None).await?;
        for p in &all {
            if p.prebuild.state == PrebuildState::Building {
                self.fail(
                    &p.prebuild.id,
                    "interrupted: the manager stopped during the build",
                )
                .await;
                if let Some(sandbox) = &p.prebuild.sandbox_id {
                    let builder = self.inner.store.get_sandbox(sandbox).await;
                    let is_builder = builder
                        .is_ok_and(|b| b.sandbox.name == format!("prebuild-{}", p.prebuild.id));
                    if is_builder {
                        let _ = self.inner.lifecycle.destroy(sandbox).await;
                    }
                }
            }
        }
        // Directories with no record (a crash between creating one and recording it).
        let known: HashSet<String> = all.iter().map(|p| p.prebuild.id.clone()).collect();
        if let Ok(mut entries) = tokio::fs::read_dir(&self.inner.dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    tracing::info!(dir = %entry.path().display(), "removing a leftover prebuild directory");
                    let _ = tokio::fs::remove_dir_all(entry.path()).await;
                }
            }
        }
        self.collect_garbage().await;
        Ok(())
    }

    /// Deletes the snapshots of superseded and failed prebuilds no sandbox uses.
    pub async fn collect_garbage(&self) {
        let Ok(all) = self.inner.store.list_prebuilds(None).await else {
            return;
        };
        for p in all {
            let done = matches!(
                p.prebuild.state,
                PrebuildState::Superseded | PrebuildState::Failed
            );
            let dir = self.dir_of(&p.prebuild.id).join(SNAPSHOT_DIR);
            if !done || p.prebuild.clones > 0 || !dir.exists() {
                continue;
            }
            {
                let mut busy = self.inner.busy.lock().unwrap_or_else(|e| e.into_inner());
                if !busy.insert(p.prebuild.id.clone()) {
                    continue;
                }
            }
            if let Err(e) = self
                .inner
                .store
                .clear_prebuild_snapshot(&p.prebuild.id)
                .await
            {
                tracing::warn!(prebuild = %p.prebuild.id, error = %e, "cannot forget a snapshot");
            } else if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an unused snapshot");
            } else {
                tracing::info!(prebuild = %p.prebuild.id, "removed an unused prebuild snapshot");
            }
            self.inner
                .busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p.prebuild.id);
        }
    }
}

/// The agent's working directory in the sandbox (where repos are cloned).
async fn sandbox_workdir(agent: &atelier_agent_client::AgentClient) -> PrebuildResult<String> {
    let r = agent
        .exec(&ExecRequest::argv(["pwd"]))
        .await
        .map_err(|e| PrebuildError::step("asking the sandbox for its directory")(e.to_string()))?;
    Ok(r.stdout.trim().trim_end_matches('/').to_owned())
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The last `lines` lines of a file (empty when it cannot be read).
pub async fn log_tail(path: &Path, lines: usize) -> String {
    let text = tokio::fs::read(path).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    let mut tail = all[all.len().saturating_sub(lines)..].join("\n");
    tail.push('\n');
    tail
}

#[cfg(test)]
mod tests;
