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
//!   developerInstructions`, through the session's `system`), not the first prompt;
//! - each enabled MCP server → `-c mcp_servers.<name>={…}`: a local one as `command`,
//!   `args` and `env`, a remote one as `url` and `http_headers`. Codex expands no
//!   variables, so an `{env:NAME}` reference is given to it the ways it has: in a local
//!   server's argv or environment the command runs under `sh -c`, which expands
//!   `${NAME}`; a remote server's header that is exactly `{env:NAME}` becomes
//!   `env_http_headers`, and `Authorization: Bearer {env:NAME}` becomes
//!   `bearer_token_env_var`. Any other reference is refused, naming the field.
//!
//! Codex keeps its credentials in `$CODEX_HOME` (`~/.codex/auth.json`), which the
//! profile leaves alone.

use std::collections::BTreeMap;

use atelier_core::agent_config::{AgentConfig, McpServer};

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
    out.extend(mcp_overrides(config)?);
    Ok(out)
}

/// A piece of a configured string: literal text, or an `{env:NAME}` reference.
enum Piece<'a> {
    Text(&'a str),
    Env(&'a str),
}

/// `s` split into text and `{env:NAME}` references; a malformed reference is an error.
fn pieces(s: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(at) = rest.find("{env:") {
        let end = rest[at..]
            .find('}')
            .ok_or_else(|| format!("{s:?}: an {{env:…}} reference is not closed"))?;
        let name = &rest[at + 5..at + end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "{s:?}: {name:?} is not an environment variable name"
            ));
        }
        if at > 0 {
            out.push(Piece::Text(&rest[..at]));
        }
        out.push(Piece::Env(name));
        rest = &rest[at + end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// `s` as one double-quoted shell word in which its `{env:NAME}` references expand.
fn shell_word(s: &str) -> std::result::Result<String, String> {
    let mut out = String::from("\"");
    for piece in pieces(s)? {
        match piece {
            Piece::Env(name) => out.push_str(&format!("${{{name}}}")),
            Piece::Text(text) => {
                for c in text.chars() {
                    if matches!(c, '"' | '\\' | '$' | '`') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
        }
    }
    out.push('"');
    Ok(out)
}

fn toml_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

fn toml_table(entries: &BTreeMap<String, String>) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
        .collect();
    format!("{{ {} }}", entries.join(", "))
}

/// Each enabled MCP server as a `mcp_servers.<name>` override (see the module's docs).
fn mcp_overrides(config: &AgentConfig) -> Result<Vec<(String, String)>> {
    let mut out = vec![];
    for (name, server) in &config.mcp {
        let field = format!("agent_config.mcp.{name}");
        if !bare_key(name) {
            return Err(RuntimeError::config(
                field,
                "a Codex MCP server name takes only letters, digits, '-' and '_'",
            ));
        }
        let mut table: Vec<String> = vec![];
        match server {
            McpServer::Local {
                command,
                environment,
                enabled: true,
                timeout_ms,
            } => {
                let Some((program, args)) = command.split_first() else {
                    continue;
                };
                let refers = |s: &String| s.contains("{env:");
                let (fixed, referring): (BTreeMap<_, _>, BTreeMap<_, _>) = environment
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .partition(|(_, v)| !refers(v));
                if command.iter().any(refers) || !referring.is_empty() {
                    let mut script = String::new();
                    for (k, v) in &referring {
                        let word = shell_word(v).map_err(|e| {
                            RuntimeError::config(format!("{field}.environment.{k}"), e)
                        })?;
                        script.push_str(&format!("export {k}={word}; "));
                    }
                    script.push_str("exec");
                    for (i, arg) in command.iter().enumerate() {
                        let word = shell_word(arg).map_err(|e| {
                            RuntimeError::config(format!("{field}.command[{i}]"), e)
                        })?;
                        script.push(' ');
                        script.push_str(&word);
                    }
                    table.push("command = \"sh\"".into());
                    table.push(format!("args = {}", toml_array(&["-c".into(), script])));
                } else {
                    table.push(format!("command = {}", toml_string(program)));
                    table.push(format!("args = {}", toml_array(args)));
                }
                if !fixed.is_empty() {
                    table.push(format!("env = {}", toml_table(&fixed)));
                }
                if let Some(ms) = timeout_ms {
                    table.push(format!("startup_timeout_sec = {:?}", *ms as f64 / 1000.0));
                }
            }
            McpServer::Remote {
                url,
                headers,
                enabled: true,
                timeout_ms,
            } => {
                if url.contains("{env:") {
                    return Err(RuntimeError::config(
                        format!("{field}.url"),
                        "Codex cannot expand an {env:…} reference in a URL",
                    ));
                }
                table.push(format!("url = {}", toml_string(url)));
                let (mut fixed, mut from_env) = (BTreeMap::new(), BTreeMap::new());
                for (header, value) in headers {
                    let pieces = pieces(value).map_err(|e| {
                        RuntimeError::config(format!("{field}.headers.{header}"), e)
                    })?;
                    match pieces.as_slice() {
                        [Piece::Env(var)] => {
                            from_env.insert(header.clone(), (*var).to_owned());
                        }
                        [Piece::Text(bearer), Piece::Env(var)]
                            if header.eq_ignore_ascii_case("authorization")
                                && bearer.eq_ignore_ascii_case("bearer ") =>
                        {
                            table.push(format!("bearer_token_env_var = {}", toml_string(var)));
                        }
                        _ if value.contains("{env:") => {
                            return Err(RuntimeError::config(
                                format!("{field}.headers.{header}"),
                                "Codex takes a header from the environment only whole \
                                 (`{env:NAME}`) or as `Authorization: Bearer {env:NAME}`",
                            ))
                        }
                        _ => {
                            fixed.insert(header.clone(), value.clone());
                        }
                    }
                }
                if !fixed.is_empty() {
                    table.push(format!("http_headers = {}", toml_table(&fixed)));
                }
                if !from_env.is_empty() {
                    table.push(format!("env_http_headers = {}", toml_table(&from_env)));
                }
                if let Some(ms) = timeout_ms {
                    table.push(format!("startup_timeout_sec = {:?}", *ms as f64 / 1000.0));
                }
            }
            _ => continue,
        }
        out.push((
            format!("mcp_servers.{name}"),
            format!("{{ {} }}", table.join(", ")),
        ));
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

    #[test]
    fn mcp_servers_become_codex_overrides_with_env_references_it_can_expand() {
        let cfg = AgentConfig::from_value(&json!({
            "runtime": "codex",
            "mcp": {
                "fs": {"type": "local", "command": ["fs-mcp", "--root", "{env:HOME}/x y"],
                       "environment": {"MODE": "ro", "TOKEN": "t-{env:FS_TOKEN}"}, "timeout_ms": 5000},
                "plain": {"type": "local", "command": ["echo-mcp", "a\"b"]},
                "docs": {"type": "remote", "url": "https://mcp.example.com/mcp",
                         "headers": {"Authorization": "Bearer {env:DOCS_TOKEN}", "X-Team": "core",
                                     "X-Key": "{env:DOCS_KEY}"}},
                "off": {"type": "local", "command": ["nope"], "enabled": false}
            }
        }))
        .unwrap();
        let got: BTreeMap<String, String> = overrides(&cfg)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with("mcp_servers."))
            .collect();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["mcp_servers.docs", "mcp_servers.fs", "mcp_servers.plain"]
        );
        assert_eq!(
            got["mcp_servers.fs"],
            r#"{ command = "sh", args = ["-c", "export TOKEN=\"t-${FS_TOKEN}\"; exec \"fs-mcp\" \"--root\" \"${HOME}/x y\""], env = { "MODE" = "ro" }, startup_timeout_sec = 5.0 }"#
        );
        assert_eq!(
            got["mcp_servers.plain"],
            r#"{ command = "echo-mcp", args = ["a\"b"] }"#
        );
        assert_eq!(
            got["mcp_servers.docs"],
            r#"{ url = "https://mcp.example.com/mcp", bearer_token_env_var = "DOCS_TOKEN", http_headers = { "X-Team" = "core" }, env_http_headers = { "X-Key" = "DOCS_KEY" } }"#
        );
        // What the shell is given expands only the references.
        let word = shell_word("a$b`c\\d\"{env:E}").unwrap();
        assert_eq!(word, r#""a\$b\`c\\d\"${E}""#);
    }

    #[test]
    fn an_env_reference_codex_cannot_take_is_refused_naming_the_field() {
        for (mcp, field) in [
            (
                json!({"r": {"type": "remote", "url": "https://{env:HOST}/mcp"}}),
                "agent_config.mcp.r.url",
            ),
            (
                json!({"r": {"type": "remote", "url": "https://h/mcp",
                             "headers": {"X-Key": "k-{env:KEY}"}}}),
                "agent_config.mcp.r.headers.X-Key",
            ),
            (
                json!({"l": {"type": "local", "command": ["x", "{env:1BAD}"]}}),
                "agent_config.mcp.l.command[1]",
            ),
            (
                json!({"bad name": {"type": "local", "command": ["x"]}}),
                "agent_config.mcp.bad name",
            ),
        ] {
            let cfg = AgentConfig::from_value(&json!({"runtime": "codex", "mcp": mcp})).unwrap();
            let e = overrides(&cfg).unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
}
