//! Git on the host, for prebuilds: clone a branch, read a remote branch's head, pack
//! work trees for upload. Credentials never reach a command line; git is told never to
//! prompt.

use std::path::Path;

use atelier_core::network::{HostService, HOST_SERVICES_ADDRESS};
use tokio::process::Command;

fn git() -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .kill_on_drop(true);
    cmd
}

async fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `url` as the host reaches it. A workspace writes its repo URLs as its sandboxes see
/// them; a repo served by one of its host services (`git://172.16.0.1:<port>/…`) is on
/// the host's loopback, where the prebuild clones and the staleness check look.
pub fn seen_from_host(url: &str, host_services: &[HostService]) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_owned();
    };
    let served = parsed.host_str() == Some(&HOST_SERVICES_ADDRESS.to_string())
        && parsed
            .port()
            .is_some_and(|p| host_services.iter().any(|s| s.port == p));
    if served && parsed.set_host(Some("127.0.0.1")).is_ok() {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// Clones `branch` of `url` into `dest` (which must not exist); returns the commit id.
pub async fn clone(url: &str, branch: &str, dest: &Path) -> Result<String, String> {
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    run(
        git()
            .args([
                "clone",
                "--quiet",
                "--single-branch",
                "--branch",
                branch,
                "--",
            ])
            .arg(url)
            .arg(dest),
        "git clone",
    )
    .await?;
    let head = run(
        git().arg("-C").arg(dest).args(["rev-parse", "HEAD"]),
        "git rev-parse",
    )
    .await?;
    Ok(head.trim().to_owned())
}

/// The commit `branch` of `url` points at now; `None` when the branch does not exist.
pub async fn remote_head(url: &str, branch: &str) -> Result<Option<String>, String> {
    let out = run(
        git()
            .args(["ls-remote", "--heads", "--"])
            .arg(url)
            .arg(format!("refs/heads/{branch}")),
        "git ls-remote",
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(_, name)| *name == format!("refs/heads/{branch}"))
        .map(|(commit, _)| commit.to_owned()))
}

/// A tar archive of `paths` (relative to `root`), history included.
pub async fn tar(root: &Path, paths: &[String]) -> Result<Vec<u8>, String> {
    let out = Command::new("tar")
        .arg("-cf")
        .arg("-")
        .arg("-C")
        .arg(root)
        .arg("--")
        .args(paths)
        .output()
        .await
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "packing the repos failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_named_host_services_are_looked_up_on_the_host_loopback() {
        let services = [HostService {
            port: 9418,
            name: None,
        }];
        assert_eq!(
            seen_from_host("git://172.16.0.1:9418/app.git", &services),
            "git://127.0.0.1:9418/app.git"
        );
        assert_eq!(
            seen_from_host("http://172.16.0.1:9418/r/app.git", &services),
            "http://127.0.0.1:9418/r/app.git"
        );
        for unchanged in [
            // A port the workspace does not name is not the host's to offer.
            "git://172.16.0.1:9419/app.git",
            "https://example.com/app.git",
            "git@example.com:app.git",
        ] {
            assert_eq!(seen_from_host(unchanged, &services), unchanged);
        }
    }

    fn sh(dir: &Path, script: &str) {
        let ok = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .expect("sh")
            .success();
        assert!(ok, "{script}");
    }

    #[tokio::test]
    async fn clone_records_the_head_and_ls_remote_sees_it_move() {
        let tmp = tempfile::tempdir().expect("tmp");
        let origin = tmp.path().join("origin");
        std::fs::create_dir(&origin).expect("mkdir");
        sh(
            &origin,
            "git init -q -b main && echo a > a && git add a && git commit -qm a",
        );
        let url = origin.display().to_string();
        let commit = clone(&url, "main", &tmp.path().join("w/app"))
            .await
            .expect("clone");
        assert!(atelier_core::prebuild::is_commit_id(&commit), "{commit}");
        assert_eq!(
            remote_head(&url, "main").await.expect("ls"),
            Some(commit.clone())
        );
        assert_eq!(remote_head(&url, "nope").await.expect("ls"), None);
        sh(&origin, "echo b > b && git add b && git commit -qm b");
        let moved = remote_head(&url, "main").await.expect("ls").expect("head");
        assert_ne!(moved, commit);
        let err = clone(&url, "nope", &tmp.path().join("w/x"))
            .await
            .unwrap_err();
        assert!(err.contains("git clone failed"), "{err}");
        let packed = tar(&tmp.path().join("w"), &["app".into()])
            .await
            .expect("tar");
        assert!(packed.len() > 1024);
    }
}
