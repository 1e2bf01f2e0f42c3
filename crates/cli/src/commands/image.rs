use std::process::ExitCode;

use clap::Subcommand;
use reqwest::Method;

use super::workspace::encode;
use crate::client::{Client, ClientError};
use crate::output::Output;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// List image recipes and their builds.
    #[command(alias = "ls")]
    List,
    /// Build an image (kernel, initramfs, root filesystem); cached by recipe and inputs.
    Build { name: String },
    /// Remove every build of an image.
    #[command(alias = "rm")]
    Remove { name: String },
}

pub async fn run(
    cmd: ImageCommand,
    client: &Client,
    out: &Output,
) -> Result<ExitCode, ClientError> {
    match cmd {
        ImageCommand::List => {
            let images: Vec<serde_json::Value> = client.get("/images").await?;
            out.list(
                &images,
                "No image recipes.",
                &["NAME", "BUILT", "ID", "KERNEL", "ROOTFS"],
                |i| {
                    vec![
                        i["name"].as_str().unwrap_or_default().to_owned(),
                        if i["built"] == true {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        i["id"].as_str().unwrap_or("-").to_owned(),
                        i["kernel_version"].as_str().unwrap_or("-").to_owned(),
                        i["rootfs_bytes"]
                            .as_u64()
                            .map(|b| format!("{} MiB", b >> 20))
                            .unwrap_or_else(|| "-".into()),
                    ]
                },
            );
        }
        ImageCommand::Build { name } => {
            let spinner = out.spinner(format!(
                "building image {name} (the first build fetches the kernel)…"
            ));
            let r: Result<serde_json::Value, _> = client
                .json(client.request(Method::POST, &format!("/images/{}/build", encode(&name))))
                .await;
            spinner.finish_and_clear();
            let image = r?;
            if out.json {
                out.json(&image);
            } else {
                println!(
                    "image {} built ({})",
                    name,
                    image["id"].as_str().unwrap_or("?")
                );
            }
        }
        ImageCommand::Remove { name } => {
            client
                .send(client.request(Method::DELETE, &format!("/images/{}", encode(&name))))
                .await?;
            if !out.json {
                println!("removed image {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
