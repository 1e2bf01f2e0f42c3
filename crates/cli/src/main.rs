//! `atelier`: the manager (`atelier serve`) and a client for everything its API does.

mod client;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::ClientError;

#[derive(Parser)]
#[command(
    name = "atelier",
    version,
    about = "Run AI coding agents in sandboxes, dispatch work and review it later."
)]
struct Cli {
    /// Manager URL for client commands.
    #[arg(
        long,
        global = true,
        env = "ATELIER_URL",
        default_value = "http://127.0.0.1:4000"
    )]
    url: String,
    /// API token; defaults to <data-dir>/admin.token when the manager is local.
    #[arg(long, global = true, env = "ATELIER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The manager's data directory (default: $XDG_DATA_HOME/atelier or ~/.local/share/atelier).
    #[arg(long, global = true, env = "ATELIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the manager: API, event stream, sandboxes.
    Serve(commands::serve::ServeArgs),
    /// Provision this host for Atelier (packages, pool, user, config, service, Caddy).
    ///
    /// Prints its plan (each step done, or what exactly is to do), then applies it; a
    /// second run changes nothing. The data directory is /var/lib/atelier (--data-dir
    /// does not apply).
    Init(commands::init::InitArgs),
    /// Show the manager's driver, versions and counts.
    System,
    /// Manage workspaces (repos, commands, secrets, resources).
    #[command(subcommand, alias = "ws")]
    Workspace(Box<commands::workspace::WorkspaceCommand>),
    /// Dispatch prompts to coding agents and review their work.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// Every question and permission request waiting for you.
    Attention,
    /// Build, check and follow a workspace's prebuild (its setup captured once).
    #[command(subcommand)]
    Prebuild(commands::prebuild::PrebuildCommand),
    /// Build and list the images sandboxes boot from.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Manage sandboxes and run commands in them.
    #[command(subcommand, alias = "sb")]
    Sandbox(commands::sandbox::SandboxCommand),
    /// A shell in a fresh sandbox with a host folder at /workspace (destroyed on exit).
    Dev(commands::dev::DevArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, ClientError> {
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(atelier_server::default_data_dir);
    let client = match cli.command {
        Command::Serve(args) => {
            return commands::serve::run(args, data_dir)
                .await
                .map(|_| ExitCode::SUCCESS)
        }
        Command::Init(args) => return commands::init::run(args),
        _ => client::Client::new(&cli.url, cli.token.clone(), &data_dir)?,
    };
    let out = output::Output { json: cli.json };
    match cli.command {
        Command::Serve(_) | Command::Init(_) => Ok(ExitCode::SUCCESS),
        Command::System => commands::system::run(&client, &out).await,
        Command::Workspace(cmd) => commands::workspace::run(*cmd, &client, &out).await,
        Command::Sandbox(cmd) => commands::sandbox::run(cmd, &client, &out).await,
        Command::Dev(args) => commands::dev::run(args, &client, &out).await,
        Command::Image(cmd) => commands::image::run(cmd, &client, &out).await,
        Command::Prebuild(cmd) => commands::prebuild::run(cmd, &client, &out).await,
        Command::Task(cmd) => commands::task::run(cmd, &client, &out).await,
        Command::Attention => commands::task::attention(&client, &out).await,
    }
}
