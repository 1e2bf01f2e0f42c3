//! A task run by the real Gemini CLI (`@google/gemini-cli@0.61.0`, `gemini --acp`) through
//! the ACP runtime on the local driver, against a scripted Gemini API on 127.0.0.1. The
//! workspace's agent config is `{"runtime": "acp", "command": [gemini, "--acp"]}` with
//! the model's base URL as `GOOGLE_GEMINI_BASE_URL`, the key a workspace secret given as
//! `GEMINI_API_KEY`, and `HOME` a temporary directory whose `~/.gemini/settings.json`
//! selects API-key auth and turns telemetry, usage statistics and updates off. The model
//! says what it will do and runs a command (approved through the attention API), writes
//! a file and edits it (both approved there too) and finishes; the task reaches review
//! with the file in its diff, its commit in the preserved branch, and Gemini's token
//! count as its usage.
//!
//! The package is installed once with npm into `$HOME/.cache/atelier/gemini-cli-0.61.0`
//! (override with `ATELIER_GEMINI_CACHE`). When npm or the binary is unavailable the test
//! prints `skipped: <reason>` (and fails under `ATELIER_REQUIRE_REAL=1`).

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gemini_server::{self as gemini, GeminiServer, Reply};
use common::git::origin;
use common::{answer_until_review, npm, Manager};
use serde_json::{json, Value};

const SECRET: &str = "AIza-scripted-gemini-0123456789-secret";
const MODEL: &str = "gemini-2.5-flash";
const INSTRUCTIONS_MARKER: &str = "Sign every file with the word PERSIMMON.";
/// Not one of Gemini CLI's read-only commands (`echo` alone runs without asking).
const COMMAND: &str = "sh -c 'echo checked-42'";

/// The directory Gemini works in, as its session context states it.
fn workspace_dir(req: &Value) -> Option<String> {
    let text = gemini::conversation_text(req);
    let mut lines = text.lines();
    lines.find(|l| l.contains("Workspace Directories"))?;
    let dir = lines.next()?.trim().trim_start_matches("- ").trim();
    dir.starts_with('/').then(|| dir.to_owned())
}

/// The model's side: what it will do and a command that needs approval, a new file, an
/// edit of it, then the summary.
fn script(req: &Value) -> Reply {
    let file = format!(
        "{}/NOTES.md",
        workspace_dir(req).unwrap_or_else(|| ".".into())
    );
    match gemini::steps(req) {
        0 => Reply::call(
            "run_shell_command",
            json!({"command": COMMAND, "description": "Check the sums"}),
        )
        .after("I will check the sums first."),
        1 => Reply::call(
            "write_file",
            json!({"file_path": file, "content": "Good day.\n"}),
        ),
        2 => Reply::call(
            "replace",
            json!({"file_path": file, "instruction": "Make the greeting warmer.",
                   "old_string": "Good day.", "new_string": "Good day to you."}),
        ),
        _ => Reply::pieces(&["I wrote NOTES.md ", "and made the greeting warmer."]),
    }
}

fn gemini_workspace(bin: &Path, url: &str, model_url: &str, home: &Path) -> Value {
    json!({
        "name": "app",
        "repos": [{"url": url}],
        "secrets": {"env": [{"name": "MODEL_KEY", "value": SECRET}]},
        "agent_config": {
            "runtime": "acp",
            "command": [bin.to_str().unwrap(), "--acp"],
            "model": format!("google/{MODEL}"),
            "secrets": {"MODEL_KEY": "GEMINI_API_KEY"},
            "instructions": INSTRUCTIONS_MARKER,
            "env": {
                "HOME": home.to_str().unwrap(),
                "GOOGLE_GEMINI_BASE_URL": model_url
            }
        }
    })
}

/// Gemini CLI's user settings: API-key auth (no login prompt), and nothing that would
/// phone home.
fn write_settings(home: &Path) {
    let dir = home.join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    let settings = json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false}
    });
    std::fs::write(
        dir.join("settings.json"),
        serde_json::to_vec_pretty(&settings).unwrap(),
    )
    .unwrap();
}

