//! A workspace's coding-agent configuration: which runtime, which model and provider, the
//! MCP servers and instructions it gets, which workspace secrets it may read, and where
//! task branches are pushed.
//!
//! It is stored as the workspace's `agent_config` JSON object and checked here, naming
//! the offending field (`agent_config.providers.local.base_url`). Each runtime renders it
//! into its own config file when a task starts; secret *values* never appear in it, only
//! the names of the environment variables that carry them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, ValidationErrors};
use crate::workspace::{RepoSpec, SecretsSpec};

const FIELD: &str = "agent_config";

/// Env vars the manager sets for the agent itself; a workspace may not redefine them.
pub const RESERVED_ENV: &[&str] = &["OPENCODE_CONFIG"];

const MAX_INSTRUCTIONS: usize = 64 * 1024;
const MAX_ENV_VALUE: usize = 32 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// The agent's executable in the sandbox (default: `opencode`, `claude` or `codex` on the
    /// PATH, or the `fake-agent` next to the manager).
    #[serde(default)]
    pub binary: Option<String>,
    /// The `acp` runtime's argv, e.g. `["gemini", "--acp"]` or `["opencode", "acp"]`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The fake runtime's YAML scenario.
    #[serde(default)]
    pub scenario: Option<String>,
    /// The protocol the fake runtime speaks (default `opencode`).
    #[serde(default)]
    pub protocol: Option<AgentProtocol>,
    /// Default model, `provider/model`; a session template's effort may pick another.
    #[serde(default)]
    pub model: Option<String>,
    /// Model for titles and summaries, `provider/model` (default: `model`).
    #[serde(default)]
    pub small_model: Option<String>,
    /// Providers beyond the agent's built-in ones, by id (e.g. an OpenAI-compatible server).
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// MCP servers, by name.
    #[serde(default)]
    pub mcp: BTreeMap<String, McpServer>,
    /// Extra instructions (Markdown) the agent follows besides the repo's own AGENTS.md.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Workspace env secrets the agent may read: secret name → env var in the agent's
    /// environment. Only the agent's process gets them.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Plain (not secret) environment variables for the agent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Push task branches to the repo's origin at the end of every turn (the host-side
    /// mirror keeps them either way).
    #[serde(default)]
    pub push: Option<PushConfig>,
    /// Start the agent once while the workspace's prebuild is built (without secrets),
    /// so that what its first start costs — OpenCode's instance bootstrap, plugin
    /// installs, caches — is captured in the prebuild instead of paid by every task.
    #[serde(default)]
    pub warm: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// `opencode serve` (pinned `opencode-ai@1.18.33`).
    #[default]
    Opencode,
    /// Claude Code (`claude -p` with stream-json), run under `atelier-stdio-host`.
    Claude,
    /// Any Agent Client Protocol agent (`command`), run under `atelier-stdio-host`.
    Acp,
    /// OpenAI Codex (`codex app-server`, pinned `@openai/codex@0.169.0`), run under
    /// `atelier-stdio-host`.
    Codex,
    /// The scenario-driven fake agent, speaking `protocol`.
    Fake,
}

/// The wire protocol between the manager and an agent: which runtime adapter drives it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentProtocol {
    /// OpenCode's HTTP server.
    #[default]
    Opencode,
    /// Claude Code's stream-json over stdio.
    Claude,
    /// The Agent Client Protocol over stdio.
    Acp,
    /// Codex's app-server JSON-RPC over stdio.
    Codex,
}

impl AgentProtocol {
    /// The adapter's name, as the runtimes crate knows it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentProtocol::Opencode => "opencode",
            AgentProtocol::Claude => "claude",
            AgentProtocol::Acp => "acp",
            AgentProtocol::Codex => "codex",
        }
    }

    /// Whether the agent speaks over stdio (and so runs under the stdio host).
    pub fn is_stdio(self) -> bool {
        self != AgentProtocol::Opencode
    }
}

