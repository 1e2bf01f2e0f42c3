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
