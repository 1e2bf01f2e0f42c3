//! The `dev` image holds the toolset coding agents expect: its build records what is
//! inside with versions (`GET /images/dev`, `atelier image show dev`), and a microVM
//! booted from it runs every tool and agent CLI at the version the build recorded.
//!
//! Needs QEMU, mkfs.ext4, busybox-static, mmdebstrap and npm (the image is built once into
//! the shared test image cache, which takes minutes); prints `skipped: <reason>` otherwise.

mod common;

use std::time::Duration;

use common::Manager;
use serde_json::{json, Value};

/// The tools a `dev` sandbox must run, and the argv that prints each one's version.
const TOOLS: &[(&str, &[&str])] = &[
    ("node", &["node", "--version"]),
    ("npm", &["npm", "--version"]),
    ("python3", &["python3", "--version"]),
    ("pip", &["pip3", "--version"]),
    ("go", &["go", "version"]),
    ("rustc", &["rustc", "--version"]),
    ("cargo", &["cargo", "--version"]),
    ("git", &["git", "--version"]),
    ("gh", &["gh", "--version"]),
    ("ripgrep", &["rg", "--version"]),
    ("opencode", &["opencode", "--version"]),
    ("codex", &["codex", "--version"]),
    ("claude", &["claude", "--version"]),
    ("gemini", &["gemini", "--version"]),
];

fn skip_reason() -> Option<String> {
    atelier_testkit::qemu_missing()
        .or_else(|| atelier_testkit::missing(&[("mmdebstrap", "mmdebstrap"), ("npm", "npm")]))
}

fn version_in(contents: &[Value], name: &str) -> String {
    contents
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["version"].as_str())
        .unwrap_or_else(|| panic!("{name} is not in the image's contents: {contents:?}"))
        .to_owned()
}

#[tokio::test]
async fn the_dev_image_runs_every_tool_and_agent_cli_it_lists() {
    atelier_testkit::require!(skip_reason());
    atelier_testkit::ensure_guest_agent();
    let dir = tempfile::tempdir().unwrap();
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

    // What the build recorded: every tool answered, the npm CLIs at their pins, Node ≥ 22.
    let image = api.get("/images/dev").await.body;
    assert_eq!(image["built"], true, "{image}");
    assert_eq!(image["building"], false, "{image}");
    let contents = image["contents"].as_array().cloned().unwrap_or_default();
    for (name, _) in TOOLS {
        let v = version_in(&contents, name);
        assert_ne!(v, "missing", "{name} did not answer at build time: {image}");
    }
    let node_major: u32 = version_in(&contents, "node")
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap();
    assert!(node_major >= 22, "Claude Code needs Node 22: {image}");
    assert_eq!(version_in(&contents, "npm:opencode-ai"), "1.18.33");
    assert_eq!(version_in(&contents, "opencode"), "1.18.33");
    assert_eq!(version_in(&contents, "codex"), "0.169.0");
    assert_eq!(
        version_in(&contents, "npm:@anthropic-ai/claude-code"),
        "2.1.328"
    );

    // The CLI shows the same list.
    let show = std::process::Command::new(common::atelier_bin())
        .args(["image", "show", "dev"])
        .env("ATELIER_URL", &m.url)
        .env_remove("ATELIER_TOKEN")
        .env("ATELIER_DATA_DIR", &m.data_dir)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{shown}");
    assert!(
        shown.contains("claude") && shown.contains("2.1.328"),
        "{shown}"
    );

    // Inside a booted dev VM each tool runs and says the recorded version.
    let r = api
        .post(
            "/sandboxes?wait=true",
            json!({"name": "devtools", "image": "dev", "vcpus": 2, "memory_mib": 2048,
                   "prebuild": false}),
        )
        .await;
    assert_eq!(r.body["state"], "running", "{}\n{}", r.body, m.log());
    let id = r.body["id"].as_str().unwrap().to_owned();
    for (name, argv) in TOOLS {
        let out = api
            .post(
                &format!("/sandboxes/{id}/exec"),
                json!({"command": argv[0], "args": &argv[1..], "user": "dev",
                       "timeout_ms": 300_000}),
            )
            .await
            .body;
        assert_eq!(out["exit_code"], 0, "{name}: {out}");
        let printed = format!("{}{}", out["stdout"], out["stderr"]);
        let recorded = version_in(&contents, name);
        assert!(
            printed.contains(&recorded),
            "{name} printed {printed}, the build recorded {recorded}"
        );
    }
    let r = api.delete(&format!("/sandboxes/{id}")).await;
    assert!(r.status < 300, "{}", r.body);
}

