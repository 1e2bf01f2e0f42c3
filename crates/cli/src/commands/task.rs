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
    /// Print the task branch's diff (coloured on a terminal unless NO_COLOR is set).
    Diff {
        id: String,
        /// Only the files changed, with lines added and removed.
        #[arg(long)]
        stat: bool,
    },
    /// Print the task's timeline of agent events (--follow to keep watching until the
    /// task stops; exits non-zero if it failed).
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
            show(&t, out, &[]);
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
            let t: Task = client.get(&format!("/tasks/{}", encode(&id))).await?;
            show_task(client, out, &t).await?;
        }
        TaskCommand::Diff { id, stat } => {
            let t: Task = client.get(&format!("/tasks/{}", encode(&id))).await?;
            if stat {
                print_stat(&t);
                return Ok(ExitCode::SUCCESS);
            }
            let r = client
                .send(client.request(Method::GET, &format!("/tasks/{}/diff", encode(&id))))
                .await;
            let diff = match r {
                Ok(r) => r
                    .text()
                    .await
                    .map_err(|e| ClientError::Protocol(e.to_string()))?,
                Err(ClientError::Api { status: 404, .. }) => {
                    return Err(ClientError::Usage(format!(
                        "task {id} is {}: its diff is computed when the agent's turn ends",
                        t.status
                    )))
                }
                Err(e) => return Err(e),
            };
            if diff.is_empty() {
                println!("No changes on {} against {}.", t.branch, t.base_branch);
            } else if colour(out) {
                print!("{}", colourize(&diff));
            } else {
                print!("{diff}");
            }
        }
        TaskCommand::Logs { id, follow } => return logs(client, out, &id, follow).await,
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
            &[],
        ),
        TaskCommand::Cancel { id } => show(
            &client
                .json(client.request(Method::POST, &format!("/tasks/{}/cancel", encode(&id))))
                .await?,
            out,
            &[],
        ),
        TaskCommand::Done { id } => show(
            &client
                .json(client.request(Method::POST, &format!("/tasks/{}/done", encode(&id))))
                .await?,
            out,
            &[],
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
            vec![
                p["task_id"].as_str().unwrap_or_default().to_owned(),
                p["id"].as_str().unwrap_or_default().to_owned(),
                p["kind"].as_str().unwrap_or_default().to_owned(),
                waited(p),
                p["title"].as_str().unwrap_or_default().to_owned(),
            ]
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// One line for an event of the timeline; `None` for what only adds noise (streamed text
/// pieces before the full text, tool calls still pending).
fn describe(e: &serde_json::Value) -> Option<String> {
    let kind = e["type"].as_str().unwrap_or("?");
    let s = |k: &str| e[k].as_str().unwrap_or_default();
    Some(match kind {
        "text" => format!("text      {}", e["text"].as_str()?),
        "reasoning" => return None,
        "tool_call" => match s("status") {
            "pending" => return None,
            status => format!("tool      {} {status}", s("name")),
        },
        "todos" => {
            let items = e["items"].as_array().map(Vec::as_slice).unwrap_or_default();
            let done = items.iter().filter(|t| t["status"] == "completed").count();
            format!("todos     {done}/{} done", items.len())
        }
        "files_touched" => format!(
            "files     {}",
            e["paths"]
                .as_array()
                .map(|p| p
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "usage" => format!(
            "usage     {} in / {} out tokens",
            e["input_tokens"], e["output_tokens"]
        ),
        "interaction_asked" => format!("ASK       {}", s("title")),
        "interaction_resolved" => {
            let outcome = &e["outcome"];
            match outcome["kind"].as_str() {
                Some("answered") => {
                    let answers: Vec<&str> = outcome["answers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|a| a.as_array().into_iter().flatten())
                        .filter_map(|a| a.as_str())
                        .collect();
                    format!("answered  {}", answers.join(", "))
                }
                Some(kind) => format!("resolved  {kind}"),
                None => format!("resolved  {outcome}"),
            }
        }
        "turn_ended" => match e["error"].as_str() {
            Some(err) => format!("turn end  {} ({err})", s("reason")),
            None => format!("turn end  {}", s("reason")),
        },
        "status" => return None,
        "branch_pushed" => format!("pushed    {} to {}", s("branch"), s("remote")),
        "push_failed" => format!(
            "PUSH FAILED {} to {}: {}",
            s("branch"),
            s("remote"),
            s("error")
        ),
        _ => format!("{kind:<9} {e}"),
    })
}

/// Prints the timeline; with `follow`, keeps printing new events and status changes
/// until the task stops (review, done, failed, cancelled).
async fn logs(
    client: &Client,
    out: &Output,
    id: &str,
    follow: bool,
) -> Result<ExitCode, ClientError> {
    use atelier_core::TaskStatus;
    let mut after = 0i64;
    let mut last_status: Option<TaskStatus> = None;
    loop {
        let events: Vec<serde_json::Value> = client
            .get(&format!("/tasks/{}/events?after={after}", encode(id)))
            .await?;
        for e in &events {
            after = e["seq"].as_i64().unwrap_or(after);
            if out.json {
                println!("{e}");
            } else if let Some(line) = describe(&e["event"]) {
                let at = e["at"]
                    .as_str()
                    .and_then(|s| s.parse::<chrono::DateTime<chrono::Local>>().ok())
                    .map(|t| t.format("%H:%M:%S ").to_string())
                    .unwrap_or_default();
                println!("{at}{line}");
                if e["event"]["type"] == "interaction_asked" && follow {
                    println!("          answer with: atelier task answer {id} --choice … | --reply once|always|reject | --dismiss");
                }
            }
        }
        let _ = std::io::stdout().flush();
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        let t: Task = client.get(&format!("/tasks/{}", encode(id))).await?;
        if last_status != Some(t.status) {
            if !out.json && last_status.is_some() {
                println!("status    {}", t.status);
            }
            last_status = Some(t.status);
        }
        let stopped = !t.status.is_active() && t.status != TaskStatus::Queued;
        if stopped && events.is_empty() {
            if !out.json {
                match (&t.error, t.status) {
                    (Some(e), _) => println!("the task is {}: {e}", t.status),
                    (None, TaskStatus::Review) => println!(
                        "the task waits in review: atelier task diff {id}, then atelier task done {id}"
                    ),
                    _ => println!("the task is {}", t.status),
                }
            }
            return Ok(if t.status == TaskStatus::Failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Per-file lines added and removed, with totals.
fn print_stat(t: &Task) {
    if t.changes.is_empty() {
        println!("No changes on {} (yet).", t.branch);
        return;
    }
    let width = t.changes.iter().map(|c| c.path.len()).max().unwrap_or(0);
    for c in &t.changes {
        println!("{:<width$}  +{} -{}", c.path, c.added, c.removed);
    }
    let (added, removed) = t
        .changes
        .iter()
        .fold((0, 0), |(a, r), c| (a + c.added, r + c.removed));
    println!(
        "{} file{} changed, +{added} -{removed}",
        t.changes.len(),
        if t.changes.len() == 1 { "" } else { "s" }
    );
}

/// Colours for humans at a terminal, unless NO_COLOR asks otherwise.
fn colour(out: &Output) -> bool {
    use std::io::IsTerminal;
    !out.json && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

fn colourize(diff: &str) -> String {
    use crossterm::style::Stylize;
    let mut out = String::with_capacity(diff.len() + diff.len() / 8);
    for line in diff.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let styled = if body.starts_with("+++") || body.starts_with("---") {
            body.bold().to_string()
        } else if body.starts_with('+') {
            body.green().to_string()
        } else if body.starts_with('-') {
            body.red().to_string()
        } else if body.starts_with("@@") {
            body.cyan().to_string()
        } else if body.starts_with("diff ") {
            body.bold().to_string()
        } else {
            body.to_owned()
        };
        out.push_str(&styled);
        out.push_str(nl);
    }
    out
}

async fn show_task(client: &Client, out: &Output, t: &Task) -> Result<(), ClientError> {
    let mut waiting = vec![];
    if !out.json && t.status.is_active() {
        let pending: Vec<serde_json::Value> = client.get("/attention").await?;
        for p in pending.iter().filter(|p| p["task_id"] == t.id.as_str()) {
            waiting.push((
                waited(p),
                p["kind"].as_str().unwrap_or_default().to_owned(),
                p["title"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    show(t, out, &waiting);
    Ok(())
}

/// How long an ask has waited, from its `asked_at`.
fn waited(ask: &serde_json::Value) -> String {
    ask["asked_at"]
        .as_str()
        .and_then(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok())
        .map(age)
        .unwrap_or_default()
}

fn show(t: &Task, out: &Output, waiting: &[(String, String, String)]) {
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
    for (age, kind, title) in waiting {
        println!("  waiting     {age} for an answer to a {kind}: {title}");
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
