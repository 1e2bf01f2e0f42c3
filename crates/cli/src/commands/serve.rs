use std::net::SocketAddr;
use std::path::PathBuf;

use atelier_server::{FileConfig, ServeOptions};
use clap::Args;

use crate::client::ClientError;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:4000, or `listen` in config.toml].
    #[arg(long, env = "ATELIER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Hypervisor driver: auto, local, qemu or firecracker [default: auto].
    #[arg(long, env = "ATELIER_DRIVER")]
    driver: Option<String>,
    /// The public name of this manager behind a TLS front (Caddy): the dashboard at
    /// https://DOMAIN, previews at https://<port>-<sandbox>.preview.DOMAIN
    /// [default: `[preview]` in config.toml, else plain HTTP on the listen address].
    #[arg(long, env = "ATELIER_DOMAIN", value_name = "DOMAIN")]
    domain: Option<String>,
    /// Log filter (e.g. `info`, `atelier_server=debug`).
    #[arg(long, env = "ATELIER_LOG", default_value = "info")]
    log: String,
}

pub async fn run(args: ServeArgs, data_dir: PathBuf) -> Result<(), ClientError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let file = FileConfig::load(&data_dir)
        .map_err(|e| ClientError::Serve(format!("bad config file: {e}")))?;
    let mut opts = ServeOptions::from_config(data_dir, &file)
        .map_err(|e| ClientError::Serve(format!("bad config file: {e}")))?;
    if let Some(listen) = args.listen {
        opts.listen = listen;
    }
    if let Some(domain) = &args.domain {
        opts.preview.public_url = Some(format!("https://{domain}"));
        if opts.preview.domain.is_none() {
            opts.preview.domain = Some(format!("preview.{domain}"));
        }
        opts.preview.validate().map_err(|(field, message)| {
            ClientError::Usage(format!("--domain: {field}: {message}"))
        })?;
    }
    if let Some(driver) = args.driver {
        opts.driver = driver.parse().map_err(ClientError::Usage)?;
    }
    atelier_server::serve(opts, |ready| {
        if let Some(token) = &ready.new_token {
            println!(
                "Admin API token (shown once; kept in {}):\n  {token}",
                ready.token_path.display()
            );
        }
        println!(
            "Atelier is listening on http://{} (driver: {})",
            ready.addr, ready.driver
        );
        println!("API docs: http://{}/swagger", ready.addr);
    })
    .await
    .map_err(|e| ClientError::Serve(e.to_string()))
}
