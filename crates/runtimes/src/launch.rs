//! Launch profiles: what each coding agent needs to start in a sandbox (its program and
//! arguments, the files and environment it reads, where its server's password goes), how
//! a turn's session and first prompt carry the workspace's settings to it, and the
//! client that speaks its protocol once it answers. The manager asks the profile and
//! special-cases no agent: it writes the files, ships the binaries a plan names, wraps a
//! stdio agent in `atelier-stdio-host`, and runs the result as a service.
//!
//! Each adapter keeps its own profile beside it (`opencode::profile`,
//! `claude::profile`, `acp::profile`, `codex::profile`); the fake agent's is here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atelier_core::agent_config::{AgentConfig, AgentProtocol, RuntimeKind};

use crate::{
    acp, claude, codex, opencode, stdio_host, AgentRuntime, ModelRef, OpenCodeConfig,
    OpenCodeRuntime, Result, RuntimeError, RuntimeOptions, SessionSpec,
};

/// What `opencode serve` (and the fake agent speaking its protocol) take as their
/// server's Basic-auth password.
pub const OPENCODE_PASSWORD_ENV: &str = "OPENCODE_SERVER_PASSWORD";

/// A path next to the repository `repo` (outside its work tree, so never committed), for
/// the files of a launch.
pub fn beside(repo: &str, name: &str) -> String {
    let parent = repo
        .trim_end_matches('/')
        .rsplit_once('/')
        .map(|(p, _)| p)
        .unwrap_or(".");
    format!("{}/{name}", if parent.is_empty() { "" } else { parent })
}

/// The program a plan runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A program the sandbox has (a name on its PATH, or a path in it).
    Path(String),
    /// A binary shipped with the manager (`fake-agent`), which the manager places.
    Shipped(&'static str),
}

/// A file the agent reads, written before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchFile {
    /// Absolute, in the sandbox.
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// How to start one coding agent. Secrets are not in it: the manager gives them (and
/// the server's password, as [`LaunchPlan::password_env`]) through a 0600 env file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub program: Program,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub files: Vec<LaunchFile>,
    /// How the manager talks to it: a stdio protocol runs under `atelier-stdio-host`,
    /// which serves on the port; OpenCode's serves HTTP on it itself.
    pub protocol: AgentProtocol,
}

impl LaunchPlan {
    /// The variable that carries the server's password: the stdio host's token (which
    /// it keeps from the agent), or OpenCode's server password.
    pub fn password_env(&self) -> &'static str {
        if self.protocol.is_stdio() {
            stdio_host::TOKEN_ENV
        } else {
            OPENCODE_PASSWORD_ENV
        }
    }
}

/// Where and how a launch happens.
#[derive(Debug, Clone, Copy)]
pub struct LaunchContext<'a> {
    /// The repository the agent works in (absolute, in the sandbox).
    pub repo_dir: &'a str,
    /// The port its server (or its stdio host) listens on, on the sandbox's loopback.
    pub port: u16,
    /// What the session will run with: Claude Code takes its model, effort, mode and
    /// system prompt as launch flags.
    pub session: &'a SessionSpec,
}

impl LaunchContext<'_> {
    /// A file of the launch, next to the repository.
    pub fn file(&self, name: &str, content: impl Into<Vec<u8>>) -> LaunchFile {
        LaunchFile {
            path: beside(self.repo_dir, name),
            content: content.into(),
            mode: 0o600,
        }
    }
}

/// The launch of the agent `config` describes.
pub fn plan(config: &AgentConfig, ctx: &LaunchContext<'_>) -> Result<LaunchPlan> {
    let mut plan = match config.runtime {
        RuntimeKind::Fake => fake_plan(config, ctx)?,
        RuntimeKind::Opencode => opencode::profile::plan(config, ctx)?,
        RuntimeKind::Claude => claude::profile::plan(config, ctx)?,
        RuntimeKind::Acp => acp::profile::plan(config, ctx)?,
        RuntimeKind::Codex => codex::profile::plan(config, ctx)?,
    };
    // The workspace's own variables come first; a profile only fills in defaults.
    for (k, v) in &config.env {
        plan.env.insert(k.clone(), v.clone());
    }
    Ok(plan)
}

