//! The whole job in a microVM: the workspace's prebuild boots the `dev` image, clones the
//! repo and warms the real OpenCode (`opencode-ai@1.18.33`, preinstalled in the image);
//! a task spawns a clone of it, where OpenCode talks to a scripted OpenAI-compatible
//! model on the host's loopback through the model proxy (the sandbox holds a placeholder
//! key; the real one never enters the VM), edits a file, asks a question that is answered
//! through the attention API, and the branch lands in review and outlives the VM.
//!
//! Needs QEMU, mkfs.ext4, busybox-static, mmdebstrap and npm (the `dev` image is built
//! once into the shared test image cache), git and root (host services ride the namespace
//! network); prints `skipped: <reason>` otherwise.

mod common;

use std::time::{Duration, Instant};

use common::git::served_origin;
use common::model_server::{self, ModelServer, Reply};
use common::{eventually, Manager};
use serde_json::json;

const SECRET: &str = "sk-vm-proxied-0123456789-secret";

fn skip_reason() -> Option<String> {
    atelier_testkit::qemu_missing()
        .or_else(|| {
            atelier_testkit::missing(&[
                ("mmdebstrap", "mmdebstrap"),
                ("npm", "npm"),
                ("git", "git"),
            ])
        })
        .or_else(|| {
            (!atelier_testkit::is_root())
                .then(|| "host services need the namespace network, which needs root".to_string())
        })
}

/// The model's side: show the key it holds, write NOTES.md, ask which greeting, report.
fn script(req: &serde_json::Value) -> Reply {
    match model_server::tool_results(req) {
        0 => Reply::tool(
            "bash",
            json!({"command": "echo key=$SCRIPTED_API_KEY", "description": "Show the key"}),
        ),
        1 => Reply::tool(
            "write",
            json!({"filePath": "NOTES.md", "content": "Good day to you.\n"}),
        ),
        2 => Reply::tool(
            "question",
            json!({"questions": [{"question": "Formal or casual greeting?", "header": "Greeting",
                "options": [{"label": "Formal", "description": "Good day"},
                            {"label": "Casual", "description": "Hi"}]}]}),
        ),
        _ => Reply::text("I wrote NOTES.md inside the VM."),
    }
}

