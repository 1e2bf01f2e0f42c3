//! The scenario player shared by the stdio fakes ([`crate::claude`], [`crate::acp`],
//! [`crate::codex`]).
//!
//! It reads JSON lines from stdin and writes JSON lines to stdout, and plays a
//! [`Scenario`] with the same semantics as the OpenCode fake: a turn starts with a
//! prompt; a permission `once`/`always` goes on (`always` also approves later asks for
//! the same tool and pattern); a rejection goes on or halts the turn as the protocol's
//! reply says; an answered question goes on, a dismissed one halts; an interrupt ends
//! the turn and skips the rest of its steps. The wire format of each protocol is a
//! [`Wire`].
//!
//! A permission ask announces the tool call it guards; the next `tool` or `edit_file`
//! step is that call (as with a real agent, whose approved tool then runs). `drop_stream`
//! asks the stdio host the fake runs under (`ATELIER_STDIO_HOST_URL`) to close its event
//! streams. `crash` exits with code 70; the end of stdin ends the process.
//!
//! `drop_prompts` is ignored: it mimics OpenCode's `prompt_async`, which can accept a
//! prompt and drop it; a line in a pipe cannot be dropped that way (the host confirms
//! each write), so a stdio agent gets every prompt once.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::scenario::{QuestionSpec, Scenario, Step, TodoSpec};

/// What a stdin line means.
pub(crate) enum Incoming {
    /// A prompt; `reply_to` is the request its turn's end answers (ACP).
    Prompt {
        reply_to: Option<Value>,
    },
    /// Abort the running turn (after writing these lines).
    Interrupt {
        respond: Vec<Value>,
    },
    /// A reply to one of the fake's requests.
    Reply {
        id: String,
        body: Value,
    },
    /// Answered on the spot (handshakes, settings).
    Respond(Vec<Value>),
    Ignore,
}

/// How a reply settles an ask.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Allow {
        always: bool,
    },
    /// Refused; `halt` stops the turn.
    Deny {
        halt: bool,
        message: Option<String>,
    },
    Answers(Vec<Vec<String>>),
    Dismissed,
}

/// A tool call announced by a permission ask, run by the next tool step.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub id: String,
    pub tool: String,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TurnEnd {
    Done,
    Halted,
    Failed(String),
    Aborted,
}

/// Token figures of one `usage` step.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UsageStep {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cost: f64,
}

/// A file edit as executed: the relative and absolute path, whether the file existed
/// before, and its old content.
pub(crate) struct Edit<'a> {
    pub path: &'a str,
    pub abs: &'a Path,
    pub existed: bool,
    pub old: Option<String>,
    pub content: &'a str,
    pub result: Result<(), String>,
}

/// One protocol's wire format, as the agent side writes it.
pub(crate) trait Wire: Send {
    fn classify(&mut self, line: &Value) -> Incoming;
    fn turn_start(&mut self) -> Vec<Value>;
    fn text(&mut self, text: &str, reasoning: bool) -> Vec<Value>;
    fn todos(&mut self, items: &[TodoSpec]) -> Vec<Value>;
    /// Announces a tool call (or reuses `call`) and runs it to its result.
    fn tool(
        &mut self,
        call: Option<Call>,
        name: &str,
        input: &Value,
        output: &str,
        title: Option<&str>,
    ) -> Vec<Value>;
    fn edit(&mut self, call: Option<Call>, edit: &Edit) -> Vec<Value>;
    /// Announces the guarded call and asks; returns the lines, the request id that
    /// the reply will carry, and the call.
    fn ask_permission(
        &mut self,
        tool: &str,
        pattern: &str,
        title: Option<&str>,
        abs: &Path,
    ) -> (Vec<Value>, String, Call);
    fn permission_verdict(&self, body: &Value) -> Verdict;
    /// The guarded call ends: refused (`Some(message)`) or approved without a tool step.
    fn close_call(&mut self, call: Call, refused: Option<&str>) -> Vec<Value>;
    fn ask_question(&mut self, questions: &[QuestionSpec]) -> (Vec<Value>, String, Option<Call>);
    fn question_verdict(&self, body: &Value, questions: &[QuestionSpec]) -> Verdict;
    fn question_done(
        &mut self,
        call: Option<Call>,
        questions: &[QuestionSpec],
        verdict: &Verdict,
    ) -> Vec<Value>;
    fn usage(&mut self, u: UsageStep) -> Vec<Value>;
    fn turn_end(&mut self, end: &TurnEnd, reply_to: Option<Value>) -> Vec<Value>;
}

