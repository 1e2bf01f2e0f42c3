//! Conformance matrix: every shipped scenario against every adapter.
//!
//! - `opencode`: the OpenCode adapter against `fake-agent` serving the OpenCode protocol;
//! - `claude`: the Claude Code adapter against `atelier-stdio-host -- fake-agent
//!   --protocol claude`;
//! - `acp`: the ACP adapter against `atelier-stdio-host -- fake-agent --protocol acp`;
//! - `codex`: the Codex adapter against `atelier-stdio-host -- fake-agent --protocol
//!   codex`;
//!
//! the stdio fakes run under the host exactly as `claude`, `gemini --acp` or `codex
//! app-server` would. Each
//! test asserts on the normalized events. Where a protocol cannot express something, the
//! test asserts the documented fallback (see the `claude`, `acp` and `codex` module docs).

mod support;
use support::*;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atelier_runtimes::stdio_host::{HostClient, RecordBody};
use atelier_runtimes::{
    progress_percent, runtime_for, AgentEvent, AgentRuntime, Answer, EventStream, Interaction,
    InteractionKind, InteractionOutcome, ModelRef, PermissionReply, ReconnectPolicy, RunState,
    RuntimeError, RuntimeOptions, Session, SessionSpec, StdioConfig, ToolStatus, TurnEndReason,
};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OpenCode,
    Claude,
    Acp,
    Codex,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::OpenCode => "opencode",
            Kind::Claude => "claude",
            Kind::Acp => "acp",
            Kind::Codex => "codex",
        }
    }

    fn stdio(self) -> bool {
        self != Kind::OpenCode
    }
}

/// A running fake agent (for stdio kinds: the host running it); killed on drop.
struct Agent {
    kind: Kind,
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    _state: tempfile::TempDir,
}

impl Agent {
    fn spawn(kind: Kind, scenario: &Path) -> Agent {
        Agent::spawn_with(kind, scenario, &[])
    }

