//! Codex's launch profile: `codex [-c key=value]… app-server` under the stdio host.
//!
//! The workspace's settings go in as `-c` overrides of Codex's `config.toml` (values in
//! TOML), placed before the subcommand, which takes the root's overrides:
//!
//! - `model` → `-c model="…"` and `-c model_provider="…"` (the provider must be one of
//!   Codex's own, `openai`, `oss`, `ollama`, `lmstudio`, or one of `providers`);
//! - each provider with a `base_url` → `-c model_providers.<id>={name, base_url,
//!   env_key, wire_api = "responses"}`; the key stays in the agent's environment, named
//!   by `env_key` (the provider's `api_key_env`);
//! - always `-c tools.update_plan={ enabled = true }` and `-c
//!   features.default_mode_request_user_input=true`: without them Codex 0.169 offers the
//!   model neither its plan tool (`update_plan`, Atelier's todos) nor, outside its Plan
//!   collaboration mode, `request_user_input` (Atelier's questions);
//! - `instructions` → the thread's developer instructions (`thread/start
//!   developerInstructions`, through the session's `system`), not the first prompt.
//!
//! Codex keeps its credentials in `$CODEX_HOME` (`~/.codex/auth.json`), which the
//! profile leaves alone. MCP servers are not passed to Codex yet.

use std::collections::BTreeMap;

use atelier_core::agent_config::AgentConfig;

use crate::launch::{LaunchContext, LaunchPlan, Program};
use crate::{Result, RuntimeError};

/// Overrides every Codex gets: the tools Atelier's todos and questions come from.
pub const ALWAYS: &[(&str, &str)] = &[
    ("tools.update_plan", "{ enabled = true }"),
    ("features.default_mode_request_user_input", "true"),
];

/// Providers Codex knows without a `model_providers` entry.
pub const BUILT_IN_PROVIDERS: &[&str] = &["openai", "oss", "ollama", "lmstudio"];

pub fn plan(config: &AgentConfig, _ctx: &LaunchContext<'_>) -> Result<LaunchPlan> {
    let binary = config.binary.clone().unwrap_or_else(|| "codex".into());
    let mut args = Vec::new();
    for (key, value) in overrides(config)? {
        args.extend(["-c".to_string(), format!("{key}={value}")]);
    }
    args.push("app-server".into());
    if !config.mcp.is_empty() {
        tracing::warn!("the codex runtime does not pass MCP servers to Codex yet");
    }
    Ok(LaunchPlan {
        program: Program::Path(binary),
        args,
        env: BTreeMap::new(),
        files: Vec::new(),
        protocol: config.protocol(),
    })
}

/// The `config.toml` overrides for `config`, as (dotted key, TOML value).
pub fn overrides(config: &AgentConfig) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = ALWAYS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (id, p) in &config.providers {
        let field = format!("agent_config.providers.{id}");
        if !bare_key(id) {
            return Err(RuntimeError::config(
                field,
                "a Codex provider id takes only letters, digits, '-' and '_'",
            ));
        }
        let Some(base_url) = &p.base_url else {
            continue;
        };
        let mut table = vec![
            format!("name = {}", toml_string(p.name.as_deref().unwrap_or(id))),
            format!("base_url = {}", toml_string(base_url)),
        ];
        if let Some(env) = &p.api_key_env {
            table.push(format!("env_key = {}", toml_string(env)));
        }
        table.push("wire_api = \"responses\"".into());
        out.push((
            format!("model_providers.{id}"),
            format!("{{ {} }}", table.join(", ")),
        ));
    }
    if let Some(model) = &config.model {
        let Some((provider, name)) = model.split_once('/') else {
            return Err(RuntimeError::config(
                "agent_config.model",
                "must be provider/model",
            ));
        };
        let known = BUILT_IN_PROVIDERS.contains(&provider)
            || config
                .providers
                .get(provider)
                .is_some_and(|p| p.base_url.is_some());
        if !known {
            return Err(RuntimeError::config(
                "agent_config.model",
                format!(
                    "Codex has no provider {provider:?}: use one of {BUILT_IN_PROVIDERS:?} or \
                     add it to providers with a base_url"
                ),
            ));
        }
        out.push(("model".into(), toml_string(name)));
        out.push(("model_provider".into(), toml_string(provider)));
    }
    Ok(out)
}

