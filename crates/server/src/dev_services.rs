//! A workspace's dev commands, run as supervised services in its sandboxes.
//!
//! Each `dev_commands` entry becomes the agent service `dev-<name>`: its command in a
//! shell, in the repo's directory, with `PORT` set to its port, restarted when it
//! fails. A prebuild starts them before its capture, so a clone's dev servers are warm
//! from the snapshot; a task starts whatever is not running once its repo is in place.
//! They get no workspace secrets: a prebuild's services live on in its memory image,
//! and secrets never go into one.

use std::collections::BTreeMap;

use atelier_agent_client::{AgentClient, Error};
use atelier_core::workspace::{DevCommand, WorkspaceSpec};
use atelier_proto::{CommandLine, ExecRequest, RestartPolicy, ServiceSpec, ServiceState};

/// The agent service a dev command runs as.
pub fn service_name(command: &DevCommand) -> String {
    format!("dev-{}", command.name)
}

fn spec(command: &DevCommand, cwd: &str) -> ServiceSpec {
    ServiceSpec {
        command: CommandLine::Shell(command.command.clone()),
        env: BTreeMap::from([("PORT".to_owned(), command.port.to_string())]),
        cwd: Some(cwd.to_owned()),
        user: None,
        restart: RestartPolicy::OnFailure,
    }
}

/// Starts every dev command that is not already running as it should (same command,
/// directory and port); returns the names of the services it (re)started.
pub async fn ensure(
    agent: &AgentClient,
    commands: &[DevCommand],
    cwd: &str,
) -> Result<Vec<String>, Error> {
    if commands.is_empty() {
        return Ok(vec![]);
    }
    let running = agent.services().await?;
    let mut started = vec![];
    for command in commands {
        let name = service_name(command);
        let wanted = spec(command, cwd);
        let up = running.iter().any(|s| {
            s.name == name
                && s.spec == wanted
                && matches!(s.state, ServiceState::Running | ServiceState::Backoff)
        });
        if !up {
            agent.put_service(&name, &wanted).await?;
            started.push(name);
        }
    }
    Ok(started)
}

/// [`ensure`] in the workspace's first repo, once it is in the sandbox (a prebuild's
/// clone, a task's checkout, a restarted sandbox); nothing before that.
pub async fn ensure_in_first_repo(
    agent: &AgentClient,
    spec: &WorkspaceSpec,
) -> Result<Vec<String>, Error> {
    let Some(repo) = spec.repos.first().filter(|_| !spec.dev_commands.is_empty()) else {
        return Ok(vec![]);
    };
    let mut probe = ExecRequest::argv(["pwd"]);
    probe.cwd = Some(repo.clone_path());
    match agent.exec(&probe).await {
        Ok(r) if r.status.exit_code == Some(0) => {
            ensure(agent, &spec.dev_commands, r.stdout.trim()).await
        }
        _ => Ok(vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_command_runs_in_a_shell_in_the_repo_with_its_port() {
        let c = DevCommand {
            name: "web".into(),
            command: "npm run dev -- --port $PORT".into(),
            port: 5173,
            public: false,
        };
        assert_eq!(service_name(&c), "dev-web");
        let s = spec(&c, "/home/dev/app");
        assert_eq!(s.command, CommandLine::Shell(c.command.clone()));
        assert_eq!(s.env["PORT"], "5173");
        assert_eq!(s.cwd.as_deref(), Some("/home/dev/app"));
        assert_eq!(s.restart, RestartPolicy::OnFailure);
    }
}