    /// `extra` goes to `fake-agent`.
    fn spawn_with(kind: Kind, scenario: &Path, extra: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = tempfile::tempdir().expect("tempdir");
        let fake = atelier_testkit::workspace_binary("atelier-fake-agent", "fake-agent");
        let mut cmd = if kind.stdio() {
            let mut c = Command::new(atelier_testkit::workspace_binary(
                "atelier-stdio-host",
                "atelier-stdio-host",
            ));
            c.args(["--port", "0", "--heartbeat-ms", "200", "--transcript"])
                .arg(state.path().join("transcript.jsonl"))
                .arg("--")
                .arg(fake)
                .args(["--protocol", kind.name(), "--scenario"])
                .arg(scenario)
                .arg("--directory")
                .arg(dir.path())
                .args(extra);
            c
        } else {
            let mut c = Command::new(fake);
            c.arg("--scenario")
                .arg(scenario)
                .args(["--port", "0", "--directory"])
                .arg(dir.path())
                .args(extra)
                .env_remove("OPENCODE_SERVER_PASSWORD");
            c
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the fake agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the fake agent did not print its address");
        let prefix = if kind.stdio() {
            atelier_runtimes::stdio_host::LISTENING_PREFIX
        } else {
            atelier_runtimes::opencode::LISTENING_PREFIX
        };
        let url = line
            .trim()
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Agent {
            kind,
            child,
            url,
            dir,
            _state: state,
        }
    }

    fn named(kind: Kind, name: &str) -> Agent {
        Agent::spawn(kind, &scenario_path(name))
    }

    fn runtime_with(&self, reconnect: ReconnectPolicy) -> Box<dyn AgentRuntime> {
        let opts = RuntimeOptions {
            secret: None,
            reconnect: Some(reconnect),
        };
        runtime_for(self.kind.name(), &self.url, &opts).expect("runtime")
    }

    fn runtime(&self) -> Box<dyn AgentRuntime> {
        self.runtime_with(fast_reconnect())
    }

    fn spec(&self) -> SessionSpec {
        SessionSpec {
            directory: self.dir.path().to_path_buf(),
            ..SessionSpec::default()
        }
    }

    fn host(&self) -> HostClient {
        HostClient::new(StdioConfig::new(&self.url)).expect("host client")
    }

    /// Event connections opened so far (the fake's stats, or the host's status).
    async fn connections(&self) -> u64 {
        if self.kind.stdio() {
            self.host()
                .status()
                .await
                .expect("status")
                .subscribers_total
        } else {
            self.fake_json("/__fake/stats").await["event_connections"]
                .as_u64()
                .unwrap_or(0)
        }
    }

    async fn fake_json(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("GET")
            .json()
            .await
            .expect("json")
    }

    /// Prompts the agent received.
    async fn prompts(&self) -> usize {
        if self.kind.stdio() {
            self.host()
                .transcript(0)
                .await
                .expect("transcript")
                .iter()
                .filter(|r| match &r.body {
                    RecordBody::In { line, .. } => {
                        line.contains("\"session/prompt\"")
                            || line.contains("\"type\":\"user\"")
                            || line.contains("\"turn/start\"")
                    }
                    _ => false,
                })
                .count()
        } else {
            self.fake_json("/__fake/stats").await["prompts"]
                .as_u64()
                .unwrap_or(0) as usize
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        max_attempts: 5,
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(30),
    }
}

/// Collects events until the turn ends, acting on interactions with `on_ask`.
async fn run_turn(
    rt: &dyn AgentRuntime,
    session: &Session,
    stream: &mut EventStream,
    mut on_ask: impl FnMut(&Interaction) -> Act,
) -> Vec<AgentEvent> {
    let mut out = Vec::new();
    loop {
        let (_, ev) = match next(stream).await {
            Some(Ok(e)) => e,
            Some(Err(e)) => panic!("stream error: {e}; so far: {out:#?}"),
            None => panic!("stream ended; so far: {out:#?}"),
        };
        if std::env::var("RT_TRACE").is_ok() {
            eprintln!(
                "TRACE {} {}",
                rt.kind(),
                serde_json::to_string(&ev).unwrap_or_default()
            );
        }
        out.push(ev.clone());
        match ev {
            AgentEvent::InteractionAsked(i) => match on_ask(&i) {
                Act::Answer(a) => rt.answer(session, &i.id, a).await.expect("answer"),
                Act::Abort => rt.abort(session).await.expect("abort"),
                Act::Nothing => {}
            },
            AgentEvent::TurnEnded { .. } => return out,
            _ => {}
        }
    }
}

async fn start(agent: &Agent) -> (Box<dyn AgentRuntime>, Session, EventStream) {
    let rt = agent.runtime();
    rt.wait_ready(Duration::from_secs(10)).await.expect("ready");
    let session = rt.start_session(&agent.spec()).await.expect("session");
    let stream = rt.events(&session, None).await.expect("events");
    (rt, session, stream)
}

async fn one_turn(
    agent: &Agent,
    on_ask: impl FnMut(&Interaction) -> Act,
) -> (Box<dyn AgentRuntime>, Session, EventStream, Vec<AgentEvent>) {
    let (rt, session, mut stream) = start(agent).await;
    rt.prompt(&session, "go").await.expect("prompt");
    let events = run_turn(rt.as_ref(), &session, &mut stream, on_ask).await;
    (rt, session, stream, events)
}

fn tool_calls(events: &[AgentEvent], tool: &str, status: ToolStatus) -> HashSet<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCall {
                id,
                name,
                status: s,
                ..
            } if name == tool && *s == status => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Events as JSON text with the agent's directory replaced by `<dir>`.
fn portable(events: &[AgentEvent], dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy();
    events
        .iter()
        .map(|e| {
            serde_json::to_string(e)
                .expect("json")
                .replace(d.as_ref(), "<dir>")
        })
        .collect()
}

/// `FilesTouched` as a set union (a resumed OpenCode stream may report a path again).
fn dedupe_files(events: Vec<AgentEvent>) -> Vec<AgentEvent> {
    let mut seen = HashSet::new();
    events
        .into_iter()
        .filter_map(|e| match e {
            AgentEvent::FilesTouched { paths } => {
                let paths: Vec<String> = paths
                    .into_iter()
                    .filter(|p| seen.insert(p.clone()))
                    .collect();
                (!paths.is_empty()).then_some(AgentEvent::FilesTouched { paths })
            }
            other => Some(other),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The scenarios.
// ---------------------------------------------------------------------------------------

async fn happy_path(kind: Kind) {
    let agent = Agent::named(kind, "happy_path");
    let (_rt, _s, _st, events) = one_turn(&agent, |_| Act::Nothing).await;
    assert_no_raw(&events);
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { delta: Some(d), .. } => Some(d.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "Added src/greet.rs and its test passes.");
    assert_eq!(
        texts(&events),
        vec!["Added src/greet.rs and its test passes."]
    );
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::Reasoning { text: Some(t), .. } if t.contains("greeting"))
    ));
    assert!(events.iter().any(|e| matches!(e, AgentEvent::ToolCall { name, status: ToolStatus::Completed, output: Some(o), .. } if name == "bash" && o == "1 passed")));
    assert_eq!(files(&events), vec!["src/greet.rs".to_string()]);
    assert!(agent.dir.path().join("src/greet.rs").is_file());
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::Usage(u) if u.input_tokens == 2000 && u.output_tokens == 400)
    ));
    assert_eq!(
        events.first(),
        Some(&AgentEvent::Status {
            state: RunState::Running,
            message: None
        })
    );
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
}

