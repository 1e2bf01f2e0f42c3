//! Conformance suite: the OpenCode adapter against the real `fake-agent` binary, one
//! shipped scenario (`scenarios/*.yaml`) at a time. Every test asserts on the normalized
//! events the adapter produces, never on the wire.

mod support;
use support::*;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use atelier_runtimes::opencode::LISTENING_PREFIX;
use atelier_runtimes::{
    progress_percent, AgentEvent, AgentRuntime, Answer, EventStream, Interaction, InteractionKind,
    InteractionOutcome, ModelRef, OpenCodeConfig, OpenCodeRuntime, PermissionReply,
    ReconnectPolicy, RunState, RuntimeError, Session, SessionSpec, ToolStatus, TurnEndReason,
};

/// A running `fake-agent` process; killed on drop.
struct Fake {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Fake {
    fn spawn(scenario: &Path, extra: &[&str]) -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(atelier_testkit::workspace_binary(
            "atelier-fake-agent",
            "fake-agent",
        ))
        .arg("--scenario")
        .arg(scenario)
        .args(["--port", "0", "--directory"])
        .arg(dir.path())
        .args(extra)
        .env_remove("OPENCODE_SERVER_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fake-agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("fake-agent did not print its address");
        let url = line
            .trim()
            .strip_prefix(LISTENING_PREFIX)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Fake { child, url, dir }
    }

    fn named(name: &str) -> Fake {
        Fake::spawn(&scenario_path(name), &[])
    }

    fn runtime(&self) -> OpenCodeRuntime {
        OpenCodeRuntime::new(config(&self.url)).expect("runtime")
    }

    fn spec(&self) -> SessionSpec {
        SessionSpec {
            directory: self.dir.path().to_path_buf(),
            ..SessionSpec::default()
        }
    }

    async fn fake_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("GET")
            .json()
            .await
            .expect("json")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(url: &str) -> OpenCodeConfig {
    let mut cfg = OpenCodeConfig::new(url).with_reconnect(ReconnectPolicy {
        max_attempts: 5,
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(30),
    });
    cfg.prompt_confirm_timeout = Duration::from_secs(2);
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

/// Collects events until the turn ends, acting on interactions with `on_ask`.
async fn run_turn(
    rt: &OpenCodeRuntime,
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
                session.id,
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

async fn start(fake: &Fake) -> (OpenCodeRuntime, Session, EventStream) {
    let rt = fake.runtime();
    let session = rt.start_session(&fake.spec()).await.expect("session");
    let stream = rt.events(&session, None).await.expect("events");
    (rt, session, stream)
}

/// Starts a session, prompts, and runs one turn.
async fn one_turn(
    fake: &Fake,
    on_ask: impl FnMut(&Interaction) -> Act,
) -> (OpenCodeRuntime, Session, EventStream, Vec<AgentEvent>) {
    let (rt, session, mut stream) = start(fake).await;
    rt.prompt(&session, "go").await.expect("prompt");
    let events = run_turn(&rt, &session, &mut stream, on_ask).await;
    (rt, session, stream, events)
}

#[tokio::test]
async fn permission_allowed_once_edits_the_file() {
    let fake = Fake::named("permission_once");
    let (rt, session, _s, events) = one_turn(&fake, allow_once).await;
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
    let written = std::fs::read_to_string(fake.dir.path().join("src/lib.rs")).expect("file");
    assert!(written.contains("42"));
    assert!(rt.pending(&session).await.expect("pending").is_empty());
    // The status brackets the turn.
    assert_eq!(
        events.first(),
        Some(&AgentEvent::Status {
            state: RunState::Running,
            message: None
        })
    );
}

#[tokio::test]
async fn permission_allowed_always_is_not_asked_again() {
    let fake = Fake::named("permission_always");
    let (_rt, _session, _s, events) = one_turn(&fake, |_| {
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
        "the second ask must be auto-approved: {events:#?}"
    );
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Always)]
    );
    let completed_bash: HashSet<String> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCall {
                id,
                name,
                status: ToolStatus::Completed,
                ..
            } if name == "bash" => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(completed_bash.len(), 2);
    assert_eq!(texts(&events), vec!["Tests pass twice."]);
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
}

#[tokio::test]
async fn permission_denied_with_a_message_lets_the_agent_go_on() {
    let fake = Fake::named("permission_deny");
    let (_rt, _session, _s, events) = one_turn(&fake, |_| {
        Act::Answer(Answer::Permission {
            reply: PermissionReply::Reject,
            message: Some("keep the build directory".into()),
        })
    })
    .await;
    let asks = asked(&events);
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Rejected)]
    );
    assert_eq!(
        texts(&events),
        vec![
            "I want to clean the build directory.",
            "Understood, I will keep the build directory."
        ]
    );
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
}

