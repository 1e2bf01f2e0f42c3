//! Workspaces: the recipe every sandbox of a project is made from.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::sandbox::Resources;
use crate::validate::{FieldError, ValidationErrors};

/// Everything a user sends to create a workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// Unique, human-readable name.
    #[schema(example = "atelier")]
    pub name: String,
    #[serde(default)]
    pub repos: Vec<RepoSpec>,
    /// Shell commands run once, in order, when a sandbox (or prebuild) is set up.
    #[serde(default)]
    pub init_commands: Vec<String>,
    /// Long-running dev servers, each reachable on its port.
    #[serde(default)]
    pub dev_commands: Vec<DevCommand>,
    /// Secrets; write-only: they are never returned, only their names and a masked preview.
    #[serde(default)]
    pub secrets: SecretsSpec,
    #[serde(default)]
    pub resources: Resources,
    /// Base image sandboxes boot from.
    #[serde(default = "default_base_image")]
    #[schema(example = "dev")]
    pub base_image: String,
    /// The workspace's own image: `base_image` with more packages, npm packages and
    /// build steps (sandboxes then boot `<base>-ext-<hash>`, built on first use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::image::ImageExtension>,
    /// Coding-agent configuration: runtime, model and providers, MCP servers, instructions,
    /// exposed secrets, push to origin (see `agent_config::AgentConfig`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub agent_config: serde_json::Value,
    /// How the workspace's prebuild is kept fresh.
    #[serde(default)]
    pub prebuild: crate::prebuild::PrebuildSettings,
    /// What its sandboxes may reach: egress policy and host services.
    #[serde(default)]
    pub network: crate::network::NetworkSpec,
}

/// A partial update: every field present replaces the stored one; secrets are merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    pub name: Option<String>,
    pub repos: Option<Vec<RepoSpec>>,
    pub init_commands: Option<Vec<String>>,
    pub dev_commands: Option<Vec<DevCommand>>,
    /// Secrets to add or overwrite (by env name or file path).
    pub secrets: Option<SecretsSpec>,
    /// Names of env secrets or paths of file secrets to remove.
    pub remove_secrets: Option<Vec<String>>,
    pub resources: Option<Resources>,
    pub base_image: Option<String>,
    /// Replaces the image extension; `{"base": "dev"}` (nothing added) removes it.
    pub image: Option<crate::image::ImageExtension>,
    #[schema(value_type = Option<Object>)]
    pub agent_config: Option<serde_json::Value>,
    pub prebuild: Option<crate::prebuild::PrebuildSettings>,
    pub network: Option<crate::network::NetworkSpec>,
}

/// A git repository cloned into every sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// Clone URL: https, http, ssh, git, file, or `user@host:path`.
    #[schema(example = "https://github.com/example/app.git")]
    pub url: String,
    #[serde(default = "default_branch")]
    #[schema(example = "main")]
    pub branch: String,
    /// Where to clone, relative to the sandbox's work directory; defaults to the repo name.
    #[serde(default)]
    pub path: Option<String>,
}

/// A named dev server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevCommand {
    #[schema(example = "web")]
    pub name: String,
    #[schema(example = "npm run dev")]
    pub command: String,
    #[schema(example = 5173)]
    pub port: u16,
    /// Whether the port's preview opens without signing in (default: only with the token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
}

/// Secret values, as sent by the user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretsSpec {
    #[serde(default)]
    pub env: Vec<EnvSecret>,
    #[serde(default)]
    pub files: Vec<FileSecret>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSecret {
    #[schema(example = "OPENAI_API_KEY")]
    pub name: String,
    pub value: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSecret {
    /// Absolute path in the sandbox, or `~/…` for the dev user's home.
    #[schema(example = "~/.config/gh/hosts.yml")]
    pub path: String,
    pub content: String,
    /// Octal permission bits, e.g. 384 (0600).
    #[serde(default = "default_secret_mode")]
    pub mode: u32,
}

// Secrets must never reach logs, not even through `{:?}`.
impl std::fmt::Debug for EnvSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSecret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}
impl std::fmt::Debug for FileSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSecret")
            .field("path", &self.path)
            .field("content", &"<redacted>")
            .field("mode", &self.mode)
            .finish()
    }
}