struct Aborted;

struct Player<W: Wire> {
    wire: W,
    rx: mpsc::UnboundedReceiver<Value>,
    queue: VecDeque<Option<Value>>,
    directory: PathBuf,
    always: HashSet<(String, String)>,
    pending_call: Option<Call>,
}

fn write_lines(lines: Vec<Value>) {
    if lines.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
}

/// Plays `scenario` over stdin/stdout with `wire`; returns when stdin closes.
pub(crate) async fn play<W: Wire>(scenario: Scenario, directory: PathBuf, wire: W) {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("fake-agent: ignoring a line that is not JSON: {e}"),
            }
        }
    });
    let mut p = Player {
        wire,
        rx,
        queue: VecDeque::new(),
        directory,
        always: HashSet::new(),
        pending_call: None,
    };
    let steps = scenario.steps;
    let mut pc = 0usize;
    loop {
        while p.queue.is_empty() {
            let Some(v) = p.rx.recv().await else {
                return;
            };
            match p.wire.classify(&v) {
                Incoming::Prompt { reply_to } => p.queue.push_back(reply_to),
                Incoming::Respond(lines) | Incoming::Interrupt { respond: lines } => {
                    write_lines(lines)
                }
                Incoming::Reply { .. } | Incoming::Ignore => {}
            }
        }
        let reply_to = p.queue.pop_front().flatten();
        write_lines(p.wire.turn_start());
        let end = loop {
            let Some(step) = steps.get(pc) else {
                break TurnEnd::Done;
            };
            pc += 1;
            if p.poll().is_err() {
                break TurnEnd::Aborted;
            }
            match step {
                Step::Finish | Step::WaitForPrompt => break TurnEnd::Done,
                Step::Fail(m) => break TurnEnd::Failed(m.clone()),
                Step::Crash => {
                    let _ = std::io::stdout().flush();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    std::process::exit(70);
                }
                _ => {}
            }
            match p.exec(step).await {
                Ok(true) => {}
                Ok(false) => break TurnEnd::Halted,
                Err(Aborted) => break TurnEnd::Aborted,
            }
        };
        if let Some(call) = p.pending_call.take() {
            let refused = (end != TurnEnd::Done).then_some("The turn ended");
            write_lines(p.wire.close_call(call, refused));
        }
        if matches!(end, TurnEnd::Halted | TurnEnd::Aborted) {
            // Skip the rest of this turn's steps, through its boundary.
            while let Some(step) = steps.get(pc) {
                pc += 1;
                if matches!(step, Step::Finish | Step::WaitForPrompt | Step::Fail(_)) {
                    break;
                }
            }
        }
        write_lines(p.wire.turn_end(&end, reply_to));
    }
}

impl<W: Wire> Player<W> {
    /// Handles what arrived without waiting; an interrupt aborts.
    fn poll(&mut self) -> Result<(), Aborted> {
        while let Ok(v) = self.rx.try_recv() {
            self.handle(v, None)?;
        }
        Ok(())
    }

    /// Handles one incoming line; returns the reply body if it answers `awaiting`.
    fn handle(&mut self, v: Value, awaiting: Option<&str>) -> Result<Option<Value>, Aborted> {
        match self.wire.classify(&v) {
            Incoming::Prompt { reply_to } => self.queue.push_back(reply_to),
            Incoming::Interrupt { respond } => {
                write_lines(respond);
                return Err(Aborted);
            }
            Incoming::Reply { id, body } if Some(id.as_str()) == awaiting => return Ok(Some(body)),
            Incoming::Respond(lines) => write_lines(lines),
            Incoming::Reply { .. } | Incoming::Ignore => {}
        }
        Ok(None)
    }

    async fn wait_reply(&mut self, id: &str) -> Result<Value, Aborted> {
        loop {
            let Some(v) = self.rx.recv().await else {
                // stdin closed: nobody will answer.
                std::process::exit(0);
            };
            if let Some(body) = self.handle(v, Some(id))? {
                return Ok(body);
            }
        }
    }