#[tokio::test]
async fn permission_denied_without_a_message_halts_the_turn() {
    let fake = Fake::named("permission_deny");
    let (rt, session, _s, events) = one_turn(&fake, |_| {
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
    assert_eq!(texts(&events), vec!["I want to clean the build directory."]);
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
    assert!(rt.pending(&session).await.expect("pending").is_empty());
}

#[tokio::test]
async fn question_answered_reaches_the_agent() {
    let fake = Fake::named("question_answered");
    let (_rt, _session, _s, events) = one_turn(&fake, |i| {
        match &i.kind {
            InteractionKind::Question { questions } => {
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
                assert!(!questions[0].multiple && questions[0].custom);
                assert!(questions[1].multiple && !questions[1].custom);
            }
            other => panic!("{other:?}"),
        }
        Act::Answer(Answer::Question {
            answers: vec![vec!["SQLite".into()], vec!["auth".into(), "search".into()]],
        })
    })
    .await;
    let asks = asked(&events);
    assert_eq!(asks.len(), 1);
    assert_eq!(asks[0].title, "Which database should I use?");
    assert_eq!(
        resolved(&events),
        vec![(
            asks[0].id.clone(),
            InteractionOutcome::Answered {
                answers: vec![vec!["SQLite".into()], vec!["auth".into(), "search".into()]]
            }
        )]
    );
    let output = events
        .iter()
        .find_map(|e| match e {
            AgentEvent::ToolCall {
                name,
                status: ToolStatus::Completed,
                output,
                ..
            } if name == "question" => output.clone(),
            _ => None,
        })
        .expect("completed question tool");
    assert!(
        output.contains("SQLite") && output.contains("auth, search"),
        "{output}"
    );
    assert_eq!(texts(&events), vec!["Going with your choice."]);
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
}

#[tokio::test]
async fn question_dismissed_halts_the_turn() {
    let fake = Fake::named("question_answered");
    let (rt, session, _s, events) = one_turn(&fake, |_| Act::Answer(Answer::Dismiss)).await;
    let asks = asked(&events);
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Dismissed)]
    );
    assert!(texts(&events).is_empty(), "{events:#?}");
    assert!(events.iter().any(|e| matches!(e,
        AgentEvent::ToolCall { name, status: ToolStatus::Failed, .. } if name == "question")));
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
    assert!(rt.pending(&session).await.expect("pending").is_empty());
}

#[tokio::test]
async fn abort_while_an_ask_is_pending_cancels_both() {
    let fake = Fake::named("abort_pending");
    let (rt, session, mut stream, events) = one_turn(&fake, |_| Act::Abort).await;
    let asks = asked(&events);
    assert_eq!(asks.len(), 1);
    assert_eq!(
        resolved(&events),
        vec![(asks[0].id.clone(), InteractionOutcome::Cancelled)]
    );
    assert_eq!(turn_end(&events), (TurnEndReason::Cancelled, None));
    assert_eq!(texts(&events), vec!["Before the ask."]);
    assert!(rt.pending(&session).await.expect("pending").is_empty());
    // The session stays usable, and the next turn is not mistaken for cancelled.
    rt.prompt(&session, "again").await.expect("prompt");
    let events = run_turn(&rt, &session, &mut stream, |_| Act::Nothing).await;
    assert_eq!(texts(&events), vec!["Second turn after the abort."]);
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
}

