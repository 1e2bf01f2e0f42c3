//! Starting a coding agent in a sandbox.
//!
//! The agent runs as a supervised service of the sandbox's `atelier-agent`. What it runs
//! comes from the workspace's [`AgentConfig`]: `opencode serve` (the pinned
//! `opencode-ai@1.18.33` on the sandbox's PATH, or `binary`), Claude Code, an ACP agent
//! (`command`), or the scripted fake agent speaking any of those protocols, for tests and
//! demos. Claude Code and ACP agents talk over stdio, so they run under
//! `atelier-stdio-host`, which keeps their transcript and serves it over HTTP like
//! `opencode serve`.
//!
//! Before the start, the agent's own config file is written next to the repository (not
//! in its work tree, so it is never committed): for OpenCode an `opencode.json` in its
//! real schema, found through `OPENCODE_CONFIG`. Secret values never go into that file nor
//! into the service definition (which the services API shows): they sit in a 0600 env
//! file that a `sh` wrapper sources just before it execs the agent, and the config names
//! them as `{env:NAME}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use atelier_agent_client::AgentClient;
use atelier_core::agent_config::{AgentConfig, McpServer, RuntimeKind};
use atelier_proto::{CommandLine, RestartPolicy, ServiceSpec};
use atelier_runtimes::{stdio_host, SessionSpec};
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::{LaunchError, LaunchResult};

/// The service name of the coding agent in its sandbox.
pub const SERVICE: &str = "coding-agent";

/// OpenCode's package for OpenAI-compatible servers; bundled, so it needs no download.
const OPENAI_COMPATIBLE: &str = "@ai-sdk/openai-compatible";

#[derive(Debug, Clone)]
pub struct AgentLaunch {
    /// The port the agent's server listens on, on the sandbox's loopback.
    pub port: u16,
}

/// The 0600 env file the agent's wrapper sources, next to the repository.
pub const ENV_FILE: &str = ".atelier-agent.env";

/// What `opencode serve` (and the fake agent speaking its protocol) take as their
/// server's Basic-auth password.
const OPENCODE_PASSWORD_ENV: &str = "OPENCODE_SERVER_PASSWORD";

/// The stdio host's transcript of the agent, next to the repository (never committed).
const TRANSCRIPT: &str = ".atelier-transcript.jsonl";

/// The agent's port in an isolated sandbox, which has its own loopback.
const SANDBOX_AGENT_PORT: u16 = 4096;

/// The password of the coding agent's server (OpenCode's `OPENCODE_SERVER_PASSWORD`,
/// the stdio host's bearer token) in the sandbox whose `atelier-agent` token is
/// `sandbox_token`. Derived rather than stored, so a restarted manager reconnects with it;
/// one-way, so the agent, which sees its own server's password, learns nothing of the
/// token that drives its sandbox.
pub fn server_token(sandbox_token: &str) -> String {
    crate::auth::derived_secret("atelier coding-agent server", &[sandbox_token])
}

/// Secret values for the agent's environment, by env var name. Redacted in `Debug`.
#[derive(Default, Clone)]
pub struct AgentSecrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for AgentSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

fn free_port() -> LaunchResult<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| LaunchError::failed(format!("picking a port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| LaunchError::failed(e.to_string()))?
        .port())
}

/// A binary shipped with the manager, as the sandbox runs it: the file itself when the
/// sandbox shares the host's filesystem, else a copy written next to the repository (a VM
/// cannot run the host's file).
async fn manager_binary(
    agent: &AgentClient,
    name: &str,
    repo_dir: &str,
    local: bool,
) -> LaunchResult<String> {
    let host = sibling_binary(name).ok_or_else(|| {
        LaunchError::failed(format!("the {name} binary was not found next to atelier"))
    })?;
    if local {
        return Ok(host.display().to_string());
    }
    let bytes = tokio::fs::read(&host)
        .await
        .map_err(|e| LaunchError::failed(format!("reading {}: {e}", host.display())))?;
    let path = super::beside(repo_dir, &format!(".atelier-{name}"));
    agent
        .write_file(&path, Bytes::from(bytes), Some(0o755))
        .await?;
    Ok(path)
}

