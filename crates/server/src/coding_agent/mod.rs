//! The coding agent of a sandbox: how it is started ([`launch`]: its config files, env
//! and service), how the manager reaches it (directly on the local driver, through a
//! [`PortForward`] into a VM), and the client that speaks its protocol once it answers.
//! Tasks run turns on it; prebuilds warm it once so that clones start it warm.

mod launch;

use std::sync::Arc;
use std::time::Duration;

use atelier_core::agent_config::AgentConfig;
use atelier_runtimes::SessionSpec;

pub use atelier_runtimes::launch::{beside, connect};
pub use launch::*;

/// What starting or reaching a coding agent can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The workspace's agent config asks for something that cannot be (a field named).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Agent(#[from] atelier_agent_client::Error),
    #[error("{0}")]
    Failed(String),
}

impl LaunchError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }
}

pub type LaunchResult<T> = Result<T, LaunchError>;

use crate::forward::PortForward;

/// Starts the workspace's coding agent once in a prebuild's builder (when its config
/// asks for `warm`), opens a session on `repo_dir` so that its first-start work is done,
/// then stops it and removes what a task's start must write afresh. No secrets are
/// given: they must never reach a prebuild. Returns what to log, `None` when the
/// config does not ask for it.
pub async fn warm_agent(
    agent: &atelier_agent_client::AgentClient,
    agent_config: &serde_json::Value,
    repo_dir: &str,
    local: bool,
) -> Result<Option<String>, String> {
    let config = AgentConfig::from_value(agent_config).map_err(|e| e.message)?;
    if !config.warm {
        return Ok(None);
    }
    let session = SessionSpec {
        directory: repo_dir.into(),
        ..SessionSpec::default()
    };
    // A one-off password: nothing of the builder's server outlives the warm-up.
    let server_token = atelier_core::id::random_token();
    let launch = launch::start(
        agent,
        &config,
        &AgentSecrets::default(),
        &server_token,
        repo_dir,
        &session,
        local,
    )
    .await
    .map_err(|e| format!("starting the agent: {e}"))?;
    let outcome = async {
        let (url, _forward) = reach(agent, launch.port, local)
            .await
            .map_err(|e| e.to_string())?;
        let runtime = connect(
            config.protocol(),
            config.runtime,
            &url,
            &server_token,
            Duration::from_secs(180),
        )
        .await
        .map_err(|e| format!("the agent did not answer: {e}"))?;
        let started = std::time::Instant::now();
        runtime
            .start_session(&session)
            .await
            .map_err(|e| format!("opening a session: {e}"))?;
        Ok::<_, String>(format!(
            "the {} agent answered and opened a session in {:?}",
            runtime.kind(),
            started.elapsed()
        ))
    }
    .await;
    // Stopped either way; a task starts its own.
    let _ = agent.delete_service(SERVICE).await;
    for leftover in [
        ".atelier-transcript.jsonl",
        ".atelier-scenario.yaml",
        ENV_FILE,
    ] {
        let _ = agent.delete(&beside(repo_dir, leftover), false).await;
    }
    outcome.map(Some)
}

/// The agent's URL as the manager reaches it: directly on the local driver (the sandbox
/// shares the host's loopback), through a [`PortForward`] into an isolated sandbox.
pub async fn reach(
    agent: &atelier_agent_client::AgentClient,
    port: u16,
    local: bool,
) -> LaunchResult<(String, Option<Arc<PortForward>>)> {
    if local {
        return Ok((format!("http://127.0.0.1:{port}"), None));
    }
    let forward = PortForward::start(agent.clone(), port)
        .await
        .map_err(|e| LaunchError::failed(format!("forwarding to the agent's port {port}: {e}")))?;
    Ok((forward.url(), Some(Arc::new(forward))))
}
