//! Starting a coding agent in a sandbox.
//!
//! The agent runs as a supervised service of the sandbox's `atelier-agent`. What it runs
//! comes from the workspace's [`AgentConfig`]: `opencode serve` (the pinned
//! `opencode-ai@1.18.33` on the sandbox's PATH, or `binary`), Claude Code, an ACP agent
//! (`command`), Codex (`codex app-server`), or the scripted fake agent speaking any of
//! those protocols, for tests and demos. Claude Code, ACP agents and Codex talk over
//! stdio, so they run under
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
use std::path::PathBuf;

use atelier_agent_client::AgentClient;
use atelier_core::agent_config::AgentConfig;
use atelier_proto::{CommandLine, RestartPolicy, ServiceSpec};
use atelier_runtimes::launch::{self, LaunchContext, Program};
use atelier_runtimes::{stdio_host, RuntimeError, SessionSpec};
use bytes::Bytes;

use super::{LaunchError, LaunchResult};

/// The service name of the coding agent in its sandbox.
pub const SERVICE: &str = "coding-agent";

#[derive(Debug, Clone)]
pub struct AgentLaunch {
    /// The port the agent's server listens on, on the sandbox's loopback.
    pub port: u16,
}

/// The 0600 env file the agent's wrapper sources, next to the repository.
pub const ENV_FILE: &str = ".atelier-agent.env";

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
    let (len, digest, bytes) = digest_of(&host).await?;
    // Named by its content: a clone of a prebuild, whose warm-up shipped the same binary,
    // finds it in place and is spared the copy (writes are atomic, so a file there is whole).
    let path = super::beside(repo_dir, &format!(".atelier-{name}-{digest}"));
    if matches!(agent.stat(&path).await, Ok(st) if st.size == len) {
        return Ok(path);
    }
    let bytes = match bytes {
        Some(b) => b,
        None => read(&host).await?,
    };
    agent.write_file(&path, bytes, Some(0o755)).await?;
    Ok(path)
}

async fn read(host: &std::path::Path) -> LaunchResult<Bytes> {
    tokio::fs::read(host)
        .await
        .map(Bytes::from)
        .map_err(|e| LaunchError::failed(format!("reading {}: {e}", host.display())))
}

/// The file's length and the start of its SHA-256, and its bytes when they had to be read
/// for that: digests are kept by path, length and modification time, so a binary is read
/// and hashed once per manager.
async fn digest_of(host: &std::path::Path) -> LaunchResult<(u64, String, Option<Bytes>)> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Key = (PathBuf, u64, Option<std::time::SystemTime>);
    static DIGESTS: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    let meta = tokio::fs::metadata(host)
        .await
        .map_err(|e| LaunchError::failed(format!("reading {}: {e}", host.display())))?;
    let key = (host.to_path_buf(), meta.len(), meta.modified().ok());
    let digests = DIGESTS.get_or_init(Default::default);
    let known = digests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    if let Some(d) = known {
        return Ok((meta.len(), d, None));
    }
    let bytes = read(host).await?;
    let b = bytes.clone();
    let digest = tokio::task::spawn_blocking(move || {
        Sha256::digest(&b)
            .iter()
            .take(6)
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    })
    .await
    .map_err(|e| LaunchError::failed(e.to_string()))?;
    digests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, digest.clone());
    Ok((bytes.len() as u64, digest, Some(bytes)))
}

/// Puts the binaries the workspace's agent runs from the manager (the stdio host, the
/// fake agent) into an isolated sandbox ahead of any task, where a task's start finds
/// them: a prebuild does this so that its clones are spared the copy. Returns their names.
pub async fn ship_binaries(
    agent: &AgentClient,
    config: &AgentConfig,
    repo_dir: &str,
) -> LaunchResult<Vec<String>> {
    let session = SessionSpec::default();
    let ctx = LaunchContext {
        repo_dir,
        port: SANDBOX_AGENT_PORT,
        session: &session,
    };
    let plan = launch::plan(config, &ctx).map_err(|e| match e {
        RuntimeError::Config { field, message } => LaunchError::Invalid { field, message },
        other => LaunchError::failed(other.to_string()),
    })?;
    let mut names = vec![];
    if let Program::Shipped(name) = &plan.program {
        names.push((*name).to_owned());
    }
    if plan.protocol.is_stdio() {
        names.push("atelier-stdio-host".to_owned());
    }
    for name in &names {
        manager_binary(agent, name, repo_dir, false).await?;
    }
    Ok(names)
}

/// Starts the coding agent for `repo_dir` (absolute, inside the sandbox). `local`: the
/// sandbox shares the host's network (so the port must be free on the host too).
/// `session` is what the session will run with: Claude Code takes its model, effort,
/// mode and system prompt as launch flags.
///
/// OpenCode (and the fake agent speaking its protocol) serve HTTP on the port
/// themselves; Claude Code, ACP agents and Codex speak over stdio and run under
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
    let ctx = LaunchContext {
        repo_dir,
        port,
        session,
    };
    let plan = launch::plan(config, &ctx).map_err(|e| match e {
        RuntimeError::Config { field, message } => LaunchError::Invalid { field, message },
        other => LaunchError::failed(other.to_string()),
    })?;
    // The files, the env file and the binaries are independent: they go in at once,
    // and only the service waits for all of them.
    let files = futures::future::try_join_all(plan.files.iter().map(|file| {
        agent.write_file(
            &file.path,
            Bytes::from(file.content.clone()),
            Some(file.mode),
        )
    }));
    let program = async {
        match &plan.program {
            Program::Path(p) => Ok(p.clone()),
            Program::Shipped(name) => manager_binary(agent, name, repo_dir, local).await,
        }
    };
    let stdio_host = async {
        if plan.protocol.is_stdio() {
            manager_binary(agent, "atelier-stdio-host", repo_dir, local)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    // The stdio host takes its token from the environment and keeps it from the agent.
    let mut values = secrets.clone();
    values
        .0
        .insert(plan.password_env().to_owned(), server_token.to_owned());
    let env_file = super::beside(repo_dir, ENV_FILE);
    let content = env_file_content(&values)?;
    let env_written = agent.write_file(&env_file, Bytes::from(content), Some(0o600));
    let (files, program, stdio_host, env_written) =
        tokio::join!(files, program, stdio_host, env_written);
    files?;
    env_written?;
    let mut argv = vec![program?];
    argv.extend(plan.args.iter().cloned());
    let argv = match stdio_host? {
        Some(host) => {
            let transcript = super::beside(repo_dir, TRANSCRIPT);
            stdio_host::host_command(&host, port, &transcript, Some(repo_dir), &argv)
        }
        None => argv,
    };
    let argv = with_env_file(&env_file, argv);
    let spec = ServiceSpec {
        command: CommandLine::Argv(argv),
        env: plan.env,
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
