//! A task on the qemu driver: the sandbox is a microVM booted from the `dev` image (Debian
//! with git), the scripted fake agent runs inside it and the manager reaches it through a
//! port forward over the agent's tunnel. The repo comes from a `git daemon` on the host's
//! loopback, which the workspace names as a host service: the sandbox reaches it at
//! 172.16.0.1 through the forward the manager opens for it alone (nothing else of the host
//! is reachable); the branch comes back out through the host-side mirror and outlives the VM.
//!
//! Needs QEMU, mkfs.ext4, busybox-static, mmdebstrap (the `dev` image is built once into
//! the shared test image cache) and root (host services ride the namespace network); prints
//! `skipped: <reason>` otherwise.

mod common;

use std::time::Duration;

use common::git::{git, served_origin};
use common::{eventually, Manager};
use serde_json::json;

/// Why a task cannot run in a microVM here, if it cannot.
fn skip_reason() -> Option<String> {
    atelier_testkit::qemu_missing()
        .or_else(|| atelier_testkit::missing(&[("mmdebstrap", "mmdebstrap"), ("git", "git")]))
        .or_else(|| {
            (!atelier_testkit::is_root())
                .then(|| "host services need the namespace network, which needs root".to_string())
        })
}

const SCENARIO: &str = r#"
steps:
  - todos:
      - {content: "Ask which greeting", status: in_progress}
  - ask_question:
      questions:
        - question: "Formal or casual greeting?"
          options: [Formal, Casual]
  - edit_file: {path: NOTES.md, content: "Good day to you.\n"}
  - todos:
      - {content: "Ask which greeting", status: completed}
  - say: "I wrote NOTES.md inside the VM."
  - finish
"#;

#[tokio::test]
async fn a_task_runs_in_a_microvm_and_its_branch_survives_it() {
    atelier_testkit::require!(skip_reason());
    atelier_testkit::ensure_guest_agent();
    common::ensure_fake_agent_built();
    let dir = tempfile::tempdir().unwrap();
    let daemon = served_origin(dir.path());

    let data = atelier_testkit::data_dir_with_image_cache(dir.path(), "");
    let m = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    // The first build of the dev image runs mmdebstrap (minutes); later runs reuse it.
    let built = api
        .send(
            api.req(reqwest::Method::POST, "/images/dev/build")
                .timeout(Duration::from_secs(1800)),
        )
        .await;
    if built.status != 200 {
        atelier_testkit::skip(format!(
            "the dev image cannot be built here: {}",
            built.body
        ));
        return;
    }
    let w = api
        .post(
            "/workspaces",
            json!({
                "name": "app",
                "repos": [{"url": daemon.sandbox_url()}],
                "network": {"host_services": [{"port": daemon.port, "name": "git"}]},
                "base_image": "dev",
                "resources": {"vcpus": 2, "memory_mib": 1024, "disk_mib": 10240},
                "agent_config": {"runtime": "fake", "scenario": SCENARIO}
            }),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting", "workspace": "app", "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let branch = t.body["branch"].as_str().unwrap().to_owned();

    let ask = api.first_ask(&id, Duration::from_secs(600)).await;
    let task = api.get(&format!("/tasks/{id}")).await.body;
    let sandbox = task["sandbox_id"].as_str().unwrap().to_owned();
    let s = api.get(&format!("/sandboxes/{sandbox}")).await.body;
    assert_eq!(s["driver"], "qemu", "{s}");
    let r = api
        .post(
            &format!("/attention/{id}/{}/answer", ask["id"].as_str().unwrap()),
            json!({"kind": "question", "answers": [["Formal"]]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);

    let task = api.review(&id, Duration::from_secs(600)).await;
    assert_eq!(task["changes"][0]["path"], "NOTES.md", "{task}");
    assert_eq!(task["progress"], 100, "{task}");

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
    let mirror = std::fs::read_dir(data.join("mirrors"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
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
}
