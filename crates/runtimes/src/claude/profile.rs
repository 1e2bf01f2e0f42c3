//! Claude Code's launch profile: `claude -p` with stream-json both ways (see
//! [`super::command`]) under the stdio host, the session's model, effort, mode and
//! system prompt as flags, and the workspace's MCP servers in Claude's `--mcp-config`.

use std::collections::BTreeMap;

use atelier_core::agent_config::{AgentConfig, McpServer};
use serde_json::{json, Map, Value};

use crate::launch::{LaunchContext, LaunchPlan, Program};
use crate::{Result, RuntimeError};

pub fn plan(config: &AgentConfig, ctx: &LaunchContext<'_>) -> Result<LaunchPlan> {
    let binary = config.binary.clone().unwrap_or_else(|| "claude".into());
    let mut args: Vec<String> = super::command(&binary, ctx.session)
        .into_iter()
        .skip(1)
        .collect();
    let mut files = Vec::new();
    if let Some(mcp) = mcp_config(config) {
        let text = serde_json::to_vec_pretty(&mcp)
            .map_err(|e| RuntimeError::Protocol(format!("rendering the MCP config: {e}")))?;
        let file = ctx.file(".atelier-claude-mcp.json", text);
        args.extend(["--mcp-config".into(), file.path.clone()]);
        files.push(file);
    }
    Ok(LaunchPlan {
        program: Program::Path(binary),
        args,
        env: BTreeMap::new(),
        files,
        protocol: config.protocol(),
    })
}

/// The workspace's enabled MCP servers in Claude Code's `--mcp-config` schema (`None`
/// without any). `{env:NAME}` references become Claude's `${NAME}`, expanded by Claude.
pub fn mcp_config(config: &AgentConfig) -> Option<Value> {
    fn env_refs(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("{env:") {
            let Some(end) = rest[at..].find('}') else {
                break;
            };
            out.push_str(&rest[..at]);
            out.push_str(&format!("${{{}}}", &rest[at + 5..at + end]));
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        out
    }
    let map = |m: &BTreeMap<String, String>| -> Map<String, Value> {
        m.iter()
            .map(|(k, v)| (k.clone(), json!(env_refs(v))))
            .collect()
    };
    let mut servers = Map::new();
    for (name, server) in &config.mcp {
        let v = match server {
            McpServer::Local {
                command,
                environment,
                enabled: true,
                ..
            } => {
                let Some((program, args)) = command.split_first() else {
                    continue;
                };
                let args: Vec<String> = args.iter().map(|a| env_refs(a)).collect();
                json!({"type": "stdio", "command": program, "args": args, "env": map(environment)})
            }
            McpServer::Remote {
                url,
                headers,
                enabled: true,
                ..
            } => json!({"type": "http", "url": env_refs(url), "headers": map(headers)}),
            _ => continue,
        };
        servers.insert(name.clone(), v);
    }
    (!servers.is_empty()).then(|| json!({"mcpServers": servers}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_gets_the_enabled_mcp_servers_with_its_own_env_syntax() {
        let cfg = AgentConfig::from_value(&json!({
            "runtime": "claude",
            "mcp": {"docs": {"type": "remote", "url": "https://mcp.example.com",
                              "headers": {"Authorization": "Bearer {env:DOCS_TOKEN}"}},
                    "fs": {"type": "local", "command": ["fs-mcp", "--root", "{env:HOME}/x"],
                           "environment": {"MODE": "ro"}},
                    "off": {"type": "local", "command": ["nope"], "enabled": false}}
        }))
        .unwrap();
        let v = mcp_config(&cfg).expect("servers");
        assert_eq!(
            v["mcpServers"]["docs"],
            json!({"type": "http", "url": "https://mcp.example.com",
                   "headers": {"Authorization": "Bearer ${DOCS_TOKEN}"}})
        );
        assert_eq!(
            v["mcpServers"]["fs"],
            json!({"type": "stdio", "command": "fs-mcp", "args": ["--root", "${HOME}/x"],
                   "env": {"MODE": "ro"}})
        );
        assert!(v["mcpServers"].get("off").is_none());
        assert_eq!(mcp_config(&AgentConfig::default()), None);
    }
}
