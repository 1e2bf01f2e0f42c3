//! Tasks: dispatch a prompt to a coding agent in a fresh sandbox on a fresh branch, follow
//! its events, relay its questions to the attention feed, and keep its work.
//!
//! A scheduler starts queued tasks up to a concurrency limit. Each running task has a
//! pump that persists every normalized agent event (with the stream cursor, so a restart
//! resumes where it left) and folds it into the task's progress. At the end of a turn the
//! work is committed, diffed, and copied into a host-side mirror so the branch outlives the
//! sandbox; the task then waits in review.

mod error;
pub(crate) mod git;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_core::agent_config::{AgentConfig, AgentProtocol};
use atelier_core::sandbox::CreateSandbox;
use atelier_core::task::{PushOutcome, TodoItem};
use atelier_core::{Task, TaskSpec, TaskStatus};
use atelier_runtimes::{AgentEvent, AgentRuntime, Answer, InteractionKind, Session, SessionSpec};
use atelier_store::{Idempotency, NewTask, Store, TaskProgress, TaskRecord};
use futures::StreamExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::coding_agent::{self as agent, connect, reach};
use crate::events::EventBus;
use crate::forward::PortForward;
use crate::lifecycle::Lifecycle;
use crate::model_proxy::ModelProxy;
pub use error::{TaskError, TaskResult};

#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: EventBus,
    lifecycle: Lifecycle,
    model_proxy: ModelProxy,
    mirrors: PathBuf,
    slots: Arc<Semaphore>,
    wake: Notify,
    /// Agents of running tasks: their runtime client and session.
    active: Mutex<HashMap<String, ActiveAgent>>,
    shutdown: CancellationToken,
}

/// Where a task's agent lives (kept in the task's `session_id` column as JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct AgentHandle {
    base_url: String,
    session: String,
    directory: String,
    /// The agent's port inside an isolated sandbox, reached through a [`PortForward`]
    /// (whose host port does not survive a manager restart).
    #[serde(default)]
    sandbox_port: Option<u16>,
    /// The protocol the agent speaks (handles from before other runtimes: OpenCode's).
    #[serde(default)]
    protocol: AgentProtocol,
}

/// A running task's agent: its client, its session, and the forward that reaches it
/// inside an isolated sandbox (kept open as long as the agent is in use).
#[derive(Clone)]
struct ActiveAgent {
    runtime: Arc<dyn AgentRuntime>,
    session: Session,
    /// Held, not read: dropping it would cut the connection to the agent.
    _forward: Option<Arc<PortForward>>,
}

impl Tasks {
    pub fn new(
        store: Store,
        bus: EventBus,
        lifecycle: Lifecycle,
        model_proxy: ModelProxy,
        data_dir: &std::path::Path,
        max_running: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                bus,
                lifecycle,
                model_proxy,
                mirrors: data_dir.join("mirrors"),
                slots: Arc::new(Semaphore::new(max_running.max(1))),
                wake: Notify::new(),
                active: Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }

    /// The bare repository that keeps a workspace repo's task branches.
    pub fn mirror_path(&self, task: &Task) -> PathBuf {
        let repo: String = task
            .repo
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.inner
            .mirrors
            .join(format!("{}-{repo}.git", task.workspace_id))
    }

    async fn transition(
        &self,
        id: &str,
        from: TaskStatus,
        to: TaskStatus,
        reason: Option<&str>,
    ) -> TaskResult<()> {
        from.move_to(to)
            .map_err(|e| TaskError::InvalidState(e.to_string()))?;
        let e = self
            .inner
            .store
            .transition_task(id, from, to, reason)
            .await?;
        self.inner.bus.publish(e);
        Ok(())
    }

