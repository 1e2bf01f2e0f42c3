//! OpenCode's launch profile: `opencode serve` on the port, with the workspace's agent
//! config written as OpenCode's own `opencode.json` (found through `OPENCODE_CONFIG`) and
//! the instructions it points at. Secret values never go into the file: it names them
//! as `{env:NAME}`, which OpenCode substitutes when it reads it.

use std::collections::BTreeMap;

use atelier_core::agent_config::{AgentConfig, McpServer};
use serde_json::{json, Map, Value};

use crate::launch::{LaunchContext, LaunchFile, LaunchPlan, Program};
use crate::{Result, RuntimeError};

/// OpenCode's package for OpenAI-compatible servers; bundled, so it needs no download.
const OPENAI_COMPATIBLE: &str = "@ai-sdk/openai-compatible";

/// `opencode serve` on the context's port.
pub fn plan(config: &AgentConfig, ctx: &LaunchContext<'_>) -> Result<LaunchPlan> {
    let (files, env) = config_files(config, ctx)?;
    Ok(LaunchPlan {
        program: Program::Path(config.binary.clone().unwrap_or_else(|| "opencode".into())),
        args: vec![
            "serve".into(),
            "--port".into(),
            ctx.port.to_string(),
            "--hostname".into(),
            "127.0.0.1".into(),
        ],
        env,
        files,
        protocol: config.protocol(),
    })
}