async fn permission_once(kind: Kind) {
    let agent = Agent::named(kind, "permission_once");
    let (rt, session, _st, events) = one_turn(&agent, allow_once).await;
    assert_no_raw(&events);
    let asks = asked(&events);
    assert_eq!(asks.len(), 1, "{events:#?}");
    assert_eq!(asks[0].title, "Edit src/lib.rs");
    match &asks[0].kind {
        InteractionKind::Permission { tool, patterns, .. } => {
            assert_eq!(tool, "edit");
            assert_eq!(patterns, &vec!["src/lib.rs".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(asks[0].call_id.is_some());
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Once)]
    );
    assert_eq!(files(&events), vec!["src/lib.rs".to_string()]);
    assert_eq!(
        texts(&events),
        vec!["I will update the library.", "Done editing."]
    );
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
    let written = std::fs::read_to_string(agent.dir.path().join("src/lib.rs")).expect("file");
    assert!(written.contains("42"));
    assert!(rt.pending(&session).await.expect("pending").is_empty());
}

async fn permission_always(kind: Kind) {
    let agent = Agent::named(kind, "permission_always");
    let (_rt, _s, _st, events) = one_turn(&agent, |_| {
        Act::Answer(Answer::Permission {
            reply: PermissionReply::Always,
            message: None,
        })
    })
    .await;
    let asks = asked(&events);
    assert_eq!(
        asks.len(),
        1,
        "the second ask is approved by the first: {events:#?}"
    );
    match &asks[0].kind {
        InteractionKind::Permission { tool, always, .. } => {
            assert_eq!(tool, "bash");
            assert_eq!(always, &vec!["cargo test".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Always)]
    );
    assert_eq!(tool_calls(&events, "bash", ToolStatus::Completed).len(), 2);
    assert_eq!(texts(&events), vec!["Tests pass twice."]);
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
}

async fn permission_denied_with_message(kind: Kind) {
    let agent = Agent::named(kind, "permission_deny");
    let (_rt, _s, _st, events) = one_turn(&agent, |_| {
        Act::Answer(Answer::Permission {
            reply: PermissionReply::Reject,
            message: Some("keep the build directory".into()),
        })
    })
    .await;
    let asks = asked(&events);
    assert_eq!(asks[0].title, "Run rm -rf build");
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Rejected)]
    );
    // ACP cannot deliver the message, but a rejection with one lets the agent go on.
    assert_eq!(
        texts(&events),
        vec![
            "I want to clean the build directory.",
            "Understood, I will keep the build directory."
        ]
    );
    if kind != Kind::OpenCode {
        // The guarded call fails: the command never ran.
        assert_eq!(tool_calls(&events, "bash", ToolStatus::Failed).len(), 1);
    }
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
}

async fn permission_denied_without_message(kind: Kind) {
    let agent = Agent::named(kind, "permission_deny");
    let (rt, session, _st, events) = one_turn(&agent, |_| {
        Act::Answer(Answer::Permission {
            reply: PermissionReply::Reject,
            message: None,
        })
    })
    .await;
    let asks = asked(&events);
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Rejected)]
    );
    // The turn halts (Claude: deny with interrupt; ACP: reject, then session/cancel) and
    // counts as completed, as OpenCode's halted turns do.
    assert_eq!(texts(&events), vec!["I want to clean the build directory."]);
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
    assert!(rt.pending(&session).await.expect("pending").is_empty());
}