    /// Records a new task of a workspace (its repo, template and base branch defaulted
    /// from the workspace), queued at once when `spec.dispatch`. A retried request with
    /// the same idempotency key returns the first task; `false` says it was not created now.
    pub async fn create(
        &self,
        spec: &TaskSpec,
        idempotency: Option<&Idempotency>,
    ) -> TaskResult<(Task, bool)> {
        spec.validate()?;
        let store = &self.inner.store;
        let workspace = store.get_workspace(&spec.workspace).await.map_err(|_| {
            TaskError::invalid("workspace", format!("no workspace {:?}", spec.workspace))
        })?;
        let repo = match &spec.repo {
            Some(path) => workspace
                .repos
                .iter()
                .find(|r| &r.clone_path() == path)
                .ok_or_else(|| {
                    TaskError::invalid("repo", format!("the workspace has no repo at {path:?}"))
                })?,
            None => workspace.repos.first().ok_or_else(|| {
                TaskError::invalid("workspace", "the workspace has no repository to work in")
            })?,
        };
        let template = spec
            .template
            .clone()
            .unwrap_or_else(|| "implementation".into());
        if store
            .template(Some(&workspace.id), &template)
            .await
            .is_err()
        {
            return Err(TaskError::invalid(
                "template",
                format!("no session template {template:?}"),
            ));
        }
        let new = NewTask {
            title: spec.effective_title(),
            prompt: spec.prompt.clone(),
            workspace_id: workspace.id.clone(),
            template,
            effort: spec.effort,
            base_branch: spec
                .base_branch
                .clone()
                .unwrap_or_else(|| repo.branch.clone()),
            repo: repo.clone_path(),
            status: if spec.dispatch {
                TaskStatus::Queued
            } else {
                TaskStatus::Backlog
            },
            parent_id: None,
        };
        let (rec, event) = store.create_task(&new, idempotency).await?;
        let created = event.is_some();
        if let Some(e) = event {
            self.inner.bus.publish(e);
        }
        if spec.dispatch {
            self.wake();
        }
        Ok((rec.task, created))
    }

    /// Queues a task from the backlog (or a failed one, to retry).
    pub async fn dispatch(&self, id: &str) -> TaskResult<Task> {
        let rec = self.inner.store.get_task(id).await?;
        self.transition(id, rec.task.status, TaskStatus::Queued, None)
            .await?;
        self.inner.wake.notify_one();
        Ok(self.inner.store.get_task(id).await?.task)
    }

    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops a task wherever it is; its sandbox is destroyed, its mirror branch kept.
    pub async fn cancel(&self, id: &str) -> TaskResult<Task> {
        let rec = self.inner.store.get_task(id).await?;
        if let Some(active) = self.take_active(id) {
            let _ = active.runtime.abort(&active.session).await;
        }
        self.transition(id, rec.task.status, TaskStatus::Cancelled, None)
            .await?;
        self.release_sandbox(&rec.task).await;
        Ok(self.inner.store.get_task(id).await?.task)
    }

    /// Accepts the work in review: done; the sandbox goes, the branch stays in the mirror.
    pub async fn done(&self, id: &str) -> TaskResult<Task> {
        let rec = self.inner.store.get_task(id).await?;
        self.transition(id, rec.task.status, TaskStatus::Done, None)
            .await?;
        self.release_sandbox(&rec.task).await;
        Ok(self.inner.store.get_task(id).await?.task)
    }

    /// Relays a human's answer to the agent at once.
    pub async fn answer(
        &self,
        task_id: &str,
        interaction_id: &str,
        answer: Answer,
    ) -> TaskResult<()> {
        let pending = self.inner.store.interactions(Some(task_id), false).await?;
        if !pending.iter().any(|i| i.id == interaction_id) {
            return Err(TaskError::not_found(format!(
                "pending interaction {interaction_id:?} of task {task_id:?}"
            )));
        }
        let ActiveAgent {
            runtime, session, ..
        } = self.active(task_id).ok_or_else(|| {
            TaskError::Conflict(format!("task {task_id} has no running agent to answer"))
        })?;
        runtime
            .answer(&session, interaction_id, answer.clone())
            .await
            .map_err(TaskError::Runtime)?;
        let outcome = match &answer {
            Answer::Permission { reply, .. } => reply.as_str().to_owned(),
            Answer::Question { .. } => "answered".to_owned(),
            Answer::Dismiss => "dismissed".to_owned(),
        };
        if let Some(e) = self
            .inner
            .store
            .resolve(task_id, interaction_id, &outcome)
            .await?
        {
            self.inner.bus.publish(e);
        }
        self.leave_attention_if_clear(task_id).await;
        Ok(())
    }

