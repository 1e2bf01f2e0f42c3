//! The `atelier` binary as a user runs it, against a real manager.

mod common;

use std::process::{Command, Output};

use common::Manager;

fn atelier(m: &Manager, args: &[&str]) -> Output {
    Command::new(common::atelier_bin())
        .args(args)
        .env("ATELIER_URL", &m.url)
        .env_remove("ATELIER_TOKEN")
        .env("ATELIER_DATA_DIR", &m.data_dir)
        .output()
        .expect("run atelier")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn workspace_commands_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    let out = ok(&atelier(
        &m,
        &[
            "workspace",
            "create",
            "--name",
            "web",
            "--repo",
            "https://example.com/a/web.git#dev:app",
            "--init",
            "npm ci",
            "--dev",
            "vite:5173:npm run dev",
            "--secret",
            "TOKEN=abcdefghijklmnop1234",
            "--vcpus",
            "4",
            "--memory",
            "4096",
        ],
    ));
    assert!(out.contains("web (w"), "{out}");
    assert!(
        out.contains("••••1234") && !out.contains("abcdefghijklmnop1234"),
        "{out}"
    );
    let list = ok(&atelier(&m, &["workspace", "list"]));
    assert!(
        list.contains("web") && list.contains("https://example.com/a/web.git#dev"),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&atelier(&m, &["--json", "workspace", "show", "web"]))).unwrap();
    assert_eq!(json["repos"][0]["path"], "app");
    assert_eq!(json["resources"]["vcpus"], 4);
    ok(&atelier(
        &m,
        &[
            "workspace",
            "edit",
            "web",
            "--init",
            "make",
            "--remove-secret",
            "TOKEN",
        ],
    ));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&atelier(&m, &["--json", "workspace", "show", "web"]))).unwrap();
    assert_eq!(json["init_commands"], serde_json::json!(["make"]));
    assert_eq!(json["secrets"], serde_json::json!([]));

    // The image flags give the workspace its own image, shown with what it adds.
    let shown = ok(&atelier(
        &m,
        &[
            "workspace",
            "edit",
            "web",
            "--image-package",
            "tree",
            "--image-npm",
            "is-number@7.0.0",
            "--image-run",
            "echo hi",
        ],
    ));
    assert!(
        shown.contains("image       dev-ext-") && shown.contains("package   tree"),
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&atelier(&m, &["--json", "workspace", "show", "web"]))).unwrap();
    assert_eq!(json["image"]["npm"], serde_json::json!(["is-number@7.0.0"]));
    let bad = atelier(&m, &["workspace", "edit", "web", "--image-npm", "a b"]);
    assert!(
        text(&bad.stderr).contains("image.npm[0]"),
        "{}",
        text(&bad.stderr)
    );

    let bad = atelier(&m, &["workspace", "create", "--name", "x", "--vcpus", "12"]);
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains("resources.vcpus") && err.contains("between 1 and 8"),
        "{err}"
    );

    ok(&atelier(&m, &["workspace", "delete", "web"]));
    let gone = atelier(&m, &["workspace", "show", "web"]);
    assert!(!gone.status.success() && text(&gone.stderr).contains("not found"));
}

#[test]
fn sandbox_commands_exec_with_streaming_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    let created: serde_json::Value = serde_json::from_str(&ok(&atelier(
        &m,
        &["--json", "sandbox", "create", "--name", "dev1"],
    )))
    .unwrap();
    assert_eq!(created["state"], "running");
    let id = created["id"].as_str().unwrap();

    let list = ok(&atelier(&m, &["sandbox", "list"]));
    assert!(
        list.contains(id) && list.contains("running") && list.contains("local"),
        "{list}"
    );

    let out = atelier(
        &m,
        &[
            "sandbox",
            "exec",
            id,
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 42",
        ],
    );
    assert_eq!(out.status.code(), Some(42), "the remote exit code is ours");
    assert_eq!(text(&out.stdout), "to-out\n");
    assert_eq!(text(&out.stderr), "to-err\n");
    let out = ok(&atelier(
        &m,
        &[
            "sandbox", "exec", id, "--env", "X=1", "--shell", "--", "echo", "$X",
        ],
    ));
    assert_eq!(out, "1\n");
    let json: serde_json::Value = serde_json::from_str(&ok(&atelier(
        &m,
        &["--json", "sandbox", "exec", id, "--", "printf", "hi"],
    )))
    .unwrap();
    assert_eq!(
        (json["exit_code"].as_i64(), json["stdout"].as_str()),
        (Some(0), Some("hi"))
    );

    let stopped = ok(&atelier(&m, &["sandbox", "stop", id]));
    assert!(stopped.contains("stopped"), "{stopped}");
    let refused = atelier(&m, &["sandbox", "exec", id, "--", "true"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("must be running"),
        "{}",
        text(&refused.stderr)
    );
    ok(&atelier(&m, &["sandbox", "start", id]));
    let destroyed = ok(&atelier(&m, &["sandbox", "destroy", id]));
    assert!(destroyed.contains("destroyed"), "{destroyed}");
}

#[test]
fn errors_say_what_failed_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let m = Manager::start(&dir.path().join("data"));
    let out = Command::new(common::atelier_bin())
        .args([
            "--url",
            "http://127.0.0.1:1",
            "--token",
            "x",
            "sandbox",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach the Atelier manager") && err.contains("atelier serve"),
        "{err}"
    );

    let out = Command::new(common::atelier_bin())
        .args(["--url", &m.url, "--token", "wrong", "system"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("refused the API token"),
        "{}",
        text(&out.stderr)
    );

    let out = atelier(&m, &["sandbox", "show", "snotarealidx"]);
    assert!(text(&out.stderr).contains("not found"));

    let sys = ok(&atelier(&m, &["system"]));
    assert!(
        sys.contains("local") && sys.contains("NO isolation"),
        "{sys}"
    );
}