/// An address from `/proc/net/{tcp,udp}[6]` (hex, in 32-bit host-order words).
fn proc_net_addr(hex: &str) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        16 => {
            let b: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The peers, outside loopback, of the sockets held by processes whose environment
/// holds `HOME=<home>` (this task's Gemini and what it runs), and whether any such
/// process was found.
fn outside_peers(home: &Path) -> (bool, Vec<String>) {
    let marker = format!("HOME={}", home.display());
    let mut found = false;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if !env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            continue;
        }
        found = true;
        let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|l| {
                let l = l.to_string_lossy().into_owned();
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect();
        if inodes.is_empty() {
            continue;
        }
        for table in ["tcp", "tcp6", "udp", "udp6"] {
            let text =
                std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 10 || !inodes.contains(f[9]) {
                    continue;
                }
                let Some((addr, port)) = f[2].split_once(':') else {
                    continue;
                };
                let Some(ip) = proc_net_addr(addr) else {
                    continue;
                };
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                    v4 => v4,
                };
                if !ip.is_loopback() && !ip.is_unspecified() {
                    let port = u16::from_str_radix(port, 16).unwrap_or(0);
                    out.push(format!("{table} {ip}:{port} (pid {pid})"));
                }
            }
        }
    }
    (found, out)
}

/// Samples [`outside_peers`] until dropped.
struct PeerWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicUsize>,
    outside: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeerWatch {
    fn start(home: &Path) -> PeerWatch {
        let home = home.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let outside = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, n, o) = (stop.clone(), seen.clone(), outside.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let (found, peers) = outside_peers(&home);
                if found {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                o.lock().unwrap().extend(peers);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        PeerWatch {
            stop,
            seen,
            outside,
            thread: Some(thread),
        }
    }

    /// How many samples saw Gemini, and every outside peer they saw.
    fn finish(mut self) -> (usize, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.seen.load(Ordering::Relaxed),
            self.outside.lock().unwrap().clone(),
        )
    }
}

impl Drop for PeerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// All the text the agent said, from the task's events.
fn said(timeline: &Value) -> String {
    let mut out = String::new();
    for e in timeline.as_array().into_iter().flatten() {
        let ev = &e["event"];
        if ev["type"] == "text" {
            // A part arrives as deltas, then once whole.
            if let Some(t) = ev["text"].as_str() {
                out.push_str(t);
                out.push('\n');
            }
        }
    }
    out
}

