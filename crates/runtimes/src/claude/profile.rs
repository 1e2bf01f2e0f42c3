//! Claude Code's launch profile: `claude -p` with stream-json both ways (see
//! [`super::command`]) under the stdio host, the session's model, effort, mode and
//! system prompt as flags, and the workspace's MCP servers in Claude's `--mcp-config`.
//!
//! The provider of `model` (`provider/model`), when `providers` gives it a `base_url`,
//! is Claude's one endpoint: `ANTHROPIC_BASE_URL`. Claude reads its key from
//! `ANTHROPIC_API_KEY` (sent as `x-api-key`) or `ANTHROPIC_AUTH_TOKEN` (a bearer token),
//! so the provider's `api_key_env` must be one of those. Claude runs headless: no
//! auto-updater and no traffic besides the model's (`DISABLE_AUTOUPDATER`,
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`), unless the workspace's `env` says
//! otherwise.

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
        env: environment(config)?,
        files,
        protocol: config.protocol(),
    })
}

/// The variables Claude Code reads its key from.
pub const KEY_ENVS: &[&str] = &["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"];

/// Claude's environment: headless defaults and the endpoint of the model's provider.
pub fn environment(config: &AgentConfig) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::from([
        ("DISABLE_AUTOUPDATER".to_string(), "1".to_string()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
            "1".to_string(),
        ),
    ]);
    let provider = config
        .model
        .as_deref()
        .and_then(|m| m.split_once('/'))
        .map(|(p, _)| p);
    let Some((id, p)) = provider.and_then(|id| config.providers.get_key_value(id)) else {
        return Ok(env);
    };
    if let Some(var) = p.api_key_env.as_deref() {
        if !KEY_ENVS.contains(&var) {
            return Err(RuntimeError::config(
                format!("agent_config.providers.{id}.api_key_env"),
                format!("Claude Code reads its key from {KEY_ENVS:?}, not {var:?}"),
            ));
        }
    }
    if let Some(url) = &p.base_url {
        env.insert("ANTHROPIC_BASE_URL".into(), url.clone());
    }
    Ok(env)
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
    fn the_models_provider_is_claudes_endpoint_and_claude_runs_headless() {
        let session = crate::SessionSpec::default();
        let ctx = LaunchContext {
            repo_dir: "/srv/app",
            port: 4096,
            session: &session,
        };
        let bare = AgentConfig::from_value(&json!({"runtime": "claude"})).unwrap();
        let env = plan(&bare, &ctx).unwrap().env;
        assert_eq!(
            env.get("DISABLE_AUTOUPDATER").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            env.get("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")
                .map(String::as_str),
            Some("1")
        );
        assert!(!env.contains_key("ANTHROPIC_BASE_URL"));

        let cfg = AgentConfig::from_value(&json!({
            "runtime": "claude",
            "model": "gateway/claude-sonnet-4-5",
            "providers": {"gateway": {"base_url": "http://127.0.0.1:9000",
                                      "api_key_env": "ANTHROPIC_API_KEY"},
                          "other": {"base_url": "http://127.0.0.1:9001"}}
        }))
        .unwrap();
        let env = plan(&cfg, &ctx).unwrap().env;
        assert_eq!(
            env.get("ANTHROPIC_BASE_URL").map(String::as_str),
            Some("http://127.0.0.1:9000")
        );
        // The workspace's own env still wins over the profile's defaults.
        let mut over = cfg.clone();
        over.env.insert("DISABLE_AUTOUPDATER".into(), "0".into());
        let p = crate::launch::plan(&over, &ctx).unwrap();
        assert_eq!(
            p.env.get("DISABLE_AUTOUPDATER").map(String::as_str),
            Some("0")
        );
    }

    #[test]
    fn a_key_claude_cannot_read_is_refused_naming_the_field() {
        let cfg = AgentConfig::from_value(&json!({
            "runtime": "claude",
            "model": "gateway/claude-sonnet-4-5",
            "providers": {"gateway": {"base_url": "http://127.0.0.1:9000",
                                      "api_key_env": "GATEWAY_KEY"}}
        }))
        .unwrap();
        match environment(&cfg) {
            Err(RuntimeError::Config { field, message }) => {
                assert_eq!(field, "agent_config.providers.gateway.api_key_env");
                assert!(message.contains("GATEWAY_KEY"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

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
