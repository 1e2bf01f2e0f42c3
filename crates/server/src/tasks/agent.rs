//! Starting a coding agent in a sandbox and reaching it.
//!
//! The agent runs as a supervised service of the sandbox's `atelier-agent`. Its runtime
//! comes from the workspace's agent config: `{"runtime": "opencode"}` (the default; the
//! pinned `opencode-ai@1.18.33` on the sandbox's PATH, or `"binary"`) or
//! `{"runtime": "fake", "scenario": "<YAML>"}` — the scripted fake agent that speaks the
//! same protocol, for tests and demos.

use std::path::PathBuf;

use atelier_agent_client::AgentClient;
use atelier_proto::{CommandLine, RestartPolicy, ServiceSpec};
use bytes::Bytes;

use crate::error::{ApiError, ApiResult};

/// The service name of the coding agent in its sandbox.
pub const SERVICE: &str = "coding-agent";

#[derive(Debug, Clone)]
pub struct AgentLaunch {
    /// The agent's server as the manager reaches it.
    pub base_url: String,
}

fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

fn free_port() -> ApiResult<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ApiError::internal(format!("picking a port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .port())
}

/// Starts the coding agent for `repo_dir` (absolute, inside the sandbox).
pub async fn start(
    agent: &AgentClient,
    config: &serde_json::Value,
    repo_dir: &str,
    local: bool,
) -> ApiResult<AgentLaunch> {
    if !local {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "unsupported",
            "tasks run on the local driver in this version: reaching an agent inside a VM needs the sandbox port proxy",
        ));
    }
    let port = free_port()?;
    let runtime = config
        .get("runtime")
        .and_then(|v| v.as_str())
        .unwrap_or("opencode");
    let binary = config
        .get("binary")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let argv = match runtime {
        "fake" => {
            let scenario = config
                .get("scenario")
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "agent_config.scenario",
                        "the fake runtime needs a scenario (YAML)",
                    )
                })?;
            let path = super::git::beside(repo_dir, ".atelier-scenario.yaml");
            agent
                .write_file(&path, Bytes::from(scenario.to_owned()), Some(0o600))
                .await?;
            let bin = binary
                .or_else(|| sibling_binary("fake-agent").map(|p| p.display().to_string()))
                .ok_or_else(|| {
                    ApiError::internal("the fake-agent binary was not found next to atelier")
                })?;
            vec![
                bin,
                "--scenario".into(),
                path,
                "--port".into(),
                port.to_string(),
                "--hostname".into(),
                "127.0.0.1".into(),
                "--directory".into(),
                repo_dir.into(),
            ]
        }
        "opencode" => {
            let bin = binary.unwrap_or_else(|| "opencode".into());
            vec![
                bin,
                "serve".into(),
                "--port".into(),
                port.to_string(),
                "--hostname".into(),
                "127.0.0.1".into(),
            ]
        }
        other => {
            return Err(ApiError::invalid(
                "agent_config.runtime",
                format!("unknown runtime {other:?} (opencode, fake)"),
            ))
        }
    };
    let mut env = std::collections::BTreeMap::new();
    for (k, v) in [
        ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
        ("OPENCODE_DISABLE_SHARE", "1"),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    let spec = ServiceSpec {
        command: CommandLine::Argv(argv),
        env,
        cwd: Some(repo_dir.to_owned()),
        user: None,
        restart: RestartPolicy::OnFailure,
    };
    agent.put_service(SERVICE, &spec).await?;
    Ok(AgentLaunch {
        base_url: format!("http://127.0.0.1:{port}"),
    })
}