/// How a stored secret is shown: its name and a masked preview, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretView {
    pub kind: SecretKind,
    /// Env var name, or file path for file secrets.
    pub name: String,
    #[schema(example = "••••f3a9")]
    pub preview: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    Env,
    File,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::File => "file",
        }
    }
}

pub const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// A preview that reveals at most the last four characters, and only of long values.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() >= 16 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("••••{tail}")
    } else {
        "••••".to_owned()
    }
}

fn default_base_image() -> String {
    "dev".to_owned()
}
fn default_branch() -> String {
    "main".to_owned()
}
fn default_secret_mode() -> u32 {
    0o600
}
fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl WorkspaceSpec {
    /// Checks every field, collecting all problems at once.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        validate_workspace_name(&self.name, &mut errors);
        validate_repos(&self.repos, &mut errors);
        validate_commands("init_commands", &self.init_commands, &mut errors);
        validate_dev_commands(&self.dev_commands, &mut errors);
        self.secrets.validate("secrets", &mut errors);
        self.resources.validate("resources", &mut errors);
        validate_image("base_image", &self.base_image, &mut errors);
        if let Some(image) = &self.image {
            image.validate("image", &mut errors);
            if image.base != self.base_image {
                errors.push(FieldError::new(
                    "image.base",
                    format!("differs from base_image {:?}", self.base_image),
                ));
            }
        }
        self.network.validate("network", &mut errors);
        crate::agent_config::validate_in(
            &self.agent_config,
            &self.secrets,
            &self.repos,
            &mut errors,
        );
        errors.finish()
    }

    /// The image its sandboxes boot: the extension's build, else `base_image`.
    pub fn image_name(&self) -> String {
        match &self.image {
            Some(image) => image.image_name(),
            None => self.base_image.clone(),
        }
    }

    /// Applies a patch; the caller validates the result.
    pub fn apply(&mut self, patch: WorkspacePatch) {
        let WorkspacePatch {
            name,
            repos,
            init_commands,
            dev_commands,
            secrets,
            remove_secrets,
            resources,
            base_image,
            image,
            agent_config,
            prebuild,
            network,
        } = patch;
        if let Some(v) = image {
            self.image = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = network {
            self.network = v;
        }
        if let Some(v) = name {
            self.name = v;
        }
        if let Some(v) = repos {
            self.repos = v;
        }
        if let Some(v) = init_commands {
            self.init_commands = v;
        }
        if let Some(v) = dev_commands {
            self.dev_commands = v;
        }
        if let Some(v) = resources {
            self.resources = v;
        }
        if let Some(v) = base_image {
            self.base_image = v;
        }
        if let Some(v) = agent_config {
            self.agent_config = v;
        }
        if let Some(v) = prebuild {
            self.prebuild = v;
        }
        if let Some(remove) = remove_secrets {
            self.secrets.env.retain(|s| !remove.contains(&s.name));
            self.secrets.files.retain(|s| !remove.contains(&s.path));
        }
        if let Some(add) = secrets {
            for s in add.env {
                self.secrets.env.retain(|old| old.name != s.name);
                self.secrets.env.push(s);
            }
            for s in add.files {
                self.secrets.files.retain(|old| old.path != s.path);
                self.secrets.files.push(s);
            }
        }
    }
}

impl RepoSpec {
    /// The clone directory: the given path, or the last URL segment without `.git`.
    pub fn clone_path(&self) -> String {
        if let Some(p) = &self.path {
            return p.clone();
        }
        let tail = self
            .url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("repo");
        let name = tail.strip_suffix(".git").unwrap_or(tail);
        if name.is_empty() {
            "repo".to_owned()
        } else {
            name.to_owned()
        }
    }
}

