use std::process::ExitCode;

use atelier_core::workspace::{DevCommand, EnvSecret, FileSecret, RepoSpec, SecretsSpec};
use atelier_core::{Workspace, WorkspacePatch};
use clap::{Args, Subcommand};
use reqwest::Method;

use crate::client::{Client, ClientError};
use crate::output::{age, Output};

#[derive(Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    Create(CreateArgs),
    /// List workspaces.
    #[command(alias = "ls")]
    List,
    /// Show one workspace (by id or name).
    Show { workspace: String },
    /// Change a workspace: given list flags replace the whole list; secrets are merged.
    Edit {
        workspace: String,
        #[command(flatten)]
        fields: Fields,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// Remove a secret (env name or file path); repeatable.
        #[arg(long = "remove-secret", value_name = "NAME")]
        remove_secrets: Vec<String>,
    },
    /// Delete a workspace (refused while it has sandboxes).
    #[command(alias = "rm")]
    Delete { workspace: String },
}

#[derive(Args)]
pub struct CreateArgs {
    /// Workspace name.
    #[arg(long, required_unless_present = "from")]
    name: Option<String>,
    /// Start from a JSON spec file (flags override its fields).
    #[arg(long, value_name = "FILE")]
    from: Option<std::path::PathBuf>,
    #[command(flatten)]
    fields: Fields,
}

#[derive(Args, Default)]
pub struct Fields {
    /// Git repository: URL[#BRANCH[:PATH]]; repeatable.
    #[arg(long = "repo", value_name = "URL[#BRANCH[:PATH]]")]
    repos: Vec<String>,
    /// Init command run when a sandbox is set up; repeatable, in order.
    #[arg(long = "init", value_name = "COMMAND")]
    init: Vec<String>,
    /// Dev server: NAME:PORT:COMMAND; repeatable.
    #[arg(long = "dev", value_name = "NAME:PORT:COMMAND")]
    dev: Vec<String>,
    /// A dev port whose preview opens without signing in (repeatable).
    #[arg(long = "public", value_name = "PORT")]
    public: Vec<u16>,
    /// Secret env var: NAME=VALUE (or NAME to read the value from your environment); repeatable.
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// Secret file: GUEST_PATH=LOCAL_FILE; repeatable.
    #[arg(long = "secret-file", value_name = "GUEST_PATH=LOCAL_FILE")]
    secret_files: Vec<String>,
    /// vCPUs (1–8).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB (512–16384).
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Disk in MiB.
    #[arg(long, value_name = "MIB")]
    disk: Option<u32>,
    /// Base image.
    #[arg(long)]
    image: Option<String>,
    /// A Debian package the workspace's image adds to its base; repeatable. Any of the
    /// `--image-*` flags replaces the whole extension.
    #[arg(long = "image-package", value_name = "NAME[=VERSION]")]
    image_packages: Vec<String>,
    /// An npm package the workspace's image adds, installed globally; repeatable.
    #[arg(long = "image-npm", value_name = "NAME@VERSION")]
    image_npm: Vec<String>,
    /// A shell command run as root while the workspace's image is built; repeatable.
    #[arg(long = "image-run", value_name = "COMMAND")]
    image_run: Vec<String>,
    /// Agent config as JSON, or @FILE.
    #[arg(long = "agent-config", value_name = "JSON|@FILE")]
    agent_config: Option<String>,
}

