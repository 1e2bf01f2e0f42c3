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
    /// Show one image: its build and what it holds, with versions.
    Show { name: String },
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
        ImageCommand::Show { name } => {
            let image: serde_json::Value =
                client.get(&format!("/images/{}", encode(&name))).await?;
            if out.json {
                out.json(&image);
                return Ok(ExitCode::SUCCESS);
            }
            let field = |k: &str| match &image[k] {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            println!("image    {}", field("name"));
            println!("built    {}", field("built"));
            println!("id       {}", field("id"));
            println!("kernel   {}", field("kernel_version"));
            if let Some(b) = image["rootfs_bytes"].as_u64() {
                println!("rootfs   {} MiB", b >> 20);
            }
            if image["building"] == true {
                println!("building now");
            }
            let contents = image["contents"].as_array().cloned().unwrap_or_default();
            if !contents.is_empty() {
                println!();
                out.list(&contents, "", &["NAME", "VERSION"], |c| {
                    vec![
                        c["name"].as_str().unwrap_or_default().to_owned(),
                        c["version"].as_str().unwrap_or_default().to_owned(),
                    ]
                });
            }
        }
        ImageCommand::Build { name } => {
            let spinner = out.spinner(format!(
                "building image {name} (the first build fetches the kernel)…"
            ));
            let path = format!("/images/{}", encode(&name));
            let build = client
                .json::<serde_json::Value>(client.request(Method::POST, &format!("{path}/build")));
            tokio::pin!(build);
            // The build answers when it is done; meanwhile its latest step is shown.
            let r = loop {
                tokio::select! {
                    r = &mut build => break r,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                        if let Ok(image) = client.get::<serde_json::Value>(&path).await {
                            if let Some(step) = image["steps"].as_array().and_then(|s| s.last()) {
                                spinner.set_message(format!(
                                    "building image {name}: {}",
                                    step.as_str().unwrap_or_default()
                                ));
                            }
                        }
                    }
                }
            };
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
