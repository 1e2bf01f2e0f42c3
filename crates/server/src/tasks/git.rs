//! Git inside the sandbox (through the agent's exec) and the host-side mirror that keeps
//! every task branch after its sandbox is gone.

use std::path::{Path, PathBuf};
use std::process::Command;

use atelier_agent_client::AgentClient;
use atelier_core::task::FileChange;
use atelier_proto::{ExecRequest, ExecResult};

use super::{TaskError, TaskResult};
pub use crate::coding_agent::beside;

/// Runs `argv` in `cwd`; a non-zero exit is an error carrying stderr.
pub async fn run(
    agent: &AgentClient,
    cwd: &str,
    argv: &[&str],
    stdin: Option<String>,
) -> TaskResult<ExecResult> {
    let mut req = ExecRequest::argv(argv.iter().copied());
    req.cwd = Some(cwd.to_owned());
    req.stdin = stdin;
    req.timeout_ms = Some(10 * 60 * 1000);
    req.env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    let r = agent.exec(&req).await?;
    if r.status.exit_code != Some(0) {
        return Err(TaskError::failed(format!(
            "`{}` failed: {}",
            argv.join(" "),
            r.stderr.trim()
        )));
    }
    Ok(r)
}

/// Run in a repo: adds what is untracked now to `.git/info/exclude`, so that it never
/// lands in a task's commit, and leaves a mark that it was done. A prebuild runs it
/// after its init commands; a clone of an older prebuild without the mark runs it itself.
/// An image without git (`minimal`) has nothing to exclude for.
pub const EXCLUDE_UNTRACKED: &str = r#"set -e
command -v git >/dev/null || exit 0
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
git ls-files --others --exclude-standard \
    | sed -e 's/[][*?\\!#]/\\&/g' -e 's|^|/|' >> "$exclude"
: > "$exclude.atelier"
"#;

/// Sets up the task's branch in one exec, with as few git processes as can be (each
/// one counts in an emulated guest). Arguments: repo path, URL, base, branch, and the
/// commit the base is known to be at now (or empty).
///
/// In a sandbox cloned from a prebuild the repo is there already, with what its init
/// commands left excluded (see [`EXCLUDE_UNTRACKED`]); the branch starts at `head` when
/// the repo has that commit, else at the base fetched. Otherwise the repo is cloned.
const PREPARE: &str = r#"set -e
repo="$1" url="$2" base="$3" branch="$4" head="$5"
if [ -e "$repo/.git" ]; then
    cd "$repo"
    [ -e .git/info/exclude.atelier ] || sh -c "$6"
    if [ -z "$head" ] || ! git checkout --quiet -B "$branch" "$head" 2>/dev/null; then
        git fetch --quiet -- "$url" "$base"
        git checkout --quiet -B "$branch" FETCH_HEAD
    fi
else
    git clone --quiet --branch "$base" -- "$url" "$repo"
    cd "$repo"
    git checkout --quiet -b "$branch"
fi
pwd
"#;

/// Clones the repo at `base` (or brings a prebuild's copy to it), then creates `branch`;
/// returns the repo's absolute path. `head`: the commit the base is known to be at now,
/// which spares a prebuild's clone the fetch when its repo is there already.
pub async fn prepare(
    agent: &AgentClient,
    url: &str,
    path: &str,
    base: &str,
    branch: &str,
    head: Option<&str>,
) -> TaskResult<String> {
    let mut req = ExecRequest::argv([
        "sh",
        "-c",
        PREPARE,
        "sh",
        path,
        url,
        base,
        branch,
        head.unwrap_or_default(),
        EXCLUDE_UNTRACKED,
    ]);
    req.timeout_ms = Some(10 * 60 * 1000);
    req.env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    let r = agent.exec(&req).await?;
    if r.status.exit_code != Some(0) {
        return Err(TaskError::failed(format!(
            "setting up {path} at {base}: {}",
            r.stderr.trim()
        )));
    }
    Ok(r.stdout.trim().to_owned())
}

/// A prebuild's repo (already excluded) whose `HEAD` is at the task's base commit, with
/// its work tree and index unchanged: its branch is made by writing the branch's ref and
/// `HEAD` through the agent's file API, without a process in the guest, which is what
/// `git checkout -B <branch> HEAD` would do. Nothing in the work tree changes, so the
/// coding agent may start in [`InPlace::dir`] while the branch is written.
pub struct InPlace {
    /// The repo's absolute path in the sandbox.
    pub dir: String,
    git: String,
    branch: String,
    head: String,
}

