//! `atelier dev`: an interactive shell in a fresh sandbox, with a host folder shared into
//! it at `/workspace` and the workspace's secrets in the shell's environment; the
//! sandbox goes when the shell ends (unless `--keep`).

use std::path::PathBuf;
use std::process::ExitCode;

use atelier_core::{Sandbox, SandboxState};
use clap::Args;
use reqwest::Method;

use super::sandbox::shell;
use super::workspace::encode;
use crate::client::{Client, ClientError};
use crate::output::Output;

/// Where the folder appears in the sandbox.
pub const GUEST_PATH: &str = "/workspace";

#[derive(Args)]
pub struct DevArgs {
    /// Workspace (id or name): its resources, and its secrets in the shell's environment.
    #[arg(long, short)]
    workspace: Option<String>,
    /// The host folder shared at /workspace (default: the current directory).
    #[arg(long, value_name = "DIR")]
    folder: Option<PathBuf>,
    /// The image to boot.
    #[arg(long, default_value = "dev")]
    image: String,
    /// Keep the sandbox when the shell ends (default: destroy it).
    #[arg(long)]
    keep: bool,
}

/// The folder to share, absolute and resolved, or a clear refusal.
pub fn resolve_folder(folder: Option<PathBuf>) -> Result<PathBuf, ClientError> {
    let folder = match folder {
        Some(f) => f,
        None => std::env::current_dir()
            .map_err(|e| ClientError::Usage(format!("cannot read the current directory: {e}")))?,
    };
    let resolved = std::fs::canonicalize(&folder).map_err(|e| {
        ClientError::Usage(match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("the folder {} does not exist", folder.display())
            }
            _ => format!("cannot open the folder {}: {e}", folder.display()),
        })
    })?;
    if !resolved.is_dir() {
        return Err(ClientError::Usage(format!(
            "{} is not a folder",
            folder.display()
        )));
    }
    Ok(resolved)
}

pub async fn run(args: DevArgs, client: &Client, out: &Output) -> Result<ExitCode, ClientError> {
    let folder = resolve_folder(args.folder)?;
    let host_path = folder.to_str().ok_or_else(|| {
        ClientError::Usage(format!("the folder {} is not UTF-8", folder.display()))
    })?;
    let body = serde_json::json!({
        "workspace": args.workspace,
        "image": args.image,
        // A shared folder is live host state: no prebuild's snapshot can hold it.
        "prebuild": false,
        "shared_folders": [{ "host_path": host_path, "guest_path": GUEST_PATH }],
    });
    let spinner = out.spinner(format!(
        "starting a {} sandbox with {} at {GUEST_PATH}…",
        args.image,
        folder.display()
    ));
    // The key names this sandbox before its id is known: a Ctrl-C while it boots asks
    // for it again by the key (an idempotent replay) and destroys it.
    let key = format!("atelier-dev-{}", atelier_core::id::random_token());
    let create = |path: &str| {
        client
            .request(Method::POST, path)
            .header("Idempotency-Key", &key)
            .json(&body)
    };
    let created: Result<Sandbox, _> = tokio::select! {
        r = client.json(create("/sandboxes?wait=true")) => r,
        _ = tokio::signal::ctrl_c() => {
            spinner.finish_and_clear();
            eprintln!("atelier: interrupted; removing the sandbox that was starting");
            if let Ok(s) = client.json::<Sandbox>(create("/sandboxes")).await {
                let _ = client
                    .send(client.request(Method::DELETE, &format!("/sandboxes/{}", encode(s.id.as_str()))))
                    .await;
            }
            return Ok(ExitCode::from(130));
        }
    };
    spinner.finish_and_clear();
    let sandbox = created?;
    let code = if sandbox.state == SandboxState::Running {
        eprintln!(
            "atelier: sandbox {} ({}) is up; {} is at {GUEST_PATH}; `exit` ends it",
            sandbox.id,
            sandbox.name,
            folder.display()
        );
        // Relative to the sandbox's root: `/workspace` in a VM, the link to the folder
        // in a `local` sandbox's directory.
        let cwd = GUEST_PATH.trim_start_matches('/');
        shell::attach(sandbox.id.as_str(), None, Some(cwd), client).await
    } else {
        eprintln!(
            "atelier: sandbox {} did not start ({}): {}",
            sandbox.id,
            sandbox.state,
            sandbox.error.as_deref().unwrap_or("no reason given")
        );
        Ok(ExitCode::FAILURE)
    };
    if args.keep {
        eprintln!(
            "atelier: sandbox {} kept: atelier sandbox shell {0}; atelier sandbox destroy {0}",
            sandbox.id
        );
    } else {
        let destroyed = client
            .send(client.request(
                Method::DELETE,
                &format!("/sandboxes/{}", encode(sandbox.id.as_str())),
            ))
            .await;
        if let Err(e) = destroyed {
            eprintln!(
                "atelier: could not destroy sandbox {}: {e}\natelier: destroy it with: atelier sandbox destroy {0}",
                sandbox.id
            );
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_must_exist_and_be_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = resolve_folder(Some(missing.clone())).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the folder {} does not exist", missing.display())
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(resolve_folder(Some(file))
            .unwrap_err()
            .to_string()
            .ends_with("is not a folder"));
        let got = resolve_folder(Some(dir.path().join("."))).unwrap();
        assert_eq!(got, std::fs::canonicalize(dir.path()).unwrap());
    }
}
