//! The MCP servers of a workspace as the real Codex (`@openai/codex@0.169.0`) reads them
//! from the profile's `-c` overrides: `codex mcp list --json` shows each with the
//! transport, headers and timeout the profile meant, and the shell a local server with
//! `{env:…}` references runs under expands exactly those.
//!
//! The package is installed once with npm into `$HOME/.cache/atelier/codex-0.169.0`
//! (override with `ATELIER_CODEX_CACHE`); without npm or the binary the test prints
//! `skipped: <reason>`.

#[path = "../../cli/tests/common/npm.rs"]
#[allow(dead_code)]
mod npm;

use atelier_core::agent_config::AgentConfig;
use atelier_runtimes::codex::profile::overrides;
use serde_json::{json, Value};

#[test]
fn the_real_codex_reads_the_mcp_servers_the_profile_gives_it() {
    let bin = match npm::CODEX.binary() {
        Ok(b) => b,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return;
        }
    };
    let config = AgentConfig::from_value(&json!({
        "runtime": "codex",
        "mcp": {
            "echo": {"type": "local", "command": ["printf", "%s|", "{env:HOME}/x y", "$literal"],
                     "environment": {"MODE": "ro"}, "timeout_ms": 2500},
            "token": {"type": "local", "command": ["printenv", "TOKEN"],
                      "environment": {"TOKEN": "t-{env:FS_TOKEN}"}},
            "docs": {"type": "remote", "url": "https://mcp.example.com/mcp",
                     "headers": {"Authorization": "Bearer {env:DOCS_TOKEN}", "X-Team": "core",
                                 "X-Key": "{env:DOCS_KEY}"}}
        }
    }))
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".codex")).unwrap();
    let mut cmd = std::process::Command::new(&bin);
    for (key, value) in overrides(&config).unwrap() {
        cmd.args(["-c", &format!("{key}={value}")]);
    }
    let out = cmd
        .args(["mcp", "list", "--json"])
        .env("HOME", home.path())
        .env("CODEX_HOME", home.path().join(".codex"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "codex refused the overrides: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    let server = |name: &str| {
        listed
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {listed:?}"))
            .clone()
    };

    let docs = server("docs");
    assert_eq!(docs["transport"]["type"], "streamable_http");
    assert_eq!(docs["transport"]["url"], "https://mcp.example.com/mcp");
    assert_eq!(docs["transport"]["bearer_token_env_var"], "DOCS_TOKEN");
    assert_eq!(docs["transport"]["http_headers"], json!({"X-Team": "core"}));
    assert_eq!(
        docs["transport"]["env_http_headers"],
        json!({"X-Key": "DOCS_KEY"})
    );

    let echo = server("echo");
    assert_eq!(echo["transport"]["type"], "stdio");
    assert_eq!(echo["transport"]["command"], "sh");
    assert_eq!(echo["transport"]["env"], json!({"MODE": "ro"}));
    assert_eq!(echo["startup_timeout_sec"], 2.5);
    // Run the way Codex runs them: the references expand, nothing else does.
    let run = |name: &str| {
        let args: Vec<String> = server(name)["transport"]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let out = std::process::Command::new("sh")
            .args(&args)
            .env("HOME", "/h")
            .env("FS_TOKEN", "tok")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run("echo"), "/h/x y|$literal|");
    assert_eq!(run("token"), "t-tok\n");
    assert!(
        server("token")["transport"]["env"].is_null()
            || server("token")["transport"]["env"] == json!({})
    );
}