#[tokio::test]
async fn a_real_opencode_in_a_prebuild_clone_edits_asks_and_keeps_the_key_on_the_host() {
    atelier_testkit::require!(skip_reason());
    atelier_testkit::ensure_guest_agent();
    let dir = tempfile::tempdir().unwrap();
    let daemon = served_origin(dir.path());
    let model = ModelServer::start(script)
        .await
        .expect("the scripted model");
    let data = atelier_testkit::data_dir_with_image_cache(dir.path(), "");
    let m = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    let built = api
        .send(
            api.req(reqwest::Method::POST, "/images/dev/build")
                .timeout(Duration::from_secs(2400)),
        )
        .await;
    assert_eq!(built.status, 200, "{}", built.body);

    let w = api
        .post(
            "/workspaces",
            json!({
                "name": "app",
                "repos": [{"url": daemon.sandbox_url()}],
                "network": {"host_services": [{"port": daemon.port, "name": "git"}]},
                "base_image": "dev",
                "resources": {"vcpus": 2, "memory_mib": 2048, "disk_mib": 10240},
                "secrets": {"env": [{"name": "MODEL_KEY", "value": SECRET}]},
                "prebuild": {"auto_rebuild": false},
                "agent_config": {
                    "runtime": "opencode",
                    "model": "scripted/m",
                    "providers": {"scripted": {
                        "base_url": model.url, "api_key_env": "SCRIPTED_API_KEY", "proxy": true,
                        "models": {"m": {"input_cost": 1.0, "output_cost": 2.0}}}},
                    "secrets": {"MODEL_KEY": "SCRIPTED_API_KEY"},
                    "env": {
                        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
                        "OPENCODE_DISABLE_CLAUDE_CODE": "1",
                        "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
                        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1"
                    },
                    "warm": true
                }
            }),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);

    // The prebuild: the repo cloned and OpenCode warmed in the builder, then a memory
    // snapshot.
    let r = api.post("/workspaces/app/prebuilds", json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let prebuild = r.body["id"].as_str().unwrap().to_owned();
    let (a, p) = (api.clone(), prebuild.clone());
    let built = eventually(Duration::from_secs(1200), "the prebuild", || {
        let (api, p) = (a.clone(), p.clone());
        async move {
            let b = api.get(&format!("/prebuilds/{p}")).await.body;
            (b["state"] != "building").then_some(b)
        }
    })
    .await;
    let log = api.get(&format!("/prebuilds/{prebuild}/logs")).await.body["data"].to_string();
    assert_eq!(built["state"], "ready", "{built}\n{log}\n{}", m.log());
    assert_eq!(built["memory_snapshot"], true, "{built}");

    let dispatched = Instant::now();
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting into NOTES.md", "workspace": "app",
                   "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let branch = t.body["branch"].as_str().unwrap().to_owned();

    let ask = api.first_ask(&id, Duration::from_secs(900)).await;
    println!("dispatch to the question: {:?}", dispatched.elapsed());
    assert_eq!(ask["kind"], "question", "{ask}");
    let task = api.get(&format!("/tasks/{id}")).await.body;
    let sandbox = task["sandbox_id"].as_str().unwrap().to_owned();
    let s = api.get(&format!("/sandboxes/{sandbox}")).await.body;
    assert_eq!(s["driver"], "qemu", "{s}");
    assert_eq!(
        s["prebuild_id"],
        prebuild.as_str(),
        "a clone of the prebuild: {s}"
    );

    // The real key is nowhere in the VM: no file outside the image's own /usr, no
    // process's environment or command line. OpenCode holds the placeholder instead. The
    // probe reads the key from its stdin, so that its own command line does not hold it.
    let probe = api
        .post(
            &format!("/sandboxes/{sandbox}/exec"),
            json!({"command": "sh", "args": ["-c",
                "read -r key; \
                 grep -rlsF \"$key\" / --exclude-dir=proc --exclude-dir=sys \
                   --exclude-dir=dev --exclude-dir=usr; \
                 echo files-done; \
                 for p in /proc/[0-9]*; do \
                   grep -qsF \"$key\" $p/environ $p/cmdline && echo \"process $p\"; \
                 done; \
                 grep -lsa atl-proxy- /proc/[0-9]*/environ | head -n 1; echo procs-done"],
                   "stdin": format!("{SECRET}\n"), "timeout_ms": 600_000}),
        )
        .await
        .body;
    let out = probe["stdout"].as_str().unwrap_or_default();
    assert!(out.contains("procs-done"), "{probe}");
    let (files, procs) = out.split_once("files-done").unwrap();
    assert_eq!(files.trim(), "", "files holding the real key: {probe}");
    assert!(
        !procs.contains("process "),
        "processes holding the real key: {probe}"
    );
    assert!(
        procs.contains("/environ"),
        "a process (OpenCode) holds the placeholder key: {probe}"
    );

    let r = api
        .post(
            &format!("/attention/{id}/{}/answer", ask["id"].as_str().unwrap()),
            json!({"kind": "question", "answers": [["Formal"]]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let task = api.review(&id, Duration::from_secs(900)).await;
    assert_eq!(task["changes"][0]["path"], "NOTES.md", "{task}");

    // Every model call came through the proxy, which swapped the real key in; the agent
    // saw only its placeholder; the answer reached the model.
    let requests = model.requests();
    assert!(requests.len() >= 4, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {SECRET}"))),
        "the proxy swaps the real key in"
    );
    assert!(
        requests
            .iter()
            .any(|r| model_server::last_tool_result(&r.body).is_some_and(|t| t.contains("Formal"))),
        "the answer reaches the model"
    );
    let timeline = api.get(&format!("/tasks/{id}/events")).await.body;
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["name"] == "bash"
                && e["event"]["output"]
                    .as_str()
                    .is_some_and(|o| o.contains("key=atl-proxy-"))),
        "the agent's key is the placeholder: {timeline}"
    );

    // Done: the VM goes, the commit stays in the host-side mirror.
    let r = api.post(&format!("/tasks/{id}/done"), json!({})).await;
    assert_eq!(r.body["status"], "done", "{}", r.body);
    let (a, s) = (api.clone(), sandbox.clone());
    eventually(Duration::from_secs(120), "the VM to be destroyed", || {
        let (api, s) = (a.clone(), s.clone());
        async move {
            (api.get(&format!("/sandboxes/{s}")).await.body["state"] == "destroyed").then_some(())
        }
    })
    .await;
    assert_eq!(
        common::mirrored_file(&data, &branch, "NOTES.md"),
        "Good day to you.\n"
    );
}
