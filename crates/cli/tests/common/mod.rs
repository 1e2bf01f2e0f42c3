//! Starts real `atelier serve` processes on ephemeral ports with temporary data dirs.
#![allow(dead_code)]

pub mod anthropic_server;
pub mod gemini_server;
pub mod git;
pub mod loopback;
pub mod model_server;
pub mod npm;
pub mod responses_server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub fn atelier_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_atelier"))
}

/// Makes sure `atelier-agent` sits next to `atelier` (it is another package's binary,
/// which `cargo test -p atelier-cli` alone would not build).
pub fn ensure_agent_built() -> PathBuf {
    static BUILD: Once = Once::new();
    let agent = atelier_bin().with_file_name("atelier-agent");
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Same profile as the binary under test (tests: debug, benchmarks: release).
        let release = atelier_bin()
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "release");
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "atelier-agent",
                "--bin",
                "atelier-agent",
            ])
            .args(release.then_some("--release"))
            .status()
            .expect("run cargo to build atelier-agent");
        assert!(status.success(), "building atelier-agent failed");
    });
    assert!(
        agent.is_file(),
        "atelier-agent missing at {}",
        agent.display()
    );
    agent
}

/// Makes sure the scripted `fake-agent` (a fake `opencode serve`) sits next to `atelier`.
pub fn ensure_fake_agent_built() -> PathBuf {
    atelier_testkit::workspace_binary("atelier-fake-agent", "fake-agent")
}

pub struct Manager {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub data_dir: PathBuf,
    pub stdout_lines: Vec<String>,
    stderr_path: PathBuf,
}

impl Manager {
    pub fn start(data_dir: &Path) -> Manager {
        Self::start_with(data_dir, &[])
    }

    pub fn start_with(data_dir: &Path, extra_args: &[&str]) -> Manager {
        Self::start_with_env(data_dir, extra_args, &[])
    }

