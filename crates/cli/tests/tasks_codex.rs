//! A task run by the real Codex (`@openai/codex@0.169.0`, `codex app-server`) on the
//! local driver, against a scripted OpenAI Responses API on 127.0.0.1: the workspace's
//! agent config makes the model's provider a Codex model provider (`wire_api =
//! "responses"`, its key a workspace secret named by `env_key`), with `CODEX_HOME` in a
//! temporary directory. The model runs a command that needs approval (approved through
//! the attention API), asks a question with `request_user_input` (answered there too),
//! edits a file with `apply_patch` (its approval also answered), updates its plan with
//! `update_plan` and finishes; the task reaches review with the file in its diff and its
//! commit in the preserved branch.
//!
//! The package is installed once with npm into `$HOME/.cache/atelier/codex-0.169.0`
//! (override with `ATELIER_CODEX_CACHE`). When npm or the binary is unavailable the test
//! prints `skipped: <reason>`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::git::origin;
use common::responses_server::{self as responses, Reply, ResponsesServer};
use common::{answer_until_review, npm, Manager};
use serde_json::{json, Value};

const SECRET: &str = "sk-scripted-codex-0123456789-secret";
const INSTRUCTIONS_MARKER: &str = "Sign every file with the word PERSIMMON.";
const COMMAND: &str = "sh -c 'echo checked-$((6*7))'";
const PATCH: &str = "*** Begin Patch\n*** Add File: NOTES.md\n+Good day to you.\n*** End Patch\n";

/// A call of Codex's shell tool, in whichever form this request offers it.
fn shell(req: &Value, command: &str) -> Reply {
    let tools = responses::tool_names(req);
    if tools.iter().any(|t| t == "exec_command") {
        Reply::tool("exec_command", json!({"cmd": command}))
    } else if tools.iter().any(|t| t == "shell_command") {
        Reply::tool("shell_command", json!({"command": command}))
    } else {
        Reply::tool("shell", json!({"command": ["bash", "-lc", command]}))
    }
}

/// The model's side: a command that needs approval, a question, a file (`gpt-5.5` gets
/// Codex's freeform `apply_patch`), the plan, then the summary.
fn script(req: &Value) -> Reply {
    match responses::tool_results(req) {
        0 => shell(req, COMMAND),
        1 => Reply::tool(
            "request_user_input",
            json!({"questions": [{"id": "greeting", "header": "Greeting",
                "question": "Formal or casual greeting?",
                "options": [{"label": "Formal", "description": "Good day"},
                            {"label": "Casual", "description": "Hi"}]}]}),
        ),
        2 => Reply::tool("apply_patch", json!(PATCH)),
        3 => Reply::tool(
            "update_plan",
            json!({"explanation": "Greeting written", "plan": [
                {"step": "Write NOTES.md", "status": "completed"},
                {"step": "Check the sums", "status": "completed"}
            ]}),
        ),
        _ => Reply::Text(vec![
            "I wrote NOTES.md ".into(),
            "with the greeting you chose.".into(),
        ]),
    }
}

fn codex_workspace(bin: &Path, url: &str, model_url: &str, home: &Path) -> Value {
    json!({
        "name": "app",
        "repos": [{"url": url}],
        "secrets": {"env": [{"name": "MODEL_KEY", "value": SECRET}]},
        "agent_config": {
            "runtime": "codex",
            "binary": bin.to_str().unwrap(),
            "model": "scripted/gpt-5.5",
            "providers": {"scripted": {"name": "Scripted", "base_url": model_url,
                                       "api_key_env": "SCRIPTED_API_KEY"}},
            "secrets": {"MODEL_KEY": "SCRIPTED_API_KEY"},
            "instructions": INSTRUCTIONS_MARKER,
            "env": {
                "HOME": home.to_str().unwrap(),
                "CODEX_HOME": home.join(".codex").to_str().unwrap()
            }
        }
    })
}

#[tokio::test]
async fn a_real_codex_task_asks_edits_plans_and_reaches_review() {
    let bin = match npm::CODEX.binary() {
        Ok(b) => b,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let model = match ResponsesServer::start(script).await {
        Ok(m) => m,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return;
        }
    };
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let home = dir.path().join("codex-home");
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    let w = api
        .post(
            "/workspaces",
            codex_workspace(&bin, &url, &model.url, &home),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting into NOTES.md", "workspace": "app", "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let branch = t.body["branch"].as_str().unwrap().to_owned();

    let (task, asks) =
        match answer_until_review(&api, &id, "Formal", Duration::from_secs(300)).await {
            Ok(done) => done,
            Err(e) => panic!(
                "{e}\nevents: {}\nmodel requests: {:#?}\nlog:\n{}",
                api.get(&format!("/tasks/{id}/events")).await.body,
                model
                    .requests()
                    .iter()
                    .map(|r| (
                        &r.path,
                        responses::tool_results(&r.body),
                        responses::tool_names(&r.body),
                        r.body.get("input").map(|i| i.to_string())
                    ))
                    .collect::<Vec<_>>(),
                m.log()
            ),
        };

    // The command asked first, as a permission naming the model's command (not the
    // login shell Codex runs it in); then the question; then the file change.
    assert_eq!(asks[0]["kind"], "permission", "{asks:?}");
    assert_eq!(asks[0]["detail"]["tool"], "bash", "{}", asks[0]);
    assert_eq!(
        asks[0]["detail"]["patterns"],
        json!([COMMAND]),
        "{}",
        asks[0]
    );
    assert_eq!(asks[1]["kind"], "question", "{asks:?}");
    assert!(
        asks[1]["title"]
            .as_str()
            .unwrap_or_default()
            .contains("Formal or casual greeting?"),
        "{}",
        asks[1]
    );
    assert_eq!(asks[2]["kind"], "permission", "{asks:?}");
    assert_eq!(
        asks[2]["detail"]["patterns"],
        json!(["NOTES.md"]),
        "{}",
        asks[2]
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
        "the plan folds into progress: {task}"
    );
    let diff = api.diff(&id).await;
    assert!(diff.contains("+Good day to you."), "{diff}");

    // What the model saw: the key, the instructions and the command's output after the
    // approval.
    let working = model.working();
    assert!(working.len() >= 4, "{} working requests", working.len());
    let bearer = format!("Bearer {SECRET}");
    assert!(
        working
            .iter()
            .all(|r| r.header("authorization") == Some(bearer.as_str())),
        "every model call carries the workspace secret as the key"
    );
    assert!(
        working
            .iter()
            .any(|r| responses::instructions_text(&r.body).contains(INSTRUCTIONS_MARKER)),
        "the workspace's instructions reach the model"
    );
    let result_of = |n: usize| -> String {
        working
            .iter()
            .find_map(|r| {
                responses::tool_outputs(&r.body)
                    .get(n)
                    .map(responses::output_text)
            })
            .unwrap_or_default()
    };
    let ran = result_of(0);
    assert!(ran.contains("checked-42"), "the command's output: {ran:?}");
    let answered = result_of(1);
    assert!(answered.contains("Formal"), "the answer: {answered:?}");

    // The plan was recorded as todos.
    let timeline = api.get(&format!("/tasks/{id}/events")).await.body;
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "todos"
                && e["event"]["items"][0]["content"] == "Write NOTES.md"),
        "the plan is in the events: {timeline}"
    );

    common::secret_kept_out_and_done(&m, &api, &id, &task, &timeline, SECRET, &branch).await;
}