/// The scripted fake agent, speaking the protocol `config` names.
fn fake_plan(config: &AgentConfig, ctx: &LaunchContext<'_>) -> Result<LaunchPlan> {
    let scenario = config.scenario.as_deref().ok_or_else(|| {
        RuntimeError::config(
            "agent_config.scenario",
            "the fake runtime needs a scenario (YAML)",
        )
    })?;
    let file = ctx.file(".atelier-scenario.yaml", scenario);
    let protocol = config.protocol();
    let mut args = Vec::new();
    if protocol.is_stdio() {
        args.extend(["--protocol".into(), protocol.as_str().into()]);
    } else {
        args.extend([
            "--port".into(),
            ctx.port.to_string(),
            "--hostname".into(),
            "127.0.0.1".into(),
        ]);
    }
    args.extend([
        "--scenario".into(),
        file.path.clone(),
        "--directory".into(),
        ctx.repo_dir.into(),
    ]);
    Ok(LaunchPlan {
        program: match &config.binary {
            Some(b) => Program::Path(b.clone()),
            None => Program::Shipped("fake-agent"),
        },
        args,
        env: BTreeMap::new(),
        files: vec![file],
        protocol,
    })
}

/// The session of a turn in `directory`. `model` (`provider/model`) and `variant` are
/// the template's choice for the task's effort.
pub fn session_spec(
    config: &AgentConfig,
    directory: PathBuf,
    model: Option<&str>,
    variant: Option<String>,
    title: Option<String>,
) -> SessionSpec {
    let protocol = config.protocol();
    SessionSpec {
        directory,
        // OpenCode has the workspace's default model in its config file; the others
        // get it with the session.
        model: model
            .or(config.model.as_deref().filter(|_| protocol.is_stdio()))
            .and_then(|m| m.split_once('/'))
            .map(|(provider, model)| ModelRef {
                provider: provider.to_owned(),
                model: model.to_owned(),
            }),
        agent: None,
        variant,
        // OpenCode reads the instructions from its config file; Claude Code takes them
        // as an appended system prompt, Codex as the thread's developer instructions.
        system: config
            .instructions
            .clone()
            .filter(|_| matches!(protocol, AgentProtocol::Claude | AgentProtocol::Codex)),
        title,
    }
}

/// The first prompt of a turn: ACP has no system prompt, so the workspace's
/// instructions lead the prompt instead.
pub fn first_prompt(config: &AgentConfig, prompt: String) -> String {
    match (&config.instructions, config.protocol()) {
        (Some(instructions), AgentProtocol::Acp) => format!("{instructions}\n\n{prompt}"),
        _ => prompt,
    }
}

/// A client for the agent `config`'s kind at `base_url`, once it answers (within
/// `within`), authenticated with its server's password.
pub async fn connect(
    protocol: AgentProtocol,
    kind: RuntimeKind,
    base_url: &str,
    server_token: &str,
    within: Duration,
) -> Result<Arc<dyn AgentRuntime>> {
    if protocol == AgentProtocol::Opencode {
        let mut cfg = opencode_client_config(base_url, kind);
        cfg.password = Some(server_token.to_owned());
        let runtime = OpenCodeRuntime::new(cfg)?;
        runtime.wait_healthy(within).await?;
        return Ok(Arc::new(runtime));
    }
    let runtime: Arc<dyn AgentRuntime> = Arc::from(crate::runtime_for(
        protocol.as_str(),
        base_url,
        &RuntimeOptions {
            secret: Some(server_token.to_owned()),
            ..RuntimeOptions::default()
        },
    )?);
    runtime.wait_ready(within).await?;
    Ok(runtime)
}

/// How long a freshly started agent may take to answer: the real OpenCode is a large
/// program whose first start in an emulated guest on a busy host can pass a minute.
pub fn start_within(kind: RuntimeKind) -> Duration {
    match kind {
        RuntimeKind::Opencode => Duration::from_secs(120),
        _ => Duration::from_secs(60),
    }
}

/// The client settings for an OpenCode-speaking agent: the real OpenCode's first request
/// for a directory runs its instance bootstrap, which can take half a minute; the fake
/// agent answers at once.
pub fn opencode_client_config(base_url: &str, kind: RuntimeKind) -> OpenCodeConfig {
    let mut cfg = OpenCodeConfig::new(base_url);
    if kind == RuntimeKind::Opencode {
        cfg.request_timeout = Duration::from_secs(120);
        cfg.first_event_timeout = Duration::from_secs(60);
    }
    cfg
}