impl SecretsSpec {
    pub fn validate(&self, prefix: &str, errors: &mut ValidationErrors) {
        let mut seen = BTreeSet::new();
        for (i, s) in self.env.iter().enumerate() {
            let field = format!("{prefix}.env[{i}].name");
            if !is_env_name(&s.name) {
                errors.push(FieldError::new(
                    field,
                    "must match [A-Za-z_][A-Za-z0-9_]* (at most 128 characters)",
                ));
            } else if !seen.insert(s.name.clone()) {
                errors.push(FieldError::new(
                    field,
                    format!("duplicate secret {:?}", s.name),
                ));
            }
            if s.value.len() > MAX_SECRET_BYTES {
                errors.push(FieldError::new(
                    format!("{prefix}.env[{i}].value"),
                    "must be at most 1 MiB",
                ));
            }
        }
        let mut paths = BTreeSet::new();
        for (i, s) in self.files.iter().enumerate() {
            let field = format!("{prefix}.files[{i}].path");
            if let Err(msg) = check_guest_path(&s.path) {
                errors.push(FieldError::new(field, msg));
            } else if !paths.insert(s.path.clone()) {
                errors.push(FieldError::new(
                    field,
                    format!("duplicate file secret {:?}", s.path),
                ));
            }
            if s.content.len() > MAX_SECRET_BYTES {
                errors.push(FieldError::new(
                    format!("{prefix}.files[{i}].content"),
                    "must be at most 1 MiB",
                ));
            }
            if s.mode > 0o777 {
                errors.push(FieldError::new(
                    format!("{prefix}.files[{i}].mode"),
                    "must be permission bits (at most 0o777 = 511)",
                ));
            }
        }
    }
}

pub fn validate_workspace_name(name: &str, errors: &mut ValidationErrors) {
    if name.trim().is_empty() {
        errors.push(FieldError::new("name", "must not be empty"));
    } else if name.chars().count() > 64 {
        errors.push(FieldError::new("name", "must be at most 64 characters"));
    } else if name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "name",
            "must not contain control characters",
        ));
    }
}

fn validate_repos(repos: &[RepoSpec], errors: &mut ValidationErrors) {
    let mut paths = BTreeSet::new();
    for (i, r) in repos.iter().enumerate() {
        if let Err(msg) = check_git_url(&r.url) {
            errors.push(FieldError::new(format!("repos[{i}].url"), msg));
        }
        if let Err(msg) = check_branch(&r.branch) {
            errors.push(FieldError::new(format!("repos[{i}].branch"), msg));
        }
        if let Some(p) = &r.path {
            if let Err(msg) = check_relative_path(p) {
                errors.push(FieldError::new(format!("repos[{i}].path"), msg));
                continue;
            }
        }
        if !paths.insert(r.clone_path()) {
            errors.push(FieldError::new(
                format!("repos[{i}].path"),
                "two repos would be cloned into the same directory",
            ));
        }
    }
}

fn validate_commands(field: &str, commands: &[String], errors: &mut ValidationErrors) {
    for (i, c) in commands.iter().enumerate() {
        if c.trim().is_empty() {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                "must not be empty",
            ));
        }
    }
}

fn validate_dev_commands(commands: &[DevCommand], errors: &mut ValidationErrors) {
    let mut names = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for (i, d) in commands.iter().enumerate() {
        crate::sandbox::validate_name(&format!("dev_commands[{i}].name"), &d.name, errors);
        if !names.insert(d.name.as_str()) {
            errors.push(FieldError::new(
                format!("dev_commands[{i}].name"),
                "duplicate name",
            ));
        }
        if d.command.trim().is_empty() {
            errors.push(FieldError::new(
                format!("dev_commands[{i}].command"),
                "must not be empty",
            ));
        }
        if d.port == 0 {
            errors.push(FieldError::new(
                format!("dev_commands[{i}].port"),
                "must be between 1 and 65535",
            ));
        } else if !ports.insert(d.port) {
            errors.push(FieldError::new(
                format!("dev_commands[{i}].port"),
                "duplicate port",
            ));
        }
    }
}

