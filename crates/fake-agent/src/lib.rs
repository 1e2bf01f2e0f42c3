//! `fake-agent`: protocol-level fake coding agents for offline tests, driven by one
//! scenario DSL, so that every adapter of `atelier-runtimes` and the whole task flow run
//! without a model.
//!
//! - [`scenario`]: the agent-neutral DSL (`say`, `think`, `todos`, `edit_file`, `tool`,
//!   `ask_permission`, `ask_question`, `usage`, `sleep_ms`, `finish`, `fail`, `crash`,
//!   `drop_stream`, `wait_for_prompt`).
//! - [`opencode`]: a fake `opencode serve` (HTTP + SSE), served by the `fake-agent`
//!   binary.
//! - [`claude`], [`acp`] and [`codex`]: fake Claude Code (stream-json + control
//!   protocol), a fake ACP agent (JSON-RPC) and a fake `codex app-server` (its JSON-RPC
//!   dialect), all over stdin/stdout (`fake-agent --protocol claude|acp|codex`), meant
//!   to run under `atelier-stdio-host` as the real agents do.

pub mod acp;
pub mod claude;
pub mod codex;
pub mod opencode;
pub mod scenario;
pub(crate) mod stdio;

pub use opencode::{serve, FakeConfig};
pub use scenario::{Scenario, Step};

/// Plays `scenario` as Claude Code over this process's stdin/stdout; `edit_file`
/// writes under `directory`. Returns when stdin closes.
pub async fn play_claude(scenario: Scenario, directory: std::path::PathBuf) {
    let wire = claude::ClaudeWire::new(&directory);
    stdio::play(scenario, directory, wire).await
}

/// Plays `scenario` as an ACP agent over this process's stdin/stdout.
pub async fn play_acp(scenario: Scenario, directory: std::path::PathBuf) {
    let wire = acp::AcpWire::new(&directory);
    stdio::play(scenario, directory, wire).await
}

/// Plays `scenario` as `codex app-server` over this process's stdin/stdout.
pub async fn play_codex(scenario: Scenario, directory: std::path::PathBuf) {
    let wire = codex::CodexWire::new(&directory);
    stdio::play(scenario, directory, wire).await
}