async fn question_answered(kind: Kind) {
    let agent = Agent::named(kind, "question_answered");
    let (rt, session, mut stream) = start(&agent).await;
    rt.prompt(&session, "go").await.expect("prompt");
    let mut events = Vec::new();
    let ask = loop {
        let (_, ev) = next(&mut stream).await.expect("event").expect("ok");
        events.push(ev.clone());
        if let AgentEvent::InteractionAsked(i) = ev {
            break i;
        }
    };
    assert_eq!(ask.title, "Which database should I use?");
    let InteractionKind::Question { questions } = &ask.kind else {
        panic!("{ask:?}")
    };
    assert_eq!(questions.len(), 2);
    let labels: Vec<&str> = questions[0]
        .options
        .iter()
        .map(|o| o.label.as_str())
        .collect();
    assert_eq!(labels, vec!["Postgres", "SQLite"]);
    assert_eq!(questions[0].header.as_deref(), Some("Database"));
    assert_eq!(
        questions[0].options[1].description.as_deref(),
        Some("Zero setup")
    );
    if kind == Kind::Codex {
        // Codex questions have no multiple choice (an answer may still hold several).
        assert!(!questions[0].multiple && !questions[1].multiple);
    } else {
        assert!(!questions[0].multiple && questions[1].multiple);
    }
    assert!(questions.iter().all(|q| !q.secret));
    match kind {
        // OpenCode keeps `custom` as asked.
        Kind::OpenCode => assert!(questions[0].custom && !questions[1].custom),
        // Claude always offers free text ("Other").
        Kind::Claude => assert!(questions[0].custom && questions[1].custom),
        // An ACP form field is a choice or free text, never both; Codex says which
        // (`isOther`). Free text for a choice only is refused.
        Kind::Acp | Kind::Codex => {
            if kind == Kind::Acp {
                assert!(!questions[0].custom && !questions[1].custom);
            } else {
                assert!(questions[0].custom && !questions[1].custom);
            }
            let free = rt
                .answer(
                    &session,
                    &ask.id,
                    Answer::Question {
                        // ACP: the first question is a choice only; Codex: the second.
                        answers: vec![vec!["MySQL".into()], vec!["crypto".into()]],
                    },
                )
                .await;
            assert!(
                matches!(&free, Err(RuntimeError::Protocol(m)) if m.contains("free text")),
                "{free:?}"
            );
        }
    }
    assert_eq!(rt.pending(&session).await.expect("pending").len(), 1);
    let answers = vec![
        vec!["SQLite".to_string()],
        vec!["auth".into(), "search".into()],
    ];
    rt.answer(
        &session,
        &ask.id,
        Answer::Question {
            answers: answers.clone(),
        },
    )
    .await
    .expect("answer");
    events.extend(run_turn(rt.as_ref(), &session, &mut stream, |_| Act::Nothing).await);
    assert_eq!(
        resolved(&events),
        vec![(ask.id.clone(), InteractionOutcome::Answered { answers })]
    );
    let output = events.iter().find_map(|e| match e {
        AgentEvent::ToolCall {
            name,
            status: ToolStatus::Completed,
            output,
            ..
        } if name == "question" => output.clone(),
        _ => None,
    });
    match kind {
        // ACP questions are elicitations and Codex's server requests, not tool calls.
        Kind::Acp | Kind::Codex => assert_eq!(output, None),
        _ => {
            let output = output.expect("completed question tool");
            assert!(
                output.contains("SQLite") && output.contains("auth, search"),
                "{output}"
            );
        }
    }
    assert_eq!(texts(&events), vec!["Going with your choice."]);
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
}

async fn question_dismissed(kind: Kind) {
    let agent = Agent::named(kind, "question_answered");
    let (rt, session, _st, events) = one_turn(&agent, |_| Act::Answer(Answer::Dismiss)).await;
    let asks = asked(&events);
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Dismissed)]
    );
    assert!(texts(&events).is_empty(), "{events:#?}");
    let failed = tool_calls(&events, "question", ToolStatus::Failed).len();
    let as_tool = !matches!(kind, Kind::Acp | Kind::Codex);
    assert_eq!(failed, usize::from(as_tool), "{events:#?}");
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
    assert!(rt.pending(&session).await.expect("pending").is_empty());
}

async fn abort_while_pending(kind: Kind) {
    let agent = Agent::named(kind, "abort_pending");
    let (rt, session, mut stream, events) = one_turn(&agent, |_| Act::Abort).await;
    let asks = asked(&events);
    assert_eq!(asks.len(), 1);
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Cancelled)]
    );
    assert_eq!(turn_end(&events), (TurnEndReason::Cancelled, None));
    assert_eq!(texts(&events), vec!["Before the ask."]);
    assert!(rt.pending(&session).await.expect("pending").is_empty());
    rt.prompt(&session, "again").await.expect("prompt");
    let events = run_turn(rt.as_ref(), &session, &mut stream, |_| Act::Nothing).await;
    assert_eq!(texts(&events), vec!["Second turn after the abort."]);
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
}

async fn crash(kind: Kind) {
    let agent = Agent::named(kind, "crash");
    let (rt, session, mut stream) = start(&agent).await;
    rt.prompt(&session, "go").await.expect("prompt");
    let started = std::time::Instant::now();
    let mut events = Vec::new();
    let mut terminal = None;
    while let Some(item) = next(&mut stream).await {
        match item {
            Ok((_, ev)) => events.push(ev),
            Err(e) => terminal = Some(e),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        matches!(terminal, Some(RuntimeError::Disconnected(_))),
        "{terminal:?}"
    );
    assert_eq!(texts(&events), vec!["About to crash."]);
    let (reason, error) = turn_end(&events);
    assert_eq!(reason, TurnEndReason::Error);
    let error = error.unwrap_or_default();
    if kind.stdio() {
        // The host outlives the agent and says how it ended.
        assert!(error.contains("exited with code 70"), "{error}");
        assert!(matches!(
            rt.abort(&session).await,
            Err(RuntimeError::Disconnected(_))
        ));
        assert!(matches!(
            rt.prompt(&session, "again").await,
            Err(RuntimeError::Disconnected(_))
        ));
    } else {
        assert!(error.contains("lost the connection"), "{error}");
        assert!(matches!(
            rt.abort(&session).await,
            Err(RuntimeError::Transport(_))
        ));
    }
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::Status {
            state: RunState::Error,
            ..
        }
    )));
}

