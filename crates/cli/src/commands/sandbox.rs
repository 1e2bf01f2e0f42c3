use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use atelier_core::Sandbox;
use atelier_proto::{ExecResult, ExitStatus};
use clap::{Args, Subcommand};
use futures::StreamExt;
use reqwest::Method;

use super::workspace::encode;
use crate::client::{Client, ClientError};
use crate::output::{age, Output};

#[derive(Subcommand)]
pub enum SandboxCommand {
    /// Create a sandbox and wait until it runs.
    Create(CreateArgs),
    /// List sandboxes.
    #[command(alias = "ls")]
    List {
        /// Only these states (comma-separated), e.g. running,stopped.
        #[arg(long)]
        state: Option<String>,
        /// Only sandboxes of this workspace (id or name).
        #[arg(long)]
        workspace: Option<String>,
        /// Include destroyed sandboxes.
        #[arg(long)]
        all: bool,
    },
    /// Show one sandbox.
    Show { id: String },
    /// Run a command in a sandbox, streaming its output; exits with its exit code.
    Exec(ExecArgs),
    /// Open an interactive shell in a sandbox; exits with the shell's exit code.
    Shell(ShellArgs),
    /// Stop a sandbox (its files stay).
    Stop { id: String },
    /// Start a stopped sandbox and wait until it runs.
    Start { id: String },
    /// Freeze a running sandbox.
    Pause { id: String },
    /// Thaw a paused sandbox.
    Resume { id: String },
    /// Destroy a sandbox and everything it owns on the host.
    #[command(alias = "rm")]
    Destroy { id: String },
}