/// A model provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// AI SDK package (default `@ai-sdk/openai-compatible`, bundled with OpenCode).
    #[serde(default)]
    pub npm: Option<String>,
    /// Display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// API base URL, e.g. `http://127.0.0.1:8080/v1`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The env var holding the API key: one of those `secrets` gives the agent.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Keep the key on the host: the agent gets a placeholder key (in `api_key_env`)
    /// valid for its task only, and the manager's model proxy as `base_url`, which
    /// forwards to this provider's `base_url` alone with the real key swapped in and
    /// counts the tokens per task.
    #[serde(default)]
    pub proxy: bool,
    /// Models this provider serves, by id.
    #[serde(default)]
    pub models: BTreeMap<String, ProviderModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderModel {
    #[serde(default)]
    pub name: Option<String>,
    /// Context window, tokens.
    #[serde(default)]
    pub context: Option<u64>,
    /// Output limit, tokens.
    #[serde(default)]
    pub output: Option<u64>,
    /// USD per million input tokens.
    #[serde(default)]
    pub input_cost: Option<f64>,
    /// USD per million output tokens.
    #[serde(default)]
    pub output_cost: Option<f64>,
    #[serde(default = "yes")]
    pub tool_call: bool,
    #[serde(default)]
    pub reasoning: bool,
}

/// An MCP server the agent connects to. String values may name env vars of the agent as
/// `{env:NAME}` (e.g. a token from `secrets`), resolved by the agent, never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpServer {
    /// A process the agent starts: argv, extra environment.
    Local {
        command: Vec<String>,
        #[serde(default)]
        environment: BTreeMap<String, String>,
        #[serde(default = "yes")]
        enabled: bool,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// A server reached over HTTP.
    Remote {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default = "yes")]
        enabled: bool,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
}

/// Pushing task branches to origin, from the manager's host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Clone paths of the repos to push; empty: every repo of the workspace.
    #[serde(default)]
    pub repos: Vec<String>,
    /// Workspace env secret holding the password or token for an HTTP(S) origin.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// User name sent with the token (default `x-access-token`, what GitHub expects).
    #[serde(default)]
    pub username: Option<String>,
}

fn yes() -> bool {
    true
}

impl PushConfig {
    pub fn applies_to(&self, repo: &str) -> bool {
        self.repos.is_empty() || self.repos.iter().any(|r| r == repo)
    }

    pub fn username(&self) -> &str {
        self.username.as_deref().unwrap_or("x-access-token")
    }
}

impl AgentConfig {
    /// The workspace env secrets that are the keys of proxied providers. They stay on the
    /// host, where the model proxy swaps them in: neither the agent nor any command in the
    /// sandbox is given them.
    pub fn host_only_secrets(&self) -> BTreeSet<&str> {
        let proxied: BTreeSet<&str> = self
            .providers
            .values()
            .filter(|p| p.proxy)
            .filter_map(|p| p.api_key_env.as_deref())
            .collect();
        self.secrets
            .iter()
            .filter(|(_, var)| proxied.contains(var.as_str()))
            .map(|(secret, _)| secret.as_str())
            .collect()
    }