async fn fail(kind: Kind) {
    let agent = Agent::named(kind, "fail");
    let (rt, session, mut stream, events) = one_turn(&agent, |_| Act::Nothing).await;
    let expected = match kind {
        Kind::OpenCode => "UnknownError: model exploded",
        _ => "model exploded",
    };
    assert_eq!(
        turn_end(&events),
        (TurnEndReason::Error, Some(expected.into()))
    );
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::Status {
            state: RunState::Error,
            ..
        }
    )));
    rt.prompt(&session, "again").await.expect("prompt");
    let events = run_turn(rt.as_ref(), &session, &mut stream, |_| Act::Nothing).await;
    assert_eq!(texts(&events), vec!["Second turn works."]);
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
}

async fn multi_turn(kind: Kind) {
    let agent = Agent::named(kind, "multi_turn");
    let (rt, session, mut stream, first) = one_turn(&agent, |_| Act::Nothing).await;
    assert_eq!(texts(&first), vec!["First answer."]);
    rt.prompt(&session, "more").await.expect("prompt");
    let second = run_turn(rt.as_ref(), &session, &mut stream, |_| Act::Nothing).await;
    assert_eq!(texts(&second), vec!["Second answer."]);
    assert_eq!(turn_end(&second).0, TurnEndReason::Completed);
}

async fn todos_progress(kind: Kind) {
    let agent = Agent::named(kind, "todos_progress");
    let (_rt, _s, _st, events) = one_turn(&agent, |_| Act::Nothing).await;
    let lists: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Todos { items } => Some(items.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(lists.len(), 3);
    let progress: Vec<_> = lists.iter().map(|l| progress_percent(l)).collect();
    assert_eq!(progress, vec![Some(0), Some(33), Some(100)]);
    let p = atelier_runtimes::TodoProgress::of(&lists[1]);
    assert_eq!(p.current.as_deref(), Some("Write the fix"));
    // Claude's, ACP's and Codex's todo lists have no cancelled status: the item is
    // left out.
    let expected_len = if kind == Kind::OpenCode { 4 } else { 3 };
    assert_eq!(lists[0].len(), expected_len);
    // Claude's and Codex's todos have no priority.
    let expected_priority = if matches!(kind, Kind::Claude | Kind::Codex) {
        None
    } else {
        Some("high")
    };
    assert_eq!(lists[0][0].priority.as_deref(), expected_priority);
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
}

async fn file_edit(kind: Kind) {
    let agent = Agent::named(kind, "file_edit");
    let (_rt, _s, _st, events) = one_turn(&agent, |_| Act::Nothing).await;
    assert_eq!(
        files(&events),
        vec!["src/main.rs".to_string(), "docs/notes.md".to_string()]
    );
    let main = std::fs::read_to_string(agent.dir.path().join("src/main.rs")).expect("main.rs");
    assert!(main.contains("hello, world"));
    assert!(agent.dir.path().join("docs/notes.md").is_file());
    let edits = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolCall { name, status: ToolStatus::Completed, .. } if name == "write" || name == "edit"))
        .count();
    assert_eq!(edits, 3);
}

async fn usage(kind: Kind) {
    let agent = Agent::named(kind, "usage");
    let (_rt, _s, _st, events) = one_turn(&agent, |_| Act::Nothing).await;
    let usages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(usages.len(), 1, "one report per turn: {usages:#?}");
    let u = &usages[0];
    // Claude's usage has no reasoning tokens.
    let reasoning = if kind == Kind::Claude { 0 } else { 50 };
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.cache_read,
            u.cache_write
        ),
        (
            1200,
            300,
            reasoning,
            300,
            if kind == Kind::Codex { 0 } else { 20 }
        )
    );
    if kind == Kind::Codex {
        // Codex reports neither cost nor cache writes.
        assert_eq!(u.cost_usd, None);
    } else {
        let cost = u.cost_usd.expect("cost");
        assert!((cost - 0.0123).abs() < 1e-9, "{cost}");
    }
    assert!(u.message_id.is_some());
}

