//! A task run by the real Claude Code (`@anthropic-ai/claude-code@2.1.328`) on the local
//! driver, against a scripted Anthropic Messages API on 127.0.0.1: the workspace's agent
//! config points Claude at the model (`ANTHROPIC_BASE_URL` from the model's provider, the
//! key a workspace secret given as `ANTHROPIC_API_KEY`). The model runs a command that
//! needs approval (approved through the attention API), asks a question with
//! `AskUserQuestion` (answered there too), writes a file, updates its todo list with
//! `TodoWrite` and finishes; the task reaches review with the file in its diff and its
//! commit in the preserved branch.
//!
//! The package is installed once with npm into `$HOME/.cache/atelier/claude-code-2.1.328`
//! (override with `ATELIER_CLAUDE_CACHE`). When npm or the binary is unavailable the test
//! prints `skipped: <reason>`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::anthropic_server::{self as anthropic, AnthropicServer, Reply};
use common::git::origin;
use common::{answer_until_review, npm, Manager};
use serde_json::{json, Value};

const SECRET: &str = "sk-ant-scripted-0123456789-secret";
const INSTRUCTIONS_MARKER: &str = "Sign every file with the word PERSIMMON.";

/// The directory Claude works in, as its system prompt states it.
fn working_directory(req: &Value) -> Option<String> {
    let system = anthropic::system_text(req);
    system.lines().find_map(|l| {
        let at = l.to_ascii_lowercase().find("working directory: ")?;
        Some(l[at + "working directory: ".len()..].trim().to_owned())
    })
}

/// The model's side: a command that needs approval, a question, a file, the todo list,
/// then the summary.
fn script(req: &Value) -> Reply {
    match anthropic::tool_results(req) {
        0 => Reply::tool(
            "Bash",
            json!({"command": "sh -c 'echo checked-$((6*7))'", "description": "Check the sums"}),
        ),
        1 => Reply::tool(
            "AskUserQuestion",
            json!({"questions": [{"question": "Formal or casual greeting?", "header": "Greeting",
                "multiSelect": false,
                "options": [{"label": "Formal", "description": "Good day"},
                            {"label": "Casual", "description": "Hi"}]}]}),
        ),
        2 => {
            let dir = working_directory(req).unwrap_or_else(|| ".".into());
            Reply::tool(
                "Write",
                json!({"file_path": format!("{dir}/NOTES.md"), "content": "Good day to you.\n"}),
            )
        }
        3 => Reply::tool(
            "TodoWrite",
            json!({"todos": [
                {"content": "Write NOTES.md", "status": "completed", "activeForm": "Writing NOTES.md"},
                {"content": "Pick the greeting", "status": "completed", "activeForm": "Picking the greeting"}
            ]}),
        ),
        _ => Reply::Text(vec![
            "I wrote NOTES.md ".into(),
            "with the greeting you chose.".into(),
        ]),
    }
}

fn claude_workspace(bin: &Path, url: &str, model_url: &str, home: &Path) -> Value {
    json!({
        "name": "app",
        "repos": [{"url": url}],
        "secrets": {"env": [{"name": "MODEL_KEY", "value": SECRET}]},
        "agent_config": {
            "runtime": "claude",
            "binary": bin.to_str().unwrap(),
            "model": "scripted/claude-sonnet-4-5",
            "providers": {"scripted": {"base_url": model_url, "api_key_env": "ANTHROPIC_API_KEY"}},
            "secrets": {"MODEL_KEY": "ANTHROPIC_API_KEY"},
            "instructions": INSTRUCTIONS_MARKER,
            "env": {
                "HOME": home.to_str().unwrap(),
                "CLAUDE_CONFIG_DIR": home.join(".claude").to_str().unwrap()
            }
        }
    })
}

/// A dispatched task of a workspace whose agent is the real Claude against the scripted
/// model (through the model proxy when `proxied`), or `None` after a printed skip.
struct ClaudeTask {
    bin: std::path::PathBuf,
    model: AnthropicServer,
    m: Manager,
    api: common::Api,
    id: String,
    branch: String,
    _dir: tempfile::TempDir,
}