    fn active(&self, id: &str) -> Option<ActiveAgent> {
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn take_active(&self, id: &str) -> Option<ActiveAgent> {
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    async fn leave_attention_if_clear(&self, id: &str) {
        let Ok(rec) = self.inner.store.get_task(id).await else {
            return;
        };
        let pending = self
            .inner
            .store
            .interactions(Some(id), false)
            .await
            .map(|p| p.len())
            .unwrap_or(1);
        if rec.task.status == TaskStatus::NeedsAttention && pending == 0 {
            let _ = self
                .transition(id, TaskStatus::NeedsAttention, TaskStatus::Running, None)
                .await;
        }
    }

    async fn release_sandbox(&self, task: &Task) {
        self.inner.model_proxy.revoke_task(&task.id);
        if let Some(sandbox) = &task.sandbox_id {
            if let Err(e) = self.inner.lifecycle.destroy(sandbox).await {
                tracing::debug!(task = %task.id, error = %e, "sandbox already gone");
            }
        }
    }

    /// Starts queued tasks while slots are free. Runs until shutdown.
    pub async fn run_scheduler(self) {
        loop {
            let queued = self
                .inner
                .store
                .list_tasks(&[TaskStatus::Queued], None)
                .await
                .unwrap_or_default();
            // Oldest first.
            for rec in queued.into_iter().rev() {
                let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
                    break;
                };
                let id = rec.task.id.clone();
                if self
                    .transition(&id, TaskStatus::Queued, TaskStatus::Running, None)
                    .await
                    .is_err()
                {
                    continue;
                }
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.run(&id).await {
                        tracing::warn!(task = %id, error = %e, "task failed");
                        this.fail(&id, &e.to_string()).await;
                    }
                    drop(permit);
                    this.inner.wake.notify_one();
                });
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn fail(&self, id: &str, reason: &str) {
        self.take_active(id);
        if let Ok(rec) = self.inner.store.get_task(id).await {
            if rec.task.status.can_move_to(TaskStatus::Failed) {
                let _ = self
                    .transition(id, rec.task.status, TaskStatus::Failed, Some(reason))
                    .await;
            }
            self.release_sandbox(&rec.task).await;
        }
    }

    /// Sandbox → branch → agent → prompt → follow the events to the end of the turn.
    async fn run(&self, id: &str) -> TaskResult<()> {
        let rec = self.inner.store.get_task(id).await?;
        let task = rec.task;
        let spec = self.inner.store.workspace_spec(&task.workspace_id).await?;
        let repo = spec
            .repos
            .iter()
            .find(|r| r.clone_path() == task.repo)
            .ok_or_else(|| {
                TaskError::invalid(
                    "repo",
                    format!("the workspace has no repo at {:?}", task.repo),
                )
            })?
            .clone();

        let mut stages = Stages::start();
        // From the workspace's prebuild when one is ready: set up already, and on QEMU
        // resumed from memory instead of booted.
        let request = CreateSandbox {
            name: Some(sandbox_name(&task)),
            workspace: Some(task.workspace_id.to_string()),
            ..CreateSandbox::default()
        };
        let (sandbox, _) = self.inner.lifecycle.create_sandbox(&request, None).await?;
        self.inner
            .store
            .set_task_sandbox(id, Some(&sandbox.id))
            .await?;
        // Whether the base branch moved since the prebuild is asked of the host's git
        // while the clone resumes.
        let head = async {
            match (&rec.parent_id, &sandbox.prebuild_id) {
                (None, Some(prebuild)) => self.unchanged_since(prebuild, &spec, &task).await,
                _ => None,
            }
        };
        let lifecycle = &self.inner.lifecycle;
        let (sandbox, head) = tokio::join!(
            lifecycle.wait_running(&sandbox.id, lifecycle.settle_deadline()),
            head
        );
        let sandbox = sandbox?;
        let agent = self.inner.lifecycle.agent(&sandbox.id).await?;
        let sandbox_token = self.inner.store.get_sandbox(&sandbox.id).await?.agent_token;
        stages.mark("sandbox");

        // A review starts from its parent's branch, kept in the host mirror and shipped
        // into the sandbox as a bundle (a VM cannot read the host's files).
        let source = match &rec.parent_id {
            Some(_) => {
                let bundle =
                    git::bundle_from_mirror(&self.mirror_path(&task), &task.base_branch).await?;
                let path = git::beside(&task.repo, ".atelier-base.bundle");
                agent.write_file(&path, bundle.into(), Some(0o600)).await?;
                path
            }
            None => repo.url.clone(),
        };
        let prepare = || {
            git::prepare(
                &agent,
                &source,
                &task.repo,
                &task.base_branch,
                &task.branch,
                head.as_deref(),
            )
        };
        // A prebuild's repo already at the base commit gets its branch while the coding
        // agent starts; any other is brought there by git first.
        let in_place = match head.as_deref() {
            Some(head) => git::InPlace::find(&agent, &task.repo, &task.branch, head).await,
            None => None,
        };
        let dir = match &in_place {
            Some(found) => found.dir.clone(),
            None => prepare().await?,
        };
        if rec.parent_id.is_some() {
            let _ = agent.delete(&source, false).await;
        }
        stages.mark("repo");
        // A dev server that cannot start leaves the task to run: its service says why.
        if let Err(e) = crate::dev_services::ensure_in_first_repo(&agent, &spec).await {
            tracing::warn!(task = %id, error = %e, "could not start the dev commands");
        }
        stages.mark("dev services");
        let local = !self.inner.lifecycle.driver().info().isolated;
        let mut config = AgentConfig::from_value(&spec.agent_config)
            .map_err(|e| TaskError::invalid(e.field, e.message))?;
        let mut secrets = agent_secrets(&config, &spec.secrets)?;
        // The real keys mask what the agent says; then the proxied ones leave its env.
        let turn = TurnContext::new(&config, &spec, &repo, &secrets)?;
        let redactor = turn.redactor.clone();
        self.inner.model_proxy.route_config(
            id,
            &sandbox_token,
            &mut config,
            &mut secrets.0,
            local,
        )?;
        let template = self
            .inner
            .store
            .template(Some(&task.workspace_id), &task.template)
            .await?;
        let settings = template.settings(task.effort);
        let vars = atelier_core::template::PromptVars {
            prompt: &task.prompt,
            title: &task.title,
            branch: &task.branch,
            base_branch: &task.base_branch,
            repo: &task.repo,
        };
        let protocol = config.protocol();
        let prompt = template.prompt_for(task.effort, &vars);
        let prompt = atelier_runtimes::launch::first_prompt(&config, prompt);
        let session_spec = atelier_runtimes::launch::session_spec(
            &config,
            PathBuf::from(&dir),
            settings.model.as_deref(),
            settings.reasoning.clone(),
            Some(task.title.clone()),
        );
        let server_token = agent::server_token(&sandbox_token);
        let branched = async {
            let Some(found) = &in_place else {
                return Ok(());
            };
            if let Err(e) = found.branch(&agent).await {
                tracing::warn!(task = %id, error = %e, "writing the branch in place failed; git makes it");
                prepare().await?;
            }
            TaskResult::Ok(())
        };
        let (branched, launch) = tokio::join!(
            branched,
            agent::start(
                &agent,
                &config,
                &secrets,
                &server_token,
                &dir,
                &session_spec,
                local,
            )
        );
        branched?;
        let launch = launch?;
        stages.mark("agent started");
        let (base_url, forward) = reach(&agent, launch.port, local).await?;
        stages.mark("forward");
        let connected = connect(
            protocol,
            config.runtime,
            &base_url,
            &server_token,
            atelier_runtimes::launch::start_within(config.runtime),
        )
        .await;
        let runtime = match connected {
            Ok(runtime) => runtime,
            Err(e) => {
                let tail = agent::log_tail(&agent).await;
                let log = if tail.trim().is_empty() {
                    String::new()
                } else {
                    format!("; its log ends with:\n{}", tail.trim_end())
                };
                return Err(TaskError::AgentDidNotStart(
                    redactor.text(&format!("the coding agent did not come up: {e}{log}")),
                ));
            }
        };
        stages.mark("connected");
        let session = runtime
            .start_session(&session_spec)
            .await
            .map_err(TaskError::Runtime)?;
        stages.mark("session");
        let handle = AgentHandle {
            base_url,
            session: session.id.clone(),
            directory: dir.clone(),
            sandbox_port: forward.as_ref().map(|f| f.sandbox_port()),
            protocol,
        };
        self.inner
            .store
            .set_task_session(id, &serde_json::to_string(&handle).unwrap_or_default())
            .await?;
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.to_owned(),
                ActiveAgent {
                    runtime: runtime.clone(),
                    session: session.clone(),
                    _forward: forward.clone(),
                },
            );

        let events = runtime
            .events(&session, None)
            .await
            .map_err(TaskError::Runtime)?;
        runtime
            .prompt(&session, &prompt)
            .await
            .map_err(TaskError::Runtime)?;
        stages.mark("prompt");
        tracing::info!(task = %id, sandbox = %sandbox.id, "dispatched: {stages}");
        self.pump(id, &agent, &dir, events, &turn).await
    }

    /// The commit the prebuild cloned the task's repo at, when its base branch still
    /// points there (asked from the host, where git runs natively): the clone's repo is
    /// then current as it is. `None` on any doubt, and the clone fetches.
    async fn unchanged_since(
        &self,
        prebuild: &str,
        spec: &atelier_core::WorkspaceSpec,
        task: &Task,
    ) -> Option<String> {
        let rec = self.inner.store.get_prebuild(prebuild).await.ok()?;
        let cloned = rec
            .prebuild
            .commits
            .into_iter()
            .find(|c| c.path == task.repo && c.branch == task.base_branch)?;
        let url = crate::prebuild::git::seen_from_host(&cloned.url, &spec.network.host_services);
        let asked = crate::prebuild::git::remote_head(&url, &task.base_branch);
        match tokio::time::timeout(Duration::from_secs(5), asked).await {
            Ok(Ok(Some(now))) if now == cloned.commit => Some(now),
            _ => None,
        }
    }

    /// After a manager restart: re-attach to the agents of tasks that were running and
    /// resume their event streams where the stored cursor left them.
    pub async fn recover(&self) {
        let tasks = self
            .inner
            .store
            .list_tasks(&[TaskStatus::Running, TaskStatus::NeedsAttention], None)
            .await
            .unwrap_or_default();
        for rec in tasks {
            let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
                break;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let id = rec.task.id.clone();
                if let Err(e) = this.resume(rec).await {
                    tracing::warn!(task = %id, error = %e, "could not resume the task after a restart");
                    this.fail(&id, &format!("lost after a manager restart: {e}"))
                        .await;
                }
                drop(permit);
                this.inner.wake.notify_one();
            });
        }
    }

    async fn resume(&self, rec: TaskRecord) -> TaskResult<()> {
        let id = rec.task.id.clone();
        let handle: AgentHandle = rec
            .session_id
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| TaskError::failed("the task never reached its agent"))?;
        let sandbox = rec
            .task
            .sandbox_id
            .clone()
            .ok_or_else(|| TaskError::failed("the task has no sandbox"))?;
        let agent = self.inner.lifecycle.agent(&sandbox).await?;
        let spec = self
            .inner
            .store
            .workspace_spec(&rec.task.workspace_id)
            .await?;
        let mut config = AgentConfig::from_value(&spec.agent_config)
            .map_err(|e| TaskError::invalid(e.field, e.message))?;
        let kind = config.runtime;
        let repo = spec
            .repos
            .iter()
            .find(|r| r.clone_path() == rec.task.repo)
            .cloned()
            .ok_or_else(|| TaskError::failed("the task's repo left its workspace"))?;
        let mut secrets = agent_secrets(&config, &spec.secrets)?;
        let turn = TurnContext::new(&config, &spec, &repo, &secrets)?;
        let (base_url, forward) = match handle.sandbox_port {
            Some(port) => reach(&agent, port, false).await?,
            None => (handle.base_url.clone(), None),
        };
        let sandbox_token = self.inner.store.get_sandbox(&sandbox).await?.agent_token;
        // The agent keeps the placeholders it was started with: the proxy learns them again.
        self.inner.model_proxy.route_config(
            &id,
            &sandbox_token,
            &mut config,
            &mut secrets.0,
            handle.sandbox_port.is_none(),
        )?;
        let server_token = agent::server_token(&sandbox_token);
        let runtime = connect(
            handle.protocol,
            kind,
            &base_url,
            &server_token,
            Duration::from_secs(30),
        )
        .await
        .map_err(TaskError::Runtime)?;
        let spec = SessionSpec {
            directory: PathBuf::from(&handle.directory),
            model: None,
            agent: None,
            variant: None,
            system: None,
            title: Some(rec.task.title.clone()),
        };
        let session = runtime
            .attach_session(&handle.session, &spec)
            .await
            .map_err(TaskError::Runtime)?;
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                ActiveAgent {
                    runtime: runtime.clone(),
                    session: session.clone(),
                    _forward: forward.clone(),
                },
            );
        let cursor = rec.cursor.as_deref().and_then(|c| c.parse().ok());
        let events = runtime
            .events(&session, cursor)
            .await
            .map_err(TaskError::Runtime)?;
        tracing::info!(task = %id, "resumed the task's agent stream");
        self.pump(&id, &agent, &handle.directory, events, &turn)
            .await
    }

    /// Persists and folds every agent event until the turn ends.
    async fn pump(
        &self,
        id: &str,
        agent: &atelier_agent_client::AgentClient,
        dir: &str,
        mut events: atelier_runtimes::EventStream,
        turn: &TurnContext,
    ) -> TaskResult<()> {
        let mut progress = self
            .inner
            .store
            .get_task(id)
            .await
            .map(|r| progress_of(&r))
            .unwrap_or_default();
        let mut last_text: HashMap<String, String> = HashMap::new();
        let mut last_message = String::new();
        while let Some(item) = events.next().await {
            let (cursor, event) = item.map_err(TaskError::Runtime)?;
            let event = turn.redactor.event(event);
            match &event {
                AgentEvent::Todos { items } => {
                    progress.todos = items
                        .iter()
                        .map(|t| TodoItem {
                            content: t.content.clone(),
                            status: serde_json::to_value(t.status)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                        })
                        .collect();
                }
                AgentEvent::FilesTouched { paths } => {
                    for p in paths {
                        if !progress.files_touched.contains(p) {
                            progress.files_touched.push(p.clone());
                        }
                    }
                }
                AgentEvent::Usage(u) => {
                    progress.usage.input_tokens += u.input_tokens;
                    progress.usage.output_tokens += u.output_tokens;
                    progress.usage.reasoning_tokens += u.reasoning_tokens;
                    progress.usage.cost_usd += u.cost_usd.unwrap_or(0.0);
                }
                AgentEvent::Text {
                    message_id,
                    part_id,
                    delta,
                    text,
                } => {
                    let key = format!("{message_id}/{part_id}");
                    let entry = last_text.entry(key).or_default();
                    match (text, delta) {
                        (Some(t), _) => *entry = t.clone(),
                        (None, Some(d)) => entry.push_str(d),
                        _ => {}
                    }
                    last_message = entry.clone();
                }
                _ => {}
            }
            let value = serde_json::to_value(&event).unwrap_or_default();
            let e = self
                .inner
                .store
                .record_task_event(id, &value, Some(&cursor.to_string()), &progress)
                .await?;
            self.inner.bus.publish(e);
            match event {
                AgentEvent::InteractionAsked(ask) => {
                    let kind = match ask.kind {
                        InteractionKind::Permission { .. } => "permission",
                        InteractionKind::Question { .. } => "question",
                    };
                    let detail = serde_json::to_value(&ask).unwrap_or_default();
                    if let Some(e) = self
                        .inner
                        .store
                        .ask(id, &ask.id, kind, &ask.title, &detail)
                        .await?
                    {
                        self.inner.bus.publish(e);
                    }
                    let status = self.inner.store.get_task(id).await?.task.status;
                    if status == TaskStatus::Running {
                        self.transition(id, TaskStatus::Running, TaskStatus::NeedsAttention, None)
                            .await?;
                    }
                }
                AgentEvent::InteractionResolved { id: ask, outcome } => {
                    let outcome = serde_json::to_value(&outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "answered".into());
                    if let Some(e) = self.inner.store.resolve(id, &ask, &outcome).await? {
                        self.inner.bus.publish(e);
                    }
                    self.leave_attention_if_clear(id).await;
                }
                AgentEvent::TurnEnded { reason, error } => {
                    use atelier_runtimes::TurnEndReason::*;
                    return match reason {
                        Completed => self.finish(id, agent, dir, &last_message, turn).await,
                        Cancelled => Ok(()),
                        Error => Err(TaskError::failed(format!(
                            "the agent failed: {}",
                            error.unwrap_or_default()
                        ))),
                    };
                }
                _ => {}
            }
        }
        Err(TaskError::failed(
            "the agent's event stream ended before the turn did",
        ))
    }

    /// End of a turn: commit, diff, preserve the branch, wait in review.
    async fn finish(
        &self,
        id: &str,
        agent: &atelier_agent_client::AgentClient,
        dir: &str,
        summary: &str,
        turn: &TurnContext,
    ) -> TaskResult<()> {
        let task = self.inner.store.get_task(id).await?.task;
        git::commit_all(agent, dir, &format!("{}\n\n{}", task.title, task.prompt)).await?;
        let (changes, diff) = git::changes(agent, dir, &task.base_branch).await?;
        let mirror = self.mirror_path(&task);
        git::preserve(agent, dir, &task.branch, &mirror).await?;
        let mut progress = progress_of(&self.inner.store.get_task(id).await?);
        progress.changes = changes;
        if let Some(push) = &turn.push {
            // A failed push is the user's to fix (credentials, protection rules): it is
            // recorded and shown, and the work waits in review, safe in the mirror.
            let outcome = match git::push_from_mirror(
                &mirror,
                &push.remote,
                &task.branch,
                push.credentials.as_ref(),
                PUSH_TIMEOUT,
            )
            .await
            {
                Ok(commit) => PushOutcome {
                    remote: git::display_url(&push.remote),
                    branch: task.branch.clone(),
                    commit: Some(commit),
                    ok: true,
                    error: None,
                    at: chrono::Utc::now(),
                },
                Err(error) => PushOutcome {
                    remote: git::display_url(&push.remote),
                    branch: task.branch.clone(),
                    commit: None,
                    ok: false,
                    error: Some(turn.redactor.text(&error)),
                    at: chrono::Utc::now(),
                },
            };
            if let Some(error) = &outcome.error {
                tracing::warn!(task = %id, remote = %outcome.remote, %error, "pushing the task branch failed");
            }
            let event = if outcome.ok {
                serde_json::json!({"type": "branch_pushed", "remote": outcome.remote,
                    "branch": outcome.branch, "commit": outcome.commit})
            } else {
                serde_json::json!({"type": "push_failed", "remote": outcome.remote,
                    "branch": outcome.branch, "error": outcome.error})
            };
            progress.push = Some(outcome);
            let e = self
                .inner
                .store
                .record_task_event(id, &event, None, &progress)
                .await?;
            self.inner.bus.publish(e);
        }
        self.inner.store.set_task_progress(id, &progress).await?;
        self.inner
            .store
            .set_task_result(id, (!summary.is_empty()).then_some(summary), &diff)
            .await?;
        let status = self.inner.store.get_task(id).await?.task.status;
        self.take_active(id);
        self.transition(id, status, TaskStatus::Review, None).await
    }
}