async fn prompt_dropped(kind: Kind) {
    let agent = Agent::named(kind, "prompt_dropped");
    let (_rt, _s, _st, events) = one_turn(&agent, |_| Act::Nothing).await;
    assert_eq!(texts(&events), vec!["Got it on the second try."]);
    // OpenCode's prompt_async can drop a prompt: the adapter notices and sends it again.
    // A stdio agent cannot lose a line the host wrote to its stdin: exactly one prompt.
    let expected = if kind.stdio() { 1 } else { 2 };
    assert_eq!(agent.prompts().await, expected);
}

async fn a_reconnect_delivers_what_was_asked_while_away(kind: Kind) {
    let scenario = scenario_path("resync_no_replay");
    // The real OpenCode does not replay (`--no-replay`): the adapter re-reads pending
    // asks over REST. The stdio host always replays.
    let extra: &[&str] = if kind.stdio() { &[] } else { &["--no-replay"] };
    let agent = Agent::spawn_with(kind, &scenario, extra);
    // Reconnect late enough that the ask (10 ms after the drop) happens while away.
    let rt = agent.runtime_with(ReconnectPolicy {
        max_attempts: 5,
        initial_delay: Duration::from_millis(400),
        max_delay: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
    });
    let session = rt.start_session(&agent.spec()).await.expect("session");
    let mut stream = rt.events(&session, None).await.expect("events");
    rt.prompt(&session, "go").await.expect("prompt");
    let events = run_turn(rt.as_ref(), &session, &mut stream, allow_once).await;
    let asks = asked(&events);
    assert_eq!(asks.len(), 1, "{events:#?}");
    assert_eq!(asks[0].title, "Edit README.md");
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Once)]
    );
    assert_eq!(
        texts(&events).last().map(String::as_str),
        Some("Thanks, continuing.")
    );
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
    assert_eq!(agent.connections().await, 2);
}

/// Runs one turn of `scenario`, answering every ask with "once".
async fn full_run(kind: Kind, scenario: &Path) -> (Vec<String>, u64) {
    let agent = Agent::spawn(kind, scenario);
    let (_rt, _s, _st, events) = one_turn(&agent, allow_once).await;
    (
        portable(&events, agent.dir.path()),
        agent.connections().await,
    )
}

