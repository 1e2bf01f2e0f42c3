//! The launch profile of an ACP agent: the workspace's `command` (e.g. `gemini --acp`)
//! under the stdio host; `opencode acp` reads the same config files as `opencode serve`.

use std::collections::BTreeMap;
use std::path::Path;

use atelier_core::agent_config::AgentConfig;

use crate::launch::{LaunchContext, LaunchPlan, Program};
use crate::{Result, RuntimeError};

pub fn plan(config: &AgentConfig, ctx: &LaunchContext<'_>) -> Result<LaunchPlan> {
    let argv = config.command.clone().unwrap_or_default();
    let Some((program, args)) = argv.split_first() else {
        return Err(RuntimeError::config(
            "agent_config.command",
            "the acp runtime needs the agent's argv, e.g. [\"gemini\", \"--acp\"]",
        ));
    };
    let (files, env) = if Path::new(program)
        .file_name()
        .is_some_and(|n| n == "opencode")
    {
        crate::opencode::profile::config_files(config, ctx)?
    } else {
        (Vec::new(), BTreeMap::new())
    };
    Ok(LaunchPlan {
        program: Program::Path(program.clone()),
        args: args.to_vec(),
        env,
        files,
        protocol: config.protocol(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_acp_agent_needs_its_command_and_opencode_acp_gets_its_config() {
        let session = crate::SessionSpec::default();
        let ctx = LaunchContext {
            repo_dir: "/srv/app",
            port: 4096,
            session: &session,
        };
        let none = AgentConfig::from_value(&json!({"runtime": "acp"})).unwrap();
        let e = plan(&none, &ctx).unwrap_err();
        assert!(e.to_string().starts_with("agent_config.command:"), "{e}");

        let gemini =
            AgentConfig::from_value(&json!({"runtime": "acp", "command": ["gemini", "--acp"]}))
                .unwrap();
        let p = plan(&gemini, &ctx).unwrap();
        assert_eq!(
            (p.program.clone(), p.args.clone()),
            (Program::Path("gemini".into()), vec!["--acp".to_owned()])
        );
        assert!(p.files.is_empty());
        assert_eq!(p.password_env(), crate::stdio_host::TOKEN_ENV);

        let oc = AgentConfig::from_value(
            &json!({"runtime": "acp", "command": ["/usr/bin/opencode", "acp"]}),
        )
        .unwrap();
        let p = plan(&oc, &ctx).unwrap();
        assert_eq!(p.env["OPENCODE_CONFIG"], "/srv/.atelier-opencode.json");
    }
}