    async fn sleep(&mut self, ms: u64) -> Result<(), Aborted> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                v = self.rx.recv() => match v {
                    Some(v) => { self.handle(v, None)?; }
                    None => std::process::exit(0),
                },
            }
        }
    }

    /// Runs one step; `Ok(false)` halts the turn.
    async fn exec(&mut self, step: &Step) -> Result<bool, Aborted> {
        // An approved call that no tool step runs is closed first.
        if !matches!(step, Step::Tool { .. } | Step::EditFile { .. }) {
            if let Some(call) = self.pending_call.take() {
                write_lines(self.wire.close_call(call, None));
            }
        }
        match step {
            Step::Say(t) => write_lines(self.wire.text(t, false)),
            Step::Think(t) => write_lines(self.wire.text(t, true)),
            Step::Todos(items) => write_lines(self.wire.todos(items)),
            Step::Tool {
                name,
                input,
                output,
                title,
            } => {
                let call = self.pending_call.take();
                write_lines(self.wire.tool(call, name, input, output, title.as_deref()));
            }
            Step::EditFile { path, content } => {
                let call = self.pending_call.take();
                let abs = self.directory.join(path);
                let safe = !path.is_empty()
                    && Path::new(path)
                        .components()
                        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
                let existed = safe && abs.exists();
                let old = if existed {
                    std::fs::read_to_string(&abs).ok()
                } else {
                    None
                };
                let result = if safe {
                    abs.parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&abs, content))
                        .map_err(|e| e.to_string())
                } else {
                    Err(format!(
                        "path {path:?} must be relative and stay inside the directory"
                    ))
                };
                let edit = Edit {
                    path,
                    abs: &abs,
                    existed,
                    old,
                    content,
                    result,
                };
                write_lines(self.wire.edit(call, &edit));
            }
            Step::AskPermission {
                tool,
                pattern,
                title,
            } => {
                let key = (tool.clone(), pattern.clone());
                if self.always.contains(&key) {
                    return Ok(true);
                }
                let abs = self.directory.join(pattern);
                let (lines, id, call) =
                    self.wire
                        .ask_permission(tool, pattern, title.as_deref(), &abs);
                write_lines(lines);
                let body = self.wait_reply(&id).await?;
                match self.wire.permission_verdict(&body) {
                    Verdict::Allow { always } => {
                        if always {
                            self.always.insert(key);
                        }
                        self.pending_call = Some(call);
                    }
                    Verdict::Deny { halt, message } => {
                        let msg = message.unwrap_or_else(|| "The user denied this action.".into());
                        write_lines(self.wire.close_call(call, Some(&msg)));
                        return Ok(!halt);
                    }
                    Verdict::Answers(_) | Verdict::Dismissed => {
                        write_lines(self.wire.close_call(call, Some("unexpected reply")));
                        return Ok(false);
                    }
                }
            }
            Step::AskQuestion { questions } => {
                let (lines, id, call) = self.wire.ask_question(questions);
                write_lines(lines);
                let body = self.wait_reply(&id).await?;
                let verdict = self.wire.question_verdict(&body, questions);
                write_lines(self.wire.question_done(call, questions, &verdict));
                if !matches!(verdict, Verdict::Answers(_)) {
                    return Ok(false);
                }
            }
            Step::Usage {
                input,
                output,
                reasoning,
                cache_read,
                cache_write,
                cost,
            } => write_lines(self.wire.usage(UsageStep {
                input: *input,
                output: *output,
                reasoning: *reasoning,
                cache_read: *cache_read,
                cache_write: *cache_write,
                cost: *cost,
            })),
            Step::SleepMs(ms) => self.sleep(*ms).await?,
            Step::DropStream => drop_host_streams().await,
            Step::Finish | Step::WaitForPrompt | Step::Fail(_) | Step::Crash => {}
        }
        Ok(true)
    }
}

/// Asks the stdio host to close its event streams, and waits until it did.
async fn drop_host_streams() {
    let Ok(url) = std::env::var(atelier_runtimes::stdio_host::HOST_URL_ENV) else {
        eprintln!(
            "fake-agent: drop_stream needs ATELIER_STDIO_HOST_URL (run under atelier-stdio-host)"
        );
        return;
    };
    let client = reqwest::Client::new();
    if let Err(e) = client
        .post(format!("{url}/subscribers/close"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        eprintln!("fake-agent: drop_stream: {e}");
    }
}

/// "Q"="A, B" pairs, as OpenCode's question tool reports answers.
pub(crate) fn answers_text(questions: &[QuestionSpec], answers: &[Vec<String>]) -> String {
    questions
        .iter()
        .zip(answers)
        .map(|(q, a)| format!("\"{}\"=\"{}\"", q.question, a.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}