#[tokio::test]
async fn agent_crash_ends_the_turn_with_an_error_and_the_stream() {
    let fake = Fake::named("crash");
    let (rt, session, mut stream) = start(&fake).await;
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
    assert!(error.unwrap_or_default().contains("lost the connection"));
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::Status {
            state: RunState::Error,
            ..
        }
    )));
    // Control calls fail fast instead of hanging.
    assert!(matches!(
        rt.abort(&session).await,
        Err(RuntimeError::Transport(_))
    ));
}

/// Events as JSON text with the fake's temporary directory replaced by `<dir>`, so
/// runs in different directories compare equal.
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

/// Runs one full turn of `scenario`, answering every ask with "once".
async fn full_run(scenario: &Path, extra: &[&str]) -> (Vec<String>, serde_json::Value) {
    let fake = Fake::spawn(scenario, extra);
    let (_rt, _session, _s, events) = one_turn(&fake, allow_once).await;
    let stats = fake.fake_json("/__fake/stats").await;
    (portable(&events, fake.dir.path()), stats)
}

fn parse(events: &[String]) -> Vec<AgentEvent> {
    events
        .iter()
        .map(|e| serde_json::from_str(e).expect("event"))
        .collect()
}

#[tokio::test]
async fn dropped_stream_resumes_without_losing_or_repeating_events() {
    let with_drops = scenario_path("drop_stream");
    let text = std::fs::read_to_string(&with_drops).expect("scenario");
    assert_eq!(text.matches("- drop_stream").count(), 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let without = dir.path().join("no_drop.yaml");
    std::fs::write(&without, text.replace("  - drop_stream\n", "")).expect("write");

    let (baseline, base_stats) = full_run(&without, &[]).await;
    let (dropped, drop_stats) = full_run(&with_drops, &[]).await;
    assert_eq!(base_stats["event_connections"], 1);
    assert_eq!(
        drop_stats["event_connections"], 3,
        "the client must reconnect twice"
    );
    assert_eq!(dropped, baseline, "the normalized sequences differ");
    // And the run is a meaningful one.
    let baseline = parse(&baseline);
    assert_no_raw(&baseline);
    assert_eq!(texts(&baseline).len(), 3);
    assert_eq!(asked(&baseline).len(), 1);
    assert_eq!(files(&baseline), vec!["notes/plan.md".to_string()]);
}

#[tokio::test]
async fn without_replay_a_reconnect_resyncs_pending_asks() {
    let fake = Fake::spawn(&scenario_path("resync_no_replay"), &["--no-replay"]);
    // Reconnect late enough that the ask (10 ms after the drop) happens while away.
    let rt = OpenCodeRuntime::new(config(&fake.url).with_reconnect(ReconnectPolicy {
        max_attempts: 5,
        initial_delay: Duration::from_millis(400),
        max_delay: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
    }))
    .expect("runtime");
    let session = rt.start_session(&fake.spec()).await.expect("session");
    let mut stream = rt.events(&session, None).await.expect("events");
    rt.prompt(&session, "go").await.expect("prompt");
    let events = run_turn(&rt, &session, &mut stream, allow_once).await;
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
    assert_eq!(
        fake.fake_json("/__fake/stats").await["event_connections"],
        2
    );
}

#[tokio::test]
async fn resuming_from_any_cursor_yields_exactly_the_rest() {
    let scenario = scenario_path("happy_path");
    let (baseline, _) = full_run(&scenario, &[]).await;
    assert!(baseline.len() > 10, "{baseline:#?}");
    for k in 1..baseline.len() {
        let fake = Fake::spawn(&scenario, &[]);
        let (rt, session, mut stream) = start(&fake).await;
        rt.prompt(&session, "go").await.expect("prompt");
        let mut got = Vec::new();
        let mut cursor = None;
        while got.len() < k {
            let (c, ev) = next(&mut stream).await.expect("event").expect("ok");
            got.push(ev);
            cursor = Some(c);
        }
        drop(stream);
        let mut rest = rt.events(&session, cursor).await.expect("resume");
        let more = run_turn(&rt, &session, &mut rest, |_| Act::Nothing).await;
        got.extend(more);
        // A new stream does not know which paths the old one reported, and OpenCode
        // reports an edit through several wire events (`file.edited`, the tool part,
        // `session.diff`), so a path may be reported again: `FilesTouched` is a set
        // union. Everything else must be exactly the rest.
        let got = dedupe_files(got);
        assert_eq!(
            portable(&got, fake.dir.path()),
            baseline,
            "resumed after {k} events"
        );
    }
}

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

#[tokio::test]
async fn todos_report_progress() {
    let fake = Fake::named("todos_progress");
    let (_rt, _session, _s, events) = one_turn(&fake, |_| Act::Nothing).await;
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
    assert_eq!(lists[0][0].priority.as_deref(), Some("high"));
    assert_eq!(turn_end(&events).0, TurnEndReason::Completed);
}

#[tokio::test]
async fn file_edits_are_reported_once_and_really_written() {
    let fake = Fake::named("file_edit");
    let (_rt, _session, _s, events) = one_turn(&fake, |_| Act::Nothing).await;
    assert_eq!(
        files(&events),
        vec!["src/main.rs".to_string(), "docs/notes.md".to_string()]
    );
    let main = std::fs::read_to_string(fake.dir.path().join("src/main.rs")).expect("main.rs");
    assert!(main.contains("hello, world"));
    assert!(fake.dir.path().join("docs/notes.md").is_file());
    let edits = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolCall { name, status: ToolStatus::Completed, .. } if name == "write" || name == "edit"))
        .count();
    assert_eq!(edits, 3);
}

