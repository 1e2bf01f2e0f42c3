//! `atelier-stdio-host`: runs a stdio coding agent (Claude Code, an ACP agent) inside the
//! sandbox and serves its transcript over HTTP, so the manager reaches it like
//! `opencode serve` and can reconnect or restart without losing a line.
//!
//! ```text
//! atelier-stdio-host --port 4097 --transcript /var/lib/atelier/agent.jsonl \
//!     [--hostname 127.0.0.1] [--cwd DIR] [--token T] [--heartbeat-ms 15000] \
//!     -- claude -p --verbose --output-format stream-json --input-format stream-json …
//! ```
//!
//! Prints `atelier-stdio-host listening on http://HOST:PORT` once it listens. The routes
//! are documented in `atelier_runtimes::stdio_host`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use atelier_runtimes::stdio_host::{LISTENING_PREFIX, TOKEN_ENV};
use atelier_stdio_host::{self as stdio_host, HostConfig};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "atelier-stdio-host",
    about = "Runs a stdio coding agent and serves its transcript over HTTP"
)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    hostname: String,
    /// The transcript file (JSON lines); continued if it exists.
    #[arg(long)]
    transcript: PathBuf,
    /// The agent's working directory.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>` (not passed on to the agent).
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Period of the SSE heartbeat, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    heartbeat_ms: u64,
    /// The agent's command line.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind((args.hostname.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "atelier-stdio-host: cannot listen on {}:{}: {e}",
                args.hostname, args.port
            );
            return ExitCode::from(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("atelier-stdio-host: {e}");
            return ExitCode::from(1);
        }
    };
    let mut cfg = HostConfig::new(args.command, args.transcript);
    cfg.cwd = args.cwd;
    cfg.token = args.token.filter(|t| !t.is_empty());
    cfg.heartbeat = Duration::from_millis(args.heartbeat_ms.max(10));
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{LISTENING_PREFIX}http://{addr}");
        let _ = out.flush();
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("atelier-stdio-host: {e}");
            return ExitCode::from(1);
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    match stdio_host::serve_until(cfg, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("atelier-stdio-host: {e}");
            ExitCode::from(1)
        }
    }
}
