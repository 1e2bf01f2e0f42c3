//! Git inside the sandbox (through the agent's exec) and the host-side mirror that keeps
//! every task branch after its sandbox is gone.

use std::path::{Path, PathBuf};
use std::process::Command;

use atelier_agent_client::AgentClient;
use atelier_core::task::FileChange;
use atelier_proto::{ExecRequest, ExecResult};

use crate::error::{ApiError, ApiResult};

/// A path next to the repository (outside its work tree), for files of ours.
pub fn beside(repo: &str, name: &str) -> String {
    let parent = repo
        .trim_end_matches('/')
        .rsplit_once('/')
        .map(|(p, _)| p)
        .unwrap_or(".");
    format!("{}/{name}", if parent.is_empty() { "" } else { parent })
}

/// Runs `argv` in `cwd`; a non-zero exit is an error carrying stderr.
pub async fn run(
    agent: &AgentClient,
    cwd: &str,
    argv: &[&str],
    stdin: Option<String>,
) -> ApiResult<ExecResult> {
    let mut req = ExecRequest::argv(argv.iter().copied());
    req.cwd = Some(cwd.to_owned());
    req.stdin = stdin;
    req.timeout_ms = Some(10 * 60 * 1000);
    req.env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    let r = agent.exec(&req).await?;
    if r.status.exit_code != Some(0) {
        return Err(ApiError::internal(format!(
            "`{}` failed: {}",
            argv.join(" "),
            r.stderr.trim()
        )));
    }
    Ok(r)
}

/// Clones the repo at `base`, then creates `branch`; returns the repo's absolute path.
pub async fn prepare(
    agent: &AgentClient,
    url: &str,
    path: &str,
    base: &str,
    branch: &str,
) -> ApiResult<String> {
    run(
        agent,
        ".",
        &["git", "clone", "--quiet", "--branch", base, "--", url, path],
        None,
    )
    .await?;
    run(
        agent,
        path,
        &["git", "checkout", "--quiet", "-b", branch],
        None,
    )
    .await?;
    let pwd = run(agent, path, &["pwd"], None).await?;
    Ok(pwd.stdout.trim().to_owned())
}

/// Commits what the agent left uncommitted (if anything); returns whether it did.
pub async fn commit_all(agent: &AgentClient, repo: &str, message: &str) -> ApiResult<bool> {
    run(agent, repo, &["git", "add", "-A"], None).await?;
    let staged = {
        let mut req = ExecRequest::argv(["git", "diff", "--cached", "--quiet"]);
        req.cwd = Some(repo.to_owned());
        agent.exec(&req).await?
    };
    if staged.status.exit_code == Some(0) {
        return Ok(false);
    }
    run(
        agent,
        repo,
        &[
            "git",
            "-c",
            "user.name=Atelier",
            "-c",
            "user.email=atelier@localhost",
            "commit",
            "--quiet",
            "-F",
            "-",
        ],
        Some(message.to_owned()),
    )
    .await?;
    Ok(true)
}

/// The branch's changes against `base`: per-file stats and the unified diff (capped).
pub async fn changes(
    agent: &AgentClient,
    repo: &str,
    base: &str,
) -> ApiResult<(Vec<FileChange>, String)> {
    let range = format!("origin/{base}...HEAD");
    let numstat = run(agent, repo, &["git", "diff", "--numstat", &range], None).await?;
    let files = numstat
        .stdout
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, '\t');
            let added = parts.next()?.parse().unwrap_or(0);
            let removed = parts.next()?.parse().unwrap_or(0);
            Some(FileChange {
                path: parts.next()?.to_owned(),
                added,
                removed,
            })
        })
        .collect();
    let mut req = ExecRequest::argv(["git", "diff", &range]);
    req.cwd = Some(repo.to_owned());
    req.output_limit = Some(2 * 1024 * 1024);
    let diff = agent.exec(&req).await?.stdout;
    Ok((files, diff))
}

/// Copies `branch` out of the sandbox into the host-side bare mirror (through a git
/// bundle read over the agent's file API, so it works on every driver).
pub async fn preserve(
    agent: &AgentClient,
    repo: &str,
    branch: &str,
    mirror: &Path,
) -> ApiResult<()> {
    let bundle_in_sandbox = beside(repo, ".atelier-branch.bundle");
    run(
        agent,
        repo,
        &[
            "git",
            "bundle",
            "create",
            "--quiet",
            &bundle_in_sandbox,
            branch,
        ],
        None,
    )
    .await?;
    let bytes = agent.read_file(&bundle_in_sandbox).await?;
    let _ = agent.delete(&bundle_in_sandbox, false).await;
    let mirror = mirror.to_owned();
    let branch = branch.to_owned();
    tokio::task::spawn_blocking(move || fetch_into_mirror(&mirror, &bytes, &branch))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}

fn fetch_into_mirror(mirror: &Path, bundle: &[u8], branch: &str) -> ApiResult<()> {
    let fail = |what: &str, out: std::io::Result<std::process::Output>| -> ApiResult<()> {
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(ApiError::internal(format!(
                "{what}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))),
            Err(e) => Err(ApiError::internal(format!(
                "{what}: {e} (is git installed on the host?)"
            ))),
        }
    };
    if !mirror.join("HEAD").is_file() {
        std::fs::create_dir_all(mirror).map_err(|e| ApiError::internal(e.to_string()))?;
        fail(
            "git init --bare",
            Command::new("git")
                .args(["init", "--quiet", "--bare"])
                .arg(mirror)
                .output(),
        )?;
    }
    let file: PathBuf = mirror.join(format!("incoming-{}.bundle", std::process::id()));
    std::fs::write(&file, bundle).map_err(|e| ApiError::internal(e.to_string()))?;
    let refspec = format!("+{branch}:refs/heads/{branch}");
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(mirror)
        .args(["fetch", "--quiet"])
        .arg(&file)
        .arg(&refspec)
        .output();
    let _ = std::fs::remove_file(&file);
    fail("git fetch into the mirror", out)
}