#[tokio::test]
async fn usage_and_cost_are_reported() {
    let fake = Fake::named("usage");
    let (_rt, _session, _s, events) = one_turn(&fake, |_| Act::Nothing).await;
    let usages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        usages.len(),
        1,
        "one assistant message, one report: {usages:#?}"
    );
    let last = usages.last().expect("usage");
    assert_eq!(
        (
            last.input_tokens,
            last.output_tokens,
            last.reasoning_tokens,
            last.cache_read,
            last.cache_write
        ),
        (1200, 300, 50, 300, 20)
    );
    let cost = last.cost_usd.expect("cost");
    assert!((cost - 0.0123).abs() < 1e-9, "{cost}");
    assert!(last.message_id.is_some());
}

#[tokio::test]
async fn agent_failure_ends_the_turn_with_an_error_and_the_session_stays_usable() {
    let fake = Fake::named("fail");
    let (rt, session, mut stream, events) = one_turn(&fake, |_| Act::Nothing).await;
    assert_eq!(
        turn_end(&events),
        (
            TurnEndReason::Error,
            Some("UnknownError: model exploded".into())
        )
    );
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::Status {
            state: RunState::Error,
            ..
        }
    )));
    rt.prompt(&session, "again").await.expect("prompt");
    let events = run_turn(&rt, &session, &mut stream, |_| Act::Nothing).await;
    assert_eq!(texts(&events), vec!["Second turn works."]);
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
}

#[tokio::test]
async fn a_silently_dropped_prompt_is_retried() {
    let fake = Fake::named("prompt_dropped");
    let (_rt, _session, _s, events) = one_turn(&fake, |_| Act::Nothing).await;
    assert_eq!(texts(&events), vec!["Got it on the second try."]);
    assert_eq!(fake.fake_json("/__fake/stats").await["prompts"], 2);
}