    /// Like [`Manager::start_with`], with extra environment variables for the manager.
    pub fn start_with_env(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Manager {
        ensure_agent_built();
        std::fs::create_dir_all(data_dir).unwrap();
        let stderr_path = data_dir.with_extension("stderr.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .unwrap();
        let mut child = Command::new(atelier_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            // Tests of everything above the hypervisor use the fast local driver.
            .args(if extra_args.contains(&"--driver") {
                &[][..]
            } else {
                &["--driver", "local"][..]
            })
            .args(extra_args)
            .env_remove("ATELIER_TOKEN")
            .env_remove("ATELIER_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn atelier serve");
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut lines = vec![];
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("atelier serve exited before listening:\n{log}");
            }
            lines.push(line.trim_end().to_owned());
            if let Some(rest) = line.trim().strip_prefix("Atelier is listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stdout so the manager never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Manager {
            child,
            url,
            token,
            data_dir: data_dir.to_owned(),
            stdout_lines: lines,
            stderr_path,
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    pub fn client(&self) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", self.url),
            token: self.token.clone(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "manager did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Sandboxes outlive managers by design; tests must not leave them behind.
        kill_processes_under(&self.data_dir);
    }
}

/// Pids of processes whose command line mentions `dir`.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true);
        if !zombie && String::from_utf8_lossy(&cmd).contains(&needle) && pid != std::process::id() {
            out.push(pid);
        }
    }
    out
}

/// Kills what [`processes_under`] finds, and every process working in `dir` (a local
/// sandbox's services, orphaned when its agent was killed).
pub fn kill_processes_under(dir: &Path) {
    let working_in: Vec<u32> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/cwd"))
                        .is_ok_and(|cwd| cwd.starts_with(dir))
                })
                .filter(|pid| *pid != std::process::id())
                .collect()
        })
        .unwrap_or_default();
    for pid in processes_under(dir).into_iter().chain(working_in) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Polls `f` until it returns Some, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Api {
    /// Waits for task `id` to reach review (failing at once if it fails); returns it.
    pub async fn review(&self, id: &str, within: Duration) -> serde_json::Value {
        eventually(within, "the task to reach review", || async {
            let t = self.get(&format!("/tasks/{id}")).await.body;
            assert_ne!(t["status"], "failed", "{t}");
            (t["status"] == "review").then_some(t)
        })
        .await
    }

    /// Waits for the first ask of task `id` in the attention feed (failing at once if
    /// the task fails); returns it.
    pub async fn first_ask(&self, id: &str, within: Duration) -> serde_json::Value {
        eventually(within, "the question", || async {
            let t = self.get(&format!("/tasks/{id}")).await.body;
            assert_ne!(t["status"], "failed", "{t}");
            let feed = self.get("/attention").await.body;
            feed.as_array()
                .and_then(|f| f.iter().find(|x| x["task_id"] == id).cloned())
        })
        .await
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub async fn send(&self, b: reqwest::RequestBuilder) -> Reply {
        let r = b.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Reply {
            status,
            body,
            headers,
        }
    }

    /// A task's diff, as the unified text `GET /tasks/{id}/diff` serves.
    pub async fn diff(&self, task: &str) -> String {
        self.req(reqwest::Method::GET, &format!("/tasks/{task}/diff"))
            .send()
            .await
            .expect("the diff")
            .text()
            .await
            .expect("the diff's text")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Reply {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
            .await
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> Reply {
        self.send(self.req(reqwest::Method::PATCH, path).json(&body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.req(reqwest::Method::DELETE, path)).await
    }

    /// Creates a sandbox and waits for it to run.
    pub async fn running_sandbox(&self, name: &str) -> String {
        let r = self
            .post("/sandboxes?wait=true", serde_json::json!({ "name": name }))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["state"], "running", "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn exec(&self, id: &str, command: &str, args: &[&str]) -> Reply {
        self.post(
            &format!("/sandboxes/{id}/exec"),
            serde_json::json!({ "command": command, "args": args }),
        )
        .await
    }
}

/// Reads Server-Sent Events from a response until `n` events arrived or `within` passed.
pub async fn read_sse(
    response: reqwest::Response,
    n: usize,
    within: Duration,
) -> Vec<(Option<String>, String, String)> {
    use futures::StreamExt;
    let mut stream = response.bytes_stream();
    let mut buf = String::new();
    let mut events = vec![];
    let deadline = tokio::time::Instant::now() + within;
    while events.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let Ok(Some(Ok(chunk))) = next else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((id, event, data));
            }
        }
    }
    events
}

/// Drives task `id` to review, answering what it asks on the way: every permission once,
/// every question with `answer` (one label). Returns the task in review and every ask,
/// as the attention feed showed it, in the order they came.
pub async fn answer_until_review(
    api: &Api,
    id: &str,
    answer: &str,
    within: Duration,
) -> Result<(serde_json::Value, Vec<serde_json::Value>), String> {
    let deadline = Instant::now() + within;
    let mut asks: Vec<serde_json::Value> = Vec::new();
    loop {
        let task = api.get(&format!("/tasks/{id}")).await.body;
        match task["status"].as_str() {
            Some("review") => return Ok((task, asks)),
            Some("failed") => return Err(format!("the task failed: {task}")),
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!("the task did not reach review: {task}"));
        }
        let feed = api.get("/attention").await.body;
        let open: Vec<serde_json::Value> = feed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["task_id"] == id)
            .cloned()
            .collect();
        for ask in open {
            if asks.iter().any(|a| a["id"] == ask["id"]) {
                continue;
            }
            let body = match ask["kind"].as_str() {
                Some("question") => serde_json::json!({"kind": "question", "answers": [[answer]]}),
                _ => serde_json::json!({"kind": "permission", "reply": "once"}),
            };
            let ask_id = ask["id"].as_str().unwrap_or_default().to_owned();
            let r = api
                .post(&format!("/attention/{id}/{ask_id}/answer"), body)
                .await;
            if r.status != 204 {
                return Err(format!("answering {ask} got {}: {}", r.status, r.body));
            }
            asks.push(ask);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The contents of `path` on `branch` in the (one) host-side mirror of the manager whose
/// data directory is `data_dir`.
/// The end of a real coding agent's task: `secret` is in neither the task, its events
/// (`timeline`) nor the manager's log; marked done, its NOTES.md stays in the kept branch.
pub async fn secret_kept_out_and_done(
    m: &Manager,
    api: &Api,
    id: &str,
    task: &serde_json::Value,
    timeline: &serde_json::Value,
    secret: &str,
    branch: &str,
) {
    for (what, text) in [
        ("the task", task.to_string()),
        ("its events", timeline.to_string()),
        ("the manager's log", m.log()),
    ] {
        assert!(!text.contains(secret), "{what} shows the secret");
    }
    let r = api
        .post(&format!("/tasks/{id}/done"), serde_json::json!({}))
        .await;
    assert_eq!(r.body["status"], "done", "{}", r.body);
    assert_eq!(
        mirrored_file(&m.data_dir, branch, "NOTES.md"),
        "Good day to you.\n"
    );
}

pub fn mirrored_file(data_dir: &Path, branch: &str, path: &str) -> String {
    let mirror = std::fs::read_dir(data_dir.join("mirrors"))
        .expect("the mirrors")
        .flatten()
        .next()
        .expect("a mirror")
        .path();
    git::git(
        &mirror,
        &[
            "--git-dir",
            mirror.to_str().unwrap(),
            "show",
            &format!("{branch}:{path}"),
        ],
    )
}