async fn dropped_stream_resumes(kind: Kind) {
    let with_drops = scenario_path("drop_stream");
    let text = std::fs::read_to_string(&with_drops).expect("scenario");
    assert_eq!(text.matches("- drop_stream").count(), 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let without = dir.path().join("no_drop.yaml");
    std::fs::write(&without, text.replace("  - drop_stream\n", "")).expect("write");
    let (baseline, base_connections) = full_run(kind, &without).await;
    let (dropped, drop_connections) = full_run(kind, &with_drops).await;
    assert_eq!(base_connections, 1);
    assert_eq!(drop_connections, 3, "the client must reconnect twice");
    assert_eq!(dropped, baseline, "the normalized sequences differ");
    let baseline: Vec<AgentEvent> = baseline
        .iter()
        .map(|e| serde_json::from_str(e).expect("event"))
        .collect();
    assert_no_raw(&baseline);
    if kind == Kind::Acp {
        // ACP message chunks carry no message boundary: the two sentences said one
        // after the other form one text part.
        assert_eq!(
            texts(&baseline)[0],
            "Starting work on the file now.This text was sent while you were away."
        );
        assert_eq!(texts(&baseline).len(), 2);
    } else {
        assert_eq!(texts(&baseline).len(), 3);
    }
    assert_eq!(asked(&baseline).len(), 1);
    assert_eq!(files(&baseline), vec!["notes/plan.md".to_string()]);
}

/// The manager side restarts mid-stream: a new runtime attaches and resumes from the
/// stored cursor, for every cursor of the turn; it gets exactly the rest.
async fn adapter_restart_resumes_from_any_cursor(kind: Kind) {
    let scenario = scenario_path("happy_path");
    let (baseline, _) = full_run(kind, &scenario).await;
    assert!(baseline.len() > 10, "{baseline:#?}");
    for k in 1..baseline.len() {
        let agent = Agent::spawn(kind, &scenario);
        let (rt, session, mut stream) = start(&agent).await;
        rt.prompt(&session, "go").await.expect("prompt");
        let mut got = Vec::new();
        let mut cursor = None;
        while got.len() < k {
            let (c, ev) = next(&mut stream).await.expect("event").expect("ok");
            got.push(ev);
            cursor = Some(c);
        }
        // Stored as text, as the manager stores it.
        let stored = cursor.expect("cursor").to_string();
        drop(stream);
        drop(rt);
        let rt = agent.runtime();
        let session = rt
            .attach_session(&session.id, &agent.spec())
            .await
            .expect("attach");
        let mut rest = rt
            .events(&session, Some(stored.parse().expect("cursor")))
            .await
            .expect("resume");
        got.extend(run_turn(rt.as_ref(), &session, &mut rest, |_| Act::Nothing).await);
        assert_eq!(
            portable(&dedupe_files(got), agent.dir.path()),
            baseline,
            "resumed after {k} events"
        );
    }
}

/// The manager restarts while the agent waits for a human: the new runtime lists the
/// ask, answers it, and the turn goes on.
async fn adapter_restart_while_an_ask_is_pending(kind: Kind) {
    let agent = Agent::named(kind, "permission_once");
    let (rt, session, mut stream) = start(&agent).await;
    rt.prompt(&session, "go").await.expect("prompt");
    let (cursor, ask) = loop {
        let (c, ev) = next(&mut stream).await.expect("event").expect("ok");
        if let AgentEvent::InteractionAsked(i) = ev {
            break (c, i);
        }
    };
    drop(stream);
    drop(rt);
    let rt = agent.runtime();
    let session = rt
        .attach_session(&session.id, &agent.spec())
        .await
        .expect("attach");
    let pending = rt.pending(&session).await.expect("pending");
    assert_eq!(pending, vec![ask.clone()]);
    let mut rest = rt.events(&session, Some(cursor)).await.expect("resume");
    rt.answer(
        &session,
        &ask.id,
        Answer::Permission {
            reply: PermissionReply::Once,
            message: None,
        },
    )
    .await
    .expect("answer");
    let after = run_turn(rt.as_ref(), &session, &mut rest, |_| Act::Nothing).await;
    assert!(
        asked(&after).is_empty(),
        "the ask is not repeated: {after:#?}"
    );
    assert_eq!(
        resolved(&after),
        vec![(ask.id.clone(), InteractionOutcome::Once)]
    );
    assert_eq!(texts(&after), vec!["Done editing."]);
    assert_eq!(turn_end(&after), (TurnEndReason::Completed, None));
    assert!(agent.dir.path().join("src/lib.rs").is_file());
}

async fn unknown_interactions_are_not_found(kind: Kind) {
    let agent = Agent::named(kind, "multi_turn");
    let (rt, session, _stream) = start(&agent).await;
    for (id, answer) in [
        (
            "per_nope",
            Answer::Permission {
                reply: PermissionReply::Once,
                message: None,
            },
        ),
        ("que_nope", Answer::Question { answers: vec![] }),
        ("que_nope", Answer::Dismiss),
    ] {
        assert!(
            matches!(
                rt.answer(&session, id, answer).await,
                Err(RuntimeError::NotFound(_))
            ),
            "{id}"
        );
    }
    assert!(matches!(
        rt.attach_session("ses_missing", &agent.spec()).await,
        Err(RuntimeError::NotFound(_))
    ));
}

macro_rules! matrix {
    ($($test:ident),* $(,)?) => {
        mod opencode {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::OpenCode).await })*
        }
        mod claude {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::Claude).await })*
        }
        mod acp {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::Acp).await })*
        }
        mod codex {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::Codex).await })*
        }
    };
}

matrix!(
    happy_path,
    permission_once,
    permission_always,
    permission_denied_with_message,
    permission_denied_without_message,
    question_answered,
    question_dismissed,
    abort_while_pending,
    crash,
    fail,
    multi_turn,
    todos_progress,
    file_edit,
    usage,
    prompt_dropped,
    a_reconnect_delivers_what_was_asked_while_away,
    dropped_stream_resumes,
    adapter_restart_resumes_from_any_cursor,
    adapter_restart_while_an_ask_is_pending,
    unknown_interactions_are_not_found,
);