async fn claude_task(proxied: bool) -> Option<ClaudeTask> {
    let bin = match npm::CLAUDE.binary() {
        Ok(b) => b,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return None;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let model = match AnthropicServer::start(script).await {
        Ok(m) => m,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return None;
        }
    };
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let home = dir.path().join("claude-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut workspace = claude_workspace(&bin, &url, &model.url, &home);
    if proxied {
        workspace["agent_config"]["providers"]["scripted"]["proxy"] = json!(true);
    }
    let w = api.post("/workspaces", workspace).await;
    assert_eq!(w.status, 201, "{}", w.body);
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting into NOTES.md", "workspace": "app", "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    Some(ClaudeTask {
        id: t.body["id"].as_str().unwrap().to_owned(),
        branch: t.body["branch"].as_str().unwrap().to_owned(),
        bin,
        model,
        m,
        api,
        _dir: dir,
    })
}

#[tokio::test]
async fn a_real_claude_task_asks_edits_plans_and_reaches_review() {
    // (`_dir` is bound, not dropped: the repo and the data live in it.)
    let Some(ClaudeTask {
        model,
        m,
        api,
        id,
        branch,
        _dir,
        ..
    }) = claude_task(false).await
    else {
        return;
    };

    let (task, asks) =
        match answer_until_review(&api, &id, "Formal", Duration::from_secs(300)).await {
            Ok(done) => done,
            Err(e) => panic!(
                "{e}\nevents: {}\nmodel requests: {:#?}\nlog:\n{}",
                api.get(&format!("/tasks/{id}/events")).await.body,
                model
                    .requests()
                    .iter()
                    .map(|r| (&r.path, anthropic::tool_results(&r.body)))
                    .collect::<Vec<_>>(),
                m.log()
            ),
        };

    // The command asked first, as a permission; then the question; then the write.
    assert_eq!(asks[0]["kind"], "permission", "{asks:?}");
    assert!(
        asks[0].to_string().contains("checked-$((6*7))"),
        "the ask names the command: {}",
        asks[0]
    );
    let question = asks
        .iter()
        .find(|a| a["kind"] == "question")
        .unwrap_or_else(|| panic!("no question among {asks:?}"));
    assert!(
        question["title"]
            .as_str()
            .unwrap_or_default()
            .contains("Formal or casual greeting?"),
        "{question}"
    );

    assert_eq!(task["changes"][0]["path"], "NOTES.md", "{task}");
    assert!(
        task["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("with the greeting you chose"),
        "{task}"
    );
    assert_eq!(
        task["progress"], 100,
        "the todos fold into progress: {task}"
    );
    let diff = api.diff(&id).await;
    assert!(diff.contains("+Good day to you."), "{diff}");

    // What the model saw: the key, the instructions, the command's output after the
    // approval and the human's answer.
    let working = model.working();
    assert!(working.len() >= 5, "{} working requests", working.len());
    assert!(
        working
            .iter()
            .all(|r| r.header("x-api-key") == Some(SECRET)),
        "every model call carries the workspace secret as the key"
    );
    assert!(
        working
            .iter()
            .any(|r| anthropic::system_text(&r.body).contains(INSTRUCTIONS_MARKER)),
        "the workspace's instructions reach the model"
    );
    let result_of = |n: usize| -> Option<String> {
        working.iter().find_map(|r| {
            anthropic::tool_result_blocks(&r.body)
                .get(n)
                .map(anthropic::result_text)
        })
    };
    let ran = result_of(0).unwrap_or_default();
    assert!(ran.contains("checked-42"), "the command's output: {ran:?}");
    let answered = result_of(1).unwrap_or_default();
    assert!(answered.contains("Formal"), "the answer: {answered:?}");

    // The todos were recorded as events.
    let timeline = api.get(&format!("/tasks/{id}/events")).await.body;
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "todos"
                && e["event"]["items"][0]["content"] == "Write NOTES.md"),
        "the todo list is in the events: {timeline}"
    );

    common::secret_kept_out_and_done(&m, &api, &id, &task, &timeline, SECRET, &branch).await;
}

/// The environment of every live process whose command line mentions `needle`.
fn environments_of(needle: &str) -> Vec<String> {
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            out.push(String::from_utf8_lossy(&env).replace('\0', "\n"));
        }
    }
    out
}

#[tokio::test]
async fn through_the_model_proxy_claude_holds_a_placeholder_and_the_model_gets_the_real_key() {
    let Some(ClaudeTask {
        bin,
        model,
        m,
        api,
        id,
        _dir,
        ..
    }) = claude_task(true).await
    else {
        return;
    };

    // While Claude waits on its first ask, its environment holds the task's placeholder,
    // never the key.
    api.first_ask(&id, Duration::from_secs(300)).await;
    let claude = bin.to_string_lossy().into_owned();
    // This task's Claude only (another test's may run at the same time): its HOME is ours.
    let home = format!("HOME={}", _dir.path().join("claude-home").display());
    let envs: Vec<String> = environments_of(&claude)
        .into_iter()
        .filter(|e| e.lines().any(|l| l == home))
        .collect();
    assert!(!envs.is_empty(), "no live process of {claude}");
    for env in &envs {
        assert!(
            !env.contains(SECRET),
            "the real key is in Claude's environment"
        );
    }
    assert!(
        envs.iter().any(|e| e
            .lines()
            .any(|l| l.starts_with("ANTHROPIC_API_KEY=atl-proxy-"))),
        "Claude holds the placeholder: {envs:?}"
    );

    let (task, _) = match answer_until_review(&api, &id, "Formal", Duration::from_secs(300)).await {
        Ok(done) => done,
        Err(e) => panic!("{e}\nlog:\n{}", m.log()),
    };
    assert_eq!(task["changes"][0]["path"], "NOTES.md", "{task}");
    // Every call reached the model through the proxy, which put the real key in the
    // header Claude sends it in (`x-api-key`).
    let working = model.working();
    assert!(working.len() >= 5, "{} working requests", working.len());
    assert!(
        working
            .iter()
            .all(|r| r.header("x-api-key") == Some(SECRET)),
        "the proxy swaps the real key in: {:?}",
        working
            .iter()
            .map(|r| r.header("x-api-key"))
            .collect::<Vec<_>>()
    );
    // The proxy counted every call and its tokens for the task.
    let counted = &task["proxy_usage"];
    assert_eq!(
        counted["requests"].as_u64(),
        Some(model.requests().len() as u64),
        "{counted}"
    );
    assert!(
        counted["input_tokens"].as_u64().unwrap_or(0) > 0,
        "{counted}"
    );
}