/// Writes the workspace's config as OpenCode's `opencode.json` (and the instructions it
/// points at) next to the repository, and sets OpenCode's environment to find it.
async fn write_opencode_config(
    agent: &AgentClient,
    config: &AgentConfig,
    repo_dir: &str,
    env: &mut BTreeMap<String, String>,
) -> LaunchResult<()> {
    let instructions = match &config.instructions {
        Some(text) => {
            let path = super::beside(repo_dir, ".atelier-instructions.md");
            agent
                .write_file(&path, Bytes::from(text.clone()), Some(0o600))
                .await?;
            Some(path)
        }
        None => None,
    };
    let path = super::beside(repo_dir, ".atelier-opencode.json");
    let file = opencode_config(config, instructions.as_deref());
    let text = serde_json::to_vec_pretty(&file)
        .map_err(|e| LaunchError::failed(format!("rendering opencode.json: {e}")))?;
    agent
        .write_file(&path, Bytes::from(text), Some(0o600))
        .await?;
    for (k, v) in [
        ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
        ("OPENCODE_DISABLE_SHARE", "1"),
        ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
        ("OPENCODE_ENABLE_QUESTION_TOOL", "1"),
    ] {
        env.entry(k.to_owned()).or_insert_with(|| v.to_owned());
    }
    env.insert("OPENCODE_CONFIG".into(), path);
    Ok(())
}

/// Starts the coding agent for `repo_dir` (absolute, inside the sandbox). `local`: the
/// sandbox shares the host's network (so the port must be free on the host too).
/// `session` is what the session will run with: Claude Code takes its model, effort,
/// mode and system prompt as launch flags.
///
/// OpenCode (and the fake agent speaking its protocol) serve HTTP on the port
/// themselves; Claude Code and ACP agents speak over stdio and run under
/// `atelier-stdio-host`, which serves their transcript on the port.
///
/// Either server demands `server_token` (see [`server_token`]): on the local driver every
/// sandbox shares the host's loopback, and in a VM it guards the server from anything
/// that reaches the guest's loopback but is not this task.
pub async fn start(
    agent: &AgentClient,
    config: &AgentConfig,
    secrets: &AgentSecrets,
    server_token: &str,
    repo_dir: &str,
    session: &SessionSpec,
    local: bool,
) -> LaunchResult<AgentLaunch> {
    let port = if local {
        free_port()?
    } else {
        SANDBOX_AGENT_PORT
    };
    let protocol = config.protocol();
    let mut env: BTreeMap<String, String> = config.env.clone();
    let argv = match config.runtime {
        RuntimeKind::Fake => {
            let scenario = config.scenario.as_deref().ok_or_else(|| {
                LaunchError::invalid(
                    "agent_config.scenario",
                    "the fake runtime needs a scenario (YAML)",
                )
            })?;
            let path = super::beside(repo_dir, ".atelier-scenario.yaml");
            agent
                .write_file(&path, Bytes::from(scenario.to_owned()), Some(0o600))
                .await?;
            let bin = match &config.binary {
                Some(b) => b.clone(),
                None => manager_binary(agent, "fake-agent", repo_dir, local).await?,
            };
            let mut argv = vec![bin];
            if protocol.is_stdio() {
                argv.extend(["--protocol".into(), protocol.as_str().into()]);
            } else {
                argv.extend([
                    "--port".into(),
                    port.to_string(),
                    "--hostname".into(),
                    "127.0.0.1".into(),
                ]);
            }
            argv.extend([
                "--scenario".into(),
                path,
                "--directory".into(),
                repo_dir.into(),
            ]);
            argv
        }
        RuntimeKind::Opencode => {
            write_opencode_config(agent, config, repo_dir, &mut env).await?;
            vec![
                config.binary.clone().unwrap_or_else(|| "opencode".into()),
                "serve".into(),
                "--port".into(),
                port.to_string(),
                "--hostname".into(),
                "127.0.0.1".into(),
            ]
        }
        RuntimeKind::Claude => {
            let mut argv = atelier_runtimes::claude::command(
                config.binary.as_deref().unwrap_or("claude"),
                session,
            );
            if let Some(mcp) = claude_mcp_config(config) {
                let path = super::beside(repo_dir, ".atelier-claude-mcp.json");
                let text = serde_json::to_vec_pretty(&mcp)
                    .map_err(|e| LaunchError::failed(format!("rendering the MCP config: {e}")))?;
                agent
                    .write_file(&path, Bytes::from(text), Some(0o600))
                    .await?;
                argv.extend(["--mcp-config".into(), path]);
            }
            argv
        }
        RuntimeKind::Acp => {
            let argv = config.command.clone().unwrap_or_default();
            if argv.is_empty() {
                return Err(LaunchError::invalid(
                    "agent_config.command",
                    "the acp runtime needs the agent's argv, e.g. [\"gemini\", \"--acp\"]",
                ));
            }
            // `opencode acp` reads the same config as `opencode serve`.
            if Path::new(&argv[0])
                .file_name()
                .is_some_and(|n| n == "opencode")
            {
                write_opencode_config(agent, config, repo_dir, &mut env).await?;
            }
            argv
        }
    };
    let argv = if protocol.is_stdio() {
        let host = manager_binary(agent, "atelier-stdio-host", repo_dir, local).await?;
        let transcript = super::beside(repo_dir, TRANSCRIPT);
        stdio_host::host_command(&host, port, &transcript, Some(repo_dir), &argv)
    } else {
        argv
    };
    // The stdio host takes its token from the environment and keeps it from the agent.
    let token_var = if protocol.is_stdio() {
        stdio_host::TOKEN_ENV
    } else {
        OPENCODE_PASSWORD_ENV
    };
    let mut values = secrets.clone();
    values
        .0
        .insert(token_var.to_owned(), server_token.to_owned());
    let env_file = super::beside(repo_dir, ENV_FILE);
    let content = env_file_content(&values)?;
    agent
        .write_file(&env_file, Bytes::from(content), Some(0o600))
        .await?;
    let argv = with_env_file(&env_file, argv);
    let spec = ServiceSpec {
        command: CommandLine::Argv(argv),
        env,
        cwd: Some(repo_dir.to_owned()),
        user: None,
        restart: RestartPolicy::OnFailure,
    };
    agent.put_service(SERVICE, &spec).await?;
    Ok(AgentLaunch { port })
}

