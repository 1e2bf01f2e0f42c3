//! Prebuilds end to end on the local driver: build (clone on the host, init commands with
//! their log), clones that start from it and stay apart, a failed init, staleness with a
//! rebuild that keeps the old prebuild serving, and a manager killed mid-build.

mod common;

use std::path::Path;
use std::time::Duration;

use common::git::{git, origin_with_work as origin};
use common::{eventually, processes_under, Api, Manager};
use serde_json::{json, Value};

async fn workspace(api: &Api, url: &str, init: &[&str], auto_rebuild: bool) {
    let r = api
        .post(
            "/workspaces",
            json!({
                "name": "app",
                "repos": [{"url": url, "branch": "main"}],
                "init_commands": init,
                "prebuild": {"auto_rebuild": auto_rebuild},
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn wait_prebuild(api: &Api, id: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("prebuild {id} {state}"),
        || async {
            let p = api.get(&format!("/prebuilds/{id}")).await.body;
            assert!(
                p["state"] == state || p["state"] == "building",
                "prebuild {id} is {} (wanted {state}): {p}",
                p["state"]
            );
            (p["state"] == state).then_some(p)
        },
    )
    .await
}

async fn log_of(api: &Api, id: &str) -> String {
    api.get(&format!("/prebuilds/{id}/logs")).await.body["data"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn sh(api: &Api, sandbox: &str, script: &str) -> (i64, String) {
    let r = api.exec(sandbox, "sh", &["-c", script]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    (
        r.body["exit_code"].as_i64().unwrap_or(-1),
        r.body["stdout"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn sandbox_from_workspace(api: &Api, extra: Value) -> Value {
    let mut body = json!({"workspace": "app"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = api.post("/sandboxes?wait=true", body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["state"], "running", "{}", r.body);
    r.body
}

#[tokio::test]
async fn a_prebuild_is_built_once_and_its_clones_start_set_up_and_stay_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, work) = origin(tmp.path());
    let m = Manager::start(&tmp.path().join("data"));
    let api = m.client();
    workspace(
        &api,
        &url,
        &[
            "echo installing deps; echo ready > .deps-ready",
            "echo second step",
        ],
        false,
    )
    .await;

    let r = api.post("/workspaces/app/prebuilds", json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["state"], "building");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let again = api.post("/workspaces/app/prebuilds", json!({})).await;
    assert!(
        again.status == 409 || again.status == 202 && again.body["id"] != id.as_str(),
        "{}",
        again.body
    );
    let p = wait_prebuild(&api, &id, "ready").await;
    let head = git(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(p["commits"][0]["commit"], head.as_str(), "{p}");
    assert_eq!(p["commits"][0]["path"], "origin");
    assert_eq!(
        p["memory_snapshot"], false,
        "the local driver boots its clones"
    );
    let log = log_of(&api, &id).await;
    for needle in ["cloning", "installing deps", "second step", "==> ready"] {
        assert!(
            log.contains(needle),
            "{needle:?} missing from the log:\n{log}"
        );
    }
    // The builder sandbox is gone; its work lives in the prebuild.
    let builder = p["sandbox_id"].as_str().unwrap();
    let b = api.get(&format!("/sandboxes/{builder}")).await;
    assert_eq!(b.body["state"], "destroyed", "{}", b.body);

    // Two clones: set up already, apart from each other.
    let a = sandbox_from_workspace(&api, json!({})).await;
    let b = sandbox_from_workspace(&api, json!({})).await;
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    for s in [a, b] {
        let got = api.get(&format!("/sandboxes/{s}")).await.body;
        assert_eq!(got["prebuild_id"], id.as_str(), "{got}");
        let (code, out) = sh(&api, s, "cat origin/README.md origin/.deps-ready").await;
        assert_eq!((code, out.as_str()), (0, "# app\nready\n"));
    }
    let before = api.get(&format!("/sandboxes/{a}/disk")).await.body;
    let before = before["own_bytes"].as_u64().expect("own_bytes");
    assert_eq!(
        sh(
            &api,
            a,
            "head -c 3000000 /dev/urandom > origin/only-in-a && sync"
        )
        .await
        .0,
        0
    );
    assert_eq!(sh(&api, b, "test -e origin/only-in-a").await.0, 1);
    // What a clone writes is its own, and shows.
    let after = api.get(&format!("/sandboxes/{a}/disk")).await.body;
    assert!(
        after["own_bytes"].as_u64().expect("own_bytes") >= before + 3_000_000,
        "{before} → {after}"
    );
    assert_eq!(api.get("/sandboxes/snope/disk").await.status, 404);
    let system = api.get("/system").await.body;
    let kind = system["storage"]["kind"].as_str().unwrap_or_default();
    assert!(kind == "reflink" || kind == "copy", "{system}");
    assert!(
        system["storage"]["pool_total_bytes"].as_u64().unwrap_or(0) > 0,
        "{system}"
    );
    let status = api.get("/workspaces/app/prebuilds").await.body;
    assert_eq!(status["current"]["id"], id.as_str(), "{status}");
    assert_eq!(status["current"]["clones"], 2, "{status}");

    // Opting out boots cold, without the repos.
    let cold = sandbox_from_workspace(&api, json!({"prebuild": false})).await;
    assert!(cold["prebuild_id"].is_null(), "{cold}");
    assert_eq!(
        sh(&api, cold["id"].as_str().unwrap(), "test -e origin")
            .await
            .0,
        1
    );
    // A clone that does not fit the prebuild's machine size is refused when required.
    let r = api
        .post(
            "/sandboxes",
            json!({"workspace": "app", "prebuild": true, "vcpus": 3}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // A sandbox set up by hand becomes the prebuild; it ends stopped.
    let hand = cold["id"].as_str().unwrap();
    assert_eq!(sh(&api, hand, "echo by hand > handmade").await.0, 0);
    let r = api
        .post("/workspaces/app/prebuilds", json!({"from_sandbox": hand}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let promoted = r.body["id"].as_str().unwrap().to_owned();
    let p = wait_prebuild(&api, &promoted, "ready").await;
    assert_eq!(p["origin"], "promote", "{p}");
    let hand_now = api.get(&format!("/sandboxes/{hand}")).await.body;
    assert_eq!(hand_now["state"], "stopped", "{hand_now}");
    let old = api.get(&format!("/prebuilds/{id}")).await.body;
    assert_eq!(old["state"], "superseded", "{old}");
    let next = sandbox_from_workspace(&api, json!({})).await;
    assert_eq!(next["prebuild_id"], promoted.as_str());
    let (_, out) = sh(&api, next["id"].as_str().unwrap(), "cat handmade").await;
    assert_eq!(out, "by hand\n");
    // Promoting a sandbox that is not running is refused.
    let r = api
        .post("/workspaces/app/prebuilds", json!({"from_sandbox": hand}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
}

#[tokio::test]
async fn a_failed_init_command_fails_the_prebuild_with_its_log_tail_and_leaks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _work) = origin(tmp.path());
    let data = tmp.path().join("data");
    let m = Manager::start(&data);
    let api = m.client();
    workspace(
        &api,
        &url,
        &[
            "echo step one",
            "echo about to fail >&2; exit 3",
            "echo never",
        ],
        false,
    )
    .await;
    let r = api.post("/workspaces/app/prebuilds", json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let p = wait_prebuild(&api, &id, "failed").await;
    let error = p["error"].as_str().unwrap();
    assert!(
        error.contains("init command 2") && error.contains("code 3"),
        "{error}"
    );
    let tail = p["log_tail"].as_str().unwrap();
    assert!(tail.contains("about to fail"), "{tail}");
    assert!(!tail.contains("never"), "{tail}");
    // Nothing left: the builder is destroyed, no process, no snapshot.
    let builder = p["sandbox_id"].as_str().unwrap();
    eventually(Duration::from_secs(10), "the builder destroyed", || async {
        (api.get(&format!("/sandboxes/{builder}")).await.body["state"] == "destroyed").then_some(())
    })
    .await;
    assert!(!data.join("sandboxes").join(builder).exists());
    assert!(!data.join("prebuilds").join(&id).join("snapshot").exists());
    assert_eq!(processes_under(&data.join("sandboxes")), Vec::<u32>::new());
    // No prebuild to start from.
    let r = api
        .post("/sandboxes", json!({"workspace": "app", "prebuild": true}))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let status = api.get("/workspaces/app/prebuilds").await.body;
    assert!(status["current"].is_null(), "{status}");
    // Bad input names the field.
    let r = api
        .post("/workspaces/app/prebuilds", json!({"from_sandbox": "nope"}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.to_string().contains("from_sandbox"), "{}", r.body);
    let r = api
        .post("/workspaces/app/prebuilds", json!({"bogus": 1}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(api.get("/prebuilds/pnope").await.status, 404);
    let failed = api.get("/prebuilds?state=failed").await;
    assert_eq!(failed.body[0]["id"], id.as_str(), "{}", failed.body);
    assert_eq!(api.get("/prebuilds?state=ready").await.body, json!([]));
    let bad = api.get("/prebuilds?state=stale").await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.to_string().contains("state"), "{}", bad.body);
    assert_eq!(
        api.get(&format!("/prebuilds/{id}/logs?limit=0"))
            .await
            .status,
        422
    );
}

#[tokio::test]
async fn a_moved_branch_makes_the_prebuild_stale_and_the_rebuild_keeps_the_old_one_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, work) = origin(tmp.path());
    let m = Manager::start(&tmp.path().join("data"));
    let api = m.client();
    // The init command takes a moment, so the rebuild can be watched in progress.
    workspace(
        &api,
        &url,
        &["sleep 2; git rev-parse HEAD > .built-at"],
        true,
    )
    .await;
    let first = api.post("/workspaces/app/prebuilds", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_prebuild(&api, &first, "ready").await;
    let checked = api.post("/workspaces/app/prebuilds/check", json!({})).await;
    assert_eq!(checked.status, 200, "{}", checked.body);
    assert!(
        checked.body["current"]["stale"].is_null(),
        "{}",
        checked.body
    );
    assert!(checked.body["building"].is_null(), "{}", checked.body);

    // The branch moves.
    std::fs::write(work.join("CHANGELOG.md"), "v2\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "v2"]);
    git(&work, &["push", "--quiet", "origin", "main"]);
    let new_head = git(&work, &["rev-parse", "HEAD"]).trim().to_owned();

    let checked = api
        .post("/workspaces/app/prebuilds/check", json!({}))
        .await
        .body;
    let stale = checked["current"]["stale"].as_str().unwrap_or_default();
    assert!(stale.contains("moved"), "{checked}");
    assert_eq!(checked["current"]["id"], first.as_str());
    let second = checked["building"]["id"]
        .as_str()
        .expect("a rebuild")
        .to_owned();
    // While it builds, new sandboxes still start from the old prebuild.
    let during = sandbox_from_workspace(&api, json!({})).await;
    assert_eq!(during["prebuild_id"], first.as_str(), "{during}");

    wait_prebuild(&api, &second, "ready").await;
    let status = api.get("/workspaces/app/prebuilds").await.body;
    assert_eq!(status["current"]["id"], second.as_str(), "{status}");
    assert_eq!(status["current"]["commits"][0]["commit"], new_head.as_str());
    let old = api.get(&format!("/prebuilds/{first}")).await.body;
    assert_eq!(old["state"], "superseded", "{old}");
    let after = sandbox_from_workspace(&api, json!({})).await;
    assert_eq!(after["prebuild_id"], second.as_str());
    let (_, built_at) = sh(&api, after["id"].as_str().unwrap(), "cat origin/.built-at").await;
    assert_eq!(built_at.trim(), new_head);
    // The old prebuild's snapshot stays while a sandbox started from it exists.
    assert!(m
        .data_dir
        .join("prebuilds")
        .join(&first)
        .join("snapshot")
        .exists());
    // The running clone of the old prebuild is untouched.
    let (code, _) = sh(
        &api,
        during["id"].as_str().unwrap(),
        "test -e origin/README.md",
    )
    .await;
    assert_eq!(code, 0);

    // Changing what the prebuild captured makes it stale at once, and rebuilds it.
    let r = api
        .patch(
            "/workspaces/app",
            json!({"init_commands": ["echo changed > .built-at"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let third = eventually(
        Duration::from_secs(30),
        "a rebuild after the update",
        || async {
            let s = api.get("/workspaces/app/prebuilds").await.body;
            let stale = s["current"]["stale"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let next = s["history"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (stale.contains("settings") && next != second).then_some(next)
        },
    )
    .await;
    wait_prebuild(&api, &third, "ready").await;
    let fresh = sandbox_from_workspace(&api, json!({})).await;
    let (_, built) = sh(&api, fresh["id"].as_str().unwrap(), "cat origin/.built-at").await;
    assert_eq!(built, "changed\n");
}

#[tokio::test]
async fn a_manager_killed_mid_build_fails_the_prebuild_on_restart_and_leaks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _work) = origin(tmp.path());
    let data = tmp.path().join("data");
    let mut m = Manager::start(&data);
    let api = m.client();
    workspace(&api, &url, &["echo started; sleep 60"], false).await;
    let id = api.post("/workspaces/app/prebuilds", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(
        Duration::from_secs(30),
        "the init command running",
        || async { log_of(&api, &id).await.contains("started").then_some(()) },
    )
    .await;
    m.kill9();

    let m2 = Manager::start(&data);
    let api = m2.client();
    let p = api.get(&format!("/prebuilds/{id}")).await.body;
    assert_eq!(p["state"], "failed", "{p}");
    assert!(p["error"].as_str().unwrap().contains("interrupted"), "{p}");
    let builder = p["sandbox_id"].as_str().unwrap();
    let b = api.get(&format!("/sandboxes/{builder}")).await.body;
    assert_eq!(b["state"], "destroyed", "{b}");
    assert_eq!(processes_under(&data.join("sandboxes")), Vec::<u32>::new());
    // A new build can start.
    let r = api.post("/workspaces/app/prebuilds", json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
}

/// Files under `dir` that contain `needle` (binary-safe).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = vec![];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                pending.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn workspace_secrets_reach_every_sandbox_but_never_a_prebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, _work) = origin(tmp.path());
    let data = tmp.path().join("data");
    let m = Manager::start(&data);
    let api = m.client();
    let secret = "s3cret-value-81f2";
    let r = api
        .post(
            "/workspaces",
            json!({
                "name": "app",
                "repos": [{"url": url, "branch": "main"}],
                "init_commands": ["test -n \"$API_KEY\" && echo key-present > init-saw"],
                "secrets": {
                    "env": [{"name": "API_KEY", "value": secret}],
                    "files": [{"path": "~/.config/tool/token", "content": format!("token={secret}\n"), "mode": 384}],
                },
                "prebuild": {"auto_rebuild": false},
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = api.post("/workspaces/app/prebuilds", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_prebuild(&api, &id, "ready").await;
    let snapshot = data.join("prebuilds").join(&id);
    assert_eq!(
        files_containing(&snapshot, secret.as_bytes()),
        Vec::<String>::new()
    );

    for body in [json!({}), json!({"prebuild": false})] {
        let s = sandbox_from_workspace(&api, body).await;
        let s = s["id"].as_str().unwrap();
        assert_eq!(
            sh(&api, s, "printenv API_KEY").await.1,
            format!("{secret}\n")
        );
        let (code, out) = sh(
            &api,
            s,
            "cat ~/.config/tool/token; stat -c %a ~/.config/tool/token",
        )
        .await;
        assert_eq!((code, out), (0, format!("token={secret}\n600\n")));
    }
    let clone = sandbox_from_workspace(&api, json!({})).await;
    let clone = clone["id"].as_str().unwrap();
    assert_eq!(
        sh(&api, clone, "cat origin/init-saw").await.1,
        "key-present\n"
    );

    // A promoted sandbox gives its secrets back before it is captured.
    let r = api
        .post("/workspaces/app/prebuilds", json!({"from_sandbox": clone}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let promoted = r.body["id"].as_str().unwrap().to_owned();
    wait_prebuild(&api, &promoted, "ready").await;
    let snapshot = data.join("prebuilds").join(&promoted);
    assert_eq!(
        files_containing(&snapshot, secret.as_bytes()),
        Vec::<String>::new()
    );
    let next = sandbox_from_workspace(&api, json!({})).await;
    assert_eq!(next["prebuild_id"], promoted.as_str());
    assert_eq!(
        sh(&api, next["id"].as_str().unwrap(), "printenv API_KEY")
            .await
            .1,
        format!("{secret}\n")
    );
}

#[tokio::test]
async fn the_periodic_check_notices_a_moved_branch_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, work) = origin(tmp.path());
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("config.toml"), "prebuild_check_secs = 1\n").unwrap();
    let m = Manager::start(&data);
    let api = m.client();
    workspace(&api, &url, &["true"], false).await;
    let id = api.post("/workspaces/app/prebuilds", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_prebuild(&api, &id, "ready").await;
    std::fs::write(work.join("NEW.md"), "new\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "--quiet", "-m", "new"]);
    git(&work, &["push", "--quiet", "origin", "main"]);
    // Nobody asks: the manager's own timer finds it.
    let p = eventually(
        Duration::from_secs(20),
        "the prebuild marked stale",
        || async {
            let p = api.get(&format!("/prebuilds/{id}")).await.body;
            p["stale"]
                .as_str()
                .is_some_and(|s| s.contains("moved"))
                .then_some(p)
        },
    )
    .await;
    assert_eq!(p["state"], "ready", "a stale prebuild keeps serving: {p}");
    let stale = api.get("/prebuilds?stale=true").await.body;
    assert_eq!(stale[0]["id"], id.as_str(), "{stale}");
}