impl InPlace {
    /// `None` on any doubt (a name git would refuse, a repo not at `head`, a read that
    /// fails): then [`prepare`] runs git.
    pub async fn find(agent: &AgentClient, path: &str, branch: &str, head: &str) -> Option<Self> {
        if !safe_ref(branch) || head.len() != 40 || !head.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let git = format!("{path}/.git");
        let text = |b: bytes::Bytes| String::from_utf8(b.to_vec()).ok();
        let (exclude, head_file) = (format!("{git}/info/exclude.atelier"), format!("{git}/HEAD"));
        let (excluded, current, dir) = tokio::join!(
            agent.stat(&exclude),
            agent.read_file(&head_file),
            agent.stat(path),
        );
        excluded.ok()?;
        let dir = dir.ok()?.path;
        let current = text(current.ok()?)?;
        let at = match current.trim().strip_prefix("ref: ") {
            None => current.trim().to_owned(),
            Some(r) if safe_ref(r) => match agent.read_file(&format!("{git}/{r}")).await {
                Ok(loose) => text(loose)?.trim().to_owned(),
                Err(_) => {
                    let packed = text(agent.read_file(&format!("{git}/packed-refs")).await.ok()?)?;
                    packed
                        .lines()
                        .filter_map(|l| l.split_once(' '))
                        .find(|(_, name)| *name == r)
                        .map(|(commit, _)| commit.to_owned())?
                }
            },
            Some(_) => return None,
        };
        (at == head).then(|| InPlace {
            dir,
            git,
            branch: branch.to_owned(),
            head: head.to_owned(),
        })
    }

    /// Writes the branch's ref, then points `HEAD` at it (in that order, so `HEAD` never
    /// names a missing ref while the agent starts). Both land before the agent hears the
    /// prompt, and a failed write leaves a repo that [`prepare`] still repairs.
    pub async fn branch(&self, agent: &AgentClient) -> TaskResult<()> {
        let write = |rel: String, content: String| {
            let path = format!("{}/{rel}", self.git);
            async move { agent.write_file(&path, content.into(), Some(0o644)).await }
        };
        write(
            format!("refs/heads/{}", self.branch),
            format!("{}\n", self.head),
        )
        .await?;
        write("HEAD".into(), format!("ref: refs/heads/{}\n", self.branch)).await?;
        Ok(())
    }
}