#[derive(Args)]
pub struct CreateArgs {
    /// Name (a DNS label); defaults to the workspace's.
    #[arg(long)]
    name: Option<String>,
    /// Workspace (id or name) whose resources and image to use.
    #[arg(long, short)]
    workspace: Option<String>,
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory in MiB.
    #[arg(long, value_name = "MIB")]
    memory: Option<u32>,
    /// Disk in MiB.
    #[arg(long, value_name = "MIB")]
    disk: Option<u32>,
    #[arg(long)]
    image: Option<String>,
    /// Return at once instead of waiting for the sandbox to run.
    #[arg(long)]
    no_wait: bool,
    /// Idempotency key: retrying with the same key never creates a second sandbox.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    id: String,
    /// Working directory in the sandbox.
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variable NAME=VALUE; repeatable.
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Run the command through /bin/sh -c (give it as one argument).
    #[arg(long)]
    shell: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct ShellArgs {
    id: String,
    /// Reattach to a shell left running (the session id printed when it was left).
    #[arg(long)]
    session: Option<String>,
}

pub async fn run(
    cmd: SandboxCommand,
    client: &Client,
    out: &Output,
) -> Result<ExitCode, ClientError> {
    match cmd {
        SandboxCommand::Create(a) => {
            let body = serde_json::json!({
                "name": a.name, "workspace": a.workspace, "vcpus": a.vcpus,
                "memory_mib": a.memory, "disk_mib": a.disk, "image": a.image,
            });
            let body: serde_json::Map<String, serde_json::Value> = body
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut req = client
                .request(Method::POST, &format!("/sandboxes?wait={}", !a.no_wait))
                .json(&body);
            if let Some(k) = &a.idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            let spinner = (!a.no_wait).then(|| out.spinner("creating sandbox…"));
            let result: Result<Sandbox, _> = client.json(req).await;
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            return finish(result?, out);
        }
        SandboxCommand::List {
            state,
            workspace,
            all,
        } => {
            let mut query = vec![];
            let state = if all {
                Some(
                    atelier_core::SandboxState::ALL
                        .map(|s| s.as_str())
                        .join(","),
                )
            } else {
                state
            };
            if let Some(s) = state {
                query.push(format!("state={}", encode(&s)));
            }
            if let Some(w) = workspace {
                query.push(format!("workspace={}", encode(&w)));
            }
            let list: serde_json::Value = client
                .get(&format!("/sandboxes?{}", query.join("&")))
                .await?;
            let sandboxes: Vec<Sandbox> = serde_json::from_value(list["sandboxes"].clone())
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            out.list(
                &sandboxes,
                "No sandboxes. Create one: atelier sandbox create",
                &["ID", "NAME", "STATE", "DRIVER", "RESOURCES", "AGE"],
                |s| {
                    vec![
                        s.id.to_string(),
                        s.name.clone(),
                        s.state.to_string(),
                        s.driver.clone(),
                        format!("{} vCPU, {} MiB", s.resources.vcpus, s.resources.memory_mib),
                        age(s.created_at),
                    ]
                },
            );
        }
        SandboxCommand::Show { id } => {
            let sandbox: Sandbox = client.get(&format!("/sandboxes/{}", encode(&id))).await?;
            let previews: Vec<serde_json::Value> = client
                .get(&format!("/sandboxes/{}/previews", encode(&id)))
                .await?;
            show_with_previews(&sandbox, &previews, out);
        }
        SandboxCommand::Stop { id } => {
            let spinner = out.spinner(format!("stopping {id}…"));
            let r = client
                .json(client.request(Method::POST, &format!("/sandboxes/{}/stop", encode(&id))))
                .await;
            spinner.finish_and_clear();
            return finish(r?, out);
        }
        SandboxCommand::Start { id } => {
            let spinner = out.spinner(format!("starting {id}…"));
            let r = client
                .json(client.request(
                    Method::POST,
                    &format!("/sandboxes/{}/start?wait=true", encode(&id)),
                ))
                .await;
            spinner.finish_and_clear();
            return finish(r?, out);
        }
        SandboxCommand::Pause { id } => {
            return finish(
                client
                    .json(
                        client.request(Method::POST, &format!("/sandboxes/{}/pause", encode(&id))),
                    )
                    .await?,
                out,
            )
        }
        SandboxCommand::Resume { id } => {
            return finish(
                client
                    .json(
                        client.request(Method::POST, &format!("/sandboxes/{}/resume", encode(&id))),
                    )
                    .await?,
                out,
            )
        }
        SandboxCommand::Destroy { id } => {
            let spinner = out.spinner(format!("destroying {id}…"));
            let r = client
                .json(client.request(Method::DELETE, &format!("/sandboxes/{}", encode(&id))))
                .await;
            spinner.finish_and_clear();
            return finish(r?, out);
        }
        SandboxCommand::Exec(args) => return exec(args, client, out).await,
        SandboxCommand::Shell(args) => {
            return shell::attach(&args.id, args.session.as_deref(), None, client).await
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows the sandbox; a sandbox that ended in `error` makes the command fail.
fn finish(s: Sandbox, out: &Output) -> Result<ExitCode, ClientError> {
    show(&s, out);
    if s.state == atelier_core::SandboxState::Error {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn show(s: &Sandbox, out: &Output) {
    if out.json {
        out.json(s);
        return;
    }
    println!("{} ({})  {}", s.name, s.id, s.state);
    println!("  driver      {}", s.driver);
    println!(
        "  resources   {} vCPU, {} MiB RAM, {} MiB disk",
        s.resources.vcpus, s.resources.memory_mib, s.resources.disk_mib
    );
    println!("  image       {}", s.image);
    if let Some(w) = &s.workspace_id {
        println!("  workspace   {w}");
    }
    println!("  created     {} ago", age(s.created_at));
    if let Some(e) = &s.error {
        println!("  error       {e}");
    }
}

/// `sandbox show`: the sandbox, then where each dev command of its workspace opens.
fn show_with_previews(s: &Sandbox, previews: &[serde_json::Value], out: &Output) {
    if out.json {
        let mut value = serde_json::to_value(s).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("previews".into(), previews.to_vec().into());
        }
        out.json(&value);
        return;
    }
    show(s, out);
    for p in previews {
        let text = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
        let state = p["service"].as_str().unwrap_or("not started");
        let public = if p["public"].as_bool() == Some(true) {
            ", public"
        } else {
            ""
        };
        println!(
            "  preview     {} :{}  {}  ({state}{public})",
            text("name"),
            p["port"],
            text("url")
        );
    }
}

async fn exec(args: ExecArgs, client: &Client, out: &Output) -> Result<ExitCode, ClientError> {
    let mut env = BTreeMap::new();
    for e in &args.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| ClientError::Usage(format!("--env {e:?}: expected NAME=VALUE")))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    let (command, rest) = args
        .command
        .split_first()
        .ok_or_else(|| ClientError::Usage("no command given".into()))?;
    let (command, rest) = if args.shell {
        (args.command.join(" "), vec![])
    } else {
        (command.clone(), rest.to_vec())
    };
    let body = serde_json::json!({
        "command": command, "args": rest, "shell": args.shell, "env": env, "cwd": args.cwd,
        "timeout_ms": args.timeout.map(|t| (t * 1000.0).round() as u64),
    });
    let path = format!("/sandboxes/{}/exec", encode(&args.id));
    if out.json {
        let result: ExecResult = client.post(&path, &body).await?;
        out.json(&result);
        return Ok(exit_code(&result.status));
    }
    let response = client
        .send(
            client
                .request(Method::POST, &format!("{path}/stream"))
                .json(&body),
        )
        .await?;
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut status: Option<ExitStatus> = None;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ClientError::Protocol(format!("the output stream broke: {e}")))?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut data) = ("message", String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = if v.trim() == "stdout" {
                        "stdout"
                    } else if v.trim() == "stderr" {
                        "stderr"
                    } else if v.trim() == "exit" {
                        "exit"
                    } else {
                        "other"
                    };
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            let value: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            match event {
                "stdout" => {
                    let mut o = std::io::stdout();
                    let _ = o.write_all(value["data"].as_str().unwrap_or_default().as_bytes());
                    let _ = o.flush();
                }
                "stderr" => {
                    let mut e = std::io::stderr();
                    let _ = e.write_all(value["data"].as_str().unwrap_or_default().as_bytes());
                    let _ = e.flush();
                }
                "exit" => status = serde_json::from_value(value).ok(),
                _ => {}
            }
        }
    }
    let status = status.ok_or_else(|| {
        ClientError::Protocol("the command's stream ended without an exit status".into())
    })?;
    if status.timed_out {
        eprintln!("atelier: the command timed out and was killed");
    }
    Ok(exit_code(&status))
}

/// The remote exit code, or 128 + signal like a shell.
fn exit_code(status: &ExitStatus) -> ExitCode {
    let code = status
        .exit_code
        .unwrap_or_else(|| 128 + status.signal.unwrap_or(0));
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// `atelier sandbox shell` (and `atelier dev`): the local terminal, in raw mode, wired to
/// a shell in the sandbox over the manager's terminal WebSocket.
pub(crate) mod shell {
    use std::io::{IsTerminal, Read, Write};
    use std::process::ExitCode;

    use futures::{SinkExt, StreamExt};
    use reqwest::Method;
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
    use tokio_tungstenite::tungstenite::{self, Message};

    use crate::client::{Client, ClientError};
    use crate::commands::workspace::encode;

    /// Leaves raw mode however the session ends.
    struct RawMode;

    impl RawMode {
        fn enable() -> Result<Self, ClientError> {
            crossterm::terminal::enable_raw_mode().map_err(|e| {
                ClientError::Usage(format!("cannot put the terminal in raw mode: {e}"))
            })?;
            Ok(Self)
        }
    }

    impl Drop for RawMode {
        fn drop(&mut self) {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }

    /// The local terminal's size, within what the manager accepts.
    fn size() -> (u16, u16) {
        let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
        (cols.clamp(1, 1000), rows.clamp(1, 1000))
    }

    fn resize_message() -> Message {
        let (cols, rows) = size();
        Message::text(
            serde_json::json!({ "type": "resize", "cols": cols, "rows": rows }).to_string(),
        )
    }

    /// Why the manager refused the terminal, in the CLI's usual terms.
    fn refusal(e: tungstenite::Error, base: &str) -> ClientError {
        match e {
            tungstenite::Error::Http(answer) => {
                let status = answer.status().as_u16();
                if status == 401 {
                    return ClientError::Unauthorized;
                }
                let body: serde_json::Value = answer
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                let error = &body["error"];
                ClientError::Api {
                    status,
                    code: error["code"].as_str().unwrap_or("unknown").to_owned(),
                    message: error["message"]
                        .as_str()
                        .unwrap_or("the manager refused the terminal")
                        .to_owned(),
                    details: error["details"].clone(),
                }
            }
            other => ClientError::Unreachable {
                url: base.to_owned(),
                reason: other.to_string(),
            },
        }
    }

    /// Keystrokes, read on a thread of their own: a blocking read of a terminal cannot be
    /// cancelled, and must not hold up the runtime's shutdown.
    fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(16);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        rx
    }

    /// Opens (or, with `session`, reattaches to) a shell in sandbox `id` and relays the
    /// local terminal to it; returns the shell's exit code.
    pub async fn attach(
        id: &str,
        session: Option<&str>,
        cwd: Option<&str>,
        client: &Client,
    ) -> Result<ExitCode, ClientError> {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "atelier: stdin is not a terminal; the shell is interactive \
                 (use `atelier sandbox exec` from scripts)"
            );
            return Ok(ExitCode::from(2));
        }
        let (cols, rows) = size();
        let mut path = format!("/sandboxes/{}/terminal?cols={cols}&rows={rows}", encode(id));
        if let Some(s) = session {
            path.push_str(&format!("&session={}", encode(s)));
        }
        if let Some(c) = cwd {
            path.push_str(&format!("&cwd={}", encode(c)));
        }
        // The client's own request carries the URL and the token.
        let template = client
            .request(Method::GET, &path)
            .build()
            .map_err(|e| ClientError::Protocol(format!("building the request: {e}")))?;
        let mut url = template.url().clone();
        let base = format!("{}://{}", url.scheme(), url.authority());
        let ws_scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(ws_scheme)
            .map_err(|_| ClientError::Usage(format!("cannot open a WebSocket to {base}")))?;
        let mut request = ClientRequestBuilder::new(
            url.as_str()
                .parse()
                .map_err(|e| ClientError::Usage(format!("manager URL: {e}")))?,
        );
        if let Some(auth) = template
            .headers()
            .get(reqwest::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            request = request.with_header("Authorization", auth);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| refusal(e, &base))?;
        let (mut to_server, mut from_server) = socket.split();

        let mut resized =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                .map_err(|e| ClientError::Usage(format!("cannot watch the window size: {e}")))?;
        let mut keys = stdin_reader();
        let raw = RawMode::enable()?;
        let mut stdout = std::io::stdout();
        let mut session = None;
        let mut exit = None;
        loop {
            tokio::select! {
                msg = from_server.next() => match msg {
                    Some(Ok(Message::Binary(bytes))) => {
                        let _ = stdout.write_all(&bytes);
                        let _ = stdout.flush();
                    }
                    Some(Ok(Message::Text(text))) => {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        match v["type"].as_str() {
                            Some("session") => session = v["id"].as_str().map(str::to_owned),
                            Some("exit") => exit = v["code"].as_i64(),
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                key = keys.recv() => match key {
                    Some(bytes) => {
                        if to_server.send(Message::Binary(bytes.into())).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                _ = resized.recv() => {
                    if to_server.send(resize_message()).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_server.send(Message::Close(None)).await;
        drop(raw);
        match exit {
            Some(code) => Ok(ExitCode::from(
                u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            )),
            None => {
                eprintln!("\r\natelier: the connection to the shell was lost");
                if let Some(sid) = session {
                    eprintln!(
                        "atelier: it keeps running for 5 minutes: atelier sandbox shell {id} --session {sid}"
                    );
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