/// The last couple of KiB of the agent's output, to explain why it did not come up.
pub async fn log_tail(agent: &AgentClient) -> String {
    const TAIL: u64 = 2048;
    let Ok(head) = agent.service_logs(SERVICE, 0, Some(1)).await else {
        return String::new();
    };
    agent
        .service_logs(SERVICE, head.size.saturating_sub(TAIL), Some(TAIL))
        .await
        .map(|c| c.data)
        .unwrap_or_default()
}

/// Runs `argv` under `sh`, which first sources `env_file` (so the values never show in
/// the service's definition).
fn with_env_file(env_file: &str, argv: Vec<String>) -> Vec<String> {
    let mut wrapped = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        ". \"$0\" && exec \"$@\"".to_owned(),
        env_file.to_owned(),
    ];
    wrapped.extend(argv);
    wrapped
}

/// `export NAME='value'` lines, single-quoted so that any value survives `sh` intact.
fn env_file_content(secrets: &AgentSecrets) -> LaunchResult<String> {
    let mut out = String::new();
    for (name, value) in &secrets.0 {
        if value.contains('\0') {
            return Err(LaunchError::invalid(
                "secrets",
                format!("the secret given to the agent as {name} contains a NUL byte"),
            ));
        }
        out.push_str(&format!(
            "export {name}='{}'\n",
            value.replace('\'', "'\\''")
        ));
    }
    Ok(out)
}

/// The workspace's agent config in OpenCode 1.x's `opencode.json` schema.
pub fn opencode_config(config: &AgentConfig, instructions: Option<&str>) -> Value {
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

/// The workspace's enabled MCP servers in Claude Code's `--mcp-config` schema (`None`
/// without any). `{env:NAME}` references become Claude's `${NAME}`, expanded by Claude.
pub fn claude_mcp_config(config: &AgentConfig) -> Option<Value> {
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
    fn a_server_token_is_stable_per_sandbox_and_reveals_nothing_of_its_source() {
        let a = server_token("sandbox-token-a-0123456789");
        assert_eq!(
            a,
            server_token("sandbox-token-a-0123456789"),
            "a restart derives it again"
        );
        assert_ne!(a, server_token("sandbox-token-b-0123456789"));
        // Agents of running sandboxes have it: the derivation must never change.
        assert_eq!(
            a,
            "86eee5a3b6292c30cedb28032f3e3f83648975662b125989cd9400fdd826b469"
        );
        assert!(!a.contains("sandbox-token"));
    }

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
        let v = opencode_config(&cfg, Some("/srv/app/.atelier-instructions.md"));
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
        let v = claude_mcp_config(&cfg).expect("servers");
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
        assert_eq!(claude_mcp_config(&AgentConfig::default()), None);
    }

    #[test]
    fn env_files_quote_every_value_and_debug_hides_them() {
        let secrets = AgentSecrets(BTreeMap::from([
            ("A".to_owned(), "it's $HOME `x`\nline2".to_owned()),
            ("B".to_owned(), "plain".to_owned()),
        ]));
        let content = env_file_content(&secrets).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, &content).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", ". \"$0\" && printf '%s|%s' \"$A\" \"$B\""])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's $HOME `x`\nline2|plain"
        );
        assert!(!format!("{secrets:?}").contains("plain"));
        let nul = AgentSecrets(BTreeMap::from([("A".to_owned(), "a\0b".to_owned())]));
        assert!(env_file_content(&nul).is_err());
        assert_eq!(
            with_env_file("/e", vec!["opencode".into(), "serve".into()])[3..],
            ["/e", "opencode", "serve"]
        );
    }
}