/// A ref name git takes as it is: no empty or dotted component, no `.lock`, plain bytes.
fn safe_ref(name: &str) -> bool {
    !name.is_empty()
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

/// Commits what the agent left uncommitted (if anything); returns whether it did.
pub async fn commit_all(agent: &AgentClient, repo: &str, message: &str) -> TaskResult<bool> {
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
) -> TaskResult<(Vec<FileChange>, String)> {
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
) -> TaskResult<()> {
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
        .map_err(|e| TaskError::failed(e.to_string()))?
}

/// A bundle of `branch` from the host-side mirror, to start a sandbox's clone from.
pub async fn bundle_from_mirror(mirror: &Path, branch: &str) -> TaskResult<Vec<u8>> {
    let file = mirror.with_extension(format!(
        "outgoing-{}.bundle",
        atelier_core::id::random_token()
    ));
    let out = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(mirror)
        .args(["bundle", "create", "--quiet"])
        .arg(&file)
        .arg(format!("refs/heads/{branch}"))
        .output()
        .await;
    let bytes = match out {
        Ok(o) if o.status.success() => tokio::fs::read(&file)
            .await
            .map_err(|e| TaskError::failed(format!("reading the bundle: {e}"))),
        Ok(o) => Err(TaskError::failed(format!(
            "bundling {branch} from the mirror: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(TaskError::failed(format!("git bundle: {e}"))),
    };
    let _ = tokio::fs::remove_file(&file).await;
    bytes
}

fn fetch_into_mirror(mirror: &Path, bundle: &[u8], branch: &str) -> TaskResult<()> {
    let fail = |what: &str, out: std::io::Result<std::process::Output>| -> TaskResult<()> {
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(TaskError::failed(format!(
                "{what}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))),
            Err(e) => Err(TaskError::failed(format!(
                "{what}: {e} (is git installed on the host?)"
            ))),
        }
    };
    if !mirror.join("HEAD").is_file() {
        std::fs::create_dir_all(mirror).map_err(|e| TaskError::failed(e.to_string()))?;
        fail(
            "git init --bare",
            Command::new("git")
                .args(["init", "--quiet", "--bare"])
                .arg(mirror)
                .output(),
        )?;
    }
    let file: PathBuf = mirror.join(format!("incoming-{}.bundle", std::process::id()));
    std::fs::write(&file, bundle).map_err(|e| TaskError::failed(e.to_string()))?;
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

/// A password or token for an HTTP(S) origin. It reaches git only through the
/// environment of one `git push` and an askpass helper, never a command line or a URL.
#[derive(Clone)]
pub struct PushCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PushCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Answers git's username and password prompts from variables set for that one push.
const ASKPASS: &str = "#!/bin/sh\n\
case \"$1\" in\n\
  Username*) printf '%s\\n' \"$ATELIER_GIT_USERNAME\" ;;\n\
  *) printf '%s\\n' \"$ATELIER_GIT_PASSWORD\" ;;\n\
esac\n";

/// A clone URL without the user information some people put in it, for showing.
pub fn display_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// Pushes `branch` from the host-side mirror to `remote` (force: the branch is the
/// task's own); returns the pushed commit. Errors carry git's message, credentials never.
pub async fn push_from_mirror(
    mirror: &Path,
    remote: &str,
    branch: &str,
    credentials: Option<&PushCredentials>,
    within: std::time::Duration,
) -> Result<String, String> {
    let refspec = format!("+refs/heads/{branch}:refs/heads/{branch}");
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("--git-dir")
        .arg(mirror)
        // No helper of the host's own configuration answers for us.
        .args(["-c", "credential.helper=", "push", "--quiet", "--", remote])
        .arg(&refspec)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    if let Some(c) = credentials {
        let helper = mirror.parent().unwrap_or(mirror).join("git-askpass.sh");
        write_askpass(&helper).map_err(|e| format!("writing the askpass helper: {e}"))?;
        cmd.env("GIT_ASKPASS", &helper)
            .env("ATELIER_GIT_USERNAME", &c.username)
            .env("ATELIER_GIT_PASSWORD", &c.password);
    }
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .map_err(|_| format!("git push did not finish within {} s", within.as_secs()))?
        .map_err(|e| format!("git push: {e} (is git installed on the host?)"))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if let Some(c) = credentials {
            msg = msg.replace(&c.password, "••••");
        }
        return Err(if msg.is_empty() {
            format!("git push exited with {}", out.status)
        } else {
            msg
        });
    }
    let head = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(mirror)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{branch}"))
        .output()
        .await
        .map_err(|e| format!("git rev-parse: {e}"))?;
    Ok(String::from_utf8_lossy(&head.stdout).trim().to_owned())
}

fn write_askpass(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read_to_string(path).ok().as_deref() != Some(ASKPASS) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, ASKPASS)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            display_url("https://user:tok@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(display_url("file:///srv/r.git"), "file:///srv/r.git");
        assert_eq!(display_url("git@host:a/b"), "git@host:a/b");
    }

    /// An HTTP origin that asks for credentials and records what git sends back.
    #[tokio::test]
    async fn push_credentials_reach_git_through_askpass_only() {
        use axum::http::{HeaderMap, StatusCode};
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some(auth) => {
                        record.lock().unwrap().push(auth.to_owned());
                        (StatusCode::FORBIDDEN, HeaderMap::new(), "denied")
                    }
                    None => {
                        let mut h = HeaderMap::new();
                        h.insert("www-authenticate", "Basic realm=\"git\"".parse().unwrap());
                        (StatusCode::UNAUTHORIZED, h, "credentials, please")
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let mirror = dir.path().join("mirrors/m.git");
        std::fs::create_dir_all(&work).unwrap();
        let git = |cwd: &Path, args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(cwd)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&work, &["init", "--quiet", "-b", "atelier/x"]);
        git(&work, &["commit", "--quiet", "--allow-empty", "-m", "one"]);
        git(
            dir.path(),
            &["clone", "--quiet", "--bare", "work", "mirrors/m.git"],
        );

        let token = "tok-0123456789-secret";
        let creds = PushCredentials {
            username: "x-access-token".into(),
            password: token.into(),
        };
        let url = format!("http://{addr}/owner/repo.git");
        let err = push_from_mirror(
            &mirror,
            &url,
            "atelier/x",
            Some(&creds),
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(!err.contains(token), "{err}");
        use base64::Engine;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
        );
        assert!(
            seen.lock().unwrap().contains(&expected),
            "git sent the credentials from askpass: {:?}",
            seen.lock().unwrap()
        );
        assert!(!format!("{creds:?}").contains(token));

        // Without credentials git gives up at once instead of prompting.
        let err = push_from_mirror(
            &mirror,
            &url,
            "atelier/x",
            None,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(!err.is_empty());
    }
}