/// A workspace's `image` extends `dev` with a Debian package, an npm package and a build
/// step: its prebuild builds the image first, which shows its steps while it runs (in the
/// image and in the prebuild's log), records what it added with versions, and a clone of
/// the prebuild has all three in place and the base's tools too.
#[tokio::test]
async fn a_workspace_image_extension_is_built_with_its_steps_shown_and_booted() {
    atelier_testkit::require!(skip_reason());
    atelier_testkit::ensure_guest_agent();
    let dir = tempfile::tempdir().unwrap();
    let data = atelier_testkit::data_dir_with_image_cache(dir.path(), "");
    let m = Manager::start_with(&data, &["--driver", "qemu"]);
    let api = m.client();
    // The base first: when the other test is building it, this waits for that build and
    // so shares its downloads instead of running a second one beside it.
    let base = api
        .send(
            api.req(reqwest::Method::POST, "/images/dev/build")
                .timeout(Duration::from_secs(2400)),
        )
        .await;
    assert_eq!(base.status, 200, "{}", base.body);

    let ws = api
        .post(
            "/workspaces",
            json!({"name": "extended",
                   "resources": {"vcpus": 2, "memory_mib": 2048, "disk_mib": 8192},
                   "image": {"packages": ["tree"], "npm": ["is-number@7.0.0"],
                             "run": ["echo \"made by run: $((6*7))\" > /etc/atelier-ext-marker"]}}),
        )
        .await;
    assert_eq!(ws.status, 201, "{}", ws.body);
    let name = ws.body["image_name"].as_str().unwrap().to_owned();
    let path = format!("/images/{name}");

    // Built afresh every run (a kept cache would make it instant and show no steps).
    let _ = api.delete(&path).await;

    // The workspace's prebuild builds it first; while it runs, the image says so and
    // shows how far it has come.
    let r = api.post("/workspaces/extended/prebuilds", json!({})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let prebuild = r.body["id"].as_str().unwrap().to_owned();
    let mut seen_running: Vec<String> = vec![];
    let deadline = std::time::Instant::now() + Duration::from_secs(2400);
    let state = loop {
        let p = api.get(&format!("/prebuilds/{prebuild}")).await.body;
        if p["state"] != "building" {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prebuild still building: {p}"
        );
        let image = api.get(&path).await.body;
        if image["building"] == true {
            for s in image["steps"].as_array().into_iter().flatten() {
                let s = s.as_str().unwrap_or_default().to_owned();
                if !seen_running.contains(&s) {
                    seen_running.push(s);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log = api.get(&format!("/prebuilds/{prebuild}/logs")).await.body["data"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(state["state"], "ready", "{state}\n{log}");
    let steps = seen_running.join("\n");
    assert!(steps.contains("mmdebstrap trixie with"), "{steps}");
    assert!(
        steps.contains("run 1/1: echo"),
        "the build step was shown: {steps}"
    );
    assert!(
        log.contains(&format!("image {name}: run 1/1: echo")),
        "the prebuild's log shows the image's steps: {log}"
    );

    let image = api.get(&path).await.body;
    assert_eq!(image["built"], true, "{image}");
    assert_eq!(image["extension"]["packages"], json!(["tree"]), "{image}");
    let contents = image["contents"].as_array().cloned().unwrap_or_default();
    let tree = version_in(&contents, "deb:tree");
    assert_ne!(tree, "missing", "{image}");
    assert_eq!(version_in(&contents, "npm:is-number"), "7.0.0");
    assert_ne!(
        version_in(&contents, "claude"),
        "missing",
        "the base's tools are kept"
    );

    let show = std::process::Command::new(common::atelier_bin())
        .args(["image", "show", &name])
        .env("ATELIER_URL", &m.url)
        .env_remove("ATELIER_TOKEN")
        .env("ATELIER_DATA_DIR", &m.data_dir)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success() && shown.contains("deb:tree"),
        "{shown}"
    );

    // A sandbox of the workspace, a clone of that prebuild, runs the extension.
    let r = api
        .post(
            "/sandboxes?wait=true",
            json!({"workspace": "extended", "prebuild": true}),
        )
        .await;
    assert_eq!(r.body["state"], "running", "{}\n{}", r.body, m.log());
    let id = r.body["id"].as_str().unwrap().to_owned();
    let exec = |argv: &[&str]| {
        let api = api.clone();
        let body = json!({"command": argv[0], "args": &argv[1..], "user": "dev",
                          "timeout_ms": 120_000});
        let path = format!("/sandboxes/{id}/exec");
        async move { api.post(&path, body).await.body }
    };
    let out = exec(&["tree", "--version"]).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let upstream = tree.split(['-', '+']).next().unwrap_or_default();
    assert!(
        out["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains(upstream),
        "{out} vs {tree}"
    );
    let out = exec(&["cat", "/etc/atelier-ext-marker"]).await;
    assert_eq!(out["stdout"], "made by run: 42\n", "{out}");
    let out = exec(&[
        "node",
        "-p",
        "require('/usr/local/lib/node_modules/is-number')(7)",
    ])
    .await;
    assert_eq!(out["stdout"], "true\n", "{out}");
    let out = exec(&["claude", "--version"]).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let r = api.delete(&format!("/sandboxes/{id}")).await;
    assert!(r.status < 300, "{}", r.body);
}