fn bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(session: &crate::SessionSpec) -> LaunchContext<'_> {
        LaunchContext {
            repo_dir: "/srv/app",
            port: 4096,
            session,
        }
    }

    #[test]
    fn codex_runs_app_server_with_its_model_and_providers_as_overrides() {
        let session = crate::SessionSpec::default();
        let bare = AgentConfig::from_value(&json!({"runtime": "codex"})).unwrap();
        let p = plan(&bare, &ctx(&session)).unwrap();
        let always = [
            "-c",
            "tools.update_plan={ enabled = true }",
            "-c",
            "features.default_mode_request_user_input=true",
        ];
        let mut bare_args: Vec<String> = always.iter().map(|s| s.to_string()).collect();
        bare_args.push("app-server".into());
        assert_eq!(
            (p.program.clone(), p.args.clone()),
            (Program::Path("codex".into()), bare_args)
        );
        assert_eq!(p.password_env(), crate::stdio_host::TOKEN_ENV);

        let cfg = AgentConfig::from_value(&json!({
            "runtime": "codex",
            "binary": "/opt/codex/bin/codex",
            "model": "local/qwen3-coder",
            "providers": {"local": {"name": "Local \"vLLM\"", "base_url": "http://127.0.0.1:8080/v1",
                                    "api_key_env": "LOCAL_KEY"},
                          "nourl": {}}
        }))
        .unwrap();
        let p = plan(&cfg, &ctx(&session)).unwrap();
        assert_eq!(p.program, Program::Path("/opt/codex/bin/codex".into()));
        assert_eq!(&p.args[..4], &always[..]);
        assert_eq!(
            p.args[4..],
            vec![
                "-c",
                "model_providers.local={ name = \"Local \\\"vLLM\\\"\", \
                 base_url = \"http://127.0.0.1:8080/v1\", env_key = \"LOCAL_KEY\", \
                 wire_api = \"responses\" }",
                "-c",
                "model=\"qwen3-coder\"",
                "-c",
                "model_provider=\"local\"",
                "app-server",
            ]
        );
        assert!(p.files.is_empty() && p.env.is_empty());

        let openai =
            AgentConfig::from_value(&json!({"runtime": "codex", "model": "openai/gpt-5.1-codex"}))
                .unwrap();
        assert_eq!(
            overrides(&openai).unwrap()[ALWAYS.len()..],
            vec![
                ("model".to_string(), "\"gpt-5.1-codex\"".to_string()),
                ("model_provider".to_string(), "\"openai\"".to_string())
            ]
        );
    }

    #[test]
    fn a_model_of_an_unknown_provider_is_refused_naming_the_field() {
        let session = crate::SessionSpec::default();
        let cfg = AgentConfig::from_value(
            &json!({"runtime": "codex", "model": "anthropic/claude-sonnet-4-5"}),
        )
        .unwrap();
        match plan(&cfg, &ctx(&session)) {
            Err(RuntimeError::Config { field, message }) => {
                assert_eq!(field, "agent_config.model");
                assert!(message.contains("anthropic"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let odd = AgentConfig::from_value(
            &json!({"runtime": "codex", "providers": {"a.b": {"base_url": "http://x/v1"}}}),
        )
        .unwrap();
        assert!(matches!(
            plan(&odd, &ctx(&session)),
            Err(RuntimeError::Config { field, .. }) if field == "agent_config.providers.a.b"
        ));
    }

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(toml_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