    /// Reads a stored or submitted `agent_config`, naming the first field it cannot read.
    pub fn from_value(value: &serde_json::Value) -> Result<AgentConfig, FieldError> {
        if !value.is_object() {
            return Err(FieldError::new(FIELD, "must be a JSON object"));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                FIELD.to_owned()
            } else {
                format!("{FIELD}.{path}")
            };
            FieldError::new(field, e.into_inner().to_string())
        })
    }

    /// The protocol the configured agent speaks.
    pub fn protocol(&self) -> AgentProtocol {
        match self.runtime {
            RuntimeKind::Opencode => AgentProtocol::Opencode,
            RuntimeKind::Claude => AgentProtocol::Claude,
            RuntimeKind::Acp => AgentProtocol::Acp,
            RuntimeKind::Codex => AgentProtocol::Codex,
            RuntimeKind::Fake => self.protocol.unwrap_or_default(),
        }
    }

    /// Every env var the agent gets from the workspace: exposed secrets and plain env.
    pub fn env_names(&self) -> BTreeSet<&str> {
        self.secrets
            .values()
            .chain(self.env.keys())
            .map(String::as_str)
            .collect()
    }

    /// Checks the config against itself and its workspace (its secrets and repos).
    pub fn validate(
        &self,
        secrets: &SecretsSpec,
        repos: &[RepoSpec],
        errors: &mut ValidationErrors,
    ) {
        let field = |f: &str| format!("{FIELD}.{f}");
        if let Some(b) = &self.binary {
            if b.trim().is_empty() || b.contains('\0') {
                errors.push(FieldError::new(
                    field("binary"),
                    "must be a path or a command name",
                ));
            }
        }
        match (self.runtime, &self.scenario) {
            (RuntimeKind::Fake, None) => errors.push(FieldError::new(
                field("scenario"),
                "the fake runtime needs a scenario (YAML)",
            )),
            (
                RuntimeKind::Opencode | RuntimeKind::Claude | RuntimeKind::Acp | RuntimeKind::Codex,
                Some(_),
            ) => errors.push(FieldError::new(
                field("scenario"),
                "only the fake runtime takes a scenario",
            )),
            _ => {}
        }
        if self.protocol.is_some() && self.runtime != RuntimeKind::Fake {
            errors.push(FieldError::new(
                field("protocol"),
                "only the fake runtime takes a protocol (the others speak their own)",
            ));
        }
        match (self.runtime, &self.command) {
            (RuntimeKind::Acp, None) => errors.push(FieldError::new(
                field("command"),
                "the acp runtime needs the agent's argv, e.g. [\"gemini\", \"--acp\"]",
            )),
            (RuntimeKind::Acp, Some(argv)) => {
                if argv.first().is_none_or(|c| c.trim().is_empty()) {
                    errors.push(FieldError::new(
                        field("command"),
                        "must name a program to run, e.g. [\"gemini\", \"--acp\"]",
                    ));
                } else if argv.iter().any(|a| a.contains('\0')) {
                    errors.push(FieldError::new(
                        field("command"),
                        "must not contain NUL bytes",
                    ));
                }
                if self.binary.is_some() {
                    errors.push(FieldError::new(
                        field("binary"),
                        "the acp runtime runs the first item of command",
                    ));
                }
            }
            (_, Some(_)) => errors.push(FieldError::new(
                field("command"),
                "only the acp runtime takes a command",
            )),
            (_, None) => {}
        }
        for (name, model) in [("model", &self.model), ("small_model", &self.small_model)] {
            if let Some(m) = model {
                if let Err(msg) = check_model_ref(m) {
                    errors.push(FieldError::new(field(name), msg));
                }
            }
        }
        let exposed = self.env_names();
        for (id, p) in &self.providers {
            let at = |f: &str| field(&format!("providers.{id}.{f}"));
            if !is_identifier(id) {
                errors.push(FieldError::new(
                    field(&format!("providers.{id}")),
                    "provider ids are 1–64 of a-z, 0-9, '.', '_' and '-'",
                ));
            }
            if let Some(npm) = &p.npm {
                if npm.is_empty() || npm.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    errors.push(FieldError::new(at("npm"), "must be an npm package name"));
                }
            }
            if let Some(url) = &p.base_url {
                if let Err(msg) = check_http_url(url) {
                    errors.push(FieldError::new(at("base_url"), msg));
                }
            } else if p.proxy {
                errors.push(FieldError::new(
                    at("base_url"),
                    "a proxied provider needs the base URL the proxy forwards to",
                ));
            }
            if p.proxy && p.api_key_env.is_none() {
                errors.push(FieldError::new(
                    at("api_key_env"),
                    "a proxied provider needs the env var its placeholder key goes in",
                ));
            }
            if let Some(var) = &p.api_key_env {
                if !exposed.contains(var.as_str()) {
                    errors.push(FieldError::new(
                        at("api_key_env"),
                        format!(
                            "{var:?} is not given to the agent: expose a secret as {var} in agent_config.secrets"
                        ),
                    ));
                }
            }
            for (model, m) in &p.models {
                if model.is_empty() || model.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    errors.push(FieldError::new(
                        at(&format!("models.{model}")),
                        "model ids must not be empty or contain whitespace",
                    ));
                }
                for (name, v) in [("context", m.context), ("output", m.output)] {
                    if v == Some(0) {
                        errors.push(FieldError::new(
                            at(&format!("models.{model}.{name}")),
                            "must be at least 1",
                        ));
                    }
                }
                for (name, v) in [("input_cost", m.input_cost), ("output_cost", m.output_cost)] {
                    if v.is_some_and(|c| !c.is_finite() || c < 0.0) {
                        errors.push(FieldError::new(
                            at(&format!("models.{model}.{name}")),
                            "must be a non-negative number",
                        ));
                    }
                }
            }
        }
        for (name, server) in &self.mcp {
            let at = |f: &str| field(&format!("mcp.{name}.{f}"));
            if !is_identifier(&name.to_ascii_lowercase()) {
                errors.push(FieldError::new(
                    field(&format!("mcp.{name}")),
                    "MCP server names are 1–64 of letters, digits, '.', '_' and '-'",
                ));
            }
            match server {
                McpServer::Local {
                    command,
                    environment,
                    ..
                } => {
                    if command.first().is_none_or(|c| c.trim().is_empty()) {
                        errors.push(FieldError::new(at("command"), "must name a program to run"));
                    }
                    for k in environment.keys() {
                        if !crate::workspace::is_env_name(k) {
                            errors.push(FieldError::new(
                                at(&format!("environment.{k}")),
                                "must be an env var name",
                            ));
                        }
                    }
                }
                McpServer::Remote { url, .. } => {
                    if let Err(msg) = check_http_url(url) {
                        errors.push(FieldError::new(at("url"), msg));
                    }
                }
            }
        }
        if self
            .instructions
            .as_ref()
            .is_some_and(|i| i.len() > MAX_INSTRUCTIONS)
        {
            errors.push(FieldError::new(
                field("instructions"),
                "must be at most 64 KiB",
            ));
        }
        let known: BTreeSet<&str> = secrets.env.iter().map(|s| s.name.as_str()).collect();
        let mut targets = BTreeSet::new();
        for (secret, var) in &self.secrets {
            let at = field(&format!("secrets.{secret}"));
            if !known.contains(secret.as_str()) {
                errors.push(FieldError::new(
                    at.clone(),
                    format!("the workspace has no env secret {secret:?}"),
                ));
            }
            if let Err(msg) = check_agent_env_name(var) {
                errors.push(FieldError::new(at, msg));
            } else if !targets.insert(var.as_str()) {
                errors.push(FieldError::new(at, format!("{var} is given twice")));
            }
        }
        for (var, value) in &self.env {
            let at = field(&format!("env.{var}"));
            if let Err(msg) = check_agent_env_name(var) {
                errors.push(FieldError::new(at, msg));
            } else if !targets.insert(var.as_str()) {
                errors.push(FieldError::new(at, format!("{var} is also a secret")));
            } else if value.len() > MAX_ENV_VALUE || value.contains('\0') {
                errors.push(FieldError::new(
                    at,
                    "must be at most 32 KiB, without NUL bytes",
                ));
            }
        }
        if let Some(push) = &self.push {
            let paths: BTreeSet<String> = repos.iter().map(RepoSpec::clone_path).collect();
            for (i, r) in push.repos.iter().enumerate() {
                if !paths.contains(r) {
                    errors.push(FieldError::new(
                        field(&format!("push.repos[{i}]")),
                        format!("the workspace has no repo at {r:?}"),
                    ));
                }
            }
            if let Some(s) = &push.token_secret {
                if !known.contains(s.as_str()) {
                    errors.push(FieldError::new(
                        field("push.token_secret"),
                        format!("the workspace has no env secret {s:?}"),
                    ));
                }
            }
            if let Some(u) = &push.username {
                if u.is_empty() || u.chars().any(|c| c.is_control() || c == ':') {
                    errors.push(FieldError::new(
                        field("push.username"),
                        "must be a user name without ':' or control characters",
                    ));
                }
            }
        }
    }
}

