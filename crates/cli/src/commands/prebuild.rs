use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use reqwest::Method;

use super::workspace::encode;
use crate::client::{Client, ClientError};
use crate::output::{age, Output};

#[derive(Subcommand)]
pub enum PrebuildCommand {
    /// Build the workspace's prebuild (clone repos, run init commands, capture).
    Build {
        /// Workspace id or name.
        workspace: String,
        /// Print the build log as it runs and wait for the end.
        #[arg(long, short)]
        follow: bool,
    },
    /// The workspace's current prebuild, the build in progress, and the history.
    Status { workspace: String },
    /// A prebuild's build log.
    Logs {
        /// Prebuild id.
        id: String,
        /// Keep printing while the prebuild builds.
        #[arg(long, short)]
        follow: bool,
    },
    /// Make a running sandbox of the workspace its prebuild (the sandbox ends stopped).
    Promote {
        workspace: String,
        /// The sandbox to capture.
        sandbox: String,
    },
    /// Check the current prebuild against its repos now; rebuilds when stale and the
    /// workspace's auto_rebuild is on.
    Check { workspace: String },
}

pub async fn run(
    cmd: PrebuildCommand,
    client: &Client,
    out: &Output,
) -> Result<ExitCode, ClientError> {
    match cmd {
        PrebuildCommand::Build { workspace, follow } => {
            let p: serde_json::Value = client
                .json(client.request(
                    Method::POST,
                    &format!("/workspaces/{}/prebuilds", encode(&workspace)),
                ))
                .await?;
            let id = p["id"].as_str().unwrap_or_default().to_owned();
            if follow {
                return follow_log(client, &id, out).await;
            }
            if out.json {
                out.json(&p);
            } else {
                println!("prebuild {id} is building; `atelier prebuild logs -f {id}` follows it");
            }
        }
        PrebuildCommand::Promote { workspace, sandbox } => {
            let p: serde_json::Value = client
                .post(
                    &format!("/workspaces/{}/prebuilds", encode(&workspace)),
                    &serde_json::json!({ "from_sandbox": sandbox }),
                )
                .await?;
            let id = p["id"].as_str().unwrap_or_default().to_owned();
            return follow_log(client, &id, out).await;
        }
        PrebuildCommand::Status { workspace } => {
            let s: serde_json::Value = client
                .get(&format!("/workspaces/{}/prebuilds", encode(&workspace)))
                .await?;
            print_status(&s, out);
        }
        PrebuildCommand::Check { workspace } => {
            let s: serde_json::Value = client
                .json(client.request(
                    Method::POST,
                    &format!("/workspaces/{}/prebuilds/check", encode(&workspace)),
                ))
                .await?;
            print_status(&s, out);
        }
        PrebuildCommand::Logs { id, follow } => {
            if follow {
                return follow_log(client, &id, out).await;
            }
            let mut offset = 0u64;
            loop {
                let chunk: serde_json::Value = client
                    .get(&format!("/prebuilds/{}/logs?offset={offset}", encode(&id)))
                    .await?;
                let data = chunk["data"].as_str().unwrap_or_default();
                print!("{data}");
                let next = chunk["next_offset"].as_u64().unwrap_or(offset);
                if next == offset || next >= chunk["size"].as_u64().unwrap_or(0) {
                    break;
                }
                offset = next;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the log until the prebuild leaves `building`; exits 1 if it failed.
async fn follow_log(client: &Client, id: &str, out: &Output) -> Result<ExitCode, ClientError> {
    let mut offset = 0u64;
    loop {
        let chunk: serde_json::Value = client
            .get(&format!("/prebuilds/{}/logs?offset={offset}", encode(id)))
            .await?;
        let data = chunk["data"].as_str().unwrap_or_default();
        if !out.json {
            print!("{data}");
            let _ = std::io::stdout().flush();
        }
        let next = chunk["next_offset"].as_u64().unwrap_or(offset);
        let drained = next >= chunk["size"].as_u64().unwrap_or(0);
        offset = next;
        if drained {
            let p: serde_json::Value = client.get(&format!("/prebuilds/{}", encode(id))).await?;
            match p["state"].as_str() {
                Some("building") => tokio::time::sleep(Duration::from_millis(500)).await,
                state => {
                    // The log may have grown between the read and the state.
                    let rest: serde_json::Value = client
                        .get(&format!("/prebuilds/{}/logs?offset={offset}", encode(id)))
                        .await?;
                    if out.json {
                        out.json(&p);
                    } else {
                        print!("{}", rest["data"].as_str().unwrap_or_default());
                    }
                    return Ok(if state == Some("failed") {
                        if !out.json {
                            eprintln!(
                                "prebuild {id} failed: {}",
                                p["error"].as_str().unwrap_or("unknown error")
                            );
                        }
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    });
                }
            }
        }
    }
}

fn print_status(s: &serde_json::Value, out: &Output) {
    if out.json {
        out.json(s);
        return;
    }
    match s["current"].as_object() {
        Some(_) => {
            let c = &s["current"];
            println!(
                "current:  {} ({}, {} clone(s), {})",
                c["id"].as_str().unwrap_or("?"),
                if c["memory_snapshot"] == true {
                    "disk + memory"
                } else {
                    "disk"
                },
                c["clones"].as_u64().unwrap_or(0),
                c["stale"]
                    .as_str()
                    .map(|r| format!("STALE: {r}"))
                    .unwrap_or_else(|| "fresh".into())
            );
            for r in c["commits"].as_array().into_iter().flatten() {
                println!(
                    "          {} {} @ {}",
                    r["path"].as_str().unwrap_or("?"),
                    r["branch"].as_str().unwrap_or("?"),
                    r["commit"].as_str().unwrap_or("?").get(..12).unwrap_or("?")
                );
            }
        }
        None => println!("current:  none (`atelier prebuild build <workspace>` makes one)"),
    }
    if let Some(b) = s["building"].as_object() {
        println!(
            "building: {}",
            b.get("id").and_then(|v| v.as_str()).unwrap_or("?")
        );
    }
    let history = s["history"].as_array().cloned().unwrap_or_default();
    out.list(
        &history,
        "",
        &["ID", "STATE", "ORIGIN", "AGE", "ERROR"],
        |p| {
            vec![
                p["id"].as_str().unwrap_or_default().to_owned(),
                p["state"].as_str().unwrap_or_default().to_owned(),
                p["origin"].as_str().unwrap_or_default().to_owned(),
                p["created_at"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .map(age)
                    .unwrap_or_default(),
                p["error"].as_str().unwrap_or("").chars().take(60).collect(),
            ]
        },
    );
}