pub fn validate_image(field: &str, image: &str, errors: &mut ValidationErrors) {
    let ok = !image.is_empty()
        && image.len() <= 64
        && image
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && image
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !ok {
        errors.push(FieldError::new(
            field,
            "must be an image name: lowercase letters, digits, '.', '_', '-'",
        ));
    }
}

pub(crate) fn is_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Accepts the URL forms git itself clones from, and nothing that could be read as an option.
pub fn check_git_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Err("must not be empty");
    }
    if url.starts_with('-') {
        return Err("must not start with '-'");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
            return Err("scheme must be https, http, ssh, git or file");
        }
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if scheme == "file" {
            return if rest.starts_with('/') && rest.len() > 1 {
                Ok(())
            } else {
                Err("file URLs need an absolute path")
            };
        }
        if host.is_empty() || host.rsplit('@').next().is_none_or(str::is_empty) {
            return Err("must name a host");
        }
        if path.trim_matches('/').is_empty() {
            return Err("must name a repository path");
        }
        return Ok(());
    }
    // scp-like syntax: [user@]host:path
    match url.split_once(':') {
        Some((host, path)) if !host.is_empty() && !host.contains('/') && !path.is_empty() => Ok(()),
        _ => Err("must be a URL (https://host/owner/repo.git) or user@host:path"),
    }
}

/// A subset of `git check-ref-format` rules, enough to keep branch names safe to pass around.
pub fn check_branch(branch: &str) -> Result<(), &'static str> {
    let bad = branch.is_empty()
        || branch.len() > 200
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("@{")
        || branch.contains("//")
        || branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err("must be a valid git branch name")
    } else {
        Ok(())
    }
}

fn check_relative_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("must not be empty");
    }
    if p.starts_with('/') {
        return Err("must be relative");
    }
    if p.split('/').any(|c| c == ".." || c == "." || c.is_empty())
        || p.chars().any(char::is_control)
    {
        return Err("must be a plain relative path without '.', '..' or empty components");
    }
    Ok(())
}