#[tokio::test]
async fn a_real_gemini_task_over_acp_asks_edits_and_reaches_review() {
    let bin = match npm::GEMINI.binary() {
        Ok(b) => b,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return;
        }
    };
    let model = match GeminiServer::start(script).await {
        Ok(m) => m,
        Err(reason) => {
            atelier_testkit::skip(reason);
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let url = origin(dir.path());
    let home = dir.path().join("gemini-home");
    write_settings(&home);
    let m = Manager::start(&dir.path().join("data"));
    let api = m.client();
    let w = api
        .post(
            "/workspaces",
            gemini_workspace(&bin, &url, &model.url, &home),
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.body);
    let watch = PeerWatch::start(&home);
    let started = Instant::now();
    let t = api
        .post(
            "/tasks",
            json!({"prompt": "Write a greeting into NOTES.md", "workspace": "app", "dispatch": true}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.body["id"].as_str().unwrap().to_owned();
    let branch = t.body["branch"].as_str().unwrap().to_owned();

    let (task, asks) = match answer_until_review(&api, &id, "yes", Duration::from_secs(300)).await {
        Ok(done) => done,
        Err(e) => panic!(
            "{e}\nevents: {}\nmodel requests: {:#?}\nlog:\n{}",
            api.get(&format!("/tasks/{id}/events")).await.body,
            model
                .requests()
                .iter()
                .map(|r| (&r.path, gemini::steps(&r.body)))
                .collect::<Vec<_>>(),
            m.log()
        ),
    };
    let (samples, outside) = watch.finish();
    eprintln!("the task reached review in {:?}", started.elapsed());

    // Three permissions, in order: the command, the new file, the edit.
    assert_eq!(asks.len(), 3, "{asks:#?}");
    assert!(asks.iter().all(|a| a["kind"] == "permission"), "{asks:#?}");
    assert!(
        asks[0].to_string().contains(COMMAND),
        "the first ask names the command: {}",
        asks[0]
    );
    for ask in &asks[1..] {
        assert!(
            ask.to_string().contains("NOTES.md"),
            "the edit asks name the file: {ask}"
        );
    }

    // The file is the task's change, in its diff, with the edit applied.
    assert_eq!(task["changes"][0]["path"], "NOTES.md", "{task}");
    assert!(
        task["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("made the greeting warmer"),
        "{task}"
    );
    let diff = api.diff(&id).await;
    assert!(diff.contains("+Good day to you."), "{diff}");

    // The timeline: the agent's words, each ask answered, the tools that ran.
    let timeline = api.get(&format!("/tasks/{id}/events")).await.body;
    let text = said(&timeline);
    assert!(
        text.contains("I will check the sums first."),
        "the agent's text is in the events: {text:?}"
    );
    let events: &Vec<Value> = timeline.as_array().unwrap();
    let resolved = events
        .iter()
        .filter(|e| e["event"]["type"] == "interaction_resolved")
        .count();
    assert_eq!(resolved, 3, "every ask was answered: {timeline}");
    let tools: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["event"]["type"] == "tool_call" && e["event"]["status"] == "completed")
        .map(|e| {
            (
                e["event"]["name"].as_str().unwrap_or_default().to_owned(),
                e["event"]["output"].to_string(),
            )
        })
        .collect();
    // (Gemini CLI sends no output for its shell tool over ACP: the model gets it, below.)
    assert!(
        tools.iter().any(|(name, _)| name == "bash"),
        "the approved command ran: {tools:?}"
    );
    assert!(
        tools.iter().filter(|(name, _)| name == "edit").count() >= 2,
        "the write and the edit completed: {tools:?}"
    );

    // What the model saw: the key on every call, the workspace's model, the instructions
    // leading the prompt, the command's output after the approval.
    let requests = model.requests();
    let working = model.working();
    assert!(working.len() >= 4, "{} working requests", working.len());
    assert!(
        requests
            .iter()
            .all(|r| r.header("x-goog-api-key") == Some(SECRET)),
        "every model call carries the workspace secret as the key: {:?}",
        requests
            .iter()
            .map(|r| (&r.path, r.header("x-goog-api-key")))
            .collect::<Vec<_>>()
    );
    assert!(
        working.iter().all(|r| r.model() == Some(MODEL)),
        "the workspace's model reaches Gemini: {:?}",
        working.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(
        gemini::conversation_text(&working[0].body).contains(INSTRUCTIONS_MARKER),
        "the workspace's instructions lead the prompt"
    );
    let ran = gemini::function_responses(&working[1].body)
        .first()
        .map(|r| r["response"].to_string())
        .unwrap_or_default();
    assert!(ran.contains("checked-42"), "the command's output: {ran}");

    // Gemini's token count is the task's usage: every working call, in one prompt.
    let input = task["usage"]["input_tokens"].as_u64().unwrap_or(0);
    assert!(
        input >= gemini::INPUT_TOKENS * working.len() as u64,
        "usage {} for {} calls: {task}",
        task["usage"],
        working.len()
    );
    assert!(
        task["usage"]["output_tokens"].as_u64().unwrap_or(0)
            >= gemini::OUTPUT_TOKENS * working.len() as u64,
        "{task}"
    );

    // Nothing went anywhere but the scripted model: every call it got is a Gemini API
    // call, and no socket of Gemini's (sampled while it ran) had a peer off loopback.
    assert!(
        requests
            .iter()
            .all(|r| r.method == "POST" && r.path.starts_with("/v1beta/models/")),
        "{:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(samples > 0, "Gemini's processes were never seen");
    assert!(
        outside.is_empty(),
        "Gemini reached outside loopback: {outside:?}"
    );

    common::secret_kept_out_and_done(&m, &api, &id, &task, &timeline, SECRET, &branch).await;
}