fn progress_of(rec: &TaskRecord) -> TaskProgress {
    TaskProgress {
        todos: rec.task.todos.clone(),
        files_touched: rec.task.files_touched.clone(),
        usage: rec.task.usage,
        changes: rec.task.changes.clone(),
        push: rec.task.push.clone(),
    }
}

/// How long one push to origin may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Where a task's branch goes at the end of a turn besides the mirror.
#[derive(Debug, Clone)]
struct PushPlan {
    remote: String,
    credentials: Option<git::PushCredentials>,
}

/// What following a task's turn needs from its workspace.
#[derive(Clone)]
struct TurnContext {
    redactor: Redactor,
    push: Option<PushPlan>,
}

impl TurnContext {
    fn new(
        config: &AgentConfig,
        spec: &atelier_core::WorkspaceSpec,
        repo: &atelier_core::workspace::RepoSpec,
        secrets: &agent::AgentSecrets,
    ) -> TaskResult<TurnContext> {
        let push = match &config.push {
            Some(p) if p.applies_to(&repo.clone_path()) => {
                let credentials = match &p.token_secret {
                    Some(name) => {
                        let secret = spec
                            .secrets
                            .env
                            .iter()
                            .find(|s| &s.name == name)
                            .ok_or_else(|| {
                                TaskError::invalid(
                                    "agent_config.push.token_secret",
                                    format!("the workspace has no env secret {name:?}"),
                                )
                            })?;
                        Some(git::PushCredentials {
                            username: p.username().to_owned(),
                            password: secret.value.clone(),
                        })
                    }
                    None => None,
                };
                Some(PushPlan {
                    remote: repo.url.clone(),
                    credentials,
                })
            }
            _ => None,
        };
        let token = push
            .as_ref()
            .and_then(|p| p.credentials.as_ref())
            .map(|c| c.password.clone());
        let redactor = Redactor::new(secrets.0.values().chain(token.as_ref()));
        Ok(TurnContext { redactor, push })
    }
}

