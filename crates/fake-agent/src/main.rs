//! `fake-agent`: a scripted coding agent that speaks the OpenCode 1.x server protocol,
//! Claude Code's stream-json, ACP, or Codex's app-server JSON-RPC.
//!
//! ```text
//! fake-agent --scenario scenarios/permission_once.yaml [--port 0] [--hostname 127.0.0.1]
//!            [--directory DIR] [--password PW] [--no-replay]
//! fake-agent --protocol claude|acp|codex --scenario S.yaml [--directory DIR]
//! ```
//!
//! As OpenCode it prints `opencode server listening on http://HOST:PORT` once it
//! listens, like `opencode serve`. As Claude, ACP or Codex it speaks JSON lines over
//! stdin/stdout (run it under `atelier-stdio-host`, as the real agents are). The scenario
//! starts when a prompt arrives.

use std::path::PathBuf;
use std::process::ExitCode;

use atelier_fake_agent::{FakeConfig, Scenario};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "fake-agent",
    about = "A scenario-driven fake coding agent (OpenCode 1.x server, Claude stream-json, ACP, Codex app-server)"
)]
struct Args {
    /// The YAML scenario to play.
    #[arg(long)]
    scenario: PathBuf,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    hostname: String,
    /// Project directory: where `edit_file` writes (default: the current directory).
    #[arg(long)]
    directory: Option<PathBuf>,
    /// Require HTTP Basic auth (user `opencode`) with this password.
    #[arg(long, env = "OPENCODE_SERVER_PASSWORD")]
    password: Option<String>,
    /// Behave like the real OpenCode 1.18.33: no SSE ids, `Last-Event-ID` ignored.
    #[arg(long)]
    no_replay: bool,
    /// The protocol to speak: `opencode` (HTTP server), `claude`, `acp` or `codex` (stdio).
    #[arg(long, default_value = "opencode")]
    protocol: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !matches!(
        args.protocol.as_str(),
        "opencode" | "claude" | "acp" | "codex"
    ) {
        eprintln!(
            "fake-agent: unsupported protocol {:?} (opencode, claude, acp, codex)",
            args.protocol
        );
        return ExitCode::from(2);
    }
    let scenario = match Scenario::from_file(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let directory = match args.directory.map(Ok).unwrap_or_else(std::env::current_dir) {
        Ok(d) => std::path::absolute(&d).unwrap_or(d),
        Err(e) => {
            eprintln!("fake-agent: no directory: {e}");
            return ExitCode::from(2);
        }
    };
    match args.protocol.as_str() {
        "claude" => {
            atelier_fake_agent::play_claude(scenario, directory).await;
            return ExitCode::SUCCESS;
        }
        "acp" => {
            atelier_fake_agent::play_acp(scenario, directory).await;
            return ExitCode::SUCCESS;
        }
        "codex" => {
            atelier_fake_agent::play_codex(scenario, directory).await;
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let listener = match tokio::net::TcpListener::bind((args.hostname.as_str(), args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "fake-agent: cannot listen on {}:{}: {e}",
                args.hostname, args.port
            );
            return ExitCode::from(1);
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake-agent: {e}");
            return ExitCode::from(1);
        }
    };
    let mut cfg = FakeConfig::new(scenario, directory);
    cfg.password = args.password.filter(|p| !p.is_empty());
    cfg.replay = !args.no_replay;
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "{}http://{addr}",
            atelier_runtimes::opencode::LISTENING_PREFIX
        );
        let _ = out.flush();
    }
    match atelier_fake_agent::serve(cfg, listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-agent: {e}");
            ExitCode::from(1)
        }
    }
}