pub async fn run(
    cmd: WorkspaceCommand,
    client: &Client,
    out: &Output,
) -> Result<ExitCode, ClientError> {
    match cmd {
        WorkspaceCommand::Create(args) => {
            let mut spec = match &args.from {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        ClientError::Usage(format!("cannot read {}: {e}", path.display()))
                    })?;
                    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                        ClientError::Usage(format!("{} is not JSON: {e}", path.display()))
                    })?
                }
                None => serde_json::json!({}),
            };
            if let Some(name) = args.name {
                spec["name"] = name.into();
            }
            let patch = args.fields.into_patch()?;
            merge_patch(&mut spec, &patch)?;
            let w: Workspace = client.post("/workspaces", &spec).await?;
            show(&w, out);
        }
        WorkspaceCommand::List => {
            let list: Vec<Workspace> = client.get("/workspaces").await?;
            out.list(
                &list,
                "No workspaces yet. Create one: atelier workspace create --name NAME --repo URL",
                &["ID", "NAME", "REPOS", "RESOURCES", "IMAGE", "AGE"],
                |w| {
                    vec![
                        w.id.to_string(),
                        w.name.clone(),
                        w.repos
                            .iter()
                            .map(|r| format!("{}#{}", r.url, r.branch))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        format!("{} vCPU, {} MiB", w.resources.vcpus, w.resources.memory_mib),
                        w.image_name.clone(),
                        age(w.created_at),
                    ]
                },
            );
        }
        WorkspaceCommand::Show { workspace } => {
            let w: Workspace = client
                .get(&format!("/workspaces/{}", encode(&workspace)))
                .await?;
            show(&w, out);
        }
        WorkspaceCommand::Edit {
            workspace,
            fields,
            name,
            remove_secrets,
        } => {
            let mut patch = fields.into_patch()?;
            patch.name = name;
            if !remove_secrets.is_empty() {
                patch.remove_secrets = Some(remove_secrets);
            }
            if patch == WorkspacePatch::default() {
                return Err(ClientError::Usage(
                    "nothing to change: give at least one flag (see --help)".into(),
                ));
            }
            let w: Workspace = client
                .json(
                    client
                        .request(
                            Method::PATCH,
                            &format!("/workspaces/{}", encode(&workspace)),
                        )
                        .json(&patch),
                )
                .await?;
            show(&w, out);
        }
        WorkspaceCommand::Delete { workspace } => {
            client
                .send(client.request(
                    Method::DELETE,
                    &format!("/workspaces/{}", encode(&workspace)),
                ))
                .await?;
            if !out.json {
                println!("Deleted workspace {workspace}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn merge_patch(spec: &mut serde_json::Value, patch: &WorkspacePatch) -> Result<(), ClientError> {
    let value = serde_json::to_value(patch).map_err(|e| ClientError::Usage(e.to_string()))?;
    if let (Some(target), Some(fields)) = (spec.as_object_mut(), value.as_object()) {
        for (k, v) in fields {
            if !v.is_null() {
                target.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

impl Fields {
    fn into_patch(self) -> Result<WorkspacePatch, ClientError> {
        let usage = |m: String| ClientError::Usage(m);
        let mut patch = WorkspacePatch::default();
        if !self.repos.is_empty() {
            patch.repos = Some(self.repos.iter().map(|r| parse_repo(r)).collect());
        }
        if !self.init.is_empty() {
            patch.init_commands = Some(self.init);
        }
        if !self.dev.is_empty() {
            let mut devs = vec![];
            for d in &self.dev {
                let mut parts = d.splitn(3, ':');
                let (Some(name), Some(port), Some(command)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(usage(format!("--dev {d:?}: expected NAME:PORT:COMMAND")));
                };
                let port = port
                    .parse()
                    .map_err(|_| usage(format!("--dev {d:?}: {port:?} is not a port")))?;
                devs.push(DevCommand {
                    name: name.into(),
                    command: command.into(),
                    port,
                    public: self.public.contains(&port),
                });
            }
            if let Some(p) = self
                .public
                .iter()
                .find(|p| !devs.iter().any(|d| d.port == **p))
            {
                return Err(usage(format!("--public {p}: no --dev names that port")));
            }
            patch.dev_commands = Some(devs);
        } else if !self.public.is_empty() {
            return Err(usage("--public needs the --dev commands it marks".into()));
        }
        let mut secrets = SecretsSpec::default();
        for s in &self.secrets {
            let (name, value) = match s.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => (
                    s.clone(),
                    std::env::var(s)
                        .map_err(|_| usage(format!("--secret {s}: no `=` and ${s} is not set")))?,
                ),
            };
            secrets.env.push(EnvSecret { name, value });
        }
        for s in &self.secret_files {
            let (guest, local) = s.split_once('=').ok_or_else(|| {
                usage(format!(
                    "--secret-file {s:?}: expected GUEST_PATH=LOCAL_FILE"
                ))
            })?;
            let content = std::fs::read_to_string(local)
                .map_err(|e| usage(format!("--secret-file: cannot read {local}: {e}")))?;
            secrets.files.push(FileSecret {
                path: guest.into(),
                content,
                mode: 0o600,
            });
        }
        if !secrets.env.is_empty() || !secrets.files.is_empty() {
            patch.secrets = Some(secrets);
        }
        if self.vcpus.is_some() || self.memory.is_some() || self.disk.is_some() {
            let d = atelier_core::Resources::default();
            patch.resources = Some(atelier_core::Resources {
                vcpus: self.vcpus.unwrap_or(d.vcpus),
                memory_mib: self.memory.unwrap_or(d.memory_mib),
                disk_mib: self.disk.unwrap_or(d.disk_mib),
            });
        }
        if !self.image_packages.is_empty()
            || !self.image_npm.is_empty()
            || !self.image_run.is_empty()
        {
            patch.image = Some(atelier_core::image::ImageExtension {
                base: self.image.clone().unwrap_or_else(|| "dev".into()),
                packages: self.image_packages,
                npm: self.image_npm,
                run: self.image_run,
            });
        }
        patch.base_image = self.image;
        if let Some(c) = self.agent_config {
            let text = match c.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| usage(format!("--agent-config: cannot read {path}: {e}")))?,
                None => c,
            };
            patch.agent_config = Some(
                serde_json::from_str(&text)
                    .map_err(|e| usage(format!("--agent-config is not JSON: {e}")))?,
            );
        }
        Ok(patch)
    }
}

/// `URL[#BRANCH[:PATH]]`.
fn parse_repo(s: &str) -> RepoSpec {
    let (url, rest) = match s.rsplit_once('#') {
        Some((u, r)) => (u, Some(r)),
        None => (s, None),
    };
    let (branch, path) = match rest.map(|r| {
        r.split_once(':')
            .map(|(b, p)| (b, Some(p)))
            .unwrap_or((r, None))
    }) {
        Some((b, p)) => (b.to_owned(), p.map(str::to_owned)),
        None => ("main".to_owned(), None),
    };
    RepoSpec {
        url: url.into(),
        branch,
        path,
    }
}

fn show(w: &Workspace, out: &Output) {
    if out.json {
        out.json(w);
        return;
    }
    println!("{} ({})", w.name, w.id);
    println!(
        "  resources   {} vCPU, {} MiB RAM, {} MiB disk",
        w.resources.vcpus, w.resources.memory_mib, w.resources.disk_mib
    );
    println!("  image       {}", w.image_name);
    if let Some(ext) = &w.image {
        for p in &ext.packages {
            println!("    package   {p}");
        }
        for p in &ext.npm {
            println!("    npm       {p}");
        }
        for c in &ext.run {
            println!("    run       {c}");
        }
    }
    for r in &w.repos {
        println!(
            "  repo        {} #{} -> {}",
            r.url,
            r.branch,
            r.clone_path()
        );
    }
    for c in &w.init_commands {
        println!("  init        {c}");
    }
    for d in &w.dev_commands {
        let public = if d.public { " (public)" } else { "" };
        println!(
            "  dev         {} :{}{public}  {}",
            d.name, d.port, d.command
        );
    }
    for s in &w.secrets {
        println!("  secret      {} ({:?}) {}", s.name, s.kind, s.preview);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_flags_parse() {
        let r = parse_repo("https://h/a/b.git#dev:src/b");
        assert_eq!(
            (r.url.as_str(), r.branch.as_str(), r.path.as_deref()),
            ("https://h/a/b.git", "dev", Some("src/b"))
        );
        let r = parse_repo("git@h:a/b.git");
        assert_eq!(
            (r.url.as_str(), r.branch.as_str(), r.path),
            ("git@h:a/b.git", "main", None)
        );
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode("my ws/x"), "my%20ws%2Fx");
    }
}