fn sandbox_name(task: &Task) -> String {
    let slug = task.branch.trim_start_matches("atelier/");
    let name: String = slug.chars().take(40).collect();
    name.trim_matches('-').to_owned()
}

/// The values of the workspace secrets the config exposes, by the env var they become.
fn agent_secrets(
    config: &AgentConfig,
    secrets: &atelier_core::workspace::SecretsSpec,
) -> TaskResult<agent::AgentSecrets> {
    let mut out = agent::AgentSecrets::default();
    for (name, var) in &config.secrets {
        let secret = secrets
            .env
            .iter()
            .find(|s| &s.name == name)
            .ok_or_else(|| {
                TaskError::invalid(
                    format!("agent_config.secrets.{name}"),
                    format!("the workspace has no env secret {name:?}"),
                )
            })?;
        out.0.insert(var.clone(), secret.value.clone());
    }
    Ok(out)
}

/// Masks secret values in text and events the manager keeps or shows: the agent has the
/// secrets in its environment, and a tool's output may echo them.
#[derive(Clone, Default)]
struct Redactor(Arc<Vec<String>>);

const MASK: &str = "••••";

impl Redactor {
    /// Values shorter than 6 characters are not masked: they would blot out ordinary text.
    fn new<'a>(values: impl IntoIterator<Item = &'a String>) -> Redactor {
        let mut v: Vec<String> = values
            .into_iter()
            .filter(|s| s.chars().count() >= 6)
            .cloned()
            .collect();
        // Longest first, so that a secret containing another is masked whole.
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v.dedup();
        Redactor(Arc::new(v))
    }

    fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in self.0.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    /// The event with every secret value in its strings masked.
    fn event(&self, event: AgentEvent) -> AgentEvent {
        if self.0.is_empty() {
            return event;
        }
        let Ok(mut value) = serde_json::to_value(&event) else {
            return event;
        };
        self.json(&mut value);
        serde_json::from_value(value).unwrap_or(event)
    }

    fn json(&self, v: &mut serde_json::Value) {
        use serde_json::Value;
        if self.0.is_empty() {
            return;
        }
        match v {
            Value::String(s) if self.0.iter().any(|x| s.contains(x.as_str())) => {
                *s = self.text(s);
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.json(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.json(x)),
            _ => {}
        }
    }
}

