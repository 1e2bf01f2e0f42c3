use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use atelier_core::Task;
use clap::{Args, Subcommand};
use reqwest::Method;

use super::workspace::encode;
use crate::client::{Client, ClientError};
use crate::output::{age, Output};

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Create a task (and queue it unless --backlog).
    Create(CreateArgs),
    /// List tasks, newest first.
    #[command(alias = "ls")]
    List {
        /// Only these statuses (comma-separated), e.g. running,needs_attention.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, short)]
        workspace: Option<String>,
    },
    /// Show a task: status, progress, todos, files, usage, summary.
    Show { id: String },
    /// Print the task branch's diff.
    Diff { id: String },
    /// Print the task's timeline of agent events (--follow to keep watching).
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// Answer a pending question or permission of a task.
    Answer(AnswerArgs),
    /// Queue a task from the backlog (or retry a failed one).
    Dispatch { id: String },
    /// Stop a task.
    Cancel { id: String },
    /// Accept a task in review.
    Done { id: String },
}

#[derive(Args)]
pub struct CreateArgs {
    /// What the agent should do.
    prompt: String,
    #[arg(long, short)]
    workspace: String,
    #[arg(long)]
    title: Option<String>,
    /// low, medium, high or max.
    #[arg(long, default_value = "medium")]
    effort: String,
    #[arg(long)]
    base_branch: Option<String>,
    /// Leave it in the backlog instead of queueing it.
    #[arg(long)]
    backlog: bool,
}

#[derive(Args)]
pub struct AnswerArgs {
    task: String,
    /// The interaction id (see `atelier attention`); default: the task's oldest pending one.
    #[arg(long)]
    id: Option<String>,
    /// Permission reply: once, always or reject.
    #[arg(long, conflicts_with_all = ["choice", "dismiss"])]
    reply: Option<String>,
    /// Message with a permission reply (a reject with a message lets the agent go on).
    #[arg(long)]
    message: Option<String>,
    /// Question answer (repeat for several questions, in order; commas pick several options).
    #[arg(long = "choice")]
    choice: Vec<String>,
    /// Dismiss the question (or refuse the permission).
    #[arg(long)]
    dismiss: bool,
}