fn check_guest_path(p: &str) -> Result<(), &'static str> {
    let rest = if let Some(rest) = p.strip_prefix("~/") {
        rest
    } else if let Some(rest) = p.strip_prefix('/') {
        rest
    } else {
        return Err("must be absolute or start with ~/");
    };
    check_relative_path(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkspaceSpec {
        serde_json::from_value(serde_json::json!({"name": "demo"})).unwrap()
    }

    fn fields(r: Result<(), ValidationErrors>) -> Vec<String> {
        r.err()
            .map(|e| e.iter().map(|f| f.field.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn defaults_are_valid() {
        let s = spec();
        assert_eq!(s.base_image, "dev");
        assert_eq!(s.resources, Resources::default());
        assert!(s.validate().is_ok());
    }

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/a/b.git",
            "http://host:8080/r",
            "ssh://git@host/a/b",
            "git@github.com:a/b.git",
            "file:///srv/git/r.git",
        ] {
            assert!(check_git_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-uhttps://x/y",
            "ftp://h/r",
            "https://",
            "https://host",
            "not a url",
            "justaword",
            "file://rel",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branches() {
        for ok in ["main", "feature/x", "atelier/fix-1"] {
            assert!(check_branch(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a b", "x.lock", "a~1", "/a", "a/"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_invalid_field_is_named() {
        let mut s = spec();
        s.name = " ".into();
        s.repos = vec![RepoSpec {
            url: "nope".into(),
            branch: "a..b".into(),
            path: Some("../x".into()),
        }];
        s.init_commands = vec!["".into()];
        s.dev_commands = vec![
            DevCommand {
                name: "web".into(),
                command: "x".into(),
                port: 80,
                public: false,
            },
            DevCommand {
                name: "web".into(),
                command: "".into(),
                port: 80,
                public: true,
            },
        ];
        s.secrets.env = vec![EnvSecret {
            name: "1BAD".into(),
            value: "v".into(),
        }];
        s.secrets.files = vec![FileSecret {
            path: "rel".into(),
            content: "c".into(),
            mode: 0o1777,
        }];
        s.resources.vcpus = 0;
        s.base_image = "Bad Image".into();
        s.image = Some(crate::image::ImageExtension {
            base: "dev".into(),
            packages: vec!["Bad".into()],
            npm: vec![],
            run: vec![],
        });
        s.agent_config = serde_json::json!([1]);
        assert_eq!(
            fields(s.validate()),
            [
                "name",
                "repos[0].url",
                "repos[0].branch",
                "repos[0].path",
                "init_commands[0]",
                "dev_commands[1].name",
                "dev_commands[1].command",
                "dev_commands[1].port",
                "secrets.env[0].name",
                "secrets.files[0].path",
                "secrets.files[0].mode",
                "resources.vcpus",
                "base_image",
                "image.packages[0]",
                "image.base",
                "agent_config",
            ]
        );
    }

    #[test]
    fn clone_paths_default_to_the_repo_name() {
        let r = |url: &str| {
            RepoSpec {
                url: url.into(),
                branch: "main".into(),
                path: None,
            }
            .clone_path()
        };
        assert_eq!(r("https://github.com/a/app.git"), "app");
        assert_eq!(r("git@host:team/tool"), "tool");
        let mut s = spec();
        s.repos = vec![
            RepoSpec {
                url: "https://h/a/app.git".into(),
                branch: "main".into(),
                path: None,
            },
            RepoSpec {
                url: "https://h/b/app".into(),
                branch: "main".into(),
                path: None,
            },
        ];
        assert_eq!(fields(s.validate()), ["repos[1].path"]);
    }

    #[test]
    fn patches_merge_secrets_and_replace_the_rest() {
        let mut s = spec();
        s.secrets.env = vec![
            EnvSecret {
                name: "A".into(),
                value: "1".into(),
            },
            EnvSecret {
                name: "B".into(),
                value: "2".into(),
            },
        ];
        s.apply(WorkspacePatch {
            name: Some("renamed".into()),
            secrets: Some(SecretsSpec {
                env: vec![EnvSecret {
                    name: "A".into(),
                    value: "9".into(),
                }],
                files: vec![],
            }),
            remove_secrets: Some(vec!["B".into()]),
            ..Default::default()
        });
        assert_eq!(s.name, "renamed");
        assert_eq!(s.secrets.env.len(), 1);
        assert_eq!(s.secrets.env[0].value, "9");
    }

    #[test]
    fn masks_never_show_short_values_and_debug_hides_secrets() {
        assert_eq!(mask("short"), "••••");
        assert_eq!(mask("sk-0123456789abcdef"), "••••cdef");
        let dbg = format!(
            "{:?}",
            EnvSecret {
                name: "K".into(),
                value: "hunter2".into()
            }
        );
        assert!(!dbg.contains("hunter2"));
    }
}

/// A stored workspace as the API shows it: secrets reduced to names and previews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workspace {
    pub id: crate::WorkspaceId,
    pub name: String,
    pub repos: Vec<RepoSpec>,
    pub init_commands: Vec<String>,
    pub dev_commands: Vec<DevCommand>,
    pub secrets: Vec<SecretView>,
    pub resources: Resources,
    pub base_image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::image::ImageExtension>,
    /// The image its sandboxes boot (`base_image`, or the extension's `<base>-ext-<hash>`).
    pub image_name: String,
    #[schema(value_type = Object)]
    pub agent_config: serde_json::Value,
    pub prebuild: crate::prebuild::PrebuildSettings,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}
