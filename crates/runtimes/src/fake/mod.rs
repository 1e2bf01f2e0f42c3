//! Protocol-level fake agents for offline tests, driven by one scenario DSL.
//!
//! - [`scenario`]: the agent-neutral DSL (`say`, `think`, `todos`, `edit_file`, `tool`,
//!   `ask_permission`, `ask_question`, `usage`, `sleep_ms`, `finish`, `fail`, `crash`,
//!   `drop_stream`, `wait_for_prompt`).
//! - [`opencode`]: a fake `opencode serve` (HTTP + SSE), served by the `fake-agent`
//!   binary. Fakes for other protocols (Claude stream-json, Codex app-server, ACP) are
//!   meant to replay the same scenarios.

pub mod opencode;
pub mod scenario;

pub use opencode::{serve, FakeConfig};
pub use scenario::{Scenario, Step};
