//! The wire of the in-sandbox stdio host (`atelier-stdio-host`, its own crate) and the
//! manager's client of it.
//!
//! Claude Code (`claude -p --input-format stream-json …`) and ACP agents speak over
//! stdin/stdout, but the agent runs inside a sandbox and the manager must be able to
//! restart (or lose its connection) without losing a line. The host runs next to the
//! agent, owns its pipes, and makes it reachable over HTTP the way `opencode serve` is:
//!
//! - every line the agent writes to stdout, and every line written to its stdin, is
//!   appended to a **transcript** (JSON lines, one [`Record`] each, numbered `seq` from 1)
//!   in memory and in a file, so a restarted host continues the numbering;
//! - `GET /events` streams the transcript as SSE (`id: <seq>`, `event: <kind>`, `data:`
//!   the record), starting after `Last-Event-ID` or `?after=N` (0 = from the start),
//!   first a `hello` frame `{seq, transcript_id, state}` (no id), then live records, with
//!   a comment line as heartbeat;
//! - `POST /input {id, message, note?}` writes `message` (compact JSON, one line) to the
//!   agent's stdin. `id` makes it idempotent: a retried write with an id already in the
//!   transcript is answered `{seq, duplicate: true}` and not written again. `note` is kept
//!   in the transcript only (the adapter records how it meant an answer);
//! - `GET /transcript?after=N` returns the records as JSON lines (not streamed);
//! - `GET /status` → `{state: running|exited, pid, code, signal, seq, transcript_id, …}`;
//! - `POST /signal {signal: interrupt|terminate|kill}` signals the agent's process group;
//! - `POST /subscribers/close` ends every open `/events` stream once (clients resume
//!   with `Last-Event-ID`); it needs no token, so an agent-side harness can simulate a
//!   dropped stream, and it loses nothing;
//! - `GET /health`.
//!
//! With a token (`--token` or `ATELIER_STDIO_HOST_TOKEN`), every route but `/health` and
//! `/subscribers/close` needs `Authorization: Bearer <token>`. The agent gets
//! `ATELIER_STDIO_HOST_URL` in its environment, never the token.
//!
//! The host keeps serving after the agent exits (the transcript ends with an `exit`
//! record), so a crash is observable with its exit code rather than as a lost connection.

mod client;

pub use client::*;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The line the host prints once it listens, followed by its URL.
pub const LISTENING_PREFIX: &str = "atelier-stdio-host listening on ";
/// Environment variable through which the agent learns where its host listens.
pub const HOST_URL_ENV: &str = "ATELIER_STDIO_HOST_URL";
/// Environment variable holding the host's bearer token (never passed to the agent).
pub const TOKEN_ENV: &str = "ATELIER_STDIO_HOST_TOKEN";
/// Longest stdout line kept whole; the rest of a longer line is dropped (an agent must
/// not be able to exhaust the host's memory).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Transcript records.
// ---------------------------------------------------------------------------------------

/// One transcript entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the transcript, from 1, without gaps.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub t: u64,
    #[serde(flatten)]
    pub body: RecordBody,
}

/// What a [`Record`] says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordBody {
    /// The agent process started (at the first start and after every host restart).
    Start {
        transcript_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(default)]
        argv: Vec<String>,
    },
    /// A line the agent wrote to stdout.
    Out { line: String },
    /// A line written to the agent's stdin, under the client's idempotency id.
    In {
        id: String,
        line: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<Value>,
    },
    /// The agent exited (or could not be started: no code, no signal, an `error`).
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stderr_tail: Vec<String>,
    },
}

impl RecordBody {
    pub fn kind(&self) -> &'static str {
        match self {
            RecordBody::Start { .. } => "start",
            RecordBody::Out { .. } => "out",
            RecordBody::In { .. } => "in",
            RecordBody::Exit { .. } => "exit",
        }
    }
}

impl Record {
    /// The JSON line of an `out` or `in` record, parsed; `None` for other kinds or text
    /// that is not JSON.
    pub fn json(&self) -> Option<Value> {
        match &self.body {
            RecordBody::Out { line } | RecordBody::In { line, .. } => {
                serde_json::from_str(line).ok()
            }
            _ => None,
        }
    }

    /// A one-line description of an `exit` record ("the agent exited with code 70: …").
    pub fn exit_message(&self) -> Option<String> {
        let RecordBody::Exit {
            code,
            signal,
            error,
            stderr_tail,
        } = &self.body
        else {
            return None;
        };
        let mut msg = match (code, signal, error) {
            (_, _, Some(e)) => format!("the agent could not run: {e}"),
            (Some(c), _, _) => format!("the agent exited with code {c}"),
            (None, Some(s), _) => format!("the agent was killed by signal {s}"),
            (None, None, None) => "the agent exited".to_string(),
        };
        if let Some(last) = stderr_tail.iter().rev().find(|l| !l.trim().is_empty()) {
            msg.push_str(": ");
            msg.push_str(last.trim());
        }
        Some(msg)
    }
}

/// A random hex id (transcript ids, prompt ids).
pub fn random_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}")
}
/// The host's command line: the host binary listening on `127.0.0.1:port`, keeping its
/// transcript at `transcript`, running `agent` (program first) in `cwd`.
pub fn host_command(
    host_binary: &str,
    port: u16,
    transcript: &str,
    cwd: Option<&str>,
    agent: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        host_binary.into(),
        "--hostname".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--transcript".into(),
        transcript.into(),
    ];
    if let Some(d) = cwd {
        argv.extend(["--cwd".into(), d.into()]);
    }
    argv.push("--".into());
    argv.extend(agent.iter().cloned());
    argv
}