/// How long each step of a dispatch took, for the log: where a slow start spends its time.
struct Stages {
    last: std::time::Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Stages {
    fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            done: vec![],
        }
    }

    fn mark(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((stage, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: Duration = self.done.iter().map(|(_, d)| *d).sum();
        write!(f, "{} ms", total.as_millis())?;
        for (stage, took) in &self.done {
            write!(f, ", {stage} {} ms", took.as_millis())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_secrets_in_text_and_in_every_json_string() {
        let secrets = [
            "sk-abcdef123".to_owned(),
            "sk-abcdef123456".to_owned(),
            "ab".to_owned(),
        ];
        let r = Redactor::new(secrets.iter());
        assert_eq!(
            r.text("key=sk-abcdef123456 other=sk-abcdef123 ab"),
            "key=•••• other=•••• ab"
        );
        let mut v = serde_json::json!({"type": "tool_call", "output": "OPENAI=sk-abcdef123\n",
            "nested": [{"x": "sk-abcdef123"}], "n": 5});
        r.json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"type": "tool_call", "output": "OPENAI=••••\n",
                "nested": [{"x": "••••"}], "n": 5})
        );
        let event = r.event(AgentEvent::Text {
            message_id: "m".into(),
            part_id: "p".into(),
            delta: None,
            text: Some("the key is sk-abcdef123456".into()),
        });
        assert!(
            matches!(&event, AgentEvent::Text { text: Some(t), .. } if t == "the key is ••••"),
            "{event:?}"
        );
    }
}