pub async fn run(cmd: TaskCommand, client: &Client, out: &Output) -> Result<ExitCode, ClientError> {
    match cmd {
        TaskCommand::Create(a) => {
            let body = serde_json::json!({
                "prompt": a.prompt, "workspace": a.workspace, "title": a.title, "effort": a.effort,
                "base_branch": a.base_branch, "dispatch": !a.backlog,
            });
            let body: serde_json::Map<String, serde_json::Value> = body
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let t: Task = client.post("/tasks", &body).await?;
            show(&t, out);
        }
        TaskCommand::List { status, workspace } => {
            let mut q = vec![];
            if let Some(s) = status {
                q.push(format!("status={}", encode(&s)));
            }
            if let Some(w) = workspace {
                q.push(format!("workspace={}", encode(&w)));
            }
            let tasks: Vec<Task> = client.get(&format!("/tasks?{}", q.join("&"))).await?;
            out.list(
                &tasks,
                "No tasks. Create one: atelier task create \"…\" --workspace NAME",
                &["ID", "STATUS", "PROGRESS", "TITLE", "BRANCH", "AGE"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.status.to_string(),
                        t.progress
                            .map(|p| format!("{p}%"))
                            .unwrap_or_else(|| "-".into()),
                        t.title.clone(),
                        t.branch.clone(),
                        age(t.created_at),
                    ]
                },
            );
        }
        TaskCommand::Show { id } => {
            show(&client.get(&format!("/tasks/{}", encode(&id))).await?, out)
        }
        TaskCommand::Diff { id } => {
            let r = client
                .send(client.request(Method::GET, &format!("/tasks/{}/diff", encode(&id))))
                .await?;
            print!(
                "{}",
                r.text()
                    .await
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
            );
        }
        TaskCommand::Logs { id, follow } => {
            let mut after = 0i64;
            loop {
                let events: Vec<serde_json::Value> = client
                    .get(&format!("/tasks/{}/events?after={after}", encode(&id)))
                    .await?;
                for e in &events {
                    after = e["seq"].as_i64().unwrap_or(after);
                    if out.json {
                        println!("{e}");
                    } else {
                        println!("{}", describe(&e["event"]));
                    }
                }
                let _ = std::io::stdout().flush();
                if !follow {
                    break;
                }
                let t: Task = client.get(&format!("/tasks/{}", encode(&id))).await?;
                if !t.status.is_active()
                    && events.is_empty()
                    && t.status != atelier_core::TaskStatus::Queued
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        TaskCommand::Answer(a) => {
            let pending: Vec<serde_json::Value> = client.get("/attention").await?;
            let ask = pending
                .iter()
                .find(|p| {
                    p["task_id"] == a.task.as_str()
                        && a.id.as_deref().is_none_or(|id| p["id"] == id)
                })
                .ok_or_else(|| {
                    ClientError::Usage(format!(
                        "task {} has no pending question or permission",
                        a.task
                    ))
                })?;
            let body = if a.dismiss {
                serde_json::json!({"kind": "dismiss"})
            } else if let Some(reply) = a.reply {
                serde_json::json!({"kind": "permission", "reply": reply, "message": a.message})
            } else if !a.choice.is_empty() {
                let answers: Vec<Vec<String>> = a
                    .choice
                    .iter()
                    .map(|c| c.split(',').map(|s| s.trim().to_owned()).collect())
                    .collect();
                serde_json::json!({"kind": "question", "answers": answers})
            } else {
                return Err(ClientError::Usage(
                    "give --reply, --choice or --dismiss".into(),
                ));
            };
            let path = format!(
                "/attention/{}/{}/answer",
                encode(&a.task),
                encode(ask["id"].as_str().unwrap_or_default())
            );
            client
                .send(client.request(Method::POST, &path).json(&body))
                .await?;
            if !out.json {
                println!("answered {}", ask["title"].as_str().unwrap_or_default());
            }
        }
        TaskCommand::Dispatch { id } => show(
            &client
                .json(client.request(Method::POST, &format!("/tasks/{}/dispatch", encode(&id))))
                .await?,
            out,
        ),
        TaskCommand::Cancel { id } => show(
            &client
                .json(client.request(Method::POST, &format!("/tasks/{}/cancel", encode(&id))))
                .await?,
            out,
        ),
        TaskCommand::Done { id } => show(
            &client
                .json(client.request(Method::POST, &format!("/tasks/{}/done", encode(&id))))
                .await?,
            out,
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Every pending question and permission across tasks.
pub async fn attention(client: &Client, out: &Output) -> Result<ExitCode, ClientError> {
    let pending: Vec<serde_json::Value> = client.get("/attention").await?;
    out.list(
        &pending,
        "Nothing needs you.",
        &["TASK", "ID", "KIND", "WAITING", "ASK"],
        |p| {
            let waited = p["asked_at"]
                .as_str()
                .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok())
                .map(age)
                .unwrap_or_default();
            vec![
                p["task_id"].as_str().unwrap_or_default().to_owned(),
                p["id"].as_str().unwrap_or_default().to_owned(),
                p["kind"].as_str().unwrap_or_default().to_owned(),
                waited,
                p["title"].as_str().unwrap_or_default().to_owned(),
            ]
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn describe(e: &serde_json::Value) -> String {
    let kind = e["type"].as_str().unwrap_or("?");
    match kind {
        "text" => format!(
            "text      {}",
            e["text"]
                .as_str()
                .or(e["delta"].as_str())
                .unwrap_or_default()
        ),
        "tool_call" => format!(
            "tool      {} {}",
            e["name"].as_str().unwrap_or_default(),
            e["status"].as_str().unwrap_or_default()
        ),
        "todos" => format!(
            "todos     {} items",
            e["items"].as_array().map(|a| a.len()).unwrap_or(0)
        ),
        "interaction_asked" => format!("ASK       {}", e["title"].as_str().unwrap_or_default()),
        "turn_ended" => format!("turn end  {}", e["reason"].as_str().unwrap_or_default()),
        "branch_pushed" => format!(
            "pushed    {} to {}",
            e["branch"].as_str().unwrap_or_default(),
            e["remote"].as_str().unwrap_or_default()
        ),
        "push_failed" => format!(
            "PUSH FAILED {} to {}: {}",
            e["branch"].as_str().unwrap_or_default(),
            e["remote"].as_str().unwrap_or_default(),
            e["error"].as_str().unwrap_or_default()
        ),
        _ => format!("{kind:<9} {e}"),
    }
}

fn show(t: &Task, out: &Output) {
    if out.json {
        out.json(t);
        return;
    }
    println!("{} ({})  {}", t.title, t.id, t.status);
    println!("  branch      {} (from {})", t.branch, t.base_branch);
    if let Some(p) = t.progress {
        println!("  progress    {p}%");
    }
    for todo in &t.todos {
        println!("  todo        [{}] {}", todo.status, todo.content);
    }
    for c in &t.changes {
        println!("  changed     {} +{} -{}", c.path, c.added, c.removed);
    }
    if t.usage.input_tokens + t.usage.output_tokens > 0 {
        println!(
            "  usage       {} in / {} out tokens, ${:.4}",
            t.usage.input_tokens, t.usage.output_tokens, t.usage.cost_usd
        );
    }
    if let Some(s) = &t.summary {
        println!("  summary     {s}");
    }
    if let Some(p) = &t.push {
        match &p.error {
            None => println!("  pushed      to {}", p.remote),
            Some(e) => println!("  push failed to {}: {e}", p.remote),
        }
    }
    if let Some(e) = &t.error {
        println!("  error       {e}");
    }
}