/// Validates the `agent_config` of a workspace spec into `errors`.
pub fn validate_in(
    value: &serde_json::Value,
    secrets: &SecretsSpec,
    repos: &[RepoSpec],
    errors: &mut ValidationErrors,
) {
    match AgentConfig::from_value(value) {
        Ok(cfg) => cfg.validate(secrets, repos, errors),
        Err(e) => errors.push(e),
    }
}

/// `provider/model`, both parts non-empty.
pub fn check_model_ref(m: &str) -> Result<(), &'static str> {
    match m.split_once('/') {
        Some((p, model))
            if !p.is_empty()
                && !model.is_empty()
                && !m.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        _ => Err("must be provider/model, e.g. anthropic/claude-sonnet-4-5"),
    }
}

fn check_agent_env_name(var: &str) -> Result<(), String> {
    if !crate::workspace::is_env_name(var) {
        return Err("must be an env var name ([A-Za-z_][A-Za-z0-9_]*)".into());
    }
    if RESERVED_ENV.contains(&var) || var.starts_with("ATELIER_") {
        return Err(format!("{var} is set by Atelier itself"));
    }
    Ok(())
}

fn check_http_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must be an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be a URL with a host and no whitespace");
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::EnvSecret;
    use serde_json::json;

    fn secrets() -> SecretsSpec {
        SecretsSpec {
            env: vec![EnvSecret {
                name: "MODEL_KEY".into(),
                value: "sk-1".into(),
            }],
            files: vec![],
        }
    }

    fn repos() -> Vec<RepoSpec> {
        vec![RepoSpec {
            url: "https://example.com/a/app.git".into(),
            branch: "main".into(),
            path: None,
        }]
    }

    fn fields(v: serde_json::Value) -> Vec<String> {
        let mut errors = ValidationErrors::default();
        validate_in(&v, &secrets(), &repos(), &mut errors);
        errors.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn a_proxied_provider_needs_the_url_it_forwards_to_and_a_key_var() {
        assert_eq!(
            fields(json!({"providers": {"p": {"proxy": true}}})),
            [
                "agent_config.providers.p.base_url",
                "agent_config.providers.p.api_key_env"
            ]
        );
        assert!(fields(json!({
            "providers": {"p": {"proxy": true, "base_url": "http://127.0.0.1:9/v1",
                                "api_key_env": "MODEL_KEY"}},
            "secrets": {"MODEL_KEY": "MODEL_KEY"}
        }))
        .is_empty());
    }

    #[test]
    fn a_full_config_is_read() {
        let v = json!({
            "model": "local/m",
            "providers": {"local": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "LOCAL_KEY",
                "models": {"m": {"context": 1000, "output": 100, "input_cost": 1.5}}}},
            "mcp": {"docs": {"type": "remote", "url": "https://mcp.example.com", "headers": {"Authorization": "Bearer {env:LOCAL_KEY}"}},
                    "fs": {"type": "local", "command": ["npx", "fs-mcp"]}},
            "instructions": "Keep commits small.",
            "secrets": {"MODEL_KEY": "LOCAL_KEY"},
            "env": {"NODE_OPTIONS": "--max-old-space-size=2048"},
            "push": {"repos": ["app"], "token_secret": "MODEL_KEY"}
        });
        assert_eq!(fields(v.clone()), Vec::<String>::new());
        let cfg = AgentConfig::from_value(&v).unwrap();
        assert_eq!(cfg.runtime, RuntimeKind::Opencode);
        assert!(cfg.providers["local"].models["m"].tool_call);
        assert!(matches!(
            cfg.mcp["fs"],
            McpServer::Local { enabled: true, .. }
        ));
        assert_eq!(
            cfg.push.as_ref().map(|p| p.username()),
            Some("x-access-token")
        );
        assert!(cfg
            .push
            .as_ref()
            .is_some_and(|p| p.applies_to("app") && !p.applies_to("other")));
        assert_eq!(fields(json!({})), Vec::<String>::new());
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(fields(json!([1])), ["agent_config"]);
        assert_eq!(fields(json!({"modle": "a/b"})), ["agent_config.modle"]);
        assert_eq!(
            fields(json!({"runtime": "aider"})),
            ["agent_config.runtime"]
        );
        assert_eq!(
            fields(json!({"runtime": "acp", "command": "gemini --acp"})),
            ["agent_config.command"]
        );
        assert_eq!(
            fields(json!({"providers": {"p": {"base_url": 5}}})),
            ["agent_config.providers.p.base_url"]
        );
        assert_eq!(
            fields(json!({"mcp": {"x": {"type": "local", "command": ["a"], "bogus": 1}}})),
            ["agent_config.mcp.x"]
        );
        assert_eq!(
            fields(json!({
                "runtime": "fake",
                "model": "nomodel",
                "providers": {"P!": {"base_url": "ftp://x", "api_key_env": "NOPE",
                    "models": {"m": {"context": 0}}}},
                "mcp": {"a": {"type": "local", "command": []}, "b": {"type": "remote", "url": "x"}},
                "secrets": {"MISSING": "KEY", "MODEL_KEY": "OPENCODE_CONFIG"},
                "env": {"1BAD": "x"},
                "push": {"repos": ["nope"], "token_secret": "ALSO_MISSING", "username": "a:b"}
            })),
            [
                "agent_config.scenario",
                "agent_config.model",
                "agent_config.providers.P!",
                "agent_config.providers.P!.base_url",
                "agent_config.providers.P!.api_key_env",
                "agent_config.providers.P!.models.m.context",
                "agent_config.mcp.a.command",
                "agent_config.mcp.b.url",
                "agent_config.secrets.MISSING",
                "agent_config.secrets.MODEL_KEY",
                "agent_config.env.1BAD",
                "agent_config.push.repos[0]",
                "agent_config.push.token_secret",
                "agent_config.push.username",
            ]
        );
    }

    #[test]
    fn the_keys_of_proxied_providers_stay_on_the_host() {
        let cfg = AgentConfig::from_value(&json!({
            "providers": {
                "near": {"base_url": "http://127.0.0.1:1/v1", "api_key_env": "NEAR_KEY",
                         "proxy": true},
                "far": {"base_url": "http://127.0.0.1:2/v1", "api_key_env": "FAR_KEY"}
            },
            "secrets": {"MODEL_KEY": "NEAR_KEY", "OTHER_KEY": "FAR_KEY", "GH": "GH_TOKEN"}
        }))
        .unwrap();
        assert_eq!(cfg.host_only_secrets(), BTreeSet::from(["MODEL_KEY"]));
    }

    #[test]
    fn runtimes_pick_a_protocol_and_take_only_their_own_settings() {
        let protocol = |v: serde_json::Value| AgentConfig::from_value(&v).unwrap().protocol();
        assert_eq!(protocol(json!({})), AgentProtocol::Opencode);
        assert_eq!(
            protocol(json!({"runtime": "claude"})),
            AgentProtocol::Claude
        );
        assert_eq!(
            protocol(json!({"runtime": "acp", "command": ["gemini", "--acp"]})),
            AgentProtocol::Acp
        );
        assert_eq!(
            protocol(json!({"runtime": "fake", "scenario": "steps: []"})),
            AgentProtocol::Opencode
        );
        assert_eq!(
            protocol(json!({"runtime": "fake", "scenario": "s", "protocol": "acp"})),
            AgentProtocol::Acp
        );
        assert_eq!(
            protocol(json!({"runtime": "codex", "model": "openai/gpt-5.1-codex"})),
            AgentProtocol::Codex
        );
        assert_eq!(
            protocol(json!({"runtime": "fake", "scenario": "s", "protocol": "codex"})),
            AgentProtocol::Codex
        );
        assert!(AgentProtocol::Codex.is_stdio());
        assert!(AgentProtocol::Claude.is_stdio() && !AgentProtocol::Opencode.is_stdio());

        for ok in [
            json!({"runtime": "claude", "model": "anthropic/claude-sonnet-4-5"}),
            json!({"runtime": "claude", "binary": "/opt/claude/bin/claude"}),
            json!({"runtime": "acp", "command": ["opencode", "acp"]}),
            json!({"runtime": "fake", "scenario": "s", "protocol": "claude"}),
            json!({"runtime": "codex"}),
            json!({"runtime": "codex", "binary": "/opt/codex/bin/codex"}),
        ] {
            assert_eq!(fields(ok.clone()), Vec::<String>::new(), "{ok}");
        }
        for (bad, field) in [
            (json!({"runtime": "acp"}), "agent_config.command"),
            (
                json!({"runtime": "acp", "command": []}),
                "agent_config.command",
            ),
            (
                json!({"runtime": "acp", "command": [" "]}),
                "agent_config.command",
            ),
            (
                json!({"runtime": "acp", "command": [1]}),
                "agent_config.command[0]",
            ),
            (
                json!({"runtime": "acp", "command": ["qwen", "--acp"], "binary": "q"}),
                "agent_config.binary",
            ),
            (
                json!({"runtime": "claude", "command": ["x"]}),
                "agent_config.command",
            ),
            (json!({"command": ["x"]}), "agent_config.command"),
            (
                json!({"runtime": "claude", "protocol": "acp"}),
                "agent_config.protocol",
            ),
            (
                json!({"runtime": "fake", "scenario": "s", "protocol": "gemini"}),
                "agent_config.protocol",
            ),
            (
                json!({"runtime": "codex", "command": ["codex", "app-server"]}),
                "agent_config.command",
            ),
            (
                json!({"runtime": "codex", "protocol": "codex"}),
                "agent_config.protocol",
            ),
            (
                json!({"runtime": "codex", "scenario": "s"}),
                "agent_config.scenario",
            ),
            (
                json!({"runtime": "claude", "scenario": "s"}),
                "agent_config.scenario",
            ),
        ] {
            assert_eq!(fields(bad.clone()), [field], "{bad}");
        }
    }

    #[test]
    fn model_refs_name_a_provider() {
        assert!(check_model_ref("anthropic/claude-sonnet-4-5").is_ok());
        assert!(check_model_ref("openrouter/meta/llama").is_ok());
        for bad in ["", "x", "/m", "p/", "p/ m"] {
            assert!(check_model_ref(bad).is_err(), "{bad}");
        }
    }
}
