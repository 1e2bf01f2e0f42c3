//! Tasks end to end on the local driver, with the scripted fake agent speaking OpenCode's
//! protocol: dispatch → branch → question in the attention feed → answer → the agent edits
//! a file → commit, diff, review → sandbox destroyed → the commit lives on in the mirror.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{eventually, Manager};
use serde_json::json;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare "origin" with one commit on main.
fn origin(dir: &Path) -> String {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "--quiet"]);
    std::fs::write(work.join("README.md"), "# app\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "initial"]);
    let bare = dir.join("origin.git");
    git(
        dir,
        &[
            "clone",
            "--quiet",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    format!("file://{}", bare.display())
}

const SCENARIO: &str = r#"
steps:
  - todos:
      - {content: "Ask which greeting", status: in_progress}
      - {content: "Write NOTES.md", status: pending}
  - ask_question:
      questions:
        - question: "Formal or casual greeting?"
          options: [Formal, Casual]
  - edit_file: {path: NOTES.md, content: "Good day to you.\n"}
  - todos:
      - {content: "Ask which greeting", status: completed}
      - {content: "Write NOTES.md", status: completed}
  - usage: {input: 1200, output: 300, cost: 0.0042}
  - say: "I wrote NOTES.md with a formal greeting."
  - finish
"#;

/// Builds `atelier-stdio-host` next to `atelier`, where the manager looks for it.
fn ensure_stdio_host_built() {
    atelier_testkit::workspace_binary("atelier-stdio-host", "atelier-stdio-host");
}

/// The fake agent playing `scenario` over `protocol` (`None`: OpenCode's, the default).
fn fake_agent_config(scenario: &str, protocol: Option<&str>) -> serde_json::Value {
    common::ensure_fake_agent_built();
    let mut config = json!({"runtime": "fake", "scenario": scenario});
    if let Some(p) = protocol {
        ensure_stdio_host_built();
        config["protocol"] = json!(p);
    }
    config
}

#[tokio::test]
async fn a_task_runs_asks_is_answered_and_its_branch_survives_the_sandbox() {
    asks_answers_and_keeps_the_branch(None).await;
}

#[tokio::test]
async fn a_claude_code_task_asks_is_answered_and_its_branch_survives_the_sandbox() {
    asks_answers_and_keeps_the_branch(Some("claude")).await;
}

#[tokio::test]
async fn an_acp_task_asks_is_answered_and_its_branch_survives_the_sandbox() {
    asks_answers_and_keeps_the_branch(Some("acp")).await;
}

/// Dispatch → question in the attention feed → answer → the agent edits a file → commit,
/// diff, review → done: the sandbox goes, the commit stays in the mirror.
async fn asks_answers_and_keeps_the_branch(protocol: Option<&str>) {
    let agent_config = fake_agent_config(SCENARIO, protocol);
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let w = api
        .post(
            "/workspaces",
            json!({"name": "app", "repos": [{"url": url, "branch": "main"}],
            "agent_config": agent_config}),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);

    let events = api
        .req(reqwest::Method::GET, "/events")
        .send()
        .await
        .unwrap();
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting in NOTES.md", "workspace": "app", "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let branch = t.body["branch"].as_str().unwrap().to_owned();
    assert!(
        branch.starts_with("atelier/write-a-greeting-in-notes-md-"),
        "{branch}"
    );

    // The question reaches the attention feed (and the event stream).
    let mut ask = None;
    for _ in 0..600 {
        let feed = api.get("/attention").await;
        ask = feed
            .body
            .as_array()
            .and_then(|a| a.iter().find(|x| x["task_id"] == id.as_str()).cloned());
        let t = api.get(&format!("/tasks/{id}")).await.body;
        if ask.is_some() || t["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(ask) = ask else {
        panic!(
            "no question in the attention feed; task: {}\nlog:\n{}",
            api.get(&format!("/tasks/{id}")).await.body,
            m.log()
        );
    };
    assert_eq!(ask["kind"], "question");
    assert_eq!(
        api.get(&format!("/tasks/{id}")).await.body["status"],
        "needs_attention"
    );
    let seen = common::read_sse(events, 50, Duration::from_secs(2)).await;
    assert!(
        seen.iter().any(|(_, e, _)| e == "attention_asked"),
        "the ask is on the event stream: {seen:?}"
    );
    let progress = api.get(&format!("/tasks/{id}")).await.body["progress"].clone();
    assert_eq!(progress, 0, "todos fold into progress");

    let r = api
        .post(
            &format!("/attention/{id}/{}/answer", ask["id"].as_str().unwrap()),
            json!({"kind": "question", "answers": [["Formal"]]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    let task = api.review(&id, Duration::from_secs(60)).await;
    assert_eq!(task["progress"], 100);
    assert_eq!(task["changes"][0]["path"], "NOTES.md", "{task}");
    assert_eq!(task["usage"]["input_tokens"], 1200);
    assert!(
        task["summary"]
            .as_str()
            .unwrap()
            .contains("formal greeting"),
        "{task}"
    );
    assert!(
        api.get("/attention")
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty(),
        "answered asks leave the feed"
    );
    let diff = api.diff(&id).await;
    assert!(diff.contains("+Good day to you."), "{diff}");
    let timeline = api.get(&format!("/tasks/{id}/events")).await;
    assert!(
        timeline.body.as_array().unwrap().len() >= 5,
        "{}",
        timeline.body
    );

    // Done: the sandbox goes, the commit stays in the host-side mirror.
    let sandbox = task["sandbox_id"].as_str().unwrap().to_owned();
    let r = api.post(&format!("/tasks/{id}/done"), json!({})).await;
    assert_eq!(r.body["status"], "done", "{}", r.body);
    assert_eq!(
        api.get(&format!("/sandboxes/{sandbox}")).await.body["state"],
        "destroyed"
    );
    let mirrors = m.data_dir.join("mirrors");
    let mirror = std::fs::read_dir(&mirrors)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let log = git(
        &mirror,
        &[
            "--git-dir",
            mirror.to_str().unwrap(),
            "log",
            "--format=%s",
            &branch,
        ],
    );
    assert!(log.starts_with("Write a greeting in NOTES.md"), "{log}");
    let file = git(
        &mirror,
        &[
            "--git-dir",
            mirror.to_str().unwrap(),
            "show",
            &format!("{branch}:NOTES.md"),
        ],
    );
    assert_eq!(file, "Good day to you.\n");

    let r = api.post(&format!("/tasks/{id}/done"), json!({})).await;
    assert_eq!(r.status, 409, "done is final");
}

#[tokio::test]
async fn bad_task_input_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    api.post("/workspaces", json!({"name": "empty"})).await;
    for (body, field) in [
        (json!({"prompt": "", "workspace": "empty"}), "prompt"),
        (json!({"prompt": "x", "workspace": "nope"}), "workspace"),
        (json!({"prompt": "x", "workspace": "empty"}), "workspace"),
        (
            json!({"prompt": "x", "workspace": "empty", "base_branch": "a..b"}),
            "base_branch",
        ),
        (
            json!({"prompt": "x", "workspace": "empty", "effort": "extreme"}),
            "effort",
        ),
    ] {
        let r = api.post("/tasks", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(
            r.body["error"]["details"]["fields"][0]["field"], field,
            "{body}: {}",
            r.body
        );
    }
    assert_eq!(api.get("/tasks/tnope").await.status, 404);
    assert_eq!(
        api.post("/attention/tnope/q1/answer", json!({"kind": "dismiss"}))
            .await
            .status,
        404
    );
    assert_eq!(
        api.post("/attention/tnope/q1/answer", json!({"kind": "maybe"}))
            .await
            .status,
        422
    );
}

#[tokio::test]
async fn the_cli_drives_a_task_from_prompt_to_done() {
    common::ensure_fake_agent_built();
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let m = Manager::start(&dir.path().join("data"));
    m.client()
        .post("/workspaces", json!({"name": "app", "repos": [{"url": url}], "agent_config": {"runtime": "fake", "scenario": SCENARIO}}))
        .await;
    let cli = |args: &[&str]| {
        let out = Command::new(common::atelier_bin())
            .args(args)
            .env("ATELIER_URL", &m.url)
            .env("ATELIER_DATA_DIR", &m.data_dir)
            .env_remove("ATELIER_TOKEN")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = cli(&[
        "--json",
        "task",
        "create",
        "Write a greeting",
        "--workspace",
        "app",
    ]);
    assert!(ok, "{stderr}");
    let task: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let id = task["id"].as_str().unwrap().to_owned();

    let mut listed = String::new();
    for _ in 0..240 {
        listed = cli(&["attention"]).1;
        if listed.contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(listed.contains("Formal or casual greeting?"), "{listed}");
    let (_, shown, _) = cli(&["task", "show", &id]);
    assert!(
        shown.contains("for an answer to a question: Formal or casual greeting?"),
        "a pending ask shows with its age: {shown}"
    );
    let (ok, _, stderr) = cli(&["task", "diff", &id]);
    assert!(
        !ok && stderr.contains("its diff is computed when the agent's turn ends"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = cli(&["task", "answer", &id, "--choice", "Formal"]);
    assert!(ok && stdout.contains("answered"), "{stdout}{stderr}");

    let mut shown = String::new();
    for _ in 0..240 {
        shown = cli(&["task", "show", &id]).1;
        if shown.contains(")  review") || shown.contains(")  failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        shown.contains("review") && shown.contains("NOTES.md +1 -0"),
        "{shown}"
    );
    let (_, diff, _) = cli(&["task", "diff", &id]);
    assert!(diff.contains("+Good day to you."), "{diff}");
    let (_, stat, _) = cli(&["task", "diff", &id, "--stat"]);
    assert!(
        stat.contains("NOTES.md  +1 -0") && stat.contains("1 file changed, +1 -0"),
        "{stat}"
    );
    let (_, logs, _) = cli(&["task", "logs", &id]);
    assert!(
        logs.contains("ASK") && logs.contains("turn end  completed"),
        "{logs}"
    );
    // Following a task that already stopped prints everything, then says where it is.
    let (ok, followed, _) = cli(&["task", "logs", &id, "--follow"]);
    assert!(ok, "{followed}");
    assert!(
        followed.contains("answered  Formal")
            && followed.contains("todos     2/2 done")
            && followed.contains("the task waits in review"),
        "{followed}"
    );
    assert!(
        !followed.contains(" pending"),
        "pending tool calls are left out: {followed}"
    );
    let (ok, stdout, _) = cli(&["task", "done", &id]);
    assert!(ok && stdout.contains("done"), "{stdout}");
    let (ok, _, stderr) = cli(&["task", "answer", &id, "--dismiss"]);
    assert!(!ok && stderr.contains("no pending"), "{stderr}");
}

#[tokio::test]
async fn a_manager_killed_mid_task_resumes_the_agent_stream_and_loses_nothing() {
    killed_manager_resumes(None).await;
}

#[tokio::test]
async fn a_manager_killed_mid_claude_code_task_resumes_through_the_stdio_host() {
    killed_manager_resumes(Some("claude")).await;
}

async fn killed_manager_resumes(protocol: Option<&str>) {
    let agent_config = fake_agent_config(SCENARIO, protocol);
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let data = dir.path().join("data");
    let mut m = Manager::start(&data);
    let api = m.client();
    api.post(
        "/workspaces",
        json!({"name": "app", "repos": [{"url": url}], "agent_config": agent_config}),
    )
    .await;
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting", "workspace": "app", "dispatch": true}),
        )
        .await;
    let id = t.body["id"].as_str().unwrap().to_owned();
    let (a, i) = (api.clone(), id.clone());
    eventually(
        Duration::from_secs(60),
        "the task to need attention",
        || {
            let (api, id) = (a.clone(), i.clone());
            async move {
                (api.get(&format!("/tasks/{id}")).await.body["status"] == "needs_attention")
                    .then_some(())
            }
        },
    )
    .await;
    let before = api
        .get(&format!("/tasks/{id}/events"))
        .await
        .body
        .as_array()
        .unwrap()
        .len();
    m.kill9();

    let m2 = Manager::start(&data);
    let api = m2.client();
    let ask = api.get("/attention").await.body.as_array().unwrap()[0].clone();
    // Until the new manager has re-attached to the agent, an answer has nowhere to go.
    let mut r = None;
    for _ in 0..300 {
        let answer = api
            .post(
                &format!("/attention/{id}/{}/answer", ask["id"].as_str().unwrap()),
                json!({"kind": "question", "answers": [["Casual"]]}),
            )
            .await;
        let reattaching = answer.status == 409;
        r = Some(answer);
        if !reattaching {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = r.unwrap();
    assert_eq!(
        r.status, 204,
        "the resumed agent takes the answer: {}",
        r.body
    );
    let task = api.review(&id, Duration::from_secs(60)).await;
    assert_eq!(task["changes"][0]["path"], "NOTES.md");
    let timeline = api.get(&format!("/tasks/{id}/events")).await.body;
    let events = timeline.as_array().unwrap();
    assert!(
        events.len() > before,
        "events after the restart were recorded"
    );
    let asks = events
        .iter()
        .filter(|e| e["event"]["type"] == "interaction_asked")
        .count();
    assert_eq!(asks, 1, "the resumed stream repeats nothing: {timeline}");
}

const QUIET_SCENARIO: &str = r#"
steps:
  - edit_file: {path: CHANGES.md, content: "edited\n"}
  - say: "Done."
  - finish
"#;

async fn wait_status(api: &common::Api, id: &str, status: &str) -> serde_json::Value {
    let (a, i, s) = (api.clone(), id.to_owned(), status.to_owned());
    eventually(Duration::from_secs(90), "a task status", || {
        let (api, id, status) = (a.clone(), i.clone(), s.clone());
        async move {
            let t = api.get(&format!("/tasks/{id}")).await.body;
            assert_ne!(t["status"], "failed", "{t}");
            (t["status"] == status.as_str()).then_some(t)
        }
    })
    .await
}

#[tokio::test]
async fn templates_shape_the_prompt_and_a_review_chains_on_the_same_branch() {
    common::ensure_fake_agent_built();
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    api.post("/workspaces", json!({"name": "app", "repos": [{"url": url}], "agent_config": {"runtime": "fake", "scenario": QUIET_SCENARIO}}))
        .await;

    let list = api.get("/templates").await;
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "implementation",
            "best-practices-review",
            "security-review",
            "simplification"
        ]
    );
    let mut imp = list.body[0].clone();
    imp["prompt"] = json!("Workspace rule: small commits.\n{{task.prompt}} (branch {{branch}})");
    let r = api
        .send(
            api.req(
                reqwest::Method::PUT,
                "/workspaces/app/templates/implementation",
            )
            .json(&imp),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut bad = imp.clone();
    bad["prompt"] = json!("{{nope}}");
    let r = api
        .send(
            api.req(reqwest::Method::PUT, "/templates/implementation")
                .json(&bad),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (422, Some("prompt"))
    );
    let r = api
        .post(
            "/tasks",
            json!({"prompt": "x", "workspace": "app", "template": "nope"}),
        )
        .await;
    assert_eq!(r.status, 422);

    let t = api.post("/tasks", json!({"prompt": "Tidy the changelog", "workspace": "app", "dispatch": true, "effort": "low"})).await;
    let id = t.body["id"].as_str().unwrap().to_owned();
    let parent = wait_status(&api, &id, "review").await;
    // The agent got the workspace's template, rendered.
    let sandbox = parent["sandbox_id"].as_str().unwrap();
    let logs = api
        .get(&format!("/sandboxes/{sandbox}/services/coding-agent/logs"))
        .await;
    assert_eq!(logs.status, 200, "{}", logs.body);

    let r = api
        .post(
            &format!("/tasks/{id}/review"),
            json!({"template": "security-review"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["base_branch"], parent["branch"]);
    assert!(r.body["title"]
        .as_str()
        .unwrap()
        .starts_with("Security Review: "));
    let review_id = r.body["id"].as_str().unwrap().to_owned();
    let review = wait_status(&api, &review_id, "review").await;
    assert_ne!(review["branch"], parent["branch"]);

    let mirror = std::fs::read_dir(m.data_dir.join("mirrors"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let log = git(
        &mirror,
        &[
            "--git-dir",
            mirror.to_str().unwrap(),
            "log",
            "--format=%s",
            review["branch"].as_str().unwrap(),
        ],
    );
    // The reviewer found nothing to change (the scripted agent rewrites the same file), so
    // its branch is the parent's work: it started from the parent's branch, not from main.
    assert!(
        log.starts_with("Tidy the changelog"),
        "the review builds on the parent's commit: {log}"
    );
    assert_eq!(review["changes"], json!([]), "{review}");
    let r = api
        .post(
            &format!("/tasks/{review_id}/review"),
            json!({"template": "nope"}),
        )
        .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn agent_config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    for (config, field) in [
        (json!({"model": "gpt"}), "agent_config.model"),
        (json!({"runtime": "aider"}), "agent_config.runtime"),
        (json!({"runtime": "acp"}), "agent_config.command"),
        (
            json!({"runtime": "acp", "command": "gemini --acp"}),
            "agent_config.command",
        ),
        (
            json!({"runtime": "acp", "command": []}),
            "agent_config.command",
        ),
        (
            json!({"runtime": "claude", "protocol": "acp"}),
            "agent_config.protocol",
        ),
        (json!({"runtime": "fake"}), "agent_config.scenario"),
        (json!({"modle": "a/b"}), "agent_config.modle"),
        (
            json!({"providers": {"local": {"base_url": "ftp://x"}}}),
            "agent_config.providers.local.base_url",
        ),
        (
            json!({"providers": {"local": {"api_key_env": "LOCAL_KEY"}}}),
            "agent_config.providers.local.api_key_env",
        ),
        (
            json!({"mcp": {"docs": {"type": "remote"}}}),
            "agent_config.mcp.docs",
        ),
        (
            json!({"secrets": {"NOT_A_SECRET": "KEY"}}),
            "agent_config.secrets.NOT_A_SECRET",
        ),
        (
            json!({"secrets": {"MODEL_KEY": "OPENCODE_CONFIG"}}),
            "agent_config.secrets.MODEL_KEY",
        ),
        (
            json!({"push": {"repos": ["elsewhere"]}}),
            "agent_config.push.repos[0]",
        ),
    ] {
        let r = api
            .post(
                "/workspaces",
                json!({"name": "w", "secrets": {"env": [{"name": "MODEL_KEY", "value": "v"}]},
                       "agent_config": config}),
            )
            .await;
        assert_eq!(r.status, 422, "{config}: {}", r.body);
        assert_eq!(
            r.body["error"]["details"]["fields"][0]["field"], field,
            "{config}: {}",
            r.body
        );
    }
    let r = api
        .post(
            "/workspaces",
            json!({"name": "w", "secrets": {"env": [{"name": "MODEL_KEY", "value": "v"}]},
                   "agent_config": {"model": "local/m", "secrets": {"MODEL_KEY": "LOCAL_KEY"},
                       "providers": {"local": {"base_url": "http://127.0.0.1:1/v1", "api_key_env": "LOCAL_KEY"}}}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // A secret the agent config uses cannot be removed from under it.
    let r = api
        .patch("/workspaces/w", json!({"remove_secrets": ["MODEL_KEY"]}))
        .await;
    assert_eq!(
        (
            r.status,
            r.body["error"]["details"]["fields"][0]["field"].as_str()
        ),
        (422, Some("agent_config.secrets.MODEL_KEY")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn exposed_secrets_reach_the_agent_process_and_nothing_else() {
    common::ensure_fake_agent_built();
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let secret = "sk-live-it's-$HOME-0123456789";
    let w = api
        .post(
            "/workspaces",
            json!({"name": "app", "repos": [{"url": url}],
                   "secrets": {"env": [{"name": "MODEL_KEY", "value": secret},
                                       {"name": "UNUSED", "value": "not-for-the-agent"}]},
                   "agent_config": {"runtime": "fake", "scenario": SCENARIO,
                       "secrets": {"MODEL_KEY": "AGENT_MODEL_KEY"},
                       "env": {"AGENT_MODE": "test"}}}),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);
    let events = api
        .req(reqwest::Method::GET, "/events")
        .send()
        .await
        .unwrap();
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting", "workspace": "app", "dispatch": true}),
        )
        .await;
    let id = t.body["id"].as_str().unwrap().to_owned();
    let task = wait_status(&api, &id, "needs_attention").await;
    let sandbox = task["sandbox_id"].as_str().unwrap().to_owned();

    // The agent's process has the secret under the chosen name, and only that secret.
    let svc = api
        .get(&format!("/sandboxes/{sandbox}/services/coding-agent"))
        .await;
    assert_eq!(svc.status, 200, "{}", svc.body);
    assert!(
        !svc.body.to_string().contains(secret),
        "the service definition shows no secret: {}",
        svc.body
    );
    assert_eq!(svc.body["spec"]["env"]["AGENT_MODE"], "test");
    let pid = svc.body["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        vars.contains(&format!("AGENT_MODEL_KEY={secret}")),
        "the agent's environment has the secret"
    );
    assert!(vars.contains(&"AGENT_MODE=test".to_owned()));
    assert!(!vars.iter().any(|v| v.contains("not-for-the-agent")));

    let ask = api.get("/attention").await.body[0].clone();
    api.post(
        &format!("/attention/{id}/{}/answer", ask["id"].as_str().unwrap()),
        json!({"kind": "question", "answers": [["Formal"]]}),
    )
    .await;
    let task = wait_status(&api, &id, "review").await;
    let seen = common::read_sse(events, 1000, Duration::from_secs(1)).await;
    let timeline = api.get(&format!("/tasks/{id}/events")).await.body;
    let diff = api.diff(&id).await;
    for (what, text) in [
        ("the task", task.to_string()),
        ("its events", timeline.to_string()),
        ("the event stream", format!("{seen:?}")),
        ("the diff", diff),
        (
            "the workspace",
            api.get("/workspaces/app").await.body.to_string(),
        ),
        ("the manager's log", m.log()),
    ] {
        assert!(!text.contains(secret), "{what} shows the secret");
    }
}

/// The mirror (under the manager's data dir) that holds `branch`.
fn mirror_with(data_dir: &Path, branch: &str) -> std::path::PathBuf {
    std::fs::read_dir(data_dir.join("mirrors"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|m| {
            Command::new("git")
                .arg("--git-dir")
                .arg(m)
                .args(["rev-parse", "--verify", "--quiet", branch])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| panic!("no mirror holds {branch}"))
}

#[tokio::test]
async fn branches_are_pushed_to_origin_and_a_refused_push_keeps_the_work_in_review() {
    common::ensure_fake_agent_built();
    let dir = tempfile::tempdir().unwrap();
    let open = origin(&dir.path().join("open"));
    let locked = origin(&dir.path().join("locked"));
    let locked_dir = dir.path().join("locked/origin.git");
    let hook = locked_dir.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'this origin is read-only' >&2\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    for (name, url) in [("open", &open), ("locked", &locked)] {
        let w = api
            .post(
                "/workspaces",
                json!({"name": name, "repos": [{"url": url}],
                       "agent_config": {"runtime": "fake", "scenario": QUIET_SCENARIO, "push": {}}}),
            )
            .await;
        assert_eq!(w.status, 201, "{}", w.body);
    }
    let mut ids = vec![];
    for name in ["open", "locked"] {
        let t = api
            .post(
                "/tasks",
                json!({"prompt": format!("Tidy the {name} changelog"), "workspace": name, "dispatch": true}),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.body);
        ids.push(t.body["id"].as_str().unwrap().to_owned());
    }

    // Pushed: origin has the branch at the commit the task reports.
    let task = wait_status(&api, &ids[0], "review").await;
    let branch = task["branch"].as_str().unwrap();
    assert_eq!(task["push"]["ok"], true, "{task}");
    assert_eq!(task["push"]["remote"], open.as_str());
    let open_dir = dir.path().join("open/origin.git");
    let in_origin = git(
        &open_dir,
        &["--git-dir", open_dir.to_str().unwrap(), "rev-parse", branch],
    );
    assert_eq!(task["push"]["commit"], in_origin.trim(), "{task}");
    let log = git(
        &open_dir,
        &[
            "--git-dir",
            open_dir.to_str().unwrap(),
            "log",
            "--format=%s",
            branch,
        ],
    );
    assert!(log.starts_with("Tidy the open changelog"), "{log}");
    let events = api.get(&format!("/tasks/{}/events", ids[0])).await.body;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["type"] == "branch_pushed" && e["event"]["branch"] == branch),
        "{events}"
    );

    // Refused: the task still reaches review, says why, and the mirror keeps the work.
    let task = wait_status(&api, &ids[1], "review").await;
    let branch = task["branch"].as_str().unwrap();
    assert_eq!(task["push"]["ok"], false, "{task}");
    assert!(
        task["push"]["error"]
            .as_str()
            .unwrap()
            .contains("this origin is read-only"),
        "{task}"
    );
    assert_eq!(task["error"], serde_json::Value::Null, "{task}");
    let events = api.get(&format!("/tasks/{}/events", ids[1])).await.body;
    let failed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["type"] == "push_failed")
        .unwrap_or_else(|| panic!("no push_failed event: {events}"));
    assert!(
        failed["event"]["error"]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{failed}"
    );
    let refused = Command::new("git")
        .arg("--git-dir")
        .arg(&locked_dir)
        .args(["rev-parse", "--verify", "--quiet", branch])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "the locked origin took no branch"
    );
    let mirror = mirror_with(&m.data_dir, branch);
    let file = git(
        &mirror,
        &[
            "--git-dir",
            mirror.to_str().unwrap(),
            "show",
            &format!("{branch}:CHANGES.md"),
        ],
    );
    assert_eq!(file, "edited\n");
    let r = api
        .post(&format!("/tasks/{}/done", ids[1]), json!({}))
        .await;
    assert_eq!(r.body["status"], "done", "{}", r.body);
}

#[tokio::test]
async fn a_task_starts_from_the_prebuild_and_commits_only_its_own_work() {
    common::ensure_fake_agent_built();
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let w = api
        .post(
            "/workspaces",
            json!({"name": "app", "repos": [{"url": url, "branch": "main"}],
                   "init_commands": ["mkdir -p deps && echo installed > deps/lib.txt"],
                   "prebuild": {"auto_rebuild": false},
                   "agent_config": {"runtime": "fake", "scenario": SCENARIO, "warm": true}}),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);
    let p = api.post("/workspaces/app/prebuilds", json!({})).await;
    assert_eq!(p.status, 202, "{}", p.body);
    let prebuild = p.body["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(60), "the prebuild", || async {
        let p = api.get(&format!("/prebuilds/{prebuild}")).await.body;
        assert_ne!(p["state"], "failed", "{p}");
        (p["state"] == "ready").then_some(())
    })
    .await;
    // The agent was started once in the builder, and stopped before the capture.
    let log = api.get(&format!("/prebuilds/{prebuild}/logs")).await.body["data"].to_string();
    assert!(log.contains("warmed the coding agent"), "{log}");

    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting in NOTES.md", "workspace": "app", "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let task = wait_status(&api, &id, "needs_attention").await;
    let sandbox = task["sandbox_id"].as_str().unwrap().to_owned();
    let s = api.get(&format!("/sandboxes/{sandbox}")).await.body;
    assert_eq!(s["prebuild_id"], prebuild.as_str(), "{s}");
    let ask = api.get("/attention").await.body[0].clone();
    let r = api
        .post(
            &format!("/attention/{id}/{}/answer", ask["id"].as_str().unwrap()),
            json!({"kind": "question", "answers": [["Formal"]]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let task = wait_status(&api, &id, "review").await;
    // The agent's file is in the commit; what the init commands installed is not.
    let paths: Vec<&str> = task["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["NOTES.md"], "{task}");
    let r = api
        .post(
            &format!("/sandboxes/{sandbox}/exec"),
            json!({"command": "cat", "args": ["origin/deps/lib.txt"]}),
        )
        .await;
    assert_eq!(r.body["stdout"], "installed\n", "{}", r.body);
    // The base had not moved since the prebuild, so the clone was not made to fetch it.
    let fetched = |sandbox: String| {
        let api = api.clone();
        async move {
            api.post(
                &format!("/sandboxes/{sandbox}/exec"),
                json!({"command": "test", "args": ["-e", "origin/.git/FETCH_HEAD"]}),
            )
            .await
            .body["exit_code"]
                == 0
        }
    };
    assert!(
        !fetched(sandbox.clone()).await,
        "no fetch for a current prebuild"
    );
    let r = api
        .post(
            &format!("/sandboxes/{sandbox}/exec"),
            json!({"command": "git", "args": ["-C", "origin", "status", "--short", "--branch"]}),
        )
        .await;
    let status = r.body["stdout"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        status.lines().next().unwrap_or_default(),
        format!("## {}", task["branch"].as_str().unwrap()),
        "on the task's branch, nothing left over: {}",
        r.body
    );

    // The base moves on: the next task's clone, whose repo is behind, fetches it.
    let work = dir.path().join("work");
    std::fs::write(work.join("CHANGELOG.md"), "moved\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "moved"]);
    let bare = dir.path().join("origin.git");
    git(
        &work,
        &[
            "push",
            "--quiet",
            bare.to_str().unwrap(),
            "HEAD:refs/heads/main",
        ],
    );
    let moved = String::from_utf8(
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&work)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Again", "workspace": "app", "dispatch": true}),
        )
        .await;
    let second = wait_status(&api, t.body["id"].as_str().unwrap(), "needs_attention").await;
    let sandbox = second["sandbox_id"].as_str().unwrap().to_owned();
    let r = api
        .post(
            &format!("/sandboxes/{sandbox}/exec"),
            json!({"command": "git", "args": ["-C", "origin", "merge-base", "--is-ancestor",
                                               moved.trim(), "HEAD"]}),
        )
        .await;
    assert_eq!(
        r.body["exit_code"], 0,
        "the task starts at the moved base: {}",
        r.body
    );
    assert!(fetched(sandbox).await, "a stale repo is fetched");
}

/// The local driver shares the host's loopback between sandboxes, so each coding agent's
/// server (OpenCode's, the stdio host) demands its task's password: another sandbox that
/// finds the port gets 401, while the manager drives both tasks to the end.
#[tokio::test]
async fn another_sandbox_without_the_token_gets_401_from_a_coding_agents_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let mut tasks = Vec::new();
    for (name, protocol) in [("served", None), ("stdio", Some("claude"))] {
        let w = api
            .post(
                "/workspaces",
                json!({"name": name, "repos": [{"url": url}],
                       "agent_config": fake_agent_config(SCENARIO, protocol)}),
            )
            .await;
        assert_eq!(w.status, 201, "{}", w.body);
        let t = api
            .post(
                "/tasks",
                json!({"prompt": "Write a greeting", "workspace": name, "dispatch": true}),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.body);
        tasks.push(t.body["id"].as_str().unwrap().to_owned());
    }
    let mut servers = Vec::new();
    for id in &tasks {
        let task = wait_status(&api, id, "needs_attention").await;
        let sandbox = task["sandbox_id"].as_str().unwrap().to_owned();
        let svc = api
            .get(&format!("/sandboxes/{sandbox}/services/coding-agent"))
            .await;
        assert_eq!(svc.status, 200, "{}", svc.body);
        let argv: Vec<String> = serde_json::from_value(svc.body["spec"]["command"]["argv"].clone())
            .unwrap_or_else(|_| panic!("an argv: {}", svc.body));
        let port = argv
            .iter()
            .position(|a| a == "--port")
            .and_then(|i| argv.get(i + 1))
            .unwrap_or_else(|| panic!("the server's port in {argv:?}"))
            .clone();
        servers.push((sandbox, port));
    }

    // Each sandbox knocks on the other's server: with no credentials, with a guess at
    // OpenCode's Basic auth, with a guess at the stdio host's bearer token.
    let probes = [
        ("served", &servers[1].0, &servers[0].1, "/session", None),
        (
            "served",
            &servers[1].0,
            &servers[0].1,
            "/session",
            Some("-uopencode:opencode"),
        ),
        ("stdio", &servers[0].0, &servers[1].1, "/transcript", None),
        (
            "stdio",
            &servers[0].0,
            &servers[1].1,
            "/transcript",
            Some("-HAuthorization: Bearer guess"),
        ),
    ];
    for (what, from, port, path, credential) in probes {
        let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
        args.extend(credential);
        let target = format!("http://127.0.0.1:{port}{path}");
        args.push(&target);
        let r = api.exec(from, "curl", &args).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body["stdout"], "401",
            "the {what} agent's server answered a neighbour ({credential:?}): {}",
            r.body
        );
    }

    // The manager holds the passwords: both tasks go on to review.
    for id in &tasks {
        let ask = api
            .get("/attention")
            .await
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["task_id"] == id.as_str())
            .cloned()
            .unwrap();
        let r = api
            .post(
                &format!("/attention/{id}/{}/answer", ask["id"].as_str().unwrap()),
                json!({"kind": "question", "answers": [["Formal"]]}),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
        wait_status(&api, id, "review").await;
    }
}