#[tokio::test]
async fn a_prompt_that_never_lands_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("never.yaml");
    std::fs::write(&path, "drop_prompts: 5\nsteps:\n  - say: never\n").expect("write");
    let fake = Fake::spawn(&path, &[]);
    let (rt, session, _stream) = start(&fake).await;
    match rt.prompt(&session, "go").await {
        Err(RuntimeError::PromptNotDelivered { attempts: 2 }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn two_turns_need_two_prompts() {
    let fake = Fake::named("multi_turn");
    let (rt, session, mut stream, first) = one_turn(&fake, |_| Act::Nothing).await;
    assert_eq!(texts(&first), vec!["First answer."]);
    rt.prompt(&session, "more").await.expect("prompt");
    let second = run_turn(&rt, &session, &mut stream, |_| Act::Nothing).await;
    assert_eq!(texts(&second), vec!["Second answer."]);
    assert_eq!(turn_end(&second).0, TurnEndReason::Completed);
}

#[tokio::test]
async fn happy_path_maps_the_spec_onto_the_prompt_and_streams_everything() {
    let fake = Fake::named("happy_path");
    let rt = fake.runtime();
    let spec = SessionSpec {
        model: Some(ModelRef {
            provider: "anthropic".into(),
            model: "claude-opus-4-5".into(),
        }),
        agent: Some("plan".into()),
        variant: Some("high".into()),
        system: Some("Be brief.".into()),
        title: Some("greet".into()),
        ..fake.spec()
    };
    let session = rt.start_session(&spec).await.expect("session");
    let again = rt.attach_session(&session.id, &spec).await.expect("attach");
    assert_eq!(again, session);
    assert!(matches!(
        rt.attach_session("ses_missing", &spec).await,
        Err(RuntimeError::NotFound(_))
    ));
    let mut stream = rt.events(&session, None).await.expect("events");
    rt.prompt(&session, "add a greeting").await.expect("prompt");
    let events = run_turn(&rt, &session, &mut stream, |_| Act::Nothing).await;
    assert_no_raw(&events);
    let prompts = fake.fake_json("/__fake/prompts").await;
    let p = &prompts[0];
    assert_eq!(
        p["model"],
        serde_json::json!({"providerID": "anthropic", "modelID": "claude-opus-4-5"})
    );
    assert_eq!(p["agent"], "plan");
    assert_eq!(p["variant"], "high");
    assert_eq!(p["system"], "Be brief.");
    assert_eq!(p["parts"][0]["text"], "add a greeting");
    // Deltas and the final text agree.
    let deltas: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Text { delta: Some(d), .. } => Some(d.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "Added src/greet.rs and its test passes.");
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::Reasoning { text: Some(t), .. } if t.contains("greeting"))
    ));
    assert!(events.iter().any(|e| matches!(e, AgentEvent::ToolCall { name, status: ToolStatus::Completed, output: Some(o), .. } if name == "bash" && o == "1 passed")));
    assert_eq!(files(&events), vec!["src/greet.rs".to_string()]);
    assert!(events
        .iter()
        .any(|e| matches!(e, AgentEvent::Usage(u) if u.input_tokens == 2000)));
    assert_eq!(turn_end(&events), (TurnEndReason::Completed, None));
}

#[tokio::test]
async fn basic_auth_is_sent_and_a_wrong_password_is_unauthorized() {
    let fake = Fake::spawn(&scenario_path("multi_turn"), &["--password", "s3cret"]);
    let rt = OpenCodeRuntime::new(config(&fake.url)).expect("runtime");
    assert!(matches!(
        rt.start_session(&fake.spec()).await,
        Err(RuntimeError::Unauthorized)
    ));
    let rt = OpenCodeRuntime::new(config(&fake.url).with_password("wrong")).expect("runtime");
    assert!(matches!(rt.health().await, Err(RuntimeError::Unauthorized)));
    let rt = OpenCodeRuntime::new(config(&fake.url).with_password("s3cret")).expect("runtime");
    assert!(rt.health().await.expect("health").contains("fake"));
    let session = rt.start_session(&fake.spec()).await.expect("session");
    let mut stream = rt.events(&session, None).await.expect("events");
    rt.prompt(&session, "hi").await.expect("prompt");
    let events = run_turn(&rt, &session, &mut stream, |_| Act::Nothing).await;
    assert_eq!(texts(&events), vec!["First answer."]);
}

#[tokio::test]
async fn answering_an_unknown_interaction_is_not_found() {
    let fake = Fake::named("multi_turn");
    let (rt, session, _stream) = start(&fake).await;
    for answer in [
        Answer::Permission {
            reply: PermissionReply::Once,
            message: None,
        },
        Answer::Question { answers: vec![] },
        Answer::Dismiss,
    ] {
        let id = if matches!(answer, Answer::Permission { .. }) {
            "per_nope"
        } else {
            "que_nope"
        };
        assert!(
            matches!(
                rt.answer(&session, id, answer).await,
                Err(RuntimeError::NotFound(_))
            ),
            "{id}"
        );
    }
    assert!(matches!(
        rt.answer(&session, "../../etc", Answer::Dismiss).await,
        Err(RuntimeError::Protocol(_))
    ));
}
