//! A manager killed with SIGKILL loses no recorded state and leaks nothing: on restart it
//! adopts sandboxes that still run and rolls back what was half done.

mod common;

use std::time::Duration;

use common::{processes_under, Manager};
use serde_json::json;

#[tokio::test]
async fn kill_9_during_creation_then_restart_leaves_no_orphan_and_a_consistent_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // An agent that takes its time to start, so the kill lands mid-creation.
    let agent = common::ensure_agent_built();
    let slow = dir.path().join("slow-agent.sh");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\nsleep 3\nexec {} \"$@\"\n", agent.display()),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!("[local]\nagent_binary = \"{}\"\n", slow.display()),
    )
    .unwrap();

    let mut m = Manager::start(&data);
    let api = m.client();
    let r = api.post("/sandboxes", json!({"name": "doomed"})).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (201, Some("creating")),
        "{}",
        r.body
    );
    let id = r.body["id"].as_str().unwrap().to_owned();
    let sandbox_dir = data.join("sandboxes").join(&id);
    common::eventually(
        Duration::from_secs(5),
        "the sandbox process to start",
        || {
            let d = sandbox_dir.clone();
            async move { (!processes_under(&d).is_empty()).then_some(()) }
        },
    )
    .await;
    m.kill9();
    assert!(
        !processes_under(&sandbox_dir).is_empty(),
        "the sandbox outlives the manager"
    );

    let m2 = Manager::start(&data);
    let api = m2.client();
    let r = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(r.body["state"], "error", "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("interrupted"),
        "{}",
        r.body
    );
    assert!(
        processes_under(&sandbox_dir).is_empty(),
        "no orphan process"
    );
    assert!(!sandbox_dir.exists(), "no leftover directory");
    // The store is intact and usable.
    let r = api.delete(&format!("/sandboxes/{id}")).await;
    assert_eq!(r.body["state"], "destroyed", "{}", r.body);
}

#[tokio::test]
async fn a_restarted_manager_adopts_running_sandboxes_and_sweeps_unknown_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut m = Manager::start(&data);
    let api = m.client();
    let id = api.running_sandbox("keeper").await;
    let w = api.post("/workspaces", json!({"name": "kept"})).await;
    assert_eq!(w.status, 201);
    m.kill9();

    // A directory no record knows about (as if created just before a crash).
    let stray = data.join("sandboxes").join("szzzzzzzzzzz");
    std::fs::create_dir_all(stray.join("root")).unwrap();

    let m2 = Manager::start(&data);
    let api = m2.client();
    let r = api.get(&format!("/sandboxes/{id}")).await;
    assert_eq!(r.body["state"], "running", "adopted: {}", r.body);
    let r = api.exec(&id, "echo", &["still here"]).await;
    assert_eq!(r.body["stdout"], "still here\n", "{}", r.body);
    assert_eq!(
        api.get("/workspaces/kept").await.status,
        200,
        "recorded state survives kill -9"
    );
    assert!(!stray.exists(), "unknown leftovers are swept");
    api.delete(&format!("/sandboxes/{id}")).await;
}

#[tokio::test]
async fn a_sandbox_whose_process_died_while_the_manager_was_down_is_marked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut m = Manager::start(&data);
    let id = m.client().running_sandbox("victim").await;
    m.kill9();
    common::kill_processes_under(&data.join("sandboxes").join(&id));
    common::eventually(Duration::from_secs(5), "the sandbox process to die", || {
        let d = data.join("sandboxes").join(&id);
        async move { processes_under(&d).is_empty().then_some(()) }
    })
    .await;
    let m2 = Manager::start(&data);
    let r = m2.client().get(&format!("/sandboxes/{id}")).await;
    assert_eq!(r.body["state"], "error", "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("process is gone"),
        "{}",
        r.body
    );
    // From error, a start brings it back.
    let r = m2
        .client()
        .post(&format!("/sandboxes/{id}/start?wait=true"), json!({}))
        .await;
    assert_eq!(r.body["state"], "running", "{}", r.body);
}

#[tokio::test]
async fn a_second_manager_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _m = Manager::start(&data);
    let out = std::process::Command::new(common::atelier_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another Atelier manager already uses"));
}
