//! `atelier-agent`: the agent that runs inside each sandbox microVM.
//!
//! It serves the HTTP/1.1 API documented in [`atelier_proto`] over TCP, a Unix socket or
//! AF_VSOCK ([`transport`]): health, command execution ([`exec`]), file access confined to
//! its roots ([`files`]) and supervised services ([`services`]). As PID 1 it first forks a
//! tiny reaping init ([`init`]).

pub mod api;
pub mod error;
pub mod exec;
pub mod files;
pub mod guest;
pub mod health;
pub mod init;
pub mod process;
pub mod pty;
pub mod services;
pub mod transport;
pub mod tunnel;
pub mod users;
pub mod utf8;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use atelier_proto::{AgentAddr, LISTENING_BANNER, TOKEN_ENV};
use clap::Parser;

use crate::api::AppState;
use crate::files::Roots;
use crate::process::ProcessContext;
use crate::services::Supervisor;
use crate::transport::AgentListener;

/// Command line of `atelier-agent`.
#[derive(Debug, Parser)]
#[command(name = "atelier-agent", version, about = "Atelier's in-VM agent")]
pub struct Cli {
    /// Where to listen: tcp:HOST:PORT, unix:PATH or vsock:CID:PORT.
    #[arg(long, required_unless_present = "guest_config")]
    pub listen: Option<AgentAddr>,
    /// File holding the bearer token (else the ATELIER_AGENT_TOKEN environment variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Directory file operations are confined to; repeatable. The first is the default
    /// working directory and the base of relative paths.
    #[arg(long = "root", required_unless_present = "guest_config")]
    pub roots: Vec<PathBuf>,
    /// Directory for the agent's state (service logs).
    #[arg(long, required_unless_present = "guest_config")]
    pub state_dir: Option<PathBuf>,
    /// Guest mode: read listen address and token from this config disk (JSON padded
    /// with NULs), and, as PID 1, set the VM up (mounts, hostname, clock, network).
    #[arg(long, conflicts_with_all = ["listen", "token_file", "roots", "state_dir"])]
    pub guest_config: Option<PathBuf>,
}

/// A resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: AgentAddr,
    pub token: String,
    pub roots: Vec<PathBuf>,
    pub state_dir: PathBuf,
    /// Running as a VM's agent (from `--guest-config`).
    pub guest: bool,
}

/// Reads the token from `--token-file` (trimmed) or the environment; refuses an empty one.
pub fn load_token(token_file: Option<&std::path::Path>) -> Result<String, String> {
    let token = match token_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("reading token file {}: {e}", p.display()))?
            .trim()
            .to_string(),
        None => std::env::var(TOKEN_ENV)
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        return Err(format!(
            "refusing to start without a token (use --token-file or set {TOKEN_ENV})"
        ));
    }
    Ok(token)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Entry point of the binary.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let config = match resolve_config(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("atelier-agent: {e}");
            return ExitCode::from(2);
        }
    };
    init::init_if_pid1();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("atelier-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(config)) {
        // Do not wait for in-flight requests or blocking tasks.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("atelier-agent: {e}");
            std::process::exit(1)
        }
    }
}

/// Flags, or the guest config disk (whose machine set-up PID 1 performs first, once).
fn resolve_config(cli: Cli) -> Result<Config, String> {
    if let Some(path) = &cli.guest_config {
        let guest_cfg = guest::read(path)?;
        if std::process::id() == 1 {
            guest::set_up_machine(&guest_cfg)?;
        }
        return guest::agent_config(&guest_cfg);
    }
    match (cli.listen, cli.state_dir) {
        (Some(listen), Some(state_dir)) => Ok(Config {
            listen,
            token: load_token(cli.token_file.as_deref())?,
            roots: cli.roots,
            state_dir,
            guest: false,
        }),
        _ => Err("--listen, --root and --state-dir are required (or --guest-config)".into()),
    }
}

/// Installs the SIGTERM/SIGINT handlers now and returns a future resolving on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = &'static str>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Binds, prints the banner, serves until SIGTERM/SIGINT, then stops every service.
pub async fn serve(config: Config) -> Result<(), String> {
    let roots = Arc::new(Roots::new(&config.roots).map_err(|e| format!("roots: {e}"))?);
    let procs = Arc::new(ProcessContext::new(roots.clone()));
    let services = Arc::new(
        Supervisor::new(config.state_dir.join("services"), procs.clone())
            .map_err(|e| format!("state dir {}: {e}", config.state_dir.display()))?,
    );
    let state = Arc::new(AppState {
        token: std::sync::RwLock::new(config.token),
        identity_lock: tokio::sync::Mutex::new(()),
        started: Instant::now(),
        roots,
        procs: procs.clone(),
        services: services.clone(),
        guest: config.guest,
    });
    // Install the handlers before announcing ourselves.
    let signal = shutdown_signal()?;
    let listener = AgentListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let bound = listener
        .local_agent_addr()
        .map_err(|e| format!("local address: {e}"))?;
    let socket_path = listener.socket_path().map(|p| p.to_path_buf());
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{LISTENING_BANNER} {bound}");
        let _ = out.flush();
    }
    tracing::info!(addr = %bound, pid = std::process::id(), "atelier-agent listening");
    let app = api::router(state);
    tokio::select! {
        r = axum::serve(listener, app) => {
            r.map_err(|e| format!("server failed: {e}"))?;
        }
        sig = signal => {
            tracing::info!(signal = sig, "shutting down: stopping services");
            procs.active.kill_all();
            services.stop_all().await;
        }
    }
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    tracing::info!("bye");
    Ok(())
}