// ---------------------------------------------------------------------------------------
// Protocol-specific setup.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn acp_sessions_get_the_specs_mode_model_and_effort() {
    let agent = Agent::named(Kind::Acp, "multi_turn");
    let rt = agent.runtime();
    let spec = SessionSpec {
        model: Some(ModelRef {
            provider: "fake".into(),
            model: "fake".into(),
        }),
        agent: Some("plan".into()),
        variant: Some("high".into()),
        ..agent.spec()
    };
    let session = rt.start_session(&spec).await.expect("session");
    assert_eq!(session.id, "sess_000001");
    let sent: Vec<Value> = agent
        .host()
        .transcript(0)
        .await
        .expect("transcript")
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::In { line, .. } => serde_json::from_str(line).ok(),
            _ => None,
        })
        .collect();
    let methods: Vec<&str> = sent
        .iter()
        .filter_map(|v| v.get("method").and_then(Value::as_str))
        .collect();
    assert_eq!(
        methods,
        vec![
            "initialize",
            "session/new",
            "session/set_mode",
            "session/set_config_option",
            "session/set_config_option"
        ]
    );
    assert_eq!(sent[2]["params"]["modeId"], "plan");
    assert_eq!(sent[3]["params"]["value"], "fake/fake");
    assert_eq!(
        sent[4]["params"],
        serde_json::json!({"sessionId": "sess_000001", "configId": "effort", "value": "high"})
    );
    // A second session reuses the initialized agent.
    let other = rt.start_session(&agent.spec()).await.expect("session");
    assert_eq!(other.id, "sess_000002");
    let bad = SessionSpec {
        agent: Some("yolo".into()),
        ..agent.spec()
    };
    assert!(matches!(
        rt.start_session(&bad).await,
        Err(RuntimeError::Protocol(m)) if m.contains("yolo")
    ));
}

#[tokio::test]
async fn claude_sessions_are_the_hosts_transcript_and_initialize_once() {
    let agent = Agent::named(Kind::Claude, "multi_turn");
    let rt = agent.runtime();
    let a = rt.start_session(&agent.spec()).await.expect("session");
    let b = rt.start_session(&agent.spec()).await.expect("session");
    assert_eq!(a.id, b.id);
    let status = agent.host().status().await.expect("status");
    assert_eq!(a.id, status.transcript_id);
    let inits = agent
        .host()
        .transcript(0)
        .await
        .expect("transcript")
        .iter()
        .filter(|r| matches!(&r.body, RecordBody::In { line, .. } if line.contains("initialize")))
        .count();
    assert_eq!(inits, 1, "initialize is sent once per Claude process");
}

#[tokio::test]
async fn codex_threads_ask_for_approvals_and_initialize_once() {
    let agent = Agent::named(Kind::Codex, "multi_turn");
    let rt = agent.runtime();
    let spec = SessionSpec {
        model: Some(ModelRef {
            provider: "openai".into(),
            model: "gpt-5.1-codex".into(),
        }),
        system: Some("Be brief.".into()),
        ..agent.spec()
    };
    let a = rt.start_session(&spec).await.expect("session");
    let b = rt.start_session(&agent.spec()).await.expect("session");
    assert_eq!((a.id.as_str(), b.id.as_str()), ("thr_000001", "thr_000002"));
    let sent: Vec<Value> = agent
        .host()
        .transcript(0)
        .await
        .expect("transcript")
        .iter()
        .filter_map(|r| match &r.body {
            RecordBody::In { line, .. } => serde_json::from_str(line).ok(),
            _ => None,
        })
        .collect();
    let methods: Vec<&str> = sent
        .iter()
        .filter_map(|v| v.get("method").and_then(Value::as_str))
        .collect();
    assert_eq!(
        methods,
        vec!["initialize", "initialized", "thread/start", "thread/start"]
    );
    assert!(sent.iter().all(|v| v.get("jsonrpc").is_none()));
    let start = &sent[2]["params"];
    assert_eq!(start["approvalPolicy"], "untrusted");
    assert_eq!(start["sandbox"], "workspace-write");
    assert_eq!(start["model"], "gpt-5.1-codex");
    assert_eq!(start["modelProvider"], "openai");
    assert_eq!(start["developerInstructions"], "Be brief.");
    assert!(matches!(
        rt.attach_session("thr_000002", &agent.spec()).await,
        Ok(s) if s.id == "thr_000002"
    ));
}

#[tokio::test]
async fn codex_secret_questions_are_masked_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("secret.yaml");
    std::fs::write(
        &scenario,
        "- ask_question: {questions: [{question: \"Registry token?\", secret: true}]}\n\
         - say: \"Logged in.\"\n- finish\n",
    )
    .expect("write");
    let agent = Agent::spawn(Kind::Codex, &scenario);
    let (_rt, _s, _st, events) = one_turn(&agent, |_| {
        Act::Answer(Answer::Question {
            answers: vec![vec!["s3cr3t".into()]],
        })
    })
    .await;
    let asks = asked(&events);
    let InteractionKind::Question { questions } = &asks[0].kind else {
        panic!("{asks:?}")
    };
    assert!(questions[0].secret && questions[0].custom);
    assert_eq!(
        resolved(&events),
        vec![(
            asks[0].id.clone(),
            InteractionOutcome::Answered {
                answers: vec![vec![atelier_runtimes::codex::normalize::MASK.into()]]
            }
        )]
    );
    assert!(!serde_json::to_string(&events)
        .expect("json")
        .contains("s3cr3t"));
    assert_eq!(texts(&events), vec!["Logged in."]);
}