/// The files OpenCode reads (its config, the instructions) and the environment that
/// points it at them and turns off what a sandbox must not do (updates, sharing,
/// fetching the model list). `opencode acp` reads the same.
pub fn config_files(
    config: &AgentConfig,
    ctx: &LaunchContext<'_>,
) -> Result<(Vec<LaunchFile>, BTreeMap<String, String>)> {
    let mut files = Vec::new();
    let instructions = config.instructions.as_ref().map(|text| {
        let file = ctx.file(".atelier-instructions.md", text.as_bytes());
        let path = file.path.clone();
        files.push(file);
        path
    });
    let text = serde_json::to_vec_pretty(&config_file(config, instructions.as_deref()))
        .map_err(|e| RuntimeError::Protocol(format!("rendering opencode.json: {e}")))?;
    let file = ctx.file(".atelier-opencode.json", text);
    let mut env: BTreeMap<String, String> = [
        ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
        ("OPENCODE_DISABLE_SHARE", "1"),
        ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
        ("OPENCODE_ENABLE_QUESTION_TOOL", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("OPENCODE_CONFIG".into(), file.path.clone());
    files.push(file);
    Ok((files, env))
}

/// The workspace's agent config in OpenCode 1.x's `opencode.json` schema.
pub fn config_file(config: &AgentConfig, instructions: Option<&str>) -> Value {
    let mut out = Map::new();
    out.insert("$schema".into(), json!("https://opencode.ai/config.json"));
    out.insert("share".into(), json!("disabled"));
    out.insert("autoupdate".into(), json!(false));
    if let Some(m) = &config.model {
        out.insert("model".into(), json!(m));
    }
    if let Some(m) = config.small_model.as_ref().or(config.model.as_ref()) {
        out.insert("small_model".into(), json!(m));
    }
    if !config.providers.is_empty() {
        let mut providers = Map::new();
        for (id, p) in &config.providers {
            let mut options = Map::new();
            if let Some(url) = &p.base_url {
                options.insert("baseURL".into(), json!(url));
            }
            if let Some(var) = &p.api_key_env {
                // OpenCode substitutes the variable when it reads the file.
                options.insert("apiKey".into(), json!(format!("{{env:{var}}}")));
            }
            let mut models = Map::new();
            for (mid, m) in &p.models {
                let mut model = Map::new();
                model.insert("name".into(), json!(m.name.as_deref().unwrap_or(mid)));
                model.insert("tool_call".into(), json!(m.tool_call));
                model.insert("reasoning".into(), json!(m.reasoning));
                if m.context.is_some() || m.output.is_some() {
                    let context = m.context.unwrap_or(128_000);
                    model.insert(
                        "limit".into(),
                        json!({"context": context, "output": m.output.unwrap_or(context.min(8192))}),
                    );
                }
                if m.input_cost.is_some() || m.output_cost.is_some() {
                    model.insert(
                        "cost".into(),
                        json!({"input": m.input_cost.unwrap_or(0.0), "output": m.output_cost.unwrap_or(0.0)}),
                    );
                }
                models.insert(mid.clone(), Value::Object(model));
            }
            let mut provider = Map::new();
            provider.insert(
                "npm".into(),
                json!(p.npm.as_deref().unwrap_or(OPENAI_COMPATIBLE)),
            );
            provider.insert("name".into(), json!(p.name.as_deref().unwrap_or(id)));
            provider.insert("options".into(), Value::Object(options));
            if !models.is_empty() {
                provider.insert("models".into(), Value::Object(models));
            }
            providers.insert(id.clone(), Value::Object(provider));
        }
        out.insert("provider".into(), Value::Object(providers));
    }
    if !config.mcp.is_empty() {
        let mut mcp = Map::new();
        for (name, server) in &config.mcp {
            let v = match server {
                McpServer::Local {
                    command,
                    environment,
                    enabled,
                    timeout_ms,
                } => {
                    let mut v = json!({"type": "local", "command": command, "enabled": enabled});
                    if !environment.is_empty() {
                        v["environment"] = json!(environment);
                    }
                    if let Some(t) = timeout_ms {
                        v["timeout"] = json!(t);
                    }
                    v
                }
                McpServer::Remote {
                    url,
                    headers,
                    enabled,
                    timeout_ms,
                } => {
                    let mut v = json!({"type": "remote", "url": url, "enabled": enabled});
                    if !headers.is_empty() {
                        v["headers"] = json!(headers);
                    }
                    if let Some(t) = timeout_ms {
                        v["timeout"] = json!(t);
                    }
                    v
                }
            };
            mcp.insert(name.clone(), v);
        }
        out.insert("mcp".into(), Value::Object(mcp));
    }
    if let Some(path) = instructions {
        out.insert("instructions".into(), json!([path]));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opencode_config_names_secrets_by_env_var_only() {
        let cfg = AgentConfig::from_value(&json!({
            "model": "local/m",
            "providers": {"local": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "LOCAL_KEY",
                "models": {"m": {"context": 1000, "input_cost": 2.0}}}},
            "mcp": {"docs": {"type": "remote", "url": "https://mcp.example.com",
                              "headers": {"Authorization": "Bearer {env:LOCAL_KEY}"}},
                    "fs": {"type": "local", "command": ["fs-mcp", "--root", "."], "timeout_ms": 5000}},
            "instructions": "Keep commits small.",
            "secrets": {"MODEL_KEY": "LOCAL_KEY"}
        }))
        .unwrap();
        let v = config_file(&cfg, Some("/srv/app/.atelier-instructions.md"));
        assert_eq!(v["model"], "local/m");
        assert_eq!(v["small_model"], "local/m");
        assert_eq!(v["provider"]["local"]["npm"], OPENAI_COMPATIBLE);
        assert_eq!(
            v["provider"]["local"]["options"],
            json!({"baseURL": "http://127.0.0.1:9/v1", "apiKey": "{env:LOCAL_KEY}"})
        );
        assert_eq!(
            v["provider"]["local"]["models"]["m"]["limit"],
            json!({"context": 1000, "output": 1000})
        );
        assert_eq!(
            v["provider"]["local"]["models"]["m"]["cost"],
            json!({"input": 2.0, "output": 0.0})
        );
        assert_eq!(
            v["mcp"]["fs"],
            json!({"type": "local", "command": ["fs-mcp", "--root", "."], "enabled": true, "timeout": 5000})
        );
        assert_eq!(v["mcp"]["docs"]["type"], "remote");
        assert_eq!(
            v["instructions"],
            json!(["/srv/app/.atelier-instructions.md"])
        );
        assert_eq!(v["share"], "disabled");
    }

    #[test]
    fn serve_points_at_its_config_file_beside_the_repo() {
        let cfg = AgentConfig::from_value(&json!({"instructions": "Be brief."})).unwrap();
        let session = crate::SessionSpec::default();
        let ctx = LaunchContext {
            repo_dir: "/srv/app",
            port: 4096,
            session: &session,
        };
        let plan = plan(&cfg, &ctx).unwrap();
        assert_eq!(plan.program, Program::Path("opencode".into()));
        assert_eq!(
            plan.args,
            ["serve", "--port", "4096", "--hostname", "127.0.0.1"]
        );
        assert_eq!(plan.env["OPENCODE_CONFIG"], "/srv/.atelier-opencode.json");
        let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/srv/.atelier-instructions.md",
                "/srv/.atelier-opencode.json"
            ]
        );
        assert!(plan.files.iter().all(|f| f.mode == 0o600));
        assert_eq!(plan.password_env(), "OPENCODE_SERVER_PASSWORD");
    }
}
